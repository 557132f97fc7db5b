//! The daemon's configuration file (`braid run --config braid.toml`): one schema, parsed with
//! serde (`deny_unknown_fields` everywhere), then checked as a whole. Every error names the
//! field (`nics[1].peer`, `classes[0].dst_ports`) and says what is allowed.
//!
//! What this module owns: the file's schema, its validation and its translation into the
//! engine's [`EngineConfig`]. What it does not: opening devices (the `run` module, with
//! braid-io) or reading the key file (braid-io's `keyfile`, which checks its permissions).
//!
//! One schema: the policy sections (`[[rules]]`, `[qos]`, `[[tunnels]]`, `[policy]`,
//! `[reorder]`, `[fragmentation]`, `[reassembly]`) are braid-control's types, those of the
//! REST API's policy document (`braid_control::schema::policy`), taken here as they are;
//! this module checks them and translates them into the engine's types, for a file and for
//! a document alike ([`Config::check`]), so both get the same errors, naming the field.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
pub(crate) use braid_control::schema::{
    FragmentationSection, MeterKindName, PolicyName, PolicySection, QosSection, ReassemblySection,
    ReorderSection, RuleSection, TunnelSection,
};
use braid_core::engine::{ClassMatch, ClassPolicy, EngineConfig, FlowClass, NicSpec};
use braid_core::qos::{
    ClassConfig as QosClassConfig, ClassId, ClassKind, MeterConfig, MeterMode, QosConfig,
    RateConfig, SrTcmConfig, TrTcmConfig,
};
use braid_core::scheduler::SchedulerConfig;
use braid_core::{NicId, NicSet};
use serde::{Deserialize, Serialize};

mod rules;
mod tunnels;
pub(crate) use rules::build_tables as build_rule_tables;

/// The whole file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// The virtual NIC.
    pub vnic: VnicSection,
    /// The peer at the other end of the NICs.
    pub peer: PeerSection,
    /// The NICs, one entry each; their order gives the NIC ids (link ids on the wire), so
    /// both peers must list them in the same order.
    pub nics: Vec<NicSection>,
    /// Flow classes, first match wins.
    #[serde(default)]
    pub classes: Vec<ClassSection>,
    /// VXLAN/GRE tunnels to peers that are not braid (`config/tunnels.rs`).
    #[serde(default)]
    pub tunnels: Vec<TunnelSection>,
    /// Match → action rules on TX and RX, with conditions on live link state
    /// (`config/rules.rs`).
    #[serde(default)]
    pub rules: Vec<RuleSection>,
    /// Policies for traffic no class matches.
    #[serde(default)]
    pub policy: PolicySection,
    /// QoS on every NIC's TX queue and the vNIC meters (default: a strict class for the
    /// latency-critical classes and one weighted class for the rest).
    #[serde(default)]
    pub qos: Option<QosSection>,
    /// Reorder bounds.
    #[serde(default)]
    pub reorder: ReorderSection,
    /// When a packet is split across NICs: thresholds and cost-model weights.
    #[serde(default)]
    pub fragmentation: FragmentationSection,
    /// Reassembly of split packets on receipt: memory cap, timeout, caps per datagram.
    #[serde(default)]
    pub reassembly: ReassemblySection,
    /// Daemon settings.
    #[serde(default)]
    pub daemon: DaemonSection,
    /// The REST API (`crates/braid/src/api.rs`); no section, no API.
    #[serde(default)]
    pub api: Option<ApiSection>,
}

/// `[api]`: the REST control API (braid-control's `ControlConfig`, plus where the policies
/// set through it persist). Present: `braid run` serves it; absent: no API.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApiSection {
    /// Address and port to listen on (default `127.0.0.1:7780`: this host only).
    #[serde(default = "default_api_listen")]
    pub listen: String,
    /// The bearer token's file: mode 0600, owned by the user running braid (needed).
    pub token_file: PathBuf,
    /// The audit log, JSON lines (default `<state_dir>/audit.jsonl`).
    #[serde(default)]
    pub audit_log: Option<PathBuf>,
    /// Where the policies set through the API are kept (default `<state_dir>/policies.toml`).
    #[serde(default)]
    pub policies_file: Option<PathBuf>,
    /// The directory of the two files above when they are not named (default
    /// `/var/lib/braid`; created 0700 if missing).
    #[serde(default = "default_api_state_dir")]
    pub state_dir: PathBuf,
    /// Failed authentications a client may make in a burst (default 10).
    #[serde(default = "default_auth_failure_burst")]
    pub auth_failure_burst: u32,
    /// One failed authentication more is allowed per this many ms (default 6000).
    #[serde(default = "default_auth_failure_refill_ms")]
    pub auth_failure_refill_ms: u64,
}

impl ApiSection {
    /// The audit log's path.
    pub(crate) fn audit_log(&self) -> PathBuf {
        self.audit_log
            .clone()
            .unwrap_or_else(|| self.state_dir.join("audit.jsonl"))
    }

    /// The policies file's path.
    pub(crate) fn policies_file(&self) -> PathBuf {
        self.policies_file
            .clone()
            .unwrap_or_else(|| self.state_dir.join("policies.toml"))
    }
}

fn default_api_listen() -> String {
    format!("127.0.0.1:{}", braid_control::DEFAULT_PORT)
}
fn default_api_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/braid")
}
fn default_auth_failure_burst() -> u32 {
    10
}
fn default_auth_failure_refill_ms() -> u64 {
    6000
}

/// `[vnic]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct VnicSection {
    /// Device name, at most 15 bytes.
    pub name: String,
    /// `tun` (IP packets) or `tap` (Ethernet frames).
    #[serde(default)]
    pub kind: VnicKindName,
    /// Addresses with prefix length, e.g. `10.99.0.1/24`.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// MTU; may exceed the NICs'.
    #[serde(default = "default_vnic_mtu")]
    pub mtu: u32,
    /// Number of queues (multi-queue TUN), 1..=256.
    #[serde(default = "one")]
    pub queues: u16,
    /// Try the virtio-net header offloads (TSO/USO/GRO); probed at run time.
    #[serde(default = "yes")]
    pub offload: bool,
    /// RSS over the queues.
    #[serde(default)]
    pub rss: Option<RssSection>,
}

/// `tun` or `tap`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum VnicKindName {
    /// IP packets.
    #[default]
    Tun,
    /// Ethernet frames.
    Tap,
}

/// `[vnic.rss]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct RssSection {
    /// The 40-byte Toeplitz key as 80 hex digits (default: the Microsoft key).
    #[serde(default)]
    pub key: Option<String>,
    /// Queue of each bucket (default: round robin over 128 buckets).
    #[serde(default)]
    pub indirection: Option<Vec<u16>>,
}

/// `[peer]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct PeerSection {
    /// `a` or `b`; the two peers must differ.
    pub role: RoleName,
    /// The pre-shared key (64 hex digits), in a file only its owner can read. No file: no
    /// authentication (not recommended outside a lab).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Encrypt payloads (AES-256-GCM) as well as authenticate them. Unset: `true` when
    /// there is a `key_file` (on CPUs with AES instructions it is also cheaper than the
    /// MAC-only AES-GMAC), `false` without one.
    #[serde(default)]
    pub encrypt: Option<bool>,
}

impl PeerSection {
    /// Whether braid packets are encrypted: as set, or by default whenever there is a key.
    pub(crate) fn encrypt(&self) -> bool {
        self.encrypt.unwrap_or(self.key_file.is_some())
    }
}

