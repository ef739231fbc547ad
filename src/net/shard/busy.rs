//! Adaptive busy polling: when the loop may skip sleeping, decided from the datagrams
//! each turn relayed and the clock, with no I/O (the loop does the polling).
//!
//! A turn that relayed at least [`BUSY_TURN`] UDP datagrams opens a polling window of
//! `busy-poll-us`: until it closes the loop polls without sleeping, so under load the
//! next datagrams are taken without a wake-up (an interrupt, a context switch, and in a
//! virtual machine an exit from idle). Each busy turn inside the window extends it.
//!
//! Polling saves a wake-up only where a poll that found nothing is followed by one that
//! finds datagrams: datagrams already waiting when a turn ends would be taken by the
//! next poll anyway, sleeping or not. It costs the time spent in polls that found
//! nothing. So each window's length of polling is judged on its own: it was worth it if
//! it spent at most [`WAKE_UP`] polling in vain per wake-up saved (busy turns extending
//! a window cannot keep a slower trickle polling, and a flood is no credit for later).
//! A stretch that spent more ends the window, and the next may open only after a rest
//! that doubles with each such stretch in a row (from two windows' length up to
//! [`MAX_REST_SHIFT`] doublings, 51 ms at 50 us); a stretch worth it ends the series. A
//! flood keeps polling; media at tens of packets a second per call, whose datagrams
//! come in clumps (a few clients' packets and, straight after, their peers' replies)
//! with hundreds of microseconds between clumps, stops within a few windows.

use std::time::{Duration, Instant};

/// A turn that relayed at least this many datagrams opens (or extends) a window. While
/// turns relay a datagram or two, the loop sleeps at once.
pub const BUSY_TURN: usize = 4;
/// Polling in vain worth one wake-up saved: about what sleeping and being woken (two
/// context switches) cost the thread. Measured at paced load, polling that saved
/// wake-ups at about 17 us each cost more CPU than it saved, and no latency.
const WAKE_UP: Duration = Duration::from_micros(3);
/// The longest rest after windows that were not worth it: `window << MAX_REST_SHIFT`.
const MAX_REST_SHIFT: u32 = 10;

