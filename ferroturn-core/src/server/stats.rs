//! Counters of what one shard's core did, refused and dropped, for metrics. Plain
//! integers bumped on the paths that decide (no atomics on the packet path); the I/O
//! layer copies them out now and then and adds the shards together. Every label set is
//! fixed and small: error codes, [`AuthFailure`] reasons, transport and direction.

use super::allocation::Transport;
use crate::auth::AuthFailure;

/// Error codes the core sends (RFC 8489 section 14.8, RFC 8656 section 19, RFC 6062
/// section 6.3, RFC 8016 section 3.4).
pub const ERROR_CODES: [u16; 16] = [
    300, 400, 401, 403, 405, 420, 437, 438, 440, 441, 442, 443, 446, 447, 486, 508,
];

/// Packets and bytes relayed in one direction over one client transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
}

impl Traffic {
    /// One packet of `bytes`.
    #[inline]
    pub fn count(&mut self, bytes: u64) {
        self.packets += 1;
        self.bytes += bytes;
    }

    /// Adds `other`'s packets and bytes to these.
    pub fn add(&mut self, other: Traffic) {
        self.packets += other.packets;
        self.bytes += other.bytes;
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub allocations_created: u64,
    /// Deleted when their lifetime ran out.
    pub allocations_expired: u64,
    /// Deleted by the client (Refresh 0) or because the connection closed.
    pub allocations_deleted: u64,
    /// Relayed datagrams dropped by `max-bps` or `bps-capacity`.
    pub bandwidth_dropped: u64,
    /// Requests refused (508) by `new-peer-rate`.
    pub peer_rate_refused: u64,
    /// Peer addresses refused by the peer policy: requests answered 403 and datagrams
    /// dropped on the data path.
    pub policy_denied: u64,
    /// Answers to unauthenticated requests not sent (`unauthenticated-rate` and
    /// `unauthenticated-total-rate`), and of those the ones the server-wide budget
    /// refused.
    pub rate_limited: u64,
    pub rate_limited_total: u64,
    /// Answers to unauthenticated requests paid for by their source's earned credit.
    pub unauthenticated_credited: u64,
    /// RFC 8656 section 18.10: ports reserved (EVEN-PORT with R), and allocations made
    /// with a RESERVATION-TOKEN.
    pub reservations_issued: u64,
    pub reservations_claimed: u64,
    /// RFC 6062 TCP peer connections: Connects that connected and that failed or timed
    /// out (447), peer connections admitted and closed at once (no permission, policy,
    /// duplicate or cap), connections bound by a ConnectionBind and closed for want of
    /// one within 30 seconds.
    pub tcp_connected: u64,
    pub tcp_connect_failed: u64,
    pub tcp_accepted: u64,
    pub tcp_refused: u64,
    pub tcp_bound: u64,
    pub tcp_unbound_expired: u64,
    /// Bytes relayed over TCP peer connections: client to peer, peer to client.
    pub tcp_relayed: [u64; 2],
    /// RFC 8016: MOBILITY-TICKETs issued, allocations moved to a new 5-tuple (counted by
    /// the shard they landed on), and of those the ones that came from another shard.
    pub tickets_issued: u64,
    pub allocations_moved: u64,
    pub allocations_moved_across_shards: u64,
    /// Error responses sent, indexed like [`ERROR_CODES`].
    pub errors: [u64; ERROR_CODES.len()],
    /// Failed authentications (401, and 438 for a stale nonce), indexed like
    /// [`AuthFailure::ALL`].
    pub auth_failures: [u64; AuthFailure::ALL.len()],
    /// Relayed traffic: `[transport][direction]`, transport 0 UDP, 1 TCP/TLS and 2 DTLS,
    /// direction 0 client to peer and 1 peer to client.
    pub relayed: [[Traffic; 2]; 3],
}

impl Stats {
    pub(super) fn error(&mut self, code: u16) {
        if code == 403 {
            self.policy_denied += 1;
        }
        if let Some(i) = ERROR_CODES.iter().position(|c| *c == code) {
            self.errors[i] += 1;
        }
    }

