//! ferroturn: a STUN/TURN relay server.
//!
//! The protocol lives in the `ferroturn-core` crate (sans-IO). This crate drives it:
//! [`config`] turns the TOML file and command-line flags into typed configuration,
//! [`net`] runs the shards (sockets, event loops), [`api`] serves HTTP, and [`control`]
//! is the operator side both reach; [`webhook`] delivers usage records. [`start`] wires
//! them together; dependencies point one way: main -> [`start`] -> {net, api} ->
//! {fleet, webhook} -> control -> [`offload`] -> config -> core.

pub mod api;
pub mod client;
pub mod config;
pub mod control;
pub mod dtls;
pub mod external;
pub mod fleet;
pub mod net;
pub mod notify;
pub mod offload;
pub mod state;
pub mod webhook;

pub use control::{Control, LogReloader, Metrics, ReloadError, ReloadReport};

use config::Config;
use control::{CertStore, ConnLimits, UsageSink};
use ferroturn_core::server::SharedState;
use state::LocalState;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

/// TURN REST credentials (for the `credentials` command and for tests).
pub mod credentials {
    pub use ferroturn_core::auth::rest::{rest_credentials, rest_password};
}

/// A running server. Dropping it stops the server and waits for its threads. It
/// dereferences to its [`Control`] (addresses, metrics, drain, sessions, reload), which
/// [`ServerHandle::control`] also hands out for signal handlers.
pub struct ServerHandle {
    control: Arc<Control>,
    fleet: Option<Arc<fleet::Fleet>>,
    /// `external-ip = "auto"`: the task that learns the public address.
    external: Option<external::Discovery>,
    // Dropped in this order: the API first, then the shards, then the watcher.
    api: Option<api::ApiServer>,
    shards: net::Shards,
    /// After the shards: it sends their last usage records.
    webhook: Option<webhook::UsageWebhook>,
    watcher: Option<JoinHandle<()>>,
}

impl std::ops::Deref for ServerHandle {
    type Target = Control;
    fn deref(&self) -> &Control {
        &self.control
    }
}

impl ServerHandle {
    /// The control side, shareable with other tasks.
    pub fn control(&self) -> Arc<Control> {
        self.control.clone()
    }

    /// The HTTP API's bound address, when `api-listen` is set.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api.as_ref().map(|a| a.addr())
    }

    /// Stops every shard and waits for them to exit (each writes the usage records of
    /// the allocations it still had), then gives the usage webhook at most
    /// [`webhook::FLUSH_TIME`] to send what is queued.
    pub fn stop(&mut self) {
        self.api = None;
        if let Some(f) = self.fleet.take() {
            f.stop();
        }
        self.external = None;
        self.shards.stop();
        if let Some(mut w) = self.webhook.take() {
            w.stop();
        }
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the server: binds every listener (errors such as a port in use come back
/// before anything runs), starts the shards, the certificate watcher and the HTTP API.
pub async fn start(mut config: Config) -> io::Result<ServerHandle> {
    control::add_host_addresses(&mut config);
    let shared: Arc<dyn SharedState> = Arc::new(LocalState::default());
    let certs = match &config.tls {
        Some(files) => Some(CertStore::load(files.clone()).map_err(io::Error::other)?),
        None => None,
    };
    let conn_limits = Arc::new(ConnLimits::new(config.streams));
    let offload = start_offload(&config)?;
    let leases = config
        .fleet
        .as_ref()
        .map(|f| Arc::new(control::Leases::new(f.fail_open)));
    // `external-ip = "auto"`: the shards start advertising the address learned now
    // (within the STUN servers' timeouts; unmapped if none answers), while the
    // configuration kept for reloads stays as written.
    let config_auto = config.external_ip_auto.clone();
    let mut running = config.clone();
    let learned_first = external::learn_first(&mut running).await;
    let (webhook, usage) = start_usage(&config)?;
    let shards = net::start(
        &running,
        shared,
        certs.as_ref(),
        &conn_limits,
        offload.as_ref(),
        leases.as_ref(),
        &usage,
    )?;
    let watcher = match &certs {
        Some(c) => Some(control::watch_certificates(c.clone(), shards.stop.clone())?),
        None => None,
    };
    let control = Arc::new(Control::new(
        config,
        shards.addrs.clone(),
        certs,
        conn_limits,
        shards.links.clone(),
        offload,
        usage,
    ));
    let fleet = fleet::Fleet::start(control.clone(), leases);
    let external = config_auto.map(|auto| external::start(control.clone(), auto, learned_first));
    let mut handle = ServerHandle {
        control,
        fleet,
        external,
        api: None,
        shards,
        webhook,
        watcher,
    };
    // On error the handle is dropped, which stops the shards.
    handle.api = api::ApiServer::start(handle.control(), handle.fleet.clone()).await?;
    Ok(handle)
}

/// Where usage records go: the log, and with `usage-webhook` the webhook's queue (its
/// thread started here).
fn start_usage(config: &Config) -> io::Result<(Option<webhook::UsageWebhook>, Arc<UsageSink>)> {
    let counters = Arc::new(control::UsageCounters::default());
    let prefix: u64 = rand::random();
    let (webhook, queue) = match &config.usage.webhook {
        Some(cfg) => {
            let (w, queue) = webhook::UsageWebhook::start(cfg, counters.clone())?;
            (Some(w), Some(queue))
        }
        None => (None, None),
    };
    Ok((webhook, Arc::new(UsageSink::new(queue, counters, prefix))))
}

/// Loads and attaches the kernel fast path as `kernel-offload` says: `None` when it is
/// off, or `auto` and the kernel, the build or the capabilities do not allow it (one log
/// line says why); an error when it is `on` and cannot start.
fn start_offload(config: &Config) -> io::Result<Option<Arc<offload::Offload>>> {
    let relay = [config.server.relay_v4, config.server.relay_v6];
    let addrs: Vec<std::net::IpAddr> = config
        .listeners
        .udp
        .iter()
        .map(|a| a.ip())
        .chain(relay.iter().flatten().map(|r| r.local))
        .collect();
    let limits = offload::Limits {
        bps_capacity: config.server.bps_capacity,
        ..offload::Limits::default()
    };
    offload::Offload::start(config.kernel_offload, &addrs, limits)
        .map(|o| o.map(Arc::new))
        .map_err(|e| io::Error::other(format!("kernel-offload = \"on\": {e}")))
}
