//! The STUN control-message codec: stun-rs, wrapped so that no other module sees its
//! types. Only requests that passed the pre-scan reach [`decode_request`]; the data path
//! (ChannelData, Send and Data indications) never comes here.

use super::integrity;
use super::scan::Scan;
use super::wire::{self, HEADER_LEN, attr};
use std::net::SocketAddr;
use stun_rs::attributes::stun::{
    ErrorCode as ErrorCodeAttr, Nonce, Realm, UnknownAttributes, UserName, XorMappedAddress,
};
use stun_rs::attributes::turn::{
    ChannelNumber, EvenPort, LifeTime, RequestedAddressFamily, RequestedTrasport, XorPeerAddress,
    XorRelayedAddress,
};
use stun_rs::{
    AddressFamily, MessageClass, MessageDecoderBuilder, MessageEncoderBuilder, MessageMethod,
    StunAttribute, StunMessageBuilder, TransactionId,
};

/// At most this many XOR-PEER-ADDRESS attributes are read from one CreatePermission.
pub const MAX_PEERS_PER_REQUEST: usize = 16;

/// An IP address family as TURN names it (RFC 8656 section 18.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// A decoded request: only the attributes the handlers act on, all of them located before
/// MESSAGE-INTEGRITY (the codec never sees what follows it).
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub username: Option<String>,
    pub realm: Option<String>,
    pub nonce: Option<String>,
    pub lifetime: Option<u32>,
    pub requested_transport: Option<u8>,
    pub requested_family: Option<Family>,
    pub additional_family: bool,
    pub even_port: Option<bool>,
    pub reservation_token: bool,
    pub dont_fragment: bool,
    pub peers: Vec<SocketAddr>,
    pub channel: Option<u16>,
}

/// The request could not be decoded: answered with 400 Bad Request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeError;

/// Decodes a pre-scanned request. USERNAME, REALM and NONCE are read here as UTF-8 from
/// the ranges the pre-scan found: stun-rs runs them through PRECIS and a quoted-string
/// grammar that cost ~1, ~4.5 and ~6.5 us each (ten times everything else together), for
/// values this server only compares byte for byte. stun-rs decodes the rest, from a copy
/// that holds only the attributes before MESSAGE-INTEGRITY (RFC 8489 section 14.5:
/// what follows it is ignored, so its contents cannot fail the request).
pub fn decode_request(buf: &[u8], scan: &Scan) -> Result<Request, DecodeError> {
    let text = |range: &Option<std::ops::Range<usize>>| -> Result<Option<String>, DecodeError> {
        match range {
            None => Ok(None),
            Some(r) => {
                let bytes = buf.get(r.clone()).ok_or(DecodeError)?;
                let s = std::str::from_utf8(bytes).map_err(|_| DecodeError)?;
                Ok(Some(s.to_owned()))
            }
        }
    };
    let mut req = Request {
        username: text(&scan.username)?,
        realm: text(&scan.realm)?,
        nonce: text(&scan.nonce)?,
        ..Request::default()
    };
    let covered =
        without_text_attributes(buf, scan.integrity.unwrap_or(buf.len())).ok_or(DecodeError)?;
    let decoder = MessageDecoderBuilder::default().build();
    let (msg, _) = decoder.decode(&covered).map_err(|_| DecodeError)?;
    for a in msg.attributes() {
        // RFC 8489 section 14: the first instance of a duplicated attribute wins.
        match a {
            StunAttribute::LifeTime(l) if req.lifetime.is_none() => {
                req.lifetime = Some(*l.as_ref())
            }
            StunAttribute::RequestedTrasport(t) if req.requested_transport.is_none() => {
                req.requested_transport = Some(t.protocol().as_u8())
            }
            StunAttribute::RequestedAddressFamily(f) if req.requested_family.is_none() => {
                req.requested_family = Some(family(f.family()))
            }
            StunAttribute::AdditionalAddressFamily(_) => req.additional_family = true,
            StunAttribute::EvenPort(e) if req.even_port.is_none() => {
                req.even_port = Some(e.reserve())
            }
            StunAttribute::ReservationToken(_) => req.reservation_token = true,
            StunAttribute::DontFragment(_) => req.dont_fragment = true,
            StunAttribute::XorPeerAddress(p) => {
                if req.peers.len() >= MAX_PEERS_PER_REQUEST {
                    return Err(DecodeError);
                }
                req.peers.push(*p.socket_address())
            }
            StunAttribute::ChannelNumber(c) if req.channel.is_none() => {
                req.channel = Some(c.number())
            }
            _ => {}
        }
    }
    Ok(req)
}

