//! Adaptive busy polling: when the loop may skip sleeping, decided from what each
//! turn's poll found, the datagrams it relayed and the clock, with no I/O (the loop
//! does the polling).
//!
//! A turn that relayed at least [`BUSY_TURN`] UDP datagrams opens a polling window of
//! `busy-poll-us`: until it closes the loop polls without sleeping, so under load the
//! next datagrams are taken without a wake-up (an interrupt, a context switch, and in a
//! virtual machine an exit from idle). Each busy turn inside the window extends it.
//!
//! Polling saves a wake-up only where a poll that found nothing is followed by one that
//! finds datagrams to relay: what is already waiting when a turn ends, the next poll
//! takes anyway, sleeping or not. It costs the turns whose poll found nothing (the
//! loop's whole round, timed from the end of one turn to the end of the next). So each
//! window's length of polling is judged on its own: it was worth it if it spent at most
//! [`WAKE_UP`] in such turns per wake-up saved (busy turns extending a window cannot
//! keep a slower trickle polling, and a flood is no credit for later). A stretch that
//! spent more ends the window, and the next may open only after a rest that doubles
//! with each such stretch in a row (from two windows' length up to [`MAX_REST_SHIFT`]
//! doublings, 51 ms at 50 us); a stretch worth it ends the series. A stretch with no
//! poll in vain (a flood that keeps the thread busy, or one turn longer than the
//! window) gives no verdict: it neither needs polling nor clears the series. A window's tail, polled in
//! vain after its last busy turn, is usually a miss, so the rests grow over a run of
//! short bursts. A flood with gaps keeps polling; media at tens of packets a second
//! per call, whose datagrams come in clumps (a few clients' packets and, straight
//! after, their peers' replies) with hundreds of microseconds between clumps, stops
//! within a few windows.

use std::time::{Duration, Instant};

