//! The policy document: `[[rules]]`, `[qos]`, `[[tunnels]]`, `[policy]`, `[reorder]`,
//! `[fragmentation]` and `[reassembly]`, the part of braid's configuration that the REST API
//! reads and replaces (`/v1/policies`).
//!
//! What this file owns: the sections' types, which are also the daemon's config file's types
//! for these sections (`crates/braid/src/config.rs` takes them as they are), with their names,
//! defaults and `deny_unknown_fields`: a TOML file and a JSON body are one schema (STYLE §9).
//! What it does not own: the checks between fields and against the NICs (names that must
//! exist, ranges, rule conflicts) and the translation into the engine's types: the daemon
//! does both, for its file and behind [`crate::Daemon::replace_policies`], and its errors
//! name the field (`rules[2].qos`, `reassembly.mem_cap_bytes`).
//!
//! Types only bound what JSON itself can say (integer widths, enums); a value outside a
//! field's documented range is the daemon's to refuse, naming the field.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The policies as one document: what `GET /v1/policies` returns and `PUT /v1/policies`
/// replaces as a whole, atomically (a refusal leaves every section in force).
///
/// Every section may be left out; a missing section is its default (no rules, no tunnels,
/// the default QoS classes, `policy.default = "stripe"`, reorder holds of 5–25 ms, the
/// default split cost model and reassembly caps).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyDocument {
    /// Match → action rules on TX and RX, with conditions on live link state.
    #[serde(default)]
    pub rules: Vec<RuleSection>,
    /// QoS on every NIC's TX queue and the vNIC meters. `null` or missing: the default, a
    /// strict class for latency-critical flows and one weighted class for the rest.
    #[serde(default)]
    pub qos: Option<QosSection>,
    /// VXLAN/GRE tunnels to peers that are not braid.
    #[serde(default)]
    pub tunnels: Vec<TunnelSection>,
    /// The striping policy of traffic no flow class matches.
    #[serde(default)]
    pub policy: PolicySection,
    /// Reorder bounds.
    #[serde(default)]
    pub reorder: ReorderSection,
    /// When a packet is split across NICs: thresholds and the cost model's weights.
    #[serde(default)]
    pub fragmentation: FragmentationSection,
    /// Reassembly of split packets on receipt: memory cap, timeout, caps per datagram.
    #[serde(default)]
    pub reassembly: ReassemblySection,
}

/// The sections of a [`PolicyDocument`], by their names in the file and the API
/// (`/v1/policies/{section}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PolicySectionName {
    /// `[[rules]]`.
    Rules,
    /// `[qos]`.
    Qos,
    /// `[[tunnels]]`.
    Tunnels,
    /// `[policy]`.
    Policy,
    /// `[reorder]`.
    Reorder,
    /// `[fragmentation]`.
    Fragmentation,
    /// `[reassembly]`.
    Reassembly,
}

impl PolicySectionName {
    /// Every section, in document order.
    pub const ALL: [Self; 7] = [
        Self::Rules,
        Self::Qos,
        Self::Tunnels,
        Self::Policy,
        Self::Reorder,
        Self::Fragmentation,
        Self::Reassembly,
    ];

    /// The section's name (`rules`, `qos`, ...).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Rules => "rules",
            Self::Qos => "qos",
            Self::Tunnels => "tunnels",
            Self::Policy => "policy",
            Self::Reorder => "reorder",
            Self::Fragmentation => "fragmentation",
            Self::Reassembly => "reassembly",
        }
    }
}

impl PolicyDocument {
    /// The sections whose content differs between `self` and `other`, in document order.
    #[must_use]
    pub fn changed_sections(&self, other: &Self) -> Vec<PolicySectionName> {
        PolicySectionName::ALL
            .into_iter()
            .filter(|s| match s {
                PolicySectionName::Rules => self.rules != other.rules,
                PolicySectionName::Qos => self.qos != other.qos,
                PolicySectionName::Tunnels => self.tunnels != other.tunnels,
                PolicySectionName::Policy => self.policy != other.policy,
                PolicySectionName::Reorder => self.reorder != other.reorder,
                PolicySectionName::Fragmentation => self.fragmentation != other.fragmentation,
                PolicySectionName::Reassembly => self.reassembly != other.reassembly,
            })
            .collect()
    }
}

/// A striping policy.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PolicyName {
    /// One NIC per flow.
    Pin,
    /// Per packet over several NICs.
    Stripe,
    /// A copy on every NIC (first arrival wins).
    Duplicate,
}

