//! io_uring building blocks for batched UDP (feature `uring`; the load tools' io_uring
//! forwarder uses them, the server does not): a provided-buffer ring that multishot
//! receives fill, the parse of what such a receive wrote, and a batch of `sendmsg`
//! submissions that send each run of equal-length datagrams as one UDP GSO message.
//!
//! Buffer ownership, in the order a datagram sees it:
//!
//! 1. [`BufRing`] owns `count` buffers; the kernel picks one per datagram a multishot
//!    [`MultishotRecv`] receives and names it in the completion (its buffer id).
//! 2. The caller reads it with [`BufRing::buffer`] and [`MultishotRecv::parse`], and may
//!    point a send at the payload in place ([`SendBatch::push`]): no copy.
//! 3. [`BufRing::give_back`] once nothing refers to it any more (for a send built here:
//!    once the submit that carried it has returned, see [`SendBatch`]); the kernel sees
//!    returned buffers at the next [`BufRing::publish`].

use crate::{cmsg, sockaddr};
use io_uring::types::{BufRingEntry, Fixed, RecvMsgOut};
use io_uring::{Submitter, opcode, squeue};
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU16, Ordering};

/// The most segments in one GSO message (the kernel's UDP_MAX_SEGMENTS).
pub const MAX_SEGMENTS: usize = crate::MAX_SEGMENTS;
/// The header a multishot `recvmsg` writes before the address (struct
/// io_uring_recvmsg_out: four u32).
const RECVMSG_OUT: usize = 16;
/// A GSO message may not exceed the largest IP payload.
const MAX_GSO_BYTES: usize = 65_000;

/// A provided-buffer ring (IORING_REGISTER_PBUF_RING): `count` buffers of `buf_len`
/// bytes in one allocation, and the ring through which they are handed to the kernel.
///
/// Drop the `IoUring` it was registered with first (declare it earlier in the owning
/// struct): the kernel may write into the buffers until then.
pub struct BufRing {
    /// The ring's entries, `count` of them, page-aligned (mmap): the kernel reads them.
    entries: *mut BufRingEntry,
    /// The buffers, `count` times `buf_len` bytes (mmap): the kernel writes into those it
    /// holds, so no Rust reference spans them all.
    buffers: *mut u8,
    map_len: usize,
    buffers_len: usize,
    buf_len: usize,
    mask: u16,
    /// Entries written so far (ours, not yet published while ahead of the shared tail).
    tail: u16,
    bgid: u16,
}

