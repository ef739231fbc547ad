//! The data phase: one thread, every flow socket non-blocking in one mio poll, batched
//! sends and receives per socket (UDP or TCP, see [`Flows`]). Each payload starts with a
//! [`Probe`]; its reply is matched against the flow's [`Ring`] for the round-trip time.
//!
//! Time is one monotonic clock in ns. The run is `warmup` then the measured window;
//! packets are attributed to the window by their send time (`sent = received + lost`),
//! while round trips/s counts the replies that arrive inside the window. After the
//! window nothing more is sent and replies are awaited for at most the loss timeout.

use super::flows::{BATCH, Flows, Sockets};
use super::packet::{Framing, Incoming, Probe, Template, classify};
use super::refresh::Refresher;
use super::ring::{REORDER_TOLERANCE, Ring};
use super::stats::{Clock, Counters, Outcome, Progress, SECOND_NS, Sample};
use mio::{Events, Poll};
use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A packet not back within this long is lost.
pub const LOSS_TIMEOUT_NS: u64 = 1_000_000_000;
/// Flood: a packet outstanding for 8 smoothed RTTs, at least this long, stops holding a
/// place in its flow's window (see [`Ring`]), so a dropped window never stalls a flow.
const STALL_MIN_NS: u64 = 20_000_000;
const STALL_CHECK_NS: u64 = 5_000_000;
const HOUSEKEEPING_NS: u64 = 100_000_000;

#[derive(Clone, Copy, Debug)]
pub enum Load {
    /// Keep `inflight` packets outstanding per flow.
    Flood { inflight: u32 },
    /// `pps` packets per second per flow, in bursts of `burst` back-to-back packets
    /// every `burst / pps` seconds; flows evenly staggered.
    Paced { pps: u32, burst: u32 },
}

pub struct Plan {
    pub load: Load,
    pub framing: Framing,
    pub size: usize,
    pub warmup_ns: u64,
    pub duration_ns: u64,
    pub server_pid: Option<u32>,
    /// Send runs of equal datagrams as GSO trains.
    pub gso: bool,
    /// Have the kernel stamp replies as they arrive, for `rtt_arrival`.
    pub arrival_times: bool,
}

/// Per-flow generator state besides its socket.
struct FlowState {
    id: u32,
    channel: u16,
    ring: Ring,
    /// Paced: packets sent so far, and this flow's offset in the schedule.
    scheduled: u64,
    phase_ns: u64,
}

pub struct Generator {
    plan: Plan,
    io: Flows,
    flows: Vec<FlowState>,
    template: Template,
    /// Refresh requests to send once the current receive is done: (flow, message).
    control: Vec<(usize, Vec<u8>)>,
    /// TCP flows whose last drain stopped at its read limit.
    backlog: Vec<usize>,
    counters: Counters,
    clock: Clock,
    start: u64,
    refresher: Option<Refresher>,
    sending: bool,
    retry: bool,
    /// Smoothed RTT over every reply (EWMA, 1/32), for the stall timeout.
    srtt_ns: u64,
    refused: u64,
    slips: u64,
}

/// Ring slots per flow: room for the window plus reordering, or a second of a paced
/// flow, within about 64 MiB for all flows together.
fn ring_size(load: Load, flows: usize) -> usize {
    let floor = match load {
        Load::Flood { inflight } => 2 * (inflight + REORDER_TOLERANCE) as usize,
        Load::Paced { .. } => 2 * REORDER_TOLERANCE as usize,
    };
    let want = match load {
        Load::Flood { .. } => floor,
        Load::Paced { pps, .. } => floor.max(pps as usize),
    };
    let budget = (8usize << 20) / flows.max(1);
    want.min(budget).max(floor).next_power_of_two()
}

