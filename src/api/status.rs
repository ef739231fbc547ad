//! The status page: `GET /` serves one self-contained HTML page (inline style, script
//! and SVG; its Content-Security-Policy lets it load nothing else and talk only to this
//! listener), which polls `GET /api/v1/status` every [`history::EVERY`].
//!
//! The JSON holds what the shards publish (allocations by transport, relayed traffic,
//! errors by code, per-shard load, drain state) and the [`History`] ring. Per-user
//! details (who has allocations, from and to which addresses) come only with an admin
//! key: without an `Authorization` header the answer has no user field at all, and a
//! header with a key that is not an admin key is refused (401) rather than ignored.

use super::history::{self, CAPACITY, History, Sample};
use super::{ApiError, admin};
use crate::control::{Control, Metrics};
use crate::fleet::Fleet;
use axum::Json;
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use ferroturn_core::server::AuthFailure;
use ferroturn_core::server::stats::ERROR_CODES;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, Mutex};

/// The page, as served.
pub(super) const PAGE: &str = include_str!("status.html");
/// Users listed with the admin key (those with the most allocations); the rest are
/// only counted.
const MAX_USERS: usize = 100;
/// Client and relayed addresses listed per user.
const MAX_ADDRESSES: usize = 8;

/// The page's Content-Security-Policy: nothing but its own inline style and script (by
/// hash) and requests to this origin.
static CSP: LazyLock<String> = LazyLock::new(|| {
    format!(
        "default-src 'none'; script-src '{}'; style-src '{}'; img-src data:; \
         connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        inline_hash(PAGE, "script"),
        inline_hash(PAGE, "style"),
    )
});

