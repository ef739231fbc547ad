//! Shared helpers for the end-to-end tests: a real server on 127.0.0.1:0.
#![allow(dead_code)]

pub mod adversary;
pub mod tls;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const REALM: &str = "ferroturn.test";
pub const SECRET: &str = "test-secret";

/// A ferroturn server running in this process, stopped when dropped.
pub struct TestServer {
    /// The UDP listener's bound address (127.0.0.1:<ephemeral>).
    pub addr: SocketAddr,
    pub handle: ferroturn::ServerHandle,
}

/// Base configuration shared by every test: loopback listener on an ephemeral port,
/// one REST secret, loopback peers allowed. `extra` is appended TOML (top-level keys).
pub fn test_config_toml(extra: &str) -> String {
    config_toml(SECRET, extra)
}

/// The base configuration with `secret` as the one REST secret.
pub fn config_toml(secret: &str, extra: &str) -> String {
    format!(
        "listening-ip = [\"127.0.0.1\"]\n\
         listening-port = 0\n\
         realm = \"{REALM}\"\n\
         static-auth-secret = [\"{secret}\"]\n\
         allowed-peer-ip = [\"127.0.0.1\"]\n\
         min-port = 40000\n\
         max-port = 60000\n\
         {extra}\n"
    )
}

/// Starts a server with the base configuration plus `extra` TOML keys.
pub async fn start_server(extra: &str) -> TestServer {
    start_server_raw(&test_config_toml(extra)).await
}

/// Starts a server with exactly this TOML configuration.
pub async fn start_server_raw(toml: &str) -> TestServer {
    let config =
        ferroturn::config::Config::from_toml_str(toml).expect("test configuration is valid");
    let handle = ferroturn::start(config).await.expect("server starts");
    let addr = handle.udp_addrs()[0];
    TestServer { addr, handle }
}

/// TURN REST credentials valid for `ttl` from now: (username, password).
pub fn rest_credentials(secret: &str, user: &str, ttl: Duration) -> (String, String) {
    let expiry = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + ttl;
    ferroturn::credentials::rest_credentials(secret, user, expiry.as_secs(), ':')
}

/// A UDP echo peer on 127.0.0.1 that sends every datagram back; stops when dropped.
pub struct EchoPeer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EchoPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn echo_peer() -> EchoPeer {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind echo peer");
    let addr = socket.local_addr().expect("echo peer address");
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    EchoPeer { addr, task }
}

/// A TURN client with valid REST credentials for `user`.
pub async fn client(server: &TestServer, user: &str) -> ferroturn::client::TurnClient {
    let (u, p) = rest_credentials(SECRET, user, Duration::from_secs(600));
    ferroturn::client::TurnClient::new(server.addr, &u, &p)
        .await
        .expect("client socket")
}
