//! The stateless DTLS cookie gate fed arbitrary datagrams: the first input byte picks the
//! client's port (its low bits) and family, the rest is the datagram. Nothing panics;
//! only a parseable ClientHello is answered or accepted; an answer is a whole
//! HelloVerifyRequest whose cookie, repeated in the same ClientHello from the same
//! address, is accepted; an accepted cookie is the one the ClientHello carried.
#![no_main]

use ferroturn_core::dtls::{Gate, HELLO_VERIFY_LEN, Verdict, parse_client_hello};
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use std::time::Instant;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, datagram)) = data.split_first() else {
        return;
    };
    let port = 40_000 + u16::from(pick & 0x7f);
    let client: SocketAddr = if pick & 0x80 == 0 {
        SocketAddr::from(([192, 0, 2, 1], port))
    } else {
        SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], port))
    };
    let now = Instant::now();
    let gate = Gate::new([7; 32], now, 1_800_000_000);
    let mut out = [0u8; HELLO_VERIFY_LEN];
    let hello = parse_client_hello(datagram);
    match gate.handle_datagram(now, client, datagram, &mut out) {
        Verdict::Drop => {}
        Verdict::HelloVerify { len, .. } => {
            let hello = hello.expect("only a ClientHello is answered");
            assert_eq!(len, HELLO_VERIFY_LEN);
            assert_eq!(out[0], 22);
            assert_eq!(&out[5..11], &hello.record_seq);
            // The same ClientHello, now carrying the cookie, is accepted.
            let cookie = &out[28..len];
            let again = rebuild_with_cookie(datagram, hello.cookie, cookie);
            if let Some(again) = again {
                let mut out2 = [0u8; HELLO_VERIFY_LEN];
                assert!(matches!(
                    gate.handle_datagram(now, client, &again, &mut out2),
                    Verdict::Accept { .. }
                ));
            }
        }
        Verdict::Accept { cookie } => {
            let hello = hello.expect("only a ClientHello is accepted");
            assert_eq!(hello.cookie, &cookie[..]);
        }
    }
});

/// `datagram` with its ClientHello's cookie `old` replaced by `new`, the three lengths
/// before it fixed up; `None` when it does not fit the simple layout (one record, the
/// ClientHello filling it).
fn rebuild_with_cookie(datagram: &[u8], old: &[u8], new: &[u8]) -> Option<Vec<u8>> {
    // Record header 13, handshake header 12, version 2, random 32, session id.
    let sid_len = usize::from(*datagram.get(59)?);
    let cookie_at = 60 + sid_len;
    if *datagram.get(cookie_at)? as usize != old.len() {
        return None;
    }
    let record_len = usize::from(u16::from_be_bytes([datagram[11], datagram[12]]));
    if record_len + 13 != datagram.len() {
        return None;
    }
    let mut v = datagram[..cookie_at].to_vec();
    v.push(new.len() as u8);
    v.extend_from_slice(new);
    v.extend_from_slice(datagram.get(cookie_at + 1 + old.len()..)?);
    let body = v.len() - 25;
    let hs = v.len() - 13;
    v[11..13].copy_from_slice(&u16::try_from(hs).ok()?.to_be_bytes());
    let b = (body as u32).to_be_bytes();
    v[14..17].copy_from_slice(&b[1..]);
    v[22..25].copy_from_slice(&b[1..]);
    Some(v)
}
