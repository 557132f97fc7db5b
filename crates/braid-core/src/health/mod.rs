//! Link health: per-NIC probes, RTT, one-way delay, loss and liveness, and the state machine
//! Up / Degraded / Down that the flow controller and the scheduler act on.
//!
//! This module owns *when* to probe and *what the answers mean*. It does not build or parse
//! packets (braid-wire's `Probe` and `ProbeReply` headers carry the fields; the engine copies
//! them in and out), does not reply to the peer's probes (the engine does, at once, with the
//! probe's timestamp echoed and its own receive time), and does not move flows (the flow
//! controller reacts to the [`LinkEvent`]s). Its submodule [`capacity`] turns the delivery
//! counters that probe replies carry into a capacity estimate for the NICs configured `auto`.
//!
//! # Call protocol
//!
//! Like every braid-core component: `now` is passed in and never goes backwards.
//! - [`HealthMonitor::add_link`] / [`HealthMonitor::remove_link`] as NICs come and go;
//! - [`HealthMonitor::on_rx`] for *every* authenticated packet received on a NIC (data, probe,
//!   probe reply, control), with the sender's timestamp from the braid header;
//! - [`HealthMonitor::on_probe_reply`] in addition for a probe reply;
//! - [`HealthMonitor::handle_timeout`] when [`HealthMonitor::poll_timeout`] is due;
//! - then [`HealthMonitor::poll_probe`] until `None` (send each probe on its NIC) and
//!   [`HealthMonitor::poll_event`] until `None`.
//!
//! # Why liveness uses any received packet, plus probes
//!
//! A link is alive if the peer's packets get through it. Data packets prove that as well as
//! probes do, and under load there are thousands of them per probe interval, so a busy link is
//! judged on fresh evidence. But a link without traffic — an idle flow, the standby NIC of a
//! redundant pair, a link the controller just drained — would otherwise have no evidence at
//! all, and it is exactly the link the controller needs to know about before it moves flows
//! onto it. So both engines probe every NIC every `probe_interval` whether or not there is
//! traffic, and reply to each other's probes: on an idle link each side still hears two
//! packets per interval (the peer's probe and the reply to its own), and a failure is detected
//! in the same time on an idle link as on a busy one. Probes also carry what data cannot: the
//! echo of our own timestamp (an RTT sample that needs no synchronised clocks, [RFC 6298]
//! smoothing) and a sequence number (round-trip loss, counted over a sliding window of
//! `loss_window` probes).
//!
//! # The detection bound
//!
//! A link is declared Down when nothing has been heard on it for
//! `miss_threshold × probe_interval + margin`, where `margin = min(4 × rttvar, probe_interval)`
//! absorbs jitter (as RFC 6298's RTO does with `4 × RTTVAR`) but is capped so the bound holds.
//! If the link fails at time `F` (everything sent from then on is lost, both ways), the last
//! packet heard was sent before `F` and arrives at most one one-way delay later, so
//!
//! ```text
//! Down at ≤ F + owd + miss_threshold × probe_interval + min(4 × rttvar, probe_interval)
//!        = F + owd + 3 × 5 ms + ≤ 5 ms        (defaults)
//!        ≤ F + 30 ms                           for owd ≤ 10 ms
//! ```
//!
//! provided `handle_timeout` runs when `poll_timeout` says (the engine's timer). `owd` here is
//! the delay of the last packet that got through, jitter included: 5 ms ± 2 ms gives at most
//! 7 + 15 + 5 = 27 ms. The tests drive a two-sided harness at 1, 5 and 10 ms one-way delay
//! (worst measured: 23.8 ms, at 10 ms) and at 5 ms with ±2 ms jitter and 1 % loss. False Downs need
//! `miss_threshold` intervals with *both* packet streams lost: with 1 % loss and ±2 ms jitter
//! that is below 1e-10 per interval (tested over a long seeded run).
//!
//! # Degraded
//!
//! Up → Degraded when the windowed probe loss exceeds `degraded_loss` (once at least
//! [`MIN_LOSS_SAMPLES`] probes are resolved) or the smoothed RTT exceeds
//! `degraded_rtt_factor × max(min_rtt, RTT_BASELINE_FLOOR)`; back to Up when loss is at most
//! half the threshold and the RTT is below 0.8 × the RTT threshold (hysteresis, so a link near
//! a threshold does not flap). `min_rtt` is a windowed minimum (two 5 s buckets) so a path
//! that moves to a longer route re-baselines within 10 s.
//!
//! Down → Up after `up_after` consecutive probe replies (a probe declared lost resets the
//! count). The loss window restarts on recovery with the probes sent after it: probes lost in
//! the outage (even those resolved later) are counted in `probes_lost` but say nothing about
//! the repaired link. A link starts Up when added
//! (configured links are presumed working, so traffic can flow at once); if nothing is heard
//! within the detection bound it goes Down.
//!
//! # One-way delay and the clock offset
//!
//! Two one-way delays are estimated per link, each smoothed with gain 1/8 and with an
//! [RFC 3550] §6.4.1 interarrival jitter (gain 1/16):
//! - `owd`, me → peer, from the probe reply (`peer_rx_ts − echo_ts`): the delay the scheduler
//!   charges for sending on this NIC;
//! - `rx_owd`, peer → me, from every received packet (`now − peer_send_ts`): what the reorder
//!   buffer waits for, via [`HealthMonitor::delay_spread`].
//!
//! Both include the offset between the two hosts' clocks. It is the same for every link, so
//! differences between links (the delay spread, the scheduler's choice between NICs) are valid;
//! in the simulator the clocks are shared and the values are absolute. The estimates are kept
//! signed internally so a negative offset does not corrupt the spread; [`LinkStats`] shows them
//! clamped at zero.
//!
//! [RFC 6298]: https://www.rfc-editor.org/rfc/rfc6298
//! [RFC 3550]: https://www.rfc-editor.org/rfc/rfc3550

