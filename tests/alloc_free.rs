//! The relay fast path allocates nothing: ChannelData and Send indications from the
//! client, and peer datagrams framed as ChannelData or Data indications, counted with a
//! counting global allocator around each call. DTLS records (`ferroturn::dtls`) once a
//! session is up allocate nothing either, in Rust or in OpenSSL (whose `malloc` is
//! counted through `CRYPTO_set_mem_functions`).

#[path = "common/core_harness.rs"]
mod core_harness;

use core_harness::wire::addr;
use core_harness::{CHANNEL_PEER, Harness, PERMITTED_PEER, RELAY_CHANNEL as CHANNEL};
use ferroturn::dtls::Session;
use ferroturn_core::dtls::{Gate, HELLO_VERIFY_LEN, Verdict};
use ferroturn_core::proto::data::{HEADROOM, TAILROOM};
use ferroturn_core::server::Path;
use openssl::ssl::{Ssl, SslContextBuilder, SslMethod, SslOptions, SslVerifyMode};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The tests count allocations process-wide: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    let out = f();
    (ALLOCATIONS.load(Ordering::SeqCst) - before, out)
}

#[test]
fn the_relay_fast_path_allocates_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut h = Harness::new("");
    let (client, relay) = h.relay_ready();
    let (now, tuple) = (h.now, client.tuple);
    let (peer_ch, peer_ind) = (addr(CHANNEL_PEER), addr(PERMITTED_PEER));
    // Every buffer is prepared before counting.
    let mut channel_data = ferroturn::client::channel_data(CHANNEL, &[7u8; 1200]);
    let mut send = ferroturn::client::send_indication(peer_ind, &[8u8; 1200]);
    let mut peer_buf = vec![0u8; HEADROOM + 1200 + TAILROOM];
    let payload = HEADROOM..HEADROOM + 1200;

    for _ in 0..3 {
        let (n, t) = allocations_during(|| {
            h.server
                .handle_client_datagram(now, tuple, &mut channel_data)
        });
        assert!(
            matches!(t.expect("ChannelData relayed").path, Path::Peer { peer, .. } if peer == peer_ch)
        );
        assert_eq!(n, 0, "ChannelData from the client allocated");

        let (n, t) = allocations_during(|| h.server.handle_client_datagram(now, tuple, &mut send));
        assert!(
            matches!(t.expect("Send relayed").path, Path::Peer { peer, .. } if peer == peer_ind)
        );
        assert_eq!(n, 0, "Send indication allocated");

        let (n, t) = allocations_during(|| {
            h.server
                .handle_peer_datagram(now, relay, peer_ch, &mut peer_buf, payload.clone())
        });
        assert_eq!(t.expect("peer datagram relayed").range.len(), 4 + 1200);
        assert_eq!(n, 0, "peer datagram to ChannelData allocated");

        let (n, t) = allocations_during(|| {
            h.server
                .handle_peer_datagram(now, relay, peer_ind, &mut peer_buf, payload.clone())
        });
        assert_eq!(t.expect("peer datagram relayed").range.len(), 36 + 1200);
        assert_eq!(n, 0, "peer datagram to Data indication allocated");
    }
}

/// OpenSSL's allocations, counted: its `malloc`, `realloc` and `free` replaced before its
/// first allocation (the DTLS test is the only user of OpenSSL in this binary).
mod openssl_allocations {
    use std::ffi::{c_char, c_int, c_void};
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub static COUNT: AtomicUsize = AtomicUsize::new(0);

    unsafe extern "C" {
        fn CRYPTO_set_mem_functions(
            m: unsafe extern "C" fn(usize, *const c_char, c_int) -> *mut c_void,
            r: unsafe extern "C" fn(*mut c_void, usize, *const c_char, c_int) -> *mut c_void,
            f: unsafe extern "C" fn(*mut c_void, *const c_char, c_int),
        ) -> c_int;
    }

    unsafe extern "C" fn malloc(n: usize, _: *const c_char, _: c_int) -> *mut c_void {
        COUNT.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the C allocator.
        unsafe { libc::malloc(n) }
    }

    unsafe extern "C" fn realloc(
        p: *mut c_void,
        n: usize,
        _: *const c_char,
        _: c_int,
    ) -> *mut c_void {
        COUNT.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the C allocator.
        unsafe { libc::realloc(p, n) }
    }

    unsafe extern "C" fn free(p: *mut c_void, _: *const c_char, _: c_int) {
        // SAFETY: forwarded unchanged to the C allocator.
        unsafe { libc::free(p) }
    }

    /// Installs the counting functions; false if OpenSSL has allocated already.
    pub fn install() -> bool {
        // SAFETY: the three functions have the signatures OpenSSL declares and forward to
        // libc's allocator, which is what OpenSSL uses by default.
        unsafe { CRYPTO_set_mem_functions(malloc, realloc, free) == 1 }
    }
}

