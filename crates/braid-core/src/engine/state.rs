//! The engine's state and the TX, RX and timer paths. The contract is in the module doc of
//! [`super`].

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::time::Duration;

use braid_wire::{
    BRAID_FLAG_ENCRYPTED, BRAID_HEADER_LEN, BraidPacket, BraidRepr, IpSummary, PacketType,
    ProbeReplyBody, ProbeReplyCounters,
};

use super::config::{ClassPolicy, EngineConfig};
use super::metrics::{DelayStep, EngineStats, NicCounters, NicLatency};
use super::{Command, CommandError, ConfigError, EngineEvent};
use crate::auth::{Blake3Mac, PacketProtection, TAG_LEN};
use crate::buffer::{BufHandle, PacketStore};
use crate::controller::{
    AssignOutcome, FlowController, FlowPolicy, NicConfig, NicState, OverflowPolicy,
};
use crate::flow::{FlowKey, FlowTable};
use crate::health::capacity::{CapacityEstimator, CapacityStats};
use crate::health::{HealthMonitor, LinkState, LinkStats};
use crate::qos::{
    ClassId, ClassKind, Color, MAX_CLASSES, Meter, Qos, QosConfig, QosDrop, QosStats,
};
use crate::reassembly::{DatagramKey, FragOutcome, Reassembler};
use crate::reorder::{Admit, ReorderBuffer, hold_from_spread};
use crate::replay::DefaultReplayWindow;
use crate::scheduler::{self, LinkView, Mode, Plan, PlanKind, ScheduleError};
use crate::time::duration_nanos;
use crate::{DropReason, FlowId, Instant, MAX_NICS, NicId, NicSet};

// The rule engine's hooks; a child module so it reads the flow tables directly.
#[path = "rules.rs"]
pub(super) mod rules;

// The replacement of the policies as one set (tunnels, QoS, rules); a child module for the
// same reason.
#[path = "policies.rs"]
pub(super) mod policies;

// The flow table's snapshot and the operator's moves; a child module for the same reason.
#[path = "flows.rs"]
pub(super) mod flows;

// The scan that ranks the busiest flows by rate; a child module for the same reason.
#[path = "top_flows.rs"]
mod top_flows;

/// The receive side of one flow, from [`Engine::rx_flow`].
#[derive(Clone, Copy, Debug)]
pub struct RxFlowInfo<'a> {
    /// The reorder hold in force (follows the delay spread of `nics`).
    pub hold: Duration,
    /// Datagrams held now.
    pub held: usize,
    /// NICs the flow's packets arrived on.
    pub nics: NicSet,
    /// The flow's reorder counters.
    pub reorder: &'a crate::reorder::ReorderStats,
}

/// What [`Engine::handle_tx`] did with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxVerdict {
    /// Queued on one or more NICs; `poll_transmit` will send it.
    Queued,
    /// Dropped and counted.
    Drop(DropReason),
}

/// A braid packet for a NIC, written by [`Engine::poll_transmit`] into the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The NIC to send it on.
    pub nic: NicId,
    /// Bytes written at the start of the buffer.
    pub len: usize,
}

/// A whole, in-order packet for the virtual NIC, written by [`Engine::poll_deliver`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// Bytes written at the start of the buffer.
    pub len: usize,
    /// The flow it belongs to (the sender's flow id).
    pub flow: FlowId,
    /// Its sequence number in the flow.
    pub seq: u64,
    /// Sequence numbers given up just before this one (a gap: lost or too late).
    pub gap_before: u64,
    /// The tunnel a decapsulated packet came through (`engine/tunnel.rs`; then `flow` is 0
    /// and `seq` counts the tunnel's packets); `None` for braid's own.
    pub tunnel: Option<u8>,
}

/// Work done per `handle_timeout` on each table, so one call never does unbounded work.
const TIMEOUT_BUDGET: usize = 1024;
/// Probe replies waiting to be sent; more are dropped (the peer counts them as lost).
const REPLY_QUEUE: usize = 256;
/// How long a rejected flow waits before the controller is asked again.
const ADMISSION_RETRY: Duration = Duration::from_millis(100);
/// How often a flow's reorder hold is recomputed from the measured delay spread.
const HOLD_REFRESH: Duration = Duration::from_millis(10);
/// A datagram that arrives after its gap was declared proves the hold too short for what
/// the probes do not see (a sender preempted between two NICs' sends, queues below braid).
/// Like RACK's reordering window (RFC 8985 §6.2), the flow's hold floor then doubles, from
/// this step up to `max_hold`, and decays by 1/`LATE_FLOOR_DECAY` per refresh (halving in
/// about 3.5 s without late arrivals).
const LATE_FLOOR_STEP: Duration = Duration::from_millis(1);
/// See [`LATE_FLOOR_STEP`].
const LATE_FLOOR_DECAY: u32 = 512;

/// Bytes of the scratch buffer [`Engine::handle_rx`] decrypts in: the largest UDP payload (a
/// NIC's MTU is at most 65535, so no braid packet is longer).
const RX_SCRATCH_BYTES: usize = 65_535;

/// Packet protection: both directions (MAC or AEAD), the send counter and the receive
/// anti-replay window (boxed: 4 KiB).
#[derive(Debug)]
struct AuthState {
    tx: Box<dyn PacketProtection>,
    rx: Box<dyn PacketProtection>,
    /// `rx.encrypts()` (= `tx.encrypts()`), read on every received packet.
    encrypts: bool,
    /// The counter of the next packet sent; `u64::MAX` once every other one was used (it is
    /// never sent).
    tx_counter: u64,
    window: Box<DefaultReplayWindow>,
}

/// The bytes of a received packet: read-only ([`Engine::handle_rx`]; decryption then needs a
/// copy) or writable ([`Engine::handle_rx_mut`], and the scratch copy: decrypted in place).
#[derive(Debug)]
enum RxBytes<'a> {
    Shared(&'a [u8]),
    Mut(&'a mut [u8]),
}

impl<'a> RxBytes<'a> {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Shared(b) => b,
            Self::Mut(b) => b,
        }
    }

    fn into_bytes(self) -> &'a [u8] {
        match self {
            Self::Shared(b) => b,
            Self::Mut(b) => b,
        }
    }
}

/// One NIC's run-time state.
#[derive(Debug)]
struct NicRt {
    spec: super::NicSpec,
    admin_up: bool,
    state: LinkState,
    /// The NIC's TX queue: a QoS scheduler over pieces (strict class first, DRR among the
    /// rest, each class bounded), drained by `poll_data` at the pacer's rate. Boxed: 2.8 KB
    /// per NIC slot would make the engine ~100 KB, too big to move around on a thread's
    /// stack.
    queue: Box<Qos<TxPiece>>,
    /// When the NIC will have sent everything handed to it so far, at its pacing rate.
    next_free: Instant,
    /// The rate the NIC is paced at, bit/s: `spec.capacity_bps`, or for an `auto` NIC the
    /// estimator's pacing rate (the estimate times its probing gain).
    pacing_bps: u64,
    /// The one-way delay of the last packet heard on it, for the delay-variation histogram
    /// (`engine/metrics.rs`).
    delay_step: DelayStep,
    /// `poll_data` found the schedule more than the burst ahead and the strict class's
    /// packets held back by its starvation guard: the timer must not come early for them
    /// (it would come again at once, and the worker would spin until the guard refills).
    /// Cleared at the next send that is within the burst.
    strict_held: bool,
}

impl NicRt {
    /// `wire_bytes` left the NIC at `now`: move its next free time on by their wire time at
    /// the pacing rate, from no earlier than `now - credit` (the credit an idle NIC keeps).
    fn pace(&mut self, now: Instant, credit: Duration, wire_bytes: u64) {
        let ns = (wire_bytes * 8).saturating_mul(1_000_000_000) / self.pacing_bps.max(1);
        self.next_free = self.next_free.max(now.saturating_sub(credit)) + Duration::from_nanos(ns);
    }

    /// How long before its next free time the NIC's timer is due: `burst + strict_advance`
    /// while the strict class has packets waiting, so they go at once (see
    /// [`super::EngineConfig::pacing_strict_advance`]; only whether the strict queue is
    /// non-empty counts here, `poll_data` checks the actual head), else half the burst.
    /// The NIC may send up to `burst` ahead, so a timer due the moment the first packet may
    /// go would wake the worker for one packet at a time; at half the burst each wake-up
    /// sends about half a burst (50 µs of the link), and the link still has as much queued.
    fn send_ahead(
        &self,
        strict: Option<u8>,
        burst: Duration,
        strict_advance: Duration,
    ) -> Duration {
        match strict {
            Some(s) if !self.strict_held && self.queue.class_queued(ClassId(s)).0 > 0 => {
                burst + strict_advance
            }
            _ => burst / 2,
        }
    }
}

/// The QoS classes as the TX path uses them, derived from [`EngineConfig::qos`].
#[derive(Clone, Copy, Debug)]
struct QosClasses {
    /// Bit i: class i is configured.
    known: u8,
    /// The strict class, if any.
    strict: Option<u8>,
    /// Where flows without a class of their own go: the weighted class with the lowest id.
    default: u8,
}

impl QosClasses {
    fn new(cfg: &QosConfig) -> Self {
        let mut c = Self {
            known: 0,
            strict: None,
            default: u8::MAX,
        };
        for class in &cfg.classes {
            c.known |= 1 << class.id.0;
            match class.kind {
                ClassKind::Strict { .. } => c.strict = Some(class.id.0),
                ClassKind::Weighted { .. } => c.default = c.default.min(class.id.0),
            }
        }
        c
    }

    /// The class a flow's packets are queued in: its own, or the default if the
    /// configuration in force no longer has it.
    fn effective(self, class: u8) -> u8 {
        if usize::from(class) < MAX_CLASSES && self.known & (1 << class) != 0 {
            class
        } else {
            self.default
        }
    }
}

/// The QoS meters applied per packet at the vNIC, one per class that has one.
#[derive(Debug)]
struct VnicMeters {
    meters: [Option<Meter>; MAX_CLASSES],
    /// Per class: whether Red packets are dropped.
    drop_red: u8,
    /// Colours and drops, per class.
    stats: QosStats,
}

impl VnicMeters {
    fn new(cfg: &QosConfig, now: Instant) -> Self {
        let mut m = Self {
            meters: [None; MAX_CLASSES],
            drop_red: 0,
            stats: QosStats::default(),
        };
        m.configure(cfg, None, now);
        m
    }

    /// Take `cfg`'s meters; a class whose meter configuration is unchanged from `old` keeps
    /// its buckets (so a replacement grants no fresh burst), others start full.
    fn configure(&mut self, cfg: &QosConfig, old: Option<&QosConfig>, now: Instant) {
        let mut meters = [None; MAX_CLASSES];
        self.drop_red = 0;
        for c in &cfg.classes {
            let i = c.id.index();
            let same = old
                .and_then(|o| o.class(c.id))
                .is_some_and(|o| o.meter == c.meter);
            meters[i] = match (same, self.meters[i], c.meter) {
                (true, Some(kept), _) => Some(kept),
                (_, _, Some(m)) => Meter::new(m, cfg.max_packet_bytes, now).ok(),
                (_, _, None) => None,
            };
            if c.drop_red {
                self.drop_red |= 1 << c.id.0;
            }
        }
        self.meters = meters;
    }
}

