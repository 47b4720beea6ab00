//! The frame encoder: header, metadata and payload as three slices for one vectored write.
//!
//! The payload is a `Bytes` handle, never copied into a staging buffer: [`OutFrame::io_slices`]
//! gives `[header, meta, payload]` for `writev` / io_uring `writev`, and many frames can be
//! gathered into one call.

use std::io::IoSlice;

use bytes::{BufMut, Bytes};
use zerocopy::IntoBytes;

use crate::error::{DecodeError, EncodeError};
use crate::frame::{Envelope, Frame};
use crate::header::{HEADER_LEN, Header};
use crate::kind::{Flags, FrameKind};
use crate::limits::Limits;
use crate::meta::{MetaLimits, Metadata};

/// An encoded frame ready to write: a 48-byte header, the CBOR metadata and the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutFrame {
    header: Header,
    meta: Bytes,
    payload: Bytes,
}

impl OutFrame {
    /// Assembles a frame whose header the caller built from validated parts.
    pub(crate) fn from_parts(header: Header, meta: Bytes, payload: Bytes) -> Self {
        debug_assert_eq!(header.body_len.get() as usize, meta.len() + payload.len());
        debug_assert_eq!(usize::from(header.meta_len.get()), meta.len());
        Self {
            header,
            meta,
            payload,
        }
    }

    /// A whole encoded frame (as read back from storage, or kept after it was received), checked
    /// against `limits` and split into header, metadata and payload without copying them.
    pub fn from_bytes(mut bytes: Bytes, limits: &Limits) -> Result<Self, DecodeError> {
        let (frame, rest) = Frame::parse(&bytes, limits)?;
        if !rest.is_empty() {
            return Err(DecodeError::TrailingBytes { count: rest.len() });
        }
        let header = *frame.header();
        let meta_len = usize::from(header.meta_len.get());
        let _ = bytes.split_to(HEADER_LEN);
        let meta = bytes.split_to(meta_len);
        Ok(Self {
            header,
            meta,
            payload: bytes,
        })
    }

    /// Frames stored back to back (e.g. the chunks of one message in one log record), each
    /// checked against `limits`, without copying. An empty buffer is no frames.
    pub fn sequence_from_bytes(
        mut bytes: Bytes,
        limits: &Limits,
    ) -> Result<Vec<Self>, DecodeError> {
        let mut frames = Vec::new();
        while !bytes.is_empty() {
            let (frame, _) = Frame::parse(&bytes, limits)?;
            let len = frame.header().frame_len();
            frames.push(Self::from_bytes(bytes.split_to(len), limits)?);
        }
        Ok(frames)
    }

