//! Micro-benchmarks of the per-packet work: the pre-scan + decode + integrity check of an
//! authenticated request, and the relay fast path in both directions.
//! `cargo bench --bench fast_path`; prints nanoseconds per operation (median of 5 runs).

use ferroturn::config::Config;
use ferroturn::core::proto::codec::{self, RequestAttr};
use ferroturn::core::proto::data::{HEADROOM, TAILROOM};
use ferroturn::core::proto::integrity::{long_term_key, verify};
use ferroturn::core::proto::scan::scan;
use ferroturn::core::proto::wire::method;
use ferroturn::core::server::{Event, FiveTuple, LocalState, Path, Server, Transport};
use std::hint::black_box;
use std::sync::Arc;
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

    let (mut server, tuple, relay) = relay_setup();
    let mut cd = ferroturn::client::channel_data(0x4001, &[7u8; 1200]);
    let now = Instant::now();
    bench("client ChannelData -> peer (1200 B)", 1_000_000, || {
        black_box(server.handle_client_datagram(now, tuple, black_box(&mut cd)));
    });
    let peer = "198.51.100.2:6000".parse().expect("addr");
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
    let other = "198.51.100.3:6000".parse().expect("addr");
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

/// A server with one allocation, a channel to 198.51.100.2:6000 and a permission for
/// 198.51.100.3.
fn relay_setup() -> (Server, FiveTuple, ferroturn::core::server::AllocId) {
    let config =
        Config::from_toml_str("listening-ip = [\"127.0.0.1\"]\nrealm = \"r\"\nuser = [\"u:p\"]\n")
            .expect("config");
    let now = Instant::now();
    let mut server = Server::new(
        config.server,
        Arc::new(LocalState::default()),
        [1; 32],
        now,
        1_000_000,
    );
    let tuple = FiveTuple {
        client: "198.51.100.1:5000".parse().expect("addr"),
        listener: 0,
        transport: Transport::Udp,
    };
    let key = long_term_key("u", "r", b"p");
    let mut first = codec::encode_request(
        method::ALLOCATE,
        false,
        &[1; 12],
        &[RequestAttr::RequestedTransport(17)],
        None,
    )
    .expect("encode");
    server.handle_client_datagram(now, tuple, &mut first);
    let nonce = codec::decode_response(&server.poll_transmit().expect("401").payload)
        .and_then(|r| r.nonce)
        .expect("nonce");
    let steps: [(u16, Vec<RequestAttr<'_>>); 3] = [
        (method::ALLOCATE, vec![RequestAttr::RequestedTransport(17)]),
        (
            method::CHANNEL_BIND,
            vec![
                RequestAttr::ChannelNumber(0x4001),
                RequestAttr::XorPeerAddress("198.51.100.2:6000".parse().expect("addr")),
            ],
        ),
        (
            method::CREATE_PERMISSION,
            vec![RequestAttr::XorPeerAddress(
                "198.51.100.3:1".parse().expect("addr"),
            )],
        ),
    ];
    for (i, (m, extra)) in steps.into_iter().enumerate() {
        let mut attrs = vec![
            RequestAttr::Username("u"),
            RequestAttr::Realm("r"),
            RequestAttr::Nonce(&nonce),
        ];
        attrs.extend(extra);
        let mut msg = codec::encode_request(m, false, &[i as u8 + 2; 12], &attrs, Some(&key))
            .expect("encode");
        server.handle_client_datagram(now, tuple, &mut msg);
        while let Some(Event::BindRelay { relay, .. }) = server.poll_event() {
            server.handle_relay_bound(now, relay, true);
        }
        let r = codec::decode_response(&server.poll_transmit().expect("response").payload)
            .expect("decode");
        assert_eq!(r.error_code, None, "setup step {i}");
    }
    let mut cd = ferroturn::client::channel_data(0x4001, b"x");
    let relay = match server
        .handle_client_datagram(now, tuple, &mut cd)
        .map(|t| t.path)
    {
        Some(Path::Peer { relay, .. }) => relay,
        other => panic!("channel not bound: {other:?}"),
    };
    (server, tuple, relay)
}
