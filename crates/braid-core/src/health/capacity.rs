//! Capacity estimation for NICs configured `auto`: each link's deliverable rate, measured
//! from what the peer says it received, fed to the engine as that NIC's capacity.
//!
//! Owns the delivery-rate samples, the windowed-max bottleneck estimate, the pacing gain cycle
//! and the bounds on how fast the estimate moves. It does not own the counters it samples (the
//! engine counts bytes sent per NIC; the peer's engine counts bytes received and returns them
//! in each probe reply: [`braid_wire::ProbeReplyCounters`]), does not send probes (link health
//! decides when, see [`super`]), and does not apply the estimate (the engine sets the NIC's
//! capacity and pacing rate from [`CapacityEstimator::stats`], through the same path as
//! `Command::SetNicCapacity`).
//!
//! # Call protocol
//!
//! Time is passed in and never goes backwards; all byte counts are cumulative wire bytes
//! (braid packet plus the transport's per-packet overhead: the unit pacing uses).
//! - [`CapacityEstimator::add_link`] with the configured capacity as the initial guess;
//! - [`CapacityEstimator::on_probe_sent`] after each probe is written on the NIC, with the
//!   NIC's sent-bytes counter (the probe included);
//! - [`CapacityEstimator::on_probe_reply`] for each probe reply that carries the peer's
//!   counters, with its received-bytes counter for that link;
//! - [`CapacityEstimator::on_link_down`] when link health declares the link Down;
//! - then read [`CapacityEstimator::stats`]: `estimate_bps` (the capacity) and `pacing_bps`
//!   (the rate to pace at now, the estimate times the phase's gain).
//!
//! Nothing here runs per packet: two calls per probe interval per NIC, no allocation after
//! `add_link`.
//!
//! # How a sample is taken
//!
//! Probes travel in the same FIFO as data on their link. So the bytes the peer received
//! between the arrivals of two probes are exactly the bytes sent between the two probes that
//! were not lost. With `S` our sent counter at each probe's send, `R` the peer's received
//! counter at its arrival, `t_s` the send time (our clock) and `t_r` the arrival time (the
//! peer's clock, used only in differences), one sample over the probes of one `round` (so it
//! measures one pacing gain) is
//!
//! ```text
//! delivery rate = ΔR / Δt_r      (what the link delivered: at most its bottleneck rate)
//! send rate     = ΔS / Δt_s      loss = 1 − ΔR / ΔS
//! loaded        = ΔS ≥ 0.9 × ∫ pacing_rate dt  (the pacer, not the traffic, was the limit)
//! queue delay   = (t_r − t_s) − min(t_r − t_s) over 1–2 s   (clock offset cancels)
//! ```
//!
//! A delivery rate is a lower bound of the link's rate, and equals it when the link was busy
//! for the whole interval: that is the delivery-rate model of BBR ([draft-ietf-ccwg-bbr]
//! §4.5 "Delivery rate samples", after [draft-cheng-iccrg-delivery-rate-estimation]). The link
//! was the limit when it delivered less than we sent (its queue grew: the arrivals spread
//! over more time than the sends) or lost bytes, with a queue at the end.
//!
//! Traffic often comes in bursts (TCP's, or a pacer far above the link), so the link may be
//! busy for only part of a round. A probe waits behind the bytes queued when it is sent, so
//! the link is busy for its queue delay after its send: when that reaches the next probe's
//! send and the next probe still finds a queue, the link was busy between the two, and the
//! bytes delivered between their arrivals came at the link's rate. A sample's delivery rate
//! is the higher of the round's and that of these busy stretches (if they add up to a tenth
//! of a round). A stalled receiver delays the probes too, so busy stretches alone never make
//! a sample count: on the testbed, with the CPU taken by a compiler, that alone sank the
//! estimates to the traffic's few Mbit/s.
//!
//! The queue delay's baseline is a minimum over one to two seconds, not BBR's ten: on a
//! loaded host the receiver's processing adds a lasting millisecond or more to every probe,
//! which a baseline from an idle moment long ago would read as a queue. A standing queue that
//! lasts longer becomes baseline; the samples' loss and delivery deficit still show it.
//!
//! # The estimate (BBR's model, adapted)
//!
//! - **Bottleneck rate = windowed max** of the samples that say something about the link
//!   ([draft-ietf-ccwg-bbr] §4.5.2 `BBR.max_bw`, over 10 rounds): samples in which the link,
//!   not braid, was the limit — the pacer was loaded (at a gain of at least 1) and the link
//!   delivered less than it was sent or lost bytes, or the link was saturated — and
//!   samples higher than the estimate. A sample taken while the application sent less than
//!   the pacer allowed (or the pacer held back, in `Drain` and `ProbeDown`) is *application
//!   limited* (§4.5.2.1), and one in which the link delivered all the pacer sent says only that
//!   the link kept up: both say "at least this much", so they count only if above the
//!   estimate. With light or intermittent traffic no sample counts and the estimate stays
//!   where it is: it never sinks toward the traffic's own rate (on the testbed, counting every
//!   loaded round let it sink ~10 % after each transfer, to the pacer's own slack).
//! - **Congestion caps it** ([draft-ietf-ccwg-bbr] §4.5.10, `BBR.bw_shortterm` after loss): a
//!   sample ending with a queue delay above `queue_delay_threshold` and with either loss above
//!   `loss_threshold` or (while sending at half the estimate or more) a delivery rate below
//!   90 % of the send rate means the link was saturated by us, so its delivery rate *is* the
//!   link's rate now: the max filter restarts from it (a link that got slower is followed at
//!   once, not after the window). Neither a queue alone (a busy receiving host adds one, and
//!   a queue that does not grow says the link kept up), nor a deficit with little traffic (a
//!   stalled receiver spreads the probes' arrivals, but loses nothing), nor loss alone
//!   (random loss) caps, so none can ratchet the estimate down round after round; a loss
//!   above 20 % still makes the sample count, for links with no queue to speak of
//!   (policers).
//! - **Probing upward.** Like BBR, the pacing rate is the estimate times a gain that cycles.
//!   `Startup` (gain 2, [draft-ietf-ccwg-bbr] §4.3.1) doubles the estimate each round while
//!   the delivery rate keeps up, until a queue or loss appears or the estimate stops growing
//!   by 25 % for three rounds (loaded or not: traffic that does not fill the link cannot show
//!   growth, and twice the estimate would only mislead the scheduler, which splits packets by
//!   the pacing rates); `Drain` (gain 0.5) empties the queue that built, until the queue
//!   delay falls below half the threshold (at most three rounds); then `ProbeBW` (§4.3.3)
//!   cycles
//!   `Cruise` (gain 1, six rounds) → `ProbeUp` (gain 1.25, one round, ended early by a queue
//!   delay above the threshold) → `ProbeDown` (gain 0.75, until the queue is gone, at most a
//!   round). The phase of each NIC's cycle is offset by its id, so links do not all probe at
//!   once. A probe upward that delivers 20 % more than the estimate with no queue and no loss
//!   goes back to `Startup`: the estimate is far too low (it was capped while another sender
//!   shared the link), and 25 % per cycle would take many seconds to recover.
//! - **Bounds.** The estimate starts at the configured guess, moves by at most ×2 or ÷2 per
//!   sample, and stays within `[min_bps, max_bps]`: never 0.
//!
//! # Why a round of 100 ms, not an RTT
//!
//! BBR's round is one RTT because its samples come with every ACK. Ours come with probe
//! replies, every 5 ms, and the links braid bonds have sub-millisecond RTTs but shapers with
//! buckets of several milliseconds (a TBF of 100 Mbit/s lets 64 KiB through at line rate
//! after an idle moment): over 100 ms such a burst adds at most ~5 % to a sample, and the
//! receiver's batching jitter (≤ 1 ms) about 1 %. Convergence takes a few rounds: about half a
//! second from a guess 10× too low or too high.
//!
//! [draft-ietf-ccwg-bbr]: https://datatracker.ietf.org/doc/draft-ietf-ccwg-bbr/
//! [draft-cheng-iccrg-delivery-rate-estimation]: https://datatracker.ietf.org/doc/draft-cheng-iccrg-delivery-rate-estimation/

