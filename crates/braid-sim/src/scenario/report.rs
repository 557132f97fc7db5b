//! The end-of-run report: per link, per flow, reorder, failure detection and drops.

use core::fmt;
use core::time::Duration;

use braid_core::engine::EngineStats;
use braid_core::{DropCounters, Instant};

use super::app::ScenarioHost;
use super::{PolicySpec, Scenario, TrafficSpec};
use crate::link::{Direction, LinkStats};
use crate::sim::Sim;
use crate::stats::LatencySummary;

/// One link in the report (direction A→B, where the application traffic goes).
#[derive(Clone, Debug)]
pub struct LinkReport {
    /// Link name.
    pub name: String,
    /// Line rate in Mbit/s.
    pub rate_mbps: f64,
    /// Fraction of the run the A→B transmitter was busy.
    pub utilisation: f64,
    /// The simulator's counters for A→B.
    pub stats: LinkStats,
    /// Datagrams the receiver completed from this link's packets: for a duplicated flow,
    /// how often this link's copy won.
    pub first_arrivals: u64,
    /// Scheduled failures (ms) and when host A's engine declared the link down, in ms after
    /// each failure (`None`: not detected before the next event or the end).
    pub detections: Vec<(f64, Option<f64>)>,
}

/// One application flow in the report.
#[derive(Clone, Debug)]
pub struct FlowReport {
    /// Flow name.
    pub name: String,
    /// Its policy.
    pub policy: PolicySpec,
    /// Its traffic.
    pub traffic: TrafficSpec,
    /// Packets the source handed to braid.
    pub sent: u64,
    /// Packets braid refused at the source.
    pub refused: u64,
    /// Packets delivered.
    pub delivered: u64,
    /// Sequences never delivered below the highest delivered one (holes: lost or given up).
    /// Packets in flight when the run stopped are `sent - delivered - missing`.
    pub missing: u64,
    /// Delivered out of order (must be 0).
    pub out_of_order: u64,
    /// Delivered with wrong bytes (must be 0).
    pub corrupt: u64,
    /// Goodput in Mbit/s (IP bytes delivered over the time between first and last delivery).
    pub goodput_mbps: f64,
    /// Latency from the source's send to delivery.
    pub latency: LatencySummary,
}

/// What a scenario run produced.
#[derive(Clone, Debug)]
pub struct Report {
    /// Scenario name.
    pub name: String,
    /// Seed used.
    pub seed: u64,
    /// Simulated time.
    pub duration: Duration,
    /// Per link.
    pub links: Vec<LinkReport>,
    /// Per flow.
    pub flows: Vec<FlowReport>,
    /// Sender engine counters.
    pub sender: EngineStats,
    /// Receiver engine counters.
    pub receiver: EngineStats,
    /// Drops of both engines, by reason.
    pub drops: DropCounters,
    /// Reassembly: datagrams completed at the receiver.
    pub reassembled: u64,
}

