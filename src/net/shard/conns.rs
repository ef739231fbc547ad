//! A shard's TCP and TLS connections as the event loop sees them: read, hand complete
//! frames to the core in place, send what they relay toward peers from the framer's
//! buffer, close on error or deadline (the allocation goes with the connection). A
//! data connection (RFC 6062) is served by its pipe (`tcp_relay`) instead; one whose
//! ConnectionBind belongs to another shard is handed over (`handoff`). A connection
//! with a front (a PROXY header or ClientHello to read, or passed through to the HTTPS
//! backend: `net/front.rs`) is served by it until it is TURN.

use super::Shard;
use super::egress::{self, Sockets, Via};
use super::token::Source;
use crate::control::Refusal;
use crate::net::front::Served;
use crate::net::stream::{Close, Conn};
use ferroturn_core::proto::proxy::{self, Start};
use ferroturn_core::proto::stream::Frame;
use ferroturn_core::server::{DataTransmit, Path};
use std::io;
use std::time::Instant;

/// Reads from one connection per turn before others get a turn.
const READ_BUDGET: usize = 8;

impl Shard {
    /// A connection is ready: writes what waits for it, then reads up to
    /// [`READ_BUDGET`] times, handing each complete message to the core. True if it may
    /// have more to read.
    pub(super) fn serve_conn(&mut self, index: usize) -> bool {
        if let Some(link) = self.streams.data_link(index) {
            return self.serve_data_conn(index, link);
        }
        if self.streams.has_front(index) {
            return self.serve_front(index);
        }
        // Taken out of the slab while the core runs, put back before anything else.
        let Some(mut conn) = self.streams.conns.get_mut(index).and_then(Option::take) else {
            return false;
        };
        let result = self.read_conn(&mut conn);
        // A data connection's interest is set when its pipe starts.
        let interest = match conn.data {
            Some(_) => Ok(()),
            None => conn.update_interest(self.poll.registry(), Source::Conn(index).token()),
        };
        let handoff = conn.handoff;
        if let Some(slot) = self.streams.conns.get_mut(index) {
            *slot = Some(conn);
        }
        if let (Some(owner), Ok(_), Ok(())) = (handoff, &result, &interest) {
            self.hand_off(index, owner);
            return false;
        }
        match (result, interest) {
            (Ok(more), Ok(())) => more,
            (Err(why), _) => {
                // Answers to the messages before the fault still go out.
                self.send_control();
                self.close_conn(index, why);
                false
            }
            (_, Err(e)) => {
                self.close_conn(index, Close::Io(e));
                false
            }
        }
    }

    /// Serves a connection's front: its PROXY header, its ClientHello, or its
    /// pass-through to the HTTPS backend. Once it is TURN, serves it as such at once
    /// (what followed the header or ClientHello may be waiting).
    fn serve_front(&mut self, index: usize) -> bool {
        let Some(mut conn) = self.streams.conns.get_mut(index).and_then(Option::take) else {
            return false;
        };
        let served =
            self.streams
                .serve_front(index, &mut conn, self.poll.registry(), Instant::now());
        if let Some(slot) = self.streams.conns.get_mut(index) {
            *slot = Some(conn);
        }
        match served {
            Ok(Served::Waiting) => false,
            Ok(Served::Passing(more)) => more,
            Ok(Served::Turn) => !self.streams.has_front(index) && self.serve_conn(index),
            Err(why) => {
                self.close_conn(index, why);
                false
            }
        }
    }

    fn read_conn(&mut self, conn: &mut Conn) -> Result<bool, Close> {
        conn.flush()?;
        // Frames already buffered first (a connection handed over by another shard).
        self.conn_frames(conn)?;
        for _ in 0..READ_BUDGET {
            if conn.data.is_some() || conn.handoff.is_some() || !conn.read()? {
                return Ok(false);
            }
            self.conn_frames(conn)?;
        }
        Ok(true)
    }

