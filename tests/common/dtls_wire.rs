//! DTLS 1.2 bytes in tests (RFC 6347): ClientHellos as a client first sends them and as
//! it repeats them with a cookie, and the cookie read back out of a HelloVerifyRequest.
//! Only std: the sans-IO tests include this file as well as the end-to-end ones.
#![allow(dead_code)]

/// Extensions a server needs to go on with ECDHE-ECDSA on P-256: supported_groups
/// (secp256r1), ec_point_formats (uncompressed), signature_algorithms
/// (ecdsa_secp256r1_sha256), extended_master_secret, renegotiation_info.
const EXTENSIONS: [u8; 33] = [
    0x00, 0x1f, // length
    0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x17, //
    0x00, 0x0b, 0x00, 0x02, 0x01, 0x00, //
    0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x04, 0x03, //
    0x00, 0x17, 0x00, 0x00, //
    0xff, 0x01, 0x00, 0x01, 0x00,
];

/// A DTLS 1.2 ClientHello in one epoch-0 record: `record_seq` in the record header,
/// `message_seq` in the handshake header, `random`, an empty session id, `cookie`, one
/// cipher suite (ECDHE-ECDSA-AES128-GCM-SHA256), null compression, and what a server
/// needs to answer it with its flight (a real client would go on from there).
pub fn client_hello(record_seq: u64, message_seq: u16, random: [u8; 32], cookie: &[u8]) -> Vec<u8> {
    let mut body = vec![0xfe, 0xfd];
    body.extend_from_slice(&random);
    body.push(0); // session_id
    body.push(u8::try_from(cookie.len()).expect("a cookie is at most 255 bytes"));
    body.extend_from_slice(cookie);
    body.extend_from_slice(&[0x00, 0x02, 0xc0, 0x2b]); // cipher_suites
    body.extend_from_slice(&[0x01, 0x00]); // compression_methods
    body.extend_from_slice(&EXTENSIONS);
    let len = (body.len() as u32).to_be_bytes();
    let mut hs = vec![1]; // client_hello
    hs.extend_from_slice(&len[1..]);
    hs.extend_from_slice(&message_seq.to_be_bytes());
    hs.extend_from_slice(&[0, 0, 0]); // fragment_offset
    hs.extend_from_slice(&len[1..]); // fragment_length
    hs.extend_from_slice(&body);
    let mut record = vec![22, 0xfe, 0xfd, 0, 0];
    record.extend_from_slice(&record_seq.to_be_bytes()[2..]);
    record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    record.extend_from_slice(&hs);
    record
}

/// The cookie of a HelloVerifyRequest, or `None` if `datagram` is not one.
pub fn hello_verify_cookie(datagram: &[u8]) -> Option<Vec<u8>> {
    // Record header (13), handshake header (12), server_version (2), cookie length (1).
    if datagram.first() != Some(&22) || datagram.get(13) != Some(&3) {
        return None;
    }
    let len = usize::from(*datagram.get(27)?);
    datagram.get(28..28 + len).map(<[u8]>::to_vec)
}

/// Whether `datagram` starts with a ServerHello (the server's flight after a ClientHello
/// it accepted).
pub fn is_server_hello(datagram: &[u8]) -> bool {
    datagram.first() == Some(&22) && datagram.get(13) == Some(&2)
}

/// The record sequence number of a DTLS datagram's first record.
pub fn record_seq(datagram: &[u8]) -> Option<u64> {
    let b = datagram.get(5..11)?;
    Some(b.iter().fold(0u64, |acc, x| acc << 8 | u64::from(*x)))
}
