//! Mobility with TURN (RFC 8016): a client whose address changes (Wi-Fi to cellular)
//! keeps its allocation by sending a Refresh with the MOBILITY-TICKET it was given from
//! its new 5-tuple.
//!
//! An Allocate asks for a ticket with an empty MOBILITY-TICKET (405 with `mobility` off);
//! its success, and every later Refresh success, carries a fresh one
//! ([`crate::auth::ticket`]: it names the owning shard, the allocation, its epoch and an
//! expiry, under a MAC). A Refresh with a ticket from a 5-tuple that has no allocation is
//! a move; the order of section 3.2.2: a ticket that does not open is 400, one whose
//! allocation is gone, moved since or expired is 437, a USERNAME or MESSAGE-INTEGRITY
//! that is not the allocation's user is 441; then the allocation takes the new 5-tuple,
//! its epoch goes up (the old ticket names nothing any more) and the success carries a
//! new ticket. The old 5-tuple reaches nothing from then on.
//!
//! The new 5-tuple may belong to another shard (SO_REUSEPORT picks the shard by the
//! client's address): then the move goes through [`super::handoff`].

use super::allocation::{AllocId, FiveTuple};
use super::deadlines::Timer;
use super::error::RequestError;
use super::offload::offload_channel;
use super::{Deletion, Event, Server};
use crate::auth::credentials::Key;
use crate::auth::{AuthFailure, Ticket};
use crate::proto::Request;
use crate::proto::codec::{self, Family, ResponseAttr};
use crate::proto::integrity;
use crate::proto::scan::Scan;
use crate::proto::wire::method;
use std::time::{Duration, Instant};

/// How the owner's checks of a move ended.
pub(super) enum Verdict {
    /// Answer this (an error, or the success of a deletion).
    Answer(Option<Vec<u8>>),
    /// The allocation moves, with this lifetime.
    Move { id: AllocId, lifetime: u32 },
}

impl Server {
    /// This shard's index among `count` shards (tickets name the owner by it). A single
    /// server is shard 0 of 1.
    pub fn set_shard(&mut self, index: u8, count: u16) {
        self.shard = index;
        self.shards = count.max(1);
    }

    /// RFC 8016 section 3.1.2: whether an Allocate asks for a ticket: 405 with `mobility`
    /// off or for a TCP allocation (`tcp`), 400 for a non-empty MOBILITY-TICKET.
    pub(super) fn mobility_requested(
        &self,
        req: &Request,
        tcp: bool,
    ) -> Result<bool, RequestError> {
        match &req.mobility_ticket {
            None => Ok(false),
            Some(_) if !self.cfg.mobility => Err(RequestError::MobilityForbidden),
            // A TCP allocation (RFC 6062) is never mobile: its peer and data
            // connections are TCP connections of this shard, made by and for the
            // client where it was. Mobility is refused for it as for a server without
            // it (a choice, see ARCHITECTURE.md), so no ticket can ever name one.
            Some(_) if tcp => Err(RequestError::MobilityForbidden),
            Some(t) if !t.is_empty() => Err(RequestError::BadRequest),
            Some(_) => Ok(true),
        }
    }

    /// A fresh ticket for allocation `id`, good until `expires`, if it is mobile and
    /// mobility is on.
    pub(super) fn fresh_ticket(&mut self, id: AllocId, expires: Instant) -> Option<[u8; 32]> {
        let a = self.table.get(id)?;
        if !(a.mobile && self.cfg.mobility) {
            return None;
        }
        let ticket = Ticket {
            shard: self.shard,
            alloc: id,
            epoch: a.epoch,
            expiry: u32::try_from(self.unix(expires)).unwrap_or(u32::MAX),
        };
        self.stats.tickets_issued += 1;
        Some(self.tickets.seal(&ticket))
    }

    /// Section 3.2.2 for a Refresh that is not a move: with mobility off a ticket is a
    /// 405; on the allocation's own 5-tuple (`id`) it must name this allocation as it is
    /// now.
    pub(super) fn check_own_ticket(
        &self,
        now: Instant,
        id: Option<AllocId>,
        req: &Request,
    ) -> Result<(), RequestError> {
        let Some(raw) = &req.mobility_ticket else {
            return Ok(());
        };
        if !self.cfg.mobility {
            return Err(RequestError::MobilityForbidden);
        }
        let Some(id) = id else {
            return Ok(());
        };
        let t = self.tickets.open(raw).ok_or(RequestError::BadRequest)?;
        let current = self.table.get(id).map(|a| a.epoch);
        if t.shard != self.shard
            || t.alloc != id
            || Some(t.epoch) != current
            || self.expired(now, &t)
        {
            return Err(RequestError::AllocationMismatch);
        }
        Ok(())
    }

