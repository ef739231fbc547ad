//! Load sockets: targets refused unless on loopback (or in a network namespace of their
//! own), the loopback addresses clients
//! come from, and the UDP sockets and TCP connections bound to them, with errors that
//! name the limit that ran out.

use crate::process::raise_nofile_limit;
use std::net::SocketAddr;

/// Refuses any target outside loopback, unless this process runs in a network
/// namespace of its own with no way out (one a benchmark script made, joined to another
/// by a veth pair): these tools must never load a real network.
pub fn require_loopback(addr: SocketAddr) -> Result<(), String> {
    if addr.ip().is_loopback() || in_own_network_namespace() {
        Ok(())
    } else {
        Err(format!(
            "{addr} is not a loopback address; load tools only target loopback \
             (or run in a network namespace of their own)"
        ))
    }
}

/// Whether this process runs in a named network namespace (one `ip netns add` made,
/// bound under /run/netns) that has no default route: a test bed of namespaces joined
/// by veth pairs, with no way out to a real network.
fn in_own_network_namespace() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(own) = std::fs::metadata("/proc/self/ns/net") else {
        return false;
    };
    let named = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::metadata(e.path()).ok())
        .any(|m| (m.dev(), m.ino()) == (own.dev(), own.ino()));
    named && !has_default_route()
}

/// A default route in this namespace, IPv4 or IPv6 (the kernel's unreachable IPv6
/// entries on lo aside); unreadable tables count as one.
fn has_default_route() -> bool {
    const RTF_REJECT: u32 = 0x0200;
    let (Ok(v4), Ok(v6)) = (
        std::fs::read_to_string("/proc/net/route"),
        std::fs::read_to_string("/proc/net/ipv6_route"),
    ) else {
        return true;
    };
    let v4_default = v4.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&"00000000") && f.get(7) == Some(&"00000000")
    });
    let v6_default = v6.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let flags = f
            .get(8)
            .and_then(|x| u32::from_str_radix(x, 16).ok())
            .unwrap_or(0);
        f.first().is_some_and(|d| d.bytes().all(|c| c == b'0'))
            && f.get(1) == Some(&"00")
            && flags & RTF_REJECT == 0
    });
    v4_default || v6_default
}

/// The local address load sockets bind to: a loopback address other than the server's,
/// so that the generator's ephemeral ports never take a port from the server's relay
/// range (UDP sockets on different addresses do not conflict).
pub fn default_client_ip(server: SocketAddr) -> std::net::IpAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match server.ip() {
        IpAddr::V4(ip) if ip == Ipv4Addr::new(127, 0, 0, 2) => Ipv4Addr::new(127, 0, 0, 3).into(),
        IpAddr::V4(_) => Ipv4Addr::new(127, 0, 0, 2).into(),
        IpAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
    }
}

/// A non-blocking UDP socket on `ip`, an ephemeral port; the error says which limit ran
/// out, given how many sockets this process already holds (`open`).
pub fn bind_load_socket(ip: std::net::IpAddr, open: usize) -> Result<mio::net::UdpSocket, String> {
    mio::net::UdpSocket::bind(SocketAddr::new(ip, 0)).map_err(|e| {
        let why = match e.raw_os_error() {
            Some(libc::EMFILE) => format!(
                "out of file descriptors (RLIMIT_NOFILE is {}; the hard limit can only be \
                 raised with CAP_SYS_RESOURCE: `ulimit -Hn` as root, or LimitNOFILE= under \
                 systemd); the server needs as many descriptors for its relay sockets",
                raise_nofile_limit()
            ),
            Some(libc::ENFILE) => "the system-wide file table is full (fs.file-max)".into(),
            Some(libc::EADDRINUSE | libc::EAGAIN) => format!(
                "no free local UDP port on {ip} (net.ipv4.ip_local_port_range); \
                 bind to another loopback address with --bind"
            ),
            Some(libc::ENOBUFS | libc::ENOMEM) => "the kernel is out of socket memory".into(),
            _ => "unexpected error".into(),
        };
        format!(
            "cannot open UDP socket number {} on {ip}: {e}: {why}",
            open + 1
        )
    })
}

