//! Configuration: the TOML file and the command-line flags share one schema (coturn's
//! option names), flags override the file, and the result is turned once into typed
//! configuration. Unknown keys and bad values are errors that name the key.

use ferroturn_core::auth::Credentials;
use ferroturn_core::auth::credentials::Password;
use ferroturn_core::server::{IpRange, PeerPolicy, RelayAddress, ServerConfig};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every option, as written in the file or on the command line. All are optional here;
/// defaults are applied in [`Config::from_raw`].
#[derive(Clone, Debug, Default, Deserialize, clap::Args)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawConfig {
    /// Address to listen on (repeat for several). Default 0.0.0.0.
    #[arg(long, value_name = "IP")]
    #[serde(default)]
    pub listening_ip: Vec<IpAddr>,
    /// Port for STUN/TURN over UDP and TCP. Default 3478.
    #[arg(long, value_name = "PORT")]
    pub listening_port: Option<u16>,
    /// Port for TURN over TLS. Default 5349 (443 passes most firewalls).
    #[arg(long, value_name = "PORT")]
    pub tls_listening_port: Option<u16>,
    /// A second port served like listening-port (UDP and TCP). Default: none.
    #[arg(long, value_name = "PORT")]
    pub alt_listening_port: Option<u16>,
    /// A second port served like tls-listening-port. Default: none.
    #[arg(long, value_name = "PORT")]
    pub alt_tls_listening_port: Option<u16>,
    /// Do not listen on UDP.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub no_udp: Option<bool>,
    /// Do not listen on TCP.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub no_tcp: Option<bool>,
    /// Do not listen on TLS.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub no_tls: Option<bool>,
    /// PEM file with the TLS certificate chain (leaf first). TLS is off without it.
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// PEM file with the TLS private key (PKCS#8, SEC1 or PKCS#1).
    #[arg(long, value_name = "FILE")]
    pub pkey: Option<PathBuf>,
    /// TCP and TLS connections in total. Default 10000.
    #[arg(long, value_name = "N")]
    pub max_tcp_connections: Option<usize>,
    /// TCP and TLS connections per client IP. Default 256.
    #[arg(long, value_name = "N")]
    pub max_tcp_connections_per_ip: Option<u32>,
    /// Seconds a new TCP/TLS connection has to finish its handshake and deliver its first
    /// message. Default 10.
    #[arg(long, value_name = "SECONDS")]
    pub tcp_handshake_timeout: Option<u64>,
    /// Seconds a TCP/TLS connection without an allocation may stay silent. Default 60.
    #[arg(long, value_name = "SECONDS")]
    pub tcp_idle_timeout: Option<u64>,
    /// Bytes queued toward a slow TCP/TLS client before its media is dropped. Default
    /// 65536.
    #[arg(long, value_name = "BYTES")]
    pub tcp_send_queue: Option<usize>,
    /// Address relay sockets are bound to (one per family). Default: the listening IPs.
    #[arg(long, value_name = "IP")]
    #[serde(default)]
    pub relay_ip: Vec<IpAddr>,
    /// Public address announced for relays behind NAT: `PUBLIC` or `PUBLIC/PRIVATE`.
    #[arg(long, value_name = "IP[/IP]")]
    #[serde(default)]
    pub external_ip: Vec<String>,
    /// Lowest relay port. Default 49152.
    #[arg(long, value_name = "PORT")]
    pub min_port: Option<u16>,
    /// Highest relay port. Default 65535.
    #[arg(long, value_name = "PORT")]
    pub max_port: Option<u16>,
    /// The authentication realm. Default "ferroturn".
    #[arg(long)]
    pub realm: Option<String>,
    /// TURN REST shared secret (repeat for rotation: every one is accepted).
    #[arg(long, value_name = "SECRET")]
    #[serde(default)]
    pub static_auth_secret: Vec<String>,
    /// Static user `name:password` or `name:0x<md5 key hex>` (repeat for several).
    #[arg(long, value_name = "NAME:PASSWORD")]
    #[serde(default)]
    pub user: Vec<String>,
    /// Separator between expiry and user in REST usernames. Default ':'.
    #[arg(long, value_name = "CHAR")]
    pub rest_api_separator: Option<char>,
    /// Refuse REST usernames expiring more than this many seconds ahead (0: no limit).
    /// Default 604800 (7 days).
    #[arg(long, value_name = "SECONDS")]
    pub max_credential_ttl: Option<u64>,
    /// Refuse expired REST usernames also for existing allocations. Default true.
    #[arg(long, value_name = "BOOL")]
    pub strict_credential_expiry: Option<bool>,
    /// Nonce lifetime in seconds. Default 600.
    #[arg(long, value_name = "SECONDS")]
    pub stale_nonce: Option<u64>,
    /// Allocation lifetime when the client asks for less or nothing. Default 600.
    #[arg(long, value_name = "SECONDS")]
    pub default_allocate_lifetime: Option<u64>,
    /// Longest allocation lifetime granted. Default 3600.
    #[arg(long, value_name = "SECONDS")]
    pub max_allocate_lifetime: Option<u64>,
    /// Permission lifetime. Default 300 (RFC 8656).
    #[arg(long, value_name = "SECONDS")]
    pub permission_lifetime: Option<u64>,
    /// Channel binding lifetime. Default 600 (RFC 8656).
    #[arg(long, value_name = "SECONDS")]
    pub channel_lifetime: Option<u64>,
    /// Peer ranges to refuse on top of the default list (CIDR, IP or `start-end`).
    #[arg(long, value_name = "RANGE")]
    #[serde(default)]
    pub denied_peer_ip: Vec<String>,
    /// Peer ranges to allow even if denied (e.g. 127.0.0.1 for local tests).
    #[arg(long, value_name = "RANGE")]
    #[serde(default)]
    pub allowed_peer_ip: Vec<String>,
    /// Allocations per user (0: unlimited). Default 0.
    #[arg(long, value_name = "N")]
    pub user_quota: Option<u32>,
    /// Allocations in total (0: unlimited). Default 0.
    #[arg(long, value_name = "N")]
    pub total_quota: Option<u32>,
    /// Permissions per allocation. Default 128.
    #[arg(long, value_name = "N")]
    pub max_permissions: Option<usize>,
    /// Channel bindings per allocation. Default 128.
    #[arg(long, value_name = "N")]
    pub max_channels: Option<usize>,
    /// Relayed bytes per second per allocation, each direction separately; excess
    /// datagrams are dropped (0: unlimited). Default 12500000 (100 Mbit/s).
    #[arg(long, value_name = "BYTES")]
    pub max_bps: Option<u64>,
    /// Relayed bytes per second of the whole server, each direction separately, shared
    /// evenly by the relay threads (0: unlimited). Default 0.
    #[arg(long, value_name = "BYTES")]
    pub bps_capacity: Option<u64>,
    /// New peer addresses an allocation may permit per second, in bursts of twice that;
    /// more is refused with 508 (0: unlimited). Default 20.
    #[arg(long, value_name = "N")]
    pub new_peer_rate: Option<u32>,
    /// While draining, answer new allocations with 300 and this ALTERNATE-SERVER instead
    /// of 508.
    #[arg(long, value_name = "IP:PORT")]
    pub alternate_server: Option<SocketAddr>,
    /// Seconds a drain (SIGTERM) waits for allocations to end before exiting. Default 30.
    #[arg(long, value_name = "SECONDS")]
    pub drain_timeout: Option<u64>,
    /// Answers to unauthenticated requests (401/438 challenges, Binding) per second per
    /// source IP, in bursts of twice that; 0 = unlimited. Default 50.
    #[arg(long, value_name = "N")]
    pub unauthenticated_rate: Option<u32>,
    /// Relay threads (shards), each with its own listener socket (SO_REUSEPORT), relay
    /// sockets and a share of the port range. Default: the number of CPUs.
    #[arg(long, value_name = "N")]
    pub relay_threads: Option<usize>,
    /// SO_RCVBUF of listener and relay sockets, in bytes. Default: 4 MiB for listeners
    /// (every client of a shard shares one), the OS default for relay sockets.
    #[arg(long, value_name = "BYTES")]
    pub socket_recv_buffer_size: Option<usize>,
    /// SO_SNDBUF of listener and relay sockets, in bytes. Default: 4 MiB for listeners,
    /// the OS default for relay sockets.
    #[arg(long, value_name = "BYTES")]
    pub socket_send_buffer_size: Option<usize>,
    /// Log filter (error, warn, info, debug, trace, or a tracing directive). Default info.
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    // --- HTTP API (src/api/config.rs checks these) ---
    /// Address of the HTTP API: credentials, metrics, health, admin. Default: off.
    #[arg(long, value_name = "IP:PORT")]
    pub api_listen: Option<SocketAddr>,
    /// Serve the HTTP API over TLS with `cert` and `pkey`. Default false.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub api_tls: Option<bool>,
    /// Hex SHA-256 of a bearer token the credentials endpoint accepts (repeat).
    #[arg(long, value_name = "HEX")]
    #[serde(default)]
    pub api_key_sha256: Vec<String>,
    /// A credentials key with its own limits: `sha256=HEX[,max-ttl=SECONDS][,origin=URL]`
    /// (in the file: `[[api-key]]` tables with `sha256`, `max-ttl` and `origins`).
    #[arg(long, value_name = "SPEC")]
    #[serde(default)]
    pub api_key: Vec<crate::api::config::RawApiKey>,
    /// Hex SHA-256 of a bearer token the admin endpoints accept (repeat).
    #[arg(long, value_name = "HEX")]
    #[serde(default)]
    pub admin_key_sha256: Vec<String>,
    /// Lifetime in seconds of credentials the API issues when the request names none.
    /// Default 86400.
    #[arg(long, value_name = "SECONDS")]
    pub credential_ttl: Option<u64>,
    /// Host name in the `uris` the API returns. Default: the listening address.
    #[arg(long, value_name = "HOST")]
    pub public_host: Option<String>,
    /// The `uris` the API returns, verbatim (repeat); replaces the derived ones.
    #[arg(long, value_name = "URI")]
    #[serde(default)]
    pub turn_uris: Vec<String>,
}

