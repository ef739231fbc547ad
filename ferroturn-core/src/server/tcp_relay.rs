//! TCP allocations (RFC 6062): the TCP connections between an allocation's relayed
//! address and its peers, from the Connect request or the peer's own connection until
//! they end, and the decisions about them. The I/O layer opens, accepts, splices and
//! closes the sockets when the core says so; the bytes of a spliced pair never pass
//! through the core, only their count (for `max-bps`, `bps-capacity` and the counters).
//!
//! A connection is, in turn:
//! 1. `Connecting` (section 5.2): the I/O layer is connecting from the relayed address
//!    ([`Event::ConnectPeer`]) and answers with [`Server::handle_peer_connected`]; the
//!    Connect request is answered then (CONNECTION-ID, or 447), or with 447 after
//!    [`CONNECT_TIMEOUT`].
//! 2. `Unbound` (sections 5.2, 5.3): connected, by Connect or by the peer (whose
//!    connection [`Server::handle_peer_connection`] admits, sending the client a
//!    ConnectionAttempt indication). A ConnectionBind must name it within
//!    [`BIND_TIMEOUT`], or it is closed and forgotten.
//! 3. `Bound` (section 5.4): spliced to a client data connection ([`Event::Splice`]);
//!    the I/O layer reports what it relays with [`Server::handle_tcp_relayed`] and a
//!    close of either side with [`Server::handle_peer_closed`].
//!
//! Every connection belongs to one allocation and ends with it ([`Event::ClosePeer`]).
//! CONNECTION-IDs are drawn from the shard's seeded generator, never sequential, and
//! each shard draws only ids of its [`ConnectionIds`] class, so the I/O layer can route a
//! ConnectionBind that reached another shard to the one that issued its id.

use super::allocation::{AllocId, FiveTuple};
use super::deadlines::Timer;
use super::error::RequestError;
use super::rate::Rate;
use super::{Event, Server};
use crate::proto::codec::{self, ResponseAttr};
use crate::proto::scan::Scan;
use crate::proto::wire::{Class, attr, method};
use crate::proto::writer::MessageWriter;
use rand::RngExt;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// RFC 6062 section 5.2: a Connect whose connection neither succeeds nor fails in this
/// time is answered 447 (the RFC asks for at least 30 seconds).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// RFC 6062 sections 5.2 and 5.3: a peer connection not bound within 30 seconds is
/// closed.
pub const BIND_TIMEOUT: Duration = Duration::from_secs(30);
/// How many ids are drawn before a Connect is refused for want of a free one.
const ID_DRAWS: usize = 16;

/// RFC 6062 section 6.2.1: names one peer connection of this server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u32);

/// Which ids a shard issues: those with `id % count == index`. The I/O layer of shard
/// `index` of `count` sends a ConnectionBind for an id of another class to its owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionIds {
    pub index: u32,
    pub count: u32,
}

impl Default for ConnectionIds {
    fn default() -> Self {
        Self { index: 0, count: 1 }
    }
}

impl ConnectionIds {
    /// The index of the shard that issued `id`.
    pub fn owner(self, id: ConnectionId) -> u32 {
        id.0 % self.count.max(1)
    }

    /// An id of this class made from a random draw (`None` for the rare draw whose
    /// class member would not fit, or 0, which clients may read as "no id").
    fn member_near(self, r: u32) -> Option<ConnectionId> {
        let count = self.count.max(1);
        let id = (r - r % count).checked_add(self.index % count)?;
        (id != 0).then_some(ConnectionId(id))
    }
}

/// The CONNECTION-ID of a ConnectionBind request, read before anything else decodes
/// it, so that the I/O layer can hand the connection to the shard that issued the id
/// ([`ConnectionIds::owner`]). `None` for anything else, or a malformed message (the
/// shard it is on answers it).
pub fn connection_bind_target(msg: &[u8]) -> Option<ConnectionId> {
    let head = crate::proto::wire::be16(msg, 0)?;
    if crate::proto::wire::split_message_type(head) != (method::CONNECTION_BIND, Class::Request) {
        return None;
    }
    let scan = crate::proto::scan::scan(msg).ok()?;
    let value = codec::first_attribute(
        msg,
        scan.integrity.unwrap_or(msg.len()),
        attr::CONNECTION_ID,
    )?;
    let id = crate::proto::wire::be32(msg, value.start).filter(|_| value.len() == 4)?;
    Some(ConnectionId(id))
}

