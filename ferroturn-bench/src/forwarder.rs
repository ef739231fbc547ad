//! `ferroturn-bench forwarder`: the kernel floor. The socket pattern of a TURN relay
//! without the protocol: one listen socket; for each new client address one "relay"
//! socket connected to `--peer`, which carries that client's datagrams there; datagrams
//! back on a relay socket go to its client through the listen socket.
//!
//! One thread, one mio poll, the best batching a server can use, so no server should
//! beat it: datagrams from the listen socket arrive by recvmmsg and leave in runs
//! (consecutive datagrams of one client) on the client's relay socket; replies are
//! received straight into one outgoing batch and leave on the listen socket once per
//! poll turn. Runs of equal-length datagrams to one destination go as one UDP GSO
//! message, the rest by sendmmsg; no payload is copied.
//!
//! `--io uring` runs the same forwarder on io_uring instead (see [`uring`]), to measure
//! one against the other under the same load.
//!
//! Bounded: at most [`MAX_CLIENTS`] relay sockets at once (a client quiet for
//! [`IDLE_EXPIRY`] loses its socket, so one forwarder serves run after run), and it exits
//! after `--duration` (at most 600 s) or on SIGINT/SIGTERM.

mod uring;

use crate::{process, sockets};
use ferroturn_udp::{Slots, Wait};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const MAX_CLIENTS: usize = 4096;
const MAX_DURATION_S: u64 = 600;
const BATCH: usize = 64;
/// Largest datagram forwarded; longer ones are dropped.
const MAX_DATAGRAM: usize = 9216;
const BUFFER_BYTES: usize = 4 << 20;
const LISTEN: Token = Token(usize::MAX);
const STATUS_EVERY: Duration = Duration::from_secs(5);
const IDLE_EXPIRY: Duration = Duration::from_secs(30);

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address clients send to (loopback only).
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// Where every client's datagrams go (loopback only): the load generator's echo peer.
    #[arg(long, value_name = "ADDR")]
    peer: SocketAddr,
    /// Seconds before it exits by itself (at most 600).
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    duration: u64,
    /// How datagrams reach and leave user space.
    #[arg(long, value_enum, default_value_t = Io::Mmsg)]
    io: Io,
    /// With --io uring: provided buffers in the receive ring (a power of two, at most
    /// 32768), shared by every socket.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    uring_buffers: u16,
    /// With --io uring: when the kernel runs receive completions (see the ring setup).
    #[arg(long, value_enum, default_value_t = uring::Taskrun::Defer)]
    uring_taskrun: uring::Taskrun,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Io {
    /// epoll (mio), recvmmsg, sendmmsg with UDP GSO.
    Mmsg,
    /// io_uring: multishot recvmsg into a provided-buffer ring, sendmsg submissions with
    /// UDP GSO, one io_uring_enter per loop turn (no SQPOLL).
    Uring,
}

#[derive(Default)]
struct Counts {
    up: u64,
    down: u64,
    dropped: u64,
    /// Relay sockets ever created.
    clients: u64,
    /// Loop turns (each one wait for events) and system calls on the data path (the
    /// waits included), to show how many datagrams each call moves.
    turns: u64,
    calls: u64,
}

impl Counts {
    /// The final line both designs print.
    fn summary(&self, seconds: f64) -> String {
        format!(
            "forwarder: clients={} up={} down={} dropped={} turns={} calls={} seconds={seconds:.1}",
            self.clients, self.up, self.down, self.dropped, self.turns, self.calls
        )
    }
}

struct Relay {
    socket: UdpSocket,
    client: SocketAddr,
    /// The poll turn in which it last carried a datagram.
    used: Instant,
}

