//! The HTTP API end to end: a real server with `api-listen = 127.0.0.1:0`, spoken to by
//! a raw HTTP/1.1 client over a tokio TcpStream (or TLS), and the TURN listener used
//! with the credentials the API hands out.

mod common;

use common::process::TempDir;
use common::{
    METRICS_WAIT, WAIT, config_toml, echo_peer, sha256_hex, start_server, start_server_raw,
    test_config_toml,
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

async fn api_server(extra: &str) -> (common::TestServer, SocketAddr) {
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
    server: &common::TestServer,
    issued: &Value,
) -> Result<(TurnClient, SocketAddr), ClientError> {
    let username = issued["username"].as_str().expect("username");
    let password = issued["password"].as_str().expect("password");
    let mut client = TurnClient::new(server.addr, username, password).await?;
    let relayed = client.allocate().await?;
    Ok((client, relayed))
}

#[tokio::test]
async fn issued_credentials_allocate_on_the_turn_listener() {
    let (server, api) = api_server("").await;
    let reply = credentials(api, "?user=alice&ttl=600").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert!(
        reply
            .header("content-type")
            .unwrap_or("")
            .starts_with("application/json")
    );
    let issued = reply.json();
    let username = issued["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, "alice");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expiry: u64 = expiry.parse().unwrap();
    assert!(
        (now + 595..=now + 605).contains(&expiry),
        "expiry {expiry}, now {now}"
    );
    assert_eq!(issued["ttl"], 600);
    let udp = server.addr;
    let tcp = server.handle.tcp_addrs()[0];
    let uris: Vec<&str> = issued["uris"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert_eq!(
        uris,
        [
            format!("turn:127.0.0.1:{}?transport=udp", udp.port()),
            format!("turn:127.0.0.1:{}?transport=tcp", tcp.port())
        ]
    );
    let ice = &issued["iceServers"][0];
    assert_eq!(ice["urls"], issued["uris"]);
    assert_eq!(ice["username"], issued["username"]);
    assert_eq!(ice["credential"], issued["password"]);

    let (mut client, _relayed) = allocate_with(&server, &issued)
        .await
        .expect("the issued credentials allocate");
    assert_eq!(client.refresh(600).await.unwrap(), 600);

    // POST works the same; with no ttl the default (a day) applies.
    let auth = bearer(TOKEN);
    let reply = http(
        api,
        "POST",
        "/api/v1/credentials?user=bob",
        &[("Authorization", &auth)],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["ttl"], 86_400);
    allocate_with(&server, &reply.json())
        .await
        .expect("bob allocates");
}

#[tokio::test]
async fn missing_or_wrong_keys_get_401() {
    let (_server, api) = api_server("").await;
    let path = "/api/v1/credentials?user=alice";
    let admin_auth = bearer(ADMIN);
    for headers in [
        vec![],
        vec![("Authorization", "Bearer wrong-token")],
        vec![("Authorization", "Basic dGVzdC1hcGktdG9rZW46")],
        // The admin key is not a credentials key.
        vec![("Authorization", admin_auth.as_str())],
    ] {
        let reply = http(api, "GET", path, &headers).await;
        assert_eq!(reply.status, 401, "{headers:?}: {}", reply.body);
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
        assert!(reply.json()["error"].is_string());
        assert!(!reply.body.contains("password"));
    }
    // Admin endpoints refuse the credentials key and no key alike.
    let auth = bearer(TOKEN);
    for headers in [vec![], vec![("Authorization", auth.as_str())]] {
        let reply = http(api, "GET", "/api/v1/admin/sessions", &headers).await;
        assert_eq!(reply.status, 401, "{}", reply.body);
        let reply = http(api, "POST", "/api/v1/admin/drain", &headers).await;
        assert_eq!(reply.status, 401, "{}", reply.body);
    }
}

#[tokio::test]
async fn bad_parameters_get_400_naming_them() {
    let (_server, api) = api_server(&format!(
        "[[api-key]]\nsha256 = \"{}\"\nmax-ttl = 300\n",
        sha256_hex("short-lived-token")
    ))
    .await;
    for (query, parameter) in [
        ("?user=alice&ttl=abc", "ttl"),
        ("?user=alice&ttl=0", "ttl"),
        ("?user=alice&ttl=-5", "ttl"),
        ("?user=alice&ttl=60&ttl=70", "ttl"),
        ("?user=a%01b", "user"),
        ("?user=a&username=b", "user"),
        ("?service=stun", "service"),
    ] {
        let reply = credentials(api, query).await;
        assert_eq!(reply.status, 400, "{query}: {}", reply.body);
        assert_eq!(
            reply.json()["parameter"],
            parameter,
            "{query}: {}",
            reply.body
        );
    }
    let long_user = "u".repeat(300);
    let reply = credentials(api, &format!("?user={long_user}")).await;
    assert_eq!(reply.json()["parameter"], "user");

    // A TTL beyond the key's max-ttl is capped, not refused; unknown parameters are
    // ignored (the draft's `service=turn` and `username` are understood).
    let auth = bearer("short-lived-token");
    let reply = http(
        api,
        "GET",
        "/api/v1/credentials?service=turn&username=carol&ttl=99999&cachebust=1",
        &[("Authorization", &auth)],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["ttl"], 300);
    assert!(
        reply.json()["username"]
            .as_str()
            .unwrap()
            .ends_with(":carol")
    );
    // And by max-credential-ttl (default 7 days) for keys without their own cap.
    let reply = credentials(api, "?ttl=99999999").await;
    assert_eq!(reply.json()["ttl"], 604_800);
}

#[tokio::test]
async fn cors_headers_only_for_the_keys_origins() {
    let browser_key = "browser-token";
    let (_server, api) = api_server(&format!(
        "[[api-key]]\nsha256 = \"{}\"\norigins = [\"http://app.test:8000\"]\n",
        sha256_hex(browser_key)
    ))
    .await;
    let browser = bearer(browser_key);
    let backend = bearer(TOKEN);
    let path = "/api/v1/credentials?user=alice";

    let reply = http(
        api,
        "GET",
        path,
        &[
            ("Authorization", &browser),
            ("Origin", "http://app.test:8000"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("http://app.test:8000")
    );
    assert_eq!(reply.header("vary"), Some("Origin"));

    for (auth, origin) in [
        (&browser, "http://evil.test"),
        (&browser, "https://app.test:8000"),
        // The backend key names no origin.
        (&backend, "http://app.test:8000"),
    ] {
        let reply = http(
            api,
            "GET",
            path,
            &[("Authorization", auth), ("Origin", origin)],
        )
        .await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.header("access-control-allow-origin"),
            None,
            "{origin}"
        );
    }
    let reply = http(api, "GET", path, &[("Authorization", &browser)]).await;
    assert_eq!(reply.header("access-control-allow-origin"), None);

    // The preflight (no token) succeeds for an origin some key allows.
    let preflight = [
        ("Access-Control-Request-Method", "GET"),
        ("Access-Control-Request-Headers", "authorization"),
    ];
    let mut headers = preflight.to_vec();
    headers.push(("Origin", "http://app.test:8000"));
    let reply = http(api, "OPTIONS", path, &headers).await;
    assert_eq!(reply.status, 204);
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("http://app.test:8000")
    );
    assert!(
        reply
            .header("access-control-allow-headers")
            .unwrap()
            .contains("authorization")
    );
    assert!(
        reply
            .header("access-control-allow-methods")
            .unwrap()
            .contains("GET")
    );
    let mut headers = preflight.to_vec();
    headers.push(("Origin", "http://evil.test"));
    let reply = http(api, "OPTIONS", path, &headers).await;
    assert_eq!(reply.header("access-control-allow-origin"), None);
    assert_eq!(reply.header("access-control-allow-methods"), None);
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

#[tokio::test]
async fn metrics_parse_and_move_with_traffic() {
    let (server, api) = api_server("").await;
    let before = metrics(api).await;
    for series in [
        "ferroturn_allocations_active",
        "ferroturn_allocations_created_total",
        "ferroturn_relayed_packets_total{transport=\"udp\",direction=\"client_to_peer\"}",
        "ferroturn_relayed_bytes_total{transport=\"tcp\",direction=\"peer_to_client\"}",
        "ferroturn_auth_failures_total{reason=\"no_credentials\"}",
        "ferroturn_error_responses_total{code=\"508\"}",
        "ferroturn_quota_rejections_total{kind=\"bandwidth\"}",
        "ferroturn_connections_accepted_total{transport=\"tls\"}",
        "ferroturn_reloads_total",
        "ferroturn_draining",
        "ferroturn_build_info{version=\"0.1.0\"}",
    ] {
        assert!(before.contains_key(series), "{series} missing");
    }
    assert_eq!(before["ferroturn_allocations_created_total"], 0.0);

    let issued = credentials(api, "?user=alice").await.json();
    let (mut client, _) = allocate_with(&server, &issued).await.unwrap();
    let peer = echo_peer().await;
    client.channel_bind(0x4001, peer.addr).await.unwrap();
    for _ in 0..3 {
        client
            .send_channel_data(0x4001, b"hello through the relay")
            .await
            .unwrap();
        assert!(matches!(
            client.recv_relayed(WAIT).await.unwrap(),
            Some(Relayed::Channel { .. })
        ));
    }
    let up = "ferroturn_relayed_packets_total{transport=\"udp\",direction=\"client_to_peer\"}";
    let down = "ferroturn_relayed_bytes_total{transport=\"udp\",direction=\"peer_to_client\"}";
    let m = metrics_until(api, "counters after traffic", |m| {
        m[up] >= 3.0 && m[down] >= 3.0 * 23.0
    })
    .await;
    assert_eq!(m["ferroturn_allocations_created_total"], 1.0);
    assert_eq!(m["ferroturn_allocations_active"], 1.0);
    assert_eq!(m["ferroturn_channels_active"], 1.0);
    assert!(m["ferroturn_auth_failures_total{reason=\"no_credentials\"}"] >= 1.0);
    assert!(m["ferroturn_error_responses_total{code=\"401\"}"] >= 1.0);

    client.refresh(0).await.unwrap();
    metrics_until(api, "the allocation gone", |m| {
        m["ferroturn_allocations_active"] == 0.0 && m["ferroturn_allocations_deleted_total"] == 1.0
    })
    .await;
}

#[tokio::test]
async fn health_and_readiness_follow_the_drain() {
    let (server, api) = api_server("").await;
    let reply = http(api, "GET", "/healthz", &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(http(api, "GET", "/readyz", &[]).await.status, 200);

    let reply = admin(api, "POST", "/api/v1/admin/drain").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["draining"], true);
    assert!(server.handle.is_draining());
    assert_eq!(http(api, "GET", "/readyz", &[]).await.status, 503);
    assert_eq!(
        http(api, "GET", "/healthz", &[]).await.status,
        200,
        "alive while draining"
    );
    assert_eq!(metrics(api).await["ferroturn_draining"], 1.0);
    // Credentials are still issued; the TURN side refuses new allocations.
    let issued = credentials(api, "?user=late").await.json();
    assert!(matches!(
        allocate_with(&server, &issued).await,
        Err(ClientError::Error(508))
    ));

    let reply = admin(api, "DELETE", "/api/v1/admin/drain").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["draining"], false);
    assert_eq!(http(api, "GET", "/readyz", &[]).await.status, 200);
    assert_eq!(metrics(api).await["ferroturn_draining"], 0.0);

    let reply = http(api, "GET", "/no/such/thing", &[]).await;
    assert_eq!(reply.status, 404);
    assert!(reply.json()["error"].is_string());
}

#[tokio::test]
async fn admin_lists_and_deletes_sessions() {
    let (server, api) = api_server("").await;
    let mut clients = Vec::new();
    for user in ["alice", "bob", "carol"] {
        let issued = credentials(api, &format!("?user={user}")).await.json();
        clients.push(allocate_with(&server, &issued).await.unwrap());
    }
    let reply = admin(api, "GET", "/api/v1/admin/sessions").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let list = reply.json()["sessions"].as_array().unwrap().clone();
    assert_eq!(list.len(), 3);
    let alice = list
        .iter()
        .find(|s| s["user"] == "alice")
        .expect("alice listed");
    assert_eq!(alice["relayed"], clients[0].1.to_string());
    assert_eq!(
        alice["client"],
        clients[0].0.local_addr().unwrap().to_string()
    );
    assert_eq!(alice["transport"], "udp");
    for field in ["age_secs", "bytes_up", "bytes_down", "expires_in_secs"] {
        assert!(alice[field].is_u64(), "{field}: {alice}");
    }

    let reply = admin(api, "DELETE", "/api/v1/admin/sessions?user=alice").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["deleted"], 1);
    assert!(matches!(
        clients[0].0.refresh(600).await,
        Err(ClientError::Error(437))
    ));

    let bob_relay = clients[1].1.to_string();
    let reply = admin(
        api,
        "DELETE",
        &format!("/api/v1/admin/sessions?relayed={bob_relay}"),
    )
    .await;
    assert_eq!(reply.json()["deleted"], 1);
    let reply = admin(api, "DELETE", "/api/v1/admin/sessions?relayed=nonsense").await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["parameter"], "relayed");

    let reply = admin(api, "GET", "/api/v1/admin/sessions").await;
    let list = reply.json()["sessions"].as_array().unwrap().clone();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["user"], "carol");
    let reply = admin(api, "DELETE", "/api/v1/admin/sessions").await;
    assert_eq!(reply.json()["deleted"], 1, "no filter: every session");
    assert!(matches!(
        clients[2].0.refresh(600).await,
        Err(ClientError::Error(437))
    ));
}

