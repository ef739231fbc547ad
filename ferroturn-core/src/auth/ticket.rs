//! MOBILITY-TICKETs (RFC 8016 section 3.3): what a client shows to take its allocation to
//! a new 5-tuple. The server keeps nothing per ticket; a ticket names its allocation and
//! carries a MAC under a key only the server knows.
//!
//! A ticket is `base64url(body || HMAC-SHA256(key, body)[..9])`, 32 ASCII characters,
//! where the 15-byte body is the owning shard (1 byte), the allocation's slot index and
//! generation (4 + 4), its epoch (2: how many times it moved, so a ticket from before a
//! move no longer names it) and an expiry in unix seconds (4). 32 printable bytes because
//! coturn's client keeps the ticket as a C string of at most 32 characters. A 72-bit tag
//! cannot be forged online; the body hides nothing secret (RFC 8016 leaves the format to
//! the server), so it is authenticated, not encrypted.
//!
//! The key is derived from the nonce key, which every shard shares, so any shard can
//! check a ticket and find which shard owns the allocation; it changes at every start.

use crate::server::AllocId;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

const BODY_LEN: usize = 15;
const TAG_LEN: usize = 9;
const RAW_LEN: usize = BODY_LEN + TAG_LEN;
/// Length of every ticket this server issues (base64 of 24 bytes, no padding).
pub const TICKET_LEN: usize = 32;

/// What a ticket says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    /// The shard that owns the allocation.
    pub shard: u8,
    pub alloc: AllocId,
    /// The allocation's move count when the ticket was issued.
    pub epoch: u16,
    /// Unix seconds after which the ticket is worthless.
    pub expiry: u32,
}

/// Issues and opens tickets.
#[derive(Clone)]
pub struct Tickets {
    key: [u8; 32],
}

impl Tickets {
    /// The ticket key derived from the server's nonce key (domain-separated, so a nonce
    /// tag is never a ticket tag).
    pub fn new(nonce_key: &[u8; 32]) -> Self {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(nonce_key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(b"ferroturn MOBILITY-TICKET key v1");
        Self {
            key: mac.finalize().into_bytes().into(),
        }
    }

    fn mac(&self, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(body);
        mac
    }

    /// The ticket for `t`, as it goes on the wire.
    pub fn seal(&self, t: &Ticket) -> [u8; TICKET_LEN] {
        let mut raw = [0u8; RAW_LEN];
        raw[0] = t.shard;
        raw[1..5].copy_from_slice(&t.alloc.index.to_be_bytes());
        raw[5..9].copy_from_slice(&t.alloc.generation.to_be_bytes());
        raw[9..11].copy_from_slice(&t.epoch.to_be_bytes());
        raw[11..15].copy_from_slice(&t.expiry.to_be_bytes());
        let tag = self.mac(&raw[..BODY_LEN]).finalize().into_bytes();
        raw[BODY_LEN..].copy_from_slice(&tag[..TAG_LEN]);
        let mut out = [0u8; TICKET_LEN];
        // 24 bytes are exactly 32 base64 characters.
        let n = URL_SAFE_NO_PAD
            .encode_slice(raw, &mut out)
            .unwrap_or_else(|_| unreachable!("32 bytes hold the encoding of 24"));
        debug_assert_eq!(n, TICKET_LEN);
        out
    }

    /// What `ticket` says, if this server issued it (the tag is checked in constant
    /// time); `None` for anything else, whatever its length or contents.
    pub fn open(&self, ticket: &[u8]) -> Option<Ticket> {
        if ticket.len() != TICKET_LEN {
            return None;
        }
        let mut raw = [0u8; RAW_LEN + 2];
        match URL_SAFE_NO_PAD.decode_slice(ticket, &mut raw) {
            Ok(RAW_LEN) => {}
            _ => return None,
        }
        self.mac(&raw[..BODY_LEN])
            .verify_truncated_left(&raw[BODY_LEN..RAW_LEN])
            .ok()?;
        let be32 = |at: usize| u32::from_be_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
        Some(Ticket {
            shard: raw[0],
            alloc: AllocId {
                index: be32(1),
                generation: be32(5),
            },
            epoch: u16::from_be_bytes([raw[9], raw[10]]),
            expiry: be32(11),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Ticket {
        Ticket {
            shard: 3,
            alloc: AllocId {
                index: 70_000,
                generation: 9,
            },
            epoch: 2,
            expiry: 1_700_000_600,
        }
    }

    #[test]
    fn a_ticket_opens_with_its_key_only_and_is_printable() {
        let t = Tickets::new(&[1; 32]);
        let sealed = t.seal(&sample());
        assert_eq!(sealed.len(), TICKET_LEN);
        assert!(sealed.iter().all(|b| b.is_ascii_graphic()));
        assert_eq!(t.open(&sealed), Some(sample()));
        assert_eq!(Tickets::new(&[2; 32]).open(&sealed), None);
    }

    #[test]
    fn any_changed_character_or_length_is_refused() {
        let t = Tickets::new(&[1; 32]);
        let sealed = t.seal(&sample());
        for i in 0..TICKET_LEN {
            let mut bad = sealed;
            bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
            assert_eq!(t.open(&bad), None, "character {i}");
        }
        assert_eq!(t.open(&sealed[..31]), None);
        assert_eq!(t.open(&[sealed.as_slice(), b"A"].concat()), None);
        assert_eq!(t.open(b""), None);
        assert_eq!(t.open(&[0xFF; TICKET_LEN]), None);
    }
}