/// `a` or `b`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RoleName {
    /// Side a.
    A,
    /// Side b.
    B,
}

/// `[[nics]]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct NicSection {
    /// A name for logs and reports (unique).
    pub name: String,
    /// The Linux interface the NIC's socket is bound to.
    pub device: String,
    /// `udp` or `ethernet`.
    #[serde(default)]
    pub transport: TransportName,
    /// UDP: local address and port.
    #[serde(default)]
    pub local: Option<String>,
    /// UDP: the peer's address and port.
    #[serde(default)]
    pub peer: Option<String>,
    /// Ethernet: the peer's MAC address.
    #[serde(default)]
    pub peer_mac: Option<String>,
    /// `100mbit`, `1gbit`, ... or `auto` (measured while traffic runs, from the device's
    /// speed or 1 Gbit/s on).
    pub capacity: String,
    /// The link MTU (default: the device's).
    #[serde(default)]
    pub mtu: Option<u32>,
    /// UDP segmentation offload on send.
    #[serde(default = "yes")]
    pub gso: bool,
    /// UDP receive offload.
    #[serde(default = "yes")]
    pub gro: bool,
}

/// How a NIC carries braid packets.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TransportName {
    /// UDP (works across routers).
    #[default]
    Udp,
    /// Raw Ethernet with braid's EtherType (same L2 only).
    Ethernet,
}

/// `[[classes]]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClassSection {
    /// Name for reports.
    pub name: String,
    /// `udp`, `tcp` or a protocol number.
    #[serde(default)]
    pub protocol: Option<String>,
    /// `N` or `N-M`.
    #[serde(default)]
    pub dst_ports: Option<String>,
    /// `N` or `N-M`.
    #[serde(default)]
    pub src_ports: Option<String>,
    /// DSCP value 0..=63.
    #[serde(default)]
    pub dscp: Option<u8>,
    /// `pin`, `stripe` or `duplicate`.
    pub policy: PolicyName,
    /// NIC names the class may use (default: all).
    #[serde(default)]
    pub nics: Option<Vec<String>>,
    /// Strict priority over other traffic on every NIC: the strict class of `[qos]`
    /// unless `qos` names another.
    #[serde(default)]
    pub latency_critical: bool,
    /// The `[[qos.classes]]` entry (by name) of the class's flows. Default: the strict
    /// class for a latency-critical class, else the first weighted class.
    #[serde(default)]
    pub qos: Option<String>,
    /// The `[[tunnels]]` entry (by name) the class's flows are encapsulated for, instead of
    /// going to the braid peer (`policy`, `nics` and `qos` then do not apply).
    #[serde(default)]
    pub tunnel: Option<String>,
}

/// `[daemon]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct DaemonSection {
    /// A JSON snapshot of the counters, rewritten atomically every second and at exit.
    #[serde(default)]
    pub stats_file: Option<PathBuf>,
    /// Pin the data-path worker to this CPU (0-based). Default: not pinned.
    #[serde(default)]
    pub cpu: Option<usize>,
    /// Run the data-path workers in `SCHED_FIFO` at this priority (1–99). Default: the
    /// normal scheduler. See [`braid_io::sched`].
    #[serde(default)]
    pub realtime_priority: Option<u8>,
    /// After a turn that moved packets, keep polling for this many µs before sleeping
    /// (default [`DEFAULT_BUSY_POLL_US`]; 0: never). Saves a thread wake-up per packet on a
    /// quiet link, at the cost of a busy core while traffic flows.
    #[serde(default = "default_busy_poll_us")]
    pub busy_poll_us: u32,
    /// Who reads each NIC with several workers: `"per-worker"` (the default: every worker
    /// its own socket on every NIC, sorted by the kernel) or `"per-nic"` (NIC n read by
    /// worker n mod vnic.queues, which hands other workers' packets over the channel).
    #[serde(default)]
    pub receive: ReceiveMode,
}

/// `daemon.receive`: how the workers share the NICs' receive side.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum ReceiveMode {
    /// Every worker has its own socket (port base + k, or its own EtherType) on every NIC,
    /// and the kernel's socket lookup hands each braid packet to the worker of its session.
    #[default]
    PerWorker,
    /// NIC n is read by worker n mod K only; a packet of another worker's session (the lane
    /// in its header) reaches that worker through the inter-NIC channel.
    PerNic,
}

impl ReceiveMode {
    /// The worker that reads NIC `nic` for worker `worker`'s session, with `workers` workers.
    pub(crate) fn reader(self, nic: usize, worker: usize, workers: usize) -> usize {
        match self {
            Self::PerWorker => worker,
            Self::PerNic => nic % workers.max(1),
        }
    }
}

impl Default for DaemonSection {
    fn default() -> Self {
        Self {
            stats_file: None,
            cpu: None,
            realtime_priority: None,
            busy_poll_us: DEFAULT_BUSY_POLL_US,
            receive: ReceiveMode::default(),
        }
    }
}

/// `daemon.busy_poll_us` by default: braid serves latency-critical feeds, and on a VM the
/// wake-up of a sleeping worker is most of what braid adds to a round trip
/// (docs/benchmarks.md, "Busy polling"). 50 µs covers the gap between a request and its
/// answer on a fast path; `busy_poll_us = 0` gives the CPU back where latency matters less.
pub(crate) const DEFAULT_BUSY_POLL_US: u32 = 50;

fn default_busy_poll_us() -> u32 {
    DEFAULT_BUSY_POLL_US
}

fn default_vnic_mtu() -> u32 {
    1500
}
fn one() -> u16 {
    1
}
fn yes() -> bool {
    true
}

/// The engine's policy for a policy name of the file or the API.
pub(crate) fn class_policy(p: PolicyName) -> ClassPolicy {
    match p {
        PolicyName::Pin => ClassPolicy::Pin,
        PolicyName::Stripe => ClassPolicy::Stripe,
        PolicyName::Duplicate => ClassPolicy::Duplicate,
    }
}

/// A NIC's capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Capacity {
    /// Configured, bit/s.
    Bps(u64),
    /// Estimated by the engine from the delivery rate the peer reports (braid-core's
    /// `health::capacity`), starting from the device's speed (or 1 Gbit/s).
    Auto,
}

/// Where a NIC sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// UDP from `local` to `peer`.
    Udp {
        /// Local address and port.
        local: SocketAddr,
        /// Peer address and port.
        peer: SocketAddr,
    },
    /// Raw Ethernet to `peer_mac`.
    Ethernet {
        /// The peer's MAC.
        peer_mac: [u8; 6],
    },
}

/// A NIC after validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NicPlan {
    /// Id (index in the file).
    pub id: NicId,
    /// Name.
    pub name: String,
    /// Linux interface.
    pub device: String,
    /// Transport and addresses.
    pub endpoint: Endpoint,
    /// Capacity.
    pub capacity: Capacity,
    /// Link MTU if configured.
    pub mtu: Option<u32>,
    /// GSO allowed.
    pub gso: bool,
    /// GRO allowed.
    pub gro: bool,
}

impl NicPlan {
    /// Bytes the transport puts in front of each braid packet within the link MTU (which
    /// counts the Ethernet payload, not the Ethernet header): IPv4/IPv6 + UDP for UDP, none
    /// for raw Ethernet, whose braid packet is the whole payload.
    pub(crate) fn transport_overhead(&self) -> u32 {
        match &self.endpoint {
            Endpoint::Udp { peer, .. } if peer.is_ipv6() => 48,
            Endpoint::Udp { .. } => 28,
            Endpoint::Ethernet { .. } => 0,
        }
    }

