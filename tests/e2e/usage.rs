//! Usage records end to end: a real server with `usage-webhook` pointing at a receiver
//! in this test (hyper on 127.0.0.1, plain HTTP or HTTPS under a private CA), clients
//! relaying a known number of packets each way through echo peers, and the records the
//! receiver gets: exact packet and byte counts, the reason each allocation ended, the
//! client's transport; retries while the receiver is down, drops counted in `/metrics`
//! (and the relay unaffected) while it stays down, a refused batch not retried.

use crate::common::http::http;
use crate::common::tls::TestPki;
use crate::common::webhook::{Receiver, hook_toml};
use crate::common::{
    METRICS_WAIT, SECRET, TestServer, WAIT, client, echo_peer, rest_credentials, start_server,
};
use ferroturn::client::{Relayed, TurnClient};
use ferroturn::control::{UsageDrop, UsageTotals};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const CHANNEL: u16 = 0x4001;

/// A server whose webhook is `url`, sending at once what is queued, plus `extra`.
async fn server_with_hook(url: &str, extra: &str) -> TestServer {
    start_server(&format!("{}{extra}", hook_toml(url))).await
}

/// Sends `sizes` as ChannelData and as Send indications through echo peers and
/// receives every echo: returns the payload bytes each way (the same both ways).
async fn relay_known_packets(c: &mut TurnClient, send_peer: SocketAddr, sizes: &[usize]) -> u64 {
    for &n in sizes {
        c.send_channel_data(CHANNEL, &vec![0xC5; n]).await.unwrap();
        let got = c.recv_relayed(WAIT).await.unwrap();
        assert!(
            matches!(&got, Some(Relayed::Channel { data, .. }) if data.len() == n),
            "{got:?}"
        );
        c.send_indication(send_peer, &vec![0x5E; n]).await.unwrap();
        let got = c.recv_relayed(WAIT).await.unwrap();
        assert!(
            matches!(&got, Some(Relayed::Indication { peer, data }) if data.len() == n && *peer == send_peer),
            "{got:?}"
        );
    }
    2 * sizes.iter().sum::<usize>() as u64
}

/// A webhook URL whose port is bound (so no other test's listener takes it) and not
/// listening, so connections are refused while the socket is kept; `listen` on it
/// brings the receiver up.
fn refusing_receiver() -> (socket2::Socket, String) {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .unwrap();
    socket
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    let port = socket.local_addr().unwrap().as_socket().unwrap().port();
    (socket, format!("http://127.0.0.1:{port}/usage"))
}

/// The usage counters once `delivered` records are counted as delivered (the webhook
/// counts a batch after its answer, which the receiver sent before the test saw it).
async fn usage_after_delivery(server: &TestServer, delivered: u64) -> UsageTotals {
    let deadline = Instant::now() + WAIT;
    loop {
        let m = server.handle.metrics().usage;
        if m.delivered >= delivered {
            return m;
        }
        assert!(Instant::now() < deadline, "{m:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn u(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v:#}"))
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("{key} in {v:#}"))
}

/// Refresh 0 after a known exchange over a channel and Send indications: one record,
/// with the user, realm, client address and transport, relayed address, start, and the
/// exact packets and bytes each way; reason `client`. The receiver sees the bearer
/// secret.
#[tokio::test]
async fn refresh_zero_gives_one_record_with_exact_counts() {
    let mut hook = Receiver::plain().await;
    let server = server_with_hook(&hook.url, "").await;
    let (channel_peer, send_peer) = (echo_peer().await, echo_peer().await);
    let before = ferroturn::control::unix_now();
    let mut c = client(&server, "alice").await;
    let relayed = c.allocate().await.unwrap();
    c.channel_bind(CHANNEL, channel_peer.addr).await.unwrap();
    c.create_permission(&[send_peer.addr]).await.unwrap();
    let sizes = [1, 20, 300, 1200, 7];
    let bytes = relay_known_packets(&mut c, send_peer.addr, &sizes).await;
    c.refresh(0).await.unwrap();

    let records = hook.records(1, WAIT).await;
    let r = &records[0];
    assert_eq!(s(r, "reason"), "client");
    assert_eq!(s(r, "user"), "alice");
    assert!(s(r, "username").ends_with(":alice"), "{r:#}");
    assert_eq!(s(r, "realm"), crate::common::REALM);
    assert_eq!(s(r, "client"), c.local_addr().unwrap().to_string());
    assert_eq!((s(r, "transport"), s(r, "relay_transport")), ("udp", "udp"));
    assert_eq!(s(r, "relayed"), relayed.to_string());
    assert!(r.get("additional_relayed").is_none());
    let packets = 2 * sizes.len() as u64;
    assert_eq!(u(r, "client_to_peer_packets"), packets);
    assert_eq!(u(r, "peer_to_client_packets"), packets);
    assert_eq!(u(r, "client_to_peer_bytes"), bytes);
    assert_eq!(u(r, "peer_to_client_bytes"), bytes);
    let start = u(r, "start_unix");
    assert!(
        start >= before && start <= ferroturn::control::unix_now(),
        "{r:#}"
    );
    assert!(
        s(r, "start").ends_with('Z') && s(r, "start").contains('T'),
        "{r:#}"
    );
    assert!(!s(r, "id").is_empty());
    assert!(u(r, "duration_ms") < 60_000);
    // Exactly one: nothing else arrives, and the counters agree.
    assert!(
        tokio::time::timeout(crate::common::QUIET, hook.posts.recv())
            .await
            .is_err()
    );
    let m = usage_after_delivery(&server, 1).await;
    assert_eq!(m.written_for(ferroturn_core::server::Deletion::ByClient), 1);
    assert_eq!(m.delivered, 1);
}

