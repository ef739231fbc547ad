//! A fleet: several ferroturn servers as one service, coordinated through Redis (or
//! Valkey, which speaks the same protocol).
//!
//! What stays on each node: allocations, permissions, channels and relay sockets (a
//! client's 5-tuple keeps it on one node). What Redis carries:
//! - the node registry: each node writes its addresses, load and drain state under
//!   `ferroturn:node:<name>` every second with a 5-second expiry, so a node that dies
//!   leaves the list within 5 seconds ([`registry`]);
//! - admin actions: a session deletion on any node is published on `ferroturn:admin` and
//!   carried out by every node ([`admin`]);
//! - the user database in coturn's own redis-userdb schema, read every 2 seconds and
//!   added to the configured users and secrets ([`userdb`]);
//! - `user-quota` across the fleet: a lease per allocation ([`leases`]).
//!
//! Nothing on the relay path waits for Redis: these tasks run on the API's tokio runtime
//! and reach the shards only through [`Control`], as an operator would. When Redis is
//! away, nodes serve on with what they have; `ferroturn_fleet_redis_up` says so, and
//! every task picks up again when it returns.

mod admin;
mod leases;
mod registry;
mod userdb;

pub use registry::NodeInfo;

use crate::control::{Control, Leases};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;

/// How long one Redis round trip may take before it counts as a failure.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause before trying again after Redis failed.
const RETRY: Duration = Duration::from_secs(1);

/// Why a fleet operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("Redis is not connected yet")]
    NotConnected,
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis answered something unreadable: {0}")]
    Unreadable(String),
}

/// This node's link to the fleet. Dropping it stops its tasks.
pub struct Fleet {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    node: String,
    control: Arc<Control>,
    up: AtomicBool,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    /// The registry as last read (every second), least loaded first.
    nodes: std::sync::RwLock<Vec<NodeInfo>>,
}

impl Fleet {
    /// Starts the fleet's tasks on the current tokio runtime. Redis need not be up: the
    /// tasks connect when it is.
    pub fn start(control: Arc<Control>, leases: Option<Arc<Leases>>) -> Option<Arc<Fleet>> {
        let cfg = control.config().fleet.clone()?;
        let client = match redis::Client::open(cfg.redis.as_str()) {
            Ok(c) => c,
            Err(e) => {
                // Checked when the configuration was read; kept as a log line, not a panic.
                tracing::error!("fleet: the redis URL is unusable: {e}");
                return None;
            }
        };
        let node = cfg.node.unwrap_or_else(|| default_node_name(&control));
        let fleet = Arc::new(Fleet {
            client,
            conn: OnceCell::new(),
            node,
            control,
            up: AtomicBool::new(false),
            tasks: std::sync::Mutex::new(Vec::new()),
            nodes: std::sync::RwLock::new(Vec::new()),
        });
        let mut tasks = vec![
            tokio::spawn(registry::run(fleet.clone())),
            tokio::spawn(admin::subscribe(fleet.clone())),
            tokio::spawn(userdb::run(fleet.clone())),
        ];
        if let Some(leases) = leases {
            tasks.extend(leases::start(fleet.clone(), leases));
        }
        if let Ok(mut t) = fleet.tasks.lock() {
            *t = tasks;
        }
        tracing::info!(node = %fleet.node, "fleet: this node joins through Redis");
        Some(fleet)
    }

    /// Stops the tasks (the node's registry entry expires by itself).
    pub fn stop(&self) {
        if let Ok(mut t) = self.tasks.lock() {
            for task in t.drain(..) {
                task.abort();
            }
        }
    }

