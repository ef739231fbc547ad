//! `/metrics` (Prometheus text that moves with traffic), health and readiness.

use super::*;

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
        "ferroturn_rate_limited_total{reason=\"total\"}",
        "ferroturn_unauthenticated_credited_total",
        "ferroturn_connections_accepted_total{transport=\"tls\"}",
        "ferroturn_tcp_relay_connections_total{kind=\"bound\"}",
        "ferroturn_tcp_relay_connections_active{kind=\"pending\"}",
        "ferroturn_tcp_relay_bytes_total{direction=\"peer_to_client\"}",
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
