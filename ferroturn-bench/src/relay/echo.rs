//! The echo peer: one thread, one UDP socket, each datagram sent back to its source from
//! the slot it arrived in (recvmmsg, then one GSO train per run of equal-length replies
//! to one relay address, sendmmsg for the rest; no copy).

use crate::{process, sockets};
use ferroturn_udp::{Slots, Wait};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

const BATCH: usize = 64;
/// How often a quiet peer looks at its stop flag.
const POLL: Duration = Duration::from_millis(50);

pub struct EchoPeer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<EchoStats>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct EchoStats {
    pub received: u64,
    pub echoed: u64,
    pub cpu_s: f64,
}

impl EchoPeer {
    /// Binds `addr` and starts echoing datagrams of up to `max_len` bytes.
    /// `gso`: echo runs of equal replies as one GSO train.
    pub fn start(addr: SocketAddr, max_len: usize, gso: bool) -> Result<Self, String> {
        let socket = UdpSocket::bind(addr).map_err(|e| format!("echo peer on {addr}: {e}"))?;
        let addr = socket.local_addr().map_err(|e| e.to_string())?;
        sockets::enlarge_buffers(&socket, 4 << 20);
        socket
            .set_read_timeout(Some(POLL))
            .map_err(|e| e.to_string())?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("echo-peer".into())
            .spawn(move || echo(&socket, max_len, gso, &flag))
            .map_err(|e| e.to_string())?;
        Ok(Self { addr, stop, thread })
    }

    pub fn stop(self) -> EchoStats {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

fn echo(socket: &UdpSocket, max_len: usize, gso: bool, stop: &AtomicBool) -> EchoStats {
    let fd = socket.as_raw_fd();
    let mut batch = Slots::new(BATCH, max_len);
    if gso {
        batch = batch.with_gso();
    }
    let mut stats = EchoStats::default();
    let cpu_start = process::thread_cpu_seconds();
    while !stop.load(Ordering::Relaxed) {
        let n = match batch.recv(fd, 0..BATCH, Wait::ForOne) {
            Ok(n) => n,
            // Timeouts (EAGAIN), signals, and ICMP errors from earlier sends.
            Err(_) => continue,
        };
        stats.received += n as u64;
        let mut done = 0;
        let mut sent = 0;
        // A datagram the kernel refuses (full buffer) is dropped: the generator counts
        // it lost. A few retries ride out a short burst.
        for _ in 0..4 {
            if done == n {
                break;
            }
            match batch.send(fd, done..n) {
                Ok(k) => {
                    done += k;
                    sent += k;
                }
                Err(_) => done += 1,
            }
        }
        stats.echoed += sent as u64;
    }
    stats.cpu_s = process::thread_cpu_seconds() - cpu_start;
    stats
}
