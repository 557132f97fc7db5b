//! The flow table as the control plane sees it: a bounded, filtered page of the live TX and
//! RX flows ([`Engine::flows`], [`Engine::flow`]), and an operator's move of a TX flow to a
//! NIC ([`Command::MoveFlow`](super::super::Command::MoveFlow)).
//!
//! Owns: the query ([`FlowQuery`]), the row ([`FlowRow`]), their order ([`FlowCursor`]) and
//! what a filter matches; the checks of a move before the flow controller's admission.
//! Does not own: the tables (`state.rs`), admission and pins
//! ([`crate::controller::FlowController::move_flow_to`]), names of NICs and QoS classes or
//! the REST shapes (braid-control, through the daemon's adapter).
//!
//! # Order and cursor
//!
//! Rows come in [`FlowCursor`] order: TX flows before RX flows, each by flow id. TX and RX
//! ids are separate spaces (a TX id is this engine's, an RX id the sender's), so one id may
//! name a flow in each table, and a cursor carries the direction with the id: a page ends
//! after a `(direction, id)` and the next starts after it, with no flow skipped or repeated
//! (a flow that appears meanwhile shows up if its cursor is higher). A caller that merges the
//! pages of several engines (one per data-path worker) gives each row a global id that
//! sorts the same way, e.g. `worker << 33 | direction << 32 | id`, asks every engine for
//! `limit + 1` rows after the cursor and keeps the lowest `limit + 1` of the union.
//!
//! # Bounded work and memory
//!
//! A query walks each table once (O(flows); per flow, two hash lookups: its last-seen time
//! and its controller entry) and keeps the `limit + 1` lowest cursors that match in a
//! max-heap in the output `Vec`, allocated once with room for `limit + 1` rows (at most
//! [`MAX_FLOW_ROWS`] + 1): whatever the table's size, the memory is the page's, and nothing
//! is allocated per row (a row holds its class's name as an `Arc<str>` the engine keeps, a
//! reference count, not a copy; `tests/flow_snapshot_alloc.rs` counts it). It is not the
//! fast path: the caller runs it between batches (the data path's worker, on a control
//! request). [`Engine::flow`] finds a TX flow by id in one pass too (the TX table is keyed by
//! flow key, not id).
//!
//! # What a row says
//!
//! A TX row has the flow's key (addresses, ports, protocol, and DSCP, VLAN and VNI where the
//! classification uses them), its flow class, QoS class, striping policy, the NICs its next
//! packet may use (as the fast path computes them: the controller's NIC for a pinned or moved
//! flow, the class's usable NICs for a striped or duplicated one, the tunnel's NIC for a
//! tunnelled one, none for a flow the controller has not admitted), the operator pin, the
//! rate the flow controller measures (its EWMA decayed to `now`; `None` while not admitted),
//! the time since its last packet and its packet and byte counts. An RX row has the key of
//! its first delivered packet (parsed once per flow), the NICs its packets arrived on and
//! what it delivered; the receiver knows no class, policy or rate for it.
//!
//! # Operator moves
//!
//! [`Command::MoveFlow`](super::super::Command::MoveFlow) finds the TX flow (an RX flow is
//! the sender's to place; a tunnelled flow leaves on its tunnel's NIC: both are refused, as
//! are an unknown NIC and one administratively down or with its link down) and asks the
//! flow controller to admit it on the NIC
//! ([`crate::controller::FlowController::move_flow_to`]: `assign_flow`'s admission, but a
//! refusal leaves the flow where it was). Admitted, the flow is marked *moved*: from its
//! next packet it goes on the controller's one NIC whatever its class's policy (a striped
//! flow is no longer striped) and NIC set (the operator may choose a NIC outside it), and
//! follows the controller from then on (a failover, or a rebalance when not pinned). A
//! policy replacement that changes the flow's striping, NICs or tunnel places it again by
//! its new policy and ends the move and the pin (`engine/rules.rs`, `tx_relookup`).

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::IpAddr;

use super::{Engine, RxFlow, TxFlow, tx_mode};
use crate::engine::{ClassPolicy, CommandError};
use crate::flow::FlowKey;
use crate::health::LinkState;
use crate::qos::ClassId;
use crate::scheduler::Mode;
use crate::time::duration_nanos;
use crate::{FlowId, Instant, MAX_NICS, NicId, NicSet};

