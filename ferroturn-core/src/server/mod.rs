//! The sans-IO TURN server: one shard's allocation table and everything that decides.
//!
//! # Driving it
//! The I/O layer owns sockets, buffers and the clock. In a loop it:
//! 1. feeds inputs, each with `now`: [`Server::handle_client_datagram`] (from a listener),
//!    [`Server::handle_peer_datagram`] (from a relay socket), [`Server::handle_relay_bound`]
//!    (the answer to a [`Event::BindRelay`] or [`Event::ListenRelay`]) and
//!    [`Server::handle_timeout`]; for TCP allocations (RFC 6062, `tcp_relay`) also
//!    [`Server::handle_peer_connected`], [`Server::handle_peer_connection`],
//!    [`Server::handle_peer_closed`] and [`Server::handle_tcp_relayed`]; in a fleet
//!    [`Server::handle_lease`], and from other shards [`Server::handle_handoff`];
//! 2. sends the [`DataTransmit`] a data-path input may return at once, from its own buffer;
//! 3. drains [`Server::poll_event`] (bind or close relay sockets, open, splice or close
//!    TCP peer connections, leases, the usage records of allocations that ended),
//!    [`Server::poll_handoff`] (for other shards) and
//!    [`Server::poll_transmit`] (control messages), then sleeps until
//!    [`Server::poll_timeout`] or the next datagram.
//!
//! Nothing here reads a clock, touches a socket or depends on tokio.

pub mod admin;
mod allocate;
pub mod allocation;
mod auth;
mod channel_bind;
mod connect;
mod connection_bind;
mod deadlines;
pub mod error;
pub mod handoff;
pub mod lease;
mod limiter;
mod log_limit;
pub mod mobility;
pub mod offload;
mod permission;
pub mod policy;
pub mod ports;
pub mod rate;
mod refresh;
mod relay;
mod request;
mod reservation;
pub mod shared;
pub mod stats;
pub mod tcp_relay;
pub mod usage;

pub use crate::auth::AuthFailure;
pub use admin::{Session, SessionFilter};
pub use allocation::{AllocId, FiveTuple, ListenerId, Transport};
pub use error::RequestError;
pub use handoff::{Handoff, MoveRequest, MovedAllocation};
pub use lease::LeaseAnswer;
pub use offload::OffloadChannel;
pub use policy::{IpRange, IpRangeError, PeerPolicy};
pub use shared::{QuotaError, Reservation, SharedState};
pub use stats::{Gauges, Stats};
pub use tcp_relay::{ConnectionId, ConnectionIds};
pub use usage::{Deletion, Usage};

use crate::auth::{Credentials, NonceKeys, Nonces, Tickets};
use crate::proto::codec::{self, ResponseAttr};
use crate::proto::data;
use crate::proto::scan::{self, Scan, ScanError};
use crate::proto::wire::{Class, method};
use allocation::Table;
use deadlines::{Deadlines, Timer};
use ports::PortPool;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A relay address: where relay sockets are bound, and what clients are told
/// (`external-ip` for a server behind NAT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayAddress {
    pub local: IpAddr,
    pub advertised: IpAddr,
}