struct Forwarder {
    poll: Poll,
    listen: UdpSocket,
    peer: SocketAddr,
    clients: HashMap<SocketAddr, usize>,
    /// Relay sockets by token; expired ones leave a hole, reused through `free`.
    relays: Vec<Option<Relay>>,
    free: Vec<usize>,
    /// The current poll turn's time, for `Relay::used`.
    now: Instant,
    /// Datagrams from clients, forwarded in place.
    up: Slots,
    /// Replies for clients, collected across relay sockets: `down_len` slots filled.
    down: Slots,
    down_len: usize,
    counts: Counts,
    /// The readiness events of a poll (reused).
    events: Events,
}

pub fn run(args: Args) -> Result<(), String> {
    sockets::require_loopback(args.listen)?;
    sockets::require_loopback(args.peer)?;
    if !(1..=MAX_DURATION_S).contains(&args.duration) {
        return Err("--duration must be in 1..=600 seconds".into());
    }
    let stop = process::stop_on_signals();
    process::raise_nofile_limit();
    if args.io == Io::Uring {
        if !args.uring_buffers.is_power_of_two() || args.uring_buffers > 32768 {
            return Err("--uring-buffers must be a power of two, at most 32768".into());
        }
        let opts = uring::Options {
            buffers: args.uring_buffers,
            taskrun: args.uring_taskrun,
        };
        return uring::run(&args, opts, stop);
    }
    let mut f = Forwarder::new(args.listen, args.peer)?;
    let local = f.listen.local_addr().map_err(|e| e.to_string())?;
    eprintln!(
        "forwarder: listening on {local}, forwarding to {}",
        args.peer
    );
    drive(&mut f, args.duration, stop)
}

/// One design of the forwarder, as the shared loop ([`drive`]) runs it.
trait Design {
    fn counts(&self) -> &Counts;
    /// Clients with a relay socket now.
    fn clients(&self) -> usize;
    fn expire_idle(&mut self);
    /// One loop turn: wait at most `timeout` for datagrams, then forward them.
    fn turn(&mut self, timeout: Duration) -> Result<(), String>;
}

/// The loop both designs share: turns until `duration` seconds have passed or a signal
/// came, a status line every [`STATUS_EVERY`] when something moved and idle relays
/// expired as often, then the summary line.
fn drive(f: &mut impl Design, duration: u64, stop: &AtomicBool) -> Result<(), String> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(duration);
    let mut status_at = started + STATUS_EVERY;
    let mut last = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if now >= status_at {
            let c = f.counts();
            if (c.up, c.down) != last {
                eprintln!(
                    "forwarder: clients={} up={} down={} dropped={}",
                    f.clients(),
                    c.up,
                    c.down,
                    c.dropped
                );
                last = (c.up, c.down);
            }
            f.expire_idle();
            status_at = now + STATUS_EVERY;
        }
        let timeout = deadline
            .min(status_at)
            .saturating_duration_since(now)
            .min(Duration::from_millis(200));
        f.turn(timeout)?;
    }
    println!("{}", f.counts().summary(started.elapsed().as_secs_f64()));
    Ok(())
}

impl Design for Forwarder {
    fn counts(&self) -> &Counts {
        &self.counts
    }

    fn clients(&self) -> usize {
        self.clients.len()
    }

    fn expire_idle(&mut self) {
        Forwarder::expire_idle(self);
    }

    fn turn(&mut self, timeout: Duration) -> Result<(), String> {
        // Taken out for the turn, so the drains may borrow the forwarder (an empty
        // `Events` allocates nothing).
        let mut events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        let result = self.handle_events(&mut events, timeout);
        self.events = events;
        result
    }
}

impl Forwarder {
    fn handle_events(&mut self, events: &mut Events, timeout: Duration) -> Result<(), String> {
        match self.poll.poll(events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(format!("poll: {e}")),
        }
        self.now = Instant::now();
        self.counts.turns += 1;
        self.counts.calls += 1;
        for ev in events.iter() {
            match ev.token() {
                LISTEN => self.drain_listen()?,
                Token(i) => self.drain_relay(i)?,
            }
        }
        self.flush_down();
        Ok(())
    }
}