    /// Bytes each braid packet costs on the link beyond itself, as the link's rate counts
    /// them: the transport's headers plus the Ethernet header (14) that `tc` and a NIC's
    /// line rate count too. Pacing with less would overrun the link a little on every
    /// packet and fill the queues below braid (a TBF at exactly the configured rate, here).
    pub(crate) fn wire_overhead(&self) -> u32 {
        self.transport_overhead() + 14
    }
}

/// The file, checked: everything the daemon needs, with the engine's config still missing
/// what only the running system knows (link MTUs and `auto` capacities, the key, the seed).
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    /// The file as parsed.
    pub file: Config,
    /// Addresses of the vNIC.
    pub vnic_addresses: Vec<(IpAddr, u8)>,
    /// The RSS key (40 bytes).
    pub rss_key: Option<[u8; braid_core::rss::KEY_BYTES]>,
    /// The NICs.
    pub nics: Vec<NicPlan>,
    /// Flow classes for the engine.
    pub classes: Vec<FlowClass>,
    /// The QoS configuration for the engine (`max_packet_bytes` = `vnic.mtu`: the engine
    /// raises it to the largest NIC MTU itself).
    pub qos: QosConfig,
    /// The tunnels for the engine, in file order (their ids); `mtu_bytes` is set from the
    /// NIC's link MTU by [`Plan::engine_config`].
    pub tunnels: Vec<braid_core::engine::TunnelSpec>,
    /// `[[rules]]` for the engine (TX and RX lists), each traced to its entry.
    pub rules: rules::RulePlan,
    /// The QoS classes' names, by class id (`[qos]`'s, or the default classes').
    pub qos_names: Vec<String>,
}

