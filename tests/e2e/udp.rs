//! End to end over real sockets: a server on 127.0.0.1:0, our TURN client, a UDP echo
//! peer.

use crate::common::{
    QUIET, SECRET, WAIT, client, code, echo_peer, echo_peer_on, rest_credentials, start_server,
    unix_now,
};
use ferroturn::client::{Relayed, TurnClient};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::UdpSocket;

#[tokio::test]
async fn binding_reflects_the_client_address() {
    let server = start_server("").await;
    let mut c = client(&server, "alice").await;
    assert_eq!(c.binding().await.unwrap(), c.local_addr().unwrap());
}

#[tokio::test]
async fn send_and_data_indications_round_trip_through_an_echo_peer() {
    let server = start_server("").await;
    let peer = echo_peer().await;
    let mut c = client(&server, "alice").await;
    let relayed = c.allocate().await.unwrap();
    assert_eq!(relayed.ip().to_string(), "127.0.0.1");
    c.create_permission(&[peer.addr]).await.unwrap();
    for size in [1usize, 3, 200, 1200, 8000] {
        let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
        c.send_indication(peer.addr, &payload).await.unwrap();
        let got = c.recv_relayed(WAIT).await.unwrap();
        assert_eq!(
            got,
            Some(Relayed::Indication {
                peer: peer.addr,
                data: payload
            }),
            "size {size}"
        );
    }
}

#[tokio::test]
async fn channel_data_round_trips_through_an_echo_peer() {
    let server = start_server("").await;
    let peer = echo_peer().await;
    let mut c = client(&server, "alice").await;
    c.allocate().await.unwrap();
    c.channel_bind(0x4001, peer.addr).await.unwrap();
    for size in [0usize, 1, 5, 1200] {
        let payload = vec![0x5A; size];
        c.send_channel_data(0x4001, &payload).await.unwrap();
        let got = c.recv_relayed(WAIT).await.unwrap();
        assert_eq!(
            got,
            Some(Relayed::Channel {
                channel: 0x4001,
                data: payload
            }),
            "size {size}"
        );
    }
    // ChannelData on an unbound channel is dropped.
    c.send_channel_data(0x4002, b"lost").await.unwrap();
    assert_eq!(c.recv_relayed(QUIET).await.unwrap(), None);
}

