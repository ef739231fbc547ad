//! The node registry: every second each node writes what a client or an operator needs
//! to pick it (addresses, URIs, load, drain state) under `ferroturn:node:<name>`,
//! expiring after [`NODE_TTL`]; a node that stops or dies leaves the list by itself.
//! Each node then reads the list back: the credentials endpoint hands out the URIs of
//! the nodes that are not draining, least loaded first, and a draining node sends new
//! allocations to the least loaded other one (300 Try Alternate with ALTERNATE-SERVER).

use super::{Fleet, FleetError};
use crate::control::{Control, Metrics};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PREFIX: &str = "ferroturn:node:";
/// How often a node writes its entry.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// How long an entry outlives its last write.
const NODE_TTL: Duration = Duration::from_secs(5);
/// At most this many nodes are read (SCAN's page hint and the list's bound).
const MAX_NODES: usize = 1024;

/// One node as the registry shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub udp: Vec<String>,
    pub tcp: Vec<String>,
    pub tls: Vec<String>,
    /// What the credentials endpoint hands out for this node (`turn:` / `turns:` URIs).
    pub uris: Vec<String>,
    pub allocations: u64,
    /// Relayed bits per second, both directions, over the last second.
    pub relayed_bps: u64,
    pub draining: bool,
    /// Unix seconds of the write.
    pub updated: u64,
}

impl NodeInfo {
    /// The node `control` runs, named `name`, with its metrics `m`.
    pub fn of(control: &Control, name: &str, m: &Metrics, relayed_bps: u64) -> NodeInfo {
        let list = |a: &[std::net::SocketAddr]| a.iter().map(|a| a.to_string()).collect();
        NodeInfo {
            name: name.to_owned(),
            udp: list(control.udp_addrs()),
            tcp: list(control.tcp_addrs()),
            tls: list(control.tls_addrs()),
            uris: control.turn_uris(&control.config()),
            allocations: m.gauges.allocations,
            relayed_bps,
            draining: m.draining,
            updated: crate::control::unix_now(),
        }
    }
}

/// Writes this node's entry every second for as long as the node runs.
pub(super) async fn run(fleet: Arc<Fleet>) {
    let mut last: Option<(Instant, u64)> = None;
    let mut tick = tokio::time::interval(PUBLISH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (info, bytes) = describe(&fleet, &mut last);
        last = Some((Instant::now(), bytes));
        let Ok(text) = serde_json::to_string(&info) else {
            continue;
        };
        let key = format!("{PREFIX}{}", fleet.node);
        let written = fleet
            .call(|mut c| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(text)
                    .arg("PX")
                    .arg(NODE_TTL.as_millis() as u64)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await;
        if written.is_ok() {
            if let Ok(nodes) = list(&fleet).await {
                keep_alternate(&fleet, &nodes);
                if let Ok(mut cached) = fleet.nodes.write() {
                    *cached = nodes;
                }
            }
        }
    }
}

/// Where new allocations go while this node drains: the least loaded other node that is
/// not draining (its first UDP address), unless `alternate-server` is configured. Kept
/// current while the node serves, so that a drain redirects from its first moment.
fn keep_alternate(fleet: &Fleet, nodes: &[NodeInfo]) {
    let alternate = nodes
        .iter()
        .filter(|n| !n.draining && n.name != fleet.node)
        .find_map(|n| n.udp.iter().find_map(|a| a.parse().ok()));
    fleet.control.set_fleet_alternate(alternate);
}

/// This node now, and the relayed byte count the next rate is measured from.
fn describe(fleet: &Fleet, last: &mut Option<(Instant, u64)>) -> (NodeInfo, u64) {
    let control = &fleet.control;
    let m = control.metrics();
    let bytes: u64 = m.relayed_traffic().iter().map(|t| t.bytes).sum();
    let relayed_bps = match last {
        Some((at, before)) => {
            let secs = at.elapsed().as_secs_f64().max(0.001);
            ((bytes.saturating_sub(*before) as f64 * 8.0) / secs) as u64
        }
        None => 0,
    };
    let info = NodeInfo::of(control, &fleet.node, &m, relayed_bps);
    (info, bytes)
}

/// The live nodes, those not draining first, then by allocations and relayed rate.
pub(super) async fn list(fleet: &Fleet) -> Result<Vec<NodeInfo>, FleetError> {
    let texts: Vec<Option<String>> = fleet
        .call(|mut c| async move {
            let mut keys = super::scan(&mut c, &format!("{PREFIX}*"), MAX_NODES).await?;
            keys.truncate(MAX_NODES);
            super::mget(&mut c, &keys).await
        })
        .await?;
    let mut nodes: Vec<NodeInfo> = texts
        .into_iter()
        .flatten()
        .filter_map(|t| serde_json::from_str(&t).ok())
        .collect();
    nodes.sort_by_key(|n| (n.draining, n.allocations, n.relayed_bps, n.name.clone()));
    Ok(nodes)
}
