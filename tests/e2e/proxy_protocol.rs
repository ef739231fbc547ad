//! PROXY protocol (HAProxy's versions 1 and 2) on the TCP and TLS listeners: from a
//! `proxy-protocol-from` source (127.0.0.1 here) every connection starts with a header,
//! and the client it names is the client everywhere (XOR-MAPPED-ADDRESS, the per-IP
//! connection cap); a connection without one is closed, and so is one with a header from
//! any other source; broken headers close the connection and nothing else.

use crate::common::tls::{TestPki, server_name};
use crate::common::{
    SECRET, TestServer, WAIT, echo_peer, published_metrics, rest_credentials, start_server,
};
use crate::https_backend::{closed_within, https_backend, https_client, https_get};
use ferroturn::client::{Relayed, Transport, TurnClient};
use ferroturn::control::Refusal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The version 2 signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A version 1 header for a TCP connection from `client` to `server`'s port (on an
/// address of the client's family, as the proxy saw it).
fn v1(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let (family, to) = if client.is_ipv4() {
        ("TCP4", "192.0.2.1")
    } else {
        ("TCP6", "2001:db8::1")
    };
    format!(
        "PROXY {family} {} {to} {} {}\r\n",
        client.ip(),
        client.port(),
        server.port()
    )
    .into_bytes()
}

/// A version 2 header: PROXY over TCP from `client` (to an address of its family).
fn v2(client: SocketAddr) -> Vec<u8> {
    let mut body = Vec::new();
    let family = match client {
        SocketAddr::V4(a) => {
            body.extend_from_slice(&a.ip().octets());
            body.extend_from_slice(&[192, 0, 2, 1]);
            0x11
        }
        SocketAddr::V6(a) => {
            body.extend_from_slice(&a.ip().octets());
            body.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            0x21
        }
    };
    body.extend_from_slice(&client.port().to_be_bytes());
    body.extend_from_slice(&443u16.to_be_bytes());
    // A TLV the server skips (PP2_TYPE_NOOP).
    body.extend_from_slice(&[0x04, 0, 3, 1, 2, 3]);
    v2_raw(0x21, family, &body)
}

/// A version 2 header with the given version-command and family-protocol bytes.
fn v2_raw(version_command: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.push(version_command);
    h.push(family);
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(body);
    h
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("a socket address")
}

async fn server_from(sources: &str, extra: &str) -> (TestServer, TestPki) {
    let pki = TestPki::new();
    let toml = format!(
        "{}proxy-protocol-from = [{sources}]\n{extra}",
        pki.server_toml()
    );
    (start_server(&toml).await, pki)
}

/// A TCP connection to `server` that sent `header` first.
async fn connect_with(server: SocketAddr, header: &[u8]) -> TcpStream {
    let mut tcp = TcpStream::connect(server).await.expect("connect");
    tcp.set_nodelay(true).unwrap();
    tcp.write_all(header).await.expect("write the header");
    tcp
}

/// A TURN client over TCP behind `header`.
async fn turn_over_tcp(server: SocketAddr, header: &[u8], user: &str) -> TurnClient {
    let tcp = connect_with(server, header).await;
    let local = tcp.local_addr().unwrap();
    let (u, p) = rest_credentials(SECRET, user, Duration::from_secs(600));
    TurnClient::with_stream(Box::new(tcp), Transport::Tcp, local, server, &u, &p)
}

/// A TURN client over TLS behind `header` (sent before the ClientHello).
async fn turn_over_tls(
    server: SocketAddr,
    header: &[u8],
    cfg: Arc<rustls::ClientConfig>,
    user: &str,
) -> TurnClient {
    let tcp = connect_with(server, header).await;
    let local = tcp.local_addr().unwrap();
    let tls = tokio::time::timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(cfg).connect(server_name(), tcp),
    )
    .await
    .expect("TLS handshake in time")
    .expect("TLS handshake");
    let (u, p) = rest_credentials(SECRET, user, Duration::from_secs(600));
    TurnClient::with_stream(Box::new(tls), Transport::Tls, local, server, &u, &p)
}

