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
//! path**: the TX flow table hit gives the flow's id, sequence counter and policy; **slow
//! path** on a miss: match the flow classes, ask the flow controller to place the flow, install
//! it → the scheduler plans the packet (whole, split, or duplicate) from a [`LinkView`] per NIC
//! → the packet is copied once into the packet store and its pieces are queued on the NICs'
//! bounded TX queues. `poll_transmit` paces each NIC to its capacity, writes the braid header
//! and the piece into the caller's buffer, and frees the stored packet after its last piece.
//!
//! # RX path
//!
//! `handle_rx` → parse and check the braid header → with authentication: ENCRYPTED flag as
//! configured, replay window check, open (verify the tag; decrypt with an AEAD), record the
//! counter ([`crate::auth`]) → link health learns the link is alive
//! (and a one-way delay sample) → probes are answered, probe replies feed RTT and loss → data:
//! the RX flow (by flow id) → dedup pre-check → unfragmented packets are stored, fragments go
//! to the reassembler → the flow's reorder buffer → released in order into the delivery queue,
//! with a hold time that follows the measured delay spread between the links the flow uses.
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

pub use config::{
    ClassMatch, ClassPolicy, EngineConfig, FlowClass, NicSpec, UDP_IPV4_OVERHEAD_BYTES,
};
pub use metrics::{EngineStats, NicCounters};
pub use state::{Delivered, Engine, RxFlowInfo, Transmit, TxVerdict};

use core::fmt;

use crate::{NicId, NicSet};

/// A control command, applied between batches by [`Engine::apply`]. The REST API and the CLI
/// reach the engine only through these.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Command {
    /// Take a NIC administratively down (its flows are drained to the others) or bring it
    /// back.
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
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownNic(n) => write!(f, "unknown nic {}", n.0),
            Self::UnknownClass(c) => write!(f, "unknown flow class {c}"),
            Self::InvalidValue(field) => write!(f, "invalid value for {field}"),
        }
    }
}

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
