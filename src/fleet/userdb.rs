//! Users and REST secrets kept in Redis in coturn's own redis-userdb schema, so a coturn
//! deployment moves over with its user database:
//! - `turn/realm/<realm>/user/<name>/key`: the hex long-term key, MD5(name:realm:password);
//! - `turn/realm/<realm>/secret`: a set of TURN REST secrets.
//!
//! They are read every [`EVERY`] and added to the configured users and secrets (a name
//! configured in the file keeps its configured key), so a user written into Redis
//! authenticates within seconds and one removed stops authenticating new allocations
//! (existing allocations keep the key they were made with, as on a reload).
//!
//! The fleet's revocation list is read with them: the hash `ferroturn:revoked` (user to
//! unix time). A user newly on it loses its allocations on this node too.

use super::{Fleet, FleetError};
use crate::control::{MAX_REVOCATIONS, StoreCredentials};
use ferroturn_core::auth::credentials::Key;
use ferroturn_core::server::{Deletion, SessionFilter};
use std::sync::Arc;
use std::time::Duration;

/// The fleet's revocation list: a hash of user to unix time.
pub(super) const REVOKED: &str = "ferroturn:revoked";
/// How often the user database is read.
const EVERY: Duration = Duration::from_secs(2);
/// At most this many users are read; more are left out with a warning.
const MAX_USERS: usize = 100_000;
/// At most this many secrets.
const MAX_SECRETS: usize = 64;

/// Reads the user database every [`EVERY`] for as long as the node runs. While Redis is
/// away the last credentials read stay in force.
pub(super) async fn run(fleet: Arc<Fleet>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned = false;
    let mut revoked_before: Vec<String> = Vec::new();
    loop {
        tick.tick().await;
        let realm = fleet.control.config().server.credentials.realm().to_owned();
        match read(&fleet, &realm).await {
            Ok((store, truncated)) => {
                if truncated && !warned {
                    tracing::warn!(
                        "fleet: more than {MAX_USERS} users, {MAX_SECRETS} secrets or {MAX_REVOCATIONS} revocations in Redis; the rest are not used"
                    );
                }
                warned = truncated;
                let newly: Vec<String> = store
                    .revoked
                    .iter()
                    .map(|(u, _)| u.clone())
                    .filter(|u| !revoked_before.contains(u))
                    .collect();
                revoked_before = store.revoked.iter().map(|(u, _)| u.clone()).collect();
                fleet.control.set_store_credentials(store);
                end_sessions_of(&fleet, newly).await;
            }
            Err(e) => tracing::debug!("fleet: user database not read: {e}"),
        }
    }
}

/// Ends this node's allocations of `users` (newly revoked).
async fn end_sessions_of(fleet: &Fleet, users: Vec<String>) {
    if users.is_empty() {
        return;
    }
    let control = fleet.control.clone();
    let ended = tokio::task::spawn_blocking(move || {
        users
            .into_iter()
            .map(|u| control.end_sessions(SessionFilter::User(u), Deletion::Revoked))
            .sum::<usize>()
    })
    .await;
    if let Ok(n) = ended {
        if n > 0 {
            tracing::info!(sessions = n, "fleet: sessions of revoked users deleted");
        }
    }
}

/// The users and secrets of `realm`, sorted, and whether some were left out.
async fn read(fleet: &Fleet, realm: &str) -> Result<(StoreCredentials, bool), FleetError> {
    let secret_key = format!("turn/realm/{realm}/secret");
    let pattern = format!("turn/realm/{realm}/user/*/key");
    type Read = (
        Vec<String>,
        Vec<String>,
        Vec<Option<String>>,
        Vec<(String, u64)>,
    );
    let (mut secrets, keys, values, mut revoked): Read = fleet
        .call(|mut c| async move {
            let secrets: Vec<String> = redis::cmd("SMEMBERS")
                .arg(&secret_key)
                .query_async(&mut c)
                .await?;
            let revoked: Vec<(String, u64)> = redis::cmd("HGETALL")
                .arg(REVOKED)
                .query_async(&mut c)
                .await?;
            // One more than the bound, to tell that some were left out.
            let keys = super::scan(&mut c, &pattern, MAX_USERS + 1).await?;
            let values = super::mget(&mut c, &keys).await?;
            Ok((secrets, keys, values, revoked))
        })
        .await?;
    let truncated =
        keys.len() > MAX_USERS || secrets.len() > MAX_SECRETS || revoked.len() > MAX_REVOCATIONS;
    let now = crate::control::unix_now();
    revoked.retain(|(_, until)| *until > now);
    revoked.sort();
    revoked.truncate(MAX_REVOCATIONS);
    let prefix = format!("turn/realm/{realm}/user/");
    let mut users: Vec<(String, Key)> = keys
        .iter()
        .zip(values)
        .take(MAX_USERS)
        .filter_map(|(k, v)| {
            let name = k.strip_prefix(&prefix)?.strip_suffix("/key")?;
            Some((name.to_owned(), parse_key(v?.trim())?))
        })
        .filter(|(name, _)| !name.is_empty() && !name.contains('/'))
        .collect();
    users.sort();
    users.dedup_by(|a, b| a.0 == b.0);
    secrets.retain(|s| !s.is_empty());
    secrets.sort();
    secrets.truncate(MAX_SECRETS);
    Ok((
        StoreCredentials {
            secrets,
            users,
            revoked,
        },
        truncated,
    ))
}

/// A 32-digit hex key, as coturn stores it.
fn parse_key(hex: &str) -> Option<Key> {
    if hex.len() != 32 {
        return None;
    }
    let mut key = [0u8; 16];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_32_hex_digits() {
        // coturn's schema example: user gorst, realm north.gov, password hero.
        let key = parse_key("7da2270ccfa49786e0115366d3a3d14d").unwrap();
        assert_eq!(
            key,
            ferroturn_core::proto::integrity::long_term_key("gorst", "north.gov", b"hero")
        );
        assert!(parse_key("7da2270ccfa49786e0115366d3a3d14").is_none());
        assert!(parse_key("zz").is_none());
        assert!(parse_key(&"é".repeat(16)).is_none());
    }
}