use alloc::boxed::Box;
use core::time::Duration;

use crate::time::{Instant, duration_nanos};
use crate::types::{MAX_NICS, NicId};

/// Probes remembered per link for matching replies (as link health's ring).
pub const PROBE_RING: usize = 64;
/// Pacing gain in `Startup` ([draft-ietf-ccwg-bbr] uses 2.77; 2 is gentler on shallow shapers).
///
/// [draft-ietf-ccwg-bbr]: https://datatracker.ietf.org/doc/draft-ietf-ccwg-bbr/
pub const STARTUP_GAIN: f64 = 2.0;
/// Pacing gain in `Drain`: the inverse of [`STARTUP_GAIN`].
pub const DRAIN_GAIN: f64 = 0.5;
/// Pacing gain in `ProbeUp`.
pub const PROBE_UP_GAIN: f64 = 1.25;
/// Pacing gain in `ProbeDown`.
pub const PROBE_DOWN_GAIN: f64 = 0.75;
/// Rounds spent in `Cruise` between two probes upward.
pub const CRUISE_ROUNDS: u32 = 6;
/// Rounds the max filter remembers a sample ([draft-ietf-ccwg-bbr]'s `MaxBwFilterLen` is
/// 2 cycles; ours is one cycle plus slack: 10 rounds).
///
/// [draft-ietf-ccwg-bbr]: https://datatracker.ietf.org/doc/draft-ietf-ccwg-bbr/
pub const FILTER_ROUNDS: u32 = 10;
/// A sample is loaded when the bytes sent reach this fraction of what the pacer allowed.
pub const LOADED_FRACTION: f64 = 0.9;
/// Loss above this makes a sample count even without a queue (a policer drops at once).
pub const HEAVY_LOSS: f64 = 0.2;
/// The most `Drain` lasts, in rounds.
const DRAIN_MAX_ROUNDS: u32 = 3;
/// `Startup` ends after this many loaded rounds without [`STARTUP_GROWTH`].
const STARTUP_STALL_ROUNDS: u32 = 3;
/// Growth per round that keeps `Startup` going ([draft-ietf-ccwg-bbr] §4.3.1.1: 25 %).
const STARTUP_GROWTH: f64 = 1.25;
/// A sample spanning more rounds than this (lost replies, an outage) is discarded.
const MAX_SPAN_ROUNDS: u32 = 8;
/// Samples held by the max filter (more than [`FILTER_ROUNDS`] rounds' worth).
const FILTER_LEN: usize = 16;
/// A sample this much above the estimate, with no queue and no loss, restarts `Startup`.
const REGROW_FACTOR: f64 = 1.2;
/// One bucket of the windowed minimum one-way delay; the window is one to two buckets.
const MIN_OWD_BUCKET: Duration = Duration::from_secs(1);
/// A sample delivering less than this fraction of its send rate shows a growing queue.
const DEFICIT_FRACTION: f64 = 0.9;

