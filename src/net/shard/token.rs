//! What a mio token names in a shard's event loop: one enum, one mapping each way.

use mio::Token;

const WAKER: usize = 0;
const LISTENER_BASE: usize = 1;
const DTLS_LISTENER_BASE: usize = 1 << 14;
const STREAM_LISTENER_BASE: usize = 1 << 15;
const RELAY_BASE: usize = 1 << 16;
const CONN_BASE: usize = 1 << 40;
const TCP_RELAY_BASE: usize = 1 << 41;
const PEER_BASE: usize = 1 << 42;
const BACKEND_BASE: usize = 1 << 43;

/// A source of events in a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The mailbox's waker.
    Waker,
    /// UDP listener socket `n`.
    Listener(usize),
    /// DTLS socket `n` (UDP, on a TLS port).
    DtlsListener(usize),
    /// TCP or TLS listener `n`.
    StreamListener(usize),
    /// The relay socket in relay slot `n` (the allocation's slab index).
    Relay(usize),
    /// TCP or TLS connection `n`.
    Conn(usize),
    /// The listening socket of the TCP allocation in relay slot `n` (RFC 6062).
    TcpRelay(usize),
    /// TCP peer connection `n` of a TCP allocation.
    Peer(usize),
    /// The HTTPS backend connection of client connection `n` (passed through).
    Backend(usize),
}

impl Source {
    pub fn token(self) -> Token {
        Token(match self {
            Source::Waker => WAKER,
            Source::Listener(n) => LISTENER_BASE + n,
            Source::DtlsListener(n) => DTLS_LISTENER_BASE + n,
            Source::StreamListener(n) => STREAM_LISTENER_BASE + n,
            Source::Relay(n) => RELAY_BASE + n,
            Source::Conn(n) => CONN_BASE + n,
            Source::TcpRelay(n) => TCP_RELAY_BASE + n,
            Source::Peer(n) => PEER_BASE + n,
            Source::Backend(n) => BACKEND_BASE + n,
        })
    }

    pub fn of(token: Token) -> Source {
        match token.0 {
            WAKER => Source::Waker,
            t if t >= BACKEND_BASE => Source::Backend(t - BACKEND_BASE),
            t if t >= PEER_BASE => Source::Peer(t - PEER_BASE),
            t if t >= TCP_RELAY_BASE => Source::TcpRelay(t - TCP_RELAY_BASE),
            t if t >= CONN_BASE => Source::Conn(t - CONN_BASE),
            t if t >= RELAY_BASE => Source::Relay(t - RELAY_BASE),
            t if t >= STREAM_LISTENER_BASE => Source::StreamListener(t - STREAM_LISTENER_BASE),
            t if t >= DTLS_LISTENER_BASE => Source::DtlsListener(t - DTLS_LISTENER_BASE),
            t => Source::Listener(t - LISTENER_BASE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Source;

    #[test]
    fn tokens_round_trip() {
        for s in [
            Source::Waker,
            Source::Listener(0),
            Source::Listener(7),
            Source::StreamListener(3),
            Source::DtlsListener(0),
            Source::DtlsListener(5),
            Source::Relay(0),
            Source::Relay(70_000),
            Source::Conn(0),
            Source::Conn(1 << 20),
            Source::TcpRelay(0),
            Source::TcpRelay(70_000),
            Source::Peer(0),
            Source::Peer(1 << 20),
            Source::Backend(0),
            Source::Backend(1 << 20),
        ] {
            assert_eq!(Source::of(s.token()), s);
        }
    }
}
