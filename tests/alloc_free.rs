//! The relay fast path allocates nothing: ChannelData and Send indications from the
//! client, and peer datagrams framed as ChannelData or Data indications, counted with a
//! counting global allocator around each call.

use ferroturn::config::Config;
use ferroturn::core::proto::codec::{self, RequestAttr};
use ferroturn::core::proto::data::{HEADROOM, TAILROOM};
use ferroturn::core::proto::integrity::long_term_key;
use ferroturn::core::proto::wire::method;
use ferroturn::core::server::{Event, FiveTuple, LocalState, Path, Server, Transport};
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

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

const USER: &str = "alice";
const PASSWORD: &str = "pw";
const REALM: &str = "example.org";

/// Sends an authenticated request and returns the response bytes.
fn request(
    server: &mut Server,
    now: Instant,
    tuple: FiveTuple,
    m: u16,
    attrs: &[RequestAttr<'_>],
    nonce: &str,
) -> Vec<u8> {
    let key = long_term_key(USER, REALM, PASSWORD.as_bytes());
    let mut all = vec![
        RequestAttr::Username(USER),
        RequestAttr::Realm(REALM),
        RequestAttr::Nonce(nonce),
    ];
    all.extend_from_slice(attrs);
    let mut msg =
        codec::encode_request(m, false, &[m as u8; 12], &all, Some(&key)).expect("encode");
    assert!(
        server
            .handle_client_datagram(now, tuple, &mut msg)
            .is_none()
    );
    while let Some(Event::BindRelay { relay, .. }) = server.poll_event() {
        server.handle_relay_bound(now, relay, true);
    }
    server.poll_transmit().expect("a response").payload
}

#[test]
fn the_relay_fast_path_allocates_nothing() {
    let config = Config::from_toml_str(&format!(
        "listening-ip = [\"127.0.0.1\"]\nrealm = \"{REALM}\"\nuser = [\"{USER}:{PASSWORD}\"]\n"
    ))
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
        client: "198.51.100.1:5000".parse().unwrap(),
        listener: 0,
        transport: Transport::Udp,
    };
    let peer_ch: SocketAddr = "198.51.100.2:6000".parse().unwrap();
    let peer_ind: SocketAddr = "198.51.100.3:7000".parse().unwrap();

    // Challenge, then Allocate, CreatePermission, ChannelBind.
    let mut first = codec::encode_request(
        method::ALLOCATE,
        false,
        &[9; 12],
        &[RequestAttr::RequestedTransport(17)],
        None,
    )
    .unwrap();
    server.handle_client_datagram(now, tuple, &mut first);
    let challenge = codec::decode_response(&server.poll_transmit().unwrap().payload).unwrap();
    let nonce = challenge.nonce.expect("nonce");
    let r = request(
        &mut server,
        now,
        tuple,
        method::ALLOCATE,
        &[RequestAttr::RequestedTransport(17)],
        &nonce,
    );
    assert!(codec::decode_response(&r).unwrap().xor_relayed.is_some());
    let r = request(
        &mut server,
        now,
        tuple,
        method::CREATE_PERMISSION,
        &[RequestAttr::XorPeerAddress(peer_ind)],
        &nonce,
    );
    assert_eq!(codec::decode_response(&r).unwrap().error_code, None);
    let attrs = [
        RequestAttr::ChannelNumber(0x4001),
        RequestAttr::XorPeerAddress(peer_ch),
    ];
    let r = request(
        &mut server,
        now,
        tuple,
        method::CHANNEL_BIND,
        &attrs,
        &nonce,
    );
    assert_eq!(codec::decode_response(&r).unwrap().error_code, None);
    assert_eq!(server.poll_event(), None);

    // Prepare every buffer before counting.
    let mut channel_data = ferroturn::client::channel_data(0x4001, &[7u8; 1200]);
    let mut send = ferroturn::client::send_indication(peer_ind, &[8u8; 1200]);
    let mut peer_buf = vec![0u8; HEADROOM + 1200 + TAILROOM];

    for _ in 0..3 {
        let (n, t) =
            allocations_during(|| server.handle_client_datagram(now, tuple, &mut channel_data));
        let t = t.expect("ChannelData relayed");
        assert!(matches!(t.path, Path::Peer { peer, .. } if peer == peer_ch));
        assert_eq!(n, 0, "ChannelData from the client allocated");

        let (n, t) = allocations_during(|| server.handle_client_datagram(now, tuple, &mut send));
        assert!(
            matches!(t.expect("Send relayed").path, Path::Peer { peer, .. } if peer == peer_ind)
        );
        assert_eq!(n, 0, "Send indication allocated");

        let relay_id = match t_path_relay(&mut server, now, tuple, &mut channel_data) {
            Some(id) => id,
            None => panic!("no relay id"),
        };
        let (n, t) = allocations_during(|| {
            server.handle_peer_datagram(
                now,
                relay_id,
                peer_ch,
                &mut peer_buf,
                HEADROOM..HEADROOM + 1200,
            )
        });
        assert_eq!(t.expect("peer datagram relayed").range.len(), 1204);
        assert_eq!(n, 0, "peer datagram to ChannelData allocated");

        let (n, t) = allocations_during(|| {
            server.handle_peer_datagram(
                now,
                relay_id,
                peer_ind,
                &mut peer_buf,
                HEADROOM..HEADROOM + 1200,
            )
        });
        assert_eq!(t.expect("peer datagram relayed").range.len(), 36 + 1200);
        assert_eq!(n, 0, "peer datagram to Data indication allocated");
    }
}

/// The relay id named by a ChannelData transmit.
fn t_path_relay(
    server: &mut Server,
    now: Instant,
    tuple: FiveTuple,
    cd: &mut [u8],
) -> Option<ferroturn::core::server::AllocId> {
    match server.handle_client_datagram(now, tuple, cd)?.path {
        Path::Peer { relay, .. } => Some(relay),
        Path::Client { .. } => None,
    }
}
