//! Virtual-time tests of the sans-IO core: `Server` is driven directly, time is a base
//! `Instant` plus offsets, and a small simulator in this file plays the I/O layer (it
//! answers every `BindRelay`, collects transmits and records closed relays). No sockets,
//! no sleeping, no runtime. Each test is named for what it proves and cites the section
//! of RFC 8656 (TURN) or RFC 8489 (STUN) it checks.

#[path = "common/core_harness.rs"]
mod core_harness;

use core_harness::wire::{
    TCP, UDP, UNKNOWN_ATTR, addr, attr_types, build, channel_data, data_indication, error,
    has_fingerprint, has_integrity, header, patch_attr, push_attr, send_indication, success,
    verifies,
};
use core_harness::{Client, Harness, REALM, UNIX0, alice, to_client, udp};
use ferroturn::client::codec::RequestAttr;
use ferroturn_core::proto::codec::Family;
use ferroturn_core::proto::integrity;
use ferroturn_core::proto::wire::{Class, attr, method};
use ferroturn_core::server::Path;
use std::net::{IpAddr, SocketAddr};

const CHANNEL: u16 = 0x4000;
const DUAL_STACK: &str = "relay-ip = [\"127.0.0.1\", \"::1\"]";
const PEER: &str = "198.51.100.1:5000";

// ---------------------------------------------------------------------------------
// Allocate (RFC 8656 section 7.2).

/// RFC 8656 section 7.2: the success response carries XOR-RELAYED-ADDRESS (the relay
/// the driver bound), LIFETIME and XOR-MAPPED-ADDRESS (the client's reflexive address),
/// and is integrity-protected with the request's key (RFC 8489 section 9.2.4).
#[test]
fn allocate_success_carries_relayed_and_mapped_addresses_and_integrity() {
    let mut h = Harness::new("");
    let mut c = alice();
    let raw = h.allocate_raw(&mut c, &[]);
    // Message type 0x0103: Allocate success (RFC 8489 section 5, RFC 8656 section 17).
    assert_eq!(&raw[..2], &[0x01, 0x03]);
    let r = success(&raw, method::ALLOCATE);
    let (_, local) = h.binds[0];
    assert_eq!(h.binds.len(), 1);
    assert_eq!(local.ip(), IpAddr::from([127, 0, 0, 1]));
    assert!((49152..=65535).contains(&local.port()));
    assert_eq!(r.xor_relayed, Some(local));
    assert_eq!(r.xor_mapped, Some(c.tuple.client));
    assert_eq!(r.lifetime, Some(600));
    assert!(verifies(&raw, &c.key));
    assert!(!verifies(&raw, &[0u8; 16]));
    assert_eq!(h.server.allocation_count(), 1);
    assert_eq!(h.server.deadline_count(), 1);
    assert_eq!(h.server.poll_timeout(), Some(h.at(600)));
}

/// RFC 8656 section 7.2: the granted lifetime is min(requested, maximum), raised to the
/// default when that is smaller; no LIFETIME gets the default.
#[test]
fn allocate_lifetime_defaults_to_600_caps_at_3600_and_never_goes_below_default() {
    let mut h = Harness::new("");
    for (client, requested, granted) in [
        ("203.0.113.10:1", None, 600),
        ("203.0.113.10:2", Some(5000), 3600),
        ("203.0.113.10:3", Some(10), 600),
        ("203.0.113.10:4", Some(1800), 1800),
    ] {
        let mut c = Client::new(client, "alice", "alice-pw");
        let attrs: Vec<RequestAttr<'_>> =
            requested.map(RequestAttr::Lifetime).into_iter().collect();
        let (r, _) = h.allocate(&mut c, &attrs);
        assert_eq!(r.lifetime, Some(granted), "requested {requested:?}");
    }
}

