//! What the generator measures: the run's clock, the window counters, CPU samples at
//! the window's edges, and the once-a-second progress line.

use super::histogram::Histogram;
use crate::process;
use std::ops::Range;
use std::time::{Duration, Instant, SystemTime};

pub const SECOND_NS: u64 = 1_000_000_000;

/// One monotonic clock for send times, receive times and the schedule.
pub struct Clock(Instant);

impl Clock {
    pub fn new() -> Self {
        Self(Instant::now())
    }

    /// Nanoseconds since the clock started, never 0.
    pub fn now(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64 + 1
    }

    /// Reads this clock and the real-time clock together, to place kernel receive
    /// times (real time) on this clock: see [`Clock::arrival`]. A step of the real-time
    /// clock between the two readings misplaces them; [`Counters::reply`] leaves out
    /// those outside their round trip.
    pub fn pair(&self) -> (u64, Duration) {
        let now = self.now();
        let real = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        (now, real)
    }

    /// A real-time `stamp` on this clock, given a `pair` read about then (before or
    /// after it); `None` if that falls before this clock started.
    pub fn arrival(pair: (u64, Duration), stamp: Duration) -> Option<u64> {
        let (now, real) = pair;
        let at = i128::from(now) + stamp.as_nanos() as i128 - real.as_nanos() as i128;
        u64::try_from(at).ok()
    }
}

/// Packets are attributed to the window by send time (so `sent = received + lost` once
/// the run has drained); `window_replies` counts replies arriving inside the window.
pub struct Counters {
    pub window: Range<u64>,
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub window_replies: u64,
    pub rtt: Histogram,
    /// Round-trip times to the reply's arrival in this host's stack (its kernel receive
    /// time), leaving out how long the generator took to wake and read it (UDP only).
    pub rtt_arrival: Histogram,
    /// Arrival times that fell outside their round trip, left out of `rtt_arrival`.
    pub misplaced: u64,
    /// For progress: every reply and loss, window or not.
    all_replies: u64,
    all_lost: u64,
}

impl Counters {
    pub fn new() -> Self {
        Self {
            window: 0..0,
            sent: 0,
            received: 0,
            lost: 0,
            window_replies: 0,
            rtt: Histogram::new(),
            rtt_arrival: Histogram::new(),
            misplaced: 0,
            all_replies: 0,
            all_lost: 0,
        }
    }

    pub fn sent(&mut self, at: u64, n: u64) {
        if self.window.contains(&at) {
            self.sent += n;
        }
    }

    pub fn lost(&mut self, sent_at: u64) {
        self.all_lost += 1;
        self.lost += u64::from(self.window.contains(&sent_at));
    }

    /// A reply to a packet sent at `sent_at`, read at `now`; `arrived` is when the
    /// kernel received it, where known. One placed outside the round trip (the
    /// real-time clock stepped) is counted, not recorded.
    pub fn reply(&mut self, sent_at: u64, now: u64, arrived: Option<u64>) {
        self.all_replies += 1;
        self.window_replies += u64::from(self.window.contains(&now));
        if self.window.contains(&sent_at) {
            self.received += 1;
            self.rtt.record(now.saturating_sub(sent_at));
            match arrived {
                Some(at) if (sent_at..=now).contains(&at) => self.rtt_arrival.record(at - sent_at),
                Some(_) => self.misplaced += 1,
                None => {}
            }
        }
    }
}

/// Busy (steal excluded: the hypervisor ran something else) and softirq jiffies summed
/// over the CPUs this process may run on, from
/// /proc/stat: what the generator's cores did, including softirq work that may not be
/// charged to any process.
#[derive(Clone, Copy, Default)]
struct CoreTicks {
    total: u64,
    busy: u64,
    softirq: u64,
    /// Which CPUs were summed (bit n % 64 of word n / 64: CPU n, for the first 1024).
    cpus: [u64; 16],
}

