//! The peer-address policy: the one place that decides whether a peer may be relayed to
//! or from. Every IPv4 address written inside IPv6 is judged as the IPv4 address it
//! carries, so no other spelling of 127.0.0.1 gets through.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// An inclusive range of addresses of one family; need not be prefix aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpRange {
    start: IpAddr,
    end: IpAddr,
}

impl IpRange {
    pub fn new(start: IpAddr, end: IpAddr) -> Option<Self> {
        match (start, end) {
            (IpAddr::V4(a), IpAddr::V4(b)) if a <= b => Some(Self { start, end }),
            (IpAddr::V6(a), IpAddr::V6(b)) if a <= b => Some(Self { start, end }),
            _ => None,
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.start, self.end, ip) {
            (IpAddr::V4(a), IpAddr::V4(b), IpAddr::V4(x)) => a <= x && x <= b,
            (IpAddr::V6(a), IpAddr::V6(b), IpAddr::V6(x)) => a <= x && x <= b,
            _ => false,
        }
    }

    /// The first address.
    pub fn start(&self) -> IpAddr {
        self.start
    }

    /// The prefix length when the range is exactly one aligned CIDR block
    /// (`10.0.0.0-10.255.255.255` is `/8`; a single address is `/32` or `/128`).
    pub fn prefix_len(&self) -> Option<u8> {
        let (lo, hi, bits) = match (self.start, self.end) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                (u128::from(u32::from(a)), u128::from(u32::from(b)), 32)
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
            _ => return None,
        };
        // The whole IPv6 space has 2^128 addresses, one more than u128 holds.
        let host_bits = match (hi - lo).checked_add(1) {
            None => 128,
            Some(size) if size.is_power_of_two() => size.trailing_zeros(),
            Some(_) => return None,
        };
        let aligned = host_bits == 128 || lo & ((1u128 << host_bits) - 1) == 0;
        aligned.then(|| (bits - host_bits) as u8)
    }

    fn cidr(ip: IpAddr, prefix: u8) -> Option<Self> {
        match ip {
            IpAddr::V4(v4) if prefix <= 32 => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                let start = u32::from(v4) & mask;
                Self::new(
                    Ipv4Addr::from(start).into(),
                    Ipv4Addr::from(start | !mask).into(),
                )
            }
            IpAddr::V6(v6) if prefix <= 128 => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                let start = u128::from(v6) & mask;
                Self::new(
                    Ipv6Addr::from(start).into(),
                    Ipv6Addr::from(start | !mask).into(),
                )
            }
            _ => None,
        }
    }
}

/// Why a text is not an [`IpRange`]; both variants quote the text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IpRangeError {
    #[error("`{0}` is not an IP address, CIDR block or `start-end` range")]
    Syntax(String),
    #[error("`{0}`: start after end or mixed families")]
    Order(String),
}

impl FromStr for IpRange {
    type Err = IpRangeError;

    /// Accepts `a.b.c.d`, `a.b.c.d/len`, `start-end` (either family).
    fn from_str(s: &str) -> Result<Self, IpRangeError> {
        let s = s.trim();
        let bad = || IpRangeError::Syntax(s.to_owned());
        if let Some((a, b)) = s.split_once('-') {
            let a: IpAddr = a.trim().parse().map_err(|_| bad())?;
            let b: IpAddr = b.trim().parse().map_err(|_| bad())?;
            return Self::new(a, b).ok_or_else(|| IpRangeError::Order(s.to_owned()));
        }
        if let Some((ip, len)) = s.split_once('/') {
            let ip: IpAddr = ip.parse().map_err(|_| bad())?;
            let len: u8 = len.parse().map_err(|_| bad())?;
            return Self::cidr(ip, len).ok_or_else(bad);
        }
        let ip: IpAddr = s.parse().map_err(|_| bad())?;
        Ok(Self { start: ip, end: ip })
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

/// The ranges refused by default (RFC 8656 security considerations and the operational advice around
/// it): this host, private networks, link-local and cloud metadata, multicast, reserved.
pub const DEFAULT_DENIED: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// The IPv4 address carried by an IPv6 spelling of it: IPv4-mapped (::ffff:a.b.c.d),
/// IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::/96) and 6to4 (2002:AABB:CCDD::/48).
pub fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low),
        // ::a.b.c.d, but not :: and ::1, which are IPv6 addresses in their own right.
        [0, 0, 0, 0, 0, 0, hi, lo] if hi != 0 || lo > 1 => Some(low),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, a, b, ..] => Some(Ipv4Addr::new(
            (a >> 8) as u8,
            a as u8,
            (b >> 8) as u8,
            b as u8,
        )),
        _ => None,
    }
}

