//! The sans-IO core driven in virtual time, as quinn-proto's `tests/util.rs` `Pair`
//! drives its endpoints: one `Server`, a clock that only moves when told, and the I/O
//! driver's side of the event protocol played here, so that a test is a sequence of
//! inputs and checks on every output. No sockets, no sleeping, no runtime.
//!
//! After every input the harness does what the driver does: it answers each `BindRelay`
//! and `ListenRelay` (bound, or not when `bind_ok` is false), answers each `ConnectPeer`
//! as `connect_answer` says (or leaves it connecting), records each `CloseRelay`,
//! `Splice` and `ClosePeer`, and drains the transmits, which the input functions return. Simulated clients are [`Client`]s (a
//! 5-tuple with long-term credentials and the last NONCE); peers are addresses whose
//! datagrams arrive on a relay through [`Harness::peer_datagram`].
//!
//! Invariants checked on every call, so every user (tests, benchmarks, the fuzz target)
//! checks them: a request is answered exactly once and never relayed, data is never
//! answered, client data is relayed only to peers and peer data only to clients, an
//! output range lies inside its buffer, timers send nothing but the 447 answers of
//! Connects that timed out, no due deadline is left unhandled, and TCP peer connections
//! are spliced and closed only while the driver has them open.
//!
//! Only ferroturn, ferroturn-core and std: `fuzz/fuzz_targets/core_sequence.rs` and
//! `benches/fast_path.rs` include this file with `#[path]`.
#![allow(dead_code)]

#[path = "wire.rs"]
pub mod wire;

use self::wire::{build, error, error_code, success, verifies};
use ferroturn::client::codec::{self as client_codec, RequestAttr, Response};
use ferroturn::config::Config;
use ferroturn::credentials::rest_credentials;
use ferroturn::state::LocalState;
use ferroturn_core::proto::data;
use ferroturn_core::proto::integrity;
use ferroturn_core::proto::wire::{Class, method};
use ferroturn_core::proto::writer::MessageWriter;
use ferroturn_core::server::{
    AllocId, ConnectionId, Deletion, Event, FiveTuple, Handoff, LeaseAnswer, OffloadChannel, Path,
    Secrets, Server, SessionFilter, SharedState, Transmit, Transport, Usage,
};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const REALM: &str = "virtual.test";
/// The wall clock at the base instant (unix seconds), so REST expiries are exact.
pub const UNIX0: u64 = 1_700_000_000;

/// The base configuration: two REST secrets (a rotation), two static users.
const BASE: &str = "listening-ip = [\"127.0.0.1\"]\n\
                    realm = \"virtual.test\"\n\
                    static-auth-secret = [\"old-secret\", \"new-secret\"]\n\
                    user = [\"alice:alice-pw\", \"bob:bob-pw\"]\n";

/// The channel [`Harness::relay_ready`] binds to [`CHANNEL_PEER`].
pub const RELAY_CHANNEL: u16 = 0x4001;
pub const CHANNEL_PEER: &str = "198.51.100.2:6000";
/// The peer [`Harness::relay_ready`] installs a permission for.
pub const PERMITTED_PEER: &str = "198.51.100.3:7000";

/// A client 5-tuple over UDP on listener 0.
pub fn udp(client: &str) -> FiveTuple {
    FiveTuple {
        client: wire::addr(client),
        listener: 0,
        transport: Transport::Udp,
    }
}

/// A client 5-tuple over TCP (or TLS: the core sees the same) on stream listener 0.
pub fn tcp(client: &str) -> FiveTuple {
    FiveTuple {
        client: wire::addr(client),
        listener: 0,
        transport: Transport::Tcp,
    }
}

/// Where the server sends what is meant for the client of `tuple`.
pub fn to_client(tuple: FiveTuple) -> Path {
    Path::Client {
        listener: tuple.listener,
        client: tuple.client,
        transport: tuple.transport,
    }
}

