//! Every error code (RFC 8489 section 14.8, RFC 8656 section 19), each where it is
//! first reached.

use crate::prelude::*;

/// RFC 8656 section 7.2: an Allocate without REQUESTED-TRANSPORT is a 400, with
/// MESSAGE-INTEGRITY since the request authenticated.
#[test]
fn allocate_without_requested_transport_is_400() {
    let mut h = Harness::new("");
    let mut c = alice();
    let raw = h.request(&mut c, method::ALLOCATE, &[]);
    error(&raw, method::ALLOCATE, 400);
    assert!(verifies(&raw, &c.key));
    assert_eq!(h.server.allocation_count(), 0);
    assert!(h.binds.is_empty());
}

/// RFC 8489 section 9.2.4: MESSAGE-INTEGRITY without NONCE (or USERNAME, REALM) is a
/// 400 that carries no USERNAME, NONCE, REALM or MESSAGE-INTEGRITY.
#[test]
fn message_integrity_without_nonce_is_400_without_integrity() {
    let mut h = Harness::new("");
    let c = alice();
    let txn = h.next_txn();
    let attrs = [
        RequestAttr::Username("alice"),
        RequestAttr::Realm(REALM),
        RequestAttr::RequestedTransport(UDP),
    ];
    let msg = build(method::ALLOCATE, &txn, &attrs, &[], Some(&c.key), true);
    let raw = h.exchange(c.tuple, &msg);
    error(&raw, method::ALLOCATE, 400);
    assert_eq!(attr_types(&raw), vec![attr::ERROR_CODE, attr::FINGERPRINT]);
}

/// RFC 8489 section 6.3.1: a request of a method the server does not know is a 400:
/// an unassigned one (0x005) and ConnectionAttempt (0x00C, which RFC 6062 defines as an
/// indication only).
#[test]
fn request_of_an_unknown_method_is_400() {
    let mut h = Harness::new("");
    let c = alice();
    for unknown in [0x005, method::CONNECTION_ATTEMPT] {
        let txn = h.next_txn();
        let msg = build(unknown, &txn, &[], &[], None, true);
        let raw = h.exchange(c.tuple, &msg);
        error(&raw, unknown, 400);
        assert!(!has_integrity(&raw));
        assert!(has_fingerprint(&raw));
    }
}

/// RFC 8489 section 9.2.4: a request without MESSAGE-INTEGRITY is challenged with 401,
/// REALM and NONCE, and no MESSAGE-INTEGRITY; nothing is allocated.
#[test]
fn request_without_credentials_is_challenged_with_401_realm_and_nonce() {
    let mut h = Harness::new("");
    let c = alice();
    for m in [
        method::ALLOCATE,
        method::REFRESH,
        method::CREATE_PERMISSION,
        method::CHANNEL_BIND,
    ] {
        let txn = h.next_txn();
        let msg = build(
            m,
            &txn,
            &[RequestAttr::RequestedTransport(UDP)],
            &[],
            None,
            true,
        );
        let raw = h.exchange(c.tuple, &msg);
        let r = error(&raw, m, 401);
        assert_eq!(r.realm.as_deref(), Some(REALM));
        assert!(r.nonce.is_some_and(|n| !n.is_empty()));
        assert!(!has_integrity(&raw));
    }
    assert_eq!(h.server.allocation_count(), 0);
}

/// RFC 8489 section 9.2.4: a wrong password and an unknown user both get a 401, and the
/// two responses have the same length and attributes, so USERNAMEs cannot be probed.
#[test]
fn wrong_password_and_unknown_user_get_401s_of_the_same_shape() {
    let mut h = Harness::new("");
    let mut wrong = Client::new("203.0.113.10:1", "alice", "not-alices-pw");
    let mut unknown = Client::new("203.0.113.10:2", "mallory", "alice-pw");
    let a = h.allocate_raw(&mut wrong, &[]);
    let b = h.allocate_raw(&mut unknown, &[]);
    for raw in [&a, &b] {
        let r = error(raw, method::ALLOCATE, 401);
        assert_eq!(r.realm.as_deref(), Some(REALM));
        assert!(!has_integrity(raw));
    }
    assert_eq!(a.len(), b.len());
    assert_eq!(attr_types(&a), attr_types(&b));
    assert_eq!(
        attr_types(&a),
        vec![
            attr::ERROR_CODE,
            attr::REALM,
            attr::NONCE,
            attr::FINGERPRINT
        ]
    );
    assert_eq!(h.server.allocation_count(), 0);
}