impl Generator {
    /// `channels[i]` is the channel of the flow on `sockets[i]`.
    pub fn new(
        plan: Plan,
        sockets: Sockets,
        channels: Vec<u16>,
        refresher: Option<Refresher>,
    ) -> Result<Self, String> {
        let template = Template::new(plan.framing, plan.size).ok_or("payload too large")?;
        let io = Flows::new(sockets, &template, plan.size + 256, plan.gso);
        let ring = ring_size(plan.load, channels.len());
        let step = match plan.load {
            Load::Paced { pps, burst } => {
                SECOND_NS * u64::from(burst) / u64::from(pps) / channels.len().max(1) as u64
            }
            Load::Flood { .. } => 0,
        };
        let states = channels
            .iter()
            .enumerate()
            .map(|(i, &channel)| FlowState {
                id: i as u32,
                channel,
                ring: Ring::new(ring),
                scheduled: 0,
                phase_ns: step * i as u64,
            })
            .collect();
        Ok(Self {
            plan,
            io,
            flows: states,
            template,
            control: Vec::new(),
            backlog: Vec::new(),
            counters: Counters::new(),
            clock: Clock::new(),
            start: 0,
            refresher,
            sending: true,
            retry: false,
            srtt_ns: 1_000_000,
            refused: 0,
            slips: 0,
        })
    }

    /// Sends up to `k` packets on flow `i` in batches; returns how many went out.
    fn fill(&mut self, i: usize, k: u64) -> Result<u64, String> {
        let mut total = 0;
        while total < k {
            let n = (k - total).min(BATCH as u64) as usize;
            let now = self.clock.now();
            let f = &mut self.flows[i];
            let (id, ring) = (f.id, &f.ring);
            let probe = |j: usize| Probe {
                flow: id,
                seq: ring.seq_after(j as u32),
                ts: now,
            };
            let m = match self.io.send(i, f.channel, n, &self.template, probe) {
                Ok(m) => m,
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    self.refused += 1;
                    0
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => 0,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => 0,
                Err(e) => return Err(format!("send on flow {i}: {e}")),
            };
            let c = &mut self.counters;
            for _ in 0..m {
                f.ring.push(now, &mut |t| c.lost(t));
            }
            c.sent(now, m as u64);
            total += m as u64;
            if m < n {
                // A closed TCP flow sends no more; anything else is tried again soon.
                self.retry |= self.io.is_open(i);
                break;
            }
        }
        Ok(total)
    }

    /// Flood: tops flow `i` up to its window.
    fn refill(&mut self, i: usize) -> Result<(), String> {
        if let (true, Load::Flood { inflight }) = (self.sending, self.plan.load) {
            let held = self.flows[i].ring.window();
            if held < inflight {
                self.fill(i, u64::from(inflight - held))?;
            }
        }
        Ok(())
    }

    /// Paced: sends what each flow's schedule says is due by `now`.
    fn paced(&mut self, now: u64) -> Result<(), String> {
        let Load::Paced { pps, burst } = self.plan.load else {
            return Ok(());
        };
        let burst = u64::from(burst);
        for i in 0..self.flows.len() {
            let f = &mut self.flows[i];
            let Some(t) = now.checked_sub(self.start + f.phase_ns) else {
                continue;
            };
            let bursts = (u128::from(t) * u128::from(pps) / u128::from(SECOND_NS)) as u64 / burst;
            let due = (bursts + 1) * burst;
            let mut behind = due.saturating_sub(f.scheduled);
            // More than 100 ms behind: the generator could not keep up; skip ahead
            // rather than burst, and say so.
            if behind > u64::from(pps / 10).max(BATCH as u64).max(2 * burst) {
                self.slips += 1;
                f.scheduled = due - burst;
                behind = burst;
            }
            if behind > 0 {
                let sent = self.fill(i, behind.min(4 * BATCH as u64))?;
                self.flows[i].scheduled += sent;
            }
        }
        Ok(())
    }

