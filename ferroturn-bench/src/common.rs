//! Shared by every subcommand: loopback-only target check, credentials, process CPU.

use std::net::SocketAddr;

/// Refuses any target outside loopback: these tools must never load a real network.
pub fn require_loopback(addr: SocketAddr) -> Result<(), String> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "{addr} is not a loopback address; load tools only target loopback"
        ))
    }
}

/// CPU seconds (user + system) used so far by process `pid`, from /proc/PID/stat.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ')'.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks_per_second())
}

/// Resident set size of process `pid` in bytes, from /proc/PID/status.
pub fn process_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// TURN REST credentials for `user` valid for a day, or the static pair given.
pub fn credentials(secret: Option<&str>, user: &str, password: Option<&str>) -> (String, String) {
    match (secret, password) {
        (_, Some(p)) => (user.to_owned(), p.to_owned()),
        (Some(s), None) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            ferroturn::credentials::rest_credentials(s, user, now + 86_400, ':')
        }
        (None, None) => (user.to_owned(), String::new()),
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (one socket per allocation or source
/// adds up fast); returns the limit now in force.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read or write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
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

/// CPU seconds (user + system) used so far by this whole process, at microsecond
/// resolution (getrusage).
pub fn own_cpu_seconds() -> f64 {
    // SAFETY: rusage is plain data, valid when zeroed; getrusage only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// CPU seconds used so far by the calling thread.
pub fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Asks for `bytes` of receive and send buffer (the kernel caps it at rmem_max and
/// wmem_max), so a load tool's own sockets are not where datagrams get dropped.
pub fn enlarge_buffers<S: std::os::fd::AsFd>(socket: &S, bytes: usize) {
    let s = socket2::SockRef::from(socket);
    // Best effort: the defaults still work, only with more drops under bursts.
    let _ = s.set_recv_buffer_size(bytes);
    let _ = s.set_send_buffer_size(bytes);
}

static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Turns SIGINT and SIGTERM into a flag that loops poll (they wake from their next
/// timeout), so a tool ends its run cleanly instead of dying mid-way.
pub fn stop_on_signals() -> &'static std::sync::atomic::AtomicBool {
    let handler = on_stop_signal as extern "C" fn(libc::c_int);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, handler as libc::sighandler_t) };
    }
    &STOP
}

/// A STUN request written by hand for load tools: stun-rs validates USERNAME, REALM and
/// NONCE through a grammar parser, which costs a generator more CPU per request than the
/// server under test spends. MESSAGE-INTEGRITY and FINGERPRINT come from the library.
pub struct RequestWriter {
    msg: Vec<u8>,
    txn: [u8; 12],
}

impl RequestWriter {
    pub fn new(method: u16, txn: [u8; 12]) -> Self {
        use ferroturn_core::proto::wire::{Class, MAGIC_COOKIE, message_type};
        let mut msg = Vec::with_capacity(192);
        msg.extend_from_slice(&message_type(method, Class::Request).to_be_bytes());
        msg.extend_from_slice(&[0, 0]);
        msg.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        msg.extend_from_slice(&txn);
        Self { msg, txn }
    }

    /// Appends attribute `kind` with `value`, padded to 4 bytes.
    pub fn attr(mut self, kind: u16, value: &[u8]) -> Self {
        let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
        self.msg.extend_from_slice(&kind.to_be_bytes());
        self.msg.extend_from_slice(&len.to_be_bytes());
        self.msg.extend_from_slice(value);
        let padded = ferroturn_core::proto::wire::padded(self.msg.len());
        self.msg.resize(padded, 0);
        self
    }

    /// Appends an XOR address attribute (XOR-PEER-ADDRESS and the like).
    pub fn xor_address(self, kind: u16, addr: SocketAddr) -> Self {
        let mut value = [0u8; 20];
        let txn = self.txn;
        let n = ferroturn_core::proto::wire::encode_xor_address(addr, &txn, &mut value);
        self.attr(kind, &value[..n.unwrap_or(0)])
    }

    /// Sets the length and appends MESSAGE-INTEGRITY (with `key`) and FINGERPRINT.
    pub fn finish(mut self, key: Option<&[u8]>) -> Vec<u8> {
        ferroturn_core::proto::integrity::seal(&mut self.msg, key, true);
        self.msg
    }
}

/// What a load tool reads from a response, borrowed from the datagram.
#[derive(Debug, Default)]
pub struct ResponseFields<'a> {
    pub success: bool,
    pub error_code: Option<u16>,
    pub realm: Option<&'a [u8]>,
    pub nonce: Option<&'a [u8]>,
}

/// Reads a success or error response (no integrity check: the tools trust the server);
/// `None` for anything else or a malformed message.
pub fn read_response(msg: &[u8]) -> Option<ResponseFields<'_>> {
    use ferroturn_core::proto::wire::{
        Class, HEADER_LEN, MAGIC_COOKIE, attr, be16, be32, padded, split_message_type,
    };
    if be32(msg, 4)? != MAGIC_COOKIE {
        return None;
    }
    let mut r = ResponseFields {
        success: match split_message_type(be16(msg, 0)?).1 {
            Class::Success => true,
            Class::Error => false,
            _ => return None,
        },
        ..ResponseFields::default()
    };
    let end = HEADER_LEN
        .checked_add(usize::from(be16(msg, 2)?))?
        .min(msg.len());
    let mut at = HEADER_LEN;
    while at + 4 <= end {
        let (kind, len) = (be16(msg, at)?, usize::from(be16(msg, at + 2)?));
        let value = msg.get(at + 4..at + 4 + len)?;
        match kind {
            attr::ERROR_CODE if value.len() >= 4 => {
                r.error_code = Some(u16::from(value[2] & 0x07) * 100 + u16::from(value[3]));
            }
            attr::REALM => r.realm = Some(value),
            attr::NONCE => r.nonce = Some(value),
            _ => {}
        }
        at += 4 + padded(len);
    }
    Some(r)
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