/// Appends an attribute with zero padding and updates the length field.
fn push_raw_attribute(msg: &mut Vec<u8>, t: u16, value: &[u8]) -> Option<()> {
    let len = u16::try_from(value.len()).ok()?;
    msg.extend_from_slice(&t.to_be_bytes());
    msg.extend_from_slice(&len.to_be_bytes());
    msg.extend_from_slice(value);
    msg.resize(wire::padded(msg.len()), 0);
    let body = u16::try_from(msg.len() - HEADER_LEN).ok()?;
    msg.get_mut(2..4)?.copy_from_slice(&body.to_be_bytes());
    Some(())
}

/// The header and the attributes of `buf` before `end`, minus USERNAME, REALM, NONCE and
/// MESSAGE-INTEGRITY, with the length field set to match. The pre-scan has checked every
/// attribute header, so the walk stays in bounds (and returns `None` if it would not).
fn without_text_attributes(buf: &[u8], end: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(end);
    out.extend_from_slice(buf.get(..HEADER_LEN)?);
    let mut at = HEADER_LEN;
    while at < end {
        let t = wire::be16(buf, at)?;
        let next = at + 4 + wire::padded(usize::from(wire::be16(buf, at + 2)?));
        if !matches!(
            t,
            attr::USERNAME | attr::REALM | attr::NONCE | attr::MESSAGE_INTEGRITY
        ) {
            out.extend_from_slice(buf.get(at..next)?);
        }
        at = next;
    }
    let body = u16::try_from(out.len() - HEADER_LEN).ok()?;
    out.get_mut(2..4)?.copy_from_slice(&body.to_be_bytes());
    Some(out)
}

fn family(f: AddressFamily) -> Family {
    match f {
        AddressFamily::IPv4 => Family::V4,
        AddressFamily::IPv6 => Family::V6,
    }
}

