//! The data path: ChannelData and Send indications from clients, datagrams from peers.
//! No allocation, no copy, no lock: lookups are a slab index or one hash of the 5-tuple,
//! and headers are written into the caller's buffer around the payload.

use super::allocation::{FiveTuple, Transport};
use super::rate::{Bucket, Rate};
use super::{AllocId, DataTransmit, Path, Server};
use crate::proto::data;
use crate::proto::scan::Scan;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Instant;

impl Server {
    /// RFC 8656 section 12.6: ChannelData on a bound channel goes to its peer; anything
    /// else is dropped.
    pub(super) fn relay_channel_data(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        buf: &[u8],
    ) -> Option<DataTransmit> {
        let (number, payload) = data::parse_channel_data(buf)?;
        let id = self.table.id_by_tuple(&tuple)?;
        let a = self.table.get(id)?;
        let channel = a.channel_by_number(number).filter(|c| c.bound)?;
        let peer = channel.peer;
        self.peer_allowed(peer)?;
        self.within_bandwidth(now, id, true, payload.len())?;
        self.stats.relayed(tuple.transport, true, payload.len());
        Some(DataTransmit {
            path: Path::Peer {
                relay: id,
                peer: self.peer_on_wire(peer),
            },
            range: payload,
        })
    }

    /// RFC 8656 section 11.2: a Send indication goes to its peer only with a permission for
    /// the peer's IP (and so a relay of its family); otherwise it is dropped. So is one
    /// with an unknown comprehension-required attribute (RFC 8489 section 6.3.2), and one
    /// with DONT-FRAGMENT on an allocation whose Allocate did not ask for DF: its socket
    /// does not set the DF bit, and section 11.2 treats that DONT-FRAGMENT as unknown.
    pub(super) fn relay_send_indication(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        buf: &[u8],
        scan: &Scan,
    ) -> Option<DataTransmit> {
        if !scan.unknown().is_empty() {
            return None;
        }
        let (peer, payload) = data::parse_send_indication(buf, scan)?;
        let id = self.table.id_by_tuple(&tuple)?;
        let a = self.table.get(id)?;
        // RFC 6062 section 5: a TCP allocation relays through its connections only.
        if a.pending.is_some()
            || a.tcp
            || (scan.dont_fragment && !a.dont_fragment)
            || a.relays.for_peer(peer.ip()).is_none()
            || !a.has_permission(peer.ip())
        {
            return None;
        }
        self.peer_allowed(peer)?;
        self.within_bandwidth(now, id, true, payload.len())?;
        self.stats.relayed(tuple.transport, true, payload.len());
        Some(DataTransmit {
            path: Path::Peer {
                relay: id,
                peer: self.peer_on_wire(peer),
            },
            range: payload,
        })
    }

    /// The peer policy on the data path: a refused peer's datagram is dropped and
    /// counted.
    #[inline]
    pub(super) fn peer_allowed(&mut self, peer: SocketAddr) -> Option<()> {
        if self
            .cfg
            .policy
            .check(peer, |addr| self.shared.is_relay(addr))
            .is_ok()
        {
            Some(())
        } else {
            self.stats.policy_denied += 1;
            None
        }
    }

    /// Takes `bytes` from the allocation's bucket for the direction (`up`: client to
    /// peer) and from the shard's; `None` (drop, counted) if either is empty. What
    /// passes is counted on the allocation (its usage record).
    #[inline]
    fn within_bandwidth(
        &mut self,
        now: Instant,
        id: AllocId,
        up: bool,
        bytes: usize,
    ) -> Option<()> {
        let (per_alloc, total) = (self.cfg.max_bps, self.cfg.bps_capacity);
        let bytes = bytes as u64;
        let a = self.table.get_mut(id)?;
        let (bucket, shard): (&mut Bucket, &mut Bucket) = if up {
            (&mut a.bw_up, &mut self.total_up)
        } else {
            (&mut a.bw_down, &mut self.total_down)
        };
        if (per_alloc == 0 && total == 0)
            || (bucket.take(Rate::new(per_alloc, per_alloc), bytes, now)
                && shard.take(Rate::new(total, total), bytes, now))
        {
            a.traffic[usize::from(!up)].count(bytes);
            Some(())
        } else {
            self.stats.bandwidth_dropped += 1;
            None
        }
    }

    /// A datagram from `from` on one of `relay`'s sockets (a dual allocation's two both
    /// reach its client), its payload at `payload` in `buf` with
    /// [`data::HEADROOM`] bytes free in front and [`data::TAILROOM`] behind. RFC 8656
    /// section 11.3 / 12.7: relayed only with a permission, as ChannelData when a channel
    /// is bound to the peer, else as a Data indication.
    pub fn handle_peer_datagram(
        &mut self,
        now: Instant,
        relay: AllocId,
        from: SocketAddr,
        buf: &mut [u8],
        payload: Range<usize>,
    ) -> Option<DataTransmit> {
        let peer = self.peer_as_advertised(from);
        let a = self.table.get(relay)?;
        if !a.has_permission(peer.ip()) {
            return None;
        }
        let tuple = a.five_tuple;
        let channel = a
            .channel_by_peer(peer)
            .filter(|c| c.bound)
            .map(|c| c.number);
        self.peer_allowed(peer)?;
        self.within_bandwidth(now, relay, false, payload.len())?;
        self.stats.relayed(tuple.transport, false, payload.len());
        let range = match channel {
            Some(number) => {
                data::frame_channel_data(buf, payload, number, tuple.transport == Transport::Tcp)?
            }
            None => {
                let txn = self.next_indication_txn();
                data::frame_data_indication(buf, payload, peer, &txn)?
            }
        };
        Some(DataTransmit {
            path: Path::Client {
                listener: tuple.listener,
                client: tuple.client,
                transport: tuple.transport,
            },
            range,
        })
    }

    /// Transaction ids of Data indications: a counter over a random base, unique and
    /// unguessable enough for an indication.
    pub(super) fn next_indication_txn(&mut self) -> [u8; 12] {
        let mut counter = [0u8; 8];
        counter.copy_from_slice(&self.indication_txn[..8]);
        let next = u64::from_be_bytes(counter).wrapping_add(1);
        self.indication_txn[..8].copy_from_slice(&next.to_be_bytes());
        self.indication_txn
    }

    /// A peer named by a client as the socket address to send to: an advertised
    /// (external) relay address of this server maps to the local one.
    #[inline]
    pub(super) fn peer_on_wire(&self, peer: SocketAddr) -> SocketAddr {
        for r in [self.cfg.relay_v4, self.cfg.relay_v6].into_iter().flatten() {
            if r.local != r.advertised && peer.ip() == r.advertised {
                return SocketAddr::new(r.local, peer.port());
            }
        }
        peer
    }

    /// The inverse of [`Server::peer_on_wire`] for datagrams arriving at relay sockets.
    #[inline]
    pub(super) fn peer_as_advertised(&self, from: SocketAddr) -> SocketAddr {
        for r in [self.cfg.relay_v4, self.cfg.relay_v6].into_iter().flatten() {
            if r.local != r.advertised && from.ip() == r.local {
                return SocketAddr::new(r.advertised, from.port());
            }
        }
        from
    }
}
