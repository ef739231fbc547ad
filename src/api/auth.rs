//! Bearer tokens: the SHA-256 of the presented token is compared with every configured
//! hash in constant time, so neither the match nor its position leaks through timing.

use crate::config::KeyHash;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// Longest token looked at; anything longer is no key of ours.
const MAX_TOKEN: usize = 512;

/// The token of an `Authorization: Bearer <token>` header, if well formed.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= MAX_TOKEN)
        .then_some(token)
}

/// The index of the hash among `hashes` that `token` hashes to. Every hash is compared,
/// whatever matches.
pub fn find<'a>(token: &str, hashes: impl Iterator<Item = &'a KeyHash>) -> Option<usize> {
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let mut found = 0u32;
    let mut index = 0u32;
    for (i, h) in hashes.enumerate() {
        let hit = digest.ct_eq(h) & !found.ct_eq(&1);
        index.conditional_assign(&(i as u32), hit);
        found.conditional_assign(&1, hit);
    }
    (found == 1).then_some(index as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn finds_the_first_matching_key() {
        let a: KeyHash = Sha256::digest(b"alpha").into();
        let b: KeyHash = Sha256::digest(b"beta").into();
        let keys = [a, b, b];
        assert_eq!(find("alpha", keys.iter()), Some(0));
        assert_eq!(find("beta", keys.iter()), Some(1));
        assert_eq!(find("gamma", keys.iter()), None);
        assert_eq!(find("beta", [].iter()), None);
    }

    #[test]
    fn bearer_header_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer tok"));
        assert_eq!(bearer(&h), Some("tok"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("bearer  tok "));
        assert_eq!(bearer(&h), Some("tok"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic dG9rOg=="));
        assert_eq!(bearer(&h), None);
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
    }
}
