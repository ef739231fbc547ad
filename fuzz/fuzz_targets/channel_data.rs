//! ChannelData parsing, and framing of a received payload in place the way the relay
//! path does it: the returned message ranges must stay inside the buffer.
#![no_main]

use ferroturn_core::proto::data::{self, HEADROOM, TAILROOM};
use libfuzzer_sys::fuzz_target;
use std::net::{Ipv4Addr, SocketAddr};

const PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 1);

fuzz_target!(|data: &[u8]| {
    if let Some((channel, range)) = data::parse_channel_data(data) {
        assert!((data::CHANNEL_MIN..=data::CHANNEL_MAX).contains(&channel));
        assert!(range.start <= range.end && range.end <= data.len());
    }

    let mut buf = vec![0u8; HEADROOM + data.len() + TAILROOM];
    buf[HEADROOM..HEADROOM + data.len()].copy_from_slice(data);
    let payload = HEADROOM..HEADROOM + data.len();
    let channel = data.first().map_or(0x4000, |&b| 0x4000 | u16::from(b));
    for pad in [false, true] {
        if let Some(r) = data::frame_channel_data(&mut buf, payload.clone(), channel, pad) {
            assert!(
                r.start <= r.end && r.end <= buf.len(),
                "{r:?} outside {}",
                buf.len()
            );
            assert!(r.start <= payload.start && r.end >= payload.end);
        }
    }
    let txn = [7u8; 12];
    if let Some(r) = data::frame_data_indication(&mut buf, payload.clone(), PEER, &txn) {
        assert!(
            r.start <= r.end && r.end <= buf.len(),
            "{r:?} outside {}",
            buf.len()
        );
        assert!(r.start <= payload.start && r.end >= payload.end);
    }
});
