//! [`Slots`]: a fixed set of datagram buffers that batched receives fill and batched
//! sends drain, for loops that move datagrams without copying them (echo peers,
//! forwarders, load generators).

use crate::{MAX_ITEMS, is_gso_refusal, mmsg};
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::RawFd;
use std::time::Duration;

/// Whether a receive waits for a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Return `WouldBlock` at once when nothing is waiting (MSG_DONTWAIT).
    No,
    /// Block until one datagram arrives, or the socket's receive timeout (SO_RCVTIMEO)
    /// passes, then take whatever else is waiting without blocking (MSG_WAITFORONE).
    ForOne,
}

/// A fixed set of datagram slots, allocated once: one buffer of `stride` bytes, one
/// length, one address, one truncation flag and one receive time per slot.
///
/// A receive records each datagram's source as its slot's address, so a received slot
/// can be sent straight back (an echo), or on after [`Slots::set_addr`], without copying
/// the payload. With [`Slots::with_gso`], [`Slots::send`] sends each run of equal-length
/// datagrams to one destination as one UDP GSO message: the stack is walked once per run
/// instead of once per datagram, and the receiver still gets one datagram per slot.
pub struct Slots {
    buf: Box<[u8]>,
    stride: usize,
    len: Box<[usize]>,
    truncated: Box<[bool]>,
    addr: Box<[Option<SocketAddr>]>,
    stamp: Box<[Option<Duration>]>,
    gso: bool,
}

impl Slots {
    /// `capacity` slots (1 to [`MAX_ITEMS`]: one call's worth) of `stride` bytes (at
    /// least 1), each empty and without an address.
    pub fn new(capacity: usize, stride: usize) -> Self {
        let capacity = capacity.clamp(1, MAX_ITEMS);
        let stride = stride.max(1);
        Self {
            buf: vec![0; capacity * stride].into_boxed_slice(),
            stride,
            len: vec![0; capacity].into_boxed_slice(),
            truncated: vec![false; capacity].into_boxed_slice(),
            addr: vec![None; capacity].into_boxed_slice(),
            stamp: vec![None; capacity].into_boxed_slice(),
            gso: false,
        }
    }

    /// Lets [`Slots::send`] use UDP GSO; it turns GSO off by itself for good if the
    /// kernel refuses it.
    pub fn with_gso(mut self) -> Self {
        self.gso = true;
        self
    }

    /// Whether sends still use GSO.
    pub fn gso(&self) -> bool {
        self.gso
    }

    pub fn capacity(&self) -> usize {
        self.len.len()
    }

    pub fn stride(&self) -> usize {
        self.stride
    }

    /// The datagram in slot `i`: received, or prepared with [`Slots::buf_mut`] and
    /// [`Slots::set_len`]. At most `stride` bytes.
    pub fn data(&self, i: usize) -> &[u8] {
        let start = i * self.stride;
        &self.buf[start..start + self.len[i]]
    }

    /// The whole buffer of slot `i`, to write a datagram into.
    pub fn buf_mut(&mut self, i: usize) -> &mut [u8] {
        let start = i * self.stride;
        &mut self.buf[start..start + self.stride]
    }

    /// Sets the length of the datagram in slot `i` (cut to the stride).
    pub fn set_len(&mut self, i: usize, len: usize) {
        self.len[i] = len.min(self.stride);
    }

    /// Whether the datagram received in slot `i` was longer than the stride (its tail
    /// is lost; [`Slots::data`] holds the first `stride` bytes).
    pub fn truncated(&self, i: usize) -> bool {
        self.truncated[i]
    }

    /// Slot `i`'s address: the source of the datagram received into it, or the
    /// destination set for sending; `None` sends on a connected socket.
    pub fn addr(&self, i: usize) -> Option<SocketAddr> {
        self.addr[i]
    }

    pub fn set_addr(&mut self, i: usize, addr: Option<SocketAddr>) {
        self.addr[i] = addr;
    }

    /// When the kernel received the datagram in slot `i`, since the Unix epoch, on a
    /// socket that asked for it ([`crate::enable_receive_timestamps`]); `None` otherwise.
    pub fn stamp(&self, i: usize) -> Option<Duration> {
        self.stamp[i]
    }

