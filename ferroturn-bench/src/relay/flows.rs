//! The flow sockets as the generator sees them: a flow takes stamped copies of the
//! template and hands back the messages the server sent it, whatever the transport.
//!
//! - UDP: one datagram per message, `sendmmsg` (GSO trains) and `recvmmsg` in batches,
//!   each datagram stamped by the kernel as it arrives where asked (SO_TIMESTAMPNS).
//! - TCP: one connection per flow; messages back to back on the stream, ChannelData
//!   padded to a multiple of 4 (RFC 8656 section 12.5). Each flow has a bounded send
//!   queue for what the kernel did not take yet, and a [`Framer`] that splits what
//!   arrives into messages. A connection the server closes, or whose bytes cannot be
//!   framed, is dropped from the run: its outstanding packets end as losses.

use super::packet::{Probe, Template};
use ferroturn_core::proto::stream::{Framer, MAX_STREAM_FRAME};
use ferroturn_core::proto::wire::padded;
use ferroturn_udp::{Slots, Wait};
use mio::net::{TcpStream, UdpSocket};
use mio::{Interest, Registry, Token};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Datagrams per recvmmsg / sendmmsg, and the most messages one send takes.
pub const BATCH: usize = 64;
/// Reads from one connection per drain; more waiting bytes are read on the next turn.
const MAX_READS: usize = 64;
/// Receive buffers for every TCP flow together (each holds at least one frame).
const FRAMER_BUDGET: usize = 32 << 20;
/// Bytes a TCP flow queues beyond what the kernel took; a full queue takes no more
/// packets (the generator retries, or a paced flow falls behind and says so).
const QUEUE_LIMIT: usize = 256 << 10;
/// Room kept in a full queue for refresh requests.
const CONTROL_ROOM: usize = 4 << 10;

/// The connected flow sockets handed to the generator.
pub enum Sockets {
    Udp(Vec<UdpSocket>),
    Tcp(Vec<TcpStream>),
}

pub enum Flows {
    Udp {
        sockets: Vec<UdpSocket>,
        out: Slots,
        inb: Slots,
    },
    Tcp {
        conns: Vec<Conn>,
        /// The template, padded as a stream needs it.
        message: Vec<u8>,
    },
}

pub struct Conn {
    stream: TcpStream,
    framer: Framer,
    /// Bytes not yet taken by the kernel start at `queue[written..]`.
    queue: Vec<u8>,
    written: usize,
    open: bool,
}

/// What a drain found besides messages.
#[derive(Default)]
pub struct Drained {
    /// ICMP port unreachable reports (UDP).
    pub refused: u64,
    /// The read limit was reached with bytes possibly still waiting (TCP).
    pub more: bool,
}

impl Flows {
    /// `max_len`: the largest message the server sends back (a relayed payload with its
    /// framing).
    pub fn new(sockets: Sockets, template: &Template, max_len: usize, gso: bool) -> Self {
        match sockets {
            Sockets::Udp(sockets) => {
                let mut out = Slots::new(BATCH, template.bytes.len());
                if gso {
                    out = out.with_gso();
                }
                for i in 0..BATCH {
                    out.buf_mut(i).copy_from_slice(&template.bytes);
                    out.set_len(i, template.bytes.len());
                }
                Flows::Udp {
                    sockets,
                    out,
                    inb: Slots::new(BATCH, max_len),
                }
            }
            Sockets::Tcp(streams) => {
                let mut message = template.bytes.clone();
                message.resize(padded(message.len()), 0);
                // At least one whole frame, at most 64 KiB, within the budget.
                let need = padded(max_len).max(4096);
                let share = FRAMER_BUDGET / streams.len().max(1);
                let capacity = share.clamp(need, MAX_STREAM_FRAME.max(need));
                let conns = streams
                    .into_iter()
                    .map(|stream| Conn {
                        stream,
                        framer: Framer::new(capacity),
                        queue: Vec::new(),
                        written: 0,
                        open: true,
                    })
                    .collect();
                Flows::Tcp { conns, message }
            }
        }
    }

    pub fn register(&mut self, registry: &Registry) -> std::io::Result<()> {
        match self {
            Flows::Udp { sockets, .. } => {
                for (i, s) in sockets.iter_mut().enumerate() {
                    registry.register(s, Token(i), Interest::READABLE)?;
                }
            }
            Flows::Tcp { conns, .. } => {
                for (i, c) in conns.iter_mut().enumerate() {
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    registry.register(&mut c.stream, Token(i), interest)?;
                }
            }
        }
        Ok(())
    }

    /// Has the kernel stamp each datagram the UDP flows receive (SO_TIMESTAMPNS), for
    /// round-trip times to arrival; TCP has no per-message stamps.
    pub fn stamp_arrivals(&self) -> std::io::Result<()> {
        if let Flows::Udp { sockets, .. } = self {
            for s in sockets {
                ferroturn_udp::enable_receive_timestamps(s.as_raw_fd())?;
            }
        }
        Ok(())
    }

