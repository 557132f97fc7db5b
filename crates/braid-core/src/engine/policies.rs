//! Replacing the engine's policies as one set, between batches: the tunnel table, the QoS
//! configuration and both rule sets ([`Command::ReplacePolicies`]), what a configuration
//! reload or the REST API changes at run time.
//!
//! Owns: [`Policies`], the order of the checks and of the swaps, and the remapping of what
//! names a tunnel by index (flow classes, installed TX flows). Does not own each part's own
//! replacement: the tunnels' (`engine/tunnel/replace.rs`: which stay, their state, their
//! queued packets), the QoS configuration's (`Engine::swap_qos`, as [`Command::SetQos`]) or
//! the rule sets' (`engine/rules.rs`, as [`Command::ReplaceRules`]).
//!
//! # All or nothing
//!
//! Every part is checked before anything changes, each against the **new** other parts: the
//! tunnel table against the NICs ([`TunnelRefusal`]); the flow classes, which name their
//! tunnel by name, against the new table (a class whose tunnel is gone is refused:
//! [`CommandError::ClassTunnelRemoved`]); the QoS configuration against the flow classes
//! and the MTUs; the rule tables against the new tunnels (a rule's tunnel is an index into
//! the new table, of the right kind) and the new QoS classes. A refusal returns the first
//! problem and changes nothing. Then the swaps, none of which can fail: QoS (when it
//! changed), tunnels, rules.
//!
//! # What flows see
//!
//! The rule sets are always swapped, even when equal, because a rule's tunnel index may
//! mean another tunnel now: the rule set's version changes, so every TX flow is looked up
//! again on its next packet (`engine/rules.rs`), as after [`Command::ReplaceRules`]. Before
//! that, the flows' tunnel indexes are remapped here: a flow class's tunnel follows its name,
//! and a flow tunnelled into a tunnel that stayed keeps being tunnelled there without being
//! placed again. A flow whose tunnel was removed or changed gets its tunnel from its new
//! lookup: another tunnel, or none, and then it is placed on braid's NICs (counted in
//! `RuleStats::tx_flows_replaced_count`).
//!
//! [`Command::ReplacePolicies`]: crate::engine::Command::ReplacePolicies
//! [`Command::SetQos`]: crate::engine::Command::SetQos
//! [`Command::ReplaceRules`]: crate::engine::Command::ReplaceRules
//! [`TunnelRefusal`]: crate::engine::TunnelRefusal
//! [`CommandError::ClassTunnelRemoved`]: crate::engine::CommandError::ClassTunnelRemoved

use alloc::boxed::Box;
use alloc::vec::Vec;

use super::Engine;
use super::rules::{RuleDirection, RuleTable};
use crate::Instant;
use crate::engine::config::EngineConfig;
use crate::engine::tunnel::replace::TunnelMap;
use crate::engine::tunnel::{TunnelSpec, check_tunnels};
use crate::engine::{CommandError, ConfigError};
use crate::qos::QosConfig;

/// The policies the engine replaces as one set ([`Command::ReplacePolicies`]): the new
/// [`EngineConfig::tunnels`], [`EngineConfig::qos`], and the TX and RX rule tables, built
/// against a configuration that has these tunnels and QoS classes (a rule names a tunnel by
/// its index in `tunnels`). Build it off the fast path, with [`Policies::of`] or by hand.
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
        })
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
        for c in &mut self.config.classes {
            c.tunnel = c.tunnel.and_then(named);
        }
        // Installed TX flows: the class's tunnel follows its name; the flow's own tunnel its
        // name too, or, if the tunnel is gone, a value no tunnel has, so that the flow's
        // next lookup (the rule sets are swapped below) sees it moved and places it.
        for slot in 0..u32::try_from(self.tx_flows.capacity()).unwrap_or(u32::MAX) {
            if let Some((_, f)) = self.tx_flows.slot_mut(slot) {
                f.rules.remap_class_tunnel(named);
                f.tunnel = f.tunnel.map(|t| named(t).unwrap_or(u8::MAX));
            }
        }
        self.rules
            .tunnels_replaced(tunnels.len(), self.config.vnic_mtu);
        self.config.tunnels = tunnels;
        self.swap_rule_tables(now, tx_rules, rx_rules);
        Ok(())
    }
}

#[cfg(test)]
#[path = "policies_tests.rs"]
mod tests;
