//! Framing of STUN and ChannelData messages on a stream transport (TCP, TLS).
//!
//! On a stream the two kinds of message are interleaved back to back (RFC 8489 section
//! 6.2.2, RFC 8656 section 12.5); the first two bits of each tell them apart. A
//! [`Framer`] owns one fixed receive buffer, allocated once. The driver reads into
//! [`Framer::spare`], reports the count with [`Framer::filled`], then pulls frames with
//! [`Framer::next_frame`] until it returns `Ok(None)`:
//!
//! ```text
//! loop {
//!     let n = socket.read(framer.spare())?;   // 0: end of stream
//!     framer.filled(n);
//!     while let Some(frame) = framer.next_frame()? {
//!         handle(&mut framer.buffer_mut()[frame.range()]);
//!     }
//! }
//! ```
//!
//! A [`FramingError`] means the stream can no longer be delimited: the connection must be
//! closed. The error is sticky; every later call returns it again.
//!
//! The send side needs no framer: STUN messages go out as they are, and ChannelData is
//! built with [`super::data::frame_channel_data`] with `pad: true`.

use super::wire::{CHANNEL_DATA_HEADER_LEN, HEADER_LEN, MAGIC_COOKIE, be16, be32, padded};
use std::ops::Range;

/// The largest frame either kind of message can produce on a stream: a STUN message with
/// a length field of 65532 (the largest multiple of 4). A ChannelData message is at most
/// 4 + 65535 + 1 bytes of padding. A [`Framer`] with this capacity accepts every frame.
pub const MAX_STREAM_FRAME: usize = HEADER_LEN + 65532;

/// Why a stream can no longer be delimited. Each one closes the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// The first byte of a frame starts with neither 00 (STUN) nor 01 (ChannelData).
    #[error("frame starts with neither a STUN nor a ChannelData header")]
    UnknownFrame,
    /// A STUN header without the magic cookie.
    #[error("STUN header without the magic cookie")]
    NoMagicCookie,
    /// A STUN length field that is not a multiple of 4.
    #[error("STUN length {0} is not a multiple of 4")]
    UnalignedLength(u16),
    /// A frame (padding included) larger than the receive buffer: it could never arrive
    /// whole, so it is refused as soon as its length field is read.
    #[error("frame of {0} bytes is larger than the {1}-byte receive buffer")]
    TooLarge(usize, usize),
}

/// A complete message in the framer's buffer: its range indexes [`Framer::buffer`] and
/// stays valid until the next call to [`Framer::spare`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A STUN message, header included (20 + length bytes).
    Stun(Range<usize>),
    /// A ChannelData message, header and payload; the stream padding behind it is
    /// consumed but not part of the range.
    ChannelData(Range<usize>),
}

impl Frame {
    /// The message bytes within [`Framer::buffer`].
    pub fn range(&self) -> Range<usize> {
        match self {
            Frame::Stun(r) | Frame::ChannelData(r) => r.clone(),
        }
    }
}

/// What the bytes at the front of the buffer tell about the next frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Measure {
    /// Too few bytes to know the length; at least `need` are required.
    Partial { need: usize },
    /// The header is read: the message is `len` bytes and takes `wire` bytes of stream.
    Known { stun: bool, len: usize, wire: usize },
}

/// Reads as much of the header at the start of `pending` as is there, and refuses what
/// can never become a valid frame of at most `max` bytes as early as possible.
fn measure(pending: &[u8], max: usize) -> Result<Measure, FramingError> {
    let Some(&first) = pending.first() else {
        return Ok(Measure::Partial { need: 1 });
    };
    let (stun, header) = match first >> 6 {
        0b00 => (true, HEADER_LEN),
        // RFC 8656 section 12: ChannelData starts with 01; 10 and 11 are not used.
        0b01 => (false, CHANNEL_DATA_HEADER_LEN),
        _ => return Err(FramingError::UnknownFrame),
    };
    let Some(field) = be16(pending, 2) else {
        return Ok(Measure::Partial { need: header });
    };
    let len = usize::from(field);
    let (len, wire) = if stun {
        // RFC 8489 section 5: the last two bits of the length are always zero.
        if field & 3 != 0 {
            return Err(FramingError::UnalignedLength(field));
        }
        (HEADER_LEN + len, HEADER_LEN + len)
    } else {
        // RFC 8656 section 12.5: over TCP and TLS ChannelData MUST be padded to a
        // multiple of 4 so that the next message stays aligned.
        let len = CHANNEL_DATA_HEADER_LEN + len;
        (len, padded(len))
    };
    if wire > max {
        return Err(FramingError::TooLarge(wire, max));
    }
    if stun {
        if let Some(cookie) = be32(pending, 4) {
            if cookie != MAGIC_COOKIE {
                return Err(FramingError::NoMagicCookie);
            }
        }
    }
    Ok(Measure::Known { stun, len, wire })
}

