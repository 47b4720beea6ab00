//! Rate control for the latency runs: an open-loop pacer on an absolute schedule.
//!
//! Message `k` (from 0) is due at `k / rate` seconds after the start. The pacer is told how
//! much time has passed and answers how many messages are due now, so a late wake-up (the
//! thread slept too long, the machine is busy) yields a small burst that catches up rather
//! than a schedule that slips: after any sequence of calls, the total handed out is exactly
//! `floor(elapsed * rate)` (unless the burst cap holds some back, which stay due). No clock
//! inside: the caller passes the elapsed time, so tests drive it with made-up times.

use std::time::Duration;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Hands out messages at `rate_per_s` against the elapsed time since the start.
#[derive(Debug, Clone)]
pub struct Pacer {
    rate_per_s: u64,
    burst_max: u64,
    sent: u64,
}

impl Pacer {
    /// A pacer for `rate_per_s` messages per second (at least 1) that hands out at most
    /// `burst_max` (at least 1) per call.
    pub fn new(rate_per_s: u64, burst_max: u64) -> Pacer {
        Pacer {
            rate_per_s: rate_per_s.max(1),
            burst_max: burst_max.max(1),
            sent: 0,
        }
    }

    /// The rate this pacer keeps.
    pub fn rate_per_s(&self) -> u64 {
        self.rate_per_s
    }

    /// Messages handed out so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Messages the schedule wants sent by `elapsed` in total.
    fn scheduled(&self, elapsed: Duration) -> u64 {
        let n = elapsed.as_nanos() * u128::from(self.rate_per_s) / NANOS_PER_SEC;
        u64::try_from(n).unwrap_or(u64::MAX)
    }

    /// How many messages to send now, `elapsed` after the start; the caller sends them all.
    /// Never more than the burst cap; what the cap holds back is due at the next call.
    pub fn due(&mut self, elapsed: Duration) -> u64 {
        let n = self
            .scheduled(elapsed)
            .saturating_sub(self.sent)
            .min(self.burst_max);
        self.sent += n;
        n
    }

    /// How far the sender is behind the schedule at `elapsed`, in messages.
    pub fn behind(&self, elapsed: Duration) -> u64 {
        self.scheduled(elapsed).saturating_sub(self.sent)
    }

    /// When (since the start) the next message falls due.
    pub fn next_due(&self) -> Duration {
        // The smallest t with floor(t * rate) >= sent + 1: ceil((sent + 1) / rate).
        let nanos = (u128::from(self.sent) + 1) * NANOS_PER_SEC;
        let t = nanos.div_ceil(u128::from(self.rate_per_s));
        Duration::from_nanos(u64::try_from(t).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_exactly_the_schedule_whatever_the_wakeups() {
        // Wake-ups at irregular times (a fixed pseudo-random walk): the total never drifts.
        let mut p = Pacer::new(20_000, u64::MAX);
        let mut t = Duration::ZERO;
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut total = 0;
        loop {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            t += Duration::from_micros(1 + x % 700);
            if t >= Duration::from_secs(10) {
                break;
            }
            total += p.due(t);
            assert_eq!(total, p.scheduled(t));
        }
        let end = Duration::from_secs(10);
        total += p.due(end);
        assert_eq!(total, 200_000);
    }

    #[test]
    fn waking_at_next_due_yields_one_message_each_time() {
        let mut p = Pacer::new(3, 100); // 1/3 s apart: rounding matters
        let mut got = Vec::new();
        for _ in 0..9 {
            let t = p.next_due();
            assert_eq!(p.due(t), 1, "at {t:?}");
            got.push(t);
            assert_eq!(p.due(t), 0, "nothing more at {t:?}");
        }
        assert_eq!(got[2], Duration::from_secs(1));
        assert_eq!(got[8], Duration::from_secs(3));
        assert!(got.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn the_burst_cap_defers_but_does_not_forget() {
        let mut p = Pacer::new(1_000, 10);
        let t = Duration::from_millis(35);
        assert_eq!(p.due(t), 10);
        assert_eq!(p.behind(t), 25);
        assert_eq!(p.due(t), 10);
        assert_eq!(p.due(t), 10);
        assert_eq!(p.due(t), 5);
        assert_eq!(p.due(t), 0);
        assert_eq!(p.sent(), 35);
    }

    #[test]
    fn nothing_is_due_at_the_start() {
        let mut p = Pacer::new(1_000_000, 1);
        assert_eq!(p.due(Duration::ZERO), 0);
        assert_eq!(p.next_due(), Duration::from_micros(1));
    }
}
