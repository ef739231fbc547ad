//! The usage webhook (`usage-webhook`): usage records from the shards' bounded queue
//! POSTed in JSON batches, `{"records": [...]}`, on a thread of its own with its own
//! small tokio runtime, so that neither the shards nor the API's runtime ever wait for
//! the receiver.
//!
//! - **Batches**: up to `usage-webhook-batch` records, sent when full or when the first
//!   record has waited `usage-webhook-interval`.
//! - **Retries**: a failed request (no connection, a timeout, 408, 429, 5xx) is tried
//!   again after a backoff that doubles from 0.5 s to 30 s (with jitter), for as long as
//!   it takes; records that end meanwhile wait in the queue, and when it is full they
//!   are dropped and counted (`queue_full`). A receiver that refuses a batch (another
//!   4xx, a 3xx) gets it once: it is dropped and counted (`rejected`), never retried.
//! - **Delivery is at least once**: a batch whose answer was lost is sent again; each
//!   record's `id` lets the receiver drop the repeat.
//! - **Stopping**: what is queued is sent for at most [`FLUSH_TIME`], the rest counted
//!   (`shutdown`). A request in flight at the stop waits for its answer within that
//!   time rather than being cut short and sent again.
//!
//! HTTPS goes through rustls (ring, as the TLS listeners) with Mozilla's roots or the
//! operator's `usage-webhook-ca-file`; hyper-util's client keeps the connection alive
//! between batches.

use crate::config::WebhookConfig;
use crate::control::{UsageCounters, UsageDrop, UsageRecord};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, USER_AGENT};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::RngExt;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// How long the webhook may take to send what is queued once the server stops.
pub const FLUSH_TIME: Duration = Duration::from_secs(5);
/// One request, from connecting to the end of the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The part of an answer's body that is read (and dropped), so the connection is kept.
const MAX_ANSWER: usize = 64 * 1024;

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The running webhook: its thread, and the flag that stops it.
pub struct UsageWebhook {
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl UsageWebhook {
    /// Starts the webhook's thread; returns it and the queue the shards write to. An
    /// unreadable `usage-webhook-ca-file` or secret is an error here, before anything
    /// runs.
    pub fn start(
        cfg: &WebhookConfig,
        counters: Arc<UsageCounters>,
    ) -> io::Result<(Self, mpsc::Sender<UsageRecord>)> {
        let delivery = Delivery::new(cfg, counters)?;
        let (tx, rx) = mpsc::channel(cfg.queue);
        let (stop, stopped) = watch::channel(false);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("ferroturn-usage-webhook".into())
            .spawn(move || runtime.block_on(delivery.run(rx, stopped)))?;
        tracing::info!(
            host = cfg.url.host().unwrap_or(""),
            batch = cfg.batch,
            queue = cfg.queue,
            "usage webhook on"
        );
        Ok((
            Self {
                stop,
                thread: Some(thread),
            },
            tx,
        ))
    }

    /// Sends what is queued (for at most [`FLUSH_TIME`]) and stops. Call it after the
    /// shards stopped, so that their last records are in the queue.
    pub fn stop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for UsageWebhook {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How a request went.
enum Outcome {
    Delivered,
    /// Refused for good (a 4xx but 408 and 429, a 3xx): not tried again.
    Rejected(hyper::StatusCode),
    /// Worth trying again.
    Failed(String),
}

/// How [`Delivery::deliver`] ended.
enum Delivered {
    /// The batch was delivered or refused.
    Settled,
    /// Told to stop: the batch was settled by the request in flight then (`sent`) or
    /// is still to be sent, and the flush ends at `deadline`.
    Stopping { sent: bool, deadline: Instant },
}

/// The webhook's side: the client, where to, and how records are batched.
struct Delivery {
    client: HttpsClient,
    url: hyper::Uri,
    auth: Option<HeaderValue>,
    batch: usize,
    interval: Duration,
    counters: Arc<UsageCounters>,
}

/// The body of one request.
#[derive(serde::Serialize)]
struct Batch<'a> {
    records: &'a [UsageRecord],
}

impl Delivery {
    fn new(cfg: &WebhookConfig, counters: Arc<UsageCounters>) -> io::Result<Self> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(cfg)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let auth = match &cfg.secret {
            Some(s) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {}", s.as_str()))
                    .map_err(|_| io::Error::other("usage-webhook-secret: not a header value"))?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            url: cfg.url.clone(),
            auth,
            batch: cfg.batch,
            interval: cfg.interval,
            counters,
        })
    }

