//! Network namespaces made for one test and deleted when it ends, and a way to run code
//! inside one. Only namespaces created here are entered, and only addresses inside them
//! are used.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;

/// Why the test cannot run here (no root, no `ip`, no namespaces, no BPF): the test
/// prints it in one line and returns.
pub type Unavailable = String;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A set of namespaces deleted on drop (veth pairs go with them).
pub struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    /// Creates one namespace per role (`ftoff-<pid>-<n>-<role>`), lo up in each.
    pub fn new(roles: &[&str]) -> Result<Self, Unavailable> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut set = Namespaces { names: Vec::new() };
        for role in roles {
            let name = format!("ftoff-{}-{n}-{role}", std::process::id());
            ip(&["netns", "add", &name]).map_err(|e| format!("network namespaces: {e}"))?;
            set.names.push(name);
        }
        for name in &set.names {
            ip(&["-n", name, "link", "set", "lo", "up"])?;
        }
        Ok(set)
    }

    /// The name of the namespace made for `role`.
    pub fn name(&self, role: &str) -> &str {
        self.names
            .iter()
            .find(|n| n.ends_with(&format!("-{role}")))
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no namespace for {role}"))
    }

    /// `ip -n <role's namespace> args...`
    pub fn ip(&self, role: &str, args: &[&str]) {
        let mut full = vec!["-n", self.name(role)];
        full.extend_from_slice(args);
        ip(&full).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Sets a sysctl in the role's namespace (`ip netns exec ... sysctl -qw`).
    pub fn sysctl(&self, role: &str, key: &str, value: &str) {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let status = Command::new("ip")
            .args(["netns", "exec", self.name(role), "sh", "-c"])
            .arg(format!("echo {value} > {path}"))
            .status()
            .expect("run ip netns exec");
        assert!(status.success(), "sysctl {key}={value} in {role}");
    }

    /// Runs `f` on a thread of its own that has entered the role's namespace (the
    /// caller's thread stays where it is).
    pub fn run<T: Send>(&self, role: &str, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name(role));
        thread::scope(|s| {
            s.spawn(move || {
                enter(&path);
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Moves the calling thread into the namespace bound at `path`.
fn enter(path: &str) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // SAFETY: setns(2) on a descriptor we own; it only changes this thread's namespace.
    let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// Turns transmit checksum offload off on `dev` (ETHTOOL_STXCSUM), in the calling
/// thread's namespace: a CHECKSUM_PARTIAL skb leaving it is then completed by the kernel
/// (skb_checksum_help) from csum_start, as a NIC would, so the receiver sees the final
/// checksum.
pub fn tx_checksum_off(dev: &str) {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    const ETHTOOL_STXCSUM: u32 = 0x17;
    let mut value = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
        data: 0,
    };
    // SAFETY: ifreq is plain data; all zeroes is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(dev.as_bytes()) {
        *dst = *src as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").expect("socket for ethtool");
    // SAFETY: SIOCETHTOOL reads `req` and the EthtoolValue it points to, both alive.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SIOCETHTOOL,
            &mut req,
        )
    };
    assert_eq!(
        rc,
        0,
        "ethtool tx off {dev}: {}",
        std::io::Error::last_os_error()
    );
}
