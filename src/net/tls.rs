//! TLS for the TURN-over-TLS listeners: the shared certificate store's configuration
//! with ALPN for TURN.

use crate::control::CertStore;
use std::io;
use std::sync::Arc;

/// The one ALPN protocol id offered, `stun.turn` (RFC 7443). rustls applies RFC 7301
/// section 3.2 to the rest: a client that sends no ALPN extension (Chromium sends none) is
/// served without one, and a client whose list has no `stun.turn` (only
/// `stun.nat-discovery`, say: RFC 5780 NAT behaviour discovery is not implemented) is
/// refused with a fatal no_application_protocol alert rather than served a protocol it
/// did not ask for.
const ALPN: [&[u8]; 1] = [b"stun.turn"];

/// The configuration every TLS listener of every shard uses.
pub fn server_config(certs: &Arc<CertStore>) -> io::Result<Arc<rustls::ServerConfig>> {
    certs.server_config(&ALPN).map_err(io::Error::other)
}