/// The core's typed configuration.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub credentials: Credentials,
    pub nonce_lifetime: Duration,
    /// `nonce-secret`: keys shared by a fleet, so a nonce from one node is good at every
    /// node (the first signs, every one verifies). None: the random key of [`Secrets`].
    pub nonce_keys: Option<NonceKeys>,
    pub relay_v4: Option<RelayAddress>,
    pub relay_v6: Option<RelayAddress>,
    pub min_port: u16,
    pub max_port: u16,
    pub default_lifetime: Duration,
    pub max_lifetime: Duration,
    pub permission_lifetime: Duration,
    pub channel_lifetime: Duration,
    pub policy: PeerPolicy,
    /// Allocations per user and in total (0 = unlimited).
    pub user_quota: u32,
    pub total_quota: u32,
    pub max_permissions: usize,
    pub max_channels: usize,
    /// Refuse expired REST usernames on requests for existing allocations too.
    pub strict_expiry: bool,
    /// Answers to unauthenticated requests over UDP not paid for by earned credit, per
    /// second per source IP (bursts of twice that); 0 = unlimited (see `limiter`).
    pub unauthenticated_rate: u32,
    /// The same, per second in total (this shard's share); 0 = unlimited.
    pub unauthenticated_total_rate: u32,
    /// The most credit (bytes of answers) one address earns with authenticated
    /// requests; 0 = none.
    pub unauthenticated_credit: u32,
    /// Relayed bytes per second per allocation, each direction (0 = unlimited).
    pub max_bps: u64,
    /// Relayed bytes per second of this shard, each direction (0 = unlimited). The I/O
    /// layer gives each shard its share of `bps-capacity`.
    pub bps_capacity: u64,
    /// New peer addresses (permissions for an IP not yet permitted) per second per
    /// allocation, in bursts of twice that (0 = unlimited).
    pub new_peer_rate: u32,
    /// Where a draining server sends new allocations (300 Try Alternate); without it
    /// they get 508.
    pub alternate_server: Option<SocketAddr>,
    /// The kernel fast path is running: bound UDP channels are handed to it
    /// ([`Event::Offload`]). The driver sets this when the program is loaded.
    pub kernel_offload: bool,
    /// The relay's family when an Allocate names none.
    pub default_family: DefaultFamily,
    /// TCP allocations (RFC 6062) are served; `no-tcp-relay` turns them off (442).
    pub tcp_relay: bool,
    /// TCP peer connections per TCP allocation, connecting, waiting for their
    /// ConnectionBind or bound.
    pub max_tcp_relay_connections: usize,
    /// The CONNECTION-IDs this shard issues (set by the driver per shard).
    pub connection_ids: ConnectionIds,
    /// `user-quota` holds across a fleet: each allocation takes a lease in the shared
    /// store ([`Event::AcquireLease`]) before its relay is bound.
    pub fleet_quota: bool,
    /// RFC 8016 mobility (coturn's `mobility`): MOBILITY-TICKETs for the Allocates that
    /// ask, and moves of their allocations to a new 5-tuple. Off: 405.
    pub mobility: bool,
}

/// `allocation-default-address-family` (coturn's name): the relay's family for an
/// Allocate without REQUESTED-ADDRESS-FAMILY. RFC 8656 section 7.2 says IPv4; `Keep`
/// gives a client the family it came over, so browsers on IPv6 get IPv6 relay
/// candidates. Either way a family without a relay address falls back to the other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DefaultFamily {
    #[default]
    V4,
    V6,
    Keep,
}

/// The secrets a server starts with. The caller draws them from the OS CSPRNG at start-up
/// (the core never asks the operating system for randomness).
#[derive(Clone)]
pub struct Secrets {
    /// Key of the stateless nonces, the same in every shard so that a nonce issued by one
    /// is accepted by all.
    pub nonce_key: [u8; 32],
    /// Seed of this shard's own random choices: relay ports, indication transaction ids,
    /// the decoy key for unknown users, the rate limiter's bucket hash.
    pub seed: [u8; 32],
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(..)")
    }
}

/// Where a datagram goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// To the client of a 5-tuple, through its listener.
    Client {
        listener: ListenerId,
        client: SocketAddr,
        transport: Transport,
    },
    /// To a peer, through the allocation's relay socket of the peer's family (a dual
    /// allocation has one of each).
    Peer { relay: AllocId, peer: SocketAddr },
}

/// A control message to send (responses are rare; they own their bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub path: Path,
    pub payload: Vec<u8>,
}

/// A relayed datagram: `range` of the caller's own buffer goes to `path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataTransmit {
    pub path: Path,
    pub range: Range<usize>,
}

