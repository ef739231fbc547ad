//! TURN over DTLS (RFC 7350) under attack: ClientHello floods, garbage and replayed
//! cookies get the stateless gate's answer (a HelloVerifyRequest, or nothing) and never a
//! session; sessions that proved their address are bounded by the connection caps and
//! the handshake and idle timeouts.

use super::{LOCALHOST, alone, rss_kib, run_alone};
use crate::common::dtls_wire::{client_hello, hello_verify_cookie, is_server_hello};
use crate::common::tls::TestPki;
use crate::common::{
    QUIET, SECRET, TestServer, WAIT, published_metrics, rest_credentials, start_server,
};
use ferroturn::client::TurnClient;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::net::UdpSocket;

async fn dtls_server(extra: &str) -> (TestServer, TestPki) {
    let pki = TestPki::new();
    let server = start_server(&format!("{}{extra}", pki.server_toml())).await;
    (server, pki)
}

fn dtls_addr(server: &TestServer) -> SocketAddr {
    server.handle.dtls_addrs()[0]
}

/// A real client over DTLS allocates: the server still serves.
async fn served(server: &TestServer, pki: &TestPki) {
    let (u, p) = rest_credentials(SECRET, "alice", Duration::from_secs(600));
    let mut c = TurnClient::connect_dtls(dtls_addr(server), &pki.dtls_client_context(), &u, &p)
        .await
        .expect("a DTLS handshake");
    c.allocate().await.expect("an allocation over DTLS");
}

