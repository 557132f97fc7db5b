//! The built rule set: compiled rules, the lookup index, condition state and the version.
//!
//! Owns: building (validate, compile, index), the slow-path lookup, the fast-path cached
//! action, condition updates and atomic replacement. Does not own the flow table (the
//! engine's: it stores a [`CachedRule`] per flow).

use alloc::string::String;
use alloc::vec::Vec;

use super::action::CompiledActions;
use super::condition::{Condition, ConditionState, LiveState};
use super::lookup::{Candidate, Order, TupleSpace, order};
use super::matcher::{RuleKey, RuleMatch};
use super::validate::{RuleContext, ValidationErrors, validate};
use super::{Rule, RuleIndex};
use crate::flow::ClassifyConfig;
use crate::time::Instant;

/// Limits of a rule set build.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct RuleSetConfig {
    /// Most rules a set may hold. Default 16 384 (a lookup stays in the low microseconds; the
    /// build, with its validation, well under a second).
    pub max_rules: usize,
    /// Most problems a failed build reports (the rest are counted). Default 64.
    pub max_problems: usize,
    /// Seed of the lookup's hash function (from the engine's config, never the OS).
    /// Default 0.
    pub hash_seed: u64,
}

impl Default for RuleSetConfig {
    fn default() -> Self {
        Self {
            max_rules: 16_384,
            max_problems: 64,
            hash_seed: 0,
        }
    }
}

/// The generation of a rule set. It changes whenever a lookup could give another answer: the
/// set was replaced ([`RuleSet::replace`]) or a condition flipped
/// ([`RuleSet::update_conditions`]). Never decreases within one engine.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct RuleSetVersion(pub u64);

impl RuleSetVersion {
    /// The version of a freshly built set.
    pub const INITIAL: Self = Self(1);
    /// Older than any set: a [`CachedRule`] with it is always looked up again.
    pub const STALE: Self = Self(0);

    fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }
}

/// A flow's cached lookup result, stored in the engine's flow entry: which rule applies
/// (if any), as of which [`RuleSetVersion`]. `Copy`, 16 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct CachedRule {
    version: RuleSetVersion,
    rule: Option<RuleIndex>,
}

impl CachedRule {
    /// Not looked up yet: the first [`RuleSet::cached_actions`] looks it up.
    pub const STALE: Self = Self {
        version: RuleSetVersion::STALE,
        rule: None,
    };

    /// The rule that applies (`None`: no rule, the engine's own policy).
    #[must_use]
    pub const fn rule(&self) -> Option<RuleIndex> {
        self.rule
    }

    /// The set version the result is valid for.
    #[must_use]
    pub const fn version(&self) -> RuleSetVersion {
        self.version
    }
}

/// One rule, compiled.
#[derive(Clone, Debug)]
struct CompiledRule {
    matcher: RuleMatch,
    order: Order,
    actions: CompiledActions,
    /// `false` while the rule's condition is off (always `true` without a condition).
    active: bool,
}

impl Candidate for CompiledRule {
    fn matcher(&self) -> &RuleMatch {
        &self.matcher
    }
    fn order(&self) -> Order {
        self.order
    }
    fn active(&self) -> bool {
        self.active
    }
}

/// A rule's condition and its on/off state.
#[derive(Clone, Debug)]
struct CondSlot {
    rule: u32,
    condition: Condition,
    state: ConditionState,
}

/// A validated, compiled set of rules.
///
/// # Call protocol
///
/// - **Build** off the fast path (control thread, or the engine between batches):
///   [`RuleSet::build`] validates the whole set and compiles it; it allocates.
/// - **Swap** between batches: [`RuleSet::replace`] installs a new set as a whole and returns
///   the old one (drop it outside the batch: freeing is not free). The new set's version is
///   above the old one's, so every flow's [`CachedRule`] is stale and is looked up again on
///   its next packet. Conditions of a new set start off: call
///   [`RuleSet::update_conditions`] right after the swap.
/// - **Per packet** (fast path): [`RuleSet::cached_actions`] with the flow's [`CachedRule`]:
///   one version compare and an index, or a slow-path [`RuleSet::lookup`] if the set changed.
/// - **Live state**: after link health changed (and at [`RuleSet::poll_condition_timeout`]),
///   [`RuleSet::update_conditions`]; a flip bumps the version.
///
/// Lookups allocate nothing. A rule with a condition takes part in lookups only while the
/// condition is on. With the match fields DSCP, VLAN or VNI, the engine must classify flows on
/// them (see [`RuleSet::required_keys`]), or flows that differ only there share one cached
/// rule.
#[derive(Clone, Debug)]
pub struct RuleSet {
    version: RuleSetVersion,
    rules: Vec<CompiledRule>,
    names: Vec<String>,
    conditions: Vec<CondSlot>,
    space: TupleSpace,
    required: ClassifyConfig,
}

impl Default for RuleSet {
    fn default() -> Self {
        Self::empty()
    }
}

impl RuleSet {
    /// A set with no rule: every lookup gives [`CompiledActions::NONE`].
    #[must_use]
    pub fn empty() -> Self {
        Self::compile(&[], 0)
    }

    /// Validate `rules` as a set against `ctx` and build it. Build time: allocates, costs
    /// `O(n log n)` plus the validation (see [`super::validate`]).
    ///
    /// # Errors
    /// [`ValidationErrors`] with every problem found (bounded by `config.max_problems`); no
    /// set is built if there is any.
    pub fn build(
        rules: &[Rule],
        ctx: &RuleContext,
        config: &RuleSetConfig,
    ) -> Result<Self, ValidationErrors> {
        validate(rules, ctx, config)?;
        Ok(Self::compile(rules, config.hash_seed))
    }

