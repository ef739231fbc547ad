//! The coturn options that have a ferroturn equivalent, read into a [`Draft`]: the
//! ferroturn values and the notes so far. A scalar given twice keeps the last value (as
//! coturn does); a list option adds to the list.

use super::syntax::{self, Entry};
use super::{Note, NoteKind, options, values};
use std::net::IpAddr;
use std::str::FromStr;

/// ferroturn's options as the file sets them (named after ferroturn's keys).
#[derive(Debug, Default)]
pub struct Draft {
    pub notes: Vec<Note>,
    pub listening_ip: Vec<IpAddr>,
    pub listening_port: Option<u16>,
    pub tls_listening_port: Option<u16>,
    pub alt_listening_port: Option<u16>,
    pub alt_tls_listening_port: Option<u16>,
    pub no_udp: Option<bool>,
    pub no_tcp: Option<bool>,
    pub no_tls: Option<bool>,
    /// `no-dtls`, or the opposite of coturn's newer `dtls`.
    pub no_dtls: Option<bool>,
    pub cert: Option<String>,
    pub pkey: Option<String>,
    pub relay_ip: Vec<(usize, IpAddr)>,
    /// (line, public, private).
    pub external_ip: Vec<(usize, IpAddr, Option<IpAddr>)>,
    pub min_port: Option<u16>,
    pub max_port: Option<u16>,
    pub realm: Option<String>,
    pub static_auth_secret: Vec<String>,
    /// `name:password` or `name:0x<key>`, each with its line.
    pub user: Vec<(usize, String)>,
    pub no_auth: bool,
    pub rest_api_separator: Option<char>,
    pub stale_nonce: Option<u64>,
    pub max_allocate_lifetime: Option<u64>,
    pub permission_lifetime: Option<u64>,
    pub channel_lifetime: Option<u64>,
    pub denied_peer_ip: Vec<String>,
    pub allowed_peer_ip: Vec<String>,
    pub user_quota: Option<u32>,
    pub total_quota: Option<u32>,
    pub max_bps: Option<u64>,
    pub bps_capacity: Option<u64>,
    pub no_tcp_relay: Option<bool>,
    pub mobility: Option<bool>,
    pub allocation_default_address_family: Option<&'static str>,
    pub relay_threads: Option<usize>,
    /// coturn's `cpus`: its thread count when `relay-threads` is not given.
    pub cpus: Option<usize>,
    pub socket_buffer_size: Option<usize>,
    /// From `verbose` / `Verbose`.
    pub verbosity: Option<&'static str>,
    /// From `log-min-level` (wins over verbosity).
    pub log_min_level: Option<&'static str>,
    pub redis: Option<String>,
    pub prometheus: bool,
    pub prometheus_address: Option<IpAddr>,
    pub prometheus_port: Option<u16>,
    pub unauthorized_ratelimit: Option<bool>,
    pub unauthorized_ratelimit_rps: Option<u32>,
    pub nonce_secret: Vec<String>,
    pub allow_loopback_peers: bool,
}

impl Draft {
    pub fn note(&mut self, line: Option<usize>, option: &str, kind: NoteKind, message: String) {
        self.notes.push(Note {
            line,
            option: option.to_owned(),
            kind,
            message,
        });
    }

    /// Reads one line of the file into the draft, or notes why it is left out.
    pub fn apply(&mut self, e: &Entry) {
        // The caller reads the file lossily: bytes that were not UTF-8 show up here.
        if e.name.contains('\u{FFFD}') || e.value.as_deref().is_some_and(|v| v.contains('\u{FFFD}'))
        {
            self.note(
                Some(e.line),
                &e.name,
                NoteKind::Invalid,
                "the line is not UTF-8 text (value not shown)".into(),
            );
            return;
        }
        if !self.translate(e) {
            match options::left_out(&e.name) {
                Some(out) => {
                    let off = out.flag && syntax::flag(e.value.as_deref()) == Some(false);
                    let (kind, reason) = if off {
                        (
                            NoteKind::NotNeeded,
                            "set to off: nothing to translate".to_owned(),
                        )
                    } else {
                        (out.kind, out.reason.to_owned())
                    };
                    self.note(Some(e.line), &e.name, kind, reason);
                }
                None => {
                    // The value is not shown: a misspelt secret option would leak it.
                    let hint = options::spelled_like(&e.name)
                        .map(|known| format!(" (did you mean `{known}`?)"))
                        .unwrap_or_default();
                    self.note(
                        Some(e.line),
                        &e.name,
                        NoteKind::Unknown,
                        format!("not a coturn option{hint}"),
                    );
                }
            }
        }
    }

