//! A small TURN client (RFC 8656 client side) over UDP, DTLS, TCP or TLS, used by the
//! end-to-end tests and the load tools. It answers the 401/438 challenge itself,
//! retransmits requests over UDP, and keeps relayed data (and ConnectionAttempt
//! indications) that arrive while it waits for a response. The relay to peers is UDP,
//! or TCP for a TCP allocation (RFC 6062: [`TurnClient::allocate_tcp`],
//! [`TurnClient::connect`], [`TurnClient::into_data_connection`]).

pub mod codec;
mod data;
mod link;
mod message;

pub use data::DataConnection;
pub use link::{ByteStream, Transport};
pub use message::{
    MAX_INDICATION_DATA, channel_data, parse_connection_attempt, parse_relayed, send_indication,
};

use codec::{RequestAttr, Response};
use ferroturn_core::proto::integrity::long_term_key;
use ferroturn_core::proto::wire::method;
use link::Link;
use rand::RngExt;
use rustls_pki_types::ServerName;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{Instant, timeout, timeout_at};

/// What a request ended in.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("error response {0}")]
    Error(u16),
    #[error("no response")]
    Timeout,
    #[error("malformed response")]
    Malformed,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Data received from the relay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Relayed {
    /// A Data indication from `peer`.
    Indication { peer: SocketAddr, data: Vec<u8> },
    /// ChannelData on `channel`.
    Channel { channel: u16, data: Vec<u8> },
}

/// A DTLS handshake with `server` from a new UDP socket, within 5 seconds, verifying the
/// server's certificate under `ctx` for its IP address: the socket and the established
/// session.
pub async fn dtls_handshake(
    server: SocketAddr,
    ctx: &openssl::ssl::SslContext,
) -> io::Result<(UdpSocket, crate::dtls::Session)> {
    let socket = UdpSocket::bind(local_for(server)).await?;
    let ssl = openssl::ssl::Ssl::new(ctx).map_err(io::Error::other)?;
    let mut session = crate::dtls::Session::connect(ssl, server.ip()).map_err(io::Error::other)?;
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let mut buf = vec![0u8; 65_536];
    loop {
        link::send_outbox(&socket, &mut session, server).await?;
        if session.is_established() {
            return Ok((socket, session));
        }
        let wait = session
            .retransmit_in()
            .unwrap_or(Duration::from_millis(200))
            .min(Duration::from_millis(200));
        let until = deadline.min(Instant::now() + wait);
        match timeout_at(until, socket.recv_from(&mut buf)).await {
            Ok(Ok((n, from))) if from == server => session
                .handle_datagram(buf.get(..n).unwrap_or_default())
                .map_err(io::Error::other)?,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) if Instant::now() >= deadline => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "DTLS handshake timed out",
                ));
            }
            Err(_) => session.handle_timeout().map_err(io::Error::other)?,
        }
    }
}

/// A local address of `server`'s family, port 0: loopback for a loopback server.
fn local_for(server: SocketAddr) -> SocketAddr {
    let ip: std::net::IpAddr = match (server.ip().is_loopback(), server.is_ipv4()) {
        (true, true) => std::net::Ipv4Addr::LOCALHOST.into(),
        (true, false) => std::net::Ipv6Addr::LOCALHOST.into(),
        (false, true) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        (false, false) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    };
    SocketAddr::new(ip, 0)
}

/// The most data messages kept while waiting for responses.
const MAX_PENDING_DATA: usize = 1024;
/// How long a TCP connect plus, for TLS, the handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct TurnClient {
    link: Link,
    username: String,
    password: String,
    realm: Option<String>,
    nonce: Option<String>,
    pending: VecDeque<Relayed>,
    /// RFC 6062 ConnectionAttempt indications not yet taken: (CONNECTION-ID, peer).
    attempts: VecDeque<(u32, SocketAddr)>,
    /// How long a request waits for its response in total.
    pub request_timeout: Duration,
    /// How many 401/438 challenges this client has answered.
    pub challenges: u32,
    /// RFC 8016: the last MOBILITY-TICKET the server gave this client.
    mobility_ticket: Option<Vec<u8>>,
}

