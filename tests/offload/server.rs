//! The whole server with `kernel-offload = "on"`, in namespaces made for each test: our
//! TURN client binds a channel, the kernel relays its ChannelData both ways while the
//! user-space counters stand still, and every way user space has of ending a channel
//! (Refresh 0, permission expiry, an operator's delete, a reload denying the peer, the
//! server stopping) takes it out of the kernel at once, and a reload replacing the secret
//! leaves it there, as it leaves the allocation; `max-bps` and `bps-capacity`
//! hold there too; the usage record adds what the kernel relayed. `routed_*` runs the server between a client and a peer namespace, so
//! the kernel forwards through a real route and neighbour.

use crate::common::webhook::{Receiver, hook_toml};
use crate::common::{self, METRICS_WAIT, QUIET, TestServer, WAIT};
use crate::netns::Namespaces;
use crate::skip_unless_available;
use crate::veth::{addr, topology};
use ferroturn::client::codec::RequestAttr;
use ferroturn::client::{Relayed, TurnClient};
use ferroturn::offload::OffloadTotals;
use ferroturn_core::proto::Family;
use std::future::Future;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

const CHANNEL: u16 = 0x4123;
const ROUND_TRIPS: usize = 40;

/// Runs `body` on a runtime whose threads live in `role`'s namespace, so the server's
/// shards, its attach point and every socket made there are in it.
fn run_in<F: Future<Output = ()>>(ns: &Namespaces, role: &str, body: impl FnOnce() -> F + Send) {
    ns.run(role, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(body())
    });
}

/// Runs `body` in a namespace of its own with lo up, where the fast path can run; says
/// in one line why not where it cannot.
fn on_lo<F: Future<Output = ()>>(body: impl FnOnce() -> F + Send) {
    skip_unless_available!(crate::program_available());
    let ns = skip_unless_available!(Namespaces::new(&["srv"]));
    run_in(&ns, "srv", body);
}

fn loopback_toml(v6: bool, extra: &str) -> String {
    let ip = if v6 { "::1" } else { "127.0.0.1" };
    format!(
        "kernel-offload = \"on\"\nlistening-ip = [\"{ip}\"]\nrelay-ip = [\"{ip}\"]\n\
         allowed-peer-ip = [\"{ip}\"]\n{extra}"
    )
}

async fn start(toml: &str) -> TestServer {
    common::start_server(toml).await
}

/// What the kernel relayed so far.
fn kernel(server: &TestServer) -> OffloadTotals {
    server
        .handle
        .metrics()
        .offload
        .expect("kernel offload runs")
        .0
}

fn installed(server: &TestServer) -> u64 {
    server
        .handle
        .metrics()
        .offload
        .expect("kernel offload runs")
        .1
}

/// A peer: a plain socket the test reads and writes itself.
fn peer(at: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind(at).expect("bind peer");
    s.set_read_timeout(Some(QUIET)).expect("timeout");
    s
}

fn peer_recv(peer: &UdpSocket, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    peer.set_read_timeout(Some(wait)).expect("timeout");
    let mut buf = [0u8; 2048];
    peer.recv_from(&mut buf)
        .ok()
        .map(|(n, from)| (buf[..n].to_vec(), from))
}

/// Allocates and binds CHANNEL to `peer`: returns the client and its relayed address.
async fn bound(server: &TestServer, peer: SocketAddr) -> (TurnClient, SocketAddr) {
    let mut c = common::client(server, "alice").await;
    let relayed = allocate(&mut c, peer).await;
    c.channel_bind(CHANNEL, peer).await.expect("channel bind");
    (c, relayed)
}

/// A UDP relay of `peer`'s family (RFC 8656 section 7.2: REQUESTED-ADDRESS-FAMILY).
async fn allocate(c: &mut TurnClient, peer: SocketAddr) -> SocketAddr {
    let family = if peer.is_ipv6() {
        Family::V6
    } else {
        Family::V4
    };
    c.allocate_with(&[
        RequestAttr::RequestedTransport(17),
        RequestAttr::RequestedFamily(family),
    ])
    .await
    .expect("allocate")
}

