//! Splitting a message larger than one frame into chunks.
//!
//! Chunk 0 carries the metadata (with `message_len` set to the message's total length) and as
//! much payload as fits; every further chunk carries only payload. All chunks share the
//! message's `msg_id`, carry `CHUNK`, and the last one `LAST_CHUNK`; `chunk_index` numbers
//! them from 0, so a message has at most 65,536 chunks. Chunk payloads are `Bytes` slices of
//! the message: splitting copies nothing. A message that fits in one frame is sent unchunked.

use bytes::Bytes;

use crate::encode::OutFrame;
use crate::error::{ChunkError, EncodeError};
use crate::frame::Envelope;
use crate::header::HEADER_LEN;
use crate::kind::Flags;
use crate::limits::Limits;
use crate::meta::{MetaLimits, Metadata};

/// Most chunks one message may have (`chunk_index` is a `u16`).
pub const MAX_CHUNKS: usize = 1 << 16;

/// An iterator over the frames of one message, in chunk order.
#[derive(Debug, Clone)]
pub struct Chunks {
    env: Envelope,
    meta: Bytes,
    payload: Bytes,
    /// Payload bytes in chunk 0 (after the metadata) and in every later chunk.
    first_room: usize,
    room: usize,
    count: usize,
    next: usize,
    offset: usize,
}

/// Splits a message into frames under `limits`.
///
/// Errors: `EncodeError::Meta` when the metadata does not encode within `meta_limits`,
/// `FrameTooLarge` when the metadata alone does not leave room for payload in one frame, and
/// `TooManyChunks` (as [`ChunkError`] inside [`ChunkMessageError`]) when the message needs more
/// than [`MAX_CHUNKS`] frames.
pub fn chunk_message(
    env: &Envelope,
    meta: &Metadata,
    meta_limits: &MetaLimits,
    payload: Bytes,
    limits: &Limits,
) -> Result<Chunks, ChunkMessageError> {
    let max_body = limits.max_body_len() as usize;
    let single_meta = meta.encode(meta_limits).map_err(EncodeError::from)?;
    let mut env = env.with_chunk_flags_cleared();
    if single_meta.len() + payload.len() <= max_body {
        env.flags = env.flags.without(Flags::CHUNK);
        return Ok(Chunks {
            env,
            meta: Bytes::from(single_meta),
            first_room: payload.len(),
            room: max_body,
            count: 1,
            next: 0,
            offset: 0,
            payload,
        });
    }
    let mut chunked_meta = meta.clone();
    chunked_meta.message_len = Some(payload.len() as u64);
    let meta_bytes = chunked_meta
        .encode(meta_limits)
        .map_err(EncodeError::from)?;
    if meta_bytes.len() >= max_body {
        return Err(EncodeError::FrameTooLarge {
            frame_len: HEADER_LEN + meta_bytes.len() + 1,
            max_frame_len: limits.max_frame_len,
        }
        .into());
    }
    let first_room = max_body - meta_bytes.len();
    let count = 1 + (payload.len() - first_room).div_ceil(max_body);
    if count > MAX_CHUNKS {
        return Err(ChunkError::TooManyChunks {
            len: payload.len(),
            chunks: count,
            max: MAX_CHUNKS,
        }
        .into());
    }
    env.flags = env.flags.with(Flags::CHUNK);
    Ok(Chunks {
        env,
        meta: Bytes::from(meta_bytes),
        payload,
        first_room,
        room: max_body,
        count,
        next: 0,
        offset: 0,
    })
}

/// Why [`chunk_message`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkMessageError {
    /// A frame could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The message cannot be chunked.
    #[error(transparent)]
    Chunk(#[from] ChunkError),
}

impl Envelope {
    fn with_chunk_flags_cleared(&self) -> Envelope {
        let mut e = *self;
        e.flags = e
            .flags
            .without(Flags::CHUNK | Flags::LAST_CHUNK | Flags::HAS_META);
        e.chunk_index = 0;
        e
    }
}

impl Chunks {
    /// Number of frames the message takes.
    pub fn frame_count(&self) -> usize {
        self.count
    }

    /// Whether the message is split (more than one frame).
    pub fn is_chunked(&self) -> bool {
        self.env.flags.contains(Flags::CHUNK)
    }
}