/// Tuning of the capacity estimator. The defaults suit links of 1 Mbit/s to 100 Gbit/s with
/// queues (shapers, switch buffers) of a few milliseconds or more.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CapacityConfig {
    /// Length of a round: the unit of the gain cycle, and what one sample spans (the probes
    /// of one round). Default 100 ms; values below 10 ms are raised to it.
    pub round: Duration,
    /// The estimate never goes below this, bit/s. Default 1 Mbit/s; at least 1.
    pub min_bps: u64,
    /// The estimate never goes above this, bit/s. Default 1 Tbit/s; at least `min_bps`.
    pub max_bps: u64,
    /// Queue delay (one-way delay above its windowed minimum) that, with loss or a delivery
    /// deficit, marks the link congested; it also ends `Startup` and `ProbeUp`. Default 3 ms:
    /// above a busy host's batching jitter, below a 10 ms shaper queue.
    pub queue_delay_threshold: Duration,
    /// Loss (of bytes, over a sample) that, with a queue, marks the link congested; it also
    /// ends `Startup`. Default 0.02.
    pub loss_threshold: f64,
    /// Bytes a sample must have sent for its loss and load to mean anything (probes alone
    /// send ~2.4 KB per 100 ms). Default 24 000 (16 full-size packets).
    pub min_sample_bytes: u64,
}

impl Default for CapacityConfig {
    fn default() -> Self {
        Self {
            round: Duration::from_millis(100),
            min_bps: 1_000_000,
            max_bps: 1_000_000_000_000,
            queue_delay_threshold: Duration::from_millis(3),
            loss_threshold: 0.02,
            min_sample_bytes: 24_000,
        }
    }
}

impl CapacityConfig {
    fn sanitised(mut self) -> Self {
        self.round = self.round.max(Duration::from_millis(10));
        self.min_bps = self.min_bps.max(1);
        self.max_bps = self.max_bps.max(self.min_bps);
        if !(self.loss_threshold > 0.0 && self.loss_threshold < 1.0) {
            self.loss_threshold = 0.02;
        }
        self
    }

    fn clamp(&self, bps: u64) -> u64 {
        bps.clamp(self.min_bps, self.max_bps)
    }
}

/// Where a link is in the gain cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CapacityPhase {
    /// Gain 2 until the delivery rate stops growing or loss appears.
    Startup,
    /// Gain 0.5 until the queue `Startup` built is gone.
    Drain,
    /// Gain 1.25 for a round, or until a queue builds.
    ProbeUp,
    /// Gain 0.75 until that queue is gone.
    ProbeDown,
    /// Gain 1.
    Cruise,
}

impl CapacityPhase {
    /// The pacing gain of the phase.
    #[must_use]
    pub const fn gain(self) -> f64 {
        match self {
            Self::Startup => STARTUP_GAIN,
            Self::Drain => DRAIN_GAIN,
            Self::ProbeUp => PROBE_UP_GAIN,
            Self::ProbeDown => PROBE_DOWN_GAIN,
            Self::Cruise => 1.0,
        }
    }

    /// A short name for reports (`startup`, `drain`, `probe_up`, `probe_down`, `cruise`).
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::Startup => "startup",
            Self::Drain => "drain",
            Self::ProbeUp => "probe_up",
            Self::ProbeDown => "probe_down",
            Self::Cruise => "cruise",
        }
    }
}

