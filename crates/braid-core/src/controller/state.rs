//! The [`FlowController`] state machine: NIC registry, flow assignments, admission queue,
//! rebalancing and failover. The contract and the reasoning are in the module doc
//! ([`super`]).
//!
//! Everything here is slow path (per flow, per NIC event, per timer), bounded by
//! `max_flows`, `max_queued`, `max_events` and `MAX_NICS`; a rebalance plans at most
//! [`MAX_PLAN`] moves. No allocation after construction: the flow map and queues are
//! pre-sized.

use alloc::collections::VecDeque;
use foldhash::fast::FixedState;
use hashbrown::HashMap;

use super::{
    AssignOutcome, Assignment, ControllerConfig, ControllerError, ControllerEvent, ControllerStats,
    Ewma, FlowPolicy, MoveReason, NicConfig, NicState, NicStatus, OverflowPolicy, RejectReason,
};
use crate::time::{Instant, duration_nanos};
use crate::types::{FlowId, MAX_NICS, NicId, NicSet};

/// Most moves one rebalance plans (to admit one flow, or per `handle_timeout`).
const MAX_PLAN: usize = 8;

/// Rate-limiter credit units per move (credit accrues `max_moves_per_sec` units per ns).
const CREDIT_PER_MOVE: u64 = 1_000_000_000;

#[derive(Clone, Copy, Debug)]
struct FlowEntry {
    assignment: Assignment,
    ewma: Ewma,
    last_moved: Option<Instant>,
    /// Operator-pinned ([`FlowController::move_flow_to`]): rebalancing never moves it.
    pinned: bool,
}

/// Where a queued flow wants to go.
#[derive(Clone, Copy, Debug)]
enum Target {
    Nic(NicId),
    Place(FlowPolicy),
}

#[derive(Clone, Copy, Debug)]
struct Queued {
    flow: FlowId,
    target: Target,
    demand_bps: u64,
}

/// The NIC registry, indexed by `NicId`.
#[derive(Debug)]
struct Nics([Option<NicStatus>; MAX_NICS]);

impl Nics {
    fn get(&self, id: NicId) -> Option<&NicStatus> {
        self.0.get(id.index())?.as_ref()
    }

    fn get_mut(&mut self, id: NicId) -> Option<&mut NicStatus> {
        self.0.get_mut(id.index())?.as_mut()
    }

    fn usable(&self, id: NicId) -> bool {
        self.get(id).is_some_and(|n| n.state.is_usable())
    }

    fn usable_set(&self) -> NicSet {
        NicSet::ALL
            .iter()
            .take(MAX_NICS)
            .filter(|&n| self.usable(n))
            .collect()
    }

    fn cap(&self, id: NicId) -> u64 {
        self.get(id).map_or(0, |n| n.config.capacity_bps)
    }

    fn committed(&self, id: NicId) -> u64 {
        self.get(id).map_or(0, |n| n.committed_bps)
    }

    /// Admission limit: `capacity × (1 − headroom)`.
    fn limit(&self, id: NicId, headroom: f64) -> u64 {
        (self.cap(id) as f64 * (1.0 - headroom)) as u64
    }

    fn fits(&self, id: NicId, extra: u64, headroom: f64) -> bool {
        self.usable(id) && self.committed(id).saturating_add(extra) <= self.limit(id, headroom)
    }

    fn util_of(&self, id: NicId, load: u64) -> f64 {
        let cap = self.cap(id);
        if cap == 0 {
            return f64::INFINITY;
        }
        load as f64 / cap as f64
    }

    /// A flow's share of `load` on `id` under `policy` when it uses `set`.
    fn share(&self, policy: FlowPolicy, set: NicSet, id: NicId, load: u64) -> u64 {
        match policy {
            FlowPolicy::Stripe(_) => {
                let total: u64 = set.iter().map(|n| self.cap(n)).sum();
                if total == 0 {
                    return 0;
                }
                let s = u128::from(load) * u128::from(self.cap(id)) / u128::from(total);
                u64::try_from(s).unwrap_or(u64::MAX)
            }
            FlowPolicy::Pin | FlowPolicy::Duplicate(_) => load,
        }
    }

    /// Add (or remove) a flow's loads on each NIC of its set.
    fn account(&mut self, a: &Assignment, add: bool) {
        let load = a.load_bps();
        for id in a.nics.iter() {
            let sl = self.share(a.policy, a.nics, id, load);
            let sd = self.share(a.policy, a.nics, id, a.demand_bps);
            if let Some(n) = self.get_mut(id) {
                if add {
                    n.committed_bps = n.committed_bps.saturating_add(sl);
                    n.demand_bps = n.demand_bps.saturating_add(sd);
                    n.flows = n.flows.saturating_add(1);
                } else {
                    n.committed_bps = n.committed_bps.saturating_sub(sl);
                    n.demand_bps = n.demand_bps.saturating_sub(sd);
                    n.flows = n.flows.saturating_sub(1);
                }
            }
        }
    }

