//! The REST API in `braid run`: [`Control`], the daemon's side of braid-control's
//! [`Daemon`] trait over the data-path workers' handles and the plan in force, and
//! [`serve`], the control thread that runs braid-control's router on a small tokio runtime.
//!
//! What this file owns: how each API operation maps onto the workers (snapshots merged
//! across workers, commands sent to every worker all or nothing), the policies in force and
//! their replacement, whether by the API or by SIGHUP (one lock, so the two never interleave),
//! with their persistence (`api/persist.rs`), and the rates computed from consecutive
//! snapshots (and the latency percentiles over the same interval, "Stats" below). What it
//! does not own: HTTP, tokens, the audit log and the rate limit
//! (braid-control), the engine commands' semantics (braid-core), the file's checks
//! (config.rs) and applying a policy set to the workers (`run::apply_policies`).
//!
//! # One schema
//!
//! The API's policy document (`braid_control::PolicyDocument`) is made of the config file's
//! policy sections, `[[rules]]`, `[qos]`, `[[tunnels]]`, `[policy]`, `[reorder]`,
//! `[fragmentation]` and `[reassembly]`: the file's types are the document's
//! (`crate::config` takes them from braid-control). A document is put in place of the
//! config's sections and checked by config.rs exactly as a file is, so a bad document gets
//! the same error a bad file does, naming the field (`rules[0].qos`,
//! `reassembly.timeout_ms`). The file the policies persist in is the document as TOML:
//! those sections of a config file.
//!
//! # What changes live
//!
//! Every section is replaced on every worker as one set, between two batches
//! ([`crate::run::apply_policies`], as SIGHUP does): one `ReplacePolicies` command per
//! engine, all or nothing. The one limit is what sized a table when braid started:
//! `reassembly.max_fragments` may go up to the larger of 64 and its value at start (a
//! larger one is refused, 422, naming the field and saying it needs a restart). At start,
//! a policies file's sections replace the config file's, every one of them (the policies
//! file is what the API or SIGHUP last put in force; the config file's sections apply
//! again only when there is no policies file, or after a SIGHUP).
//!
//! # Several workers
//!
//! Each worker has its own engine. A NIC's counters are the sum of the workers'; its link
//! measurements the worst worker's (the largest RTT and loss, the worst state). A capacity
//! set through the API is split equally among the workers, then moved by demand
//! (`braid_io::dataplane::CapacityShares`), which this type holds for the main loop.
//!
//! # Stats
//!
//! Counters are the sum of the workers' latest snapshots; rates are the difference of two
//! samples the main loop takes once a second, over the time between them. The engines'
//! latency histograms (probe RTT and delay variation per NIC, reorder hold) are cumulative:
//! each sample keeps their sum over the workers, `GET /v1/stats` reports the percentiles of
//! the difference of the two samples (so over the same interval as the rates), and
//! `/metrics` the cumulative sums of the latest snapshots as Prometheus histograms. The
//! busiest flows come from each engine's rate scan (every flow, ranked about once a second,
//! `braid_core::engine::TopFlows`), merged across the workers from their snapshots: no
//! request walks a flow table.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::time::Duration;

use anyhow::{Context, Result};
use braid_control::schema::{
    AdminState, Flow, FlowCounts, FlowDirection, FlowMove, FlowPage, FlowRate, LatencyPercentiles,
    LinkState as ApiLinkState, Nic, NicStats, NicUpdate, PolicyName, QosClassStatus,
    ReassemblyStats, ReorderStats, RssInfo, Stats, Transport, Vnic, VnicKind, VnicQueue,
};
use braid_control::{Daemon, DaemonError, FlowQuery, PolicyDocument};
use braid_core::NicId;
use braid_core::engine::{
    ClassPolicy, Command, FlowCursor as EngineFlowCursor, FlowDirection as EngineFlowDirection,
    FlowQuery as EngineFlowQuery, FlowRow,
};
use braid_core::health::{LinkState, LinkStats};
use braid_core::histogram::LatencyHistogram;
use braid_core::qos::ClassKind;
use braid_io::dataplane::{CapacityShares, DataplaneHandle, Snapshot};

use crate::config::{ApiSection, Capacity, Config, Endpoint, Plan};

mod persist;

/// The context of a policy change that the workers took but whose file could not be
/// written, and that could not be undone: the new policies are in force, not persisted.
#[derive(Debug)]
struct InForceNotPersisted;

impl std::fmt::Display for InForceNotPersisted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the new policies are in force but not persisted")
    }
}

/// One NIC as the API shows it, what never changes while braid runs.
#[derive(Clone, Debug)]
struct NicInfo {
    id: NicId,
    name: String,
    device: String,
    transport: Transport,
    capacity_auto: bool,
}

/// What an operator set on a NIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct NicSetting {
    /// The capacity in force for the NIC as a whole, bit/s (the configured one or the last
    /// set through the API; for an `auto` NIC the estimators' starting point).
    capacity_bps: u64,
    /// Administratively up.
    up: bool,
}

/// The counters behind the rates, from one round of snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Sample {
    /// The newest worker snapshot's time, ns.
    at_ns: u64,
    /// Per NIC (in id order): tx bytes, tx packets, rx bytes, rx packets, summed.
    nics: Vec<[u64; 4]>,
    /// The latency histograms, summed.
    latency: Latency,
}

/// The engines' latency histograms summed over the workers (cumulative, ns).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Latency {
    /// Per NIC (in `Control::nics` order): probe RTT and delay variation.
    nics: Vec<(LatencyHistogram, LatencyHistogram)>,
    /// Reorder hold.
    reorder_hold: LatencyHistogram,
}

impl Latency {
    /// The sum of the workers' histograms, for `nics`.
    fn of(snaps: &[Snapshot], nics: &[NicInfo]) -> Self {
        let mut l = Self {
            nics: vec![Default::default(); nics.len()],
            ..Self::default()
        };
        for s in snaps {
            let e = &s.engine.latency;
            l.reorder_hold.merge(&e.reorder_hold);
            for (sum, n) in l.nics.iter_mut().zip(nics) {
                if let Some(h) = e.nic(n.id) {
                    sum.0.merge(&h.rtt);
                    sum.1.merge(&h.delay_variation);
                }
            }
        }
        l
    }
}

