//! systemd's service notification protocol (sd_notify(3)), without libsystemd.
//!
//! With `Type=notify`, systemd passes `$NOTIFY_SOCKET`, a unix datagram socket (a path,
//! or an abstract name written `@name`), and waits for `READY=1` before it counts the
//! service as started. The server sends, in this order over its life:
//!
//! - `READY=1` once every listener is bound;
//! - `RELOADING=1` with `MONOTONIC_USEC=` when a reload starts, `READY=1` when it ends
//!   (also when it failed: the old configuration keeps serving);
//! - `STOPPING=1` when shutdown begins;
//! - `WATCHDOG=1` every half `$WATCHDOG_USEC` in between (`WatchdogSec=`), when the
//!   watchdog is meant for this process (`$WATCHDOG_PID` unset or ours).
//!
//! Without `$NOTIFY_SOCKET` every call does nothing. A failed send is logged once and
//! never stops the server: notification is advice to the service manager, not a duty.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A send never blocks the caller longer than this.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Sends notifications to the service manager, or nothing when there is none.
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    warned: AtomicBool,
}

impl Notifier {
    /// The notifier for `$NOTIFY_SOCKET`; a disabled one when it is unset, empty or
    /// unusable (the reason is logged).
    pub fn from_env() -> Notifier {
        let Some(value) = std::env::var_os("NOTIFY_SOCKET") else {
            return Notifier::disabled();
        };
        match open(value.as_encoded_bytes()) {
            Ok(target) => Notifier {
                target: Some(target),
                warned: AtomicBool::new(false),
            },
            Err(e) => {
                tracing::warn!("NOTIFY_SOCKET ignored: {e}");
                Notifier::disabled()
            }
        }
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier {
            target: None,
            warned: AtomicBool::new(false),
        }
    }

    /// Whether notifications go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Startup finished, or a reload did: `READY=1`.
    pub fn ready(&self) {
        self.send("READY=1");
    }

    /// A reload starts: `RELOADING=1` and the CLOCK_MONOTONIC time it started, as
    /// systemd requires for reload notifications (sd_notify(3)).
    pub fn reloading(&self) {
        if self.is_enabled() {
            self.send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
        }
    }

    /// Shutdown begins: `STOPPING=1`.
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// The service is alive: `WATCHDOG=1`.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// Sends `state` (newline-separated `KEY=value` assignments).
    pub fn send(&self, state: &str) {
        let Some((socket, addr)) = &self.target else {
            return;
        };
        if let Err(e) = socket.send_to_addr(state.as_bytes(), addr) {
            // One warning, not one per watchdog tick.
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!("cannot notify the service manager: {e}");
            }
        }
    }
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, when it is set and
/// `$WATCHDOG_PID` is unset or names this process.
pub fn watchdog_interval() -> Option<Duration> {
    interval_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn interval_from(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != own_pid {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

/// A socket to send from, and the address `value` names: `/path` or `@abstract`.
fn open(value: &[u8]) -> io::Result<(UnixDatagram, SocketAddr)> {
    let addr = match value {
        [b'@', name @ ..] => abstract_addr(name)?,
        [b'/', ..] => SocketAddr::from_pathname(OsStr::from_bytes(value))?,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a unix socket path or @abstract name",
            ));
        }
    };
    let socket = UnixDatagram::unbound()?;
    socket.set_write_timeout(Some(SEND_TIMEOUT))?;
    Ok((socket, addr))
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &[u8]) -> io::Result<SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(_name: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract socket names exist only on Linux",
    ))
}

/// CLOCK_MONOTONIC in microseconds, the clock systemd compares reload times against.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000).saturating_add(nanos / 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_interval_is_half_the_timeout_for_this_process_only() {
        let half = Some(Duration::from_millis(100));
        assert_eq!(interval_from(Some("200000"), None, 7), half);
        assert_eq!(interval_from(Some("200000"), Some("7"), 7), half);
        assert_eq!(interval_from(Some("200000"), Some("8"), 7), None);
        assert_eq!(interval_from(Some("200000"), Some("x"), 7), None);
        assert_eq!(interval_from(None, Some("7"), 7), None);
        assert_eq!(interval_from(Some("0"), None, 7), None);
        assert_eq!(interval_from(Some("-5"), None, 7), None);
    }

    #[test]
    fn socket_names_are_paths_or_abstract() {
        assert!(open(b"relative/path").is_err());
        assert!(open(b"").is_err());
        assert!(open(b"/run/systemd/notify").is_ok());
        #[cfg(target_os = "linux")]
        assert!(open(b"@ferroturn-test").is_ok());
    }

    #[test]
    fn notifications_arrive_as_datagrams() {
        let dir = std::env::temp_dir().join(format!("ferroturn-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let target = open(path.as_os_str().as_encoded_bytes()).unwrap();
        let notifier = Notifier {
            target: Some(target),
            warned: AtomicBool::new(false),
        };
        let mut buf = [0u8; 256];
        notifier.ready();
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        notifier.reloading();
        let n = listener.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        let usec = text.strip_prefix("RELOADING=1\nMONOTONIC_USEC=").unwrap();
        assert!(usec.parse::<u64>().unwrap() > 0, "{text}");
        let _ = std::fs::remove_dir_all(&dir);
        Notifier::disabled().ready();
    }
}
