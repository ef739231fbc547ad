//! The STUN control-message codec: stun-rs, wrapped so that no other module sees its
//! types. Only requests that passed the pre-scan reach [`decode_request`]; the data path
//! (ChannelData, Send and Data indications) never comes here.

use super::integrity;
use super::scan::Scan;
use super::wire::HEADER_LEN;
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

/// Decodes a pre-scanned request. Attributes after MESSAGE-INTEGRITY are cut off before
/// stun-rs sees the message (RFC 8489 section 14.5), so their contents cannot fail it.
pub fn decode_request(buf: &[u8], scan: &Scan) -> Result<Request, DecodeError> {
    let owned;
    let covered = match scan.integrity {
        Some(at) => {
            owned = integrity::truncated_at_integrity(buf, at).ok_or(DecodeError)?;
            &owned[..]
        }
        None => buf,
    };
    let decoder = MessageDecoderBuilder::default().build();
    let (msg, _) = decoder.decode(covered).map_err(|_| DecodeError)?;
    let mut req = Request::default();
    for a in msg.attributes() {
        // RFC 8489 section 14: the first instance of a duplicated attribute wins.
        match a {
            StunAttribute::UserName(u) if req.username.is_none() => {
                req.username = Some(u.as_str().to_owned())
            }
            StunAttribute::Realm(r) if req.realm.is_none() => {
                req.realm = Some(r.as_str().to_owned())
            }
            StunAttribute::Nonce(n) if req.nonce.is_none() => {
                req.nonce = Some(n.as_str().to_owned())
            }
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
            ResponseAttr::Realm(r) => builder.with_attribute(Realm::new(r).ok()?),
            ResponseAttr::Nonce(n) => builder.with_attribute(Nonce::new(n).ok()?),
        };
    }
    let msg = builder.build();
    let mut out = vec![0u8; 1024];
    let n = MessageEncoderBuilder::default()
        .build()
        .encode(&mut out, &msg)
        .ok()?;
    out.truncate(n);
    integrity::seal(&mut out, key, fingerprint);
    debug_assert!(out.len() >= HEADER_LEN);
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