/// What the estimator knows about one link. Rates in bit/s.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CapacityStats {
    /// The bottleneck estimate: the NIC's capacity.
    pub estimate_bps: u64,
    /// The rate to pace at now: the estimate times the phase's gain (clamped like it).
    pub pacing_bps: u64,
    /// The phase.
    pub phase: CapacityPhase,
    /// Delivery rate of the last sample (0 before the first): over its round, or over the
    /// stretches in it where the link was busy, whichever is higher.
    pub delivery_bps: u64,
    /// Send rate of the last sample.
    pub send_bps: u64,
    /// Byte loss of the last sample, `0..=1`.
    pub loss: f64,
    /// Queue delay at the last reply (one-way delay above its windowed minimum).
    pub queue_delay: Duration,
    /// Samples taken.
    pub samples: u64,
    /// Samples that entered the max filter (loaded, congested, or above the estimate).
    pub counted_samples: u64,
    /// Samples that capped the estimate (congestion).
    pub congestion_count: u64,
    /// Times the sample start was dropped: the peer's counter went back (a restart), the
    /// link went down, or replies were missing for too long.
    pub restart_count: u64,
    /// Probe replies that matched no probe remembered (late, duplicated, or forged).
    pub stale_reply_count: u64,
}

/// One probe as sent.
#[derive(Clone, Copy, Debug)]
struct SentProbe {
    seq: u64,
    at: Instant,
    sent_bytes: u64,
    allowed_bytes: u64,
    /// The round it was sent in, and that round's phase.
    round: u32,
    phase: CapacityPhase,
    valid: bool,
}

impl SentProbe {
    const NONE: Self = Self {
        seq: 0,
        at: Instant::ZERO,
        sent_bytes: 0,
        allowed_bytes: 0,
        round: 0,
        phase: CapacityPhase::Startup,
        valid: false,
    };
}

/// Both ends of a probe's trip: the start or end of a sample.
#[derive(Clone, Copy, Debug)]
struct Point {
    sent_at: Instant,
    sent_bytes: u64,
    allowed_bytes: u64,
    round: u32,
    phase: CapacityPhase,
    /// The peer's clock, ns.
    rx_at_ns: u64,
    delivered_bytes: u64,
}

/// Windowed maximum of delivery rates: a ring of (time, rate).
#[derive(Clone, Copy, Debug)]
struct MaxFilter {
    samples: [(Instant, u64); FILTER_LEN],
    len: usize,
    head: usize,
}

impl MaxFilter {
    const EMPTY: Self = Self {
        samples: [(Instant::ZERO, 0); FILTER_LEN],
        len: 0,
        head: 0,
    };

    fn push(&mut self, now: Instant, bps: u64) {
        self.samples[(self.head + self.len) % FILTER_LEN] = (now, bps);
        if self.len == FILTER_LEN {
            self.head = (self.head + 1) % FILTER_LEN;
        } else {
            self.len += 1;
        }
    }

    /// The largest sample not older than `window`.
    fn max(&self, now: Instant, window: Duration) -> Option<u64> {
        (0..self.len)
            .map(|k| self.samples[(self.head + k) % FILTER_LEN])
            .filter(|&(t, _)| now.saturating_duration_since(t) <= window)
            .map(|(_, bps)| bps)
            .max()
    }

    fn clear(&mut self) {
        *self = Self::EMPTY;
    }
}

/// Windowed minimum of a signed one-way delay, over one to two [`MIN_OWD_BUCKET`]s.
#[derive(Clone, Copy, Debug)]
struct MinOwd {
    current: i64,
    previous: i64,
    bucket_start: Instant,
}

impl MinOwd {
    const NONE: Self = Self {
        current: i64::MAX,
        previous: i64::MAX,
        bucket_start: Instant::ZERO,
    };

    fn sample(&mut self, now: Instant, owd: i64) {
        let age = now.saturating_duration_since(self.bucket_start);
        if self.current == i64::MAX || age >= 2 * MIN_OWD_BUCKET {
            *self = Self {
                current: owd,
                previous: i64::MAX,
                bucket_start: now,
            };
        } else if age >= MIN_OWD_BUCKET {
            *self = Self {
                current: owd,
                previous: self.current,
                bucket_start: now,
            };
        } else {
            self.current = self.current.min(owd);
        }
    }

    fn get(&self) -> i64 {
        self.current.min(self.previous)
    }
}

/// One link's estimator.
#[derive(Debug)]
struct LinkEstimate {
    stats: CapacityStats,
    sent: [SentProbe; PROBE_RING],
    /// ∫ pacing rate dt, in bytes (wrapping), up to `allowed_at`.
    allowed_bytes: u64,
    /// The remainder of that integral below one byte, in bit·ns.
    allowed_rem: u128,
    allowed_at: Instant,
    start: Option<Point>,
    /// The last reply's point and its queue delay.
    last: Option<(Point, Duration)>,
    /// Bytes delivered, and the time they took, between consecutive replies that found the
    /// link busy all along, since `start`.
    busy_bytes: u64,
    busy_ns: u64,
    filter: MaxFilter,
    min_owd: MinOwd,
    round_start: Instant,
    /// Counts rounds (and phase changes): a sample spans the probes of one round, so it
    /// measures one gain.
    round_id: u32,
    rounds_in_phase: u32,
    /// `Startup`: the estimate at the last 25 % growth, and loaded rounds since.
    full_bps: u64,
    stall_rounds: u32,
    /// The first `Cruise` starts this many rounds in, so links probe at different times.
    cruise_offset: u32,
}

