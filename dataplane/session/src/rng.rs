//! A tiny deterministic PRNG (SplitMix64) for jitter.
//!
//! Protocol cores take randomness as an input: the shell seeds this generator from its own
//! RNG, and a test or simulation seeds it with a constant so that a run reproduces exactly.
//! SplitMix64 (Steele, Lea, Flood 2014; the seeder of xoshiro) is not cryptographic and is
//! never used for anything secret: nonces and keys come from the shell.

/// SplitMix64: 64 bits of state, every seed (including 0) gives a full-period sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose whole sequence is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value uniformly distributed in `0..=max` (Lemire's multiply-shift; the bias is below
    /// 2⁻⁶⁴ · max, irrelevant for jitter).
    pub fn below_or_equal(&mut self, max: u64) -> u64 {
        if max == u64::MAX {
            return self.next_u64();
        }
        let range = u128::from(max) + 1;
        let wide = u128::from(self.next_u64()) * range;
        // wide >> 64 < range <= 2^64, so it fits in u64.
        u64::try_from(wide >> 64).unwrap_or(max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_sequence() {
        // Reference values of SplitMix64 seeded with 1234567 (from the published C code).
        let mut r = SplitMix64::new(1_234_567);
        assert_eq!(r.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(r.next_u64(), 3_203_168_211_198_807_973);
        assert_eq!(r.next_u64(), 9_817_491_932_198_370_423);
    }

    #[test]
    fn same_seed_same_sequence_and_bounds_hold() {
        let mut a = SplitMix64::new(42);
        let mut b = SplitMix64::new(42);
        for _ in 0..1000 {
            let x = a.below_or_equal(10);
            assert_eq!(x, b.below_or_equal(10));
            assert!(x <= 10);
        }
        assert_eq!(a.below_or_equal(0), 0);
        let _ = a.below_or_equal(u64::MAX);
    }

    #[test]
    fn covers_the_whole_range() {
        let mut r = SplitMix64::new(7);
        let mut seen = [false; 8];
        for _ in 0..1000 {
            seen[usize::try_from(r.below_or_equal(7)).unwrap()] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
