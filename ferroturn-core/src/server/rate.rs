//! Token buckets for the data path and for new peers: bytes per second per allocation
//! and per shard (`max-bps`, `bps-capacity`), new peer addresses per second per
//! allocation (`new-peer-rate`). Integer arithmetic in nano-tokens, so low rates refill
//! exactly however often they are asked; no allocation; time is an input.

use std::time::Instant;

const NANOS: u128 = 1_000_000_000;

/// A rate: `per_sec` tokens each second, at most `burst` saved up; 0 means unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rate {
    per_sec: u64,
    burst: u64,
}

impl Rate {
    pub const UNLIMITED: Rate = Rate {
        per_sec: 0,
        burst: 0,
    };

    /// `per_sec` per second with bursts of `burst` (at least one second's worth is not
    /// required; at least `per_sec` is sensible).
    pub fn new(per_sec: u64, burst: u64) -> Self {
        Self {
            per_sec,
            burst: burst.max(1),
        }
    }

    pub fn is_unlimited(&self) -> bool {
        self.per_sec == 0
    }

    pub fn per_sec(&self) -> u64 {
        self.per_sec
    }
}

/// One bucket. It starts full.
#[derive(Clone, Copy, Debug, Default)]
pub struct Bucket {
    /// Tokens times 10^9.
    nanotokens: u128,
    last: Option<Instant>,
}

impl Bucket {
    /// Takes `n` tokens at `now` if the bucket holds them; otherwise takes nothing.
    #[inline]
    pub fn take(&mut self, rate: Rate, n: u64, now: Instant) -> bool {
        if rate.per_sec == 0 {
            return true;
        }
        let cap = u128::from(rate.burst) * NANOS;
        let level = match self.last {
            None => cap,
            Some(last) => {
                let elapsed = now.saturating_duration_since(last).as_nanos();
                self.nanotokens
                    .saturating_add(elapsed.saturating_mul(u128::from(rate.per_sec)))
                    .min(cap)
            }
        };
        self.last = Some(now);
        let want = u128::from(n) * NANOS;
        if level >= want {
            self.nanotokens = level - want;
            true
        } else {
            self.nanotokens = level;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let rate = Rate::new(1000, 1000);
        let mut b = Bucket::default();
        assert!(b.take(rate, 600, t0));
        assert!(b.take(rate, 400, t0));
        assert!(!b.take(rate, 1, t0), "burst spent");
        assert!(
            !b.take(rate, 200, t0 + Duration::from_millis(100)),
            "100 ms = 100 tokens"
        );
        assert!(b.take(rate, 200, t0 + Duration::from_millis(200)));
        // Refill stops at the burst.
        assert!(!b.take(rate, 1001, t0 + Duration::from_secs(100)));
        assert!(b.take(rate, 1000, t0 + Duration::from_secs(100)));
    }

    #[test]
    fn low_rates_refill_exactly_when_asked_often() {
        let t0 = Instant::now();
        let rate = Rate::new(10, 1);
        let mut b = Bucket::default();
        assert!(b.take(rate, 1, t0));
        let mut granted = 0;
        // 1000 asks over one second, 1 ms apart: 10 tokens come back, not 0.
        for i in 1..=1000u64 {
            if b.take(rate, 1, t0 + Duration::from_millis(i)) {
                granted += 1;
            }
        }
        assert_eq!(granted, 10);
    }

    #[test]
    fn unlimited_always_grants() {
        let mut b = Bucket::default();
        assert!(b.take(Rate::UNLIMITED, u64::MAX, Instant::now()));
    }
}
