//! Replacing the engine's policies as one set, between batches: the tunnel table, the QoS
//! configuration, both rule sets, the striping policies (the default one and each flow
//! class's), the scheduler's cost model (when to split a packet, over how many NICs), the
//! reassembler's caps and timeout, and the reorder holds ([`Command::ReplacePolicies`]), what
//! a configuration reload or the REST API changes at run time.
//!
//! Owns: [`Policies`], the order of the checks and of the swaps, the remapping of what
//! names a tunnel by index (flow classes, installed TX flows), and what the new striping
//! policies and reorder holds do to the flows already there. Does not own each part's own
//! replacement: the tunnels' (`engine/tunnel/replace.rs`: which stay, their state, their
//! queued packets), the QoS configuration's (`Engine::swap_qos`, as [`Command::SetQos`]),
//! the rule sets' (`engine/rules.rs`, as [`Command::ReplaceRules`]) or the reassembler's
//! (`Reassembler::reconfigure`: which held datagrams it drops, its deadlines).
//!
//! # All or nothing
//!
//! Every part is checked before anything changes, each against the **new** other parts: the
//! tunnel table against the NICs ([`TunnelRefusal`]); the flow classes, which name their
//! tunnel by name, against the new table (a class whose tunnel is gone is refused:
//! [`CommandError::ClassTunnelRemoved`]); the QoS configuration against the flow classes
//! and the MTUs; the rule tables against the new tunnels (a rule's tunnel is an index into
//! the new table, of the right kind) and the new QoS classes; then the tuning
//! ([`CommandError::PolicyRefused`], naming the field): one striping policy per flow class
//! in force, the scheduler's values in range ([`check_scheduler`]), the reassembler's within
//! what it was built with (`max_contexts` and the hash seed as they are, `max_fragments` up
//! to its room: [`Reassembler::check_reconfigure`]) and `max_datagram_bytes` at least the
//! vNIC MTU, the reorder `capacity` as it is (it sizes each flow's ring). A refusal returns
//! the first problem and changes nothing. Then the swaps, none of which can fail: QoS (when
//! it changed), tunnels, striping policies, rules, scheduler, reassembly, reorder.
//!
//! # What flows see
//!
//! The rule sets are swapped, even when equal, whenever the tunnels or the QoS
//! configuration change, because a rule's tunnel or QoS class index may mean another one
//! now: the rule set's version changes, so every TX flow is looked up again on its next
//! packet (`engine/rules.rs`), as after [`Command::ReplaceRules`], and the new sets start
//! with their conditions off and their counters at zero. A replacement with the same rules,
//! tunnels and QoS configuration (only the striping policies or the tuning change) keeps
//! the sets in force, conditions and counters included, and only moves their versions, so
//! the flows are still looked up again: an operator changing `reorder.max_hold_ms` does not
//! switch off a "duplicate while loss > 1 %" rule that is on. Before
//! that, the flows' tunnel indexes are remapped here: a flow class's tunnel follows its name,
//! and a flow tunnelled into a tunnel that stayed keeps being tunnelled there without being
//! placed again. A flow whose tunnel was removed or changed gets its tunnel from its new
//! lookup: another tunnel, or none, and then it is placed on braid's NICs (counted in
//! `RuleStats::tx_flows_replaced_count`).
//!
//! **Striping policies.** A TX flow keeps the policy its class (or, with no class, the
//! default policy) gave it as the base its rule overrides (`FlowRules`). A new default or
//! class policy becomes that base for the flows already installed, so the lookup every flow
//! makes on its next packet (the rule sets' versions move) gives the flow the new policy, unless
//! a rule's striping overrides it, and a flow whose policy changed is placed again with the
//! flow controller (which ends an operator's move and pin, as any re-placement does). Flows
//! are re-evaluated rather than left on the old policy until they idle out: a long-lived
//! flow (a feed, a backup) would otherwise never see the change. The cost is one slow-path
//! lookup per flow, on its next packet, as after any rule replacement.
//!
//! **Scheduler.** Read per packet from the configuration: the next packet is planned with
//! the new cost model. Packets already queued keep their plan.
//!
//! **Reassembly.** See `Reassembler::reconfigure`: a lower memory cap drops the oldest
//! datagrams being reassembled until the rest fits, a lower `max_datagram_bytes` or
//! `max_fragments` drops those that no longer fit (each counted as
//! [`DropReason::ReassemblyEvicted`] in the engine's drops too), a shorter timeout moves
//! every deadline earlier (an expired context goes at the next `handle_timeout`). The
//! packet store is not bounded by `max_datagram_bytes` (it hands out page-sized buffers for
//! tunnel encapsulation too): the reassembler and the RX path enforce it themselves.
//!
//! **Reorder.** Each RX flow's hold is clamped into the new `[min_hold, max_hold]` at once
//! (so is the floor its late arrivals raised), and recomputed from the measured delay
//! spread on its next packet; the timer runs at once, so a datagram held longer than the
//! new hold is released (in order, the gap counted) at the next `handle_timeout`, not after
//! the old hold.
//!
//! [`Command::ReplacePolicies`]: crate::engine::Command::ReplacePolicies
//! [`Command::SetQos`]: crate::engine::Command::SetQos
//! [`Command::ReplaceRules`]: crate::engine::Command::ReplaceRules
//! [`TunnelRefusal`]: crate::engine::TunnelRefusal
//! [`CommandError::ClassTunnelRemoved`]: crate::engine::CommandError::ClassTunnelRemoved
//! [`CommandError::PolicyRefused`]: crate::engine::CommandError::PolicyRefused
//! [`Reassembler::check_reconfigure`]: crate::reassembly::Reassembler::check_reconfigure
//! [`DropReason::ReassemblyEvicted`]: crate::DropReason::ReassemblyEvicted

