//! The fast-path benchmark's setup (`benches/fast_path.rs` includes this file): the
//! shared core harness's [`Harness::relay_ready`], handed over as the bare `Server` and
//! what the benchmark feeds it.

#[path = "../common/core_harness.rs"]
mod core_harness;

pub use core_harness::wire::addr;
pub use core_harness::{CHANNEL_PEER, PERMITTED_PEER, RELAY_CHANNEL as CHANNEL};

use core_harness::Harness;
use ferroturn_core::server::{AllocId, FiveTuple, Server};
use std::time::Instant;

pub struct Ready {
    pub server: Server,
    pub now: Instant,
    pub tuple: FiveTuple,
    pub relay: AllocId,
}

/// A server with one allocation whose relay path is ready: a channel [`CHANNEL`] bound
/// to [`CHANNEL_PEER`] and a permission for [`PERMITTED_PEER`]'s IP.
pub fn relay_setup() -> Ready {
    let mut h = Harness::new("");
    let (client, relay) = h.relay_ready();
    Ready {
        server: h.server,
        now: h.now,
        tuple: client.tuple,
        relay,
    }
}