    /// Receives into `slots` (cut to the capacity), one datagram per slot from
    /// `slots.start` on; returns how many arrived. `WouldBlock` when none did (at once
    /// with [`Wait::No`], after the socket's receive timeout with [`Wait::ForOne`]).
    pub fn recv(&mut self, fd: RawFd, slots: Range<usize>, wait: Wait) -> io::Result<usize> {
        let slots = self.clamp(slots);
        let flags = match wait {
            Wait::No => libc::MSG_DONTWAIT,
            Wait::ForOne => libc::MSG_WAITFORONE,
        };
        let area = &mut self.buf[slots.start * self.stride..slots.end * self.stride];
        let bufs = area.chunks_exact_mut(self.stride);
        let (len, truncated, addr) = (&mut self.len, &mut self.truncated, &mut self.addr);
        let stamp = &mut self.stamp;
        mmsg::recv::<MAX_ITEMS>(fd, bufs, flags, |k, r| {
            let i = slots.start + k;
            len[i] = r.len;
            truncated[i] = r.truncated;
            addr[i] = r.from;
            stamp[i] = r.stamp;
        })
    }

    /// Sends `slots` (cut to the capacity): each slot's datagram to its address. With GSO,
    /// runs of equal-length datagrams to one address go as one message each; if the
    /// kernel refuses GSO, GSO is turned off and the same datagrams go one by one.
    /// Returns how many slots, from `slots.start`, the kernel took; an error only if it
    /// took none.
    pub fn send(&mut self, fd: RawFd, slots: Range<usize>) -> io::Result<usize> {
        let slots = self.clamp(slots);
        let mut at = slots.start;
        while at < slots.end {
            let item = |k: usize| mmsg::Datagram {
                bytes: self.data(at + k),
                to: self.addr[at + k],
                src: None,
            };
            match mmsg::send::<MAX_ITEMS>(fd, slots.end - at, item, self.gso) {
                Ok(0) => break,
                Ok(n) => at += n,
                Err(e) if self.gso && is_gso_refusal(&e) => self.gso = false,
                Err(e) if at == slots.start => return Err(e),
                Err(_) => break,
            }
        }
        Ok(at - slots.start)
    }

