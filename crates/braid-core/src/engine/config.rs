//! The engine's configuration: NICs, flow classes and every stage's knobs, with validation.
//!
//! This is the core's own view; braid's config file and REST schema (in the binary and,
//! later, braid-control) convert into it and report field names from their side.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use super::ConfigError;
use crate::auth::AuthConfig;
use crate::controller::{ControllerConfig, OverflowPolicy};
use crate::flow::{ClassifyConfig, FlowTableConfig};
use crate::health::HealthConfig;
use crate::health::capacity::CapacityConfig;
use crate::reassembly::ReassemblyConfig;
use crate::reorder::ReorderConfig;
use crate::scheduler::SchedulerConfig;
use crate::{NicId, NicSet};

/// One NIC as the engine sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct NicSpec {
    /// The NIC's id; also the link id in the braid header. Both peers must agree on it.
    pub id: NicId,
    /// A name for reports (`eth1`, `link0`).
    pub name: String,
    /// Configured capacity in bit/s. The engine paces the NIC to this rate; with
    /// `capacity_auto` it is the initial guess the estimate starts from.
    pub capacity_bps: u64,
    /// Estimate the capacity from the delivery rate the peer reports in its probe replies
    /// ([`crate::health::capacity`]) instead of trusting `capacity_bps`: the estimate becomes
    /// the NIC's capacity (flow placement, striping, pacing). Default false.
    pub capacity_auto: bool,
    /// The largest braid packet (braid header + payload) the NIC carries, in bytes: the link
    /// MTU minus the transport's headers (1500 − 28 = 1472 for UDP over IPv4).
    pub mtu_bytes: u32,
    /// Bytes the transport adds to each braid packet on the wire (28 for UDP over IPv4, 48
    /// for UDP over IPv6, 14 for raw Ethernet). Pacing counts them.
    pub wire_overhead_bytes: u32,
}

/// Bytes UDP over IPv4 puts in front of each braid packet (IPv4 20 + UDP 8).
pub const UDP_IPV4_OVERHEAD_BYTES: u32 = 28;

impl NicSpec {
    /// A NIC that carries braid over UDP/IPv4 on a link with the given MTU (1500 for
    /// Ethernet): braid packets up to `link_mtu − 28` bytes, 28 bytes of wire overhead each,
    /// the capacity as configured (not `auto`).
    #[must_use]
    pub fn udp_ipv4(id: NicId, name: &str, capacity_bps: u64, link_mtu: u32) -> Self {
        Self {
            id,
            name: name.into(),
            capacity_bps,
            capacity_auto: false,
            mtu_bytes: link_mtu.saturating_sub(UDP_IPV4_OVERHEAD_BYTES),
            wire_overhead_bytes: UDP_IPV4_OVERHEAD_BYTES,
        }
    }
}

/// What decides a packet's flow class. Every `Some` field must match; all `None` matches
/// everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClassMatch {
    /// IP protocol number (6 = TCP, 17 = UDP).
    pub protocol: Option<u8>,
    /// Destination port range, inclusive.
    pub dst_ports: Option<(u16, u16)>,
    /// Source port range, inclusive.
    pub src_ports: Option<(u16, u16)>,
    /// DSCP value.
    pub dscp: Option<u8>,
}

impl ClassMatch {
    /// `true` if the packet summary matches.
    #[must_use]
    pub fn matches(&self, s: &braid_wire::IpSummary) -> bool {
        let in_range = |r: Option<(u16, u16)>, p: u16| r.is_none_or(|(lo, hi)| lo <= p && p <= hi);
        self.protocol.is_none_or(|p| p == s.protocol)
            && in_range(self.dst_ports, s.dst_port)
            && in_range(self.src_ports, s.src_port)
            && self.dscp.is_none_or(|d| d == s.dscp)
    }
}

impl ClassMatch {
    /// UDP to one destination port.
    #[must_use]
    pub fn udp_dst_port(port: u16) -> Self {
        Self {
            protocol: Some(17),
            dst_ports: Some((port, port)),
            ..Self::default()
        }
    }
}

// Defined with the shared types: the rule engine chooses it too.
pub use crate::types::ClassPolicy;

/// A flow class: a match, a policy and the NICs it may use.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowClass {
    /// Name for reports.
    pub name: String,
    /// Which packets belong to the class. The first matching class wins.
    pub matcher: ClassMatch,
    /// The policy.
    pub policy: ClassPolicy,
    /// The NICs the class may use ([`NicSet::ALL`] = every NIC).
    pub nics: NicSet,
    /// Declared demand per flow in bit/s, for admission (0 = measured load only).
    pub demand_bps: u64,
    /// Strict priority on every NIC's queue over classes that are not latency-critical (a
    /// market-data feed). Default false.
    pub latency_critical: bool,
    /// What happens to a new flow when no NIC has room for its demand: refused (its packets
    /// are dropped as `flow_rejected`, and it asks again every 100 ms) or queued until the
    /// flow controller finds room (`flow_queued`).
    pub overflow: OverflowPolicy,
}

