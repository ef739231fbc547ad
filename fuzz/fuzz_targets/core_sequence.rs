//! The sans-IO server driven by a sequence of inputs, in virtual time, the way the UDP
//! driver drives it. Any panic is a bug.
//!
//! The input is a list of records, each `[kind][arg][len: u16 BE][len bytes]`:
//! - kind 0: a datagram from client `arg % 4`;
//! - kind 1: a datagram from peer `arg % 4` on the relay named by the last `BindRelay`;
//! - kind 2: virtual time advances by `arg` seconds, then `handle_timeout`;
//! - kind 3: like kind 0, but the bytes are made into a request carrying the long-term
//!   credentials of `u:p`: the magic cookie is set, USERNAME, REALM and the last NONCE
//!   the server sent are appended, then MESSAGE-INTEGRITY (and FINGERPRINT when
//!   `arg & 4`). Without it the fuzzer would never get past the 401.
//!
//! After each record every `BindRelay` is answered as bound and the transmits drained.
#![no_main]

use ferroturn::client::codec as client_codec;
use ferroturn::config::Config;
use ferroturn::state::LocalState;
use ferroturn_core::proto::data::{HEADROOM, TAILROOM};
use ferroturn_core::proto::integrity;
use ferroturn_core::proto::wire::{MAGIC_COOKIE, attr};
use ferroturn_core::proto::writer::MessageWriter;
use ferroturn_core::server::{AllocId, Event, FiveTuple, Path, Secrets, Server, Transport};
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

const CONFIG: &str = "listening-ip = [\"127.0.0.1\"]\nrealm = \"r\"\nuser = [\"u:p\"]\n\
                      allowed-peer-ip = [\"198.51.100.0/24\"]\n";
const MAX_RECORDS: usize = 64;
const MAX_DATAGRAM: usize = 65_535;

/// Taken once: `Instant`s cannot be built from nothing, and a fixed origin keeps runs
/// reproducible (only differences from it matter to the server).
static T0: LazyLock<Instant> = LazyLock::new(Instant::now);
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

struct Harness {
    server: Server,
    now: Instant,
    relay: Option<AllocId>,
    nonce: Option<String>,
}

impl Harness {
    fn new() -> Self {
        let config = Config::from_toml_str(CONFIG).expect("the fixed config is valid");
        let now = *T0;
        let server = Server::new(
            config.server,
            Arc::new(LocalState::default()),
            Secrets {
                nonce_key: [0; 32],
                seed: [0; 32],
            },
            now,
            1_700_000_000,
        );
        Harness {
            server,
            now,
            relay: None,
            nonce: None,
        }
    }

    fn client(&mut self, arg: u8, bytes: &[u8]) {
        let tuple = FiveTuple {
            client: CLIENTS[usize::from(arg % 4)],
            listener: 0,
            transport: Transport::Udp,
        };
        let mut buf = bytes.to_vec();
        if let Some(t) = self
            .server
            .handle_client_datagram(self.now, tuple, &mut buf)
        {
            check_range(&t.range, buf.len());
        }
    }

    fn peer(&mut self, arg: u8, bytes: &[u8]) {
        let Some(relay) = self.relay else { return };
        let mut buf = vec![0u8; HEADROOM + bytes.len() + TAILROOM];
        buf[HEADROOM..HEADROOM + bytes.len()].copy_from_slice(bytes);
        let payload = HEADROOM..HEADROOM + bytes.len();
        let from = PEERS[usize::from(arg % 4)];
        if let Some(t) = self
            .server
            .handle_peer_datagram(self.now, relay, from, &mut buf, payload)
        {
            check_range(&t.range, buf.len());
            assert!(
                matches!(t.path, Path::Client { .. }),
                "peer data relayed to {:?}",
                t.path
            );
        }
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

    fn tick(&mut self, secs: u8) {
        self.now += Duration::from_secs(u64::from(secs));
        self.server.handle_timeout(self.now);
        if let Some(at) = self.server.poll_timeout() {
            // Everything due was handled.
            assert!(at > self.now, "deadline {:?} left behind", at - *T0);
        }
    }

    /// What the driver does after every input: bind relays, send responses.
    fn drain(&mut self) {
        while let Some(event) = self.server.poll_event() {
            if let Event::BindRelay { relay, .. } = event {
                self.relay = Some(relay);
                self.server.handle_relay_bound(self.now, relay, true);
            }
        }
        while let Some(t) = self.server.poll_transmit() {
            if let Some(nonce) = client_codec::decode_response(&t.payload).and_then(|r| r.nonce) {
                self.nonce = Some(nonce);
            }
        }
    }
}

fn check_range(r: &std::ops::Range<usize>, len: usize) {
    assert!(
        r.start <= r.end && r.end <= len,
        "{r:?} outside a {len}-byte buffer"
    );
}

fuzz_target!(|data: &[u8]| {
    let mut h = Harness::new();
    let mut rest = data;
    for _ in 0..MAX_RECORDS {
        let [kind, arg, hi, lo, tail @ ..] = rest else {
            break;
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (bytes, tail) = tail.split_at(len);
        rest = tail;
        match kind % 4 {
            0 => h.client(*arg, bytes),
            1 => h.peer(*arg, bytes),
            2 => h.tick(*arg),
            _ => h.authenticated(*arg, bytes),
        }
        h.drain();
    }
});