impl TurnClient {
    /// A UDP client on a fresh local socket of the server's family (loopback for a
    /// loopback server).
    pub async fn new(server: SocketAddr, username: &str, password: &str) -> io::Result<Self> {
        Ok(Self::with_socket(
            UdpSocket::bind(local_for(server)).await?,
            server,
            username,
            password,
        ))
    }

    /// A UDP client on `socket`.
    pub fn with_socket(
        socket: UdpSocket,
        server: SocketAddr,
        username: &str,
        password: &str,
    ) -> Self {
        Self::with_link(Link::udp(socket, server), username, password)
    }

    /// A client over a new TCP connection to `server` (RFC 8656 section 3.1).
    pub async fn connect_tcp(
        server: SocketAddr,
        username: &str,
        password: &str,
    ) -> io::Result<Self> {
        Self::with_tcp_stream(connect(server).await?, username, password)
    }

    /// A client over a TCP connection already open to the server.
    pub fn with_tcp_stream(stream: TcpStream, username: &str, password: &str) -> io::Result<Self> {
        // Requests and small ChannelData must not wait for Nagle's algorithm.
        stream.set_nodelay(true)?;
        let (local, server) = (stream.local_addr()?, stream.peer_addr()?);
        let link = Link::stream(Box::new(stream), Transport::Tcp, local, server);
        Ok(Self::with_link(link, username, password))
    }

    /// A client over TLS to `server`, whose certificate must name `server_name` under
    /// `config` (which may ask for ALPN "stun.turn", RFC 7443).
    pub async fn connect_tls(
        server: SocketAddr,
        server_name: ServerName<'static>,
        config: Arc<rustls::ClientConfig>,
        username: &str,
        password: &str,
    ) -> io::Result<Self> {
        let tcp = connect(server).await?;
        tcp.set_nodelay(true)?;
        let local = tcp.local_addr()?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let tls = timeout(CONNECT_TIMEOUT, connector.connect(server_name, tcp))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        let link = Link::stream(Box::new(tls), Transport::Tls, local, server);
        Ok(Self::with_link(link, username, password))
    }

    /// A client over a stream already open from `local` to `server` (TLS: past its
    /// handshake), on which something may have gone first: a PROXY header, say.
    pub fn with_stream(
        stream: Box<dyn ByteStream>,
        transport: Transport,
        local: SocketAddr,
        server: SocketAddr,
        username: &str,
        password: &str,
    ) -> Self {
        Self::with_link(
            Link::stream(stream, transport, local, server),
            username,
            password,
        )
    }

    /// A client over DTLS (RFC 7350) to `server`, whose certificate must be valid under
    /// `ctx` (`crate::dtls::client_context`) for the server's IP address.
    pub async fn connect_dtls(
        server: SocketAddr,
        ctx: &openssl::ssl::SslContext,
        username: &str,
        password: &str,
    ) -> io::Result<Self> {
        let (socket, session) = dtls_handshake(server, ctx).await?;
        let link = Link::dtls(socket, session, server);
        Ok(Self::with_link(link, username, password))
    }

    fn with_link(link: Link, username: &str, password: &str) -> Self {
        Self {
            link,
            username: username.to_owned(),
            password: password.to_owned(),
            realm: None,
            nonce: None,
            pending: VecDeque::new(),
            attempts: VecDeque::new(),
            request_timeout: Duration::from_secs(3),
            challenges: 0,
            mobility_ticket: None,
        }
    }

    /// The transport to the server.
    pub fn transport(&self) -> Transport {
        self.link.transport()
    }

