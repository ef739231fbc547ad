//! Usage records: when a complete allocation ends, the core says once what it relayed,
//! for whom and why it ended ([`Event::Ended`]), for billing and abuse handling. The
//! counters behind it are bumped on the data path itself (`relay.rs`, and
//! `handle_tcp_relayed` for TCP allocations): two additions per relayed packet, no
//! allocation. The I/O layer adds what the kernel fast path relayed (the core never
//! sees those packets) and writes the record out.
//!
//! A move to a new 5-tuple (RFC 8016) is not an end: the allocation and its counters
//! go on, on whichever shard it lands.
//!
//! [`Event::Ended`]: super::Event::Ended

use super::Server;
use super::allocation::{AllocId, Allocation, FiveTuple, Relays};
use super::stats::Traffic;
use std::time::{Duration, Instant};

/// Why an allocation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Deletion {
    /// Its lifetime ran out.
    Expired,
    /// The client sent a Refresh with LIFETIME 0.
    ByClient,
    /// Its TCP, TLS or DTLS connection closed.
    ConnectionClosed,
    /// An operator deleted it (admin API, `Control::delete_sessions`).
    ByOperator,
    /// Its user was revoked (the admin API's revocations, the fleet's revocation list).
    Revoked,
    /// The server stopped (after a drain, or without one) while it was still open.
    Shutdown,
}

impl Deletion {
    /// Every reason, in the order of [`Deletion::name`]'s list.
    pub const ALL: [Deletion; 6] = [
        Self::Expired,
        Self::ByClient,
        Self::ConnectionClosed,
        Self::ByOperator,
        Self::Revoked,
        Self::Shutdown,
    ];

    /// The phrase logged when an allocation ends this way.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::ByClient => "deleted by client",
            Self::ConnectionClosed => "deleted: connection closed",
            Self::ByOperator => "deleted by an operator",
            Self::Revoked => "deleted: user revoked",
            Self::Shutdown => "ended: server stopping",
        }
    }

    /// The reason as usage records and metric labels name it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::ByClient => "client",
            Self::ConnectionClosed => "connection_closed",
            Self::ByOperator => "operator",
            Self::Revoked => "revoked",
            Self::Shutdown => "shutdown",
        }
    }
}

/// What one allocation did, from its Allocate to its end, as the core counted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Usage {
    /// The allocation (its relay sockets in the driver, for the kernel's counters).
    pub id: AllocId,
    /// The quota owner (the user part of a REST username, or the static user).
    pub user: String,
    /// The USERNAME it authenticated with.
    pub username: String,
    pub realm: String,
    /// The client's 5-tuple when it ended.
    pub five_tuple: FiveTuple,
    /// Its relayed addresses (two for a dual allocation), as clients were told them.
    pub relays: Relays,
    /// RFC 6062: a TCP allocation (its packets are the reads of its connections).
    pub tcp: bool,
    /// Unix seconds when the allocation was granted (one never granted: when its
    /// Allocate arrived).
    pub start_unix: u64,
    /// From the start to the end: for an expiry, to the moment its lifetime ran out.
    pub duration: Duration,
    /// Packets and payload bytes relayed in user space: client to peer, peer to client.
    pub traffic: [Traffic; 2],
    pub reason: Deletion,
}

impl Server {
    /// The usage record of `a`, taken out of the table, ending at `now` for `why`.
    pub(super) fn usage(&self, now: Instant, a: Allocation, why: Deletion) -> Usage {
        // An expiry ends the allocation at its deadline, however late the driver's
        // timer fired.
        let end = match why {
            Deletion::Expired => a.expires.min(now),
            _ => now,
        };
        Usage {
            id: a.id,
            user: a.user,
            username: a.username,
            realm: self.cfg.credentials.realm().to_owned(),
            five_tuple: a.five_tuple,
            relays: a.relays,
            tcp: a.tcp,
            start_unix: self.unix(a.created),
            duration: end.saturating_duration_since(a.created),
            traffic: a.traffic,
            reason: why,
        }
    }
}
