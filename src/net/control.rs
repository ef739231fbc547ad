//! The control side of a running server, shared by the handle, the signal handlers and
//! the HTTP API: metrics, readiness and drain, sessions, configuration reload.
//!
//! Shards are asked through a small command queue each one checks every turn (a flag
//! keeps the check to one atomic load); answers come back on a channel with a bounded
//! wait.

use super::stream::ConnLimits;
use super::tls::CertStore;
use crate::config::{Config, RawConfig};
use ferroturn_core::server::{Gauges, ServerConfig, Session, SessionFilter, Stats};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// How long an operator request waits for the shards.
const SHARD_REPLY: Duration = Duration::from_secs(2);

/// A request to one shard, carried out between packets.
pub enum Command {
    Sessions(Sender<Vec<Session>>),
    Delete(SessionFilter, Sender<usize>),
    Reconfigure(Box<ServerConfig>),
    Drain(bool),
}

/// One shard's mailbox.
pub struct ShardLink {
    pub waker: Arc<mio::Waker>,
    pub queue: Mutex<Vec<Command>>,
    pub pending: AtomicBool,
    /// The core's counters and gauges, published once a second.
    pub published: Mutex<(Stats, Gauges)>,
}

impl ShardLink {
    pub fn new(waker: Arc<mio::Waker>) -> Self {
        Self {
            waker,
            queue: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
            published: Mutex::new(Default::default()),
        }
    }

    fn send(&self, command: Command) {
        if let Ok(mut q) = self.queue.lock() {
            q.push(command);
            self.pending.store(true, Ordering::Release);
        }
        let _ = self.waker.wake();
    }

    /// The commands waiting, if any (the shard calls this every turn).
    pub fn take(&self) -> Vec<Command> {
        if !self.pending.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        self.queue
            .lock()
            .map(|mut q| std::mem::take(&mut *q))
            .unwrap_or_default()
    }
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
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    pub draining: bool,
    pub shards: usize,
}

/// What a reload changed, and what it could not change without a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Options whose new values only take effect after a restart.
    pub needs_restart: Vec<&'static str>,
}

/// Sets the log filter at run time (installed by the binary, which owns tracing).
pub type LogReloader = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The shared state of a running server.
pub struct Control {
    pub(super) udp_addrs: Vec<SocketAddr>,
    pub(super) tcp_addrs: Vec<SocketAddr>,
    pub(super) tls_addrs: Vec<SocketAddr>,
    pub(super) certs: Option<Arc<CertStore>>,
    pub(super) conn_limits: Arc<ConnLimits>,
    pub(super) shards: Vec<Arc<ShardLink>>,
    config: RwLock<Arc<Config>>,
    source: Mutex<Option<(PathBuf, RawConfig)>>,
    log: Mutex<Option<LogReloader>>,
    draining: AtomicBool,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
}

impl Control {
    pub(super) fn new(
        config: Config,
        addrs: [Vec<SocketAddr>; 3],
        certs: Option<Arc<CertStore>>,
        conn_limits: Arc<ConnLimits>,
        shards: Vec<Arc<ShardLink>>,
    ) -> Self {
        let [udp_addrs, tcp_addrs, tls_addrs] = addrs;
        Self {
            udp_addrs,
            tcp_addrs,
            tls_addrs,
            certs,
            conn_limits,
            shards,
            config: RwLock::new(Arc::new(config)),
            source: Mutex::new(None),
            log: Mutex::new(None),
            draining: AtomicBool::new(false),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
        }
    }

