//! Health for load balancers, and the admin endpoints (admin key): sessions, drain,
//! reload. [`Control`]'s commands wait for the shards (up to 2 s), so they run on the
//! blocking pool.

use super::{ApiError, Params, auth};
use crate::control::Control;
use crate::fleet::{Fleet, NodeInfo};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ferroturn_core::server::{Session, SessionFilter, Transport};
use serde::Serialize;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;

/// `GET /healthz`: the process serves HTTP.
pub async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

/// `GET /readyz`: 200 while allocations are accepted, 503 while draining.
pub async fn readyz(State(control): State<Arc<Control>>) -> Response {
    if control.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    }
}

/// Whether the other nodes were told of `what` by `call`: `None` without a fleet.
pub(super) async fn told(
    fleet: Option<Arc<Fleet>>,
    what: &str,
    call: impl AsyncFnOnce(&Fleet) -> Result<(), crate::fleet::FleetError>,
) -> Option<bool> {
    let fleet = fleet?;
    Some(match call(&fleet).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("fleet: the other nodes were not told of a {what}: {e}");
            false
        }
    })
}

/// Runs `f` with the control on the blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
    control: &Arc<Control>,
    f: impl FnOnce(&Control) -> T + Send + 'static,
) -> Result<T, ApiError> {
    let control = control.clone();
    tokio::task::spawn_blocking(move || f(&control))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the command failed"))
}

/// Refuses a request without a valid admin key.
pub(super) fn admin(control: &Control, headers: &HeaderMap) -> Result<(), ApiError> {
    let config = control.config();
    auth::bearer(headers)
        .and_then(|t| auth::find(t, config.api.admin_keys.iter()))
        .map(|_| ())
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "missing or unknown admin key"))
}

#[derive(Serialize)]
struct SessionView {
    user: String,
    username: String,
    client: SocketAddr,
    transport: &'static str,
    /// The relayed address (a dual allocation's IPv4 one).
    relayed: SocketAddr,
    /// A dual allocation's IPv6 relayed address, else null.
    additional_relayed: Option<SocketAddr>,
    age_secs: u64,
    expires_in_secs: u64,
    /// Payload bytes relayed, user space and kernel together.
    bytes_up: u64,
    bytes_down: u64,
    permissions: usize,
    channels: usize,
    /// "udp", or "tcp" for a TCP allocation (RFC 6062), and its TCP peer connections.
    relay_transport: &'static str,
    tcp_connections: usize,
    /// Channels the kernel relays now, and what it relayed for this allocation (also
    /// counted in `bytes_up` and `bytes_down`).
    kernel_channels: usize,
    kernel_packets_up: u64,
    kernel_packets_down: u64,
    kernel_bytes_up: u64,
    kernel_bytes_down: u64,
}

impl From<Session> for SessionView {
    fn from(s: Session) -> Self {
        Self {
            transport: match s.transport {
                Transport::Udp => "udp",
                // TLS connections are TCP to the core.
                Transport::Tcp => "tcp",
                Transport::Dtls => "dtls",
            },
            user: s.user,
            username: s.username,
            client: s.client,
            relayed: s.relayed,
            additional_relayed: s.additional_relayed,
            age_secs: s.age_secs,
            expires_in_secs: s.expires_in_secs,
            bytes_up: s.bytes_up + s.kernel[0].bytes,
            bytes_down: s.bytes_down + s.kernel[1].bytes,
            permissions: s.permissions,
            channels: s.channels,
            relay_transport: if s.tcp { "tcp" } else { "udp" },
            tcp_connections: s.tcp_connections,
            kernel_channels: s.offloaded_channels,
            kernel_packets_up: s.kernel[0].packets,
            kernel_packets_down: s.kernel[1].packets,
            kernel_bytes_up: s.kernel[0].bytes,
            kernel_bytes_down: s.kernel[1].bytes,
        }
    }
}

/// `GET /api/v1/admin/sessions`: every allocation.
pub async fn sessions(
    State(control): State<Arc<Control>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin(&control, &headers)?;
    let list = blocking(&control, Control::sessions).await?;
    let list: Vec<SessionView> = list.into_iter().map(SessionView::from).collect();
    Ok(Json(json!({ "sessions": list })).into_response())
}

/// `DELETE /api/v1/admin/sessions[?user=U|?relayed=IP:PORT]`: without a filter, every
/// allocation; `relayed` names either relayed address of a dual allocation.
///
/// In a fleet the deletion is also published to every other node (through Redis), which
/// carries it out within a second or two; `deleted` counts this node's, and `fleet` says
/// whether the others were told (false while Redis does not answer; absent without a
/// fleet).
pub async fn delete_sessions(
    State(control): State<Arc<Control>>,
    State(fleet): State<Option<Arc<Fleet>>>,
    headers: HeaderMap,
    params: Result<Params, ApiError>,
) -> Result<Response, ApiError> {
    admin(&control, &headers)?;
    let filter = filter(&params?)?;
    let local = filter.clone();
    let n = blocking(&control, move |c| c.delete_sessions(local)).await?;
    let fleet = told(fleet, "session deletion", async |f| {
        f.delete_sessions(filter).await
    })
    .await;
    Ok(Json(json!({ "deleted": n, "fleet": fleet })).into_response())
}

/// `GET /api/v1/admin/nodes`: the fleet's live nodes, least loaded first (without a
/// fleet, this node alone). 503 while Redis does not answer.
pub async fn nodes(
    State(control): State<Arc<Control>>,
    State(fleet): State<Option<Arc<Fleet>>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin(&control, &headers)?;
    let Some(fleet) = fleet else {
        let me = NodeInfo::of(&control, "local", &control.metrics(), 0);
        return Ok(Json(json!({ "nodes": [me] })).into_response());
    };
    match fleet.nodes().await {
        Ok(nodes) => Ok(Json(json!({ "nodes": nodes })).into_response()),
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the fleet's Redis does not answer: {e}"),
        )),
    }
}

fn filter(params: &Params) -> Result<SessionFilter, ApiError> {
    match (params.one("user")?, params.one("relayed")?) {
        (Some(_), Some(_)) => Err(ApiError::bad("user", "give user or relayed, not both")),
        (Some(""), None) => Err(ApiError::bad("user", "user must not be empty")),
        (Some(u), None) => Ok(SessionFilter::User(u.to_owned())),
        (None, Some(r)) => r
            .parse()
            .map(SessionFilter::Relayed)
            .map_err(|_| ApiError::bad("relayed", "relayed must be IP:PORT")),
        (None, None) => Ok(SessionFilter::All),
    }
}

/// `POST /api/v1/admin/drain` (start) and `DELETE` (stop).
pub async fn drain_start(
    State(control): State<Arc<Control>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    set_draining(control, headers, true).await
}

pub async fn drain_stop(
    State(control): State<Arc<Control>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    set_draining(control, headers, false).await
}

async fn set_draining(
    control: Arc<Control>,
    headers: HeaderMap,
    on: bool,
) -> Result<Response, ApiError> {
    admin(&control, &headers)?;
    blocking(&control, move |c| c.set_draining(on)).await?;
    Ok(Json(json!({ "draining": on })).into_response())
}

/// `POST /api/v1/admin/reload`: re-reads the configuration file. 200 with the options
/// that need a restart, or 500 with the reason the file was refused (the running
/// configuration stays).
pub async fn reload(
    State(control): State<Arc<Control>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin(&control, &headers)?;
    let report = blocking(&control, Control::reload)
        .await?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(json!({ "reloaded": true, "needs_restart": report.needs_restart })).into_response())
}
