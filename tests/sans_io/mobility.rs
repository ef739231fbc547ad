//! Mobility with TURN (RFC 8016): MOBILITY-TICKETs (section 3.1), moves of an allocation
//! to a new 5-tuple (section 3.2.2) within one shard and from one shard to another, and
//! every misuse of a ticket: tampered, another allocation's, another user's credentials,
//! after the allocation ended, with mobility off.

use crate::core_harness::{CHANNEL_PEER, PERMITTED_PEER, RELAY_CHANNEL};
use crate::prelude::*;
use ferroturn::client::codec::Response;
use ferroturn_core::server::{AllocId, Handoff};

const ON: &str = "mobility = true";
/// Where alice's client moves to: another port of her address (the nonce stays good).
const NEW_PORT: &str = "203.0.113.10:40001";
/// Where she moves to over another network: another address (the nonce must be fresh).
const NEW_NETWORK: &str = "198.51.100.200:50000";

fn ticket(r: &Response) -> Vec<u8> {
    r.mobility_ticket.clone().expect("a MOBILITY-TICKET")
}

fn bob() -> Client {
    Client::new("203.0.113.20:40000", "bob", "bob-pw")
}

/// alice's mobile allocation with a channel to CHANNEL_PEER and a permission for
/// PERMITTED_PEER; her ticket and relay.
fn mobile_relay(h: &mut Harness) -> (Client, Vec<u8>, AllocId) {
    let mut a = alice();
    let (r, relay) = h.allocate(&mut a, &[RequestAttr::MobilityTicket(&[])]);
    let raw = h.bind_channel(&mut a, RELAY_CHANNEL, addr(CHANNEL_PEER));
    success(&raw, method::CHANNEL_BIND);
    h.permit(&mut a, addr(PERMITTED_PEER));
    (a, ticket(&r), relay)
}

/// A Refresh carrying `t` from `c`'s 5-tuple (the 401/438 dance first when needed).
fn refresh_with(h: &mut Harness, c: &mut Client, t: &[u8]) -> Vec<u8> {
    h.request(c, method::REFRESH, &[RequestAttr::MobilityTicket(t)])
}

/// ChannelData from `tuple` reaches CHANNEL_PEER through `relay`, and CHANNEL_PEER's
/// answer comes back to `tuple`.
fn relays_both_ways(h: &mut Harness, tuple: ferroturn_core::server::FiveTuple, relay: AllocId) {
    let out = h.relay_from_client(tuple, &channel_data(RELAY_CHANNEL, b"up"));
    let (path, bytes) = out.expect("relayed to the peer");
    assert_eq!(
        path,
        Path::Peer {
            relay,
            peer: addr(CHANNEL_PEER)
        }
    );
    assert_eq!(bytes, b"up");
    let (path, bytes) = h
        .peer_datagram(relay, addr(CHANNEL_PEER), b"down")
        .expect("relayed to the client");
    assert_eq!(path, to_client(tuple));
    assert_eq!(bytes, channel_data(RELAY_CHANNEL, b"down"));
}

/// Section 3.1.2: a ticket only for an Allocate that asks with an empty MOBILITY-TICKET
/// while `mobility` is on, then one with every Refresh; a non-empty one in an Allocate
/// is a 400; with mobility off, 405 (section 3.4).
#[test]
fn a_ticket_is_issued_only_when_asked_and_enabled() {
    let mut h = Harness::new(ON);
    let mut a = alice();
    let (r, _) = h.allocate(&mut a, &[]);
    assert_eq!(r.mobility_ticket, None, "not asked for");
    assert_eq!(h.refresh(&mut a, Some(600)).mobility_ticket, None);

    let mut b = bob();
    let (r, _) = h.allocate(&mut b, &[RequestAttr::MobilityTicket(&[])]);
    let first = ticket(&r);
    assert_eq!(
        first.len(),
        32,
        "fits coturn's client (32 characters at most)"
    );
    assert!(
        first.iter().all(u8::is_ascii_graphic),
        "printable: a C string"
    );
    h.advance_to(10);
    let second = ticket(&h.refresh(&mut b, Some(600)));
    assert_ne!(first, second, "every Refresh gets a fresh ticket");
    assert_eq!(h.server.stats().tickets_issued, 2);

    let mut c = Client::new("203.0.113.30:40000", "bob", "bob-pw");
    let raw = h.allocate_raw(&mut c, &[RequestAttr::MobilityTicket(b"mine")]);
    error(&raw, method::ALLOCATE, 400);

    let mut off = Harness::new("");
    let mut d = alice();
    let raw = off.allocate_raw(&mut d, &[RequestAttr::MobilityTicket(&[])]);
    error(&raw, method::ALLOCATE, 405);
    assert_eq!(off.server.stats().errors_with(405), 1);
}