/// Most rows a [`FlowQuery`] asks for (`limit`); the answer has at most one more.
pub const MAX_FLOW_ROWS: usize = 1000;

/// Rows per page when a caller has no preference ([`FlowQuery::default`]).
const DEFAULT_FLOW_ROWS: usize = 100;

/// Which table a flow is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FlowDirection {
    /// vNIC → NICs: classified, placed by the flow controller. Ids are this engine's.
    Tx,
    /// NICs → vNIC: reassembled and reordered. Ids are the sender's.
    Rx,
}

/// A place in the flow table's order: TX before RX, then by id (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowCursor {
    /// The table.
    pub direction: FlowDirection,
    /// The flow's id in it.
    pub id: FlowId,
}

/// Which flows [`Engine::flows`] returns: those that pass every filter given (`None`: any)
/// and come after `after`, at most `limit + 1` of them (the extra row tells the caller
/// there is another page).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowQuery {
    /// One table only.
    pub direction: Option<FlowDirection>,
    /// Flows whose NICs ([`FlowRow::nics`]) include this one.
    pub nic: Option<NicId>,
    /// Flows of this flow class (index into [`super::super::EngineConfig::classes`]; RX
    /// flows have none).
    pub class: Option<usize>,
    /// IP protocol number.
    pub protocol: Option<u8>,
    /// Flows with this source or destination address.
    pub address: Option<IpAddr>,
    /// Flows with this source or destination port.
    pub port: Option<u16>,
    /// Only flows after this place (the last row of the previous page).
    pub after: Option<FlowCursor>,
    /// Rows wanted, 1..=[`MAX_FLOW_ROWS`] (clamped into it). Default 100.
    pub limit: usize,
}

impl Default for FlowQuery {
    fn default() -> Self {
        Self {
            direction: None,
            nic: None,
            class: None,
            protocol: None,
            address: None,
            port: None,
            after: None,
            limit: DEFAULT_FLOW_ROWS,
        }
    }
}

impl FlowQuery {
    /// Does `row` pass the filters (not the cursor)? A filter on the key (protocol, address,
    /// port) never matches a row without one (an RX flow that delivered nothing yet).
    #[must_use]
    pub fn matches(&self, row: &FlowRow) -> bool {
        let key = row.key.as_ref();
        self.direction.is_none_or(|d| row.direction == d)
            && self.nic.is_none_or(|n| row.nics.contains(n))
            && self.class.is_none_or(|c| row.class == Some(c))
            && self
                .protocol
                .is_none_or(|p| key.is_some_and(|k| k.protocol == p))
            && self
                .address
                .is_none_or(|a| key.is_some_and(|k| k.src == a || k.dst == a))
            && self
                .port
                .is_none_or(|p| key.is_some_and(|k| k.src_port == p || k.dst_port == p))
    }

    /// Rows kept: `limit` clamped to 1..=[`MAX_FLOW_ROWS`], plus one.
    fn keep(&self) -> usize {
        self.limit.clamp(1, MAX_FLOW_ROWS) + 1
    }
}

/// One flow, as [`Engine::flows`] and [`Engine::flow`] see it (see "What a row says" in the
/// module doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowRow {
    /// Its id in its table.
    pub id: FlowId,
    /// Its table.
    pub direction: FlowDirection,
    /// Its flow key: TX always; RX that of its first delivered packet (`None` before).
    pub key: Option<FlowKey>,
    /// Its flow class (index into [`super::super::EngineConfig::classes`]); `None`: no
    /// class matched (the default policy), or an RX flow.
    pub class: Option<usize>,
    /// That class's name.
    pub class_name: Option<Arc<str>>,
    /// The QoS class its packets are queued in (TX, not tunnelled).
    pub qos_class: Option<ClassId>,
    /// How it uses its NICs (TX, not tunnelled): a moved flow is `Pin`, whatever its class.
    pub policy: Option<ClassPolicy>,
    /// The tunnel (index into [`super::super::EngineConfig::tunnels`]) it is encapsulated
    /// for, if any.
    pub tunnel: Option<u8>,
    /// TX: the NICs its next packet may use (empty while the controller has not admitted
    /// it); RX: the NICs its packets arrived on.
    pub nics: NicSet,
    /// Operator-pinned to its NIC ([`super::super::Command::MoveFlow`] with `pin`).
    pub pinned: bool,
    /// The rate the flow controller measures, bit/s (TX flows it admitted).
    pub rate_bps: Option<u64>,
    /// Time since its last packet, ns.
    pub idle_ns: u64,
    /// Packets: TX taken for sending, RX delivered.
    pub packets: Option<u64>,
    /// Their bytes.
    pub bytes: Option<u64>,
}

