//! One shard's UDP event loop: listener sockets in, relay sockets out and in, the core
//! in between. The receive buffer is allocated once; peer datagrams land after
//! [`HEADROOM`] bytes so the core frames them in place.

use crate::core::proto::data::{HEADROOM, TAILROOM};
use crate::core::server::{DataTransmit, Event, FiveTuple, Path, Server, Transport};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const WAKER: Token = Token(0);
const LISTENER_BASE: usize = 1;
const RELAY_BASE: usize = 1 << 16;
/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;
/// Datagrams taken from one socket before others get a turn.
const BUDGET: usize = 64;

/// Creates a non-blocking UDP listener (IPv6 sockets are IPv6-only, so `::` and
/// `0.0.0.0` can both be listened on).
pub fn bind_listener(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(UdpSocket::from_std(socket.into()))
}

struct Relay {
    id: crate::core::server::AllocId,
    socket: UdpSocket,
}

pub struct Shard {
    poll: Poll,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    core: Server,
    listeners: Vec<UdpSocket>,
    relays: Vec<Option<Relay>>,
    /// Sockets that still had data when their budget ran out.
    backlog: Vec<Token>,
    buf: Box<[u8]>,
}

impl Shard {
    pub fn new(
        core: Server,
        mut listeners: Vec<UdpSocket>,
        stop: Arc<AtomicBool>,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        for (i, l) in listeners.iter_mut().enumerate() {
            poll.registry()
                .register(l, Token(LISTENER_BASE + i), Interest::READABLE)?;
        }
        Ok(Self {
            poll,
            waker,
            stop,
            core,
            listeners,
            relays: Vec::new(),
            backlog: Vec::new(),
            buf: vec![0u8; HEADROOM + MAX_DATAGRAM + TAILROOM].into_boxed_slice(),
        })
    }

    pub fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(256);
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
            let mut ready: Vec<Token> = std::mem::take(&mut self.backlog);
            ready.extend(events.iter().map(|e| e.token()).filter(|t| *t != WAKER));
            for token in ready {
                self.drain(token);
            }
            let now = Instant::now();
            if now.duration_since(last_clock) >= Duration::from_secs(1) {
                self.core.set_wall_clock(now, super::unix_now());
                last_clock = now;
            }
            self.core.handle_timeout(now);
            self.flush();
        }
    }

    /// Reads up to [`BUDGET`] datagrams from one socket.
    fn drain(&mut self, token: Token) {
        for _ in 0..BUDGET {
            let received = if token.0 >= RELAY_BASE {
                self.receive_peer(token.0 - RELAY_BASE)
            } else {
                self.receive_client(token.0 - LISTENER_BASE)
            };
            match received {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // ICMP errors surface as errors on the next recv; keep reading.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(e) => {
                    tracing::debug!("recv failed: {e}");
                    return;
                }
            }
        }
        if !self.backlog.contains(&token) {
            self.backlog.push(token);
        }
    }

    fn receive_client(&mut self, index: usize) -> io::Result<()> {
        let Some(socket) = self.listeners.get(index) else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let (n, from) = socket.recv_from(&mut self.buf[..MAX_DATAGRAM])?;
        let tuple = FiveTuple {
            client: from,
            listener: index as u16,
            transport: Transport::Udp,
        };
        let now = Instant::now();
        if let Some(t) = self
            .core
            .handle_client_datagram(now, tuple, &mut self.buf[..n])
        {
            self.send_data(t);
        }
        self.flush();
        Ok(())
    }

    fn receive_peer(&mut self, index: usize) -> io::Result<()> {
        let Some(Some(relay)) = self.relays.get(index) else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let id = relay.id;
        let (n, from) = relay
            .socket
            .recv_from(&mut self.buf[HEADROOM..HEADROOM + MAX_DATAGRAM])?;
        let now = Instant::now();
        if let Some(t) =
            self.core
                .handle_peer_datagram(now, id, from, &mut self.buf, HEADROOM..HEADROOM + n)
        {
            self.send_data(t);
        }
        Ok(())
    }

    fn send_data(&self, t: DataTransmit) {
        let Some(bytes) = self.buf.get(t.range) else {
            return;
        };
        self.send(t.path, bytes);
    }

    /// Sends one datagram; a full socket buffer drops it, as UDP would.
    fn send(&self, path: Path, bytes: &[u8]) {
        let result = match path {
            Path::Client {
                listener, client, ..
            } => match self.listeners.get(usize::from(listener)) {
                Some(s) => s.send_to(bytes, client),
                None => return,
            },
            Path::Peer { relay, peer } => match self.relays.get(relay.index as usize) {
                Some(Some(r)) if r.id == relay => r.socket.send_to(bytes, peer),
                _ => return,
            },
        };
        if let Err(e) = result {
            tracing::trace!("send failed: {e}");
        }
    }

    /// Carries out the core's requests and sends its control messages.
    fn flush(&mut self) {
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
                Event::CloseRelay { relay } => {
                    if let Some(slot) = self.relays.get_mut(relay.index as usize) {
                        if slot.as_ref().is_some_and(|r| r.id == relay) {
                            if let Some(mut r) = slot.take() {
                                let _ = self.poll.registry().deregister(&mut r.socket);
                            }
                        }
                    }
                }
            }
        }
        while let Some(t) = self.core.poll_transmit() {
            self.send(t.path, &t.payload);
        }
    }

    fn bind_relay(
        &mut self,
        id: crate::core::server::AllocId,
        local: SocketAddr,
    ) -> io::Result<()> {
        let mut socket = bind_listener(local)?;
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
}
