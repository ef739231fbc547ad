//! The schema: every option as written in the TOML file or on the command line (coturn's
//! names), all optional here; the file and the flags share it, and the flags win.

use super::ConfigError;
use super::api::RawApiKey;
use super::typed::{AllocationFamily, KernelOffload};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// Every option, as written in the file or on the command line. All are optional here;
/// defaults ([`super::defaults`]) are applied in [`super::Config::from_raw`].
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
    /// Do not serve TURN over DTLS on the UDP side of the TLS ports (it is on whenever
    /// TLS is).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub no_dtls: Option<bool>,
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
    /// On the TLS ports, pass connections whose ClientHello offers ALPN `h2` or
    /// `http/1.1` (and not `stun.turn`) byte for byte to this HTTPS server, which keeps its
    /// own certificate: one port (443) for TURN over TLS and a website. Default: none.
    #[arg(long, value_name = "HOST:PORT")]
    pub https_backend: Option<String>,
    /// Sources (CIDR, IP or `start-end`) whose TCP and TLS connections start with a PROXY
    /// protocol header (version 1 or 2) naming the client (repeat for several). Default:
    /// none.
    #[arg(long, value_name = "RANGE")]
    #[serde(default)]
    pub proxy_protocol_from: Vec<String>,
    /// Address relay sockets are bound to (one per family). Default: the listening IPs.
    #[arg(long, value_name = "IP")]
    #[serde(default)]
    pub relay_ip: Vec<IpAddr>,
    /// Public address announced for relays behind NAT: `PUBLIC` or `PUBLIC/PRIVATE`, or
    /// `auto` to learn it from `external-ip-stun-servers`.
    #[arg(long, value_name = "IP[/IP]|auto")]
    #[serde(default, deserialize_with = "one_or_many")]
    pub external_ip: Vec<String>,
    /// STUN servers (`host`, `host:port`, `[IPv6]:port`; port 3478 by default) that
    /// `external-ip = "auto"` asks for the public address, in order.
    #[arg(long, value_name = "HOST[:PORT]")]
    #[serde(default)]
    pub external_ip_stun_servers: Vec<String>,
    /// Seconds between two askings of `external-ip = "auto"`. Default 300.
    #[arg(long, value_name = "SECONDS")]
    pub external_ip_interval: Option<u64>,
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
    /// Key of the nonces, shared by a fleet so that a nonce from one node is good at every
    /// node (repeat for rotation: the first signs, every one verifies). Default: a random
    /// key per process.
    #[arg(long, value_name = "SECRET")]
    #[serde(default)]
    pub nonce_secret: Vec<String>,
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
    /// Refuse TCP allocations (RFC 6062: REQUESTED-TRANSPORT TCP, Connect, ConnectionBind)
    /// with 442; UDP relays are unaffected. Default false.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub no_tcp_relay: Option<bool>,
    /// TCP peer connections per TCP allocation (RFC 6062), connecting, waiting for their
    /// ConnectionBind or bound; more Connects get 508 and more peers are refused.
    /// Default 32.
    #[arg(long, value_name = "N")]
    pub max_tcp_relay_connections: Option<usize>,
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
    /// The relay's family for an Allocate without REQUESTED-ADDRESS-FAMILY: `ipv4` (RFC
    /// 8656), `ipv6`, or `keep` (the family the client came over). Default ipv4.
    #[arg(long, value_enum, value_name = "FAMILY")]
    pub allocation_default_address_family: Option<AllocationFamily>,
    /// RFC 8016 mobility: an Allocate may ask for a MOBILITY-TICKET, and a Refresh with
    /// it from a new client address (Wi-Fi to cellular) moves the allocation there.
    /// Default false.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub mobility: Option<bool>,
    /// While draining, answer new allocations with 300 and this ALTERNATE-SERVER instead
    /// of 508.
    #[arg(long, value_name = "IP:PORT")]
    pub alternate_server: Option<SocketAddr>,
    /// Seconds a drain (SIGTERM) waits for allocations to end before exiting. Default 30.
    #[arg(long, value_name = "SECONDS")]
    pub drain_timeout: Option<u64>,
    /// Answers to unauthenticated requests over UDP (401/438 challenges, Binding) per
    /// second per source IP beyond what the source earned with authenticated requests,
    /// in bursts of twice that; 0 = unlimited. Default 50.
    #[arg(long, value_name = "N")]
    pub unauthenticated_rate: Option<u32>,
    /// The same answers per second for the whole server (every source together), in
    /// bursts of twice that; 0 = unlimited. Default 5000.
    #[arg(long, value_name = "N")]
    pub unauthenticated_total_rate: Option<u32>,
    /// Bytes of answers to unauthenticated requests one source IP may earn ahead with
    /// authenticated requests (each earns its own size); 0 = none. Default 65536.
    #[arg(long, value_name = "BYTES")]
    pub unauthenticated_credit: Option<u32>,
    /// Relay threads (shards), each with its own listener socket (SO_REUSEPORT), relay
    /// sockets and a share of the port range. Default: the number of CPUs.
    #[arg(long, value_name = "N")]
    pub relay_threads: Option<usize>,
    /// Microseconds a relay thread keeps polling without sleeping after a turn that
    /// relayed 4 or more UDP datagrams (0 = sleep at once). Default 50.
    #[arg(long, value_name = "US")]
    pub busy_poll_us: Option<u32>,
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
    /// Kernel fast path for UDP channel traffic (eBPF, needs CAP_BPF and CAP_NET_ADMIN):
    /// `off`, `auto` (on where the kernel and capabilities allow it, else one log line and
    /// off) or `on` (refuse to start without it). Default off.
    #[arg(long, value_enum, value_name = "MODE")]
    pub kernel_offload: Option<KernelOffload>,
    /// Redis (or Valkey) shared by a fleet of servers: `redis://[user:password@]host:port/db`
    /// or `redis+unix:///path`. Default: none (a single server).
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// What a new allocation gets when the fleet's Redis does not answer in time:
    /// `open` (the node's own quotas decide) or `closed` (508). Default open.
    #[arg(long, value_enum, value_name = "MODE")]
    pub shared_state_failure: Option<SharedStateFailure>,
    /// This server's name in the fleet's registry. Default: the host name and the first
    /// listening address.
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    // --- Usage records (src/config/usage.rs checks these) ---
    /// POST usage records (one per ended allocation) in JSON batches to this `https://`
    /// (or `http://`) URL. Default: none (records are only logged).
    #[arg(long, value_name = "URL")]
    pub usage_webhook: Option<String>,
    /// Sent with every webhook request as `Authorization: Bearer <secret>`. Default: none.
    #[arg(long, value_name = "SECRET")]
    pub usage_webhook_secret: Option<String>,
    /// PEM file of the certificate authorities an `https://` webhook is checked against,
    /// instead of the built-in Mozilla roots. Default: none.
    #[arg(long, value_name = "FILE")]
    pub usage_webhook_ca_file: Option<PathBuf>,
    /// Records per webhook request, at most. Default 100.
    #[arg(long, value_name = "N")]
    pub usage_webhook_batch: Option<usize>,
    /// Seconds a record may wait for its batch to fill before it is sent (0: send what
    /// is queued at once). Default 1.
    #[arg(long, value_name = "SECONDS")]
    pub usage_webhook_interval: Option<u64>,
    /// Records waiting for the webhook, at most; more are dropped and counted while it
    /// does not answer. Default 10000.
    #[arg(long, value_name = "N")]
    pub usage_webhook_queue: Option<usize>,
    // --- HTTP API (src/config/api.rs checks these) ---
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
    pub api_key: Vec<RawApiKey>,
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
                alt_tls_listening_port, no_udp, no_tcp, no_tls, no_dtls, cert, pkey,
                max_tcp_connections, max_tcp_connections_per_ip, tcp_handshake_timeout,
                tcp_idle_timeout, tcp_send_queue, https_backend, max_bps, bps_capacity, new_peer_rate,
                alternate_server, drain_timeout, allocation_default_address_family, mobility,
                external_ip_interval,
                min_port, max_port, realm, rest_api_separator,
                max_credential_ttl, strict_credential_expiry, stale_nonce,
                default_allocate_lifetime, max_allocate_lifetime, permission_lifetime,
                channel_lifetime, user_quota, total_quota, max_permissions, max_channels,
                no_tcp_relay, max_tcp_relay_connections,
                relay_threads, unauthenticated_rate, unauthenticated_total_rate,
                unauthenticated_credit, busy_poll_us, socket_recv_buffer_size, socket_send_buffer_size, log_level,
                kernel_offload, redis, node_name, shared_state_failure,
                usage_webhook, usage_webhook_secret, usage_webhook_ca_file, usage_webhook_batch,
                usage_webhook_interval, usage_webhook_queue,
                api_listen, api_tls, credential_ttl, public_host;
            list: listening_ip, relay_ip, external_ip, external_ip_stun_servers, static_auth_secret, nonce_secret, user,
                denied_peer_ip, allowed_peer_ip, proxy_protocol_from,
                api_key_sha256, api_key, admin_key_sha256, turn_uris);
        self
    }

    /// Parses TOML; unknown keys and values of the wrong type are errors naming them.
    pub fn from_toml_str(text: &str) -> Result<RawConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::syntax(e.to_string().trim_end()))
    }

    /// Reads and parses a file; errors name the file.
    pub fn from_file(path: &Path) -> Result<RawConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::syntax(format!("cannot read {}: {e}", path.display())))?;
        Self::from_toml_str(&text).map_err(|e| e.in_file(path))
    }
}

/// A list option that may also be written as one string (`external-ip = "auto"`).
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// `shared-state-failure`: how a node decides what needs the fleet's Redis while Redis
/// does not answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SharedStateFailure {
    /// Serve on: the node's own quotas decide.
    #[default]
    Open,
    /// Refuse new allocations (508) until Redis answers.
    Closed,
}
