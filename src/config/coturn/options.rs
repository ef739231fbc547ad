//! Every option coturn's server reads from its configuration file (the long options of
//! coturn's `mainrelay.c`, 4.4 through 4.17, with the ones later releases removed), and
//! for each one ferroturn does not translate, why it is left out.

use super::NoteKind::{self, NotNeeded, Unsupported};

/// Every coturn option name, translated or not; a name outside this list is unknown.
pub const COTURN_OPTIONS: &[&str] = &[
    "CA-file",
    "Verbose",
    "acme-redirect",
    "allocation-default-address-family",
    "allow-loopback-peers",
    "allowed-peer-ip",
    "alt-listening-port",
    "alt-tls-listening-port",
    "alternate-server",
    "aux-server",
    "bps-capacity",
    "cert",
    "channel-lifetime",
    "check-origin-consistency",
    "cipher-list",
    "cli",
    "cli-ip",
    "cli-max-output-sessions",
    "cli-password",
    "cli-port",
    "cpus",
    "daemon",
    "db",
    "denied-peer-ip",
    "dh-file",
    "dh1066",
    "dh2066",
    "dh566",
    "drain-min-allocations",
    "drop-invalid-packets",
    "drop-invalid-packets-log",
    "dtls",
    "ec-curve-name",
    "external-ip",
    "fingerprint",
    "include-reason-string",
    "keep-address-family",
    "listening-device",
    "listening-ip",
    "listening-port",
    "log-binding",
    "log-file",
    "log-min-level",
    "lt-cred-mech",
    "max-allocate-lifetime",
    "max-allocate-timeout",
    "max-bps",
    "max-port",
    "min-port",
    "mobility",
    "mongo-userdb",
    "multiplex-peer",
    "multiplex-peer-max-peers",
    "multiplex-peer-port",
    "mysql-userdb",
    "ne",
    "new-log-timestamp",
    "new-log-timestamp-format",
    "no-auth",
    "no-auth-pings",
    "no-cli",
    "no-dtls",
    "no-dynamic-ip-list",
    "no-dynamic-realms",
    "no-http",
    "no-loopback-peers",
    "no-multicast-peers",
    "no-rfc5780",
    "no-software-attribute",
    "no-sslv2",
    "no-sslv3",
    "no-stdout-log",
    "no-stun",
    "no-stun-backward-compatibility",
    "no-tcp",
    "no-tcp-relay",
    "no-tls",
    "no-tlsv1",
    "no-tlsv1_1",
    "no-tlsv1_2",
    "no-udp",
    "no-udp-relay",
    "oauth",
    "permission-lifetime",
    "pidfile",
    "pkey",
    "pkey-pwd",
    "proc-group",
    "proc-user",
    "prod",
    "prometheus",
    "prometheus-address",
    "prometheus-cert",
    "prometheus-key",
    "prometheus-path",
    "prometheus-port",
    "prometheus-tls",
    "prometheus-username-labels",
    "psql-userdb",
    "raw-public-keys",
    "realm",
    "redis-statsdb",
    "redis-userdb",
    "relay-device",
    "relay-ip",
    "relay-threads",
    "respond-http-unsupported",
    "response-origin-only-with-rfc5780",
    "rest-api-separator",
    "rfc3489-compatibility",
    "rfc5766-channel-numbers",
    "rfc5780",
    "secret-key-file",
    "secret-ts-exp-time",
    "secure-stun",
    "server-name",
    "server-relay",
    "simple-log",
    "sock-buf-size",
    "software-attribute",
    "sql-userdb",
    "stale-nonce",
    "stateless-nonce",
    "stateless-nonce-secret",
    "static-auth-secret",
    "stun-backward-compatibility",
    "stun-only",
    "syslog",
    "syslog-facility",
    "tcp-alternate-server",
    "tcp-proxy-port",
    "tls-alternate-server",
    "tls-listening-port",
    "tlsv1",
    "tlsv1_1",
    "total-quota",
    "udp-alternate-server",
    "udp-gso",
    "udp-recvmmsg",
    "udp-recvmmsg-log",
    "udp-self-balance",
    "udp-sendmmsg-log",
    "unauthorized-ratelimit",
    "unauthorized-ratelimit-rps",
    "use-auth-secret",
    "user",
    "user-quota",
    "userdb",
    "verbose",
    "version",
    "web-admin",
    "web-admin-ip",
    "web-admin-listen-on-workers",
    "web-admin-port",
];

/// Options whose values are secrets (or connection strings holding one): a note never
/// shows their value.
pub fn is_secret(name: &str) -> bool {
    matches!(
        name,
        "static-auth-secret"
            | "user"
            | "cli-password"
            | "pkey-pwd"
            | "stateless-nonce-secret"
            | "redis-userdb"
            | "redis-statsdb"
            | "userdb"
            | "db"
            | "psql-userdb"
            | "sql-userdb"
            | "mysql-userdb"
            | "mongo-userdb"
    )
}

/// Why a coturn option is not translated.
pub struct LeftOut {
    pub kind: NoteKind,
    pub reason: &'static str,
    /// A flag: turned off (`name=0`), it asks for nothing and is simply not needed.
    pub flag: bool,
}

