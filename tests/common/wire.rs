//! STUN and TURN bytes in tests: requests built through the client codec with raw
//! attributes added, indications and ChannelData, and responses read attribute by
//! attribute. Only ferroturn, ferroturn-core and std: the fuzz targets include this file
//! (through `core_harness.rs`) as well as the test binaries.
#![allow(dead_code)]

use ferroturn::client::codec::{self as client_codec, RequestAttr, Response};
use ferroturn_core::proto::wire::{self, Class, HEADER_LEN, attr, method};
use ferroturn_core::proto::writer::MessageWriter;
use ferroturn_core::proto::{data, integrity, scan};
use std::net::{IpAddr, SocketAddr};

/// REQUESTED-TRANSPORT protocol numbers (RFC 8656 section 18.8).
pub const UDP: u8 = 17;
pub const TCP: u8 = 6;
/// A comprehension-required attribute type no STUN or TURN document defines.
pub const UNKNOWN_ATTR: u16 = 0x7F01;

/// An address literal of a test.
pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address parses")
}

/// An IP literal of a test.
pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP parses")
}

// ---------------------------------------------------------------------------------
// Writing.

/// A message with only a header.
pub fn header(method: u16, class: Class, txn: &[u8; 12]) -> Vec<u8> {
    MessageWriter::new(method, class, txn)
        .finish()
        .expect("a header")
}

/// Appends attribute `t` to an encoded message.
pub fn push_attr(m: &mut Vec<u8>, t: u16, v: &[u8]) {
    let w = MessageWriter::resume(std::mem::take(m)).expect("a header");
    *m = w.attr(t, v).finish().expect("fits");
}

