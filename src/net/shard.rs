//! One shard's event loop: its UDP, TCP and TLS listener sockets (SO_REUSEPORT siblings
//! of the other shards'), its TCP/TLS connections, its relay sockets, and its core, with
//! nothing shared on the packet path.
//!
//! Datagrams are received in batches (`recvmmsg`) into a fixed set of slots, each with
//! [`HEADROOM`] free bytes in front so the core frames relayed data in place. A slot
//! whose datagram is relayed stays taken until the next flush, where the pending sends
//! go out in batches (`sendmmsg`) grouped by socket: every peer-to-client datagram of a
//! turn leaves through the listener in one call.

use super::control::{Command, ShardLink};
use super::stream::{CONN_BASE, Close, Conn, Streams};
use ferroturn_core::proto::data::{HEADROOM, TAILROOM};
use ferroturn_core::proto::stream::Frame;
use ferroturn_core::server::{AllocId, DataTransmit, Event, FiveTuple, Path, Server, Transport};
use ferroturn_udp::{self as batch, BATCH, RecvMeta, SendItem};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const WAKER: Token = Token(0);
const LISTENER_BASE: usize = 1;
const STREAM_LISTENER_BASE: usize = 1 << 15;
const RELAY_BASE: usize = 1 << 16;
/// Reads from one connection per turn before others get a turn.
const READ_BUDGET: usize = 8;
/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;
const SLOT_LEN: usize = HEADROOM + MAX_DATAGRAM + TAILROOM;
/// Receive slots: two batches, so one batch can arrive while the last one's sends wait.
const SLOTS: usize = 2 * BATCH;
/// Batches taken from one socket before others get a turn.
const BUDGET: usize = 4;

/// Socket options applied to every listener and relay socket.
#[derive(Clone, Copy, Debug, Default)]
pub struct SocketOptions {
    pub recv_buffer: Option<usize>,
    pub send_buffer: Option<usize>,
}

/// Creates a non-blocking UDP socket bound to `addr`. IPv6 sockets are IPv6-only, so
/// `::` and `0.0.0.0` can both be bound; `reuse_port` lets each shard bind the listening
/// port, the kernel spreading clients across them by their address.
pub fn bind(addr: SocketAddr, reuse_port: bool, opts: SocketOptions) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if let Some(n) = opts.recv_buffer {
        socket.set_recv_buffer_size(n)?;
    }
    if let Some(n) = opts.send_buffer {
        socket.set_send_buffer_size(n)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(UdpSocket::from_std(socket.into()))
}

/// Creates a non-blocking TCP listener on `addr`, SO_REUSEPORT so every shard has one and
/// the kernel spreads connections across them.
pub fn bind_tcp(addr: SocketAddr) -> io::Result<mio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

struct Relay {
    id: AllocId,
    socket: UdpSocket,
}

/// A relayed datagram waiting in a slot for the next flush.
#[derive(Clone, Debug)]
struct Pending {
    slot: usize,
    range: Range<usize>,
    path: Path,
}

/// Which socket a pending datagram leaves through.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Via {
    Listener(u16),
    Relay(AllocId),
    /// A TCP/TLS connection of this stream listener (the destination names which).
    Stream(u16),
}

fn via(path: &Path) -> Via {
    match *path {
        Path::Client {
            listener,
            transport: Transport::Udp,
            ..
        } => Via::Listener(listener),
        Path::Client { listener, .. } => Via::Stream(listener),
        Path::Peer { relay, .. } => Via::Relay(relay),
    }
}

fn destination(path: &Path) -> SocketAddr {
    match *path {
        Path::Client { client, .. } => client,
        Path::Peer { peer, .. } => peer,
    }
}

pub struct Shard {
    poll: Poll,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    core: Server,
    opts: SocketOptions,
    listeners: Vec<UdpSocket>,
    streams: Streams,
    relays: Vec<Option<Relay>>,
    /// Sockets that still had data when their budget ran out.
    backlog: Vec<Token>,
    slots: Vec<Box<[u8]>>,
    /// Slots `0..taken` hold datagrams waiting in `pending`.
    taken: usize,
    pending: Vec<Pending>,
    meta: [RecvMeta; BATCH],
    /// Control messages being sent (reused).
    control: Vec<ferroturn_core::server::Transmit>,
    /// UDP GSO for runs of datagrams to one destination; turned off if the kernel
    /// refuses it.
    gso: bool,
    /// Datagrams toward peers from the connection being read (ranges of its framer).
    stream_sends: Vec<(AllocId, Range<usize>, SocketAddr)>,
    /// Connections to close after a write failed (reused).
    failed: Vec<usize>,
    /// Operator commands in, counters and gauges out (once a second).
    link: Option<Arc<ShardLink>>,
}

