//! The zstd window limit: every frame header of a `zstd` request body is read
//! before the decoder sees the frame, and a window over the limit is refused.
//!
//! libzstd reserves the window a frame asks for (up to 128 MiB by default)
//! before it decodes one byte, so the decoded-bytes limit cannot bound it.
//! tower-http's decoder has no window setting; this walker reads the frame
//! structure (headers, block headers, skippable frames) as the bytes stream
//! past, without decoding or buffering more than one frame header (at most
//! 14 bytes). RFC 9659 caps the window of `zstd` in HTTP at 8 MiB.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::{BodyError, InputRefusal};
use crate::error::BoxError;

/// The default largest zstd window: 8 MiB, the limit RFC 9659 sets for
/// `zstd` as an HTTP content coding.
pub const DEFAULT_MAX_ZSTD_WINDOW: u64 = 8 * 1024 * 1024;

const ZSTD_MAGIC: u32 = 0xFD2F_B528;
/// Skippable frames use the sixteen magic numbers `0x184D2A50..=0x184D2A5F`.
const SKIPPABLE_MAGIC_MASK: u32 = 0xFFFF_FFF0;
const SKIPPABLE_MAGIC: u32 = 0x184D_2A50;

/// Why a zstd body's frame structure was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// A frame asks for a window larger than the limit.
    WindowTooLarge { window: u64 },
    /// Not a zstd frame, or a header with a reserved bit or block type set.
    Malformed,
}

/// What the walker expects next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Four bytes: a frame's magic number.
    Magic,
    /// Four bytes: a skippable frame's size.
    SkippableSize,
    /// One byte: the Frame_Header_Descriptor.
    Descriptor,
    /// The rest of the frame header, `len` bytes, after `descriptor`.
    Header { descriptor: u8, len: usize },
    /// Three bytes: a block header.
    Block { checksum: bool },
    /// Bytes passed over unread, then `then`.
    Skip { remaining: u64, then: After },
}

/// Where the walker goes after skipped bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    Magic,
    Block { checksum: bool },
    Checksum,
}

/// Walks the frames of a zstd stream, fed in pieces of any size.
#[derive(Debug, Clone)]
pub(crate) struct FrameWalker {
    max_window: u64,
    state: State,
    buf: [u8; 14],
    filled: usize,
}

impl FrameWalker {
    pub(crate) fn new(max_window: u64) -> Self {
        Self {
            max_window,
            state: State::Magic,
            buf: [0; 14],
            filled: 0,
        }
    }

    /// Feeds the next bytes of the stream.
    pub(crate) fn feed(&mut self, mut data: &[u8]) -> Result<(), FrameError> {
        while !data.is_empty() {
            if let State::Skip { remaining, then } = self.state {
                let taken = remaining.min(data.len() as u64);
                data = &data[taken as usize..];
                self.skip(remaining - taken, then);
                continue;
            }
            let need = match self.state {
                State::Magic | State::SkippableSize => 4,
                State::Descriptor => 1,
                State::Header { len, .. } => len,
                State::Block { .. } => 3,
                State::Skip { .. } => unreachable!("handled above"),
            };
            let taken = (need - self.filled).min(data.len());
            self.buf[self.filled..self.filled + taken].copy_from_slice(&data[..taken]);
            self.filled += taken;
            data = &data[taken..];
            if self.filled == need {
                self.filled = 0;
                self.read_field(need)?;
            }
        }
        Ok(())
    }

    /// Whether the stream may end here: between frames.
    #[cfg(test)]
    fn at_frame_boundary(&self) -> bool {
        self.state == State::Magic && self.filled == 0
    }

    fn skip(&mut self, remaining: u64, then: After) {
        self.state = if remaining > 0 {
            State::Skip { remaining, then }
        } else {
            match then {
                After::Magic => State::Magic,
                After::Block { checksum } => State::Block { checksum },
                After::Checksum => State::Skip {
                    remaining: 4,
                    then: After::Magic,
                },
            }
        };
    }