#[derive(Debug)]
pub struct BusyPoll {
    window: Duration,
    /// The open window: when it opened (or was last judged) and when it closes.
    open: Option<(Instant, Instant)>,
    /// When the last turn ended, while a window is open.
    last: Instant,
    /// Whether the last turn in the window relayed nothing.
    after_empty: bool,
    /// Time spent in turns that relayed nothing, since the window opened or was judged.
    idle: Duration,
    /// Turns that relayed datagrams right after one that relayed none, since then.
    saved: u32,
    /// Windows in a row that were not worth it.
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
            last: Instant::now(),
            after_empty: false,
            idle: Duration::ZERO,
            saved: 0,
            misses: 0,
            rest_until: None,
        }
    }

    /// Whether the loop should poll without sleeping now; closes a window that has run
    /// out. The clock is read only while a window is open.
    pub fn polling(&mut self, now: impl FnOnce() -> Instant) -> bool {
        let Some((_, until)) = self.open else {
            return false;
        };
        let now = now();
        if now < until {
            return true;
        }
        self.judge(now);
        self.open = None;
        false
    }

    /// After a turn ending at `now` that relayed `relayed` UDP datagrams.
    pub fn after_turn(&mut self, now: Instant, relayed: usize) {
        if self.window.is_zero() {
            return;
        }
        let busy = relayed >= BUSY_TURN;
        if let Some((mut opened, mut until)) = self.open {
            let took = now.saturating_duration_since(self.last);
            self.last = now;
            if relayed == 0 {
                self.idle = self.idle.saturating_add(took);
                self.after_empty = true;
            } else {
                self.saved = self.saved.saturating_add(u32::from(self.after_empty));
                self.after_empty = false;
            }
            // Each window's length of polling is judged on its own, so busy turns that
            // keep extending a window cannot keep it open at a rate below its cost.
            if now.saturating_duration_since(opened) >= self.window {
                if !self.judge(now) {
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
            self.last = now;
            self.after_empty = false;
            self.idle = Duration::ZERO;
            self.saved = 0;
            self.rest_until = None;
        }
    }

    /// Judges the polling since the window opened or was last judged: whether it spent
    /// at most [`WAKE_UP`] in vain per wake-up it saved. If so the count starts afresh;
    /// if not, a rest starts at `now`, one doubling longer than the last. The caller
    /// moves or closes the window.
    fn judge(&mut self, now: Instant) -> bool {
        if self.idle.is_zero() {
            // Turns back to back (a flood, or one long turn): no poll was in vain, and
            // none saved a wake-up. No verdict either way.
            return true;
        }
        let worth = WAKE_UP
            .checked_mul(self.saved)
            .is_none_or(|d| d >= self.idle);
        if worth {
            self.misses = 0;
        } else {
            self.misses = (self.misses + 1).min(MAX_REST_SHIFT);
            self.rest_until = Some(now + self.window * (1 << self.misses));
        }
        self.idle = Duration::ZERO;
        self.saved = 0;
        worth
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    /// Runs the turns `(at us, relayed)` from `start` as the loop does: it asks before
    /// each whether to poll, and while a window is open it polls every microsecond in
    /// between, finding nothing. Returns how many of the given turns ended with a
    /// window open.
    fn drive(b: &mut BusyPoll, start: Instant, turns: &[(u64, usize)]) -> usize {
        let at = |us: u64| start + Duration::from_micros(us);
        let mut open = 0;
        let mut clock = turns.first().map_or(0, |t| t.0);
        for &(due, relayed) in turns {
            while clock + 1 < due && b.polling(|| at(clock + 1)) {
                clock += 1;
                b.after_turn(at(clock), 0);
            }
            clock = due;
            b.polling(|| at(due));
            b.after_turn(at(due), relayed);
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
        // A busy turn every 3 us, polling in vain 2 us between: each saves a wake-up.
        let turns: Vec<_> = (0..1000).map(|i| (i * 3, 8)).collect();
        assert_eq!(drive(&mut b, t, &turns), 1000);
        // Turns back to back, none in vain, save nothing and cost nothing.
        let turns: Vec<_> = (0..1000).map(|i| (3_000 + i, 4)).collect();
        assert_eq!(drive(&mut b, t, &turns), 1000);
        assert_eq!(b.misses, 0);
        // The flood buys nothing later: two catches in the next 50 us of polling are
        // too few, and the next busy turn finds polling resting.
        let turns = [(4_000, 8), (4_010, 2), (4_020, 2), (4_100, 0), (4_101, 8)];
        assert_eq!(drive(&mut b, t, &turns), 3);
        assert!(!b.polling(|| t + Duration::from_micros(4_102)));
        assert_eq!(b.misses, 1);
    }

    #[test]
    fn replies_waiting_after_a_turn_save_nothing() {
        let mut b = BusyPoll::new(50 * US);
        let t = Instant::now();
        // Media-like: 10 clients' datagrams, their peers' replies waiting for the very
        // next poll (a wake-up would not have slept), then nothing for 500 us.
        let mut turns = Vec::new();
        for i in 0..400u64 {
            turns.extend([(i * 500, 10), (i * 500 + 1, 10), (i * 500 + 200, 0)]);
        }
        let opened = drive(&mut b, t, &turns);
        // About ten windows open, not 400, as the rest doubles up to 51.2 ms.
        assert!((16..=24).contains(&opened), "{opened}");
        assert_eq!(b.misses, MAX_REST_SHIFT);
    }

    #[test]
    fn busy_turns_too_far_apart_cannot_hold_a_window_open() {
        let mut b = BusyPoll::new(50 * US);
        let t = Instant::now();
        // 4 datagrams every 40 us (100,000 a second): each turn is busy and would
        // extend the window, but it polls 39 us in vain for each.
        let turns: Vec<_> = (0..5_000).map(|i| (i * 40, 4)).collect();
        let open = drive(&mut b, t, &turns);
        assert!(open < 40, "{open} of 5000 turns polled");
        assert_eq!(b.misses, MAX_REST_SHIFT);
    }

    #[test]
    fn datagrams_caught_too_slowly_back_off() {
        let mut b = BusyPoll::new(50 * US);
        let t = Instant::now();
        // Media-like clumps: 5 datagrams, then replies 20 and 30 us later (each caught
        // after polling in vain for 10 us or more), every 250 us.
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
        let flood: Vec<_> = (0..100).map(|i| (start + i * 3, 8)).collect();
        assert_eq!(drive(&mut b, t, &flood), 100);
        // When it ends, its window closes as worth it: the series of misses is over.
        assert!(!b.polling(|| t + Duration::from_micros(start + 1_100)));
        assert_eq!(b.misses, 0);
    }

    #[test]
    fn a_window_run_out_in_one_long_turn_gives_no_verdict() {
        let mut b = BusyPoll::new(50 * US);
        let t = Instant::now();
        let at = |us: u64| t + Duration::from_micros(us);
        // Two windows in vain: the rest is 4 windows' length.
        drive(&mut b, t, &[(0, 8), (100, 0), (200, 8), (300, 0)]);
        assert_eq!(b.misses, 2);
        // A busy turn opens a window, and the next turn ends only after it ran out:
        // no poll was in vain and none saved anything.
        b.after_turn(at(500), 8);
        assert!(b.open.is_some());
        b.after_turn(at(560), 8);
        assert!(b.open.is_some(), "judged worth it as far as it went");
        assert!(!b.polling(|| at(700)));
        // The series of misses goes on: the next window in vain rests 8 windows.
        assert_eq!(b.misses, 2);
        drive(&mut b, t, &[(800, 8), (900, 0)]);
        assert_eq!((b.misses, b.rest_until), (3, Some(at(850) + 8 * 50 * US)));
    }
}