macro_rules! overlay {
    ($base:ident, $top:ident; opt: $($o:ident),*; list: $($l:ident),*) => {
        $( if $top.$o.is_some() { $base.$o = $top.$o; } )*
        $( if !$top.$l.is_empty() { $base.$l = $top.$l; } )*
    };
}

impl RawConfig {
    /// `top` (the command line) overrides `self` (the file), option by option; a list
    /// given on the command line replaces the file's list.
    pub fn overlay(mut self, top: RawConfig) -> RawConfig {
        overlay!(self, top;
            opt: listening_port, tls_listening_port, alt_listening_port,
                alt_tls_listening_port, no_udp, no_tcp, no_tls, cert, pkey,
                max_tcp_connections, max_tcp_connections_per_ip, tcp_handshake_timeout,
                tcp_idle_timeout, tcp_send_queue, max_bps, bps_capacity, new_peer_rate,
                alternate_server, drain_timeout,
                min_port, max_port, realm, rest_api_separator,
                max_credential_ttl, strict_credential_expiry, stale_nonce,
                default_allocate_lifetime, max_allocate_lifetime, permission_lifetime,
                channel_lifetime, user_quota, total_quota, max_permissions, max_channels,
                relay_threads, unauthenticated_rate, socket_recv_buffer_size, socket_send_buffer_size, log_level,
                api_listen, api_tls, credential_ttl, public_host;
            list: listening_ip, relay_ip, external_ip, static_auth_secret, user,
                denied_peer_ip, allowed_peer_ip,
                api_key_sha256, api_key, admin_key_sha256, turn_uris);
        self
    }