/// `n` round trips client -> peer -> client on CHANNEL, one at a time; how many completed.
async fn round_trips(c: &mut TurnClient, peer: &UdpSocket, relayed: SocketAddr, n: usize) -> usize {
    let mut done = 0;
    for i in 0..n {
        let payload = format!("round trip {i}").into_bytes();
        c.send_channel_data(CHANNEL, &payload).await.expect("send");
        let Some((got, from)) = peer_recv(peer, WAIT) else {
            continue;
        };
        assert_eq!((got.as_slice(), from), (payload.as_slice(), relayed));
        peer.send_to(&got, relayed).expect("peer send");
        match c.recv_relayed(WAIT).await.expect("recv") {
            Some(Relayed::Channel { channel, data }) if channel == CHANNEL && data == payload => {
                done += 1
            }
            other => panic!("round trip {i}: {other:?}"),
        }
    }
    done
}

/// Nothing more crosses the relay either way, and the kernel counted nothing more.
async fn relays_nothing(
    server: &TestServer,
    c: &mut TurnClient,
    peer: &UdpSocket,
    relayed: SocketAddr,
) {
    let before = kernel(server);
    for _ in 0..10 {
        c.send_channel_data(CHANNEL, b"after the end")
            .await
            .expect("send");
        peer.send_to(b"after the end", relayed).expect("send");
    }
    assert_eq!(peer_recv(peer, QUIET), None, "relayed to the peer");
    assert!(
        c.recv_relayed(QUIET).await.expect("recv").is_none(),
        "relayed to the client"
    );
    let after = kernel(server);
    assert_eq!(after.up.relayed, before.up.relayed);
    assert_eq!(after.down.relayed, before.down.relayed);
}

/// Polls until `done` holds, for at most `wait`.
async fn eventually(wait: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done()
}

fn relayed_in_kernel(v6: bool) {
    on_lo(|| async move {
        let mut hook = Receiver::plain().await;
        let server = start(&loopback_toml(v6, &hook_toml(&hook.url))).await;
        let peer = peer(SocketAddr::new(server.addr.ip(), 0));
        let peer_addr = peer.local_addr().unwrap();
        let (mut c, relayed) = bound(&server, peer_addr).await;
        assert_eq!(installed(&server), 1);

        assert_eq!(
            round_trips(&mut c, &peer, relayed, ROUND_TRIPS).await,
            ROUND_TRIPS
        );
        let k = kernel(&server);
        assert_eq!(k.up.relayed.packets, ROUND_TRIPS as u64);
        assert_eq!(k.down.relayed.packets, ROUND_TRIPS as u64);

        // Three Send indications take the user-space path (the kernel leaves them
        // alone); once the shards have published them, user space has counted exactly
        // those three, none of the channel's datagrams.
        for _ in 0..3 {
            c.send_indication(peer_addr, b"indication")
                .await
                .expect("send");
            assert!(peer_recv(&peer, WAIT).is_some(), "an indication relayed");
        }
        let user_up = || server.handle.metrics().stats.relayed[0][0].packets;
        assert!(
            eventually(METRICS_WAIT, || user_up() >= 3).await,
            "published"
        );
        let m = server.handle.metrics();
        assert_eq!(
            m.stats.relayed[0][0].packets, 3,
            "client to peer in user space"
        );
        assert_eq!(
            m.stats.relayed[0][1].packets, 0,
            "peer to client in user space"
        );

        let sessions = server.handle.sessions();
        assert_eq!(sessions.len(), 1);
        let s = &sessions[0];
        assert_eq!(s.offloaded_channels, 1);
        assert_eq!(s.kernel[0].packets, ROUND_TRIPS as u64);
        assert_eq!(s.kernel[1].packets, ROUND_TRIPS as u64);
        assert_eq!(s.kernel[0].bytes, k.up.relayed.bytes);

        // The usage record counts both: the kernel's channel datagrams, read from its
        // counters as the allocation ends, and user space's indications.
        c.refresh(0).await.expect("refresh 0");
        let r = &hook.records(1, WAIT).await[0];
        let indications = 3 * b"indication".len() as u64;
        for (field, want) in [
            ("client_to_peer_packets", ROUND_TRIPS as u64 + 3),
            ("peer_to_client_packets", ROUND_TRIPS as u64),
            ("client_to_peer_bytes", k.up.relayed.bytes + indications),
            ("peer_to_client_bytes", k.down.relayed.bytes),
        ] {
            assert_eq!(r[field].as_u64(), Some(want), "{field} in {r:#}");
        }
        assert_eq!(r["reason"], "client");
        drop(c);
    });
}

