//! RFC 8016 mobility between shards: what a core hands another shard leaves through that
//! shard's mailbox, and an allocation that moves takes its relay socket along, so that
//! every later packet of the allocation stays on the shard its client now reaches.
//!
//! On the shard the allocation leaves, the core's `Unoffload` events come first (the
//! kernel keys channels by the client's address), then the relay socket is taken out of
//! this event loop with the kernel's rate state; on the shard it reaches, the socket is
//! registered under the allocation's new id before the core's `Offload` events for the
//! new address are carried out. Datagrams that reach the socket meanwhile wait in its
//! receive buffer and are read at once.

use super::Shard;
use super::kernel::KernelChannels;
use super::relays::{self, Relay};
use super::token::Source;
use crate::control::{Command, MovedRelay, ShardLink};
use ferroturn_core::server::{AllocId, Handoff};
use mio::Interest;
use mio::net::UdpSocket;
use std::io;
use std::sync::Arc;
use std::time::Instant;

impl Shard {
    /// Every shard's mailbox, this one's included, by shard index.
    pub fn set_peers(&mut self, peers: Vec<Arc<ShardLink>>) {
        self.peers = peers;
    }

    /// Sends what the core hands other shards to their mailboxes.
    pub(super) fn send_handoffs(&mut self) {
        while let Some((to, handoff)) = self.core.poll_handoff() {
            let relay = match &handoff {
                Handoff::Allocation(moved) => [false, true]
                    .into_iter()
                    .filter_map(|v6| self.take_relay(moved.relay(), v6))
                    .collect(),
                _ => Vec::new(),
            };
            match self.peers.get(usize::from(to)) {
                Some(link) => link.send(Command::Handoff(handoff, relay)),
                None => tracing::error!(shard = to, "handoff for a shard that does not exist"),
            }
        }
    }

    /// Takes allocation `id`'s relay socket of one family out of this shard (its channels
    /// left the kernel already; its rate state leaves now).
    fn take_relay(&mut self, id: AllocId, v6: bool) -> Option<MovedRelay> {
        self.unoffload_relay(id, v6);
        let slot = self.relays.get_mut(relays::slot(id, v6))?;
        if slot.as_ref().is_none_or(|r| r.id != id) {
            return None;
        }
        let mut relay = slot.take()?;
        let _ = self.poll.registry().deregister(&mut relay.socket);
        Some(MovedRelay {
            socket: relay.socket.into(),
            v6,
            kernel: relay.kernel.counted(),
        })
    }

    /// A handoff from another shard; an allocation adopted here gets its relay sockets.
    pub(super) fn receive_handoff(&mut self, handoff: Handoff, relays: Vec<MovedRelay>) {
        let adopted = self.core.handle_handoff(Instant::now(), handoff);
        match adopted {
            Some(_) if relays.is_empty() => {
                tracing::error!("an allocation moved here without its relay socket")
            }
            Some(id) => {
                for relay in relays {
                    if let Err(e) = self.attach_relay(id, relay) {
                        tracing::error!(
                            "a moved allocation's relay socket cannot be registered: {e}"
                        );
                    }
                }
            }
            // Not adopted: the sockets close as they drop.
            None => {}
        }
        self.handle_events();
    }

    fn attach_relay(&mut self, id: AllocId, moved: MovedRelay) -> io::Result<()> {
        let mut socket = UdpSocket::from_std(moved.socket);
        let index = relays::slot(id, moved.v6);
        let token = Source::Relay(index).token();
        self.poll
            .registry()
            .register(&mut socket, token, Interest::READABLE)?;
        if self.relays.len() <= index {
            self.relays.resize_with(index + 1, || None);
        }
        let relay = Relay {
            id,
            socket,
            kernel: KernelChannels::carried(moved.kernel),
        };
        if let Some(mut old) = self.relays[index].replace(relay) {
            let _ = self.poll.registry().deregister(&mut old.socket);
        }
        // What arrived while the socket was between shards.
        if !self.backlog.contains(&token) {
            self.backlog.push(token);
        }
        Ok(())
    }
}
