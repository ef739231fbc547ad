//! Tools for attacking a running server: STUN messages built byte by byte (attribute
//! order, duplicates, lengths, what follows MESSAGE-INTEGRITY are all the caller's), a raw
//! UDP session that returns every byte of each answer, and listeners that prove on the
//! wire that nothing reached an address.

#[allow(unused_imports)]
pub use super::wire::{TCP, UDP, attribute, attributes, error_code, is_success};

use super::WAIT;
use ferroturn::client::codec::{self as client_codec, Response};
use ferroturn_core::proto::integrity;
use ferroturn_core::proto::wire::{Class, HEADER_LEN, attr, method};
use ferroturn_core::proto::writer::MessageWriter;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::{Instant, timeout_at};

/// A STUN message under construction, on the core's [`MessageWriter`]. Attributes land
/// exactly as pushed; the length field always covers what has been pushed so far.
#[derive(Clone, Debug)]
pub struct Msg {
    w: MessageWriter,
}

impl Msg {
    pub fn new(method: u16, class: Class, txn: [u8; 12]) -> Self {
        Self {
            w: MessageWriter::new(method, class, &txn),
        }
    }

    /// A request with a random transaction id.
    pub fn request(method: u16) -> Self {
        Self::new(method, Class::Request, rand::random())
    }

    pub fn txn(&self) -> [u8; 12] {
        self.w.txn()
    }

    fn map(self, f: impl FnOnce(MessageWriter) -> MessageWriter) -> Self {
        Self { w: f(self.w) }
    }

    /// An attribute with its true length, zero padded to a multiple of 4.
    pub fn attr(self, t: u16, value: &[u8]) -> Self {
        self.map(|w| w.attr(t, value))
    }

    /// An attribute whose length field says `declared` whatever `value` holds, without
    /// padding (for malformed messages).
    pub fn lying_attr(self, t: u16, declared: u16, value: &[u8]) -> Self {
        let mut header = [0u8; 4];
        header[..2].copy_from_slice(&t.to_be_bytes());
        header[2..].copy_from_slice(&declared.to_be_bytes());
        self.map(|w| w.raw(&header).raw(value))
    }

    pub fn username(self, u: &str) -> Self {
        self.attr(attr::USERNAME, u.as_bytes())
    }

    pub fn realm(self, r: &str) -> Self {
        self.attr(attr::REALM, r.as_bytes())
    }

    pub fn nonce(self, n: &str) -> Self {
        self.attr(attr::NONCE, n.as_bytes())
    }

    pub fn transport(self, protocol: u8) -> Self {
        self.attr(attr::REQUESTED_TRANSPORT, &[protocol, 0, 0, 0])
    }

    /// REQUESTED-ADDRESS-FAMILY IPv6 (RFC 8656 section 18.6).
    pub fn family_v6(self) -> Self {
        self.attr(attr::REQUESTED_ADDRESS_FAMILY, &[0x02, 0, 0, 0])
    }

    pub fn lifetime(self, secs: u32) -> Self {
        self.attr(attr::LIFETIME, &secs.to_be_bytes())
    }

    pub fn channel(self, number: u16) -> Self {
        let n = number.to_be_bytes();
        self.attr(attr::CHANNEL_NUMBER, &[n[0], n[1], 0, 0])
    }

    pub fn peer(self, addr: SocketAddr) -> Self {
        self.map(|w| w.xor_address(attr::XOR_PEER_ADDRESS, addr))
    }

    /// MESSAGE-INTEGRITY over everything pushed so far (RFC 8489 section 14.5).
    pub fn integrity(self, key: &[u8]) -> Self {
        self.map(|w| w.integrity(key))
    }

    /// FINGERPRINT over everything pushed so far (RFC 8489 section 14.7).
    pub fn fingerprint(self) -> Self {
        self.map(MessageWriter::fingerprint)
    }

    pub fn bytes(self) -> Vec<u8> {
        self.w.finish().expect("test message fits in 64 KiB")
    }
}

/// A client speaking raw bytes over its own UDP socket: long-term credentials are applied
/// by [`Session::authed`], nothing else is added to what the test builds.
pub struct Session {
    pub socket: UdpSocket,
    pub server: SocketAddr,
    pub username: String,
    pub password: String,
    pub realm: String,
    pub nonce: String,
}

impl Session {
    /// A session from a fresh socket on `local_ip`, not yet challenged.
    pub async fn bind(
        local_ip: IpAddr,
        server: SocketAddr,
        username: &str,
        password: &str,
    ) -> Self {
        let socket = UdpSocket::bind(SocketAddr::new(local_ip, 0))
            .await
            .expect("bind session socket");
        Self {
            socket,
            server,
            username: username.to_owned(),
            password: password.to_owned(),
            realm: String::new(),
            nonce: String::new(),
        }
    }

    /// A session that has answered the server's first 401 (it holds REALM and NONCE).
    pub async fn challenged(
        local_ip: IpAddr,
        server: SocketAddr,
        username: &str,
        password: &str,
    ) -> Self {
        let mut s = Self::bind(local_ip, server, username, password).await;
        s.challenge().await;
        s
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("session address")
    }

    /// Sends an unauthenticated Allocate and keeps the REALM and NONCE of the 401.
    pub async fn challenge(&mut self) {
        let r = self
            .exchange(&Msg::request(method::ALLOCATE).transport(UDP).bytes())
            .await
            .expect("401 challenge");
        assert_eq!(error_code(&r), Some(401), "first request is challenged");
        self.take_nonce(&r);
    }