/// `sha256-...` of the text of the first `<tag>` element of `page`.
fn inline_hash(page: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let body = page
        .split_once(open.as_str())
        .and_then(|(_, rest)| rest.split_once(close.as_str()))
        .map_or("", |(body, _)| body);
    let digest = Sha256::digest(body.as_bytes());
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// `GET /`: the page.
pub async fn page() -> Response {
    let headers = [
        (
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        ),
        (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            HeaderName::from_static("content-security-policy"),
            HeaderValue::from_str(&CSP).unwrap_or(HeaderValue::from_static("default-src 'none'")),
        ),
        (
            HeaderName::from_static("x-content-type-options"),
            HeaderValue::from_static("nosniff"),
        ),
        (
            HeaderName::from_static("referrer-policy"),
            HeaderValue::from_static("no-referrer"),
        ),
    ];
    (headers, PAGE).into_response()
}

#[derive(Serialize)]
struct Status {
    /// Unix seconds when this answer was made (the samples' clock).
    now: u64,
    node: Node,
    allocations: Allocations,
    relayed: Relayed,
    /// Error responses sent, by code (codes sent at least once).
    errors: Vec<ErrorRow>,
    /// Failed authentications (the 401s and 438s), by reason.
    auth_failures: Vec<AuthRow>,
    shards: Vec<ShardRow>,
    history: HistoryView,
    /// With an admin key only.
    #[serde(skip_serializing_if = "Option::is_none")]
    users: Option<Vec<UserRow>>,
    /// Users with allocations, listed or not (with an admin key only).
    #[serde(skip_serializing_if = "Option::is_none")]
    users_total: Option<usize>,
}

#[derive(Serialize)]
struct Node {
    name: String,
    version: &'static str,
    uptime_secs: u64,
    draining: bool,
    kernel_offload: bool,
    /// Whether the fleet's Redis answers; absent without a fleet.
    #[serde(skip_serializing_if = "Option::is_none")]
    fleet_redis_up: Option<bool>,
    /// TCP and TLS connections and DTLS sessions open.
    connections: u64,
}

#[derive(Serialize)]
struct Allocations {
    total: u64,
    udp: u64,
    /// TCP and TLS.
    tcp: u64,
    dtls: u64,
    permissions: u64,
    channels: u64,
    created_total: u64,
}

/// Totals since the start, and the rates of the last sample.
#[derive(Serialize)]
struct Relayed {
    bytes_up: u64,
    bytes_down: u64,
    packets_up: u64,
    packets_down: u64,
    bps_up: u64,
    bps_down: u64,
    pps: u64,
}

#[derive(Serialize)]
struct ErrorRow {
    code: u16,
    reason: &'static str,
    count: u64,
}

#[derive(Serialize)]
struct AuthRow {
    reason: &'static str,
    label: &'static str,
    count: u64,
}

#[derive(Serialize)]
struct ShardRow {
    index: usize,
    allocations: u64,
    /// Datagrams relayed in user space since the start, and per second lately.
    packets: u64,
    pps: u64,
    bytes: u64,
}

#[derive(Serialize)]
struct HistoryView {
    interval_secs: u64,
    capacity: usize,
    samples: Vec<Sample>,
}

#[derive(Serialize)]
struct UserRow {
    user: String,
    allocations: usize,
    bytes_up: u64,
    bytes_down: u64,
    /// The first [`MAX_ADDRESSES`] client and relayed addresses.
    clients: Vec<SocketAddr>,
    relayed: Vec<SocketAddr>,
}

/// `GET /api/v1/status`: the page's data; `users` with an admin key.
pub async fn status(
    State(control): State<Arc<Control>>,
    State(fleet): State<Option<Arc<Fleet>>>,
    State(history): State<Arc<Mutex<History>>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let with_users = headers.contains_key(AUTHORIZATION);
    if with_users {
        admin::admin(&control, &headers)?;
    }
    let m = control.metrics();
    let name = match &fleet {
        Some(f) => f.node().to_owned(),
        None => crate::control::host_name(),
    };
    let mut status = describe(&control, &m, name, &history);
    if with_users {
        let sessions = admin::blocking(&control, Control::sessions).await?;
        let (users, total) = users(sessions);
        status.users = Some(users);
        status.users_total = Some(total);
    }
    let mut r = Json(status).into_response();
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// Everything but the users.
fn describe(control: &Control, m: &Metrics, name: String, history: &Mutex<History>) -> Status {
    let (s, g) = (&m.stats, &m.gauges);
    let traffic = m.relayed_traffic();
    let (samples, latest, shard_pps) = match history.lock() {
        Ok(h) => {
            let pps: Vec<u64> = (0..m.shards).map(|i| h.shard_pps(i)).collect();
            (h.samples().copied().collect(), h.latest(), pps)
        }
        Err(_) => (Vec::new(), None, vec![0; m.shards]),
    };
    let latest = latest.unwrap_or_default();
    Status {
        now: crate::control::unix_now(),
        node: Node {
            name,
            version: env!("CARGO_PKG_VERSION"),
            uptime_secs: control.uptime().as_secs(),
            draining: m.draining,
            kernel_offload: m.offload.is_some(),
            fleet_redis_up: m.fleet_redis_up,
            connections: m.connections_open,
        },
        allocations: Allocations {
            total: g.allocations,
            udp: g.allocations_by_transport[0],
            tcp: g.allocations_by_transport[1],
            dtls: g.allocations_by_transport[2],
            permissions: g.permissions,
            channels: g.channels,
            created_total: s.allocations_created,
        },
        relayed: Relayed {
            bytes_up: traffic[0].bytes,
            bytes_down: traffic[1].bytes,
            packets_up: traffic[0].packets,
            packets_down: traffic[1].packets,
            bps_up: latest.bps_up,
            bps_down: latest.bps_down,
            pps: latest.pps,
        },
        errors: ERROR_CODES
            .iter()
            .zip(s.errors)
            .filter(|(_, n)| *n > 0)
            .map(|(&code, count)| ErrorRow {
                code,
                reason: reason(code),
                count,
            })
            .collect(),
        auth_failures: AuthFailure::ALL
            .into_iter()
            .map(|r| (r, s.auth_failures_with(r)))
            .filter(|(_, n)| *n > 0)
            .map(|(r, count)| AuthRow {
                reason: r.describe(),
                label: r.label(),
                count,
            })
            .collect(),
        shards: control
            .shard_loads()
            .into_iter()
            .enumerate()
            .map(|(index, l)| ShardRow {
                index,
                allocations: l.allocations,
                packets: l.packets,
                pps: shard_pps.get(index).copied().unwrap_or(0),
                bytes: l.bytes,
            })
            .collect(),
        history: HistoryView {
            interval_secs: history::EVERY.as_secs(),
            capacity: CAPACITY,
            samples,
        },
        users: None,
        users_total: None,
    }
}

/// The users with allocations, most allocations first (then most bytes, then by
/// name), at most [`MAX_USERS`]; and how many there are.
fn users(sessions: Vec<ferroturn_core::server::Session>) -> (Vec<UserRow>, usize) {
    let mut by_user: HashMap<String, UserRow> = HashMap::new();
    for s in sessions {
        let row = by_user.entry(s.user.clone()).or_insert_with(|| UserRow {
            user: s.user,
            allocations: 0,
            bytes_up: 0,
            bytes_down: 0,
            clients: Vec::new(),
            relayed: Vec::new(),
        });
        row.allocations += 1;
        row.bytes_up += s.bytes_up + s.kernel[0].bytes;
        row.bytes_down += s.bytes_down + s.kernel[1].bytes;
        push_bounded(&mut row.clients, s.client);
        for r in std::iter::once(s.relayed).chain(s.additional_relayed) {
            push_bounded(&mut row.relayed, r);
        }
    }
    let total = by_user.len();
    let mut rows: Vec<UserRow> = by_user.into_values().collect();
    rows.sort_by(|a, b| {
        (b.allocations, b.bytes_up + b.bytes_down)
            .cmp(&(a.allocations, a.bytes_up + a.bytes_down))
            .then_with(|| a.user.cmp(&b.user))
    });
    rows.truncate(MAX_USERS);
    (rows, total)
}

fn push_bounded(list: &mut Vec<SocketAddr>, addr: SocketAddr) {
    if list.len() < MAX_ADDRESSES && !list.contains(&addr) {
        list.push(addr);
    }
}

/// The reason phrase of a STUN error code the core sends (RFC 8489 section 14.8, RFC
/// 8656 section 19, RFC 6062 section 6.3, RFC 8016 section 3.4).
fn reason(code: u16) -> &'static str {
    match code {
        300 => "Try Alternate",
        400 => "Bad Request",
        401 => "Unauthenticated",
        403 => "Forbidden",
        405 => "Mobility Forbidden",
        420 => "Unknown Attribute",
        437 => "Allocation Mismatch",
        438 => "Stale Nonce",
        440 => "Address Family not Supported",
        441 => "Wrong Credentials",
        442 => "Unsupported Transport Protocol",
        443 => "Peer Address Family Mismatch",
        446 => "Connection Already Exists",
        447 => "Connection Timeout or Failure",
        486 => "Allocation Quota Reached",
        508 => "Insufficient Capacity",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_code_has_a_reason() {
        for code in ERROR_CODES {
            assert!(!reason(code).is_empty(), "{code}");
        }
    }

    #[test]
    fn the_policy_hashes_the_inline_script_and_style() {
        assert_eq!(PAGE.matches("<script>").count(), 1);
        assert_eq!(PAGE.matches("<style>").count(), 1);
        let script = inline_hash(PAGE, "script");
        assert_ne!(script, inline_hash("", "script"), "the script is not empty");
        assert!(CSP.contains(&format!("script-src '{script}'")));
        assert!(CSP.starts_with("default-src 'none';"));
    }
}
