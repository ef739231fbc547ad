//! State that shards, and later several nodes, must agree on: allocations per user and in
//! total, which addresses are live relayed addresses, and reserved relay ports (RFC 8656
//! RESERVATION-TOKEN: the second Allocate may reach another shard). It sits behind a trait so a
//! distributed store can implement it; it is never touched per relayed packet except for
//! the relayed-address lookup on the server's own addresses. The single-node
//! implementation lives with the server (`ferroturn::state::LocalState`).

use std::net::SocketAddr;

/// Why an allocation was refused by a quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuotaError {
    /// The user has `user-quota` allocations already: 486.
    User,
    /// The server has `total-quota` allocations already: 508.
    Total,
}

/// Quotas and live relayed addresses as every shard (and, later, every node) sees them.
pub trait SharedState: Send + Sync + 'static {
    /// Counts one more allocation for `user` if both quotas allow it (0 = unlimited).
    fn acquire_allocation(
        &self,
        user: &str,
        user_quota: u32,
        total_quota: u32,
    ) -> Result<(), QuotaError>;
    /// Gives back what [`SharedState::acquire_allocation`] took.
    fn release_allocation(&self, user: &str);
    fn insert_relay(&self, addr: SocketAddr);
    fn remove_relay(&self, addr: SocketAddr);
    /// Whether `addr` is the relayed address of a live allocation.
    fn is_relay(&self, addr: SocketAddr) -> bool;
    /// RFC 8656 section 18.10: records a port reserved under `token` (EVEN-PORT with the R
    /// bit) so that any shard can hand it out; false if the table is full (then there is
    /// no reservation).
    fn reserve(&self, token: [u8; 8], reservation: Reservation) -> bool;
    /// Hands the reservation under `token` out, once, to the shard tagged `by`.
    fn claim_reservation(&self, token: &[u8; 8], by: u64) -> Option<Reservation>;
    /// Forgets the reservation under `token` (its owner calls this when it expires);
    /// returns it and the tag of the shard that claimed it, if one did.
    fn end_reservation(&self, token: &[u8; 8]) -> Option<(Reservation, Option<u64>)>;
    /// Forgets the reservation under `token` if nobody claimed it; returns it then.
    fn cancel_reservation(&self, token: &[u8; 8]) -> Option<Reservation>;
}

/// A relay port held for a later Allocate with RESERVATION-TOKEN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// Where the relay socket binds, and what the client is told.
    pub local: SocketAddr,
    pub advertised: SocketAddr,
    /// The tag of the shard whose port pool holds the port.
    pub owner: u64,
}