/// One piece of a stored packet, waiting in a NIC's TX queue.
#[derive(Clone, Copy, Debug)]
struct TxPiece {
    slot: u32,
    offset: u32,
    len: u32,
    total: u32,
    flow: FlowId,
    seq: u64,
    duplicate: bool,
}

/// A stored TX packet and how many queued pieces still refer to it.
#[derive(Debug, Default)]
struct TxSlot {
    buf: Option<BufHandle>,
    refs: u32,
}

/// TX flow state: installed by the slow path, read by the fast path.
#[derive(Clone, Copy, Debug)]
struct TxFlow {
    id: FlowId,
    next_seq: u64,
    policy: ClassPolicy,
    nics: NicSet,
    /// The flow's QoS class ([`EngineConfig::qos`]): from its flow class when installed;
    /// the rule engine's "set priority class" action sets it too.
    qos_class: u8,
    demand_bps: u64,
    overflow: OverflowPolicy,
    /// When a rejected flow may ask the controller again.
    retry_at: Instant,
    /// The tunnel the flow's packets are encapsulated for (`engine/tunnel.rs`) instead of
    /// going to the peer as braid packets: from its flow class when installed; the rule
    /// engine's "VXLAN/GRE encap" action sets it too.
    tunnel: Option<u8>,
    /// The cached rule lookup and the class's values under it (`engine/rules.rs`).
    rules: rules::FlowRules,
    /// The flow class it matched (index into [`EngineConfig::classes`]), `None`: no class.
    class: Option<u16>,
    /// Moved by an operator ([`super::Command::MoveFlow`]): sent on the controller's one
    /// NIC whatever `policy` and `nics` say (`engine/flows.rs`).
    moved: bool,
    /// Packets taken for the flow (queued on NICs or handed to its tunnel).
    packets: u64,
    /// Their bytes.
    bytes: u64,
    /// `bytes` at the rate scan's last visit (`engine/top_flows.rs`).
    rate_mark: top_flows::RateMark,
}

/// What a reorder buffer holds: a stored, complete datagram.
#[derive(Debug)]
struct RxItem {
    buf: BufHandle,
    len: u32,
}

/// RX flow state.
#[derive(Debug)]
struct RxFlow {
    reorder: ReorderBuffer<RxItem>,
    /// NICs this flow's packets arrived on recently: the reorder hold follows their spread.
    seen: NicSet,
    hold: Duration,
    hold_at: Instant,
    /// Floor the flow's own late arrivals put under its hold (see `LATE_FLOOR_STEP`).
    late_floor: Duration,
    waiting: bool,
    /// The cached RX rule lookup (`engine/rules.rs`).
    rules: rules::RxRuleCache,
    /// The flow key of its first delivered packet (under [`EngineConfig::classify`]), for
    /// the flow table's snapshot (`engine/flows.rs`): parsed once per flow.
    key: Option<FlowKey>,
    /// Packets delivered (into the delivery queue).
    packets: u64,
    /// Their bytes.
    bytes: u64,
    /// `bytes` at the rate scan's last visit (`engine/top_flows.rs`).
    rate_mark: top_flows::RateMark,
}

impl RxFlow {
    /// A datagram arrived after its gap was declared: double the hold floor (see
    /// [`LATE_FLOOR_STEP`]) and apply it at once.
    fn raise_late_floor(&mut self, max_hold: Duration) {
        self.late_floor = self
            .late_floor
            .saturating_mul(2)
            .max(LATE_FLOOR_STEP)
            .min(max_hold);
        self.hold = self.hold.max(self.late_floor);
    }
}

#[derive(Debug)]
struct Delivery {
    buf: BufHandle,
    len: u32,
    flow: FlowId,
    seq: u64,
    gap_before: u64,
}

#[derive(Clone, Copy, Debug)]
struct PendingReply {
    nic: NicId,
    seq: u64,
    echo_ts: u64,
    rx_ts: u64,
    /// This NIC's receive counters when the probe arrived (it included), for the prober's
    /// capacity estimate.
    rx_counters: ProbeReplyCounters,
}

/// braid's sans-IO engine. See the [module documentation](super) for the call protocol.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    nics: [Option<NicRt>; MAX_NICS],
    nic_set: NicSet,
    pub(super) store: PacketStore,
    tx_slots: Vec<TxSlot>,
    tx_free: Vec<u32>,
    tx_flows: FlowTable<FlowKey, TxFlow>,
    next_flow_id: u32,
    controller: FlowController,
    plan: Plan,
    views: Vec<LinkView>,
    health: HealthMonitor,
    /// Capacity estimates of the NICs configured `auto`.
    capacity: CapacityEstimator,
    reassembler: Reassembler,
    rx_flows: FlowTable<FlowId, RxFlow>,
    /// Flows with datagrams held in their reorder buffer (they need timer service).
    waiting: Vec<FlowId>,
    /// Where the next `handle_timeout` starts in `waiting`.
    waiting_cursor: usize,
    /// When a link last came back from Down: a flow refused before that is placed again at
    /// once, not after the rest of its [`ADMISSION_RETRY`].
    last_link_up: Instant,
    next_reorder_deadline: Option<Instant>,
    deliver: VecDeque<Delivery>,
    replies: VecDeque<PendingReply>,
    events: VecDeque<EngineEvent>,
    rr: usize,
    auth: Option<AuthState>,
    /// Where `handle_rx` copies an encrypted packet to decrypt it; allocated once, and only
    /// when the protection encrypts.
    rx_scratch: Vec<u8>,
    /// [`EngineConfig::qos`] as the schedulers run it ([`EngineConfig::effective_qos`]).
    qos: QosConfig,
    qos_classes: QosClasses,
    vnic_meters: VnicMeters,
    pub(super) stats: EngineStats,
    /// VXLAN/GRE tunnels towards peers that are not braid (`engine/tunnel.rs`).
    pub(super) tunnels: super::tunnel::Tunnels,
    /// The TX and RX rule sets (`engine/rules.rs`).
    rules: rules::RulesRt,
    /// The flow classes' names, shared with the flow table's rows (`engine/flows.rs`), so a
    /// snapshot copies a pointer per row, not a string. Classes do not change at run time.
    class_names: Vec<Arc<str>>,
    /// The scan that ranks the busiest flows (`engine/top_flows.rs`).
    rate_scan: top_flows::RateScan,
}

impl Engine {
    /// Build an engine. All tables and queues are sized here. With [`EngineConfig::auth`],
    /// packets are authenticated with keyed BLAKE3 ([`Blake3Mac`]); for another protection
    /// (an AEAD) use [`Self::with_protection`].
    ///
    /// # Errors
    /// [`ConfigError`] naming the bad field.
    pub fn new(config: EngineConfig, now: Instant) -> Result<Self, ConfigError> {
        let protection = config.auth.as_ref().map(|c| {
            let (tx, rx) = Blake3Mac::pair(c);
            let tx: Box<dyn PacketProtection> = Box::new(tx);
            let rx: Box<dyn PacketProtection> = Box::new(rx);
            (tx, rx)
        });
        Self::build(config, now, protection)
    }

    /// Build an engine whose packets are protected by `send` (what it sends) and `recv` (what
    /// it receives) instead of the BLAKE3 MAC, e.g. braid-io's AES-256-GCM. The keys are the
    /// caller's (derive them with [`crate::auth::direction_keys`] from the same
    /// [`EngineConfig::auth`]); the engine takes the replay counter's start from
    /// [`EngineConfig::auth`], runs the replay window, and sets and checks the ENCRYPTED flag
    /// by [`PacketProtection::encrypts`].
    ///
    /// # Errors
    /// As [`Self::new`]; and `Invalid { field: "auth" }` if [`EngineConfig::auth`] is `None`
    /// or if one protection encrypts and the other does not.
    pub fn with_protection(
        config: EngineConfig,
        now: Instant,
        send: Box<dyn PacketProtection>,
        recv: Box<dyn PacketProtection>,
    ) -> Result<Self, ConfigError> {
        if config.auth.is_none() {
            return Err(ConfigError::Invalid {
                field: "auth".into(),
                why: "must be set (role, counter_start) when a packet protection is given",
            });
        }
        if send.encrypts() != recv.encrypts() {
            return Err(ConfigError::Invalid {
                field: "auth".into(),
                why: "the send and receive protections must both encrypt or both not",
            });
        }
        Self::build(config, now, Some((send, recv)))
    }

