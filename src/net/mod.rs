//! The I/O layer: sockets and the clock, feeding the sans-IO core.
//!
//! The server runs `relay-threads` shards, each an OS thread with a mio event loop over
//! its own listener sockets (SO_REUSEPORT on the shared port, so the kernel keeps each
//! client 5-tuple on one shard), its own relay sockets from its own slice of the port
//! range, and its own core. Shards share only the [`SharedState`] (quotas, the set of
//! live relayed addresses), which is off the packet path.

mod batch;
mod shard;
mod stream;
mod tls;

pub use tls::CertStore;

use crate::config::Config;
use crate::core::server::{Gauges, LocalState, Server, SharedState, Stats};
use rand::RngExt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use shard::SocketOptions;
use stream::{ConnLimits, StreamListener, Streams};

/// Default SO_RCVBUF / SO_SNDBUF of listener sockets.
const LISTENER_BUFFER: usize = 4 << 20;

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
    pub shards: usize,
}

/// A running server. Dropping it stops the server and waits for its threads.
pub struct ServerHandle {
    udp_addrs: Vec<SocketAddr>,
    tcp_addrs: Vec<SocketAddr>,
    tls_addrs: Vec<SocketAddr>,
    certs: Option<Arc<CertStore>>,
    conn_limits: Arc<ConnLimits>,
    published: Vec<Arc<Mutex<(Stats, Gauges)>>>,
    stop: Arc<AtomicBool>,
    wakers: Vec<Arc<mio::Waker>>,
    threads: Vec<JoinHandle<()>>,
}

impl ServerHandle {
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

    /// Re-reads the certificate and key files (SIGHUP). New TLS handshakes use the new
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
            shards: self.published.len(),
            ..Metrics::default()
        };
        for p in &self.published {
            if let Ok(p) = p.lock() {
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

    /// Stops every shard and waits for them to exit.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for w in &self.wakers {
            let _ = w.wake();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Shard `index` of `count`'s slice of `[min, max]`.
fn port_slice(min: u16, max: u16, index: usize, count: usize) -> (u16, u16) {
    let span = usize::from(max - min) + 1;
    let chunk = span / count;
    let lo = usize::from(min) + index * chunk;
    let hi = if index + 1 == count {
        usize::from(max)
    } else {
        lo + chunk - 1
    };
    (lo as u16, hi as u16)
}

/// Binds every listener for every shard, then starts the shards. Errors (a port in use,
/// an address not on this host) are returned before anything runs.
pub async fn start(mut config: Config) -> io::Result<ServerHandle> {
    // Every address of this host is the server's own: SSH or a database on another
    // interface address must not be reachable through a relay either.
    match if_addrs::get_if_addrs() {
        Ok(interfaces) => config
            .server
            .policy
            .add_own(interfaces.into_iter().map(|i| i.ip())),
        Err(e) => tracing::warn!("cannot list this host's addresses for the peer policy: {e}"),
    }
    let shared: Arc<dyn SharedState> = Arc::new(LocalState::default());
    let opts = SocketOptions {
        recv_buffer: config.socket_recv_buffer_size,
        send_buffer: config.socket_send_buffer_size,
    };
    // Every client of a shard shares its listener: give it room for bursts (the kernel
    // caps this at net.core.rmem_max / wmem_max).
    let listener_opts = SocketOptions {
        recv_buffer: opts.recv_buffer.or(Some(LISTENER_BUFFER)),
        send_buffer: opts.send_buffer.or(Some(LISTENER_BUFFER)),
    };
    let shards = config.relay_threads;
    // Shard 0 resolves ephemeral ports; the others bind the same addresses.
    let mut udp_addrs: Vec<SocketAddr> = Vec::new();
    let mut per_shard = Vec::with_capacity(shards);
    for shard in 0..shards {
        let mut sockets = Vec::new();
        for (i, configured) in config.listeners.udp.iter().enumerate() {
            let addr = udp_addrs.get(i).copied().unwrap_or(*configured);
            let socket = shard::bind(addr, true, listener_opts).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot listen on udp {addr}: {e}"))
            })?;
            if shard == 0 {
                udp_addrs.push(socket.local_addr()?);
            }
            sockets.push(socket);
        }
        per_shard.push(sockets);
    }
    for addr in &udp_addrs {
        tracing::info!(%addr, shards, "listening (udp)");
    }
    let certs = match &config.tls {
        Some(files) => Some(CertStore::load(files.clone()).map_err(io::Error::other)?),
        None => None,
    };
    let tls_config = match &certs {
        Some(c) => Some(c.server_config().map_err(io::Error::other)?),
        None => None,
    };
    if certs.is_none() && config.tls.is_none() {
        tracing::info!("TLS off (no cert and pkey configured)");
    }
    let (stream_listeners, tcp_addrs, tls_addrs) = bind_streams(&config, shards)?;
    let conn_limits = Arc::new(ConnLimits::new(config.streams));
    let stop = Arc::new(AtomicBool::new(false));
    let mut wakers = Vec::with_capacity(shards);
    let mut published = Vec::with_capacity(shards);
    let mut threads = Vec::with_capacity(shards);
    for (index, (listeners, stream_listeners)) in
        per_shard.into_iter().zip(stream_listeners).enumerate()
    {
        let mut cfg = config.server.clone();
        (cfg.min_port, cfg.max_port) = port_slice(cfg.min_port, cfg.max_port, index, shards);
        // Each shard relays its share of the total bandwidth.
        cfg.bps_capacity = cfg.bps_capacity.div_ceil(shards as u64);
        let seed: [u8; 32] = rand::rng().random();
        let core = Server::new(cfg, shared.clone(), seed, Instant::now(), unix_now());
        let streams = Streams::new(
            stream_listeners,
            conn_limits.clone(),
            config.streams,
            tls_config.clone(),
        );
        let snapshot = Arc::new(Mutex::new(Default::default()));
        published.push(snapshot.clone());
        let shard = shard::Shard::new(core, listeners, streams, opts, stop.clone(), snapshot)?;
        wakers.push(shard.waker());
        threads.push(
            std::thread::Builder::new()
                .name(format!("ferroturn-shard-{index}"))
                .spawn(move || shard.run())?,
        );
    }
    if let Some(certs) = &certs {
        threads.push(watch_certificates(certs.clone(), stop.clone())?);
    }
    Ok(ServerHandle {
        udp_addrs,
        tcp_addrs,
        tls_addrs,
        certs,
        conn_limits,
        published,
        stop,
        wakers,
        threads,
    })
}

