//! Scenarios: two braid engines, their links and their application traffic, described in TOML,
//! run on the simulator, and summed up in a [`Report`].
//!
//! This is what `braid demo` runs and what the scenario tests assert on. Host A runs the
//! traffic sources (constant-rate and greedy bulk UDP flows); host B runs the sink, which checks
//! every delivered packet: byte-exact payload, order, duplicates, gaps, and latency from the
//! timestamp the source wrote into it. Both hosts run a full [`Engine`], so probes, replies and
//! link health run in both directions.
//!
//! The scenario's own types are deliberately small and in human units (Mbit/s, milliseconds);
//! they convert into [`LinkConfig`] for the simulator and [`EngineConfig`] for the engines.
//!
//! [`Engine`]: braid_core::engine::Engine
//! [`EngineConfig`]: braid_core::engine::EngineConfig

mod app;
mod report;

use core::time::Duration;

use braid_core::Instant;
use braid_core::auth::{AuthConfig, Role};
use braid_core::controller::OverflowPolicy;
use braid_core::engine::{ClassMatch, ClassPolicy, EngineConfig, FlowClass, NicSpec};
use braid_core::{NicId, NicSet};
use serde::{Deserialize, Serialize};

pub use app::{FlowTotals, ScenarioHost};
pub use report::{FlowReport, LinkReport, Report};

use crate::link::{LinkAction, LinkConfig, LinkEvent};
use crate::sim::{Sim, SimConfig};

/// Why a scenario could not be loaded or run. Messages name the field to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// The TOML did not parse or has an unknown or mistyped field (toml names it).
    #[error("parse scenario")]
    Parse(#[source] toml::de::Error),
    /// A value is out of range.
    #[error("{field}: {why}")]
    Invalid {
        /// Path of the field, e.g. `links[1].rate_mbps`.
        field: String,
        /// What is allowed.
        why: String,
    },
    /// The engine refused its configuration.
    #[error("engine configuration: {0}")]
    Engine(String),
    /// The simulator refused its configuration.
    #[error("simulator configuration")]
    Sim(#[source] crate::sim::SimError),
}

/// A whole scenario. See [`Scenario::DEFAULT_TOML`] for an annotated example.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name for the report.
    pub name: String,
    /// Seed for the simulator's randomness (loss, jitter, ...). Same seed, same run.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Simulated time to run, in milliseconds.
    pub duration_ms: f64,
    /// The virtual NIC's MTU in bytes (default 9000; may exceed the links' MTU).
    #[serde(default = "default_vnic_mtu")]
    pub vnic_mtu: u32,
    /// Authenticate every braid packet (keyed MAC and replay window; a fixed demo key).
    /// Default false.
    #[serde(default)]
    pub authenticate: bool,
    /// The links between the two hosts; link `i` is NIC `i` on both.
    pub links: Vec<LinkSpec>,
    /// Application flows from host A to host B.
    pub flows: Vec<FlowSpec>,
}

/// One link (one NIC on each host).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// Name for the report.
    pub name: String,
    /// Line rate in Mbit/s.
    pub rate_mbps: f64,
    /// The capacity braid is told, in Mbit/s (default: `rate_mbps`); with `capacity_auto`,
    /// the initial guess of braid's estimate.
    #[serde(default)]
    pub capacity_mbps: Option<f64>,
    /// braid estimates the link's capacity from measured delivery (`capacity = "auto"` in the
    /// daemon) instead of trusting `capacity_mbps`. Default false.
    #[serde(default)]
    pub capacity_auto: bool,
    /// One-way propagation delay in milliseconds.
    #[serde(default)]
    pub delay_ms: f64,
    /// Uniform jitter (±) in milliseconds; never reorders by itself.
    #[serde(default)]
    pub jitter_ms: f64,
    /// Loss probability, 0..1.
    #[serde(default)]
    pub loss: f64,
    /// Duplication probability, 0..1.
    #[serde(default)]
    pub duplicate: f64,
    /// Probability that a packet is held back by `reorder_ms`, 0..1.
    #[serde(default)]
    pub reorder: f64,
    /// Extra delay of a reordered packet, milliseconds.
    #[serde(default)]
    pub reorder_ms: f64,
    /// Link MTU in bytes (default 1500). braid's packets must fit after 28 bytes of UDP/IPv4.
    #[serde(default = "default_link_mtu")]
    pub mtu: u32,
    /// Scheduled events.
    #[serde(default)]
    pub events: Vec<LinkEventSpec>,
}