    /// Hands every complete frame of `conn` to the core, then sends what it relays to
    /// peers from the framer's buffer in one batch. Stops after a ConnectionBind that
    /// made it a data connection (what follows is raw data), and before one that
    /// another shard must serve.
    fn conn_frames(&mut self, conn: &mut Conn) -> Result<(), Close> {
        if conn.data.is_some() || conn.handoff.is_some() {
            return Ok(());
        }
        // A PROXY header is read only from proxy-protocol-from sources, and only before
        // anything else; elsewhere it is refused, never framed.
        if !conn.greeted && conn.tls.is_none() {
            match proxy::start(conn.framer.pending_bytes()) {
                Start::Header => return Err(Close::Refused(Refusal::ProxyUntrusted)),
                Start::Unsure => return Ok(()),
                Start::Other => {}
            }
        }
        let now = Instant::now();
        let idle = self.streams.limits().idle_timeout;
        let mut sends = std::mem::take(&mut self.stream_sends);
        let result = loop {
            let frame = match conn.framer.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break Ok(()),
                Err(e) => break Err(Close::Framing(e)),
            };
            conn.greeted = true;
            conn.deadline = now + idle;
            let range = frame.range();
            let Some(msg) = conn.framer.buffer_mut().get_mut(range.clone()) else {
                continue;
            };
            if let Some(owner) = self.foreign_owner(msg) {
                conn.framer.unread(&frame);
                conn.handoff = Some(owner);
                break Ok(());
            }
            let out = self.core.handle_client_datagram(now, conn.tuple, msg);
            if let Some(DataTransmit {
                path: Path::Peer { relay, peer },
                range: r,
            }) = out
            {
                sends.push((relay, range.start + r.start..range.start + r.end, peer));
            }
            if matches!(frame, Frame::Stun(_)) {
                // An Allocate may want a relay socket before the next message.
                self.handle_events();
                // RFC 6062 section 5.4: after a successful ConnectionBind the bytes that
                // follow are the peer's, not frames.
                if let Some(link) = self.spliced(&conn.tuple) {
                    conn.data = Some(link);
                    break Ok(());
                }
            }
        };
        let buffer = conn.framer.buffer();
        let sockets = Sockets {
            listeners: &self.listeners,
            endpoints: &self.endpoints,
            relays: &self.relays,
        };
        egress::transmit(
            sends.len(),
            |i| {
                let (relay, range, peer) = &sends[i];
                (
                    Via::to_peer(*relay, *peer),
                    buffer.get(range.clone()).unwrap_or_default(),
                    *peer,
                )
            },
            &sockets,
            &mut false,
            None,
        );
        sends.clear();
        self.stream_sends = sends;
        result
    }

    /// Closes the connections a write failed on, and keeps the list's allocation.
    pub(super) fn close_failed(&mut self, mut failed: Vec<usize>) {
        for &index in &failed {
            self.close_conn(index, Close::Io(io::ErrorKind::BrokenPipe.into()));
        }
        failed.clear();
        self.failed = failed;
    }

    /// Closes connection `index` and deletes its allocation at once; a data connection
    /// takes its peer connection with it.
    pub(super) fn close_conn(&mut self, index: usize, why: Close) {
        if let Close::Refused(refusal) = why {
            self.streams.count_refusal(refusal);
        }
        let link = self.streams.data_link(index);
        if let Some(tuple) = self.streams.remove(index, self.poll.registry()) {
            tracing::debug!(client = %tuple.client, "connection closed: {why}");
            self.core.handle_connection_closed(Instant::now(), tuple);
            if let Some(link) = link {
                self.close_linked_peer(link);
            }
            self.handle_events();
        }
    }

    /// Closes connections past their handshake or idle deadline.
    pub(super) fn close_expired(&mut self, now: Instant) {
        let mut expired = std::mem::take(&mut self.failed);
        let core = &self.core;
        self.streams
            .expired(now, |t| core.relayed_address(t).is_some(), &mut expired);
        for &index in &expired {
            let why = self.streams.timeout_reason(index);
            self.close_conn(index, why);
        }
        expired.clear();
        self.failed = expired;
    }
}