const LOGS: &str = "ferroturn logs to stdout (to the journal under systemd; \
    `--log-format json` for log shippers); set log-level for the amount";
const SQL: &str = "ferroturn keeps no user database: list users in `user` or keep them \
    in Redis in coturn's redis-userdb schema (`redis`)";
const SYSTEMD: &str = "ferroturn runs in the foreground under systemd (systemd/ferroturn.service), \
    which runs it as its own user and tracks the process";
const CLI: &str = "ferroturn has no telnet CLI: the HTTP API's admin endpoints (api-listen, \
    admin-key-sha256) list and delete sessions, drain and reload";
const WEB: &str = "ferroturn has no web admin: the HTTP API's admin endpoints (api-listen, \
    admin-key-sha256) list and delete sessions, drain and reload";
const ALTERNATE: &str = "coturn redirects every Allocate there (load balancing); ferroturn's \
    alternate-server is used only while draining, so translating it would change behaviour";
const TLS_VERSIONS: &str = "ferroturn offers TLS 1.2 and 1.3 only (DTLS 1.2)";
const KEY_EXCHANGE: &str = "ferroturn's TLS uses ECDHE key exchange chosen by the TLS library";
const BATCHING: &str = "ferroturn batches UDP receives and sends (recvmmsg, sendmmsg, GSO) itself";
const NO_5780: &str = "ferroturn does not implement RFC 5780 NAT behaviour discovery, so it \
    never adds its attributes";
const NO_DB_POLL: &str = "ferroturn has no SQL database to poll";

