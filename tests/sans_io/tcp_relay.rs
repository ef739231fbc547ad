//! TCP allocations (RFC 6062) in virtual time: Allocate with REQUESTED-TRANSPORT TCP
//! (section 5.1), Connect (5.2), a peer's own connection and the ConnectionAttempt
//! indication (5.3), ConnectionBind (5.4), and the ends of connections: the 30 seconds
//! for a bind, a connect that never completes, the allocation's end.

use crate::core_harness::{alice_tcp, tcp};
use crate::prelude::*;
use ferroturn_core::server::ConnectionId;
use std::time::Duration;

/// The control connection's client address; data connections come from other ports.
const CONTROL: &str = "203.0.113.10:40000";

fn data_conn(port: u16) -> Client {
    alice_tcp(&format!("203.0.113.10:{port}"))
}

fn bob_tcp(client: &str) -> Client {
    let mut c = Client::new(client, "bob", "bob-pw");
    c.tuple = tcp(client);
    c
}

/// A TCP allocation for alice on [`CONTROL`]: her client and the relay.
fn tcp_allocation(h: &mut Harness) -> (Client, ferroturn_core::server::AllocId) {
    let mut c = alice_tcp(CONTROL);
    let (_, relay) = h.allocate_tcp(&mut c);
    (c, relay)
}

fn connection_id(raw: &[u8]) -> ConnectionId {
    ConnectionId(connection_id_of(raw))
}

/// A Connect to `peer` that the driver leaves connecting: its transaction id and its
/// connection.
fn connect_unanswered(h: &mut Harness, c: &Client, peer: SocketAddr) -> ([u8; 12], ConnectionId) {
    h.connect_answer = None;
    let txn = h.next_txn();
    let attrs = [RequestAttr::XorPeerAddress(peer)];
    let msg = c.signed(&txn, method::CONNECT, &attrs, &[], true);
    let (_, out) = h.send(c.tuple, &msg);
    assert!(out.is_empty(), "answered when the connection is made");
    h.connect_answer = Some(true);
    (txn, h.connects.last().expect("a ConnectPeer").0)
}

/// Sections 5.1 and 5.2: a TCP allocation listens on its relayed address; a Connect
/// opens a connection from that very address to the peer, installs the peer's
/// permission and is answered, once connected, with the CONNECTION-ID of the connection.
#[test]
fn connect_opens_from_the_relayed_address_and_answers_with_a_connection_id() {
    let mut h = Harness::new("");
    let (mut c, relay) = tcp_allocation(&mut h);
    let relayed = h.server.relayed_address(&c.tuple).expect("allocated");
    assert_eq!(h.binds_dont_fragment, vec![false]);
    let peer = addr(PEER);
    let raw = h.connect(&mut c, peer);
    assert!(verifies(&raw, &c.key));
    let id = connection_id(&raw);
    assert_eq!(h.connects, vec![(id, relay, relayed, peer)]);
    assert_eq!(h.server.gauges().permissions, 1, "the peer's permission");
    assert_eq!(
        (h.server.gauges().tcp_pending, h.server.gauges().tcp_bound),
        (1, 0)
    );
    assert_eq!(h.server.stats().tcp_connected, 1);
    let session = &h.server.sessions(h.now)[0];
    assert!(session.tcp);
    assert_eq!(session.tcp_connections, 1);
}

/// Section 5.1: a TCP allocation over UDP or DTLS is a 400, and so is one with DONT-FRAGMENT,
/// EVEN-PORT or RESERVATION-TOKEN; with `no-tcp-relay` it is a 442. None binds anything.
#[test]
fn tcp_allocations_over_udp_with_udp_only_attributes_or_switched_off_are_refused() {
    let mut h = Harness::new("");
    let tcp_transport = RequestAttr::RequestedTransport(TCP);
    let mut over_udp = alice();
    let raw = h.request(
        &mut over_udp,
        method::ALLOCATE,
        std::slice::from_ref(&tcp_transport),
    );
    error(&raw, method::ALLOCATE, 400);
    // Nor over DTLS: datagrams too (RFC 7350), not a TCP or TLS connection.
    let mut over_dtls = alice();
    over_dtls.tuple.transport = ferroturn_core::server::Transport::Dtls;
    let raw = h.request(
        &mut over_dtls,
        method::ALLOCATE,
        std::slice::from_ref(&tcp_transport),
    );
    error(&raw, method::ALLOCATE, 400);
    for extra in [
        RequestAttr::DontFragment,
        RequestAttr::EvenPort(false),
        RequestAttr::ReservationToken([1; 8]),
    ] {
        let mut c = alice_tcp(CONTROL);
        let raw = h.request(
            &mut c,
            method::ALLOCATE,
            &[tcp_transport.clone(), extra.clone()],
        );
        error(&raw, method::ALLOCATE, 400);
    }
    assert!(h.binds.is_empty());

    let mut off = Harness::new("no-tcp-relay = true");
    let mut c = alice_tcp(CONTROL);
    let raw = off.request(&mut c, method::ALLOCATE, &[tcp_transport]);
    error(&raw, method::ALLOCATE, 442);
    assert!(verifies(&raw, &c.key));
    assert!(off.binds.is_empty());
    // UDP allocations over TCP still work.
    off.allocate(&mut c, &[]);
}