/// `[policy]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    /// Policy for traffic no flow class matches (default `stripe`).
    #[serde(default = "default_policy")]
    pub default: PolicyName,
}

impl Default for PolicySection {
    fn default() -> Self {
        Self {
            default: default_policy(),
        }
    }
}

fn default_policy() -> PolicyName {
    PolicyName::Stripe
}

/// `[reorder]`: how long a flow's packets wait behind a missing one.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReorderSection {
    /// Floor of the hold, ms (default 5). The hold follows the measured delay spread
    /// between the links; this floor covers what probes do not see (a busy host's
    /// scheduling delays). At most `max_hold_ms`.
    #[serde(default = "default_min_hold_ms")]
    #[schema(maximum = 10000)]
    pub min_hold_ms: u32,
    /// Ceiling of the hold, ms (default 25, 1 to 10000): the longest a packet waits for a
    /// missing predecessor.
    #[serde(default = "default_max_hold_ms")]
    #[schema(minimum = 1, maximum = 10000)]
    pub max_hold_ms: u32,
}

impl Default for ReorderSection {
    fn default() -> Self {
        Self {
            min_hold_ms: default_min_hold_ms(),
            max_hold_ms: default_max_hold_ms(),
        }
    }
}

fn default_min_hold_ms() -> u32 {
    5
}
fn default_max_hold_ms() -> u32 {
    25
}

/// `[fragmentation]`: when braid splits one packet across several NICs, and the weights of
/// the cost model that decides (braid-core's scheduler). Per packet, the scheduler compares
/// the packet's expected arrival whole on the best NIC with its arrival split over several,
/// each NIC's share sized to its rate so the pieces land together; a NIC's expected arrival
/// counts its queue, the packet's bytes plus `per_packet_overhead_bytes` per piece, its
/// delay, and its loss rate × `loss_penalty_ms`. Applied from the next packet on.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FragmentationSection {
    /// Packets shorter than this are never split, bytes (default 1200, at most 65535).
    #[serde(default = "default_min_split_bytes")]
    #[schema(maximum = 65535)]
    pub min_split_bytes: u32,
    /// Split only if the split lands at least this much sooner than the packet whole on
    /// the best NIC, µs (default 2, at most 1000000).
    #[serde(default = "default_min_split_gain_us")]
    #[schema(maximum = 1_000_000)]
    pub min_split_gain_us: u32,
    /// The most NICs one packet is split over, 1 (never split) to 32 (default 4).
    #[serde(default = "default_max_split_links")]
    #[schema(minimum = 1, maximum = 32)]
    pub max_split_links: u32,
    /// Also split packets that fit whole in one piece on the best NIC (default false: such
    /// a split lands a little sooner but pays a header per extra piece, several percent of
    /// bulk goodput). Packets larger than the NICs' MTU are split either way.
    #[serde(default)]
    pub split_within_mtu: bool,
    /// Cost-model weight: bytes each piece costs on the wire besides its payload (braid
    /// header + UDP/IP), bytes (default 60, at most 65535).
    #[serde(default = "default_per_packet_overhead_bytes")]
    #[schema(maximum = 65535)]
    pub per_packet_overhead_bytes: u32,
    /// Cost-model weight: the expected cost of a lost piece, charged as the NIC's loss rate
    /// × this, ms (default 10, at most 60000).
    #[serde(default = "default_loss_penalty_ms")]
    #[schema(maximum = 60_000)]
    pub loss_penalty_ms: u32,
}

impl Default for FragmentationSection {
    fn default() -> Self {
        Self {
            min_split_bytes: default_min_split_bytes(),
            min_split_gain_us: default_min_split_gain_us(),
            max_split_links: default_max_split_links(),
            split_within_mtu: false,
            per_packet_overhead_bytes: default_per_packet_overhead_bytes(),
            loss_penalty_ms: default_loss_penalty_ms(),
        }
    }
}

fn default_min_split_bytes() -> u32 {
    1200
}
fn default_min_split_gain_us() -> u32 {
    2
}
fn default_max_split_links() -> u32 {
    4
}
fn default_per_packet_overhead_bytes() -> u32 {
    60
}
fn default_loss_penalty_ms() -> u32 {
    10
}

