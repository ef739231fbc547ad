//! `GET /api/v1/credentials`: credentials that allocate, keys, parameters, CORS, and
//! the URIs handed out.

use super::*;

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
