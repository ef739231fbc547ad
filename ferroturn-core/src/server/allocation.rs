//! The allocation table (RFC 8656 section 6): allocations keyed by their 5-tuple, each
//! with its relayed address (two, one per family, for a dual allocation), permissions
//! and channel bindings.

use super::rate::Bucket;
use super::stats::Traffic;
use super::tcp_relay::ConnectionId;
use crate::auth::credentials::Key;
use crate::proto::codec::Family;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// Identifies an allocation and its relay socket. The generation makes a stale id (an
/// allocation that has since been deleted and its slot reused) miss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllocId {
    pub index: u32,
    pub generation: u32,
}

/// Index of a listener socket, assigned by the I/O driver.
pub type ListenerId = u16;

/// The client-side transport of a 5-tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    /// TCP or TLS over TCP: a byte stream (ChannelData is padded, RFC 8656 section 12.5).
    Tcp,
    /// DTLS over UDP (RFC 7350): each record carries one message, as a UDP datagram does.
    Dtls,
}

/// RFC 8656 section 2 (5-tuple): the client's address, the server address it reached (named by
/// the listener that received it) and the transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    pub client: SocketAddr,
    pub listener: ListenerId,
    pub transport: Transport,
}

/// RFC 8656 section 9: a permission for one peer IP address (any port).
#[derive(Clone, Copy, Debug)]
pub struct Permission {
    pub ip: IpAddr,
    pub expires: Instant,
}

/// RFC 8656 section 12: a channel binding. After it expires it cools down (`bound` false)
/// for 5 minutes during which neither its number nor its peer may be rebound elsewhere.
#[derive(Clone, Copy, Debug)]
pub struct ChannelBinding {
    pub number: u16,
    pub peer: SocketAddr,
    pub expires: Instant,
    pub bound: bool,
    /// Installed in the kernel fast path (see `server::offload`).
    pub offloaded: bool,
}

/// One relayed transport address of an allocation (RFC 8656 section 2) and where its
/// socket is bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Relay {
    /// Where the relay socket is bound.
    pub local: SocketAddr,
    /// The address clients are told (`external-ip`).
    pub relayed: SocketAddr,
}

impl Relay {
    pub fn family(&self) -> Family {
        if self.local.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

/// An allocation's relays: one, or for a dual allocation (ADDITIONAL-ADDRESS-FAMILY, RFC
/// 8656 section 7.2) one per family. Never none, never two of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Relays {
    /// The relay of a single-family allocation; a dual allocation's IPv4 relay.
    pub first: Relay,
    /// A dual allocation's IPv6 relay.
    pub second: Option<Relay>,
}

impl Relays {
    pub fn one(relay: Relay) -> Self {
        Self {
            first: relay,
            second: None,
        }
    }

    /// The relay of `ip`'s family, if the allocation has one (RFC 8656 section 9.1:
    /// otherwise a peer of that family gets 443).
    #[inline]
    pub fn for_peer(&self, ip: IpAddr) -> Option<&Relay> {
        self.iter().find(|r| r.local.is_ipv4() == ip.is_ipv4())
    }

    pub fn iter(&self) -> impl Iterator<Item = &Relay> {
        std::iter::once(&self.first).chain(self.second.as_ref())
    }

