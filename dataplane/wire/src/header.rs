//! The fixed 48-byte frame header (SPEC §3), read and written in place.
//!
//! [`Header`] is a `zerocopy` type whose fields are big-endian integer wrappers, so a header is
//! never parsed field by field into a copy: `Header::ref_from_prefix` reinterprets the first 48
//! bytes of a receive buffer, and `Header::mut_from_prefix` lets the forwarding path decrement
//! the TTL in the very buffer that will be written to the next hop.
//!
//! ```text
//! offset size field        meaning
//!  0     2    magic        0x4D 0x53 ("MS")
//!  2     1    version      1
//!  3     1    kind         FrameKind
//!  4     2    flags        Flags bits
//!  6     1    ttl          hop limit, decremented at every hop
//!  7     1    class        traffic class / priority
//!  8     4    body_len     bytes after the header (meta + payload)
//! 12     4    src_domain
//! 16     4    dst_domain
//! 20     2    meta_len     CBOR metadata length (0 when absent)
//! 22     2    chunk_index  index of this chunk in a chunked message (0 otherwise)
//! 24     8    src_node
//! 32     8    dst_node
//! 40     8    msg_id       unique per src_node, never reused
//! ```
//!
//! A `Header` reference says nothing about validity: any 48 bytes can be viewed as one. The
//! checked view is [`crate::Frame`]; [`Header::validate`] performs the checks.

use zerocopy::byteorder::big_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::DecodeError;
use crate::kind::{Flags, FrameKind};
use crate::limits::Limits;

/// Length of the fixed header in bytes.
pub const HEADER_LEN: usize = 48;
/// [`HEADER_LEN`] as a `u32`, for arithmetic with wire lengths.
pub const HEADER_LEN_U32: u32 = 48;
/// The two magic bytes every frame starts with: "MS".
pub const MAGIC: [u8; 2] = [0x4D, 0x53];
/// The only wire version this build speaks.
pub const VERSION: u8 = 1;
/// Default hop limit of a new frame.
pub const DEFAULT_TTL: u8 = 64;

/// The on-the-wire header: 48 bytes, big-endian, no padding, alignment 1.
///
/// Every byte pattern is a valid `Header` value; use [`Header::validate`] to learn whether it is
/// a valid *frame* header.
#[derive(Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Header {
    /// Always [`MAGIC`].
    pub magic: [u8; 2],
    /// Always [`VERSION`].
    pub version: u8,
    /// Raw [`FrameKind`].
    pub kind: u8,
    /// Raw [`Flags`].
    pub flags: U16,
    /// Hop limit.
    pub ttl: u8,
    /// Traffic class / priority (0 = default).
    pub class: u8,
    /// Bytes after the header: metadata plus payload.
    pub body_len: U32,
    /// Domain of the source node.
    pub src_domain: U32,
    /// Domain of the destination node.
    pub dst_domain: U32,
    /// Length of the CBOR metadata that starts the body.
    pub meta_len: U16,
    /// Index of this chunk in a chunked message.
    pub chunk_index: U16,
    /// Source node id.
    pub src_node: U64,
    /// Destination node id.
    pub dst_node: U64,
    /// Message id, unique per source node.
    pub msg_id: U64,
}

// The wire contract: 48 bytes, no padding, byte-aligned so it can sit anywhere in a buffer.
const _: () = assert!(size_of::<Header>() == HEADER_LEN);
const _: () = assert!(HEADER_LEN_U32 as usize == HEADER_LEN);
const _: () = assert!(align_of::<Header>() == 1);

impl Header {
    /// A header for a new frame with the given kind, correct magic and version, the default TTL
    /// and every other field zero.
    pub fn new(kind: FrameKind) -> Self {
        Self {
            magic: MAGIC,
            version: VERSION,
            kind: kind as u8,
            flags: U16::ZERO,
            ttl: DEFAULT_TTL,
            class: 0,
            body_len: U32::ZERO,
            src_domain: U32::ZERO,
            dst_domain: U32::ZERO,
            meta_len: U16::ZERO,
            chunk_index: U16::ZERO,
            src_node: U64::ZERO,
            dst_node: U64::ZERO,
            msg_id: U64::ZERO,
        }
    }

    /// Views the first [`HEADER_LEN`] bytes of `buf` as a header, in place.
    ///
    /// Returns `None` when `buf` is shorter than a header.
    pub fn ref_from_buf(buf: &[u8]) -> Option<&Self> {
        Self::ref_from_prefix(buf).ok().map(|(h, _)| h)
    }

    /// Views the first [`HEADER_LEN`] bytes of `buf` as a mutable header, in place (used to
    /// rewrite the TTL or flags of a frame that is about to be forwarded).
    pub fn mut_from_buf(buf: &mut [u8]) -> Option<&mut Self> {
        Self::mut_from_prefix(buf).ok().map(|(h, _)| h)
    }