    /// Receives everything waiting on flow `i` and matches the replies.
    fn drain(&mut self, i: usize) -> Result<(), String> {
        let framing = self.plan.framing;
        let (clock, f) = (&self.clock, &mut self.flows[i]);
        let (c, srtt, refresher, control) = (
            &mut self.counters,
            &mut self.srtt_ns,
            &mut self.refresher,
            &mut self.control,
        );
        // Kernel receive times are real time; one reading of both clocks places them
        // (only where the run asked for them: floods spare the clock reads).
        let pair = self.plan.arrival_times.then(|| clock.pair());
        let drained = self
            .io
            .drain(i, &mut |bytes, stamp| match classify(framing, bytes) {
                Incoming::Payload(p) => match Probe::read(p) {
                    Some(probe) if probe.flow == f.id => {
                        let now = clock.now();
                        if let Some(sent) = f.ring.reply(probe.seq, probe.ts, &mut |t| c.lost(t)) {
                            let arrived = stamp.zip(pair).and_then(|(s, p)| Clock::arrival(p, s));
                            c.reply(sent, now, arrived);
                            let rtt = now.saturating_sub(sent);
                            *srtt = (*srtt * 31 + rtt) / 32;
                        }
                    }
                    _ => {}
                },
                Incoming::Response => {
                    if let Some(r) = refresher.as_mut() {
                        r.on_response(i, bytes, clock.now(), &mut |k, m| {
                            control.push((k, m.to_vec()));
                        });
                    }
                }
                Incoming::Other => {}
            })?;
        self.refused += drained.refused;
        if drained.more && !self.backlog.contains(&i) {
            self.backlog.push(i);
        }
        self.send_control();
        Ok(())
    }

    /// Sends the refresh requests queued by the refresher.
    fn send_control(&mut self) {
        for (k, m) in self.control.drain(..) {
            self.io.send_control(k, &m);
        }
    }

    /// Losses by timeout, in-run refreshes, and windows reopened by losses.
    fn housekeeping(&mut self, now: u64) -> Result<(), String> {
        let cutoff = now.saturating_sub(LOSS_TIMEOUT_NS);
        let c = &mut self.counters;
        for f in &mut self.flows {
            f.ring.expire(cutoff, &mut |t| c.lost(t));
        }
        if let Some(r) = self.refresher.as_mut() {
            let control = &mut self.control;
            r.tick(now, &mut |k, m| control.push((k, m.to_vec())));
        }
        self.send_control();
        for i in 0..self.flows.len() {
            self.refill(i)?;
        }
        Ok(())
    }

    /// Flood: flows whose window holds only stale packets send again.
    fn unstall(&mut self, now: u64) -> Result<(), String> {
        let stall = (8 * self.srtt_ns).clamp(STALL_MIN_NS, LOSS_TIMEOUT_NS);
        let cutoff = now.saturating_sub(stall);
        for i in 0..self.flows.len() {
            self.flows[i].ring.mark_stale(cutoff);
            self.refill(i)?;
        }
        Ok(())
    }

    fn live(&self) -> u64 {
        self.flows.iter().map(|f| u64::from(f.ring.live())).sum()
    }

