//! Simulated links: their configuration ([`LinkConfig`], [`LinkEvent`]), their counters
//! ([`LinkStats`]) and the per-direction state machine that serialises, queues, delays,
//! jitters, loses, duplicates and reorders packets.
//!
//! This module owns what happens to a packet between "the host handed it to link L" and
//! "it is due at the far host". It does not own the clock, the event loop or the hosts
//! (`sim.rs`), nor any notion of what the bytes mean.
//!
//! # The model of one direction
//!
//! ```text
//! offer ──► [down? mtu?] ──► FIFO queue (≤ queue_bytes, tail drop) ──► transmitter
//!   transmitter: one packet at a time, (len + overhead_bytes) × 8 / rate_bps seconds
//!   ──► [loss] ──► propagation: delay ± jitter, never before the previous packet
//!                  (+ reorder_delay with probability `reorder`, which may be overtaken)
//!              ──► [duplicate: a second copy arrives right after the first] ──► far host
//! ```
//!
//! Why the transmitter is modelled with one event per packet rather than by computing every
//! departure time at enqueue: a rate change or a `Down` must affect packets that are already
//! queued, and the host must hear when the queue drains (`Host::handle_link_ready`). At
//! ~10⁵ packets per simulated second per link the extra event costs nothing measurable.
//!
//! Serialisation time keeps the sub-nanosecond remainder from packet to packet, so a
//! saturated link carries exactly `rate_bps` over a long run rather than losing up to 1 ns
//! per packet to rounding.

use core::time::Duration;
use std::collections::VecDeque;

use braid_core::Instant;
use braid_core::time::duration_nanos;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::event::{EventKind, EventQueue};
use crate::pool::PacketPool;
use crate::sim::{Side, SimError};

/// Default per-packet overhead: the IPv4 (20) and UDP (8) headers that carry braid's packet.
pub const DEFAULT_OVERHEAD_BYTES: u32 = 28;
/// Default MTU, in bytes of the host's packet.
pub const DEFAULT_MTU_BYTES: u32 = 1500;
/// Default transmit queue: 1,500,000 bytes, like Linux's `txqueuelen` 1000 of full packets.
pub const DEFAULT_QUEUE_BYTES: u64 = 1_500_000;

/// One of the two directions of a full-duplex link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Host A transmits, host B receives.
    AToB,
    /// Host B transmits, host A receives.
    BToA,
}

impl Direction {
    /// Both directions, A→B first.
    pub const BOTH: [Self; 2] = [Self::AToB, Self::BToA];

    /// 0 for A→B, 1 for B→A.
    #[must_use]
    pub const fn index(self) -> usize {
        match self {
            Self::AToB => 0,
            Self::BToA => 1,
        }
    }

    /// The host that transmits in this direction.
    #[must_use]
    pub const fn sender(self) -> Side {
        match self {
            Self::AToB => Side::A,
            Self::BToA => Side::B,
        }
    }

    /// The host that receives in this direction.
    #[must_use]
    pub const fn receiver(self) -> Side {
        match self {
            Self::AToB => Side::B,
            Self::BToA => Side::A,
        }
    }

    /// The direction in which `side` transmits.
    #[must_use]
    pub const fn from_sender(side: Side) -> Self {
        match side {
            Side::A => Self::AToB,
            Side::B => Self::BToA,
        }
    }
}

