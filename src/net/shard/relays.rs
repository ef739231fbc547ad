//! Relay sockets: one UDP socket per allocation, bound when the core asks and closed when
//! the allocation ends, kept in a slab indexed like the core's allocation table.

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

/// The relay socket of allocation `id`.
pub struct Relay {
    pub id: AllocId,
    pub socket: UdpSocket,
    /// Its channels the kernel relays.
    pub kernel: KernelChannels,
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
        let index = id.index as usize;
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

    /// The relay of allocation `id`, if it is still open.
    pub(super) fn relay_mut(&mut self, id: AllocId) -> Option<&mut Relay> {
        self.relays
            .get_mut(id.index as usize)
            .and_then(Option::as_mut)
            .filter(|r| r.id == id)
    }

    pub(super) fn close_relay(&mut self, id: AllocId) {
        self.unoffload_relay(id);
        if let Some(slot) = self.relays.get_mut(id.index as usize) {
            if slot.as_ref().is_some_and(|r| r.id == id) {
                if let Some(mut r) = slot.take() {
                    let _ = self.poll.registry().deregister(&mut r.socket);
                }
            }
        }
    }
}