/// Section 3.2.2: a Refresh with the ticket from a new 5-tuple moves the allocation
/// there with its permissions and channels, and the success carries a new ticket; the
/// old 5-tuple reaches nothing, the old ticket moves nothing, a retransmission gets the
/// same answer.
#[test]
fn a_refresh_with_the_ticket_from_a_new_5_tuple_moves_the_allocation() {
    let mut h = Harness::new(ON);
    let (mut a, old_ticket, relay) = mobile_relay(&mut h);
    let relayed = h.server.relayed_address(&a.tuple);
    let old = a.tuple;
    let timers = h.server.deadline_count();

    a.tuple = udp(NEW_NETWORK);
    let raw = refresh_with(&mut h, &mut a, &old_ticket);
    let r = success(&raw, method::REFRESH);
    assert!(verifies(&raw, &a.key));
    assert!(r.lifetime.is_some());
    let new_ticket = ticket(&r);
    assert_ne!(
        new_ticket, old_ticket,
        "section 3.2.2: the new ticket differs"
    );
    assert_eq!(h.server.relayed_address(&a.tuple), relayed);
    assert_eq!(h.server.relayed_address(&old), None);
    assert_eq!(
        h.server.deadline_count(),
        timers,
        "the same timers, re-armed"
    );
    assert_eq!(h.server.stats().allocations_moved, 1);

    // The channel and the permission work from the new address.
    relays_both_ways(&mut h, a.tuple, relay);
    let txn = h.next_txn();
    let out = h.relay_from_client(
        a.tuple,
        &send_indication(&txn, addr(PERMITTED_PEER), b"hi", &[]),
    );
    assert!(out.is_some(), "the permission moved too");

    // The old 5-tuple: its data goes nowhere, its requests meet 437.
    assert!(
        h.relay_from_client(old, &channel_data(RELAY_CHANNEL, b"stale"))
            .is_none()
    );
    let mut left_behind = alice();
    let raw = h.request(&mut left_behind, method::REFRESH, &[]);
    error(&raw, method::REFRESH, 437);

    // The ticket from before the move names the allocation as it was: 437.
    let mut elsewhere = Client::new("203.0.113.10:40002", "alice", "alice-pw");
    let raw = refresh_with(&mut h, &mut elsewhere, &old_ticket);
    error(&raw, method::REFRESH, 437);

    // The new ticket moves it on; a retransmission of that move gets the same answer.
    let mut c = Client::new(NEW_PORT, "alice", "alice-pw");
    let raw = refresh_with(&mut h, &mut c, &new_ticket);
    success(&raw, method::REFRESH);
    let txn = h.next_txn();
    let msg = c.signed(
        &txn,
        method::REFRESH,
        &[RequestAttr::MobilityTicket(&ticket(&success(
            &raw,
            method::REFRESH,
        )))],
        &[],
        true,
    );
    let first = h.exchange(c.tuple, &msg);
    let again = h.exchange(c.tuple, &msg);
    assert_eq!(first, again, "a retransmission is answered from the cache");
    relays_both_ways(&mut h, c.tuple, relay);
    assert_eq!(h.server.allocation_count(), 1);
}