    /// The best NIC for a pinned flow of `load`: least-utilised Up NIC with room, else
    /// least-utilised Degraded NIC with room; with `need_room == false`, the least-utilised
    /// usable NIC (Up preferred) whatever its room. Ties go to the lower id.
    fn pick_pin(
        &self,
        load: u64,
        exclude: NicSet,
        headroom: f64,
        need_room: bool,
    ) -> Option<NicId> {
        let mut best: Option<(bool, f64, NicId)> = None;
        for (i, slot) in self.0.iter().enumerate() {
            let Some(n) = slot else { continue };
            let id = n.config.id;
            debug_assert_eq!(id.index(), i);
            if !n.state.is_usable() || exclude.contains(id) {
                continue;
            }
            if need_room && !self.fits(id, load, headroom) {
                continue;
            }
            let degraded = n.state == NicState::Degraded;
            let u = n.utilisation();
            let better = match best {
                None => true,
                Some((bd, bu, _)) => (degraded, u) < (bd, bu),
            };
            if better {
                best = Some((degraded, u, id));
            }
        }
        best.map(|(_, _, id)| id)
    }
}

/// How much a move of `f` from `src` to `dst` cuts their utilisation gap. Loads include any
/// pending change (the demand waiting for admission, earlier planned moves).
fn improvement(src_load: u64, src_cap: u64, dst_load: u64, dst_cap: u64, f: u64) -> f64 {
    let (sc, dc) = (src_cap.max(1) as f64, dst_cap.max(1) as f64);
    let (s, d, f) = (src_load as f64, dst_load as f64, f as f64);
    abs(s / sc - d / dc) - abs((s - f) / sc - (d + f) / dc)
}

fn abs(x: f64) -> f64 {
    if x < 0.0 { -x } else { x }
}

/// Why a rebalance plan failed (for the suppression counters).
#[derive(Clone, Copy, Default, Debug)]
struct Blocked {
    dwell: bool,
    hysteresis: bool,
}

/// A planned set of moves: `(flow, from, to, load)`.
#[derive(Clone, Copy, Debug)]
struct Plan {
    moves: [(FlowId, NicId, NicId, u64); MAX_PLAN],
    len: usize,
}

/// The flow controller (NIC affinity). See the module doc for the call protocol.
pub struct FlowController {
    config: ControllerConfig,
    nics: Nics,
    flows: HashMap<FlowId, FlowEntry, FixedState>,
    queue: VecDeque<Queued>,
    events: VecDeque<ControllerEvent>,
    stats: ControllerStats,
    /// Moves/sec token bucket, in `CREDIT_PER_MOVE` units per move.
    credit: u64,
    credit_at: Instant,
    next_check: Instant,
}

