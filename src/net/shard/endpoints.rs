//! The server transport addresses of a shard's UDP listeners, which the core knows as
//! listener ids. A listener bound to a specific address is one endpoint. One bound to a
//! wildcard address (`0.0.0.0`, `::`) is one endpoint per local address clients send to,
//! learned from each datagram's destination (IP_PKTINFO), so that an allocation's 5-tuple
//! includes the address the client used and every answer and relayed datagram toward the
//! client leaves from it: clients behind NATs and firewalls drop replies from another
//! address of the host.

use mio::net::UdpSocket;
use std::net::IpAddr;

/// At most this many learned endpoints per shard. Datagrams reach a wildcard socket only
/// at the host's own (and broadcast) addresses, so this is never reached in practice;
/// past it, answers leave with the address the routing table picks.
const MAX_LEARNED: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Endpoint {
    /// Index of the listener socket.
    socket: usize,
    /// The local address to send from; `None` for a specifically bound socket.
    local: Option<IpAddr>,
}

/// The endpoints of one shard; an endpoint's index is its listener id.
#[derive(Debug)]
pub struct Endpoints {
    /// The listener sockets first (id = socket index), then the learned ones.
    list: Vec<Endpoint>,
    wildcard: Vec<bool>,
}

impl Endpoints {
    pub fn new(listeners: &[UdpSocket]) -> Self {
        Self {
            list: (0..listeners.len())
                .map(|socket| Endpoint {
                    socket,
                    local: None,
                })
                .collect(),
            wildcard: listeners
                .iter()
                .map(|s| s.local_addr().is_ok_and(|a| a.ip().is_unspecified()))
                .collect(),
        }
    }

    /// The listener id of a datagram that arrived on listener `socket` addressed to
    /// `dst`.
    pub fn id(&mut self, socket: usize, dst: Option<IpAddr>) -> u16 {
        let (true, Some(local)) = (self.wildcard.get(socket) == Some(&true), dst) else {
            return socket as u16;
        };
        let wanted = Endpoint {
            socket,
            local: Some(local),
        };
        let learned = self.wildcard.len();
        if let Some(i) = self.list[learned..].iter().position(|e| *e == wanted) {
            return (learned + i) as u16;
        }
        if self.list.len() - learned >= MAX_LEARNED {
            return socket as u16;
        }
        self.list.push(wanted);
        (self.list.len() - 1) as u16
    }

    /// The socket index and source address of listener id `id`.
    pub fn route(&self, id: u16) -> Option<(usize, Option<IpAddr>)> {
        self.list.get(usize::from(id)).map(|e| (e.socket, e.local))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listeners_learn_one_endpoint_per_local_address() {
        let specific = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let wildcard = UdpSocket::bind("0.0.0.0:0".parse().unwrap()).unwrap();
        let mut e = Endpoints::new(&[specific, wildcard]);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        assert_eq!(
            e.id(0, Some(a)),
            0,
            "a specific listener is its own endpoint"
        );
        assert_eq!(e.id(1, None), 1);
        let (ia, ib) = (e.id(1, Some(a)), e.id(1, Some(b)));
        assert_eq!((ia, ib), (2, 3));
        assert_eq!(e.id(1, Some(a)), ia, "learned once");
        assert_eq!(e.route(ib), Some((1, Some(b))));
        assert_eq!(e.route(0), Some((0, None)));
        assert_eq!(e.route(99), None);
    }
}
