//! What the nodes of a fleet share without any store: the nonce key (`nonce-secret`), so
//! a client sent to another node (DNS, a redirect, a load balancer) authenticates there
//! with the nonce it already holds.

use crate::common::adversary::{Session, error_code, is_success};
use crate::common::wire::relayed_of;
use crate::common::{SECRET, ip, rest_credentials, start_server};
use ferroturn_core::proto::wire::method;
use std::time::Duration;

const UDP: u8 = 17;

/// A session challenged by `first`, whose requests then go to `then` from the same
/// address.
async fn challenged_then_moved(
    first: &crate::common::TestServer,
    then: &crate::common::TestServer,
) -> Session {
    let (u, p) = rest_credentials(SECRET, "alice", Duration::from_secs(600));
    let mut s = Session::challenged(ip("127.0.0.1"), first.addr, &u, &p).await;
    s.server = then.addr;
    s
}

/// An authenticated Allocate with the session's nonce; the answer.
async fn allocate(s: &Session) -> Vec<u8> {
    let msg = s
        .authed(method::ALLOCATE)
        .transport(UDP)
        .integrity(&s.key())
        .fingerprint()
        .bytes();
    s.exchange(&msg).await.expect("an answer")
}

/// Nodes with the same `nonce-secret` accept each other's nonces; a node with another
/// secret, or none (a random key of its own), answers 438 Stale Nonce with one of its
/// own (RFC 8489 section 9.2.4). Rotation: a node listing the new secret first and the
/// old one after accepts nonces of both, and its own are good at nodes given the new one.
#[tokio::test]
async fn nodes_sharing_a_nonce_secret_accept_each_others_nonces() {
    const OLD: &str = "nonce-secret = [\"fleet-secret-old-0123456789\"]";
    const NEW: &str = "nonce-secret = [\"fleet-secret-new-0123456789\"]";
    const ROTATED: &str =
        "nonce-secret = [\"fleet-secret-new-0123456789\", \"fleet-secret-old-0123456789\"]";
    let a = start_server(OLD).await;
    let b = start_server(OLD).await;
    let other = start_server(NEW).await;
    let island = start_server("").await;
    let rotated = start_server(ROTATED).await;

    let s = challenged_then_moved(&a, &b).await;
    let r = allocate(&s).await;
    assert!(is_success(&r), "B refused A's nonce: {:?}", error_code(&r));
    assert!(relayed_of(&r).ip().is_loopback());

    for (node, name) in [(&other, "another secret"), (&island, "no secret")] {
        let s = challenged_then_moved(&a, node).await;
        assert_eq!(error_code(&allocate(&s).await), Some(438), "{name}");
    }

    let s = challenged_then_moved(&a, &rotated).await;
    assert!(
        is_success(&allocate(&s).await),
        "the old secret still verifies"
    );
    let s = challenged_then_moved(&rotated, &other).await;
    assert!(is_success(&allocate(&s).await), "the new secret signs");
    let s = challenged_then_moved(&rotated, &a).await;
    assert_eq!(
        error_code(&allocate(&s).await),
        Some(438),
        "A has only the old"
    );
}
