//! What moves between shards, each kind through its own channel to every sibling shard
//! ([`Siblings`]):
//!
//! - **Allocations (RFC 8016 mobility)**: what a core hands another shard leaves through
//!   that shard's mailbox, and an allocation that moves takes its relay sockets along,
//!   so that every later packet of the allocation stays on the shard its client now
//!   reaches. On the shard the allocation leaves, the core's `Unoffload` events come
//!   first (the kernel keys channels by the client's address), then the relay sockets
//!   are taken out of this event loop with the kernel's rate state; on the shard it
//!   reaches, the sockets are registered under the allocation's new id before the core's
//!   `Offload` events for the new address are carried out. Datagrams that reach a socket
//!   meanwhile wait in its receive buffer and are read at once. TCP allocations never
//!   move (the core gives them no MOBILITY-TICKET), so only UDP relay sockets travel.
//! - **Data connections (RFC 6062)**: a data connection is a new TCP or TLS connection,
//!   which SO_REUSEPORT may give to any shard, while the peer connection its
//!   ConnectionBind names lives in the shard whose core issued the CONNECTION-ID (each
//!   shard issues ids of its own class, `ConnectionIds`). The shard that received the
//!   ConnectionBind puts the connection back in front of that message and hands it over
//!   whole (socket, TLS state, unread bytes) through the owner's [`Inbox`]; the owner
//!   adopts it at the start of its next turn and serves the ConnectionBind as if it had
//!   accepted the connection itself.

use super::Shard;
use super::kernel::KernelChannels;
use super::relays::{self, Relay};
use super::token::Source;
use crate::control::{Command, MovedRelay, ShardLink};
use crate::net::stream::Conn;
use ferroturn_core::server::tcp_relay::connection_bind_target;
use ferroturn_core::server::{AllocId, ConnectionIds, Handoff};
use mio::Interest;
use mio::Waker;
use mio::net::UdpSocket;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One shard's inbox of handed-over data connections. Every entry is a live connection
/// that already holds its place in the connection caps, so the caps bound it.
pub struct Inbox {
    conns: Mutex<Vec<Conn>>,
    pending: AtomicBool,
    waker: Arc<Waker>,
}

impl Inbox {
    pub fn new(waker: Arc<Waker>) -> Self {
        Self {
            conns: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
            waker,
        }
    }

    /// Queues `conn` and wakes the shard.
    fn deliver(&self, conn: Conn) {
        if let Ok(mut q) = self.conns.lock() {
            q.push(conn);
            self.pending.store(true, Ordering::Release);
        }
        let _ = self.waker.wake();
    }

    /// The connections waiting, if any (one atomic load when there are none).
    fn take(&self) -> Vec<Conn> {
        if !self.pending.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        self.conns
            .lock()
            .map(|mut q| std::mem::take(&mut *q))
            .unwrap_or_default()
    }
}

/// Every shard of this server as one shard reaches it, by shard index (its own
/// included): mailboxes for allocations that move, inboxes for data connections.
pub struct Siblings {
    /// This shard's index.
    pub index: u32,
    pub links: Vec<Arc<ShardLink>>,
    pub inboxes: Arc<[Inbox]>,
}

impl Default for Siblings {
    /// A shard alone.
    fn default() -> Self {
        Self {
            index: 0,
            links: Vec::new(),
            inboxes: Arc::new([]),
        }
    }
}

impl Siblings {
    fn ids(&self) -> ConnectionIds {
        ConnectionIds {
            index: self.index,
            count: self.inboxes.len() as u32,
        }
    }
}

impl Shard {
    pub fn set_siblings(&mut self, siblings: Siblings) {
        self.siblings = siblings;
    }

    /// Sends what the core hands other shards to their mailboxes.
    pub(super) fn send_handoffs(&mut self) {
        while let Some((to, handoff)) = self.core.poll_handoff() {
            let relay = match &handoff {
                Handoff::Allocation(moved) => [false, true]
                    .into_iter()
                    .filter_map(|v6| self.take_relay(moved.relay(), v6))
                    .collect(),
                _ => Vec::new(),
            };
            match self.siblings.links.get(usize::from(to)) {
                Some(link) => link.send(Command::Handoff(handoff, relay)),
                None => tracing::error!(shard = to, "handoff for a shard that does not exist"),
            }
        }
    }