impl Report {
    pub(super) fn build(s: &Scenario, sim: &Sim<ScenarioHost, ScenarioHost>) -> Self {
        let a = sim.a();
        let b = sim.b();
        let duration = s.duration();
        let links = s
            .links
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let stats = *sim.link_stats(i, Direction::AToB);
                let utilisation = stats.busy_ns as f64 / duration.as_nanos().max(1) as f64;
                let failures: Vec<f64> = l
                    .events
                    .iter()
                    .filter(|e| e.action == super::LinkActionSpec::Down)
                    .map(|e| e.at_ms)
                    .collect();
                // A failure counts as detected by the first Down event after it and before
                // the link's next scheduled event.
                let mut events: Vec<f64> = l.events.iter().map(|e| e.at_ms).collect();
                events.sort_by(f64::total_cmp);
                let detections = failures
                    .iter()
                    .map(|&f| {
                        let at = Instant::ZERO + super::ms(f);
                        let until = events
                            .iter()
                            .find(|&&e| e > f)
                            .map_or(Instant::MAX, |&e| Instant::ZERO + super::ms(e));
                        let found = a.down_at[i].iter().find(|&&t| t >= at && t < until);
                        (f, found.map(|&t| (t - at).as_secs_f64() * 1e3))
                    })
                    .collect();
                let nic = braid_core::NicId(u8::try_from(i).unwrap_or(u8::MAX));
                LinkReport {
                    name: l.name.clone(),
                    rate_mbps: l.rate_mbps,
                    utilisation,
                    stats,
                    first_arrivals: b.engine.nic_stats(nic).map_or(0, |c| c.rx_first_count),
                    detections,
                }
            })
            .collect();
        let flows = s
            .flows
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let rx = &b.flows[i];
                let tx = &a.flows[i];
                let active = match (rx.first_rx, rx.last_rx) {
                    (Some(x), Some(y)) if y > x => (y - x).as_secs_f64(),
                    _ => 0.0,
                };
                FlowReport {
                    name: f.name.clone(),
                    policy: f.policy,
                    traffic: f.traffic,
                    sent: tx.sent,
                    refused: tx.refused,
                    delivered: rx.packets,
                    missing: rx.missing,
                    out_of_order: rx.out_of_order,
                    corrupt: rx.corrupt,
                    goodput_mbps: if active > 0.0 {
                        rx.bytes as f64 * 8.0 / active / 1e6
                    } else {
                        0.0
                    },
                    latency: rx.latency.summary(),
                }
            })
            .collect();
        let mut drops = a.engine.stats().drops.clone();
        drops.merge(&b.engine.stats().drops);
        Self {
            name: s.name.clone(),
            seed: s.seed,
            duration,
            links,
            flows,
            sender: a.engine.stats().clone(),
            receiver: b.engine.stats().clone(),
            drops,
            reassembled: b.engine.reassembly_stats().datagrams_completed,
        }
    }

    /// The flow named `name`.
    #[must_use]
    pub fn flow(&self, name: &str) -> Option<&FlowReport> {
        self.flows.iter().find(|f| f.name == name)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "\nbraid demo: scenario \"{}\", seed {}, {:.0} ms simulated\n",
            self.name,
            self.seed,
            self.duration.as_secs_f64() * 1e3
        )?;
        writeln!(
            f,
            "links (A -> B; won = datagrams the receiver completed from this link first)"
        )?;
        writeln!(
            f,
            "  {:<12} {:>9} {:>6} {:>10} {:>10} {:>9} {:>9} {:>9}  failure detected after",
            "link", "Mbit/s", "util", "packets", "won", "lost", "down-lost", "q-drops"
        )?;
        for l in &self.links {
            let det: Vec<String> = l
                .detections
                .iter()
                .map(|(at, d)| match d {
                    Some(ms) => format!("{ms:.1} ms (failed at {at:.0} ms)"),
                    None => format!("not detected (failed at {at:.0} ms)"),
                })
                .collect();
            writeln!(
                f,
                "  {:<12} {:>9.0} {:>5.1}% {:>10} {:>10} {:>9} {:>9} {:>9}  {}",
                l.name,
                l.rate_mbps,
                l.utilisation * 100.0,
                l.stats.packets_sent,
                l.first_arrivals,
                l.stats.lost_random,
                l.stats.lost_down,
                l.stats.queue_drops,
                if det.is_empty() {
                    "-".into()
                } else {
                    det.join(", ")
                }
            )?;
        }
        writeln!(f, "\nflows (A -> B)")?;
        writeln!(
            f,
            "  {:<14} {:<9} {:>9} {:>9} {:>7} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "flow",
            "policy",
            "sent",
            "delivered",
            "missing",
            "order",
            "Mbit/s",
            "p50 us",
            "p99 us",
            "p99.9 us",
            "max us"
        )?;
        for fl in &self.flows {
            writeln!(
                f,
                "  {:<14} {:<9} {:>9} {:>9} {:>7} {:>5} {:>9.1} {:>9.0} {:>9.0} {:>9.0} {:>9.0}",
                fl.name,
                format!("{:?}", fl.policy).to_lowercase(),
                fl.sent,
                fl.delivered,
                fl.missing,
                if fl.out_of_order == 0 && fl.corrupt == 0 {
                    "ok".to_string()
                } else {
                    format!("BAD:{}/{}", fl.out_of_order, fl.corrupt)
                },
                fl.goodput_mbps,
                fl.latency.p50_us,
                fl.latency.p99_us,
                fl.latency.p999_us,
                fl.latency.max_us
            )?;
        }
        let r = &self.receiver;
        let s = &self.sender;
        writeln!(
            f,
            "\nscheduler (sender): {} whole, {} split, {} duplicated",
            s.tx_whole_count, s.tx_split_count, s.tx_duplicate_count
        )?;
        writeln!(
            f,
            "reorder (receiver): {} released after a hold, longest hold {:.2} ms, {} gaps ({} sequences given up), {} reassembled",
            r.rx_reordered_count,
            r.rx_max_hold_ns as f64 / 1e6,
            r.rx_gap_count,
            r.rx_gap_seqs_count,
            self.reassembled
        )?;
        writeln!(f, "\ndrops by reason (both engines)")?;
        if self.drops.total() == 0 {
            writeln!(f, "  none")?;
        }
        for (reason, n) in self.drops.nonzero() {
            writeln!(f, "  {:<32} {n:>10}", reason.label())?;
        }
        writeln!(f)
    }
}
