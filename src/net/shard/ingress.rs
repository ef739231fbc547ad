//! UDP receive: batches (`recvmmsg`) into a fixed ring of slots, each with
//! [`HEADROOM`] free bytes in front so the core frames relayed data in place. A slot
//! whose datagram is relayed stays taken, moved to the front of the ring, until the next
//! flush sends it.

use super::Shard;
use super::egress::{self, Sockets, StreamOut, Via};
use super::token::Source;
use ferroturn_core::proto::data::{HEADROOM, TAILROOM};
use ferroturn_core::server::{FiveTuple, Path, Transport};
use ferroturn_udp::{self as udp, BATCH, RecvMeta};
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::time::Instant;

/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;
const SLOT_LEN: usize = HEADROOM + MAX_DATAGRAM + TAILROOM;
/// Receive slots: two batches, so one batch can arrive while the last one's sends wait.
pub const SLOTS: usize = 2 * BATCH;
/// Batches taken from one socket before others get a turn.
const BUDGET: usize = 4;

/// The receive slots and the relayed datagrams waiting in them.
pub struct Slots {
    slots: Vec<Box<[u8]>>,
    /// Slots `0..taken` hold datagrams waiting in `pending`.
    taken: usize,
    pending: Vec<Pending>,
    meta: [RecvMeta; BATCH],
}

/// A relayed datagram waiting in a slot for the next flush.
#[derive(Clone, Debug)]
struct Pending {
    slot: usize,
    range: Range<usize>,
    path: Path,
}

impl Slots {
    pub fn new() -> Self {
        Self {
            slots: (0..SLOTS)
                .map(|_| vec![0u8; SLOT_LEN].into_boxed_slice())
                .collect(),
            taken: 0,
            pending: Vec::with_capacity(SLOTS),
            meta: [RecvMeta::default(); BATCH],
        }
    }

    /// The bytes of slot `slot`.
    pub fn slot(&self, slot: usize) -> &[u8] {
        self.slots.get(slot).map_or(&[], |s| &s[..])
    }

    /// Keeps slot `slot` (its `range` goes to `path` at the next flush) by moving it to
    /// the front of the free area.
    fn keep(&mut self, slot: usize, range: Range<usize>, path: Path) {
        self.slots.swap(self.taken, slot);
        self.pending.push(Pending {
            slot: self.taken,
            range,
            path,
        });
        self.taken += 1;
    }
}

