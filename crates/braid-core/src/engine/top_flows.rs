//! The busiest flows: a scan of both flow tables, a bounded number of slots per
//! `handle_timeout`, that measures each flow's rate from two visits and publishes the
//! busiest [`TOP_FLOWS`] in [`EngineStats::top_flows`](super::EngineStats::top_flows).
//!
//! Owns: the scan (its cursor, its pace, the ranking of one pass) and the rate mark each
//! flow carries ([`RateMark`]). Does not own the tables (`state.rs`), the byte counts it
//! reads (bumped on the TX and RX paths), nor the order of the published rows
//! ([`TopFlows`]).
//!
//! # How a rate is measured
//!
//! A rate needs two samples. Each flow carries a mark: its byte count and the time when the
//! scan last visited it (when the flow is installed: 0 bytes and the install time). A visit
//! at `now` computes `rate_bps = 8 · (bytes − mark.bytes) · 10^9 / (now − mark.at in ns)` and
//! moves the mark to `(bytes, now)`. TX bytes are those taken for sending (the IP packets
//! from the vNIC), RX bytes those delivered to the vNIC. A pass visits every flow once, so a
//! rate is the flow's mean over the time between two passes, about [`SCAN_INTERVAL`]. A
//! flow whose mark is younger than [`MIN_RATE_WINDOW`] (installed just before its visit) is
//! not ranked in that pass and keeps its mark: a rate over a few milliseconds would be one
//! burst, not a rate.
//!
//! # Bounded work
//!
//! A pass visits the TX table's slots and then the RX table's (every slot ever used, not
//! only live ones: slot numbers are stable, so a pass misses no flow that lives through it),
//! at most [`SCAN_BUDGET`] slots per `handle_timeout` call, and keeps the busiest in a
//! fixed array of [`TOP_FLOWS`] rows: no allocation, no copy of the table, no work on the
//! packet path. A pass starts at the first `handle_timeout` at least [`SCAN_INTERVAL`] after
//! the previous one started; when it ends its rows replace the published ones. The scan has
//! no deadline of its own in `poll_timeout`: it moves on the calls the other timers cause
//! (link health probes each NIC every probe interval, 5 ms by default), so a pass over `N`
//! slots takes about `N / SCAN_BUDGET` of them (a full default table of 65,536 TX and
//! 65,536 RX slots: 128 calls).
//!
//! Why a scan and not a top-K kept on the packet path: ranking on every packet costs a
//! comparison and, for a flow that climbs, a move in the ranking, per packet; and a rate
//! still needs two samples in time. The scan costs nothing per packet and a few
//! microseconds per call, and sees every flow, not the first page of the table.

use core::time::Duration;

use super::super::metrics::{FlowRate, TOP_FLOWS, TopFlows};
use super::Engine;
use crate::Instant;
use crate::engine::FlowDirection;
use crate::time::duration_nanos;

/// Slots visited per `handle_timeout` call at most.
pub(super) const SCAN_BUDGET: usize = 1024;
/// A pass starts this long after the previous one started (or later).
pub(super) const SCAN_INTERVAL: Duration = Duration::from_secs(1);
/// A flow's rate is measured over at least this long (see the module doc).
pub(super) const MIN_RATE_WINDOW: Duration = Duration::from_millis(100);

/// A flow's byte count and the time at the scan's last visit.
#[derive(Clone, Copy, Debug)]
pub(super) struct RateMark {
    bytes: u64,
    at: Instant,
}

impl RateMark {
    /// The mark of a flow installed at `now` (nothing counted yet).
    pub(super) const fn new(now: Instant) -> Self {
        Self { bytes: 0, at: now }
    }

    /// The rate since the mark, bit/s, and the mark moved to `(bytes, now)`; `None` (mark
    /// kept) if the mark is younger than [`MIN_RATE_WINDOW`].
    fn take(&mut self, bytes: u64, now: Instant) -> Option<u64> {
        let window = now.saturating_duration_since(self.at);
        if window < MIN_RATE_WINDOW {
            return None;
        }
        let counted = u128::from(bytes.saturating_sub(self.bytes));
        let rate = counted * 8 * 1_000_000_000 / u128::from(duration_nanos(window).max(1));
        *self = Self { bytes, at: now };
        Some(u64::try_from(rate).unwrap_or(u64::MAX))
    }
}

/// Where the scan is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Between passes.
    Idle,
    /// Next TX slot to visit.
    Tx(u32),
    /// Next RX slot to visit.
    Rx(u32),
}

/// The scan's state (module doc).
#[derive(Clone, Debug)]
pub(super) struct RateScan {
    phase: Phase,
    /// When the next pass may start.
    next_pass_at: Instant,
    /// The busiest flows of the pass in progress.
    pass: TopFlows,
}

impl RateScan {
    /// No pass yet; the first starts at the first `handle_timeout` [`SCAN_INTERVAL`] after
    /// `now`, so every flow's first rate spans at least that long.
    pub(super) fn new(now: Instant) -> Self {
        Self {
            phase: Phase::Idle,
            next_pass_at: now.saturating_add(SCAN_INTERVAL),
            pass: TopFlows::default(),
        }
    }
}

impl Engine {
    /// One step of the scan (module doc): start a pass if one is due, visit at most
    /// [`SCAN_BUDGET`] slots, publish the pass's busiest flows when it ends.
    pub(super) fn scan_flow_rates(&mut self, now: Instant) {
        let scan = &mut self.rate_scan;
        if scan.phase == Phase::Idle {
            if now < scan.next_pass_at {
                return;
            }
            scan.phase = Phase::Tx(0);
            scan.pass.clear();
            scan.next_pass_at = now.saturating_add(SCAN_INTERVAL);
        }
        let mut budget = SCAN_BUDGET;
        while budget > 0 {
            match scan.phase {
                Phase::Idle => break,
                Phase::Tx(s) => {
                    if s as usize >= self.tx_flows.slot_bound() {
                        scan.phase = Phase::Rx(0);
                        continue;
                    }
                    if let Some((_, f)) = self.tx_flows.slot_mut(s)
                        && let Some(rate_bps) = f.rate_mark.take(f.bytes, now)
                    {
                        scan.pass.offer(FlowRate {
                            direction: FlowDirection::Tx,
                            id: f.id,
                            rate_bps,
                        });
                    }
                    scan.phase = Phase::Tx(s + 1);
                    budget -= 1;
                }
                Phase::Rx(s) => {
                    if s as usize >= self.rx_flows.slot_bound() {
                        scan.pass.sort();
                        scan.pass.scanned_at = Some(now);
                        self.stats.top_flows.clone_from(&scan.pass);
                        scan.phase = Phase::Idle;
                        break;
                    }
                    if let Some((&id, rx)) = self.rx_flows.slot_mut(s)
                        && let Some(rate_bps) = rx.rate_mark.take(rx.bytes, now)
                    {
                        scan.pass.offer(FlowRate {
                            direction: FlowDirection::Rx,
                            id,
                            rate_bps,
                        });
                    }
                    scan.phase = Phase::Rx(s + 1);
                    budget -= 1;
                }
            }
        }
    }
}

const _: () = assert!(TOP_FLOWS > 0 && SCAN_BUDGET > 0);