/// The percentiles of a histogram of ns, in µs (`None` if it is empty).
fn percentiles(h: &LatencyHistogram) -> Option<LatencyPercentiles> {
    let us = |ppm| h.quantile_ns(ppm).map(|ns| ns / 1_000);
    Some(LatencyPercentiles {
        samples: h.count(),
        p50_us: us(500_000)?,
        p90_us: us(900_000)?,
        p99_us: us(990_000)?,
        p999_us: us(999_000)?,
        max_us: us(1_000_000)?,
    })
}

/// A histogram of ns as `/metrics` shows it, in seconds.
#[allow(clippy::cast_precision_loss)]
fn prometheus_histogram(h: &LatencyHistogram) -> braid_control::metrics::Histogram {
    let secs = |ns: u64| ns as f64 / 1e9;
    braid_control::metrics::Histogram {
        count: h.count(),
        sum_seconds: secs(h.sum_ns()),
        buckets: h.export_buckets().map(|(le, n)| (secs(le), n)).collect(),
    }
}

/// The vNIC as the API shows it.
#[derive(Clone, Debug)]
pub(crate) struct VnicInfo {
    /// The RSS key and indirection table (with one queue: none).
    pub rss: Option<RssInfo>,
}

/// What [`Control::new`] is made of.
#[derive(Debug)]
pub(crate) struct ControlParts {
    /// The workers, in vNIC queue order.
    pub workers: Vec<DataplaneHandle>,
    /// The plan in force (the file's, with a policies file's policies).
    pub plan: Plan,
    /// Each NIC's link MTU, in id order.
    pub link_mtu: Vec<u32>,
    /// Each NIC's capacity at start, bit/s (an `auto` NIC's first estimate).
    pub capacity_bps: Vec<u64>,
    /// The vNIC.
    pub vnic: VnicInfo,
    /// Where the policies persist (`[api]`'s policies file); `None`: nowhere.
    pub persist: Option<PathBuf>,
}

/// The daemon's control state, shared by the main loop (SIGHUP, capacity shares, samples)
/// and the REST API (the [`Daemon`] trait).
#[derive(Debug)]
pub(crate) struct Control {
    workers: Vec<DataplaneHandle>,
    link_mtu: Vec<u32>,
    nics: Vec<NicInfo>,
    vnic: VnicInfo,
    /// The plan whose policies are in force; held while they are replaced.
    in_force: Mutex<Plan>,
    persist: Option<PathBuf>,
    /// Held while a NIC is changed (and by the main loop's share rounds).
    shares: Mutex<CapacityShares>,
    settings: Mutex<Vec<NicSetting>>,
    /// The last two samples, older first.
    samples: Mutex<(Option<Sample>, Option<Sample>)>,
    /// The largest `reassembly.max_fragments` the engines have room for (the larger of 64
    /// and the value they started with).
    fragments_room: u16,
}

