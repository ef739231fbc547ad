//! TURN over DTLS (RFC 7350) on the UDP side of the TLS ports, as coturn serves it: one
//! shard's DTLS sockets (SO_REUSEPORT siblings, like the UDP listeners) and sessions.
//!
//! A datagram from a client without a session goes to the stateless cookie gate
//! (`ferroturn_core::dtls::Gate`): a ClientHello without a valid cookie gets a
//! HelloVerifyRequest and leaves nothing behind; only one repeating a valid cookie, within
//! the connection caps, starts a [`Session`]. A session is a 5-tuple of its own
//! (`Transport::Dtls`, RFC 8656 section 3.1): every application data record is handed
//! to the core as one client datagram, and everything the core sends the client is
//! encrypted into one record each. Its allocation ends with it, as with a TCP
//! connection.
//!
//! Bounds: sessions count against `max-tcp-connections` and `max-tcp-connections-per-ip`
//! (taken when a valid cookie arrives, given back when the session ends); a handshake
//! must finish within `tcp-handshake-timeout`; a session without an allocation may stay
//! silent for `tcp-idle-timeout`, one with an allocation as long as the allocation
//! lives.

use crate::config::StreamLimits;
use crate::control::{CertStore, ConnLimits};
use crate::dtls::{DtlsError, Session, server_context};
use ferroturn_core::dtls::{Gate, HELLO_VERIFY_LEN, Verdict, parse_client_hello};
use ferroturn_core::server::{FiveTuple, ListenerId, Transport};
use ferroturn_udp::{self as udp, SendItem};
use mio::net::UdpSocket;
use openssl::ssl::SslContext;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

/// The largest plaintext of one record (RFC 6347 section 4.1: 2^14), with room to spare.
const MAX_PLAINTEXT: usize = 16 * 1024 + 2048;

/// A session's key: the DTLS socket (its index, the core's listener id) and the client.
pub type Key = (ListenerId, SocketAddr);

/// One DTLS association and what the shard knows of it.
struct Conn {
    session: Session,
    tuple: FiveTuple,
    /// The local address the client sends to (a wildcard socket answers from it).
    local: Option<IpAddr>,
    /// Handshake deadline, then idle deadline.
    deadline: Instant,
}

/// What a datagram did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// A session that ended (its allocation must go).
    pub ended: Option<FiveTuple>,
    /// A session that may have application data to read ([`Dtls::read`]).
    pub readable: Option<FiveTuple>,
}

/// One shard's DTLS sockets and sessions.
pub struct Dtls {
    pub sockets: Vec<UdpSocket>,
    wildcard: Vec<bool>,
    sessions: HashMap<Key, Conn>,
    gate: Gate,
    certs: Arc<CertStore>,
    /// The server configuration, and the certificate generation it was built for.
    ctx: Option<(u64, SslContext)>,
    limits: Arc<ConnLimits>,
    cfg: StreamLimits,
    /// One record's plaintext, handed to the core in place.
    pub plain: Box<[u8]>,
    hello_verify: [u8; HELLO_VERIFY_LEN],
    /// Sessions whose send failed, to be closed by the shard.
    pub failed: Vec<Key>,
}

impl Dtls {
    pub fn new(
        sockets: Vec<UdpSocket>,
        gate: Gate,
        certs: Arc<CertStore>,
        limits: Arc<ConnLimits>,
        cfg: StreamLimits,
    ) -> Self {
        Self {
            wildcard: sockets
                .iter()
                .map(|s| s.local_addr().is_ok_and(|a| a.ip().is_unspecified()))
                .collect(),
            sockets,
            sessions: HashMap::new(),
            gate,
            certs,
            ctx: None,
            limits,
            cfg,
            plain: vec![0; MAX_PLAINTEXT].into_boxed_slice(),
            hello_verify: [0; HELLO_VERIFY_LEN],
            failed: Vec::new(),
        }
    }

    pub fn set_wall_clock(&mut self, now: Instant, unix_now: u64) {
        self.gate.set_wall_clock(now, unix_now);
    }