/// Requests to the I/O layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Bind a UDP socket at `local` for `relay`, then call [`Server::handle_relay_bound`].
    /// `dont_fragment`: set DF on what the socket sends (RFC 8656 section 18.9); a
    /// socket that cannot is a failed bind. A dual allocation asks twice, for its IPv4
    /// socket and then, after that answer, its IPv6 one; an allocation has at most one
    /// bind outstanding and at most one socket per family.
    BindRelay {
        relay: AllocId,
        local: SocketAddr,
        dont_fragment: bool,
    },
    /// Listen on TCP at `local` for `relay`, a TCP allocation (RFC 6062 section 5.1:
    /// SO_REUSEADDR, so that connections to peers can leave from the same address),
    /// then call [`Server::handle_relay_bound`]. A TCP allocation has one relay.
    ListenRelay { relay: AllocId, local: SocketAddr },
    /// The allocation is gone: close its relay sockets (both of a dual allocation, the
    /// listening socket of a TCP one).
    CloseRelay { relay: AllocId },
    /// RFC 6062 section 5.2: open a TCP connection from `local` (the relay's address,
    /// shared with its listening socket) to `peer`, then call
    /// [`Server::handle_peer_connected`] with how it went.
    ConnectPeer {
        relay: AllocId,
        conn: ConnectionId,
        local: SocketAddr,
        peer: SocketAddr,
    },
    /// RFC 6062 section 5.4: the client connection `client` is now the data connection
    /// of peer connection `conn`. Relay their bytes as they are, both ways, from the
    /// byte after the ConnectionBind request on, and toward the client only after the
    /// ConnectionBind response queued with this event.
    Splice {
        conn: ConnectionId,
        client: FiveTuple,
    },
    /// Close peer connection `conn`, and its data connection if it has one.
    ClosePeer { conn: ConnectionId },
    /// Relay this channel in the kernel from now on (both directions).
    Offload(OffloadChannel),
    /// Stop relaying this channel in the kernel: user space decides again.
    Unoffload(OffloadChannel),
    /// `user-quota` across the fleet: take lease `lease` for `user` in the shared store
    /// if fewer than `quota` are held, then call [`Server::handle_lease`].
    AcquireLease {
        relay: AllocId,
        lease: u64,
        user: String,
        quota: u32,
    },
    /// Give lease `lease` back: its allocation ended.
    ReleaseLease { lease: u64 },
    /// A complete allocation ended (never a move, RFC 8016): what it relayed in user
    /// space and why it ended, once per allocation. It comes after the allocation's
    /// `Unoffload` events and before its `CloseRelay`, so the driver can add what the
    /// kernel fast path relayed for it while its relay sockets are still open.
    Ended(Box<Usage>),
}

/// Bounds the output queues; the driver drains them after every input.
const MAX_QUEUED: usize = 1024;
/// RFC 8656 section 12: a channel and its peer stay reserved 5 minutes after expiry.
const CHANNEL_COOLDOWN: Duration = Duration::from_secs(300);
/// RFC 8489 section 6.3.1: responses are kept 40 s for retransmissions.
const RETRANSMIT_WINDOW: Duration = Duration::from_secs(40);
const MAX_CLOSED: usize = 64;
const MAX_BIND_ATTEMPTS: u8 = 8;
/// RFC 8656 section 18.10: a reserved port is held for about 30 seconds.
const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

/// One shard's TURN server.
pub struct Server {
    cfg: ServerConfig,
    shared: Arc<dyn SharedState>,
    nonces: Nonces,
    nonce_key: [u8; 32],
    /// Verified against for unknown users, so that they cost the same work as known ones.
    decoy: crate::auth::credentials::Key,
    rng: StdRng,
    table: Table,
    deadlines: Deadlines,
    ports_v4: PortPool,
    ports_v6: PortPool,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// Maps `Instant`s to unix seconds (REST expiry, nonces).
    clock: crate::clock::WallClock,
    /// Responses to requests that deleted their allocation (Refresh with LIFETIME 0).
    closed: VecDeque<(FiveTuple, [u8; 12], Vec<u8>, Instant)>,
    indication_txn: [u8; 12],
    limiter: limiter::SourceLimiter,
    /// `bps-capacity` share of this shard: client to peer, peer to client.
    total_up: rate::Bucket,
    total_down: rate::Bucket,
    stats: Stats,
    /// Refusing new allocations (drain).
    draining: bool,
    /// Log lines remote parties can trigger.
    noisy: log_limit::LogLimit,
    /// Names this shard among those sharing `shared` (who owns a reserved port).
    tag: u64,
    /// TCP peer connections of TCP allocations (RFC 6062).
    tcp: tcp_relay::Connections,
    /// MOBILITY-TICKETs: the key every shard shares (derived from the nonce key).
    tickets: Tickets,
    /// This shard's index among `shards` (tickets name the owner by it).
    shard: u8,
    shards: u16,
    /// Moves handed to another shard, waiting for its answer.
    moves: handoff::Moves,
    /// Handoffs for other shards, with the index of each one's shard.
    handoffs: VecDeque<(u8, Handoff)>,
}