impl FlowRow {
    /// Its place in the order.
    #[must_use]
    pub fn cursor(&self) -> FlowCursor {
        FlowCursor {
            direction: self.direction,
            id: self.id,
        }
    }
}

const fn mode_nics(mode: Mode) -> NicSet {
    match mode {
        Mode::Single(n) | Mode::Stripe(n) | Mode::Duplicate(n) => n,
    }
}

impl Engine {
    /// A page of the flow table: the flows `query` matches after its cursor, at most
    /// `query.limit + 1`, in [`FlowCursor`] order. One pass over the tables, memory for the
    /// page only (module doc). Off the fast path: call it between batches.
    #[must_use]
    pub fn flows(&self, now: Instant, query: &FlowQuery) -> Vec<FlowRow> {
        let keep = query.keep();
        let mut heap: Vec<FlowRow> = Vec::with_capacity(keep);
        let wanted = |heap: &[FlowRow], c: FlowCursor| {
            query.after.is_none_or(|a| c > a)
                && (heap.len() < keep || heap.first().is_some_and(|top| c < top.cursor()))
        };
        let usable = self.usable_nics();
        if query.direction != Some(FlowDirection::Rx) {
            for (key, f) in self.tx_flows.iter() {
                let c = FlowCursor {
                    direction: FlowDirection::Tx,
                    id: f.id,
                };
                if !wanted(&heap, c) {
                    continue;
                }
                let row = self.tx_row(now, key, f, usable);
                if query.matches(&row) {
                    push_bounded(&mut heap, self.named(row), keep);
                }
            }
        }
        if query.direction != Some(FlowDirection::Tx) {
            for (&id, rx) in self.rx_flows.iter() {
                let c = FlowCursor {
                    direction: FlowDirection::Rx,
                    id,
                };
                if !wanted(&heap, c) {
                    continue;
                }
                let row = self.rx_row(now, id, rx);
                if query.matches(&row) {
                    push_bounded(&mut heap, row, keep);
                }
            }
        }
        heap.sort_unstable_by_key(FlowRow::cursor);
        heap
    }

    /// One flow by table and id (`None` if there is none, or it expired). A TX flow is
    /// found in one pass over the TX table.
    #[must_use]
    pub fn flow(&self, now: Instant, direction: FlowDirection, id: FlowId) -> Option<FlowRow> {
        match direction {
            FlowDirection::Tx => {
                let usable = self.usable_nics();
                self.tx_flows
                    .iter()
                    .find(|(_, f)| f.id == id)
                    .map(|(key, f)| self.named(self.tx_row(now, key, f, usable)))
            }
            FlowDirection::Rx => self.rx_flows.peek(&id).map(|rx| self.rx_row(now, id, rx)),
        }
    }

    /// The row of TX flow `f` (without its class name: see [`Self::named`]).
    fn tx_row(&self, now: Instant, key: &FlowKey, f: &TxFlow, usable: NicSet) -> FlowRow {
        let assigned = self.controller.assignment(f.id).map(|a| a.nics);
        let class = self.qos_classes.effective(f.qos_class);
        let nics = match (f.tunnel, assigned) {
            (Some(t), _) => self
                .config
                .tunnels
                .get(usize::from(t))
                .map_or(NicSet::EMPTY, |t| NicSet::single(t.nic)),
            (None, Some(a)) => mode_nics(tx_mode(f, a, usable)),
            // Not admitted: a strict-class flow is carried on its class's NICs meanwhile
            // (`Engine::place_strict`); any other's packets are dropped.
            (None, None) if self.qos_classes.strict == Some(class) => {
                mode_nics(tx_mode(f, f.nics, usable))
            }
            (None, None) => NicSet::EMPTY,
        };
        let braid = f.tunnel.is_none();
        FlowRow {
            id: f.id,
            direction: FlowDirection::Tx,
            key: Some(*key),
            class: f.class.map(usize::from),
            class_name: None,
            qos_class: braid.then_some(ClassId(class)),
            policy: braid.then_some(if f.moved { ClassPolicy::Pin } else { f.policy }),
            tunnel: f.tunnel,
            nics,
            pinned: self.controller.is_pinned(f.id),
            rate_bps: self.controller.flow_rate_bps(f.id, now),
            idle_ns: self
                .tx_flows
                .last_seen(key)
                .map_or(0, |t| duration_nanos(now.saturating_duration_since(t))),
            packets: Some(f.packets),
            bytes: Some(f.bytes),
        }
    }

