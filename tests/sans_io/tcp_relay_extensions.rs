//! TCP allocations (RFC 6062) next to the other extensions: one relayed address whatever
//! ADDITIONAL-ADDRESS-FAMILY asks (RFC 8656 section 7.2), no mobility (RFC 8016), and
//! the fleet's lease taken before the listening socket exists.

use crate::core_harness::alice_tcp;
use crate::prelude::*;
use ferroturn_core::auth::{Ticket, Tickets};
use ferroturn_core::server::LeaseAnswer;

const CONTROL: &str = "203.0.113.10:40000";
/// Where a client that would move its TCP allocation comes from.
const NEW_PORT: &str = "203.0.113.10:40001";
const PEER_V6: &str = "[2001:db8::1]:5000";
const TCP_TRANSPORT: RequestAttr<'static> = RequestAttr::RequestedTransport(TCP);

/// RFC 6062 predates dual allocations: a TCP Allocate with ADDITIONAL-ADDRESS-FAMILY is
/// refused with 400 (as section 5.1 refuses the other attributes a TCP allocation
/// cannot honour) and makes no socket. With REQUESTED-ADDRESS-FAMILY IPv6 a TCP
/// allocation gets its one relay of that family, listens there, and Connects only to
/// peers of that family (443 for the other).
#[test]
fn a_tcp_allocation_has_one_relay_and_additional_address_family_is_400() {
    let mut h = Harness::new(DUAL_STACK);
    let mut c = alice_tcp(CONTROL);
    for family in [Family::V6, Family::V4] {
        let raw = h.request(
            &mut c,
            method::ALLOCATE,
            &[TCP_TRANSPORT, RequestAttr::AdditionalFamily(family)],
        );
        error(&raw, method::ALLOCATE, 400);
        assert!(verifies(&raw, &c.key));
    }
    assert!(h.binds.is_empty());
    assert_eq!(h.server.allocation_count(), 0);

    let raw = h.request(
        &mut c,
        method::ALLOCATE,
        &[TCP_TRANSPORT, RequestAttr::RequestedFamily(Family::V6)],
    );
    let r = success(&raw, method::ALLOCATE);
    let relayed = r.xor_relayed.expect("a relayed address");
    assert_eq!(relayed.ip(), "::1".parse::<IpAddr>().unwrap());
    assert_eq!(r.additional_relayed, None);
    let relay = h.tcp_relays[0];
    assert_eq!(h.binds, vec![(relay, relayed)]);
    assert_eq!(h.server.relayed_addresses(&c.tuple).count(), 1);

    let raw = h.connect(&mut c, addr(PEER));
    error(&raw, method::CONNECT, 443);
    let raw = h.connect(&mut c, addr(PEER_V6));
    success(&raw, method::CONNECT);
    let (_, from, local, peer) = h.connects[0];
    assert_eq!((from, local, peer), (relay, relayed, addr(PEER_V6)));
}

/// RFC 8016 is not for TCP allocations: with `mobility` on, a TCP Allocate asking for
/// a MOBILITY-TICKET gets 405 (as with mobility off) and makes no socket; a TCP
/// allocation gets no ticket, in its Allocate or Refresh successes. Even a ticket sealed
/// with the server's own key for a TCP allocation moves nothing: 437, and the
/// allocation stays on its 5-tuple.
#[test]
fn a_tcp_allocation_is_never_mobile() {
    let mut h = Harness::new("mobility = true");
    let mut c = alice_tcp(CONTROL);
    let raw = h.request(
        &mut c,
        method::ALLOCATE,
        &[TCP_TRANSPORT, RequestAttr::MobilityTicket(&[])],
    );
    error(&raw, method::ALLOCATE, 405);
    assert!(verifies(&raw, &c.key));
    assert!(h.binds.is_empty());

    let (r, relay) = h.allocate_tcp(&mut c);
    assert_eq!(r.mobility_ticket, None);
    let raw = h.request(&mut c, method::REFRESH, &[RequestAttr::Lifetime(600)]);
    assert_eq!(success(&raw, method::REFRESH).mobility_ticket, None);
    assert_eq!(h.server.stats().tickets_issued, 0);

    // The harness's servers run with nonce key [9; 32].
    let forged = Tickets::new(&[9; 32]).seal(&Ticket {
        shard: 0,
        alloc: relay,
        epoch: 0,
        expiry: u32::try_from(UNIX0 + 600).unwrap(),
    });
    let mut mover = alice_tcp(NEW_PORT);
    let raw = h.request(
        &mut mover,
        method::REFRESH,
        &[RequestAttr::MobilityTicket(&forged)],
    );
    error(&raw, method::REFRESH, 437);
    assert_eq!(h.server.stats().allocations_moved, 0);
    assert!(h.server.relayed_address(&mover.tuple).is_none());
    assert_eq!(h.server.relayed_address(&c.tuple), r.xor_relayed);
    // Still a working TCP allocation on its own connection.
    let raw = h.connect(&mut c, addr(PEER));
    success(&raw, method::CONNECT);
}

/// In a fleet a TCP allocation takes its lease like any other: no listening socket, no
/// answer, while it is asked for; granted, the socket listens and the Allocate
/// succeeds, and the allocation's end gives the lease back. Refused, 486 and no socket.
#[test]
fn a_tcp_allocation_listens_only_once_its_lease_is_granted() {
    let fleet = "redis = \"redis://127.0.0.1:1/0\"\nuser-quota = 2";
    let mut h = Harness::new(fleet);
    h.lease_answer = None;
    let mut c = alice_tcp(CONTROL);
    let attrs = [TCP_TRANSPORT];
    h.challenge(&mut c, method::ALLOCATE, &attrs);
    let msg = c.signed(&h.next_txn(), method::ALLOCATE, &attrs, &[], true);
    let (_, out) = h.send(c.tuple, &msg);
    assert!(out.is_empty(), "no answer before the lease");
    assert!(h.binds.is_empty() && h.tcp_relays.is_empty());
    let (relay, lease, user, _) = h.lease_asks[0].clone();
    assert_eq!(user, "alice");

    let out = h.answer_lease(relay, lease, LeaseAnswer::Granted);
    assert_eq!(out.len(), 1);
    success(&out[0].payload, method::ALLOCATE);
    assert_eq!(h.tcp_relays, vec![relay]);
    let raw = h.request(&mut c, method::REFRESH, &[RequestAttr::Lifetime(0)]);
    success(&raw, method::REFRESH);
    assert_eq!(h.lease_releases, vec![lease]);
    assert_eq!(h.closed, vec![relay]);

    h.lease_answer = Some(LeaseAnswer::QuotaReached);
    let mut again = alice_tcp(NEW_PORT);
    let raw = h.request(&mut again, method::ALLOCATE, &attrs);
    error(&raw, method::ALLOCATE, 486);
    assert_eq!(h.tcp_relays, vec![relay], "no socket for a refused lease");
    assert_eq!(h.server.allocation_count(), 0);
}
