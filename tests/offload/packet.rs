//! Datagrams built and checked by hand: ChannelData, UDP with a checksum computed here
//! (sent through a raw socket, so the kernel sees a CHECKSUM_NONE skb), and a capture
//! socket that verifies every checksum of what arrives on an interface.

use ferroturn::offload::OffloadedChannel;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// How long a datagram that should arrive may take, and how long one that should not
/// is waited for.
pub const ARRIVES: Duration = Duration::from_secs(2);
pub const ABSENT: Duration = Duration::from_millis(200);

pub fn channel_data(channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut m = channel.to_be_bytes().to_vec();
    m.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    m.extend_from_slice(payload);
    m
}

/// What `sock` receives within `wait`, if anything.
pub fn recv(sock: &UdpSocket, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    sock.set_read_timeout(Some(wait)).expect("timeout");
    let mut buf = [0u8; 4096];
    match sock.recv_from(&mut buf) {
        Ok((n, from)) => Some((buf[..n].to_vec(), from)),
        Err(_) => None,
    }
}

/// A UDP socket bound to `addr`.
pub fn bind(addr: SocketAddr) -> UdpSocket {
    UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"))
}

/// The channel `channel` between sockets standing in for the client, the server's
/// listener, the allocation's relay socket and the peer.
pub fn channel_between(
    client: &UdpSocket,
    server: &UdpSocket,
    relay: &UdpSocket,
    peer: &UdpSocket,
    channel: u16,
) -> OffloadedChannel {
    let local = |s: &UdpSocket| s.local_addr().expect("local addr");
    OffloadedChannel {
        client: local(client),
        server: local(server),
        channel,
        relay: local(relay),
        peer: local(peer),
    }
}

fn sum16(data: &[u8], mut sum: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn pseudo_sum(src: IpAddr, dst: IpAddr, udp_len: usize) -> u32 {
    let mut sum = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => sum16(&d.octets(), sum16(&s.octets(), 0)),
        (IpAddr::V6(s), IpAddr::V6(d)) => sum16(&d.octets(), sum16(&s.octets(), 0)),
        _ => panic!("mixed families"),
    };
    sum += 17 + udp_len as u32;
    sum
}

/// A UDP header and payload with its checksum filled in.
pub fn udp_segment(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut seg = Vec::with_capacity(len);
    seg.extend_from_slice(&src.port().to_be_bytes());
    seg.extend_from_slice(&dst.port().to_be_bytes());
    seg.extend_from_slice(&(len as u16).to_be_bytes());
    seg.extend_from_slice(&[0, 0]);
    seg.extend_from_slice(payload);
    let mut check = !fold(sum16(&seg, pseudo_sum(src.ip(), dst.ip(), len)));
    if check == 0 {
        check = 0xffff;
    }
    seg[6..8].copy_from_slice(&check.to_be_bytes());
    seg
}

/// Whether a UDP segment's checksum is right (0 counts as right over IPv4).
pub fn udp_checksum_ok(src: IpAddr, dst: IpAddr, seg: &[u8]) -> bool {
    if src.is_ipv4() && seg.get(6..8) == Some(&[0, 0]) {
        return true;
    }
    fold(sum16(seg, pseudo_sum(src, dst, seg.len()))) == 0xffff
}

/// Sends `payload` from `src` to `dst` through a raw socket with a checksum computed
/// here: the kernel neither computes nor offloads it (CHECKSUM_NONE).
pub fn send_raw(src: SocketAddr, dst: SocketAddr, payload: &[u8]) {
    let domain = if src.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let sock = Socket::new(domain, Type::RAW, Some(Protocol::UDP)).expect("raw socket");
    sock.bind(&SockAddr::from(SocketAddr::new(src.ip(), 0)))
        .expect("bind raw socket");
    // Raw IPv6 sockets take the port field as the protocol: give 0.
    let to = SockAddr::from(SocketAddr::new(dst.ip(), 0));
    sock.send_to(&udp_segment(src, dst, payload), &to)
        .expect("send raw");
}

/// A UDP datagram as it arrived on an interface, every checksum verified.
#[derive(Debug)]
pub struct Captured {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub ttl: u8,
    pub payload: Vec<u8>,
}

