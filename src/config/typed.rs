//! The typed configuration the server runs with, made once from a [`RawConfig`]:
//! defaults applied, every value checked, every error naming its key.

use super::api::ApiConfig;
use super::defaults as d;
use super::error::{ConfigError, err};
use super::raw::{RawConfig, SharedStateFailure};
use ferroturn_core::auth::credentials::Password;
use ferroturn_core::auth::{Credentials, NonceKeys};
use ferroturn_core::server::{ConnectionIds, IpRange, PeerPolicy, RelayAddress, ServerConfig};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// The typed configuration the server runs with.
#[derive(Clone, Debug)]
pub struct Config {
    /// Listener addresses per protocol.
    pub listeners: Listeners,
    /// Certificate and key files; `None` when TLS is off.
    pub tls: Option<TlsFiles>,
    pub streams: StreamLimits,
    /// PROXY headers and the HTTPS backend in front of TURN on the stream listeners.
    pub front: StreamFront,
    /// How long a drain waits for allocations to end.
    pub drain_timeout: Duration,
    pub server: ServerConfig,
    /// Number of shards (relay threads).
    pub relay_threads: usize,
    /// How long a relay thread polls on after a busy turn (`busy-poll-us`).
    pub busy_poll: Duration,
    pub socket_recv_buffer_size: Option<usize>,
    pub socket_send_buffer_size: Option<usize>,
    pub log_level: String,
    /// Whether to run the kernel fast path (only a restart changes it).
    pub kernel_offload: KernelOffload,
    /// The HTTP API (off unless `api-listen` is set).
    pub api: ApiConfig,
    /// The fleet's Redis; `None` for a single server.
    pub fleet: Option<FleetConfig>,
    /// `external-ip = "auto"`: where the relays' public address is learned.
    pub external_ip_auto: Option<super::ExternalIpAuto>,
    /// Where usage records go besides the log (only a restart changes it).
    pub usage: super::UsageConfig,
}

/// `redis` and `node-name`: where the fleet's shared state lives, and this node's name
/// there. The URL's password is never logged (its `Debug` hides the URL).
#[derive(Clone, PartialEq, Eq)]
pub struct FleetConfig {
    pub redis: String,
    /// `node-name`; `None`: the host name and the first bound listening address.
    pub node: Option<String>,
    /// `shared-state-failure = "open"`: while Redis does not answer, a new allocation's
    /// lease is granted (the node's own quotas decide).
    pub fail_open: bool,
}

impl std::fmt::Debug for FleetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetConfig")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// `allocation-default-address-family`: the relay's family when an Allocate names none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AllocationFamily {
    /// RFC 8656 section 7.2.
    #[default]
    Ipv4,
    Ipv6,
    /// The family the client came over.
    Keep,
}

impl From<AllocationFamily> for ferroturn_core::server::DefaultFamily {
    fn from(f: AllocationFamily) -> Self {
        match f {
            AllocationFamily::Ipv4 => Self::V4,
            AllocationFamily::Ipv6 => Self::V6,
            AllocationFamily::Keep => Self::Keep,
        }
    }
}

/// `kernel-offload`: the eBPF fast path for UDP channel traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum KernelOffload {
    /// User space relays everything.
    #[default]
    Off,
    /// The kernel relays bound UDP channels where the kernel, the build and the process's
    /// capabilities allow it; otherwise one log line says why, and user space relays.
    Auto,
    /// As `auto`, but the server refuses to start without it.
    On,
}

/// Where the server listens. TCP shares the UDP port numbers, DTLS (UDP) the TLS ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listeners {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
    /// TURN over DTLS (RFC 7350): the TLS addresses, unless `no-dtls`.
    pub dtls: Vec<SocketAddr>,
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

/// What comes before TURN on the TCP and TLS listeners (only a restart changes it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamFront {
    /// `https-backend`: `host:port`, resolved when the server starts.
    pub https_backend: Option<String>,
    /// `proxy-protocol-from`: sources whose connections start with a PROXY header.
    pub proxy_from: Vec<IpRange>,
}