/// Section 3.2.2's refusals, none of which moves anything: a ticket that does not open
/// (400), another user's valid credentials with a stolen ticket (441), a ticket on
/// another allocation's 5-tuple (437). The real ticket still works after them all.
#[test]
fn ticket_misuse_is_refused_and_moves_nothing() {
    let mut h = Harness::new(ON);
    let (a, t, relay) = mobile_relay(&mut h);
    let mut b = bob();
    let (r, _) = h.allocate(&mut b, &[RequestAttr::MobilityTicket(&[])]);
    let bobs = ticket(&r);

    let mut thief = Client::new(NEW_PORT, "alice", "alice-pw");
    for i in [0, 7, 31] {
        let mut tampered = t.clone();
        tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
        let raw = refresh_with(&mut h, &mut thief, &tampered);
        error(&raw, method::REFRESH, 400);
    }
    for junk in [&b"x"[..], &[0u8; 32][..], &[b'A'; 64][..]] {
        let raw = refresh_with(&mut h, &mut thief, junk);
        error(&raw, method::REFRESH, 400);
    }

    // bob's credentials are valid, alice's ticket too, but the allocation is alice's.
    let mut stolen = Client::new(NEW_PORT, "bob", "bob-pw");
    let raw = refresh_with(&mut h, &mut stolen, &t);
    error(&raw, method::REFRESH, 441);
    assert!(
        !has_integrity(&raw),
        "441 to a request not signed by the allocation's user"
    );
    // A wrong password for alice's own username is no better.
    let mut guess = Client::new(NEW_PORT, "alice", "not-her-password");
    let raw = refresh_with(&mut h, &mut guess, &t);
    error(&raw, method::REFRESH, 441);

    // bob's ticket on alice's 5-tuple: that is not this allocation.
    let mut a2 = Client::new("203.0.113.10:40000", "alice", "alice-pw");
    let raw = refresh_with(&mut h, &mut a2, &bobs);
    error(&raw, method::REFRESH, 437);
    assert!(
        verifies(&raw, &a.key),
        "alice authenticated: the 437 is signed"
    );

    assert_eq!(h.server.stats().allocations_moved, 0);
    assert!(h.server.relayed_address(&a.tuple).is_some());
    assert!(h.server.relayed_address(&b.tuple).is_some());
    relays_both_ways(&mut h, a.tuple, relay);
    let raw = refresh_with(&mut h, &mut thief, &t);
    success(&raw, method::REFRESH);
    relays_both_ways(&mut h, thief.tuple, relay);
}

/// A ticket of an allocation that ended (deleted, or expired with its lifetime) names
/// no allocation: 437.
#[test]
fn a_ticket_outliving_its_allocation_gets_437() {
    let mut h = Harness::new(ON);
    let (mut a, t, _) = mobile_relay(&mut h);
    h.refresh(&mut a, Some(0));
    let mut moved = Client::new(NEW_PORT, "alice", "alice-pw");
    let raw = refresh_with(&mut h, &mut moved, &t);
    error(&raw, method::REFRESH, 437);

    // Expired: the allocation's 600 s pass without a Refresh.
    let mut b = bob();
    let (r, _) = h.allocate(&mut b, &[RequestAttr::MobilityTicket(&[])]);
    let t = ticket(&r);
    h.advance_to(601);
    assert_eq!(h.server.allocation_count(), 0);
    let mut moved = Client::new("203.0.113.20:40001", "bob", "bob-pw");
    let raw = refresh_with(&mut h, &mut moved, &t);
    error(&raw, method::REFRESH, 437);
}

/// Mobility turned off by a reload: a ticket gets 405 (RFC 8016 section 3.4), whether
/// from a new 5-tuple or on the allocation's own, and no new ticket is issued.
#[test]
fn with_mobility_off_a_ticket_gets_405() {
    let mut h = Harness::new(ON);
    let (mut a, t, _) = mobile_relay(&mut h);
    h.reconfigure("");
    let mut moved = Client::new(NEW_PORT, "alice", "alice-pw");
    let raw = refresh_with(&mut h, &mut moved, &t);
    error(&raw, method::REFRESH, 405);
    let raw = refresh_with(&mut h, &mut a, &t);
    error(&raw, method::REFRESH, 405);
    assert_eq!(h.refresh(&mut a, Some(600)).mobility_ticket, None);
    assert_eq!(h.server.stats().allocations_moved, 0);
}