    fn read_field(&mut self, len: usize) -> Result<(), FrameError> {
        let field = &self.buf[..len];
        match self.state {
            State::Magic => {
                let magic = u32::from_le_bytes([field[0], field[1], field[2], field[3]]);
                self.state = if magic == ZSTD_MAGIC {
                    State::Descriptor
                } else if magic & SKIPPABLE_MAGIC_MASK == SKIPPABLE_MAGIC {
                    State::SkippableSize
                } else {
                    return Err(FrameError::Malformed);
                };
            }
            State::SkippableSize => {
                let size = u32::from_le_bytes([field[0], field[1], field[2], field[3]]);
                self.skip(u64::from(size), After::Magic);
            }
            State::Descriptor => {
                let descriptor = field[0];
                // Bit 3 is reserved and must be zero (RFC 8878, 3.1.1.1.1.6).
                if descriptor & 0b1000 != 0 {
                    return Err(FrameError::Malformed);
                }
                let single_segment = descriptor & 0b10_0000 != 0;
                let window_descriptor = usize::from(!single_segment);
                let dictionary_id = [0, 1, 2, 4][usize::from(descriptor & 0b11)];
                let content_size = match descriptor >> 6 {
                    0 => usize::from(single_segment),
                    1 => 2,
                    2 => 4,
                    _ => 8,
                };
                self.state = State::Header {
                    descriptor,
                    len: window_descriptor + dictionary_id + content_size,
                };
            }
            State::Header { descriptor, .. } => {
                let window = window_size(descriptor, field);
                if window > self.max_window {
                    return Err(FrameError::WindowTooLarge { window });
                }
                self.state = State::Block {
                    checksum: descriptor & 0b100 != 0,
                };
            }
            State::Block { checksum } => {
                let header = u32::from_le_bytes([field[0], field[1], field[2], 0]);
                let last = header & 1 != 0;
                let size = u64::from(header >> 3);
                let skipped = match (header >> 1) & 0b11 {
                    0 | 2 => size, // raw, compressed: the block's bytes
                    1 => 1,        // RLE: one byte, repeated `size` times
                    _ => return Err(FrameError::Malformed),
                };
                let then = match (last, checksum) {
                    (false, _) => After::Block { checksum },
                    (true, true) => After::Checksum,
                    (true, false) => After::Magic,
                };
                self.skip(skipped, then);
            }
            State::Skip { .. } => unreachable!("skipped bytes are not read"),
        }
        Ok(())
    }
}

/// The window a frame header asks for (RFC 8878, 3.1.1.1.2): the
/// Window_Descriptor's, or for a single-segment frame its content size.
fn window_size(descriptor: u8, rest: &[u8]) -> u64 {
    let single_segment = descriptor & 0b10_0000 != 0;
    if !single_segment {
        let window_descriptor = rest[0];
        let log = 10 + u32::from(window_descriptor >> 3);
        let base = 1u64 << log;
        return base + (base / 8) * u64::from(window_descriptor & 0b111);
    }
    let dictionary_id = [0, 1, 2, 4][usize::from(descriptor & 0b11)];
    let size = &rest[dictionary_id..];
    let mut value = [0u8; 8];
    value[..size.len()].copy_from_slice(size);
    let value = u64::from_le_bytes(value);
    // A two-byte content size is stored minus 256.
    if size.len() == 2 {
        value + 256
    } else {
        value
    }
}

pin_project! {
    /// A request body whose zstd frame headers are checked as they stream
    /// past, before tower-http's decoder reads them; any other body passes
    /// through (only its data type changes, to `Bytes`).
    pub struct ZstdWindowBody<B> {
        #[pin]
        inner: B,
        walker: Option<FrameWalker>,
        failed: bool,
    }
}

impl<B> ZstdWindowBody<B> {
    /// Checks the body's zstd frames against `max_window`.
    pub(crate) fn zstd(inner: B, max_window: u64) -> Self {
        Self {
            inner,
            walker: Some(FrameWalker::new(max_window)),
            failed: false,
        }
    }

    /// Passes the body through.
    pub(crate) fn unchecked(inner: B) -> Self {
        Self {
            inner,
            walker: None,
            failed: false,
        }
    }
}

impl<B> std::fmt::Debug for ZstdWindowBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZstdWindowBody")
            .field("checked", &self.walker.is_some())
            .finish_non_exhaustive()
    }
}

