//! The STUN messages the tools write and read by hand, and the credentials they sign
//! them with.

use std::net::SocketAddr;

/// TURN REST credentials for `user` valid for a day, or the static pair given.
pub fn credentials(secret: Option<&str>, user: &str, password: Option<&str>) -> (String, String) {
    match (secret, password) {
        (_, Some(p)) => (user.to_owned(), p.to_owned()),
        (Some(s), None) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            ferroturn::credentials::rest_credentials(s, user, now + 86_400, ':')
        }
        (None, None) => (user.to_owned(), String::new()),
    }
}

/// A STUN request written by hand for load tools: stun-rs validates USERNAME, REALM and
/// NONCE through a grammar parser, which costs a generator more CPU per request than the
/// server under test spends. MESSAGE-INTEGRITY and FINGERPRINT come from the library.
pub struct RequestWriter {
    msg: Vec<u8>,
    txn: [u8; 12],
}

impl RequestWriter {
    pub fn new(method: u16, txn: [u8; 12]) -> Self {
        use ferroturn_core::proto::wire::{Class, MAGIC_COOKIE, message_type};
        let mut msg = Vec::with_capacity(192);
        msg.extend_from_slice(&message_type(method, Class::Request).to_be_bytes());
        msg.extend_from_slice(&[0, 0]);
        msg.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        msg.extend_from_slice(&txn);
        Self { msg, txn }
    }

    /// Appends attribute `kind` with `value`, padded to 4 bytes.
    pub fn attr(mut self, kind: u16, value: &[u8]) -> Self {
        let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
        self.msg.extend_from_slice(&kind.to_be_bytes());
        self.msg.extend_from_slice(&len.to_be_bytes());
        self.msg.extend_from_slice(value);
        let padded = ferroturn_core::proto::wire::padded(self.msg.len());
        self.msg.resize(padded, 0);
        self
    }

    /// Appends an XOR address attribute (XOR-PEER-ADDRESS and the like).
    pub fn xor_address(self, kind: u16, addr: SocketAddr) -> Self {
        let mut value = [0u8; 20];
        let txn = self.txn;
        let n = ferroturn_core::proto::wire::encode_xor_address(addr, &txn, &mut value);
        self.attr(kind, &value[..n.unwrap_or(0)])
    }

    /// Sets the length and appends MESSAGE-INTEGRITY (with `key`) and FINGERPRINT.
    pub fn finish(mut self, key: Option<&[u8]>) -> Vec<u8> {
        ferroturn_core::proto::integrity::seal(&mut self.msg, key, true);
        self.msg
    }
}

/// What a load tool reads from a response, borrowed from the datagram.
#[derive(Debug, Default)]
pub struct ResponseFields<'a> {
    pub success: bool,
    pub error_code: Option<u16>,
    pub realm: Option<&'a [u8]>,
    pub nonce: Option<&'a [u8]>,
}

/// Reads a success or error response (no integrity check: the tools trust the server);
/// `None` for anything else or a malformed message.
pub fn read_response(msg: &[u8]) -> Option<ResponseFields<'_>> {
    use ferroturn_core::proto::wire::{
        Class, HEADER_LEN, MAGIC_COOKIE, attr, be16, be32, padded, split_message_type,
    };
    if be32(msg, 4)? != MAGIC_COOKIE {
        return None;
    }
    let mut r = ResponseFields {
        success: match split_message_type(be16(msg, 0)?).1 {
            Class::Success => true,
            Class::Error => false,
            _ => return None,
        },
        ..ResponseFields::default()
    };
    let end = HEADER_LEN
        .checked_add(usize::from(be16(msg, 2)?))?
        .min(msg.len());
    let mut at = HEADER_LEN;
    while at + 4 <= end {
        let (kind, len) = (be16(msg, at)?, usize::from(be16(msg, at + 2)?));
        let value = msg.get(at + 4..at + 4 + len)?;
        match kind {
            attr::ERROR_CODE if value.len() >= 4 => {
                r.error_code = Some(u16::from(value[2] & 0x07) * 100 + u16::from(value[3]));
            }
            attr::REALM => r.realm = Some(value),
            attr::NONCE => r.nonce = Some(value),
            _ => {}
        }
        at += 4 + padded(len);
    }
    Some(r)
}
