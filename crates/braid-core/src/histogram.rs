//! A fixed-size, log-bucketed latency histogram: O(1) recording with no allocation,
//! mergeable by adding buckets, percentiles with a bounded relative error.
//!
//! Owns: the bucket layout ([`bucket_index`], [`bucket_upper_ns`]), recording, merging,
//! differencing two cumulative readings ([`LatencyHistogram::since`]), percentile queries and
//! the coarser bucket edges exported to Prometheus ([`LatencyHistogram::export_buckets`]).
//! Does not own what is measured (the engine records probe RTTs, one-way delay variation and
//! reorder holds, `engine/metrics.rs`) nor units other than nanoseconds.
//!
//! # Layout
//!
//! Values are nanoseconds. A value `ns` is first scaled to `v = (ns − 1) >> 7` (units of
//! [`RESOLUTION_NS`] = 128 ns; `ns = 0` counts as 1). Values `v < 8` get one bucket each
//! (linear: 0..=1024 ns in 128 ns steps). Above that every power of two `[2^p, 2^(p+1))` of
//! `v` is split into 8 equal sub-buckets ([`SUB_BUCKETS`]), HDR-histogram style: the bucket
//! index is `s·8 + (v >> s)` with `s = max(⌊log2 v⌋ − 3, 0)`, a leading-zero count, a
//! subtraction, a shift, a multiply-add and a clamp. 200 buckets ([`BUCKETS`]) reach
//! 2^34 ns (17.2 s); the last bucket is open-ended (everything above
//! `bucket_upper_ns(BUCKETS - 2)`, 16.1 s). 1,632 bytes in all.
//!
//! Bucket `i` holds the values in `(bucket_upper_ns(i − 1), bucket_upper_ns(i)]` (bucket 0:
//! `[0, 128]`), so an upper edge is a Prometheus `le` exactly.
//!
//! # Error bound
//!
//! Counts are exact, so a quantile query finds the bucket that holds the exact quantile `x`
//! (the nearest-rank sample: the `⌈q·n⌉`-th smallest, at least the first). It reports the
//! bucket's midpoint, clamped to the exact minimum and maximum recorded. A bucket is at most
//! 1/8 as wide as its lower edge (128 ns wide below 1,024 ns), hence
//!
//! `|estimate − x| ≤ max(x / 16, 64 ns)`
//!
//! for every `x` up to 16.1 s: a relative error of at most 6.25 %, and at most 64 ns below
//! 1.024 µs. Values in the open last bucket are reported as the largest value recorded. The
//! proptest in this file checks the bound against exact percentiles of random samples.
//!
//! # Why this shape
//!
//! hdrhistogram (used by braid-sim) allocates and needs `std`; the engine records on the
//! packet path (a reorder hold per released datagram, a delay sample per received packet)
//! and must not allocate, so the histogram is one inline array. 8 sub-buckets per power of
//! two keep it small enough to hold one per NIC and copy in every metrics snapshot, with an
//! error well below what a latency percentile is read for. Counts only grow: a reader keeps
//! an earlier copy and takes the difference ([`LatencyHistogram::since`]) for an interval,
//! as Prometheus does with cumulative buckets.

use core::fmt;

/// Width of the linear buckets and of the first power of two, ns (the scale of `v`).
pub const RESOLUTION_NS: u64 = 1 << UNIT_SHIFT;
/// Sub-buckets per power of two.
pub const SUB_BUCKETS: usize = 1 << SUB_BUCKET_BITS;
/// Buckets in all; the last is open-ended.
pub const BUCKETS: usize = 200;
/// Every [`EXPORT_STRIDE`]-th bucket edge, from 1,024 ns on, is exported to Prometheus.
pub const EXPORT_STRIDE: usize = 4;
/// The first exported bucket (upper edge 1,024 ns).
const EXPORT_FIRST: usize = 7;
/// Edges exported by [`LatencyHistogram::export_buckets`] (before `+Inf`): two per power of
/// two (×1 and ×1.5), 1.024 µs to 12.9 s.
pub const EXPORT_EDGES: usize = (BUCKETS - 1 - EXPORT_FIRST).div_ceil(EXPORT_STRIDE);

