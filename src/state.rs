//! State that every shard of this process shares, behind the core's [`SharedState`]
//! trait: allocations per user and in total, and the live relayed addresses. A fleet
//! puts the same trait on a distributed store.

use dashmap::{DashMap, DashSet};
use ferroturn_core::server::{QuotaError, Reservation, SharedState};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};

/// Reservations held at once: each holds a relay port for 30 s, so the port range bounds
/// them long before this does.
const MAX_RESERVATIONS: usize = 65_536;

/// The single-node implementation.
#[derive(Debug, Default)]
pub struct LocalState {
    per_user: DashMap<String, u32>,
    total: AtomicU32,
    relays: DashSet<SocketAddr>,
    /// Reserved ports by token, and the shard that claimed each (if one did).
    reservations: DashMap<[u8; 8], (Reservation, Option<u64>)>,
}

impl SharedState for LocalState {
    fn acquire_allocation(
        &self,
        user: &str,
        user_quota: u32,
        total_quota: u32,
    ) -> Result<(), QuotaError> {
        let total = self.total.fetch_add(1, Ordering::AcqRel);
        if total_quota != 0 && total >= total_quota {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(QuotaError::Total);
        }
        let mut count = self.per_user.entry(user.to_owned()).or_insert(0);
        if user_quota != 0 && *count >= user_quota {
            drop(count);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(QuotaError::User);
        }
        *count += 1;
        Ok(())
    }

    fn release_allocation(&self, user: &str) {
        self.total.fetch_sub(1, Ordering::AcqRel);
        self.per_user.remove_if_mut(user, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }

    fn insert_relay(&self, addr: SocketAddr) {
        self.relays.insert(addr);
    }

    fn remove_relay(&self, addr: SocketAddr) {
        self.relays.remove(&addr);
    }

    fn is_relay(&self, addr: SocketAddr) -> bool {
        self.relays.contains(&addr)
    }

    fn reserve(&self, token: [u8; 8], reservation: Reservation) -> bool {
        if self.reservations.len() >= MAX_RESERVATIONS {
            return false;
        }
        match self.reservations.entry(token) {
            dashmap::Entry::Occupied(_) => false,
            dashmap::Entry::Vacant(v) => {
                v.insert((reservation, None));
                true
            }
        }
    }

    fn claim_reservation(&self, token: &[u8; 8], by: u64) -> Option<Reservation> {
        let mut entry = self.reservations.get_mut(token)?;
        let (reservation, claimed) = entry.value_mut();
        if claimed.is_some() {
            return None;
        }
        *claimed = Some(by);
        Some(*reservation)
    }

    fn end_reservation(&self, token: &[u8; 8]) -> Option<(Reservation, Option<u64>)> {
        self.reservations.remove(token).map(|(_, v)| v)
    }

    fn cancel_reservation(&self, token: &[u8; 8]) -> Option<Reservation> {
        self.reservations
            .remove_if(token, |_, (_, claimed)| claimed.is_none())
            .map(|(_, (reservation, _))| reservation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_count_and_release() {
        let s = LocalState::default();
        assert_eq!(s.acquire_allocation("a", 2, 3), Ok(()));
        assert_eq!(s.acquire_allocation("a", 2, 3), Ok(()));
        assert_eq!(s.acquire_allocation("a", 2, 3), Err(QuotaError::User));
        assert_eq!(s.acquire_allocation("b", 2, 3), Ok(()));
        assert_eq!(s.acquire_allocation("c", 2, 3), Err(QuotaError::Total));
        s.release_allocation("a");
        s.release_allocation("a");
        assert!(s.per_user.get("a").is_none(), "empty entries are removed");
        assert_eq!(s.acquire_allocation("c", 2, 3), Ok(()));
    }
}
