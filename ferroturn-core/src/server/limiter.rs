//! Rate limit for answers to unauthenticated requests (401 and 438 challenges, Binding,
//! errors before authentication), per source IP, in bounded memory: a fixed table of
//! token buckets indexed by a keyed hash of the address. A spoofed flood can neither grow
//! state nor turn the server into a reflector; addresses that share a bucket share its
//! budget.

use siphasher::sip::SipHasher13;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::time::Instant;

/// Buckets in the table (about 100 KiB).
const BUCKETS: usize = 4096;

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f32,
    last: Option<Instant>,
}

pub struct SourceLimiter {
    buckets: Box<[Bucket]>,
    /// Key of the bucket hash, from the server's seed: which addresses share a bucket is
    /// not predictable from outside.
    key: [u8; 16],
    /// Tokens per second, and the bucket size.
    rate: f32,
    burst: f32,
}

impl SourceLimiter {
    /// `rate` answers per second per source IP with bursts of twice that; 0 disables the
    /// limit. `key` keys the hash that picks an address's bucket.
    pub fn new(rate: u32, key: [u8; 16]) -> Self {
        let rate = rate as f32;
        Self {
            buckets: vec![
                Bucket {
                    tokens: 2.0 * rate,
                    last: None
                };
                BUCKETS
            ]
            .into_boxed_slice(),
            key,
            rate,
            burst: 2.0 * rate,
        }
    }

    /// Takes a token for `ip` at `now`; false means: do not answer.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let mut hasher = SipHasher13::new_with_key(&self.key);
        ip.hash(&mut hasher);
        let index = (hasher.finish() as usize) % BUCKETS;
        let Some(b) = self.buckets.get_mut(index) else {
            return true;
        };
        if let Some(last) = b.last {
            let refill = now.saturating_duration_since(last).as_secs_f32() * self.rate;
            b.tokens = (b.tokens + refill).min(self.burst);
        }
        b.last = Some(now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_refills_per_address() {
        let mut l = SourceLimiter::new(10, [7; 16]);
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!((0..100).filter(|_| l.allow(a, t0)).count(), 20);
        assert!(!l.allow(a, t0 + Duration::from_millis(50)));
        assert!(l.allow(a, t0 + Duration::from_millis(200)));
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        // Another address has its own bucket (unless the keyed hash collides: 1/4096).
        let _ = l.allow(b, t0);
        assert!(SourceLimiter::new(0, [7; 16]).allow(a, t0));
    }
}
