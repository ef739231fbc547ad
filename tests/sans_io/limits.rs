//! Rates and bandwidth: unauthenticated answers per source, bytes per allocation and in
//! total, new peers per allocation.

use crate::prelude::*;

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
