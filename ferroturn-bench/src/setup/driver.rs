//! The setup driver: one mio loop with up to `--concurrency` jobs in flight, each a
//! fresh UDP socket walking Allocate (401, then with credentials), CreatePermission and
//! ChannelBind, or later a Refresh of lifetime 0; requests are retransmitted (RFC 8489
//! section 6.2.1) until answered or timed out.

use super::report::Stats;
use crate::common::{self, ResponseFields};
use crate::{process, sockets};
use ferroturn_core::proto::integrity::long_term_key;
use ferroturn_core::proto::wire::Class;
use ferroturn_core::proto::wire::{attr, method};
use ferroturn_core::proto::writer::MessageWriter;
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use rand::RngExt;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long one request is retransmitted (RTO 250 ms, doubling) before it counts as lost.
pub(super) const SETUP_TIMEOUT: Duration = Duration::from_secs(3);
const RELEASE_TIMEOUT: Duration = Duration::from_secs(1);
/// The channel every setup binds (each on its own allocation).
const CHANNEL: u16 = 0x4000;
/// Releasing stops starting Refreshes after this long (a server gone quiet).
const RELEASE_DEADLINE: Duration = Duration::from_secs(30);

/// Where a setup is: the request it waits on the response to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Challenge,
    Allocate,
    Permission,
    ChannelBind,
    Release,
}

/// One socket's work in flight: its current request, retransmitted until answered.
struct Job {
    socket: UdpSocket,
    stage: Stage,
    realm: String,
    nonce: Vec<u8>,
    allocated: bool,
    started: Instant,
    txn: [u8; 12],
    msg: Vec<u8>,
    first_sent: Instant,
    resend_at: Instant,
    rto: Duration,
    stale_nonces: u8,
}

/// A finished setup's socket, kept open (and its allocation alive) until released.
pub(super) struct Open {
    socket: UdpSocket,
    realm: String,
    nonce: Vec<u8>,
}

pub(super) enum Phase {
    /// Setups still to start.
    Setup(u32),
    /// Allocations still to release.
    Release(Vec<Open>),
}

enum Step {
    Sent,
    Done(Result<(), String>),
}

pub(super) struct Driver {
    poll: Poll,
    server: SocketAddr,
    /// Client addresses, used in turn.
    sources: Vec<IpAddr>,
    started: usize,
    peer: SocketAddr,
    user: String,
    password: String,
    key: Option<(String, [u8; 16])>,
    slots: Vec<Option<Job>>,
    free: Vec<usize>,
    active: usize,
    timeout: Duration,
    pub open: Vec<Open>,
    pub stats: Stats,
    release: (u32, u32),
    pub last_done: Option<Instant>,
    /// Why no more setups could start (out of sockets), reported after the release.
    pub fatal: Option<String>,
    /// Set by SIGINT or SIGTERM: start no more setups, end the hold, release.
    pub stop: &'static AtomicBool,
}

impl Driver {
    pub fn new(
        server: SocketAddr,
        sources: Vec<IpAddr>,
        peer: SocketAddr,
        user: String,
        password: String,
    ) -> Result<Self, String> {
        Ok(Self {
            poll: Poll::new().map_err(|e| format!("epoll: {e}"))?,
            server,
            sources,
            started: 0,
            peer,
            user,
            password,
            key: None,
            slots: Vec::new(),
            free: Vec::new(),
            active: 0,
            timeout: SETUP_TIMEOUT,
            open: Vec::new(),
            stats: Stats::default(),
            release: (0, 0),
            last_done: None,
            fatal: None,
            stop: process::stop_on_signals(),
        })
    }

    /// Releases every open allocation; returns (released, failed).
    pub fn release(&mut self, concurrency: usize) -> Result<(u32, u32), String> {
        let mut phase = Phase::Release(std::mem::take(&mut self.open));
        let deadline = Instant::now() + RELEASE_DEADLINE;
        self.drive(&mut phase, concurrency, deadline, RELEASE_TIMEOUT)?;
        Ok(self.release)
    }

