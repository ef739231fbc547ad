//! Adaptive busy polling: when the loop may skip sleeping, decided from the datagrams
//! each turn relayed and the clock, with no I/O (the loop does the polling).
//!
//! A turn that relayed at least [`BUSY_TURN`] UDP datagrams opens a polling window of
//! `busy-poll-us`: until it closes the loop polls without sleeping, so under load the
//! next datagrams are taken without a wake-up (an interrupt, a context switch, and in a
//! virtual machine an exit from idle). Each busy turn inside the window extends it.
//!
//! Polling costs the CPU all the time it spins, a wake-up a few microseconds: polling
//! is worth it only if datagrams keep coming while it goes on, at least one per
//! [`CATCH_EVERY`] on average, judged over each window's length of polling (so busy
//! turns extending a window cannot keep a slower trickle polling, and a flood's
//! datagrams are no credit for later). A stretch that caught fewer polled in vain: it
//! ends the window, and the next may open only after a rest that doubles with each
//! such stretch in a row (from two windows' length up to [`MAX_REST_SHIFT`] doublings,
//! 51 ms at 50 us); a stretch that catches its share ends the series. A flood keeps
//! polling; media at tens of packets a second per call, whose datagrams come a few per
//! turn with tens of microseconds between them, stops within a few windows.

use std::time::{Duration, Instant};

/// A turn that relayed at least this many datagrams opens (or extends) a window. While
/// turns relay a datagram or two, the loop sleeps at once.
pub const BUSY_TURN: usize = 4;
/// An open window must catch a datagram per this much time on average (200,000 a
/// second) to have been worth polling.
const CATCH_EVERY: Duration = Duration::from_micros(5);
/// The longest rest after windows that caught too little: `window << MAX_REST_SHIFT`.
const MAX_REST_SHIFT: u32 = 10;

#[derive(Debug)]
pub struct BusyPoll {
    window: Duration,
    /// The open window: when it opened and when it closes.
    open: Option<(Instant, Instant)>,
    /// Datagrams relayed in turns while the window was open.
    caught: usize,
    /// Windows in a row that caught too little.
    misses: u32,
    /// No window opens before this.
    rest_until: Option<Instant>,
}

