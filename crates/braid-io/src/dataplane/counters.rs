//! The rule and QoS counters of a worker's [`Snapshot`](super::Snapshot): per rule of the
//! TX and RX tables in force, and per NIC and QoS class.
//!
//! Owns: their published shape and how it is read from the engine. Does not own the
//! counters (braid-core's `engine::RuleHits`, `qos::ClassStats`: bumped on the fast path
//! with no allocation) nor their export (the daemon's stats file, the REST API).
//!
//! A snapshot is taken every [`SNAPSHOT_INTERVAL`](super::SNAPSHOT_INTERVAL) on the worker's
//! thread, between batches, so it must be cheap with 10 000 rules: the hit counters are
//! copied (16 bytes a rule), the names are not (an `Arc` shared with the engine's table).

use std::sync::Arc;

use braid_core::NicId;
use braid_core::engine::{Engine, RuleDirection, RuleHits};
use braid_core::qos::{ClassId, ClassStats, QosStats};

/// One direction's rule table: what each rule applied to.
#[derive(Clone, Debug, Default)]
pub struct RuleTableSnapshot {
    /// The rules' names, by index (shared with the engine's table).
    pub names: Arc<[String]>,
    /// Per rule, by index: packets and bytes it applied to since the table was installed.
    pub hits: Vec<RuleHits>,
}

impl RuleTableSnapshot {
    fn of(engine: &Engine, direction: RuleDirection) -> Self {
        Self {
            names: Arc::clone(engine.rule_names(direction)),
            hits: engine.rule_hits(direction).to_vec(),
        }
    }
}

/// The rule counters of both tables in force.
#[derive(Clone, Debug, Default)]
pub struct RulesSnapshot {
    /// TX rules.
    pub tx: RuleTableSnapshot,
    /// RX rules.
    pub rx: RuleTableSnapshot,
    /// Rule set replacements so far: when it changes, the per-rule counters started over
    /// at zero with the new tables (they survive no replacement).
    pub replaced: u64,
}

impl RulesSnapshot {
    /// The engine's rule counters now.
    #[must_use]
    pub fn of(engine: &Engine) -> Self {
        Self {
            tx: RuleTableSnapshot::of(engine, RuleDirection::Tx),
            rx: RuleTableSnapshot::of(engine, RuleDirection::Rx),
            replaced: engine.rule_stats().sets_replaced_count,
        }
    }
}

/// One QoS class of one scheduler (a NIC's queue, or the vNIC's meters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QosClassSnapshot {
    /// The class.
    pub class: ClassId,
    /// Its counters: enqueued, dequeued, drops by reason, colours.
    pub stats: ClassStats,
    /// Packets in its queue now (0 for the vNIC's meters, which queue nothing).
    pub queued_packets: usize,
    /// Bytes in its queue now.
    pub queued_bytes: u64,
}

/// The configured classes' ids, in configuration order.
fn class_ids(engine: &Engine) -> impl Iterator<Item = ClassId> + '_ {
    engine.config().qos.classes.iter().map(|c| c.id)
}

/// Per configured class, NIC `nic`'s scheduler (empty if the engine does not know it).
#[must_use]
pub fn nic_qos(engine: &Engine, nic: NicId) -> Vec<QosClassSnapshot> {
    let Some(stats) = engine.nic_qos_stats(nic) else {
        return Vec::new();
    };
    class_ids(engine)
        .map(|class| {
            let (queued_packets, queued_bytes) =
                engine.nic_qos_queued(nic, class).unwrap_or((0, 0));
            QosClassSnapshot {
                class,
                stats: stats.class(class),
                queued_packets,
                queued_bytes,
            }
        })
        .collect()
}

/// Per configured class, the vNIC's meters (colours, `drop_red_count`).
#[must_use]
pub fn vnic_qos(engine: &Engine) -> Vec<QosClassSnapshot> {
    let stats: &QosStats = engine.vnic_meter_stats();
    class_ids(engine)
        .map(|class| QosClassSnapshot {
            class,
            stats: stats.class(class),
            queued_packets: 0,
            queued_bytes: 0,
        })
        .collect()
}
