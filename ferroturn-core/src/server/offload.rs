//! Which channels the kernel may relay by itself. The core stays the only authority: it
//! asks the I/O layer to install a channel ([`Event::Offload`]) once everything user
//! space would check on each datagram holds for the channel's whole life, and to remove
//! it ([`Event::Unoffload`]) the moment one stops holding. What the kernel path relays is
//! exactly what this path would: ChannelData of a bound channel from the allocation's own
//! 5-tuple, and datagrams from that channel's peer, within `max-bps`.
//!
//! A channel is offloaded while (see [`Server::offloadable`]):
//! - kernel offload is on (`ServerConfig::kernel_offload`, set by the driver when the
//!   program is loaded);
//! - the allocation is complete and its client is on UDP, in the family of the channel's
//!   peer (the kernel does not translate between IPv4 and IPv6, nor frames streams), and
//!   did not ask for DONT-FRAGMENT (the program does not set DF). A dual allocation's
//!   channels go through the relay of their peer's family, so only those to peers of the
//!   client's own family are offloaded, all through one relay;
//! - the channel is bound and its peer has a permission (RFC 8656 sections 9 and 12);
//! - the peer policy allows the peer by itself, without the live-relay exception for the
//!   server's own addresses (that one changes with other allocations).
//!
//! It is re-evaluated whenever one of those can change: ChannelBind, CreatePermission,
//! permission and channel expiry, allocation deletion, and reconfiguration (which also
//! re-sends offloaded channels so that a new `max-bps` applies).

use super::allocation::{AllocId, Allocation, ChannelBinding, FiveTuple, Relays, Transport};
use super::{Event, Server};
use std::net::SocketAddr;

/// A channel binding the kernel relays both ways: ChannelData from `tuple` on `channel`
/// goes to `peer` from `relay_local`, and datagrams from `peer` to `relay_local` go to
/// `tuple`'s client as ChannelData. `relay_local` is the allocation's relay of the
/// peer's family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffloadChannel {
    pub relay: AllocId,
    pub tuple: FiveTuple,
    pub channel: u16,
    /// Where the relay socket is bound (what peers' datagrams are addressed to on this
    /// host, behind any NAT of `external-ip`).
    pub relay_local: SocketAddr,
    pub peer: SocketAddr,
    /// `max-bps` for the allocation, each direction (0: unlimited).
    pub max_bps: u64,
}

/// What the kernel is told of channel `c`: it goes through the relay of its peer's
/// family (one exists: ChannelBind refuses a peer of a family without one with 443).
pub(super) fn offload_channel(
    relay: AllocId,
    tuple: FiveTuple,
    relays: &Relays,
    c: &ChannelBinding,
    max_bps: u64,
) -> OffloadChannel {
    let via = relays.for_peer(c.peer.ip()).unwrap_or(&relays.first);
    OffloadChannel {
        relay,
        tuple,
        channel: c.number,
        relay_local: via.local,
        peer: c.peer,
        max_bps,
    }
}

impl Server {
    /// Whether the kernel may relay channel `index` of `a` (see the module docs).
    fn offloadable(&self, a: &Allocation, index: usize) -> bool {
        let Some(c) = a.channels.get(index) else {
            return false;
        };
        self.cfg.kernel_offload
            && a.pending.is_none()
            && a.five_tuple.transport == Transport::Udp
            && a.five_tuple.client.is_ipv4() == c.peer.is_ipv4()
            && a.relays.for_peer(c.peer.ip()).is_some()
            && !a.dont_fragment
            && c.bound
            && a.has_permission(c.peer.ip())
            && self.cfg.policy.check(c.peer, |_| false).is_ok()
    }

    /// Installs or removes allocation `id`'s channels in the kernel as their state now
    /// says. With `resend`, channels that stay offloaded are sent again (new limits).
    pub(super) fn sync_offload(&mut self, id: AllocId, resend: bool) {
        // Without the kernel path (fixed for the server's life) nothing is offloaded.
        if !self.cfg.kernel_offload {
            return;
        }
        let Some(a) = self.table.get(id) else {
            return;
        };
        let wanted: Vec<bool> = (0..a.channels.len())
            .map(|i| self.offloadable(a, i))
            .collect();
        let max_bps = self.cfg.max_bps;
        let mut events = Vec::new();
        if let Some(a) = self.table.get_mut(id) {
            for (c, want) in a.channels.iter_mut().zip(wanted) {
                if want == c.offloaded && !(want && resend) {
                    continue;
                }
                c.offloaded = want;
                let ch = offload_channel(id, a.five_tuple, &a.relays, c, max_bps);
                events.push(if want {
                    Event::Offload(ch)
                } else {
                    Event::Unoffload(ch)
                });
            }
        }
        for e in events {
            self.push_event(e);
        }
    }

    /// Removes every offloaded channel of `a`, which is being deleted.
    pub(super) fn unoffload_all(&mut self, a: &Allocation) {
        for c in a.channels.iter().filter(|c| c.offloaded) {
            let ch = offload_channel(a.id, a.five_tuple, &a.relays, c, self.cfg.max_bps);
            self.push_event(Event::Unoffload(ch));
        }
    }

    /// Every allocation's channels, after a reconfiguration.
    pub(super) fn sync_offload_all(&mut self) {
        let ids: Vec<AllocId> = self.table.iter().map(|a| a.id).collect();
        for id in ids {
            self.sync_offload(id, true);
        }
    }

    /// The channels installed in the kernel now (for the driver's counters and tests).
    pub fn offloaded_channels(&self) -> impl Iterator<Item = (AllocId, FiveTuple, u16)> + '_ {
        self.table.iter().flat_map(|a| {
            a.channels
                .iter()
                .filter(|c| c.offloaded)
                .map(move |c| (a.id, a.five_tuple, c.number))
        })
    }
}
