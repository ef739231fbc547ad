//! Connections that move between shards. An RFC 6062 data connection is a new TCP or TLS
//! connection, which SO_REUSEPORT may give to any shard, while the peer connection its
//! ConnectionBind names lives in the shard whose core issued the CONNECTION-ID (each
//! shard issues ids of its own class, `ConnectionIds`). The shard that received the
//! ConnectionBind puts the connection back in front of that message and hands it over
//! whole (socket, TLS state, unread bytes); the owner adopts it at the start of its next
//! turn and serves the ConnectionBind as if it had accepted the connection itself.

use super::Shard;
use super::token::Source;
use crate::net::stream::Conn;
use ferroturn_core::server::ConnectionIds;
use ferroturn_core::server::tcp_relay::connection_bind_target;
use mio::Waker;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// One shard's inbox of handed-over connections. Every entry is a live connection that
/// already holds its place in the connection caps, so the caps bound it.
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

/// Every shard's inbox, and which one is this shard's.
pub struct Handoff {
    pub index: u32,
    pub inboxes: Arc<[Inbox]>,
}

impl Handoff {
    fn ids(&self) -> ConnectionIds {
        ConnectionIds {
            index: self.index,
            count: self.inboxes.len() as u32,
        }
    }
}

impl Shard {
    pub fn set_handoff(&mut self, handoff: Handoff) {
        self.handoff = Some(handoff);
    }

    /// The shard that must serve `msg`, when it is a ConnectionBind for a CONNECTION-ID
    /// another shard issued.
    pub(super) fn foreign_owner(&self, msg: &[u8]) -> Option<u32> {
        let h = self.handoff.as_ref().filter(|h| h.inboxes.len() > 1)?;
        let owner = h.ids().owner(connection_bind_target(msg)?);
        (owner != h.index).then_some(owner)
    }

    /// Moves connection `index` (its first unread message a ConnectionBind) to shard
    /// `owner`.
    pub(super) fn hand_off(&mut self, index: usize, owner: u32) {
        let Some(h) = &self.handoff else {
            return;
        };
        let Some(inbox) = h.inboxes.get(owner as usize) else {
            return;
        };
        if let Some(mut conn) = self.streams.detach(index, self.poll.registry()) {
            conn.handoff = None;
            tracing::debug!(client = %conn.tuple.client, owner, "data connection handed over");
            inbox.deliver(conn);
        }
    }

    /// Takes over the connections other shards handed to this one and serves what they
    /// hold.
    pub(super) fn adopt_handed(&mut self) {
        let Some(h) = &self.handoff else {
            return;
        };
        let Some(inbox) = h.inboxes.get(h.index as usize) else {
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