/// RFC 8656 section 10.2 (and 12.2): a peer refused by the server's policy is a 403:
/// loopback (unless allowed), private ranges, and IPv4 loopback spelled as IPv6.
#[test]
fn peers_refused_by_policy_are_403() {
    let mut h = Harness::new(DUAL_STACK);
    let mut v4 = alice();
    h.allocate(&mut v4, &[]);
    for peer in ["127.0.0.1:9", "10.0.0.1:9", "169.254.169.254:80"] {
        let raw = h.request(
            &mut v4,
            method::CREATE_PERMISSION,
            &[RequestAttr::XorPeerAddress(addr(peer))],
        );
        error(&raw, method::CREATE_PERMISSION, 403);
        assert!(verifies(&raw, &v4.key));
    }
    error(
        &h.bind_channel(&mut v4, CHANNEL, addr("10.0.0.1:9")),
        method::CHANNEL_BIND,
        403,
    );

    // On an IPv6 allocation an IPv4-mapped address is the same family, so it reaches the
    // policy, which judges it as the IPv4 address it carries.
    let mut v6 = Client::new("203.0.113.10:2", "alice", "alice-pw");
    let (r, _) = h.allocate(&mut v6, &[RequestAttr::RequestedFamily(Family::V6)]);
    assert!(r.xor_relayed.is_some_and(|a| a.is_ipv6()));
    for peer in ["[::ffff:127.0.0.1]:9", "[::1]:9", "[fe80::1]:9"] {
        let raw = h.request(
            &mut v6,
            method::CREATE_PERMISSION,
            &[RequestAttr::XorPeerAddress(addr(peer))],
        );
        error(&raw, method::CREATE_PERMISSION, 403);
    }
    h.permit(&mut v6, addr("[2001:db8::1]:9"));

    // All or nothing: one refused peer installs none of the others.
    let raw = h.request(
        &mut v4,
        method::CREATE_PERMISSION,
        &[
            RequestAttr::XorPeerAddress(addr(PEER)),
            RequestAttr::XorPeerAddress(addr("10.0.0.1:9")),
        ],
    );
    error(&raw, method::CREATE_PERMISSION, 403);
    let relay = h.binds[0].0;
    assert_eq!(h.peer_datagram(relay, addr(PEER), b"x"), None);
}

/// The contrast to the 403 above: `allowed-peer-ip` overrides the default deny list.
#[test]
fn allowed_peer_ip_lets_loopback_through() {
    let mut h = Harness::new("allowed-peer-ip = [\"127.0.0.1\"]");
    let mut c = alice();
    let (_, relay) = h.allocate(&mut c, &[]);
    let peer = addr("127.0.0.1:9");
    h.permit(&mut c, peer);
    assert!(h.peer_datagram(relay, peer, b"x").is_some());
    let raw = h.request(
        &mut c,
        method::CREATE_PERMISSION,
        &[RequestAttr::XorPeerAddress(addr("127.0.0.2:9"))],
    );
    error(&raw, method::CREATE_PERMISSION, 403);
}