    /// This node's name in the registry.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether the last round trip to Redis succeeded.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The connection, once one was made (it reconnects by itself after that).
    async fn conn(&self) -> Result<ConnectionManager, FleetError> {
        let made = self
            .conn
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_number_of_retries(1);
                ConnectionManager::new_with_config(self.client.clone(), config).await
            })
            .await;
        match made {
            Ok(c) => Ok(c.clone()),
            Err(e) => {
                self.set_up(false, Some(&e));
                Err(FleetError::Redis(e))
            }
        }
    }

    /// Records whether Redis answered; a change is logged once and shown in /metrics.
    fn set_up(&self, up: bool, error: Option<&redis::RedisError>) {
        let was = self.up.swap(up, Ordering::Relaxed);
        self.control.set_fleet_redis_up(up);
        match (was, up) {
            (false, true) => tracing::info!("fleet: Redis answers"),
            (true, false) => tracing::warn!(
                "fleet: Redis does not answer ({}); serving on with this node's own state",
                error.map(|e| e.to_string()).unwrap_or_default()
            ),
            _ => {}
        }
    }

    /// Runs `f` against Redis, recording whether it answered.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, FleetError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.conn().await?;
        match f(conn).await {
            Ok(v) => {
                self.set_up(true, None);
                Ok(v)
            }
            Err(e) => {
                self.set_up(false, Some(&e));
                Err(FleetError::Redis(e))
            }
        }
    }

    /// The live nodes of the fleet, least loaded first, read from Redis now.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, FleetError> {
        registry::list(self).await
    }

    /// The live nodes as the registry task last read them (at most a second ago, or
    /// from before Redis stopped answering): no Redis round trip.
    pub fn live_nodes(&self) -> Vec<NodeInfo> {
        self.nodes.read().map(|n| n.clone()).unwrap_or_default()
    }

    /// Deletes the sessions `filter` names on every node: here at once (the count is
    /// returned), on the others through Redis.
    pub async fn delete_sessions(
        &self,
        filter: ferroturn_core::server::SessionFilter,
    ) -> Result<(), FleetError> {
        admin::publish_delete(self, filter, false).await
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The keys matching `pattern`, at least `limit` of them when there are that many (SCAN
/// stops once it has them).
async fn scan(
    c: &mut ConnectionManager,
    pattern: &str,
    limit: usize,
) -> redis::RedisResult<Vec<String>> {
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(c)
            .await?;
        keys.extend(page);
        cursor = next;
        if cursor == 0 || keys.len() >= limit {
            return Ok(keys);
        }
    }
}

/// The values of `keys` (None where a key is gone), in pages of 1000.
async fn mget(
    c: &mut ConnectionManager,
    keys: &[String],
) -> redis::RedisResult<Vec<Option<String>>> {
    let mut values = Vec::with_capacity(keys.len());
    for page in keys.chunks(1000) {
        let got: Vec<Option<String>> = redis::cmd("MGET").arg(page).query_async(c).await?;
        values.extend(got);
    }
    Ok(values)
}

impl Fleet {
    /// Puts `user` on the fleet's revocation list until `until` (unix seconds) and tells
    /// every node to end its allocations now (they also read the list every 2 s).
    pub async fn revoke(&self, user: &str, until: u64) -> Result<(), FleetError> {
        let (key, field) = (userdb::REVOKED, user.to_owned());
        self.call(|mut c| async move {
            redis::cmd("HSET")
                .arg(key)
                .arg(field)
                .arg(until)
                .query_async::<i64>(&mut c)
                .await
        })
        .await?;
        let user = ferroturn_core::server::SessionFilter::User(user.to_owned());
        admin::publish_delete(self, user, true).await
    }

    /// Takes `user` off the fleet's revocation list.
    pub async fn lift_revocation(&self, user: &str) -> Result<(), FleetError> {
        let (key, field) = (userdb::REVOKED, user.to_owned());
        self.call(|mut c| async move {
            redis::cmd("HDEL")
                .arg(key)
                .arg(field)
                .query_async::<i64>(&mut c)
                .await
        })
        .await
        .map(|_| ())
    }
}

/// The host name and the first bound listening address: unique per node, stable
/// across restarts.
fn default_node_name(control: &Control) -> String {
    let host = crate::control::host_name();
    let addr = control
        .udp_addrs()
        .iter()
        .chain(control.tcp_addrs())
        .chain(control.tls_addrs())
        .next()
        .map(|a| a.to_string())
        .unwrap_or_default();
    format!("{host}/{addr}")
}