impl FlowClass {
    /// A class with the defaults: every NIC, no declared demand, not latency-critical, new
    /// flows rejected when no NIC has room.
    #[must_use]
    pub fn new(name: &str, matcher: ClassMatch, policy: ClassPolicy) -> Self {
        Self {
            name: name.into(),
            matcher,
            policy,
            nics: NicSet::ALL,
            demand_bps: 0,
            latency_critical: false,
            overflow: OverflowPolicy::Reject,
        }
    }

    /// The latency-critical A/B class the tests and benchmarks use: UDP to `port`, a copy on
    /// every NIC, strict priority.
    #[must_use]
    pub fn duplicated_feed(port: u16) -> Self {
        Self {
            latency_critical: true,
            ..Self::new(
                "feed",
                ClassMatch::udp_dst_port(port),
                ClassPolicy::Duplicate,
            )
        }
    }
}

/// Everything the engine needs. [`EngineConfig::new`] gives defaults tuned for a handful of
/// 0.1–10 Gbit/s links with one-way delays up to ~10 ms.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The NICs. At least one; ids unique and below [`crate::MAX_NICS`].
    pub nics: Vec<NicSpec>,
    /// Largest packet the virtual NIC accepts, bytes (default 9000). May exceed the NICs'.
    pub vnic_mtu: u32,
    /// Flow classes, first match wins; packets matching none use `default_policy`.
    pub classes: Vec<FlowClass>,
    /// Policy for packets that match no class (default: stripe over every NIC).
    pub default_policy: ClassPolicy,
    /// Flow classification keys.
    pub classify: ClassifyConfig,
    /// The TX flow table (key → flow id, sequence, policy).
    pub tx_flows: FlowTableConfig,
    /// The RX flow table (flow id → reorder buffer). Each RX flow's reorder ring is allocated
    /// when its first packet arrives — about 80 KiB with the default 1024-datagram window — so
    /// the default capacity is 1024 flows (≈ 80 MiB at most), not the TX table's 65 536.
    pub rx_flows: FlowTableConfig,
    /// Reassembly of braid fragments.
    pub reassembly: ReassemblyConfig,
    /// Per-flow reorder and dedup.
    pub reorder: ReorderConfig,
    /// Probes and link state.
    pub health: HealthConfig,
    /// The capacity estimator of the NICs with `capacity_auto`.
    pub capacity: CapacityConfig,
    /// The per-packet cost model.
    pub scheduler: SchedulerConfig,
    /// NIC affinity: admission and rebalancing.
    pub controller: ControllerConfig,
    /// Bytes of the packet store shared by TX queues, the reorder buffers and the delivery
    /// queue (default 64 MiB). Reassembly has its own cap inside it.
    pub store_bytes: usize,
    /// Bytes each band of each NIC's TX queue may hold (default 4 MiB). The bands are
    /// bounded separately, so bulk traffic that fills a NIC never refuses a latency-critical
    /// packet.
    pub tx_queue_bytes: usize,
    /// Packets each band of each NIC's TX queue may hold (default 8192).
    pub tx_queue_packets: usize,
    /// How far ahead of its pacing schedule a NIC may send, as a burst (default 100 µs).
    pub pacing_burst: Duration,
    /// How much sending time a NIC may make up after the engine fell behind its schedule
    /// (default 1 ms): a worker that was late by up to this much (preempted, or waking late)
    /// sends the backlog at once instead of losing that link time for good. A link's shaper
    /// or queue absorbs such a burst, since the link was idle for as long (a TBF's bucket
    /// filled meanwhile). Zero restores strict pacing from the moment of sending.
    pub pacing_credit: Duration,
    /// Packets waiting for the virtual NIC (default 8192).
    pub deliver_queue_packets: usize,
    /// Events waiting for [`super::Engine::poll_event`] (default 1024).
    pub event_queue: usize,
    /// Authentication of every braid packet (keyed BLAKE3 MAC with [`super::Engine::new`], or
    /// the protection given to [`super::Engine::with_protection`]; replay window). Default
    /// off.
    pub auth: Option<AuthConfig>,
    /// Seed for hash tables (flood resistance) and for the first flow id (so a restarted
    /// sender uses new ids). Take it from the OS in the daemon.
    pub seed: u64,
    /// This engine's lane (`0..16`, default 0): which worker of the daemon it is. Every
    /// packet it sends carries it, and it accepts only packets that carry it
    /// ([`DropReason::WrongLane`](crate::DropReason::WrongLane)), so a NIC read by one
    /// worker for several can hand each packet to the engine whose session it belongs to.
    pub lane: u8,
}

