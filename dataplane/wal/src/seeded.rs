//! Seeded hashing for the maps whose keys come from the network (source nodes, msg_ids).
//!
//! The seed is an input, like every other source of randomness in this crate: the same seed and
//! the same inputs give the same map layout and the same iteration order, so a simulation
//! replays exactly. A peer that does not know the seed cannot aim keys at one bucket.

use std::hash::{BuildHasher, DefaultHasher, Hasher};

/// Builds `DefaultHasher`s (SipHash, fixed keys) primed with a secret seed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SeededState {
    seed: u64,
}

impl SeededState {
    /// A hasher factory for `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self { seed }
    }
}

impl BuildHasher for SeededState {
    type Hasher = DefaultHasher;

    fn build_hasher(&self) -> DefaultHasher {
        // `DefaultHasher::new()` is documented to be identical for every instance, so the only
        // variation is the seed written first.
        let mut hasher = DefaultHasher::new();
        hasher.write_u64(self.seed);
        hasher
    }
}