/// Allocates, permits the echo peer and gets relayed data back.
async fn relays(c: &mut TurnClient) {
    let peer = echo_peer().await;
    c.allocate().await.expect("allocate");
    c.create_permission(&[peer.addr]).await.expect("permission");
    c.send_indication(peer.addr, b"proxied").await.unwrap();
    assert_eq!(
        c.recv_relayed(WAIT).await.unwrap(),
        Some(Relayed::Indication {
            peer: peer.addr,
            data: b"proxied".to_vec()
        })
    );
}

#[tokio::test]
async fn v1_and_v2_headers_make_the_named_client_the_client() {
    let (server, _pki) = server_from("\"127.0.0.1\"", "").await;
    let tcp = server.handle.tcp_addrs()[0];
    let cases = [
        (v1(addr("192.0.2.10:40001"), tcp), addr("192.0.2.10:40001")),
        (
            v1(addr("[2001:db8::10]:40002"), tcp),
            addr("[2001:db8::10]:40002"),
        ),
        (v2(addr("198.51.100.7:40003")), addr("198.51.100.7:40003")),
        (v2(addr("[2001:db8::7]:40004")), addr("[2001:db8::7]:40004")),
    ];
    for (i, (header, client)) in cases.iter().enumerate() {
        let mut c = turn_over_tcp(tcp, header, &format!("u{i}")).await;
        let mapped = c.binding().await;
        assert_eq!(mapped.ok(), Some(*client), "XOR-MAPPED-ADDRESS, case {i}");
        relays(&mut c).await;
    }
    published_metrics(&server, "headers and allocations counted", |m| {
        m.front.proxy_headers == [[2, 0], [2, 0]] && m.stats.allocations_created == 4
    })
    .await;
}

#[tokio::test]
async fn local_and_unknown_headers_keep_the_real_address() {
    let (server, _pki) = server_from("\"127.0.0.1\"", "").await;
    let tcp = server.handle.tcp_addrs()[0];
    for header in [v2_raw(0x20, 0x00, &[]), b"PROXY UNKNOWN\r\n".to_vec()] {
        let mut c = turn_over_tcp(tcp, &header, "health").await;
        assert_eq!(c.binding().await.unwrap(), c.local_addr().unwrap());
    }
    published_metrics(&server, "local headers counted", |m| {
        m.front.proxy_headers == [[0, 1], [0, 1]]
    })
    .await;
}

#[tokio::test]
async fn the_per_ip_cap_counts_the_proxied_client_not_the_proxy() {
    let (server, _pki) = server_from("\"127.0.0.1\"", "max-tcp-connections-per-ip = 1\n").await;
    let tcp = server.handle.tcp_addrs()[0];
    let mut first = turn_over_tcp(tcp, &v1(addr("192.0.2.20:1000"), tcp), "a").await;
    assert_eq!(first.binding().await.unwrap(), addr("192.0.2.20:1000"));
    // The same client through the proxy again: over its cap.
    let mut second = connect_with(tcp, &v2(addr("192.0.2.20:1001"))).await;
    assert!(
        closed_within(&mut second, WAIT).await,
        "second connection of 192.0.2.20"
    );
    // Another client through the same proxy (127.0.0.1 has two connections now).
    let mut other = turn_over_tcp(tcp, &v2(addr("192.0.2.21:1000")), "b").await;
    assert_eq!(other.binding().await.unwrap(), addr("192.0.2.21:1000"));
    assert_eq!(server.handle.metrics().connections_refused, 1);
    // Once the first is gone, its client may come back.
    drop(first);
    let mut again = None;
    for attempt in 0..50 {
        let mut c = turn_over_tcp(tcp, &v1(addr("192.0.2.20:1002"), tcp), "a").await;
        c.request_timeout = Duration::from_millis(500);
        if let Ok(mapped) = c.binding().await {
            again = Some((mapped, attempt));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mapped, _) = again.expect("192.0.2.20 connects again once its first connection closed");
    assert_eq!(mapped, addr("192.0.2.20:1002"));
}

#[tokio::test]
async fn a_proxy_source_without_a_header_is_closed() {
    let (server, pki) = server_from("\"127.0.0.1\"", "").await;
    // A Binding request where the header should be.
    let mut stun = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    stun.extend_from_slice(&[7; 12]);
    let mut s = connect_with(server.handle.tcp_addrs()[0], &stun).await;
    assert!(closed_within(&mut s, WAIT).await, "TCP without a header");
    // TLS without a header: the ClientHello is not a PROXY header.
    let tls = TcpStream::connect(server.handle.tls_addrs()[0])
        .await
        .unwrap();
    let handshake = tokio::time::timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(pki.client_config()).connect(server_name(), tls),
    )
    .await
    .expect("an answer in time");
    assert!(handshake.is_err(), "TLS without a header is refused");
    published_metrics(&server, "refusals counted", |m| {
        m.front.refusals(Refusal::ProxyMalformed) == 2
    })
    .await;
}