/// Section 5.2: a connection that fails is answered 447 (with MESSAGE-INTEGRITY) and
/// forgotten, so the same peer may be tried again.
#[test]
fn a_failed_connect_is_447_and_forgotten() {
    let mut h = Harness::new("");
    let (mut c, _) = tcp_allocation(&mut h);
    h.connect_answer = Some(false);
    let raw = h.connect(&mut c, addr(PEER));
    error(&raw, method::CONNECT, 447);
    assert!(verifies(&raw, &c.key));
    assert_eq!(h.server.stats().tcp_connect_failed, 1);
    assert_eq!(h.server.gauges().tcp_pending, 0);
    h.connect_answer = Some(true);
    connection_id(&h.connect(&mut c, addr(PEER)));
}

/// Section 5.2: a connect that neither succeeds nor fails is given up after 30 seconds:
/// the Connect is answered 447 from the timer and the socket closed.
#[test]
fn a_connect_that_never_completes_is_447_after_30_seconds() {
    let mut h = Harness::new("");
    let (c, _) = tcp_allocation(&mut h);
    let (txn, conn) = connect_unanswered(&mut h, &c, addr(PEER));
    h.advance_to(29);
    assert!(h.late.is_empty() && h.peer_closes.is_empty());
    h.advance_to(30);
    assert_eq!(h.peer_closes, vec![conn]);
    let late = h.late.remove(0);
    assert_eq!(late.path, to_client(c.tuple));
    assert_eq!(&late.payload[8..20], &txn);
    assert!(verifies(&late.payload, &c.key));
    // An answer from the driver after that changes nothing.
    assert!(h.peer_connected(conn, true).is_empty());
    assert_eq!(h.server.gauges().tcp_pending, 0);
}

/// Section 5.2: a second Connect to a peer the allocation is connecting to, waiting on,
/// or bound to is a 446; another port of the same peer is another peer.
#[test]
fn a_second_connect_to_the_same_peer_is_446_in_every_state() {
    let mut h = Harness::new("");
    let (mut c, _) = tcp_allocation(&mut h);
    let peer = addr(PEER);
    let (_, conn) = connect_unanswered(&mut h, &c, peer);
    error(&h.connect(&mut c, peer), method::CONNECT, 446);
    let answer = h.peer_connected(conn, true);
    assert_eq!(connection_id(&answer[0].payload), conn);
    error(&h.connect(&mut c, peer), method::CONNECT, 446);
    let mut d = data_conn(40001);
    success(&h.connection_bind(&mut d, conn), method::CONNECTION_BIND);
    error(&h.connect(&mut c, peer), method::CONNECT, 446);
    let other_port = SocketAddr::new(peer.ip(), peer.port() + 1);
    connection_id(&h.connect(&mut c, other_port));
}

/// Sections 5.2 and 5.3: a connection nobody binds is closed and forgotten 30 seconds
/// after it was made; a ConnectionBind after that is a 400.
#[test]
fn a_peer_connection_never_bound_is_closed_after_30_seconds() {
    let mut h = Harness::new("");
    let (mut c, _) = tcp_allocation(&mut h);
    h.advance_to(10);
    let conn = connection_id(&h.connect(&mut c, addr(PEER)));
    let timers = h.server.deadline_count();
    h.advance_to(39);
    assert!(h.peer_closes.is_empty());
    h.advance_to(40);
    assert_eq!(h.peer_closes, vec![conn]);
    assert_eq!(h.server.deadline_count(), timers - 1);
    assert_eq!(h.server.stats().tcp_unbound_expired, 1);
    assert_eq!(h.server.sessions(h.now)[0].tcp_connections, 0);
    let mut d = data_conn(40001);
    error(
        &h.connection_bind(&mut d, conn),
        method::CONNECTION_BIND,
        400,
    );
    assert!(h.splices.is_empty());
}