impl Config {
    /// Read and check a file.
    pub(crate) fn load(path: &Path) -> Result<Plan> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in config file {}", path.display()))
    }

    /// Parse and check a file's text.
    pub(crate) fn parse(text: &str) -> Result<Plan> {
        let file: Self = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        file.check()
    }

    /// Check a parsed file as a whole (what [`Config::parse`] does after parsing).
    pub(crate) fn check(self) -> Result<Plan> {
        let v = &self.vnic;
        if v.name.is_empty() || v.name.len() > 15 || v.name.contains(['/', ' ', '\0']) {
            bail!(
                "vnic.name: {:?} must be 1 to 15 bytes, no '/' or spaces",
                v.name
            );
        }
        if !(68..=65_535).contains(&v.mtu) {
            bail!("vnic.mtu: {} must be between 68 and 65535", v.mtu);
        }
        if v.queues == 0 || v.queues > braid_core::rss::MAX_QUEUES {
            bail!(
                "vnic.queues: {} must be between 1 and {}",
                v.queues,
                braid_core::rss::MAX_QUEUES
            );
        }
        let mut vnic_addresses = Vec::new();
        for (i, a) in v.addresses.iter().enumerate() {
            vnic_addresses
                .push(parse_prefix(a).with_context(|| format!("vnic.addresses[{i}]: {a:?}"))?);
        }
        let mut rss_key = None;
        if let Some(rss) = &v.rss {
            if let Some(k) = &rss.key {
                let bytes = hex_bytes(k).context("vnic.rss.key: must be hex")?;
                rss_key = Some(bytes.try_into().map_err(|b: Vec<u8>| {
                    anyhow::anyhow!(
                        "vnic.rss.key: {} bytes, must be 40 (80 hex digits)",
                        b.len()
                    )
                })?);
            }
            if let Some(t) = &rss.indirection {
                if t.is_empty() || t.len() > braid_core::rss::MAX_INDIRECTION_LEN {
                    bail!(
                        "vnic.rss.indirection: {} entries, must be 1 to {}",
                        t.len(),
                        braid_core::rss::MAX_INDIRECTION_LEN
                    );
                }
                if let Some((i, q)) = t.iter().enumerate().find(|(_, q)| **q >= v.queues) {
                    bail!(
                        "vnic.rss.indirection[{i}]: queue {q} does not exist (vnic.queues = {})",
                        v.queues
                    );
                }
            }
        }

        if self.daemon.receive == ReceiveMode::PerNic
            && self.vnic.queues > u16::from(braid_wire::BRAID_MAX_LANES)
        {
            bail!(
                "daemon.receive: \"per-nic\" supports vnic.queues up to {} (the lane in the \
                 braid header has 4 bits); it is {}",
                braid_wire::BRAID_MAX_LANES,
                self.vnic.queues
            );
        }
        if self.daemon.busy_poll_us > 1_000 {
            bail!(
                "daemon.busy_poll_us: {} is above 1000 (1 ms); a few tens of µs cover a round \
                 trip, and longer only burns CPU",
                self.daemon.busy_poll_us
            );
        }
        if let Some(p) = self.daemon.realtime_priority
            && !braid_io::sched::PRIORITIES.contains(&p)
        {
            bail!(
                "daemon.realtime_priority: {p} is outside 1-99 (the SCHED_FIFO priorities; \
                 leave it out for the normal scheduler)"
            );
        }
        if let Some(cpu) = self.daemon.cpu
            && cpu >= rustix::thread::CpuSet::MAX_CPU
        {
            bail!(
                "daemon.cpu: {cpu} is above the largest CPU number, {}",
                rustix::thread::CpuSet::MAX_CPU - 1
            );
        }
        let r = &self.reorder;
        if r.max_hold_ms == 0 || r.max_hold_ms > 10_000 {
            bail!(
                "reorder.max_hold_ms: {} must be between 1 and 10000",
                r.max_hold_ms
            );
        }
        if r.min_hold_ms > r.max_hold_ms {
            bail!(
                "reorder.min_hold_ms: {} is above reorder.max_hold_ms ({})",
                r.min_hold_ms,
                r.max_hold_ms
            );
        }
        check_fragmentation(&self.fragmentation)?;
        check_reassembly(&self.reassembly, self.vnic.mtu)?;
        if let Some(api) = &self.api {
            check_api(api)?;
        }
        if self.nics.is_empty() {
            bail!("nics: at least one [[nics]] entry is needed");
        }
        if self.nics.len() > braid_core::MAX_NICS {
            bail!(
                "nics: {} entries, at most {}",
                self.nics.len(),
                braid_core::MAX_NICS
            );
        }
        let mut names = HashSet::new();
        let mut devices = HashSet::new();
        let mut nics = Vec::new();
        for (i, n) in self.nics.iter().enumerate() {
            let at = |f: &str| format!("nics[{i}].{f}");
            if n.name.is_empty() || !names.insert(n.name.as_str()) {
                bail!("{}: {:?} is empty or used twice", at("name"), n.name);
            }
            if !devices.insert(n.device.as_str()) {
                bail!("{}: {:?} is used by two NICs", at("device"), n.device);
            }
            let endpoint = match n.transport {
                TransportName::Udp => {
                    if n.peer_mac.is_some() {
                        bail!("{}: only for transport = \"ethernet\"", at("peer_mac"));
                    }
                    let local = parse_socket(n.local.as_deref(), &at("local"))?;
                    let peer = parse_socket(n.peer.as_deref(), &at("peer"))?;
                    if local.is_ipv4() != peer.is_ipv4() {
                        bail!(
                            "{}: {peer} and local {local} are not the same IP version",
                            at("peer")
                        );
                    }
                    // One worker per vNIC queue, each on its own port pair (base + k).
                    let last = u32::from(self.vnic.queues) - 1;
                    for (f, a) in [("local", local), ("peer", peer)] {
                        if u32::from(a.port()) + last > 65_535 || (a.port() == 0 && last > 0) {
                            bail!(
                                "{}: port {} cannot start a run of {} ports (one per vNIC queue: \
                                 vnic.queues = {})",
                                at(f),
                                a.port(),
                                self.vnic.queues,
                                self.vnic.queues
                            );
                        }
                    }
                    Endpoint::Udp { local, peer }
                }
                TransportName::Ethernet => {
                    if n.local.is_some() || n.peer.is_some() {
                        bail!(
                            "{}: local/peer are for transport = \"udp\"",
                            at("transport")
                        );
                    }
                    if self.vnic.queues > 2 {
                        // Each worker needs an EtherType of its own, and IEEE 802 sets
                        // aside two for local use (0x88B5, 0x88B6).
                        bail!(
                            "{}: \"ethernet\" supports vnic.queues = 1 or 2, one EtherType \
                             per worker (0x88B5, 0x88B6); it is {}",
                            at("transport"),
                            self.vnic.queues
                        );
                    }
                    let mac = n.peer_mac.as_deref().with_context(|| {
                        format!("{}: needed with transport = \"ethernet\"", at("peer_mac"))
                    })?;
                    Endpoint::Ethernet {
                        peer_mac: parse_mac(mac).with_context(|| at("peer_mac"))?,
                    }
                }
            };
            let capacity = if n.capacity == "auto" {
                Capacity::Auto
            } else {
                Capacity::Bps(parse_rate(&n.capacity).with_context(|| at("capacity"))?)
            };
            if let Some(m) = n.mtu
                && !(576..=65_535).contains(&m)
            {
                bail!("{}: {m} must be between 576 and 65535", at("mtu"));
            }
            nics.push(NicPlan {
                id: NicId(u8::try_from(i).expect("invariant: at most MAX_NICS nics")),
                name: n.name.clone(),
                device: n.device.clone(),
                endpoint,
                capacity,
                mtu: n.mtu,
                gso: n.gso,
                gro: n.gro,
            });
        }

        let (qos, qos_names) = match &self.qos {
            Some(q) => qos_config(q, self.vnic.mtu)?,
            None => {
                let mut q = QosConfig::default();
                q.max_packet_bytes = self.vnic.mtu.max(braid_core::qos::MIN_PACKET_BYTES);
                q.quantum_bytes = q.max_packet_bytes;
                (q, vec!["latency-critical".to_owned(), "default".to_owned()])
            }
        };
        let strict = qos
            .classes
            .iter()
            .find(|c| matches!(c.kind, ClassKind::Strict { .. }))
            .map(|c| c.id);
        let tunnels = tunnels::check(&self.tunnels, &nics, self.vnic.queues)?;
        let mut classes = Vec::new();
        for (i, c) in self.classes.iter().enumerate() {
            let at = |f: &str| format!("classes[{i}].{f}");
            let protocol = match c.protocol.as_deref() {
                None => None,
                Some("udp") => Some(17),
                Some("tcp") => Some(6),
                Some(p) => Some(p.parse::<u8>().map_err(|_| {
                    anyhow::anyhow!("{}: {p:?} must be udp, tcp or 0..=255", at("protocol"))
                })?),
            };
            let ports = |s: &Option<String>, f: &str| -> Result<Option<(u16, u16)>> {
                s.as_deref()
                    .map(|s| parse_port_range(s).with_context(|| at(f)))
                    .transpose()
            };
            if c.dscp.is_some_and(|d| d > 63) {
                bail!("{}: must be 0..=63", at("dscp"));
            }
            let mut class = FlowClass::new(
                &c.name,
                ClassMatch {
                    protocol,
                    dst_ports: ports(&c.dst_ports, "dst_ports")?,
                    src_ports: ports(&c.src_ports, "src_ports")?,
                    dscp: c.dscp,
                },
                class_policy(c.policy),
            );
            class.latency_critical = c.latency_critical;
            if let Some(name) = &c.tunnel {
                let id = self
                    .tunnels
                    .iter()
                    .position(|t| &t.name == name)
                    .with_context(|| {
                        format!(
                            "{}: no [[tunnels]] entry is named {name:?} (there are {:?})",
                            at("tunnel"),
                            self.tunnels
                                .iter()
                                .map(|t| t.name.as_str())
                                .collect::<Vec<_>>()
                        )
                    })?;
                class.tunnel = Some(u8::try_from(id).expect("invariant: at most MAX_TUNNELS"));
            }
            match &c.qos {
                Some(name) => {
                    let id = qos_names.iter().position(|n| n == name).with_context(|| {
                        format!(
                            "{}: no [[qos.classes]] entry is named {name:?} (there are {:?})",
                            at("qos"),
                            qos_names
                        )
                    })?;
                    class.qos_class = Some(ClassId(
                        u8::try_from(id).expect("invariant: at most 8 qos classes"),
                    ));
                }
                None if c.latency_critical && strict.is_none() => bail!(
                    "{}: [qos] has no strict class to put it in; add one or name a class \
                     with `qos`",
                    at("latency_critical")
                ),
                None => {}
            }
            if let Some(list) = &c.nics {
                let mut set = NicSet::EMPTY;
                for name in list {
                    let nic = nics
                        .iter()
                        .find(|n| &n.name == name)
                        .with_context(|| format!("{}: no NIC is named {name:?}", at("nics")))?;
                    set.insert(nic.id);
                }
                if set.is_empty() {
                    bail!("{}: empty; leave it out to use every NIC", at("nics"));
                }
                class.nics = set;
            }
            classes.push(class);
        }
        let rules = rules::check(
            &self.rules,
            &rules::Names {
                nics: &nics,
                qos: &qos_names,
                tunnels: &self.tunnels,
            },
        )?;
        let plan = Plan {
            file: self,
            vnic_addresses,
            rss_key,
            nics,
            classes,
            qos,
            tunnels,
            rules,
            qos_names,
        };
        // The rules as a set (conflicts, shadowed rules), against the engine's view.
        rules::check_sets(&plan)?;
        Ok(plan)
    }
}

