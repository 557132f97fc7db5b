//! Token buckets and the two three-colour meters: srTCM (RFC 2697) and trTCM (RFC 2698).
//!
//! Owns: [`TokenBucket`] (one bucket, the unit the shaper and the strict-class guard build
//! on), [`SrTcm`], [`TrTcm`], the [`Meter`] that holds either, and their exact integer
//! arithmetic. Does not own: what a colour does to a packet (the scheduler in `state.rs`
//! drops Red when its class says so; re-marking DSCP is the rule engine's job), nor the
//! configuration checks (`config.rs`).
//!
//! # Units: nanobits, so nothing is ever rounded
//!
//! Rates are in bit/s and time in nanoseconds, so the tokens a bucket earns over `dt` ns are
//! `rate_bps × dt` in units of 10⁻⁹ bit ("nanobits"), an exact integer. A packet of `L` bytes
//! costs `L × 8 × 10⁹` nanobits. Refilling is therefore exact however often or rarely it is
//! done: there is no remainder to keep and no drift over long runs (a meter refilled every
//! nanosecond and one refilled once an hour hold the same tokens). The largest bucket,
//! [`MAX_BURST_BYTES`] (1 GiB), is 8.6·10¹⁸ nanobits, below `u64::MAX` (1.8·10¹⁹); the refill
//! `rate × dt` saturates at `u64::MAX`, which is above every bucket's depth, so an idle gap of
//! any length (hours at 400 Gbit/s overflow `u64` after 46 ms) simply fills the bucket.
//!
//! Time that goes backwards (a caller bug) earns nothing and does not move the bucket's clock
//! back.

#[cfg(doc)]
use super::config::MAX_BURST_BYTES;
use super::config::{MeterConfig, MeterMode, RateConfig, SrTcmConfig, TrTcmConfig};
use super::{Color, QosConfigError};
use crate::time::Instant;

/// Nanoseconds per second.
const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Nanobits (10⁻⁹ bit) per byte.
const NANOBITS_PER_BYTE: u64 = 8 * NANOS_PER_SEC;

/// `bytes` as nanobits, saturating (only lengths above 2.3 EB saturate).
#[inline]
pub(crate) const fn nanobits(bytes: u64) -> u64 {
    bytes.saturating_mul(NANOBITS_PER_BYTE)
}

/// Nanobits earned at `rate_bps` over the time from `last` to `now`: exactly `rate × dt`,
/// saturating at `u64::MAX` (above every bucket's depth).
#[inline]
fn earned(rate_bps: u64, last: Instant, now: Instant) -> u64 {
    rate_bps.saturating_mul(now.as_nanos().saturating_sub(last.as_nanos()))
}

/// Nanoseconds until a bucket at `rate_bps` earns `missing` nanobits (rounded up).
#[inline]
pub(crate) const fn wait_nanos(missing: u64, rate_bps: u64) -> u64 {
    missing.div_ceil(if rate_bps == 0 { 1 } else { rate_bps })
}

