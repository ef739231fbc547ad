//! State that shards, and later several nodes, must agree on: allocations per user and in
//! total, and which addresses are live relayed addresses. It sits behind a trait so a
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
}
