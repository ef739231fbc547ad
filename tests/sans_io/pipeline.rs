//! Binding (RFC 8489 section 3), and what the request pipeline ignores or refuses
//! before any handler runs.

use crate::prelude::*;

/// RFC 8489 sections 3 and 14.2: a Binding request is answered without authentication
/// with XOR-MAPPED-ADDRESS equal to the client's address, no SOFTWARE (it would only
/// add amplification), and FINGERPRINT only when the request carried one (14.7).
#[test]
fn binding_reflects_the_client_address_and_echoes_fingerprint_only_when_present() {
    let mut h = Harness::new("");
    for client in ["203.0.113.7:5555", "[2001:db8::7]:6666"] {
        let tuple = udp(client);
        let txn = h.next_txn();
        let bare = header(method::BINDING, Class::Request, &txn);
        let raw = h.exchange(tuple, &bare);
        let r = success(&raw, method::BINDING);
        assert_eq!(r.xor_mapped, Some(addr(client)));
        assert_eq!(attr_types(&raw), vec![attr::XOR_MAPPED_ADDRESS]);

        let mut with = bare.clone();
        integrity::seal(&mut with, None, true);
        let raw = h.exchange(tuple, &with);
        let r = success(&raw, method::BINDING);
        assert_eq!(r.xor_mapped, Some(addr(client)));
        assert_eq!(
            attr_types(&raw),
            vec![attr::XOR_MAPPED_ADDRESS, attr::FINGERPRINT]
        );
        assert!(has_fingerprint(&raw));
        assert!(!attr_types(&raw).contains(&attr::SOFTWARE));
    }
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.server.deadline_count(), 0);
}

/// RFC 8489 section 14.5: attributes after MESSAGE-INTEGRITY (other than
/// MESSAGE-INTEGRITY-SHA256 and FINGERPRINT) are ignored: an unknown
/// comprehension-required attribute there causes no 420, a LIFETIME there grants nothing.
#[test]
fn attributes_after_message_integrity_are_ignored() {
    let mut h = Harness::new("");
    let mut c = alice();
    h.challenge(
        &mut c,
        method::ALLOCATE,
        &[RequestAttr::RequestedTransport(UDP)],
    );
    let txn = h.next_txn();
    let mut m = c.signed(
        &txn,
        method::ALLOCATE,
        &[RequestAttr::RequestedTransport(UDP)],
        &[],
        false,
    );
    push_attr(&mut m, UNKNOWN_ATTR, &[1, 2, 3, 4]);
    push_attr(&mut m, attr::LIFETIME, &3600u32.to_be_bytes());
    let raw = h.exchange(c.tuple, &m);
    let r = success(&raw, method::ALLOCATE);
    assert_eq!(
        r.lifetime,
        Some(600),
        "the LIFETIME after MESSAGE-INTEGRITY was used"
    );
    assert!(verifies(&raw, &c.key));
}

/// RFC 8489 section 14.3 and 14.4: USERNAME under 509 bytes, NONCE under 128 characters;
/// larger ones are refused by the pre-scan with 400 before any decoding, keeping no state.
#[test]
fn oversize_username_or_nonce_is_400_and_keeps_nothing() {
    let mut h = Harness::new("");
    let c = alice();
    for (t, len) in [
        (attr::NONCE, 800usize),
        (attr::USERNAME, 600),
        (attr::REALM, 900),
    ] {
        let txn = h.next_txn();
        let value = vec![b'a'; len];
        let m = build(
            method::ALLOCATE,
            &txn,
            &[RequestAttr::RequestedTransport(UDP)],
            &[(t, &value)],
            Some(&c.key),
            false,
        );
        let raw = h.exchange(c.tuple, &m);
        error(&raw, method::ALLOCATE, 400);
        assert!(!has_integrity(&raw));
    }
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.server.deadline_count(), 0);
}