use alloc::boxed::Box;
use alloc::vec::Vec;

use super::Engine;
use super::rules::{RuleDirection, RuleTable};
use crate::engine::config::{ClassPolicy, EngineConfig};
use crate::engine::tunnel::replace::TunnelMap;
use crate::engine::tunnel::{TunnelSpec, check_tunnels};
use crate::engine::{CommandError, ConfigError};
use crate::qos::QosConfig;
use crate::reassembly::ReassemblyConfig;
use crate::reorder::ReorderConfig;
use crate::scheduler::SchedulerConfig;
use crate::{DropReason, Instant, MAX_NICS};

/// The policies the engine replaces as one set ([`Command::ReplacePolicies`]): the new
/// [`EngineConfig::tunnels`], [`EngineConfig::qos`], the TX and RX rule tables, built
/// against a configuration that has these tunnels and QoS classes (a rule names a tunnel by
/// its index in `tunnels`), the striping policies ([`EngineConfig::default_policy`] and one
/// per flow class), and the tuning of the scheduler, the reassembler and the reorder
/// buffers. Build it off the fast path, with [`Policies::of`] (then change what changes)
/// or by hand.
///
/// [`Command::ReplacePolicies`]: crate::engine::Command::ReplacePolicies
#[derive(Clone, Debug, PartialEq)]
pub struct Policies {
    /// The tunnel table (see `engine/tunnel/replace.rs` for which tunnels keep their state).
    pub tunnels: Vec<TunnelSpec>,
    /// The QoS configuration of every NIC and the vNIC meters.
    pub qos: QosConfig,
    /// The TX rule table ([`RuleDirection::Tx`]).
    pub tx_rules: RuleTable,
    /// The RX rule table ([`RuleDirection::Rx`]).
    pub rx_rules: RuleTable,
    /// The policy of packets no flow class matches ([`EngineConfig::default_policy`]).
    pub default_policy: ClassPolicy,
    /// Each flow class's policy, in the order of [`EngineConfig::classes`]: exactly one per
    /// class in force (the classes themselves are not replaced).
    pub class_policies: Vec<ClassPolicy>,
    /// The scheduler's cost model ([`EngineConfig::scheduler`]; [`check_scheduler`]).
    pub scheduler: SchedulerConfig,
    /// The reassembler's caps and timeout ([`EngineConfig::reassembly`]); `max_contexts`
    /// and `hash_seed` must be the ones in force, `max_fragments` within the reassembler's
    /// room (`Reassembler::check_reconfigure`).
    pub reassembly: ReassemblyConfig,
    /// The reorder holds ([`EngineConfig::reorder`]); `capacity` must be the one in force.
    pub reorder: ReorderConfig,
}

impl Policies {
    /// The policies of `config`: its tunnels, QoS configuration and rule lists, the tables
    /// built against it (validation and compilation: this allocates, and a large rule set
    /// takes a while, see [`RuleTable`]).
    ///
    /// # Errors
    /// [`ConfigError::Rules`] if a rule list does not build.
    pub fn of(config: &EngineConfig) -> Result<Self, ConfigError> {
        let build = |d, rules: &[crate::rules::Rule]| {
            RuleTable::build(config, d, rules.to_vec()).map_err(|e| ConfigError::Rules(Box::new(e)))
        };
        Ok(Self {
            tunnels: config.tunnels.clone(),
            qos: config.qos.clone(),
            tx_rules: build(RuleDirection::Tx, &config.tx_rules)?,
            rx_rules: build(RuleDirection::Rx, &config.rx_rules)?,
            default_policy: config.default_policy,
            class_policies: config.classes.iter().map(|c| c.policy).collect(),
            scheduler: config.scheduler,
            reassembly: config.reassembly,
            reorder: config.reorder,
        })
    }
}

