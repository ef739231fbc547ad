//! The client's path to its server: a UDP socket, a DTLS session over one (RFC 7350:
//! one message per record), or a TCP or TLS stream on which STUN messages and
//! ChannelData follow each other back to back (RFC 8656 section 12.5).
//!
//! [`Link::recv`] returns one message at a time, a datagram or a frame, and is
//! cancel-safe: dropped under `timeout_at` it loses nothing, because the stream's
//! [`Framer`] (and the bytes of a frame half received) lives in the link, not in the
//! future. Sends are not: a stream send dropped half way leaves a partial message on
//! the stream, after which the server can no longer delimit it.

use crate::dtls::{DtlsError, Session};
use ferroturn_core::proto::data;
use ferroturn_core::proto::stream::{Framer, MAX_STREAM_FRAME};
use ferroturn_core::proto::wire::padded;
use std::io;
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::sync::Mutex;

/// The transport between a client and its server. The relay to peers is UDP in every
/// case (REQUESTED-TRANSPORT 17).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
    Dtls,
}

impl Transport {
    /// "udp", "tcp", "tls" or "dtls".
    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Dtls => "dtls",
        }
    }

    /// Whether messages travel on a byte stream (and ChannelData is padded).
    pub fn is_stream(self) -> bool {
        matches!(self, Transport::Tcp | Transport::Tls)
    }
}

/// A byte stream to the server: a TCP socket, or TLS over one.
pub trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> ByteStream for T {}

/// The largest UDP datagram.
const MAX_DATAGRAM: usize = 65_536;

pub(super) struct Link {
    server: SocketAddr,
    io: Io,
}

enum Io {
    Udp {
        socket: UdpSocket,
        /// Allocated once, reused for every datagram.
        buf: Box<[u8]>,
    },
    Dtls {
        socket: UdpSocket,
        /// Sends lock it (they take `&self`); receives reach in with `get_mut`.
        session: Mutex<Session>,
        /// Allocated once: a datagram, then one record's plaintext.
        buf: Box<[u8]>,
        plain: Box<[u8]>,
    },
    Stream {
        transport: Transport,
        local: SocketAddr,
        /// Sends lock it (they take `&self`); receives own the link and reach in with
        /// `get_mut`, so a receive never waits for a lock.
        stream: Mutex<Box<dyn ByteStream>>,
        /// Receive state: whatever arrived but is not yet a whole frame.
        framer: Framer,
    },
}

impl Link {
    pub(super) fn udp(socket: UdpSocket, server: SocketAddr) -> Self {
        Link {
            server,
            io: Io::Udp {
                socket,
                buf: vec![0; MAX_DATAGRAM].into_boxed_slice(),
            },
        }
    }

    /// A DTLS session past its handshake, over `socket`, with `server`.
    pub(super) fn dtls(socket: UdpSocket, session: Session, server: SocketAddr) -> Self {
        Link {
            server,
            io: Io::Dtls {
                socket,
                session: Mutex::new(session),
                buf: vec![0; MAX_DATAGRAM].into_boxed_slice(),
                plain: vec![0; MAX_DATAGRAM].into_boxed_slice(),
            },
        }
    }

    /// A stream already connected (and, for TLS, past its handshake) from `local` to
    /// `server`.
    pub(super) fn stream(
        stream: Box<dyn ByteStream>,
        transport: Transport,
        local: SocketAddr,
        server: SocketAddr,
    ) -> Self {
        Link {
            server,
            io: Io::Stream {
                transport,
                local,
                stream: Mutex::new(stream),
                // A whole frame of any size fits: 64 KiB for one connection.
                framer: Framer::new(MAX_STREAM_FRAME),
            },
        }
    }

    pub(super) fn transport(&self) -> Transport {
        match &self.io {
            Io::Udp { .. } => Transport::Udp,
            Io::Dtls { .. } => Transport::Dtls,
            Io::Stream { transport, .. } => *transport,
        }
    }

    pub(super) fn server(&self) -> SocketAddr {
        self.server
    }