    /// A datagram arrived on DTLS socket `socket` from `from`, sent to `dst`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        socket: usize,
        from: SocketAddr,
        dst: Option<IpAddr>,
        datagram: &[u8],
    ) -> Outcome {
        let key: Key = (socket as ListenerId, from);
        let mut outcome = Outcome::default();
        if let Some(conn) = self.sessions.get_mut(&key) {
            // RFC 6347 section 4.2.8: a ClientHello on an established association may
            // start a new one (a client restarted on the same port), but only once the
            // client has proven its address with a cookie exchange. Other epoch-0
            // handshake records (the client repeating its last flight because the
            // server's Finished was lost) are the session's.
            if !(conn.session.is_established() && parse_client_hello(datagram).is_some()) {
                self.feed(now, key, datagram, &mut outcome);
                return outcome;
            }
            match self
                .gate
                .handle_datagram(now, from, datagram, &mut self.hello_verify)
            {
                Verdict::Accept { .. } => outcome.ended = self.close(key),
                verdict => {
                    self.answer(socket, from, dst, verdict);
                    return outcome;
                }
            }
        }
        match self
            .gate
            .handle_datagram(now, from, datagram, &mut self.hello_verify)
        {
            Verdict::Accept { cookie } => self.accept(now, key, dst, datagram, cookie),
            verdict => self.answer(socket, from, dst, verdict),
        }
        outcome
    }

    /// Sends the gate's HelloVerifyRequest, if it wrote one.
    fn answer(&mut self, socket: usize, to: SocketAddr, src: Option<IpAddr>, verdict: Verdict) {
        let Verdict::HelloVerify { len, .. } = verdict else {
            return;
        };
        self.limits.dtls().count_hello_verify();
        let src = src.filter(|_| self.wildcard.get(socket) == Some(&true));
        if let (Some(s), Some(bytes)) = (self.sockets.get(socket), self.hello_verify.get(..len)) {
            let _ = udp::send_segmented(s.as_raw_fd(), &[SendItem { bytes, to, src }], false);
        }
    }

    /// A ClientHello with a valid cookie: a session, if the caps allow it.
    fn accept(
        &mut self,
        now: Instant,
        key: Key,
        dst: Option<IpAddr>,
        hello: &[u8],
        cookie: ferroturn_core::dtls::Cookie,
    ) {
        let client = key.1;
        if !self.limits.acquire(client.ip()) {
            self.limits.count_refused();
            tracing::debug!(%client, "DTLS session refused: connection cap reached");
            return;
        }
        let session = match self
            .context()
            .and_then(|ctx| Session::accept(ctx, hello, cookie))
        {
            Ok(s) => s,
            Err(e) => {
                self.limits.release(client.ip());
                self.limits.dtls().count_handshake(false);
                tracing::debug!(%client, "DTLS handshake refused: {e}");
                return;
            }
        };
        let tuple = FiveTuple {
            client,
            listener: key.0,
            transport: Transport::Dtls,
        };
        let local = dst.filter(|_| self.wildcard.get(usize::from(key.0)) == Some(&true));
        self.sessions.insert(
            key,
            Conn {
                session,
                tuple,
                local,
                deadline: now + self.cfg.handshake_timeout,
            },
        );
        self.limits.dtls().session_opened();
        let started = self.sessions.get_mut(&key).map(|c| c.session.handshake());
        if let Some(Err(e)) = started {
            // The alert OpenSSL wrote (a protocol version it does not serve, say) goes out
            // with the close.
            tracing::debug!(%client, "DTLS handshake failed: {e}");
            self.limits.dtls().count_handshake(false);
            self.close(key);
            return;
        }
        self.flush(key);
    }

    /// The server configuration for the certificate in force (rebuilt after a reload:
    /// new handshakes get the new certificate, sessions keep theirs).
    fn context(&mut self) -> Result<&SslContext, DtlsError> {
        let generation = self.certs.generation();
        if self.ctx.as_ref().is_none_or(|(g, _)| *g != generation) {
            let der = self.certs.der();
            let chain: Vec<&[u8]> = der.chain.iter().map(Vec::as_slice).collect();
            let ctx = server_context(&chain, &der.key)?;
            self.ctx = Some((generation, ctx));
        }
        match &self.ctx {
            Some((_, ctx)) => Ok(ctx),
            None => Err(DtlsError::NotAccepted),
        }
    }

    /// Hands a datagram to its session.
    fn feed(&mut self, now: Instant, key: Key, datagram: &[u8], outcome: &mut Outcome) {
        let Some(conn) = self.sessions.get_mut(&key) else {
            return;
        };
        let was_established = conn.session.is_established();
        let result = conn.session.handle_datagram(datagram);
        let established = conn.session.is_established();
        if established {
            conn.deadline = now + self.cfg.idle_timeout;
        }
        match result {
            Err(e) => {
                tracing::debug!(client = %key.1, "DTLS session ended: {e}");
                if !was_established {
                    self.limits.dtls().count_handshake(false);
                }
                outcome.ended = self.close(key);
            }
            Ok(()) => {
                if established && !was_established {
                    self.limits.dtls().count_handshake(true);
                }
                self.flush(key);
                if established {
                    outcome.readable = Some(conn_tuple(key));
                }
            }
        }
    }

    /// The next application data record of session `key`, into [`Dtls::plain`]:
    /// `Ok(None)` when there is no more.
    pub fn read(&mut self, key: Key) -> Result<Option<usize>, DtlsError> {
        let Some(conn) = self.sessions.get_mut(&key) else {
            return Ok(None);
        };
        let r = conn.session.read(&mut self.plain);
        if conn.session.has_outbox() {
            self.flush(key);
        }
        r
    }

    /// Encrypts `messages` for the client of `key` and sends them. A session whose write
    /// fails lands in [`Dtls::failed`].
    pub fn send<'a>(&mut self, key: Key, messages: impl Iterator<Item = &'a [u8]>) {
        let Some(conn) = self.sessions.get_mut(&key) else {
            return;
        };
        if !conn.session.is_established() {
            return;
        }
        for m in messages {
            match conn.session.write(m) {
                Ok(()) => {}
                // Over what the outbox holds: this message is dropped, as UDP would.
                Err(DtlsError::Full) => break,
                Err(e) => {
                    tracing::debug!(client = %key.1, "DTLS write failed: {e}");
                    self.failed.push(key);
                    break;
                }
            }
        }
        self.flush(key);
    }

    /// Sends what waits in session `key`'s outbox, in `sendmmsg` batches.
    fn flush(&mut self, key: Key) {
        let Some(conn) = self.sessions.get_mut(&key) else {
            return;
        };
        let Some(socket) = self.sockets.get(usize::from(key.0)) else {
            return;
        };
        let fd = socket.as_raw_fd();
        {
            let mut items = [SendItem {
                bytes: &[],
                to: key.1,
                src: conn.local,
            }; udp::MAX_ITEMS];
            let mut outbox = conn.session.outbox().peekable();
            while outbox.peek().is_some() {
                let mut n = 0;
                for (slot, d) in items.iter_mut().zip(outbox.by_ref()) {
                    slot.bytes = d;
                    n += 1;
                }
                let mut sent = 0;
                while sent < n {
                    match udp::send_segmented(fd, &items[sent..n], false) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => sent += k,
                    }
                }
            }
        }
        conn.session.clear_outbox();
    }

    /// Removes session `key` (sending close_notify if it was established) and gives its
    /// connection slot back. Returns its 5-tuple: the caller tells the core.
    pub fn close(&mut self, key: Key) -> Option<FiveTuple> {
        let conn = self.sessions.get_mut(&key)?;
        conn.session.close();
        self.flush(key);
        let conn = self.sessions.remove(&key)?;
        self.limits.release(key.1.ip());
        self.limits.dtls().session_closed();
        Some(conn.tuple)
    }

    /// Once a second: retransmits handshake flights whose timer fired, and lists the
    /// sessions past their deadline: a handshake not finished in time (a failed
    /// handshake), or silence without an allocation (`has_allocation`). A session with an
    /// allocation gets a fresh idle deadline, so the idle timeout counts from the
    /// allocation's end.
    pub fn tick(
        &mut self,
        now: Instant,
        has_allocation: impl Fn(&FiveTuple) -> bool,
        expired: &mut Vec<Key>,
    ) {
        let idle = self.cfg.idle_timeout;
        let mut retransmit = Vec::new();
        for (key, conn) in &mut self.sessions {
            let established = conn.session.is_established();
            if now >= conn.deadline {
                if established && has_allocation(&conn.tuple) {
                    conn.deadline = now + idle;
                } else {
                    if !established {
                        self.limits.dtls().count_handshake(false);
                    }
                    expired.push(*key);
                    continue;
                }
            }
            if !established {
                match conn.session.handle_timeout() {
                    Ok(()) if conn.session.has_outbox() => retransmit.push(*key),
                    Ok(()) => {}
                    Err(_) => {
                        self.limits.dtls().count_handshake(false);
                        expired.push(*key);
                    }
                }
            }
        }
        for key in retransmit {
            self.flush(key);
        }
    }
}

/// The 5-tuple of session `key`.
fn conn_tuple(key: Key) -> FiveTuple {
    FiveTuple {
        client: key.1,
        listener: key.0,
        transport: Transport::Dtls,
    }
}