/// An allocation whose lifetime runs out is `expired`, after exactly its lifetime.
#[tokio::test]
async fn expiry_ends_after_exactly_the_lifetime() {
    let mut hook = Receiver::plain().await;
    let server = server_with_hook(
        &hook.url,
        "default-allocate-lifetime = 2\nmax-allocate-lifetime = 2",
    )
    .await;
    let mut expiring = client(&server, "erin").await;
    expiring.allocate().await.unwrap();
    let r = &hook.records(1, WAIT + Duration::from_secs(2)).await[0];
    assert_eq!((s(r, "reason"), s(r, "user")), ("expired", "erin"));
    assert_eq!(u(r, "duration_ms"), 2000, "the lifetime, exactly");
}

/// One an operator deletes is `operator`; a revoked user's are `revoked`; one whose TCP
/// connection closes is `connection_closed` over `tcp`; the server stopping ends the
/// rest as `shutdown`, and those records are sent before it exits. (Two runtime
/// threads: the receiver answers while the test's thread waits for the server to stop.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_end_names_its_reason() {
    let mut hook = Receiver::plain().await;
    let mut server = server_with_hook(&hook.url, "").await;
    let mut deleted = client(&server, "olga").await;
    deleted.allocate().await.unwrap();
    let mut revoked = client(&server, "rex").await;
    revoked.allocate().await.unwrap();
    let (user, pass) = rest_credentials(SECRET, "tom", Duration::from_secs(600));
    let mut over_tcp = TurnClient::connect_tcp(server.handle.tcp_addrs()[0], &user, &pass)
        .await
        .unwrap();
    over_tcp.allocate().await.unwrap();
    let mut staying = client(&server, "sam").await;
    staying.allocate().await.unwrap();

    let olga = ferroturn_core::server::SessionFilter::User("olga".into());
    assert_eq!(server.handle.delete_sessions(olga), 1);
    let r = &hook.records(1, WAIT).await[0];
    assert_eq!((s(r, "reason"), s(r, "user")), ("operator", "olga"));

    let until = ferroturn::control::unix_now() + 60;
    assert_eq!(server.handle.revoke("rex", until), Some(1));
    let r = &hook.records(1, WAIT).await[0];
    assert_eq!((s(r, "reason"), s(r, "user")), ("revoked", "rex"));

    over_tcp.shutdown().await.unwrap();
    drop(over_tcp);
    let r = &hook.records(1, WAIT).await[0];
    assert_eq!((s(r, "reason"), s(r, "user")), ("connection_closed", "tom"));
    assert_eq!(s(r, "transport"), "tcp");

    server.handle.stop();
    let r = &hook.records(1, WAIT).await[0];
    assert_eq!((s(r, "reason"), s(r, "user")), ("shutdown", "sam"));
    drop(staying);
    let m = server.handle.metrics().usage;
    assert_eq!(
        (m.delivered, m.dropped),
        (4, [0; 3]),
        "delivered before it stopped"
    );
}

/// A stop while a batch waits for its answer lets that answer come (within the flush
/// time): the batch is delivered once, not cut short and sent again. (Two runtime
/// threads, as above.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_waits_for_the_answer_in_flight() {
    let mut hook = Receiver::plain().await;
    hook.delay_ms.store(1000, Ordering::Relaxed);
    let mut server = server_with_hook(&hook.url, "").await;
    let mut c = client(&server, "una").await;
    c.allocate().await.unwrap();
    c.refresh(0).await.unwrap();
    let r = &hook.records(1, WAIT).await[0];
    assert_eq!((s(r, "reason"), s(r, "user")), ("client", "una"));
    // The receiver has the batch and answers in 1 s; the server stops meanwhile.
    server.handle.stop();
    let m = server.handle.metrics().usage;
    assert_eq!((m.delivered, m.retries, m.dropped), (1, 0, [0; 3]));
    assert!(
        hook.posts.try_recv().is_err(),
        "the batch was not sent again"
    );
}

