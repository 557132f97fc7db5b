//! The engine: one sans-IO state machine that ties braid's stages together.
//!
//! It owns no socket, no device and no clock. The caller (the simulator, the daemon or a
//! benchmark) moves bytes in and out and passes the time.
//!
//! # Call protocol
//!
//! An [`Engine`] is driven by one thread. Every call takes `now`, which must never go
//! backwards. The calls fall in four groups (the order quinn-proto uses):
//!
//! - **getters**: [`Engine::stats`], [`Engine::nic_stats`], [`Engine::link`], ... never change
//!   state;
//! - **handle_\***: [`Engine::handle_tx`] takes one packet from the virtual NIC (an IP packet
//!   from the application), [`Engine::handle_rx`] takes one braid packet that arrived on a NIC
//!   ([`Engine::handle_rx_mut`] on a writable buffer: an encrypted payload is decrypted in
//!   place rather than in a copy),
//!   [`Engine::handle_timeout`] runs the timers that are due;
//! - **mutators**: [`Engine::apply`] applies a control [`Command`] between batches;
//! - **poll_\***: after a batch of `handle_*` calls the caller drains, in this order,
//!   [`Engine::poll_transmit`] (braid packets for the NICs, written into the caller's buffer),
//!   [`Engine::poll_deliver`] (whole, in-order packets for the virtual NIC), and
//!   [`Engine::poll_event`] (link and flow events), and then sleeps until
//!   [`Engine::poll_timeout`]. `poll_*` calls do bounded work: each returns one item.
//!
//! # TX path
//!
//! `handle_tx` → size check → classify ([`braid_wire::IpSummary`] → [`FlowKey`]) → **fast
//! path**: the TX flow table hit gives the flow's id, sequence counter and policy, and its
//! cached TX rule (`engine/rules.rs`: drop, header rewrites; looked up again when the rule
//! set's version changed); **slow path** on a miss: match the flow classes, look the flow's
//! rule up (its striping, QoS class and tunnel override the class's), ask the flow controller
//! to place the flow, install it → the scheduler plans the packet (whole, split, or duplicate) from a [`LinkView`] per NIC
//! → the flow's QoS class meters the packet at the vNIC (RFC 2697/2698; Red is dropped where
//! the class polices) → the packet is copied once into the packet store (where the rule's
//! rewrites are applied, RFC 1624 checksum updates) and its pieces are
//! queued in the flow's QoS class on the NICs' TX queues: per NIC a [`crate::qos::Qos`]
//! scheduler with a bounded queue per class, the strict (latency-critical) class first and
//! DRR among the others. `poll_transmit` paces each NIC to its capacity, takes the
//! scheduler's next piece, writes the braid header and the piece into the caller's buffer,
//! and frees the stored packet after its last piece. [`Command::SetQos`] replaces the QoS
//! configuration of every NIC at once, between batches.
//!
//! The pacer stays a virtual clock per NIC (`next_free`), not a [`crate::qos::Shaper`]: the
//! two are the same token bucket (the shaper's module doc derives the equivalence), but the
//! clock also gives the scheduler each NIC's pacing debt as backlog, makes up lost time after
//! a late wake-up (`pacing_credit`) and follows an `auto` NIC's estimate by one field; the
//! tests and benchmarks of those behaviours hold as they are.
//!
//! # RX path
//!
//! `handle_rx` → parse and check the braid header → with authentication: ENCRYPTED flag as
//! configured, replay window check, open (verify the tag; decrypt with an AEAD), record the
//! counter ([`crate::auth`]) → link health learns the link is alive
//! (and a one-way delay sample) → probes are answered, probe replies feed RTT and loss → data:
//! the RX flow (by flow id) → dedup pre-check → unfragmented packets are stored, fragments go
//! to the reassembler → the flow's reorder buffer → released in order, through the RX rules
//! (rewrites, drop; `engine/rules.rs`), into the delivery queue, with a hold time that
//! follows the measured delay spread between the links the flow uses. Rule conditions on
//! live link state are evaluated at every `handle_timeout`; [`Command::ReplaceRules`]
//! swaps both rule sets between batches, and [`Command::ReplacePolicies`] the tunnels, the
//! QoS configuration and the rule sets together, all or nothing (`engine/policies.rs`).
//!
//! # Flow table and operator moves
//!
//! [`Engine::flows`] answers a bounded, filtered page of the live TX and RX flow tables
//! ([`FlowQuery`] → at most `limit + 1` [`FlowRow`]s in [`FlowCursor`] order), and
//! [`Engine::flow`] one flow; [`Command::MoveFlow`] moves (and pins) a TX flow to a NIC
//! through the flow controller's admission. Both are off the fast path, between batches
//! (`engine/flows.rs`).
//!
//! Every drop is counted by [`DropReason`]. Nothing on these paths allocates once the tables
//! have warmed up, logs, or makes a syscall.
//!
//! [`FlowKey`]: crate::flow::FlowKey
//! [`LinkView`]: crate::scheduler::LinkView
//! [`DropReason`]: crate::DropReason