/// The limits on answers to unauthenticated requests `cfg` asks for.
fn unauthenticated_limits(cfg: &ServerConfig) -> limiter::Limits {
    limiter::Limits {
        per_source: cfg.unauthenticated_rate,
        total: cfg.unauthenticated_total_rate,
        credit: cfg.unauthenticated_credit,
    }
}

/// The nonces `cfg` asks for: keyed by `nonce-secret`, else by the process's own key.
fn nonces(cfg: &ServerConfig, own_key: [u8; 32]) -> Nonces {
    let keys = cfg
        .nonce_keys
        .clone()
        .unwrap_or_else(|| NonceKeys::single(own_key));
    Nonces::new(keys, cfg.nonce_lifetime.as_secs())
}

impl Server {
    /// A server whose random choices derive from `secrets.seed` and whose nonces are
    /// keyed with `cfg.nonce_keys`, else `secrets.nonce_key`; `unix_now` is the wall
    /// clock at `now`.
    pub fn new(
        cfg: ServerConfig,
        shared: Arc<dyn SharedState>,
        secrets: Secrets,
        now: Instant,
        unix_now: u64,
    ) -> Self {
        // The tag comes from a generator of its own, so the sequence `rng` draws (ports,
        // transaction ids) is what it was without it.
        let mut tag_seed = secrets.seed;
        tag_seed[0] ^= 0x5a;
        let tag: u64 = StdRng::from_seed(tag_seed).random();
        let mut rng = StdRng::from_seed(secrets.seed);
        let indication_txn: [u8; 12] = rng.random();
        let decoy = rng.random();
        let limiter_key = rng.random();
        let limits = unauthenticated_limits(&cfg);
        Self {
            nonces: nonces(&cfg, secrets.nonce_key),
            nonce_key: secrets.nonce_key,
            decoy,
            ports_v4: PortPool::new(cfg.min_port, cfg.max_port),
            ports_v6: PortPool::new(cfg.min_port, cfg.max_port),
            cfg,
            shared,
            rng,
            table: Table::default(),
            deadlines: Deadlines::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            clock: crate::clock::WallClock::new(now, unix_now),
            closed: VecDeque::new(),
            indication_txn,
            limiter: limiter::SourceLimiter::new(limits, limiter_key),
            total_up: rate::Bucket::default(),
            total_down: rate::Bucket::default(),
            stats: Stats::default(),
            draining: false,
            noisy: log_limit::LogLimit::default(),
            tag,
            tcp: tcp_relay::Connections::default(),
            tickets: Tickets::new(&secrets.nonce_key),
            shard: 0,
            shards: 1,
            moves: handoff::Moves::default(),
            handoffs: VecDeque::new(),
        }
    }

    /// Re-anchors the wall clock (the driver calls this now and then).
    pub fn set_wall_clock(&mut self, now: Instant, unix_now: u64) {
        self.clock.set(now, unix_now);
    }

    fn unix(&self, now: Instant) -> u64 {
        self.clock.unix(now)
    }