    /// Translates `e` if it is one of the options ferroturn has; `false` otherwise.
    fn translate(&mut self, e: &Entry) -> bool {
        let n = e.line;
        match e.name.as_str() {
            "listening-ip" => {
                let ip = ip(self, e);
                self.listening_ip.extend(ip);
            }
            "listening-port" => self.listening_port = self.number(e).or(self.listening_port),
            "tls-listening-port" => {
                self.tls_listening_port = self.number(e).or(self.tls_listening_port)
            }
            "alt-listening-port" => {
                self.alt_listening_port = self.number(e).or(self.alt_listening_port)
            }
            "alt-tls-listening-port" => {
                self.alt_tls_listening_port = self.number(e).or(self.alt_tls_listening_port)
            }
            "no-udp" => self.no_udp = self.flag(e).or(self.no_udp),
            "no-tcp" => self.no_tcp = self.flag(e).or(self.no_tcp),
            "no-tls" => self.no_tls = self.flag(e).or(self.no_tls),
            "no-dtls" => self.no_dtls = self.flag(e).or(self.no_dtls),
            "dtls" => self.no_dtls = self.flag(e).map(|on| !on).or(self.no_dtls),
            "no-tcp-relay" => self.no_tcp_relay = self.flag(e).or(self.no_tcp_relay),
            "mobility" => self.mobility = self.flag(e).or(self.mobility),
            "cert" => self.cert = self.path(e).or(self.cert.take()),
            "pkey" => self.pkey = self.path(e).or(self.pkey.take()),
            "relay-ip" => match ip(self, e) {
                Some(ip) if ip.is_unspecified() => self.invalid(e, "must be a specific address"),
                Some(ip) => self.relay_ip.push((n, ip)),
                None => {}
            },
            "external-ip" => self.external_ip(e),
            "min-port" => self.min_port = self.number(e).or(self.min_port),
            "max-port" => self.max_port = self.number(e).or(self.max_port),
            "realm" => self.realm = self.text(e).or(self.realm.take()),
            "static-auth-secret" => match e.value.clone() {
                Some(secret) => self.static_auth_secret.push(secret),
                None => self.invalid(e, "needs a value"),
            },
            "user" => match e.value.clone() {
                Some(user) => self.user.push((n, user)),
                None => self.invalid(e, "needs a value"),
            },
            "no-auth" => {
                if self.flag(e) == Some(true) {
                    self.no_auth = true;
                    self.note(
                        Some(n),
                        &e.name,
                        NoteKind::Unsupported,
                        "ferroturn has no anonymous access: every allocation authenticates".into(),
                    );
                }
            }
            "rest-api-separator" => match e.value.as_deref().and_then(|v| v.chars().next()) {
                Some(c) => self.rest_api_separator = Some(c),
                None => self.invalid(e, "needs a value"),
            },
            "stale-nonce" => self.stale_nonce = self.seconds(e, 600).or(self.stale_nonce),
            "max-allocate-lifetime" => {
                self.max_allocate_lifetime = self.seconds(e, 3600).or(self.max_allocate_lifetime)
            }
            "permission-lifetime" => {
                self.permission_lifetime = self.seconds(e, 300).or(self.permission_lifetime)
            }
            "channel-lifetime" => {
                self.channel_lifetime = self.seconds(e, 600).or(self.channel_lifetime)
            }
            "denied-peer-ip" => {
                let range = self.range(e);
                self.denied_peer_ip.extend(range);
            }
            "allowed-peer-ip" => {
                let range = self.range(e);
                self.allowed_peer_ip.extend(range);
            }
            "user-quota" => self.user_quota = self.number(e).or(self.user_quota),
            "total-quota" => self.total_quota = self.number(e).or(self.total_quota),
            "max-bps" => self.max_bps = self.number(e).or(self.max_bps),
            "bps-capacity" => self.bps_capacity = self.number(e).or(self.bps_capacity),
            "keep-address-family" => {
                if self.flag(e) == Some(true) {
                    self.allocation_default_address_family = Some("keep");
                }
            }
            "allocation-default-address-family" => {
                match e.value.as_deref().map(|v| v.trim_start_matches('=')) {
                    Some("ipv4") => self.allocation_default_address_family = Some("ipv4"),
                    Some("ipv6") => self.allocation_default_address_family = Some("ipv6"),
                    Some("keep") => self.allocation_default_address_family = Some("keep"),
                    _ => self.invalid(e, "expected ipv4, ipv6 or keep"),
                }
            }
            "relay-threads" => self.relay_threads(e),
            "cpus" => self.cpus = self.number::<usize>(e).filter(|c| *c > 0).or(self.cpus),
            "sock-buf-size" => self.socket_buffer_size = self.number(e).or(self.socket_buffer_size),
            "verbose" => match self.flag(e) {
                Some(true) if self.verbosity != Some("trace") => self.verbosity = Some("debug"),
                Some(false) if self.verbosity != Some("trace") => self.verbosity = None,
                _ => {}
            },
            "Verbose" => {
                if self.flag(e) == Some(true) {
                    self.verbosity = Some("trace");
                }
            }
            "log-min-level" => match e.value.as_deref() {
                Some("debug") => self.log_min_level = Some("debug"),
                Some("info") => self.log_min_level = Some("info"),
                Some("warning") => self.log_min_level = Some("warn"),
                Some("error") => self.log_min_level = Some("error"),
                _ => self.invalid(e, "expected debug, info, warning or error"),
            },
            "redis-userdb" => self.redis_userdb(e),
            // coturn turns the exporter on with a bare `prometheus`, whatever follows.
            "prometheus" => self.prometheus = true,
            "prometheus-address" => {
                self.prometheus_address = ip(self, e).or(self.prometheus_address)
            }
            "prometheus-port" => self.prometheus_port = self.number(e).or(self.prometheus_port),
            "unauthorized-ratelimit" => {
                self.unauthorized_ratelimit = self.flag(e).or(self.unauthorized_ratelimit)
            }
            // Bare, coturn takes its default of 10 answers per second.
            "unauthorized-ratelimit-rps" => match e.value {
                None => self.unauthorized_ratelimit_rps = Some(10),
                Some(_) => {
                    let rps = self.number::<u32>(e).filter(|r| *r > 0);
                    self.unauthorized_ratelimit_rps = rps.or(self.unauthorized_ratelimit_rps);
                }
            },
            "stateless-nonce-secret" => match e.value.clone() {
                Some(s) if s.len() >= 16 => self.nonce_secret.push(s),
                _ => self.note(
                    Some(n),
                    &e.name,
                    NoteKind::Invalid,
                    "ferroturn's nonce-secret needs at least 16 characters (value not shown)"
                        .into(),
                ),
            },
            "allow-loopback-peers" => {
                self.allow_loopback_peers = self.flag(e).unwrap_or(self.allow_loopback_peers)
            }
            _ => return false,
        }
        true
    }