/// RFC 8489 section 6.3.1: unknown comprehension-required attributes get a 420 listing
/// them in UNKNOWN-ATTRIBUTES; for TURN requests after authentication, so the 420 is
/// integrity-protected. Binding needs no authentication.
#[test]
fn unknown_comprehension_required_attribute_is_420_listing_it() {
    let mut h = Harness::new("");
    let mut c = alice();
    let attrs = [RequestAttr::RequestedTransport(UDP)];
    let extra: [(u16, &[u8]); 1] = [(UNKNOWN_ATTR, &[1, 2, 3, 4])];
    let raw = h.request_with(&mut c, method::ALLOCATE, &attrs, &extra, true);
    let r = error(&raw, method::ALLOCATE, 420);
    assert_eq!(r.unknown_attributes, vec![UNKNOWN_ATTR]);
    assert!(verifies(&raw, &c.key));
    assert_eq!(h.server.allocation_count(), 0);

    let txn = h.next_txn();
    let msg = build(method::BINDING, &txn, &[], &extra, None, true);
    let raw = h.exchange(c.tuple, &msg);
    let r = error(&raw, method::BINDING, 420);
    assert_eq!(r.unknown_attributes, vec![UNKNOWN_ATTR]);
    assert!(!has_integrity(&raw));
    // Comprehension-optional unknowns (0x8000 and up) are ignored.
    let msg = build(method::BINDING, &txn, &[], &[(0xC001, &[0; 4])], None, true);
    success(&h.exchange(c.tuple, &msg), method::BINDING);
}

/// RFC 8656 section 5: every request but Allocate on a 5-tuple without an allocation is
/// a 437 (here Refresh, CreatePermission and ChannelBind, after authentication).
#[test]
fn requests_without_an_allocation_are_437() {
    let mut h = Harness::new("");
    let mut c = alice();
    let peer = RequestAttr::XorPeerAddress(addr(PEER));
    for (m, attrs) in [
        (method::REFRESH, vec![]),
        (method::CREATE_PERMISSION, vec![peer.clone()]),
        (
            method::CHANNEL_BIND,
            vec![RequestAttr::ChannelNumber(CHANNEL), peer],
        ),
    ] {
        let raw = h.request(&mut c, m, &attrs);
        error(&raw, m, 437);
        assert!(verifies(&raw, &c.key));
    }
    assert_eq!(h.server.deadline_count(), 0);
}

/// RFC 8489 section 9.2.4: a nonce past its lifetime (600 s) is a 438 with a fresh
/// NONCE and REALM and no MESSAGE-INTEGRITY; the fresh nonce then works. The server's
/// wall clock follows the virtual one from the (Instant, unix) pair it was given.
#[test]
fn nonce_older_than_600_seconds_is_438_and_the_fresh_one_works() {
    let mut h = Harness::new("");
    let mut c = alice();
    let attrs = [RequestAttr::XorPeerAddress(addr(PEER))];
    h.challenge(&mut c, method::CREATE_PERMISSION, &attrs);
    let old = c.nonce.clone();

    // At 600 s the nonce still authenticates (the 437 comes after authentication).
    h.advance_to(600);
    let txn = h.next_txn();
    let msg = c.signed(&txn, method::CREATE_PERMISSION, &attrs, &[], true);
    error(&h.exchange(c.tuple, &msg), method::CREATE_PERMISSION, 437);

    h.advance_to(601);
    let txn = h.next_txn();
    let msg = c.signed(&txn, method::CREATE_PERMISSION, &attrs, &[], true);
    let raw = h.exchange(c.tuple, &msg);
    let r = error(&raw, method::CREATE_PERMISSION, 438);
    assert_eq!(r.realm.as_deref(), Some(REALM));
    assert!(r.nonce.is_some() && r.nonce != old);
    assert!(!has_integrity(&raw));

    c.nonce = r.nonce;
    let (r, _) = h.allocate(&mut c, &[]);
    assert_eq!(r.lifetime, Some(600));
}

/// RFC 8656 section 7.2: REQUESTED-ADDRESS-FAMILY naming a family the server has no
/// relay address for is a 440.
#[test]
fn requested_address_family_without_a_relay_is_440() {
    let mut h = Harness::new("");
    let mut c = alice();
    let raw = h.allocate_raw(&mut c, &[RequestAttr::RequestedFamily(Family::V6)]);
    error(&raw, method::ALLOCATE, 440);
    assert!(verifies(&raw, &c.key));
    assert!(h.binds.is_empty());
    let (r, _) = h.allocate(&mut c, &[RequestAttr::RequestedFamily(Family::V4)]);
    assert!(r.xor_relayed.is_some_and(|a| a.is_ipv4()));
}