    /// Runs warmup, window and drain; `stop` (SIGINT/SIGTERM) ends the window early.
    pub fn run(mut self, stop: &AtomicBool) -> Result<Outcome, String> {
        let mut poll = self.register()?;
        let mut events = Events::with_capacity(1024);
        self.start = self.clock.now();
        let window_start = self.start + self.plan.warmup_ns;
        self.counters.window = window_start..window_start + self.plan.duration_ns;
        let pid = self.plan.server_pid;
        let (mut first, mut last) = (None, None);
        let mut progress = Progress::new(self.start);
        let mut next_housekeeping = self.start + HOUSEKEEPING_NS;
        let flood = matches!(self.plan.load, Load::Flood { .. });
        let mut next_stall_check = if flood {
            self.start + STALL_CHECK_NS
        } else {
            u64::MAX
        };
        let mut drain_until = u64::MAX;
        for i in 0..self.flows.len() {
            self.refill(i)?;
        }
        loop {
            let now = self.clock.now();
            if first.is_none() && now >= self.counters.window.start {
                first = Some(Sample::take(self.counters.window.start, pid));
            }
            if self.sending && (now >= self.counters.window.end || stop.load(Ordering::Relaxed)) {
                let end = self.close_window(now);
                first.get_or_insert(end);
                last = Some(end);
                drain_until = now + LOSS_TIMEOUT_NS;
            }
            if !self.sending && (now >= drain_until || self.live() == 0) {
                break;
            }
            self.paced(now)?;
            for i in std::mem::take(&mut self.backlog) {
                self.drain(i)?;
                self.refill(i)?;
            }
            if std::mem::take(&mut self.retry) {
                for i in 0..self.flows.len() {
                    self.refill(i)?;
                }
            }
            if now >= next_stall_check {
                self.unstall(now)?;
                next_stall_check = now + STALL_CHECK_NS;
            }
            if now >= next_housekeeping {
                self.housekeeping(now)?;
                next_housekeeping = now + HOUSEKEEPING_NS;
            }
            progress.tick(now, &self.counters);
            let wake = next_housekeeping.min(next_stall_check).min(progress.next());
            self.wait(&mut poll, &mut events, now, wake)?;
            for ev in &events {
                let i = ev.token().0;
                if ev.is_writable() {
                    self.io.writable(i);
                }
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    self.drain(i)?;
                }
                self.refill(i)?;
            }
        }
        let c = &mut self.counters;
        for f in &mut self.flows {
            f.ring.expire(u64::MAX, &mut |t| c.lost(t));
        }
        let (Some(first), Some(last)) = (first, last) else {
            return Err("the run ended before its window".into());
        };
        let mut outcome = Outcome::new(self.counters, first, last);
        outcome.refused = self.refused;
        outcome.slips = self.slips;
        outcome.closed = self.io.closed() as u64;
        if let Some(r) = &self.refresher {
            outcome.refreshes = r.successes;
            outcome.refresh_failures = r.failures;
        }
        Ok(outcome)
    }

    fn register(&mut self) -> Result<Poll, String> {
        let poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
        self.io
            .register(poll.registry())
            .map_err(|e| format!("poll: {e}"))?;
        if self.plan.arrival_times {
            self.io
                .stamp_arrivals()
                .map_err(|e| format!("receive timestamps: {e}"))?;
        }
        Ok(poll)
    }

    /// Ends the window at `now` (its planned end, or earlier on a signal) and stops
    /// sending; returns the CPU sample at its end.
    fn close_window(&mut self, now: u64) -> Sample {
        let w = &mut self.counters.window;
        w.end = w.end.min(now);
        w.start = w.start.min(w.end);
        self.sending = false;
        Sample::take(w.end, self.plan.server_pid)
    }

    /// Polls until the next thing to do: `wake`, a window edge, or (pacing, retrying)
    /// the next millisecond.
    fn wait(
        &mut self,
        poll: &mut Poll,
        events: &mut Events,
        now: u64,
        wake: u64,
    ) -> Result<(), String> {
        let w = &self.counters.window;
        let mut until = wake;
        for edge in [w.start, w.end] {
            if edge > now {
                until = until.min(edge);
            }
        }
        let paced = matches!(self.plan.load, Load::Paced { .. }) && self.sending;
        let mut timeout = Duration::from_nanos(until.saturating_sub(now));
        if paced || self.retry {
            timeout = timeout.min(Duration::from_millis(1));
        }
        if !self.backlog.is_empty() {
            timeout = Duration::ZERO;
        }
        match poll.poll(events, Some(timeout)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {
                events.clear();
                Ok(())
            }
            Err(e) => Err(format!("poll: {e}")),
        }
    }
}
