//! Counters of one QoS scheduler: per class and in total.
//!
//! Owns: [`ClassStats`], [`QosStats`]. Does not own: export (braid-control sums them per
//! worker and serves them), nor the shaper's counters (`shaper.rs`).

use super::config::MAX_CLASSES;
use super::{ClassId, Color, QosDrop};

/// Counters of one class. Counters only grow (wrapping); the queue gauges are read from
/// [`super::Qos::class_queued`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Packets accepted into the queue.
    pub enqueued_packets_count: u64,
    /// Bytes accepted into the queue.
    pub enqueued_bytes_count: u64,
    /// Packets dequeued.
    pub dequeued_packets_count: u64,
    /// Bytes dequeued.
    pub dequeued_bytes_count: u64,
    /// Packets refused because the queue was at its packet or byte limit (tail drop).
    pub drop_queue_full_count: u64,
    /// Packets refused because they were longer than `max_packet_bytes`.
    pub drop_oversize_count: u64,
    /// Red packets refused by a `drop_red` class.
    pub drop_red_count: u64,
    /// Packets given back by a configuration replacement.
    pub drop_reconfig_count: u64,
    /// Packets of colour Green past the queue limits: as the class's meter coloured them,
    /// or, for a class without a meter, as the caller pre-coloured them (the engine's NIC
    /// schedulers have no meter: there each piece counts the colour the vNIC's meter gave
    /// its packet). Counted whether or not they were then queued (`drop_red`).
    pub green_count: u64,
    /// Packets of colour Yellow (as `green_count`).
    pub yellow_count: u64,
    /// Packets of colour Red (as `green_count`).
    pub red_count: u64,
    /// Weighted packets sent while the strict class had a packet waiting, because the strict
    /// class's guard was spent (strict class only; 0 for others).
    pub guard_yield_count: u64,
}

impl ClassStats {
    #[inline]
    pub(crate) fn count_color(&mut self, c: Color) {
        let slot = match c {
            Color::Green => &mut self.green_count,
            Color::Yellow => &mut self.yellow_count,
            Color::Red => &mut self.red_count,
        };
        *slot = slot.wrapping_add(1);
    }

    #[inline]
    pub(crate) fn count_drop(&mut self, why: QosDrop) {
        let slot = match why {
            QosDrop::QueueFull => &mut self.drop_queue_full_count,
            QosDrop::Oversize => &mut self.drop_oversize_count,
            QosDrop::MeterRed => &mut self.drop_red_count,
            QosDrop::ClassRemoved => &mut self.drop_reconfig_count,
            // Counted in `QosStats::drop_unknown_class_count`: there is no class.
            QosDrop::UnknownClass => return,
        };
        *slot = slot.wrapping_add(1);
    }

    /// All the drops of this class.
    #[must_use]
    pub const fn drops(&self) -> u64 {
        self.drop_queue_full_count
            .wrapping_add(self.drop_oversize_count)
            .wrapping_add(self.drop_red_count)
            .wrapping_add(self.drop_reconfig_count)
    }
}

/// Counters of one scheduler, per class id (kept across configuration replacements, so a
/// removed class's counters stay readable).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QosStats {
    /// Per class id.
    pub classes: [ClassStats; MAX_CLASSES],
    /// Packets for a class id that is not configured.
    pub drop_unknown_class_count: u64,
}

impl QosStats {
    /// The counters of class `id` (a zeroed set for an id out of range).
    #[must_use]
    pub fn class(&self, id: ClassId) -> ClassStats {
        self.classes.get(id.index()).copied().unwrap_or_default()
    }

    /// Drops of every kind, every class.
    #[must_use]
    pub fn drops(&self) -> u64 {
        self.classes
            .iter()
            .fold(self.drop_unknown_class_count, |a, c| {
                a.wrapping_add(c.drops())
            })
    }
}
