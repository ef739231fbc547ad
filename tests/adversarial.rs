//! Attacks on a running ferroturn (issue 5), each test named for the attack it shows the
//! server resists. Everything is real UDP on loopback against a server in this process.
//! Where a test claims that nothing left a relay toward an address, a socket listens on
//! that address, and a control server that allows the address receives the very same
//! traffic there: a silent listener cannot pass by accident.
//!
//! Addresses outside loopback (10.0.0.1, 169.254.169.254, fd00::1, ...) are only ever
//! named in requests; no datagram is sent toward them, whatever the server answers.

mod common;

use common::adversary::{
    Msg, Session, TCP, Target, UDP, attribute, attributes, drain, error_code, is_success, recv_from,
};
use common::process::{alone, rss_kib, run_alone};
use common::wire::{UNKNOWN_ATTR, lifetime, relayed_of};
use common::{
    METRICS_WAIT, QUIET, REALM, SECRET, TestServer, WAIT, addr, client, code, config_toml, ip,
    rest_credentials, start_server, start_server_raw, unix_now,
};
use ferroturn::client::codec::{self as client_codec, RequestAttr};
use ferroturn::client::{Relayed, TurnClient, parse_relayed};
use ferroturn_core::proto::codec::Family;
use ferroturn_core::proto::wire::{Class, HEADER_LEN, attr, method};
use ferroturn_core::server::Stats;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::{Instant, sleep};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

// ---------------------------------------------------------------------------------
// Servers and clients.

/// The base configuration with the default peer policy, or `allowed` peers let through
/// (the control), IPv4 and IPv6 relays, plus `extra` TOML keys.
fn config(allowed: &[&str], extra: &str) -> String {
    let list: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
    config_toml(
        SECRET,
        &format!(
            "allowed-peer-ip = [{}]\nrelay-ip = [\"127.0.0.1\", \"::1\"]\n{extra}",
            list.join(", ")
        ),
    )
}

async fn denying_server(extra: &str) -> TestServer {
    start_server_raw(&config(&[], extra)).await
}

/// The control: the same server with `allowed` peers let through.
async fn allowing_server(allowed: &[&str], extra: &str) -> TestServer {
    start_server_raw(&config(allowed, extra)).await
}

/// A client with an IPv4 relay, and its relayed address.
async fn relay_v4(server: &TestServer, user: &str) -> (TurnClient, SocketAddr) {
    let mut c = client(server, user).await;
    let relayed = c.allocate().await.expect("IPv4 allocation");
    (c, relayed)
}

/// A client with an IPv6 relay (REQUESTED-ADDRESS-FAMILY, RFC 8656 section 7.2).
async fn relay_v6(server: &TestServer, user: &str) -> (TurnClient, SocketAddr) {
    let mut c = client(server, user).await;
    let relayed = c
        .allocate_with(&[
            RequestAttr::RequestedTransport(UDP),
            RequestAttr::RequestedFamily(Family::V6),
        ])
        .await
        .expect("IPv6 allocation");
    assert!(relayed.is_ipv6());
    (c, relayed)
}

fn data_of(r: Relayed) -> Vec<u8> {
    match r {
        Relayed::Indication { data, .. } | Relayed::Channel { data, .. } => data,
    }
}

/// The next relayed payload `c` receives within `wait`.
async fn relayed_data(c: &mut TurnClient, wait: Duration) -> Option<Vec<u8>> {
    c.recv_relayed(wait)
        .await
        .expect("client socket")
        .map(data_of)
}

/// A raw session of `user` from `local`, challenged once (holds REALM and NONCE).
async fn session(server: &TestServer, local: &str, user: &str) -> Session {
    let (u, p) = rest_credentials(SECRET, user, Duration::from_secs(600));
    Session::challenged(ip(local), server.addr, &u, &p).await
}

