//! The pipe between a TCP peer connection (RFC 6062) and its client data connection:
//! the peer connection's state, the shard's slab of them, and the byte moving itself.
//!
//! One bounded buffer per direction, allocated once at the splice: toward the peer the
//! data connection's own receive buffer (its framer, no longer framing), toward the
//! client [`PIPE_BUFFER`] bytes. A direction reads only when its buffer is empty, so a
//! slow reader stops the other side's reads (TCP backpressure) and nothing grows; each
//! read is charged to the core, which may pause the direction for `max-bps` and
//! `bps-capacity`. The end of one side's stream is passed on as the end of the other's.

use super::token::Source;
use crate::net::stream::{Close, Conn, nonblocking};
use ferroturn_core::server::{ConnectionId, Server};
use mio::net::TcpStream;
use mio::{Interest, Registry};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::time::Instant;

/// Bytes from a peer waiting for its client data connection.
pub const PIPE_BUFFER: usize = 16 * 1024;
/// Reads per direction of one pipe per turn before others get a turn.
const PUMP_BUDGET: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Connecting for a Connect request.
    Connecting,
    /// Connected, waiting for its ConnectionBind (not read meanwhile).
    Waiting,
    /// Spliced to data connection `conn`; `active` once the ConnectionBind response is
    /// on its way, which must precede the peer's bytes.
    Spliced { conn: usize, active: bool },
}

/// Directions of a pipe, as indexes.
const UP: usize = 0;
const DOWN: usize = 1;

pub struct PeerConn {
    pub id: ConnectionId,
    pub socket: TcpStream,
    pub state: State,
    /// Peer to client: read and not yet written, `down[start..end]`.
    pub down: Box<[u8]>,
    start: usize,
    end: usize,
    /// Reading paused until then by the bandwidth caps: [client to peer, peer to client].
    paused: [Option<Instant>; 2],
    /// The end of the stream read from [the client, the peer], and passed on.
    ended: [bool; 2],
    finished: [bool; 2],
}

/// A shard's peer connections, in a slab indexed by token, and by id.
#[derive(Default)]
pub struct Peers {
    pub slots: Vec<Option<PeerConn>>,
    free: Vec<usize>,
    pub by_id: HashMap<ConnectionId, usize>,
}

impl Peers {
    pub fn insert(
        &mut self,
        id: ConnectionId,
        mut socket: TcpStream,
        state: State,
        registry: &Registry,
    ) -> io::Result<usize> {
        let index = self.free.pop().unwrap_or(self.slots.len());
        let token = Source::Peer(index).token();
        if let Err(e) =
            registry.register(&mut socket, token, Interest::READABLE | Interest::WRITABLE)
        {
            self.free.push(index);
            return Err(e);
        }
        let peer = PeerConn {
            id,
            socket,
            state,
            down: Box::default(),
            start: 0,
            end: 0,
            paused: [None; 2],
            ended: [false; 2],
            finished: [false; 2],
        };
        if index == self.slots.len() {
            self.slots.push(Some(peer));
        } else {
            self.slots[index] = Some(peer);
        }
        self.by_id.insert(id, index);
        Ok(index)
    }

    pub fn remove(&mut self, index: usize, registry: &Registry) -> Option<PeerConn> {
        let mut peer = self.slots.get_mut(index)?.take()?;
        let _ = registry.deregister(&mut peer.socket);
        self.by_id.remove(&peer.id);
        self.free.push(index);
        Some(peer)
    }

    pub fn get_mut(&mut self, index: usize) -> Option<&mut PeerConn> {
        self.slots.get_mut(index).and_then(Option::as_mut)
    }

    /// The earliest time a paused pipe may read again.
    pub fn next_resume(&self) -> Option<Instant> {
        self.slots
            .iter()
            .flatten()
            .flat_map(|p| p.paused.iter().flatten())
            .min()
            .copied()
    }

    /// Pipes with a pause that ended by `now`.
    pub fn resumable(&self, now: Instant, out: &mut Vec<usize>) {
        for (i, p) in self.slots.iter().enumerate() {
            if let Some(p) = p {
                if p.paused.iter().flatten().any(|at| *at <= now) {
                    out.push(i);
                }
            }
        }
    }
}

