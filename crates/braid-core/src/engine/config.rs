//! The engine's configuration: NICs, flow classes and every stage's knobs, with validation.
//!
//! This is the core's own view; braid's config file and REST schema (in the binary and,
//! later, braid-control) convert into it and report field names from their side.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use super::{ConfigError, QosError};
use crate::auth::AuthConfig;
use crate::controller::{ControllerConfig, OverflowPolicy};
use crate::flow::{ClassifyConfig, FlowTableConfig};
use crate::health::HealthConfig;
use crate::health::capacity::CapacityConfig;
use crate::qos::{ClassId, ClassKind, QosConfig};
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
    /// market-data feed): its flows go to the strict class of [`EngineConfig::qos`] unless
    /// `qos_class` names another. A flow in the strict class is not refused by admission
    /// control (the load it counts yields to it). Default false.
    pub latency_critical: bool,
    /// The QoS class (of [`EngineConfig::qos`]) of the class's flows: `None` (the default)
    /// is the strict class for a latency-critical class, else the default weighted class
    /// (the weighted class with the lowest id). Set once per flow when it is installed.
    pub qos_class: Option<ClassId>,
    /// What happens to a new flow when no NIC has room for its demand: refused (its packets
    /// are dropped as `flow_rejected`, and it asks again every 100 ms) or queued until the
    /// flow controller finds room (`flow_queued`).
    pub overflow: OverflowPolicy,
    /// The tunnel (index into [`EngineConfig::tunnels`]) the class's flows are encapsulated
    /// for, as VXLAN or GRE to a peer that is not braid, instead of being sent as braid
    /// packets (`policy`, `nics`, `demand_bps` and `qos_class` then do not apply). Default
    /// `None`. See [`super::tunnel`].
    pub tunnel: Option<u8>,
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
            qos_class: None,
            overflow: OverflowPolicy::Reject,
            tunnel: None,
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
    /// Each NIC's TX queue: a QoS scheduler ([`crate::qos::Qos`]) with one bounded queue per
    /// class, at most one strict class (the latency-critical one, sent first) and weighted
    /// fair sharing (DRR) among the others, plus per class an optional RFC 2697/2698 meter
    /// that the engine applies once per packet at the vNIC (in `handle_tx`), policing Red
    /// with `drop_red`. The classes are bounded separately, so bulk traffic that fills a
    /// NIC never refuses a latency-critical packet.
    ///
    /// Default ([`QosConfig::default`]): class 0 strict, class 1 weighted, each 8192 packets
    /// and 4 MiB per NIC: latency-critical flows in class 0, the rest in class 1. Flows get
    /// their class from their flow class ([`FlowClass::qos_class`]); traffic that matches no
    /// class goes to the weighted class with the lowest id. The engine raises
    /// `max_packet_bytes` (and `quantum_bytes` with it) to the largest packet it queues or
    /// meters, [`Self::largest_packet_bytes`], so meters' bursts must hold that too.
    /// Replaced at run time with [`super::Command::SetQos`].
    pub qos: QosConfig,
    /// How far ahead of its pacing schedule a NIC may send, as a burst (default 100 µs).
    pub pacing_burst: Duration,
    /// How much sending time a NIC may make up after the engine fell behind its schedule
    /// (default 1 ms): a worker that was late by up to this much (preempted, or waking late)
    /// sends the backlog at once instead of losing that link time for good. A link's shaper
    /// or queue absorbs such a burst, since the link was idle for as long (a TBF's bucket
    /// filled meanwhile). Zero restores strict pacing from the moment of sending.
    pub pacing_credit: Duration,
    /// How much further ahead of its pacing schedule than `pacing_burst` a NIC may send a
    /// packet of the strict (latency-critical) class (default 500 µs). Without it the
    /// strict class skips braid's queue but still waits for the pacer's next slot, which
    /// on a saturated link is up to one packet time of the slowest link, and longer when
    /// the worker is busy at that moment. Its wire time still moves the schedule on, so
    /// the other classes make up for it and the link's average rate does not change; the
    /// link's own queue holds at most this much more (50 KB at 800 Mbit/s). Zero: the
    /// strict class waits for the pacer like the rest.
    pub pacing_strict_advance: Duration,
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
    /// VXLAN/GRE tunnels to peers that are not braid ([`super::tunnel`]); flow classes name
    /// them by index ([`FlowClass::tunnel`]). At most [`super::MAX_TUNNELS`]; default none.
    pub tunnels: Vec<super::TunnelSpec>,
    /// Encapsulated packets waiting for [`super::Engine::poll_tunnel_transmit`] (default
    /// 1024); more are dropped and counted (`tunnel_queue_full`).
    pub tunnel_queue_packets: usize,
    /// Rules applied to the vNIC's packets on TX (match → actions, with conditions on live
    /// link state; [`crate::rules`]), validated as a set and compiled in
    /// [`super::Engine::new`]: a rule's striping, priority class and tunnel override the
    /// flow class's, its rewrites change the packet, `drop` drops it. See `engine/rules.rs`
    /// for what the engine carries out. Default none. Replaced at run time with
    /// [`super::Command::ReplaceRules`].
    pub tx_rules: Vec<crate::rules::Rule>,
    /// Rules applied on RX to braid's packets as they go to the vNIC (after reassembly and
    /// reorder): rewrites and drop only. Default none.
    pub rx_rules: Vec<crate::rules::Rule>,
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
            qos: QosConfig::default(),
            pacing_burst: Duration::from_micros(100),
            pacing_credit: Duration::from_millis(1),
            pacing_strict_advance: Duration::from_micros(500),
            deliver_queue_packets: 8192,
            event_queue: 1024,
            auth: None,
            seed: 0x0b5a_1d00_5eed,
            lane: 0,
            tunnels: Vec::new(),
            tunnel_queue_packets: 1024,
            tx_rules: Vec::new(),
            rx_rules: Vec::new(),
        }
    }

    /// Check every value; the error names the field. The rules are validated and compiled
    /// as sets ([`super::RuleTable::build`]), which for large sets is the costly part.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_except_rules()?;
        super::state::rules::validate(self)
    }

    /// [`Self::validate`] but the rules: [`super::Engine::new`] builds them once itself.
    pub(super) fn validate_except_rules(&self) -> Result<(), ConfigError> {
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
        super::tunnel::validate(self)?;
        super::state::policies::check_scheduler(&self.scheduler)
            .map_err(|(field, why)| invalid(field.into(), why))?;
        self.check_qos(&self.qos).map_err(|e| {
            let (field, why) = e.field_and_why();
            invalid(field, why)
        })?;
        let nonzero = [
            ("store_bytes", self.store_bytes),
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

    /// The largest packet the engine queues on a NIC or meters at the vNIC, bytes: the vNIC
    /// MTU or a NIC's `mtu_bytes`, whichever is larger.
    #[must_use]
    pub fn largest_packet_bytes(&self) -> u32 {
        self.nics
            .iter()
            .map(|n| n.mtu_bytes)
            .fold(self.vnic_mtu, u32::max)
    }

    /// `qos` as the engine runs it: `max_packet_bytes` raised to
    /// [`Self::largest_packet_bytes`], `quantum_bytes` to at least that.
    #[must_use]
    pub fn effective_qos(&self, qos: &QosConfig) -> QosConfig {
        let mut q = qos.clone();
        q.max_packet_bytes = q.max_packet_bytes.max(self.largest_packet_bytes());
        q.quantum_bytes = q.quantum_bytes.max(q.max_packet_bytes);
        q
    }

    /// `qos` as each NIC's scheduler runs it: [`Self::effective_qos`] without the meters
    /// (and without `drop_red`). Meters run once per packet at the vNIC; a second meter per
    /// NIC, with its own buckets, could turn one piece of a split datagram Red after the
    /// vNIC passed the packet Green, and lose the whole datagram under the configured rate.
    #[must_use]
    pub fn nic_queue_qos(&self, qos: &QosConfig) -> QosConfig {
        let mut q = self.effective_qos(qos);
        for c in &mut q.classes {
            c.meter = None;
            c.drop_red = false;
        }
        q
    }

    /// Check a QoS configuration against this configuration: valid in itself and once
    /// raised to the largest packet, a weighted class for traffic that is not
    /// latency-critical, and every class the flow classes use.
    ///
    /// # Errors
    /// The first problem found.
    pub fn check_qos(&self, qos: &QosConfig) -> Result<(), QosError> {
        qos.validate().map_err(QosError::Config)?;
        self.effective_qos(qos)
            .validate()
            .map_err(QosError::TooSmallForPackets)?;
        if !qos
            .classes
            .iter()
            .any(|c| matches!(c.kind, ClassKind::Weighted { .. }))
        {
            return Err(QosError::NoWeightedClass);
        }
        let strict = qos
            .classes
            .iter()
            .find(|c| matches!(c.kind, ClassKind::Strict { .. }))
            .map(|c| c.id);
        for (i, c) in self.classes.iter().enumerate() {
            match c.qos_class {
                Some(id) if qos.class(id).is_none() => {
                    return Err(QosError::UnknownClass { flow_class: i });
                }
                None if c.latency_critical && strict.is_none() => {
                    return Err(QosError::NoStrictClass { flow_class: i });
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn invalid(field: String, why: &'static str) -> ConfigError {
    ConfigError::Invalid { field, why }
}