impl CoreTicks {
    /// Every CPU of the machine: the server, the generator and the kernel's own work
    /// (softirq included), which a kernel fast path charges to no process. `stat` is
    /// the text of /proc/stat.
    fn machine(stat: &str) -> Option<Self> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let (total, busy, softirq) = line_ticks(line.split_whitespace().skip(1))?;
        Some(Self {
            total,
            busy,
            softirq,
            cpus: [u64::MAX; 16],
        })
    }

    /// The CPUs process `pid` may run on (0: this one), all their work counted: in the
    /// namespace bed (`compare.sh --netns`) the server's CPU does the server's receive
    /// work too, steered there by RPS, whichever process or none is charged for it.
    fn read(stat: &str, pid: u32) -> Option<Self> {
        // SAFETY: cpu_set_t is plain data, valid when zeroed; sched_getaffinity only
        // writes into the set passed, of the size given.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::cpu_set_t>();
        // SAFETY: as above.
        if unsafe { libc::sched_getaffinity(pid as libc::pid_t, size, &mut set) } != 0 {
            return None;
        }
        let mut t = Self::default();
        for line in stat.lines() {
            let mut f = line.split_whitespace();
            let Some(cpu) = f.next().and_then(|n| n.strip_prefix("cpu")) else {
                continue;
            };
            let Ok(cpu) = cpu.parse::<usize>() else {
                continue;
            };
            // SAFETY: CPU_ISSET only reads the set; out-of-range indices read false.
            if cpu >= 8 * size || !unsafe { libc::CPU_ISSET(cpu, &set) } {
                continue;
            }
            let Some((total, busy, softirq)) = line_ticks(f) else {
                continue;
            };
            t.total += total;
            t.busy += busy;
            t.softirq += softirq;
            if let Some(word) = t.cpus.get_mut(cpu / 64) {
                *word |= 1 << (cpu % 64);
            }
        }
        (t.total > 0).then_some(t)
    }
}

/// Total, busy (idle, iowait and steal left out) and softirq ticks of one /proc/stat
/// CPU line, from its fields after the name: user nice system idle iowait irq softirq
/// steal ...
fn line_ticks<'a>(fields: impl Iterator<Item = &'a str>) -> Option<(u64, u64, u64)> {
    let v: Vec<u64> = fields.take(8).filter_map(|x| x.parse().ok()).collect();
    let [user, nice, system, idle, iowait, irq, softirq, steal] = v[..] else {
        return None;
    };
    let total = user + nice + system + idle + iowait + irq + softirq + steal;
    Some((total, total - idle - iowait - steal, softirq))
}

/// CPU counters read at one edge of the window.
#[derive(Clone, Copy)]
pub struct Sample {
    at: u64,
    server_cpu: Option<f64>,
    own_cpu: f64,
    thread_cpu: f64,
    cores: Option<CoreTicks>,
    server_cores: Option<CoreTicks>,
    machine: Option<CoreTicks>,
}

impl Sample {
    /// Reads the counters; call it from the generator thread.
    pub fn take(at: u64, server_pid: Option<u32>) -> Self {
        // One reading of /proc/stat serves the three views of it.
        let stat = std::fs::read_to_string("/proc/stat").ok();
        let stat = stat.as_deref().unwrap_or_default();
        Self {
            at,
            server_cpu: server_pid.and_then(process::process_cpu_seconds),
            own_cpu: process::own_cpu_seconds(),
            thread_cpu: process::thread_cpu_seconds(),
            cores: CoreTicks::read(stat, 0),
            server_cores: server_pid
                .filter(|&p| p > 0)
                .and_then(|p| CoreTicks::read(stat, p)),
            machine: CoreTicks::machine(stat),
        }
    }
}

/// Everything measured over the window.
pub struct Outcome {
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub window_replies: u64,
    pub window_s: f64,
    pub rtt: Histogram,
    pub rtt_arrival: Histogram,
    /// Arrival times left out: outside their round trip.
    pub arrival_misplaced: u64,
    pub server_cpu_s: Option<f64>,
    /// This whole process (generator and echo peer) over the window.
    pub gen_cpu_s: f64,
    /// The generator thread alone.
    pub gen_thread_cpu_s: f64,
    /// Share of the window the generator's allowed CPUs were busy, and in softirq.
    pub gen_cores_busy: Option<(f64, f64)>,
    /// Busy seconds of every CPU over the window (USER_HZ ticks).
    pub machine_cpu_s: Option<f64>,
    /// Busy seconds of the server's allowed CPUs over the window, softirq included;
    /// `None` without a server pid, or where they are the generator's too.
    pub server_cores_cpu_s: Option<f64>,
    /// ICMP port unreachable seen on flow sockets.
    pub refused: u64,
    /// Times a paced flow fell more than 100 ms behind its schedule.
    pub slips: u64,
    /// TCP connections that closed or broke during the run.
    pub closed: u64,
    pub refreshes: u64,
    pub refresh_failures: u64,
}

