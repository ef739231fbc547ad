//! Interoperability with coturn's client tools (Debian package `coturn`).
//!
//! `turnutils_uclient` allocates on ferroturn with TURN REST credentials (`-W`) over UDP, TCP
//! (`-t`), TLS (`-t -S`) or DTLS (`-S`) and sends numbered messages, either to `turnutils_peer` (a UDP echo
//! server on a port *and* the port after it) or, with `-y`, to the relayed address of a second
//! allocation of its own. It then prints how many messages it sent and got back. On loopback
//! every message must come back: the tests assert the exact count sent, the same count
//! received, and nothing lost. The relayed side is UDP, except with `-T` and `-P`.
//!
//! Modes covered: channels (`-c`), uclient's defaults (RTP/RTCP pairs through EVEN-PORT
//! and RESERVATION-TOKEN), `-s`, `-y`, `-g` (DONT-FRAGMENT), `-s -g`, `-D` (padded
//! ChannelData), `-X`, `-G`, `-Z` (dual allocations; with `-x`, relaying through their
//! IPv6 side), `-x` (IPv6 relay, IPv6 peer), uclient over IPv6 (server and peer on ::1),
//! `-M` (mobility, RFC 8016), `-B`, `-N`, `-R` followed by a clean run, RFC 6062 TCP
//! relays: `-T` over TCP and TLS, `-P`, and channels, `-s` and `-y` over DTLS (`-S`).
//! The dual-stack modes run against a server listening on 127.0.0.1 and ::1, so it has
//! relays of both families.
//!
//! One UDP channels run starts the server with `kernel-offload = "on"` and checks, from
//! the metrics, that the eBPF fast path relayed uclient's messages both ways and user
//! space almost none; it needs root and bpf(2), and says in one line why it skips where
//! they are missing.
//!
//! What uclient (coturn 4.6) puts on the wire with the flags used here, to read failures by:
//! - per client, a throw-away "probe" allocation (ALLOCATE + REFRESH, then the socket is closed
//!   without deallocating), then the real allocation from a new socket;
//! - ALLOCATE: REQUESTED-TRANSPORT=UDP, LIFETIME=777, REQUESTED-ADDRESS-FAMILY=IPv4 when a peer
//!   is given, and in about half of the requests (at random, even with `-c`) EVEN-PORT with R=0;
//! - channels: two CHANNEL-BINDs to peer port+1, then two to the peer port under another
//!   number; numbers are drawn from 0x4000..=0x7FFF (RFC 5766's range, wider than RFC 8656's);
//!   `-s`: CREATE-PERMISSION for both ports, then Send indications carrying FINGERPRINT;
//!   `-y`: one CHANNEL-BIND (or CREATE-PERMISSION with `-s`) per allocation, toward the other's
//!   relayed address, so the server relays from one of its relay sockets to another;
//! - then, without waiting, REFRESH 600 + CREATE-PERMISSION (+ CHANNEL-BIND); data starts 1-6 s
//!   later, 20 ms apart; each allocation ends with REFRESH LIFETIME=0;
//! - every success response must carry a valid MESSAGE-INTEGRITY, else uclient gives up;
//! - `-Z`: ALLOCATE carries ADDITIONAL-ADDRESS-FAMILY=IPv6 (under the drafts' code point
//!   0x8032, not RFC 8656's 0x8000) instead of a family, and never EVEN-PORT with R;
//!   uclient takes the IPv4 XOR-RELAYED-ADDRESS of the answer (the IPv6 one with `-x`)
//!   and skips a 0.0.0.0 one; two REFRESHes in three carry REQUESTED-ADDRESS-FAMILY, IPv4
//!   or IPv6 at random, and a dual allocation must take either (a 443 there was the
//!   `error 443` a single-family answer earned);
//! - `-x`: REQUESTED-ADDRESS-FAMILY=IPv6 on every ALLOCATE; without `-x` or `-X` the family
//!   is the peer's, so a peer on ::1 asks for IPv6 too.
//!
//! `-c` is passed except in `uclient_rtp_and_rtcp_pairs_echo_everything`: without it
//! uclient also makes RTCP allocations through EVEN-PORT with R=1 and RESERVATION-TOKEN.
//! Never pass `-h`: it means "hang on forever".
//!
//! Over TCP and TLS (checked against coturn 4.6.1's own `turnserver` first) the same requests
//! go over one connection per allocation, framed by their own lengths; ChannelData is padded
//! to a multiple of 4 (`-l 120` needs none). The probe allocation's connection is closed
//! without a deallocation. With `-S`, uclient:
//! - picks one of its OpenSSL contexts at random for every connection, some limited to
//!   TLS 1.0 or 1.1; a server that refuses those (coturn does, and rustls speaks only 1.2 and
//!   1.3) makes it log `tls_connect: cannot connect` and reconnect, up to 32 times;
//! - offers ALPN `http/1.1`, `stun.turn`, `stun.nat-discovery`;
//! - does not verify the server certificate, with or without `-E ca.pem` (it connected to
//!   coturn with a CA that had not signed the certificate), so these runs test the transport;
//!   the browser test verifies the chain;
//! - counts whatever one `SSL_read` returns as one message, so two frames in one TLS record
//!   count as a loss (and the bigger "message" as a wrong length). With `-y`, coturn itself
//!   puts two ChannelData frames in one record now and then (2-3 "lost" in each of 4 runs
//!   against coturn). ferroturn writes every frame as its own record, so the TLS `-y` run
//!   holds it to zero loss; should that test alone start losing a message or two, look for
//!   `response received: size=` twice a frame in `-v` output before suspecting the relay.
//!   Over plain TCP uclient splits frames by their length and has no such problem.
//!
//! With `-S` and without `-t` (DTLS over UDP, to the TLS port), uclient also picks one of
//! its contexts at random per session, some DTLS 1.0 only: ferroturn answers those with
//! a protocol_version alert (it serves DTLS 1.2 only) and uclient reconnects with another.
//! Every session starts with the stateless cookie exchange (HelloVerifyRequest). One
//! message per record both ways, as over UDP.
//!
//! With `-T` (RFC 6062; it implies `-t -y -c`) each allocation asks for REQUESTED-TRANSPORT
//! TCP (no EVEN-PORT), the two create permissions for each other's relayed addresses,
//! the first Connects to the second's relayed address (so the server connects one of its
//! relayed addresses to another), the second gets a ConnectionAttempt, and each binds a
//! new connection (TLS with `-S`) with ConnectionBind; data then flows as raw bytes,
//! which uclient counts by `-l` length. With `-P` the second is a plain TCP socket of
//! uclient's that connects to the first's relayed address itself.