/// One token bucket: `rate_bps` fills it up to a depth of `burst_bytes`; a packet of `L`
/// bytes takes `L` bytes of tokens. It starts full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    rate_bps: u64,
    depth: u64,
    tokens: u64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `cfg`'s rate and depth.
    ///
    /// # Errors
    /// [`QosConfigError`] if `cfg` fails [`RateConfig::validate`] with `max_packet_bytes`.
    pub fn new(
        cfg: RateConfig,
        max_packet_bytes: u32,
        now: Instant,
    ) -> Result<Self, QosConfigError> {
        cfg.validate(max_packet_bytes)?;
        Ok(Self::new_unchecked(cfg, now))
    }

    /// A full bucket for a configuration already validated.
    pub(crate) const fn new_unchecked(cfg: RateConfig, now: Instant) -> Self {
        let depth = nanobits(cfg.burst_bytes as u64);
        Self {
            rate_bps: cfg.rate_bps,
            depth,
            tokens: depth,
            last: now,
        }
    }

    /// Take a new rate and depth (validated by the caller), keeping the tokens held (up to the
    /// new depth) so a change never grants a fresh burst.
    pub(crate) fn reconfigure(&mut self, now: Instant, cfg: RateConfig) {
        self.refill(now);
        self.rate_bps = cfg.rate_bps;
        self.depth = nanobits(u64::from(cfg.burst_bytes));
        self.tokens = self.tokens.min(self.depth);
    }

    /// Change only the rate (clamped to at least 1 bit/s), after crediting the time so far at
    /// the old rate.
    pub(crate) fn set_rate(&mut self, now: Instant, rate_bps: u64) {
        self.refill(now);
        self.rate_bps = rate_bps.max(1);
    }

    /// The fill rate, bit/s.
    #[must_use]
    pub const fn rate_bps(&self) -> u64 {
        self.rate_bps
    }

    /// Credit the tokens earned since the last call.
    #[inline]
    pub fn refill(&mut self, now: Instant) {
        if now > self.last {
            let room = self.depth - self.tokens;
            self.tokens += earned(self.rate_bps, self.last, now).min(room);
            self.last = now;
        }
    }

    /// The tokens the bucket would hold at `now`, in nanobits, without changing it.
    #[inline]
    fn tokens_at(&self, now: Instant) -> u64 {
        let room = self.depth - self.tokens;
        self.tokens + earned(self.rate_bps, self.last, now).min(room)
    }

    /// Whole bytes of tokens held at `now` (rounded down), without changing the bucket.
    #[must_use]
    pub fn available_bytes(&self, now: Instant) -> u64 {
        self.tokens_at(now) / NANOBITS_PER_BYTE
    }

    /// Whether `len` bytes of tokens are there at `now` (no change).
    #[inline]
    #[must_use]
    pub fn can_take(&self, now: Instant, len: u64) -> bool {
        self.tokens_at(now) >= self.cost(len)
    }

    /// Take `len` bytes of tokens if the bucket holds them; false (and nothing taken) if not.
    #[inline]
    pub fn try_take(&mut self, now: Instant, len: u64) -> bool {
        self.refill(now);
        let cost = self.cost(len);
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }

    /// Take `len` bytes of tokens, or all there are if fewer (used when a packet is sent
    /// regardless, e.g. the strict class on an otherwise idle link).
    #[inline]
    pub fn take_saturating(&mut self, now: Instant, len: u64) {
        self.refill(now);
        self.tokens = self.tokens.saturating_sub(self.cost(len));
    }

    /// The earliest instant, not before `now`, at which `len` bytes of tokens will be there
    /// (`now` itself if they already are).
    #[must_use]
    pub fn ready_at(&self, now: Instant, len: u64) -> Instant {
        let have = self.tokens_at(now);
        let cost = self.cost(len);
        if have >= cost {
            return now.max(self.last);
        }
        Instant::from_nanos(
            now.max(self.last)
                .as_nanos()
                .saturating_add(wait_nanos(cost - have, self.rate_bps)),
        )
    }

    /// The nanobits `len` bytes cost, capped at the depth: a packet larger than the bucket
    /// needs a full bucket and empties it, so it is never held forever. Configuration
    /// validation keeps every burst at least the largest packet, so the cap is only a
    /// liveness guard.
    #[inline]
    fn cost(&self, len: u64) -> u64 {
        nanobits(len).min(self.depth)
    }
}

/// A single-rate three-colour meter, RFC 2697.
///
/// Two buckets, C (depth CBS) and E (depth EBS), both start full and both fill at CIR: tokens
/// go to C until it is full and the overflow goes to E (§3). A packet of `B` bytes is, in
/// colour-blind mode, Green if C holds `B` (taken from C), else Yellow if E holds `B` (taken
/// from E), else Red (nothing taken). In colour-aware mode a pre-coloured Yellow packet can
/// only be Yellow or Red and a Red one stays Red (§4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SrTcm {
    cfg: SrTcmConfig,
    cbs: u64,
    ebs: u64,
    tc: u64,
    te: u64,
    last: Instant,
}

