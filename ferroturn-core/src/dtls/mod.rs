//! The stateless front of TURN over DTLS (RFC 7350): what a datagram from a client
//! without a DTLS session may get, decided without keeping anything.
//!
//! RFC 6347 section 4.2.1: a server answers a ClientHello without a valid cookie with a
//! HelloVerifyRequest carrying one, and starts a handshake (and so keeps state) only for
//! a ClientHello that repeats a valid cookie, which proves the client receives at the
//! address it sends from. [`Gate::handle_datagram`] makes that decision from the datagram,
//! the client's address and the time alone; the I/O layer runs the handshake itself
//! (OpenSSL) only after [`Verdict::Accept`]. A flood of ClientHellos from spoofed or
//! countless addresses therefore costs one HMAC and one 48-byte answer each (smaller
//! than the ClientHello: no amplification), and no memory.

pub mod cookie;
pub mod hello;

pub use cookie::{COOKIE_LEN, Cookie, CookieCheck, Cookies};
pub use hello::{ClientHello, parse_client_hello};

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long a cookie is accepted after it was issued: a client repeats its ClientHello
/// one round trip later, so a short lifetime costs nothing and limits replays from the
/// same address.
pub const COOKIE_LIFETIME: Duration = Duration::from_secs(30);
/// Room [`Gate::handle_datagram`] needs in its output buffer.
pub const HELLO_VERIFY_LEN: usize = hello::hello_verify_len(COOKIE_LEN);

/// What to do with a datagram from a client that has no session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not a ClientHello a session can start from: dropped without an answer.
    Drop,
    /// A ClientHello without a valid cookie (none, expired, or not issued for this
    /// address, port and ClientHello): send the first `len` bytes of the output buffer,
    /// a HelloVerifyRequest with a fresh cookie. Nothing is kept.
    HelloVerify { len: usize, expired: bool },
    /// A ClientHello repeating a valid cookie: the handshake may start.
    Accept { cookie: Cookie },
}

/// The stateless cookie exchange of one shard (every shard may share the key).
#[derive(Debug)]
pub struct Gate {
    cookies: Cookies,
    /// Maps `Instant`s to unix seconds, like the TURN core's clock.
    clock: crate::clock::WallClock,
}

impl Gate {
    /// A gate whose cookies are keyed with `key`; `unix_now` is the wall clock at `now`.
    pub fn new(key: [u8; 32], now: Instant, unix_now: u64) -> Self {
        Self {
            cookies: Cookies::new(key, COOKIE_LIFETIME.as_secs()),
            clock: crate::clock::WallClock::new(now, unix_now),
        }
    }

    /// Re-anchors the wall clock (the driver calls this now and then).
    pub fn set_wall_clock(&mut self, now: Instant, unix_now: u64) {
        self.clock.set(now, unix_now);
    }

    fn unix(&self, now: Instant) -> u64 {
        self.clock.unix(now)
    }

    /// Decides what `datagram` from `client` gets. A HelloVerifyRequest is written to
    /// `out`, which needs [`HELLO_VERIFY_LEN`] bytes (a shorter one drops the datagram).
    pub fn handle_datagram(
        &self,
        now: Instant,
        client: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
    ) -> Verdict {
        let Some(hello) = parse_client_hello(datagram) else {
            return Verdict::Drop;
        };
        let unix_now = self.unix(now);
        let check = self.cookies.check(client, &hello, unix_now);
        if check == CookieCheck::Valid {
            let mut cookie = [0u8; COOKIE_LEN];
            cookie.copy_from_slice(hello.cookie);
            return Verdict::Accept { cookie };
        }
        let fresh = self.cookies.issue(client, &hello, unix_now);
        match hello::write_hello_verify(&hello, &fresh, out) {
            Some(len) => Verdict::HelloVerify {
                len,
                expired: check == CookieCheck::Expired,
            },
            None => Verdict::Drop,
        }
    }
}