impl Plan {
    /// The engine's configuration, once the link MTUs and capacities are known
    /// (`link_mtu[i]`, `capacity_bps[i]` for `nics[i]`).
    pub(crate) fn engine_config(&self, link_mtu: &[u32], capacity_bps: &[u64]) -> EngineConfig {
        let nics = self
            .nics
            .iter()
            .enumerate()
            .map(|(i, n)| NicSpec {
                id: n.id,
                name: n.name.clone(),
                capacity_bps: capacity_bps[i],
                // `auto`: `capacity_bps[i]` is the initial guess, the engine measures the rest.
                capacity_auto: n.capacity == Capacity::Auto,
                mtu_bytes: link_mtu[i].saturating_sub(n.transport_overhead()),
                wire_overhead_bytes: n.wire_overhead(),
            })
            .collect();
        let mut cfg = EngineConfig::new(nics);
        cfg.vnic_mtu = self.file.vnic.mtu;
        cfg.classes.clone_from(&self.classes);
        cfg.qos.clone_from(&self.qos);
        // A tunnel's outer packets are at most its NIC's link MTU.
        cfg.tunnels.clone_from(&self.tunnels);
        for t in &mut cfg.tunnels {
            t.mtu_bytes = link_mtu[usize::from(t.nic.0)];
        }
        cfg.default_policy = class_policy(self.file.policy.default);
        cfg.tx_rules.clone_from(&self.rules.tx);
        cfg.rx_rules.clone_from(&self.rules.rx);
        cfg.reorder.min_hold = Duration::from_millis(u64::from(self.file.reorder.min_hold_ms));
        cfg.reorder.max_hold = Duration::from_millis(u64::from(self.file.reorder.max_hold_ms));
        let f = &self.file.fragmentation;
        cfg.scheduler = SchedulerConfig {
            per_packet_overhead_bytes: f.per_packet_overhead_bytes,
            min_split_bytes: f.min_split_bytes,
            min_split_gain: Duration::from_micros(u64::from(f.min_split_gain_us)),
            // Checked: 1..=32.
            max_split_links: f.max_split_links as usize,
            split_within_mtu: f.split_within_mtu,
            loss_penalty: Duration::from_millis(u64::from(f.loss_penalty_ms)),
        };
        let r = &self.file.reassembly;
        // Checked: at most MAX_REASSEMBLY_MEM_CAP_BYTES, which a usize holds.
        cfg.reassembly.mem_cap_bytes = usize::try_from(r.mem_cap_bytes).unwrap_or(usize::MAX);
        cfg.reassembly.timeout = Duration::from_millis(u64::from(r.timeout_ms));
        cfg.reassembly.max_fragments = r.max_fragments;
        cfg.reassembly.max_datagram_bytes = r.max_datagram_bytes;
        cfg
    }
}

/// The largest `reassembly.max_fragments`: room for this many ranges per context is
/// reserved at start (32 768 contexts × 8 bytes each), and 256 covers a 65 535-byte
/// datagram in pieces of 256 bytes, far below any NIC's MTU.
pub(crate) const MAX_REASSEMBLY_FRAGMENTS: u16 = 256;

/// The largest `reassembly.mem_cap_bytes`, 1 TiB (a bound, not a suggestion: the packet
/// store that holds the pieces is far smaller).
pub(crate) const MAX_REASSEMBLY_MEM_CAP_BYTES: u64 = 1 << 40;

/// `[fragmentation]`: every value in its range.
fn check_fragmentation(f: &FragmentationSection) -> Result<()> {
    for (field, v, min, max, unit) in [
        ("min_split_bytes", f.min_split_bytes, 0, 65_535, ""),
        ("min_split_gain_us", f.min_split_gain_us, 0, 1_000_000, ""),
        (
            "max_split_links",
            f.max_split_links,
            1,
            32,
            " (1: never split; braid has at most 32 NICs)",
        ),
        (
            "per_packet_overhead_bytes",
            f.per_packet_overhead_bytes,
            0,
            65_535,
            "",
        ),
        ("loss_penalty_ms", f.loss_penalty_ms, 0, 60_000, ""),
    ] {
        if !(min..=max).contains(&v) {
            bail!("fragmentation.{field}: {v} must be between {min} and {max}{unit}");
        }
    }
    Ok(())
}

/// `[reassembly]`: every value in its range, datagrams at least a vNIC packet.
fn check_reassembly(r: &ReassemblySection, vnic_mtu: u32) -> Result<()> {
    if !(1..=MAX_REASSEMBLY_MEM_CAP_BYTES).contains(&r.mem_cap_bytes) {
        bail!(
            "reassembly.mem_cap_bytes: {} must be between 1 and {MAX_REASSEMBLY_MEM_CAP_BYTES}",
            r.mem_cap_bytes
        );
    }
    if !(1..=60_000).contains(&r.timeout_ms) {
        bail!(
            "reassembly.timeout_ms: {} must be between 1 and 60000",
            r.timeout_ms
        );
    }
    if !(1..=MAX_REASSEMBLY_FRAGMENTS).contains(&r.max_fragments) {
        bail!(
            "reassembly.max_fragments: {} must be between 1 and {MAX_REASSEMBLY_FRAGMENTS}",
            r.max_fragments
        );
    }
    if !(vnic_mtu..=65_535).contains(&r.max_datagram_bytes) {
        bail!(
            "reassembly.max_datagram_bytes: {} must be between vnic.mtu ({vnic_mtu}) and 65535 \
             (a vNIC packet is one datagram)",
            r.max_datagram_bytes
        );
    }
    Ok(())
}

/// `[api]`: the address parses, the paths are not empty, the rate limit allows something.
fn check_api(api: &ApiSection) -> Result<()> {
    api.listen.parse::<SocketAddr>().map_err(|_| {
        anyhow::anyhow!(
            "api.listen: {:?} is not an address and port like 127.0.0.1:7780",
            api.listen
        )
    })?;
    for (field, path) in [
        ("token_file", Some(&api.token_file)),
        ("audit_log", api.audit_log.as_ref()),
        ("policies_file", api.policies_file.as_ref()),
        ("state_dir", Some(&api.state_dir)),
    ] {
        if path.is_some_and(|p| p.as_os_str().is_empty()) {
            bail!("api.{field}: empty; name a file (or leave it out for its default)");
        }
    }
    if api
        .policies_file
        .as_ref()
        .is_some_and(|p| p.file_name().is_none() || p.to_string_lossy().ends_with('/'))
    {
        bail!("api.policies_file: must name a file, not a directory");
    }
    if api.auth_failure_burst == 0 {
        bail!("api.auth_failure_burst: must be at least 1");
    }
    if api.auth_failure_refill_ms == 0 {
        bail!("api.auth_failure_refill_ms: must be at least 1");
    }
    Ok(())
}