/// The configuration of one full-duplex link; both directions start with the same values.
///
/// Deserialisable (for scenario files) with unknown fields rejected. Durations are written in
/// whole microseconds under a `_us` key (`delay_us = 250`); in Rust they are [`Duration`]s
/// (serialising truncates to whole microseconds). Every field except `rate_bps` has a
/// default.
///
/// ```toml
/// rate_bps = 100_000_000
/// delay_us = 2_000
/// jitter_us = 100
/// loss = 0.001
/// [[events]]
/// at_us = 500_000
/// action = "down"
/// [[events]]
/// at_us = 800_000
/// action = { set_rate_bps = 50_000_000 }
/// direction = "a_to_b"
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkConfig {
    /// Transmit rate in bits per second, counting `overhead_bytes` too. Must be > 0.
    pub rate_bps: u64,
    /// One-way propagation delay; TOML key `delay_us`. Default 0.
    #[serde(rename = "delay_us", with = "micros", default)]
    pub delay: Duration,
    /// Jitter: each packet's propagation delay is drawn uniformly from
    /// `[delay − jitter, delay + jitter]` (clamped at 0), then raised if needed so that it
    /// arrives no earlier than the packet sent before it on this direction (jitter alone
    /// never reorders). TOML key `jitter_us`. Default 0.
    #[serde(rename = "jitter_us", with = "micros", default)]
    pub jitter: Duration,
    /// Probability in [0, 1] that a transmitted packet is lost on the wire. Default 0.
    #[serde(default)]
    pub loss: f64,
    /// Probability in [0, 1] that a delivered packet is delivered twice (the copy arrives
    /// right after the original and does not use transmit time). Default 0.
    #[serde(default)]
    pub duplicate: f64,
    /// Probability in [0, 1] that a packet is held back by an extra `reorder_delay`, letting
    /// later packets overtake it. Default 0.
    #[serde(default)]
    pub reorder: f64,
    /// Extra delay of a reordered packet; TOML key `reorder_delay_us`. Default 0.
    #[serde(rename = "reorder_delay_us", with = "micros", default)]
    pub reorder_delay: Duration,
    /// Largest host packet in bytes the link carries; larger ones are dropped and counted in
    /// [`LinkStats::mtu_drops`]. Default 1500.
    #[serde(default = "default_mtu")]
    pub mtu: u32,
    /// Transmit queue capacity in bytes of host packets waiting behind the one being
    /// transmitted; a packet that does not fit is tail-dropped ([`LinkStats::queue_drops`]).
    /// 0 = no queue (only an idle transmitter takes a packet). Default 1,500,000.
    #[serde(default = "default_queue_bytes")]
    pub queue_bytes: u64,
    /// Bytes added to every packet for its serialisation time (not delivered): 28 for
    /// UDP/IPv4, 48 for UDP/IPv6, 42 to include Ethernet's header and FCS. Default 28.
    #[serde(default = "default_overhead")]
    pub overhead_bytes: u32,
    /// Scheduled changes, applied at their time after the simulation start, in list order for
    /// equal times. Default none.
    #[serde(default)]
    pub events: Vec<LinkEvent>,
}

fn default_mtu() -> u32 {
    DEFAULT_MTU_BYTES
}
fn default_queue_bytes() -> u64 {
    DEFAULT_QUEUE_BYTES
}
fn default_overhead() -> u32 {
    DEFAULT_OVERHEAD_BYTES
}

impl LinkConfig {
    /// A clean link: `rate_bps`, `delay`, no jitter, loss, duplication or reordering, MTU
    /// 1500, a 1.5 MB queue, 28 bytes of overhead, no events.
    #[must_use]
    pub const fn new(rate_bps: u64, delay: Duration) -> Self {
        Self {
            rate_bps,
            delay,
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
            mtu: DEFAULT_MTU_BYTES,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            overhead_bytes: DEFAULT_OVERHEAD_BYTES,
            events: Vec::new(),
        }
    }