impl Forwarder {
    fn new(listen: SocketAddr, peer: SocketAddr) -> Result<Self, String> {
        let poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
        let mut socket = UdpSocket::bind(listen).map_err(|e| format!("bind {listen}: {e}"))?;
        sockets::enlarge_buffers(&socket, BUFFER_BYTES);
        poll.registry()
            .register(&mut socket, LISTEN, Interest::READABLE)
            .map_err(|e| format!("poll: {e}"))?;
        Ok(Self {
            poll,
            listen: socket,
            peer,
            clients: HashMap::new(),
            relays: Vec::new(),
            free: Vec::new(),
            now: Instant::now(),
            up: Slots::new(BATCH, MAX_DATAGRAM).with_gso(),
            down: Slots::new(BATCH, MAX_DATAGRAM).with_gso(),
            down_len: 0,
            counts: Counts::default(),
            events: Events::with_capacity(1024),
        })
    }

    /// The relay socket of `client`, created on its first datagram; `None` once
    /// [`MAX_CLIENTS`] exist or if the socket cannot be made.
    fn relay_for(&mut self, client: SocketAddr) -> Option<usize> {
        if let Some(&i) = self.clients.get(&client) {
            return Some(i);
        }
        if self.clients.len() >= MAX_CLIENTS {
            return None;
        }
        // The unspecified address: connect() picks the source the route to the peer
        // has (loopback for a loopback peer, the veth's address in a namespace bed).
        let local = SocketAddr::new(
            if self.peer.is_ipv4() {
                std::net::Ipv4Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            },
            0,
        );
        let i = self.free.last().copied().unwrap_or(self.relays.len());
        let mut socket = UdpSocket::bind(local).ok()?;
        socket.connect(self.peer).ok()?;
        sockets::enlarge_buffers(&socket, BUFFER_BYTES);
        self.poll
            .registry()
            .register(&mut socket, Token(i), Interest::READABLE)
            .ok()?;
        let relay = Some(Relay {
            socket,
            client,
            used: self.now,
        });
        match self.free.pop() {
            Some(_) => self.relays[i] = relay,
            None => self.relays.push(relay),
        }
        self.clients.insert(client, i);
        self.counts.clients += 1;
        Some(i)
    }

    /// Closes the relay sockets of clients quiet for [`IDLE_EXPIRY`].
    fn expire_idle(&mut self) {
        for i in 0..self.relays.len() {
            let idle = matches!(&self.relays[i], Some(r) if self.now - r.used > IDLE_EXPIRY);
            if !idle {
                continue;
            }
            if let Some(mut r) = self.relays[i].take() {
                // Closing the socket drops its registration too; this only tidies up.
                let _ = self.poll.registry().deregister(&mut r.socket);
                self.clients.remove(&r.client);
                self.free.push(i);
            }
        }
    }

