//! `external-ip = "auto"`: the public address of the relays learned from STUN servers
//! (`external-ip-stun-servers`, asked at start and every `external-ip-interval`) instead
//! of written in the configuration.

use super::RawConfig;
use super::defaults as d;
use super::error::{ConfigError, err};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The `external-ip` value that asks for discovery.
pub const AUTO: &str = "auto";
/// The most STUN servers one configuration names.
const MAX_SERVERS: usize = 16;

/// Where and how often the public address is learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalIpAuto {
    /// Asked in this order; the first that answers decides.
    pub servers: Vec<StunServer>,
    pub interval: Duration,
}

/// A STUN server as configured: a host name or an IP address, and a port (3478 when
/// none is given). Names are resolved each time the address is learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StunServer {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for StunServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl std::str::FromStr for StunServer {
    type Err = String;

    /// `host`, `host:port`, `IPv4`, `IPv4:port`, `IPv6` or `[IPv6]:port`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not host, host:port or [IPv6]:port");
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Self {
                host: ip.to_string(),
                port: d::STUN_PORT,
            });
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Self {
                host: addr.ip().to_string(),
                port: addr.port(),
            });
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad())?),
            None => (s, d::STUN_PORT),
        };
        let name_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !name_ok || port == 0 {
            return Err(bad());
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

/// Whether `external-ip` asks for discovery.
pub fn is_auto(raw: &RawConfig) -> bool {
    raw.external_ip.iter().any(|e| e == AUTO)
}

/// `external-ip = "auto"` and its options, checked; `None` when the address is not
/// learned (options of discovery without it are errors).
pub fn from_raw(raw: &RawConfig) -> Result<Option<ExternalIpAuto>, ConfigError> {
    if !is_auto(raw) {
        if !raw.external_ip_stun_servers.is_empty() {
            return err(
                "external-ip-stun-servers",
                "only used with external-ip = \"auto\"",
            );
        }
        if raw.external_ip_interval.is_some() {
            return err(
                "external-ip-interval",
                "only used with external-ip = \"auto\"",
            );
        }
        return Ok(None);
    }
    if raw.external_ip.len() > 1 {
        return err(
            "external-ip",
            "\"auto\" learns every family's address: give it alone",
        );
    }
    if raw.external_ip_stun_servers.is_empty() {
        return err(
            "external-ip-stun-servers",
            "external-ip = \"auto\" needs at least one STUN server to ask",
        );
    }
    if raw.external_ip_stun_servers.len() > MAX_SERVERS {
        return err(
            "external-ip-stun-servers",
            format!("at most {MAX_SERVERS} servers"),
        );
    }
    let servers = raw
        .external_ip_stun_servers
        .iter()
        .map(|s| s.parse().or_else(|e| err("external-ip-stun-servers", e)))
        .collect::<Result<Vec<StunServer>, _>>()?;
    let interval = match raw.external_ip_interval {
        Some(0) => return err("external-ip-interval", "must be at least 1 second"),
        Some(s) => s,
        None => d::EXTERNAL_IP_INTERVAL,
    };
    Ok(Some(ExternalIpAuto {
        servers,
        interval: Duration::from_secs(interval),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const BASE: &str = "listening-ip = [\"10.0.0.5\"]\nstatic-auth-secret = [\"s\"]\n";

    fn config(extra: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(&format!("{BASE}{extra}"))
    }

    #[test]
    fn auto_takes_servers_by_name_or_address_and_a_default_interval() {
        let c = config(
            "external-ip = \"auto\"\nexternal-ip-stun-servers = [\"stun.example.org\", \
             \"stun2.example.org:19302\", \"192.0.2.1:3479\", \"[2001:db8::1]:3478\", \
             \"2001:db8::2\"]\n",
        )
        .unwrap();
        let auto = c.external_ip_auto.unwrap();
        let shown: Vec<String> = auto.servers.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            shown,
            [
                "stun.example.org:3478",
                "stun2.example.org:19302",
                "192.0.2.1:3479",
                "[2001:db8::1]:3478",
                "[2001:db8::2]:3478"
            ]
        );
        assert_eq!(auto.interval, Duration::from_secs(d::EXTERNAL_IP_INTERVAL));
        // Until something is learned, the relay is advertised as it is bound.
        let relay = c.server.relay_v4.unwrap();
        assert_eq!(relay.advertised, relay.local);
        // The list form says the same.
        let list = config("external-ip = [\"auto\"]\nexternal-ip-stun-servers = [\"h\"]\n");
        assert!(list.unwrap().external_ip_auto.is_some());
    }

    #[test]
    fn auto_refuses_what_it_cannot_use() {
        for (extra, key) in [
            ("external-ip = \"auto\"\n", "external-ip-stun-servers"),
            (
                "external-ip = [\"auto\", \"203.0.113.5\"]\nexternal-ip-stun-servers = [\"h\"]\n",
                "external-ip",
            ),
            (
                "external-ip-stun-servers = [\"h\"]\n",
                "external-ip-stun-servers",
            ),
            ("external-ip-interval = 60\n", "external-ip-interval"),
            (
                "external-ip = \"auto\"\nexternal-ip-stun-servers = [\"h\"]\nexternal-ip-interval = 0\n",
                "external-ip-interval",
            ),
            (
                "external-ip = \"auto\"\nexternal-ip-stun-servers = [\"bad host:1\"]\n",
                "external-ip-stun-servers",
            ),
            (
                "external-ip = \"auto\"\nexternal-ip-stun-servers = [\"h:0\"]\n",
                "external-ip-stun-servers",
            ),
            (
                "external-ip = \"auto\"\nexternal-ip-stun-servers = [\"h:99999\"]\n",
                "external-ip-stun-servers",
            ),
        ] {
            let e = config(extra).expect_err(extra);
            assert_eq!(e.key, Some(key), "{extra}: {e}");
        }
    }
}