impl Shard {
    pub fn new(
        core: Server,
        mut listeners: Vec<UdpSocket>,
        mut streams: Streams,
        opts: SocketOptions,
        stop: Arc<AtomicBool>,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        for (i, l) in listeners.iter_mut().enumerate() {
            poll.registry()
                .register(l, Token(LISTENER_BASE + i), Interest::READABLE)?;
        }
        for (i, l) in streams.listeners.iter_mut().enumerate() {
            poll.registry().register(
                &mut l.socket,
                Token(STREAM_LISTENER_BASE + i),
                Interest::READABLE,
            )?;
        }
        Ok(Self {
            poll,
            waker,
            stop,
            core,
            opts,
            listeners,
            streams,
            relays: Vec::new(),
            backlog: Vec::new(),
            slots: (0..SLOTS)
                .map(|_| vec![0u8; SLOT_LEN].into_boxed_slice())
                .collect(),
            taken: 0,
            pending: Vec::with_capacity(SLOTS),
            meta: [RecvMeta::default(); BATCH],
            control: Vec::with_capacity(SLOTS),
            gso: true,
            stream_sends: Vec::new(),
            failed: Vec::new(),
            link: None,
        })
    }

    pub fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut ready: Vec<Token> = Vec::with_capacity(1024);
        let mut last_clock = Instant::now();
        while !self.stop.load(Ordering::Acquire) {
            let timeout = if self.backlog.is_empty() {
                let next = self
                    .core
                    .poll_timeout()
                    .map(|t| t.saturating_duration_since(Instant::now()));
                next.unwrap_or(Duration::from_secs(1))
                    .min(Duration::from_secs(1))
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!("event loop failed: {e}");
                    return;
                }
            }
            // Commands first: one queued before a datagram was sent applies to it.
            self.handle_commands();
            ready.clear();
            ready.append(&mut self.backlog);
            ready.extend(events.iter().map(|e| e.token()).filter(|t| *t != WAKER));
            for &token in &ready {
                self.drain(token);
            }
            self.flush_data();
            let now = Instant::now();
            if now.duration_since(last_clock) >= Duration::from_secs(1) {
                self.core.set_wall_clock(now, super::unix_now());
                self.close_expired(now);
                self.publish();
                last_clock = now;
            }
            self.core.handle_timeout(now);
            self.handle_events();
            self.send_control();
        }
    }

    pub fn set_link(&mut self, link: Arc<ShardLink>) {
        self.link = Some(link);
    }

    /// Copies the core's counters and gauges out for the metrics endpoint.
    fn publish(&self) {
        let Some(link) = &self.link else { return };
        let snapshot = (self.core.stats().clone(), self.core.gauges());
        if let Ok(mut p) = link.published.lock() {
            *p = snapshot;
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
                    let _ = reply.send(self.core.sessions(Instant::now()));
                }
                Command::Delete(filter, reply) => {
                    let n = self.core.delete_sessions(&filter);
                    self.handle_events();
                    let _ = reply.send(n);
                }
                Command::Reconfigure(cfg) => self.core.reconfigure(*cfg),
                Command::Drain(on) => self.core.set_draining(on),
            }
        }
    }

    /// Serves the socket behind `token`: up to [`BUDGET`] batches from a UDP socket, a
    /// connection's pending writes and reads, or a stream listener's new connections.
    fn drain(&mut self, token: Token) {
        let more = if token.0 >= CONN_BASE {
            self.serve_conn(token.0 - CONN_BASE)
        } else if (STREAM_LISTENER_BASE..RELAY_BASE).contains(&token.0) {
            self.streams.accept(
                token.0 - STREAM_LISTENER_BASE,
                self.poll.registry(),
                Instant::now(),
            )
        } else {
            self.drain_udp(token)
        };
        if more && !self.backlog.contains(&token) {
            self.backlog.push(token);
        }
    }

    /// Reads up to [`BUDGET`] batches from one UDP socket; true if it may have more.
    fn drain_udp(&mut self, token: Token) -> bool {
        for _ in 0..BUDGET {
            if self.taken + BATCH > SLOTS {
                self.flush_data();
            }
            match self.receive(token) {
                Ok(n) if n == BATCH => {}
                Ok(_) => return false,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                // ICMP errors surface on the next receive; the socket is still good.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(e) => {
                    tracing::debug!("recv failed: {e}");
                    return false;
                }
            }
        }
        true
    }

    /// A connection is ready: writes what waits for it, then reads up to
    /// [`READ_BUDGET`] times, handing each complete message to the core. True if it may
    /// have more to read.
    fn serve_conn(&mut self, index: usize) -> bool {
        // Taken out of the slab while the core runs, put back before anything else.
        let Some(mut conn) = self.streams.conns.get_mut(index).and_then(Option::take) else {
            return false;
        };
        let result = self.read_conn(&mut conn);
        let token = Token(CONN_BASE + index);
        let interest = conn.update_interest(self.poll.registry(), token);
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
            relays: &self.relays,
        };
        send_runs(
            sends.len(),
            |i| {
                let (relay, range, peer) = &sends[i];
                (
                    Via::Relay(*relay),
                    buffer.get(range.clone()).unwrap_or_default(),
                    *peer,
                )
            },
            &sockets,
            &mut false,
        );
        sends.clear();
        self.stream_sends = sends;
        result
    }

    /// Closes the connections a write failed on, and keeps the list's allocation.
    fn close_failed(&mut self, mut failed: Vec<usize>) {
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
    fn close_expired(&mut self, now: Instant) {
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

    /// Writes runs of frames bound for TCP/TLS clients: `item(i)` names each frame's
    /// listener, client and bytes; frames for one connection are consecutive. Connections
    /// whose write fails are closed.
    fn write_streams<'a>(
        streams: &mut Streams,
        registry: &mio::Registry,
        n: usize,
        item: impl Fn(usize) -> (Via, SocketAddr, &'a [u8]),
        failed: &mut Vec<usize>,
    ) {
        let mut i = 0;
        while i < n {
            let (through, client, _) = item(i);
            let mut end = i + 1;
            while end < n && {
                let (v, c, _) = item(end);
                v == through && c == client
            } {
                end += 1;
            }
            if let Via::Stream(listener) = through {
                if let Some(index) = streams.index_of(listener, client) {
                    if !streams.write(index, (i..end).map(|k| item(k).2), registry) {
                        failed.push(index);
                    }
                }
            }
            i = end;
        }
    }

    /// One batch from the socket behind `token` into the free slots, each datagram handed
    /// to the core at once.
    fn receive(&mut self, token: Token) -> io::Result<usize> {
        let fd = if token.0 >= RELAY_BASE {
            match self.relays.get(token.0 - RELAY_BASE) {
                Some(Some(r)) => r.socket.as_raw_fd(),
                _ => return Err(io::ErrorKind::WouldBlock.into()),
            }
        } else {
            match self.listeners.get(token.0 - LISTENER_BASE) {
                Some(s) => s.as_raw_fd(),
                None => return Err(io::ErrorKind::WouldBlock.into()),
            }
        };
        let start = self.taken;
        let mut bufs: [&mut [u8]; BATCH] = Default::default();
        for (b, slot) in bufs.iter_mut().zip(self.slots[start..].iter_mut()) {
            *b = &mut slot[HEADROOM..HEADROOM + MAX_DATAGRAM];
        }
        let free = (SLOTS - start).min(BATCH);
        let n = batch::recv_batch(fd, &mut bufs[..free], &mut self.meta)?;
        let now = Instant::now();
        for i in 0..n {
            let RecvMeta { len, from } = self.meta[i];
            if len > MAX_DATAGRAM {
                continue;
            }
            let slot = start + i;
            let payload = HEADROOM..HEADROOM + len;
            let out = if token.0 >= RELAY_BASE {
                self.peer_datagram(now, token.0 - RELAY_BASE, from, slot, payload)
            } else {
                self.client_datagram(now, token.0 - LISTENER_BASE, from, slot, payload)
            };
            if let Some((range, path)) = out {
                // Keep the slot: move it to the front of the free area.
                self.slots.swap(self.taken, slot);
                self.pending.push(Pending {
                    slot: self.taken,
                    range,
                    path,
                });
                self.taken += 1;
            }
        }
        Ok(n)
    }

    fn client_datagram(
        &mut self,
        now: Instant,
        listener: usize,
        from: SocketAddr,
        slot: usize,
        payload: Range<usize>,
    ) -> Option<(Range<usize>, Path)> {
        let tuple = FiveTuple {
            client: from,
            listener: listener as u16,
            transport: Transport::Udp,
        };
        let datagram = &mut self.slots[slot][payload.clone()];
        let out = self.core.handle_client_datagram(now, tuple, datagram);
        // Requests may ask for relay sockets; bind them before the next datagram.
        self.handle_events();
        out.map(|t| {
            (
                t.range.start + payload.start..t.range.end + payload.start,
                t.path,
            )
        })
    }

    fn peer_datagram(
        &mut self,
        now: Instant,
        index: usize,
        from: SocketAddr,
        slot: usize,
        payload: Range<usize>,
    ) -> Option<(Range<usize>, Path)> {
        let id = self.relays.get(index)?.as_ref()?.id;
        let out = self
            .core
            .handle_peer_datagram(now, id, from, &mut self.slots[slot], payload)?;
        Some((out.range, out.path))
    }

    /// Sends every pending relayed datagram and frees the slots. Datagrams are grouped
    /// by socket and destination (order within a flow is kept), each socket's share
    /// leaves in `sendmmsg` calls, and runs to one destination as UDP GSO messages. A
    /// full socket buffer drops the rest, as UDP would.
    fn flush_data(&mut self) {
        self.pending
            .sort_by_key(|p| (via(&p.path), destination(&p.path)));
        let (pending, slots) = (&self.pending, &self.slots);
        let sockets = Sockets {
            listeners: &self.listeners,
            relays: &self.relays,
        };
        send_runs(
            pending.len(),
            |i| {
                let p = &pending[i];
                (
                    via(&p.path),
                    &slots[p.slot][p.range.clone()],
                    destination(&p.path),
                )
            },
            &sockets,
            &mut self.gso,
        );
        let mut failed = std::mem::take(&mut self.failed);
        if pending
            .iter()
            .any(|p| matches!(via(&p.path), Via::Stream(_)))
        {
            let start = pending.partition_point(|p| !matches!(via(&p.path), Via::Stream(_)));
            let streams_part = &pending[start..];
            Self::write_streams(
                &mut self.streams,
                self.poll.registry(),
                streams_part.len(),
                |i| {
                    let p = &streams_part[i];
                    (
                        via(&p.path),
                        destination(&p.path),
                        &slots[p.slot][p.range.clone()],
                    )
                },
                &mut failed,
            );
        }
        self.close_failed(failed);
        self.pending.clear();
        self.taken = 0;
        // Responses of this turn go out with the data, at most one turn's worth queued.
        self.send_control();
    }

    /// Carries out the core's requests (bind or close relay sockets), at once: the
    /// allocation completes before the next datagram is handled.
    fn handle_events(&mut self) {
        while let Some(event) = self.core.poll_event() {
            match event {
                Event::BindRelay { relay, local } => {
                    let bound = self.bind_relay(relay, local);
                    if let Err(e) = &bound {
                        tracing::debug!(%local, "relay bind failed: {e}");
                    }
                    self.core
                        .handle_relay_bound(Instant::now(), relay, bound.is_ok());
                }
                Event::CloseRelay { relay } => self.close_relay(relay),
            }
        }
    }

    /// Sends the core's control messages queued this turn, those to clients of one
    /// listener together in `sendmmsg` calls.
    fn send_control(&mut self) {
        self.control.clear();
        self.control
            .extend(std::iter::from_fn(|| self.core.poll_transmit()));
        // Grouped by socket and destination, in order within each (a stable sort).
        self.control
            .sort_by_key(|t| (via(&t.path), destination(&t.path)));
        let control = &self.control;
        let sockets = Sockets {
            listeners: &self.listeners,
            relays: &self.relays,
        };
        send_runs(
            control.len(),
            |i| {
                (
                    via(&control[i].path),
                    &control[i].payload[..],
                    destination(&control[i].path),
                )
            },
            &sockets,
            &mut false,
        );
        let mut failed = std::mem::take(&mut self.failed);
        let start = control.partition_point(|t| !matches!(via(&t.path), Via::Stream(_)));
        let streams_part = &control[start..];
        Self::write_streams(
            &mut self.streams,
            self.poll.registry(),
            streams_part.len(),
            |i| {
                let t = &streams_part[i];
                (via(&t.path), destination(&t.path), &t.payload[..])
            },
            &mut failed,
        );
        self.control.clear();
        self.close_failed(failed);
    }

    fn bind_relay(&mut self, id: AllocId, local: SocketAddr) -> io::Result<()> {
        let mut socket = bind(local, false, self.opts)?;
        let index = id.index as usize;
        self.poll.registry().register(
            &mut socket,
            Token(RELAY_BASE + index),
            Interest::READABLE,
        )?;
        if self.relays.len() <= index {
            self.relays.resize_with(index + 1, || None);
        }
        if let Some(mut old) = self.relays[index].replace(Relay { id, socket }) {
            let _ = self.poll.registry().deregister(&mut old.socket);
        }
        Ok(())
    }

    fn close_relay(&mut self, id: AllocId) {
        if let Some(slot) = self.relays.get_mut(id.index as usize) {
            if slot.as_ref().is_some_and(|r| r.id == id) {
                if let Some(mut r) = slot.take() {
                    let _ = self.poll.registry().deregister(&mut r.socket);
                }
            }
        }
    }
}

/// The sockets datagrams leave through, borrowed apart from the rest of the shard.
struct Sockets<'a> {
    listeners: &'a [UdpSocket],
    relays: &'a [Option<Relay>],
}

