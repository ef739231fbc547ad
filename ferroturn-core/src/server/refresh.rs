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
        let found = self.table.id_by_tuple(&tuple);
        // RFC 8016 section 3.2.2: a ticket must be this allocation's (405 with mobility
        // off, whether or not there is one).
        self.check_own_ticket(now, found, req)?;
        let id = found.ok_or(RequestError::AllocationMismatch)?;
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
            self.delete_allocation(now, id, super::Deletion::ByClient);
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
        let mut attrs = vec![ResponseAttr::Lifetime(lifetime)];
        // RFC 8016 section 3.2: every Refresh of a mobile allocation gets a fresh ticket.
        attrs.extend(
            self.fresh_ticket(id, expires)
                .map(ResponseAttr::MobilityTicket),
        );
        Ok(Reply::Success(attrs))
    }
}
