//! The state of one monitored link: outstanding probes, the loss window, the RTT and one-way
//! delay estimators, and the Up/Degraded/Down decision. [`super::HealthMonitor`] owns one per
//! NIC and turns the decisions into events; this file owns no queue and sees no other link.

use core::time::Duration;

use super::{
    HealthConfig, LinkState, LinkStats, MAX_LOSS_WINDOW, MAX_OUTSTANDING_PROBES, MIN_LOSS_SAMPLES,
    ProbeToSend, RTT_BASELINE_FLOOR,
};
use crate::time::{Instant, duration_nanos};
use crate::types::NicId;

/// RFC 6298 §2.1: the RTO before any RTT sample. Here it only bounds how long a probe may wait
/// for its reply before it counts as lost (the probe ring bounds it further).
const INITIAL_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Length of one bucket of the windowed minimum RTT; the window is one to two buckets.
const MIN_RTT_BUCKET: Duration = Duration::from_secs(5);
/// Leaving Degraded needs loss ≤ this × `degraded_loss`.
const LOSS_HYSTERESIS: f64 = 0.5;
/// Leaving Degraded needs srtt ≤ this × the RTT threshold.
const RTT_HYSTERESIS: f64 = 0.8;

/// One probe slot of the outstanding ring, indexed by `seq % MAX_OUTSTANDING_PROBES`.
#[derive(Clone, Copy, Debug, Default)]
struct Pending {
    seq: u64,
    sent_at: Instant,
    /// Sent, neither answered nor counted lost.
    waiting: bool,
}

/// Outcomes of the last `cap` resolved probes, one bit each (1 = lost).
#[derive(Clone, Debug)]
struct LossWindow {
    bits: [u64; (MAX_LOSS_WINDOW as usize).div_ceil(64)],
    cap: u32,
    head: u32,
    filled: u32,
    lost: u32,
}

impl LossWindow {
    fn new(cap: u32) -> Self {
        Self {
            bits: [0; (MAX_LOSS_WINDOW as usize).div_ceil(64)],
            cap,
            head: 0,
            filled: 0,
            lost: 0,
        }
    }

    fn push(&mut self, lost: bool) {
        let (word, bit) = ((self.head / 64) as usize, self.head % 64);
        if self.filled == self.cap {
            if self.bits[word] & (1 << bit) != 0 {
                self.lost -= 1;
            }
        } else {
            self.filled += 1;
        }
        if lost {
            self.bits[word] |= 1 << bit;
            self.lost += 1;
        } else {
            self.bits[word] &= !(1 << bit);
        }
        self.head = (self.head + 1) % self.cap;
    }

    fn loss(&self) -> f64 {
        if self.filled == 0 {
            0.0
        } else {
            f64::from(self.lost) / f64::from(self.filled)
        }
    }

    fn reset(&mut self) {
        *self = Self::new(self.cap);
    }
}

/// RFC 6298 §2 estimator, in nanoseconds.
#[derive(Clone, Copy, Debug)]
struct Rtt {
    srtt_ns: u64,
    rttvar_ns: u64,
}

impl Rtt {
    /// RFC 6298 §2.2 for the first sample, §2.3 (α = 1/8, β = 1/4; RTTVAR updated with the old
    /// SRTT) after.
    fn update(rtt: Option<Self>, r: u64) -> Self {
        match rtt {
            None => Self {
                srtt_ns: r,
                rttvar_ns: r / 2,
            },
            Some(Self { srtt_ns, rttvar_ns }) => {
                let (s, v, r128) = (u128::from(srtt_ns), u128::from(rttvar_ns), u128::from(r));
                let rttvar = (3 * v + s.abs_diff(r128)) / 4;
                let srtt = (7 * s + r128) / 8;
                Self {
                    srtt_ns: u64::try_from(srtt).unwrap_or(u64::MAX),
                    rttvar_ns: u64::try_from(rttvar).unwrap_or(u64::MAX),
                }
            }
        }
    }
}

/// Windowed minimum over one to two [`MIN_RTT_BUCKET`]s.
#[derive(Clone, Copy, Debug)]
struct MinRtt {
    current_ns: u64,
    previous_ns: u64,
    bucket_start: Instant,
}