    /// Runs `phase` with up to `concurrency` jobs in flight; starts none after `deadline`.
    pub fn drive(
        &mut self,
        phase: &mut Phase,
        concurrency: usize,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(), String> {
        self.timeout = timeout;
        self.slots = (0..concurrency).map(|_| None).collect();
        self.free = (0..concurrency).rev().collect();
        let mut events = Events::with_capacity(1024);
        let mut buf = vec![0u8; 2048];
        loop {
            while Instant::now() < deadline && !self.free.is_empty() {
                let Some(job) = self.next_job(phase) else {
                    break;
                };
                self.start(job)?;
            }
            if self.active == 0 {
                return Ok(());
            }
            let wait = self.next_timer().saturating_duration_since(Instant::now());
            match self.poll.poll(&mut events, Some(wait)) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("epoll: {e}")),
            }
            for event in &events {
                self.on_readable(event.token().0, &mut buf);
            }
            self.on_timers(Instant::now());
        }
    }

    /// The next job of `phase`, or `None` when the phase has no more to start.
    fn next_job(&mut self, phase: &mut Phase) -> Option<Job> {
        let now = Instant::now();
        let (socket, stage, realm, nonce) = match phase {
            Phase::Setup(0) => return None,
            Phase::Setup(_) if self.fatal.is_some() || self.stop.load(Ordering::Relaxed) => {
                return None;
            }
            Phase::Setup(left) => {
                let held = self.open.len() + self.active;
                let ip = self.sources[self.started % self.sources.len()];
                self.started += 1;
                match sockets::bind_load_socket(ip, held) {
                    Ok(s) => {
                        *left -= 1;
                        (s, Stage::Challenge, String::new(), Vec::new())
                    }
                    Err(e) => {
                        self.fatal = Some(e);
                        return None;
                    }
                }
            }
            Phase::Release(list) => {
                let o = list.pop()?;
                (o.socket, Stage::Release, o.realm, o.nonce)
            }
        };
        Some(Job {
            socket,
            stage,
            realm,
            nonce,
            allocated: stage == Stage::Release,
            started: now,
            txn: [0; 12],
            msg: Vec::new(),
            first_sent: now,
            resend_at: now,
            rto: Duration::ZERO,
            stale_nonces: 0,
        })
    }

    fn start(&mut self, mut job: Job) -> Result<(), String> {
        let Some(slot) = self.free.pop() else {
            return Ok(());
        };
        self.poll
            .registry()
            .register(&mut job.socket, Token(slot), Interest::READABLE)
            .map_err(|e| format!("epoll register: {e}"))?;
        self.active += 1;
        match self.send(&mut job) {
            Ok(()) => self.slots[slot] = Some(job),
            Err(e) => self.finish(slot, job, Err(e)),
        }
        Ok(())
    }

    /// Sends the request of `job`'s stage with a fresh transaction id.
    fn send(&mut self, job: &mut Job) -> Result<(), String> {
        job.txn = rand::rng().random();
        let method = match job.stage {
            Stage::Challenge | Stage::Allocate => method::ALLOCATE,
            Stage::Permission => method::CREATE_PERMISSION,
            Stage::ChannelBind => method::CHANNEL_BIND,
            Stage::Release => method::REFRESH,
        };
        let mut w = MessageWriter::with_capacity(method, Class::Request, &job.txn, 192);
        if job.stage != Stage::Challenge {
            w = w
                .attr(attr::USERNAME, self.user.as_bytes())
                .attr(attr::REALM, job.realm.as_bytes())
                .attr(attr::NONCE, &job.nonce);
        }
        w = match job.stage {
            // RFC 8656 section 18.11: protocol 17 (UDP) and three RFFU bytes.
            Stage::Challenge | Stage::Allocate => w.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]),
            Stage::Permission => w.xor_address(attr::XOR_PEER_ADDRESS, self.peer),
            Stage::ChannelBind => w
                .attr(
                    attr::CHANNEL_NUMBER,
                    &[(CHANNEL >> 8) as u8, CHANNEL as u8, 0, 0],
                )
                .xor_address(attr::XOR_PEER_ADDRESS, self.peer),
            Stage::Release => w.attr(attr::LIFETIME, &0u32.to_be_bytes()),
        };
        let key = (job.stage != Stage::Challenge).then(|| self.key_for(&job.realm));
        job.msg = w
            .seal(key.as_ref().map(|k| &k[..]), true)
            .ok_or("a request does not fit in a STUN message")?;
        let now = Instant::now();
        job.first_sent = now;
        job.rto = Duration::from_millis(250);
        job.resend_at = now + job.rto;
        match job.socket.send_to(&job.msg, self.server) {
            Ok(_) => Ok(()),
            // A full socket buffer is a lost datagram: the retransmission covers it.
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
            Err(_) => Err("send".into()),
        }
    }

    /// The long-term key (RFC 8489 section 9.2.2) for `realm`, computed once per realm.
    fn key_for(&mut self, realm: &str) -> [u8; 16] {
        match &self.key {
            Some((r, k)) if r == realm => *k,
            _ => {
                let k = long_term_key(&self.user, realm, self.password.as_bytes());
                self.key = Some((realm.to_owned(), k));
                k
            }
        }
    }

    fn on_readable(&mut self, slot: usize, buf: &mut [u8]) {
        loop {
            let Some(job) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
                return;
            };
            let n = match job.socket.recv_from(buf) {
                Ok((n, from)) if from == self.server => n,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                // ICMP errors (server gone) surface here; the timeout will count them.
                Err(_) => return,
            };
            let bytes = &buf[..n];
            if bytes.get(8..20) != Some(&job.txn[..]) {
                continue;
            }
            let Some(mut job) = self.slots[slot].take() else {
                return;
            };
            let step = match common::read_response(bytes) {
                Some(r) => self.on_response(&mut job, r),
                None => Step::Done(Err("malformed".into())),
            };
            match step {
                Step::Sent => self.slots[slot] = Some(job),
                Step::Done(result) => return self.finish(slot, job, result),
            }
        }
    }

    /// Moves `job` on after a response to its current request.
    fn on_response(&mut self, job: &mut Job, r: ResponseFields<'_>) -> Step {
        match (job.stage, r.error_code.filter(|_| !r.success)) {
            (Stage::Challenge, Some(401)) => match (r.realm, r.nonce) {
                (Some(realm), Some(nonce)) => {
                    job.realm = String::from_utf8_lossy(realm).into_owned();
                    job.nonce = nonce.to_vec();
                    job.stage = Stage::Allocate;
                    job.allocated = true;
                }
                _ => return Step::Done(Err("401-without-nonce".into())),
            },
            (Stage::Challenge, None) => return Step::Done(Err("no-challenge".into())),
            // RFC 8489 section 9.2.5: a stale nonce; retry with the fresh one.
            (_, Some(438)) if job.stale_nonces < 2 && r.nonce.is_some() => {
                job.nonce = r.nonce.unwrap_or_default().to_vec();
                job.stale_nonces += 1;
            }
            (stage, Some(code)) => {
                // A refused Allocate leaves nothing to release.
                job.allocated &= stage != Stage::Allocate;
                return Step::Done(Err(code.to_string()));
            }
            (Stage::Allocate, None) => job.stage = Stage::Permission,
            (Stage::Permission, None) => job.stage = Stage::ChannelBind,
            (Stage::ChannelBind | Stage::Release, None) => return Step::Done(Ok(())),
        }
        match self.send(job) {
            Ok(()) => Step::Sent,
            Err(e) => Step::Done(Err(e)),
        }
    }

    fn finish(&mut self, slot: usize, mut job: Job, result: Result<(), String>) {
        let now = Instant::now();
        let _ = self.poll.registry().deregister(&mut job.socket);
        self.active -= 1;
        self.free.push(slot);
        if job.stage == Stage::Release {
            match result {
                Ok(()) => self.release.0 += 1,
                Err(_) => self.release.1 += 1,
            }
            return;
        }
        self.last_done = Some(now);
        match result {
            Ok(()) => {
                self.stats.ok += 1;
                let us = now.duration_since(job.started).as_micros();
                self.stats.latencies_us.push(us as u64);
            }
            Err(e) => *self.stats.failures.entry(e).or_default() += 1,
        }
        // The Allocate with credentials was sent: an allocation may exist, keep its
        // 5-tuple out of reuse and release it at the end.
        if job.allocated {
            self.open.push(Open {
                socket: job.socket,
                realm: job.realm,
                nonce: job.nonce,
            });
        }
    }

    /// The earliest retransmission time of the jobs in flight.
    fn next_timer(&self) -> Instant {
        let later = Instant::now() + Duration::from_secs(1);
        self.slots
            .iter()
            .flatten()
            .map(|j| j.resend_at)
            .min()
            .unwrap_or(later)
    }

    /// Retransmits requests whose RTO passed (RFC 8489 section 6.2.1); gives up after the
    /// phase's timeout.
    fn on_timers(&mut self, now: Instant) {
        for slot in 0..self.slots.len() {
            let due = matches!(&self.slots[slot], Some(j) if j.resend_at <= now);
            if !due {
                continue;
            }
            let Some(mut job) = self.slots[slot].take() else {
                continue;
            };
            let end = job.first_sent + self.timeout;
            if now >= end {
                self.finish(slot, job, Err("timeout".into()));
                continue;
            }
            let _ = job.socket.send_to(&job.msg, self.server);
            job.rto *= 2;
            job.resend_at = (now + job.rto).min(end);
            self.slots[slot] = Some(job);
        }
    }
}
