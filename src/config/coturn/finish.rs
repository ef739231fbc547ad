//! What the file leaves to coturn's run-time choices and defaults, made explicit for
//! ferroturn (the relay address, credentials, a port range, notes on defaults that
//! differ), and the TOML text.

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

fn listeners(d: &mut Draft, out: &mut Toml, host: &Host) {
    out.section("Listeners");
    let mut ips = d.listening_ip.clone();
    if ips.is_empty() {
        ips.push(IpAddr::from([0, 0, 0, 0]));
        let v6 = usable(host).any(|ip| ip.is_ipv6());
        if v6 {
            ips.push(IpAddr::from([0u16; 8]));
        }
        let what = if v6 {
            "0.0.0.0 and ::"
        } else {
            "0.0.0.0 (no IPv6 address on this host)"
        };
        d.note(
            None,
            "listening-ip",
            NoteKind::Default,
            format!(
                "coturn listens on every address of the host when listening-ip is not given; \
             written as {what}"
            ),
        );
    }
    out.list("listening-ip", ips.iter().map(ToString::to_string));
    out.int("listening-port", d.listening_port);
    out.int("tls-listening-port", d.tls_listening_port);
    out.int("alt-listening-port", d.alt_listening_port);
    out.int("alt-tls-listening-port", d.alt_tls_listening_port);
    for (key, value) in [
        ("no-udp", d.no_udp),
        ("no-tcp", d.no_tcp),
        ("no-tls", d.no_tls),
    ] {
        out.boolean(key, value);
    }
    match (d.cert.take(), d.pkey.take()) {
        (Some(cert), Some(pkey)) => {
            out.string("cert", Some(cert));
            out.string("pkey", Some(pkey));
            if d.no_dtls.is_none() && d.no_tls != Some(true) {
                d.note(
                    None,
                    "no-dtls",
                    NoteKind::Default,
                    "ferroturn serves DTLS on the TLS ports whenever TLS is on (as coturn 4.6 \
                     does; newer coturn only with `dtls`): set no-dtls = true to keep it off"
                        .into(),
                );
            }
        }
        (None, None) => {
            if d.tls_listening_port.is_some() && d.no_tls != Some(true) {
                d.note(
                    None,
                    "cert",
                    NoteKind::Default,
                    "coturn looks for turn_server_cert.pem and turn_server_pkey.pem when cert \
                     and pkey are not given; ferroturn serves TLS only with both set"
                        .into(),
                );
            }
        }
        (cert, _) => {
            let (given, missing) = if cert.is_some() {
                ("cert", "pkey")
            } else {
                ("pkey", "cert")
            };
            d.note(
                None,
                given,
                NoteKind::Unsupported,
                format!(
                    "{missing} is not given (coturn then looks for a default file); ferroturn \
                 needs both, so TLS is left off"
                ),
            );
        }
    }
    out.boolean("no-dtls", d.no_dtls);
}

/// The addresses ferroturn could relay from: the host's, without loopback, link-local
/// or other special addresses.
fn usable(host: &Host) -> impl Iterator<Item = IpAddr> + '_ {
    host.addresses.iter().copied().filter(|ip| match ip {
        IpAddr::V4(v4) => {
            !(v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast())
        }
        IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unicast_link_local())
        }
    })
}

