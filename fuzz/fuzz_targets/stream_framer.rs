//! The stream framer fed in arbitrary chunks: the first input bytes give the buffer
//! capacity and the chunk sizes, the rest is the stream. Frame ranges must index the
//! buffer, and a frame must start with the header kind it is reported as.
#![no_main]

use ferroturn_core::proto::stream::{Frame, Framer, MAX_STREAM_FRAME};
use libfuzzer_sys::fuzz_target;

/// Chunk sizes are read from this many leading bytes (cycled).
const SIZES: usize = 8;

fuzz_target!(|data: &[u8]| {
    let Some((&cap, rest)) = data.split_first() else {
        return;
    };
    if rest.len() < SIZES {
        return;
    }
    let (sizes, mut stream) = rest.split_at(SIZES);
    // Small capacities exercise compaction and TooLarge; 0 stands for the largest. Odd
    // bytes start small and grow to the largest frame (the drivers' configuration).
    let capacity = if cap == 0 {
        MAX_STREAM_FRAME
    } else {
        usize::from(cap) * 4
    };
    let mut framer = if cap & 1 == 1 {
        Framer::with_limit(capacity, MAX_STREAM_FRAME)
    } else {
        Framer::new(capacity)
    };
    let mut i = 0;
    'feed: while !stream.is_empty() {
        let want = usize::from(sizes[i % SIZES]).max(1);
        i += 1;
        let spare = framer.spare();
        assert!(
            !spare.is_empty(),
            "no spare space with all complete frames pulled"
        );
        let n = want.min(spare.len()).min(stream.len());
        spare[..n].copy_from_slice(&stream[..n]);
        stream = &stream[n..];
        framer.filled(n);
        loop {
            match framer.next_frame() {
                Ok(Some(frame)) => {
                    let r = frame.range();
                    let buf = framer.buffer();
                    assert!(
                        r.start < r.end && r.end <= buf.len(),
                        "{r:?} outside {}",
                        buf.len()
                    );
                    let first = buf[r.start] >> 6;
                    match frame {
                        Frame::Stun(_) => assert_eq!(first, 0),
                        Frame::ChannelData(_) => assert_eq!(first, 1),
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // Sticky: every later call repeats it.
                    assert_eq!(framer.next_frame(), Err(e));
                    break 'feed;
                }
            }
        }
        assert!(framer.pending() <= framer.capacity());
        assert!(framer.capacity() <= framer.limit().max(MAX_STREAM_FRAME));
    }
});