/// Moves every datagram in `from`'s outbox to `to`, through `buf` (reused).
fn pump(from: &mut Session, to: &mut Session, buf: &mut Vec<u8>) {
    loop {
        buf.clear();
        match from.outbox().next() {
            Some(d) => buf.extend_from_slice(d),
            None => return,
        }
        // One datagram at a time: the rest stay queued until the next turn.
        let rest: Vec<Vec<u8>> = from.outbox().skip(1).map(<[u8]>::to_vec).collect();
        from.clear_outbox();
        to.handle_datagram(buf).expect("a datagram the peer takes");
        for d in rest {
            to.handle_datagram(&d).expect("a datagram the peer takes");
        }
    }
}

/// What sending one record cost: Rust allocations in all, OpenSSL's on the sending and
/// on the receiving side.
#[derive(Debug, PartialEq, Eq)]
struct RecordCost {
    rust: usize,
    openssl_write: usize,
    openssl_read: usize,
}

/// One message `from` -> `to` without any buffer growing: the record moves through
/// `buf`, the plaintext lands in `plain` (checked against `msg`).
fn one_record(
    from: &mut Session,
    to: &mut Session,
    msg: &[u8],
    buf: &mut Vec<u8>,
    plain: &mut [u8],
) -> RecordCost {
    let openssl = || openssl_allocations::COUNT.load(Ordering::SeqCst);
    let (rust, (openssl_write, openssl_read, len)) = allocations_during(|| {
        let c0 = openssl();
        from.write(msg).expect("write");
        buf.clear();
        buf.extend_from_slice(from.outbox().next().expect("one record"));
        from.clear_outbox();
        let c1 = openssl();
        to.handle_datagram(buf).expect("a record the peer takes");
        let len = to.read(plain).expect("read").expect("a record's plaintext");
        (c1 - c0, openssl() - c1, len)
    });
    assert_eq!(plain.get(..len), Some(msg));
    RecordCost {
        rust,
        openssl_write,
        openssl_read,
    }
}

/// Rust allocates nothing per record, and OpenSSL nothing to receive one; to send one,
/// OpenSSL 3's record layer makes two small allocations (a WPACKET sub-packet of 40
/// bytes and a stack of templates, freed again), which ARCHITECTURE.md reports. Its
/// record buffers stay (no SSL_MODE_RELEASE_BUFFERS): more than two would be those.
#[test]
fn dtls_records_allocate_nothing_but_two_small_blocks_in_openssl_to_send() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        openssl_allocations::install(),
        "OpenSSL allocated before the test"
    );
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let server_ctx = ferroturn::dtls::server_context(&[cert.der()], &key.serialize_der()).unwrap();
    let mut b = SslContextBuilder::new(SslMethod::dtls_client()).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    b.set_options(SslOptions::NO_QUERY_MTU);
    let client_ctx = b.build();

    // The cookie exchange through the gate, then the handshake in memory.
    let now = std::time::Instant::now();
    let gate = Gate::new([1; 32], now, 1_800_000_000);
    let from = addr("127.0.0.1:40000");
    let mut client = Session::connect(Ssl::new(&client_ctx).unwrap(), from.ip()).unwrap();
    let first = client.outbox().next().unwrap().to_vec();
    client.clear_outbox();
    let mut hvr = [0u8; HELLO_VERIFY_LEN];
    let Verdict::HelloVerify { len, .. } = gate.handle_datagram(now, from, &first, &mut hvr) else {
        panic!("a HelloVerifyRequest");
    };
    client.handle_datagram(&hvr[..len]).unwrap();
    let second = client.outbox().next().unwrap().to_vec();
    client.clear_outbox();
    let Verdict::Accept { cookie } = gate.handle_datagram(now, from, &second, &mut hvr) else {
        panic!("the repeated ClientHello is accepted");
    };
    let mut server = Session::accept(&server_ctx, &second, cookie).unwrap();
    server.handshake().unwrap();
    let mut buf = Vec::with_capacity(4096);
    for _ in 0..10 {
        if client.is_established() && server.is_established() {
            break;
        }
        pump(&mut server, &mut client, &mut buf);
        pump(&mut client, &mut server, &mut buf);
    }
    assert!(client.is_established() && server.is_established());

    let msg = [9u8; 1200];
    let mut plain = vec![0u8; 2048];
    // Warm: the first records size the buffers.
    for _ in 0..3 {
        one_record(&mut client, &mut server, &msg, &mut buf, &mut plain);
        one_record(&mut server, &mut client, &msg, &mut buf, &mut plain);
    }
    for _ in 0..3 {
        for cost in [
            one_record(&mut client, &mut server, &msg, &mut buf, &mut plain),
            one_record(&mut server, &mut client, &msg, &mut buf, &mut plain),
        ] {
            assert_eq!(
                (cost.rust, cost.openssl_read),
                (0, 0),
                "a DTLS record allocated: {cost:?}"
            );
            assert!(
                cost.openssl_write <= 2,
                "OpenSSL's write path allocated more: {cost:?}"
            );
        }
    }
}