mod config;
mod metrics;
mod state;
#[cfg(test)]
mod tests;
pub mod tunnel;

pub use config::{
    ClassMatch, ClassPolicy, EngineConfig, FlowClass, NicSpec, UDP_IPV4_OVERHEAD_BYTES,
};
pub use metrics::{
    EngineStats, FlowRate, LatencyStats, NicCounters, NicLatency, TOP_FLOWS, TopFlows,
};
pub use state::flows::{FlowCursor, FlowDirection, FlowQuery, FlowRow, MAX_FLOW_ROWS};
pub use state::policies::Policies;
pub use state::rules::{RuleDirection, RuleHits, RuleRefusal, RuleStats, RuleTable, RulesError};
pub use state::{Delivered, Engine, RxFlowInfo, Transmit, TxVerdict};
pub use tunnel::{MAX_TUNNELS, TunnelRefusal, TunnelSpec, TunnelStats, TunnelTransmit};

use alloc::boxed::Box;
use core::fmt;

use crate::qos::{QosConfig, QosConfigError};
use crate::{NicId, NicSet};

/// A control command, applied between batches by [`Engine::apply`]. The REST API and the CLI
/// reach the engine only through these.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Command {
    /// Take a NIC administratively down (its flows are drained to the others, its queued
    /// packets moved to them) or bring it back. Taking down the last usable NIC is refused
    /// ([`CommandError::LastUsableNic`]): the last NIC administratively up, or the last one
    /// up whose link is not down (the others' links are; traffic would go only to dead
    /// links). [`Engine::nic_admin_up`] reads the state back.
    SetNicAdmin {
        /// The NIC.
        nic: NicId,
        /// `true` = administratively up.
        up: bool,
    },
    /// Change a NIC's configured capacity (bits per second).
    SetNicCapacity {
        /// The NIC.
        nic: NicId,
        /// New capacity in bit/s, > 0.
        capacity_bps: u64,
    },
    /// Change the set of NICs a flow class may use. Applies to flows installed after the
    /// command; installed flows keep their set until they expire.
    // XXX(#5): re-place installed flows of the class (the REST API applies policies live).
    SetClassNics {
        /// Index into [`EngineConfig::classes`].
        class: usize,
        /// The NICs.
        nics: NicSet,
    },
    /// Replace the QoS configuration ([`EngineConfig::qos`]) of every NIC at once, between
    /// batches: classes that stay keep their queued packets in order (up to their new
    /// limits), their DRR deficit and, when their meter did not change, its tokens; the
    /// packets of a removed class, or beyond a shrunk queue, are dropped and counted
    /// ([`crate::DropReason::QosClassRemoved`]). A configuration the engine refuses
    /// ([`EngineConfig::check_qos`]) changes nothing. Installed flows keep their QoS class;
    /// one whose class is gone goes to the default class.
    SetQos(QosConfig),
    /// Replace the TX and RX rule sets ([`EngineConfig::tx_rules`], [`EngineConfig::rx_rules`])
    /// as a whole, between batches: tables built and validated off the fast path
    /// ([`RuleTable::build`]), checked again against the configuration in force (tunnels and
    /// QoS classes may have changed since), then swapped in; every flow is looked up again
    /// on its next packet. A refused table leaves the sets in force unchanged. See
    /// `engine/rules.rs`.
    ReplaceRules {
        /// The new TX table ([`RuleDirection::Tx`]).
        tx: Box<RuleTable>,
        /// The new RX table ([`RuleDirection::Rx`]).
        rx: Box<RuleTable>,
    },
    /// Replace the tunnel table, the QoS configuration and both rule sets as one set,
    /// between batches, all or nothing: every part is checked against the others first
    /// (the rules against the new tunnels and QoS classes, the flow classes' tunnels by
    /// name against the new table), and a refusal changes nothing. Tunnels that stay (same
    /// name, NIC and encapsulation) keep their state (outer IPv4 id, GRE sequence numbers
    /// sent and checked, counters, queued packets); the queued packets of the others are
    /// dropped and counted ([`crate::DropReason::TunnelRemoved`], once per datagram); a
    /// changed or re-added tunnel of the same name, NIC, endpoints and VNI or key carries on
    /// its GRE sequence number and outer IPv4 id (`engine/tunnel/replace.rs`); every TX flow
    /// is looked up again on its next packet. QoS as [`Command::SetQos`], rules as
    /// [`Command::ReplaceRules`]. With them, the striping policies (default and per flow
    /// class: installed flows take theirs on their next packet), the scheduler's cost
    /// model, the reassembler's caps and timeout (held datagrams that no longer fit are
    /// dropped, [`crate::DropReason::ReassemblyEvicted`]) and the reorder holds (applied to
    /// the held datagrams at once); what sized a table at start is refused if changed
    /// ([`CommandError::PolicyRefused`]). See `engine/policies.rs`.
    ReplacePolicies(Box<Policies>),
    /// Move a TX flow to one NIC, through the flow controller's admission
    /// ([`crate::controller::FlowController::move_flow_to`]): admitted, the flow is sent on
    /// that NIC alone from its next packet on (its class's striping policy and NIC set no
    /// longer apply to it), and with `pin` it stays there: rebalancing does not move it, a
    /// NIC going down does (and clears the pin). `pin = false` unpins: the controller may
    /// rebalance it later. Refused, nothing changes: [`CommandError::UnknownFlow`],
    /// [`CommandError::FlowNotMovable`] (an RX flow, a tunnelled flow),
    /// [`CommandError::UnknownNic`], [`CommandError::NicNotUsable`],
    /// [`CommandError::MoveRefused`] (admission). A later policy replacement that changes the
    /// flow's striping, NICs or tunnel places it again, ending the move and the pin. See
    /// `engine/flows.rs`.
    MoveFlow {
        /// The TX flow (TX and RX flow ids are separate spaces: this is a TX one).
        flow: crate::FlowId,
        /// The NIC it goes to.
        nic: NicId,
        /// Hold it there (operator pin); `false` unpins.
        pin: bool,
    },
}

