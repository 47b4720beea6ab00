//! A checked frame: a typed view over any byte buffer (smoltcp's `Packet<T: AsRef<[u8]>>`).
//!
//! [`Frame::new_checked`] validates the header and that the buffer holds exactly the frame it
//! announces; afterwards no accessor can panic or return an invalid kind or flag. The buffer is
//! not copied: with `T = BytesMut` (what the [`crate::Decoder`] yields) the bytes are the ones
//! read from the socket, and the forwarding path rewrites the TTL in place and writes the very
//! same buffer to the next hop.

use crate::error::DecodeError;
use crate::header::{HEADER_LEN, Header};
use crate::kind::{Flags, FrameKind};
use crate::limits::Limits;
use crate::meta::{MetaLimits, Metadata};
use bytes::BytesMut;

/// The routing-relevant fields of a header as plain integers: what a sender fills in to build a
/// frame and what a receiver reads back. Lengths are not here: the encoder derives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope {
    /// Frame kind.
    pub kind: FrameKind,
    /// Flags; `HAS_META` is set or cleared by the encoder to match the metadata.
    pub flags: Flags,
    /// Hop limit.
    pub ttl: u8,
    /// Traffic class.
    pub class: u8,
    /// Source domain.
    pub src_domain: u32,
    /// Destination domain.
    pub dst_domain: u32,
    /// Chunk index (0 for unchunked frames).
    pub chunk_index: u16,
    /// Source node.
    pub src_node: u64,
    /// Destination node.
    pub dst_node: u64,
    /// Message id.
    pub msg_id: u64,
}

impl Envelope {
    /// An envelope of `kind` with the default TTL and every other field zero.
    pub fn new(kind: FrameKind) -> Self {
        Self {
            kind,
            flags: Flags::EMPTY,
            ttl: crate::header::DEFAULT_TTL,
            class: 0,
            src_domain: 0,
            dst_domain: 0,
            chunk_index: 0,
            src_node: 0,
            dst_node: 0,
            msg_id: 0,
        }
    }

    /// Writes these fields and the given lengths into a header.
    pub(crate) fn to_header(self, body_len: u32, meta_len: u16) -> Header {
        let mut h = Header::new(self.kind);
        h.flags.set(self.flags.bits());
        h.ttl = self.ttl;
        h.class = self.class;
        h.body_len.set(body_len);
        h.src_domain.set(self.src_domain);
        h.dst_domain.set(self.dst_domain);
        h.meta_len.set(meta_len);
        h.chunk_index.set(self.chunk_index);
        h.src_node.set(self.src_node);
        h.dst_node.set(self.dst_node);
        h.msg_id.set(self.msg_id);
        h
    }
}

/// A validated frame over a buffer that holds exactly one frame (header + body).
#[derive(Clone, PartialEq, Eq)]
pub struct Frame<T> {
    buf: T,
    kind: FrameKind,
    flags: Flags,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Validates `buf` as one complete frame under `limits`.
    ///
    /// Errors: every header check of [`Header::validate`], and `Truncated` when `buf` is
    /// shorter than the frame it announces. A buffer longer than the frame is refused as well
    /// (`Truncated` with `needed < available`): the view must be exact, so no trailing bytes
    /// can ride past the check.
    pub fn new_checked(buf: T, limits: &Limits) -> Result<Self, DecodeError> {
        let bytes = buf.as_ref();
        let header = Header::ref_from_buf(bytes).ok_or(DecodeError::Truncated {
            needed: HEADER_LEN,
            available: bytes.len(),
        })?;
        let (kind, flags) = header.validate(limits)?;
        let needed = header.frame_len();
        if bytes.len() != needed {
            return Err(DecodeError::Truncated {
                needed,
                available: bytes.len(),
            });
        }
        Ok(Self { buf, kind, flags })
    }

    /// Wraps a buffer whose header was already validated by the decoder.
    pub(crate) fn from_validated(buf: T, kind: FrameKind, flags: Flags) -> Self {
        debug_assert_eq!(
            Header::ref_from_buf(buf.as_ref()).map(Header::frame_len),
            Some(buf.as_ref().len())
        );
        Self { buf, kind, flags }
    }

