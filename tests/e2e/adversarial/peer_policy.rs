//! Every spelling of a denied address, on every relay path: the peer policy against
//! coturn's advisories, cloud metadata, this host's services, and a denied peer hidden
//! among allowed ones.

use super::*;

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
