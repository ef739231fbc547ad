//! DTLS 1.2 sessions (RFC 6347) over OpenSSL, driven one datagram at a time: no socket
//! here. The server side (`net`) and the client (`client`) both feed a [`Session`] what
//! arrives and send the datagrams it leaves in its outbox.
//!
//! Why OpenSSL (the vendored build: nothing to install): a server must keep no state for
//! a client before the client repeats a valid cookie (RFC 6347 section 4.2.1), so the
//! cookie exchange runs in front of the library (`ferroturn_core::dtls::Gate`) and the
//! library must then continue a handshake whose first ClientHello it never saw, from the
//! second one (message_seq 1). OpenSSL's `DTLSv1_listen` does exactly that; the pure-Rust
//! sans-IO crates (dimpl, rtc-dtls) keep per-client state for the cookie exchange and
//! cannot start from a ClientHello verified elsewhere. OpenSSL also speaks to coturn's
//! tools (the same library) with RSA and ECDSA certificates alike.
//!
//! The library reaches the datagrams through [`Datagrams`], the `Read + Write` end of the
//! custom BIO `SslStream` installs: a read returns the one datagram handed in (then
//! `WouldBlock`), a write appends one datagram to the outbox. Both buffers are reused, so
//! a session allocates nothing per datagram once warm.

use ferroturn_core::dtls::Cookie;
use foreign_types::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::pkey::PKey;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslContextBuilder, SslMethod, SslOptions, SslSessionCacheMode,
    SslStream, SslVerifyMode, SslVersion,
};
use openssl::x509::X509;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Duration;

/// The largest datagram a handshake flight is cut into (RFC 6347 section 4.1.1.1: no
/// path MTU discovery here; 1200 bytes pass any IPv6 path, RFC 8200 section 5).
pub const MTU: u32 = 1200;
/// The most bytes a session's outbox holds before writes fail (a flight is a few KiB;
/// the owner drains the outbox after every call).
const MAX_OUTBOX: usize = 256 * 1024;

