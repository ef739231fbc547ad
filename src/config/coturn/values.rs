//! Values whose spelling differs between coturn and ferroturn: peer address ranges and
//! the Redis connection string.

use ferroturn_core::server::policy::IpRange;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// coturn's `IP`, `IP-IP` or `IP/LEN` as ferroturn writes it: a single address as is, a
/// range that is exactly one CIDR block as that block (`10.0.0.0-10.255.255.255` is
/// `10.0.0.0/8`), any other range as `low-high` (ferroturn takes ranges as coturn
/// does). `None` when it is none of these.
pub fn range_text(value: &str) -> Option<String> {
    let value = value.trim();
    if let Some((ip, len)) = value.split_once('/') {
        let ip: IpAddr = ip.trim().parse().ok()?;
        let len: u8 = len.trim().parse().ok()?;
        let bits = if ip.is_ipv4() { 32 } else { 128 };
        return (len <= bits).then(|| format!("{ip}/{len}"));
    }
    // A single address or `low-high`, read as the peer policy reads it.
    let range: IpRange = value.parse().ok()?;
    let bits = if range.start().is_ipv4() { 32 } else { 128 };
    Some(match range.prefix_len() {
        // A single address is written as itself, by the range's Display.
        Some(len) if len < bits => format!("{}/{len}", range.start()),
        _ => range.to_string(),
    })
}

/// coturn's Redis connection string (`host=... dbname=... password=... port=...`, space
/// separated, with the aliases coturn accepts) as a `redis://` URL, and the keys that
/// have no equivalent. A TLS connection is refused: this build's Redis client has no TLS.
pub fn redis_url(conninfo: &str) -> Result<(String, Vec<String>), String> {
    let (mut host, mut port, mut db) = ("127.0.0.1".to_owned(), 6379u16, "0".to_owned());
    let (mut user, mut password) = (None, None);
    let mut ignored = Vec::new();
    for word in conninfo.split(' ').filter(|w| !w.is_empty()) {
        let Some((key, value)) = word.split_once('=') else {
            return Err("the connection string is not key=value words (value not shown)".into());
        };
        match key {
            "host" | "ip" | "addr" | "ipaddr" | "hostaddr" => host = value.to_owned(),
            "dbname" | "db" | "database" => db = value.to_owned(),
            "user" | "uname" | "name" | "username" => user = Some(value.to_owned()),
            "password" | "pwd" | "passwd" | "secret" => password = Some(value.to_owned()),
            "port" | "p" => {
                port = value
                    .parse()
                    .map_err(|_| format!("port `{value}` is not a port number"))?
            }
            "tls" | "ssl" if matches!(value, "1" | "true" | "on" | "yes") => {
                return Err("a TLS connection to Redis: ferroturn's Redis client \
                            speaks plain TCP only (reach Redis over a private network or a \
                            local TLS tunnel, then set redis)"
                    .into());
            }
            // Only the key is named: values may be paths or worse.
            _ => ignored.push(key.to_owned()),
        }
    }
    if db.parse::<u32>().is_err() {
        return Err(format!("dbname `{db}` is not a database number"));
    }
    let host = match host.parse::<Ipv6Addr>() {
        Ok(v6) => format!("[{v6}]"),
        Err(_) if host.parse::<Ipv4Addr>().is_ok() || is_host_name(&host) => host,
        Err(_) => return Err(format!("host `{host}` is not a host name or address")),
    };
    let auth = match (user, password) {
        (None, None) => String::new(),
        (user, password) => format!(
            "{}:{}@",
            encode(user.as_deref().unwrap_or("")),
            encode(password.as_deref().unwrap_or(""))
        ),
    };
    Ok((format!("redis://{auth}{host}:{port}/{db}"), ignored))
}

fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_become_blocks_where_they_are_one() {
        let r = |s: &str| range_text(s);
        assert_eq!(r("10.0.0.0-10.255.255.255").as_deref(), Some("10.0.0.0/8"));
        assert_eq!(
            r("172.16.0.0-172.31.255.255").as_deref(),
            Some("172.16.0.0/12")
        );
        assert_eq!(
            r("192.168.0.0-192.168.255.255").as_deref(),
            Some("192.168.0.0/16")
        );
        assert_eq!(r("0.0.0.0-255.255.255.255").as_deref(), Some("0.0.0.0/0"));
        assert_eq!(
            r("::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff").as_deref(),
            Some("::/0")
        );
        assert_eq!(
            r("fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff").as_deref(),
            Some("fc00::/7")
        );
        assert_eq!(r("198.51.100.7").as_deref(), Some("198.51.100.7"));
        assert_eq!(
            r("198.51.100.7-198.51.100.7").as_deref(),
            Some("198.51.100.7")
        );
        // Not one aligned block: kept as a range, which ferroturn takes as it is.
        assert_eq!(
            r("198.51.100.10-198.51.100.20").as_deref(),
            Some("198.51.100.10-198.51.100.20")
        );
        assert_eq!(r("10.0.0.1-10.0.0.2").as_deref(), Some("10.0.0.1-10.0.0.2"));
        assert_eq!(r("10.0.0.0/8").as_deref(), Some("10.0.0.0/8"));
        for bad in [
            "10.0.0.9-10.0.0.1",
            "10.0.0.1-::1",
            "10.0.0.0/33",
            "ten",
            "1.2.3.4-",
        ] {
            assert_eq!(r(bad), None, "{bad}");
        }
    }

    #[test]
    fn redis_connection_strings_become_urls() {
        let (url, ignored) =
            redis_url("host=10.0.0.7 dbname=2 password=p@ss:w/rd port=6380 connect_timeout=30")
                .unwrap();
        assert_eq!(url, "redis://:p%40ss%3Aw%2Frd@10.0.0.7:6380/2");
        assert_eq!(ignored, ["connect_timeout"]);
        assert_eq!(redis_url("").unwrap().0, "redis://127.0.0.1:6379/0");
        assert_eq!(
            redis_url("ip=::1 db=1 user=turn pwd=x").unwrap().0,
            "redis://turn:x@[::1]:6379/1"
        );
        assert!(redis_url("host=r tls=true").is_err());
        assert!(redis_url("host=a dbname=x").is_err());
        let e = redis_url("host=a hunter2").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
