//! The REST API's types: what the endpoints return and take, as plain serde types with their
//! OpenAPI schemas. The [`crate::Daemon`] trait speaks these types, not braid-core's, so the
//! API's shape changes only when this module does ([`API_VERSION`]).
//!
//! What this module owns: the shape of every body and response, units in the field names
//! (`_bps`, `_bytes`, `_us`, `_ms`), and the policy document ([`policy`]) shared with the
//! config file. What it does not own: where the numbers come from (the daemon adapter reads
//! the engine's and the data path's counters) and the checks that need the running system
//! (NIC names, admission), which the daemon makes and reports through
//! [`crate::DaemonError`].
//!
//! Request bodies (`NicUpdate`, `FlowMove`) are `deny_unknown_fields`: a misspelt field is an
//! error that names it, not a silent no-op.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub mod policy;

pub use policy::{
    DirectionName, FragmentationSection, MeterKindName, MeterSection, PolicyDocument, PolicyName,
    PolicySection, PolicySectionName, QosClassSection, QosSection, ReassemblySection,
    ReorderSection, RuleSection, TunnelKindName, TunnelSection, WhenSection,
};

/// The API's version: bumped on every change of this module's types (STYLE §9), served in
/// `/healthz` and as the OpenAPI document's `info.version`. `docs/openapi.json` is checked
/// against the code by a test; the generator refuses to rewrite it under an unchanged
/// version.
pub const API_VERSION: u32 = 2;

/// Largest NIC capacity the API accepts, bit/s (10 Tbit/s), as the config file.
pub const MAX_CAPACITY_BPS: u64 = 10_000_000_000_000;

/// Smallest NIC capacity the API accepts, bit/s (1 kbit/s), as the config file.
pub const MIN_CAPACITY_BPS: u64 = 1_000;

/// `GET /healthz`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
pub struct Health {
    /// Always `ok`: the API answers.
    pub status: String,
    /// [`API_VERSION`].
    pub api_version: u32,
}

/// A NIC's administrative state.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    /// In use.
    Up,
    /// Taken out of use by an operator: its flows were drained to the other NICs.
    Down,
}

/// A link's measured state (probes).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    /// Healthy.
    Up,
    /// Usable but impaired (loss, delay).
    Degraded,
    /// Not usable: its flows moved to other NICs.
    Down,
    /// Not measured yet.
    Unknown,
}

/// How a NIC carries braid packets.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// UDP (works across routers).
    Udp,
    /// Raw Ethernet with braid's EtherType (same L2 only).
    Ethernet,
}

/// One physical NIC (`GET /v1/nics`, `GET /v1/nics/{name}`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, ToSchema)]
pub struct Nic {
    /// The NIC's id (its link id on the wire), 0..=31.
    #[schema(maximum = 31)]
    pub id: u8,
    /// Its name (unique).
    pub name: String,
    /// The Linux interface its socket is bound to.
    pub device: String,
    /// Its transport.
    pub transport: Transport,
    /// Capacity in force, bit/s: as configured (or set through the API), or the current
    /// estimate when `capacity_auto`.
    pub capacity_bps: u64,
    /// The capacity is estimated from the delivery rate (`capacity = "auto"`).
    pub capacity_auto: bool,
    /// Administrative state.
    pub admin: AdminState,
    /// Measured link state.
    pub link: LinkState,
    /// `false` while its transport is closed (the device is gone; retried every second).
    pub transport_open: bool,
    /// Smoothed round-trip time of the probes, µs (`null` until measured).
    pub srtt_us: Option<u64>,
    /// Probe loss, 0.0 to 1.0 (`null` until measured).
    pub loss_ratio: Option<f64>,
    /// Braid packets sent on this NIC.
    pub tx_packets: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Braid packets received on this NIC.
    pub rx_packets: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Flows the flow controller has on this NIC now.
    pub flows: u64,
}

/// `PATCH /v1/nics/{name}`: the fields to change; a field left out keeps its value (`null`
/// is not a value: leave the field out). At least one is needed. Both are applied as one
/// change: if the second cannot be, the first is undone.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(min_properties = 1)]
pub struct NicUpdate {
    /// New configured capacity, bit/s, 1000 (1 kbit/s) to 10^13 (10 Tbit/s). A NIC whose
    /// capacity was `auto` keeps this value from then on.
    #[serde(default)]
    #[schema(nullable = false, minimum = 1000, maximum = 10_000_000_000_000_u64)]
    pub capacity_bps: Option<u64>,
    /// `down` drains the NIC's flows to the others and takes it out of use; `up` brings
    /// it back.
    #[serde(default)]
    #[schema(nullable = false)]
    pub admin: Option<AdminState>,
}

/// `tun` or `tap`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VnicKind {
    /// IP packets.
    Tun,
    /// Ethernet frames.
    Tap,
}

