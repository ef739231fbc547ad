//! `user-quota` across a fleet, the core's side: with a fleet (`redis`) and a user quota
//! an Allocate asks for a lease (`Event::AcquireLease`) and binds its relay only once the
//! driver grants it; every way an allocation ends gives the lease back.

use crate::prelude::*;
use ferroturn_core::server::{AllocId, LeaseAnswer};

const FLEET: &str = "redis = \"redis://127.0.0.1:1/0\"\nuser-quota = 2";

/// Alice's Allocate, left waiting for its lease (the test answers it): the pending
/// allocation and the lease it asks for.
fn allocate_asking_for_a_lease(h: &mut Harness) -> (AllocId, u64) {
    h.lease_answer = None;
    let mut c = alice();
    let attrs = [RequestAttr::RequestedTransport(UDP)];
    h.challenge(&mut c, method::ALLOCATE, &attrs);
    let msg = c.signed(&h.next_txn(), method::ALLOCATE, &attrs, &[], true);
    h.send(c.tuple, &msg);
    let (relay, lease, _, _) = h.lease_asks[0].clone();
    (relay, lease)
}

/// No bind, no answer while the lease is asked for; granted, the relay is bound and
/// the Allocate succeeds; the allocation's end gives the lease back.
#[test]
fn a_relay_is_bound_only_once_the_lease_is_granted() {
    let mut h = Harness::new(FLEET);
    h.lease_answer = None;
    let mut c = alice();
    let attrs = [RequestAttr::RequestedTransport(UDP)];
    h.challenge(&mut c, method::ALLOCATE, &attrs);
    let txn = h.next_txn();
    let msg = c.signed(&txn, method::ALLOCATE, &attrs, &[], true);
    let (_, out) = h.send(c.tuple, &msg);
    assert!(out.is_empty(), "no answer before the lease");
    assert!(h.binds.is_empty(), "no bind before the lease");
    // A retransmission meanwhile is not answered either (it is not a second Allocate).
    let (_, out) = h.send(c.tuple, &msg);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(h.lease_asks.len(), 1);
    let (relay, lease, user, quota) = h.lease_asks[0].clone();
    assert_eq!((user.as_str(), quota), ("alice", 2));

    let out = h.answer_lease(relay, lease, LeaseAnswer::Granted);
    assert_eq!(out.len(), 1);
    success(&out[0].payload, method::ALLOCATE);
    assert_eq!(h.binds.len(), 1);

    let r = h.request(&mut c, method::REFRESH, &[RequestAttr::Lifetime(0)]);
    success(&r, method::REFRESH);
    assert_eq!(h.lease_releases, vec![lease]);
}

/// Refused because the user holds its quota across the fleet: 486, nothing bound; the
/// store unable to say with `shared-state-failure = "closed"`: 508. Neither holds a
/// lease to give back.
#[test]
fn a_refused_lease_is_486_and_an_unavailable_store_508() {
    for (answer, code) in [
        (LeaseAnswer::QuotaReached, 486),
        (LeaseAnswer::Unavailable, 508),
    ] {
        let mut h = Harness::new(FLEET);
        h.lease_answer = Some(answer);
        let mut c = alice();
        let raw = h.allocate_raw(&mut c, &[]);
        error(&raw, method::ALLOCATE, code);
        assert!(h.binds.is_empty());
        assert_eq!(h.server.allocation_count(), 0);
        assert!(h.lease_releases.is_empty());
        // The ports went back: a granted allocation afterwards gets one.
        h.lease_answer = Some(LeaseAnswer::Granted);
        let mut b = Client::new("203.0.113.20:40000", "bob", "bob-pw");
        h.allocate(&mut b, &[]);
    }
}

/// A lease granted after its allocation ended (the client went away meanwhile) is given
/// back at once; expiry gives a live allocation's lease back too.
#[test]
fn a_late_grant_and_an_expiry_give_the_lease_back() {
    let mut h = Harness::new(&format!("{FLEET}\nmax-allocate-lifetime = 600"));
    let (relay, lease) = allocate_asking_for_a_lease(&mut h);
    // An operator deletes every allocation, this pending one included: its lease goes
    // back (the store may have granted it already)...
    h.delete_sessions(&ferroturn_core::server::SessionFilter::All);
    assert_eq!(h.lease_releases, vec![lease]);
    // ... and again when the grant arrives after all (the driver's release of a lease
    // it does not hold is a no-op).
    let out = h.answer_lease(relay, lease, LeaseAnswer::Granted);
    assert!(out.is_empty());
    assert!(h.binds.is_empty());
    assert_eq!(h.lease_releases, vec![lease, lease]);

    h.lease_answer = Some(LeaseAnswer::Granted);
    let mut b = Client::new("203.0.113.20:40000", "bob", "bob-pw");
    h.allocate(&mut b, &[]);
    let (_, second, _, _) = h.lease_asks[1].clone();
    h.jump(std::time::Duration::from_secs(601));
    assert_eq!(h.lease_releases, vec![lease, lease, second]);
}

/// Without a fleet, or without a user quota, no lease is asked for.
#[test]
fn no_fleet_or_no_user_quota_asks_for_no_lease() {
    for config in ["user-quota = 2", "redis = \"redis://127.0.0.1:1/0\""] {
        let mut h = Harness::new(config);
        h.allocate(&mut alice(), &[]);
        assert!(h.lease_asks.is_empty(), "{config}");
    }
}

/// An allocation starts when it is granted: the time its Allocate waited for the lease
/// (or for its relay socket) is not part of its usage record, whose duration at expiry
/// is the lifetime exactly and whose start is the grant.
#[test]
fn the_wait_for_the_lease_is_not_part_of_the_usage_record() {
    let mut h = Harness::new(&format!("{FLEET}\ndefault-allocate-lifetime = 60"));
    let (relay, lease) = allocate_asking_for_a_lease(&mut h);
    h.jump(std::time::Duration::from_millis(2500));
    let out = h.answer_lease(relay, lease, LeaseAnswer::Granted);
    success(&out[0].payload, method::ALLOCATE);
    h.jump(std::time::Duration::from_secs(61));
    assert_eq!(h.ended.len(), 1, "{:#?}", h.ended);
    let u = &h.ended[0];
    assert_eq!(u.reason, ferroturn_core::server::Deletion::Expired);
    assert_eq!(u.duration, std::time::Duration::from_secs(60));
    assert_eq!(
        u.start_unix,
        UNIX0 + 2,
        "the grant, 2.5 s after the request"
    );
}
