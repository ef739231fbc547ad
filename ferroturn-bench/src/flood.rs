//! `ferroturn-bench flood`: unauthenticated Allocate requests from many source ports.
//!
//! Each request is a valid STUN Allocate (REQUESTED-TRANSPORT UDP, FINGERPRINT, no
//! credentials), as an attacker or a misbehaving client sends them, from `--sources`
//! sockets in turn. The figures that matter: the amplification (bytes the server sends
//! back per byte received, which makes it a reflector when above 1), and the memory the
//! server keeps per unauthenticated source (ideally none: stateless nonces).

use crate::{common, process, sockets};
use ferroturn::client::codec::{self, RequestAttr};
use ferroturn_core::proto::wire::method;
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use rand::RngExt;
use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The TURN server (loopback only).
    #[arg(long)]
    server: SocketAddr,
    /// Requests to send.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    requests: u64,
    /// Source sockets (ports), used in turn.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=60_000))]
    sources: u32,
    /// Requests per second (default: as fast as the generator sends).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    rate: Option<u64>,
    /// The server's process id: RSS before and after, CPU per request.
    #[arg(long)]
    server_pid: Option<u32>,
    /// First local address of the source sockets (default 127.0.0.2).
    #[arg(long)]
    bind: Option<IpAddr>,
    /// Source addresses, consecutive from --bind, the sockets spread over them: 1 is one
    /// host flooding from many ports, more look like a flood with spoofed sources.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    source_ips: u32,
    /// Stop sending after this many seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=600))]
    max_duration: u64,
    /// Also print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

/// After the last request, wait this long for responses (or until all have arrived).
const DRAIN: Duration = Duration::from_secs(3);
const DRAIN_QUIET: Duration = Duration::from_millis(500);

#[derive(Default)]
struct Counts {
    sent: u64,
    send_errors: u64,
    bytes_sent: u64,
    responses: u64,
    bytes_received: u64,
    /// Responses by outcome: the error code, or "success".
    codes: BTreeMap<String, u64>,
}

pub fn run(args: Args) -> Result<(), String> {
    sockets::require_loopback(args.server)?;
    let bind = args
        .bind
        .unwrap_or_else(|| sockets::default_client_ip(args.server));
    let ips = sockets::loopback_pool(bind, args.source_ips.min(args.sources), args.server)?;
    let fd_limit = process::raise_nofile_limit();
    let pid = args.server_pid;
    let rss_before = pid.and_then(process::process_rss_bytes);
    let mut poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
    let mut sockets = Vec::with_capacity(args.sources as usize);
    for i in 0..args.sources as usize {
        let mut s = sockets::bind_load_socket(ips[i % ips.len()], i)?;
        poll.registry()
            .register(&mut s, Token(i), Interest::READABLE)
            .map_err(|e| format!("epoll register: {e}"))?;
        sockets.push(s);
    }
    eprintln!(
        "flood: {} unauthenticated Allocates from {} sockets on {} address(es) at {bind} to {} \
         (fd limit {fd_limit})",
        args.requests,
        args.sources,
        ips.len(),
        args.server
    );
    let server_cpu0 = pid.and_then(process::process_cpu_seconds);
    let own_cpu0 = Some(process::own_cpu_seconds());
    let mut flood = Flood {
        poll: &mut poll,
        events: Events::with_capacity(1024),
        sockets: &sockets,
        server: args.server,
        prefix: rand::rng().random(),
        buf: vec![0u8; 2048],
        counts: Counts::default(),
    };
    let started = Instant::now();
    flood.send_all(&args, started)?;
    let elapsed = started.elapsed();
    let own_cpu = delta(own_cpu0, Some(process::own_cpu_seconds()));
    flood.drain()?;
    let counts = flood.counts;
    let server_cpu = delta(server_cpu0, pid.and_then(process::process_cpu_seconds));
    let rss_after = pid.and_then(process::process_rss_bytes);
    report(
        &args,
        &counts,
        elapsed,
        server_cpu,
        own_cpu,
        (rss_before, rss_after),
    );
    Ok(())
}

fn delta(before: Option<f64>, after: Option<f64>) -> Option<f64> {
    Some(after? - before?)
}

struct Flood<'a> {
    poll: &'a mut Poll,
    events: Events,
    sockets: &'a [UdpSocket],
    server: SocketAddr,
    /// The first 4 bytes of every transaction id; the other 8 count requests.
    prefix: [u8; 4],
    buf: Vec<u8>,
    counts: Counts,
}