/// One server, a virtual clock and the I/O driver's side of the event protocol.
pub struct Harness {
    pub server: Server,
    pub t0: Instant,
    pub now: Instant,
    /// How the next `BindRelay` events are answered.
    pub bind_ok: bool,
    /// Binds at these addresses fail whatever `bind_ok` says (a host without IPv6, say).
    pub bind_refused: fn(SocketAddr) -> bool,
    /// Every `BindRelay` seen, answered or not.
    pub binds: Vec<(AllocId, SocketAddr)>,
    /// Whether each of them asked for DF (RFC 8656 section 18.9).
    pub binds_dont_fragment: Vec<bool>,
    /// Every `CloseRelay` seen.
    pub closed: Vec<AllocId>,
    /// The kernel fast path as the events leave it: the channels installed now.
    pub kernel: std::collections::BTreeMap<(AllocId, u16), OffloadChannel>,
    /// Every offload event, in order (`true`: install).
    pub offload_log: Vec<(bool, OffloadChannel)>,
    /// RFC 6062: every `ListenRelay` seen (TCP allocations; also in `binds`).
    pub tcp_relays: Vec<AllocId>,
    /// How `ConnectPeer` is answered: connected, failed, or (`None`) not yet.
    pub connect_answer: Option<bool>,
    /// Every `ConnectPeer` seen: the connection, its relay, from where and to where.
    pub connects: Vec<(ConnectionId, AllocId, SocketAddr, SocketAddr)>,
    /// Every `Splice` and `ClosePeer` seen.
    pub splices: Vec<(ConnectionId, FiveTuple)>,
    pub peer_closes: Vec<ConnectionId>,
    /// The peer connections the driver has open (connecting, accepted or connected).
    pub open_peers: BTreeSet<ConnectionId>,
    /// Answers a timer sent (447 to Connects that timed out).
    pub late: Vec<Transmit>,
    /// Every `AcquireLease` seen: allocation, lease, user, quota.
    pub lease_asks: Vec<(AllocId, u64, String, u32)>,
    /// How lease asks are answered at once; `None`: left for the test to answer.
    pub lease_answer: Option<LeaseAnswer>,
    /// Every `ReleaseLease` seen.
    pub lease_releases: Vec<u64>,
    /// Every usage record (`Ended`), in order.
    pub ended: Vec<Usage>,
    txn_counter: u32,
}

impl Harness {
    /// A server from the base configuration plus `extra` TOML keys.
    pub fn new(extra: &str) -> Self {
        Self::with_config(&format!("{BASE}{extra}\n"))
    }

    /// A server from the base configuration plus `extra`, driven as by a driver whose
    /// kernel fast path runs (bound UDP channels are offloaded).
    pub fn with_offload(extra: &str) -> Self {
        Self::build(&format!("{BASE}{extra}\n"), true)
    }

    /// A server from exactly this configuration, with fixed secrets (runs repeat).
    pub fn with_config(toml: &str) -> Self {
        Self::build(toml, false)
    }

    fn build(toml: &str, kernel_offload: bool) -> Self {
        Self::build_shard(toml, kernel_offload, Arc::new(LocalState::default()), 0, 1)
    }

    /// Two shards of one server (RFC 8016 moves between them): one shared state and one
    /// nonce key, seeds of their own, shard indices 0 and 1. Their handoffs are carried
    /// by the test ([`Harness::handoffs`], [`Harness::deliver`]).
    pub fn pair(extra: &str) -> (Self, Self) {
        let toml = format!("{BASE}{extra}\n");
        let shared: Arc<dyn SharedState> = Arc::new(LocalState::default());
        let first = Self::build_shard(&toml, false, shared.clone(), 0, 2);
        let mut second = Self::build_shard(&toml, false, shared, 1, 2);
        // One clock for both.
        second.t0 = first.t0;
        second.now = first.now;
        second.server.set_wall_clock(first.t0, UNIX0);
        (first, second)
    }