impl<B> Body for ZstdWindowBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        let frame = match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        let frame = frame.map_data(|mut data| data.copy_to_bytes(data.remaining()));
        if let (Some(walker), Some(data)) = (this.walker.as_mut(), frame.data_ref()) {
            if let Err(error) = walker.feed(data) {
                *this.failed = true;
                let refusal = match error {
                    FrameError::WindowTooLarge { window } => InputRefusal::ZstdWindowTooLarge {
                        limit: walker.max_window,
                        observed: window,
                    },
                    FrameError::Malformed => InputRefusal::MalformedBody,
                };
                return Poll::Ready(Some(Err(Box::new(BodyError::Refused(refusal)))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A frame header with a Window_Descriptor for `log` (mantissa 0), no
    /// checksum, then one raw last block of `payload`.
    fn frame(log: u8, payload: &[u8]) -> Vec<u8> {
        let mut bytes = ZSTD_MAGIC.to_le_bytes().to_vec();
        bytes.push(0b0000_0000); // no content size, not single segment
        bytes.push((log - 10) << 3);
        let block = ((payload.len() as u32) << 3) | 1; // raw, last
        bytes.extend_from_slice(&block.to_le_bytes()[..3]);
        bytes.extend_from_slice(payload);
        bytes
    }

    fn skippable(payload: &[u8]) -> Vec<u8> {
        let mut bytes = (SKIPPABLE_MAGIC | 7).to_le_bytes().to_vec();
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn the_window_descriptor_is_read() {
        // 2^23 = 8 MiB is allowed; 2^23 + 1/8 is over.
        assert_eq!(window_size(0, &[13 << 3]), 8 * 1024 * 1024);
        assert_eq!(window_size(0, &[(13 << 3) | 1]), 9 * 1024 * 1024);
        // Single segment, one-byte content size.
        assert_eq!(window_size(0b0010_0000, &[200]), 200);
        // Single segment, two-byte content size (stored minus 256).
        assert_eq!(window_size(0b0110_0000, &[0, 1]), 512);
    }

    #[test]
    fn frames_and_skippable_frames_are_walked_to_the_next_header() {
        let mut stream = skippable(b"metadata");
        stream.extend(frame(20, b"hello"));
        stream.extend(frame(23, b""));
        stream.extend(skippable(b""));
        let mut walker = FrameWalker::new(DEFAULT_MAX_ZSTD_WINDOW);
        assert_eq!(walker.feed(&stream), Ok(()));
        assert!(walker.at_frame_boundary());
        // A second frame with a larger window is found past the first.
        let mut stream = frame(20, b"hello");
        stream.extend(frame(24, b"x"));
        let mut walker = FrameWalker::new(DEFAULT_MAX_ZSTD_WINDOW);
        assert_eq!(
            walker.feed(&stream),
            Err(FrameError::WindowTooLarge {
                window: 16 * 1024 * 1024
            })
        );
    }

    #[test]
    fn bad_magic_reserved_bits_and_block_types_are_malformed() {
        let mut walker = FrameWalker::new(DEFAULT_MAX_ZSTD_WINDOW);
        assert_eq!(walker.feed(b"GET / HTTP/1.1"), Err(FrameError::Malformed));
        let mut reserved = ZSTD_MAGIC.to_le_bytes().to_vec();
        reserved.push(0b1000);
        let mut walker = FrameWalker::new(DEFAULT_MAX_ZSTD_WINDOW);
        assert_eq!(walker.feed(&reserved), Err(FrameError::Malformed));
        let mut block = frame(20, b"");
        let at = block.len() - 3;
        block[at] = 0b111; // reserved block type, last
        let mut walker = FrameWalker::new(DEFAULT_MAX_ZSTD_WINDOW);
        assert_eq!(walker.feed(&block), Err(FrameError::Malformed));
    }

    proptest! {
        /// However the stream is cut into pieces, the walker reaches the
        /// same verdict as when fed whole, and never panics on any bytes.
        #[test]
        fn splitting_does_not_change_the_verdict(
            logs in proptest::collection::vec(10u8..30, 1..4),
            cuts in proptest::collection::vec(0usize..64, 0..8),
            noise in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut stream = Vec::new();
            for log in &logs {
                stream.extend(skippable(&[*log; 3]));
                stream.extend(frame(*log, b"abc"));
            }
            let whole = FrameWalker::new(DEFAULT_MAX_ZSTD_WINDOW).feed(&stream);
            let expected = logs.iter().find(|&&log| log > 23).map(|&log| {
                FrameError::WindowTooLarge { window: 1 << log }
            });
            prop_assert_eq!(whole.err(), expected);
            let mut walker = FrameWalker::new(DEFAULT_MAX_ZSTD_WINDOW);
            let mut rest = &stream[..];
            let mut verdict = Ok(());
            for cut in cuts {
                let (piece, tail) = rest.split_at(cut.min(rest.len()));
                rest = tail;
                verdict = verdict.and_then(|()| walker.feed(piece));
            }
            verdict = verdict.and_then(|()| walker.feed(rest));
            prop_assert_eq!(verdict, whole);
            // Arbitrary bytes: a verdict, never a panic.
            let _ = FrameWalker::new(DEFAULT_MAX_ZSTD_WINDOW).feed(&noise);
        }
    }
}
