//! Stateless nonces: the server keeps nothing per unauthenticated source.
//!
//! A nonce is `base64url(expiry_be32 || HMAC-SHA256(key, expiry || client_ip)[..8])`:
//! 16 characters, so a 401 stays small (it is what an unauthenticated flood gets back).
//! A 64-bit tag cannot be guessed online; a 32-bit expiry lasts until 2106.
//! The key comes from the OS CSPRNG at start-up, or, for a fleet whose nodes must accept
//! each other's nonces, from `nonce-secret` (several rotate: the first signs, every one
//! verifies). Either way nonces cannot be predicted or forged without the key, and a nonce
//! issued to one client address is worthless from another.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::net::IpAddr;
use subtle::ConstantTimeEq;

const TAG_LEN: usize = 8;
const RAW_LEN: usize = 4 + TAG_LEN;
/// Length of every nonce this server issues (base64 of 12 bytes, no padding).
pub const NONCE_LEN: usize = 16;

/// The keys nonces are signed and checked with: the first signs, every one verifies.
/// Never empty. Its `Debug` names only how many there are.
#[derive(Clone, PartialEq, Eq)]
pub struct NonceKeys(Vec<[u8; 32]>);

impl NonceKeys {
    /// One key (the random per-process key).
    pub fn single(key: [u8; 32]) -> Self {
        NonceKeys(vec![key])
    }

    /// The keys of `nonce-secret`: each is HMAC-SHA256 of the secret under a fixed label,
    /// so every node given the same secret derives the same key. None for an empty list.
    pub fn from_secrets<S: AsRef<[u8]>>(secrets: &[S]) -> Option<Self> {
        if secrets.is_empty() {
            return None;
        }
        let keys = secrets
            .iter()
            .map(|secret| {
                let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"ferroturn nonce-secret")
                    .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
                mac.update(secret.as_ref());
                mac.finalize().into_bytes().into()
            })
            .collect();
        Some(NonceKeys(keys))
    }
}

impl std::fmt::Debug for NonceKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NonceKeys({} keys)", self.0.len())
    }
}

/// Issues and checks nonces.
#[derive(Clone)]
pub struct Nonces {
    keys: NonceKeys,
    lifetime_secs: u64,
}

/// The outcome of checking a client's NONCE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceCheck {
    Valid,
    /// Ours, but expired: 438 Stale Nonce.
    Stale,
    /// Not ours, or issued to another address: also 438 (RFC 8489 section 9.2.4).
    Invalid,
}

impl Nonces {
    pub fn new(keys: NonceKeys, lifetime_secs: u64) -> Self {
        Self {
            keys,
            lifetime_secs,
        }
    }

    /// The key that signs new nonces.
    fn signing_key(&self) -> &[u8; 32] {
        // NonceKeys is never empty: `single` has one key, `from_secrets` refuses none.
        &self.keys.0[0]
    }