/// Why [`Engine::apply`] refused a command. The engine's state is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommandError {
    /// The NIC is not configured.
    UnknownNic(NicId),
    /// The class index is out of range.
    UnknownClass(usize),
    /// A value is out of range; the field is named.
    InvalidValue(&'static str),
    /// A QoS configuration the engine refuses ([`Command::SetQos`]).
    InvalidQos(QosError),
    /// A rule of [`Command::ReplaceRules`] the engine cannot carry out with the
    /// configuration in force (a tunnel or QoS class it names is gone; a VLAN push whose
    /// flows' class tunnel is not VXLAN, a VLAN pop or match with no VXLAN tunnel), or of
    /// [`Command::ReplacePolicies`] with the tunnels, QoS classes and remapped flow classes
    /// it brings.
    InvalidRules(RuleRefusal),
    /// A tunnel table the engine refuses ([`Command::ReplacePolicies`]).
    InvalidTunnels(TunnelRefusal),
    /// Flow class `class` (index into [`EngineConfig::classes`]) names a tunnel that the
    /// new table of [`Command::ReplacePolicies`] does not have (by name).
    ClassTunnelRemoved {
        /// Index into [`EngineConfig::classes`].
        class: usize,
    },
    /// Not taken through the path it came by, which the text names with the one to use
    /// (the engine does not return it: its callers do, such as braid-io's worker for a
    /// [`Command::ReplacePolicies`] sent without the worker's tunnel ports).
    NotAccepted(&'static str),
    /// No TX flow has this id ([`Command::MoveFlow`]); it may have expired.
    UnknownFlow(crate::FlowId),
    /// The flow cannot be moved ([`Command::MoveFlow`]); the text says why (an RX flow: its
    /// NICs are the sender's choice; a tunnelled flow: it leaves on its tunnel's NIC).
    FlowNotMovable {
        /// The flow.
        flow: crate::FlowId,
        /// Why.
        why: &'static str,
    },
    /// The NIC is administratively down or its link is down ([`Command::MoveFlow`]).
    NicNotUsable(NicId),
    /// The flow controller's admission refused the move ([`Command::MoveFlow`]): the NIC
    /// has no room for the flow and rebalancing could not make any; the flow stays where it
    /// was.
    MoveRefused {
        /// The flow.
        flow: crate::FlowId,
        /// The NIC asked for.
        nic: NicId,
        /// The controller's reason.
        reason: crate::controller::RejectReason,
    },
    /// Taking this NIC down would leave no usable NIC ([`Command::SetNicAdmin`]): it is the
    /// last one administratively up, or the last one up whose link is not down.
    LastUsableNic(NicId),
    /// A part of [`Command::ReplacePolicies`] the engine cannot put in force: `field` names
    /// it as in [`EngineConfig`] (`reassembly.max_fragments`, `scheduler.max_split_links`,
    /// `reorder.capacity`, `class_policies`) and `why` says what it takes (a value that
    /// sized a table at start needs a restart).
    PolicyRefused {
        /// The field, as a path in [`EngineConfig`].
        field: &'static str,
        /// What is allowed.
        why: &'static str,
    },
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownNic(n) => write!(f, "unknown nic {}", n.0),
            Self::UnknownClass(c) => write!(f, "unknown flow class {c}"),
            Self::InvalidValue(field) => write!(f, "invalid value for {field}"),
            Self::InvalidQos(e) => write!(f, "qos configuration refused: {e}"),
            Self::InvalidRules(r) => write!(f, "rule set refused: {r}"),
            Self::InvalidTunnels(r) => write!(f, "tunnel table refused: {r}"),
            Self::ClassTunnelRemoved { class } => write!(
                f,
                "tunnel table refused: classes[{class}].tunnel: the flow class's tunnel is \
                 not in the new table (a class follows its tunnel by name)"
            ),
            Self::NotAccepted(why) => write!(f, "command not accepted here: {why}"),
            Self::UnknownFlow(id) => write!(f, "no tx flow has id {}", id.0),
            Self::FlowNotMovable { flow, why } => {
                write!(f, "flow {} cannot be moved: {why}", flow.0)
            }
            Self::NicNotUsable(n) => write!(
                f,
                "nic {} is administratively down or its link is down",
                n.0
            ),
            Self::MoveRefused { flow, nic, reason } => {
                let why = match reason {
                    crate::controller::RejectReason::NoRoom => {
                        "no room for the flow's load, and rebalancing could not make any"
                    }
                    crate::controller::RejectReason::FlowLimit => {
                        "the flow controller holds its most flows"
                    }
                    crate::controller::RejectReason::QueueFull => "the admission queue is full",
                };
                write!(f, "moving flow {} to nic {} refused: {why}", flow.0, nic.0)
            }
            Self::LastUsableNic(n) => write!(
                f,
                "nic {} is the last usable nic: taking it down would leave none",
                n.0
            ),
            Self::PolicyRefused { field, why } => write!(f, "{field}: {why}"),
        }
    }
}

