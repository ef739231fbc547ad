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
        let port = self.find(rng, 1, |pool, port| {
            (!even || port % 2 == 0) && !pool.is_used(port)
        })?;
        self.mark(port, true);
        Some(port)
    }

    /// The first port that `fits`, among 16 random probes and then one linear sweep from
    /// a random point; `None` without trying when fewer than `needed` ports are free.
    fn find(
        &self,
        rng: &mut StdRng,
        needed: u32,
        fits: impl Fn(&Self, u16) -> bool,
    ) -> Option<u16> {
        let span = u32::from(self.max - self.min) + 1;
        if self.in_use as u32 + needed > span {
            return None;
        }
        let start = rng.random_range(0..span);
        (0..16)
            .map(|_| rng.random_range(0..span))
            .chain((0..span).map(|i| (start + i) % span))
            .map(|off| self.min + off as u16)
            .find(|port| fits(self, *port))
    }

    /// Takes an even port and the odd one above it (RFC 8656 section 18.7, EVEN-PORT with
    /// the R bit), or `None` if no such pair is free.
    pub fn take_pair(&mut self, rng: &mut StdRng) -> Option<u16> {
        let port = self.find(rng, 2, |pool, port| {
            port % 2 == 0 && port < pool.max && !pool.is_used(port) && !pool.is_used(port + 1)
        })?;
        self.mark(port, true);
        self.mark(port + 1, true);
        Some(port)
    }

    /// Marks `port` taken if it is in this pool's range and free (an allocation that
    /// left for another shard comes back with its port).
    pub fn claim(&mut self, port: u16) {
        if !self.is_used(port) {
            self.mark(port, true);
        }
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

    #[test]
    fn pairs_are_an_even_port_and_the_next_within_the_range() {
        let mut rng = StdRng::seed_from_u64(3);
        // 50001-50010: even ports 50002..50010, but 50010 has no 50011 in range.
        let mut pool = PortPool::new(50001, 50010);
        let mut got = Vec::new();
        while let Some(p) = pool.take_pair(&mut rng) {
            assert_eq!(p % 2, 0);
            assert!(p < 50010, "{p}");
            got.push(p);
        }
        got.sort();
        assert_eq!(got, vec![50002, 50004, 50006, 50008]);
        assert_eq!(pool.in_use(), 8);
        pool.release(50005);
        assert_eq!(pool.take_pair(&mut rng), None, "50004 is still taken");
        pool.release(50004);
        assert_eq!(pool.take_pair(&mut rng), Some(50004));
    }
}