/// Section 5.4: a ConnectionBind on a new connection with the CONNECTION-ID splices it to
/// the peer connection (and the 30 seconds stop); the id binds once.
#[test]
fn connection_bind_splices_a_new_connection_once() {
    let mut h = Harness::new("");
    let (mut c, _) = tcp_allocation(&mut h);
    let conn = connection_id(&h.connect(&mut c, addr(PEER)));
    let mut d = data_conn(40001);
    let raw = h.connection_bind(&mut d, conn);
    success(&raw, method::CONNECTION_BIND);
    assert!(verifies(&raw, &d.key));
    assert_eq!(h.splices, vec![(conn, d.tuple)]);
    assert_eq!(
        (h.server.gauges().tcp_pending, h.server.gauges().tcp_bound),
        (0, 1)
    );
    h.advance_to(300);
    assert!(
        h.peer_closes.is_empty(),
        "a bound connection has no bind deadline"
    );
    let mut again = data_conn(40002);
    error(
        &h.connection_bind(&mut again, conn),
        method::CONNECTION_BIND,
        400,
    );
    assert_eq!(h.splices.len(), 1);
    // The driver saw the data connection close: the connection is forgotten.
    assert!(h.peer_closed(conn).is_empty());
    assert_eq!(h.server.gauges().tcp_bound, 0);
    assert_eq!(h.server.sessions(h.now)[0].tcp_connections, 0);
}

/// Section 5.4: no CONNECTION-ID, an unknown one, one still connecting, a bind over UDP
/// or DTLS and a bind on the allocation's own control connection are all 400.
#[test]
fn connection_bind_for_no_unknown_or_unready_ids_is_400() {
    let mut h = Harness::new("");
    let (mut c, _) = tcp_allocation(&mut h);
    let mut d = data_conn(40001);
    error(
        &h.request(&mut d, method::CONNECTION_BIND, &[]),
        method::CONNECTION_BIND,
        400,
    );
    error(
        &h.connection_bind(&mut d, ConnectionId(12345)),
        method::CONNECTION_BIND,
        400,
    );
    let (_, connecting) = connect_unanswered(&mut h, &c, addr(PEER));
    error(
        &h.connection_bind(&mut d, connecting),
        method::CONNECTION_BIND,
        400,
    );
    let conn = connection_id(&h.peer_connected(connecting, true)[0].payload);
    let mut over_udp = alice();
    error(
        &h.connection_bind(&mut over_udp, conn),
        method::CONNECTION_BIND,
        400,
    );
    let mut over_dtls = alice();
    over_dtls.tuple.transport = ferroturn_core::server::Transport::Dtls;
    error(
        &h.connection_bind(&mut over_dtls, conn),
        method::CONNECTION_BIND,
        400,
    );
    error(
        &h.connection_bind(&mut c, conn),
        method::CONNECTION_BIND,
        400,
    );
    assert!(h.splices.is_empty());
    success(&h.connection_bind(&mut d, conn), method::CONNECTION_BIND);
}

/// A ConnectionBind naming another user's connection is a 441 (RFC 8656 section 5: only
/// the allocation's credentials act on it) and attaches nothing: the connection still
/// waits for its owner, who binds it.
#[test]
fn connection_bind_with_another_users_id_is_441_and_attaches_nothing() {
    let mut h = Harness::new("");
    let (mut c, _) = tcp_allocation(&mut h);
    let conn = connection_id(&h.connect(&mut c, addr(PEER)));
    let mut bob = bob_tcp("198.51.100.66:41000");
    let raw = h.connection_bind(&mut bob, conn);
    error(&raw, method::CONNECTION_BIND, 441);
    assert!(verifies(&raw, &bob.key));
    assert!(h.splices.is_empty());
    assert_eq!(h.server.gauges().tcp_pending, 1);
    let mut d = data_conn(40001);
    success(&h.connection_bind(&mut d, conn), method::CONNECTION_BIND);
    assert_eq!(h.splices, vec![(conn, d.tuple)]);
}

