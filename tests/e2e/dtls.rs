//! End to end over DTLS (RFC 7350): a server on 127.0.0.1:0 with a TLS port (a private
//! test CA) whose UDP side speaks DTLS 1.2, our TURN client over it, a UDP echo peer.
//! Every record carries one STUN message or ChannelData, as a UDP datagram would; the
//! session is the allocation's 5-tuple, so the allocation ends with it.

use crate::common::dtls_wire::{client_hello, hello_verify_cookie};
use crate::common::tls::TestPki;
use crate::common::{
    QUIET, SECRET, TestServer, WAIT, echo_peer, published_metrics, rest_credentials, start_server,
};
use ferroturn::client::{Relayed, TurnClient, dtls_handshake};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::UdpSocket;

async fn dtls_server(extra: &str) -> (TestServer, TestPki) {
    let pki = TestPki::new();
    let server = start_server(&format!("{}{extra}", pki.server_toml())).await;
    (server, pki)
}

async fn connect(server: &TestServer, pki: &TestPki, user: &str) -> TurnClient {
    let (u, p) = rest_credentials(SECRET, user, Duration::from_secs(600));
    let addr = server.handle.dtls_addrs()[0];
    TurnClient::connect_dtls(addr, &pki.dtls_client_context(), &u, &p)
        .await
        .expect("DTLS handshake")
}

/// The certificate a new DTLS handshake with `addr` is shown.
async fn presented_certificate(pki: &TestPki, addr: SocketAddr) -> Vec<u8> {
    let (_, session) = dtls_handshake(addr, &pki.dtls_client_context())
        .await
        .expect("DTLS handshake");
    session.peer_certificate().expect("a server certificate")
}

#[tokio::test]
async fn dtls_allocate_permissions_channels_relay_both_ways() {
    let (server, pki) = dtls_server("").await;
    let addr = server.handle.dtls_addrs()[0];
    assert_eq!(
        addr,
        server.handle.tls_addrs()[0],
        "DTLS is the UDP side of the TLS port"
    );
    let peer = echo_peer().await;
    let mut c = connect(&server, &pki, "alice").await;
    assert_eq!(c.transport_name(), "dtls");
    assert_eq!(c.binding().await.unwrap(), c.local_addr().unwrap());
    let relayed = c.allocate().await.unwrap();
    assert_eq!(relayed.ip().to_string(), "127.0.0.1");

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
            "indication of {size} bytes"
        );
    }
    c.channel_bind(0x4001, peer.addr).await.unwrap();
    // Odd sizes: over DTLS, as over UDP, ChannelData is not padded.
    for size in [0usize, 1, 3, 5, 1200, 8000] {
        let payload: Vec<u8> = (0..size).map(|i| (i * 13) as u8).collect();
        c.send_channel_data(0x4001, &payload).await.unwrap();
        assert_eq!(
            c.recv_relayed(WAIT).await.unwrap(),
            Some(Relayed::Channel {
                channel: 0x4001,
                data: payload
            }),
            "ChannelData of {size} bytes"
        );
    }
    let m = published_metrics(&server, "the DTLS traffic", |m| {
        m.stats.relayed[2][1].packets >= 11
    })
    .await;
    assert_eq!(m.dtls_sessions, 1, "{m:?}");
    assert!(m.dtls_handshakes_done >= 1, "{m:?}");
    assert_eq!(m.dtls_handshakes_failed, 0, "{m:?}");
    assert!(
        m.dtls_hello_verify >= 1,
        "every session starts with a cookie exchange"
    );
    assert_eq!(
        m.stats.relayed[2][0].packets, 11,
        "client to peer over DTLS"
    );
    assert_eq!(
        m.stats.relayed[0][0].packets, 0,
        "nothing counted as plain UDP"
    );

    // close_notify ends the session, and the allocation with it (RFC 8656 section 3.1:
    // its 5-tuple is gone).
    c.shutdown().await.unwrap();
    let m = published_metrics(&server, "the allocation's end", |m| {
        m.gauges.allocations == 0
    })
    .await;
    assert_eq!(m.dtls_sessions, 0, "{m:?}");
    assert_eq!(
        m.connections_open, 0,
        "the session's connection slot is back"
    );
}