    /// `row` with its class's name (a reference count, no copy).
    fn named(&self, mut row: FlowRow) -> FlowRow {
        row.class_name = row.class.and_then(|c| self.class_names.get(c)).cloned();
        row
    }

    fn rx_row(&self, now: Instant, id: FlowId, rx: &RxFlow) -> FlowRow {
        FlowRow {
            id,
            direction: FlowDirection::Rx,
            key: rx.key,
            class: None,
            class_name: None,
            qos_class: None,
            policy: None,
            tunnel: None,
            nics: rx.seen,
            pinned: false,
            rate_bps: None,
            idle_ns: self
                .rx_flows
                .last_seen(&id)
                .map_or(0, |t| duration_nanos(now.saturating_duration_since(t))),
            packets: Some(rx.packets),
            bytes: Some(rx.bytes),
        }
    }

    /// [`Command::MoveFlow`](super::super::Command::MoveFlow): see "Operator moves" in the
    /// module doc. On error nothing changed.
    pub(super) fn move_flow(
        &mut self,
        now: Instant,
        flow: FlowId,
        nic: NicId,
        pin: bool,
    ) -> Result<(), CommandError> {
        let n = self.nics[nic.index() % MAX_NICS]
            .as_ref()
            .filter(|n| n.spec.id == nic)
            .ok_or(CommandError::UnknownNic(nic))?;
        let usable = n.admin_up && n.state != LinkState::Down;
        // The TX table is keyed by flow key: find the flow's slot by id (one pass; slots
        // are stable, and `slot_mut` does not refresh the entry as a packet would).
        let capacity = u32::try_from(self.tx_flows.slot_bound()).unwrap_or(u32::MAX);
        let found = (0..capacity).find_map(|s| {
            self.tx_flows
                .slot_mut(s)
                .and_then(|(_, f)| (f.id == flow).then_some((s, *f)))
        });
        let Some((slot, f)) = found else {
            return Err(if self.rx_flows.peek(&flow).is_some() {
                CommandError::FlowNotMovable {
                    flow,
                    why: "it is an RX flow: the sender places it on its NICs",
                }
            } else {
                CommandError::UnknownFlow(flow)
            });
        };
        if f.tunnel.is_some() {
            return Err(CommandError::FlowNotMovable {
                flow,
                why: "it is tunnelled: it leaves on its tunnel's NIC",
            });
        }
        if !usable {
            return Err(CommandError::NicNotUsable(nic));
        }
        let result = self
            .controller
            .move_flow_to(now, flow, nic, f.demand_bps, pin);
        self.drain_controller_events();
        match result {
            Ok(_) => {
                if let Some((_, f)) = self.tx_flows.slot_mut(slot) {
                    f.moved = true;
                }
                Ok(())
            }
            Err(reason) => Err(CommandError::MoveRefused { flow, nic, reason }),
        }
    }
}

/// Add `row` to the max-heap (by cursor) `heap` of at most `keep` rows: pushed while there is
/// room, else it replaces the top (the caller checked that it is lower).
fn push_bounded(heap: &mut Vec<FlowRow>, row: FlowRow, keep: usize) {
    if heap.len() < keep {
        heap.push(row);
        let mut i = heap.len() - 1;
        while i > 0 {
            let parent = (i - 1) / 2;
            if heap[parent].cursor() >= heap[i].cursor() {
                break;
            }
            heap.swap(parent, i);
            i = parent;
        }
        return;
    }
    let Some(top) = heap.first_mut() else {
        return;
    };
    *top = row;
    let mut i = 0;
    loop {
        let (l, r) = (2 * i + 1, 2 * i + 2);
        let mut largest = i;
        if l < heap.len() && heap[l].cursor() > heap[largest].cursor() {
            largest = l;
        }
        if r < heap.len() && heap[r].cursor() > heap[largest].cursor() {
            largest = r;
        }
        if largest == i {
            break;
        }
        heap.swap(i, largest);
        i = largest;
    }
}

#[cfg(test)]
#[path = "flows_tests.rs"]
mod tests;