    fn build(
        config: EngineConfig,
        now: Instant,
        protection: Option<(Box<dyn PacketProtection>, Box<dyn PacketProtection>)>,
    ) -> Result<Self, ConfigError> {
        // The rules are validated when they are built, below (once: large sets are costly).
        config.validate_except_rules()?;
        let mut nics: [Option<NicRt>; MAX_NICS] = Default::default();
        let mut nic_set = NicSet::EMPTY;
        let mut controller =
            FlowController::try_new(config.controller).map_err(|e| ConfigError::Invalid {
                field: alloc::format!("controller ({e})"),
                why: "is out of range",
            })?;
        let mut health = HealthMonitor::new(config.health);
        let mut capacity = CapacityEstimator::new(config.capacity);
        let qos = config.effective_qos(&config.qos);
        for spec in &config.nics {
            nic_set.insert(spec.id);
            controller
                .add_nic(NicConfig {
                    id: spec.id,
                    capacity_bps: spec.capacity_bps,
                })
                .map_err(|_| ConfigError::BadNicId(spec.id))?;
            health.add_link(now, spec.id);
            if spec.capacity_auto {
                capacity.add_link(now, spec.id, spec.capacity_bps);
            }
            nics[spec.id.index()] =
                Some(NicRt {
                    spec: spec.clone(),
                    admin_up: true,
                    state: LinkState::Up,
                    queue: Box::new(Qos::new(config.nic_queue_qos(&config.qos), now).map_err(
                        |e| ConfigError::Invalid {
                            field: alloc::format!("qos ({e})"),
                            why: "is out of range",
                        },
                    )?),
                    next_free: now,
                    pacing_bps: spec.capacity_bps,
                    delay_step: DelayStep::default(),
                    strict_held: false,
                });
        }
        // Every queued piece may hold its own slot, in any class of any NIC.
        let slots = tx_slots_needed(&qos, config.nics.len());
        let mut tx_slots = Vec::with_capacity(slots);
        tx_slots.resize_with(slots, TxSlot::default);
        let tx_free = (0..u32::try_from(slots).unwrap_or(u32::MAX))
            .rev()
            .collect();
        let mut rx_cfg = config.rx_flows;
        rx_cfg.hash_seed ^= config.seed;
        let mut tx_cfg = config.tx_flows;
        tx_cfg.hash_seed ^= config.seed.rotate_left(17);
        let mut reasm_cfg = config.reassembly;
        reasm_cfg.hash_seed ^= config.seed.rotate_left(31);
        let rules = rules::RulesRt::new(&config)?;
        let mut engine = Self {
            // Buffers of any size a page holds: the store serves tunnel encapsulation and
            // decapsulation too, so `reassembly.max_datagram_bytes` (which the reassembler
            // enforces itself, and which changes at run time) must not bound it.
            store: PacketStore::new(config.store_bytes, crate::buffer::MAX_BUF_BYTES),
            tx_slots,
            tx_free,
            tx_flows: FlowTable::new(tx_cfg),
            // Flow ids start at a point drawn from the seed (the daemon seeds from the OS), so
            // a restarted sender does not reuse the ids, and sequence numbers, of its previous
            // run, which the receiver would take for late duplicates until they expire.
            next_flow_id: (config.seed ^ (config.seed >> 32)) as u32,
            controller,
            plan: Plan::default(),
            views: Vec::with_capacity(MAX_NICS),
            health,
            reassembler: Reassembler::new(reasm_cfg),
            rx_flows: FlowTable::new(rx_cfg),
            waiting: Vec::with_capacity(config.rx_flows.capacity),
            waiting_cursor: 0,
            next_reorder_deadline: None,
            last_link_up: Instant::ZERO,
            deliver: VecDeque::with_capacity(config.deliver_queue_packets),
            replies: VecDeque::with_capacity(REPLY_QUEUE),
            events: VecDeque::with_capacity(config.event_queue),
            rr: 0,
            rx_scratch: if protection.as_ref().is_some_and(|(_, rx)| rx.encrypts()) {
                alloc::vec![0; RX_SCRATCH_BYTES]
            } else {
                Vec::new()
            },
            auth: protection.map(|(tx, rx)| AuthState {
                encrypts: rx.encrypts(),
                tx,
                rx,
                tx_counter: config.auth.as_ref().map_or(0, |c| c.counter_start),
                window: Box::default(),
            }),
            stats: EngineStats::default(),
            tunnels: super::tunnel::Tunnels::new(&config),
            rules,
            class_names: config.classes.iter().map(|c| Arc::from(&*c.name)).collect(),
            rate_scan: top_flows::RateScan::new(now),
            qos_classes: QosClasses::new(&qos),
            vnic_meters: VnicMeters::new(&qos, now),
            qos,
            nics,
            nic_set,
            config,
            capacity,
        };
        // The latency histograms, one set per NIC id up to the highest (allocated once).
        let nic_slots = engine
            .nic_set
            .iter()
            .map(|n| n.index() + 1)
            .max()
            .unwrap_or(0);
        engine
            .stats
            .latency
            .nics
            .resize_with(nic_slots, NicLatency::default);
        // The gauges; an `auto` NIC starts pacing at the estimator's rate.
        for n in engine.nics.iter().flatten() {
            let c = &mut engine.stats.nics[n.spec.id.index()];
            c.capacity_bps = n.spec.capacity_bps;
            c.pacing_bps = n.pacing_bps;
        }
        for id in nic_set.iter() {
            engine.sync_capacity(id);
        }
        engine.widen_classify_for_rules();
        Ok(engine)
    }

    // ------------------------------------------------------------------ getters

    /// Engine-wide counters, drops by reason included.
    #[must_use]
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Counters of one NIC.
    #[must_use]
    pub fn nic_stats(&self, nic: NicId) -> Option<&NicCounters> {
        self.nics[nic.index() % MAX_NICS].as_ref()?;
        self.stats.nics.get(nic.index())
    }

    /// Link health of one NIC (RTT, one-way delay, loss, state).
    #[must_use]
    pub fn link(&self, nic: NicId) -> Option<&LinkStats> {
        self.health.link(nic)
    }

    /// The capacity estimate of a NIC configured `auto` (estimate, pacing rate, phase, last
    /// sample); `None` for a NIC with a configured capacity.
    #[must_use]
    pub fn capacity_estimate(&self, nic: NicId) -> Option<&CapacityStats> {
        self.capacity.stats(nic)
    }

    /// Whether a NIC is administratively up ([`super::Command::SetNicAdmin`]); `None` for a
    /// NIC that is not configured.
    #[must_use]
    pub fn nic_admin_up(&self, nic: NicId) -> Option<bool> {
        self.nics[nic.index() % MAX_NICS]
            .as_ref()
            .filter(|n| n.spec.id == nic)
            .map(|n| n.admin_up)
    }

    /// The configured NICs.
    #[must_use]
    pub fn nic_set(&self) -> NicSet {
        self.nic_set
    }

    /// The configuration in force.
    #[must_use]
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The flow controller (assignments, NIC loads, its counters).
    #[must_use]
    pub fn controller(&self) -> &FlowController {
        &self.controller
    }

    /// The reassembler's counters.
    #[must_use]
    pub fn reassembly_stats(&self) -> &crate::reassembly::ReassemblyStats {
        self.reassembler.stats()
    }

    /// Bytes held in the packet store now (TX queues, reassembly, reorder, delivery).
    #[must_use]
    pub fn store_used_bytes(&self) -> usize {
        self.store.used_bytes()
    }

    /// Bytes waiting in every NIC's TX queue: a sender uses it for back-pressure.
    #[must_use]
    pub fn tx_queued_bytes(&self) -> usize {
        self.nics
            .iter()
            .flatten()
            .map(|n| n.queue.bytes() as usize)
            .sum()
    }

    /// The counters of one NIC's QoS scheduler (per class: queued, sent, dropped).
    #[must_use]
    pub fn nic_qos_stats(&self, nic: NicId) -> Option<&QosStats> {
        self.nics[nic.index() % MAX_NICS]
            .as_ref()
            .map(|n| n.queue.stats())
    }

    /// (packets, bytes) waiting in one QoS class of one NIC's TX queue.
    #[must_use]
    pub fn nic_qos_queued(&self, nic: NicId, class: ClassId) -> Option<(usize, u64)> {
        self.nics[nic.index() % MAX_NICS]
            .as_ref()
            .map(|n| n.queue.class_queued(class))
    }

    /// The vNIC meters' counters, per QoS class: packets coloured Green, Yellow, Red, and
    /// Red packets dropped (`drop_red_count`).
    #[must_use]
    pub fn vnic_meter_stats(&self) -> &QosStats {
        &self.vnic_meters.stats
    }

