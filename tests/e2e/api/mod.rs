//! The HTTP API end to end: a real server with `api-listen = 127.0.0.1:0`, spoken to by
//! a raw HTTP/1.1 client over a tokio TcpStream (or TLS), and the TURN listener used
//! with the credentials the API hands out.

mod admin;
mod credentials;
mod listener;
mod metrics;

use crate::common::process::TempDir;
use crate::common::{
    METRICS_WAIT, TestServer, WAIT, config_toml, echo_peer, sha256_hex, start_server,
    start_server_raw, test_config_toml,
};
use ferroturn::client::{ClientError, Relayed, TurnClient};
use ferroturn::config::RawConfig;
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "test-api-token";
const ADMIN: &str = "test-admin-token";

/// API keys for the test server; `extra` goes last (it may hold `[[api-key]]` tables).
fn api_toml(extra: &str) -> String {
    api_keys_toml(TOKEN, extra)
}

/// The API on an ephemeral port with `token` as the credentials key and [`ADMIN`] as
/// the admin key, then `extra`.
fn api_keys_toml(token: &str, extra: &str) -> String {
    format!(
        "api-listen = \"127.0.0.1:0\"\napi-key-sha256 = [\"{}\"]\nadmin-key-sha256 = [\"{}\"]\n{extra}",
        sha256_hex(token),
        sha256_hex(ADMIN)
    )
}

async fn api_server(extra: &str) -> (TestServer, SocketAddr) {
    let server = start_server(&api_toml(extra)).await;
    let api = server.handle.api_addr().expect("the API listens");
    (server, api)
}

/// One HTTP response.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

/// Sends one request (`Connection: close`) and reads the whole response.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if method == "POST" || method == "DELETE" {
        request.push_str("Content-Length: 0\r\n");
    }
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    let read = async {
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send request");
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        // A TLS peer may close without close_notify: keep what arrived.
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
        }
        raw
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("response within 10 s");
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete response: {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

async fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let stream = TcpStream::connect(addr).await.expect("connect to the API");
    exchange(stream, method, path, headers).await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn credentials(api: SocketAddr, query: &str) -> Reply {
    let auth = bearer(TOKEN);
    http(
        api,
        "GET",
        &format!("/api/v1/credentials{query}"),
        &[("Authorization", &auth)],
    )
    .await
}

async fn admin(api: SocketAddr, method: &str, path: &str) -> Reply {
    let auth = bearer(ADMIN);
    http(api, method, path, &[("Authorization", &auth)]).await
}

/// Allocates on the UDP listener with the username and password of an API answer.
async fn allocate_with(
    server: &TestServer,
    issued: &Value,
) -> Result<(TurnClient, SocketAddr), ClientError> {
    let username = issued["username"].as_str().expect("username");
    let password = issued["password"].as_str().expect("password");
    let mut client = TurnClient::new(server.addr, username, password).await?;
    let relayed = client.allocate().await?;
    Ok((client, relayed))
}

/// Parses Prometheus text: every line is a comment (`# HELP` / `# TYPE` naming a
/// `ferroturn_` metric) or `name{labels} value`. Returns the samples by series.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let name_ok = |n: &str| {
        n.starts_with("ferroturn_")
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    let mut typed = HashMap::new();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let (kind, name, rest) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap_or(""),
            );
            assert!(kind == "HELP" || kind == "TYPE", "{line}");
            assert!(name_ok(name), "{line}");
            if kind == "TYPE" {
                assert!(["counter", "gauge"].contains(&rest), "{line}");
                assert!(
                    typed.insert(name.to_owned(), rest.to_owned()).is_none(),
                    "two TYPE lines: {line}"
                );
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (
                n,
                Some(
                    l.strip_suffix('}')
                        .unwrap_or_else(|| panic!("unclosed labels: {line}")),
                ),
            ),
            None => (series, None),
        };
        assert!(name_ok(name), "{line}");
        let kind = typed
            .get(name)
            .unwrap_or_else(|| panic!("sample before its TYPE: {line}"));
        if kind == "counter" {
            assert!(name.ends_with("_total"), "{line}");
        }
        for label in labels.into_iter().flat_map(|l| l.split(',')) {
            let (k, v) = label
                .split_once('=')
                .unwrap_or_else(|| panic!("bad label {label:?}"));
            assert!(
                [
                    "code",
                    "reason",
                    "transport",
                    "direction",
                    "kind",
                    "version"
                ]
                .contains(&k),
                "unbounded label {k}: {line}"
            );
            assert!(
                v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                "{line}"
            );
        }
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "duplicate series {series}"
        );
    }
    samples
}

async fn metrics(api: SocketAddr) -> HashMap<String, f64> {
    let reply = http(api, "GET", "/metrics", &[]).await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    parse_prometheus(&reply.body)
}

/// Polls /metrics until `ready` holds (shards publish once a second).
async fn metrics_until(
    api: SocketAddr,
    what: &str,
    ready: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    let deadline = Instant::now() + METRICS_WAIT;
    loop {
        let m = metrics(api).await;
        if ready(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {METRICS_WAIT:?}: {m:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
