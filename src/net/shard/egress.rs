//! Everything a shard sends, relayed data and control messages alike: items sorted by
//! socket and destination leave UDP sockets in `sendmmsg` calls (runs to one destination
//! as UDP GSO messages), DTLS sessions as one record per message in one `sendmmsg` per
//! session, and TCP/TLS connections in one write per connection.

use super::endpoints::Endpoints;
use super::relays::{self, Relay};
use crate::net::dtls::Dtls;
use crate::net::stream::Streams;
use ferroturn_core::server::{AllocId, Path, Transport};
use ferroturn_udp::{self as udp, SendItem};
use mio::Registry;
use mio::net::UdpSocket;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};

/// Which socket an outgoing message leaves through. The order matters: items are sorted
/// by it, so plain UDP comes first, then DTLS sessions, then TCP/TLS connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Via {
    Listener(u16),
    /// An allocation's relay socket of one family (`true`: IPv6).
    Relay(AllocId, bool),
    /// A DTLS session on this DTLS socket (the destination names which).
    Dtls(u16),
    /// A TCP/TLS connection of this stream listener (the destination names which).
    Stream(u16),
}

impl Via {
    pub fn of(path: &Path) -> Via {
        match *path {
            Path::Client {
                listener,
                transport: Transport::Udp,
                ..
            } => Via::Listener(listener),
            Path::Client {
                listener,
                transport: Transport::Dtls,
                ..
            } => Via::Dtls(listener),
            Path::Client { listener, .. } => Via::Stream(listener),
            Path::Peer { relay, peer } => Via::to_peer(relay, peer),
        }
    }

    /// The relay socket of `relay` that datagrams to `peer` leave from: the one of the
    /// peer's family.
    pub fn to_peer(relay: AllocId, peer: SocketAddr) -> Via {
        Via::Relay(relay, peer.is_ipv6())
    }
}

/// Where a message goes.
pub fn destination(path: &Path) -> SocketAddr {
    match *path {
        Path::Client { client, .. } => client,
        Path::Peer { peer, .. } => peer,
    }
}

/// The sockets messages leave through, borrowed apart from the rest of the shard.
pub struct Sockets<'a> {
    pub listeners: &'a [UdpSocket],
    pub endpoints: &'a Endpoints,
    pub relays: &'a [Option<Relay>],
}

impl Sockets<'_> {
    /// The UDP socket behind `through`, if it still exists, and the local address to
    /// send from (for a wildcard listener: the one the client sent to).
    fn fd(&self, through: Via) -> Option<(RawFd, Option<IpAddr>)> {
        match through {
            Via::Listener(id) => {
                let (socket, src) = self.endpoints.route(id)?;
                let fd = self.listeners.get(socket)?.as_raw_fd();
                Some((fd, src))
            }
            Via::Relay(id, v6) => {
                relays::find(self.relays, id, v6).map(|r| (r.socket.as_raw_fd(), None))
            }
            // Sessions and connections are written by `write_dtls` and `write_streams`.
            Via::Dtls(_) | Via::Stream(_) => None,
        }
    }
}

/// Where the DTLS and stream parts of a send go, and what they report back.
pub struct StreamOut<'a> {
    pub streams: &'a mut Streams,
    pub registry: &'a Registry,
    /// Connections whose write failed, to be closed by the caller.
    pub failed: &'a mut Vec<usize>,
    /// DTLS sessions (those whose write failed land in `Dtls::failed`).
    pub dtls: Option<&'a mut Dtls>,
}