    /// Sets transit flags (RETRANSMIT, ROUTE_LOCK) in the header; other bits are ignored.
    pub fn set_transit_flags(&mut self, flags: Flags) {
        self.header.set_transit_flags(flags);
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The header's fields as plain integers (the header was validated when the frame was
    /// built, so kind and flags are known values).
    pub fn envelope(&self) -> Envelope {
        let h = &self.header;
        h.envelope_with(
            FrameKind::try_from(h.kind).unwrap_or(FrameKind::Data),
            Flags::from_bits(h.flags.get()).unwrap_or_default(),
        )
    }

    /// The encoded metadata (empty when absent).
    pub fn meta(&self) -> &Bytes {
        &self.meta
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Total length on the wire.
    pub fn len(&self) -> usize {
        HEADER_LEN + self.meta.len() + self.payload.len()
    }

    /// Always false: a frame has at least a header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The three parts for a vectored write, in wire order.
    pub fn io_slices(&self) -> [IoSlice<'_>; 3] {
        [
            IoSlice::new(self.header.as_bytes()),
            IoSlice::new(&self.meta),
            IoSlice::new(&self.payload),
        ]
    }

    /// Appends the frame to `out` (a copy; for tests, golden files and small control frames).
    pub fn write_to<B: BufMut>(&self, out: &mut B) {
        out.put_slice(self.header.as_bytes());
        out.put_slice(&self.meta);
        out.put_slice(&self.payload);
    }

    /// The frame as one contiguous vector (a copy).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v: Vec<u8> = Vec::with_capacity(self.len());
        self.write_to(&mut v);
        v
    }
}

impl From<Frame<bytes::BytesMut>> for OutFrame {
    /// A received frame, ready to be sent again: its buffers are frozen, not copied.
    fn from(frame: Frame<bytes::BytesMut>) -> Self {
        let (header, meta, payload) = frame.into_parts();
        Self::from_parts(header, meta.freeze(), payload.freeze())
    }
}

/// Builds a frame from an envelope, already-encoded CBOR metadata and a payload.
///
/// Sets `body_len`, `meta_len` and the `HAS_META` flag from the parts, then validates the
/// header exactly as a receiver would under `limits`.
pub fn encode_frame(
    env: &Envelope,
    meta: &[u8],
    payload: Bytes,
    limits: &Limits,
) -> Result<OutFrame, EncodeError> {
    let frame_len = HEADER_LEN + meta.len() + payload.len();
    if frame_len > limits.max_frame_len as usize {
        return Err(EncodeError::FrameTooLarge {
            frame_len,
            max_frame_len: limits.max_frame_len,
        });
    }
    let meta_len = u16::try_from(meta.len()).map_err(|_| {
        EncodeError::Invalid(DecodeError::MetaTooLong {
            meta_len: u16::MAX,
            max_meta_len: limits.max_meta_len,
        })
    })?;
    let mut env = *env;
    env.flags = if meta.is_empty() {
        env.flags.without(Flags::HAS_META)
    } else {
        env.flags.with(Flags::HAS_META)
    };
    // frame_len <= max_frame_len <= 16 MiB, so the body length fits in u32.
    let body_len = u32::try_from(frame_len - HEADER_LEN).unwrap_or(u32::MAX);
    let header = env.to_header(body_len, meta_len);
    header.validate(limits)?;
    Ok(OutFrame {
        header,
        meta: Bytes::copy_from_slice(meta),
        payload,
    })
}

/// Builds a frame, encoding `meta` first.
pub fn encode_frame_with_meta(
    env: &Envelope,
    meta: &Metadata,
    meta_limits: &MetaLimits,
    payload: Bytes,
    limits: &Limits,
) -> Result<OutFrame, EncodeError> {
    let meta = meta.encode(meta_limits)?;
    encode_frame(env, &meta, payload, limits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Frame;
    use crate::kind::FrameKind;

    #[test]
    fn io_slices_are_the_parts_in_order_and_payload_is_not_copied() {
        let payload = Bytes::from_static(b"the payload");
        let mut env = Envelope::new(FrameKind::Data);
        env.dst_node = 3;
        let f = encode_frame(&env, &[0xA0], payload.clone(), &Limits::default()).unwrap();
        let s = f.io_slices();
        assert_eq!(s[0].len(), HEADER_LEN);
        assert_eq!(&*s[1], &[0xA0]);
        assert_eq!(s[2].as_ptr(), payload.as_ptr());
        let v = f.to_vec();
        let parsed = Frame::new_checked(&v[..], &Limits::default()).unwrap();
        assert_eq!(parsed.payload(), b"the payload");
        assert!(parsed.flags().contains(Flags::HAS_META));
    }

    #[test]
    fn too_large_and_inconsistent_frames_are_refused() {
        let l = Limits::default();
        let big = Bytes::from(vec![0u8; l.max_frame_len as usize]);
        assert!(matches!(
            encode_frame(&Envelope::new(FrameKind::Data), &[], big, &l),
            Err(EncodeError::FrameTooLarge { .. })
        ));
        let mut env = Envelope::new(FrameKind::Data);
        env.flags = Flags::LAST_CHUNK;
        assert_eq!(
            encode_frame(&env, &[], Bytes::new(), &l),
            Err(EncodeError::Invalid(DecodeError::LastChunkWithoutChunk))
        );
    }
}

#[cfg(test)]
mod from_bytes_tests {
    use super::*;

    #[test]
    fn a_stored_frame_comes_back_as_the_same_frame_without_copies() {
        let mut env = Envelope::new(FrameKind::Data);
        env.msg_id = 7;
        let meta = Metadata {
            corr_id: Some(9),
            ..Metadata::default()
        };
        let f = encode_frame_with_meta(
            &env,
            &meta,
            &MetaLimits::default(),
            Bytes::from_static(b"payload"),
            &Limits::default(),
        )
        .unwrap();
        let stored = Bytes::from(f.to_vec());
        let back = OutFrame::from_bytes(stored.clone(), &Limits::default()).unwrap();
        assert_eq!(back, f);
        assert_eq!(back.payload().as_ptr(), stored[stored.len() - 7..].as_ptr());
        let mut retried = back.clone();
        retried.set_transit_flags(Flags::RETRANSMIT | Flags::REQUIRE_ACK);
        assert!(retried.envelope().flags.contains(Flags::RETRANSMIT));
        assert!(!retried.envelope().flags.contains(Flags::REQUIRE_ACK));
    }

    #[test]
    fn trailing_or_missing_bytes_are_errors() {
        let f = encode_frame(
            &Envelope::new(FrameKind::Data),
            &[],
            Bytes::from_static(b"x"),
            &Limits::default(),
        )
        .unwrap();
        let mut v = f.to_vec();
        v.push(0);
        assert_eq!(
            OutFrame::from_bytes(Bytes::from(v.clone()), &Limits::default()),
            Err(DecodeError::TrailingBytes { count: 1 })
        );
        v.truncate(v.len() - 2);
        assert!(matches!(
            OutFrame::from_bytes(Bytes::from(v), &Limits::default()),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn the_chunks_of_a_message_come_back_from_one_buffer() {
        let mut env = Envelope::new(FrameKind::Data);
        env.msg_id = 3;
        let limits = Limits {
            max_frame_len: 256,
            ..Limits::default()
        };
        let payload = Bytes::from(
            (0..1000u32)
                .map(|i| i.to_le_bytes()[0])
                .collect::<Vec<u8>>(),
        );
        let frames: Vec<OutFrame> = crate::chunk_message(
            &env,
            &Metadata::default(),
            &MetaLimits::default(),
            payload.clone(),
            &limits,
        )
        .unwrap()
        .collect();
        assert!(frames.len() > 4);
        let mut stored = Vec::new();
        for f in &frames {
            f.write_to(&mut stored);
        }
        let back = OutFrame::sequence_from_bytes(Bytes::from(stored.clone()), &limits).unwrap();
        assert_eq!(back, frames);
        assert!(
            OutFrame::sequence_from_bytes(Bytes::new(), &limits)
                .unwrap()
                .is_empty()
        );
        stored.pop();
        assert!(matches!(
            OutFrame::sequence_from_bytes(Bytes::from(stored), &limits),
            Err(DecodeError::Truncated { .. })
        ));
    }
}
