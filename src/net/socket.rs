//! Socket construction: listener sockets (SO_REUSEPORT siblings, one per shard) and relay
//! sockets, with the configured buffer sizes.

use crate::config::{Config, defaults};
use mio::net::{TcpListener, UdpSocket};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;

/// Socket options applied to every listener and relay socket.
#[derive(Clone, Copy, Debug, Default)]
pub struct SocketOptions {
    pub recv_buffer: Option<usize>,
    pub send_buffer: Option<usize>,
}

impl SocketOptions {
    /// Relay sockets: the configured sizes, else the OS defaults.
    pub fn relay(config: &Config) -> Self {
        Self {
            recv_buffer: config.socket_recv_buffer_size,
            send_buffer: config.socket_send_buffer_size,
        }
    }

    /// Listener sockets: every client of a shard shares one, so they get room for
    /// bursts unless sizes are configured.
    pub fn listener(config: &Config) -> Self {
        Self {
            recv_buffer: config
                .socket_recv_buffer_size
                .or(Some(defaults::LISTENER_BUFFER)),
            send_buffer: config
                .socket_send_buffer_size
                .or(Some(defaults::LISTENER_BUFFER)),
        }
    }
}

/// Creates a non-blocking UDP socket bound to `addr`. IPv6 sockets are IPv6-only, so
/// `::` and `0.0.0.0` can both be bound; `reuse_port` lets each shard bind the listening
/// port, the kernel spreading clients across them by their address.
pub fn bind_udp(addr: SocketAddr, reuse_port: bool, opts: SocketOptions) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if let Some(n) = opts.recv_buffer {
        socket.set_recv_buffer_size(n)?;
    }
    if let Some(n) = opts.send_buffer {
        socket.set_send_buffer_size(n)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(UdpSocket::from_std(socket.into()))
}

/// Creates a non-blocking TCP listener on `addr`, SO_REUSEPORT so every shard has one and
/// the kernel spreads connections across them.
pub fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// Every shard's UDP listener sockets (one per configured address), and the bound
/// addresses: shard 0 resolves ephemeral ports, the others bind the same addresses.
pub fn bind_udp_listeners(
    config: &Config,
    shards: usize,
) -> io::Result<(Vec<Vec<UdpSocket>>, Vec<SocketAddr>)> {
    let opts = SocketOptions::listener(config);
    let mut bound: Vec<SocketAddr> = Vec::new();
    let mut per_shard = Vec::with_capacity(shards);
    for shard in 0..shards {
        let mut sockets = Vec::new();
        for (i, configured) in config.listeners.udp.iter().enumerate() {
            let addr = bound.get(i).copied().unwrap_or(*configured);
            let socket = bind_udp(addr, true, opts).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot listen on udp {addr}: {e}"))
            })?;
            if shard == 0 {
                bound.push(socket.local_addr()?);
            }
            sockets.push(socket);
        }
        per_shard.push(sockets);
    }
    for addr in &bound {
        tracing::info!(%addr, shards, "listening (udp)");
    }
    Ok((per_shard, bound))
}