pub mod capacity;
mod link;

use alloc::boxed::Box;
use core::time::Duration;

use crate::time::Instant;
use crate::types::{MAX_NICS, NicId, NicSet};
use link::Link;

/// The largest supported `loss_window`, in probes.
pub const MAX_LOSS_WINDOW: u32 = 1024;
/// Probes outstanding per link at once; an older unanswered probe is counted lost when its slot
/// is reused (with the default interval: after 320 ms).
pub const MAX_OUTSTANDING_PROBES: usize = 64;
/// Loss is judged for Degraded only once this many probes (or the whole window, if smaller)
/// are resolved.
pub const MIN_LOSS_SAMPLES: u32 = 16;
/// The RTT baseline for Degraded is at least this: a 4× rise of a 100 µs RTT is datapath
/// noise, not a degraded link.
pub const RTT_BASELINE_FLOOR: Duration = Duration::from_millis(1);
/// Capacity of the event queue; the oldest event is dropped (and counted) when full.
pub const EVENT_QUEUE_CAP: usize = 64;

/// Tuning of link health. Defaults detect a failed link within 30 ms for one-way delays up to
/// 10 ms (see the module doc), at a probe cost of 200 packets/s per NIC each way.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HealthConfig {
    /// Time between probes on each NIC. Default 5 ms; values below 100 µs are raised to it.
    pub probe_interval: Duration,
    /// Consecutive probe intervals with nothing heard before a link is Down. Default 3; at
    /// least 1.
    pub miss_threshold: u32,
    /// Windowed probe loss above this makes a link Degraded. Default 0.05.
    pub degraded_loss: f64,
    /// A smoothed RTT above this factor × the minimum RTT makes a link Degraded. Default 4.0.
    pub degraded_rtt_factor: f64,
    /// Probes in the loss window. Default 64; clamped to `1..=MAX_LOSS_WINDOW`.
    pub loss_window: u32,
    /// Consecutive replies needed to bring a Down link Up. Default 3; at least 1.
    pub up_after: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            probe_interval: Duration::from_millis(5),
            miss_threshold: 3,
            degraded_loss: 0.05,
            degraded_rtt_factor: 4.0,
            loss_window: 64,
            up_after: 3,
        }
    }
}

