//! Many clients behind one address (a carrier-grade or office NAT), and spoofed floods.
//! Answers to unauthenticated requests over UDP are paid for by the credit a source
//! earned with authenticated requests, or else by its own bucket and the server-wide
//! budget (`ferroturn-core/src/server/limiter.rs`; ARCHITECTURE.md, security
//! decisions). Clients here behave as RFC 8489 section 6.2.1 says: a request
//! unanswered after 500 ms is sent again, the wait doubling, seven sends at most.

use crate::core_harness::wire::error_code;
use crate::prelude::*;
use ferroturn::client::codec::decode_response;
use std::collections::BTreeMap;
use std::time::Duration;

/// The NAT's public address.
const NAT: &str = "198.51.100.7";
/// One way between a client and the server.
const HALF_RTT: Duration = Duration::from_millis(20);
const RTO: Duration = Duration::from_millis(500);
const MAX_SENDS: u32 = 7;
/// The fixed size of the limiter's table (`limiter::SLOTS`).
const SLOTS: usize = 4096;

enum Step {
    /// Client `usize` starts: its Allocate without credentials.
    Arrive(usize),
    /// A datagram from client `usize` reaches the server.
    ToServer(usize, Vec<u8>),
    /// A datagram from the server reaches client `usize`.
    ToClient(usize, Vec<u8>),
    /// Client `usize`'s retransmission timer for the request with this transaction id,
    /// sent this many times.
    Resend(usize, [u8; 12], u32),
    /// Spoofed datagrams from random sources reach the server.
    Flood,
}

/// A client's request in flight: its bytes and how often it was sent.
struct InFlight {
    txn: [u8; 12],
    msg: Vec<u8>,
    sends: u32,
}

/// Clients behind [`NAT`] setting up allocations, each arriving `every` after the one
/// before and doing what a TURN client does: an Allocate without credentials, the 401,
/// the Allocate signed with the nonce it carried.
struct NatRun {
    clients: Vec<Client>,
    flight: Vec<Option<InFlight>>,
    /// When each client had its allocation.
    done: Vec<Option<Duration>>,
    queue: BTreeMap<(Duration, u64), Step>,
    seq: u64,
    /// Spoofed datagrams per millisecond while clients arrive.
    flood_per_ms: u32,
    flood: Flood,
}

impl NatRun {
    fn new(clients: usize, first_port: u16, every: Duration, flood_per_ms: u32) -> Self {
        let mut run = Self {
            clients: (0..clients)
                .map(|i| {
                    let port = usize::from(first_port) + i;
                    Client::new(&format!("{NAT}:{port}"), "alice", "alice-pw")
                })
                .collect(),
            flight: (0..clients).map(|_| None).collect(),
            done: vec![None; clients],
            queue: BTreeMap::new(),
            seq: 0,
            flood_per_ms,
            flood: Flood::new(0x5eed),
        };
        for i in 0..clients {
            run.at(every * i as u32, Step::Arrive(i));
        }
        if flood_per_ms > 0 {
            for ms in 0..(every * clients as u32).as_millis() as u64 {
                run.at(Duration::from_millis(ms), Step::Flood);
            }
        }
        run
    }

    fn at(&mut self, when: Duration, step: Step) {
        self.seq += 1;
        self.queue.insert((when, self.seq), step);
    }

    /// Runs every step due up to `until` (counted from the harness's clock when the run
    /// started); returns how many clients have their allocation.
    fn run(&mut self, h: &mut Harness, base: std::time::Instant, until: Duration) -> usize {
        while let Some(entry) = self.queue.first_entry() {
            let when = entry.key().0;
            if when > until {
                break;
            }
            let step = entry.remove();
            if base + when > h.now {
                h.jump(base + when - h.now);
            }
            match step {
                Step::Arrive(i) => {
                    let txn = h.next_txn();
                    let attrs = [RequestAttr::RequestedTransport(UDP)];
                    let msg = build(method::ALLOCATE, &txn, &attrs, &[], None, true);
                    self.flight[i] = Some(InFlight { txn, msg, sends: 0 });
                    self.transmit(when, i);
                }
                Step::Resend(i, txn, n) => {
                    if self.flight[i]
                        .as_ref()
                        .is_some_and(|f| f.txn == txn && f.sends == n && n < MAX_SENDS)
                    {
                        self.transmit(when, i);
                    }
                }
                Step::ToServer(i, msg) => {
                    let tuple = self.clients[i].tuple;
                    let (relayed, out) = h.send(tuple, &msg);
                    assert!(relayed.is_none());
                    for t in out {
                        assert_eq!(t.path, to_client(tuple));
                        self.at(when + HALF_RTT, Step::ToClient(i, t.payload));
                    }
                }
                Step::ToClient(i, msg) => self.receive(h, when, i, &msg),
                Step::Flood => {
                    for _ in 0..self.flood_per_ms {
                        self.flood.send_one(h);
                    }
                }
            }
        }
        self.done.iter().flatten().count()
    }

