//! EVEN-PORT with the R bit and RESERVATION-TOKEN (RFC 8656 sections 7.2, 14.6 and
//! 14.9): the RTP/RTCP pattern of SIP clients and of coturn's uclient by default.

use crate::prelude::*;

/// Two relay ports only, so a reserved one is visibly out of the pool.
const TWO_PORTS: &str = "min-port = 50000\nmax-port = 50001";

fn token_of(r: &ferroturn::client::codec::Response) -> [u8; 8] {
    r.reservation_token.expect("a RESERVATION-TOKEN")
}

fn bob() -> Client {
    Client::new("203.0.113.20:40000", "bob", "bob-pw")
}

fn carol() -> Client {
    Client::new("203.0.113.30:40000", "bob", "bob-pw")
}

/// Sections 14.6 and 14.9: R set, the allocation gets an even port and the answer a
/// token for the next one; an Allocate from another client port with that token gets
/// that port, and the token is good once.
#[test]
fn even_port_with_r_reserves_the_next_port_for_one_allocation() {
    let mut h = Harness::new("");
    let mut a = alice();
    let (r, _) = h.allocate(&mut a, &[RequestAttr::EvenPort(true)]);
    let rtp = r.xor_relayed.expect("relayed");
    assert_eq!(rtp.port() % 2, 0);
    let token = token_of(&r);

    let mut b = bob();
    let (r, _) = h.allocate(&mut b, &[RequestAttr::ReservationToken(token)]);
    let rtcp = r.xor_relayed.expect("relayed");
    assert_eq!((rtcp.ip(), rtcp.port()), (rtp.ip(), rtp.port() + 1));
    assert_eq!(r.reservation_token, None);

    let mut c = carol();
    let raw = h.allocate_raw(&mut c, &[RequestAttr::ReservationToken(token)]);
    error(&raw, method::ALLOCATE, 508);
    let stats = h.server.stats();
    assert_eq!(
        (stats.reservations_issued, stats.reservations_claimed),
        (1, 1)
    );
}

/// EVEN-PORT without R: an even port and no token, as before.
#[test]
fn even_port_without_r_gives_no_token() {
    let mut h = Harness::new("");
    let mut a = alice();
    let (r, _) = h.allocate(&mut a, &[RequestAttr::EvenPort(false)]);
    assert_eq!(r.xor_relayed.expect("relayed").port() % 2, 0);
    assert_eq!(r.reservation_token, None);
}

/// Section 14.9: the reservation lasts about 30 seconds; then the token is unknown (508)
/// and the port is back in the pool.
#[test]
fn a_reservation_ends_after_30_seconds_and_frees_its_port() {
    let mut h = Harness::new(TWO_PORTS);
    let mut a = alice();
    let (r, _) = h.allocate(&mut a, &[RequestAttr::EvenPort(true)]);
    assert_eq!(r.xor_relayed.map(|s| s.port()), Some(50000));
    let token = token_of(&r);
    let timers = h.server.deadline_count();

    let mut b = bob();
    let raw = h.allocate_raw(&mut b, &[]);
    error(&raw, method::ALLOCATE, 508);

    h.advance_to(29);
    assert_eq!(h.server.deadline_count(), timers, "still reserved");
    h.advance_to(31);
    assert_eq!(
        h.server.deadline_count(),
        timers - 1,
        "the reservation's timer is gone"
    );
    let mut c = carol();
    let raw = h.allocate_raw(&mut c, &[RequestAttr::ReservationToken(token)]);
    error(&raw, method::ALLOCATE, 508);
    let (r, _) = h.allocate(&mut b, &[]);
    assert_eq!(r.xor_relayed.map(|s| s.port()), Some(50001));
}

