//! Interoperability with a real WebRTC stack: headless Chromium (Debian's `chromium`,
//! driven by playwright-core through `tests/browser/relay.mjs`) opens two peer
//! connections restricted to relay candidates on the ferroturn server under test and
//! exchanges data-channel messages through it.
//!
//! Needs `/usr/bin/chromium`, `node` (>= 20) and `tests/browser/node_modules`; run
//! `scripts/install-test-deps.sh` once to get them. A missing piece fails the test
//! (it is never skipped silently).

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const INSTALL_HINT: &str = "run `scripts/install-test-deps.sh` from the repository root \
     (installs chromium and coturn from Debian, and playwright-core into tests/browser/node_modules)";

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

/// Kills the child if the test panics or times out before it exits.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("child still owned")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// Reads a child's pipe to the end on its own thread; the text arrives on the receiver.
fn drain<R: Read + Send + 'static>(mut pipe: R) -> tokio::sync::oneshot::Receiver<String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
    });
    rx
}

async fn collect(rx: tokio::sync::oneshot::Receiver<String>) -> String {
    match tokio::time::timeout(Duration::from_secs(10), rx).await {
        Ok(Ok(text)) => text,
        Ok(Err(_)) => String::from("<pipe reader ended without output>"),
        Err(_) => String::from("<pipe still open 10 s after the process ended>"),
    }
}

struct RelayRun {
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

/// Runs `node tests/browser/relay.mjs` against `server_addr` and waits for it, bounded
/// by `timeout_ms` plus headroom. The child runs on a plain std process (tokio's
/// `process` feature is not enabled); waiting polls without blocking the runtime, so
/// the in-process server keeps serving.
async fn run_relay_check(
    server_addr: std::net::SocketAddr,
    username: &str,
    credential: &str,
    expect: &str,
    timeout_ms: u64,
) -> RelayRun {
    let url = format!("turn:{server_addr}?transport=udp");
    let script = browser_dir().join("relay.mjs");
    let mut command = Command::new("node");
    command
        .arg(&script)
        .arg("--url")
        .arg(&url)
        .arg("--username")
        .arg(username)
        .arg("--credential")
        .arg(credential)
        .arg("--expect")
        .arg(expect)
        .arg("--timeout-ms")
        .arg(timeout_ms.to_string())
        .env("CHROMIUM_PATH", chromium_path())
        .current_dir(browser_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    println!(
        "running: node {} --url {url} --username {username} --credential <hidden> --expect {expect} --timeout-ms {timeout_ms}",
        script.display()
    );

    let started = Instant::now();
    let child = match command.spawn() {
        Ok(child) => child,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            panic!("`node` not found on PATH ({err}); install Node.js >= 20, then {INSTALL_HINT}")
        }
        Err(err) => panic!("cannot start node: {err}"),
    };
    let mut guard = ChildGuard(Some(child));
    let stdout_rx = drain(guard.child().stdout.take().expect("stdout piped"));
    let stderr_rx = drain(guard.child().stderr.take().expect("stderr piped"));

    let deadline = started + Duration::from_millis(timeout_ms) + PROCESS_HEADROOM;
    let mut status = None;
    loop {
        match guard.child().try_wait() {
            Ok(Some(exit)) => {
                status = Some(exit);
                break;
            }
            Ok(None) => {}
            Err(err) => panic!("waiting for node failed: {err}"),
        }
        if Instant::now() >= deadline {
            eprintln!(
                "relay.mjs still running after {:?}; terminating it",
                started.elapsed()
            );
            // SIGTERM first so relay.mjs closes Chromium and removes its profile directory.
            let pid = guard.child().id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let grace = Instant::now() + Duration::from_secs(15);
            while Instant::now() < grace {
                if let Ok(Some(_)) = guard.child().try_wait() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            break; // status stays None: timed out. The guard kills whatever is left.
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(guard);
    let elapsed = started.elapsed();
    let stdout = collect(stdout_rx).await;
    let stderr = collect(stderr_rx).await;
    RelayRun {
        status,
        stdout,
        stderr,
        elapsed,
    }
}

fn report(run: &RelayRun) {
    println!("relay.mjs exit: {:?} after {:?}", run.status, run.elapsed);
    println!("--- relay.mjs stdout ---\n{}", run.stdout.trim_end());
    println!("--- relay.mjs stderr ---\n{}", run.stderr.trim_end());
}

fn assert_expected(run: &RelayRun, expect: &str) {
    let status = run.status.unwrap_or_else(|| {
        panic!("relay.mjs did not finish in time (expect {expect}); see output above")
    });
    assert!(
        status.success(),
        "relay.mjs exited with {status} (expect {expect}); exit 1 means the outcome differed, \
         2 means it could not run (if Chromium or playwright-core is missing: {INSTALL_HINT})"
    );
    let summary = run
        .stdout
        .lines()
        .rev()
        .find(|line| line.starts_with('{'))
        .unwrap_or_else(|| panic!("relay.mjs printed no JSON summary"));
    assert!(
        summary.contains("\"ok\":true"),
        "summary is not ok: {summary}"
    );
    assert!(
        summary.contains(&format!("\"outcome\":\"{expect}\"")),
        "summary outcome is not {expect}: {summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_relays_data_channel_over_udp() {
    check_prerequisites();
    let _one_browser = browser_lock().lock().await;
    let server = common::start_server("").await;
    let (username, password) =
        common::rest_credentials(common::SECRET, "alice", Duration::from_secs(600));

    let run = run_relay_check(
        server.addr,
        &username,
        &password,
        "connected",
        CONNECT_TIMEOUT_MS,
    )
    .await;
    report(&run);
    assert_expected(&run, "connected");
    // Both peers' selected pair must be relay/relay over UDP allocations.
    assert!(
        run.stdout.contains("\"relayProtocol\":\"udp\""),
        "relayProtocol is not udp: {}",
        run.stdout
    );
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

    let run = run_relay_check(server.addr, &username, &wrong, "failed", FAIL_TIMEOUT_MS).await;
    report(&run);
    assert_expected(&run, "failed");
    // Chromium reports the refusal as an icecandidateerror with the TURN error code.
    if !run.stdout.contains("\"errorCode\":401") {
        println!("note: no 401 icecandidateerror reported (the page timed out instead)");
    }
    drop(server);
}
