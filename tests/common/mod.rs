//! What the test binaries share: a real server in this process on 127.0.0.1:0 and the
//! one base configuration it starts from, the deadlines every test waits by, metrics
//! read once the shards have published them, whether the kernel fast path can run here,
//! TURN REST credentials and clients, a UDP echo peer, and small readers (`addr`,
//! `code`, `sha256_hex`). Submodules: `process` (child processes, temporary
//! directories), `adversary` (raw STUN over UDP), `tls` (a private CA), `http` (a raw
//! HTTP/1.1 client), `webhook` (a usage webhook receiver), and
//! `core_harness` (the sans-IO core in virtual time, with its `wire` helpers).
#![allow(dead_code)]

pub mod adversary;
pub mod core_harness;
pub mod dtls_wire;
pub mod http;
pub mod process;
pub mod tls;
pub mod webhook;

#[allow(unused_imports)]
pub use core_harness::wire::{self, addr, ip};

use ferroturn::client::{ClientError, TurnClient};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const REALM: &str = "ferroturn.test";
pub const SECRET: &str = "test-secret";

// ---------------------------------------------------------------------------------
// Deadlines: one set for every test, sized for loopback on a two-core machine that runs
// two tests at a time.

/// How long something that should arrive may take: a response, a relayed datagram.
pub const WAIT: Duration = Duration::from_secs(3);
/// How long a test listens to show that nothing arrives.
pub const QUIET: Duration = Duration::from_millis(300);
/// How long a change may take to show in the metrics (each shard publishes its counters
/// once a second).
pub const METRICS_WAIT: Duration = Duration::from_secs(6);
/// How long a ferroturn process may take to start listening, to reload or to exit.
pub const PROCESS_WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------
// The base configuration.

/// The base configuration with [`SECRET`]; see [`config_toml`].
pub fn test_config_toml(extra: &str) -> String {
    config_toml(SECRET, extra)
}

/// The configuration every test server starts from: a loopback listener on an ephemeral
/// port, [`REALM`], `secret` as the one REST secret, loopback peers allowed, relay ports
/// 40000-60000. `extra` is TOML appended after it; a top-level key that `extra` sets
/// replaces the base's (`allowed-peer-ip = []` brings back the default peer policy).
pub fn config_toml(secret: &str, extra: &str) -> String {
    let base = [
        ("listening-ip", "[\"127.0.0.1\"]".to_owned()),
        ("listening-port", "0".to_owned()),
        ("realm", format!("\"{REALM}\"")),
        ("static-auth-secret", format!("[\"{secret}\"]")),
        ("allowed-peer-ip", "[\"127.0.0.1\"]".to_owned()),
        ("min-port", "40000".to_owned()),
        ("max-port", "60000".to_owned()),
    ];
    let replaced = top_level_keys(extra);
    let mut toml = String::new();
    for (key, value) in base {
        if !replaced.contains(&key) {
            toml.push_str(&format!("{key} = {value}\n"));
        }
    }
    toml.push_str(extra);
    toml.push('\n');
    toml
}

/// The keys `toml` sets before its first table header.
fn top_level_keys(toml: &str) -> Vec<&str> {
    toml.lines()
        .map(str::trim)
        .take_while(|line| !line.starts_with('['))
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(key, _)| key.trim())
        .collect()
}

// ---------------------------------------------------------------------------------
// A server in this process, and clients of it.

/// A ferroturn server running in this process, stopped when dropped.
pub struct TestServer {
    /// The UDP listener's bound address (127.0.0.1:<ephemeral>).
    pub addr: SocketAddr,
    pub handle: ferroturn::ServerHandle,
}

/// Starts a server with the base configuration plus `extra` TOML keys.
pub async fn start_server(extra: &str) -> TestServer {
    start_server_raw(&test_config_toml(extra)).await
}

/// Starts a server with exactly this TOML configuration.
pub async fn start_server_raw(toml: &str) -> TestServer {
    let config =
        ferroturn::config::Config::from_toml_str(toml).expect("test configuration is valid");
    let handle = ferroturn::start(config).await.expect("server starts");
    let addr = handle.udp_addrs()[0];
    TestServer { addr, handle }
}

