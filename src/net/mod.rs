//! The I/O layer: sockets and the clock, feeding the sans-IO core.
//!
//! The server runs `relay-threads` shards, each an OS thread with a mio event loop over
//! its own listener sockets (SO_REUSEPORT on the shared port, so the kernel keeps each
//! client 5-tuple on one shard), its own relay sockets from its own slice of the port
//! range, and its own core. Shards share only the [`SharedState`] (quotas, the set of
//! live relayed addresses), which is off the packet path, and reach the operator side
//! through their mailboxes ([`ShardLink`]).

mod dtls;
mod front;
mod shard;
mod sniff;
mod socket;
mod stream;
mod tls;

use crate::config::Config;
use crate::control::{
    BoundAddrs, CertStore, ConnLimits, Leases, ShardLink, UsageSink, shard_config, wall_anchor,
};
use crate::offload::Offload;
use ferroturn_core::dtls::Gate;
use ferroturn_core::server::{ConnectionIds, Secrets, Server, SharedState};
use rand::RngExt;
use shard::{Inbox, Siblings};
use socket::SocketOptions;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
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
    usage: &Arc<UsageSink>,
) -> io::Result<Shards> {
    let opts = SocketOptions::relay(config);
    let shards = config.relay_threads;
    let (udp, udp_addrs) = socket::bind_udp_listeners(config, shards)?;
    let tls_config = certs.map(tls::server_config).transpose()?;
    if certs.is_none() {
        tracing::info!("TLS and DTLS off (no cert and pkey configured)");
    } else if config.listeners.dtls.is_empty() {
        tracing::info!("DTLS off (no-dtls)");
    }
    let backend = match (&config.front.https_backend, certs) {
        (Some(backend), Some(_)) => {
            let addr = front::resolve_backend(backend)?;
            tracing::info!(%addr, "TLS ports shared with an HTTPS backend (ALPN h2, http/1.1)");
            Some(addr)
        }
        _ => None,
    };
    let bound = bind_streams(config, shards, certs.is_some())?;
    let stop = Arc::new(AtomicBool::new(false));
    // One nonce key for every shard: a nonce one shard issued is good at all of them. The
    // same for DTLS cookies.
    let nonce_key: [u8; 32] = rand::rng().random();
    let cookie_key: [u8; 32] = rand::rng().random();
    let mut running = Shards {
        addrs: BoundAddrs {
            udp: udp_addrs,
            tcp: bound.tcp,
            tls: bound.tls,
            dtls: bound.dtls,
        },
        links: Vec::with_capacity(shards),
        stop: stop.clone(),
        threads: Vec::with_capacity(shards),
    };
    let mut built = Vec::with_capacity(shards);
    let per_shard = udp.into_iter().zip(bound.streams).zip(bound.dtls_sockets);
    for (index, ((listeners, stream_listeners), dtls_sockets)) in per_shard.enumerate() {
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
        // One anchor for the core and the DTLS gate, as the shard re-anchors both.
        let (at, unix) = wall_anchor(Instant::now());
        let mut core = Server::new(cfg, shared.clone(), secrets, at, unix);
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
            config.front.clone(),
            backend,
        );
        let dtls = match (certs, dtls_sockets.is_empty()) {
            (Some(certs), false) => Some(dtls::Dtls::new(
                dtls_sockets,
                Gate::new(cookie_key, at, unix),
                certs.clone(),
                conn_limits.clone(),
                config.streams,
            )),
            _ => None,
        };
        let mut shard = shard::Shard::new(
            core,
            listeners,
            streams,
            dtls,
            opts,
            stop.clone(),
            offload.cloned(),
        )?;
        shard.set_busy_poll(config.busy_poll);
        let waker = shard.waker();
        let link = Arc::new(ShardLink::new(Box::new(move || {
            let _ = waker.wake();
        })));
        shard.set_link(link.clone());
        shard.set_usage(usage.clone());
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

/// What [`bind_streams`] bound: per shard its TCP then TLS listeners (the listener id is
/// the index) and its DTLS sockets; and the bound addresses, ephemeral ports resolved by
/// shard 0.
struct Bound {
    streams: Vec<Vec<StreamListener>>,
    dtls_sockets: Vec<Vec<mio::net::UdpSocket>>,
    tcp: Vec<SocketAddr>,
    tls: Vec<SocketAddr>,
    dtls: Vec<SocketAddr>,
}

/// How often shard 0 tries an ephemeral TLS port whose UDP side another socket holds.
const EPHEMERAL_TRIES: usize = 16;

/// Binds every shard's TCP and TLS listeners and, with DTLS on (`tls_on` and DTLS
/// addresses configured), a UDP socket on each TLS address for DTLS (RFC 7350: the same
/// port number). An ephemeral TLS port is chosen by the TCP bind; should its UDP side be
/// taken, shard 0 tries another.
fn bind_streams(config: &Config, shards: usize, tls_on: bool) -> io::Result<Bound> {
    let configured: Vec<(SocketAddr, bool)> = config
        .listeners
        .tcp
        .iter()
        .map(|a| (*a, false))
        .chain(config.listeners.tls.iter().map(|a| (*a, true)))
        .collect();
    let dtls_on = tls_on && !config.listeners.dtls.is_empty();
    let opts = SocketOptions::listener(config);
    let mut bound: Vec<SocketAddr> = Vec::new();
    let mut out = Bound {
        streams: Vec::with_capacity(shards),
        dtls_sockets: Vec::with_capacity(shards),
        tcp: Vec::new(),
        tls: Vec::new(),
        dtls: Vec::new(),
    };
    for shard in 0..shards {
        let mut listeners = Vec::new();
        let mut dtls_sockets = Vec::new();
        for (i, (configured, tls)) in configured.iter().enumerate() {
            let addr = bound.get(i).copied().unwrap_or(*configured);
            let kind = if *tls { "tls" } else { "tcp" };
            let with_dtls = *tls && dtls_on;
            if shard == 0 {
                socket::ensure_free(addr, socket::Proto::Tcp).map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot listen on {kind}: {e}"))
                })?;
                if with_dtls {
                    socket::ensure_free(addr, socket::Proto::Udp).map_err(|e| {
                        io::Error::new(e.kind(), format!("cannot listen on dtls: {e}"))
                    })?;
                }
            }
            let tries = if shard == 0 && with_dtls && addr.port() == 0 {
                EPHEMERAL_TRIES
            } else {
                1
            };
            let (socket, udp) = bind_pair(addr, with_dtls, tries, opts).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot listen on {kind} {addr}: {e}"))
            })?;
            if shard == 0 {
                let local = socket.local_addr()?;
                tracing::info!(addr = %local, shards, "listening ({kind})");
                if udp.is_some() {
                    tracing::info!(addr = %local, shards, "listening (dtls)");
                    out.dtls.push(local);
                }
                bound.push(local);
            }
            listeners.push(StreamListener { socket, tls: *tls });
            dtls_sockets.extend(udp);
        }
        out.streams.push(listeners);
        out.dtls_sockets.push(dtls_sockets);
    }
    out.tcp = bound[..config.listeners.tcp.len()].to_vec();
    out.tls = bound[config.listeners.tcp.len()..].to_vec();
    Ok(out)
}

/// A TCP listener on `addr` and, with `udp`, a UDP socket on the port it got; up to
/// `tries` ephemeral ports are tried when the UDP side of one is taken.
fn bind_pair(
    addr: SocketAddr,
    udp: bool,
    tries: usize,
    opts: SocketOptions,
) -> io::Result<(mio::net::TcpListener, Option<mio::net::UdpSocket>)> {
    let mut last = None;
    for _ in 0..tries.max(1) {
        let tcp = socket::bind_tcp(addr)?;
        if !udp {
            return Ok((tcp, None));
        }
        let local = tcp.local_addr()?;
        match socket::bind_udp(local, true, opts) {
            Ok(u) => {
                if local.ip().is_unspecified() {
                    // Answers leave from the address each client sent to.
                    ferroturn_udp::enable_destination_address(u.as_raw_fd(), local.is_ipv6())?;
                }
                return Ok((tcp, Some(u)));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::ErrorKind::AddrInUse.into()))
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
