//! The operator side of a running server, shared by the handle, the signal handlers and
//! the HTTP API: addresses, metrics, readiness and drain, sessions, configuration and
//! certificate reload. It talks to the shards only through their mailboxes
//! ([`ShardLink`]): commands in, counters out, answers on a channel with a bounded wait.
//! It never touches a socket, so it knows nothing of the I/O layer. Usage records pass
//! through it on their way from the shards to the log and the webhook ([`UsageSink`]).

mod certs;
mod connections;
mod leases;
mod mailbox;
mod reload;
mod usage;

pub use certs::{CertError, CertStore, DerPair, watch as watch_certificates};
pub use connections::{ConnLimits, DtlsCounters, FrontSnapshot, Refusal};
pub use leases::{LeaseAsk, LeaseOp, Leases};
pub use mailbox::{Command, MovedRelay, ShardLink, Wake};
pub use reload::{
    LogFilterError, LogReloader, MAX_REVOCATIONS, ReloadError, ReloadReport, StoreCredentials,
    add_host_addresses, shard_config,
};
pub use usage::{UsageCounters, UsageDrop, UsageRecord, UsageSink, UsageTotals};

use crate::config::{Config, RawConfig};
use crate::offload::{Offload, OffloadTotals};
use ferroturn_core::server::stats::Traffic;
use ferroturn_core::server::{Deletion, Gauges, Session, SessionFilter, Stats};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long an operator request waits for the shards.
const SHARD_REPLY: Duration = Duration::from_secs(2);

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An anchor for the cores' wall clocks (`WallClock`): the unix second now, and the
/// `Instant` it began at. Anchored at `now` instead, a core would lag the wall clock by
/// up to a second (the seconds elapsed are counted from a point inside a second), and
/// would accept a REST credential for up to a second after it expired.
pub fn wall_anchor(now: Instant) -> (Instant, u64) {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let into = Duration::from_nanos(u64::from(since.subsec_nanos()));
    (now.checked_sub(into).unwrap_or(now), since.as_secs())
}

/// This machine's host name (empty if it cannot be read).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// A snapshot of the server's counters and gauges, every shard added up (the shards
/// publish theirs once a second).
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub stats: Stats,
    pub gauges: Gauges,
    pub connections_open: u64,
    pub connections_accepted_tcp: u64,
    pub connections_accepted_tls: u64,
    pub connections_refused: u64,
    pub stream_frames_dropped: u64,
    pub dtls_sessions: u64,
    pub dtls_handshakes_done: u64,
    pub dtls_handshakes_failed: u64,
    pub dtls_hello_verify: u64,
    /// PROXY headers, refusals before TURN, HTTPS pass-through.
    pub front: FrontSnapshot,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    pub draining: bool,
    pub shards: usize,
    /// The kernel fast path's counters and the channels it relays now, when it runs.
    pub offload: Option<(OffloadTotals, u64)>,
    /// Whether the fleet's Redis answers; `None` without a fleet.
    pub fleet_redis_up: Option<bool>,
    /// Usage records written, delivered to the webhook and dropped.
    pub usage: UsageTotals,
}

impl Metrics {
    /// Everything relayed, client to peer and peer to client: datagrams in user space
    /// and in the kernel, and bytes through RFC 6062 TCP peer connections (which have
    /// no datagrams, so add bytes only).
    pub fn relayed_traffic(&self) -> [Traffic; 2] {
        let mut out = [Traffic::default(); 2];
        for (d, total) in out.iter_mut().enumerate() {
            for t in &self.stats.relayed {
                total.packets += t[d].packets;
                total.bytes += t[d].bytes;
            }
            total.bytes += self.stats.tcp_relayed[d];
        }
        if let Some((k, _)) = &self.offload {
            for (total, kernel) in out.iter_mut().zip([k.up.relayed, k.down.relayed]) {
                total.packets += kernel.packets;
                total.bytes += kernel.bytes;
            }
        }
        out
    }
}

/// One shard's load, as it last published it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardLoad {
    pub allocations: u64,
    /// Datagrams relayed in user space, both directions, since the start.
    pub packets: u64,
    /// Their payload bytes.
    pub bytes: u64,
}