#[tokio::test]
async fn no_dtls_leaves_the_udp_side_of_the_tls_port_unanswered() {
    let hello = client_hello(0, 0, [3; 32], &[]);
    // The control: with DTLS on, this ClientHello gets a HelloVerifyRequest.
    let (server, _pki) = dtls_server("").await;
    let probe = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    probe
        .send_to(&hello, server.handle.tls_addrs()[0])
        .await
        .unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = tokio::time::timeout(WAIT, probe.recv_from(&mut buf))
        .await
        .expect("a HelloVerifyRequest")
        .unwrap();
    assert!(hello_verify_cookie(&buf[..n]).is_some());
    drop(server);

    let (server, _pki) = dtls_server("no-dtls = true\n").await;
    assert!(server.handle.dtls_addrs().is_empty());
    let tls = server.handle.tls_addrs()[0];
    // TLS itself still serves.
    assert!(std::net::TcpStream::connect(tls).is_ok());
    probe.send_to(&hello, tls).await.unwrap();
    // Nothing answers: no datagram (a closed port may answer with ICMP, which the socket
    // reports as an error).
    match tokio::time::timeout(QUIET, probe.recv_from(&mut buf)).await {
        Err(_) => {}
        Ok(Err(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused),
        Ok(Ok((n, from))) => panic!("{n} bytes from {from} with no-dtls"),
    }
}

#[tokio::test]
async fn dtls_reload_serves_the_new_certificate_to_new_handshakes() {
    let (server, mut pki) = dtls_server("").await;
    let addr = server.handle.dtls_addrs()[0];
    let first = pki.server_der.to_vec();
    assert_eq!(presented_certificate(&pki, addr).await, first);

    let peer = echo_peer().await;
    let mut c = connect(&server, &pki, "carol").await;
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
    // The session made before the reload keeps relaying.
    c.send_channel_data(0x4002, b"after reload").await.unwrap();
    assert_eq!(
        c.recv_relayed(WAIT).await.unwrap(),
        Some(Relayed::Channel {
            channel: 0x4002,
            data: b"after reload".to_vec()
        })
    );
}

/// RFC 6347 section 4.2.4: when the server's last flight (ChangeCipherSpec, Finished) is
/// lost, the client repeats its own, here in one datagram that starts with an epoch-0
/// handshake record (ClientKeyExchange); the established session takes it (it is not a
/// ClientHello for the cookie gate) and answers with its last flight again, and the
/// handshake completes.
#[tokio::test]
async fn a_lost_final_flight_is_sent_again() {
    let (server, pki) = dtls_server("").await;
    let addr = server.handle.dtls_addrs()[0];
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let ssl = openssl::ssl::Ssl::new(&pki.dtls_client_context()).unwrap();
    let mut session = ferroturn::dtls::Session::connect(ssl, addr.ip()).unwrap();
    let (mut dropped, mut repeated) = (0, false);
    let mut buf = vec![0u8; 65_536];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !session.is_established() {
        assert!(tokio::time::Instant::now() < deadline, "no handshake");
        // Each flight in one datagram (records back to back, as many clients send them),
        // so the repeated flight arrives as one datagram starting with a handshake
        // record in epoch 0.
        let flight: Vec<u8> = session.outbox().flatten().copied().collect();
        session.clear_outbox();
        if !flight.is_empty() {
            socket.send_to(&flight, addr).await.unwrap();
        }
        match tokio::time::timeout(Duration::from_millis(200), socket.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => {
                let d = &buf[..n];
                // The server's last flight: ChangeCipherSpec, or anything in epoch 1.
                let last_flight = d.first() == Some(&20) || d.get(3..5) != Some(&[0, 0]);
                if last_flight && !repeated {
                    dropped += 1;
                    continue;
                }
                session.handle_datagram(d).unwrap();
            }
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => {
                session.handle_timeout().unwrap();
                repeated |= dropped > 0 && session.has_outbox();
            }
        }
    }
    assert!(dropped > 0, "the server's last flight was never seen");
    assert!(repeated, "the client did not repeat its flight");
    published_metrics(&server, "the completed handshake", |m| {
        m.dtls_handshakes_done == 1 && m.dtls_sessions == 1
    })
    .await;
}

/// An operator's RSA certificate (2048-bit key, PKCS#8 PEM, self-signed for 127.0.0.1;
/// the test CA's are ECDSA P-256) serves DTLS as well as TLS: the client verifies it and
/// allocates.
#[tokio::test]
async fn dtls_serves_an_rsa_certificate() {
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
    use openssl::x509::{X509Builder, X509NameBuilder};

    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "ferroturn RSA test")
        .unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    let serial = BigNum::from_u32(7).unwrap().to_asn1_integer().unwrap();
    b.set_serial_number(&serial).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    let san = SubjectAlternativeName::new()
        .ip("127.0.0.1")
        .build(&b.x509v3_context(None, None))
        .unwrap();
    b.append_extension(san).unwrap();
    b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    let cert = b.build();

    let dir = crate::common::process::TempDir::new("rsa");
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.to_pem().unwrap()).unwrap();
    std::fs::write(&key_path, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let server = start_server(&format!(
        "tls-listening-port = 0\ncert = \"{}\"\npkey = \"{}\"\n",
        cert_path.display(),
        key_path.display()
    ))
    .await;
    let ctx = ferroturn::dtls::client_context(&cert.to_pem().unwrap()).unwrap();
    let (u, p) = rest_credentials(SECRET, "rsa", Duration::from_secs(600));
    let mut c = TurnClient::connect_dtls(server.handle.dtls_addrs()[0], &ctx, &u, &p)
        .await
        .expect("a DTLS handshake with the RSA certificate");
    c.allocate().await.expect("an allocation over DTLS");
}
