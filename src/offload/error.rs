//! What can go wrong starting the fast path or changing its maps.

use std::io;
use std::net::IpAddr;

/// Why kernel offload could not start, or why a channel stays in user space.
#[derive(Debug, thiserror::Error)]
pub enum OffloadError {
    /// This binary carries no eBPF program; the reason comes from build.rs, e.g.
    /// "built without clang".
    #[error("{0}")]
    NotBuilt(&'static str),
    /// The kernel refused the program or its maps (no CAP_BPF, an old kernel, the
    /// verifier).
    #[error("loading the eBPF program: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    /// The object file lacks a map or program the loader expects (a build mismatch).
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    #[error("preparing the {map} map: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("loading the classifier: {0}")]
    Program(#[source] aya::programs::ProgramError),
    #[error("listing network interfaces: {0}")]
    Interfaces(#[source] io::Error),
    /// The kernel version could not be read (the attach method depends on it).
    #[error("reading the kernel version: {0}")]
    KernelVersion(String),
    #[error("attaching to {interface}: {source}")]
    Attach {
        interface: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    /// A map update or delete failed.
    #[error("{op} in the {map} map: {source}")]
    Update {
        op: &'static str,
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    /// The map holds `max_entries` already ([`super::Limits`]).
    #[error("the {0} map is full")]
    Full(&'static str),
    /// The client and server addresses are not of the relay's and peer's family: such a
    /// channel is translated in user space.
    #[error("the client side and the relay side are of different address families")]
    FamilyMismatch,
    /// Channel numbers are 0x4000 through 0x7FFF (RFC 5766's range, which the server
    /// accepts; RFC 8656 section 12 narrowed it to 0x4FFF).
    #[error("channel number {0:#06x} is not in 0x4000..=0x7FFF")]
    InvalidChannel(u16),
    /// Broadcast, multicast or unspecified: never relayed by the kernel.
    #[error("{0} is not a unicast address")]
    NotUnicast(IpAddr),
    /// A destination on another host needs `bpf_fib_lookup`, which refuses to work
    /// while forwarding is off on lo (the lookup's input interface).
    #[error(
        "net.{family}.conf.lo.forwarding is 0: datagrams to other hosts stay in user space \
         (setting it to 1 forwards nothing by itself: no datagram for another host arrives on lo)"
    )]
    ForwardingDisabled { family: &'static str },
}

impl OffloadError {
    /// A map update's error, with ENOSPC/E2BIG (`max_entries` reached) told apart.
    pub(super) fn update(op: &'static str, map: &'static str, source: aya::maps::MapError) -> Self {
        if let aya::maps::MapError::SyscallError(e) = &source {
            if matches!(e.io_error.raw_os_error(), Some(libc::E2BIG | libc::ENOSPC)) {
                return Self::Full(map);
            }
        }
        Self::Update { op, map, source }
    }
}