#[test]
fn ipv4_channel_relayed_by_the_kernel_while_user_space_counts_nothing() {
    relayed_in_kernel(false);
}

#[test]
fn ipv6_channel_relayed_by_the_kernel_while_user_space_counts_nothing() {
    relayed_in_kernel(true);
}

/// Ends the allocation or its channel one way and checks that nothing more is relayed.
async fn ended_by(how: &str) {
    let extra = match how {
        "permission expiry" => "permission-lifetime = 2\n",
        _ => "",
    };
    let server = start(&loopback_toml(false, extra)).await;
    let peer = peer("127.0.0.1:0".parse().unwrap());
    let peer_addr = peer.local_addr().unwrap();
    let (mut c, relayed) = bound(&server, peer_addr).await;
    assert_eq!(round_trips(&mut c, &peer, relayed, 5).await, 5);
    assert_eq!(kernel(&server).up.relayed.packets, 5);
    match how {
        "refresh 0" => {
            c.refresh(0).await.expect("refresh 0");
            assert_eq!(installed(&server), 0, "removed before the answer");
        }
        "operator delete" => {
            assert_eq!(
                server
                    .handle
                    .delete_sessions(ferroturn_core::server::SessionFilter::All),
                1
            );
            assert_eq!(installed(&server), 0);
        }
        "reload replacing the secret" => {
            // Allocations keep the credentials they were created with (README, "Reload
            // and drain"): the channel stays in the kernel as the allocation runs on in
            // user space, until the client ends it.
            let toml = loopback_toml(false, "static-auth-secret = [\"another-secret\"]\n");
            let config = ferroturn::config::Config::from_toml_str(&common::test_config_toml(&toml))
                .expect("config");
            server.handle.apply(config).expect("reload");
            assert_eq!(round_trips(&mut c, &peer, relayed, 5).await, 5);
            assert_eq!(
                kernel(&server).up.relayed.packets,
                10,
                "relayed by the kernel"
            );
            assert_eq!(installed(&server), 1);
            assert_eq!(c.refresh(600).await.expect("refresh"), 600);
            c.refresh(0).await.expect("refresh 0");
            assert_eq!(installed(&server), 0);
        }
        "reload denying the peer" => {
            let toml = loopback_toml(false, "").replace("allowed-peer-ip = [\"127.0.0.1\"]\n", "");
            let config = ferroturn::config::Config::from_toml_str(&common::test_config_toml(
                &format!("{toml}allowed-peer-ip = []\n"),
            ))
            .expect("config");
            server.handle.apply(config).expect("reload");
            assert!(
                eventually(WAIT, || installed(&server) == 0).await,
                "still installed"
            );
            assert_eq!(server.handle.sessions().len(), 1, "the allocation runs on");
        }
        "permission expiry" => {
            assert!(
                eventually(Duration::from_secs(10), || installed(&server) == 0).await,
                "still installed after the permission expired"
            );
            // The peer is no longer relayed to the client; the client's ChannelData on
            // its bound channel still is (RFC 8656 section 12.6), by user space.
            peer.send_to(b"after expiry", relayed).expect("send");
            assert!(c.recv_relayed(QUIET).await.expect("recv").is_none());
            let before = kernel(&server);
            c.send_channel_data(CHANNEL, b"still bound")
                .await
                .expect("send");
            assert_eq!(
                peer_recv(&peer, WAIT).map(|(d, _)| d),
                Some(b"still bound".to_vec())
            );
            assert_eq!(
                kernel(&server).up.relayed,
                before.up.relayed,
                "kernel relayed it"
            );
            return;
        }
        other => unreachable!("{other}"),
    }
    relays_nothing(&server, &mut c, &peer, relayed).await;
}