    /// Drains the listen socket; each run of one client's datagrams goes out in one
    /// send on its relay socket.
    fn drain_listen(&mut self) -> Result<(), String> {
        let fd = self.listen.as_raw_fd();
        loop {
            self.counts.calls += 1;
            let n = match self.up.recv(fd, 0..BATCH, Wait::No) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("receive on the listen socket: {e}")),
            };
            self.counts.up += n as u64;
            let mut i = 0;
            while i < n {
                if self.up.truncated(i) {
                    self.counts.dropped += 1;
                    i += 1;
                    continue;
                }
                let src = self.up.addr(i);
                let mut j = i + 1;
                while j < n && self.up.addr(j) == src && !self.up.truncated(j) {
                    j += 1;
                }
                match src.and_then(|s| self.relay_for(s)) {
                    Some(r) => self.forward_run(r, i..j),
                    None => self.counts.dropped += (j - i) as u64,
                }
                i = j;
            }
            if n < BATCH {
                return Ok(());
            }
        }
    }

    /// Sends slots `run` of the incoming batch to the peer on relay `r`.
    fn forward_run(&mut self, r: usize, run: std::ops::Range<usize>) {
        let mut at = run.start;
        for k in run.clone() {
            self.up.set_addr(k, None);
        }
        let Some(relay) = self.relays[r].as_mut() else {
            // `clients` only names live relays; never reached.
            self.counts.dropped += run.len() as u64;
            return;
        };
        relay.used = self.now;
        let fd = relay.socket.as_raw_fd();
        while at < run.end {
            self.counts.calls += 1;
            match self.up.send(fd, at..run.end) {
                Ok(k) => at += k,
                // A full buffer or a pending ICMP error: drop this one, keep going.
                Err(_) => {
                    self.counts.dropped += 1;
                    at += 1;
                }
            }
        }
    }

    /// Drains relay socket `i` into the outgoing batch, addressed to its client.
    fn drain_relay(&mut self, i: usize) -> Result<(), String> {
        let Some(Some(relay)) = self.relays.get_mut(i) else {
            return Ok(());
        };
        relay.used = self.now;
        let (fd, client) = (relay.socket.as_raw_fd(), relay.client);
        loop {
            if self.down_len == BATCH {
                self.flush_down();
            }
            let want = BATCH - self.down_len;
            self.counts.calls += 1;
            let n = match self.down.recv(fd, self.down_len..BATCH, Wait::No) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                // ICMP errors (the peer was gone for a moment) and signals.
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Interrupted | ErrorKind::ConnectionRefused
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(format!("receive on relay socket {i}: {e}")),
            };
            for k in self.down_len..self.down_len + n {
                self.down.set_addr(k, Some(client));
            }
            self.down_len += n;
            if n < want {
                return Ok(());
            }
        }
    }

    /// Sends the collected replies on the listen socket.
    fn flush_down(&mut self) {
        let fd = self.listen.as_raw_fd();
        let mut at = 0;
        while at < self.down_len {
            self.counts.calls += 1;
            match self.down.send(fd, at..self.down_len) {
                Ok(k) => {
                    at += k;
                    self.counts.down += k as u64;
                }
                Err(_) => {
                    self.counts.dropped += 1;
                    at += 1;
                }
            }
        }
        self.down_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket as StdSocket;

    fn bound() -> StdSocket {
        let s = StdSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s
    }

    #[test]
    fn idle_clients_lose_their_relay_and_busy_ones_keep_it() {
        let peer = bound();
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut f = Forwarder::new(listen, peer.local_addr().unwrap()).unwrap();
        let to = f.listen.local_addr().unwrap();
        let (a, b) = (bound(), bound());
        let mut buf = [0u8; 64];

        a.send_to(b"from a", to).unwrap();
        f.drain_listen().unwrap();
        let n = peer.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"from a");

        // Only `a` is idle: `b` used its relay just now.
        f.now = Instant::now();
        b.send_to(b"from b", to).unwrap();
        f.drain_listen().unwrap();
        peer.recv_from(&mut buf).unwrap();
        f.relays[0].as_mut().unwrap().used = f.now - IDLE_EXPIRY * 2;
        f.expire_idle();
        assert!(f.relays[0].is_none() && f.relays[1].is_some());
        assert_eq!((f.clients.len(), f.free.as_slice()), (1, &[0][..]));

        // `b` still gets replies; a returning `a` gets a new relay in the freed slot.
        peer.send_to(
            b"to b",
            f.relays[1].as_ref().unwrap().socket.local_addr().unwrap(),
        )
        .unwrap();
        f.drain_relay(1).unwrap();
        f.flush_down();
        let n = b.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"to b");
        a.send_to(b"again", to).unwrap();
        f.drain_listen().unwrap();
        let n = peer.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"again");
        assert_eq!(f.clients[&a.local_addr().unwrap()], 0);
        assert!(f.free.is_empty() && f.relays.len() == 2 && f.counts.clients == 3);
    }
}
