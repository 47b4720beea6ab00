//! The simulator's only source of randomness: SplitMix64 streams derived from the run's seed.
//!
//! Every random choice (topology, costs, latencies, failures, router timer seeds) draws from a
//! [`Rng`] forked from the seed with a label, so adding a draw in one place does not shift the
//! numbers another place sees, and a seed reproduces a run exactly.

/// A SplitMix64 generator (Steele, Lea, Flood 2014): tiny, fast, good enough for choices.
#[derive(Clone, Debug)]
pub struct Rng(u64);

/// The SplitMix64 output function: a bijective 64-bit mixer.
#[must_use]
pub const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator for `seed`, stream `label` (different labels give unrelated streams).
    #[must_use]
    pub const fn new(seed: u64, label: u64) -> Rng {
        Rng(mix64(
            seed ^ mix64(label.wrapping_add(0x6a09_e667_f3bc_c909)),
        ))
    }

    /// The next 64 random bits.
    pub const fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    /// A number in `0..n` (`n > 0`); the modulo bias is below 2^-40 for the sizes used here.
    ///
    /// # Panics
    /// If `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        self.next_u64() % n
    }

    /// An index in `0..n` (`n > 0`).
    ///
    /// # Panics
    /// If `n` is 0.
    pub fn index(&mut self, n: usize) -> usize {
        usize::try_from(self.below(n as u64)).expect("below a usize is a usize")
    }

    /// A number in `lo..=hi`.
    ///
    /// # Panics
    /// If `lo > hi`.
    pub fn range_u32(&mut self, lo: u32, hi: u32) -> u32 {
        assert!(lo <= hi, "empty range {lo}..={hi}");
        lo + u32::try_from(self.below(u64::from(hi - lo) + 1)).expect("below a u32 span")
    }

    /// A fraction in `[0, 1)` with 53 random bits.
    #[allow(clippy::cast_precision_loss)]
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let firsts: Vec<u64> = (0..4).map(|_| Rng::new(7, 1).next_u64()).collect();
        assert!(firsts.windows(2).all(|w| w[0] == w[1]));
        let mut one = Rng::new(7, 1);
        let mut two = Rng::new(7, 2);
        assert_ne!(one.next_u64(), two.next_u64());
        let mut rng = Rng::new(1, 1);
        for _ in 0..1000 {
            let small = rng.range_u32(3, 5);
            assert!((3..=5).contains(&small));
            let frac = rng.unit();
            assert!((0.0..1.0).contains(&frac));
        }
    }
}