/// A counter of the server's metrics (published by each shard once a second), once it
/// has reached `at_least` or after [`METRICS_WAIT`].
async fn counter(server: &TestServer, read: impl Fn(&Stats) -> u64, at_least: u64) -> u64 {
    let deadline = Instant::now() + METRICS_WAIT;
    loop {
        let value = read(&server.handle.metrics().stats);
        if value >= at_least || Instant::now() >= deadline {
            return value;
        }
        sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------
// Every spelling of a denied address, on every relay path.

/// IPv4 addresses refused by default: this host in two spellings, private, CGNAT,
/// link-local and metadata, IETF protocol assignments, benchmarking, multicast,
/// reserved, broadcast.
const DENIED_V4: &[&str] = &[
    "127.0.0.1",
    "127.255.255.254",
    "0.0.0.0",
    "10.0.0.1",
    "100.64.0.1",
    "169.254.169.254",
    "172.16.0.1",
    "192.0.0.8",
    "192.168.1.1",
    "198.18.0.1",
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
];

/// IPv6 addresses refused by default, among them every IPv6 spelling of 127.0.0.1,
/// 0.0.0.0, 10.0.0.1 and 169.254.169.254 (mapped, compatible, 6to4, NAT64).
const DENIED_V6: &[&str] = &[
    "::",
    "::1",
    "::ffff:127.0.0.1",
    "::127.0.0.1",
    "2002:7f00:1::",
    "64:ff9b::7f00:1",
    "::ffff:0.0.0.0",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "64:ff9b::a9fe:a9fe",
    "2002:a9fe:a9fe::",
    "fd00::1",
    "fd00:ec2::254",
    "fe80::1",
    "ff02::1",
];

/// coturn's advisories were mostly another spelling of a denied address. Every spelling
/// gets 403 for CreatePermission and ChannelBind on a relay of its family, and 443 on the
/// other family's relay; a server that allows everything grants each one, so the 403s
/// come from the policy and not from the requests.
#[tokio::test]
async fn every_spelling_of_a_denied_address_gets_403_for_permissions_and_channels() {
    let denied = denying_server("").await;
    let (mut a4, _) = relay_v4(&denied, "alice").await;
    let (mut a6, _) = relay_v6(&denied, "alice").await;
    for (i, spelling) in DENIED_V4.iter().chain(DENIED_V6).enumerate() {
        let peer = SocketAddr::new(ip(spelling), 5000);
        let channel = 0x4000 + i as u16;
        let (own, other) = if peer.is_ipv4() {
            (&mut a4, &mut a6)
        } else {
            (&mut a6, &mut a4)
        };
        assert_eq!(
            code(own.create_permission(&[peer]).await),
            403,
            "CreatePermission {peer}"
        );
        assert_eq!(
            code(own.channel_bind(channel, peer).await),
            403,
            "ChannelBind {peer}"
        );
        assert_eq!(
            code(other.create_permission(&[peer]).await),
            443,
            "family of {peer}"
        );
        assert_eq!(
            code(other.channel_bind(channel, peer).await),
            443,
            "family of {peer}"
        );
    }

    let control = allowing_server(&["0.0.0.0/0", "::/0"], "new-peer-rate = 0").await;
    let (mut a4, _) = relay_v4(&control, "alice").await;
    let (mut a6, _) = relay_v6(&control, "alice").await;
    for (i, spelling) in DENIED_V4.iter().chain(DENIED_V6).enumerate() {
        let peer = SocketAddr::new(ip(spelling), 5000);
        let c = if peer.is_ipv4() { &mut a4 } else { &mut a6 };
        c.create_permission(&[peer])
            .await
            .expect("allowed by the control");
        c.channel_bind(0x4000 + i as u16, peer)
            .await
            .expect("allowed by the control");
    }
}

/// Cloud metadata services (169.254.169.254, AWS's fd00:ec2::254, ECS's 169.254.170.2,
/// Alibaba's 100.100.100.200) and their IPv6 spellings are refused; explicitly allowing
/// them is what it takes to reach them.
#[tokio::test]
async fn cloud_metadata_addresses_are_refused() {
    let metadata = [
        "169.254.169.254:80",
        "169.254.170.2:80",
        "100.100.100.200:80",
        "[fd00:ec2::254]:80",
        "[::ffff:169.254.169.254]:80",
        "[64:ff9b::a9fe:a9fe]:80",
        "[2002:a9fe:a9fe::]:80",
    ];
    let denied = denying_server("").await;
    let (mut a4, _) = relay_v4(&denied, "alice").await;
    let (mut a6, _) = relay_v6(&denied, "alice").await;
    for m in metadata {
        let peer = addr(m);
        let c = if peer.is_ipv4() { &mut a4 } else { &mut a6 };
        assert_eq!(code(c.create_permission(&[peer]).await), 403, "{peer}");
        assert_eq!(code(c.channel_bind(0x4000, peer).await), 403, "{peer}");
    }
    let control = allowing_server(&["169.254.169.254", "fd00:ec2::254"], "").await;
    let (mut a4, _) = relay_v4(&control, "alice").await;
    let (mut a6, _) = relay_v6(&control, "alice").await;
    a4.create_permission(&[addr("169.254.169.254:80")])
        .await
        .unwrap();
    a6.create_permission(&[addr("[fd00:ec2::254]:80")])
        .await
        .unwrap();
    assert_eq!(
        code(a4.create_permission(&[addr("169.254.170.2:80")]).await),
        403
    );
}

/// The paths a datagram can take toward a UDP service on the TURN host (127.0.0.1:P and
/// [::1]:P), spelled 127.0.0.1, 0.0.0.0, ::1 and :: (the kernel delivers all four
/// locally): CreatePermission and ChannelBind get 403, and Send indications, ChannelData
/// on the channel that could not be bound, and datagrams the service sends to the
/// relayed addresses all go nowhere, although the attacker holds a permission for
/// 127.0.0.1 and ::1 (installed for another client's relayed address). The control
/// server delivers every one of them.
#[tokio::test]
async fn loopback_and_unspecified_addresses_are_unreachable_on_every_relay_path() {
    let target = Target::new().await;
    let denied = denying_server("").await;
    attack_local_service(&denied, &target, false).await;
    let control = allowing_server(&["127.0.0.1", "0.0.0.0", "::1", "::"], "").await;
    attack_local_service(&control, &target, true).await;
}

async fn attack_local_service(server: &TestServer, target: &Target, allowed: bool) {
    let (mut a4, ra4) = relay_v4(server, "alice").await;
    let (mut b4, rb4) = relay_v4(server, "bob").await;
    let (mut a6, ra6) = relay_v6(server, "alice").await;
    let (mut b6, rb6) = relay_v6(server, "bob").await;
    // Client to client: A now holds permissions for the IPs 127.0.0.1 and ::1, so only
    // the per-datagram policy stands between A and every other port there.
    a4.create_permission(&[rb4]).await.unwrap();
    b4.create_permission(&[ra4]).await.unwrap();
    a6.create_permission(&[rb6]).await.unwrap();
    b6.create_permission(&[ra6]).await.unwrap();

    let mut sent = Vec::new();
    for (i, spelling) in ["127.0.0.1", "0.0.0.0", "::1", "::"]
        .into_iter()
        .enumerate()
    {
        let peer = target.at(spelling);
        let channel = 0x4100 + i as u16;
        let c = if peer.is_ipv4() { &mut a4 } else { &mut a6 };
        let permission = c.create_permission(&[peer]).await;
        let bind = c.channel_bind(channel, peer).await;
        if allowed {
            permission.expect("control: CreatePermission");
            bind.expect("control: ChannelBind");
        } else {
            assert_eq!(code(permission), 403, "CreatePermission {peer}");
            assert_eq!(code(bind), 403, "ChannelBind {peer}");
        }
        let indication = format!("Send indication to {peer}").into_bytes();
        c.send_indication(peer, &indication).await.unwrap();
        let channel_data = format!("ChannelData to {peer}").into_bytes();
        c.send_channel_data(channel, &channel_data).await.unwrap();
        sent.extend([indication, channel_data]);
    }
    target.v4.send_to(b"inbound over IPv4", ra4).await.unwrap();
    target.v6.send_to(b"inbound over IPv6", ra6).await.unwrap();

    if allowed {
        let mut got = target.received(WAIT, sent.len()).await;
        got.sort();
        sent.sort();
        assert_eq!(got, sent, "the control delivers every path");
        assert_eq!(
            relayed_data(&mut a4, WAIT).await.as_deref(),
            Some(&b"inbound over IPv4"[..])
        );
        assert_eq!(
            relayed_data(&mut a6, WAIT).await.as_deref(),
            Some(&b"inbound over IPv6"[..])
        );
    } else {
        let got = target.received(QUIET, usize::MAX).await;
        assert!(
            got.is_empty(),
            "leaked to the local service: {:?}",
            lossy(&got)
        );
        assert_eq!(
            relayed_data(&mut a4, QUIET).await,
            None,
            "inbound IPv4 relayed"
        );
        assert_eq!(
            relayed_data(&mut a6, QUIET).await,
            None,
            "inbound IPv6 relayed"
        );
        // 8 requests refused with 403; the Send indications to 127.0.0.1 and ::1 (for
        // which A holds permissions) and both inbound datagrams stopped by the policy. (The
        // other datagrams had no permission or channel to begin with.)
        let denied = counter(server, |s| s.policy_denied, 12).await;
        assert_eq!(denied, 12, "policy denials counted");
    }
    // Either way the relays still reach each other.
    a4.send_indication(rb4, b"a4 to b4").await.unwrap();
    assert_eq!(
        relayed_data(&mut b4, WAIT).await.as_deref(),
        Some(&b"a4 to b4"[..])
    );
    a6.send_indication(rb6, b"a6 to b6").await.unwrap();
    assert_eq!(
        relayed_data(&mut b6, WAIT).await.as_deref(),
        Some(&b"a6 to b6"[..])
    );
}

fn lossy(datagrams: &[Vec<u8>]) -> Vec<String> {
    datagrams
        .iter()
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .collect()
}

/// RFC 8656 section 10.2: CreatePermission is all or nothing. A denied address among
/// allowed ones voids the request: the allowed peer gets no permission either.
#[tokio::test]
async fn a_denied_peer_hidden_among_allowed_ones_voids_the_whole_create_permission() {
    let server = denying_server("").await;
    let target = Target::new().await;
    let (mut a, ra) = relay_v4(&server, "alice").await;
    let (mut b, rb) = relay_v4(&server, "bob").await;
    b.create_permission(&[ra]).await.unwrap();
    assert_eq!(
        code(a.create_permission(&[rb, target.at("127.0.0.1")]).await),
        403
    );
    b.send_indication(ra, b"needs a permission").await.unwrap();
    assert_eq!(
        relayed_data(&mut a, QUIET).await,
        None,
        "rb was installed anyway"
    );
    a.create_permission(&[rb]).await.unwrap();
    b.send_indication(ra, b"now permitted").await.unwrap();
    assert_eq!(
        relayed_data(&mut a, WAIT).await.as_deref(),
        Some(&b"now permitted"[..])
    );
}

// ---------------------------------------------------------------------------------
// The server's own addresses.

/// The server's own listener (UDP and TCP) is not a peer, in any spelling, while two
/// clients reach each other's relayed addresses; a relayed address is reachable only
/// while its allocation lives.
#[tokio::test]
async fn the_servers_own_listeners_are_refused_while_live_relays_reach_each_other() {
    let server = denying_server("").await;
    let own = [server.handle.udp_addrs()[0], server.handle.tcp_addrs()[0]];
    let (mut a, ra) = relay_v4(&server, "alice").await;
    let (mut b, rb) = relay_v4(&server, "bob").await;
    let (mut c6, _) = relay_v6(&server, "carol").await;
    for listener in own {
        assert_eq!(
            code(a.create_permission(&[listener]).await),
            403,
            "{listener}"
        );
        assert_eq!(
            code(a.channel_bind(0x4000, listener).await),
            403,
            "{listener}"
        );
        let mapped = SocketAddr::new(ip("::ffff:127.0.0.1"), listener.port());
        assert_eq!(code(c6.create_permission(&[mapped]).await), 403, "{mapped}");
    }
    a.channel_bind(0x4000, rb).await.unwrap();
    b.create_permission(&[ra]).await.unwrap();
    a.send_channel_data(0x4000, b"a to b").await.unwrap();
    assert_eq!(
        b.recv_relayed(WAIT).await.unwrap(),
        Some(Relayed::Indication {
            peer: ra,
            data: b"a to b".to_vec()
        })
    );
    b.send_indication(ra, b"b to a").await.unwrap();
    assert_eq!(
        a.recv_relayed(WAIT).await.unwrap(),
        Some(Relayed::Channel {
            channel: 0x4000,
            data: b"b to a".to_vec()
        })
    );
    assert_eq!(b.refresh(0).await.unwrap(), 0);
    assert_eq!(
        code(a.create_permission(&[rb]).await),
        403,
        "a dead relayed address"
    );
    assert_eq!(
        code(a.channel_bind(0x4000, rb).await),
        403,
        "a dead relayed address"
    );
}

/// policy.rs: on the server's own addresses only live relayed addresses are reachable,
/// even where the deny list says nothing. With `external-ip` 203.0.113.10 (not a denied
/// range) for the relay on 127.0.0.1, a local service at 127.0.0.1:P is 203.0.113.10:P to
/// a client: refused on every path, while relayed addresses reach each other. Allowing
/// 203.0.113.10 explicitly (the control) opens every path.
#[tokio::test]
async fn the_servers_public_address_reaches_only_live_relayed_addresses() {
    let target = Target::new().await;
    let external = "external-ip = [\"203.0.113.10/127.0.0.1\"]";
    let denied = denying_server(external).await;
    attack_own_public_address(&denied, &target, false).await;
    let control = allowing_server(&["203.0.113.10"], external).await;
    attack_own_public_address(&control, &target, true).await;
}

async fn attack_own_public_address(server: &TestServer, target: &Target, allowed: bool) {
    let public = ip("203.0.113.10");
    let (mut a, ra) = relay_v4(server, "alice").await;
    let (mut b, rb) = relay_v4(server, "bob").await;
    assert_eq!((ra.ip(), rb.ip()), (public, public));
    a.create_permission(&[rb]).await.unwrap();
    b.create_permission(&[ra]).await.unwrap();
    b.send_indication(ra, b"b to a").await.unwrap();
    assert_eq!(
        a.recv_relayed(WAIT).await.unwrap(),
        Some(Relayed::Indication {
            peer: rb,
            data: b"b to a".to_vec()
        })
    );
    let service = SocketAddr::new(public, target.port);
    let listener = SocketAddr::new(public, server.addr.port());
    for peer in [service, listener] {
        let r = a.create_permission(&[peer]).await;
        if allowed {
            r.expect("control: CreatePermission");
        } else {
            assert_eq!(code(r), 403, "CreatePermission {peer}");
        }
    }
    let bind = a.channel_bind(0x4000, service).await;
    if allowed {
        bind.expect("control: ChannelBind");
    } else {
        assert_eq!(code(bind), 403);
    }
    a.send_indication(service, b"Send indication")
        .await
        .unwrap();
    a.send_channel_data(0x4000, b"ChannelData").await.unwrap();
    // The relay socket itself is bound to 127.0.0.1:<relayed port>.
    let relay_local = SocketAddr::new(LOCALHOST, ra.port());
    target.v4.send_to(b"inbound", relay_local).await.unwrap();
    if allowed {
        let mut got = target.received(WAIT, 2).await;
        got.sort();
        assert_eq!(
            got,
            vec![b"ChannelData".to_vec(), b"Send indication".to_vec()]
        );
        assert_eq!(
            relayed_data(&mut a, WAIT).await.as_deref(),
            Some(&b"inbound"[..])
        );
    } else {
        let got = target.received(QUIET, usize::MAX).await;
        assert!(
            got.is_empty(),
            "leaked to the local service: {:?}",
            lossy(&got)
        );
        assert_eq!(relayed_data(&mut a, QUIET).await, None, "inbound relayed");
        // 3 requests refused with 403, the Send indication (A holds a permission for
        // 203.0.113.10) and the inbound datagram stopped by the policy.
        let denied = counter(server, |s| s.policy_denied, 5).await;
        assert_eq!(denied, 5, "policy denials counted");
    }
}

/// A relayed address outlives its allocation in clients' channels and permissions. When
/// the allocation ends and a local service binds the freed port, the channel, the
/// permission and inbound traffic of that address all stop at the per-datagram check.
/// On the control server (127.0.0.1 allowed) the same three reach the service.
#[tokio::test]
async fn a_dead_relayed_address_taken_over_by_a_local_service_is_unreachable() {
    let denied = denying_server("").await;
    take_over_dead_relayed_address(&denied, false).await;
    let control = allowing_server(&["127.0.0.1"], "").await;
    take_over_dead_relayed_address(&control, true).await;
}

async fn take_over_dead_relayed_address(server: &TestServer, allowed: bool) {
    let (mut a, ra) = relay_v4(server, "alice").await;
    let (mut b, rb) = relay_v4(server, "bob").await;
    a.channel_bind(0x4000, rb).await.unwrap();
    b.create_permission(&[ra]).await.unwrap();
    a.send_channel_data(0x4000, b"while alive").await.unwrap();
    assert_eq!(
        relayed_data(&mut b, WAIT).await.as_deref(),
        Some(&b"while alive"[..])
    );
    assert_eq!(b.refresh(0).await.unwrap(), 0);
    drop(b);
    // The relay socket closes with the allocation; take its port (bounded retries).
    let deadline = Instant::now() + WAIT;
    let service = loop {
        match UdpSocket::bind(rb).await {
            Ok(s) => break s,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "relay port {rb} never freed: {e}"
                );
                sleep(Duration::from_millis(20)).await;
            }
        }
    };
    a.send_channel_data(0x4000, b"ChannelData after death")
        .await
        .unwrap();
    a.send_indication(rb, b"Send indication after death")
        .await
        .unwrap();
    service.send_to(b"inbound after death", ra).await.unwrap();
    if allowed {
        let mut got: Vec<Vec<u8>> = drain(&service, WAIT, 2)
            .await
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                b"ChannelData after death".to_vec(),
                b"Send indication after death".to_vec()
            ]
        );
        assert_eq!(
            relayed_data(&mut a, WAIT).await.as_deref(),
            Some(&b"inbound after death"[..])
        );
    } else {
        let got = drain(&service, QUIET, usize::MAX).await;
        assert!(
            got.is_empty(),
            "reached the service on the dead relayed address: {got:?}"
        );
        assert_eq!(
            relayed_data(&mut a, QUIET).await,
            None,
            "inbound from the dead address"
        );
        // All three stopped by the per-datagram policy check.
        let denied = counter(server, |s| s.policy_denied, 3).await;
        assert_eq!(denied, 3, "policy denials counted");
    }
}

