//! ChannelBind (RFC 8656 section 12.2).

use super::Server;
use super::allocation::{ChannelBinding, FiveTuple};
use super::deadlines::Timer;
use super::error::RequestError;
use super::request::Reply;
use crate::proto::Request;
use crate::proto::data::{CHANNEL_MAX, CHANNEL_MIN};
use std::time::Instant;

impl Server {
    pub(super) fn handle_channel_bind(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        req: &Request,
    ) -> Result<Reply, RequestError> {
        let id = self.active_allocation(&tuple)?;
        let (Some(number), Some(&peer)) = (req.channel, req.peers.first()) else {
            return Err(RequestError::BadRequest);
        };
        // RFC 6062: a TCP allocation relays through connections, never over channels.
        if self.table.get(id).is_some_and(|a| a.tcp) {
            return Err(RequestError::BadRequest);
        }
        if !(CHANNEL_MIN..=CHANNEL_MAX).contains(&number) {
            return Err(RequestError::BadRequest);
        }
        self.check_requested_peer(now, id, peer)?;
        let a = self.table.get(id).ok_or(RequestError::AllocationMismatch)?;
        // The number is bound (or cooling down) to another peer, or the peer to another
        // number: 400 (RFC 8656 section 12.2).
        if a.channel_by_number(number).is_some_and(|c| c.peer != peer)
            || a.channel_by_peer(peer).is_some_and(|c| c.number != number)
        {
            return Err(RequestError::BadRequest);
        }
        let is_new = a.channel_by_number(number).is_none();
        if is_new && a.channels.len() >= self.cfg.max_channels {
            return Err(RequestError::InsufficientCapacity);
        }
        let new_peer = !a.has_permission(peer.ip());
        if new_peer && a.permissions.len() >= self.cfg.max_permissions {
            return Err(RequestError::InsufficientCapacity);
        }
        self.take_new_peers(now, id, usize::from(new_peer))?;
        let expires = now + self.cfg.channel_lifetime;
        let Some(a) = self.table.get_mut(id) else {
            return Err(RequestError::AllocationMismatch);
        };
        let old = match a.channels.iter_mut().find(|c| c.number == number) {
            Some(c) => {
                c.bound = true;
                Some(std::mem::replace(&mut c.expires, expires))
            }
            None => {
                a.channels.push(ChannelBinding {
                    number,
                    peer,
                    expires,
                    bound: true,
                    offloaded: false,
                });
                None
            }
        };
        self.deadlines
            .rearm(old, expires, Timer::Channel(id, number));
        // Binding a channel installs or refreshes the peer's permission.
        self.install_permission(now, id, peer.ip());
        self.sync_offload(id, false);
        Ok(Reply::Success(Vec::new()))
    }
}