    /// Whether `addr` is one of the relayed addresses clients were told.
    pub fn has_relayed(&self, addr: SocketAddr) -> bool {
        self.iter().any(|r| r.relayed == addr)
    }
}

/// Waiting for the I/O layer to bind the relay sockets: the first relay's, then (a dual
/// allocation) the second's, each asked for after the previous answer.
#[derive(Clone, Debug)]
pub struct PendingAllocate {
    pub lifetime: u32,
    pub fingerprint: bool,
    pub even: bool,
    /// EVEN-PORT's R bit: the next port is held too, and handed out by token.
    pub reserve: bool,
    /// Binds tried for the relay being bound.
    pub attempts: u8,
    /// The outstanding bind is the second relay's (the first one's socket is bound).
    pub binding_second: bool,
    /// RFC 8656 section 18.12: the family of a dual Allocate that could not be
    /// allocated, and why (440 or 508), for ADDRESS-ERROR-CODE in the success.
    pub address_error: Option<(Family, u16)>,
    /// Waiting for the fleet's lease (`user-quota` across nodes) before any bind.
    pub waiting_lease: bool,
}

#[derive(Debug)]
pub struct Allocation {
    pub id: AllocId,
    /// Its lease in the fleet's store (`user-quota` across nodes), once asked for.
    pub lease: Option<u64>,
    pub five_tuple: FiveTuple,
    /// The USERNAME that created it; later requests must use the same (441).
    pub username: String,
    /// The quota owner (the user part of a REST username).
    pub user: String,
    pub key: Key,
    /// RFC 8656 section 18.9: DONT-FRAGMENT was in the Allocate; the relay socket sets DF.
    pub dont_fragment: bool,
    /// RFC 6062: a TCP allocation (REQUESTED-TRANSPORT 6); its relay is a listening TCP
    /// socket and its data flows over TCP connections, never as datagrams.
    pub tcp: bool,
    /// Its TCP peer connections (at most `max-tcp-relay-connections`).
    pub connections: Vec<ConnectionId>,
    /// The token of the port it reserved (EVEN-PORT with R), if it did.
    pub reservation: Option<[u8; 8]>,
    /// Its relay sockets: where they are bound, and the addresses clients are told.
    pub relays: Relays,
    /// RFC 8016: the Allocate asked for a MOBILITY-TICKET, so Refreshes carry fresh ones.
    pub mobile: bool,
    /// How many times it moved to a new 5-tuple; a ticket names the epoch it was issued
    /// in, so one from before a move no longer works.
    pub epoch: u16,
    pub expires: Instant,
    pub pending: Option<PendingAllocate>,
    /// RFC 8656 section 7.2: a retransmitted Allocate gets the original success.
    pub allocate_txn: [u8; 12],
    pub allocate_response: Vec<u8>,
    /// The last response on this allocation, for retransmitted requests.
    pub last_response: Option<([u8; 12], Vec<u8>)>,
    pub permissions: Vec<Permission>,
    pub channels: Vec<ChannelBinding>,
    /// `max-bps` buckets: client to peer, peer to client.
    pub bw_up: Bucket,
    pub bw_down: Bucket,
    /// `new-peer-rate` bucket.
    pub new_peers: Bucket,
    /// When its Allocate arrived, and from the success on, when it was granted (its
    /// lifetime and usage record count from there).
    pub created: Instant,
    /// Packets and payload bytes relayed in user space: client to peer, peer to client
    /// (for a TCP allocation, the reads of its connections). Its usage record.
    pub traffic: [Traffic; 2],
}

impl Allocation {
    #[inline]
    pub fn has_permission(&self, ip: IpAddr) -> bool {
        self.permissions.iter().any(|p| p.ip == ip)
    }

    #[inline]
    pub fn channel_by_number(&self, number: u16) -> Option<&ChannelBinding> {
        self.channels.iter().find(|c| c.number == number)
    }

    #[inline]
    pub fn channel_by_peer(&self, peer: SocketAddr) -> Option<&ChannelBinding> {
        self.channels.iter().find(|c| c.peer == peer)
    }
}

struct Slot {
    generation: u32,
    alloc: Option<Allocation>,
}

/// Allocations in a slab (stable ids, no per-packet hashing on the peer side) plus a
/// 5-tuple index for the client side.
#[derive(Default)]
pub struct Table {
    slots: Vec<Slot>,
    free: Vec<u32>,
    by_tuple: HashMap<FiveTuple, AllocId>,
}

impl Table {
    /// The id the next insert will use.
    pub fn next_id(&self) -> AllocId {
        match self.free.last() {
            Some(&index) => AllocId {
                index,
                generation: self.slots[index as usize].generation,
            },
            None => AllocId {
                index: self.slots.len() as u32,
                generation: 0,
            },
        }
    }

    /// Inserts an allocation whose `id` came from [`Table::next_id`].
    pub fn insert(&mut self, alloc: Allocation) {
        let id = alloc.id;
        self.by_tuple.insert(alloc.five_tuple, id);
        match self.free.last() {
            Some(&index) if index == id.index => {
                self.free.pop();
                self.slots[index as usize].alloc = Some(alloc);
            }
            _ => self.slots.push(Slot {
                generation: id.generation,
                alloc: Some(alloc),
            }),
        }
    }

    #[inline]
    pub fn get(&self, id: AllocId) -> Option<&Allocation> {
        let slot = self.slots.get(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.alloc.as_ref()
    }

    #[inline]
    pub fn get_mut(&mut self, id: AllocId) -> Option<&mut Allocation> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.alloc.as_mut()
    }

    #[inline]
    pub fn id_by_tuple(&self, t: &FiveTuple) -> Option<AllocId> {
        self.by_tuple.get(t).copied()
    }

    /// Moves allocation `id` to `tuple` (RFC 8016 mobility); false, and nothing changed,
    /// if `id` is gone or another allocation has `tuple`.
    pub fn retuple(&mut self, id: AllocId, tuple: FiveTuple) -> bool {
        if self.by_tuple.contains_key(&tuple) {
            return false;
        }
        let Some(a) = self.get_mut(id) else {
            return false;
        };
        let old = std::mem::replace(&mut a.five_tuple, tuple);
        self.by_tuple.remove(&old);
        self.by_tuple.insert(tuple, id);
        true
    }

    pub fn remove(&mut self, id: AllocId) -> Option<Allocation> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        let alloc = slot.alloc.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.index);
        self.by_tuple.remove(&alloc.five_tuple);
        Some(alloc)
    }

    pub fn len(&self) -> usize {
        self.by_tuple.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Allocation> {
        self.slots.iter().filter_map(|s| s.alloc.as_ref())
    }

    pub fn is_empty(&self) -> bool {
        self.by_tuple.is_empty()
    }
}
