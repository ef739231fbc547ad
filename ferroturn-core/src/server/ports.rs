//! Relay port selection: unpredictable, never the same port twice at once, and a clean
//! "no port left" instead of a panic when the range is exhausted.

use rand::RngExt;
use rand::rngs::StdRng;

/// The ports of one relay address within `[min, max]`.
#[derive(Debug)]
pub struct PortPool {
    min: u16,
    max: u16,
    used: Vec<u64>,
    in_use: usize,
}

impl PortPool {
    pub fn new(min: u16, max: u16) -> Self {
        let span = usize::from(max.saturating_sub(min)) + 1;
        Self {
            min,
            max,
            used: vec![0; span.div_ceil(64)],
            in_use: 0,
        }
    }

    fn bit(&self, port: u16) -> Option<(usize, u64)> {
        if port < self.min || port > self.max {
            return None;
        }
        let i = usize::from(port - self.min);
        Some((i / 64, 1u64 << (i % 64)))
    }

    fn is_used(&self, port: u16) -> bool {
        self.bit(port).is_none_or(|(w, m)| self.used[w] & m != 0)
    }

    /// Takes a free port chosen at random (an even one when `even`), or `None` if none is
    /// left.
    pub fn take(&mut self, rng: &mut StdRng, even: bool) -> Option<u16> {
        let span = u32::from(self.max - self.min) + 1;
        if self.in_use as u32 >= span {
            return None;
        }
        // Random probes first, then one linear sweep from a random point.
        let start = rng.random_range(0..span);
        let candidates = (0..16)
            .map(|_| rng.random_range(0..span))
            .chain((0..span).map(|i| (start + i) % span));
        for off in candidates {
            let port = self.min + off as u16;
            if (!even || port % 2 == 0) && !self.is_used(port) {
                self.mark(port, true);
                return Some(port);
            }
        }
        None
    }

    pub fn release(&mut self, port: u16) {
        if !self.is_used(port) {
            return;
        }
        self.mark(port, false);
    }

    fn mark(&mut self, port: u16, used: bool) {
        if let Some((w, m)) = self.bit(port) {
            if used {
                self.used[w] |= m;
                self.in_use += 1;
            } else {
                self.used[w] &= !m;
                self.in_use -= 1;
            }
        }
    }

    pub fn in_use(&self) -> usize {
        self.in_use
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn exhausts_cleanly_and_reuses_released_ports() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut pool = PortPool::new(50000, 50009);
        let mut got: Vec<u16> = (0..10)
            .map(|_| pool.take(&mut rng, false).unwrap())
            .collect();
        got.sort();
        assert_eq!(got, (50000..=50009).collect::<Vec<_>>());
        assert_eq!(pool.take(&mut rng, false), None);
        pool.release(50003);
        pool.release(50003);
        assert_eq!(pool.in_use(), 9);
        assert_eq!(pool.take(&mut rng, false), Some(50003));
    }

    #[test]
    fn even_ports_when_asked() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut pool = PortPool::new(50001, 50010);
        for _ in 0..5 {
            assert_eq!(pool.take(&mut rng, true).unwrap() % 2, 0);
        }
        assert_eq!(pool.take(&mut rng, true), None);
        assert!(pool.take(&mut rng, false).is_some());
    }
}
