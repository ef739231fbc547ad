//! TCP allocations (RFC 6062) as an open TCP proxy: Connect toward denied addresses
//! (loopback, private, metadata, the server's own addresses, in IPv6 spellings too),
//! another user's CONNECTION-ID, guessed ids, and more connections than an allocation
//! may hold. Where a test claims that no connection was made, a listener waits on the
//! address, and a control server that allows it connects there with the very same
//! request.

use super::*;
use crate::common::{TestServer, published_metrics};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// A TCP listener on 127.0.0.1 and ::1 with the same port: where a refused Connect must
/// not arrive.
struct TcpTarget {
    v4: TcpListener,
    v6: TcpListener,
    port: u16,
}

impl TcpTarget {
    async fn new() -> Self {
        for _ in 0..64 {
            let v4 = TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind 127.0.0.1");
            let port = v4.local_addr().expect("address").port();
            if let Ok(v6) = TcpListener::bind(("::1", port)).await {
                return Self { v4, v6, port };
            }
        }
        panic!("no TCP port free on both 127.0.0.1 and ::1");
    }

    fn at(&self, ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().expect("test IP"), self.port)
    }

    /// The first connection either listener accepts within `wait`.
    async fn accepted(&self, wait: Duration) -> Option<TcpStream> {
        tokio::select! {
            r = self.v4.accept() => r.ok().map(|(s, _)| s),
            r = self.v6.accept() => r.ok().map(|(s, _)| s),
            _ = sleep(wait) => None,
        }
    }
}

/// A connection of `user` over TCP to `server`, without an allocation yet.
async fn tcp_client(server: &TestServer, user: &str) -> TurnClient {
    let (u, p) = rest_credentials(SECRET, user, Duration::from_secs(600));
    TurnClient::connect_tcp(server.handle.tcp_addrs()[0], &u, &p)
        .await
        .expect("TCP connect")
}

/// A TCP allocation of `user` (IPv6 with `v6`): its control client and relayed address.
async fn tcp_relay(server: &TestServer, user: &str, v6: bool) -> (TurnClient, SocketAddr) {
    let mut c = tcp_client(server, user).await;
    let mut attrs = vec![RequestAttr::RequestedTransport(TCP)];
    if v6 {
        attrs.push(RequestAttr::RequestedFamily(Family::V6));
    }
    let relayed = c.allocate_with(&attrs).await.expect("TCP allocation");
    (c, relayed)
}

/// A TCP allocation of `user` connected to a fresh listener: its control client, the
/// CONNECTION-ID, the peer's end.
async fn connected(server: &TestServer, user: &str) -> (TurnClient, u32, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (mut c, _) = tcp_relay(server, user, false).await;
    let id = c
        .connect(listener.local_addr().unwrap())
        .await
        .expect("Connect");
    let (peer, _) = listener.accept().await.unwrap();
    (c, id, peer)
}

/// Every denied address named in a Connect gets 403 and no connection leaves toward
/// it: loopback (a listener waits there), private and metadata ranges, the server's own
/// listener, IPv6 spellings of loopback. The control server, which allows loopback,
/// connects to the same listener for the same Connect.
#[tokio::test]
async fn tcp_connect_to_denied_addresses_gets_403_and_connects_nowhere() {
    let target = TcpTarget::new().await;
    let denied = denying_server("").await;
    let (mut a4, _) = tcp_relay(&denied, "alice", false).await;
    let (mut a6, _) = tcp_relay(&denied, "alice", true).await;
    let own = denied.handle.tcp_addrs()[0];
    let v4 = [
        target.at("127.0.0.1"),
        target.at("127.0.0.2"),
        addr("10.0.0.1:80"),
        addr("172.16.0.1:80"),
        addr("192.168.1.1:443"),
        addr("100.64.0.1:80"),
        addr("169.254.169.254:80"),
        addr("0.0.0.0:80"),
        own,
    ];
    for peer in v4 {
        assert_eq!(code(a4.connect(peer).await), 403, "Connect {peer}");
    }
    for spelling in [
        "::1",
        "::ffff:127.0.0.1",
        "::127.0.0.1",
        "64:ff9b::7f00:1",
        "::ffff:169.254.169.254",
    ] {
        let peer = target.at(spelling);
        assert_eq!(code(a6.connect(peer).await), 403, "Connect {peer}");
    }
    assert!(
        target.accepted(QUIET).await.is_none(),
        "a refused Connect reached the listener"
    );
    let m = published_metrics(&denied, "the refusals", |m| m.stats.policy_denied >= 14).await;
    assert_eq!(
        (
            m.stats.tcp_connected,
            m.stats.tcp_connect_failed,
            m.gauges.tcp_pending
        ),
        (0, 0, 0),
        "no connection was attempted"
    );

    let control = allowing_server(&["127.0.0.1"], "").await;
    let (mut c, _) = tcp_relay(&control, "alice", false).await;
    c.connect(target.at("127.0.0.1"))
        .await
        .expect("control: Connect");
    assert!(
        target.accepted(WAIT).await.is_some(),
        "control: the listener sees the connection"
    );
}

