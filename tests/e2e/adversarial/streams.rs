//! TURN over TCP and TLS against hostile or clumsy streams, with raw sockets: frames split
//! and coalesced, impossible length fields, garbage behind a valid frame, bytes trickled one
//! per second, and a thousand idle connections from one address. Each test also checks that
//! the server still serves a well-behaved connection afterwards.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

/// A Binding request (RFC 8489 section 3) with transaction id `txn`.
fn binding_request(txn: u8) -> Vec<u8> {
    let mut m = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    m.extend_from_slice(&[txn; 12]);
    m
}

/// Reads one STUN message (header + body) from the stream.
async fn read_stun(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut header = [0u8; 20];
    s.read_exact(&mut header).await?;
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await?;
    Ok([header.to_vec(), body].concat())
}

/// Asserts `s` answers a Binding request with a Binding success for the same transaction.
async fn assert_binding_works(s: &mut TcpStream, txn: u8) {
    s.write_all(&binding_request(txn)).await.expect("write");
    let response = timeout(Duration::from_secs(5), read_stun(s))
        .await
        .expect("Binding response in time")
        .expect("Binding response");
    assert_eq!(&response[..2], &[0x01, 0x01], "Binding success response");
    assert_eq!(&response[8..20], &[txn; 12], "same transaction id");
}

/// Waits (bounded) until the server closes `s`: read returns 0 or an error. Returns how
/// long it took.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match timeout(limit.saturating_sub(start.elapsed()), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

async fn server_with(extra: &str) -> (crate::common::TestServer, SocketAddr) {
    let server = crate::common::start_server(extra).await;
    let tcp = server.handle.tcp_addrs()[0];
    (server, tcp)
}

#[tokio::test]
async fn frames_split_across_reads_and_coalesced_in_one_read() {
    let (_server, tcp) = server_with("").await;
    let mut s = TcpStream::connect(tcp).await.unwrap();
    s.set_nodelay(true).unwrap();
    // Two requests in one write, then a third byte by byte in three pieces.
    let coalesced = [binding_request(1), binding_request(2)].concat();
    s.write_all(&coalesced).await.unwrap();
    let third = binding_request(3);
    for piece in [&third[..1], &third[1..7], &third[7..]] {
        s.write_all(piece).await.unwrap();
        sleep(Duration::from_millis(50)).await;
    }
    for txn in 1..=3u8 {
        let r = timeout(Duration::from_secs(5), read_stun(&mut s))
            .await
            .expect("response in time")
            .expect("response");
        assert_eq!(&r[8..20], &[txn; 12], "responses in order");
    }
}

#[tokio::test]
async fn length_field_of_65535_with_three_bytes_behind_it() {
    let (_server, tcp) = server_with("tcp-handshake-timeout = 1").await;
    let mut s = TcpStream::connect(tcp).await.unwrap();
    // ChannelData on 0x4000 claiming 65535 bytes, 3 sent: a frame that never completes.
    s.write_all(&[0x40, 0x00, 0xFF, 0xFF, 1, 2, 3])
        .await
        .unwrap();
    let took = closed_within(&mut s, Duration::from_secs(10)).await;
    assert!(
        took.is_some(),
        "the server closes the connection at its first-message deadline"
    );
    // The same claim on a STUN header: 65535 is not a multiple of 4, closed at once.
    let mut s = TcpStream::connect(tcp).await.unwrap();
    s.write_all(&[0x00, 0x01, 0xFF, 0xFF, 0x21, 0x12, 0xA4])
        .await
        .unwrap();
    assert!(
        closed_within(&mut s, Duration::from_secs(5))
            .await
            .is_some()
    );
    let mut ok = TcpStream::connect(tcp).await.unwrap();
    assert_binding_works(&mut ok, 9).await;
}

#[tokio::test]
async fn garbage_after_a_valid_frame_closes_the_connection_after_answering_it() {
    let (_server, tcp) = server_with("").await;
    let mut s = TcpStream::connect(tcp).await.unwrap();
    let stream = [binding_request(4), vec![0xC0, 0xFF, 0xEE, 0x00, 1, 2, 3, 4]].concat();
    s.write_all(&stream).await.unwrap();
    let r = timeout(Duration::from_secs(5), read_stun(&mut s))
        .await
        .expect("response in time")
        .expect("the valid request is answered");
    assert_eq!(&r[8..20], &[4u8; 12]);
    assert!(
        closed_within(&mut s, Duration::from_secs(5))
            .await
            .is_some(),
        "an undelimitable stream is closed"
    );
    let mut ok = TcpStream::connect(tcp).await.unwrap();
    assert_binding_works(&mut ok, 5).await;
}