    /// A datagram from a client. ChannelData and Send indications are relayed from `buf`
    /// itself (the returned transmit names a range of it); requests queue a response.
    pub fn handle_client_datagram(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        buf: &mut [u8],
    ) -> Option<DataTransmit> {
        // RFC 8016: a 5-tuple whose move another shard is deciding waits for the answer.
        if !self.moves.is_empty() && self.hold_while_moving(&tuple, buf) {
            return None;
        }
        if data::is_channel_data(buf) {
            return self.relay_channel_data(now, tuple, buf);
        }
        let scan = match scan::scan(buf) {
            Ok(scan) => scan,
            Err(ScanError::Oversize(_)) => {
                self.reply_oversize(now, tuple, buf);
                return None;
            }
            Err(_) => return None,
        };
        match (scan.class, scan.method) {
            (Class::Indication, method::SEND) => self.relay_send_indication(now, tuple, buf, &scan),
            (Class::Request, method::BINDING) => {
                self.handle_binding(now, tuple, &scan);
                None
            }
            (
                Class::Request,
                method::ALLOCATE
                | method::REFRESH
                | method::CREATE_PERMISSION
                | method::CHANNEL_BIND
                | method::CONNECT
                | method::CONNECTION_BIND,
            ) => {
                self.handle_turn_request(now, tuple, buf, &scan);
                None
            }
            (Class::Request, _) => {
                // RFC 8489 section 6.3.1: an unknown method in a request is a 400.
                self.reply_unauthenticated(now, tuple, &scan, RequestError::BadRequest);
                None
            }
            _ => None,
        }
    }

    /// RFC 8489 section 14: over-long USERNAME/REALM/NONCE/SOFTWARE; a request gets 400.
    fn reply_oversize(&mut self, now: Instant, tuple: FiveTuple, buf: &[u8]) {
        let Some(scan) = scan::header_only(buf) else {
            return;
        };
        if scan.class == Class::Request {
            self.reply_unauthenticated(now, tuple, &scan, RequestError::BadRequest);
        }
    }

    /// An error answer to a request that did not authenticate, within the per-source rate
    /// limit (otherwise nothing is sent).
    fn reply_unauthenticated(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        scan: &Scan,
        err: RequestError,
    ) {
        let response = self.unauthenticated_answer(now, &tuple, scan, err);
        self.send_to_client(tuple, response);
    }

    /// The error answer to a request that did not authenticate, if the limits on such
    /// answers allow one.
    fn unauthenticated_answer(
        &mut self,
        now: Instant,
        tuple: &FiveTuple,
        scan: &Scan,
        err: RequestError,
    ) -> Option<Vec<u8>> {
        let admission = self.admit_unauthenticated(tuple, now)?;
        let response = self.error_response(now, tuple, scan, err, None);
        self.settle_unauthenticated(admission, response.as_deref());
        response
    }

    /// Whether an answer to an unauthenticated request from `tuple` may be sent (see
    /// `limiter`). Over TCP, TLS and DTLS the handshake has proven that the client
    /// receives at its address (no one can be made a victim), so only UDP is limited.
    fn admit_unauthenticated(
        &mut self,
        tuple: &FiveTuple,
        now: Instant,
    ) -> Option<limiter::Admission> {
        if tuple.transport != Transport::Udp {
            return Some(limiter::Admission::Unearned);
        }
        match self.limiter.admit(tuple.client.ip(), now) {
            Ok(admission) => Some(admission),
            Err(refusal) => {
                self.stats.rate_limited += 1;
                if refusal == limiter::Refusal::Total {
                    self.stats.rate_limited_total += 1;
                }
                None
            }
        }
    }

    fn settle_unauthenticated(&mut self, admission: limiter::Admission, answer: Option<&[u8]>) {
        let Some(answer) = answer else { return };
        if let limiter::Admission::Credit(_) = admission {
            self.stats.unauthenticated_credited += 1;
        }
        self.limiter.settle(admission, answer.len());
    }

    /// A request from `tuple` of `bytes` authenticated: its source has proven that it
    /// receives what is sent to it, and earns that many bytes of answers.
    pub(super) fn earn_credit(&mut self, tuple: &FiveTuple, bytes: usize) {
        if tuple.transport == Transport::Udp {
            self.limiter.earn(tuple.client.ip(), bytes);
        }
    }

    /// How many slots track unauthenticated sources: fixed, whatever arrives.
    pub fn limiter_slots(&self) -> usize {
        self.limiter.slots()
    }