/// `[reassembly]`: how the receiving side puts split packets back together (braid-core's
/// reassembler, one per data-path worker). Applied at once, to the datagrams being
/// reassembled too: a lower memory cap drops the oldest until the rest fits, a lower
/// `max_datagram_bytes` or `max_fragments` drops those that no longer fit (each counted as
/// `reassembly_evicted`), a shorter timeout expires them sooner.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReassemblySection {
    /// Cap on the memory that datagrams being reassembled hold, per worker, bytes (default
    /// 67108864, 64 MiB; at least 1). At the cap new datagrams are refused
    /// (`reassembly_memory_cap`); memory is counted in the store's slots (a 3000-byte
    /// datagram holds 4096 bytes).
    #[serde(default = "default_mem_cap_bytes")]
    #[schema(minimum = 1)]
    pub mem_cap_bytes: u64,
    /// How long a datagram may take to arrive whole, from its first piece (never extended),
    /// ms (default 250, 1 to 60000).
    #[serde(default = "default_reassembly_timeout_ms")]
    #[schema(minimum = 1, maximum = 60_000)]
    pub timeout_ms: u32,
    /// The most pieces one datagram may come in (default 64; 1 to 64, or to the value braid
    /// started with if that is higher: the room for them is allocated at start, so a higher
    /// value needs a restart).
    #[serde(default = "default_max_fragments")]
    #[schema(minimum = 1)]
    pub max_fragments: u16,
    /// The largest datagram reassembled, bytes (default 65535; at least `vnic.mtu`, at most
    /// 65535).
    #[serde(default = "default_max_datagram_bytes")]
    #[schema(maximum = 65535)]
    pub max_datagram_bytes: u32,
}

impl Default for ReassemblySection {
    fn default() -> Self {
        Self {
            mem_cap_bytes: default_mem_cap_bytes(),
            timeout_ms: default_reassembly_timeout_ms(),
            max_fragments: default_max_fragments(),
            max_datagram_bytes: default_max_datagram_bytes(),
        }
    }
}

fn default_mem_cap_bytes() -> u64 {
    64 << 20
}
fn default_reassembly_timeout_ms() -> u32 {
    250
}
fn default_max_fragments() -> u16 {
    64
}
fn default_max_datagram_bytes() -> u32 {
    65_535
}

/// `[qos]`: the scheduler of every NIC's TX queue (one per NIC, same classes) and the
/// meters applied per packet at the vNIC.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QosSection {
    /// DRR bytes per turn for weight 1 (default and minimum: the largest packet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantum_bytes: Option<u32>,
    /// The classes, 1 to 8; at most one strict, at least one weighted.
    pub classes: Vec<QosClassSection>,
}

/// `[[qos.classes]]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QosClassSection {
    /// Name, what flow classes and rules refer to (unique).
    pub name: String,
    /// Strict priority: sent before every other class (at most one class).
    #[serde(default)]
    pub strict: bool,
    /// A weighted class's share (DRR), 1..=65536 (default 1). Not with `strict`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 65536)]
    pub weight: Option<u32>,
    /// Strict class only: its starvation guard's rate (`50mbit`); beyond it (and
    /// `guard_burst_bytes`) the strict class yields to weighted classes with packets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard_rate: Option<String>,
    /// The guard's burst, bytes (needed with `guard_rate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard_burst_bytes: Option<u32>,
    /// Queue limit per NIC, packets (default 8192).
    #[serde(default = "default_qos_queue_packets")]
    pub queue_packets: u32,
    /// Queue limit per NIC, bytes (default 4 MiB).
    #[serde(default = "default_qos_queue_bytes")]
    pub queue_bytes: u32,
    /// A meter applied to every packet of the class at the vNIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter: Option<MeterSection>,
    /// Drop the packets the meter colours Red (police) instead of sending them.
    #[serde(default)]
    pub drop_red: bool,
}

fn default_qos_queue_packets() -> u32 {
    8192
}
fn default_qos_queue_bytes() -> u32 {
    4 << 20
}

/// `[qos.classes.meter]`: RFC 2697 (`srtcm`) or RFC 2698 (`trtcm`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MeterSection {
    /// `srtcm` (single rate, RFC 2697) or `trtcm` (two rates, RFC 2698).
    #[serde(rename = "type")]
    pub kind: MeterKindName,
    /// Committed information rate, `10mbit`.
    pub cir: String,
    /// Committed burst size, bytes.
    pub cbs_bytes: u32,
    /// srTCM: excess burst size, bytes (default 0: no Yellow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ebs_bytes: Option<u32>,
    /// trTCM: peak information rate (at least `cir`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pir: Option<String>,
    /// trTCM: peak burst size, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pbs_bytes: Option<u32>,
    /// Colour-aware (RFC 2697/2698 §3) instead of colour-blind. braid colours nothing
    /// upstream yet, so both behave alike for now.
    #[serde(default)]
    pub color_aware: bool,
}

