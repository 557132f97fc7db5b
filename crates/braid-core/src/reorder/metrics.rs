//! Counters of one flow's reorder buffer: every insert and release outcome, and the hold-time
//! distribution as a fixed log2 histogram (no allocation). Owns no policy.

/// Number of hold-time histogram buckets: bucket 0 is `< 1 µs`, bucket `i >= 1` is
/// `[2^(i-1), 2^i) µs`, and the last bucket is open-ended (`>= 2^(HOLD_BUCKETS-2) µs`,
/// 262 ms).
pub const HOLD_BUCKETS: usize = 20;

/// Exclusive upper bound in nanoseconds of hold bucket `i` (`u64::MAX` for the last).
#[must_use]
pub fn hold_bucket_upper_ns(i: usize) -> u64 {
    if i + 1 >= HOLD_BUCKETS {
        u64::MAX
    } else {
        1_000u64 << i
    }
}

fn hold_bucket(ns: u64) -> usize {
    let us = ns / 1_000;
    if us == 0 {
        return 0;
    }
    // us in [2^(b-1), 2^b) -> bucket b, b = bit length of us.
    let b = (u64::BITS - us.leading_zeros()) as usize;
    b.min(HOLD_BUCKETS - 1)
}

/// Counters of one [`ReorderBuffer`](super::ReorderBuffer). Invariants (tested):
/// `delivered_count == in_order_count + reordered_count`;
/// `gap_seq_count` == the sum of every [`Release::gap_before`](super::Release::gap_before)
/// (plus a gap given up but not yet reported);
/// every accepted datagram is delivered, still held or drained.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReorderStats {
    /// Datagrams accepted by `insert`.
    pub accepted_count: u64,
    /// Datagrams released in order.
    pub delivered_count: u64,
    /// Released datagrams that arrived as the next expected one (no wait for a predecessor).
    pub in_order_count: u64,
    /// Released datagrams that arrived ahead of a missing predecessor and waited.
    pub reordered_count: u64,
    /// Gap events: runs of consecutive sequences given up.
    pub gap_count: u64,
    /// Sequences given up in all gaps.
    pub gap_seq_count: u64,
    /// Datagrams dropped as duplicates (held or already delivered).
    pub duplicate_count: u64,
    /// Datagrams dropped because their sequence had been given up (or was too old to know).
    pub late_count: u64,
    /// Datagrams rejected as far ahead of the window.
    pub out_of_window_count: u64,
    /// Releases right after a gap given up (at least partly) because of an overflow.
    pub overflow_release_count: u64,
    /// Releases right after a gap given up because the hold expired.
    pub timeout_release_count: u64,
    /// Confirmed jumps far ahead: the window restarted (also counted as a gap).
    pub resync_count: u64,
    /// Handles taken back by `drain` without delivery.
    pub drained_count: u64,
    /// Longest hold of a released datagram, ns.
    pub hold_max_ns: u64,
    /// Hold time of released datagrams, log2 buckets (see [`HOLD_BUCKETS`]).
    pub hold_hist: [u64; HOLD_BUCKETS],
}

impl ReorderStats {
    pub(super) fn record_hold(&mut self, ns: u64) {
        self.hold_max_ns = self.hold_max_ns.max(ns);
        self.hold_hist[hold_bucket(ns)] += 1;
    }

    /// Add `other` into `self` (to sum flows); `hold_max_ns` takes the maximum.
    pub fn merge(&mut self, other: &Self) {
        self.accepted_count += other.accepted_count;
        self.delivered_count += other.delivered_count;
        self.in_order_count += other.in_order_count;
        self.reordered_count += other.reordered_count;
        self.gap_count += other.gap_count;
        self.gap_seq_count += other.gap_seq_count;
        self.duplicate_count += other.duplicate_count;
        self.late_count += other.late_count;
        self.out_of_window_count += other.out_of_window_count;
        self.overflow_release_count += other.overflow_release_count;
        self.timeout_release_count += other.timeout_release_count;
        self.resync_count += other.resync_count;
        self.drained_count += other.drained_count;
        self.hold_max_ns = self.hold_max_ns.max(other.hold_max_ns);
        for (a, b) in self.hold_hist.iter_mut().zip(other.hold_hist.iter()) {
            *a += b;
        }
    }

    /// Upper bound (ns, bucket edge) of the `q`-quantile (`0.0..=1.0`) of the hold times, or 0
    /// if nothing was released. The open last bucket reports `hold_max_ns`.
    #[must_use]
    pub fn hold_quantile_upper_ns(&self, q: f64) -> u64 {
        let total: u64 = self.hold_hist.iter().sum();
        if total == 0 {
            return 0;
        }
        // rank = ceil(q * total), at least 1; f64 is exact far beyond any realistic count.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let rank = ((q.clamp(0.0, 1.0) * total as f64) as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.hold_hist.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return hold_bucket_upper_ns(i).min(self.hold_max_ns.max(1));
            }
        }
        self.hold_max_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets() {
        assert_eq!(hold_bucket(0), 0);
        assert_eq!(hold_bucket(999), 0);
        assert_eq!(hold_bucket(1_000), 1);
        assert_eq!(hold_bucket(1_999), 1);
        assert_eq!(hold_bucket(2_000), 2);
        assert_eq!(hold_bucket(25_000_000), 15); // 25 ms = 25000 µs, 2^14 <= 25000 < 2^15
        assert_eq!(hold_bucket(u64::MAX), HOLD_BUCKETS - 1);
        for i in 0..HOLD_BUCKETS - 1 {
            let up = hold_bucket_upper_ns(i);
            assert_eq!(hold_bucket(up - 1), i, "bucket {i}");
            assert_eq!(hold_bucket(up), i + 1, "bucket {i} upper edge");
        }
    }

    #[test]
    fn quantile_and_merge() {
        let mut a = ReorderStats::default();
        for _ in 0..99 {
            a.record_hold(500);
        }
        a.record_hold(3_000_000);
        assert_eq!(a.hold_quantile_upper_ns(0.5), 1_000); // bucket edge, not the sample
        assert_eq!(a.hold_quantile_upper_ns(1.0), 3_000_000);
        let mut b = ReorderStats::default();
        b.merge(&a);
        b.merge(&a);
        assert_eq!(b.hold_hist[0], 198);
        assert_eq!(b.hold_max_ns, 3_000_000);
    }
}