impl Sockets<'_> {
    /// The socket behind `through`, if it still exists.
    fn fd(&self, through: Via) -> Option<RawFd> {
        match through {
            Via::Listener(l) => self.listeners.get(usize::from(l)).map(|s| s.as_raw_fd()),
            Via::Relay(id) => match self.relays.get(id.index as usize) {
                Some(Some(r)) if r.id == id => Some(r.socket.as_raw_fd()),
                _ => None,
            },
            // Connections are written by `Shard::write_streams`.
            Via::Stream(_) => None,
        }
    }
}

/// Sends `n` datagrams, `item(i)` naming each one's socket, bytes and destination, in
/// runs that leave through the same socket (`sendmmsg`, GSO for runs to one destination
/// when `gso` is set; cleared if the kernel refuses GSO). A full socket buffer drops the
/// rest of a run, as UDP would.
fn send_runs<'a>(
    n: usize,
    item: impl Fn(usize) -> (Via, &'a [u8], SocketAddr),
    sockets: &Sockets<'_>,
    gso: &mut bool,
) {
    let mut i = 0;
    while i < n {
        let (through, _, to) = item(i);
        let mut items = [SendItem { bytes: &[], to }; batch::MAX_ITEMS];
        let mut m = 0;
        while i + m < n && m < batch::MAX_ITEMS {
            let (v, bytes, to) = item(i + m);
            if v != through {
                break;
            }
            items[m] = SendItem { bytes, to };
            m += 1;
        }
        if let Some(fd) = sockets.fd(through) {
            let mut sent = 0;
            while sent < m {
                match batch::send_segmented(fd, &items[sent..m], *gso) {
                    Ok(0) => break,
                    Ok(k) => sent += k,
                    // What the kernel answers when it (or the device) cannot do GSO.
                    Err(e)
                        if *gso
                            && matches!(
                                e.raw_os_error(),
                                Some(
                                    libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP
                                )
                            ) =>
                    {
                        tracing::info!("UDP GSO unavailable ({e}); sending datagrams one by one");
                        *gso = false;
                    }
                    Err(e) => {
                        tracing::trace!("send failed: {e}");
                        break;
                    }
                }
            }
        }
        i += m;
    }
}