    /// Batches and delivers until told to stop, then flushes.
    async fn run(self, mut rx: mpsc::Receiver<UsageRecord>, mut stop: watch::Receiver<bool>) {
        let mut batch = Vec::with_capacity(self.batch);
        loop {
            let first = tokio::select! {
                r = rx.recv() => r,
                _ = stop.wait_for(|s| *s) => None,
            };
            let Some(first) = first else { break };
            batch.push(first);
            if self.fill(&mut rx, &mut batch, &mut stop).await {
                break;
            }
            match self.deliver(&batch, &mut stop).await {
                Delivered::Settled => batch.clear(),
                Delivered::Stopping { sent, deadline } => {
                    if sent {
                        batch.clear();
                    }
                    return self.flush(rx, batch, deadline).await;
                }
            }
        }
        self.flush(rx, batch, Instant::now() + FLUSH_TIME).await;
    }

    /// Adds records to `batch` until it is full or its first record has waited
    /// `interval`; true if the webhook is stopping.
    async fn fill(
        &self,
        rx: &mut mpsc::Receiver<UsageRecord>,
        batch: &mut Vec<UsageRecord>,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let until = Instant::now() + self.interval;
        while batch.len() < self.batch {
            if let Ok(r) = rx.try_recv() {
                batch.push(r);
                continue;
            }
            if Instant::now() >= until {
                break;
            }
            tokio::select! {
                r = rx.recv() => match r {
                    Some(r) => batch.push(r),
                    None => return true,
                },
                _ = tokio::time::sleep_until(until) => break,
                _ = stop.wait_for(|s| *s) => return true,
            }
        }
        false
    }

