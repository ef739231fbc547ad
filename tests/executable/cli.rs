//! The `ferroturn` command itself: check-config, credentials, and a server run from flags
//! alone, answered over UDP.

use crate::common::process::{BIN, ChildGuard, ServerProcess, TempDir};
use crate::common::{PROCESS_WAIT, unix_now};
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn check_config_accepts_the_shipped_example() {
    let out = Command::new(BIN)
        .args(["check-config", &repo("turnserver.toml.example")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
}

#[test]
fn check_config_names_an_unknown_key() {
    let dir = TempDir::new("cli");
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "static-auth-secret = [\"s\"]\nlistening-ip = [\"127.0.0.1\"]\nlistening-prot = 3478\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    drop(dir);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("listening-prot"), "{stderr}");
}

#[test]
fn credentials_prints_a_rest_pair_the_server_accepts() {
    let out = Command::new(BIN)
        .args([
            "credentials",
            "--secret",
            "s3cret",
            "--user",
            "alice",
            "--ttl",
            "600",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .to_owned()
    };
    let username = field("username:");
    let password = field("password:");
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, "alice");
    let now = unix_now();
    let expiry: u64 = expiry.parse().unwrap();
    assert!(
        expiry > now + 500 && expiry <= now + 601,
        "expiry {expiry} vs now {now}"
    );
    assert_eq!(
        password,
        ferroturn::credentials::rest_password(b"s3cret", &username)
    );
}

#[test]
fn the_server_runs_from_flags_alone_and_answers_binding() {
    let args = [
        "--listening-ip",
        "127.0.0.1",
        "--listening-port",
        "0",
        "--realm",
        "example.org",
        "--static-auth-secret",
        "s3cret",
        "--allowed-peer-ip",
        "127.0.0.1",
    ]
    .map(std::ffi::OsStr::new);
    // Killed when the test ends, pass or fail.
    let server = ServerProcess::start(&args, PROCESS_WAIT);
    let addr = server.addr;
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let request =
        ferroturn::client::codec::encode_request(0x001, false, &[5; 12], &[], None).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 1500];
    let response = loop {
        assert!(Instant::now() < deadline, "no Binding response");
        socket.send_to(&request, addr).unwrap();
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            break ferroturn::client::codec::decode_response(&buf[..n]).expect("decodes");
        }
    };
    assert_eq!(response.xor_mapped, Some(socket.local_addr().unwrap()));
}

/// SO_REUSEPORT lets every shard bind the port, but a second server process on the same
/// address would silently share the first one's clients: it refuses to start instead,
/// naming the process that holds the address, for UDP and for TCP alike.
#[test]
fn a_second_server_on_the_same_address_refuses_to_start() {
    let base = [
        "--listening-ip",
        "127.0.0.1",
        "--static-auth-secret",
        "s3cret",
    ];
    let mut args = base.to_vec();
    args.extend(["--listening-port", "0", "--relay-threads", "2"]);
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    let first = ServerProcess::start_with_tcp(&args, PROCESS_WAIT);
    let (udp, tcp) = (first.addr, first.tcp.expect("a TCP listener"));
    let pid = first.child.id();
    for (only, port) in [("--no-tcp", udp.port()), ("--no-udp", tcp.port())] {
        let port = port.to_string();
        let mut command = Command::new(BIN);
        command
            .args(base)
            .args(["--listening-port", &port, only])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut second = ChildGuard::spawn(&mut command, "cargo builds it for the tests");
        let (stdout, stderr) = (second.stdout_text(), second.stderr_text());
        // It must exit by itself: one still running after the wait started serving.
        let status = second
            .exit_within_blocking(PROCESS_WAIT)
            .unwrap_or_else(|| panic!("{only}: the second server started"));
        let text = stdout.text_blocking() + &stderr.text_blocking();
        assert!(!status.success(), "{only}: {text}");
        let expected = format!("127.0.0.1:{port} is already served by process {pid}");
        assert!(text.contains(&expected), "{only}: {text}");
    }
    // The first server still answers.
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let request =
        ferroturn::client::codec::encode_request(0x001, false, &[6; 12], &[], None).unwrap();
    let mut buf = [0u8; 1500];
    let answered = (0..20).any(|_| {
        socket.send_to(&request, udp).unwrap();
        socket.recv_from(&mut buf).is_ok()
    });
    assert!(answered, "the first server stopped answering");
}
