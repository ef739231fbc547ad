//! The PROXY protocol header as the stream listeners read it: `proxy::parse` on what a
//! peek of the connection returned (at most `MAX_HEADER` bytes of arbitrary input), and
//! `proxy::start` on the first bytes of a connection that must not carry one. Nothing
//! panics; a header found lies within the input and the bound, starts with a signature,
//! parses the same alone, and every shorter prefix of it asks for more bytes.
#![no_main]

use ferroturn_core::proto::proxy::{MAX_HEADER, Parsed, Start, parse, start};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // What a peek into the driver's buffer can return.
    let peeked = data.get(..MAX_HEADER).unwrap_or(data);
    let parsed = parse(peeked);
    let _ = start(data);
    match parsed {
        Parsed::Header {
            len,
            version,
            source,
        } => {
            assert!(len > 0 && len <= peeked.len() && len <= MAX_HEADER, "{len}");
            assert_eq!(start(peeked), Start::Header);
            let header = &peeked[..len];
            assert_eq!(parse(header), parsed, "the header alone");
            for cut in [0, 1, len / 2, len - 1] {
                if cut < len {
                    assert_eq!(parse(&header[..cut]), Parsed::Incomplete, "{cut} of {len}");
                }
            }
            if let Some(s) = source {
                // What the rest of the server sees: IPv4 is never written in IPv6.
                assert_eq!(s.ip(), s.ip().to_canonical(), "{version:?}");
            }
        }
        Parsed::Incomplete => assert!(peeked.len() < MAX_HEADER),
        Parsed::Malformed | Parsed::TooLong => {}
    }
});