impl LinkEstimate {
    fn new(now: Instant, nic: NicId, initial_bps: u64, config: &CapacityConfig) -> Self {
        let estimate = config.clamp(initial_bps);
        let mut link = Self {
            stats: CapacityStats {
                estimate_bps: estimate,
                pacing_bps: estimate,
                phase: CapacityPhase::Startup,
                delivery_bps: 0,
                send_bps: 0,
                loss: 0.0,
                queue_delay: Duration::ZERO,
                samples: 0,
                counted_samples: 0,
                congestion_count: 0,
                restart_count: 0,
                stale_reply_count: 0,
            },
            sent: [SentProbe::NONE; PROBE_RING],
            allowed_bytes: 0,
            allowed_rem: 0,
            allowed_at: now,
            start: None,
            last: None,
            busy_bytes: 0,
            busy_ns: 0,
            filter: MaxFilter::EMPTY,
            min_owd: MinOwd::NONE,
            round_start: now,
            round_id: 0,
            rounds_in_phase: 0,
            full_bps: 0,
            stall_rounds: 0,
            cruise_offset: u32::from(nic.0) % CRUISE_ROUNDS,
        };
        link.enter(now, CapacityPhase::Startup, config);
        link
    }

    /// Extend the allowed-bytes integral to `now` at the current pacing rate.
    fn advance_allowed(&mut self, now: Instant) {
        let dt = duration_nanos(now.saturating_duration_since(self.allowed_at));
        let bit_ns = u128::from(self.stats.pacing_bps) * u128::from(dt) + self.allowed_rem;
        let per_byte = 8 * 1_000_000_000u128;
        // Truncation: `bytes` is the integral's growth since the last call, far below 2^64.
        self.allowed_bytes = self.allowed_bytes.wrapping_add((bit_ns / per_byte) as u64);
        self.allowed_rem = bit_ns % per_byte;
        self.allowed_at = self.allowed_at.max(now);
    }

    fn set_pacing(&mut self, config: &CapacityConfig) {
        let paced = self.stats.estimate_bps as f64 * self.stats.phase.gain();
        // `as` saturates on f64 → u64.
        self.stats.pacing_bps = config.clamp(paced as u64);
    }

    fn enter(&mut self, now: Instant, phase: CapacityPhase, config: &CapacityConfig) {
        self.stats.phase = phase;
        self.round_start = now;
        self.round_id = self.round_id.wrapping_add(1);
        self.rounds_in_phase = if phase == CapacityPhase::Cruise {
            core::mem::take(&mut self.cruise_offset)
        } else {
            0
        };
        if phase == CapacityPhase::Startup {
            self.full_bps = 0;
            self.stall_rounds = 0;
        }
        self.set_pacing(config);
    }

    /// A round ended at `now` (checked at probe sends): move through the cycle.
    fn on_round(&mut self, now: Instant, config: &CapacityConfig) {
        if now.saturating_duration_since(self.round_start) < config.round {
            return;
        }
        self.round_start = now;
        self.round_id = self.round_id.wrapping_add(1);
        self.rounds_in_phase = self.rounds_in_phase.saturating_add(1);
        let next = match self.stats.phase {
            CapacityPhase::Drain if self.rounds_in_phase >= DRAIN_MAX_ROUNDS => {
                CapacityPhase::Cruise
            }
            CapacityPhase::ProbeUp => CapacityPhase::ProbeDown,
            CapacityPhase::ProbeDown => CapacityPhase::Cruise,
            CapacityPhase::Cruise if self.rounds_in_phase >= CRUISE_ROUNDS => {
                CapacityPhase::ProbeUp
            }
            _ => return,
        };
        self.enter(now, next, config);
    }

    fn on_probe_sent(&mut self, now: Instant, seq: u64, sent_bytes: u64, config: &CapacityConfig) {
        self.advance_allowed(now);
        // A round that ends now starts with this probe.
        self.on_round(now, config);
        self.sent[slot(seq)] = SentProbe {
            seq,
            at: now,
            sent_bytes,
            allowed_bytes: self.allowed_bytes,
            round: self.round_id,
            phase: self.stats.phase,
            valid: true,
        };
    }

