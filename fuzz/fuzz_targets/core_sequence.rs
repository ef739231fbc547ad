//! The sans-IO server driven by a sequence of inputs, in virtual time, through the core
//! harness the tests use (`tests/common/core_harness.rs`), which plays the UDP driver.
//! Any panic is a bug: the server's own, or a broken invariant the harness checks after
//! every input (requests answered once, client data relayed only to peers and peer data
//! only to clients, output ranges inside their buffers, timers silent, no due deadline
//! left behind).
//!
//! The input is a list of records, each `[kind][arg][len: u16 BE][len bytes]`:
//! - kind 0: a datagram from client `arg % 4`;
//! - kind 1: a datagram from peer `arg % 4` on the relay named by the last `BindRelay`;
//! - kind 2: virtual time jumps `arg` seconds ahead, then one `handle_timeout`;
//! - kind 3: like kind 0, but the bytes are made into a request carrying the long-term
//!   credentials of `u:p`: the magic cookie is set, USERNAME, REALM and the last NONCE
//!   the server sent are appended, then MESSAGE-INTEGRITY (and FINGERPRINT when
//!   `arg & 4`). Without it the fuzzer would never get past the 401.
//!
//! After each record every `BindRelay` has been answered as bound and the transmits
//! drained.
#![no_main]

#[path = "../../tests/common/core_harness.rs"]
mod core_harness;

use core_harness::Harness;
use ferroturn::client::codec as client_codec;
use ferroturn_core::proto::integrity;
use ferroturn_core::proto::wire::{MAGIC_COOKIE, attr};
use ferroturn_core::proto::writer::MessageWriter;
use ferroturn_core::server::{FiveTuple, Transmit, Transport};
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::LazyLock;
use std::time::Duration;

const CONFIG: &str = "listening-ip = [\"127.0.0.1\"]\nrealm = \"r\"\nuser = [\"u:p\"]\n\
                      allowed-peer-ip = [\"198.51.100.0/24\"]\n";
const MAX_RECORDS: usize = 64;
const MAX_DATAGRAM: usize = 65_535;

static KEY: LazyLock<[u8; 16]> = LazyLock::new(|| integrity::long_term_key("u", "r", b"p"));

const fn v4(a: u8, b: u8, c: u8, d: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), port)
}

const CLIENTS: [SocketAddr; 4] = [
    v4(203, 0, 113, 10, 40000),
    v4(203, 0, 113, 10, 40001),
    v4(203, 0, 113, 11, 40000),
    SocketAddr::new(
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        40000,
    ),
];

/// Three peers inside `allowed-peer-ip`, one outside.
const PEERS: [SocketAddr; 4] = [
    v4(198, 51, 100, 1, 5000),
    v4(198, 51, 100, 2, 6000),
    v4(198, 51, 100, 1, 6000),
    v4(192, 0, 2, 1, 5000),
];

/// The harness and what a client of `u:p` has learnt from the server.
struct Sequence {
    h: Harness,
    nonce: Option<String>,
}

impl Sequence {
    fn client(&mut self, arg: u8, bytes: &[u8]) {
        let tuple = FiveTuple {
            client: CLIENTS[usize::from(arg % 4)],
            listener: 0,
            transport: Transport::Udp,
        };
        let (_, transmits) = self.h.send(tuple, bytes);
        self.learn(&transmits);
    }

    fn peer(&mut self, arg: u8, bytes: &[u8]) {
        let Some(relay) = self.h.last_relay() else {
            return;
        };
        self.h.peer_datagram(relay, PEERS[usize::from(arg % 4)], bytes);
    }

    fn authenticated(&mut self, arg: u8, bytes: &[u8]) {
        if bytes.len() < 20 {
            return;
        }
        let mut msg = bytes.to_vec();
        msg[0] &= 0x3F;
        msg[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        msg.resize(msg.len().next_multiple_of(4), 0);
        let Some(mut w) = MessageWriter::resume(msg) else {
            return;
        };
        w.push(attr::USERNAME, b"u").push(attr::REALM, b"r");
        if let Some(nonce) = &self.nonce {
            w.push(attr::NONCE, nonce.as_bytes());
        }
        if w.as_bytes().len() + 24 + 8 > MAX_DATAGRAM {
            return;
        }
        let Some(msg) = w.seal(Some(&KEY[..]), arg & 4 != 0) else {
            return;
        };
        self.client(arg, &msg);
    }

    /// Keeps the last NONCE the server sent, as a client would.
    fn learn(&mut self, transmits: &[Transmit]) {
        for t in transmits {
            if let Some(nonce) = client_codec::decode_response(&t.payload).and_then(|r| r.nonce) {
                self.nonce = Some(nonce);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut s = Sequence {
        h: Harness::with_config(CONFIG),
        nonce: None,
    };
    let mut rest = data;
    for _ in 0..MAX_RECORDS {
        let [kind, arg, hi, lo, tail @ ..] = rest else {
            break;
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (bytes, tail) = tail.split_at(len);
        rest = tail;
        match kind % 4 {
            0 => s.client(*arg, bytes),
            1 => s.peer(*arg, bytes),
            2 => s.h.jump(Duration::from_secs(u64::from(*arg))),
            _ => s.authenticated(*arg, bytes),
        }
    }
});