    /// Sends `batch` until it is delivered or refused, trying again after each failure,
    /// or until told to stop.
    async fn deliver(&self, batch: &[UsageRecord], stop: &mut watch::Receiver<bool>) -> Delivered {
        let body = body_of(batch);
        let mut backoff = FIRST_BACKOFF;
        let mut failures = 0u32;
        loop {
            let post = self.post(body.clone(), REQUEST_TIMEOUT);
            tokio::pin!(post);
            let outcome = tokio::select! {
                o = &mut post => o,
                _ = stop.wait_for(|s| *s) => {
                    // A request in flight gets its answer within the flush time: cut
                    // short, its batch would be sent again, and the receiver would most
                    // likely get it twice. Failed or late, the flush sends it again.
                    let deadline = Instant::now() + FLUSH_TIME;
                    let sent = match tokio::time::timeout_at(deadline, post).await {
                        Ok(Outcome::Failed(_)) | Err(_) => false,
                        Ok(done) => {
                            self.settle(done, batch.len());
                            true
                        }
                    };
                    return Delivered::Stopping { sent, deadline };
                }
            };
            match outcome {
                Outcome::Failed(why) => {
                    failures += 1;
                    self.counters.retried();
                    if failures == 1 {
                        tracing::warn!("usage webhook: {why}; trying again");
                    } else {
                        tracing::debug!(failures, "usage webhook: {why}; trying again");
                    }
                }
                done => {
                    self.settle(done, batch.len());
                    if failures > 0 {
                        tracing::info!(failures, "usage webhook: answering again");
                    }
                    return Delivered::Settled;
                }
            }
            let pause = backoff.mul_f64(rand::rng().random_range(0.75..1.25));
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.wait_for(|s| *s) => {
                    return Delivered::Stopping {
                        sent: false,
                        deadline: Instant::now() + FLUSH_TIME,
                    };
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// The server stopped: sends `pending` and whatever is queued, in batches, until
    /// `deadline`; what is left is counted as dropped.
    async fn flush(
        &self,
        mut rx: mpsc::Receiver<UsageRecord>,
        mut pending: Vec<UsageRecord>,
        deadline: Instant,
    ) {
        rx.close();
        while let Ok(r) = rx.try_recv() {
            pending.push(r);
        }
        let mut left: &[UsageRecord] = &pending;
        while !left.is_empty() {
            let (batch, rest) = left.split_at(left.len().min(self.batch));
            let body = body_of(batch);
            let mut backoff = FIRST_BACKOFF / 5;
            loop {
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    self.counters.dropped(UsageDrop::Shutdown, left.len());
                    tracing::warn!(
                        records = left.len(),
                        "usage webhook: records dropped at shutdown"
                    );
                    return;
                }
                match self
                    .post(body.clone(), remaining.min(REQUEST_TIMEOUT))
                    .await
                {
                    Outcome::Failed(_) => {
                        self.counters.retried();
                        tokio::time::sleep(backoff.min(remaining)).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                    done => {
                        self.settle(done, batch.len());
                        break;
                    }
                }
            }
            left = rest;
        }
    }

    /// Counts a batch of `n` records that was delivered or refused.
    fn settle(&self, outcome: Outcome, n: usize) {
        match outcome {
            Outcome::Delivered => self.counters.delivered(n),
            Outcome::Rejected(status) => {
                self.counters.dropped(UsageDrop::Rejected, n);
                tracing::warn!(%status, records = n, "usage webhook: the receiver refused a batch; dropped");
            }
            Outcome::Failed(_) => {}
        }
    }

    /// One POST of `body`, within `limit`.
    async fn post(&self, body: Bytes, limit: Duration) -> Outcome {
        let mut request = hyper::Request::post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("ferroturn/", env!("CARGO_PKG_VERSION")));
        if let Some(auth) = &self.auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let request = match request.body(Full::new(body)) {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let exchange = async {
            let answer = self.client.request(request).await.map_err(|e| {
                // The connector's error says why (refused, TLS, timeout): show it too.
                let source = std::error::Error::source(&e).map(|s| format!(": {s}"));
                format!("{e}{}", source.unwrap_or_default())
            })?;
            let status = answer.status();
            // Read (a bounded part of) the answer so the connection can be reused.
            let _ = Limited::new(answer.into_body(), MAX_ANSWER).collect().await;
            Ok::<_, String>(status)
        };
        match tokio::time::timeout(limit, exchange).await {
            Err(_) => Outcome::Failed("no answer in time".into()),
            Ok(Err(e)) => Outcome::Failed(e),
            Ok(Ok(status)) if status.is_success() => Outcome::Delivered,
            Ok(Ok(status))
                if status.is_server_error()
                    || status == hyper::StatusCode::REQUEST_TIMEOUT
                    || status == hyper::StatusCode::TOO_MANY_REQUESTS =>
            {
                Outcome::Failed(format!("answered {status}"))
            }
            Ok(Ok(status)) => Outcome::Rejected(status),
        }
    }
}

fn body_of(batch: &[UsageRecord]) -> Bytes {
    // Serializing plain strings and numbers cannot fail.
    Bytes::from(serde_json::to_vec(&Batch { records: batch }).unwrap_or_default())
}

/// rustls with ring, trusting `usage-webhook-ca-file` or Mozilla's roots.
fn tls_config(cfg: &WebhookConfig) -> io::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    match &cfg.ca_file {
        Some(path) => {
            let bad = |e: &dyn std::fmt::Display| {
                io::Error::other(format!("usage-webhook-ca-file {}: {e}", path.display()))
            };
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
                roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
            }
            if roots.is_empty() {
                return Err(bad(&"no certificate in it"));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
