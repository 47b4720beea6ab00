//! Exponential backoff with jitter for the Redis I/O thread, without I/O or clock: the delay
//! doubles from `min` to at most `max` with each failure in a row, and a seeded generator picks
//! each delay uniformly in its upper half, so the nodes that lost one server do not reconnect in
//! lockstep. The same seed gives the same delays.

use std::time::Duration;

/// The delays between attempts of one failure streak.
#[derive(Debug, Clone)]
pub(super) struct Backoff {
    min: Duration,
    max: Duration,
    /// Failures in a row so far.
    attempt: u32,
    /// SplitMix64 state.
    rng: u64,
}

impl Backoff {
    /// Delays from `min` up to `max` (`min <= max`), jitter from `seed`.
    pub(super) fn new(min: Duration, max: Duration, seed: u64) -> Self {
        Self {
            min,
            max: max.max(min),
            attempt: 0,
            rng: seed,
        }
    }

    /// Failures in a row since the last [`Backoff::reset`].
    pub(super) fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Success: the next failure waits `min` again.
    pub(super) fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The delay before the next attempt, in `[ceiling / 2, ceiling]` where the ceiling is
    /// `min * 2^failures` capped at `max`.
    pub(super) fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .min
            .checked_mul(1u32 << self.attempt.min(20))
            .map_or(self.max, |delay| delay.min(self.max));
        self.attempt = self.attempt.saturating_add(1);
        let ceiling_ns = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        let half = ceiling_ns / 2;
        let jitter = self.next_random() % (ceiling_ns - half + 1);
        Duration::from_nanos(half + jitter)
    }

    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_bounded_with_jitter() {
        let min = Duration::from_millis(10);
        let max = Duration::from_millis(500);
        let mut backoff = Backoff::new(min, max, 7);
        let delays: Vec<Duration> = (0..20).map(|_| backoff.next_delay()).collect();
        for (attempt, delay) in delays.iter().enumerate() {
            let ceiling = min.checked_mul(1 << attempt.min(20)).unwrap().min(max);
            assert!(
                *delay <= ceiling && *delay >= ceiling / 2,
                "{attempt}: {delay:?}"
            );
        }
        assert!(delays[19] >= max / 2);
        assert_eq!(backoff.attempts(), 20);
        backoff.reset();
        assert!(backoff.next_delay() <= min);
        let mut again = Backoff::new(min, max, 7);
        assert_eq!(
            again.next_delay(),
            delays[0],
            "a seed reproduces the delays"
        );
        let mut other = Backoff::new(min, max, 8);
        let other: Vec<Duration> = (0..20).map(|_| other.next_delay()).collect();
        assert_ne!(other, delays, "another seed jitters differently");
    }
}
