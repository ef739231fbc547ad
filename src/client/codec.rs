//! Requests a client sends and the responses it reads, through stun-rs: the test client
//! and the load tools encode with stun-rs's validating builder and decode with its
//! decoder, so the server's own codec is checked against an independent one.

use ferroturn_core::proto::Family;
use ferroturn_core::proto::codec::first_attribute;
use ferroturn_core::proto::wire::attr;
use ferroturn_core::proto::writer::MessageWriter;
use std::net::SocketAddr;
use stun_rs::attributes::stun::{Nonce, Realm, UserName};
use stun_rs::attributes::turn::{
    AdditionalAddressFamily, ChannelNumber, EvenPort, LifeTime, RequestedAddressFamily,
    RequestedTrasport, XorPeerAddress,
};
use stun_rs::{
    AddressFamily, MessageClass, MessageDecoderBuilder, MessageEncoderBuilder, MessageMethod,
    StunAttribute, StunMessageBuilder, TransactionId,
};

/// An attribute of a request a client builds (USERNAME, REALM, NONCE first).
#[derive(Clone, Debug)]
pub enum RequestAttr<'a> {
    Username(&'a str),
    Realm(&'a str),
    Nonce(&'a str),
    Lifetime(u32),
    RequestedTransport(u8),
    RequestedFamily(Family),
    /// RFC 8656 section 18.11: a dual allocation (only IPv6 is valid; tests send IPv4
    /// to see it refused).
    AdditionalFamily(Family),
    EvenPort(bool),
    /// RFC 8656 section 18.10.
    ReservationToken([u8; 8]),
    /// RFC 8656 section 18.9.
    DontFragment,
    XorPeerAddress(SocketAddr),
    ChannelNumber(u16),
    /// RFC 6062 section 6.2.1 (ConnectionBind).
    ConnectionId(u32),
    /// RFC 8016 section 3.3: empty in an Allocate to ask for one, the ticket in a Refresh.
    MobilityTicket(&'a [u8]),
}

/// RFC 8656 section 18.8: REQUESTED-TRANSPORT for UDP, the one stun-rs can write.
const PROTOCOL_UDP: u8 = 17;

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
    // What stun-rs cannot write (REQUESTED-TRANSPORT other than UDP, CONNECTION-ID) is
    // appended by hand after the rest.
    let mut by_hand: Vec<(u16, [u8; 4])> = Vec::new();
    for a in attrs {
        b = match *a {
            RequestAttr::Username(u) => b.with_attribute(UserName::new(u).ok()?),
            RequestAttr::Realm(r) => b.with_attribute(Realm::new(r).ok()?),
            RequestAttr::Nonce(n) => b.with_attribute(Nonce::new(n).ok()?),
            RequestAttr::Lifetime(l) => b.with_attribute(LifeTime::from(l)),
            RequestAttr::RequestedTransport(PROTOCOL_UDP) => {
                b.with_attribute(RequestedTrasport::new(stun_rs::protocols::UDP))
            }
            RequestAttr::RequestedTransport(p) => {
                by_hand.push((attr::REQUESTED_TRANSPORT, [p, 0, 0, 0]));
                b
            }
            RequestAttr::ConnectionId(id) => {
                by_hand.push((attr::CONNECTION_ID, id.to_be_bytes()));
                b
            }
            RequestAttr::RequestedFamily(f) => {
                b.with_attribute(RequestedAddressFamily::new(address_family(f)))
            }
            RequestAttr::AdditionalFamily(f) => {
                b.with_attribute(AdditionalAddressFamily::new(address_family(f)))
            }
            RequestAttr::EvenPort(r) => b.with_attribute(EvenPort::new(r)),
            RequestAttr::ReservationToken(t) => {
                b.with_attribute(stun_rs::attributes::turn::ReservationToken::from(t))
            }
            RequestAttr::DontFragment => {
                b.with_attribute(stun_rs::attributes::turn::DontFragment::default())
            }
            RequestAttr::XorPeerAddress(a) => b.with_attribute(XorPeerAddress::from(a)),
            RequestAttr::ChannelNumber(c) => b.with_attribute(ChannelNumber::new(c)),
            RequestAttr::MobilityTicket(t) => {
                b.with_attribute(stun_rs::attributes::mobility::MobilityTicket::new(t))
            }
        };
    }
    let msg = b.build();
    let mut out = vec![0u8; 1024];
    let n = MessageEncoderBuilder::default()
        .build()
        .encode(&mut out, &msg)
        .ok()?;
    out.truncate(n);
    let mut w = MessageWriter::resume(out)?;
    for (t, v) in &by_hand {
        w.push(*t, v);
    }
    w.seal(key, true)
}

fn address_family(f: Family) -> AddressFamily {
    match f {
        Family::V4 => AddressFamily::IPv4,
        Family::V6 => AddressFamily::IPv6,
    }
}

/// Reads the attributes a client needs from a response (test client, load generator).
#[derive(Clone, Debug, Default)]
pub struct Response {
    pub error_code: Option<u16>,
    pub realm: Option<String>,
    pub nonce: Option<String>,
    pub xor_mapped: Option<SocketAddr>,
    /// The first XOR-RELAYED-ADDRESS.
    pub xor_relayed: Option<SocketAddr>,
    /// A second XOR-RELAYED-ADDRESS (a dual allocation, RFC 8656 section 7.2).
    pub additional_relayed: Option<SocketAddr>,
    /// RFC 8656 section 18.12: the family a dual allocation did not get, and why.
    pub address_error: Option<(Family, u16)>,
    pub lifetime: Option<u32>,
    pub unknown_attributes: Vec<u16>,
    pub reservation_token: Option<[u8; 8]>,
    /// RFC 6062 section 6.2.1 (a Connect success), read by hand: stun-rs does not know it.
    pub connection_id: Option<u32>,
    pub mobility_ticket: Option<Vec<u8>>,
}

/// Decodes a response for a client; `None` if it is not a well-formed STUN message.
pub fn decode_response(buf: &[u8]) -> Option<Response> {
    let (msg, _) = MessageDecoderBuilder::default().build().decode(buf).ok()?;
    let covered = first_attribute(buf, buf.len(), attr::MESSAGE_INTEGRITY)
        .map_or(buf.len(), |value| value.start - 4);
    let mut r = Response {
        connection_id: first_attribute(buf, covered, attr::CONNECTION_ID)
            .filter(|v| v.len() == 4)
            .and_then(|v| ferroturn_core::proto::wire::be32(buf, v.start)),
        ..Response::default()
    };
    for a in msg.attributes() {
        match a {
            StunAttribute::ErrorCode(e) => r.error_code = Some(e.error_code().error_code()),
            StunAttribute::Realm(x) => r.realm = Some(x.as_str().to_owned()),
            StunAttribute::Nonce(x) => r.nonce = Some(x.as_str().to_owned()),
            StunAttribute::XorMappedAddress(x) => r.xor_mapped = Some(*x.socket_address()),
            StunAttribute::XorRelayedAddress(x) => match r.xor_relayed {
                None => r.xor_relayed = Some(*x.socket_address()),
                Some(_) => r.additional_relayed = Some(*x.socket_address()),
            },
            StunAttribute::AddressErrorCode(e) => {
                let family = match e.family() {
                    AddressFamily::IPv4 => Family::V4,
                    AddressFamily::IPv6 => Family::V6,
                };
                r.address_error = Some((family, e.error_code().error_code()))
            }
            StunAttribute::LifeTime(l) => r.lifetime = Some(*l.as_ref()),
            StunAttribute::ReservationToken(t) => {
                r.reservation_token = <[u8; 8]>::try_from(t.token()).ok()
            }
            StunAttribute::UnknownAttributes(u) => r.unknown_attributes = u.attributes().to_vec(),
            StunAttribute::MobilityTicket(t) => r.mobility_ticket = Some(t.value().to_vec()),
            _ => {}
        }
    }
    Some(r)
}
