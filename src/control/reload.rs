//! Configuration reload: re-read the file with the original command-line flags over it,
//! validate it whole, then hand each shard its share and report what needs a restart.

use super::{CertError, Command, Control};
use crate::config::{self, Config, ConfigError, RawConfig};
use ferroturn_core::server::{ServerConfig, SessionFilter};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// What a reload changed, and what it could not change without a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Options whose new values only take effect after a restart.
    pub needs_restart: Vec<&'static str>,
}

/// A log filter the tracing subscriber refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("log-level: {0}")]
pub struct LogFilterError(pub String);

/// Sets the log filter at run time (installed by the binary, which owns tracing).
pub type LogReloader = Box<dyn Fn(&str) -> Result<(), LogFilterError> + Send + Sync>;

/// Why a reload was refused; the running configuration stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Certificate(#[from] CertError),
    #[error(transparent)]
    LogFilter(#[from] LogFilterError),
}

/// Every address of this host is the server's own: SSH or a database on another
/// interface address must not be reachable through a relay either.
pub fn add_host_addresses(config: &mut Config) {
    match if_addrs::get_if_addrs() {
        Ok(interfaces) => config
            .server
            .policy
            .add_own(interfaces.into_iter().map(|i| i.ip())),
        Err(e) => tracing::warn!("cannot list this host's addresses for the peer policy: {e}"),
    }
}

/// The core configuration of one of `shards` shards. Limits that hold for the whole
/// server are split between them: each relays its share of `bps-capacity` and answers
/// its share of `unauthenticated-rate` (the kernel spreads one source IP's packets over
/// every shard by source port) and of `unauthenticated-total-rate`. Credit is earned and
/// spent on the shard a client's port leads to, so each keeps the whole cap.
/// `kernel_offload`: the kernel fast path runs.
pub fn shard_config(config: &Config, shards: usize, kernel_offload: bool) -> ServerConfig {
    let mut cfg = config.server.clone();
    cfg.kernel_offload = kernel_offload;
    let n = shards.max(1);
    cfg.bps_capacity = cfg.bps_capacity.div_ceil(n as u64);
    cfg.unauthenticated_rate = cfg.unauthenticated_rate.div_ceil(n as u32);
    cfg.unauthenticated_total_rate = cfg.unauthenticated_total_rate.div_ceil(n as u32);
    cfg
}

impl Control {
    /// Remembers where the configuration came from, for [`Control::reload`].
    pub fn set_config_source(&self, file: PathBuf, flags: RawConfig) {
        if let Ok(mut s) = self.source.lock() {
            *s = Some((file, flags));
        }
    }

    /// Installs the function that changes the log filter on reload.
    pub fn set_log_reloader(&self, f: LogReloader) {
        if let Ok(mut l) = self.log.lock() {
            *l = Some(f);
        }
    }

