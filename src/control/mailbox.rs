//! Each shard's mailbox: operator commands and other shards' handoffs in, counters and
//! gauges out. The shard checks it every turn (a flag keeps the check to one atomic load
//! when empty) and publishes its counters once a second; nothing here is on the packet
//! path.

use ferroturn_core::server::stats::Traffic;
use ferroturn_core::server::{
    Deletion, Gauges, Handoff, ServerConfig, Session, SessionFilter, Stats,
};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;

/// A request to one shard, carried out between packets.
pub enum Command {
    Sessions(Sender<Vec<Session>>),
    /// End the allocations the filter names, for the reason given (an operator's
    /// delete, a revocation).
    Delete(SessionFilter, Deletion, Sender<usize>),
    Reconfigure(Box<ServerConfig>),
    Drain(bool),
    /// `external-ip = "auto"`: the public address learned for the relays of its family.
    ExternalIp(std::net::IpAddr),
    /// From another shard (RFC 8016 mobility): a move to decide or its answer, or an
    /// allocation whose client moved here, with its relay sockets (one per family).
    Handoff(Handoff, Vec<MovedRelay>),
    /// The fleet's answer to a lease ask (`user-quota` across nodes).
    Lease {
        relay: ferroturn_core::server::AllocId,
        lease: u64,
        answer: ferroturn_core::server::LeaseAnswer,
    },
}

/// A relay socket of an allocation that moved to another shard, and what the kernel
/// fast path relayed through it so far (client to peer, peer to client).
pub struct MovedRelay {
    pub socket: std::net::UdpSocket,
    /// Its family: a dual allocation has an IPv4 and an IPv6 relay.
    pub v6: bool,
    pub kernel: [Traffic; 2],
}

/// Wakes a shard's event loop (the I/O layer supplies it).
pub type Wake = Box<dyn Fn() + Send + Sync>;

/// One shard's mailbox.
pub struct ShardLink {
    wake: Wake,
    queue: Mutex<Vec<Command>>,
    pending: AtomicBool,
    /// The core's counters and gauges, published once a second.
    published: Mutex<(Stats, Gauges)>,
}

impl ShardLink {
    /// A mailbox whose sends call `wake`.
    pub fn new(wake: Wake) -> Self {
        Self {
            wake,
            queue: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
            published: Mutex::new(Default::default()),
        }
    }

    /// Queues `command` and wakes the shard.
    pub fn send(&self, command: Command) {
        if let Ok(mut q) = self.queue.lock() {
            q.push(command);
            self.pending.store(true, Ordering::Release);
        }
        self.wake();
    }

    /// Wakes the shard (also to let it see its stop flag).
    pub fn wake(&self) {
        (self.wake)();
    }

    /// The counters and gauges last published.
    pub fn published(&self) -> (Stats, Gauges) {
        self.published
            .lock()
            .map(|p| p.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Replaces the published counters and gauges (the shard, once a second).
    pub fn publish(&self, stats: Stats, gauges: Gauges) {
        if let Ok(mut p) = self.published.lock() {
            *p = (stats, gauges);
        }
    }

    /// The commands waiting, if any (the shard calls this every turn).
    pub fn take(&self) -> Vec<Command> {
        if !self.pending.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        self.queue
            .lock()
            .map(|mut q| std::mem::take(&mut *q))
            .unwrap_or_default()
    }
}
