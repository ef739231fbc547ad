//! A usage webhook receiver for tests: hyper on 127.0.0.1 (plain HTTP, or HTTPS with
//! the caller's acceptor) recording every POST and answering it with a status the test
//! sets, and the TOML that points a server at it.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

/// The receiver's bearer secret.
pub const HOOK_SECRET: &str = "hook-secret-123";

/// What one request brought: the status it was answered with, its Authorization
/// header, its JSON body.
pub type Post = (u16, Option<String>, Value);

/// A webhook receiver: records every POST and answers it with the status `answer`
/// holds (200 unless a test changes it), `delay_ms` milliseconds after recording it (0
/// unless a test changes it); stops when dropped.
pub struct Receiver {
    pub url: String,
    pub posts: mpsc::UnboundedReceiver<Post>,
    pub answer: Arc<AtomicU16>,
    pub delay_ms: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    pub async fn plain() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::serve(listener, None)
    }

    /// Serves `listener` (over TLS with `tls`).
    pub fn serve(listener: TcpListener, tls: Option<TlsAcceptor>) -> Self {
        let addr = listener.local_addr().expect("receiver address");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let (tx, posts) = mpsc::unbounded_channel();
        let answer = Arc::new(AtomicU16::new(200));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (status, delay) = (answer.clone(), delay_ms.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (tx, status, delay, tls) =
                    (tx.clone(), status.clone(), delay.clone(), tls.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<Incoming>| {
                        let (tx, status) = (tx.clone(), status.load(Ordering::Relaxed));
                        let delay = Duration::from_millis(delay.load(Ordering::Relaxed));
                        async move {
                            let auth = req
                                .headers()
                                .get(hyper::header::AUTHORIZATION)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            let body = req.into_body().collect().await?.to_bytes();
                            let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            let _ = tx.send((status, auth, json));
                            tokio::time::sleep(delay).await;
                            let mut answer = hyper::Response::new(Full::new(Bytes::new()));
                            *answer.status_mut() = hyper::StatusCode::from_u16(status)
                                .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
                            Ok::<_, hyper::Error>(answer)
                        }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(s), service).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
        });
        Self {
            url: format!("{scheme}://127.0.0.1:{}/usage", addr.port()),
            posts,
            answer,
            delay_ms,
            task,
        }
    }

    /// The records of the accepted (200) posts until `n` have arrived; panics after
    /// `wait`.
    pub async fn records(&mut self, n: usize, wait: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut out = Vec::new();
        while out.len() < n {
            let post = tokio::time::timeout_at(deadline, self.posts.recv()).await;
            let Ok(Some((status, auth, body))) = post else {
                panic!("{} of {n} records within {wait:?}: {out:#?}", out.len());
            };
            assert_eq!(auth.as_deref(), Some(&*format!("Bearer {HOOK_SECRET}")));
            if status == 200 {
                let batch = body["records"].as_array().expect("a records array");
                out.extend(batch.iter().cloned());
            }
        }
        out
    }
}

/// TOML that sends a server's usage records to `url` at once, with [`HOOK_SECRET`].
pub fn hook_toml(url: &str) -> String {
    format!(
        "usage-webhook = \"{url}\"\nusage-webhook-secret = \"{HOOK_SECRET}\"\n\
         usage-webhook-interval = 0\n"
    )
}
