//! QoS: three-colour meters, a strict-priority + DRR scheduler with bounded class queues, and
//! a per-NIC shaper. Per vNIC (its egress into braid) and per NIC (its egress onto the link).
//!
//! Owns: [`Qos`] (the scheduler, generic over the caller's packet handle), [`Shaper`],
//! [`SrTcm`] (RFC 2697), [`TrTcm`] (RFC 2698), [`TokenBucket`], their configuration
//! ([`QosConfig`], [`ShaperConfig`], …), verdicts ([`Color`], [`QosDrop`]) and counters
//! ([`QosStats`], [`ShaperStats`]). Does not own: the packets (the caller queues a handle
//! `T: Copy` and its length; buffers stay in the engine's store), classification (the rule
//! engine picks a [`ClassId`] and a pre-colour), DSCP re-marking, timers, or the mapping of a
//! [`QosDrop`] onto the engine's `DropReason` (the engine counts it).
//!
//! # Call protocol
//!
//! ```text
//! qos.enqueue(now, class, handle, len, pre_colour)  -> Ok(colour) | Err(Rejected{handle, why})
//! match qos.dequeue_shaped(now, &mut shaper) {      // or dequeue(now) / dequeue_if(now, f)
//!     Egress::Packet(d) => send d.handle,
//!     Egress::NotBefore(t) => wake at t (poll_timeout),
//!     Egress::Idle => nothing queued,
//! }
//! ```
//! `now` must not go backwards across calls (a backwards `now` earns no tokens). Nothing
//! allocates after [`Qos::new`]: the class queues are rings reserved to their capacity.
//! A refused packet's handle comes back in [`Rejected`] so the caller frees its buffer, and
//! every refusal is counted per class. Each call does O(classes) work, at most 8.
//!
//! # Scheduling, and the starvation guard
//!
//! At most one class is strict (the latency-critical one): whenever it has a packet, that
//! packet goes first. The others share the rest by deficit round robin (Shreedhar &
//! Varghese, SIGCOMM '95): each class in turn adds `weight × quantum_bytes` to its deficit and
//! sends head packets while they fit in it; a class that empties loses its deficit. Since
//! the quantum is at least the largest packet, each turn sends at least one packet, and over
//! any run each backlogged class gets bytes in proportion to its weight, within one quantum
//! plus one packet.
//!
//! Pure strict priority lets a latency-critical source that misbehaves (or a rule that puts
//! bulk traffic in the strict class) starve every other class. The guard chosen here is a
//! token bucket on the strict class's *dequeue* (`ClassKind::Strict { guard }`): while the
//! bucket holds the head packet's bytes, the strict class goes first; once it is spent, the
//! strict class waits for tokens while any weighted class has a packet, and still sends when
//! none has (work-conserving: an otherwise idle link is never held back). So the strict class
//! gets at most `guard.rate + guard.burst` under contention and the weighted classes at least
//! the rest, and a well-behaved latency-critical flow, whose rate is under the guard's, never
//! notices it. This was preferred over
//! - policing at enqueue (a meter with `drop_red`), which is also available per class, but
//!   drops the excess instead of delaying it: right for a contract, harsh as a safety net;
//! - demoting the strict class into the DRR rotation, which would make its latency depend on
//!   the others' quanta exactly when it is over its rate anyway.
//!
//! The guard is optional: `None` is pure strict priority, the engine's default (its NICs' TX
//! queues are `Qos` schedulers, `EngineConfig::qos`).
//!
//! # Enqueue: queue limits first, then the meter
//!
//! A packet longer than `max_packet_bytes` is refused ([`QosDrop::Oversize`]); then the
//! class queue's packet and byte limits are checked (tail drop, [`QosDrop::QueueFull`])
//! before the meter, so a packet the queue cannot hold takes no tokens; then the meter
//! colours it, and a Red packet of a `drop_red` class is refused ([`QosDrop::MeterRed`]),
//! having taken no tokens either (RFC 2697/2698: Red takes none).
//!
//! # Replacing the configuration
//!
//! [`Qos::replace_config`] swaps the whole set at once, between batches. A class whose id is
//! in the new set keeps its queued packets in order (up to its new limits: the newest packets
//! beyond them are returned), its DRR deficit, and its meter's and guard's tokens when the
//! meter's configuration did not change (a changed meter starts full, like a new one). A
//! class whose id is gone returns all its packets. Returned packets go to the caller's
//! `on_drop` (to free the buffers) and are counted per class as `drop_reconfig_count`
//! ([`QosDrop::ClassRemoved`]). An invalid configuration changes nothing.

