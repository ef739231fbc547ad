//! Control messages on batched calls: the destination address of a received datagram
//! (IP_PKTINFO, IPV6_PKTINFO) and the time the kernel received it (SO_TIMESTAMPNS, for
//! load tools), and, on send, the source address to use and the GSO
//! segment size (UDP_SEGMENT). A socket that receives on a wildcard address learns from
//! the first which of the host's addresses a client sent to, and answers from it with
//! the second, so clients behind NATs and firewalls see replies from the address they
//! used.

use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;
use std::time::Duration;

/// Room for the control messages of one datagram, 8-byte aligned: a UDP_SEGMENT (u16),
/// an in6_pktinfo (the larger of the two PKTINFO forms) and a timespec, with their
/// headers.
pub(crate) type Buffer = [u64; 12];

const _: () = assert!(
    size_of::<Buffer>()
        >= cmsg_space(size_of::<u16>())
            + cmsg_space(size_of::<libc::in6_pktinfo>())
            + cmsg_space(size_of::<libc::timespec>())
);

/// CMSG_SPACE, computed without the libc call (a const).
const fn cmsg_space(len: usize) -> usize {
    let align = size_of::<usize>();
    let header = (size_of::<libc::cmsghdr>() + align - 1) & !(align - 1);
    header + ((len + align - 1) & !(align - 1))
}

/// Asks the kernel to report each received datagram's destination address (IP_PKTINFO
/// for an IPv4 socket, IPV6_RECVPKTINFO for an IPv6 one); [`crate::RecvMeta::dst`] then
/// carries it.
pub fn enable_destination_address(fd: RawFd, ipv6: bool) -> io::Result<()> {
    if ipv6 {
        set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)
    } else {
        set_int(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)
    }
}

/// Asks the kernel to stamp each datagram this socket receives with the time it took it
/// in (SO_TIMESTAMPNS, the real-time clock); [`crate::Slots::stamp`] then carries it.
/// The stamp is taken as the datagram enters the receiving host's stack (for loopback
/// and veth, when the sending side hands it over), before any wait for this process to
/// wake: a load generator reads round-trip times off it without its own wake-up.
pub fn enable_receive_timestamps(fd: RawFd) -> io::Result<()> {
    set_int(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)
}

/// RFC 8656 section 18.9 (DONT-FRAGMENT): every datagram this socket sends leaves with
/// the DF bit (IPv4: path MTU discovery "do", no local fragmentation) or is never
/// fragmented (IPv6: IPV6_DONTFRAG); one too large for the path fails instead.
pub fn set_dont_fragment(fd: RawFd, ipv6: bool) -> io::Result<()> {
    if ipv6 {
        set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, 1)
    } else {
        set_int(
            fd,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        )
    }
}

fn set_int(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from `value`, which lives for
    // the call; a bad fd is reported as an error.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What the kernel reported in a received datagram's control messages.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Reported {
    /// The destination address ([`enable_destination_address`]).
    pub dst: Option<IpAddr>,
    /// When the kernel received it, since the Unix epoch ([`enable_receive_timestamps`]).
    pub stamp: Option<Duration>,
}

/// What the control messages the kernel wrote into `h`'s control buffer report.
///
/// # Safety
/// `h.msg_control` is null or points at `h.msg_controllen` bytes the kernel wrote.
pub(crate) unsafe fn received(h: &libc::msghdr) -> Reported {
    let mut r = Reported::default();
    if h.msg_control.is_null() || h.msg_controllen == 0 {
        return r;
    }
    // msg_controllen is a size_t here and a socklen_t on some other C libraries.
    #[allow(clippy::unnecessary_cast)]
    let (start, len) = (h.msg_control as usize, h.msg_controllen as usize);
    // SAFETY: the caller's promise; CMSG_FIRSTHDR and CMSG_NXTHDR stay within
    // msg_controllen and return null past the end; each message's data is read only
    // where its length (the kernel shortens it when the buffer was too small, with
    // MSG_CTRUNC) covers the type read and lies within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            let have = (*c).cmsg_len as usize;
            let within = (c as usize - start).saturating_add(have) <= len;
            let fits = |size: usize| within && have >= libc::CMSG_LEN(size as u32) as usize;
            match ((*c).cmsg_level, (*c).cmsg_type) {
                _ if !fits(0) => {}
                (libc::IPPROTO_IP, libc::IP_PKTINFO) if fits(size_of::<libc::in_pktinfo>()) => {
                    let info = data.cast::<libc::in_pktinfo>().read_unaligned();
                    let ip = Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr));
                    r.dst = Some(IpAddr::V4(ip));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) if fits(size_of::<libc::in6_pktinfo>()) => {
                    let info = data.cast::<libc::in6_pktinfo>().read_unaligned();
                    r.dst = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                }
                (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) if fits(size_of::<libc::timespec>()) => {
                    let t = data.cast::<libc::timespec>().read_unaligned();
                    r.stamp = match (u64::try_from(t.tv_sec), u32::try_from(t.tv_nsec)) {
                        (Ok(s), Ok(ns)) if ns < 1_000_000_000 => Some(Duration::new(s, ns)),
                        _ => None,
                    };
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    r
}

/// Writes the send-side control messages of one message into `buffer` and points `h`
/// at them: UDP_SEGMENT with `segment` when given (a GSO message), and the source
/// address `src` when given. Leaves `h` without control messages when neither is.
pub(crate) fn write_send(
    h: &mut libc::msghdr,
    buffer: &mut MaybeUninit<Buffer>,
    segment: Option<u16>,
    src: Option<IpAddr>,
) {
    if segment.is_none() && src.is_none() {
        return;
    }
    let buffer = buffer.write([0; 12]);
    h.msg_control = buffer.as_mut_ptr().cast();
    h.msg_controllen = size_of::<Buffer>() as _;
    let mut used = 0;
    // SAFETY: msg_control points at `buffer` (zeroed, 8-byte aligned, msg_controllen
    // long); CMSG_FIRSTHDR/CMSG_NXTHDR return headers inside it or null, and the space
    // check above guarantees room for both messages and their data.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        if let Some(size) = segment {
            (*c).cmsg_level = libc::SOL_UDP;
            (*c).cmsg_type = libc::UDP_SEGMENT;
            (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
            libc::CMSG_DATA(c).cast::<u16>().write_unaligned(size);
            used += libc::CMSG_SPACE(size_of::<u16>() as u32) as usize;
            c = libc::CMSG_NXTHDR(h, c);
        }
        match src {
            Some(IpAddr::V4(ip)) if !c.is_null() => {
                (*c).cmsg_level = libc::IPPROTO_IP;
                (*c).cmsg_type = libc::IP_PKTINFO;
                (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as _;
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(ip).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                libc::CMSG_DATA(c)
                    .cast::<libc::in_pktinfo>()
                    .write_unaligned(info);
                used += libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) as usize;
            }
            Some(IpAddr::V6(ip)) if !c.is_null() => {
                (*c).cmsg_level = libc::IPPROTO_IPV6;
                (*c).cmsg_type = libc::IPV6_PKTINFO;
                (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as u32) as _;
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: ip.octets(),
                    },
                    ipi6_ifindex: 0,
                };
                libc::CMSG_DATA(c)
                    .cast::<libc::in6_pktinfo>()
                    .write_unaligned(info);
                used += libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as u32) as usize;
            }
            _ => {}
        }
    }
    h.msg_controllen = used as _;
}