    fn expired(&self, now: Instant, t: &Ticket) -> bool {
        u64::from(t.expiry) < self.unix(now)
    }

    /// Whether this request is a move: a Refresh with a MOBILITY-TICKET from a 5-tuple
    /// without an allocation, while mobility is on (off, it meets 405 in Refresh).
    pub(super) fn is_move(&self, tuple: &FiveTuple, scan: &Scan, req: &Request) -> bool {
        scan.method == method::REFRESH
            && self.cfg.mobility
            && req.mobility_ticket.is_some()
            && self.table.id_by_tuple(tuple).is_none()
    }

    /// A move as the shard it reached sees it: the stateless checks, then the move here
    /// if this shard owns the allocation, or the request handed to the owner.
    pub(super) fn handle_move(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        buf: &[u8],
        scan: &Scan,
        req: &Request,
    ) {
        if let Err(e) = self.check_nonce(now, &tuple, scan, req) {
            return self.reply_unauthenticated(now, tuple, scan, e);
        }
        let opened = req
            .mobility_ticket
            .as_deref()
            .and_then(|t| self.tickets.open(t));
        // RFC 8016 section 3.2.2: a ticket that is not valid is a 400.
        let Some(t) = opened.filter(|t| u16::from(t.shard) < self.shards) else {
            return self.reply_unauthenticated(now, tuple, scan, RequestError::BadRequest);
        };
        // Section 3.2.2: a ticket naming no allocation (any more) is a 437.
        if self.expired(now, &t) {
            return self.reply_unauthenticated(now, tuple, scan, RequestError::AllocationMismatch);
        }
        if t.shard != self.shard {
            return self.hand_over(now, tuple, buf, scan, t.shard);
        }
        match self.judge_move(now, &tuple, buf, scan, req, &t) {
            Verdict::Answer(bytes) => self.send_to_client(tuple, bytes),
            Verdict::Move { id, lifetime } => self.move_here(now, id, tuple, lifetime, scan),
        }
    }

    /// The owner's checks of a move of allocation `t.alloc` (section 3.2.2), and a
    /// LIFETIME 0 carried out at once.
    pub(super) fn judge_move(
        &mut self,
        now: Instant,
        tuple: &FiveTuple,
        buf: &[u8],
        scan: &Scan,
        req: &Request,
        t: &Ticket,
    ) -> Verdict {
        let (id, key) = match self.verify_owner(now, tuple, buf, scan, req, t) {
            Ok(found) => found,
            Err(e) => return Verdict::Answer(self.unauthenticated_answer(now, tuple, scan, e)),
        };
        let relays = self.table.get(id).map(|a| a.relays);
        let refused = if !scan.unknown().is_empty() {
            // RFC 8489 section 6.3.1, after authentication.
            Some(RequestError::UnknownAttribute)
        } else if req.requested_family.is_some_and(|f| {
            !relays.is_some_and(|r| r.iter().any(|r| r.local.is_ipv4() == (f == Family::V4)))
        }) {
            // RFC 8656 section 8.2.
            Some(RequestError::PeerAddressFamilyMismatch)
        } else {
            None
        };
        if let Some(e) = refused {
            return Verdict::Answer(self.error_response(now, tuple, scan, e, Some(&key)));
        }
        if req.lifetime == Some(0) {
            self.delete_allocation(now, id, Deletion::ByClient);
            let attrs = [ResponseAttr::Lifetime(0)];
            let bytes = codec::encode(
                method::REFRESH,
                true,
                &scan.txn,
                &attrs,
                Some(&key),
                scan.fingerprint,
            );
            return Verdict::Answer(bytes);
        }
        let lifetime = self.granted_lifetime(req.lifetime);
        Verdict::Move { id, lifetime }
    }