    /// Sends client `i`'s request in flight (again) and arms its retransmission timer.
    fn transmit(&mut self, now: Duration, i: usize) {
        let Some(f) = self.flight[i].as_mut() else {
            return;
        };
        let wait = RTO * 2u32.pow(f.sends);
        f.sends += 1;
        let (txn, sends, msg) = (f.txn, f.sends, f.msg.clone());
        self.at(now + HALF_RTT, Step::ToServer(i, msg));
        self.at(now + wait, Step::Resend(i, txn, sends));
    }

    fn receive(&mut self, h: &mut Harness, now: Duration, i: usize, msg: &[u8]) {
        if self.flight[i].as_ref().is_none_or(|f| msg[8..20] != f.txn) {
            return; // the answer to an earlier request, or a retransmission's
        }
        match error_code(msg) {
            None => {
                success(msg, method::ALLOCATE);
                self.flight[i] = None;
                self.done[i] = Some(now);
            }
            Some(401 | 438) => {
                self.clients[i].nonce = decode_response(msg).and_then(|r| r.nonce);
                let txn = h.next_txn();
                let attrs = [RequestAttr::RequestedTransport(UDP)];
                let msg = self.clients[i].signed(&txn, method::ALLOCATE, &attrs, &[], true);
                self.flight[i] = Some(InFlight { txn, msg, sends: 0 });
                self.transmit(now, i);
            }
            Some(code) => panic!("client {i}: error {code}"),
        }
    }

    /// When the last client had its allocation.
    fn last_done(&self) -> Duration {
        self.done
            .iter()
            .flatten()
            .copied()
            .max()
            .unwrap_or_default()
    }
}

/// Spoofed minimal requests, each from a source a small generator picks, counting the
/// bytes that arrive and the bytes answered.
struct Flood {
    state: u64,
    kind: usize,
    bytes_in: u64,
    bytes_out: u64,
    answers: u64,
}

