//! Shared helpers for the end-to-end tests: a real server on 127.0.0.1:0.
#![allow(dead_code)]

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
    format!(
        "listening-ip = [\"127.0.0.1\"]\n\
         listening-port = 0\n\
         realm = \"{REALM}\"\n\
         static-auth-secret = [\"{SECRET}\"]\n\
         allowed-peer-ip = [\"127.0.0.1\"]\n\
         min-port = 40000\n\
         max-port = 60000\n\
         {extra}\n"
    )
}

/// Starts a server with the base configuration plus `extra` TOML keys.
pub async fn start_server(extra: &str) -> TestServer {
    let config = ferroturn::config::Config::from_toml_str(&test_config_toml(extra))
        .expect("test configuration is valid");
    let handle = ferroturn::start(config).await.expect("server starts");
    let addr = handle.udp_addrs()[0];
    TestServer { addr, handle }
}

/// TURN REST credentials valid for `ttl` from now: (username, password).
pub fn rest_credentials(secret: &str, user: &str, ttl: Duration) -> (String, String) {
    let expiry = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + ttl;
    ferroturn::credentials::rest_credentials(secret, user, expiry.as_secs(), ':')
}
