//! The cheap pre-scan every STUN message passes before anything else touches it.
//!
//! It walks the header and the attribute list once, with bounds checks only, and records
//! where the attributes that matter sit. It rejects what RFC 8489 forbids (bad header,
//! lengths past the end, oversize USERNAME/REALM/NONCE/SOFTWARE) before the slower codec
//! sees the message, so a hostile datagram costs one linear pass and no allocation.

use super::wire::{self, Class, HEADER_LEN, MAGIC_COOKIE, attr, be16, be32, padded};
use std::ops::Range;

/// At most this many unknown comprehension-required attributes are reported back in
/// UNKNOWN-ATTRIBUTES (bounds the 420 response size).
pub const MAX_UNKNOWN: usize = 8;
/// Messages with more attributes than this are rejected as malformed.
pub const MAX_ATTRIBUTES: usize = 64;

/// RFC 8489 section 14.3: USERNAME is fewer than 509 bytes; REALM, NONCE, SOFTWARE fewer
/// than 128 characters, which UTF-8 allows to be up to 763 bytes.
const MAX_USERNAME: usize = 508;
const MAX_QUOTED_TEXT: usize = 763;

/// Why a datagram is not a STUN message we will process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanError {
    /// Not STUN at all (wrong leading bits, no magic cookie, too short): drop silently.
    NotStun,
    /// A STUN header, but the body is inconsistent (lengths, FINGERPRINT): drop silently.
    Malformed,
    /// A well-formed message whose attribute is longer than RFC 8489 allows: a request
    /// gets 400.
    Oversize(u16),
}

/// What the pre-scan learned; every range lies inside the scanned buffer.
#[derive(Clone, Debug)]
pub struct Scan {
    pub method: u16,
    pub class: Class,
    pub txn: [u8; 12],
    /// Total message length including the header.
    pub len: usize,
    /// Offset of the MESSAGE-INTEGRITY attribute header, if any.
    pub integrity: Option<usize>,
    /// The request carried a (valid) FINGERPRINT.
    pub fingerprint: bool,
    /// Unknown comprehension-required attributes before MESSAGE-INTEGRITY.
    pub unknown: [u16; MAX_UNKNOWN],
    pub unknown_len: usize,
    /// First XOR-PEER-ADDRESS and DATA values (used by the Send indication fast path).
    pub peer: Option<Range<usize>>,
    pub data: Option<Range<usize>>,
    /// First USERNAME, REALM and NONCE values before MESSAGE-INTEGRITY.
    pub username: Option<Range<usize>>,
    pub realm: Option<Range<usize>>,
    pub nonce: Option<Range<usize>>,
    /// DONT-FRAGMENT was present (before MESSAGE-INTEGRITY) on a method that understands
    /// it (Allocate, Send).
    pub dont_fragment: bool,
}

impl Scan {
    /// A scan standing for a request answered later (e.g. an Allocate whose relay socket
    /// could not be bound): enough to address the response.
    pub fn for_reply(method: u16, txn: [u8; 12], fingerprint: bool) -> Self {
        Scan {
            method,
            class: Class::Request,
            txn,
            len: HEADER_LEN,
            integrity: None,
            fingerprint,
            unknown: [0; MAX_UNKNOWN],
            unknown_len: 0,
            peer: None,
            data: None,
            username: None,
            realm: None,
            nonce: None,
            dont_fragment: false,
        }
    }

    pub fn unknown(&self) -> &[u16] {
        &self.unknown[..self.unknown_len]
    }
}

/// True for the attribute types this server understands (RFC 8489 section 14, RFC 8656).
/// RFC 5780's comprehension-required PADDING and RESPONSE-PORT are left out on purpose:
/// NAT behaviour discovery is not implemented, so a request carrying them is answered 420
/// naming them (RFC 8489 section 7.3.1; RFC 5780 sections 7.5 and 7.6), not served as if
/// they were absent.
fn understood(t: u16, method: u16) -> bool {
    // RFC 8656 section 18.9: DONT-FRAGMENT on an Allocate sets DF on everything the
    // relay sends for that allocation. In a Send indication it asks for DF on that one
    // datagram: the relay honours it when the allocation's socket sets DF already and
    // otherwise discards the indication (section 11.2), see `relay_send_indication`.
    // On any other method it is unknown.
    if t == attr::DONT_FRAGMENT {
        return method == wire::method::ALLOCATE || method == wire::method::SEND;
    }
    matches!(
        t,
        attr::MAPPED_ADDRESS
            | attr::USERNAME
            | attr::MESSAGE_INTEGRITY
            | attr::ERROR_CODE
            | attr::UNKNOWN_ATTRIBUTES
            | attr::CHANNEL_NUMBER
            | attr::LIFETIME
            | attr::XOR_PEER_ADDRESS
            | attr::DATA
            | attr::REALM
            | attr::NONCE
            | attr::XOR_RELAYED_ADDRESS
            | attr::REQUESTED_ADDRESS_FAMILY
            | attr::EVEN_PORT
            | attr::REQUESTED_TRANSPORT
            | attr::MESSAGE_INTEGRITY_SHA256
            | attr::PASSWORD_ALGORITHM
            | attr::USERHASH
            | attr::XOR_MAPPED_ADDRESS
            | attr::RESERVATION_TOKEN
            | attr::PRIORITY
            | attr::USE_CANDIDATE
            | attr::CONNECTION_ID
    )
}