/// RFC 8656 section 5: a non-Allocate request on an allocation from a different
/// USERNAME is a 441 and changes nothing; an Allocate on the 5-tuple in use is a 437
/// whoever sends it (section 7.2).
#[test]
fn another_user_on_the_same_five_tuple_is_441_and_the_allocation_is_untouched() {
    let mut h = Harness::new("");
    let mut owner = alice();
    let (r, relay) = h.allocate(&mut owner, &[]);
    let mut intruder = Client::new("203.0.113.10:40000", "bob", "bob-pw");
    let peer = addr(PEER);
    for (m, attrs) in [
        (method::REFRESH, vec![RequestAttr::Lifetime(0)]),
        (
            method::CREATE_PERMISSION,
            vec![RequestAttr::XorPeerAddress(peer)],
        ),
        (
            method::CHANNEL_BIND,
            vec![
                RequestAttr::ChannelNumber(CHANNEL),
                RequestAttr::XorPeerAddress(peer),
            ],
        ),
    ] {
        let raw = h.request(&mut intruder, m, &attrs);
        error(&raw, m, 441);
    }
    let raw = h.allocate_raw(&mut intruder, &[]);
    error(&raw, method::ALLOCATE, 437);

    assert_eq!(h.server.allocation_count(), 1);
    assert_eq!(h.server.relayed_address(&owner.tuple), r.xor_relayed);
    assert_eq!(
        h.server.deadline_count(),
        1,
        "no permission or channel installed"
    );
    assert!(h.closed.is_empty());
    assert_eq!(h.peer_datagram(relay, peer, b"x"), None);
    assert_eq!(h.binds.len(), 1);
    h.advance_to(599);
    assert!(h.closed.is_empty(), "the lifetime is unchanged");
    assert_eq!(h.refresh(&mut owner, None).lifetime, Some(600));
}

/// RFC 8656 section 7.2: REQUESTED-TRANSPORT other than UDP (and TCP, RFC 6062: see
/// `tcp_relay`) is a 442; the attribute is patched to SCTP (132) before the request is
/// sealed.
#[test]
fn requested_transport_sctp_is_442() {
    let mut h = Harness::new("");
    let mut c = alice();
    let attrs = [RequestAttr::RequestedTransport(UDP)];
    h.challenge(&mut c, method::ALLOCATE, &attrs);
    let txn = h.next_txn();
    let mut msg = c.unsealed(&txn, method::ALLOCATE, &attrs);
    patch_attr(&mut msg, attr::REQUESTED_TRANSPORT, &[132, 0, 0, 0]);
    integrity::seal(&mut msg, Some(&c.key), true);
    let raw = h.exchange(c.tuple, &msg);
    error(&raw, method::ALLOCATE, 442);
    assert!(verifies(&raw, &c.key));
    assert!(h.binds.is_empty());
    assert_eq!(h.server.allocation_count(), 0);
}

/// RFC 8656 sections 10.2 and 12.2: a peer of the other family than the relayed address
/// is a 443, IPv4-mapped IPv6 included (its family on the wire is IPv6).
#[test]
fn peer_of_the_other_family_than_the_relay_is_443() {
    let mut h = Harness::new(DUAL_STACK);
    let mut c = alice();
    h.allocate(&mut c, &[]);
    for peer in ["[2001:db8::1]:9", "[::ffff:198.51.100.1]:9"] {
        let raw = h.request(
            &mut c,
            method::CREATE_PERMISSION,
            &[RequestAttr::XorPeerAddress(addr(peer))],
        );
        error(&raw, method::CREATE_PERMISSION, 443);
        assert!(verifies(&raw, &c.key));
        let raw = h.bind_channel(&mut c, CHANNEL, addr(peer));
        error(&raw, method::CHANNEL_BIND, 443);
    }
    let mut v6 = Client::new("203.0.113.10:2", "alice", "alice-pw");
    h.allocate(&mut v6, &[RequestAttr::RequestedFamily(Family::V6)]);
    let raw = h.bind_channel(&mut v6, CHANNEL, addr(PEER));
    error(&raw, method::CHANNEL_BIND, 443);
}