/// An AF_PACKET socket on one interface that keeps the incoming UDP datagrams.
pub struct Capture {
    sock: Socket,
}

impl Capture {
    pub fn on(interface: &str) -> Capture {
        const ETH_P_ALL: u16 = 0x0003;
        let sock = Socket::new(
            Domain::from(libc::AF_PACKET),
            Type::DGRAM,
            Some(Protocol::from(i32::from(ETH_P_ALL.to_be()))),
        )
        .expect("AF_PACKET socket");
        let index = nix_ifindex(interface);
        // SAFETY: sockaddr_ll is plain data; all zeroes is valid.
        let mut ll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        ll.sll_family = libc::AF_PACKET as u16;
        ll.sll_protocol = ETH_P_ALL.to_be();
        ll.sll_ifindex = index as i32;
        // SAFETY: binding our own socket to a sockaddr_ll of the right size.
        let rc = unsafe {
            libc::bind(
                std::os::fd::AsRawFd::as_raw_fd(&sock),
                (&ll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(rc, 0, "bind AF_PACKET: {}", std::io::Error::last_os_error());
        Capture { sock }
    }

    /// The next incoming UDP datagram to `port` within `wait`, checksums verified
    /// (panics on a bad one).
    pub fn next_to(&self, port: u16, wait: Duration) -> Option<Captured> {
        let deadline = Instant::now() + wait;
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            self.sock
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("timeout");
            let Ok((n, from)) = self.sock.recv_from(&mut buf) else {
                return None;
            };
            // SAFETY: recv_from initialised the first n bytes.
            let pkt: Vec<u8> = buf[..n]
                .iter()
                .map(|b| unsafe { b.assume_init() })
                .collect();
            // SAFETY: an AF_PACKET socket's source address is a sockaddr_ll.
            let ll = unsafe { &*from.as_ptr().cast::<libc::sockaddr_ll>() };
            if ll.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            if let Some(c) = parse(&pkt) {
                if c.dst.port() == port {
                    return Some(c);
                }
            }
        }
    }
}

fn nix_ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).expect("interface name");
    // SAFETY: if_nametoindex reads a NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(index, 0, "no interface {name}");
    index
}

/// Parses an IP packet carrying UDP and verifies its checksums.
fn parse(pkt: &[u8]) -> Option<Captured> {
    let version = pkt.first()? >> 4;
    let (src, dst, ttl, seg) = if version == 4 {
        let ihl = usize::from(pkt[0] & 0xf) * 4;
        if pkt.len() < ihl + 8 || pkt[9] != 17 {
            return None;
        }
        assert_eq!(fold(sum16(&pkt[..ihl], 0)), 0xffff, "IPv4 header checksum");
        let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
        let src = IpAddr::from(<[u8; 4]>::try_from(&pkt[12..16]).ok()?);
        let dst = IpAddr::from(<[u8; 4]>::try_from(&pkt[16..20]).ok()?);
        (src, dst, pkt[8], pkt.get(ihl..total)?)
    } else if version == 6 {
        if pkt.len() < 48 || pkt[6] != 17 {
            return None;
        }
        let plen = usize::from(u16::from_be_bytes([pkt[4], pkt[5]]));
        let src = IpAddr::from(<[u8; 16]>::try_from(&pkt[8..24]).ok()?);
        let dst = IpAddr::from(<[u8; 16]>::try_from(&pkt[24..40]).ok()?);
        (src, dst, pkt[7], pkt.get(40..40 + plen)?)
    } else {
        return None;
    };
    let ulen = usize::from(u16::from_be_bytes([seg[4], seg[5]]));
    assert_eq!(ulen, seg.len(), "UDP length");
    assert!(
        udp_checksum_ok(src, dst, seg),
        "UDP checksum of {src} -> {dst}: {:02x?}",
        &seg[..8]
    );
    Some(Captured {
        src: SocketAddr::new(src, u16::from_be_bytes([seg[0], seg[1]])),
        dst: SocketAddr::new(dst, u16::from_be_bytes([seg[2], seg[3]])),
        ttl,
        payload: seg[8..].to_vec(),
    })
}
