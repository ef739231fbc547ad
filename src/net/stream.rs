//! TCP and TLS connections of one shard: accepting within the connection caps, framing
//! what arrives, and writing toward the client with a bounded queue.
//!
//! A connection is a 5-tuple of its own (RFC 8656 section 3.1): its allocation lives and
//! dies with it. The shard reads a connection into its [`Framer`], hands each complete
//! message to the core in place, and sends what the core relays toward peers from the
//! framer's buffer. Toward the client, frames are written straight to the socket
//! (several in one `writev`); only what the socket does not take is copied into the
//! connection's queue, bounded by `tcp-send-queue`, past which media is dropped whole
//! (never a partial frame, which would break the stream's framing).
//!
//! Deadlines are checked once a second: a connection must finish its TLS handshake and
//! deliver its first complete message within `tcp-handshake-timeout` (so bytes trickled
//! one at a time cannot hold it), and one without an allocation may stay silent for
//! `tcp-idle-timeout`.
//!
//! A connection whose ConnectionBind succeeded (RFC 6062 section 5.4) is a data
//! connection: no longer framed, its bytes go as they are to its peer connection
//! ([`Conn::read_raw`], with the framer's buffer as the bounded queue toward the peer)
//! and the peer's come back through [`Conn::write_raw`]. It is bound by its peer
//! connection's life, not by the idle deadline. A connection whose ConnectionBind names
//! another shard's CONNECTION-ID moves to that shard whole ([`Streams::detach`],
//! [`Streams::adopt`]), TLS state and unread bytes included.
//!
//! A connection with a front ([`super::front`]: a PROXY header to read, a ClientHello
//! that decides between TURN and the HTTPS backend, or a pass-through to that backend)
//! is served by it until it is TURN.

use super::front::{Front, Opening};
use super::shard::Source;
use crate::config::{StreamFront, StreamLimits};
use crate::control::{ConnLimits, Refusal};
use ferroturn_core::proto::stream::{Framer, MAX_STREAM_FRAME};
use ferroturn_core::server::{ConnectionId, FiveTuple, ListenerId, Transport};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

/// A connection's receive buffer between large frames.
const INITIAL_FRAME_BUFFER: usize = 8 * 1024;
/// Connections accepted from one listener per turn before others get a turn.
const ACCEPT_BUDGET: usize = 256;
/// Frames handed to one `writev`.
const MAX_IOV: usize = 64;
/// The queue's allocation is released when it drains and has grown past this.
const KEEP_QUEUE: usize = 16 * 1024;

/// A TCP or TLS listener socket.
pub struct StreamListener {
    pub socket: TcpListener,
    pub tls: bool,
}

/// Why a connection is closed (for the log).
#[derive(Debug, thiserror::Error)]
pub enum Close {
    #[error("closed by the client")]
    Eof,
    #[error("{0}")]
    Io(io::Error),
    #[error("TLS: {0}")]
    Tls(rustls::Error),
    #[error("framing: {0}")]
    Framing(ferroturn_core::proto::stream::FramingError),
    #[error("handshake, first-message or idle timeout")]
    Timeout,
    #[error("refused: {0}")]
    Refused(Refusal),
    #[error("refused: the connection cap of the client its PROXY header names")]
    Capped,
    #[error("https-backend: {0}")]
    Backend(io::Error),
    #[error("passed through to https-backend until both sides closed")]
    Passed,
}

