//! A fixed-size histogram of the `fdatasync` durations one log's driver observed, so that a
//! benchmark or a metrics exporter can tell the device's share of append-to-durable latency
//! from the pipeline's.
//!
//! Log-linear buckets (HdrHistogram's layout with 3 sub-bucket bits): values below 8 µs are
//! exact, above that each power of two is split in 8, so a percentile is within 12.5 %. The
//! array is allocated with the log and never grows; recording is an index and an add.

/// Sub-buckets per power of two, as bits.
const SUB_BITS: u32 = 3;
const SUB_BUCKETS: u64 = 1 << SUB_BITS;
/// Enough buckets for any `u64` of microseconds.
const BUCKETS: usize = ((64 - SUB_BITS + 1) * (1 << SUB_BITS)) as usize;

/// Durations in microseconds, bucketed (see the module doc).
#[derive(Clone, PartialEq, Eq)]
pub struct SyncHistogram {
    buckets: Box<[u64; BUCKETS]>,
    count: u64,
    max_us: u64,
}

impl Default for SyncHistogram {
    fn default() -> Self {
        Self {
            buckets: Box::new([0; BUCKETS]),
            count: 0,
            max_us: 0,
        }
    }
}

impl std::fmt::Debug for SyncHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncHistogram")
            .field("count", &self.count)
            .field("p50_us", &self.percentile_us(0.5))
            .field("p99_us", &self.percentile_us(0.99))
            .field("max_us", &self.max_us)
            .finish_non_exhaustive()
    }
}

fn index_of(micros: u64) -> usize {
    if micros < SUB_BUCKETS {
        return usize::try_from(micros).unwrap_or(BUCKETS - 1);
    }
    let exponent = micros.ilog2();
    let shift = exponent - SUB_BITS;
    let sub = (micros >> shift) & (SUB_BUCKETS - 1);
    usize::try_from(u64::from(shift + 1) * SUB_BUCKETS + sub).unwrap_or(BUCKETS - 1)
}

/// The largest value that falls in bucket `index`.
fn upper_bound_of(index: usize) -> u64 {
    let index = u64::try_from(index).unwrap_or(u64::MAX);
    if index < SUB_BUCKETS {
        return index;
    }
    let shift = index / SUB_BUCKETS - 1;
    let sub = index % SUB_BUCKETS;
    ((SUB_BUCKETS + sub) << shift) + ((1 << shift) - 1)
}

impl SyncHistogram {
    /// Records one duration.
    pub fn record_us(&mut self, micros: u64) {
        self.buckets[index_of(micros)] += 1;
        self.count += 1;
        self.max_us = self.max_us.max(micros);
    }

    /// Durations recorded.
    pub const fn count(&self) -> u64 {
        self.count
    }

    /// The longest duration recorded (exact), 0 if none.
    pub const fn max_us(&self) -> u64 {
        self.max_us
    }

    /// The smallest bucket bound at or above `fraction` (0.0..=1.0) of the recorded
    /// durations: an upper estimate, within 12.5 % (exact below 8 µs, never above the max).
    /// 0 if nothing was recorded.
    pub fn percentile_us(&self, fraction: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let rank = ((self.count as f64 * fraction.clamp(0.0, 1.0)).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, &in_bucket) in self.buckets.iter().enumerate() {
            seen += in_bucket;
            if seen >= rank {
                return upper_bound_of(index).min(self.max_us);
            }
        }
        self.max_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_and_bound_it_within_an_eighth() {
        for micros in (0..5000).chain([1 << 20, (1 << 40) + 12_345, u64::MAX]) {
            let index = index_of(micros);
            assert!(index < BUCKETS);
            let upper = upper_bound_of(index);
            assert!(upper >= micros, "{micros} above its bucket bound {upper}");
            assert!(
                upper - micros <= micros / 8,
                "{micros}: bound {upper} too loose"
            );
            if index > 0 {
                assert!(
                    upper_bound_of(index - 1) < micros,
                    "{micros} in a later bucket"
                );
            }
        }
    }

    #[test]
    fn percentiles_of_a_known_set() {
        let mut histogram = SyncHistogram::default();
        assert_eq!(histogram.percentile_us(0.99), 0);
        for micros in 1..=1000 {
            histogram.record_us(micros);
        }
        assert_eq!(histogram.count(), 1000);
        assert_eq!(histogram.max_us(), 1000);
        let p50 = histogram.percentile_us(0.5);
        assert!((500..=563).contains(&p50), "p50 {p50}");
        let p99 = histogram.percentile_us(0.99);
        assert!((990..=1000).contains(&p99), "p99 {p99}");
        assert_eq!(histogram.percentile_us(1.0), 1000);
        assert_eq!(histogram.percentile_us(0.0), 1);
    }
}
