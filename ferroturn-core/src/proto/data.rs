//! The data path: ChannelData and Send/Data indications, parsed and built in place.
//!
//! The caller owns the buffer. Peer datagrams are received at offset [`HEADROOM`] so the
//! ChannelData header or the Data indication header is written in front of the payload,
//! and its padding behind it, without moving a byte of payload.

use super::scan::Scan;
use super::wire::{
    self, CHANNEL_DATA_HEADER_LEN, Class, HEADER_LEN, MAGIC_COOKIE, attr, be16, method, padded,
};
use std::net::SocketAddr;
use std::ops::Range;

/// Bytes reserved in front of a received peer datagram: a Data indication header with an
/// IPv6 XOR-PEER-ADDRESS (20 + 24 + 4).
pub const HEADROOM: usize = 48;
/// Bytes reserved behind a received payload for DATA / ChannelData padding.
pub const TAILROOM: usize = 4;

/// Channel numbers: RFC 8656 section 12 narrowed the range to 0x4000-0x4FFF, but RFC 5766
/// clients (coturn's among them) still pick from 0x4000-0x7FFF, so the old range is
/// accepted (a deviation listed in ARCHITECTURE.md). Every ChannelData header (first
/// two bits 01) therefore names a valid number.
pub const CHANNEL_MIN: u16 = 0x4000;
pub const CHANNEL_MAX: u16 = 0x7FFF;

/// Whether a datagram starts like ChannelData (first two bits 01, RFC 8656 section 12.4).
#[inline]
pub fn is_channel_data(buf: &[u8]) -> bool {
    matches!(buf.first(), Some(b) if b & 0xC0 == 0x40)
}

/// Parses a ChannelData message at the start of `buf`: the channel number and the payload
/// range. `None` (drop) for a channel number outside the valid range or a length field
/// larger than the bytes received; bytes past the length (UDP padding) are ignored.
#[inline]
pub fn parse_channel_data(buf: &[u8]) -> Option<(u16, Range<usize>)> {
    let channel = be16(buf, 0)?;
    let len = be16(buf, 2)? as usize;
    if !(CHANNEL_MIN..=CHANNEL_MAX).contains(&channel) {
        return None;
    }
    let end = CHANNEL_DATA_HEADER_LEN + len;
    if end > buf.len() {
        return None;
    }
    Some((channel, CHANNEL_DATA_HEADER_LEN..end))
}

/// Writes a ChannelData header in front of `payload`; returns the message range. With
/// `pad` (stream transports, RFC 8656 section 12.5) zero padding to a multiple of 4 is
/// written behind the payload and included.
#[inline]
pub fn frame_channel_data(
    buf: &mut [u8],
    payload: Range<usize>,
    channel: u16,
    pad: bool,
) -> Option<Range<usize>> {
    let start = payload.start.checked_sub(CHANNEL_DATA_HEADER_LEN)?;
    let len = u16::try_from(payload.len()).ok()?;
    let end = if pad {
        start + padded(payload.end - start)
    } else {
        payload.end
    };
    buf.get_mut(payload.end..end)?.fill(0);
    let header = buf.get_mut(start..payload.start)?;
    header[..2].copy_from_slice(&channel.to_be_bytes());
    header[2..].copy_from_slice(&len.to_be_bytes());
    Some(start..end)
}