/// The kernel fast path keys channels by the client's address: a move takes the
/// allocation's channels out of it and puts them back under the new address (the
/// harness checks the kernel's table against the core after every step).
#[test]
fn a_move_rekeys_the_kernels_channels() {
    let mut h = Harness::with_offload(ON);
    let (mut a, t, relay) = mobile_relay(&mut h);
    let old = a.tuple;
    assert_eq!(h.kernel[&(relay, RELAY_CHANNEL)].tuple, old);
    a.tuple = udp(NEW_PORT);
    let raw = refresh_with(&mut h, &mut a, &t);
    success(&raw, method::REFRESH);
    assert_eq!(h.kernel[&(relay, RELAY_CHANNEL)].tuple, a.tuple);
    let log: Vec<(bool, _)> = h
        .offload_log
        .iter()
        .rev()
        .take(2)
        .map(|(install, ch)| (*install, ch.tuple))
        .collect();
    assert_eq!(log, vec![(true, a.tuple), (false, old)]);
}

/// Two shards: the new 5-tuple reaches shard 1, the allocation lives in shard 0. Shard 1
/// checks the ticket and hands the request over, holding the 5-tuple's next requests;
/// shard 0 checks the user and gives the whole allocation away (permissions, channels,
/// timers); shard 1 adopts it, answers the move with a ticket naming itself, then the
/// held request, and relays from then on. The old 5-tuple and ticket reach nothing.
#[test]
fn a_move_to_another_shard_takes_the_whole_allocation() {
    let (mut s0, mut s1) = Harness::pair(ON);
    let (mut a, t, old_relay) = mobile_relay(&mut s0);
    let timers = s0.server.deadline_count();
    let old = a.tuple;

    a.tuple = udp(NEW_PORT);
    let txn = s1.next_txn();
    let msg = a.signed(
        &txn,
        method::REFRESH,
        &[RequestAttr::MobilityTicket(&t)],
        &[],
        true,
    );
    let (relayed, out) = s1.send(a.tuple, &msg);
    assert!(
        relayed.is_none() && out.is_empty(),
        "answered once shard 0 decides"
    );
    // The client goes on before the answer: a request is held, data dropped, a
    // retransmission of the move dropped.
    let bind_txn = s1.next_txn();
    let bind = a.signed(
        &bind_txn,
        method::CREATE_PERMISSION,
        &[RequestAttr::XorPeerAddress(addr(PEER))],
        &[],
        true,
    );
    assert!(s1.send(a.tuple, &bind).1.is_empty());
    assert!(
        s1.relay_from_client(a.tuple, &channel_data(RELAY_CHANNEL, b"early"))
            .is_none()
    );
    assert!(s1.send(a.tuple, &msg).1.is_empty());

    let mut to_owner = s1.handoffs();
    assert_eq!(to_owner.len(), 1);
    let (to, request) = to_owner.remove(0);
    assert_eq!(to, 0);
    assert!(matches!(request, Handoff::Request(_)));
    let (adopted, out) = s0.deliver(request);
    assert!(adopted.is_none() && out.is_empty());
    assert_eq!(
        s0.server.allocation_count(),
        0,
        "the allocation left shard 0"
    );
    assert_eq!(s0.server.deadline_count(), 0, "with its timers");
    let mut back = s0.handoffs();
    assert_eq!(back.len(), 1);
    let (to, moved) = back.remove(0);
    assert_eq!(to, 1);
    let Handoff::Allocation(m) = &moved else {
        panic!("the allocation, not {moved:?}");
    };
    assert_eq!(m.relay(), old_relay, "the relay socket the driver moves");

    let (adopted, out) = s1.deliver(moved);
    let relay = adopted.expect("shard 1 adopts it");
    assert_eq!(out.len(), 2, "the move's answer, then the held request's");
    assert!(out.iter().all(|t| t.path == to_client(a.tuple)));
    let r = success(&out[0].payload, method::REFRESH);
    assert!(verifies(&out[0].payload, &a.key));
    assert_eq!(&out[0].payload[8..20], &txn[..]);
    let new_ticket = ticket(&r);
    success(&out[1].payload, method::CREATE_PERMISSION);
    assert_eq!(
        s1.server.deadline_count(),
        timers + 1,
        "its timers, and the new permission"
    );
    assert_eq!(s1.server.stats().allocations_moved_across_shards, 1);

    relays_both_ways(&mut s1, a.tuple, relay);

    // Shard 0 knows neither the old 5-tuple nor the old ticket any more.
    let mut left_behind = alice();
    left_behind.tuple = old;
    let raw = s0.request(&mut left_behind, method::REFRESH, &[]);
    error(&raw, method::REFRESH, 437);
    let mut third = Client::new("203.0.113.10:40002", "alice", "alice-pw");
    let raw = refresh_with(&mut s0, &mut third, &t);
    error(&raw, method::REFRESH, 437);
    // The new ticket names shard 1, which moves the allocation within itself.
    let mut fourth = Client::new("203.0.113.10:40003", "alice", "alice-pw");
    let raw = refresh_with(&mut s1, &mut fourth, &new_ticket);
    success(&raw, method::REFRESH);
    relays_both_ways(&mut s1, fourth.tuple, relay);
}

