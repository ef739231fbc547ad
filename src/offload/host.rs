//! What the loader asks of the host: which interfaces carry the server's addresses,
//! which addresses are the host's own, and whether forwarding is on for lo. All of it is
//! read in the calling thread's network namespace.

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// `ARPHRD_ETHER` and `ARPHRD_LOOPBACK`: the link types whose frames start with an
/// Ethernet header, the only ones the program parses.
const ARPHRD_ETHER: u16 = 1;
const ARPHRD_LOOPBACK: u16 = 772;

/// Interfaces the program attaches to: lo always (local clients and peers arrive there),
/// and every Ethernet interface that carries one of `addrs`; a wildcard address stands
/// for every interface with an address of its family. Interfaces of another link type
/// (tunnels, WireGuard) are returned apart: their traffic stays in user space.
pub fn interfaces(addrs: &[IpAddr]) -> io::Result<(Vec<String>, Vec<String>)> {
    let all = if_addrs::get_if_addrs()?;
    let mut wanted = BTreeSet::from(["lo".to_owned()]);
    for iface in &all {
        let ip = iface.ip();
        let carries = addrs
            .iter()
            .any(|a| *a == ip || (a.is_unspecified() && a.is_ipv4() == ip.is_ipv4()));
        if carries {
            wanted.insert(iface.name.clone());
        }
    }
    let (mut ethernet, mut other) = (Vec::new(), Vec::new());
    for name in wanted {
        match link_type(&name)? {
            ARPHRD_ETHER | ARPHRD_LOOPBACK => ethernet.push(name),
            _ => other.push(name),
        }
    }
    Ok((ethernet, other))
}

/// The link type (`ARPHRD_*`) of the interface `name`.
fn link_type(name: &str) -> io::Result<u16> {
    let bytes = name.as_bytes();
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if bytes.len() >= req.ifr_name.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name",
        ));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: plain socket(2); the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: SIOCGIFHWADDR reads ifr_name and writes ifr_hwaddr inside `req`, which
    // outlives the call.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            libc::SIOCGIFHWADDR,
            &mut req,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled the ifru_hwaddr member for SIOCGIFHWADDR.
    Ok(unsafe { req.ifr_ifru.ifru_hwaddr.sa_family })
}

/// Whether forwarding is on for lo in the family of `ip` (`bpf_fib_lookup` needs it on
/// its input interface).
pub fn lo_forwarding(ip: IpAddr) -> bool {
    let path = if ip.is_ipv4() {
        "/proc/sys/net/ipv4/conf/lo/forwarding"
    } else {
        "/proc/sys/net/ipv6/conf/lo/forwarding"
    };
    std::fs::read_to_string(path).is_ok_and(|s| s.trim() != "0")
}

pub fn sysctl_family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "ipv4" } else { "ipv6" }
}

/// The host's own addresses, re-read at most once a second (channel binds can come by
/// the thousand).
#[derive(Default)]
pub struct LocalAddrs {
    read_at: Option<Instant>,
    addrs: Vec<IpAddr>,
}

const REREAD: Duration = Duration::from_secs(1);

impl LocalAddrs {
    /// Whether `ip` is one of this host's addresses (loopback included).
    pub fn contains(&mut self, ip: IpAddr) -> bool {
        if ip.is_loopback() {
            return true;
        }
        let now = Instant::now();
        if self.read_at.is_none_or(|t| now.duration_since(t) >= REREAD) {
            // A failed read keeps the previous list: a destination that is really
            // local then goes through the route lookup, which hands it to user space.
            if let Ok(list) = if_addrs::get_if_addrs() {
                self.addrs = list.iter().map(|i| i.ip()).collect();
            }
            self.read_at = Some(now);
        }
        self.addrs.contains(&ip)
    }
}

/// Unicast: not unspecified, multicast or the IPv4 limited broadcast.
pub fn is_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_local_and_multicast_is_not_unicast() {
        let mut local = LocalAddrs::default();
        assert!(local.contains("127.0.0.7".parse().unwrap()));
        assert!(local.contains("::1".parse().unwrap()));
        assert!(!local.contains("192.0.2.1".parse().unwrap()));
        assert!(!is_unicast("224.0.0.1".parse().unwrap()));
        assert!(!is_unicast("255.255.255.255".parse().unwrap()));
        assert!(!is_unicast("::".parse().unwrap()));
        assert!(is_unicast("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn lo_is_a_loopback_link() {
        assert_eq!(link_type("lo").ok(), Some(ARPHRD_LOOPBACK));
        assert!(link_type("no-such-if0").is_err());
    }
}
