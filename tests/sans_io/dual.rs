//! Dual allocations (RFC 8656 section 7.2, ADDITIONAL-ADDRESS-FAMILY): one allocation with
//! an IPv4 and an IPv6 relayed address, one lifetime, permissions and channels per
//! family, and ADDRESS-ERROR-CODE (section 18.12) for a family the server cannot give.

use crate::prelude::*;
use ferroturn_core::server::SessionFilter;

const DUAL: [RequestAttr<'static>; 1] = [RequestAttr::AdditionalFamily(Family::V6)];
const PEER_V6: &str = "[2001:db8::1]:5000";
/// One relay port per family, so a port that is not given back is visible at once.
const ONE_PORT: &str = "min-port = 50000\nmax-port = 50000";

fn dual_stack(extra: &str) -> Harness {
    Harness::new(&format!("{DUAL_STACK}\n{extra}"))
}

/// RFC 8656 section 7.2: the success carries two XOR-RELAYED-ADDRESS attributes, IPv4
/// first, for one allocation: one 5-tuple, one lifetime timer, two relay sockets (the
/// IPv6 one asked for once the IPv4 one is bound). A retransmission gets the same bytes
/// and binds nothing; the sessions list shows both addresses.
#[test]
fn dual_allocation_has_an_ipv4_and_an_ipv6_relayed_address() {
    let mut h = dual_stack("");
    let mut c = alice();
    let mut attrs = vec![RequestAttr::RequestedTransport(UDP)];
    attrs.extend_from_slice(&DUAL);
    h.challenge(&mut c, method::ALLOCATE, &attrs);
    let txn = h.next_txn();
    let msg = c.signed(&txn, method::ALLOCATE, &attrs, &[], true);
    let raw = h.exchange(c.tuple, &msg);
    let r = success(&raw, method::ALLOCATE);
    assert!(verifies(&raw, &c.key));
    let types = attr_types(&raw);
    let relayed = types
        .iter()
        .filter(|t| **t == attr::XOR_RELAYED_ADDRESS)
        .count();
    assert_eq!(relayed, 2);
    assert!(!types.contains(&attr::ADDRESS_ERROR_CODE));
    let (v4, v6) = (r.xor_relayed.unwrap(), r.additional_relayed.unwrap());
    assert_eq!(v4.ip(), IpAddr::from([127, 0, 0, 1]));
    assert_eq!(v6.ip(), "::1".parse::<IpAddr>().unwrap());
    assert_eq!(r.address_error, None);
    assert_eq!(
        (r.lifetime, r.xor_mapped),
        (Some(600), Some(c.tuple.client))
    );
    let relay = h.binds[0].0;
    assert_eq!(h.binds, vec![(relay, v4), (relay, v6)]);
    assert_eq!(h.server.allocation_count(), 1);
    assert_eq!(h.server.deadline_count(), 1);
    let relayed: Vec<SocketAddr> = h.server.relayed_addresses(&c.tuple).collect();
    assert_eq!(relayed, vec![v4, v6]);
    let sessions = h.server.sessions(h.now);
    assert_eq!(sessions.len(), 1);
    assert_eq!(
        (sessions[0].relayed, sessions[0].additional_relayed),
        (v4, Some(v6))
    );

    h.advance_to(3);
    assert_eq!(h.exchange(c.tuple, &msg), raw);
    assert_eq!(h.binds.len(), 2);
}

/// RFC 8656 section 18.12: a family the server has no relay address of is left out of
/// a dual allocation, which succeeds with the other one and says why in
/// ADDRESS-ERROR-CODE (family, 440). Whichever family is missing; and a peer of the
/// missing family then gets 443 like any peer without a relay of its family.
#[test]
fn a_family_without_a_relay_address_is_left_out_with_address_error_code_440() {
    for (config, has, missing) in [
        ("", Family::V4, Family::V6),
        ("relay-ip = [\"::1\"]", Family::V6, Family::V4),
    ] {
        let mut h = Harness::new(config);
        let mut c = alice();
        let raw = h.allocate_raw(&mut c, &DUAL);
        let r = success(&raw, method::ALLOCATE);
        assert!(verifies(&raw, &c.key));
        assert_eq!(r.address_error, Some((missing, 440)), "{config:?}");
        let family = |a: SocketAddr| if a.is_ipv4() { Family::V4 } else { Family::V6 };
        assert_eq!(r.xor_relayed.map(family), Some(has));
        assert_eq!(r.additional_relayed, None);
        assert_eq!(h.binds.len(), 1);
        // On the wire: family (1 IPv4, 2 IPv6), 21 bits reserved, class 4, number 40.
        let value = wire_value(&raw, attr::ADDRESS_ERROR_CODE);
        let family_byte = if missing == Family::V4 { 1 } else { 2 };
        assert_eq!(value, vec![family_byte, 0, 4, 40]);
        let peer = if missing == Family::V4 { PEER } else { PEER_V6 };
        let raw = h.request(
            &mut c,
            method::CREATE_PERMISSION,
            &[RequestAttr::XorPeerAddress(addr(peer))],
        );
        error(&raw, method::CREATE_PERMISSION, 443);
    }
}

/// The value of the first attribute of type `t` of a message.
fn wire_value(m: &[u8], t: u16) -> Vec<u8> {
    crate::core_harness::wire::attribute(m, t)
        .expect("attribute present")
        .to_vec()
}

/// RFC 8656 section 18.12: a family whose port range is exhausted is left out with
/// ADDRESS-ERROR-CODE 508, whichever it is; with no port in either family the Allocate
/// fails with 508 and takes nothing (not even its quota).
#[test]
fn a_family_without_a_free_port_is_left_out_with_address_error_code_508() {
    let mut h = dual_stack(&format!("{ONE_PORT}\nuser-quota = 1"));
    let user = |n: u16, name: &str| {
        Client::rest(
            &format!("203.0.113.20:{n}"),
            "new-secret",
            name,
            UNIX0 + 3600,
        )
    };
    // carol's IPv6 relay takes the only IPv6 port.
    let mut carol = user(1, "carol");
    h.allocate(&mut carol, &[RequestAttr::RequestedFamily(Family::V6)]);
    let mut dave = user(2, "dave");
    let (r, _) = h.allocate_dual(&mut dave);
    assert!(r.xor_relayed.unwrap().is_ipv4());
    assert_eq!(r.additional_relayed, None);
    assert_eq!(r.address_error, Some((Family::V6, 508)));

    // Both families are out of ports now: 508, no bind.
    let mut c = alice();
    let binds = h.binds.len();
    let raw = h.allocate_raw(&mut c, &DUAL);
    error(&raw, method::ALLOCATE, 508);
    assert!(verifies(&raw, &c.key));
    assert_eq!(h.binds.len(), binds);

    // The IPv6 port comes back: alice's next dual allocation gets it and only it (her
    // quota of 1 was given back by the failure).
    h.refresh(&mut carol, Some(0));
    let (r, _) = h.allocate_dual(&mut c);
    assert!(r.xor_relayed.unwrap().is_ipv6());
    assert_eq!(r.address_error, Some((Family::V4, 508)));
}

/// A relay socket of one family that cannot be bound (a host without IPv6, say) is
/// retried a bounded number of times, then that family is left out with
/// ADDRESS-ERROR-CODE 508 and its port goes back to the pool. Either family.
#[test]
fn a_family_whose_socket_cannot_be_bound_is_left_out_with_508() {
    let mut h = dual_stack(ONE_PORT);
    h.bind_refused = |a| a.is_ipv6();
    let mut c = alice();
    let (r, relay) = h.allocate_dual(&mut c);
    assert!(r.xor_relayed.unwrap().is_ipv4());
    assert_eq!(r.additional_relayed, None);
    assert_eq!(r.address_error, Some((Family::V6, 508)));
    let v6_binds = h.binds.iter().filter(|(_, a)| a.is_ipv6()).count();
    assert_eq!(v6_binds, 8, "bounded retries");
    assert!(h.binds.iter().all(|(id, _)| *id == relay));
    // The IPv6 port is free again.
    h.bind_refused = |_| false;
    let mut v6 = Client::new("203.0.113.10:2", "alice", "alice-pw");
    let (r, _) = h.allocate(&mut v6, &[RequestAttr::RequestedFamily(Family::V6)]);
    assert_eq!(r.xor_relayed.unwrap().port(), 50000);

    // IPv4 refused: the allocation goes on with IPv6 alone.
    let mut h = dual_stack(ONE_PORT);
    h.bind_refused = |a| a.is_ipv4();
    let mut c = alice();
    let (r, _) = h.allocate_dual(&mut c);
    assert!(r.xor_relayed.unwrap().is_ipv6());
    assert_eq!(r.address_error, Some((Family::V4, 508)));
    h.bind_refused = |_| false;
    let mut v4 = Client::new("203.0.113.10:2", "alice", "alice-pw");
    let (r, _) = h.allocate(&mut v4, &[]);
    assert_eq!(r.xor_relayed.unwrap().port(), 50000);

    // Neither family binds: 508, nothing left allocated.
    let mut h = dual_stack(ONE_PORT);
    h.bind_ok = false;
    let mut c = alice();
    let raw = h.allocate_raw(&mut c, &DUAL);
    error(&raw, method::ALLOCATE, 508);
    assert_eq!(h.server.allocation_count(), 0);
    assert!(h.closed.is_empty(), "no socket was bound, none to close");
}

/// RFC 8656 section 7.2 steps 5, 6, 8 and 9: ADDITIONAL-ADDRESS-FAMILY naming IPv4, or
/// with REQUESTED-ADDRESS-FAMILY, EVEN-PORT with R or RESERVATION-TOKEN, is a 400 that
/// binds nothing and takes no quota. EVEN-PORT without R applies to both relays.
#[test]
fn additional_family_ipv4_or_with_a_requested_family_r_bit_or_token_is_400() {
    let mut h = dual_stack("user-quota = 1");
    let v6 = RequestAttr::AdditionalFamily(Family::V6);
    let cases: [Vec<RequestAttr<'_>>; 5] = [
        vec![RequestAttr::AdditionalFamily(Family::V4)],
        vec![v6.clone(), RequestAttr::RequestedFamily(Family::V4)],
        vec![RequestAttr::RequestedFamily(Family::V6), v6.clone()],
        vec![v6.clone(), RequestAttr::EvenPort(true)],
        vec![v6.clone(), RequestAttr::ReservationToken([7; 8])],
    ];
    let mut c = alice();
    for attrs in &cases {
        let raw = h.allocate_raw(&mut c, attrs);
        error(&raw, method::ALLOCATE, 400);
        assert!(verifies(&raw, &c.key), "{attrs:?}");
    }
    assert!(h.binds.is_empty());
    let (r, _) = h.allocate_dual(&mut c);
    assert!(r.address_error.is_none(), "the quota of 1 was still free");
    let mut even = Client::new("203.0.113.10:2", "bob", "bob-pw");
    let raw = h.allocate_raw(&mut even, &[v6, RequestAttr::EvenPort(false)]);
    let r = success(&raw, method::ALLOCATE);
    assert_eq!(r.xor_relayed.unwrap().port() % 2, 0);
    assert_eq!(r.additional_relayed.unwrap().port() % 2, 0);
    assert_eq!(r.reservation_token, None);
}

/// RFC 8656 sections 10.2, 11.2 and 12.2: a dual allocation takes permissions and
/// channels for peers of both families (in one CreatePermission too); Send indications
/// and ChannelData go to either, and datagrams from peers of either family reach the
/// client (ChannelData on a bound channel, else a Data indication). Which relay socket
/// a datagram to a peer leaves from is the driver's choice by the peer's family
/// (`Path::Peer`), checked end to end.
#[test]
fn a_dual_allocation_relays_to_and_from_peers_of_both_families() {
    let mut h = dual_stack("");
    let mut c = alice();
    let (_, relay) = h.allocate_dual(&mut c);
    let (p4, p6) = (addr(PEER), addr(PEER_V6));
    let raw = h.request(
        &mut c,
        method::CREATE_PERMISSION,
        &[
            RequestAttr::XorPeerAddress(p4),
            RequestAttr::XorPeerAddress(p6),
        ],
    );
    success(&raw, method::CREATE_PERMISSION);
    for peer in [p4, p6] {
        let txn = h.next_txn();
        let msg = send_indication(&txn, peer, b"to peer", &[]);
        assert_eq!(
            h.relay_from_client(c.tuple, &msg),
            Some((Path::Peer { relay, peer }, b"to peer".to_vec()))
        );
    }
    success(&h.bind_channel(&mut c, CHANNEL, p6), method::CHANNEL_BIND);
    assert_eq!(
        h.relay_from_client(c.tuple, &channel_data(CHANNEL, b"cd")),
        Some((Path::Peer { relay, peer: p6 }, b"cd".to_vec()))
    );
    let (path, bytes) = h.peer_datagram(relay, p6, b"from v6").expect("relayed");
    assert_eq!(path, to_client(c.tuple));
    assert_eq!(bytes, channel_data(CHANNEL, b"from v6"));
    let (path, bytes) = h.peer_datagram(relay, p4, b"from v4").expect("relayed");
    assert_eq!(path, to_client(c.tuple));
    assert_eq!(data_indication(&bytes), (p4, b"from v4".to_vec()));
    // A peer without a permission stays out, whatever its family.
    assert_eq!(h.peer_datagram(relay, addr("[2001:db8::2]:1"), b"x"), None);
}

/// RFC 8656 section 11.2: a Send indication to a peer of a family the allocation has no
/// relay of is dropped (CreatePermission and ChannelBind answer 443 for it).
#[test]
fn a_single_family_allocation_drops_send_indications_to_the_other_family() {
    let mut h = dual_stack("");
    let mut c = alice();
    h.allocate(&mut c, &[]);
    let raw = h.bind_channel(&mut c, CHANNEL, addr(PEER_V6));
    error(&raw, method::CHANNEL_BIND, 443);
    let txn = h.next_txn();
    let msg = send_indication(&txn, addr(PEER_V6), b"x", &[]);
    assert_eq!(h.relay_from_client(c.tuple, &msg), None);
}

/// The two relays share one lifetime: a Refresh naming either family (RFC 8656 section
/// 8.2; any other family is 443) refreshes both, and expiry, Refresh 0 and an operator's
/// delete (by either relayed address) end both and give both ports back, so the next
/// dual allocation gets both families again from one port each.
#[test]
fn both_relays_live_and_die_together_and_give_both_ports_back() {
    let mut h = dual_stack(ONE_PORT);
    let mut c = alice();
    let (_, relay) = h.allocate_dual(&mut c);
    h.advance_to(500);
    for family in [Family::V6, Family::V4] {
        let raw = h.request(
            &mut c,
            method::REFRESH,
            &[RequestAttr::RequestedFamily(family)],
        );
        assert_eq!(success(&raw, method::REFRESH).lifetime, Some(600));
    }
    h.advance_to(1099);
    assert!(h.closed.is_empty());
    h.advance_to(1100);
    assert_eq!(h.closed, vec![relay]);
    assert_eq!(
        (h.server.allocation_count(), h.server.deadline_count()),
        (0, 0)
    );

    let both = |h: &mut Harness, c: &mut Client| {
        let (r, relay) = h.allocate_dual(c);
        assert_eq!(r.address_error, None, "both ports were given back");
        assert_eq!(r.additional_relayed.map(|a| a.port()), Some(50000));
        (r, relay)
    };
    let (_, relay) = both(&mut h, &mut c);
    let raw = h.request(
        &mut c,
        method::REFRESH,
        &[
            RequestAttr::Lifetime(0),
            RequestAttr::RequestedFamily(Family::V6),
        ],
    );
    assert_eq!(success(&raw, method::REFRESH).lifetime, Some(0));
    assert_eq!(h.closed.last(), Some(&relay));
    assert_eq!(h.server.allocation_count(), 0);

    let (r, relay) = both(&mut h, &mut c);
    let v6 = r.additional_relayed.unwrap();
    assert_eq!(h.delete_sessions(&SessionFilter::Relayed(v6)), 1);
    assert_eq!(h.closed.last(), Some(&relay));
    both(&mut h, &mut c);

    // A single-family allocation refuses a Refresh for the other family.
    let mut h = dual_stack("");
    let mut single = Client::new("203.0.113.10:2", "bob", "bob-pw");
    h.allocate(&mut single, &[]);
    let raw = h.request(
        &mut single,
        method::REFRESH,
        &[RequestAttr::RequestedFamily(Family::V6)],
    );
    error(&raw, method::REFRESH, 443);
}

/// A dual allocation is one allocation: it counts once against `user-quota`, and its
/// deletion gives that one back.
#[test]
fn a_dual_allocation_counts_once_against_the_user_quota() {
    let mut h = dual_stack("user-quota = 1");
    let mut c = alice();
    h.allocate_dual(&mut c);
    let mut other = Client::new("203.0.113.10:2", "alice", "alice-pw");
    let raw = h.allocate_raw(&mut other, &[]);
    error(&raw, method::ALLOCATE, 486);
    h.refresh(&mut c, Some(0));
    h.allocate(&mut other, &[]);
}

/// coturn's clients (uclient `-Z`) send ADDITIONAL-ADDRESS-FAMILY under the code point of
/// the drafts before RFC 8656, 0x8032: it asks for a dual allocation all the same.
#[test]
fn the_drafts_code_point_asks_for_a_dual_allocation_too() {
    let mut h = dual_stack("");
    let mut c = alice();
    let attrs = [RequestAttr::RequestedTransport(UDP)];
    let draft: [(u16, &[u8]); 1] = [(attr::ADDITIONAL_ADDRESS_FAMILY_DRAFT, &[2, 0, 0, 0])];
    let raw = h.request_with(&mut c, method::ALLOCATE, &attrs, &draft, true);
    let r = success(&raw, method::ALLOCATE);
    assert!(r.xor_relayed.unwrap().is_ipv4());
    assert!(r.additional_relayed.unwrap().is_ipv6());
}