/// A lock that a panic elsewhere does not make unusable (every holder leaves the data
/// consistent between statements).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Control {
    /// The control state for `parts`.
    pub(crate) fn new(parts: ControlParts) -> Self {
        let ControlParts {
            workers,
            plan,
            link_mtu,
            capacity_bps,
            vnic,
            persist,
        } = parts;
        let fragments_room = plan
            .file
            .reassembly
            .max_fragments
            .max(braid_core::reassembly::DEFAULT_MAX_FRAGMENTS);
        let nics: Vec<NicInfo> = plan
            .nics
            .iter()
            .map(|n| NicInfo {
                id: n.id,
                name: n.name.clone(),
                device: n.device.clone(),
                transport: match n.endpoint {
                    Endpoint::Udp { .. } => Transport::Udp,
                    Endpoint::Ethernet { .. } => Transport::Ethernet,
                },
                capacity_auto: n.capacity == Capacity::Auto,
            })
            .collect();
        let shares = CapacityShares::new(
            plan.nics
                .iter()
                .zip(&capacity_bps)
                .map(|(n, c)| braid_io::dataplane::SharedNic {
                    capacity_bps: (n.capacity != Capacity::Auto).then_some(*c),
                    wire_overhead_bytes: n.wire_overhead(),
                })
                .collect(),
            workers.len(),
        );
        let settings = capacity_bps
            .iter()
            .map(|&c| NicSetting {
                capacity_bps: c,
                up: true,
            })
            .collect();
        Self {
            workers,
            link_mtu,
            nics,
            vnic,
            in_force: Mutex::new(plan),
            persist,
            shares: Mutex::new(shares),
            settings: Mutex::new(settings),
            samples: Mutex::new((None, None)),
            fragments_room,
        }
    }

    /// Every worker's latest snapshot, or `None` while one has not published any.
    pub(crate) fn snapshots(&self) -> Option<Vec<Snapshot>> {
        self.workers.iter().map(DataplaneHandle::snapshot).collect()
    }

    fn snapshots_or_unavailable(&self) -> Result<Vec<Snapshot>, DaemonError> {
        self.snapshots().ok_or_else(|| DaemonError::Unavailable {
            detail: "a data-path worker has not published its counters yet".into(),
        })
    }

    /// The vNIC's name (for logs).
    pub(crate) fn vnic_name(&self) -> String {
        lock(&self.in_force).file.vnic.name.clone()
    }

    /// One round of the capacity shares among several workers (the main loop, at most
    /// once per snapshot interval): a NIC change through the API waits for it, and it for
    /// a NIC change.
    pub(crate) fn share_round(&self) {
        if self.workers.len() < 2 {
            return;
        }
        let Some(snaps) = self.snapshots() else {
            return;
        };
        let mut shares = lock(&self.shares);
        for change in shares.update(&snaps) {
            match self.workers[change.worker].apply_quiet(change.command.clone()) {
                Some(Ok(())) => {}
                answer => {
                    tracing::warn!(worker = change.worker, command = ?change.command,
                        answer = ?answer, "capacity share not applied; resent next round");
                    shares.refused(&change);
                }
            }
        }
    }

    /// Take a sample of the counters for the rates (the main loop, once a second).
    pub(crate) fn sample(&self) {
        let Some(snaps) = self.snapshots() else {
            return;
        };
        let sample = Sample {
            at_ns: snaps.iter().map(|s| s.at.as_nanos()).max().unwrap_or(0),
            latency: Latency::of(&snaps, &self.nics),
            nics: self
                .nics
                .iter()
                .map(|n| {
                    let mut c = [0u64; 4];
                    for nic in snaps.iter().filter_map(|s| nic_of(s, n.id)) {
                        let e = &nic.engine;
                        for (sum, v) in c.iter_mut().zip([
                            e.tx_bytes_count,
                            e.tx_packets_count,
                            e.rx_bytes_count,
                            e.rx_packets_count,
                        ]) {
                            *sum = sum.saturating_add(v);
                        }
                    }
                    c
                })
                .collect(),
        };
        let mut samples = lock(&self.samples);
        if samples.1.as_ref().is_some_and(|s| s.at_ns >= sample.at_ns) {
            return;
        }
        samples.0 = samples.1.take();
        samples.1 = Some(sample);
    }

    /// Put `new` (a checked plan of the running daemon's file) in force: SIGHUP's reload.
    ///
    /// # Errors
    /// As [`Control::put_in_force`]; nothing changed.
    pub(crate) fn reload(&self, new: Plan) -> Result<()> {
        let mut in_force = lock(&self.in_force);
        self.put_in_force(&mut in_force, new)
    }

    /// Replace the policies in force (`in_force`, locked by the caller) with `new`'s on every
    /// worker and persist them: the new file is written (not yet in place) first, so a disk
    /// that refuses it changes nothing; then the workers switch
    /// ([`crate::run::replace_policies`]); then the file is renamed into place. If that
    /// fails, the previous policies are put back.
    ///
    /// # Errors
    /// A section that cannot change at run time, a tunnel port that cannot be opened, a
    /// worker that refused, or the policies file that cannot be written: the policies in
    /// force (and the file) are as before.
    fn put_in_force(&self, in_force: &mut Plan, new: Plan) -> Result<()> {
        let pending = match &self.persist {
            Some(path) => {
                let text = persist::to_toml(&document_of(&new.file))?;
                Some(persist::Pending::write(path, &text).context("cannot persist the policies")?)
            }
            None => None,
        };
        let previous = in_force.clone();
        if let Err(e) = crate::run::replace_policies(&self.workers, in_force, new, &self.link_mtu) {
            if let Some(p) = pending {
                p.abandon();
            }
            return Err(e);
        }
        if let Some(p) = pending
            && let Err(e) = p.commit()
        {
            let e = e.context("cannot persist the policies");
            return match crate::run::replace_policies(
                &self.workers,
                in_force,
                previous,
                &self.link_mtu,
            ) {
                Ok(()) => Err(e.context("the previous policies were put back")),
                Err(back) => {
                    tracing::error!(error = %format!("{back:#}"),
                        "cannot put the previous policies back: the new ones stay in force, \
                         not persisted");
                    Err(e.context(InForceNotPersisted))
                }
            };
        }
        if let Some(path) = &self.persist {
            tracing::info!(file = %path.display(), "policies persisted");
        }
        Ok(())
    }

    /// Send `command(k)` to every worker k, all or none: if worker k refuses, `undo(j)` goes
    /// back to every worker j before it; if worker k does not answer, to it as well (the
    /// command may still be in its queue and run later: the undo, queued after it, runs
    /// after it, and both commands set a value, so an undo of a command never run changes
    /// nothing).
    fn on_every_worker(
        &self,
        what: &str,
        command: impl Fn(usize) -> Command,
        undo: impl Fn(usize) -> Command,
    ) -> Result<(), DaemonError> {
        for (k, w) in self.workers.iter().enumerate() {
            let failure = match w.apply(command(k)) {
                Some(Ok(())) => continue,
                Some(Err(e)) => DaemonError::Refused {
                    reason: format!("{what}: worker {k} refused it: {e}"),
                },
                None => DaemonError::Unavailable {
                    detail: format!("{what}: worker {k} did not answer within a second"),
                },
            };
            let undo_upto = if matches!(failure, DaemonError::Unavailable { .. }) {
                k + 1
            } else {
                k
            };
            for (j, done) in self.workers[..undo_upto].iter().enumerate() {
                if !matches!(done.apply(undo(j)), Some(Ok(()))) {
                    tracing::error!(worker = j, what, "cannot undo a NIC change");
                }
            }
            return Err(failure);
        }
        Ok(())
    }

    fn nic_by_name(&self, name: &str) -> Result<&NicInfo, DaemonError> {
        self.nics
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| DaemonError::NotFound {
                what: format!(
                    "no NIC is named {name:?} (there are {:?})",
                    self.nics
                        .iter()
                        .map(|n| n.name.as_str())
                        .collect::<Vec<_>>()
                ),
            })
    }

    fn nic_view(&self, n: &NicInfo, setting: NicSetting, snaps: &[Snapshot]) -> Nic {
        let mut t = NicTotals::default();
        for s in snaps {
            if let Some(nic) = nic_of(s, n.id) {
                t.add(nic);
            }
        }
        let link = t.link.unwrap_or_default();
        Nic {
            id: n.id.0,
            name: n.name.clone(),
            device: n.device.clone(),
            transport: n.transport,
            // Configured (or set): what the operator gave; `auto`: the estimators' sum.
            capacity_bps: if n.capacity_auto {
                t.capacity_bps
            } else {
                setting.capacity_bps
            },
            capacity_auto: n.capacity_auto,
            admin: if setting.up {
                AdminState::Up
            } else {
                AdminState::Down
            },
            link: link.state,
            transport_open: t.open,
            srtt_us: link.srtt_us,
            loss_ratio: link.loss,
            tx_packets: t.tx_packets,
            tx_bytes: t.tx_bytes,
            rx_packets: t.rx_packets,
            rx_bytes: t.rx_bytes,
            flows: t.flows,
        }
    }
}

/// NIC `id`'s entry in a worker's snapshot.
fn nic_of(s: &Snapshot, id: NicId) -> Option<&braid_io::dataplane::NicSnapshot> {
    s.nics.iter().find(|n| n.id == id)
}

/// A link as several workers measure it: the worst of each.
#[derive(Clone, Copy, Debug, PartialEq)]
struct LinkView {
    state: ApiLinkState,
    srtt_us: Option<u64>,
    owd_us: Option<u64>,
    loss: Option<f64>,
}

impl Default for LinkView {
    fn default() -> Self {
        Self {
            state: ApiLinkState::Unknown,
            srtt_us: None,
            owd_us: None,
            loss: None,
        }
    }
}

