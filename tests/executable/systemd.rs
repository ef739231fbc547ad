//! Running under systemd: the readiness protocol (READY, WATCHDOG, RELOADING, STOPPING
//! over `$NOTIFY_SOCKET`, as a service manager would see it), journald- and
//! shipper-friendly logs, and the unit file (`systemd-analyze verify` and `security`).

use crate::common::process::{BIN, ChildGuard, TempDir};
use crate::common::{PROCESS_WAIT as WAIT, SECRET, config_toml};
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The server process, killed when the test ends, pass or fail.
struct Server {
    child: ChildGuard,
    log: PathBuf,
}

impl Server {
    /// Starts the binary with the base configuration (one relay thread), `env` added to
    /// a clean systemd environment, and stdout and stderr going to `dir/server.log`.
    fn start(dir: &TempDir, args: &[&str], env: &[(&str, &str)]) -> Server {
        let config = dir.join("turnserver.toml");
        std::fs::write(&config, config_toml(SECRET, "relay-threads = 1")).expect("write config");
        let log = dir.join("server.log");
        let out = std::fs::File::create(&log).expect("create log");
        let err = out.try_clone().expect("clone log");
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(&config)
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("JOURNAL_STREAM")
            .env_remove("FERROTURN_LOG_FORMAT")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = ChildGuard::spawn(&mut cmd, "cargo builds it for the tests");
        Server { child, log }
    }

    fn signal(&self, signal: libc::c_int) {
        self.child.signal(signal);
    }

    /// Waits at most `limit` for the process to exit.
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let status = self.child.exit_within_blocking(limit);
        status.unwrap_or_else(|| {
            panic!(
                "ferroturn did not exit within {limit:?}; log:\n{}",
                self.log()
            )
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The service manager's end of `$NOTIFY_SOCKET`.
struct NotifySocket(UnixDatagram);

impl NotifySocket {
    fn bind(path: &Path) -> NotifySocket {
        NotifySocket(UnixDatagram::bind(path).expect("bind notify socket"))
    }

    /// The next notification, or None after `limit`.
    fn next(&self, limit: Duration) -> Option<String> {
        self.0
            .set_read_timeout(Some(limit.max(Duration::from_millis(1))))
            .expect("set timeout");
        let mut buf = [0u8; 4096];
        match self.0.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("recv on notify socket: {e}"),
        }
    }

    /// Collects notifications until one (other than WATCHDOG=1) arrives, which it
    /// returns with the number of WATCHDOG=1 seen before it; panics after `limit`.
    fn next_state(&self, server: &Server, limit: Duration) -> (String, usize) {
        let deadline = Instant::now() + limit;
        let mut watchdogs = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(msg) = self.next(left) else {
                panic!(
                    "no notification within {limit:?} (after {watchdogs} WATCHDOG=1); log:\n{}",
                    server.log()
                );
            };
            if msg == "WATCHDOG=1" {
                watchdogs += 1;
            } else {
                return (msg, watchdogs);
            }
        }
    }
}

#[test]
fn notifies_ready_watchdog_reloading_and_stopping_in_order() {
    let dir = TempDir::new("systemd-notify");
    let socket_path = dir.join("notify.sock");
    let notify = NotifySocket::bind(&socket_path);
    let mut server = Server::start(
        &dir,
        &[],
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().expect("utf-8 path")),
            ("WATCHDOG_USEC", "200000"),
        ],
    );

    // Nothing, not even a watchdog ping, before READY=1.
    let first = notify.next(WAIT).expect("no READY=1 in time");
    assert_eq!(first, "READY=1", "log:\n{}", server.log());
    assert!(
        server.log().contains("listening (udp)"),
        "READY=1 before the listeners were bound; log:\n{}",
        server.log()
    );

    // Every 100 ms (half of WATCHDOG_USEC); two pings arrive well within a few seconds.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut watchdogs = 0;
    while watchdogs < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = notify
            .next(left)
            .expect("fewer than two WATCHDOG=1 in 10 s");
        assert_eq!(msg, "WATCHDOG=1");
        watchdogs += 1;
    }

    server.signal(libc::SIGHUP);
    let (reloading, _) = notify.next_state(&server, WAIT);
    let mut lines = reloading.lines();
    assert_eq!(lines.next(), Some("RELOADING=1"), "{reloading:?}");
    let usec = lines
        .next()
        .and_then(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(
        usec.is_some_and(|u| u > 0),
        "RELOADING=1 without MONOTONIC_USEC: {reloading:?}"
    );
    let (ready, _) = notify.next_state(&server, WAIT);
    assert_eq!(ready, "READY=1");

    // The watchdog keeps running after a reload.
    let msg = notify.next(Duration::from_secs(10));
    assert_eq!(msg.as_deref(), Some("WATCHDOG=1"), "after the reload");

    server.signal(libc::SIGTERM);
    let (stopping, _) = notify.next_state(&server, WAIT);
    assert_eq!(stopping, "STOPPING=1");
    let status = server.wait(WAIT);
    assert_eq!(status.code(), Some(0), "log:\n{}", server.log());
    // Nothing after STOPPING=1.
    assert_eq!(notify.next(Duration::from_millis(200)), None);
}

