//! `external-ip = "auto"` as the core sees it: the driver hands every shard the public
//! address a STUN server saw (`Server::set_external_ip`), and from then on new
//! allocations are advertised with it (RFC 8656 section 7.3: XOR-RELAYED-ADDRESS is the
//! address peers reach the relay at), allocations made before keep theirs and run on,
//! the address is the server's own for the peer policy, and a reload keeps it.

use crate::prelude::*;

const LEARNED: &str = "203.0.113.9";
const MOVED: &str = "203.0.113.77";

/// XOR-RELAYED-ADDRESS of a new allocation for `c`, and the local address of its relay.
fn allocate(h: &mut Harness, c: &mut Client) -> (SocketAddr, SocketAddr) {
    let raw = h.allocate_raw(c, &[]);
    let r = success(&raw, method::ALLOCATE);
    let (_, local) = *h.binds.last().expect("a relay bound");
    (r.xor_relayed.expect("XOR-RELAYED-ADDRESS"), local)
}

#[test]
fn a_learned_public_address_is_advertised_to_new_allocations_only() {
    let mut h = Harness::new("");
    let mut alice = alice();
    let (before, local) = allocate(&mut h, &mut alice);
    assert_eq!(before, local, "unmapped until an address is learned");

    let learned: IpAddr = LEARNED.parse().unwrap();
    assert!(h.server.set_external_ip(learned));
    assert!(!h.server.set_external_ip(learned), "the same address again");
    assert!(
        !h.server.set_external_ip("2001:db8::9".parse().unwrap()),
        "no IPv6 relay to advertise it for"
    );
    let mut bob = Client::new("203.0.113.11:40000", "bob", "bob-pw");
    let (relayed, local) = allocate(&mut h, &mut bob);
    assert_eq!(relayed, SocketAddr::new(learned, local.port()));
    assert_eq!(h.server.relayed_address(&bob.tuple), Some(relayed));
    // alice's allocation keeps the address she was told, and runs on.
    assert_eq!(h.server.relayed_address(&alice.tuple), Some(before));
    let r = h.refresh(&mut alice, Some(600));
    assert_eq!(r.lifetime, Some(600));

    // A change: the next allocation gets the new address.
    assert!(h.server.set_external_ip(MOVED.parse().unwrap()));
    let mut carol = Client::new("203.0.113.12:40000", "alice", "alice-pw");
    let (relayed, local) = allocate(&mut h, &mut carol);
    assert_eq!(
        relayed,
        SocketAddr::new(MOVED.parse().unwrap(), local.port())
    );
}

/// The learned address is the server's own: a peer there is only another live relay
/// (reached through its local address), nothing else on the host (403, RFC 8656
/// section 9); a reload keeps the address and the rule.
#[test]
fn a_learned_public_address_reaches_live_relays_only_and_survives_a_reload() {
    let mut h = Harness::new("");
    let learned: IpAddr = LEARNED.parse().unwrap();
    h.server.set_external_ip(learned);
    let mut alice = alice();
    allocate(&mut h, &mut alice);
    let mut bob = Client::new("203.0.113.11:40000", "bob", "bob-pw");
    let (bob_relayed, bob_local) = allocate(&mut h, &mut bob);

    for round in ["before a reload", "after a reload"] {
        let raw = h.request(
            &mut alice,
            method::CREATE_PERMISSION,
            &[RequestAttr::XorPeerAddress(SocketAddr::new(learned, 22))],
        );
        error(&raw, method::CREATE_PERMISSION, 403);
        h.permit(&mut alice, bob_relayed);
        // A Send indication to bob's public relayed address leaves from alice's relay
        // toward bob's relay socket itself.
        let txn = h.next_txn();
        let msg = send_indication(&txn, bob_relayed, b"hairpin", &[]);
        let (path, _) = h
            .relay_from_client(alice.tuple, &msg)
            .unwrap_or_else(|| panic!("{round}: relayed"));
        assert!(
            matches!(path, Path::Peer { peer, .. } if peer == bob_local),
            "{round}: sent to {path:?}"
        );
        h.reconfigure("");
        let mut dave = Client::new(
            &format!("203.0.113.13:{}", 40000 + u16::from(round.len() as u8)),
            "bob",
            "bob-pw",
        );
        let (relayed, _) = allocate(&mut h, &mut dave);
        assert_eq!(relayed.ip(), learned, "{round}: still advertised");
    }
}