    /// The header, viewed in place.
    pub fn header(&self) -> &Header {
        // The constructor checked the buffer holds at least a header.
        Header::ref_from_buf(self.buf.as_ref()).unwrap_or_else(|| unreachable!())
    }

    /// The frame kind.
    pub fn kind(&self) -> FrameKind {
        self.kind
    }

    /// The flags.
    pub fn flags(&self) -> Flags {
        self.flags
    }

    /// The header's fields as plain integers.
    pub fn envelope(&self) -> Envelope {
        self.header().envelope_with(self.kind, self.flags)
    }

    fn meta_len(&self) -> usize {
        usize::from(self.header().meta_len.get())
    }

    /// The raw CBOR metadata (empty when absent).
    pub fn meta_bytes(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..HEADER_LEN + self.meta_len()]
    }

    /// Decodes the metadata.
    pub fn meta(&self, limits: &MetaLimits) -> Result<Metadata, DecodeError> {
        Ok(Metadata::decode(self.meta_bytes(), limits)?)
    }

    /// The payload: the body after the metadata.
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN + self.meta_len()..]
    }

    /// The whole frame as it is on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// Length of the whole frame in bytes.
    pub fn len(&self) -> usize {
        self.buf.as_ref().len()
    }

    /// Always false: a frame holds at least its header. Present for clippy's `len` convention.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buf
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    fn header_mut(&mut self) -> &mut Header {
        Header::mut_from_buf(self.buf.as_mut()).unwrap_or_else(|| unreachable!())
    }

    /// Decrements the TTL in place for forwarding. Returns the new TTL, or `None` (and leaves
    /// the frame untouched) when the TTL is already 0 or 1: the frame must not travel another
    /// hop, and its source gets a NACK.
    pub fn decrement_ttl(&mut self) -> Option<u8> {
        let h = self.header_mut();
        if h.ttl <= 1 {
            return None;
        }
        h.ttl -= 1;
        Some(h.ttl)
    }

    /// Rewrites the origin of the frame in place: `src_node`, `src_domain` and `msg_id`. A node
    /// stamps the frames its native clients send with its own identity and a msg_id it
    /// allocates, so a client can neither forge a source nor reuse an id.
    pub fn set_origin(&mut self, src_node: u64, src_domain: u32, msg_id: u64) {
        let h = self.header_mut();
        h.src_node.set(src_node);
        h.src_domain.set(src_domain);
        h.msg_id.set(msg_id);
    }

    /// Sets `flags` on the frame in place. Only flags that do not change how the body is
    /// framed may be set this way (`RETRANSMIT`, `ROUTE_LOCK`); others are ignored.
    pub fn set_transit_flags(&mut self, flags: Flags) {
        let bits = self.header_mut().set_transit_flags(flags);
        // The new bits are known flags, so this cannot fail.
        self.flags = Flags::from_bits(bits).unwrap_or(self.flags);
    }
}

impl Frame<BytesMut> {
    /// Splits the frame into its header (copied: 48 bytes), metadata and payload buffers,
    /// without copying metadata or payload. The reassembler keeps chunks this way.
    pub fn into_parts(self) -> (Header, BytesMut, BytesMut) {
        let header = *self.header();
        let meta_len = self.meta_len();
        let mut buf = self.buf;
        let _ = buf.split_to(HEADER_LEN);
        let meta = buf.split_to(meta_len);
        (header, meta, buf)
    }
}

impl<'a> Frame<&'a [u8]> {
    /// One-shot parse of the first frame in `bytes`: returns it and the bytes after it.
    /// `Truncated` when `bytes` does not hold a whole frame yet.
    pub fn parse(bytes: &'a [u8], limits: &Limits) -> Result<(Self, &'a [u8]), DecodeError> {
        let header = Header::ref_from_buf(bytes).ok_or(DecodeError::Truncated {
            needed: HEADER_LEN,
            available: bytes.len(),
        })?;
        let (kind, flags) = header.validate(limits)?;
        let len = header.frame_len();
        if bytes.len() < len {
            return Err(DecodeError::Truncated {
                needed: len,
                available: bytes.len(),
            });
        }
        let (frame, rest) = bytes.split_at(len);
        Ok((Self::from_validated(frame, kind, flags), rest))
    }
}