#[test]
fn abstract_socket_names_work_and_a_watchdog_for_another_pid_is_ignored() {
    let dir = TempDir::new("systemd-abstract");
    let name = format!("ferroturn-test-{}", std::process::id());
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    let addr = UnixAddr::from_abstract_name(name.as_bytes()).expect("abstract address");
    let notify = NotifySocket(UnixDatagram::bind_addr(&addr).expect("bind abstract socket"));
    let mut server = Server::start(
        &dir,
        &[],
        &[
            ("NOTIFY_SOCKET", &format!("@{name}")),
            ("WATCHDOG_USEC", "100000"),
            // The watchdog belongs to another process (pid 1): send no pings.
            ("WATCHDOG_PID", "1"),
        ],
    );
    assert_eq!(notify.next(WAIT).as_deref(), Some("READY=1"));
    assert_eq!(
        notify.next(Duration::from_millis(500)),
        None,
        "pinged a watchdog meant for pid 1"
    );
    server.signal(libc::SIGINT);
    assert_eq!(notify.next(WAIT).as_deref(), Some("STOPPING=1"));
    assert_eq!(server.wait(WAIT).code(), Some(0), "log:\n{}", server.log());
}

#[test]
fn without_notify_socket_the_server_runs_and_stops_as_before() {
    let dir = TempDir::new("systemd-plain");
    let mut server = Server::start(&dir, &[], &[("WATCHDOG_USEC", "100000")]);
    let deadline = Instant::now() + WAIT;
    while !server.log().contains("listening (udp)") {
        assert!(
            Instant::now() < deadline,
            "not listening; log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait(WAIT).code(), Some(0), "log:\n{}", server.log());
}

/// Starts the server with `args`/`env`, waits for READY=1, stops it, returns its log.
fn log_of_a_run(dir: &TempDir, args: &[&str], env: &[(&str, &str)]) -> String {
    let socket_path = dir.join("notify.sock");
    let notify = NotifySocket::bind(&socket_path);
    let mut env = env.to_vec();
    env.push(("NOTIFY_SOCKET", socket_path.to_str().expect("utf-8 path")));
    let mut server = Server::start(dir, args, &env);
    assert_eq!(notify.next(WAIT).as_deref(), Some("READY=1"));
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait(WAIT).code(), Some(0), "log:\n{}", server.log());
    server.log()
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = TempDir::new("systemd-json");
    let log = log_of_a_run(&dir, &["--log-format", "json"], &[]);
    let mut listening = false;
    for line in log.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert!(value["timestamp"].is_string(), "{line}");
        assert!(value["level"].is_string(), "{line}");
        let message = value["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{line}"));
        if message.starts_with("listening (udp)") {
            listening = true;
            assert!(
                value["addr"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("127.0.0.1:"))
            );
        }
    }
    assert!(listening, "{log}");

    // The same through the environment (Docker, systemd Environment=).
    let dir = TempDir::new("systemd-json-env");
    let log = log_of_a_run(&dir, &[], &[("FERROTURN_LOG_FORMAT", "json")]);
    assert!(log.lines().count() > 0);
    for line in log.lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "{line}"
        );
    }
}