// ---------------------------------------------------------------------------------
// MESSAGE-INTEGRITY, credentials and nonces.

/// RFC 8489 section 14.5: attributes after MESSAGE-INTEGRITY are ignored (FINGERPRINT
/// aside). Appended by someone on the path, they must neither lengthen nor delete the
/// allocation, install a permission, spoil a valid request or be reported as unknown.
#[tokio::test]
async fn attributes_appended_after_message_integrity_are_ignored() {
    let server = allowing_server(&["127.0.0.0/8"], "").await;
    let s = session(&server, "127.0.0.1", "alice").await;
    let key = s.key();
    let exchange = |m: Msg| {
        let bytes = m.fingerprint().bytes();
        let s = &s;
        async move { s.exchange(&bytes).await.expect("response") }
    };
    // REQUESTED-TRANSPORT only after MESSAGE-INTEGRITY: as if absent.
    let r = exchange(s.authed(method::ALLOCATE).integrity(&key).transport(UDP)).await;
    assert_eq!(error_code(&r), Some(400));
    // LIFETIME after it does not lengthen the allocation (default 600 s).
    let r = exchange(
        s.authed(method::ALLOCATE)
            .transport(UDP)
            .integrity(&key)
            .lifetime(3000),
    )
    .await;
    assert!(is_success(&r), "Allocate: {:?}", error_code(&r));
    assert_eq!(lifetime(&r), Some(600));
    let relayed = relayed_of(&r);
    // Refresh with LIFETIME 0 after it does not delete.
    let r = exchange(s.authed(method::REFRESH).integrity(&key).lifetime(0)).await;
    assert_eq!(lifetime(&r), Some(600), "Refresh: {:?}", error_code(&r));
    // XOR-PEER-ADDRESS after it installs nothing.
    let outsider = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let outsider_addr = outsider.local_addr().unwrap();
    let r = exchange(
        s.authed(method::CREATE_PERMISSION)
            .integrity(&key)
            .peer(outsider_addr),
    )
    .await;
    assert_eq!(error_code(&r), Some(400));
    // A denied peer after it does not spoil the covered one.
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let r = exchange(
        s.authed(method::CREATE_PERMISSION)
            .peer(peer.local_addr().unwrap())
            .integrity(&key)
            .peer(addr("10.0.0.1:1")),
    )
    .await;
    assert!(is_success(&r), "CreatePermission: {:?}", error_code(&r));
    outsider
        .send_to(b"from the outsider", relayed)
        .await
        .unwrap();
    peer.send_to(b"from the peer", relayed).await.unwrap();
    let got = s.recv(WAIT).await.expect("the permitted peer's datagram");
    assert_eq!(
        parse_relayed(&got).map(data_of).as_deref(),
        Some(&b"from the peer"[..])
    );
    assert_eq!(s.recv(QUIET).await, None, "the outsider got a permission");
    // An unknown comprehension-required attribute, a second MESSAGE-INTEGRITY and an
    // oversize NONCE after it change nothing.
    let r = exchange(
        s.authed(method::REFRESH)
            .lifetime(700)
            .integrity(&key)
            .attr(UNKNOWN_ATTR, b"x")
            .attr(attr::MESSAGE_INTEGRITY, &[0; 20])
            .attr(attr::NONCE, &[b'n'; 800]),
    )
    .await;
    assert_eq!(lifetime(&r), Some(700), "Refresh: {:?}", error_code(&r));
    // CHANNEL-NUMBER or USERNAME only after it: missing, 400.
    let r = exchange(
        s.authed(method::CHANNEL_BIND)
            .peer(peer.local_addr().unwrap())
            .integrity(&key)
            .channel(0x4000),
    )
    .await;
    assert_eq!(error_code(&r), Some(400));
    let r = exchange(
        Msg::request(method::REFRESH)
            .realm(&s.realm)
            .nonce(&s.nonce)
            .integrity(&key)
            .username(&s.username),
    )
    .await;
    assert_eq!(error_code(&r), Some(400));
}

/// RFC 8656 section 5: only the user who created an allocation may use it. On alice's
/// 5-tuple, eve's Allocate gets 437 (section 7.2; ARCHITECTURE.md) and her Refresh,
/// CreatePermission and ChannelBind 441, also when she replays the transaction id of
/// alice's last request (the retransmission cache answers only alice). Nothing changes.
#[tokio::test]
async fn another_user_on_an_existing_five_tuple_gets_437_or_441_and_changes_nothing() {
    let server = allowing_server(&["127.0.0.0/8"], "").await;
    let mut s = session(&server, "127.0.0.1", "alice").await;
    let r = s.request(method::ALLOCATE, |m| m.transport(UDP)).await;
    assert!(is_success(&r));
    let relayed = relayed_of(&r);
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let outsider = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let r = s
        .request(method::CREATE_PERMISSION, |m| m.peer(peer_addr))
        .await;
    assert!(is_success(&r));
    let alice_refresh = s
        .authed(method::REFRESH)
        .lifetime(900)
        .integrity(&s.key())
        .fingerprint();
    let alice_txn = alice_refresh.txn();
    let r = s.exchange(&alice_refresh.bytes()).await.unwrap();
    assert_eq!(lifetime(&r), Some(900));
    let alice = (s.username.clone(), s.password.clone());

    let (u, p) = rest_credentials(SECRET, "eve", Duration::from_secs(600));
    (s.username, s.password) = (u, p);
    let r = s.request(method::ALLOCATE, |m| m.transport(UDP)).await;
    assert_eq!(error_code(&r), Some(437), "Allocate");
    let r = s.request(method::REFRESH, |m| m.lifetime(0)).await;
    assert_eq!(error_code(&r), Some(441), "Refresh");
    let r = s
        .request(method::CREATE_PERMISSION, |m| {
            m.peer(outsider.local_addr().unwrap())
        })
        .await;
    assert_eq!(error_code(&r), Some(441), "CreatePermission");
    let r = s
        .request(method::CHANNEL_BIND, |m| m.channel(0x4001).peer(peer_addr))
        .await;
    assert_eq!(error_code(&r), Some(441), "ChannelBind");
    let replay = Msg::new(method::REFRESH, Class::Request, alice_txn)
        .username(&s.username)
        .realm(&s.realm)
        .nonce(&s.nonce)
        .lifetime(900)
        .integrity(&s.key())
        .fingerprint();
    let r = s.exchange(&replay.bytes()).await.unwrap();
    assert_eq!(error_code(&r), Some(441), "replayed transaction id");

    (s.username, s.password) = alice;
    // The allocation lives (eve's Refresh 0 deleted nothing), the outsider has no
    // permission, and channel 0x4001 is free for another peer.
    outsider
        .send_to(b"from the outsider", relayed)
        .await
        .unwrap();
    peer.send_to(b"from the peer", relayed).await.unwrap();
    let got = s.recv(WAIT).await.expect("the permitted peer's datagram");
    assert_eq!(
        parse_relayed(&got).map(data_of).as_deref(),
        Some(&b"from the peer"[..])
    );
    assert_eq!(s.recv(QUIET).await, None, "eve's permission was installed");
    let r = s
        .request(method::CHANNEL_BIND, |m| {
            m.channel(0x4001).peer(outsider.local_addr().unwrap())
        })
        .await;
    assert!(
        is_success(&r),
        "channel 0x4001 was bound by eve: {:?}",
        error_code(&r)
    );
    let r = s.request(method::REFRESH, |m| m.lifetime(600)).await;
    assert_eq!(lifetime(&r), Some(600));
}