/// The next datagram on `socket` within `wait`, if any.
async fn next(socket: &UdpSocket, wait: Duration) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(wait, socket.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

/// Every source sends 3 ClientHellos, none with a cookie valid for it: the first
/// without one, the second with the cookie the next source was given, the third with a
/// made-up one; then reads its answers. Returns how many HelloVerifyRequests came back.
async fn client_hello_flood(to: SocketAddr, sources: &[IpAddr]) -> usize {
    let mut sockets = Vec::with_capacity(sources.len());
    for ip in sources {
        sockets.push(
            UdpSocket::bind((*ip, 0))
                .await
                .expect("bind a flood source"),
        );
    }
    let random = |i: usize| [(i % 251) as u8; 32];
    let mut cookies = vec![vec![0u8; 20]; sockets.len()];
    let mut answers = 0;
    for round in 0..3u8 {
        for (i, s) in sockets.iter().enumerate() {
            let cookie = match round {
                0 => Vec::new(),
                1 => cookies[(i + 1) % cookies.len()].clone(),
                _ => vec![round; 20],
            };
            let _ = s
                .send_to(&client_hello(u64::from(round), 1, random(i), &cookie), to)
                .await;
        }
        for (i, s) in sockets.iter().enumerate() {
            if let Some(c) = next(s, Duration::from_millis(50))
                .await
                .and_then(|d| hello_verify_cookie(&d))
            {
                answers += 1;
                if round == 0 {
                    cookies[i] = c;
                }
            }
        }
    }
    answers
}

/// 600 sources (127.3.x.y and ports) send 3 ClientHellos each, none with a cookie valid
/// for it: each gets HelloVerifyRequests and nothing else, no session starts, and the
/// server's resident memory stays flat (the test runs alone in a child, after an
/// identical flood from other addresses brought the flood's own memory to its
/// high-water mark). A real DTLS client is served afterwards.
#[tokio::test]
async fn client_hello_flood_creates_no_session_and_keeps_memory_flat() {
    const SOURCES: usize = 600;
    if !alone() {
        return run_alone(
            module_path!(),
            "client_hello_flood_creates_no_session_and_keeps_memory_flat",
        )
        .await;
    }
    let (server, pki) = dtls_server("").await;
    let to = dtls_addr(&server);
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
    client_hello_flood(to, &sources(4)).await;
    let before = rss_kib();
    let answers = client_hello_flood(to, &sources(3)).await;
    let after = rss_kib();
    assert!(
        answers >= SOURCES * 3 * 9 / 10,
        "only {answers} of {} ClientHellos answered",
        SOURCES * 3
    );
    let m = published_metrics(&server, "the flood's HelloVerifyRequests", |m| {
        m.dtls_hello_verify >= (2 * SOURCES * 3 * 9 / 10) as u64
    })
    .await;
    println!(
        "DTLS flood: 2 x {SOURCES} sources x 3 ClientHellos, {} HelloVerifyRequests; RSS \
         {before} KiB -> {after} KiB",
        m.dtls_hello_verify
    );
    assert_eq!(m.dtls_sessions, 0, "{m:?}");
    assert_eq!(
        m.dtls_handshakes_done + m.dtls_handshakes_failed,
        0,
        "{m:?}"
    );
    assert_eq!(m.connections_open, 0, "{m:?}");
    assert!(
        after.saturating_sub(before) < 2048,
        "RSS grew by {} KiB under the flood",
        after - before
    );
    served(&server, &pki).await;
}

/// Datagrams that are not a ClientHello a session can start from (random bytes, STUN,
/// truncated or fragmented ClientHellos, application data and later epochs) get no
/// answer and change nothing.
#[tokio::test]
async fn garbage_to_the_dtls_port_is_dropped_without_effect() {
    let (server, pki) = dtls_server("").await;
    let to = dtls_addr(&server);
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let hello = client_hello(0, 0, [1; 32], &[]);
    let mut garbage: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0u8; 1],
        vec![0xff; 1400],
        // A STUN Binding request.
        vec![
            0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
        ],
        hello[..hello.len() / 2].to_vec(),
    ];
    // Application data in epoch 1, a ClientHello in epoch 1, a fragment, message_seq 2.
    for (at, value) in [(0usize, 23u8), (4, 1), (22, 9), (18, 2)] {
        let mut bad = hello.clone();
        bad[at] = value;
        garbage.push(bad);
    }
    for g in &garbage {
        socket.send_to(g, to).await.unwrap();
    }
    assert_eq!(next(&socket, QUIET).await, None, "garbage got an answer");
    // The control: the same socket's real ClientHello is answered.
    socket.send_to(&hello, to).await.unwrap();
    let answer = next(&socket, WAIT)
        .await
        .expect("an answer to a ClientHello");
    assert!(hello_verify_cookie(&answer).is_some());
    let m = published_metrics(&server, "the one HelloVerifyRequest", |m| {
        m.dtls_hello_verify >= 1
    })
    .await;
    assert_eq!(m.dtls_hello_verify, 1, "garbage was answered: {m:?}");
    assert_eq!(m.dtls_sessions, 0);
    served(&server, &pki).await;
}

/// A cookie earned by one client transport address and replayed from another port, or
/// another address, gets a fresh HelloVerifyRequest and no session; from the address it
/// was issued to, the same ClientHello starts a handshake (the control).
#[tokio::test]
async fn cookie_replayed_from_another_address_gets_no_session() {
    let (server, _pki) = dtls_server("").await;
    let to = dtls_addr(&server);
    let owner = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let random = [5u8; 32];
    owner
        .send_to(&client_hello(0, 0, random, &[]), to)
        .await
        .unwrap();
    let cookie = hello_verify_cookie(&next(&owner, WAIT).await.expect("a HelloVerifyRequest"))
        .expect("a cookie");
    let replay = client_hello(1, 1, random, &cookie);
    for thief_ip in [LOCALHOST, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))] {
        let thief = UdpSocket::bind((thief_ip, 0)).await.unwrap();
        thief.send_to(&replay, to).await.unwrap();
        let answer = next(&thief, WAIT).await.expect("an answer to the replay");
        let fresh = hello_verify_cookie(&answer)
            .unwrap_or_else(|| panic!("the replay from {thief_ip} got {answer:02x?}"));
        assert_ne!(fresh, cookie);
        assert_eq!(
            next(&thief, QUIET).await,
            None,
            "more than a HelloVerifyRequest"
        );
    }
    let m = server.handle.metrics();
    assert_eq!(m.dtls_sessions, 0, "{m:?}");
    assert_eq!(m.connections_open, 0, "{m:?}");

    owner.send_to(&replay, to).await.unwrap();
    let answer = next(&owner, WAIT).await.expect("the server's flight");
    assert!(
        is_server_hello(&answer),
        "the cookie's owner got {answer:02x?}"
    );
    published_metrics(&server, "the owner's session", |m| m.dtls_sessions == 1).await;
}