impl HealthConfig {
    fn sanitised(mut self) -> Self {
        self.probe_interval = self.probe_interval.max(Duration::from_micros(100));
        self.miss_threshold = self.miss_threshold.max(1);
        self.loss_window = self.loss_window.clamp(1, MAX_LOSS_WINDOW);
        self.up_after = self.up_after.max(1);
        self
    }
}

/// A link's state as the flow controller sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkState {
    /// Alive, loss and RTT normal.
    Up,
    /// Alive, but lossy or with an RTT far above its floor.
    Degraded,
    /// Nothing heard for the detection time (or not yet recovered).
    Down,
}

/// A state change of one link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkEvent {
    /// The link.
    pub nic: NicId,
    /// The state before.
    pub from: LinkState,
    /// The state after.
    pub to: LinkState,
    /// When the change was decided.
    pub at: Instant,
}

/// A probe the engine must send now on `nic` (braid `Probe` header: `seq`, `timestamp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeToSend {
    /// The NIC to send it on.
    pub nic: NicId,
    /// The probe sequence number (per link, from 0).
    pub seq: u64,
    /// The send timestamp to put in the header (the `now` of the poll).
    pub timestamp: Instant,
}

/// What link health knows about one link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkStats {
    /// Current state.
    pub state: LinkState,
    /// Smoothed RTT ([RFC 6298] SRTT); zero before the first sample.
    ///
    /// [RFC 6298]: https://www.rfc-editor.org/rfc/rfc6298
    pub srtt: Duration,
    /// RTT variation ([RFC 6298] RTTVAR); zero before the first sample.
    ///
    /// [RFC 6298]: https://www.rfc-editor.org/rfc/rfc6298
    pub rttvar: Duration,
    /// Windowed minimum RTT (5–10 s); zero before the first sample.
    pub min_rtt: Duration,
    /// One-way delay toward the peer (smoothed `peer_rx_ts − echo_ts` of probe replies; includes
    /// the clock offset; zero until the first reply).
    pub owd: Duration,
    /// Jitter of `owd` (RFC 3550 interarrival jitter).
    pub owd_jitter: Duration,
    /// One-way delay from the peer (smoothed `now − peer_send_ts` of every packet heard).
    pub rx_owd: Duration,
    /// Jitter of `rx_owd` (RFC 3550 interarrival jitter).
    pub rx_owd_jitter: Duration,
    /// Round-trip probe loss over the last `loss_window` resolved probes, `0..=1`.
    pub loss: f64,
    /// When a packet was last heard on the link.
    pub last_rx: Option<Instant>,
    /// Probes handed out by `poll_probe`.
    pub probes_sent: u64,
    /// Probe replies that matched an outstanding probe in time.
    pub replies: u64,
    /// Probes counted lost (no matching reply within the probe timeout).
    pub probes_lost: u64,
    /// Transitions to Down.
    pub down_events: u64,
}

/// Monitor-wide counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HealthCounters {
    /// Probe replies matching no outstanding probe (wrong seq or timestamp, already answered,
    /// or already counted lost). The engine may count them as
    /// [`crate::DropReason::StaleProbeReply`].
    pub stale_replies: u64,
    /// Calls naming a NIC that is not monitored (or an invalid id).
    pub unknown_link: u64,
    /// Events dropped because the queue was full (oldest first).
    pub events_dropped: u64,
}

/// Link health for every NIC of one engine. See the module doc for the call protocol.
///
/// Bounded: at most [`MAX_NICS`] links, each with fixed-size probe and loss rings; the event
/// queue holds [`EVENT_QUEUE_CAP`]. `add_link` allocates the link's state once; nothing else
/// allocates.
#[derive(Debug)]
pub struct HealthMonitor {
    config: HealthConfig,
    links: [Option<Box<Link>>; MAX_NICS],
    /// Where `poll_probe` starts looking, so NICs take turns when several are due.
    probe_cursor: usize,
    events: [LinkEvent; EVENT_QUEUE_CAP],
    event_head: usize,
    event_len: usize,
    counters: HealthCounters,
}