impl SrTcm {
    /// A meter with both buckets full.
    ///
    /// # Errors
    /// [`QosConfigError`] if `cfg` fails [`SrTcmConfig::validate`].
    pub fn new(
        cfg: SrTcmConfig,
        max_packet_bytes: u32,
        now: Instant,
    ) -> Result<Self, QosConfigError> {
        cfg.validate(max_packet_bytes)?;
        Ok(Self::new_unchecked(cfg, now))
    }

    pub(crate) const fn new_unchecked(cfg: SrTcmConfig, now: Instant) -> Self {
        let cbs = nanobits(cfg.cbs_bytes as u64);
        let ebs = nanobits(cfg.ebs_bytes as u64);
        Self {
            cfg,
            cbs,
            ebs,
            tc: cbs,
            te: ebs,
            last: now,
        }
    }

    /// The configuration.
    #[must_use]
    pub const fn config(&self) -> &SrTcmConfig {
        &self.cfg
    }

    /// Credit CIR over the time since the last call: C first, the overflow to E (RFC 2697 §3).
    #[inline]
    fn refill(&mut self, now: Instant) {
        if now <= self.last {
            return;
        }
        let mut add = earned(self.cfg.cir_bps, self.last, now);
        self.last = now;
        let room_c = self.cbs - self.tc;
        if add <= room_c {
            self.tc += add;
            return;
        }
        self.tc = self.cbs;
        add -= room_c;
        self.te += add.min(self.ebs - self.te);
    }

    /// Colour a packet of `len` bytes arriving at `now`. `pre` is its colour from upstream
    /// (ignored in [`MeterMode::ColorBlind`]).
    #[inline]
    pub fn meter(&mut self, now: Instant, len: usize, pre: Color) -> Color {
        self.refill(now);
        let b = nanobits(len as u64);
        let pre = match self.cfg.mode {
            MeterMode::ColorBlind => Color::Green,
            MeterMode::ColorAware => pre,
        };
        if pre == Color::Green && self.tc >= b {
            self.tc -= b;
            Color::Green
        } else if pre != Color::Red && self.te >= b {
            self.te -= b;
            Color::Yellow
        } else {
            Color::Red
        }
    }

    /// Bytes held in (C, E) at the last call (rounded down).
    #[must_use]
    pub const fn tokens_bytes(&self) -> (u64, u64) {
        (self.tc / NANOBITS_PER_BYTE, self.te / NANOBITS_PER_BYTE)
    }
}

/// A two-rate three-colour meter, RFC 2698.
///
/// Two buckets, P (depth PBS, filled at PIR) and C (depth CBS, filled at CIR), both start full
/// and fill independently (§3). A packet of `B` bytes is, in colour-blind mode, Red if P holds
/// fewer than `B` (nothing taken), else Yellow if C holds fewer than `B` (`B` taken from P),
/// else Green (`B` taken from both). In colour-aware mode a pre-coloured Red packet stays
/// Red and a Yellow one is at best Yellow (§4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrTcm {
    cfg: TrTcmConfig,
    pbs: u64,
    cbs: u64,
    tp: u64,
    tc: u64,
    last: Instant,
}

impl TrTcm {
    /// A meter with both buckets full.
    ///
    /// # Errors
    /// [`QosConfigError`] if `cfg` fails [`TrTcmConfig::validate`].
    pub fn new(
        cfg: TrTcmConfig,
        max_packet_bytes: u32,
        now: Instant,
    ) -> Result<Self, QosConfigError> {
        cfg.validate(max_packet_bytes)?;
        Ok(Self::new_unchecked(cfg, now))
    }

    pub(crate) const fn new_unchecked(cfg: TrTcmConfig, now: Instant) -> Self {
        let pbs = nanobits(cfg.pbs_bytes as u64);
        let cbs = nanobits(cfg.cbs_bytes as u64);
        Self {
            cfg,
            pbs,
            cbs,
            tp: pbs,
            tc: cbs,
            last: now,
        }
    }

