//! TCP allocations (RFC 6062) in the event loop: each one's listening socket on its
//! relayed address and its peer connections, from connect or accept to close. The core
//! decides everything (which peer to connect to, which connection to admit, which to
//! splice or close); this module carries it out, and [`super::pipe`] moves the bytes.
//!
//! Sockets on a relayed address carry SO_REUSEADDR and SO_REUSEPORT (section 5.1: the
//! relayed address both listens and connects out). A peer connection is read only once
//! it is spliced: until its ConnectionBind the kernel's receive buffer holds what the
//! peer sends (section 5.3 asks the server to buffer it), bounded by SO_RCVBUF. The pair
//! closes when both ends of its streams passed, on any error, when either connection
//! closes (section 5.5), or when the core says so.

use super::Shard;
use super::pipe::{PIPE_BUFFER, Pumped, State, pipe};
use super::token::Source;
use crate::net::stream::Close;
use ferroturn_core::server::{AllocId, ConnectionId, FiveTuple};
use mio::Interest;
use mio::net::{TcpListener, TcpStream};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

/// Peer connections accepted on one relayed address per turn.
const ACCEPT_BUDGET: usize = 16;
/// Pending connections on a relayed address (the core admits or closes each at once).
const LISTEN_BACKLOG: i32 = 64;

/// The listening socket of a TCP allocation.
pub struct TcpRelay {
    pub id: AllocId,
    pub listener: TcpListener,
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
                peer.resume(now);
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
