//! The STUN control-message codec: stun-rs, wrapped so that no other module sees its
//! types. Only requests that passed the pre-scan reach [`decode_request`]; the data path
//! (ChannelData, Send and Data indications) never comes here.

use super::scan::Scan;
use super::wire::{self, HEADER_LEN, attr};
use super::writer::MessageWriter;
use std::net::SocketAddr;
use stun_rs::attributes::stun::{ErrorCode as ErrorCodeAttr, UnknownAttributes, XorMappedAddress};
use stun_rs::attributes::turn::{LifeTime, XorRelayedAddress};
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
    /// RFC 8656 section 18.11: ADDITIONAL-ADDRESS-FAMILY (a dual allocation). Only IPv6
    /// is valid; the Allocate handler refuses IPv4 (section 7.2).
    pub additional_family: Option<Family>,
    pub even_port: Option<bool>,
    /// RFC 8656 section 18.10.
    pub reservation_token: Option<[u8; 8]>,
    pub dont_fragment: bool,
    pub peers: Vec<SocketAddr>,
    pub channel: Option<u16>,
    /// RFC 6062 section 6.2.1: CONNECTION-ID (ConnectionBind).
    pub connection_id: Option<u32>,
    /// RFC 8016 section 3.3: empty in an Allocate that asks for one, the ticket itself in
    /// a Refresh.
    pub mobility_ticket: Option<Vec<u8>>,
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
    let end = scan.integrity.unwrap_or(buf.len());
    let mut req = Request {
        username: text(&scan.username)?,
        realm: text(&scan.realm)?,
        nonce: text(&scan.nonce)?,
        connection_id: connection_id(buf, end)?,
        ..Request::default()
    };
    let covered = without_text_attributes(buf, end).ok_or(DecodeError)?;
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
            StunAttribute::AdditionalAddressFamily(f) if req.additional_family.is_none() => {
                req.additional_family = Some(family(f.family()))
            }
            StunAttribute::EvenPort(e) if req.even_port.is_none() => {
                req.even_port = Some(e.reserve())
            }
            StunAttribute::ReservationToken(t) if req.reservation_token.is_none() => {
                // stun-rs decodes exactly 8 bytes; anything else is no token.
                req.reservation_token = <[u8; 8]>::try_from(t.token()).ok()
            }
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
            StunAttribute::MobilityTicket(t) if req.mobility_ticket.is_none() => {
                req.mobility_ticket = Some(t.value().to_vec())
            }
            _ => {}
        }
    }
    Ok(req)
}

/// The header and the attributes of `buf` before `end`, minus USERNAME, REALM, NONCE and
/// MESSAGE-INTEGRITY, with the length field set to match; ADDITIONAL-ADDRESS-FAMILY under
/// coturn's draft code point is renamed to the RFC's, so stun-rs decodes it. The
/// pre-scan has checked every attribute header, so the walk stays in bounds (and returns
/// `None` if it would not).
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
            let start = out.len();
            out.extend_from_slice(buf.get(at..next)?);
            if t == attr::ADDITIONAL_ADDRESS_FAMILY_DRAFT {
                out.get_mut(start..start + 2)?
                    .copy_from_slice(&attr::ADDITIONAL_ADDRESS_FAMILY.to_be_bytes());
            }
        }
        at = next;
    }
    let body = u16::try_from(out.len() - HEADER_LEN).ok()?;
    out.get_mut(2..4)?.copy_from_slice(&body.to_be_bytes());
    Some(out)
}

/// The first CONNECTION-ID before `end` (stun-rs does not know it): a 32-bit value
/// (RFC 6062 section 6.2.1); any other length cannot be decoded (400).
fn connection_id(buf: &[u8], end: usize) -> Result<Option<u32>, DecodeError> {
    match first_attribute(buf, end, attr::CONNECTION_ID) {
        None => Ok(None),
        Some(range) if range.len() == 4 => Ok(wire::be32(buf, range.start)),
        Some(_) => Err(DecodeError),
    }
}

