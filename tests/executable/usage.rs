//! The usage record as a log line: with `--log-format json` the binary writes one JSON
//! object per ended allocation, under the target `ferroturn::usage`, whose fields are
//! the record's (README.md, "Usage records").

use crate::common::process::{BIN, ChildGuard};
use crate::common::{PROCESS_WAIT, WAIT, echo_peer, rest_credentials};
use ferroturn::client::{Relayed, TurnClient};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SECRET: &str = "usage-secret";

/// The next JSON log line for which `pick` holds, within `wait`.
fn next_line(
    lines: &mpsc::Receiver<String>,
    wait: Duration,
    pick: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines.recv_timeout(left).expect("the awaited log line");
        let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        if pick(&value) {
            return value;
        }
    }
}

#[tokio::test]
async fn the_usage_record_is_one_json_log_line() {
    let mut command = Command::new(BIN);
    command
        .args([
            "--log-format",
            "json",
            "--listening-ip",
            "127.0.0.1",
            "--listening-port",
            "0",
            "--realm",
            "usage.test",
            "--static-auth-secret",
            SECRET,
            "--allowed-peer-ip",
            "127.0.0.1",
            "--relay-threads",
            "1",
        ])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut server = ChildGuard::spawn(&mut command, "cargo builds it for the tests");
    let stdout = server.take_stdout();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let listening = next_line(&lines, PROCESS_WAIT, |v| v["message"] == "listening (udp)");
    let addr: SocketAddr = listening["addr"].as_str().expect("addr").parse().unwrap();

    let peer = echo_peer().await;
    let (user, pass) = rest_credentials(SECRET, "jason", Duration::from_secs(600));
    let mut c = TurnClient::new(addr, &user, &pass).await.unwrap();
    let relayed = c.allocate().await.unwrap();
    c.channel_bind(0x4002, peer.addr).await.unwrap();
    for n in [3usize, 40, 500] {
        c.send_channel_data(0x4002, &vec![7; n]).await.unwrap();
        let got = c.recv_relayed(WAIT).await.unwrap();
        assert!(matches!(got, Some(Relayed::Channel { data, .. }) if data.len() == n));
    }
    c.refresh(0).await.unwrap();

    let r = next_line(&lines, WAIT, |v| v["target"] == "ferroturn::usage");
    assert_eq!(r["level"], "INFO");
    assert_eq!(r["message"], "allocation deleted by client");
    assert_eq!(r["reason"], "client");
    assert_eq!(r["user"], "jason");
    assert_eq!(r["username"], user.as_str());
    assert_eq!(r["realm"], "usage.test");
    assert_eq!(r["client"], c.local_addr().unwrap().to_string());
    assert_eq!(r["transport"], "udp");
    assert_eq!(r["relay_transport"], "udp");
    assert_eq!(r["relayed"], relayed.to_string());
    assert!(r.get("additional_relayed").is_none(), "{r:#}");
    for (field, want) in [
        ("client_to_peer_packets", 3),
        ("client_to_peer_bytes", 543),
        ("peer_to_client_packets", 3),
        ("peer_to_client_bytes", 543),
    ] {
        assert_eq!(r[field].as_u64(), Some(want), "{field} in {r:#}");
    }
    assert!(
        r["duration_ms"].is_u64() && r["start_unix"].is_u64(),
        "{r:#}"
    );
    assert!(
        r["start"].as_str().is_some_and(|s| s.ends_with('Z')),
        "{r:#}"
    );
    assert!(r["id"].as_str().is_some_and(|s| !s.is_empty()), "{r:#}");
}