    pub fn from_toml_str(text: &str) -> Result<RawConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError(e.to_string().trim_end().to_owned()))
    }

    pub fn from_file(path: &Path) -> Result<RawConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        Self::from_toml_str(&text).map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
    }
}

/// A configuration error, with the offending key in the message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err<T>(key: &str, msg: impl std::fmt::Display) -> Result<T, ConfigError> {
    Err(ConfigError(format!("`{key}`: {msg}")))
}

/// The typed configuration the server runs with.
#[derive(Clone, Debug)]
pub struct Config {
    /// Listener addresses per protocol.
    pub listeners: Listeners,
    /// Certificate and key files; `None` when TLS is off.
    pub tls: Option<TlsFiles>,
    pub streams: StreamLimits,
    /// How long a drain waits for allocations to end.
    pub drain_timeout: Duration,
    pub server: ServerConfig,
    /// Number of shards (relay threads).
    pub relay_threads: usize,
    pub socket_recv_buffer_size: Option<usize>,
    pub socket_send_buffer_size: Option<usize>,
    pub log_level: String,
    /// The HTTP API (off unless `api-listen` is set).
    pub api: crate::api::ApiConfig,
}

/// Where the server listens. TCP shares the UDP port numbers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listeners {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
}

/// The PEM files TLS listeners serve (re-read on reload).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub pkey: PathBuf,
}