/// A scheduled change to a link.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkEventSpec {
    /// When, in milliseconds from the start.
    pub at_ms: f64,
    /// What happens.
    pub action: LinkActionSpec,
    /// The jitter in milliseconds, for `action = "jitter"`.
    #[serde(default)]
    pub jitter_ms: Option<f64>,
    /// The loss probability, for `action = "loss"`.
    #[serde(default)]
    pub loss: Option<f64>,
}

/// What a link event does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkActionSpec {
    /// The link fails (both directions): everything offered or in flight is lost.
    Down,
    /// The link comes back.
    Up,
    /// Set the jitter to `jitter_ms`.
    Jitter,
    /// Set the loss to `loss`.
    Loss,
}

/// How a flow's packets use the links.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicySpec {
    /// One link, chosen by the flow controller.
    Pin,
    /// Per packet, whole or split across links.
    Stripe,
    /// A copy on each link; first arrival wins.
    Duplicate,
}

/// What the source sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrafficSpec {
    /// Constant rate: `packet_bytes` every `packet_bytes × 8 / rate_mbps`.
    Cbr,
    /// As fast as braid takes it, keeping at most `window_kib` queued in braid (a stand-in for
    /// a TCP sender's window).
    Bulk,
}

/// One application flow from host A to host B (UDP/IPv4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowSpec {
    /// Name for the report.
    pub name: String,
    /// How its packets use the links.
    pub policy: PolicySpec,
    /// Which links it may use, by index (default: all).
    #[serde(default)]
    pub links: Option<Vec<u8>>,
    /// What the source sends.
    pub traffic: TrafficSpec,
    /// IP packet size in bytes (header included), 64..=vnic_mtu.
    pub packet_bytes: u32,
    /// Rate in Mbit/s, for `cbr`.
    #[serde(default)]
    pub rate_mbps: Option<f64>,
    /// Bytes the source keeps queued in braid, KiB, for `bulk` (default 256).
    #[serde(default)]
    pub window_kib: Option<u32>,
    /// Start, ms from the beginning (default 0).
    #[serde(default)]
    pub start_ms: f64,
    /// Stop, ms from the beginning (default: the end).
    #[serde(default)]
    pub stop_ms: Option<f64>,
    /// Strict priority over other flows on every link's queue in braid (default false).
    #[serde(default)]
    pub latency_critical: bool,
    /// Declared demand in Mbit/s, for the flow controller's admission (default: none, the
    /// measured load only).
    #[serde(default)]
    pub demand_mbps: Option<f64>,
    /// When no link has room for the demand: `reject` (default) or `queue`.
    #[serde(default)]
    pub admission: AdmissionSpec,
}

/// What the flow controller does with a flow no link has room for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdmissionSpec {
    /// Refuse it (its packets are dropped and counted as `flow_rejected`).
    #[default]
    Reject,
    /// Hold it until room appears (`flow_queued`).
    Queue,
}

fn default_seed() -> u64 {
    1
}
fn default_vnic_mtu() -> u32 {
    9000
}
fn default_link_mtu() -> u32 {
    1500
}

/// First UDP destination port; flow `i` uses `FIRST_PORT + i`, which is how the engine's flow
/// classes tell the flows apart.
pub const FIRST_PORT: u16 = 5000;
/// UDP/IPv4 bytes in front of each braid packet on a simulated link.
pub const LINK_OVERHEAD_BYTES: u32 = braid_core::engine::UDP_IPV4_OVERHEAD_BYTES;

