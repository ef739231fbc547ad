//! Stateless DTLS cookies (RFC 6347 section 4.2.1): the server keeps nothing per client
//! before the client proves it receives at its address.
//!
//! A cookie is `expiry_be32 || HMAC-SHA256(key, expiry || client address || client port
//! || ClientHello parameters)[..16]`: 20 bytes. The parameters are those the repeated
//! ClientHello must keep (version, random, session_id, cipher_suites,
//! compression_methods), so a cookie is good for one handshake attempt of one client
//! transport address until it expires, and worthless from any other address or port, or
//! for another ClientHello. The key comes from the OS CSPRNG at start-up; a 128-bit tag
//! cannot be guessed online.

use super::hello::ClientHello;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::net::{IpAddr, SocketAddr};
use subtle::ConstantTimeEq;

const TAG_LEN: usize = 16;
/// Length of every cookie this server issues.
pub const COOKIE_LEN: usize = 4 + TAG_LEN;

/// A cookie as issued.
pub type Cookie = [u8; COOKIE_LEN];

/// Issues and checks cookies with one key.
#[derive(Clone)]
pub struct Cookies {
    key: [u8; 32],
    lifetime_secs: u64,
}

impl std::fmt::Debug for Cookies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cookies")
            .field("lifetime_secs", &self.lifetime_secs)
            .finish_non_exhaustive()
    }
}

/// The outcome of checking a ClientHello's cookie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CookieCheck {
    Valid,
    /// Ours and for this client, but expired.
    Expired,
    /// Empty, not ours, or for another address, port or ClientHello.
    Invalid,
}

impl Cookies {
    pub fn new(key: [u8; 32], lifetime_secs: u64) -> Self {
        Self { key, lifetime_secs }
    }

    fn tag(&self, expiry: u32, client: SocketAddr, hello: &ClientHello<'_>) -> [u8; TAG_LEN] {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(&expiry.to_be_bytes());
        match client.ip() {
            IpAddr::V4(v4) => {
                mac.update(&[4]);
                mac.update(&v4.octets());
            }
            IpAddr::V6(v6) => {
                mac.update(&[6]);
                mac.update(&v6.octets());
            }
        }
        mac.update(&client.port().to_be_bytes());
        mac.update(&hello.version);
        mac.update(hello.random);
        // Each variable-length field with its length, so no two ClientHellos feed the
        // MAC the same bytes.
        for field in [
            hello.session_id,
            hello.cipher_suites,
            hello.compression_methods,
        ] {
            mac.update(&(field.len() as u32).to_be_bytes());
            mac.update(field);
        }
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    /// A fresh cookie for `hello` from `client`, valid until `unix_now + lifetime`.
    pub fn issue(&self, client: SocketAddr, hello: &ClientHello<'_>, unix_now: u64) -> Cookie {
        let expiry = u32::try_from(unix_now.saturating_add(self.lifetime_secs)).unwrap_or(u32::MAX);
        let mut cookie = [0u8; COOKIE_LEN];
        cookie[..4].copy_from_slice(&expiry.to_be_bytes());
        cookie[4..].copy_from_slice(&self.tag(expiry, client, hello));
        cookie
    }

    /// Checks the cookie `hello` carries, sent from `client`; the tag is compared in
    /// constant time.
    pub fn check(&self, client: SocketAddr, hello: &ClientHello<'_>, unix_now: u64) -> CookieCheck {
        let Ok(cookie) = <&Cookie>::try_from(hello.cookie) else {
            return CookieCheck::Invalid;
        };
        let expiry = u32::from_be_bytes([cookie[0], cookie[1], cookie[2], cookie[3]]);
        let good: bool = self.tag(expiry, client, hello).ct_eq(&cookie[4..]).into();
        if !good {
            CookieCheck::Invalid
        } else if u64::from(expiry) < unix_now {
            CookieCheck::Expired
        } else {
            CookieCheck::Valid
        }
    }
}