    pub(super) fn auth_failure(&mut self, reason: AuthFailure) {
        self.auth_failures[reason.index()] += 1;
    }

    /// Failed authentications for `reason`.
    pub fn auth_failures_with(&self, reason: AuthFailure) -> u64 {
        self.auth_failures[reason.index()]
    }

    #[inline]
    pub(super) fn relayed(&mut self, transport: Transport, up: bool, bytes: usize) {
        self.relayed[transport_index(transport)][usize::from(!up)].count(bytes as u64);
    }

    /// Error responses sent with `code`.
    pub fn errors_with(&self, code: u16) -> u64 {
        ERROR_CODES
            .iter()
            .position(|c| *c == code)
            .map_or(0, |i| self.errors[i])
    }

    /// Adds another shard's counters to these.
    pub fn add(&mut self, o: &Stats) {
        self.allocations_created += o.allocations_created;
        self.allocations_expired += o.allocations_expired;
        self.allocations_deleted += o.allocations_deleted;
        self.bandwidth_dropped += o.bandwidth_dropped;
        self.peer_rate_refused += o.peer_rate_refused;
        self.policy_denied += o.policy_denied;
        self.rate_limited += o.rate_limited;
        self.rate_limited_total += o.rate_limited_total;
        self.unauthenticated_credited += o.unauthenticated_credited;
        self.reservations_issued += o.reservations_issued;
        self.reservations_claimed += o.reservations_claimed;
        self.tcp_connected += o.tcp_connected;
        self.tcp_connect_failed += o.tcp_connect_failed;
        self.tcp_accepted += o.tcp_accepted;
        self.tcp_refused += o.tcp_refused;
        self.tcp_bound += o.tcp_bound;
        self.tcp_unbound_expired += o.tcp_unbound_expired;
        for (a, b) in self.tcp_relayed.iter_mut().zip(o.tcp_relayed) {
            *a += b;
        }
        self.tickets_issued += o.tickets_issued;
        self.allocations_moved += o.allocations_moved;
        self.allocations_moved_across_shards += o.allocations_moved_across_shards;
        for (a, b) in self.errors.iter_mut().zip(o.errors) {
            *a += b;
        }
        for (a, b) in self.auth_failures.iter_mut().zip(o.auth_failures) {
            *a += b;
        }
        for (ta, tb) in self.relayed.iter_mut().zip(o.relayed) {
            for (a, b) in ta.iter_mut().zip(tb) {
                a.add(b);
            }
        }
    }
}

/// The index of a client transport in [`Stats::relayed`] and
/// [`Gauges::allocations_by_transport`]: 0 UDP, 1 TCP (and TLS), 2 DTLS.
#[inline]
pub fn transport_index(transport: Transport) -> usize {
    match transport {
        Transport::Udp => 0,
        Transport::Tcp => 1,
        Transport::Dtls => 2,
    }
}

/// What exists now in one shard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gauges {
    pub allocations: u64,
    /// The same allocations by client transport, indexed by [`transport_index`].
    pub allocations_by_transport: [u64; 3],
    pub permissions: u64,
    pub channels: u64,
    /// RFC 6062 TCP peer connections connecting or waiting for their ConnectionBind,
    /// and bound to a data connection.
    pub tcp_pending: u64,
    pub tcp_bound: u64,
    /// Armed expiry timers (one per live object; a leak would show here first).
    pub deadlines: u64,
}

impl Gauges {
    pub fn add(&mut self, o: &Gauges) {
        self.allocations += o.allocations;
        for (a, b) in self
            .allocations_by_transport
            .iter_mut()
            .zip(o.allocations_by_transport)
        {
            *a += b;
        }
        self.permissions += o.permissions;
        self.channels += o.channels;
        self.tcp_pending += o.tcp_pending;
        self.tcp_bound += o.tcp_bound;
        self.deadlines += o.deadlines;
    }
}
