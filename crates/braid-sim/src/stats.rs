//! Measurement helpers for scenario tests and `braid demo`: a latency recorder over an
//! HDR histogram and its percentile summary in microseconds.
//!
//! It owns only recording and summarising; what is measured (one-way delay of a flow,
//! reorder hold, ...) is up to the caller, which passes the sample or the two instants.

use core::time::Duration;

use braid_core::Instant;
use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency the recorder resolves (larger samples are recorded as this): one hour.
pub const LATENCY_MAX: Duration = Duration::from_secs(3600);

/// Records latencies with 3 significant digits (≤ 0.1 % error) from 1 ns to one hour.
#[derive(Debug, Clone)]
pub struct LatencyRecorder {
    hist: Histogram<u64>,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyRecorder {
    /// An empty recorder (about 270 KiB of counters).
    ///
    /// # Panics
    /// Never: the bounds are constants that hdrhistogram accepts.
    #[must_use]
    pub fn new() -> Self {
        let high = u64::try_from(LATENCY_MAX.as_nanos()).expect("invariant: one hour fits u64 ns");
        Self {
            hist: Histogram::new_with_bounds(1, high, 3)
                .expect("invariant: valid histogram bounds"),
        }
    }

    /// Records one sample (saturating at [`LATENCY_MAX`]).
    pub fn record(&mut self, latency: Duration) {
        self.hist
            .saturating_record(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Records `received − sent` (zero if `received` is earlier).
    pub fn record_between(&mut self, sent: Instant, received: Instant) {
        self.record(received.saturating_duration_since(sent));
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Self) {
        // Both histograms have the same bounds, so `add` cannot fail; saturate if it did.
        if self.hist.add(&other.hist).is_err() {
            for v in other.hist.iter_recorded() {
                self.hist
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
    }

    /// Number of samples.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// Forgets every sample.
    pub fn reset(&mut self) {
        self.hist.reset();
    }

    /// The latency at quantile `q` in [0, 1] (0 if empty).
    #[must_use]
    pub fn quantile(&self, q: f64) -> Duration {
        Duration::from_nanos(self.hist.value_at_quantile(q))
    }

    /// Count, mean and percentiles in microseconds (all 0 if empty).
    #[must_use]
    pub fn summary(&self) -> LatencySummary {
        let us = |ns: u64| ns as f64 / 1_000.0;
        if self.hist.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: self.hist.len(),
            min_us: us(self.hist.min()),
            mean_us: self.hist.mean() / 1_000.0,
            p50_us: us(self.hist.value_at_quantile(0.50)),
            p90_us: us(self.hist.value_at_quantile(0.90)),
            p99_us: us(self.hist.value_at_quantile(0.99)),
            p999_us: us(self.hist.value_at_quantile(0.999)),
            max_us: us(self.hist.max()),
        }
    }
}

/// Percentiles of a [`LatencyRecorder`], in microseconds (values are the histogram's
/// bucket bounds: within 0.1 % of the exact sample).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Number of samples.
    pub count: u64,
    /// Smallest sample, µs.
    pub min_us: f64,
    /// Arithmetic mean, µs.
    pub mean_us: f64,
    /// Median, µs.
    pub p50_us: f64,
    /// 90th percentile, µs.
    pub p90_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// 99.9th percentile, µs.
    pub p999_us: f64,
    /// Largest sample, µs.
    pub max_us: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= b.abs() * 0.001 + 1e-9
    }

    #[test]
    fn percentiles_of_uniform_samples() {
        let mut r = LatencyRecorder::new();
        assert_eq!(r.summary(), LatencySummary::default());
        for us in 1..=10_000u64 {
            r.record(Duration::from_micros(us));
        }
        let s = r.summary();
        assert_eq!(s.count, 10_000);
        assert!(close(s.min_us, 1.0), "{s:?}");
        assert!(close(s.p50_us, 5_000.0), "{s:?}");
        assert!(close(s.p90_us, 9_000.0), "{s:?}");
        assert!(close(s.p99_us, 9_900.0), "{s:?}");
        assert!(close(s.p999_us, 9_990.0), "{s:?}");
        assert!(close(s.max_us, 10_000.0), "{s:?}");
        assert!(close(s.mean_us, 5_000.5), "{s:?}");
    }

    #[test]
    fn between_merge_and_saturation() {
        let mut a = LatencyRecorder::new();
        a.record_between(Instant::from_micros(10), Instant::from_micros(35));
        a.record_between(Instant::from_micros(50), Instant::from_micros(40)); // clock order: 0
        let mut b = LatencyRecorder::new();
        b.record(Duration::from_secs(7200));
        a.merge(&b);
        assert_eq!(a.count(), 3);
        let s = a.summary();
        assert_eq!(s.min_us, 0.0);
        assert!(close(s.max_us, 3_600_000_000.0), "{s:?}");
        assert!(close(a.quantile(0.5).as_secs_f64() * 1e6, 25.0));
        a.reset();
        assert_eq!(a.count(), 0);
    }
}