/// Sends `n` messages, `item(i)` naming each one's socket, bytes and destination; the
/// items are sorted by (socket, destination), so runs share a socket, and DTLS sessions
/// then connections come last. UDP runs leave in `sendmmsg` calls, GSO for runs to one
/// destination while `gso` holds (cleared if the kernel refuses GSO); a full socket
/// buffer drops the rest of a run, as UDP would. Messages for DTLS sessions and frames
/// for connections are written with `streams` when given.
pub fn transmit<'a>(
    n: usize,
    item: impl Fn(usize) -> (Via, &'a [u8], SocketAddr),
    sockets: &Sockets<'_>,
    gso: &mut bool,
    streams: Option<StreamOut<'_>>,
) {
    let first_dtls = partition_point(n, |i| {
        matches!(item(i).0, Via::Listener(_) | Via::Relay(..))
    });
    let first_stream = partition_point(n, |i| !matches!(item(i).0, Via::Stream(_)));
    send_runs(first_dtls, &item, sockets, gso);
    if let Some(mut out) = streams {
        if let Some(dtls) = out.dtls.as_deref_mut() {
            write_dtls(first_dtls..first_stream, &item, dtls);
        }
        if first_stream < n {
            write_streams(first_stream..n, &item, out);
        }
    }
}

/// The DTLS part of [`transmit`]: messages for one session are consecutive; each becomes
/// one record, and the session's records leave in one `sendmmsg`.
fn write_dtls<'a>(
    range: std::ops::Range<usize>,
    item: &impl Fn(usize) -> (Via, &'a [u8], SocketAddr),
    dtls: &mut Dtls,
) {
    for_each_session(range, item, |through, client, run| {
        if let Via::Dtls(listener) = through {
            dtls.send((listener, client), run.map(|k| item(k).1));
        }
    });
}

/// Calls `f` for each run of consecutive items of `range` with the same way out and
/// client (one DTLS session, one stream connection), with the run's item indexes.
fn for_each_session<'a>(
    range: std::ops::Range<usize>,
    item: &impl Fn(usize) -> (Via, &'a [u8], SocketAddr),
    mut f: impl FnMut(Via, SocketAddr, std::ops::Range<usize>),
) {
    let mut i = range.start;
    while i < range.end {
        let (through, _, client) = item(i);
        let mut end = i + 1;
        while end < range.end && {
            let (v, _, c) = item(end);
            v == through && c == client
        } {
            end += 1;
        }
        f(through, client, i..end);
        i = end;
    }
}

/// The first `i` in `0..n` for which `before(i)` is false (`before` holds for a prefix).
fn partition_point(n: usize, before: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if before(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// The UDP part of [`transmit`]: items `0..n`.
fn send_runs<'a>(
    n: usize,
    item: &impl Fn(usize) -> (Via, &'a [u8], SocketAddr),
    sockets: &Sockets<'_>,
    gso: &mut bool,
) {
    let mut i = 0;
    while i < n {
        let (through, _, _) = item(i);
        let route = sockets.fd(through);
        let src = route.and_then(|(_, src)| src);
        let mut m = 1;
        while i + m < n && m < udp::MAX_ITEMS && item(i + m).0 == through {
            m += 1;
        }
        if let Some((fd, _)) = route {
            let mut sent = 0;
            while sent < m {
                let at = i + sent;
                let each = |k: usize| {
                    let (_, bytes, to) = item(at + k);
                    SendItem { bytes, to, src }
                };
                match udp::send_each(fd, m - sent, each, *gso) {
                    Ok(0) => break,
                    Ok(k) => sent += k,
                    Err(e) if *gso && udp::is_gso_refusal(&e) => {
                        tracing::info!("UDP GSO unavailable ({e}); sending datagrams one by one");
                        *gso = false;
                    }
                    // Over the path MTU on a DONT-FRAGMENT relay (RFC 8656 section 18.9):
                    // that datagram is dropped, the ones after it still go.
                    Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => sent += 1,
                    Err(e) => {
                        tracing::trace!("send failed: {e}");
                        break;
                    }
                }
            }
        }
        i += m;
    }
}

/// The stream part of [`transmit`]: frames for one connection are consecutive and go
/// out in one write. Connections whose write fails land in `out.failed`.
fn write_streams<'a>(
    range: std::ops::Range<usize>,
    item: &impl Fn(usize) -> (Via, &'a [u8], SocketAddr),
    out: StreamOut<'_>,
) {
    for_each_session(range, item, |through, client, run| {
        if let Via::Stream(listener) = through {
            if let Some(index) = out.streams.index_of(listener, client) {
                if !out
                    .streams
                    .write(index, run.map(|k| item(k).1), out.registry)
                {
                    out.failed.push(index);
                }
            }
        }
    });
}
