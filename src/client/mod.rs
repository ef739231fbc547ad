//! A small TURN client over UDP (RFC 8656 client side), used by the end-to-end tests and
//! the load tools. It answers the 401/438 challenge itself, retransmits requests, and
//! keeps relayed data that arrives while it waits for a response.

use crate::core::proto::codec::{self, RequestAttr, Response};
use crate::core::proto::data;
use crate::core::proto::integrity::long_term_key;
use crate::core::proto::scan::scan;
use crate::core::proto::wire::{self, Class, method};
use rand::RngExt;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::{Instant, timeout_at};

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

/// The most data messages kept while waiting for responses.
const MAX_PENDING_DATA: usize = 1024;

pub struct TurnClient {
    socket: UdpSocket,
    server: SocketAddr,
    username: String,
    password: String,
    realm: Option<String>,
    nonce: Option<String>,
    pending: VecDeque<Relayed>,
    /// How long a request waits for its response in total.
    pub request_timeout: Duration,
    /// How many 401/438 challenges this client has answered.
    pub challenges: u32,
}

impl TurnClient {
    /// A client on a fresh local socket of the server's family (loopback for a loopback
    /// server).
    pub async fn new(server: SocketAddr, username: &str, password: &str) -> io::Result<Self> {
        let ip: std::net::IpAddr = match (server.ip().is_loopback(), server.is_ipv4()) {
            (true, true) => std::net::Ipv4Addr::LOCALHOST.into(),
            (true, false) => std::net::Ipv6Addr::LOCALHOST.into(),
            (false, true) => std::net::Ipv4Addr::UNSPECIFIED.into(),
            (false, false) => std::net::Ipv6Addr::UNSPECIFIED.into(),
        };
        let local = SocketAddr::new(ip, 0);
        Ok(Self::with_socket(
            UdpSocket::bind(local).await?,
            server,
            username,
            password,
        ))
    }

    pub fn with_socket(
        socket: UdpSocket,
        server: SocketAddr,
        username: &str,
        password: &str,
    ) -> Self {
        Self {
            socket,
            server,
            username: username.to_owned(),
            password: password.to_owned(),
            realm: None,
            nonce: None,
            pending: VecDeque::new(),
            request_timeout: Duration::from_secs(3),
            challenges: 0,
        }
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

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Sends raw bytes to the server (for tests of malformed input).
    pub async fn send_raw(&self, bytes: &[u8]) -> io::Result<()> {
        self.socket.send_to(bytes, self.server).await.map(|_| ())
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
                None => return Ok(response),
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

    /// Sends `msg` with retransmissions (RFC 8489 section 6.2.1, RTO 250 ms here) until
    /// the response with `txn` arrives or the request timeout passes.
    async fn transact(&mut self, txn: &[u8; 12], msg: &[u8]) -> Result<Response, ClientError> {
        let deadline = Instant::now() + self.request_timeout;
        let mut rto = Duration::from_millis(250);
        let mut buf = vec![0u8; 65_536];
        loop {
            self.socket.send_to(msg, self.server).await?;
            let resend_at = (Instant::now() + rto).min(deadline);
            rto *= 2;
            loop {
                let (n, _) = match timeout_at(resend_at, self.socket.recv_from(&mut buf)).await {
                    Ok(r) => r?,
                    Err(_) if resend_at >= deadline => return Err(ClientError::Timeout),
                    Err(_) => break,
                };
                let bytes = &buf[..n];
                if let Some(r) = self.classify(bytes, txn) {
                    return r;
                }
            }
        }
    }

    /// A response to `txn`, or `None` after keeping relayed data for later.
    fn classify(&mut self, bytes: &[u8], txn: &[u8; 12]) -> Option<Result<Response, ClientError>> {
        if let Some(d) = parse_relayed(bytes) {
            if self.pending.len() < MAX_PENDING_DATA {
                self.pending.push_back(d);
            }
            return None;
        }
        if bytes.get(8..20) != Some(&txn[..]) {
            return None;
        }
        Some(codec::decode_response(bytes).ok_or(ClientError::Malformed))
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
        self.send_raw(&send_indication(peer, payload)).await
    }

    /// RFC 8656 section 12.5: ChannelData on `channel`.
    pub async fn send_channel_data(&self, channel: u16, payload: &[u8]) -> io::Result<()> {
        self.send_raw(&channel_data(channel, payload)).await
    }

    /// The next relayed message, or `None` if none arrives within `wait`.
    pub async fn recv_relayed(&mut self, wait: Duration) -> io::Result<Option<Relayed>> {
        if let Some(d) = self.pending.pop_front() {
            return Ok(Some(d));
        }
        let deadline = Instant::now() + wait;
        let mut buf = vec![0u8; 65_536];
        loop {
            let (n, _) = match timeout_at(deadline, self.socket.recv_from(&mut buf)).await {
                Ok(r) => r?,
                Err(_) => return Ok(None),
            };
            if let Some(d) = parse_relayed(&buf[..n]) {
                return Ok(Some(d));
            }
        }
    }
}

/// Encodes a Send indication (RFC 8656 section 11.1) with FINGERPRINT.
pub fn send_indication(peer: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let txn: [u8; 12] = rand::rng().random();
    let mut m = Vec::with_capacity(64 + payload.len());
    m.extend_from_slice(&wire::message_type(method::SEND, Class::Indication).to_be_bytes());
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(&wire::MAGIC_COOKIE.to_be_bytes());
    m.extend_from_slice(&txn);
    let mut addr = [0u8; 20];
    let n = wire::encode_xor_address(peer, &txn, &mut addr).unwrap_or(0);
    push_attr(&mut m, wire::attr::XOR_PEER_ADDRESS, &addr[..n]);
    push_attr(&mut m, wire::attr::DATA, payload);
    crate::core::proto::integrity::seal(&mut m, None, true);
    m
}

fn push_attr(m: &mut Vec<u8>, t: u16, v: &[u8]) {
    m.extend_from_slice(&t.to_be_bytes());
    m.extend_from_slice(&(v.len() as u16).to_be_bytes());
    m.extend_from_slice(v);
    m.resize(wire::padded(m.len()), 0);
    let body = (m.len() - wire::HEADER_LEN) as u16;
    m[2..4].copy_from_slice(&body.to_be_bytes());
}

/// Encodes ChannelData (RFC 8656 section 12.4).
pub fn channel_data(channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(4 + payload.len());
    m.extend_from_slice(&channel.to_be_bytes());
    m.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    m.extend_from_slice(payload);
    m
}

/// Decodes a Data indication or ChannelData from the server.
pub fn parse_relayed(bytes: &[u8]) -> Option<Relayed> {
    if data::is_channel_data(bytes) {
        let (channel, range) = data::parse_channel_data(bytes)?;
        return Some(Relayed::Channel {
            channel,
            data: bytes.get(range)?.to_vec(),
        });
    }
    let s = scan(bytes).ok()?;
    if (s.method, s.class) != (method::DATA, Class::Indication) {
        return None;
    }
    let (peer, range) = data::parse_send_indication(bytes, &s)?;
    Some(Relayed::Indication {
        peer,
        data: bytes.get(range)?.to_vec(),
    })
}
