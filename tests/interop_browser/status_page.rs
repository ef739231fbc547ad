//! The status page in Chromium (`tests/browser/status_page.mjs`): a server with the API
//! on, a call over UDP and one over TCP relaying through echo peers while the page is
//! open, and a refused login (401). The page must draw its chart from the server's
//! history, show both allocations by transport, non-zero traffic, the 401 row and every
//! relay thread; load nothing but itself and its JSON; refuse a wrong admin key; and list
//! the users with the right one, sending the key as a header and never in a URL.
//!
//! The screenshots land in cargo's temporary directory for integration tests
//! (`target/tmp/status-page.png` and `status-page-admin.png`).

use super::{browser_dir, browser_lock, check_prerequisites, report, run_node};
use crate::common::{self, SECRET, rest_credentials, sha256_hex};
use ferroturn::client::TurnClient;
use serde_json::Value;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const ADMIN: &str = "status-page-admin-key";
/// How long the page may take to draw its chart and list the users.
const PAGE_TIMEOUT_MS: u64 = 20_000;
const CHANNEL: u16 = 0x4000;

/// A client with an allocation and a channel to `peer`.
async fn call(mut client: TurnClient, peer: SocketAddr) -> TurnClient {
    client.allocate().await.expect("allocate");
    client
        .channel_bind(CHANNEL, peer)
        .await
        .expect("channel bind");
    client
}

/// Relays 1 kB each way through every client every 20 ms until `stop`; bounded to
/// three minutes whatever happens.
fn keep_relaying(
    mut clients: Vec<TurnClient>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let payload = [0x5au8; 1000];
        let deadline = Instant::now() + Duration::from_secs(180);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            for c in &mut clients {
                c.send_channel_data(CHANNEL, &payload).await.expect("send");
                let echoed = c.recv_relayed(common::WAIT).await.expect("receive");
                assert!(echoed.is_some(), "the echo came back");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

async fn status_json(api: SocketAddr) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(api).await.expect("connect");
    stream
        .write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("answer within 10 s")
        .expect("read");
    let text = String::from_utf8_lossy(&raw);
    let (_, body) = text.split_once("\r\n\r\n").expect("a complete answer");
    serde_json::from_str(body).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_shows_the_status_page_after_a_relayed_call() {
    check_prerequisites();
    let script = browser_dir().join("status_page.mjs");
    assert!(script.exists(), "{} is missing", script.display());
    let _one_browser = browser_lock().lock().await;
    let server = common::start_server(&format!(
        "api-listen = \"127.0.0.1:0\"\nadmin-key-sha256 = [\"{}\"]\n",
        sha256_hex(ADMIN)
    ))
    .await;
    let api = server.handle.api_addr().expect("the API listens");
    let peer = common::echo_peer().await;

    let alice = call(common::client(&server, "alice").await, peer.addr).await;
    let tcp = server.handle.tcp_addrs()[0];
    let (u, p) = rest_credentials(SECRET, "bob", Duration::from_secs(600));
    let bob = TurnClient::connect_tcp(tcp, &u, &p)
        .await
        .expect("TCP client");
    let bob = call(bob, peer.addr).await;
    let (u, _) = rest_credentials(SECRET, "mallory", Duration::from_secs(600));
    let mut mallory = TurnClient::new(server.addr, &u, "wrong").await.unwrap();
    assert_eq!(common::code(mallory.allocate().await), 401);

    let stop = Arc::new(AtomicBool::new(false));
    let traffic = keep_relaying(vec![alice, bob], stop.clone());
    // The history has a sample with the calls in it before the page opens.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = status_json(api).await;
        let busy = s["history"]["samples"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["bps_down"].as_u64() > Some(0)));
        if busy {
            break;
        }
        assert!(Instant::now() < deadline, "no sample with traffic: {s:#}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let page = format!("http://{api}/");
    let mut command = Command::new("node");
    command
        .arg(&script)
        .arg("--page")
        .arg(&page)
        .arg("--screenshot")
        .arg(&screenshot)
        .arg("--timeout-ms")
        .arg(PAGE_TIMEOUT_MS.to_string())
        .env("STATUS_ADMIN_KEY", ADMIN);
    println!(
        "running: node {} --page {page} --screenshot {}",
        script.display(),
        screenshot.display()
    );
    let run = run_node(command, PAGE_TIMEOUT_MS * 3).await;
    report(&run);
    stop.store(true, Ordering::Relaxed);
    traffic.await.expect("the calls relayed to the end");

    let line = run
        .stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .expect("status_page.mjs printed its result");
    let result: Value = serde_json::from_str(line).expect("the result is JSON");
    assert_eq!(run.status.map(|s| s.success()), Some(true), "{line}");
    assert_eq!(result["ok"], true, "{line}");
    println!("screenshots: {} and -admin.png", screenshot.display());
    assert!(screenshot.exists());

    let shown = &result["shown"];
    assert_eq!(shown["state"], "Serving", "{shown}");
    assert_eq!(shown["allocations"], "2", "{shown}");
    assert_eq!(
        (&shown["udp"], &shown["tcp"], &shown["dtls"]),
        (&"1".into(), &"1".into(), &"0".into()),
        "{shown}"
    );
    let chart = &shown["chart"];
    assert_eq!(chart["drawn"], true);
    assert!(chart["samples"].as_u64() >= Some(1), "{chart}");
    assert!(chart["peak"].as_f64() > Some(0.0), "{chart}");
    assert!(
        chart["paths"].as_u64() >= Some(4),
        "a line and an area each way: {chart}"
    );
    for text in ["rate", "relayedBytes"] {
        let v = shown[text].as_str().unwrap();
        assert!(
            !v.starts_with("0 ") && !v.starts_with('–'),
            "{text} shows {v}"
        );
    }
    let errors = shown["errors"].as_array().unwrap();
    assert!(
        errors.iter().any(|e| e["code"] == "401"),
        "no 401 row: {errors:?}"
    );
    let reasons = shown["authFailures"].as_array().unwrap();
    assert!(reasons.iter().any(|r| r == "wrong_password"), "{reasons:?}");
    let shards = server.handle.shard_loads().len() as u64;
    assert_eq!(shown["shards"].as_u64(), Some(shards));
    assert_eq!(shown["usersVisible"], false);
    assert_eq!(shown["users"], serde_json::json!([]));

    let refused = &result["refused"];
    assert!(
        refused["message"].as_str().unwrap().contains("refused"),
        "{refused}"
    );
    assert_eq!(refused["usersVisible"], false);

    let admin = &result["admin"];
    let users: Vec<&str> = admin["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["alice", "bob"], "{admin}");

    // Only the page and its JSON were requested, from the API's own origin; the key
    // travelled in a header, never in a URL.
    let origin = format!("http://{api}/");
    let requests = result["requests"].as_array().unwrap();
    for r in requests {
        let url = r["url"].as_str().unwrap();
        assert!(
            url == origin || url == format!("{origin}api/v1/status"),
            "{url}"
        );
        assert!(
            !url.contains(ADMIN) && !url.contains("not-the-admin-key"),
            "{url}"
        );
    }
    assert!(
        requests.iter().any(|r| r["authorization"] == true),
        "the key was never sent as a header"
    );
    assert_eq!(result["cspViolations"], serde_json::json!([]), "{line}");
    assert_eq!(
        result["consoleErrors"]
            .as_array()
            .map(|a| a.iter().all(|e| e.as_str().unwrap_or("").contains("401"))),
        Some(true),
        "console errors other than the refused key: {line}"
    );
    drop(server);
}