#[tokio::test]
async fn a_header_from_any_other_source_is_refused() {
    let (server, pki) = server_from("\"192.0.2.0/24\"", "").await;
    let tcp = server.handle.tcp_addrs()[0];
    for header in [v1(addr("192.0.2.30:1"), tcp), v2(addr("192.0.2.30:2"))] {
        let mut c = turn_over_tcp(tcp, &header, "spoof").await;
        c.request_timeout = Duration::from_millis(500);
        assert!(c.binding().await.is_err(), "no answer behind a header");
        let mut s = connect_with(tcp, &header).await;
        assert!(closed_within(&mut s, WAIT).await, "closed");
    }
    // Over TLS the header is no ClientHello.
    let tls = connect_with(server.handle.tls_addrs()[0], &v1(addr("192.0.2.30:3"), tcp)).await;
    let handshake = tokio::time::timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(pki.client_config()).connect(server_name(), tls),
    )
    .await
    .expect("an answer in time");
    assert!(handshake.is_err());
    // Clients without a header are served as before.
    let mut c = turn_over_tcp(tcp, &[], "plain").await;
    assert_eq!(c.binding().await.unwrap(), c.local_addr().unwrap());
    let m = published_metrics(&server, "refusals counted", |m| {
        m.front.refusals(Refusal::ProxyUntrusted) == 4
    })
    .await;
    assert_eq!(m.front.proxy_headers, [[0, 0], [0, 0]]);
}

