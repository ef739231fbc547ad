//! Wire constants and bounds-checked big-endian readers shared by the STUN scanner and
//! the data path. Nothing here panics on any input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// RFC 8489 section 5: the fixed magic cookie.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// RFC 8489 section 5: every STUN message starts with a 20-byte header.
pub const HEADER_LEN: usize = 20;
/// RFC 8656 section 12.4: the ChannelData header is 4 bytes.
pub const CHANNEL_DATA_HEADER_LEN: usize = 4;

/// Attribute types (RFC 8489 section 18.3, RFC 8656 section 18, RFC 6156, RFC 6062
/// section 6.2).
pub mod attr {
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    pub const LIFETIME: u16 = 0x000D;
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    pub const DATA: u16 = 0x0013;
    pub const REALM: u16 = 0x0014;
    pub const NONCE: u16 = 0x0015;
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    pub const EVEN_PORT: u16 = 0x0018;
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    pub const DONT_FRAGMENT: u16 = 0x001A;
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    pub const PASSWORD_ALGORITHM: u16 = 0x001D;
    pub const USERHASH: u16 = 0x001E;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const RESERVATION_TOKEN: u16 = 0x0022;
    pub const PRIORITY: u16 = 0x0024;
    pub const USE_CANDIDATE: u16 = 0x0025;
    pub const PADDING: u16 = 0x0026;
    pub const RESPONSE_PORT: u16 = 0x0027;
    pub const CONNECTION_ID: u16 = 0x002A;
    /// RFC 8656 section 18.11.
    pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
    /// RFC 8656 section 18.12.
    pub const ADDRESS_ERROR_CODE: u16 = 0x8001;
    /// ADDITIONAL-ADDRESS-FAMILY under the code point of the drafts before RFC 8656,
    /// which coturn (its client and server, 4.6 and since) still uses; unassigned by
    /// IANA. Read as ADDITIONAL-ADDRESS-FAMILY.
    pub const ADDITIONAL_ADDRESS_FAMILY_DRAFT: u16 = 0x8032;
    pub const SOFTWARE: u16 = 0x8022;
    pub const FINGERPRINT: u16 = 0x8028;
}

/// Method numbers (RFC 8489 section 18.2, RFC 8656 section 17, RFC 6062 section 6.1).
pub mod method {
    pub const BINDING: u16 = 0x001;
    pub const ALLOCATE: u16 = 0x003;
    pub const REFRESH: u16 = 0x004;
    pub const SEND: u16 = 0x006;
    pub const DATA: u16 = 0x007;
    pub const CREATE_PERMISSION: u16 = 0x008;
    pub const CHANNEL_BIND: u16 = 0x009;
    pub const CONNECT: u16 = 0x00A;
    pub const CONNECTION_BIND: u16 = 0x00B;
    pub const CONNECTION_ATTEMPT: u16 = 0x00C;
}

/// The four STUN message classes (RFC 8489 section 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

/// Splits a message type field into (method, class) per RFC 8489 figure 3.
pub fn split_message_type(t: u16) -> (u16, Class) {
    let method = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2);
    let class = match ((t >> 7) & 0x2) | ((t >> 4) & 0x1) {
        0 => Class::Request,
        1 => Class::Indication,
        2 => Class::Success,
        _ => Class::Error,
    };
    (method, class)
}

/// Joins (method, class) into the message type field per RFC 8489 figure 3.
pub fn message_type(method: u16, class: Class) -> u16 {
    let c: u16 = match class {
        Class::Request => 0,
        Class::Indication => 1,
        Class::Success => 2,
        Class::Error => 3,
    };
    (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((c & 0x1) << 4)
        | ((c & 0x2) << 7)
}

/// Reads a big-endian u16 at `at`, or `None` past the end.
#[inline]
pub fn be16(buf: &[u8], at: usize) -> Option<u16> {
    let b = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// Reads a big-endian u32 at `at`, or `None` past the end.
#[inline]
pub fn be32(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Attribute values are padded to a multiple of 4 bytes (RFC 8489 section 14).
#[inline]
pub const fn padded(len: usize) -> usize {
    (len + 3) & !3
}

/// Decodes an XOR-MAPPED-ADDRESS style value (RFC 8489 section 14.2). `txn` is the
/// 12-byte transaction id. Returns `None` for a malformed value.
pub fn decode_xor_address(value: &[u8], txn: &[u8; 12]) -> Option<SocketAddr> {
    let family = *value.get(1)?;
    let port = be16(value, 2)? ^ (MAGIC_COOKIE >> 16) as u16;
    match (family, value.len()) {
        (0x01, 8) => {
            let x = be32(value, 4)? ^ MAGIC_COOKIE;
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(x)), port))
        }
        (0x02, 20) => {
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            key[4..].copy_from_slice(txn);
            let mut ip = [0u8; 16];
            for (i, b) in ip.iter_mut().enumerate() {
                *b = value.get(4 + i)? ^ key[i];
            }
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        _ => None,
    }
}

/// Encodes `addr` as an XOR address value into `out`, returning the value length
/// (8 or 20), or `None` if `out` is too short.
pub fn encode_xor_address(addr: SocketAddr, txn: &[u8; 12], out: &mut [u8]) -> Option<usize> {
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    match addr.ip() {
        IpAddr::V4(ip) => {
            let out = out.get_mut(..8)?;
            out[0] = 0;
            out[1] = 0x01;
            out[2..4].copy_from_slice(&port.to_be_bytes());
            out[4..8].copy_from_slice(&(u32::from(ip) ^ MAGIC_COOKIE).to_be_bytes());
            Some(8)
        }
        IpAddr::V6(ip) => {
            let out = out.get_mut(..20)?;
            out[0] = 0;
            out[1] = 0x02;
            out[2..4].copy_from_slice(&port.to_be_bytes());
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            key[4..].copy_from_slice(txn);
            for (i, b) in ip.octets().iter().enumerate() {
                out[4 + i] = b ^ key[i];
            }
            Some(20)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_type_round_trips() {
        for method in [
            method::BINDING,
            method::ALLOCATE,
            method::CHANNEL_BIND,
            0xFFF,
        ] {
            for class in [
                Class::Request,
                Class::Indication,
                Class::Success,
                Class::Error,
            ] {
                assert_eq!(
                    split_message_type(message_type(method, class)),
                    (method, class)
                );
            }
        }
        assert_eq!(message_type(method::ALLOCATE, Class::Request), 0x0003);
        assert_eq!(message_type(method::ALLOCATE, Class::Success), 0x0103);
        assert_eq!(message_type(method::ALLOCATE, Class::Error), 0x0113);
        assert_eq!(message_type(method::SEND, Class::Indication), 0x0016);
        assert_eq!(message_type(method::DATA, Class::Indication), 0x0017);
    }

    #[test]
    fn xor_address_round_trips_both_families() {
        let txn = [7u8; 12];
        for addr in ["192.0.2.1:32853", "[2001:db8::1]:9"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let mut buf = [0u8; 20];
            let n = encode_xor_address(addr, &txn, &mut buf).unwrap();
            assert_eq!(decode_xor_address(&buf[..n], &txn), Some(addr));
        }
        assert_eq!(decode_xor_address(&[0, 1, 0], &txn), None);
        assert_eq!(decode_xor_address(&[0, 3, 0, 0, 0, 0, 0, 0], &txn), None);
    }

    #[test]
    fn readers_never_panic_past_the_end() {
        assert_eq!(be16(&[1], 0), None);
        assert_eq!(be32(&[1, 2, 3], 0), None);
        assert_eq!(be16(&[1, 2], usize::MAX), None);
    }
}