    /// The receive side of one flow: its current reorder hold, the NICs it arrives on, and
    /// its reorder counters.
    #[must_use]
    pub fn rx_flow(&self, flow: FlowId) -> Option<RxFlowInfo<'_>> {
        self.rx_flows.peek(&flow).map(|rx| RxFlowInfo {
            hold: rx.hold,
            held: rx.reorder.held(),
            nics: rx.seen,
            reorder: rx.reorder.stats(),
        })
    }

    /// Live TX and RX flows.
    #[must_use]
    pub fn flow_counts(&self) -> (usize, usize) {
        (self.tx_flows.len(), self.rx_flows.len())
    }

    // ------------------------------------------------------------------ TX path

    /// Take one IP packet from the virtual NIC.
    pub fn handle_tx(&mut self, now: Instant, packet: &[u8]) -> TxVerdict {
        let verdict = self.tx(now, packet);
        if let TxVerdict::Drop(reason) = verdict {
            self.stats.drops.count(reason);
        } else {
            self.stats.tx_packets_count += 1;
            self.stats.tx_bytes_count += packet.len() as u64;
        }
        verdict
    }

    fn tx(&mut self, now: Instant, packet: &[u8]) -> TxVerdict {
        let Ok(len) = u32::try_from(packet.len()) else {
            return TxVerdict::Drop(DropReason::TooBig);
        };
        if len > self.config.vnic_mtu {
            return TxVerdict::Drop(DropReason::TooBig);
        }
        let Ok(summary) = IpSummary::parse_l3(packet) else {
            return TxVerdict::Drop(DropReason::MalformedPacket);
        };
        let key = FlowKey::from_summary(&summary, &self.config.classify);
        // Fast path: the flow is installed. Slow path: classify, place and install it.
        let (flow_slot, mut flow) = match self.tx_flows.get_mut(&key, now) {
            Some((slot, f)) => (slot, *f),
            None => match self.install_tx_flow(now, key, &summary) {
                Ok(installed) => installed,
                Err(reason) => return TxVerdict::Drop(reason),
            },
        };
        // Rules (engine/rules.rs): the flow's cached rule (fast path), looked up again when
        // the set changed; a drop, and the rewrite to apply to the stored copy.
        let rewrite = match self.tx_rule(now, flow_slot, &mut flow, &key, packet.len()) {
            Ok(rewrite) => rewrite,
            Err(reason) => return TxVerdict::Drop(reason),
        };
        if let Some(tunnel) = flow.tunnel {
            // Encapsulated for a VXLAN/GRE peer, not sent as braid packets (engine/tunnel.rs).
            let verdict = self.rules_tunnel_tx(tunnel, flow.id, rewrite, packet);
            if verdict == TxVerdict::Queued
                && let Some((_, f)) = self.tx_flows.slot_mut(flow_slot)
            {
                f.packets += 1;
                f.bytes += u64::from(len);
            }
            return verdict;
        }
        let class = self.qos_classes.effective(flow.qos_class);
        // The controller is the truth about which NICs the flow may use now.
        let assigned = match self.controller.assignment(flow.id) {
            Some(a) => a.nics,
            // A flow of the strict QoS class goes ahead of everything else queued on a NIC,
            // so the load admission counts (bulk's, which yields to it) is no reason to
            // refuse it: while the controller has no room for it, it is carried on its
            // class's NICs and placed again every ADMISSION_RETRY.
            None if self.qos_classes.strict == Some(class) => {
                self.place_strict(now, flow_slot, &flow)
            }
            None => return TxVerdict::Drop(self.unadmitted(now, flow_slot, flow)),
        };
        self.controller.observe(now, flow.id, u64::from(len));
        let usable = self.usable_nics();
        let mode = tx_mode(&flow, assigned, usable);
        self.fill_views(now, class);
        if let Err(e) = scheduler::plan(
            &self.views,
            mode,
            len,
            &self.config.scheduler,
            &mut self.plan,
        ) {
            return TxVerdict::Drop(match e {
                // More pieces than a plan holds: the packet is too big for these NICs' MTUs.
                ScheduleError::TooManyPieces => DropReason::TooBig,
                _ => DropReason::NoLinkUp,
            });
        }
        // Room check before copying, so a packet is queued whole or not at all.
        let mut need = [0usize; MAX_NICS];
        let mut count = [0usize; MAX_NICS];
        for p in self.plan.pieces() {
            need[p.nic.index()] += p.len as usize;
            count[p.nic.index()] += 1;
        }
        let limits = self.qos.class(ClassId(class)).map_or((0, 0), |c| {
            (c.queue_packets as usize, u64::from(c.queue_bytes))
        });
        for (i, n) in self.nics.iter_mut().enumerate() {
            if let Some(n) = n
                && count[i] > 0
            {
                let (packets, bytes) = n.queue.class_queued(ClassId(class));
                if packets + count[i] > limits.0 || bytes + need[i] as u64 > limits.1 {
                    // Counted by the full NIC's class too (its QoS counters).
                    n.queue.count_refused(ClassId(class), QosDrop::QueueFull);
                    return TxVerdict::Drop(DropReason::TxQueueFull);
                }
            }
        }
        // The class's vNIC meter, once per packet, after the room check (as a scheduler's
        // own meter: a packet that cannot be queued takes no tokens).
        let color = self.meter(now, class, packet.len());
        if color == Color::Red && self.vnic_meters.drop_red & (1 << class) != 0 {
            self.vnic_meters.stats.classes[usize::from(class)].count_drop(QosDrop::MeterRed);
            return TxVerdict::Drop(DropReason::QosMeterRed);
        }
        let Some(slot) = self.tx_free.pop() else {
            return TxVerdict::Drop(DropReason::TxQueueFull);
        };
        let Some(buf) = self.store.alloc(packet.len()) else {
            self.tx_free.push(slot);
            return TxVerdict::Drop(DropReason::StoreFull);
        };
        self.store.get_mut(&buf).copy_from_slice(packet);
        if let Err(reason) = self.rules_rewrite_stored(rewrite, &buf, packet.len()) {
            self.store.free(buf);
            self.tx_free.push(slot);
            return TxVerdict::Drop(reason);
        }
        let pieces = self.plan.pieces();
        let s = &mut self.tx_slots[slot as usize];
        s.buf = Some(buf);
        s.refs = u32::try_from(pieces.len()).unwrap_or(u32::MAX);
        let duplicate = self.plan.kind() == PlanKind::Duplicate;
        match self.plan.kind() {
            PlanKind::Whole => self.stats.tx_whole_count += 1,
            PlanKind::Split => self.stats.tx_split_count += 1,
            PlanKind::Duplicate => self.stats.tx_duplicate_count += 1,
        }
        // Every piece fits (checked above), so a refusal here is not expected; it is counted
        // and its share of the slot released all the same.
        let is_strict = self.qos_classes.strict == Some(class);
        for p in pieces {
            if let Some(n) = self.nics[p.nic.index()].as_mut() {
                // A new strict packet: the guard may let it go, `poll_data` looks again.
                n.strict_held &= !is_strict;
                let piece = TxPiece {
                    slot,
                    offset: p.offset,
                    len: p.len,
                    total: len,
                    flow: flow.id,
                    seq: flow.next_seq,
                    duplicate,
                };
                if let Err(r) = n
                    .queue
                    .enqueue(now, ClassId(class), piece, p.len as usize, color)
                {
                    self.stats.drops.count(qos_drop_reason(r.reason));
                    release_slot(&mut self.tx_slots, &mut self.tx_free, &mut self.store, slot);
                }
            }
        }
        // The sequence advances only for packets that were queued, so the receiver sees no
        // gap for packets dropped here.
        if let Some((_, f)) = self.tx_flows.slot_mut(flow_slot) {
            f.next_seq += 1;
            f.packets += 1;
            f.bytes += u64::from(len);
        }
        for p in self.plan.pieces() {
            if let Some(n) = self.nics[p.nic.index()].as_ref() {
                self.stats.nics[p.nic.index()].tx_queued_bytes = n.queue.bytes();
            }
        }
        TxVerdict::Queued
    }

    /// Colour a packet of `len` bytes with its class's vNIC meter (Green without one).
    fn meter(&mut self, now: Instant, class: u8, len: usize) -> Color {
        let i = usize::from(class);
        match self.vnic_meters.meters.get_mut(i).and_then(Option::as_mut) {
            Some(m) => {
                let color = m.meter(now, len, Color::Green);
                self.vnic_meters.stats.classes[i].count_color(color);
                color
            }
            None => Color::Green,
        }
    }

    /// A packet of a flow the controller has not admitted: queued flows wait (their packets
    /// are dropped until the controller admits them); rejected flows are placed again after
    /// [`ADMISSION_RETRY`], not on every packet, so a flood of them costs no slow path.
    fn unadmitted(&mut self, now: Instant, slot: u32, flow: TxFlow) -> DropReason {
        if self.controller.is_queued(flow.id) {
            return DropReason::FlowQueued;
        }
        // Refused less than ADMISSION_RETRY ago, and no link has come back since.
        if now < flow.retry_at && flow.retry_at.saturating_sub(ADMISSION_RETRY) >= self.last_link_up
        {
            return DropReason::FlowRejected;
        }
        let (outcome, retry_at) = self.place(now, &flow);
        if let Some((_, f)) = self.tx_flows.slot_mut(slot) {
            f.retry_at = retry_at;
        }
        match outcome {
            AssignOutcome::Queued => DropReason::FlowQueued,
            // Admitted now: this packet is still dropped (it was planned without NICs); the
            // next one goes.
            _ => DropReason::FlowRejected,
        }
    }

    /// A strict-class flow the controller has not admitted (see `tx`): ask it again once its
    /// retry time has come, and return the NICs to use: the controller's if it admitted the
    /// flow now, else every NIC of the flow's class.
    fn place_strict(&mut self, now: Instant, slot: u32, flow: &TxFlow) -> NicSet {
        if now >= flow.retry_at && !self.controller.is_queued(flow.id) {
            let (_, retry_at) = self.place(now, flow);
            if let Some((_, f)) = self.tx_flows.slot_mut(slot) {
                f.retry_at = retry_at;
            }
        }
        self.controller
            .assignment(flow.id)
            .map_or(flow.nics, |a| a.nics)
    }

    /// Ask the controller to place `flow`; on rejection, when to try again.
    fn place(&mut self, now: Instant, flow: &TxFlow) -> (AssignOutcome, Instant) {
        let fpolicy = match flow.policy {
            ClassPolicy::Pin => FlowPolicy::Pin,
            ClassPolicy::Stripe => FlowPolicy::Stripe(flow.nics),
            ClassPolicy::Duplicate => FlowPolicy::Duplicate(flow.nics),
        };
        let outcome = if flow.policy == ClassPolicy::Pin && flow.nics != self.nic_set {
            // A pinned class limited to some NICs: ask for the least-utilised usable one of
            // them (the controller's own choice would range over every NIC).
            let controller = &self.controller;
            let utilisation = |n: NicId| controller.nic(n).map_or(f64::MAX, |s| s.utilisation());
            let nic = flow
                .nics
                .and(controller.usable_nics())
                .iter()
                .min_by(|&x, &y| utilisation(x).total_cmp(&utilisation(y)));
            match nic {
                Some(nic) => {
                    self.controller
                        .assign_flow(now, flow.id, nic, flow.demand_bps, flow.overflow)
                }
                None => AssignOutcome::Rejected,
            }
        } else {
            self.controller
                .place_flow(now, flow.id, fpolicy, flow.demand_bps, flow.overflow)
        };
        let retry_at = match outcome {
            AssignOutcome::Rejected => now + ADMISSION_RETRY,
            _ => Instant::ZERO,
        };
        (outcome, retry_at)
    }

    /// Slow path: match the flow classes, place the flow with the controller, install it.
    /// A flow the controller queues or rejects is installed too, so its next packets take the
    /// fast path to their drop (see [`Self::unadmitted`]).
    fn install_tx_flow(
        &mut self,
        now: Instant,
        key: FlowKey,
        summary: &IpSummary,
    ) -> Result<(u32, TxFlow), DropReason> {
        // Rules (engine/rules.rs): a flow installed before a rule replacement widened the
        // classification moves to its new key instead of being installed a second time.
        if let Some(moved) = self.rules_rekey_tx(now, &key) {
            return Ok(moved);
        }
        let class = self
            .config
            .classes
            .iter()
            .enumerate()
            .find(|(_, c)| c.matcher.matches(summary));
        let mut flow = match class {
            Some((index, c)) => TxFlow {
                id: FlowId(self.next_flow_id),
                next_seq: 0,
                policy: c.policy,
                nics: c.nics.and(self.nic_set),
                qos_class: match (c.qos_class, c.latency_critical, self.qos_classes.strict) {
                    (Some(id), _, _) => id.0,
                    (None, true, Some(strict)) => strict,
                    _ => self.qos_classes.default,
                },
                demand_bps: c.demand_bps,
                overflow: c.overflow,
                retry_at: Instant::ZERO,
                tunnel: c.tunnel,
                rules: rules::FlowRules::STALE,
                class: u16::try_from(index).ok(),
                moved: false,
                packets: 0,
                bytes: 0,
                rate_mark: top_flows::RateMark::new(now),
            },
            None => TxFlow {
                id: FlowId(self.next_flow_id),
                next_seq: 0,
                policy: self.config.default_policy,
                nics: self.nic_set,
                qos_class: self.qos_classes.default,
                demand_bps: 0,
                overflow: OverflowPolicy::Reject,
                retry_at: Instant::ZERO,
                tunnel: None,
                rules: rules::FlowRules::STALE,
                class: None,
                moved: false,
                packets: 0,
                bytes: 0,
                rate_mark: top_flows::RateMark::new(now),
            },
        };
        // Room first: placing a flow may move others, which must not happen for a flow that
        // then finds no slot.
        if !self.tx_flows.can_insert(now) {
            return Err(DropReason::FlowTableFull);
        }
        // Rules (engine/rules.rs), slow path: the rule for the flow's key overrides its
        // class's policy, NICs, QoS class and tunnel.
        self.rules_install_tx(&key, &mut flow);
        // A tunnelled flow is not braid's to place: it leaves on its tunnel's NIC.
        if flow.tunnel.is_none() {
            flow.retry_at = self.place(now, &flow).1;
        }
        match self.tx_flows.insert(key, now, flow) {
            Ok(inserted) => {
                let slot = inserted.slot;
                if let Some((_, old)) = inserted.evicted {
                    self.controller.remove_flow(old.id);
                }
                self.next_flow_id = self.next_flow_id.wrapping_add(1);
                Ok((slot, flow))
            }
            Err(_) => {
                self.controller.remove_flow(flow.id);
                Err(DropReason::FlowTableFull)
            }
        }
    }

    /// NICs that may carry data now: configured, administratively up, not down.
    fn usable_nics(&self) -> NicSet {
        let last_resort = self.last_resort();
        self.nics
            .iter()
            .flatten()
            .filter(|n| n.admin_up && (n.state != LinkState::Down || last_resort))
            .map(|n| n.spec.id)
            .collect()
    }

    /// `true` when every administratively-up NIC is Down. Then they are all used as if up:
    /// if the links really are down the packets are lost either way, but if the silence was
    /// the host's or the peer's (a stalled process, a busy machine), dropping everything
    /// would turn a pause into an outage. Drops then show up as gaps at the far side.
    fn last_resort(&self) -> bool {
        !self
            .nics
            .iter()
            .flatten()
            .any(|n| n.admin_up && n.state != LinkState::Down)
    }

    /// Describe every NIC to the scheduler, as a piece of QoS class `class` would see it: the
    /// strict class waits behind its own bytes only, any other class behind everything queued
    /// (an upper bound: DRR gives it its share before all of that is sent).
    fn fill_views(&mut self, now: Instant, class: u8) {
        let own_only = self.qos_classes.strict == Some(class);
        let overhead = self.braid_overhead();
        let last_resort = self.last_resort();
        self.views.clear();
        for n in self.nics.iter().flatten() {
            let link = self.health.link(n.spec.id);
            let ahead_ns = duration_nanos(n.next_free.saturating_duration_since(now));
            let pacing_debt = ahead_ns.saturating_mul(n.pacing_bps) / 8_000_000_000;
            self.views.push(LinkView {
                nic: n.spec.id,
                usable: n.admin_up && (n.state != LinkState::Down || last_resort),
                rate_bps: n.pacing_bps,
                backlog_bytes: if own_only {
                    n.queue.class_queued(ClassId(class)).1
                } else {
                    n.queue.bytes()
                } + pacing_debt,
                delay: link.map_or(Duration::ZERO, |l| l.owd),
                loss: link.map_or(0.0, |l| l.loss),
                mtu_payload: n.spec.mtu_bytes - overhead,
            });
        }
    }

    /// The next braid packet for a NIC, written into `buf` (which should hold the largest
    /// NIC MTU). Probe replies go first, then due probes, then data, round-robin over the
    /// NICs whose pacing allows a send.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if let Some(r) = self.replies.pop_front() {
            let mut body = [0u8; ProbeReplyCounters::REPLY_PAYLOAD_LEN];
            ProbeReplyBody {
                echo_timestamp_ns: r.echo_ts,
                rx_timestamp_ns: r.rx_ts,
            }
            .emit(&mut body)
            .expect("invariant: the body buffer holds ProbeReplyBody::LEN bytes");
            r.rx_counters.emit(&mut body).expect(
                "invariant: the body buffer is ProbeReplyCounters::REPLY_PAYLOAD_LEN bytes",
            );
            let repr = control_repr(PacketType::ProbeReply, r.nic, r.seq, now, body.len());
            match self.emit(now, r.nic, &repr, &body, buf) {
                Ok(t) => {
                    self.stats.tx_probe_reply_count += 1;
                    return Some(t);
                }
                // TooBig: the caller's buffer is too small for even a probe reply.
                Err(reason) => self.stats.drops.count(reason),
            }
        }
        while let Some(p) = self.health.poll_probe(now) {
            if self.nics[p.nic.index() % MAX_NICS].is_none() {
                continue;
            }
            let mut repr = control_repr(PacketType::Probe, p.nic, p.seq, p.timestamp, 0);
            repr.timestamp_ns = p.timestamp.as_nanos();
            match self.emit(now, p.nic, &repr, &[], buf) {
                Ok(t) => {
                    self.stats.nics[p.nic.index()].tx_probe_count += 1;
                    if self.capacity.contains(p.nic) {
                        let sent = self.tx_wire_bytes(p.nic);
                        self.capacity.on_probe_sent(now, p.nic, p.seq, sent);
                        self.sync_capacity(p.nic);
                    }
                    return Some(t);
                }
                Err(reason) => self.stats.drops.count(reason),
            }
        }
        self.poll_data(now, buf)
    }

    fn poll_data(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        let burst = self.config.pacing_burst;
        let strict_burst = burst + self.config.pacing_strict_advance;
        let strict = self.qos_classes.strict;
        for k in 0..MAX_NICS {
            let i = (self.rr + k) % MAX_NICS;
            let Some(n) = self.nics[i].as_mut() else {
                continue;
            };
            if n.queue.is_empty() || n.next_free > now + strict_burst {
                continue;
            }
            // Ahead of the schedule by more than the burst: only the strict class's packet
            // may go (its wire time still moves `next_free` on, so the bulk waits for it).
            if n.next_free > now + burst {
                n.strict_held = n
                    .queue
                    .peek(now)
                    .is_none_or(|head| Some(head.class.0) != strict);
                if n.strict_held {
                    continue;
                }
            } else {
                n.strict_held = false;
            }
            let Some(p) = n.queue.dequeue(now).map(|d| d.handle) else {
                continue;
            };
            self.rr = (i + 1) % MAX_NICS;
            let nic = n.spec.id;
            let counter = match self.next_auth_counter() {
                Ok(counter) => counter,
                Err(reason) => {
                    self.release_piece(p.slot);
                    self.stats.drops.count(reason);
                    continue;
                }
            };
            let repr = BraidRepr {
                packet_type: PacketType::Data,
                link_id: nic.0,
                flow_id: p.flow.0,
                seq: p.seq,
                frag_offset: p.offset,
                total_len: p.total,
                timestamp_ns: now.as_nanos(),
                duplicate: p.duplicate,
                auth: counter,
                payload_len: p.len as usize,
            };
            let sent = {
                let slot = &self.tx_slots[p.slot as usize];
                let stored = slot
                    .buf
                    .as_ref()
                    .expect("invariant: a queued piece's slot holds its packet");
                let data = &self.store.get(stored)[p.offset as usize..(p.offset + p.len) as usize];
                emit_packet(
                    &repr,
                    self.config.lane,
                    data,
                    buf,
                    self.auth.as_mut().map(|a| &mut *a.tx),
                )
            };
            self.release_piece(p.slot);
            match sent {
                Ok(len) => {
                    self.account_tx(now, nic, len);
                    self.stats.nics[nic.index()].tx_payload_bytes_count += u64::from(p.len);
                    return Some(Transmit { nic, len });
                }
                Err(reason) => self.stats.drops.count(reason),
            }
        }
        None
    }

    fn release_piece(&mut self, slot: u32) {
        release_slot(&mut self.tx_slots, &mut self.tx_free, &mut self.store, slot);
    }

    /// Write a control packet (no stored payload), protected if configured, and account for
    /// it. The caller counts the error.
    fn emit(
        &mut self,
        now: Instant,
        nic: NicId,
        repr: &BraidRepr,
        payload: &[u8],
        buf: &mut [u8],
    ) -> Result<Transmit, DropReason> {
        let repr = BraidRepr {
            auth: self.next_auth_counter()?,
            ..*repr
        };
        let len = emit_packet(
            &repr,
            self.config.lane,
            payload,
            buf,
            self.auth.as_mut().map(|a| &mut *a.tx),
        )?;
        self.account_tx(now, nic, len);
        Ok(Transmit { nic, len })
    }

    /// The replay counter for the next packet sent: `None` without authentication. Counters
    /// start at [`crate::auth::AuthConfig::counter_start`] and never wrap: once the next one
    /// would be `u64::MAX` (which no receiver accepts) nothing more is sent.
    fn next_auth_counter(&mut self) -> Result<Option<u64>, DropReason> {
        let Some(a) = self.auth.as_mut() else {
            return Ok(None);
        };
        if a.tx_counter == u64::MAX {
            return Err(DropReason::ReplayCounterExhausted);
        }
        let counter = a.tx_counter;
        a.tx_counter += 1;
        Ok(Some(counter))
    }

    /// Bytes braid adds to a piece of payload: the header, and with authentication the replay
    /// counter and the tag.
    fn braid_overhead(&self) -> u32 {
        let bytes = if self.auth.is_some() {
            braid_wire::BRAID_MAX_OVERHEAD
        } else {
            BRAID_HEADER_LEN
        };
        bytes as u32
    }

    /// Refresh the queued-bytes gauge of every NIC.
    fn sync_queue_gauges(&mut self) {
        for n in self.nics.iter().flatten() {
            self.stats.nics[n.spec.id.index()].tx_queued_bytes = n.queue.bytes();
        }
    }

    /// Count a sent packet and advance the NIC's pacing clock by its time on the wire. A
    /// clock that fell behind `now` keeps up to `pacing_credit` of the lost time, so a late
    /// worker can catch up.
    fn account_tx(&mut self, now: Instant, nic: NicId, len: usize) {
        let credit = self.config.pacing_credit;
        let c = &mut self.stats.nics[nic.index()];
        c.tx_packets_count += 1;
        c.tx_bytes_count += len as u64;
        if let Some(n) = self.nics[nic.index()].as_mut() {
            let wire_bytes = len as u64 + u64::from(n.spec.wire_overhead_bytes);
            n.pace(now, credit, wire_bytes);
            c.tx_queued_bytes = n.queue.bytes();
        }
    }

    /// When `nic`'s pacer lets the next packet out: its next free time less the pacing
    /// burst. `None` for a NIC that is not configured.
    pub(super) fn nic_next_send(&self, nic: NicId) -> Option<Instant> {
        let n = self.nics.get(nic.index())?.as_ref()?;
        Some(n.next_free.saturating_sub(self.config.pacing_burst))
    }

    /// A tunnel packet of `len` bytes (a whole outer IP packet) left on `nic`: move the NIC's
    /// next free time on by its wire time, as [`Self::account_tx`] does for braid packets,
    /// so tunnel and braid traffic together stay within the NIC's pacing rate. The NIC's
    /// braid counters are not touched (the tunnel has its own).
    pub(super) fn pace_tunnel_send(&mut self, now: Instant, nic: NicId, len: usize) {
        /// The Ethernet header in front of the outer IP packet on the link.
        const ETHERNET_HEADER_BYTES: u64 = 14;
        let credit = self.config.pacing_credit;
        if let Some(n) = self.nics.get_mut(nic.index()).and_then(Option::as_mut) {
            n.pace(now, credit, len as u64 + ETHERNET_HEADER_BYTES);
        }
    }

    // ------------------------------------------------------------------ RX path

    /// Take one braid packet that arrived on `nic`.
    ///
    /// With an encrypting protection ([`Self::with_protection`]) the packet is copied into an
    /// engine-owned scratch buffer to be decrypted, since `packet` is read-only here; a
    /// caller whose receive buffer is writable saves that copy with [`Self::handle_rx_mut`].
    pub fn handle_rx(&mut self, now: Instant, nic: NicId, packet: &[u8]) {
        // Copy only what will be decrypted: an encrypting engine and an ENCRYPTED packet.
        let decrypt = self.auth.as_ref().is_some_and(|a| a.encrypts)
            && packet
                .get(1)
                .is_some_and(|&f| f & BRAID_FLAG_ENCRYPTED != 0);
        let result = if decrypt {
            let mut scratch = core::mem::take(&mut self.rx_scratch);
            let result = match scratch.get_mut(..packet.len()) {
                Some(bytes) => {
                    bytes.copy_from_slice(packet);
                    self.rx(now, nic, RxBytes::Mut(bytes))
                }
                None => Err(DropReason::TooBig),
            };
            self.rx_scratch = scratch;
            result
        } else {
            self.rx(now, nic, RxBytes::Shared(packet))
        };
        if let Err(reason) = result {
            self.stats.drops.count(reason);
        }
        self.drain_link_events(now);
    }

    /// [`Self::handle_rx`] on a writable buffer: an encrypted payload is decrypted in place,
    /// with no copy. Afterwards `packet` holds the plain text of an accepted packet, and
    /// unspecified bytes in the payload of a rejected one.
    pub fn handle_rx_mut(&mut self, now: Instant, nic: NicId, packet: &mut [u8]) {
        if let Err(reason) = self.rx(now, nic, RxBytes::Mut(packet)) {
            self.stats.drops.count(reason);
        }
        self.drain_link_events(now);
    }

    fn rx(&mut self, now: Instant, nic: NicId, mut packet: RxBytes<'_>) -> Result<(), DropReason> {
        if !nic.is_valid() || self.nics[nic.index()].is_none() {
            return Err(DropReason::UnknownLink);
        }
        let (repr, encrypted) = {
            let view = BraidPacket::new_checked(packet.bytes())
                .map_err(|_| DropReason::MalformedHeader)?;
            let repr = BraidRepr::parse(&view).map_err(|_| DropReason::MalformedHeader)?;
            if view.lane() != self.config.lane {
                return Err(DropReason::WrongLane);
            }
            (repr, view.encrypted())
        };
        if let Some(a) = self.auth.as_mut() {
            // Check the counter, open (verify, decrypt) the packet, and only then record the
            // counter: recording a forged counter would let one packet push the genuine ones
            // out of the window. The flag check and the window check change nothing, so they
            // are safe on unauthenticated bytes, and they come first because they are cheap.
            let counter = repr.auth.ok_or(DropReason::Unauthenticated)?;
            if encrypted != a.encrypts {
                return Err(DropReason::EncryptionMismatch);
            }
            if let Err(e) = a.window.check(counter) {
                a.window.count_rejected(e);
                return Err(e.into());
            }
            // The parser guarantees an AUTH packet holds its tag after the header.
            let header_len = repr.header_len();
            let genuine = match &mut packet {
                RxBytes::Mut(bytes) => {
                    let (data, tag) = bytes.split_at_mut(bytes.len() - TAG_LEN);
                    a.rx.open(counter, data, header_len, tag)
                }
                // Not encrypted (handle_rx copies encrypted packets to a writable buffer).
                RxBytes::Shared(bytes) => {
                    let (data, tag) = bytes.split_at(bytes.len() - TAG_LEN);
                    a.rx.verify_clear(counter, data, header_len, tag)
                }
            };
            if !genuine {
                return Err(DropReason::BadAuthTag);
            }
            a.window.update(counter).map_err(DropReason::from)?;
        } else if encrypted {
            // Cipher text this engine has no key for: never hand it on as data.
            return Err(DropReason::EncryptionMismatch);
        }
        let packet = packet.into_bytes();
        let payload = &packet[repr.header_len()..packet.len() - repr.tag_len()];
        let c = &mut self.stats.nics[nic.index()];
        c.rx_packets_count += 1;
        c.rx_bytes_count += packet.len() as u64;
        self.health
            .on_rx(now, nic, Instant::from_nanos(repr.timestamp_ns));
        // Delay variation (engine/metrics.rs): how much this packet's one-way delay differs
        // from the previous one's on the NIC. The wrapping difference is the signed delay
        // for any |delay| < 292 years.
        #[allow(clippy::cast_possible_wrap)]
        let owd_ns = now.as_nanos().wrapping_sub(repr.timestamp_ns) as i64;
        if let (Some(rt), Some(h)) = (
            self.nics[nic.index()].as_mut(),
            self.stats.latency.nics.get_mut(nic.index()),
        ) && let Some(step) = rt.delay_step.step(owd_ns)
        {
            h.delay_variation.record(step);
        }
        match repr.packet_type {
            PacketType::Probe => {
                if self.replies.len() >= REPLY_QUEUE {
                    return Err(DropReason::ProbeReplyQueueFull);
                }
                let c = &self.stats.nics[nic.index()];
                self.replies.push_back(PendingReply {
                    nic,
                    seq: repr.seq,
                    echo_ts: repr.timestamp_ns,
                    rx_ts: now.as_nanos(),
                    rx_counters: ProbeReplyCounters {
                        rx_bytes: c.rx_bytes_count,
                        rx_packets: c.rx_packets_count,
                    },
                });
                Ok(())
            }
            PacketType::ProbeReply => {
                let body =
                    ProbeReplyBody::parse(payload).map_err(|_| DropReason::MalformedHeader)?;
                let rtt = self.health.on_probe_reply(
                    now,
                    nic,
                    repr.seq,
                    Instant::from_nanos(body.echo_timestamp_ns),
                    Instant::from_nanos(body.rx_timestamp_ns),
                );
                if let (Some(rtt), Some(h)) = (rtt, self.stats.latency.nics.get_mut(nic.index())) {
                    h.rtt.record(duration_nanos(rtt));
                }
                // A peer without the counters (a 16-byte body) leaves the estimate alone.
                if self.capacity.contains(nic)
                    && let Some(c) = ProbeReplyCounters::parse(payload)
                {
                    let delivered = self.wire_bytes(nic, c.rx_bytes, c.rx_packets);
                    self.capacity.on_probe_reply(
                        now,
                        nic,
                        repr.seq,
                        Instant::from_nanos(body.echo_timestamp_ns),
                        Instant::from_nanos(body.rx_timestamp_ns),
                        delivered,
                    );
                    self.sync_capacity(nic);
                }
                Ok(())
            }
            PacketType::Data => self.rx_data(now, nic, &repr, payload),
            _ => Err(DropReason::UnsupportedType),
        }
    }

    fn rx_data(
        &mut self,
        now: Instant,
        nic: NicId,
        repr: &BraidRepr,
        payload: &[u8],
    ) -> Result<(), DropReason> {
        let flow = FlowId(repr.flow_id);
        if repr.total_len > self.config.reassembly.max_datagram_bytes {
            return Err(DropReason::ReassemblyTooLarge);
        }
        // Fast path: the RX flow exists (one hash lookup per packet; its slot is used after
        // that). Slow path: make it (its ring is allocated once per flow), after checking there
        // is room, so a flood of new flow ids costs no allocation.
        let slot = match self.rx_flows.get_mut(&flow, now) {
            Some((slot, _)) => slot,
            None => self.install_rx_flow(now, flow)?,
        };
        let (_, rx) = self
            .rx_flows
            .slot_mut(slot)
            .expect("invariant: the rx flow's slot is live during this call");
        // Every NIC the flow arrives on counts for its delay spread, the losing copies of a
        // duplicated flow included (they are what the hold must wait for).
        rx.seen.insert(nic);
        // Duplicates (redundant copies, or a fragment of an already delivered datagram) are
        // dropped before any byte is copied.
        if let Some(reason) = rx.reorder.check(repr.seq) {
            rx.reorder.count_drop(reason);
            if reason == DropReason::LateDatagram {
                rx.raise_late_floor(self.config.reorder.max_hold);
            }
            return Err(reason);
        }
        let whole = repr.frag_offset == 0 && payload.len() == repr.total_len as usize;
        let (buf, len) = if whole {
            let buf = self
                .store
                .alloc(payload.len())
                .ok_or(DropReason::StoreFull)?;
            self.store.get_mut(&buf).copy_from_slice(payload);
            (buf, repr.total_len)
        } else {
            let key = DatagramKey {
                flow,
                seq: repr.seq,
            };
            match self.reassembler.insert(
                now,
                &mut self.store,
                key,
                repr.frag_offset,
                repr.total_len,
                payload,
            ) {
                FragOutcome::Complete { buf, len } => (buf, u32::try_from(len).unwrap_or(u32::MAX)),
                FragOutcome::Pending => return Ok(()),
                FragOutcome::Dropped(reason) => return Err(reason),
            }
        };
        let (_, rx) = self
            .rx_flows
            .slot_mut(slot)
            .expect("invariant: the rx flow's slot is live during this call");
        if now.saturating_duration_since(rx.hold_at) >= HOLD_REFRESH {
            let (spread, jitter) = self.health.delay_spread(rx.seen);
            // A full-size packet on the slowest NIC in use also lands its last byte later by
            // its serialisation time: add it to the spread.
            let serialisation = rx
                .seen
                .iter()
                .filter_map(|n| self.nics[n.index()].as_ref())
                .map(|n| u64::from(n.spec.mtu_bytes) * 8_000_000_000 / n.spec.capacity_bps.max(1))
                .max()
                .unwrap_or(0);
            let spread = spread + Duration::from_nanos(serialisation);
            // The hold rises at once and falls by at most half per refresh: packets already in
            // flight were scheduled with the older, less accurate delay estimates (at start-up
            // the sender knows no delays at all), so they may still be as far out of order as
            // the old hold allowed.
            let target = hold_from_spread(spread, jitter, &self.config.reorder).max(rx.late_floor);
            rx.hold = target.max(rx.hold / 2);
            rx.hold_at = now;
            rx.late_floor = rx
                .late_floor
                .saturating_sub(rx.late_floor / LATE_FLOOR_DECAY);
        }
        if let Admit::Rejected(item, reason) = rx.reorder.insert(now, repr.seq, RxItem { buf, len })
        {
            if reason == DropReason::LateDatagram {
                rx.raise_late_floor(self.config.reorder.max_hold);
            }
            self.store.free(item.buf);
            return Err(reason);
        }
        self.stats.rx_reorder_held_count += 1;
        self.stats.rx_reorder_held_bytes += u64::from(len);
        self.stats.nics[nic.index()].rx_first_count += 1;
        self.release_slot(now, slot);
        Ok(())
    }

    /// Slow path of `rx_data`: a new RX flow, if the table has room. Returns its slot.
    fn install_rx_flow(&mut self, now: Instant, flow: FlowId) -> Result<u32, DropReason> {
        if !self.rx_flows.can_insert(now) {
            return Err(DropReason::RxFlowTableFull);
        }
        let rx = RxFlow {
            reorder: ReorderBuffer::new(&self.config.reorder),
            seen: NicSet::EMPTY,
            hold: self.config.reorder.max_hold,
            hold_at: Instant::ZERO,
            late_floor: Duration::ZERO,
            waiting: false,
            rules: rules::RxRuleCache::STALE,
            key: None,
            packets: 0,
            bytes: 0,
            rate_mark: top_flows::RateMark::new(now),
        };
        let inserted = self
            .rx_flows
            .insert(flow, now, rx)
            .map_err(|_| DropReason::RxFlowTableFull)?;
        let slot = inserted.slot;
        if let Some((_, old)) = inserted.evicted {
            self.retire_rx_flow(old);
        }
        Ok(slot)
    }

    /// An RX flow leaves the table (idle expiry or eviction): free what its reorder buffer
    /// still holds, counted.
    fn retire_rx_flow(&mut self, mut rx: RxFlow) {
        for item in rx.reorder.drain() {
            self.stats.unhold(item.len);
            self.store.free(item.buf);
            self.stats.drops.count(DropReason::RxFlowRetired);
        }
    }

    /// Move every datagram the flow's reorder buffer releases now to the delivery queue, and
    /// keep the flow on the timer list while it still holds some.
    fn release_flow(&mut self, now: Instant, flow: FlowId) {
        if let Some((slot, _)) = self.rx_flows.get_mut(&flow, now) {
            self.release_slot(now, slot);
        }
    }

    /// [`Self::release_flow`] for a flow whose table slot the caller already has.
    fn release_slot(&mut self, now: Instant, slot: u32) {
        let Some((&flow, rx)) = self.rx_flows.slot_mut(slot) else {
            return;
        };
        while let Some(r) = rx.reorder.poll_release(now, rx.hold) {
            self.stats.unhold(r.item.len);
            self.stats.rx_gap_seqs_count += r.gap_before;
            if r.gap_before > 0 {
                self.stats.rx_gap_count += 1;
            }
            if r.held_for > Duration::ZERO {
                let held_ns = duration_nanos(r.held_for);
                self.stats.rx_reordered_count += 1;
                self.stats.rx_max_hold_ns = self.stats.rx_max_hold_ns.max(held_ns);
                self.stats.latency.reorder_hold.record(held_ns);
            }
            if self.deliver.len() >= self.config.deliver_queue_packets {
                self.stats.drops.count(DropReason::DeliverQueueFull);
                self.store.free(r.item.buf);
                continue;
            }
            // Rules (engine/rules.rs): the RX set, on the whole packet going to the vNIC.
            let bytes = self.store.get_mut(&r.item.buf);
            let len = (r.item.len as usize).min(bytes.len());
            let packet = &mut bytes[..len];
            if let Err(reason) = self
                .rules
                .rx_apply(&mut rx.rules, &self.config.classify, packet)
            {
                self.stats.drops.count(reason);
                self.store.free(r.item.buf);
                continue;
            }
            if rx.key.is_none() {
                // Once per flow: the key the flow table's snapshot shows and filters on.
                rx.key = IpSummary::parse_l3(packet)
                    .ok()
                    .map(|s| FlowKey::from_summary(&s, &self.config.classify));
            }
            rx.packets += 1;
            rx.bytes += u64::from(r.item.len);
            self.deliver.push_back(Delivery {
                buf: r.item.buf,
                len: r.item.len,
                flow,
                seq: r.seq,
                gap_before: r.gap_before,
            });
        }
        if rx.reorder.held() > 0 {
            if let Some(t) = rx.reorder.poll_timeout(rx.hold) {
                self.next_reorder_deadline =
                    Some(self.next_reorder_deadline.map_or(t, |d| d.min(t)));
            }
            if !rx.waiting {
                rx.waiting = true;
                self.waiting.push(flow);
            }
        }
    }

    /// The next whole, in-order packet for the virtual NIC, copied into `buf`. A packet
    /// larger than `buf` is dropped and counted as [`DropReason::TooBig`].
    #[must_use]
    pub fn poll_deliver(&mut self, _now: Instant, buf: &mut [u8]) -> Option<Delivered> {
        while let Some(d) = self.deliver.pop_front() {
            let len = d.len as usize;
            if len > buf.len() {
                self.store.free(d.buf);
                self.stats.drops.count(DropReason::TooBig);
                continue;
            }
            buf[..len].copy_from_slice(&self.store.get(&d.buf)[..len]);
            self.store.free(d.buf);
            self.stats.rx_delivered_count += 1;
            self.stats.rx_delivered_bytes += len as u64;
            return Some(Delivered {
                len,
                flow: d.flow,
                seq: d.seq,
                gap_before: d.gap_before,
                tunnel: None,
            });
        }
        // Then what the tunnels decapsulated (engine/tunnel.rs).
        self.poll_tunnel_deliver(buf)
    }

    // ------------------------------------------------------------------ timers and events

    /// Run the timers that are due: link health (probes, down detection), the flow
    /// controller, reassembly expiry, reorder holds, flow expiry, and a step of the scan
    /// that ranks the busiest flows (`engine/top_flows.rs`). Bounded work per call.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.health.handle_timeout(now);
        self.drain_link_events(now);
        // Rule conditions on live link state (engine/rules.rs).
        self.update_rule_conditions(now);
        if self.controller.poll_timeout().is_some_and(|t| t <= now) {
            self.controller.handle_timeout(now);
            self.drain_controller_events();
        }
        // Timeouts are found here, not on a packet: count them in the engine's drops too.
        let timeouts = |r: &Reassembler| r.stats().drops.get(DropReason::ReassemblyTimeout);
        let before = timeouts(&self.reassembler);
        self.reassembler
            .handle_timeout(now, &mut self.store, TIMEOUT_BUDGET);
        let expired = timeouts(&self.reassembler) - before;
        self.stats.drops.add(DropReason::ReassemblyTimeout, expired);
        // Reorder holds: visit at most TIMEOUT_BUDGET flows, starting where the last call
        // stopped, so no flow waits behind a thousand others for ever.
        self.next_reorder_deadline = None;
        let visits = self.waiting.len().min(TIMEOUT_BUDGET);
        let mut i = if self.waiting_cursor < self.waiting.len() {
            self.waiting_cursor
        } else {
            0
        };
        for _ in 0..visits {
            if self.waiting.is_empty() {
                break;
            }
            if i >= self.waiting.len() {
                i = 0;
            }
            let flow = self.waiting[i];
            self.release_flow(now, flow);
            let done = match self.rx_flows.get_mut(&flow, now) {
                Some((_, rx)) if rx.reorder.held() > 0 => false,
                Some((_, rx)) => {
                    rx.waiting = false;
                    true
                }
                None => true,
            };
            if done {
                self.waiting.swap_remove(i);
            } else {
                i += 1;
            }
        }
        self.waiting_cursor = i;
        if visits < self.waiting.len() {
            // Flows this call did not visit may be due: come back at once.
            self.next_reorder_deadline = Some(now);
        }
        // Idle flows.
        let controller = &mut self.controller;
        self.tx_flows
            .expire(now, TIMEOUT_BUDGET, |_, f| controller.remove_flow(f.id));
        let (store, stats) = (&mut self.store, &mut self.stats);
        self.rx_flows.expire(now, TIMEOUT_BUDGET, |_, mut rx| {
            for item in rx.reorder.drain() {
                stats.unhold(item.len);
                store.free(item.buf);
                stats.drops.count(DropReason::RxFlowRetired);
            }
        });
        // The busiest flows (engine/top_flows.rs): a bounded step of the rate scan.
        self.scan_flow_rates(now);
    }

    /// When `handle_timeout` should next be called, or `None` if nothing is scheduled.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let pacing = self
            .nics
            .iter()
            .flatten()
            .filter(|n| !n.queue.is_empty())
            .map(|n| {
                let ahead = n.send_ahead(
                    self.qos_classes.strict,
                    self.config.pacing_burst,
                    self.config.pacing_strict_advance,
                );
                n.next_free.saturating_sub(ahead)
            })
            .chain(self.tunnel_pacing_timeout())
            .min();
        [
            self.health.poll_timeout(),
            self.controller.poll_timeout(),
            self.reassembler.poll_timeout(),
            self.next_reorder_deadline,
            pacing,
            self.tx_flows.next_expiry(),
            self.rx_flows.next_expiry(),
            self.rules.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next event (link state changes, flow moves), oldest first.
    pub fn poll_event(&mut self) -> Option<EngineEvent> {
        self.events.pop_front()
    }

    fn push_event(&mut self, e: EngineEvent) {
        if self.events.len() >= self.config.event_queue {
            self.events.pop_front();
            self.stats.events_dropped_count += 1;
        }
        self.events.push_back(e);
    }

    fn drain_link_events(&mut self, now: Instant) {
        while let Some(ev) = self.health.poll_event() {
            let Some(n) = self.nics[ev.nic.index() % MAX_NICS].as_mut() else {
                continue;
            };
            n.state = ev.to;
            let admin_up = n.admin_up;
            self.controller
                .set_nic_state(now, ev.nic, controller_state(ev.to, admin_up));
            if ev.to == LinkState::Down {
                self.capacity.on_link_down(ev.nic);
                self.reroute_queue(now, ev.nic);
            } else if ev.from == LinkState::Down {
                // Flows refused while it was down need not wait out their retry delay.
                self.last_link_up = now;
            }
            self.push_event(EngineEvent::Link(ev));
        }
        self.drain_controller_events();
    }

    fn drain_controller_events(&mut self) {
        while let Some(ev) = self.controller.poll_event() {
            self.push_event(EngineEvent::Controller(ev));
        }
    }

    /// A NIC went down: its queued pieces move to the usable NIC that lands them first (they
    /// are independent braid packets, so any NIC may carry them), in the same QoS class, or
    /// are dropped and counted.
    fn reroute_queue(&mut self, now: Instant, from: NicId) {
        if self.last_resort() {
            // Every link is down, and all of them stay in use (see `last_resort`): the
            // pieces stay where they are.
            return;
        }
        let usable = self.usable_nics();
        // Newest first, each pushed to the front of its class on its new NIC: the moved
        // pieces keep their order and go ahead of younger traffic.
        while let Some(d) = self.nics[from.index()]
            .as_mut()
            .and_then(|n| n.queue.pop_back())
        {
            let p = d.handle;
            self.fill_views(now, d.class.0);
            let target = self
                .views
                .iter()
                .filter(|v| {
                    v.nic != from && v.usable && usable.contains(v.nic) && p.len <= v.mtu_payload
                })
                .min_by_key(|v| {
                    v.backlog_bytes.saturating_mul(8_000_000_000) / v.rate_bps.max(1)
                        + duration_nanos(v.delay)
                })
                .map(|v| v.nic);
            let placed = target
                .and_then(|t| self.nics[t.index()].as_mut())
                .is_some_and(|n| n.queue.push_front(d.class, p, d.len).is_ok());
            if placed {
                self.stats.nics[from.index()].tx_rerouted_count += 1;
            } else {
                self.stats.drops.count(DropReason::NoLinkUp);
                self.release_piece(p.slot);
            }
        }
        self.sync_queue_gauges();
    }

    // ------------------------------------------------------------------ mutators

    /// Apply a control command between batches. On error nothing changed.
    ///
    /// # Errors
    /// [`CommandError`] when the command names something unknown or a bad value.
    pub fn apply(&mut self, now: Instant, cmd: Command) -> Result<(), CommandError> {
        match cmd {
            Command::SetNicAdmin { nic, up } => {
                if !up && self.is_last_usable(nic) {
                    return Err(CommandError::LastUsableNic(nic));
                }
                let n = self.nics[nic.index() % MAX_NICS]
                    .as_mut()
                    .filter(|n| n.spec.id == nic)
                    .ok_or(CommandError::UnknownNic(nic))?;
                n.admin_up = up;
                let state = controller_state(n.state, up);
                self.controller.set_nic_state(now, nic, state);
                if !up {
                    self.reroute_queue(now, nic);
                }
                self.drain_controller_events();
            }
            Command::SetNicCapacity { nic, capacity_bps } => {
                if capacity_bps == 0 {
                    return Err(CommandError::InvalidValue("capacity_bps"));
                }
                if self.capacity.contains(nic) {
                    // An `auto` NIC: a new guess the estimate restarts from.
                    self.capacity.set_estimate(now, nic, capacity_bps);
                    self.sync_capacity(nic);
                } else {
                    self.set_nic_capacity(nic, capacity_bps)?;
                }
                // The configuration in force says so too (for an `auto` NIC, the guess).
                if let Some(spec) = self.config.nics.iter_mut().find(|s| s.id == nic) {
                    spec.capacity_bps = capacity_bps;
                }
            }
            Command::SetClassNics { class, nics } => {
                let nic_set = self.nic_set;
                let c = self
                    .config
                    .classes
                    .get_mut(class)
                    .ok_or(CommandError::UnknownClass(class))?;
                if nics.and(nic_set).is_empty() {
                    return Err(CommandError::InvalidValue("nics"));
                }
                c.nics = nics;
            }
            Command::SetQos(qos) => self.set_qos(now, qos)?,
            Command::ReplaceRules { tx, rx } => self.replace_rules(now, *tx, *rx)?,
            Command::ReplacePolicies(policies) => self.replace_policies(now, *policies)?,
            Command::MoveFlow { flow, nic, pin } => self.move_flow(now, flow, nic, pin)?,
        }
        Ok(())
    }

    /// [`Command::SetQos`]: check, then replace every NIC's scheduler configuration and the
    /// vNIC meters (see the command's doc for what is kept).
    fn set_qos(&mut self, now: Instant, qos: QosConfig) -> Result<(), CommandError> {
        self.config
            .check_qos(&qos)
            .map_err(CommandError::InvalidQos)?;
        self.swap_qos(now, qos);
        Ok(())
    }

    /// The swap of [`Self::set_qos`], for a configuration `check_qos` accepted.
    fn swap_qos(&mut self, now: Instant, qos: QosConfig) {
        let effective = self.config.effective_qos(&qos);
        // More slots first, if the new queues hold more pieces (between batches: it may
        // allocate).
        let slots = tx_slots_needed(&effective, self.config.nics.len());
        if slots > self.tx_slots.len() {
            let first = u32::try_from(self.tx_slots.len()).unwrap_or(u32::MAX);
            let last = u32::try_from(slots).unwrap_or(u32::MAX);
            self.tx_slots.resize_with(slots, TxSlot::default);
            self.tx_free.extend((first..last).rev());
        }
        let nic_queue = self.config.nic_queue_qos(&qos);
        let Self {
            nics,
            tx_slots,
            tx_free,
            store,
            stats,
            ..
        } = self;
        for n in nics.iter_mut().flatten() {
            n.queue
                .replace_config(now, nic_queue.clone(), |d| {
                    stats.drops.count(DropReason::QosClassRemoved);
                    release_slot(tx_slots, tx_free, store, d.handle.slot);
                })
                .expect("invariant: check_qos validated the effective configuration");
        }
        self.vnic_meters.configure(&effective, Some(&self.qos), now);
        self.qos_classes = QosClasses::new(&effective);
        self.qos = effective;
        self.config.qos = qos;
        self.sync_queue_gauges();
    }
}