mod common;

use common::process::ChildGuard;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const UCLIENT: &str = "turnutils_uclient";
const PEER: &str = "turnutils_peer";
const INSTALL_HINT: &str = "run scripts/install-test-deps.sh to install coturn's client tools";

/// `-n`: messages each uclient session sends.
const MESSAGES: u64 = 20;
/// `-m`: sessions. Even, so `-y` makes exactly one pair of allocations talking to each other.
const CLIENTS: u64 = 2;
/// `-l`: payload bytes per message (a multiple of 4: no `ChannelData` padding question).
const MESSAGE_LEN: u32 = 120;
/// A clean run takes 2-8 s; with losses uclient waits 10 s more before giving up by itself.
const UCLIENT_TIMEOUT: Duration = Duration::from_secs(90);
/// Peers listen below Linux's ephemeral ports (32768+) and the server's relay ports
/// (40000-60000), so no socket of the test run lands on them by chance.
const PEER_PORTS: std::ops::Range<u32> = 20_000..32_000;

/// How uclient reaches the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Udp,
    /// `-t`
    Tcp,
    /// `-t -S`
    Tls,
    /// `-S`: DTLS over UDP (RFC 7350), on the TLS port.
    Dtls,
}

impl Transport {
    fn flags(self) -> &'static [&'static str] {
        match self {
            Transport::Udp => &[],
            Transport::Tcp => &["-t"],
            Transport::Tls => &["-t", "-S"],
            Transport::Dtls => &["-S"],
        }
    }

    /// Whether the server needs a certificate.
    fn secure(self) -> bool {
        matches!(self, Transport::Tls | Transport::Dtls)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// `ChannelBind`, then `ChannelData` both ways (uclient's default).
    Channels,
    /// `-s`: `CreatePermission`, then Send and Data indications.
    SendIndications,
    /// `-y`: two allocations relay to each other's relayed address; no external peer.
    ClientToClient,
    /// Without `-c`: uclient's real default. Each RTP allocation asks for EVEN-PORT with
    /// R, and an RTCP allocation follows with the RESERVATION-TOKEN it got (RFC 8656
    /// sections 18.7 and 18.10), channels to the peer's port and the port above.
    RtpRtcp,
    /// `-g`: every Allocate carries DONT-FRAGMENT (RFC 8656 section 18.9).
    DontFragment,
    /// `-s -g`: DONT-FRAGMENT on the Allocate and on every Send indication (section 11.2).
    SendDontFragment,
    /// `-D`: ChannelData padded to a multiple of 4 over UDP too, as pjnath does.
    Padding,
    /// `-X`: REQUESTED-ADDRESS-FAMILY IPv4, explicitly.
    ExplicitIpv4,
    /// `-G`: extra CreatePermission and ChannelBind requests along the way.
    ExtraRequests,
    /// `-Z`: dual allocations (RFC 8656 ADDITIONAL-ADDRESS-FAMILY), data through the IPv4
    /// relay to an IPv4 peer.
    DualAllocation,
    /// `-Z -x`: dual allocations, data through the IPv6 relay to a peer on ::1.
    DualAllocationIpv6,
    /// `-x`: an IPv6 relay (REQUESTED-ADDRESS-FAMILY IPv6) to a peer on ::1, uclient on
    /// 127.0.0.1.
    Ipv6Relay,
    /// No flag, but uclient reaches the server on ::1 and its peer is on ::1 too.
    OverIpv6,
    /// `-B`: disconnects at random after a few packets (its totals prove nothing).
    RandomDisconnect,
    /// `-N`: uclient's negative tests (bad channel numbers and the like).
    Negative,
    /// `-R`: uclient's negative protocol tests (wrong transaction ids and the like).
    NegativeProtocol,
    /// `-T`: TCP allocations (RFC 6062), client to client: one allocation Connects to
    /// the other's relayed address, both bind data connections (implies `-t -y -c`).
    TcpRelay,
    /// `-P`: TCP allocations with an active peer: a plain TCP socket of uclient's
    /// connects to the relayed address, and the client binds what the ConnectionAttempt
    /// names (implies `-T`).
    PassiveTcpRelay,
    /// `-M`: every Allocate asks for a MOBILITY-TICKET (RFC 8016), then uclient reopens
    /// its socket on a new port and moves the allocation there with a Refresh carrying
    /// the ticket, before any ChannelBind.
    Mobility,
}