/// Bounds on TCP and TLS connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamLimits {
    pub max_connections: usize,
    pub max_per_ip: u32,
    /// To finish the TLS handshake and deliver the first complete message.
    pub handshake_timeout: Duration,
    /// Silence allowed on a connection without an allocation.
    pub idle_timeout: Duration,
    /// Bytes queued toward the client beyond what the socket takes.
    pub send_queue: usize,
}

impl Config {
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Self::from_raw(RawConfig::from_toml_str(text)?)
    }

    /// Applies defaults and checks every value.
    pub fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        let listening_ips = if raw.listening_ip.is_empty() {
            vec![IpAddr::from([0, 0, 0, 0])]
        } else {
            raw.listening_ip.clone()
        };
        let (listeners, tls) = listeners(&raw, &listening_ips)?;
        let streams = stream_limits(&raw)?;

        let min_port = raw.min_port.unwrap_or(49152);
        let max_port = raw.max_port.unwrap_or(65535);
        if min_port == 0 || min_port > max_port {
            return err(
                "min-port",
                format!("must be between 1 and max-port ({max_port})"),
            );
        }

        let (relay_v4, relay_v6) = relay_addresses(&raw, &listening_ips)?;
        let ports = usize::from(max_port - min_port) + 1;
        let relay_threads = match raw.relay_threads {
            Some(0) => return err("relay-threads", "must be at least 1"),
            Some(n) if n > 256 => return err("relay-threads", "must be at most 256"),
            Some(n) if n > ports => {
                return err(
                    "relay-threads",
                    "exceeds the number of relay ports (min-port to max-port)",
                );
            }
            Some(n) => n,
            // Each shard needs a port of its own.
            None => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(ports),
        };

        let realm = raw.realm.clone().unwrap_or_else(|| "ferroturn".into());
        if realm.is_empty() || realm.len() > 763 {
            return err("realm", "must be 1 to 763 bytes");
        }
        let mut users = Vec::new();
        for u in &raw.user {
            users.push(parse_user(u)?);
        }
        if raw.static_auth_secret.is_empty() && users.is_empty() {
            return err(
                "static-auth-secret",
                "no credentials configured: set static-auth-secret or user",
            );
        }
        if raw.static_auth_secret.iter().any(String::is_empty) {
            return err("static-auth-secret", "must not be empty");
        }
        let separator = raw.rest_api_separator.unwrap_or(':');
        // A far-future REST username is a credential that never expires.
        let max_ttl = Some(raw.max_credential_ttl.unwrap_or(7 * 86_400)).filter(|t| *t > 0);
        let credentials = Credentials::new(
            realm,
            raw.static_auth_secret.clone(),
            users,
            separator,
            max_ttl,
        );

        let secs = |key: &str, v: Option<u64>, default: u64| -> Result<Duration, ConfigError> {
            match v.unwrap_or(default) {
                0 => err(key, "must be at least 1 second"),
                s if s > u64::from(u32::MAX) => err(key, "is too large"),
                s => Ok(Duration::from_secs(s)),
            }
        };
        let default_lifetime = secs(
            "default-allocate-lifetime",
            raw.default_allocate_lifetime,
            600,
        )?;
        let max_lifetime = secs("max-allocate-lifetime", raw.max_allocate_lifetime, 3600)?;
        if default_lifetime > max_lifetime {
            return err(
                "default-allocate-lifetime",
                "must not exceed max-allocate-lifetime",
            );
        }

        let parse_ranges = |key: &str, list: &[String]| -> Result<Vec<IpRange>, ConfigError> {
            list.iter()
                .map(|r| r.parse::<IpRange>().or_else(|e| err(key, e)))
                .collect()
        };
        let allowed = parse_ranges("allowed-peer-ip", &raw.allowed_peer_ip)?;
        let denied =
            PeerPolicy::default_denied(parse_ranges("denied-peer-ip", &raw.denied_peer_ip)?);
        let mut own: Vec<IpAddr> = listening_ips
            .iter()
            .copied()
            .filter(|ip| !ip.is_unspecified())
            .collect();
        for r in [relay_v4, relay_v6].into_iter().flatten() {
            own.push(r.local);
            own.push(r.advertised);
        }
        let policy = PeerPolicy::new(allowed, denied, own);

        let server = ServerConfig {
            credentials,
            nonce_lifetime: secs("stale-nonce", raw.stale_nonce, 600)?,
            relay_v4,
            relay_v6,
            min_port,
            max_port,
            default_lifetime,
            max_lifetime,
            permission_lifetime: secs("permission-lifetime", raw.permission_lifetime, 300)?,
            channel_lifetime: secs("channel-lifetime", raw.channel_lifetime, 600)?,
            policy,
            user_quota: raw.user_quota.unwrap_or(0),
            total_quota: raw.total_quota.unwrap_or(0),
            max_permissions: raw.max_permissions.unwrap_or(128),
            max_channels: raw.max_channels.unwrap_or(128),
            strict_expiry: raw.strict_credential_expiry.unwrap_or(true),
            unauthenticated_rate: raw.unauthenticated_rate.unwrap_or(50),
            max_bps: raw.max_bps.unwrap_or(12_500_000),
            bps_capacity: raw.bps_capacity.unwrap_or(0),
            new_peer_rate: raw.new_peer_rate.unwrap_or(20),
            alternate_server: raw.alternate_server,
        };
        Ok(Config {
            listeners,
            tls,
            streams,
            drain_timeout: Duration::from_secs(raw.drain_timeout.unwrap_or(30)),
            server,
            relay_threads,
            socket_recv_buffer_size: raw.socket_recv_buffer_size,
            socket_send_buffer_size: raw.socket_send_buffer_size,
            log_level: raw.log_level.clone().unwrap_or_else(|| "info".into()),
            api: crate::api::config::from_raw(&raw, separator, max_ttl)?,
        })
    }
}

