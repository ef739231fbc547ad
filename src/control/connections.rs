//! TCP and TLS connection and DTLS session accounting shared by every shard: the caps (in
//! total and per client IP), taken at accept (for DTLS: when a valid cookie arrives) and
//! given back at close, and the counters the metrics read.
//!
//! A connection from a `proxy-protocol-from` source takes its slot in the total at
//! accept and its per-IP slot only once its PROXY header named the client
//! ([`ConnLimits::attribute`]): the proxy's own address is not a client.

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
    front: FrontCounters,
}

/// Why a stream connection was closed before TURN (or the HTTPS backend) saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no PROXY header within tcp-handshake-timeout")]
    ProxyTimeout,
    #[error("a malformed PROXY header, or none")]
    ProxyMalformed,
    #[error("a PROXY header over its size bound")]
    ProxyTooLong,
    #[error("a PROXY header from a source not in proxy-protocol-from")]
    ProxyUntrusted,
    #[error("a PROXY header naming a client address already connected")]
    ProxyDuplicate,
    #[error("no ClientHello within tcp-handshake-timeout")]
    HelloTimeout,
    #[error("not a TLS ClientHello")]
    HelloInvalid,
    #[error("a ClientHello over its size bound")]
    HelloTooLong,
}

impl Refusal {
    /// Every refusal, in the order of [`Refusal::index`].
    pub const ALL: [Refusal; 8] = [
        Refusal::ProxyTimeout,
        Refusal::ProxyMalformed,
        Refusal::ProxyTooLong,
        Refusal::ProxyUntrusted,
        Refusal::ProxyDuplicate,
        Refusal::HelloTimeout,
        Refusal::HelloInvalid,
        Refusal::HelloTooLong,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::ProxyTimeout => "proxy_timeout",
            Refusal::ProxyMalformed => "proxy_malformed",
            Refusal::ProxyTooLong => "proxy_too_long",
            Refusal::ProxyUntrusted => "proxy_untrusted",
            Refusal::ProxyDuplicate => "proxy_duplicate",
            Refusal::HelloTimeout => "client_hello_timeout",
            Refusal::HelloInvalid => "client_hello_invalid",
            Refusal::HelloTooLong => "client_hello_too_long",
        }
    }
}

/// What the front of the stream listeners did (PROXY headers, refusals, connections
/// passed through to the HTTPS backend), for the metrics.
#[derive(Debug, Default)]
pub struct FrontCounters {
    /// PROXY headers accepted: [version 1, version 2] x [naming a client, naming none].
    proxy_headers: [[AtomicU64; 2]; 2],
    refused: [AtomicU64; Refusal::ALL.len()],
    passed: AtomicU64,
    passed_closed: AtomicU64,
    backend_failed: AtomicU64,
    /// Bytes passed through: [client to backend, backend to client].
    passed_bytes: [AtomicU64; 2],
}

/// A snapshot of [`FrontCounters`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FrontSnapshot {
    /// [version 1, version 2] x [naming a client, naming none (LOCAL, UNKNOWN)].
    pub proxy_headers: [[u64; 2]; 2],
    /// By [`Refusal::ALL`].
    pub refused: [u64; Refusal::ALL.len()],
    pub passed: u64,
    pub passed_open: u64,
    pub backend_failed: u64,
    /// [client to backend, backend to client].
    pub passed_bytes: [u64; 2],
}

impl FrontSnapshot {
    /// Connections refused for `why`.
    pub fn refusals(&self, why: Refusal) -> u64 {
        self.refused.get(why.index()).copied().unwrap_or(0)
    }
}

impl FrontCounters {
    /// A PROXY header accepted: version 2 (`v2`) or 1, naming a client or not.
    pub fn count_proxy_header(&self, v2: bool, names_client: bool) {
        self.proxy_headers[usize::from(v2)][usize::from(!names_client)]
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_refused(&self, why: Refusal) {
        self.refused[why.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// A connection passed through to the HTTPS backend (`open`), or one of them closed.
    pub fn count_passed(&self, open: bool) {
        let c = if open {
            &self.passed
        } else {
            &self.passed_closed
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection to the HTTPS backend that failed to open.
    pub fn count_backend_failed(&self) {
        self.backend_failed.fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes passed through toward the backend (`up`) or toward the client.
    pub fn count_passed_bytes(&self, up: bool, bytes: usize) {
        if bytes > 0 {
            self.passed_bytes[usize::from(!up)].fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> FrontSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let passed = load(&self.passed);
        FrontSnapshot {
            proxy_headers: self
                .proxy_headers
                .each_ref()
                .map(|v| v.each_ref().map(load)),
            refused: self.refused.each_ref().map(load),
            passed,
            passed_open: passed.saturating_sub(load(&self.passed_closed)),
            backend_failed: load(&self.backend_failed),
            passed_bytes: self.passed_bytes.each_ref().map(load),
        }
    }
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
            front: FrontCounters::default(),
        }
    }

    /// Takes a slot in the total cap only, for a connection whose client is not known
    /// yet (it comes from a proxy and starts with a PROXY header).
    pub fn acquire_unattributed(&self) -> bool {
        let Ok(mut guard) = self.counts.lock() else {
            return false;
        };
        let (total, _) = &mut *guard;
        if *total >= self.limits.max_connections {
            return false;
        }
        *total += 1;
        true
    }

    /// Charges a connection that holds a slot from [`ConnLimits::acquire_unattributed`]
    /// to client `ip`, if its per-IP cap allows it (nothing changes otherwise).
    pub fn attribute(&self, ip: IpAddr) -> bool {
        let Ok(mut guard) = self.counts.lock() else {
            return false;
        };
        let (_, per_ip) = &mut *guard;
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= self.limits.max_per_ip {
            return false;
        }
        *n += 1;
        true
    }

    /// Gives back a connection's slot: the one [`ConnLimits::acquire`] took for `Some(ip)`,
    /// or the one [`ConnLimits::acquire_unattributed`] took for `None`.
    pub fn release_slot(&self, ip: Option<IpAddr>) {
        match ip {
            Some(ip) => self.release(ip),
            None => {
                if let Ok(mut guard) = self.counts.lock() {
                    guard.0 = guard.0.saturating_sub(1);
                }
            }
        }
    }

    /// The counters of PROXY headers, refusals and HTTPS pass-through.
    pub fn front(&self) -> &FrontCounters {
        &self.front
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits(max_connections: usize, max_per_ip: u32) -> ConnLimits {
        ConnLimits::new(StreamLimits {
            max_connections,
            max_per_ip,
            handshake_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            send_queue: 4096,
        })
    }

    #[test]
    fn unattributed_slots_count_in_the_total_and_take_a_client_later() {
        let l = limits(3, 1);
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        // Two connections from the proxy, whatever its per-IP cap.
        assert!(l.acquire_unattributed());
        assert!(l.acquire_unattributed());
        assert_eq!(l.total(), 2);
        // Each is charged to the client its header names, within that client's cap.
        assert!(l.attribute(client));
        assert!(!l.attribute(client));
        l.release_slot(None);
        assert_eq!(l.total(), 1);
        // The total cap covers both kinds.
        assert!(l.acquire(proxy));
        assert!(l.acquire_unattributed());
        assert!(!l.acquire_unattributed());
        assert!(!l.acquire("192.0.2.9".parse().unwrap()));
        l.release_slot(None);
        l.release_slot(Some(client));
        l.release_slot(Some(proxy));
        assert_eq!(l.total(), 0);
        assert!(l.acquire(client));
    }
}
