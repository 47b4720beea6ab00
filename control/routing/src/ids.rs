//! Identities and sequence numbers: [`NodeId`], [`DomainId`], [`SeqNo`].
//!
//! A node id is a non-zero `u64` (SPEC §2), so `Option<NodeId>` costs nothing and a zero id
//! cannot be represented past the decoder. A domain id is any `u32`.
//!
//! # Sequence numbers and wrap
//!
//! LSA sequence numbers are 32-bit and compared with serial-number arithmetic (RFC 1982):
//! `a` is newer than `b` when `a - b (mod 2^32)` lies in `1 ..= 2^31 - 1`. The space therefore
//! wraps from `u32::MAX` to `0` without any flush-and-restart dance (OSPF's MaxSequenceNumber).
//! The one pair RFC 1982 leaves undefined — two numbers exactly `2^31` apart — compares as
//! "neither is newer"; the database then breaks the tie on the content checksum like any equal
//! pair (see [`crate::lsdb::compare`]). An origin refreshes at most every few seconds, so two
//! live instances are never anywhere near `2^31` apart; a restarted origin that starts again at
//! [`SeqNo::INITIAL`] learns its old number from its neighbours and jumps past it
//! ([`crate::flood`]), whatever the distance. `SeqNo` deliberately implements no `Ord`: serial
//! numbers are not totally ordered and must not end up in a sorted container by value.

use core::fmt;
use core::num::NonZeroU64;

/// A node's identity: a non-zero `u64`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(NonZeroU64);

impl NodeId {
    /// The id `raw`, or `None` when `raw` is zero (not a valid node id).
    #[must_use]
    pub const fn new(raw: u64) -> Option<NodeId> {
        match NonZeroU64::new(raw) {
            Some(v) => Some(NodeId(v)),
            None => None,
        }
    }

    /// The id as a plain integer (never zero).
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0.get()
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A domain's identity (the unit of hierarchy, like an OSPF area). Any `u32` is valid.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainId(pub u32);

impl fmt::Debug for DomainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "d{}", self.0)
    }
}

impl fmt::Display for DomainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An LSA sequence number, compared with RFC 1982 serial arithmetic (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SeqNo(pub u32);

impl SeqNo {
    /// The number an origin uses for its first LSA after a (re)start.
    pub const INITIAL: SeqNo = SeqNo(1);

    /// Half the sequence space: the distance at which serial comparison is undefined.
    pub const HALF: u32 = 1 << 31;

    /// The following sequence number, wrapping from `u32::MAX` to `0`.
    #[must_use]
    pub const fn next(self) -> SeqNo {
        SeqNo(self.0.wrapping_add(1))
    }

    /// Whether `self` is strictly newer than `other` under serial arithmetic. Exactly one of
    /// `a.is_newer_than(b)`, `b.is_newer_than(a)`, "equal", "exactly 2^31 apart" holds.
    #[must_use]
    pub const fn is_newer_than(self, other: SeqNo) -> bool {
        let d = self.0.wrapping_sub(other.0);
        d != 0 && d < Self::HALF
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn node_id_zero_is_rejected() {
        assert!(NodeId::new(0).is_none());
        assert_eq!(NodeId::new(7).map(NodeId::get), Some(7));
        assert_eq!(core::mem::size_of::<Option<NodeId>>(), 8);
    }

    #[test]
    fn seq_wraps_and_stays_newer() {
        let max = SeqNo(u32::MAX);
        let zero = max.next();
        assert_eq!(zero, SeqNo(0));
        assert!(zero.is_newer_than(max));
        assert!(!max.is_newer_than(zero));
        assert!(zero.next().is_newer_than(max));
        assert!(!SeqNo(5).is_newer_than(SeqNo(5)));
    }

    #[test]
    fn seq_half_distance_is_neither() {
        let a = SeqNo(10);
        let b = SeqNo(10u32.wrapping_add(SeqNo::HALF));
        assert!(!a.is_newer_than(b));
        assert!(!b.is_newer_than(a));
    }

    proptest! {
        #[test]
        fn seq_serial_order(a in any::<u32>(), k in 1u32..SeqNo::HALF) {
            let a = SeqNo(a);
            let b = SeqNo(a.0.wrapping_add(k));
            prop_assert!(b.is_newer_than(a));
            prop_assert!(!a.is_newer_than(b));
        }

        #[test]
        fn seq_trichotomy(a in any::<u32>(), b in any::<u32>()) {
            let (a, b) = (SeqNo(a), SeqNo(b));
            let cases = [
                a.is_newer_than(b),
                b.is_newer_than(a),
                a == b,
                a.0.wrapping_sub(b.0) == SeqNo::HALF,
            ];
            prop_assert_eq!(cases.iter().filter(|c| **c).count(), 1);
        }

        #[test]
        fn seq_next_is_newer(a in any::<u32>()) {
            prop_assert!(SeqNo(a).next().is_newer_than(SeqNo(a)));
        }
    }
}
