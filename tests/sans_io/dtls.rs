//! The stateless DTLS cookie exchange (RFC 6347 section 4.2.1, for TURN over DTLS, RFC
//! 7350) in virtual time: a ClientHello without a valid cookie gets a HelloVerifyRequest
//! and nothing else; only the same client transport address repeating the same
//! ClientHello with the cookie, before it expires, may start a session.

use crate::dtls_wire::{client_hello, hello_verify_cookie, record_seq};
use ferroturn_core::dtls::{COOKIE_LIFETIME, Gate, HELLO_VERIFY_LEN, Verdict};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const CLIENT: &str = "192.0.2.10:40000";
const RANDOM: [u8; 32] = [7; 32];

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn gate(now: Instant) -> Gate {
    Gate::new([9; 32], now, 1_800_000_000)
}

/// The cookie `gate` hands `client` for a first ClientHello with `random`.
fn cookie_for(gate: &Gate, now: Instant, client: &str, random: [u8; 32]) -> Vec<u8> {
    let mut out = [0u8; HELLO_VERIFY_LEN];
    let first = client_hello(0, 0, random, &[]);
    let Verdict::HelloVerify { len, expired } =
        gate.handle_datagram(now, addr(client), &first, &mut out)
    else {
        panic!("a ClientHello without a cookie gets a HelloVerifyRequest");
    };
    assert!(!expired);
    hello_verify_cookie(&out[..len]).expect("a HelloVerifyRequest with a cookie")
}

/// What the repeated ClientHello carrying `cookie` gets from `client`.
fn repeat(gate: &Gate, now: Instant, client: &str, random: [u8; 32], cookie: &[u8]) -> Verdict {
    let mut out = [0u8; HELLO_VERIFY_LEN];
    gate.handle_datagram(
        now,
        addr(client),
        &client_hello(1, 1, random, cookie),
        &mut out,
    )
}

#[test]
fn rfc6347_4_2_1_cookie_from_the_same_address_starts_a_session() {
    let t0 = Instant::now();
    let g = gate(t0);
    let cookie = cookie_for(&g, t0, CLIENT, RANDOM);
    let later = t0 + Duration::from_secs(1);
    match repeat(&g, later, CLIENT, RANDOM, &cookie) {
        Verdict::Accept { cookie: accepted } => assert_eq!(&accepted[..], &cookie[..]),
        other => panic!("expected Accept, got {other:?}"),
    }
}

#[test]
fn rfc6347_4_2_1_cookie_replayed_from_another_port_or_address_gets_a_fresh_challenge() {
    let t0 = Instant::now();
    let g = gate(t0);
    let cookie = cookie_for(&g, t0, CLIENT, RANDOM);
    for other in [
        "192.0.2.10:40001",
        "192.0.2.11:40000",
        "[2001:db8::10]:40000",
    ] {
        match repeat(&g, t0, other, RANDOM, &cookie) {
            Verdict::HelloVerify { expired, .. } => assert!(!expired, "{other}"),
            v => panic!("a cookie replayed from {other} got {v:?}"),
        }
    }
}

#[test]
fn rfc6347_4_2_1_cookie_for_another_client_hello_is_refused() {
    let t0 = Instant::now();
    let g = gate(t0);
    let cookie = cookie_for(&g, t0, CLIENT, RANDOM);
    // Same address and port, another handshake attempt (a new random).
    assert!(matches!(
        repeat(&g, t0, CLIENT, [8; 32], &cookie),
        Verdict::HelloVerify { .. }
    ));
    // A cookie changed in one bit, and cookies of the wrong length.
    let mut forged = cookie.clone();
    forged[0] ^= 1;
    for bad in [forged, cookie[..19].to_vec(), [&cookie[..], &[0]].concat()] {
        assert!(matches!(
            repeat(&g, t0, CLIENT, RANDOM, &bad),
            Verdict::HelloVerify { expired: false, .. }
        ));
    }
    // Another server's key.
    let other = Gate::new([10; 32], t0, 1_800_000_000);
    assert!(matches!(
        repeat(&other, t0, CLIENT, RANDOM, &cookie),
        Verdict::HelloVerify { .. }
    ));
}

#[test]
fn rfc6347_4_2_1_expired_cookie_gets_a_fresh_challenge() {
    let t0 = Instant::now();
    let g = gate(t0);
    let cookie = cookie_for(&g, t0, CLIENT, RANDOM);
    let last = t0 + COOKIE_LIFETIME;
    assert!(matches!(
        repeat(&g, last, CLIENT, RANDOM, &cookie),
        Verdict::Accept { .. }
    ));
    let after = last + Duration::from_secs(1);
    let mut out = [0u8; HELLO_VERIFY_LEN];
    let v = g.handle_datagram(
        after,
        addr(CLIENT),
        &client_hello(1, 1, RANDOM, &cookie),
        &mut out,
    );
    let Verdict::HelloVerify { len, expired } = v else {
        panic!("an expired cookie got {v:?}");
    };
    assert!(expired);
    // The fresh cookie works where the old one no longer does.
    let fresh = hello_verify_cookie(&out[..len]).unwrap();
    assert_ne!(fresh, cookie);
    assert!(matches!(
        repeat(&g, after, CLIENT, RANDOM, &fresh),
        Verdict::Accept { .. }
    ));
}

#[test]
fn rfc6347_4_2_1_hello_verify_request_echoes_the_record_sequence_number() {
    let t0 = Instant::now();
    let g = gate(t0);
    let mut out = [0u8; HELLO_VERIFY_LEN];
    let hello = client_hello(0x0102_0304_0506, 0, RANDOM, &[]);
    let Verdict::HelloVerify { len, .. } = g.handle_datagram(t0, addr(CLIENT), &hello, &mut out)
    else {
        panic!("expected a HelloVerifyRequest");
    };
    let hvr = &out[..len];
    assert_eq!(record_seq(hvr), Some(0x0102_0304_0506));
    // Record and body version DTLS 1.0, message_seq 0, unfragmented, and smaller than
    // the ClientHello it answers (no amplification).
    assert_eq!(&hvr[1..3], &[0xfe, 0xff]);
    assert_eq!(&hvr[17..19], &[0, 0]);
    assert_eq!(&hvr[25..27], &[0xfe, 0xff]);
    assert!(len < hello.len());
}

#[test]
fn anything_but_a_whole_client_hello_is_dropped() {
    let t0 = Instant::now();
    let g = gate(t0);
    let good = client_hello(0, 0, RANDOM, &[]);
    let mut cases: Vec<Vec<u8>> = vec![Vec::new(), vec![22], vec![0xff; 200]];
    // Every truncation of a good ClientHello.
    cases.extend((0..good.len()).map(|n| good[..n].to_vec()));
    // Application data, epoch 1, a ClientHello fragment, message_seq 2, a STUN header.
    for (i, v) in [(0, 23), (4, 1), (22, 5), (18, 2)] {
        let mut c = good.clone();
        c[i] = v;
        cases.push(c);
    }
    cases.push(vec![
        0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    for case in &cases {
        let mut out = [0u8; HELLO_VERIFY_LEN];
        assert_eq!(
            g.handle_datagram(t0, addr(CLIENT), case, &mut out),
            Verdict::Drop,
            "{case:02x?}"
        );
    }
    // A buffer too short for the answer drops rather than cuts it.
    let mut short = [0u8; HELLO_VERIFY_LEN - 1];
    assert_eq!(
        g.handle_datagram(t0, addr(CLIENT), &good, &mut short),
        Verdict::Drop
    );
}