impl EngineConfig {
    /// Defaults for the given NICs.
    #[must_use]
    pub fn new(nics: Vec<NicSpec>) -> Self {
        Self {
            nics,
            vnic_mtu: 9000,
            classes: Vec::new(),
            default_policy: ClassPolicy::Stripe,
            classify: ClassifyConfig::default(),
            tx_flows: FlowTableConfig::default(),
            rx_flows: FlowTableConfig {
                capacity: 1024,
                ..FlowTableConfig::default()
            },
            reassembly: ReassemblyConfig::default(),
            reorder: ReorderConfig::default(),
            health: HealthConfig::default(),
            capacity: CapacityConfig::default(),
            scheduler: SchedulerConfig::default(),
            controller: ControllerConfig::default(),
            store_bytes: 64 << 20,
            tx_queue_bytes: 4 << 20,
            tx_queue_packets: 8192,
            pacing_burst: Duration::from_micros(100),
            pacing_credit: Duration::from_millis(1),
            deliver_queue_packets: 8192,
            event_queue: 1024,
            auth: None,
            seed: 0x0b5a_1d00_5eed,
            lane: 0,
        }
    }

    /// Check every value; the error names the field.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.nics.is_empty() {
            return Err(ConfigError::NoNics);
        }
        let mut seen = NicSet::EMPTY;
        for (i, n) in self.nics.iter().enumerate() {
            if !n.id.is_valid() || seen.contains(n.id) {
                return Err(ConfigError::BadNicId(n.id));
            }
            seen.insert(n.id);
            if n.capacity_bps == 0 {
                return Err(invalid(format!("nics[{i}].capacity_bps"), "must be > 0"));
            }
            let min = braid_wire::BRAID_MAX_OVERHEAD as u32 + 64;
            if n.mtu_bytes < min || n.mtu_bytes > 65_535 {
                return Err(invalid(
                    format!("nics[{i}].mtu_bytes"),
                    "must be between braid's largest header + 64 (120) and 65535",
                ));
            }
        }
        if self.vnic_mtu < 68 || self.vnic_mtu > 65_535 {
            return Err(invalid("vnic_mtu".into(), "must be between 68 and 65535"));
        }
        if self.vnic_mtu > self.reassembly.max_datagram_bytes {
            return Err(invalid(
                "vnic_mtu".into(),
                "must not exceed reassembly.max_datagram_bytes",
            ));
        }
        for (i, c) in self.classes.iter().enumerate() {
            if c.nics.and(seen).is_empty() {
                return Err(invalid(
                    format!("classes[{i}].nics"),
                    "names no configured nic",
                ));
            }
            for (name, r) in [
                ("dst_ports", c.matcher.dst_ports),
                ("src_ports", c.matcher.src_ports),
            ] {
                if let Some((lo, hi)) = r
                    && lo > hi
                {
                    return Err(invalid(
                        format!("classes[{i}].match.{name}"),
                        "range start is above its end",
                    ));
                }
            }
        }
        for (field, t) in [("tx_flows", &self.tx_flows), ("rx_flows", &self.rx_flows)] {
            if t.capacity == 0 || t.capacity > 1 << 24 {
                return Err(invalid(
                    format!("{field}.capacity"),
                    "must be between 1 and 16777216",
                ));
            }
        }
        let nonzero = [
            ("store_bytes", self.store_bytes),
            ("tx_queue_bytes", self.tx_queue_bytes),
            ("tx_queue_packets", self.tx_queue_packets),
            ("deliver_queue_packets", self.deliver_queue_packets),
            ("event_queue", self.event_queue),
        ];
        for (field, v) in nonzero {
            if v == 0 {
                return Err(invalid(field.into(), "must be > 0"));
            }
        }
        if self.store_bytes < self.vnic_mtu as usize * 4 {
            return Err(invalid(
                "store_bytes".into(),
                "must hold at least four vNIC-MTU packets",
            ));
        }
        if self.lane >= braid_wire::BRAID_MAX_LANES {
            return Err(invalid(
                "lane".into(),
                "must be below 16 (4 bits of the header)",
            ));
        }
        if self
            .auth
            .as_ref()
            .is_some_and(|a| a.counter_start == u64::MAX)
        {
            return Err(invalid(
                "auth.counter_start".into(),
                "must be below 2^64 - 1 (that counter is never sent)",
            ));
        }
        Ok(())
    }
}

fn invalid(field: String, why: &'static str) -> ConfigError {
    ConfigError::Invalid { field, why }
}
