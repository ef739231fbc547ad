//! The HTTP API end to end: a real server with `api-listen = 127.0.0.1:0`, spoken to by
//! a raw HTTP/1.1 client over a tokio TcpStream (or TLS), and the TURN listener used
//! with the credentials the API hands out.

mod admin;
mod credentials;
mod listener;
mod metrics;
mod status;

use crate::common::http::{Reply, exchange, http};
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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
