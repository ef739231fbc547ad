//! The `ferroturn` command itself: check-config, credentials, and a server run from flags
//! alone, answered over UDP.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ferroturn");
/// How long a process gets to start or to give up.
const WAIT: Duration = Duration::from_secs(20);

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
    let dir = std::env::temp_dir().join(format!("ferroturn-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
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
    let _ = std::fs::remove_dir_all(&dir);
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
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
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

/// Kills the server when the test ends, pass or fail.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary with `args` on 127.0.0.1; returns it with its bound UDP and TCP
/// addresses, read from its "listening (udp|tcp) addr=..." log lines.
fn spawn_server(args: &[&str]) -> (Server, SocketAddr, SocketAddr) {
    let child = Command::new(BIN)
        .args([
            "--listening-ip",
            "127.0.0.1",
            "--static-auth-secret",
            "s3cret",
        ])
        .args(args)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = Server(child);
    let stdout = server.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let kind = if line.contains("listening (udp)") {
                "udp"
            } else if line.contains("listening (tcp)") {
                "tcp"
            } else {
                continue;
            };
            if let Some(addr) = line.split("addr=").nth(1) {
                let addr = addr
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .trim_matches(|c: char| !c.is_ascii_graphic());
                let _ = tx.send((kind, addr.to_owned()));
            }
        }
    });
    let (mut udp, mut tcp) = (None, None);
    while udp.is_none() || tcp.is_none() {
        let (kind, addr) = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("listening lines for udp and tcp");
        let addr: SocketAddr = addr.parse().expect("address");
        if kind == "udp" {
            udp = Some(addr);
        } else {
            tcp = Some(addr);
        }
    }
    (server, udp.unwrap(), tcp.unwrap())
}

#[test]
fn the_server_runs_from_flags_alone_and_answers_binding() {
    let (_server, addr, _) = spawn_server(&[
        "--listening-port",
        "0",
        "--realm",
        "example.org",
        "--allowed-peer-ip",
        "127.0.0.1",
    ]);
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
    let (first, udp, tcp) = spawn_server(&["--listening-port", "0", "--relay-threads", "2"]);
    let pid = first.0.id().to_string();
    for (only, port) in [("--no-tcp", udp.port()), ("--no-udp", tcp.port())] {
        let mut second = Server(
            Command::new(BIN)
                .args([
                    "--listening-ip",
                    "127.0.0.1",
                    "--static-auth-secret",
                    "s3cret",
                ])
                .args(["--listening-port", &port.to_string(), only])
                .env("NO_COLOR", "1")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        // It must exit by itself; one still running after the wait started serving.
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = second.0.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{only}: the second server started"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut text = String::new();
        for out in [
            second
                .0
                .stdout
                .take()
                .map(|o| Box::new(o) as Box<dyn std::io::Read>),
            second
                .0
                .stderr
                .take()
                .map(|o| Box::new(o) as Box<dyn std::io::Read>),
        ]
        .into_iter()
        .flatten()
        {
            let mut out = out;
            out.read_to_string(&mut text).unwrap();
        }
        assert!(!status.success(), "{only}: {text}");
        let addr = format!("127.0.0.1:{port}");
        assert!(
            text.contains(&format!("{addr} is already served by process {pid}")),
            "{only}: {text}"
        );
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