/// Polls the metrics until `settled` holds for them, and returns them; panics after
/// [`METRICS_WAIT`]. Each shard publishes its counters once a second, all in one
/// snapshot: choose a condition that becomes true in a shard's counters only after the
/// traffic of interest (a deletion that follows it, say), so that a zero read from the
/// result is a real zero, not a count that was not published yet.
pub async fn published_metrics(
    server: &TestServer,
    what: &str,
    settled: impl Fn(&ferroturn::Metrics) -> bool,
) -> ferroturn::Metrics {
    let deadline = std::time::Instant::now() + METRICS_WAIT;
    loop {
        let metrics = server.handle.metrics();
        if settled(&metrics) {
            return metrics;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not published within {METRICS_WAIT:?}: {:?}",
            metrics.stats
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// TURN REST credentials valid for `ttl` from now: (username, password).
pub fn rest_credentials(secret: &str, user: &str, ttl: Duration) -> (String, String) {
    let expiry = Duration::from_secs(unix_now()) + ttl;
    ferroturn::credentials::rest_credentials(secret, user, expiry.as_secs(), ':')
}

/// A TURN client with valid REST credentials for `user`.
pub async fn client(server: &TestServer, user: &str) -> TurnClient {
    client_with(server, SECRET, user).await
}

/// A TURN client for `user` with REST credentials signed by `secret`.
pub async fn client_with(server: &TestServer, secret: &str, user: &str) -> TurnClient {
    let (u, p) = rest_credentials(secret, user, Duration::from_secs(600));
    TurnClient::new(server.addr, &u, &p)
        .await
        .expect("client socket")
}

/// The ERROR-CODE of a request that must have failed with an error response.
pub fn code<T: std::fmt::Debug>(r: Result<T, ClientError>) -> u16 {
    match r {
        Err(ClientError::Error(code)) => code,
        other => panic!("expected an error response, got {other:?}"),
    }
}

/// A UDP echo peer on 127.0.0.1 that sends every datagram back; stops when dropped.
pub struct EchoPeer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EchoPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn echo_peer() -> EchoPeer {
    echo_peer_on("127.0.0.1:0").await
}

/// A UDP echo peer bound to `local` (an IP and port 0, say).
pub async fn echo_peer_on(local: &str) -> EchoPeer {
    let socket = tokio::net::UdpSocket::bind(local)
        .await
        .expect("bind echo peer");
    let addr = socket.local_addr().expect("echo peer address");
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    EchoPeer { addr, task }
}

/// A TCP echo peer on 127.0.0.1 (RFC 6062 tests): it sends every connection's bytes back
/// on that connection and reports where each connection came from; stops when dropped.
pub struct TcpEchoPeer {
    pub addr: SocketAddr,
    /// The remote address of every connection accepted, in order.
    pub accepted: tokio::sync::mpsc::UnboundedReceiver<SocketAddr>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TcpEchoPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn tcp_echo_peer() -> TcpEchoPeer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind TCP echo peer");
    let addr = listener.local_addr().expect("TCP echo peer address");
    let (tx, accepted) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Ok((mut s, from)) = listener.accept().await {
            let _ = tx.send(from);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    TcpEchoPeer {
        addr,
        accepted,
        task,
    }
}

// ---------------------------------------------------------------------------------
// The kernel fast path.

/// Why a server with `kernel-offload = "on"` cannot start on this machine, if it cannot:
/// not root, no bpf(2) here (a container's seccomp filter, say), or a binary built without
/// the eBPF program on a machine without clang. A binary without the program where clang
/// is installed is not a reason: the build should have had it, and the server's start
/// fails the test. Tests that need the fast path print
/// `kernel offload test skipped: <why>` and return.
pub fn kernel_offload_unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (BPF, TC on lo)".into());
    }
    if !bpf_syscall_works() {
        return Some("the bpf system call is not permitted here".into());
    }
    if !ferroturn::offload::built_with_program() && !clang_installed() {
        return Some("built without the eBPF program (no clang on this machine)".into());
    }
    None
}

/// Once `deletions` allocations have been deleted and published (each in the shard
/// that relayed its user-space traffic, which publishes all its counters at once, so
/// the user-space counters are final): what the kernel relayed, the channels it still
/// holds, and what user space relayed over UDP, client to peer and peer to client.
pub async fn kernel_and_user_after_deletions(
    server: &TestServer,
    what: &str,
    deletions: u64,
) -> (
    ferroturn::offload::OffloadTotals,
    u64,
    [ferroturn_core::server::stats::Traffic; 2],
) {
    let metrics =
        published_metrics(server, what, |m| m.stats.allocations_deleted >= deletions).await;
    let (kernel, installed) = metrics
        .offload
        .expect("kernel-offload = \"on\" and the server started, so the fast path runs");
    (kernel, installed, metrics.stats.relayed[0])
}

/// After a run without limits whose allocations have all been deleted: the kernel
/// dropped nothing and holds no channel any more.
pub fn assert_kernel_undisturbed(kernel: &ferroturn::offload::OffloadTotals, installed: u64) {
    assert_eq!(
        (
            kernel.up.dropped_rate + kernel.down.dropped_rate,
            kernel.up.dropped_capacity + kernel.down.dropped_capacity,
            kernel.dropped_errors
        ),
        (0, 0, 0),
        "the kernel dropped datagrams with no limit configured: {kernel:?}"
    );
    assert_eq!(
        installed, 0,
        "deleting the allocations should have taken their channels out of the kernel"
    );
}

/// Creates a one-element array map and closes it: EPERM or ENOSYS mean no BPF here.
pub fn bpf_syscall_works() -> bool {
    #[repr(C)]
    struct MapCreate {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        rest: [u8; 112],
    }
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    let attr = MapCreate {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        value_size: 4,
        max_entries: 1,
        rest: [0; 112],
    };
    // SAFETY: BPF_MAP_CREATE reads `size_of::<MapCreate>()` bytes of `attr`.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            &attr as *const MapCreate,
            size_of::<MapCreate>(),
        )
    };
    if fd < 0 {
        return false;
    }
    // SAFETY: closing the descriptor the kernel just gave us.
    unsafe { libc::close(fd as i32) };
    true
}

/// Whether clang runs here (build.rs builds the eBPF program with it).
pub fn clang_installed() -> bool {
    std::process::Command::new("clang")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

// ---------------------------------------------------------------------------------
// Small readers.

/// The wall clock in unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// An API key as configured: the lowercase hex SHA-256 of the token.
pub fn sha256_hex(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