    fn on_probe_reply(
        &mut self,
        now: Instant,
        seq: u64,
        echo_ts: Instant,
        peer_rx_ts: Instant,
        delivered_bytes: u64,
        config: &CapacityConfig,
    ) {
        self.advance_allowed(now);
        let sent = self.sent[slot(seq)];
        if !sent.valid || sent.seq != seq || sent.at != echo_ts {
            self.stats.stale_reply_count += 1;
            return;
        }
        // Each probe gives one point: a second reply to it is stale.
        self.sent[slot(seq)].valid = false;
        let p = Point {
            sent_at: sent.at,
            sent_bytes: sent.sent_bytes,
            allowed_bytes: sent.allowed_bytes,
            round: sent.round,
            phase: sent.phase,
            rx_at_ns: peer_rx_ts.as_nanos(),
            delivered_bytes,
        };

        // Queue delay from this probe's one-way delay (the clock offset cancels).
        let owd = signed_ns(p.rx_at_ns, p.sent_at.as_nanos());
        self.min_owd.sample(now, owd);
        let queue_ns = owd.saturating_sub(self.min_owd.get()).max(0).unsigned_abs();
        self.stats.queue_delay = Duration::from_nanos(queue_ns);
        let threshold = config.queue_delay_threshold;
        let queue = self.stats.queue_delay;
        self.busy_pair(&p, queue);
        match self.stats.phase {
            // A queue is building: we are sending above the link's rate.
            CapacityPhase::ProbeUp if queue >= threshold => {
                self.enter(now, CapacityPhase::ProbeDown, config);
            }
            CapacityPhase::Startup if queue >= threshold => {
                self.enter(now, CapacityPhase::Drain, config);
            }
            CapacityPhase::ProbeDown | CapacityPhase::Drain
                if self.stats.queue_delay <= threshold / 2 =>
            {
                self.enter(now, CapacityPhase::Cruise, config);
            }
            _ => {}
        }

        let Some(start) = self.start else {
            self.restart(p);
            return;
        };
        if p.sent_at <= start.sent_at {
            // A reply to an older probe than the start: nothing to measure.
            return;
        }
        let dts = p.sent_at - start.sent_at;
        let dtr_ns = signed_ns(p.rx_at_ns, start.rx_at_ns);
        if p.delivered_bytes < start.delivered_bytes
            || dtr_ns <= 0
            || dts > config.round.saturating_mul(MAX_SPAN_ROUNDS)
        {
            // The peer restarted (its counter went back), its clock did, or the replies
            // stopped for long: start over from here.
            self.stats.restart_count += 1;
            self.restart(p);
            return;
        }
        let dtr = Duration::from_nanos(dtr_ns.unsigned_abs());
        // One sample per round: it ends at the first probe of a later round (so it measures
        // one gain), once it spans half a round; or after two rounds whatever the rounds.
        let next_round = p.round != start.round && dts >= config.round / 2;
        let due = next_round || dts >= config.round.saturating_mul(2);
        if !due || dtr < config.round / 4 {
            return;
        }
        let busy = (self.busy_bytes, self.busy_ns);
        self.restart(p);
        self.sample(now, &start, &p, dts, dtr, busy, config);
    }

    /// The next sample starts at `p`.
    fn restart(&mut self, p: Point) {
        self.start = Some(p);
        self.busy_bytes = 0;
        self.busy_ns = 0;
    }

    /// Account the stretch from the last reply to `p` if the link was busy all along: the
    /// last probe waited behind bytes queued when it was sent for at least the time to `p`'s
    /// send, and `p` still found a queue. The bytes delivered in that stretch came at the
    /// link's rate, whatever the traffic did before and after (bursts into a shaper).
    fn busy_pair(&mut self, p: &Point, queue: Duration) {
        if let Some((last, last_queue)) = self.last
            && last.sent_at < p.sent_at
        {
            let gap = p.sent_at - last.sent_at;
            let dtr = signed_ns(p.rx_at_ns, last.rx_at_ns);
            if last_queue >= gap
                && queue >= gap / 2
                && dtr > 0
                && p.delivered_bytes >= last.delivered_bytes
            {
                let bytes = (p.delivered_bytes - last.delivered_bytes)
                    .min(p.sent_bytes.wrapping_sub(last.sent_bytes));
                self.busy_bytes = self.busy_bytes.saturating_add(bytes);
                self.busy_ns = self.busy_ns.saturating_add(dtr.unsigned_abs());
            }
        }
        if self.last.is_none_or(|(last, _)| last.sent_at < p.sent_at) {
            self.last = Some((*p, queue));
        }
    }