impl Flood {
    fn new(seed: u64) -> Self {
        Self {
            state: seed,
            kind: 0,
            bytes_in: 0,
            bytes_out: 0,
            answers: 0,
        }
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// The smallest requests that get an answer: a bare Allocate (401, 3.4 times its
    /// size), one naming its transport, a bare Binding (1.6 times) and one with
    /// FINGERPRINT, in turn.
    fn message(&mut self, txn: &[u8; 12]) -> Vec<u8> {
        self.kind = (self.kind + 1) % 4;
        match self.kind {
            0 => build(method::ALLOCATE, txn, &[], &[], None, false),
            1 => build(
                method::ALLOCATE,
                txn,
                &[RequestAttr::RequestedTransport(UDP)],
                &[],
                None,
                false,
            ),
            2 => build(method::BINDING, txn, &[], &[], None, false),
            _ => build(method::BINDING, txn, &[], &[], None, true),
        }
    }

    /// One spoofed request from a random source address (not the NAT's) and port.
    fn send_one(&mut self, h: &mut Harness) {
        let nat: IpAddr = NAT.parse().unwrap();
        let ip = loop {
            let ip = IpAddr::from(((self.next() >> 32) as u32).to_be_bytes());
            if ip != nat {
                break ip;
            }
        };
        let port = (self.next() % 60_000) as u16 + 1024;
        self.send_from(h, SocketAddr::new(ip, port));
    }

    fn send_from(&mut self, h: &mut Harness, from: SocketAddr) {
        let txn = h.next_txn();
        let msg = self.message(&txn);
        self.bytes_in += msg.len() as u64;
        let (relayed, out) = h.send(udp(&from.to_string()), &msg);
        assert!(relayed.is_none());
        for t in out {
            self.answers += 1;
            self.bytes_out += t.payload.len() as u64;
        }
    }

    fn amplification(&self) -> f64 {
        self.bytes_out as f64 / self.bytes_in as f64
    }
}

/// 2000 clients behind one address start setting up allocations, one each millisecond
/// (1000 per second, twenty times `unauthenticated-rate`), with a 40 ms round trip:
/// every one has its allocation by the time the last has done its two round trips. The
/// first challenges come from the address's bucket; after that each client's 401 is
/// paid for by the signed Allocates before it. A flood spoofed from that address
/// afterwards gets the address's credit (capped) and its bucket, no more.
#[test]
fn two_thousand_clients_behind_one_address_all_allocate_far_above_the_per_source_rate() {
    const CLIENTS: usize = 2000;
    let mut h = Harness::new("");
    let base = h.now;
    let mut run = NatRun::new(CLIENTS, 10_000, Duration::from_millis(1), 0);
    assert_eq!(run.run(&mut h, base, Duration::from_secs(60)), CLIENTS);
    let last = run.last_done();
    let rate = CLIENTS as f64 / last.as_secs_f64();
    let s = h.server.stats().clone();
    println!(
        "{CLIENTS} clients behind {NAT}: the last allocated at {last:?} ({rate:.0} setups/s); \
         {} answers paid by credit, {} refused",
        s.unauthenticated_credited, s.rate_limited
    );
    assert_eq!(h.server.allocation_count(), CLIENTS);
    assert!(rate >= 500.0, "{rate:.0} setups/s");
    assert!(
        s.unauthenticated_credited as usize >= CLIENTS - 200,
        "credit paid for {} of {CLIENTS} challenges",
        s.unauthenticated_credited
    );

    // Two seconds of spoofed requests from the NAT's address, 20 per millisecond.
    let mut spoofed = Flood::new(3);
    let from: IpAddr = NAT.parse().unwrap();
    for i in 0..40_000u32 {
        if i % 20 == 0 {
            h.jump(Duration::from_millis(1));
        }
        spoofed.send_from(&mut h, SocketAddr::new(from, 1024 + (i % 60_000) as u16));
    }
    // The credit (64 KiB at most) and the bucket (a burst of 100 and 50 per second) in
    // answers of at most 80 bytes.
    let bound = 65_536 + (100 + 50 * 2 + 1) * 80;
    println!(
        "spoofed from {NAT}: {} bytes in, {} answers, {} bytes out ({:.3}x)",
        spoofed.bytes_in,
        spoofed.answers,
        spoofed.bytes_out,
        spoofed.amplification()
    );
    assert!(
        spoofed.bytes_out <= bound,
        "{} bytes answered",
        spoofed.bytes_out
    );
    assert!(spoofed.amplification() <= 1.6);
}

/// The same clients without credit (`unauthenticated-credit = 0`, the limiter as it was
/// before credit): each 401 needs a token of the address's bucket, so in ten seconds no
/// more than its burst and ten seconds' worth (100 + 50 x 10) have their allocations.
#[test]
fn without_credit_clients_behind_one_address_get_the_per_source_rate() {
    const CLIENTS: usize = 2000;
    let mut h = Harness::new("unauthenticated-credit = 0");
    let base = h.now;
    let mut run = NatRun::new(CLIENTS, 10_000, Duration::from_millis(1), 0);
    let done = run.run(&mut h, base, Duration::from_secs(10));
    println!(
        "without credit: {done} of {CLIENTS} allocated in 10 s, {} answers refused",
        h.server.stats().rate_limited
    );
    assert!(done <= 600, "{done} allocations");
    assert!(h.server.stats().rate_limited > 0);
    assert_eq!(h.server.stats().unauthenticated_credited, 0);
}

/// Spoofed floods, 50,000 minimal requests per second for two seconds (bare and
/// REQUESTED-TRANSPORT Allocates, bare and FINGERPRINT Bindings in turn): aimed at one
/// victim from random ports, and from random sources. Each is answered with at most
/// 1.6 times its bytes; the limiter's table has its fixed size before and after, and
/// nothing else is kept.
#[test]
fn spoofed_floods_get_at_most_1_6_times_their_bytes_in_a_fixed_table() {
    let mut h = Harness::new("");
    assert_eq!(h.server.limiter_slots(), SLOTS);
    let victim: IpAddr = "192.0.2.33".parse().unwrap();
    let mut at_victim = Flood::new(4);
    for i in 0..100_000u32 {
        if i % 50 == 0 {
            h.jump(Duration::from_millis(1));
        }
        at_victim.send_from(&mut h, SocketAddr::new(victim, 1024 + (i % 60_000) as u16));
    }
    let mut random = Flood::new(5);
    for i in 0..100_000u32 {
        if i % 50 == 0 {
            h.jump(Duration::from_millis(1));
        }
        random.send_one(&mut h);
    }
    for (name, f) in [("one victim", &at_victim), ("random sources", &random)] {
        println!(
            "{name}: {} bytes in, {} answers, {} bytes out ({:.3}x)",
            f.bytes_in,
            f.answers,
            f.bytes_out,
            f.amplification()
        );
        assert!(
            f.amplification() <= 1.6,
            "{name}: {:.3}x",
            f.amplification()
        );
        assert!(f.answers > 0, "{name}: nothing answered at all");
    }
    let s = h.server.stats();
    assert!(s.rate_limited_total > 0, "the budget held the random flood");
    assert_eq!(
        s.unauthenticated_credited, 0,
        "spoofed sources earn nothing"
    );
    assert_eq!(h.server.limiter_slots(), SLOTS);
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.server.deadline_count(), 0);
}