impl<T: AsRef<[u8]>> core::fmt::Debug for Frame<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Frame")
            .field("header", self.header())
            .field("payload_len", &self.payload().len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    fn frame_bytes(env: Envelope, meta: &[u8], payload: &[u8]) -> Vec<u8> {
        let body = meta.len() + payload.len();
        let mut env = env;
        if !meta.is_empty() {
            env.flags = env.flags | Flags::HAS_META;
        }
        let h = env.to_header(
            u32::try_from(body).unwrap(),
            u16::try_from(meta.len()).unwrap(),
        );
        let mut v = h.as_bytes().to_vec();
        v.extend_from_slice(meta);
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn accessors_see_the_parts() {
        let mut env = Envelope::new(FrameKind::Data);
        env.src_node = 7;
        env.dst_node = 9;
        env.msg_id = 42;
        let bytes = frame_bytes(env, &[0xA0], b"hello");
        let f = Frame::new_checked(&bytes[..], &Limits::default()).unwrap();
        assert_eq!(f.kind(), FrameKind::Data);
        assert_eq!(f.meta_bytes(), &[0xA0]);
        assert_eq!(f.payload(), b"hello");
        assert_eq!(f.envelope().msg_id, 42);
        assert_eq!(f.envelope().flags, Flags::HAS_META);
    }

    #[test]
    fn trailing_or_missing_bytes_are_refused() {
        let bytes = frame_bytes(Envelope::new(FrameKind::Keepalive), &[], b"abc");
        let l = Limits::default();
        assert_eq!(
            Frame::new_checked(&bytes[..bytes.len() - 1], &l).unwrap_err(),
            DecodeError::Truncated {
                needed: bytes.len(),
                available: bytes.len() - 1
            }
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Frame::new_checked(&longer[..], &l).is_err());
        let (f, rest) = Frame::parse(&longer, &l).unwrap();
        assert_eq!(f.payload(), b"abc");
        assert_eq!(rest, &[0]);
    }

    #[test]
    fn ttl_decrements_in_place_and_stops_at_one() {
        let mut env = Envelope::new(FrameKind::Data);
        env.ttl = 2;
        let bytes = frame_bytes(env, &[], b"x");
        let mut f = Frame::new_checked(BytesMut::from(&bytes[..]), &Limits::default()).unwrap();
        assert_eq!(f.decrement_ttl(), Some(1));
        assert_eq!(f.decrement_ttl(), None);
        assert_eq!(f.header().ttl, 1);
        f.set_origin(70, 7, 700);
        assert_eq!(
            (
                f.envelope().src_node,
                f.envelope().src_domain,
                f.envelope().msg_id
            ),
            (70, 7, 700)
        );
        f.set_transit_flags(Flags::RETRANSMIT | Flags::CHUNK);
        assert_eq!(f.flags(), Flags::RETRANSMIT);
        assert_eq!(f.as_bytes()[4..6], Flags::RETRANSMIT.bits().to_be_bytes());
    }

    #[test]
    fn into_parts_splits_without_copy() {
        let bytes = frame_bytes(Envelope::new(FrameKind::Data), &[0xA0], b"payload");
        let buf = BytesMut::from(&bytes[..]);
        let base = buf.as_ptr();
        let f = Frame::new_checked(buf, &Limits::default()).unwrap();
        let (h, meta, payload) = f.into_parts();
        assert_eq!(h.meta_len.get(), 1);
        assert_eq!(&meta[..], &[0xA0]);
        assert_eq!(&payload[..], b"payload");
        // Same allocation: the payload starts 49 bytes into the original buffer.
        assert_eq!(payload.as_ptr(), base.wrapping_add(HEADER_LEN + 1));
    }
}