/// The bound listener addresses, ephemeral ports resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BoundAddrs {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
    /// DTLS: the UDP side of the TLS addresses (empty with `no-dtls`).
    pub dtls: Vec<SocketAddr>,
}

/// The shared state of a running server.
pub struct Control {
    addrs: BoundAddrs,
    certs: Option<Arc<CertStore>>,
    conn_limits: Arc<ConnLimits>,
    shards: Vec<Arc<ShardLink>>,
    offload: Option<Arc<Offload>>,
    config: RwLock<Arc<Config>>,
    source: Mutex<Option<(PathBuf, RawConfig)>>,
    log: Mutex<Option<LogReloader>>,
    draining: AtomicBool,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    /// Credentials of the user store, added to the configured ones.
    store: Mutex<Option<StoreCredentials>>,
    /// The fleet's Redis: 0 no fleet, 1 not answering, 2 answering.
    fleet_redis: AtomicU8,
    /// Users refused until a time (unix seconds), by an operator of this node.
    revoked: Mutex<std::collections::HashMap<String, u64>>,
    /// A live node of the fleet a draining node redirects to.
    fleet_alternate: Mutex<Option<SocketAddr>>,
    started: Instant,
    /// The public addresses `external-ip = "auto"` learned (IPv4, IPv6).
    external: Mutex<[Option<IpAddr>; 2]>,
    /// Where the shards write usage records (for its counters).
    usage: Arc<UsageSink>,
}

impl Control {
    /// The control side of shards reached through `shards`, running `config`.
    pub fn new(
        config: Config,
        addrs: BoundAddrs,
        certs: Option<Arc<CertStore>>,
        conn_limits: Arc<ConnLimits>,
        shards: Vec<Arc<ShardLink>>,
        offload: Option<Arc<Offload>>,
        usage: Arc<UsageSink>,
    ) -> Self {
        Self {
            usage,
            addrs,
            certs,
            conn_limits,
            shards,
            offload,
            config: RwLock::new(Arc::new(config)),
            source: Mutex::new(None),
            log: Mutex::new(None),
            draining: AtomicBool::new(false),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            store: Mutex::new(None),
            fleet_redis: AtomicU8::new(0),
            revoked: Mutex::new(std::collections::HashMap::new()),
            fleet_alternate: Mutex::new(None),
            started: Instant::now(),
            external: Mutex::new([None; 2]),
        }
    }