fn rank(s: ApiLinkState) -> u8 {
    match s {
        ApiLinkState::Unknown => 0,
        ApiLinkState::Up => 1,
        ApiLinkState::Degraded => 2,
        ApiLinkState::Down => 3,
    }
}

impl LinkView {
    fn of(l: &LinkStats) -> Self {
        let measured = l.replies > 0;
        Self {
            state: match l.state {
                LinkState::Up => ApiLinkState::Up,
                LinkState::Degraded => ApiLinkState::Degraded,
                LinkState::Down => ApiLinkState::Down,
            },
            srtt_us: measured.then(|| duration_us(l.srtt)),
            owd_us: measured.then(|| duration_us(l.owd)),
            loss: (l.probes_sent > 0).then_some(l.loss),
        }
    }

    fn worst(self, other: Self) -> Self {
        let max_opt = |a: Option<u64>, b: Option<u64>| a.max(b);
        Self {
            state: if rank(other.state) > rank(self.state) {
                other.state
            } else {
                self.state
            },
            srtt_us: max_opt(self.srtt_us, other.srtt_us),
            owd_us: max_opt(self.owd_us, other.owd_us),
            loss: match (self.loss, other.loss) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
        }
    }
}

fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// One NIC's counters summed over the workers.
#[derive(Clone, Copy, Debug, Default)]
struct NicTotals {
    tx_packets: u64,
    tx_bytes: u64,
    rx_packets: u64,
    rx_bytes: u64,
    capacity_bps: u64,
    flows: u64,
    open: bool,
    seen: bool,
    link: Option<LinkView>,
}

impl NicTotals {
    fn add(&mut self, n: &braid_io::dataplane::NicSnapshot) {
        let e = &n.engine;
        self.tx_packets = self.tx_packets.saturating_add(e.tx_packets_count);
        self.tx_bytes = self.tx_bytes.saturating_add(e.tx_bytes_count);
        self.rx_packets = self.rx_packets.saturating_add(e.rx_packets_count);
        self.rx_bytes = self.rx_bytes.saturating_add(e.rx_bytes_count);
        self.capacity_bps = self.capacity_bps.saturating_add(e.capacity_bps);
        self.flows += u64::from(n.flows);
        self.open = n.open && (self.open || !self.seen);
        self.seen = true;
        if let Some(l) = &n.link {
            let v = LinkView::of(l);
            self.link = Some(self.link.map_or(v, |w| w.worst(v)));
        }
    }
}

/// `count` over `ns` as a rate per second (0 for an empty interval).
fn per_second(count: u64, ns: u64) -> u64 {
    if ns == 0 {
        return 0;
    }
    u64::try_from(u128::from(count) * 1_000_000_000 / u128::from(ns)).unwrap_or(u64::MAX)
}

impl Control {
    /// `GET /v1/stats` from the workers' snapshots `snaps` (in worker order) and the last
    /// two samples, older first (module doc, "Stats").
    fn stats_of(&self, snaps: &[Snapshot], samples: (Option<Sample>, Option<Sample>)) -> Stats {
        let (prev, last) = samples;
        let interval_ns = match (&prev, &last) {
            (Some(p), Some(l)) => l.at_ns.saturating_sub(p.at_ns),
            _ => 0,
        };
        let mut stats = Stats {
            interval_ms: interval_ns / 1_000_000,
            ..Stats::default()
        };
        let mut drops: BTreeMap<String, u64> = BTreeMap::new();
        let mut reorder = ReorderStats::default();
        let mut reassembly = ReassemblyStats::default();
        let mut flows = FlowCounts::default();
        for s in snaps {
            let e = &s.engine;
            stats.tx_packets += e.tx_packets_count;
            stats.tx_bytes += e.tx_bytes_count;
            stats.rx_delivered_packets += e.rx_delivered_count;
            stats.rx_delivered_bytes += e.rx_delivered_bytes;
            reorder.held_now += e.rx_reorder_held_count;
            reorder.held_bytes += e.rx_reorder_held_bytes;
            reorder.reordered += e.rx_reordered_count;
            reorder.gaps += e.rx_gap_count;
            reorder.gap_seqs += e.rx_gap_seqs_count;
            reorder.max_hold_us = reorder.max_hold_us.max(e.rx_max_hold_ns / 1_000);
            reassembly.completed += s.reassembly.datagrams_completed;
            reassembly.dropped += s.reassembly.datagrams_dropped;
            reassembly.held_bytes += s.reassembly.bytes_held as u64;
            flows.tx += s.flows.0 as u64;
            flows.rx += s.flows.1 as u64;
            for (label, count) in &s.drops {
                *drops.entry((*label).to_owned()).or_default() += count;
            }
        }
        // Percentiles over the interval of the rates: the difference of the two samples.
        let latency = match (&prev, &last) {
            (Some(p), Some(l)) => Some((&p.latency, &l.latency)),
            _ => None,
        };
        let nic_percentiles =
            |i: usize, pick: fn(&(LatencyHistogram, LatencyHistogram)) -> &LatencyHistogram| {
                let (p, l) = latency?;
                percentiles(&pick(l.nics.get(i)?).since(pick(p.nics.get(i)?)))
            };
        for (i, n) in self.nics.iter().enumerate() {
            let mut link: Option<LinkView> = None;
            for l in snaps.iter().filter_map(|s| nic_of(s, n.id)?.link.as_ref()) {
                let v = LinkView::of(l);
                link = Some(link.map_or(v, |w| w.worst(v)));
            }
            let link = link.unwrap_or_default();
            let delta = |c: usize| match (&prev, &last) {
                (Some(p), Some(l)) => {
                    let at = |s: &Sample| s.nics.get(i).map_or(0, |v| v[c]);
                    at(l).saturating_sub(at(p))
                }
                _ => 0,
            };
            stats.nics.push(NicStats {
                name: n.name.clone(),
                tx_bps: per_second(delta(0).saturating_mul(8), interval_ns),
                rx_bps: per_second(delta(2).saturating_mul(8), interval_ns),
                tx_pps: per_second(delta(1), interval_ns),
                rx_pps: per_second(delta(3), interval_ns),
                srtt_us: link.srtt_us,
                owd_us: link.owd_us,
                loss_ratio: link.loss,
                rtt_percentiles: nic_percentiles(i, |h| &h.0),
                delay_variation_percentiles: nic_percentiles(i, |h| &h.1),
            });
        }
        stats.flows = flows;
        stats.top_flows = top_flows(snaps);
        reorder.hold_percentiles =
            latency.and_then(|(p, l)| percentiles(&l.reorder_hold.since(&p.reorder_hold)));
        stats.reorder = reorder;
        stats.reassembly = reassembly;
        stats.drops = drops;
        stats
    }
}

