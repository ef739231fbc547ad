//! `external-ip = "auto"`: the binary learns its relays' public address from a STUN
//! server and advertises it in XOR-RELAYED-ADDRESS.
//!
//! The STUN server is a second ferroturn in a network namespace this test makes (`ip
//! netns add`, a veth pair with private addresses), so the address it sees, and answers
//! with, is the host end of the veth, not loopback. Moving that address is a change of
//! the public address, which the server under test picks up on its next asking and logs.
//! It needs root (CI runs as root); without root it says so and returns. The namespace
//! and the veth pair are removed by a guard, pass or fail.

use crate::common::process::{BIN, ChildGuard, ServerProcess};
use crate::common::{PROCESS_WAIT, REALM, SECRET, rest_credentials};
use ferroturn::client::TurnClient;
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the server under test may take to notice a change: two intervals of one
/// second, each asking with a 2-second timeout, with room for a loaded machine.
const CHANGE_WAIT: Duration = Duration::from_secs(20);

/// Runs `ip args`; panics with its stderr if it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "ip {}: {e} (scripts/install-test-deps.sh installs iproute2)",
                args.join(" ")
            )
        });
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with one end of a veth pair in it; both removed when dropped.
struct Netns {
    name: String,
    host_end: String,
}

impl Netns {
    /// Namespace `ft-ext-<pid>`, veth `fte<pid>h` (here) and `fte<pid>n` (there), the
    /// host end `subnet.1/24` and the far end `subnet.2/24`, both up.
    fn new(subnet: &str) -> Self {
        let id = std::process::id() % 100_000;
        let ns = Self {
            name: format!("ft-ext-{id}"),
            host_end: format!("fte{id}h"),
        };
        // The guard exists before anything is made, so a failure half way cleans up.
        let far_end = format!("fte{id}n");
        ip(&["netns", "add", &ns.name]);
        ip(&[
            "link",
            "add",
            &ns.host_end,
            "type",
            "veth",
            "peer",
            "name",
            &far_end,
        ]);
        ip(&["link", "set", &far_end, "netns", &ns.name]);
        ip(&[
            "addr",
            "add",
            &format!("{subnet}.1/24"),
            "dev",
            &ns.host_end,
        ]);
        ip(&["link", "set", &ns.host_end, "up"]);
        ns.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{subnet}.2/24"),
            "dev",
            &far_end,
        ]);
        ns.exec(&["ip", "link", "set", &far_end, "up"]);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Runs `args` in the namespace; panics if it fails.
    fn exec(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name];
        all.extend_from_slice(args);
        ip(&all);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the far end, and with it the pair; the link
        // delete covers a namespace that was never made.
        let quiet = |args: &[&str]| {
            let _ = Command::new("ip")
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        quiet(&["netns", "del", &self.name]);
        quiet(&["link", "del", &self.host_end]);
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) takes nothing and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The public address seen from `stun`, asked from this host, once it answers.
async fn reflexive(stun: SocketAddr) -> IpAddr {
    let deadline = Instant::now() + PROCESS_WAIT;
    loop {
        let mut c = TurnClient::new(stun, "", "").await.expect("a socket");
        c.request_timeout = Duration::from_millis(500);
        match c.binding().await {
            Ok(mapped) => return mapped.ip(),
            Err(e) => assert!(
                Instant::now() < deadline,
                "the STUN server in the namespace does not answer: {e}"
            ),
        }
    }
}

/// A client of `server` with REST credentials: its allocation's XOR-RELAYED-ADDRESS.
async fn allocate(server: SocketAddr) -> (TurnClient, SocketAddr) {
    let (u, p) = rest_credentials(SECRET, "alice", Duration::from_secs(600));
    let mut c = TurnClient::new(server, &u, &p).await.expect("a socket");
    let relayed = c.allocate().await.expect("an allocation");
    (c, relayed)
}

/// The server under test: loopback, two relay threads, its relays' address learned
/// from `stun_servers` every second.
fn server_args(stun_servers: &[String]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--listening-ip",
        "127.0.0.1",
        "--listening-port",
        "0",
        "--realm",
        REALM,
        "--static-auth-secret",
        SECRET,
        "--no-tcp",
        "--relay-threads",
        "2",
        "--external-ip",
        "auto",
        "--external-ip-interval",
        "1",
    ]
    .map(String::from)
    .to_vec();
    for s in stun_servers {
        args.extend(["--external-ip-stun-servers".to_owned(), s.clone()]);
    }
    args
}

#[tokio::test]
async fn auto_external_ip_is_learned_from_a_stun_server_and_follows_a_change() {
    if !is_root() {
        println!("external-ip test skipped: creating a network namespace needs root");
        return;
    }
    let subnet = format!("10.213.{}", std::process::id() % 250 + 1);
    let (host, moved, far) = (
        format!("{subnet}.1"),
        format!("{subnet}.3"),
        format!("{subnet}.2"),
    );
    let ns = Netns::new(&subnet);

    // A second ferroturn in the namespace: the STUN server.
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &ns.name, BIN])
        .args(["--listening-ip", &far, "--listening-port", "3478"])
        .args([
            "--static-auth-secret",
            "other",
            "--no-tcp",
            "--relay-threads",
            "1",
        ])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _stun = ChildGuard::spawn(&mut command, "iproute2 and the built binary");
    let stun: SocketAddr = format!("{far}:3478").parse().unwrap();
    assert_eq!(
        reflexive(stun).await.to_string(),
        host,
        "seen through the veth"
    );

    let args = server_args(&[stun.to_string()]);
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    let mut server = ServerProcess::start_logged(&args, PROCESS_WAIT);
    // Learned at start, before the server listens.
    let line = server
        .log_line(&["public address learned", &host], PROCESS_WAIT)
        .await;
    println!("{line}");
    let (mut first, relayed) = allocate(server.addr).await;
    assert_eq!(relayed.ip().to_string(), host, "XOR-RELAYED-ADDRESS");

    // The public address moves: the host end of the veth gets another address.
    ip(&["addr", "del", &format!("{host}/24"), "dev", &ns.host_end]);
    ip(&["addr", "add", &format!("{moved}/24"), "dev", &ns.host_end]);
    let line = server
        .log_line(
            &[
                "public address changed",
                &format!("old={host}"),
                &format!("new={moved}"),
            ],
            CHANGE_WAIT,
        )
        .await;
    println!("{line}");
    let (_second, relayed) = allocate(server.addr).await;
    assert_eq!(
        relayed.ip().to_string(),
        moved,
        "new allocations get the new address"
    );
    // The allocation made before the change runs on.
    first
        .refresh(600)
        .await
        .expect("the first allocation is still there");
}

/// STUN servers that do not answer (a silent socket) or do not resolve: the server
/// starts anyway, within the servers' timeouts, says so in its log, and advertises its
/// relays as they are bound. Needs no root.
#[tokio::test]
async fn unreachable_stun_servers_leave_the_relays_unmapped_with_an_error() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let args = server_args(&[
        silent.local_addr().unwrap().to_string(),
        "stun.invalid:3478".to_owned(),
    ]);
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    let mut server = ServerProcess::start_logged(&args, PROCESS_WAIT);
    server
        .log_line(
            &["ERROR", "no STUN server answered", "unmapped"],
            PROCESS_WAIT,
        )
        .await;
    let (_c, relayed) = allocate(server.addr).await;
    assert_eq!(relayed.ip().to_string(), "127.0.0.1");
}
