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

mod driver;
mod report;

use crate::{common, process, sockets};
use driver::{Driver, Phase, SETUP_TIMEOUT};
use report::{Cpu, Memory, report};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
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

/// How often a hold looks at the stop flag.
const STEP: Duration = Duration::from_millis(100);

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
