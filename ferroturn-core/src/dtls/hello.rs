//! The two DTLS 1.2 messages a server handles before it keeps any state (RFC 6347 section
//! 4.2.1): reading a ClientHello out of a datagram, and writing a HelloVerifyRequest.
//! Every read is bounds-checked; nothing here panics on any input.

/// Record header: type (1), version (2), epoch (2), sequence number (6), length (2).
pub const RECORD_HEADER_LEN: usize = 13;
/// Handshake header: type (1), length (3), message_seq (2), fragment_offset (3),
/// fragment_length (3).
pub const HANDSHAKE_HEADER_LEN: usize = 12;
/// Length of a client or server random.
pub const RANDOM_LEN: usize = 32;

/// TLS ContentType handshake (RFC 5246 section 6.2.1).
const CONTENT_HANDSHAKE: u8 = 22;
/// HandshakeType values (RFC 6347 section 4.3.2).
const CLIENT_HELLO: u8 = 1;
const HELLO_VERIFY_REQUEST: u8 = 3;
/// {254, 255}: the version RFC 6347 section 4.2.1 requires in a HelloVerifyRequest.
const DTLS_1_0: [u8; 2] = [0xfe, 0xff];
/// Every DTLS version has this major byte.
const DTLS_MAJOR: u8 = 0xfe;

/// What a ClientHello carries that the stateless front needs: where to answer in the
/// record layer, the cookie, and the parameters its repetition must keep (RFC 6347
/// section 4.2.1: version, random, session_id, cipher_suites, compression_methods).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientHello<'a> {
    /// The record's sequence number (epoch 0), echoed by the HelloVerifyRequest.
    pub record_seq: [u8; 6],
    pub message_seq: u16,
    pub version: [u8; 2],
    pub random: &'a [u8],
    pub session_id: &'a [u8],
    pub cookie: &'a [u8],
    pub cipher_suites: &'a [u8],
    pub compression_methods: &'a [u8],
}

/// A bounds-checked reader over a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
    }

    fn u24(&mut self) -> Option<usize> {
        let b = self.take(3)?;
        Some(
            usize::from(*b.first()?) << 16 | usize::from(*b.get(1)?) << 8 | usize::from(*b.get(2)?),
        )
    }

    /// A vector with a one-byte length prefix.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    /// A vector with a two-byte length prefix.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

/// The ClientHello that starts `datagram`, when its first record is an epoch-0
/// handshake record holding a whole, unfragmented ClientHello with message_seq 0 or 1
/// (the only ones a stateless server can take: it reassembles nothing, and the
/// ClientHello that repeats its first one after a HelloVerifyRequest has message_seq 1).
/// Anything else (another record type, a later epoch, a fragment, a short or
/// inconsistent length) is `None`.
pub fn parse_client_hello(datagram: &[u8]) -> Option<ClientHello<'_>> {
    let mut record = Reader(datagram);
    let content_type = record.u8()?;
    let record_version = record.take(2)?;
    let epoch = record.u16()?;
    let seq = record.take(6)?;
    let fragment = record.vec16()?;
    if content_type != CONTENT_HANDSHAKE
        || record_version.first() != Some(&DTLS_MAJOR)
        || epoch != 0
    {
        return None;
    }
    let mut hs = Reader(fragment);
    let msg_type = hs.u8()?;
    let length = hs.u24()?;
    let message_seq = hs.u16()?;
    let fragment_offset = hs.u24()?;
    let fragment_length = hs.u24()?;
    if msg_type != CLIENT_HELLO
        || message_seq > 1
        || fragment_offset != 0
        || fragment_length != length
        || hs.0.len() < length
    {
        return None;
    }
    let mut body = Reader(hs.take(length)?);
    let version = body.take(2)?;
    let random = body.take(RANDOM_LEN)?;
    let session_id = body.vec8()?;
    let cookie = body.vec8()?;
    let cipher_suites = body.vec16()?;
    let compression_methods = body.vec8()?;
    if session_id.len() > 32 || version.first() != Some(&DTLS_MAJOR) {
        return None;
    }
    let mut record_seq = [0u8; 6];
    record_seq.copy_from_slice(seq);
    let mut v = [0u8; 2];
    v.copy_from_slice(version);
    Some(ClientHello {
        record_seq,
        message_seq,
        version: v,
        random,
        session_id,
        cookie,
        cipher_suites,
        compression_methods,
    })
}

/// Length of the HelloVerifyRequest [`write_hello_verify`] writes for a cookie of
/// `cookie_len` bytes.
pub const fn hello_verify_len(cookie_len: usize) -> usize {
    RECORD_HEADER_LEN + HANDSHAKE_HEADER_LEN + 3 + cookie_len
}

/// Writes the HelloVerifyRequest answering `hello` into `out`, carrying `cookie`;
/// returns its length, or `None` if `out` is too short or the cookie too long.
pub fn write_hello_verify(hello: &ClientHello<'_>, cookie: &[u8], out: &mut [u8]) -> Option<usize> {
    let cookie_len = u8::try_from(cookie.len()).ok()?;
    let len = hello_verify_len(cookie.len());
    let out = out.get_mut(..len)?;
    let body_len = 3 + cookie.len();
    let record_len = u16::try_from(HANDSHAKE_HEADER_LEN + body_len).ok()?;
    let body24 = (body_len as u32).to_be_bytes();
    let mut w = 0;
    let mut put = |bytes: &[u8]| {
        out[w..w + bytes.len()].copy_from_slice(bytes);
        w += bytes.len();
    };
    put(&[CONTENT_HANDSHAKE]);
    put(&DTLS_1_0);
    put(&[0, 0]); // epoch 0
    // RFC 6347 section 4.2.1: the HelloVerifyRequest MUST take the record sequence
    // number of the ClientHello it answers.
    put(&hello.record_seq);
    put(&record_len.to_be_bytes());
    put(&[HELLO_VERIFY_REQUEST]);
    put(&body24[1..]);
    // message_seq 0, as OpenSSL's stateless listener sends it: a server keeping no
    // state has sent nothing before.
    put(&[0, 0]);
    put(&[0, 0, 0]); // fragment_offset
    put(&body24[1..]); // fragment_length: never fragmented
    // RFC 6347 section 4.2.1: server_version MUST be DTLS 1.0 here, whatever is
    // negotiated later.
    put(&DTLS_1_0);
    put(&[cookie_len]);
    put(cookie);
    Some(len)
}