/// Slots for every piece the NICs' queues can hold: one each, in the worst case.
fn tx_slots_needed(qos: &QosConfig, nics: usize) -> usize {
    qos.classes
        .iter()
        .map(|c| c.queue_packets as usize)
        .sum::<usize>()
        .saturating_mul(nics)
}

/// One queued piece of the packet in `slot` is done (sent, moved off or dropped): the
/// packet is freed after its last piece.
fn release_slot(
    tx_slots: &mut [TxSlot],
    tx_free: &mut Vec<u32>,
    store: &mut PacketStore,
    slot: u32,
) {
    let s = &mut tx_slots[slot as usize];
    s.refs = s.refs.saturating_sub(1);
    if s.refs == 0 {
        if let Some(b) = s.buf.take() {
            store.free(b);
        }
        tx_free.push(slot);
    }
}

/// The engine's drop reason for a scheduler's refusal.
const fn qos_drop_reason(why: QosDrop) -> DropReason {
    match why {
        // The NIC's TX queue (the class's queue in it) is full: the reason the engine has
        // always counted for that.
        QosDrop::QueueFull => DropReason::TxQueueFull,
        QosDrop::MeterRed => DropReason::QosMeterRed,
        QosDrop::Oversize => DropReason::QosOversize,
        QosDrop::UnknownClass => DropReason::QosUnknownClass,
        QosDrop::ClassRemoved => DropReason::QosClassRemoved,
    }
}