use core::fmt;

mod config;
mod meter;
mod metrics;
mod shaper;
mod state;

#[cfg(test)]
mod tests;

pub use config::{
    ClassConfig, ClassKind, MAX_BURST_BYTES, MAX_CLASSES, MAX_PACKET_BYTES, MAX_QUEUE_PACKETS,
    MAX_RATE_BPS, MAX_WEIGHT, MIN_PACKET_BYTES, MeterConfig, MeterMode, QosConfig, RateConfig,
    ShaperConfig, SrTcmConfig, TrTcmConfig,
};
pub use meter::{Meter, SrTcm, TokenBucket, TrTcm};
pub use metrics::{ClassStats, QosStats};
pub use shaper::{Shaper, ShaperStats};
pub use state::{Dequeued, Egress, Qos, Rejected};

/// A meter's verdict (RFC 2697/2698): conforming, exceeding the committed rate/burst,
/// violating the peak/excess.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Color {
    /// Within the committed rate and burst (the colour of a packet not yet metered).
    #[default]
    Green = 0,
    /// Over the committed, within the excess (srTCM) or peak (trTCM).
    Yellow = 1,
    /// Over everything.
    Red = 2,
}

/// A class of one scheduler, `0..MAX_CLASSES`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClassId(pub u8);

impl ClassId {
    /// The id as an index.
    #[must_use]
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// Why the scheduler refused or gave back a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum QosDrop {
    /// The class id is not configured.
    UnknownClass,
    /// The packet is longer than `max_packet_bytes`.
    Oversize,
    /// The class queue is at its packet or byte limit (tail drop).
    QueueFull,
    /// The class meter coloured the packet Red and the class drops Red.
    MeterRed,
    /// A configuration replacement removed the class or shrank its queue below its content.
    ClassRemoved,
}

impl QosDrop {
    /// A stable snake_case label (metrics).
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::UnknownClass => "qos_unknown_class",
            Self::Oversize => "qos_oversize",
            Self::QueueFull => "qos_queue_full",
            Self::MeterRed => "qos_meter_red",
            Self::ClassRemoved => "qos_class_removed",
        }
    }
}

/// A configuration value out of range: `field` (inside class `class` and sub-structure
/// `section` when set) and what is allowed. Displays as a path, e.g.
/// `classes[2].meter.cbs_bytes: must be at least one largest packet (max_packet_bytes)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct QosConfigError {
    /// Index into [`QosConfig::classes`] of the class at fault, if any.
    pub class: Option<usize>,
    /// The sub-structure of the class holding the field (`meter`, `kind.guard`), or "".
    pub section: &'static str,
    /// The field.
    pub field: &'static str,
    /// What is allowed.
    pub why: &'static str,
}

impl QosConfigError {
    pub(crate) const fn new(field: &'static str, why: &'static str) -> Self {
        Self {
            class: None,
            section: "",
            field,
            why,
        }
    }

    const fn in_class(self, i: usize) -> Self {
        Self {
            class: Some(i),
            ..self
        }
    }

    const fn under(self, section: &'static str) -> Self {
        Self { section, ..self }
    }
}

impl fmt::Display for QosConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(i) = self.class {
            write!(f, "classes[{i}].")?;
        }
        if !self.section.is_empty() {
            write!(f, "{}.", self.section)?;
        }
        write!(f, "{}: {}", self.field, self.why)
    }
}

impl core::error::Error for QosConfigError {}