impl MinRtt {
    const NONE: Self = Self {
        current_ns: u64::MAX,
        previous_ns: u64::MAX,
        bucket_start: Instant::ZERO,
    };

    fn sample(&mut self, now: Instant, r: u64) {
        let age = now - self.bucket_start;
        if self.current_ns == u64::MAX || age >= 2 * MIN_RTT_BUCKET {
            *self = Self {
                current_ns: r,
                previous_ns: u64::MAX,
                bucket_start: now,
            };
        } else if age >= MIN_RTT_BUCKET {
            *self = Self {
                current_ns: r,
                previous_ns: self.current_ns,
                bucket_start: now,
            };
        } else {
            self.current_ns = self.current_ns.min(r);
        }
    }

    fn get_ns(&self) -> u64 {
        self.current_ns.min(self.previous_ns)
    }
}

/// A signed one-way delay estimate (includes the clock offset between hosts): smoothed with
/// gain 1/8, RFC 3550 §6.4.1 interarrival jitter with gain 1/16.
#[derive(Clone, Copy, Debug, Default)]
struct Owd {
    has: bool,
    smoothed_ns: i64,
    last_ns: i64,
    jitter_ns: i64,
}

impl Owd {
    fn sample(&mut self, transit_ns: i64) {
        if self.has {
            let d = transit_ns.saturating_sub(self.last_ns).saturating_abs();
            self.jitter_ns += (d - self.jitter_ns) / 16;
            self.smoothed_ns += transit_ns.saturating_sub(self.smoothed_ns) / 8;
        } else {
            *self = Self {
                has: true,
                smoothed_ns: transit_ns,
                last_ns: transit_ns,
                jitter_ns: 0,
            };
        }
        self.last_ns = transit_ns;
    }

    fn smoothed(&self) -> Option<i64> {
        self.has.then_some(self.smoothed_ns)
    }
}

/// `a − b` in signed nanoseconds, saturating.
fn signed_ns(a: Instant, b: Instant) -> i64 {
    let d = i128::from(a.as_nanos()) - i128::from(b.as_nanos());
    i64::try_from(d).unwrap_or(if d < 0 { i64::MIN } else { i64::MAX })
}

fn clamp_duration(ns: i64) -> Duration {
    Duration::from_nanos(u64::try_from(ns).unwrap_or(0))
}

/// One monitored link.
#[derive(Debug)]
pub(super) struct Link {
    nic: NicId,
    stats: LinkStats,
    added_at: Instant,
    next_probe_at: Instant,
    next_seq: u64,
    /// Every probe below this seq is resolved; it points at a waiting probe or `next_seq`.
    oldest_unresolved: u64,
    pending: [Pending; MAX_OUTSTANDING_PROBES],
    window: LossWindow,
    /// Probes below this seq were sent before the last recovery: their outcomes are counted in
    /// the totals but not in the window.
    window_start_seq: u64,
    /// Replies since the last probe counted lost (or since going Down).
    consecutive_replies: u32,
    rtt: Option<Rtt>,
    min_rtt: MinRtt,
    fwd: Owd,
    rev: Owd,
}

impl Link {
    pub(super) fn new(now: Instant, nic: NicId, config: &HealthConfig) -> Self {
        Self {
            nic,
            stats: LinkStats {
                state: LinkState::Up,
                srtt: Duration::ZERO,
                rttvar: Duration::ZERO,
                min_rtt: Duration::ZERO,
                owd: Duration::ZERO,
                owd_jitter: Duration::ZERO,
                rx_owd: Duration::ZERO,
                rx_owd_jitter: Duration::ZERO,
                loss: 0.0,
                last_rx: None,
                probes_sent: 0,
                replies: 0,
                probes_lost: 0,
                down_events: 0,
            },
            added_at: now,
            next_probe_at: now,
            next_seq: 0,
            oldest_unresolved: 0,
            pending: [Pending::default(); MAX_OUTSTANDING_PROBES],
            window: LossWindow::new(config.loss_window),
            window_start_seq: 0,
            consecutive_replies: 0,
            rtt: None,
            min_rtt: MinRtt::NONE,
            fwd: Owd::default(),
            rev: Owd::default(),
        }
    }

    pub(super) const fn nic(&self) -> NicId {
        self.nic
    }

