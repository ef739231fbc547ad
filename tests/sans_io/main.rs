//! The sans-IO core without sockets: the RFC 5769 test vectors through its codec, and
//! its `Server` in virtual time through the shared core harness (`tests/common/
//! core_harness.rs`), which plays the I/O layer: it answers every `BindRelay` (and the
//! TCP relays' `ListenRelay` and `ConnectPeer`), collects transmits and records closed
//! relays and peer connections. No sockets, no sleeping, no runtime. Each
//! virtual-time test is named for what it proves and cites the section of RFC 8656
//! (TURN), RFC 8489 (STUN) or RFC 6062 (TCP allocations) it checks; the modules follow
//! the RFCs' sections.

#[path = "../common/core_harness.rs"]
mod core_harness;
#[path = "../common/dtls_wire.rs"]
mod dtls_wire;

mod allocate;
mod channels;
mod dtls;
mod dual;
mod errors;
mod external_ip;
mod lease;
mod limits;
mod mobility;
mod nat;
mod offload;
mod permissions;
mod pipeline;
mod reservation;
mod rest;
mod rfc5769;
mod tcp_relay;
mod tcp_relay_extensions;
mod usage;

/// What every virtual-time test module uses: the harness, its wire helpers, and the
/// protocol's names.
mod prelude {
    pub use crate::core_harness::wire::{
        TCP, UDP, UNKNOWN_ATTR, addr, attr_types, build, channel_data, connection_attempt,
        connection_id_of, data_indication, error, has_fingerprint, has_integrity, header,
        patch_attr, push_attr, send_indication, success, verifies,
    };
    pub use crate::core_harness::{Client, Harness, REALM, UNIX0, alice, to_client, udp};
    pub use ferroturn::client::codec::RequestAttr;
    pub use ferroturn_core::proto::codec::Family;
    pub use ferroturn_core::proto::integrity;
    pub use ferroturn_core::proto::wire::{Class, attr, method};
    pub use ferroturn_core::server::Path;
    pub use std::net::{IpAddr, SocketAddr};

    pub const CHANNEL: u16 = 0x4000;
    pub const DUAL_STACK: &str = "relay-ip = [\"127.0.0.1\", \"::1\"]";
    pub const PEER: &str = "198.51.100.1:5000";
}