    /// One delivery-rate sample from `a` to `b`; `busy`: the bytes delivered, and the
    /// nanoseconds they took, in the stretches in between where the link was busy.
    #[expect(clippy::too_many_arguments, reason = "one private call site")]
    fn sample(
        &mut self,
        now: Instant,
        a: &Point,
        b: &Point,
        dts: Duration,
        dtr: Duration,
        (busy_bytes, busy_ns): (u64, u64),
        config: &CapacityConfig,
    ) {
        let sent = b.sent_bytes.wrapping_sub(a.sent_bytes);
        // More delivered than sent: a duplicating link. Count at most what was sent.
        let delivered = (b.delivered_bytes - a.delivered_bytes).min(sent);
        let allowed = b.allowed_bytes.wrapping_sub(a.allowed_bytes);
        // While the link was busy it delivered at its rate: a better sample than the whole
        // round's when the traffic came in bursts.
        let round_bps = rate_bps(delivered, dtr);
        let busy_bps = rate_bps(busy_bytes, Duration::from_nanos(busy_ns));
        let long_busy = busy_ns >= duration_nanos(config.round / 10);
        let mut delivery_bps = if long_busy {
            round_bps.max(busy_bps)
        } else {
            round_bps
        };
        let loss = if sent == 0 {
            0.0
        } else {
            1.0 - delivered as f64 / sent as f64
        };
        let s = &mut self.stats;
        s.samples += 1;
        s.send_bps = rate_bps(sent, dts);
        s.loss = loss;

        let enough = sent >= config.min_sample_bytes;
        // A round paced below the estimate (Drain, ProbeDown) is limited by our own choice:
        // what it delivered says nothing of the link.
        let loaded =
            enough && a.phase.gain() >= 1.0 && sent as f64 >= LOADED_FRACTION * allowed as f64;
        let queue = s.queue_delay >= config.queue_delay_threshold;
        // Saturated by us: a queue at the end, and it overflowed (loss) or grew (the link
        // delivered less than we sent) while we sent at half the estimate or more. A stalled
        // receiver (a busy host) also delays the probes and spreads their arrivals, but loses
        // nothing: with little traffic, that is all a queue and a deficit would show.
        let deficit = (round_bps as f64) < DEFICIT_FRACTION * s.send_bps as f64;
        let substantial = s.send_bps >= s.estimate_bps / 2;
        let congested =
            enough && queue && (loss >= config.loss_threshold || (deficit && substantial));
        let heavy_loss = enough && loss >= HEAVY_LOSS;
        if congested || heavy_loss {
            // The queue overflowed or grew under our traffic: it is the link's, so even a short
            // busy stretch (one pair of probes) measured the link's rate, and the round's
            // (bursts, slow starts) would be too low a cap.
            delivery_bps = delivery_bps.max(busy_bps);
        }
        // What counts: the link limited a loaded pacer (it delivered less than we sent, or
        // lost), was saturated, was busy for a while, or did better than the estimate. A
        // loaded round that delivered all it was given says only that the link kept up with
        // the pacer: counting it would let the estimate sink to the pacer's own slack.
        let link_limited = loaded && (deficit || loss >= config.loss_threshold);
        s.delivery_bps = delivery_bps;
        let counts = link_limited || congested || heavy_loss || delivery_bps > s.estimate_bps;
        if congested {
            // Saturated: this delivery rate is the link's rate now; forget higher samples.
            self.filter.clear();
            s.congestion_count += 1;
        }
        if counts {
            self.filter.push(now, delivery_bps);
            s.counted_samples += 1;
        }
        let window = config.round.saturating_mul(FILTER_ROUNDS);
        let before = s.estimate_bps;
        if let Some(max) = self.filter.max(now, window) {
            let bounded = max.clamp(before / 2, before.saturating_mul(2));
            s.estimate_bps = config.clamp(bounded);
        }
        // A probe upward that found 20 % more with no queue and no loss: the estimate is far
        // below the link (it was capped while another sender filled the link, or the traffic
        // was light for long). Search again with Startup's doubling rather than 25 % a cycle.
        let regrow = s.phase != CapacityPhase::Startup
            && delivery_bps as f64 >= before as f64 * REGROW_FACTOR
            && !queue
            && loss < config.loss_threshold;
        if regrow {
            self.enter(now, CapacityPhase::Startup, config);
        }
        let s = &mut self.stats;

        if s.phase == CapacityPhase::Startup {
            if congested || heavy_loss || (enough && loss >= config.loss_threshold) {
                self.enter(now, CapacityPhase::Drain, config);
            } else if s.estimate_bps as f64 >= self.full_bps as f64 * STARTUP_GROWTH {
                self.full_bps = s.estimate_bps;
                self.stall_rounds = 0;
            } else {
                // No growth, loaded or not: the link is full, or the traffic does not fill
                // it and twice the estimate only misleads the scheduler.
                self.stall_rounds += 1;
                if self.stall_rounds >= STARTUP_STALL_ROUNDS {
                    self.enter(now, CapacityPhase::Drain, config);
                }
            }
        }
        self.set_pacing(config);
    }

    fn set_estimate(&mut self, now: Instant, bps: u64, config: &CapacityConfig) {
        self.advance_allowed(now);
        self.stats.estimate_bps = config.clamp(bps);
        self.filter.clear();
        self.start = None;
        self.last = None;
        self.enter(now, CapacityPhase::Startup, config);
    }
}

fn slot(seq: u64) -> usize {
    // The remainder is below PROBE_RING, so it fits.
    (seq % PROBE_RING as u64) as usize
}

