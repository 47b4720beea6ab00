//! Golden vectors: byte-exact frames checked into `tests/golden/*.hex` (annotated hex, written
//! independently of this crate's encoder). Each is decoded, checked field by field, and
//! re-encoded to the same bytes.

use bytes::Bytes;
use mesh_wire::{
    CloseReason, Decoder, Envelope, Flags, FrameKind, Limits, MetaLimits, Metadata, encode_frame,
};

fn load(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/golden/{name}.hex", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let hex: String = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    hex::decode(hex).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Decodes the golden bytes (fed in two uneven pieces), checks the envelope, and re-encodes.
fn check(name: &str, expect: Envelope, meta: &Metadata, payload: &[u8]) {
    let bytes = load(name);
    let mut d = Decoder::new(Limits::default());
    let cut = bytes.len() / 3;
    d.handle_bytes(&bytes[..cut]);
    if cut < 48 {
        assert!(d.poll_frame().unwrap().is_none());
    }
    d.handle_bytes(&bytes[cut..]);
    let f = d.poll_frame().unwrap().expect("one whole frame");
    assert!(d.poll_frame().unwrap().is_none());
    assert_eq!(f.envelope(), expect, "{name}: envelope");
    assert_eq!(
        &f.meta(&MetaLimits::default()).unwrap(),
        meta,
        "{name}: metadata"
    );
    assert_eq!(f.payload(), payload, "{name}: payload");

    let meta_bytes = meta.encode(&MetaLimits::default()).unwrap();
    assert_eq!(
        f.meta_bytes(),
        &meta_bytes[..],
        "{name}: metadata re-encoding"
    );
    let out = encode_frame(
        &expect,
        &meta_bytes,
        Bytes::copy_from_slice(payload),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(out.to_vec(), bytes, "{name}: re-encoding");
}

fn env(kind: FrameKind, flags: Flags, ttl: u8) -> Envelope {
    let mut e = Envelope::new(kind);
    e.flags = flags;
    e.ttl = ttl;
    e
}

#[test]
fn data_plain() {
    let mut e = env(FrameKind::Data, Flags::REQUIRE_ACK, 64);
    e.src_domain = 7;
    e.dst_domain = 7;
    e.src_node = 1001;
    e.dst_node = 12345;
    e.msg_id = 1;
    check("data_plain", e, &Metadata::default(), b"hello");
}

#[test]
fn data_meta() {
    let mut e = env(FrameKind::Data, Flags::HAS_META, 17);
    e.class = 2;
    e.src_domain = 3;
    e.dst_domain = 9;
    e.src_node = 0x0102_0304_0506_0708;
    e.dst_node = 0xA1A2_A3A4_A5A6_A7A8;
    e.msg_id = u64::MAX - 1;
    let meta = Metadata {
        corr_id: Some(0xC1),
        headers: vec![("k".into(), b"v".to_vec())],
        ..Metadata::default()
    };
    let payload: Vec<u8> = (0..40).collect();
    check("data_meta", e, &meta, &payload);
}

#[test]
fn chunk_last() {
    let mut e = env(
        FrameKind::Data,
        Flags::CHUNK | Flags::LAST_CHUNK | Flags::RETRANSMIT,
        60,
    );
    e.src_domain = 1;
    e.dst_domain = 1;
    e.chunk_index = 4;
    e.src_node = 5;
    e.dst_node = 6;
    e.msg_id = 77;
    check("chunk_last", e, &Metadata::default(), b"tail");
}

#[test]
fn keepalive() {
    let mut e = env(FrameKind::Keepalive, Flags::EMPTY, 1);
    e.src_node = 42;
    e.dst_node = 43;
    check("keepalive", e, &Metadata::default(), b"");
}

#[test]
fn close_frame_too_large() {
    let mut e = env(FrameKind::Close, Flags::HAS_META, 1);
    e.src_node = 42;
    e.dst_node = 43;
    let meta = Metadata {
        reason: Some(CloseReason::FrameTooLarge.code()),
        ..Metadata::default()
    };
    check("close_frame_too_large", e, &meta, b"");
}
