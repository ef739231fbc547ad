//! A shard's TCP and TLS connections as the event loop sees them: read, hand complete
//! frames to the core in place, send what they relay toward peers from the framer's
//! buffer, close on error or deadline (the allocation goes with the connection).

use super::Shard;
use super::egress::{self, Sockets, Via};
use super::token::Source;
use crate::net::stream::{Close, Conn};
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
        // Taken out of the slab while the core runs, put back before anything else.
        let Some(mut conn) = self.streams.conns.get_mut(index).and_then(Option::take) else {
            return false;
        };
        let result = self.read_conn(&mut conn);
        let interest = conn.update_interest(self.poll.registry(), Source::Conn(index).token());
        if let Some(slot) = self.streams.conns.get_mut(index) {
            *slot = Some(conn);
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

    fn read_conn(&mut self, conn: &mut Conn) -> Result<bool, Close> {
        conn.flush()?;
        for _ in 0..READ_BUDGET {
            if !conn.read()? {
                return Ok(false);
            }
            self.conn_frames(conn)?;
        }
        Ok(true)
    }

    /// Hands every complete frame of `conn` to the core, then sends what it relays to
    /// peers from the framer's buffer in one batch.
    fn conn_frames(&mut self, conn: &mut Conn) -> Result<(), Close> {
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

    /// Closes connection `index` and deletes its allocation at once.
    fn close_conn(&mut self, index: usize, why: Close) {
        if let Some(tuple) = self.streams.remove(index, self.poll.registry()) {
            tracing::debug!(client = %tuple.client, "connection closed: {why}");
            self.core.handle_connection_closed(tuple);
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
            self.close_conn(index, Close::Timeout);
        }
        expired.clear();
        self.failed = expired;
    }
}