/// RFC 8489 section 9.2.4: a nonce past its lifetime gets 438 with a fresh NONCE (and
/// REALM, no MESSAGE-INTEGRITY), and the fresh one works.
#[tokio::test]
async fn a_stale_nonce_gets_438_and_a_fresh_one() {
    let server = denying_server("stale-nonce = 1").await;
    let mut s = session(&server, "127.0.0.1", "alice").await;
    let r = s.request(method::ALLOCATE, |m| m.transport(UDP)).await;
    assert!(is_success(&r));
    let old = s.nonce.clone();
    // 1 s lifetime on a whole-second clock: stale within ~2 s, 4 s at most.
    sleep(Duration::from_millis(1500)).await;
    let deadline = Instant::now() + Duration::from_secs(4);
    let stale = loop {
        let r = s.request(method::REFRESH, |m| m.lifetime(600)).await;
        match error_code(&r) {
            Some(438) => break r,
            None => {}
            other => panic!("Refresh with an aging nonce: {other:?}"),
        }
        assert!(Instant::now() < deadline, "the nonce never went stale");
        sleep(Duration::from_millis(200)).await;
    };
    assert_challenge(&stale);
    s.take_nonce(&stale);
    assert_ne!(s.nonce, old);
    let r = s.request(method::REFRESH, |m| m.lifetime(600)).await;
    assert_eq!(
        lifetime(&r),
        Some(600),
        "with the fresh nonce: {:?}",
        error_code(&r)
    );
}

/// A 438 or 401 challenge: REALM and NONCE, no MESSAGE-INTEGRITY (RFC 8489 9.2.4).
fn assert_challenge(r: &[u8]) {
    assert!(
        attribute(r, attr::REALM).is_some(),
        "challenge without REALM"
    );
    assert!(
        attribute(r, attr::NONCE).is_some(),
        "challenge without NONCE"
    );
    assert!(
        attribute(r, attr::MESSAGE_INTEGRITY).is_none(),
        "challenge with MI"
    );
}

/// Nonces are a MAC the server checks, not a value it stores: made-up nonces, a real one
/// with its expiry pushed out, another server's, empty and oversize ones all get 438 (RFC
/// 8489 section 9.2.4: a NONCE that is not valid is answered with 438 before the
/// credentials are looked at), even with the right password.
#[tokio::test]
async fn forged_nonces_get_438() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    let server = denying_server("").await;
    let other = denying_server("").await;
    let mut s = session(&server, "127.0.0.1", "alice").await;
    let foreign = session(&other, "127.0.0.1", "alice").await.nonce;
    let real = s.nonce.clone();
    let mut raw = URL_SAFE_NO_PAD.decode(&real).expect("nonce is base64url");
    raw[..4].copy_from_slice(&u32::MAX.to_be_bytes());
    let extended = URL_SAFE_NO_PAD.encode(&raw);
    let forged = [
        "AAAAAAAAAAAAAAAA".to_owned(),
        extended,
        foreign,
        String::new(),
        "!".repeat(16),
        format!("{real}A"),
        real[..15].to_owned(),
        "n".repeat(700),
    ];
    for nonce in forged {
        s.nonce = nonce.clone();
        let r = s.request(method::ALLOCATE, |m| m.transport(UDP)).await;
        assert_eq!(error_code(&r), Some(438), "nonce {nonce:?}");
        assert_challenge(&r);
    }
    s.nonce = real;
    let r = s.request(method::ALLOCATE, |m| m.transport(UDP)).await;
    assert!(is_success(&r), "the real nonce: {:?}", error_code(&r));
}

/// Nonces are bound to the client's IP: one issued to 127.0.0.1 gets 438 from 127.0.0.2
/// even with valid credentials. (Another port of the same IP is accepted: nonces are
/// bound to the address, not the port, as ARCHITECTURE.md lists.)
#[tokio::test]
async fn a_nonce_issued_to_another_address_is_refused() {
    let server = denying_server("").await;
    let a = session(&server, "127.0.0.1", "alice").await;
    let (u, p) = rest_credentials(SECRET, "mallory", Duration::from_secs(600));
    let mut m = Session::bind(ip("127.0.0.2"), server.addr, &u, &p).await;
    (m.realm, m.nonce) = (a.realm.clone(), a.nonce.clone());
    let r = m.request(method::ALLOCATE, |m| m.transport(UDP)).await;
    assert_eq!(error_code(&r), Some(438));
    assert_challenge(&r);
    m.take_nonce(&r);
    assert_ne!(m.nonce, a.nonce);
    let r = m.request(method::ALLOCATE, |m| m.transport(UDP)).await;
    assert!(is_success(&r), "with its own nonce: {:?}", error_code(&r));

    let mut same_ip = Session::bind(LOCALHOST, server.addr, &u, &p).await;
    (same_ip.realm, same_ip.nonce) = (a.realm.clone(), a.nonce.clone());
    let r = same_ip
        .request(method::ALLOCATE, |m| m.transport(UDP))
        .await;
    assert!(is_success(&r), "same IP, other port: {:?}", error_code(&r));
}

/// Username enumeration: an unknown user, a wrong password (static and REST user), a
/// wrong realm, a REST username that is expired, not a number, overflowing, or signed
/// with another secret, and no credentials at all: every 401 is the same bytes (same
/// transaction id on purpose; only the NONCE value may differ, when a second passes).
#[tokio::test]
async fn unknown_user_and_wrong_password_get_byte_identical_401s() {
    let server = start_server("user = [\"bob:hunter2\"]").await;
    let s = session(&server, "127.0.0.1", "probe").await;
    let now = unix_now();
    let rest = |name: &str| {
        let password = ferroturn::credentials::rest_password(SECRET.as_bytes(), name);
        (name.to_owned(), password, REALM.to_owned())
    };
    let (alice, alice_pw) = rest_credentials(SECRET, "alice", Duration::from_secs(600));
    let cases = [
        ("mallory".to_owned(), "pw".to_owned(), REALM.to_owned()),
        ("bob".to_owned(), "wrong".to_owned(), REALM.to_owned()),
        (
            "bob".to_owned(),
            "hunter2".to_owned(),
            "other.realm".to_owned(),
        ),
        (alice.clone(), format!("{alice_pw}x"), REALM.to_owned()),
        rest(&format!("{}:alice", now - 10)),
        rest("abc:alice"),
        rest("99999999999999999999999:alice"),
        (
            alice.clone(),
            ferroturn::credentials::rest_password(b"other-secret", &alice),
            REALM.to_owned(),
        ),
    ];
    let txn = [0x5A; 12];
    let unauthenticated = Msg::new(method::ALLOCATE, Class::Request, txn).transport(UDP);
    let reference = s.exchange(&unauthenticated.bytes()).await.expect("401");
    assert_eq!(error_code(&reference), Some(401));
    // No SOFTWARE, no reason phrase: header, ERROR-CODE, REALM, a 16-byte NONCE.
    assert_eq!(
        reference.len(),
        HEADER_LEN + 8 + 4 + REALM.len().next_multiple_of(4) + 20
    );
    for (username, password, realm) in cases {
        let key =
            ferroturn_core::proto::integrity::long_term_key(&username, &realm, password.as_bytes());
        let msg = Msg::new(method::ALLOCATE, Class::Request, txn)
            .username(&username)
            .realm(&realm)
            .nonce(&s.nonce)
            .transport(UDP)
            .integrity(&key);
        let r = s.exchange(&msg.bytes()).await.expect("401");
        assert_eq!(
            without_nonce(&r),
            without_nonce(&reference),
            "401 for {username:?}/{password:?}/{realm:?} differs"
        );
    }
}

/// `msg` with the NONCE value zeroed.
fn without_nonce(msg: &[u8]) -> Vec<u8> {
    let mut out = msg.to_vec();
    for (t, at, len) in attributes(msg) {
        if t == attr::NONCE {
            out[at..at + len].fill(0);
        }
    }
    out
}