impl BusyPoll {
    /// `window` zero: never polls.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            open: None,
            caught: 0,
            misses: 0,
            rest_until: None,
        }
    }

    /// Whether the loop should poll without sleeping now; closes a window that has run
    /// out. The clock is read only while a window is open.
    pub fn polling(&mut self, now: impl FnOnce() -> Instant) -> bool {
        let Some((opened, until)) = self.open else {
            return false;
        };
        let now = now();
        if now < until {
            return true;
        }
        self.judge(now, opened);
        self.open = None;
        false
    }

    /// After a turn at `now` that relayed `relayed` UDP datagrams.
    pub fn after_turn(&mut self, now: Instant, relayed: usize) {
        if self.window.is_zero() {
            return;
        }
        let busy = relayed >= BUSY_TURN;
        if let Some((mut opened, mut until)) = self.open {
            self.caught = self.caught.saturating_add(relayed);
            // Each window's length of polling is judged on its own, so busy turns that
            // keep extending a window cannot keep it open at a rate below its cost.
            if now.saturating_duration_since(opened) >= self.window {
                if !self.judge(now, opened) {
                    self.open = None;
                    return;
                }
                opened = now;
            }
            if busy {
                until = now + self.window;
            }
            self.open = Some((opened, until));
        } else if busy && self.rest_until.is_none_or(|t| now >= t) {
            self.open = Some((now, now + self.window));
            self.caught = 0;
            self.rest_until = None;
        }
    }

    /// Judges the polling from `opened` (the window's start or its last judgement) to
    /// `now`: whether it caught a datagram per [`CATCH_EVERY`]. If so the count starts
    /// afresh; if not, a rest starts, one doubling longer than the last. The caller
    /// moves or closes the window.
    fn judge(&mut self, now: Instant, opened: Instant) -> bool {
        let caught = u32::try_from(self.caught).unwrap_or(u32::MAX);
        let worth = CATCH_EVERY
            .checked_mul(caught)
            .is_none_or(|d| d >= now.saturating_duration_since(opened));
        if worth {
            self.misses = 0;
            self.caught = 0;
        } else {
            self.misses = (self.misses + 1).min(MAX_REST_SHIFT);
            self.rest_until = Some(now + self.window * (1 << self.misses));
        }
        worth
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    /// Runs turns at `start + at[i]` us relaying `relayed[i]` datagrams, asking before
    /// each whether to poll, as the loop does; returns after how many turns a window
    /// was open.
    fn drive(b: &mut BusyPoll, start: Instant, turns: &[(u64, usize)]) -> usize {
        let mut open = 0;
        for &(at, relayed) in turns {
            let now = start + Duration::from_micros(at);
            b.polling(|| now);
            b.after_turn(now, relayed);
            open += usize::from(b.open.is_some());
        }
        open
    }

    #[test]
    fn a_zero_window_never_polls() {
        let mut b = BusyPoll::new(Duration::ZERO);
        let t = Instant::now();
        assert_eq!(drive(&mut b, t, &[(0, 64), (1, 64), (2, 64)]), 0);
    }

    #[test]
    fn a_flood_keeps_polling() {
        let mut b = BusyPoll::new(50 * US);
        let t = Instant::now();
        // A busy turn every 10 us: each extends the window.
        let turns: Vec<_> = (0..1000).map(|i| (i * 10, 8)).collect();
        assert_eq!(drive(&mut b, t, &turns), 1000);
        // The flood's datagrams buy nothing later: four more in the next 100 us are
        // too few, and the next busy turn finds polling resting.
        let turns = [
            (10_000, 8),
            (10_010, 2),
            (10_020, 2),
            (10_100, 0),
            (10_101, 8),
        ];
        assert_eq!(drive(&mut b, t, &turns), 3);
        assert!(!b.polling(|| t + Duration::from_micros(10_102)));
        assert_eq!(b.misses, 1);
    }

    #[test]
    fn busy_turns_too_far_apart_cannot_hold_a_window_open() {
        let mut b = BusyPoll::new(50 * US);
        let t = Instant::now();
        // 4 datagrams every 40 us (100,000 a second): each turn is busy and would
        // extend the window, but it catches one datagram per 10 us.
        let turns: Vec<_> = (0..5_000).map(|i| (i * 40, 4)).collect();
        let open = drive(&mut b, t, &turns);
        assert!(open < 40, "{open} of 5000 turns polled");
        assert_eq!(b.misses, MAX_REST_SHIFT);
    }

    #[test]
    fn datagrams_caught_too_slowly_back_off() {
        let mut b = BusyPoll::new(50 * US);
        let t = Instant::now();
        // Media-like clumps: 5 datagrams, then the 4 replies 20 and 30 us later (caught
        // by the window, but 15 us apart on average), every 250 us.
        let mut turns = Vec::new();
        for i in 0..400u64 {
            let at = i * 250;
            turns.extend([(at, 5), (at + 20, 2), (at + 30, 2), (at + 60, 0)]);
        }
        let opened = drive(&mut b, t, &turns);
        // Each window stays open for 3 turns; about ten windows open, not 400.
        assert!((24..=36).contains(&opened), "{opened}");
        assert_eq!(b.misses, MAX_REST_SHIFT);
    }

    #[test]
    fn sparse_busy_turns_back_off_then_a_flood_resets() {
        let mut b = BusyPoll::new(50 * US);
        let t = Instant::now();
        // Media-like: 5 datagrams every 250 us, nothing between.
        let mut turns = Vec::new();
        for i in 0..400u64 {
            turns.push((i * 250, 5));
            turns.push((i * 250 + 60, 0));
        }
        // Without the rests every busy turn would open a window (400 of them); with
        // them, ten, as the rest doubles up to 51.2 ms.
        let opened = drive(&mut b, t, &turns);
        assert!((8..=12).contains(&opened), "{opened}");
        assert_eq!(b.misses, MAX_REST_SHIFT);
        // The longest rest is 51.2 ms; a flood after it polls again.
        let start = 400 * 250 + 52_000;
        let flood: Vec<_> = (0..100).map(|i| (start + i * 10, 8)).collect();
        assert_eq!(drive(&mut b, t, &flood), 100);
        // When it ends, its window closes as worth it: the series of misses is over.
        assert!(!b.polling(|| t + Duration::from_micros(start + 1_100)));
        assert_eq!(b.misses, 0);
    }
}