/// Splits a byte stream into STUN and ChannelData frames inside one fixed buffer.
///
/// Bytes between `start` and `end` are received but not yet returned as frames. Frames
/// are never copied out; consumed bytes are discarded by moving the remainder to the
/// front, only when the free tail is too short for the frame in progress or when more
/// than half the buffer is consumed, so each byte is moved at most a bounded number of
/// times.
pub struct Framer {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    error: Option<FramingError>,
    /// The buffer size between large frames.
    initial: usize,
    /// The largest frame accepted; the buffer grows to it for a frame that needs it.
    limit: usize,
}

impl Framer {
    /// A framer whose buffer holds `capacity` bytes, which is also the largest frame it
    /// accepts (padding included). [`MAX_STREAM_FRAME`] accepts every valid frame; a
    /// smaller capacity bounds the memory of a connection and refuses larger frames.
    /// Capacities below a STUN header are raised to one.
    pub fn new(capacity: usize) -> Self {
        Self::with_limit(capacity, capacity)
    }

    /// A framer whose buffer holds `initial` bytes and grows to `limit` (the largest
    /// frame accepted) only while a frame larger than `initial` is being received; it
    /// shrinks back once that frame is consumed. Many idle connections then cost
    /// `initial` bytes each, and a large frame costs one allocation.
    pub fn with_limit(initial: usize, limit: usize) -> Self {
        let initial = initial.max(HEADER_LEN);
        Framer {
            buf: vec![0; initial].into_boxed_slice(),
            start: 0,
            end: 0,
            error: None,
            initial,
            limit: limit.max(initial),
        }
    }

    /// The current buffer size.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// The largest frame accepted (padding included).
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Received bytes not yet returned as frames (at end of stream: a truncated frame).
    pub fn pending(&self) -> usize {
        self.end - self.start
    }

    /// The whole buffer; [`Frame`] ranges index it.
    pub fn buffer(&self) -> &[u8] {
        &self.buf
    }