impl Daemon for Control {
    fn nics(&self) -> Result<Vec<Nic>, DaemonError> {
        let snaps = self.snapshots_or_unavailable()?;
        let settings = lock(&self.settings).clone();
        Ok(self
            .nics
            .iter()
            .zip(settings)
            .map(|(n, s)| self.nic_view(n, s, &snaps))
            .collect())
    }

    fn update_nic(&self, name: &str, update: &NicUpdate) -> Result<Nic, DaemonError> {
        let n = self.nic_by_name(name)?;
        let i = usize::from(n.id.0);
        // NIC changes one at a time, and not in the middle of a share round.
        let mut shares = lock(&self.shares);
        let mut settings = lock(&self.settings);
        let before = settings[i];
        let k = self.workers.len();
        let nic = n.id;
        if update.admin == Some(AdminState::Down)
            && before.up
            && !settings.iter().enumerate().any(|(j, s)| j != i && s.up)
        {
            return Err(DaemonError::Refused {
                reason: format!("{name} is the last NIC in use; its flows have nowhere to go"),
            });
        }
        if let Some(capacity) = update.capacity_bps {
            // Each worker's share now, to go back to: the share rounds' (they hold it, and
            // none runs while `shares` is held), or for an `auto` NIC its estimate.
            let snaps = self.snapshots_or_unavailable()?;
            let old: Vec<u64> =
                (0..k)
                    .map(|j| {
                        let estimate = snaps.get(j).and_then(|s| nic_of(s, nic));
                        match estimate {
                            Some(e) if n.capacity_auto => e.engine.capacity_bps,
                            _ => shares.shares(j).get(i).copied().unwrap_or_else(|| {
                                CapacityShares::equal_share(before.capacity_bps, k)
                            }),
                        }
                    })
                    .collect();
            let share = CapacityShares::equal_share(capacity, k);
            self.on_every_worker(
                &format!("capacity of {name}"),
                |_| Command::SetNicCapacity {
                    nic,
                    capacity_bps: share,
                },
                |j| Command::SetNicCapacity {
                    nic,
                    capacity_bps: old[j],
                },
            )?;
            if let Some(up) = update.admin.map(|a| a == AdminState::Up)
                && let Err(e) = self.on_every_worker(
                    &format!("admin state of {name}"),
                    |_| Command::SetNicAdmin { nic, up },
                    |_| Command::SetNicAdmin { nic, up: before.up },
                )
            {
                // The capacity goes back too: one change, all or nothing.
                self.on_every_worker(
                    &format!("capacity of {name} (undo)"),
                    |j| Command::SetNicCapacity {
                        nic,
                        capacity_bps: old[j],
                    },
                    |_| Command::SetNicCapacity {
                        nic,
                        capacity_bps: share,
                    },
                )
                .unwrap_or_else(|u| tracing::error!(error = %u, "cannot undo a capacity change"));
                return Err(e);
            }
            shares.set_capacity(i, capacity);
            settings[i].capacity_bps = capacity;
        } else if let Some(up) = update.admin.map(|a| a == AdminState::Up) {
            self.on_every_worker(
                &format!("admin state of {name}"),
                |_| Command::SetNicAdmin { nic, up },
                |_| Command::SetNicAdmin { nic, up: before.up },
            )?;
        }
        if let Some(admin) = update.admin {
            settings[i].up = admin == AdminState::Up;
        }
        let after = settings[i];
        drop(settings);
        drop(shares);
        tracing::info!(nic = %name, capacity_bps = after.capacity_bps, up = after.up,
            "NIC changed through the REST API");
        let snaps = self.snapshots_or_unavailable()?;
        Ok(self.nic_view(n, after, &snaps))
    }

    fn vnics(&self) -> Result<Vec<Vnic>, DaemonError> {
        let snaps = self.snapshots_or_unavailable()?;
        let plan = lock(&self.in_force);
        let v = &plan.file.vnic;
        let queues = snaps
            .iter()
            .enumerate()
            .map(|(k, s)| {
                let mut q = VnicQueue {
                    queue: u16::try_from(k).unwrap_or(u16::MAX),
                    rx_packets: 0,
                    rx_bytes: 0,
                    tx_packets: 0,
                    tx_bytes: 0,
                    drops: s.deliver_unqueued,
                };
                for (t, _) in &s.vnic_queues {
                    q.rx_packets += t.rx_packets;
                    q.rx_bytes += t.rx_bytes;
                    q.tx_packets += t.tx_packets;
                    q.tx_bytes += t.tx_bytes;
                    q.drops += t.tx_drop_queue_full
                        + t.tx_drop_too_big
                        + t.tx_drop_closed
                        + t.tx_errors
                        + t.rx_errors
                        + t.rx_drop_batch_full
                        + t.rx_drop_truncated;
                }
                q
            })
            .collect();
        let qos = plan
            .qos
            .classes
            .iter()
            .map(|c| {
                let mut status = QosClassStatus {
                    id: c.id.0,
                    name: plan
                        .qos_names
                        .get(usize::from(c.id.0))
                        .cloned()
                        .unwrap_or_default(),
                    strict: matches!(c.kind, ClassKind::Strict { .. }),
                    weight: match c.kind {
                        ClassKind::Weighted { weight } => Some(weight),
                        ClassKind::Strict { .. } => None,
                    },
                    queue_packets: c.queue_packets,
                    queue_bytes: c.queue_bytes,
                    green: 0,
                    yellow: 0,
                    red: 0,
                    dropped_red: 0,
                };
                for m in snaps
                    .iter()
                    .flat_map(|s| &s.vnic_qos)
                    .filter(|m| m.class == c.id)
                {
                    status.green += m.stats.green_count;
                    status.yellow += m.stats.yellow_count;
                    status.red += m.stats.red_count;
                    status.dropped_red += m.stats.drop_red_count;
                }
                status
            })
            .collect();
        Ok(vec![Vnic {
            name: v.name.clone(),
            kind: match v.kind {
                crate::config::VnicKindName::Tun => VnicKind::Tun,
                crate::config::VnicKindName::Tap => VnicKind::Tap,
            },
            mtu: v.mtu,
            addresses: v.addresses.clone(),
            queues,
            rss: self.vnic.rss.clone(),
            qos,
        }])
    }

