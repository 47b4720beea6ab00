//! The sans-IO streaming frame decoder.
//!
//! The I/O layer reads socket bytes straight into the decoder's buffer ([`Decoder::read_buf`]
//! then [`Decoder::commit`]), or hands over a buffer it already owns ([`Decoder::handle_owned`],
//! adopted without a copy when nothing is pending), or — in tests and simple drivers — copies a
//! slice in with [`Decoder::handle_bytes`]. [`Decoder::poll_frame`] then splits whole frames off
//! the front of the buffer: each frame is a `BytesMut` view of the same allocation, so the
//! payload is never copied on its way to the next hop.
//!
//! The header is validated as soon as its 48 bytes are in, before any room is made for the
//! body: a peer announcing a 4 GiB body gets `BodyTooLong`, not an allocation. After an error
//! the decoder is poisoned and returns the same error forever; the session closes.
//!
//! Memory held by one decoder is bounded by `max_frame_len + read_chunk_len`.
//!
//! Fresh buffers come from a [`BufferSource`]: the heap ([`HeapBuffers`], the default) or a
//! core's [`BufPool`](crate::pool::BufPool), which recycles read chunks once every frame split
//! off them has been dropped.

use bytes::BytesMut;

use crate::pool::{BufferSource, HeapBuffers};

use crate::error::DecodeError;
use crate::frame::Frame;
use crate::header::{HEADER_LEN, Header};
use crate::kind::{Flags, FrameKind};
use crate::limits::Limits;

/// Default number of bytes [`Decoder::read_buf`] allocates when it needs room.
pub const DEFAULT_READ_CHUNK_LEN: usize = 64 << 10;
/// Below this much room, [`Decoder::read_buf`] makes a fresh read chunk.
pub const MIN_READ_ROOM: usize = 4 << 10;

/// Streaming decoder for one session's inbound byte stream.
#[derive(Debug)]
pub struct Decoder<S: BufferSource = HeapBuffers> {
    limits: Limits,
    /// `buf[..filled]` holds received bytes; `buf[filled..]` is zeroed room to read into.
    buf: BytesMut,
    filled: usize,
    /// Where fresh buffers come from and retired ones go.
    source: S,
    /// The capacity `buf` was taken from `source` with (0: not from the source).
    buf_capacity: usize,
    read_chunk_len: usize,
    /// The validated header at the front of `buf`, once its 48 bytes arrived.
    pending: Option<Pending>,
    poisoned: Option<DecodeError>,
    frames_decoded: u64,
    bytes_decoded: u64,
    bytes_relocated: u64,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    frame_len: usize,
    kind: FrameKind,
    flags: Flags,
}

impl Decoder<HeapBuffers> {
    /// A decoder enforcing `limits`, offering reads of [`DEFAULT_READ_CHUNK_LEN`], with buffers
    /// from the heap.
    pub fn new(limits: Limits) -> Self {
        Self::with_read_chunk_len(limits, DEFAULT_READ_CHUNK_LEN)
    }

    /// A decoder that makes fresh buffers of `read_chunk_len` bytes (at least one header's
    /// worth) when the room runs low.
    pub fn with_read_chunk_len(limits: Limits, read_chunk_len: usize) -> Self {
        Decoder::with_source(limits, read_chunk_len, HeapBuffers)
    }
}