impl HealthMonitor {
    /// A monitor with no links. Out-of-range config values are clamped (see [`HealthConfig`]).
    #[must_use]
    pub fn new(config: HealthConfig) -> Self {
        const PLACEHOLDER: LinkEvent = LinkEvent {
            nic: NicId(0),
            from: LinkState::Up,
            to: LinkState::Up,
            at: Instant::ZERO,
        };
        Self {
            config: config.sanitised(),
            links: [const { None }; MAX_NICS],
            probe_cursor: 0,
            events: [PLACEHOLDER; EVENT_QUEUE_CAP],
            event_head: 0,
            event_len: 0,
            counters: HealthCounters::default(),
        }
    }

    /// The configuration in use (after clamping).
    #[must_use]
    pub const fn config(&self) -> &HealthConfig {
        &self.config
    }

    /// Start monitoring `nic`: Up, first probe due at once, Down if nothing is heard within
    /// the detection time. A NIC already monitored keeps its state; an invalid id is ignored
    /// and counted in [`HealthCounters::unknown_link`].
    pub fn add_link(&mut self, now: Instant, nic: NicId) {
        let Some(slot) = self.links.get_mut(nic.index()) else {
            self.counters.unknown_link += 1;
            return;
        };
        if slot.is_none() {
            *slot = Some(Box::new(Link::new(now, nic, &self.config)));
        }
    }

    /// Stop monitoring `nic` (no event).
    pub fn remove_link(&mut self, nic: NicId) {
        if let Some(slot) = self.links.get_mut(nic.index()) {
            *slot = None;
        }
    }

    /// The NICs monitored.
    #[must_use]
    pub fn links(&self) -> NicSet {
        self.links.iter().flatten().map(|l| l.nic()).collect()
    }

    /// One probe that is due at `now`, or `None`. Call until `None`. Records the probe as
    /// outstanding and schedules the next one on that NIC a `probe_interval` later.
    pub fn poll_probe(&mut self, now: Instant) -> Option<ProbeToSend> {
        for k in 0..MAX_NICS {
            let i = (self.probe_cursor + k) % MAX_NICS;
            let Some(link) = self.links[i].as_deref_mut() else {
                continue;
            };
            if link.next_probe_at() <= now {
                self.probe_cursor = (i + 1) % MAX_NICS;
                let probe = link.send_probe(now, &self.config);
                // Reusing a slot may resolve an old probe as lost.
                self.evaluate(i, now);
                return Some(probe);
            }
        }
        None
    }

    /// A probe reply arrived on `nic`: `seq` and `echo_ts` echo our probe, `peer_rx_ts` is when
    /// the peer received it. A reply that matches the outstanding probe (same seq and send
    /// timestamp, not yet resolved) gives an RTT sample `now − echo_ts` ([RFC 6298] smoothing), a
    /// one-way delay sample `peer_rx_ts − echo_ts`, a "received" in the loss window, and counts
    /// toward recovery. Anything else is counted in [`HealthCounters::stale_replies`]. Either way
    /// the link is alive: it also counts as a packet heard (calling `on_rx` as well is fine).
    /// Returns the RTT sample taken, `None` for a reply that gave none (the engine records
    /// the samples in its RTT histogram).
    ///
    /// [RFC 6298]: https://www.rfc-editor.org/rfc/rfc6298
    pub fn on_probe_reply(
        &mut self,
        now: Instant,
        nic: NicId,
        seq: u64,
        echo_ts: Instant,
        peer_rx_ts: Instant,
    ) -> Option<Duration> {
        let link = self.link_mut(nic)?;
        link.heard(now);
        if link.on_reply(now, seq, echo_ts, peer_rx_ts) {
            self.evaluate(nic.index(), now);
            Some(now.saturating_duration_since(echo_ts))
        } else {
            self.counters.stale_replies += 1;
            None
        }
    }

    /// Any authenticated packet heard on `nic` (data, probe, reply, control), with the sender's
    /// timestamp from its header: the link is alive, and `now − peer_send_ts` is a one-way delay
    /// sample peer → me.
    pub fn on_rx(&mut self, now: Instant, nic: NicId, peer_send_ts: Instant) {
        if let Some(link) = self.link_mut(nic) {
            link.heard(now);
            link.on_rx_owd(now, peer_send_ts);
        }
    }

