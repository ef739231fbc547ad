//! Relay sockets: one UDP socket per allocation and family (a dual allocation has an
//! IPv4 and an IPv6 one), bound when the core asks and closed together when the
//! allocation ends, kept in a slab indexed like the core's allocation table: slot
//! `2 * index` holds allocation `index`'s IPv4 socket, `2 * index + 1` its IPv6 one.

use super::Shard;
use super::kernel::KernelChannels;
use super::token::Source;
use crate::net::socket;
use ferroturn_core::server::AllocId;
use mio::Interest;
use mio::net::UdpSocket;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

/// A relay socket of allocation `id`.
pub struct Relay {
    pub id: AllocId,
    pub socket: UdpSocket,
    /// Its channels the kernel relays.
    pub kernel: KernelChannels,
}

/// The relay slot of allocation `id`'s socket of one family.
pub fn slot(id: AllocId, v6: bool) -> usize {
    (id.index as usize) * 2 + usize::from(v6)
}

/// The relay socket of `id` in the slot for `v6`, if it is still open.
pub fn find(relays: &[Option<Relay>], id: AllocId, v6: bool) -> Option<&Relay> {
    relays
        .get(slot(id, v6))
        .and_then(Option::as_ref)
        .filter(|r| r.id == id)
}

impl Shard {
    pub(super) fn bind_relay(
        &mut self,
        id: AllocId,
        local: SocketAddr,
        dont_fragment: bool,
    ) -> io::Result<()> {
        let mut socket = socket::bind_udp(local, false, self.opts)?;
        if dont_fragment {
            ferroturn_udp::set_dont_fragment(socket.as_raw_fd(), local.is_ipv6())?;
        }
        let index = slot(id, local.is_ipv6());
        self.poll.registry().register(
            &mut socket,
            Source::Relay(index).token(),
            Interest::READABLE,
        )?;
        if self.relays.len() <= index {
            self.relays.resize_with(index + 1, || None);
        }
        if let Some(mut old) = self.relays[index].replace(Relay {
            id,
            socket,
            kernel: KernelChannels::default(),
        }) {
            let _ = self.poll.registry().deregister(&mut old.socket);
        }
        Ok(())
    }

    /// The relay socket of allocation `id` of one family, if it is still open.
    pub(super) fn relay_mut(&mut self, id: AllocId, v6: bool) -> Option<&mut Relay> {
        self.relays
            .get_mut(slot(id, v6))
            .and_then(Option::as_mut)
            .filter(|r| r.id == id)
    }

    /// Closes every relay socket of allocation `id`.
    pub(super) fn close_relay(&mut self, id: AllocId) {
        for v6 in [false, true] {
            self.unoffload_relay(id, v6);
            if let Some(slot) = self.relays.get_mut(slot(id, v6)) {
                if slot.as_ref().is_some_and(|r| r.id == id) {
                    if let Some(mut r) = slot.take() {
                        let _ = self.poll.registry().deregister(&mut r.socket);
                    }
                }
            }
        }
    }
}
