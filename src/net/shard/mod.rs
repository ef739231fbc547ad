//! One shard's event loop: its UDP, TCP and TLS listener sockets (SO_REUSEPORT siblings
//! of the other shards'), its TCP/TLS connections, its relay sockets, and its core, with
//! nothing shared on the packet path.
//!
//! - [`ingress`]: UDP receive into a ring of slots with headroom, so relayed data is
//!   framed in place;
//! - [`egress`]: one send path for relayed data and control messages (`sendmmsg`, GSO,
//!   one write per connection);
//! - [`conns`]: TCP/TLS connections; [`dtls`]: DTLS sessions; [`relays`]: UDP relay
//!   sockets (a slot per allocation and family); [`token`]: what a mio token names;
//! - [`tcp_relay`]: TCP allocations (RFC 6062): listening relay sockets and peer
//!   connections; [`pipe`]: the bytes between a peer connection and its data
//!   connection;
//! - [`usage`]: the usage record of each allocation that ends, with what the kernel
//!   relayed for it, to the log and the webhook's queue;
//! - [`handoff`]: what moves to another shard: allocations whose client moved there
//!   (RFC 8016) with their relay sockets, and data connections that must reach the
//!   shard serving their peer connection (RFC 6062).
//!
//! A turn: operator commands and other shards' handoffs (the mailbox), connections
//! handed over by other shards (the inbox), then every
//! ready socket (a budget each, the rest in the backlog), then the flush of relayed
//! datagrams, the clock (once a second: wall-clock anchor, connection deadlines,
//! published counters), pipes whose bandwidth pause ended, timeouts, core events and
//! control messages, and last the pipes spliced this turn (after their ConnectionBind
//! responses).

mod busy;
mod conns;
mod dtls;
mod egress;
mod endpoints;
mod handoff;
mod ingress;
mod kernel;
mod pipe;
mod relays;
mod tcp_relay;
mod token;
mod usage;

pub use handoff::{Inbox, Siblings};
pub use token::Source;

use crate::control::{Command, LeaseAsk, Leases, ShardLink, UsageSink, wall_anchor};
use crate::net::dtls::Dtls;
use crate::net::socket::SocketOptions;
use crate::net::stream::Streams;
use crate::offload::Offload;
use egress::{Sockets, StreamOut, Via};
use endpoints::Endpoints;
use ferroturn_core::server::{
    AllocId, ConnectionId, Deletion, Event, FiveTuple, LeaseAnswer, Server, SessionFilter, Transmit,
};
use ingress::{SLOTS, Slots};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use relays::Relay;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub struct Shard {
    poll: Poll,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    core: Server,
    opts: SocketOptions,
    listeners: Vec<UdpSocket>,
    /// What the core's UDP listener ids name: a listener socket and the local address
    /// to answer from.
    endpoints: Endpoints,
    streams: Streams,
    /// DTLS sockets and sessions, when TLS is on and DTLS not turned off.
    dtls: Option<Dtls>,
    relays: Vec<Option<Relay>>,
    /// Sockets that still had data when their budget ran out.
    backlog: Vec<Token>,
    slots: Slots,
    /// Control messages being sent (reused).
    control: Vec<Transmit>,
    /// UDP GSO for runs of datagrams to one destination; turned off if the kernel
    /// refuses it.
    gso: bool,
    /// Datagrams toward peers from the connection being read (ranges of its framer).
    stream_sends: Vec<(AllocId, Range<usize>, SocketAddr)>,
    /// Connections to close after a write failed (reused).
    failed: Vec<usize>,
    /// Operator commands in, counters and gauges out (once a second).
    link: Option<Arc<ShardLink>>,
    /// The kernel fast path, shared by every shard, when it runs.
    offload: Option<Arc<Offload>>,
    /// RFC 6062: listening sockets of TCP allocations (by allocation index: a TCP
    /// allocation has one relay), their peer connections, and the splices of this turn
    /// (peer slot, id, data connection).
    tcp_relays: Vec<Option<tcp_relay::TcpRelay>>,
    peers: pipe::Peers,
    splicing: Vec<(usize, ConnectionId, FiveTuple)>,
    /// Every shard's mailbox (RFC 8016 moves between shards) and inbox (RFC 6062 data
    /// connections that belong to another shard).
    siblings: Siblings,
    /// The fleet's leases (`user-quota` across nodes), and this shard's index, which
    /// the answers come back to.
    leases: Option<(Arc<Leases>, usize)>,
    /// Where usage records go (the log alone until [`Shard::set_usage`]).
    usage: Arc<UsageSink>,
    /// UDP datagrams relayed in the current turn of the loop.
    turn_datagrams: usize,
    /// How long to poll on after a busy turn ([`busy`]).
    busy_poll: Duration,
}