/// TURN REST usernames whose timestamp is expired, not a decimal number, signed,
/// overflowing 64 bits, or further ahead than `max-credential-ttl` are refused, each
/// with a correct password for that username.
#[tokio::test]
async fn malformed_and_far_future_rest_timestamps_are_refused() {
    let server = start_server("max-credential-ttl = 86400").await;
    let now = unix_now();
    let usernames = [
        format!("{}:alice", now - 1),
        "abc:alice".to_owned(),
        "-5:alice".to_owned(),
        "+999999999999:alice".to_owned(),
        format!(" {}:alice", now + 600),
        "1e12:alice".to_owned(),
        "99999999999999999999999:alice".to_owned(),
        format!("{}:alice", u64::MAX),
        format!("{}:alice", now + 2 * 86400),
        ":alice".to_owned(),
    ];
    for username in usernames {
        let password = ferroturn::credentials::rest_password(SECRET.as_bytes(), &username);
        let mut c = TurnClient::new(server.addr, &username, &password)
            .await
            .unwrap();
        assert_eq!(code(c.allocate().await), 401, "{username:?}");
    }
    let username = format!("{}:alice", now + 3600);
    let password = ferroturn::credentials::rest_password(SECRET.as_bytes(), &username);
    let mut c = TurnClient::new(server.addr, &username, &password)
        .await
        .unwrap();
    c.allocate().await.expect("a valid REST username");
}

// ---------------------------------------------------------------------------------
// Quotas and caps.

/// `user-quota`: a user's allocations beyond the quota get 486 (RFC 8656 section 7.2);
/// other users are unaffected and a deleted allocation frees its slot.
#[tokio::test]
async fn user_quota_stops_one_user_hoarding_allocations() {
    let server = denying_server("user-quota = 2").await;
    let (mut first, _) = relay_v4(&server, "alice").await;
    let _second = relay_v4(&server, "alice").await;
    let mut third = client(&server, "alice").await;
    assert_eq!(code(third.allocate().await), 486);
    let _bob = relay_v4(&server, "bob").await;
    first.refresh(0).await.unwrap();
    third.allocate().await.expect("a slot was freed");
}

/// `total-quota`: allocations beyond it get 508, whoever asks.
#[tokio::test]
async fn total_quota_caps_the_whole_server() {
    let server = denying_server("total-quota = 2").await;
    let (mut alice, _) = relay_v4(&server, "alice").await;
    let _bob = relay_v4(&server, "bob").await;
    let mut carol = client(&server, "carol").await;
    assert_eq!(code(carol.allocate().await), 508);
    alice.refresh(0).await.unwrap();
    carol.allocate().await.expect("a slot was freed");
}

/// `max-permissions`: a fourth peer IP gets 508, by CreatePermission or ChannelBind;
/// refreshing an existing permission still works. (198.51.100.0/24 is documentation
/// space: permissions only, no datagram is sent there.)
#[tokio::test]
async fn max_permissions_caps_peers_per_allocation() {
    let server = denying_server("max-permissions = 3\nnew-peer-rate = 0").await;
    let (mut c, _) = relay_v4(&server, "alice").await;
    let peers: Vec<SocketAddr> = (1..=4)
        .map(|i| addr(&format!("198.51.100.{i}:9")))
        .collect();
    c.create_permission(&peers[..3]).await.unwrap();
    assert_eq!(code(c.create_permission(&peers[3..]).await), 508);
    assert_eq!(code(c.channel_bind(0x4000, peers[3]).await), 508);
    c.create_permission(&peers[..1])
        .await
        .expect("refresh an existing permission");
    c.channel_bind(0x4000, peers[0])
        .await
        .expect("channel to a permitted IP");
}

/// `max-channels`: a third channel gets 508; re-binding an existing one works.
#[tokio::test]
async fn max_channels_caps_channels_per_allocation() {
    let server = denying_server("max-channels = 2\nnew-peer-rate = 0").await;
    let (mut c, _) = relay_v4(&server, "alice").await;
    c.channel_bind(0x4000, addr("198.51.100.1:1"))
        .await
        .unwrap();
    c.channel_bind(0x4001, addr("198.51.100.1:2"))
        .await
        .unwrap();
    assert_eq!(
        code(c.channel_bind(0x4002, addr("198.51.100.1:3")).await),
        508
    );
    c.channel_bind(0x4000, addr("198.51.100.1:1"))
        .await
        .expect("refresh a channel");
}

/// `new-peer-rate` (1/s, bursts of 2): sweeping a network through the relay is slowed to
/// the rate; a request over it gets 508 and installs nothing (all or nothing), known
/// peers stay free, and the budget refills.
#[tokio::test]
async fn new_peer_rate_slows_a_network_sweep() {
    let server = denying_server("new-peer-rate = 1").await;
    let (mut c, _) = relay_v4(&server, "alice").await;
    let peer = |i: u32| addr(&format!("198.51.100.{i}:9"));
    for i in 1..=2 {
        c.create_permission(&[peer(i)])
            .await
            .expect("within the burst");
    }
    assert_eq!(code(c.create_permission(&[peer(3)]).await), 508);
    assert_eq!(code(c.channel_bind(0x4000, peer(3)).await), 508);
    c.create_permission(&[peer(1)])
        .await
        .expect("a known peer is not new");
    sleep(Duration::from_millis(1200)).await;
    // One token back (1.2 s at 1/s), not two.
    assert_eq!(code(c.create_permission(&[peer(3), peer(4)]).await), 508);
    c.create_permission(&[peer(3)]).await.expect("refilled");
    assert_eq!(code(c.create_permission(&[peer(4)]).await), 508);
}

/// `max-bps` (20 000 bytes/s per allocation and direction, one second of burst): a client
/// blasting 100 KB at a peer, and a peer blasting 100 KB at a client, get about the
/// burst plus the rate through; the rest is dropped.
#[tokio::test]
async fn max_bps_drops_what_exceeds_the_bandwidth_cap() {
    const RATE: f64 = 20_000.0;
    const SIZE: usize = 1000;
    const COUNT: usize = 100;
    let server = allowing_server(&["127.0.0.1"], "max-bps = 20000").await;
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let (mut c, relayed) = relay_v4(&server, "alice").await;
    c.channel_bind(0x4000, peer_addr).await.unwrap();
    let start = Instant::now();
    for _ in 0..COUNT {
        c.send_channel_data(0x4000, &[0xAB; SIZE]).await.unwrap();
    }
    let up = drain(&peer, Duration::from_millis(500), COUNT).await.len();
    let allowed = ((RATE + RATE * start.elapsed().as_secs_f64()) / SIZE as f64).ceil() as usize;
    assert!(
        (RATE as usize / SIZE / 2..=allowed).contains(&up),
        "client to peer: {up} of {COUNT} datagrams through, at most {allowed} allowed"
    );
    // Every datagram that did not arrive was dropped by the cap, and counted.
    let dropped_up = counter(&server, |s| s.bandwidth_dropped, (COUNT - up) as u64).await;
    assert_eq!(dropped_up, (COUNT - up) as u64, "bandwidth drops counted");

    let start = Instant::now();
    for _ in 0..COUNT {
        peer.send_to(&[0xCD; SIZE], relayed).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_millis(500);
    let mut down = 0;
    while let Some(d) =
        relayed_data(&mut c, deadline.saturating_duration_since(Instant::now())).await
    {
        assert_eq!(d.len(), SIZE);
        down += 1;
    }
    let allowed = ((RATE + RATE * start.elapsed().as_secs_f64()) / SIZE as f64).ceil() as usize;
    assert!(
        (RATE as usize / SIZE / 2..=allowed).contains(&down),
        "peer to client: {down} of {COUNT} datagrams through, at most {allowed} allowed"
    );
    let expected = dropped_up + (COUNT - down) as u64;
    let dropped_down = counter(&server, |s| s.bandwidth_dropped, expected).await - dropped_up;
    assert!(
        dropped_down > 0 && dropped_down as usize + down <= COUNT,
        "peer to client: {dropped_down} drops counted, {down} relayed, {COUNT} sent"
    );
}

/// A relay range of one port: the second allocation gets 508, the server keeps serving,
/// and the port is reusable once freed. EVEN-PORT on an odd-only range is 508 too, and a
/// RESERVATION-TOKEN (none is ever issued) is 508, not a crash.
#[tokio::test]
async fn relay_port_exhaustion_is_508_never_a_crash() {
    // A port that is free now (another process could take it: then try another).
    let mut attempts = 0;
    let (server, port, mut first) = loop {
        attempts += 1;
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port() | 1;
        drop(probe);
        let server = denying_server(&format!("min-port = {port}\nmax-port = {port}")).await;
        let mut first = client(&server, "alice").await;
        match first.allocate().await {
            Ok(relayed) => {
                assert_eq!(relayed.port(), port);
                break (server, port, first);
            }
            Err(e) => assert!(attempts < 5, "no free relay port to start with: {e}"),
        }
    };
    let mut second = client(&server, "bob").await;
    assert_eq!(code(second.allocate().await), 508);
    assert_eq!(
        second.binding().await.unwrap(),
        second.local_addr().unwrap()
    );
    let mut even = client(&server, "carol").await;
    let r = even
        .allocate_with(&[
            RequestAttr::RequestedTransport(UDP),
            RequestAttr::EvenPort(false),
        ])
        .await;
    assert_eq!(code(r), 508, "an even port from the range {port}-{port}");
    let s = session(&server, "127.0.0.1", "dave").await;
    let r = s
        .request(method::ALLOCATE, |m| {
            m.transport(UDP).attr(attr::RESERVATION_TOKEN, &[1; 8])
        })
        .await;
    assert_eq!(error_code(&r), Some(508));
    first.refresh(0).await.unwrap();
    assert_eq!(
        second.allocate().await.unwrap().port(),
        port,
        "the port was freed"
    );
}

/// Relay ports are drawn at random from the range, so a relayed address does not tell
/// the next one.
#[tokio::test]
async fn relay_ports_cannot_be_predicted_from_earlier_ones() {
    let server = denying_server("").await;
    let mut ports = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (c, relayed) = relay_v4(&server, "alice").await;
        ports.push(i32::from(relayed.port()));
        clients.push(c);
    }
    let steps: Vec<i32> = ports.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        steps.windows(2).any(|w| w[0] != w[1]),
        "relay ports advance by a fixed step: {ports:?}"
    );
}