/// A server that stops (as at the end of a drain) leaves nothing in the kernel, even
/// while the program is still attached.
#[test]
fn a_stopped_server_leaves_no_channel_in_the_kernel() {
    on_lo(|| async {
        let mut server = start(&loopback_toml(false, "")).await;
        let peer = peer("127.0.0.1:0".parse().unwrap());
        let (mut c, relayed) = bound(&server, peer.local_addr().unwrap()).await;
        assert_eq!(round_trips(&mut c, &peer, relayed, 5).await, 5);
        server.handle.stop();
        assert_eq!(installed(&server), 0);
        relays_nothing(&server, &mut c, &peer, relayed).await;
    });
}

#[test]
fn after_refresh_zero_not_one_more_datagram_is_relayed() {
    on_lo(|| ended_by("refresh 0"));
}

#[test]
fn an_operator_delete_takes_the_channel_out_of_the_kernel() {
    on_lo(|| ended_by("operator delete"));
}

#[test]
fn a_reload_replacing_the_secret_keeps_the_kernel_channel_until_refresh_zero() {
    on_lo(|| ended_by("reload replacing the secret"));
}

#[test]
fn a_reload_denying_the_peer_ends_the_kernel_channel() {
    on_lo(|| ended_by("reload denying the peer"));
}

#[test]
fn permission_expiry_leaves_the_peer_unrelayed() {
    on_lo(|| ended_by("permission expiry"));
}

/// 200 datagrams of 1000 bytes at once against a cap of 10 kB/s (a second's burst): the
/// kernel relays about the burst and drops and counts the rest.
async fn capped(extra: &str, by_capacity: bool) {
    let server = start(&loopback_toml(false, extra)).await;
    let peer = peer("127.0.0.1:0".parse().unwrap());
    let (c, _) = bound(&server, peer.local_addr().unwrap()).await;
    let payload = [0x5a; 1000];
    for _ in 0..200 {
        c.send_channel_data(CHANNEL, &payload).await.expect("send");
    }
    let mut received = 0;
    while peer_recv(&peer, QUIET).is_some() {
        received += 1;
    }
    let k = kernel(&server);
    let dropped = if by_capacity {
        k.up.dropped_capacity
    } else {
        k.up.dropped_rate
    };
    assert!(received >= 1, "nothing relayed");
    assert!(
        received < 100,
        "{received} of 200 relayed through a 10 kB/s cap"
    );
    assert_eq!(k.up.relayed.packets, received as u64);
    assert_eq!(dropped, 200 - received as u64, "drops counted");
}

#[test]
fn max_bps_holds_in_the_kernel() {
    on_lo(|| capped("max-bps = 10000\n", false));
}

#[test]
fn bps_capacity_holds_in_the_kernel() {
    on_lo(|| capped("bps-capacity = 10000\nmax-bps = 0\n", true));
}