/// A turn that relayed at least this many datagrams opens (or extends) a window. While
/// turns relay fewer, the loop sleeps at once.
pub const BUSY_TURN: usize = 4;
/// Polling in vain worth one wake-up saved. Chosen, not derived: about what sleeping
/// and being woken cost the thread in CPU (the exit from idle a virtual machine adds
/// is latency, not the thread's CPU). The datagram-count rule before it, which polled
/// on at paced load, cost a tenth more CPU per round trip there and bought no latency
/// (BENCHMARKS.md, fourth pass).
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
    /// Whether the last turn in the window found nothing.
    after_empty: bool,
    /// Time spent in turns that found nothing, since the window opened or was judged.
    idle: Duration,
    /// Turns that relayed datagrams right after one that found nothing, since then.
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

    /// After a turn ending `now`: whether its poll `found` anything (events or sockets
    /// left over from the last turn), and how many UDP datagrams it `relayed`. The
    /// clock is read only while a window is open or after a busy turn.
    pub fn after_turn(&mut self, now: impl FnOnce() -> Instant, found: bool, relayed: usize) {
        if self.window.is_zero() {
            return;
        }
        let busy = relayed >= BUSY_TURN;
        if let Some((mut opened, mut until)) = self.open {
            let now = now();
            // The loop's round since the last turn ended: its poll and what it did.
            let took = now.saturating_duration_since(self.last);
            self.last = now;
            if !found {
                self.idle = self.idle.saturating_add(took);
                self.after_empty = true;
            } else {
                let saved = self.after_empty && relayed > 0;
                self.saved = self.saved.saturating_add(u32::from(saved));
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
        } else if busy {
            let now = now();
            if self.rest_until.is_some_and(|t| now < t) {
                return;
            }
            self.open = Some((now, now + self.window));
            self.last = now;
            self.after_empty = false;
            self.idle = Duration::ZERO;
            self.saved = 0;
            self.rest_until = None;
        }
    }

    /// Judges the polling since the window opened or was last judged: whether it spent
    /// at most [`WAKE_UP`] in vain per wake-up it saved. If so the series of misses
    /// ends; if not, a rest starts at `now`, one doubling longer than the last. Where
    /// no poll was in vain there is no verdict. The count starts afresh either way; the
    /// caller moves or closes the window.
    fn judge(&mut self, now: Instant) -> bool {
        if self.idle.is_zero() {
            // Turns back to back (a flood, or one long turn): no poll was in vain, and
            // none saved a wake-up. No verdict either way.
            self.saved = 0;
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
    /// between and after the last turn until the window closes, finding nothing. A
    /// listed turn found something if it relayed something. Returns how many of the
    /// listed turns ended with a window open.
    fn drive(b: &mut BusyPoll, start: Instant, turns: &[(u64, usize)]) -> usize {
        let at = |us: u64| start + Duration::from_micros(us);
        let mut open = 0;
        let mut clock = turns.first().map_or(0, |t| t.0);
        let spin = |b: &mut BusyPoll, clock: &mut u64, until: u64| {
            while *clock + 1 < until && b.polling(|| at(*clock + 1)) {
                *clock += 1;
                let now = at(*clock);
                b.after_turn(|| now, false, 0);
            }
        };
        for &(due, relayed) in turns {
            spin(b, &mut clock, due);
            clock = due;
            b.polling(|| at(due));
            b.after_turn(|| at(due), relayed > 0, relayed);
            open += usize::from(b.open.is_some());
        }
        spin(b, &mut clock, u64::MAX);
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
        // Only the window's tail, polled in vain after the last turn, was a miss.
        assert_eq!((b.open, b.misses), (None, 1));
        // Turns back to back poll nothing in vain and save nothing: no verdict, and
        // the window stays open throughout. Its tail is the next miss.
        let turns: Vec<_> = (0..1000).map(|i| (4_000 + i, 4)).collect();
        assert_eq!(drive(&mut b, t, &turns), 1000);
        assert_eq!(b.misses, 2);
        // Two catches in 50 us of polling are too few, and the next busy turn finds
        // polling resting.
        let turns = [(6_000, 8), (6_010, 2), (6_020, 2), (6_100, 0), (6_101, 8)];
        assert_eq!(drive(&mut b, t, &turns), 3);
        assert_eq!((b.open, b.misses), (None, 3));
    }

    #[test]
    fn replies_waiting_after_a_turn_save_nothing() {
        let mut b = BusyPoll::new(50 * US);
        let t = Instant::now();
        let at = |us: u64| t + Duration::from_micros(us);
        // Replies waiting for the very next poll: a wake-up would not have slept.
        b.after_turn(|| at(0), true, 10);
        b.after_turn(|| at(1), true, 10);
        assert_eq!(b.saved, 0);
        // Replies found after a poll that found nothing: one wake-up saved.
        b.after_turn(|| at(2), false, 0);
        b.after_turn(|| at(3), true, 10);
        assert_eq!(b.saved, 1);
        // Media-like: 10 clients' datagrams, their peers' replies at the next poll,
        // then nothing for 500 us. About a dozen windows open (two turns each), not
        // 400, as the rest doubles up to 51.2 ms.
        let mut b = BusyPoll::new(50 * US);
        let mut turns = Vec::new();
        for i in 0..400u64 {
            turns.extend([(i * 500, 10), (i * 500 + 1, 10), (i * 500 + 200, 0)]);
        }
        let opened = drive(&mut b, t, &turns);
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
        // after 9 us or more of polling in vain), every 250 us.
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
        // The longest rest is 51.2 ms; a flood after it polls again. Its stretches are
        // worth it and end the series: only its tail, polled in vain, is a miss.
        let start = 400 * 250 + 52_000;
        let flood: Vec<_> = (0..100).map(|i| (start + i * 3, 8)).collect();
        assert_eq!(drive(&mut b, t, &flood), 100);
        assert_eq!(b.misses, 1);
    }

    #[test]
    fn a_window_run_out_in_one_long_turn_gives_no_verdict() {
        let mut b = BusyPoll::new(50 * US);
        let t = Instant::now();
        let at = |us: u64| t + Duration::from_micros(us);
        // Two windows in vain: the rest is 4 windows' length.
        drive(&mut b, t, &[(0, 8), (100, 0), (200, 8)]);
        assert_eq!(b.misses, 2);
        // A busy turn opens a window, and the next turn ends only after it ran out:
        // no poll was in vain and none saved anything.
        b.after_turn(|| at(500), true, 8);
        assert!(b.open.is_some());
        b.after_turn(|| at(560), true, 8);
        assert!(b.open.is_some(), "a window with no verdict stays open");
        assert_eq!((b.misses, b.saved, b.idle), (2, 0, Duration::ZERO));
        // Polled in vain after it, the window is the series' third miss, and the rest
        // doubles to 8 windows.
        drive(&mut b, t, &[(561, 0)]);
        assert_eq!((b.misses, b.rest_until), (3, Some(at(610) + 8 * 50 * US)));
    }

    #[test]
    fn only_polls_that_found_nothing_are_in_vain() {
        let mut b = BusyPoll::new(50 * US);
        let t = Instant::now();
        let at = |us: u64| t + Duration::from_micros(us);
        b.after_turn(|| at(0), true, 8);
        // A turn busy with something else (a TCP connection, a request) found
        // something: not in vain, and the datagrams after it saved no wake-up.
        b.after_turn(|| at(20), true, 0);
        b.after_turn(|| at(21), true, 8);
        assert_eq!((b.idle, b.saved), (Duration::ZERO, 0));
        // After a poll that found nothing they did.
        b.after_turn(|| at(22), false, 0);
        b.after_turn(|| at(23), true, 8);
        assert_eq!((b.idle, b.saved), (US, 1));
        // Other work found after a poll in vain is no relaying saved.
        b.after_turn(|| at(24), false, 0);
        b.after_turn(|| at(25), true, 0);
        assert_eq!((b.idle, b.saved), (2 * US, 1));
    }

    #[test]
    fn a_stretch_with_no_verdict_carries_no_saves() {
        let mut b = BusyPoll::new(50 * US);
        let t = Instant::now();
        let at = |us: u64| t + Duration::from_micros(us);
        // A stretch worth it (2 us in vain, one save), judged at an empty poll.
        b.after_turn(|| at(0), true, 8);
        b.after_turn(|| at(1), false, 0);
        for us in 2..50 {
            b.after_turn(|| at(us), true, 8);
        }
        b.after_turn(|| at(50), false, 0);
        assert_eq!((b.misses, b.saved, b.idle), (0, 0, Duration::ZERO));
        // The next turn relays after that empty poll: a save, in the new stretch.
        b.after_turn(|| at(51), true, 8);
        assert_eq!(b.saved, 1);
        // Turns back to back to its end: no verdict, and the save is dropped.
        for us in 52..=101 {
            b.after_turn(|| at(us), true, 8);
        }
        assert_eq!((b.saved, b.idle), (0, Duration::ZERO));
        // So 4 us in vain for one save in the next stretch is a miss (with the
        // dropped save it would have been worth it).
        for us in [102, 103, 104, 105] {
            b.after_turn(|| at(us), false, 0);
        }
        for us in 106..=151 {
            b.after_turn(|| at(us), true, 8);
        }
        assert_eq!(b.misses, 1);
    }
}
