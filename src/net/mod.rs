//! The I/O layer: sockets and the clock, feeding the sans-IO core.
//!
//! Each shard is one OS thread running a mio event loop over its listener sockets and
//! the relay sockets of its allocations, with one reusable receive buffer. Nothing is
//! shared between shards on the packet path.

mod udp;

use crate::config::Config;
use crate::core::server::{LocalState, Server, SharedState};
use rand::RngExt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A running server. Dropping it stops the server and waits for its threads.
pub struct ServerHandle {
    udp_addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    wakers: Vec<Arc<mio::Waker>>,
    threads: Vec<JoinHandle<()>>,
}

impl ServerHandle {
    /// The bound UDP listener addresses (ephemeral ports resolved).
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.udp_addrs
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

/// Binds every listener, then starts the shards. Errors (a port in use, an address not
/// on this host) are returned before anything runs.
pub async fn start(config: Config) -> io::Result<ServerHandle> {
    let shared: Arc<dyn SharedState> = Arc::new(LocalState::default());
    let mut listeners = Vec::new();
    for addr in &config.listeners {
        let socket = udp::bind_listener(*addr)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on udp {addr}: {e}")))?;
        listeners.push(socket);
    }
    let udp_addrs = listeners
        .iter()
        .map(|s| s.local_addr())
        .collect::<io::Result<Vec<_>>>()?;
    for addr in &udp_addrs {
        tracing::info!(%addr, "listening (udp)");
    }
    let seed: [u8; 32] = rand::rng().random();
    let core = Server::new(
        config.server.clone(),
        shared,
        seed,
        Instant::now(),
        unix_now(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let shard = udp::Shard::new(core, listeners, stop.clone())?;
    let waker = shard.waker();
    let thread = std::thread::Builder::new()
        .name("ferroturn-shard-0".into())
        .spawn(move || shard.run())?;
    Ok(ServerHandle {
        udp_addrs,
        stop,
        wakers: vec![waker],
        threads: vec![thread],
    })
}
