//! Which keys a USERNAME may authenticate with: static users and REST secrets, all at
//! once. Secrets and passwords live only here and are never formatted into a log line.

use super::AuthFailure;
use super::rest::{RestError, parse_rest_username, rest_password};
use crate::proto::integrity::long_term_key;
use std::collections::HashMap;
use std::fmt;

/// A long-term credential key: MD5(username:realm:password).
pub type Key = [u8; 16];

/// The configured credentials of one realm.
#[derive(Clone)]
pub struct Credentials {
    realm: String,
    secrets: Vec<Vec<u8>>,
    users: HashMap<String, Key>,
    separator: char,
    max_ttl: Option<u64>,
    /// Users refused until a time (unix seconds): the quota owner, so every REST
    /// username of a revoked user is refused.
    revoked: HashMap<String, u64>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("realm", &self.realm)
            .field("secrets", &self.secrets.len())
            .field("users", &self.users.len())
            .field("revoked", &self.revoked.len())
            .finish()
    }
}

/// A user's password as configured: plain, or coturn's `0x<hex key>` form.
#[derive(Clone)]
pub enum Password {
    Plain(String),
    Key(Key),
}

/// The candidate keys for a username, and what the username means.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Verify MESSAGE-INTEGRITY against each key; `user` names the quota owner and
    /// `expiry` is the REST expiry (unix seconds), if any.
    Keys {
        keys: Vec<Key>,
        user: String,
        expiry: Option<u64>,
    },
    /// Not a valid user: the caller verifies against a decoy key anyway (so an unknown
    /// user costs the same work as a known one), then answers 401.
    Unknown(AuthFailure),
}

