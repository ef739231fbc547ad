//! The long-term credential check of RFC 8489 section 9.2.4, in its order: no
//! MESSAGE-INTEGRITY (401), missing USERNAME/REALM/NONCE (400), stale or foreign NONCE
//! (438), unknown user or wrong integrity (401, the same shape either way).

use super::Server;
use super::allocation::FiveTuple;
use super::error::RequestError;
use crate::auth::credentials::{Key, Lookup};
use crate::auth::{AuthFailure, NonceCheck};
use crate::proto::Request;
use crate::proto::integrity;
use crate::proto::scan::Scan;
use std::time::Instant;

/// A request whose MESSAGE-INTEGRITY verified.
pub(super) struct Authenticated {
    pub key: Key,
    pub username: String,
    /// The quota owner.
    pub user: String,
}

impl Server {
    pub(super) fn authenticate(
        &self,
        now: Instant,
        tuple: &FiveTuple,
        buf: &[u8],
        scan: &Scan,
        req: &Request,
    ) -> Result<Authenticated, RequestError> {
        let mi_at = self.check_nonce(now, tuple, scan, req)?;
        let (Some(username), Some(realm)) = (&req.username, &req.realm) else {
            return Err(RequestError::BadRequest);
        };
        let unix = self.unix(now);
        // An existing allocation keeps authenticating with the key it was created with,
        // so a reload that rotates secrets or users does not cut calls in progress
        // (operators revoke with the admin API). With strict expiry an expired REST
        // username still stops here.
        if let Some(a) = self
            .table
            .id_by_tuple(tuple)
            .and_then(|id| self.table.get(id))
        {
            if &a.username == username && realm == self.cfg.credentials.realm() {
                if self.cfg.credentials.is_revoked(&a.user, unix) {
                    return self.reject(now, tuple, AuthFailure::Revoked);
                }
                if self.cfg.strict_expiry && self.cfg.credentials.is_expired_rest(username, unix) {
                    return self.reject(now, tuple, AuthFailure::ExpiredRest);
                }
                return if integrity::verify(buf, mi_at, &a.key) {
                    Ok(Authenticated {
                        key: a.key,
                        username: a.username.clone(),
                        user: a.user.clone(),
                    })
                } else {
                    self.reject(now, tuple, AuthFailure::WrongPassword)
                };
            }
        }
        match self.cfg.credentials.lookup(username, unix) {
            Lookup::Keys { keys, user, .. } => {
                let realm_ok = realm == self.cfg.credentials.realm();
                // Every key is tried, so the work does not depend on which one matches.
                let mut found = None;
                for key in keys {
                    if integrity::verify(buf, mi_at, &key) && found.is_none() {
                        found = Some(key);
                    }
                }
                match found {
                    Some(key) if realm_ok => Ok(Authenticated {
                        key,
                        username: username.clone(),
                        user,
                    }),
                    _ => self.reject(
                        now,
                        tuple,
                        if realm_ok {
                            AuthFailure::WrongPassword
                        } else {
                            AuthFailure::WrongRealm
                        },
                    ),
                }
            }
            Lookup::Unknown(reason) => {
                let _ = integrity::verify(buf, mi_at, &self.decoy);
                self.reject(now, tuple, reason)
            }
        }
    }

    /// The steps of section 9.2.4 that need no user: MESSAGE-INTEGRITY present (else
    /// 401), USERNAME, REALM and NONCE present (400), the NONCE ours, fresh and issued
    /// to this address (438). Returns where MESSAGE-INTEGRITY starts.
    pub(super) fn check_nonce(
        &self,
        now: Instant,
        tuple: &FiveTuple,
        scan: &Scan,
        req: &Request,
    ) -> Result<usize, RequestError> {
        let Some(mi_at) = scan.integrity else {
            return Err(RequestError::Unauthorized(AuthFailure::NoCredentials));
        };
        let (Some(_), Some(_), Some(nonce)) = (&req.username, &req.realm, &req.nonce) else {
            return Err(RequestError::BadRequest);
        };
        if self.nonces.check(nonce, tuple.client.ip(), self.unix(now)) != NonceCheck::Valid {
            return Err(RequestError::StaleNonce);
        }
        Ok(mi_at)
    }

    pub(super) fn reject(
        &self,
        now: Instant,
        tuple: &FiveTuple,
        reason: AuthFailure,
    ) -> Result<Authenticated, RequestError> {
        if self.noisy.allow(now) {
            tracing::info!(client = %tuple.client, reason = reason.describe(), "authentication failed");
        }
        Err(RequestError::Unauthorized(reason))
    }
}
