//! What the generator puts on the wire and reads back: the probe header every payload
//! starts with, and the three framings (ChannelData, Send/Data indication, raw).

use ferroturn_core::proto::data;
use ferroturn_core::proto::wire::{self, Class, HEADER_LEN, MAGIC_COOKIE, attr, be16, method};
use ferroturn_core::proto::writer::MessageWriter;
use std::net::SocketAddr;

/// Flow id (u32), sequence number (u32), send time in ns on the run's clock (u64).
pub const PROBE_LEN: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub flow: u32,
    pub seq: u32,
    pub ts: u64,
}

impl Probe {
    pub fn write(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.flow.to_be_bytes());
        out[4..8].copy_from_slice(&self.seq.to_be_bytes());
        out[8..16].copy_from_slice(&self.ts.to_be_bytes());
    }

    pub fn read(payload: &[u8]) -> Option<Self> {
        let b: &[u8; PROBE_LEN] = payload.get(..PROBE_LEN)?.try_into().ok()?;
        let [f0, f1, f2, f3, s0, s1, s2, s3, t @ ..] = *b;
        Some(Self {
            flow: u32::from_be_bytes([f0, f1, f2, f3]),
            seq: u32::from_be_bytes([s0, s1, s2, s3]),
            ts: u64::from_be_bytes(t),
        })
    }
}

/// How payloads travel to the echo peer.
#[derive(Clone, Copy, Debug)]
pub enum Framing {
    /// ChannelData on each flow's channel (RFC 8656 section 12.4).
    Channel,
    /// Send indications to the peer, Data indications back (RFC 8656 section 11).
    Indication { peer: SocketAddr },
    /// The bare payload (the raw forwarder).
    Raw,
}

/// A datagram ready to be stamped: the framing around a `size`-byte payload whose first
/// bytes are the probe.
pub struct Template {
    pub bytes: Vec<u8>,
    /// Where the payload (and so the probe) starts.
    pub payload_at: usize,
}

impl Template {
    pub fn new(framing: Framing, size: usize) -> Option<Self> {
        let filler = (0..size).map(|i| (i % 251) as u8);
        match framing {
            Framing::Raw => Some(Self {
                bytes: filler.collect(),
                payload_at: 0,
            }),
            Framing::Channel => {
                // Channel 0x4000 here; `stamp` writes each flow's own.
                let at = wire::CHANNEL_DATA_HEADER_LEN;
                let mut bytes = vec![0; at];
                bytes.extend(filler);
                data::frame_channel_data(&mut bytes, at..at + size, 0x4000, false)?;
                Some(Self {
                    bytes,
                    payload_at: at,
                })
            }
            Framing::Indication { peer } => send_indication(peer, filler.collect()),
        }
    }

    /// Writes the probe (and, for ChannelData, the channel number) into `out`, a copy of
    /// the template.
    pub fn stamp(&self, out: &mut [u8], channel: u16, probe: Probe) {
        if self.payload_at == wire::CHANNEL_DATA_HEADER_LEN {
            out[0..2].copy_from_slice(&channel.to_be_bytes());
        }
        probe.write(&mut out[self.payload_at..]);
    }
}

/// A Send indication (RFC 8656 section 11.1) without FINGERPRINT, which is optional and
/// would have to be recomputed for every stamped payload.
fn send_indication(peer: SocketAddr, payload: Vec<u8>) -> Option<Template> {
    let txn: [u8; 12] = rand::random();
    let bytes =
        MessageWriter::with_capacity(method::SEND, Class::Indication, &txn, 64 + payload.len())
            .xor_address(attr::XOR_PEER_ADDRESS, peer)
            .attr(attr::DATA, &payload)
            .finish()?;
    // The payload is the DATA attribute's value, the last attribute.
    let payload_at = bytes.len() - wire::padded(payload.len());
    Some(Template { bytes, payload_at })
}

