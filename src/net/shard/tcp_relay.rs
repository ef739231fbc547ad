//! TCP allocations (RFC 6062) in the event loop: each one's listening socket on its
//! relayed address, its peer connections, and the pipe between a peer connection and
//! its client data connection. The core decides everything (which peer to connect to,
//! which connection to admit, which to splice or close); this module carries it out and
//! moves the bytes.
//!
//! Sockets on a relayed address carry SO_REUSEADDR and SO_REUSEPORT (section 5.1: the
//! relayed address both listens and connects out). A peer connection is read only once
//! it is spliced: until its ConnectionBind the kernel's receive buffer holds what the
//! peer sends (section 5.3 asks the server to buffer it), bounded by SO_RCVBUF. A pipe
//! has one bounded buffer per direction, allocated once at the splice: toward the peer
//! the data connection's own receive buffer, toward the client [`PIPE_BUFFER`] bytes.
//! A direction reads only when its buffer is empty, so a slow reader stops the other
//! side's reads (TCP backpressure) and nothing grows; each read is charged to the core,
//! which may pause the direction to keep `max-bps` and `bps-capacity`. The end of one
//! side's stream is passed on as the end of the other's (half close); the pair closes
//! when both ends passed, on any error, or when the core says so.

use super::Shard;
use super::token::Source;
use crate::net::stream::{Close, Conn, nonblocking};
use ferroturn_core::server::{AllocId, ConnectionId, FiveTuple};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry};
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

/// Bytes from a peer waiting for its client data connection.
const PIPE_BUFFER: usize = 16 * 1024;
/// Peer connections accepted on one relayed address per turn.
const ACCEPT_BUDGET: usize = 16;
/// Reads per direction of one pipe per turn before others get a turn.
const PUMP_BUDGET: usize = 8;
/// Pending connections on a relayed address (the core admits or closes each at once).
const LISTEN_BACKLOG: i32 = 64;

/// The listening socket of a TCP allocation.
pub struct TcpRelay {
    pub id: AllocId,
    pub listener: TcpListener,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
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
    id: ConnectionId,
    socket: TcpStream,
    state: State,
    /// Peer to client: read and not yet written, `down[start..end]`.
    down: Box<[u8]>,
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
    slots: Vec<Option<PeerConn>>,
    free: Vec<usize>,
    by_id: HashMap<ConnectionId, usize>,
}

impl Peers {
    fn insert(
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

    fn remove(&mut self, index: usize, registry: &Registry) -> Option<PeerConn> {
        let mut peer = self.slots.get_mut(index)?.take()?;
        let _ = registry.deregister(&mut peer.socket);
        self.by_id.remove(&peer.id);
        self.free.push(index);
        Some(peer)
    }

    fn get_mut(&mut self, index: usize) -> Option<&mut PeerConn> {
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
    fn resumable(&self, now: Instant, out: &mut Vec<usize>) {
        for (i, p) in self.slots.iter().enumerate() {
            if let Some(p) = p {
                if p.paused.iter().flatten().any(|at| *at <= now) {
                    out.push(i);
                }
            }
        }
    }
}

/// A socket on a relayed address: SO_REUSEADDR and SO_REUSEPORT, so that the
/// allocation's listening socket and its connections to peers share the address (RFC
/// 6062 section 5.1).
fn relay_socket(local: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(local),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    if local.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&local.into())?;
    Ok(socket)
}

/// What a pump of one pipe came to.
enum Pumped {
    /// Both sides would block, or wait for a buffer or a pause.
    Idle,
    /// The budget ran out with bytes perhaps still to move.
    More,
    /// Both ends passed on: the pair is done.
    Done,
}

impl Shard {
    /// [`ferroturn_core::server::Event::ListenRelay`].
    pub(super) fn listen_relay(&mut self, id: AllocId, local: SocketAddr) -> io::Result<()> {
        let socket = relay_socket(local)?;
        socket.listen(LISTEN_BACKLOG)?;
        let mut listener = TcpListener::from_std(socket.into());
        let index = id.index as usize;
        self.poll.registry().register(
            &mut listener,
            Source::TcpRelay(index).token(),
            Interest::READABLE,
        )?;
        if self.tcp_relays.len() <= index {
            self.tcp_relays.resize_with(index + 1, || None);
        }
        if let Some(mut old) = self.tcp_relays[index].replace(TcpRelay { id, listener }) {
            let _ = self.poll.registry().deregister(&mut old.listener);
        }
        Ok(())
    }

    /// Closes the listening socket of TCP allocation `id`, if it has one.
    pub(super) fn close_tcp_relay(&mut self, id: AllocId) {
        if let Some(slot) = self.tcp_relays.get_mut(id.index as usize) {
            if slot.as_ref().is_some_and(|r| r.id == id) {
                if let Some(mut r) = slot.take() {
                    let _ = self.poll.registry().deregister(&mut r.listener);
                }
            }
        }
    }

