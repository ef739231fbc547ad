//! The packets one flow has in flight, indexed by sequence number, and the rules that
//! declare one lost.
//!
//! Sequence numbers are sent in order and the path (socket, server, echo peer) is FIFO
//! per flow, so a packet is lost when (1) a reply to a packet sent
//! [`REORDER_TOLERANCE`] or more after it arrives first, (2) it is older than the loss
//! timeout, or (3) the ring needs its slot. A reply to a packet already declared lost
//! is ignored, so every packet ends exactly once: replied or lost.
//!
//! A packet outstanding past the shorter stall timeout is "stale": its reply still
//! counts, but it no longer holds a place in a flood window, so a flow whose whole
//! window was dropped resumes sending without waiting for the loss timeout.

/// How far replies may overtake each other before the older packet counts as lost.
pub const REORDER_TOLERANCE: u32 = 64;

pub struct Ring {
    /// Send time (ns on the run's clock, never 0) of each outstanding packet, 0 if none.
    sent: Box<[u64]>,
    mask: u32,
    /// The next sequence number to send.
    next: u32,
    /// Every outstanding packet has a sequence number in `oldest..next`.
    oldest: u32,
    /// Outstanding packets in `oldest..fresh` are stale; `oldest <= fresh <= next`.
    fresh: u32,
    live: u32,
    stale: u32,
}

impl Ring {
    /// A ring of `size` slots (rounded up to a power of two).
    pub fn new(size: usize) -> Self {
        let size = size.next_power_of_two().max(2);
        Self {
            sent: vec![0; size].into_boxed_slice(),
            mask: size as u32 - 1,
            next: 0,
            oldest: 0,
            fresh: 0,
            live: 0,
            stale: 0,
        }
    }

    /// Packets sent and neither replied to nor lost.
    pub fn live(&self) -> u32 {
        self.live
    }

    /// Outstanding packets that still hold a place in a flood window.
    pub fn window(&self) -> u32 {
        self.live - self.stale
    }

    fn is_stale(&self, seq: u32) -> bool {
        seq.wrapping_sub(self.oldest) < self.fresh.wrapping_sub(self.oldest)
    }

    /// The sequence number the packet `k` places after the next one will carry.
    pub fn seq_after(&self, k: u32) -> u32 {
        self.next.wrapping_add(k)
    }

    /// Records that the next packet was sent at `ts`; a packet pushed out of a full ring
    /// is reported to `lost` with its send time.
    pub fn push(&mut self, ts: u64, lost: &mut impl FnMut(u64)) {
        if self.next.wrapping_sub(self.oldest) > self.mask {
            self.lose_oldest(lost);
        }
        self.sent[(self.next & self.mask) as usize] = ts.max(1);
        self.next = self.next.wrapping_add(1);
        self.live += 1;
    }

    /// A reply to packet `seq` sent at `ts`: its send time if it was outstanding (and
    /// then it no longer is), `None` for a duplicate, a late reply or garbage.
    pub fn reply(&mut self, seq: u32, ts: u64, lost: &mut impl FnMut(u64)) -> Option<u64> {
        if seq.wrapping_sub(self.oldest) >= self.next.wrapping_sub(self.oldest) {
            return None;
        }
        let slot = &mut self.sent[(seq & self.mask) as usize];
        if *slot == 0 || *slot != ts.max(1) {
            return None;
        }
        let sent = *slot;
        *slot = 0;
        self.live -= 1;
        if self.is_stale(seq) {
            self.stale -= 1;
        }
        // Skipping resolved slots may carry `oldest` past `seq`: stop there too.
        while self.oldest != self.next {
            let behind = seq.wrapping_sub(self.oldest);
            if behind <= REORDER_TOLERANCE || behind >= self.next.wrapping_sub(self.oldest) {
                break;
            }
            self.lose_oldest(lost);
        }
        self.skip_resolved();
        Some(sent)
    }