/// `[qos]` as the engine's [`QosConfig`] (class ids in the order of the entries), and the
/// classes' names by id. Packets are up to `vnic_mtu` bytes at the vNIC meters (the engine
/// raises the size to the NICs' MTUs for their queues).
fn qos_config(q: &QosSection, vnic_mtu: u32) -> Result<(QosConfig, Vec<String>)> {
    if q.classes.is_empty() || q.classes.len() > braid_core::qos::MAX_CLASSES {
        bail!(
            "qos.classes: {} entries, must be 1 to {}",
            q.classes.len(),
            braid_core::qos::MAX_CLASSES
        );
    }
    let mut names: Vec<String> = Vec::new();
    let mut classes = Vec::new();
    for (i, c) in q.classes.iter().enumerate() {
        let at = |f: &str| format!("qos.classes[{i}].{f}");
        if c.name.is_empty() || names.contains(&c.name) {
            bail!("{}: {:?} is empty or used twice", at("name"), c.name);
        }
        names.push(c.name.clone());
        let rate = |s: &str, f: &str| parse_rate(s).with_context(|| at(f));
        let kind = if c.strict {
            if c.weight.is_some() {
                bail!(
                    "{}: not with strict = true (a strict class has no share)",
                    at("weight")
                );
            }
            let guard = match (&c.guard_rate, c.guard_burst_bytes) {
                (None, None) => None,
                (Some(r), Some(b)) => Some(RateConfig {
                    rate_bps: rate(r, "guard_rate")?,
                    burst_bytes: b,
                }),
                (Some(_), None) => bail!("{}: needed with guard_rate", at("guard_burst_bytes")),
                (None, Some(_)) => bail!("{}: needed with guard_burst_bytes", at("guard_rate")),
            };
            ClassKind::Strict { guard }
        } else {
            if c.guard_rate.is_some() || c.guard_burst_bytes.is_some() {
                bail!("{}: only for strict = true", at("guard_rate"));
            }
            ClassKind::Weighted {
                weight: c.weight.unwrap_or(1),
            }
        };
        let meter = match &c.meter {
            None => None,
            Some(m) => {
                let at = |f: &str| at(&format!("meter.{f}"));
                let mode = if m.color_aware {
                    MeterMode::ColorAware
                } else {
                    MeterMode::ColorBlind
                };
                let cir_bps = parse_rate(&m.cir).with_context(|| at("cir"))?;
                Some(match m.kind {
                    MeterKindName::Srtcm => {
                        if let Some(f) = [
                            ("pir", m.pir.is_some()),
                            ("pbs_bytes", m.pbs_bytes.is_some()),
                        ]
                        .into_iter()
                        .find_map(|(f, set)| set.then_some(f))
                        {
                            bail!("{}: only for type = \"trtcm\"", at(f));
                        }
                        MeterConfig::SrTcm(SrTcmConfig {
                            cir_bps,
                            cbs_bytes: m.cbs_bytes,
                            ebs_bytes: m.ebs_bytes.unwrap_or(0),
                            mode,
                        })
                    }
                    MeterKindName::Trtcm => {
                        if m.ebs_bytes.is_some() {
                            bail!("{}: only for type = \"srtcm\"", at("ebs_bytes"));
                        }
                        let pir = m.pir.as_deref().with_context(|| {
                            format!("{}: needed with type = \"trtcm\"", at("pir"))
                        })?;
                        MeterConfig::TrTcm(TrTcmConfig {
                            pir_bps: parse_rate(pir).with_context(|| at("pir"))?,
                            pbs_bytes: m.pbs_bytes.with_context(|| {
                                format!("{}: needed with type = \"trtcm\"", at("pbs_bytes"))
                            })?,
                            cir_bps,
                            cbs_bytes: m.cbs_bytes,
                            mode,
                        })
                    }
                })
            }
        };
        classes.push(QosClassConfig {
            id: ClassId(u8::try_from(i).expect("invariant: at most 8 classes")),
            kind,
            queue_packets: c.queue_packets,
            queue_bytes: c.queue_bytes,
            meter,
            drop_red: c.drop_red,
        });
    }
    let max_packet_bytes = vnic_mtu.max(braid_core::qos::MIN_PACKET_BYTES);
    let cfg = QosConfig {
        max_packet_bytes,
        quantum_bytes: q.quantum_bytes.unwrap_or(max_packet_bytes),
        classes,
    };
    // The core names the field by its own path (`classes[1].meter.cbs_bytes`) and unit
    // (`_bps` for the rates given here as `cir`, `pir`, `guard_rate`): the same path under
    // `qos.` here, and "the largest packet" (its `max_packet_bytes`) is a vNIC-MTU packet.
    if let Err(e) = cfg.validate() {
        let field = match e.field {
            "cir_bps" => "cir",
            "pir_bps" => "pir",
            "rate_bps" => "guard_rate",
            "burst_bytes" => "guard_burst_bytes",
            "kind.weight" => "weight",
            "kind" => "strict",
            f => f,
        };
        let path = match (e.class, e.section) {
            (Some(i), "meter") => format!("qos.classes[{i}].meter.{field}"),
            (Some(i), _) => format!("qos.classes[{i}].{field}"),
            (None, _) => format!("qos.{field}"),
        };
        if e.why.contains("max_packet_bytes") {
            bail!("{path}: must hold the largest packet, vnic.mtu = {vnic_mtu} bytes");
        }
        bail!("{path}: {}", e.why);
    }
    if !cfg
        .classes
        .iter()
        .any(|c| matches!(c.kind, ClassKind::Weighted { .. }))
    {
        bail!(
            "qos.classes: needs a weighted class (traffic that is not latency-critical goes there)"
        );
    }
    Ok((cfg, names))
}

/// `100mbit`, `2.5gbit`, `800kbit`, `1000000` (bit/s); `bit`, `kbit`, `mbit`, `gbit`, `tbit`
/// (decimal, like tc).
pub(crate) fn parse_rate(s: &str) -> Result<u64> {
    let t = s.trim().to_ascii_lowercase();
    let units: [(&str, f64); 5] = [
        ("tbit", 1e12),
        ("gbit", 1e9),
        ("mbit", 1e6),
        ("kbit", 1e3),
        ("bit", 1.0),
    ];
    let (num, mult) = units
        .iter()
        .find_map(|(u, m)| t.strip_suffix(u).map(|n| (n, *m)))
        .unwrap_or((t.as_str(), 1.0));
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("{s:?} is not a rate like 100mbit, 2.5gbit or auto"))?;
    let bps = v * mult;
    if !(1000.0..=1e13).contains(&bps) {
        bail!("{s:?} must be between 1kbit and 10tbit");
    }
    // In range (checked above), so the cast neither saturates nor loses more than a bit.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(bps as u64)
}

/// `5000` or `5000-5010`.
pub(crate) fn parse_port_range(s: &str) -> Result<(u16, u16)> {
    let bad = || anyhow::anyhow!("{s:?} must be a port (5000) or a range (5000-5010)");
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (s.trim(), s.trim()),
    };
    let lo: u16 = lo.parse().map_err(|_| bad())?;
    let hi: u16 = hi.parse().map_err(|_| bad())?;
    if lo > hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

fn parse_socket(s: Option<&str>, field: &str) -> Result<SocketAddr> {
    let s = s.with_context(|| format!("{field}: needed with transport = \"udp\" (ip:port)"))?;
    s.parse().map_err(|_| {
        anyhow::anyhow!("{field}: {s:?} is not ip:port (10.77.0.1:7700, [fd00::1]:7700)")
    })
}

fn parse_prefix(s: &str) -> Result<(IpAddr, u8)> {
    let (a, p) = s
        .split_once('/')
        .context("must be address/prefix-length, e.g. 10.99.0.1/24")?;
    let addr: IpAddr = a.parse().context("not an IP address")?;
    let len: u8 = p.parse().context("prefix length is not a number")?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        bail!("prefix length {len} is above {max}");
    }
    Ok((addr, len))
}

fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts
            .next()
            .context("must be six hex bytes like 02:00:00:00:00:01")?;
        *b = u8::from_str_radix(p, 16).context("must be six hex bytes like 02:00:00:00:00:01")?;
    }
    if parts.next().is_some() {
        bail!("must be six hex bytes like 02:00:00:00:00:01");
    }
    Ok(mac)
}

fn hex_bytes(s: &str) -> Result<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        bail!("odd number of hex digits");
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .context("not a hex digit")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[vnic]
name = "braid0"
addresses = ["10.99.0.1/24"]
mtu = 9000
queues = 2

[peer]
role = "a"
key_file = "/tmp/psk"

[[nics]]
name = "link0"
device = "nic0"
local = "10.77.0.1:7700"
peer = "10.77.0.2:7700"
capacity = "100mbit"

[[nics]]
name = "link1"
device = "nic1"
local = "10.77.1.1:7700"
peer = "10.77.1.2:7700"
capacity = "auto"
mtu = 1500
gso = false

[[classes]]
name = "feed"
protocol = "udp"
dst_ports = "5000-5001"
policy = "duplicate"
nics = ["link1"]
latency_critical = true