    fn stats(&self) -> Result<Stats, DaemonError> {
        let snaps = self.snapshots_or_unavailable()?;
        let samples = lock(&self.samples).clone();
        Ok(self.stats_of(&snaps, samples))
    }

    fn latency_histograms(&self) -> Result<braid_control::metrics::LatencyHistograms, DaemonError> {
        let snaps = self.snapshots_or_unavailable()?;
        let latency = Latency::of(&snaps, &self.nics);
        let per_nic = |pick: fn(&(LatencyHistogram, LatencyHistogram)) -> &LatencyHistogram| {
            self.nics
                .iter()
                .zip(&latency.nics)
                .map(|(n, h)| (n.name.clone(), prometheus_histogram(pick(h))))
                .collect()
        };
        Ok(braid_control::metrics::LatencyHistograms {
            nic_rtt: per_nic(|h| &h.0),
            nic_delay_variation: per_nic(|h| &h.1),
            reorder_hold: Some(prometheus_histogram(&latency.reorder_hold)),
        })
    }

    fn flows(&self, query: &FlowQuery) -> Result<FlowPage, DaemonError> {
        let names = self.flow_names();
        // Filters the engines can apply; a NIC or class no one has matches no flow.
        let nic = match &query.nic {
            Some(name) => match self.nics.iter().find(|n| &n.name == name) {
                Some(n) => Some(n.id),
                None => return Ok(FlowPage::default()),
            },
            None => None,
        };
        let class = match &query.class {
            Some(name) => match names.classes.iter().position(|c| c == name) {
                Some(c) => Some(c),
                None => return Ok(FlowPage::default()),
            },
            None => None,
        };
        let mut local = EngineFlowQuery {
            direction: query.direction.map(engine_direction),
            nic,
            class,
            protocol: query.protocol,
            address: query.address,
            port: query.port,
            after: None,
            limit: query.limit,
        };
        // Global ids sort by worker first: ask the workers in order, from the cursor's,
        // until one page and one more flow are in hand.
        let first = query.after.map_or(0, |a| FlowRef::of(a).worker);
        let mut rows = Vec::new();
        for (k, w) in self.workers.iter().enumerate().skip(first) {
            local.after = query
                .after
                .map(FlowRef::of)
                .filter(|a| a.worker == k)
                .map(|a| EngineFlowCursor {
                    direction: a.direction,
                    id: a.id,
                });
            let page = w.flows(local).ok_or_else(|| DaemonError::Unavailable {
                detail: format!("worker {k} did not give its flow table within a second"),
            })?;
            rows.extend(page.iter().map(|r| flow_of(k, r, &names, &self.nics)));
            if rows.len() > query.limit {
                break;
            }
        }
        Ok(query.page(rows))
    }

    fn flow(&self, id: u64) -> Result<Flow, DaemonError> {
        let r = FlowRef::of(id);
        let not_found = || DaemonError::NotFound {
            what: format!("no flow has id {id} (or it expired)"),
        };
        let w = self.workers.get(r.worker).ok_or_else(not_found)?;
        let row = w
            .flow(r.direction, r.id)
            .ok_or_else(|| DaemonError::Unavailable {
                detail: format!("worker {} did not answer within a second", r.worker),
            })?
            .ok_or_else(not_found)?;
        Ok(flow_of(r.worker, &row, &self.flow_names(), &self.nics))
    }

    fn move_flow(&self, id: u64, request: &FlowMove) -> Result<Flow, DaemonError> {
        let nic = self
            .nics
            .iter()
            .find(|n| n.name == request.nic)
            .ok_or_else(|| DaemonError::Invalid {
                field: "nic".into(),
                reason: format!(
                    "no NIC is named {:?} (there are {:?})",
                    request.nic,
                    self.nics
                        .iter()
                        .map(|n| n.name.as_str())
                        .collect::<Vec<_>>()
                ),
            })?;
        let r = FlowRef::of(id);
        let not_found = || DaemonError::NotFound {
            what: format!("no flow has id {id} (or it expired)"),
        };
        let w = self.workers.get(r.worker).ok_or_else(not_found)?;
        if r.direction == EngineFlowDirection::Rx {
            // Only when it exists: an unknown id is a 404 whatever its direction bit.
            self.flow(id)?;
            return Err(DaemonError::Refused {
                reason: format!(
                    "flow {id} is an RX flow; only TX flows are placed on NICs (the sender \
                     places it)"
                ),
            });
        }
        let command = Command::MoveFlow {
            flow: r.id,
            nic: nic.id,
            pin: request.pin,
        };
        match w.apply(command) {
            Some(Ok(())) => {}
            Some(Err(braid_core::engine::CommandError::UnknownFlow(_))) => return Err(not_found()),
            Some(Err(e)) => {
                return Err(DaemonError::Refused {
                    reason: e.to_string(),
                });
            }
            None => {
                return Err(DaemonError::Unavailable {
                    detail: format!("worker {} did not answer within a second", r.worker),
                });
            }
        }
        tracing::info!(flow = id, nic = %nic.name, pin = request.pin,
            "flow moved through the REST API");
        self.flow(id)
    }

    fn policies(&self) -> Result<PolicyDocument, DaemonError> {
        Ok(document_of(&lock(&self.in_force).file))
    }