#[tokio::test]
async fn admin_reload_applies_secrets_and_keys_or_reports_the_error() {
    let dir = TempDir::new("api-reload");
    let file = dir.join("turnserver.toml");
    let config = |secret: &str, token: &str| config_toml(secret, &api_keys_toml(token, ""));
    let first = config("secret-one", TOKEN);
    std::fs::write(&file, &first).unwrap();
    let server = start_server_raw(&first).await;
    server
        .handle
        .set_config_source(file.clone(), RawConfig::default());
    let api = server.handle.api_addr().unwrap();
    let old = credentials(api, "?user=old").await.json();
    let _old_client = allocate_with(&server, &old).await.unwrap();

    std::fs::write(&file, config("secret-two", "rotated-token")).unwrap();
    let reply = admin(api, "POST", "/api/v1/admin/reload").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["reloaded"], true);
    assert_eq!(reply.json()["needs_restart"], serde_json::json!([]));

    // The old key is gone, the new one signs with the new secret.
    assert_eq!(credentials(api, "?user=new").await.status, 401);
    let auth = bearer("rotated-token");
    let reply = http(
        api,
        "GET",
        "/api/v1/credentials?user=new",
        &[("Authorization", &auth)],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    allocate_with(&server, &reply.json())
        .await
        .expect("signed with the new secret");
    assert!(
        matches!(
            allocate_with(&server, &old).await,
            Err(ClientError::Error(401))
        ),
        "the old secret is no longer accepted for new allocations"
    );
    let sessions = admin(api, "GET", "/api/v1/admin/sessions").await.json();
    assert_eq!(
        sessions["sessions"].as_array().unwrap().len(),
        2,
        "the old allocation stays"
    );

    std::fs::write(
        &file,
        "listening-ip = [\"127.0.0.1\"]\nno-such-option = 1\n",
    )
    .unwrap();
    let reply = admin(api, "POST", "/api/v1/admin/reload").await;
    assert_eq!(reply.status, 500, "{}", reply.body);
    assert!(
        reply.json()["error"]
            .as_str()
            .unwrap()
            .contains("no-such-option"),
        "{}",
        reply.body
    );
    assert_eq!(
        http(
            api,
            "GET",
            "/api/v1/credentials",
            &[("Authorization", &auth)]
        )
        .await
        .status,
        200,
        "the old configuration stays"
    );
    let m = metrics(api).await;
    assert_eq!(m["ferroturn_reloads_total"], 1.0);
    assert_eq!(m["ferroturn_reload_failures_total"], 1.0);
}

