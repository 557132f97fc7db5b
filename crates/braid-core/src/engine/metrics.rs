//! The engine's own counters. Plain integers, bumped on the hot path; exporters read them.
//! Each stage keeps its own stats as well (reassembly, reorder, flow tables, controller,
//! health), reachable through the engine's getters.
//!
//! Owns: what [`EngineStats`] holds (counters, gauges, the latency histograms
//! [`LatencyStats`], the busiest flows [`TopFlows`]), and the last one-way delay per NIC
//! ([`DelayStep`]) that turns delay samples into delay variation. Does not own the
//! histogram itself ([`crate::histogram`]), where the samples are taken (`state.rs`) nor the
//! scan that ranks the flows (`top_flows.rs`).
//!
//! # Latency: cumulative histograms
//!
//! Every histogram here counts since the engine started and only grows, as a Prometheus
//! histogram does: a reader that merges several engines (the daemon's workers) adds them
//! bucket by bucket ([`LatencyHistogram::merge`]), and one that wants an interval keeps an
//! earlier reading and takes the difference ([`LatencyHistogram::since`]). Recording is a
//! few integer operations on an inline array ([`crate::histogram`]): no allocation on the
//! packet path. What is recorded:
//!
//! - per NIC, **RTT**: every probe reply link health accepts (`now − echo_ts`);
//! - per NIC, **delay variation**: for every braid packet heard on the NIC but the first,
//!   how much its one-way delay (`now − the sender's timestamp`) differs from the previous
//!   packet's on that NIC ([`DelayStep`]): RFC 5481's inter-packet delay variation (IPDV),
//!   as an absolute value. The one-way delay itself includes the offset between the two
//!   hosts' clocks; the difference of two does not, so it needs no clock synchronisation
//!   (RFC 3550's interarrival jitter before smoothing). It is not the path's jitter alone:
//!   `now` is the caller's turn, shared by every packet handed over in it, so two packets of
//!   one turn give the sender's spacing of them, and the first of a turn how long it waited
//!   for the turn. Per-packet receive timestamps from the kernel would take that out (XXX:
//!   the `handle_rx` call has no such time yet);
//! - per engine, **reorder hold**: for every datagram released from a reorder buffer after
//!   waiting (the ones [`EngineStats::rx_reordered_count`] counts), the time it waited.
//!
//! Why IPDV and not the delay above the path's minimum (RFC 5481's PDV): the engine knows a
//! packet's arrival only as the `now` of the call that hands it over, the start of the
//! caller's turn. A packet read late in a long turn (a worker descheduled for 10 ms) gets a
//! `now` from before it was sent, so its delay looks far too small. As a minimum that
//! outlier moves the floor under every sample of the next 5–10 s; as one step of IPDV it
//! makes two large samples and no more.

use alloc::vec::Vec;

use super::FlowDirection;
use crate::histogram::LatencyHistogram;
use crate::{DropCounters, FlowId, Instant, MAX_NICS};

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
    /// Datagrams waiting in the reorder buffers now, summed over flows (a gauge).
    pub rx_reorder_held_count: u64,
    /// Their bytes (a gauge).
    pub rx_reorder_held_bytes: u64,
    /// Probe replies sent.
    pub tx_probe_reply_count: u64,
    /// Events dropped because nobody polled them.
    pub events_dropped_count: u64,
    /// Every drop, by reason.
    pub drops: DropCounters,
    /// Per NIC, indexed by `NicId`.
    pub nics: [NicCounters; MAX_NICS],
    /// Latency histograms, cumulative (module doc).
    pub latency: LatencyStats,
    /// The busiest flows of the last complete scan of the flow tables (`top_flows.rs`).
    pub top_flows: TopFlows,
}

impl EngineStats {
    /// A datagram of `len` bytes left a reorder buffer (released or drained): the held
    /// gauges go down.
    #[inline]
    pub(super) fn unhold(&mut self, len: u32) {
        self.rx_reorder_held_count = self.rx_reorder_held_count.saturating_sub(1);
        self.rx_reorder_held_bytes = self.rx_reorder_held_bytes.saturating_sub(u64::from(len));
    }
}

/// The engine's latency histograms, cumulative since start (module doc).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatencyStats {
    /// Per NIC, indexed by `NicId`: one entry per id up to the highest configured (the
    /// engine sizes it when built; allocated once).
    pub nics: Vec<NicLatency>,
    /// Time datagrams released after waiting in a reorder buffer waited, ns.
    pub reorder_hold: LatencyHistogram,
}

impl LatencyStats {
    /// The histograms of one NIC (`None` above the highest configured id).
    #[must_use]
    pub fn nic(&self, nic: crate::NicId) -> Option<&NicLatency> {
        self.nics.get(nic.index())
    }
}

/// One NIC's latency histograms, ns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NicLatency {
    /// Probe round-trip times.
    pub rtt: LatencyHistogram,
    /// How much the one-way delay of each braid packet received on the NIC differs from the
    /// previous one's (IPDV, module doc).
    pub delay_variation: LatencyHistogram,
}

/// The one-way delay of the last packet heard on one NIC, signed ns (it includes the hosts'
/// clock offset, which may make it negative), for the delay variation (module doc).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct DelayStep {
    last: Option<i64>,
}