    /// The bound UDP listener addresses (ephemeral ports resolved).
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.addrs.udp
    }

    /// The bound TCP listener addresses.
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.addrs.tcp
    }

    /// The bound TLS listener addresses.
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.addrs.tls
    }

    /// The bound DTLS addresses (UDP, the TLS ports).
    pub fn dtls_addrs(&self) -> &[SocketAddr] {
        &self.addrs.dtls
    }

    /// The certificate store, when TLS is on.
    pub fn certs(&self) -> Option<&Arc<CertStore>> {
        self.certs.as_ref()
    }

    /// Wakes every shard (after its stop flag was set).
    pub fn wake_shards(&self) {
        for s in &self.shards {
            s.wake();
        }
    }

    /// The configuration in force (the last one loaded or reloaded).
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Re-reads the certificate and key files. New TLS handshakes use the new
    /// certificate; established connections keep running. On error the old certificate
    /// stays and the error (naming the file) is returned. Without TLS this does nothing.
    pub fn reload_tls(&self) -> Result<(), CertError> {
        match &self.certs {
            Some(certs) => certs.reload(),
            None => Ok(()),
        }
    }

    /// TCP and TLS connections open in every shard.
    pub fn connection_count(&self) -> usize {
        self.conn_limits.total()
    }

    /// Frames toward TCP/TLS clients dropped because the client read slower than its
    /// media arrived (`tcp-send-queue` full).
    pub fn stream_frames_dropped(&self) -> u64 {
        self.conn_limits.dropped()
    }

    /// Counters and gauges of every shard, added up.
    pub fn metrics(&self) -> Metrics {
        let mut m = Metrics {
            shards: self.shards.len(),
            draining: self.is_draining(),
            reloads_ok: self.reloads_ok.load(Ordering::Relaxed),
            reloads_failed: self.reloads_failed.load(Ordering::Relaxed),
            ..Metrics::default()
        };
        for s in &self.shards {
            let (stats, gauges) = s.published();
            m.stats.add(&stats);
            m.gauges.add(&gauges);
        }
        let (tcp, tls, refused) = self.conn_limits.accepted();
        m.connections_open = self.conn_limits.total() as u64;
        m.connections_accepted_tcp = tcp;
        m.connections_accepted_tls = tls;
        m.connections_refused = refused;
        m.stream_frames_dropped = self.conn_limits.dropped();
        (
            m.dtls_sessions,
            m.dtls_handshakes_done,
            m.dtls_handshakes_failed,
            m.dtls_hello_verify,
        ) = self.conn_limits.dtls().snapshot();
        m.front = self.conn_limits.front().snapshot();
        m.offload = self.offload.as_ref().map(|o| (o.totals(), o.installed()));
        m.usage = self.usage.totals();
        m.fleet_redis_up = match self.fleet_redis.load(Ordering::Relaxed) {
            0 => None,
            v => Some(v == 2),
        };
        m
    }

    /// Each shard's load, in shard order (as published, at most a second old).
    pub fn shard_loads(&self) -> Vec<ShardLoad> {
        self.shards
            .iter()
            .map(|s| {
                let (stats, gauges) = s.published();
                let traffic = stats.relayed.iter().flatten();
                ShardLoad {
                    allocations: gauges.allocations,
                    packets: traffic.clone().map(|t| t.packets).sum(),
                    bytes: traffic.map(|t| t.bytes).sum(),
                }
            })
            .collect()
    }

    /// How long this server has run.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Records whether the fleet's Redis answers (for /metrics).
    pub fn set_fleet_redis_up(&self, up: bool) {
        self.fleet_redis
            .store(if up { 2 } else { 1 }, Ordering::Relaxed);
    }

    /// Whether the kernel fast path runs.
    pub fn kernel_offload(&self) -> bool {
        self.offload.is_some()
    }

    /// Listeners are bound (they are, once the server started) and not draining.
    pub fn is_ready(&self) -> bool {
        !self.is_draining()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Starts (or ends) draining: new allocations are refused with 508, existing ones run
    /// on, readiness turns false at once.
    pub fn set_draining(&self, on: bool) {
        self.draining.store(on, Ordering::Release);
        for s in &self.shards {
            s.send(Command::Drain(on));
        }
        tracing::info!(
            draining = on,
            "drain {}",
            if on { "started" } else { "stopped" }
        );
    }

    /// Drains: refuses new allocations, then waits until the last allocation has ended
    /// or `drain-timeout` has passed (blocking; shards publish their gauges once a
    /// second). Returns the allocations still open.
    pub fn drain_and_wait(&self) -> u64 {
        self.set_draining(true);
        let deadline = std::time::Instant::now() + self.config().drain_timeout;
        // Let every shard publish once after the drain started.
        std::thread::sleep(Duration::from_millis(1100));
        loop {
            let open = self.metrics().gauges.allocations;
            if open == 0 || std::time::Instant::now() >= deadline {
                tracing::info!(open, "drain finished");
                return open;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `external-ip = "auto"`: `ip` is the public address of the relays of its family;
    /// every shard advertises it to new allocations from now on (existing ones keep
    /// theirs). Returns the learned address it replaces, if any.
    pub fn set_external_ip(&self, ip: IpAddr) -> Option<IpAddr> {
        let family = usize::from(ip.is_ipv6());
        let old = {
            let mut learned = self.external.lock().unwrap_or_else(|e| e.into_inner());
            learned[family].replace(ip)
        };
        if old != Some(ip) {
            for s in &self.shards {
                s.send(Command::ExternalIp(ip));
            }
        }
        old
    }

    /// The public addresses `external-ip = "auto"` learned so far (IPv4, IPv6).
    pub fn external_ips(&self) -> [Option<IpAddr>; 2] {
        *self.external.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every allocation of every shard.
    pub fn sessions(&self) -> Vec<Session> {
        let (tx, rx) = channel();
        for s in &self.shards {
            s.send(Command::Sessions(tx.clone()));
        }
        drop(tx);
        let mut all = Vec::new();
        for _ in &self.shards {
            match rx.recv_timeout(SHARD_REPLY) {
                Ok(mut v) => all.append(&mut v),
                Err(_) => break,
            }
        }
        all
    }

    /// The URIs clients are handed for this node: `turn-uris` verbatim, else one per
    /// bound listener (UDP, TCP, TLS) with `public-host` or the listener's address as host.
    pub fn turn_uris(&self, config: &Config) -> Vec<String> {
        let api = &config.api;
        if !api.turn_uris.is_empty() {
            return api.turn_uris.clone();
        }
        let host = |addr: &SocketAddr| -> Option<String> {
            if let Some(h) = &api.public_host {
                return Some(h.clone());
            }
            let mut ip = addr.ip();
            if ip.is_unspecified() {
                // A wildcard listener: the address relays are announced with is reachable.
                let relay = [config.server.relay_v4, config.server.relay_v6];
                let learned = self.external_ips();
                ip = relay
                    .iter()
                    .flatten()
                    .map(|r| learned[usize::from(r.local.is_ipv6())].unwrap_or(r.advertised))
                    .find(|a| a.is_ipv4() == ip.is_ipv4())
                    .or_else(|| learned.iter().flatten().copied().next())
                    .or_else(|| relay.iter().flatten().map(|r| r.advertised).next())?;
            }
            Some(match ip {
                std::net::IpAddr::V4(v4) => v4.to_string(),
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            })
        };
        let mut out: Vec<String> = Vec::new();
        let kinds: [(&[SocketAddr], &str, &str); 3] = [
            (self.udp_addrs(), "turn", "udp"),
            (self.tcp_addrs(), "turn", "tcp"),
            (self.tls_addrs(), "turns", "tcp"),
        ];
        for (addrs, scheme, transport) in kinds {
            for addr in addrs {
                if let Some(h) = host(addr) {
                    let uri = format!("{scheme}:{h}:{}?transport={transport}", addr.port());
                    if !out.contains(&uri) {
                        out.push(uri);
                    }
                }
            }
        }
        out
    }

    /// Sends `command` to shard `index`'s mailbox (dropped if there is no such shard).
    pub fn send_to_shard(&self, index: usize, command: Command) {
        if let Some(link) = self.shards.get(index) {
            link.send(command);
        }
    }

    /// Deletes the allocations `filter` names in every shard (an operator's delete:
    /// their usage records say `operator`); returns how many.
    pub fn delete_sessions(&self, filter: SessionFilter) -> usize {
        self.end_sessions(filter, Deletion::ByOperator)
    }

    /// Ends the allocations `filter` names in every shard, their usage records saying
    /// `why`; returns how many.
    pub fn end_sessions(&self, filter: SessionFilter, why: Deletion) -> usize {
        let (tx, rx) = channel();
        for s in &self.shards {
            s.send(Command::Delete(filter.clone(), why, tx.clone()));
        }
        drop(tx);
        (0..self.shards.len())
            .map_while(|_| rx.recv_timeout(SHARD_REPLY).ok())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferroturn_core::clock::WallClock;

    /// A core anchored with `wall_anchor` tells the same unix second as the system
    /// clock, read just before and after, across more than a second's boundary.
    /// Anchored at the moment of reading, it lagged by a second for most of each one.
    #[test]
    fn a_wall_anchor_keeps_the_core_on_the_second() {
        let (at, unix) = wall_anchor(Instant::now());
        let clock = WallClock::new(at, unix);
        let start = unix_now();
        for _ in 0..3000 {
            let before = unix_now();
            let derived = clock.unix(Instant::now());
            let after = unix_now();
            assert!(
                before <= derived && derived <= after,
                "{derived} outside {before}..={after}"
            );
            if after >= start + 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