    /// The bound UDP listener addresses (ephemeral ports resolved).
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.udp_addrs
    }

    /// The bound TCP listener addresses.
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp_addrs
    }

    /// The bound TLS listener addresses.
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.tls_addrs
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
    pub fn reload_tls(&self) -> Result<(), String> {
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
            if let Ok(p) = s.published.lock() {
                m.stats.add(&p.0);
                m.gauges.add(&p.1);
            }
        }
        let (tcp, tls, refused) = self.conn_limits.accepted();
        m.connections_open = self.conn_limits.total() as u64;
        m.connections_accepted_tcp = tcp;
        m.connections_accepted_tls = tls;
        m.connections_refused = refused;
        m.stream_frames_dropped = self.conn_limits.dropped();
        m
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

    /// Deletes the allocations `filter` names in every shard; returns how many.
    pub fn delete_sessions(&self, filter: SessionFilter) -> usize {
        let (tx, rx) = channel();
        for s in &self.shards {
            s.send(Command::Delete(filter.clone(), tx.clone()));
        }
        drop(tx);
        (0..self.shards.len())
            .map_while(|_| rx.recv_timeout(SHARD_REPLY).ok())
            .sum()
    }

    /// Remembers where the configuration came from, for [`Control::reload`].
    pub fn set_config_source(&self, file: PathBuf, flags: RawConfig) {
        if let Ok(mut s) = self.source.lock() {
            *s = Some((file, flags));
        }
    }

    /// Installs the function that changes the log filter on reload.
    pub fn set_log_reloader(&self, f: LogReloader) {
        if let Ok(mut l) = self.log.lock() {
            *l = Some(f);
        }
    }

    /// Re-reads the configuration file (with the command-line flags over it, as at
    /// start) and applies it; without a file, reloads the TLS certificate only. A file
    /// that fails validation is refused as a whole: the old configuration stays, the
    /// error is returned, logged and counted.
    pub fn reload(&self) -> Result<ReloadReport, String> {
        let source = self.source.lock().ok().and_then(|s| s.clone());
        let result = match source {
            Some((file, flags)) => RawConfig::from_file(&file)
                .and_then(|raw| Config::from_raw(raw.overlay(flags)))
                .map_err(|e| e.to_string())
                .and_then(|config| self.apply(config)),
            None => self.reload_tls().map(|()| ReloadReport::default()),
        };
        match &result {
            Ok(report) => {
                self.reloads_ok.fetch_add(1, Ordering::Relaxed);
                tracing::info!(needs_restart = ?report.needs_restart, "configuration reloaded");
            }
            Err(e) => {
                self.reloads_failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!("reload refused, the running configuration stays: {e}");
            }
        }
        result
    }

    /// Applies a validated configuration: credentials, policy, quotas, caps, lifetimes,
    /// log level and certificates now; options that need a restart are reported.
    pub fn apply(&self, mut new: Config) -> Result<ReloadReport, String> {
        super::add_host_addresses(&mut new);
        let old = self.config();
        let mut report = ReloadReport::default();
        let mut restart = |changed: bool, name: &'static str| {
            if changed {
                report.needs_restart.push(name);
            }
        };
        restart(old.listeners != new.listeners, "listening-ip/ports");
        restart(old.tls != new.tls, "cert/pkey paths");
        restart(old.relay_threads != new.relay_threads, "relay-threads");
        restart(
            (old.server.min_port, old.server.max_port)
                != (new.server.min_port, new.server.max_port),
            "min-port/max-port",
        );
        restart(
            (old.server.relay_v4, old.server.relay_v6)
                != (new.server.relay_v4, new.server.relay_v6),
            "relay-ip/external-ip",
        );
        restart(old.streams != new.streams, "tcp limits");
        restart(
            (old.api.listen, old.api.tls) != (new.api.listen, new.api.tls),
            "api-listen/api-tls",
        );
        restart(
            (old.socket_recv_buffer_size, old.socket_send_buffer_size)
                != (new.socket_recv_buffer_size, new.socket_send_buffer_size),
            "socket buffer sizes",
        );
        self.reload_tls()?;
        if new.log_level != old.log_level {
            if let Some(f) = self.log.lock().ok().as_ref().and_then(|l| l.as_ref()) {
                f(&new.log_level)?;
            }
        }
        for s in &self.shards {
            let mut cfg = new.server.clone();
            super::share_between_shards(&mut cfg, self.shards.len());
            s.send(Command::Reconfigure(Box::new(cfg)));
        }
        if let Ok(mut c) = self.config.write() {
            *c = Arc::new(new);
        }
        Ok(report)
    }
}
