//! End to end over TCP and TLS: a server on 127.0.0.1:0 with TCP and TLS listeners (a
//! private test CA), our TURN client over each stream transport, a UDP echo peer. The relay
//! toward the peer is UDP in both cases (RFC 8656 section 3.1).

use crate::common::tls::{TestPki, server_name};
use crate::common::{QUIET, SECRET, TestServer, WAIT, echo_peer, rest_credentials, start_server};
use ferroturn::client::{ClientError, Relayed, TurnClient};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, sleep};

#[derive(Clone, Copy, Debug)]
enum Kind {
    Tcp,
    Tls,
}

async fn connect(server: &TestServer, pki: &TestPki, kind: Kind, user: &str) -> TurnClient {
    let (u, p) = rest_credentials(SECRET, user, Duration::from_secs(600));
    match kind {
        Kind::Tcp => TurnClient::connect_tcp(server.handle.tcp_addrs()[0], &u, &p)
            .await
            .expect("TCP connect"),
        Kind::Tls => TurnClient::connect_tls(
            server.handle.tls_addrs()[0],
            server_name(),
            pki.client_config(),
            &u,
            &p,
        )
        .await
        .expect("TLS connect"),
    }
}

async fn tls_server(extra: &str) -> (TestServer, TestPki) {
    let pki = TestPki::new();
    let server = start_server(&format!("{}{extra}", pki.server_toml())).await;
    (server, pki)
}

/// Allocate, permissions, Send/Data indications and ChannelData of several sizes (odd
/// ones exercise the stream padding), both ways through a UDP echo peer.
async fn relay_both_ways(kind: Kind) {
    let (server, pki) = tls_server("").await;
    let peer = echo_peer().await;
    let mut c = connect(&server, &pki, kind, "alice").await;
    assert_eq!(c.binding().await.unwrap(), c.local_addr().unwrap());
    let relayed = c.allocate().await.unwrap();
    assert_eq!(relayed.ip().to_string(), "127.0.0.1");

    // Without a permission nothing is relayed.
    c.send_indication(peer.addr, b"no permission")
        .await
        .unwrap();
    assert_eq!(c.recv_relayed(QUIET).await.unwrap(), None);

    c.create_permission(&[peer.addr]).await.unwrap();
    for size in [1usize, 3, 200, 1201, 8000] {
        let payload: Vec<u8> = (0..size).map(|i| (i * 7) as u8).collect();
        c.send_indication(peer.addr, &payload).await.unwrap();
        assert_eq!(
            c.recv_relayed(WAIT).await.unwrap(),
            Some(Relayed::Indication {
                peer: peer.addr,
                data: payload
            }),
            "{kind:?} indication of {size} bytes"
        );
    }
    c.channel_bind(0x4001, peer.addr).await.unwrap();
    for size in [0usize, 1, 2, 3, 5, 1200, 30_000] {
        let payload: Vec<u8> = (0..size).map(|i| (i * 13) as u8).collect();
        c.send_channel_data(0x4001, &payload).await.unwrap();
        assert_eq!(
            c.recv_relayed(WAIT).await.unwrap(),
            Some(Relayed::Channel {
                channel: 0x4001,
                data: payload
            }),
            "{kind:?} ChannelData of {size} bytes"
        );
    }
    // Many back to back: the stream stays framed.
    for i in 0..200u32 {
        c.send_channel_data(0x4001, &i.to_be_bytes()[..(i % 4 + 1) as usize])
            .await
            .unwrap();
    }
    for i in 0..200u32 {
        let want = i.to_be_bytes()[..(i % 4 + 1) as usize].to_vec();
        match c.recv_relayed(WAIT).await.unwrap() {
            Some(Relayed::Channel { data, .. }) => assert_eq!(data, want, "message {i}"),
            other => panic!("{kind:?}: message {i}: {other:?}"),
        }
    }
    assert_eq!(c.refresh(600).await.unwrap(), 600);
}

#[tokio::test]
async fn tcp_allocate_permission_channel_relay_both_ways() {
    relay_both_ways(Kind::Tcp).await;
}

#[tokio::test]
async fn tls_allocate_permission_channel_relay_both_ways() {
    relay_both_ways(Kind::Tls).await;
}

