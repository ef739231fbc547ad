//! `kernel-offload` as the systemd drop-in grants it: the binary, run as an unprivileged
//! user with exactly the capabilities `systemd/kernel-offload.conf` adds
//! (AmbientCapabilities=), loads and attaches the program; without them "on" refuses to
//! start with the reason and "auto" runs on in user space after one line saying why.
//! Needs root (to drop to another user with chosen capabilities), setpriv and BPF.

use crate::common::PROCESS_WAIT;
use crate::common::process::{BIN, ChildGuard};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

/// The capabilities the drop-in adds, as setpriv spells them (`bpf,net_admin`).
fn drop_in_capabilities() -> String {
    let text = std::fs::read_to_string(format!(
        "{}/systemd/kernel-offload.conf",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("read systemd/kernel-offload.conf");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("AmbientCapabilities= in the drop-in");
    line.split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(",")
}

/// Why this cannot run here, if it cannot.
fn unavailable() -> Option<String> {
    if let Some(why) = crate::common::kernel_offload_unavailable() {
        return Some(why);
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        return Some("setpriv (util-linux) is not installed".into());
    }
    None
}

/// The server as user nobody with `caps` (setpriv's list, empty for none) and
/// `kernel-offload = mode`. Returns the log up to the `listening (udp)` line, or
/// everything it printed and its exit status when it stopped before that.
fn run_as_nobody(caps: &str, mode: &str) -> (String, Option<std::process::ExitStatus>) {
    let set = if caps.is_empty() {
        "-all".to_owned()
    } else {
        format!("-all,+{}", caps.replace(',', ",+"))
    };
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(format!("--inh-caps={set}"))
        .arg(format!("--ambient-caps={set}"))
        .arg(format!("--bounding-set={set}"))
        .arg(BIN)
        .args([
            "--listening-ip",
            "127.0.0.1",
            "--listening-port",
            "0",
            "--static-auth-secret",
            "s",
            "--no-tcp",
            "--log-level",
            "info",
            "--kernel-offload",
            mode,
        ])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = ChildGuard::spawn(&mut command, "setpriv is part of util-linux");
    let stderr = child.stderr_text();
    let stdout = child.take_stdout();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + PROCESS_WAIT;
    let mut log = String::new();
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        log.push_str(&line);
        log.push('\n');
        if line.contains("listening (udp)") {
            return (log, None);
        }
    }
    let status = child.exit_within_blocking(PROCESS_WAIT);
    log.push_str(&stderr.text_blocking());
    (log, status)
}

#[test]
fn the_drop_ins_capabilities_are_enough_for_kernel_offload() {
    if let Some(why) = unavailable() {
        println!("kernel offload test skipped: {why}");
        return;
    }
    let caps = drop_in_capabilities();
    assert_eq!(caps, "bpf,net_admin");
    let (log, stopped) = run_as_nobody(&caps, "on");
    assert!(stopped.is_none(), "did not start:\n{log}");
    assert!(log.contains("kernel offload on: TC ingress of lo"), "{log}");
}

#[test]
fn without_the_capabilities_on_refuses_to_start_and_auto_says_why() {
    if let Some(why) = unavailable() {
        println!("kernel offload test skipped: {why}");
        return;
    }
    let (log, stopped) = run_as_nobody("", "on");
    let status = stopped.expect("started without CAP_BPF");
    assert!(!status.success(), "{log}");
    assert!(log.contains("kernel-offload = \"on\""), "{log}");

    let (log, stopped) = run_as_nobody("", "auto");
    assert!(stopped.is_none(), "auto did not start:\n{log}");
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("kernel offload unavailable"))
        .collect();
    assert_eq!(said.len(), 1, "{log}");
}
