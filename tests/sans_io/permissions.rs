//! Permissions, the Send and Data methods (RFC 8656 sections 9 to 11), and `external-ip`
//! as peers and clients see it.

use crate::prelude::*;

/// RFC 8656 sections 9 and 11.2: a Send indication is relayed only to a peer IP with a
/// permission (any port of it), from the buffer itself; otherwise silently dropped.
#[test]
fn send_indication_is_relayed_only_after_create_permission() {
    let mut h = Harness::new("");
    let mut c = alice();
    let (_, relay) = h.allocate(&mut c, &[]);
    let peer = addr(PEER);
    let txn = h.next_txn();
    let msg = send_indication(&txn, peer, b"hello peer", &[]);
    assert_eq!(h.relay_from_client(c.tuple, &msg), None);

    h.permit(&mut c, peer);
    let out = h.relay_from_client(c.tuple, &msg);
    assert_eq!(
        out,
        Some((Path::Peer { relay, peer }, b"hello peer".to_vec()))
    );
    let other_port = addr("198.51.100.1:6000");
    let msg = send_indication(&txn, other_port, b"x", &[]);
    assert_eq!(
        h.relay_from_client(c.tuple, &msg),
        Some((
            Path::Peer {
                relay,
                peer: other_port
            },
            b"x".to_vec()
        ))
    );
    let stranger = send_indication(&txn, addr("198.51.100.2:5000"), b"x", &[]);
    assert_eq!(h.relay_from_client(c.tuple, &stranger), None);
}

/// RFC 8489 section 6.3.2: an indication with an unknown comprehension-required
/// attribute is discarded, so such a Send indication is not relayed.
#[test]
fn send_indication_with_unknown_comprehension_required_attribute_is_dropped() {
    let mut h = Harness::new("");
    let mut c = alice();
    h.allocate(&mut c, &[]);
    let peer = addr(PEER);
    h.permit(&mut c, peer);
    let txn = h.next_txn();
    let msg = send_indication(&txn, peer, b"data", &[(UNKNOWN_ATTR, &[0, 0, 0, 0])]);
    assert_eq!(h.relay_from_client(c.tuple, &msg), None);
    // RFC 8656 section 11.2: DONT-FRAGMENT, when the server cannot set the DF bit (an
    // allocation whose socket does not set it), counts as unknown, so the indication is
    // discarded too.
    let msg = send_indication(&txn, peer, b"data", &[(attr::DONT_FRAGMENT, &[])]);
    assert_eq!(h.relay_from_client(c.tuple, &msg), None);
    // A comprehension-optional unknown attribute does not stop it.
    let msg = send_indication(&txn, peer, b"data", &[(0xC0FF, &[0, 0, 0, 0])]);
    assert!(h.relay_from_client(c.tuple, &msg).is_some());
}

/// RFC 8656 section 11.2: a Send indication with DONT-FRAGMENT is relayed when its
/// allocation asked for DF (its relay socket sets the bit on everything it sends), as
/// coturn's client does with `-s -g`; DF on another method is unknown (420 for a request).
#[test]
fn send_indication_with_dont_fragment_is_relayed_on_a_dont_fragment_allocation() {
    let mut h = Harness::new("");
    let mut c = alice();
    let (_, relay) = h.allocate(&mut c, &[RequestAttr::DontFragment]);
    let peer = addr(PEER);
    h.permit(&mut c, peer);
    let txn = h.next_txn();
    let msg = send_indication(&txn, peer, b"data", &[(attr::DONT_FRAGMENT, &[])]);
    assert_eq!(
        h.relay_from_client(c.tuple, &msg),
        Some((Path::Peer { relay, peer }, b"data".to_vec()))
    );
    let extra: [(u16, &[u8]); 1] = [(attr::DONT_FRAGMENT, &[])];
    let attrs = [RequestAttr::XorPeerAddress(peer)];
    let raw = h.request_with(&mut c, method::CREATE_PERMISSION, &attrs, &extra, true);
    let r = error(&raw, method::CREATE_PERMISSION, 420);
    assert_eq!(r.unknown_attributes, vec![attr::DONT_FRAGMENT]);
}

