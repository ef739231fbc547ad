//! The PROXY protocol header (HAProxy's `proxy-protocol.txt`, version 1 in text and
//! version 2 in binary) that a load balancer sends first on a TCP connection to name the
//! client it relays. The `ppp` crate parses it; this module bounds it and reduces it to
//! what the server uses: how many bytes it takes and which client address it names.
//!
//! A header names no client (the connection's own peer then counts) when it is a
//! version 2 LOCAL command (the proxy's own health checks), a version 1 `UNKNOWN`, or a
//! version 2 PROXY command over anything but TCP over IPv4 or IPv6 (spec section 2.2:
//! the receiver then uses the real connection's addresses).

use ppp::v1;
use ppp::v2;
use std::net::{IpAddr, SocketAddr};

/// The longest header accepted: a version 1 header is at most 107 bytes, a version 2
/// header 16 bytes plus its addresses (at most 216) and TLVs. 1 KiB leaves room for the
/// TLVs load balancers add (TLS details, unique ids, cloud endpoint ids).
pub const MAX_HEADER: usize = 1024;

/// The version 2 signature (spec section 2.2).
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Version 1 headers start with this (spec section 2.1).
const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// The longest version 1 header, CRLF included (spec section 2.1).
const V1_MAX: usize = 107;
/// Version 2 fixed part: signature, version and command, family and protocol, length.
const V2_FIXED: usize = 16;

/// Which version of the protocol a header was written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    /// "1" or "2" (a metric label).
    pub fn label(self) -> &'static str {
        match self {
            Version::V1 => "1",
            Version::V2 => "2",
        }
    }
}

/// What the first bytes of a connection hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The start of a header, or nothing yet: more bytes are needed.
    Incomplete,
    /// A whole header of `len` bytes. `source` is the client it names; `None` when it
    /// names none (LOCAL, UNKNOWN, other protocols), and the connection's peer counts.
    Header {
        len: usize,
        version: Version,
        source: Option<SocketAddr>,
    },
    /// Not a PROXY header: anything else, or a malformed one.
    Malformed,
    /// A header longer than [`MAX_HEADER`] (or one that would be).
    TooLong,
}

