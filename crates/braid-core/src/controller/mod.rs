//! The flow controller: NIC affinity (mission part 1).
//!
//! Owns: the registry of NICs (configured capacity, state, measured load), which NIC(s) each
//! flow uses, admission, rebalancing, the admission queue and failover when a NIC goes down.
//! Does not own per-packet choices inside a flow's NIC set (the scheduler), link liveness
//! detection (health reports it through [`FlowController::set_nic_state`]) nor flow
//! classification (`flow`).
//!
//! # Call protocol
//!
//! Setup: [`FlowController::new`], [`add_nic`](FlowController::add_nic) per NIC. Then, with a
//! non-decreasing `now` on every call: [`place_flow`](FlowController::place_flow) or
//! [`assign_flow`](FlowController::assign_flow) when a flow is first seen (slow path),
//! [`observe`](FlowController::observe) with the bytes a flow sent (per batch),
//! [`set_nic_state`](FlowController::set_nic_state) when health changes a link's state,
//! [`handle_timeout`](FlowController::handle_timeout) at
//! [`poll_timeout`](FlowController::poll_timeout), and [`poll_event`](FlowController::poll_event)
//! until `None` to learn which flows moved. Getters ([`assignment`](FlowController::assignment),
//! [`nic`](FlowController::nic), [`stats`](FlowController::stats)) never change state.
//!
//! # Admission
//!
//! A NIC admits a flow while `committed + demand <= capacity × (1 − headroom)`, where a flow's
//! load is `max(declared demand, measured EWMA)`: the declared demand protects a flow that has
//! not sent yet, the measurement catches one that sends more than it declared. `committed` is
//! the sum of these loads over the flows assigned to the NIC, so it moves with a flow the
//! moment the flow moves; the NIC's own measured EWMA ([`NicStatus::load_bps`]) is reported for
//! monitoring but would keep a moved flow's load for a few τ and make the controller chase
//! ghosts. A striped flow counts on each NIC of its set in proportion to that NIC's capacity
//! (the scheduler sizes pieces to bandwidth); a duplicated flow counts in full on each.
//!
//! # Why hysteresis, a moves-per-second bound and a dwell time, together
//!
//! Moving a flow is not free: packets in flight on the old NIC arrive after those sent on the
//! new one, so every move costs the receiver reorder hold time, and TCP may see it as loss.
//! A controller that moves flows whenever utilisation is uneven *flaps*: two NICs near the
//! admission limit trade a flow back and forth as the measured load wobbles, and each trade
//! makes the load wobble more. Each of the three mechanisms stops a different kind of flap,
//! and none of them alone is enough:
//!
//! - **Hysteresis** (a move must cut the utilisation gap between the two NICs by at least
//!   `hysteresis`, default 10 points) stops flaps driven by *small* differences: measurement
//!   noise and tiny flows never justify a move. It does not stop a big flow that is "too big
//!   for either NIC" from improving the gap in each direction alternately.
//! - **Dwell** (a flow that moved may not move again for `min_dwell`, default 1 s) stops that
//!   *per-flow* ping-pong: whatever the arithmetic says, one flow's packets change path at
//!   most once per dwell, so its reorder cost is bounded. It does not bound how many
//!   *different* flows move at once.
//! - **The moves-per-second bound** (a token bucket, `max_moves_per_sec`, default 10) bounds
//!   the *aggregate* churn: a burst of admissions or a measurement spike cannot trigger a storm
//!   of moves in one instant, and the measured loads (EWMA, τ = 100 ms) have time to reflect
//!   one move before the next is decided — the controller acts on its own feedback only after
//!   it has been observed, which is what makes the loop stable.
//!
//! Failover is the exception: when a NIC goes down its flows move at once, ignoring all three
//! (losing a NIC must not black-hole flows); the moved flows start a dwell so they do not
//! bounce back the moment the NIC returns.
//!
//! # Failover and overflow
//!
//! When a NIC goes [`NicState::Down`], each flow pinned to it moves to the least-utilised Up
//! NIC with room, else a Degraded one with room, else — counted in
//! `ControllerStats::failover_overcommit` — the least-utilised usable NIC even without room:
//! an established flow is never queued or dropped by the controller. Only if no NIC is usable
//! is it left with an empty set (`stranded`), and placed again when a NIC comes back up.
//! Striped and duplicated flows lose the down NIC from their set and regain it when it is Up
//! or Degraded again. New flows that find no room are rejected or queued
//! ([`OverflowPolicy`]); queued flows are admitted by `handle_timeout` when room appears.
//!
//! # Operator moves and pins
//!
//! [`move_flow_to`](FlowController::move_flow_to) puts a flow on one NIC on an operator's
//! request (the REST API's `POST /v1/flows/{id}`), through the admission of
//! [`assign_flow`](FlowController::assign_flow): the NIC must have room for the flow's load
//! (`max(declared, measured)`), else pinned flows are rebalanced off it under the usual
//! hysteresis, dwell and moves/sec bound, else the move is refused with the
//! [`RejectReason`] and **the flow keeps its assignment** (unlike `assign_flow`, which
//! replaces it). A moved flow becomes a [`FlowPolicy::Pin`] flow on that NIC, keeps its
//! measured rate and starts a dwell. With `pin`, it is *operator-pinned*: neither the
//! periodic rebalance nor the room-making of an admission moves it. A NIC going down still
//! does (failover never black-holes a flow), and that **clears the pin**: the operator chose
//! a NIC, not whatever NIC failover picks, and a pin left on the failover NIC would hold the
//! flow there against the operator's intent; the flow is the controller's again (counted in
//! `ControllerStats::pins_cleared`). A move with `pin = false` unpins.
//!
//! # Measured load
//!
//! [`Ewma`] keeps an exponentially decaying byte sum `S`, decayed by `e^(−Δt/τ)` for whatever
//! `Δt` separates two samples, so irregular sample times (batches, idle gaps) need no fixed
//! tick; the rate is `8·S/τ`. `no_std` has no `exp`, so [`exp_neg`] uses a (3,3) Padé
//! approximant on a reduced argument (relative error < 1e-8, tested against `std`).