/// The address a peer is judged as: IPv4 for any embedded IPv4 form.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => embedded_ipv4(v6).map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Decides which peers may be relayed to and from.
#[derive(Clone, Debug)]
pub struct PeerPolicy {
    allowed: Vec<IpRange>,
    denied: Vec<IpRange>,
    own: Vec<IpAddr>,
    /// The public addresses `external-ip = "auto"` learned, IPv4 and IPv6: the server's
    /// own too, replaced when they change.
    learned: [Option<IpAddr>; 2],
}

/// Why a peer was refused (logged and, later, counted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denial {
    DeniedRange,
    OwnAddress,
}

impl PeerPolicy {
    /// `allowed` wins over `denied`; `own` are the server's addresses (listeners, relay and
    /// external IPs), on which only live relayed addresses are reachable.
    pub fn new(allowed: Vec<IpRange>, denied: Vec<IpRange>, own: Vec<IpAddr>) -> Self {
        let own = own.into_iter().map(canonical).collect();
        Self {
            allowed,
            denied,
            own,
            learned: [None; 2],
        }
    }

    /// The public addresses learned for `external-ip = "auto"` (IPv4, IPv6).
    pub fn learned(&self) -> [Option<IpAddr>; 2] {
        self.learned
    }

    /// Replaces the learned public addresses: relaying to them reaches only live relays,
    /// as to any other address of the server's.
    pub fn set_learned(&mut self, learned: [Option<IpAddr>; 2]) {
        self.learned = learned.map(|ip| ip.map(canonical));
    }

    #[inline]
    fn is_own(&self, ip: IpAddr) -> bool {
        self.own.contains(&ip) || self.learned.contains(&Some(ip))
    }

    /// Adds more of the server's own addresses (the host's interface addresses, found by
    /// the I/O layer): other services on them are unreachable through the relay too.
    pub fn add_own(&mut self, extra: impl IntoIterator<Item = IpAddr>) {
        for ip in extra.into_iter().map(canonical) {
            if !self.own.contains(&ip) {
                self.own.push(ip);
            }
        }
    }

    /// The default deny list plus `extra`.
    pub fn default_denied(extra: Vec<IpRange>) -> Vec<IpRange> {
        DEFAULT_DENIED
            .iter()
            .filter_map(|r| r.parse().ok())
            .chain(extra)
            .collect()
    }

