//! The per-NIC shaper: a token bucket at the link's capacity that says when the next packet
//! may leave, so braid never hands a link more than it can carry.
//!
//! Owns: [`Shaper`] and its counters. Does not own: which packet goes next (the scheduler in
//! `state.rs`; [`super::Qos::dequeue_shaped`] joins the two), the link's rate estimate (the
//! engine's capacity estimator may feed [`Shaper::set_rate_bps`]), nor timers (the caller
//! wakes at [`Shaper::earliest_send`]).
//!
//! # How it relates to the engine's pacer
//!
//! The engine (`engine/state.rs`, `account_tx`/`poll_data`) paces each NIC with a virtual
//! clock: `next_free` advances by each packet's wire time (`(len + wire_overhead) × 8 / rate`,
//! truncated to whole ns), a NIC may send while `next_free ≤ now + pacing_burst`, and a clock
//! that fell behind keeps at most `pacing_credit` of lost time. That is a token bucket of
//! depth `rate × (pacing_burst + pacing_credit)` counted in time, that sends first and pays
//! after (a packet may start when any credit is left, so a burst can exceed the depth by one
//! packet). This shaper is the same bucket counted in bytes, paying before sending: over any
//! interval `T` it releases at most `burst_bytes + rate × T` (overheads included), never one
//! packet more, and its refill is exact (nanobits, see `meter.rs`), where the virtual clock
//! loses up to 1 ns per packet (0.08 % extra rate with 1500-byte packets at 10 Gbit/s). The
//! equivalent configuration is `burst_bytes = rate × (pacing_burst + pacing_credit) / 8` and
//! `overhead_bytes = wire_overhead_bytes`. The engine's pacer can be replaced by one
//! `Shaper` per NIC: `poll_data` asks [`Shaper::try_consume`] instead of comparing
//! `next_free`, and `poll_timeout` reports [`Shaper::earliest_send`] of the head packet.

use super::QosConfigError;
use super::config::{RateConfig, ShaperConfig};
use super::meter::TokenBucket;
use crate::time::Instant;

/// Counters of one [`Shaper`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShaperStats {
    /// Packets released.
    pub tx_packets_count: u64,
    /// Bytes released, with their overheads.
    pub tx_wire_bytes_count: u64,
    /// `try_consume` calls refused (no tokens yet).
    pub deferred_count: u64,
    /// Packets longer than the burst that were let through on a full bucket (a
    /// misconfiguration: the burst should hold the largest packet).
    pub oversize_count: u64,
}

/// A token bucket at a link's capacity (see the module doc). Starts full.
#[derive(Clone, Copy, Debug)]
pub struct Shaper {
    cfg: ShaperConfig,
    bucket: TokenBucket,
    stats: ShaperStats,
}

impl Shaper {
    /// A shaper with a full bucket.
    ///
    /// # Errors
    /// [`QosConfigError`] if `cfg` fails [`ShaperConfig::validate`] for packets of up to
    /// `max_packet_bytes`.
    pub fn new(
        cfg: ShaperConfig,
        max_packet_bytes: u32,
        now: Instant,
    ) -> Result<Self, QosConfigError> {
        cfg.validate(max_packet_bytes)?;
        Ok(Self {
            cfg,
            bucket: TokenBucket::new_unchecked(Self::rate(cfg), now),
            stats: ShaperStats::default(),
        })
    }

    const fn rate(cfg: ShaperConfig) -> RateConfig {
        RateConfig {
            rate_bps: cfg.rate_bps,
            burst_bytes: cfg.burst_bytes,
        }
    }

    /// The configuration.
    #[must_use]
    pub const fn config(&self) -> &ShaperConfig {
        &self.cfg
    }

    /// The counters.
    #[must_use]
    pub const fn stats(&self) -> &ShaperStats {
        &self.stats
    }

    /// Bytes on the wire for a packet of `len` bytes.
    #[inline]
    const fn wire(&self, len: usize) -> u64 {
        (len as u64).saturating_add(self.cfg.overhead_bytes as u64)
    }

    /// When a packet of `len` bytes may leave: `now` if it may leave now, else the first
    /// instant at which [`Self::try_consume`] will accept it (if nothing else is sent
    /// meanwhile). Does not change the shaper.
    #[inline]
    #[must_use]
    pub fn earliest_send(&self, now: Instant, len: usize) -> Instant {
        self.bucket.ready_at(now, self.wire(len))
    }

    /// Take the tokens for a packet of `len` bytes and return true if it may leave at `now`;
    /// return false (and take nothing) if it must wait until [`Self::earliest_send`].
    #[inline]
    pub fn try_consume(&mut self, now: Instant, len: usize) -> bool {
        let wire = self.wire(len);
        if self.bucket.try_take(now, wire) {
            self.stats.tx_packets_count += 1;
            self.stats.tx_wire_bytes_count += wire;
            if wire > u64::from(self.cfg.burst_bytes) {
                self.stats.oversize_count += 1;
            }
            true
        } else {
            self.stats.deferred_count += 1;
            false
        }
    }

    /// Change the rate (e.g. from the capacity estimator), clamped to `1..=MAX_RATE_BPS`. The
    /// time so far is credited at the old rate; the tokens held are kept.
    pub fn set_rate_bps(&mut self, now: Instant, rate_bps: u64) {
        let rate = rate_bps.min(super::config::MAX_RATE_BPS);
        self.bucket.set_rate(now, rate);
        self.cfg.rate_bps = self.bucket.rate_bps();
    }