/// Writes a Data indication (RFC 8656 section 11.3) around `payload`: header,
/// XOR-PEER-ADDRESS and DATA attribute header in front, padding behind. No FINGERPRINT:
/// RFC 8656 leaves it optional and it would cost a CRC per packet.
#[inline]
pub fn frame_data_indication(
    buf: &mut [u8],
    payload: Range<usize>,
    peer: SocketAddr,
    txn: &[u8; 12],
) -> Option<Range<usize>> {
    let addr_len = if peer.is_ipv4() { 8 } else { 20 };
    let front = HEADER_LEN + 4 + addr_len + 4;
    let start = payload.start.checked_sub(front)?;
    let data_len = u16::try_from(payload.len()).ok()?;
    let end = payload.end + (padded(payload.len()) - payload.len());
    let body = u16::try_from(end - start - HEADER_LEN).ok()?;
    buf.get_mut(payload.end..end)?.fill(0);
    let h = buf.get_mut(start..payload.start)?;
    let msg_type = wire::message_type(method::DATA, Class::Indication);
    h[0..2].copy_from_slice(&msg_type.to_be_bytes());
    h[2..4].copy_from_slice(&body.to_be_bytes());
    h[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    h[8..20].copy_from_slice(txn);
    h[20..22].copy_from_slice(&attr::XOR_PEER_ADDRESS.to_be_bytes());
    h[22..24].copy_from_slice(&(addr_len as u16).to_be_bytes());
    wire::encode_xor_address(peer, txn, &mut h[24..24 + addr_len])?;
    let d = 24 + addr_len;
    h[d..d + 2].copy_from_slice(&attr::DATA.to_be_bytes());
    h[d + 2..d + 4].copy_from_slice(&data_len.to_be_bytes());
    Some(start..end)
}

/// The peer address and payload range of a pre-scanned Send indication (RFC 8656 section
/// 11.2); `None` if either attribute is missing or malformed (drop).
#[inline]
pub fn parse_send_indication(buf: &[u8], scan: &Scan) -> Option<(SocketAddr, Range<usize>)> {
    let peer = wire::decode_xor_address(buf.get(scan.peer.clone()?)?, &scan.txn)?;
    Some((peer, scan.data.clone()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::scan::scan;

    #[test]
    fn channel_data_bounds() {
        assert_eq!(
            parse_channel_data(&[0x40, 0x00, 0, 2, 9, 9]),
            Some((0x4000, 4..6))
        );
        // Length larger than the datagram: dropped, never read past the end.
        assert_eq!(parse_channel_data(&[0x40, 0x00, 0, 9, 9, 9]), None);
        // Channel numbers outside 0x4000-0x7FFF.
        assert_eq!(parse_channel_data(&[0x80, 0x00, 0, 0]), None);
        assert_eq!(parse_channel_data(&[0x3F, 0xFF, 0, 0]), None);
        assert_eq!(
            parse_channel_data(&[0x7F, 0xFF, 0, 0]),
            Some((0x7FFF, 4..4))
        );
        assert_eq!(parse_channel_data(&[0x40]), None);
        // UDP padding past the length is ignored.
        assert_eq!(
            parse_channel_data(&[0x4F, 0xFF, 0, 1, 7, 0, 0, 0]),
            Some((0x4FFF, 4..5))
        );
    }

    #[test]
    fn channel_data_header_goes_in_front_of_the_payload() {
        let mut buf = [0xAAu8; HEADROOM + 5 + TAILROOM];
        buf[HEADROOM..HEADROOM + 5].copy_from_slice(b"hello");
        let r = frame_channel_data(&mut buf, HEADROOM..HEADROOM + 5, 0x4001, true).unwrap();
        assert_eq!(
            &buf[r.clone()],
            &[0x40, 0x01, 0, 5, b'h', b'e', b'l', b'l', b'o', 0, 0, 0]
        );
        let r = frame_channel_data(&mut buf, HEADROOM..HEADROOM + 5, 0x4001, false).unwrap();
        assert_eq!(r.len(), 9);
        assert!(frame_channel_data(&mut buf, 2..7, 0x4001, false).is_none());
    }

    #[test]
    fn data_indication_is_a_valid_stun_message_for_both_families() {
        for peer in ["192.0.2.7:5000", "[2001:db8::7]:5000"] {
            let peer: SocketAddr = peer.parse().unwrap();
            let mut buf = [0u8; HEADROOM + 7 + TAILROOM];
            buf[HEADROOM..HEADROOM + 7].copy_from_slice(b"payload");
            let r =
                frame_data_indication(&mut buf, HEADROOM..HEADROOM + 7, peer, &[3; 12]).unwrap();
            let msg = &buf[r];
            let s = scan(msg).expect("data indication scans");
            assert_eq!((s.method, s.class), (method::DATA, Class::Indication));
            let (p, data) = parse_send_indication(msg, &s).unwrap();
            assert_eq!(p, peer);
            assert_eq!(&msg[data], b"payload");
        }
    }
}
