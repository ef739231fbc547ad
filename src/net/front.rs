//! What comes before TURN on a stream connection, and the connections that are not TURN
//! at all:
//!
//! - a connection from a `proxy-protocol-from` source starts with a PROXY header
//!   (`ferroturn_core::proto::proxy`). It is peeked, never read past: once whole, exactly
//!   its bytes are read away and the client it names becomes the connection's client
//!   (its 5-tuple, its per-IP slot), so what follows is read as if the client had
//!   connected itself;
//! - on a TLS port with an `https-backend`, the ClientHello is read and kept
//!   ([`super::sniff`]): TURN goes on from rustls's accepted ClientHello, and a
//!   connection for the backend ([`Passthrough`]) gets a connection to it, which is sent
//!   every byte read after the PROXY header (if any) and then both directions as they
//!   come. The backend keeps its own certificate and sees the proxy's (or client's)
//!   connection as is; no PROXY header is written to it.
//!
//! Both steps count against `tcp-handshake-timeout` from accept, and both are bounded in
//! size (`proxy::MAX_HEADER`, `sniff::MAX_CLIENT_HELLO`). A pass-through connection keeps
//! its connection slot, and stays open while bytes move; `tcp-idle-timeout` of silence
//! both ways closes it.

use super::shard::Source;
use super::sniff::{Sniffed, Sniffer};
use super::stream::{Close, Conn, Streams, nonblocking};
use crate::control::Refusal;
use ferroturn_core::proto::proxy::{self, Parsed, Version};
use mio::net::TcpStream;
use mio::{Interest, Registry};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::Instant;

/// Bytes in flight each way between a client and the HTTPS backend.
const PASS_BUFFER: usize = 16 * 1024;
/// Rounds of one pass-through per turn before others get a turn.
const PUMP_BUDGET: usize = 8;
/// Bytes read per system call while the ClientHello arrives.
const HELLO_CHUNK: usize = 4096;

/// A stream connection's state before (or instead of) TURN.
pub enum Front {
    Opening(Opening),
    Passing(Passthrough),
}

/// What a connection still has to show before it is TURN.
pub struct Opening {
    /// Its PROXY header (from a `proxy-protocol-from` source).
    pub proxy: bool,
    /// Its ClientHello (a TLS port with an `https-backend`); rustls's acceptor is large.
    pub sniff: Option<Box<Sniffer>>,
}

impl Opening {
    /// Why a connection in this state is closed at its deadline.
    pub fn timeout(&self) -> Refusal {
        if self.proxy {
            Refusal::ProxyTimeout
        } else {
            Refusal::HelloTimeout
        }
    }
}

/// What serving a connection's front came to.
pub enum Served {
    /// More of the PROXY header or ClientHello must arrive.
    Waiting,
    /// TURN from now on: serve it as any connection (TLS: `conn.tls` is set).
    Turn,
    /// Passed through to the backend; true if the budget ran out with bytes perhaps
    /// still to move.
    Passing(bool),
}

/// One direction of a pass-through: bytes read and not yet written, `buf[start..end]`.
struct Direction {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// The end of the stream was read, and passed on.
    ended: bool,
    finished: bool,
}

impl Direction {
    fn holding(mut bytes: Vec<u8>) -> Self {
        let end = bytes.len();
        bytes.resize(PASS_BUFFER.max(end), 0);
        Direction {
            buf: bytes.into_boxed_slice(),
            start: 0,
            end,
            ended: false,
            finished: false,
        }
    }

    /// Writes what it holds to `to`, then, once empty, reads the next chunk from `from`
    /// (adding its size to `read`). True if anything moved.
    fn step(
        &mut self,
        from: &mut TcpStream,
        to: &mut TcpStream,
        read: &mut usize,
    ) -> Result<bool, Close> {
        let mut moved = false;
        while self.start < self.end {
            let pending = self.buf.get(self.start..self.end).unwrap_or_default();
            match nonblocking(to.write(pending))? {
                0 => return Ok(moved),
                n => {
                    self.start += n;
                    moved = true;
                }
            }
        }
        (self.start, self.end) = (0, 0);
        if self.ended {
            if !self.finished {
                let _ = to.shutdown(Shutdown::Write);
                self.finished = true;
                moved = true;
            }
            return Ok(moved);
        }
        match from.read(&mut self.buf) {
            Ok(0) => self.ended = true,
            r => {
                let n = nonblocking(r)?;
                self.end = n;
                *read += n;
                moved |= n > 0;
                return Ok(moved);
            }
        }
        Ok(true)
    }
}

/// A client connection passed through to the HTTPS backend.
pub struct Passthrough {
    backend: TcpStream,
    connected: bool,
    /// [client to backend, backend to client].
    dirs: [Direction; 2],
}

impl Passthrough {
    /// The backend's socket, to take out of the event loop when the pair closes.
    pub fn backend_mut(&mut self) -> &mut TcpStream {
        &mut self.backend
    }
}