impl Engine {
    /// `true` if taking `nic` administratively down would leave no usable NIC: it is up and
    /// no other NIC is, or its link is not down and the link of every other NIC that is up
    /// is (traffic would then go only to dead links, `last_resort`). `false` for a NIC
    /// already down, or unknown (the command says so).
    fn is_last_usable(&self, nic: NicId) -> bool {
        let Some(n) = self.nics[nic.index() % MAX_NICS]
            .as_ref()
            .filter(|n| n.spec.id == nic && n.admin_up)
        else {
            return false;
        };
        let mut others_up = false;
        let mut others_live = false;
        for o in self.nics.iter().flatten() {
            if o.spec.id != nic && o.admin_up {
                others_up = true;
                others_live |= o.state != LinkState::Down;
            }
        }
        !others_up || (n.state != LinkState::Down && !others_live)
    }

    /// Set a NIC's capacity (bit/s, > 0): the flow controller's, the scheduler's and, for a
    /// NIC without an estimator, the pacer's. `SetNicCapacity` and the estimator both land
    /// here.
    fn set_nic_capacity(&mut self, nic: NicId, capacity_bps: u64) -> Result<(), CommandError> {
        let n = self.nics[nic.index() % MAX_NICS]
            .as_mut()
            .filter(|n| n.spec.id == nic)
            .ok_or(CommandError::UnknownNic(nic))?;
        self.controller
            .set_capacity(nic, capacity_bps)
            .map_err(|_| CommandError::UnknownNic(nic))?;
        n.spec.capacity_bps = capacity_bps;
        if !self.capacity.contains(nic) {
            n.pacing_bps = capacity_bps;
        }
        let c = &mut self.stats.nics[nic.index()];
        c.capacity_bps = capacity_bps;
        c.pacing_bps = n.pacing_bps;
        Ok(())
    }