    fn build_shard(
        toml: &str,
        kernel_offload: bool,
        shared: Arc<dyn SharedState>,
        shard: u8,
        shards: u16,
    ) -> Self {
        let mut config = Config::from_toml_str(toml).expect("test configuration is valid");
        config.server.kernel_offload = kernel_offload;
        let t0 = Instant::now();
        let mut server = Server::new(
            config.server,
            shared,
            Secrets {
                nonce_key: [9; 32],
                seed: [7 + shard; 32],
            },
            t0,
            UNIX0,
        );
        server.set_shard(shard, shards);
        Self {
            server,
            t0,
            now: t0,
            bind_ok: true,
            bind_refused: |_| false,
            binds: Vec::new(),
            binds_dont_fragment: Vec::new(),
            lease_asks: Vec::new(),
            lease_answer: Some(LeaseAnswer::Granted),
            lease_releases: Vec::new(),
            closed: Vec::new(),
            kernel: std::collections::BTreeMap::new(),
            offload_log: Vec::new(),
            tcp_relays: Vec::new(),
            connect_answer: Some(true),
            connects: Vec::new(),
            splices: Vec::new(),
            peer_closes: Vec::new(),
            open_peers: BTreeSet::new(),
            late: Vec::new(),
            ended: Vec::new(),
            txn_counter: 0,
        }
    }

    /// Applies the base configuration plus `extra` as a reload does.
    pub fn reconfigure(&mut self, extra: &str) {
        let config = Config::from_toml_str(&format!("{BASE}{extra}\n"))
            .expect("test configuration is valid");
        self.server.reconfigure(config.server);
        self.drain_events();
    }

    /// What the server hands other shards, with each one's shard index.
    pub fn handoffs(&mut self) -> Vec<(u8, Handoff)> {
        std::iter::from_fn(|| self.server.poll_handoff()).collect()
    }

    /// A handoff from another shard, carried out as the driver does; returns the id of
    /// an allocation adopted here and the transmits it queued.
    pub fn deliver(&mut self, handoff: Handoff) -> (Option<AllocId>, Vec<Transmit>) {
        let adopted = self.server.handle_handoff(self.now, handoff);
        self.drain_events();
        (adopted, self.drain_transmits())
    }

    pub fn at(&self, secs: u64) -> Instant {
        self.t0 + Duration::from_secs(secs)
    }

    pub fn next_txn(&mut self) -> [u8; 12] {
        self.txn_counter += 1;
        let mut txn = [0xA5; 12];
        txn[8..].copy_from_slice(&self.txn_counter.to_be_bytes());
        txn
    }

    /// Answers a lease ask left open (`lease_answer` None); what the server sends then.
    pub fn answer_lease(
        &mut self,
        relay: AllocId,
        lease: u64,
        answer: LeaseAnswer,
    ) -> Vec<Transmit> {
        self.server.handle_lease(self.now, relay, lease, answer);
        self.drain_events();
        self.drain_transmits()
    }

    /// The relay named by the last `BindRelay`.
    pub fn last_relay(&self) -> Option<AllocId> {
        self.binds.last().map(|(relay, _)| *relay)
    }