#[tokio::test]
async fn uris_follow_public_host_and_turn_uris() {
    let (server, api) = api_server("public-host = \"turn.example.test\"\n").await;
    let uris = credentials(api, "").await.json()["uris"].clone();
    assert_eq!(
        uris,
        serde_json::json!([
            format!(
                "turn:turn.example.test:{}?transport=udp",
                server.addr.port()
            ),
            format!(
                "turn:turn.example.test:{}?transport=tcp",
                server.handle.tcp_addrs()[0].port()
            ),
        ])
    );
    let (_server, api) =
        api_server("turn-uris = [\"turns:turn.example.test:443?transport=tcp\"]\n").await;
    let issued = credentials(api, "").await.json();
    assert_eq!(
        issued["uris"],
        serde_json::json!(["turns:turn.example.test:443?transport=tcp"])
    );
    assert!(
        issued["username"].as_str().unwrap().parse::<u64>().is_ok(),
        "no user: the username is the expiry"
    );
}

#[tokio::test]
async fn the_api_serves_tls_with_the_turn_certificate() {
    let pki = common::tls::TestPki::new();
    let server = start_server(&api_toml(&format!("api-tls = true\n{}", pki.server_toml()))).await;
    let api = server.handle.api_addr().unwrap();
    let tls = server.handle.tls_addrs()[0];

    let mut config = (*pki.client_config()).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(api).await.unwrap();
    let stream = connector
        .connect(common::tls::server_name(), tcp)
        .await
        .expect("TLS handshake with the API");
    let auth = bearer(TOKEN);
    let reply = exchange(
        stream,
        "GET",
        "/api/v1/credentials?user=alice",
        &[("Authorization", &auth)],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let issued = reply.json();
    let turns = format!("turns:127.0.0.1:{}?transport=tcp", tls.port());
    assert!(
        issued["uris"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u == &turns),
        "{issued}"
    );
    allocate_with(&server, &issued).await.expect("allocates");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut tcp = TcpStream::connect(api).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut buf)).await;
    assert!(
        !buf.starts_with(b"HTTP/"),
        "plain HTTP answered on the TLS listener"
    );
}

