//! Wall-clock seconds without reading a clock: the driver gives an anchor (an `Instant`
//! and the unix time at it) and refreshes it now and then; times in between are derived.

use std::time::Instant;

/// Maps `Instant`s to unix seconds from the last anchor.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    at: Instant,
    unix: u64,
}

impl WallClock {
    pub fn new(now: Instant, unix_now: u64) -> Self {
        Self {
            at: now,
            unix: unix_now,
        }
    }

    /// Re-anchors it (the driver calls this now and then).
    pub fn set(&mut self, now: Instant, unix_now: u64) {
        *self = Self::new(now, unix_now);
    }

    /// The unix seconds at `now`.
    pub fn unix(&self, now: Instant) -> u64 {
        if now >= self.at {
            self.unix + now.duration_since(self.at).as_secs()
        } else {
            self.unix
                .saturating_sub(self.at.duration_since(now).as_secs())
        }
    }
}