/// Where a connection is in its life (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    Connecting { txn: [u8; 12], fingerprint: bool },
    Unbound,
    Bound { data: FiveTuple },
}

#[derive(Clone, Copy, Debug)]
pub(super) struct TcpConnection {
    pub alloc: AllocId,
    /// The peer as the client names it (the advertised form of this server's own
    /// addresses).
    pub peer: SocketAddr,
    pub state: State,
    /// The armed connect or bind deadline.
    pub expires: Option<Instant>,
}

/// Every TCP connection of the shard by id. Bounded by the allocations and
/// `max-tcp-relay-connections` each.
#[derive(Debug, Default)]
pub(super) struct Connections {
    map: HashMap<ConnectionId, TcpConnection>,
}

impl Connections {
    pub fn get(&self, id: ConnectionId) -> Option<&TcpConnection> {
        self.map.get(&id)
    }

    pub fn get_mut(&mut self, id: ConnectionId) -> Option<&mut TcpConnection> {
        self.map.get_mut(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &TcpConnection> {
        self.map.values()
    }
}

impl Server {
    /// A fresh id of this shard's class, not in use.
    fn draw_connection_id(&mut self) -> Option<ConnectionId> {
        let ids = self.cfg.connection_ids;
        for _ in 0..ID_DRAWS {
            let r: u32 = self.rng.random();
            if let Some(id) = ids.member_near(r) {
                if !self.tcp.map.contains_key(&id) {
                    return Some(id);
                }
            }
        }
        None
    }

    /// Records a new connection of allocation `alloc` to `peer` with its deadline
    /// `timeout` from now; `None` if the allocation is gone or no id is free.
    pub(super) fn open_connection(
        &mut self,
        now: Instant,
        alloc: AllocId,
        peer: SocketAddr,
        state: State,
        timeout: Duration,
    ) -> Option<ConnectionId> {
        let id = self.draw_connection_id()?;
        let a = self.table.get_mut(alloc)?;
        a.connections.push(id);
        let expires = now + timeout;
        self.tcp.map.insert(
            id,
            TcpConnection {
                alloc,
                peer,
                state,
                expires: Some(expires),
            },
        );
        self.deadlines
            .rearm(None, expires, Timer::TcpConnection(id));
        Some(id)
    }

    /// Forgets connection `id` (its deadline, its place in its allocation); with
    /// `close`, asks the I/O layer to close its sockets.
    fn forget_connection(&mut self, id: ConnectionId, close: bool) -> Option<TcpConnection> {
        let c = self.tcp.map.remove(&id)?;
        if let Some(at) = c.expires {
            self.deadlines.cancel(at, Timer::TcpConnection(id));
        }
        if let Some(a) = self.table.get_mut(c.alloc) {
            a.connections.retain(|x| *x != id);
        }
        if close {
            self.push_event(Event::ClosePeer { conn: id });
        }
        Some(c)
    }

    /// The allocation ended (RFC 6062 section 5: its connections go with it).
    pub(super) fn close_connections(&mut self, ids: &[ConnectionId]) {
        for &id in ids {
            self.forget_connection(id, true);
        }
    }

    /// The connection to `peer` this allocation has, in whatever state.
    pub(super) fn connection_to(&self, alloc: AllocId, peer: SocketAddr) -> bool {
        self.table.get(alloc).is_some_and(|a| {
            a.connections
                .iter()
                .any(|id| self.tcp.get(*id).is_some_and(|c| c.peer == peer))
        })
    }

    /// The I/O layer's answer to [`Event::ConnectPeer`]: the Connect request is
    /// answered with CONNECTION-ID and the 30 seconds for a ConnectionBind start, or it
    /// is answered 447 and the connection forgotten (RFC 6062 section 5.2).
    pub fn handle_peer_connected(&mut self, now: Instant, conn: ConnectionId, ok: bool) {
        let Some(c) = self.tcp.get(conn).copied() else {
            return;
        };
        let State::Connecting { txn, fingerprint } = c.state else {
            return;
        };
        let Some(a) = self.table.get(c.alloc) else {
            self.forget_connection(conn, false);
            return;
        };
        let (tuple, key) = (a.five_tuple, a.key);
        let response = if ok {
            let expires = now + BIND_TIMEOUT;
            if let Some(c) = self.tcp.get_mut(conn) {
                c.state = State::Unbound;
                let old = c.expires.replace(expires);
                self.deadlines
                    .rearm(old, expires, Timer::TcpConnection(conn));
            }
            self.stats.tcp_connected += 1;
            codec::encode(
                method::CONNECT,
                true,
                &txn,
                &[ResponseAttr::ConnectionId(conn.0)],
                Some(&key),
                fingerprint,
            )
        } else {
            self.forget_connection(conn, false);
            self.connect_failed(now, tuple, txn, fingerprint, &key)
        };
        self.send_to_client(tuple, response);
    }

    /// The 447 answer to a Connect whose connection failed or timed out.
    fn connect_failed(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        txn: [u8; 12],
        fingerprint: bool,
        key: &[u8; 16],
    ) -> Option<Vec<u8>> {
        self.stats.tcp_connect_failed += 1;
        let scan = Scan::for_reply(method::CONNECT, txn, fingerprint);
        self.error_response(
            now,
            &tuple,
            &scan,
            RequestError::ConnectionTimeoutOrFailure,
            Some(key),
        )
    }

    /// A peer connected to `relay`'s relayed address from `from` (RFC 6062 section 5.3).
    /// Admitted only with a permission for the peer's IP, within the peer policy, with
    /// no connection to the same peer yet and within `max-tcp-relay-connections`: then
    /// the client gets a ConnectionAttempt indication and the id is returned, with 30
    /// seconds for a ConnectionBind. `None`: the I/O layer closes the connection at once.
    pub fn handle_peer_connection(
        &mut self,
        now: Instant,
        relay: AllocId,
        from: SocketAddr,
    ) -> Option<ConnectionId> {
        let peer = self.peer_as_advertised(from);
        let admitted = self.table.get(relay).is_some_and(|a| {
            a.tcp
                && a.pending.is_none()
                && a.has_permission(peer.ip())
                && a.connections.len() < self.cfg.max_tcp_relay_connections
        }) && !self.connection_to(relay, peer)
            && self.peer_allowed(peer).is_some();
        let id = admitted
            .then(|| self.open_connection(now, relay, peer, State::Unbound, BIND_TIMEOUT))
            .flatten();
        let Some(id) = id else {
            self.stats.tcp_refused += 1;
            return None;
        };
        self.stats.tcp_accepted += 1;
        let tuple = self.table.get(relay)?.five_tuple;
        let txn = self.next_indication_txn();
        let indication = MessageWriter::new(method::CONNECTION_ATTEMPT, Class::Indication, &txn)
            .attr(attr::CONNECTION_ID, &id.0.to_be_bytes())
            .xor_address(attr::XOR_PEER_ADDRESS, peer)
            .seal(None, true);
        self.send_to_client(tuple, indication);
        Some(id)
    }

    /// Either side of connection `conn` closed (RFC 6062 section 5.5: the I/O layer
    /// closes the other). A connection still connecting counts as failed.
    pub fn handle_peer_closed(&mut self, now: Instant, conn: ConnectionId) {
        match self.tcp.get(conn).map(|c| c.state) {
            Some(State::Connecting { .. }) => self.handle_peer_connected(now, conn, false),
            Some(_) => {
                self.forget_connection(conn, false);
            }
            None => {}
        }
    }

    /// `bytes` relayed on bound connection `conn`, client to peer (`up`) or back: they
    /// count on the allocation and in the metrics, and against `max-bps` and the shard's
    /// `bps-capacity` share. Returns how long the I/O layer must stop reading that
    /// direction to stay within them (bytes of a stream are delayed, never dropped).
    pub fn handle_tcp_relayed(
        &mut self,
        now: Instant,
        conn: ConnectionId,
        up: bool,
        bytes: usize,
    ) -> Option<Duration> {
        let alloc = self.tcp.get(conn)?.alloc;
        let (per_alloc, total) = (self.cfg.max_bps, self.cfg.bps_capacity);
        let a = self.table.get_mut(alloc)?;
        let n = bytes as u64;
        self.stats.tcp_relayed[usize::from(!up)] += n;
        // Each read counts as one packet of the allocation's usage record.
        a.traffic[usize::from(!up)].count(n);
        let (bucket, shard) = if up {
            (&mut a.bw_up, &mut self.total_up)
        } else {
            (&mut a.bw_down, &mut self.total_down)
        };
        let mine = bucket.charge(Rate::new(per_alloc, per_alloc), n, now);
        let all = shard.charge(Rate::new(total, total), n, now);
        mine.max(all)
    }

    /// A connect or bind deadline passed: 447 for a Connect still connecting, and the
    /// connection closed (RFC 6062 sections 5.2 and 5.3).
    pub(super) fn expire_connection(&mut self, now: Instant, id: ConnectionId) {
        let Some(c) = self.tcp.get_mut(id) else {
            return;
        };
        c.expires = None;
        let c = *c;
        self.forget_connection(id, true);
        match c.state {
            State::Connecting { txn, fingerprint } => {
                if let Some(a) = self.table.get(c.alloc) {
                    let (tuple, key) = (a.five_tuple, a.key);
                    let response = self.connect_failed(now, tuple, txn, fingerprint, &key);
                    self.send_to_client(tuple, response);
                }
            }
            State::Unbound => self.stats.tcp_unbound_expired += 1,
            State::Bound { .. } => {}
        }
    }

    /// Connections connecting or waiting for a ConnectionBind, and bound ones.
    pub(super) fn connection_gauges(&self) -> (u64, u64) {
        let bound = self
            .tcp
            .iter()
            .filter(|c| matches!(c.state, State::Bound { .. }))
            .count() as u64;
        (self.tcp.map.len() as u64 - bound, bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_bind_names_its_target_and_nothing_else_does() {
        let bind = |method: u16, value: &[u8]| {
            MessageWriter::new(method, Class::Request, &[3; 12])
                .attr(attr::CONNECTION_ID, value)
                .seal(Some(b"k"), true)
                .unwrap()
        };
        let id = 0x0102_0304u32.to_be_bytes();
        assert_eq!(
            connection_bind_target(&bind(method::CONNECTION_BIND, &id)),
            Some(ConnectionId(0x0102_0304))
        );
        assert_eq!(connection_bind_target(&bind(method::CONNECT, &id)), None);
        assert_eq!(
            connection_bind_target(&bind(method::CONNECTION_BIND, &[1, 2])),
            None
        );
        assert_eq!(connection_bind_target(&[0, 0x0B]), None);
        assert_eq!(connection_bind_target(&[]), None);
    }

    #[test]
    fn ids_stay_in_their_class_and_are_never_zero() {
        for count in [1u32, 2, 3, 7, 256] {
            for index in 0..count {
                let ids = ConnectionIds { index, count };
                for r in [0u32, 1, 5, 1 << 20, u32::MAX - 1, u32::MAX] {
                    if let Some(id) = ids.member_near(r) {
                        assert_ne!(id.0, 0);
                        assert_eq!(ids.owner(id), index, "{r} in {index}/{count}");
                    }
                }
            }
        }
        let one = ConnectionIds::default();
        assert_eq!(one.member_near(0), None);
        assert_eq!(one.member_near(77), Some(ConnectionId(77)));
    }
}
