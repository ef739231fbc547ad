//! The kernel fast path's side of a shard: installs and removes the channels the core
//! names ([`Event::Offload`], [`Event::Unoffload`]) and reads their counters back for the
//! sessions list and the usage records. Each relay socket keeps its own installed channels and rate state,
//! keyed as the kernel keys them, by the relayed address: a dual allocation's channel
//! belongs to the relay of its peer's family (`OffloadChannel::relay_local`). A channel the kernel refuses (a full map, a remote destination without
//! lo forwarding) stays in user space, which relays it as before.
//!
//! [`Event::Offload`]: ferroturn_core::server::Event::Offload
//! [`Event::Unoffload`]: ferroturn_core::server::Event::Unoffload

use super::Shard;
use super::relays;
use crate::offload::{ChannelCounters, Offload, OffloadedChannel};
use ferroturn_core::server::stats::Traffic;
use ferroturn_core::server::{AllocId, OffloadChannel, Session};
use std::net::SocketAddr;

/// What the kernel relays for one allocation.
#[derive(Debug, Default)]
pub struct KernelChannels {
    /// Installed now.
    installed: Vec<OffloadedChannel>,
    /// The relayed address and `max-bps` the kernel's rate state holds for the
    /// allocation, once set: set again only when it changes (setting refills the
    /// buckets, which a second channel must not do).
    rate: Option<(SocketAddr, u64)>,
    /// Counted by channels removed since (client to peer, peer to client).
    gone: [Traffic; 2],
}

impl KernelChannels {
    /// None installed yet, `gone` relayed before (an allocation that moved shards).
    pub(super) fn carried(gone: [Traffic; 2]) -> Self {
        Self {
            gone,
            ..Self::default()
        }
    }

    /// What the kernel relayed for channels removed so far.
    pub(super) fn counted(&self) -> [Traffic; 2] {
        self.gone
    }

    /// Takes every channel, and the rate state, out of the kernel.
    fn clear(&mut self, offload: &Offload) {
        for k in self.installed.drain(..) {
            let _ = offload.remove(&k);
        }
        if let Some((relay, _)) = self.rate.take() {
            let _ = offload.remove_allocation(relay);
        }
    }
}

fn add(total: &mut [Traffic; 2], c: &ChannelCounters) {
    for (t, flow) in total.iter_mut().zip([c.up, c.down]) {
        t.packets += flow.packets;
        t.bytes += flow.bytes;
    }
}

impl Shard {
    /// The kernel's view of `ch`: the listening address the client reached stands for
    /// the server. `None` for a wildcard listener that has not learned the address.
    fn kernel_channel(&self, ch: &OffloadChannel) -> Option<OffloadedChannel> {
        let (socket, local) = self.endpoints.route(ch.tuple.listener)?;
        let bound = self.listeners.get(socket)?.local_addr().ok()?;
        let server = SocketAddr::new(local.unwrap_or(bound.ip()), bound.port());
        if server.ip().is_unspecified() || ch.relay_local.ip().is_unspecified() {
            return None;
        }
        Some(OffloadedChannel {
            client: ch.tuple.client,
            server,
            channel: ch.channel,
            relay: ch.relay_local,
            peer: ch.peer,
        })
    }

    pub(super) fn offload(&mut self, ch: &OffloadChannel) {
        let Some(offload) = self.offload.clone() else {
            return;
        };
        let Some(k) = self.kernel_channel(ch) else {
            tracing::debug!(client = %ch.tuple.client, "channel stays in user space: server address unknown");
            return;
        };
        // The relay socket the channel's datagrams use: the one of its peer's family.
        let Some(relay) = self.relay_mut(ch.relay, ch.relay_local.is_ipv6()) else {
            return;
        };
        let rate = Some((k.relay, ch.max_bps));
        let result = if relay.kernel.rate == rate {
            Ok(())
        } else {
            offload
                .set_allocation_rate(k.relay, ch.max_bps)
                .map(|()| relay.kernel.rate = rate)
        }
        .and_then(|()| offload.install(&k));
        match result {
            Ok(()) => {
                if !relay.kernel.installed.contains(&k) {
                    relay.kernel.installed.push(k);
                }
            }
            Err(e) => {
                tracing::debug!(client = %k.client, peer = %k.peer, "channel stays in user space: {e}")
            }
        }
    }

    pub(super) fn unoffload(&mut self, ch: &OffloadChannel) {
        let Some(offload) = self.offload.clone() else {
            return;
        };
        let Some(relay) = self.relay_mut(ch.relay, ch.relay_local.is_ipv6()) else {
            return;
        };
        // The same channel as installed, whatever became of the endpoint since.
        let installed = &mut relay.kernel.installed;
        let Some(i) = installed
            .iter()
            .position(|k| k.channel == ch.channel && k.client == ch.tuple.client)
        else {
            return;
        };
        let k = installed.swap_remove(i);
        if let Some(c) = offload.counters(&k) {
            add(&mut relay.kernel.gone, &c);
        }
        if let Err(e) = offload.remove(&k) {
            tracing::warn!(client = %k.client, peer = %k.peer, "kernel offload: removing a channel: {e}");
        }
    }

    /// Forgets the kernel's rate state of allocation `id`'s relay of one family (its
    /// channels are gone already: the core unoffloads them before closing the relay).
    pub(super) fn unoffload_relay(&mut self, id: AllocId, v6: bool) {
        if let (Some(offload), Some(relay)) = (self.offload.clone(), self.relay_mut(id, v6)) {
            relay.kernel.clear(&offload);
        }
    }

    /// Takes every channel of this shard out of the kernel (the shard is stopping: no
    /// allocation outlives it, in user space or in the kernel).
    pub(super) fn unoffload_everything(&mut self) {
        let Some(offload) = self.offload.clone() else {
            return;
        };
        for relay in self.relays.iter_mut().flatten() {
            relay.kernel.clear(&offload);
        }
    }

    /// Adds what the kernel relayed to each session.
    pub(super) fn add_kernel_counters(&self, sessions: &mut [Session]) {
        for s in sessions {
            s.kernel = self.kernel_relayed(s.id);
        }
    }

    /// What the kernel relayed for allocation `id` (through either relay of a dual
    /// allocation), client to peer and peer to client: its channels removed so far and
    /// those installed now.
    pub(super) fn kernel_relayed(&self, id: AllocId) -> [Traffic; 2] {
        let mut total = [Traffic::default(); 2];
        let Some(offload) = &self.offload else {
            return total;
        };
        for v6 in [false, true] {
            let Some(relay) = relays::find(&self.relays, id, v6) else {
                continue;
            };
            for (t, gone) in total.iter_mut().zip(relay.kernel.gone) {
                t.add(gone);
            }
            for k in &relay.kernel.installed {
                if let Some(c) = offload.counters(k) {
                    add(&mut total, &c);
                }
            }
        }
        total
    }
}
