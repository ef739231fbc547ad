//! `ferroturn-bench forwarder --io uring`: the same forwarder on io_uring, to measure it
//! against recvmmsg/sendmmsg + epoll. Same sockets, same runs, same GSO, same limits;
//! only the way datagrams reach and leave user space differs:
//!
//! - every socket (the listen socket and each relay socket, all registered files) has one
//!   multishot `recvmsg` in flight, receiving into one shared provided-buffer ring: the
//!   kernel posts a completion per datagram, there is no readiness step and no receive call;
//! - each run (consecutive datagrams of one client, or of one relay socket, of equal
//!   length) becomes one `sendmsg` submission pointing at the payloads where they were
//!   received, one UDP GSO message for a run of several;
//! - one `io_uring_enter` per loop turn submits the turn's sends, runs the deferred
//!   receive work (IORING_SETUP_DEFER_TASKRUN) and waits for the next completion, with
//!   a timeout for the status line and the deadline. No busy polling: the thread sleeps
//!   in that call when nothing arrives.
//!
//! Buffers go back to the ring right after the submit that sent them (see
//! [`ferroturn_udp::uring::SendBatch`] for why that is safe); a multishot receive that
//! ended (no buffer left, an error) is started again after that.

use super::{Args, Counts, IDLE_EXPIRY, MAX_CLIENTS};
use crate::sockets;
use ferroturn_udp::uring::{BufRing, MultishotRecv, SendBatch, run_fits};
use io_uring::types::{Fixed, SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode};
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// Provided buffers: each holds the recvmsg header, a source address and a datagram.
const BUF_LEN: usize = 2048;
const BGID: u16 = 0;
/// Sends per submit before an early submit; segments (datagrams) in them.
const SEND_MESSAGES: usize = 512;
const SEND_SEGMENTS: usize = 4096;
const SQ_ENTRIES: u32 = 1024;
const CQ_ENTRIES: u32 = 16384;
const BUFFER_BYTES: usize = 4 << 20;
/// The listen socket's registered file; relay `i` is file `i + 1`.
const LISTEN_FILE: u32 = 0;

/// What a completion is about: the top byte of its user data.
const TAG_LISTEN: u64 = 1 << 56;
const TAG_RELAY: u64 = 2 << 56;
const TAG_SEND: u64 = 3 << 56;
const TAG_CANCEL: u64 = 4 << 56;
const TAG_MASK: u64 = 0xff << 56;
/// In a send's user data: it goes to the peer (else to a client).
const SEND_UP: u64 = 1 << 16;

/// Options of the io_uring forwarder.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Provided buffers in the ring (a power of two).
    pub buffers: u16,
    pub taskrun: Taskrun,
}

/// When the kernel runs the completion work of receives (task work).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Taskrun {
    /// Only inside io_uring_enter, in batches (IORING_SETUP_DEFER_TASKRUN).
    Defer,
    /// At the next transition to the kernel, without an interrupting signal
    /// (IORING_SETUP_COOP_TASKRUN with IORING_SETUP_TASKRUN_FLAG).
    Coop,
    /// As soon as possible, interrupting the thread (no flag: the default ring).
    Signal,
}

struct Relay {
    /// Open while the relay lives; the ring knows it as registered file `i + 1`.
    _socket: UdpSocket,
    client: SocketAddr,
    used: Instant,
    /// Its receive's user data (which carries a generation, so a late completion of a
    /// closed relay's receive is not taken for its successor's).
    recv: u64,
}

/// Where a received datagram goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    /// To the peer, on relay socket `i`.
    Peer(usize),
    /// To relay `i`'s client, on the listen socket.
    Client(usize),
}

/// The run being collected: datagrams (buffer id, payload range) to one target.
struct Run {
    target: Option<Target>,
    segment: usize,
    total: usize,
    ended: bool,
    bids: Vec<u16>,
    ranges: Vec<std::ops::Range<usize>>,
}

pub struct Forwarder {
    // Dropped first: the kernel may write into `bufs` until the ring is gone.
    ring: IoUring,
    bufs: BufRing,
    listen: UdpSocket,
    peer: SocketAddr,
    listen_recv: MultishotRecv,
    relay_recv: MultishotRecv,
    clients: HashMap<SocketAddr, usize>,
    relays: Vec<Option<Relay>>,
    free: Vec<usize>,
    generation: u64,
    now: Instant,
    sends: SendBatch,
    /// Buffers to give back once the sends pointing into them are submitted.
    spent: Vec<u16>,
    /// Receives to start again (user data), once `spent` is back in the ring.
    rearm: Vec<u64>,
    cqes: Vec<(u64, i32, u32)>,
    run: Run,
    gso: bool,
    counts: Counts,
}