/// Why `name` is left out, or `None` when it is translated or unknown.
pub fn left_out(name: &str) -> Option<LeftOut> {
    let (kind, flag, reason) = match name {
        "lt-cred-mech" => (
            NotNeeded,
            true,
            "ferroturn always uses the long-term credential mechanism",
        ),
        "use-auth-secret" => (
            NotNeeded,
            true,
            "static-auth-secret alone turns TURN REST credentials on",
        ),
        "fingerprint" => (
            NotNeeded,
            true,
            "ferroturn adds FINGERPRINT to every answer to a request that carried one (RFC 8489 section 14.7)",
        ),
        "server-name" => (NotNeeded, false, "coturn uses it for oAuth only"),
        "oauth" => (
            Unsupported,
            true,
            "ferroturn has no third-party (oAuth) authorization",
        ),
        "no-loopback-peers" => (
            NotNeeded,
            true,
            "ferroturn refuses loopback peers by default",
        ),
        "no-multicast-peers" => (
            NotNeeded,
            true,
            "ferroturn refuses multicast peers by default",
        ),
        "log-file"
        | "syslog"
        | "simple-log"
        | "no-stdout-log"
        | "new-log-timestamp"
        | "new-log-timestamp-format"
        | "syslog-facility" => (NotNeeded, false, LOGS),
        "log-binding" => (NotNeeded, true, "ferroturn does not log Binding requests"),
        "daemon" | "pidfile" | "proc-user" | "proc-group" => (NotNeeded, false, SYSTEMD),
        "no-cli" => (NotNeeded, true, CLI),
        "cli" | "cli-ip" | "cli-port" | "cli-password" | "cli-max-output-sessions" => {
            (Unsupported, name == "cli", CLI)
        }
        "web-admin" | "web-admin-ip" | "web-admin-port" | "web-admin-listen-on-workers" => (
            Unsupported,
            name == "web-admin" || name.ends_with("workers"),
            WEB,
        ),
        "userdb" | "db" | "psql-userdb" | "sql-userdb" | "mysql-userdb" | "mongo-userdb"
        | "secret-key-file" => (Unsupported, false, SQL),
        "no-auth-pings" | "no-dynamic-ip-list" | "no-dynamic-realms" => {
            (NotNeeded, true, NO_DB_POLL)
        }
        "redis-statsdb" => (
            Unsupported,
            false,
            "ferroturn publishes no statistics to Redis: /metrics (api-listen) and the admin sessions endpoint show them",
        ),
        "prometheus-path" => (
            Unsupported,
            false,
            "ferroturn serves metrics at /metrics only",
        ),
        "prometheus-username-labels" => (
            Unsupported,
            true,
            "ferroturn's metrics never carry user names (bounded labels)",
        ),
        "prometheus-tls" | "prometheus-cert" | "prometheus-key" => (
            Unsupported,
            name == "prometheus-tls",
            "the HTTP API serves TLS with the TURN certificate only (api-tls)",
        ),
        "no-tlsv1" | "no-tlsv1_1" | "no-sslv2" | "no-sslv3" => (NotNeeded, true, TLS_VERSIONS),
        "tlsv1" | "tlsv1_1" => (Unsupported, true, TLS_VERSIONS),
        "no-tlsv1_2" => (
            Unsupported,
            true,
            "ferroturn keeps TLS 1.2 on: DTLS and many clients need it",
        ),
        "cipher-list" => (
            Unsupported,
            false,
            "ferroturn uses its TLS library's safe cipher suites and offers no choice",
        ),
        "ec-curve-name" | "dh566" | "dh1066" | "dh2066" | "dh-file" => {
            (NotNeeded, false, KEY_EXCHANGE)
        }
        "CA-file" => (
            Unsupported,
            false,
            "ferroturn does not verify client certificates",
        ),
        "pkey-pwd" => (
            Unsupported,
            false,
            "ferroturn reads unencrypted keys only: decrypt it once with `openssl pkey`",
        ),
        "raw-public-keys" => (
            Unsupported,
            true,
            "ferroturn serves X.509 certificates only",
        ),
        "listening-device" | "relay-device" => (
            Unsupported,
            false,
            "ferroturn binds to addresses, not devices: use listening-ip and relay-ip",
        ),
        "aux-server" | "udp-self-balance" => (
            Unsupported,
            name == "udp-self-balance",
            "ferroturn has no auxiliary servers: it spreads load over relay threads itself",
        ),
        "alternate-server"
        | "tls-alternate-server"
        | "tcp-alternate-server"
        | "udp-alternate-server" => (Unsupported, false, ALTERNATE),
        "tcp-proxy-port" => (
            Unsupported,
            false,
            "no port of its own for PROXY headers: set proxy-protocol-from to your load balancers' addresses, and their headers are read on the usual TCP and TLS ports",
        ),
        "no-udp-relay" => (Unsupported, true, "ferroturn always offers UDP relays"),
        "server-relay" => (
            Unsupported,
            true,
            "ferroturn always checks permissions on relayed traffic",
        ),
        "stun-only" | "no-stun" => (Unsupported, true, "ferroturn always serves STUN and TURN"),
        "secure-stun" => (
            Unsupported,
            true,
            "ferroturn answers Binding requests without authentication",
        ),
        "check-origin-consistency" => (Unsupported, true, "ferroturn does not look at ORIGIN"),
        "no-rfc5780" | "response-origin-only-with-rfc5780" => (NotNeeded, true, NO_5780),
        "rfc5780" => (Unsupported, true, NO_5780),
        "no-stun-backward-compatibility" => (
            NotNeeded,
            true,
            "ferroturn answers with XOR-MAPPED-ADDRESS only and drops RFC 3489 requests",
        ),
        "stun-backward-compatibility" | "rfc3489-compatibility" => (
            Unsupported,
            true,
            "ferroturn answers with XOR-MAPPED-ADDRESS only and drops RFC 3489 requests",
        ),
        "rfc5766-channel-numbers" => (
            NotNeeded,
            true,
            "ferroturn accepts RFC 5766's channel numbers 0x4000-0x7FFF",
        ),
        "no-software-attribute" | "prod" => {
            (NotNeeded, true, "ferroturn sends no SOFTWARE attribute")
        }
        "software-attribute" => (Unsupported, true, "ferroturn sends no SOFTWARE attribute"),
        "include-reason-string" => (
            Unsupported,
            true,
            "ferroturn sends the standard reason phrases",
        ),
        "drop-invalid-packets" => (NotNeeded, true, "ferroturn drops invalid packets silently"),
        "drop-invalid-packets-log" => (
            Unsupported,
            true,
            "ferroturn counts dropped packets in /metrics instead of logging them",
        ),
        "respond-http-unsupported" => (
            Unsupported,
            true,
            "ferroturn closes a connection that is not STUN",
        ),
        "udp-recvmmsg" | "udp-recvmmsg-log" | "udp-sendmmsg-log" | "udp-gso" | "ne" => {
            (NotNeeded, true, BATCHING)
        }
        "multiplex-peer" | "multiplex-peer-port" | "multiplex-peer-max-peers" => (
            Unsupported,
            name == "multiplex-peer",
            "ferroturn gives each allocation its own relay port",
        ),
        "max-allocate-timeout" => (
            Unsupported,
            false,
            "ferroturn bounds unfinished connections with tcp-handshake-timeout and tcp-idle-timeout instead",
        ),
        "drain-min-allocations" => (
            Unsupported,
            false,
            "a drain (SIGTERM) waits for every allocation or drain-timeout",
        ),
        "acme-redirect" => (
            Unsupported,
            false,
            "ferroturn serves no HTTP on its TURN ports",
        ),
        "stateless-nonce" => (NotNeeded, true, "ferroturn's nonces are always stateless"),
        "secret-ts-exp-time" => (
            NotNeeded,
            false,
            "a REST username carries its own expiry (max-credential-ttl bounds it)",
        ),
        "no-http" => (
            NotNeeded,
            true,
            "ferroturn serves no HTTP on its TURN ports",
        ),
        "version" => (NotNeeded, true, "not a setting"),
        _ => return None,
    };
    Some(LeftOut { kind, reason, flag })
}

/// A coturn option that differs from `name` only in case, `_`/`-` or a leading `--`.
pub fn spelled_like(name: &str) -> Option<&'static str> {
    let norm = |s: &str| {
        s.trim_start_matches('-')
            .replace('_', "-")
            .to_ascii_lowercase()
    };
    let want = norm(name);
    COTURN_OPTIONS.iter().copied().find(|o| norm(o) == want)
}