    /// Checks ranges: `rate_bps > 0`, probabilities in [0, 1], `mtu > 0`, and the same for
    /// every event's values.
    ///
    /// # Errors
    /// [`SimError::InvalidLink`] naming the link index `link` and the field.
    pub fn validate(&self, link: usize) -> Result<(), SimError> {
        let bad = |field: &'static str, problem: &'static str| SimError::InvalidLink {
            link,
            field,
            problem,
        };
        if self.rate_bps == 0 {
            return Err(bad("rate_bps", "must be greater than 0"));
        }
        check_probability(self.loss).map_err(|p| bad("loss", p))?;
        check_probability(self.duplicate).map_err(|p| bad("duplicate", p))?;
        check_probability(self.reorder).map_err(|p| bad("reorder", p))?;
        if self.mtu == 0 {
            return Err(bad("mtu", "must be greater than 0"));
        }
        for event in &self.events {
            match event.action {
                LinkAction::SetRate(0) => {
                    return Err(bad("events.action.set_rate_bps", "must be greater than 0"));
                }
                LinkAction::SetLoss(p) => {
                    check_probability(p).map_err(|e| bad("events.action.set_loss", e))?;
                }
                LinkAction::SetDuplicate(p) => {
                    check_probability(p).map_err(|e| bad("events.action.set_duplicate", e))?;
                }
                LinkAction::SetReorder(p) => {
                    check_probability(p).map_err(|e| bad("events.action.set_reorder", e))?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn check_probability(p: f64) -> Result<(), &'static str> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err("must be a probability in [0, 1]")
    }
}

/// A scheduled change to a link.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkEvent {
    /// When, after the simulation start; TOML key `at_us`.
    #[serde(rename = "at_us", with = "micros")]
    pub at: Duration,
    /// What changes.
    pub action: LinkAction,
    /// Only this direction (`"a_to_b"` or `"b_to_a"`); absent = both directions.
    #[serde(default)]
    pub direction: Option<Direction>,
}

impl LinkEvent {
    /// `action` at `at` on both directions.
    #[must_use]
    pub const fn new(at: Duration, action: LinkAction) -> Self {
        Self {
            at,
            action,
            direction: None,
        }
    }
}

/// What a [`LinkEvent`] does. In TOML: `action = "down"`, `action = { set_rate_bps = 1000 }`,
/// `action = { set_delay_us = 500 }`, ...
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkAction {
    /// The link fails: every packet queued, being transmitted or propagating is lost, and so
    /// is every packet offered until `Up` (all counted in [`LinkStats::lost_down`]).
    Down,
    /// The link comes back (empty); the sending host gets `handle_link_ready`.
    Up,
    /// New rate in bit/s, from the next packet the transmitter starts.
    #[serde(rename = "set_rate_bps")]
    SetRate(u64),
    /// New one-way delay, for packets leaving the transmitter from now on (FIFO is kept).
    #[serde(rename = "set_delay_us")]
    SetDelay(#[serde(with = "micros")] Duration),
    /// New loss probability.
    SetLoss(f64),
    /// New jitter (see [`LinkConfig::jitter`]).
    #[serde(rename = "set_jitter_us")]
    SetJitter(#[serde(with = "micros")] Duration),
    /// New duplication probability.
    SetDuplicate(f64),
    /// New reorder probability.
    SetReorder(f64),
}

/// Counters of one direction of one link since the simulation started.
///
/// Every offered packet ends in exactly one of: `queue_drops`, `mtu_drops`, `lost_down`,
/// still queued or on the wire, or `packets_sent`. Every sent packet and every duplicate ends
/// in exactly one of: `lost_random`, `lost_down`, still propagating, or `delivered`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LinkStats {
    /// Packets the sending host handed to this direction.
    pub packets_offered: u64,
    /// Packets whose transmission completed (lost or not afterwards).
    pub packets_sent: u64,
    /// Host bytes of `packets_sent` (without overhead).
    pub bytes_sent: u64,
    /// Packets (including duplicates) handed to the receiving host.
    pub delivered: u64,
    /// Host bytes of `delivered`.
    pub bytes_delivered: u64,
    /// Packets lost at random on the wire (`loss`).
    pub lost_random: u64,
    /// Packets lost because the link was or went down: offered while down, or queued,
    /// transmitting or propagating when it went down.
    pub lost_down: u64,
    /// Packets tail-dropped because the queue was full.
    pub queue_drops: u64,
    /// Packets dropped because they exceeded the MTU.
    pub mtu_drops: u64,
    /// Extra copies created (`duplicate`).
    pub duplicated: u64,
    /// Packets held back by `reorder_delay`.
    pub reordered: u64,
    /// Time the transmitter spent transmitting, in nanoseconds (utilisation = busy / elapsed).
    pub busy_ns: u64,
    /// Largest queue occupancy seen, in host bytes (excluding the packet being transmitted).
    pub queue_high_water_bytes: u64,
}

/// Live state of one direction of one link (internal to the simulator).
#[derive(Debug)]
pub(crate) struct LinkDirection {
    link: usize,
    dir: Direction,
    rate_bps: u64,
    delay_ns: u64,
    jitter_ns: u64,
    loss: f64,
    duplicate: f64,
    reorder: f64,
    reorder_delay_ns: u64,
    mtu: u32,
    queue_limit_bytes: u64,
    overhead_bytes: u32,
    up: bool,
    /// Bumped on every `Down`: events and packets of an older epoch are void.
    epoch: u64,
    queue: VecDeque<Vec<u8>>,
    queued_bytes: u64,
    /// The packet being transmitted and when its transmission started.
    on_wire: Option<(Vec<u8>, Instant)>,
    /// Sub-nanosecond remainder of serialisation time, in units of 1/rate_bps ns.
    ser_remainder: u64,
    /// Arrival time of the last packet that was not reordered (FIFO floor).
    last_arrival: Instant,
    /// Packets scheduled to arrive and not yet arrived.
    in_flight: u64,
    rng: ChaCha8Rng,
    pub(crate) stats: LinkStats,
}

/// What [`LinkDirection::tx_done`] tells the simulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TxDone {
    /// The queue is empty now (the sender may be told `handle_link_ready`).
    pub(crate) queue_drained: bool,
}

impl LinkDirection {
    pub(crate) fn new(seed: u64, link: usize, dir: Direction, config: &LinkConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // An independent ChaCha stream per direction: the loss pattern of one link does not
        // depend on the traffic of another.
        rng.set_stream((link as u64) * 2 + dir.index() as u64);
        Self {
            link,
            dir,
            rate_bps: config.rate_bps,
            delay_ns: duration_nanos(config.delay),
            jitter_ns: duration_nanos(config.jitter),
            loss: config.loss,
            duplicate: config.duplicate,
            reorder: config.reorder,
            reorder_delay_ns: duration_nanos(config.reorder_delay),
            mtu: config.mtu,
            queue_limit_bytes: config.queue_bytes,
            overhead_bytes: config.overhead_bytes,
            up: true,
            epoch: 0,
            queue: VecDeque::new(),
            queued_bytes: 0,
            on_wire: None,
            ser_remainder: 0,
            last_arrival: Instant::ZERO,
            in_flight: 0,
            rng,
            stats: LinkStats::default(),
        }
    }

    pub(crate) const fn is_up(&self) -> bool {
        self.up
    }

    pub(crate) const fn queued_bytes(&self) -> u64 {
        self.queued_bytes
    }

    pub(crate) const fn in_flight(&self) -> u64 {
        self.in_flight
    }

    /// Transmit time so far, including the packet on the wire up to `now`.
    pub(crate) fn busy_ns_at(&self, now: Instant) -> u64 {
        let current = self.on_wire.as_ref().map_or(0, |(_, started)| {
            duration_nanos(now.saturating_duration_since(*started))
        });
        self.stats.busy_ns + current
    }

    pub(crate) const fn rate_bps(&self) -> u64 {
        self.rate_bps
    }

    /// The host hands `data` to this direction at `now`.
    pub(crate) fn offer(
        &mut self,
        now: Instant,
        data: &[u8],
        pool: &mut PacketPool,
        events: &mut EventQueue,
    ) {
        self.stats.packets_offered += 1;
        if !self.up {
            self.stats.lost_down += 1;
            return;
        }
        if data.len() > self.mtu as usize {
            self.stats.mtu_drops += 1;
            return;
        }
        if self.on_wire.is_none() {
            let packet = pool.take_copy(data);
            self.start_tx(now, packet, events);
            return;
        }
        let len = data.len() as u64;
        if self.queued_bytes + len > self.queue_limit_bytes {
            self.stats.queue_drops += 1;
            return;
        }
        self.queue.push_back(pool.take_copy(data));
        self.queued_bytes += len;
        self.stats.queue_high_water_bytes =
            self.stats.queue_high_water_bytes.max(self.queued_bytes);
    }

    /// Serialisation time of a `len`-byte packet at the current rate, carrying the remainder.
    fn serialisation_ns(&mut self, len: usize) -> u64 {
        let bits = (len as u128 + u128::from(self.overhead_bytes)) * 8;
        let total = bits * 1_000_000_000 + u128::from(self.ser_remainder);
        let rate = u128::from(self.rate_bps);
        // rate > 0 is validated; the remainder is < rate so it fits u64.
        self.ser_remainder = u64::try_from(total % rate).unwrap_or(0);
        u64::try_from(total / rate).unwrap_or(u64::MAX)
    }

    fn start_tx(&mut self, now: Instant, packet: Vec<u8>, events: &mut EventQueue) {
        let ser = self.serialisation_ns(packet.len());
        self.on_wire = Some((packet, now));
        events.push(
            now.saturating_add(Duration::from_nanos(ser)),
            EventKind::TxDone {
                link: self.link,
                dir: self.dir,
                epoch: self.epoch,
            },
        );
    }

    /// The transmitter finished the packet on the wire (event of `epoch`). Returns `None` if
    /// the event is void (the link went down since).
    pub(crate) fn tx_done(
        &mut self,
        now: Instant,
        epoch: u64,
        pool: &mut PacketPool,
        events: &mut EventQueue,
    ) -> Option<TxDone> {
        if epoch != self.epoch {
            return None;
        }
        let (packet, started) = self
            .on_wire
            .take()
            .expect("invariant: TxDone with a packet on the wire");
        self.stats.busy_ns += duration_nanos(now.saturating_duration_since(started));
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += packet.len() as u64;
        self.propagate(now, packet, pool, events);
        if let Some(next) = self.queue.pop_front() {
            self.queued_bytes -= next.len() as u64;
            self.start_tx(now, next, events);
        }
        Some(TxDone {
            queue_drained: self.queue.is_empty(),
        })
    }

    /// Loss, delay, jitter, reorder and duplication of a packet leaving the transmitter.
    fn propagate(
        &mut self,
        now: Instant,
        packet: Vec<u8>,
        pool: &mut PacketPool,
        events: &mut EventQueue,
    ) {
        if self.loss > 0.0 && self.rng.random_bool(self.loss) {
            self.stats.lost_random += 1;
            pool.put(packet);
            return;
        }
        let mut delay_ns = self.delay_ns;
        if self.jitter_ns > 0 {
            let draw = self.rng.random_range(0..=2 * self.jitter_ns);
            delay_ns = (delay_ns + draw).saturating_sub(self.jitter_ns);
        }
        let mut arrival = now
            .saturating_add(Duration::from_nanos(delay_ns))
            .max(self.last_arrival);
        if self.reorder > 0.0 && self.rng.random_bool(self.reorder) {
            self.stats.reordered += 1;
            arrival = arrival.saturating_add(Duration::from_nanos(self.reorder_delay_ns));
        } else {
            self.last_arrival = arrival;
        }
        if self.duplicate > 0.0 && self.rng.random_bool(self.duplicate) {
            self.stats.duplicated += 1;
            let copy = pool.take_copy(&packet);
            self.schedule_arrival(arrival, packet, events);
            self.schedule_arrival(arrival, copy, events);
        } else {
            self.schedule_arrival(arrival, packet, events);
        }
    }

    fn schedule_arrival(&mut self, at: Instant, packet: Vec<u8>, events: &mut EventQueue) {
        self.in_flight += 1;
        events.push(
            at,
            EventKind::Arrive {
                link: self.link,
                dir: self.dir,
                epoch: self.epoch,
                packet,
            },
        );
    }

    /// A packet of `epoch` reached the far end: true if it is delivered, false if it was
    /// already counted lost by a `Down` (the caller recycles the buffer either way).
    pub(crate) fn arrive(&mut self, epoch: u64, packet: &[u8]) -> bool {
        if epoch != self.epoch {
            return false;
        }
        self.in_flight -= 1;
        self.stats.delivered += 1;
        self.stats.bytes_delivered += packet.len() as u64;
        true
    }

    /// Applies a scheduled action at `now`. Returns true if the sender should be told the link
    /// is ready (it came up).
    pub(crate) fn apply(
        &mut self,
        now: Instant,
        action: LinkAction,
        pool: &mut PacketPool,
    ) -> bool {
        match action {
            LinkAction::Down => {
                if !self.up {
                    return false;
                }
                self.up = false;
                self.epoch += 1;
                let mut lost = self.in_flight + self.queue.len() as u64;
                self.in_flight = 0;
                while let Some(p) = self.queue.pop_front() {
                    pool.put(p);
                }
                self.queued_bytes = 0;
                if let Some((p, started)) = self.on_wire.take() {
                    self.stats.busy_ns += duration_nanos(now.saturating_duration_since(started));
                    pool.put(p);
                    lost += 1;
                }
                self.stats.lost_down += lost;
                self.last_arrival = Instant::ZERO;
                false
            }
            LinkAction::Up => {
                let was_down = !self.up;
                self.up = true;
                was_down
            }
            LinkAction::SetRate(bps) => {
                self.rate_bps = bps;
                self.ser_remainder = 0;
                false
            }
            LinkAction::SetDelay(d) => {
                self.delay_ns = duration_nanos(d);
                false
            }
            LinkAction::SetLoss(p) => {
                self.loss = p;
                false
            }
            LinkAction::SetJitter(d) => {
                self.jitter_ns = duration_nanos(d);
                false
            }
            LinkAction::SetDuplicate(p) => {
                self.duplicate = p;
                false
            }
            LinkAction::SetReorder(p) => {
                self.reorder = p;
                false
            }
        }
    }
}

/// serde for a [`Duration`] written as whole microseconds (`u64`).
mod micros {
    use core::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_micros)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_with_defaults_and_events() {
        let text = r#"
            rate_bps = 100_000_000
            delay_us = 2_000
            jitter_us = 100
            loss = 0.001
            [[events]]
            at_us = 500_000
            action = "down"
            [[events]]
            at_us = 800_000
            action = { set_rate_bps = 50_000_000 }
            direction = "a_to_b"
            [[events]]
            at_us = 900_000
            action = { set_delay_us = 7 }
        "#;
        let c: LinkConfig = toml::from_str(text).expect("valid");
        assert_eq!(c.rate_bps, 100_000_000);
        assert_eq!(c.delay, Duration::from_millis(2));
        assert_eq!(c.jitter, Duration::from_micros(100));
        assert_eq!(c.mtu, 1500);
        assert_eq!(c.overhead_bytes, 28);
        assert_eq!(c.queue_bytes, DEFAULT_QUEUE_BYTES);
        assert_eq!(c.events.len(), 3);
        assert_eq!(c.events[0].action, LinkAction::Down);
        assert_eq!(c.events[0].direction, None);
        assert_eq!(c.events[1].action, LinkAction::SetRate(50_000_000));
        assert_eq!(c.events[1].direction, Some(Direction::AToB));
        assert_eq!(
            c.events[2].action,
            LinkAction::SetDelay(Duration::from_micros(7))
        );
        c.validate(0).expect("valid");
        // Round trip through TOML.
        let back: LinkConfig = toml::from_str(&toml::to_string(&c).expect("ser")).expect("de");
        assert_eq!(back, c);
    }

    #[test]
    fn toml_unknown_field_is_named() {
        let err = toml::from_str::<LinkConfig>("rate_bps = 1\ndelay = 5\n").expect_err("unknown");
        assert!(err.to_string().contains("delay"), "{err}");
        let err = toml::from_str::<LinkConfig>("delay_us = 5\n").expect_err("missing");
        assert!(err.to_string().contains("rate_bps"), "{err}");
    }

    #[test]
    fn validate_rejects_bad_values() {
        let mut c = LinkConfig::new(0, Duration::ZERO);
        assert!(matches!(
            c.validate(3),
            Err(SimError::InvalidLink {
                link: 3,
                field: "rate_bps",
                ..
            })
        ));
        c.rate_bps = 1;
        c.loss = 1.5;
        assert!(matches!(
            c.validate(0),
            Err(SimError::InvalidLink { field: "loss", .. })
        ));
        c.loss = f64::NAN;
        assert!(c.validate(0).is_err());
        c.loss = 0.0;
        c.events
            .push(LinkEvent::new(Duration::ZERO, LinkAction::SetReorder(-0.1)));
        assert!(matches!(
            c.validate(0),
            Err(SimError::InvalidLink {
                field: "events.action.set_reorder",
                ..
            })
        ));
        c.events[0].action = LinkAction::SetRate(0);
        assert!(c.validate(0).is_err());
        c.events[0].action = LinkAction::SetRate(1);
        c.validate(0).expect("valid");
    }

    #[test]
    fn serialisation_time_keeps_remainder() {
        let c = LinkConfig::new(300_000_000, Duration::ZERO);
        let mut d = LinkDirection::new(1, 0, Direction::AToB, &c);
        // (1500 + 28) * 8 bits at 300 Mbit/s = 40,746.67 ns.
        let total: u64 = (0..3).map(|_| d.serialisation_ns(1500)).sum();
        assert_eq!(total, 122_240);
        assert_eq!(d.ser_remainder, 0);
    }
}