impl Mode {
    fn needs_peer(self) -> bool {
        !matches!(
            self,
            Mode::ClientToClient | Mode::TcpRelay | Mode::PassiveTcpRelay
        )
    }

    /// Where the peer listens: ::1 for the modes that relay to IPv6.
    fn peer_ip(self) -> IpAddr {
        match self {
            Mode::DualAllocationIpv6 | Mode::Ipv6Relay | Mode::OverIpv6 => {
                Ipv6Addr::LOCALHOST.into()
            }
            _ => Ipv4Addr::LOCALHOST.into(),
        }
    }

    /// The server's configuration for this mode: listeners (and so relays) on 127.0.0.1
    /// and ::1, and peers on both allowed, for the dual-stack modes.
    fn server_toml(self) -> &'static str {
        match self {
            Mode::DualAllocation | Mode::DualAllocationIpv6 | Mode::Ipv6Relay | Mode::OverIpv6 => {
                "listening-ip = [\"127.0.0.1\", \"::1\"]\n\
                 allowed-peer-ip = [\"127.0.0.1\", \"::1\"]"
            }
            _ => "",
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_channels_echo_everything() {
    run_uclient_against_ferroturn(Transport::Udp, Mode::Channels).await;
}

/// `-g`: allocations with DONT-FRAGMENT (served since issue 12; 420 before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_dont_fragment_echoes_everything() {
    run_uclient_against_ferroturn(Transport::Udp, Mode::DontFragment).await;
}

/// `-s -g`: Send indications with DONT-FRAGMENT on allocations that asked for DF are
/// relayed (they were all discarded before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_send_indications_with_dont_fragment_echo_everything() {
    run_uclient_against_ferroturn(Transport::Udp, Mode::SendDontFragment).await;
}

/// `-D`: ChannelData padded over UDP (RFC 8656 section 12.5 allows it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_padded_channel_data_echoes_everything() {
    run_uclient_against_ferroturn(Transport::Udp, Mode::Padding).await;
}

/// `-X`: an IPv4 relay asked for by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_explicit_ipv4_relay_echoes_everything() {
    run_uclient_against_ferroturn(Transport::Udp, Mode::ExplicitIpv4).await;
}

/// `-Z`: dual allocations, each with an IPv4 and an IPv6 relayed address; uclient
/// relays through the IPv4 one and refreshes naming either family (it got 443 before
/// dual allocations were served).
/// The sessions list, watched while uclient runs, shows allocations with both addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_dual_allocation_echoes_everything() {
    uclient_dual_allocations_echo_everything(Mode::DualAllocation).await;
}

/// `-Z -x`: the same dual allocations, relaying through their IPv6 relay to a peer on ::1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_dual_allocation_ipv6_side_echoes_everything() {
    uclient_dual_allocations_echo_everything(Mode::DualAllocationIpv6).await;
}

async fn uclient_dual_allocations_echo_everything(mode: Mode) {
    let server = common::start_server(mode.server_toml()).await;
    let watcher = watch_for_dual_sessions(&server);
    uclient_echoes_everything(&server, Transport::Udp, mode).await;
    // A dual session shows for seconds before uclient ends; the watcher has long returned.
    assert!(
        watcher.is_finished(),
        "no session with two relayed addresses was seen while uclient ran"
    );
    assert!(watcher.await.unwrap(), "the watcher gave up");
}

/// Polls the sessions list (every 100 ms, for at most [`UCLIENT_TIMEOUT`]) until one
/// allocation has an IPv4 and an IPv6 relayed address; true when it saw one.
fn watch_for_dual_sessions(server: &common::TestServer) -> tokio::task::JoinHandle<bool> {
    let control = server.handle.control();
    tokio::spawn(async move {
        let deadline = Instant::now() + UCLIENT_TIMEOUT;
        while Instant::now() < deadline {
            let c = control.clone();
            let sessions = tokio::task::spawn_blocking(move || c.sessions())
                .await
                .unwrap_or_default();
            let dual = |s: &ferroturn_core::server::Session| {
                s.relayed.is_ipv4() && s.additional_relayed.is_some_and(|a| a.is_ipv6())
            };
            if sessions.iter().any(dual) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    })
}

/// `-x`: an IPv6 relay, and a peer on ::1, for a client on 127.0.0.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_ipv6_relay_echoes_everything() {
    run_uclient_against_ferroturn(Transport::Udp, Mode::Ipv6Relay).await;
}

/// uclient over IPv6: the server reached on ::1, the peer on ::1 (so uclient asks for an
/// IPv6 relay by the peer's family).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_over_ipv6_echoes_everything() {
    run_uclient_against_ferroturn(Transport::Udp, Mode::OverIpv6).await;
}

/// `-G`: repeated CreatePermission and ChannelBind on live allocations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_extra_requests_echo_everything() {
    run_uclient_against_ferroturn(Transport::Udp, Mode::ExtraRequests).await;
}

/// `-B`, `-N` and `-R`: clients that vanish mid-run, and uclient's negative and
/// negative-protocol tests, leave a server that serves the next run cleanly. `-R` never
/// ends by itself (against coturn 4.6.1 either), `-N` does not against coturn: each gets
/// 15 s, and what counts is the clean run after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_disconnects_and_negative_tests_the_server_serves_a_clean_run() {
    let server = common::start_server("").await;
    let peer = start_echo_peer(Ipv4Addr::LOCALHOST.into()).await;
    for mode in [
        Mode::RandomDisconnect,
        Mode::Negative,
        Mode::NegativeProtocol,
    ] {
        let args = uclient_args(Transport::Udp, mode, server.addr, Some(peer.addr));
        let run = run_uclient_for(&args, Duration::from_secs(15)).await;
        println!("$ {UCLIENT} {}\n{}", args.join(" "), run.stdout);
    }
    drop(peer);
    uclient_echoes_everything(&server, Transport::Udp, Mode::RtpRtcp).await;
}