    fn replace_policies(&self, document: PolicyDocument) -> Result<PolicyDocument, DaemonError> {
        let mut in_force = lock(&self.in_force);
        let file = with_document(&in_force.file, &document);
        let plan = file.check().map_err(|e| invalid(&e))?;
        let room = self.fragments_room;
        if document.reassembly.max_fragments > room {
            // The engines would refuse it (their room for fragment ranges is allocated at
            // start): say so here, naming the field, before any worker is asked.
            return Err(DaemonError::Invalid {
                field: "reassembly.max_fragments".into(),
                reason: format!(
                    "{} is above {room}, the most the reassemblers have room for since braid \
                     started (the larger of 64 and the value at start): a larger value needs \
                     a restart with it in the config file (or the policies file)",
                    document.reassembly.max_fragments
                ),
            });
        }
        let changed = document_of(&in_force.file).changed_sections(&document);
        self.put_in_force(&mut in_force, plan).map_err(|e| {
            // Applied but not persisted is not a refusal: the client must not read "the
            // old state is in force" (a 500, the details in the log).
            if e.downcast_ref::<InForceNotPersisted>().is_some() {
                DaemonError::Internal {
                    detail: format!("{e:#}"),
                }
            } else {
                DaemonError::Refused {
                    reason: format!("{e:#}"),
                }
            }
        })?;
        tracing::info!(
            changed = ?changed.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            "policies replaced through the REST API"
        );
        Ok(document_of(&in_force.file))
    }
}

/// The busiest flows of every worker (each engine's rate scan ranks all of its flows,
/// `braid_core::engine::TopFlows`), merged: at most `braid_core::engine::TOP_FLOWS`,
/// busiest first, ties by global id. `snaps` are in worker order.
fn top_flows(snaps: &[Snapshot]) -> Vec<FlowRate> {
    let mut top: Vec<FlowRate> = snaps
        .iter()
        .enumerate()
        .flat_map(|(k, s)| {
            s.engine.top_flows.as_slice().iter().map(move |r| FlowRate {
                id: FlowRef {
                    worker: k,
                    direction: r.direction,
                    id: r.id,
                }
                .global(),
                direction: api_direction(r.direction),
                rate_bps: r.rate_bps,
            })
        })
        .collect();
    top.sort_unstable_by(|a, b| b.rate_bps.cmp(&a.rate_bps).then(a.id.cmp(&b.id)));
    top.truncate(braid_core::engine::TOP_FLOWS);
    top
}

/// A flow's id across the workers: `worker << 33 | direction << 32 | id` (engine/flows.rs's
/// suggestion), so ids sort by worker, then TX before RX, then by the engine's id, and the
/// id of a flow says which worker's table it is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FlowRef {
    worker: usize,
    direction: EngineFlowDirection,
    id: braid_core::FlowId,
}

impl FlowRef {
    fn of(global: u64) -> Self {
        Self {
            worker: usize::try_from(global >> 33).unwrap_or(usize::MAX),
            direction: if global >> 32 & 1 == 0 {
                EngineFlowDirection::Tx
            } else {
                EngineFlowDirection::Rx
            },
            id: braid_core::FlowId(u32::try_from(global & 0xffff_ffff).unwrap_or(u32::MAX)),
        }
    }

    fn global(self) -> u64 {
        let direction = match self.direction {
            EngineFlowDirection::Tx => 0,
            EngineFlowDirection::Rx => 1,
        };
        (self.worker as u64) << 33 | direction << 32 | u64::from(self.id.0)
    }
}

/// The names a flow row refers to by index, from the plan in force.
struct FlowNames {
    classes: Vec<String>,
    qos: Vec<String>,
    default_policy: PolicyName,
}

impl Control {
    fn flow_names(&self) -> FlowNames {
        let plan = lock(&self.in_force);
        FlowNames {
            classes: plan.file.classes.iter().map(|c| c.name.clone()).collect(),
            qos: plan.qos_names.clone(),
            default_policy: plan.file.policy.default,
        }
    }
}

/// The engine's flow direction in the API's terms.
fn api_direction(d: EngineFlowDirection) -> FlowDirection {
    match d {
        EngineFlowDirection::Tx => FlowDirection::Tx,
        EngineFlowDirection::Rx => FlowDirection::Rx,
    }
}

/// The API's flow direction in the engine's terms.
fn engine_direction(d: FlowDirection) -> EngineFlowDirection {
    match d {
        FlowDirection::Tx => EngineFlowDirection::Tx,
        FlowDirection::Rx => EngineFlowDirection::Rx,
    }
}

fn policy_name(p: ClassPolicy) -> PolicyName {
    match p {
        ClassPolicy::Pin => PolicyName::Pin,
        ClassPolicy::Stripe => PolicyName::Stripe,
        ClassPolicy::Duplicate => PolicyName::Duplicate,
    }
}

/// Worker `worker`'s flow row as the API's flow. An RX row has no striping policy of its
/// own (the sender chose it): it shows the local default, and until its first delivered
/// packet its addresses are empty and its protocol 0.
fn flow_of(worker: usize, r: &FlowRow, names: &FlowNames, nics: &[NicInfo]) -> Flow {
    let key = r.key.as_ref();
    Flow {
        id: FlowRef {
            worker,
            direction: r.direction,
            id: r.id,
        }
        .global(),
        direction: api_direction(r.direction),
        protocol: key.map_or(0, |k| k.protocol),
        src: key.map_or_else(String::new, |k| k.src.to_string()),
        dst: key.map_or_else(String::new, |k| k.dst.to_string()),
        src_port: key.map_or(0, |k| k.src_port),
        dst_port: key.map_or(0, |k| k.dst_port),
        dscp: key.and_then(|k| k.dscp),
        class: r
            .class_name
            .as_deref()
            .map(str::to_owned)
            .or_else(|| r.class.and_then(|c| names.classes.get(c).cloned())),
        qos_class: r
            .qos_class
            .and_then(|c| names.qos.get(usize::from(c.0)).cloned()),
        policy: r.policy.map_or(names.default_policy, policy_name),
        nics: nics
            .iter()
            .filter(|n| r.nics.contains(n.id))
            .map(|n| n.name.clone())
            .collect(),
        pinned: r.pinned,
        rate_bps: r.rate_bps.unwrap_or(0),
        packets: r.packets,
        bytes: r.bytes,
        idle_ms: r.idle_ns / 1_000_000,
    }
}

/// The policy sections of `file` as the API's document (the same types: one schema).
pub(crate) fn document_of(file: &Config) -> PolicyDocument {
    PolicyDocument {
        rules: file.rules.clone(),
        qos: file.qos.clone(),
        tunnels: file.tunnels.clone(),
        policy: file.policy.clone(),
        reorder: file.reorder.clone(),
        fragmentation: file.fragmentation.clone(),
        reassembly: file.reassembly.clone(),
    }
}

