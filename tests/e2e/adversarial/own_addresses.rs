//! The server's own addresses: its listeners, its public address, and a relayed address
//! that outlived its allocation.

use super::*;

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