    /// Resolve everything due at `now`: probes unanswered past their timeout are counted lost,
    /// links silent past the detection time go Down, loss and RTT move links between Up and
    /// Degraded.
    pub fn handle_timeout(&mut self, now: Instant) {
        for i in 0..MAX_NICS {
            if let Some(link) = self.links[i].as_deref_mut() {
                link.expire_probes(now, &self.config);
                self.evaluate(i, now);
            }
        }
    }

    /// The next time `handle_timeout` or `poll_probe` has work: a probe due, a probe timeout,
    /// or a liveness deadline. `None` with no links.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.links
            .iter()
            .flatten()
            .map(|l| l.next_deadline(&self.config))
            .min()
    }

    /// The next state change, oldest first. Call until `None`.
    pub fn poll_event(&mut self) -> Option<LinkEvent> {
        if self.event_len == 0 {
            return None;
        }
        let ev = self.events[self.event_head];
        self.event_head = (self.event_head + 1) % EVENT_QUEUE_CAP;
        self.event_len -= 1;
        Some(ev)
    }

    /// What is known about `nic`.
    #[must_use]
    pub fn link(&self, nic: NicId) -> Option<&LinkStats> {
        self.links.get(nic.index())?.as_deref().map(Link::stats)
    }

    /// Monitor-wide counters.
    #[must_use]
    pub const fn counters(&self) -> &HealthCounters {
        &self.counters
    }

    /// The spread of one-way delay peer → me among the links of `nics` that have a sample:
    /// `(max − min of rx_owd, max rx_owd_jitter)`. This is what a reorder buffer must wait
    /// for a packet on the slowest link after one on the fastest. Zero with fewer than two
    /// such links (jitter still reported).
    ///
    /// Links that are Down count with their last estimate: when one comes back, its first
    /// packets overtake those still in flight on the others, and a hold computed without it
    /// would give those up as lost. The cost is a longer wait on real gaps while it is down.
    #[must_use]
    pub fn delay_spread(&self, nics: NicSet) -> (Duration, Duration) {
        let mut lo = i64::MAX;
        let mut hi = i64::MIN;
        let mut jitter = Duration::ZERO;
        for nic in nics.iter() {
            let Some(link) = self.links.get(nic.index()).and_then(|l| l.as_deref()) else {
                continue;
            };
            if let Some(owd) = link.rx_owd_ns() {
                lo = lo.min(owd);
                hi = hi.max(owd);
                jitter = jitter.max(link.stats().rx_owd_jitter);
            }
        }
        let spread = if hi > lo { hi.abs_diff(lo) } else { 0 };
        (Duration::from_nanos(spread), jitter)
    }

    fn link_mut(&mut self, nic: NicId) -> Option<&mut Link> {
        let link = self
            .links
            .get_mut(nic.index())
            .and_then(|l| l.as_deref_mut());
        if link.is_none() {
            self.counters.unknown_link += 1;
        }
        link
    }

    /// Re-evaluate link `i`'s state and queue the event if it changed.
    fn evaluate(&mut self, i: usize, now: Instant) {
        let Some(link) = self.links[i].as_deref_mut() else {
            return;
        };
        if let Some((from, to)) = link.evaluate(now, &self.config) {
            let ev = LinkEvent {
                nic: link.nic(),
                from,
                to,
                at: now,
            };
            self.push_event(ev);
        }
    }

    fn push_event(&mut self, ev: LinkEvent) {
        if self.event_len == EVENT_QUEUE_CAP {
            // Drop the oldest: the newest transition is the one that describes the link now.
            self.event_head = (self.event_head + 1) % EVENT_QUEUE_CAP;
            self.event_len -= 1;
            self.counters.events_dropped += 1;
        }
        self.events[(self.event_head + self.event_len) % EVENT_QUEUE_CAP] = ev;
        self.event_len += 1;
    }
}

#[cfg(test)]
mod tests;
