//! The relay fast path allocates nothing: ChannelData and Send indications from the
//! client, and peer datagrams framed as ChannelData or Data indications, counted with a
//! counting global allocator around each call.

#[path = "common/core_harness.rs"]
mod core_harness;

use core_harness::wire::addr;
use core_harness::{CHANNEL_PEER, Harness, PERMITTED_PEER, RELAY_CHANNEL as CHANNEL};
use ferroturn_core::proto::data::{HEADROOM, TAILROOM};
use ferroturn_core::server::Path;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

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
