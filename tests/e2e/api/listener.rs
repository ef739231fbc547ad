//! The API's listener: TLS with the TURN certificate, a busy port, the API off by
//! default, oversized requests.

use super::*;

#[tokio::test]
async fn the_api_serves_tls_with_the_turn_certificate() {
    let pki = crate::common::tls::TestPki::new();
    let server = start_server(&api_toml(&format!("api-tls = true\n{}", pki.server_toml()))).await;
    let api = server.handle.api_addr().unwrap();
    let tls = server.handle.tls_addrs()[0];

    let mut config = (*pki.client_config()).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(api).await.unwrap();
    let stream = connector
        .connect(crate::common::tls::server_name(), tcp)
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