pub fn run(args: &Args, opts: Options, stop: &AtomicBool) -> Result<(), String> {
    let mut f = Forwarder::new(args.listen, args.peer, opts)?;
    let local = f.local_addr().map_err(|e| e.to_string())?;
    eprintln!(
        "forwarder (io_uring, {} buffers): listening on {local}, forwarding to {}",
        opts.buffers, args.peer
    );
    super::drive(&mut f, args.duration, stop)
}

impl super::Design for Forwarder {
    fn counts(&self) -> &Counts {
        &self.counts
    }

    fn clients(&self) -> usize {
        self.clients.len()
    }

    fn expire_idle(&mut self) {
        Forwarder::expire_idle(self);
    }

    fn turn(&mut self, timeout: Duration) -> Result<(), String> {
        Forwarder::turn(self, timeout)
    }
}

impl Forwarder {
    pub fn new(listen: SocketAddr, peer: SocketAddr, opts: Options) -> Result<Self, String> {
        let mut builder = IoUring::builder();
        builder
            .setup_single_issuer()
            .setup_submit_all()
            .setup_cqsize(CQ_ENTRIES);
        match opts.taskrun {
            Taskrun::Defer => builder.setup_defer_taskrun(),
            Taskrun::Coop => builder.setup_coop_taskrun().setup_taskrun_flag(),
            Taskrun::Signal => &mut builder,
        };
        let ring = builder
            .build(SQ_ENTRIES)
            .map_err(|e| format!("io_uring: {e}"))?;
        let socket = UdpSocket::bind(listen).map_err(|e| format!("bind {listen}: {e}"))?;
        socket.set_nonblocking(true).map_err(|e| e.to_string())?;
        sockets::enlarge_buffers(&socket, BUFFER_BYTES);
        let submitter = ring.submitter();
        submitter
            .register_files_sparse(MAX_CLIENTS as u32 + 1)
            .map_err(|e| format!("io_uring files: {e}"))?;
        submitter
            .register_files_update(LISTEN_FILE, &[socket.as_raw_fd()])
            .map_err(|e| format!("io_uring files: {e}"))?;
        let bufs = BufRing::register(&submitter, BGID, opts.buffers, BUF_LEN)
            .map_err(|e| format!("io_uring buffer ring: {e}"))?;
        let mut f = Self {
            ring,
            bufs,
            listen: socket,
            peer,
            listen_recv: MultishotRecv::new(true),
            relay_recv: MultishotRecv::new(false),
            clients: HashMap::new(),
            relays: Vec::new(),
            free: Vec::new(),
            generation: 0,
            now: Instant::now(),
            sends: SendBatch::new(SEND_MESSAGES, SEND_SEGMENTS),
            spent: Vec::with_capacity(usize::from(opts.buffers)),
            rearm: vec![TAG_LISTEN],
            cqes: Vec::with_capacity(CQ_ENTRIES as usize),
            run: Run {
                target: None,
                segment: 0,
                total: 0,
                ended: false,
                bids: Vec::with_capacity(ferroturn_udp::uring::MAX_SEGMENTS),
                ranges: Vec::with_capacity(ferroturn_udp::uring::MAX_SEGMENTS),
            },
            gso: true,
            counts: Counts::default(),
        };
        f.push_rearms()?;
        Ok(f)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listen.local_addr()
    }