// ---------------------------------------------------------------------------------
// ChannelData length lie.

/// CVE-2020-4067 style: a ChannelData whose length field claims more bytes than the
/// datagram holds must not relay the rest of a receive buffer. After a large datagram
/// has filled the server's buffer, lies are dropped whole, bytes past the length (UDP
/// padding) are not relayed, and valid ChannelData still is.
#[tokio::test]
async fn channel_data_length_lie_relays_nothing_beyond_the_datagram() {
    let server = start_server("").await;
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut c = client(&server, "alice").await;
    c.allocate().await.unwrap();
    c.channel_bind(0x4000, peer.local_addr().unwrap())
        .await
        .unwrap();
    c.send_channel_data(0x4000, &[0xEE; 1200]).await.unwrap();
    let (d, _) = recv_from(&peer, WAIT).await.expect("the large datagram");
    assert_eq!(d, vec![0xEE; 1200]);
    let lies: [&[u8]; 5] = [
        &[0x40, 0x00, 0x04, 0xB0, 1, 2, 3, 4],
        &[0x40, 0x00, 0xFF, 0xFF],
        &[0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4],
        &[0x40, 0x00, 0x00, 0x01],
        &[0x40, 0x00, 0x00],
    ];
    for lie in lies {
        c.send_raw(lie).await.unwrap();
    }
    c.send_raw(&[
        0x40, 0x00, 0x00, 0x03, b'a', b'b', b'c', 0xEE, 0xEE, 0xEE, 0xEE, 0xEE,
    ])
    .await
    .unwrap();
    c.send_channel_data(0x4000, b"valid").await.unwrap();
    let got: Vec<Vec<u8>> = drain(&peer, WAIT, 2)
        .await
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    assert_eq!(got, vec![b"abc".to_vec(), b"valid".to_vec()]);
    let extra = drain(&peer, QUIET, usize::MAX).await;
    assert!(extra.is_empty(), "relayed more: {extra:?}");
}

// ---------------------------------------------------------------------------------
// Malformed input.

/// An allocated raw session on the base server (127.0.0.1 allowed as a peer).
async fn allocated_session(server: &TestServer) -> (Session, SocketAddr) {
    let s = session(server, "127.0.0.1", "alice").await;
    let r = s.request(method::ALLOCATE, |m| m.transport(UDP)).await;
    assert!(is_success(&r), "Allocate: {:?}", error_code(&r));
    let relayed = relayed_of(&r);
    (s, relayed)
}

/// Sends `bad`, then a Binding request; returns what came back before the Binding
/// response (the server answers one 5-tuple in order) after checking that the Binding
/// and a credentialed Refresh are still served.
async fn probe(s: &Session, bad: &[u8]) -> Vec<Vec<u8>> {
    s.send(bad).await;
    let binding = Msg::request(method::BINDING).bytes();
    s.send(&binding).await;
    let mut before = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let d = s
            .recv(deadline.saturating_duration_since(Instant::now()))
            .await
            .expect("the Binding after a malformed message is answered");
        if d.get(8..HEADER_LEN) == binding.get(8..HEADER_LEN) {
            assert!(is_success(&d));
            break;
        }
        before.push(d);
    }
    let r = s.request(method::REFRESH, |m| m.lifetime(600)).await;
    assert_eq!(lifetime(&r), Some(600), "Refresh after a malformed message");
    before
}

/// Truncated headers, length fields past the end of the datagram, attribute lengths
/// overflowing the message, lengths that are not a multiple of 4 and misaligned
/// attributes are dropped without an answer, and the next requests are served.
#[tokio::test]
async fn truncated_overlong_and_misaligned_messages_are_dropped() {
    let server = start_server("").await;
    let (s, _) = allocated_session(&server).await;
    let binding = Msg::request(method::BINDING)
        .attr(attr::SOFTWARE, b"abcd")
        .bytes();
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("empty datagram", vec![]),
        ("one byte", vec![0x00]),
        ("19-byte header", binding[..19].to_vec()),
        ("header without magic cookie", {
            let mut m = binding.clone();
            m[4] ^= 0xFF;
            m
        }),
        ("body length 8 beyond the end", {
            let mut m = binding.clone();
            m[3] += 8;
            m
        }),
        ("body length 65532, 8 bytes sent", {
            let mut m = binding.clone();
            m[2..4].copy_from_slice(&65_532u16.to_be_bytes());
            m
        }),
        (
            "body shorter than the datagram",
            [binding.clone(), vec![0; 4]].concat(),
        ),
        (
            "attribute length 0xFFFF",
            Msg::request(method::BINDING)
                .lying_attr(attr::SOFTWARE, 0xFFFF, b"abcd")
                .bytes(),
        ),
        (
            "attribute length 8 with 4 bytes left",
            Msg::request(method::BINDING)
                .lying_attr(attr::SOFTWARE, 8, b"abcd")
                .bytes(),
        ),
        ("body length 5", {
            let mut m = Msg::request(method::BINDING).bytes();
            m.extend_from_slice(&[0, 0x22, 0, 1, 7]);
            m[3] = 5;
            m
        }),
        (
            "unpadded attribute followed by another",
            Msg::request(method::BINDING)
                .lying_attr(attr::SOFTWARE, 5, b"abcde")
                .lying_attr(0x8023, 3, b"xyz")
                .bytes(),
        ),
        ("credentialed Allocate cut short", {
            let m = s
                .authed(method::ALLOCATE)
                .transport(UDP)
                .integrity(&s.key())
                .bytes();
            m[..m.len() - 10].to_vec()
        }),
        (
            "MESSAGE-INTEGRITY of 19 bytes",
            s.authed(method::REFRESH)
                .attr(attr::MESSAGE_INTEGRITY, &[0; 19])
                .bytes(),
        ),
        ("FINGERPRINT not last", {
            Msg::request(method::BINDING)
                .fingerprint()
                .attr(attr::SOFTWARE, b"x")
                .bytes()
        }),
        ("FINGERPRINT wrong", {
            let mut m = Msg::request(method::BINDING).fingerprint().bytes();
            let n = m.len();
            m[n - 1] ^= 1;
            m
        }),
        ("65 attributes", {
            let mut m = Msg::request(method::BINDING);
            for _ in 0..65 {
                m = m.attr(0x8F00, &[]);
            }
            m.bytes()
        }),
    ];
    for (what, bytes) in bad {
        let answers = probe(&s, &bytes).await;
        assert!(answers.is_empty(), "{what}: answered {answers:?}");
    }
}

/// Zero-length attributes: where a value is required the request gets 400 (or the
/// challenge its empty credential earns: 401 for USERNAME and REALM, 438 for NONCE);
/// zero-length MESSAGE-INTEGRITY or FINGERPRINT make the message malformed (dropped);
/// an empty optional attribute is ignored.
#[tokio::test]
async fn zero_length_attributes_are_refused_or_ignored() {
    let server = start_server("").await;
    let (s, _) = allocated_session(&server).await;
    let key = s.key();
    let credentialed = |method, t: u16| s.authed(method).attr(t, &[]).integrity(&key).bytes();
    let cases: Vec<(&str, Vec<u8>, Option<u16>)> = vec![
        (
            "REQUESTED-TRANSPORT",
            credentialed(method::ALLOCATE, attr::REQUESTED_TRANSPORT),
            Some(400),
        ),
        (
            "LIFETIME",
            credentialed(method::REFRESH, attr::LIFETIME),
            Some(400),
        ),
        (
            "XOR-PEER-ADDRESS",
            credentialed(method::CREATE_PERMISSION, attr::XOR_PEER_ADDRESS),
            Some(400),
        ),
        (
            "CHANNEL-NUMBER",
            credentialed(method::CHANNEL_BIND, attr::CHANNEL_NUMBER),
            Some(400),
        ),
        (
            "REQUESTED-ADDRESS-FAMILY",
            credentialed(method::REFRESH, attr::REQUESTED_ADDRESS_FAMILY),
            Some(400),
        ),
        (
            "USERNAME",
            Msg::request(method::REFRESH)
                .username("")
                .realm(&s.realm)
                .nonce(&s.nonce)
                .integrity(&key)
                .bytes(),
            Some(401),
        ),
        (
            "REALM",
            Msg::request(method::REFRESH)
                .username(&s.username)
                .realm("")
                .nonce(&s.nonce)
                .integrity(&key)
                .bytes(),
            Some(401),
        ),
        (
            "NONCE",
            Msg::request(method::REFRESH)
                .username(&s.username)
                .realm(&s.realm)
                .nonce("")
                .integrity(&key)
                .bytes(),
            Some(438),
        ),
        (
            "MESSAGE-INTEGRITY",
            s.authed(method::REFRESH)
                .attr(attr::MESSAGE_INTEGRITY, &[])
                .bytes(),
            None,
        ),
        (
            "FINGERPRINT",
            Msg::request(method::BINDING)
                .attr(attr::FINGERPRINT, &[])
                .bytes(),
            None,
        ),
    ];
    for (what, bytes, expected) in cases {
        let answers = probe(&s, &bytes).await;
        let codes: Vec<Option<u16>> = answers.iter().map(|a| error_code(a)).collect();
        match expected {
            Some(c) => assert_eq!(codes, vec![Some(c)], "zero-length {what}"),
            None => assert!(codes.is_empty(), "zero-length {what}: answered {codes:?}"),
        }
    }
    // Empty comprehension-optional attributes are ignored.
    let r = s
        .exchange(
            &Msg::request(method::BINDING)
                .attr(attr::SOFTWARE, &[])
                .attr(0x8F00, &[])
                .bytes(),
        )
        .await
        .unwrap();
    assert!(is_success(&r));
    let r = s
        .request(method::REFRESH, |m| {
            m.attr(attr::SOFTWARE, &[]).lifetime(600)
        })
        .await;
    assert_eq!(lifetime(&r), Some(600));
}