    /// Whether flow `i` can still send (a TCP connection may have been closed).
    pub fn is_open(&self, i: usize) -> bool {
        match self {
            Flows::Udp { .. } => true,
            Flows::Tcp { conns, .. } => conns.get(i).is_some_and(|c| c.open),
        }
    }

    /// TCP connections closed during the run.
    pub fn closed(&self) -> usize {
        match self {
            Flows::Udp { .. } => 0,
            Flows::Tcp { conns, .. } => conns.iter().filter(|c| !c.open).count(),
        }
    }

    /// Sends up to `n` (at most [`BATCH`]) copies of the template on flow `i`, the j-th
    /// carrying `probe(j)`; returns how many left (UDP) or were queued (TCP). Errors are
    /// the UDP socket's.
    pub fn send(
        &mut self,
        i: usize,
        channel: u16,
        n: usize,
        template: &Template,
        probe: impl Fn(usize) -> Probe,
    ) -> std::io::Result<usize> {
        let n = n.min(BATCH);
        match self {
            Flows::Udp { sockets, out, .. } => {
                for j in 0..n {
                    template.stamp(out.buf_mut(j), channel, probe(j));
                }
                out.send(sockets[i].as_raw_fd(), 0..n)
            }
            Flows::Tcp { conns, message } => {
                let c = &mut conns[i];
                if !c.open {
                    return Ok(0);
                }
                let room = QUEUE_LIMIT.saturating_sub(c.queue.len() - c.written);
                let n = n.min(room / message.len().max(1));
                for j in 0..n {
                    let at = c.queue.len();
                    c.queue.extend_from_slice(message);
                    template.stamp(&mut c.queue[at..], channel, probe(j));
                }
                c.flush();
                Ok(n)
            }
        }
    }

    /// Sends a request on flow `i` (best effort, like any datagram).
    pub fn send_control(&mut self, i: usize, msg: &[u8]) {
        match self {
            Flows::Udp { sockets, .. } => {
                let _ = sockets[i].send(msg);
            }
            Flows::Tcp { conns, .. } => {
                let c = &mut conns[i];
                let queued = c.queue.len() - c.written;
                if c.open && queued + msg.len() <= QUEUE_LIMIT + CONTROL_ROOM {
                    c.queue.extend_from_slice(msg);
                    c.flush();
                }
            }
        }
    }

    /// Flow `i`'s socket can take bytes again (TCP).
    pub fn writable(&mut self, i: usize) {
        if let Flows::Tcp { conns, .. } = self {
            conns[i].flush();
        }
    }

    /// Receives what is waiting on flow `i` and passes each message to `on`, with the
    /// time the kernel received it (UDP, since the Unix epoch; `None` over TCP).
    pub fn drain(
        &mut self,
        i: usize,
        on: &mut impl FnMut(&[u8], Option<Duration>),
    ) -> Result<Drained, String> {
        let mut d = Drained::default();
        match self {
            Flows::Udp { sockets, inb, .. } => {
                let fd = sockets[i].as_raw_fd();
                // Each pass takes a full batch or returns; an ICMP error is reported once.
                loop {
                    let n = match inb.recv(fd, 0..BATCH, Wait::No) {
                        Ok(n) => n,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(d),
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                            d.refused += 1;
                            continue;
                        }
                        Err(e) => return Err(format!("receive on flow {i}: {e}")),
                    };
                    for j in 0..n {
                        on(inb.data(j), inb.stamp(j));
                    }
                    if n < BATCH {
                        return Ok(d);
                    }
                }
            }
            Flows::Tcp { conns, .. } => {
                d.more = conns[i].read(&mut |bytes| on(bytes, None));
                Ok(d)
            }
        }
    }
}

impl Conn {
    /// Writes queued bytes until the kernel refuses more; compacts the queue.
    fn flush(&mut self) {
        while self.open && self.written < self.queue.len() {
            match self.stream.write(&self.queue[self.written..]) {
                Ok(0) => self.close(),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => self.close(),
            }
        }
        if self.written == self.queue.len() || !self.open {
            self.queue.clear();
            self.written = 0;
        } else if self.written > self.queue.len() / 2 {
            self.queue.drain(..self.written);
            self.written = 0;
        }
    }