    fn invalid(&mut self, e: &Entry, why: &str) {
        let shown = match (&e.value, options::is_secret(&e.name)) {
            (Some(v), false) => format!("`{v}`: {why}"),
            (Some(_), true) => format!("{why} (value not shown)"),
            (None, _) => why.to_owned(),
        };
        self.note(Some(e.line), &e.name, NoteKind::Invalid, shown);
    }

    fn flag(&mut self, e: &Entry) -> Option<bool> {
        let on = syntax::flag(e.value.as_deref());
        if on.is_none() {
            self.invalid(e, "expected on/off, yes/no, true/false or 1/0");
        }
        on
    }

    /// A number, read like coturn's `atoi` from the first word (text after it is noted).
    fn number<T: FromStr>(&mut self, e: &Entry) -> Option<T> {
        let Some(value) = e.value.as_deref() else {
            self.invalid(e, "needs a value");
            return None;
        };
        let mut words = value.split_whitespace();
        let first = words.next().unwrap_or("");
        match first.parse() {
            Ok(v) => {
                if words.next().is_some() {
                    self.note(
                        Some(e.line),
                        &e.name,
                        NoteKind::Changed,
                        format!("took `{first}`; the text after it is ignored, as coturn does"),
                    );
                }
                Some(v)
            }
            Err(_) => {
                self.invalid(e, "not a number in range");
                None
            }
        }
    }

