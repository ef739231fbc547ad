//! What the tools read from responses without decoding them fully, and the credentials
//! they sign requests with (requests are written with the core's `MessageWriter`).

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