    /// "udp", "dtls", "tcp" or "tls".
    pub fn transport_name(&self) -> &'static str {
        self.link.transport().name()
    }

    /// The server this client talks to.
    pub fn server(&self) -> SocketAddr {
        self.link.server()
    }

    /// The realm and nonce this client authenticates with, once challenged.
    pub fn realm_and_nonce(&self) -> Option<(&str, &str)> {
        Some((self.realm.as_deref()?, self.nonce.as_deref()?))
    }

    /// Authenticates with this realm and nonce from the first request on.
    pub fn set_realm_and_nonce(&mut self, realm: &str, nonce: &str) {
        self.realm = Some(realm.to_owned());
        self.nonce = Some(nonce.to_owned());
    }

    /// Uses other credentials from now on (the realm and nonce are kept).
    pub fn set_credentials(&mut self, username: &str, password: &str) {
        self.username = username.to_owned();
        self.password = password.to_owned();
    }

    /// The client's side of the 5-tuple.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.link.local_addr()
    }

    /// Sends raw bytes to the server (for tests of malformed input): one datagram, or
    /// bytes appended to the stream as they are.
    pub async fn send_raw(&self, bytes: &[u8]) -> io::Result<()> {
        self.link.send(bytes).await
    }

    /// Closes a TCP or TLS connection cleanly (TLS close_notify, then FIN); the server
    /// ends its allocation. Nothing happens over UDP.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.link.shutdown().await
    }

    /// Sends a request and returns the success response; a 401 or 438 is answered once
    /// with credentials (RFC 8489 section 9.2.3).
    pub async fn request(
        &mut self,
        method: u16,
        attrs: &[RequestAttr<'_>],
    ) -> Result<Response, ClientError> {
        for _ in 0..3 {
            let txn: [u8; 12] = rand::rng().random();
            let msg = self
                .build(method, &txn, attrs)
                .ok_or(ClientError::Malformed)?;
            let response = self.transact(&txn, &msg).await?;
            match response.error_code {
                None => {
                    // RFC 8016 section 3.2.1: the ticket of the latest success is the one
                    // to use.
                    if let Some(ticket) = &response.mobility_ticket {
                        self.mobility_ticket = Some(ticket.clone());
                    }
                    return Ok(response);
                }
                Some(code @ (401 | 438)) if response.nonce.is_some() => {
                    self.challenges += 1;
                    let fresh = self.nonce.is_none() || code == 438;
                    self.realm = response.realm.or(self.realm.take());
                    self.nonce = response.nonce;
                    if !fresh {
                        return Err(ClientError::Error(code));
                    }
                }
                Some(code) => return Err(ClientError::Error(code)),
            }
        }
        Err(ClientError::Error(401))
    }

    fn build(&self, method: u16, txn: &[u8; 12], attrs: &[RequestAttr<'_>]) -> Option<Vec<u8>> {
        match (&self.realm, &self.nonce) {
            (Some(realm), Some(nonce)) => {
                let mut all = vec![
                    RequestAttr::Username(&self.username),
                    RequestAttr::Realm(realm),
                    RequestAttr::Nonce(nonce),
                ];
                all.extend_from_slice(attrs);
                let key = long_term_key(&self.username, realm, self.password.as_bytes());
                codec::encode_request(method, false, txn, &all, Some(&key))
            }
            _ => codec::encode_request(method, false, txn, attrs, None),
        }
    }

    /// Sends `msg` until the response with `txn` arrives or the request timeout passes.
    /// Over UDP it is retransmitted (RFC 8489 section 6.2.1, RTO 250 ms here); over TCP
    /// and TLS it is sent once, the transport being reliable (section 6.2.2).
    async fn transact(&mut self, txn: &[u8; 12], msg: &[u8]) -> Result<Response, ClientError> {
        let deadline = Instant::now() + self.request_timeout;
        let retransmit = !self.link.transport().is_stream();
        let mut rto = Duration::from_millis(250);
        // Each pass doubles the RTO, so the deadline ends the loop.
        loop {
            timeout_at(deadline, self.link.send(msg))
                .await
                .map_err(|_| ClientError::Timeout)??;
            let resend_at = if retransmit {
                (Instant::now() + rto).min(deadline)
            } else {
                deadline
            };
            rto *= 2;
            loop {
                let bytes = match timeout_at(resend_at, self.link.recv()).await {
                    Ok(r) => r?,
                    Err(_) if resend_at >= deadline => return Err(ClientError::Timeout),
                    Err(_) => break,
                };
                if let Some(r) = classify(&mut self.pending, &mut self.attempts, bytes, txn) {
                    return r;
                }
            }
        }
    }

    /// RFC 8656 section 7.1: allocates a UDP relay; returns the relayed address.
    pub async fn allocate(&mut self) -> Result<SocketAddr, ClientError> {
        self.allocate_with(&[RequestAttr::RequestedTransport(17)])
            .await
    }

    pub async fn allocate_with(
        &mut self,
        attrs: &[RequestAttr<'_>],
    ) -> Result<SocketAddr, ClientError> {
        let r = self.request(method::ALLOCATE, attrs).await?;
        r.xor_relayed.ok_or(ClientError::Malformed)
    }

    /// RFC 6062 section 4.1: allocates a TCP relay (over TCP or TLS only); returns the
    /// relayed address, where the server listens for peers.
    pub async fn allocate_tcp(&mut self) -> Result<SocketAddr, ClientError> {
        self.allocate_with(&[RequestAttr::RequestedTransport(6)])
            .await
    }

    /// RFC 6062 section 4.3: asks the server to connect the TCP allocation to `peer`;
    /// returns the CONNECTION-ID to bind a data connection to.
    pub async fn connect(&mut self, peer: SocketAddr) -> Result<u32, ClientError> {
        let r = self
            .request(method::CONNECT, &[RequestAttr::XorPeerAddress(peer)])
            .await?;
        r.connection_id.ok_or(ClientError::Malformed)
    }

    /// RFC 6062 section 4.4: the next ConnectionAttempt (a peer connected to the TCP
    /// allocation): its CONNECTION-ID and the peer, or `None` if none arrives within
    /// `wait`. Relayed data arriving meanwhile is kept. Cancel-safe.
    pub async fn recv_connection_attempt(
        &mut self,
        wait: Duration,
    ) -> io::Result<Option<(u32, SocketAddr)>> {
        if let Some(a) = self.attempts.pop_front() {
            return Ok(Some(a));
        }
        let deadline = Instant::now() + wait;
        loop {
            let bytes = match timeout_at(deadline, self.link.recv()).await {
                Ok(r) => r?,
                Err(_) => return Ok(None),
            };
            if let Some(a) = parse_connection_attempt(bytes) {
                return Ok(Some(a));
            }
            if let Some(d) = parse_relayed(bytes) {
                if self.pending.len() < MAX_PENDING_DATA {
                    self.pending.push_back(d);
                }
            }
        }
    }

    /// RFC 6062 section 4.4: turns this client's connection (a new TCP or TLS one,
    /// without an allocation) into the data connection of peer connection `id`: sends
    /// ConnectionBind and, on success, returns the raw byte stream to the peer.
    pub async fn into_data_connection(mut self, id: u32) -> Result<DataConnection, ClientError> {
        self.request(method::CONNECTION_BIND, &[RequestAttr::ConnectionId(id)])
            .await?;
        let (stream, early) = self
            .link
            .into_stream()
            .ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "not a stream"))?;
        Ok(DataConnection::new(stream, early))
    }

    /// RFC 8656 section 7.2: a dual allocation (ADDITIONAL-ADDRESS-FAMILY IPv6) of UDP
    /// relays; returns the relayed addresses, IPv4 first, one per family the server
    /// could give (ADDRESS-ERROR-CODE names a family left out).
    pub async fn allocate_dual(&mut self) -> Result<Vec<SocketAddr>, ClientError> {
        let attrs = [
            RequestAttr::RequestedTransport(17),
            RequestAttr::AdditionalFamily(ferroturn_core::proto::Family::V6),
        ];
        let r = self.request(method::ALLOCATE, &attrs).await?;
        let first = r.xor_relayed.ok_or(ClientError::Malformed)?;
        Ok(std::iter::once(first).chain(r.additional_relayed).collect())
    }

    /// RFC 8016 section 3.1.1: allocates a UDP relay and asks for a MOBILITY-TICKET
    /// (kept for [`TurnClient::move_to`]); returns the relayed address.
    pub async fn allocate_mobile(&mut self) -> Result<SocketAddr, ClientError> {
        self.allocate_with(&[
            RequestAttr::RequestedTransport(17),
            RequestAttr::MobilityTicket(&[]),
        ])
        .await
    }

    /// The MOBILITY-TICKET the server gave last, if any.
    pub fn mobility_ticket(&self) -> Option<&[u8]> {
        self.mobility_ticket.as_deref()
    }

    /// RFC 8016 section 3.2.1: the client's address changed. From now on it talks to the
    /// server through `socket`, and a Refresh with its ticket takes the allocation along
    /// (with its permissions and channels); returns the granted lifetime. UDP only.
    pub async fn move_to(&mut self, socket: UdpSocket) -> Result<u32, ClientError> {
        let ticket = self.mobility_ticket.clone().ok_or(ClientError::Malformed)?;
        self.link = Link::udp(socket, self.link.server());
        self.pending.clear();
        let r = self
            .request(method::REFRESH, &[RequestAttr::MobilityTicket(&ticket)])
            .await?;
        r.lifetime.ok_or(ClientError::Malformed)
    }

    /// Returns the granted lifetime.
    pub async fn refresh(&mut self, lifetime: u32) -> Result<u32, ClientError> {
        let r = self
            .request(method::REFRESH, &[RequestAttr::Lifetime(lifetime)])
            .await?;
        r.lifetime.ok_or(ClientError::Malformed)
    }

    pub async fn create_permission(&mut self, peers: &[SocketAddr]) -> Result<(), ClientError> {
        let attrs: Vec<RequestAttr<'_>> = peers
            .iter()
            .map(|p| RequestAttr::XorPeerAddress(*p))
            .collect();
        self.request(method::CREATE_PERMISSION, &attrs)
            .await
            .map(|_| ())
    }

    pub async fn channel_bind(
        &mut self,
        channel: u16,
        peer: SocketAddr,
    ) -> Result<(), ClientError> {
        let attrs = [
            RequestAttr::ChannelNumber(channel),
            RequestAttr::XorPeerAddress(peer),
        ];
        self.request(method::CHANNEL_BIND, &attrs).await.map(|_| ())
    }

    /// A Binding request: the server-reflexive address.
    pub async fn binding(&mut self) -> Result<SocketAddr, ClientError> {
        let txn: [u8; 12] = rand::rng().random();
        let msg = codec::encode_request(method::BINDING, false, &txn, &[], None)
            .ok_or(ClientError::Malformed)?;
        let r = self.transact(&txn, &msg).await?;
        match r.error_code {
            Some(code) => Err(ClientError::Error(code)),
            None => r.xor_mapped.ok_or(ClientError::Malformed),
        }
    }

    /// RFC 8656 section 11.1: a Send indication to `peer`.
    pub async fn send_indication(&self, peer: SocketAddr, payload: &[u8]) -> io::Result<()> {
        if payload.len() > MAX_INDICATION_DATA {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "payload too long",
            ));
        }
        self.send_raw(&send_indication(peer, payload)).await
    }

    /// RFC 8656 section 12.4: ChannelData on `channel`, padded to a multiple of 4 bytes
    /// on TCP and TLS (section 12.5).
    pub async fn send_channel_data(&self, channel: u16, payload: &[u8]) -> io::Result<()> {
        self.link.send_channel_data(channel, payload).await
    }

    /// The next relayed message, or `None` if none arrives within `wait`. Cancel-safe.
    pub async fn recv_relayed(&mut self, wait: Duration) -> io::Result<Option<Relayed>> {
        if let Some(d) = self.pending.pop_front() {
            return Ok(Some(d));
        }
        let deadline = Instant::now() + wait;
        loop {
            let bytes = match timeout_at(deadline, self.link.recv()).await {
                Ok(r) => r?,
                Err(_) => return Ok(None),
            };
            if let Some(d) = parse_relayed(bytes) {
                return Ok(Some(d));
            }
            if let Some(a) = parse_connection_attempt(bytes) {
                if self.attempts.len() < MAX_PENDING_DATA {
                    self.attempts.push_back(a);
                }
            }
        }
    }
}

