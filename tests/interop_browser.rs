//! Interoperability with a real WebRTC stack: headless Chromium (Debian's `chromium`,
//! driven by playwright-core through `tests/browser/relay.mjs`) opens two peer
//! connections restricted to relay candidates on the ferroturn server under test and
//! exchanges data-channel messages through it, with the server reached over UDP, TCP
//! (`turn:127.0.0.1:PORT?transport=tcp`) or TLS (`turns:127.0.0.1:PORT`). In every case
//! the relayed transport addresses are UDP; `relayProtocol` names how Chromium reached
//! the server.
//!
//! TLS: Chromium verifies a TURN server's certificate like any TLS server's, against the
//! URL's host; an IP literal is checked against the certificate's IP addresses, so
//! `turns:127.0.0.1:PORT` works with the test certificate (SANs 127.0.0.1 and
//! localhost). Chromium 156 on Linux sends no ALPN and, for an IP literal, no SNI on
//! these connections. The test CA is trusted through an NSS database in a temporary
//! HOME (relay.mjs `--ca-cert`), not `--ignore-certificate-errors`, so the server's
//! chain is really verified: with the CA missing from that database Chromium refuses
//! the connection (icecandidateerror 701).
//!
//! With `kernel-offload = "on"` (root and bpf(2) needed; without them the test says so
//! in one line and returns), the UDP run is repeated and the metrics show which part of
//! the path the eBPF fast path took over (see that test for why only part of it).
//!
//! The credentials flow of a web application (`tests/browser/api_flow.html`, driven by
//! `api_flow.mjs`): a page served here on one loopback port fetches credentials from
//! ferroturn's HTTP API on another (a real CORS request with a preflight), then relays
//! a data channel with the `iceServers` it got; a key that names no origin is refused
//! by the browser itself (no Access-Control-Allow-Origin).
//!
//! The status page (`status_page`): Chromium loads `GET /` of the HTTP API after relayed
//! calls and must show them.
//!
//! Needs `/usr/bin/chromium`, `node` (>= 20), `certutil` (libnss3-tools) and
//! `tests/browser/node_modules`; run `scripts/install-test-deps.sh` once to get them. A
//! missing piece fails the test (it is never skipped silently).

mod common;
#[path = "interop_browser/status_page.rs"]
mod status_page;

use common::process::ChildGuard;
use common::sha256_hex;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const INSTALL_HINT: &str = "run `scripts/install-test-deps.sh` from the repository root \
     (installs chromium, coturn and libnss3-tools from Debian, and playwright-core into \
     tests/browser/node_modules)";

/// How long relay.mjs waits inside the page for the connection to settle.
const CONNECT_TIMEOUT_MS: u64 = 20_000;
/// Wrong credentials are refused at once (401); the page settles as soon as Chromium
/// gives up gathering, so this bound is rarely reached.
const FAIL_TIMEOUT_MS: u64 = 15_000;
/// Headroom over the in-page timeout for launching and closing Chromium; relay.mjs
/// has its own hard limit of timeout + 60 s, so this one only catches a stuck node.
const PROCESS_HEADROOM: Duration = Duration::from_secs(90);

/// One browser at a time: the machine has two cores, and timing-sensitive ICE checks
/// should not compete with a second Chromium.
fn browser_lock() -> &'static tokio::sync::Mutex<()> {
    static LOCK: OnceLock<tokio::sync::Mutex<()>> = OnceLock::new();
    LOCK.get_or_init(|| tokio::sync::Mutex::new(()))
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("browser")
}

fn chromium_path() -> PathBuf {
    std::env::var_os("CHROMIUM_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Fails (never skips) when something the browser test needs is not installed.
fn check_prerequisites() {
    let chromium = chromium_path();
    assert!(
        chromium.exists(),
        "Chromium not found at {}; {INSTALL_HINT}",
        chromium.display()
    );
    let script = browser_dir().join("relay.mjs");
    assert!(script.exists(), "{} is missing", script.display());
    let playwright = browser_dir()
        .join("node_modules")
        .join("playwright-core")
        .join("package.json");
    assert!(
        playwright.exists(),
        "playwright-core is not installed ({} missing); {INSTALL_HINT}",
        playwright.display()
    );
}

/// relay.mjs trusts the test CA through an NSS database it makes with `certutil`.
fn check_certutil() {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("certutil").is_file()));
    assert!(
        found,
        "certutil (Debian package libnss3-tools) not found on PATH; {INSTALL_HINT}"
    );
}