/// RFC 8489 section 14.7: FINGERPRINT in a response when the request had one, and not
/// otherwise; MESSAGE-INTEGRITY verifies either way (RFC 8489 section 14.5).
#[test]
fn allocate_response_has_fingerprint_exactly_when_the_request_did() {
    let mut h = Harness::new("");
    let mut with = Client::new("203.0.113.10:1", "alice", "alice-pw");
    let raw = h.allocate_raw(&mut with, &[]);
    assert!(has_fingerprint(&raw));
    assert!(verifies(&raw, &with.key));

    let mut without = Client::new("203.0.113.10:2", "alice", "alice-pw");
    let attrs = [RequestAttr::RequestedTransport(UDP)];
    h.challenge(&mut without, method::ALLOCATE, &attrs);
    let raw = h.request_with(&mut without, method::ALLOCATE, &attrs, &[], false);
    success(&raw, method::ALLOCATE);
    assert!(!has_fingerprint(&raw));
    assert_eq!(attr_types(&raw).last(), Some(&attr::MESSAGE_INTEGRITY));
    assert!(verifies(&raw, &without.key));
}

/// RFC 8656 section 7.2 and RFC 8489 section 6.3.1: a retransmitted Allocate (same
/// transaction) gets the original success byte for byte and binds nothing new; a new
/// Allocate on the 5-tuple is 437 Allocation Mismatch.
#[test]
fn retransmitted_allocate_is_answered_identically_and_a_new_one_gets_437() {
    let mut h = Harness::new("");
    let mut c = alice();
    let attrs = [RequestAttr::RequestedTransport(UDP)];
    h.challenge(&mut c, method::ALLOCATE, &attrs);
    let txn = h.next_txn();
    let msg = c.signed(&txn, method::ALLOCATE, &attrs, &[], true);
    let first = h.exchange(c.tuple, &msg);
    success(&first, method::ALLOCATE);
    h.advance_to(5);
    let again = h.exchange(c.tuple, &msg);
    assert_eq!(first, again);
    assert_eq!(h.binds.len(), 1);
    assert_eq!(h.server.allocation_count(), 1);

    let raw = h.allocate_raw(&mut c, &[]);
    // Message type 0x0113: Allocate error response.
    assert_eq!(&raw[..2], &[0x01, 0x13]);
    error(&raw, method::ALLOCATE, 437);
    assert!(verifies(&raw, &c.key));
    assert_eq!(h.binds.len(), 1);
}

/// RFC 8656 section 8.2 and RFC 8489 section 6.3.1: a retransmission of the Refresh
/// that deleted the allocation gets the same success again, not a 437.
#[test]
fn retransmitted_refresh_zero_after_deletion_is_answered_identically() {
    let mut h = Harness::new("");
    let mut c = alice();
    let (_, relay) = h.allocate(&mut c, &[]);
    let txn = h.next_txn();
    let msg = c.signed(
        &txn,
        method::REFRESH,
        &[RequestAttr::Lifetime(0)],
        &[],
        true,
    );
    let first = h.exchange(c.tuple, &msg);
    assert_eq!(success(&first, method::REFRESH).lifetime, Some(0));
    assert_eq!(h.closed, vec![relay]);
    assert_eq!(h.server.allocation_count(), 0);
    h.advance_to(3);
    let again = h.exchange(c.tuple, &msg);
    assert_eq!(first, again);
    assert_eq!(h.closed, vec![relay], "closed once");
}

// ---------------------------------------------------------------------------------
// Permissions and the Send/Data methods (RFC 8656 sections 9 to 11).

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
    // RFC 8656 section 11.2: DONT-FRAGMENT, when the server cannot set the DF bit (this
    // one does not), counts as unknown, so the indication is discarded too.
    let msg = send_indication(&txn, peer, b"data", &[(attr::DONT_FRAGMENT, &[])]);
    assert_eq!(h.relay_from_client(c.tuple, &msg), None);
    // A comprehension-optional unknown attribute does not stop it.
    let msg = send_indication(&txn, peer, b"data", &[(0xC0FF, &[0, 0, 0, 0])]);
    assert!(h.relay_from_client(c.tuple, &msg).is_some());
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

// ---------------------------------------------------------------------------------
// Channels (RFC 8656 section 12).

