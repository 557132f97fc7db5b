//! The engine's own counters. Plain integers, bumped on the hot path; exporters read them.
//! Each stage keeps its own stats as well (reassembly, reorder, flow tables, controller,
//! health), reachable through the engine's getters.

use crate::{DropCounters, MAX_NICS};

/// Counters for one NIC. Units are in the names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NicCounters {
    /// Braid packets written by `poll_transmit` for this NIC (data, probes, replies).
    pub tx_packets_count: u64,
    /// Their bytes (braid header included).
    pub tx_bytes_count: u64,
    /// Payload bytes of data packets sent (goodput before the far side's reassembly).
    pub tx_payload_bytes_count: u64,
    /// Braid packets received on this NIC that parsed.
    pub rx_packets_count: u64,
    /// Their bytes.
    pub rx_bytes_count: u64,
    /// Data packets received on this NIC whose datagram completed first from this NIC's
    /// copy (for duplicated flows: how often this NIC "won").
    pub rx_first_count: u64,
    /// Probes sent.
    pub tx_probe_count: u64,
    /// Pieces moved off this NIC's TX queue when it went down.
    pub tx_rerouted_count: u64,
    /// Bytes waiting in this NIC's TX queue now.
    pub tx_queued_bytes: u64,
    /// The NIC's capacity now, bit/s: as configured, or the current estimate when the NIC is
    /// configured `auto` (a gauge; [`super::Engine::capacity_estimate`] has the details).
    pub capacity_bps: u64,
    /// The rate the NIC is paced at now, bit/s: the capacity, times the estimator's probing
    /// gain for an `auto` NIC (a gauge).
    pub pacing_bps: u64,
}

/// Engine-wide counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Packets taken from the virtual NIC and queued (refused ones are in `drops`).
    pub tx_packets_count: u64,
    /// Their bytes.
    pub tx_bytes_count: u64,
    /// Packets sent whole on one NIC.
    pub tx_whole_count: u64,
    /// Packets split across NICs.
    pub tx_split_count: u64,
    /// Packets duplicated on several NICs.
    pub tx_duplicate_count: u64,
    /// Packets delivered to the virtual NIC, whole and in order.
    pub rx_delivered_count: u64,
    /// Their bytes.
    pub rx_delivered_bytes: u64,
    /// Sequence numbers given up as gaps (lost or too late), summed over flows.
    pub rx_gap_seqs_count: u64,
    /// Gap events (a run of missing sequences counts once).
    pub rx_gap_count: u64,
    /// Datagrams released after waiting in a reorder buffer.
    pub rx_reordered_count: u64,
    /// Longest reorder hold seen, in nanoseconds.
    pub rx_max_hold_ns: u64,
    /// Probe replies sent.
    pub tx_probe_reply_count: u64,
    /// Events dropped because nobody polled them.
    pub events_dropped_count: u64,
    /// Every drop, by reason.
    pub drops: DropCounters,
    /// Per NIC, indexed by `NicId`.
    pub nics: [NicCounters; MAX_NICS],
}