/// `srtcm` or `trtcm`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MeterKindName {
    /// RFC 2697.
    Srtcm,
    /// RFC 2698.
    Trtcm,
}

/// `[[tunnels]]`: a VXLAN (RFC 7348) or GRE (RFC 2784/2890) tunnel to a peer that is not
/// braid.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TunnelSection {
    /// A name, what flow classes and rules refer to (unique).
    pub name: String,
    /// `vxlan` or `gre`.
    pub kind: TunnelKindName,
    /// The NIC (by name) the outer packets leave on; `local` is an address of its device.
    pub nic: String,
    /// The local tunnel endpoint (an IP address of the NIC's device).
    pub local: String,
    /// The remote tunnel endpoint.
    pub remote: String,
    /// VXLAN: the VNI, 0..=16777215 (needed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 16_777_215)]
    pub vni: Option<u32>,
    /// VXLAN: the UDP destination port, which braid also listens on (default 4789).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 65535)]
    pub port: Option<u16>,
    /// VXLAN: the UDP source ports, picked by flow hash, `N-M` (default 49152-65535, RFC
    /// 7348 §5; Linux uses 32768-60999).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_ports: Option<String>,
    /// VXLAN over IPv4: compute the UDP checksum (default false: 0, as RFC 7348 allows and
    /// Linux sends; over IPv6 it is always computed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_checksum: Option<bool>,
    /// VXLAN: braid's MAC in the inner Ethernet header (default 02:62:72:61:69:64). The far
    /// end's neighbour entry for braid's vNIC address must give this MAC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inner_src_mac: Option<String>,
    /// VXLAN: the far end's MAC, its VXLAN device's address (needed: a Linux VXLAN device
    /// drops frames to another address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inner_dst_mac: Option<String>,
    /// GRE: the key (RFC 2890 §2.1), sent and required on receipt (default: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<u32>,
    /// GRE: send sequence numbers and require in-order ones on receipt (RFC 2890 §2.2;
    /// default false). Needs `vnic.queues = 1`: each worker would number its own packets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<bool>,
    /// GRE: send a checksum (RFC 2784 §2.5; default false). Received checksums are always
    /// verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<bool>,
    /// Outer TTL / hop limit, 1..=255 (default 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 255)]
    pub ttl: Option<u8>,
    /// Outer TOS / traffic class byte (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 255)]
    pub tos: Option<u8>,
    /// IPv4: set Don't Fragment on the outer header (default false, as Linux VXLAN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub df: Option<bool>,
}

/// `vxlan` or `gre`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TunnelKindName {
    /// VXLAN over UDP.
    Vxlan,
    /// GRE.
    Gre,
}