impl StreamFront {
    /// Whether a connection from `ip` must start with a PROXY header (an IPv4 address
    /// written in IPv6, as a dual-stack listener reports it, counts as IPv4).
    pub fn expects_proxy(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.proxy_from.iter().any(|r| r.contains(ip))
    }
}

impl Config {
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Self::from_raw(RawConfig::from_toml_str(text)?)
    }

    /// Applies defaults and checks every value.
    pub fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        let listening_ips = if raw.listening_ip.is_empty() {
            vec![d::LISTENING_IP]
        } else {
            raw.listening_ip.clone()
        };
        let (listeners, tls) = listeners(&raw, &listening_ips)?;
        let streams = stream_limits(&raw)?;

        let min_port = raw.min_port.unwrap_or(d::MIN_PORT);
        let max_port = raw.max_port.unwrap_or(d::MAX_PORT);
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

        let busy_poll_us = raw.busy_poll_us.unwrap_or(d::BUSY_POLL_US);
        if busy_poll_us > d::MAX_BUSY_POLL_US {
            return err(
                "busy-poll-us",
                format!("must be at most {}", d::MAX_BUSY_POLL_US),
            );
        }

        let realm = raw.realm.clone().unwrap_or_else(|| d::REALM.into());
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
        // Nonces are signed with it: a short secret could be found offline from one nonce.
        if let Some(short) = raw.nonce_secret.iter().find(|s| s.len() < 16) {
            let what = if short.is_empty() {
                "an empty"
            } else {
                "a short"
            };
            return err(
                "nonce-secret",
                format!("{what} secret: use at least 16 characters (e.g. `openssl rand -hex 32`)"),
            );
        }
        let nonce_keys = NonceKeys::from_secrets(&raw.nonce_secret);
        let separator = raw.rest_api_separator.unwrap_or(d::REST_API_SEPARATOR);
        // A far-future REST username is a credential that never expires.
        let max_ttl =
            Some(raw.max_credential_ttl.unwrap_or(d::MAX_CREDENTIAL_TTL)).filter(|t| *t > 0);
        let credentials = Credentials::new(
            realm,
            raw.static_auth_secret.clone(),
            users,
            separator,
            max_ttl,
        );

        let secs =
            |key: &'static str, v: Option<u64>, default: u64| -> Result<Duration, ConfigError> {
                match v.unwrap_or(default) {
                    0 => err(key, "must be at least 1 second"),
                    s if s > u64::from(u32::MAX) => err(key, "is too large"),
                    s => Ok(Duration::from_secs(s)),
                }
            };
        let default_lifetime = secs(
            "default-allocate-lifetime",
            raw.default_allocate_lifetime,
            d::DEFAULT_ALLOCATE_LIFETIME,
        )?;
        let max_lifetime = secs(
            "max-allocate-lifetime",
            raw.max_allocate_lifetime,
            d::MAX_ALLOCATE_LIFETIME,
        )?;
        if default_lifetime > max_lifetime {
            return err(
                "default-allocate-lifetime",
                "must not exceed max-allocate-lifetime",
            );
        }

        let parse_ranges =
            |key: &'static str, list: &[String]| -> Result<Vec<IpRange>, ConfigError> {
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
        let front = StreamFront {
            https_backend: https_backend(&raw, &listeners)?,
            proxy_from: parse_ranges("proxy-protocol-from", &raw.proxy_protocol_from)?,
        };

        let server = ServerConfig {
            credentials,
            nonce_lifetime: secs("stale-nonce", raw.stale_nonce, d::STALE_NONCE)?,
            nonce_keys,
            fleet_quota: raw.redis.is_some(),
            relay_v4,
            relay_v6,
            min_port,
            max_port,
            default_lifetime,
            max_lifetime,
            permission_lifetime: secs(
                "permission-lifetime",
                raw.permission_lifetime,
                d::PERMISSION_LIFETIME,
            )?,
            channel_lifetime: secs(
                "channel-lifetime",
                raw.channel_lifetime,
                d::CHANNEL_LIFETIME,
            )?,
            policy,
            user_quota: raw.user_quota.unwrap_or(d::USER_QUOTA),
            total_quota: raw.total_quota.unwrap_or(d::TOTAL_QUOTA),
            max_permissions: raw.max_permissions.unwrap_or(d::MAX_PERMISSIONS),
            max_channels: raw.max_channels.unwrap_or(d::MAX_CHANNELS),
            strict_expiry: raw
                .strict_credential_expiry
                .unwrap_or(d::STRICT_CREDENTIAL_EXPIRY),
            unauthenticated_rate: raw.unauthenticated_rate.unwrap_or(d::UNAUTHENTICATED_RATE),
            unauthenticated_total_rate: raw
                .unauthenticated_total_rate
                .unwrap_or(d::UNAUTHENTICATED_TOTAL_RATE),
            unauthenticated_credit: raw
                .unauthenticated_credit
                .unwrap_or(d::UNAUTHENTICATED_CREDIT),
            max_bps: raw.max_bps.unwrap_or(d::MAX_BPS),
            bps_capacity: raw.bps_capacity.unwrap_or(d::BPS_CAPACITY),
            new_peer_rate: raw.new_peer_rate.unwrap_or(d::NEW_PEER_RATE),
            alternate_server: raw.alternate_server,
            // Set by the driver once the kernel program runs.
            kernel_offload: false,
            default_family: raw
                .allocation_default_address_family
                .unwrap_or_default()
                .into(),
            tcp_relay: !raw.no_tcp_relay.unwrap_or(d::NO_TCP_RELAY),
            max_tcp_relay_connections: match raw.max_tcp_relay_connections {
                Some(0) => {
                    return err(
                        "max-tcp-relay-connections",
                        "must be at least 1 (no-tcp-relay refuses TCP allocations)",
                    );
                }
                n => n.unwrap_or(d::MAX_TCP_RELAY_CONNECTIONS),
            },
            // Set by the driver per shard.
            connection_ids: ConnectionIds::default(),
            mobility: raw.mobility.unwrap_or(d::MOBILITY),
        };
        Ok(Config {
            listeners,
            tls,
            streams,
            front,
            drain_timeout: Duration::from_secs(raw.drain_timeout.unwrap_or(d::DRAIN_TIMEOUT)),
            server,
            relay_threads,
            busy_poll: Duration::from_micros(busy_poll_us.into()),
            socket_recv_buffer_size: raw.socket_recv_buffer_size,
            socket_send_buffer_size: raw.socket_send_buffer_size,
            log_level: raw.log_level.clone().unwrap_or_else(|| d::LOG_LEVEL.into()),
            kernel_offload: raw.kernel_offload.unwrap_or(d::KERNEL_OFFLOAD),
            api: super::api::from_raw(&raw, separator, max_ttl)?,
            fleet: fleet(&raw)?,
            external_ip_auto: super::external::from_raw(&raw)?,
            usage: super::usage::from_raw(&raw)?,
        })
    }
}

