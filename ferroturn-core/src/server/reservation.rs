//! RFC 8656 sections 7.2, 14.6 and 14.9: EVEN-PORT with the R bit reserves the odd port
//! above the allocation's even one, and a later Allocate carrying the RESERVATION-TOKEN
//! it was given gets that port (RTP and RTCP on adjacent ports, as SIP clients ask).
//!
//! The reservation lives in [`SharedState`](super::SharedState), so the second Allocate
//! may reach any shard (it comes from another client port, which SO_REUSEPORT may send
//! elsewhere); the port stays marked in the pool of the shard that reserved it (its
//! owner) until the reservation ends, 30 seconds on. A token is 64 random bits from the
//! shard's generator, handed out once.

use super::deadlines::Timer;
use super::error::RequestError;
use super::shared::Reservation;
use super::{RESERVATION_LIFETIME, Server};
use rand::RngExt;
use std::net::SocketAddr;
use std::time::Instant;

impl Server {
    /// The reservation under `token`, for an Allocate that carries it: 508 if it is
    /// unknown, expired or used already (section 7.2 step 5).
    pub(super) fn claim_reservation(
        &mut self,
        token: &[u8; 8],
    ) -> Result<Reservation, RequestError> {
        let r = self
            .shared
            .claim_reservation(token, self.tag)
            .ok_or(RequestError::InsufficientCapacity)?;
        self.stats.reservations_claimed += 1;
        Ok(r)
    }

    /// Reserves the port above `relay_local` (already taken from the pool with it) for
    /// 30 seconds; the token to hand out, or `None` (the port given back) if the shared
    /// table is full.
    pub(super) fn issue_reservation(
        &mut self,
        now: Instant,
        relay_local: SocketAddr,
        relayed: SocketAddr,
    ) -> Option<[u8; 8]> {
        let next = |a: SocketAddr| SocketAddr::new(a.ip(), a.port().wrapping_add(1));
        let reservation = Reservation {
            local: next(relay_local),
            advertised: next(relayed),
            owner: self.tag,
        };
        let token: [u8; 8] = self.rng.random();
        if !self.shared.reserve(token, reservation) {
            self.pool(relay_local.ip())
                .release(reservation.local.port());
            return None;
        }
        self.deadlines
            .rearm(None, now + RESERVATION_LIFETIME, Timer::Reservation(token));
        self.stats.reservations_issued += 1;
        Some(token)
    }

    /// The allocation that reserved the port under `token` ended: an unclaimed
    /// reservation ends with it, so reservations never outnumber live allocations (and
    /// quotas bound both). A claimed one is left to its timer.
    pub(super) fn cancel_reservation(&mut self, token: &[u8; 8]) {
        if let Some(reservation) = self.shared.cancel_reservation(token) {
            self.pool(reservation.local.ip())
                .release(reservation.local.port());
        }
    }

    /// The 30 seconds are up: an unclaimed port goes back to the pool. One this shard's
    /// own allocation claimed stays with it (its deletion gives it back); one another
    /// shard claimed goes back too, since this pool cannot see when that allocation ends:
    /// should it still be bound when the pool hands the port out again, the bind fails
    /// and another port is tried.
    pub(super) fn end_reservation(&mut self, token: &[u8; 8]) {
        let Some((reservation, claimed_by)) = self.shared.end_reservation(token) else {
            return;
        };
        if claimed_by != Some(self.tag) {
            self.pool(reservation.local.ip())
                .release(reservation.local.port());
        }
    }
}