/// The virtual NIC (`GET /v1/vnics`, `GET /v1/vnics/{name}`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, ToSchema)]
pub struct Vnic {
    /// Device name.
    pub name: String,
    /// `tun` or `tap`.
    pub kind: VnicKind,
    /// MTU, bytes (may exceed the NICs').
    pub mtu: u32,
    /// Addresses with prefix length (`10.99.0.1/24`).
    pub addresses: Vec<String>,
    /// Its queues (one data-path worker each), in queue order.
    pub queues: Vec<VnicQueue>,
    /// RSS over the queues (`null` with one queue).
    pub rss: Option<RssInfo>,
    /// The QoS classes, with the vNIC's meter counters.
    pub qos: Vec<QosClassStatus>,
}

/// One vNIC queue. `rx` is what braid read from the vNIC (the applications' packets on
/// their way out), `tx` what braid wrote to it (packets delivered to the applications).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
pub struct VnicQueue {
    /// Queue index.
    #[schema(maximum = 65535)]
    pub queue: u16,
    /// Packets read from the vNIC.
    pub rx_packets: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Packets written to the vNIC.
    pub tx_packets: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Packets this queue could not take or give (full, too big, errors).
    pub drops: u64,
}

/// RSS: the Toeplitz key and the indirection table (bucket → queue).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
pub struct RssInfo {
    /// The 40-byte Toeplitz key, as 80 hex digits.
    pub key: String,
    /// Queue of each bucket.
    pub indirection: Vec<u16>,
}

/// One QoS class as configured, with its counters.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
pub struct QosClassStatus {
    /// Class id, 0..=7.
    #[schema(maximum = 7)]
    pub id: u8,
    /// Name.
    pub name: String,
    /// Strict priority class.
    pub strict: bool,
    /// DRR weight (`null` for the strict class).
    pub weight: Option<u32>,
    /// Queue limit per NIC, packets.
    pub queue_packets: u32,
    /// Queue limit per NIC, bytes.
    pub queue_bytes: u32,
    /// Packets its meter coloured Green (0 without a meter).
    pub green: u64,
    /// Yellow.
    pub yellow: u64,
    /// Red.
    pub red: u64,
    /// Red packets dropped (`drop_red`).
    pub dropped_red: u64,
}

/// `GET /v1/stats`: rates and latency percentiles over the daemon's last measurement
/// interval (about a second), counters since start, gauges now.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, ToSchema)]
pub struct Stats {
    /// The interval the rates and percentiles were measured over, ms (0 before the second
    /// snapshot: rates are then 0 and percentiles `null`).
    pub interval_ms: u64,
    /// Packets taken from the vNIC and queued.
    pub tx_packets: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Packets delivered to the vNIC, whole and in order.
    pub rx_delivered_packets: u64,
    /// Their bytes.
    pub rx_delivered_bytes: u64,
    /// Per NIC, in NIC id order.
    pub nics: Vec<NicStats>,
    /// Flows in the tables.
    pub flows: FlowCounts,
    /// The busiest flows by rate, TX and RX, at most 20, busiest first (ties by id): ranked
    /// over every flow of every worker by the engines' rate scan (about once a second).
    pub top_flows: Vec<FlowRate>,
    /// Reorder buffers.
    pub reorder: ReorderStats,
    /// Reassembly of braid fragments.
    pub reassembly: ReassemblyStats,
    /// Every drop reason (its label) with its count since start, zeros included.
    pub drops: BTreeMap<String, u64>,
}

/// One NIC's rates and link measurements.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, ToSchema)]
pub struct NicStats {
    /// The NIC's name.
    pub name: String,
    /// Send rate, bit/s.
    pub tx_bps: u64,
    /// Receive rate, bit/s.
    pub rx_bps: u64,
    /// Send rate, packets/s.
    pub tx_pps: u64,
    /// Receive rate, packets/s.
    pub rx_pps: u64,
    /// Smoothed probe RTT, µs (`null` until measured).
    pub srtt_us: Option<u64>,
    /// Probe one-way delay, µs (`null` until measured).
    pub owd_us: Option<u64>,
    /// Probe loss, 0.0 to 1.0 (`null` until measured).
    pub loss_ratio: Option<f64>,
    /// Percentiles of the probes' round-trip times over the last interval (`null` before
    /// two snapshots, or when no probe was answered in it).
    pub rtt_percentiles: Option<LatencyPercentiles>,
    /// Percentiles over the last interval of the delay variation of the braid packets
    /// received on this NIC: how much each one's one-way delay differs from the previous
    /// one's (inter-packet delay variation, RFC 5481, as an absolute value). Needs no clock
    /// synchronisation between the hosts. As the daemon sees it, not the path's jitter
    /// alone: a packet's arrival is the start of the worker's read turn (shared by every
    /// packet of the turn), so the daemon's batching and scheduling are in it (docs/api.md,
    /// "Statistics"). `null` before two snapshots, or when nothing was received in the
    /// interval.
    pub delay_variation_percentiles: Option<LatencyPercentiles>,
}

