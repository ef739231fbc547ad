//! Processes and scratch files: one guard that kills and reaps every child a test starts
//! (the ferroturn binary, coturn's tools, node and Chromium, this test binary itself),
//! pipes read to the end on their own threads, the built binary started with its UDP
//! address read from its log, a temporary directory removed on drop, and one test re-run
//! alone in a child process.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The ferroturn binary Cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_ferroturn");

/// A child process, killed (if it still runs) and reaped when dropped, so a failing test
/// leaves nothing behind.
pub struct ChildGuard(Child);

impl ChildGuard {
    /// Starts `command`. A program that is not installed fails the test with `hint`
    /// (how to install it).
    pub fn spawn(command: &mut Command, hint: &str) -> Self {
        let program = command.get_program().to_string_lossy().into_owned();
        match command.spawn() {
            Ok(child) => Self(child),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("{program} not found on PATH ({e}); {hint}")
            }
            Err(e) => panic!("cannot start {program}: {e}; {hint}"),
        }
    }

    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// Sends `signal` (SIGHUP, SIGTERM, ...) to the process.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.0.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) with our own child's pid (not yet reaped: the guard owns it)
        // and a valid signal number.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal})");
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.0.try_wait().expect("try_wait on a child")
    }

    /// Waits at most `limit` for the process to exit, polling without blocking the
    /// async runtime the test (and maybe the server under test) runs on.
    pub async fn exit_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// [`ChildGuard::exit_within`] for tests without a runtime.
    pub fn exit_within_blocking(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The child's stdout pipe, to read line by line (it must have been piped).
    pub fn take_stdout(&mut self) -> ChildStdout {
        self.0.stdout.take().expect("stdout piped")
    }

    /// The child's stdout, read to the end on a thread (it must have been piped).
    pub fn stdout_text(&mut self) -> PipeText {
        let pipe: ChildStdout = self.0.stdout.take().expect("stdout piped");
        PipeText::read(pipe)
    }

    /// The child's stderr, read to the end on a thread (it must have been piped).
    pub fn stderr_text(&mut self) -> PipeText {
        let pipe: ChildStderr = self.0.stderr.take().expect("stderr piped");
        PipeText::read(pipe)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// A pipe read to the end on its own thread, so that a chatty child never blocks on a
/// full pipe.
pub struct PipeText(tokio::sync::oneshot::Receiver<String>);

impl PipeText {
    pub fn read(mut pipe: impl Read + Send + 'static) -> Self {
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
        });
        Self(rx)
    }

    /// Everything the pipe carried, once its writers are gone (wait for or kill the
    /// child first). A grandchild that kept the pipe open makes this give up after 10 s.
    /// [`PipeText::text`] for tests without a runtime (the child must have ended).
    pub fn text_blocking(self) -> String {
        self.0
            .blocking_recv()
            .unwrap_or_else(|_| String::from("<pipe reader ended without output>"))
    }

    pub async fn text(self) -> String {
        match tokio::time::timeout(Duration::from_secs(10), self.0).await {
            Ok(Ok(text)) => text,
            Ok(Err(_)) => String::from("<pipe reader ended without output>"),
            Err(_) => String::from("<pipe still open 10 s after the process ended>"),
        }
    }
}

/// The built ferroturn binary running as a child process, killed when dropped.
pub struct ServerProcess {
    pub child: ChildGuard,
    /// The UDP listener's address, from the log line `listening (udp) addr=...`.
    pub addr: SocketAddr,
    /// The TCP listener's address (`listening (tcp) addr=...`), for
    /// [`ServerProcess::start_with_tcp`].
    pub tcp: Option<SocketAddr>,
    /// The HTTP API's address (`listening (http api) addr=...`), for
    /// [`ServerProcess::start_with_api`].
    pub api: Option<SocketAddr>,
    /// Every line of its log, for [`ServerProcess::start_logged`].
    log: Option<std::sync::mpsc::Receiver<String>>,
    /// The lines [`ServerProcess::log_line`] has read so far.
    pub seen: Vec<String>,
}

impl ServerProcess {
    /// Starts [`BIN`] with `args` (no color, stderr discarded) and waits at most `limit`
    /// for the address it listens on. Its stdout is read to the end on a thread.
    pub fn start(args: &[&std::ffi::OsStr], limit: Duration) -> Self {
        Self::start_listening(args, limit, Wait::UDP)
    }

    /// [`ServerProcess::start`], also waiting for the TCP listener's address.
    pub fn start_with_tcp(args: &[&std::ffi::OsStr], limit: Duration) -> Self {
        let wait = Wait {
            tcp: true,
            ..Wait::UDP
        };
        Self::start_listening(args, limit, wait)
    }

    /// [`ServerProcess::start`], also waiting for the HTTP API's address.
    pub fn start_with_api(args: &[&std::ffi::OsStr], limit: Duration) -> Self {
        let wait = Wait {
            api: true,
            ..Wait::UDP
        };
        Self::start_listening(args, limit, wait)
    }

    /// [`ServerProcess::start`], keeping every log line for [`ServerProcess::log_line`].
    pub fn start_logged(args: &[&std::ffi::OsStr], limit: Duration) -> Self {
        let wait = Wait {
            log: true,
            ..Wait::UDP
        };
        Self::start_listening(args, limit, wait)
    }