impl Flood<'_> {
    fn send_all(&mut self, args: &Args, started: Instant) -> Result<(), String> {
        let mut msg = codec::encode_request(
            method::ALLOCATE,
            false,
            &[0; 12],
            &[RequestAttr::RequestedTransport(17)],
            None,
        )
        .ok_or("cannot encode an Allocate")?;
        let limit = Duration::from_secs(args.max_duration);
        let stop = process::stop_on_signals();
        let mut i = 0u64;
        while i < args.requests {
            let elapsed = started.elapsed();
            if elapsed >= limit || stop.load(Ordering::Relaxed) {
                eprintln!(
                    "flood: stopped after {i} requests ({:.1} s)",
                    elapsed.as_secs_f64()
                );
                break;
            }
            if let Some(rate) = args.rate {
                let due = (rate as f64 * elapsed.as_secs_f64()) as u64 + 1;
                if i >= due {
                    let next = Duration::from_secs_f64((i as f64) / rate as f64);
                    let wait = next.saturating_sub(elapsed).min(Duration::from_millis(10));
                    self.receive(Some(wait))?;
                    continue;
                }
            }
            self.stamp(&mut msg, i);
            let socket = &self.sockets[(i % self.sockets.len() as u64) as usize];
            match socket.send_to(&msg, self.server) {
                Ok(n) => {
                    self.counts.sent += 1;
                    self.counts.bytes_sent += n as u64;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.receive(Some(Duration::from_millis(1)))?;
                    continue;
                }
                // ECONNREFUSED and the like: the server is not there (any more).
                Err(_) => self.counts.send_errors += 1,
            }
            i += 1;
            if i % 64 == 0 {
                self.receive(Some(Duration::ZERO))?;
            }
        }
        Ok(())
    }

    /// Writes transaction id number `i` into `msg` and recomputes its FINGERPRINT
    /// (RFC 8489 section 14.7), the last attribute.
    fn stamp(&self, msg: &mut [u8], i: u64) {
        msg[8..12].copy_from_slice(&self.prefix);
        msg[12..20].copy_from_slice(&i.to_be_bytes());
        let at = msg.len() - 8;
        let crc = crc32fast::hash(&msg[..at]) ^ 0x5354_554E;
        msg[at + 4..].copy_from_slice(&crc.to_be_bytes());
    }

    /// Waits for the last responses: until every request is answered, or none arrived
    /// for a while, or the drain time is up.
    fn drain(&mut self) -> Result<(), String> {
        let end = Instant::now() + DRAIN;
        let mut last = Instant::now();
        while self.counts.responses < self.counts.sent && Instant::now() < end {
            let before = self.counts.responses;
            self.receive(Some(Duration::from_millis(50)))?;
            if self.counts.responses > before {
                last = Instant::now();
            } else if last.elapsed() >= DRAIN_QUIET {
                break;
            }
        }
        Ok(())
    }

    /// Reads every response that is ready, waiting at most `wait` for the first.
    fn receive(&mut self, wait: Option<Duration>) -> Result<(), String> {
        match self.poll.poll(&mut self.events, wait) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(format!("epoll: {e}")),
        }
        for event in &self.events {
            let Some(socket) = self.sockets.get(event.token().0) else {
                continue;
            };
            loop {
                let n = match socket.recv_from(&mut self.buf) {
                    Ok((n, from)) if from == self.server => n,
                    Ok(_) => continue,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => break,
                };
                let bytes = &self.buf[..n];
                if bytes.get(8..12) != Some(&self.prefix[..]) {
                    continue;
                }
                self.counts.responses += 1;
                self.counts.bytes_received += n as u64;
                *self.counts.codes.entry(outcome(bytes)).or_default() += 1;
            }
        }
        Ok(())
    }
}

/// "success", the ERROR-CODE of an error response, or "other".
fn outcome(msg: &[u8]) -> String {
    match common::read_response(msg) {
        Some(r) if r.success => "success".into(),
        Some(r) => r.error_code.map_or("other".into(), |c| c.to_string()),
        None => "other".into(),
    }
}

fn report(
    args: &Args,
    c: &Counts,
    elapsed: Duration,
    server_cpu: Option<f64>,
    own_cpu: Option<f64>,
    (rss_before, rss_after): (Option<u64>, Option<u64>),
) {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let amplification = c.bytes_received as f64 / (c.bytes_sent.max(1)) as f64;
    let ratio = c.responses as f64 / (c.sent.max(1)) as f64;
    let per_source = match (rss_before, rss_after) {
        (Some(b), Some(a)) => Some((a as f64 - b as f64) / f64::from(args.sources)),
        _ => None,
    };
    let server_us = server_cpu
        .filter(|_| c.sent > 0)
        .map(|s| s * 1e6 / c.sent as f64);
    let gen_util = own_cpu.map(|s| s / secs);
    let codes: Vec<String> = c.codes.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    let opt = |v: Option<f64>, digits: usize| v.map_or("n/a".into(), |v| format!("{v:.digits$}"));
    let rss = |v: Option<u64>| v.map_or("n/a".into(), |v| v.to_string());
    println!(
        "flood: requests={} sent={} sources={} responses={} ({}) response_ratio={ratio:.3} \
         bytes_sent={} bytes_received={} amplification={amplification:.3} send_rate={:.0} \
         rss_before={} rss_after={} rss_delta_per_source_bytes={} \
         server_cpu_us_per_request={} gen_cpu_util={}",
        args.requests,
        c.sent,
        args.sources,
        c.responses,
        codes.join(","),
        c.bytes_sent,
        c.bytes_received,
        c.sent as f64 / secs,
        rss(rss_before),
        rss(rss_after),
        opt(per_source, 1),
        opt(server_us, 2),
        opt(gen_util, 2),
    );
    if args.json {
        let json = serde_json::json!({
            "scenario": "flood",
            "server": args.server.to_string(),
            "requests": args.requests,
            "sources": args.sources,
            "source_ips": args.source_ips.min(args.sources),
            "rate": args.rate,
            "sent": c.sent,
            "send_errors": c.send_errors,
            "send_s": secs,
            "send_rate": c.sent as f64 / secs,
            "responses": c.responses,
            "response_ratio": ratio,
            "response_codes": c.codes,
            "bytes_sent": c.bytes_sent,
            "bytes_received": c.bytes_received,
            "amplification": amplification,
            "server_cpu_us_per_request": server_us,
            "gen_cpu_util": gen_util,
            "rss_before_bytes": rss_before,
            "rss_after_bytes": rss_after,
            "rss_delta_per_source_bytes": per_source,
        });
        println!("{json}");
    }
}
