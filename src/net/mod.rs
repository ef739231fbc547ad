//! The I/O layer: sockets and the clock, feeding the sans-IO core.
//!
//! The server runs `relay-threads` shards, each an OS thread with a mio event loop over
//! its own listener sockets (SO_REUSEPORT on the shared port, so the kernel keeps each
//! client 5-tuple on one shard), its own relay sockets from its own slice of the port
//! range, and its own core. Shards share only the [`SharedState`] (quotas, the set of
//! live relayed addresses), which is off the packet path.

mod batch;
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
use udp::SocketOptions;

/// Default SO_RCVBUF / SO_SNDBUF of listener sockets.
const LISTENER_BUFFER: usize = 4 << 20;

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
pub async fn start(config: Config) -> io::Result<ServerHandle> {
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
        for (i, configured) in config.listeners.iter().enumerate() {
            let addr = udp_addrs.get(i).copied().unwrap_or(*configured);
            let socket = udp::bind(addr, true, listener_opts).map_err(|e| {
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
    let stop = Arc::new(AtomicBool::new(false));
    let mut wakers = Vec::with_capacity(shards);
    let mut threads = Vec::with_capacity(shards);
    for (index, listeners) in per_shard.into_iter().enumerate() {
        let mut cfg = config.server.clone();
        (cfg.min_port, cfg.max_port) = port_slice(cfg.min_port, cfg.max_port, index, shards);
        let seed: [u8; 32] = rand::rng().random();
        let core = Server::new(cfg, shared.clone(), seed, Instant::now(), unix_now());
        let shard = udp::Shard::new(core, listeners, opts, stop.clone())?;
        wakers.push(shard.waker());
        threads.push(
            std::thread::Builder::new()
                .name(format!("ferroturn-shard-{index}"))
                .spawn(move || shard.run())?,
        );
    }
    Ok(ServerHandle {
        udp_addrs,
        stop,
        wakers,
        threads,
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
