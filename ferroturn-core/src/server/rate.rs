//! Token buckets for the data path and for new peers: bytes per second per allocation
//! and per shard (`max-bps`, `bps-capacity`), new peer addresses per second per
//! allocation (`new-peer-rate`). Integer arithmetic in nano-tokens, so low rates refill
//! exactly however often they are asked; no allocation; time is an input.
//!
//! Datagrams are taken whole or dropped ([`Bucket::take`]); bytes of a TCP relay cannot
//! be dropped, so they are charged after the fact ([`Bucket::charge`]) and the bucket
//! may go into debt, which the reader repays by pausing for as long as it says.

use std::time::{Duration, Instant};

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
    /// Tokens times 10^9; below zero while a [`Bucket::charge`] is being repaid.
    nanotokens: i128,
    last: Option<Instant>,
}

impl Bucket {
    /// The level at `now` (refilled since the last call, at most the burst).
    #[inline]
    fn refill(&mut self, rate: Rate, now: Instant) -> i128 {
        let cap = i128::from(rate.burst) * NANOS as i128;
        let level = match self.last {
            None => cap,
            Some(last) => {
                let elapsed = now.saturating_duration_since(last).as_nanos();
                let elapsed = i128::try_from(elapsed).unwrap_or(i128::MAX);
                self.nanotokens
                    .saturating_add(elapsed.saturating_mul(i128::from(rate.per_sec)))
                    .min(cap)
            }
        };
        self.last = Some(now);
        level
    }

    /// Takes `n` tokens at `now` if the bucket holds them; otherwise takes nothing.
    #[inline]
    pub fn take(&mut self, rate: Rate, n: u64, now: Instant) -> bool {
        if rate.per_sec == 0 {
            return true;
        }
        let level = self.refill(rate, now);
        let want = i128::from(n) * NANOS as i128;
        if level >= want {
            self.nanotokens = level - want;
            true
        } else {
            self.nanotokens = level;
            false
        }
    }

    /// Takes `n` tokens at `now` whether or not the bucket holds them; if it is in debt
    /// afterwards, how long until the debt is repaid.
    pub fn charge(&mut self, rate: Rate, n: u64, now: Instant) -> Option<Duration> {
        if rate.per_sec == 0 {
            return None;
        }
        let level = self
            .refill(rate, now)
            .saturating_sub(i128::from(n) * NANOS as i128);
        self.nanotokens = level;
        if level >= 0 {
            return None;
        }
        // Each nanosecond refills `per_sec` nanotokens.
        let nanos = level.unsigned_abs().div_ceil(u128::from(rate.per_sec));
        Some(Duration::from_nanos(
            u64::try_from(nanos).unwrap_or(u64::MAX),
        ))
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
    fn charges_go_into_debt_and_say_how_long_to_repay_it() {
        let t0 = Instant::now();
        let rate = Rate::new(1000, 1000);
        let mut b = Bucket::default();
        assert_eq!(b.charge(rate, 1000, t0), None, "the burst covers it");
        assert_eq!(b.charge(rate, 500, t0), Some(Duration::from_millis(500)));
        // Datagrams are refused until the debt is repaid, then refill as usual.
        assert!(!b.take(rate, 1, t0 + Duration::from_millis(499)));
        assert!(b.take(rate, 1, t0 + Duration::from_millis(502)));
        assert_eq!(b.charge(Rate::UNLIMITED, u64::MAX, t0), None);
    }

    #[test]
    fn unlimited_always_grants() {
        let mut b = Bucket::default();
        assert!(b.take(Rate::UNLIMITED, u64::MAX, Instant::now()));
    }
}