impl core::fmt::Debug for FlowController {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FlowController")
            .field("nics", &self.usable_nics())
            .field("flows", &self.flows.len())
            .field("queued", &self.queue.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl FlowController {
    /// A controller with no NICs, all tables pre-sized.
    ///
    /// # Panics
    ///
    /// If `config.validate()` fails (a configuration error the control plane checks first);
    /// use [`FlowController::try_new`] to get the error instead.
    #[must_use]
    pub fn new(config: ControllerConfig) -> Self {
        Self::try_new(config).expect("invalid ControllerConfig")
    }

    /// A controller with no NICs, all tables pre-sized.
    ///
    /// # Errors
    ///
    /// [`ControllerError::InvalidConfig`] if a field is out of range.
    pub fn try_new(config: ControllerConfig) -> Result<Self, ControllerError> {
        config.validate()?;
        Ok(Self {
            config,
            nics: Nics(core::array::from_fn(|_| None)),
            flows: HashMap::with_capacity_and_hasher(
                config.max_flows,
                FixedState::with_seed(config.hash_seed),
            ),
            queue: VecDeque::with_capacity(config.max_queued),
            events: VecDeque::with_capacity(config.max_events),
            stats: ControllerStats::default(),
            credit: Self::credit_cap(&config),
            credit_at: Instant::ZERO,
            next_check: Instant::ZERO,
        })
    }

    fn credit_cap(config: &ControllerConfig) -> u64 {
        u64::from(config.max_moves_per_sec).saturating_mul(CREDIT_PER_MOVE)
    }

    // --- getters ---------------------------------------------------------------------------

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// A flow's assignment (`None` if unknown or only queued).
    #[must_use]
    pub fn assignment(&self, flow: FlowId) -> Option<&Assignment> {
        self.flows.get(&flow).map(|e| &e.assignment)
    }

    /// `true` if an operator pinned the flow to its NIC ([`Self::move_flow_to`]).
    #[must_use]
    pub fn is_pinned(&self, flow: FlowId) -> bool {
        self.flows.get(&flow).is_some_and(|e| e.pinned)
    }

    /// The flow's measured rate (its load EWMA decayed to `now`), bits per second; `None`
    /// if the flow is not admitted.
    #[must_use]
    pub fn flow_rate_bps(&self, flow: FlowId, now: Instant) -> Option<u64> {
        let e = self.flows.get(&flow)?;
        Some(e.ewma.rate_bps(now, self.config.ewma_tau))
    }

    /// `true` if the flow waits in the admission queue.
    #[must_use]
    pub fn is_queued(&self, flow: FlowId) -> bool {
        self.queue.iter().any(|q| q.flow == flow)
    }

    /// Number of admitted flows.
    #[must_use]
    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    /// Number of queued flows.
    #[must_use]
    pub fn queued_count(&self) -> usize {
        self.queue.len()
    }

    /// A NIC's registry entry.
    #[must_use]
    pub fn nic(&self, nic: NicId) -> Option<&NicStatus> {
        self.nics.get(nic)
    }

    /// Every registered NIC.
    pub fn nics(&self) -> impl Iterator<Item = &NicStatus> {
        self.nics.0.iter().flatten()
    }

    /// NICs that are Up or Degraded.
    #[must_use]
    pub fn usable_nics(&self) -> NicSet {
        self.nics.usable_set()
    }

    /// Every admitted flow and its assignment (arbitrary order).
    pub fn flows(&self) -> impl Iterator<Item = (FlowId, &Assignment)> {
        self.flows.iter().map(|(f, e)| (*f, &e.assignment))
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> &ControllerStats {
        &self.stats
    }

    /// When `handle_timeout` wants to run next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next_check)
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<ControllerEvent> {
        self.events.pop_front()
    }

    // --- NIC registry ----------------------------------------------------------------------

    /// Register a NIC (state Up).
    ///
    /// # Errors
    ///
    /// `InvalidNicId`, `DuplicateNic`, `ZeroCapacity`.
    pub fn add_nic(&mut self, nic: NicConfig) -> Result<(), ControllerError> {
        if !nic.id.is_valid() {
            return Err(ControllerError::InvalidNicId { nic: nic.id });
        }
        if nic.capacity_bps == 0 {
            return Err(ControllerError::ZeroCapacity { nic: nic.id });
        }
        let slot = &mut self.nics.0[nic.id.index()];
        if slot.is_some() {
            return Err(ControllerError::DuplicateNic { nic: nic.id });
        }
        *slot = Some(NicStatus {
            config: nic,
            state: NicState::Up,
            load_bps: 0,
            committed_bps: 0,
            demand_bps: 0,
            flows: 0,
            ewma: Ewma::default(),
        });
        Ok(())
    }

    /// Unregister a NIC: its flows fail over first, as for [`NicState::Down`].
    ///
    /// # Errors
    ///
    /// `UnknownNic`.
    pub fn remove_nic(&mut self, now: Instant, nic: NicId) -> Result<(), ControllerError> {
        if self.nics.get(nic).is_none() {
            return Err(ControllerError::UnknownNic { nic });
        }
        self.set_nic_state(now, nic, NicState::Down);
        self.nics.0[nic.index()] = None;
        Ok(())
    }

    /// Change a NIC's capacity. Loads are re-accounted (stripe shares follow capacity).
    ///
    /// # Errors
    ///
    /// `UnknownNic`, `ZeroCapacity`.
    pub fn set_capacity(&mut self, nic: NicId, capacity_bps: u64) -> Result<(), ControllerError> {
        if capacity_bps == 0 {
            return Err(ControllerError::ZeroCapacity { nic });
        }
        let n = self
            .nics
            .get_mut(nic)
            .ok_or(ControllerError::UnknownNic { nic })?;
        n.config.capacity_bps = capacity_bps;
        self.recompute_accounting();
        Ok(())
    }

    /// Rebuild every NIC's committed/demand/flows sums from the flows.
    fn recompute_accounting(&mut self) {
        for n in self.nics.0.iter_mut().flatten() {
            n.committed_bps = 0;
            n.demand_bps = 0;
            n.flows = 0;
        }
        for e in self.flows.values() {
            self.nics.account(&e.assignment, true);
        }
    }

    /// Change a NIC's state (unknown NICs are ignored).
    ///
    /// Down: every flow on it moves at once (see "Failover" in the module doc); nothing stays
    /// on the down NIC. Back to Up/Degraded from Down: stripe/duplicate sets regain it and
    /// stranded flows are placed. Pinned flows do not move back by themselves; the periodic
    /// rebalance may move them, under hysteresis, dwell and the rate bound. Emits
    /// `NicStateChanged` and a `FlowMoved` per affected flow.
    pub fn set_nic_state(&mut self, now: Instant, nic: NicId, state: NicState) {
        let Some(n) = self.nics.get_mut(nic) else {
            return;
        };
        let from = n.state;
        if from == state {
            return;
        }
        n.state = state;
        self.push_event(ControllerEvent::NicStateChanged {
            nic,
            from,
            to: state,
        });
        if state == NicState::Down {
            self.failover(now, nic);
        } else if from == NicState::Down {
            self.restore(now, nic);
        }
    }

    fn failover(&mut self, now: Instant, down: NicId) {
        let headroom = self.config.headroom;
        let Self {
            nics,
            flows,
            events,
            stats,
            config,
            ..
        } = self;
        for (&flow, e) in flows.iter_mut() {
            let a = &mut e.assignment;
            if !a.nics.contains(down) {
                continue;
            }
            let from = a.nics;
            nics.account(a, false);
            if e.pinned {
                // The operator's NIC is gone: the flow is the controller's again (module
                // doc, "Operator moves and pins").
                e.pinned = false;
                stats.pins_cleared += 1;
            }
            let to = match a.policy {
                FlowPolicy::Pin => {
                    let load = a.load_bps();
                    let pick = nics
                        .pick_pin(load, NicSet::EMPTY, headroom, true)
                        .or_else(|| {
                            let p = nics.pick_pin(load, NicSet::EMPTY, headroom, false);
                            if p.is_some() {
                                stats.failover_overcommit += 1;
                            }
                            p
                        });
                    if pick.is_none() {
                        stats.stranded += 1;
                    }
                    pick.map_or(NicSet::EMPTY, NicSet::single)
                }
                FlowPolicy::Stripe(set) | FlowPolicy::Duplicate(set) => set.and(nics.usable_set()),
            };
            a.nics = to;
            nics.account(a, true);
            e.last_moved = Some(now);
            stats.failover_moves += 1;
            push_event(
                events,
                stats,
                config.max_events,
                ControllerEvent::FlowMoved {
                    flow,
                    from,
                    to,
                    reason: MoveReason::NicDown,
                },
            );
        }
    }

    fn restore(&mut self, now: Instant, up: NicId) {
        let headroom = self.config.headroom;
        let Self {
            nics,
            flows,
            events,
            stats,
            config,
            ..
        } = self;
        for (&flow, e) in flows.iter_mut() {
            let a = &mut e.assignment;
            let to = match a.policy {
                FlowPolicy::Pin if a.nics.is_empty() => {
                    let load = a.load_bps();
                    nics.pick_pin(load, NicSet::EMPTY, headroom, true)
                        .or_else(|| nics.pick_pin(load, NicSet::EMPTY, headroom, false))
                        .map_or(NicSet::EMPTY, NicSet::single)
                }
                FlowPolicy::Stripe(set) | FlowPolicy::Duplicate(set) if set.contains(up) => {
                    set.and(nics.usable_set())
                }
                _ => continue,
            };
            if to == a.nics {
                continue;
            }
            let from = a.nics;
            nics.account(a, false);
            a.nics = to;
            nics.account(a, true);
            e.last_moved = Some(now);
            stats.failover_moves += 1;
            push_event(
                events,
                stats,
                config.max_events,
                ControllerEvent::FlowMoved {
                    flow,
                    from,
                    to,
                    reason: MoveReason::NicUp,
                },
            );
        }
    }

    // --- flows -----------------------------------------------------------------------------

    /// Assign `flow` (pinned) to `nic`, exactly as the specification says: admit if `nic` has
    /// room; otherwise try to rebalance other pinned flows off `nic` (to NICs with room, each
    /// move cutting the utilisation gap by at least `hysteresis`, within the moves/sec bound
    /// and not moving a flow within its dwell) and then admit; otherwise reject or queue by
    /// `overflow`. A down or unknown `nic` has no room.
    ///
    /// An existing assignment of `flow` is replaced (and its queue entry dropped).
    pub fn assign_flow(
        &mut self,
        now: Instant,
        flow: FlowId,
        nic: NicId,
        demand_bps: u64,
        overflow: OverflowPolicy,
    ) -> AssignOutcome {
        self.forget(flow);
        if self.flows.len() >= self.config.max_flows {
            return self.reject(flow, RejectReason::FlowLimit);
        }
        match self.try_admit(now, flow, Target::Nic(nic), demand_bps) {
            Some(outcome) => outcome,
            None => self.overflow(flow, Target::Nic(nic), demand_bps, overflow),
        }
    }

    /// Place `flow` where the controller sees fit: `Pin` → the least-utilised Up NIC with
    /// room, else a Degraded one with room, else rebalance to make room on the least-utilised
    /// usable NIC; `Stripe(set)`/`Duplicate(set)` → the usable NICs of the set, if each has
    /// room for its share (sets are not rebalanced: XXX(#2) a set that does not fit is
    /// rejected/queued even if moving pinned flows would make room). Otherwise reject or
    /// queue by `overflow`.
    ///
    /// An existing assignment of `flow` is replaced (and its queue entry dropped).
    pub fn place_flow(
        &mut self,
        now: Instant,
        flow: FlowId,
        policy: FlowPolicy,
        demand_bps: u64,
        overflow: OverflowPolicy,
    ) -> AssignOutcome {
        self.forget(flow);
        if self.flows.len() >= self.config.max_flows {
            return self.reject(flow, RejectReason::FlowLimit);
        }
        match self.try_admit(now, flow, Target::Place(policy), demand_bps) {
            Some(outcome) => outcome,
            None => self.overflow(flow, Target::Place(policy), demand_bps, overflow),
        }
    }

    /// An operator's move: put `flow` on `nic` alone, through the admission of
    /// [`Self::assign_flow`] (room for the flow's load, `max(declared, measured)`, or room
    /// made by rebalancing unpinned flows off `nic`), and pin it there if `pin` (rebalancing
    /// then skips it; a NIC failure still moves it and clears the pin). `pin = false` unpins
    /// a pinned flow. See "Operator moves and pins" in the module doc.
    ///
    /// The flow may be admitted (any policy: it becomes [`FlowPolicy::Pin`], keeping its
    /// declared demand and measured rate), queued or unknown to the controller (then
    /// `demand_bps` is its declared demand; admitted, it leaves the queue). Emits `FlowMoved`
    /// with [`MoveReason::Operator`] when its NICs change.
    ///
    /// # Errors
    /// Why admission refused it ([`RejectReason::NoRoom`]: `nic` is down, unknown or full
    /// and no rebalancing could make room; [`RejectReason::FlowLimit`] for a flow not yet
    /// admitted). Then nothing changed: the flow keeps its assignment (or queue place).
    pub fn move_flow_to(
        &mut self,
        now: Instant,
        flow: FlowId,
        nic: NicId,
        demand_bps: u64,
        pin: bool,
    ) -> Result<AssignOutcome, RejectReason> {
        let old = self.flows.remove(&flow);
        if let Some(e) = &old {
            self.nics.account(&e.assignment, false);
        } else if self.flows.len() >= self.config.max_flows {
            self.stats.operator_moves_refused += 1;
            return Err(RejectReason::FlowLimit);
        }
        let (demand, measured, ewma) = old.map_or((demand_bps, 0, Ewma::default()), |e| {
            (e.assignment.demand_bps, e.assignment.measured_bps, e.ewma)
        });
        let load = demand.max(measured);
        let single = NicSet::single(nic);
        // As `try_admit` for `Target::Nic`; the flow itself is out of the accounts, so it
        // fits back on its own NIC and is not among the flows rebalancing may move.
        let outcome = if self.nics.fits(nic, load, self.config.headroom) {
            Some(AssignOutcome::Admitted(single))
        } else if self.nics.usable(nic) {
            self.make_room(now, nic, load)
                .map(|moved| AssignOutcome::AdmittedAfterRebalance {
                    nics: single,
                    moved,
                })
        } else {
            None
        };
        let Some(outcome) = outcome else {
            if let Some(e) = old {
                self.nics.account(&e.assignment, true);
                self.flows.insert(flow, e);
            }
            self.stats.operator_moves_refused += 1;
            return Err(RejectReason::NoRoom);
        };
        let from = old.map_or(NicSet::EMPTY, |e| e.assignment.nics);
        let entry = FlowEntry {
            assignment: Assignment {
                policy: FlowPolicy::Pin,
                nics: single,
                demand_bps: demand,
                measured_bps: measured,
            },
            ewma,
            last_moved: if from == single {
                old.and_then(|e| e.last_moved)
            } else {
                Some(now)
            },
            pinned: pin,
        };
        self.nics.account(&entry.assignment, true);
        self.flows.insert(flow, entry);
        self.queue.retain(|q| q.flow != flow);
        self.stats.operator_moves += 1;
        if from != single {
            self.push_event(ControllerEvent::FlowMoved {
                flow,
                from,
                to: single,
                reason: MoveReason::Operator,
            });
        }
        Ok(outcome)
    }

    /// Forget a flow (admitted or queued).
    pub fn remove_flow(&mut self, flow: FlowId) {
        self.forget(flow);
    }

    fn forget(&mut self, flow: FlowId) {
        if let Some(e) = self.flows.remove(&flow) {
            self.nics.account(&e.assignment, false);
        }
        self.queue.retain(|q| q.flow != flow);
    }

    /// Account `bytes` sent by `flow` at `now`: updates the flow's EWMA (its admission load
    /// becomes `max(demand, measured)`) and the EWMA of each NIC it uses (a striped flow's
    /// bytes are split by capacity, a duplicated flow's count in full on each NIC).
    pub fn observe(&mut self, now: Instant, flow: FlowId, bytes: u64) {
        let tau = self.config.ewma_tau;
        let Some(e) = self.flows.get_mut(&flow) else {
            self.stats.observe_unknown_flow += 1;
            return;
        };
        e.ewma.add(now, bytes, tau);
        let measured = e.ewma.rate_bps(now, tau);
        let a = &mut e.assignment;
        if measured != a.measured_bps {
            self.nics.account(a, false);
            a.measured_bps = measured;
            self.nics.account(a, true);
        }
        let a = *a;
        for id in a.nics.iter() {
            let share = self.nics.share(a.policy, a.nics, id, bytes);
            if let Some(n) = self.nics.get_mut(id) {
                n.ewma.add(now, share, tau);
                n.load_bps = n.ewma.rate_bps(now, tau);
            }
        }
    }

    /// Periodic work, bounded: decay measured loads to `now` (O(flows)), admit queued flows
    /// that now fit (at most `max_queued` attempts), then at most `MAX_PLAN` rebalance moves
    /// from the most to the least utilised Up NIC, each subject to hysteresis, dwell and the
    /// moves/sec bound.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.next_check = now + self.config.check_interval;
        self.decay_loads(now);
        self.admit_queued(now);
        self.periodic_rebalance(now);
    }

    fn decay_loads(&mut self, now: Instant) {
        let tau = self.config.ewma_tau;
        for n in self.nics.0.iter_mut().flatten() {
            n.load_bps = n.ewma.rate_bps(now, tau);
        }
        let Self { nics, flows, .. } = self;
        for e in flows.values_mut() {
            let measured = e.ewma.rate_bps(now, tau);
            if measured != e.assignment.measured_bps {
                nics.account(&e.assignment, false);
                e.assignment.measured_bps = measured;
                nics.account(&e.assignment, true);
            }
        }
    }

    fn admit_queued(&mut self, now: Instant) {
        for _ in 0..self.queue.len() {
            let Some(q) = self.queue.pop_front() else {
                break;
            };
            let admitted = if self.flows.len() < self.config.max_flows {
                self.try_admit(now, q.flow, q.target, q.demand_bps)
            } else {
                None
            };
            match admitted.and_then(AssignOutcome::nics) {
                Some(nics) => {
                    self.stats.admitted_from_queue += 1;
                    self.push_event(ControllerEvent::FlowAdmittedFromQueue { flow: q.flow, nics });
                }
                None => self.queue.push_back(q),
            }
        }
    }

    fn periodic_rebalance(&mut self, now: Instant) {
        for _ in 0..MAX_PLAN {
            // The most and least utilised Up NICs.
            let mut hi: Option<(f64, NicId)> = None;
            let mut lo: Option<(f64, NicId)> = None;
            for n in self.nics.0.iter().flatten() {
                if n.state != NicState::Up {
                    continue;
                }
                let u = n.utilisation();
                if hi.is_none_or(|(hu, _)| u > hu) {
                    hi = Some((u, n.config.id));
                }
                if lo.is_none_or(|(lu, _)| u < lu) {
                    lo = Some((u, n.config.id));
                }
            }
            let (Some((hu, src)), Some((lu, dst))) = (hi, lo) else {
                return;
            };
            if src == dst || hu - lu < self.config.hysteresis {
                return;
            }
            let (src_load, dst_load) = (self.nics.committed(src), self.nics.committed(dst));
            let (src_cap, dst_cap) = (self.nics.cap(src), self.nics.cap(dst));
            let dst_limit = self.nics.limit(dst, self.config.headroom);
            let mut blocked = Blocked::default();
            let mut best: Option<(f64, FlowId)> = None;
            for (&flow, e) in &self.flows {
                let a = &e.assignment;
                if e.pinned || a.policy != FlowPolicy::Pin || a.nics != NicSet::single(src) {
                    continue;
                }
                let f = a.load_bps();
                if dst_load.saturating_add(f) > dst_limit {
                    continue;
                }
                let gain = improvement(src_load, src_cap, dst_load, dst_cap, f);
                if gain < self.config.hysteresis {
                    blocked.hysteresis = true;
                    continue;
                }
                if !self.dwell_ok(e, now) {
                    blocked.dwell = true;
                    continue;
                }
                if best.is_none_or(|(g, _)| gain > g) {
                    best = Some((gain, flow));
                }
            }
            let Some((_, flow)) = best else {
                self.count_blocked(blocked);
                return;
            };
            if !self.take_credit(now, 1) {
                self.stats.moves_suppressed_by_rate_limit += 1;
                return;
            }
            self.move_flow(now, flow, dst);
        }
    }

    // --- admission internals ---------------------------------------------------------------

    fn dwell_ok(&self, e: &FlowEntry, now: Instant) -> bool {
        e.last_moved
            .is_none_or(|t| now.saturating_duration_since(t) >= self.config.min_dwell)
    }

    /// Admit if possible (with rebalancing for pinned flows); `None` = no room.
    fn try_admit(
        &mut self,
        now: Instant,
        flow: FlowId,
        target: Target,
        demand: u64,
    ) -> Option<AssignOutcome> {
        let headroom = self.config.headroom;
        let (policy, nic) = match target {
            Target::Nic(nic) => (FlowPolicy::Pin, Some(nic)),
            Target::Place(FlowPolicy::Pin) => (
                FlowPolicy::Pin,
                self.nics.pick_pin(demand, NicSet::EMPTY, headroom, true),
            ),
            Target::Place(p @ (FlowPolicy::Stripe(set) | FlowPolicy::Duplicate(set))) => {
                let nics = set.and(self.nics.usable_set());
                if nics.is_empty() {
                    return None;
                }
                let fits = nics.iter().all(|id| {
                    let share = self.nics.share(p, nics, id, demand);
                    self.nics.fits(id, share, headroom)
                });
                if !fits {
                    return None;
                }
                self.install(flow, p, nics, demand);
                self.stats.admitted += 1;
                return Some(AssignOutcome::Admitted(nics));
            }
        };
        // Pinned: the requested/picked NIC if it has room.
        if let Some(nic) = nic.filter(|&n| self.nics.fits(n, demand, headroom)) {
            self.install(flow, policy, NicSet::single(nic), demand);
            self.stats.admitted += 1;
            return Some(AssignOutcome::Admitted(NicSet::single(nic)));
        }
        // Rebalance: on the requested NIC, or for `place_flow` the least-utilised usable one.
        let nic = match target {
            Target::Nic(n) => n,
            Target::Place(_) => self.nics.pick_pin(demand, NicSet::EMPTY, headroom, false)?,
        };
        if !self.nics.usable(nic) {
            return None;
        }
        let moved = self.make_room(now, nic, demand)?;
        self.install(flow, policy, NicSet::single(nic), demand);
        self.stats.admitted_after_rebalance += 1;
        Some(AssignOutcome::AdmittedAfterRebalance {
            nics: NicSet::single(nic),
            moved,
        })
    }

    fn install(&mut self, flow: FlowId, policy: FlowPolicy, nics: NicSet, demand: u64) {
        let a = Assignment {
            policy,
            nics,
            demand_bps: demand,
            measured_bps: 0,
        };
        self.nics.account(&a, true);
        self.flows.insert(
            flow,
            FlowEntry {
                assignment: a,
                ewma: Ewma::default(),
                last_moved: None,
                pinned: false,
            },
        );
    }

    /// Move pinned flows off `nic` until `demand` fits, all or nothing; returns how many
    /// moved, or `None` (counting why) if no acceptable plan exists.
    fn make_room(&mut self, now: Instant, nic: NicId, demand: u64) -> Option<u32> {
        let headroom = self.config.headroom;
        let limit = self.nics.limit(nic, headroom);
        let need = self
            .nics
            .committed(nic)
            .saturating_add(demand)
            .saturating_sub(limit);
        if need == 0 {
            return Some(0);
        }
        let mut blocked = Blocked::default();
        // First choice: one move, the smallest flow that frees enough on its own.
        let plan = self
            .plan_moves(now, nic, demand, need, true, &mut blocked)
            // Else: greedy, largest first.
            .or_else(|| self.plan_moves(now, nic, demand, need, false, &mut blocked));
        let Some(plan) = plan else {
            self.count_blocked(blocked);
            return None;
        };
        if !self.take_credit(now, plan.len) {
            self.stats.moves_suppressed_by_rate_limit += 1;
            return None;
        }
        for &(flow, _, to, _) in &plan.moves[..plan.len] {
            self.move_flow(now, flow, to);
        }
        u32::try_from(plan.len).ok()
    }

    fn count_blocked(&mut self, blocked: Blocked) {
        if blocked.hysteresis {
            self.stats.moves_suppressed_by_hysteresis += 1;
        } else if blocked.dwell {
            self.stats.moves_suppressed_by_dwell += 1;
        }
    }

    /// Plan moves of pinned flows off `src` freeing at least `need`. `single`: one move, the
    /// smallest flow `>= need`; else greedily the largest remaining flows, up to `MAX_PLAN`.
    fn plan_moves(
        &self,
        now: Instant,
        src: NicId,
        demand: u64,
        need: u64,
        single: bool,
        blocked: &mut Blocked,
    ) -> Option<Plan> {
        let headroom = self.config.headroom;
        let mut plan = Plan {
            moves: [(FlowId(0), src, src, 0); MAX_PLAN],
            len: 0,
        };
        // Planned load changes per NIC; the source starts with the pending demand.
        let mut extra = [0i128; MAX_NICS];
        extra[src.index()] = i128::from(demand);
        let load_of = |extra: &[i128; MAX_NICS], id: NicId| -> u64 {
            let l = i128::from(self.nics.committed(id)) + extra[id.index()];
            u64::try_from(l.max(0)).unwrap_or(u64::MAX)
        };
        let mut freed = 0u64;
        while freed < need && plan.len < MAX_PLAN {
            // Candidate: (flow, load, target).
            let mut best: Option<(FlowId, u64, NicId)> = None;
            for (&flow, e) in &self.flows {
                let a = &e.assignment;
                if e.pinned || a.policy != FlowPolicy::Pin || a.nics != NicSet::single(src) {
                    continue;
                }
                if plan.moves[..plan.len].iter().any(|m| m.0 == flow) {
                    continue;
                }
                let f = a.load_bps();
                if f == 0 || (single && f < need) {
                    continue;
                }
                let preferable = match best {
                    None => true,
                    Some((_, bf, _)) if single => f < bf,
                    Some((_, bf, _)) => f > bf,
                };
                if !preferable {
                    continue;
                }
                // Target: least-utilised NIC with room for f (Up before Degraded), after
                // planned moves.
                let mut tgt: Option<(bool, f64, NicId)> = None;
                for n in self.nics.0.iter().flatten() {
                    let id = n.config.id;
                    if id == src || !n.state.is_usable() {
                        continue;
                    }
                    let l = load_of(&extra, id);
                    if l.saturating_add(f) > self.nics.limit(id, headroom) {
                        continue;
                    }
                    let key = (n.state == NicState::Degraded, self.nics.util_of(id, l));
                    if tgt.is_none_or(|(d, u, _)| key < (d, u)) {
                        tgt = Some((key.0, key.1, id));
                    }
                }
                let Some((_, _, to)) = tgt else { continue };
                let gain = improvement(
                    load_of(&extra, src),
                    self.nics.cap(src),
                    load_of(&extra, to),
                    self.nics.cap(to),
                    f,
                );
                if gain < self.config.hysteresis {
                    blocked.hysteresis = true;
                    continue;
                }
                if !self.dwell_ok(e, now) {
                    blocked.dwell = true;
                    continue;
                }
                best = Some((flow, f, to));
            }
            let (flow, f, to) = best?;
            plan.moves[plan.len] = (flow, src, to, f);
            plan.len += 1;
            extra[src.index()] -= i128::from(f);
            extra[to.index()] += i128::from(f);
            freed = freed.saturating_add(f);
            if single {
                break;
            }
        }
        (freed >= need).then_some(plan)
    }

    /// Take `n` moves from the token bucket, all or nothing.
    fn take_credit(&mut self, now: Instant, n: usize) -> bool {
        let cap = Self::credit_cap(&self.config);
        let dt = duration_nanos(now.saturating_duration_since(self.credit_at));
        self.credit_at = self.credit_at.max(now);
        self.credit = self
            .credit
            .saturating_add(dt.saturating_mul(u64::from(self.config.max_moves_per_sec)))
            .min(cap);
        let cost = (n as u64).saturating_mul(CREDIT_PER_MOVE);
        if n == 0 || self.credit < cost {
            return n == 0;
        }
        self.credit -= cost;
        true
    }

    fn move_flow(&mut self, now: Instant, flow: FlowId, to: NicId) {
        let Some(e) = self.flows.get_mut(&flow) else {
            return;
        };
        let from = e.assignment.nics;
        self.nics.account(&e.assignment, false);
        e.assignment.nics = NicSet::single(to);
        self.nics.account(&e.assignment, true);
        e.last_moved = Some(now);
        self.stats.moves += 1;
        self.push_event(ControllerEvent::FlowMoved {
            flow,
            from,
            to: NicSet::single(to),
            reason: MoveReason::Rebalance,
        });
    }

    fn overflow(
        &mut self,
        flow: FlowId,
        target: Target,
        demand_bps: u64,
        overflow: OverflowPolicy,
    ) -> AssignOutcome {
        match overflow {
            OverflowPolicy::Reject => self.reject(flow, RejectReason::NoRoom),
            OverflowPolicy::Queue if self.queue.len() >= self.config.max_queued => {
                self.reject(flow, RejectReason::QueueFull)
            }
            OverflowPolicy::Queue => {
                self.queue.push_back(Queued {
                    flow,
                    target,
                    demand_bps,
                });
                self.stats.queued += 1;
                AssignOutcome::Queued
            }
        }
    }

    fn reject(&mut self, flow: FlowId, reason: RejectReason) -> AssignOutcome {
        self.stats.rejected += 1;
        match reason {
            RejectReason::FlowLimit => self.stats.rejected_flow_limit += 1,
            RejectReason::QueueFull => self.stats.queue_full += 1,
            RejectReason::NoRoom => {}
        }
        self.push_event(ControllerEvent::FlowRejected { flow, reason });
        AssignOutcome::Rejected
    }

    fn push_event(&mut self, ev: ControllerEvent) {
        push_event(
            &mut self.events,
            &mut self.stats,
            self.config.max_events,
            ev,
        );
    }
}

/// Push onto the bounded event queue, dropping (and counting) the oldest when full.
fn push_event(
    events: &mut VecDeque<ControllerEvent>,
    stats: &mut ControllerStats,
    max: usize,
    ev: ControllerEvent,
) {
    if events.len() >= max {
        events.pop_front();
        stats.events_dropped += 1;
    }
    events.push_back(ev);
}