    /// Replace the configuration. The tokens held are kept (up to the new burst), so a
    /// change never grants a fresh burst.
    ///
    /// # Errors
    /// [`QosConfigError`] if `cfg` is invalid; the shaper is then unchanged.
    pub fn replace_config(
        &mut self,
        now: Instant,
        cfg: ShaperConfig,
        max_packet_bytes: u32,
    ) -> Result<(), QosConfigError> {
        cfg.validate(max_packet_bytes)?;
        self.bucket.reconfigure(now, Self::rate(cfg));
        self.cfg = cfg;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    fn shaper(rate_bps: u64, burst: u32, overhead: u32) -> Shaper {
        Shaper::new(
            ShaperConfig {
                rate_bps,
                burst_bytes: burst,
                overhead_bytes: overhead,
            },
            1500,
            Instant::ZERO,
        )
        .unwrap()
    }

    /// Send as fast as the shaper allows, waking exactly at `earliest_send`: the link carries
    /// exactly the rate (plus the initial burst), never more over any window.
    #[test]
    fn never_exceeds_rate_plus_burst() {
        let rate = 10_000_000_000; // 10 Gbit/s
        let burst = 3000 + 2 * 50;
        let mut s = shaper(rate, burst, 50);
        let mut now = Instant::from_micros(7);
        let mut x = 99u32;
        let mut sent: alloc::vec::Vec<(u64, u64)> = alloc::vec::Vec::new();
        let end = Instant::from_millis(200);
        while now < end {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let len = 64 + (x % 1437) as usize;
            let at = s.earliest_send(now, len);
            assert!(at >= now);
            if at > now {
                // One nanosecond early is refused.
                assert!(!s.try_consume(Instant::from_nanos(at.as_nanos() - 1), len));
                now = at;
            }
            assert!(s.try_consume(now, len), "at {now:?}");
            sent.push((now.as_nanos(), len as u64 + 50));
        }
        let total: u64 = sent.iter().map(|p| p.1).sum();
        let elapsed = end.as_nanos() - 7_000;
        let want = (rate / 8) as f64 * elapsed as f64 / 1e9 + f64::from(burst);
        assert!(
            (total as f64 - want).abs() / want < 0.0005,
            "{total} vs {want}"
        );
        assert_eq!(s.stats().tx_wire_bytes_count, total);
        // Over every window of 1000 consecutive packets: bytes ≤ burst + rate × span.
        for w in sent.windows(1000).step_by(97) {
            let span = w[999].0 - w[0].0;
            let bytes: u64 = w.iter().map(|p| p.1).sum();
            let allowed =
                u64::from(burst) + (rate as u128 * u128::from(span) / 8_000_000_000) as u64;
            assert!(bytes <= allowed + 1, "{bytes} > {allowed}");
        }
    }

    #[test]
    fn burst_then_paced() {
        // 1 Gbit/s, burst two 1500-byte packets: two go at once, the third 12 µs later.
        let mut s = shaper(1_000_000_000, 3000, 0);
        let t0 = Instant::from_millis(1);
        assert!(s.try_consume(t0, 1500));
        assert!(s.try_consume(t0, 1500));
        assert!(!s.try_consume(t0, 1500));
        assert_eq!(s.earliest_send(t0, 1500), t0 + Duration::from_micros(12));
        assert_eq!(s.earliest_send(t0, 125), t0 + Duration::from_micros(1));
        assert_eq!(s.stats().deferred_count, 1);
        // Rate change: at 2 Gbit/s the wait halves (credit so far at the old rate: none).
        s.set_rate_bps(t0, 2_000_000_000);
        assert_eq!(s.earliest_send(t0, 1500), t0 + Duration::from_micros(6));
        // A new config keeps the (empty) bucket: no fresh burst.
        s.replace_config(
            t0,
            ShaperConfig {
                rate_bps: 1_000_000_000,
                burst_bytes: 1 << 20,
                overhead_bytes: 0,
            },
            1500,
        )
        .unwrap();
        assert!(!s.try_consume(t0, 1500));
        assert!(
            s.replace_config(
                t0,
                ShaperConfig {
                    rate_bps: 0,
                    burst_bytes: 3000,
                    overhead_bytes: 0
                },
                1500
            )
            .is_err()
        );
        assert_eq!(s.config().rate_bps, 1_000_000_000);
    }

    #[test]
    fn overhead_counts() {
        // 100 bytes of overhead on a 100-byte packet halve the packet rate.
        let mut a = shaper(8_000_000, 1600, 0); // 1 MB/s
        let mut b = shaper(8_000_000, 1600, 100);
        let (mut na, mut nb) = (0, 0);
        for us in 0..1_000_000u64 {
            let t = Instant::from_micros(us);
            na += u32::from(a.try_consume(t, 100));
            nb += u32::from(b.try_consume(t, 100));
        }
        // 1 s at 1 MB/s: 10 000 (+16 initial) vs 5 000 (+8).
        assert_eq!(na, 10_000 + 16 - 1);
        assert_eq!(nb, 5_000 + 8 - 1);
    }
}