impl BufRing {
    /// Allocates `count` (a power of two, 1 to 32768) buffers of `buf_len` bytes, hands
    /// all of them to the kernel and registers the ring as buffer group `bgid`.
    pub fn register(
        submitter: &Submitter<'_>,
        bgid: u16,
        count: u16,
        buf_len: usize,
    ) -> io::Result<Self> {
        if !count.is_power_of_two() || count > 32768 || buf_len == 0 || buf_len > u32::MAX as usize
        {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let map_len = usize::from(count) * size_of::<BufRingEntry>();
        let buffers_len = usize::from(count) * buf_len;
        let entries = map(map_len)?;
        let buffers = match map(buffers_len) {
            Ok(b) => b,
            Err(e) => {
                // SAFETY: the mapping just made, unmapped once.
                unsafe { libc::munmap(entries, map_len) };
                return Err(e);
            }
        };
        let mut ring = Self {
            entries: entries.cast(),
            buffers: buffers.cast(),
            map_len,
            buffers_len,
            buf_len,
            mask: count - 1,
            tail: 0,
            bgid,
        };
        for bid in 0..count {
            ring.give_back(bid);
        }
        ring.publish();
        // SAFETY: the entries stay mapped, and the buffers allocated, until `ring` is
        // dropped, which its owner does after dropping the io_uring (see the type's doc).
        unsafe { submitter.register_buf_ring_with_flags(entries as u64, count, bgid, 0)? };
        Ok(ring)
    }

    /// The buffer group id to receive with.
    pub fn group(&self) -> u16 {
        self.bgid
    }

    pub fn buf_len(&self) -> usize {
        self.buf_len
    }

    /// Buffer `bid` whole; empty for an id this ring never had. Read only buffers the
    /// kernel has handed out and not been given back: the kernel writes into the others.
    pub fn buffer(&self, bid: u16) -> &[u8] {
        if bid > self.mask {
            return &[];
        }
        // SAFETY: bid < count, so the range lies inside the buffer mapping; a buffer the
        // kernel handed out is not written again until it is given back.
        unsafe {
            std::slice::from_raw_parts(
                self.buffers.add(usize::from(bid) * self.buf_len),
                self.buf_len,
            )
        }
    }

    /// Queues buffer `bid` for the kernel again; it sees it at the next [`Self::publish`].
    /// The caller gives back only buffers the kernel handed out (each once): a ring of
    /// `count` entries then never holds more than `count`.
    pub fn give_back(&mut self, bid: u16) {
        if bid > self.mask {
            return;
        }
        let addr = self.buffers as u64 + (usize::from(bid) * self.buf_len) as u64;
        let at = usize::from(self.tail & self.mask);
        // SAFETY: `at` < count, inside the mapping; the kernel only reads entries between
        // the published tail and its head, and this one is past the published tail.
        let entry = unsafe { &mut *self.entries.add(at) };
        entry.set_addr(addr);
        entry.set_len(self.buf_len as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the buffers given back so far visible to the kernel (one release store).
    pub fn publish(&self) {
        // SAFETY: the tail field lives in the first entry of the mapping; the kernel
        // reads it with acquire ordering, and this is the only writer.
        let tail = unsafe { &*BufRingEntry::tail(self.entries).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: the mappings made in `register`, unmapped once.
        unsafe {
            libc::munmap(self.entries.cast(), self.map_len);
            libc::munmap(self.buffers.cast(), self.buffers_len);
        }
    }
}

/// An anonymous private read-write mapping of `len` bytes (zeroed, page-aligned).
fn map(len: usize) -> io::Result<*mut libc::c_void> {
    // SAFETY: an anonymous private mapping; no pointer is passed in.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(ptr)
}

/// A datagram a multishot receive wrote into a provided buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// Where the payload lies in the buffer.
    pub payload: Range<usize>,
    /// Its source; `None` when the receive asked for none (a connected socket).
    pub from: Option<SocketAddr>,
    /// Longer than the buffer had room for: the payload is cut.
    pub truncated: bool,
}

/// The `msghdr` template of a multishot `recvmsg` (IORING_OP_RECVMSG with
/// IORING_RECV_MULTISHOT): how much room each provided buffer keeps for the source
/// address, no control messages. One template serves any number of sockets.
pub struct MultishotRecv {
    hdr: Box<libc::msghdr>,
}

impl MultishotRecv {
    /// With `source` the buffer keeps room for an IPv4 or IPv6 source address (a
    /// listening socket); without, none (a connected socket, whose source is known).
    pub fn new(source: bool) -> Self {
        // SAFETY: msghdr is a C struct of integers and pointers; all-zero is valid.
        let mut hdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        if source {
            hdr.msg_namelen = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        }
        Self { hdr }
    }

    /// The submission: receive on registered file `fd` into buffers of group `bgid`,
    /// one completion per datagram while it lasts (IORING_CQE_F_MORE).
    pub fn entry(&self, fd: Fixed, bgid: u16) -> squeue::Entry {
        opcode::RecvMsgMulti::new(fd, &raw const *self.hdr, bgid).build()
    }

    /// Bytes of each buffer taken before the payload.
    pub fn overhead(&self) -> usize {
        RECVMSG_OUT + self.hdr.msg_namelen as usize
    }

    /// What the kernel wrote at the start of `buffer`; `None` if it is too short to hold
    /// the header this template asked for.
    pub fn parse(&self, buffer: &[u8]) -> Option<Received> {
        let out = RecvMsgOut::parse(buffer, &self.hdr).ok()?;
        let payload = out.payload_data();
        let start = payload.as_ptr() as usize - buffer.as_ptr() as usize;
        let from = if self.hdr.msg_namelen == 0 || out.is_name_data_truncated() {
            None
        } else {
            let name = out.name_data();
            let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
            let len = name.len().min(size_of::<libc::sockaddr_storage>());
            // SAFETY: copies `len` bytes into the zeroed storage, which has room for them.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    name.as_ptr(),
                    storage.as_mut_ptr().cast::<u8>(),
                    len,
                );
            }
            // SAFETY: the storage is initialized throughout (zeroed, then copied into).
            unsafe { sockaddr::read(&storage, len as libc::socklen_t) }
        };
        Some(Received {
            payload: start..start + payload.len(),
            from,
            truncated: out.is_payload_truncated(),
        })
    }
}

/// `sendmsg` submissions for one submit: the message headers, iovecs, addresses and
/// GSO control messages they point at, in fixed arrays allocated once.
///
/// Every send is built with MSG_DONTWAIT and IOSQE_CQE_SKIP_SUCCESS: io_uring issues it
/// during the submit itself, copies the header at preparation, and a send the socket
/// cannot take at once fails with -EAGAIN (a completion) instead of waiting for room.
/// So once the submit that carried a batch has returned, the kernel reads none of it nor
/// the payloads again: [`Self::clear`] it and give the payload buffers back then. A
/// successful send posts no completion at all.
pub struct SendBatch {
    hdrs: Box<[libc::msghdr]>,
    iovs: Box<[libc::iovec]>,
    names: Box<[MaybeUninit<libc::sockaddr_storage>]>,
    controls: Box<[MaybeUninit<cmsg::Buffer>]>,
    messages: usize,
    segments: usize,
}

impl SendBatch {
    /// Room for `messages` messages of `segments` datagrams in all.
    pub fn new(messages: usize, segments: usize) -> Self {
        // SAFETY: msghdr and iovec are C structs of integers and pointers; all-zero is
        // a valid value.
        let (hdr, iov) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
        Self {
            hdrs: vec![hdr; messages].into_boxed_slice(),
            iovs: vec![iov; segments].into_boxed_slice(),
            names: vec![MaybeUninit::uninit(); messages].into_boxed_slice(),
            controls: vec![MaybeUninit::uninit(); messages].into_boxed_slice(),
            messages: 0,
            segments: 0,
        }
    }