/// One TCP or TLS connection.
pub struct Conn {
    pub socket: TcpStream,
    pub tls: Option<Box<rustls::ServerConnection>>,
    pub framer: Framer,
    pub tuple: FiveTuple,
    /// Plain TCP: bytes the socket has not taken yet.
    queue: VecDeque<u8>,
    /// TLS: bytes handed to rustls since its send buffer was last empty.
    tls_backlog: usize,
    /// Handshake/first-message deadline, then idle deadline.
    pub deadline: Instant,
    /// A complete message has arrived.
    pub greeted: bool,
    writable: bool,
    /// RFC 6062: the data connection of this peer connection (its slot and id).
    pub data: Option<(usize, ConnectionId)>,
    /// Its first unread message is a ConnectionBind for this shard's sibling.
    pub handoff: Option<u32>,
    /// Its PROXY header or ClientHello still to read, or its pass-through to the HTTPS
    /// backend.
    pub front: Option<Box<Front>>,
    /// The client IP whose per-IP slot it holds (`None`: a slot in the total only,
    /// until its PROXY header names the client).
    pub counted: Option<IpAddr>,
}

impl Conn {
    /// Reads what the socket has into the framer: `Ok(true)` when bytes arrived (frames
    /// may be ready), `Ok(false)` when the socket would block.
    pub fn read(&mut self) -> Result<bool, Close> {
        let Some(tls) = self.tls.as_mut() else {
            return match self.socket.read(self.framer.spare()) {
                Ok(0) => Err(Close::Eof),
                Ok(n) => {
                    self.framer.filled(n);
                    Ok(true)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
                Err(e) => Err(Close::Io(e)),
            };
        };
        // Plaintext left from the last read first: the framer may have been full.
        if read_plaintext(tls, &mut self.framer)? {
            return Ok(true);
        }
        match tls.read_tls(&mut self.socket) {
            Ok(0) => return Err(Close::Eof),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(true),
            Err(e) => return Err(Close::Io(e)),
        }
        if let Err(e) = tls.process_new_packets() {
            // Send the alert rustls queued, best effort.
            let _ = tls.write_tls(&mut self.socket);
            return Err(Close::Tls(e));
        }
        read_plaintext(tls, &mut self.framer)?;
        // Handshake messages to send.
        self.flush()?;
        Ok(true)
    }

    /// A data connection: reads what the socket has (TLS: decrypts it) into the free
    /// room of the framer's buffer, as raw bytes for the peer. `Ok(0)`: no room or
    /// nothing to read now. The end of the stream is [`Close::Eof`].
    pub fn read_raw(&mut self) -> Result<usize, Close> {
        let spare = self.framer.raw_spare();
        if spare.is_empty() {
            return Ok(0);
        }
        let Some(tls) = self.tls.as_mut() else {
            return match self.socket.read(spare) {
                Ok(0) => Err(Close::Eof),
                r => {
                    let n = nonblocking(r)?;
                    self.framer.filled(n);
                    Ok(n)
                }
            };
        };
        // Plaintext rustls holds first; only then more records (it refuses to read
        // records while its plaintext buffer is full). Records without data (handshake,
        // key updates) are read past, a few at a time.
        for _ in 0..8 {
            match tls.reader().read(self.framer.raw_spare()) {
                Ok(0) => return Err(Close::Eof),
                Ok(n) => {
                    self.framer.filled(n);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(Close::Io(e)),
            }
            match tls.read_tls(&mut self.socket) {
                Ok(0) => return Err(Close::Eof),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    return Ok(0);
                }
                Err(e) => return Err(Close::Io(e)),
            }
            if let Err(e) = tls.process_new_packets() {
                let _ = tls.write_tls(&mut self.socket);
                return Err(Close::Tls(e));
            }
        }
        Ok(0)
    }

    /// A data connection: writes as much of `bytes` as the connection takes now, after
    /// whatever was queued before (the ConnectionBind response first). TLS takes a
    /// record's worth only while its own buffer is empty, so neither side grows.
    /// Returns how many bytes were taken.
    pub fn write_raw(&mut self, bytes: &[u8]) -> Result<usize, Close> {
        self.flush()?;
        if self.backlogged() || bytes.is_empty() {
            return Ok(0);
        }
        if let Some(tls) = self.tls.as_mut() {
            let n = tls.writer().write(bytes).map_err(Close::Io)?;
            self.flush()?;
            return Ok(n);
        }
        nonblocking(self.socket.write(bytes))
    }

    /// A data connection whose peer finished sending: passes the end on (TLS:
    /// close_notify), leaving the other direction open.
    pub fn finish_raw(&mut self) -> Result<(), Close> {
        if let Some(tls) = self.tls.as_mut() {
            tls.send_close_notify();
            self.flush()?;
        }
        if !self.backlogged() {
            let _ = self.socket.shutdown(std::net::Shutdown::Write);
        }
        Ok(())
    }

    /// Bytes still waiting toward the client, queued or in TLS records.
    pub fn has_backlog(&self) -> bool {
        self.backlogged()
    }

    /// A data connection wants readable and writable events for good (its interest no
    /// longer follows the queue).
    pub fn watch_both(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.reregister(
            &mut self.socket,
            token,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.writable = true;
        Ok(())
    }

    /// Queues `frames` toward the client (whole or not at all each), writing as much as
    /// the socket takes now. Returns how many frames were dropped for lack of room.
    pub fn write_frames<'a>(
        &mut self,
        frames: impl Iterator<Item = &'a [u8]>,
        limit: usize,
    ) -> Result<usize, Close> {
        let mut dropped = 0;
        if let Some(tls) = self.tls.as_mut() {
            for f in frames {
                if self.tls_backlog + f.len() > limit || tls.is_handshaking() {
                    dropped += 1;
                    continue;
                }
                // The buffer limit is off (see accept), so the write takes everything.
                let _ = tls.writer().write_all(f);
                self.tls_backlog += f.len();
            }
            self.flush()?;
            return Ok(dropped);
        }
        if !self.queue.is_empty() {
            for f in frames {
                dropped += usize::from(!self.queue_whole(f, limit));
            }
            self.flush()?;
            return Ok(dropped);
        }
        // Nothing queued: write the frames straight from where they are, in batches.
        let mut frames = frames.peekable();
        while frames.peek().is_some() {
            let mut batch: [&[u8]; MAX_IOV] = [&[]; MAX_IOV];
            let mut n = 0;
            while n < MAX_IOV {
                match frames.next() {
                    Some(f) => {
                        batch[n] = f;
                        n += 1;
                    }
                    None => break,
                }
            }
            let iov: [IoSlice<'_>; MAX_IOV] = std::array::from_fn(|i| IoSlice::new(batch[i]));
            let written = match self.socket.write_vectored(&iov[..n]) {
                Ok(w) => w,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    0
                }
                Err(e) => return Err(Close::Io(e)),
            };
            // What the socket did not take: the rest of a started frame must follow
            // (the stream is committed to it); later frames queue while there is room.
            let mut skip = written;
            for f in &batch[..n] {
                if skip >= f.len() {
                    skip -= f.len();
                } else if skip > 0 {
                    self.queue.extend(&f[skip..]);
                    skip = 0;
                } else {
                    dropped += usize::from(!self.queue_whole(f, limit));
                }
            }
            if !self.queue.is_empty() {
                for f in frames.by_ref() {
                    dropped += usize::from(!self.queue_whole(f, limit));
                }
            }
        }
        Ok(dropped)
    }

    /// Queues a whole frame if it fits within `limit`; false if it was dropped.
    fn queue_whole(&mut self, frame: &[u8], limit: usize) -> bool {
        let fits = self.queue.len() + frame.len() <= limit;
        if fits {
            self.queue.extend(frame);
        }
        fits
    }

    /// Writes queued bytes (plain) or pending TLS records until the socket would block.
    pub fn flush(&mut self) -> Result<(), Close> {
        if let Some(tls) = self.tls.as_mut() {
            while tls.wants_write() {
                match tls.write_tls(&mut self.socket) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Close::Io(e)),
                }
            }
            if !tls.wants_write() {
                self.tls_backlog = 0;
            }
            return Ok(());
        }
        while !self.queue.is_empty() {
            let (a, b) = self.queue.as_slices();
            match self
                .socket
                .write_vectored(&[IoSlice::new(a), IoSlice::new(b)])
            {
                Ok(0) => break,
                Ok(n) => {
                    self.queue.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Close::Io(e)),
            }
        }
        if self.queue.is_empty() && self.queue.capacity() > KEEP_QUEUE {
            self.queue = VecDeque::new();
        }
        Ok(())
    }

    /// Bytes waiting for the socket.
    fn backlogged(&self) -> bool {
        match &self.tls {
            Some(tls) => tls.wants_write(),
            None => !self.queue.is_empty(),
        }
    }

    /// Asks for writable events while bytes wait, and stops asking once they are out.
    pub fn update_interest(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let want = self.backlogged();
        if want != self.writable {
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            registry.reregister(&mut self.socket, token, interest)?;
            self.writable = want;
        }
        Ok(())
    }
}