/// Reads just the header: a datagram whose first two bits are 0 and which carries the
/// magic cookie (RFC 8489 section 6.3). Returns the total message length.
pub fn header_len(buf: &[u8]) -> Result<usize, ScanError> {
    let first = *buf.first().ok_or(ScanError::NotStun)?;
    if first & 0xC0 != 0 || be32(buf, 4) != Some(MAGIC_COOKIE) {
        return Err(ScanError::NotStun);
    }
    let body = be16(buf, 2).ok_or(ScanError::NotStun)? as usize;
    if body % 4 != 0 {
        return Err(ScanError::Malformed);
    }
    Ok(HEADER_LEN + body)
}

/// The header fields of a message whose body was refused, so that an error response can
/// still name its method and transaction.
pub fn header_only(buf: &[u8]) -> Option<Scan> {
    header_len(buf).ok()?;
    let (method, class) = wire::split_message_type(be16(buf, 0)?);
    let mut txn = [0u8; 12];
    txn.copy_from_slice(buf.get(8..20)?);
    let mut scan = Scan::for_reply(method, txn, false);
    scan.class = class;
    Some(scan)
}

/// Pre-scans one complete STUN message occupying all of `buf`.
pub fn scan(buf: &[u8]) -> Result<Scan, ScanError> {
    let len = header_len(buf)?;
    if len != buf.len() {
        return Err(ScanError::Malformed);
    }
    let mut out = header_only(buf).ok_or(ScanError::NotStun)?;
    out.len = len;

    let mut at = HEADER_LEN;
    let mut count = 0;
    let mut oversize = None;
    while at < len {
        count += 1;
        if count > MAX_ATTRIBUTES {
            return Err(ScanError::Malformed);
        }
        let t = be16(buf, at).ok_or(ScanError::Malformed)?;
        let vlen = be16(buf, at + 2).ok_or(ScanError::Malformed)? as usize;
        let value = at + 4;
        let next = value + padded(vlen);
        if next > len {
            return Err(ScanError::Malformed);
        }
        if out.fingerprint {
            // RFC 8489 section 14.7: FINGERPRINT is the last attribute.
            return Err(ScanError::Malformed);
        }
        match t {
            attr::FINGERPRINT => {
                if vlen != 4 || !fingerprint_matches(buf, at) {
                    return Err(ScanError::Malformed);
                }
                out.fingerprint = true;
            }
            // RFC 8489 section 14.5: attributes after MESSAGE-INTEGRITY are ignored,
            // except MESSAGE-INTEGRITY-SHA256 and FINGERPRINT.
            _ if out.integrity.is_some() => {}
            attr::MESSAGE_INTEGRITY => {
                if vlen != 20 {
                    return Err(ScanError::Malformed);
                }
                out.integrity = Some(at);
            }
            attr::USERNAME if vlen > MAX_USERNAME => oversize = oversize.or(Some(t)),
            attr::REALM | attr::NONCE | attr::SOFTWARE if vlen > MAX_QUOTED_TEXT => {
                oversize = oversize.or(Some(t))
            }
            attr::USERNAME if out.username.is_none() => out.username = Some(value..value + vlen),
            attr::REALM if out.realm.is_none() => out.realm = Some(value..value + vlen),
            attr::NONCE if out.nonce.is_none() => out.nonce = Some(value..value + vlen),
            attr::XOR_PEER_ADDRESS if out.peer.is_none() => out.peer = Some(value..value + vlen),
            attr::DATA if out.data.is_none() => out.data = Some(value..value + vlen),
            attr::DONT_FRAGMENT if understood(t, out.method) => out.dont_fragment = true,
            t if t < 0x8000
                && !understood(t, out.method)
                && out.unknown_len < MAX_UNKNOWN
                && !out.unknown().contains(&t) =>
            {
                out.unknown[out.unknown_len] = t;
                out.unknown_len += 1;
            }
            _ => {}
        }
        at = next;
    }
    match oversize {
        Some(t) => Err(ScanError::Oversize(t)),
        None => Ok(out),
    }
}

