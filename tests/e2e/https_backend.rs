//! One TLS port for TURN and a website (`https-backend`): an HTTPS server with its own
//! self-signed certificate behind ferroturn's TLS port. Clients offering ALPN `h2` or
//! `http/1.1` reach it byte for byte and see ITS certificate; TURN clients (ALPN
//! `stun.turn`, or none) on the same port allocate and relay; a ClientHello that comes
//! late, never, or too long is dropped; a backend that is down closes the client's
//! connection and nothing else.

use crate::common::tls::{TestPki, server_name};
use crate::common::{
    SECRET, TestServer, WAIT, echo_peer, published_metrics, rest_credentials, start_server,
};
use ferroturn::client::{Relayed, TurnClient};
use ferroturn::control::Refusal;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout};

/// Connections an [`HttpsBackend`] serves before it stops accepting.
const BACKEND_CONNECTIONS: usize = 32;

/// An HTTPS server on 127.0.0.1 with a fresh self-signed certificate for `localhost`,
/// speaking HTTP/1.1: each request gets `200` with `backend saw <request line>`.
pub struct HttpsBackend {
    pub addr: SocketAddr,
    pub cert: CertificateDer<'static>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub async fn https_backend() -> HttpsBackend {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".into()])
        .expect("a self-signed certificate");
    let cert = generated.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        generated.signing_key.serialize_der(),
    ));
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .expect("a valid certificate and key");
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("backend address");
    let task = tokio::spawn(async move {
        for _ in 0..BACKEND_CONNECTIONS {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(Ok(mut tls)) = timeout(WAIT, acceptor.accept(tcp)).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
                    match timeout(WAIT, tls.read(&mut buf)).await {
                        Ok(Ok(n)) if n > 0 => request.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                let line = String::from_utf8_lossy(&request);
                let line = line.lines().next().unwrap_or_default();
                let body = format!("backend saw {line}");
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    HttpsBackend { addr, cert, task }
}

/// A browser-like HTTPS client trusting only `cert`, offering `alpn`.
pub fn https_client(cert: &CertificateDer<'static>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).expect("a valid trust anchor");
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Arc::new(cfg)
}

/// `GET path` over TLS on `tcp` (already connected, perhaps with a PROXY header sent):
/// the certificate the server presented and the response's body.
pub async fn https_get(
    tcp: TcpStream,
    cfg: Arc<rustls::ClientConfig>,
    path: &str,
) -> std::io::Result<(CertificateDer<'static>, String)> {
    let connector = tokio_rustls::TlsConnector::from(cfg);
    let name = ServerName::try_from("localhost").expect("a valid name");
    let exchange = async {
        let mut tls = connector.connect(name, tcp).await?;
        let cert = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first().cloned())
            .ok_or_else(|| std::io::Error::other("no peer certificate"))?;
        let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n");
        tls.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        // The backend closes after its answer (close_notify or not).
        let _ = tls.read_to_end(&mut response).await;
        let text = String::from_utf8_lossy(&response).into_owned();
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
        Ok::<_, std::io::Error>((cert, body))
    };
    timeout(WAIT * 2, exchange)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "HTTPS exchange"))?
}