impl Iterator for Chunks {
    type Item = OutFrame;

    fn next(&mut self) -> Option<OutFrame> {
        if self.next >= self.count {
            return None;
        }
        let index = self.next;
        let (meta, room) = if index == 0 {
            (self.meta.clone(), self.first_room)
        } else {
            (Bytes::new(), self.room)
        };
        let end = (self.offset + room).min(self.payload.len());
        let part = self.payload.slice(self.offset..end);
        self.offset = end;
        self.next += 1;
        let mut env = self.env;
        // index < MAX_CHUNKS = 2^16, checked when the iterator was made.
        env.chunk_index = u16::try_from(index).unwrap_or(u16::MAX);
        if !meta.is_empty() {
            env.flags = env.flags.with(Flags::HAS_META);
        }
        if self.is_chunked() && index + 1 == self.count {
            env.flags = env.flags.with(Flags::LAST_CHUNK);
        }
        // Lengths are bounded by max_body_len (<= 16 MiB) and meta by max_meta_len.
        let body_len = u32::try_from(meta.len() + part.len()).unwrap_or(u32::MAX);
        let meta_len = u16::try_from(meta.len()).unwrap_or(u16::MAX);
        Some(OutFrame::from_parts(
            env.to_header(body_len, meta_len),
            meta,
            part,
        ))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.count - self.next;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Chunks {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Frame;
    use crate::kind::FrameKind;
    use crate::limits::MIN_FRAME_LEN;

    fn small_limits() -> Limits {
        Limits::new(MIN_FRAME_LEN, 1024).unwrap()
    }

    #[test]
    fn small_message_is_one_unchunked_frame() {
        let c = chunk_message(
            &Envelope::new(FrameKind::Data),
            &Metadata::default(),
            &MetaLimits::default(),
            Bytes::from_static(b"small"),
            &small_limits(),
        )
        .unwrap();
        assert_eq!(c.frame_count(), 1);
        let frames: Vec<_> = c.collect();
        assert_eq!(frames[0].header().flags.get() & Flags::CHUNK.bits(), 0);
        assert_eq!(&frames[0].payload()[..], b"small");
    }

    #[test]
    fn large_message_is_split_with_flags_and_indices() {
        let l = small_limits();
        let payload: Bytes = (0..20_000u32)
            .map(|i| i.to_le_bytes()[0])
            .collect::<Vec<_>>()
            .into();
        let meta = Metadata {
            corr_id: Some(0xC),
            ..Metadata::default()
        };
        let c = chunk_message(
            &Envelope::new(FrameKind::Data),
            &meta,
            &MetaLimits::default(),
            payload.clone(),
            &l,
        )
        .unwrap();
        let n = c.frame_count();
        assert!(n >= 5);
        let mut rebuilt = Vec::new();
        for (i, f) in c.enumerate() {
            let bytes = f.to_vec();
            let parsed = Frame::new_checked(&bytes[..], &l).expect("chunk is a valid frame");
            assert!(parsed.flags().contains(Flags::CHUNK));
            assert_eq!(parsed.flags().contains(Flags::LAST_CHUNK), i + 1 == n);
            assert_eq!(usize::from(parsed.header().chunk_index.get()), i);
            if i == 0 {
                let m = parsed.meta(&MetaLimits::default()).unwrap();
                assert_eq!(m.message_len, Some(20_000));
                assert_eq!(m.corr_id, Some(0xC));
            } else {
                assert!(parsed.meta_bytes().is_empty());
            }
            rebuilt.extend_from_slice(parsed.payload());
        }
        assert_eq!(rebuilt, payload);
    }

    #[test]
    fn too_many_chunks_is_refused() {
        let l = small_limits();
        let payload = Bytes::from(vec![0u8; (l.max_body_len() as usize) * (MAX_CHUNKS + 1)]);
        assert!(matches!(
            chunk_message(
                &Envelope::new(FrameKind::Data),
                &Metadata::default(),
                &MetaLimits::default(),
                payload,
                &l
            ),
            Err(ChunkMessageError::Chunk(ChunkError::TooManyChunks { .. }))
        ));
    }
}