/// Per shard, its TCP listeners then its TLS listeners (the listener id is the index);
/// and the bound addresses, ephemeral ports resolved by shard 0.
#[allow(clippy::type_complexity)]
fn bind_streams(
    config: &Config,
    shards: usize,
) -> io::Result<(Vec<Vec<StreamListener>>, Vec<SocketAddr>, Vec<SocketAddr>)> {
    let configured: Vec<(SocketAddr, bool)> = config
        .listeners
        .tcp
        .iter()
        .map(|a| (*a, false))
        .chain(config.listeners.tls.iter().map(|a| (*a, true)))
        .collect();
    let mut bound: Vec<SocketAddr> = Vec::new();
    let mut per_shard = Vec::with_capacity(shards);
    for shard in 0..shards {
        let mut listeners = Vec::new();
        for (i, (configured, tls)) in configured.iter().enumerate() {
            let addr = bound.get(i).copied().unwrap_or(*configured);
            let kind = if *tls { "tls" } else { "tcp" };
            let socket = shard::bind_tcp(addr).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot listen on {kind} {addr}: {e}"))
            })?;
            if shard == 0 {
                let local = socket.local_addr()?;
                tracing::info!(addr = %local, shards, "listening ({kind})");
                bound.push(local);
            }
            listeners.push(StreamListener { socket, tls: *tls });
        }
        per_shard.push(listeners);
    }
    let tcp = bound[..config.listeners.tcp.len()].to_vec();
    let tls = bound[config.listeners.tcp.len()..].to_vec();
    Ok((per_shard, tcp, tls))
}

/// Reloads the certificate when its files change (checked every few seconds; SIGHUP
/// reloads at once).
fn watch_certificates(certs: Arc<CertStore>, stop: Arc<AtomicBool>) -> io::Result<JoinHandle<()>> {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(5);
    const TICK: std::time::Duration = std::time::Duration::from_millis(200);
    std::thread::Builder::new()
        .name("ferroturn-certs".into())
        .spawn(move || {
            let mut waited = std::time::Duration::ZERO;
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(TICK);
                waited += TICK;
                if waited < EVERY {
                    continue;
                }
                waited = std::time::Duration::ZERO;
                match certs.reload_if_changed() {
                    Some(Ok(())) => tracing::info!(
                        cert = %certs.files().cert.display(),
                        "TLS certificate reloaded (files changed)"
                    ),
                    Some(Err(e)) => {
                        tracing::error!("TLS certificate not reloaded, the old one stays: {e}")
                    }
                    None => {}
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::port_slice;

    #[test]
    fn port_slices_cover_the_range_without_overlap() {
        for (min, max, n) in [
            (49152u16, 65535u16, 2usize),
            (40000, 40009, 3),
            (1, 1, 1),
            (10, 20, 11),
        ] {
            let mut next = min;
            for i in 0..n {
                let (lo, hi) = port_slice(min, max, i, n);
                assert_eq!(lo, next);
                assert!(lo <= hi);
                next = hi.wrapping_add(1);
            }
            assert_eq!(next.wrapping_sub(1), max);
        }
    }
}
