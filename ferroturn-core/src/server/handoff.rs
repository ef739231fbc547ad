//! RFC 8016 moves between shards. A shard owns its allocations, and SO_REUSEPORT may
//! hand a client's new address to another shard. That shard (the receiving one) checks
//! the nonce and the ticket's MAC, then hands the request to the owner the ticket names
//! ([`Handoff::Request`]) and holds the 5-tuple's further requests until the answer comes
//! back. The owner checks the user and either answers ([`Handoff::Answer`]: an error, or
//! the success of a LIFETIME 0) or gives the whole allocation away
//! ([`Handoff::Allocation`]: permissions, channels, deadlines, rates, counters; its relay
//! socket goes with it through the I/O layer), and the receiving shard adopts it, so
//! every later packet stays on that one shard. The I/O layer carries handoffs through
//! the shards' mailboxes.

use super::Server;
use super::allocation::{AllocId, Allocation, FiveTuple};
use super::deadlines::Timer;
use super::error::RequestError;
use super::mobility::Verdict;
use crate::proto::codec;
use crate::proto::scan::{self, Scan};
use crate::proto::wire::{Class, method};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Moves waiting for another shard at once; more are dropped (the client retransmits).
const MAX_PENDING_MOVES: usize = 64;
/// Requests held per waiting move.
const MAX_HELD: usize = 8;
/// Larger requests are neither handed over nor held (TURN requests are a few hundred
/// bytes), which bounds what pending moves keep to about 1 MiB per shard.
const MAX_HELD_LEN: usize = 2048;
/// A move the owner has not answered by then is forgotten, its held requests dropped.
const MOVE_TIMEOUT: Duration = Duration::from_secs(2);

/// A Refresh with the ticket of another shard's allocation, on its way there.
#[derive(Debug)]
pub struct MoveRequest {
    /// The shard the request reached: it owns `tuple` and sends the answer.
    pub from: u8,
    /// The client's new 5-tuple, in the receiving shard's listener ids.
    pub tuple: FiveTuple,
    request: Vec<u8>,
}

/// An allocation leaving its shard for the one its client moved to.
#[derive(Debug)]
pub struct MovedAllocation {
    alloc: Allocation,
    tuple: FiveTuple,
    lifetime: u32,
    txn: [u8; 12],
    fingerprint: bool,
}

impl MovedAllocation {
    /// The allocation's id at the shard it leaves: the relay socket the I/O layer moves.
    pub fn relay(&self) -> AllocId {
        self.alloc.id
    }
}

/// What one shard hands another; the I/O layer carries it (mailboxes between shards).
#[derive(Debug)]
pub enum Handoff {
    /// To the owning shard: a move of its allocation.
    Request(MoveRequest),
    /// To the shard of `tuple`: the answer to a move it handed over (no payload when
    /// the rate limit for unauthenticated answers withheld it).
    Answer {
        tuple: FiveTuple,
        payload: Option<Vec<u8>>,
    },
    /// To the shard the client moved to: the allocation (its relay socket follows).
    Allocation(Box<MovedAllocation>),
}

/// A move this shard handed to the owner and waits for.
struct PendingMove {
    tuple: FiveTuple,
    txn: [u8; 12],
    held: Vec<Vec<u8>>,
    until: Instant,
}

/// Moves waiting for their owner shard.
#[derive(Default)]
pub(super) struct Moves {
    list: VecDeque<PendingMove>,
}

impl Moves {
    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    fn take(&mut self, tuple: &FiveTuple) -> Option<PendingMove> {
        let i = self.list.iter().position(|m| m.tuple == *tuple)?;
        self.list.remove(i)
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.list.front().map(|m| m.until)
    }

    /// Forgets moves not answered in time.
    pub(super) fn expire(&mut self, now: Instant) {
        while self.list.front().is_some_and(|m| m.until <= now) {
            self.list.pop_front();
        }
    }
}
impl Server {
    /// The next handoff for another shard, and that shard's index.
    pub fn poll_handoff(&mut self) -> Option<(u8, Handoff)> {
        self.handoffs.pop_front()
    }

    /// Sends the request to the owning shard and holds this 5-tuple's next requests
    /// until it answers.
    pub(super) fn hand_over(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        buf: &[u8],
        scan: &Scan,
        owner: u8,
    ) {
        if self.moves.list.len() >= MAX_PENDING_MOVES {
            return;
        }
        let Some(request) = buf.get(..scan.len).filter(|r| r.len() <= MAX_HELD_LEN) else {
            return;
        };
        self.moves.list.push_back(PendingMove {
            tuple,
            txn: scan.txn,
            held: Vec::new(),
            until: now + MOVE_TIMEOUT,
        });
        let request = MoveRequest {
            from: self.shard,
            tuple,
            request: request.to_vec(),
        };
        self.handoffs.push_back((owner, Handoff::Request(request)));
    }

    /// A datagram from a 5-tuple whose move another shard is deciding: requests are held
    /// (up to a few; a retransmission of the move itself is dropped), anything else is
    /// dropped. False if `tuple` has no move pending.
    pub(super) fn hold_while_moving(&mut self, tuple: &FiveTuple, buf: &[u8]) -> bool {
        let Some(m) = self.moves.list.iter_mut().find(|m| m.tuple == *tuple) else {
            return false;
        };
        if let Some(h) = scan::header_only(buf) {
            if h.class == Class::Request
                && h.txn != m.txn
                && m.held.len() < MAX_HELD
                && buf.len() <= MAX_HELD_LEN
            {
                m.held.push(buf.to_vec());
            }
        }
        true
    }

