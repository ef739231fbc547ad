//! Request errors and their one mapping to the wire (RFC 8489 section 14.8, RFC 8656
//! section 19, RFC 6062 section 6.3).

use super::Server;
use super::allocation::FiveTuple;
use crate::auth::AuthFailure;
use crate::auth::credentials::Key;
use crate::proto::codec::{self, ResponseAttr};
use crate::proto::scan::Scan;
use std::time::Instant;

/// Everything a request handler can refuse with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// 300: draining; the client should use the ALTERNATE-SERVER given.
    TryAlternate,
    /// 400: malformed, or a required attribute missing or invalid.
    BadRequest,
    /// 401: no or wrong credentials; answered with REALM and a fresh NONCE.
    Unauthorized(AuthFailure),
    /// 403: the peer address is refused by policy.
    Forbidden,
    /// 405: MOBILITY-TICKET while `mobility` is off (RFC 8016 section 3.4).
    MobilityForbidden,
    /// 420: unknown comprehension-required attributes (listed from the scan).
    UnknownAttribute,
    /// 437: no allocation for this 5-tuple, or an Allocate on an existing one.
    AllocationMismatch,
    /// 438: the NONCE is stale or not ours; answered with a fresh one.
    StaleNonce,
    /// 440: no relay address of the requested family.
    AddressFamilyNotSupported,
    /// 441: a different USERNAME than the one that created the allocation.
    WrongCredentials,
    /// 442: REQUESTED-TRANSPORT other than UDP, or TCP with `no-tcp-relay`.
    UnsupportedTransportProtocol,
    /// 443: the peer's family differs from the relayed address's.
    PeerAddressFamilyMismatch,
    /// 446: a Connect to a peer the allocation is connecting or connected to.
    ConnectionAlreadyExists,
    /// 447: the TCP connection to the peer failed or timed out.
    ConnectionTimeoutOrFailure,
    /// 486: the user's allocation quota is reached.
    AllocationQuotaReached,
    /// 508: server capacity (ports, total quota, per-allocation caps).
    InsufficientCapacity,
}

impl RequestError {
    pub fn code(self) -> u16 {
        match self {
            Self::TryAlternate => 300,
            Self::BadRequest => 400,
            Self::Unauthorized(_) => 401,
            Self::Forbidden => 403,
            Self::MobilityForbidden => 405,
            Self::UnknownAttribute => 420,
            Self::AllocationMismatch => 437,
            Self::StaleNonce => 438,
            Self::AddressFamilyNotSupported => 440,
            Self::WrongCredentials => 441,
            Self::UnsupportedTransportProtocol => 442,
            Self::PeerAddressFamilyMismatch => 443,
            Self::ConnectionAlreadyExists => 446,
            Self::ConnectionTimeoutOrFailure => 447,
            Self::AllocationQuotaReached => 486,
            Self::InsufficientCapacity => 508,
        }
    }

    /// Challenges carry REALM and NONCE and never MESSAGE-INTEGRITY (RFC 8489 9.2.4).
    fn is_challenge(self) -> bool {
        matches!(self, Self::Unauthorized(_) | Self::StaleNonce)
    }
}

impl Server {
    /// Encodes the error response for `err`. `key` is the request's verified key; it adds
    /// MESSAGE-INTEGRITY to every error but the challenges.
    pub(super) fn error_response(
        &mut self,
        now: Instant,
        tuple: &FiveTuple,
        scan: &Scan,
        err: RequestError,
        key: Option<&Key>,
    ) -> Option<Vec<u8>> {
        let nonce;
        self.stats.error(err.code());
        match err {
            RequestError::Unauthorized(reason) => self.stats.auth_failure(reason),
            RequestError::StaleNonce => self.stats.auth_failure(AuthFailure::StaleNonce),
            _ => {}
        }
        let mut attrs = vec![ResponseAttr::ErrorCode(err.code())];
        if err.is_challenge() {
            nonce = self.nonces.issue(tuple.client.ip(), self.unix(now));
            attrs.push(ResponseAttr::Realm(self.cfg.credentials.realm()));
            attrs.push(ResponseAttr::Nonce(&nonce));
        }
        if err == RequestError::UnknownAttribute {
            attrs.push(ResponseAttr::UnknownAttributes(scan.unknown()));
        }
        if let (RequestError::TryAlternate, Some(alt)) = (err, self.cfg.alternate_server) {
            attrs.push(ResponseAttr::AlternateServer(alt));
        }
        let key = if err.is_challenge() { None } else { key };
        codec::encode(
            scan.method,
            false,
            &scan.txn,
            &attrs,
            key.map(|k| &k[..]),
            scan.fingerprint,
        )
    }
}
