//! The STUN pre-scan and the decoders behind it: any input must yield a value or an
//! error, never a panic, and every range the scan reports must lie inside the input.
#![no_main]

use ferroturn::client::codec as client_codec;
use ferroturn_core::proto::{codec, integrity, scan};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = scan::scan(data) {
        assert!(s.len <= data.len());
        for r in [&s.peer, &s.data, &s.username, &s.realm, &s.nonce]
            .into_iter()
            .flatten()
        {
            assert!(
                r.start <= r.end && r.end <= data.len(),
                "{r:?} outside {}",
                data.len()
            );
        }
        let _ = codec::decode_request(data, &s);
        if let Some(at) = s.integrity {
            let _ = integrity::verify(data, at, b"key");
        }
    }
    let _ = client_codec::decode_response(data);
});