/// Listener addresses of every enabled protocol, and the TLS files when TLS is on (it is
/// off without `cert`, or with `no-tls`).
fn listeners(
    raw: &RawConfig,
    ips: &[IpAddr],
) -> Result<(Listeners, Option<TlsFiles>), ConfigError> {
    let on = |flag: Option<bool>| !flag.unwrap_or(false);
    let plain: Vec<u16> = [
        Some(raw.listening_port.unwrap_or(3478)),
        raw.alt_listening_port,
    ]
    .into_iter()
    .flatten()
    .collect();
    let secure: Vec<u16> = [
        Some(raw.tls_listening_port.unwrap_or(5349)),
        raw.alt_tls_listening_port,
    ]
    .into_iter()
    .flatten()
    .collect();
    let addrs = |ports: &[u16]| -> Vec<SocketAddr> {
        ports
            .iter()
            .flat_map(|p| ips.iter().map(move |ip| SocketAddr::new(*ip, *p)))
            .collect()
    };
    let tls = match (on(raw.no_tls), &raw.cert, &raw.pkey) {
        (false, _, _) | (true, None, None) => None,
        (true, Some(cert), Some(pkey)) => Some(TlsFiles {
            cert: cert.clone(),
            pkey: pkey.clone(),
        }),
        (true, Some(_), None) => return err("pkey", "`cert` is set but `pkey` is not"),
        (true, None, Some(_)) => return err("cert", "`pkey` is set but `cert` is not"),
    };
    let listeners = Listeners {
        udp: if on(raw.no_udp) {
            addrs(&plain)
        } else {
            Vec::new()
        },
        tcp: if on(raw.no_tcp) {
            addrs(&plain)
        } else {
            Vec::new()
        },
        tls: if tls.is_some() {
            addrs(&secure)
        } else {
            Vec::new()
        },
    };
    if listeners.udp.is_empty() && listeners.tcp.is_empty() && listeners.tls.is_empty() {
        return err(
            "no-udp",
            "nothing to listen on: UDP, TCP and TLS are all off (TLS needs cert and pkey)",
        );
    }
    Ok((listeners, tls))
}

fn stream_limits(raw: &RawConfig) -> Result<StreamLimits, ConfigError> {
    let secs = |key: &str, v: Option<u64>, default: u64| match v.unwrap_or(default) {
        0 => err(key, "must be at least 1 second"),
        s if s > 86_400 => err(key, "must be at most 86400 seconds"),
        s => Ok(Duration::from_secs(s)),
    };
    let max_connections = raw.max_tcp_connections.unwrap_or(10_000);
    let max_per_ip = raw.max_tcp_connections_per_ip.unwrap_or(256);
    if max_per_ip == 0 {
        return err("max-tcp-connections-per-ip", "must be at least 1");
    }
    let send_queue = raw.tcp_send_queue.unwrap_or(65_536);
    if !(4096..=64 << 20).contains(&send_queue) {
        return err("tcp-send-queue", "must be between 4096 and 67108864 bytes");
    }
    Ok(StreamLimits {
        max_connections,
        max_per_ip,
        handshake_timeout: secs("tcp-handshake-timeout", raw.tcp_handshake_timeout, 10)?,
        idle_timeout: secs("tcp-idle-timeout", raw.tcp_idle_timeout, 60)?,
        send_queue,
    })
}