/// A TCP connection from `ip` (an ephemeral port) to `server`, blocking, Nagle off (each
/// request and ChannelData message leaves at once); the error says which limit ran out,
/// given how many connections this process already holds (`open`).
pub fn connect_load_stream(
    ip: std::net::IpAddr,
    server: SocketAddr,
    open: usize,
) -> Result<std::net::TcpStream, String> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let fail = |what: &str, e: std::io::Error| {
        let why = match e.raw_os_error() {
            Some(libc::EMFILE) => format!(
                "out of file descriptors (RLIMIT_NOFILE is {})",
                raise_nofile_limit()
            ),
            Some(libc::EADDRINUSE | libc::EADDRNOTAVAIL) => format!(
                "no free local TCP port on {ip} toward {server}; \
                 use another loopback address with --bind"
            ),
            Some(libc::ECONNREFUSED) => format!("nothing listens on TCP {server}"),
            Some(libc::ETIMEDOUT) => "the server did not accept in time".into(),
            _ => "unexpected error".into(),
        };
        format!("TCP connection number {} {what}: {e}: {why}", open + 1)
    };
    let socket = Socket::new(
        Domain::for_address(server),
        Type::STREAM,
        Some(Protocol::TCP),
    )
    .map_err(|e| fail("(socket)", e))?;
    socket
        .bind(&SockAddr::from(SocketAddr::new(ip, 0)))
        .map_err(|e| fail(&format!("(bind {ip})"), e))?;
    socket
        .connect_timeout(&SockAddr::from(server), std::time::Duration::from_secs(5))
        .map_err(|e| fail(&format!("to {server}"), e))?;
    socket
        .set_tcp_nodelay(true)
        .map_err(|e| fail("(TCP_NODELAY)", e))?;
    Ok(socket.into())
}

/// Asks for `bytes` of receive and send buffer (the kernel caps it at rmem_max and
/// wmem_max), so a load tool's own sockets are not where datagrams get dropped.
pub fn enlarge_buffers<S: std::os::fd::AsFd>(socket: &S, bytes: usize) {
    let s = socket2::SockRef::from(socket);
    // Best effort: the defaults still work, only with more drops under bursts.
    let _ = s.set_recv_buffer_size(bytes);
    let _ = s.set_send_buffer_size(bytes);
}

/// `count` consecutive loopback addresses from `first` (IPv4; IPv6 has only ::1), none of
/// them the server's: load tools spread their sockets over them so that per-source-IP
/// limits see many clients, as they would in production.
pub fn loopback_pool(
    first: std::net::IpAddr,
    count: u32,
    server: SocketAddr,
) -> Result<Vec<std::net::IpAddr>, String> {
    use std::net::{IpAddr, Ipv4Addr};
    let pool: Vec<IpAddr> = match first {
        IpAddr::V6(_) if count == 1 => vec![first],
        IpAddr::V6(_) => return Err("IPv6 loopback is one address: use --source-ips 1".into()),
        IpAddr::V4(v4) => (0..count)
            .map(|i| {
                u32::from(v4)
                    .checked_add(i)
                    .map(|a| IpAddr::V4(Ipv4Addr::from(a)))
            })
            .collect::<Option<Vec<_>>>()
            .ok_or("the source address range overflows")?,
    };
    if let Some(bad) = pool.iter().find(|ip| !ip.is_loopback()) {
        return Err(format!("source address {bad} is outside 127.0.0.0/8"));
    }
    if pool.contains(&server.ip()) {
        return Err(format!(
            "the source addresses include the server's {}: choose another --bind",
            server.ip()
        ));
    }
    Ok(pool)
}
