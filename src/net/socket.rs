//! Socket construction: listener sockets (SO_REUSEPORT siblings, one per shard) and relay
//! sockets, with the configured buffer sizes.
//!
//! SO_REUSEPORT would also let a second ferroturn process (started by mistake, or while
//! an old one drains) bind the same address, and the kernel would then spread new
//! clients over both. So before the shards bind a configured port, a probe binds it
//! without SO_REUSEPORT: if another process holds it, starting stops with an error that
//! names the address and, where /proc shows it, the process.

use crate::config::{Config, defaults};
use mio::net::{TcpListener, UdpSocket};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

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

/// The transport a listener serves, for [`ensure_free`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
}

/// Fails if another socket already serves `addr` (a port of 0 is always free): a probe
/// socket without SO_REUSEPORT is bound and closed again.
pub fn ensure_free(addr: SocketAddr, proto: Proto) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let (kind, protocol) = match proto {
        Proto::Udp => (Type::DGRAM, Protocol::UDP),
        Proto::Tcp => (Type::STREAM, Protocol::TCP),
    };
    let probe = Socket::new(Domain::for_address(addr), kind, Some(protocol))?;
    if addr.is_ipv6() {
        probe.set_only_v6(true)?;
    }
    if proto == Proto::Tcp {
        // Connections of an earlier run in TIME_WAIT do not count.
        probe.set_reuse_address(true)?;
    }
    match probe.bind(&addr.into()) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            let who = owner::find(addr, proto).map_or_else(
                || "another process".to_owned(),
                |(pid, name)| format!("process {pid} ({name})"),
            );
            Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "{addr} is already served by {who}; stop it first (a second server on \
                     the same address would share its clients)"
                ),
            ))
        }
        other => other,
    }
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
            if shard == 0 {
                ensure_free(addr, Proto::Udp)
                    .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on udp: {e}")))?;
            }
            let socket = bind_udp(addr, true, opts).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot listen on udp {addr}: {e}"))
            })?;
            if addr.ip().is_unspecified() {
                // Answers leave from the address each client sent to (net/shard/endpoints.rs).
                ferroturn_udp::enable_destination_address(socket.as_raw_fd(), addr.is_ipv6())?;
            }
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

/// Who holds a port, from /proc: the socket's inode in /proc/net/{udp,tcp}{,6}, then the
/// process whose descriptors include it. Best effort: `None` when /proc does not say
/// (another user's process, or no /proc).
mod owner {
    use super::Proto;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

    /// TCP state LISTEN in /proc/net/tcp.
    const LISTEN: &str = "0A";

    pub fn find(addr: SocketAddr, proto: Proto) -> Option<(u32, String)> {
        let table = match (proto, addr.is_ipv4()) {
            (Proto::Udp, true) => "/proc/net/udp",
            (Proto::Udp, false) => "/proc/net/udp6",
            (Proto::Tcp, true) => "/proc/net/tcp",
            (Proto::Tcp, false) => "/proc/net/tcp6",
        };
        let text = std::fs::read_to_string(table).ok()?;
        let inode = text.lines().skip(1).find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (f.get(1)?, f.get(3)?, f.get(9)?);
            if proto == Proto::Tcp && *state != LISTEN {
                return None;
            }
            let held = parse_local(local)?;
            let overlaps =
                held.ip() == addr.ip() || held.ip().is_unspecified() || addr.ip().is_unspecified();
            (held.port() == addr.port() && overlaps && *inode != "0").then(|| inode.to_string())
        })?;
        let wanted = format!("socket:[{inode}]");
        for proc_entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Ok(pid) = proc_entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else {
                continue;
            };
            let holds = fds.flatten().any(|fd| {
                std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == wanted.as_str())
            });
            if holds {
                let name = std::fs::read_to_string(proc_entry.path().join("comm"))
                    .map(|c| c.trim().to_owned())
                    .unwrap_or_default();
                return Some((pid, name));
            }
        }
        None
    }

    /// `0100007F:0D96` (IPv4) or 32 hex digits and a port (IPv6): each 32-bit word as
    /// the kernel holds it in memory, printed in hex.
    fn parse_local(text: &str) -> Option<SocketAddr> {
        let (ip, port) = text.split_once(':')?;
        let port = u16::from_str_radix(port, 16).ok()?;
        let word = |i: usize| -> Option<[u8; 4]> {
            let w = u32::from_str_radix(ip.get(8 * i..8 * i + 8)?, 16).ok()?;
            Some(w.to_ne_bytes())
        };
        let ip = match ip.len() {
            8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
            32 => {
                let mut b = [0u8; 16];
                for i in 0..4 {
                    b[4 * i..4 * i + 4].copy_from_slice(&word(i)?);
                }
                IpAddr::V6(Ipv6Addr::from(b))
            }
            _ => return None,
        };
        Some(SocketAddr::new(ip, port))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn finds_this_process_holding_a_port() {
            for (local, proto) in [
                ("127.0.0.1:0", Proto::Udp),
                ("[::1]:0", Proto::Udp),
                ("127.0.0.1:0", Proto::Tcp),
            ] {
                let udp;
                let tcp;
                let addr = if proto == Proto::Udp {
                    udp = std::net::UdpSocket::bind(local).unwrap();
                    udp.local_addr().unwrap()
                } else {
                    tcp = std::net::TcpListener::bind(local).unwrap();
                    tcp.local_addr().unwrap()
                };
                let (pid, _) = find(addr, proto).expect("found in /proc");
                assert_eq!(pid, std::process::id(), "{addr}");
                assert!(super::super::ensure_free(addr, proto).is_err());
            }
        }

        #[test]
        fn reads_the_kernels_spelling() {
            let v4 = "127.0.0.1:3478".parse::<SocketAddr>().unwrap();
            let spelled = format!("{:08X}:{:04X}", u32::from_ne_bytes([127, 0, 0, 1]), 3478);
            assert_eq!(parse_local(&spelled), Some(v4));
            assert_eq!(parse_local("zz:1"), None);
        }
    }
}