/// What a pump of one pipe came to.
pub enum Pumped {
    /// Both sides would block, or wait for a buffer or a pause.
    Idle,
    /// The budget ran out with bytes perhaps still to move.
    More,
    /// Both ends passed on: the pair is done.
    Done,
}

/// Moves bytes both ways between `peer` and its data connection `conn` until neither
/// side moves, for at most [`PUMP_BUDGET`] rounds.
pub fn pipe(
    core: &mut Server,
    now: Instant,
    peer: &mut PeerConn,
    conn: &mut Conn,
) -> Result<Pumped, Close> {
    for _ in 0..PUMP_BUDGET {
        let up = pipe_up(core, now, peer, conn)?;
        let down = pipe_down(core, now, peer, conn)?;
        if peer.finished == [true; 2] {
            return Ok(Pumped::Done);
        }
        if !up && !down {
            return Ok(Pumped::Idle);
        }
    }
    Ok(Pumped::More)
}

/// Client to peer: writes what the data connection's buffer holds, then, once it is
/// empty, reads the next chunk. True if anything moved.
fn pipe_up(
    core: &mut Server,
    now: Instant,
    peer: &mut PeerConn,
    conn: &mut Conn,
) -> Result<bool, Close> {
    let mut moved = false;
    while !conn.framer.pending_bytes().is_empty() {
        match nonblocking(peer.socket.write(conn.framer.pending_bytes()))? {
            0 => return Ok(moved),
            n => {
                conn.framer.consume(n);
                moved = true;
            }
        }
    }
    if peer.ended[UP] {
        if !peer.finished[UP] {
            let _ = peer.socket.shutdown(std::net::Shutdown::Write);
            peer.finished[UP] = true;
        }
        return Ok(moved);
    }
    if !peer.may_read(UP, now) {
        return Ok(moved);
    }
    let read = conn.read_raw();
    peer.charge(core, now, UP, read).map(|m| m || moved)
}

/// Peer to client: writes what the pipe buffer holds, then, once it is empty, reads the
/// next chunk from the peer. True if anything moved.
fn pipe_down(
    core: &mut Server,
    now: Instant,
    peer: &mut PeerConn,
    conn: &mut Conn,
) -> Result<bool, Close> {
    let mut moved = false;
    while peer.start < peer.end {
        let pending = peer.down.get(peer.start..peer.end).unwrap_or_default();
        match conn.write_raw(pending)? {
            0 => return Ok(moved),
            n => {
                peer.start += n;
                moved = true;
            }
        }
    }
    (peer.start, peer.end) = (0, 0);
    if peer.ended[DOWN] {
        if !peer.finished[DOWN] && !conn.has_backlog() {
            conn.finish_raw()?;
            peer.finished[DOWN] = true;
        }
        return Ok(moved);
    }
    if !peer.may_read(DOWN, now) {
        return Ok(moved);
    }
    let read = match peer.socket.read(&mut peer.down) {
        Ok(0) => Err(Close::Eof),
        r => nonblocking(r),
    };
    if let Ok(n) = read {
        peer.end = n;
    }
    peer.charge(core, now, DOWN, read).map(|m| m || moved)
}

impl PeerConn {
    /// Ends the bandwidth pauses that are over at `now`.
    pub fn resume(&mut self, now: Instant) {
        for at in &mut self.paused {
            *at = at.filter(|t| *t > now);
        }
    }

    /// Whether direction `dir` may read now (no bandwidth pause running).
    fn may_read(&self, dir: usize, now: Instant) -> bool {
        self.paused[dir].is_none_or(|at| at <= now)
    }

    /// What a read in direction `dir` came to: bytes charged to the core (which may
    /// pause the direction), the end of the stream noted, an error passed on. True if
    /// anything happened.
    fn charge(
        &mut self,
        core: &mut Server,
        now: Instant,
        dir: usize,
        read: Result<usize, Close>,
    ) -> Result<bool, Close> {
        match read {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.paused[dir] = core
                    .handle_tcp_relayed(now, self.id, dir == UP, n)
                    .map(|d| now + d);
                Ok(true)
            }
            Err(Close::Eof) => {
                self.ended[dir] = true;
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }
}