/// Waits (bounded) until the server closes `s`: read returns 0 or an error.
pub async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match timeout(limit.saturating_sub(start.elapsed()), s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

async fn server_with_backend(backend: &str, extra: &str) -> (TestServer, TestPki) {
    let pki = TestPki::new();
    let toml = format!(
        "{}https-backend = \"{backend}\"\n{extra}",
        pki.server_toml()
    );
    (start_server(&toml).await, pki)
}

/// A TURN client over TLS with `cfg` (which says what ALPN it offers): allocates,
/// permits the echo peer and gets its data back.
async fn turn_relays(server: &TestServer, cfg: Arc<rustls::ClientConfig>, user: &str) {
    let peer = echo_peer().await;
    let (u, p) = rest_credentials(SECRET, user, Duration::from_secs(600));
    let addr = server.handle.tls_addrs()[0];
    let mut c = TurnClient::connect_tls(addr, server_name(), cfg, &u, &p)
        .await
        .expect("TURN over TLS on the shared port");
    c.allocate().await.expect("allocate");
    c.create_permission(&[peer.addr]).await.expect("permission");
    c.send_indication(peer.addr, b"through the shared port")
        .await
        .unwrap();
    assert_eq!(
        c.recv_relayed(WAIT).await.unwrap(),
        Some(Relayed::Indication {
            peer: peer.addr,
            data: b"through the shared port".to_vec()
        })
    );
}

#[tokio::test]
async fn https_clients_reach_the_backend_and_see_its_certificate() {
    let backend = https_backend().await;
    let (server, pki) = server_with_backend(&backend.addr.to_string(), "").await;
    let port = server.handle.tls_addrs()[0];
    let offers: [&[&[u8]]; 2] = [&[b"h2", b"http/1.1"], &[b"http/1.1"]];
    for alpn in offers {
        let tcp = TcpStream::connect(port).await.unwrap();
        let (cert, body) = https_get(tcp, https_client(&backend.cert, alpn), "/index.html")
            .await
            .unwrap_or_else(|e| panic!("HTTPS through the TURN port with {alpn:?}: {e}"));
        assert_eq!(cert, backend.cert, "the backend's own certificate");
        assert_ne!(cert, pki.server_der);
        assert_eq!(body, "backend saw GET /index.html HTTP/1.1");
    }
    let m = published_metrics(&server, "pass-through counted", |m| {
        m.front.passed == 2 && m.front.passed_open == 0
    })
    .await;
    assert!(m.front.passed_bytes[0] > 0 && m.front.passed_bytes[1] > 0);
    assert_eq!(m.front.backend_failed, 0);
}

#[tokio::test]
async fn turn_clients_on_the_shared_port_allocate_and_relay() {
    let backend = https_backend().await;
    let (server, pki) = server_with_backend(&backend.addr.to_string(), "").await;
    // ALPN stun.turn, and no ALPN at all (browsers' TURN clients).
    turn_relays(&server, pki.client_config(), "alpn").await;
    let mut bare = (*pki.client_config()).clone();
    bare.alpn_protocols.clear();
    turn_relays(&server, Arc::new(bare), "no-alpn").await;
    // Both: TURN wins.
    let mut both = (*pki.client_config()).clone();
    both.alpn_protocols = vec![b"h2".to_vec(), b"stun.turn".to_vec()];
    turn_relays(&server, Arc::new(both), "both").await;
    // And the website is still there.
    let tcp = TcpStream::connect(server.handle.tls_addrs()[0])
        .await
        .unwrap();
    let (cert, _) = https_get(tcp, https_client(&backend.cert, &[b"h2", b"http/1.1"]), "/")
        .await
        .unwrap();
    assert_eq!(cert, backend.cert);
    assert_eq!(server.handle.metrics().front.passed, 1);
}

#[tokio::test]
async fn a_late_or_missing_client_hello_is_dropped_at_the_deadline() {
    let backend = https_backend().await;
    let (server, _pki) =
        server_with_backend(&backend.addr.to_string(), "tcp-handshake-timeout = 1\n").await;
    let port = server.handle.tls_addrs()[0];
    let mut silent = TcpStream::connect(port).await.unwrap();
    // The first bytes of a ClientHello record, and nothing more.
    let mut partial = TcpStream::connect(port).await.unwrap();
    partial
        .write_all(&[0x16, 3, 1, 0, 200, 1, 0])
        .await
        .unwrap();
    assert!(
        closed_within(&mut silent, WAIT * 3).await,
        "silent connection"
    );
    assert!(
        closed_within(&mut partial, WAIT * 3).await,
        "partial ClientHello"
    );
    let m = published_metrics(&server, "timeouts counted", |m| {
        m.front.refusals(Refusal::HelloTimeout) == 2
    })
    .await;
    assert_eq!(m.connections_open, 0);
    assert_eq!(m.front.passed, 0);
    // Nothing else was hurt.
    let tcp = TcpStream::connect(port).await.unwrap();
    let (cert, _) = https_get(tcp, https_client(&backend.cert, &[b"http/1.1"]), "/")
        .await
        .unwrap();
    assert_eq!(cert, backend.cert);
}

#[tokio::test]
async fn an_oversized_or_invalid_client_hello_is_dropped() {
    let backend = https_backend().await;
    let (server, pki) = server_with_backend(&backend.addr.to_string(), "").await;
    let port = server.handle.tls_addrs()[0];
    // A handshake record of 16 KiB announcing a ClientHello that fills it, sent whole
    // and more: the bound is reached before it is complete.
    let mut big = vec![0x16, 3, 1, 0x40, 0x00, 1, 0, 0x3f, 0xfc, 3, 3];
    big.resize(20_000, 0x41);
    let mut s = TcpStream::connect(port).await.unwrap();
    // The server may close while this is still being written.
    let _ = s.write_all(&big).await;
    assert!(
        closed_within(&mut s, WAIT * 3).await,
        "oversized ClientHello"
    );
    // Plain HTTP on the TLS port.
    let mut s = TcpStream::connect(port).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(closed_within(&mut s, WAIT * 3).await, "not TLS");
    let m = published_metrics(&server, "refusals counted", |m| {
        m.front.refusals(Refusal::HelloTooLong) == 1 && m.front.refusals(Refusal::HelloInvalid) == 1
    })
    .await;
    assert_eq!(m.front.passed, 0);
    turn_relays(&server, pki.client_config(), "after").await;
}

#[tokio::test]
async fn a_backend_that_is_down_closes_the_connection_and_nothing_else() {
    // A port nothing listens on.
    let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let down = free.local_addr().unwrap();
    drop(free);
    let (server, pki) = server_with_backend(&down.to_string(), "").await;
    let port = server.handle.tls_addrs()[0];
    let backend = https_backend().await;
    let tcp = TcpStream::connect(port).await.unwrap();
    let result = https_get(tcp, https_client(&backend.cert, &[b"h2"]), "/").await;
    assert!(result.is_err(), "no backend, no handshake: {result:?}");
    let m = published_metrics(&server, "backend failure counted", |m| {
        m.front.backend_failed == 1 && m.front.passed_open == 0
    })
    .await;
    assert_eq!(m.connections_open, 0);
    turn_relays(&server, pki.client_config(), "still-serving").await;
}
