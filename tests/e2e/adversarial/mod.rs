//! Attacks on a running ferroturn (issue 5), each test named for the attack it shows the
//! server resists, one module per attack family. Everything is real UDP on loopback
//! against a server in this process (TCP and TLS in `streams`). Where a test claims that
//! nothing left a relay toward an address, a socket listens on that address, and a
//! control server that allows the address receives the very same traffic there: a
//! silent listener cannot pass by accident.
//!
//! Addresses outside loopback (10.0.0.1, 169.254.169.254, fd00::1, ...) are only ever
//! named in requests; no datagram is sent toward them, whatever the server answers.

mod credentials;
mod dtls;
mod floods;
mod malformed;
mod mobility;
mod own_addresses;
mod peer_policy;
mod quotas;
mod reservations;
mod streams;
mod tcp_relay;

use crate::common::adversary::{
    Msg, Session, TCP, Target, UDP, attribute, attributes, drain, error_code, is_success, recv_from,
};
use crate::common::process::{alone, rss_kib, run_alone};
use crate::common::wire::{UNKNOWN_ATTR, lifetime, relayed_of};
use crate::common::{
    METRICS_WAIT, QUIET, REALM, SECRET, TestServer, WAIT, addr, client, code, config_toml, ip,
    rest_credentials, start_server, start_server_raw, unix_now,
};
use ferroturn::client::codec::{self as client_codec, RequestAttr};
use ferroturn::client::{ClientError, Relayed, TurnClient, parse_relayed};
use ferroturn_core::proto::codec::Family;
use ferroturn_core::proto::wire::{Class, HEADER_LEN, attr, method};
use ferroturn_core::server::Stats;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::{Instant, sleep};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

// ---------------------------------------------------------------------------------
// Servers and clients.

/// The base configuration with the default peer policy, or `allowed` peers let through
/// (the control), IPv4 and IPv6 relays, plus `extra` TOML keys.
fn config(allowed: &[&str], extra: &str) -> String {
    let list: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
    config_toml(
        SECRET,
        &format!(
            "allowed-peer-ip = [{}]\nrelay-ip = [\"127.0.0.1\", \"::1\"]\n{extra}",
            list.join(", ")
        ),
    )
}

async fn denying_server(extra: &str) -> TestServer {
    start_server_raw(&config(&[], extra)).await
}

/// The control: the same server with `allowed` peers let through.
async fn allowing_server(allowed: &[&str], extra: &str) -> TestServer {
    start_server_raw(&config(allowed, extra)).await
}

/// A client with an IPv4 relay, and its relayed address.
async fn relay_v4(server: &TestServer, user: &str) -> (TurnClient, SocketAddr) {
    let mut c = client(server, user).await;
    let relayed = c.allocate().await.expect("IPv4 allocation");
    (c, relayed)
}

/// A client with an IPv6 relay (REQUESTED-ADDRESS-FAMILY, RFC 8656 section 7.2).
async fn relay_v6(server: &TestServer, user: &str) -> (TurnClient, SocketAddr) {
    let mut c = client(server, user).await;
    let relayed = c
        .allocate_with(&[
            RequestAttr::RequestedTransport(UDP),
            RequestAttr::RequestedFamily(Family::V6),
        ])
        .await
        .expect("IPv6 allocation");
    assert!(relayed.is_ipv6());
    (c, relayed)
}

fn data_of(r: Relayed) -> Vec<u8> {
    match r {
        Relayed::Indication { data, .. } | Relayed::Channel { data, .. } => data,
    }
}

/// The next relayed payload `c` receives within `wait`.
async fn relayed_data(c: &mut TurnClient, wait: Duration) -> Option<Vec<u8>> {
    c.recv_relayed(wait)
        .await
        .expect("client socket")
        .map(data_of)
}

/// A raw session of `user` from `local`, challenged once (holds REALM and NONCE).
async fn session(server: &TestServer, local: &str, user: &str) -> Session {
    let (u, p) = rest_credentials(SECRET, user, Duration::from_secs(600));
    Session::challenged(ip(local), server.addr, &u, &p).await
}

/// A counter of the server's metrics (published by each shard once a second), once it
/// has reached `at_least` or after [`METRICS_WAIT`].
async fn counter(server: &TestServer, read: impl Fn(&Stats) -> u64, at_least: u64) -> u64 {
    let deadline = Instant::now() + METRICS_WAIT;
    loop {
        let value = read(&server.handle.metrics().stats);
        if value >= at_least || Instant::now() >= deadline {
            return value;
        }
        sleep(Duration::from_millis(100)).await;
    }
}

/// Datagrams as text, for failure messages.
fn lossy(datagrams: &[Vec<u8>]) -> Vec<String> {
    datagrams
        .iter()
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .collect()
}
