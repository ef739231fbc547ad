//! Connect (RFC 6062 section 5.2): a TCP allocation opens a connection from its relayed
//! address to a peer. The peer passes the same checks as a CreatePermission, and gets
//! the same permission; the answer waits for the connection (see `tcp_relay`).

use super::Server;
use super::allocation::FiveTuple;
use super::error::RequestError;
use super::request::Reply;
use super::tcp_relay::{CONNECT_TIMEOUT, State};
use super::{Event, MAX_QUEUED};
use crate::proto::Request;
use crate::proto::scan::Scan;
use std::time::Instant;

impl Server {
    pub(super) fn handle_connect(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        scan: &Scan,
        req: &Request,
    ) -> Result<Reply, RequestError> {
        // Section 5.2: no allocation on this connection is a 437.
        let id = self.active_allocation(&tuple)?;
        let a = self.table.get(id).ok_or(RequestError::AllocationMismatch)?;
        // A UDP allocation has no connections to make (coturn answers 403; nothing in
        // RFC 6062 names a code, and the request is simply not applicable).
        if !a.tcp {
            return Err(RequestError::BadRequest);
        }
        // Section 5.2: XOR-PEER-ADDRESS is required.
        let Some(&peer) = req.peers.first() else {
            return Err(RequestError::BadRequest);
        };
        // The family (443) and the peer policy (403), as for CreatePermission.
        self.check_requested_peer(now, id, peer)?;
        // Section 5.2: a connection to this peer being made, or made and not closed,
        // is a 446.
        if self.connection_to(id, peer) {
            return Err(RequestError::ConnectionAlreadyExists);
        }
        let a = self.table.get(id).ok_or(RequestError::AllocationMismatch)?;
        if a.connections.len() >= self.cfg.max_tcp_relay_connections || self.events_full() {
            return Err(RequestError::InsufficientCapacity);
        }
        // The peer gets a permission as CreatePermission would give it (RFC 8656
        // section 10.2), within max-permissions and new-peer-rate: peers may then
        // connect back, and the Connect is no way around either cap.
        let new_peer = !a.has_permission(peer.ip());
        if new_peer && a.permissions.len() >= self.cfg.max_permissions {
            return Err(RequestError::InsufficientCapacity);
        }
        // The peer's family is the relay's (checked above): a TCP allocation has one.
        let local = a
            .relays
            .for_peer(peer.ip())
            .ok_or(RequestError::PeerAddressFamilyMismatch)?
            .local;
        let (txn, fingerprint) = (scan.txn, scan.fingerprint);
        self.take_new_peers(now, id, usize::from(new_peer))?;
        let conn = self
            .open_connection(
                now,
                id,
                peer,
                State::Connecting { txn, fingerprint },
                CONNECT_TIMEOUT,
            )
            .ok_or(RequestError::InsufficientCapacity)?;
        self.install_permission(now, id, peer.ip());
        self.push_event(Event::ConnectPeer {
            relay: id,
            conn,
            local,
            peer: self.peer_on_wire(peer),
        });
        Ok(Reply::Pending)
    }

    /// The event queue is at its guard: a request that needs an event is refused.
    fn events_full(&self) -> bool {
        self.events.len() >= MAX_QUEUED
    }
}
