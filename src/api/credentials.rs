//! `GET|POST /api/v1/credentials?user=U&ttl=T`: short-lived TURN REST credentials
//! (draft-uberti-behave-turn-rest-00 section 2.2) plus an `iceServers` entry ready for
//! `new RTCPeerConnection(...)`, signed with the first `static-auth-secret` of the
//! configuration in force.
//!
//! CORS: a key may name the origins a browser may call from; only those get
//! `Access-Control-Allow-Origin`. A preflight carries no token, so it is answered for
//! any origin some key allows, and the real request is then checked against its key.

use super::{ApiError, Params, auth};
use crate::config::ApiKey;
use crate::config::Config;
use crate::control::Control;
use crate::fleet::Fleet;
use axum::extract::State;
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_MAX_AGE, CACHE_CONTROL, ORIGIN, VARY,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use std::sync::Arc;

/// Longest `user`, in bytes (a STUN USERNAME holds at most 513 with the expiry).
const MAX_USER: usize = 256;

#[derive(Serialize)]
struct IceServer<'a> {
    urls: &'a [String],
    username: &'a str,
    credential: &'a str,
}

#[derive(Serialize)]
struct Issued<'a> {
    username: &'a str,
    password: &'a str,
    ttl: u64,
    uris: &'a [String],
    #[serde(rename = "iceServers")]
    ice_servers: [IceServer<'a>; 1],
}

/// What the request asks for, checked.
struct Request {
    user: String,
    ttl: Option<u64>,
}

fn parse(params: &Params) -> Result<Request, ApiError> {
    let user = match (params.one("user")?, params.one("username")?) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad(
                "user",
                "give either user or username, not both",
            ));
        }
        (u, n) => u.or(n).unwrap_or(""),
    };
    if user.len() > MAX_USER || user.chars().any(char::is_control) {
        return Err(ApiError::bad(
            "user",
            "user must be at most 256 bytes without control characters",
        ));
    }
    let ttl = match params.one("ttl")? {
        None => None,
        Some(t) => match t.parse::<u64>() {
            Ok(t) if t > 0 => Some(t),
            _ => {
                return Err(ApiError::bad(
                    "ttl",
                    "ttl must be a positive number of seconds",
                ));
            }
        },
    };
    if params.one("service")?.is_some_and(|s| s != "turn") {
        return Err(ApiError::bad("service", "service must be turn"));
    }
    Ok(Request {
        user: user.to_owned(),
        ttl,
    })
}

/// Issues credentials for the key the bearer token names.
pub async fn issue(
    State(control): State<Arc<Control>>,
    State(fleet): State<Option<Arc<Fleet>>>,
    headers: HeaderMap,
    params: Result<Params, ApiError>,
) -> Response {
    let config = control.config();
    let api = &config.api;
    let Some(key) = auth::bearer(&headers)
        .and_then(|t| auth::find(t, api.keys.iter().map(|k| &k.sha256)))
        .and_then(|i| api.keys.get(i))
    else {
        return ApiError::new(StatusCode::UNAUTHORIZED, "missing or unknown API key")
            .into_response();
    };
    let mut response = params
        .and_then(|p| parse(&p))
        .and_then(|request| issue_for(&control, fleet.as_deref(), &config, key, request))
        .into_response();
    // Errors carry the CORS headers too, so the page can read them.
    if let Some(origin) = allowed_origin(&headers, |o| key_allows(key, o)) {
        cors(response.headers_mut(), origin);
    }
    response
}

fn issue_for(
    control: &Control,
    fleet: Option<&Fleet>,
    config: &Config,
    key: &ApiKey,
    request: Request,
) -> Result<Response, ApiError> {
    let api = &config.api;
    let secret = api.secret.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no static-auth-secret is configured",
        )
    })?;
    let ttl = granted_ttl(
        request.ttl.unwrap_or(api.default_ttl),
        key.max_ttl,
        api.max_ttl,
    );
    let expiry = crate::control::unix_now().saturating_add(ttl);
    let (username, password) =
        crate::credentials::rest_credentials(secret.as_str(), &request.user, expiry, api.separator);
    let uris = match fleet_uris(fleet, config) {
        Some(u) => u,
        None => control.turn_uris(config),
    };
    let body = Issued {
        username: &username,
        password: &password,
        ttl,
        uris: &uris,
        ice_servers: [IceServer {
            urls: &uris,
            username: &username,
            credential: &password,
        }],
    };
    let mut r = axum::Json(body).into_response();
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// In a fleet without `turn-uris`: the URIs of the live nodes that are not draining,
/// least loaded first, from the registry as last read (no Redis round trip here).
/// `None` without a fleet, or while no node is known.
fn fleet_uris(fleet: Option<&Fleet>, config: &Config) -> Option<Vec<String>> {
    if !config.api.turn_uris.is_empty() {
        return None;
    }
    let mut out: Vec<String> = Vec::new();
    for node in fleet?.live_nodes().iter().filter(|n| !n.draining) {
        for uri in &node.uris {
            if !out.contains(uri) {
                out.push(uri.clone());
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The TTL asked for (or the default), capped by the key's and the server's maximum
/// (draft-uberti-behave-turn-rest: the server may grant less than asked).
fn granted_ttl(asked: u64, key_max: Option<u64>, server_max: Option<u64>) -> u64 {
    [key_max, server_max]
        .into_iter()
        .flatten()
        .fold(asked, u64::min)
}

/// `OPTIONS /api/v1/credentials`: the CORS preflight.
pub async fn preflight(State(control): State<Arc<Control>>, headers: HeaderMap) -> Response {
    let config = control.config();
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Some(origin) = allowed_origin(&headers, |o| {
        config.api.keys.iter().any(|k| key_allows(k, o))
    }) {
        let h = response.headers_mut();
        cors(h, origin);
        h.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST"),
        );
        h.insert(
            ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization"),
        );
        h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    }
    response
}

fn key_allows(key: &ApiKey, origin: &str) -> bool {
    key.origins.iter().any(|o| o == "*" || o == origin)
}

/// The request's `Origin`, when `allowed` says yes.
fn allowed_origin(headers: &HeaderMap, allowed: impl Fn(&str) -> bool) -> Option<HeaderValue> {
    let origin = headers.get(ORIGIN)?;
    allowed(origin.to_str().ok()?).then(|| origin.clone())
}

fn cors(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(VARY, HeaderValue::from_static("Origin"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_is_capped_by_the_key_and_the_server() {
        assert_eq!(granted_ttl(86_400, None, None), 86_400);
        assert_eq!(granted_ttl(60, None, Some(604_800)), 60);
        assert_eq!(granted_ttl(9_999, Some(600), None), 600);
        assert_eq!(
            granted_ttl(10_000_000, Some(20_000_000), Some(604_800)),
            604_800
        );
    }
}
