//! The HTTP API, on its own listener (`api-listen`, off by default) in the tokio runtime
//! that started the server:
//!
//! - `GET|POST /api/v1/credentials`: TURN REST credentials for an API key
//!   ([`credentials`]);
//! - `GET /metrics`: Prometheus text ([`metrics`]);
//! - `GET /healthz`, `GET /readyz`: liveness, and readiness (503 while draining);
//! - `/api/v1/admin/...` with an admin key: sessions, drain, reload ([`admin`]);
//! - `GET /`: the status page, and `GET /api/v1/status` its data, with per-user details
//!   for an admin key ([`status`], sampled by [`history`]).
//!
//! Keys and everything else but the listener follow configuration reloads: handlers
//! read [`Control::config`] on every request. Connections are bounded in number, in
//! header size and in the time to send the headers (and to finish a TLS handshake); no
//! handler reads a request body.

mod admin;
mod auth;

mod credentials;
mod history;
mod metrics;
mod revocations;
mod status;

use crate::control::Control;
use crate::fleet::Fleet;
use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef, FromRequestParts, Query};
use axum::http::header::WWW_AUTHENTICATE;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

/// HTTP connections served at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 256;
/// Time to send a request's headers (also bounds idle keep-alive connections).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to finish a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connection read buffer, which bounds the request line and headers.
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Bodies are not read; an extractor that would read one stops here.
const MAX_BODY: usize = 16 * 1024;
/// Longest query string looked at.
const MAX_QUERY: usize = 2048;
/// How long in-flight requests get to finish when the server stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The running API listener. Dropping it stops accepting and closes idle connections.
pub struct ApiServer {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    sampler: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// Binds `api-listen` and serves it, or returns `None` when it is not set. With
    /// `api-tls` it serves the TURN certificate store (its reloads apply).
    pub async fn start(
        control: Arc<Control>,
        fleet: Option<Arc<Fleet>>,
    ) -> io::Result<Option<ApiServer>> {
        let config = control.config();
        let Some(listen) = config.api.listen else {
            return Ok(None);
        };
        let tls = match (config.api.tls, control.certs()) {
            (false, _) => None,
            (true, Some(certs)) => {
                let tls = certs
                    .server_config(&[b"http/1.1"])
                    .map_err(io::Error::other)?;
                Some(TlsAcceptor::from(tls))
            }
            (true, None) => return Err(io::Error::other("api-tls needs TLS (cert and pkey)")),
        };
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on api {listen}: {e}")))?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, tls = tls.is_some(), "listening (http api)");
        let (shutdown, stopped) = watch::channel(false);
        let history = Arc::new(Mutex::new(history::History::default()));
        let sampler = tokio::spawn(history::run(control.clone(), history.clone()));
        let state = AppState {
            control,
            fleet,
            history,
        };
        let task = tokio::spawn(accept(listener, router(state), tls, stopped));
        Ok(Some(ApiServer {
            addr,
            shutdown,
            task,
            sampler,
        }))
    }

    /// The bound address (an ephemeral port resolved).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.task.abort();
        self.sampler.abort();
    }
}

/// What the handlers see: the server, the fleet when there is one, and the status
/// page's history.
#[derive(Clone)]
struct AppState {
    control: Arc<Control>,
    fleet: Option<Arc<Fleet>>,
    history: Arc<Mutex<history::History>>,
}

impl FromRef<AppState> for Arc<Mutex<history::History>> {
    fn from_ref(s: &AppState) -> Self {
        s.history.clone()
    }
}

impl FromRef<AppState> for Arc<Control> {
    fn from_ref(s: &AppState) -> Self {
        s.control.clone()
    }
}

impl FromRef<AppState> for Option<Arc<Fleet>> {
    fn from_ref(s: &AppState) -> Self {
        s.fleet.clone()
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(status::page))
        .route("/api/v1/status", get(status::status))
        .route(
            "/api/v1/credentials",
            get(credentials::issue)
                .post(credentials::issue)
                .options(credentials::preflight),
        )
        .route("/metrics", get(metrics::scrape))
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .route(
            "/api/v1/admin/sessions",
            get(admin::sessions).delete(admin::delete_sessions),
        )
        .route(
            "/api/v1/admin/drain",
            post(admin::drain_start).delete(admin::drain_stop),
        )
        .route("/api/v1/admin/reload", post(admin::reload))
        .route("/api/v1/admin/nodes", get(admin::nodes))
        .route(
            "/api/v1/admin/revocations",
            get(revocations::list)
                .post(revocations::revoke)
                .delete(revocations::lift),
        )
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

async fn accept(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    mut stopped: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = tokio::select! {
            _ = stopped.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, most likely: let some close.
                    tracing::warn!("http api: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue; // over the cap: dropped, so closed at once
        };
        let service = TowerToHyperService::new(router.clone());
        let tls = tls.clone();
        let stopped = stopped.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            match tls {
                None => serve(stream, service, stopped).await,
                Some(acceptor) => {
                    if let Ok(Ok(stream)) =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        serve(stream, service, stopped).await;
                    }
                }
            }
        });
    }
}

/// Serves HTTP/1.1 on one connection until it closes or the server stops.
async fn serve<S>(
    stream: S,
    service: TowerToHyperService<Router>,
    mut stopped: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stopped.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
        }
    }
}

/// An error answer: `{"error": message}`, plus `"parameter": name` for a bad parameter.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    parameter: Option<&'static str>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            parameter: None,
        }
    }

    /// 400 naming the parameter.
    pub(crate) fn bad(parameter: &'static str, message: impl Into<String>) -> Self {
        Self {
            parameter: Some(parameter),
            ..Self::new(StatusCode::BAD_REQUEST, message)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.parameter {
            Some(p) => json!({ "error": self.message, "parameter": p }),
            None => json!({ "error": self.message }),
        };
        let mut r = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

/// The query string's parameters. Unknown names are ignored; a repeated one is an error.
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    /// The value of `name`, if given once; 400 naming it if given more than once.
    fn one(&self, name: &'static str) -> Result<Option<&str>, ApiError> {
        let mut values = self.0.iter().filter(|(k, _)| k == name);
        match (values.next(), values.next()) {
            (Some(_), Some(_)) => Err(ApiError::bad(
                name,
                format!("{name} is given more than once"),
            )),
            (v, _) => Ok(v.map(|(_, v)| v.as_str())),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let bad = || ApiError::bad("query", "the query string is too long or not url-encoded");
        if parts.uri.query().is_some_and(|q| q.len() > MAX_QUERY) {
            return Err(bad());
        }
        Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map(|Query(pairs)| Params(pairs))
            .map_err(|_| bad())
    }
}