    /// Seconds for an option whose bare form means coturn's `default`; at least 1.
    fn seconds(&mut self, e: &Entry, default: u64) -> Option<u64> {
        let secs = match e.value {
            None => Some(default),
            Some(_) => self.number(e),
        }?;
        if secs == 0 || secs > u64::from(u32::MAX) {
            self.invalid(e, "ferroturn takes 1 to 4294967295 seconds");
            return None;
        }
        Some(secs)
    }

    fn text(&mut self, e: &Entry) -> Option<String> {
        if e.value.is_none() {
            self.invalid(e, "needs a value");
        }
        e.value.clone()
    }

    fn path(&mut self, e: &Entry) -> Option<String> {
        let path = self.text(e)?;
        if !path.starts_with('/') {
            self.note(
                Some(e.line),
                &e.name,
                NoteKind::Changed,
                format!(
                    "`{path}` is relative: coturn looks for it in its configuration \
                     directories, ferroturn in its working directory; write an absolute path"
                ),
            );
        }
        Some(path)
    }

    /// coturn's `IP` or `IP-IP` (and a CIDR block, which ferroturn also takes), written
    /// as a CIDR block where the range is exactly one.
    fn range(&mut self, e: &Entry) -> Option<String> {
        let value = self.text(e)?;
        match values::range_text(&value) {
            Some(text) => Some(text),
            None => {
                self.invalid(e, "expected IP, IP-IP (same family, low to high) or IP/LEN");
                None
            }
        }
    }

    fn external_ip(&mut self, e: &Entry) {
        let Some(value) = self.text(e) else { return };
        let (public, private) = match value.split_once('/') {
            Some((p, l)) => (p.trim(), Some(l.trim())),
            None => (value.trim(), None),
        };
        let public = public.parse::<IpAddr>().ok();
        let private = private.map(|p| p.parse::<IpAddr>().ok());
        match (public, private) {
            (Some(p), None) => self.external_ip.push((e.line, p, None)),
            (Some(p), Some(Some(l))) if p.is_ipv4() == l.is_ipv4() => {
                self.external_ip.push((e.line, p, Some(l)))
            }
            _ => self.invalid(
                e,
                "expected PUBLIC or PUBLIC/PRIVATE IP addresses of one family",
            ),
        }
    }

    fn relay_threads(&mut self, e: &Entry) {
        let Some(n) = self.number::<i64>(e) else {
            return;
        };
        let threads = if n <= 0 {
            self.note(
                Some(e.line),
                &e.name,
                NoteKind::Changed,
                format!("{n} (coturn's single-threaded mode) became 1 relay thread"),
            );
            1
        } else {
            usize::try_from(n).unwrap_or(usize::MAX)
        };
        self.relay_threads = Some(threads);
    }

    fn redis_userdb(&mut self, e: &Entry) {
        let Some(conninfo) = self.text(e) else { return };
        match values::redis_url(&conninfo) {
            Ok((url, ignored)) => {
                self.redis = Some(url);
                let mut message = String::from(
                    "became `redis`: ferroturn reads users and REST secrets from Redis in \
                     coturn's redis-userdb schema, and also lists itself there as a fleet node",
                );
                if !ignored.is_empty() {
                    message.push_str(&format!("; ignored: {}", ignored.join(", ")));
                }
                self.note(Some(e.line), &e.name, NoteKind::Changed, message);
            }
            Err(why) => self.note(Some(e.line), &e.name, NoteKind::Unsupported, why),
        }
    }
}

/// An IP address (coturn also resolves host names here; ferroturn takes addresses).
fn ip(draft: &mut Draft, e: &Entry) -> Option<IpAddr> {
    let parsed = e.value.as_deref().and_then(|v| v.trim().parse().ok());
    if parsed.is_none() {
        draft.invalid(e, "expected an IP address");
    }
    parsed
}