    /// Answers relay binds (which may ask for another bind) and records closes.
    fn drain_events(&mut self) {
        while let Some(event) = self.server.poll_event() {
            match event {
                Event::BindRelay {
                    relay,
                    local,
                    dont_fragment,
                } => {
                    self.binds.push((relay, local));
                    self.binds_dont_fragment.push(dont_fragment);
                    let ok = self.bind_ok && !(self.bind_refused)(local);
                    self.server.handle_relay_bound(self.now, relay, ok);
                }
                Event::ListenRelay { relay, local } => {
                    self.binds.push((relay, local));
                    self.binds_dont_fragment.push(false);
                    self.tcp_relays.push(relay);
                    let ok = self.bind_ok && !(self.bind_refused)(local);
                    self.server.handle_relay_bound(self.now, relay, ok);
                }
                Event::ConnectPeer {
                    relay,
                    conn,
                    local,
                    peer,
                } => {
                    assert!(
                        self.tcp_relays.contains(&relay),
                        "a connect from a UDP relay"
                    );
                    assert!(self.open_peers.insert(conn), "{conn:?} reused");
                    self.connects.push((conn, relay, local, peer));
                    if let Some(ok) = self.connect_answer {
                        if !ok {
                            self.open_peers.remove(&conn);
                        }
                        self.server.handle_peer_connected(self.now, conn, ok);
                    }
                }
                Event::Splice { conn, client } => {
                    assert!(
                        self.open_peers.contains(&conn),
                        "spliced {conn:?}, not open"
                    );
                    self.splices.push((conn, client));
                }
                Event::ClosePeer { conn } => {
                    assert!(self.open_peers.remove(&conn), "closed {conn:?}, not open");
                    self.peer_closes.push(conn);
                }
                Event::CloseRelay { relay } => {
                    // The allocation's channels left the kernel before its socket went.
                    assert!(
                        !self.kernel.keys().any(|(r, _)| *r == relay),
                        "relay {relay:?} closed with channels still in the kernel"
                    );
                    self.closed.push(relay)
                }
                Event::Offload(ch) => {
                    assert_eq!(ch.tuple.transport, Transport::Udp, "only UDP is offloaded");
                    self.kernel.insert((ch.relay, ch.channel), ch);
                    self.offload_log.push((true, ch));
                }
                Event::Unoffload(ch) => {
                    assert!(
                        self.kernel.remove(&(ch.relay, ch.channel)).is_some(),
                        "removed a channel the kernel does not have: {ch:?}"
                    );
                    self.offload_log.push((false, ch));
                }
                Event::AcquireLease {
                    relay,
                    lease,
                    user,
                    quota,
                } => {
                    self.lease_asks.push((relay, lease, user, quota));
                    if let Some(answer) = self.lease_answer {
                        self.server.handle_lease(self.now, relay, lease, answer);
                    }
                }
                Event::ReleaseLease { lease } => self.lease_releases.push(lease),
                Event::Ended(usage) => {
                    // One record per allocation, while its relay is still open (the
                    // driver reads the kernel's counters from it), after its channels
                    // left the kernel.
                    assert!(
                        !self.closed.contains(&usage.id)
                            && !self.ended.iter().any(|u| u.id == usage.id),
                        "a second record, or one after its relay closed: {usage:?}"
                    );
                    assert!(
                        !self.kernel.keys().any(|(r, _)| *r == usage.id),
                        "a record while its channels are in the kernel"
                    );
                    self.ended.push(*usage);
                }
            }
        }
        // What the core says it offloaded is exactly what the kernel was told.
        let mut said: Vec<(AllocId, u16)> = self
            .server
            .offloaded_channels()
            .map(|(relay, _, channel)| (relay, channel))
            .collect();
        said.sort();
        let told: Vec<(AllocId, u16)> = self.kernel.keys().copied().collect();
        assert_eq!(said, told, "the core and the kernel table disagree");
    }

    fn drain_transmits(&mut self) -> Vec<Transmit> {
        std::iter::from_fn(|| self.server.poll_transmit()).collect()
    }

    // -----------------------------------------------------------------------------
    // Time.

    /// Moves the clock to `t0 + secs` the way a punctual driver does: wake at every
    /// `poll_timeout` on the way, handle it, drain the outputs.
    pub fn advance_to(&mut self, secs: u64) {
        let target = self.at(secs);
        assert!(target >= self.now, "virtual time only moves forward");
        while let Some(deadline) = self.server.poll_timeout() {
            if deadline > target {
                break;
            }
            assert!(deadline > self.now, "a handled deadline was reported again");
            self.now = deadline;
            self.server.handle_timeout(deadline);
            self.settle();
        }
        self.now = target;
        self.server.handle_timeout(target);
        self.settle();
    }