/// RFC 8489 section 14: when an attribute repeats, the first one counts: LIFETIME,
/// REQUESTED-TRANSPORT, CHANNEL-NUMBER, XOR-PEER-ADDRESS of a ChannelBind, USERNAME.
#[tokio::test]
async fn duplicate_attributes_are_read_first_wins() {
    let server = allowing_server(&["127.0.0.1"], "").await;
    let target = Target::new().await;
    let allowed = target.at("127.0.0.1");
    let denied = addr("10.0.0.1:9");

    let s = session(&server, "127.0.0.1", "alice").await;
    let r = s
        .request(method::ALLOCATE, |m| {
            m.transport(UDP).lifetime(700).lifetime(1500)
        })
        .await;
    assert_eq!(
        lifetime(&r),
        Some(700),
        "two LIFETIMEs: {:?}",
        error_code(&r)
    );
    let r = s
        .request(method::REFRESH, |m| m.lifetime(800).lifetime(0))
        .await;
    assert_eq!(lifetime(&r), Some(800), "two LIFETIMEs in a Refresh");
    let r = s
        .request(method::CHANNEL_BIND, |m| {
            m.channel(0x4001).channel(0x3000).peer(allowed).peer(denied)
        })
        .await;
    assert!(
        is_success(&r),
        "ChannelBind, allowed peer first: {:?}",
        error_code(&r)
    );
    let r = s
        .request(method::CHANNEL_BIND, |m| {
            m.channel(0x4002).peer(denied).peer(allowed)
        })
        .await;
    assert_eq!(error_code(&r), Some(403), "ChannelBind, denied peer first");

    let t = session(&server, "127.0.0.1", "bob").await;
    let r = t
        .request(method::ALLOCATE, |m| m.transport(UDP).transport(TCP))
        .await;
    assert!(is_success(&r), "UDP then TCP: {:?}", error_code(&r));
    let u = session(&server, "127.0.0.1", "carol").await;
    let r = u
        .request(method::ALLOCATE, |m| m.transport(TCP).transport(UDP))
        .await;
    assert_eq!(error_code(&r), Some(442), "TCP then UDP");

    // Two USERNAMEs: the key is the first one's.
    let msg = |first: &str, second: &str| {
        Msg::request(method::REFRESH)
            .username(first)
            .username(second)
            .realm(&s.realm)
            .nonce(&s.nonce)
            .lifetime(600)
            .integrity(&s.key())
            .fingerprint()
            .bytes()
    };
    let r = s.exchange(&msg(&s.username, "mallory")).await.unwrap();
    assert_eq!(
        lifetime(&r),
        Some(600),
        "own USERNAME first: {:?}",
        error_code(&r)
    );
    let r = s.exchange(&msg("mallory", &s.username)).await.unwrap();
    assert_eq!(error_code(&r), Some(401), "mallory first");
    // Data flows on channel 0x4001, the first number.
    s.send(&ferroturn::client::channel_data(0x4001, b"on 0x4001"))
        .await;
    let (d, _) = recv_from(&target.v4, WAIT)
        .await
        .expect("ChannelData on the first number");
    assert_eq!(d, b"on 0x4001");
}

/// RFC 8489 section 6.3.1: unknown comprehension-required attributes get 420 listing
/// them, after authentication; the list is capped (8 entries) however many are sent, and
/// the request is not carried out. Comprehension-optional ones are ignored. A Send
/// indication with one (DONT-FRAGMENT included: RFC 8656 section 11.2) is dropped.
#[tokio::test]
async fn unknown_comprehension_required_attributes_get_420_with_a_capped_list() {
    let server = start_server("").await;
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let s = session(&server, "127.0.0.1", "alice").await;

    let mut binding = Msg::request(method::BINDING);
    for t in 0x7F00..0x7F14u16 {
        binding = binding.attr(t, &[1]);
    }
    let r = s.exchange(&binding.bytes()).await.unwrap();
    assert_eq!(error_code(&r), Some(420));
    let listed = client_codec::decode_response(&r)
        .unwrap()
        .unknown_attributes;
    assert_eq!(listed, (0x7F00..0x7F08).collect::<Vec<u16>>());
    assert!(
        r.len() <= HEADER_LEN + 8 + 4 + 16,
        "420 of {} bytes",
        r.len()
    );

    // Unauthenticated: the challenge comes first.
    let r = s
        .exchange(
            &Msg::request(method::ALLOCATE)
                .transport(UDP)
                .attr(UNKNOWN_ATTR, &[])
                .bytes(),
        )
        .await
        .unwrap();
    assert_eq!(error_code(&r), Some(401));
    // Authenticated: 420 with MESSAGE-INTEGRITY, and no allocation is made.
    let r = s
        .request(method::ALLOCATE, |m| {
            m.transport(UDP).attr(UNKNOWN_ATTR, &[])
        })
        .await;
    assert_eq!(error_code(&r), Some(420));
    assert_eq!(
        client_codec::decode_response(&r)
            .unwrap()
            .unknown_attributes,
        vec![UNKNOWN_ATTR]
    );
    assert!(attribute(&r, attr::MESSAGE_INTEGRITY).is_some());
    let r = s
        .request(method::ALLOCATE, |m| {
            m.transport(UDP).attr(0x8F00, &[1, 2, 3])
        })
        .await;
    assert!(is_success(&r), "the 420 allocated: {:?}", error_code(&r));
    let r = s
        .request(method::CREATE_PERMISSION, |m| m.peer(peer_addr))
        .await;
    assert!(is_success(&r));

    let send = |extra: &[u16], data: &[u8]| {
        let mut m = Msg::new(method::SEND, Class::Indication, rand::random())
            .peer(peer_addr)
            .attr(attr::DATA, data);
        for &t in extra {
            m = m.attr(t, &[]);
        }
        m.bytes()
    };
    s.send(&send(&[UNKNOWN_ATTR], b"with an unknown attribute"))
        .await;
    s.send(&send(&[attr::DONT_FRAGMENT], b"with DONT-FRAGMENT"))
        .await;
    s.send(&send(&[], b"plain")).await;
    let got: Vec<Vec<u8>> = drain(&peer, WAIT, 1)
        .await
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    assert_eq!(got, vec![b"plain".to_vec()]);
}

/// Messages near the 64 KiB datagram limit: a Binding padded with a 65 000-byte optional
/// attribute is answered (briefly), an oversize SOFTWARE or USERNAME gets 400, 64 KiB of
/// garbage is dropped, and a 65 000-byte ChannelData and Send indication are relayed
/// whole. The next requests are served after each.
#[tokio::test]
async fn huge_messages_are_answered_refused_or_relayed_whole() {
    let server = start_server("").await;
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let (s, _) = allocated_session(&server).await;

    let huge = vec![0x61; 65_000];
    let padded_binding = Msg::request(method::BINDING).attr(0x8F00, &huge).bytes();
    let r = s.exchange(&padded_binding).await.expect("answered");
    assert!(
        is_success(&r) && r.len() <= 64,
        "{} bytes, {:?}",
        r.len(),
        error_code(&r)
    );
    let answers = probe(
        &s,
        &Msg::request(method::BINDING)
            .attr(attr::SOFTWARE, &huge)
            .bytes(),
    )
    .await;
    assert_eq!(
        answers.iter().map(|a| error_code(a)).collect::<Vec<_>>(),
        vec![Some(400)]
    );
    let answers = probe(
        &s,
        &s.authed(method::REFRESH)
            .attr(attr::USERNAME, &huge[..600])
            .bytes(),
    )
    .await;
    assert_eq!(
        answers.iter().map(|a| error_code(a)).collect::<Vec<_>>(),
        vec![Some(400)]
    );
    let r = s
        .request(method::REFRESH, |m| {
            m.attr(0x8F00, &huge[..60_000]).lifetime(600)
        })
        .await;
    assert_eq!(
        lifetime(&r),
        Some(600),
        "large credentialed Refresh: {:?}",
        error_code(&r)
    );
    for garbage in [vec![0xFF; 65_507], vec![0x00; 65_507], vec![0x41; 65_507]] {
        assert!(probe(&s, &garbage).await.is_empty());
    }

    let r = s
        .request(method::CHANNEL_BIND, |m| m.channel(0x4000).peer(peer_addr))
        .await;
    assert!(is_success(&r));
    s.send(&ferroturn::client::channel_data(0x4000, &huge))
        .await;
    let (d, _) = recv_from(&peer, WAIT).await.expect("the large ChannelData");
    assert_eq!(d, huge);
    s.send(&ferroturn::client::send_indication(peer_addr, &huge))
        .await;
    let (d, _) = recv_from(&peer, WAIT)
        .await
        .expect("the large Send indication");
    assert_eq!(d, huge);
}