/// policy.rs: the server's public address (`external-ip`) is its own, reachable only at
/// live relayed addresses. A Connect to a local service there is 403 and nothing
/// connects; allowing the public address (the control) connects to the service.
#[tokio::test]
async fn tcp_connect_to_the_servers_own_public_address_is_403() {
    let target = TcpTarget::new().await;
    let external = "external-ip = [\"203.0.113.10/127.0.0.1\"]";
    let service = target.at("203.0.113.10");
    let denied = denying_server(external).await;
    let (mut a, relayed) = tcp_relay(&denied, "alice", false).await;
    assert_eq!(relayed.ip(), ip("203.0.113.10"));
    assert_eq!(code(a.connect(service).await), 403);
    // A relayed address that is no longer live is the server's own address too.
    let (mut b, dead) = tcp_relay(&denied, "bob", false).await;
    b.shutdown().await.unwrap();
    drop(b);
    let deadline = Instant::now() + WAIT;
    loop {
        let r = a.connect(dead).await;
        if matches!(r, Err(ClientError::Error(403))) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Connect to a dead relayed address: {r:?}"
        );
        sleep(Duration::from_millis(50)).await;
    }
    assert!(target.accepted(QUIET).await.is_none());

    let control = allowing_server(&["203.0.113.10"], external).await;
    let (mut c, _) = tcp_relay(&control, "alice", false).await;
    c.connect(service).await.expect("control: Connect");
    assert!(target.accepted(WAIT).await.is_some(), "control: connected");
}

/// A ConnectionBind with another user's CONNECTION-ID is a 441 and attaches nothing:
/// the peer's bytes go to no one, and the owner's own bind afterwards gets them.
#[tokio::test]
async fn connection_bind_with_another_users_connection_id_fails() {
    let server = allowing_server(&["127.0.0.1"], "").await;
    let (_alice, id, mut peer) = connected(&server, "alice").await;
    peer.write_all(b"for alice only").await.unwrap();

    let mallory = tcp_client(&server, "mallory").await;
    assert_eq!(code(mallory.into_data_connection(id).await), 441);
    let mut data = tcp_client(&server, "alice")
        .await
        .into_data_connection(id)
        .await
        .expect("the owner binds it");
    assert_eq!(data.recv_exact(14, WAIT).await.unwrap(), b"for alice only");
    data.send(b"ok").await.unwrap();
    let mut buf = [0u8; 2];
    timeout(WAIT, peer.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"ok");
}

/// Guessed CONNECTION-IDs are 400 (with two shards, most of them are handed to the
/// other shard first), whoever guesses, and steal nothing: the real one still binds.
#[tokio::test]
async fn guessed_connection_ids_fail() {
    let server = allowing_server(&["127.0.0.1"], "relay-threads = 2").await;
    let (_alice, id, _peer) = connected(&server, "alice").await;
    let mut guesser = tcp_client(&server, "mallory").await;
    let mut own_guesser = tcp_client(&server, "alice").await;
    let mut refused = 0;
    for i in 0..64u32 {
        let guess = id.wrapping_add(1 + i.wrapping_mul(0x9E37_79B9));
        let who = if i % 2 == 0 {
            &mut guesser
        } else {
            &mut own_guesser
        };
        let r = who
            .request(method::CONNECTION_BIND, &[RequestAttr::ConnectionId(guess)])
            .await;
        assert_eq!(code(r), 400, "guess {guess:#x}");
        refused += 1;
    }
    assert_eq!(refused, 64);
    tcp_client(&server, "alice")
        .await
        .into_data_connection(id)
        .await
        .expect("the real id still binds");
}

/// `max-tcp-relay-connections`: Connects beyond the cap are 508 and connect nowhere, a
/// peer beyond it is closed at once, and a closed connection makes room again.
#[tokio::test]
async fn a_flood_of_connects_beyond_the_per_allocation_cap_is_refused() {
    let server = allowing_server(&["127.0.0.1"], "max-tcp-relay-connections = 4").await;
    let (mut c, relayed) = tcp_relay(&server, "alice", false).await;
    let mut listeners = Vec::new();
    for _ in 0..8 {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let mut ids = Vec::new();
    for (i, l) in listeners.iter().enumerate() {
        let r = c.connect(l.local_addr().unwrap()).await;
        if i < 4 {
            ids.push(r.expect("within the cap"));
            l.accept().await.expect("connected");
        } else {
            assert_eq!(code(r), 508, "Connect {i}");
            let none = timeout(QUIET, l.accept()).await;
            assert!(none.is_err(), "Connect {i} beyond the cap connected");
        }
    }
    c.create_permission(&[addr("127.0.0.1:1")]).await.unwrap();
    let mut late = TcpStream::connect(relayed).await.unwrap();
    let mut buf = [0u8; 1];
    let end = timeout(WAIT, late.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(
        matches!(end, Ok(0) | Err(_)),
        "a peer beyond the cap is closed"
    );
    assert_eq!(c.recv_connection_attempt(QUIET).await.unwrap(), None);

    // Binding one and closing it frees a place.
    let data = tcp_client(&server, "alice")
        .await
        .into_data_connection(ids[0])
        .await
        .expect("bind");
    drop(data);
    let free = &listeners[4];
    let deadline = Instant::now() + WAIT;
    loop {
        match c.connect(free.local_addr().unwrap()).await {
            Ok(_) => break,
            Err(ClientError::Error(508)) if Instant::now() < deadline => {
                sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("Connect after a close: {e:?}"),
        }
    }
}
