//! Usage records (`Event::Ended`) in virtual time: one per complete allocation when it
//! ends, whatever ends it (expiry, Refresh 0, a closed connection, an operator, a
//! revocation, the server stopping), none for a move (RFC 8016) or an Allocate that
//! never completed; the exact duration and start, and the packets and payload bytes the
//! data path relayed each way: ChannelData, Send and Data indications (RFC 8656
//! sections 11 and 12) and RFC 6062 connections.

use super::prelude::*;
use crate::core_harness::{CHANNEL_PEER, PERMITTED_PEER, RELAY_CHANNEL, alice_tcp};
use ferroturn_core::server::stats::Traffic;
use ferroturn_core::server::{AllocId, Deletion, Handoff, SessionFilter, Transport, Usage};
use std::time::Duration;

/// The one record `h` has seen (panics unless exactly one).
fn the_record(h: &Harness) -> &Usage {
    assert_eq!(h.ended.len(), 1, "{:#?}", h.ended);
    &h.ended[0]
}

fn traffic(packets: u64, bytes: u64) -> Traffic {
    Traffic { packets, bytes }
}

/// Relays a known mix on `relay` (set up by `relay_ready`): up, 3 ChannelData (10, 20
/// and 30 bytes) and 2 Send indications (5 and 7); down, 2 datagrams from the channel's
/// peer (100, 200: ChannelData) and 1 from the permitted peer (50: a Data indication).
/// What is not relayed (a peer without a permission, an unbound channel) is not
/// counted. Returns (up, down).
fn relay_a_known_mix(h: &mut Harness, c: &Client, relay: AllocId) -> (Traffic, Traffic) {
    for n in [10, 20, 30] {
        let out = h.relay_from_client(c.tuple, &channel_data(RELAY_CHANNEL, &vec![1; n]));
        assert!(out.is_some());
    }
    for n in [5, 7] {
        let txn = h.next_txn();
        let msg = send_indication(&txn, addr(PERMITTED_PEER), &vec![2; n], &[]);
        assert!(h.relay_from_client(c.tuple, &msg).is_some());
    }
    for n in [100, 200] {
        assert!(
            h.peer_datagram(relay, addr(CHANNEL_PEER), &vec![3; n])
                .is_some()
        );
    }
    assert!(
        h.peer_datagram(relay, addr(PERMITTED_PEER), &[4; 50])
            .is_some()
    );
    // Dropped: neither is counted.
    assert!(h.peer_datagram(relay, addr(PEER), &[5; 999]).is_none());
    let unbound = channel_data(RELAY_CHANNEL + 7, &[6; 999]);
    assert!(h.relay_from_client(c.tuple, &unbound).is_none());
    (traffic(5, 72), traffic(3, 350))
}

/// RFC 8656 section 8.2: a Refresh with LIFETIME 0 ends the allocation at once; its
/// record names the client's transport, the user, the realm, the relayed address, the
/// start on the wall clock and the exact time it lived, and counts what was relayed.
#[test]
fn refresh_zero_gives_one_record_with_what_was_relayed() {
    let mut h = Harness::new("");
    h.advance_to(5);
    let (mut c, relay) = h.relay_ready();
    let relayed = h.server.relayed_address(&c.tuple).expect("relayed");
    let (up, down) = relay_a_known_mix(&mut h, &c, relay);
    h.advance_to(65);
    assert!(h.ended.is_empty(), "nothing before it ends");
    h.refresh(&mut c, Some(0));

    let u = the_record(&h);
    assert_eq!(u.reason, Deletion::ByClient);
    assert_eq!(u.reason.name(), "client");
    assert_eq!((u.user.as_str(), u.username.as_str()), ("alice", "alice"));
    assert_eq!(u.realm, REALM);
    assert_eq!(u.five_tuple, c.tuple);
    assert_eq!(u.relays.first.relayed, relayed);
    assert_eq!(u.relays.second, None);
    assert!(!u.tcp);
    assert_eq!(u.start_unix, UNIX0 + 5);
    assert_eq!(u.duration, Duration::from_secs(60));
    assert_eq!(u.traffic, [up, down]);
    assert_eq!(h.closed, vec![relay], "then its relay closes");
    h.advance_to(700);
    assert_eq!(h.ended.len(), 1, "and nothing more");
}