/// `redis` and `node-name`, checked (the URL is parsed, nothing is connected).
fn fleet(raw: &RawConfig) -> Result<Option<FleetConfig>, ConfigError> {
    let Some(url) = raw.redis.clone() else {
        if raw.node_name.is_some() {
            return err("node-name", "names this server in a fleet: set redis too");
        }
        if raw.shared_state_failure.is_some() {
            return err("shared-state-failure", "applies to a fleet: set redis too");
        }
        return Ok(None);
    };
    if let Err(e) = redis::Client::open(url.as_str()) {
        // The message names the problem, not the URL (it may hold a password).
        return err(
            "redis",
            format!("not a Redis URL: {}", e.detail().unwrap_or("unreadable")),
        );
    }
    if let Some(name) = &raw.node_name {
        if name.is_empty() || name.len() > 128 || name.contains(char::is_whitespace) {
            return err("node-name", "1 to 128 characters, no spaces");
        }
    }
    Ok(Some(FleetConfig {
        redis: url,
        node: raw.node_name.clone(),
        fail_open: raw.shared_state_failure.unwrap_or_default() == SharedStateFailure::Open,
    }))
}

/// Listener addresses of every enabled protocol, and the TLS files when TLS is on (it is
/// off without `cert`, or with `no-tls`).
fn listeners(
    raw: &RawConfig,
    ips: &[IpAddr],
) -> Result<(Listeners, Option<TlsFiles>), ConfigError> {
    let on = |flag: Option<bool>| !flag.unwrap_or(false);
    let plain: Vec<u16> = [
        Some(raw.listening_port.unwrap_or(d::LISTENING_PORT)),
        raw.alt_listening_port,
    ]
    .into_iter()
    .flatten()
    .collect();
    let secure: Vec<u16> = [
        Some(raw.tls_listening_port.unwrap_or(d::TLS_LISTENING_PORT)),
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
        dtls: if tls.is_some() && on(raw.no_dtls) {
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

/// `https-backend`: `host:port` (an IPv6 address in brackets), on a server with TLS
/// listeners. Resolved at start, not here: checking a configuration looks nothing up.
fn https_backend(raw: &RawConfig, listeners: &Listeners) -> Result<Option<String>, ConfigError> {
    let Some(backend) = raw.https_backend.as_deref() else {
        return Ok(None);
    };
    const KEY: &str = "https-backend";
    let Some((host, port)) = backend.rsplit_once(':') else {
        return err(KEY, format!("`{backend}`: expected `host:port`"));
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return err(KEY, format!("`{backend}`: expected `host:port`"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return err(
            KEY,
            format!("`{backend}`: write an IPv6 address as `[addr]:port`"),
        );
    }
    if !matches!(port.parse::<u16>(), Ok(p) if p > 0) {
        return err(KEY, format!("`{backend}`: the port must be 1 to 65535"));
    }
    if listeners.tls.is_empty() {
        return err(KEY, "needs TLS listeners (cert and pkey, without no-tls)");
    }
    Ok(Some(backend.to_owned()))
}

fn stream_limits(raw: &RawConfig) -> Result<StreamLimits, ConfigError> {
    let secs = |key: &'static str, v: Option<u64>, default: u64| match v.unwrap_or(default) {
        0 => err(key, "must be at least 1 second"),
        s if s > 86_400 => err(key, "must be at most 86400 seconds"),
        s => Ok(Duration::from_secs(s)),
    };
    let max_connections = raw.max_tcp_connections.unwrap_or(d::MAX_TCP_CONNECTIONS);
    let max_per_ip = raw
        .max_tcp_connections_per_ip
        .unwrap_or(d::MAX_TCP_CONNECTIONS_PER_IP);
    if max_per_ip == 0 {
        return err("max-tcp-connections-per-ip", "must be at least 1");
    }
    let send_queue = raw.tcp_send_queue.unwrap_or(d::TCP_SEND_QUEUE);
    if !(4096..=64 << 20).contains(&send_queue) {
        return err("tcp-send-queue", "must be between 4096 and 67108864 bytes");
    }
    Ok(StreamLimits {
        max_connections,
        max_per_ip,
        handshake_timeout: secs(
            "tcp-handshake-timeout",
            raw.tcp_handshake_timeout,
            d::TCP_HANDSHAKE_TIMEOUT,
        )?,
        idle_timeout: secs(
            "tcp-idle-timeout",
            raw.tcp_idle_timeout,
            d::TCP_IDLE_TIMEOUT,
        )?,
        send_queue,
    })
}

/// `name:password`, or `name:0x<32 hex digits>` for a precomputed key (as coturn has).
pub(super) fn parse_user(entry: &str) -> Result<(String, Password), ConfigError> {
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
    // Relays of one family are bound to one address: a second one would be ignored.
    // Derived from several listening IPs, the first of each family relays.
    for v4 in [true, false] {
        let same: Vec<&IpAddr> = raw
            .relay_ip
            .iter()
            .filter(|ip| ip.is_ipv4() == v4)
            .collect();
        if same.len() > 1 {
            let list: Vec<String> = same.iter().map(|ip| ip.to_string()).collect();
            return err(
                "relay-ip",
                format!(
                    "at most one address per family, got {} ({})",
                    list.len(),
                    list.join(", ")
                ),
            );
        }
    }
    let mut externals = Vec::new();
    // `auto`: nothing is mapped until a STUN server has answered.
    let fixed = raw
        .external_ip
        .iter()
        .filter(|e| *e != super::external::AUTO);
    for e in fixed {
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