/// `name:password`, or `name:0x<32 hex digits>` for a precomputed key (as coturn has).
fn parse_user(entry: &str) -> Result<(String, Password), ConfigError> {
    let Some((name, pw)) = entry.split_once(':') else {
        return err("user", "expected `name:password`");
    };
    if name.is_empty() || pw.is_empty() {
        return err("user", "expected `name:password` with both parts non-empty");
    }
    if let Some(hex) = pw.strip_prefix("0x") {
        let mut key = [0u8; 16];
        // Bytes, not chars: anything but ASCII hex digits is refused before decoding.
        let digits = hex.as_bytes();
        if digits.len() != 32 || !digits.iter().all(u8::is_ascii_hexdigit) {
            return err("user", format!("{name}: a 0x key has 32 hex digits"));
        }
        let nibble = |d: u8| (d as char).to_digit(16).unwrap_or(0) as u8;
        for (k, pair) in key.iter_mut().zip(digits.chunks_exact(2)) {
            *k = nibble(pair[0]) << 4 | nibble(pair[1]);
        }
        return Ok((name.to_owned(), Password::Key(key)));
    }
    Ok((name.to_owned(), Password::Plain(pw.to_owned())))
}

/// Relay addresses per family: `relay-ip`, else the specific listening IPs; each mapped
/// to its `external-ip` when one is given.
fn relay_addresses(
    raw: &RawConfig,
    listening: &[IpAddr],
) -> Result<(Option<RelayAddress>, Option<RelayAddress>), ConfigError> {
    let locals: Vec<IpAddr> = if raw.relay_ip.is_empty() {
        listening
            .iter()
            .copied()
            .filter(|ip| !ip.is_unspecified())
            .collect()
    } else {
        raw.relay_ip.clone()
    };
    if locals.iter().any(IpAddr::is_unspecified) {
        return err("relay-ip", "must be a specific address, not 0.0.0.0 or ::");
    }
    let mut externals = Vec::new();
    for e in &raw.external_ip {
        let (public, private) = match e.split_once('/') {
            Some((p, l)) => (p, Some(l)),
            None => (e.as_str(), None),
        };
        let public: IpAddr = public
            .parse()
            .or_else(|_| err("external-ip", format!("`{e}` is not IP or IP/IP")))?;
        let private: Option<IpAddr> = match private {
            Some(l) => Some(
                l.parse()
                    .or_else(|_| err("external-ip", format!("`{e}` is not IP or IP/IP")))?,
            ),
            None => None,
        };
        externals.push((public, private));
    }
    let pick = |v4: bool| -> Option<RelayAddress> {
        let local = *locals.iter().find(|ip| ip.is_ipv4() == v4)?;
        let advertised = externals
            .iter()
            .find(|(p, l)| match l {
                Some(l) => *l == local,
                None => p.is_ipv4() == v4,
            })
            .map_or(local, |(p, _)| *p);
        Some(RelayAddress { local, advertised })
    };
    let (v4, v6) = (pick(true), pick(false));
    if v4.is_none() && v6.is_none() {
        return err(
            "relay-ip",
            "no relay address: set relay-ip (listening on 0.0.0.0 or :: names no address to relay from)",
        );
    }
    Ok((v4, v6))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "listening-ip = [\"127.0.0.1\"]\nstatic-auth-secret = [\"s\"]\n";

    #[test]
    fn defaults_apply() {
        let c = Config::from_toml_str(BASE).unwrap();
        assert_eq!(c.listeners.udp, vec!["127.0.0.1:3478".parse().unwrap()]);
        assert_eq!(c.listeners.tcp, c.listeners.udp);
        assert!(
            c.listeners.tls.is_empty() && c.tls.is_none(),
            "TLS is off without cert"
        );
        assert_eq!(c.server.max_lifetime, Duration::from_secs(3600));
        assert_eq!(c.server.default_lifetime, Duration::from_secs(600));
        assert_eq!(
            c.server.relay_v4.unwrap().local,
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert!(c.server.relay_v6.is_none());
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let e = Config::from_toml_str(&format!("{BASE}no-such-option = 1\n")).unwrap_err();
        assert!(e.0.contains("no-such-option"), "{e}");
        let e = Config::from_toml_str(&format!("{BASE}denied-peer-ip = [\"10.0.0.0/99\"]\n"))
            .unwrap_err();
        assert!(
            e.0.contains("denied-peer-ip") && e.0.contains("10.0.0.0/99"),
            "{e}"
        );
        let e = Config::from_toml_str(&format!("{BASE}min-port = 5000\nmax-port = 4000\n"))
            .unwrap_err();
        assert!(e.0.contains("min-port"), "{e}");
        let e = Config::from_toml_str(&format!("{BASE}listening-port = \"x\"\n")).unwrap_err();
        assert!(e.0.contains("listening-port"), "{e}");
        let e = Config::from_toml_str("listening-ip = [\"127.0.0.1\"]\n").unwrap_err();
        assert!(e.0.contains("static-auth-secret"), "{e}");
        let e = Config::from_toml_str("static-auth-secret = [\"s\"]\n").unwrap_err();
        assert!(e.0.contains("relay-ip"), "{e}");
    }

    #[test]
    fn external_ip_maps_the_relay() {
        let c = Config::from_toml_str(&format!(
            "{BASE}relay-ip = [\"10.0.0.5\"]\nexternal-ip = [\"203.0.113.5/10.0.0.5\"]\n"
        ))
        .unwrap();
        let r = c.server.relay_v4.unwrap();
        assert_eq!(r.local.to_string(), "10.0.0.5");
        assert_eq!(r.advertised.to_string(), "203.0.113.5");
    }

    #[test]
    fn command_line_overrides_file() {
        let file = RawConfig::from_toml_str(&format!("{BASE}realm = \"file\"\nmin-port = 50000\n"))
            .unwrap();
        let cli = RawConfig {
            realm: Some("cli".into()),
            static_auth_secret: vec!["t".into()],
            ..Default::default()
        };
        let merged = file.overlay(cli);
        assert_eq!(merged.realm.as_deref(), Some("cli"));
        assert_eq!(merged.min_port, Some(50000));
        assert_eq!(merged.static_auth_secret, vec!["t".to_string()]);
    }

    #[test]
    fn listeners_per_protocol() {
        let c = Config::from_toml_str(&format!(
            "{BASE}cert = \"c.pem\"\npkey = \"k.pem\"\nalt-listening-port = 3479\n\
             tls-listening-port = 443\nno-udp = true\n"
        ))
        .unwrap();
        let addrs =
            |v: &[&str]| -> Vec<SocketAddr> { v.iter().map(|a| a.parse().unwrap()).collect() };
        assert!(c.listeners.udp.is_empty());
        assert_eq!(
            c.listeners.tcp,
            addrs(&["127.0.0.1:3478", "127.0.0.1:3479"])
        );
        assert_eq!(c.listeners.tls, addrs(&["127.0.0.1:443"]));
        assert_eq!(c.tls.unwrap().cert, PathBuf::from("c.pem"));
        let e = Config::from_toml_str(&format!("{BASE}cert = \"c.pem\"\n")).unwrap_err();
        assert!(e.0.contains("pkey"), "{e}");
        let e =
            Config::from_toml_str(&format!("{BASE}no-udp = true\nno-tcp = true\n")).unwrap_err();
        assert!(e.0.contains("nothing to listen on"), "{e}");
        let e = Config::from_toml_str(&format!("{BASE}tcp-send-queue = 10\n")).unwrap_err();
        assert!(e.0.contains("tcp-send-queue"), "{e}");
    }

    #[test]
    fn users_parse() {
        assert!(parse_user("alice:pw").is_ok());
        assert!(parse_user("alice:0x00112233445566778899aabbccddeeff").is_ok());
        assert!(parse_user("alice:0x0011").is_err());
        // Found by the config_parse fuzzer: a multi-byte character among the digits.
        assert!(parse_user("a:0x0\u{e9}0112233445566778899aabbccddee").is_err());
        assert!(parse_user("a:0x+f+f112233445566778899aabbccddee").is_err());
        assert!(parse_user("alice").is_err());
        assert!(parse_user(":pw").is_err());
    }
}
