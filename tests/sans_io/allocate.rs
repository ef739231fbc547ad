//! Allocate, Refresh and the allocation's lifetime (RFC 8656 sections 7.2 and 8.2).

use crate::prelude::*;

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

/// RFC 8656 section 18.9: DONT-FRAGMENT on an Allocate is served (the relay socket sets
/// DF), not answered 420; such an allocation's channels stay in user space, since the
/// kernel fast path does not set DF.
#[test]
fn dont_fragment_is_served_and_kept_out_of_the_kernel() {
    let mut h = Harness::with_offload("");
    let mut c = alice();
    h.allocate(&mut c, &[RequestAttr::DontFragment]);
    assert_eq!(h.binds_dont_fragment, vec![true]);
    success(
        &h.bind_channel(&mut c, 0x4001, addr("198.51.100.2:6000")),
        method::CHANNEL_BIND,
    );
    assert!(h.kernel.is_empty(), "DF allocations are not offloaded");

    let mut b = Client::new("203.0.113.20:40000", "bob", "bob-pw");
    h.allocate(&mut b, &[]);
    assert_eq!(h.binds_dont_fragment, vec![true, false]);
}

/// `allocation-default-address-family` for an Allocate without REQUESTED-ADDRESS-FAMILY:
/// IPv4 by default (RFC 8656 section 7.2), the client's own family with `keep`, IPv6
/// with `ipv6`; a family without a relay address falls back to the other; a named
/// family always wins.
#[test]
fn the_default_family_is_ipv4_or_the_clients_or_ipv6_as_configured() {
    let both = "relay-ip = [\"127.0.0.1\", \"::1\"]";
    let v6_client = |n: u16| Client::new(&format!("[2001:db8::10]:{n}"), "alice", "alice-pw");
    let v4_client = |n: u16| Client::new(&format!("203.0.113.10:{n}"), "alice", "alice-pw");
    for (setting, v4_gets_v6, v6_gets_v6) in [
        ("", false, false),
        ("allocation-default-address-family = \"ipv4\"", false, false),
        ("allocation-default-address-family = \"keep\"", false, true),
        ("allocation-default-address-family = \"ipv6\"", true, true),
    ] {
        let mut h = Harness::new(&format!("{both}\n{setting}"));
        let (r, _) = h.allocate(&mut v4_client(1), &[]);
        assert_eq!(
            r.xor_relayed.unwrap().is_ipv6(),
            v4_gets_v6,
            "{setting:?}, IPv4 client"
        );
        let (r, _) = h.allocate(&mut v6_client(2), &[]);
        assert_eq!(
            r.xor_relayed.unwrap().is_ipv6(),
            v6_gets_v6,
            "{setting:?}, IPv6 client"
        );
        let (r, _) = h.allocate(
            &mut v6_client(3),
            &[RequestAttr::RequestedFamily(Family::V4)],
        );
        assert!(
            r.xor_relayed.unwrap().is_ipv4(),
            "{setting:?}: named family"
        );
    }
    // Only an IPv4 relay: `keep` gives an IPv6 client IPv4 rather than 440.
    let mut h = Harness::new("allocation-default-address-family = \"keep\"");
    let (r, _) = h.allocate(&mut v6_client(4), &[]);
    assert!(r.xor_relayed.unwrap().is_ipv4());
}

/// The gauges count allocations by client transport (TLS is TCP to the core), and an
/// allocation leaves its transport's count when it is deleted.
#[test]
fn gauges_count_allocations_by_client_transport() {
    let mut h = Harness::new("");
    let mut over_udp = alice();
    h.allocate(&mut over_udp, &[]);
    let mut over_udp2 = Client::new("203.0.113.11:40000", "alice", "alice-pw");
    h.allocate(&mut over_udp2, &[]);
    let mut over_tcp = crate::core_harness::alice_tcp("203.0.113.12:40000");
    h.allocate(&mut over_tcp, &[]);
    let mut over_dtls = Client::new("203.0.113.13:40000", "alice", "alice-pw");
    over_dtls.tuple.transport = ferroturn_core::server::Transport::Dtls;
    h.allocate(&mut over_dtls, &[]);
    let g = h.server.gauges();
    assert_eq!(g.allocations, 4);
    assert_eq!(g.allocations_by_transport, [2, 1, 1]);

    h.refresh(&mut over_tcp, Some(0));
    h.refresh(&mut over_udp, Some(0));
    let g = h.server.gauges();
    assert_eq!(g.allocations, 2);
    assert_eq!(g.allocations_by_transport, [1, 0, 1]);
}