mod ewma;
mod state;

pub use ewma::{Ewma, exp_neg};
pub use state::FlowController;

use core::fmt;
use core::time::Duration;

use crate::types::{FlowId, NicId, NicSet};

/// A NIC's administrative/health state.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum NicState {
    /// Healthy: preferred for new flows.
    #[default]
    Up,
    /// Usable but impaired (loss, delay): used for new pinned flows only when no Up NIC has
    /// room; still part of stripe/duplicate sets.
    Degraded,
    /// Not usable: its flows move to others.
    Down,
}

impl NicState {
    /// `true` for Up and Degraded.
    #[must_use]
    pub const fn is_usable(self) -> bool {
        !matches!(self, Self::Down)
    }
}

/// A NIC as configured.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct NicConfig {
    /// The NIC's id (`0..MAX_NICS`).
    pub id: NicId,
    /// Usable capacity, bits per second (> 0).
    pub capacity_bps: u64,
}

/// How a flow uses NICs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum FlowPolicy {
    /// One NIC, chosen by the controller (`place_flow`) or requested (`assign_flow`); the
    /// controller may move it to rebalance or on failover.
    Pin,
    /// Stripe packets across the usable NICs of the set.
    Stripe(NicSet),
    /// Duplicate every packet on each usable NIC of the set (first arrival wins).
    Duplicate(NicSet),
}

/// What to do with a new flow when nothing has room.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum OverflowPolicy {
    /// Refuse it.
    #[default]
    Reject,
    /// Hold it (bounded by `max_queued`) and admit it when room appears.
    Queue,
}

/// Flow controller configuration.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct ControllerConfig {
    /// Fraction of each NIC's capacity kept free: admit while
    /// `load + demand <= capacity × (1 − headroom)`. Default 0.05. In `[0, 1)`.
    pub headroom: f64,
    /// A move must cut the utilisation gap between source and target by at least this
    /// (fraction of capacity). Default 0.10. `>= 0`.
    pub hysteresis: f64,
    /// Token bucket bound on rebalance moves (failover excluded); burst = this. Default 10.
    /// 0 disables rebalancing moves.
    pub max_moves_per_sec: u32,
    /// A flow that moved may not be moved by rebalancing again for this long. Default 1 s.
    pub min_dwell: Duration,
    /// Time constant of the load EWMAs. Default 100 ms. Must be > 0.
    pub ewma_tau: Duration,
    /// Most admitted flows; beyond, `Rejected` (counted in `rejected_flow_limit`).
    /// Default 65 536.
    pub max_flows: usize,
    /// Most queued flows; beyond, `Rejected` (counted in `queue_full`). Default 1 024.
    pub max_queued: usize,
    /// Capacity of the event queue; when full the oldest event is dropped and counted.
    /// Default 1 024.
    pub max_events: usize,
    /// How often `handle_timeout` wants to run (rebalance check, queue, load decay).
    /// Default 100 ms (one τ).
    pub check_interval: Duration,
    /// Seed for the flow map's hash (from config, never the OS). Default 0.
    pub hash_seed: u64,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            headroom: 0.05,
            hysteresis: 0.10,
            max_moves_per_sec: 10,
            min_dwell: Duration::from_secs(1),
            ewma_tau: Duration::from_millis(100),
            max_flows: 65_536,
            max_queued: 1_024,
            max_events: 1_024,
            check_interval: Duration::from_millis(100),
            hash_seed: 0,
        }
    }
}

