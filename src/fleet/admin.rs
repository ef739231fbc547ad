//! Admin actions that reach every node: a session deletion made on one node is published
//! on `ferroturn:admin` and carried out by the others (the node it was made on has done
//! it already, and skips its own message).

use super::{Fleet, FleetError, RETRY};
use crate::control::Control;
use ferroturn_core::server::{Deletion, SessionFilter};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;

/// The pub/sub channel of admin actions.
pub const CHANNEL: &str = "ferroturn:admin";

/// One admin action as published.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Message {
    /// The node that published it (and has carried it out).
    origin: String,
    delete: Delete,
    /// The deletion ends a revoked user's allocations (their usage records say
    /// `revoked`, not `operator`); absent in messages of nodes from before it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    revoked: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Delete {
    User(String),
    Relayed(SocketAddr),
    All,
}

impl From<SessionFilter> for Delete {
    fn from(f: SessionFilter) -> Self {
        match f {
            SessionFilter::User(u) => Delete::User(u),
            SessionFilter::Relayed(r) => Delete::Relayed(r),
            SessionFilter::All => Delete::All,
        }
    }
}

impl From<Delete> for SessionFilter {
    fn from(d: Delete) -> Self {
        match d {
            Delete::User(u) => SessionFilter::User(u),
            Delete::Relayed(r) => SessionFilter::Relayed(r),
            Delete::All => SessionFilter::All,
        }
    }
}

/// Publishes a deletion for the other nodes (`revoked`: of a revoked user's
/// allocations).
pub(super) async fn publish_delete(
    fleet: &Fleet,
    filter: SessionFilter,
    revoked: bool,
) -> Result<(), FleetError> {
    let message = Message {
        origin: fleet.node.clone(),
        delete: filter.into(),
        revoked,
    };
    let text =
        serde_json::to_string(&message).map_err(|e| FleetError::Unreadable(e.to_string()))?;
    fleet
        .call(|mut c| async move {
            redis::cmd("PUBLISH")
                .arg(CHANNEL)
                .arg(text)
                .query_async::<i64>(&mut c)
                .await
        })
        .await
        .map(|_| ())
}

/// Listens on the admin channel for as long as the node runs, resubscribing after
/// Redis comes back.
pub(super) async fn subscribe(fleet: Arc<Fleet>) {
    loop {
        if let Err(e) = listen(&fleet).await {
            tracing::debug!("fleet: admin channel: {e}");
        }
        tokio::time::sleep(RETRY).await;
    }
}

async fn listen(fleet: &Fleet) -> Result<(), FleetError> {
    let mut pubsub = fleet.client.get_async_pubsub().await?;
    pubsub.subscribe(CHANNEL).await?;
    let mut messages = pubsub.on_message();
    while let Some(m) = messages.next().await {
        let Ok(text) = m.get_payload::<String>() else {
            continue;
        };
        match serde_json::from_str::<Message>(&text) {
            Ok(m) if m.origin != fleet.node => {
                let why = if m.revoked {
                    Deletion::Revoked
                } else {
                    Deletion::ByOperator
                };
                carry_out(&fleet.control, m.delete, why).await
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("fleet: an unreadable admin message was ignored: {e}"),
        }
    }
    Ok(())
}

async fn carry_out(control: &Arc<Control>, delete: Delete, why: Deletion) {
    let control = control.clone();
    let filter = SessionFilter::from(delete);
    let what = format!("{filter:?}");
    match tokio::task::spawn_blocking(move || control.end_sessions(filter, why)).await {
        Ok(n) => {
            tracing::info!(sessions = n, filter = %what, "fleet: sessions deleted at another node's request")
        }
        Err(e) => tracing::error!("fleet: deleting sessions failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_back_as_written() {
        for delete in [
            Delete::User("alice".into()),
            Delete::Relayed("127.0.0.1:50000".parse().unwrap()),
            Delete::All,
        ] {
            for revoked in [false, true] {
                let m = Message {
                    origin: "a/127.0.0.1:3478".into(),
                    delete: delete.clone(),
                    revoked,
                };
                let text = serde_json::to_string(&m).unwrap();
                assert_eq!(serde_json::from_str::<Message>(&text).unwrap(), m);
            }
        }
        assert!(serde_json::from_str::<Message>("{\"origin\":\"x\"}").is_err());
        // A message from a node that knows nothing of revocations reads as a deletion.
        let old = "{\"origin\":\"x\",\"delete\":\"all\"}";
        assert!(!serde_json::from_str::<Message>(old).unwrap().revoked);
    }
}