impl Shard {
    pub fn new(
        core: Server,
        mut listeners: Vec<UdpSocket>,
        mut streams: Streams,
        mut dtls: Option<Dtls>,
        opts: SocketOptions,
        stop: Arc<AtomicBool>,
        offload: Option<Arc<Offload>>,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), Source::Waker.token())?);
        for (i, l) in listeners.iter_mut().enumerate() {
            poll.registry()
                .register(l, Source::Listener(i).token(), Interest::READABLE)?;
        }
        for (i, s) in dtls
            .iter_mut()
            .flat_map(|d| d.sockets.iter_mut())
            .enumerate()
        {
            poll.registry()
                .register(s, Source::DtlsListener(i).token(), Interest::READABLE)?;
        }
        for (i, l) in streams.listeners.iter_mut().enumerate() {
            poll.registry().register(
                &mut l.socket,
                Source::StreamListener(i).token(),
                Interest::READABLE,
            )?;
        }
        Ok(Self {
            poll,
            waker,
            stop,
            core,
            opts,
            endpoints: Endpoints::new(&listeners),
            listeners,
            streams,
            dtls,
            relays: Vec::new(),
            backlog: Vec::new(),
            slots: Slots::new(),
            control: Vec::with_capacity(SLOTS),
            gso: true,
            stream_sends: Vec::new(),
            failed: Vec::new(),
            link: None,
            offload,
            tcp_relays: Vec::new(),
            peers: pipe::Peers::default(),
            splicing: Vec::new(),
            siblings: Siblings::default(),
            leases: None,
            usage: Arc::new(UsageSink::new(None, Default::default(), 0)),
            turn_datagrams: 0,
            busy_poll: Duration::ZERO,
        })
    }

    pub fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    pub fn set_link(&mut self, link: Arc<ShardLink>) {
        self.link = Some(link);
    }

    /// After a busy turn the loop polls on for `busy_poll` before it sleeps.
    pub fn set_busy_poll(&mut self, busy_poll: Duration) {
        self.busy_poll = busy_poll;
    }

    /// Usage records go to `usage`.
    pub fn set_usage(&mut self, usage: Arc<UsageSink>) {
        self.usage = usage;
    }

    /// Lease asks go to `leases`; their answers name shard `index`.
    pub fn set_leases(&mut self, leases: Arc<Leases>, index: usize) {
        self.leases = Some((leases, index));
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut ready: Vec<Token> = Vec::with_capacity(1024);
        let mut last_clock = Instant::now();
        let mut busy = busy::BusyPoll::new(self.busy_poll);
        while !self.stop.load(Ordering::Acquire) {
            let polling = busy.polling(Instant::now);
            let timeout = if self.backlog.is_empty() && !polling {
                let next = match (self.core.poll_timeout(), self.peers.next_resume()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
                .map(|t| t.saturating_duration_since(Instant::now()));
                next.unwrap_or(Duration::from_secs(1))
                    .min(Duration::from_secs(1))
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!("event loop failed: {e}");
                    break;
                }
            }
            // Commands first: one queued before a datagram was sent applies to it.
            self.handle_commands();
            self.adopt_handed();
            ready.clear();
            ready.append(&mut self.backlog);
            let waker = Source::Waker.token();
            ready.extend(events.iter().map(|e| e.token()).filter(|t| *t != waker));
            // Whether the poll found anything: sockets, left-over sockets or the waker
            // (commands, handoffs). A turn that found nothing polled in vain.
            let found = !events.is_empty() || !ready.is_empty();
            for &token in &ready {
                self.drain(token);
            }
            self.flush_data();
            let now = Instant::now();
            if now.duration_since(last_clock) >= Duration::from_secs(1) {
                let (at, unix) = wall_anchor(now);
                self.core.set_wall_clock(at, unix);
                if let Some(d) = &mut self.dtls {
                    d.set_wall_clock(at, unix);
                }
                self.close_expired(now);
                self.tick_dtls(now);
                self.publish();
                last_clock = now;
            }
            self.resume_paused(now);
            self.core.handle_timeout(now);
            self.handle_events();
            self.send_control();
            self.activate_splices();
            // The turn's whole round is timed, to its end.
            let relayed = std::mem::take(&mut self.turn_datagrams);
            busy.after_turn(Instant::now, found, relayed);
        }
        // Every allocation still open ends here, with its usage record.
        self.core
            .delete_sessions(Instant::now(), &SessionFilter::All, Deletion::Shutdown);
        self.handle_events();
        self.unoffload_everything();
    }

    /// Copies the core's counters and gauges out for the metrics endpoint.
    fn publish(&self) {
        if let Some(link) = &self.link {
            link.publish(self.core.stats().clone(), self.core.gauges());
        }
    }

    /// Carries out operator commands (sessions, reload, drain) between packets.
    fn handle_commands(&mut self) {
        let Some(link) = self.link.clone() else {
            return;
        };
        for command in link.take() {
            match command {
                Command::Sessions(reply) => {
                    let mut sessions = self.core.sessions(Instant::now());
                    self.add_kernel_counters(&mut sessions);
                    let _ = reply.send(sessions);
                }
                Command::Delete(filter, why, reply) => {
                    let n = self.core.delete_sessions(Instant::now(), &filter, why);
                    self.handle_events();
                    let _ = reply.send(n);
                }
                Command::Reconfigure(cfg) => self.core.reconfigure(*cfg),
                Command::Drain(on) => self.core.set_draining(on),
                Command::ExternalIp(ip) => {
                    self.core.set_external_ip(ip);
                    self.handle_events();
                }
                Command::Handoff(handoff, relay) => self.receive_handoff(handoff, relay),
                Command::Lease {
                    relay,
                    lease,
                    answer,
                } => {
                    self.core.handle_lease(Instant::now(), relay, lease, answer);
                    self.handle_events();
                }
            }
        }
    }

    /// Serves the socket behind `token`: up to a budget of batches from a UDP socket, a
    /// connection's pending writes and reads, or a stream listener's new connections.
    fn drain(&mut self, token: Token) {
        let source = Source::of(token);
        let more = match source {
            Source::Conn(index) | Source::Backend(index) => self.serve_conn(index),
            Source::StreamListener(index) => {
                self.streams
                    .accept(index, self.poll.registry(), Instant::now())
            }
            Source::Listener(_) | Source::Relay(_) | Source::DtlsListener(_) => {
                self.drain_udp(source)
            }
            Source::TcpRelay(index) => self.accept_peers(index),
            Source::Peer(index) => self.serve_peer(index),
            Source::Waker => false,
        };
        if more && !self.backlog.contains(&token) {
            self.backlog.push(token);
        }
    }

    /// Hands a lease ask to the fleet; when its queue is full (or there is no fleet)
    /// the core is answered at once, as `shared-state-failure` says.
    fn ask_lease(&mut self, relay: AllocId, lease: u64, user: String, quota: u32) {
        let Some((leases, shard)) = &self.leases else {
            self.core
                .handle_lease(Instant::now(), relay, lease, LeaseAnswer::Granted);
            return;
        };
        let ask = LeaseAsk {
            shard: *shard,
            relay,
            lease,
            user: user.clone(),
            quota,
        };
        if leases.ask(ask) {
            return;
        }
        let answer = leases.unanswered(lease, user);
        tracing::warn!("fleet: the lease queue is full; answering as shared-state-failure says");
        self.core.handle_lease(Instant::now(), relay, lease, answer);
    }

    /// Carries out the core's requests (bind or close relay sockets, kernel channels), at
    /// once: the allocation completes before the next datagram is handled. Then sends
    /// its handoffs to other shards.
    fn handle_events(&mut self) {
        while let Some(event) = self.core.poll_event() {
            match event {
                Event::BindRelay {
                    relay,
                    local,
                    dont_fragment,
                } => {
                    let bound = self.bind_relay(relay, local, dont_fragment);
                    if let Err(e) = &bound {
                        tracing::debug!(%local, "relay bind failed: {e}");
                    }
                    self.core
                        .handle_relay_bound(Instant::now(), relay, bound.is_ok());
                }
                Event::CloseRelay { relay } => {
                    self.close_relay(relay);
                    self.close_tcp_relay(relay);
                }
                Event::ListenRelay { relay, local } => {
                    let bound = self.listen_relay(relay, local);
                    if let Err(e) = &bound {
                        tracing::debug!(%local, "TCP relay listen failed: {e}");
                    }
                    self.core
                        .handle_relay_bound(Instant::now(), relay, bound.is_ok());
                }
                Event::ConnectPeer {
                    conn, local, peer, ..
                } => self.connect_peer(conn, local, peer),
                Event::Splice { conn, client } => self.splice(conn, client),
                Event::ClosePeer { conn } => self.close_peer_id(conn),
                Event::Offload(ch) => self.offload(&ch),
                Event::Unoffload(ch) => self.unoffload(&ch),
                Event::AcquireLease {
                    relay,
                    lease,
                    user,
                    quota,
                } => self.ask_lease(relay, lease, user, quota),
                Event::ReleaseLease { lease } => {
                    if let Some((leases, _)) = &self.leases {
                        leases.release(lease);
                    }
                }
                Event::Ended(usage) => self.write_usage(&usage),
            }
        }
        // After the events: an allocation leaving for another shard has left the kernel.
        self.send_handoffs();
    }

    /// Sends the core's control messages queued this turn, grouped by socket and
    /// destination (in order within each: a stable sort).
    fn send_control(&mut self) {
        self.control.clear();
        self.control
            .extend(std::iter::from_fn(|| self.core.poll_transmit()));
        self.control
            .sort_by_key(|t| (Via::of(&t.path), egress::destination(&t.path)));
        let control = &self.control;
        let sockets = Sockets {
            listeners: &self.listeners,
            endpoints: &self.endpoints,
            relays: &self.relays,
        };
        let mut failed = std::mem::take(&mut self.failed);
        egress::transmit(
            control.len(),
            |i| {
                let t = &control[i];
                (
                    Via::of(&t.path),
                    &t.payload[..],
                    egress::destination(&t.path),
                )
            },
            &sockets,
            &mut false,
            Some(StreamOut {
                streams: &mut self.streams,
                registry: self.poll.registry(),
                failed: &mut failed,
                dtls: self.dtls.as_mut(),
            }),
        );
        self.control.clear();
        self.close_failed(failed);
        self.close_failed_dtls();
    }
}
