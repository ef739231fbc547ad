//! `ferroturn-bench setup`: allocation setups per second, and memory per idle allocation.
//!
//! A setup is what a WebRTC client does before media flows: an unauthenticated Allocate
//! (answered 401 with REALM and NONCE), the Allocate with credentials, CreatePermission
//! and ChannelBind, all from one fresh UDP socket (a new 5-tuple). `--concurrency` setups
//! are in flight at once, driven by one mio event loop, so the generator spends a few
//! microseconds per request; its own CPU use is reported next to the server's.
//!
//! Every socket stays open until the end of the run, so no 5-tuple is reused while its
//! allocation lives; then every allocation is released with a Refresh of lifetime 0
//! (best effort). `--hold` keeps them idle first, and samples the server's RSS at the end
//! of the hold: (RSS then - RSS before) / allocations is the memory per idle allocation.

use crate::common::{self, RequestWriter, ResponseFields};
use crate::{process, sockets};
use ferroturn_core::proto::integrity::long_term_key;
use ferroturn_core::proto::wire::{attr, method};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use rand::RngExt;
use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The TURN server (loopback only).
    #[arg(long)]
    server: SocketAddr,
    /// TURN REST shared secret; usernames are `<expiry>:<user>`.
    #[arg(
        long,
        required_unless_present = "password",
        conflicts_with = "password"
    )]
    secret: Option<String>,
    /// The user (the REST user part with --secret, a static user with --password).
    #[arg(long, default_value = "bench")]
    user: String,
    /// Password of a static user.
    #[arg(long)]
    password: Option<String>,
    /// Allocations to set up.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    count: u32,
    /// Setups in flight at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    concurrency: u32,
    /// Keep every allocation idle this many seconds before releasing it (allocations live
    /// 600 s by default on ferroturn and coturn, so no refresh is needed).
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=540))]
    hold: Option<u64>,
    /// The server's process id: RSS before, after, and per allocation; CPU per setup.
    #[arg(long)]
    server_pid: Option<u32>,
    /// The peer of CreatePermission and ChannelBind (nothing is sent to it).
    #[arg(long, default_value = "127.0.0.1:9")]
    peer: SocketAddr,
    /// First local address of the client sockets (default 127.0.0.2: not the server's
    /// address, so client ports never collide with relay ports).
    #[arg(long)]
    bind: Option<IpAddr>,
    /// Client addresses, consecutive from --bind, used in turn: clients come from many
    /// addresses, and servers may limit unauthenticated answers per source IP.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    source_ips: u32,
    /// Stop starting setups after this many seconds.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=600))]
    max_duration: u64,
    /// Also print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

/// How long one request is retransmitted (RTO 250 ms, doubling) before it counts as lost.
const SETUP_TIMEOUT: Duration = Duration::from_secs(3);
const RELEASE_TIMEOUT: Duration = Duration::from_secs(1);
/// The channel every setup binds (each on its own allocation).
const CHANNEL: u16 = 0x4000;
/// How often a hold looks at the stop flag.
const STEP: Duration = Duration::from_millis(100);
/// Releasing stops starting Refreshes after this long (a server gone quiet).
const RELEASE_DEADLINE: Duration = Duration::from_secs(30);

