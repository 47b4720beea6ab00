//! One test per malformed case, each asserting the exact error and the CLOSE reason it maps to.

use bytes::Bytes;
use mesh_wire::{
    CloseReason, DecodeError, Decoder, Envelope, Frame, FrameKind, HEADER_LEN, Header, Limits,
    encode_frame,
};
use zerocopy::IntoBytes;

fn valid() -> Vec<u8> {
    let mut e = Envelope::new(FrameKind::Data);
    e.src_node = 1;
    e.dst_node = 2;
    encode_frame(&e, &[], Bytes::from_static(b"payload"), &Limits::default())
        .unwrap()
        .to_vec()
}

fn decode(bytes: &[u8]) -> Result<(), DecodeError> {
    let mut d = Decoder::new(Limits::default());
    d.handle_bytes(bytes);
    d.poll_frame().map(|_| ())
}

fn with_header(f: impl FnOnce(&mut Header)) -> Vec<u8> {
    let mut b = valid();
    f(Header::mut_from_buf(&mut b).unwrap());
    b
}

#[test]
fn bad_magic() {
    let b = with_header(|h| h.magic = *b"XX");
    let e = decode(&b).unwrap_err();
    assert_eq!(e, DecodeError::BadMagic { found: *b"XX" });
    assert_eq!(e.close_reason(), CloseReason::BadMagic);
}

#[test]
fn unsupported_version() {
    let b = with_header(|h| h.version = 2);
    let e = decode(&b).unwrap_err();
    assert_eq!(
        e,
        DecodeError::UnsupportedVersion {
            found: 2,
            supported: 1
        }
    );
    assert_eq!(e.close_reason(), CloseReason::UnsupportedVersion);
}

#[test]
fn unknown_kind() {
    let b = with_header(|h| h.kind = 200);
    assert_eq!(
        decode(&b).unwrap_err(),
        DecodeError::UnknownKind { found: 200 }
    );
    let b = with_header(|h| h.kind = 0);
    assert_eq!(
        decode(&b).unwrap_err(),
        DecodeError::UnknownKind { found: 0 }
    );
}

#[test]
fn unknown_flags() {
    let b = with_header(|h| h.flags.set(0x8001));
    let e = decode(&b).unwrap_err();
    assert_eq!(
        e,
        DecodeError::UnknownFlags {
            bits: 0x8001,
            unknown: 0x8000
        }
    );
    assert_eq!(e.close_reason(), CloseReason::UnknownKindOrFlags);
}

#[test]
fn body_over_the_limit_is_refused_from_the_header_alone() {
    let limits = Limits::default();
    let mut h = Header::new(FrameKind::Data);
    h.body_len.set(limits.max_body_len() + 1);
    // Only the header is sent: the error comes before any body byte is awaited.
    let e = decode(h.as_bytes()).unwrap_err();
    assert_eq!(
        e,
        DecodeError::BodyTooLong {
            body_len: limits.max_body_len() + 1,
            max_body_len: limits.max_body_len()
        }
    );
    assert_eq!(e.close_reason(), CloseReason::FrameTooLarge);
}

#[test]
fn body_at_the_limit_is_accepted() {
    let limits = Limits::default();
    let mut h = Header::new(FrameKind::Data);
    h.body_len.set(limits.max_body_len());
    let mut d = Decoder::new(limits);
    d.handle_bytes(h.as_bytes());
    assert!(d.poll_frame().unwrap().is_none(), "waits for the body");
}

#[test]
fn meta_len_larger_than_body() {
    let b = with_header(|h| {
        h.meta_len.set(100);
        h.flags.set(mesh_wire::Flags::HAS_META.bits());
    });
    let e = decode(&b).unwrap_err();
    assert_eq!(
        e,
        DecodeError::MetaLongerThanBody {
            meta_len: 100,
            body_len: 7
        }
    );
    assert_eq!(e.close_reason(), CloseReason::MalformedFrame);
}

#[test]
fn meta_without_flag_and_flag_without_meta() {
    let b = with_header(|h| h.meta_len.set(3));
    assert_eq!(
        decode(&b).unwrap_err(),
        DecodeError::MetaFlagMismatch {
            has_meta_flag: false,
            meta_len: 3
        }
    );
    let b = with_header(|h| h.flags.set(mesh_wire::Flags::HAS_META.bits()));
    assert_eq!(
        decode(&b).unwrap_err(),
        DecodeError::MetaFlagMismatch {
            has_meta_flag: true,
            meta_len: 0
        }
    );
}

#[test]
fn chunk_flag_inconsistencies() {
    let b = with_header(|h| h.flags.set(mesh_wire::Flags::LAST_CHUNK.bits()));
    assert_eq!(decode(&b).unwrap_err(), DecodeError::LastChunkWithoutChunk);
    let b = with_header(|h| h.chunk_index.set(3));
    assert_eq!(
        decode(&b).unwrap_err(),
        DecodeError::ChunkIndexWithoutChunk { chunk_index: 3 }
    );
}

#[test]
fn truncated_header() {
    let b = valid();
    // Streaming: a partial header is not an error, just not a frame yet.
    let mut d = Decoder::new(Limits::default());
    d.handle_bytes(&b[..HEADER_LEN - 1]);
    assert!(d.poll_frame().unwrap().is_none());
    // One-shot: it is `Truncated`.
    assert_eq!(
        Frame::new_checked(&b[..HEADER_LEN - 1], &Limits::default()).unwrap_err(),
        DecodeError::Truncated {
            needed: HEADER_LEN,
            available: HEADER_LEN - 1
        }
    );
    assert_eq!(
        Frame::parse(&b[..b.len() - 1], &Limits::default()).unwrap_err(),
        DecodeError::Truncated {
            needed: b.len(),
            available: b.len() - 1
        }
    );
}

#[test]
fn bad_metadata_is_reported_when_read() {
    let mut e = Envelope::new(FrameKind::Data);
    e.dst_node = 1;
    // 0xFF is a CBOR "break" outside any indefinite item.
    let b = encode_frame(&e, &[0xFF], Bytes::new(), &Limits::default())
        .unwrap()
        .to_vec();
    let f = Frame::new_checked(&b[..], &Limits::default()).unwrap();
    let err = f.meta(&mesh_wire::MetaLimits::default()).unwrap_err();
    assert!(matches!(err, DecodeError::Meta(_)));
    assert_eq!(err.close_reason(), CloseReason::BadMetadata);
}