impl Outcome {
    pub fn new(c: Counters, start: Sample, end: Sample) -> Self {
        let server_cpu_s = match (start.server_cpu, end.server_cpu) {
            (Some(a), Some(b)) => Some((b - a).max(0.0)),
            _ => None,
        };
        Self {
            sent: c.sent,
            received: c.received,
            lost: c.lost,
            window_replies: c.window_replies,
            window_s: end.at.saturating_sub(start.at) as f64 / 1e9,
            rtt: c.rtt,
            rtt_arrival: c.rtt_arrival,
            arrival_misplaced: c.misplaced,
            server_cpu_s,
            gen_cpu_s: (end.own_cpu - start.own_cpu).max(0.0),
            gen_thread_cpu_s: (end.thread_cpu - start.thread_cpu).max(0.0),
            gen_cores_busy: match (start.cores, end.cores) {
                (Some(a), Some(b)) if b.total > a.total => {
                    let total = (b.total - a.total) as f64;
                    Some((
                        b.busy.saturating_sub(a.busy) as f64 / total,
                        b.softirq.saturating_sub(a.softirq) as f64 / total,
                    ))
                }
                _ => None,
            },
            machine_cpu_s: match (start.machine, end.machine) {
                (Some(a), Some(b)) => Some(b.busy.saturating_sub(a.busy) as f64 / user_hz()),
                _ => None,
            },
            server_cores_cpu_s: match (start.server_cores, end.server_cores) {
                (Some(a), Some(b)) if !shared_cores(a, start.cores) => {
                    Some(b.busy.saturating_sub(a.busy) as f64 / user_hz())
                }
                _ => None,
            },
            refused: 0,
            slips: 0,
            closed: 0,
            refreshes: 0,
            refresh_failures: 0,
        }
    }
}

/// The progress line on stderr, once a second.
pub struct Progress {
    start: u64,
    next: u64,
    last_at: u64,
    last_replies: u64,
}

impl Progress {
    pub fn new(start: u64) -> Self {
        Self {
            start,
            next: start + SECOND_NS,
            last_at: start,
            last_replies: 0,
        }
    }

    pub fn next(&self) -> u64 {
        self.next
    }

    pub fn tick(&mut self, now: u64, c: &Counters) {
        if now < self.next {
            return;
        }
        let rate = (c.all_replies - self.last_replies) as f64 * 1e9 / (now - self.last_at) as f64;
        let phase = if now < c.window.start {
            "warmup"
        } else if now < c.window.end {
            "measuring"
        } else {
            "draining"
        };
        let avg = if now > c.window.start + SECOND_NS / 2 && c.window_replies > 0 {
            let t = now.min(c.window.end) - c.window.start;
            format!(
                " window_avg={:.0}",
                c.window_replies as f64 * 1e9 / t as f64
            )
        } else {
            String::new()
        };
        eprintln!(
            "relay: {:>4} s {phase:<9} rt/s={rate:.0}{avg} lost={}",
            (now - self.start) / SECOND_NS,
            c.all_lost
        );
        self.last_at = now;
        self.last_replies = c.all_replies;
        self.next += SECOND_NS;
        if self.next <= now {
            self.next = now + SECOND_NS;
        }
    }
}

/// Whether the server may run on one of the generator's CPUs: then their busy time is
/// not the server's alone.
fn shared_cores(server: CoreTicks, generator: Option<CoreTicks>) -> bool {
    generator.is_none_or(|g| g.cpus.iter().zip(server.cpus).any(|(a, b)| a & b != 0))
}

/// Clock ticks per second of /proc/stat.
fn user_hz() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_receive_times_land_on_the_run_clock() {
        let pair = (1_000_000, Duration::from_secs(1_700_000_000));
        // Stamped 300 us before the pair was read, or 20 us after it (a datagram that
        // arrived between the reading and the receive).
        let early = pair.1 - Duration::from_micros(300);
        let late = pair.1 + Duration::from_micros(20);
        assert_eq!(Clock::arrival(pair, early), Some(700_000));
        assert_eq!(Clock::arrival(pair, late), Some(1_020_000));
        // Before the run's clock started.
        assert_eq!(Clock::arrival(pair, pair.1 - Duration::from_secs(1)), None);
    }

    #[test]
    fn arrival_times_outside_their_round_trip_are_left_out() {
        let mut c = Counters::new();
        c.window = 0..u64::MAX;
        c.reply(1_000, 5_000, Some(3_000));
        c.reply(1_000, 5_000, Some(1_000));
        // Misplaced stamps (the real-time clock stepped): counted, not recorded.
        c.reply(1_000, 5_000, Some(9_000));
        c.reply(1_000, 5_000, Some(10));
        c.reply(1_000, 5_000, None);
        assert_eq!((c.received, c.misplaced), (5, 2));
        assert_eq!(c.rtt.quantile(1.0), Some(4_000));
        let h = &c.rtt_arrival;
        assert_eq!((h.quantile(0.0), h.max()), (Some(0), Some(2_000)));
        // Two recorded: the median is the first, the 0 ns one.
        assert_eq!(h.quantile(0.5), Some(0));
    }
}
