//! A shard's DTLS sessions as the event loop sees them: each datagram from a DTLS socket
//! goes to the cookie gate or its session, each record it carries to the core as one
//! client datagram, and what the core relays toward a peer leaves at once from the
//! plaintext buffer. A session that ends takes its allocation with it.

use super::Shard;
use super::egress::{self, Sockets, Via};
use crate::net::dtls::Key;
use ferroturn_core::server::{DataTransmit, FiveTuple, Path};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::Instant;

/// Records handed to the core from one datagram, at most (a datagram holds a few).
const RECORDS_PER_DATAGRAM: usize = 64;

impl Shard {
    /// A datagram from DTLS socket `index`, in receive slot `slot`.
    pub(super) fn dtls_datagram(
        &mut self,
        now: Instant,
        index: usize,
        from: SocketAddr,
        dst: Option<IpAddr>,
        slot: usize,
        payload: Range<usize>,
    ) {
        let Some(dtls) = self.dtls.as_mut() else {
            return;
        };
        let Some(datagram) = self.slots.slot(slot).get(payload) else {
            return;
        };
        let outcome = dtls.handle_datagram(now, index, from, dst, datagram);
        if let Some(tuple) = outcome.ended {
            self.end_dtls_allocation(tuple, "session replaced or failed");
        }
        if let Some(tuple) = outcome.readable {
            self.dtls_records(now, tuple);
        }
    }

    /// Hands each application data record of the session of `tuple` to the core.
    fn dtls_records(&mut self, now: Instant, tuple: FiveTuple) {
        let key: Key = (tuple.listener, tuple.client);
        for _ in 0..RECORDS_PER_DATAGRAM {
            let Some(dtls) = self.dtls.as_mut() else {
                return;
            };
            let n = match dtls.read(key) {
                Ok(Some(n)) => n,
                Ok(None) => return,
                Err(e) => {
                    self.close_dtls(key, &e.to_string());
                    return;
                }
            };
            let Some(msg) = dtls.plain.get_mut(..n) else {
                return;
            };
            let out = self.core.handle_client_datagram(now, tuple, msg);
            // An Allocate may want a relay socket before the next record.
            self.handle_events();
            if let Some(DataTransmit {
                path: Path::Peer { relay, peer },
                range,
            }) = out
            {
                let Some(dtls) = self.dtls.as_ref() else {
                    return;
                };
                let bytes = dtls.plain.get(range).unwrap_or_default();
                let sockets = Sockets {
                    listeners: &self.listeners,
                    endpoints: &self.endpoints,
                    relays: &self.relays,
                };
                egress::transmit(
                    1,
                    |_| (Via::to_peer(relay, peer), bytes, peer),
                    &sockets,
                    &mut false,
                    None,
                );
            }
        }
    }

    /// Ends session `key` and its allocation.
    fn close_dtls(&mut self, key: Key, why: &str) {
        if let Some(tuple) = self.dtls.as_mut().and_then(|d| d.close(key)) {
            self.end_dtls_allocation(tuple, why);
        }
    }

    fn end_dtls_allocation(&mut self, tuple: FiveTuple, why: &str) {
        tracing::debug!(client = %tuple.client, "DTLS session closed: {why}");
        self.core.handle_connection_closed(Instant::now(), tuple);
        self.handle_events();
    }

    /// Closes the sessions a send failed on.
    pub(super) fn close_failed_dtls(&mut self) {
        let Some(dtls) = self.dtls.as_mut() else {
            return;
        };
        let failed = std::mem::take(&mut dtls.failed);
        for &key in &failed {
            self.close_dtls(key, "write failed");
        }
        if let Some(dtls) = self.dtls.as_mut() {
            dtls.failed = failed;
            dtls.failed.clear();
        }
    }

    /// Once a second: retransmissions, and sessions past their handshake or idle deadline.
    pub(super) fn tick_dtls(&mut self, now: Instant) {
        let Some(dtls) = self.dtls.as_mut() else {
            return;
        };
        let mut expired = Vec::new();
        let core = &self.core;
        dtls.tick(now, |t| core.relayed_address(t).is_some(), &mut expired);
        for key in expired {
            self.close_dtls(key, "handshake or idle timeout");
        }
    }
}
