//! Why a request did not authenticate: one enum, rendered as a log phrase and as a
//! metric label, never matched back from text.

/// The reason behind a 401 (or, for [`AuthFailure::StaleNonce`], a 438).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthFailure {
    /// No MESSAGE-INTEGRITY: the normal first challenge of every client.
    NoCredentials,
    /// MESSAGE-INTEGRITY did not verify with the user's key.
    WrongPassword,
    /// The REALM is not this server's.
    WrongRealm,
    /// Neither a static user nor a REST username.
    UnknownUser,
    /// A REST username whose expiry has passed.
    ExpiredRest,
    /// A REST username further ahead than `max-credential-ttl`.
    BeyondMaxTtl,
    /// The NONCE is stale or not this server's (answered 438).
    StaleNonce,
    /// The user is on the revocation list (an operator's, or the fleet's).
    Revoked,
}

impl AuthFailure {
    /// Every reason, in the order metrics list them.
    pub const ALL: [AuthFailure; 8] = [
        Self::NoCredentials,
        Self::WrongPassword,
        Self::WrongRealm,
        Self::UnknownUser,
        Self::ExpiredRest,
        Self::BeyondMaxTtl,
        Self::StaleNonce,
        Self::Revoked,
    ];

    /// The phrase logged with a failed authentication.
    pub fn describe(self) -> &'static str {
        match self {
            Self::NoCredentials => "no credentials",
            Self::WrongPassword => "wrong password",
            Self::WrongRealm => "wrong realm",
            Self::UnknownUser => "unknown user",
            Self::ExpiredRest => "expired REST credential",
            Self::BeyondMaxTtl => "REST credential beyond the maximum TTL",
            Self::StaleNonce => "stale nonce",
            Self::Revoked => "revoked user",
        }
    }

    /// The `reason` label of `ferroturn_auth_failures_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::NoCredentials => "no_credentials",
            Self::WrongPassword => "wrong_password",
            Self::WrongRealm => "wrong_realm",
            Self::UnknownUser => "unknown_user",
            Self::ExpiredRest => "expired_rest_credential",
            Self::BeyondMaxTtl => "rest_credential_beyond_the_maximum_ttl",
            Self::StaleNonce => "stale_nonce",
            Self::Revoked => "revoked",
        }
    }

    /// Its index in [`AuthFailure::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::AuthFailure;

    #[test]
    fn all_lists_every_reason_at_its_index() {
        for (i, r) in AuthFailure::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