    /// One loop turn: one `io_uring_enter` that submits what the last turn queued and
    /// waits (at most `timeout`) for a completion, then the completions.
    pub fn turn(&mut self, timeout: Duration) -> Result<(), String> {
        let ts = Timespec::from(timeout);
        let args = SubmitArgs::new().timespec(&ts);
        self.counts.turns += 1;
        self.counts.calls += 1;
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            // Only returned when nothing was submitted: a timeout or a signal.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => {}
            Err(e) => return Err(format!("io_uring_enter: {e}")),
        }
        self.after_submit()?;
        self.now = Instant::now();
        self.cqes.clear();
        self.cqes.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for k in 0..self.cqes.len() {
            let (data, res, flags) = self.cqes[k];
            self.complete(data, res, flags)?;
        }
        self.end_run()
    }

    /// The sends are out: their buffers go back, ended receives start again.
    fn after_submit(&mut self) -> Result<(), String> {
        self.sends.clear();
        for &bid in &self.spent {
            self.bufs.give_back(bid);
        }
        if !self.spent.is_empty() {
            self.bufs.publish();
            self.spent.clear();
        }
        self.push_rearms()
    }

    fn push_rearms(&mut self) -> Result<(), String> {
        while let Some(data) = self.rearm.pop() {
            let fd = match data & TAG_MASK {
                TAG_LISTEN => Fixed(LISTEN_FILE),
                _ => match self.relay_by_recv(data) {
                    Some(i) => Fixed(i as u32 + 1),
                    None => continue, // closed since
                },
            };
            let template = if data == TAG_LISTEN {
                &self.listen_recv
            } else {
                &self.relay_recv
            };
            let entry = template.entry(fd, self.bufs.group()).user_data(data);
            self.push(&entry)?;
        }
        Ok(())
    }

    /// Queues `entry`, submitting first if the queue is full.
    fn push(&mut self, entry: &io_uring::squeue::Entry) -> Result<(), String> {
        // SAFETY: entries queued here point at a receive template, which lives as long
        // as the ring, or at nothing (cancellations).
        if unsafe { self.ring.submission().push(entry) }.is_ok() {
            return Ok(());
        }
        self.submit_now()?;
        // SAFETY: as above.
        unsafe { self.ring.submission().push(entry) }.map_err(|_| "submission queue full".into())
    }

    /// Submits without waiting (a full queue or send batch), then recycles.
    fn submit_now(&mut self) -> Result<(), String> {
        loop {
            self.counts.calls += 1;
            match self.ring.submit() {
                Ok(_) => break,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(format!("io_uring_enter: {e}")),
            }
        }
        self.sends.clear();
        for &bid in &self.spent {
            self.bufs.give_back(bid);
        }
        self.bufs.publish();
        self.spent.clear();
        Ok(())
    }

    fn complete(&mut self, data: u64, res: i32, flags: u32) -> Result<(), String> {
        match data & TAG_MASK {
            TAG_LISTEN | TAG_RELAY => self.received(data, res, flags),
            TAG_SEND => {
                // Only failures post a completion; the low bits say how many datagrams.
                let n = data & 0xffff;
                self.counts.dropped += n;
                if data & SEND_UP == 0 {
                    self.counts.down = self.counts.down.saturating_sub(n);
                }
                if self.gso && matches!(-res, libc::EIO | libc::EINVAL | libc::EOPNOTSUPP) {
                    eprintln!(
                        "forwarder: GSO refused ({}); sending datagram by datagram",
                        -res
                    );
                    self.gso = false;
                }
                Ok(())
            }
            _ => Ok(()), // cancellations
        }
    }

    /// A multishot receive's completion: a datagram in a buffer, or its end.
    fn received(&mut self, data: u64, res: i32, flags: u32) -> Result<(), String> {
        let target = if data == TAG_LISTEN {
            None
        } else {
            match self.relay_by_recv(data) {
                Some(i) => {
                    if let Some(r) = self.relays[i].as_mut() {
                        r.used = self.now;
                    }
                    Some(Target::Client(i))
                }
                None => {
                    // A closed relay's last completions.
                    if let Some(bid) = cqueue::buffer_select(flags) {
                        self.spent.push(bid);
                    }
                    return Ok(());
                }
            }
        };
        if !cqueue::more(flags) {
            // Ended (no buffer was free, an ICMP error on a connected socket, ...): it
            // starts again after this turn's submit returns the buffers.
            self.rearm.push(data);
        }
        let Some(bid) = cqueue::buffer_select(flags) else {
            if res < 0 && !matches!(-res, libc::ENOBUFS | libc::ECONNREFUSED | libc::ECANCELED) {
                eprintln!(
                    "forwarder: receive ended: {}",
                    io::Error::from_raw_os_error(-res)
                );
            }
            return Ok(());
        };
        if target.is_none() {
            self.counts.up += 1;
        }
        let len = usize::try_from(res).unwrap_or(0).min(BUF_LEN);
        let template = if target.is_none() {
            &self.listen_recv
        } else {
            &self.relay_recv
        };
        let got = template.parse(&self.bufs.buffer(bid)[..len]);
        let target = match (target, got.as_ref()) {
            (_, None) => None,
            (_, Some(r)) if r.truncated => None,
            (Some(t), Some(_)) => Some(t),
            (None, Some(r)) => r
                .from
                .and_then(|from| self.relay_for(from))
                .map(Target::Peer),
        };
        match (target, got) {
            (Some(t), Some(r)) => self.add_to_run(t, bid, r.payload),
            _ => {
                self.counts.dropped += 1;
                self.spent.push(bid);
                Ok(())
            }
        }
    }

    fn relay_by_recv(&self, data: u64) -> Option<usize> {
        let i = (data & 0xffff_ffff) as usize;
        match self.relays.get(i) {
            Some(Some(r)) if r.recv == data => Some(i),
            _ => None,
        }
    }

    /// Adds a datagram to the run, ending the run first where it cannot join.
    fn add_to_run(
        &mut self,
        t: Target,
        bid: u16,
        payload: std::ops::Range<usize>,
    ) -> Result<(), String> {
        let len = payload.len();
        let r = &self.run;
        let joins = r.target == Some(t)
            && self.gso
            && !r.ended
            && run_fits(r.segment, r.bids.len(), r.total, len);
        if !joins {
            self.end_run()?;
            self.run.target = Some(t);
            self.run.segment = len;
        }
        let r = &mut self.run;
        r.ended = len < r.segment;
        r.total += len;
        r.bids.push(bid);
        r.ranges.push(payload);
        Ok(())
    }

    /// Queues the run collected so far as one send.
    fn end_run(&mut self) -> Result<(), String> {
        let Some(t) = self.run.target.take() else {
            return Ok(());
        };
        let n = self.run.bids.len();
        let (fd, to, up) = match t {
            Target::Peer(i) => (Fixed(i as u32 + 1), None, SEND_UP),
            Target::Client(i) => (
                Fixed(LISTEN_FILE),
                self.relays[i].as_ref().map(|r| r.client),
                0,
            ),
        };
        if up == 0 && to.is_none() {
            // Its relay closed this turn: never, expiry runs between turns.
            self.counts.dropped += n as u64;
        } else {
            // Room first: an early submit clears the batch, so it cannot come between
            // building the entry and queueing it.
            if !self.sends.has_room(n) || self.ring.submission().is_full() {
                self.submit_now()?;
            }
            let mut payloads = [&[][..]; ferroturn_udp::uring::MAX_SEGMENTS];
            for (k, (bid, range)) in self.run.bids.iter().zip(&self.run.ranges).enumerate() {
                payloads[k] = &self.bufs.buffer(*bid)[range.clone()];
            }
            // SAFETY: the payloads live in buffers that go back to the ring only after
            // the submit carrying this entry returns (they are in `spent` until then),
            // and the batch is cleared only then too.
            let entry = unsafe { self.sends.push(fd, to, &payloads[..n]) };
            let entry = entry.ok_or("send batch full")?;
            // SAFETY: as above; the queue has room (checked before building).
            unsafe {
                self.ring
                    .submission()
                    .push(&entry.user_data(TAG_SEND | up | n as u64))
            }
            .map_err(|_| "submission queue full")?;
            if up == 0 {
                self.counts.down += n as u64;
            }
        }
        self.spent.extend_from_slice(&self.run.bids);
        self.run.bids.clear();
        self.run.ranges.clear();
        self.run.total = 0;
        self.run.ended = false;
        Ok(())
    }

    /// The relay socket of `client`, made and set receiving on its first datagram;
    /// `None` once [`MAX_CLIENTS`] exist or if the socket cannot be made.
    fn relay_for(&mut self, client: SocketAddr) -> Option<usize> {
        if let Some(&i) = self.clients.get(&client) {
            if let Some(r) = self.relays[i].as_mut() {
                r.used = self.now;
            }
            return Some(i);
        }
        if self.clients.len() >= MAX_CLIENTS {
            return None;
        }
        let local = SocketAddr::new(
            if self.peer.is_ipv4() {
                std::net::Ipv4Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            },
            0,
        );
        let socket = UdpSocket::bind(local).ok()?;
        socket.connect(self.peer).ok()?;
        socket.set_nonblocking(true).ok()?;
        sockets::enlarge_buffers(&socket, BUFFER_BYTES);
        let i = self.free.pop().unwrap_or(self.relays.len());
        self.ring
            .submitter()
            .register_files_update(i as u32 + 1, &[socket.as_raw_fd()])
            .ok()?;
        self.generation += 1;
        let recv = TAG_RELAY | (self.generation & 0xff_ffff) << 32 | i as u64;
        let relay = Some(Relay {
            _socket: socket,
            client,
            used: self.now,
            recv,
        });
        if i == self.relays.len() {
            self.relays.push(relay);
        } else {
            self.relays[i] = relay;
        }
        self.clients.insert(client, i);
        self.counts.clients += 1;
        // Started with the next submit (after this turn's buffers are back, which does
        // not matter here: a new socket has nothing waiting yet).
        self.rearm.push(recv);
        Some(i)
    }

    /// Closes the relay sockets of clients quiet for [`IDLE_EXPIRY`]: their receive is
    /// cancelled and their file slot emptied.
    fn expire_idle(&mut self) {
        for i in 0..self.relays.len() {
            let idle = matches!(&self.relays[i], Some(r) if self.now - r.used > IDLE_EXPIRY);
            if !idle {
                continue;
            }
            if let Some(r) = self.relays[i].take() {
                let cancel = opcode::AsyncCancel::new(r.recv)
                    .build()
                    .user_data(TAG_CANCEL);
                let _ = self.push(&cancel);
                let _ = self
                    .ring
                    .submitter()
                    .register_files_update(i as u32 + 1, &[-1]);
                self.clients.remove(&r.client);
                self.free.push(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s
    }

    /// Datagrams go client -> peer and back through relay sockets, several clients at
    /// once, runs of equal lengths included; idle relays close and come back.
    #[test]
    fn forwards_both_ways_and_recycles_idle_relays() {
        let peer = bound();
        let opts = Options {
            buffers: 64,
            taskrun: Taskrun::Defer,
        };
        let mut f = match Forwarder::new(
            "127.0.0.1:0".parse().unwrap(),
            peer.local_addr().unwrap(),
            opts,
        ) {
            Ok(f) => f,
            Err(e) if e.starts_with("io_uring:") => {
                eprintln!("io_uring unavailable, test skipped: {e}");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        let to = f.local_addr().unwrap();
        let clients = [bound(), bound()];
        let mut buf = [0u8; 256];
        let turns = |f: &mut Forwarder| {
            for _ in 0..5 {
                f.turn(Duration::from_millis(20)).unwrap();
            }
        };
        for (k, c) in clients.iter().enumerate() {
            for j in 0..3u8 {
                c.send_to(&[k as u8 * 10 + j; 100], to).unwrap();
            }
        }
        turns(&mut f);
        let mut relays = Vec::new();
        for _ in 0..6 {
            let (n, from) = peer.recv_from(&mut buf).unwrap();
            assert_eq!(n, 100);
            relays.push((buf[0], from));
        }
        relays.sort();
        let got: Vec<u8> = relays.iter().map(|r| r.0).collect();
        assert_eq!(got, [0, 1, 2, 10, 11, 12]);
        assert_ne!(relays[0].1, relays[3].1, "one relay socket per client");
        // Replies: to each relay socket, back to its own client.
        for (first, relay) in [relays[0], relays[3]] {
            peer.send_to(&[first; 50], relay).unwrap();
            peer.send_to(&[first + 1; 50], relay).unwrap();
        }
        turns(&mut f);
        for (k, c) in clients.iter().enumerate() {
            for j in 0..2u8 {
                let (n, from) = c.recv_from(&mut buf).unwrap();
                assert_eq!((&buf[..n], from), (&[k as u8 * 10 + j; 50][..], to));
            }
        }
        assert_eq!((f.counts.up, f.counts.down, f.counts.dropped), (6, 4, 0));

        // Idle relays close; a returning client gets a new one.
        for r in f.relays.iter_mut().flatten() {
            r.used = f.now - IDLE_EXPIRY * 2;
        }
        f.expire_idle();
        assert!(f.clients.is_empty() && f.free.len() == 2);
        turns(&mut f);
        clients[0].send_to(b"again", to).unwrap();
        turns(&mut f);
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"again");
        assert!(relays.iter().all(|r| r.1 != from) || f.counts.clients == 3);
        assert_eq!(f.counts.clients, 3);
    }
}