impl Streams {
    /// Serves connection `index` while it has a front (`conn` is out of the slab).
    pub fn serve_front(
        &mut self,
        index: usize,
        conn: &mut Conn,
        registry: &Registry,
        now: Instant,
    ) -> Result<Served, Close> {
        let Some(mut front) = conn.front.take() else {
            return Ok(Served::Turn);
        };
        // The front goes back into the connection whatever happens, except when it is
        // TURN from now on: closing a pass-through must find its backend.
        let served = match &mut *front {
            Front::Opening(opening) => match self.open(conn, opening) {
                Ok(Opened::Waiting) => Ok(Served::Waiting),
                Ok(Opened::Turn) => return Ok(Served::Turn),
                Ok(Opened::Backend(seen)) => {
                    // Connecting counts against the deadline from accept.
                    self.start_pass(index, conn, seen, registry).map(|pass| {
                        *front = Front::Passing(pass);
                        Served::Passing(false)
                    })
                }
                Err(e) => Err(e),
            },
            Front::Passing(pass) => self.pump(conn, pass, now),
        };
        conn.front = Some(front);
        served
    }

    /// Reads the PROXY header, then the ClientHello, as far as they have arrived.
    fn open(&mut self, conn: &mut Conn, opening: &mut Opening) -> Result<Opened, Close> {
        if opening.proxy {
            let Some((len, version, source)) = peek_proxy_header(&conn.socket)? else {
                return Ok(Opened::Waiting);
            };
            // The peeked bytes are in the socket: this reads exactly them.
            let mut header = [0u8; proxy::MAX_HEADER];
            let header = header
                .get_mut(..len)
                .ok_or(Close::Refused(Refusal::ProxyTooLong))?;
            conn.socket.read_exact(header).map_err(Close::Io)?;
            opening.proxy = false;
            let client = source.unwrap_or(conn.tuple.client);
            self.readdress(conn, client)?;
            // Counted once the connection is kept (a refusal is counted as one).
            self.limits
                .front()
                .count_proxy_header(version == Version::V2, source.is_some());
        }
        let Some(sniffer) = opening.sniff.as_mut() else {
            return Ok(Opened::Turn);
        };
        // Bounded: every pass reads at least a byte, and the sniffer takes at most
        // MAX_CLIENT_HELLO of them before it decides.
        let mut chunk = [0u8; HELLO_CHUNK];
        loop {
            let room = sniffer.room().clamp(1, HELLO_CHUNK);
            let n = match conn.socket.read(&mut chunk[..room]) {
                Ok(0) => return Err(Close::Eof),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Opened::Waiting),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Close::Io(e)),
            };
            match sniffer.feed(&chunk[..n]) {
                Sniffed::NeedMore => {}
                Sniffed::Turn(accepted) => {
                    conn.tls = Some(self.turn_tls(*accepted, &mut conn.socket)?);
                    return Ok(Opened::Turn);
                }
                Sniffed::Backend => {
                    let seen = opening.sniff.take().map(|s| s.into_seen());
                    return Ok(Opened::Backend(seen.unwrap_or_default()));
                }
                Sniffed::Invalid => return Err(Close::Refused(Refusal::HelloInvalid)),
                Sniffed::TooLong => return Err(Close::Refused(Refusal::HelloTooLong)),
            }
        }
    }

    /// The TLS connection of a TURN client whose ClientHello was read.
    fn turn_tls(
        &self,
        accepted: rustls::server::Accepted,
        socket: &mut TcpStream,
    ) -> Result<Box<rustls::ServerConnection>, Close> {
        let Some(cfg) = self.tls.clone() else {
            return Err(Close::Io(io::Error::other(
                "TLS listener without TLS config",
            )));
        };
        match accepted.into_connection(cfg) {
            Ok(mut tls) => {
                // Bounded by tcp-send-queue in write_frames, frame by frame.
                tls.set_buffer_limit(None);
                // Records that came with the ClientHello.
                if let Err(e) = tls.process_new_packets() {
                    let _ = tls.write_tls(socket);
                    return Err(Close::Tls(e));
                }
                Ok(Box::new(tls))
            }
            Err((e, mut alert)) => {
                let _ = alert.write(socket);
                Err(Close::Tls(e))
            }
        }
    }

    /// Makes `client` the connection's client: its 5-tuple and its per-IP slot. Refused
    /// when another connection on this listener has that client address (a 5-tuple is
    /// one connection) or the client's per-IP cap is full.
    fn readdress(&mut self, conn: &mut Conn, client: SocketAddr) -> Result<(), Close> {
        let old = (conn.tuple.listener, conn.tuple.client);
        let new = (conn.tuple.listener, client);
        if new != old && self.by_client.contains_key(&new) {
            return Err(Close::Refused(Refusal::ProxyDuplicate));
        }
        if !self.limits.attribute(client.ip()) {
            self.limits.count_refused();
            return Err(Close::Capped);
        }
        conn.counted = Some(client.ip());
        if let Some(index) = self.by_client.remove(&old) {
            self.by_client.insert(new, index);
        }
        if client != conn.tuple.client {
            tracing::debug!(%client, proxy = %conn.tuple.client, "client named by a PROXY header");
        }
        conn.tuple.client = client;
        Ok(())
    }

    /// Opens the connection to the backend (non-blocking: it completes as a writable
    /// event), with `seen` as the first bytes toward it.
    fn start_pass(
        &mut self,
        index: usize,
        conn: &mut Conn,
        seen: Vec<u8>,
        registry: &Registry,
    ) -> Result<Passthrough, Close> {
        let Some(backend) = self.backend else {
            return Err(Close::Io(io::Error::other("no https-backend")));
        };
        let mut socket = TcpStream::connect(backend).map_err(|e| {
            self.limits.front().count_backend_failed();
            Close::Backend(e)
        })?;
        let _ = socket.set_nodelay(true);
        registry
            .register(
                &mut socket,
                Source::Backend(index).token(),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(Close::Io)?;
        if let Err(e) = conn.watch_both(registry, Source::Conn(index).token()) {
            let _ = registry.deregister(&mut socket);
            return Err(Close::Io(e));
        }
        self.limits.front().count_passed(true);
        Ok(Passthrough {
            backend: socket,
            connected: false,
            dirs: [Direction::holding(seen), Direction::holding(Vec::new())],
        })
    }

    /// Moves bytes both ways until neither side moves, for at most [`PUMP_BUDGET`]
    /// rounds. The pair is done ([`Close::Passed`]) when both ends have passed.
    fn pump(&self, conn: &mut Conn, pass: &mut Passthrough, now: Instant) -> Result<Served, Close> {
        if !pass.connected {
            let failed = |e| {
                self.limits.front().count_backend_failed();
                Close::Backend(e)
            };
            if let Some(e) = pass.backend.take_error().map_err(Close::Io)? {
                return Err(failed(e));
            }
            match pass.backend.peer_addr() {
                Ok(_) => {
                    pass.connected = true;
                    conn.deadline = now + self.cfg.idle_timeout;
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    return Ok(Served::Passing(false));
                }
                Err(e) => return Err(failed(e)),
            }
        }
        let mut read = [0usize; 2];
        let mut served = Ok(Served::Passing(true));
        for _ in 0..PUMP_BUDGET {
            let [up, down] = &mut pass.dirs;
            let step = up
                .step(&mut conn.socket, &mut pass.backend, &mut read[0])
                .and_then(|u| {
                    down.step(&mut pass.backend, &mut conn.socket, &mut read[1])
                        .map(|d| u || d)
                });
            match step {
                Err(e) => {
                    served = Err(e);
                    break;
                }
                Ok(_) if pass.dirs.iter().all(|d| d.finished) => {
                    served = Err(Close::Passed);
                    break;
                }
                Ok(false) => {
                    served = Ok(Served::Passing(false));
                    break;
                }
                Ok(true) => {}
            }
        }
        let front = self.limits.front();
        front.count_passed_bytes(true, read[0]);
        front.count_passed_bytes(false, read[1]);
        if read != [0; 2] {
            conn.deadline = now + self.cfg.idle_timeout;
        }
        served
    }
}

