//! Micro-benchmarks of the per-packet work: the pre-scan + decode + integrity check of an
//! authenticated request, and the relay fast path in both directions.
//! `cargo bench --bench fast_path`; prints nanoseconds per operation (median of 5 runs).

#[path = "../tests/support/relay_setup.rs"]
mod relay_setup;

use ferroturn::core::proto::codec::{self, RequestAttr};
use ferroturn::core::proto::data::{HEADROOM, TAILROOM};
use ferroturn::core::proto::integrity::{long_term_key, verify};
use ferroturn::core::proto::scan::scan;
use ferroturn::core::proto::wire::method;
use std::hint::black_box;
use std::time::Instant;

fn bench(name: &str, iterations: u32, mut f: impl FnMut()) {
    let mut runs: Vec<f64> = (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iterations {
                f();
            }
            start.elapsed().as_nanos() as f64 / f64::from(iterations)
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    println!("{name:<48} {:>10.1} ns/op", runs[2]);
}

fn main() {
    let key = long_term_key("1700000000:alice", "example.org", b"password");
    let attrs = [
        RequestAttr::Username("1700000000:alice"),
        RequestAttr::Realm("example.org"),
        RequestAttr::Nonce("AAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        RequestAttr::RequestedTransport(17),
        RequestAttr::Lifetime(600),
    ];
    let allocate = codec::encode_request(method::ALLOCATE, false, &[3; 12], &attrs, Some(&key))
        .expect("encode");
    bench(
        "allocate: scan + stun-rs decode + integrity",
        20_000,
        || {
            let s = scan(black_box(&allocate)).expect("scan");
            let r = codec::decode_request(&allocate, &s).expect("decode");
            black_box(verify(&allocate, s.integrity.expect("mi"), &key));
            black_box(r);
        },
    );

    let relay_setup::Ready {
        mut server,
        now,
        tuple,
        relay,
    } = relay_setup::relay_setup();
    let mut cd = ferroturn::client::channel_data(relay_setup::CHANNEL, &[7u8; 1200]);
    bench("client ChannelData -> peer (1200 B)", 1_000_000, || {
        black_box(server.handle_client_datagram(now, tuple, black_box(&mut cd)));
    });
    let peer = relay_setup::addr(relay_setup::CHANNEL_PEER);
    let mut buf = vec![0u8; HEADROOM + 1200 + TAILROOM];
    bench(
        "peer datagram -> client ChannelData (1200 B)",
        1_000_000,
        || {
            black_box(server.handle_peer_datagram(
                now,
                relay,
                peer,
                black_box(&mut buf),
                HEADROOM..HEADROOM + 1200,
            ));
        },
    );
    let other = relay_setup::addr(relay_setup::PERMITTED_PEER);
    bench(
        "peer datagram -> client Data indication (1200 B)",
        1_000_000,
        || {
            black_box(server.handle_peer_datagram(
                now,
                relay,
                other,
                black_box(&mut buf),
                HEADROOM..HEADROOM + 1200,
            ));
        },
    );
}