/// A non-blocking read or write: what it moved, 0 if the socket would block.
pub fn nonblocking(r: io::Result<usize>) -> Result<usize, Close> {
    match r {
        Ok(n) => Ok(n),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            Ok(0)
        }
        Err(e) => Err(Close::Io(e)),
    }
}

/// Moves decrypted bytes into the framer: `Ok(true)` if any arrived.
fn read_plaintext(tls: &mut rustls::ServerConnection, framer: &mut Framer) -> Result<bool, Close> {
    let spare = framer.spare();
    if spare.is_empty() {
        return Ok(false);
    }
    match tls.reader().read(spare) {
        // close_notify: the client is done.
        Ok(0) => Err(Close::Eof),
        Ok(n) => {
            framer.filled(n);
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(Close::Io(e)),
    }
}

/// The connections of one shard, in a slab indexed by token.
pub struct Streams {
    pub listeners: Vec<StreamListener>,
    pub conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    pub(super) by_client: HashMap<(ListenerId, SocketAddr), usize>,
    pub(super) limits: Arc<ConnLimits>,
    pub(super) cfg: StreamLimits,
    pub(super) tls: Option<Arc<rustls::ServerConfig>>,
    /// Sources whose connections start with a PROXY header.
    front: StreamFront,
    /// `https-backend`, resolved.
    pub(super) backend: Option<SocketAddr>,
}

impl Streams {
    pub fn new(
        listeners: Vec<StreamListener>,
        limits: Arc<ConnLimits>,
        cfg: StreamLimits,
        tls: Option<Arc<rustls::ServerConfig>>,
        front: StreamFront,
        backend: Option<SocketAddr>,
    ) -> Self {
        Self {
            listeners,
            conns: Vec::new(),
            free: Vec::new(),
            by_client: HashMap::new(),
            limits,
            cfg,
            tls,
            front,
            backend,
        }
    }

    pub fn limits(&self) -> &StreamLimits {
        &self.cfg
    }

    /// Accepts pending connections on listener `index`. Returns true if the budget ran
    /// out with connections perhaps still waiting.
    pub fn accept(&mut self, index: usize, registry: &Registry, now: Instant) -> bool {
        for _ in 0..ACCEPT_BUDGET {
            let Some(listener) = self.listeners.get(index) else {
                return false;
            };
            let (socket, client) = match listener.socket.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    // EMFILE and friends: leave the rest in the backlog for later.
                    tracing::debug!("accept failed: {e}");
                    return false;
                }
            };
            let tls = listener.tls;
            // A proxy's connection is charged to the client its header names.
            let proxied = self.front.expects_proxy(client.ip());
            let counted = (!proxied).then_some(client.ip());
            let admitted = match counted {
                Some(ip) => self.limits.acquire(ip),
                None => self.limits.acquire_unattributed(),
            };
            if !admitted {
                self.limits.count_refused();
                tracing::debug!(%client, "connection refused: connection cap reached");
                continue;
            }
            self.limits.count_accepted(tls);
            if let Err(e) = self.admit(index, tls, socket, client, counted, registry, now) {
                self.limits.release_slot(counted);
                tracing::debug!(%client, "connection dropped: {e}");
            }
        }
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn admit(
        &mut self,
        listener: usize,
        tls: bool,
        mut socket: TcpStream,
        client: SocketAddr,
        counted: Option<IpAddr>,
        registry: &Registry,
        now: Instant,
    ) -> io::Result<()> {
        let _ = socket.set_nodelay(true);
        // With an HTTPS backend, the ClientHello decides what the connection is.
        let sniff = tls && self.backend.is_some();
        let front = (counted.is_none() || sniff).then(|| {
            Box::new(Front::Opening(Opening {
                proxy: counted.is_none(),
                sniff: sniff.then(Box::default),
            }))
        });
        let tls = match (tls && !sniff, &self.tls) {
            (false, _) => None,
            (true, Some(cfg)) => {
                let mut conn = rustls::ServerConnection::new(cfg.clone())
                    .map_err(|e| io::Error::other(e.to_string()))?;
                // Bounded by tcp-send-queue in write_frames, frame by frame.
                conn.set_buffer_limit(None);
                Some(Box::new(conn))
            }
            (true, None) => return Err(io::Error::other("TLS listener without TLS config")),
        };
        let index = self.free.pop().unwrap_or(self.conns.len());
        if let Err(e) =
            registry.register(&mut socket, Source::Conn(index).token(), Interest::READABLE)
        {
            self.give_back(index);
            return Err(e);
        }
        let tuple = FiveTuple {
            client,
            listener: listener as ListenerId,
            transport: Transport::Tcp,
        };
        let conn = Conn {
            socket,
            tls,
            framer: Framer::with_limit(INITIAL_FRAME_BUFFER, MAX_STREAM_FRAME),
            tuple,
            queue: VecDeque::new(),
            tls_backlog: 0,
            deadline: now + self.cfg.handshake_timeout,
            greeted: false,
            writable: false,
            data: None,
            handoff: None,
            front,
            counted,
        };
        if index == self.conns.len() {
            self.conns.push(Some(conn));
        } else {
            self.conns[index] = Some(conn);
        }
        self.by_client.insert((tuple.listener, client), index);
        Ok(())
    }

    /// Removes connection `index`; the caller tells the core its 5-tuple is gone.
    pub fn remove(&mut self, index: usize, registry: &Registry) -> Option<FiveTuple> {
        let mut conn = self.conns.get_mut(index)?.take()?;
        let _ = registry.deregister(&mut conn.socket);
        if let Some(Front::Passing(pass)) = conn.front.as_deref_mut() {
            let _ = registry.deregister(pass.backend_mut());
            self.limits.front().count_passed(false);
        }
        // What is queued goes out if the socket takes it now; nothing waits for it.
        let _ = conn.flush();
        if let Some(tls) = conn.tls.as_mut() {
            tls.send_close_notify();
            let _ = tls.write_tls(&mut conn.socket);
        }
        self.by_client
            .remove(&(conn.tuple.listener, conn.tuple.client));
        self.limits.release_slot(conn.counted);
        self.free.push(index);
        Some(conn.tuple)
    }

    /// Takes connection `index` out of this shard without closing it (its connection
    /// slot in the caps stays taken), for another shard to [`Streams::adopt`].
    pub fn detach(&mut self, index: usize, registry: &Registry) -> Option<Conn> {
        let mut conn = self.conns.get_mut(index)?.take()?;
        let _ = registry.deregister(&mut conn.socket);
        self.by_client
            .remove(&(conn.tuple.listener, conn.tuple.client));
        self.free.push(index);
        Some(conn)
    }

    /// An index taken for a connection that did not come to be: back to the free list
    /// if it names a slot (a new one past the end is simply not used).
    fn give_back(&mut self, index: usize) {
        if index < self.conns.len() {
            self.free.push(index);
        }
    }

    /// Takes over a connection another shard detached; its index here.
    pub fn adopt(&mut self, mut conn: Conn, registry: &Registry) -> io::Result<usize> {
        // One connection per client address and listener: a PROXY header may name an
        // address already connected here through another shard.
        if self
            .by_client
            .contains_key(&(conn.tuple.listener, conn.tuple.client))
        {
            self.limits.release_slot(conn.counted);
            return Err(io::Error::other("client address already connected"));
        }
        let index = self.free.pop().unwrap_or(self.conns.len());
        let interest = if conn.writable {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        if let Err(e) = registry.register(&mut conn.socket, Source::Conn(index).token(), interest) {
            self.give_back(index);
            self.limits.release_slot(conn.counted);
            return Err(e);
        }
        self.by_client
            .insert((conn.tuple.listener, conn.tuple.client), index);
        if index == self.conns.len() {
            self.conns.push(Some(conn));
        } else {
            self.conns[index] = Some(conn);
        }
        Ok(index)
    }

    /// Whether connection `index` has a front to serve (see [`super::front`]).
    pub fn has_front(&self, index: usize) -> bool {
        matches!(self.conns.get(index), Some(Some(c)) if c.front.is_some())
    }

    /// Why connection `index` is closed at its deadline: late with its PROXY header or
    /// ClientHello, or the handshake, first-message or idle timeout.
    pub fn timeout_reason(&self, index: usize) -> Close {
        match self.conns.get(index).and_then(Option::as_ref) {
            Some(Conn {
                front: Some(front), ..
            }) => match &**front {
                Front::Opening(o) => Close::Refused(o.timeout()),
                Front::Passing(_) => Close::Timeout,
            },
            _ => Close::Timeout,
        }
    }

    /// Counts a refusal for the metrics.
    pub fn count_refusal(&self, why: Refusal) {
        self.limits.front().count_refused(why);
    }

    /// The peer connection a data connection is spliced to.
    pub fn data_link(&self, index: usize) -> Option<(usize, ConnectionId)> {
        self.conns.get(index)?.as_ref()?.data
    }

    /// The connection of a stream 5-tuple.
    pub fn index_of(&self, listener: ListenerId, client: SocketAddr) -> Option<usize> {
        self.by_client.get(&(listener, client)).copied()
    }

    /// Writes `frames` to connection `index` and keeps its interest in step. Returns
    /// false if the connection failed and must be closed.
    pub fn write<'a>(
        &mut self,
        index: usize,
        frames: impl Iterator<Item = &'a [u8]>,
        registry: &Registry,
    ) -> bool {
        let limit = self.cfg.send_queue;
        let Some(Some(conn)) = self.conns.get_mut(index) else {
            return true;
        };
        match conn.write_frames(frames, limit) {
            Ok(dropped) => {
                if dropped > 0 {
                    self.limits.count_dropped(dropped);
                }
                conn.update_interest(registry, Source::Conn(index).token())
                    .is_ok()
            }
            Err(e) => {
                tracing::debug!(client = %conn.tuple.client, "write failed: {e}");
                false
            }
        }
    }

    /// Connections whose deadline passed: not greeted in time, or silent without an
    /// allocation (`has_allocation`). Connections with an allocation get a fresh idle
    /// deadline, so the idle timeout counts from the allocation's end.
    pub fn expired(
        &mut self,
        now: Instant,
        has_allocation: impl Fn(&FiveTuple) -> bool,
        out: &mut Vec<usize>,
    ) {
        let idle = self.cfg.idle_timeout;
        for (i, slot) in self.conns.iter_mut().enumerate() {
            let Some(conn) = slot else { continue };
            if now < conn.deadline {
                continue;
            }
            // A data connection lives as long as its peer connection.
            if conn.data.is_some() || (conn.greeted && has_allocation(&conn.tuple)) {
                conn.deadline = now + idle;
            } else {
                out.push(i);
            }
        }
    }
}
