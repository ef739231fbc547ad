//! The path every authenticated TURN request takes: decode, authenticate, answer a
//! retransmission from the cache, check unknown attributes, dispatch, respond.

use super::allocation::FiveTuple;
use super::auth::Authenticated;
use super::error::RequestError;
use super::{MAX_CLOSED, RETRANSMIT_WINDOW, Server};
use crate::proto::codec::{self, ResponseAttr};
use crate::proto::scan::Scan;
use crate::proto::wire::method;
use std::time::Instant;

/// What a handler answers.
pub(super) enum Reply {
    /// A success response with these attributes (MESSAGE-INTEGRITY is added).
    Success(Vec<ResponseAttr<'static>>),
    /// Answered later (Allocate waits for its relay socket).
    Pending,
    /// A retransmission: the bytes sent the first time.
    Retransmit(Vec<u8>),
}

impl Server {
    pub(super) fn handle_turn_request(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        buf: &[u8],
        scan: &Scan,
    ) {
        let req = match codec::decode_request(buf, scan) {
            Ok(req) => req,
            Err(_) => {
                return self.reply_unauthenticated(now, tuple, scan, RequestError::BadRequest);
            }
        };
        // RFC 8016: a Refresh with a MOBILITY-TICKET from a new 5-tuple is authenticated
        // against the allocation the ticket names, wherever that lives.
        if self.is_move(&tuple, scan, &req) {
            return self.handle_move(now, tuple, buf, scan, &req);
        }
        let auth = match self.authenticate(now, &tuple, buf, scan, &req) {
            Ok(auth) => auth,
            Err(e) => return self.reply_unauthenticated(now, tuple, scan, e),
        };
        // The nonce came back from where it was sent: the source receives what is sent to
        // it, and earns answers to its unauthenticated requests (see `limiter`).
        self.earn_credit(&tuple, buf.len());
        let result = self.dispatch(now, tuple, scan, &req, &auth);
        let response = match result {
            Ok(Reply::Pending) => return,
            Ok(Reply::Retransmit(bytes)) => return self.send_to_client(tuple, Some(bytes)),
            Ok(Reply::Success(attrs)) => codec::encode(
                scan.method,
                true,
                &scan.txn,
                &attrs,
                Some(&auth.key),
                scan.fingerprint,
            ),
            Err(e) => {
                tracing::debug!(client = %tuple.client, method = scan.method, code = e.code(), "request refused");
                self.error_response(now, &tuple, scan, e, Some(&auth.key))
            }
        };
        // A data connection has no allocation to keep its answer on, and the short list
        // of closed ones is for requests that deleted theirs.
        if let (Some(bytes), false) = (&response, scan.method == method::CONNECTION_BIND) {
            self.remember(now, tuple, scan.txn, bytes);
        }
        self.send_to_client(tuple, response);
    }

    fn dispatch(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        scan: &Scan,
        req: &crate::proto::Request,
        auth: &Authenticated,
    ) -> Result<Reply, RequestError> {
        if let Some(a) = self
            .table
            .id_by_tuple(&tuple)
            .and_then(|id| self.table.get(id))
        {
            // RFC 8656 section 5: only the user that created the allocation may use it;
            // a non-Allocate request from another user is 441, an Allocate on a 5-tuple
            // in use is 437 whoever sends it (section 7.2).
            if a.username != auth.username {
                return Err(if scan.method == method::ALLOCATE {
                    RequestError::AllocationMismatch
                } else {
                    RequestError::WrongCredentials
                });
            }
            // The Allocate is still being served (its lease asked for, its relay being
            // bound): a retransmission waits for the one answer it will get.
            if a.pending.is_some() && scan.method == method::ALLOCATE && a.allocate_txn == scan.txn
            {
                return Ok(Reply::Pending);
            }
        }
        if let Some(bytes) = self.retransmitted(&tuple, scan) {
            return Ok(Reply::Retransmit(bytes));
        }
        // RFC 8489 section 6.3.1: unknown comprehension-required attributes, after
        // authentication.
        if !scan.unknown().is_empty() {
            return Err(RequestError::UnknownAttribute);
        }
        match scan.method {
            method::ALLOCATE => self.handle_allocate(now, tuple, scan, req, auth),
            method::REFRESH => self.handle_refresh(now, tuple, req),
            method::CREATE_PERMISSION => self.handle_create_permission(now, tuple, req),
            method::CHANNEL_BIND => self.handle_channel_bind(now, tuple, req),
            method::CONNECT => self.handle_connect(now, tuple, scan, req),
            method::CONNECTION_BIND => self.handle_connection_bind(tuple, req, auth),
            _ => Err(RequestError::BadRequest),
        }
    }

    /// The cached answer to a retransmitted request, if this is one.
    fn retransmitted(&self, tuple: &FiveTuple, scan: &Scan) -> Option<Vec<u8>> {
        if let Some(a) = self
            .table
            .id_by_tuple(tuple)
            .and_then(|id| self.table.get(id))
        {
            if a.pending.is_some() {
                return None;
            }
            if scan.method == method::ALLOCATE && a.allocate_txn == scan.txn {
                return Some(a.allocate_response.clone());
            }
            return match &a.last_response {
                Some((txn, bytes)) if *txn == scan.txn => Some(bytes.clone()),
                _ => None,
            };
        }
        self.closed
            .iter()
            .find(|(t, txn, _, _)| t == tuple && *txn == scan.txn)
            .map(|(_, _, bytes, _)| bytes.clone())
    }

    /// Keeps a response for retransmissions: on the allocation, or, when the request
    /// deleted it, in the short list of closed ones.
    pub(super) fn remember(&mut self, now: Instant, tuple: FiveTuple, txn: [u8; 12], bytes: &[u8]) {
        if let Some(id) = self.table.id_by_tuple(&tuple) {
            if let Some(a) = self.table.get_mut(id) {
                a.last_response = Some((txn, bytes.to_vec()));
            }
            return;
        }
        if self.closed.len() >= MAX_CLOSED {
            self.closed.pop_front();
        }
        self.closed
            .push_back((tuple, txn, bytes.to_vec(), now + RETRANSMIT_WINDOW));
    }
}