/// The server between a client namespace and a peer namespace: the kernel forwards the
/// relayed datagrams through the server namespace's routes and neighbours.
fn routed(v6: bool) {
    skip_unless_available!(crate::program_available());
    let ns = skip_unless_available!(topology(v6));
    let client_sock = ns.run("client", || {
        std::net::UdpSocket::bind(SocketAddr::new(addr(v6, 1, 1), 0)).expect("client socket")
    });
    let peer = ns.run("peer", || peer(SocketAddr::new(addr(v6, 2, 1), 0)));
    let peer_addr = peer.local_addr().unwrap();
    let toml = format!(
        "kernel-offload = \"on\"\nlistening-ip = [\"{}\"]\nrelay-ip = [\"{}\"]\n\
         allowed-peer-ip = [\"{}\"]\n",
        addr(v6, 1, 2),
        addr(v6, 2, 2),
        addr(v6, 2, 1)
    );
    run_in(&ns, "server", || async move {
        let server = start(&toml).await;
        client_sock.set_nonblocking(true).expect("nonblocking");
        let socket = tokio::net::UdpSocket::from_std(client_sock).expect("tokio socket");
        let (u, p) = common::rest_credentials(common::SECRET, "alice", Duration::from_secs(600));
        let mut c = TurnClient::with_socket(socket, server.addr, &u, &p);
        let relayed = allocate(&mut c, peer_addr).await;
        c.channel_bind(CHANNEL, peer_addr)
            .await
            .expect("channel bind");
        assert_eq!(installed(&server), 1);
        assert_eq!(
            round_trips(&mut c, &peer, relayed, ROUND_TRIPS).await,
            ROUND_TRIPS
        );
        let k = kernel(&server);
        assert_eq!(k.up.relayed.packets, ROUND_TRIPS as u64);
        assert_eq!(k.down.relayed.packets, ROUND_TRIPS as u64);
        c.refresh(0).await.expect("refresh 0");
        relays_nothing(&server, &mut c, &peer, relayed).await;
    });
}

#[test]
fn routed_ipv4_through_veth_by_the_kernel() {
    routed(false);
}

#[test]
fn routed_ipv6_through_veth_by_the_kernel() {
    routed(true);
}

/// RFC 8656 section 18.9 on the wire (user space; DF allocations are not offloaded): the
/// server's link toward the peer has an MTU of 1280. A 1300-byte payload reaches the peer
/// from an allocation without DONT-FRAGMENT (fragmented on the way) and never from one
/// with it, while a small one does from both.
#[test]
fn dont_fragment_keeps_the_relay_from_fragmenting() {
    let ns = skip_unless_available!(topology(false));
    ns.ip("server", &["link", "set", "s1", "mtu", "1280"]);
    let sockets = ns.run("client", || {
        let bind = || {
            let s = std::net::UdpSocket::bind(SocketAddr::new(addr(false, 1, 1), 0))
                .expect("client socket");
            s.set_nonblocking(true).expect("nonblocking");
            s
        };
        [bind(), bind()]
    });
    let peer = ns.run("peer", || peer(SocketAddr::new(addr(false, 2, 1), 0)));
    let peer_addr = peer.local_addr().unwrap();
    let toml = format!(
        "listening-ip = [\"{}\"]\nrelay-ip = [\"{}\"]\nallowed-peer-ip = [\"{}\"]\n",
        addr(false, 1, 2),
        addr(false, 2, 2),
        addr(false, 2, 1)
    );
    run_in(&ns, "server", || async move {
        let server = start(&toml).await;
        for (dont_fragment, socket) in [false, true].into_iter().zip(sockets) {
            let socket = tokio::net::UdpSocket::from_std(socket).expect("tokio socket");
            let (u, p) =
                common::rest_credentials(common::SECRET, "alice", Duration::from_secs(600));
            let mut c = TurnClient::with_socket(socket, server.addr, &u, &p);
            let mut attrs = vec![RequestAttr::RequestedTransport(17)];
            if dont_fragment {
                attrs.push(RequestAttr::DontFragment);
            }
            c.allocate_with(&attrs).await.expect("allocate");
            c.channel_bind(CHANNEL, peer_addr)
                .await
                .expect("channel bind");
            c.send_channel_data(CHANNEL, &[7; 1300])
                .await
                .expect("send");
            let big = peer_recv(&peer, if dont_fragment { QUIET } else { WAIT });
            if dont_fragment {
                assert_eq!(big, None, "a DF datagram over the MTU reached the peer");
            } else {
                assert_eq!(
                    big.map(|(d, _)| d.len()),
                    Some(1300),
                    "fragmented and reassembled"
                );
            }
            c.send_channel_data(CHANNEL, &[8; 100]).await.expect("send");
            assert_eq!(
                peer_recv(&peer, WAIT).map(|(d, _)| d),
                Some(vec![8; 100]),
                "dont_fragment {dont_fragment}"
            );
        }
    });
}