/// `[[rules]]`: match → actions. Every match field given must match (none given matches
/// every packet); at least one action.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleSection {
    /// A name for reports and errors (unique).
    pub name: String,
    /// Lower wins (default 100). Two rules of one priority whose matches overlap must do
    /// the same thing.
    #[serde(default = "default_priority")]
    pub priority: u32,
    /// `tx` (the vNIC's packets on their way out, the default) or `rx` (packets going to
    /// the vNIC: rewrites and drop only).
    #[serde(default)]
    pub direction: DirectionName,

    // --- match.
    /// `udp`, `tcp` or a protocol number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Source prefix, `10.0.0.0/8` or `fd00::/8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    /// Destination prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    /// `N` or `N-M` (needs `protocol` udp or tcp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_ports: Option<String>,
    /// `N` or `N-M` (needs `protocol` udp or tcp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_ports: Option<String>,
    /// DSCP value 0..=63.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 63)]
    pub dscp: Option<u8>,
    /// RX: the 802.1Q VLAN id of a VXLAN tunnel's tagged inner frame, 1..=4094 (the
    /// daemon's vNIC is TUN: its own packets have none, so not on TX).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 4094)]
    pub vlan: Option<u16>,
    /// VXLAN VNI of an encapsulated packet, 0..=16777215.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 16_777_215)]
    pub vni: Option<u32>,

    // --- actions.
    /// Set the DSCP, 0..=63.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 63)]
    pub set_dscp: Option<u8>,
    /// Set the ECN field, 0..=3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 3)]
    pub set_ecn: Option<u8>,
    /// Set the TTL / hop limit, 1..=255.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 255)]
    pub set_ttl: Option<u8>,
    /// Rewrite the source address (the IP version of `src`/`dst`, which must be given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_src: Option<String>,
    /// Rewrite the destination address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_dst: Option<String>,
    /// Rewrite the TCP/UDP source port (needs `protocol` udp or tcp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 65535)]
    pub set_src_port: Option<u16>,
    /// Rewrite the TCP/UDP destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 65535)]
    pub set_dst_port: Option<u16>,
    /// TX: the QoS class (by name) the flow's packets are queued in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<String>,
    /// TX: `pin`, `stripe` or `duplicate`, over `nics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyName>,
    /// TX: the NICs (by name) for `policy` (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nics: Option<Vec<String>>,
    /// TX: encapsulate the flow for this tunnel (by name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<String>,
    /// TX: push an 802.1Q tag with this VLAN id, 1..=4094, into the inner Ethernet header
    /// of the VXLAN tunnel the flow goes into (this rule's `tunnel`, or its class's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 4094)]
    pub push_vlan: Option<u16>,
    /// TX, with `push_vlan`: the tag's priority code point, 0..=7 (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 7)]
    pub vlan_pcp: Option<u8>,
    /// RX: accept a VXLAN tunnel's inner frame tagged 802.1Q, and remove the tag before its
    /// IP packet goes to the vNIC (a tagged frame no such rule matches is dropped).
    #[serde(default)]
    pub pop_vlan: bool,
    /// Drop the packets (no other action).
    #[serde(default)]
    pub drop: bool,
    /// Active only while this condition on live link state holds (default: always).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<WhenSection>,
}

fn default_priority() -> u32 {
    100
}

/// `tx` or `rx`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DirectionName {
    /// vNIC → NICs.
    #[default]
    Tx,
    /// NICs → vNIC.
    Rx,
}

