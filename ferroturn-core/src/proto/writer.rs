//! The one way a STUN message is written by hand: header, attributes padded to four
//! bytes with the length field kept current, then MESSAGE-INTEGRITY and FINGERPRINT.
//! The server's challenges, the client's data messages, the load tools' requests and
//! the tests' malformed messages all go through [`MessageWriter`].

use super::integrity;
use super::wire::{self, Class, HEADER_LEN, MAGIC_COOKIE};
use std::net::SocketAddr;

/// Builds one STUN message (RFC 8489 section 5). Nothing panics: a value or a message
/// that would not fit the 16-bit length fields marks the writer as overflowed, and
/// [`MessageWriter::finish`] then returns `None` instead of a mislabelled message.
#[derive(Clone, Debug)]
pub struct MessageWriter {
    buf: Vec<u8>,
    overflow: bool,
}

impl MessageWriter {
    /// A message of `method` and `class` with transaction id `txn` and no attributes.
    pub fn new(method: u16, class: Class, txn: &[u8; 12]) -> Self {
        Self::with_capacity(method, class, txn, 128)
    }

    /// As [`MessageWriter::new`], with room for `capacity` bytes before growing.
    pub fn with_capacity(method: u16, class: Class, txn: &[u8; 12], capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity.max(HEADER_LEN));
        buf.extend_from_slice(&wire::message_type(method, class).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(txn);
        Self {
            buf,
            overflow: false,
        }
    }

    /// Continues a message already encoded in `msg` (a header and whole attributes);
    /// `None` if it is shorter than a header.
    pub fn resume(msg: Vec<u8>) -> Option<Self> {
        if msg.len() < HEADER_LEN {
            return None;
        }
        let mut w = Self {
            buf: msg,
            overflow: false,
        };
        w.set_len();
        Some(w)
    }

    /// The transaction id.
    pub fn txn(&self) -> [u8; 12] {
        let mut txn = [0u8; 12];
        if let Some(t) = self.buf.get(8..HEADER_LEN) {
            txn.copy_from_slice(t);
        }
        txn
    }

    /// The message so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Appends attribute `t` with `value`, zero padded to a multiple of four bytes.
    pub fn attr(mut self, t: u16, value: &[u8]) -> Self {
        self.push(t, value);
        self
    }

    /// [`MessageWriter::attr`] through a reference, for loops.
    pub fn push(&mut self, t: u16, value: &[u8]) -> &mut Self {
        let Ok(len) = u16::try_from(value.len()) else {
            self.overflow = true;
            return self;
        };
        self.buf.extend_from_slice(&t.to_be_bytes());
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(value);
        self.buf.resize(wire::padded(self.buf.len()), 0);
        self.set_len();
        self
    }

    /// Appends an XOR-encoded address attribute (XOR-PEER-ADDRESS, XOR-MAPPED-ADDRESS,
    /// XOR-RELAYED-ADDRESS: RFC 8489 section 14.2) keyed with this message's
    /// transaction id.
    pub fn xor_address(self, t: u16, addr: SocketAddr) -> Self {
        let mut value = [0u8; 20];
        let txn = self.txn();
        match wire::encode_xor_address(addr, &txn, &mut value) {
            Some(n) => self.attr(t, &value[..n]),
            None => self.overflowed(),
        }
    }

    /// Appends `bytes` as they are (for messages that must be malformed, such as an
    /// attribute whose length field lies) and updates the length field.
    pub fn raw(mut self, bytes: &[u8]) -> Self {
        self.buf.extend_from_slice(bytes);
        self.set_len();
        self
    }

    /// Appends MESSAGE-INTEGRITY with `key` over everything written so far (RFC 8489
    /// section 14.5).
    pub fn integrity(mut self, key: &[u8]) -> Self {
        self.check_fits(24);
        integrity::seal(&mut self.buf, Some(key), false);
        self
    }

    /// Appends FINGERPRINT over everything written so far (RFC 8489 section 14.7).
    pub fn fingerprint(mut self) -> Self {
        self.check_fits(8);
        integrity::seal(&mut self.buf, None, true);
        self
    }

