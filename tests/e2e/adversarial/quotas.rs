//! Quotas and caps: per user, per server, per allocation (permissions, channels, new
//! peers, bandwidth), relay ports.

use super::*;

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
    // The bucket starts refilling at the first new peer, not before this.
    let refilling = std::time::Instant::now();
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
    // One token back (1.2 s at 1/s), not two; two only if this machine took 2 s or more
    // since the bucket began to refill.
    match c.create_permission(&[peer(3), peer(4)]).await {
        Err(ClientError::Error(508)) => {}
        other => {
            let waited = refilling.elapsed();
            assert!(
                waited >= Duration::from_millis(1900),
                "two tokens back after {waited:?}: {other:?}"
            );
            return;
        }
    }
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