    /// The first log line (of those not read yet, or read before) containing every one
    /// of `needles`, waiting at most `limit` for it; panics with the log so far if none
    /// comes. Only for [`ServerProcess::start_logged`].
    pub async fn log_line(&mut self, needles: &[&str], limit: Duration) -> String {
        let matches = |line: &String| needles.iter().all(|n| line.contains(n));
        let deadline = Instant::now() + limit;
        let log = self.log.as_ref().expect("started with start_logged");
        loop {
            if let Some(line) = self.seen.iter().find(|l| matches(l)) {
                return line.clone();
            }
            while let Ok(line) = log.try_recv() {
                self.seen.push(line);
            }
            if self.seen.iter().any(matches) {
                continue;
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needles:?} within {limit:?}; the log:\n{}",
                self.seen.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn start_listening(args: &[&std::ffi::OsStr], limit: Duration, wait: Wait) -> Self {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = ChildGuard::spawn(&mut command, "cargo builds it for the tests");
        let stdout = child.0.stdout.take().expect("stdout piped");
        let (tx, rx) = std::sync::mpsc::channel();
        let (log_tx, log_rx) = std::sync::mpsc::channel();
        let keep_log = wait.log;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if keep_log {
                    let _ = log_tx.send(line.clone());
                }
                let kind = ["udp", "tcp", "http api"]
                    .into_iter()
                    .find(|k| line.contains(&format!("listening ({k})")));
                if let (Some(kind), Some(addr)) = (kind, line.split("addr=").nth(1)) {
                    let addr = addr
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .trim_matches(|c: char| !c.is_ascii_graphic());
                    let _ = tx.send((kind, addr.to_owned()));
                }
            }
        });
        let deadline = Instant::now() + limit;
        let (mut udp, mut tcp, mut api) = (None, None, None);
        while udp.is_none() || (wait.tcp && tcp.is_none()) || (wait.api && api.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            let (kind, addr) = rx
                .recv_timeout(left)
                .expect("`listening (udp|tcp|http api) addr=` lines");
            let addr: SocketAddr = addr.parse().expect("the logged address parses");
            match kind {
                "udp" => udp.get_or_insert(addr),
                "tcp" => tcp.get_or_insert(addr),
                _ => api.get_or_insert(addr),
            };
        }
        Self {
            child,
            addr: udp.expect("a UDP address"),
            tcp,
            api,
            log: wait.log.then_some(log_rx),
            seen: Vec::new(),
        }
    }
}

/// Which listeners' addresses [`ServerProcess`] waits for besides UDP, and whether it
/// keeps the log.
struct Wait {
    tcp: bool,
    api: bool,
    log: bool,
}

impl Wait {
    /// The UDP address only, and no log kept.
    const UDP: Wait = Wait {
        tcp: false,
        api: false,
        log: false,
    };
}

/// A new, empty directory under the system temp dir that no other test (in this process
/// or another) uses; removed with its contents when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A directory named `ferroturn-<what>-<pid>-<n>-<nanos>`.
    pub fn new(what: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        for _ in 0..100 {
            let name = format!(
                "ferroturn-{what}-{}-{}-{nanos}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            let dir = std::env::temp_dir().join(name);
            match std::fs::create_dir(&dir) {
                Ok(()) => return Self(dir),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("cannot create {}: {e}", dir.display()),
            }
        }
        panic!("no free temporary directory name after 100 tries");
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The path of `name` inside this directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A numeric field of this process's /proc/self/status (`VmRSS:` in KiB, `Threads:`).
pub fn status_field(name: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /proc/self/status"))
}

/// The resident set size of this process in KiB.
pub fn rss_kib() -> u64 {
    status_field("VmRSS:")
}

/// Set in the child process [`run_alone`] starts.
const ALONE: &str = "FERROTURN_TEST_ALONE";

/// Whether this process is a child that [`run_alone`] started for one test.
pub fn alone() -> bool {
    std::env::var_os(ALONE).is_some()
}

/// Re-runs test `name` of this binary alone in a child process and checks that it
/// passed, for a test that measures or installs something process-wide (the resident
/// set, the global log subscriber). `module` is the test's `module_path!()`.
pub async fn run_alone(module: &str, name: &str) {
    let test = match module.split_once("::") {
        Some((_, path)) => format!("{path}::{name}"),
        None => name.to_owned(),
    };
    let exe = std::env::current_exe().expect("test binary path");
    let mut command = Command::new(exe);
    command
        .args([test.as_str(), "--exact", "--test-threads=1", "--nocapture"])
        .env(ALONE, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = ChildGuard::spawn(&mut command, "the test binary re-runs itself");
    let (stdout, stderr) = (child.stdout_text(), child.stderr_text());
    let status = child
        .exit_within(Duration::from_secs(50))
        .await
        .expect("the child finishes in time");
    let (stdout, stderr) = (stdout.text().await, stderr.text().await);
    assert!(status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("1 passed"),
        "the child ran no test:\n{stdout}"
    );
    print!("{stdout}");
}