/// RFC 8656 sections 12.2, 12.6 and 12.7: after ChannelBind, ChannelData from the
/// client goes to the peer and the peer's datagrams come back as ChannelData with the
/// channel number; the bind also installed the permission for the peer's IP.
#[test]
fn channel_data_is_relayed_both_ways_after_channel_bind() {
    let mut h = Harness::new("");
    let mut c = alice();
    let (_, relay) = h.allocate(&mut c, &[]);
    let peer = addr(PEER);
    let raw = h.bind_channel(&mut c, CHANNEL, peer);
    success(&raw, method::CHANNEL_BIND);
    assert!(verifies(&raw, &c.key));

    let out = h.relay_from_client(c.tuple, &channel_data(CHANNEL, b"ping"));
    assert_eq!(out, Some((Path::Peer { relay, peer }, b"ping".to_vec())));
    assert_eq!(
        h.relay_from_client(c.tuple, &channel_data(CHANNEL + 1, b"ping")),
        None
    );

    let (path, msg) = h.peer_datagram(relay, peer, b"pong!").expect("relayed");
    assert_eq!(path, to_client(c.tuple));
    assert_eq!(msg, channel_data(CHANNEL, b"pong!"), "no padding over UDP");
    // Another port of the same IP has the permission but no channel: Data indication.
    let other = addr("198.51.100.1:5001");
    let (_, msg) = h.peer_datagram(relay, other, b"via data").expect("relayed");
    assert_eq!(data_indication(&msg), (other, b"via data".to_vec()));
}

/// RFC 8656 section 12: a binding lasts 600 s, then its number and its peer stay
/// reserved for 5 more minutes, during which neither may be bound elsewhere.
#[test]
fn channel_binding_expires_after_600_seconds_then_cools_down_for_300() {
    let mut h = Harness::new("");
    let mut c = alice();
    let (_, relay) = h.allocate(&mut c, &[RequestAttr::Lifetime(3600)]);
    let peer = addr(PEER);
    success(&h.bind_channel(&mut c, CHANNEL, peer), method::CHANNEL_BIND);
    // Keep the permission alive (it lasts 300 s, the channel 600 s).
    h.advance_to(290);
    h.permit(&mut c, peer);
    h.advance_to(580);
    h.permit(&mut c, peer);

    h.advance_to(599);
    let ping = channel_data(CHANNEL, b"ping");
    assert!(h.relay_from_client(c.tuple, &ping).is_some());
    let (_, msg) = h.peer_datagram(relay, peer, b"pong").expect("relayed");
    assert_eq!(msg, channel_data(CHANNEL, b"pong"));

    h.advance_to(600);
    assert_eq!(h.relay_from_client(c.tuple, &ping), None);
    let (_, msg) = h
        .peer_datagram(relay, peer, b"pong")
        .expect("permission still live");
    assert_eq!(data_indication(&msg), (peer, b"pong".to_vec()));
    let other_peer = addr("198.51.100.2:5000");
    let raw = h.bind_channel(&mut c, CHANNEL, other_peer);
    error(&raw, method::CHANNEL_BIND, 400);
    error(
        &h.bind_channel(&mut c, CHANNEL + 1, peer),
        method::CHANNEL_BIND,
        400,
    );

    h.advance_to(900);
    success(
        &h.bind_channel(&mut c, CHANNEL, other_peer),
        method::CHANNEL_BIND,
    );
    let out = h.relay_from_client(c.tuple, &ping);
    assert_eq!(
        out,
        Some((
            Path::Peer {
                relay,
                peer: other_peer
            },
            b"ping".to_vec()
        ))
    );
}

/// RFC 8656 section 12.2: a bound number cannot move to another peer nor a bound peer
/// to another number (400); binding the same pair again refreshes it.
#[test]
fn channel_rebinding_to_another_peer_or_number_is_400_and_the_same_pair_refreshes() {
    let mut h = Harness::new("");
    let mut c = alice();
    let (_, relay) = h.allocate(&mut c, &[RequestAttr::Lifetime(3600)]);
    let peer = addr(PEER);
    success(&h.bind_channel(&mut c, CHANNEL, peer), method::CHANNEL_BIND);
    let raw = h.bind_channel(&mut c, CHANNEL, addr("198.51.100.2:5000"));
    error(&raw, method::CHANNEL_BIND, 400);
    assert!(verifies(&raw, &c.key));
    let raw = h.bind_channel(&mut c, CHANNEL + 1, peer);
    error(&raw, method::CHANNEL_BIND, 400);
    // Same IP, other port: a different transport address, so also a different peer.
    let raw = h.bind_channel(&mut c, CHANNEL, addr("198.51.100.1:5001"));
    error(&raw, method::CHANNEL_BIND, 400);

    h.advance_to(500);
    success(&h.bind_channel(&mut c, CHANNEL, peer), method::CHANNEL_BIND);
    h.advance_to(1099);
    let ping = channel_data(CHANNEL, b"ping");
    assert_eq!(
        h.relay_from_client(c.tuple, &ping),
        Some((Path::Peer { relay, peer }, b"ping".to_vec()))
    );
    h.advance_to(1100);
    assert_eq!(h.relay_from_client(c.tuple, &ping), None);
}

