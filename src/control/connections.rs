//! TCP and TLS connection and DTLS session accounting shared by every shard: the caps (in
//! total and per client IP), taken at accept (for DTLS: when a valid cookie arrives) and
//! given back at close, and the counters the metrics read.

use crate::config::StreamLimits;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Connection counts shared by every shard: in total and per client IP.
#[derive(Debug)]
pub struct ConnLimits {
    limits: StreamLimits,
    counts: Mutex<(usize, HashMap<IpAddr, u32>)>,
    /// Frames toward clients dropped because a client did not read fast enough.
    dropped: AtomicU64,
    /// Connections accepted over TCP and over TLS, and refused by a cap.
    accepted: [AtomicU64; 2],
    refused: AtomicU64,
    dtls: DtlsCounters,
}

/// What the DTLS side did, for the metrics.
#[derive(Debug, Default)]
pub struct DtlsCounters {
    sessions: AtomicU64,
    handshakes_done: AtomicU64,
    handshakes_failed: AtomicU64,
    hello_verify: AtomicU64,
}

impl DtlsCounters {
    pub fn session_opened(&self) {
        self.sessions.fetch_add(1, Ordering::Relaxed);
    }

    pub fn session_closed(&self) {
        self.sessions.fetch_sub(1, Ordering::Relaxed);
    }

    /// A handshake that completed (`done`) or failed (an error, or its deadline passed).
    pub fn count_handshake(&self, done: bool) {
        let c = if done {
            &self.handshakes_done
        } else {
            &self.handshakes_failed
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// A HelloVerifyRequest sent (a ClientHello without a valid cookie).
    pub fn count_hello_verify(&self) {
        self.hello_verify.fetch_add(1, Ordering::Relaxed);
    }

    /// Sessions open, handshakes done and failed, HelloVerifyRequests sent.
    pub fn snapshot(&self) -> (u64, u64, u64, u64) {
        (
            self.sessions.load(Ordering::Relaxed),
            self.handshakes_done.load(Ordering::Relaxed),
            self.handshakes_failed.load(Ordering::Relaxed),
            self.hello_verify.load(Ordering::Relaxed),
        )
    }
}

impl ConnLimits {
    pub fn new(limits: StreamLimits) -> Self {
        Self {
            limits,
            counts: Mutex::new((0, HashMap::new())),
            dropped: AtomicU64::new(0),
            accepted: [AtomicU64::new(0), AtomicU64::new(0)],
            refused: AtomicU64::new(0),
            dtls: DtlsCounters::default(),
        }
    }

    /// Takes a slot for a connection from `ip`, if both caps allow it. The map holds at
    /// most `max_connections` entries.
    pub fn acquire(&self, ip: IpAddr) -> bool {
        let Ok(mut guard) = self.counts.lock() else {
            return false;
        };
        let (total, per_ip) = &mut *guard;
        if *total >= self.limits.max_connections {
            return false;
        }
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= self.limits.max_per_ip {
            return false;
        }
        *n += 1;
        *total += 1;
        true
    }

    /// Gives back the slot [`ConnLimits::acquire`] took.
    pub fn release(&self, ip: IpAddr) {
        if let Ok(mut guard) = self.counts.lock() {
            let (total, per_ip) = &mut *guard;
            *total = total.saturating_sub(1);
            if let Some(n) = per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }

    /// The DTLS counters.
    pub fn dtls(&self) -> &DtlsCounters {
        &self.dtls
    }

    /// A connection or DTLS session refused by a cap.
    pub fn count_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection accepted over TLS (`tls`) or plain TCP.
    pub fn count_accepted(&self, tls: bool) {
        self.accepted[usize::from(tls)].fetch_add(1, Ordering::Relaxed);
    }

    /// Frames dropped toward a client that read too slowly.
    pub fn count_dropped(&self, frames: usize) {
        self.dropped.fetch_add(frames as u64, Ordering::Relaxed);
    }

    /// Connections and DTLS sessions open in every shard.
    pub fn total(&self) -> usize {
        self.counts.lock().map_or(0, |g| g.0)
    }

    /// Frames dropped toward slow clients, in every shard.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Connections accepted over TCP and TLS so far, and refused by a cap.
    pub fn accepted(&self) -> (u64, u64, u64) {
        (
            self.accepted[0].load(Ordering::Relaxed),
            self.accepted[1].load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }
}