    /// Takes allocation `id`'s relay socket of one family out of this shard (its channels
    /// left the kernel already; its rate state leaves now).
    fn take_relay(&mut self, id: AllocId, v6: bool) -> Option<MovedRelay> {
        self.unoffload_relay(id, v6);
        let slot = self.relays.get_mut(relays::slot(id, v6))?;
        if slot.as_ref().is_none_or(|r| r.id != id) {
            return None;
        }
        let mut relay = slot.take()?;
        let _ = self.poll.registry().deregister(&mut relay.socket);
        Some(MovedRelay {
            socket: relay.socket.into(),
            v6,
            kernel: relay.kernel.counted(),
        })
    }

    /// A handoff from another shard; an allocation adopted here gets its relay sockets.
    pub(super) fn receive_handoff(&mut self, handoff: Handoff, relays: Vec<MovedRelay>) {
        let adopted = self.core.handle_handoff(Instant::now(), handoff);
        match adopted {
            Some(_) if relays.is_empty() => {
                tracing::error!("an allocation moved here without its relay socket")
            }
            Some(id) => {
                for relay in relays {
                    if let Err(e) = self.attach_relay(id, relay) {
                        tracing::error!(
                            "a moved allocation's relay socket cannot be registered: {e}"
                        );
                    }
                }
            }
            // Not adopted: the sockets close as they drop.
            None => {}
        }
        self.handle_events();
    }

    fn attach_relay(&mut self, id: AllocId, moved: MovedRelay) -> io::Result<()> {
        let mut socket = UdpSocket::from_std(moved.socket);
        let index = relays::slot(id, moved.v6);
        let token = Source::Relay(index).token();
        self.poll
            .registry()
            .register(&mut socket, token, Interest::READABLE)?;
        if self.relays.len() <= index {
            self.relays.resize_with(index + 1, || None);
        }
        let relay = Relay {
            id,
            socket,
            kernel: KernelChannels::carried(moved.kernel),
        };
        if let Some(mut old) = self.relays[index].replace(relay) {
            let _ = self.poll.registry().deregister(&mut old.socket);
        }
        // What arrived while the socket was between shards.
        if !self.backlog.contains(&token) {
            self.backlog.push(token);
        }
        Ok(())
    }

    /// The shard that must serve `msg`, when it is a ConnectionBind for a CONNECTION-ID
    /// another shard issued.
    pub(super) fn foreign_owner(&self, msg: &[u8]) -> Option<u32> {
        let s = &self.siblings;
        if s.inboxes.len() < 2 {
            return None;
        }
        let owner = s.ids().owner(connection_bind_target(msg)?);
        (owner != s.index).then_some(owner)
    }

    /// Moves connection `index` (its first unread message a ConnectionBind) to shard
    /// `owner`.
    pub(super) fn hand_off(&mut self, index: usize, owner: u32) {
        let Some(inbox) = self.siblings.inboxes.get(owner as usize) else {
            return;
        };
        if let Some(mut conn) = self.streams.detach(index, self.poll.registry()) {
            conn.handoff = None;
            tracing::debug!(client = %conn.tuple.client, owner, "data connection handed over");
            inbox.deliver(conn);
        }
    }

    /// Takes over the data connections other shards handed to this one and serves what
    /// they hold.
    pub(super) fn adopt_handed(&mut self) {
        let Some(inbox) = self.siblings.inboxes.get(self.siblings.index as usize) else {
            return;
        };
        for conn in inbox.take() {
            match self.streams.adopt(conn, self.poll.registry()) {
                Ok(index) => {
                    if self.serve_conn(index) {
                        self.backlog.push(Source::Conn(index).token());
                    }
                }
                Err(e) => tracing::debug!("handed-over connection dropped: {e}"),
            }
        }
    }
}