    /// Declares lost every outstanding packet sent before `cutoff`.
    pub fn expire(&mut self, cutoff: u64, lost: &mut impl FnMut(u64)) {
        self.skip_resolved();
        while self.oldest != self.next && self.sent[(self.oldest & self.mask) as usize] < cutoff {
            self.lose_oldest(lost);
        }
    }

    /// Makes every outstanding packet sent before `cutoff` stale.
    pub fn mark_stale(&mut self, cutoff: u64) {
        while self.fresh != self.next {
            let ts = self.sent[(self.fresh & self.mask) as usize];
            if ts >= cutoff {
                break;
            }
            self.stale += u32::from(ts != 0);
            self.fresh = self.fresh.wrapping_add(1);
        }
    }

    fn lose_oldest(&mut self, lost: &mut impl FnMut(u64)) {
        let stale = self.is_stale(self.oldest);
        let slot = &mut self.sent[(self.oldest & self.mask) as usize];
        if *slot != 0 {
            lost(*slot);
            *slot = 0;
            self.live -= 1;
            self.stale -= u32::from(stale);
        }
        self.advance_oldest();
        self.skip_resolved();
    }

    fn skip_resolved(&mut self) {
        while self.oldest != self.next && self.sent[(self.oldest & self.mask) as usize] == 0 {
            self.advance_oldest();
        }
    }

    fn advance_oldest(&mut self) {
        if self.fresh == self.oldest {
            self.fresh = self.fresh.wrapping_add(1);
        }
        self.oldest = self.oldest.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_packet_ends_once() {
        let mut r = Ring::new(256);
        let mut lost = Vec::new();
        let mut l = |t| lost.push(t);
        for ts in 1..=100 {
            r.push(ts, &mut l);
        }
        assert_eq!(r.live(), 100);
        // Packet 0 never comes back: the reply to packet 70 declares it lost.
        for seq in 1..=70 {
            assert_eq!(r.reply(seq, seq as u64 + 1, &mut l), Some(seq as u64 + 1));
        }
        assert_eq!(r.reply(5, 6, &mut l), None, "duplicate");
        assert_eq!(r.reply(0, 1, &mut l), None, "already lost");
        assert_eq!(r.reply(200, 201, &mut l), None, "never sent");
        assert_eq!(r.reply(80, 999, &mut l), None, "wrong timestamp");
        r.expire(90, &mut l);
        assert_eq!(r.live(), 100 - 71 - 18);
        r.expire(u64::MAX, &mut l);
        assert_eq!(r.live(), 0);
        assert_eq!(lost.len(), 1 + 29);
        assert_eq!(lost[0], 1);
    }

    #[test]
    fn a_full_ring_pushes_out_its_oldest_packet() {
        let mut r = Ring::new(4);
        let mut lost = Vec::new();
        for ts in 1..=6 {
            r.push(ts, &mut |t| lost.push(t));
        }
        assert_eq!(lost, [1, 2]);
        assert_eq!(r.live(), 4);
    }

    #[test]
    fn stale_packets_leave_the_window_but_still_count() {
        let mut r = Ring::new(256);
        let mut lost = 0;
        let mut l = |_| lost += 1;
        for ts in 1..=16 {
            r.push(ts, &mut l);
        }
        r.mark_stale(11);
        assert_eq!((r.live(), r.window()), (16, 6));
        assert_eq!(r.reply(3, 4, &mut l), Some(4), "a stale reply still counts");
        assert_eq!((r.live(), r.window()), (15, 6));
        assert_eq!(r.reply(0, 1, &mut l), Some(1));
        assert_eq!(r.reply(12, 13, &mut l), Some(13));
        assert_eq!((r.live(), r.window()), (13, 5));
        r.expire(6, &mut l);
        assert_eq!((r.live(), r.window()), (10, 5));
        r.mark_stale(u64::MAX);
        assert_eq!((r.live(), r.window()), (10, 0));
        r.expire(u64::MAX, &mut l);
        assert_eq!((r.live(), r.window()), (0, 0));
        assert_eq!(lost, 13);
    }
}