    /// Moves the clock `by` ahead in one step, the way a late driver does: one
    /// `handle_timeout` for every deadline that passed meanwhile.
    pub fn jump(&mut self, by: Duration) {
        self.now += by;
        self.server.handle_timeout(self.now);
        self.settle();
    }

    /// An operator's delete (admin API), carried out as the driver does: the relays it
    /// closes, nothing sent.
    pub fn delete_sessions(&mut self, filter: &SessionFilter) -> usize {
        self.end_sessions(filter, Deletion::ByOperator)
    }

    /// Ends the allocations `filter` names for `why` (a revocation, the server
    /// stopping), as the driver does.
    pub fn end_sessions(&mut self, filter: &SessionFilter, why: Deletion) -> usize {
        let n = self.server.delete_sessions(self.now, filter, why);
        self.settle();
        n
    }

    /// After `handle_timeout(now)` (or an operator's delete): binds and closes answered,
    /// nothing sent but 447 answers to Connects that timed out (kept in `late`), nothing
    /// due left behind.
    fn settle(&mut self) {
        self.drain_events();
        for t in self.drain_transmits() {
            assert_eq!(
                (wire::class_of(&t.payload), error_code(&t.payload)),
                ((method::CONNECT, Class::Error), Some(447)),
                "timers send nothing but 447 to a Connect"
            );
            self.late.push(t);
        }
        if let Some(next) = self.server.poll_timeout() {
            assert!(
                next > self.now,
                "deadline {:?} left behind at {:?}",
                next - self.t0,
                self.now - self.t0
            );
        }
    }

    // -----------------------------------------------------------------------------
    // Datagrams.

    /// Feeds a client datagram; returns what was relayed at once (where to, which bytes)
    /// and the control transmits queued.
    pub fn send(
        &mut self,
        tuple: FiveTuple,
        msg: &[u8],
    ) -> (Option<(Path, Vec<u8>)>, Vec<Transmit>) {
        let mut buf = msg.to_vec();
        let relayed = self
            .server
            .handle_client_datagram(self.now, tuple, &mut buf)
            .map(|t| {
                assert!(
                    matches!(t.path, Path::Peer { .. }),
                    "client data relayed to {:?}",
                    t.path
                );
                (t.path, within(&buf, t.range).to_vec())
            });
        self.drain_events();
        (relayed, self.drain_transmits())
    }

    /// Sends a request and returns the one response to its client.
    pub fn exchange(&mut self, tuple: FiveTuple, msg: &[u8]) -> Vec<u8> {
        let (relayed, mut out) = self.send(tuple, msg);
        assert!(relayed.is_none(), "a request is never relayed");
        assert_eq!(out.len(), 1, "exactly one response");
        let t = out.remove(0);
        assert_eq!(t.path, to_client(tuple));
        assert_eq!(
            &t.payload[8..20],
            &msg[8..20],
            "response echoes the transaction"
        );
        t.payload
    }

    /// A peer connects from `from` to TCP relay `relay` (RFC 6062 section 5.3): the id
    /// the core admits it under (then the driver holds it open), and what was sent (the
    /// ConnectionAttempt indication).
    pub fn peer_connects(
        &mut self,
        relay: AllocId,
        from: SocketAddr,
    ) -> (Option<ConnectionId>, Vec<Transmit>) {
        let id = self.server.handle_peer_connection(self.now, relay, from);
        if let Some(id) = id {
            assert!(self.open_peers.insert(id), "{id:?} reused");
        }
        self.drain_events();
        (id, self.drain_transmits())
    }

    /// Answers a `ConnectPeer` left connecting (`connect_answer` None); returns what was
    /// sent (the Connect's answer).
    pub fn peer_connected(&mut self, conn: ConnectionId, ok: bool) -> Vec<Transmit> {
        if !ok {
            self.open_peers.remove(&conn);
        }
        self.server.handle_peer_connected(self.now, conn, ok);
        self.drain_events();
        self.drain_transmits()
    }