#[tokio::test]
async fn one_byte_per_second_cannot_hold_a_connection() {
    let (_server, tcp) = server_with("tcp-handshake-timeout = 2").await;
    let mut s = TcpStream::connect(tcp).await.unwrap();
    s.set_nodelay(true).unwrap();
    let request = binding_request(6);
    let start = Instant::now();
    let mut closed = false;
    // At most 20 s for the 20 bytes; the server must give up long before.
    for byte in &request {
        if s.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 64];
        match timeout(Duration::from_secs(1), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) => panic!("no answer expected to a partial request"),
            Err(_) => {}
        }
    }
    assert!(closed, "the trickling connection was closed");
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "closed near the 2 s first-message deadline, took {took:?}"
    );
    let mut ok = TcpStream::connect(tcp).await.unwrap();
    assert_binding_works(&mut ok, 7).await;
}

#[tokio::test]
async fn a_thousand_idle_connections_from_one_ip() {
    const CAP: usize = 100;
    let (server, tcp) = server_with(&format!(
        "max-tcp-connections-per-ip = {CAP}\ntcp-handshake-timeout = 3"
    ))
    .await;
    let mut conns = Vec::with_capacity(1000);
    for _ in 0..1000 {
        if let Ok(Ok(s)) = timeout(Duration::from_secs(5), TcpStream::connect(tcp)).await {
            conns.push(s);
        }
    }
    // Over the cap, connections are accepted and closed at once; the server holds CAP.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.handle.connection_count() != CAP && Instant::now() < deadline {
        sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.handle.connection_count(), CAP);
    let mut refused = 0;
    for s in conns.iter_mut() {
        let mut buf = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) = timeout(Duration::from_millis(2), s.read(&mut buf)).await {
            refused += 1;
        }
    }
    assert!(
        refused >= 1000 - CAP - 10,
        "{refused} of 1000 closed at once"
    );
    // Another address still gets in while this one is at its cap.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = socket.connect(tcp).await.unwrap();
    assert_binding_works(&mut other, 10).await;
    drop(other);
    // The idle ones never sent a message: all closed at the first-message deadline.
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.handle.connection_count() > 0 && Instant::now() < deadline {
        sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        server.handle.connection_count(),
        0,
        "idle connections expire"
    );
    drop(conns);
    let mut ok = TcpStream::connect(tcp).await.unwrap();
    assert_binding_works(&mut ok, 8).await;
}

#[tokio::test]
async fn a_connection_over_the_total_cap_is_refused() {
    let (server, tcp) = server_with("max-tcp-connections = 3").await;
    let mut held = Vec::new();
    for txn in 0..3u8 {
        let mut s = TcpStream::connect(tcp).await.unwrap();
        assert_binding_works(&mut s, txn).await;
        held.push(s);
    }
    let mut fourth = TcpStream::connect(tcp).await.unwrap();
    let _ = fourth.write_all(&binding_request(3)).await;
    assert!(
        closed_within(&mut fourth, Duration::from_secs(5))
            .await
            .is_some()
    );
    assert_eq!(server.handle.connection_count(), 3);
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.handle.connection_count() > 0 && Instant::now() < deadline {
        sleep(Duration::from_millis(20)).await;
    }
    let mut s = TcpStream::connect(tcp).await.unwrap();
    assert_binding_works(&mut s, 4).await;
}

#[tokio::test]
async fn tls_port_silent_garbage_and_handshake_without_a_message_are_closed() {
    let pki = crate::common::tls::TestPki::new();
    let server =
        crate::common::start_server(&format!("{}tcp-handshake-timeout = 2\n", pki.server_toml()))
            .await;
    let tls = server.handle.tls_addrs()[0];
    // Connected, silent: closed at the handshake deadline.
    let mut silent = TcpStream::connect(tls).await.unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(8))
            .await
            .is_some()
    );
    // Plain STUN on the TLS port is not a ClientHello: closed at once.
    let mut plain = TcpStream::connect(tls).await.unwrap();
    plain.write_all(&binding_request(1)).await.unwrap();
    assert!(
        closed_within(&mut plain, Duration::from_secs(5))
            .await
            .is_some()
    );
    // A finished handshake that never delivers a message: closed at the same deadline.
    let mut idle = pki.connect(tls).await.expect("TLS handshake");
    let start = Instant::now();
    let mut buf = [0u8; 16];
    let r = timeout(Duration::from_secs(8), idle.read(&mut buf)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "closed after the first-message deadline: {r:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(6));
    // And a well-behaved TLS client is served.
    let mut ok = pki.connect(tls).await.expect("TLS handshake");
    ok.write_all(&binding_request(2)).await.unwrap();
    let mut header = [0u8; 20];
    timeout(Duration::from_secs(5), ok.read_exact(&mut header))
        .await
        .expect("in time")
        .expect("Binding response");
    assert_eq!(&header[..2], &[0x01, 0x01]);
    assert_eq!(&header[8..20], &[2u8; 12]);
}