    /// Re-reads the configuration file (with the command-line flags over it, as at
    /// start) and applies it; without a file, reloads the TLS certificate only. A file
    /// that fails validation is refused as a whole: the old configuration stays, the
    /// error is returned, logged and counted.
    pub fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let source = self.source.lock().ok().and_then(|s| s.clone());
        let result = match source {
            Some((file, flags)) => config::load(Some(&file), flags)
                .map_err(ReloadError::from)
                .and_then(|config| self.apply(config)),
            None => self
                .reload_tls()
                .map(|()| ReloadReport::default())
                .map_err(ReloadError::from),
        };
        match &result {
            Ok(report) => {
                self.reloads_ok.fetch_add(1, Ordering::Relaxed);
                tracing::info!(needs_restart = ?report.needs_restart, "configuration reloaded");
            }
            Err(e) => {
                self.reloads_failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!("reload refused, the running configuration stays: {e}");
            }
        }
        result
    }

    /// Applies a validated configuration: credentials, policy, quotas, caps, lifetimes,
    /// log level and certificates now; options that need a restart are reported.
    pub fn apply(&self, mut new: Config) -> Result<ReloadReport, ReloadError> {
        add_host_addresses(&mut new);
        let old = self.config();
        let mut report = ReloadReport::default();
        let mut restart = |changed: bool, name: &'static str| {
            if changed {
                report.needs_restart.push(name);
            }
        };
        restart(old.listeners != new.listeners, "listening-ip/ports");
        restart(old.tls != new.tls, "cert/pkey paths");
        restart(old.relay_threads != new.relay_threads, "relay-threads");
        restart(
            (old.server.min_port, old.server.max_port)
                != (new.server.min_port, new.server.max_port),
            "min-port/max-port",
        );
        restart(
            (old.server.relay_v4, old.server.relay_v6)
                != (new.server.relay_v4, new.server.relay_v6),
            "relay-ip/external-ip",
        );
        restart(
            old.external_ip_auto != new.external_ip_auto,
            "external-ip-stun-servers/interval",
        );
        restart(old.streams != new.streams, "tcp limits");
        restart(old.front != new.front, "https-backend/proxy-protocol-from");
        restart(old.kernel_offload != new.kernel_offload, "kernel-offload");
        restart(old.usage != new.usage, "usage-webhook options");
        restart(
            (old.api.listen, old.api.tls) != (new.api.listen, new.api.tls),
            "api-listen/api-tls",
        );
        restart(old.busy_poll != new.busy_poll, "busy-poll-us");
        restart(
            (old.socket_recv_buffer_size, old.socket_send_buffer_size)
                != (new.socket_recv_buffer_size, new.socket_send_buffer_size),
            "socket buffer sizes",
        );
        self.reload_tls()?;
        if new.log_level != old.log_level {
            if let Some(f) = self.log.lock().ok().as_ref().and_then(|l| l.as_ref()) {
                f(&new.log_level)?;
            }
        }
        if let Some(offload) = &self.offload {
            if old.server.bps_capacity != new.server.bps_capacity {
                if let Err(e) = offload.set_capacity(new.server.bps_capacity) {
                    tracing::error!("kernel offload: bps-capacity stays as it was: {e}");
                }
            }
        }
        self.reconfigure_shards(&new);
        if let Ok(mut c) = self.config.write() {
            *c = Arc::new(new);
        }
        Ok(report)
    }

    /// Hands every shard its share of `config`, with the user store's credentials and
    /// the revocations added.
    fn reconfigure_shards(&self, config: &Config) {
        let mut cfg = shard_config(config, self.shards.len(), self.offload.is_some());
        let store = self
            .store
            .lock()
            .ok()
            .and_then(|s| s.clone())
            .unwrap_or_default();
        let mut revoked = self.revocations();
        revoked.extend(store.revoked.iter().cloned());
        cfg.credentials = cfg
            .credentials
            .with_store(&store.secrets, &store.users, &revoked);
        if cfg.alternate_server.is_none() {
            cfg.alternate_server = self.fleet_alternate.lock().ok().and_then(|a| *a);
        }
        for s in &self.shards {
            s.send(Command::Reconfigure(Box::new(cfg.clone())));
        }
    }

    /// Refuses `user` (every REST username of it too) until `until` (unix seconds) and
    /// ends its allocations on this node; returns how many. None when the list is full.
    pub fn revoke(&self, user: &str, until: u64) -> Option<usize> {
        {
            let mut list = self.revoked.lock().ok()?;
            let now = super::unix_now();
            list.retain(|_, t| *t > now);
            if list.len() >= MAX_REVOCATIONS && !list.contains_key(user) {
                return None;
            }
            let at = list.entry(user.to_owned()).or_insert(until);
            *at = (*at).max(until);
        }
        self.reconfigure_shards(&self.config());
        Some(self.end_sessions(
            SessionFilter::User(user.to_owned()),
            ferroturn_core::server::Deletion::Revoked,
        ))
    }

    /// Takes `user` off this node's revocation list; false if it was not on it.
    pub fn lift_revocation(&self, user: &str) -> bool {
        let removed = self
            .revoked
            .lock()
            .map(|mut l| l.remove(user).is_some())
            .unwrap_or(false);
        if removed {
            self.reconfigure_shards(&self.config());
        }
        removed
    }

    /// This node's revocations still in force: user and until (unix seconds).
    pub fn revocations(&self) -> Vec<(String, u64)> {
        let now = super::unix_now();
        let mut list: Vec<(String, u64)> = self
            .revoked
            .lock()
            .map(|l| {
                l.iter()
                    .filter(|(_, t)| **t > now)
                    .map(|(u, t)| (u.clone(), *t))
                    .collect()
            })
            .unwrap_or_default();
        list.sort();
        list
    }

    /// Where a draining node sends new allocations when `alternate-server` is not set: a
    /// live node of the fleet, or none. Nothing is sent to the shards when it did not
    /// change.
    pub fn set_fleet_alternate(&self, alternate: Option<std::net::SocketAddr>) {
        {
            let Ok(mut current) = self.fleet_alternate.lock() else {
                return;
            };
            if *current == alternate {
                return;
            }
            *current = alternate;
        }
        self.reconfigure_shards(&self.config());
    }

    /// Every revocation in force here: this node's and the user store's (the fleet's),
    /// the later time where both name a user.
    pub fn all_revocations(&self) -> Vec<(String, u64)> {
        let now = super::unix_now();
        let mut all = self.revocations();
        if let Some(store) = self.store.lock().ok().and_then(|s| s.clone()) {
            all.extend(store.revoked.into_iter().filter(|(_, t)| *t > now));
        }
        all.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        all.dedup_by(|a, b| a.0 == b.0);
        all
    }

    /// Replaces the users and REST secrets of the user store (the fleet's Redis, in
    /// coturn's schema): they serve new authentications at once, beside the configured
    /// ones, and survive reloads. Nothing is sent when they did not change.
    pub fn set_store_credentials(&self, store: StoreCredentials) {
        {
            let Ok(mut current) = self.store.lock() else {
                return;
            };
            if current.as_ref() == Some(&store) {
                return;
            }
            *current = Some(store);
        }
        self.reconfigure_shards(&self.config());
    }
}

/// At most this many users on a node's revocation list.
pub const MAX_REVOCATIONS: usize = 100_000;

/// Users (name and long-term key), REST secrets and revocations from a user store.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StoreCredentials {
    pub secrets: Vec<String>,
    pub users: Vec<(String, ferroturn_core::auth::credentials::Key)>,
    /// Users refused until a time (unix seconds).
    pub revoked: Vec<(String, u64)>,
}

impl std::fmt::Debug for StoreCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "StoreCredentials({} secrets, {} users, {} revoked)",
            self.secrets.len(),
            self.users.len(),
            self.revoked.len()
        )
    }
}
