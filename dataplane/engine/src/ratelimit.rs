//! The node's rate limits on messages its clients send (SetPolicy `rate_limits`, SPEC §2):
//! a token bucket per limited destination on each core. A core gets its share of the node's
//! rate and burst (`1 / cores` of each, a burst of at least one message), so the node as a whole
//! keeps the limit whichever cores its clients land on. A client whose message finds the bucket
//! empty waits (its connection stalls: back-pressure, nothing dropped). Buckets exist only for
//! the destinations a policy named; should successive policies name more than
//! [`BUCKETS_MAX`], the buckets start over (full).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::routes::RateLimit;

/// Most buckets one core keeps.
pub(crate) const BUCKETS_MAX: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// The limit it was made for: `(msgs_per_s, burst)`.
    limit: (u32, u32),
    tokens: f64,
    last: Instant,
    rate: f64,
    burst: f64,
}

/// One core's buckets.
#[derive(Debug, Default)]
pub(crate) struct RateLimiter {
    buckets: HashMap<(bool, u64), Bucket>,
}

impl RateLimiter {
    /// Takes one message's token under `limit` for a core that is one of `cores`. `Err(wait)`:
    /// none now; one is there after `wait`.
    pub(crate) fn take(
        &mut self,
        limit: RateLimit,
        cores: usize,
        now: Instant,
    ) -> Result<(), Duration> {
        let share = f64::from(u32::try_from(cores.max(1)).unwrap_or(u32::MAX));
        let rate = f64::from(limit.msgs_per_s.max(1)) / share;
        let burst = (f64::from(limit.burst.max(1)) / share).max(1.0);
        if self.buckets.len() >= BUCKETS_MAX && !self.buckets.contains_key(&limit.scope) {
            self.buckets.clear();
        }
        let spec = (limit.msgs_per_s, limit.burst);
        let b = self.buckets.entry(limit.scope).or_insert(Bucket {
            limit: spec,
            tokens: burst,
            last: now,
            rate,
            burst,
        });
        if b.limit != spec {
            // A new policy: the new bounds, keeping what was saved up within them.
            b.limit = spec;
            b.rate = rate;
            b.burst = burst;
            b.tokens = b.tokens.min(burst);
        }
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * b.rate).min(b.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / b.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(msgs_per_s: u32, burst: u32) -> RateLimit {
        RateLimit {
            scope: (false, 9),
            msgs_per_s,
            burst,
        }
    }

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let t = Instant::now();
        let mut r = RateLimiter::default();
        let l = limit(100, 10);
        for _ in 0..10 {
            assert!(r.take(l, 1, t).is_ok());
        }
        let wait = r.take(l, 1, t).unwrap_err();
        assert_eq!(wait, Duration::from_millis(10));
        // One second later: 100 more, not 110 (the burst caps what is saved).
        let later = t + Duration::from_secs(1);
        let taken = (0..200).filter(|_| r.take(l, 1, later).is_ok()).count();
        assert_eq!(taken, 10);
        // Over 10 s of steady asks, 100 per second get through.
        let mut n = 0;
        for ms in 1..=10_000u64 {
            let now = later + Duration::from_millis(ms);
            while r.take(l, 1, now).is_ok() {
                n += 1;
            }
        }
        // (Within one message: the refill is floating point.)
        assert!((999..=1000).contains(&n), "{n}");
    }

    #[test]
    fn cores_share_the_node_limit() {
        let t = Instant::now();
        let mut cores = [RateLimiter::default(), RateLimiter::default()];
        let l = limit(100, 10);
        let mut n = 0;
        for ms in 0..=1000u64 {
            let now = t + Duration::from_millis(ms);
            for c in &mut cores {
                while c.take(l, 2, now).is_ok() {
                    n += 1;
                }
            }
        }
        // The burst (5 each) plus 100 per second across both.
        assert!((109..=110).contains(&n), "{n}");
    }

    #[test]
    fn a_new_policy_applies_at_once() {
        let t = Instant::now();
        let mut r = RateLimiter::default();
        assert!(r.take(limit(1000, 1000), 1, t).is_ok());
        let strict = limit(1, 1);
        assert!(r.take(strict, 1, t).is_ok());
        assert_eq!(r.take(strict, 1, t), Err(Duration::from_secs(1)));
        // Bounded: more scopes than BUCKETS_MAX start over.
        for id in 0..BUCKETS_MAX as u64 {
            let other = RateLimit {
                scope: (true, id + 100),
                ..strict
            };
            let _ = r.take(other, 1, t);
        }
        assert!(r.buckets.len() <= BUCKETS_MAX);
        assert!(r.take(strict, 1, t).is_ok(), "a dropped bucket starts full");
    }
}