impl ControllerConfig {
    /// Check ranges.
    ///
    /// # Errors
    ///
    /// [`ControllerError::InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<(), ControllerError> {
        let bad = |field| Err(ControllerError::InvalidConfig { field });
        if !(self.headroom >= 0.0 && self.headroom < 1.0) {
            return bad("headroom");
        }
        if !(self.hysteresis >= 0.0 && self.hysteresis.is_finite()) {
            return bad("hysteresis");
        }
        if self.ewma_tau.is_zero() {
            return bad("ewma_tau");
        }
        if self.max_flows == 0 {
            return bad("max_flows");
        }
        if self.max_events == 0 {
            return bad("max_events");
        }
        Ok(())
    }
}

/// A flow's current assignment.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Assignment {
    /// How the flow uses NICs.
    pub policy: FlowPolicy,
    /// The NIC(s) the flow uses now (empty only if stranded: no NIC usable).
    pub nics: NicSet,
    /// Declared demand, bits per second.
    pub demand_bps: u64,
    /// Measured rate (EWMA) at the last `observe` or `handle_timeout`, bits per second.
    pub measured_bps: u64,
}

impl Assignment {
    /// The load used for admission: `max(demand, measured)`.
    #[must_use]
    pub fn load_bps(&self) -> u64 {
        self.demand_bps.max(self.measured_bps)
    }
}

/// A NIC's registry entry.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct NicStatus {
    /// Configuration (capacity may change with `set_capacity`).
    pub config: NicConfig,
    /// Current state.
    pub state: NicState,
    /// Measured load (EWMA of the bytes its flows sent), bits per second, as of the last
    /// `observe` or `handle_timeout`.
    pub load_bps: u64,
    /// Sum of the admission loads (`max(demand, measured)`) of its flows, bits per second.
    pub committed_bps: u64,
    /// Sum of the declared demands of its flows, bits per second.
    pub demand_bps: u64,
    /// Number of flows using this NIC.
    pub flows: u32,
    pub(crate) ewma: Ewma,
}

impl NicStatus {
    /// `committed / capacity`.
    #[must_use]
    pub fn utilisation(&self) -> f64 {
        if self.config.capacity_bps == 0 {
            return f64::INFINITY;
        }
        self.committed_bps as f64 / self.config.capacity_bps as f64
    }
}

/// Result of `assign_flow` / `place_flow`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AssignOutcome {
    /// Admitted on these NICs, nothing moved.
    Admitted(NicSet),
    /// Admitted after moving `moved` other flows away to make room.
    AdmittedAfterRebalance {
        /// The NIC(s) the flow uses.
        nics: NicSet,
        /// How many other flows moved.
        moved: u32,
    },
    /// No room; held in the queue (`OverflowPolicy::Queue`).
    Queued,
    /// No room (or flow/queue limit); refused. The reason is in the `FlowRejected` event.
    Rejected,
}

impl AssignOutcome {
    /// The NICs if admitted.
    #[must_use]
    pub fn nics(self) -> Option<NicSet> {
        match self {
            Self::Admitted(n) | Self::AdmittedAfterRebalance { nics: n, .. } => Some(n),
            Self::Queued | Self::Rejected => None,
        }
    }
}

/// Why a flow moved.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum MoveReason {
    /// To make room for a new flow, or to even out utilisation.
    Rebalance,
    /// Its NIC went down (or was removed).
    NicDown,
    /// A NIC came back: a stripe/duplicate set regained it, or a stranded flow was placed.
    NicUp,
    /// An operator moved it ([`FlowController::move_flow_to`]).
    Operator,
}