    /// Compile without validation (tests use it for sets with deliberate conflicts). The
    /// lookup is still well defined: the best `(priority, index)` among matching rules.
    pub(super) fn compile(rules: &[Rule], seed: u64) -> Self {
        let mut conditions = Vec::new();
        let mut required = ClassifyConfig {
            use_ports: false,
            dscp: false,
            vlan: false,
            vni: false,
        };
        let compiled: Vec<CompiledRule> = rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let i = u32::try_from(i).expect("invariant: rule count checked below u32::MAX");
                if let Some(c) = r.condition {
                    conditions.push(CondSlot {
                        rule: i,
                        condition: c,
                        state: ConditionState::default(),
                    });
                }
                let m = &r.matcher;
                required.use_ports |= m.src_ports.is_some() || m.dst_ports.is_some();
                required.dscp |= m.dscp.is_some();
                required.vlan |= m.vlan.is_some();
                required.vni |= m.vni.is_some();
                CompiledRule {
                    matcher: r.matcher,
                    order: order(r.priority, i),
                    actions: CompiledActions::compile(&r.actions),
                    active: r.condition.is_none(),
                }
            })
            .collect();
        Self {
            version: RuleSetVersion::INITIAL,
            space: TupleSpace::build(&compiled, seed),
            rules: compiled,
            names: rules.iter().map(|r| r.name.clone()).collect(),
            conditions,
            required,
        }
    }

    /// The current version.
    #[must_use]
    pub const fn version(&self) -> RuleSetVersion {
        self.version
    }

    /// Number of rules.
    #[must_use]
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// `true` if the set has no rule.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Number of distinct match shapes (tuples) the lookup probes at most.
    #[must_use]
    pub fn tuple_count(&self) -> usize {
        self.space.tuple_count()
    }

    /// A rule's name.
    #[must_use]
    pub fn name(&self, rule: RuleIndex) -> Option<&str> {
        self.names.get(rule.0 as usize).map(String::as_str)
    }

    /// A rule's compiled actions.
    #[must_use]
    pub fn actions(&self, rule: RuleIndex) -> Option<&CompiledActions> {
        self.rules.get(rule.0 as usize).map(|r| &r.actions)
    }

    /// `true` if the rule takes part in lookups (no condition, or its condition is on).
    #[must_use]
    pub fn is_active(&self, rule: RuleIndex) -> bool {
        self.rules.get(rule.0 as usize).is_some_and(|r| r.active)
    }

    /// The flow key fields the rules match on, as a [`ClassifyConfig`] whose `true` fields
    /// the engine must enable in its own (it may enable more).
    #[must_use]
    pub const fn required_keys(&self) -> ClassifyConfig {
        self.required
    }

    /// **Slow path**: the rule for a flow, the best `(priority, list position)` among the
    /// active rules that match. Allocates nothing.
    #[must_use]
    pub fn lookup(&self, key: &RuleKey) -> Option<RuleIndex> {
        self.space.lookup(&self.rules, key).map(RuleIndex)
    }

    /// Slow path, for a new flow: the lookup result to store in its flow entry.
    #[must_use]
    pub fn classify(&self, key: &RuleKey) -> CachedRule {
        CachedRule {
            version: self.version,
            rule: self.lookup(key),
        }
    }

    /// **Fast path**: the flow's actions from its cached lookup; if the set changed since,
    /// the flow is looked up again first (slow path) and `cache` updated. `key` must be the
    /// flow's key. Returns [`CompiledActions::NONE`] when no rule applies.
    #[inline]
    pub fn cached_actions(&self, cache: &mut CachedRule, key: &RuleKey) -> &CompiledActions {
        if cache.version != self.version {
            *cache = self.classify(key);
        }
        match cache.rule {
            Some(r) => self
                .rules
                .get(r.0 as usize)
                .map_or(&CompiledActions::NONE, |r| &r.actions),
            None => &CompiledActions::NONE,
        }
    }

    /// Evaluate every condition against `live` at `now` (hysteresis and hold times in the
    /// [`super::condition`] doc); a rule whose condition flips is switched on or off.
    /// Returns `true` if anything flipped, in which case the version was bumped. Allocates
    /// nothing; cost linear in conditional rules × links.
    pub fn update_conditions(&mut self, live: &LiveState, now: Instant) -> bool {
        let mut changed = false;
        for slot in &mut self.conditions {
            let value = slot.condition.value(live);
            if slot.state.step(&slot.condition, value, now) {
                changed = true;
                if let Some(r) = self.rules.get_mut(slot.rule as usize) {
                    r.active = slot.state.on;
                }
            }
        }
        if changed {
            self.version = self.version.next();
        }
        changed
    }

    /// Make every cached lookup stale (bump the version) without changing a rule: each flow
    /// looks its rule up again on its next packet, for instance because what the lookup
    /// starts from (a class's striping policy) changed.
    pub fn invalidate(&mut self) {
        self.version = self.version.next();
    }

    /// When to call [`RuleSet::update_conditions`] again even if link state did not change:
    /// the earliest end of a hold time that held back a flip. `None` if none is pending.
    #[must_use]
    pub fn poll_condition_timeout(&self) -> Option<Instant> {
        self.conditions
            .iter()
            .filter_map(|c| c.state.hold_ends(&c.condition))
            .min()
    }

    /// Install `new` in place of `self` as a whole (between batches) and return the old set.
    /// The new set's version is made greater than the old one's, so every cached lookup is
    /// stale.
    #[must_use = "drop the old set outside the batch, or hand it back to the control thread"]
    pub fn replace(&mut self, mut new: Self) -> Self {
        new.version = RuleSetVersion(self.version.0.max(new.version.0)).next();
        core::mem::replace(self, new)
    }
}
