//! Who gets an answer to an unauthenticated request over UDP (401 and 438 challenges,
//! Binding, errors before authentication), in bounded memory.
//!
//! A UDP source address can be forged, so every such answer might be aimed at a victim.
//! An answer is paid for in one of two ways:
//!
//! - **Earned credit.** A request that authenticates (MESSAGE-INTEGRITY verified under a
//!   nonce, which is bound to the client's IP) proves that its source receives what is
//!   sent to it: a spoofer never sees the nonce. Each such request credits its source
//!   with its own size in bytes, and the answers to that source's unauthenticated
//!   requests spend it byte for byte. So whatever credit pays for goes only to addresses
//!   that asked for it, and never adds up to more bytes than they sent authenticated.
//!   This is what serves many clients behind one NAT address: each client's 401 is paid
//!   for by the authenticated Allocates of the clients before it. Credit is capped per
//!   address (`unauthenticated-credit`).
//! - **Unearned**: a token from the source's own bucket (`unauthenticated-rate` answers
//!   per second, bursts of twice that) *and* one from the server-wide budget
//!   (`unauthenticated-total-rate`, bursts of twice that). The first keeps a flood aimed
//!   at one victim to that rate; the second keeps a flood from random sources to the
//!   budget, however many sources it spreads over.
//!
//! State is a fixed table of [`SLOTS`] slots indexed by a keyed hash of the address: a
//! spoofed flood grows nothing. Addresses that share a slot share its bucket. Credit
//! belongs to one address per slot (a 32-bit tag from the same hash): an address that
//! earns in a slot owned by another wears the owner's credit down by what it earns and
//! takes the slot over when it reaches zero, so the slot ends up with whoever earns most
//! (a heavy hitter such as a NAT), and no other address spends it.

use super::rate::{Bucket, Rate};
use siphasher::sip::SipHasher13;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::time::Instant;

/// Slots in the table (32 bytes each: 128 KiB per shard).
pub const SLOTS: usize = 4096;

/// The limits, as the configuration gives them to one shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Unearned answers per second per source IP (bursts of twice that); 0: unlimited.
    pub per_source: u32,
    /// Unearned answers per second in total (bursts of twice that); 0: unlimited.
    pub total: u32,
    /// The most credit one address holds, in bytes; 0: no credit is earned.
    pub credit: u32,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    /// The source bucket, in answers.
    tokens: f32,
    last: Option<Instant>,
    /// Which address owns `credit`.
    owner: u32,
    /// Bytes of answers paid for; below zero when the last answer cost more than was
    /// left (the next earnings repay it first).
    credit: i32,
}

/// Why an answer is not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The source's bucket is empty.
    Source,
    /// The server-wide budget is spent.
    Total,
}

/// How an admitted answer is paid for; [`SourceLimiter::settle`] takes its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// From the credit of the address in this slot.
    Credit(usize),
    /// From the source's bucket and the budget (or nothing is limited).
    Unearned,
}

pub struct SourceLimiter {
    slots: Box<[Slot]>,
    /// Key of the slot hash, from the server's seed: which addresses share a slot is
    /// not predictable from outside.
    key: [u8; 16],
    limits: Limits,
    total: Bucket,
}

impl SourceLimiter {
    /// A limiter whose slots are picked by a hash keyed with `key`.
    pub fn new(limits: Limits, key: [u8; 16]) -> Self {
        let mut l = Self {
            slots: vec![Slot::default(); SLOTS].into_boxed_slice(),
            key,
            limits,
            total: Bucket::default(),
        };
        l.fill();
        l
    }