/// `file` with `document`'s policy sections in place of its own (not checked yet).
fn with_document(file: &Config, document: &PolicyDocument) -> Config {
    let PolicyDocument {
        rules,
        qos,
        tunnels,
        policy,
        reorder,
        fragmentation,
        reassembly,
    } = document.clone();
    Config {
        rules,
        qos,
        tunnels,
        policy,
        reorder,
        fragmentation,
        reassembly,
        ..file.clone()
    }
}

/// A config error (`rules[0] ("feed").qos: no QoS class is named "gold"`) as the API's
/// `Invalid`: the field as a path in the document (`rules[0].qos`; the rule's name in
/// parentheses is left out) and the reason. An error that is not `path: reason` (two rules
/// in conflict) names its first path and keeps its whole text.
fn invalid(e: &anyhow::Error) -> DaemonError {
    const SECTIONS: [&str; 13] = [
        "rules",
        "qos",
        "tunnels",
        "policy",
        "reorder",
        "fragmentation",
        "reassembly",
        "classes",
        "nics",
        "vnic",
        "peer",
        "daemon",
        "api",
    ];
    let text = format!("{e:#}");
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']');
    let mut field = String::new();
    let mut rest = text.as_str();
    let whole = loop {
        if let Some(reason) = rest.strip_prefix(": ") {
            break Some(reason);
        }
        if let Some(name) = rest.strip_prefix(" (\"") {
            match name.find("\")") {
                Some(end) => {
                    rest = &name[end + 2..];
                    continue;
                }
                None => break None,
            }
        }
        match rest.chars().next() {
            Some(c) if is_path_char(c) => {
                field.push(c);
                rest = &rest[c.len_utf8()..];
            }
            _ => break None,
        }
    };
    let section = field.split(['.', '[']).next().unwrap_or_default();
    if !SECTIONS.contains(&section) {
        return DaemonError::Invalid {
            field: "policies".into(),
            reason: text,
        };
    }
    match whole {
        Some(reason) => DaemonError::Invalid {
            field,
            reason: reason.to_owned(),
        },
        None => DaemonError::Invalid {
            field,
            reason: text,
        },
    }
}

/// At start: the policies file's sections, if there is one, in place of the config file's,
/// every section (the policies file is what the REST API or a SIGHUP last put in force),
/// checked as the config is.
///
/// # Errors
/// A policies file that cannot be read or is not a valid document, or whose policies do not
/// pass the config's checks: naming the file and the field.
pub(crate) fn with_persisted(plan: Plan, path: &Path) -> Result<Plan> {
    let Some(document) = persist::read(path)? else {
        tracing::info!(file = %path.display(),
            "no policies file yet: the config file's policies are in force");
        return Ok(plan);
    };
    let changed = document_of(&plan.file).changed_sections(&document);
    let file = with_document(&plan.file, &document)
        .check()
        .with_context(|| format!("in policies file {}", path.display()))?;
    tracing::info!(file = %path.display(),
        replaced = ?changed.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "the policies file's sections replace the config file's (those listed differ)");
    Ok(file)
}

/// The REST API's settings for braid-control, from `[api]`.
fn control_config(api: &ApiSection) -> Result<braid_control::ControlConfig> {
    let listen: SocketAddr = api
        .listen
        .parse()
        .with_context(|| format!("api.listen: {:?} is not an address and port", api.listen))?;
    let mut cfg = braid_control::ControlConfig::new(api.token_file.clone(), api.audit_log());
    cfg.listen = listen;
    cfg.auth_failure_burst = api.auth_failure_burst;
    cfg.auth_failure_refill_ms = api.auth_failure_refill_ms;
    Ok(cfg)
}

/// The control thread: braid-control's router on a current-thread tokio runtime (its
/// blocking pool runs the daemon calls). [`ApiServer::stop`] ends it.
#[derive(Debug)]
pub(crate) struct ApiServer {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: mpsc::Receiver<()>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The address it listens on.
    pub(crate) listen: SocketAddr,
}

/// Open the token file and the audit log, bind the listening socket and start the control
/// thread.
///
/// # Errors
/// The state directory cannot be made, the token file is refused (its mode, owner, content),
/// the audit log cannot be opened, the address cannot be bound: each naming `api.<field>`.
pub(crate) fn serve(api: &ApiSection, daemon: Arc<Control>) -> Result<ApiServer> {
    let config = control_config(api)?;
    if api.audit_log.is_none() || api.policies_file.is_none() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&api.state_dir)
            .with_context(|| format!("api.state_dir: cannot create {}", api.state_dir.display()))?;
    }
    let state = braid_control::ApiState::open(&config, daemon).map_err(|e| {
        let field = match e {
            braid_control::SetupError::Token(_) => "token_file",
            braid_control::SetupError::Audit(_) => "audit_log",
            _ => "listen",
        };
        anyhow::Error::new(e).context(format!("api.{field}"))
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("braid-api-blocking")
        .build()
        .context("cannot start the REST API's runtime")?;
    let listener = runtime
        .block_on(braid_control::bind(&config))
        .context("api.listen")?;
    let listen = listener.local_addr().context("api.listen")?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (done_tx, done) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("braid-api".into())
        .spawn(move || {
            let router = braid_control::router(state);
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = runtime.block_on(braid_control::serve(listener, router, shutdown)) {
                tracing::error!(error = %e, "the REST API stopped");
            }
            // Daemon calls still running on the blocking pool get a moment to finish.
            runtime.shutdown_timeout(Duration::from_secs(2));
            let _ = done_tx.send(());
        })
        .context("cannot start the REST API's thread")?;
    Ok(ApiServer {
        stop: Some(stop),
        done,
        thread: Some(thread),
        listen,
    })
}

impl ApiServer {
    /// Stop serving: finish the requests in flight (up to 5 s), then end the thread.
    pub(crate) fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.done.recv_timeout(Duration::from_secs(5)) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
                tracing::info!("REST API stopped");
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                tracing::warn!("the REST API did not stop within 5 s; leaving it");
            }
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// The RSS info of the vNIC for the API: none with one queue.
pub(crate) fn rss_info(rss: &braid_core::rss::Rss) -> Option<RssInfo> {
    (rss.queues() > 1).then(|| RssInfo {
        key: rss
            .key()
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        indirection: rss.indirection().to_vec(),
    })
}

#[cfg(test)]
mod tests;