/// RFC 8656 section 7: an allocation whose lifetime runs out ends at that moment: the
/// record's duration is the lifetime to the nanosecond, however late the driver's timer
/// fires, and its reason is `expired`.
#[test]
fn expiry_gives_the_exact_lifetime_however_late_the_timer_fires() {
    let mut h = Harness::new("");
    h.jump(Duration::from_millis(2500));
    let (mut c, relay) = h.relay_ready();
    let (up, down) = relay_a_known_mix(&mut h, &c, relay);
    let r = h.refresh(&mut c, Some(1200));
    assert_eq!(r.lifetime, Some(1200));
    // The timer fires 7.25 s late (a driver busy elsewhere).
    h.jump(Duration::from_millis(1_207_250));
    let u = the_record(&h);
    assert_eq!(u.reason, Deletion::Expired);
    assert_eq!(u.reason.name(), "expired");
    assert_eq!(u.duration, Duration::from_secs(1200));
    assert_eq!(u.start_unix, UNIX0 + 2);
    assert_eq!(u.traffic, [up, down]);
    assert_eq!(h.server.stats().allocations_expired, 1);
}

/// An operator's delete, a revocation and the server stopping each end the allocations
/// they name with their own reason; an allocation that was never complete (its relay
/// could not be bound) leaves no record.
#[test]
fn operator_revocation_and_shutdown_name_their_reason() {
    let mut h = Harness::new("");
    let mut a = alice();
    h.allocate(&mut a, &[]);
    let mut b = Client::new("203.0.113.20:40000", "bob", "bob-pw");
    h.allocate(&mut b, &[]);
    let mut a2 = Client::new("203.0.113.10:40001", "alice", "alice-pw");
    h.allocate(&mut a2, &[]);
    h.bind_ok = false;
    let mut failed = Client::new("203.0.113.30:40000", "bob", "bob-pw");
    let raw = h.allocate_raw(&mut failed, &[]);
    error(&raw, method::ALLOCATE, 508);
    assert!(
        h.ended.is_empty(),
        "an Allocate that failed started nothing"
    );

    h.advance_to(10);
    let relayed = h.server.relayed_address(&b.tuple).expect("bob's");
    assert_eq!(h.delete_sessions(&SessionFilter::Relayed(relayed)), 1);
    h.advance_to(20);
    let user = SessionFilter::User("alice".into());
    assert_eq!(h.end_sessions(&user, Deletion::Revoked), 2);
    let reasons: Vec<(SocketAddr, Deletion, u64)> = h
        .ended
        .iter()
        .map(|u| (u.five_tuple.client, u.reason, u.duration.as_secs()))
        .collect();
    assert_eq!(
        reasons[0],
        (b.tuple.client, Deletion::ByOperator, 10),
        "{reasons:?}"
    );
    let mut revoked: Vec<_> = reasons[1..].to_vec();
    revoked.sort_by_key(|r| r.0);
    assert_eq!(
        revoked,
        vec![
            (a.tuple.client, Deletion::Revoked, 20),
            (a2.tuple.client, Deletion::Revoked, 20)
        ]
    );

    let mut c = Client::new("203.0.113.40:40000", "bob", "bob-pw");
    h.bind_ok = true;
    h.allocate(&mut c, &[]);
    h.advance_to(25);
    assert_eq!(h.end_sessions(&SessionFilter::All, Deletion::Shutdown), 1);
    let last = h.ended.last().expect("a record");
    assert_eq!(
        (last.reason, last.reason.name()),
        (Deletion::Shutdown, "shutdown")
    );
    assert_eq!(h.ended.len(), 4);
}

/// A dual allocation (RFC 8656 section 7.2) has two relayed addresses; its record names
/// both, IPv4 first, and counts what either relay carried.
#[test]
fn a_dual_allocation_names_both_relayed_addresses() {
    let mut h = Harness::new(DUAL_STACK);
    let mut c = alice();
    let (_, relay) = h.allocate_dual(&mut c);
    let relayed: Vec<SocketAddr> = h.server.relayed_addresses(&c.tuple).collect();
    let v6 = addr("[2001:db8::1]:5000");
    h.permit(&mut c, v6);
    let txn = h.next_txn();
    assert!(
        h.relay_from_client(c.tuple, &send_indication(&txn, v6, b"six", &[]))
            .is_some()
    );
    assert!(h.peer_datagram(relay, v6, b"back!").is_some());
    h.refresh(&mut c, Some(0));
    let u = the_record(&h);
    assert_eq!(u.relays.first.relayed, relayed[0]);
    assert_eq!(u.relays.second.map(|r| r.relayed), Some(relayed[1]));
    assert_eq!(u.traffic, [traffic(1, 3), traffic(1, 5)]);
}