    /// Keeps the REALM and NONCE of a 401 or 438.
    pub fn take_nonce(&mut self, response: &[u8]) {
        let r: Response = client_codec::decode_response(response).expect("challenge decodes");
        self.realm = r.realm.expect("challenge has REALM");
        self.nonce = r.nonce.expect("challenge has NONCE");
    }

    pub fn key(&self) -> [u8; 16] {
        integrity::long_term_key(&self.username, &self.realm, self.password.as_bytes())
    }

    /// A request carrying USERNAME, REALM and NONCE; the caller adds attributes and then
    /// `.integrity(&s.key())`.
    pub fn authed(&self, method: u16) -> Msg {
        Msg::request(method)
            .username(&self.username)
            .realm(&self.realm)
            .nonce(&self.nonce)
    }

    pub async fn send(&self, bytes: &[u8]) {
        self.socket
            .send_to(bytes, self.server)
            .await
            .expect("send to server");
    }

    /// The next datagram from the server within `wait`.
    pub async fn recv(&self, wait: Duration) -> Option<Vec<u8>> {
        recv_from(&self.socket, wait).await.map(|(d, _)| d)
    }

    /// The next datagram from the server within `wait` that is not a STUN response: a
    /// late answer to a retransmitted request of [`Session::exchange`] is skipped.
    pub async fn recv_relayed(&self, wait: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (d, _) = recv_from(&self.socket, left).await?;
            // A STUN message (top two bits zero) of class success or error.
            let response = d.len() >= HEADER_LEN
                && d[0] & 0xC0 == 0
                && matches!(super::wire::class_of(&d).1, Class::Success | Class::Error);
            if !response {
                return Some(d);
            }
        }
    }

    /// Sends `msg` (retransmitting) until the response with its transaction id arrives;
    /// other datagrams are skipped (RFC 8489 section 6.2.1 style, 250 ms doubling).
    /// `None` if none arrives within [`WAIT`].
    pub async fn exchange(&self, msg: &[u8]) -> Option<Vec<u8>> {
        let txn = msg.get(8..HEADER_LEN)?.to_vec();
        let deadline = Instant::now() + WAIT;
        let mut rto = Duration::from_millis(250);
        while Instant::now() < deadline {
            self.send(msg).await;
            let resend = (Instant::now() + rto).min(deadline);
            rto *= 2;
            let mut buf = vec![0u8; 65_536];
            while let Ok(Ok((n, _))) = timeout_at(resend, self.socket.recv_from(&mut buf)).await {
                let d = &buf[..n];
                if d.len() >= HEADER_LEN && d[8..HEADER_LEN] == txn[..] && d[0] & 0xC0 == 0 {
                    return Some(d.to_vec());
                }
            }
        }
        None
    }

    /// A credentialed request of `method` with `attrs` then MESSAGE-INTEGRITY and
    /// FINGERPRINT; returns the response.
    pub async fn request(&self, method: u16, attrs: impl FnOnce(Msg) -> Msg) -> Vec<u8> {
        let msg = attrs(self.authed(method))
            .integrity(&self.key())
            .fingerprint();
        self.exchange(&msg.bytes())
            .await
            .expect("response to a credentialed request")
    }
}

/// A UDP socket's next datagram within `wait`, with its source.
pub async fn recv_from(socket: &UdpSocket, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 65_536];
    match tokio::time::timeout(wait, socket.recv_from(&mut buf)).await {
        Ok(Ok((n, from))) => {
            buf.truncate(n);
            Some((buf, from))
        }
        _ => None,
    }
}

/// The datagrams arriving on `socket` within `wait`, returning early once `max` have.
pub async fn drain(socket: &UdpSocket, wait: Duration, max: usize) -> Vec<(Vec<u8>, SocketAddr)> {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while got.len() < max.min(100_000) {
        match timeout_at(deadline, socket.recv_from(&mut buf)).await {
            Ok(Ok((n, from))) => got.push((buf[..n].to_vec(), from)),
            _ => break,
        }
    }
    got
}

/// A service on this host that must stay unreachable through the relay: UDP sockets on
/// 127.0.0.1:P and [::1]:P, the same port P on both.
pub struct Target {
    pub v4: UdpSocket,
    pub v6: UdpSocket,
    pub port: u16,
}

impl Target {
    pub async fn new() -> Self {
        for _ in 0..64 {
            let v4 = UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("bind 127.0.0.1");
            let port = v4.local_addr().expect("address").port();
            if let Ok(v6) = UdpSocket::bind(("::1", port)).await {
                return Self { v4, v6, port };
            }
        }
        panic!("no port free on both 127.0.0.1 and ::1");
    }

    /// `ip` (any spelling) with this target's port.
    pub fn at(&self, ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().expect("test IP parses"), self.port)
    }

    /// What reached either socket within `wait`, returning early once `max` have.
    pub async fn received(&self, wait: Duration, max: usize) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + wait;
        let mut got = Vec::new();
        let (mut a, mut b) = (vec![0u8; 65_536], vec![0u8; 65_536]);
        while got.len() < max.min(100_000) {
            let next = tokio::select! {
                r = self.v4.recv_from(&mut a) => r.ok().map(|(n, _)| a[..n].to_vec()),
                r = self.v6.recv_from(&mut b) => r.ok().map(|(n, _)| b[..n].to_vec()),
                _ = tokio::time::sleep_until(deadline) => None,
            };
            match next {
                Some(d) => got.push(d),
                None => break,
            }
        }
        got
    }
}