/// Check the scheduler's cost model: `Err((field, why))` names the field as in
/// [`EngineConfig`] (`scheduler.max_split_links`). Used by [`EngineConfig::validate`] and
/// [`Command::ReplacePolicies`].
///
/// # Errors
/// `max_split_links` outside `1..=MAX_NICS` (32; 1: never split), `per_packet_overhead_bytes`
/// above 65 535, `min_split_bytes` above 65 535 (no packet is larger), `min_split_gain`
/// above 1 s, `loss_penalty` above 60 s.
///
/// [`Command::ReplacePolicies`]: crate::engine::Command::ReplacePolicies
pub(crate) fn check_scheduler(s: &SchedulerConfig) -> Result<(), (&'static str, &'static str)> {
    if s.max_split_links == 0 || s.max_split_links > MAX_NICS {
        return Err((
            "scheduler.max_split_links",
            "must be between 1 (never split) and 32 (braid's most NICs)",
        ));
    }
    if s.per_packet_overhead_bytes > 65_535 {
        return Err((
            "scheduler.per_packet_overhead_bytes",
            "must be at most 65535",
        ));
    }
    if s.min_split_bytes > 65_535 {
        return Err(("scheduler.min_split_bytes", "must be at most 65535"));
    }
    if s.min_split_gain > core::time::Duration::from_secs(1) {
        return Err(("scheduler.min_split_gain", "must be at most 1 s"));
    }
    if s.loss_penalty > core::time::Duration::from_secs(60) {
        return Err(("scheduler.loss_penalty", "must be at most 60 s"));
    }
    Ok(())
}

