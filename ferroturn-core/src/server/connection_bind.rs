//! ConnectionBind (RFC 6062 section 5.4): a new client connection names a peer
//! connection by its CONNECTION-ID and becomes its client data connection; from the
//! success response on, the I/O layer relays its bytes as they are, both ways.

use super::Server;
use super::allocation::{FiveTuple, Transport};
use super::auth::Authenticated;
use super::error::RequestError;
use super::request::Reply;
use super::tcp_relay::{ConnectionId, State};
use super::{Event, deadlines::Timer};
use crate::proto::Request;

impl Server {
    pub(super) fn handle_connection_bind(
        &mut self,
        tuple: FiveTuple,
        req: &Request,
        auth: &Authenticated,
    ) -> Result<Reply, RequestError> {
        // Section 5.4: only a TCP or TLS connection (not UDP or DTLS) can become a data
        // connection, and not one that carries an allocation (its control connection).
        if tuple.transport != Transport::Tcp || self.table.id_by_tuple(&tuple).is_some() {
            return Err(RequestError::BadRequest);
        }
        // Section 5.4: no CONNECTION-ID, or one that names no connection waiting for
        // its bind (unknown, still connecting, or bound already), is a 400.
        let conn = ConnectionId(req.connection_id.ok_or(RequestError::BadRequest)?);
        let c = self.tcp.get(conn).ok_or(RequestError::BadRequest)?;
        if c.state != State::Unbound {
            return Err(RequestError::BadRequest);
        }
        let a = self.table.get(c.alloc).ok_or(RequestError::BadRequest)?;
        // Only the allocation's own user binds its connections (RFC 8656 section 5:
        // another user's request about an allocation is a 441); the connection stays
        // waiting for its owner. The user, not the USERNAME: a TURN REST client may
        // fetch fresh credentials (a later expiry) for its data connections.
        if a.user != auth.user {
            return Err(RequestError::WrongCredentials);
        }
        let c = self.tcp.get_mut(conn).ok_or(RequestError::BadRequest)?;
        c.state = State::Bound { data: tuple };
        if let Some(at) = c.expires.take() {
            self.deadlines.cancel(at, Timer::TcpConnection(conn));
        }
        self.stats.tcp_bound += 1;
        self.push_event(Event::Splice {
            conn,
            client: tuple,
        });
        Ok(Reply::Success(Vec::new()))
    }
}