/// One run of relay.mjs: which server, how to reach it, and what must happen.
struct RelayCheck<'a> {
    /// `turn:...?transport=udp|tcp` or `turns:...`.
    url: String,
    username: &'a str,
    credential: &'a str,
    /// `connected` or `failed`.
    expect: &'a str,
    timeout_ms: u64,
    /// With `connected`: the `relayProtocol` both selected local candidates must have.
    relay_protocol: Option<&'a str>,
    /// A CA certificate (PEM) Chromium trusts for `turns:`.
    ca_cert: Option<&'a Path>,
}

struct RelayRun {
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

/// Runs `node tests/browser/relay.mjs` against `server_addr` and waits for it, bounded
/// by `timeout_ms` plus headroom. The child is a std process under the shared
/// `ChildGuard`, whose wait polls without blocking the runtime, so the in-process server
/// keeps serving.
async fn run_relay_check(check: &RelayCheck<'_>) -> RelayRun {
    let RelayCheck {
        url,
        username,
        credential,
        expect,
        timeout_ms,
        ..
    } = check;
    let timeout_ms = *timeout_ms;
    let script = browser_dir().join("relay.mjs");
    let mut command = Command::new("node");
    command
        .arg(&script)
        .arg("--url")
        .arg(url)
        .arg("--username")
        .arg(username)
        .arg("--credential")
        .arg(credential)
        .arg("--expect")
        .arg(expect)
        .arg("--timeout-ms")
        .arg(timeout_ms.to_string());
    let mut options = String::new();
    if let Some(protocol) = check.relay_protocol {
        command.arg("--relay-protocol").arg(protocol);
        options.push_str(&format!(" --relay-protocol {protocol}"));
    }
    if let Some(ca) = check.ca_cert {
        command.arg("--ca-cert").arg(ca);
        options.push_str(&format!(" --ca-cert {}", ca.display()));
    }
    println!(
        "running: node {} --url {url} --username {username} --credential <hidden> --expect {expect} --timeout-ms {timeout_ms}{options}",
        script.display()
    );
    run_node(command, timeout_ms).await
}

/// Runs a prepared `node` command in `tests/browser` and waits for it, bounded by
/// `timeout_ms` plus headroom, polling without blocking the runtime.
async fn run_node(mut command: Command, timeout_ms: u64) -> RelayRun {
    command
        .env("CHROMIUM_PATH", chromium_path())
        .current_dir(browser_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let hint = format!("install Node.js >= 20, then {INSTALL_HINT}");
    // Killed if the test panics or times out before it exits.
    let mut child = ChildGuard::spawn(&mut command, &hint);
    let (stdout, stderr) = (child.stdout_text(), child.stderr_text());

    let limit = Duration::from_millis(timeout_ms) + PROCESS_HEADROOM;
    let status = child.exit_within(limit).await;
    if status.is_none() {
        eprintln!(
            "node still running after {:?}; terminating it",
            started.elapsed()
        );
        // SIGTERM first so the script closes Chromium and removes its profile directory.
        child.signal(libc::SIGTERM);
        // Status stays None: timed out. Dropping the guard kills whatever is left.
        let _ = child.exit_within(Duration::from_secs(15)).await;
    }
    drop(child);
    let elapsed = started.elapsed();
    RelayRun {
        status,
        stdout: stdout.text().await,
        stderr: stderr.text().await,
        elapsed,
    }
}

fn report(run: &RelayRun) {
    println!("node exit: {:?} after {:?}", run.status, run.elapsed);
    println!("--- stdout ---\n{}", run.stdout.trim_end());
    println!("--- stderr ---\n{}", run.stderr.trim_end());
}

/// Checks relay.mjs's exit status and its JSON summary (the last `{...}` line on stdout),
/// and returns the summary.
fn assert_expected(run: &RelayRun, expect: &str) -> serde_json::Value {
    let status = run.status.unwrap_or_else(|| {
        panic!("relay.mjs did not finish in time (expect {expect}); see output above")
    });
    assert!(
        status.success(),
        "relay.mjs exited with {status} (expect {expect}); exit 1 means the outcome differed, \
         2 means it could not run (if Chromium, certutil or playwright-core is missing: \
         {INSTALL_HINT})"
    );
    let line = run
        .stdout
        .lines()
        .rev()
        .find(|line| line.starts_with('{'))
        .unwrap_or_else(|| panic!("relay.mjs printed no JSON summary"));
    let summary: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("relay.mjs summary is not JSON ({e}): {line}"));
    assert_eq!(summary["ok"], true, "summary is not ok: {line}");
    assert_eq!(
        summary["outcome"], expect,
        "summary outcome is not {expect}: {line}"
    );
    summary
}

/// Both peers' selected candidate pair joins their own relayed address to the other's,
/// and each reached the server over `protocol` (relay.mjs checks this too; this keeps
/// the test honest if the script changes).
fn assert_relayed_over(summary: &serde_json::Value, protocol: &str) {
    for peer in ["a", "b"] {
        let pair = &summary["selectedPair"][peer];
        assert_eq!(pair["found"], true, "{peer}: no selected pair: {summary}");
        assert_eq!(
            pair["localCandidateType"], "relay",
            "{peer}: local candidate is not a relay candidate: {pair}"
        );
        assert_eq!(
            pair["remoteCandidateType"], "relay",
            "{peer}: remote candidate is not a relay candidate: {pair}"
        );
        assert_eq!(
            pair["relayProtocol"], protocol,
            "{peer}: the relay candidate was not allocated over {protocol}: {pair}"
        );
    }
    let messages = &summary["messages"];
    let n = &messages["perDirection"];
    for count in ["intactAtB", "intactEchoesAtA", "intactFromBAtA"] {
        assert_eq!(&messages[count], n, "{count} is not {n}: {messages}");
    }
}

/// Chromium relays data-channel messages through the server at `url`; `relay_protocol`
/// is what both selected local candidates must report.
async fn relay_through(url: String, relay_protocol: &str, ca_cert: Option<&Path>) {
    let (username, password) =
        common::rest_credentials(common::SECRET, "alice", Duration::from_secs(600));
    let run = run_relay_check(&RelayCheck {
        url,
        username: &username,
        credential: &password,
        expect: "connected",
        timeout_ms: CONNECT_TIMEOUT_MS,
        relay_protocol: Some(relay_protocol),
        ca_cert,
    })
    .await;
    report(&run);
    let summary = assert_expected(&run, "connected");
    assert_relayed_over(&summary, relay_protocol);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_relays_data_channel_over_udp() {
    check_prerequisites();
    let _one_browser = browser_lock().lock().await;
    let server = common::start_server("").await;
    let url = format!("turn:{}?transport=udp", server.addr);
    relay_through(url, "udp", None).await;
    drop(server);
}

/// `chromium_relays_data_channel_over_udp` with `kernel-offload = "on"`.
///
/// Chromium sends Send indications to a peer until its CHANNEL-BIND for that peer
/// succeeds (it asks with the first connectivity check), ChannelData after. Both peers
/// relay through this one server, so each one's peer address is the other's relayed
/// address, and only half of each path can be the kernel's:
/// - client A's ChannelData to the listener is rewritten by the program into a datagram
///   from relay A to relay B (offload totals: up), delivered on lo to relay B's socket;
/// - the program lets that datagram go up the stack without passing TC again, so user
///   space reads it at relay B and sends it on to client B as ChannelData (user-space
///   stats: peer to client). Kernel up and user-space down carry the same data.
/// The kernel's down direction (peer datagram to relay, rewritten to ChannelData to the
/// client) sees only what user space itself sends from one relay to the other, that is
/// Send indications of a peer whose channel is bound on the other side already: a
/// handful of datagrams at most (1 to 3 seen), so it is not asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_relays_data_channel_over_udp_through_the_kernel() {
    check_prerequisites();
    if let Some(why) = common::kernel_offload_unavailable() {
        println!("kernel offload test skipped: {why}");
        return;
    }
    let _one_browser = browser_lock().lock().await;
    let server = common::start_server("kernel-offload = \"on\"").await;
    let url = format!("turn:{}?transport=udp", server.addr);
    relay_through(url, "udp", None).await;
    // Closing its peer connections, Chromium deletes both allocations (REFRESH with
    // LIFETIME 0).
    let (kernel, installed, user) =
        common::kernel_and_user_after_deletions(&server, "Chromium's deallocations", 2).await;
    println!(
        "kernel relayed {} up ({} bytes), {} down ({} bytes); user space relayed {} up \
         ({} bytes), {} down ({} bytes); {installed} channels still installed; {kernel:?}",
        kernel.up.relayed.packets,
        kernel.up.relayed.bytes,
        kernel.down.relayed.packets,
        kernel.down.relayed.bytes,
        user[0].packets,
        user[0].bytes,
        user[1].packets,
        user[1].bytes,
    );
    assert!(
        kernel.up.relayed.packets > 0,
        "the kernel relayed no ChannelData from the clients: {kernel:?}"
    );
    assert!(
        user[0].packets < kernel.up.relayed.packets,
        "user space relayed {} datagrams client to peer, the kernel only {}: the channels \
         did not take over from the Send indications ({kernel:?})",
        user[0].packets,
        kernel.up.relayed.packets
    );
    // What the kernel delivered to a relay socket went on to that relay's client from
    // user space, short of connectivity checks that reached a relay before it had a
    // permission for the other.
    assert!(
        user[1].bytes * 10 >= kernel.up.relayed.bytes * 9,
        "user space relayed {} bytes peer to client, less than 90 % of the {} the kernel \
         delivered to the relays",
        user[1].bytes,
        kernel.up.relayed.bytes
    );
    common::assert_kernel_undisturbed(&kernel, installed);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_relays_data_channel_over_tcp() {
    check_prerequisites();
    let _one_browser = browser_lock().lock().await;
    let server = common::start_server("").await;
    let tcp = *server
        .handle
        .tcp_addrs()
        .first()
        .expect("the server listens on TCP");
    let url = format!("turn:{tcp}?transport=tcp");
    relay_through(url, "tcp", None).await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_relays_data_channel_over_tls() {
    check_prerequisites();
    check_certutil();
    let _one_browser = browser_lock().lock().await;
    let pki = common::tls::TestPki::new();
    let server = common::start_server(&pki.server_toml()).await;
    let tls = *server
        .handle
        .tls_addrs()
        .first()
        .expect("the server listens for TLS");
    // An IP literal: Chromium verifies the certificate's IP address 127.0.0.1.
    let url = format!("turns:{tls}?transport=tcp");
    relay_through(url, "tls", Some(&pki.ca_path)).await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_wrong_password_does_not_connect() {
    check_prerequisites();
    let _one_browser = browser_lock().lock().await;
    let server = common::start_server("").await;
    let (username, password) =
        common::rest_credentials(common::SECRET, "alice", Duration::from_secs(600));
    // Same length, one character different: a well-formed but wrong REST password.
    let mut wrong: Vec<char> = password.chars().collect();
    wrong[0] = if wrong[0] == 'A' { 'B' } else { 'A' };
    let wrong: String = wrong.into_iter().collect();
    assert_ne!(wrong, password);

    let run = run_relay_check(&RelayCheck {
        url: format!("turn:{}?transport=udp", server.addr),
        username: &username,
        credential: &wrong,
        expect: "failed",
        timeout_ms: FAIL_TIMEOUT_MS,
        relay_protocol: None,
        ca_cert: None,
    })
    .await;
    report(&run);
    assert_expected(&run, "failed");
    // Chromium reports the refusal as an icecandidateerror with the TURN error code.
    if !run.stdout.contains("\"errorCode\":401") {
        println!("note: no 401 icecandidateerror reported (the page timed out instead)");
    }
    drop(server);
}

/// The certificates the TLS test gives the server and Chromium form a chain a strict
/// client accepts for 127.0.0.1 (checked with rustls on both ends, no ferroturn
/// involved), and a replaced certificate is a different one from the same CA.
#[tokio::test]
async fn test_certificates_verify_for_loopback() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut pki = common::tls::TestPki::new();
    let serve_once = |pki: &common::tls::TestPki| {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(&pki.cert_chain_path)
                .expect("read the chain file")
                .collect::<Result<_, _>>()
                .expect("the chain file is PEM");
        assert_eq!(chain.len(), 2, "server certificate, then the CA");
        assert_eq!(chain[0], pki.server_der);
        assert_eq!(chain[1], pki.ca_der);
        let key = PrivateKeyDer::from_pem_file(&pki.key_path).expect("the key file is PEM");
        assert!(matches!(key, PrivateKeyDer::Pkcs8(_)), "the key is PKCS#8");
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("the key matches the certificate");
        config.alpn_protocols = vec![common::tls::ALPN_TURN.to_vec()];
        tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))
    };
    for round in 0..2 {
        let acceptor = serve_once(&pki);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.expect("server handshake");
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).await.unwrap();
            tls.write_all(&byte).await.unwrap();
            tls.flush().await.unwrap();
        });
        let mut client = pki.connect(addr).await.expect("client handshake");
        let (_, session) = client.get_ref();
        assert_eq!(session.alpn_protocol(), Some(common::tls::ALPN_TURN));
        let presented = session.peer_certificates().expect("server certificates")[0].clone();
        assert_eq!(presented, pki.server_der, "round {round}");
        client.write_all(b"x").await.unwrap();
        let mut byte = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut byte))
            .await
            .expect("echo within 5 s")
            .unwrap();
        assert_eq!(&byte, b"x");
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("server task ends")
            .unwrap();

        let before = pki.server_der.clone();
        let replaced = pki.replace_server_cert();
        assert_ne!(before, replaced, "a replaced certificate differs");
    }
    let dir = pki.dir.path().to_owned();
    drop(pki);
    assert!(!dir.exists(), "the temporary directory is removed on drop");
}

