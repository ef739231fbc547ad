//! TLS for the TURN-over-TLS listeners: the shared certificate store's configuration
//! with ALPN for TURN.

use crate::control::CertStore;
use std::io;
use std::sync::Arc;

/// ALPN protocol ids accepted (RFC 7443); a client that offers none is accepted too.
const ALPN: [&[u8]; 2] = [b"stun.turn", b"stun.nat-discovery"];

/// The configuration every TLS listener of every shard uses.
pub fn server_config(certs: &Arc<CertStore>) -> io::Result<Arc<rustls::ServerConfig>> {
    certs.server_config(&ALPN).map_err(io::Error::other)
}