/// Closing the connection deletes the allocation at once: the relay port is free (the
/// test can bind it) and the user's quota slot is back.
async fn close_frees_the_allocation(kind: Kind) {
    let (server, pki) = tls_server("user-quota = 1\n").await;
    let mut c = connect(&server, &pki, kind, "bob").await;
    let relayed = c.allocate().await.unwrap();
    // A second allocation for bob is over the quota while the first lives.
    let mut second = connect(&server, &pki, kind, "bob").await;
    match second.allocate().await {
        Err(ClientError::Error(486)) => {}
        other => panic!("expected 486, got {other:?}"),
    }
    c.shutdown().await.unwrap();
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(5);
    let freed = loop {
        if std::net::UdpSocket::bind(relayed).is_ok() {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        sleep(Duration::from_millis(20)).await;
    };
    assert!(
        freed,
        "{kind:?}: relay port {relayed} freed after the connection closed"
    );
    second.allocate().await.expect("quota slot freed");
}

#[tokio::test]
async fn tcp_connection_close_frees_the_allocation() {
    close_frees_the_allocation(Kind::Tcp).await;
}

#[tokio::test]
async fn tls_connection_close_frees_the_allocation() {
    close_frees_the_allocation(Kind::Tls).await;
}

#[tokio::test]
async fn wrong_password_over_tls_is_refused() {
    let (server, pki) = tls_server("").await;
    let (u, _) = rest_credentials(SECRET, "eve", Duration::from_secs(600));
    let mut c = TurnClient::connect_tls(
        server.handle.tls_addrs()[0],
        server_name(),
        pki.client_config(),
        &u,
        "not-the-password",
    )
    .await
    .unwrap();
    match c.allocate().await {
        Err(ClientError::Error(401)) => {}
        other => panic!("expected 401, got {other:?}"),
    }
}

/// The certificate a fresh TLS handshake with the server presents.
async fn presented_certificate(pki: &TestPki, addr: SocketAddr) -> Vec<u8> {
    let tls = pki.connect(addr).await.expect("TLS handshake");
    let (_, conn) = tls.get_ref();
    assert_eq!(
        conn.alpn_protocol(),
        Some(&b"stun.turn"[..]),
        "ALPN stun.turn"
    );
    conn.peer_certificates().expect("server certificate")[0].to_vec()
}

/// A handshake that offers `alpn` (none: no ALPN extension at all) and trusts the test
/// CA; the protocol the server chose.
async fn alpn_handshake(
    pki: &TestPki,
    addr: SocketAddr,
    alpn: &[&[u8]],
) -> std::io::Result<Option<Vec<u8>>> {
    let mut config = (*pki.client_config()).clone();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = tokio::time::timeout(WAIT, connector.connect(server_name(), tcp))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake"))??;
    Ok(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
}

/// ALPN (RFC 7443): `stun.turn` is the only protocol the server agrees to. A client that
/// offers it among others (coturn's uclient offers `http/1.1`, `stun.turn`,
/// `stun.nat-discovery`) gets it; a client that sends no ALPN is served, a Binding
/// included; a client that offers only `stun.nat-discovery` (RFC 5780, not implemented)
/// is refused with no_application_protocol (RFC 7301 section 3.2).
#[tokio::test]
async fn tls_alpn_agrees_on_stun_turn_only() {
    let (server, pki) = tls_server("").await;
    let addr = server.handle.tls_addrs()[0];
    let coturn: [&[u8]; 3] = [b"http/1.1", b"stun.turn", b"stun.nat-discovery"];
    assert_eq!(
        alpn_handshake(&pki, addr, &coturn).await.unwrap(),
        Some(b"stun.turn".to_vec())
    );
    assert_eq!(alpn_handshake(&pki, addr, &[]).await.unwrap(), None);

    let refused = alpn_handshake(&pki, addr, &[b"stun.nat-discovery"])
        .await
        .expect_err("stun.nat-discovery alone must not be agreed to");
    let alert = refused
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    assert_eq!(
        alert,
        Some(&rustls::Error::AlertReceived(
            rustls::AlertDescription::NoApplicationProtocol
        )),
        "{refused}"
    );

    let mut no_alpn = (*pki.client_config()).clone();
    no_alpn.alpn_protocols.clear();
    let (u, p) = rest_credentials(SECRET, "dave", Duration::from_secs(600));
    let mut c = TurnClient::connect_tls(addr, server_name(), Arc::new(no_alpn), &u, &p)
        .await
        .expect("TLS without ALPN");
    assert_eq!(c.binding().await.unwrap(), c.local_addr().unwrap());
}

#[tokio::test]
async fn tls_reload_serves_the_new_certificate_and_keeps_allocations() {
    let (server, mut pki) = tls_server("").await;
    let addr = server.handle.tls_addrs()[0];
    let first = pki.server_der.to_vec();
    assert_eq!(presented_certificate(&pki, addr).await, first);

    let peer = echo_peer().await;
    let mut c = connect(&server, &pki, Kind::Tls, "carol").await;
    c.allocate().await.unwrap();
    c.channel_bind(0x4002, peer.addr).await.unwrap();

    let second = pki.replace_server_cert().to_vec();
    assert_ne!(first, second);
    server.handle.reload_tls().expect("reload");
    assert_eq!(
        presented_certificate(&pki, addr).await,
        second,
        "new handshakes"
    );

    // The allocation made before the reload, on the connection made before it, relays.
    c.send_channel_data(0x4002, b"after reload").await.unwrap();
    assert_eq!(
        c.recv_relayed(WAIT).await.unwrap(),
        Some(Relayed::Channel {
            channel: 0x4002,
            data: b"after reload".to_vec()
        })
    );

    // A bad key file: the reload fails, naming the file, and the old certificate stays.
    std::fs::write(&pki.key_path, b"-----BEGIN PRIVATE KEY-----\nnot a key\n").unwrap();
    let err = server
        .handle
        .reload_tls()
        .expect_err("a bad key is refused");
    assert!(
        matches!(err, ferroturn::control::CertError::Key { .. }),
        "the key file is named as the fault: {err}"
    );
    assert!(err.to_string().contains("pkey"), "{err}");
    assert_eq!(presented_certificate(&pki, addr).await, second);
    c.send_channel_data(0x4002, b"still").await.unwrap();
    assert!(matches!(
        c.recv_relayed(WAIT).await.unwrap(),
        Some(Relayed::Channel { .. })
    ));
}

#[tokio::test]
async fn tls_certificate_files_changing_are_picked_up_without_a_signal() {
    let (server, mut pki) = tls_server("").await;
    let addr = server.handle.tls_addrs()[0];
    // mtime granularity: make sure the new files are stamped later than the old.
    sleep(Duration::from_millis(1100)).await;
    let second = pki.replace_server_cert().to_vec();
    // The watcher looks every 5 s.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if presented_certificate(&pki, addr).await == second {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the changed files were not reloaded"
        );
        sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn a_client_that_does_not_read_loses_media_not_framing() {
    let (server, pki) = tls_server("tcp-send-queue = 16384\nmax-bps = 0\n").await;
    let mut c = connect(&server, &pki, Kind::Tcp, "dave").await;
    let relayed = c.allocate().await.unwrap();
    let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    c.channel_bind(0x4003, peer_addr).await.unwrap();
    // Datagrams of 1000 bytes while the client reads nothing: 20 000 (20 MB), more than
    // the socket buffers and the queue hold, and on a machine so busy that the kernel
    // dropped many of them at the relay socket before the server read them, more until
    // the server has dropped frames (at most 200 000).
    const ENOUGH: u32 = 20_000;
    const MOST: u32 = 200_000;
    let mut sent = 0u32;
    while sent < MOST {
        let i = sent;
        let mut d = [(i % 251) as u8; 1000];
        d[..4].copy_from_slice(&i.to_be_bytes());
        peer.send_to(&d, relayed).await.unwrap();
        sent += 1;
        if i % 500 == 0 {
            tokio::task::yield_now().await;
            if sent >= ENOUGH && server.handle.stream_frames_dropped() > 0 {
                break;
            }
        }
    }
    sleep(Duration::from_millis(500)).await;
    let dropped = server.handle.stream_frames_dropped();
    assert!(
        dropped > 0,
        "the server dropped frames instead of queueing them all"
    );
    // Everything that does arrive is whole, in order, and the connection still works.
    let mut got = 0u32;
    let mut last: Option<u32> = None;
    while let Some(m) = c.recv_relayed(Duration::from_millis(500)).await.unwrap() {
        let Relayed::Channel { channel, data } = m else {
            panic!("unexpected {m:?}");
        };
        assert_eq!(channel, 0x4003);
        assert_eq!(data.len(), 1000);
        let i = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
        assert!(
            data[4..].iter().all(|b| *b == (i % 251) as u8),
            "frame {i} intact"
        );
        assert!(last.is_none_or(|l| i > l), "in order");
        last = Some(i);
        got += 1;
        assert!(got <= sent);
    }
    assert!(
        got > 0 && got < sent,
        "received {got} of {sent}, dropped {dropped}"
    );
    assert_eq!(c.refresh(600).await.unwrap(), 600);
}

#[tokio::test]
async fn metrics_count_allocations_traffic_connections_and_challenges() {
    let (server, pki) = tls_server("").await;
    let peer = echo_peer().await;
    let mut c = connect(&server, &pki, Kind::Tcp, "erin").await;
    c.allocate().await.unwrap();
    c.channel_bind(0x4004, peer.addr).await.unwrap();
    for _ in 0..10 {
        c.send_channel_data(0x4004, &[1; 100]).await.unwrap();
        assert!(c.recv_relayed(WAIT).await.unwrap().is_some());
    }
    // Shards publish once a second.
    let deadline = Instant::now() + Duration::from_secs(5);
    let m = loop {
        let m = server.handle.metrics();
        if m.gauges.allocations == 1 && m.stats.relayed[1][1].packets == 10 {
            break m;
        }
        assert!(Instant::now() < deadline, "metrics did not move: {m:?}");
        sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(m.stats.allocations_created, 1);
    assert_eq!(m.gauges.channels, 1);
    assert_eq!(m.gauges.permissions, 1);
    assert_eq!(m.stats.relayed[1][0].packets, 10, "client to peer over TCP");
    assert_eq!(m.stats.relayed[1][0].bytes, 1000);
    assert_eq!(m.stats.relayed[0][0].packets, 0, "nothing over UDP");
    assert_eq!(m.connections_open, 1);
    assert_eq!(m.connections_accepted_tcp, 1);
    // The first request of a client is challenged: one 401 "no credentials".
    assert_eq!(m.stats.errors_with(401), 1, "{:?}", m.stats.errors);
    assert_eq!(m.stats.auth_failures[0], 1);
    c.shutdown().await.unwrap();
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.handle.metrics().stats.allocations_deleted != 1 {
        assert!(Instant::now() < deadline, "connection close not counted");
        sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(server.handle.metrics().gauges.allocations, 0);
}