    /// Apply an `auto` NIC's estimate after the estimator saw a probe or a reply: the pacing
    /// rate at once (a field), the capacity when it moved by at least 1/32 (the flow
    /// controller re-sums its flows on every change, so not for noise).
    fn sync_capacity(&mut self, nic: NicId) {
        let Some(&CapacityStats {
            estimate_bps,
            pacing_bps,
            ..
        }) = self.capacity.stats(nic)
        else {
            return;
        };
        let Some(n) = self.nics[nic.index() % MAX_NICS].as_mut() else {
            return;
        };
        n.pacing_bps = pacing_bps;
        self.stats.nics[nic.index()].pacing_bps = pacing_bps;
        let current = n.spec.capacity_bps;
        if estimate_bps != current && estimate_bps.abs_diff(current) >= current / 32 {
            // The NIC exists (checked above) and the estimate is never 0.
            let _ = self.set_nic_capacity(nic, estimate_bps);
        }
    }

    /// The NIC's cumulative wire bytes sent: braid bytes plus the transport's overhead per
    /// packet, the unit of pacing and of the capacity estimate.
    fn tx_wire_bytes(&self, nic: NicId) -> u64 {
        let c = &self.stats.nics[nic.index() % MAX_NICS];
        self.wire_bytes(nic, c.tx_bytes_count, c.tx_packets_count)
    }