    /// The configuration.
    #[must_use]
    pub const fn config(&self) -> &TrTcmConfig {
        &self.cfg
    }

    #[inline]
    fn refill(&mut self, now: Instant) {
        if now <= self.last {
            return;
        }
        self.tp += earned(self.cfg.pir_bps, self.last, now).min(self.pbs - self.tp);
        self.tc += earned(self.cfg.cir_bps, self.last, now).min(self.cbs - self.tc);
        self.last = now;
    }

    /// Colour a packet of `len` bytes arriving at `now`. `pre` is its colour from upstream
    /// (ignored in [`MeterMode::ColorBlind`]).
    #[inline]
    pub fn meter(&mut self, now: Instant, len: usize, pre: Color) -> Color {
        self.refill(now);
        let b = nanobits(len as u64);
        let pre = match self.cfg.mode {
            MeterMode::ColorBlind => Color::Green,
            MeterMode::ColorAware => pre,
        };
        if pre == Color::Red || self.tp < b {
            Color::Red
        } else if pre == Color::Yellow || self.tc < b {
            self.tp -= b;
            Color::Yellow
        } else {
            self.tp -= b;
            self.tc -= b;
            Color::Green
        }
    }

    /// Bytes held in (P, C) at the last call (rounded down).
    #[must_use]
    pub const fn tokens_bytes(&self) -> (u64, u64) {
        (self.tp / NANOBITS_PER_BYTE, self.tc / NANOBITS_PER_BYTE)
    }
}

/// Either meter, as a class configures it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Meter {
    /// RFC 2697.
    SrTcm(SrTcm),
    /// RFC 2698.
    TrTcm(TrTcm),
}

impl Meter {
    /// A meter with full buckets.
    ///
    /// # Errors
    /// [`QosConfigError`] if `cfg` fails [`MeterConfig::validate`].
    pub fn new(
        cfg: MeterConfig,
        max_packet_bytes: u32,
        now: Instant,
    ) -> Result<Self, QosConfigError> {
        cfg.validate(max_packet_bytes)?;
        Ok(Self::new_unchecked(cfg, now))
    }

    pub(crate) const fn new_unchecked(cfg: MeterConfig, now: Instant) -> Self {
        match cfg {
            MeterConfig::SrTcm(c) => Self::SrTcm(SrTcm::new_unchecked(c, now)),
            MeterConfig::TrTcm(c) => Self::TrTcm(TrTcm::new_unchecked(c, now)),
        }
    }

    /// The configuration.
    #[must_use]
    pub const fn config(&self) -> MeterConfig {
        match self {
            Self::SrTcm(m) => MeterConfig::SrTcm(m.cfg),
            Self::TrTcm(m) => MeterConfig::TrTcm(m.cfg),
        }
    }

