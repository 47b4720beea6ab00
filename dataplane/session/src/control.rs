//! Encoders for the session-control frames (HELLO, KEEPALIVE, DRAIN, CLOSE) and the reading of
//! a received CLOSE.
//!
//! Control frames concern one connection only: they carry TTL 1 (never forwarded), message id
//! 0, the sender as `src_node` / `src_domain` and the peer, once known, as `dst_node` /
//! `dst_domain` (0 before the peer's HELLO). KEEPALIVE and DRAIN have no body; CLOSE carries
//! metadata key 7 `reason` and optionally key 9 `text`; HELLO carries the [`crate::hello`]
//! body as payload. All are built under [`HANDSHAKE_LIMITS`], which every peer accepts.
//!
//! [`close_frame`] is public so that a shell can refuse a connection (e.g. `TooManySessions`
//! from [`crate::Admission`]) without building a [`crate::Session`].

use bytes::{Bytes, BytesMut};
use mesh_wire::limits::MIN_FRAME_LEN;
use mesh_wire::{
    CloseReason, EncodeError, Envelope, Frame, FrameKind, Limits, MetaLimits, Metadata, OutFrame,
    encode_frame, encode_frame_with_meta,
};

/// The decoder limits in force before the handshake completes: room for the largest HELLO
/// ([`crate::hello::MAX_HELLO_LEN`]) and a CLOSE with its text, nothing more. An
/// unauthenticated peer cannot make a half-open session buffer more than 16 KiB.
pub const HANDSHAKE_LIMITS: Limits = Limits {
    max_frame_len: 16 * 1024,
    max_meta_len: 4 * 1024,
};

const _: () = assert!(HANDSHAKE_LIMITS.max_frame_len >= MIN_FRAME_LEN);

/// Longest `text` this crate puts in a CLOSE (the wire allows 1 KiB).
pub const MAX_CLOSE_TEXT_LEN: usize = 256;

/// Who sends a control frame and to whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Addressing {
    /// This node.
    pub src_node: u64,
    /// This node's domain.
    pub src_domain: u32,
    /// The peer, 0 while unknown.
    pub dst_node: u64,
    /// The peer's domain, 0 while unknown.
    pub dst_domain: u32,
}

fn envelope(kind: FrameKind, a: Addressing) -> Envelope {
    let mut env = Envelope::new(kind);
    env.ttl = 1;
    env.src_node = a.src_node;
    env.src_domain = a.src_domain;
    env.dst_node = a.dst_node;
    env.dst_domain = a.dst_domain;
    env
}

/// A HELLO frame carrying `body` (an encoded [`crate::Hello`]).
pub fn hello_frame(a: Addressing, body: Vec<u8>) -> Result<OutFrame, EncodeError> {
    encode_frame(
        &envelope(FrameKind::Hello, a),
        &[],
        Bytes::from(body),
        &HANDSHAKE_LIMITS,
    )
}

/// An empty frame of `kind` (KEEPALIVE or DRAIN).
pub fn empty_frame(kind: FrameKind, a: Addressing) -> Result<OutFrame, EncodeError> {
    encode_frame(&envelope(kind, a), &[], Bytes::new(), &HANDSHAKE_LIMITS)
}

/// A CLOSE frame with `reason` and, when given, `text` cut to [`MAX_CLOSE_TEXT_LEN`] bytes
/// (at a character boundary).
pub fn close_frame(a: Addressing, reason: CloseReason, text: Option<&str>) -> OutFrame {
    let meta = Metadata {
        reason: Some(reason.code()),
        text: text.map(|t| truncate(t, MAX_CLOSE_TEXT_LEN).to_owned()),
        ..Metadata::default()
    };
    let env = envelope(FrameKind::Close, a);
    let limits = MetaLimits::default();
    // Reason plus at most 256 bytes of text is far within every limit, so both encodings
    // succeed; the fallbacks keep this function total.
    encode_frame_with_meta(&env, &meta, &limits, Bytes::new(), &HANDSHAKE_LIMITS)
        .or_else(|_| {
            let bare = Metadata {
                reason: Some(reason.code()),
                ..Metadata::default()
            };
            encode_frame_with_meta(&env, &bare, &limits, Bytes::new(), &HANDSHAKE_LIMITS)
        })
        .unwrap_or_else(|e| unreachable!("a bare CLOSE always encodes: {e}"))
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The reason of a received CLOSE: its metadata's `reason` code; `Normal` when absent;
/// `BadMetadata` when the metadata does not decode (the session ends either way).
pub fn close_reason_of(frame: &Frame<BytesMut>) -> CloseReason {
    match frame.meta(&MetaLimits::default()) {
        Ok(m) => m.reason.map_or(CloseReason::Normal, CloseReason::from_code),
        Err(_) => CloseReason::BadMetadata,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_wire::Decoder;

    fn decode(f: &OutFrame) -> Frame<BytesMut> {
        let mut d = Decoder::new(HANDSHAKE_LIMITS);
        d.handle_bytes(&f.to_vec());
        d.poll_frame().unwrap().unwrap()
    }

    #[test]
    fn close_round_trips_with_cut_text() {
        let a = Addressing {
            src_node: 3,
            src_domain: 1,
            dst_node: 4,
            dst_domain: 2,
        };
        let long = "é".repeat(200); // 400 bytes, two per char
        let f = decode(&close_frame(a, CloseReason::PeerDead, Some(&long)));
        assert_eq!(f.kind(), FrameKind::Close);
        assert_eq!(f.envelope().ttl, 1);
        assert_eq!(f.envelope().src_node, 3);
        assert_eq!(f.envelope().dst_node, 4);
        assert_eq!(close_reason_of(&f), CloseReason::PeerDead);
        let m = f.meta(&MetaLimits::default()).unwrap();
        assert_eq!(m.text.unwrap().len(), MAX_CLOSE_TEXT_LEN);
        assert_eq!(truncate("abc", 2), "ab");
        assert_eq!(truncate("é", 1), "");
    }

    #[test]
    fn close_without_reason_is_normal() {
        let f = decode(&empty_frame(FrameKind::Close, Addressing::default()).unwrap());
        assert_eq!(close_reason_of(&f), CloseReason::Normal);
        let ka = decode(&empty_frame(FrameKind::Keepalive, Addressing::default()).unwrap());
        assert!(ka.payload().is_empty());
    }

    #[test]
    fn handshake_limits_are_valid() {
        assert_eq!(
            Limits::new(
                HANDSHAKE_LIMITS.max_frame_len,
                HANDSHAKE_LIMITS.max_meta_len
            ),
            Ok(HANDSHAKE_LIMITS)
        );
    }
}
