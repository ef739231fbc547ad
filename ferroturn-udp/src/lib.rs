//! Batched UDP I/O: `recvmmsg` and `sendmmsg` over non-blocking sockets, one system call
//! for many datagrams. The message headers live on the stack of each call, so nothing is
//! allocated per batch; the caller owns every buffer.

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// The most datagrams one call moves.
pub const BATCH: usize = 32;

/// Where a received datagram came from and how long it is.
#[derive(Clone, Copy, Debug)]
pub struct RecvMeta {
    pub len: usize,
    pub from: SocketAddr,
}

impl Default for RecvMeta {
    fn default() -> Self {
        Self {
            len: 0,
            from: SocketAddr::from(([0, 0, 0, 0], 0)),
        }
    }
}

/// One datagram to send.
#[derive(Clone, Copy, Debug)]
pub struct SendItem<'a> {
    pub bytes: &'a [u8],
    pub to: SocketAddr,
}

/// Receives up to `min(bufs.len(), BATCH)` datagrams, each into its own buffer. Returns
/// how many arrived (at least 1) or an error (`WouldBlock` when none was waiting).
/// Datagrams longer than their buffer are truncated by the kernel and reported with
/// `len` larger than the buffer; callers drop those.
pub fn recv_batch(fd: RawFd, bufs: &mut [&mut [u8]], meta: &mut [RecvMeta]) -> io::Result<usize> {
    let n = bufs.len().min(meta.len()).min(BATCH);
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: all-zero is a valid value for these plain C structs.
    let mut names: [libc::sockaddr_storage; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
    // SAFETY: as above.
    let mut iovs: [libc::iovec; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
    for i in 0..n {
        iovs[i] = libc::iovec {
            iov_base: bufs[i].as_mut_ptr().cast(),
            iov_len: bufs[i].len(),
        };
        hdrs[i].msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
        hdrs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
        hdrs[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: every header points at a live iovec, buffer and address slot of this frame,
    // and `n` does not exceed the arrays.
    let got = unsafe {
        libc::recvmmsg(
            fd,
            hdrs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    let got = got as usize;
    for i in 0..got {
        let len = hdrs[i].msg_len as usize;
        let truncated = hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        meta[i] = RecvMeta {
            len: if truncated { usize::MAX } else { len },
            from: from_storage(&names[i]).unwrap_or(meta[i].from),
        };
    }
    Ok(got)
}

/// The most segments in one GSO send (the kernel's UDP_MAX_SEGMENTS).
pub const MAX_SEGMENTS: usize = 64;
/// The most datagrams one [`send_segmented`] call moves.
pub const MAX_ITEMS: usize = 64;

/// Sends `items` with `sendmmsg`, one message per run of consecutive items to the same
/// destination whose lengths are equal (the last of a run may be shorter): such a run
/// leaves as a single UDP GSO message (`UDP_SEGMENT`), which the kernel splits into
/// datagrams at the last possible moment. `gso` false sends one message per item.
/// Returns how many items the kernel took.
pub fn send_segmented(fd: RawFd, items: &[SendItem<'_>], gso: bool) -> io::Result<usize> {
    let items = &items[..items.len().min(MAX_ITEMS)];
    if items.is_empty() {
        return Ok(0);
    }
    // SAFETY: all-zero is a valid value for these plain C structs.
    let mut names: [libc::sockaddr_storage; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
    // SAFETY: as above.
    let mut iovs: [libc::iovec; MAX_ITEMS] = unsafe { MaybeUninit::zeroed().assume_init() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
    // Room for one cmsghdr carrying a u16, 8-byte aligned.
    let mut controls = [[0u64; 4]; BATCH];
    let mut counts = [0usize; BATCH];
    let mut messages = 0;
    let mut i = 0;
    while i < items.len() && messages < BATCH {
        let first = items[i];
        let segment = first.bytes.len();
        let mut n = 1;
        if gso && segment > 0 {
            let mut total = segment;
            while i + n < items.len() && n < MAX_SEGMENTS {
                let next = items[i + n];
                let len = next.bytes.len();
                if next.to != first.to || len > segment || total + len > MAX_DATAGRAM_BYTES {
                    break;
                }
                total += len;
                n += 1;
                if len < segment {
                    break; // a shorter datagram can only end a run
                }
            }
        }
        for k in 0..n {
            let b = items[i + k].bytes;
            // The kernel only reads through iov_base on send.
            iovs[i + k] = libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            };
        }
        let h = &mut hdrs[messages].msg_hdr;
        let len = to_storage(first.to, &mut names[messages]);
        h.msg_name = (&mut names[messages] as *mut libc::sockaddr_storage).cast();
        h.msg_namelen = len;
        h.msg_iov = &mut iovs[i];
        h.msg_iovlen = n;
        if n > 1 {
            let control = &mut controls[messages];
            h.msg_control = control.as_mut_ptr().cast();
            // SAFETY: CMSG_SPACE is a pure computation.
            h.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as usize;
            // SAFETY: msg_control points at `control`, which is larger than CMSG_SPACE(2)
            // and 8-byte aligned, so CMSG_FIRSTHDR returns a valid header inside it.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(h);
                (*c).cmsg_level = libc::SOL_UDP;
                (*c).cmsg_type = libc::UDP_SEGMENT;
                (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as usize;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), segment as u16);
            }
        }
        counts[messages] = n;
        messages += 1;
        i += n;
    }
    // SAFETY: every header points at live iovecs, payloads, addresses and control buffers
    // of this frame, and `messages` does not exceed the arrays.
    let sent = unsafe {
        libc::sendmmsg(
            fd,
            hdrs.as_mut_ptr(),
            messages as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(counts[..sent as usize].iter().sum())
}

/// Whether `e` is how the kernel (or the device) says it cannot do UDP GSO; the caller
/// then sends the datagrams one by one.
pub fn is_gso_refusal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
    )
}

/// A GSO message may not exceed the largest IP payload.
const MAX_DATAGRAM_BYTES: usize = 65_000;

fn from_storage(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large
            // and aligned enough for.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn to_storage(addr: SocketAddr, s: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let out =
                unsafe { &mut *(s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            out.sin_family = libc::AF_INET as libc::sa_family_t;
            out.sin_port = a.port().to_be();
            out.sin_addr = libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let out =
                unsafe { &mut *(s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            out.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            out.sin6_port = a.port().to_be();
            out.sin6_flowinfo = a.flowinfo();
            out.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            out.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
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
            let items: Vec<SendItem<'_>> =
                payloads.iter().map(|p| SendItem { bytes: p, to }).collect();
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
            .map(|(p, to)| SendItem { bytes: p, to: *to })
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
}