    /// Colour a packet (see [`SrTcm::meter`], [`TrTcm::meter`]).
    #[inline]
    pub fn meter(&mut self, now: Instant, len: usize, pre: Color) -> Color {
        match self {
            Self::SrTcm(m) => m.meter(now, len, pre),
            Self::TrTcm(m) => m.meter(now, len, pre),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    const MTU: u32 = 1500;

    fn sr(cir_bps: u64, cbs: u32, ebs: u32, mode: MeterMode) -> SrTcm {
        SrTcm::new(
            SrTcmConfig {
                cir_bps,
                cbs_bytes: cbs,
                ebs_bytes: ebs,
                mode,
            },
            MTU,
            Instant::ZERO,
        )
        .unwrap()
    }

    fn tr(pir_bps: u64, pbs: u32, cir_bps: u64, cbs: u32, mode: MeterMode) -> TrTcm {
        TrTcm::new(
            TrTcmConfig {
                pir_bps,
                pbs_bytes: pbs,
                cir_bps,
                cbs_bytes: cbs,
                mode,
            },
            MTU,
            Instant::ZERO,
        )
        .unwrap()
    }

    /// Colour `n` back-to-back packets at one instant.
    fn burst(m: &mut impl FnMut() -> Color, n: usize) -> [usize; 3] {
        let mut out = [0; 3];
        for _ in 0..n {
            out[m() as usize] += 1;
        }
        out
    }

    #[test]
    fn srtcm_burst_green_then_yellow_then_red() {
        // CBS = 10 packets, EBS = 5 packets of 1000 B; a burst at t=0 with no time to refill.
        let mut m = sr(1_000_000, 10_000, 5_000, MeterMode::ColorBlind);
        let t = Instant::from_millis(0);
        let got = burst(&mut || m.meter(t, 1000, Color::Green), 20);
        assert_eq!(got, [10, 5, 5]);
        assert_eq!(m.tokens_bytes(), (0, 0));
    }

    #[test]
    fn srtcm_refills_c_before_e() {
        let mut m = sr(8_000_000, 10_000, 5_000, MeterMode::ColorBlind); // 1 MB/s
        let t0 = Instant::ZERO;
        assert_eq!(
            burst(&mut || m.meter(t0, 1000, Color::Green), 15),
            [10, 5, 0]
        );
        // 12 ms at 1 MB/s = 12 000 bytes: C refills to 10 000, E gets the 2 000 overflow.
        let t1 = Instant::from_millis(12);
        assert_eq!(m.meter(t1, 0, Color::Green), Color::Green);
        assert_eq!(m.tokens_bytes(), (10_000, 2_000));
        assert_eq!(
            burst(&mut || m.meter(t1, 1000, Color::Green), 13),
            [10, 2, 1]
        );
    }

    #[test]
    fn srtcm_color_aware() {
        let mut m = sr(1_000_000, 3_000, 3_000, MeterMode::ColorAware);
        let t = Instant::ZERO;
        // A pre-coloured Red packet stays Red and takes nothing.
        assert_eq!(m.meter(t, 1000, Color::Red), Color::Red);
        assert_eq!(m.tokens_bytes(), (3_000, 3_000));
        // A Yellow one can only use E, even with C full.
        assert_eq!(m.meter(t, 1000, Color::Yellow), Color::Yellow);
        assert_eq!(m.tokens_bytes(), (3_000, 2_000));
        // Green uses C, then falls to E, then Red.
        assert_eq!(burst(&mut || m.meter(t, 1000, Color::Green), 6), [3, 2, 1]);
        // Colour-blind would have given the Yellow packet C's tokens.
        let mut b = sr(1_000_000, 3_000, 3_000, MeterMode::ColorBlind);
        assert_eq!(b.meter(t, 1000, Color::Yellow), Color::Green);
        assert_eq!(b.meter(t, 1000, Color::Red), Color::Green);
    }

    #[test]
    fn trtcm_burst_and_colors() {
        // PBS 8 000, CBS 4 000; a burst of 1000-byte packets at one instant.
        let mut m = tr(2_000_000, 8_000, 1_000_000, 4_000, MeterMode::ColorBlind);
        let t = Instant::ZERO;
        assert_eq!(burst(&mut || m.meter(t, 1000, Color::Green), 12), [4, 4, 4]);
        assert_eq!(m.tokens_bytes(), (0, 0));
        // Red takes nothing: after a refill of exactly 1000 bytes of P (4 ms at 2 Mbit/s)
        // and 500 bytes of C, a 1000-byte packet is Yellow.
        let t = Instant::from_millis(4);
        assert_eq!(m.meter(t, 1000, Color::Green), Color::Yellow);
        assert_eq!(m.tokens_bytes(), (0, 500));
        assert_eq!(m.meter(t, 1, Color::Green), Color::Red);
    }

    #[test]
    fn trtcm_color_aware() {
        let mut m = tr(2_000_000, 4_000, 1_000_000, 4_000, MeterMode::ColorAware);
        let t = Instant::ZERO;
        assert_eq!(m.meter(t, 1000, Color::Red), Color::Red);
        assert_eq!(m.tokens_bytes(), (4_000, 4_000));
        assert_eq!(m.meter(t, 1000, Color::Yellow), Color::Yellow);
        assert_eq!(m.tokens_bytes(), (3_000, 4_000));
        assert_eq!(m.meter(t, 1000, Color::Green), Color::Green);
        assert_eq!(m.tokens_bytes(), (2_000, 3_000));
    }

    /// Offered load far above the rates for 100 simulated seconds, in packets of mixed sizes
    /// at irregular instants: the bytes each colour gets match the configured rates within
    /// 0.1 %, and exactly (to one packet) once the initial bursts are accounted for.
    #[test]
    fn long_run_rates_are_exact() {
        let cir = 10_000_000_u64; // 10 Mbit/s
        let pir = 25_000_000_u64;
        let mut s = sr(cir, 20_000, 30_000, MeterMode::ColorBlind);
        let mut t2 = tr(pir, 40_000, cir, 20_000, MeterMode::ColorBlind);
        let mut s_bytes = [0u64; 3];
        let mut t_bytes = [0u64; 3];
        let mut now = 0u64;
        let mut x = 0x1234_5678_u32;
        let end = 100 * NANOS_PER_SEC;
        while now < end {
            // xorshift: sizes 64..=1500 and gaps 1..=200 µs (about 60 Mbit/s offered).
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let len = 64 + (x % 1437) as usize;
            now += 1_000 + u64::from(x >> 8) % 199_000;
            let t = Instant::from_nanos(now);
            s_bytes[s.meter(t, len, Color::Green) as usize] += len as u64;
            t_bytes[t2.meter(t, len, Color::Green) as usize] += len as u64;
        }
        let secs = now as f64 / 1e9;
        let cir_bytes = cir as f64 / 8.0 * secs;
        let pir_bytes = pir as f64 / 8.0 * secs;
        let rel = |got: u64, want: f64| (got as f64 - want).abs() / want;
        // srTCM: Green is CIR (+ CBS at the start); Green + Yellow is also CIR (E only fills
        // when C is full, which never happens under overload) + CBS + EBS.
        assert!(
            rel(s_bytes[0], cir_bytes) < 0.001,
            "{s_bytes:?} vs {cir_bytes}"
        );
        let exact_green = cir * now / 8 / NANOS_PER_SEC + 20_000;
        assert!(
            exact_green - s_bytes[0] < 1500,
            "{} {}",
            exact_green,
            s_bytes[0]
        );
        assert!(
            s_bytes[1] <= 30_000,
            "yellow only from the initial E: {s_bytes:?}"
        );
        // trTCM: Green at CIR, Green + Yellow at PIR.
        assert!(rel(t_bytes[0], cir_bytes) < 0.001, "{t_bytes:?}");
        assert!(
            rel(t_bytes[0] + t_bytes[1], pir_bytes) < 0.001,
            "{t_bytes:?}"
        );
        let exact_gy = pir * now / 8 / NANOS_PER_SEC + 40_000;
        assert!(exact_gy - (t_bytes[0] + t_bytes[1]) < 1500);
        assert!(t_bytes[2] > 0);
    }

    /// Under a load just below CIR nothing is ever Yellow or Red, however long the run: the
    /// refill keeps every nanobit.
    #[test]
    fn no_drift_just_below_rate() {
        // 1500-byte packets every 1 200 001 ns = 9.999 99 Mbit/s against a CIR of 10 Mbit/s,
        // with a bucket of exactly one packet: any lost remainder would turn one Yellow.
        let mut s = sr(10_000_000, 1500, 0, MeterMode::ColorBlind);
        let mut now = 0u64;
        for _ in 0..1_000_000 {
            now += 1_200_001;
            assert_eq!(
                s.meter(Instant::from_nanos(now), 1500, Color::Green),
                Color::Green
            );
        }
        // And at exactly the rate: every 1.2 ms.
        let mut s = sr(10_000_000, 1500, 0, MeterMode::ColorBlind);
        let mut now = 0u64;
        for i in 0..1_000_000 {
            now += 1_200_000;
            assert_eq!(
                s.meter(Instant::from_nanos(now), 1500, Color::Green),
                Color::Green,
                "packet {i}"
            );
        }
        // One byte more per packet than the rate refills goes Red within the run.
        let mut s = sr(10_000_000, 1501, 0, MeterMode::ColorBlind);
        let mut now = 0u64;
        let mut red = 0;
        for _ in 0..10 {
            now += 1_200_000;
            red += usize::from(s.meter(Instant::from_nanos(now), 1501, Color::Green) == Color::Red);
        }
        assert!(red > 0);
    }

    /// 400 Gbit/s after an idle gap of 10 hours: no overflow (debug builds would panic), the
    /// buckets are exactly full, and a burst gets exactly CBS + EBS.
    #[test]
    fn fast_rate_long_idle_no_overflow() {
        let rate = 400_000_000_000;
        let mut s = sr(rate, 1 << 30, 1 << 30, MeterMode::ColorBlind);
        let mut p = tr(rate, 1 << 30, rate, 1 << 30, MeterMode::ColorBlind);
        let mut b = TokenBucket::new(
            RateConfig {
                rate_bps: rate,
                burst_bytes: 1 << 30,
            },
            MTU,
            Instant::ZERO,
        )
        .unwrap();
        let t0 = Instant::ZERO;
        let _ = s.meter(t0, 1 << 20, Color::Green);
        let _ = p.meter(t0, 1 << 20, Color::Green);
        assert!(b.try_take(t0, 1 << 20));
        let t = t0 + Duration::from_secs(10 * 3600);
        let _ = s.meter(t, 0, Color::Green);
        let _ = p.meter(t, 0, Color::Green);
        assert_eq!(s.tokens_bytes(), (1 << 30, 1 << 30));
        assert_eq!(p.tokens_bytes(), (1 << 30, 1 << 30));
        assert_eq!(b.available_bytes(t), 1 << 30);
        // Even at Instant::MAX.
        let _ = s.meter(Instant::MAX, 0, Color::Green);
        assert_eq!(b.ready_at(Instant::MAX, 1), Instant::MAX);
        // 400 Gbit/s is 50 bytes per ns: 1 ns after draining, exactly 50 bytes are back.
        let mut s = sr(rate, 1500, 0, MeterMode::ColorBlind);
        assert_eq!(s.meter(t0, 1500, Color::Green), Color::Green);
        let t1 = Instant::from_nanos(1);
        assert_eq!(s.meter(t1, 51, Color::Green), Color::Red);
        assert_eq!(s.meter(t1, 50, Color::Green), Color::Green);
    }

    #[test]
    fn token_bucket_ready_at_is_exact() {
        // 1 Gbit/s, 3000-byte bucket: after draining, 1500 bytes take 12 µs.
        let mut b = TokenBucket::new(
            RateConfig {
                rate_bps: 1_000_000_000,
                burst_bytes: 3000,
            },
            MTU,
            Instant::ZERO,
        )
        .unwrap();
        let t0 = Instant::from_micros(5);
        assert!(b.try_take(t0, 3000));
        assert!(!b.try_take(t0, 1));
        let at = b.ready_at(t0, 1500);
        assert_eq!(at, t0 + Duration::from_micros(12));
        assert!(!b.can_take(Instant::from_nanos(at.as_nanos() - 1), 1500));
        assert!(b.can_take(at, 1500));
        assert!(b.try_take(at, 1500));
        // Backwards time earns nothing and does not rewind.
        assert!(!b.try_take(t0, 1));
        assert_eq!(b.ready_at(t0, 0), at);
        // Saturating take never underflows.
        b.take_saturating(at, 1 << 20);
        assert_eq!(b.available_bytes(at), 0);
    }
}