/// RFC 8489 section 14.7: CRC-32 of the message up to the FINGERPRINT attribute, with the
/// length field covering it, XOR 0x5354554e. The header length already ends at the
/// FINGERPRINT because it is the last attribute.
fn fingerprint_matches(buf: &[u8], at: usize) -> bool {
    match (buf.get(..at), be32(buf, at + 4)) {
        (Some(covered), Some(value)) => fingerprint(covered) == value,
        _ => false,
    }
}

/// The FINGERPRINT value over `covered` (RFC 8489 section 14.7).
pub fn fingerprint(covered: &[u8]) -> u32 {
    crc32fast::hash(covered) ^ 0x5354_554e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::writer::MessageWriter;

    fn binding_request() -> Vec<u8> {
        let mut m = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
        m.extend_from_slice(&[1; 12]);
        m
    }

    fn push_attr(m: &mut Vec<u8>, t: u16, v: &[u8]) {
        let w = MessageWriter::resume(std::mem::take(m)).unwrap();
        *m = w.attr(t, v).finish().unwrap();
    }

    #[test]
    fn accepts_a_plain_binding_request() {
        let s = scan(&binding_request()).unwrap();
        assert_eq!((s.method, s.class), (wire::method::BINDING, Class::Request));
        assert!(s.integrity.is_none() && !s.fingerprint);
    }

    #[test]
    fn rejects_truncated_and_inconsistent_lengths() {
        let m = binding_request();
        for cut in 0..m.len() {
            assert!(scan(&m[..cut]).is_err(), "prefix of {cut} bytes");
        }
        let mut m = binding_request();
        push_attr(&mut m, attr::LIFETIME, &[0, 0, 0, 1]);
        m[22..24].copy_from_slice(&400u16.to_be_bytes()); // attribute length past the end
        assert_eq!(scan(&m).unwrap_err(), ScanError::Malformed);
        let mut m = binding_request();
        m[3] = 2; // body length not a multiple of 4
        assert_eq!(scan(&m).unwrap_err(), ScanError::Malformed);
    }

    #[test]
    fn reports_unknown_comprehension_required_attributes_once_and_capped() {
        let mut m = binding_request();
        for t in [0x7F00u16, 0x7F00, 0x8F00] {
            push_attr(&mut m, t, &[]);
        }
        for t in 0x7000..0x7020u16 {
            push_attr(&mut m, t, &[1]);
        }
        let s = scan(&m).unwrap();
        assert_eq!(s.unknown_len, MAX_UNKNOWN);
        assert_eq!(s.unknown()[0], 0x7F00);
        assert!(!s.unknown().contains(&0x8F00));
    }

    #[test]
    fn reports_rfc5780_response_port_and_padding_as_unknown() {
        for (t, value) in [
            (attr::RESPONSE_PORT, &[0x13, 0x88, 0, 0][..]),
            (attr::PADDING, &[0; 8][..]),
        ] {
            let mut m = binding_request();
            push_attr(&mut m, t, value);
            assert_eq!(scan(&m).unwrap().unknown(), [t], "{t:#06x}");
        }
    }

    #[test]
    fn rejects_oversize_text_attributes() {
        let mut m = binding_request();
        push_attr(&mut m, attr::NONCE, &[b'a'; 800]);
        assert_eq!(scan(&m).unwrap_err(), ScanError::Oversize(attr::NONCE));
        let mut m = binding_request();
        push_attr(&mut m, attr::USERNAME, &[b'a'; 509]);
        assert_eq!(scan(&m).unwrap_err(), ScanError::Oversize(attr::USERNAME));
    }

    #[test]
    fn ignores_attributes_after_message_integrity() {
        let mut m = binding_request();
        push_attr(&mut m, attr::MESSAGE_INTEGRITY, &[0; 20]);
        push_attr(&mut m, 0x7F00, &[]);
        push_attr(&mut m, attr::NONCE, &[b'a'; 800]);
        let s = scan(&m).unwrap();
        assert_eq!(s.integrity, Some(HEADER_LEN));
        assert!(s.unknown().is_empty());
    }

    #[test]
    fn checks_fingerprint_and_that_it_is_last() {
        let mut m = binding_request();
        push_attr(&mut m, attr::FINGERPRINT, &[0; 4]);
        let at = m.len() - 8;
        let crc = fingerprint(&m[..at]);
        m[at + 4..].copy_from_slice(&crc.to_be_bytes());
        assert!(scan(&m).unwrap().fingerprint);
        let mut bad = m.clone();
        bad[at + 7] ^= 1;
        assert_eq!(scan(&bad).unwrap_err(), ScanError::Malformed);
        push_attr(&mut m, attr::LIFETIME, &[0; 4]);
        assert_eq!(scan(&m).unwrap_err(), ScanError::Malformed);
    }
}
