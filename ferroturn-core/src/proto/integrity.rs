//! MESSAGE-INTEGRITY and FINGERPRINT, done here rather than in stun-rs: stun-rs compares
//! integrity in variable time and cannot take a raw key.

use super::scan::fingerprint;
use super::wire::{HEADER_LEN, attr};
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

type HmacSha1 = Hmac<Sha1>;

/// Length of a MESSAGE-INTEGRITY attribute including its header.
const MI_ATTR_LEN: usize = 24;
/// Length of a FINGERPRINT attribute including its header.
const FP_ATTR_LEN: usize = 8;

/// Verifies the MESSAGE-INTEGRITY attribute whose header is at `at` in constant time
/// (RFC 8489 section 14.5: HMAC-SHA1 over the message up to the attribute, with the
/// length field set as if the attribute were the last one).
pub fn verify(buf: &[u8], at: usize, key: &[u8]) -> bool {
    let (Some(header), Some(body), Some(tag)) = (
        buf.get(..HEADER_LEN),
        buf.get(HEADER_LEN..at),
        buf.get(at + 4..at + MI_ATTR_LEN),
    ) else {
        return false;
    };
    let Ok(mut mac) = HmacSha1::new_from_slice(key) else {
        return false;
    };
    let Ok(len) = u16::try_from(at + MI_ATTR_LEN - HEADER_LEN) else {
        return false;
    };
    mac.update(&header[..2]);
    mac.update(&len.to_be_bytes());
    mac.update(&header[4..]);
    mac.update(body);
    mac.verify_slice(tag).is_ok()
}

/// Appends MESSAGE-INTEGRITY (when `key` is given) and FINGERPRINT (when asked) to an
/// encoded message, updating its length field before each (RFC 8489 sections 14.5, 14.7).
pub fn seal(msg: &mut Vec<u8>, key: Option<&[u8]>, with_fingerprint: bool) {
    if let Some(key) = key {
        let total = msg.len() + MI_ATTR_LEN;
        set_body_len(msg, total);
        let tag = match HmacSha1::new_from_slice(key) {
            Ok(mut mac) => {
                mac.update(msg);
                mac.finalize().into_bytes()
            }
            Err(_) => return,
        };
        msg.extend_from_slice(&attr::MESSAGE_INTEGRITY.to_be_bytes());
        msg.extend_from_slice(&20u16.to_be_bytes());
        msg.extend_from_slice(&tag);
    }
    if with_fingerprint {
        let total = msg.len() + FP_ATTR_LEN;
        set_body_len(msg, total);
        let crc = fingerprint(msg);
        msg.extend_from_slice(&attr::FINGERPRINT.to_be_bytes());
        msg.extend_from_slice(&4u16.to_be_bytes());
        msg.extend_from_slice(&crc.to_be_bytes());
    }
}

fn set_body_len(msg: &mut [u8], total: usize) {
    let body = u16::try_from(total.saturating_sub(HEADER_LEN)).unwrap_or(u16::MAX);
    if let Some(field) = msg.get_mut(2..4) {
        field.copy_from_slice(&body.to_be_bytes());
    }
}

/// The long-term credential key (RFC 8489 section 9.2.2): MD5(username ":" realm ":"
/// password), computed without building the joined string.
pub fn long_term_key(username: &str, realm: &str, password: &[u8]) -> [u8; 16] {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::scan::scan;

    #[test]
    fn seal_then_verify_round_trips_and_detects_tampering() {
        let mut m = vec![0x01, 0x01, 0, 0, 0x21, 0x12, 0xA4, 0x42];
        m.extend_from_slice(&[9; 12]);
        seal(&mut m, Some(b"key"), true);
        let s = scan(&m).expect("sealed message scans");
        assert!(s.fingerprint);
        let at = s.integrity.unwrap();
        assert!(verify(&m, at, b"key"));
        assert!(!verify(&m, at, b"other"));
        m[9] ^= 1;
        assert!(!verify(&m, at, b"key"));
    }

    #[test]
    fn verify_is_total_on_bad_offsets() {
        assert!(!verify(&[0; 10], 4, b"k"));
        assert!(!verify(&[0; 30], 20, b"k"));
    }
}
