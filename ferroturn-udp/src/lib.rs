//! Batched UDP I/O for the server and its load tools: `recvmmsg` and `sendmmsg` over
//! non-blocking sockets, one system call for many datagrams, and UDP GSO (`UDP_SEGMENT`)
//! for runs of datagrams to one destination. This crate holds all of ferroturn's unsafe
//! socket code (quinn-udp is the model).
//!
//! Two ways in, over the same calls:
//!
//! - [`recv_batch`] and [`send_segmented`] work on buffers the caller already has (the
//!   server's slot ring): [`RecvMeta`] and [`SendItem`] describe each datagram.
//! - [`Slots`] owns a fixed set of equal-sized buffers with one length, address and
//!   truncation flag each: a datagram received into a slot can be sent back (an echo) or
//!   on (after [`Slots::set_addr`]) without a copy, and sends fall back by themselves
//!   when the kernel refuses GSO.
//!
//! Message headers live on the stack of each call; nothing is allocated per datagram or
//! per batch.

mod cmsg;
mod mmsg;
mod slots;
mod sockaddr;
#[cfg(feature = "uring")]
pub mod uring;

pub use cmsg::{enable_destination_address, enable_receive_timestamps, set_dont_fragment};
pub use slots::{Slots, Wait};

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;

/// The most datagrams one [`recv_batch`] call receives, and the most messages one
/// [`send_segmented`] call hands the kernel.
pub const BATCH: usize = 32;
/// The most segments in one GSO send (the kernel's UDP_MAX_SEGMENTS).
pub const MAX_SEGMENTS: usize = 64;
/// The most datagrams one [`send_segmented`] call moves, and the most slots a [`Slots`]
/// has.
pub const MAX_ITEMS: usize = 64;

/// Where a received datagram came from, where it was sent to, and how long it is.
#[derive(Clone, Copy, Debug)]
pub struct RecvMeta {
    pub len: usize,
    pub from: SocketAddr,
    /// The local address the datagram was sent to, on a socket that asked for it with
    /// [`enable_destination_address`] (a wildcard listener); `None` otherwise.
    pub dst: Option<IpAddr>,
}

impl Default for RecvMeta {
    fn default() -> Self {
        Self {
            len: 0,
            from: SocketAddr::from(([0, 0, 0, 0], 0)),
            dst: None,
        }
    }
}

/// One datagram to send.
#[derive(Clone, Copy, Debug)]
pub struct SendItem<'a> {
    pub bytes: &'a [u8],
    pub to: SocketAddr,
    /// The local address to send from (IP_PKTINFO / IPV6_PKTINFO), for a socket bound to
    /// a wildcard address; `None`: the one the routing table picks.
    pub src: Option<IpAddr>,
}

/// Receives up to `min(bufs.len(), BATCH)` datagrams, each into its own buffer. Returns
/// how many arrived (at least 1) or an error (`WouldBlock` when none was waiting).
/// Datagrams longer than their buffer are truncated by the kernel and reported with
/// `len` larger than the buffer; callers drop those.
pub fn recv_batch(fd: RawFd, bufs: &mut [&mut [u8]], meta: &mut [RecvMeta]) -> io::Result<usize> {
    let n = bufs.len().min(meta.len());
    let bufs = bufs[..n].iter_mut().map(|b| &mut **b);
    mmsg::recv::<BATCH>(fd, bufs, libc::MSG_DONTWAIT, |i, r| {
        meta[i] = RecvMeta {
            len: if r.truncated { usize::MAX } else { r.len },
            from: r.from.unwrap_or(meta[i].from),
            dst: r.dst,
        };
    })
}