const API_TOKEN: &str = "browser-page-token";
/// A key without origins: a backend key the browser must not be able to use.
const BACKEND_TOKEN: &str = "backend-only-token";

/// Serves `tests/browser/api_flow.html` at `/` on 127.0.0.1 (the page's origin) until
/// the task is aborted.
async fn serve_page() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let html = std::fs::read(browser_dir().join("api_flow.html")).expect("api_flow.html");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the page server");
    let addr = listener.local_addr().expect("page server address");
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let html = html.clone();
            tokio::spawn(async move {
                let mut head = vec![0u8; 8192];
                let mut n = 0;
                while !head[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut head[n..]))
                        .await
                    {
                        Ok(Ok(k)) if k > 0 && n + k < head.len() => n += k,
                        _ => return,
                    }
                }
                let page = head.starts_with(b"GET / ") || head.starts_with(b"GET /?");
                let (status, body): (&str, &[u8]) = if page {
                    ("200 OK", &html)
                } else {
                    ("404 Not Found", b"")
                };
                let header = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(header.as_bytes()).await;
                let _ = stream.write_all(body).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_fetches_credentials_from_the_api_and_relays() {
    check_prerequisites();
    let script = browser_dir().join("api_flow.mjs");
    assert!(script.exists(), "{} is missing", script.display());
    let _one_browser = browser_lock().lock().await;
    let (page, page_task) = serve_page().await;
    let server = common::start_server(&format!(
        "api-listen = \"127.0.0.1:0\"\napi-key-sha256 = [\"{}\"]\n\
         [[api-key]]\nsha256 = \"{}\"\nmax-ttl = 3600\norigins = [\"http://{page}\"]\n",
        sha256_hex(BACKEND_TOKEN),
        sha256_hex(API_TOKEN),
    ))
    .await;
    let api = server.handle.api_addr().expect("the API listens");
    let url = format!("http://{page}/?api=http://{api}&token={API_TOKEN}&denied={BACKEND_TOKEN}");
    let mut command = Command::new("node");
    command
        .arg(&script)
        .arg("--page")
        .arg(&url)
        .arg("--timeout-ms")
        .arg(CONNECT_TIMEOUT_MS.to_string());
    println!("running: node {} --page {url}", script.display());
    let run = run_node(command, CONNECT_TIMEOUT_MS).await;
    report(&run);
    page_task.abort();

    let status = run.status.expect("api_flow.mjs finished in time");
    let line = run
        .stdout
        .lines()
        .rev()
        .find(|line| line.starts_with('{'))
        .expect("api_flow.mjs printed its result");
    let result: serde_json::Value = serde_json::from_str(line).expect("the result is JSON");
    assert!(
        status.success(),
        "api_flow.mjs exited with {status}: {line}"
    );
    assert_eq!(result["ok"], true, "{line}");
    assert_eq!(
        result["deniedKeyReadable"], false,
        "the browser read an answer without Access-Control-Allow-Origin: {line}"
    );
    assert!(
        result["username"]
            .as_str()
            .is_some_and(|u| u.ends_with(":browser")),
        "{line}"
    );
    assert_eq!(result["call"]["intact"], true, "{line}");
    for peer in ["a", "b"] {
        let pair = &result["call"]["pairs"][peer];
        assert_eq!(pair["local"], "relay", "{peer}: {line}");
        assert_eq!(pair["remote"], "relay", "{peer}: {line}");
    }
    // Both peers allocated on the server with the issued credentials.
    let deadline = Instant::now() + Duration::from_secs(3);
    while server.handle.metrics().stats.allocations_created < 2 {
        assert!(
            Instant::now() < deadline,
            "the server saw fewer than 2 allocations"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(server);
}