    /// Whether one more message of `segments` datagrams fits.
    pub fn has_room(&self, segments: usize) -> bool {
        self.messages < self.hdrs.len() && self.segments + segments <= self.iovs.len()
    }

    /// The submission that sends `payloads` on registered file `fd` to `to` (`None` on a
    /// connected socket): one datagram when there is one, else one GSO message whose
    /// datagrams all have the first one's length except a shorter last one (the caller
    /// forms such runs; see [`run_fits`]). `None` when the batch is full or `payloads`
    /// is empty.
    ///
    /// # Safety
    ///
    /// The payloads stay valid and unchanged until the submit that carries the returned
    /// entry has returned (see the type's doc), and the entry is submitted before
    /// [`Self::clear`].
    pub unsafe fn push(
        &mut self,
        fd: Fixed,
        to: Option<SocketAddr>,
        payloads: &[&[u8]],
    ) -> Option<squeue::Entry> {
        let n = payloads.len();
        if n == 0 || !self.has_room(n) {
            return None;
        }
        let (m, first) = (self.messages, self.segments);
        for (iov, p) in self.iovs[first..first + n].iter_mut().zip(payloads) {
            // The kernel only reads through iov_base on send.
            *iov = libc::iovec {
                iov_base: p.as_ptr().cast_mut().cast(),
                iov_len: p.len(),
            };
        }
        // SAFETY: as in `new`: all-zero is a valid msghdr.
        let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
        if let Some(to) = to {
            h.msg_namelen = sockaddr::write(to, &mut self.names[m]);
            h.msg_name = self.names[m].as_mut_ptr().cast();
        }
        h.msg_iov = self.iovs[first..].as_mut_ptr();
        h.msg_iovlen = n as _;
        let segment = (n > 1).then(|| payloads[0].len() as u16);
        cmsg::write_send(&mut h, &mut self.controls[m], segment, None);
        self.hdrs[m] = h;
        self.messages += 1;
        self.segments += n;
        Some(
            opcode::SendMsg::new(fd, &raw const self.hdrs[m])
                .flags(libc::MSG_DONTWAIT as u32)
                .build()
                .flags(squeue::Flags::SKIP_SUCCESS),
        )
    }

    /// Forgets every message: call once the submit that carried them has returned.
    pub fn clear(&mut self) {
        self.messages = 0;
        self.segments = 0;
    }