const UNIT_SHIFT: u32 = 7;
const SUB_BUCKET_BITS: u32 = 3;

/// The bucket that holds `ns`. See the module doc.
#[inline]
#[must_use]
pub const fn bucket_index(ns: u64) -> usize {
    let v = ns.saturating_sub(1) >> UNIT_SHIFT;
    // ⌊log2 v⌋ − 3, at least 0 (`v | 1` keeps the leading-zero count below 64).
    let s = (63 - (v | 1).leading_zeros()).saturating_sub(SUB_BUCKET_BITS);
    let i = ((s as u64) << SUB_BUCKET_BITS) + (v >> s);
    if i >= BUCKETS as u64 {
        BUCKETS - 1
    } else {
        i as usize
    }
}

/// Inclusive upper edge of bucket `i`, ns (`u64::MAX` for the last, open bucket).
#[must_use]
pub const fn bucket_upper_ns(i: usize) -> u64 {
    if i >= BUCKETS - 1 {
        return u64::MAX;
    }
    let i = i as u64;
    let s = (i >> SUB_BUCKET_BITS).saturating_sub(1);
    let m = i - (s << SUB_BUCKET_BITS);
    (m + 1) << (s + UNIT_SHIFT as u64)
}

/// Exclusive lower edge of bucket `i`, ns (bucket 0 includes 0).
const fn bucket_lower_ns(i: usize) -> u64 {
    if i == 0 { 0 } else { bucket_upper_ns(i - 1) }
}

/// A latency histogram in nanoseconds. See the module doc for the layout and the error bound.
///
/// `Default` is empty. Recording is O(1) and never allocates; `merge` adds another
/// histogram's samples; `since` turns two cumulative readings into the samples between them.
#[derive(Clone, PartialEq, Eq)]
pub struct LatencyHistogram {
    counts: [u64; BUCKETS],
    count: u64,
    sum_ns: u64,
    min_ns: u64,
    max_ns: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            counts: [0; BUCKETS],
            count: 0,
            sum_ns: 0,
            min_ns: u64::MAX,
            max_ns: 0,
        }
    }
}

impl fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("count", &self.count)
            .field("sum_ns", &self.sum_ns)
            .field("min_ns", &self.min_ns())
            .field("max_ns", &self.max_ns())
            .field("p50_ns", &self.quantile_ns(500_000))
            .field("p99_ns", &self.quantile_ns(990_000))
            .finish_non_exhaustive()
    }
}

impl LatencyHistogram {
    /// Record one sample. A few integer operations; no allocation, no branch on the value
    /// beyond the clamp.
    #[inline]
    pub fn record(&mut self, ns: u64) {
        let i = bucket_index(ns);
        self.counts[i] = self.counts[i].wrapping_add(1);
        self.count = self.count.wrapping_add(1);
        self.sum_ns = self.sum_ns.saturating_add(ns);
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    /// Samples recorded.
    #[must_use]
    pub const fn count(&self) -> u64 {
        self.count
    }

    /// Sum of the samples, ns (saturating).
    #[must_use]
    pub const fn sum_ns(&self) -> u64 {
        self.sum_ns
    }

    /// The smallest sample (for a histogram from [`Self::since`], an estimate within the
    /// module's bound); `None` if empty.
    #[must_use]
    pub const fn min_ns(&self) -> Option<u64> {
        if self.count == 0 {
            None
        } else {
            Some(self.min_ns)
        }
    }

    /// The largest sample (for a histogram from [`Self::since`], an estimate within the
    /// module's bound); `None` if empty.
    #[must_use]
    pub const fn max_ns(&self) -> Option<u64> {
        if self.count == 0 {
            None
        } else {
            Some(self.max_ns)
        }
    }

    /// Samples in bucket `i` (0 out of range).
    #[must_use]
    pub fn bucket_count(&self, i: usize) -> u64 {
        self.counts.get(i).copied().unwrap_or(0)
    }

    /// Add `other`'s samples (workers, NICs): buckets, count and sum add; min and max combine.
    pub fn merge(&mut self, other: &Self) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.wrapping_add(*b);
        }
        self.count = self.count.wrapping_add(other.count);
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
        self.min_ns = self.min_ns.min(other.min_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    /// The samples recorded after `earlier`, an earlier reading of the same cumulative
    /// histogram (counts only grow; a count that shrank counts as 0). The minimum and maximum
    /// of the interval are not kept: the result carries estimates of them (the midpoints of
    /// its lowest and highest non-empty buckets, narrowed by `self`'s exact extremes, which
    /// bound them), so its quantiles, 0 and 1 included, keep the module's error bound.
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        let mut d = Self::default();
        let (mut lowest, mut highest) = (None, 0);
        for (i, (a, b)) in self.counts.iter().zip(earlier.counts.iter()).enumerate() {
            let n = a.saturating_sub(*b);
            d.counts[i] = n;
            d.count = d.count.saturating_add(n);
            if n > 0 {
                lowest = lowest.or(Some(i));
                highest = i;
            }
        }
        d.sum_ns = self.sum_ns.saturating_sub(earlier.sum_ns);
        if let Some(lowest) = lowest {
            let (lo, hi) = (self.min_ns.min(self.max_ns), self.max_ns);
            d.min_ns = self.midpoint_ns(lowest).clamp(lo, hi);
            d.max_ns = self.midpoint_ns(highest).clamp(lo, hi);
        }
        d
    }

