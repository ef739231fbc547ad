//! A first number for the fast path, on lo of a namespace of its own: closed-loop round
//! trips of 200-byte payloads between a client and an echoing peer, three ways:
//!
//! - `direct`: client and peer talk to each other (no relay: the floor);
//! - `user space`: through a plain forwarder (a thread per direction, recv_from and
//!   send_to, the ChannelData header added and removed), what any user-space relay
//!   pays at least;
//! - `kernel`: through the eBPF program.
//!
//! CPU is the machine's busy time from /proc/stat (user, system, irq and softirq of
//! every CPU), so it includes the client and the peer; the difference to `direct` is
//! what relaying costs. Bounded: `SECONDS` per row. Run by hand on an idle machine:
//!
//! ```text
//! cargo test --release --test offload -- --ignored --nocapture measure
//! ```

use crate::netns::Namespaces;
use crate::packet::{bind, channel_between, channel_data};
use crate::{skip_unless_available, start, unavailable};
use ferroturn::offload::{Limits, OffloadedChannel};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const SECONDS: u64 = 3;
const PAYLOAD: usize = 200;
const CHANNEL: u16 = 0x4000;

/// Busy and total jiffies of all CPUs.
fn cpu_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let cpu: Vec<u64> = stat
        .lines()
        .next()
        .expect("cpu line")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = cpu[0] + cpu[1] + cpu[2] + cpu[5] + cpu[6] + cpu[7];
    (busy, busy + cpu[3] + cpu[4])
}

struct Row {
    name: &'static str,
    round_trips: u64,
    seconds: f64,
    busy_us: f64,
}

/// Keeps `inflight` datagrams going from `client` to `to` for SECONDS; `reply_len` is
/// the length of an answer. Returns the round trips completed.
fn closed_loop(client: &UdpSocket, to: SocketAddr, message: &[u8], inflight: usize) -> u64 {
    client
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(SECONDS);
    let mut buf = [0u8; 2048];
    for _ in 0..inflight {
        client.send_to(message, to).expect("send");
    }
    let mut done = 0;
    while Instant::now() < deadline {
        // On a loss (the read times out) one goes back in flight all the same.
        if client.recv_from(&mut buf).is_ok() {
            done += 1;
        }
        client.send_to(message, to).expect("send");
    }
    done
}

fn measure(name: &'static str, run: impl FnOnce() -> u64) -> Row {
    let (busy0, _) = cpu_jiffies();
    let start = Instant::now();
    let round_trips = run();
    let seconds = start.elapsed().as_secs_f64();
    let (busy1, _) = cpu_jiffies();
    // USER_HZ is 100 on Linux.
    let busy_us = (busy1 - busy0) as f64 * 10_000.0;
    Row {
        name,
        round_trips,
        seconds,
        busy_us,
    }
}

/// Answers every datagram to where it came from until `stop`.
fn echo(sock: UdpSocket, stop: Arc<AtomicBool>) {
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&buf[..n], from);
        }
    }
}

/// The plain user-space relay: ChannelData on `server` becomes the payload from `relay`
/// to the peer, and back.
fn forwarder(server: UdpSocket, relay: UdpSocket, ch: OffloadedChannel, stop: Arc<AtomicBool>) {
    let (server2, relay2, stop2) = (
        server.try_clone().expect("clone"),
        relay.try_clone().expect("clone"),
        stop.clone(),
    );
    let up = thread::spawn(move || {
        server2
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let mut buf = [0u8; 2048];
        while !stop2.load(Ordering::Relaxed) {
            if let Ok((n, _)) = server2.recv_from(&mut buf) {
                if n >= 4 {
                    let _ = relay2.send_to(&buf[4..n], ch.peer);
                }
            }
        }
    });
    relay
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, _)) = relay.recv_from(&mut buf[4..]) {
            buf[..2].copy_from_slice(&ch.channel.to_be_bytes());
            buf[2..4].copy_from_slice(&(n as u16).to_be_bytes());
            let _ = server.send_to(&buf[..n + 4], ch.client);
        }
    }
    let _ = up.join();
}

#[test]
#[ignore = "a measurement: run by hand with --ignored --nocapture"]
fn measure_round_trips_kernel_vs_user_space() {
    skip_unless_available!(unavailable().map_or(Ok(()), Err));
    let ns = skip_unless_available!(Namespaces::new(&["lo"]));
    let ip = |n: u8| IpAddr::from([127, 0, 0, n]);
    let rows = ns.run("lo", || {
        let sock = |n| bind(SocketAddr::new(ip(n), 0));
        let (client, server, relay, peer) = (sock(3), sock(1), sock(2), sock(4));
        let ch = channel_between(&client, &server, &relay, &peer, CHANNEL);
        let stop = Arc::new(AtomicBool::new(false));
        let echo_thread = {
            let (peer, stop) = (peer.try_clone().expect("clone"), stop.clone());
            thread::spawn(move || echo(peer, stop))
        };
        let payload = vec![0x42u8; PAYLOAD];
        let message = channel_data(CHANNEL, &payload);
        let mut rows = Vec::new();
        for inflight in [1, 16] {
            rows.push(measure(
                if inflight == 1 {
                    "direct, 1 in flight"
                } else {
                    "direct, 16 in flight"
                },
                || closed_loop(&client, ch.peer, &payload, inflight),
            ));
            drain(&client);

            let fwd_stop = Arc::new(AtomicBool::new(false));
            let fwd = {
                let (s, r, st) = (
                    server.try_clone().expect("clone"),
                    relay.try_clone().expect("clone"),
                    fwd_stop.clone(),
                );
                thread::spawn(move || forwarder(s, r, ch, st))
            };
            rows.push(measure(
                if inflight == 1 {
                    "user space, 1 in flight"
                } else {
                    "user space, 16 in flight"
                },
                || closed_loop(&client, ch.server, &message, inflight),
            ));
            fwd_stop.store(true, Ordering::Relaxed);
            let _ = fwd.join();
            drain(&client);

            let offload = start(&[ip(1), ip(2)], Limits::default()).expect("offload");
            offload.install(&ch).expect("install");
            rows.push(measure(
                if inflight == 1 {
                    "kernel, 1 in flight"
                } else {
                    "kernel, 16 in flight"
                },
                || closed_loop(&client, ch.server, &message, inflight),
            ));
            let totals = offload.totals();
            assert_eq!(totals.dropped_errors, 0);
            assert!(totals.up.relayed.packets > 0, "{totals:?}");
            drop(offload);
            drain(&client);
        }
        stop.store(true, Ordering::Relaxed);
        let _ = echo_thread.join();
        rows
    });
    println!(
        "\n{:<26} {:>12} {:>14} {:>22}",
        "relay (200 B payload)", "round trips/s", "CPU us / RT", "CPU us / RT over direct"
    );
    for chunk in rows.chunks(3) {
        let per_rt = |r: &Row| r.busy_us / r.round_trips.max(1) as f64;
        let floor = per_rt(&chunk[0]);
        for r in chunk {
            println!(
                "{:<26} {:>12.0} {:>14.2} {:>22.2}",
                r.name,
                r.round_trips as f64 / r.seconds,
                per_rt(r),
                per_rt(r) - floor
            );
        }
    }
}

/// Reads whatever answers are still on their way.
fn drain(sock: &UdpSocket) {
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut buf = [0u8; 2048];
    while sock.recv_from(&mut buf).is_ok() {}
}