    /// The driver saw one side of peer connection `conn` close and closed the other.
    pub fn peer_closed(&mut self, conn: ConnectionId) -> Vec<Transmit> {
        self.open_peers.remove(&conn);
        self.server.handle_peer_closed(self.now, conn);
        self.drain_events();
        self.drain_transmits()
    }

    /// Feeds a client datagram that must produce no response; returns what was relayed.
    pub fn relay_from_client(&mut self, tuple: FiveTuple, msg: &[u8]) -> Option<(Path, Vec<u8>)> {
        let (relayed, out) = self.send(tuple, msg);
        assert!(out.is_empty(), "data is never answered");
        relayed
    }

    /// A datagram from `from` arriving on `relay`'s socket, received the way the driver
    /// does: HEADROOM free bytes in front of the payload and TAILROOM behind it.
    pub fn peer_datagram(
        &mut self,
        relay: AllocId,
        from: SocketAddr,
        payload: &[u8],
    ) -> Option<(Path, Vec<u8>)> {
        let mut buf = vec![0u8; data::HEADROOM + payload.len() + data::TAILROOM];
        let range = data::HEADROOM..data::HEADROOM + payload.len();
        buf[range.clone()].copy_from_slice(payload);
        let out = self
            .server
            .handle_peer_datagram(self.now, relay, from, &mut buf, range)
            .map(|t| {
                assert!(
                    matches!(t.path, Path::Client { .. }),
                    "peer data relayed to {:?}",
                    t.path
                );
                (t.path, within(&buf, t.range).to_vec())
            });
        self.drain_events();
        assert!(
            self.drain_transmits().is_empty(),
            "peer data is never answered"
        );
        out
    }

    // -----------------------------------------------------------------------------
    // Requests of a client with long-term credentials.