/// Two shards: the owner refuses a move (another user's credentials) and the shard the
/// request reached sends the 441; the held requests of that 5-tuple are then answered
/// as any request without an allocation is (437).
#[test]
fn a_move_refused_by_the_owner_is_answered_by_the_shard_it_reached() {
    let (mut s0, mut s1) = Harness::pair(ON);
    let (a, t, relay) = mobile_relay(&mut s0);
    let mut thief = Client::new("203.0.113.20:40000", "bob", "bob-pw");
    // A nonce for bob's address, from shard 1's own challenge.
    s1.challenge(&mut thief, method::REFRESH, &[]);
    let txn = s1.next_txn();
    let msg = thief.signed(
        &txn,
        method::REFRESH,
        &[RequestAttr::MobilityTicket(&t)],
        &[],
        true,
    );
    assert!(s1.send(thief.tuple, &msg).1.is_empty());
    let txn2 = s1.next_txn();
    let held = thief.signed(&txn2, method::REFRESH, &[], &[], true);
    assert!(s1.send(thief.tuple, &held).1.is_empty());
    let (_, request) = s1.handoffs().remove(0);
    s0.deliver(request);
    let (to, answer) = s0.handoffs().remove(0);
    assert_eq!(to, 1);
    let (adopted, out) = s1.deliver(answer);
    assert!(adopted.is_none());
    assert_eq!(out.len(), 2);
    error(&out[0].payload, method::REFRESH, 441);
    error(&out[1].payload, method::REFRESH, 437);
    assert!(s0.server.relayed_address(&a.tuple).is_some());
    relays_both_ways(&mut s0, a.tuple, relay);
}

/// A move handed to an owner that never answers (its shard stopped, say) is forgotten
/// after 2 seconds: the held requests are dropped, and the 5-tuple is served as any
/// other from then on (here: no allocation, 437).
#[test]
fn an_unanswered_hand_over_is_forgotten_after_two_seconds() {
    let (mut s0, mut s1) = Harness::pair(ON);
    let (mut a, t, _) = mobile_relay(&mut s0);
    a.tuple = udp(NEW_PORT);
    let txn = s1.next_txn();
    let msg = a.signed(
        &txn,
        method::REFRESH,
        &[RequestAttr::MobilityTicket(&t)],
        &[],
        true,
    );
    assert!(s1.send(a.tuple, &msg).1.is_empty());
    let held_txn = s1.next_txn();
    let held = a.signed(&held_txn, method::REFRESH, &[], &[], true);
    assert!(
        s1.send(a.tuple, &held).1.is_empty(),
        "held while the owner decides"
    );
    assert_eq!(s1.handoffs().len(), 1, "handed over, and lost on the way");
    s1.advance_to(3);
    let raw = s1.request(&mut a, method::REFRESH, &[]);
    error(&raw, method::REFRESH, 437);
    assert!(
        s0.server.relayed_address(&alice().tuple).is_some(),
        "never moved"
    );
}