/// A request through the client codec, with `extra` raw attributes appended, then
/// MESSAGE-INTEGRITY (when `key`) and FINGERPRINT (when asked).
pub fn build(
    method: u16,
    txn: &[u8; 12],
    attrs: &[RequestAttr<'_>],
    extra: &[(u16, &[u8])],
    key: Option<&[u8]>,
    fingerprint: bool,
) -> Vec<u8> {
    let mut m =
        client_codec::encode_request(method, false, txn, attrs, None).expect("request encodes");
    // encode_request always ends with FINGERPRINT; drop it to append or seal again.
    let at = m.len() - 8;
    assert_eq!(wire::be16(&m, at), Some(attr::FINGERPRINT));
    m.truncate(at);
    let mut w = MessageWriter::resume(m).expect("a header");
    for (t, v) in extra {
        w.push(*t, v);
    }
    w.seal(key, fingerprint).expect("fits")
}

/// A Send indication (RFC 8656 section 11.1) with `extra` raw attributes after DATA.
pub fn send_indication(
    txn: &[u8; 12],
    peer: SocketAddr,
    payload: &[u8],
    extra: &[(u16, &[u8])],
) -> Vec<u8> {
    let mut w = MessageWriter::new(method::SEND, Class::Indication, txn)
        .xor_address(attr::XOR_PEER_ADDRESS, peer)
        .attr(attr::DATA, payload);
    for (t, v) in extra {
        w.push(*t, v);
    }
    w.finish().expect("fits")
}

/// ChannelData as sent over UDP (RFC 8656 section 12.4), written out byte by byte so
/// that it checks the server's framing rather than repeating it.
pub fn channel_data(number: u16, payload: &[u8]) -> Vec<u8> {
    let mut m = number.to_be_bytes().to_vec();
    m.extend_from_slice(&u16::try_from(payload.len()).expect("short").to_be_bytes());
    m.extend_from_slice(payload);
    m
}

// ---------------------------------------------------------------------------------
// Reading.

/// The attributes of a message, in order: (type, value offset, value length). Panics
/// unless they fill the message exactly.
pub fn attributes(m: &[u8]) -> Vec<(u16, usize, usize)> {
    let mut out = Vec::new();
    let mut at = HEADER_LEN;
    while at + 4 <= m.len() {
        let t = wire::be16(m, at).expect("in bounds");
        let len = usize::from(wire::be16(m, at + 2).expect("in bounds"));
        out.push((t, at + 4, len));
        at += 4 + wire::padded(len);
    }
    assert_eq!(at, m.len(), "attributes fill the message exactly");
    out
}

pub fn attr_types(m: &[u8]) -> Vec<u16> {
    attributes(m).into_iter().map(|(t, _, _)| t).collect()
}

/// The value of the first attribute of type `t`.
pub fn attribute(m: &[u8], t: u16) -> Option<&[u8]> {
    let (_, at, len) = attributes(m).into_iter().find(|(ty, _, _)| *ty == t)?;
    Some(&m[at..at + len])
}

/// Overwrites the value of the first attribute of type `t`.
pub fn patch_attr(m: &mut [u8], t: u16, value: &[u8]) {
    let (_, at, len) = attributes(m)
        .into_iter()
        .find(|(ty, _, _)| *ty == t)
        .expect("attribute present");
    assert_eq!(len, value.len());
    m[at..at + len].copy_from_slice(value);
}

pub fn class_of(m: &[u8]) -> (u16, Class) {
    wire::split_message_type(wire::be16(m, 0).expect("has a header"))
}

/// Whether `m` is a success response.
pub fn is_success(m: &[u8]) -> bool {
    m.len() >= HEADER_LEN && class_of(m).1 == Class::Success
}

/// The decoded success response to a `method` request; panics on anything else.
pub fn success(m: &[u8], method: u16) -> Response {
    assert_eq!(
        class_of(m),
        (method, Class::Success),
        "expected success, got error {:?}",
        error_code(m)
    );
    let r = client_codec::decode_response(m).expect("response decodes");
    assert_eq!(r.error_code, None);
    r
}

/// The decoded `code` error response to a `method` request; panics on anything else.
pub fn error(m: &[u8], method: u16, code: u16) -> Response {
    assert_eq!(class_of(m), (method, Class::Error), "expected error {code}");
    let r = client_codec::decode_response(m).expect("response decodes");
    assert_eq!(r.error_code, Some(code));
    r
}

/// The ERROR-CODE of a response (`None` for a success).
pub fn error_code(m: &[u8]) -> Option<u16> {
    client_codec::decode_response(m).and_then(|r| r.error_code)
}

/// The LIFETIME of a response.
pub fn lifetime(m: &[u8]) -> Option<u32> {
    client_codec::decode_response(m).and_then(|r| r.lifetime)
}

/// The XOR-RELAYED-ADDRESS of an Allocate success.
pub fn relayed_of(m: &[u8]) -> SocketAddr {
    client_codec::decode_response(m)
        .and_then(|r| r.xor_relayed)
        .expect("XOR-RELAYED-ADDRESS")
}

/// The response carries MESSAGE-INTEGRITY and it verifies with `key` (RFC 8489 14.5).
pub fn verifies(m: &[u8], key: &[u8]) -> bool {
    let s = scan::scan(m).expect("response scans");
    s.integrity.is_some_and(|at| integrity::verify(m, at, key))
}

pub fn has_integrity(m: &[u8]) -> bool {
    attr_types(m).contains(&attr::MESSAGE_INTEGRITY)
}

/// A valid FINGERPRINT as the last attribute (RFC 8489 section 14.7).
pub fn has_fingerprint(m: &[u8]) -> bool {
    let last = attr_types(m).last().copied();
    let fingerprint = scan::scan(m).expect("response scans").fingerprint;
    assert_eq!(fingerprint, last == Some(attr::FINGERPRINT));
    fingerprint
}

/// The peer and payload of a Data indication (RFC 8656 section 11.3).
pub fn data_indication(m: &[u8]) -> (SocketAddr, Vec<u8>) {
    let s = scan::scan(m).expect("a Data indication is a valid STUN message");
    assert_eq!((s.method, s.class), (method::DATA, Class::Indication));
    let (peer, range) = data::parse_send_indication(m, &s).expect("XOR-PEER-ADDRESS and DATA");
    (peer, m[range].to_vec())
}

/// The CONNECTION-ID and XOR-PEER-ADDRESS of a ConnectionAttempt indication (RFC 6062
/// section 4.4), which carries FINGERPRINT and no MESSAGE-INTEGRITY.
pub fn connection_attempt(m: &[u8]) -> (u32, SocketAddr) {
    assert_eq!(class_of(m), (method::CONNECTION_ATTEMPT, Class::Indication));
    assert!(!has_integrity(m) && has_fingerprint(m));
    let id = attribute(m, attr::CONNECTION_ID).expect("CONNECTION-ID");
    let id = u32::from_be_bytes(id.try_into().expect("a 32-bit CONNECTION-ID"));
    let mut txn = [0u8; 12];
    txn.copy_from_slice(&m[8..20]);
    let peer = attribute(m, attr::XOR_PEER_ADDRESS).expect("XOR-PEER-ADDRESS");
    (
        id,
        wire::decode_xor_address(peer, &txn).expect("an address"),
    )
}

/// The CONNECTION-ID of a Connect success (RFC 6062 section 4.3).
pub fn connection_id_of(m: &[u8]) -> u32 {
    success(m, method::CONNECT)
        .connection_id
        .expect("CONNECTION-ID")
}