/// Section 5.3: a peer's connection is admitted only with a permission for its IP, once
/// per peer address; the client learns of it by a ConnectionAttempt indication naming
/// the connection and the peer, and binds it like one it asked for.
#[test]
fn a_peer_connection_needs_a_permission_and_is_announced() {
    let mut h = Harness::new("");
    let (mut c, relay) = tcp_allocation(&mut h);
    let peer = addr(PEER);
    let (id, out) = h.peer_connects(relay, peer);
    assert_eq!((id, out.len()), (None, 0), "no permission");
    h.permit(&mut c, SocketAddr::new(peer.ip(), 1));
    let (id, out) = h.peer_connects(relay, peer);
    let id = id.expect("admitted");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].path, to_client(c.tuple));
    assert_eq!(connection_attempt(&out[0].payload), (id.0, peer));
    assert_eq!(
        h.peer_connects(relay, peer).0,
        None,
        "one connection per peer"
    );
    let other = SocketAddr::new(peer.ip(), peer.port() + 1);
    assert!(h.peer_connects(relay, other).0.is_some());
    let stats = h.server.stats();
    assert_eq!((stats.tcp_accepted, stats.tcp_refused), (2, 2));
    let mut d = data_conn(40001);
    success(&h.connection_bind(&mut d, id), method::CONNECTION_BIND);
    assert_eq!(h.splices, vec![(id, d.tuple)]);
    // UDP relays take no TCP peers.
    let mut u = alice();
    let (_, udp_relay) = h.allocate(&mut u, &[]);
    h.permit(&mut u, peer);
    assert_eq!(h.peer_connects(udp_relay, peer).0, None);
}

/// Section 5.3: a peer connection not bound within 30 seconds is closed.
#[test]
fn a_peer_initiated_connection_never_bound_is_closed_after_30_seconds() {
    let mut h = Harness::new("");
    let (mut c, relay) = tcp_allocation(&mut h);
    h.permit(&mut c, addr(PEER));
    let id = h.peer_connects(relay, addr(PEER)).0.expect("admitted");
    h.advance_to(29);
    assert!(h.peer_closes.is_empty());
    h.advance_to(30);
    assert_eq!(h.peer_closes, vec![id]);
}

/// The allocation's end closes every connection it has, connecting, waiting or bound,
/// and its listening socket; Refresh 0 and a closed control connection alike.
#[test]
fn the_allocations_end_closes_all_its_connections() {
    for by_refresh in [true, false] {
        let mut h = Harness::new("");
        let (mut c, relay) = tcp_allocation(&mut h);
        let bound = connection_id(&h.connect(&mut c, addr(PEER)));
        let mut d = data_conn(40001);
        success(&h.connection_bind(&mut d, bound), method::CONNECTION_BIND);
        let waiting = connection_id(&h.connect(&mut c, addr("198.51.100.1:5001")));
        let (_, connecting) = connect_unanswered(&mut h, &c, addr("198.51.100.1:5002"));
        if by_refresh {
            h.refresh(&mut c, Some(0));
        } else {
            h.server.handle_connection_closed(h.now, c.tuple);
            h.advance_to(0);
        }
        let mut closed = h.peer_closes.clone();
        closed.sort();
        let mut all = vec![bound, waiting, connecting];
        all.sort();
        assert_eq!(closed, all);
        assert_eq!(h.closed, vec![relay]);
        assert!(h.open_peers.is_empty());
        let g = h.server.gauges();
        assert_eq!((g.tcp_pending, g.tcp_bound, g.deadlines), (0, 0, 0));
        // Nothing is answered for the Connect that was in flight.
        h.advance_to(60);
        assert!(h.late.is_empty());
    }
}

/// Every peer a Connect names passes the peer policy first: loopback, private and
/// metadata addresses and the server's own addresses are 403, and no connection is
/// opened toward them.
#[test]
fn connect_to_a_denied_peer_is_403_and_opens_nothing() {
    let mut h = Harness::new("");
    let (mut c, _) = tcp_allocation(&mut h);
    for peer in [
        "127.0.0.1:22",
        "10.0.0.1:80",
        "169.254.169.254:80",
        "192.168.1.1:443",
    ] {
        let raw = h.connect(&mut c, addr(peer));
        error(&raw, method::CONNECT, 403);
    }
    // The listening address is one of the server's own (listening-ip 127.0.0.1).
    error(&h.connect(&mut c, addr("[::1]:3478")), method::CONNECT, 443);
    assert!(h.connects.is_empty());
    assert_eq!(h.server.gauges().permissions, 0);
    assert_eq!(h.server.stats().policy_denied, 4);
}