    pub fn is_empty(&self) -> bool {
        self.messages == 0
    }
}

/// Whether a datagram of `len` bytes may join a GSO run of `count` datagrams of
/// `segment` bytes (`total` in all) that no shorter datagram has ended yet.
pub fn run_fits(segment: usize, count: usize, total: usize, len: usize) -> bool {
    segment > 0 && len > 0 && len <= segment && count < MAX_SEGMENTS && total + len <= MAX_GSO_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;
    use io_uring::{IoUring, cqueue};
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    fn ring() -> Option<IoUring> {
        match IoUring::builder().setup_single_issuer().build(64) {
            Ok(r) => Some(r),
            // io_uring disabled (sysctl kernel.io_uring_disabled, seccomp): nothing to test.
            Err(e) => {
                eprintln!("io_uring unavailable, test skipped: {e}");
                None
            }
        }
    }

    fn wait_cqes(ring: &mut IoUring, n: usize) -> Vec<cqueue::Entry> {
        let mut got = Vec::new();
        for _ in 0..200 {
            ring.submit_and_wait(0).unwrap();
            got.extend(ring.completion());
            if got.len() >= n {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        got
    }

    /// Datagrams land in provided buffers with their sources, go out again in place (a
    /// GSO run and a single one), and arrive whole and in order.
    #[test]
    fn multishot_receive_and_gso_send_in_place() {
        let Some(mut ring) = ring() else { return };
        let (a, b) = (
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            UdpSocket::bind("127.0.0.1:0").unwrap(),
        );
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        ring.submitter().register_files(&[b.as_raw_fd()]).unwrap();
        let mut bufs = BufRing::register(&ring.submitter(), 7, 8, 256).unwrap();
        let recv = MultishotRecv::new(true);
        // SAFETY: the template outlives the ring's use of it.
        unsafe {
            ring.submission()
                .push(&recv.entry(Fixed(0), bufs.group()))
                .unwrap()
        };
        let sizes = [100, 100, 100, 40, 7];
        for (i, &n) in sizes.iter().enumerate() {
            a.send_to(&vec![i as u8; n], b.local_addr().unwrap())
                .unwrap();
        }
        let cqes = wait_cqes(&mut ring, sizes.len());
        assert_eq!(cqes.len(), sizes.len());
        let mut got = Vec::new();
        for (i, cqe) in cqes.iter().enumerate() {
            assert!(cqueue::more(cqe.flags()), "the receive goes on");
            let bid = cqueue::buffer_select(cqe.flags()).unwrap();
            let r = recv
                .parse(&bufs.buffer(bid)[..cqe.result() as usize])
                .unwrap();
            assert_eq!(r.from, Some(a.local_addr().unwrap()));
            assert!(!r.truncated);
            assert_eq!(
                &bufs.buffer(bid)[r.payload.clone()],
                &vec![i as u8; sizes[i]][..]
            );
            got.push((bid, r.payload));
        }
        let payloads: Vec<&[u8]> = got
            .iter()
            .map(|(bid, p)| &bufs.buffer(*bid)[p.clone()])
            .collect();
        let mut batch = SendBatch::new(4, 16);
        let to = Some(c.local_addr().unwrap());
        // SAFETY: the payloads live in `bufs` until after the submit below.
        let entries = unsafe {
            [
                batch.push(Fixed(0), to, &payloads[..4]).unwrap(),
                batch.push(Fixed(0), to, &payloads[4..]).unwrap(),
            ]
        };
        // SAFETY: the batch is cleared only after the submit.
        unsafe { ring.submission().push_multiple(&entries).unwrap() };
        ring.submit().unwrap();
        batch.clear();
        assert_eq!(
            ring.completion().count(),
            0,
            "successful sends post nothing"
        );
        let mut buf = [0u8; 256];
        for (i, &n) in sizes.iter().enumerate() {
            let (len, from) = c.recv_from(&mut buf).unwrap();
            assert_eq!(
                (&buf[..len], from),
                (&vec![i as u8; n][..], b.local_addr().unwrap())
            );
        }
        for (bid, _) in got {
            bufs.give_back(bid);
        }
        bufs.publish();
        drop(ring);
    }

    /// A datagram longer than a buffer's room is flagged, and a connected socket's
    /// receive carries no source.
    #[test]
    fn long_datagrams_are_flagged_and_connected_sockets_have_no_source() {
        let Some(mut ring) = ring() else { return };
        let (a, b) = (
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            UdpSocket::bind("127.0.0.1:0").unwrap(),
        );
        b.connect(a.local_addr().unwrap()).unwrap();
        ring.submitter().register_files(&[b.as_raw_fd()]).unwrap();
        let bufs = BufRing::register(&ring.submitter(), 1, 4, 64).unwrap();
        let recv = MultishotRecv::new(false);
        // SAFETY: the template outlives the ring's use of it.
        unsafe {
            ring.submission()
                .push(&recv.entry(Fixed(0), bufs.group()))
                .unwrap()
        };
        let room = 64 - recv.overhead();
        a.send_to(&vec![1; room + 1], b.local_addr().unwrap())
            .unwrap();
        a.send_to(&vec![2; room], b.local_addr().unwrap()).unwrap();
        let cqes = wait_cqes(&mut ring, 2);
        let parsed: Vec<Received> = cqes
            .iter()
            .map(|c| {
                let bid = cqueue::buffer_select(c.flags()).unwrap();
                recv.parse(&bufs.buffer(bid)[..c.result() as usize])
                    .unwrap()
            })
            .collect();
        assert!(parsed[0].truncated && !parsed[1].truncated);
        assert_eq!(parsed[1].payload.len(), room);
        assert!(parsed.iter().all(|r| r.from.is_none()));
        drop(ring);
    }

    #[test]
    fn runs_stop_at_a_longer_datagram_and_at_the_segment_limit() {
        assert!(run_fits(100, 1, 100, 100));
        assert!(run_fits(100, 1, 100, 40));
        assert!(!run_fits(100, 1, 100, 101));
        assert!(!run_fits(100, MAX_SEGMENTS, 6400, 100));
        assert!(!run_fits(1400, 46, 64_400, 1400));
    }
}