    /// The whole buffer, mutable, so a frame can be processed in place.
    pub fn buffer_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// Free space behind the received bytes, for the caller to read into. May move the
    /// pending bytes to the front first, which invalidates earlier [`Frame`] ranges. It is
    /// never empty while the frames already complete have been pulled and no error was
    /// returned.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > self.initial {
                self.buf = vec![0; self.initial].into_boxed_slice();
            }
        } else if self.start > 0 && self.should_compact() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        self.buf.get_mut(self.end..).unwrap_or_default()
    }

    /// Records that the caller wrote `n` bytes at the front of [`Framer::spare`]. A count
    /// larger than the spare space is clamped to it.
    pub fn filled(&mut self, n: usize) {
        self.end = self.end.saturating_add(n).min(self.buf.len());
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed, or the error that
    /// closes the connection. The frame's bytes, and its padding, are consumed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FramingError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let pending = self.buf.get(self.start..self.end).unwrap_or_default();
        let (stun, len, wire) = match measure(pending, self.limit) {
            Ok(Measure::Known { stun, len, wire }) if wire <= pending.len() => (stun, len, wire),
            Ok(Measure::Known { wire, .. }) if wire > self.buf.len() => {
                self.grow();
                return Ok(None);
            }
            Ok(_) => return Ok(None),
            Err(e) => {
                self.error = Some(e);
                return Err(e);
            }
        };
        let range = self.start..self.start + len;
        self.start += wire;
        Ok(Some(if stun {
            Frame::Stun(range)
        } else {
            Frame::ChannelData(range)
        }))
    }

    /// Puts `frame`, the frame [`Framer::next_frame`] returned last, back in front of
    /// the pending bytes (no other call in between), so that it is returned again: a
    /// connection handed to another owner keeps its first message.
    pub fn unread(&mut self, frame: &Frame) {
        let start = frame.range().start;
        if start <= self.start {
            self.start = start;
        }
    }

    /// The received bytes not returned as frames, as they are: once a stream stops
    /// being framed (a TURN data connection, RFC 6062), what follows the last frame.
    pub fn pending_bytes(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or_default()
    }

    /// Discards the first `n` of [`Framer::pending_bytes`] (at most all of them).
    pub fn consume(&mut self, n: usize) {
        self.start = self.start.saturating_add(n).min(self.end);
    }

    /// [`Framer::spare`] for a stream that is no longer framed: pending bytes move to
    /// the front whenever the free tail is gone or shorter than what was consumed, so
    /// the buffer works as a bounded queue of raw bytes. Empty only when full.
    pub fn raw_spare(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && self.buf.len() - self.end <= self.start {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        self.buf.get_mut(self.end..).unwrap_or_default()
    }

    /// Moves the pending bytes into a buffer of [`Framer::limit`] bytes.
    fn grow(&mut self) {
        let mut buf = vec![0; self.limit].into_boxed_slice();
        let pending = self.end - self.start;
        buf[..pending].copy_from_slice(&self.buf[self.start..self.end]);
        self.buf = buf;
        self.start = 0;
        self.end = pending;
    }

    /// Whether the pending bytes should move to the front: the frame in progress cannot
    /// complete in the free tail, or more than half the buffer is already consumed (then
    /// fewer bytes move than were consumed since the last move).
    fn should_compact(&self) -> bool {
        let pending = self.buf.get(self.start..self.end).unwrap_or_default();
        let need = match measure(pending, self.limit) {
            Ok(Measure::Partial { need }) => need,
            Ok(Measure::Known { wire, .. }) => wire,
            Err(_) => return false,
        };
        self.start >= self.buf.len() / 2 || self.start + need > self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::data::frame_channel_data;

    /// A STUN message (Binding request) with `body` bytes of (meaningless) attributes.
    fn stun(body: usize, fill: u8) -> Vec<u8> {
        let mut m = vec![0, 1];
        m.extend_from_slice(&(body as u16).to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        m.extend_from_slice(&[fill; 12]);
        m.extend(std::iter::repeat_n(fill, body));
        m
    }

    /// A padded ChannelData message with `len` payload bytes, built by the send path.
    fn channel_data(len: usize, fill: u8) -> Vec<u8> {
        let mut buf = vec![0xEE; 4 + len + 3];
        buf[4..4 + len].fill(fill);
        let r = frame_channel_data(&mut buf, 4..4 + len, 0x4001, true).unwrap();
        buf[r].to_vec()
    }

    /// Copies `bytes` into the framer in chunks of `chunk`, collecting every frame's
    /// kind and bytes; stops at the first error.
    fn feed(
        f: &mut Framer,
        bytes: &[u8],
        chunk: usize,
    ) -> (Vec<(bool, Vec<u8>)>, Option<FramingError>) {
        let mut out = Vec::new();
        for piece in bytes.chunks(chunk) {
            let mut piece = piece;
            while !piece.is_empty() {
                let spare = f.spare();
                let n = spare.len().min(piece.len());
                assert!(n > 0, "no spare space with complete frames pulled");
                spare[..n].copy_from_slice(&piece[..n]);
                f.filled(n);
                piece = &piece[n..];
                loop {
                    match f.next_frame() {
                        Ok(Some(frame)) => {
                            let stun = matches!(frame, Frame::Stun(_));
                            out.push((stun, f.buffer()[frame.range()].to_vec()));
                        }
                        Ok(None) => break,
                        Err(e) => return (out, Some(e)),
                    }
                }
            }
        }
        (out, None)
    }

    #[test]
    fn an_unread_frame_comes_back_and_raw_bytes_follow_it() {
        let msg = stun(8, 7);
        let raw = b"raw bytes, not a frame";
        let mut f = Framer::new(64);
        let both = [&msg[..], &raw[..]].concat();
        f.spare()[..both.len()].copy_from_slice(&both);
        f.filled(both.len());
        let frame = f.next_frame().unwrap().unwrap();
        f.unread(&frame);
        assert_eq!(f.next_frame().unwrap(), Some(frame));
        assert_eq!(f.pending_bytes(), raw);
        f.consume(4);
        assert_eq!(f.pending_bytes(), &raw[4..]);
        // The raw queue compacts once the tail is gone, and is empty only when full.
        let room = f.raw_spare().len();
        f.filled(room);
        assert!(f.raw_spare().is_empty());
        f.consume(1000);
        assert_eq!(f.raw_spare().len(), 64);
    }

    #[test]
    fn frame_split_byte_by_byte() {
        let msg = stun(8, 7);
        let mut f = Framer::new(MAX_STREAM_FRAME);
        let (frames, err) = feed(&mut f, &msg, 1);
        assert_eq!((frames, err), (vec![(true, msg)], None));
        assert_eq!(f.pending(), 0);

        let cd = channel_data(5, 9);
        let (frames, err) = feed(&mut f, &cd, 1);
        assert_eq!((frames, err), (vec![(false, cd[..9].to_vec())], None));
    }

    #[test]
    fn several_frames_in_one_read() {
        let (a, b, c) = (stun(0, 1), channel_data(5, 2), stun(12, 3));
        let stream = [a.clone(), b.clone(), c.clone()].concat();
        let mut f = Framer::new(1024);
        let (frames, err) = feed(&mut f, &stream, stream.len());
        assert_eq!(err, None);
        assert_eq!(frames, vec![(true, a), (false, b[..9].to_vec()), (true, c)]);
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn channel_data_padding_is_consumed_but_not_returned() {
        for len in 0..=4 {
            let cd = channel_data(len, 0xAB);
            assert_eq!(cd.len(), padded(4 + len));
            let next = stun(4, 5);
            let mut f = Framer::new(64);
            let (frames, err) = feed(&mut f, &[cd.clone(), next.clone()].concat(), 64);
            assert_eq!(err, None, "length {len}");
            assert_eq!(frames, vec![(false, cd[..4 + len].to_vec()), (true, next)]);
            // Without its padding the ChannelData message is not complete yet.
            let mut f = Framer::new(64);
            f.spare()[..4 + len].copy_from_slice(&cd[..4 + len]);
            f.filled(4 + len);
            let expect = usize::from(len % 4 == 0);
            assert_eq!(
                f.next_frame().unwrap().iter().count(),
                expect,
                "length {len}"
            );
        }
    }

    #[test]
    fn garbage_after_a_valid_frame() {
        let msg = stun(4, 1);
        let stream = [msg.clone(), vec![0xC0, 0, 0, 0]].concat();
        let mut f = Framer::new(256);
        let (frames, err) = feed(&mut f, &stream, stream.len());
        assert_eq!(frames, vec![(true, msg)]);
        assert_eq!(err, Some(FramingError::UnknownFrame));
        // The error is sticky.
        assert_eq!(f.next_frame(), Err(FramingError::UnknownFrame));
    }

    #[test]
    fn a_frame_that_cannot_fit_is_refused_at_once() {
        // ChannelData of length 65535 with 3 bytes behind it, 4096-byte buffer.
        let mut f = Framer::new(4096);
        let (frames, err) = feed(&mut f, &[0x40, 0x00, 0xFF, 0xFF, 1, 2, 3], 7);
        assert!(frames.is_empty());
        assert_eq!(err, Some(FramingError::TooLarge(65540, 4096)));
        // The same with a full-size buffer is a frame in progress, not an error.
        let mut f = Framer::new(MAX_STREAM_FRAME);
        let (frames, err) = feed(&mut f, &[0x40, 0x00, 0xFF, 0xFF, 1, 2, 3], 7);
        assert_eq!((frames.len(), err), (0, None));
        // A STUN length of 65535 is refused whatever the buffer.
        let mut f = Framer::new(MAX_STREAM_FRAME);
        let (_, err) = feed(&mut f, &[0x00, 0x01, 0xFF, 0xFF, 1, 2, 3], 7);
        assert_eq!(err, Some(FramingError::UnalignedLength(0xFFFF)));
        // The largest STUN message fits the default capacity.
        let mut f = Framer::new(MAX_STREAM_FRAME);
        let big = stun(65532, 4);
        assert_eq!(feed(&mut f, &big, 1500), (vec![(true, big)], None));
        // A STUN message one step over a small buffer, refused on its length field.
        let mut f = Framer::new(64);
        let (_, err) = feed(&mut f, &stun(48, 0)[..4], 4);
        assert_eq!(err, Some(FramingError::TooLarge(68, 64)));
    }

    #[test]
    fn the_buffer_grows_for_a_large_frame_and_shrinks_after() {
        let mut f = Framer::with_limit(256, MAX_STREAM_FRAME);
        let small = stun(8, 1);
        let big = channel_data(20_000, 2);
        let stream = [small.clone(), big.clone(), small.clone()].concat();
        let (frames, err) = feed(&mut f, &stream, 1000);
        assert_eq!(err, None);
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[1].1, big[..4 + 20_000]);
        assert_eq!(frames[2].1, small);
        let _ = f.spare();
        assert_eq!(f.capacity(), 256, "back to the initial size once drained");
        // Over the limit is still refused.
        let mut f = Framer::with_limit(256, 4096);
        let (_, err) = feed(&mut f, &channel_data(5000, 0)[..8], 8);
        assert_eq!(err, Some(FramingError::TooLarge(5004, 4096)));
    }

    #[test]
    fn missing_magic_cookie() {
        let mut msg = stun(4, 0);
        msg[4] ^= 1;
        let mut f = Framer::new(256);
        // Refused once the cookie's bytes are in, before the rest of the message.
        let (frames, err) = feed(&mut f, &msg[..8], 1);
        assert!(frames.is_empty());
        assert_eq!(err, Some(FramingError::NoMagicCookie));
    }

    #[test]
    fn bad_top_bits() {
        for first in [0x80u8, 0xC0, 0xFF, 0xBF] {
            let mut f = Framer::new(256);
            let (_, err) = feed(&mut f, &[first], 1);
            assert_eq!(err, Some(FramingError::UnknownFrame), "{first:#x}");
        }
    }

    #[test]
    fn small_buffer_compacts_through_many_frames() {
        let mut stream = Vec::new();
        let mut expect = Vec::new();
        for i in 0..10_000usize {
            let fill = i as u8;
            if i % 3 == 0 {
                let m = stun(4 * (i % 5), fill);
                expect.push((true, m.clone()));
                stream.extend(m);
            } else {
                let len = i % 7;
                let m = channel_data(len, fill);
                expect.push((false, m[..4 + len].to_vec()));
                stream.extend(m);
            }
        }
        // 64 bytes: the largest frame here (36) does not fit behind most read positions.
        for chunk in [1, 13, 64, 1000] {
            let mut f = Framer::new(64);
            let (frames, err) = feed(&mut f, &stream, chunk);
            assert_eq!(err, None, "chunk {chunk}");
            assert!(frames == expect, "chunk {chunk}");
            assert_eq!(f.pending(), 0);
        }
    }

    /// A fixed-seed xorshift64 generator: the same inputs on every run.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn pseudo_random_streams_never_panic_and_stay_in_bounds() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let (mut frames, mut errors) = (0, 0);
        for _ in 0..2_000 {
            // Mostly frame-shaped input with corruption, so the deeper paths are reached.
            let mut stream = Vec::new();
            for _ in 0..rng.below(8) {
                let mut piece = match rng.below(3) {
                    0 => stun(4 * rng.below(20), rng.next() as u8),
                    1 => channel_data(rng.below(80), rng.next() as u8),
                    _ => (0..rng.below(40)).map(|_| rng.next() as u8).collect(),
                };
                if !piece.is_empty() && rng.below(4) == 0 {
                    let at = rng.below(piece.len());
                    piece[at] = rng.next() as u8;
                }
                stream.extend(piece);
            }
            let mut f = Framer::new(rng.below(200));
            let mut rest = stream.as_slice();
            'stream: while !rest.is_empty() {
                let spare = f.spare();
                assert!(
                    !spare.is_empty(),
                    "no spare space with complete frames pulled"
                );
                let n = spare.len().min(rest.len()).min(1 + rng.below(64));
                spare[..n].copy_from_slice(&rest[..n]);
                // Sometimes claim more than was written: clamped, never past the buffer.
                f.filled(if rng.below(50) == 0 { usize::MAX } else { n });
                rest = &rest[n..];
                assert!(f.start <= f.end && f.end <= f.capacity());
                loop {
                    let before = f.start;
                    match f.next_frame() {
                        Ok(Some(frame)) => {
                            let r = frame.range();
                            assert!(before <= r.start && r.start < r.end && r.end <= f.end);
                            assert!(f.start <= f.end);
                            check_frame(&frame, &f.buffer()[r]);
                            frames += 1;
                        }
                        Ok(None) => break,
                        Err(_) => {
                            errors += 1;
                            break 'stream;
                        }
                    }
                }
            }
        }
        // The generator reaches both outcomes often, not just the first-byte check.
        assert!(
            frames > 1_000 && errors > 500,
            "{frames} frames, {errors} errors"
        );
    }

    /// A returned frame is what its header says it is.
    fn check_frame(frame: &Frame, bytes: &[u8]) {
        let len = be16(bytes, 2).map(usize::from);
        match frame {
            Frame::Stun(_) => {
                assert_eq!(be32(bytes, 4), Some(MAGIC_COOKIE));
                assert_eq!(len.map(|l| HEADER_LEN + l), Some(bytes.len()));
            }
            Frame::ChannelData(_) => {
                assert_eq!(bytes.first().map(|b| b >> 6), Some(1));
                assert_eq!(len.map(|l| CHANNEL_DATA_HEADER_LEN + l), Some(bytes.len()));
            }
        }
    }
}