fn relay(d: &mut Draft, out: &mut Toml, host: &Host) {
    out.section("Relay");
    let mut relays: Vec<IpAddr> = Vec::new();
    for (line, ip) in std::mem::take(&mut d.relay_ip) {
        if relays.iter().any(|r| r.is_ipv4() == ip.is_ipv4()) {
            d.note(
                Some(line),
                "relay-ip",
                NoteKind::Unsupported,
                format!(
                    "`{ip}`: ferroturn relays from one address per family; the first one is kept"
                ),
            );
        } else {
            relays.push(ip);
        }
    }
    let specific: Vec<IpAddr> = d
        .listening_ip
        .iter()
        .copied()
        .filter(|ip| !ip.is_unspecified())
        .collect();
    if relays.is_empty() && specific.is_empty() {
        // coturn relays from the address the client reached; ferroturn needs it named.
        let from_nat: Vec<IpAddr> = d.external_ip.iter().filter_map(|(_, _, l)| *l).collect();
        let (found, whence) = if from_nat.is_empty() {
            (usable(host).collect::<Vec<_>>(), "this host's interfaces")
        } else {
            (from_nat, "the private side of external-ip")
        };
        for ip in found {
            if !relays.iter().any(|r| r.is_ipv4() == ip.is_ipv4()) {
                relays.push(ip);
            }
        }
        let message = if relays.is_empty() {
            relays.push(IpAddr::from([127, 0, 0, 1]));
            "coturn relays from the address each client reached; ferroturn needs relay-ip, \
             and this host has no usable address: 127.0.0.1 was written, set the real one"
                .to_owned()
        } else {
            let list: Vec<String> = relays.iter().map(ToString::to_string).collect();
            format!(
                "coturn relays from the address each client reached; ferroturn binds relays \
                 to one address per family: {} from {whence}, check it",
                list.join(", ")
            )
        };
        d.note(None, "relay-ip", NoteKind::Default, message);
    } else if relays.is_empty() {
        let mut first: Vec<IpAddr> = Vec::new();
        for ip in &specific {
            if first.iter().any(|f| f.is_ipv4() == ip.is_ipv4()) {
                d.note(
                    None,
                    "relay-ip",
                    NoteKind::Default,
                    format!(
                        "coturn relays from the address each client reached; ferroturn relays \
                     from the first listening-ip of each family, not from {ip}"
                    ),
                );
            } else {
                first.push(*ip);
            }
        }
    }
    out.list("relay-ip", relays.iter().map(ToString::to_string));
    let mut externals = Vec::new();
    for (line, public, private) in std::mem::take(&mut d.external_ip) {
        match private {
            Some(l) => {
                let bound = if relays.is_empty() {
                    &specific
                } else {
                    &relays
                };
                if !bound.contains(&l) {
                    d.note(
                        Some(line),
                        "external-ip",
                        NoteKind::Changed,
                        format!(
                            "ferroturn maps PUBLIC/PRIVATE only for a relay bound to PRIVATE, and \
                         no relay address is {l}: this mapping has no effect"
                        ),
                    );
                }
                externals.push(format!("{public}/{l}"));
            }
            None => externals.push(public.to_string()),
        }
    }
    out.list("external-ip", externals);
    out.string(
        "allocation-default-address-family",
        d.allocation_default_address_family.map(String::from),
    );
    out.boolean("mobility", d.mobility);
    if let (Some(min), Some(max)) = (d.min_port, d.max_port) {
        if min > max {
            d.note(
                None,
                "min-port",
                NoteKind::Invalid,
                format!("min-port {min} is above max-port {max}: both are left out"),
            );
            d.min_port = None;
            d.max_port = None;
        }
    }
    out.int("min-port", d.min_port);
    out.int("max-port", d.max_port);
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
struct Toml {
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

    fn section(&mut self, name: &'static str) {
        self.section = Some(name);
    }

    fn key(&mut self, key: &str, value: Value) {
        if let Some(name) = self.section.take() {
            self.text.push_str(&format!("\n# --- {name} ---\n"));
        }
        self.text.push_str(&format!("{key} = {value}\n"));
    }

    fn int<T: TryInto<i64>>(&mut self, key: &str, value: Option<T>) {
        if let Some(v) = value {
            // Past i64::MAX is past every limit ferroturn takes: check-config names it.
            self.key(key, Value::Integer(v.try_into().unwrap_or(i64::MAX)));
        }
    }

    fn boolean(&mut self, key: &str, value: Option<bool>) {
        if let Some(v) = value {
            self.key(key, Value::Boolean(v));
        }
    }

    fn string(&mut self, key: &str, value: Option<String>) {
        if let Some(v) = value {
            self.key(key, Value::String(v));
        }
    }

    fn list(&mut self, key: &str, items: impl IntoIterator<Item = String>) {
        let items: Vec<Value> = items.into_iter().map(Value::String).collect();
        if !items.is_empty() {
            self.key(key, Value::Array(items));
        }
    }
}
