//! What the file leaves to coturn's defaults, made explicit for ferroturn (credentials,
//! limits, notes on defaults that differ; addresses are [`super::network`]'s), and the
//! TOML text.

use super::network::{listeners, relay};
use super::translate::Draft;
use super::{Host, NoteKind};
use crate::config::typed::parse_user;
use std::net::IpAddr;
use toml::Value;

/// The TOML text for `draft` and every note.
pub fn finish(mut d: Draft, source: &str, host: &Host) -> (String, Vec<super::Note>) {
    let mut out = Toml::new(source);
    listeners(&mut d, &mut out, host);
    relay(&mut d, &mut out, host);
    credentials(&mut d, &mut out, host);
    limits(&mut d, &mut out);
    operations(&mut d, &mut out);
    // The file's lines in order, then what concerns the file as a whole.
    d.notes.sort_by_key(|n| n.line.unwrap_or(usize::MAX));
    (out.text, d.notes)
}

fn credentials(d: &mut Draft, out: &mut Toml, host: &Host) {
    out.section("Authentication");
    let mut users = Vec::new();
    let mut keys = false;
    for (line, entry) in std::mem::take(&mut d.user) {
        let name = entry.split_once(':').map_or("", |(n, _)| n).to_owned();
        let key = entry
            .split_once(':')
            .and_then(|(_, p)| p.strip_prefix("0x"));
        match parse_user(&entry) {
            Ok(_) => {
                keys |= key.is_some();
                users.push(entry);
            }
            Err(_) if key.is_some_and(|k| k.len() == 64) => d.note(
                Some(line),
                "user",
                NoteKind::Unsupported,
                format!(
                    "`{name}`: a SHA-256 key (coturn's old --sha256); ferroturn keys are \
                 MD5(name:realm:password), 32 hex digits: give the password instead"
                ),
            ),
            Err(_) => d.note(
                Some(line),
                "user",
                NoteKind::Invalid,
                format!(
                    "`{name}`: expected name:password or name:0x<32 hex digits> (value not shown)"
                ),
            ),
        }
    }
    if keys && d.realm.is_none() {
        d.note(
            None,
            "realm",
            NoteKind::Default,
            "the file gives 0x keys but no realm: a key is bound to the realm it was made \
             for, and ferroturn's default realm is \"ferroturn\"; set the realm the keys were \
             made with"
                .into(),
        );
    }
    out.string("realm", d.realm.take());
    if d.static_auth_secret.is_empty() && users.is_empty() {
        d.static_auth_secret.push(host.placeholder_secret.clone());
        let why = if d.redis.is_some() {
            "ferroturn wants one credential in its file even when Redis holds them"
        } else if d.no_auth {
            "coturn allowed anonymous access; ferroturn always authenticates"
        } else {
            "the file configures no credentials (coturn then allows anonymous access); \
             ferroturn always authenticates"
        };
        d.note(
            None,
            "static-auth-secret",
            NoteKind::Default,
            format!(
                "{why}: a random secret that no client knows was written; replace it with your \
             TURN REST secret, or add users"
            ),
        );
    }
    out.list(
        "static-auth-secret",
        std::mem::take(&mut d.static_auth_secret),
    );
    out.list("user", users);
    out.string("rest-api-separator", d.rest_api_separator.map(String::from));
    out.int("stale-nonce", d.stale_nonce);
    out.list("nonce-secret", std::mem::take(&mut d.nonce_secret));
    out.section("Lifetimes");
    if let Some(max) = d.max_allocate_lifetime.filter(|m| *m < 600) {
        out.int("default-allocate-lifetime", Some(max));
        d.note(None, "max-allocate-lifetime", NoteKind::Changed, format!(
            "{max} is below ferroturn's default-allocate-lifetime (600): that is set to {max} too"
        ));
    }
    out.int("max-allocate-lifetime", d.max_allocate_lifetime);
    out.int("permission-lifetime", d.permission_lifetime);
    out.int("channel-lifetime", d.channel_lifetime);
}