impl<S: BufferSource> Decoder<S> {
    /// A decoder that takes its buffers of `read_chunk_len` bytes from `source`.
    pub fn with_source(limits: Limits, read_chunk_len: usize, source: S) -> Self {
        Self {
            limits,
            buf: BytesMut::new(),
            filled: 0,
            source,
            buf_capacity: 0,
            read_chunk_len: read_chunk_len.max(HEADER_LEN),
            pending: None,
            poisoned: None,
            frames_decoded: 0,
            bytes_decoded: 0,
            bytes_relocated: 0,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Replaces the limits (after HELLO negotiated smaller ones). Applies from the next header.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Changes how much room a fresh read chunk gets (at least one header). Larger chunks mean
    /// fewer relocations of partly received large frames, at the price of memory per session:
    /// a node raises it for established peer links and keeps it small for connections still
    /// handshaking.
    pub fn set_read_chunk_len(&mut self, read_chunk_len: usize) {
        self.read_chunk_len = read_chunk_len.max(HEADER_LEN);
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered_len(&self) -> usize {
        self.filled
    }

    /// Frames returned so far.
    pub fn frames_decoded(&self) -> u64 {
        self.frames_decoded
    }

    /// Bytes of frames returned so far.
    pub fn bytes_decoded(&self) -> u64 {
        self.bytes_decoded
    }

    /// Received bytes the decoder had to copy because its buffer moved (a partly received frame
    /// carried into a new allocation when the room ran out). The only copy of received bytes the
    /// decoder makes; zero-copy forwarding keeps it a small fraction of `bytes_decoded`.
    pub fn bytes_relocated(&self) -> u64 {
        self.bytes_relocated
    }

    /// Room to read socket bytes into: what the pending frame still needs, and otherwise
    /// whatever room is left as long as it is at least [`MIN_READ_ROOM`]; below that, a fresh
    /// read chunk. Growing only when the room runs low keeps relocation copies (see
    /// [`Decoder::bytes_relocated`]) to about one partial frame per read chunk. Follow with
    /// [`Decoder::commit`].
    pub fn read_buf(&mut self) -> &mut [u8] {
        let pending_need = self
            .pending
            .map_or(0, |p| p.frame_len.saturating_sub(self.filled));
        let min = pending_need.max(MIN_READ_ROOM.min(self.read_chunk_len));
        self.ensure_room(min);
        &mut self.buf[self.filled..]
    }

    /// Records that `n` bytes were written at the start of the last [`Decoder::read_buf`].
    ///
    /// # Panics
    /// If `n` exceeds the room `read_buf` offered (a bug in the driver, not bad input).
    pub fn commit(&mut self, n: usize) {
        assert!(
            self.filled + n <= self.buf.len(),
            "commit({n}) beyond the read buffer"
        );
        self.filled += n;
    }

    /// Copies `bytes` in (for drivers that read into their own buffers, and tests).
    pub fn handle_bytes(&mut self, bytes: &[u8]) {
        self.ensure_room(bytes.len());
        self.buf[self.filled..self.filled + bytes.len()].copy_from_slice(bytes);
        self.filled += bytes.len();
    }

    /// Hands over a buffer of received bytes. When nothing is buffered the buffer is adopted as
    /// is (no copy); otherwise its bytes are appended.
    pub fn handle_owned(&mut self, bytes: BytesMut) {
        if self.filled == 0 {
            self.filled = bytes.len();
            let old = std::mem::replace(&mut self.buf, bytes);
            self.source.give(old, self.buf_capacity);
            self.buf_capacity = 0;
        } else {
            self.handle_bytes(&bytes);
        }
    }

    /// Makes sure at least `min` zeroed bytes follow the filled part of the buffer. When it has
    /// to grow, the buffer becomes `max(filled + min, read_chunk_len)` bytes: the same
    /// allocation if no frame split off it is still alive, otherwise a fresh one from the source
    /// (the received bytes are carried over, and the old buffer is retired to the source).
    fn ensure_room(&mut self, min: usize) {
        if self.buf.len() - self.filled >= min {
            return;
        }
        // Drop the zeroed tail first so only received bytes are carried.
        self.buf.truncate(self.filled);
        let want = (self.filled + min).max(self.read_chunk_len);
        let before = self.buf.as_ptr();
        if self.buf_capacity < want || !self.buf.try_reclaim(want - self.filled) {
            let mut fresh = self.source.take(want);
            fresh.extend_from_slice(&self.buf);
            let old = std::mem::replace(&mut self.buf, fresh);
            self.source.give(old, self.buf_capacity);
            self.buf_capacity = want;
        }
        if self.filled > 0 && self.buf.as_ptr() != before {
            self.bytes_relocated += self.filled as u64;
        }
        self.buf.resize(want, 0);
    }

    /// The buffer source (for its counters).
    pub fn source(&self) -> &S {
        &self.source
    }

    /// The next complete frame, if the buffer holds one.
    ///
    /// `Ok(None)`: more bytes are needed. `Err`: the stream is not valid mesh framing; the
    /// decoder is poisoned and the session must close with [`DecodeError::close_reason`].
    pub fn poll_frame(&mut self) -> Result<Option<Frame<BytesMut>>, DecodeError> {
        if let Some(e) = &self.poisoned {
            return Err(e.clone());
        }
        let pending = if let Some(p) = self.pending {
            p
        } else {
            if self.filled < HEADER_LEN {
                return Ok(None);
            }
            let header = Header::ref_from_buf(&self.buf[..HEADER_LEN])
                .unwrap_or_else(|| unreachable!("48 bytes are present"));
            match header.validate(&self.limits) {
                Ok((kind, flags)) => {
                    let p = Pending {
                        frame_len: header.frame_len(),
                        kind,
                        flags,
                    };
                    self.pending = Some(p);
                    p
                }
                Err(e) => {
                    self.poisoned = Some(e.clone());
                    return Err(e);
                }
            }
        };
        if self.filled < pending.frame_len {
            return Ok(None);
        }
        let frame = self.buf.split_to(pending.frame_len);
        self.filled -= pending.frame_len;
        self.pending = None;
        self.frames_decoded += 1;
        self.bytes_decoded += pending.frame_len as u64;
        Ok(Some(Frame::from_validated(
            frame,
            pending.kind,
            pending.flags,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::encode_frame;
    use crate::frame::Envelope;
    use bytes::Bytes;

    fn data_frame(msg_id: u64, payload: &[u8]) -> Vec<u8> {
        let mut env = Envelope::new(FrameKind::Data);
        env.msg_id = msg_id;
        encode_frame(
            &env,
            &[],
            Bytes::copy_from_slice(payload),
            &Limits::default(),
        )
        .unwrap()
        .to_vec()
    }

    #[test]
    fn byte_at_a_time() {
        let bytes = data_frame(5, b"hello world");
        let mut d = Decoder::new(Limits::default());
        for (i, b) in bytes.iter().enumerate() {
            assert!(d.poll_frame().unwrap().is_none(), "frame early at {i}");
            d.handle_bytes(&[*b]);
        }
        let f = d.poll_frame().unwrap().unwrap();
        assert_eq!(f.payload(), b"hello world");
        assert_eq!(f.envelope().msg_id, 5);
        assert!(d.poll_frame().unwrap().is_none());
        assert_eq!(d.buffered_len(), 0);
    }

    #[test]
    fn read_buf_and_commit_then_frames_share_the_allocation() {
        let mut all = data_frame(1, &[1; 100]);
        all.extend(data_frame(2, &[2; 200]));
        let mut d = Decoder::new(Limits::default());
        let room = d.read_buf();
        room[..all.len()].copy_from_slice(&all);
        let base = room.as_ptr();
        d.commit(all.len());
        let a = d.poll_frame().unwrap().unwrap();
        let b = d.poll_frame().unwrap().unwrap();
        assert_eq!(a.payload(), &[1; 100][..]);
        assert_eq!(b.payload(), &[2; 200][..]);
        assert_eq!(a.as_bytes().as_ptr(), base);
        assert_eq!(b.as_bytes().as_ptr(), base.wrapping_add(a.len()));
        assert_eq!(d.bytes_relocated(), 0);
    }

    #[test]
    fn a_pooled_decoder_recycles_its_read_chunks_once_frames_are_dropped() {
        use crate::pool::{BufPool, BufPoolConfig};
        let chunk = 16 << 10;
        let pool = BufPool::shared(BufPoolConfig {
            classes: vec![chunk],
            max_retained_bytes: 1 << 20,
            scan: 8,
        });
        let mut d = Decoder::with_source(Limits::default(), chunk, pool.clone());
        let frame = data_frame(9, &[9; 1000]);
        // Frames queued for the next hop: the last 8 are still alive when a chunk runs out.
        let mut in_flight = std::collections::VecDeque::new();
        for i in 0..200 {
            let room = d.read_buf();
            let n = frame.len().min(room.len());
            room[..n].copy_from_slice(&frame[..n]);
            d.commit(n);
            if n < frame.len() {
                let room = d.read_buf();
                room[..frame.len() - n].copy_from_slice(&frame[n..]);
                d.commit(frame.len() - n);
            }
            let f = d.poll_frame().unwrap().unwrap();
            assert_eq!(f.payload(), &[9; 1000][..], "frame {i}");
            in_flight.push_back(f);
            if in_flight.len() > 8 {
                // Written to the next hop: the view is dropped.
                in_flight.pop_front();
            }
        }
        let s = pool.stats();
        // 200 frames of ~1 KiB through 16 KiB chunks (a fresh one below 4 KiB of room) need
        // ~17 chunks; 8 frames in flight span at most two, so two or three are allocated and
        // every later one is reused.
        assert!(s.reused + s.allocated >= 15, "{s:?}");
        assert!(s.allocated <= 3, "{s:?}");
        assert_eq!(s.unpooled, 0);
    }

    #[test]
    fn a_pooled_buffer_is_not_reused_while_a_frame_views_it() {
        use crate::pool::{BufPool, BufPoolConfig};
        let chunk = 4096;
        let pool = BufPool::shared(BufPoolConfig {
            classes: vec![chunk],
            max_retained_bytes: 1 << 20,
            scan: 8,
        });
        let mut d = Decoder::with_source(Limits::default(), chunk, pool.clone());
        let mut held = Vec::new();
        for i in 0..40u8 {
            d.handle_bytes(&data_frame(u64::from(i), &[i; 900]));
            held.push(d.poll_frame().unwrap().unwrap());
        }
        // Every frame still holds its bytes although the decoder went through many chunks.
        for (i, f) in held.iter().enumerate() {
            assert!(
                f.payload().iter().all(|&b| usize::from(b) == i),
                "frame {i}"
            );
        }
        assert_eq!(pool.stats().reused, 0);
    }

    #[test]
    fn owned_buffer_is_adopted() {
        let bytes = BytesMut::from(&data_frame(3, b"zero copy")[..]);
        let ptr = bytes.as_ptr();
        let mut d = Decoder::new(Limits::default());
        d.handle_owned(bytes);
        let f = d.poll_frame().unwrap().unwrap();
        assert_eq!(f.as_bytes().as_ptr(), ptr);
    }

    #[test]
    fn oversize_body_is_refused_before_room_is_made() {
        let mut h = Header::new(FrameKind::Data);
        h.body_len.set(u32::MAX);
        let mut d = Decoder::new(Limits::default());
        d.handle_bytes(zerocopy::IntoBytes::as_bytes(&h));
        let e = d.poll_frame().unwrap_err();
        assert!(matches!(e, DecodeError::BodyTooLong { .. }));
        assert!(d.read_buf().len() <= DEFAULT_READ_CHUNK_LEN);
        // Poisoned: the same error again.
        assert_eq!(d.poll_frame().unwrap_err(), e);
    }

    #[test]
    fn read_buf_grows_for_a_large_pending_frame() {
        let bytes = data_frame(9, &vec![7u8; 200_000]);
        let mut d = Decoder::new(Limits::default());
        d.handle_bytes(&bytes[..HEADER_LEN]);
        assert!(d.poll_frame().unwrap().is_none());
        let room = d.read_buf();
        assert!(room.len() >= bytes.len() - HEADER_LEN);
        room[..bytes.len() - HEADER_LEN].copy_from_slice(&bytes[HEADER_LEN..]);
        d.commit(bytes.len() - HEADER_LEN);
        assert_eq!(d.poll_frame().unwrap().unwrap().payload().len(), 200_000);
        // Growing for the body moves at most the 48 header bytes (a realloc may grow in place).
        assert!(d.bytes_relocated() <= HEADER_LEN as u64);
    }
}
