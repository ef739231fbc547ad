//! The HTTP API's options, checked once into [`ApiConfig`]. Keys are configured as the
//! hex SHA-256 of the bearer token, so the file never holds a usable token.

use super::error::{ConfigError, err};
use super::raw::RawConfig;
use serde::Deserialize;
use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// A credentials key with its own limits, as written in the file (`[[api-key]]`) or on
/// the command line (`sha256=HEX,max-ttl=SECONDS,origin=URL,...`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawApiKey {
    pub sha256: String,
    pub max_ttl: Option<u64>,
    #[serde(default)]
    pub origins: Vec<String>,
}

impl FromStr for RawApiKey {
    type Err = ConfigError;

    fn from_str(spec: &str) -> Result<Self, ConfigError> {
        let mut key = RawApiKey::default();
        for part in spec.split(',') {
            let (name, value) = part.split_once('=').ok_or_else(|| {
                ConfigError::new("api-key", format!("`{part}` is not name=value"))
            })?;
            match name.trim() {
                "sha256" => key.sha256 = value.trim().to_owned(),
                "max-ttl" => {
                    key.max_ttl = Some(value.trim().parse().map_err(|_| {
                        ConfigError::new("api-key", format!("max-ttl `{value}` is not a number"))
                    })?)
                }
                "origin" => key.origins.push(value.trim().to_owned()),
                other => {
                    return err(
                        "api-key",
                        format!("unknown field `{other}` (sha256, max-ttl, origin)"),
                    );
                }
            }
        }
        Ok(key)
    }
}

/// A SHA-256 digest of a bearer token.
pub type KeyHash = [u8; 32];

/// A key accepted by the credentials endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    pub sha256: KeyHash,
    /// Longest TTL this key may obtain (on top of `max-credential-ttl`).
    pub max_ttl: Option<u64>,
    /// Origins a browser may call from with this key (`*`: any).
    pub origins: Vec<String>,
}

/// The TURN REST secret credentials are signed with (and the usage webhook's). Never
/// formatted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: String) -> Self {
        Self(secret)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The HTTP API's configuration. Everything but `listen` and `tls` follows a reload.
#[derive(Clone, Debug, Default)]
pub struct ApiConfig {
    /// Where the API listens; `None`: no API.
    pub listen: Option<SocketAddr>,
    /// Serve HTTPS with the TURN certificate.
    pub tls: bool,
    pub keys: Vec<ApiKey>,
    pub admin_keys: Vec<KeyHash>,
    /// TTL when the request names none.
    pub default_ttl: u64,
    /// `max-credential-ttl`: the server refuses usernames further ahead.
    pub max_ttl: Option<u64>,
    /// The first `static-auth-secret`, which signs issued credentials.
    pub secret: Option<Secret>,
    pub separator: char,
    /// Host for derived URIs (IPv6 literals bracketed).
    pub public_host: Option<String>,
    /// URIs given verbatim.
    pub turn_uris: Vec<String>,
}

/// Checks the API options. `separator` and `max_ttl` are the REST settings the TURN side
/// verifies usernames with.
pub fn from_raw(
    raw: &RawConfig,
    separator: char,
    max_ttl: Option<u64>,
) -> Result<ApiConfig, ConfigError> {
    let mut keys = Vec::new();
    for hex in &raw.api_key_sha256 {
        keys.push(ApiKey {
            sha256: parse_hash("api-key-sha256", hex)?,
            max_ttl: None,
            origins: Vec::new(),
        });
    }
    for k in &raw.api_key {
        if k.max_ttl == Some(0) {
            return err("api-key", "max-ttl must be at least 1 second");
        }
        for o in &k.origins {
            check_origin(o)?;
        }
        keys.push(ApiKey {
            sha256: parse_hash("api-key", &k.sha256)?,
            max_ttl: k.max_ttl,
            origins: k.origins.clone(),
        });
    }
    let admin_keys = raw
        .admin_key_sha256
        .iter()
        .map(|h| parse_hash("admin-key-sha256", h))
        .collect::<Result<Vec<_>, _>>()?;
    let secret = raw.static_auth_secret.first().cloned().map(Secret);
    if !keys.is_empty() && secret.is_none() {
        return err(
            "api-key-sha256",
            "the credentials endpoint signs with static-auth-secret, and none is set",
        );
    }
    let default_ttl = raw
        .credential_ttl
        .unwrap_or(super::defaults::CREDENTIAL_TTL);
    if default_ttl == 0 || default_ttl > u64::from(u32::MAX) {
        return err("credential-ttl", "must be between 1 and 4294967295 seconds");
    }
    if let Some(max) = max_ttl.filter(|m| default_ttl > *m) {
        return err(
            "credential-ttl",
            format!(
                "exceeds max-credential-ttl ({max}): the server would refuse its own credentials"
            ),
        );
    }
    let public_host = raw.public_host.as_deref().map(host_for_uri).transpose()?;
    for uri in &raw.turn_uris {
        if !(uri.starts_with("turn:") || uri.starts_with("turns:"))
            || uri.contains(char::is_whitespace)
        {
            return err("turn-uris", format!("`{uri}` is not a turn: or turns: URI"));
        }
    }
    let tls = raw.api_tls.unwrap_or(false);
    if tls && (raw.cert.is_none() || raw.pkey.is_none() || raw.no_tls == Some(true)) {
        return err(
            "api-tls",
            "needs cert and pkey (and TLS not turned off with no-tls)",
        );
    }
    Ok(ApiConfig {
        listen: raw.api_listen,
        tls,
        keys,
        admin_keys,
        default_ttl,
        max_ttl,
        secret,
        separator,
        public_host,
        turn_uris: raw.turn_uris.clone(),
    })
}