    pub(super) const fn stats(&self) -> &LinkStats {
        &self.stats
    }

    pub(super) const fn next_probe_at(&self) -> Instant {
        self.next_probe_at
    }

    pub(super) fn rx_owd_ns(&self) -> Option<i64> {
        self.rev.smoothed()
    }

    fn slot(seq: u64) -> usize {
        // The remainder is below MAX_OUTSTANDING_PROBES, so it fits.
        (seq % MAX_OUTSTANDING_PROBES as u64) as usize
    }

    pub(super) fn send_probe(&mut self, now: Instant, config: &HealthConfig) -> ProbeToSend {
        let seq = self.next_seq;
        let slot = Self::slot(seq);
        if self.pending[slot].waiting {
            // Unanswered for a whole ring of probes: lost.
            self.pending[slot].waiting = false;
            self.record_loss(self.pending[slot].seq);
        }
        self.pending[slot] = Pending {
            seq,
            sent_at: now,
            waiting: true,
        };
        self.next_seq += 1;
        self.advance_oldest();
        self.stats.probes_sent += 1;
        let mut next = self.next_probe_at + config.probe_interval;
        if next <= now {
            // The caller fell behind: restart the cadence rather than send a burst.
            next = now + config.probe_interval;
        }
        self.next_probe_at = next;
        ProbeToSend {
            nic: self.nic,
            seq,
            timestamp: now,
        }
    }

    /// Move `oldest_unresolved` past resolved probes (amortised O(1)).
    fn advance_oldest(&mut self) {
        let ring_start = self.next_seq.saturating_sub(MAX_OUTSTANDING_PROBES as u64);
        self.oldest_unresolved = self.oldest_unresolved.max(ring_start);
        while self.oldest_unresolved < self.next_seq {
            let p = &self.pending[Self::slot(self.oldest_unresolved)];
            if p.waiting && p.seq == self.oldest_unresolved {
                break;
            }
            self.oldest_unresolved += 1;
        }
    }

    /// A reply; `true` if it matched a waiting probe.
    pub(super) fn on_reply(
        &mut self,
        now: Instant,
        seq: u64,
        echo_ts: Instant,
        peer_rx_ts: Instant,
    ) -> bool {
        let p = &mut self.pending[Self::slot(seq)];
        if seq >= self.next_seq || p.seq != seq || !p.waiting || p.sent_at != echo_ts {
            return false;
        }
        p.waiting = false;
        self.advance_oldest();
        if seq >= self.window_start_seq {
            self.window.push(false);
        }
        self.stats.replies += 1;
        self.consecutive_replies = self.consecutive_replies.saturating_add(1);

        let r = duration_nanos(now - echo_ts);
        let rtt = Rtt::update(self.rtt, r);
        self.rtt = Some(rtt);
        self.min_rtt.sample(now, r);
        self.fwd.sample(signed_ns(peer_rx_ts, echo_ts));

        self.stats.srtt = Duration::from_nanos(rtt.srtt_ns);
        self.stats.rttvar = Duration::from_nanos(rtt.rttvar_ns);
        self.stats.min_rtt = Duration::from_nanos(self.min_rtt.get_ns());
        self.stats.owd = clamp_duration(self.fwd.smoothed_ns);
        self.stats.owd_jitter = clamp_duration(self.fwd.jitter_ns);
        self.stats.loss = self.window.loss();
        true
    }

    pub(super) fn heard(&mut self, now: Instant) {
        self.stats.last_rx = Some(self.stats.last_rx.map_or(now, |t| t.max(now)));
    }

    pub(super) fn on_rx_owd(&mut self, now: Instant, peer_send_ts: Instant) {
        self.rev.sample(signed_ns(now, peer_send_ts));
        self.stats.rx_owd = clamp_duration(self.rev.smoothed_ns);
        self.stats.rx_owd_jitter = clamp_duration(self.rev.jitter_ns);
    }

    fn record_loss(&mut self, seq: u64) {
        if seq >= self.window_start_seq {
            self.window.push(true);
        }
        self.stats.probes_lost += 1;
        self.stats.loss = self.window.loss();
        self.consecutive_replies = 0;
    }