    /// Appends MESSAGE-INTEGRITY when `key` is given and FINGERPRINT when asked, and
    /// returns the message.
    pub fn seal(mut self, key: Option<&[u8]>, fingerprint: bool) -> Option<Vec<u8>> {
        if let Some(key) = key {
            self = self.integrity(key);
        }
        if fingerprint {
            self = self.fingerprint();
        }
        self.finish()
    }

    /// The message, or `None` if something written did not fit its length field.
    pub fn finish(self) -> Option<Vec<u8>> {
        (!self.overflow).then_some(self.buf)
    }

    fn overflowed(mut self) -> Self {
        self.overflow = true;
        self
    }

    fn check_fits(&mut self, more: usize) {
        if self.buf.len() + more - HEADER_LEN > usize::from(u16::MAX) {
            self.overflow = true;
        }
    }

    /// Sets the header's length field to the body written so far.
    fn set_len(&mut self) {
        match u16::try_from(self.buf.len() - HEADER_LEN) {
            Ok(body) => {
                if let Some(field) = self.buf.get_mut(2..4) {
                    field.copy_from_slice(&body.to_be_bytes());
                }
            }
            Err(_) => self.overflow = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::scan::scan;
    use crate::proto::wire::{attr, be16, method};

    #[test]
    fn attributes_are_padded_and_the_length_kept_current() {
        let w = MessageWriter::new(method::BINDING, Class::Request, &[3; 12])
            .attr(attr::USERNAME, b"abcde")
            .attr(attr::LIFETIME, &600u32.to_be_bytes());
        assert_eq!(w.as_bytes().len(), HEADER_LEN + 12 + 8);
        assert_eq!(be16(w.as_bytes(), 2), Some(20));
        assert_eq!(
            &w.as_bytes()[HEADER_LEN + 4..HEADER_LEN + 12],
            b"abcde\0\0\0"
        );
        let m = w.seal(Some(b"key"), true).unwrap();
        let s = scan(&m).expect("a well-formed message");
        assert!(s.fingerprint && s.integrity.is_some());
        assert_eq!(s.txn, [3; 12]);
    }

    #[test]
    fn xor_addresses_round_trip_with_the_transaction_id() {
        let txn = [5; 12];
        for addr in ["192.0.2.1:3478", "[2001:db8::7]:9"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let m = MessageWriter::new(method::SEND, Class::Indication, &txn)
                .xor_address(attr::XOR_PEER_ADDRESS, addr)
                .finish()
                .unwrap();
            let value = &m[HEADER_LEN + 4..];
            assert_eq!(wire::decode_xor_address(value, &txn), Some(addr));
        }
    }

    #[test]
    fn what_does_not_fit_is_refused_not_mislabelled() {
        let big = vec![0u8; 70_000];
        let w = MessageWriter::new(method::SEND, Class::Indication, &[0; 12]);
        assert!(w.clone().attr(attr::DATA, &big).finish().is_none());
        let full = w
            .attr(attr::DATA, &big[..65_000])
            .attr(attr::DATA, &big[..1000]);
        assert!(full.finish().is_none());
        let near = MessageWriter::new(method::SEND, Class::Indication, &[0; 12])
            .attr(attr::DATA, &big[..65_524]);
        assert!(near.clone().finish().is_some());
        assert!(near.fingerprint().finish().is_none());
    }

    #[test]
    fn resume_continues_an_encoded_message() {
        let m = MessageWriter::new(method::ALLOCATE, Class::Error, &[1; 12])
            .attr(attr::ERROR_CODE, &[0, 0, 4, 1])
            .finish()
            .unwrap();
        let m = MessageWriter::resume(m)
            .unwrap()
            .attr(attr::REALM, b"r")
            .finish()
            .unwrap();
        assert_eq!(be16(&m, 2), Some(16));
        assert!(MessageWriter::resume(vec![0; 10]).is_none());
    }
}
