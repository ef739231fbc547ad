//! The system calls under every batched receive and send. Message headers, iovecs,
//! addresses and control messages live on the stack of each call, sized by the caller's
//! batch (`N`); a call writes only the entries it uses, and leaves receive addresses for
//! the kernel to fill. The payload buffers are the caller's. Nothing here allocates.

use crate::{MAX_ITEMS, MAX_SEGMENTS, cmsg, sockaddr};
use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;

/// What the kernel reported for one received datagram.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Received {
    /// Bytes written into the buffer (at most its length).
    pub len: usize,
    /// The datagram was longer than its buffer; the kernel dropped the rest.
    pub truncated: bool,
    pub from: Option<SocketAddr>,
    /// The address the datagram was sent to, when the socket reports it
    /// ([`crate::enable_destination_address`]).
    pub dst: Option<IpAddr>,
    /// When the kernel received it, since the Unix epoch, when the socket reports it
    /// ([`crate::enable_receive_timestamps`]).
    pub stamp: Option<std::time::Duration>,
}

/// `recvmmsg` into the first `N` of `bufs`, one datagram each, with `flags`
/// (MSG_DONTWAIT or MSG_WAITFORONE). Calls `on(i, what)` for each datagram received, in
/// order, and returns how many there were.
pub(crate) fn recv<'a, const N: usize>(
    fd: RawFd,
    bufs: impl IntoIterator<Item = &'a mut [u8]>,
    flags: libc::c_int,
    mut on: impl FnMut(usize, Received),
) -> io::Result<usize> {
    let mut names = [const { MaybeUninit::<libc::sockaddr_storage>::uninit() }; N];
    let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; N];
    let mut controls = [const { MaybeUninit::<cmsg::Buffer>::uninit() }; N];
    let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; N];
    let mut n = 0;
    for (iov, buf) in iovs.iter_mut().zip(bufs) {
        iov.write(libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        });
        n += 1;
    }
    if n == 0 {
        return Ok(0);
    }
    // Taken once, after the writes above: every header points through these.
    let (name_at, iov_at) = (names.as_mut_ptr(), iovs.as_mut_ptr());
    let control_at = controls.as_mut_ptr();
    for (i, hdr) in hdrs[..n].iter_mut().enumerate() {
        let mut h: libc::msghdr = zeroed();
        h.msg_name = name_at.wrapping_add(i).cast();
        h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        h.msg_iov = iov_at.wrapping_add(i).cast();
        h.msg_iovlen = 1;
        // The kernel writes control messages only for options the socket enabled.
        h.msg_control = control_at.wrapping_add(i).cast();
        h.msg_controllen = size_of::<cmsg::Buffer>() as _;
        hdr.write(libc::mmsghdr {
            msg_hdr: h,
            msg_len: 0,
        });
    }
    // SAFETY: the first `n` headers are initialized and point at the first `n` iovecs,
    // address slots and control buffers of this frame; each iovec covers one of `bufs`,
    // borrowed mutably for 'a, which outlives the call; the kernel writes within the
    // lengths given.
    let got = unsafe {
        libc::recvmmsg(
            fd,
            hdrs.as_mut_ptr().cast(),
            n as libc::c_uint,
            flags,
            std::ptr::null_mut(),
        )
    };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    let got = (got as usize).min(n);
    for i in 0..got {
        // SAFETY: the first `n` headers and iovecs were initialized above (the kernel
        // only changed the headers' contents).
        let (h, iov) = unsafe { (hdrs[i].assume_init_ref(), iovs[i].assume_init_ref()) };
        // SAFETY: the kernel wrote msg_namelen bytes of address into names[i].
        let from = unsafe { sockaddr::read(&names[i], h.msg_hdr.msg_namelen) };
        // SAFETY: msg_control points at controls[i], of which the kernel wrote
        // msg_controllen bytes (0 when the socket reports nothing).
        let reported = unsafe { cmsg::received(&h.msg_hdr) };
        on(
            i,
            Received {
                len: (h.msg_len as usize).min(iov.iov_len),
                truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
                from,
                dst: reported.dst,
                stamp: reported.stamp,
            },
        );
    }
    Ok(got)
}

/// One datagram to send: its bytes, its destination (`None` on a connected socket) and
/// the source address to send from (`None`: the one the kernel picks).
#[derive(Clone, Copy)]
pub(crate) struct Datagram<'a> {
    pub bytes: &'a [u8],
    pub to: Option<SocketAddr>,
    pub src: Option<IpAddr>,
}

/// One message of a send: its first datagram, how many it carries, its address length
/// (0: none). Bytes, so that a call's table stays small to clear.
#[derive(Clone, Copy, Default)]
struct Run {
    first: u8,
    len: u8,
    name_len: u8,
}

const _: () = assert!(MAX_ITEMS <= u8::MAX as usize && MAX_SEGMENTS <= u8::MAX as usize);