/// RFC 8656 section 11.3: a peer datagram reaches the client as a Data indication
/// (XOR-PEER-ADDRESS and DATA) only when the peer's IP has a permission.
#[test]
fn peer_datagram_becomes_a_data_indication_only_with_a_permission() {
    let mut h = Harness::new("");
    let mut c = alice();
    let (_, relay) = h.allocate(&mut c, &[]);
    let peer = addr(PEER);
    assert_eq!(h.peer_datagram(relay, peer, b"early"), None);

    h.permit(&mut c, peer);
    let (path, msg) = h
        .peer_datagram(relay, peer, b"hello client")
        .expect("relayed");
    assert_eq!(path, to_client(c.tuple));
    assert_eq!(data_indication(&msg), (peer, b"hello client".to_vec()));
    // Odd lengths are padded inside the TAILROOM.
    let (_, msg) = h.peer_datagram(relay, peer, b"odd").expect("relayed");
    assert_eq!(msg.len() % 4, 0);
    assert_eq!(data_indication(&msg), (peer, b"odd".to_vec()));
    assert_eq!(
        h.peer_datagram(relay, addr("198.51.100.2:5000"), b"x"),
        None
    );
}

/// RFC 8656 section 9: a permission lasts 300 s from its last refresh; after it expires
/// (and the timer ran) data in both directions is dropped again.
#[test]
fn permission_expires_300_seconds_after_its_last_refresh() {
    let mut h = Harness::new("");
    let mut c = alice();
    let (_, relay) = h.allocate(&mut c, &[RequestAttr::Lifetime(3600)]);
    let peer = addr(PEER);
    h.permit(&mut c, peer);
    assert_eq!(h.server.deadline_count(), 2);
    h.advance_to(200);
    h.permit(&mut c, peer);
    assert_eq!(h.server.deadline_count(), 2, "refreshing re-arms, not adds");
    h.advance_to(499);
    assert!(h.peer_datagram(relay, peer, b"x").is_some());
    h.advance_to(500);
    assert_eq!(h.peer_datagram(relay, peer, b"x"), None);
    let txn = h.next_txn();
    let msg = send_indication(&txn, peer, b"x", &[]);
    assert_eq!(h.relay_from_client(c.tuple, &msg), None);
    assert_eq!(h.server.deadline_count(), 1);
}

/// `external-ip`: clients are told the public address, peers that name it reach the
/// local relay, and datagrams between two relays of this server are seen as coming from
/// the public address (so the permissions clients installed for it match).
#[test]
fn external_ip_is_advertised_and_mapped_both_ways() {
    let mut h = Harness::new("external-ip = [\"203.0.113.5/127.0.0.1\"]");
    let mut a = alice();
    let mut b = Client::new("203.0.113.11:40000", "bob", "bob-pw");
    let ra = success(&h.allocate_raw(&mut a, &[]), method::ALLOCATE)
        .xor_relayed
        .expect("relayed");
    let (relay_a, local_a) = *h.binds.last().expect("bound");
    let rb = success(&h.allocate_raw(&mut b, &[]), method::ALLOCATE)
        .xor_relayed
        .expect("relayed");
    let (relay_b, local_b) = *h.binds.last().expect("bound");
    assert_eq!(
        ra,
        SocketAddr::new(addr("203.0.113.5:1").ip(), local_a.port())
    );
    assert_eq!(rb.ip(), addr("203.0.113.5:1").ip());
    assert_eq!(local_b.ip(), IpAddr::from([127, 0, 0, 1]));
    // The public address is the server's own: only live relays are reachable there.
    let raw = h.request(
        &mut a,
        method::CREATE_PERMISSION,
        &[RequestAttr::XorPeerAddress(addr("203.0.113.5:22"))],
    );
    error(&raw, method::CREATE_PERMISSION, 403);
    h.permit(&mut a, rb);
    h.permit(&mut b, ra);
    // A -> B: the Send indication names B's public address and goes to B's local relay.
    let txn = h.next_txn();
    let (path, bytes) = h
        .relay_from_client(a.tuple, &send_indication(&txn, rb, b"hi", &[]))
        .expect("relayed to B");
    assert_eq!(
        path,
        Path::Peer {
            relay: relay_a,
            peer: local_b
        }
    );
    assert_eq!(bytes, b"hi");
    // B's relay receives it from A's local relay; B's client sees A's public address.
    let (path, bytes) = h
        .peer_datagram(relay_b, local_a, b"hi")
        .expect("delivered to B");
    assert_eq!(path, to_client(b.tuple));
    assert_eq!(data_indication(&bytes), (ra, b"hi".to_vec()));
}