/// Why a flow was rejected.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum RejectReason {
    /// No NIC had room and rebalancing could not make any.
    NoRoom,
    /// `max_flows` reached.
    FlowLimit,
    /// The queue was full (`OverflowPolicy::Queue`).
    QueueFull,
}

/// Something the caller should know about (pull with `poll_event`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ControllerEvent {
    /// A flow's NIC set changed.
    FlowMoved {
        /// The flow.
        flow: FlowId,
        /// Its previous NICs.
        from: NicSet,
        /// Its NICs now (empty if stranded).
        to: NicSet,
        /// Why.
        reason: MoveReason,
    },
    /// A queued flow was admitted.
    FlowAdmittedFromQueue {
        /// The flow.
        flow: FlowId,
        /// Its NICs.
        nics: NicSet,
    },
    /// A flow was refused.
    FlowRejected {
        /// The flow.
        flow: FlowId,
        /// Why.
        reason: RejectReason,
    },
    /// A NIC changed state.
    NicStateChanged {
        /// The NIC.
        nic: NicId,
        /// Previous state.
        from: NicState,
        /// New state.
        to: NicState,
    },
}

/// Controller counters.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct ControllerStats {
    /// Flows admitted directly (no move needed).
    pub admitted: u64,
    /// Flows admitted after rebalancing.
    pub admitted_after_rebalance: u64,
    /// Queued flows admitted later.
    pub admitted_from_queue: u64,
    /// Flows rejected, for any reason (includes the two below).
    pub rejected: u64,
    /// Rejected because `max_flows` was reached.
    pub rejected_flow_limit: u64,
    /// Rejected because the queue was full.
    pub queue_full: u64,
    /// Flows put in the queue.
    pub queued: u64,
    /// Rebalance moves made.
    pub moves: u64,
    /// Failover moves made (NIC down/removed, stranded flow placed, set regained).
    pub failover_moves: u64,
    /// Failover moves onto a NIC without room (no NIC had room).
    pub failover_overcommit: u64,
    /// Pinned flows left with no usable NIC.
    pub stranded: u64,
    /// Wanted moves not made because the moves/sec bucket was empty.
    pub moves_suppressed_by_rate_limit: u64,
    /// Wanted moves not made because no move improved the imbalance by `hysteresis`.
    pub moves_suppressed_by_hysteresis: u64,
    /// Wanted moves not made because the only candidates were within their dwell time.
    pub moves_suppressed_by_dwell: u64,
    /// Events dropped because the event queue was full (oldest dropped).
    pub events_dropped: u64,
    /// `observe` for a flow the controller does not know.
    pub observe_unknown_flow: u64,
    /// Flows an operator moved ([`FlowController::move_flow_to`]).
    pub operator_moves: u64,
    /// Operator moves refused by admission (the flow stayed where it was).
    pub operator_moves_refused: u64,
    /// Operator pins cleared because the pinned flow's NIC went down (the flow moved).
    pub pins_cleared: u64,
}

/// Setup errors (NIC registry and configuration).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ControllerError {
    /// The NIC id is not below `MAX_NICS`.
    InvalidNicId {
        /// The id.
        nic: NicId,
    },
    /// A NIC with this id is already registered.
    DuplicateNic {
        /// The id.
        nic: NicId,
    },
    /// No NIC with this id is registered.
    UnknownNic {
        /// The id.
        nic: NicId,
    },
    /// A capacity of zero.
    ZeroCapacity {
        /// The id.
        nic: NicId,
    },
    /// A configuration field out of range.
    InvalidConfig {
        /// The field's name.
        field: &'static str,
    },
}

impl fmt::Display for ControllerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidNicId { nic } => {
                write!(f, "nic id {} is not below {}", nic.0, crate::MAX_NICS)
            }
            Self::DuplicateNic { nic } => write!(f, "{nic} is already registered"),
            Self::UnknownNic { nic } => write!(f, "{nic} is not registered"),
            Self::ZeroCapacity { nic } => write!(f, "{nic} has zero capacity"),
            Self::InvalidConfig { field } => {
                write!(f, "controller config field {field} out of range")
            }
        }
    }
}

impl core::error::Error for ControllerError {}

#[cfg(test)]
mod operator_tests;
#[cfg(test)]
mod tests;