    /// New limits; buckets start full again, earned credit stays (cut to the new cap).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
        self.total = Bucket::default();
        self.fill();
    }

    fn fill(&mut self) {
        let burst = 2.0 * self.limits.per_source as f32;
        let cap = self.cap();
        for s in self.slots.iter_mut() {
            s.tokens = burst;
            s.last = None;
            s.credit = s.credit.min(cap);
        }
    }

    fn cap(&self) -> i32 {
        i32::try_from(self.limits.credit).unwrap_or(i32::MAX)
    }

    /// The slots tracked: fixed, whatever the traffic.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// The slot of `ip` and the tag that names it as a credit owner.
    fn locate(&self, ip: IpAddr) -> (usize, u32) {
        let mut hasher = SipHasher13::new_with_key(&self.key);
        ip.hash(&mut hasher);
        let h = hasher.finish();
        ((h as usize) % SLOTS, (h >> 32) as u32)
    }

    /// `ip` sent an authenticated request of `bytes`: credit for as many bytes of
    /// answers to its unauthenticated requests.
    pub fn earn(&mut self, ip: IpAddr, bytes: usize) {
        let cap = self.cap();
        if cap == 0 {
            return;
        }
        let (index, tag) = self.locate(ip);
        let Some(s) = self.slots.get_mut(index) else {
            return;
        };
        let bytes = i32::try_from(bytes).unwrap_or(i32::MAX);
        if s.owner == tag {
            s.credit = s.credit.saturating_add(bytes).min(cap);
        } else if s.credit > bytes {
            s.credit -= bytes;
        } else {
            s.owner = tag;
            s.credit = bytes.saturating_sub(s.credit.max(0)).min(cap);
        }
    }

    /// Whether an answer to `ip` may be sent at `now`, and how it is paid for.
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> Result<Admission, Refusal> {
        if self.limits.per_source == 0 && self.limits.total == 0 {
            return Ok(Admission::Unearned);
        }
        let (index, tag) = self.locate(ip);
        let per_source = self.limits.per_source as f32;
        let Some(s) = self.slots.get_mut(index) else {
            return Ok(Admission::Unearned);
        };
        if s.owner == tag && s.credit > 0 {
            return Ok(Admission::Credit(index));
        }
        if per_source > 0.0 {
            if let Some(last) = s.last {
                let refill = now.saturating_duration_since(last).as_secs_f32() * per_source;
                s.tokens = (s.tokens + refill).min(2.0 * per_source);
            }
            s.last = Some(now);
            if s.tokens < 1.0 {
                return Err(Refusal::Source);
            }
        }
        let total = u64::from(self.limits.total);
        if !self.total.take(Rate::new(total, 2 * total), 1, now) {
            return Err(Refusal::Total);
        }
        if per_source > 0.0 {
            s.tokens -= 1.0;
        }
        Ok(Admission::Unearned)
    }

    /// The answer admitted as `admission` is `bytes` long.
    pub fn settle(&mut self, admission: Admission, bytes: usize) {
        if let Admission::Credit(index) = admission {
            if let Some(s) = self.slots.get_mut(index) {
                let bytes = i32::try_from(bytes).unwrap_or(i32::MAX);
                s.credit = s.credit.saturating_sub(bytes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const NO_TOTAL: Limits = Limits {
        per_source: 10,
        total: 0,
        credit: 0,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn answered(l: &mut SourceLimiter, a: IpAddr, n: usize, now: Instant) -> usize {
        (0..n)
            .filter(|_| match l.admit(a, now) {
                Ok(adm) => {
                    l.settle(adm, 70);
                    true
                }
                Err(_) => false,
            })
            .count()
    }

    #[test]
    fn bursts_then_refills_per_address() {
        let mut l = SourceLimiter::new(NO_TOTAL, [7; 16]);
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        assert_eq!(answered(&mut l, a, 100, t0), 20);
        assert_eq!(
            l.admit(a, t0 + Duration::from_millis(50)),
            Err(Refusal::Source)
        );
        assert!(l.admit(a, t0 + Duration::from_millis(200)).is_ok());
        let unlimited = Limits {
            per_source: 0,
            total: 0,
            credit: 0,
        };
        assert!(SourceLimiter::new(unlimited, [7; 16]).admit(a, t0).is_ok());
    }

    #[test]
    fn the_total_budget_holds_over_many_sources() {
        let limits = Limits {
            per_source: 10,
            total: 100,
            credit: 0,
        };
        let mut l = SourceLimiter::new(limits, [7; 16]);
        let t0 = Instant::now();
        let sent: usize = (0..1000u32)
            .map(|i| answered(&mut l, IpAddr::from(i.to_be_bytes()), 1, t0))
            .sum();
        assert_eq!(sent, 200, "the budget's burst");
        assert_eq!(l.admit(ip("192.0.2.1"), t0), Err(Refusal::Total));
        assert_eq!(l.slots(), SLOTS);
    }

    #[test]
    fn credit_pays_byte_for_byte_and_only_its_owner() {
        let limits = Limits {
            per_source: 1,
            total: 1,
            credit: 1000,
        };
        let mut l = SourceLimiter::new(limits, [7; 16]);
        let t0 = Instant::now();
        let nat = ip("198.51.100.7");
        assert_eq!(answered(&mut l, nat, 10, t0), 2, "the bucket's burst");
        l.earn(nat, 350);
        // 350 bytes pay for five answers of 70.
        assert_eq!(answered(&mut l, nat, 10, t0), 5);
        // Capped.
        l.earn(nat, 100_000);
        assert_eq!(answered(&mut l, nat, 100, t0), 1000 / 70 + 1);
        // Another address in the same slot does not spend it.
        l.earn(nat, 700);
        let (slot, _) = l.locate(nat);
        let other = (0..u32::MAX)
            .map(|i| IpAddr::from(i.to_be_bytes()))
            .find(|a| *a != nat && l.locate(*a).0 == slot)
            .unwrap();
        assert!(l.admit(other, t0).is_err());
        // It wears the owner's credit down by what it earns, then owns the slot.
        l.earn(other, 550);
        assert_eq!(
            answered(&mut l, nat, 10, t0),
            2,
            "100 bytes left: two answers"
        );
        l.earn(other, 300);
        assert_eq!(
            answered(&mut l, other, 10, t0),
            5,
            "300 bytes: five answers"
        );
        assert_eq!(answered(&mut l, nat, 10, t0), 0);
    }
}