fn limits(d: &mut Draft, out: &mut Toml) {
    out.section("Peer policy");
    let denied = std::mem::take(&mut d.denied_peer_ip);
    out.list("denied-peer-ip", denied.clone());
    let mut allowed = std::mem::take(&mut d.allowed_peer_ip);
    if d.allow_loopback_peers {
        allowed.extend(["127.0.0.0/8".to_owned(), "::1".to_owned()]);
    }
    out.list("allowed-peer-ip", allowed);
    // A file that denies the private networks itself does not rely on coturn's default.
    let private = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"];
    if !private.iter().all(|p| denied.iter().any(|r| r == p)) {
        d.note(
            None,
            "denied-peer-ip",
            NoteKind::Default,
            "coturn relays to private networks unless denied-peer-ip lists them; ferroturn \
             refuses loopback, private (10/8, 172.16/12, 192.168/16, fc00::/7), link-local, \
             multicast and reserved ranges by default: list the ones your peers use in \
             allowed-peer-ip"
                .into(),
        );
    }
    out.section("Unauthenticated traffic");
    match (d.unauthorized_ratelimit, d.unauthorized_ratelimit_rps) {
        // coturn's default rate is 10 answers per second.
        (Some(true), rps) => out.int("unauthenticated-rate", Some(rps.unwrap_or(10))),
        (_, rps) => {
            if rps.is_some() {
                d.note(
                    None,
                    "unauthorized-ratelimit-rps",
                    NoteKind::NotNeeded,
                    "unauthorized-ratelimit is off, so coturn does not use it".into(),
                );
            }
            d.note(
                None,
                "unauthenticated-rate",
                NoteKind::Default,
                "coturn does not limit its answers to unauthenticated requests unless \
                 unauthorized-ratelimit is on; ferroturn limits them per source address by \
                 default"
                    .into(),
            );
        }
    }
    out.section("Quotas");
    out.int("user-quota", d.user_quota);
    out.int("total-quota", d.total_quota);
    out.int("max-bps", d.max_bps);
    if d.max_bps.is_none() {
        d.note(
            None,
            "max-bps",
            NoteKind::Default,
            "coturn does not limit a session's bandwidth by default; ferroturn allows 12500000 \
             bytes/s (100 Mbit/s) per allocation and direction: max-bps = 0 lifts it"
                .into(),
        );
    }
    out.int("bps-capacity", d.bps_capacity);
    out.boolean("no-tcp-relay", d.no_tcp_relay);
}

fn operations(d: &mut Draft, out: &mut Toml) {
    out.section("Performance");
    if d.relay_threads.is_none() {
        if let Some(cpus) = d.cpus {
            d.note(
                None,
                "cpus",
                NoteKind::Changed,
                format!("coturn runs one relay thread per CPU: relay-threads = {cpus}"),
            );
            d.relay_threads = Some(cpus);
        }
    } else if d.cpus.is_some() {
        d.note(
            None,
            "cpus",
            NoteKind::NotNeeded,
            "relay-threads is given".into(),
        );
    }
    out.int("relay-threads", d.relay_threads);
    out.int("socket-recv-buffer-size", d.socket_buffer_size);
    out.int("socket-send-buffer-size", d.socket_buffer_size);
    out.section("Fleet");
    out.string("redis", d.redis.take());
    out.section("Logging");
    out.string(
        "log-level",
        d.log_min_level.or(d.verbosity).map(String::from),
    );
    out.section("HTTP API");
    if d.prometheus {
        let ip = d.prometheus_address.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let listen = std::net::SocketAddr::new(ip, d.prometheus_port.unwrap_or(9641));
        out.string("api-listen", Some(listen.to_string()));
        d.note(
            None,
            "prometheus",
            NoteKind::Changed,
            format!(
                "became api-listen = \"{listen}\": the HTTP API serves /metrics there (metric \
             names start with ferroturn_), /healthz and /readyz; its credentials and admin \
             endpoints stay off without keys"
            ),
        );
    } else if d.prometheus_address.is_some() || d.prometheus_port.is_some() {
        d.note(
            None,
            "prometheus-port",
            NoteKind::NotNeeded,
            "prometheus is not turned on, so coturn does not use its address or port".into(),
        );
    }
}

/// The TOML text, written key by key in the order of turnserver.toml.example, under a
/// section comment once the section has a key.
pub struct Toml {
    text: String,
    section: Option<&'static str>,
}

impl Toml {
    fn new(source: &str) -> Self {
        let source: String = source
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        Self {
            text: format!(
                "# ferroturn configuration imported from coturn's {source} by\n\
                 # `ferroturn import-coturn`. Read the notes it printed before using it; every\n\
                 # option is documented in turnserver.toml.example.\n"
            ),
            section: None,
        }
    }

    pub fn section(&mut self, name: &'static str) {
        self.section = Some(name);
    }

    pub fn key(&mut self, key: &str, value: Value) {
        if let Some(name) = self.section.take() {
            self.text.push_str(&format!("\n# --- {name} ---\n"));
        }
        self.text.push_str(&format!("{key} = {value}\n"));
    }

    pub fn int<T: TryInto<i64>>(&mut self, key: &str, value: Option<T>) {
        if let Some(v) = value {
            // Past i64::MAX is past every limit ferroturn takes: check-config names it.
            self.key(key, Value::Integer(v.try_into().unwrap_or(i64::MAX)));
        }
    }

    pub fn boolean(&mut self, key: &str, value: Option<bool>) {
        if let Some(v) = value {
            self.key(key, Value::Boolean(v));
        }
    }

    pub fn string(&mut self, key: &str, value: Option<String>) {
        if let Some(v) = value {
            self.key(key, Value::String(v));
        }
    }

    pub fn list(&mut self, key: &str, items: impl IntoIterator<Item = String>) {
        let items: Vec<Value> = items.into_iter().map(Value::String).collect();
        if !items.is_empty() {
            self.key(key, Value::Array(items));
        }
    }
}