/// RFC 8656 section 7.2: a user at `user-quota` allocations gets 486 on another
/// 5-tuple; other users are not affected.
#[test]
fn allocation_over_the_user_quota_is_486() {
    let mut h = Harness::new("user-quota = 1");
    let mut first = alice();
    h.allocate(&mut first, &[]);
    let mut second = Client::new("203.0.113.11:40000", "alice", "alice-pw");
    let raw = h.allocate_raw(&mut second, &[]);
    error(&raw, method::ALLOCATE, 486);
    assert!(verifies(&raw, &second.key));
    let mut bob = Client::new("203.0.113.12:40000", "bob", "bob-pw");
    h.allocate(&mut bob, &[]);
    assert_eq!(h.server.allocation_count(), 2);
    // Freeing the first allocation makes room again.
    h.refresh(&mut first, Some(0));
    h.allocate(&mut second, &[]);
}

/// RFC 8656 section 7.2: 508 Insufficient Capacity when the server's total quota is
/// reached.
#[test]
fn allocation_over_the_total_quota_is_508() {
    let mut h = Harness::new("total-quota = 1");
    let mut a = alice();
    h.allocate(&mut a, &[]);
    let mut bob = Client::new("203.0.113.12:40000", "bob", "bob-pw");
    let raw = h.allocate_raw(&mut bob, &[]);
    error(&raw, method::ALLOCATE, 508);
    assert!(verifies(&raw, &bob.key));
    assert_eq!(h.server.allocation_count(), 1);
}

/// RFC 8656 section 7.2: 508 when no relay port is left; a deleted allocation's port
/// can be allocated again.
#[test]
fn exhausted_port_range_is_508_until_a_port_is_freed() {
    let mut h = Harness::new("min-port = 50000\nmax-port = 50000");
    let mut a = alice();
    let (r, _) = h.allocate(&mut a, &[]);
    assert_eq!(r.xor_relayed.map(|x| x.port()), Some(50000));
    let mut bob = Client::new("203.0.113.12:40000", "bob", "bob-pw");
    let raw = h.allocate_raw(&mut bob, &[]);
    error(&raw, method::ALLOCATE, 508);
    assert_eq!(h.binds.len(), 1);
    h.refresh(&mut a, Some(0));
    let (r, _) = h.allocate(&mut bob, &[]);
    assert_eq!(r.xor_relayed.map(|x| x.port()), Some(50000));
}

/// RFC 8656 section 7.2: when the I/O layer cannot bind any relay socket the Allocate
/// gets a 508 after a bounded number of attempts, and everything it held (the quota,
/// the ports, the 5-tuple) is released.
#[test]
fn relay_that_never_binds_is_508_after_bounded_retries() {
    let mut h = Harness::new("total-quota = 1\nmin-port = 50000\nmax-port = 50009");
    h.bind_ok = false;
    let mut c = alice();
    let raw = h.allocate_raw(&mut c, &[]);
    error(&raw, method::ALLOCATE, 508);
    assert!(verifies(&raw, &c.key));
    assert!(
        (2..=8).contains(&h.binds.len()),
        "{} bind attempts",
        h.binds.len()
    );
    assert!(h.binds.iter().all(|(id, _)| *id == h.binds[0].0));
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.server.deadline_count(), 0);
    assert!(h.closed.is_empty(), "no socket was ever opened");

    h.bind_ok = true;
    h.allocate(&mut c, &[]);
    assert_eq!(h.server.allocation_count(), 1);
}
