//! The way between the shards and the fleet's lease task (`user-quota` across nodes).
//!
//! A shard's core asks for a lease with `Event::AcquireLease`; the shard queues it here
//! (bounded: when the queue is full the answer is `shared-state-failure`'s at once) and
//! the fleet answers through the shard's mailbox (`Command::Lease`). The leases granted
//! are kept here, in `active`, which the fleet renews: a shard giving one back removes
//! it at once, so even if the release message is dropped the lease is no longer renewed
//! and expires by itself.

use dashmap::DashMap;
use ferroturn_core::server::{AllocId, LeaseAnswer};
use std::sync::Mutex;
use tokio::sync::mpsc;

/// How many lease operations may wait for the fleet.
const QUEUE: usize = 4096;

/// A lease asked for by shard `shard`'s allocation `relay`.
#[derive(Debug)]
pub struct LeaseAsk {
    pub shard: usize,
    pub relay: AllocId,
    pub lease: u64,
    pub user: String,
    pub quota: u32,
}

/// What the fleet's lease task is asked to do.
#[derive(Debug)]
pub enum LeaseOp {
    Acquire(LeaseAsk),
    /// Give the lease of `user` back.
    Release {
        lease: u64,
        user: String,
    },
}

pub struct Leases {
    tx: mpsc::Sender<LeaseOp>,
    rx: Mutex<Option<mpsc::Receiver<LeaseOp>>>,
    /// Granted leases held by this node's allocations: lease to user.
    pub active: DashMap<u64, String>,
    /// `shared-state-failure = "open"`: what a lease ask gets when the store cannot say.
    pub fail_open: bool,
}

impl Leases {
    pub fn new(fail_open: bool) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
            active: DashMap::new(),
            fail_open,
        }
    }

    /// Queues an ask; false when the queue is full (the caller answers at once).
    pub fn ask(&self, ask: LeaseAsk) -> bool {
        self.tx.try_send(LeaseOp::Acquire(ask)).is_ok()
    }

    /// The allocation holding `lease` ended: it is not renewed from now on, and the
    /// store is told when the queue has room.
    pub fn release(&self, lease: u64) {
        if let Some((_, user)) = self.active.remove(&lease) {
            let _ = self.tx.try_send(LeaseOp::Release { lease, user });
        }
    }

    /// The answer to an ask the store could not answer (`shared-state-failure`): open
    /// grants it (and the lease is written at the next renewal), closed refuses it.
    pub fn unanswered(&self, lease: u64, user: String) -> LeaseAnswer {
        if self.fail_open {
            self.active.insert(lease, user);
            LeaseAnswer::Granted
        } else {
            LeaseAnswer::Unavailable
        }
    }

    /// The receiving end, for the fleet's lease task (once).
    pub fn take_receiver(&self) -> Option<mpsc::Receiver<LeaseOp>> {
        self.rx.lock().ok()?.take()
    }
}