    /// RFC 8489 section 3: a Binding request is answered with the reflexive address; no
    /// authentication, no SOFTWARE (it only adds amplification).
    fn handle_binding(&mut self, now: Instant, tuple: FiveTuple, scan: &Scan) {
        let Some(admission) = self.admit_unauthenticated(&tuple, now) else {
            return;
        };
        let response = if scan.unknown().is_empty() {
            codec::encode(
                method::BINDING,
                true,
                &scan.txn,
                &[ResponseAttr::XorMappedAddress(tuple.client)],
                None,
                scan.fingerprint,
            )
        } else {
            self.error_response(now, &tuple, scan, RequestError::UnknownAttribute, None)
        };
        self.settle_unauthenticated(admission, response.as_deref());
        self.send_to_client(tuple, response);
    }

    fn send_to_client(&mut self, tuple: FiveTuple, payload: Option<Vec<u8>>) {
        let Some(payload) = payload else { return };
        if self.transmits.len() >= MAX_QUEUED {
            return;
        }
        self.transmits.push_back(Transmit {
            path: Path::Client {
                listener: tuple.listener,
                client: tuple.client,
                transport: tuple.transport,
            },
            payload,
        });
    }

    fn push_event(&mut self, event: Event) {
        // CloseRelay, ClosePeer, Splice and Unoffload must never be lost (they free a
        // socket, complete an answered ConnectionBind, or stop the kernel relaying), nor
        // Ended (one usage record per allocation, so bounded by the allocations); the
        // others are bounded by the allocations, channels and connections that can
        // exist, so the cap is only a guard.
        if self.events.len() < MAX_QUEUED
            || matches!(
                event,
                Event::CloseRelay { .. }
                    | Event::Ended(_)
                    | Event::ClosePeer { .. }
                    | Event::Splice { .. }
                    | Event::Unoffload(_)
            )
        {
            self.events.push_back(event);
        }
    }