/// The value of the first attribute of type `t` before `end`, walked over the attribute
/// headers the pre-scan checked (`None` past any inconsistency).
pub fn first_attribute(buf: &[u8], end: usize, t: u16) -> Option<std::ops::Range<usize>> {
    let mut at = HEADER_LEN;
    while at < end {
        let len = usize::from(wire::be16(buf, at + 2)?);
        let value = at + 4..at + 4 + len;
        if wire::be16(buf, at)? == t {
            return (value.end <= buf.len()).then_some(value);
        }
        at += 4 + wire::padded(len);
    }
    None
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
    /// RFC 8656 section 18.10.
    ReservationToken([u8; 8]),
    /// RFC 6062 section 6.2.1, in a Connect success response.
    ConnectionId(u32),
    /// RFC 8656 section 18.12: in the success response to a dual Allocate, the family
    /// that could not be allocated and why (440 or 508).
    AddressErrorCode(Family, u16),
    /// RFC 8016 section 3.3.
    MobilityTicket([u8; crate::auth::ticket::TICKET_LEN]),
}

/// Encodes a response or indication; MESSAGE-INTEGRITY (with `key`) and FINGERPRINT are
/// appended by [`MessageWriter::seal`]. Returns `None` only if stun-rs refuses a value, which
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
            ResponseAttr::ReservationToken(token) => {
                builder.with_attribute(stun_rs::attributes::turn::ReservationToken::from(token))
            }
            ResponseAttr::AddressErrorCode(family, code) => {
                let family = match family {
                    Family::V4 => AddressFamily::IPv4,
                    Family::V6 => AddressFamily::IPv6,
                };
                // No reason phrase, as for ERROR-CODE.
                let code = stun_rs::ErrorCode::new(code, "").ok()?;
                builder.with_attribute(stun_rs::attributes::turn::AddressErrorCode::new(
                    family, code,
                ))
            }
            ResponseAttr::MobilityTicket(ticket) => {
                builder.with_attribute(stun_rs::attributes::mobility::MobilityTicket::new(ticket))
            }
            // Written by hand below: stun-rs's quoted-string check costs ~5 us apiece,
            // and it does not know CONNECTION-ID.
            ResponseAttr::Realm(_) | ResponseAttr::Nonce(_) | ResponseAttr::ConnectionId(_) => {
                builder
            }
        };
    }
    let msg = builder.build();
    let mut out = vec![0u8; 1024];
    let n = MessageEncoderBuilder::default()
        .build()
        .encode(&mut out, &msg)
        .ok()?;
    out.truncate(n);
    let mut w = MessageWriter::resume(out)?;
    for a in attrs {
        // REALM comes from the validated configuration and NONCE from our own base64.
        match *a {
            ResponseAttr::Realm(text) => w.push(attr::REALM, text.as_bytes()),
            ResponseAttr::Nonce(text) => w.push(attr::NONCE, text.as_bytes()),
            ResponseAttr::ConnectionId(id) => w.push(attr::CONNECTION_ID, &id.to_be_bytes()),
            _ => &mut w,
        };
    }
    w.seal(key, fingerprint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::scan::scan;
    use crate::proto::wire::{Class, method};

    /// An Allocate with USERNAME, REALM, NONCE, REQUESTED-TRANSPORT UDP, LIFETIME and a
    /// XOR-PEER-ADDRESS, sealed with `key` and FINGERPRINT.
    fn request(username: &[u8], key: &[u8]) -> Vec<u8> {
        MessageWriter::new(method::ALLOCATE, Class::Request, &[1; 12])
            .attr(attr::USERNAME, username)
            .attr(attr::REALM, b"example.org")
            .attr(attr::NONCE, b"n0nce")
            .attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            .attr(attr::LIFETIME, &1234u32.to_be_bytes())
            .xor_address(attr::XOR_PEER_ADDRESS, "192.0.2.9:7".parse().unwrap())
            .seal(Some(key), true)
            .unwrap()
    }

    #[test]
    fn text_attributes_are_read_raw_and_the_rest_through_stun_rs() {
        let m = request(b"1700000000:alice", b"key");
        let r = decode_request(&m, &scan(&m).unwrap()).unwrap();
        assert_eq!(r.username.as_deref(), Some("1700000000:alice"));
        assert_eq!(r.realm.as_deref(), Some("example.org"));
        assert_eq!(r.nonce.as_deref(), Some("n0nce"));
        assert_eq!((r.requested_transport, r.lifetime), (Some(17), Some(1234)));
        assert_eq!(r.peers, vec!["192.0.2.9:7".parse().unwrap()]);
    }

    /// RFC 8656 section 18.11 (0x8000) and coturn's draft code point (0x8032) both name
    /// ADDITIONAL-ADDRESS-FAMILY; the first one wins.
    #[test]
    fn additional_address_family_is_read_under_either_code_point() {
        for (first, second, family) in [
            (attr::ADDITIONAL_ADDRESS_FAMILY, None, Family::V6),
            (attr::ADDITIONAL_ADDRESS_FAMILY_DRAFT, None, Family::V6),
            (
                attr::ADDITIONAL_ADDRESS_FAMILY_DRAFT,
                Some(attr::ADDITIONAL_ADDRESS_FAMILY),
                Family::V6,
            ),
        ] {
            let mut w = MessageWriter::new(method::ALLOCATE, Class::Request, &[3; 12])
                .attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
                .attr(first, &[2, 0, 0, 0]);
            if let Some(t) = second {
                w = w.attr(t, &[1, 0, 0, 0]);
            }
            let m = w.seal(Some(b"key"), true).unwrap();
            let r = decode_request(&m, &scan(&m).unwrap()).unwrap();
            assert_eq!(r.additional_family, Some(family), "{first:#x}");
        }
        let m = MessageWriter::new(method::ALLOCATE, Class::Request, &[3; 12])
            .attr(attr::ADDITIONAL_ADDRESS_FAMILY_DRAFT, &[1, 0, 0, 0])
            .seal(None, true)
            .unwrap();
        let r = decode_request(&m, &scan(&m).unwrap()).unwrap();
        assert_eq!(r.additional_family, Some(Family::V4));
    }

    #[test]
    fn connection_id_is_read_by_hand_and_must_be_four_bytes() {
        let with = |value: &[u8]| {
            MessageWriter::new(method::CONNECTION_BIND, Class::Request, &[1; 12])
                .attr(attr::CONNECTION_ID, value)
                .seal(Some(b"key"), true)
                .unwrap()
        };
        let m = with(&0xDEAD_BEEFu32.to_be_bytes());
        let r = decode_request(&m, &scan(&m).unwrap()).unwrap();
        assert_eq!(r.connection_id, Some(0xDEAD_BEEF));
        for bad in [&[1u8, 2, 3][..], &[1, 2, 3, 4, 5][..], &[][..]] {
            let m = with(bad);
            assert_eq!(
                decode_request(&m, &scan(&m).unwrap()).unwrap_err(),
                DecodeError
            );
        }
        let ok = encode(
            method::CONNECT,
            true,
            &[2; 12],
            &[ResponseAttr::ConnectionId(7)],
            Some(b"key"),
            true,
        )
        .unwrap();
        let at = first_attribute(&ok, ok.len(), attr::CONNECTION_ID).unwrap();
        assert_eq!(&ok[at], &7u32.to_be_bytes());
    }

    #[test]
    fn invalid_utf8_username_is_a_decode_error() {
        let m = request(b"ab\xFFd", b"key");
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
        let text = |r: &Option<std::ops::Range<usize>>| r.clone().map(|r| &m[r]);
        assert_eq!(text(&s.realm), Some(&b"r.example"[..]));
        assert_eq!(text(&s.nonce), Some(&b"abc"[..]));
        // ERROR-CODE, the first attribute: class 4, number 1.
        assert_eq!(wire::be16(&m, HEADER_LEN), Some(attr::ERROR_CODE));
        assert_eq!(&m[HEADER_LEN + 6..HEADER_LEN + 8], &[4, 1]);
        let decoded = MessageDecoderBuilder::default()
            .build()
            .decode(&m)
            .unwrap()
            .0;
        assert!(
            decoded
                .attributes()
                .iter()
                .any(|a| matches!(a, StunAttribute::Nonce(n) if n.as_str() == "abc"))
        );
    }
}