    /// Gets a NONCE the way a client does: the request without credentials, answered
    /// with 401, REALM and NONCE (RFC 8489 section 9.2.4).
    pub fn challenge(&mut self, c: &mut Client, method: u16, attrs: &[RequestAttr<'_>]) {
        let txn = self.next_txn();
        let msg = build(method, &txn, attrs, &[], None, true);
        let r = error(&self.exchange(c.tuple, &msg), method, 401);
        assert_eq!(r.realm.as_deref(), Some(REALM));
        c.nonce = Some(r.nonce.expect("a 401 challenge carries a NONCE"));
    }

    /// An authenticated request with the 401 dance first if the client has no nonce, and
    /// one retry with the fresh nonce after a 438 (RFC 8489 section 9.2.5).
    pub fn request_with(
        &mut self,
        c: &mut Client,
        method: u16,
        attrs: &[RequestAttr<'_>],
        extra: &[(u16, &[u8])],
        fingerprint: bool,
    ) -> Vec<u8> {
        if c.nonce.is_none() {
            self.challenge(c, method, attrs);
        }
        for _ in 0..2 {
            let txn = self.next_txn();
            let msg = c.signed(&txn, method, attrs, extra, fingerprint);
            let response = self.exchange(c.tuple, &msg);
            if error_code(&response) != Some(438) {
                return response;
            }
            c.nonce = client_codec::decode_response(&response).and_then(|r| r.nonce);
        }
        panic!("still 438 with a fresh nonce");
    }

    pub fn request(&mut self, c: &mut Client, method: u16, attrs: &[RequestAttr<'_>]) -> Vec<u8> {
        self.request_with(c, method, attrs, &[], true)
    }

    /// Allocate for UDP with `attrs` added; the raw response.
    pub fn allocate_raw(&mut self, c: &mut Client, attrs: &[RequestAttr<'_>]) -> Vec<u8> {
        let mut all = vec![RequestAttr::RequestedTransport(wire::UDP)];
        all.extend_from_slice(attrs);
        self.request(c, method::ALLOCATE, &all)
    }

    /// A successful allocation: its response and the relay the driver bound for it.
    pub fn allocate(&mut self, c: &mut Client, attrs: &[RequestAttr<'_>]) -> (Response, AllocId) {
        let raw = self.allocate_raw(c, attrs);
        let r = success(&raw, method::ALLOCATE);
        assert!(verifies(&raw, &c.key));
        let (relay, local) = *self.binds.last().expect("the allocation bound a relay");
        assert_eq!(r.xor_relayed, Some(local));
        assert_eq!(self.server.relayed_address(&c.tuple), Some(local));
        (r, relay)
    }

    /// A TCP allocation (RFC 6062 section 5.1) for a client on a TCP 5-tuple: its
    /// response and the relay the driver listens on.
    pub fn allocate_tcp(&mut self, c: &mut Client) -> (Response, AllocId) {
        let raw = self.request(
            c,
            method::ALLOCATE,
            &[RequestAttr::RequestedTransport(wire::TCP)],
        );
        let r = success(&raw, method::ALLOCATE);
        assert!(verifies(&raw, &c.key));
        let relay = *self
            .tcp_relays
            .last()
            .expect("the allocation listens on TCP");
        assert_eq!(self.last_relay(), Some(relay));
        (r, relay)
    }

    /// RFC 6062 section 5.2: Connect to `peer`; the raw answer (immediate, or after the
    /// driver's answer as `connect_answer` says).
    pub fn connect(&mut self, c: &mut Client, peer: SocketAddr) -> Vec<u8> {
        self.request(c, method::CONNECT, &[RequestAttr::XorPeerAddress(peer)])
    }

    /// RFC 6062 section 5.4: ConnectionBind for `conn` from `c` (a new connection).
    pub fn connection_bind(&mut self, c: &mut Client, conn: ConnectionId) -> Vec<u8> {
        self.request(
            c,
            method::CONNECTION_BIND,
            &[RequestAttr::ConnectionId(conn.0)],
        )
    }

    /// A successful dual allocation (RFC 8656 section 7.2, ADDITIONAL-ADDRESS-FAMILY
    /// IPv6): its response and its relay, whose last binds (one per family) are the
    /// relayed addresses the response names, IPv4 first.
    pub fn allocate_dual(&mut self, c: &mut Client) -> (Response, AllocId) {
        let raw = self.allocate_raw(
            c,
            &[RequestAttr::AdditionalFamily(
                ferroturn_core::proto::Family::V6,
            )],
        );
        let r = success(&raw, method::ALLOCATE);
        assert!(verifies(&raw, &c.key));
        let (relay, _) = *self.binds.last().expect("the allocation bound a relay");
        let mut bound: Vec<SocketAddr> = Vec::new();
        for v4 in [true, false] {
            let last = self
                .binds
                .iter()
                .rev()
                .find(|(id, local)| *id == relay && local.is_ipv4() == v4);
            bound.extend(last.map(|(_, local)| *local));
        }
        let told: Vec<SocketAddr> = r
            .xor_relayed
            .into_iter()
            .chain(r.additional_relayed)
            .collect();
        let relayed: Vec<SocketAddr> = self.server.relayed_addresses(&c.tuple).collect();
        assert_eq!(relayed, told);
        // Every family the response names was bound (a family given up on may have
        // had binds too).
        assert!(
            told.iter().all(|t| bound.contains(t)),
            "{told:?} not in {bound:?}"
        );
        (r, relay)
    }

    pub fn permit(&mut self, c: &mut Client, peer: SocketAddr) {
        let raw = self.request(
            c,
            method::CREATE_PERMISSION,
            &[RequestAttr::XorPeerAddress(peer)],
        );
        success(&raw, method::CREATE_PERMISSION);
        assert!(verifies(&raw, &c.key));
    }

    pub fn bind_channel(&mut self, c: &mut Client, number: u16, peer: SocketAddr) -> Vec<u8> {
        self.request(
            c,
            method::CHANNEL_BIND,
            &[
                RequestAttr::ChannelNumber(number),
                RequestAttr::XorPeerAddress(peer),
            ],
        )
    }

    pub fn refresh(&mut self, c: &mut Client, lifetime: Option<u32>) -> Response {
        let attrs: Vec<RequestAttr<'_>> = lifetime.map(RequestAttr::Lifetime).into_iter().collect();
        let raw = self.request(c, method::REFRESH, &attrs);
        assert!(verifies(&raw, &c.key));
        success(&raw, method::REFRESH)
    }

    /// One allocation whose relay path is ready, as quinn's `Pair::connect` makes a
    /// connection: alice allocates, binds [`RELAY_CHANNEL`] to [`CHANNEL_PEER`] and
    /// installs a permission for [`PERMITTED_PEER`]'s IP. Returns her and her relay.
    pub fn relay_ready(&mut self) -> (Client, AllocId) {
        let mut c = alice();
        let (_, relay) = self.allocate(&mut c, &[]);
        let raw = self.bind_channel(&mut c, RELAY_CHANNEL, wire::addr(CHANNEL_PEER));
        success(&raw, method::CHANNEL_BIND);
        self.permit(&mut c, wire::addr(PERMITTED_PEER));
        assert_eq!(self.server.poll_event(), None);
        (c, relay)
    }
}

/// `buf[range]`, after checking that the core returned a range inside its buffer.
fn within(buf: &[u8], range: Range<usize>) -> &[u8] {
    assert!(
        range.start <= range.end && range.end <= buf.len(),
        "{range:?} outside a {}-byte buffer",
        buf.len()
    );
    &buf[range]
}

/// A client on one 5-tuple with long-term credentials.
pub struct Client {
    pub tuple: FiveTuple,
    pub username: String,
    pub key: [u8; 16],
    pub nonce: Option<String>,
}

/// alice (a static user) from 203.0.113.10:40000.
pub fn alice() -> Client {
    Client::new("203.0.113.10:40000", "alice", "alice-pw")
}

/// alice over TCP from `client` (a control or data connection).
pub fn alice_tcp(client: &str) -> Client {
    let mut c = Client::new(client, "alice", "alice-pw");
    c.tuple = tcp(client);
    c
}

impl Client {
    pub fn new(client: &str, username: &str, password: &str) -> Self {
        Self {
            tuple: udp(client),
            username: username.to_owned(),
            key: integrity::long_term_key(username, REALM, password.as_bytes()),
            nonce: None,
        }
    }

    /// A client with TURN REST credentials for `user`, expiring at `expiry`.
    pub fn rest(client: &str, secret: &str, user: &str, expiry: u64) -> Self {
        let (username, password) = rest_credentials(secret, user, expiry, ':');
        Self::new(client, &username, &password)
    }

    /// The request with USERNAME, REALM and NONCE first and nothing sealed yet.
    pub fn unsealed(&self, txn: &[u8; 12], method: u16, attrs: &[RequestAttr<'_>]) -> Vec<u8> {
        let nonce = self.nonce.as_deref().expect("challenged first");
        let mut all = vec![
            RequestAttr::Username(&self.username),
            RequestAttr::Realm(REALM),
            RequestAttr::Nonce(nonce),
        ];
        all.extend_from_slice(attrs);
        build(method, txn, &all, &[], None, false)
    }

    /// The request sealed with this client's key; `extra` raw attributes go before
    /// MESSAGE-INTEGRITY.
    pub fn signed(
        &self,
        txn: &[u8; 12],
        method: u16,
        attrs: &[RequestAttr<'_>],
        extra: &[(u16, &[u8])],
        fingerprint: bool,
    ) -> Vec<u8> {
        let mut w = MessageWriter::resume(self.unsealed(txn, method, attrs)).expect("a header");
        for (t, v) in extra {
            w.push(*t, v);
        }
        w.seal(Some(&self.key), fingerprint).expect("fits")
    }
}