/// Why the engine refuses a QoS configuration ([`EngineConfig::check_qos`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum QosError {
    /// A field of the configuration is out of range (its path inside `qos`).
    Config(QosConfigError),
    /// A field is too small for the largest packet the engine queues or meters
    /// ([`EngineConfig::largest_packet_bytes`]: the vNIC MTU or a NIC's MTU): a queue's
    /// bytes, a meter's or guard's burst.
    TooSmallForPackets(QosConfigError),
    /// No weighted class: traffic that is not latency-critical would have no class.
    NoWeightedClass,
    /// Flow class `flow_class` (index into [`EngineConfig::classes`]) names a QoS class
    /// the configuration does not have.
    UnknownClass {
        /// Index into [`EngineConfig::classes`].
        flow_class: usize,
    },
    /// Flow class `flow_class` is latency-critical and names no QoS class, and the
    /// configuration has no strict class to put it in.
    NoStrictClass {
        /// Index into [`EngineConfig::classes`].
        flow_class: usize,
    },
}

impl QosError {
    /// The configuration field at fault, as a path from [`EngineConfig`]
    /// (`qos.classes[1].queue_bytes`, `classes[0].qos_class`), and what is allowed.
    #[must_use]
    pub fn field_and_why(&self) -> (alloc::string::String, &'static str) {
        let path = |e: &QosConfigError| {
            let mut p = alloc::string::String::from("qos.");
            if let Some(i) = e.class {
                p += &alloc::format!("classes[{i}].");
            }
            if !e.section.is_empty() {
                p += e.section;
                p.push('.');
            }
            p += e.field;
            p
        };
        match self {
            Self::Config(e) => (path(e), e.why),
            Self::TooSmallForPackets(e) => (
                path(e),
                "must hold the largest packet braid queues or meters (vnic_mtu or a NIC's \
                 mtu_bytes)",
            ),
            Self::NoWeightedClass => (
                "qos.classes".into(),
                "needs a weighted class: traffic that is not latency-critical goes there",
            ),
            Self::UnknownClass { flow_class } => (
                alloc::format!("classes[{flow_class}].qos_class"),
                "names no class of qos.classes",
            ),
            Self::NoStrictClass { flow_class } => (
                alloc::format!("classes[{flow_class}].latency_critical"),
                "qos.classes has no strict class for it (or name one with qos_class)",
            ),
        }
    }
}

