//! End to end in this process: a real server on 127.0.0.1:0 (`common::start_server`)
//! spoken to over real sockets, by our TURN client, raw UDP and TCP, TLS and HTTP.
//!
//! - `udp`, `stream`, `dtls`: TURN over UDP, TCP, TLS and DTLS, relaying through echo
//!   peers;
//! - `tcp_relay`: TCP allocations (RFC 6062): Connect, ConnectionBind, peers connecting;
//! - `https_backend`, `proxy_protocol`: what comes before TURN on the stream listeners:
//!   the TLS port shared with an HTTPS server, PROXY headers from load balancers;
//! - `api`: the HTTP API (credentials, metrics, health, admin, the status page);
//! - `mobility`: RFC 8016 moves of an allocation between client ports and shards;
//! - `nat`: many clients behind one address setting up allocations;
//! - `operations`: sessions, drain, reload, the binary's signals;
//! - `logging`: no secret in the log (alone in a child process: it sets the global
//!   subscriber);
//! - `usage`: usage records delivered to a webhook receiver in the test;
//! - `adversarial`: every known attack on a TURN server, by family.

#[path = "../common/mod.rs"]
mod common;

mod adversarial;
mod api;
mod dtls;
mod fleet;
mod https_backend;
mod logging;
mod mobility;
mod nat;
mod operations;
mod proxy_protocol;
mod stream;
mod tcp_relay;
mod udp;
mod usage;
