//! Load measurement: an exponentially weighted rate that works with irregular sample times,
//! and the `e^(−x)` it needs (no_std has no `exp`).
//!
//! Owns only the arithmetic; the controller decides what is measured.

use core::time::Duration;

use crate::time::{Instant, duration_nanos};

/// `1/e`.
const E_INV: f64 = 0.367_879_441_171_442_3;

/// `e^(−x)` for `x >= 0` (negative `x` is treated as 0), without `std`.
///
/// `x = n + r` with integer `n` and `r ∈ [0, 1)`; `e^(−n)` by binary powering of `1/e`;
/// `e^(−r) = (e^(−r/4))^4` with the (3,3) Padé approximant
/// `(1 − y/2 + y²/10 − y³/120) / (1 + y/2 + y²/10 + y³/120)` at `y = r/4 ≤ 0.25`; relative
/// error below 1e-8 overall (tested against `std`). Returns 0 for `x >= 745` (below `f64`'s
/// range) and for NaN.
#[must_use]
pub fn exp_neg(x: f64) -> f64 {
    if x.is_nan() || x >= 745.0 {
        return 0.0;
    }
    if x <= 0.0 {
        return 1.0;
    }
    // x in (0, 745): the cast truncates towards zero = floor.
    let n = x as u32;
    let r = x - f64::from(n);
    let y = r * 0.25;
    let y2 = y * y;
    let y3 = y2 * y;
    let p = (1.0 - y * 0.5 + y2 * 0.1 - y3 / 120.0) / (1.0 + y * 0.5 + y2 * 0.1 + y3 / 120.0);
    let p2 = p * p;
    let mut result = p2 * p2;
    let mut base = E_INV;
    let mut k = n;
    while k != 0 {
        if k & 1 == 1 {
            result *= base;
        }
        base *= base;
        k >>= 1;
    }
    result
}

/// An exponentially decaying byte sum: `S ← S·e^(−Δt/τ) + bytes` at each sample, whatever
/// `Δt` is. For a constant rate `R` (bit/s) `S` converges to `R·τ/8`, so the rate estimate is
/// `8·S/τ`; after a step it is within `e^(−k)` of the new rate after `k·τ`.
#[derive(Clone, Copy, PartialEq, Debug, Default)]
pub struct Ewma {
    sum_bytes: f64,
    at: Instant,
}

impl Ewma {
    fn decayed(&self, now: Instant, tau: Duration) -> f64 {
        let dt = now.saturating_duration_since(self.at);
        if dt.is_zero() {
            return self.sum_bytes;
        }
        let x = duration_nanos(dt) as f64 / duration_nanos(tau).max(1) as f64;
        self.sum_bytes * exp_neg(x)
    }

    /// Account `bytes` sent at `now`. A `now` before the last sample counts as the last
    /// sample's time.
    pub fn add(&mut self, now: Instant, bytes: u64, tau: Duration) {
        self.sum_bytes = self.decayed(now, tau) + bytes as f64;
        self.at = self.at.max(now);
    }

    /// The rate at `now`, bits per second (decayed to `now` without a sample).
    #[must_use]
    pub fn rate_bps(&self, now: Instant, tau: Duration) -> u64 {
        let secs = duration_nanos(tau).max(1) as f64 / 1e9;
        let r = self.decayed(now, tau) * 8.0 / secs;
        // Saturating float → int cast; NaN cannot occur (finite inputs).
        r as u64
    }
}