#[test]
fn an_unknown_log_format_is_refused() {
    let out = Command::new(BIN)
        .args(["--log-format", "xml", "--listening-ip", "127.0.0.1"])
        .output()
        .expect("run ferroturn");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("log-format"), "{stderr}");
}

#[test]
fn text_logs_into_the_journal_carry_priorities_and_no_timestamps() {
    use std::os::unix::fs::MetadataExt;
    // stdout is the log file: $JOURNAL_STREAM names its device and inode, as systemd
    // does for the journal's stream socket.
    let dir = TempDir::new("systemd-journal");
    std::fs::File::create(dir.join("server.log")).expect("create log");
    let meta = std::fs::metadata(dir.join("server.log")).expect("stat log");
    // Server::start truncates the same file (same inode).
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    let log = log_of_a_run(&dir, &[], &[("JOURNAL_STREAM", &stream)]);
    let line = log
        .lines()
        .find(|l| l.contains("listening (udp)"))
        .unwrap_or_else(|| panic!("{log}"));
    let rest = line
        .strip_prefix("<6>")
        .unwrap_or_else(|| panic!("no <6> prefix: {line:?}"));
    assert!(rest.trim_start().starts_with("INFO"), "{line:?}");
    assert!(!line.contains("Z "), "timestamp in {line:?}");

    // A JOURNAL_STREAM inherited by a process whose stdout is elsewhere is ignored.
    let dir = TempDir::new("systemd-not-journal");
    let log = log_of_a_run(&dir, &[], &[("JOURNAL_STREAM", "1:2")]);
    let line = log
        .lines()
        .find(|l| l.contains("listening (udp)"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(!line.starts_with('<'), "{line:?}");
    assert!(line.contains("Z "), "no timestamp in {line:?}");
}

/// `systemd-analyze`, or a failure telling how to install it.
fn systemd_analyze() -> &'static str {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "systemd-analyze not found: run `bash scripts/install-test-deps.sh` \
         (it installs Debian's systemd package)"
    );
    "systemd-analyze"
}

/// systemd/ferroturn.service with ExecStart pointing at the built binary (verify needs
/// the binary to exist), in `dir`.
fn unit_for_the_built_binary(dir: &TempDir) -> PathBuf {
    let unit = std::fs::read_to_string(format!(
        "{}/systemd/ferroturn.service",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("read unit");
    assert!(unit.contains("ExecStart=/usr/bin/ferroturn "), "{unit}");
    let unit = unit.replace(
        "ExecStart=/usr/bin/ferroturn ",
        &format!("ExecStart={BIN} "),
    );
    let path = dir.join("ferroturn.service");
    std::fs::write(&path, unit).expect("write unit");
    path
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let analyze = systemd_analyze();
    let dir = TempDir::new("systemd-verify");
    let unit = unit_for_the_built_binary(&dir);
    // The kernel-offload drop-in beside it, where verify reads drop-ins from.
    let drop_ins = dir.join("ferroturn.service.d");
    std::fs::create_dir(&drop_ins).expect("drop-in dir");
    std::fs::copy(
        format!("{}/systemd/kernel-offload.conf", env!("CARGO_MANIFEST_DIR")),
        drop_ins.join("kernel-offload.conf"),
    )
    .expect("copy the drop-in");
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&unit)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("run systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    // verify exits 0 on some warnings; a warning about this unit is a failure too.
    let own: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("ferroturn.service") || l.contains("kernel-offload.conf"))
        .collect();
    assert!(own.is_empty(), "systemd-analyze verify:\n{stderr}");
}

#[test]
fn the_unit_is_hardened_per_systemd_analyze_security() {
    let analyze = systemd_analyze();
    let dir = TempDir::new("systemd-security");
    let unit = unit_for_the_built_binary(&dir);
    let out = Command::new(analyze)
        .args(["security", "--offline=yes", "--no-pager", "--threshold=20"])
        .arg(&unit)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("run systemd-analyze security");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The exposure level is 0.0 (best) to 10.0; "OK" is below 2.5 and the unit scores
    // about 1.5. --threshold counts in tenths.
    assert!(
        out.status.success(),
        "exposure above 2.0:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Overall exposure level"), "{stdout}");
}