impl DelayStep {
    /// Take a one-way delay sample (`received − sent`, signed ns); returns how much it
    /// differs from the previous one, ns (`None` for the first). A few integer operations.
    #[inline]
    pub(super) fn step(&mut self, owd_ns: i64) -> Option<u64> {
        self.last.replace(owd_ns).map(|last| owd_ns.abs_diff(last))
    }
}

/// Flows kept in [`TopFlows`].
pub const TOP_FLOWS: usize = 20;

/// One flow's rate, as the flow-table scan measured it (`top_flows.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowRate {
    /// The flow's table.
    pub direction: FlowDirection,
    /// Its id in that table.
    pub id: FlowId,
    /// Its rate, bit/s: bytes counted for it (TX: taken for sending; RX: delivered) between
    /// the scan's two last visits of it, over the time between them (about a second).
    pub rate_bps: u64,
}

/// The busiest flows (at most [`TOP_FLOWS`], rate above 0), busiest first (ties by
/// direction, then id), from the last complete scan of both flow tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopFlows {
    rows: [FlowRate; TOP_FLOWS],
    len: usize,
    /// When that scan ended (`None` before the first).
    pub scanned_at: Option<Instant>,
}

impl Default for TopFlows {
    fn default() -> Self {
        Self {
            rows: [FlowRate {
                direction: FlowDirection::Tx,
                id: FlowId(0),
                rate_bps: 0,
            }; TOP_FLOWS],
            len: 0,
            scanned_at: None,
        }
    }
}

impl TopFlows {
    /// The flows, busiest first.
    #[must_use]
    pub fn as_slice(&self) -> &[FlowRate] {
        &self.rows[..self.len]
    }

    /// Offer a flow: kept if there is room or it is busier than the least busy kept
    /// (O([`TOP_FLOWS`]), no allocation). Rate 0 is not kept. Order is restored by
    /// [`Self::sort`].
    pub(super) fn offer(&mut self, row: FlowRate) {
        if row.rate_bps == 0 {
            return;
        }
        if self.len < TOP_FLOWS {
            self.rows[self.len] = row;
            self.len += 1;
            return;
        }
        let (least, _) = self
            .rows
            .iter()
            .enumerate()
            .max_by(|a, b| rank(a.1, b.1))
            .expect("invariant: TOP_FLOWS > 0");
        if rank(&row, &self.rows[least]).is_lt() {
            self.rows[least] = row;
        }
    }

    /// Busiest first.
    pub(super) fn sort(&mut self) {
        self.rows[..self.len].sort_unstable_by(rank);
    }

    /// Forget every row (a new scan starts).
    pub(super) fn clear(&mut self) {
        self.len = 0;
    }
}

/// The order of [`TopFlows`]: higher rate first, then TX before RX, then lower id.
fn rank(a: &FlowRate, b: &FlowRate) -> core::cmp::Ordering {
    b.rate_bps
        .cmp(&a.rate_bps)
        .then(a.direction.cmp(&b.direction))
        .then(a.id.0.cmp(&b.id.0))
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod engine_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: u32, rate_bps: u64) -> FlowRate {
        FlowRate {
            direction: if id.is_multiple_of(2) {
                FlowDirection::Tx
            } else {
                FlowDirection::Rx
            },
            id: FlowId(id),
            rate_bps,
        }
    }

    #[test]
    fn top_flows_keep_the_busiest() {
        let mut t = TopFlows::default();
        // 100 flows of rates 0, 10, ..., 990 offered in a scrambled order.
        for k in 0..100u32 {
            let id = (k * 37) % 100;
            t.offer(row(id, u64::from(id) * 10));
        }
        t.sort();
        let got: Vec<u64> = t.as_slice().iter().map(|r| r.rate_bps).collect();
        let want: Vec<u64> = (80..100).rev().map(|i| i * 10).collect();
        assert_eq!(got, want);
        assert_eq!(t.as_slice()[0].id, FlowId(99));
        // Ties: TX before RX, then by id; rate 0 never kept.
        let mut t = TopFlows::default();
        t.offer(row(3, 5));
        t.offer(row(2, 5));
        t.offer(row(4, 5));
        t.offer(row(6, 0));
        t.sort();
        let ids: Vec<u32> = t.as_slice().iter().map(|r| r.id.0).collect();
        assert_eq!(ids, [2, 4, 3]);
        t.clear();
        assert!(t.as_slice().is_empty());
    }

    #[test]
    fn delay_steps_are_differences_of_consecutive_delays() {
        let mut d = DelayStep::default();
        // The clock offset makes the delays negative: only differences count.
        assert_eq!(d.step(-1_000_000), None, "the first has no predecessor");
        assert_eq!(d.step(-999_000), Some(1_000));
        assert_eq!(
            d.step(-1_200_000),
            Some(201_000),
            "down counts as much as up"
        );
        assert_eq!(d.step(-1_200_000), Some(0));
        // Extremes do not overflow.
        assert_eq!(d.step(i64::MAX), Some(i64::MAX.abs_diff(-1_200_000)));
        assert_eq!(d.step(i64::MIN), Some(u64::MAX));
    }
}
