//! The rule engine: match → actions, with conditions on live link state, validated as a set
//! and compiled for a per-flow fast path.
//!
//! Owns: the rule model ([`Rule`]: priority, [`RuleMatch`], [`Action`] list, optional
//! [`Condition`]), set validation ([`ValidationErrors`]), the slow-path classifier (tuple-space
//! search), the compiled per-flow action ([`CompiledActions`]), condition evaluation with
//! hysteresis, and the version that tells the engine when its cached lookups are stale. Does
//! not own the packet bytes (the rewrites, VLAN tags and tunnels are braid-wire's), the flow
//! table (the engine's) or the link measurements ([`crate::health`]).
//!
//! # Fast path and slow path
//!
//! ```text
//! new flow ─ RuleKey::from_flow_key ─ RuleSet::classify ──▶ CachedRule in the flow entry   (SLOW PATH:
//!                                     (tuple-space search)                                   O(tuples) hash probes)
//! packet ─ flow table hit ─ RuleSet::cached_actions(&mut cached, &key) ─▶ &CompiledActions  (FAST PATH:
//!                             version == set version? ─no─▶ classify again                  one compare)
//! ```
//!
//! # Priority
//!
//! A rule has a `u32` priority: **lower wins**. Among rules of equal priority the one listed
//! first wins (a conflict the validator reports unless their actions agree). A lookup returns
//! the best rule among those that match and are active; no rule means "no action" and the
//! engine applies its own flow class policy. Only the best rule's actions apply: rules do not
//! combine.
//!
//! # Conditions
//!
//! A rule with a [`Condition`] is active only while the condition is on: "while loss on the
//! flow's links is at least 10 ‰ (until it is at most 5 ‰), duplicate this class" is a
//! conditional rule with [`Action::Stripe`] `Duplicate` above an unconditional rule with the
//! class's usual policy. Conditions switch with hysteresis and a minimum hold time (see
//! [`condition`]); every flip bumps the set's [`RuleSetVersion`].
//!
//! # Replacing the set atomically
//!
//! A [`RuleSet`] is built and validated as a whole off the fast path ([`RuleSet::build`]
//! allocates; the control plane may do it on its own thread), then moved to the engine
//! (e.g. in a boxed `Command`) and swapped in **between two batches** with
//! [`RuleSet::replace`]: packets of one batch all see the same set, and no packet ever sees a
//! half-updated one. The swap is a move of a few pointers; the returned old set should be
//! dropped after the batch (or sent back) so freeing it does not delay packets. The new
//! set's version is above the old one's, so every flow's [`CachedRule`] is stale and each
//! flow is looked up again on its next packet — lazily, one slow-path lookup per active
//! flow, spread over the flows' next packets.
//!
//! # Direction
//!
//! A set does not know whether it is applied on TX (vNIC → NICs: encapsulate, rewrite) or on
//! RX (NICs → vNIC: decapsulate, rewrite back). The engine holds one set per direction.

pub mod action;
pub mod condition;
mod lookup;
pub mod matcher;
mod overlap;
mod set;
pub mod validate;

#[cfg(test)]
mod tests;

use alloc::string::String;
use alloc::vec::Vec;

pub use action::{
    Action, ActionError, CompiledActions, Decap, Encap, QosClass, Striping, TunnelId, TunnelKind,
    VlanTag,
};
pub use condition::{Aggregate, Condition, ConditionError, LinkSnapshot, LiveState, Metric};
pub use matcher::{DscpSet, IpFamily, IpPrefix, MatchError, PortRange, RuleKey, RuleMatch};
pub use set::{CachedRule, RuleSet, RuleSetConfig, RuleSetVersion};
pub use validate::{Problem, RuleContext, TunVlan, TunnelRef, ValidationErrors, VnicLayer};

/// A rule's position in the list it was built from; problems and lookups name rules by it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct RuleIndex(pub u32);

/// One rule, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// A unique name for reports and the REST API (may be empty).
    pub name: String,
    /// Lower wins.
    pub priority: u32,
    /// Which flows it applies to.
    pub matcher: RuleMatch,
    /// What it does (see [`action`] for the order of application).
    pub actions: Vec<Action>,
    /// While what live state the rule is active; `None` = always.
    pub condition: Option<Condition>,
}

impl Rule {
    /// An unconditional rule.
    #[must_use]
    pub fn new(name: &str, priority: u32, matcher: RuleMatch, actions: &[Action]) -> Self {
        Self {
            name: name.into(),
            priority,
            matcher,
            actions: actions.to_vec(),
            condition: None,
        }
    }

    /// The same rule, active only while `condition` is on.
    #[must_use]
    pub fn when(mut self, condition: Condition) -> Self {
        self.condition = Some(condition);
        self
    }
}
