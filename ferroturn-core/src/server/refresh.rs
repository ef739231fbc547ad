//! Refresh (RFC 8656 section 8.2).

use super::Server;
use super::allocation::FiveTuple;
use super::deadlines::Timer;
use super::error::RequestError;
use super::request::Reply;
use crate::proto::Request;
use crate::proto::codec::ResponseAttr;
use std::time::{Duration, Instant};

impl Server {
    pub(super) fn handle_refresh(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        req: &Request,
    ) -> Result<Reply, RequestError> {
        let id = self
            .table
            .id_by_tuple(&tuple)
            .ok_or(RequestError::AllocationMismatch)?;
        let a = self
            .table
            .get_mut(id)
            .ok_or(RequestError::AllocationMismatch)?;
        if a.pending.is_some() {
            return Err(RequestError::AllocationMismatch);
        }
        // RFC 8656 section 8.2: a REQUESTED-ADDRESS-FAMILY the allocation has no relay
        // of is 443. A dual allocation's relays share one lifetime: naming either
        // family refreshes (or, with LIFETIME 0, deletes) both.
        if let Some(family) = req.requested_family {
            if !a.relays.iter().any(|r| r.family() == family) {
                return Err(RequestError::PeerAddressFamilyMismatch);
            }
        }
        if req.lifetime == Some(0) {
            self.delete_allocation(id, super::Deletion::ByClient);
            return Ok(Reply::Success(vec![ResponseAttr::Lifetime(0)]));
        }
        let lifetime = self.granted_lifetime(req.lifetime);
        let Some(a) = self.table.get_mut(id) else {
            return Err(RequestError::AllocationMismatch);
        };
        let old = a.expires;
        a.expires = now + Duration::from_secs(u64::from(lifetime));
        let expires = a.expires;
        self.deadlines
            .rearm(Some(old), expires, Timer::Allocation(id));
        Ok(Reply::Success(vec![ResponseAttr::Lifetime(lifetime)]))
    }
}