/// Sends `items` with `sendmmsg`, one message per run of consecutive items to the same
/// destination and source whose lengths are equal (the last of a run may be shorter): such a run
/// leaves as a single UDP GSO message (`UDP_SEGMENT`), which the kernel splits into
/// datagrams at the last possible moment. `gso` false sends one message per item.
/// Returns how many items the kernel took.
pub fn send_segmented(fd: RawFd, items: &[SendItem<'_>], gso: bool) -> io::Result<usize> {
    send_each(fd, items.len(), |i| items[i], gso)
}

/// [`send_segmented`] of the `count` items `item(0)`, `item(1)`, ... (at most
/// [`MAX_ITEMS`]), for a caller whose datagrams are not in a slice: nothing is gathered
/// into a table first.
pub fn send_each<'a>(
    fd: RawFd,
    count: usize,
    item: impl Fn(usize) -> SendItem<'a>,
    gso: bool,
) -> io::Result<usize> {
    let datagram = |i: usize| {
        let it = item(i);
        mmsg::Datagram {
            bytes: it.bytes,
            to: Some(it.to),
            src: it.src,
        }
    };
    mmsg::send::<BATCH>(fd, count, datagram, gso)
}

/// Whether a failed GSO send means the kernel or the device cannot do UDP GSO (then the
/// same datagrams go out one per message).
pub fn is_gso_refusal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | libc::EIO | libc::ENOPROTOOPT)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_batch_goes_out_and_comes_back_in_order() {
        for local in ["127.0.0.1:0", "[::1]:0"] {
            let a = UdpSocket::bind(local).unwrap();
            let b = UdpSocket::bind(local).unwrap();
            b.set_nonblocking(true).unwrap();
            let to = b.local_addr().unwrap();
            let payloads: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 10 + usize::from(i)]).collect();
            let items: Vec<SendItem<'_>> = payloads
                .iter()
                .map(|p| SendItem {
                    bytes: p,
                    to,
                    src: None,
                })
                .collect();
            assert_eq!(send_segmented(a.as_raw_fd(), &items, false).unwrap(), 5);
            let mut storage = vec![vec![0u8; 64]; 8];
            let mut bufs: Vec<&mut [u8]> = storage.iter_mut().map(|b| &mut b[..]).collect();
            let mut meta = [RecvMeta::default(); 8];
            let mut got = 0;
            for _ in 0..100 {
                match recv_batch(b.as_raw_fd(), &mut bufs[got..], &mut meta[got..]) {
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(std::time::Duration::from_millis(5))
                    }
                    Err(e) => panic!("{e}"),
                }
                if got == 5 {
                    break;
                }
            }
            assert_eq!(got, 5);
            for i in 0..5 {
                assert_eq!(meta[i].from, a.local_addr().unwrap());
                assert_eq!(&bufs[i][..meta[i].len], &payloads[i][..]);
            }
            assert_eq!(
                recv_batch(b.as_raw_fd(), &mut bufs, &mut meta)
                    .unwrap_err()
                    .kind(),
                io::ErrorKind::WouldBlock
            );
        }
    }

    #[test]
    fn segmented_sends_arrive_as_separate_datagrams() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        for s in [&b, &c] {
            s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .unwrap();
        }
        let (to_b, to_c) = (b.local_addr().unwrap(), c.local_addr().unwrap());
        // Five to b (four of 100 bytes, then 40: one GSO message), one to c, two to b.
        let payloads: Vec<(Vec<u8>, SocketAddr)> = vec![
            (vec![1; 100], to_b),
            (vec![2; 100], to_b),
            (vec![3; 100], to_b),
            (vec![4; 100], to_b),
            (vec![5; 40], to_b),
            (vec![6; 10], to_c),
            (vec![7; 30], to_b),
            (vec![8; 30], to_b),
        ];
        let items: Vec<SendItem<'_>> = payloads
            .iter()
            .map(|(p, to)| SendItem {
                bytes: p,
                to: *to,
                src: None,
            })
            .collect();
        for gso in [true, false] {
            assert_eq!(send_segmented(a.as_raw_fd(), &items, gso).unwrap(), 8);
            let mut buf = [0u8; 200];
            for (p, to) in &payloads {
                let s = if *to == to_b { &b } else { &c };
                let (n, _) = s.recv_from(&mut buf).unwrap();
                assert_eq!(&buf[..n], &p[..], "gso {gso}");
            }
        }
    }

    #[test]
    fn truncated_datagrams_are_flagged() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.send_to(&[1u8; 100], b.local_addr().unwrap()).unwrap();
        let mut small = [0u8; 10];
        let mut bufs = [&mut small[..]];
        let mut meta = [RecvMeta::default()];
        b.set_nonblocking(false).unwrap();
        // Blocking socket: MSG_DONTWAIT still returns at once if the datagram is there.
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(recv_batch(b.as_raw_fd(), &mut bufs, &mut meta).unwrap(), 1);
        assert_eq!(meta[0].len, usize::MAX);
    }

    /// A socket on the wildcard address learns which local address each datagram was
    /// sent to, and answers from it: a client connected to 127.0.0.3 (which only accepts
    /// datagrams from there) hears back, and a GSO run never mixes two sources.
    #[test]
    fn a_wildcard_socket_answers_from_the_address_it_was_sent_to() {
        let server = UdpSocket::bind("0.0.0.0:0").unwrap();
        enable_destination_address(server.as_raw_fd(), false).unwrap();
        server.set_nonblocking(true).unwrap();
        let port = server.local_addr().unwrap().port();
        let locals: [std::net::IpAddr; 2] =
            ["127.0.0.1".parse().unwrap(), "127.0.0.3".parse().unwrap()];
        let clients: Vec<UdpSocket> = locals
            .iter()
            .map(|ip| {
                let c = UdpSocket::bind("127.0.0.1:0").unwrap();
                c.connect(SocketAddr::new(*ip, port)).unwrap();
                c.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                    .unwrap();
                c.send(b"hello").unwrap();
                c
            })
            .collect();
        let mut storage = vec![vec![0u8; 64]; 4];
        let mut bufs: Vec<&mut [u8]> = storage.iter_mut().map(|b| &mut b[..]).collect();
        let mut meta = [RecvMeta::default(); 4];
        let mut got = 0;
        for _ in 0..200 {
            match recv_batch(server.as_raw_fd(), &mut bufs[got..], &mut meta[got..]) {
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
            if got == 2 {
                break;
            }
        }
        assert_eq!(got, 2);
        let mut dsts: Vec<_> = meta[..2].iter().map(|m| m.dst).collect();
        dsts.sort();
        assert_eq!(dsts, vec![Some(locals[0]), Some(locals[1])]);
        for m in &meta[..2] {
            // Two equal datagrams per client: GSO may join them, never across sources.
            let items = [SendItem {
                bytes: b"reply",
                to: m.from,
                src: m.dst,
            }; 2];
            assert_eq!(send_segmented(server.as_raw_fd(), &items, true).unwrap(), 2);
        }
        let mut buf = [0u8; 16];
        for c in &clients {
            for _ in 0..2 {
                let n = c
                    .recv(&mut buf)
                    .expect("a reply from the address it sent to");
                assert_eq!(&buf[..n], b"reply");
            }
        }
        // A plain socket reports no destination.
        let plain = UdpSocket::bind("127.0.0.1:0").unwrap();
        clients[0]
            .send_to(b"x", plain.local_addr().unwrap())
            .unwrap();
        plain.set_nonblocking(false).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut one = [&mut buf[..]];
        let mut meta = [RecvMeta::default()];
        assert_eq!(
            recv_batch(plain.as_raw_fd(), &mut one, &mut meta).unwrap(),
            1
        );
        assert_eq!(meta[0].dst, None);
    }

    #[test]
    fn an_ipv6_wildcard_socket_reports_and_uses_its_address() {
        let server = UdpSocket::bind("[::]:0").unwrap();
        enable_destination_address(server.as_raw_fd(), true).unwrap();
        let port = server.local_addr().unwrap().port();
        let client = UdpSocket::bind("[::1]:0").unwrap();
        client.connect(("::1", port)).unwrap();
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        client.send(b"six").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut buf = [0u8; 16];
        let mut one = [&mut buf[..]];
        let mut meta = [RecvMeta::default()];
        assert_eq!(
            recv_batch(server.as_raw_fd(), &mut one, &mut meta).unwrap(),
            1
        );
        assert_eq!(meta[0].dst, Some("::1".parse().unwrap()));
        let item = SendItem {
            bytes: b"back",
            to: meta[0].from,
            src: meta[0].dst,
        };
        assert_eq!(
            send_segmented(server.as_raw_fd(), &[item], true).unwrap(),
            1
        );
        let n = client.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"back");
    }
}