    fn clamp(&self, slots: Range<usize>) -> Range<usize> {
        let end = slots.end.min(self.capacity());
        slots.start.min(end)..end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    const LOOPBACKS: [&str; 2] = ["127.0.0.1:0", "[::1]:0"];

    fn socket(local: &str) -> UdpSocket {
        let s = UdpSocket::bind(local).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s
    }

    /// Receives `n` datagrams into `slots` from slot 0 on, waiting for each call.
    fn recv_all(slots: &mut Slots, s: &UdpSocket, n: usize) {
        let mut got = 0;
        while got < n {
            got += slots.recv(s.as_raw_fd(), got..n, Wait::ForOne).unwrap();
        }
    }

    #[test]
    fn received_slots_echo_back_to_their_sources_in_order() {
        for local in LOOPBACKS {
            let (a, b) = (socket(local), socket(local));
            let to = b.local_addr().unwrap();
            // Equal lengths (one GSO run) and a shorter tail.
            let sizes = [100, 100, 100, 100, 7, 50, 50];
            for (i, &size) in sizes.iter().enumerate() {
                a.send_to(&vec![i as u8; size], to).unwrap();
            }
            let mut slots = Slots::new(16, 128).with_gso();
            recv_all(&mut slots, &b, sizes.len());
            for (i, &size) in sizes.iter().enumerate() {
                assert_eq!(slots.data(i), &vec![i as u8; size][..]);
                assert_eq!(slots.addr(i), Some(a.local_addr().unwrap()));
                assert!(!slots.truncated(i));
            }
            assert_eq!(slots.send(b.as_raw_fd(), 0..sizes.len()).unwrap(), 7);
            assert!(slots.gso(), "loopback takes GSO");
            let mut buf = [0u8; 256];
            for (i, &size) in sizes.iter().enumerate() {
                let (n, from) = a.recv_from(&mut buf).unwrap();
                assert_eq!((&buf[..n], from), (&vec![i as u8; size][..], to));
            }
        }
    }

    #[test]
    fn connected_sockets_send_without_an_address() {
        for local in LOOPBACKS {
            let (a, b) = (socket(local), socket(local));
            a.connect(b.local_addr().unwrap()).unwrap();
            let mut slots = Slots::new(8, 64).with_gso();
            for i in 0..8 {
                slots.buf_mut(i)[..20].fill(i as u8);
                slots.set_len(i, 20);
            }
            assert_eq!(slots.send(a.as_raw_fd(), 0..8).unwrap(), 8);
            let mut buf = [0u8; 64];
            for i in 0..8 {
                let (n, from) = b.recv_from(&mut buf).unwrap();
                assert_eq!(
                    (&buf[..n], from),
                    (&[i as u8; 20][..], a.local_addr().unwrap())
                );
            }
        }
    }

    #[test]
    fn a_refused_gso_send_falls_back_to_one_datagram_per_message() {
        // The kernel refuses GSO (EINVAL) on sockets that skip the UDP checksum.
        const SO_NO_CHECK: libc::c_int = 11;
        let (a, b) = (socket("127.0.0.1:0"), socket("127.0.0.1:0"));
        let one: libc::c_int = 1;
        // SAFETY: setsockopt reads an int of the size given from a live local.
        let rc = unsafe {
            libc::setsockopt(
                a.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_NO_CHECK,
                (&raw const one).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        let mut slots = Slots::new(4, 32).with_gso();
        for i in 0..4 {
            slots.buf_mut(i).fill(i as u8);
            slots.set_len(i, 32);
            slots.set_addr(i, Some(b.local_addr().unwrap()));
        }
        assert_eq!(slots.send(a.as_raw_fd(), 0..4).unwrap(), 4);
        assert!(!slots.gso());
        let mut buf = [0u8; 64];
        for i in 0..4 {
            let n = b.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[i as u8; 32][..]);
        }
    }

    #[test]
    fn receive_times_come_with_datagrams_only_where_asked_for() {
        use std::time::SystemTime;
        for local in LOOPBACKS {
            let (a, b, plain) = (socket(local), socket(local), socket(local));
            crate::enable_receive_timestamps(b.as_raw_fd()).unwrap();
            let before = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap();
            for to in [&b, &plain] {
                a.send_to(b"x", to.local_addr().unwrap()).unwrap();
            }
            let mut slots = Slots::new(2, 16);
            recv_all(&mut slots, &b, 1);
            let after = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap();
            let stamp = slots.stamp(0).expect("a stamped datagram");
            assert!(
                before <= stamp && stamp <= after,
                "{before:?} {stamp:?} {after:?}"
            );
            slots.recv(plain.as_raw_fd(), 1..2, Wait::ForOne).unwrap();
            assert_eq!(slots.stamp(1), None);
        }
    }

    #[test]
    fn long_datagrams_are_cut_to_the_stride_and_flagged() {
        let (a, b) = (socket("127.0.0.1:0"), socket("127.0.0.1:0"));
        a.send_to(&[1u8; 100], b.local_addr().unwrap()).unwrap();
        a.send_to(&[2u8; 10], b.local_addr().unwrap()).unwrap();
        let mut slots = Slots::new(4, 10);
        recv_all(&mut slots, &b, 2);
        assert!(slots.truncated(0) && !slots.truncated(1));
        assert_eq!(
            (slots.data(0), slots.data(1)),
            (&[1u8; 10][..], &[2u8; 10][..])
        );
    }

    #[test]
    fn receives_fill_the_slots_asked_for() {
        let (a, b) = (socket("127.0.0.1:0"), socket("127.0.0.1:0"));
        for i in 0..3u8 {
            a.send_to(&[i; 5], b.local_addr().unwrap()).unwrap();
        }
        let mut slots = Slots::new(4, 16);
        slots.set_len(0, 3);
        let mut got = 2;
        while got < 4 {
            got += slots.recv(b.as_raw_fd(), got..4, Wait::ForOne).unwrap();
        }
        // Slot 0 is untouched, the third datagram waits for the next call.
        assert_eq!(slots.data(0), &[0u8; 3][..]);
        assert_eq!(
            (slots.data(2), slots.data(3)),
            (&[0u8; 5][..], &[1u8; 5][..])
        );
        assert_eq!(slots.recv(b.as_raw_fd(), 0..1, Wait::No).unwrap(), 1);
        assert_eq!(slots.data(0), &[2u8; 5][..]);
        assert_eq!(slots.recv(b.as_raw_fd(), 9..12, Wait::No).unwrap(), 0);
    }

    #[test]
    fn waiting_receives_block_until_a_datagram_or_the_timeout() {
        let b = socket("127.0.0.1:0");
        b.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut slots = Slots::new(4, 16);
        let fd = b.as_raw_fd();
        let e = slots.recv(fd, 0..4, Wait::No).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        let started = Instant::now();
        let e = slots.recv(fd, 0..4, Wait::ForOne).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert!(started.elapsed() >= Duration::from_millis(40));

        b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let to = b.local_addr().unwrap();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            socket("127.0.0.1:0").send_to(b"late", to).unwrap();
        });
        assert_eq!(slots.recv(fd, 0..4, Wait::ForOne).unwrap(), 1);
        assert_eq!(slots.data(0), b"late");
        sender.join().unwrap();
    }
}