/// A TCP connection to `server`, bounded in time.
async fn connect(server: SocketAddr) -> io::Result<TcpStream> {
    timeout(CONNECT_TIMEOUT, TcpStream::connect(server))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TCP connect timed out"))?
}

/// A response to `txn`, or `None` after keeping relayed data (up to a bound) for later.
fn classify(
    pending: &mut VecDeque<Relayed>,
    attempts: &mut VecDeque<(u32, SocketAddr)>,
    bytes: &[u8],
    txn: &[u8; 12],
) -> Option<Result<Response, ClientError>> {
    if let Some(d) = parse_relayed(bytes) {
        if pending.len() < MAX_PENDING_DATA {
            pending.push_back(d);
        }
        return None;
    }
    if let Some(a) = parse_connection_attempt(bytes) {
        if attempts.len() < MAX_PENDING_DATA {
            attempts.push_back(a);
        }
        return None;
    }
    if bytes.get(8..20) != Some(&txn[..]) {
        return None;
    }
    Some(codec::decode_response(bytes).ok_or(ClientError::Malformed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferroturn_core::proto::codec::{self as server_codec, ResponseAttr};
    use ferroturn_core::proto::stream::{Frame, Framer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// Reads the next STUN frame the client wrote, or `None` at the end of the stream.
    async fn next_request(io: &mut DuplexStream, f: &mut Framer) -> Option<Vec<u8>> {
        loop {
            if let Some(Frame::Stun(r)) = f.next_frame().unwrap() {
                return Some(f.buffer()[r].to_vec());
            }
            let n = io.read(f.spare()).await.unwrap();
            if n == 0 {
                return None;
            }
            f.filled(n);
        }
    }

    /// Over a stream a request is sent once, relayed data read while waiting is kept,
    /// and the 401 challenge is answered on the same connection.
    #[tokio::test]
    async fn stream_requests_are_sent_once_and_data_is_kept() {
        let (client_io, mut io) = tokio::io::duplex(1 << 16);
        let local: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let server: SocketAddr = "127.0.0.1:3478".parse().unwrap();
        let link = Link::stream(Box::new(client_io), Transport::Tcp, local, server);
        let mut c = TurnClient::with_link(link, "alice", "pw");
        let relayed: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let fake = tokio::spawn(async move {
            let mut f = Framer::new(4096);
            let first = next_request(&mut io, &mut f).await.unwrap();
            // Longer than the UDP RTO: a retransmission would arrive in the meantime.
            tokio::time::sleep(Duration::from_millis(400)).await;
            let txn: [u8; 12] = first[8..20].try_into().unwrap();
            let attrs = [
                ResponseAttr::ErrorCode(401),
                ResponseAttr::Realm("test"),
                ResponseAttr::Nonce("abcd"),
            ];
            let challenge = server_codec::encode(method::ALLOCATE, false, &txn, &attrs, None, true);
            // ChannelData (padded) arrives just before the response, split from it.
            let cd = link::channel_data_message(0x4001, b"early", true).unwrap();
            io.write_all(&[cd, challenge.unwrap()].concat())
                .await
                .unwrap();
            let second = next_request(&mut io, &mut f).await.unwrap();
            assert_ne!(first[8..20], second[8..20]);
            let txn: [u8; 12] = second[8..20].try_into().unwrap();
            let attrs = [ResponseAttr::XorRelayedAddress(relayed)];
            let ok =
                server_codec::encode(method::ALLOCATE, true, &txn, &attrs, None, true).unwrap();
            for byte in ok {
                io.write_all(&[byte]).await.unwrap();
            }
            // Nothing else arrives before the client closes.
            assert_eq!(next_request(&mut io, &mut f).await, None);
        });
        assert_eq!(c.allocate().await.unwrap(), relayed);
        assert_eq!(c.challenges, 1);
        assert_eq!(c.transport_name(), "tcp");
        assert_eq!(c.local_addr().unwrap(), local);
        assert_eq!(
            c.recv_relayed(Duration::ZERO).await.unwrap(),
            Some(Relayed::Channel {
                channel: 0x4001,
                data: b"early".to_vec()
            })
        );
        c.shutdown().await.unwrap();
        fake.await.unwrap();
    }
}