impl Scenario {
    /// The default scenario, as TOML (what `braid demo` runs).
    pub const DEFAULT_TOML: &'static str = include_str!("default.toml");

    /// The default scenario.
    ///
    /// # Panics
    /// Never: the embedded file is checked by a test.
    #[must_use]
    pub fn default_scenario() -> Self {
        Self::from_toml(Self::DEFAULT_TOML).expect("invariant: the default scenario is valid")
    }

    /// Parse and validate a scenario.
    ///
    /// # Errors
    /// [`ScenarioError`] naming the field.
    pub fn from_toml(text: &str) -> Result<Self, ScenarioError> {
        let s: Self = toml::from_str(text).map_err(ScenarioError::Parse)?;
        s.validate()?;
        Ok(s)
    }

    /// Check every value; the error names the field.
    ///
    /// # Errors
    /// [`ScenarioError::Invalid`].
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |field: String, why: &str| {
            Err(ScenarioError::Invalid {
                field,
                why: why.to_owned(),
            })
        };
        if !(self.duration_ms > 0.0 && self.duration_ms <= 3_600_000.0) {
            return bad("duration_ms".into(), "must be > 0 and at most one hour");
        }
        if self.links.is_empty() || self.links.len() > braid_core::MAX_NICS {
            return bad("links".into(), "need between 1 and 32 links");
        }
        if !(68..=65_535).contains(&self.vnic_mtu) {
            return bad("vnic_mtu".into(), "must be between 68 and 65535");
        }
        for (i, l) in self.links.iter().enumerate() {
            let f = |name: &str| format!("links[{i}].{name}");
            if !(l.rate_mbps > 0.0 && l.rate_mbps <= 1_000_000.0) {
                return bad(f("rate_mbps"), "must be > 0 and at most 1000000");
            }
            if let Some(c) = l.capacity_mbps
                && !(c > 0.0 && c <= 1_000_000.0)
            {
                return bad(f("capacity_mbps"), "must be > 0 and at most 1000000");
            }
            for (name, v) in [
                ("delay_ms", l.delay_ms),
                ("jitter_ms", l.jitter_ms),
                ("reorder_ms", l.reorder_ms),
            ] {
                if !(0.0..=60_000.0).contains(&v) {
                    return bad(f(name), "must be between 0 and 60000 ms");
                }
            }
            for (name, v) in [
                ("loss", l.loss),
                ("duplicate", l.duplicate),
                ("reorder", l.reorder),
            ] {
                if !(0.0..=1.0).contains(&v) {
                    return bad(f(name), "must be a probability between 0 and 1");
                }
            }
            if !(200..=65_535).contains(&l.mtu) {
                return bad(f("mtu"), "must be between 200 and 65535");
            }
            for (j, e) in l.events.iter().enumerate() {
                let g = |name: &str| format!("links[{i}].events[{j}].{name}");
                if !(e.at_ms >= 0.0 && e.at_ms <= self.duration_ms) {
                    return bad(g("at_ms"), "must be between 0 and duration_ms");
                }
                match e.action {
                    LinkActionSpec::Jitter
                        if !e.jitter_ms.is_some_and(|j| (0.0..=60_000.0).contains(&j)) =>
                    {
                        return bad(
                            g("jitter_ms"),
                            "action \"jitter\" needs jitter_ms between 0 and 60000",
                        );
                    }
                    LinkActionSpec::Loss if !e.loss.is_some_and(|p| (0.0..=1.0).contains(&p)) => {
                        return bad(
                            g("loss"),
                            "action \"loss\" needs a loss probability between 0 and 1",
                        );
                    }
                    _ => {}
                }
            }
        }
        if self.flows.is_empty() || self.flows.len() > 1000 {
            return bad("flows".into(), "need between 1 and 1000 flows");
        }
        for (i, fl) in self.flows.iter().enumerate() {
            let f = |name: &str| format!("flows[{i}].{name}");
            if fl.packet_bytes < 64 || fl.packet_bytes > self.vnic_mtu {
                return bad(f("packet_bytes"), "must be between 64 and vnic_mtu");
            }
            // A packet travels in at most 64 pieces (braid_core::scheduler::MAX_PIECES).
            let piece = self.links.iter().map(|l| l.mtu).min().unwrap_or(0)
                - LINK_OVERHEAD_BYTES
                - braid_wire::BRAID_MAX_OVERHEAD as u32;
            if fl.packet_bytes > piece * braid_core::scheduler::MAX_PIECES as u32 {
                return bad(
                    f("packet_bytes"),
                    "does not fit in 64 pieces on the link with the smallest mtu",
                );
            }
            if let Some(links) = &fl.links {
                if links.is_empty() {
                    return bad(f("links"), "must name at least one link");
                }
                if let Some(l) = links.iter().find(|&&l| usize::from(l) >= self.links.len()) {
                    return bad(f("links"), &format!("link {l} does not exist"));
                }
            }
            match fl.traffic {
                TrafficSpec::Cbr if !fl.rate_mbps.is_some_and(|r| r > 0.0 && r <= 1_000_000.0) => {
                    return bad(f("rate_mbps"), "cbr traffic needs rate_mbps > 0");
                }
                TrafficSpec::Bulk if fl.window_kib.is_some_and(|w| w == 0 || w > 1 << 20) => {
                    return bad(f("window_kib"), "must be between 1 and 1048576");
                }
                _ => {}
            }
            if let Some(d) = fl.demand_mbps
                && !(0.0..=1_000_000.0).contains(&d)
            {
                return bad(f("demand_mbps"), "must be between 0 and 1000000");
            }
            if !(fl.start_ms >= 0.0 && fl.start_ms < self.duration_ms) {
                return bad(f("start_ms"), "must be between 0 and duration_ms");
            }
            if let Some(stop) = fl.stop_ms
                && !(stop > fl.start_ms && stop <= self.duration_ms)
            {
                return bad(
                    f("stop_ms"),
                    "must be after start_ms and at most duration_ms",
                );
            }
        }
        Ok(())
    }

    /// The simulated duration.
    #[must_use]
    pub fn duration(&self) -> Duration {
        ms(self.duration_ms)
    }

    /// The simulator's link configurations.
    #[must_use]
    pub fn link_configs(&self) -> Vec<LinkConfig> {
        self.links
            .iter()
            .map(|l| {
                let mut c = LinkConfig::new(mbps(l.rate_mbps), ms(l.delay_ms));
                c.jitter = ms(l.jitter_ms);
                c.loss = l.loss;
                c.duplicate = l.duplicate;
                c.reorder = l.reorder;
                c.reorder_delay = ms(l.reorder_ms);
                c.mtu = l.mtu;
                c.overhead_bytes = LINK_OVERHEAD_BYTES;
                c.events = l
                    .events
                    .iter()
                    .map(|e| {
                        let action = match e.action {
                            LinkActionSpec::Down => LinkAction::Down,
                            LinkActionSpec::Up => LinkAction::Up,
                            LinkActionSpec::Jitter => {
                                LinkAction::SetJitter(ms(e.jitter_ms.unwrap_or(0.0)))
                            }
                            LinkActionSpec::Loss => LinkAction::SetLoss(e.loss.unwrap_or(0.0)),
                        };
                        LinkEvent::new(ms(e.at_ms), action)
                    })
                    .collect();
                c
            })
            .collect()
    }

    /// The engine configuration both hosts run: one NIC per link, one flow class per flow.
    #[must_use]
    pub fn engine_config(&self) -> EngineConfig {
        let nics = self
            .links
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let id = NicId(u8::try_from(i).unwrap_or(u8::MAX));
                let capacity = mbps(l.capacity_mbps.unwrap_or(l.rate_mbps));
                NicSpec {
                    capacity_auto: l.capacity_auto,
                    ..NicSpec::udp_ipv4(id, &l.name, capacity, l.mtu)
                }
            })
            .collect();
        let mut cfg = EngineConfig::new(nics);
        cfg.vnic_mtu = self.vnic_mtu;
        cfg.seed = self.seed;
        cfg.classes = self
            .flows
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let port = flow_port(i);
                FlowClass {
                    name: f.name.clone(),
                    matcher: ClassMatch {
                        protocol: Some(17),
                        dst_ports: Some((port, port)),
                        ..ClassMatch::default()
                    },
                    policy: match f.policy {
                        PolicySpec::Pin => ClassPolicy::Pin,
                        PolicySpec::Stripe => ClassPolicy::Stripe,
                        PolicySpec::Duplicate => ClassPolicy::Duplicate,
                    },
                    nics: f
                        .links
                        .as_ref()
                        .map_or(NicSet::ALL, |l| l.iter().map(|&n| NicId(n)).collect()),
                    demand_bps: f.demand_mbps.map_or(0, mbps),
                    latency_critical: f.latency_critical,
                    qos_class: None,
                    tunnel: None,
                    overflow: match f.admission {
                        AdmissionSpec::Reject => OverflowPolicy::Reject,
                        AdmissionSpec::Queue => OverflowPolicy::Queue,
                    },
                }
            })
            .collect();
        cfg
    }
}