    pub(super) fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.io {
            Io::Udp { socket, .. } | Io::Dtls { socket, .. } => socket.local_addr(),
            Io::Stream { local, .. } => Ok(*local),
        }
    }

    /// Sends `bytes` as they are: one datagram, or appended to the stream.
    pub(super) async fn send(&self, bytes: &[u8]) -> io::Result<()> {
        match &self.io {
            Io::Udp { socket, .. } => socket.send_to(bytes, self.server).await.map(|_| ()),
            Io::Dtls {
                socket, session, ..
            } => {
                let mut session = session.lock().await;
                session.write(bytes).map_err(io::Error::other)?;
                send_outbox(socket, &mut session, self.server).await
            }
            Io::Stream { stream, .. } => {
                let mut s = stream.lock().await;
                s.write_all(bytes).await?;
                // TLS: push the record out now rather than at the next write.
                s.flush().await
            }
        }
    }

    /// Sends ChannelData (RFC 8656 section 12.4), padded on a stream.
    pub(super) async fn send_channel_data(&self, channel: u16, payload: &[u8]) -> io::Result<()> {
        let msg = channel_data_message(channel, payload, self.transport().is_stream())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "payload over 65535"))?;
        self.send(&msg).await
    }

    /// The next datagram or frame from the server. Cancel-safe (see the module docs).
    /// On a stream, the end of the stream and bytes that cannot be framed are errors,
    /// and stay errors on every later call.
    pub(super) async fn recv(&mut self) -> io::Result<&[u8]> {
        match &mut self.io {
            Io::Udp { socket, buf } => {
                let (n, _) = socket.recv_from(buf).await?;
                Ok(buf.get(..n).unwrap_or_default())
            }
            Io::Dtls {
                socket,
                session,
                buf,
                plain,
            } => {
                let session = session.get_mut();
                // Records of a datagram already handed in come first (a receive dropped
                // after it handed a datagram in loses nothing).
                let n = loop {
                    match session.read(plain) {
                        Ok(Some(n)) => break n,
                        Ok(None) => {}
                        Err(e) => return Err(dtls_error(e)),
                    }
                    let (n, from) = socket.recv_from(buf).await?;
                    if from != self.server {
                        continue;
                    }
                    session
                        .handle_datagram(buf.get(..n).unwrap_or_default())
                        .map_err(dtls_error)?;
                    if session.has_outbox() {
                        send_outbox(socket, session, self.server).await?;
                    }
                };
                Ok(plain.get(..n).unwrap_or_default())
            }
            Io::Stream { stream, framer, .. } => {
                let stream = stream.get_mut();
                // Each pass reads at least one byte or returns; the framer refuses a frame
                // it could not hold, so the bytes it keeps are bounded.
                let frame = loop {
                    if let Some(frame) = framer.next_frame().map_err(io::Error::other)? {
                        break frame;
                    }
                    let spare = framer.spare();
                    if spare.is_empty() {
                        return Err(io::Error::other("stream receive buffer full"));
                    }
                    match stream.read(spare).await? {
                        0 if framer.pending() > 0 => {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "the server closed the stream in the middle of a message",
                            ));
                        }
                        0 => {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "the server closed the stream",
                            ));
                        }
                        n => framer.filled(n),
                    }
                };
                Ok(framer.buffer().get(frame.range()).unwrap_or_default())
            }
        }
    }

    /// The stream itself and the bytes received past the last frame returned (RFC 6062:
    /// a data connection's first raw bytes may follow the ConnectionBind response in
    /// one read). `None` for UDP and DTLS.
    pub(super) fn into_stream(self) -> Option<(Box<dyn ByteStream>, Vec<u8>)> {
        match self.io {
            Io::Udp { .. } | Io::Dtls { .. } => None,
            Io::Stream { stream, framer, .. } => {
                Some((stream.into_inner(), framer.pending_bytes().to_vec()))
            }
        }
    }

    /// Closes the sending direction of a stream (TLS: close_notify first). A server ends
    /// the allocation of a connection that closes, since its 5-tuple is gone. Nothing to
    /// do for UDP.
    pub(super) async fn shutdown(&mut self) -> io::Result<()> {
        match &mut self.io {
            Io::Udp { .. } => Ok(()),
            Io::Dtls {
                socket, session, ..
            } => {
                let session = session.get_mut();
                session.close();
                send_outbox(socket, session, self.server).await
            }
            Io::Stream { stream, .. } => stream.get_mut().shutdown().await,
        }
    }
}

/// Sends what waits in a DTLS session's outbox and empties it.
pub(super) async fn send_outbox(
    socket: &UdpSocket,
    session: &mut Session,
    server: SocketAddr,
) -> io::Result<()> {
    for d in session.outbox() {
        socket.send_to(d, server).await?;
    }
    session.clear_outbox();
    Ok(())
}

/// A DTLS failure as an I/O error (the end of the session is the end of the stream).
fn dtls_error(e: DtlsError) -> io::Error {
    match e {
        DtlsError::Closed => io::Error::new(io::ErrorKind::UnexpectedEof, "DTLS close_notify"),
        e => io::Error::other(e),
    }
}