/// Latency percentiles over an interval, µs, from a log-bucketed histogram: each value is
/// within 6.25 % of the exact percentile (64 ns below 1.024 µs); the extremes of an
/// interval within the same bound.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
pub struct LatencyPercentiles {
    /// Samples in the interval.
    pub samples: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
}

/// Flows in the engine's tables.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
pub struct FlowCounts {
    /// TX flows (vNIC → NICs).
    pub tx: u64,
    /// RX flows (NICs → vNIC).
    pub rx: u64,
}

/// One flow's rate.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
pub struct FlowRate {
    /// The flow's id (`GET /v1/flows/{id}`).
    pub id: u64,
    /// Its table.
    pub direction: FlowDirection,
    /// Its rate, bit/s: the bytes counted for it (TX: taken from the vNIC; RX: delivered to
    /// it) between two visits of the engine's rate scan, over the time between them (about
    /// a second).
    pub rate_bps: u64,
}

/// Reorder buffers (per flow, bounded by count and time).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
pub struct ReorderStats {
    /// Datagrams waiting in reorder buffers now, summed over flows and workers.
    pub held_now: u64,
    /// Their bytes.
    pub held_bytes: u64,
    /// Datagrams released after waiting, since start.
    pub reordered: u64,
    /// Gap events (a run of missing sequences counts once).
    pub gaps: u64,
    /// Sequence numbers given up as gaps.
    pub gap_seqs: u64,
    /// Longest hold seen since start, µs.
    pub max_hold_us: u64,
    /// Percentiles over the last interval of how long the datagrams released after
    /// waiting waited (`null` before two snapshots, or when none waited in it).
    pub hold_percentiles: Option<LatencyPercentiles>,
}

/// Reassembly of braid fragments.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
pub struct ReassemblyStats {
    /// Datagrams reassembled.
    pub completed: u64,
    /// Datagrams given up (timeout, overlap, caps).
    pub dropped: u64,
    /// Bytes held in reassembly now.
    pub held_bytes: u64,
}

/// Which table a flow is in.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FlowDirection {
    /// vNIC → NICs: classified, placed on NICs by the flow controller.
    Tx,
    /// NICs → vNIC: reassembled and reordered.
    Rx,
}

/// One flow (`GET /v1/flows`, `GET /v1/flows/{id}`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
pub struct Flow {
    /// The flow's id: opaque, stable while the flow lives, unique across the daemon's
    /// workers.
    pub id: u64,
    /// Which table.
    pub direction: FlowDirection,
    /// IP protocol number (6 TCP, 17 UDP).
    #[schema(maximum = 255)]
    pub protocol: u8,
    /// Source address.
    pub src: String,
    /// Destination address.
    pub dst: String,
    /// Source port (0 when the protocol has none).
    #[schema(maximum = 65535)]
    pub src_port: u16,
    /// Destination port (0 when the protocol has none).
    #[schema(maximum = 65535)]
    pub dst_port: u16,
    /// DSCP, when the flow key includes it.
    #[schema(maximum = 63)]
    pub dscp: Option<u8>,
    /// The flow class (by name) it matched (`null`: none, the default policy).
    pub class: Option<String>,
    /// Its QoS class (by name).
    pub qos_class: Option<String>,
    /// Its striping policy.
    pub policy: PolicyName,
    /// The NICs (by name) it uses now.
    pub nics: Vec<String>,
    /// Held on its NIC by an operator (`POST /v1/flows/{id}` with `pin`): the flow
    /// controller does not move it to rebalance, only when the NIC goes down.
    pub pinned: bool,
    /// Measured rate, bit/s.
    pub rate_bps: u64,
    /// Packets, where the table counts them (`null` if not).
    pub packets: Option<u64>,
    /// Bytes, where the table counts them (`null` if not).
    pub bytes: Option<u64>,
    /// Time since its last packet, ms.
    pub idle_ms: u64,
}

/// `GET /v1/flows`: one page.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
pub struct FlowPage {
    /// The flows, by id.
    pub flows: Vec<Flow>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// `POST /v1/flows/{id}`: move a TX flow to one NIC, through the flow controller's
/// admission (a NIC without room refuses it: 409, the flow stays where it was).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowMove {
    /// The NIC (by name) the flow goes to.
    #[schema(min_length = 1)]
    pub nic: String,
    /// `true`: hold it there (no rebalancing moves it; a NIC failure still does). `false`
    /// (default): move it once; the flow controller may rebalance it later.
    #[serde(default)]
    pub pin: bool,
}