[daemon]
stats_file = "/tmp/a.json"
"#;

    #[test]
    fn good_file_translates() {
        let plan = Config::parse(GOOD).unwrap();
        assert_eq!(plan.nics.len(), 2);
        assert_eq!(plan.nics[0].capacity, Capacity::Bps(100_000_000));
        assert_eq!(plan.nics[1].capacity, Capacity::Auto);
        assert!(!plan.nics[1].gso && plan.nics[1].gro);
        assert_eq!(
            plan.vnic_addresses,
            vec![("10.99.0.1".parse().unwrap(), 24)]
        );
        let class = &plan.classes[0];
        assert_eq!(class.matcher.dst_ports, Some((5000, 5001)));
        assert_eq!(class.matcher.protocol, Some(17));
        assert_eq!(class.policy, ClassPolicy::Duplicate);
        assert!(class.latency_critical);
        assert_eq!(class.nics, NicSet::single(NicId(1)));
        let cfg = plan.engine_config(&[1500, 1500], &[100_000_000, 1_000_000_000]);
        assert_eq!(cfg.nics[0].mtu_bytes, 1472);
        // `auto`: the engine estimates, from the guess given.
        assert!(!cfg.nics[0].capacity_auto && cfg.nics[1].capacity_auto);
        assert_eq!(cfg.nics[1].capacity_bps, 1_000_000_000);
        assert_eq!(cfg.vnic_mtu, 9000);
        cfg.validate().unwrap();
    }

    /// `[fragmentation]` and `[reassembly]` reach the engine's scheduler and reassembler,
    /// in its units; left out, they are the engine's own defaults.
    #[test]
    fn fragmentation_and_reassembly_translate() {
        let text = GOOD.replacen(
            "[daemon]",
            "[fragmentation]\nmin_split_bytes = 3000\nmin_split_gain_us = 7\n\
             max_split_links = 2\nsplit_within_mtu = true\nper_packet_overhead_bytes = 80\n\
             loss_penalty_ms = 15\n\n[reassembly]\nmem_cap_bytes = 1048576\n\
             timeout_ms = 90\nmax_fragments = 128\nmax_datagram_bytes = 9000\n\n[daemon]",
            1,
        );
        let cfg = Config::parse(&text)
            .unwrap()
            .engine_config(&[1500, 1500], &[100_000_000, 1_000_000_000]);
        assert_eq!(
            cfg.scheduler,
            SchedulerConfig {
                per_packet_overhead_bytes: 80,
                min_split_bytes: 3000,
                min_split_gain: Duration::from_micros(7),
                max_split_links: 2,
                split_within_mtu: true,
                loss_penalty: Duration::from_millis(15),
            }
        );
        let r = &cfg.reassembly;
        assert_eq!(
            (
                r.mem_cap_bytes,
                r.timeout,
                r.max_fragments,
                r.max_datagram_bytes
            ),
            (1 << 20, Duration::from_millis(90), 128, 9000)
        );
        cfg.validate().unwrap();
        let defaults = Config::parse(GOOD)
            .unwrap()
            .engine_config(&[1500, 1500], &[100_000_000, 1_000_000_000]);
        assert_eq!(defaults.scheduler, SchedulerConfig::default());
        assert_eq!(
            defaults.reassembly,
            braid_core::reassembly::ReassemblyConfig::default()
        );
    }

    /// The error `braid run` prints for `text` (it must be refused).
    pub(super) fn err(text: &str) -> String {
        format!("{:#}", Config::parse(text).unwrap_err())
    }

    /// For each `(from, to, want)`: `base` with `from` replaced by `to` is refused with an
    /// error that contains `want` (the field it names).
    pub(super) fn assert_errors_name(base: &str, cases: &[(&str, &str, &str)]) {
        for (from, to, want) in cases {
            assert!(base.contains(from), "{from}");
            let e = err(&base.replacen(from, to, 1));
            assert!(e.contains(want), "{to}: {e}");
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                "capacity = \"100mbit\"",
                "capacity = \"fast\"",
                "nics[0].capacity",
            ),
            (
                "peer = \"10.77.0.2:7700\"",
                "peer = \"10.77.0.2\"",
                "nics[0].peer",
            ),
            (
                "dst_ports = \"5000-5001\"",
                "dst_ports = \"5001-5000\"",
                "classes[0].dst_ports",
            ),
            (
                "nics = [\"link1\"]",
                "nics = [\"link9\"]",
                "classes[0].nics",
            ),
            ("queues = 2", "queues = 0", "vnic.queues"),
            ("mtu = 9000", "mtu = 70000", "vnic.mtu"),
            ("role = \"a\"", "role = \"c\"", "role"),
            ("device = \"nic1\"", "device = \"nic0\"", "nics[1].device"),
            ("10.99.0.1/24", "10.99.0.1/33", "vnic.addresses[0]"),
            ("[daemon]", "[daemon]\nstats = 1", "unknown field `stats`"),
            (
                "[daemon]",
                "[daemon]\nbusy_poll_us = 5000",
                "daemon.busy_poll_us",
            ),
            (
                "[daemon]",
                "[daemon]\nrealtime_priority = 0",
                "daemon.realtime_priority: 0 is outside 1-99",
            ),
            (
                "[daemon]",
                "[reorder]\nmin_hold_ms = 30\n[daemon]",
                "reorder.min_hold_ms",
            ),
            (
                "[daemon]",
                "[fragmentation]\nmax_split_links = 33\n[daemon]",
                "fragmentation.max_split_links: 33 must be between 1 and 32",
            ),
            (
                "[daemon]",
                "[fragmentation]\nmin_split_gain_us = 1000001\n[daemon]",
                "fragmentation.min_split_gain_us",
            ),
            (
                "[daemon]",
                "[fragmentation]\nsplit = true\n[daemon]",
                "unknown field `split`",
            ),
            (
                "[daemon]",
                "[reassembly]\nmem_cap_bytes = 0\n[daemon]",
                "reassembly.mem_cap_bytes",
            ),
            (
                "[daemon]",
                "[reassembly]\ntimeout_ms = 60001\n[daemon]",
                "reassembly.timeout_ms",
            ),
            (
                "[daemon]",
                "[reassembly]\nmax_fragments = 257\n[daemon]",
                "reassembly.max_fragments: 257 must be between 1 and 256",
            ),
            (
                "[daemon]",
                "[reassembly]\nmax_datagram_bytes = 8999\n[daemon]",
                "reassembly.max_datagram_bytes: 8999 must be between vnic.mtu (9000)",
            ),
        ];
        assert_errors_name(GOOD, &cases);
        // Busy polling is on by default, with or without a [daemon] section; 0 turns it off.
        let plan = Config::parse(&GOOD.replacen("[daemon]", "[daemon]\nbusy_poll_us = 0", 1));
        assert_eq!(plan.unwrap().file.daemon.busy_poll_us, 0);
        assert_eq!(Config::parse(GOOD).unwrap().file.daemon.busy_poll_us, 50);
        assert_eq!(DaemonSection::default().busy_poll_us, DEFAULT_BUSY_POLL_US);
        // `per-nic` receive names workers by a 4-bit lane.
        let per_nic = GOOD.replacen("[daemon]", "[daemon]\nreceive = \"per-nic\"", 1);
        let plan = Config::parse(&per_nic).unwrap();
        assert_eq!(plan.file.daemon.receive, ReceiveMode::PerNic);
        let e = err(&per_nic.replacen("queues = 2", "queues = 17", 1));
        assert!(e.contains("daemon.receive") && e.contains("16"), "{e}");
        let e = err(&GOOD.replacen("[daemon]", "[daemon]\nreceive = \"per-cpu\"", 1));
        assert!(e.contains("per-nic"), "{e}");
        assert_eq!(ReceiveMode::PerNic.reader(5, 0, 2), 1);
        assert_eq!(ReceiveMode::PerWorker.reader(5, 0, 2), 0);
    }

    const QOS: &str = r#"