/// ChannelData (RFC 8656 section 12.4) with `payload`; with `pad`, zero bytes up to a
/// multiple of 4, which a stream requires (section 12.5). `None` for a payload too long
/// for the 16-bit length field.
pub(super) fn channel_data_message(channel: u16, payload: &[u8], pad: bool) -> Option<Vec<u8>> {
    let header = ferroturn_core::proto::wire::CHANNEL_DATA_HEADER_LEN;
    let mut m = vec![0u8; header + padded(payload.len())];
    m.get_mut(header..header + payload.len())?
        .copy_from_slice(payload);
    let framed = data::frame_channel_data(&mut m, header..header + payload.len(), channel, pad)?;
    m.truncate(framed.end);
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferroturn_core::proto::stream::Frame;
    use std::time::Duration;
    use tokio::io::DuplexStream;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A stream link whose server end is the returned half of an in-memory pipe.
    fn piped() -> (Link, DuplexStream) {
        let (client, server) = tokio::io::duplex(1 << 16);
        let link = Link::stream(
            Box::new(client),
            Transport::Tcp,
            addr("127.0.0.1:40000"),
            addr("127.0.0.1:3478"),
        );
        (link, server)
    }

    #[test]
    fn channel_data_is_padded_only_for_streams() {
        for len in 0..=9usize {
            let payload = vec![0xAB; len];
            let udp = channel_data_message(0x4001, &payload, false).unwrap();
            assert_eq!(udp.len(), 4 + len);
            let tcp = channel_data_message(0x4001, &payload, true).unwrap();
            assert_eq!(tcp.len() % 4, 0, "length {len}");
            assert_eq!(tcp.len(), padded(4 + len));
            assert_eq!(&tcp[..4 + len], &udp[..]);
            assert!(tcp[4 + len..].iter().all(|&b| b == 0));
            // The length field names the payload, never the padding.
            assert_eq!(u16::from_be_bytes([tcp[2], tcp[3]]) as usize, len);
        }
        assert!(channel_data_message(0x4001, &vec![0; 65_536], true).is_none());
        assert!(channel_data_message(0x4001, &vec![0; 65_535], true).is_some());
    }

    #[tokio::test]
    async fn padded_channel_data_frames_back_to_back() {
        let (link, mut server) = piped();
        for len in [0usize, 1, 2, 3, 4, 5] {
            link.send_channel_data(0x4002, &vec![len as u8; len])
                .await
                .unwrap();
        }
        let mut f = Framer::new(256);
        let mut seen = Vec::new();
        while seen.len() < 6 {
            let n = server.read(f.spare()).await.unwrap();
            assert!(n > 0);
            f.filled(n);
            while let Some(frame) = f.next_frame().unwrap() {
                assert!(matches!(frame, Frame::ChannelData(_)));
                seen.push(f.buffer()[frame.range()].to_vec());
            }
        }
        for (len, m) in seen.iter().enumerate() {
            assert_eq!(m.len(), 4 + len);
            assert_eq!(&m[..2], &[0x40, 0x02]);
        }
        assert_eq!(f.pending(), 0);
    }

    #[tokio::test]
    async fn frames_split_anywhere_survive_cancelled_receives() {
        let (mut link, mut server) = piped();
        let a = channel_data_message(0x4003, b"hello", true).unwrap();
        let b = channel_data_message(0x4004, b"world!", true).unwrap();
        let stream = [a.clone(), b.clone()].concat();
        // Byte by byte, with a receive cut off by a timeout after every byte: nothing
        // received so far may be lost.
        let mut got = Vec::new();
        for byte in &stream {
            server.write_all(&[*byte]).await.unwrap();
            let r = tokio::time::timeout(Duration::from_millis(5), link.recv()).await;
            if let Ok(m) = r {
                got.push(m.unwrap().to_vec());
            }
        }
        assert_eq!(got, vec![a[..9].to_vec(), b[..10].to_vec()]);
    }

    #[tokio::test]
    async fn end_of_stream_and_garbage_are_errors() {
        let (mut link, mut server) = piped();
        server.write_all(&[0x40, 0x01, 0x00]).await.unwrap();
        drop(server);
        let e = link.recv().await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);

        let (mut link, mut server) = piped();
        server.write_all(&[0xC0, 0, 0, 0]).await.unwrap();
        assert!(link.recv().await.is_err());
        // Sticky: the stream cannot be delimited any more.
        assert!(link.recv().await.is_err());
    }

    #[tokio::test]
    async fn shutdown_ends_the_stream() {
        let (mut link, mut server) = piped();
        link.send(b"\x00\x01\x00\x00").await.unwrap();
        link.shutdown().await.unwrap();
        let mut all = Vec::new();
        server.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"\x00\x01\x00\x00");
    }
}
