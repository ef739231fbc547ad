//! The status page (`GET /`) and its data (`GET /api/v1/status`): a self-contained page
//! beside the other endpoints, counters that move with a relayed call, a bounded
//! history, and per-user details with the admin key only.

use super::*;
use crate::common::{SECRET, code, rest_credentials};

async fn status(api: SocketAddr, headers: &[(&str, &str)]) -> Reply {
    http(api, "GET", "/api/v1/status", headers).await
}

/// Polls the status JSON (no key) until `ready` holds for it, for at most `wait`.
async fn status_until(
    api: SocketAddr,
    what: &str,
    wait: Duration,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + wait;
    loop {
        let reply = status(api, &[]).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let s = reply.json();
        if ready(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what} within {wait:?}: {s:#}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every key of a JSON document, at any depth.
fn keys(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                out.push(k.clone());
                keys(v, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_page_is_served_at_the_root_self_contained() {
    let (_server, api) = api_server("").await;
    let reply = http(api, "GET", "/", &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = reply.header("content-security-policy").expect("a CSP");
    assert!(csp.starts_with("default-src 'none';"), "{csp}");
    assert!(csp.contains("script-src 'sha256-"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    let page = &reply.body;
    assert!(page.starts_with("<!doctype html>"));
    assert!(page.contains("id=\"chart\""));
    assert!(page.contains("/api/v1/status"));
    // Nothing is loaded from elsewhere: the only URL is the SVG namespace (an identifier,
    // never fetched), and no element names a source.
    let urls = page.matches("http://").count() + page.matches("https://").count();
    let namespaces = page.matches("http://www.w3.org/2000/svg").count();
    assert_eq!(urls, namespaces, "a URL other than the SVG namespace");
    for attr in [" src=", "@import", "url("] {
        assert!(!page.contains(attr), "the page has {attr}");
    }
    assert!(page.len() < 40_000, "the page is {} bytes", page.len());

    // The other endpoints are where they were; the root is no catch-all.
    assert_eq!(http(api, "GET", "/healthz", &[]).await.status, 200);
    assert_eq!(http(api, "GET", "/readyz", &[]).await.status, 200);
    assert_eq!(http(api, "GET", "/metrics", &[]).await.status, 200);
    assert_eq!(http(api, "GET", "/index.html", &[]).await.status, 404);
    assert_eq!(http(api, "POST", "/", &[]).await.status, 405);
}

#[tokio::test]
async fn status_moves_with_a_relayed_call() {
    let (server, api) = api_server("").await;
    let before = status(api, &[]).await.json();
    assert_eq!(before["allocations"]["total"], 0);
    assert_eq!(before["relayed"]["bytes_up"], 0);
    assert_eq!(before["node"]["draining"], false);
    assert_eq!(before["node"]["version"], env!("CARGO_PKG_VERSION"));
    let shards = before["shards"].as_array().expect("shards").len();
    assert!(shards >= 1);
    assert_eq!(before["history"]["capacity"], 120);
    assert_eq!(before["history"]["interval_secs"], 5);

    // A wrong password (401), then a call relayed through an echo peer.
    let (username, _) = rest_credentials(SECRET, "mallory", Duration::from_secs(600));
    let mut wrong = TurnClient::new(server.addr, &username, "not-the-password")
        .await
        .unwrap();
    assert_eq!(code(wrong.allocate().await), 401);
    let mut client = crate::common::client(&server, "alice").await;
    client.allocate().await.unwrap();
    let peer = echo_peer().await;
    client.channel_bind(0x4001, peer.addr).await.unwrap();
    let payload = [7u8; 500];
    let relay = async {
        for _ in 0..20 {
            client.send_channel_data(0x4001, &payload).await.unwrap();
            assert!(client.recv_relayed(WAIT).await.unwrap().is_some());
        }
    };
    relay.await;

    let s = status_until(api, "the call in the counters", METRICS_WAIT, |s| {
        s["relayed"]["packets_down"].as_u64() >= Some(20)
    })
    .await;
    assert_eq!(s["allocations"]["total"], 1);
    assert_eq!(s["allocations"]["udp"], 1);
    assert_eq!(s["allocations"]["tcp"], 0);
    assert_eq!(s["allocations"]["channels"], 1);
    assert!(s["relayed"]["bytes_up"].as_u64() >= Some(20 * 500));
    assert!(s["relayed"]["bytes_down"].as_u64() >= Some(20 * 500));
    let errors = s["errors"].as_array().unwrap();
    let count_of = |code: u64| {
        errors
            .iter()
            .find(|e| e["code"] == code)
            .map(|e| e["count"].as_u64().unwrap())
    };
    // The challenge of each client, and the wrong password.
    assert!(count_of(401) >= Some(2), "{errors:?}");
    assert!(errors.iter().all(|e| e["count"].as_u64() > Some(0)));
    assert!(
        errors
            .iter()
            .any(|e| e["code"] == 401 && e["reason"] == "Unauthenticated")
    );
    let wrong_password = s["auth_failures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["label"] == "wrong_password")
        .expect("a wrong_password row");
    assert_eq!(wrong_password["count"], 1);
    let loads = s["shards"].as_array().unwrap();
    assert_eq!(loads.len(), shards);
    let total = |field: &str| {
        loads
            .iter()
            .map(|l| l[field].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(total("allocations"), 1);
    assert!(total("packets") >= 40);

    // The sampler sees the traffic within two intervals (the first reading is the
    // baseline); the call's rate then shows in a sample.
    let sent = async {
        for _ in 0..40 {
            client.send_channel_data(0x4001, &payload).await.unwrap();
            assert!(client.recv_relayed(WAIT).await.unwrap().is_some());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (s, ()) = tokio::join!(
        status_until(api, "a sample with traffic", Duration::from_secs(16), |s| {
            s["history"]["samples"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["bps_up"].as_u64() > Some(0) && x["bps_down"].as_u64() > Some(0))
        }),
        sent
    );
    let samples = s["history"]["samples"].as_array().unwrap();
    assert!(samples.len() <= 120);
    assert!(samples.iter().any(|x| x["allocations"] == 1));
    let stamps: Vec<u64> = samples.iter().map(|x| x["t"].as_u64().unwrap()).collect();
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "{stamps:?}");
    assert!(stamps.last() <= s["now"].as_u64().as_ref());

    client.refresh(0).await.unwrap();
    status_until(api, "the allocation gone", METRICS_WAIT, |s| {
        s["allocations"]["total"] == 0
    })
    .await;
}

#[tokio::test]
async fn users_only_with_the_admin_key() {
    let (server, api) = api_server("").await;
    let mut alice = crate::common::client(&server, "alice").await;
    let relayed = alice.allocate().await.unwrap();
    let client_addr = alice.local_addr().unwrap();
    let mut bob = crate::common::client(&server, "bob").await;
    bob.allocate().await.unwrap();
    status_until(api, "both allocations", METRICS_WAIT, |s| {
        s["allocations"]["total"] == 2
    })
    .await;

    // No key: no user field at all, and nothing that names a user or an address.
    let reply = status(api, &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let mut all = Vec::new();
    keys(&reply.json(), &mut all);
    for k in [
        "users",
        "users_total",
        "user",
        "clients",
        "client",
        "relayed_address",
    ] {
        assert!(!all.iter().any(|a| a == k), "{k} without a key");
    }
    for secret in [
        "alice".to_owned(),
        "bob".to_owned(),
        client_addr.to_string(),
        relayed.to_string(),
    ] {
        assert!(!reply.body.contains(&secret), "{secret} without a key");
    }

    // A key that is not an admin key (the credentials key, a made-up one): refused.
    for token in [TOKEN, "made-up"] {
        let auth = bearer(token);
        let reply = status(api, &[("Authorization", &auth)]).await;
        assert_eq!(reply.status, 401, "{token}");
        assert!(!reply.body.contains("alice"));
    }
    let reply = status(api, &[("Authorization", "Basic YWRtaW46YWRtaW4=")]).await;
    assert_eq!(reply.status, 401);

    // The admin key: every user with an allocation, and its addresses.
    let auth = bearer(ADMIN);
    let reply = status(api, &[("Authorization", &auth)]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let s = reply.json();
    assert_eq!(s["users_total"], 2);
    let users = s["users"].as_array().unwrap();
    let names: Vec<&str> = users.iter().map(|u| u["user"].as_str().unwrap()).collect();
    assert_eq!(names, ["alice", "bob"], "ties sorted by name");
    let a = &users[0];
    assert_eq!(a["allocations"], 1);
    assert_eq!(a["clients"], serde_json::json!([client_addr.to_string()]));
    assert_eq!(a["relayed"], serde_json::json!([relayed.to_string()]));
    assert_eq!(
        s["allocations"]["total"], 2,
        "the public fields are there too"
    );

    alice.refresh(0).await.unwrap();
    bob.refresh(0).await.unwrap();
    let deadline = Instant::now() + METRICS_WAIT;
    loop {
        let s = status(api, &[("Authorization", &auth)]).await.json();
        if s["users_total"] == 0 {
            assert_eq!(s["users"], serde_json::json!([]));
            break;
        }
        assert!(Instant::now() < deadline, "the users left: {s:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn status_follows_the_drain() {
    let (_server, api) = api_server("").await;
    assert_eq!(status(api, &[]).await.json()["node"]["draining"], false);
    assert_eq!(admin(api, "POST", "/api/v1/admin/drain").await.status, 200);
    assert_eq!(status(api, &[]).await.json()["node"]["draining"], true);
    assert_eq!(
        admin(api, "DELETE", "/api/v1/admin/drain").await.status,
        200
    );
    assert_eq!(status(api, &[]).await.json()["node"]["draining"], false);
}