/// Why a session cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum DtlsError {
    #[error("DTLS: {0}")]
    Ssl(#[from] openssl::ssl::Error),
    #[error("DTLS setup: {0}")]
    Setup(#[from] ErrorStack),
    #[error("the ClientHello was not accepted")]
    NotAccepted,
    #[error("closed by the peer (close_notify)")]
    Closed,
    #[error("outbox full")]
    Full,
}

/// The datagram end of a session's BIO: the one datagram being read, and the datagrams
/// written since the owner last drained them.
#[derive(Debug, Default)]
pub struct Datagrams {
    inbound: Vec<u8>,
    unread: bool,
    out: Vec<u8>,
    /// End offset in `out` of each datagram.
    ends: Vec<usize>,
}

impl Datagrams {
    fn hand_in(&mut self, datagram: &[u8]) {
        self.inbound.clear();
        self.inbound.extend_from_slice(datagram);
        self.unread = true;
    }
}

impl Read for Datagrams {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.unread {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.unread = false;
        let n = self.inbound.len().min(buf.len());
        buf[..n].copy_from_slice(&self.inbound[..n]);
        Ok(n)
    }
}

impl Write for Datagrams {
    fn write(&mut self, datagram: &[u8]) -> io::Result<usize> {
        if self.out.len() + datagram.len() > MAX_OUTBOX {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.out.extend_from_slice(datagram);
        self.ends.push(self.out.len());
        Ok(datagram.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where each session keeps the cookie the gate accepted, for the verify callback.
fn cookie_index() -> Result<openssl::ex_data::Index<Ssl, Cookie>, ErrorStack> {
    static INDEX: OnceLock<openssl::ex_data::Index<Ssl, Cookie>> = OnceLock::new();
    if let Some(i) = INDEX.get() {
        return Ok(*i);
    }
    let i = Ssl::new_ex_index::<Cookie>()?;
    Ok(*INDEX.get_or_init(|| i))
}

/// The server configuration for a certificate chain (leaf first, DER) and its key (DER:
/// PKCS#8, SEC1 or PKCS#1): DTLS 1.2 only, no client certificates, no session cache or
/// tickets (nothing kept between sessions), cookies checked against the one the gate
/// accepted.
pub fn server_context(chain: &[&[u8]], key: &[u8]) -> Result<SslContext, ErrorStack> {
    let index = cookie_index()?;
    let mut b = SslContextBuilder::new(SslMethod::dtls_server())?;
    b.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
    b.set_options(SslOptions::COOKIE_EXCHANGE | SslOptions::NO_QUERY_MTU | SslOptions::NO_TICKET);
    b.set_session_cache_mode(SslSessionCacheMode::OFF);
    // Not SSL_MODE_RELEASE_BUFFERS: it frees a session's record buffers after every
    // record and allocates them again for the next, on the data path. A session keeps
    // them instead (an established session is about 75 KiB in all), bounded by the
    // connection caps.
    b.set_verify(SslVerifyMode::NONE);
    let mut certs = chain.iter();
    let leaf = certs.next().ok_or_else(ErrorStack::get)?;
    let leaf = X509::from_der(leaf)?;
    b.set_certificate(&leaf)?;
    for extra in certs {
        b.add_extra_chain_cert(X509::from_der(extra)?)?;
    }
    let key = PKey::private_key_from_der(key)?;
    b.set_private_key(&key)?;
    b.check_private_key()?;
    b.set_cookie_verify_cb(move |ssl, cookie| {
        ssl.ex_data(index)
            .is_some_and(|accepted| subtle::ConstantTimeEq::ct_eq(&accepted[..], cookie).into())
    });
    // Cookies are issued by the gate only; a session never sends a HelloVerifyRequest.
    b.set_cookie_generate_cb(|_, _| Err(ErrorStack::get()));
    Ok(b.build())
}

/// A client configuration trusting the CA certificates in `ca_pem`, verifying the
/// server's certificate.
pub fn client_context(ca_pem: &[u8]) -> Result<SslContext, ErrorStack> {
    let mut b = SslContextBuilder::new(SslMethod::dtls_client())?;
    b.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
    b.set_options(SslOptions::NO_QUERY_MTU);
    b.set_verify(SslVerifyMode::PEER);
    for ca in X509::stack_from_pem(ca_pem)? {
        b.cert_store_mut().add_cert(ca)?;
    }
    Ok(b.build())
}

/// One DTLS association.
pub struct Session {
    stream: SslStream<Datagrams>,
    established: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("established", &self.established)
            .finish_non_exhaustive()
    }
}

mod ffi {
    use openssl_sys::{BIO_ADDR, SSL};
    use std::ffi::c_int;

    unsafe extern "C" {
        pub fn DTLSv1_listen(s: *mut SSL, client: *mut BIO_ADDR) -> c_int;
        pub fn BIO_ADDR_new() -> *mut BIO_ADDR;
        pub fn BIO_ADDR_free(a: *mut BIO_ADDR);
    }

    /// DTLS_CTRL_GET_TIMEOUT and DTLS_CTRL_HANDLE_TIMEOUT (the macros DTLSv1_get_timeout
    /// and DTLSv1_handle_timeout in ssl.h).
    pub const DTLS_CTRL_GET_TIMEOUT: c_int = 73;
    pub const DTLS_CTRL_HANDLE_TIMEOUT: c_int = 74;
}

impl Session {
    /// The server side of a handshake from `hello`, a ClientHello whose cookie the gate
    /// accepted (`cookie`): OpenSSL's stateless listener takes it as the repeated
    /// ClientHello (message_seq 1). [`Session::handshake`] then answers it; should that
    /// fail, the outbox holds the alert to send.
    pub fn accept(ctx: &SslContext, hello: &[u8], cookie: Cookie) -> Result<Session, DtlsError> {
        let mut ssl = Ssl::new(ctx)?;
        ssl.set_ex_data(cookie_index()?, cookie);
        ssl.set_mtu(MTU)?;
        let mut pipe = Datagrams::default();
        pipe.hand_in(hello);
        let mut stream = SslStream::new(ssl, pipe)?;
        // SAFETY: the SSL object is alive (owned by `stream`) and its BIO is set;
        // `addr` is a valid BIO_ADDR that DTLSv1_listen fills in or clears (it needs one:
        // it clears it when the BIO names no peer), freed right after.
        let listened = unsafe {
            let addr = ffi::BIO_ADDR_new();
            if addr.is_null() {
                return Err(DtlsError::NotAccepted);
            }
            let r = ffi::DTLSv1_listen(stream.ssl().as_ptr(), addr);
            ffi::BIO_ADDR_free(addr);
            r
        };
        if listened != 1 {
            return Err(DtlsError::NotAccepted);
        }
        stream.get_mut().unread = false;
        Ok(Session {
            stream,
            established: false,
        })
    }

    /// The client side of a handshake with `ssl` (from [`client_context`], with the
    /// name or address to verify set): the first flight is in the outbox.
    pub fn connect(mut ssl: Ssl, server_ip: IpAddr) -> Result<Session, DtlsError> {
        ssl.set_mtu(MTU)?;
        ssl.param_mut().set_ip(server_ip)?;
        ssl.set_connect_state();
        let mut session = Session {
            stream: SslStream::new(ssl, Datagrams::default())?,
            established: false,
        };
        session.handshake()?;
        Ok(session)
    }

    /// The peer's certificate (DER), once the handshake has shown it.
    pub fn peer_certificate(&self) -> Option<Vec<u8>> {
        self.stream.ssl().peer_certificate()?.to_der().ok()
    }

    /// The handshake is complete: application data flows.
    pub fn is_established(&self) -> bool {
        self.established
    }

    /// Moves the handshake on with what was handed in.
    pub fn handshake(&mut self) -> Result<(), DtlsError> {
        match self.stream.do_handshake() {
            Ok(()) => {
                self.established = true;
                Ok(())
            }
            Err(e) if e.code() == ErrorCode::WANT_READ => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Hands a datagram from the peer in; during the handshake it moves the handshake
    /// on. Afterwards, [`Session::read`] returns what it carried.
    pub fn handle_datagram(&mut self, datagram: &[u8]) -> Result<(), DtlsError> {
        self.stream.get_mut().hand_in(datagram);
        if !self.established {
            self.handshake()?;
        }
        Ok(())
    }

    /// The next application data record's plaintext, written to `buf`: `Ok(None)` when
    /// the datagrams handed in hold no more. A close_notify from the peer is
    /// [`DtlsError::Closed`]. Records that fail authentication are dropped by OpenSSL
    /// (RFC 6347 section 4.1.2.7) and never surface.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<Option<usize>, DtlsError> {
        if !self.established {
            return Ok(None);
        }
        match self.stream.ssl_read(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.code() == ErrorCode::WANT_READ => Ok(None),
            Err(e) if e.code() == ErrorCode::ZERO_RETURN => Err(DtlsError::Closed),
            Err(e) => Err(e.into()),
        }
    }

    /// Encrypts `plaintext` as one application data record into the outbox.
    pub fn write(&mut self, plaintext: &[u8]) -> Result<(), DtlsError> {
        match self.stream.ssl_write(plaintext) {
            Ok(_) => Ok(()),
            Err(e) if e.code() == ErrorCode::WANT_WRITE => Err(DtlsError::Full),
            Err(e) => Err(e.into()),
        }
    }

    /// The datagrams waiting to be sent, in order.
    pub fn outbox(&self) -> impl Iterator<Item = &[u8]> {
        let pipe = self.stream.get_ref();
        let mut start = 0;
        pipe.ends.iter().map(move |&end| {
            let d = &pipe.out[start..end];
            start = end;
            d
        })
    }

    /// Whether datagrams wait in the outbox.
    pub fn has_outbox(&self) -> bool {
        !self.stream.get_ref().ends.is_empty()
    }

    /// Empties the outbox (after its datagrams were sent).
    pub fn clear_outbox(&mut self) {
        let pipe = self.stream.get_mut();
        pipe.out.clear();
        pipe.ends.clear();
    }

    /// How long until the handshake's retransmission timer fires (`None`: not running).
    pub fn retransmit_in(&self) -> Option<Duration> {
        let mut tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        };
        // SAFETY: DTLSv1_get_timeout writes one timeval into `tv`, which outlives the
        // call; the SSL object is alive.
        let running = unsafe {
            openssl_sys::SSL_ctrl(
                self.stream.ssl().as_ptr(),
                ffi::DTLS_CTRL_GET_TIMEOUT,
                0,
                (&mut tv as *mut libc::timeval).cast(),
            )
        };
        (running > 0).then(|| {
            Duration::from_secs(tv.tv_sec.max(0) as u64)
                + Duration::from_micros(tv.tv_usec.max(0) as u64)
        })
    }

    /// Retransmits the last flight if its timer has fired (RFC 6347 section 4.2.4).
    pub fn handle_timeout(&mut self) -> Result<(), DtlsError> {
        if self.retransmit_in() != Some(Duration::ZERO) {
            return Ok(());
        }
        // SAFETY: DTLSv1_handle_timeout takes no pointer argument; the SSL object is
        // alive and its BIO (the outbox) set.
        let r = unsafe {
            openssl_sys::SSL_ctrl(
                self.stream.ssl().as_ptr(),
                ffi::DTLS_CTRL_HANDLE_TIMEOUT,
                0,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(DtlsError::Setup(ErrorStack::get()));
        }
        Ok(())
    }

    /// Sends close_notify (into the outbox) once the handshake is done; otherwise
    /// nothing: there is no association to close.
    pub fn close(&mut self) {
        if self.established {
            let _ = self.stream.shutdown();
        }
    }
}