/// Clients that complete the cookie exchange (so they do receive at their address) but
/// never finish the handshake: at most `max-tcp-connections-per-ip` sessions exist at
/// once, the rest are refused, and each is dropped at `tcp-handshake-timeout`.
#[tokio::test]
async fn unfinished_handshakes_are_capped_and_time_out() {
    const CLIENTS: usize = 8;
    const PER_IP: u64 = 3;
    let (server, pki) = dtls_server(&format!(
        "max-tcp-connections-per-ip = {PER_IP}\ntcp-handshake-timeout = 1\n"
    ))
    .await;
    let to = dtls_addr(&server);
    let mut sockets = Vec::new();
    for i in 0..CLIENTS {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let random = [i as u8; 32];
        s.send_to(&client_hello(0, 0, random, &[]), to)
            .await
            .unwrap();
        let cookie = hello_verify_cookie(&next(&s, WAIT).await.expect("a HelloVerifyRequest"))
            .expect("a cookie");
        s.send_to(&client_hello(1, 1, random, &cookie), to)
            .await
            .unwrap();
        sockets.push(s);
    }
    let m = published_metrics(&server, "the refused sessions", |m| {
        m.connections_refused >= (CLIENTS as u64 - PER_IP)
    })
    .await;
    assert!(m.dtls_sessions <= PER_IP, "{m:?}");
    assert_eq!(m.connections_refused, CLIENTS as u64 - PER_IP, "{m:?}");
    let mut flights = 0;
    for s in &sockets {
        if next(s, Duration::from_millis(100))
            .await
            .is_some_and(|d| is_server_hello(&d))
        {
            flights += 1;
        }
    }
    assert_eq!(flights, PER_IP, "only the admitted sessions were answered");
    // None finishes its handshake: every session is dropped, the slots come back.
    let m = published_metrics(&server, "the handshake timeouts", |m| {
        m.dtls_sessions == 0 && m.dtls_handshakes_failed >= PER_IP
    })
    .await;
    assert_eq!(m.connections_open, 0, "{m:?}");
    served(&server, &pki).await;
}

/// An established session that never allocates is closed after `tcp-idle-timeout`; one
/// with an allocation stays while the allocation lives.
#[tokio::test]
async fn idle_sessions_without_an_allocation_are_closed() {
    let (server, pki) = dtls_server("tcp-idle-timeout = 1\n").await;
    let (u, p) = rest_credentials(SECRET, "bob", Duration::from_secs(600));
    let ctx = pki.dtls_client_context();
    let mut idle = TurnClient::connect_dtls(dtls_addr(&server), &ctx, &u, &p)
        .await
        .unwrap();
    idle.binding().await.unwrap();
    let mut busy = TurnClient::connect_dtls(dtls_addr(&server), &ctx, &u, &p)
        .await
        .unwrap();
    busy.allocate().await.unwrap();
    published_metrics(&server, "the idle session's end", |m| m.dtls_sessions == 1).await;
    // The session with an allocation is the one left, and still serves.
    busy.refresh(600)
        .await
        .expect("the allocated session is served");
    // Gauges are published about once a second per shard.
    published_metrics(&server, "one allocation", |m| m.gauges.allocations == 1).await;
}
