//! Size limits of the wire layer. Every length a peer announces is checked against these
//! before a byte is allocated for it (TigerBeetle style: a limit on everything).

use crate::error::LimitsError;
use crate::header::HEADER_LEN_U32;

/// Default maximum frame length (header + body): 1 MiB.
pub const DEFAULT_MAX_FRAME_LEN: u32 = 1 << 20;
/// Hard cap on any negotiated frame length: 16 MiB.
pub const MAX_FRAME_LEN_HARD_CAP: u32 = 16 << 20;
/// Smallest frame length a node may negotiate: a header plus 4 KiB.
pub const MIN_FRAME_LEN: u32 = HEADER_LEN_U32 + 4096;
/// Default maximum CBOR metadata length: 16 KiB.
pub const DEFAULT_MAX_META_LEN: u32 = 16 << 10;

/// The limits a decoder enforces. Build with [`Limits::new`] (validated) or use the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame accepted, header included.
    pub max_frame_len: u32,
    /// Largest CBOR metadata accepted.
    pub max_meta_len: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_meta_len: DEFAULT_MAX_META_LEN,
        }
    }
}

impl Limits {
    /// Validated limits: `max_frame_len` within `[MIN_FRAME_LEN, MAX_FRAME_LEN_HARD_CAP]`,
    /// `max_meta_len` at most `u16::MAX` and leaving room for a payload.
    pub fn new(max_frame_len: u32, max_meta_len: u32) -> Result<Self, LimitsError> {
        if !(MIN_FRAME_LEN..=MAX_FRAME_LEN_HARD_CAP).contains(&max_frame_len) {
            return Err(LimitsError::FrameLenOutOfRange {
                value: max_frame_len,
                min: MIN_FRAME_LEN,
                max: MAX_FRAME_LEN_HARD_CAP,
            });
        }
        let meta_max = u32::from(u16::MAX).min(max_frame_len - HEADER_LEN_U32 - 1024);
        if max_meta_len > meta_max {
            return Err(LimitsError::MetaLenTooLarge {
                value: max_meta_len,
                max: meta_max,
            });
        }
        Ok(Self {
            max_frame_len,
            max_meta_len,
        })
    }

    /// Largest body (metadata + payload) accepted.
    pub fn max_body_len(&self) -> u32 {
        self.max_frame_len - HEADER_LEN_U32
    }

    /// The limits two peers agree on: the smaller of each.
    #[must_use]
    pub fn negotiate(&self, peer: &Limits) -> Limits {
        Limits {
            max_frame_len: self.max_frame_len.min(peer.max_frame_len),
            max_meta_len: self.max_meta_len.min(peer.max_meta_len),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_enforced() {
        assert!(Limits::new(DEFAULT_MAX_FRAME_LEN, DEFAULT_MAX_META_LEN).is_ok());
        assert_eq!(
            Limits::new(MAX_FRAME_LEN_HARD_CAP + 1, 0),
            Err(LimitsError::FrameLenOutOfRange {
                value: MAX_FRAME_LEN_HARD_CAP + 1,
                min: MIN_FRAME_LEN,
                max: MAX_FRAME_LEN_HARD_CAP
            })
        );
        assert!(Limits::new(MIN_FRAME_LEN - 1, 0).is_err());
        assert!(Limits::new(DEFAULT_MAX_FRAME_LEN, 70_000).is_err());
        let a = Limits::new(MIN_FRAME_LEN, 1024).unwrap();
        let n = a.negotiate(&Limits::default());
        assert_eq!(n, a);
    }
}
