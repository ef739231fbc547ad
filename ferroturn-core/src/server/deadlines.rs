//! One ordered deadline queue for every expiry in a shard: allocations, permissions,
//! channel bindings and channel cool-downs, reservations, TCP connects and binds. Re-arming removes the old entry, so the
//! queue holds at most one entry per live object.

use super::allocation::AllocId;
use super::tcp_relay::ConnectionId;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Instant;

/// What expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    Allocation(AllocId),
    Permission(AllocId, IpAddr),
    Channel(AllocId, u16),
    /// RFC 8656 section 18.10: a reserved port's 30 seconds are up.
    Reservation([u8; 8]),
    /// RFC 6062 sections 5.2 and 5.3: a TCP peer connection's connect or bind time is
    /// up.
    TcpConnection(ConnectionId),
}

#[derive(Debug, Default)]
pub struct Deadlines {
    queue: BTreeSet<(Instant, Timer)>,
}

impl Deadlines {
    /// Arms `timer` at `at`, replacing the entry at `old` if there was one.
    pub fn rearm(&mut self, old: Option<Instant>, at: Instant, timer: Timer) {
        if let Some(old) = old {
            self.queue.remove(&(old, timer));
        }
        self.queue.insert((at, timer));
    }

    pub fn cancel(&mut self, at: Instant, timer: Timer) {
        self.queue.remove(&(at, timer));
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.queue.first().map(|(at, _)| *at)
    }

    /// Removes and returns one timer due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        match self.queue.first() {
            Some((at, _)) if *at <= now => self.queue.pop_first().map(|(_, t)| t),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }
}