/// What opening a connection came to.
enum Opened {
    Waiting,
    Turn,
    /// For the backend, with the bytes read so far.
    Backend(Vec<u8>),
}

/// The PROXY header at the start of `socket`, if it has arrived whole: its length, its
/// version and the client it names. Nothing is read from the socket.
fn peek_proxy_header(
    socket: &TcpStream,
) -> Result<Option<(usize, Version, Option<SocketAddr>)>, Close> {
    let mut head = [0u8; proxy::MAX_HEADER];
    let n = match socket.peek(&mut head) {
        Ok(0) => return Err(Close::Eof),
        Ok(n) => n,
        // Interrupted: the bytes stay; the next event peeks again.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(Close::Io(e)),
    };
    match proxy::parse(head.get(..n).unwrap_or_default()) {
        Parsed::Incomplete => Ok(None),
        Parsed::Header {
            len,
            version,
            source,
        } => Ok(Some((len, version, source))),
        Parsed::Malformed => Err(Close::Refused(Refusal::ProxyMalformed)),
        Parsed::TooLong => Err(Close::Refused(Refusal::ProxyTooLong)),
    }
}

/// `https-backend`'s address, resolved once at start.
pub fn resolve_backend(backend: &str) -> io::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    let resolved = backend
        .to_socket_addrs()
        .map_err(|e| io::Error::new(e.kind(), format!("https-backend {backend}: {e}")))?;
    resolved.into_iter().next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("https-backend {backend}: no address"),
        )
    })
}