    /// RFC 8016 section 3.2.2: the allocation the ticket names, still in the epoch the
    /// ticket was issued in (437), and the request signed by the user that created it
    /// under that allocation's key (441 otherwise).
    fn verify_owner(
        &self,
        now: Instant,
        tuple: &FiveTuple,
        buf: &[u8],
        scan: &Scan,
        req: &Request,
        t: &Ticket,
    ) -> Result<(AllocId, Key), RequestError> {
        let a = self
            .table
            .get(t.alloc)
            .filter(|a| a.pending.is_none() && a.mobile && !a.tcp && a.epoch == t.epoch)
            .ok_or(RequestError::AllocationMismatch)?;
        let mi_at = scan.integrity.ok_or(RequestError::BadRequest)?;
        let same_user = req.username.as_deref() == Some(a.username.as_str())
            && req.realm.as_deref() == Some(self.cfg.credentials.realm());
        if !(same_user && integrity::verify(buf, mi_at, &a.key)) {
            if self.noisy.allow(now) {
                tracing::info!(client = %tuple.client, "mobility refused: not the allocation's user");
            }
            return Err(RequestError::WrongCredentials);
        }
        let unix = self.unix(now);
        if self.cfg.strict_expiry && self.cfg.credentials.is_expired_rest(&a.username, unix) {
            return self
                .reject(now, tuple, AuthFailure::ExpiredRest)
                .map(|auth| (a.id, auth.key));
        }
        Ok((a.id, a.key))
    }

    /// The move within this shard: the allocation takes `tuple`.
    fn move_here(
        &mut self,
        now: Instant,
        id: AllocId,
        tuple: FiveTuple,
        lifetime: u32,
        scan: &Scan,
    ) {
        let Some(old) = self.table.get(id).map(|a| a.five_tuple) else {
            return;
        };
        // The kernel relays by the client's address: the old channels leave it first.
        self.unoffload_channels(id);
        if !self.table.retuple(id, tuple) {
            return;
        }
        let Some(a) = self.table.get_mut(id) else {
            return;
        };
        a.epoch = a.epoch.wrapping_add(1);
        let before = a.expires;
        a.expires = now + Duration::from_secs(u64::from(lifetime));
        let expires = a.expires;
        self.deadlines
            .rearm(Some(before), expires, Timer::Allocation(id));
        self.sync_offload(id, false);
        self.stats.allocations_moved += 1;
        self.log_move(id, old, "moved");
        self.answer_move(now, id, lifetime, scan.txn, scan.fingerprint);
    }

    /// Takes every channel of `id` out of the kernel (it keys them by the client).
    fn unoffload_channels(&mut self, id: AllocId) {
        let max_bps = self.cfg.max_bps;
        let Some(a) = self.table.get_mut(id) else {
            return;
        };
        let (tuple, relays) = (a.five_tuple, a.relays);
        let gone: Vec<Event> = a
            .channels
            .iter_mut()
            .filter(|c| c.offloaded)
            .map(|c| {
                c.offloaded = false;
                Event::Unoffload(offload_channel(id, tuple, &relays, c, max_bps))
            })
            .collect();
        for e in gone {
            self.push_event(e);
        }
    }

    /// The success of a move (section 3.2.2: LIFETIME and a new ticket), kept for
    /// retransmissions and sent to the allocation's new 5-tuple.
    pub(super) fn answer_move(
        &mut self,
        now: Instant,
        id: AllocId,
        lifetime: u32,
        txn: [u8; 12],
        fingerprint: bool,
    ) {
        let Some(expires) = self.table.get(id).map(|a| a.expires) else {
            return;
        };
        let mut attrs = vec![ResponseAttr::Lifetime(lifetime)];
        attrs.extend(
            self.fresh_ticket(id, expires)
                .map(ResponseAttr::MobilityTicket),
        );
        let Some(a) = self.table.get(id) else {
            return;
        };
        let (tuple, key) = (a.five_tuple, a.key);
        let response = codec::encode(method::REFRESH, true, &txn, &attrs, Some(&key), fingerprint);
        if let Some(bytes) = &response {
            self.remember(now, tuple, txn, bytes);
        }
        self.send_to_client(tuple, response);
    }

    pub(super) fn log_move(&self, id: AllocId, old: FiveTuple, how: &str) {
        if let Some(a) = self.table.get(id) {
            tracing::info!(client = %a.five_tuple.client, from = %old.client, relayed = %a.relays.first.relayed, user = %a.user, "allocation {how} (RFC 8016 mobility)");
        }
    }
}
