//! The admin endpoints: sessions listed and deleted, users revoked, configuration
//! reloaded.

use super::*;

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

/// A revoked user loses its allocations at once and gets 401 for new ones, whatever
/// its credential (every REST username of the user), until the revocation ends or is
/// lifted; other users are untouched.
#[tokio::test]
async fn a_revoked_user_is_refused_until_lifted() {
    let (server, api) = api_server("").await;
    let alice_creds = credentials(api, "?user=alice").await.json();
    let (mut alice, _) = allocate_with(&server, &alice_creds).await.unwrap();
    let bob_creds = credentials(api, "?user=bob").await.json();
    let (mut bob, _) = allocate_with(&server, &bob_creds).await.unwrap();

    let reply = admin(
        api,
        "POST",
        "/api/v1/admin/revocations?user=alice&seconds=600",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["deleted"], 1);
    // Its allocation is gone, and the request does not get that far: 401.
    assert!(matches!(
        alice.refresh(600).await,
        Err(ClientError::Error(401))
    ));
    let fresh = credentials(api, "?user=alice").await.json();
    assert!(matches!(
        allocate_with(&server, &fresh).await,
        Err(ClientError::Error(401))
    ));
    bob.refresh(600).await.expect("bob is not revoked");
    let list = admin(api, "GET", "/api/v1/admin/revocations").await.json();
    assert_eq!(list["revocations"][0]["user"], "alice");
    for bad in [
        "?user=alice",
        "?user=alice&seconds=0",
        "?seconds=60",
        "?user=alice&seconds=x",
    ] {
        let reply = admin(api, "POST", &format!("/api/v1/admin/revocations{bad}")).await;
        assert_eq!(reply.status, 400, "{bad}: {}", reply.body);
    }

    let reply = admin(api, "DELETE", "/api/v1/admin/revocations?user=alice").await;
    assert_eq!(reply.json()["lifted"], true, "{}", reply.body);
    allocate_with(&server, &fresh).await.expect("lifted");
    let list = admin(api, "GET", "/api/v1/admin/revocations").await.json();
    assert_eq!(list["revocations"], serde_json::json!([]));
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

/// The sessions list shows both relayed addresses of a dual allocation (RFC 8656
/// ADDITIONAL-ADDRESS-FAMILY), null for a single-family one, and either address deletes
/// it.
#[tokio::test]
async fn admin_shows_both_addresses_of_a_dual_allocation() {
    let (server, api) = api_server("listening-ip = [\"127.0.0.1\", \"::1\"]").await;
    let issued = credentials(api, "?user=alice").await.json();
    let (mut dual, _) = allocate_with(&server, &issued).await.unwrap();
    // A second 5-tuple of alice's, asking for both families this time.
    let mut both = TurnClient::new(
        server.addr,
        issued["username"].as_str().unwrap(),
        issued["password"].as_str().unwrap(),
    )
    .await
    .unwrap();
    let relayed = both.allocate_dual().await.unwrap();
    assert_eq!(relayed.len(), 2, "{relayed:?}");
    let (v4, v6) = (relayed[0], relayed[1]);
    assert!(v4.is_ipv4() && v6.is_ipv6());

    let reply = admin(api, "GET", "/api/v1/admin/sessions").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let list = reply.json()["sessions"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2);
    let listed = list
        .iter()
        .find(|s| s["relayed"] == v4.to_string())
        .expect("the dual allocation is listed");
    assert_eq!(listed["additional_relayed"], v6.to_string());
    let single = list
        .iter()
        .find(|s| s["relayed"] != v4.to_string())
        .unwrap();
    assert!(single["additional_relayed"].is_null(), "{single}");

    let reply = admin(
        api,
        "DELETE",
        &format!("/api/v1/admin/sessions?relayed={v6}"),
    )
    .await;
    assert_eq!(reply.json()["deleted"], 1);
    assert!(matches!(
        both.refresh(600).await,
        Err(ClientError::Error(437))
    ));
    dual.refresh(600).await.unwrap();
}
