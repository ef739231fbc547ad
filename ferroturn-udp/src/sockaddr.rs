//! `SocketAddr` to and from the kernel's `sockaddr_in` / `sockaddr_in6`: the one place
//! that reads and writes socket addresses for the batched calls.

use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

/// Writes `addr` into `out` as a `sockaddr_in` or `sockaddr_in6`; returns its length,
/// which is how many bytes of `out` are initialized.
pub(crate) fn write(
    addr: SocketAddr,
    out: &mut MaybeUninit<libc::sockaddr_storage>,
) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                // In network order, as the octets are.
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than, and aligned for, every sockaddr
            // type; `out` is writable for its whole size.
            unsafe { out.as_mut_ptr().cast::<libc::sockaddr_in>().write(sin) };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { out.as_mut_ptr().cast::<libc::sockaddr_in6>().write(sin6) };
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// The address the kernel wrote into `s`; `None` for another family or a length too
/// short for the family.
///
/// # Safety
///
/// The first `len` bytes of `s` are initialized: `len` is the address length the kernel
/// reported for what it wrote there (recvmmsg's `msg_namelen`).
pub(crate) unsafe fn read(
    s: &MaybeUninit<libc::sockaddr_storage>,
    len: libc::socklen_t,
) -> Option<SocketAddr> {
    let len = (len as usize).min(size_of::<libc::sockaddr_storage>());
    if len < size_of::<libc::sa_family_t>() {
        return None;
    }
    let s = s.as_ptr();
    // SAFETY: ss_family leads the storage, and the caller says its bytes are initialized.
    let family = libc::c_int::from(unsafe { (*s).ss_family });
    match family {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, whose bytes the
            // caller says are initialized; sockaddr_storage is aligned for it.
            let a = unsafe { s.cast::<libc::sockaddr_in>().read() };
            let ip = Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::from((ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { s.cast::<libc::sockaddr_in6>().read() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zeroed() -> MaybeUninit<libc::sockaddr_storage> {
        MaybeUninit::zeroed()
    }

    #[test]
    fn addresses_survive_the_round_trip() {
        let v6 = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 3478, 0x1234, 7));
        for addr in [
            "127.0.0.1:3478".parse().unwrap(),
            "10.1.2.3:1".parse().unwrap(),
            v6,
        ] {
            let mut s = zeroed();
            let len = write(addr, &mut s);
            // SAFETY: zeroed, then partly overwritten: initialized throughout.
            assert_eq!(unsafe { read(&s, len) }, Some(addr));
        }
    }

    #[test]
    fn short_lengths_and_other_families_read_as_none() {
        let mut s = zeroed();
        let len = write("[::1]:9".parse().unwrap(), &mut s);
        // SAFETY (all three reads): zeroed, then partly overwritten.
        assert_eq!(unsafe { read(&s, len - 1) }, None);
        assert_eq!(unsafe { read(&s, 1) }, None);
        // SAFETY: the storage is initialized throughout; ss_family is a plain integer.
        unsafe { (*s.as_mut_ptr()).ss_family = libc::AF_UNIX as libc::sa_family_t };
        assert_eq!(unsafe { read(&s, len) }, None);
    }
}