/// `a − b` in signed nanoseconds, saturating.
fn signed_ns(a: u64, b: u64) -> i64 {
    let d = i128::from(a) - i128::from(b);
    i64::try_from(d).unwrap_or(if d < 0 { i64::MIN } else { i64::MAX })
}

/// `bytes` over `d`, in bit/s (saturating; 0 for a zero duration).
fn rate_bps(bytes: u64, d: Duration) -> u64 {
    let ns = u128::from(duration_nanos(d));
    if ns == 0 {
        return 0;
    }
    u64::try_from(u128::from(bytes) * 8_000_000_000 / ns).unwrap_or(u64::MAX)
}

/// The capacity estimators of every `auto` NIC of one engine. See the module doc.
///
/// Bounded: at most [`MAX_NICS`] links, each with a fixed [`PROBE_RING`] and a fixed max
/// filter; `add_link` allocates a link's state once, nothing else allocates.
#[derive(Debug)]
pub struct CapacityEstimator {
    config: CapacityConfig,
    links: [Option<Box<LinkEstimate>>; MAX_NICS],
}

impl CapacityEstimator {
    /// An estimator with no links. Out-of-range config values are clamped (see
    /// [`CapacityConfig`]).
    #[must_use]
    pub fn new(config: CapacityConfig) -> Self {
        Self {
            config: config.sanitised(),
            links: [const { None }; MAX_NICS],
        }
    }

    /// The configuration in use (after clamping).
    #[must_use]
    pub const fn config(&self) -> &CapacityConfig {
        &self.config
    }

    /// Estimate `nic`'s capacity from `initial_bps` on (clamped to `[min_bps, max_bps]`),
    /// in `Startup`. A NIC already estimated keeps its state; an invalid id is ignored.
    pub fn add_link(&mut self, now: Instant, nic: NicId, initial_bps: u64) {
        if let Some(slot) = self.links.get_mut(nic.index())
            && slot.is_none()
        {
            *slot = Some(Box::new(LinkEstimate::new(
                now,
                nic,
                initial_bps,
                &self.config,
            )));
        }
    }

    /// Stop estimating `nic`.
    pub fn remove_link(&mut self, nic: NicId) {
        if let Some(slot) = self.links.get_mut(nic.index()) {
            *slot = None;
        }
    }

    /// `true` if `nic` is estimated.
    #[must_use]
    pub fn contains(&self, nic: NicId) -> bool {
        self.links.get(nic.index()).is_some_and(Option::is_some)
    }

    /// A new guess for `nic` (an operator's `SetNicCapacity`): the estimate restarts from it,
    /// in `Startup`, with no samples.
    pub fn set_estimate(&mut self, now: Instant, nic: NicId, bps: u64) {
        let config = self.config;
        if let Some(link) = self.link_mut(nic) {
            link.set_estimate(now, bps, &config);
        }
    }

    /// Probe `seq` was written on `nic` at `now`; `sent_bytes` is the NIC's cumulative count of
    /// wire bytes sent, this probe included.
    pub fn on_probe_sent(&mut self, now: Instant, nic: NicId, seq: u64, sent_bytes: u64) {
        let config = self.config;
        if let Some(link) = self.link_mut(nic) {
            link.on_probe_sent(now, seq, sent_bytes, &config);
        }
    }

    /// A reply to probe `seq` (sent at `echo_ts`) arrived on `nic`: the peer received the probe
    /// at `peer_rx_ts` (its clock) and had by then received `delivered_bytes` wire bytes on
    /// this link (its counter, converted to wire bytes). May take a sample and change the
    /// estimate and the pacing rate.
    pub fn on_probe_reply(
        &mut self,
        now: Instant,
        nic: NicId,
        seq: u64,
        echo_ts: Instant,
        peer_rx_ts: Instant,
        delivered_bytes: u64,
    ) {
        let config = self.config;
        if let Some(link) = self.link_mut(nic) {
            link.on_probe_reply(now, seq, echo_ts, peer_rx_ts, delivered_bytes, &config);
        }
    }

    /// Link health declared `nic` Down: the next sample starts after it is back (an interval
    /// spanning the outage would read as heavy loss). The estimate is kept.
    pub fn on_link_down(&mut self, nic: NicId) {
        if let Some(link) = self.link_mut(nic) {
            link.last = None;
            if link.start.take().is_some() {
                link.stats.restart_count += 1;
            }
        }
    }

    /// What is known about `nic`; `None` if it is not estimated.
    #[must_use]
    pub fn stats(&self, nic: NicId) -> Option<&CapacityStats> {
        self.links.get(nic.index())?.as_deref().map(|l| &l.stats)
    }

    fn link_mut(&mut self, nic: NicId) -> Option<&mut LinkEstimate> {
        self.links.get_mut(nic.index())?.as_deref_mut()
    }
}

#[cfg(test)]
mod tests;
