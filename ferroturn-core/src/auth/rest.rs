//! TURN REST credentials (draft-uberti-behave-turn-rest-00): username
//! `<unix-expiry>[<sep><user>]`, password `base64(HMAC-SHA1(secret, username))`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

/// The password for a REST `username` under `secret`.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// A (username, password) pair for `user` expiring at `expiry` (unix seconds).
pub fn rest_credentials(
    secret: &str,
    user: &str,
    expiry: u64,
    separator: char,
) -> (String, String) {
    let username = if user.is_empty() {
        expiry.to_string()
    } else {
        format!("{expiry}{separator}{user}")
    };
    let password = rest_password(secret.as_bytes(), &username);
    (username, password)
}

/// Why a REST username is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestError {
    /// The timestamp part is not a decimal number that fits in 64 bits.
    NotATimestamp,
    /// The timestamp is in the past.
    Expired,
    /// The timestamp lies further ahead than the configured maximum TTL.
    TooFarAhead,
}

/// Splits a REST username into (expiry, user part) and checks the expiry against `now`
/// and `max_ttl`.
pub fn parse_rest_username(
    username: &str,
    separator: char,
    now: u64,
    max_ttl: Option<u64>,
) -> Result<(u64, &str), RestError> {
    let (stamp, user) = match username.split_once(separator) {
        Some((stamp, user)) => (stamp, user),
        None => (username, ""),
    };
    if stamp.is_empty() || stamp.len() > 20 || !stamp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RestError::NotATimestamp);
    }
    let expiry: u64 = stamp.parse().map_err(|_| RestError::NotATimestamp)?;
    if expiry < now {
        return Err(RestError::Expired);
    }
    if let Some(max) = max_ttl {
        if expiry - now > max {
            return Err(RestError::TooFarAhead);
        }
    }
    Ok((expiry, user))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_matches_the_reference_construction() {
        // HMAC-SHA1("secret", "1700000000:alice"), base64: computed independently with
        // `printf %s 1700000000:alice | openssl dgst -sha1 -hmac secret -binary | base64`.
        let (u, p) = rest_credentials("secret", "alice", 1_700_000_000, ':');
        assert_eq!(u, "1700000000:alice");
        assert_eq!(p, "d8soP47RbdIKLDUOpnJPVQyq5Ts=");
        assert_eq!(p.len(), 28);
        assert_eq!(rest_credentials("secret", "", 5, ':').0, "5");
    }

    #[test]
    fn usernames_are_checked() {
        let now = 1_000;
        assert_eq!(
            parse_rest_username("2000:bob", ':', now, None),
            Ok((2000, "bob"))
        );
        assert_eq!(parse_rest_username("2000", ':', now, None), Ok((2000, "")));
        assert_eq!(
            parse_rest_username("2000|bob:x", '|', now, None),
            Ok((2000, "bob:x"))
        );
        assert_eq!(
            parse_rest_username("999:bob", ':', now, None),
            Err(RestError::Expired)
        );
        assert_eq!(
            parse_rest_username("bob:2000", ':', now, None),
            Err(RestError::NotATimestamp)
        );
        assert_eq!(
            parse_rest_username("-5:bob", ':', now, None),
            Err(RestError::NotATimestamp)
        );
        assert_eq!(
            parse_rest_username("+5:bob", ':', now, None),
            Err(RestError::NotATimestamp)
        );
        assert_eq!(
            parse_rest_username("99999999999999999999999:bob", ':', now, None),
            Err(RestError::NotATimestamp)
        );
        assert_eq!(
            parse_rest_username("18446744073709551616:bob", ':', now, None),
            Err(RestError::NotATimestamp)
        );
        assert_eq!(
            parse_rest_username("900000:bob", ':', now, Some(86_400)),
            Err(RestError::TooFarAhead)
        );
        assert_eq!(
            parse_rest_username("80000:bob", ':', now, Some(86_400)),
            Ok((80000, "bob"))
        );
    }
}