    fn tag(key: &[u8; 32], expiry: u32, ip: IpAddr) -> [u8; TAG_LEN] {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(&expiry.to_be_bytes());
        match ip {
            IpAddr::V4(v4) => mac.update(&v4.octets()),
            IpAddr::V6(v6) => mac.update(&v6.octets()),
        }
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    /// A fresh nonce for `ip`, valid until `unix_now + lifetime`.
    pub fn issue(&self, ip: IpAddr, unix_now: u64) -> String {
        let expiry = u32::try_from(unix_now.saturating_add(self.lifetime_secs)).unwrap_or(u32::MAX);
        let mut raw = [0u8; RAW_LEN];
        raw[..4].copy_from_slice(&expiry.to_be_bytes());
        raw[4..].copy_from_slice(&Self::tag(self.signing_key(), expiry, ip));
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Checks a nonce presented by `ip`; the tag is compared in constant time.
    pub fn check(&self, nonce: &str, ip: IpAddr, unix_now: u64) -> NonceCheck {
        if nonce.len() != NONCE_LEN {
            return NonceCheck::Invalid;
        }
        let mut raw = [0u8; RAW_LEN + 2];
        match URL_SAFE_NO_PAD.decode_slice(nonce.as_bytes(), &mut raw) {
            Ok(RAW_LEN) => {}
            _ => return NonceCheck::Invalid,
        }
        let mut exp = [0u8; 4];
        exp.copy_from_slice(&raw[..4]);
        let expiry = u32::from_be_bytes(exp);
        let good = self
            .keys
            .0
            .iter()
            .any(|key| bool::from(Self::tag(key, expiry, ip).ct_eq(&raw[4..RAW_LEN])));
        if !good {
            NonceCheck::Invalid
        } else if u64::from(expiry) < unix_now {
            NonceCheck::Stale
        } else {
            NonceCheck::Valid
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_is_bound_to_address_key_and_time() {
        let n = Nonces::new(NonceKeys::single([1; 32]), 600);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let nonce = n.issue(ip, 1000);
        assert_eq!(nonce.len(), NONCE_LEN);
        assert_eq!(n.check(&nonce, ip, 1000), NonceCheck::Valid);
        assert_eq!(n.check(&nonce, ip, 1600), NonceCheck::Valid);
        assert_eq!(n.check(&nonce, ip, 1601), NonceCheck::Stale);
        assert_eq!(
            n.check(&nonce, "192.0.2.2".parse().unwrap(), 1000),
            NonceCheck::Invalid
        );
        assert_eq!(
            Nonces::new(NonceKeys::single([2; 32]), 600).check(&nonce, ip, 1000),
            NonceCheck::Invalid
        );
        assert_eq!(n.check("short", ip, 1000), NonceCheck::Invalid);
        assert_eq!(
            n.check(&"!".repeat(NONCE_LEN), ip, 1000),
            NonceCheck::Invalid
        );
    }

    #[test]
    fn forged_expiry_is_rejected() {
        let n = Nonces::new(NonceKeys::single([1; 32]), 600);
        let ip: IpAddr = "::1".parse().unwrap();
        let nonce = n.issue(ip, 1000);
        let mut raw = URL_SAFE_NO_PAD.decode(&nonce).unwrap();
        raw[3] ^= 0xFF;
        let forged = URL_SAFE_NO_PAD.encode(raw);
        assert_eq!(n.check(&forged, ip, 1000), NonceCheck::Invalid);
    }

    #[test]
    fn nonce_secrets_rotate_the_first_signs_and_all_verify() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let old = Nonces::new(NonceKeys::from_secrets(&["old"]).unwrap(), 600);
        let rotated = Nonces::new(NonceKeys::from_secrets(&["new", "old"]).unwrap(), 600);
        let new = Nonces::new(NonceKeys::from_secrets(&["new"]).unwrap(), 600);
        // The same secret gives the same key anywhere (a fleet's nodes).
        let other_node = Nonces::new(NonceKeys::from_secrets(&["old"]).unwrap(), 600);
        let by_old = old.issue(ip, 1000);
        assert_eq!(other_node.check(&by_old, ip, 1000), NonceCheck::Valid);
        assert_eq!(rotated.check(&by_old, ip, 1000), NonceCheck::Valid);
        assert_eq!(new.check(&by_old, ip, 1000), NonceCheck::Invalid);
        let by_rotated = rotated.issue(ip, 1000);
        assert_eq!(new.check(&by_rotated, ip, 1000), NonceCheck::Valid);
        assert_eq!(old.check(&by_rotated, ip, 1000), NonceCheck::Invalid);
        assert!(NonceKeys::from_secrets::<&str>(&[]).is_none());
        assert_eq!(
            format!("{:?}", NonceKeys::from_secrets(&["new", "old"]).unwrap()),
            "NonceKeys(2 keys)"
        );
    }
}
