//! `user-quota` across a fleet: each allocation holds a lease in the fleet's shared store,
//! taken before its relay is bound and given back when it ends.
//!
//! The core never waits on the store: an Allocate whose local quotas allow it asks with
//! [`Event::AcquireLease`] and stays pending (retransmissions are dropped, as while a
//! relay socket is being bound); the driver's answer, [`Server::handle_lease`], either
//! lets the bind go ahead or ends the Allocate with 486. Whatever ends an allocation
//! that holds a lease says so with [`Event::ReleaseLease`]; the driver renews the leases
//! it holds, so a node that dies loses them within the lease period.

use super::allocation::{AllocId, Allocation};
use super::error::RequestError;
use super::{Event, Server};
use rand::RngExt;
use std::time::Instant;

/// The driver's answer to [`Event::AcquireLease`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseAnswer {
    Granted,
    /// The user holds `user-quota` leases across the fleet already: 486.
    QuotaReached,
    /// The store did not answer and `shared-state-failure` is closed: 508.
    Unavailable,
}

impl Server {
    /// The allocation `id` is admitted locally: with fleet quotas it asks for a lease
    /// first, else its first relay is bound at once (for a TCP allocation: its listening
    /// socket is made only once it holds its lease).
    pub(super) fn lease_or_bind(&mut self, id: AllocId) {
        let fleet = self.cfg.fleet_quota && self.cfg.user_quota > 0;
        let lease: u64 = if fleet {
            self.rng.random::<u64>() | 1
        } else {
            0
        };
        let quota = self.cfg.user_quota;
        let Some(a) = self.table.get_mut(id) else {
            return;
        };
        if !fleet {
            let local = a.relays.first.local;
            self.push_bind(id, local);
            return;
        }
        a.lease = Some(lease);
        if let Some(p) = a.pending.as_mut() {
            p.waiting_lease = true;
        }
        let user = a.user.clone();
        self.push_event(Event::AcquireLease {
            relay: id,
            lease,
            user,
            quota,
        });
    }

    /// The driver's answer to [`Event::AcquireLease`]: granted, the relay is bound (or
    /// listens, for a TCP allocation);
    /// otherwise the Allocate gets 486 (the user's quota is reached across the fleet)
    /// or 508 (the store cannot say). An answer for an allocation that ended meanwhile
    /// gives a granted lease back.
    pub fn handle_lease(&mut self, now: Instant, relay: AllocId, lease: u64, answer: LeaseAnswer) {
        let granted = answer == LeaseAnswer::Granted;
        let waiting = self.table.get(relay).is_some_and(|a| {
            a.lease == Some(lease) && a.pending.as_ref().is_some_and(|p| p.waiting_lease)
        });
        if !waiting {
            if granted {
                self.push_event(Event::ReleaseLease { lease });
            }
            return;
        }
        let Some(a) = self.table.get_mut(relay) else {
            return;
        };
        if !granted {
            a.lease = None;
            let (relays, pending) = (a.relays, a.pending.take());
            // No socket was bound yet: the ports go back as they were taken.
            for r in relays.iter() {
                self.pool(r.local.ip()).release(r.local.port());
            }
            if let Some(pending) = pending {
                if pending.reserve {
                    self.pool(relays.first.local.ip())
                        .release(relays.first.local.port().wrapping_add(1));
                }
                let error = match answer {
                    LeaseAnswer::QuotaReached => RequestError::AllocationQuotaReached,
                    _ => RequestError::InsufficientCapacity,
                };
                self.fail_allocation(now, relay, pending, error);
            }
            return;
        }
        if let Some(p) = a.pending.as_mut() {
            p.waiting_lease = false;
        }
        let local = a.relays.first.local;
        self.push_bind(relay, local);
    }

    /// `a` ended (or never got its relay): its lease, if it holds one, goes back.
    pub(super) fn release_lease(&mut self, a: &Allocation) {
        if let Some(lease) = a.lease {
            self.push_event(Event::ReleaseLease { lease });
        }
    }
}
