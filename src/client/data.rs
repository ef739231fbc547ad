//! An RFC 6062 data connection, once its ConnectionBind succeeded: the bytes of one TCP
//! connection between a TCP allocation's relayed address and a peer, as they are.

use super::link::ByteStream;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, timeout_at};

/// An RFC 6062 data connection: after its ConnectionBind, the bytes of one TCP
/// connection between the relayed address and a peer, as they are, both ways.
pub struct DataConnection {
    stream: Box<dyn ByteStream>,
    /// Peer bytes that arrived with the ConnectionBind response, read first.
    early: Vec<u8>,
}

impl DataConnection {
    pub(super) fn new(stream: Box<dyn ByteStream>, early: Vec<u8>) -> Self {
        Self { stream, early }
    }
}

impl DataConnection {
    /// Sends `bytes` to the peer.
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Reads what the peer sent into `buf`; 0 at the end of the stream.
    pub async fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.early.is_empty() {
            let n = buf.len().min(self.early.len());
            buf[..n].copy_from_slice(&self.early[..n]);
            self.early.drain(..n);
            return Ok(n);
        }
        self.stream.read(buf).await
    }

    /// Reads exactly `n` bytes from the peer, within `wait`.
    pub async fn recv_exact(&mut self, n: usize, wait: Duration) -> io::Result<Vec<u8>> {
        let mut out = vec![0u8; n];
        let mut got = 0;
        let deadline = Instant::now() + wait;
        while got < n {
            let read = timeout_at(deadline, self.recv(&mut out[got..]))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "peer bytes late"))??;
            if read == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            got += read;
        }
        Ok(out)
    }

    /// Ends the sending direction (TLS: close_notify); the server passes it on to the
    /// peer.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.stream.shutdown().await
    }
}

impl std::fmt::Debug for DataConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataConnection")
            .field("early", &self.early.len())
            .finish_non_exhaustive()
    }
}

/// Reads yield the early bytes first, then the stream's; `tokio::io::split` gives
/// halves that send and receive at once.
impl AsyncRead for DataConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.early.is_empty() {
            let n = buf.remaining().min(self.early.len());
            buf.put_slice(&self.early[..n]);
            self.early.drain(..n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut *self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for DataConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.stream).poll_shutdown(cx)
    }
}