    /// Total frame length this header announces (header + body), in bytes.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.body_len.get() as usize
    }

    /// Checks every field a receiver must check before reading a byte of the body: magic,
    /// version, kind, flags, body length against `limits`, metadata length against the body,
    /// and the consistency of the chunk flags.
    ///
    /// On success returns the decoded kind and flags, which can no longer be invalid.
    pub fn validate(&self, limits: &Limits) -> Result<(FrameKind, Flags), DecodeError> {
        if self.magic != MAGIC {
            return Err(DecodeError::BadMagic { found: self.magic });
        }
        if self.version != VERSION {
            return Err(DecodeError::UnsupportedVersion {
                found: self.version,
                supported: VERSION,
            });
        }
        let kind = FrameKind::try_from(self.kind)?;
        let flags = Flags::from_bits(self.flags.get())?;
        let body_len = self.body_len.get();
        let max_body_len = limits.max_body_len();
        if body_len > max_body_len {
            return Err(DecodeError::BodyTooLong {
                body_len,
                max_body_len,
            });
        }
        let meta_len = self.meta_len.get();
        if u32::from(meta_len) > body_len {
            return Err(DecodeError::MetaLongerThanBody { meta_len, body_len });
        }
        if u32::from(meta_len) > limits.max_meta_len {
            return Err(DecodeError::MetaTooLong {
                meta_len,
                max_meta_len: limits.max_meta_len,
            });
        }
        if flags.contains(Flags::HAS_META) != (meta_len != 0) {
            return Err(DecodeError::MetaFlagMismatch {
                has_meta_flag: flags.contains(Flags::HAS_META),
                meta_len,
            });
        }
        let chunked = flags.contains(Flags::CHUNK);
        if flags.contains(Flags::LAST_CHUNK) && !chunked {
            return Err(DecodeError::LastChunkWithoutChunk);
        }
        if !chunked && self.chunk_index.get() != 0 {
            return Err(DecodeError::ChunkIndexWithoutChunk {
                chunk_index: self.chunk_index.get(),
            });
        }
        Ok((kind, flags))
    }
}

impl Header {
    /// Sets the transit flags of `flags` (RETRANSMIT, ROUTE_LOCK) a node may add on the way;
    /// other bits are ignored. Returns the new flag bits.
    pub fn set_transit_flags(&mut self, flags: Flags) -> u16 {
        let settable = flags.bits() & (Flags::RETRANSMIT | Flags::ROUTE_LOCK).bits();
        let bits = self.flags.get() | settable;
        self.flags.set(bits);
        bits
    }

    /// The header's fields as plain integers, with the kind and flags the caller already
    /// validated.
    pub(crate) fn envelope_with(&self, kind: FrameKind, flags: Flags) -> crate::frame::Envelope {
        crate::frame::Envelope {
            kind,
            flags,
            ttl: self.ttl,
            class: self.class,
            src_domain: self.src_domain.get(),
            dst_domain: self.dst_domain.get(),
            chunk_index: self.chunk_index.get(),
            src_node: self.src_node.get(),
            dst_node: self.dst_node.get(),
            msg_id: self.msg_id.get(),
        }
    }
}

impl core::fmt::Debug for Header {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Header")
            .field("magic", &self.magic)
            .field("version", &self.version)
            .field("kind", &self.kind)
            .field("flags", &format_args!("{:#06x}", self.flags.get()))
            .field("ttl", &self.ttl)
            .field("class", &self.class)
            .field("body_len", &self.body_len.get())
            .field("src_domain", &self.src_domain.get())
            .field("dst_domain", &self.dst_domain.get())
            .field("meta_len", &self.meta_len.get())
            .field("chunk_index", &self.chunk_index.get())
            .field("src_node", &self.src_node.get())
            .field("dst_node", &self.dst_node.get())
            .field("msg_id", &self.msg_id.get())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_offsets_match_the_spec() {
        let mut h = Header::new(FrameKind::Data);
        h.flags.set(0x0102);
        h.ttl = 3;
        h.class = 4;
        h.body_len.set(0x0506_0708);
        h.src_domain.set(0x090A_0B0C);
        h.dst_domain.set(0x0D0E_0F10);
        h.meta_len.set(0x1112);
        h.chunk_index.set(0x1314);
        h.src_node.set(0x1516_1718_191A_1B1C);
        h.dst_node.set(0x1D1E_1F20_2122_2324);
        h.msg_id.set(0x2526_2728_292A_2B2C);
        let b = h.as_bytes();
        assert_eq!(&b[0..2], b"MS");
        assert_eq!(b[2], 1);
        assert_eq!(b[3], FrameKind::Data as u8);
        assert_eq!(&b[4..6], &[0x01, 0x02]);
        assert_eq!(b[6], 3);
        assert_eq!(b[7], 4);
        assert_eq!(&b[8..12], &[5, 6, 7, 8]);
        assert_eq!(&b[12..16], &[9, 10, 11, 12]);
        assert_eq!(&b[16..20], &[13, 14, 15, 16]);
        assert_eq!(&b[20..22], &[0x11, 0x12]);
        assert_eq!(&b[22..24], &[0x13, 0x14]);
        assert_eq!(
            &b[24..32],
            &[0x15, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x1B, 0x1C]
        );
        assert_eq!(
            &b[32..40],
            &[0x1D, 0x1E, 0x1F, 0x20, 0x21, 0x22, 0x23, 0x24]
        );
        assert_eq!(
            &b[40..48],
            &[0x25, 0x26, 0x27, 0x28, 0x29, 0x2A, 0x2B, 0x2C]
        );
    }

    #[test]
    fn ttl_is_rewritten_in_place() {
        let mut buf = [0u8; 64];
        buf[..HEADER_LEN].copy_from_slice(Header::new(FrameKind::Data).as_bytes());
        let h = Header::mut_from_buf(&mut buf).expect("64 bytes hold a header");
        h.ttl -= 1;
        assert_eq!(buf[6], DEFAULT_TTL - 1);
    }

    #[test]
    fn short_buffer_has_no_header() {
        assert!(Header::ref_from_buf(&[0u8; HEADER_LEN - 1]).is_none());
        assert!(Header::ref_from_buf(&[0u8; HEADER_LEN]).is_some());
    }
}