#[tokio::test]
async fn peers_without_permission_are_not_relayed() {
    let server = start_server("").await;
    let peer = echo_peer().await;
    let mut c = client(&server, "alice").await;
    let relayed = c.allocate().await.unwrap();
    // Without a permission the Send indication is dropped...
    c.send_indication(peer.addr, b"no permission")
        .await
        .unwrap();
    assert_eq!(c.recv_relayed(QUIET).await.unwrap(), None);
    // ...and so is a datagram a stranger sends to the relayed address.
    let stranger = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    stranger.send_to(b"unsolicited", relayed).await.unwrap();
    assert_eq!(c.recv_relayed(QUIET).await.unwrap(), None);
    // A permission for the stranger's IP lets it through (permissions ignore the port).
    c.create_permission(&[stranger.local_addr().unwrap()])
        .await
        .unwrap();
    stranger.send_to(b"now allowed", relayed).await.unwrap();
    let got = c.recv_relayed(WAIT).await.unwrap();
    assert_eq!(
        got,
        Some(Relayed::Indication {
            peer: stranger.local_addr().unwrap(),
            data: b"now allowed".to_vec()
        })
    );
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_401() {
    let server = start_server("user = [\"bob:hunter2\"]").await;
    let (u, p) = rest_credentials(SECRET, "alice", Duration::from_secs(600));
    let mut c = TurnClient::new(server.addr, &u, &format!("{p}x"))
        .await
        .unwrap();
    assert_eq!(code(c.allocate().await), 401);
    let mut c = TurnClient::new(server.addr, "mallory", "pw").await.unwrap();
    assert_eq!(code(c.allocate().await), 401);
    let mut c = TurnClient::new(server.addr, "bob", "wrong").await.unwrap();
    assert_eq!(code(c.allocate().await), 401);
    // The static user and a REST user work side by side.
    let mut c = TurnClient::new(server.addr, "bob", "hunter2")
        .await
        .unwrap();
    c.allocate().await.unwrap();
    let mut c = TurnClient::new(server.addr, &u, &p).await.unwrap();
    c.allocate().await.unwrap();
}

#[tokio::test]
async fn expired_rest_credentials_are_refused() {
    let server = start_server("").await;
    let now = unix_now();
    let (u, p) = ferroturn::credentials::rest_credentials(SECRET, "alice", now - 10, ':');
    let mut c = TurnClient::new(server.addr, &u, &p).await.unwrap();
    assert_eq!(code(c.allocate().await), 401);
    let (u, p) = ferroturn::credentials::rest_credentials("other-secret", "alice", now + 600, ':');
    let mut c = TurnClient::new(server.addr, &u, &p).await.unwrap();
    assert_eq!(code(c.allocate().await), 401);
}

#[tokio::test]
async fn a_second_user_on_the_same_five_tuple_gets_441_and_changes_nothing() {
    let server = start_server("").await;
    let peer = echo_peer().await;
    let mut c = client(&server, "alice").await;
    c.allocate().await.unwrap();
    c.create_permission(&[peer.addr]).await.unwrap();
    let (u, p) = rest_credentials(SECRET, "eve", Duration::from_secs(600));
    c.set_credentials(&u, &p);
    assert_eq!(code(c.refresh(0).await), 441);
    // RFC 8656 section 7.2: an Allocate on a 5-tuple in use is 437, whoever sends it.
    assert_eq!(code(c.allocate().await), 437);
    // Alice's allocation still relays.
    c.send_indication(peer.addr, b"still mine").await.unwrap();
    assert!(matches!(
        c.recv_relayed(WAIT).await.unwrap(),
        Some(Relayed::Indication { .. })
    ));
}

#[tokio::test]
async fn refresh_zero_deletes_and_the_allocation_expires() {
    let server = start_server("").await;
    let mut c = client(&server, "alice").await;
    c.allocate().await.unwrap();
    assert_eq!(c.refresh(1200).await.unwrap(), 1200);
    assert_eq!(c.refresh(0).await.unwrap(), 0);
    assert_eq!(code(c.refresh(600).await), 437);
    // A new allocation on the same 5-tuple works after deletion.
    c.allocate().await.unwrap();
}

#[tokio::test]
async fn allocations_and_permissions_expire() {
    let server = start_server(
        "default-allocate-lifetime = 2\nmax-allocate-lifetime = 2\npermission-lifetime = 1\nchannel-lifetime = 1",
    )
    .await;
    let peer = echo_peer().await;
    let mut c = client(&server, "alice").await;
    c.allocate().await.unwrap();
    c.create_permission(&[peer.addr]).await.unwrap();
    c.send_indication(peer.addr, b"before").await.unwrap();
    assert!(c.recv_relayed(WAIT).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(1300)).await;
    // The permission has expired: nothing goes through.
    c.send_indication(peer.addr, b"after").await.unwrap();
    assert_eq!(c.recv_relayed(QUIET).await.unwrap(), None);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // The allocation has expired too.
    assert_eq!(code(c.create_permission(&[peer.addr]).await), 437);
}

#[tokio::test]
async fn loopback_peers_are_refused_by_default_but_relays_reach_each_other() {
    let server = start_server("allowed-peer-ip = []").await;
    let peer = echo_peer().await;
    let mut a = client(&server, "alice").await;
    let mut b = client(&server, "bob").await;
    let ra = a.allocate().await.unwrap();
    let rb = b.allocate().await.unwrap();
    // Loopback, in any spelling, and the server's own listener are refused.
    assert_eq!(code(a.create_permission(&[peer.addr]).await), 403);
    let mapped: SocketAddr = format!("[::ffff:127.0.0.1]:{}", peer.addr.port())
        .parse()
        .unwrap();
    assert_eq!(code(a.create_permission(&[mapped]).await), 443);
    assert_eq!(code(a.create_permission(&[server.addr]).await), 403);
    assert_eq!(code(a.channel_bind(0x4000, peer.addr).await), 403);
    // Another allocation's relayed address on this server is reachable.
    a.channel_bind(0x4000, rb).await.unwrap();
    b.channel_bind(0x4000, ra).await.unwrap();
    a.send_channel_data(0x4000, b"hello b").await.unwrap();
    assert_eq!(
        b.recv_relayed(WAIT).await.unwrap(),
        Some(Relayed::Channel {
            channel: 0x4000,
            data: b"hello b".to_vec()
        })
    );
    b.send_channel_data(0x4000, b"hello a").await.unwrap();
    assert_eq!(
        a.recv_relayed(WAIT).await.unwrap(),
        Some(Relayed::Channel {
            channel: 0x4000,
            data: b"hello a".to_vec()
        })
    );
}

#[tokio::test]
async fn garbage_is_dropped_and_the_next_request_is_served() {
    let server = start_server("").await;
    let mut c = client(&server, "alice").await;
    let junk: [&[u8]; 6] = [
        b"",
        b"\x00",
        b"\x00\x01\x00\x00\x21\x12\xa4\x42",
        b"\x00\x01\xff\xfc\x21\x12\xa4\x42abcdefghijkl",
        b"\x40\x00\xff\xff\x01\x02\x03",
        &[0xFF; 1500],
    ];
    for j in junk {
        c.send_raw(j).await.unwrap();
    }
    assert_eq!(c.binding().await.unwrap(), c.local_addr().unwrap());
    c.allocate().await.unwrap();
}

#[tokio::test]
async fn ipv6_relay_over_ipv6_loopback() {
    let relays = "relay-ip = [\"127.0.0.1\", \"::1\"]\nallowed-peer-ip = [\"::1\", \"127.0.0.1\"]";
    let server = start_server(&format!("listening-ip = [\"::1\"]\n{relays}")).await;
    assert!(server.addr.is_ipv6());
    let peer = echo_peer_on("[::1]:0").await;
    let peer_addr = peer.addr;
    let mut c = client(&server, "alice").await;
    // RFC 8656 section 7.2 (formerly RFC 6156): REQUESTED-ADDRESS-FAMILY picks the relay.
    let relayed = c
        .allocate_with(&[
            ferroturn::client::codec::RequestAttr::RequestedTransport(17),
            ferroturn::client::codec::RequestAttr::RequestedFamily(
                ferroturn_core::proto::Family::V6,
            ),
        ])
        .await
        .unwrap();
    assert_eq!(relayed.ip().to_string(), "::1");
    c.channel_bind(0x4000, peer_addr).await.unwrap();
    c.send_channel_data(0x4000, b"over ipv6").await.unwrap();
    assert_eq!(
        c.recv_relayed(WAIT).await.unwrap(),
        Some(Relayed::Channel {
            channel: 0x4000,
            data: b"over ipv6".to_vec()
        })
    );
    // An IPv4 client on the same server gets an IPv4 relay by default.
    let v4 = start_server(&format!(
        "listening-ip = [\"127.0.0.1\", \"::1\"]\n{relays}"
    ))
    .await;
    let mut c4 = client(&v4, "bob").await;
    assert!(c4.allocate().await.unwrap().is_ipv4());
}

/// With several shards the kernel spreads client 5-tuples across them: a nonce issued by
/// one shard is accepted by every other, quotas and the own-address policy are shared,
/// and relays of different shards reach each other.
#[tokio::test]
async fn shards_share_nonces_quotas_and_relayed_addresses() {
    const CLIENTS: usize = 24;
    let server = start_server(&format!(
        "allowed-peer-ip = []\nrelay-threads = 2\nmin-port = 50000\nmax-port = 50999\n\
         user-quota = {CLIENTS}"
    ))
    .await;
    let mut first = client(&server, "alice").await;
    let mut relayed = vec![first.allocate().await.unwrap()];
    let (realm, nonce) = first
        .realm_and_nonce()
        .map(|(r, n)| (r.to_owned(), n.to_owned()))
        .unwrap();
    let mut clients = vec![first];
    for _ in 1..CLIENTS {
        let mut c = client(&server, "alice").await;
        c.set_realm_and_nonce(&realm, &nonce);
        relayed.push(c.allocate().await.unwrap());
        assert_eq!(
            c.challenges, 0,
            "a nonce from another 5-tuple (maybe shard) was refused"
        );
        clients.push(c);
    }
    // Shard 0 relays from 50000-50499, shard 1 from 50500-50999 (2^-23 odds of one shard).
    assert!(relayed.iter().any(|r| r.port() < 50500) && relayed.iter().any(|r| r.port() >= 50500));
    // The user quota counts across shards.
    let mut over = client(&server, "alice").await;
    assert_eq!(code(over.allocate().await), 486);
    // Every client reaches the next one's relayed address, whatever shard owns it.
    for i in 0..CLIENTS {
        let next = (i + 1) % CLIENTS;
        clients[i]
            .channel_bind(0x4000, relayed[next])
            .await
            .unwrap();
        clients[next]
            .create_permission(&[relayed[i]])
            .await
            .unwrap();
    }
    for i in 0..CLIENTS {
        let next = (i + 1) % CLIENTS;
        let msg = format!("from {i}");
        clients[i]
            .send_channel_data(0x4000, msg.as_bytes())
            .await
            .unwrap();
        let got = clients[next].recv_relayed(WAIT).await.unwrap();
        // `next` has its own channel bound to another peer, so this arrives as a Data
        // indication from i's relayed address.
        assert_eq!(
            got,
            Some(Relayed::Indication {
                peer: relayed[i],
                data: msg.into_bytes()
            }),
            "to client {next}"
        );
    }
}

/// With a wildcard listener every answer and every relayed datagram toward a client
/// leaves from the local address the client sent to: a client whose socket is connected
/// to 127.0.0.3 (so the kernel drops anything from another source, as a NAT or firewall
/// would) gets its Binding answer, its allocation and its relayed data, and so does one
/// connected to 127.0.0.1, on the same listener and the same port.
#[tokio::test]
async fn a_wildcard_listener_answers_from_the_address_each_client_used() {
    let server =
        start_server("listening-ip = [\"0.0.0.0\"]\nrelay-ip = [\"127.0.0.1\"]\nrelay-threads = 1")
            .await;
    let port = server.addr.port();
    assert!(server.addr.ip().is_unspecified(), "{}", server.addr);
    // One peer behind a channel, one reached with Send and Data indications.
    let (peer, other) = (echo_peer().await, echo_peer().await);
    for local in ["127.0.0.1", "127.0.0.3"] {
        let to = SocketAddr::new(local.parse().unwrap(), port);
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.connect(to).await.unwrap();
        let me = socket.local_addr().unwrap();
        let (u, p) = rest_credentials(SECRET, "alice", Duration::from_secs(600));
        let mut c = TurnClient::with_socket(socket, to, &u, &p);
        assert_eq!(c.binding().await.unwrap(), me, "Binding via {local}");
        c.allocate().await.expect("allocation");
        c.channel_bind(0x4001, peer.addr).await.unwrap();
        c.send_channel_data(0x4001, local.as_bytes()).await.unwrap();
        assert_eq!(
            c.recv_relayed(WAIT).await.unwrap(),
            Some(Relayed::Channel {
                channel: 0x4001,
                data: local.as_bytes().to_vec()
            }),
            "ChannelData back via {local}"
        );
        c.create_permission(&[other.addr]).await.unwrap();
        c.send_indication(other.addr, b"indication").await.unwrap();
        assert_eq!(
            c.recv_relayed(WAIT).await.unwrap(),
            Some(Relayed::Indication {
                peer: other.addr,
                data: b"indication".to_vec()
            }),
            "Data indication via {local}"
        );
    }
}

/// RFC 8656 sections 18.7 and 18.10 across shards: the Allocate carrying a
/// RESERVATION-TOKEN comes from another client port, which SO_REUSEPORT may hand to the
/// other shard; it gets the reserved port all the same, relays through it, and the
/// token is good once. Eight pairs make a claim on the other shard all but certain.
#[tokio::test]
async fn reserved_ports_are_claimed_from_any_shard_and_relay() {
    use ferroturn::client::codec::RequestAttr;
    use ferroturn_core::proto::wire::method;
    let server = start_server("relay-threads = 2").await;
    let peer = echo_peer().await;
    // One challenge, its nonce reused by every client after (nonces are good at every
    // shard): 24 unauthenticated requests from 127.0.0.1 would meet
    // `unauthenticated-rate`.
    let mut first = client(&server, "alice").await;
    first.allocate().await.unwrap();
    let (realm, nonce) = first
        .realm_and_nonce()
        .map(|(r, n)| (r.to_owned(), n.to_owned()))
        .unwrap();
    let fresh = || async {
        let mut c = client(&server, "alice").await;
        c.set_realm_and_nonce(&realm, &nonce);
        c
    };
    for i in 0..8u16 {
        let mut rtp = fresh().await;
        let r = rtp
            .request(
                method::ALLOCATE,
                &[
                    RequestAttr::RequestedTransport(17),
                    RequestAttr::EvenPort(true),
                ],
            )
            .await
            .unwrap();
        let port = r.xor_relayed.unwrap().port();
        assert_eq!(port % 2, 0);
        let token = r.reservation_token.expect("a RESERVATION-TOKEN");

        let mut rtcp = fresh().await;
        let claim = [
            RequestAttr::RequestedTransport(17),
            RequestAttr::ReservationToken(token),
        ];
        let r = rtcp.request(method::ALLOCATE, &claim).await.unwrap();
        assert_eq!(r.xor_relayed.unwrap().port(), port + 1, "pair {i}");
        let channel = 0x4000 + i;
        rtcp.channel_bind(channel, peer.addr).await.unwrap();
        rtcp.send_channel_data(channel, b"rtcp").await.unwrap();
        assert_eq!(
            rtcp.recv_relayed(WAIT).await.unwrap(),
            Some(Relayed::Channel {
                channel,
                data: b"rtcp".to_vec()
            }),
            "pair {i}"
        );
        let mut third = fresh().await;
        assert_eq!(code(third.request(method::ALLOCATE, &claim).await), 508);
    }
}

/// RFC 8656 section 7.2 (ADDITIONAL-ADDRESS-FAMILY): one dual allocation on a server
/// listening on 127.0.0.1 and ::1 relays to an IPv4 and an IPv6 peer, both ways, by Send
/// indications and by channels: each peer hears the client from the relayed address of
/// its own family, and what either sends to its relayed address reaches the client.
/// Refresh 0 closes both relays.
#[tokio::test]
async fn a_dual_allocation_relays_to_an_ipv4_and_an_ipv6_peer_both_ways() {
    let server = start_server(
        "listening-ip = [\"127.0.0.1\", \"::1\"]\nallowed-peer-ip = [\"127.0.0.1\", \"::1\"]",
    )
    .await;
    let mut c = client(&server, "alice").await;
    let relayed = c.allocate_dual().await.unwrap();
    assert_eq!(relayed.len(), 2, "{relayed:?}");
    let (v4, v6) = (relayed[0], relayed[1]);
    assert_eq!(v4.ip().to_string(), "127.0.0.1");
    assert_eq!(v6.ip().to_string(), "::1");
    let p4 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let p6 = UdpSocket::bind("[::1]:0").await.unwrap();
    let (a4, a6) = (p4.local_addr().unwrap(), p6.local_addr().unwrap());
    c.create_permission(&[a4, a6]).await.unwrap();

    for (peer, addr, relay) in [(&p4, a4, v4), (&p6, a6, v6)] {
        c.send_indication(addr, b"by indication").await.unwrap();
        assert_eq!(
            recv_on(peer).await,
            (b"by indication".to_vec(), relay),
            "{addr}"
        );
        peer.send_to(b"indicated back", relay).await.unwrap();
        assert_eq!(
            c.recv_relayed(WAIT).await.unwrap(),
            Some(Relayed::Indication {
                peer: addr,
                data: b"indicated back".to_vec()
            })
        );
    }
    for (channel, peer, addr, relay) in [(0x4000, &p4, a4, v4), (0x4001, &p6, a6, v6)] {
        c.channel_bind(channel, addr).await.unwrap();
        c.send_channel_data(channel, b"on a channel").await.unwrap();
        assert_eq!(recv_on(peer).await, (b"on a channel".to_vec(), relay));
        peer.send_to(b"channel back", relay).await.unwrap();
        assert_eq!(
            c.recv_relayed(WAIT).await.unwrap(),
            Some(Relayed::Channel {
                channel,
                data: b"channel back".to_vec()
            })
        );
    }

    c.refresh(0).await.unwrap();
    p4.send_to(b"after", v4).await.unwrap();
    p6.send_to(b"after", v6).await.unwrap();
    assert_eq!(c.recv_relayed(QUIET).await.unwrap(), None);
}

/// The next datagram on `peer` and where it came from, within [`WAIT`].
async fn recv_on(peer: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = [0u8; 2048];
    let (n, from) = tokio::time::timeout(WAIT, peer.recv_from(&mut buf))
        .await
        .expect("the peer hears the relay")
        .unwrap();
    (buf[..n].to_vec(), from)
}