/// `reassembly.<field>` for a field of [`ReassemblyConfig`] that the reassembler named.
fn reassembly_field(field: &'static str) -> &'static str {
    match field {
        "max_contexts" => "reassembly.max_contexts",
        "hash_seed" => "reassembly.hash_seed",
        "max_fragments" => "reassembly.max_fragments",
        "mem_cap_bytes" => "reassembly.mem_cap_bytes",
        "timeout" => "reassembly.timeout",
        "max_datagram_bytes" => "reassembly.max_datagram_bytes",
        _ => "reassembly",
    }
}

impl Engine {
    /// [`Command::ReplacePolicies`](crate::engine::Command::ReplacePolicies): check every
    /// part against the others, then swap them all (see the module doc). On error nothing
    /// changed.
    pub(super) fn replace_policies(
        &mut self,
        now: Instant,
        policies: Policies,
    ) -> Result<(), CommandError> {
        let Policies {
            tunnels,
            qos,
            tx_rules,
            rx_rules,
            default_policy,
            class_policies,
            scheduler,
            reassembly,
            reorder,
        } = policies;
        // Check everything.
        check_tunnels(&tunnels, &self.config.nics).map_err(CommandError::InvalidTunnels)?;
        let map = TunnelMap::new(&self.config.tunnels, &tunnels);
        let named = |old: u8| map.named.get(usize::from(old)).copied().flatten();
        for (class, c) in self.config.classes.iter().enumerate() {
            if c.tunnel.is_some_and(|t| named(t).is_none()) {
                return Err(CommandError::ClassTunnelRemoved { class });
            }
        }
        self.config
            .check_qos(&qos)
            .map_err(CommandError::InvalidQos)?;
        self.check_rules_against(&tx_rules, &rx_rules, &tunnels, &qos, named)?;
        let reassembly = self.check_tuning(&class_policies, &scheduler, reassembly, &reorder)?;

        // The same rules against the same tunnels and QoS classes (a change of the striping
        // policies or the tuning alone): the rule sets in force stay, so a condition that is
        // on stays on (its hysteresis is not restarted) and the rules' counters go on.
        let keep_rules = tx_rules.rules() == self.config.tx_rules.as_slice()
            && rx_rules.rules() == self.config.rx_rules.as_slice()
            && tunnels == self.config.tunnels
            && qos == self.config.qos;

        // Swap, in an order where each part finds the ones it depends on in place.
        if qos != self.config.qos {
            self.swap_qos(now, qos);
        }
        self.tunnels.replace(
            &tunnels,
            &map,
            &self.config,
            &mut self.store,
            &mut self.stats.drops,
        );
        for (c, policy) in self.config.classes.iter_mut().zip(&class_policies) {
            c.tunnel = c.tunnel.and_then(named);
            c.policy = *policy;
        }
        self.config.default_policy = default_policy;
        // Installed TX flows: the class's tunnel follows its name; the flow's own tunnel its
        // name too, or, if the tunnel is gone, a value no tunnel has, so that the flow's
        // next lookup (the rule sets are swapped below) sees it moved and places it. The
        // class's (or the default) striping policy is the new one, which that lookup gives
        // the flow unless a rule overrides it (see "Striping policies" in the module doc).
        for slot in 0..u32::try_from(self.tx_flows.slot_bound()).unwrap_or(u32::MAX) {
            if let Some((_, f)) = self.tx_flows.slot_mut(slot) {
                f.rules.remap_class_tunnel(named);
                f.tunnel = f.tunnel.map(|t| named(t).unwrap_or(u8::MAX));
                let policy = match f.class {
                    Some(c) => class_policies.get(usize::from(c)).copied(),
                    None => Some(default_policy),
                };
                if let Some(p) = policy {
                    f.rules.set_class_policy(p);
                }
            }
        }
        self.rules
            .tunnels_replaced(tunnels.len(), self.config.vnic_mtu);
        self.config.tunnels = tunnels;
        if keep_rules {
            self.keep_rule_tables();
        } else {
            self.swap_rule_tables(now, tx_rules, rx_rules);
        }
        self.config.scheduler = scheduler;
        self.swap_reassembly(reassembly);
        self.swap_reorder(now, reorder);
        Ok(())
    }

    /// Check the striping policies and the tuning against the configuration in force (see
    /// the module doc); returns the reassembler's configuration to put in force (the new one
    /// with the reassembler's own hash seed).
    fn check_tuning(
        &self,
        class_policies: &[ClassPolicy],
        scheduler: &SchedulerConfig,
        reassembly: ReassemblyConfig,
        reorder: &ReorderConfig,
    ) -> Result<ReassemblyConfig, CommandError> {
        let refused = |(field, why)| CommandError::PolicyRefused { field, why };
        if class_policies.len() != self.config.classes.len() {
            return Err(refused((
                "class_policies",
                "must hold one policy per flow class in force (the classes are not replaced)",
            )));
        }
        check_scheduler(scheduler).map_err(refused)?;
        if reassembly.max_contexts != self.config.reassembly.max_contexts {
            return Err(refused((
                "reassembly.max_contexts",
                "sizes the context table, built at start: a change needs a restart",
            )));
        }
        if reassembly.hash_seed != self.config.reassembly.hash_seed {
            return Err(refused((
                "reassembly.hash_seed",
                "seeds the context index, built at start",
            )));
        }
        if reassembly.max_datagram_bytes < self.config.vnic_mtu {
            return Err(refused((
                "reassembly.max_datagram_bytes",
                "must be at least vnic_mtu (a vNIC packet is a datagram)",
            )));
        }
        // The reassembler's own values for what it fixed at construction.
        let in_force = self.reassembler.config();
        let reassembly = ReassemblyConfig {
            max_contexts: in_force.max_contexts,
            hash_seed: in_force.hash_seed,
            ..reassembly
        };
        self.reassembler
            .check_reconfigure(&reassembly)
            .map_err(|(f, why)| refused((reassembly_field(f), why)))?;
        if reorder.capacity != self.config.reorder.capacity {
            return Err(refused((
                "reorder.capacity",
                "sizes each receive flow's reorder ring: a change needs a restart",
            )));
        }
        Ok(reassembly)
    }

    /// Put a checked reassembly configuration in force (see the module doc).
    fn swap_reassembly(&mut self, reassembly: ReassemblyConfig) {
        let evicted = self.reassembler.reconfigure(&mut self.store, reassembly);
        self.stats
            .drops
            .add(DropReason::ReassemblyEvicted, evicted as u64);
        self.config.reassembly = ReassemblyConfig {
            max_contexts: self.config.reassembly.max_contexts,
            hash_seed: self.config.reassembly.hash_seed,
            ..reassembly
        };
    }

    /// Put new reorder holds in force: every RX flow's hold (and late floor) clamped into
    /// them, recomputed on its next packet, and the timer run at once.
    fn swap_reorder(&mut self, now: Instant, reorder: ReorderConfig) {
        self.config.reorder = reorder;
        for slot in 0..u32::try_from(self.rx_flows.slot_bound()).unwrap_or(u32::MAX) {
            if let Some((_, rx)) = self.rx_flows.slot_mut(slot) {
                // As `hold_from_spread`: if min_hold > max_hold, max_hold wins.
                rx.hold = rx.hold.max(reorder.min_hold).min(reorder.max_hold);
                rx.late_floor = rx.late_floor.min(reorder.max_hold);
                rx.hold_at = Instant::ZERO;
            }
        }
        if !self.waiting.is_empty() {
            self.next_reorder_deadline = Some(now);
        }
    }
}

#[cfg(test)]
#[path = "policies_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "policies_tuning_tests.rs"]
mod tuning_tests;