/// `sendmmsg` of the first `count` (at most [`MAX_ITEMS`]) datagrams `item(0)`,
/// `item(1)`, ..., in at most `N` messages. With `gso`, each run of consecutive datagrams
/// to one destination whose lengths are equal (the last of a run may be shorter) is one
/// UDP GSO message (`UDP_SEGMENT`); otherwise each datagram is a message of its own. A
/// datagram's `src` goes in its message's IP_PKTINFO / IPV6_PKTINFO.
/// Returns how many datagrams the kernel took (whole messages, in order).
pub(crate) fn send<'a, const N: usize>(
    fd: RawFd,
    count: usize,
    item: impl Fn(usize) -> Datagram<'a>,
    gso: bool,
) -> io::Result<usize> {
    let count = count.min(MAX_ITEMS);
    if count == 0 {
        return Ok(0);
    }
    let mut names = [const { MaybeUninit::<libc::sockaddr_storage>::uninit() }; N];
    let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; MAX_ITEMS];
    let mut controls = [const { MaybeUninit::<cmsg::Buffer>::uninit() }; N];
    let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; N];
    let mut runs = [Run::default(); N];
    let mut messages = 0;
    let mut i = 0;
    while i < count && messages < N {
        let first = item(i);
        let n = if gso { run_len(&item, i, count) } else { 1 };
        for (k, iov) in iovs[i..i + n].iter_mut().enumerate() {
            let bytes = item(i + k).bytes;
            // The kernel only reads through iov_base on send.
            iov.write(libc::iovec {
                iov_base: bytes.as_ptr().cast_mut().cast(),
                iov_len: bytes.len(),
            });
        }
        let name_len = first
            .to
            .map_or(0, |to| sockaddr::write(to, &mut names[messages]));
        // In range: i < MAX_ITEMS, n <= MAX_SEGMENTS, name_len <= sockaddr_in6's size.
        runs[messages] = Run {
            first: i as u8,
            len: n as u8,
            name_len: name_len as u8,
        };
        messages += 1;
        i += n;
    }
    // Taken once, after the writes above: every header points through these.
    let (name_at, iov_at) = (names.as_mut_ptr(), iovs.as_mut_ptr());
    let control_at = controls.as_mut_ptr();
    for (m, run) in runs[..messages].iter().enumerate() {
        let (first, n) = (usize::from(run.first), usize::from(run.len));
        let mut h: libc::msghdr = zeroed();
        if run.name_len > 0 {
            h.msg_name = name_at.wrapping_add(m).cast();
            h.msg_namelen = libc::socklen_t::from(run.name_len);
        }
        h.msg_iov = iov_at.wrapping_add(first).cast();
        h.msg_iovlen = n as _;
        let segment = (n > 1).then(|| item(first).bytes.len() as u16);
        // SAFETY: control_at + m is this message's control buffer, alive for the call
        // and not otherwise borrowed.
        let control = unsafe { &mut *control_at.wrapping_add(m) };
        cmsg::write_send(&mut h, control, segment, item(first).src);
        hdrs[m].write(libc::mmsghdr {
            msg_hdr: h,
            msg_len: 0,
        });
    }
    // SAFETY: the first `messages` headers are initialized and point at initialized
    // iovecs, addresses and control messages (when they have any) of this frame, and the iovecs at payloads
    // `item` borrowed for 'a, which outlives the call; the kernel only reads them.
    let sent = unsafe {
        libc::sendmmsg(
            fd,
            hdrs.as_mut_ptr().cast(),
            messages as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(runs[..(sent as usize).min(messages)]
        .iter()
        .map(|r| usize::from(r.len))
        .sum())
}

/// A GSO message may not exceed the largest IP payload.
const MAX_GSO_BYTES: usize = 65_000;

/// How many datagrams from `i` on go as one GSO message: consecutive, to one
/// destination from one source, all of the first one's length except a shorter last one, at most
/// [`MAX_SEGMENTS`] and [`MAX_GSO_BYTES`] together.
fn run_len<'a>(item: &impl Fn(usize) -> Datagram<'a>, i: usize, count: usize) -> usize {
    let first = item(i);
    let segment = first.bytes.len();
    if segment == 0 {
        return 1;
    }
    let (mut n, mut total) = (1, segment);
    while i + n < count && n < MAX_SEGMENTS {
        let next = item(i + n);
        let len = next.bytes.len();
        if next.to != first.to
            || next.src != first.src
            || len > segment
            || total + len > MAX_GSO_BYTES
        {
            break;
        }
        total += len;
        n += 1;
        if len < segment {
            break; // a shorter datagram can only end a run
        }
    }
    n
}

/// An all-zero value of a plain C struct.
fn zeroed<T: PlainC>() -> T {
    // SAFETY: `PlainC` is implemented only for C structs of integers and raw pointers,
    // for which all-zero bytes (zero lengths, null pointers) is a valid value.
    unsafe { std::mem::zeroed() }
}

/// C structs whose all-zero value is valid.
trait PlainC {}
impl PlainC for libc::msghdr {}
