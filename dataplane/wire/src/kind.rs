//! Frame kinds and header flags.
//!
//! Both are closed sets in wire version 1: an unknown kind byte or an unknown flag bit is a
//! [`DecodeError`], never silently accepted, so that a peer speaking a newer dialect is refused
//! at the first frame rather than misread. New kinds and flags come with a new version (or a
//! capability negotiated in HELLO).

use crate::error::DecodeError;

/// What a frame is. The numeric values are the wire contract (SPEC §3, `docs/wire.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum FrameKind {
    /// An application message (or one chunk of one), routed by `dst_domain` / `dst_node`.
    Data = 1,
    /// The destination stored `msg_id` from `src_node`: the origin may release it. Routed back
    /// to the origin (its `dst_node` is the original `src_node`).
    Delivered = 2,
    /// The destination application acknowledged `msg_id` (metadata says success or failure).
    Ack = 3,
    /// A frame could not be forwarded or delivered; the metadata carries a [`crate::NackReason`].
    Nack = 4,
    /// Flow-control credit grant from the receiver of a session (body: credits, CBOR).
    Credit = 5,
    /// Session handshake: node id, domain, role, capabilities, limits, ML-DSA signature.
    Hello = 6,
    /// After a reconnect: the highest sequence each side has seen, to resume without loss.
    Resume = 7,
    /// Liveness probe; carries no body.
    Keepalive = 8,
    /// The sender is shutting down: finish in-flight work, open nothing new.
    Drain = 9,
    /// The session ends; the metadata carries a [`crate::CloseReason`].
    Close = 10,
    /// A link-state advertisement (body: `mesh-routing` encoding).
    Lsa = 11,
    /// Acknowledgement of one or more LSAs.
    LsaAck = 12,
}

impl FrameKind {
    /// Every kind, in wire order.
    pub const ALL: [FrameKind; 12] = [
        FrameKind::Data,
        FrameKind::Delivered,
        FrameKind::Ack,
        FrameKind::Nack,
        FrameKind::Credit,
        FrameKind::Hello,
        FrameKind::Resume,
        FrameKind::Keepalive,
        FrameKind::Drain,
        FrameKind::Close,
        FrameKind::Lsa,
        FrameKind::LsaAck,
    ];

    /// Whether frames of this kind travel hop by hop to `dst_node` (as opposed to staying on the
    /// session they arrived on).
    pub fn is_routed(self) -> bool {
        matches!(
            self,
            FrameKind::Data | FrameKind::Delivered | FrameKind::Ack | FrameKind::Nack
        )
    }
}

impl TryFrom<u8> for FrameKind {
    type Error = DecodeError;

    fn try_from(value: u8) -> Result<Self, Self::Error> {
        FrameKind::ALL
            .iter()
            .copied()
            .find(|k| *k as u8 == value)
            .ok_or(DecodeError::UnknownKind { found: value })
    }
}

/// The header's flag bits. Construct with the associated constants and `|`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u16);

impl Flags {
    /// No flags.
    pub const EMPTY: Flags = Flags(0);
    /// The origin wants an application-level ACK for this message.
    pub const REQUIRE_ACK: Flags = Flags(1 << 0);
    /// This frame is one chunk of a larger message.
    pub const CHUNK: Flags = Flags(1 << 1);
    /// This chunk is the last of its message (only with `CHUNK`).
    pub const LAST_CHUNK: Flags = Flags(1 << 2);
    /// The body starts with `meta_len` bytes of CBOR metadata.
    pub const HAS_META: Flags = Flags(1 << 3);
    /// A retransmission of a frame the origin sent before (the destination deduplicates).
    pub const RETRANSMIT: Flags = Flags(1 << 4);
    /// Keep this message on the path its first chunk took (no ECMP re-pick).
    pub const ROUTE_LOCK: Flags = Flags(1 << 5);
    /// The payload is sealed end to end (ML-KEM-768 + X25519, AES-256-GCM); transit nodes
    /// cannot read it.
    pub const E2E_ENC: Flags = Flags(1 << 6);
    /// The payload is compressed.
    pub const COMPRESSED: Flags = Flags(1 << 7);
    /// Every bit defined by wire version 1.
    pub const KNOWN: Flags = Flags(0x00FF);

    /// Decodes raw bits, refusing any bit version 1 does not define.
    pub fn from_bits(bits: u16) -> Result<Self, DecodeError> {
        if bits & !Self::KNOWN.0 == 0 {
            Ok(Flags(bits))
        } else {
            Err(DecodeError::UnknownFlags {
                bits,
                unknown: bits & !Self::KNOWN.0,
            })
        }
    }

    /// The raw bits.
    pub fn bits(self) -> u16 {
        self.0
    }

    /// Whether every bit of `other` is set in `self`.
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// `self` with the bits of `other` set.
    #[must_use]
    pub fn with(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }

    /// `self` with the bits of `other` cleared.
    #[must_use]
    pub fn without(self, other: Flags) -> Flags {
        Flags(self.0 & !other.0)
    }
}

impl core::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        self.with(rhs)
    }
}

impl core::fmt::Debug for Flags {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        const NAMES: [(Flags, &str); 8] = [
            (Flags::REQUIRE_ACK, "REQUIRE_ACK"),
            (Flags::CHUNK, "CHUNK"),
            (Flags::LAST_CHUNK, "LAST_CHUNK"),
            (Flags::HAS_META, "HAS_META"),
            (Flags::RETRANSMIT, "RETRANSMIT"),
            (Flags::ROUTE_LOCK, "ROUTE_LOCK"),
            (Flags::E2E_ENC, "E2E_ENC"),
            (Flags::COMPRESSED, "COMPRESSED"),
        ];
        let mut first = true;
        f.write_str("Flags(")?;
        for (flag, name) in NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str(" | ")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_and_others_are_refused() {
        for v in 0..=u8::MAX {
            match FrameKind::try_from(v) {
                Ok(k) => assert_eq!(k as u8, v),
                Err(e) => {
                    assert_eq!(e, DecodeError::UnknownKind { found: v });
                    assert!(v == 0 || v > 12);
                }
            }
        }
    }

    #[test]
    fn unknown_flag_bits_are_refused() {
        assert_eq!(
            Flags::from_bits(0x0100),
            Err(DecodeError::UnknownFlags {
                bits: 0x0100,
                unknown: 0x0100
            })
        );
        assert_eq!(Flags::from_bits(0x00FF), Ok(Flags::KNOWN));
        let f = Flags::CHUNK | Flags::LAST_CHUNK;
        assert!(f.contains(Flags::CHUNK));
        assert!(!f.contains(Flags::HAS_META));
        assert_eq!(format!("{f:?}"), "Flags(CHUNK | LAST_CHUNK)");
    }
}