    /// Expires allocations, permissions and channels due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.deadlines.pop_due(now) {
            match timer {
                Timer::Allocation(id) => self.delete_allocation(now, id, Deletion::Expired),
                Timer::Permission(id, ip) => {
                    if let Some(a) = self.table.get_mut(id) {
                        a.permissions.retain(|p| p.ip != ip);
                    }
                    // A bound channel to that peer stops relaying without a permission.
                    self.sync_offload(id, false);
                }
                Timer::Channel(id, number) => self.expire_channel(now, id, number),
                Timer::Reservation(token) => self.end_reservation(&token),
                Timer::TcpConnection(conn) => self.expire_connection(now, conn),
            }
        }
        self.moves.expire(now);
        while let Some((_, _, _, at)) = self.closed.front() {
            if *at > now {
                break;
            }
            self.closed.pop_front();
        }
    }

    fn expire_channel(&mut self, now: Instant, id: AllocId, number: u16) {
        let Some(a) = self.table.get_mut(id) else {
            return;
        };
        let Some(pos) = a.channels.iter().position(|c| c.number == number) else {
            return;
        };
        if a.channels[pos].bound {
            a.channels[pos].bound = false;
            a.channels[pos].expires = now + CHANNEL_COOLDOWN;
            self.deadlines
                .rearm(None, now + CHANNEL_COOLDOWN, Timer::Channel(id, number));
            self.sync_offload(id, false);
        } else {
            a.channels.swap_remove(pos);
        }
    }

    /// Deletes an allocation and everything hanging off it; a complete one leaves its
    /// usage record ([`Event::Ended`]).
    fn delete_allocation(&mut self, now: Instant, id: AllocId, why: Deletion) {
        let Some(a) = self.table.remove(id) else {
            return;
        };
        // Before anything else: not one more datagram through the kernel, not one more
        // byte through its TCP connections.
        self.unoffload_all(&a);
        self.close_connections(&a.connections);
        if let Some(token) = &a.reservation {
            self.cancel_reservation(token);
        }
        self.cancel_timers(&a);
        match why {
            Deletion::Expired => self.stats.allocations_expired += 1,
            _ => self.stats.allocations_deleted += 1,
        }
        // Both relays of a dual allocation go together (one lifetime, one deletion).
        for r in a.relays.iter() {
            self.pool(r.local.ip()).release(r.local.port());
        }
        self.shared.release_allocation(&a.user);
        self.release_lease(&a);
        match a.pending.as_ref().map(|p| p.binding_second) {
            None => {
                for r in a.relays.iter() {
                    self.shared.remove_relay(r.relayed);
                }
                let usage = self.usage(now, a, why);
                self.push_event(Event::Ended(Box::new(usage)));
                self.push_event(Event::CloseRelay { relay: id });
            }
            // A dual allocation's first socket is bound while the second one's bind is
            // outstanding.
            Some(true) => self.push_event(Event::CloseRelay { relay: id }),
            Some(false) => {}
        }
    }

    /// Disarms the expiries of `a` (taken out of the table) and everything it holds.
    fn cancel_timers(&mut self, a: &allocation::Allocation) {
        let id = a.id;
        self.deadlines.cancel(a.expires, Timer::Allocation(id));
        for p in &a.permissions {
            self.deadlines
                .cancel(p.expires, Timer::Permission(id, p.ip));
        }
        for c in &a.channels {
            self.deadlines
                .cancel(c.expires, Timer::Channel(id, c.number));
        }
    }

    fn pool(&mut self, ip: IpAddr) -> &mut PortPool {
        self.pool_and_rng(ip.is_ipv4()).0
    }

    /// The port pool of a family, and the generator its draws take.
    fn pool_and_rng(&mut self, v4: bool) -> (&mut PortPool, &mut StdRng) {
        let pool = if v4 {
            &mut self.ports_v4
        } else {
            &mut self.ports_v6
        };
        (pool, &mut self.rng)
    }

    /// The next control transmit.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next request to the I/O layer.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Server::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.deadlines.next(),
            self.closed.front().map(|c| c.3),
            self.moves.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// What this shard did, refused and dropped so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Allocations, permissions and channels that exist now (a walk over the table).
    pub fn gauges(&self) -> Gauges {
        let mut g = Gauges::default();
        for a in self.table.iter() {
            g.allocations += 1;
            g.allocations_by_transport[stats::transport_index(a.five_tuple.transport)] += 1;
            g.permissions += a.permissions.len() as u64;
            g.channels += a.channels.iter().filter(|c| c.bound).count() as u64;
        }
        (g.tcp_pending, g.tcp_bound) = self.connection_gauges();
        g.deadlines = self.deadlines.len() as u64;
        g
    }

    /// Number of allocations in this shard (pending ones included).
    pub fn allocation_count(&self) -> usize {
        self.table.len()
    }

    /// Number of armed deadlines (for tests: one per live object).
    pub fn deadline_count(&self) -> usize {
        self.deadlines.len()
    }

    /// The relayed address of the allocation on `tuple`, if any (a dual allocation's
    /// IPv4 one).
    pub fn relayed_address(&self, tuple: &FiveTuple) -> Option<SocketAddr> {
        self.relayed_addresses(tuple).next()
    }

    /// Every relayed address of the allocation on `tuple`: one, or a dual allocation's
    /// IPv4 and IPv6 ones.
    pub fn relayed_addresses(&self, tuple: &FiveTuple) -> impl Iterator<Item = SocketAddr> + '_ {
        self.table
            .id_by_tuple(tuple)
            .and_then(|id| self.table.get(id))
            .filter(|a| a.pending.is_none())
            .into_iter()
            .flat_map(|a| a.relays.iter().map(|r| r.relayed))
    }

    /// The connection of a stream 5-tuple (TCP, TLS) closed: its allocation is deleted at
    /// once and its relay port freed (RFC 8656 section 3.1: the allocation is bound to
    /// the 5-tuple, which no longer exists).
    pub fn handle_connection_closed(&mut self, now: Instant, tuple: FiveTuple) {
        if let Some(id) = self.table.id_by_tuple(&tuple) {
            self.delete_allocation(now, id, Deletion::ConnectionClosed);
        }
    }
}