    /// Whether relaying to/from `peer` is allowed; `is_live_relay` tells whether an address
    /// is a live relayed address of this server (client-to-client through one server).
    pub fn check(
        &self,
        peer: SocketAddr,
        is_live_relay: impl Fn(SocketAddr) -> bool,
    ) -> Result<(), Denial> {
        let ip = canonical(peer.ip());
        // Only the address itself reaches a live relay: an embedded form of it
        // (NAT64, 6to4) would leave toward a gateway, not this host.
        if ip == peer.ip() && self.is_own(ip) && is_live_relay(peer) {
            return Ok(());
        }
        if self.allowed.iter().any(|r| r.contains(ip)) {
            return Ok(());
        }
        if self.denied.iter().any(|r| r.contains(ip)) {
            return Err(Denial::DeniedRange);
        }
        if self.is_own(ip) {
            return Err(Denial::OwnAddress);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_policy() -> PeerPolicy {
        PeerPolicy::new(
            vec![],
            PeerPolicy::default_denied(vec![]),
            vec!["203.0.113.5".parse().unwrap()],
        )
    }

    fn denied(p: &PeerPolicy, addr: &str) -> bool {
        let addr: SocketAddr = addr.parse().unwrap();
        p.check(addr, |a| a == "203.0.113.5:50000".parse().unwrap())
            .is_err()
    }

    #[test]
    fn every_default_range_and_its_ipv6_spellings_are_denied() {
        let p = default_policy();
        for a in [
            "0.0.0.0:1",
            "0.1.2.3:1",
            "127.0.0.1:1",
            "127.255.255.254:1",
            "10.1.2.3:1",
            "100.64.0.1:1",
            "100.127.255.255:1",
            "169.254.169.254:80",
            "172.16.0.1:1",
            "172.31.255.255:1",
            "192.168.1.1:1",
            "224.0.0.1:1",
            "239.255.255.255:1",
            "240.0.0.1:1",
            "255.255.255.255:1",
            "[::]:1",
            "[::1]:1",
            "[fc00::1]:1",
            "[fdff::1]:1",
            "[fe80::1]:1",
            "[ff02::1]:1",
            "[::ffff:127.0.0.1]:1",
            "[::127.0.0.1]:1",
            "[64:ff9b::7f00:1]:1",
            "[2002:7f00:1::]:1",
            "[::ffff:169.254.169.254]:80",
            "[::ffff:10.0.0.1]:1",
            "[::ffff:0.0.0.0]:1",
        ] {
            assert!(denied(&p, a), "{a} must be denied");
        }
        for a in [
            "8.8.8.8:53",
            "100.128.0.1:1",
            "172.32.0.1:1",
            "[2001:db8::1]:1",
            "[::ffff:8.8.8.8]:1",
        ] {
            assert!(!denied(&p, a), "{a} must be allowed");
        }
    }

    #[test]
    fn own_addresses_only_reach_live_relays() {
        let p = default_policy();
        assert!(!denied(&p, "203.0.113.5:50000"));
        assert!(denied(&p, "203.0.113.5:22"));
        assert!(denied(&p, "[::ffff:203.0.113.5]:22"));
        // A mapped spelling of a live relay is not the relay: refused like the rest.
        assert!(denied(&p, "[::ffff:203.0.113.5]:50000"));
        assert!(
            denied(&p, "[64:ff9b::cb00:7105]:50000"),
            "NAT64 form of 203.0.113.5"
        );
    }

    #[test]
    fn host_interface_addresses_added_later_are_own_too() {
        let mut p = default_policy();
        assert!(
            !denied(&p, "1.2.3.4:22"),
            "a public address is a peer like any other"
        );
        p.add_own(["1.2.3.4".parse().unwrap()]);
        assert!(denied(&p, "1.2.3.4:22"));
        assert!(denied(&p, "[::ffff:1.2.3.4]:22"), "in every spelling");
    }

    #[test]
    fn allowed_overrides_denied_and_ranges_need_no_alignment() {
        let allowed = vec!["127.0.0.1".parse().unwrap()];
        let p = PeerPolicy::new(
            allowed,
            PeerPolicy::default_denied(vec!["8.8.8.3-8.8.8.9".parse().unwrap()]),
            vec![],
        );
        assert!(!denied(&p, "127.0.0.1:9"));
        assert!(!denied(&p, "[::ffff:127.0.0.1]:9"));
        assert!(denied(&p, "127.0.0.2:9"));
        assert!(denied(&p, "8.8.8.3:1") && denied(&p, "8.8.8.9:1"));
        assert!(!denied(&p, "8.8.8.2:1") && !denied(&p, "8.8.8.10:1"));
    }

    #[test]
    fn range_syntax() {
        assert!("10.0.0.0/8".parse::<IpRange>().is_ok());
        assert!("10.0.0.0/33".parse::<IpRange>().is_err());
        assert!("10.0.0.9-10.0.0.1".parse::<IpRange>().is_err());
        assert!("10.0.0.1-::1".parse::<IpRange>().is_err());
        assert!("nonsense".parse::<IpRange>().is_err());
        assert_eq!(
            "::/0".parse::<IpRange>().unwrap().to_string(),
            ":: - ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".replace(' ', "")
        );
    }
}