/// Connect needs a TCP allocation: none on the connection is a 437, a UDP one a 400;
/// ChannelBind on a TCP allocation is a 400 and Send indications are dropped.
#[test]
fn connect_needs_a_tcp_allocation_and_tcp_allocations_take_no_datagrams() {
    let mut h = Harness::new("");
    let mut none = alice_tcp(CONTROL);
    error(&h.connect(&mut none, addr(PEER)), method::CONNECT, 437);
    let mut u = alice();
    h.allocate(&mut u, &[]);
    error(&h.connect(&mut u, addr(PEER)), method::CONNECT, 400);

    let (mut c, _) = tcp_allocation(&mut h);
    h.permit(&mut c, addr(PEER));
    error(
        &h.bind_channel(&mut c, CHANNEL, addr(PEER)),
        method::CHANNEL_BIND,
        400,
    );
    let txn = h.next_txn();
    let send = send_indication(&txn, addr(PEER), b"datagram", &[]);
    assert_eq!(h.relay_from_client(c.tuple, &send), None);
    assert!(h.connects.is_empty());
}

/// `max-tcp-relay-connections` bounds an allocation's connections: one more Connect is
/// a 508 and one more peer is refused; a closed connection frees its place.
#[test]
fn connections_beyond_the_per_allocation_cap_are_refused() {
    let mut h = Harness::new("max-tcp-relay-connections = 2");
    let (mut c, relay) = tcp_allocation(&mut h);
    let peer = |port: u16| SocketAddr::new(addr(PEER).ip(), port);
    let first = connection_id(&h.connect(&mut c, peer(1)));
    connection_id(&h.connect(&mut c, peer(2)));
    error(&h.connect(&mut c, peer(3)), method::CONNECT, 508);
    assert_eq!(h.peer_connects(relay, peer(4)).0, None);
    assert_eq!(h.connects.len(), 2);
    h.peer_closed(first);
    connection_id(&h.connect(&mut c, peer(3)));
}

/// CONNECTION-IDs come from the seeded generator: many of them are distinct and not a
/// counter (no two consecutive ones differ by one).
#[test]
fn connection_ids_are_not_sequential() {
    let mut h = Harness::new("max-tcp-relay-connections = 64\nnew-peer-rate = 0");
    let (mut c, _) = tcp_allocation(&mut h);
    let ids: Vec<u32> = (0..32)
        .map(|i| connection_id(&h.connect(&mut c, SocketAddr::new(addr(PEER).ip(), 100 + i))).0)
        .collect();
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), ids.len());
    assert!(ids.windows(2).all(|w| w[1].abs_diff(w[0]) > 1), "{ids:?}");
}

/// Bytes relayed on a connection count on its allocation and in the metrics, and
/// `max-bps` paces them: past the allocation's burst the driver is told how long to
/// stop reading (stream bytes are delayed, never dropped).
#[test]
fn relayed_bytes_are_counted_and_paced_by_max_bps() {
    let mut h = Harness::new("max-bps = 1000");
    let (mut c, _) = tcp_allocation(&mut h);
    let conn = connection_id(&h.connect(&mut c, addr(PEER)));
    let mut d = data_conn(40001);
    success(&h.connection_bind(&mut d, conn), method::CONNECTION_BIND);
    let now = h.now;
    assert_eq!(h.server.handle_tcp_relayed(now, conn, true, 1000), None);
    assert_eq!(
        h.server.handle_tcp_relayed(now, conn, true, 500),
        Some(Duration::from_millis(500))
    );
    assert_eq!(h.server.handle_tcp_relayed(now, conn, false, 700), None);
    let s = &h.server.sessions(now)[0];
    assert_eq!((s.bytes_up, s.bytes_down), (1500, 700));
    assert_eq!(h.server.stats().tcp_relayed, [1500, 700]);
    assert_eq!(
        h.server.handle_tcp_relayed(now, ConnectionId(1), true, 1),
        None
    );
}