#[tokio::test]
async fn malformed_truncated_and_oversized_headers_close_the_connection_only() {
    let (server, _pki) = server_from("\"127.0.0.1\"", "tcp-handshake-timeout = 1\n").await;
    let tcp = server.handle.tcp_addrs()[0];
    let mut long_v2 = v2_raw(0x21, 0x11, &[0; 12]);
    long_v2[14..16].copy_from_slice(&2000u16.to_be_bytes());
    let mut long_v1 = b"PROXY TCP4 ".to_vec();
    long_v1.resize(300, b'1');
    let malformed: [(&[u8], Refusal); 8] = [
        (
            b"PROXY TCP4 192.0.2.1 nonsense 1 2\r\n",
            Refusal::ProxyMalformed,
        ),
        (
            b"PROXY TCP5 192.0.2.1 192.0.2.2 1 2\r\n",
            Refusal::ProxyMalformed,
        ),
        (b"PROXY TCP4 ::1 ::1 1 2\r\n", Refusal::ProxyMalformed),
        (&v2_raw(0x31, 0x11, &[0; 12]), Refusal::ProxyMalformed),
        (&v2_raw(0x2f, 0x11, &[0; 12]), Refusal::ProxyMalformed),
        (&v2_raw(0x21, 0x11, &[0; 4]), Refusal::ProxyMalformed),
        (&long_v2, Refusal::ProxyTooLong),
        (&long_v1, Refusal::ProxyMalformed),
    ];
    for (header, _) in &malformed {
        let mut s = connect_with(tcp, header).await;
        assert!(closed_within(&mut s, WAIT).await, "{header:?}");
    }
    // Cut short, then silent, or closed by the client (the header was peeked, never
    // read: its end is not seen): both closed at the deadline.
    let truncated = v2(addr("192.0.2.40:1"));
    let mut silent = connect_with(tcp, &truncated[..20]).await;
    let mut cut = connect_with(tcp, &v1(addr("192.0.2.40:2"), tcp)[..15]).await;
    cut.shutdown().await.unwrap();
    assert!(
        closed_within(&mut silent, WAIT * 3).await,
        "truncated, silent"
    );
    assert!(closed_within(&mut cut, WAIT * 3).await, "truncated, closed");
    let m = published_metrics(&server, "refusals counted", |m| {
        m.front.refusals(Refusal::ProxyTimeout) == 2
    })
    .await;
    for why in [Refusal::ProxyMalformed, Refusal::ProxyTooLong] {
        let want = malformed.iter().filter(|(_, w)| *w == why).count() as u64;
        assert_eq!(m.front.refusals(why), want, "{why:?}");
    }
    assert_eq!(m.connections_open, 0);
    // The server is fine.
    let mut c = turn_over_tcp(tcp, &v2(addr("192.0.2.41:1")), "after").await;
    assert_eq!(c.binding().await.unwrap(), addr("192.0.2.41:1"));
}

#[tokio::test]
async fn a_header_before_the_client_hello_works_on_tls() {
    let (server, pki) = server_from("\"127.0.0.1\"", "").await;
    let port = server.handle.tls_addrs()[0];
    for (header, client) in [
        (v2(addr("203.0.113.5:5000")), addr("203.0.113.5:5000")),
        (v1(addr("203.0.113.6:5001"), port), addr("203.0.113.6:5001")),
    ] {
        let mut c = turn_over_tls(port, &header, pki.client_config(), "tls").await;
        assert_eq!(c.binding().await.unwrap(), client);
        relays(&mut c).await;
    }
}

#[tokio::test]
async fn behind_a_proxy_the_https_backend_gets_the_bytes_after_the_header() {
    let backend = https_backend().await;
    let (server, pki) = server_from(
        "\"127.0.0.1\"",
        &format!("https-backend = \"{}\"\n", backend.addr),
    )
    .await;
    let port = server.handle.tls_addrs()[0];
    let tcp = connect_with(port, &v2(addr("203.0.113.9:6000"))).await;
    let (cert, body) = https_get(
        tcp,
        https_client(&backend.cert, &[b"h2", b"http/1.1"]),
        "/p",
    )
    .await
    .expect("HTTPS behind a PROXY header");
    assert_eq!(cert, backend.cert);
    assert_eq!(body, "backend saw GET /p HTTP/1.1");
    // TURN beside it, behind the proxy too.
    let mut c = turn_over_tls(
        port,
        &v1(addr("203.0.113.10:6001"), port),
        pki.client_config(),
        "t",
    )
    .await;
    assert_eq!(c.binding().await.unwrap(), addr("203.0.113.10:6001"));
    // A header without anything after it, then silence: closed at the deadline as usual;
    // here the test only checks the server still answers meanwhile.
    let mut idle = connect_with(port, &v2(addr("203.0.113.11:6002"))).await;
    let mut probe = [0u8; 1];
    let quiet = tokio::time::timeout(Duration::from_millis(300), idle.read(&mut probe)).await;
    assert!(quiet.is_err(), "nothing is sent before the ClientHello");
    // The idle connection's header is counted once its shard has read it.
    let m = published_metrics(&server, "both headers counted", |m| {
        m.front.proxy_headers == [[1, 0], [2, 0]]
    })
    .await;
    assert_eq!(m.front.passed, 1);
}
