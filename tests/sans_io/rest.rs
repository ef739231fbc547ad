//! TURN REST credentials (draft-uberti-behave-turn-rest-00).

use crate::prelude::*;

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
