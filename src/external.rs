//! `external-ip = "auto"`: the relays' public address, learned from STUN servers.
//!
//! Before the shards start, [`learn_first`] asks the configured servers, in order, with
//! a Binding request from a fresh socket of each relay family (the kernel picks the
//! source address, as for the relays' own traffic to the Internet); the first
//! XOR-MAPPED-ADDRESS that comes back is the family's public address, written into the
//! configuration the shards start with, so the first Allocate already gets it. Then
//! [`start`] hands it to [`Control`] and runs a task that asks again every
//! `external-ip-interval`, handing a change to every shard and logging it. The request
//! is our own client's ([`crate::client::TurnClient::binding`]): retransmitted over UDP
//! (250 ms, doubling) for [`QUERY_TIMEOUT`] per server; names are resolved each time,
//! within [`RESOLVE_TIMEOUT`].
//!
//! When no server answers at start, the server starts anyway, with its relays
//! advertised as they are bound (unmapped) and an error in the log, and asks again
//! every [`RETRY`] (or the interval, if shorter) until one answers: an unreachable STUN
//! server should not keep a TURN server from starting, and behind a 1:1 NAT the
//! unmapped address is wrong only until it answers. Allocations made before an address
//! is learned or changes keep the address they were given.

use crate::config::{Config, ExternalIpAuto, StunServer};
use crate::control::Control;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How long one server has to answer (three sends: at 0, 250 and 750 ms).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long resolving one server's name may take.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
/// How soon to ask again while no address has been learned.
pub const RETRY: Duration = Duration::from_secs(10);

/// The discovery task; dropping it stops it.
pub struct Discovery(JoinHandle<()>);

impl Drop for Discovery {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Learns the public address of each relay family once (bounded: every server gets
/// [`RESOLVE_TIMEOUT`] and [`QUERY_TIMEOUT`]) and advertises the relays of `config` with
/// it; returns what was learned, and from which server.
pub async fn learn_first(config: &mut Config) -> Vec<(IpAddr, SocketAddr)> {
    let Some(auto) = &config.external_ip_auto else {
        return Vec::new();
    };
    let mut learned = Vec::new();
    for v6 in relay_families(config) {
        if let Some((ip, from)) = learn(&auto.servers, v6).await {
            config.server.set_external_ip(ip);
            learned.push((ip, from));
        }
    }
    learned
}

/// Hands what [`learn_first`] learned to `control` (the shards have it already), logs
/// it, or loudly that nothing was, and starts the task that asks every interval. Needs
/// a tokio runtime.
pub fn start(
    control: Arc<Control>,
    auto: ExternalIpAuto,
    first: Vec<(IpAddr, SocketAddr)>,
) -> Discovery {
    let config = control.config();
    let families = relay_families(&config);
    for (ip, from) in &first {
        control.set_external_ip(*ip);
        tracing::info!(family = family_name(ip.is_ipv6()), address = %ip, server = %from,
            "external-ip = auto: relays are advertised with the public address learned");
    }
    let mut known = first.len() == families.len();
    if !known {
        let unmapped: Vec<String> = [config.server.relay_v4, config.server.relay_v6]
            .into_iter()
            .flatten()
            .filter(|r| {
                !first
                    .iter()
                    .any(|(ip, _)| ip.is_ipv6() == r.local.is_ipv6())
            })
            .map(|r| r.local.to_string())
            .collect();
        tracing::error!(
            servers = %list(&auto.servers),
            "external-ip = auto: no STUN server answered; relays are advertised unmapped \
             ({}) until one does",
            unmapped.join(", ")
        );
    }
    let task = tokio::spawn(async move {
        loop {
            let wait = if known {
                auto.interval
            } else {
                auto.interval.min(RETRY)
            };
            tokio::time::sleep(wait).await;
            known = learn_all(&control, &auto.servers, &families).await;
        }
    });
    Discovery(task)
}

fn family_name(v6: bool) -> &'static str {
    if v6 { "IPv6" } else { "IPv4" }
}

/// The relay families this server has: IPv4, IPv6.
fn relay_families(config: &Config) -> Vec<bool> {
    [config.server.relay_v4, config.server.relay_v6]
        .into_iter()
        .flatten()
        .map(|r| r.local.is_ipv6())
        .collect()
}

fn list(servers: &[StunServer]) -> String {
    let names: Vec<String> = servers.iter().map(|s| s.to_string()).collect();
    names.join(", ")
}

/// Asks for each family's address and hands what was learned to the shards, logging
/// the first address and every change; whether every family got an answer.
async fn learn_all(control: &Control, servers: &[StunServer], families: &[bool]) -> bool {
    let mut all = true;
    for &v6 in families {
        let family = family_name(v6);
        let Some((ip, from)) = learn(servers, v6).await else {
            all = false;
            tracing::warn!(
                family,
                servers = %list(servers),
                "external-ip = auto: no STUN server answered; the address stays as it was"
            );
            continue;
        };
        match control.set_external_ip(ip) {
            None => tracing::info!(family, address = %ip, server = %from,
                "external-ip = auto: relays are advertised with the public address learned"),
            Some(old) if old != ip => tracing::warn!(family, old = %old, new = %ip,
                server = %from,
                "external-ip = auto: the public address changed; new allocations get the new one"),
            Some(_) => tracing::debug!(family, address = %ip, "external-ip = auto: unchanged"),
        }
    }
    all
}

/// The public address of family `v6` as the first server that answers saw it, and
/// which server that was.
pub async fn learn(servers: &[StunServer], v6: bool) -> Option<(IpAddr, SocketAddr)> {
    for server in servers {
        for addr in resolve(server).await {
            if addr.is_ipv6() != v6 {
                continue;
            }
            match query(addr).await {
                Ok(ip) if usable(ip, v6) => return Some((ip, addr)),
                Ok(ip) => {
                    tracing::warn!(server = %addr, answer = %ip,
                        "the STUN server's answer cannot be a relay address; ignored");
                }
                Err(e) => tracing::debug!(server = %addr, "no answer from the STUN server: {e}"),
            }
        }
    }
    None
}

/// Whether `ip`, a STUN server's answer, can be advertised for relays of family `v6`.
fn usable(ip: IpAddr, v6: bool) -> bool {
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    ip.is_ipv6() == v6 && !ip.is_unspecified() && !ip.is_multicast() && !broadcast
}

/// `server`'s addresses (an IP address is its own), or none if the name does not
/// resolve in time.
async fn resolve(server: &StunServer) -> Vec<SocketAddr> {
    if let Ok(ip) = server.host.parse::<IpAddr>() {
        return vec![SocketAddr::new(ip, server.port)];
    }
    let lookup = tokio::net::lookup_host((server.host.as_str(), server.port));
    match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
        Ok(Ok(addrs)) => addrs.take(8).collect(),
        Ok(Err(e)) => {
            tracing::warn!(server = %server, "cannot resolve the STUN server: {e}");
            Vec::new()
        }
        Err(_) => {
            tracing::warn!(server = %server, "resolving the STUN server timed out");
            Vec::new()
        }
    }
}

/// One Binding request to `server`: the reflexive address it saw.
async fn query(server: SocketAddr) -> Result<IpAddr, crate::client::ClientError> {
    let mut client = crate::client::TurnClient::new(server, "", "").await?;
    client.request_timeout = QUERY_TIMEOUT;
    client.binding().await.map(|a| a.ip())
}