    /// How long a probe may wait for its reply: SRTT + 4·RTTVAR (RFC 6298's RTO without its
    /// 1 s floor) plus one probe interval of slack.
    fn probe_timeout(&self, config: &HealthConfig) -> Duration {
        self.rtt.map_or(INITIAL_PROBE_TIMEOUT, |r| {
            Duration::from_nanos(r.srtt_ns.saturating_add(r.rttvar_ns.saturating_mul(4)))
                + config.probe_interval
        })
    }

    /// Silence after which the link is Down: `miss_threshold × interval + min(4·rttvar,
    /// interval)`.
    fn detection_time(&self, config: &HealthConfig) -> Duration {
        let margin = self.rtt.map_or(Duration::ZERO, |r| {
            Duration::from_nanos(r.rttvar_ns.saturating_mul(4)).min(config.probe_interval)
        });
        config.probe_interval.saturating_mul(config.miss_threshold) + margin
    }

    fn liveness_deadline(&self, config: &HealthConfig) -> Instant {
        self.stats
            .last_rx
            .unwrap_or(self.added_at)
            .max(self.added_at)
            + self.detection_time(config)
    }

    /// Count as lost every waiting probe older than the probe timeout.
    pub(super) fn expire_probes(&mut self, now: Instant, config: &HealthConfig) {
        let timeout = self.probe_timeout(config);
        while self.oldest_unresolved < self.next_seq {
            let slot = Self::slot(self.oldest_unresolved);
            let p = self.pending[slot];
            if p.waiting && p.seq == self.oldest_unresolved {
                if now < p.sent_at + timeout {
                    break;
                }
                self.pending[slot].waiting = false;
                self.record_loss(p.seq);
            }
            self.oldest_unresolved += 1;
        }
    }

    pub(super) fn next_deadline(&self, config: &HealthConfig) -> Instant {
        let mut t = self.next_probe_at;
        if self.stats.state != LinkState::Down {
            t = t.min(self.liveness_deadline(config));
        }
        if self.oldest_unresolved < self.next_seq {
            let p = &self.pending[Self::slot(self.oldest_unresolved)];
            if p.waiting {
                t = t.min(p.sent_at + self.probe_timeout(config));
            }
        }
        t
    }

    fn loss_above(&self, threshold: f64, config: &HealthConfig) -> bool {
        let needed = MIN_LOSS_SAMPLES.min(config.loss_window);
        self.window.filled >= needed && self.window.loss() > threshold
    }

    fn rtt_above(&self, factor: f64) -> bool {
        let Some(rtt) = self.rtt else {
            return false;
        };
        let baseline = self
            .min_rtt
            .get_ns()
            .max(duration_nanos(RTT_BASELINE_FLOOR));
        rtt.srtt_ns as f64 > factor * baseline as f64
    }

    /// Decide the state at `now`; `Some((from, to))` if it changed.
    pub(super) fn evaluate(
        &mut self,
        now: Instant,
        config: &HealthConfig,
    ) -> Option<(LinkState, LinkState)> {
        let from = self.stats.state;
        let factor = config.degraded_rtt_factor;
        let to = match from {
            LinkState::Down if self.consecutive_replies >= config.up_after => {
                if self.rtt_above(factor) {
                    LinkState::Degraded
                } else {
                    LinkState::Up
                }
            }
            LinkState::Down => LinkState::Down,
            _ if now >= self.liveness_deadline(config) => LinkState::Down,
            LinkState::Up => {
                if self.loss_above(config.degraded_loss, config) || self.rtt_above(factor) {
                    LinkState::Degraded
                } else {
                    LinkState::Up
                }
            }
            LinkState::Degraded => {
                if self.loss_above(config.degraded_loss * LOSS_HYSTERESIS, config)
                    || self.rtt_above(factor * RTT_HYSTERESIS)
                {
                    LinkState::Degraded
                } else {
                    LinkState::Up
                }
            }
        };
        if to == from {
            return None;
        }
        if to == LinkState::Down {
            self.stats.down_events += 1;
            self.consecutive_replies = 0;
        }
        if from == LinkState::Down {
            // The outage's losses say nothing about the repaired link.
            self.window.reset();
            self.window_start_seq = self.next_seq;
            self.stats.loss = 0.0;
        }
        self.stats.state = to;
        Some((from, to))
    }
}