    /// What another shard handed this one. Returns the id of an allocation adopted here,
    /// whose relay socket the I/O layer must now attach under that id.
    pub fn handle_handoff(&mut self, now: Instant, handoff: Handoff) -> Option<AllocId> {
        match handoff {
            Handoff::Request(r) => {
                self.judge_handed_move(now, r);
                None
            }
            Handoff::Answer { tuple, payload } => {
                let held = self.moves.take(&tuple).map(|m| m.held);
                self.send_to_client(tuple, payload);
                self.replay(now, tuple, held);
                None
            }
            Handoff::Allocation(moved) => self.adopt(now, *moved),
        }
    }

    /// The owner's side of a move handed over by shard `r.from`.
    fn judge_handed_move(&mut self, now: Instant, r: MoveRequest) {
        let verdict = match scan::scan(&r.request) {
            Ok(scan) => match codec::decode_request(&r.request, &scan) {
                Ok(req) => match req
                    .mobility_ticket
                    .as_deref()
                    .and_then(|t| self.tickets.open(t))
                {
                    Some(t) if t.shard == self.shard => {
                        let v = self.judge_move(now, &r.tuple, &r.request, &scan, &req, &t);
                        Some((v, scan))
                    }
                    _ => None,
                },
                Err(_) => None,
            },
            Err(_) => None,
        };
        let answer = |payload| Handoff::Answer {
            tuple: r.tuple,
            payload,
        };
        let handoff = match verdict {
            // The receiving shard checked all this; nothing to say but to stop waiting.
            None => answer(None),
            Some((Verdict::Answer(payload), _)) => answer(payload),
            Some((Verdict::Move { id, lifetime }, scan)) => match self.detach(id) {
                Some(alloc) => {
                    tracing::info!(client = %alloc.five_tuple.client, to = %r.tuple.client, shard = r.from, "allocation leaves for another shard (RFC 8016 mobility)");
                    Handoff::Allocation(Box::new(MovedAllocation {
                        alloc,
                        tuple: r.tuple,
                        lifetime,
                        txn: scan.txn,
                        fingerprint: scan.fingerprint,
                    }))
                }
                None => answer(None),
            },
        };
        self.handoffs.push_back((r.from, handoff));
    }

    /// Takes allocation `id` out of this shard for another: out of the table, its timers
    /// and the kernel; its quota, relayed address and relay socket go on with it. The
    /// port goes back to this shard's pool (which cannot see when the allocation ends):
    /// should the pool hand it out while the socket lives on elsewhere, that bind fails
    /// and another port is tried, as for reserved ports claimed by another shard. A
    /// reservation it made stays here until its own timer ends it.
    fn detach(&mut self, id: AllocId) -> Option<Allocation> {
        let mut a = self.table.remove(id)?;
        self.unoffload_all(&a);
        for c in &mut a.channels {
            c.offloaded = false;
        }
        self.cancel_timers(&a);
        a.reservation = None;
        for r in a.relays.iter() {
            self.pool(r.local.ip()).release(r.local.port());
        }
        Some(a)
    }

    /// Adopts an allocation another shard gave away for a move to `m.tuple`.
    fn adopt(&mut self, now: Instant, m: MovedAllocation) -> Option<AllocId> {
        let held = self.moves.take(&m.tuple).map(|pending| pending.held);
        let MovedAllocation {
            mut alloc,
            tuple,
            lifetime,
            txn,
            fingerprint,
        } = m;
        let old = alloc.five_tuple;
        if self.table.id_by_tuple(&tuple).is_some() {
            // The 5-tuple got an allocation of its own meanwhile: this one cannot move
            // there, and its old shard let it go, so it ends.
            self.shared.release_allocation(&alloc.user);
            self.release_lease(&alloc);
            for r in alloc.relays.iter() {
                self.shared.remove_relay(r.relayed);
            }
            self.stats.allocations_deleted += 1;
            tracing::info!(client = %old.client, relayed = %alloc.relays.first.relayed, "allocation ended: its new 5-tuple is taken");
            let scan = Scan::for_reply(method::REFRESH, txn, fingerprint);
            let key = alloc.key;
            let e = self.error_response(
                now,
                &tuple,
                &scan,
                RequestError::AllocationMismatch,
                Some(&key),
            );
            self.send_to_client(tuple, e);
            self.replay(now, tuple, held);
            return None;
        }
        let id = self.table.next_id();
        alloc.id = id;
        alloc.five_tuple = tuple;
        alloc.epoch = alloc.epoch.wrapping_add(1);
        alloc.expires = now + Duration::from_secs(u64::from(lifetime));
        // Back in the shard whose pool holds the port: mark it taken again.
        for r in alloc.relays.iter() {
            self.pool(r.local.ip()).claim(r.local.port());
        }
        self.deadlines
            .rearm(None, alloc.expires, Timer::Allocation(id));
        for p in &alloc.permissions {
            self.deadlines
                .rearm(None, p.expires, Timer::Permission(id, p.ip));
        }
        for c in &alloc.channels {
            self.deadlines
                .rearm(None, c.expires, Timer::Channel(id, c.number));
        }
        self.table.insert(alloc);
        self.sync_offload(id, false);
        self.stats.allocations_moved += 1;
        self.stats.allocations_moved_across_shards += 1;
        self.log_move(id, old, "moved in from another shard");
        self.answer_move(now, id, lifetime, txn, fingerprint);
        self.replay(now, tuple, held);
        Some(id)
    }

    /// Feeds requests held during a move, in order, now that it is decided.
    fn replay(&mut self, now: Instant, tuple: FiveTuple, held: Option<Vec<Vec<u8>>>) {
        for mut request in held.into_iter().flatten() {
            // Requests are answered, never relayed: nothing refers to `request` after.
            let _ = self.handle_client_datagram(now, tuple, &mut request);
        }
    }
}
