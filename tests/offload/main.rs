//! The kernel fast path (`src/offload`) on real packets, in network namespaces made for
//! each test (the host's own interfaces are never touched):
//!
//! - `loopback`: one namespace, everything on lo (local delivery): both directions over
//!   IPv4 and IPv6, removal, counters, channel numbers up to 0x7FFF, padded ChannelData
//!   and unknown channels left to user space, `max-bps` and `bps-capacity` drops,
//!   checksums checked by the stack;
//! - `veth`: client, server and peer namespaces joined by veth pairs, forwarding off in
//!   the server's: routed delivery through a real route and neighbour, with every
//!   checksum verified where the datagrams arrive.
//!
//! - `server`: the whole server with `kernel-offload = "on"` and our TURN client, on lo
//!   of a namespace and routed between three, every way a channel ends, and the caps.
//!
//! They need root, BPF and namespaces; where one is missing each test says so in one
//! line and returns.

#[path = "../common/mod.rs"]
mod common;

mod loopback;
mod measure;
mod netns;
mod packet;
mod server;
mod veth;

use ferroturn::config::KernelOffload;
use ferroturn::offload::{Limits, Offload, OffloadError};
use netns::Unavailable;
use std::net::IpAddr;

/// Why these tests cannot run on this machine, if they cannot.
pub fn unavailable() -> Option<Unavailable> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces, BPF)".into());
    }
    if !common::bpf_syscall_works() {
        return Some("the bpf system call is not permitted here".into());
    }
    None
}

/// Whether the server can run with `kernel-offload = "on"` here: root, BPF, and the
/// program in this build (a build without it skips only where clang is missing too;
/// elsewhere the server's start fails the test).
pub fn program_available() -> Result<(), Unavailable> {
    match common::kernel_offload_unavailable() {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

/// Starts the fast path in the calling thread's namespace. A binary built without the
/// program only skips where clang is missing too; anywhere else that is a failure (the
/// build should have had it).
pub fn start(addrs: &[IpAddr], limits: Limits) -> Result<Offload, Unavailable> {
    match Offload::start(KernelOffload::On, addrs, limits) {
        Ok(Some(offload)) => Ok(offload),
        Ok(None) => panic!("KernelOffload::On returned no offload and no error"),
        Err(OffloadError::NotBuilt(why)) if !common::clang_installed() => Err(why.into()),
        Err(e) => panic!("starting kernel offload: {e}"),
    }
}

/// Runs a test body unless the machine cannot; then prints why, in one line.
#[macro_export]
macro_rules! skip_unless_available {
    ($result:expr) => {
        match $result {
            Ok(v) => v,
            Err(why) => {
                println!("kernel offload test skipped: {why}");
                return;
            }
        }
    };
}