[qos]
quantum_bytes = 12000

[[qos.classes]]
name = "feed"
strict = true
guard_rate = "50mbit"
guard_burst_bytes = 30000
queue_packets = 512

[[qos.classes]]
name = "bulk"
weight = 1

[[qos.classes]]
name = "interactive"
weight = 4
queue_bytes = 1048576
drop_red = true

[qos.classes.meter]
type = "srtcm"
cir = "10mbit"
cbs_bytes = 30000
ebs_bytes = 60000

[[qos.classes]]
name = "video"
weight = 2

[qos.classes.meter]
type = "trtcm"
cir = "20mbit"
cbs_bytes = 20000
pir = "40mbit"
pbs_bytes = 40000
color_aware = true
"#;

    /// `GOOD` with the `[qos]` above and a second class that names one of its classes.
    fn with_qos() -> String {
        GOOD.replacen("[daemon]", &format!("{QOS}\n[daemon]"), 1)
            .replacen(
                "latency_critical = true",
                "latency_critical = true\n\n[[classes]]\nname = \"ssh\"\nprotocol = \"tcp\"\n\
             dst_ports = \"22\"\npolicy = \"pin\"\nqos = \"interactive\"",
                1,
            )
    }

    #[test]
    fn qos_section_translates() {
        // No [qos]: the engine's default (strict class 0, weighted class 1), packets up to
        // the vNIC MTU; the latency-critical class goes to the strict class.
        let plan = Config::parse(GOOD).unwrap();
        assert_eq!(plan.qos.classes, QosConfig::default().classes);
        assert_eq!(plan.qos.max_packet_bytes, 9000);
        assert_eq!(plan.classes[0].qos_class, None);
        let cfg = plan.engine_config(&[1500, 1500], &[100_000_000, 1_000_000_000]);
        cfg.validate().unwrap();

        let plan = Config::parse(&with_qos()).unwrap();
        let q = &plan.qos;
        assert_eq!((q.max_packet_bytes, q.quantum_bytes), (9000, 12000));
        assert_eq!(q.classes.len(), 4);
        assert_eq!(
            q.classes[0].kind,
            ClassKind::Strict {
                guard: Some(RateConfig {
                    rate_bps: 50_000_000,
                    burst_bytes: 30000
                })
            }
        );
        assert_eq!(q.classes[0].queue_packets, 512);
        assert_eq!(q.classes[0].queue_bytes, 4 << 20);
        assert_eq!(q.classes[2].id, ClassId(2));
        assert_eq!(q.classes[2].kind, ClassKind::Weighted { weight: 4 });
        assert!(q.classes[2].drop_red);
        assert_eq!(
            q.classes[2].meter,
            Some(MeterConfig::SrTcm(SrTcmConfig {
                cir_bps: 10_000_000,
                cbs_bytes: 30000,
                ebs_bytes: 60000,
                mode: MeterMode::ColorBlind
            }))
        );
        assert_eq!(
            q.classes[3].meter,
            Some(MeterConfig::TrTcm(TrTcmConfig {
                pir_bps: 40_000_000,
                pbs_bytes: 40000,
                cir_bps: 20_000_000,
                cbs_bytes: 20000,
                mode: MeterMode::ColorAware
            }))
        );
        // `qos = "interactive"`: class id 2; the latency-critical feed: the strict class.
        assert_eq!(plan.classes[0].qos_class, None);
        assert_eq!(plan.classes[1].qos_class, Some(ClassId(2)));
        let cfg = plan.engine_config(&[1500, 1500], &[100_000_000, 1_000_000_000]);
        assert_eq!(&cfg.qos, q);
        cfg.validate().unwrap();
    }

    #[test]
    fn qos_errors_name_the_field() {
        let good = with_qos();
        Config::parse(&good).unwrap();
        let cases = [
            ("qos = \"interactive\"", "qos = \"chat\"", "classes[1].qos"),
            ("weight = 4", "weight = 0", "qos.classes[2].weight"),
            (
                "name = \"video\"\nweight = 2",
                "name = \"video\"\nstrict = true",
                "qos.classes[3].strict",
            ),
            (
                "strict = true\nguard",
                "strict = true\nweight = 3\nguard",
                "qos.classes[0].weight",
            ),
            (
                "guard_burst_bytes = 30000\n",
                "",
                "qos.classes[0].guard_burst_bytes",
            ),
            ("name = \"bulk\"", "name = \"feed\"", "qos.classes[1].name"),
            (
                "queue_packets = 512",
                "queue_packets = 0",
                "qos.classes[0].queue_packets",
            ),
            (
                "queue_bytes = 1048576",
                "queue_bytes = 4000",
                "qos.classes[2].queue_bytes",
            ),
            (
                "cir = \"10mbit\"",
                "cir = \"fast\"",
                "qos.classes[2].meter.cir",
            ),
            (
                "cbs_bytes = 30000\nebs",
                "cbs_bytes = 3000\nebs",
                "qos.classes[2].meter.cbs_bytes",
            ),
            (
                "ebs_bytes = 60000",
                "ebs_bytes = 60000\npir = \"1gbit\"",
                "qos.classes[2].meter.pir",
            ),
            (
                "pir = \"40mbit\"",
                "pir = \"10mbit\"",
                "qos.classes[3].meter.pir",
            ),
            ("pbs_bytes = 40000\n", "", "qos.classes[3].meter.pbs_bytes"),
            ("type = \"trtcm\"", "type = \"tbf\"", "srtcm"),
            (
                "quantum_bytes = 12000",
                "quantum_bytes = 100",
                "qos.quantum_bytes",
            ),
            (
                "drop_red = true",
                "drop_red = true\ncolour = 1",
                "unknown field `colour`",
            ),
        ];
        assert_errors_name(&good, &cases);
        // A latency-critical class needs a strict class; traffic that is not, a weighted one.
        let no_strict = good.replacen(
            "strict = true\nguard_rate = \"50mbit\"\nguard_burst_bytes = 30000\n",
            "",
            1,
        );
        let e = err(&no_strict);
        assert!(e.contains("classes[0].latency_critical"), "{e}");
        let e = err(&format!(
            "{}\n[qos]\n[[qos.classes]]\nname = \"x\"\nstrict = true\n",
            GOOD.replacen("[daemon]\nstats_file = \"/tmp/a.json\"", "", 1)
        ));
        assert!(e.contains("qos.classes: needs a weighted class"), "{e}");
    }

    #[test]
    fn rates_and_ports() {
        assert_eq!(parse_rate("100mbit").unwrap(), 100_000_000);
        assert_eq!(parse_rate("2.5gbit").unwrap(), 2_500_000_000);
        assert_eq!(parse_rate("800kbit").unwrap(), 800_000);
        assert!(parse_rate("0mbit").is_err());
        assert!(parse_rate("-1gbit").is_err());
        assert!(parse_rate("NaN").is_err());
        assert_eq!(parse_port_range("5000").unwrap(), (5000, 5000));
        assert!(parse_port_range("70000").is_err());
        assert_eq!(parse_mac("02:00:00:00:00:0a").unwrap(), [2, 0, 0, 0, 0, 10]);
        assert!(parse_mac("02:00:00:00:00").is_err());
    }
}
