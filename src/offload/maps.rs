//! The eBPF program's map layouts (`bpf/relay.h`), mirrored byte for byte. Addresses and
//! ports are in network byte order; an IPv4 address sits in the first word of four.
//! Every padding byte is a named zero field, because the kernel compares hash keys as
//! bytes.

use std::net::{IpAddr, SocketAddr};

pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// `flags`: the new destination is this host's own address; the datagram continues up
/// the stack on lo instead of being routed.
pub const DELIVER_LOCAL: u32 = 1;

/// Largest ChannelData payload the kernel moves (its per-CPU scratch buffer); larger
/// datagrams take the user-space path.
pub const MAX_PAYLOAD: usize = 2048;

/// `BPF_F_LOCK`: a map update or lookup of a value holding a `bpf_spin_lock` takes it.
pub const BPF_F_LOCK: u64 = 4;
/// `BPF_NOEXIST` / `BPF_EXIST` for map updates.
pub const BPF_NOEXIST: u64 = 1;

/// An address as the maps hold it.
pub fn ip_words(ip: IpAddr) -> [u32; 4] {
    match ip {
        IpAddr::V4(v4) => [u32::from_ne_bytes(v4.octets()), 0, 0, 0],
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let word = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            [word(0), word(4), word(8), word(12)]
        }
    }
}

pub fn family(addr: &SocketAddr) -> u8 {
    if addr.is_ipv4() { FAMILY_V4 } else { FAMILY_V6 }
}

/// A port in network byte order, as the datagram carries it.
pub fn port(addr: &SocketAddr) -> u16 {
    addr.port().to_be()
}

/// Client -> peer: ChannelData from a client to a listening address (`struct chan_key`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChanKey {
    pub family: u8,
    pub pad: u8,
    pub channel: u16,
    pub client_port: u16,
    pub server_port: u16,
    pub client_ip: [u32; 4],
    pub server_ip: [u32; 4],
}

/// `struct chan_up`: where the payload goes, and what went.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChanUp {
    pub relay_ip: [u32; 4],
    pub peer_ip: [u32; 4],
    pub relay_port: u16,
    pub peer_port: u16,
    pub flags: u32,
    pub packets: u64,
    pub bytes: u64,
}

/// Peer -> client: a datagram from a peer to a relayed address (`struct peer_key`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerKey {
    pub family: u8,
    pub pad: [u8; 3],
    pub peer_port: u16,
    pub relay_port: u16,
    pub peer_ip: [u32; 4],
    pub relay_ip: [u32; 4],
}

/// `struct chan_down`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChanDown {
    pub client_ip: [u32; 4],
    pub server_ip: [u32; 4],
    pub client_port: u16,
    pub server_port: u16,
    pub channel: u16,
    pub flags: u16,
    pub packets: u64,
    pub bytes: u64,
}

/// An allocation's rate state is keyed by its relayed address (`struct rate_key`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateKey {
    pub family: u8,
    pub pad: u8,
    pub port: u16,
    pub ip: [u32; 4],
}

impl RateKey {
    pub fn new(relay: SocketAddr) -> Self {
        Self {
            family: family(&relay),
            pad: 0,
            port: port(&relay),
            ip: ip_words(relay.ip()),
        }
    }
}

/// `struct bucket`: nano-bytes, and when they were last counted (0: never, full).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    pub nanotokens: u64,
    pub last_ns: u64,
}

/// `struct rate_state`: bytes per second in each direction (0: unlimited), one bucket per
/// direction. The first word is the kernel's `bpf_spin_lock`, which map updates with
/// [`BPF_F_LOCK`] leave alone.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateState {
    pub lock: u32,
    pub pad: u32,
    pub bytes_per_sec: u64,
    pub up: Bucket,
    pub down: Bucket,
}

impl RateState {
    /// A rate with both buckets full.
    pub fn new(bytes_per_sec: u64) -> Self {
        Self {
            bytes_per_sec,
            ..Self::default()
        }
    }
}

// SAFETY: each type is #[repr(C)], made only of integers and arrays of integers, with
// every padding byte a named field, so any bit pattern is a valid value and the kernel's
// copy of it is exactly these bytes.
unsafe impl aya::Pod for ChanKey {}
// SAFETY: as above.
unsafe impl aya::Pod for ChanUp {}
// SAFETY: as above.
unsafe impl aya::Pod for PeerKey {}
// SAFETY: as above.
unsafe impl aya::Pod for ChanDown {}
// SAFETY: as above.
unsafe impl aya::Pod for RateKey {}
// SAFETY: as above.
unsafe impl aya::Pod for RateState {}

// The sizes relay.h states; a mismatch would make every map operation fail.
const _: () = assert!(size_of::<ChanKey>() == 40);
const _: () = assert!(size_of::<ChanUp>() == 56);
const _: () = assert!(size_of::<PeerKey>() == 40);
const _: () = assert!(size_of::<ChanDown>() == 56);
const _: () = assert!(size_of::<RateKey>() == 20);
const _: () = assert!(size_of::<RateState>() == 48);

/// Indexes of the per-CPU `stats` array (`enum stat`).
pub mod stat {
    pub const UP_PACKETS: u32 = 0;
    pub const UP_BYTES: u32 = 1;
    pub const DOWN_PACKETS: u32 = 2;
    pub const DOWN_BYTES: u32 = 3;
    pub const UP_DROP_RATE: u32 = 4;
    pub const UP_DROP_CAPACITY: u32 = 5;
    pub const DOWN_DROP_RATE: u32 = 6;
    pub const DOWN_DROP_CAPACITY: u32 = 7;
    pub const DROP_ERROR: u32 = 8;
    pub const PASS_MALFORMED: u32 = 9;
    pub const PASS_TOO_BIG: u32 = 10;
    pub const PASS_NOT_LOOPBACK: u32 = 11;
    pub const PASS_NO_ROUTE: u32 = 12;
    pub const PASS_FRAG_NEEDED: u32 = 13;
    pub const PASS_FWD_DISABLED: u32 = 14;
    #[cfg(test)]
    pub const COUNT: u32 = 15;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_in_network_order() {
        let w = ip_words("10.1.2.3".parse().unwrap());
        assert_eq!(w[0].to_ne_bytes(), [10, 1, 2, 3]);
        assert_eq!(&w[1..], &[0, 0, 0]);
        let w = ip_words("2001:db8::1".parse().unwrap());
        assert_eq!(w[0].to_ne_bytes(), [0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(w[3].to_ne_bytes(), [0, 0, 0, 1]);
        let a: SocketAddr = "127.0.0.1:3478".parse().unwrap();
        assert_eq!(port(&a).to_ne_bytes(), 3478u16.to_be_bytes());
    }

    #[test]
    fn stat_indexes_match_the_program() {
        let header = include_str!("bpf/relay.h");
        let body = header
            .split("enum stat {")
            .nth(1)
            .and_then(|s| s.split("};").next())
            .unwrap_or_default();
        let names: Vec<&str> = body
            .lines()
            .filter_map(|l| l.trim().split(',').next())
            .filter(|n| n.starts_with("ST_"))
            .collect();
        assert_eq!(names.len() as u32, stat::COUNT + 1, "{names:?}");
        assert_eq!(names[stat::UP_DROP_RATE as usize], "ST_UP_DROP_RATE");
        assert_eq!(
            names[stat::PASS_FWD_DISABLED as usize],
            "ST_PASS_FWD_DISABLED"
        );
        assert_eq!(names[stat::COUNT as usize], "ST_COUNT");
    }
}
