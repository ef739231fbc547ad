//! The status page's recent past: every [`EVERY`] a task of the API's runtime reads the
//! counters the shards publish (the same snapshot `/metrics` reads, never the relay
//! path) and keeps the rates since the previous reading in a ring of [`CAPACITY`]
//! samples, so a page opened now has ten minutes of history. Memory is fixed: the ring,
//! and one counter per shard.

use crate::control::{Control, ShardLoad};
use ferroturn_core::server::stats::Traffic;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a sample is taken.
pub const EVERY: Duration = Duration::from_secs(5);
/// Samples kept: ten minutes at [`EVERY`].
pub const CAPACITY: usize = 120;

/// The rates over one interval, stamped with its end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// Unix seconds at the end of the interval.
    pub t: u64,
    /// Relayed payload bits per second, client to peer and peer to client.
    pub bps_up: u64,
    pub bps_down: u64,
    /// Relayed datagrams per second, both directions.
    pub pps: u64,
    /// Allocations open at the end of the interval.
    pub allocations: u64,
}

/// The ring of samples and the totals the next rates are measured from.
#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<Sample>,
    last: Option<(Instant, [Traffic; 2])>,
    /// Each shard's datagrams at the last reading, and its rate over the last interval.
    shard_packets: Vec<u64>,
    shard_pps: Vec<u64>,
}

impl History {
    /// Records the totals read at `now` (`unix` seconds): from the second reading on,
    /// a sample of the rates since the one before, the oldest sample dropped once
    /// [`CAPACITY`] are kept. Counters that went down (none should) count as no traffic.
    pub fn record(
        &mut self,
        now: Instant,
        unix: u64,
        totals: [Traffic; 2],
        allocations: u64,
        shards: &[ShardLoad],
    ) {
        if let Some((at, before)) = self.last {
            let secs = now.saturating_duration_since(at).as_secs_f64().max(0.001);
            let rate = |now: u64, then: u64| (now.saturating_sub(then) as f64 / secs) as u64;
            let sample = Sample {
                t: unix,
                bps_up: rate(totals[0].bytes, before[0].bytes) * 8,
                bps_down: rate(totals[1].bytes, before[1].bytes) * 8,
                pps: rate(totals[0].packets, before[0].packets)
                    + rate(totals[1].packets, before[1].packets),
                allocations,
            };
            if self.samples.len() == CAPACITY {
                self.samples.pop_front();
            }
            self.samples.push_back(sample);
            self.shard_pps = shards
                .iter()
                .enumerate()
                .map(|(i, s)| rate(s.packets, self.shard_packets.get(i).copied().unwrap_or(0)))
                .collect();
        }
        self.last = Some((now, totals));
        self.shard_packets = shards.iter().map(|s| s.packets).collect();
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> impl ExactSizeIterator<Item = &Sample> {
        self.samples.iter()
    }

    /// The last sample, if one was taken.
    pub fn latest(&self) -> Option<Sample> {
        self.samples.back().copied()
    }

    /// Shard `index`'s datagrams per second over the last interval (0 before the second
    /// reading).
    pub fn shard_pps(&self, index: usize) -> u64 {
        self.shard_pps.get(index).copied().unwrap_or(0)
    }
}

/// Takes a sample every [`EVERY`] (the first reading at once) until aborted.
pub async fn run(control: Arc<Control>, history: Arc<Mutex<History>>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let m = control.metrics();
        let shards = control.shard_loads();
        if let Ok(mut h) = history.lock() {
            h.record(
                Instant::now(),
                crate::control::unix_now(),
                m.relayed_traffic(),
                m.gauges.allocations,
                &shards,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traffic(bytes: u64, packets: u64) -> [Traffic; 2] {
        [Traffic { packets, bytes }, Traffic { packets, bytes }]
    }

    #[test]
    fn rates_are_measured_between_readings() {
        let mut h = History::default();
        let t0 = Instant::now();
        let shard = |packets| ShardLoad {
            packets,
            ..ShardLoad::default()
        };
        h.record(t0, 100, traffic(1000, 10), 1, &[shard(10), shard(0)]);
        assert_eq!(h.samples().len(), 0, "the first reading is the baseline");
        h.record(
            t0 + Duration::from_secs(5),
            105,
            traffic(6000, 60),
            2,
            &[shard(40), shard(20)],
        );
        let s = h.latest().unwrap();
        assert_eq!(
            s,
            Sample {
                t: 105,
                bps_up: 8000,
                bps_down: 8000,
                pps: 20,
                allocations: 2,
            }
        );
        assert_eq!((h.shard_pps(0), h.shard_pps(1), h.shard_pps(2)), (6, 4, 0));
        // A counter that went down (it should not) is no traffic, not a huge rate.
        h.record(t0 + Duration::from_secs(10), 110, traffic(10, 1), 0, &[]);
        assert_eq!(h.latest().unwrap().bps_up, 0);
        assert_eq!(h.latest().unwrap().pps, 0);
    }

    #[test]
    fn the_ring_keeps_the_last_capacity_samples() {
        let mut h = History::default();
        let t0 = Instant::now();
        let readings = CAPACITY as u64 * 3;
        for i in 0..=readings {
            h.record(t0 + EVERY * i as u32, i, traffic(i * 100, i), i, &[]);
        }
        assert_eq!(h.samples().len(), CAPACITY);
        let first = h.samples().next().unwrap();
        assert_eq!(first.t, readings - CAPACITY as u64 + 1);
        assert_eq!(h.latest().unwrap().t, readings);
        assert!(h.samples().all(|s| s.bps_up == 160 && s.pps == 0));
    }
}