/// A flood from random sources at four times the server-wide budget (20,000 requests
/// per second against 5000) spends the budget, not the credit of clients behind a NAT:
/// 500 clients earn it, then 2000 more arrive during two seconds of flood and all have
/// their allocations, while the flood gets at most 1.6 times its bytes.
#[test]
fn a_random_flood_spends_the_budget_not_the_credit_of_clients_behind_a_nat() {
    let mut h = Harness::new("");
    let base = h.now;
    let mut before = NatRun::new(500, 10_000, Duration::from_millis(1), 0);
    assert_eq!(before.run(&mut h, base, Duration::from_secs(60)), 500);
    let base = h.now;
    let mut during = NatRun::new(2000, 20_000, Duration::from_millis(1), 20);
    assert_eq!(during.run(&mut h, base, Duration::from_secs(60)), 2000);
    let s = h.server.stats();
    let f = &during.flood;
    println!(
        "flood: {} bytes in, {} answers, {} bytes out ({:.3}x); {} refused by the budget; \
         the last client allocated at {:?}",
        f.bytes_in,
        f.answers,
        f.bytes_out,
        f.amplification(),
        s.rate_limited_total,
        during.last_done()
    );
    assert!(s.rate_limited_total > 0, "the flood met the budget");
    assert!(f.amplification() <= 1.6, "{:.3}x", f.amplification());
}

/// Over TCP (and TLS, and DTLS past its cookie) the handshake has shown that the client
/// receives at its address: no one can be made a victim, so its unauthenticated requests
/// are answered, all of them, beyond any bucket.
#[test]
fn unauthenticated_answers_over_streams_are_not_limited() {
    let mut h = Harness::new("unauthenticated-rate = 1\nunauthenticated-total-rate = 1");
    let tuple = crate::core_harness::tcp(&format!("{NAT}:40000"));
    for _ in 0..500 {
        let txn = h.next_txn();
        let attrs = [RequestAttr::RequestedTransport(UDP)];
        let msg = build(method::ALLOCATE, &txn, &attrs, &[], None, false);
        error(&h.exchange(tuple, &msg), method::ALLOCATE, 401);
    }
    assert_eq!(h.server.stats().rate_limited, 0);
    // The same over UDP meets the bucket at once: a burst of two.
    let answered: Vec<usize> = (0..3)
        .map(|port| {
            let txn = h.next_txn();
            let msg = build(method::BINDING, &txn, &[], &[], None, false);
            h.send(udp(&format!("{NAT}:{}", 40001 + port)), &msg)
                .1
                .len()
        })
        .collect();
    assert_eq!(answered, [1, 1, 0]);
}