/// Reads the header at the start of `bytes` (what arrived so far; bytes after the header
/// are left alone). Never reads past [`MAX_HEADER`] bytes.
pub fn parse(bytes: &[u8]) -> Parsed {
    let window = bytes.get(..MAX_HEADER).unwrap_or(bytes);
    // A version 2 header says its length up front: refuse a long one before it arrives.
    if let (Some(sig), Some(len)) = (window.get(..12), window.get(14..16)) {
        let declared = usize::from(u16::from_be_bytes([len[0], len[1]]));
        if sig == V2_SIGNATURE && V2_FIXED + declared > MAX_HEADER {
            return Parsed::TooLong;
        }
    }
    // A version 1 header is a line ending at its first CRLF: parsed once that is there
    // (a part cut at a space would read as a bad field), within the 107 bytes the spec
    // allows.
    if window.starts_with(V1_PREFIX)
        && window.len() < V1_MAX
        && !window.windows(2).any(|w| w == b"\r\n")
    {
        return Parsed::Incomplete;
    }
    match ppp::HeaderResult::parse(window) {
        // ppp ends a version 1 header at its first CR, whatever follows it.
        ppp::HeaderResult::V1(Ok(h)) if !h.header.ends_with("\r\n") => Parsed::Malformed,
        ppp::HeaderResult::V1(Ok(h)) => Parsed::Header {
            len: h.header.len(),
            version: Version::V1,
            source: match h.addresses {
                v1::Addresses::Tcp4(a) => {
                    Some(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                v1::Addresses::Tcp6(a) => Some(socket(a.source_address.into(), a.source_port)),
                v1::Addresses::Unknown => None,
            },
        },
        ppp::HeaderResult::V2(Ok(h)) => Parsed::Header {
            len: h.len(),
            version: Version::V2,
            source: match (h.command, h.protocol, h.addresses) {
                (v2::Command::Proxy, v2::Protocol::Stream, v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                (v2::Command::Proxy, v2::Protocol::Stream, v2::Addresses::IPv6(a)) => {
                    Some(socket(a.source_address.into(), a.source_port))
                }
                _ => None,
            },
        },
        r if ppp::PartialResult::is_incomplete(&r) => {
            if window.len() >= MAX_HEADER {
                Parsed::TooLong
            } else {
                Parsed::Incomplete
            }
        }
        _ => Parsed::Malformed,
    }
}

/// An address as the rest of the server sees clients: an IPv4 address written in IPv6
/// (`::ffff:a.b.c.d`) is the IPv4 address.
fn socket(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip.to_canonical(), port)
}

/// How the first bytes of a connection that must NOT carry a PROXY header look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// They begin with a PROXY header's signature.
    Header,
    /// Too few bytes to tell (a prefix of a signature).
    Unsure,
    /// Not a PROXY header.
    Other,
}

/// Whether `bytes` (the first bytes of a connection) begin a PROXY header of either
/// version.
pub fn start(bytes: &[u8]) -> Start {
    let mut unsure = false;
    for sig in [&V1_PREFIX[..], &V2_SIGNATURE[..]] {
        if bytes.starts_with(sig) {
            return Start::Header;
        }
        unsure |= !bytes.is_empty() && sig.starts_with(bytes);
    }
    if unsure || bytes.is_empty() {
        Start::Unsure
    } else {
        Start::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family_protocol: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family_protocol);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    #[test]
    fn v1_tcp4_and_tcp6_name_the_client_and_leave_what_follows() {
        let text = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\n\x00\x01";
        assert_eq!(
            parse(text),
            Parsed::Header {
                len: text.len() - 2,
                version: Version::V1,
                source: Some("192.0.2.7:40000".parse().unwrap()),
            }
        );
        let text = b"PROXY TCP6 2001:db8::7 2001:db8::1 40001 443\r\n";
        assert_eq!(
            parse(text),
            Parsed::Header {
                len: text.len(),
                version: Version::V1,
                source: Some("[2001:db8::7]:40001".parse().unwrap()),
            }
        );
        let text = b"PROXY TCP6 ::ffff:192.0.2.9 ::1 5 6\r\n";
        assert!(matches!(
            parse(text),
            Parsed::Header { source: Some(s), .. } if s == "192.0.2.9:5".parse().unwrap()
        ));
    }

    #[test]
    fn v1_unknown_names_no_client() {
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Parsed::Header {
                len: 15,
                version: Version::V1,
                source: None
            }
        );
    }

    #[test]
    fn v2_proxy_names_the_client_and_local_names_none() {
        let body = [192, 0, 2, 7, 198, 51, 100, 1, 0x9c, 0x40, 1, 187];
        let h = v2(1, 0x11, &body);
        assert_eq!(
            parse(&h),
            Parsed::Header {
                len: 28,
                version: Version::V2,
                source: Some("192.0.2.7:40000".parse().unwrap()),
            }
        );
        let mut body6 = [0u8; 36];
        body6[0] = 0x20;
        body6[1] = 0x01;
        body6[15] = 7;
        body6[32..34].copy_from_slice(&40001u16.to_be_bytes());
        assert!(matches!(
            parse(&v2(1, 0x21, &body6)),
            Parsed::Header { source: Some(s), len: 52, .. } if s == "[2001::7]:40001".parse().unwrap()
        ));
        // LOCAL (health checks), with or without addresses.
        assert!(matches!(
            parse(&v2(0, 0x00, &[])),
            Parsed::Header {
                source: None,
                len: 16,
                ..
            }
        ));
        assert!(matches!(
            parse(&v2(0, 0x11, &body)),
            Parsed::Header { source: None, .. }
        ));
        // PROXY over UDP or unspecified: the real peer counts.
        assert!(matches!(
            parse(&v2(1, 0x12, &body)),
            Parsed::Header { source: None, .. }
        ));
        // TLVs after the addresses belong to the header.
        let mut with_tlv = body.to_vec();
        with_tlv.extend_from_slice(&[0x04, 0, 2, 1, 2]);
        assert!(matches!(
            parse(&v2(1, 0x11, &with_tlv)),
            Parsed::Header { len: 33, .. }
        ));
    }

    #[test]
    fn every_prefix_of_a_header_is_incomplete() {
        let body = [192, 0, 2, 7, 198, 51, 100, 1, 0x9c, 0x40, 1, 187];
        let binary = v2(1, 0x11, &body);
        let text = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\n".to_vec();
        for h in [binary, text] {
            for n in 0..h.len() {
                assert_eq!(parse(&h[..n]), Parsed::Incomplete, "{n} bytes of {h:?}");
            }
        }
    }

    #[test]
    fn anything_else_is_malformed() {
        // A STUN Binding request, TLS, HTTP, a bad address, a bad version or command.
        let stun = [
            0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
        ];
        assert_eq!(parse(&stun), Parsed::Malformed);
        assert_eq!(parse(&[0x16, 3, 1, 0, 200, 1]), Parsed::Malformed);
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Parsed::Malformed);
        assert_eq!(
            parse(b"PROXY TCP4 300.0.0.1 1.1.1.1 1 2\r\n"),
            Parsed::Malformed
        );
        assert_eq!(parse(b"PROXY TCP4 ::1 ::1 1 2\r\n"), Parsed::Malformed);
        let mut bad = v2(1, 0x11, &[0; 12]);
        bad[12] = 0x11;
        assert_eq!(parse(&bad), Parsed::Malformed);
        assert_eq!(parse(&v2(3, 0x11, &[0; 12])), Parsed::Malformed);
        // Shorter than its family's addresses.
        assert_eq!(parse(&v2(1, 0x11, &[0; 4])), Parsed::Malformed);
    }

    #[test]
    fn a_version_1_header_ends_at_its_first_crlf() {
        // UNKNOWN ignores what comes before the CRLF, a line feed included.
        assert!(matches!(
            parse(b"PROXY UNKNOWN a\nb\r\nrest"),
            Parsed::Header {
                len: 19,
                source: None,
                ..
            }
        ));
        assert_eq!(parse(b"PROXY UNKNOWN a\nb\r"), Parsed::Incomplete);
        // A lone CR is no end (found by fuzzing: ppp took "\rI" for one).
        assert_eq!(
            parse(b"PROXY UNKNOWN 43OXY  \n\rI0;\r\n"),
            Parsed::Malformed
        );
        assert_eq!(parse(b"PROXY UNKNOWN 43OXY  \n\r"), Parsed::Incomplete);
    }

    #[test]
    fn long_headers_are_refused_before_they_arrive() {
        let mut h = v2(1, 0x11, &[]);
        h[14..16].copy_from_slice(&(MAX_HEADER as u16).to_be_bytes());
        assert_eq!(parse(&h), Parsed::TooLong);
        // A whole header of exactly the bound is fine.
        let body = vec![0u8; MAX_HEADER - V2_FIXED];
        assert!(matches!(
            parse(&v2(0, 0, &body)),
            Parsed::Header {
                len: MAX_HEADER,
                ..
            }
        ));
        // Text without an end.
        let mut text = b"PROXY TCP4 ".to_vec();
        text.resize(200, b'1');
        assert!(matches!(parse(&text), Parsed::Malformed | Parsed::TooLong));
    }

    #[test]
    fn start_tells_a_header_from_anything_else() {
        assert_eq!(start(b""), Start::Unsure);
        assert_eq!(start(b"PRO"), Start::Unsure);
        assert_eq!(start(b"PROXY TCP4"), Start::Header);
        assert_eq!(start(b"\r\n\r\n"), Start::Unsure);
        assert_eq!(start(&v2(1, 0x11, &[0; 12])), Start::Header);
        assert_eq!(start(&[0, 1, 0, 0]), Start::Other);
        assert_eq!(start(&[0x40, 0, 0, 4]), Start::Other);
        assert_eq!(start(b"PROXYZ"), Start::Other);
    }
}