pub fn run(args: Args) -> Result<(), String> {
    sockets::require_loopback(args.server)?;
    sockets::require_loopback(args.peer)?;
    let bind = args
        .bind
        .unwrap_or_else(|| sockets::default_client_ip(args.server));
    let sources = sockets::loopback_pool(bind, args.source_ips, args.server)?;
    let fd_limit = process::raise_nofile_limit();
    let (user, password) =
        common::credentials(args.secret.as_deref(), &args.user, args.password.as_deref());
    let mut driver = Driver::new(args.server, sources, args.peer, user, password)?;
    let pid = args.server_pid;
    let rss_before = pid.and_then(process::process_rss_bytes);
    let server_cpu0 = pid.and_then(process::process_cpu_seconds);
    let own_cpu0 = Some(process::own_cpu_seconds());
    let started = Instant::now();
    eprintln!(
        "setup: {} setups, {} in flight, from {} address(es) at {bind} to {} (fd limit {fd_limit})",
        args.count, args.concurrency, args.source_ips, args.server
    );
    let mut phase = Phase::Setup(args.count);
    let deadline = started + Duration::from_secs(args.max_duration);
    driver.drive(
        &mut phase,
        args.concurrency as usize,
        deadline,
        SETUP_TIMEOUT,
    )?;
    let elapsed = driver.last_done.unwrap_or(started).duration_since(started);
    let cpu = Cpu {
        own: delta(own_cpu0, Some(process::own_cpu_seconds())),
        server: delta(server_cpu0, pid.and_then(process::process_cpu_seconds)),
    };
    let rss_after = pid.and_then(process::process_rss_bytes);
    let rss_held = args.hold.and_then(|secs| {
        eprintln!(
            "setup: holding {} allocations for {secs} s",
            driver.open.len()
        );
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end && !driver.stop.load(Ordering::Relaxed) {
            std::thread::sleep(end.saturating_duration_since(Instant::now()).min(STEP));
        }
        pid.and_then(process::process_rss_bytes)
    });
    let (released, release_failed) = driver.release(args.concurrency as usize)?;
    let rss_released = pid.and_then(process::process_rss_bytes);
    let memory = Memory {
        before: rss_before,
        after: rss_after,
        held: rss_held,
        released: rss_released,
        release: (released, release_failed),
    };
    report(&args, &driver.stats, elapsed, cpu, memory);
    match driver.fatal.take() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn delta(before: Option<f64>, after: Option<f64>) -> Option<f64> {
    Some(after? - before?)
}

/// CPU seconds spent during the setups, by the generator and by the server.
struct Cpu {
    own: Option<f64>,
    server: Option<f64>,
}

/// The server's RSS at each step, and how the release went (released, failed).
struct Memory {
    before: Option<u64>,
    after: Option<u64>,
    held: Option<u64>,
    released: Option<u64>,
    release: (u32, u32),
}

#[derive(Default)]
struct Stats {
    ok: u32,
    latencies_us: Vec<u64>,
    failures: BTreeMap<String, u32>,
}

fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

fn report(args: &Args, stats: &Stats, elapsed: Duration, cpu: Cpu, mem: Memory) {
    let mut lat = stats.latencies_us.clone();
    lat.sort_unstable();
    let secs = elapsed.as_secs_f64().max(1e-9);
    let rate = f64::from(stats.ok) / secs;
    let (p50, p99, max) = (
        percentile_ms(&lat, 0.50),
        percentile_ms(&lat, 0.99),
        percentile_ms(&lat, 1.0),
    );
    let failed: u32 = stats.failures.values().sum();
    let codes: Vec<String> = stats
        .failures
        .iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect();
    let peak = mem.held.or(mem.after);
    let per_alloc = match (mem.before, peak) {
        (Some(b), Some(p)) if stats.ok > 0 => Some((p as f64 - b as f64) / f64::from(stats.ok)),
        _ => None,
    };
    let server_us = cpu
        .server
        .filter(|_| stats.ok > 0)
        .map(|s| s * 1e6 / f64::from(stats.ok));
    let gen_util = cpu.own.map(|c| c / secs);
    let opt = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.0}"));
    println!(
        "setup: count={} ok={} setups_per_s={rate:.1} p50_ms={p50:.3} p99_ms={p99:.3} \
         failures={failed}{} rss_per_alloc_bytes={} server_cpu_us_per_setup={} gen_cpu_util={}",
        args.count,
        stats.ok,
        if codes.is_empty() {
            String::new()
        } else {
            format!(" ({})", codes.join(","))
        },
        opt(per_alloc),
        opt(server_us),
        gen_util.map_or("n/a".to_owned(), |u| format!("{u:.2}")),
    );
    if args.json {
        let json = serde_json::json!({
            "scenario": "setup",
            "server": args.server.to_string(),
            "count": args.count,
            "concurrency": args.concurrency,
            "ok": stats.ok,
            "failures": failed,
            "failure_codes": stats.failures,
            "elapsed_s": secs,
            "setups_per_s": rate,
            "latency_ms": { "p50": p50, "p99": p99, "max": max },
            "p50_ms": p50,
            "p99_ms": p99,
            "server_cpu_us_per_setup": server_us,
            "gen_cpu_util": gen_util,
            "hold_s": args.hold,
            "rss_before_bytes": mem.before,
            "rss_after_bytes": mem.after,
            "rss_held_bytes": mem.held,
            "rss_released_bytes": mem.released,
            "rss_per_alloc_bytes": per_alloc,
            "released": mem.release.0,
            "release_failures": mem.release.1,
        });
        println!("{json}");
    }
}

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
struct Open {
    socket: UdpSocket,
    realm: String,
    nonce: Vec<u8>,
}

enum Phase {
    /// Setups still to start.
    Setup(u32),
    /// Allocations still to release.
    Release(Vec<Open>),
}

enum Step {
    Sent,
    Done(Result<(), String>),
}

struct Driver {
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
    open: Vec<Open>,
    stats: Stats,
    release: (u32, u32),
    last_done: Option<Instant>,
    /// Why no more setups could start (out of sockets), reported after the release.
    fatal: Option<String>,
    /// Set by SIGINT or SIGTERM: start no more setups, end the hold, release.
    stop: &'static AtomicBool,
}

impl Driver {
    fn new(
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
    fn release(&mut self, concurrency: usize) -> Result<(u32, u32), String> {
        let mut phase = Phase::Release(std::mem::take(&mut self.open));
        let deadline = Instant::now() + RELEASE_DEADLINE;
        self.drive(&mut phase, concurrency, deadline, RELEASE_TIMEOUT)?;
        Ok(self.release)
    }

    /// Runs `phase` with up to `concurrency` jobs in flight; starts none after `deadline`.
    fn drive(
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
        let mut w = RequestWriter::new(method, job.txn);
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
        job.msg = w.finish(key.as_ref().map(|k| &k[..]));
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