/// An attribute the server puts in a response.
#[derive(Clone, Debug)]
pub enum ResponseAttr<'a> {
    XorMappedAddress(SocketAddr),
    XorRelayedAddress(SocketAddr),
    Lifetime(u32),
    ErrorCode(u16),
    UnknownAttributes(&'a [u16]),
    Realm(&'a str),
    Nonce(&'a str),
    /// RFC 8489 section 14.15, with a 300 (Try Alternate).
    AlternateServer(SocketAddr),
}

/// Encodes a response or indication; MESSAGE-INTEGRITY (with `key`) and FINGERPRINT are
/// appended by [`integrity::seal`]. Returns `None` only if stun-rs refuses a value, which
/// the caller treats as "send nothing".
pub fn encode(
    method: u16,
    success: bool,
    txn: &[u8; 12],
    attrs: &[ResponseAttr<'_>],
    key: Option<&[u8]>,
    fingerprint: bool,
) -> Option<Vec<u8>> {
    let class = if success {
        MessageClass::SuccessResponse
    } else {
        MessageClass::ErrorResponse
    };
    let method = MessageMethod::try_from(method).ok()?;
    let mut builder =
        StunMessageBuilder::new(method, class).with_transaction_id(TransactionId::from(*txn));
    for a in attrs {
        builder = match *a {
            ResponseAttr::XorMappedAddress(addr) => {
                builder.with_attribute(XorMappedAddress::from(addr))
            }
            ResponseAttr::XorRelayedAddress(addr) => {
                builder.with_attribute(XorRelayedAddress::from(addr))
            }
            ResponseAttr::Lifetime(secs) => builder.with_attribute(LifeTime::from(secs)),
            ResponseAttr::ErrorCode(code) => {
                // RFC 8489 section 14.8: the reason phrase is optional in effect; we send
                // none, so an error response is no larger than it must be.
                let code = stun_rs::ErrorCode::new(code, "").ok()?;
                builder.with_attribute(ErrorCodeAttr::new(code))
            }
            ResponseAttr::UnknownAttributes(list) => {
                builder.with_attribute(UnknownAttributes::from(list))
            }
            ResponseAttr::AlternateServer(addr) => {
                builder.with_attribute(stun_rs::attributes::stun::AlternateServer::from(addr))
            }
            // Written by hand below: stun-rs's quoted-string check costs ~5 us apiece.
            ResponseAttr::Realm(_) | ResponseAttr::Nonce(_) => builder,
        };
    }
    let msg = builder.build();
    let mut out = vec![0u8; 1024];
    let n = MessageEncoderBuilder::default()
        .build()
        .encode(&mut out, &msg)
        .ok()?;
    out.truncate(n);
    for a in attrs {
        // REALM comes from the validated configuration and NONCE from our own base64.
        if let ResponseAttr::Realm(text) | ResponseAttr::Nonce(text) = *a {
            let t = if matches!(a, ResponseAttr::Realm(_)) {
                attr::REALM
            } else {
                attr::NONCE
            };
            push_raw_attribute(&mut out, t, text.as_bytes())?;
        }
    }
    integrity::seal(&mut out, key, fingerprint);
    Some(out)
}

/// Builds a request (used by the test client and the load generator, never by the
/// server's request path). `extra` carries the attributes; USERNAME/REALM/NONCE first.
#[derive(Clone, Debug)]
pub enum RequestAttr<'a> {
    Username(&'a str),
    Realm(&'a str),
    Nonce(&'a str),
    Lifetime(u32),
    RequestedTransport(u8),
    RequestedFamily(Family),
    EvenPort(bool),
    XorPeerAddress(SocketAddr),
    ChannelNumber(u16),
}

/// Encodes a request or indication of `method` for clients; see [`RequestAttr`].
pub fn encode_request(
    method: u16,
    indication: bool,
    txn: &[u8; 12],
    attrs: &[RequestAttr<'_>],
    key: Option<&[u8]>,
) -> Option<Vec<u8>> {
    let class = if indication {
        MessageClass::Indication
    } else {
        MessageClass::Request
    };
    let method = MessageMethod::try_from(method).ok()?;
    let mut b =
        StunMessageBuilder::new(method, class).with_transaction_id(TransactionId::from(*txn));
    for a in attrs {
        b = match *a {
            RequestAttr::Username(u) => b.with_attribute(UserName::new(u).ok()?),
            RequestAttr::Realm(r) => b.with_attribute(Realm::new(r).ok()?),
            RequestAttr::Nonce(n) => b.with_attribute(Nonce::new(n).ok()?),
            RequestAttr::Lifetime(l) => b.with_attribute(LifeTime::from(l)),
            // stun-rs can only name UDP; other protocols are written by hand by tests.
            RequestAttr::RequestedTransport(_) => {
                b.with_attribute(RequestedTrasport::new(stun_rs::protocols::UDP))
            }
            RequestAttr::RequestedFamily(f) => {
                b.with_attribute(RequestedAddressFamily::new(match f {
                    Family::V4 => AddressFamily::IPv4,
                    Family::V6 => AddressFamily::IPv6,
                }))
            }
            RequestAttr::EvenPort(r) => b.with_attribute(EvenPort::new(r)),
            RequestAttr::XorPeerAddress(a) => b.with_attribute(XorPeerAddress::from(a)),
            RequestAttr::ChannelNumber(c) => b.with_attribute(ChannelNumber::new(c)),
        };
    }
    let msg = b.build();
    let mut out = vec![0u8; 1024];
    let n = MessageEncoderBuilder::default()
        .build()
        .encode(&mut out, &msg)
        .ok()?;
    out.truncate(n);
    integrity::seal(&mut out, key, true);
    Some(out)
}

/// Reads the attributes a client needs from a response (test client, load generator).
#[derive(Clone, Debug, Default)]
pub struct Response {
    pub error_code: Option<u16>,
    pub realm: Option<String>,
    pub nonce: Option<String>,
    pub xor_mapped: Option<SocketAddr>,
    pub xor_relayed: Option<SocketAddr>,
    pub lifetime: Option<u32>,
    pub unknown_attributes: Vec<u16>,
}

/// Decodes a response for a client; `None` if it is not a well-formed STUN message.
pub fn decode_response(buf: &[u8]) -> Option<Response> {
    let (msg, _) = MessageDecoderBuilder::default().build().decode(buf).ok()?;
    let mut r = Response::default();
    for a in msg.attributes() {
        match a {
            StunAttribute::ErrorCode(e) => r.error_code = Some(e.error_code().error_code()),
            StunAttribute::Realm(x) => r.realm = Some(x.as_str().to_owned()),
            StunAttribute::Nonce(x) => r.nonce = Some(x.as_str().to_owned()),
            StunAttribute::XorMappedAddress(x) => r.xor_mapped = Some(*x.socket_address()),
            StunAttribute::XorRelayedAddress(x) => r.xor_relayed = Some(*x.socket_address()),
            StunAttribute::LifeTime(l) => r.lifetime = Some(*l.as_ref()),
            StunAttribute::UnknownAttributes(u) => r.unknown_attributes = u.attributes().to_vec(),
            _ => {}
        }
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::scan::scan;

    fn request(attrs: &[RequestAttr<'_>]) -> Vec<u8> {
        encode_request(0x003, false, &[1; 12], attrs, Some(b"key")).expect("encodes")
    }

    #[test]
    fn text_attributes_are_read_raw_and_the_rest_through_stun_rs() {
        let m = request(&[
            RequestAttr::Username("1700000000:alice"),
            RequestAttr::Realm("example.org"),
            RequestAttr::Nonce("n0nce"),
            RequestAttr::RequestedTransport(17),
            RequestAttr::Lifetime(1234),
            RequestAttr::XorPeerAddress("192.0.2.9:7".parse().unwrap()),
        ]);
        let r = decode_request(&m, &scan(&m).unwrap()).unwrap();
        assert_eq!(r.username.as_deref(), Some("1700000000:alice"));
        assert_eq!(r.realm.as_deref(), Some("example.org"));
        assert_eq!(r.nonce.as_deref(), Some("n0nce"));
        assert_eq!((r.requested_transport, r.lifetime), (Some(17), Some(1234)));
        assert_eq!(r.peers, vec!["192.0.2.9:7".parse().unwrap()]);
    }

    #[test]
    fn invalid_utf8_username_is_a_decode_error() {
        let mut m = request(&[
            RequestAttr::Username("abcd"),
            RequestAttr::RequestedTransport(17),
        ]);
        m[24] = 0xFF;
        // Re-seal the FINGERPRINT over the changed byte.
        let at = m.len() - 8;
        m.truncate(at);
        m[2..4].copy_from_slice(&((at - HEADER_LEN) as u16).to_be_bytes());
        integrity::seal(&mut m, None, true);
        let s = scan(&m).unwrap();
        assert_eq!(decode_request(&m, &s).unwrap_err(), DecodeError);
    }

    #[test]
    fn challenge_carries_realm_and_nonce_written_by_hand() {
        let attrs = [
            ResponseAttr::ErrorCode(401),
            ResponseAttr::Realm("r.example"),
            ResponseAttr::Nonce("abc"),
        ];
        let m = encode(0x003, false, &[2; 12], &attrs, None, true).unwrap();
        let s = scan(&m).expect("valid message with FINGERPRINT last");
        assert!(s.fingerprint);
        let r = decode_response(&m).unwrap();
        assert_eq!(r.error_code, Some(401));
        assert_eq!(r.realm.as_deref(), Some("r.example"));
        assert_eq!(r.nonce.as_deref(), Some("abc"));
    }
}
