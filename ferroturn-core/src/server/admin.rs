//! What operators ask of a running shard: list and delete sessions, apply a reloaded
//! configuration without touching allocations, drain, take a learned public address.
//! Called by the I/O layer between packets, never on the packet path.

use super::allocation::{AllocId, Transport};
use super::stats::Traffic;
use super::{Server, ServerConfig};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// One allocation, as an operator sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The allocation (for the I/O layer; not shown to operators).
    pub id: AllocId,
    /// The quota owner (the user part of a REST username, or the static user).
    pub user: String,
    pub username: String,
    pub client: SocketAddr,
    pub transport: Transport,
    /// The relayed address (a dual allocation's IPv4 one).
    pub relayed: SocketAddr,
    /// A dual allocation's IPv6 relayed address (ADDITIONAL-ADDRESS-FAMILY).
    pub additional_relayed: Option<SocketAddr>,
    pub age_secs: u64,
    pub expires_in_secs: u64,
    /// Payload bytes relayed client to peer and peer to client.
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub permissions: usize,
    pub channels: usize,
    /// Channels the kernel fast path relays now.
    pub offloaded_channels: usize,
    /// RFC 6062: whether it is a TCP allocation, and its TCP peer connections now.
    pub tcp: bool,
    pub tcp_connections: usize,
    /// What the kernel fast path relayed for this allocation, client to peer and peer to
    /// client; the I/O layer fills it in (the core never sees those datagrams).
    pub kernel: [Traffic; 2],
}

/// Which sessions to delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionFilter {
    /// Every allocation of this user.
    User(String),
    /// The allocation with this relayed address (either of a dual allocation's).
    Relayed(SocketAddr),
    All,
}

impl ServerConfig {
    /// `external-ip = "auto"`: new allocations of `ip`'s family are advertised with it
    /// (the relay socket stays where it is: only what clients are told changes), and it
    /// is the server's own for the peer policy. Returns whether anything changed (false
    /// also without a relay of that family).
    pub fn set_external_ip(&mut self, ip: IpAddr) -> bool {
        let (relay, family) = match ip {
            IpAddr::V4(_) => (&mut self.relay_v4, 0),
            IpAddr::V6(_) => (&mut self.relay_v6, 1),
        };
        let Some(relay) = relay.as_mut() else {
            return false;
        };
        if relay.advertised == ip {
            return false;
        }
        relay.advertised = ip;
        let mut learned = self.policy.learned();
        learned[family] = Some(ip);
        self.policy.set_learned(learned);
        true
    }
}

impl Server {
    /// Every complete allocation of this shard.
    pub fn sessions(&self, now: Instant) -> Vec<Session> {
        self.table
            .iter()
            .filter(|a| a.pending.is_none())
            .map(|a| Session {
                id: a.id,
                user: a.user.clone(),
                username: a.username.clone(),
                client: a.five_tuple.client,
                transport: a.five_tuple.transport,
                relayed: a.relays.first.relayed,
                additional_relayed: a.relays.second.map(|r| r.relayed),
                age_secs: now.saturating_duration_since(a.created).as_secs(),
                expires_in_secs: a.expires.saturating_duration_since(now).as_secs(),
                bytes_up: a.traffic[0].bytes,
                bytes_down: a.traffic[1].bytes,
                permissions: a.permissions.len(),
                channels: a.channels.iter().filter(|c| c.bound).count(),
                offloaded_channels: a.channels.iter().filter(|c| c.offloaded).count(),
                tcp: a.tcp,
                tcp_connections: a.connections.len(),
                kernel: [Traffic::default(); 2],
            })
            .collect()
    }

    /// Ends the allocations `filter` names at `now` for `why` (an operator's delete, a
    /// revocation, the server stopping): their relay sockets close, their clients learn
    /// it on their next request (437). Returns how many.
    pub fn delete_sessions(
        &mut self,
        now: Instant,
        filter: &SessionFilter,
        why: super::Deletion,
    ) -> usize {
        let ids: Vec<AllocId> = self
            .table
            .iter()
            .filter(|a| match filter {
                SessionFilter::User(u) => &a.user == u,
                SessionFilter::Relayed(r) => a.relays.has_relayed(*r),
                SessionFilter::All => true,
            })
            .map(|a| a.id)
            .collect();
        for id in &ids {
            self.delete_allocation(now, *id, why);
        }
        ids.len()
    }

    /// Applies a reloaded configuration: credentials, peer policy, quotas, caps, rates and
    /// lifetimes for what comes next. Allocations, permissions and channels that exist
    /// keep running with what they were granted; `nonce-secret` applies to new nonces and
    /// to checks from now on. This shard's port range, relay addresses and CONNECTION-ID
    /// class stay (they need a restart).
    pub fn reconfigure(&mut self, mut cfg: ServerConfig) {
        cfg.min_port = self.cfg.min_port;
        cfg.max_port = self.cfg.max_port;
        cfg.relay_v4 = self.cfg.relay_v4;
        cfg.relay_v6 = self.cfg.relay_v6;
        cfg.policy.set_learned(self.cfg.policy.learned());
        cfg.connection_ids = self.cfg.connection_ids;
        if cfg.nonce_lifetime != self.cfg.nonce_lifetime || cfg.nonce_keys != self.cfg.nonce_keys {
            self.nonces = super::nonces(&cfg, self.nonce_key);
        }
        let limits = super::unauthenticated_limits(&cfg);
        if limits != super::unauthenticated_limits(&self.cfg) {
            self.limiter.set_limits(limits);
        }
        cfg.kernel_offload = self.cfg.kernel_offload;
        self.cfg = cfg;
        // A new peer policy or max-bps applies to what the kernel relays too.
        self.sync_offload_all();
    }

    /// `external-ip = "auto"`: `ip` is the server's public address in its family, as a
    /// STUN server saw it; see [`ServerConfig::set_external_ip`]. Allocations made
    /// before keep the address they were given and run on. Returns whether anything
    /// changed.
    pub fn set_external_ip(&mut self, ip: IpAddr) -> bool {
        if !self.cfg.set_external_ip(ip) {
            return false;
        }
        // A channel to that address, bound while it was someone else's, leaves the
        // kernel fast path.
        self.sync_offload_all();
        true
    }

    /// While draining, new allocations are refused (508) and everything else works.
    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
    }
}
