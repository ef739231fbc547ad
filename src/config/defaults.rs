//! Every default of the configuration, in one place. `turnserver.toml.example` and the
//! flags' help texts state the same values; tests/cli.rs checks the help against these.

use std::net::{IpAddr, Ipv4Addr};

/// `listening-ip`: every IPv4 address.
pub const LISTENING_IP: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
pub const LISTENING_PORT: u16 = 3478;
pub const TLS_LISTENING_PORT: u16 = 5349;
pub const MIN_PORT: u16 = 49152;
pub const MAX_PORT: u16 = 65535;
pub const REALM: &str = "ferroturn";
pub const REST_API_SEPARATOR: char = ':';
/// `max-credential-ttl`: 7 days (0 turns the limit off).
pub const MAX_CREDENTIAL_TTL: u64 = 7 * 86_400;
pub const STRICT_CREDENTIAL_EXPIRY: bool = true;
pub const STALE_NONCE: u64 = 600;
pub const DEFAULT_ALLOCATE_LIFETIME: u64 = 600;
pub const MAX_ALLOCATE_LIFETIME: u64 = 3600;
/// RFC 8656 section 9: permissions last 300 s.
pub const PERMISSION_LIFETIME: u64 = 300;
/// RFC 8656 section 12: channel bindings last 600 s.
pub const CHANNEL_LIFETIME: u64 = 600;
/// 0: unlimited.
pub const USER_QUOTA: u32 = 0;
/// 0: unlimited.
pub const TOTAL_QUOTA: u32 = 0;
pub const MAX_PERMISSIONS: usize = 128;
pub const MAX_CHANNELS: usize = 128;
/// 100 Mbit/s per allocation and direction.
pub const MAX_BPS: u64 = 12_500_000;
/// 0: unlimited.
pub const BPS_CAPACITY: u64 = 0;
pub const NEW_PEER_RATE: u32 = 20;
pub const UNAUTHENTICATED_RATE: u32 = 50;
pub const DRAIN_TIMEOUT: u64 = 30;
pub const LOG_LEVEL: &str = "info";
pub const MAX_TCP_CONNECTIONS: usize = 10_000;
pub const MAX_TCP_CONNECTIONS_PER_IP: u32 = 256;
pub const TCP_HANDSHAKE_TIMEOUT: u64 = 10;
pub const TCP_IDLE_TIMEOUT: u64 = 60;
pub const TCP_SEND_QUEUE: usize = 65_536;
/// `credential-ttl`: a day (draft-uberti-behave-turn-rest suggests one; with
/// `strict-credential-expiry` a call cannot outlive its credential).
pub const CREDENTIAL_TTL: u64 = 86_400;
/// SO_RCVBUF / SO_SNDBUF of listener sockets when `socket-*-buffer-size` is not set:
/// every client of a shard shares one listener (the kernel caps it at rmem_max/wmem_max).
pub const LISTENER_BUFFER: usize = 4 << 20;
