//! Latency histograms (hdrhistogram, nanoseconds, 3 significant digits) and their summary.
//!
//! A latency run records one histogram per one-second window, so the JSON can show whether
//! the tail was steady or one bad second; the run's figures come from merging the windows.
//! Merging is exact: hdrhistogram buckets add up.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency a histogram holds; larger samples are clamped to it (and show as max).
pub const LATENCY_MAX_NS: u64 = 60_000_000_000;

/// Latencies in nanoseconds.
#[derive(Debug, Clone)]
pub struct LatencyHist {
    h: Histogram<u64>,
}

impl Default for LatencyHist {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHist {
    /// An empty histogram covering 1 ns to [`LATENCY_MAX_NS`].
    ///
    /// # Panics
    /// Never: the bounds are constants hdrhistogram accepts.
    pub fn new() -> LatencyHist {
        let h =
            Histogram::new_with_bounds(1, LATENCY_MAX_NS, 3).expect("constant bounds are valid");
        LatencyHist { h }
    }

    /// Records one latency (0 counts as 1 ns, above the bound as the bound).
    pub fn record(&mut self, ns: u64) {
        self.h.saturating_record(ns.clamp(1, LATENCY_MAX_NS));
    }

    /// Adds every sample of `other` to this one.
    ///
    /// # Panics
    /// Never: every `LatencyHist` has the same bounds, and those always merge.
    pub fn merge(&mut self, other: &LatencyHist) {
        self.h
            .add(&other.h)
            .expect("histograms with the same bounds always merge");
    }

    /// Samples recorded.
    pub fn len(&self) -> u64 {
        self.h.len()
    }

    /// No samples.
    pub fn is_empty(&self) -> bool {
        self.h.is_empty()
    }

    /// The percentiles this harness reports, in microseconds.
    #[allow(clippy::cast_precision_loss)] // ns -> µs as f64 for display
    pub fn summary(&self) -> LatencySummary {
        let us = |ns: u64| ns as f64 / 1_000.0;
        if self.h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: self.h.len(),
            p50_us: us(self.h.value_at_quantile(0.50)),
            p99_us: us(self.h.value_at_quantile(0.99)),
            p999_us: us(self.h.value_at_quantile(0.999)),
            max_us: us(self.h.max()),
            mean_us: self.h.mean() / 1_000.0,
        }
    }
}

/// Latency percentiles of a run (microseconds); all zero when nothing was recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest sample.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(x: &mut u64) -> u64 {
        *x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        *x >> 33
    }

    #[test]
    fn merging_windows_equals_recording_everything_in_one() {
        let mut x = 7;
        let mut all = LatencyHist::new();
        let mut windows = vec![LatencyHist::new(); 5];
        for i in 0..50_000 {
            // Mostly ~20-80 µs, a tail up to 20 ms.
            let ns = if i % 997 == 0 {
                1_000_000 + lcg(&mut x) % 19_000_000
            } else {
                20_000 + lcg(&mut x) % 60_000
            };
            all.record(ns);
            windows[i % 5].record(ns);
        }
        let mut merged = LatencyHist::new();
        for w in &windows {
            merged.merge(w);
        }
        assert_eq!(merged.len(), 50_000);
        assert_eq!(merged.summary(), all.summary());
        let s = merged.summary();
        assert!(s.p50_us > 40.0 && s.p50_us < 60.0, "{s:?}");
        assert!(s.p999_us > 1_000.0, "the 1/997 tail shows at p99.9: {s:?}");
        assert!(s.max_us <= 20_000.0 * 1.001);
    }

    #[test]
    fn merging_an_empty_histogram_changes_nothing() {
        let mut a = LatencyHist::new();
        a.record(1_500);
        a.record(2_500);
        let before = a.summary();
        a.merge(&LatencyHist::new());
        assert_eq!(a.summary(), before);
        let mut e = LatencyHist::new();
        e.merge(&a);
        assert_eq!(e.summary(), before);
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = LatencyHist::new();
        for us in 1..=1_000u64 {
            h.record(us * 1_000);
        }
        let s = h.summary();
        assert_eq!(s.count, 1_000);
        assert!((s.p50_us - 500.0).abs() <= 0.5, "{s:?}");
        assert!((s.p99_us - 990.0).abs() <= 1.0, "{s:?}");
        assert!((s.p999_us - 999.0).abs() <= 1.0, "{s:?}");
        assert!((s.max_us - 1_000.0).abs() <= 1.0, "{s:?}");
        assert_eq!(LatencyHist::new().summary(), LatencySummary::default());
    }

    #[test]
    fn out_of_range_samples_are_clamped_not_lost() {
        let mut h = LatencyHist::new();
        h.record(0);
        h.record(u64::MAX);
        assert_eq!(h.len(), 2);
    }
}