impl Shard {
    /// Reads up to [`BUDGET`] batches from the UDP socket `source` names; true if it may
    /// have more.
    pub(super) fn drain_udp(&mut self, source: Source) -> bool {
        for _ in 0..BUDGET {
            let received = self.receive(source);
            // What this batch relays leaves now: a datagram waits for its own batch only,
            // never for the other sockets of the turn. Only relayed datagrams make a
            // turn busy (see `busy`): what no allocation carries buys no polling.
            self.turn_datagrams += self.slots.pending.len();
            if !self.slots.pending.is_empty() {
                self.flush_data();
            }
            match received {
                Ok(n) if n == BATCH => {}
                Ok(_) => return false,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                // ICMP errors surface on the next receive; the socket is still good.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(e) => {
                    tracing::debug!("recv failed: {e}");
                    return false;
                }
            }
        }
        true
    }

    /// One batch from the socket `source` names into the free slots, each datagram
    /// handed to the core at once.
    fn receive(&mut self, source: Source) -> io::Result<usize> {
        let fd = match source {
            Source::Relay(i) => match self.relays.get(i) {
                Some(Some(r)) => r.socket.as_raw_fd(),
                _ => return Err(io::ErrorKind::WouldBlock.into()),
            },
            Source::Listener(i) => match self.listeners.get(i) {
                Some(s) => s.as_raw_fd(),
                None => return Err(io::ErrorKind::WouldBlock.into()),
            },
            Source::DtlsListener(i) => match self.dtls.as_ref().and_then(|d| d.sockets.get(i)) {
                Some(s) => s.as_raw_fd(),
                None => return Err(io::ErrorKind::WouldBlock.into()),
            },
            _ => return Err(io::ErrorKind::WouldBlock.into()),
        };
        let start = self.slots.taken;
        let mut bufs: [&mut [u8]; BATCH] = Default::default();
        for (b, slot) in bufs.iter_mut().zip(self.slots.slots[start..].iter_mut()) {
            *b = &mut slot[HEADROOM..HEADROOM + MAX_DATAGRAM];
        }
        let free = (SLOTS - start).min(BATCH);
        let n = udp::recv_batch(fd, &mut bufs[..free], &mut self.slots.meta)?;
        let now = Instant::now();
        for i in 0..n {
            let RecvMeta { len, from, dst } = self.slots.meta[i];
            if len > MAX_DATAGRAM {
                continue;
            }
            let slot = start + i;
            let payload = HEADROOM..HEADROOM + len;
            let out = match source {
                Source::Relay(index) => self.peer_datagram(now, index, from, slot, payload),
                Source::Listener(index) => {
                    let listener = self.endpoints.id(index, dst);
                    self.client_datagram(now, listener, from, slot, payload)
                }
                Source::DtlsListener(index) => {
                    self.dtls_datagram(now, index, from, dst, slot, payload);
                    None
                }
                _ => None,
            };
            if let Some((range, path)) = out {
                self.slots.keep(slot, range, path);
            }
        }
        Ok(n)
    }

    fn client_datagram(
        &mut self,
        now: Instant,
        listener: u16,
        from: SocketAddr,
        slot: usize,
        payload: Range<usize>,
    ) -> Option<(Range<usize>, Path)> {
        let tuple = FiveTuple {
            client: from,
            listener,
            transport: Transport::Udp,
        };
        let datagram = &mut self.slots.slots[slot][payload.clone()];
        let out = self.core.handle_client_datagram(now, tuple, datagram);
        // Requests may ask for relay sockets; bind them before the next datagram.
        self.handle_events();
        out.map(|t| {
            (
                t.range.start + payload.start..t.range.end + payload.start,
                t.path,
            )
        })
    }

    fn peer_datagram(
        &mut self,
        now: Instant,
        index: usize,
        from: SocketAddr,
        slot: usize,
        payload: Range<usize>,
    ) -> Option<(Range<usize>, Path)> {
        let id = self.relays.get(index)?.as_ref()?.id;
        let out =
            self.core
                .handle_peer_datagram(now, id, from, &mut self.slots.slots[slot], payload)?;
        Some((out.range, out.path))
    }

    /// Sends every pending relayed datagram and frees the slots. Datagrams are grouped
    /// by socket and destination (order within a flow is kept); a full socket buffer
    /// drops the rest, as UDP would. Control responses of this turn go out after them.
    pub(super) fn flush_data(&mut self) {
        let slots = &mut self.slots;
        slots
            .pending
            .sort_by_key(|p| (Via::of(&p.path), egress::destination(&p.path)));
        let (pending, buffers) = (&slots.pending, &slots.slots);
        let sockets = Sockets {
            listeners: &self.listeners,
            endpoints: &self.endpoints,
            relays: &self.relays,
        };
        let mut failed = std::mem::take(&mut self.failed);
        egress::transmit(
            pending.len(),
            |i| {
                let p = &pending[i];
                (
                    Via::of(&p.path),
                    &buffers[p.slot][p.range.clone()],
                    egress::destination(&p.path),
                )
            },
            &sockets,
            &mut self.gso,
            Some(StreamOut {
                streams: &mut self.streams,
                registry: self.poll.registry(),
                failed: &mut failed,
                dtls: self.dtls.as_mut(),
            }),
        );
        self.close_failed(failed);
        self.close_failed_dtls();
        self.slots.pending.clear();
        self.slots.taken = 0;
        // Responses of this turn go out with the data, at most one turn's worth queued.
        self.send_control();
    }
}
