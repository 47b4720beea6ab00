//! Exponential backoff with full jitter for outbound connects.
//!
//! Before attempt *n* (0-based, counting failures since the last success) the dialer waits a
//! delay drawn uniformly from `[0, min(cap, base · 2ⁿ)]` ("full jitter", as in the AWS
//! architecture blog's analysis): retries of many nodes that lost the same peer spread out
//! instead of arriving in waves. [`Backoff::reset`] after a session is established starts
//! over from `base`. Randomness comes from a seeded [`SplitMix64`], so a simulation replays
//! the same delays.

use std::time::Duration;

use crate::rng::SplitMix64;

/// Backoff parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Ceiling of the first delay.
    pub base: Duration,
    /// Largest ceiling any delay may have.
    pub cap: Duration,
    /// Failed attempts after which [`Backoff::next_delay`] gives up (`None`: retry forever,
    /// what a configured `--connect` peer wants; the delay stays bounded by `cap`).
    pub max_attempts: Option<u32>,
}

impl Default for BackoffConfig {
    /// 100 ms base, 10 s cap, retry forever.
    fn default() -> Self {
        Self {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
            max_attempts: None,
        }
    }
}

/// Backoff state for one outbound peer.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    attempt: u32,
    rng: SplitMix64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Backoff {
    /// Backoff under `config`, its jitter drawn from a generator seeded with `seed`.
    pub fn new(config: BackoffConfig, seed: u64) -> Self {
        Self {
            config,
            attempt: 0,
            rng: SplitMix64::new(seed),
        }
    }

    /// Failed attempts since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The ceiling of the next delay: `min(cap, base · 2^attempt)`.
    pub fn ceiling(&self) -> Duration {
        let base = nanos(self.config.base);
        let cap = nanos(self.config.cap);
        let factor = 1u64.checked_shl(self.attempt).unwrap_or(u64::MAX);
        Duration::from_nanos(base.saturating_mul(factor).min(cap))
    }

    /// The delay to wait before the next connect attempt, and counts the attempt; `None` once
    /// `max_attempts` failures have been counted.
    pub fn next_delay(&mut self) -> Option<Duration> {
        if self.config.max_attempts.is_some_and(|m| self.attempt >= m) {
            return None;
        }
        let ceiling = nanos(self.ceiling());
        let delay = Duration::from_nanos(self.rng.below_or_equal(ceiling));
        self.attempt = self.attempt.saturating_add(1);
        Some(delay)
    }

    /// A connection succeeded: the next failure starts from `base` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let mut b = Backoff::new(BackoffConfig::default(), 1);
        let expected_ms = [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000];
        for ms in expected_ms {
            assert_eq!(b.ceiling(), Duration::from_millis(ms));
            let d = b.next_delay().unwrap();
            assert!(d <= Duration::from_millis(ms), "{d:?} over {ms} ms");
        }
        // Far past the point where base · 2^n overflows, the ceiling stays at the cap.
        for _ in 0..200 {
            assert!(b.next_delay().unwrap() <= Duration::from_secs(10));
        }
        assert_eq!(b.ceiling(), Duration::from_secs(10));
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(BackoffConfig::default(), 2);
        for _ in 0..5 {
            let _ = b.next_delay();
        }
        assert_eq!(b.attempt(), 5);
        b.reset();
        assert_eq!(b.attempt(), 0);
        assert_eq!(b.ceiling(), Duration::from_millis(100));
        assert!(b.next_delay().unwrap() <= Duration::from_millis(100));
    }

    #[test]
    fn seeded_runs_repeat_and_jitter_spreads() {
        let run = |seed| {
            let mut b = Backoff::new(BackoffConfig::default(), seed);
            (0..20).map(|_| b.next_delay().unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        // Full jitter: delays at the cap are spread over [0, cap], not clustered at it.
        let mut b = Backoff::new(BackoffConfig::default(), 3);
        for _ in 0..10 {
            let _ = b.next_delay();
        }
        let delays: Vec<_> = (0..1000).map(|_| b.next_delay().unwrap()).collect();
        let below_half = delays
            .iter()
            .filter(|d| **d < Duration::from_secs(5))
            .count();
        assert!(
            (350..650).contains(&below_half),
            "{below_half} of 1000 below half the cap"
        );
    }

    #[test]
    fn gives_up_after_max_attempts() {
        let config = BackoffConfig {
            max_attempts: Some(3),
            ..BackoffConfig::default()
        };
        let mut b = Backoff::new(config, 4);
        assert!(b.next_delay().is_some());
        assert!(b.next_delay().is_some());
        assert!(b.next_delay().is_some());
        assert_eq!(b.next_delay(), None);
        b.reset();
        assert!(b.next_delay().is_some());
    }
}
