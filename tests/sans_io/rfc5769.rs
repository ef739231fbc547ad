//! RFC 5769 test vectors (files under tests/data) through the pre-scan, the integrity
//! check and the stun-rs codec wrapper.

use ferroturn::client::codec as client_codec;
use ferroturn_core::proto::codec;
use ferroturn_core::proto::integrity::{long_term_key, verify};
use ferroturn_core::proto::scan::scan;
use std::net::SocketAddr;

fn vector(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let hex: String = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| l.split_whitespace())
        .collect();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

const SHORT_TERM_PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

#[test]
fn rfc5769_2_1_sample_request_integrity_and_fingerprint() {
    let m = vector("rfc5769-2.1-request.hex");
    let s = scan(&m).expect("vector scans");
    assert!(s.fingerprint, "FINGERPRINT present and valid");
    let at = s.integrity.expect("MESSAGE-INTEGRITY present");
    assert_eq!(at, 76);
    assert!(verify(&m, at, SHORT_TERM_PASSWORD));
    assert!(!verify(&m, at, b"wrong"));
    let req = codec::decode_request(&m, &s).expect("decodes");
    assert_eq!(req.username.as_deref(), Some("evtj:h6vY"));
    // Flipping any covered byte breaks integrity or fingerprint.
    for i in [8, 30, 70] {
        let mut t = m.clone();
        t[i] ^= 1;
        let ok = scan(&t)
            .map(|_| verify(&t, at, SHORT_TERM_PASSWORD))
            .unwrap_or(false);
        assert!(!ok, "tampered byte {i} accepted");
    }
}

#[test]
fn rfc5769_2_2_and_2_3_sample_responses_decode_mapped_addresses() {
    for (file, expected) in [
        ("rfc5769-2.2-response-ipv4.hex", "192.0.2.1:32853"),
        (
            "rfc5769-2.3-response-ipv6.hex",
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853",
        ),
    ] {
        let m = vector(file);
        let s = scan(&m).expect("vector scans");
        assert!(s.fingerprint);
        assert!(
            verify(&m, s.integrity.expect("MI"), SHORT_TERM_PASSWORD),
            "{file}"
        );
        let r = client_codec::decode_response(&m).expect("decodes");
        assert_eq!(
            r.xor_mapped,
            Some(expected.parse::<SocketAddr>().unwrap()),
            "{file}"
        );
    }
}

#[test]
fn rfc5769_2_4_long_term_request_verifies_with_the_md5_key() {
    let m = vector("rfc5769-2.4-request-long-term.hex");
    let s = scan(&m).expect("vector scans");
    assert!(!s.fingerprint);
    // The password after SASLprep is "TheMatrIX" (RFC 5769 section 2.4).
    let key = long_term_key(
        "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}",
        "example.org",
        b"TheMatrIX",
    );
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, "e8ca7ad59d5eb0518e312911d2dab2a9");
    assert!(verify(&m, s.integrity.expect("MI"), &key));
    let req = codec::decode_request(&m, &s).expect("decodes");
    assert_eq!(req.realm.as_deref(), Some("example.org"));
    assert_eq!(req.nonce.as_deref(), Some("f//499k954d6OL34oL9FSTvy64sA"));
}