/// RFC 6062: a TCP allocation's record counts the reads of its connections (each a
/// packet) and their bytes, and a closed control connection ends it as
/// `connection_closed`.
#[test]
fn a_tcp_allocation_counts_its_connections_and_ends_with_its_connection() {
    let mut h = Harness::new("");
    let mut c = alice_tcp("203.0.113.10:40000");
    h.allocate_tcp(&mut c);
    let raw = h.connect(&mut c, addr(PEER));
    let conn = ferroturn_core::server::ConnectionId(connection_id_of(&raw));
    let mut d = alice_tcp("203.0.113.10:40001");
    success(&h.connection_bind(&mut d, conn), method::CONNECTION_BIND);
    for (up, n) in [(true, 1000), (true, 500), (false, 700)] {
        assert_eq!(h.server.handle_tcp_relayed(h.now, conn, up, n), None);
    }
    h.advance_to(3);
    h.server.handle_connection_closed(h.now, c.tuple);
    h.advance_to(3);
    let u = the_record(&h);
    assert!(u.tcp);
    assert_eq!(u.five_tuple.transport, Transport::Tcp);
    assert_eq!(u.reason, Deletion::ConnectionClosed);
    assert_eq!(u.traffic, [traffic(2, 1500), traffic(1, 700)]);
    assert_eq!(u.duration, Duration::from_secs(3));
}

/// RFC 8016: a move is not an end. An allocation moved within its shard and then to
/// another shard keeps its counters and its start; only its end, on the shard it landed
/// on, gives a record, with everything it relayed on either shard.
#[test]
fn a_move_is_not_an_end_and_the_record_counts_both_shards() {
    let (mut s0, mut s1) = Harness::pair("mobility = true");
    s0.advance_to(1);
    s1.advance_to(1);
    let mut a = alice();
    let (r, relay) = s0.allocate(&mut a, &[RequestAttr::MobilityTicket(&[])]);
    let ticket = r.mobility_ticket.expect("a ticket");
    success(
        &s0.bind_channel(&mut a, RELAY_CHANNEL, addr(CHANNEL_PEER)),
        method::CHANNEL_BIND,
    );
    assert!(
        s0.relay_from_client(a.tuple, &channel_data(RELAY_CHANNEL, b"one"))
            .is_some()
    );
    assert!(
        s0.peer_datagram(relay, addr(CHANNEL_PEER), b"two!")
            .is_some()
    );

    // To shard 1, through shard 0.
    s0.advance_to(4);
    s1.advance_to(4);
    a.tuple = udp("203.0.113.10:50000");
    let txn = s1.next_txn();
    let msg = a.signed(
        &txn,
        method::REFRESH,
        &[RequestAttr::MobilityTicket(&ticket)],
        &[],
        true,
    );
    s1.send(a.tuple, &msg);
    let (_, request) = s1.handoffs().remove(0);
    s0.deliver(request);
    let (_, moved) = s0.handoffs().remove(0);
    assert!(matches!(moved, Handoff::Allocation(_)));
    let (adopted, _) = s1.deliver(moved);
    let relay = adopted.expect("adopted");
    assert!(
        s0.ended.is_empty() && s1.ended.is_empty(),
        "a move ends nothing"
    );
    assert!(
        s1.relay_from_client(a.tuple, &channel_data(RELAY_CHANNEL, b"three"))
            .is_some()
    );

    s1.advance_to(9);
    s1.refresh(&mut a, Some(0));
    assert!(s0.ended.is_empty());
    let u = the_record(&s1);
    assert_eq!(u.five_tuple, a.tuple, "where it ended");
    assert_eq!(u.id, relay);
    assert_eq!(u.start_unix, UNIX0 + 1);
    assert_eq!(u.duration, Duration::from_secs(8));
    assert_eq!(u.traffic, [traffic(2, 8), traffic(1, 4)]);
}
