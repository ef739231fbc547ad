//! The I/O layer: sockets and the clock, feeding the sans-IO core.
//!
//! The server runs `relay-threads` shards, each an OS thread with a mio event loop over
//! its own listener sockets (SO_REUSEPORT on the shared port, so the kernel keeps each
//! client 5-tuple on one shard), its own relay sockets from its own slice of the port
//! range, and its own core. Shards share only the [`SharedState`] (quotas, the set of
//! live relayed addresses), which is off the packet path.

mod control;
mod shard;
mod stream;
mod tls;

use control::ShardLink;
pub use control::{Control, LogReloader, Metrics, ReloadReport};
pub use tls::CertStore;

use crate::config::Config;
use crate::state::LocalState;
use ferroturn_core::server::{Secrets, Server, SharedState};
use rand::RngExt;
use shard::SocketOptions;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use stream::{ConnLimits, StreamListener, Streams};

/// Default SO_RCVBUF / SO_SNDBUF of listener sockets.
const LISTENER_BUFFER: usize = 4 << 20;

/// A running server. Dropping it stops the server and waits for its threads. It
/// dereferences to its [`Control`] (addresses, metrics, drain, sessions, reload), which
/// [`ServerHandle::control`] also hands out for the HTTP API and signal handlers.
pub struct ServerHandle {
    control: Arc<Control>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    api: Option<crate::api::ApiServer>,
}

impl std::ops::Deref for ServerHandle {
    type Target = Control;
    fn deref(&self) -> &Control {
        &self.control
    }
}

impl ServerHandle {
    /// The control side, shareable with other tasks.
    pub fn control(&self) -> Arc<Control> {
        self.control.clone()
    }

    /// The HTTP API's bound address, when `api-listen` is set.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api.as_ref().map(|a| a.addr())
    }

    /// Stops every shard and waits for them to exit.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for s in &self.control.shards {
            let _ = s.waker.wake();
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
    add_host_addresses(&mut config);
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
    // One nonce key for every shard: a nonce one shard issued is good at all of them.
    let nonce_key: [u8; 32] = rand::rng().random();
    let mut links = Vec::with_capacity(shards);
    let mut threads = Vec::with_capacity(shards);
    for (index, (listeners, stream_listeners)) in
        per_shard.into_iter().zip(stream_listeners).enumerate()
    {
        let mut cfg = config.server.clone();
        (cfg.min_port, cfg.max_port) = port_slice(cfg.min_port, cfg.max_port, index, shards);
        share_between_shards(&mut cfg, shards);
        let secrets = Secrets {
            nonce_key,
            seed: rand::rng().random(),
        };
        let core = Server::new(cfg, shared.clone(), secrets, Instant::now(), unix_now());
        let streams = Streams::new(
            stream_listeners,
            conn_limits.clone(),
            config.streams,
            tls_config.clone(),
        );
        let mut shard = shard::Shard::new(core, listeners, streams, opts, stop.clone())?;
        let link = Arc::new(ShardLink::new(shard.waker()));
        shard.set_link(link.clone());
        links.push(link);
        threads.push(
            std::thread::Builder::new()
                .name(format!("ferroturn-shard-{index}"))
                .spawn(move || shard.run())?,
        );
    }
    if let Some(certs) = &certs {
        threads.push(watch_certificates(certs.clone(), stop.clone())?);
    }
    let control = Control::new(
        config,
        [udp_addrs, tcp_addrs, tls_addrs],
        certs,
        conn_limits,
        links,
    );
    let mut handle = ServerHandle {
        control: Arc::new(control),
        stop,
        threads,
        api: None,
    };
    // On error the handle is dropped, which stops the shards.
    let certs = handle.control.certs.clone();
    handle.api = crate::api::ApiServer::start(handle.control(), certs).await?;
    Ok(handle)
}

/// Limits that hold for the whole server are split between the shards: each relays its
/// share of `bps-capacity`, and answers its share of `unauthenticated-rate` (the kernel
/// spreads one source IP's packets over every shard by source port).
pub(crate) fn share_between_shards(cfg: &mut ferroturn_core::server::ServerConfig, shards: usize) {
    let n = shards.max(1);
    cfg.bps_capacity = cfg.bps_capacity.div_ceil(n as u64);
    cfg.unauthenticated_rate = cfg.unauthenticated_rate.div_ceil(n as u32);
}

/// Every address of this host is the server's own: SSH or a database on another
/// interface address must not be reachable through a relay either.
pub(crate) fn add_host_addresses(config: &mut Config) {
    match if_addrs::get_if_addrs() {
        Ok(interfaces) => config
            .server
            .policy
            .add_own(interfaces.into_iter().map(|i| i.ip())),
        Err(e) => tracing::warn!("cannot list this host's addresses for the peer policy: {e}"),
    }
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