    /// Reads until the socket is empty or [`MAX_READS`] reads; returns whether the limit
    /// stopped it. The end of the stream or a framing error closes the flow.
    fn read(&mut self, on: &mut impl FnMut(&[u8])) -> bool {
        for _ in 0..MAX_READS {
            if !self.open {
                return false;
            }
            let spare = self.framer.spare();
            if spare.is_empty() {
                self.close();
                return false;
            }
            match self.stream.read(spare) {
                Ok(0) => self.close(),
                Ok(n) => {
                    self.framer.filled(n);
                    // Each frame consumes its bytes, so this ends with the buffer.
                    loop {
                        match self.framer.next_frame() {
                            Ok(Some(frame)) => {
                                on(self.framer.buffer().get(frame.range()).unwrap_or_default())
                            }
                            Ok(None) => break,
                            Err(_) => {
                                self.close();
                                break;
                            }
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => self.close(),
            }
        }
        self.open
    }

    /// Drops the flow from the run and closes the connection, so the server ends the
    /// allocation at once.
    fn close(&mut self) {
        self.open = false;
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::packet::{Framing, Incoming, classify};
    use ferroturn_core::proto::stream::Frame;
    use std::time::{Duration, Instant};

    /// A TCP flow (the generator's side, non-blocking) and the server's side, blocking.
    fn pair() -> (TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        client.set_nonblocking(true).unwrap();
        (TcpStream::from_std(client), server)
    }

    /// Drains flow 0 until `want` messages arrived or a second passed.
    fn collect(flows: &mut Flows, want: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let until = Instant::now() + Duration::from_secs(1);
        while got.len() < want && Instant::now() < until {
            flows.drain(0, &mut |m, _| got.push(m.to_vec())).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        got
    }

    #[test]
    fn tcp_flows_pad_channel_data_and_frame_what_comes_back() {
        let (stream, mut server) = pair();
        // 201 bytes: three bytes of padding on the stream.
        let template = Template::new(Framing::Channel, 201).unwrap();
        let mut flows = Flows::new(Sockets::Tcp(vec![stream]), &template, 512, true);
        let probe = |j: usize| Probe {
            flow: 3,
            seq: j as u32,
            ts: 77,
        };
        assert_eq!(flows.send(0, 0x4005, 5, &template, probe).unwrap(), 5);
        let mut f = Framer::new(4096);
        let mut frames = Vec::new();
        let mut wire = 0;
        while frames.len() < 5 {
            let n = server.read(f.spare()).unwrap();
            assert!(n > 0);
            wire += n;
            f.filled(n);
            while let Some(Frame::ChannelData(r)) = f.next_frame().unwrap() {
                frames.push(f.buffer()[r].to_vec());
            }
        }
        assert_eq!(wire, 5 * 208);
        for (j, m) in frames.iter().enumerate() {
            assert_eq!(&m[..4], &[0x40, 0x05, 0, 201]);
            let Incoming::Payload(p) = classify(Framing::Channel, m) else {
                panic!("frame {j} is not a payload");
            };
            assert_eq!(Probe::read(p), Some(probe(j)));
        }
        // Back: the frames in one write, then a response split in two writes.
        let all: Vec<u8> = frames
            .iter()
            .flat_map(|m| {
                let mut m = m.clone();
                m.resize(padded(m.len()), 0);
                m
            })
            .collect();
        server.write_all(&all).unwrap();
        let response = [
            &[0x01, 0x04, 0, 0][..],
            &0x2112_A442u32.to_be_bytes(),
            &[9; 12],
        ];
        let response = response.concat();
        server.write_all(&response[..7]).unwrap();
        let got = collect(&mut flows, 5);
        assert_eq!(got, frames);
        server.write_all(&response[7..]).unwrap();
        assert_eq!(collect(&mut flows, 1), vec![response]);
        assert!(flows.is_open(0));
        // The server closes: the flow is dropped from the run and takes nothing more.
        drop(server);
        collect(&mut flows, 1);
        assert!(!flows.is_open(0));
        assert_eq!(flows.closed(), 1);
        assert_eq!(flows.send(0, 0x4005, 5, &template, probe).unwrap(), 0);
    }

    #[test]
    fn a_full_tcp_queue_takes_no_more() {
        let (stream, server) = pair();
        let template = Template::new(Framing::Channel, 16_000).unwrap();
        let mut flows = Flows::new(Sockets::Tcp(vec![stream]), &template, 16_384, true);
        let probe = |j: usize| Probe {
            flow: 0,
            seq: j as u32,
            ts: 1,
        };
        // Nobody reads: the kernel's buffers fill, then the queue, then sends stop.
        let mut taken = 0;
        for _ in 0..10_000 {
            let n = flows.send(0, 0x4000, BATCH, &template, probe).unwrap();
            if n == 0 {
                break;
            }
            taken += n;
        }
        let Flows::Tcp { conns, .. } = &flows else {
            unreachable!()
        };
        let queued = conns[0].queue.len() - conns[0].written;
        assert!(queued <= QUEUE_LIMIT, "{queued} bytes queued");
        assert!(taken < 10_000 * BATCH);
        drop(server);
    }
}