/// `[rules.when]`: one metric with its on threshold (and optional off threshold:
/// hysteresis), the links it watches and a minimum hold.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WhenSection {
    /// On when the probe loss of one of `links` is at least this, percent (0.1 % steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_above_percent: Option<f64>,
    /// With `loss_above_percent`: off again when the loss is at most this (default half
    /// of it); must be below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below_percent: Option<f64>,
    /// On when the smoothed RTT of one of `links` is at least this, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_above_ms: Option<f64>,
    /// With `rtt_above_ms`: off again at most this (default half of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below_ms: Option<f64>,
    /// On while at least this many of `links` are degraded or down (off below it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded_links: Option<u32>,
    /// On while at least this many of `links` are down (off below it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_links: Option<u32>,
    /// The links watched, by NIC name (default: every NIC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<Vec<String>>,
    /// The least time between two switches, ms (default 0): no flapping faster than it.
    #[serde(default)]
    pub hold_ms: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file's TOML and the API's JSON are one schema: a policy part of a config file
    /// parses into the document, and the document goes through JSON unchanged.
    #[test]
    fn toml_and_json_are_one_schema() {
        let text = r#"
            [[rules]]
            name = "feed"
            protocol = "udp"
            dst_ports = "5000-5010"
            policy = "duplicate"
            when = { loss_above_percent = 1.0, links = ["a"] }

            [qos]
            classes = [
              { name = "rt", strict = true },
              { name = "bulk", weight = 3, meter = { type = "srtcm", cir = "10mbit", cbs_bytes = 3000 } },
            ]

            [[tunnels]]
            name = "t0"
            kind = "vxlan"
            nic = "a"
            local = "10.0.0.1"
            remote = "10.0.0.2"
            vni = 42

            [policy]
            default = "pin"

            [reorder]
            max_hold_ms = 40

            [fragmentation]
            min_split_bytes = 3000
            split_within_mtu = true

            [reassembly]
            mem_cap_bytes = 1048576
            timeout_ms = 100
        "#;
        let doc: PolicyDocument = toml::from_str(text).expect("valid policy TOML");
        assert_eq!(doc.rules[0].priority, 100, "default priority");
        assert_eq!(doc.rules[0].policy, Some(PolicyName::Duplicate));
        let qos = doc.qos.as_ref().expect("qos given");
        assert_eq!(qos.classes[1].queue_packets, 8192);
        assert_eq!(
            qos.classes[1].meter.as_ref().map(|m| m.cbs_bytes),
            Some(3000)
        );
        assert_eq!(doc.tunnels[0].vni, Some(42));
        assert_eq!(doc.policy.default, PolicyName::Pin);
        assert_eq!(doc.reorder.min_hold_ms, 5, "default floor");
        assert_eq!(doc.reorder.max_hold_ms, 40);
        assert_eq!(
            doc.fragmentation,
            FragmentationSection {
                min_split_bytes: 3000,
                split_within_mtu: true,
                ..FragmentationSection::default()
            }
        );
        assert_eq!(doc.fragmentation.max_split_links, 4, "default");
        assert_eq!(
            (doc.reassembly.mem_cap_bytes, doc.reassembly.timeout_ms),
            (1_048_576, 100)
        );
        assert_eq!(doc.reassembly.max_fragments, 64, "default");

        let json = serde_json::to_string(&doc).expect("serialises");
        let back: PolicyDocument = serde_json::from_str(&json).expect("parses back");
        assert_eq!(back, doc);
    }

    #[test]
    fn unknown_fields_are_refused_everywhere() {
        for (text, field) in [
            (r#"{"rule": []}"#, "rule"),
            (
                r#"{"rules": [{"name": "x", "drop": true, "prio": 1}]}"#,
                "prio",
            ),
            (r#"{"qos": {"classes": [], "quantum": 1}}"#, "quantum"),
            (r#"{"reorder": {"max_hold": 3}}"#, "max_hold"),
            (r#"{"policy": {"default": "pin", "x": 1}}"#, "x"),
            (
                r#"{"fragmentation": {"min_split_gain": 3}}"#,
                "min_split_gain",
            ),
            (r#"{"reassembly": {"timeout": 3}}"#, "timeout"),
            (
                r#"{"tunnels": [{"name":"t","kind":"gre","nic":"a","local":"1.1.1.1","remote":"2.2.2.2","vni2":1}]}"#,
                "vni2",
            ),
        ] {
            let err = serde_json::from_str::<PolicyDocument>(text).expect_err(text);
            assert!(
                err.to_string()
                    .contains(&format!("unknown field `{field}`")),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn an_empty_document_is_every_default() {
        let doc: PolicyDocument = serde_json::from_str("{}").expect("empty is valid");
        assert_eq!(doc, PolicyDocument::default());
        assert_eq!(doc.policy.default, PolicyName::Stripe);
        assert_eq!((doc.reorder.min_hold_ms, doc.reorder.max_hold_ms), (5, 25));
        // The engine's defaults (braid-core's SchedulerConfig and ReassemblyConfig).
        let f = &doc.fragmentation;
        assert_eq!(
            (
                f.min_split_bytes,
                f.min_split_gain_us,
                f.max_split_links,
                f.split_within_mtu,
                f.per_packet_overhead_bytes,
                f.loss_penalty_ms
            ),
            (1200, 2, 4, false, 60, 10)
        );
        let r = &doc.reassembly;
        assert_eq!(
            (
                r.mem_cap_bytes,
                r.timeout_ms,
                r.max_fragments,
                r.max_datagram_bytes
            ),
            (64 << 20, 250, 64, 65_535)
        );
    }

    /// A value JSON cannot hold in the field's type names the field, with its path.
    #[test]
    fn type_errors_name_the_new_sections_fields() {
        for (text, path) in [
            (
                r#"{"reassembly": {"max_fragments": 70000}}"#,
                "reassembly.max_fragments",
            ),
            (
                r#"{"reassembly": {"mem_cap_bytes": -5}}"#,
                "reassembly.mem_cap_bytes",
            ),
            (
                r#"{"fragmentation": {"split_within_mtu": "yes"}}"#,
                "fragmentation.split_within_mtu",
            ),
        ] {
            let de = &mut serde_json::Deserializer::from_str(text);
            let err = serde_path_to_error::deserialize::<_, PolicyDocument>(de).expect_err(text);
            assert_eq!(err.path().to_string(), path, "{text}");
        }
    }

    #[test]
    fn changed_sections_names_only_what_differs() {
        let a = PolicyDocument::default();
        let mut b = a.clone();
        assert!(a.changed_sections(&b).is_empty());
        b.reorder.max_hold_ms = 30;
        b.policy.default = PolicyName::Pin;
        b.reassembly.timeout_ms = 100;
        assert_eq!(
            a.changed_sections(&b),
            [
                PolicySectionName::Policy,
                PolicySectionName::Reorder,
                PolicySectionName::Reassembly
            ]
        );
        b.fragmentation.max_split_links = 1;
        assert_eq!(a.changed_sections(&b).len(), 4);
    }
}
