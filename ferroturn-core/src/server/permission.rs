//! CreatePermission (RFC 8656 section 10) and the permission bookkeeping shared with
//! ChannelBind.

use super::Server;
use super::allocation::{AllocId, FiveTuple, Permission};
use super::deadlines::Timer;
use super::error::RequestError;
use super::rate::Rate;
use super::request::Reply;
use crate::proto::Request;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

impl Server {
    pub(super) fn handle_create_permission(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        req: &Request,
    ) -> Result<Reply, RequestError> {
        let id = self.active_allocation(&tuple)?;
        if req.peers.is_empty() {
            return Err(RequestError::BadRequest);
        }
        // All or nothing (RFC 8656 section 10.2): check every peer before installing any.
        for peer in &req.peers {
            self.check_requested_peer(now, id, *peer)?;
        }
        let a = self.table.get(id).ok_or(RequestError::AllocationMismatch)?;
        let mut new_ips: Vec<IpAddr> = req
            .peers
            .iter()
            .map(|p| p.ip())
            .filter(|ip| !a.has_permission(*ip))
            .collect();
        new_ips.dedup();
        if a.permissions.len() + new_ips.len() > self.cfg.max_permissions {
            return Err(RequestError::InsufficientCapacity);
        }
        self.take_new_peers(now, id, new_ips.len())?;
        for peer in &req.peers {
            self.install_permission(now, id, peer.ip());
        }
        // A bound channel whose permission had lapsed may go back to the kernel.
        self.sync_offload(id, false);
        Ok(Reply::Success(Vec::new()))
    }

    /// The allocation on `tuple`, which must be complete.
    pub(super) fn active_allocation(&self, tuple: &FiveTuple) -> Result<AllocId, RequestError> {
        let id = self
            .table
            .id_by_tuple(tuple)
            .ok_or(RequestError::AllocationMismatch)?;
        match self.table.get(id) {
            Some(a) if a.pending.is_none() => Ok(id),
            _ => Err(RequestError::AllocationMismatch),
        }
    }

    /// A peer named in a request: of a family the allocation has a relay of (443: RFC
    /// 8656 sections 10.2 and 12.2; a dual allocation takes either) and allowed by the
    /// peer policy (403).
    pub(super) fn check_requested_peer(
        &self,
        now: Instant,
        id: AllocId,
        peer: SocketAddr,
    ) -> Result<(), RequestError> {
        let a = self.table.get(id).ok_or(RequestError::AllocationMismatch)?;
        if a.relays.for_peer(peer.ip()).is_none() {
            return Err(RequestError::PeerAddressFamilyMismatch);
        }
        self.cfg.policy.check(peer, |addr| self.shared.is_relay(addr)).map_err(|why| {
            if self.noisy.allow(now) {
                tracing::info!(client = %a.five_tuple.client, %peer, ?why, "peer refused by policy");
            }
            RequestError::Forbidden
        })
    }

    /// `new-peer-rate`: an allocation may add only so many peer addresses per second, so
    /// it cannot sweep a network through the relay. Over the rate: 508.
    pub(super) fn take_new_peers(
        &mut self,
        now: Instant,
        id: AllocId,
        n: usize,
    ) -> Result<(), RequestError> {
        let per_sec = u64::from(self.cfg.new_peer_rate);
        if n == 0 || per_sec == 0 {
            return Ok(());
        }
        let a = self
            .table
            .get_mut(id)
            .ok_or(RequestError::AllocationMismatch)?;
        if a.new_peers
            .take(Rate::new(per_sec, 2 * per_sec), n as u64, now)
        {
            Ok(())
        } else {
            self.stats.peer_rate_refused += 1;
            if self.noisy.allow(now) {
                tracing::info!(client = %a.five_tuple.client, "new peers over new-peer-rate");
            }
            Err(RequestError::InsufficientCapacity)
        }
    }

    /// Installs or refreshes the permission for `ip` (RFC 8656 section 10.2).
    pub(super) fn install_permission(&mut self, now: Instant, id: AllocId, ip: IpAddr) {
        let expires = now + self.cfg.permission_lifetime;
        let Some(a) = self.table.get_mut(id) else {
            return;
        };
        let old = match a.permissions.iter_mut().find(|p| p.ip == ip) {
            Some(p) => Some(std::mem::replace(&mut p.expires, expires)),
            None => {
                a.permissions.push(Permission { ip, expires });
                None
            }
        };
        self.deadlines
            .rearm(old, expires, Timer::Permission(id, ip));
    }
}
