//! Micro-benchmarks of the per-packet work (`cargo bench --bench fast_path`): the
//! pre-scan, stun-rs decode and integrity check of an authenticated Allocate, the
//! integrity check alone, and the relay fast path in both directions through the core.

#[path = "../tests/common/core_harness.rs"]
mod core_harness;

use core_harness::wire::addr;
use core_harness::{CHANNEL_PEER, Harness, PERMITTED_PEER, RELAY_CHANNEL as CHANNEL};
use divan::{Bencher, black_box};
use ferroturn::client::codec::{self as client_codec, RequestAttr};
use ferroturn_core::proto::codec;
use ferroturn_core::proto::data::{HEADROOM, TAILROOM};
use ferroturn_core::proto::integrity::{long_term_key, verify};
use ferroturn_core::proto::scan::scan;
use ferroturn_core::proto::wire::method;
use ferroturn_core::server::{AllocId, FiveTuple, Server};
use std::time::Instant;

fn main() {
    divan::main();
}

/// A server with one allocation whose relay path is ready (the shared harness's
/// `relay_ready`: channel [`CHANNEL`] bound to [`CHANNEL_PEER`], a permission for
/// [`PERMITTED_PEER`]'s IP), handed over bare.
struct Ready {
    server: Server,
    now: Instant,
    tuple: FiveTuple,
    relay: AllocId,
}

fn relay_setup() -> Ready {
    let mut h = Harness::new("");
    let (client, relay) = h.relay_ready();
    Ready {
        server: h.server,
        now: h.now,
        tuple: client.tuple,
        relay,
    }
}

fn allocate_request() -> (Vec<u8>, [u8; 16]) {
    let key = long_term_key("1700000000:alice", "example.org", b"password");
    let attrs = [
        RequestAttr::Username("1700000000:alice"),
        RequestAttr::Realm("example.org"),
        RequestAttr::Nonce("AAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        RequestAttr::RequestedTransport(17),
        RequestAttr::Lifetime(600),
    ];
    let msg = client_codec::encode_request(method::ALLOCATE, false, &[3; 12], &attrs, Some(&key))
        .expect("encode");
    (msg, key)
}

#[divan::bench]
fn allocate_scan_decode_verify(bencher: Bencher) {
    let (msg, key) = allocate_request();
    bencher.bench(|| {
        let s = scan(black_box(&msg)).expect("scan");
        let r = codec::decode_request(&msg, &s).expect("decode");
        black_box((verify(&msg, s.integrity.expect("mi"), &key), r))
    });
}

#[divan::bench]
fn allocate_scan_only(bencher: Bencher) {
    let (msg, _) = allocate_request();
    bencher.bench(|| black_box(scan(black_box(&msg)).is_ok()));
}

#[divan::bench]
fn integrity_verify(bencher: Bencher) {
    let (msg, key) = allocate_request();
    let at = scan(&msg).expect("scan").integrity.expect("mi");
    bencher.bench(|| black_box(verify(black_box(&msg), at, &key)));
}

#[divan::bench(args = [200, 1200])]
fn client_channel_data_to_peer(bencher: Bencher, size: usize) {
    let mut r = relay_setup();
    let mut cd = ferroturn::client::channel_data(CHANNEL, &vec![7u8; size]);
    bencher.bench_local(|| {
        black_box(
            r.server
                .handle_client_datagram(r.now, r.tuple, black_box(&mut cd)),
        )
    });
}

#[divan::bench(args = [200, 1200])]
fn client_send_indication_to_peer(bencher: Bencher, size: usize) {
    let mut r = relay_setup();
    let mut send = ferroturn::client::send_indication(addr(PERMITTED_PEER), &vec![7u8; size]);
    bencher.bench_local(|| {
        black_box(
            r.server
                .handle_client_datagram(r.now, r.tuple, black_box(&mut send)),
        )
    });
}

/// A peer datagram of `size` bytes from `peer` through the core to the client.
fn peer_to_client(bencher: Bencher, size: usize, peer: &str) {
    let mut r = relay_setup();
    let peer = addr(peer);
    let mut buf = vec![0u8; HEADROOM + size + TAILROOM];
    bencher.bench_local(|| {
        black_box(r.server.handle_peer_datagram(
            r.now,
            r.relay,
            peer,
            black_box(&mut buf),
            HEADROOM..HEADROOM + size,
        ))
    });
}

#[divan::bench(args = [200, 1200])]
fn peer_to_client_channel_data(bencher: Bencher, size: usize) {
    peer_to_client(bencher, size, CHANNEL_PEER);
}

#[divan::bench(args = [200, 1200])]
fn peer_to_client_data_indication(bencher: Bencher, size: usize) {
    peer_to_client(bencher, size, PERMITTED_PEER);
}
