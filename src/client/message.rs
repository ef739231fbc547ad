//! Data messages a client sends and receives, built and read without a server: Send
//! indications out, ChannelData both ways, Data and ConnectionAttempt indications in.

use super::Relayed;
use ferroturn_core::proto::data;
use ferroturn_core::proto::scan::scan;
use ferroturn_core::proto::wire::{self, Class, method};
use ferroturn_core::proto::writer::MessageWriter;
use rand::RngExt;
use std::net::SocketAddr;

/// The largest DATA a Send indication carries: the STUN length field (at most 65532)
/// less an IPv6 XOR-PEER-ADDRESS (24), the DATA header (4) and FINGERPRINT (8).
pub const MAX_INDICATION_DATA: usize = 65_532 - 24 - 4 - 8;

/// Encodes a Send indication (RFC 8656 section 11.1) with FINGERPRINT. A payload over
/// [`MAX_INDICATION_DATA`] bytes is cut to that length.
pub fn send_indication(peer: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let payload = payload.get(..MAX_INDICATION_DATA).unwrap_or(payload);
    let txn: [u8; 12] = rand::rng().random();
    MessageWriter::with_capacity(method::SEND, Class::Indication, &txn, 64 + payload.len())
        .xor_address(wire::attr::XOR_PEER_ADDRESS, peer)
        .attr(wire::attr::DATA, payload)
        .seal(None, true)
        // The payload was cut to what fits.
        .unwrap_or_default()
}

/// Encodes ChannelData (RFC 8656 section 12.4) as sent over UDP, without padding; a
/// payload over 65535 bytes is cut to that length. Streams need the padded form, which
/// [`super::TurnClient::send_channel_data`] writes by itself.
pub fn channel_data(channel: u16, payload: &[u8]) -> Vec<u8> {
    let payload = payload.get(..usize::from(u16::MAX)).unwrap_or(payload);
    super::link::channel_data_message(channel, payload, false).unwrap_or_default()
}

/// Decodes a Data indication or ChannelData from the server (one datagram, or one frame
/// of a stream).
pub fn parse_relayed(bytes: &[u8]) -> Option<Relayed> {
    if data::is_channel_data(bytes) {
        let (channel, range) = data::parse_channel_data(bytes)?;
        return Some(Relayed::Channel {
            channel,
            data: bytes.get(range)?.to_vec(),
        });
    }
    let s = scan(bytes).ok()?;
    if (s.method, s.class) != (method::DATA, Class::Indication) {
        return None;
    }
    let (peer, range) = data::parse_send_indication(bytes, &s)?;
    Some(Relayed::Indication {
        peer,
        data: bytes.get(range)?.to_vec(),
    })
}

/// Decodes a ConnectionAttempt indication (RFC 6062 section 4.4): the CONNECTION-ID to
/// bind and the peer that connected.
pub fn parse_connection_attempt(bytes: &[u8]) -> Option<(u32, SocketAddr)> {
    let s = scan(bytes).ok()?;
    if (s.method, s.class) != (method::CONNECTION_ATTEMPT, Class::Indication) {
        return None;
    }
    let end = s.integrity.unwrap_or(bytes.len());
    let id = ferroturn_core::proto::codec::first_attribute(bytes, end, wire::attr::CONNECTION_ID)
        .filter(|v| v.len() == 4)?;
    let id = wire::be32(bytes, id.start)?;
    let peer = wire::decode_xor_address(bytes.get(s.peer?)?, &s.txn)?;
    Some((id, peer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_attempts_name_the_connection_and_the_peer() {
        let peer: SocketAddr = "192.0.2.7:4000".parse().unwrap();
        let m = MessageWriter::new(method::CONNECTION_ATTEMPT, Class::Indication, &[9; 12])
            .attr(wire::attr::CONNECTION_ID, &77u32.to_be_bytes())
            .xor_address(wire::attr::XOR_PEER_ADDRESS, peer)
            .seal(None, true)
            .unwrap();
        assert_eq!(parse_connection_attempt(&m), Some((77, peer)));
        assert_eq!(parse_relayed(&m), None);
        assert_eq!(parse_connection_attempt(&send_indication(peer, b"x")), None);
    }

    #[test]
    fn oversized_payloads_are_cut_not_mislabelled() {
        let cd = channel_data(0x4001, &vec![1; 70_000]);
        assert_eq!(cd.len(), 4 + 65_535);
        assert_eq!(
            parse_relayed(&cd),
            Some(Relayed::Channel {
                channel: 0x4001,
                data: vec![1; 65_535]
            })
        );
        for peer in ["192.0.2.1:9", "[2001:db8::1]:9"] {
            let peer: SocketAddr = peer.parse().unwrap();
            let ind = send_indication(peer, &vec![2; 70_000]);
            let s = scan(&ind).unwrap();
            let (p, range) = data::parse_send_indication(&ind, &s).unwrap();
            assert_eq!((p, range.len()), (peer, MAX_INDICATION_DATA));
            assert_eq!(
                ind.len() - wire::HEADER_LEN,
                usize::from(wire::be16(&ind, 2).unwrap())
            );
        }
    }
}