    /// `bytes` of braid packets, `packets` of them, on the wire of `nic`: plus the
    /// transport's overhead per packet.
    fn wire_bytes(&self, nic: NicId, bytes: u64, packets: u64) -> u64 {
        let overhead = self.nics[nic.index() % MAX_NICS]
            .as_ref()
            .map_or(0, |n| u64::from(n.spec.wire_overhead_bytes));
        bytes.wrapping_add(packets.wrapping_mul(overhead))
    }
}

/// How a TX flow's packet is planned, from the flow, the NICs the controller assigned it and
/// the usable NICs. The fast path and the flow table's snapshot (the NICs a flow uses) share
/// it.
#[inline]
fn tx_mode(flow: &TxFlow, assigned: NicSet, usable: NicSet) -> Mode {
    if flow.moved {
        // An operator's move: the controller's one NIC, whatever the class says (any usable
        // NIC only if the controller has none usable for it, the last-resort case).
        return Mode::Single(match assigned.and(usable) {
            NicSet::EMPTY => usable,
            nics => nics,
        });
    }
    match flow.policy {
        // The controller's NIC, unless failover moved the flow outside its class's set
        // (then any usable NIC of the set).
        ClassPolicy::Pin => match assigned.and(usable).and(flow.nics) {
            NicSet::EMPTY => Mode::Single(flow.nics.and(usable)),
            nics => Mode::Single(nics),
        },
        ClassPolicy::Stripe => Mode::Stripe(flow.nics.and(usable)),
        ClassPolicy::Duplicate => Mode::Duplicate(flow.nics.and(usable)),
    }
}

fn controller_state(link: LinkState, admin_up: bool) -> NicState {
    match (admin_up, link) {
        (false, _) | (_, LinkState::Down) => NicState::Down,
        (true, LinkState::Degraded) => NicState::Degraded,
        (true, LinkState::Up) => NicState::Up,
    }
}

fn control_repr(
    packet_type: PacketType,
    nic: NicId,
    seq: u64,
    now: Instant,
    payload_len: usize,
) -> BraidRepr {
    BraidRepr {
        packet_type,
        link_id: nic.0,
        flow_id: 0,
        seq,
        frag_offset: 0,
        total_len: 0,
        timestamp_ns: now.as_nanos(),
        duplicate: false,
        auth: None,
        payload_len,
    }
}

/// Header (with `lane`), payload and (with a replay counter and a protection) the tag into
/// `buf`, the payload encrypted in place and the ENCRYPTED flag set if the protection
/// encrypts. Returns
/// the packet's length; [`DropReason::TooBig`] if it does not fit,
/// [`DropReason::SealRefused`] if the protection refuses.
fn emit_packet(
    repr: &BraidRepr,
    lane: u8,
    payload: &[u8],
    buf: &mut [u8],
    protection: Option<&mut (dyn PacketProtection + 'static)>,
) -> Result<usize, DropReason> {
    let hlen = repr.emit_into(buf).map_err(|_| DropReason::TooBig)?;
    let end = hlen + payload.len();
    buf.get_mut(hlen..end)
        .ok_or(DropReason::TooBig)?
        .copy_from_slice(payload);
    if lane != 0 {
        // Before sealing: the tag covers the lane.
        BraidPacket::new_unchecked(&mut buf[..end]).set_lane(lane);
    }
    let (Some(protection), Some(counter)) = (protection, repr.auth) else {
        return Ok(end);
    };
    if protection.encrypts() {
        // Before sealing: the tag covers the flag.
        BraidPacket::new_unchecked(&mut buf[..end]).set_encrypted(true);
    }
    let tag = protection
        .seal(counter, &mut buf[..end], hlen)
        .ok_or(DropReason::SealRefused)?;
    buf.get_mut(end..end + TAG_LEN)
        .ok_or(DropReason::TooBig)?
        .copy_from_slice(&tag);
    Ok(end + TAG_LEN)
}