/// The UDP destination port of flow `i`.
#[must_use]
pub fn flow_port(i: usize) -> u16 {
    FIRST_PORT.saturating_add(u16::try_from(i).unwrap_or(u16::MAX))
}

fn ms(v: f64) -> Duration {
    Duration::from_nanos((v * 1e6).round() as u64)
}

fn mbps(v: f64) -> u64 {
    (v * 1e6).round() as u64
}

/// Progress of a running scenario, passed to the callback of [`run`] about every 1 % of the
/// simulated time.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Simulated time so far.
    pub sim_time: Duration,
    /// The scenario's duration.
    pub duration: Duration,
    /// Packets the sink has received so far.
    pub delivered_packets: u64,
    /// What happened lately (a link event), or empty.
    pub note: String,
}

/// Run a scenario to its end and report.
///
/// # Errors
/// [`ScenarioError`] if the engines or the simulator refuse the configuration.
pub fn run(
    scenario: &Scenario,
    mut progress: impl FnMut(&Progress),
) -> Result<Report, ScenarioError> {
    scenario.validate()?;
    let mut sim = build(scenario)?;
    let end = Instant::ZERO + scenario.duration();
    let steps = 100u32;
    let mut note = String::new();
    for k in 1..=steps {
        let t = Instant::ZERO + scenario.duration() * k / steps;
        sim.run_until(t.min(end));
        if let Some(last) = sim.a().link_log.last() {
            note.clone_from(&last.1);
        }
        progress(&Progress {
            sim_time: t - Instant::ZERO,
            duration: scenario.duration(),
            delivered_packets: sim.b().sink_totals().packets,
            note: note.clone(),
        });
    }
    Ok(Report::build(scenario, &sim))
}

/// The simulator with both hosts, ready to run (for tests that want to step it themselves).
///
/// # Errors
/// [`ScenarioError`] if the engines or the simulator refuse the configuration.
pub fn build(scenario: &Scenario) -> Result<Sim<ScenarioHost, ScenarioHost>, ScenarioError> {
    let cfg = scenario.engine_config();
    let side = |role| {
        let mut c = cfg.clone();
        c.auth = scenario
            .authenticate
            .then_some(AuthConfig::new(*b"braid demo key, not for real use", role));
        c
    };
    let a = ScenarioHost::new_source(scenario, side(Role::A)).map_err(ScenarioError::Engine)?;
    let b = ScenarioHost::new_sink(scenario, side(Role::B)).map_err(ScenarioError::Engine)?;
    let sim_cfg = SimConfig::new(scenario.seed, scenario.link_configs());
    Sim::new(sim_cfg, a, b).map_err(ScenarioError::Sim)
}