/// A host name or IP address as it goes into a URI (IPv6 literals bracketed).
fn host_for_uri(host: &str) -> Result<String, ConfigError> {
    if let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<Ipv6Addr>()
    {
        return Ok(format!("[{ip}]"));
    }
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || "/?#@[]:".contains(c)) {
        return err(
            "public-host",
            format!("`{host}` is not a host name or IP address"),
        );
    }
    Ok(host.to_owned())
}

/// 64 hex digits.
fn parse_hash(key: &'static str, hex: &str) -> Result<KeyHash, ConfigError> {
    let hex = hex.trim();
    let mut out = [0u8; 32];
    if hex.len() != 64 || !hex.is_ascii() {
        return err(key, "expected the SHA-256 of a token: 64 hex digits");
    }
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .or_else(|_| err(key, "expected the SHA-256 of a token: 64 hex digits"))?;
    }
    Ok(out)
}

/// `*`, or `scheme://host[:port]` exactly as browsers send it in `Origin`.
fn check_origin(origin: &str) -> Result<(), ConfigError> {
    if origin == "*" {
        return Ok(());
    }
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', ' ']) => Ok(()),
        _ => err(
            "api-key",
            format!(
                "origin `{origin}` must be `*` or scheme://host[:port], without a path or trailing /"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const BASE: &str = "listening-ip = [\"127.0.0.1\"]\nstatic-auth-secret = [\"s\"]\n";
    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn off_by_default() {
        let c = Config::from_toml_str(BASE).unwrap();
        assert!(c.api.listen.is_none() && c.api.keys.is_empty());
        assert_eq!(c.api.default_ttl, 86_400);
    }

    #[test]
    fn keys_parse_from_the_file_and_flags() {
        let c = Config::from_toml_str(&format!(
            "{BASE}api-listen = \"127.0.0.1:8080\"\napi-key-sha256 = [\"{HASH}\"]\n\
             [[api-key]]\nsha256 = \"{}\"\nmax-ttl = 600\norigins = [\"https://app.example\"]\n",
            HASH.to_uppercase()
        ))
        .unwrap();
        assert_eq!(c.api.keys.len(), 2);
        assert_eq!(c.api.keys[0].sha256, c.api.keys[1].sha256);
        assert_eq!(c.api.keys[1].max_ttl, Some(600));
        assert_eq!(c.api.keys[1].origins, ["https://app.example"]);
        let flag: RawApiKey = format!("sha256={HASH},max-ttl=60,origin=http://a:1,origin=*")
            .parse()
            .unwrap();
        assert_eq!(flag.max_ttl, Some(60));
        assert_eq!(flag.origins, ["http://a:1", "*"]);
        assert!("sha256".parse::<RawApiKey>().is_err());
        assert!("colour=red".parse::<RawApiKey>().is_err());
    }

    #[test]
    fn bad_values_name_the_key() {
        for (extra, key) in [
            ("api-key-sha256 = [\"abc\"]\n", "api-key-sha256"),
            ("admin-key-sha256 = [\"zz\"]\n", "admin-key-sha256"),
            ("credential-ttl = 0\n", "credential-ttl"),
            ("credential-ttl = 999999999\n", "credential-ttl"),
            ("public-host = \"a b\"\n", "public-host"),
            ("turn-uris = [\"http://x\"]\n", "turn-uris"),
            ("api-tls = true\n", "api-tls"),
            (
                &format!("[[api-key]]\nsha256 = \"{HASH}\"\norigins = [\"https://a/\"]\n"),
                "api-key",
            ),
        ] {
            let e = Config::from_toml_str(&format!("{BASE}{extra}")).unwrap_err();
            assert!(e.to_string().contains(key), "{extra}: {e}");
        }
        let e = Config::from_toml_str(&format!(
            "listening-ip = [\"127.0.0.1\"]\nuser = [\"a:b\"]\napi-key-sha256 = [\"{HASH}\"]\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("static-auth-secret"), "{e}");
    }

    #[test]
    fn ipv6_public_host_is_bracketed_and_the_secret_not_shown() {
        let c = Config::from_toml_str(&format!("{BASE}public-host = \"2001:db8::1\"\n")).unwrap();
        assert_eq!(c.api.public_host.as_deref(), Some("[2001:db8::1]"));
        assert!(!format!("{:?}", c.api).contains("\"s\""));
    }
}