/// A port claimed with the token belongs to that allocation past the 30 seconds, and
/// goes back to the pool when it ends.
#[test]
fn a_claimed_port_stays_with_its_allocation_until_it_ends() {
    let mut h = Harness::new(TWO_PORTS);
    let mut a = alice();
    let (r, _) = h.allocate(&mut a, &[RequestAttr::EvenPort(true)]);
    let token = token_of(&r);
    let mut b = bob();
    let (r, _) = h.allocate(&mut b, &[RequestAttr::ReservationToken(token)]);
    assert_eq!(r.xor_relayed.map(|s| s.port()), Some(50001));
    h.advance_to(40);
    h.refresh(&mut a, Some(0));
    let mut c = carol();
    let (r, _) = h.allocate(&mut c, &[]);
    assert_eq!(
        r.xor_relayed.map(|s| s.port()),
        Some(50000),
        "50001 is still bob's"
    );
    h.refresh(&mut b, Some(0));
    let mut d = Client::new("203.0.113.40:40000", "bob", "bob-pw");
    let (r, _) = h.allocate(&mut d, &[]);
    assert_eq!(r.xor_relayed.map(|s| s.port()), Some(50001));
}

/// Section 7.2 steps 5-6: RESERVATION-TOKEN with EVEN-PORT or REQUESTED-ADDRESS-FAMILY
/// is a bad request (400); a token the server never issued (a guess) gets 508.
#[test]
fn a_token_with_even_port_or_a_family_is_400_and_a_guessed_one_508() {
    let mut h = Harness::new("");
    let mut a = alice();
    let (r, _) = h.allocate(&mut a, &[RequestAttr::EvenPort(true)]);
    let token = token_of(&r);
    let mut b = bob();
    for attrs in [
        [
            RequestAttr::ReservationToken(token),
            RequestAttr::EvenPort(false),
        ],
        [
            RequestAttr::ReservationToken(token),
            RequestAttr::RequestedFamily(Family::V4),
        ],
    ] {
        let raw = h.allocate_raw(&mut b, &attrs);
        error(&raw, method::ALLOCATE, 400);
    }
    let mut guess = token;
    guess[7] ^= 1;
    let raw = h.allocate_raw(&mut b, &[RequestAttr::ReservationToken(guess)]);
    error(&raw, method::ALLOCATE, 508);
    // The real token still works: the refusals above did not use it up.
    let (r, _) = h.allocate(&mut b, &[RequestAttr::ReservationToken(token)]);
    assert!(r.xor_relayed.is_some());
}

/// An allocation that ends before its reservation was claimed takes the reservation
/// with it: the port is free at once and the token is unknown (so Allocate, Refresh 0,
/// repeat cannot pile reservations up beyond the allocations a quota allows).
#[test]
fn deleting_the_reserving_allocation_ends_an_unclaimed_reservation() {
    let mut h = Harness::new(TWO_PORTS);
    let mut a = alice();
    let (r, _) = h.allocate(&mut a, &[RequestAttr::EvenPort(true)]);
    let token = token_of(&r);
    h.refresh(&mut a, Some(0));
    let mut b = bob();
    let raw = h.allocate_raw(&mut b, &[RequestAttr::ReservationToken(token)]);
    error(&raw, method::ALLOCATE, 508);
    let (r, _) = h.allocate(&mut b, &[RequestAttr::EvenPort(true)]);
    assert_eq!(
        r.xor_relayed.map(|s| s.port()),
        Some(50000),
        "both ports free again"
    );
    // At 30 s both timers fire: alice's finds nothing left to end, bob's frees 50001
    // once (not twice: after carol takes it, nothing is left).
    h.advance_to(31);
    let (r, _) = h.allocate(&mut carol(), &[]);
    assert_eq!(r.xor_relayed.map(|s| s.port()), Some(50001));
    let mut d = Client::new("203.0.113.40:40000", "bob", "bob-pw");
    let raw = h.allocate_raw(&mut d, &[]);
    error(&raw, method::ALLOCATE, 508);
}

/// With no pair of free ports left, R cannot be honoured: 508.
#[test]
fn r_without_a_free_pair_is_508() {
    let mut h = Harness::new("min-port = 50000\nmax-port = 50000");
    let mut a = alice();
    let raw = h.allocate_raw(&mut a, &[RequestAttr::EvenPort(true)]);
    error(&raw, method::ALLOCATE, 508);
}