/// The receiver refuses connections at first (its socket is bound, not listening):
/// the batch is tried again with backoff, and once the receiver listens, the records
/// arrive; the retries are counted.
#[tokio::test]
async fn records_arrive_once_the_receiver_comes_up() {
    let (socket, url) = refusing_receiver();
    let server = server_with_hook(&url, "").await;
    for user in ["ann", "ben"] {
        let mut c = client(&server, user).await;
        c.allocate().await.unwrap();
        c.refresh(0).await.unwrap();
    }
    // Refused, at least once.
    let deadline = Instant::now() + WAIT;
    while server.handle.metrics().usage.retries == 0 {
        assert!(Instant::now() < deadline, "no failed attempt counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    socket.listen(128).unwrap();
    socket.set_nonblocking(true).unwrap();
    let listener = TcpListener::from_std(socket.into()).unwrap();
    let mut hook = Receiver::serve(listener, None);
    // The backoff is at most 1.25 s after two failures, more after more: allow for it.
    let records = hook.records(2, Duration::from_secs(15)).await;
    let mut users: Vec<&str> = records.iter().map(|r| s(r, "user")).collect();
    users.sort();
    assert_eq!(users, ["ann", "ben"]);
    let m = usage_after_delivery(&server, 2).await;
    assert_eq!(m.delivered, 2);
    assert_eq!(m.dropped, [0; 3]);
}

/// The receiver stays down and the queue holds 2 records: records beyond what waits
/// (one batch being retried, two queued) are dropped and counted in /metrics, and the
/// relay goes on relaying as if nothing happened.
#[tokio::test]
async fn a_receiver_that_stays_down_costs_records_not_relaying() {
    let (_down, url) = refusing_receiver();
    let server = server_with_hook(
        &url,
        "usage-webhook-queue = 2\nusage-webhook-batch = 1\napi-listen = \"127.0.0.1:0\"",
    )
    .await;
    for i in 0..8 {
        let mut c = client(&server, &format!("user{i}")).await;
        c.allocate().await.unwrap();
        c.refresh(0).await.unwrap();
    }
    // One batch is out (being retried), two wait: at least five were dropped.
    let api = server.handle.api_addr().expect("the API listens");
    let deadline = Instant::now() + METRICS_WAIT;
    let dropped = loop {
        let text = http(api, "GET", "/metrics", &[]).await.body;
        let line = "ferroturn_usage_records_dropped_total{reason=\"queue_full\"} ";
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(line))
            .map(|v| v.parse::<u64>().unwrap());
        match value {
            Some(v) if v >= 5 => break v,
            _ => assert!(Instant::now() < deadline, "{text}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let m = server.handle.metrics().usage;
    assert_eq!(m.dropped_for(UsageDrop::QueueFull), dropped);
    assert_eq!(m.written.iter().sum::<u64>(), 8);
    assert_eq!(m.delivered, 0);
    assert!(m.queued.is_some_and(|q| q <= 2), "{m:?}");

    // Relaying is untouched.
    let peer = echo_peer().await;
    let mut c = client(&server, "still-working").await;
    c.allocate().await.unwrap();
    c.channel_bind(CHANNEL, peer.addr).await.unwrap();
    for n in [10, 1000] {
        c.send_channel_data(CHANNEL, &vec![1; n]).await.unwrap();
        let got = c.recv_relayed(WAIT).await.unwrap();
        assert!(matches!(got, Some(Relayed::Channel { data, .. }) if data.len() == n));
    }
}

/// A receiver that answers 400 refuses the batch for good: it is dropped and counted
/// (`rejected`), not retried; the next batch goes out as usual.
#[tokio::test]
async fn a_refused_batch_is_dropped_not_retried() {
    let mut hook = Receiver::plain().await;
    hook.answer.store(400, Ordering::Relaxed);
    let server = server_with_hook(&hook.url, "").await;
    let mut c = client(&server, "first").await;
    c.allocate().await.unwrap();
    c.refresh(0).await.unwrap();
    let post = tokio::time::timeout(WAIT, hook.posts.recv()).await.unwrap();
    assert_eq!(post.map(|p| p.0), Some(400));
    hook.answer.store(200, Ordering::Relaxed);
    let mut c = client(&server, "second").await;
    c.allocate().await.unwrap();
    c.refresh(0).await.unwrap();
    let records = hook.records(1, WAIT).await;
    assert_eq!(
        s(&records[0], "user"),
        "second",
        "the first is not sent again"
    );
    let m = usage_after_delivery(&server, 1).await;
    assert_eq!(
        (m.dropped_for(UsageDrop::Rejected), m.delivered, m.retries),
        (1, 1, 0)
    );
}

/// An `https://` webhook checked against `usage-webhook-ca-file` (a private CA) gets
/// its records over TLS.
#[tokio::test]
async fn an_https_webhook_under_a_private_ca() {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let pki = TestPki::new();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.cert_chain_path)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&pki.key_path).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut hook = Receiver::serve(listener, Some(TlsAcceptor::from(Arc::new(config))));
    let ca = pki.ca_path.to_str().unwrap().to_owned();
    let server = server_with_hook(&hook.url, &format!("usage-webhook-ca-file = \"{ca}\"")).await;
    let mut c = client(&server, "secure").await;
    c.allocate().await.unwrap();
    c.refresh(0).await.unwrap();
    let records = hook.records(1, WAIT).await;
    assert_eq!(s(&records[0], "user"), "secure");
}