/// RFC 8656 section 12.2: a CHANNEL-NUMBER outside the channel range is a 400.
/// (0x4000-0x7FFF is accepted, a deliberate widening of RFC 8656's 0x4000-0x4FFF for
/// RFC 5766 clients; both numbers here are outside either range.)
#[test]
fn channel_number_out_of_range_is_400() {
    let mut h = Harness::new("");
    let mut c = alice();
    h.allocate(&mut c, &[]);
    for number in [0x3FFF, 0x8000] {
        let raw = h.bind_channel(&mut c, number, addr(PEER));
        error(&raw, method::CHANNEL_BIND, 400);
        assert!(verifies(&raw, &c.key));
    }
    assert_eq!(h.server.deadline_count(), 1, "nothing was installed");
}

// ---------------------------------------------------------------------------------
// Refresh and expiry (RFC 8656 sections 7.2 and 8.2).

/// RFC 8656 section 8.2: a Refresh re-arms the expiry from now, so the allocation
/// outlives its original lifetime.
#[test]
fn refresh_extends_the_allocation_past_its_original_expiry() {
    let mut h = Harness::new("");
    let mut c = alice();
    let (_, relay) = h.allocate(&mut c, &[]);
    let relayed = h.server.relayed_address(&c.tuple);
    h.advance_to(500);
    assert_eq!(h.refresh(&mut c, None).lifetime, Some(600));
    assert_eq!(h.server.deadline_count(), 1);
    h.advance_to(1099);
    assert_eq!(h.server.relayed_address(&c.tuple), relayed);
    assert!(h.closed.is_empty());
    assert_eq!(h.refresh(&mut c, Some(5000)).lifetime, Some(3600));
    h.advance_to(1099 + 3599);
    assert!(h.closed.is_empty());
    h.advance_to(1099 + 3600);
    assert_eq!(h.closed, vec![relay]);
}

/// RFC 8656 section 8.2: LIFETIME 0 deletes the allocation at once: success with
/// LIFETIME 0, the relay socket closed, nothing left armed, and the 5-tuple free.
#[test]
fn refresh_with_lifetime_zero_deletes_the_allocation_and_closes_its_relay() {
    let mut h = Harness::new("");
    let mut c = alice();
    let (_, relay) = h.allocate(&mut c, &[]);
    h.permit(&mut c, addr(PEER));
    assert_eq!(h.refresh(&mut c, Some(0)).lifetime, Some(0));
    assert_eq!(h.closed, vec![relay]);
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.server.relayed_address(&c.tuple), None);
    assert_eq!(h.peer_datagram(relay, addr(PEER), b"x"), None);
    let raw = h.request(&mut c, method::REFRESH, &[]);
    error(&raw, method::REFRESH, 437);
    // Only the retransmission cache is left, and it goes too.
    h.advance_to(60);
    assert_eq!(h.server.deadline_count(), 0);
    assert_eq!(h.server.poll_timeout(), None);
    h.allocate(&mut c, &[]);
}

/// RFC 8656 section 7.2 (time-to-expiry): without a refresh the allocation is deleted
/// when its lifetime runs out, with its permissions and channels; no timer survives it.
#[test]
fn allocation_expires_after_its_lifetime_and_leaves_no_timer_behind() {
    let mut h = Harness::new("");
    let mut c = alice();
    let (_, relay) = h.allocate(&mut c, &[]);
    let peer = addr(PEER);
    h.advance_to(100);
    success(&h.bind_channel(&mut c, CHANNEL, peer), method::CHANNEL_BIND);
    h.permit(&mut c, addr("198.51.100.9:1"));
    assert_eq!(h.server.deadline_count(), 4);
    h.advance_to(599);
    assert!(h.closed.is_empty());
    assert_eq!(h.server.allocation_count(), 1);
    h.advance_to(600);
    assert_eq!(h.closed, vec![relay]);
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.server.deadline_count(), 0);
    assert_eq!(h.server.poll_timeout(), None);
    assert_eq!(
        h.relay_from_client(c.tuple, &channel_data(CHANNEL, b"x")),
        None
    );
    assert_eq!(h.peer_datagram(relay, peer, b"x"), None);
}