/// uclient's defaults, as a new user runs it: RTP/RTCP allocation pairs through EVEN-PORT
/// with R and RESERVATION-TOKEN (it failed with 508 before they were served).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_rtp_and_rtcp_pairs_echo_everything() {
    let server = common::start_server("").await;
    uclient_echoes_everything(&server, Transport::Udp, Mode::RtpRtcp).await;
    // RTCP allocations took the ports their RTP allocations reserved (uclient 4.6 with
    // `-m 2` makes one such pair besides its probe; every message above came back).
    let m = common::published_metrics(&server, "the reservations", |m| {
        m.stats.reservations_claimed >= 1
    })
    .await;
    assert!(m.stats.reservations_issued >= m.stats.reservations_claimed);
}

/// `-M` (RFC 8016) on a server with `mobility` and two relay threads: every allocation
/// of uclient's moves to a new client port right after its Allocate (the probe's and
/// the real one's), so about half the moves reach the other shard, whose held requests
/// (uclient binds its channels before reading the move's answer) wait for the
/// allocation to arrive. Every message must come back, and the metrics must show the
/// tickets issued and the allocations moved (without the option the server ignored the
/// attribute and uclient ran without any move).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_mobility_moves_every_allocation_and_echoes_everything() {
    let server = common::start_server("mobility = true\nrelay-threads = 2").await;
    uclient_echoes_everything(&server, Transport::Udp, Mode::Mobility).await;
    let m = common::published_metrics(&server, "the moves", |m| {
        m.stats.allocations_moved >= CLIENTS
    })
    .await;
    println!(
        "tickets issued {}, allocations moved {} ({} across shards)",
        m.stats.tickets_issued, m.stats.allocations_moved, m.stats.allocations_moved_across_shards
    );
    assert!(
        m.stats.tickets_issued > m.stats.allocations_moved,
        "each move, and each Allocate before it, gave a ticket: {:?}",
        m.stats
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_send_indications_echo_everything() {
    run_uclient_against_ferroturn(Transport::Udp, Mode::SendIndications).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_client_to_client_echo_everything() {
    run_uclient_against_ferroturn(Transport::Udp, Mode::ClientToClient).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_tcp_channels_echo_everything() {
    run_uclient_against_ferroturn(Transport::Tcp, Mode::Channels).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_tcp_send_indications_echo_everything() {
    run_uclient_against_ferroturn(Transport::Tcp, Mode::SendIndications).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_tcp_client_to_client_echo_everything() {
    run_uclient_against_ferroturn(Transport::Tcp, Mode::ClientToClient).await;
}

/// `-T`: RFC 6062 TCP allocations talking to each other through their relayed
/// addresses (Connect, ConnectionAttempt, two ConnectionBinds), every message back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_tcp_relay_echoes_everything() {
    run_uclient_against_ferroturn(Transport::Tcp, Mode::TcpRelay).await;
}

/// `-T -S`: the same with the control and data connections over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_tls_tcp_relay_echoes_everything() {
    run_uclient_against_ferroturn(Transport::Tls, Mode::TcpRelay).await;
}

/// `-P`: a peer that connects to the relayed address by itself (RFC 6062 section 5.3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_passive_tcp_relay_relays_both_ways() {
    let server = common::start_server("").await;
    let args = uclient_args(
        Transport::Tcp,
        Mode::PassiveTcpRelay,
        server.handle.tcp_addrs()[0],
        None,
    );
    let run = run_uclient(&args).await;
    println!("$ {UCLIENT} {}\n{}", args.join(" "), run.stdout);
    assert!(
        run.status.is_some_and(|s| s.success()),
        "{UCLIENT} failed or hung (output above)"
    );
    let totals = parse_uclient_totals(&run.stdout).expect("uclient's totals");
    assert_eq!(totals.sent, MESSAGES * CLIENTS, "{totals:?}");
    assert_eq!(totals.send_dropped, 0, "{totals:?}");
    // uclient 4.6 counts only the client's side as received, against coturn's own
    // turnserver too (20 of 40, "50% lost"): the server's counters show every message
    // of both sides crossing the relay.
    assert_eq!(totals.received, MESSAGES, "{totals:?}");
    let each_way = MESSAGES * u64::from(MESSAGE_LEN);
    let m = common::published_metrics(&server, "the relayed TCP bytes", |m| {
        m.stats.tcp_relayed == [each_way; 2]
    })
    .await;
    assert_eq!((m.stats.tcp_accepted, m.stats.tcp_bound), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_tls_channels_echo_everything() {
    run_uclient_against_ferroturn(Transport::Tls, Mode::Channels).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_tls_send_indications_echo_everything() {
    run_uclient_against_ferroturn(Transport::Tls, Mode::SendIndications).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_tls_client_to_client_echo_everything() {
    run_uclient_against_ferroturn(Transport::Tls, Mode::ClientToClient).await;
}

/// `-S` over UDP: DTLS 1.2 on the TLS port (RFC 7350), after the stateless cookie
/// exchange.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_dtls_channels_echo_everything() {
    run_uclient_against_ferroturn(Transport::Dtls, Mode::Channels).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_dtls_send_indications_echo_everything() {
    run_uclient_against_ferroturn(Transport::Dtls, Mode::SendIndications).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_dtls_client_to_client_echo_everything() {
    run_uclient_against_ferroturn(Transport::Dtls, Mode::ClientToClient).await;
}

/// `uclient_channels_echo_everything` with `kernel-offload = "on"`: once uclient's
/// channels are bound, the eBPF program relays its ChannelData to the peer and the
/// peer's echoes back as ChannelData, and user space sees none of it. uclient sends
/// data only after its CHANNEL-BINDs succeeded (1-6 s later, see the module's notes), so
/// every message and every echo must be the kernel's (each run so far: 40 up, 40 down,
/// none in user space); the user-space bound says the same from the other side, with
/// room for a stray datagram. Its channel numbers are drawn from 0x4000..=0x7FFF, so
/// this also holds the kernel to the range the server accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_channels_echo_everything_through_the_kernel() {
    if let Some(why) = common::kernel_offload_unavailable() {
        println!("kernel offload test skipped: {why}");
        return;
    }
    let server = common::start_server("kernel-offload = \"on\"").await;
    let totals = uclient_echoes_everything(&server, Transport::Udp, Mode::Channels).await;
    // Each session ends its allocation with REFRESH LIFETIME=0 after its last echo (the
    // throw-away probe allocations never carried data).
    let (kernel, installed, user) =
        common::kernel_and_user_after_deletions(&server, "uclient's deallocations", CLIENTS).await;
    println!(
        "uclient sent {} and got {} back; kernel relayed {} up, {} down \
         ({} and {} bytes); user space relayed {} up, {} down; {installed} channels \
         still installed; {kernel:?}",
        totals.sent,
        totals.received,
        kernel.up.relayed.packets,
        kernel.down.relayed.packets,
        kernel.up.relayed.bytes,
        kernel.down.relayed.bytes,
        user[0].packets,
        user[1].packets,
    );
    let sent_bytes = totals.sent * u64::from(MESSAGE_LEN);
    for (direction, flow) in [("up", kernel.up.relayed), ("down", kernel.down.relayed)] {
        assert!(
            flow.packets >= totals.sent,
            "the kernel relayed {} datagrams {direction}, fewer than the {} messages uclient \
             sent: {kernel:?}",
            flow.packets,
            totals.sent
        );
        assert!(
            flow.bytes >= sent_bytes,
            "the kernel relayed {} bytes {direction}, fewer than uclient's {sent_bytes}: \
             {kernel:?}",
            flow.bytes
        );
    }
    let in_kernel = kernel.up.relayed.packets + kernel.down.relayed.packets;
    let in_user_space = user[0].packets + user[1].packets;
    assert!(
        in_user_space * 10 <= in_kernel,
        "user space relayed {in_user_space} UDP datagrams ({user:?}), more than a tenth of \
         the kernel's {in_kernel}"
    );
    common::assert_kernel_undisturbed(&kernel, installed);
    drop(server);
}

async fn run_uclient_against_ferroturn(transport: Transport, mode: Mode) {
    let pki = transport.secure().then(common::tls::TestPki::new);
    let tls = pki.as_ref().map(|p| p.server_toml()).unwrap_or_default();
    let server = common::start_server(&format!("{tls}\n{}", mode.server_toml())).await;
    uclient_echoes_everything(&server, transport, mode).await;
    drop(server);
    drop(pki);
}

/// Runs uclient against `server` (with a `turnutils_peer` when `mode` needs one) and
/// checks that every message it sent came back; returns its totals.
async fn uclient_echoes_everything(
    server: &common::TestServer,
    transport: Transport,
    mode: Mode,
) -> UclientTotals {
    let what = format!("{transport:?} {mode:?}");
    let server_addr = match transport {
        Transport::Udp if mode == Mode::OverIpv6 => *server
            .handle
            .udp_addrs()
            .iter()
            .find(|a| a.is_ipv6())
            .expect("the server listens on ::1"),
        Transport::Udp => server.addr,
        Transport::Tcp => *server
            .handle
            .tcp_addrs()
            .first()
            .expect("the server listens on TCP"),
        Transport::Tls => *server
            .handle
            .tls_addrs()
            .first()
            .expect("the server listens for TLS"),
        Transport::Dtls => *server
            .handle
            .dtls_addrs()
            .first()
            .expect("the server listens for DTLS"),
    };
    let peer = if mode.needs_peer() {
        Some(start_echo_peer(mode.peer_ip()).await)
    } else {
        None
    };
    let args = uclient_args(transport, mode, server_addr, peer.as_ref().map(|p| p.addr));
    let run = run_uclient(&args).await;
    println!("$ {UCLIENT} {}\n{}", args.join(" "), run.stdout);
    if !run.stderr.is_empty() {
        println!("--- stderr\n{}", run.stderr);
    }

    let status = run.status.unwrap_or_else(|| {
        panic!("{what}: {UCLIENT} still running after {UCLIENT_TIMEOUT:?}; killed (output above)")
    });
    assert!(
        status.success(),
        "{what}: {UCLIENT} failed with {status} (output above)"
    );
    let totals = parse_uclient_totals(&run.stdout)
        .unwrap_or_else(|e| panic!("{what}: {e} in {UCLIENT}'s output (above)"));
    assert!(totals.sent > 0, "{what}: nothing was sent: {totals:?}");
    assert_eq!(
        totals.sent,
        MESSAGES * CLIENTS,
        "{what}: not every session sent: {totals:?}"
    );
    assert_eq!(
        totals.received, totals.sent,
        "{what}: not everything came back: {totals:?}"
    );
    assert_eq!(totals.lost, 0, "{what}: uclient counted losses: {totals:?}");
    assert_eq!(
        totals.send_dropped, 0,
        "{what}: uclient could not send: {totals:?}"
    );
    drop(peer);
    totals
}

/// The uclient command line: transport, REST secret, no RTCP allocations, server address
/// last.
fn uclient_args(
    transport: Transport,
    mode: Mode,
    server: SocketAddr,
    peer: Option<SocketAddr>,
) -> Vec<String> {
    let mut args: Vec<String> = transport.flags().iter().map(|f| f.to_string()).collect();
    if mode != Mode::RtpRtcp {
        args.push("-c".into());
    }
    match mode {
        Mode::Channels | Mode::RtpRtcp => {}
        Mode::SendIndications => args.push("-s".into()),
        Mode::ClientToClient => args.push("-y".into()),
        Mode::DontFragment => args.push("-g".into()),
        Mode::SendDontFragment => args.extend(["-s".into(), "-g".into()]),
        Mode::Padding => args.push("-D".into()),
        Mode::ExplicitIpv4 => args.push("-X".into()),
        Mode::ExtraRequests => args.push("-G".into()),
        Mode::DualAllocation => args.push("-Z".into()),
        Mode::DualAllocationIpv6 => args.extend(["-Z".into(), "-x".into()]),
        Mode::Ipv6Relay => args.push("-x".into()),
        Mode::OverIpv6 => {}
        Mode::RandomDisconnect => args.push("-B".into()),
        Mode::Negative => args.push("-N".into()),
        Mode::NegativeProtocol => args.push("-R".into()),
        Mode::TcpRelay => args.push("-T".into()),
        Mode::PassiveTcpRelay => args.push("-P".into()),
        Mode::Mobility => args.push("-M".into()),
    }
    for (flag, value) in [
        ("-n", MESSAGES.to_string()),
        ("-m", CLIENTS.to_string()),
        ("-l", MESSAGE_LEN.to_string()),
        ("-W", common::SECRET.to_string()),
        ("-u", "alice".to_string()),
    ] {
        args.extend([flag.to_string(), value]);
    }
    if let Some(peer) = peer {
        args.extend([
            "-e".into(),
            peer.ip().to_string(),
            "-r".into(),
            peer.port().to_string(),
        ]);
    }
    args.extend([
        "-p".into(),
        server.port().to_string(),
        server.ip().to_string(),
    ]);
    args
}

/// The final counters uclient prints when it is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct UclientTotals {
    sent: u64,
    received: u64,
    lost: u64,
    send_dropped: u64,
}

/// Reads the summary at the end of uclient's stdout:
/// `start_mclient: tot_send_msgs=40, tot_recv_msgs=40` (the once-a-second progress lines
/// look alike but also carry `msz=`, and are ignored) and
/// `Total lost packets 0 (0.000000%), total send dropped 0 (0.000000%)`.
fn parse_uclient_totals(output: &str) -> Result<UclientTotals, String> {
    let (sent, received) = output
        .lines()
        .rev()
        .find_map(message_totals)
        .ok_or("no final `tot_send_msgs=N, tot_recv_msgs=N` line")?;
    let (lost, send_dropped) = output
        .lines()
        .rev()
        .find_map(loss_totals)
        .ok_or("no `Total lost packets N` line")?;
    Ok(UclientTotals {
        sent,
        received,
        lost,
        send_dropped,
    })
}

fn message_totals(line: &str) -> Option<(u64, u64)> {
    if line.contains("msz=") {
        return None;
    }
    Some((
        number_after(line, "tot_send_msgs=")?,
        number_after(line, "tot_recv_msgs=")?,
    ))
}

fn loss_totals(line: &str) -> Option<(u64, u64)> {
    let lost = number_after(line, "Total lost packets ")?;
    // Older releases print no send-dropped part.
    let dropped = number_after(line, "total send dropped ").unwrap_or(0);
    Some((lost, dropped))
}

/// The decimal number right after the first `key` in `line`.
fn number_after(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn spawn_tool(command: &mut Command) -> ChildGuard {
    ChildGuard::spawn(command.stdin(Stdio::null()), INSTALL_HINT)
}

struct ToolRun {
    /// `None` if the tool hit the timeout and was killed.
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

/// Runs uclient to completion (or kills it at the timeout) without blocking the runtime the
/// in-process server lives on.
async fn run_uclient(args: &[String]) -> ToolRun {
    run_uclient_for(args, UCLIENT_TIMEOUT).await
}

/// [`run_uclient`], killed after `limit`.
async fn run_uclient_for(args: &[String], limit: Duration) -> ToolRun {
    let mut command = Command::new(UCLIENT);
    command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn_tool(&mut command);
    let (stdout, stderr) = (child.stdout_text(), child.stderr_text());
    let status = child.exit_within(limit).await;
    drop(child); // kills it if it timed out, which closes the pipes the readers wait on
    ToolRun {
        status,
        stdout: stdout.text().await,
        stderr: stderr.text().await,
    }
}

/// A running `turnutils_peer`: it echoes every datagram on `addr` and on the next port.
struct EchoPeer {
    addr: SocketAddr,
    _process: ChildGuard,
}

/// A `turnutils_peer` on `ip` (a loopback address).
async fn start_echo_peer(ip: IpAddr) -> EchoPeer {
    for _ in 0..5 {
        let port = free_port_pair(ip);
        let mut command = Command::new(PEER);
        command
            .args(["-L", &ip.to_string(), "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let process = spawn_tool(&mut command);
        let addr = SocketAddr::new(ip, port);
        let next = SocketAddr::new(ip, port + 1);
        if echoes(addr).await && echoes(next).await {
            return EchoPeer {
                addr,
                _process: process,
            };
        }
    }
    panic!("{PEER} never echoed on {ip} (tried 5 port pairs)");
}

/// Whether something echoes a probe sent to `addr` within a few seconds.
async fn echoes(addr: SocketAddr) -> bool {
    const PROBE: &[u8] = b"ferroturn interop probe";
    let socket = tokio::net::UdpSocket::bind(SocketAddr::new(addr.ip(), 0))
        .await
        .expect("bind a probe socket on the peer's loopback address");
    let mut buf = [0u8; 64];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let _ = socket.send_to(PROBE, addr).await;
        let reply = tokio::time::timeout(Duration::from_millis(100), socket.recv_from(&mut buf));
        match reply.await {
            Ok(Ok((n, from))) if from == addr && &buf[..n] == PROBE => return true,
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(_elapsed) => {}
        }
    }
    false
}

/// A port `p` in `PEER_PORTS` such that `p` and `p + 1` are both free on `ip` right now.
/// `turnutils_peer` binds with `SO_REUSEADDR` and does not fail on a busy port, so look first.
fn free_port_pair(ip: IpAddr) -> u16 {
    static NEXT_PAIR: AtomicU32 = AtomicU32::new(0);
    let pairs = (PEER_PORTS.end - PEER_PORTS.start) / 2;
    let offset = std::process::id(); // parallel test processes start at different places
    for _ in 0..pairs {
        let pair = offset.wrapping_add(NEXT_PAIR.fetch_add(1, Ordering::Relaxed)) % pairs;
        let port = u16::try_from(PEER_PORTS.start + 2 * pair).expect("PEER_PORTS fits in u16");
        let bindable = |p: u16| StdUdpSocket::bind((ip, p)).is_ok();
        if bindable(port) && bindable(port + 1) {
            return port;
        }
    }
    panic!("no free UDP port pair in {PEER_PORTS:?} on {ip}");
}

// ---- the parser, on output captured from coturn 4.6.1's turnutils_uclient ----------------

/// `turnutils_uclient -c -n 20 -m 2 -l 120 -W test-secret -u alice -e 127.0.0.1 -r 3481
/// -p 3479 127.0.0.1` against coturn's own `turnserver` and `turnutils_peer`.
const CLEAN_RUN: &str = "\
0: : Total connect time is 0
0: : Total connect time is 0
1: : start_mclient: msz=2, tot_send_msgs=0, tot_recv_msgs=0, tot_send_bytes ~ 0, tot_recv_bytes ~ 0
2: : start_mclient: msz=2, tot_send_msgs=0, tot_recv_msgs=0, tot_send_bytes ~ 0, tot_recv_bytes ~ 0
3: : start_mclient: msz=2, tot_send_msgs=0, tot_recv_msgs=0, tot_send_bytes ~ 0, tot_recv_bytes ~ 0
4: : start_mclient: msz=2, tot_send_msgs=0, tot_recv_msgs=0, tot_send_bytes ~ 0, tot_recv_bytes ~ 0
5: : start_mclient: msz=2, tot_send_msgs=9, tot_recv_msgs=9, tot_send_bytes ~ 1080, tot_recv_bytes ~ 1080
6: : start_mclient: msz=2, tot_send_msgs=20, tot_recv_msgs=20, tot_send_bytes ~ 2400, tot_recv_bytes ~ 2400
6: : start_mclient: tot_send_msgs=40, tot_recv_msgs=40
6: : start_mclient: tot_send_bytes ~ 4800, tot_recv_bytes ~ 4800
6: : Total transmit time is 6
6: : Total lost packets 0 (0.000000%), total send dropped 0 (0.000000%)
6: : Average round trip delay 0.000000 ms; min = 0 ms, max = 0 ms
6: : Average jitter 0.850000 ms; min = 0 ms, max = 4 ms
";

/// Same tool, `-n 10 -m 1`, with a peer that dropped every fourth datagram.
const LOSSY_RUN: &str = "\
0: : Total connect time is 0
0: : Total connect time is 0
1: : start_mclient: msz=1, tot_send_msgs=0, tot_recv_msgs=0, tot_send_bytes ~ 0, tot_recv_bytes ~ 0
2: : start_mclient: msz=1, tot_send_msgs=0, tot_recv_msgs=0, tot_send_bytes ~ 0, tot_recv_bytes ~ 0
3: : start_mclient: msz=1, tot_send_msgs=0, tot_recv_msgs=0, tot_send_bytes ~ 0, tot_recv_bytes ~ 0
4: : start_mclient: msz=1, tot_send_msgs=0, tot_recv_msgs=0, tot_send_bytes ~ 0, tot_recv_bytes ~ 0
5: : start_mclient: msz=1, tot_send_msgs=0, tot_recv_msgs=0, tot_send_bytes ~ 0, tot_recv_bytes ~ 0
6: : start_mclient: msz=1, tot_send_msgs=9, tot_recv_msgs=7, tot_send_bytes ~ 1080, tot_recv_bytes ~ 840
7: : start_mclient: msz=1, tot_send_msgs=10, tot_recv_msgs=8, tot_send_bytes ~ 1200, tot_recv_bytes ~ 960
8: : start_mclient: msz=1, tot_send_msgs=10, tot_recv_msgs=8, tot_send_bytes ~ 1200, tot_recv_bytes ~ 960
9: : start_mclient: msz=1, tot_send_msgs=10, tot_recv_msgs=8, tot_send_bytes ~ 1200, tot_recv_bytes ~ 960
10: : start_mclient: msz=1, tot_send_msgs=10, tot_recv_msgs=8, tot_send_bytes ~ 1200, tot_recv_bytes ~ 960
11: : start_mclient: msz=1, tot_send_msgs=10, tot_recv_msgs=8, tot_send_bytes ~ 1200, tot_recv_bytes ~ 960
12: : start_mclient: msz=1, tot_send_msgs=10, tot_recv_msgs=8, tot_send_bytes ~ 1200, tot_recv_bytes ~ 960
13: : start_mclient: msz=1, tot_send_msgs=10, tot_recv_msgs=8, tot_send_bytes ~ 1200, tot_recv_bytes ~ 960
14: : start_mclient: msz=1, tot_send_msgs=10, tot_recv_msgs=8, tot_send_bytes ~ 1200, tot_recv_bytes ~ 960
15: : start_mclient: msz=1, tot_send_msgs=10, tot_recv_msgs=8, tot_send_bytes ~ 1200, tot_recv_bytes ~ 960
16: : start_mclient: tot_send_msgs=10, tot_recv_msgs=8
16: : start_mclient: tot_send_bytes ~ 1200, tot_recv_bytes ~ 960
16: : Total transmit time is 16
16: : Total lost packets 2 (20.000000%), total send dropped 0 (0.000000%)
16: : Average round trip delay 0.000000 ms; min = 0 ms, max = 0 ms
16: : Average jitter 0.125000 ms; min = 0 ms, max = 1 ms
";

/// Same tool with a wrong `-W` secret: it exits with status 255 before sending anything.
const REJECTED_RUN: &str = "\
0: : ERROR: Cannot complete Allocation
0: : ERROR: Cannot complete Allocation
";

#[test]
fn parses_the_totals_of_a_clean_run() {
    let totals = parse_uclient_totals(CLEAN_RUN).unwrap();
    assert_eq!(
        totals,
        UclientTotals {
            sent: 40,
            received: 40,
            lost: 0,
            send_dropped: 0
        }
    );
}

#[test]
fn parses_the_totals_of_a_lossy_run() {
    let totals = parse_uclient_totals(LOSSY_RUN).unwrap();
    assert_eq!(
        totals,
        UclientTotals {
            sent: 10,
            received: 8,
            lost: 2,
            send_dropped: 0
        }
    );
}

#[test]
fn progress_lines_are_not_totals() {
    // A run killed mid-way has progress lines but no summary.
    let cut = CLEAN_RUN
        .split("6: : start_mclient: tot_send_msgs")
        .next()
        .unwrap();
    assert!(parse_uclient_totals(cut).is_err());
    assert!(parse_uclient_totals(REJECTED_RUN).is_err());
    assert!(parse_uclient_totals("").is_err());
}

#[test]
fn number_after_reads_only_the_digits() {
    assert_eq!(
        number_after("tot_send_msgs=40, tot_recv_msgs=39", "tot_recv_msgs="),
        Some(39)
    );
    assert_eq!(
        number_after("Total lost packets 5 (100.000000%)", "Total lost packets "),
        Some(5)
    );
    assert_eq!(number_after("tot_send_msgs=, x", "tot_send_msgs="), None);
    assert_eq!(number_after("nothing here", "tot_send_msgs="), None);
}

#[test]
fn uclient_args_name_the_peer_only_when_there_is_one() {
    let server: SocketAddr = "127.0.0.1:3479".parse().unwrap();
    let peer: SocketAddr = "127.0.0.1:20000".parse().unwrap();
    let with_peer =
        uclient_args(Transport::Udp, Mode::SendIndications, server, Some(peer)).join(" ");
    assert_eq!(
        with_peer,
        format!(
            "-c -s -n 20 -m 2 -l 120 -W {} -u alice -e 127.0.0.1 -r 20000 -p 3479 127.0.0.1",
            common::SECRET
        )
    );
    let c2c = uclient_args(Transport::Udp, Mode::ClientToClient, server, None);
    assert!(c2c.starts_with(&["-c".to_string(), "-y".to_string()]));
    assert!(!c2c.contains(&"-e".to_string()));
    assert_eq!(c2c.last().map(String::as_str), Some("127.0.0.1"));
}

#[test]
fn uclient_args_start_with_the_transport_flags() {
    let server: SocketAddr = "127.0.0.1:5349".parse().unwrap();
    let peer: SocketAddr = "127.0.0.1:20000".parse().unwrap();
    let tcp = uclient_args(Transport::Tcp, Mode::Channels, server, Some(peer)).join(" ");
    assert!(tcp.starts_with("-t -c -n 20 "), "{tcp}");
    let tls = uclient_args(Transport::Tls, Mode::SendIndications, server, Some(peer)).join(" ");
    assert!(tls.starts_with("-t -S -c -s -n 20 "), "{tls}");
    assert!(tls.ends_with("-p 5349 127.0.0.1"), "{tls}");
}