    /// [`ferroturn_core::server::Event::ConnectPeer`]: a non-blocking connect from the
    /// relayed address; its outcome arrives as a writable event.
    pub(super) fn connect_peer(&mut self, conn: ConnectionId, local: SocketAddr, peer: SocketAddr) {
        let started = relay_socket(local).and_then(|socket| {
            match socket.connect(&peer.into()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                Err(e) => return Err(e),
            }
            let stream = TcpStream::from_std(socket.into());
            let _ = stream.set_nodelay(true);
            self.peers
                .insert(conn, stream, State::Connecting, self.poll.registry())
        });
        if let Err(e) = started {
            tracing::debug!(%local, %peer, "connect to peer failed: {e}");
            self.core.handle_peer_connected(Instant::now(), conn, false);
        }
    }

    /// Peers connecting to the relayed address of TCP relay slot `index`: each one the
    /// core admits waits for its ConnectionBind; the others are closed at once (RFC 6062
    /// section 5.3). True if the budget ran out.
    pub(super) fn accept_peers(&mut self, index: usize) -> bool {
        for _ in 0..ACCEPT_BUDGET {
            let Some(Some(relay)) = self.tcp_relays.get(index) else {
                return false;
            };
            let id = relay.id;
            let (stream, from) = match relay.listener.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    tracing::debug!("accept on a TCP relay failed: {e}");
                    return false;
                }
            };
            let Some(conn) = self.core.handle_peer_connection(Instant::now(), id, from) else {
                tracing::debug!(%from, "peer connection refused");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let registry = self.poll.registry();
            if let Err(e) = self.peers.insert(conn, stream, State::Waiting, registry) {
                tracing::debug!(%from, "peer connection dropped: {e}");
                self.core.handle_peer_closed(Instant::now(), conn);
            }
        }
        true
    }

    /// An event on peer connection `index`: a connect completes, or a pipe moves. True
    /// if it may have more to move.
    pub(super) fn serve_peer(&mut self, index: usize) -> bool {
        match self.peers.get_mut(index).map(|p| p.state) {
            Some(State::Connecting) => {
                self.finish_connect(index);
                false
            }
            Some(State::Spliced { active: true, .. }) => self.pump(index),
            _ => false,
        }
    }

    /// A connecting socket became writable: connected, or failed.
    fn finish_connect(&mut self, index: usize) {
        let Some(peer) = self.peers.get_mut(index) else {
            return;
        };
        let connected = match peer.socket.take_error() {
            Ok(None) => match peer.socket.peer_addr() {
                Ok(_) => true,
                // Not yet: a spurious wake-up.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(_) => false,
            },
            Ok(Some(_)) | Err(_) => false,
        };
        let id = peer.id;
        if connected {
            peer.state = State::Waiting;
        } else {
            self.peers.remove(index, self.poll.registry());
        }
        self.core
            .handle_peer_connected(Instant::now(), id, connected);
    }

    /// [`ferroturn_core::server::Event::Splice`]: peer connection `id` and the data
    /// connection of `client` (being read right now) become a pipe, which starts moving
    /// at the end of the turn ([`Shard::activate_splices`]).
    pub(super) fn splice(&mut self, id: ConnectionId, client: FiveTuple) {
        let peer = self.peers.by_id.get(&id).copied();
        let conn = self.streams.index_of(client.listener, client.client);
        match (peer, conn) {
            (Some(p), Some(c)) => {
                if let Some(peer) = self.peers.get_mut(p) {
                    peer.state = State::Spliced {
                        conn: c,
                        active: false,
                    };
                }
                self.splicing.push((p, id, client));
            }
            (peer, _) => {
                tracing::debug!(%client.client, "splice of a vanished connection");
                if let Some(p) = peer {
                    self.close_peer(p);
                }
                self.core.handle_peer_closed(Instant::now(), id);
            }
        }
    }

    /// The splice of this turn for the connection of `tuple`, if there is one: its
    /// peer's slot and id.
    pub(super) fn spliced(&self, tuple: &FiveTuple) -> Option<(usize, ConnectionId)> {
        self.splicing
            .iter()
            .find(|(_, _, t)| t == tuple)
            .map(|(p, id, _)| (*p, *id))
    }