#[tokio::test]
async fn a_busy_api_port_stops_the_start_and_the_api_is_off_by_default() {
    let (_server, api) = api_server("").await;
    let config = ferroturn::config::Config::from_toml_str(&test_config_toml(&format!(
        "api-listen = \"{api}\"\n"
    )))
    .unwrap();
    let err = ferroturn::start(config)
        .await
        .err()
        .expect("the port is taken");
    assert!(err.to_string().contains("api"), "{err}");

    let server = start_server("").await;
    assert_eq!(server.handle.api_addr(), None);
}

#[tokio::test]
async fn oversized_requests_are_cut_off() {
    let (_server, api) = api_server("").await;
    // Headers beyond the connection buffer (16 KiB): answered 431 or closed, never
    // buffered without end.
    let mut tcp = TcpStream::connect(api).await.unwrap();
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "x".repeat(64 * 1024)
    );
    let _ = tcp.write_all(big.as_bytes()).await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut chunk = [0u8; 1024];
        while let Ok(n) = tcp.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    assert!(read.is_ok(), "the connection was not closed");
    assert!(
        buf.is_empty() || buf.starts_with(b"HTTP/1.1 431") || buf.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    // A query string beyond the bound is refused by name.
    let long = format!("?user=a&pad={}", "y".repeat(4000));
    let reply = credentials(api, &long).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["parameter"], "query");
}
