//! The ClientHello on a TLS port shared with an HTTPS server (`https-backend`): read,
//! not answered, to decide whether the connection is TURN or goes to the backend, with
//! every byte kept so the backend can be handed the connection from its first byte.
//!
//! rustls's [`Acceptor`] parses the ClientHello; a TURN connection goes on from the
//! [`Accepted`] it returns ([`Accepted::into_connection`]), so nothing is parsed twice.
//! No I/O here: the caller reads and feeds the bytes.

use rustls::server::{Accepted, Acceptor};

/// The most bytes read before the ClientHello is complete. A ClientHello is one
/// handshake message, usually a few hundred bytes to 2 KiB (post-quantum key shares
/// included); 16 KiB is several times that, and a ClientHello that fills a whole TLS
/// record (2^14 bytes of payload after a 5-byte header) is refused.
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;

/// ALPN protocol ids (RFC 7301) of the HTTPS backend and of TURN (RFC 7443).
const HTTP: [&[u8]; 2] = [b"h2", b"http/1.1"];
const TURN: &[u8] = b"stun.turn";

/// Where a connection goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Turn,
    Backend,
}

/// The route for a ClientHello's ALPN list: the backend when it offers `h2` or
/// `http/1.1` and not `stun.turn`; TURN otherwise, without ALPN too (browsers' TURN
/// clients send none).
pub fn route<'a>(alpn: Option<impl Iterator<Item = &'a [u8]>>) -> Route {
    let (mut http, mut turn) = (false, false);
    for id in alpn.into_iter().flatten() {
        http |= HTTP.contains(&id);
        turn |= id == TURN;
    }
    if http && !turn {
        Route::Backend
    } else {
        Route::Turn
    }
}

/// What the bytes so far come to.
pub enum Sniffed {
    /// The ClientHello is not complete yet.
    NeedMore,
    /// TURN: go on with the accepted ClientHello (the bytes after it stay in it).
    Turn(Box<Accepted>),
    /// The backend: [`Sniffer::into_seen`] holds every byte to replay.
    Backend,
    /// Not a TLS ClientHello, or a broken one.
    Invalid,
    /// No whole ClientHello within [`MAX_CLIENT_HELLO`] bytes.
    TooLong,
}

/// A ClientHello being read.
#[derive(Default)]
pub struct Sniffer {
    acceptor: Acceptor,
    seen: Vec<u8>,
}

impl Sniffer {
    /// Bytes it may still take.
    pub fn room(&self) -> usize {
        MAX_CLIENT_HELLO.saturating_sub(self.seen.len())
    }

    /// Takes the next bytes of the connection (at most [`Sniffer::room`] of them are
    /// kept). Once it returned anything but [`Sniffed::NeedMore`], feed it no more.
    pub fn feed(&mut self, bytes: &[u8]) -> Sniffed {
        if bytes.len() > self.room() {
            return Sniffed::TooLong;
        }
        self.seen.extend_from_slice(bytes);
        let mut rest = bytes;
        while !rest.is_empty() {
            match self.acceptor.read_tls(&mut rest) {
                Ok(0) | Err(_) => return Sniffed::Invalid,
                Ok(_) => {}
            }
        }
        match self.acceptor.accept() {
            Ok(None) if self.room() == 0 => Sniffed::TooLong,
            Ok(None) => Sniffed::NeedMore,
            Ok(Some(accepted)) => match route(accepted.client_hello().alpn()) {
                Route::Turn => Sniffed::Turn(Box::new(accepted)),
                Route::Backend => Sniffed::Backend,
            },
            Err(_) => Sniffed::Invalid,
        }
    }