impl fmt::Display for QosError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (field, why) = self.field_and_why();
        write!(f, "{field}: {why}")
    }
}

impl core::error::Error for QosError {}

/// Why [`Engine::new`] refused a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// No NIC is configured.
    NoNics,
    /// A NIC id is used twice or is not below [`crate::MAX_NICS`].
    BadNicId(NicId),
    /// A value is out of range; `field` names it and `why` says what is allowed.
    Invalid {
        /// The configuration field, e.g. `nics[1].mtu`.
        field: alloc::string::String,
        /// What is allowed.
        why: &'static str,
    },
    /// A rule list the engine refuses ([`EngineConfig::tx_rules`], [`EngineConfig::rx_rules`]).
    Rules(Box<RulesError>),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoNics => f.write_str("no nics configured: at least one is needed"),
            Self::BadNicId(n) => write!(
                f,
                "nic id {} is duplicated or not below {}",
                n.0,
                crate::MAX_NICS
            ),
            Self::Invalid { field, why } => write!(f, "{field}: {why}"),
            Self::Rules(e) => write!(f, "{e}"),
        }
    }
}

/// Something the caller may want to know about (log, show, export). Bounded queue: the
/// oldest are dropped (and counted) if the caller does not poll.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum EngineEvent {
    /// Link health changed a NIC's state.
    Link(crate::health::LinkEvent),
    /// The flow controller moved a flow, queued one or admitted one.
    Controller(crate::controller::ControllerEvent),
}