/// What arrived on a flow socket.
pub enum Incoming<'a> {
    /// A relayed payload (ChannelData, Data indication, or raw).
    Payload(&'a [u8]),
    /// A STUN response (to an in-run refresh).
    Response,
    Other,
}

/// Classifies a datagram from the server (or the forwarder) without allocating.
pub fn classify(framing: Framing, bytes: &[u8]) -> Incoming<'_> {
    if let Framing::Raw = framing {
        return Incoming::Payload(bytes);
    }
    if data::is_channel_data(bytes) {
        return match data::parse_channel_data(bytes).and_then(|(_, r)| bytes.get(r)) {
            Some(p) => Incoming::Payload(p),
            None => Incoming::Other,
        };
    }
    let (Some(t), Some(len)) = (be16(bytes, 0), be16(bytes, 2)) else {
        return Incoming::Other;
    };
    if wire::be32(bytes, 4) != Some(MAGIC_COOKIE) {
        return Incoming::Other;
    }
    match wire::split_message_type(t) {
        (method::DATA, Class::Indication) => {
            let end = (HEADER_LEN + len as usize).min(bytes.len());
            match bytes.get(..end).and_then(data_attribute) {
                Some(p) => Incoming::Payload(p),
                None => Incoming::Other,
            }
        }
        (_, Class::Success | Class::Error) => Incoming::Response,
        _ => Incoming::Other,
    }
}

/// The DATA attribute's value in a STUN message, by a bounded walk over the attributes.
fn data_attribute(msg: &[u8]) -> Option<&[u8]> {
    let mut at = HEADER_LEN;
    while at + 4 <= msg.len() {
        let t = be16(msg, at)?;
        let len = be16(msg, at + 2)? as usize;
        let value = msg.get(at + 4..at + 4 + len)?;
        if t == attr::DATA {
            return Some(value);
        }
        at += 4 + wire::padded(len);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(framing: Framing) {
        let t = Template::new(framing, 200).unwrap();
        let mut out = t.bytes.clone();
        let probe = Probe {
            flow: 7,
            seq: 9,
            ts: 123_456_789,
        };
        t.stamp(&mut out, 0x4007, probe);
        let Incoming::Payload(p) = classify(framing, &out) else {
            panic!("not a payload");
        };
        assert_eq!(p.len(), 200);
        assert_eq!(Probe::read(p), Some(probe));
    }

    #[test]
    fn probes_survive_every_framing() {
        roundtrip(Framing::Raw);
        roundtrip(Framing::Channel);
        // A Send indication parses as a payload too: same layout as a Data indication
        // apart from the method, which the server rewrites.
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let t = Template::new(Framing::Indication { peer }, 201).unwrap();
        assert_eq!(t.bytes.len() % 4, 0);
        let scan = ferroturn_core::proto::scan::scan(&t.bytes).unwrap();
        let (p, range) = data::parse_send_indication(&t.bytes, &scan).unwrap();
        assert_eq!((p, range.len()), (peer, 201));
    }

    #[test]
    fn data_indications_from_the_server_are_read() {
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut buf = vec![0u8; data::HEADROOM + 200 + data::TAILROOM];
        let payload = data::HEADROOM..data::HEADROOM + 200;
        buf[payload.clone()][..16].copy_from_slice(&[1; 16]);
        let r = data::frame_data_indication(&mut buf, payload, peer, &[3; 12]).unwrap();
        let Incoming::Payload(p) = classify(Framing::Indication { peer }, &buf[r]) else {
            panic!("not a payload");
        };
        assert_eq!(p.len(), 200);
        assert_eq!(&p[..16], &[1; 16]);
    }

    #[test]
    fn garbage_is_not_a_payload() {
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        for bytes in [&[][..], &[0x40, 0, 0, 9, 1], &[0; 20], &[0xff; 40]] {
            assert!(!matches!(
                classify(Framing::Indication { peer }, bytes),
                Incoming::Payload(_)
            ));
        }
        assert_eq!(Probe::read(&[0; 15]), None);
    }
}
