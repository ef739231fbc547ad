//! Rate limit for log lines a remote party can trigger at will (failed authentications,
//! refused peers, exhausted ports): at most [`PER_SECOND`] such lines per shard per
//! second; the rest are counted and reported in one line when logging resumes. Interior
//! mutability so the `&self` paths that decide can log.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Noisy lines allowed per shard per second.
pub const PER_SECOND: u32 = 20;

#[derive(Debug, Default)]
pub struct LogLimit {
    window: Cell<Option<Instant>>,
    used: Cell<u32>,
    suppressed: Cell<u64>,
}

impl LogLimit {
    /// Whether a noisy line may be logged at `now`. When a new window opens after lines
    /// were suppressed, says how many first.
    pub fn allow(&self, now: Instant) -> bool {
        let fresh = self
            .window
            .get()
            .is_none_or(|start| now.saturating_duration_since(start) >= Duration::from_secs(1));
        if fresh {
            self.window.set(Some(now));
            self.used.set(0);
            let n = self.suppressed.replace(0);
            if n > 0 {
                tracing::info!(
                    suppressed = n,
                    "similar log lines suppressed in the last second(s)"
                );
            }
        }
        if self.used.get() < PER_SECOND {
            self.used.set(self.used.get() + 1);
            true
        } else {
            self.suppressed.set(self.suppressed.get() + 1);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_the_budget_per_second_then_again() {
        let t0 = Instant::now();
        let l = LogLimit::default();
        let allowed = (0..100).filter(|_| l.allow(t0)).count();
        assert_eq!(allowed, PER_SECOND as usize);
        assert!(!l.allow(t0 + Duration::from_millis(999)));
        assert!(l.allow(t0 + Duration::from_secs(1)));
    }
}