/// Channel numbers outside 0x4000-0x7FFF are refused by ChannelBind (400), datagrams
/// whose first bits make them neither STUN nor ChannelData (0x8000 and up) are dropped,
/// and 0x4FFF and 0x7FFF are accepted (the RFC 5766 range; ARCHITECTURE.md).
#[tokio::test]
async fn out_of_range_channel_numbers_are_refused_and_dropped() {
    let server = start_server("").await;
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let (s, _) = allocated_session(&server).await;
    for number in [0x0000u16, 0x0001, 0x3FFF, 0x8000, 0xBFFF, 0xC000, 0xFFFF] {
        let r = s
            .request(method::CHANNEL_BIND, |m| m.channel(number).peer(peer_addr))
            .await;
        assert_eq!(error_code(&r), Some(400), "channel {number:#06x}");
    }
    let r = s
        .request(method::CHANNEL_BIND, |m| m.channel(0x7FFF).peer(peer_addr))
        .await;
    assert!(is_success(&r), "0x7FFF: {:?}", error_code(&r));
    for first in [0x80u8, 0xBF, 0xC0, 0xFF] {
        let answers = probe(&s, &[first, 0xFF, 0x00, 0x04, 1, 2, 3, 4]).await;
        assert!(answers.is_empty(), "{first:#04x}: answered {answers:?}");
    }
    assert!(
        drain(&peer, QUIET, usize::MAX).await.is_empty(),
        "relayed a non-channel"
    );
    s.send(&ferroturn::client::channel_data(0x7FFF, b"on 0x7FFF"))
        .await;
    let (d, _) = recv_from(&peer, WAIT).await.expect("ChannelData on 0x7FFF");
    assert_eq!(d, b"on 0x7FFF");
}

// ---------------------------------------------------------------------------------
// Unauthenticated floods and amplification.

/// What one flood source got back: how many answers, and whether each was a 401 of
/// `expected_len` bytes.
#[derive(Clone, Copy, Debug, Default)]
struct Answers {
    count: usize,
    all_401_of_expected_len: bool,
}

/// Sends `per_source` unauthenticated Allocates from each of `sources` (one socket each,
/// `CONCURRENT` at a time). Nothing per source is kept on the heap, so the flood's own
/// memory does not grow with the number of sources.
async fn flood(
    server: SocketAddr,
    sources: &[IpAddr],
    per_source: usize,
    expected_len: usize,
) -> Vec<Answers> {
    const CONCURRENT: usize = 200;
    let mut out = vec![Answers::default(); sources.len()];
    for (c, chunk) in sources.chunks(CONCURRENT).enumerate() {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, &source) in chunk.iter().enumerate() {
            tasks.spawn(async move {
                let socket = UdpSocket::bind((source, 0))
                    .await
                    .expect("bind a flood source");
                for _ in 0..per_source {
                    let m = Msg::request(method::ALLOCATE).transport(UDP).bytes();
                    socket.send_to(&m, server).await.expect("send");
                }
                let mut a = Answers {
                    count: 0,
                    all_401_of_expected_len: true,
                };
                let mut buf = [0u8; 512];
                let deadline = Instant::now() + Duration::from_millis(500);
                while a.count < per_source {
                    match tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await {
                        Ok(Ok((n, _))) => {
                            a.count += 1;
                            a.all_401_of_expected_len &=
                                n == expected_len && error_code(&buf[..n]) == Some(401);
                        }
                        _ => break,
                    }
                }
                (c * CONCURRENT + i, a)
            });
        }
        while let Some(done) = tasks.join_next().await {
            let (i, a) = done.expect("flood task");
            out[i] = a;
        }
    }
    out
}

/// 2000 spoofed sources (127.1.x.y) send 3 Allocates each: the server keeps no state per
/// unauthenticated source, so its resident memory stays flat (this process holds only
/// the server and the flood: the test runs alone in a child, after an identical flood
/// from other addresses brought the flood's own memory to its high-water mark), each
/// source gets at most one minimal 401 per request, and a real client is served at once.
#[tokio::test]
async fn spoofed_source_allocate_flood_keeps_memory_flat() {
    const SOURCES: usize = 2000;
    if !alone() {
        return run_alone(
            module_path!(),
            "spoofed_source_allocate_flood_keeps_memory_flat",
        )
        .await;
    }
    let server = denying_server("").await;
    let challenge_len = HEADER_LEN + 8 + 4 + REALM.len().next_multiple_of(4) + 20;
    let sources = |third: u8| -> Vec<IpAddr> {
        (0..SOURCES)
            .map(|i| {
                IpAddr::V4(Ipv4Addr::new(
                    127,
                    third,
                    (i / 250) as u8,
                    (i % 250 + 1) as u8,
                ))
            })
            .collect()
    };
    flood(server.addr, &sources(2), 3, challenge_len).await;
    let before = rss_kib();
    let answers = flood(server.addr, &sources(1), 3, challenge_len).await;
    let after = rss_kib();
    let total: usize = answers.iter().map(|a| a.count).sum();
    println!(
        "flood: {SOURCES} sources x 3 Allocates, {total} answers; RSS {before} KiB -> {after} KiB"
    );
    for (i, a) in answers.iter().enumerate() {
        assert!(a.count <= 3, "source {i} got {} answers", a.count);
        assert!(
            a.all_401_of_expected_len,
            "source {i} got something else than minimal 401s"
        );
    }
    assert!(
        total >= SOURCES * 3 * 9 / 10,
        "only {total} of {} requests answered",
        SOURCES * 3
    );
    assert!(
        after.saturating_sub(before) < 2048,
        "RSS grew by {} KiB under the flood",
        after - before
    );
    let mut c = client(&server, "alice").await;
    c.allocate().await.expect("served after the flood");
}

/// A spoofed flood aimed at one victim IP, from as many source ports as a spoofer likes
/// (so SO_REUSEPORT spreads it over both relay threads), gets the victim at most the
/// documented per-source budget: `unauthenticated-rate` answers per second in bursts of
/// twice that (README, turnserver.toml.example, ARCHITECTURE.md).
#[tokio::test]
async fn spoofed_flood_at_one_victim_is_answered_at_most_at_the_unauthenticated_rate() {
    const RATE: f64 = 50.0;
    const SOCKETS: usize = 16;
    const PER_SOCKET: usize = 60;
    let server = denying_server("relay-threads = 2\nunauthenticated-rate = 50").await;
    let victim = ip("127.0.9.9");
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..SOCKETS {
        let to = server.addr;
        tasks.spawn(async move {
            let socket = UdpSocket::bind((victim, 0)).await.expect("bind the victim");
            for _ in 0..PER_SOCKET {
                let m = Msg::request(method::ALLOCATE).transport(UDP).bytes();
                socket.send_to(&m, to).await.expect("send");
                sleep(Duration::from_millis(8)).await;
            }
            drain(&socket, QUIET, usize::MAX).await.len()
        });
    }
    let mut answered = 0;
    while let Some(n) = tasks.join_next().await {
        answered += n.expect("flood task");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let budget = (2.0 * RATE + RATE * elapsed).ceil() as usize;
    let sent = SOCKETS * PER_SOCKET;
    let limited = counter(&server, |s| s.rate_limited, (sent - answered) as u64).await;
    println!(
        "one victim: {sent} requests, {answered} answered, {limited} rate-limited in \
         {elapsed:.2} s; budget {budget}"
    );
    assert!(
        answered >= 2 * RATE as usize,
        "not even the burst was answered: {answered}"
    );
    assert!(
        answered <= budget,
        "{answered} answers to one source IP in {elapsed:.2} s; the limit allows {budget}"
    );
}

/// Binding responses are no larger than needed: over IPv4 at most 1.6 times the request
/// (32 bytes for the smallest, 20-byte, request). Over IPv6 the XOR-MAPPED-ADDRESS alone
/// is 24 bytes, so the response is exactly header + that attribute (+ FINGERPRINT when
/// asked): 2.2 times a bare 20-byte request in UDP payload, 1.35 times in IP packets.
#[tokio::test]
async fn binding_amplification_is_at_most_1_6_over_ipv4() {
    let server = denying_server("listening-ip = [\"127.0.0.1\", \"::1\"]").await;
    let v4 = *server
        .handle
        .udp_addrs()
        .iter()
        .find(|a| a.is_ipv4())
        .unwrap();
    let v6 = *server
        .handle
        .udp_addrs()
        .iter()
        .find(|a| a.is_ipv6())
        .unwrap();
    let requests = [
        Msg::request(method::BINDING).bytes(),
        Msg::request(method::BINDING).fingerprint().bytes(),
        Msg::request(method::BINDING).attr(0x8F00, &[]).bytes(),
        Msg::request(method::BINDING)
            .attr(UNKNOWN_ATTR, &[])
            .bytes(),
    ];
    let s4 = Session::bind(LOCALHOST, v4, "", "").await;
    let s6 = Session::bind(ip("::1"), v6, "", "").await;
    for request in &requests {
        let r = s4.exchange(request).await.expect("IPv4 Binding answered");
        let ratio = r.len() as f64 / request.len() as f64;
        println!(
            "IPv4 Binding: {} -> {} bytes ({ratio:.2}x)",
            request.len(),
            r.len()
        );
        assert!(
            ratio <= 1.6,
            "IPv4: {} -> {} bytes ({ratio:.2}x)",
            request.len(),
            r.len()
        );

        let r = s6.exchange(request).await.expect("IPv6 Binding answered");
        let on_wire = (r.len() + 48) as f64 / (request.len() + 48) as f64;
        println!(
            "IPv6 Binding: {} -> {} bytes ({:.2}x payload, {on_wire:.2}x packets)",
            request.len(),
            r.len(),
            r.len() as f64 / request.len() as f64
        );
        assert!(
            on_wire <= 1.6,
            "IPv6: {} -> {} bytes",
            request.len(),
            r.len()
        );
        if error_code(&r).is_none() {
            let fingerprint = if attribute(request, attr::FINGERPRINT).is_some() {
                8
            } else {
                0
            };
            assert_eq!(
                r.len(),
                HEADER_LEN + 24 + fingerprint,
                "IPv6 Binding response padded"
            );
        }
    }
}
