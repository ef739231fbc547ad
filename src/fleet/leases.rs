//! `user-quota` across the fleet: one lease per allocation in Redis, the sorted set
//! `ferroturn:leases:<user>` of `<node>:<lease>` members scored by their expiry
//! (milliseconds of Redis's own clock, so the nodes' clocks do not matter).
//!
//! Taking one is one script (expired members out, count, add if under the quota), so two
//! nodes cannot both take the last one. The node renews the leases it holds every
//! [`RENEW`]; a node that dies stops renewing, and its leases expire within
//! [`LEASE`]. While Redis does not answer, asks get `shared-state-failure`'s answer;
//! leases granted meanwhile are written at the next renewal after Redis returns.

use super::{Fleet, FleetError};
use crate::control::{Command, LeaseAsk, LeaseOp, Leases};
use ferroturn_core::server::LeaseAnswer;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How long a lease outlives its last renewal.
const LEASE: Duration = Duration::from_secs(15);
/// How often the node renews the leases it holds.
const RENEW: Duration = Duration::from_secs(5);
const KEY_PREFIX: &str = "ferroturn:leases:";

/// KEYS[1] the user's set; ARGV quota, lease milliseconds, member. 1 if taken.
const ACQUIRE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
";

/// KEYS the users' sets; ARGV lease milliseconds, then one member per key. Renews (or
/// writes again, after Redis was away) each member.
const RENEW_ALL: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ms = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + ms, ARGV[i + 1])
  redis.call('PEXPIRE', key, ms)
end
return #KEYS
";

/// Starts the lease task and the renewal task.
pub(super) fn start(fleet: Arc<Fleet>, leases: Arc<Leases>) -> Vec<JoinHandle<()>> {
    let Some(rx) = leases.take_receiver() else {
        return Vec::new();
    };
    vec![
        tokio::spawn(serve(fleet.clone(), leases.clone(), rx)),
        tokio::spawn(renew(fleet, leases)),
    ]
}

fn member(fleet: &Fleet, lease: u64) -> String {
    format!("{}:{lease:016x}", fleet.node)
}

/// Answers asks and carries out releases, in order.
async fn serve(
    fleet: Arc<Fleet>,
    leases: Arc<Leases>,
    mut rx: tokio::sync::mpsc::Receiver<LeaseOp>,
) {
    let acquire = redis::Script::new(ACQUIRE);
    while let Some(op) = rx.recv().await {
        match op {
            LeaseOp::Acquire(ask) => {
                let answer = match take(&fleet, &acquire, &ask).await {
                    Ok(true) => {
                        leases.active.insert(ask.lease, ask.user.clone());
                        LeaseAnswer::Granted
                    }
                    Ok(false) => LeaseAnswer::QuotaReached,
                    Err(e) => {
                        tracing::debug!("fleet: lease not asked: {e}");
                        leases.unanswered(ask.lease, ask.user.clone())
                    }
                };
                fleet.control.send_to_shard(
                    ask.shard,
                    Command::Lease {
                        relay: ask.relay,
                        lease: ask.lease,
                        answer,
                    },
                );
            }
            LeaseOp::Release { lease, user } => {
                let (key, m) = (format!("{KEY_PREFIX}{user}"), member(&fleet, lease));
                let _ = fleet
                    .call(|mut c| async move {
                        redis::cmd("ZREM")
                            .arg(key)
                            .arg(m)
                            .query_async::<i64>(&mut c)
                            .await
                    })
                    .await;
            }
        }
    }
}

async fn take(fleet: &Fleet, script: &redis::Script, ask: &LeaseAsk) -> Result<bool, FleetError> {
    let mut invocation = script.prepare_invoke();
    invocation
        .key(format!("{KEY_PREFIX}{}", ask.user))
        .arg(ask.quota)
        .arg(LEASE.as_millis() as u64)
        .arg(member(fleet, ask.lease));
    fleet
        .call(|mut c| async move { invocation.invoke_async::<i64>(&mut c).await })
        .await
        .map(|taken| taken == 1)
}

/// Renews every lease this node holds every [`RENEW`], in scripts of at most 500.
async fn renew(fleet: Arc<Fleet>, leases: Arc<Leases>) {
    let script = redis::Script::new(RENEW_ALL);
    let mut tick = tokio::time::interval(RENEW);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let held: Vec<(u64, String)> = leases
            .active
            .iter()
            .map(|e| (*e.key(), e.value().clone()))
            .collect();
        for chunk in held.chunks(500) {
            let mut invocation = script.prepare_invoke();
            invocation.arg(LEASE.as_millis() as u64);
            for (_, user) in chunk {
                invocation.key(format!("{KEY_PREFIX}{user}"));
            }
            for (lease, _) in chunk {
                invocation.arg(member(&fleet, *lease));
            }
            let renewed = fleet
                .call(|mut c| async move { invocation.invoke_async::<i64>(&mut c).await })
                .await;
            if let Err(e) = renewed {
                tracing::debug!("fleet: leases not renewed: {e}");
                break;
            }
        }
    }
}