    /// Every byte fed so far.
    pub fn into_seen(self) -> Vec<u8> {
        self.seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use std::sync::Arc;

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// A server configuration with a fresh self-signed certificate for localhost,
    /// offering `stun.turn` as the TURN listeners do, and the certificate.
    fn server() -> (Arc<rustls::ServerConfig>, CertificateDer<'static>) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let der = cert.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .unwrap();
        cfg.alpn_protocols = vec![TURN.to_vec()];
        (Arc::new(cfg), der)
    }

    /// A client trusting `cert` and offering `alpn`.
    fn client(cert: &CertificateDer<'static>, alpn: &[&[u8]]) -> rustls::ClientConnection {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.clone()).unwrap();
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        let name = ServerName::try_from("localhost").unwrap();
        rustls::ClientConnection::new(Arc::new(cfg), name).unwrap()
    }

    fn hello(c: &mut rustls::ClientConnection) -> Vec<u8> {
        let mut out = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut out).unwrap();
        }
        out
    }

    #[test]
    fn alpn_decides_the_route() {
        let r = |ids: &[&'static [u8]]| route(Some(ids.iter().copied()));
        assert_eq!(route(None::<std::iter::Empty<&[u8]>>), Route::Turn);
        assert_eq!(r(&[]), Route::Turn);
        assert_eq!(r(&[b"h2", b"http/1.1"]), Route::Backend);
        assert_eq!(r(&[b"http/1.1"]), Route::Backend);
        assert_eq!(r(&[b"h2", b"stun.turn"]), Route::Turn);
        assert_eq!(r(&[b"stun.turn"]), Route::Turn);
        assert_eq!(r(&[b"stun.nat-discovery"]), Route::Turn);
    }

    #[test]
    fn an_http_client_hello_goes_to_the_backend_byte_for_byte() {
        let (_, cert) = server();
        let bytes = hello(&mut client(&cert, &[b"h2", b"http/1.1"]));
        let mut s = Sniffer::default();
        // One byte at a time: only the last completes it.
        for (i, b) in bytes.iter().enumerate() {
            match s.feed(std::slice::from_ref(b)) {
                Sniffed::NeedMore if i + 1 < bytes.len() => {}
                Sniffed::Backend if i + 1 == bytes.len() => {}
                _ => panic!("unexpected verdict at byte {i} of {}", bytes.len()),
            }
        }
        assert_eq!(s.into_seen(), bytes);
    }

    #[test]
    fn a_turn_client_hello_becomes_a_working_tls_connection() {
        let (cfg, cert) = server();
        for alpn in [&[][..], &[TURN][..], &[b"h2", TURN][..]] {
            let mut c = client(&cert, alpn);
            let mut s = Sniffer::default();
            let Sniffed::Turn(accepted) = s.feed(&hello(&mut c)) else {
                panic!("{alpn:?}: not TURN");
            };
            let mut server = accepted
                .into_connection(cfg.clone())
                .map_err(|e| e.0)
                .unwrap();
            // Finish the handshake in memory, then one message each way.
            for _ in 0..10 {
                let mut buf = Vec::new();
                while server.wants_write() {
                    server.write_tls(&mut buf).unwrap();
                }
                c.read_tls(&mut &buf[..]).unwrap();
                c.process_new_packets().unwrap();
                let mut buf = Vec::new();
                while c.wants_write() {
                    c.write_tls(&mut buf).unwrap();
                }
                server.read_tls(&mut &buf[..]).unwrap();
                server.process_new_packets().unwrap();
                if !c.is_handshaking() && !server.is_handshaking() {
                    break;
                }
            }
            assert!(
                !server.is_handshaking(),
                "{alpn:?}: handshake did not finish"
            );
            let want = if alpn.contains(&TURN) {
                Some(TURN)
            } else {
                None
            };
            assert_eq!(server.alpn_protocol(), want);
        }
    }

    #[test]
    fn anything_else_is_invalid_or_too_long() {
        let mut s = Sniffer::default();
        assert!(matches!(
            s.feed(b"GET / HTTP/1.1\r\n\r\n"),
            Sniffed::Invalid
        ));
        let mut s = Sniffer::default();
        assert!(matches!(
            s.feed(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
            Sniffed::Invalid
        ));
        // A handshake record announcing more than the bound, sent in full.
        let mut s = Sniffer::default();
        let mut big = vec![0x16, 3, 1, 0x40, 0x00, 1, 0, 0x3f, 0xfc];
        big.resize(MAX_CLIENT_HELLO + 5, 0);
        let (first, second) = big.split_at(MAX_CLIENT_HELLO - 1);
        assert!(matches!(s.feed(first), Sniffed::NeedMore));
        assert!(matches!(s.feed(second), Sniffed::TooLong));
        // Exactly the bound without a whole ClientHello.
        let mut s = Sniffer::default();
        assert!(matches!(s.feed(&big[..MAX_CLIENT_HELLO]), Sniffed::TooLong));
    }
}
