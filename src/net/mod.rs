//! The I/O layer: sockets and the clock, feeding the sans-IO core.
//!
//! The server runs `relay-threads` shards, each an OS thread with a mio event loop over
//! its own listener sockets (SO_REUSEPORT on the shared port, so the kernel keeps each
//! client 5-tuple on one shard), its own relay sockets from its own slice of the port
//! range, and its own core. Shards share only the [`SharedState`] (quotas, the set of
//! live relayed addresses), which is off the packet path, and reach the operator side
//! through their mailboxes ([`ShardLink`]).

mod shard;
mod socket;
mod stream;
mod tls;

use crate::config::Config;
use crate::control::{
    BoundAddrs, CertStore, ConnLimits, Leases, ShardLink, shard_config, unix_now,
};
use crate::offload::Offload;
use ferroturn_core::server::{ConnectionIds, Secrets, Server, SharedState};
use rand::RngExt;
use shard::{Inbox, Siblings};
use socket::SocketOptions;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;
use stream::{StreamListener, Streams};

/// The running shards: their threads, their mailboxes, and the flag that stops them.
pub struct Shards {
    pub addrs: BoundAddrs,
    pub links: Vec<Arc<ShardLink>>,
    pub stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Shards {
    /// Stops every shard and waits for it to exit.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for link in &self.links {
            link.wake();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        self.stop();
    }
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
pub fn start(
    config: &Config,
    shared: Arc<dyn SharedState>,
    certs: Option<&Arc<CertStore>>,
    conn_limits: &Arc<ConnLimits>,
    offload: Option<&Arc<Offload>>,
    leases: Option<&Arc<Leases>>,
) -> io::Result<Shards> {
    let opts = SocketOptions::relay(config);
    let shards = config.relay_threads;
    let (udp, udp_addrs) = socket::bind_udp_listeners(config, shards)?;
    let tls_config = certs.map(tls::server_config).transpose()?;
    if certs.is_none() {
        tracing::info!("TLS off (no cert and pkey configured)");
    }
    let (stream_listeners, tcp_addrs, tls_addrs) = bind_streams(config, shards)?;
    let stop = Arc::new(AtomicBool::new(false));
    // One nonce key for every shard: a nonce one shard issued is good at all of them.
    let nonce_key: [u8; 32] = rand::rng().random();
    let mut running = Shards {
        addrs: BoundAddrs {
            udp: udp_addrs,
            tcp: tcp_addrs,
            tls: tls_addrs,
        },
        links: Vec::with_capacity(shards),
        stop: stop.clone(),
        threads: Vec::with_capacity(shards),
    };
    let mut built = Vec::with_capacity(shards);
    for (index, (listeners, stream_listeners)) in udp.into_iter().zip(stream_listeners).enumerate()
    {
        let mut cfg = shard_config(config, shards, offload.is_some());
        (cfg.min_port, cfg.max_port) = port_slice(cfg.min_port, cfg.max_port, index, shards);
        // RFC 6062: a ConnectionBind may reach any shard; the id says which one issued it.
        cfg.connection_ids = ConnectionIds {
            index: index as u32,
            count: shards as u32,
        };
        let secrets = Secrets {
            nonce_key,
            seed: rand::rng().random(),
        };
        let mut core = Server::new(cfg, shared.clone(), secrets, Instant::now(), unix_now());
        // relay-threads is at most 256, so the index fits a byte (MOBILITY-TICKETs name
        // the owning shard by it).
        core.set_shard(
            u8::try_from(index).unwrap_or(u8::MAX),
            u16::try_from(shards).unwrap_or(u16::MAX),
        );
        let streams = Streams::new(
            stream_listeners,
            conn_limits.clone(),
            config.streams,
            tls_config.clone(),
        );
        let mut shard = shard::Shard::new(
            core,
            listeners,
            streams,
            opts,
            stop.clone(),
            offload.cloned(),
        )?;
        let waker = shard.waker();
        let link = Arc::new(ShardLink::new(Box::new(move || {
            let _ = waker.wake();
        })));
        shard.set_link(link.clone());
        if let Some(leases) = leases {
            shard.set_leases(leases.clone(), index);
        }
        running.links.push(link);
        built.push(shard);
    }
    // Every shard can reach every other one: mobility moves allocations between them,
    // and an RFC 6062 data connection goes to the shard that issued its CONNECTION-ID.
    let inboxes: Arc<[Inbox]> = built.iter().map(|s| Inbox::new(s.waker())).collect();
    for (index, mut shard) in built.into_iter().enumerate() {
        shard.set_siblings(Siblings {
            index: index as u32,
            links: running.links.clone(),
            inboxes: inboxes.clone(),
        });
        // On error `running` is dropped, which stops the shards started so far.
        running.threads.push(
            std::thread::Builder::new()
                .name(format!("ferroturn-shard-{index}"))
                .spawn(move || shard.run())?,
        );
    }
    Ok(running)
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
            if shard == 0 {
                socket::ensure_free(addr, socket::Proto::Tcp).map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot listen on {kind}: {e}"))
                })?;
            }
            let socket = socket::bind_tcp(addr).map_err(|e| {
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