    /// Starts the pipes spliced this turn, now that their ConnectionBind responses have
    /// been handed to their connections.
    pub(super) fn activate_splices(&mut self) {
        for (p, id, client) in std::mem::take(&mut self.splicing) {
            let conn = self.streams.index_of(client.listener, client.client);
            let linked = conn.filter(|c| self.streams.data_link(*c) == Some((p, id)));
            let Some(c) = linked else {
                if self.peers.by_id.get(&id) == Some(&p) {
                    self.close_peer(p);
                }
                continue;
            };
            let registry = self.poll.registry();
            let watched = match self.streams.conns.get_mut(c).and_then(Option::as_mut) {
                Some(conn) => conn.watch_both(registry, Source::Conn(c).token()),
                None => continue,
            };
            if watched.is_err() {
                self.close_conn(c, Close::Io(io::ErrorKind::Other.into()));
                continue;
            }
            if let Some(peer) = self.peers.get_mut(p) {
                peer.state = State::Spliced {
                    conn: c,
                    active: true,
                };
                peer.down = vec![0; PIPE_BUFFER].into_boxed_slice();
            }
            if self.pump(p) {
                self.backlog.push(Source::Peer(p).token());
            }
        }
    }

    /// An event on data connection `index`: its pipe moves. True if it may have more.
    pub(super) fn serve_data_conn(&mut self, index: usize, link: (usize, ConnectionId)) -> bool {
        let (p, id) = link;
        match self.peers.get_mut(p) {
            Some(peer) if peer.id == id => self.pump(p),
            _ => {
                self.close_conn(index, Close::Eof);
                false
            }
        }
    }

    /// Pipes whose bandwidth pause ended.
    pub(super) fn resume_paused(&mut self, now: Instant) {
        let mut due = Vec::new();
        self.peers.resumable(now, &mut due);
        for p in due {
            if let Some(peer) = self.peers.get_mut(p) {
                for at in &mut peer.paused {
                    *at = at.filter(|t| *t > now);
                }
            }
            if self.pump(p) {
                self.backlog.push(Source::Peer(p).token());
            }
        }
    }

    /// Moves bytes both ways through the pipe of peer connection `p`; closes the pair
    /// when it is done or broken. True if the budget ran out.
    fn pump(&mut self, p: usize) -> bool {
        let now = Instant::now();
        let Some(peer) = self.peers.slots.get_mut(p).and_then(Option::as_mut) else {
            return false;
        };
        let State::Spliced {
            conn: c,
            active: true,
        } = peer.state
        else {
            return false;
        };
        let link = Some((p, peer.id));
        let outcome = match self.streams.conns.get_mut(c).and_then(Option::as_mut) {
            Some(conn) if conn.data == link => pipe(&mut self.core, now, peer, conn),
            _ => Err(Close::Eof),
        };
        match outcome {
            Ok(Pumped::Idle) => false,
            Ok(Pumped::More) => true,
            Ok(Pumped::Done) => {
                self.close_peer(p);
                false
            }
            Err(why) => {
                tracing::debug!("TCP relay pipe closed: {why}");
                self.close_peer(p);
                false
            }
        }
    }

    /// [`ferroturn_core::server::Event::ClosePeer`].
    pub(super) fn close_peer_id(&mut self, id: ConnectionId) {
        if let Some(p) = self.peers.by_id.get(&id).copied() {
            self.close_peer(p);
        }
    }

    /// Closes peer connection `p` and its data connection, and tells the core (RFC
    /// 6062: either side's close closes the other).
    pub(super) fn close_peer(&mut self, p: usize) {
        let Some(peer) = self.peers.remove(p, self.poll.registry()) else {
            return;
        };
        if let State::Spliced { conn, .. } = peer.state {
            if self.streams.data_link(conn) == Some((p, peer.id)) {
                self.close_conn(conn, Close::Eof);
            }
        }
        self.core.handle_peer_closed(Instant::now(), peer.id);
    }

    /// A data connection closed: so does its peer connection, if it is still open.
    pub(super) fn close_linked_peer(&mut self, link: (usize, ConnectionId)) {
        let (p, id) = link;
        if self.peers.by_id.get(&id) == Some(&p) {
            self.close_peer(p);
        }
    }
}

/// Moves bytes both ways between `peer` and its data connection `conn` until neither
/// side moves, for at most [`PUMP_BUDGET`] rounds.
fn pipe(
    core: &mut ferroturn_core::server::Server,
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
    core: &mut ferroturn_core::server::Server,
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
    core: &mut ferroturn_core::server::Server,
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
    /// Whether direction `dir` may read now (no bandwidth pause running).
    fn may_read(&self, dir: usize, now: Instant) -> bool {
        self.paused[dir].is_none_or(|at| at <= now)
    }

    /// What a read in direction `dir` came to: bytes charged to the core (which may
    /// pause the direction), the end of the stream noted, an error passed on. True if
    /// anything happened.
    fn charge(
        &mut self,
        core: &mut ferroturn_core::server::Server,
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