// ---------------------------------------------------------------------------------
// Every error code (RFC 8489 section 14.8, RFC 8656 section 19).

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
/// an unassigned one (0x005) and Connect (0x00A, RFC 6062 TCP relaying, not offered).
#[test]
fn request_of_an_unknown_method_is_400() {
    let mut h = Harness::new("");
    let c = alice();
    for unknown in [0x005, 0x00A] {
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

/// RFC 8656 section 7.2: REQUESTED-TRANSPORT other than UDP is a 442 (the attribute is
/// patched to TCP before the request is sealed).
#[test]
fn requested_transport_tcp_is_442() {
    let mut h = Harness::new("");
    let mut c = alice();
    let attrs = [RequestAttr::RequestedTransport(UDP)];
    h.challenge(&mut c, method::ALLOCATE, &attrs);
    let txn = h.next_txn();
    let mut msg = c.unsealed(&txn, method::ALLOCATE, &attrs);
    patch_attr(&mut msg, attr::REQUESTED_TRANSPORT, &[TCP, 0, 0, 0]);
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

// ---------------------------------------------------------------------------------
// TURN REST credentials (draft-uberti-behave-turn-rest-00).

/// An expired REST username authenticates nothing: 401 like an unknown user.
#[test]
fn expired_rest_username_is_401() {
    let mut h = Harness::new("");
    let mut c = Client::rest("203.0.113.20:1", "new-secret", "carol", UNIX0 - 1);
    let raw = h.allocate_raw(&mut c, &[]);
    error(&raw, method::ALLOCATE, 401);
    assert!(!has_integrity(&raw));
    let mut fresh = Client::rest("203.0.113.20:2", "new-secret", "carol", UNIX0 + 60);
    h.allocate(&mut fresh, &[]);
}

/// With `max-credential-ttl`, a REST username expiring further ahead is refused (401).
#[test]
fn rest_username_beyond_max_credential_ttl_is_401() {
    let mut h = Harness::new("max-credential-ttl = 86400");
    let mut far = Client::rest("203.0.113.20:1", "new-secret", "carol", UNIX0 + 86_401);
    error(&h.allocate_raw(&mut far, &[]), method::ALLOCATE, 401);
    let mut edge = Client::rest("203.0.113.20:2", "new-secret", "carol", UNIX0 + 86_400);
    h.allocate(&mut edge, &[]);
}

/// Every configured secret is accepted (rotation); an unconfigured one is not.
#[test]
fn every_configured_rest_secret_is_accepted() {
    let mut h = Harness::new("");
    let mut old = Client::rest("203.0.113.20:1", "old-secret", "carol", UNIX0 + 3600);
    let mut new = Client::rest("203.0.113.20:2", "new-secret", "carol", UNIX0 + 3600);
    h.allocate(&mut old, &[]);
    h.allocate(&mut new, &[]);
    let mut other = Client::rest("203.0.113.20:3", "retired-secret", "carol", UNIX0 + 3600);
    error(&h.allocate_raw(&mut other, &[]), method::ALLOCATE, 401);
    assert_eq!(h.server.allocation_count(), 2);
}

/// With strict-credential-expiry (the default), a REST username that expires during
/// the allocation's life no longer refreshes it.
#[test]
fn rest_username_that_expired_during_the_allocation_cannot_refresh_it() {
    let mut h = Harness::new("");
    let mut c = Client::rest("203.0.113.20:1", "new-secret", "carol", UNIX0 + 100);
    h.allocate(&mut c, &[]);
    h.advance_to(100);
    h.refresh(&mut c, None);
    h.advance_to(101);
    let raw = h.request(&mut c, method::REFRESH, &[]);
    error(&raw, method::REFRESH, 401);
    assert_eq!(h.server.allocation_count(), 1);
}

// ---------------------------------------------------------------------------------
// Binding (RFC 8489 section 3).

/// RFC 8489 sections 3 and 14.2: a Binding request is answered without authentication
/// with XOR-MAPPED-ADDRESS equal to the client's address, no SOFTWARE (it would only
/// add amplification), and FINGERPRINT only when the request carried one (14.7).
#[test]
fn binding_reflects_the_client_address_and_echoes_fingerprint_only_when_present() {
    let mut h = Harness::new("");
    for client in ["203.0.113.7:5555", "[2001:db8::7]:6666"] {
        let tuple = udp(client);
        let txn = h.next_txn();
        let bare = header(method::BINDING, Class::Request, &txn);
        let raw = h.exchange(tuple, &bare);
        let r = success(&raw, method::BINDING);
        assert_eq!(r.xor_mapped, Some(addr(client)));
        assert_eq!(attr_types(&raw), vec![attr::XOR_MAPPED_ADDRESS]);

        let mut with = bare.clone();
        integrity::seal(&mut with, None, true);
        let raw = h.exchange(tuple, &with);
        let r = success(&raw, method::BINDING);
        assert_eq!(r.xor_mapped, Some(addr(client)));
        assert_eq!(
            attr_types(&raw),
            vec![attr::XOR_MAPPED_ADDRESS, attr::FINGERPRINT]
        );
        assert!(has_fingerprint(&raw));
        assert!(!attr_types(&raw).contains(&attr::SOFTWARE));
    }
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.server.deadline_count(), 0);
}

// ---------------------------------------------------------------------------------
// What the request pipeline ignores or refuses before any handler runs.

/// RFC 8489 section 14.5: attributes after MESSAGE-INTEGRITY (other than
/// MESSAGE-INTEGRITY-SHA256 and FINGERPRINT) are ignored: an unknown
/// comprehension-required attribute there causes no 420, a LIFETIME there grants nothing.
#[test]
fn attributes_after_message_integrity_are_ignored() {
    let mut h = Harness::new("");
    let mut c = alice();
    h.challenge(
        &mut c,
        method::ALLOCATE,
        &[RequestAttr::RequestedTransport(UDP)],
    );
    let txn = h.next_txn();
    let mut m = c.signed(
        &txn,
        method::ALLOCATE,
        &[RequestAttr::RequestedTransport(UDP)],
        &[],
        false,
    );
    push_attr(&mut m, UNKNOWN_ATTR, &[1, 2, 3, 4]);
    push_attr(&mut m, attr::LIFETIME, &3600u32.to_be_bytes());
    let raw = h.exchange(c.tuple, &m);
    let r = success(&raw, method::ALLOCATE);
    assert_eq!(
        r.lifetime,
        Some(600),
        "the LIFETIME after MESSAGE-INTEGRITY was used"
    );
    assert!(verifies(&raw, &c.key));
}

/// RFC 8489 section 14.3 and 14.4: USERNAME under 509 bytes, NONCE under 128 characters;
/// larger ones are refused by the pre-scan with 400 before any decoding, keeping no state.
#[test]
fn oversize_username_or_nonce_is_400_and_keeps_nothing() {
    let mut h = Harness::new("");
    let c = alice();
    for (t, len) in [
        (attr::NONCE, 800usize),
        (attr::USERNAME, 600),
        (attr::REALM, 900),
    ] {
        let txn = h.next_txn();
        let value = vec![b'a'; len];
        let m = build(
            method::ALLOCATE,
            &txn,
            &[RequestAttr::RequestedTransport(UDP)],
            &[(t, &value)],
            Some(&c.key),
            false,
        );
        let raw = h.exchange(c.tuple, &m);
        error(&raw, method::ALLOCATE, 400);
        assert!(!has_integrity(&raw));
    }
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.server.deadline_count(), 0);
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

/// Answers to unauthenticated requests are rate-limited per source IP in bounded memory
/// (the default: 50 per second, bursts of 100): a flood from many ports of one address
/// gets at most the burst answered and keeps no state, while another address is served.
#[test]
fn unauthenticated_flood_is_answered_within_the_per_source_rate() {
    let mut h = Harness::new("");
    let mut answered = 0;
    for port in 0..1000u16 {
        let txn = h.next_txn();
        let msg = build(
            method::ALLOCATE,
            &txn,
            &[RequestAttr::RequestedTransport(UDP)],
            &[],
            None,
            false,
        );
        let (_, out) = h.send(udp(&format!("198.51.100.50:{}", 10000 + port)), &msg);
        answered += out.len();
    }
    assert_eq!(answered, 100, "the burst, and nothing more");
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.server.deadline_count(), 0);
    // Another source is unaffected.
    let mut c = alice();
    h.allocate(&mut c, &[]);
    // A second later the flooding source has 50 more answers.
    h.advance_to(1);
    let mut later = 0;
    for port in 0..200u16 {
        let txn = h.next_txn();
        let msg = build(method::BINDING, &txn, &[], &[], None, false);
        let (_, out) = h.send(udp(&format!("198.51.100.50:{}", 20000 + port)), &msg);
        later += out.len();
    }
    assert_eq!(later, 50);
}

/// `max-bps`: each allocation relays at most this many bytes per second in each
/// direction (a second's worth in a burst); the excess is dropped and counted.
#[test]
fn bandwidth_per_allocation_drops_the_excess_each_direction() {
    let mut h = Harness::new("max-bps = 1000");
    let mut c = alice();
    let (_, relay) = h.allocate(&mut c, &[]);
    let peer = addr(PEER);
    success(&h.bind_channel(&mut c, CHANNEL, peer), method::CHANNEL_BIND);
    let up = |h: &mut Harness| {
        (0..5)
            .filter(|_| {
                h.relay_from_client(c.tuple, &channel_data(CHANNEL, &[7; 300]))
                    .is_some()
            })
            .count()
    };
    assert_eq!(up(&mut h), 3, "900 of 1500 bytes fit in 1000");
    // The other direction has its own budget.
    let down = (0..5)
        .filter(|_| h.peer_datagram(relay, peer, &[8; 300]).is_some())
        .count();
    assert_eq!(down, 3);
    assert_eq!(h.server.stats().bandwidth_dropped, 4);
    h.advance_to(1);
    assert_eq!(up(&mut h), 3, "refilled after a second");
}

/// `bps-capacity`: the server's total; one allocation's traffic leaves less for others.
#[test]
fn total_bandwidth_is_shared_by_every_allocation() {
    let mut h = Harness::new("max-bps = 0\nbps-capacity = 1000");
    let mut a = alice();
    h.allocate(&mut a, &[]);
    let mut b = Client::new("203.0.113.12:40000", "bob", "bob-pw");
    h.allocate(&mut b, &[]);
    let peer = addr(PEER);
    success(&h.bind_channel(&mut a, CHANNEL, peer), method::CHANNEL_BIND);
    success(&h.bind_channel(&mut b, CHANNEL, peer), method::CHANNEL_BIND);
    assert!(
        h.relay_from_client(a.tuple, &channel_data(CHANNEL, &[1; 700]))
            .is_some()
    );
    assert!(
        h.relay_from_client(b.tuple, &channel_data(CHANNEL, &[2; 700]))
            .is_none()
    );
    assert!(
        h.relay_from_client(b.tuple, &channel_data(CHANNEL, &[2; 300]))
            .is_some()
    );
    assert_eq!(h.server.stats().bandwidth_dropped, 1);
}

/// `new-peer-rate`: an allocation adds at most this many new peer addresses per second
/// (bursts of twice that); more is 508 and installs nothing; refreshing a permission
/// is not a new peer.
#[test]
fn new_peer_addresses_per_second_are_capped_with_508() {
    let mut h = Harness::new("new-peer-rate = 2");
    let mut c = alice();
    h.allocate(&mut c, &[]);
    let peer = |i: u8| addr(&format!("198.51.100.{i}:5000"));
    for i in 1..=4 {
        h.permit(&mut c, peer(i));
    }
    let raw = h.request(
        &mut c,
        method::CREATE_PERMISSION,
        &[RequestAttr::XorPeerAddress(peer(5))],
    );
    error(&raw, method::CREATE_PERMISSION, 508);
    let raw = h.bind_channel(&mut c, CHANNEL, peer(6));
    error(&raw, method::CHANNEL_BIND, 508);
    // Known peers are not new: refreshing and binding a channel to one still work.
    h.permit(&mut c, peer(1));
    success(
        &h.bind_channel(&mut c, CHANNEL, peer(2)),
        method::CHANNEL_BIND,
    );
    assert_eq!(h.server.stats().peer_rate_refused, 2);
    assert!(
        h.relay_from_client(c.tuple, &send_indication(&[9; 12], peer(5), b"x", &[]))
            .is_none()
    );
    h.advance_to(1);
    h.permit(&mut c, peer(5));
    h.permit(&mut c, peer(6));
}