impl Credentials {
    pub fn new(
        realm: String,
        secrets: Vec<String>,
        users: Vec<(String, Password)>,
        separator: char,
        max_ttl: Option<u64>,
    ) -> Self {
        let users = users
            .into_iter()
            .map(|(name, pw)| {
                let key = match pw {
                    Password::Plain(p) => long_term_key(&name, &realm, p.as_bytes()),
                    Password::Key(k) => k,
                };
                (name, key)
            })
            .collect();
        Self {
            realm,
            secrets: secrets.into_iter().map(String::into_bytes).collect(),
            users,
            separator,
            max_ttl,
            revoked: HashMap::new(),
        }
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// These credentials with a user store's (the fleet's Redis) added: its REST secrets
    /// after the configured ones, its users beside them (a name configured here keeps
    /// its configured key), and `revoked`: users refused until a time (unix seconds).
    pub fn with_store(
        &self,
        secrets: &[String],
        users: &[(String, Key)],
        revoked: &[(String, u64)],
    ) -> Credentials {
        let mut out = self.clone();
        for (user, until) in revoked {
            let at = out.revoked.entry(user.clone()).or_insert(*until);
            *at = (*at).max(*until);
        }
        for s in secrets {
            if !out.secrets.iter().any(|have| have == s.as_bytes()) {
                out.secrets.push(s.as_bytes().to_vec());
            }
        }
        for (name, key) in users {
            out.users.entry(name.clone()).or_insert(*key);
        }
        out
    }

    /// Whether `username` is a REST username whose expiry has passed at `now` (a static
    /// user never expires).
    pub fn is_expired_rest(&self, username: &str, now: u64) -> bool {
        !self.users.contains_key(username)
            && matches!(
                parse_rest_username(username, self.separator, now, None),
                Err(super::rest::RestError::Expired)
            )
    }

    /// Whether `user` (the quota owner: a static user, or a REST username's user part) is
    /// revoked at `now`.
    pub fn is_revoked(&self, user: &str, now: u64) -> bool {
        self.revoked.get(user).is_some_and(|until| *until > now)
    }

    /// The keys `username` may use at `now` (unix seconds). A static user wins over a
    /// REST-shaped name. A revoked user gets none.
    pub fn lookup(&self, username: &str, now: u64) -> Lookup {
        match self.lookup_keys(username, now) {
            Lookup::Keys { user, .. } if self.is_revoked(&user, now) => {
                Lookup::Unknown(AuthFailure::Revoked)
            }
            found => found,
        }
    }

    fn lookup_keys(&self, username: &str, now: u64) -> Lookup {
        if let Some(key) = self.users.get(username) {
            return Lookup::Keys {
                keys: vec![*key],
                user: username.to_owned(),
                expiry: None,
            };
        }
        if self.secrets.is_empty() {
            return Lookup::Unknown(AuthFailure::UnknownUser);
        }
        match parse_rest_username(username, self.separator, now, self.max_ttl) {
            Ok((expiry, user)) => {
                let keys = self
                    .secrets
                    .iter()
                    .map(|s| {
                        let password = rest_password(s, username);
                        long_term_key(username, &self.realm, password.as_bytes())
                    })
                    .collect();
                Lookup::Keys {
                    keys,
                    user: user.to_owned(),
                    expiry: Some(expiry),
                }
            }
            Err(RestError::Expired) => Lookup::Unknown(AuthFailure::ExpiredRest),
            Err(RestError::TooFarAhead) => Lookup::Unknown(AuthFailure::BeyondMaxTtl),
            Err(RestError::NotATimestamp) => Lookup::Unknown(AuthFailure::UnknownUser),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::rest::rest_credentials;

    fn creds() -> Credentials {
        Credentials::new(
            "example.org".into(),
            vec!["old".into(), "new".into()],
            vec![("alice".into(), Password::Plain("pw".into()))],
            ':',
            Some(86_400),
        )
    }

    #[test]
    fn static_users_and_every_secret_give_keys() {
        let c = creds();
        match c.lookup("alice", 0) {
            Lookup::Keys { keys, .. } => {
                assert_eq!(keys, vec![long_term_key("alice", "example.org", b"pw")])
            }
            other => panic!("{other:?}"),
        }
        let (u, p) = rest_credentials("new", "bob", 2000, ':');
        match c.lookup(&u, 1000) {
            Lookup::Keys { keys, user, expiry } => {
                assert_eq!(user, "bob");
                assert_eq!(expiry, Some(2000));
                assert!(keys.contains(&long_term_key(&u, "example.org", p.as_bytes())));
                assert_eq!(keys.len(), 2);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_stores_users_and_secrets_add_to_the_configured_ones() {
        let stored_key = long_term_key("carol", "example.org", b"from-store");
        let c = creds().with_store(
            &["stored".into(), "new".into()],
            &[("carol".into(), stored_key), ("alice".into(), [0; 16])],
            &[],
        );
        assert!(
            matches!(c.lookup("carol", 0), Lookup::Keys { keys, .. } if keys == vec![stored_key])
        );
        let alice = long_term_key("alice", "example.org", b"pw");
        assert!(matches!(c.lookup("alice", 0), Lookup::Keys { keys, .. } if keys == vec![alice]));
        let (u, p) = rest_credentials("stored", "bob", 2000, ':');
        match c.lookup(&u, 1000) {
            Lookup::Keys { keys, .. } => {
                assert_eq!(keys.len(), 3, "old, new and stored; new only once");
                assert!(keys.contains(&long_term_key(&u, "example.org", p.as_bytes())));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn revoked_users_get_no_keys_until_their_time() {
        let c = creds().with_store(&[], &[], &[("alice".into(), 500), ("bob".into(), 1500)]);
        assert!(matches!(
            c.lookup("alice", 499),
            Lookup::Unknown(AuthFailure::Revoked)
        ));
        assert!(matches!(c.lookup("alice", 500), Lookup::Keys { .. }));
        // Every REST username of bob, whatever its expiry.
        let (u, _) = rest_credentials("new", "bob", 2000, ':');
        assert!(matches!(
            c.lookup(&u, 1000),
            Lookup::Unknown(AuthFailure::Revoked)
        ));
        assert!(matches!(c.lookup(&u, 1500), Lookup::Keys { .. }));
        assert!(c.is_revoked("bob", 1499) && !c.is_revoked("carol", 0));
    }

    #[test]
    fn bad_usernames_are_unknown() {
        let c = creds();
        assert!(matches!(c.lookup("mallory", 0), Lookup::Unknown(_)));
        assert!(matches!(c.lookup("999:bob", 1000), Lookup::Unknown(_)));
        assert!(matches!(c.lookup("9999999:bob", 1000), Lookup::Unknown(_)));
        assert!(!format!("{c:?}").contains("old"));
    }
}