    /// The value reported for bucket `i`: its midpoint; the largest sample for the open
    /// last bucket.
    fn midpoint_ns(&self, i: usize) -> u64 {
        if i >= BUCKETS - 1 {
            self.max_ns
        } else {
            let lo = bucket_lower_ns(i);
            lo + (bucket_upper_ns(i) - lo) / 2
        }
    }

    /// The value at quantile `ppm` (parts per million: 500,000 = median, 999,000 = 99.9th
    /// percentile; above 1,000,000 counts as 1,000,000), ns: the minimum or the maximum if
    /// the nearest-rank sample is the first or the last, else the midpoint of the bucket
    /// that holds it, clamped to the minimum and maximum. `None` if empty. Within
    /// `max(x / 16, 64 ns)` of the exact value `x` (module doc).
    #[must_use]
    pub fn quantile_ns(&self, ppm: u32) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let n = u128::from(self.count);
        let q = u128::from(ppm.min(1_000_000));
        // Nearest rank: ⌈q·n⌉, at least 1.
        let rank = u64::try_from((q * n).div_ceil(1_000_000).max(1)).unwrap_or(u64::MAX);
        let mut seen = 0u64;
        let mut bucket = BUCKETS - 1;
        for (i, c) in self.counts.iter().enumerate() {
            seen = seen.saturating_add(*c);
            if seen >= rank {
                bucket = i;
                break;
            }
        }
        let (lo, hi) = (self.min_ns.min(self.max_ns), self.max_ns);
        Some(if rank >= self.count {
            hi
        } else if rank == 1 {
            lo
        } else {
            self.midpoint_ns(bucket).clamp(lo, hi)
        })
    }

    /// The cumulative counts at the Prometheus bucket edges: [`EXPORT_EDGES`] pairs
    /// `(le_ns, samples ≤ le_ns)` in increasing order (every [`EXPORT_STRIDE`]-th bucket edge
    /// from 1,024 ns: two per power of two); the `+Inf` bucket is [`Self::count`]. Exact:
    /// each exported edge is a bucket edge.
    pub fn export_buckets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut cumulative = 0u64;
        self.counts[..BUCKETS - 1]
            .iter()
            .enumerate()
            .filter_map(move |(i, c)| {
                cumulative = cumulative.wrapping_add(*c);
                if i >= EXPORT_FIRST && (i - EXPORT_FIRST).is_multiple_of(EXPORT_STRIDE) {
                    Some((bucket_upper_ns(i), cumulative))
                } else {
                    None
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn buckets_are_contiguous_and_edges_exact() {
        assert_eq!(bucket_index(0), 0);
        assert_eq!(bucket_index(1), 0);
        assert_eq!(bucket_index(128), 0);
        assert_eq!(bucket_index(129), 1);
        assert_eq!(bucket_index(1024), 7);
        assert_eq!(bucket_index(1025), 8);
        assert_eq!(bucket_index(2048), 15);
        assert_eq!(bucket_index(2049), 16);
        assert_eq!(bucket_upper_ns(0), 128);
        assert_eq!(bucket_upper_ns(7), 1024);
        assert_eq!(bucket_upper_ns(15), 2048);
        assert_eq!(bucket_upper_ns(16), 2304);
        assert_eq!(bucket_upper_ns(BUCKETS - 2), 15 << 30);
        assert_eq!(bucket_index(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket_index((15 << 30) + 1), BUCKETS - 1);
        for i in 0..BUCKETS - 1 {
            let up = bucket_upper_ns(i);
            assert_eq!(bucket_index(up), i, "bucket {i} holds its upper edge");
            assert_eq!(
                bucket_index(up + 1),
                i + 1,
                "bucket {i}'s edge + 1 is the next"
            );
            let lo = bucket_lower_ns(i);
            // At most 1/8 of the lower edge wide, or 128 ns in the linear part.
            assert!(up - lo <= (lo / 8).max(128), "bucket {i}: ({lo}, {up}]");
        }
    }

    #[test]
    fn exact_values_min_max_sum() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.quantile_ns(500_000), None);
        assert_eq!(h.max_ns(), None);
        for ns in [10_000, 20_000, 30_000, 40_000] {
            h.record(ns);
        }
        assert_eq!(h.count(), 4);
        assert_eq!(h.sum_ns(), 100_000);
        assert_eq!(h.min_ns(), Some(10_000));
        assert_eq!(h.max_ns(), Some(40_000));
        // Quantile 0 and 1 are the exact extremes.
        assert_eq!(h.quantile_ns(0), Some(10_000));
        assert_eq!(h.quantile_ns(1_000_000), Some(40_000));
        // The median is the 2nd sample (20,000 ns): bucket (18432, 20480], midpoint 19456.
        assert_eq!(bucket_index(20_000), bucket_index(19_456));
        assert_eq!(h.quantile_ns(500_000), Some(19_456));
        // One sample: every quantile is that sample.
        let mut one = LatencyHistogram::default();
        one.record(777_777);
        assert_eq!(one.quantile_ns(990_000), Some(777_777));
    }

    #[test]
    fn merge_and_since() {
        let mut a = LatencyHistogram::default();
        let mut b = LatencyHistogram::default();
        a.record(1_000);
        b.record(5_000_000);
        b.record(3);
        let mut m = a.clone();
        m.merge(&b);
        assert_eq!(m.count(), 3);
        assert_eq!(m.min_ns(), Some(3));
        assert_eq!(m.max_ns(), Some(5_000_000));
        assert_eq!(m.sum_ns(), 5_001_003);
        assert_eq!(m.bucket_count(bucket_index(5_000_000)), 1);

        // A cumulative histogram read twice: the difference is what came in between.
        let earlier = m.clone();
        m.record(40_000);
        m.record(40_500);
        let d = m.since(&earlier);
        assert_eq!(d.count(), 2);
        assert_eq!(d.sum_ns(), 80_500);
        assert_eq!(d.bucket_count(bucket_index(40_000)), 2);
        assert_eq!(d.bucket_count(bucket_index(1_000)), 0);
        // Interval extremes: the bucket (36864, 40960] holds both, its midpoint is 38912.
        assert_eq!(d.min_ns(), Some(38_912));
        assert_eq!(d.max_ns(), Some(38_912));
        assert_eq!(d.quantile_ns(500_000), Some(38_912));
        assert!(m.since(&m).quantile_ns(500_000).is_none());
        // Not an earlier reading: nothing negative, no panic.
        assert_eq!(earlier.since(&m).count(), 0);
    }

    #[test]
    fn open_bucket_reports_the_max() {
        let mut h = LatencyHistogram::default();
        h.record(100 << 30);
        h.record(200 << 30);
        h.record(u64::MAX);
        // The median (200 s) is in the open bucket: reported as the largest sample.
        assert_eq!(h.quantile_ns(500_000), Some(u64::MAX));
        assert_eq!(h.quantile_ns(0), Some(100 << 30), "the minimum is exact");
        assert_eq!(h.sum_ns(), u64::MAX, "the sum saturates");
    }

    #[test]
    fn export_edges_are_cumulative_bucket_edges() {
        let mut h = LatencyHistogram::default();
        for ns in [500, 1_024, 1_025, 1_600, 3_000_000, 20_000_000_000] {
            h.record(ns);
        }
        let edges: Vec<(u64, u64)> = h.export_buckets().collect();
        assert_eq!(edges.len(), EXPORT_EDGES);
        assert_eq!(EXPORT_EDGES, 48);
        assert_eq!(edges[0], (1_024, 2));
        assert_eq!(edges[1], (1_536, 3));
        assert_eq!(edges[2], (2_048, 4));
        assert_eq!(edges[3], (3_072, 4));
        assert_eq!(edges.last(), Some(&(12 << 30, 5)), "20 s is only in +Inf");
        for w in edges.windows(2) {
            assert!(w[0].0 < w[1].0 && w[0].1 <= w[1].1);
        }
        // ×1 and ×1.5 of each power of two.
        for (le, _) in &edges {
            let p = le.next_power_of_two();
            assert!(*le == p || *le == p / 4 * 3, "{le}");
        }
    }

    /// The nearest-rank quantile of sorted samples.
    fn exact(sorted: &[u64], ppm: u32) -> u64 {
        let n = sorted.len() as u128;
        let rank = (u128::from(ppm) * n).div_ceil(1_000_000).max(1);
        sorted[usize::try_from(rank).unwrap() - 1]
    }

    proptest! {
        /// The module's bound, `|estimate − x| ≤ max(x/16, 64 ns)`, against exact percentiles
        /// of random samples: latencies spread over seven decades (log-uniform), merged from
        /// two histograms, at the quantiles the API reports and random ones.
        #[test]
        fn quantiles_within_the_bound(
            a in proptest::collection::vec((0u32..34, any::<u64>()), 1..400),
            b in proptest::collection::vec((0u32..34, any::<u64>()), 0..400),
            q in 0u32..=1_000_000,
        ) {
            // Log-uniform: a power of two, then a uniform value below it (< 2^34 ns).
            let value = |(p, r): (u32, u64)| r % (1u64 << p).max(2);
            let mut ha = LatencyHistogram::default();
            let mut hb = LatencyHistogram::default();
            let mut all = Vec::new();
            for s in a.iter().copied().map(value) {
                ha.record(s);
                all.push(s);
            }
            for s in b.iter().copied().map(value) {
                hb.record(s);
                all.push(s);
            }
            ha.merge(&hb);
            all.sort_unstable();
            prop_assert_eq!(ha.count(), all.len() as u64);
            for ppm in [0, 500_000, 900_000, 990_000, 999_000, 1_000_000, q] {
                let x = exact(&all, ppm);
                let est = ha.quantile_ns(ppm).unwrap();
                let bound = (x / 16).max(64);
                prop_assert!(est.abs_diff(x) <= bound,
                    "q={} exact={} estimate={} bound={}", ppm, x, est, bound);
            }
        }

        /// The bound holds for an interval too: the difference of two cumulative readings
        /// against the exact percentiles of the samples recorded in between.
        #[test]
        fn interval_quantiles_within_the_bound(
            before in proptest::collection::vec(0u64..50_000_000, 0..200),
            during in proptest::collection::vec(0u64..50_000_000, 1..200),
        ) {
            let mut h = LatencyHistogram::default();
            for s in &before {
                h.record(*s);
            }
            let earlier = h.clone();
            for s in &during {
                h.record(*s);
            }
            let d = h.since(&earlier);
            let mut sorted = during.clone();
            sorted.sort_unstable();
            prop_assert_eq!(d.count(), sorted.len() as u64);
            for ppm in [0, 500_000, 990_000, 1_000_000] {
                let x = exact(&sorted, ppm);
                let est = d.quantile_ns(ppm).unwrap();
                prop_assert!(est.abs_diff(x) <= (x / 16).max(64),
                    "q={} exact={} estimate={}", ppm, x, est);
            }
        }
    }
}
