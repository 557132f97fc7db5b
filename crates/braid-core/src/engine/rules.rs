//! The rule engine ([`crate::rules`]) inside the engine: a TX and an RX rule set, compiled
//! for a per-flow fast path, applied to the vNIC's packets, with conditions fed from link
//! health and atomic replacement between batches.
//!
//! Owns: [`RuleTable`] (a rule list validated against an [`EngineConfig`] and compiled, what
//! [`EngineConfig::tx_rules`]/[`EngineConfig::rx_rules`] become and what
//! [`Command::ReplaceRules`](super::super::Command::ReplaceRules) carries), the engine's
//! checks on top of the rule engine's own ([`RulesError`], [`RuleRefusal`]), the per-flow
//! cached lookup, the application of a rule's actions, the live link state conditions see,
//! and [`RuleStats`]. Does not own matching, set validation, compilation or hysteresis
//! ([`crate::rules`]), the byte-level rewrites (braid-wire's [`braid_wire::rewrite`]), the
//! tunnels ([`super::super::tunnel`]) or the QoS classes ([`crate::qos`]).
//!
//! This module is a child of `state` (declared there with a `#[path]`), so that its hooks
//! can read the flow tables without widening their visibility; the call sites in `state.rs`
//! are one line each.
//!
//! # TX: fast path and slow path
//!
//! ```text
//! handle_tx ─ classify ─ TX flow table ─hit──────────────────▶ FAST PATH: flow.rules.cache
//!                                      │                         version == set version?
//!                                      miss                         │yes          │no
//!                                      ▼                            ▼             ▼
//!              SLOW PATH: class → ClassDefaults                 RuleOps       re-look-up (slow
//!              → RuleSet::classify → overrides → place         (drop, edits)  path), re-apply the
//!                                                                              overrides, re-place
//! ```
//!
//! A flow's class gives it a policy, a NIC set, a QoS class and maybe a tunnel
//! ([`ClassDefaults`], kept in the flow entry). The rule that applies overrides them:
//! [`Action::Stripe`](crate::rules::Action::Stripe) the policy and the NICs,
//! `SetPriorityClass` the QoS class (the flow's `qos_class`, whose id is the rule's class
//! index), `VxlanEncap`/`GreEncap` the tunnel (the flow's `tunnel`, an index into
//! [`EngineConfig::tunnels`]). These are per-flow values: they are computed when the flow is
//! looked up — at install, and on the first packet after the set's version changed (a
//! replacement, a condition flip) — never per packet. A flow whose policy, NICs or tunnel
//! changed is placed again with the flow controller (or taken off it when it became
//! tunnelled). When no rule applies any more the class's values come back.
//!
//! Per packet the fast path reads one version compare and one [`RuleOps`] (fixed size):
//! `drop` is a counted [`DropReason::RuleDrop`]; header rewrites (DSCP, ECN, TTL/hop limit,
//! addresses, ports, with RFC 1624 incremental checksums) are applied with
//! [`braid_wire::rewrite::apply_l3`] to the engine's stored copy of the packet, right after
//! the one copy `handle_tx` makes, so a rewrite costs no extra copy. A packet the rewrite
//! refuses (a port rewrite on a fragment, say) is a counted
//! [`DropReason::RuleRewriteFailed`], dropped unchanged. Because the stored copy is made
//! after the room check and the vNIC meter, such a packet has taken its meter tokens and its
//! flow's load sample: refusals are rare (the validator rejects the rules that would always
//! fail) and this keeps the QoS stage's order as it is. A tunnelled flow's packets are
//! copied into the tunnel's buffer by the tunnel stage; with a rewrite they are first
//! rewritten in a scratch buffer (one extra copy, for those flows only).
//!
//! # RX
//!
//! The RX set applies to braid's packets as they leave the reorder buffer for the delivery
//! queue (whole, in order, after reassembly), and to the inner packets the tunnels
//! decapsulated, as they are handed to the vNIC: rewrites and `drop` only (striping,
//! priority classes and encapsulation have no meaning there; decapsulation is the tunnel
//! endpoint's, which runs first, so a rule cannot ask for it — [`RuleTable::build`] refuses
//! these with an error naming the rule). A braid flow on RX is a sender's flow, which the
//! receiver does not classify, so each RX flow caches its last [`RuleKey`] with the lookup:
//! a packet with the same key and the same set version takes the fast path.
//!
//! # Conditions on live state
//!
//! At every [`Engine::handle_timeout`] (and so at every probe interval) the engine copies
//! each NIC's link health into a [`LiveState`] ([`LinkSnapshot::from_stats`]; an
//! administratively down NIC counts as Down) and calls
//! [`RuleSet::update_conditions`](crate::rules::RuleSet::update_conditions) on both sets;
//! [`Engine::poll_timeout`] includes the sets' `poll_condition_timeout`. A flip bumps the
//! set's version, so every flow is looked up again on its next packet. The hysteresis and
//! hold times are the rule engine's.
//!
//! # Replacing the sets
//!
//! [`Command::ReplaceRules`](super::super::Command::ReplaceRules) carries two tables built
//! off the fast path ([`RuleTable::build`]: validation and compilation allocate). The engine
//! checks them against its configuration in force (tunnels, QoS classes: they may have
//! changed since the build), swaps both in between two batches with
//! [`RuleSet::replace`](crate::rules::RuleSet::replace) (so every cached lookup is stale),
//! evaluates their conditions at once and widens the flow classification if the new rules
//! match on a key it did not use (DSCP, VLAN, VNI, ports: flows then get new keys, and their
//! old entries idle out). A refused table changes nothing.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use braid_wire::IpSummary;
use braid_wire::rewrite::{Edit, apply_l3};

use super::{Engine, TxFlow};
use crate::engine::config::{ClassPolicy, EngineConfig};
use crate::engine::tunnel::MAX_TUNNELS;
use crate::engine::{CommandError, ConfigError, TxVerdict};
use crate::flow::{ClassifyConfig, FlowKey};
use crate::health::LinkState;
use crate::rules::{
    Action, CachedRule, CompiledActions, Encap, LinkSnapshot, LiveState, Rule, RuleContext,
    RuleIndex, RuleKey, RuleSet, RuleSetConfig, TunnelId, TunnelKind, TunnelRef, ValidationErrors,
    VnicLayer,
};
use crate::{DropReason, FlowId, Instant, NicSet};

/// The vNIC index rules see: the engine serves one vNIC (its queues are one device).
const VNIC: u16 = 0;

/// The most header edits one rule compiles to: DSCP, ECN, TTL, two addresses, two ports.
const MAX_EDITS: usize = 7;

/// Which way a rule set applies.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum RuleDirection {
    /// vNIC → NICs ([`EngineConfig::tx_rules`]).
    Tx,
    /// NICs → vNIC ([`EngineConfig::rx_rules`]).
    Rx,
}

impl RuleDirection {
    /// The configuration field: `tx_rules` or `rx_rules`.
    #[must_use]
    pub const fn field(self) -> &'static str {
        match self {
            Self::Tx => "tx_rules",
            Self::Rx => "rx_rules",
        }
    }
}

/// One action of one rule the engine does not carry out (in that direction, or with the
/// configuration in force). `Copy`, so a refused [`Command::ReplaceRules`] can say it in a
/// [`CommandError`].
///
/// [`Command::ReplaceRules`]: super::super::Command::ReplaceRules
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RuleRefusal {
    /// TX or RX set.
    pub direction: RuleDirection,
    /// The rule, by its position in the direction's list.
    pub rule: RuleIndex,
    /// The action, by its position in the rule's list.
    pub action: u32,
    /// Why.
    pub why: &'static str,
}

impl fmt::Display for RuleRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}[{}]: action #{}: {}",
            self.direction.field(),
            self.rule.0,
            self.action,
            self.why
        )
    }
}

/// Why the engine refuses a rule list ([`RuleTable::build`], [`Engine::new`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RulesError {
    /// The rule engine's validation of the set as a whole: every problem, naming the rules
    /// (conflicts, shadowed rules, invalid matches, actions, conditions).
    Invalid {
        /// TX or RX set.
        direction: RuleDirection,
        /// What the validator found.
        errors: ValidationErrors,
    },
    /// An action the engine does not carry out (see the module doc).
    Unsupported {
        /// Which action and why.
        refusal: RuleRefusal,
        /// The rule's name.
        name: String,
    },
}

impl fmt::Display for RulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid { direction, errors } => write!(f, "{}: {errors}", direction.field()),
            Self::Unsupported { refusal, name } => write!(
                f,
                "{}[{}] {name:?}: action #{}: {}",
                refusal.direction.field(),
                refusal.rule.0,
                refusal.action,
                refusal.why
            ),
        }
    }
}

impl core::error::Error for RulesError {}

/// What the fast path does for one rule: `drop`, or the header edits (in the rule engine's
/// pipeline order). `Copy`, no heap.
#[derive(Clone, Copy, Debug)]
struct RuleOps {
    drop: bool,
    edits: [Edit; MAX_EDITS],
    edit_count: u8,
}

impl RuleOps {
    fn compile(a: &CompiledActions) -> Self {
        let mut ops = Self {
            drop: a.drop,
            edits: [Edit::SetDscp(0); MAX_EDITS],
            edit_count: 0,
        };
        let edits = [
            a.dscp.map(Edit::SetDscp),
            a.ecn.map(Edit::SetEcn),
            a.ttl.map(Edit::SetTtl),
            a.src_addr.map(Edit::SetSrcAddr),
            a.dst_addr.map(Edit::SetDstAddr),
            a.src_port.map(Edit::SetSrcPort),
            a.dst_port.map(Edit::SetDstPort),
        ];
        for e in edits.into_iter().flatten() {
            ops.edits[usize::from(ops.edit_count)] = e;
            ops.edit_count += 1;
        }
        ops
    }

    fn edits(&self) -> &[Edit] {
        &self.edits[..usize::from(self.edit_count)]
    }
}

/// A compiled set as the engine runs it.
#[derive(Clone, Debug)]
struct Compiled {
    set: RuleSet,
    /// Per rule, by [`RuleIndex`].
    ops: Vec<RuleOps>,
    has_conditions: bool,
}

impl Compiled {
    fn new(set: RuleSet, rules: &[Rule]) -> Self {
        let ops = (0..set.len())
            .map(|i| {
                let i = RuleIndex(u32::try_from(i).unwrap_or(u32::MAX));
                RuleOps::compile(set.actions(i).unwrap_or(&CompiledActions::NONE))
            })
            .collect();
        Self {
            set,
            ops,
            has_conditions: rules.iter().any(|r| r.condition.is_some()),
        }
    }

    fn ops(&self, rule: RuleIndex) -> Option<&RuleOps> {
        self.ops.get(rule.0 as usize)
    }
}

/// A rule list validated against an engine configuration and compiled: what
/// [`EngineConfig::tx_rules`]/[`EngineConfig::rx_rules`] become in [`Engine::new`], and what
/// [`Command::ReplaceRules`] carries to a running engine. Build it off the fast path (the
/// control thread): [`RuleTable::build`] allocates and costs the rule engine's validation and
/// compilation. That is `O(n log n)` plus the conflict check, which compares the rules of
/// one priority pairwise: 10 000 rules of distinct priorities build in tens of
/// milliseconds, 10 000 of one priority in seconds.
///
/// Two tables are equal if they hold the same rules for the same direction.
///
/// [`Command::ReplaceRules`]: super::super::Command::ReplaceRules
#[derive(Clone)]
pub struct RuleTable {
    direction: RuleDirection,
    rules: Vec<Rule>,
    /// The NICs it was validated against (conditions and striping name NICs).
    nics: NicSet,
    compiled: Compiled,
}

impl fmt::Debug for RuleTable {
    // Short: a command carrying 10 000 rules is logged by the daemon.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleTable")
            .field("direction", &self.direction)
            .field("rules", &self.rules.len())
            .field("tuples", &self.compiled.set.tuple_count())
            .finish_non_exhaustive()
    }
}

impl PartialEq for RuleTable {
    fn eq(&self, other: &Self) -> bool {
        self.direction == other.direction && self.rules == other.rules
    }
}

impl Eq for RuleTable {}

impl RuleTable {
    /// Validate `rules` for `direction` against `config` (its NICs, tunnels and QoS classes;
    /// the vNIC is a TUN device) and compile them.
    ///
    /// # Errors
    /// [`RulesError::Unsupported`] for the first action the engine does not carry out (see
    /// the module doc), else [`RulesError::Invalid`] with every problem the rule engine's
    /// validator found.
    pub fn build(
        config: &EngineConfig,
        direction: RuleDirection,
        rules: Vec<Rule>,
    ) -> Result<Self, RulesError> {
        check_actions(direction, &rules, &Env::of(config)).map_err(|refusal| {
            RulesError::Unsupported {
                name: rules[refusal.rule.0 as usize].name.clone(),
                refusal,
            }
        })?;
        let ctx = config.rule_context();
        let set_cfg = RuleSetConfig {
            hash_seed: config.seed,
            ..RuleSetConfig::default()
        };
        let set = RuleSet::build(&rules, &ctx, &set_cfg)
            .map_err(|errors| RulesError::Invalid { direction, errors })?;
        Ok(Self {
            direction,
            nics: ctx.nics,
            compiled: Compiled::new(set, &rules),
            rules,
        })
    }

    /// A table with no rule.
    #[must_use]
    pub fn empty(direction: RuleDirection) -> Self {
        Self {
            direction,
            rules: Vec::new(),
            nics: NicSet::ALL,
            compiled: Compiled::new(RuleSet::empty(), &[]),
        }
    }

    /// TX or RX.
    #[must_use]
    pub const fn direction(&self) -> RuleDirection {
        self.direction
    }

    /// The rules, as given.
    #[must_use]
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The compiled set.
    #[must_use]
    pub const fn set(&self) -> &RuleSet {
        &self.compiled.set
    }
}

impl EngineConfig {
    /// What rules are validated against: the configured NICs, one TUN vNIC (the engine's
    /// packets are IP packets: no VLAN tag), the tunnel table (a rule's tunnel id is an index
    /// into [`Self::tunnels`]) and the QoS classes (`0..=` the highest class id of
    /// [`Self::qos`]).
    #[must_use]
    pub fn rule_context(&self) -> RuleContext {
        RuleContext {
            nics: self.nics.iter().map(|n| n.id).collect(),
            vnics: vec![VnicLayer::Tun],
            tunnels: self
                .tunnels
                .iter()
                .enumerate()
                .map(|(i, t)| TunnelRef {
                    id: TunnelId(u16::try_from(i).unwrap_or(u16::MAX)),
                    kind: tunnel_kind(&t.encap),
                })
                .collect(),
            qos_classes: self
                .qos
                .classes
                .iter()
                .map(|c| c.id.0.saturating_add(1))
                .max()
                .unwrap_or(0),
        }
    }
}

const fn tunnel_kind(e: &braid_wire::tunnel::Encap) -> TunnelKind {
    match e {
        braid_wire::tunnel::Encap::Vxlan(_) => TunnelKind::Vxlan,
        braid_wire::tunnel::Encap::Gre(_) => TunnelKind::Gre,
    }
}

/// What the engine's own action checks need from the configuration in force.
struct Env {
    tunnels: Vec<TunnelKind>,
    /// Bit `i`: QoS class `i` exists.
    qos_known: u8,
}

impl Env {
    fn of(config: &EngineConfig) -> Self {
        Self {
            tunnels: config
                .tunnels
                .iter()
                .map(|t| tunnel_kind(&t.encap))
                .collect(),
            qos_known: config
                .qos
                .classes
                .iter()
                .filter(|c| c.id.0 < 8)
                .fold(0, |m, c| m | 1 << c.id.0),
        }
    }
}

/// The engine's checks of every action (beyond the rule engine's validation, which checks
/// values, order and the match): the first refusal.
fn check_actions(direction: RuleDirection, rules: &[Rule], env: &Env) -> Result<(), RuleRefusal> {
    for (i, r) in rules.iter().enumerate() {
        for (j, a) in r.actions.iter().enumerate() {
            let why = match (direction, *a) {
                (_, Action::VxlanDecap | Action::GreDecap) => Some(
                    "decapsulation is the tunnel endpoint's (the engine's tunnels), which runs \
                     before the rules: a rule cannot ask for it",
                ),
                (
                    RuleDirection::Rx,
                    Action::Stripe(_)
                    | Action::SetPriorityClass(_)
                    | Action::VxlanEncap(_)
                    | Action::GreEncap(_),
                ) => Some(
                    "an rx rule acts on packets going to the vnic: only rewrites and drop apply",
                ),
                (RuleDirection::Tx, Action::SetPriorityClass(c))
                    if c.0 >= 8 || env.qos_known & (1 << c.0) == 0 =>
                {
                    Some("names a qos class the configuration does not have")
                }
                (RuleDirection::Tx, Action::VxlanEncap(t)) => {
                    tunnel_refusal(env, t, TunnelKind::Vxlan)
                }
                (RuleDirection::Tx, Action::GreEncap(t)) => tunnel_refusal(env, t, TunnelKind::Gre),
                _ => None,
            };
            if let Some(why) = why {
                return Err(RuleRefusal {
                    direction,
                    rule: RuleIndex(u32::try_from(i).unwrap_or(u32::MAX)),
                    action: u32::try_from(j).unwrap_or(u32::MAX),
                    why,
                });
            }
        }
    }
    Ok(())
}

fn tunnel_refusal(env: &Env, t: TunnelId, kind: TunnelKind) -> Option<&'static str> {
    match env.tunnels.get(usize::from(t.0)) {
        None => Some("names no configured tunnel (an index into the tunnels)"),
        Some(k) if *k != kind => Some("names a tunnel of the other kind (vxlan or gre)"),
        Some(_) if t.0 >= MAX_TUNNELS as u16 => Some("tunnel index above the engine's limit"),
        Some(_) => None,
    }
}

/// Check [`EngineConfig::tx_rules`] and [`EngineConfig::rx_rules`] (builds both).
pub(in crate::engine) fn validate(config: &EngineConfig) -> Result<(), ConfigError> {
    RulesRt::tables(config).map(drop)
}

/// A TX flow's values from its class, before any rule: what comes back when no rule applies
/// any more. Kept in the flow entry.
#[derive(Clone, Copy, Debug)]
pub(super) struct ClassDefaults {
    policy: ClassPolicy,
    nics: NicSet,
    qos_class: u8,
    tunnel: Option<u8>,
}

/// A TX flow's rule state: the cached lookup and the class's values.
#[derive(Clone, Copy, Debug)]
pub(super) struct FlowRules {
    cache: CachedRule,
    class: ClassDefaults,
}

impl FlowRules {
    /// Not looked up yet ([`Engine::rules_install_tx`] fills it in).
    pub(super) const STALE: Self = Self {
        cache: CachedRule::STALE,
        class: ClassDefaults {
            policy: ClassPolicy::Stripe,
            nics: NicSet::EMPTY,
            qos_class: 0,
            tunnel: None,
        },
    };
}

/// An RX flow's (or a tunnel's) cached lookup, with the key it was made for.
#[derive(Clone, Copy, Debug)]
pub(super) struct RxRuleCache {
    cache: CachedRule,
    key: Option<RuleKey>,
}

impl RxRuleCache {
    /// Nothing cached.
    pub(super) const STALE: Self = Self {
        cache: CachedRule::STALE,
        key: None,
    };
}

/// A rule's rewrite to apply to the stored packet (from [`Engine::tx_rule`]).
#[derive(Clone, Copy, Debug)]
pub(super) struct Rewrite(RuleIndex);

/// Counters of the rule stages. Units are in the names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleStats {
    /// TX slow-path lookups: a flow installed, or looked up again after the set changed.
    pub tx_lookups_count: u64,
    /// RX slow-path lookups (a new key on an RX flow or a tunnel, or a changed set).
    pub rx_lookups_count: u64,
    /// TX packets whose headers a rule rewrote.
    pub tx_rewritten_count: u64,
    /// RX packets whose headers a rule rewrote.
    pub rx_rewritten_count: u64,
    /// TX flows whose policy, NICs or tunnel changed on a re-lookup and that were placed
    /// again with the flow controller.
    pub tx_flows_replaced_count: u64,
    /// Condition evaluations that switched at least one rule on or off.
    pub condition_changes_count: u64,
    /// Rule set replacements applied ([`Command::ReplaceRules`]).
    ///
    /// [`Command::ReplaceRules`]: super::super::Command::ReplaceRules
    pub sets_replaced_count: u64,
}

/// The engine's rule state.
#[derive(Debug)]
pub(super) struct RulesRt {
    tx: Compiled,
    rx: Compiled,
    /// The NICs as conditions see them, refreshed at every `handle_timeout`.
    live: LiveState,
    /// Per tunnel: the RX lookup of its decapsulated packets (one entry per tunnel,
    /// allocated at build).
    tunnel_rx: Vec<RxRuleCache>,
    /// Where a tunnelled flow's packet is rewritten before the tunnel stage copies it; as
    /// large as the vNIC MTU when there are tunnels, else empty.
    scratch: Vec<u8>,
    stats: RuleStats,
}

impl RulesRt {
    /// Build both tables from the configuration.
    fn tables(config: &EngineConfig) -> Result<(RuleTable, RuleTable), ConfigError> {
        let build = |d, rules: &[Rule]| {
            RuleTable::build(config, d, rules.to_vec()).map_err(|e| ConfigError::Rules(Box::new(e)))
        };
        Ok((
            build(RuleDirection::Tx, &config.tx_rules)?,
            build(RuleDirection::Rx, &config.rx_rules)?,
        ))
    }

    /// The rule state of a new engine (`config` validated).
    pub(super) fn new(config: &EngineConfig) -> Result<Self, ConfigError> {
        let (tx, rx) = Self::tables(config)?;
        Ok(Self {
            tx: tx.compiled,
            rx: rx.compiled,
            live: LiveState::new(),
            tunnel_rx: vec![RxRuleCache::STALE; config.tunnels.len()],
            scratch: if config.tunnels.is_empty() {
                Vec::new()
            } else {
                vec![0; config.vnic_mtu as usize]
            },
            stats: RuleStats::default(),
        })
    }

    /// The classification the sets need, on top of `classify`.
    fn widen(&self, classify: ClassifyConfig) -> ClassifyConfig {
        let (t, r) = (self.tx.set.required_keys(), self.rx.set.required_keys());
        ClassifyConfig {
            use_ports: classify.use_ports || t.use_ports || r.use_ports,
            dscp: classify.dscp || t.dscp || r.dscp,
            vlan: classify.vlan || t.vlan || r.vlan,
            vni: classify.vni || t.vni || r.vni,
        }
    }

    /// When a condition's hold time ends (see `poll_condition_timeout`).
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        match (
            self.tx.set.poll_condition_timeout(),
            self.rx.set.poll_condition_timeout(),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// RX: apply the RX set to `packet` (a whole IP packet about to go to the vNIC), with
    /// `cache` the lookup of its flow (or tunnel). Fast path when the packet's key and the
    /// set's version are the cached ones.
    pub(super) fn rx_apply(
        &mut self,
        cache: &mut RxRuleCache,
        classify: &ClassifyConfig,
        packet: &mut [u8],
    ) -> Result<(), DropReason> {
        if self.rx.set.is_empty() {
            return Ok(());
        }
        // A packet that does not parse as IP matches no rule (the sender's engine parsed
        // it; a tunnel's inner packet was checked by the decapsulation).
        let Ok(summary) = IpSummary::parse_l3(packet) else {
            return Ok(());
        };
        let key = RuleKey::from_flow_key(&FlowKey::from_summary(&summary, classify), VNIC);
        if cache.key != Some(key) || cache.cache.version() != self.rx.set.version() {
            // Slow path: a new key on this flow, or a changed set.
            cache.cache = self.rx.set.classify(&key);
            cache.key = Some(key);
            self.stats.rx_lookups_count += 1;
        }
        let Some(ops) = cache.cache.rule().and_then(|r| self.rx.ops(r)) else {
            return Ok(());
        };
        if ops.drop {
            return Err(DropReason::RuleDrop);
        }
        if ops.edit_count > 0 {
            apply_l3(packet, ops.edits()).map_err(|_| DropReason::RuleRewriteFailed)?;
            self.stats.rx_rewritten_count += 1;
        }
        Ok(())
    }
}

impl ClassDefaults {
    fn of(flow: &TxFlow) -> Self {
        Self {
            policy: flow.policy,
            nics: flow.nics,
            qos_class: flow.qos_class,
            tunnel: flow.tunnel,
        }
    }
}

/// The flow's values under its cached rule: the class's, overridden by the rule's
/// striping, priority class and tunnel.
fn apply_overrides(set: &RuleSet, nic_set: NicSet, flow: &mut TxFlow) {
    let c = flow.rules.class;
    flow.policy = c.policy;
    flow.nics = c.nics;
    flow.qos_class = c.qos_class;
    flow.tunnel = c.tunnel;
    let Some(a) = flow.rules.cache.rule().and_then(|r| set.actions(r)) else {
        return;
    };
    if let Some(s) = a.striping {
        flow.policy = s.policy;
        // The validator checked the set names a configured NIC.
        flow.nics = s.nics.and(nic_set);
    }
    if let Some(q) = a.priority_class {
        flow.qos_class = q.0;
    }
    if let Some(Encap::Vxlan(t) | Encap::Gre(t)) = a.encap {
        flow.tunnel = u8::try_from(t.0).ok();
    }
}

impl Engine {
    // ------------------------------------------------------------------ getters

    /// The TX rule set in force (its version, which rules are active, their names).
    #[must_use]
    pub fn tx_rule_set(&self) -> &RuleSet {
        &self.rules.tx.set
    }

    /// The RX rule set in force.
    #[must_use]
    pub fn rx_rule_set(&self) -> &RuleSet {
        &self.rules.rx.set
    }

    /// The rule stages' counters.
    #[must_use]
    pub fn rule_stats(&self) -> &RuleStats {
        &self.rules.stats
    }

    /// The rule a TX flow (by key) is under as of its last packet, `None` if no rule applies
    /// or the flow is not installed.
    #[must_use]
    pub fn tx_flow_rule(&self, key: &FlowKey) -> Option<RuleIndex> {
        self.tx_flows.peek(key).and_then(|f| f.rules.cache.rule())
    }

    // ------------------------------------------------------------------ TX hooks

    /// **Slow path**, when a TX flow is installed: the class's values (already in `flow`)
    /// become its defaults, then the rule for its key overrides them, before the flow is
    /// placed.
    pub(super) fn rules_install_tx(&mut self, key: &FlowKey, flow: &mut TxFlow) {
        flow.rules.class = ClassDefaults::of(flow);
        flow.rules.cache = self
            .rules
            .tx
            .set
            .classify(&RuleKey::from_flow_key(key, VNIC));
        self.rules.stats.tx_lookups_count += 1;
        apply_overrides(&self.rules.tx.set, self.nic_set, flow);
    }

    /// **Fast path** of every TX packet of an installed flow (the flow entry at `slot`, its
    /// copy `flow`): the cached rule if the set's version is the cached one; else the slow
    /// path looks the flow up again, re-applies the overrides and, if its policy, NICs or
    /// tunnel changed, places it again (the entry is updated). Returns the rewrite to apply
    /// to the stored packet, if any.
    ///
    /// # Errors
    /// [`DropReason::RuleDrop`] when the rule drops the flow's packets.
    pub(super) fn tx_rule(
        &mut self,
        now: Instant,
        slot: u32,
        flow: &mut TxFlow,
        key: &FlowKey,
    ) -> Result<Option<Rewrite>, DropReason> {
        if flow.rules.cache.version() != self.rules.tx.set.version() {
            self.tx_relookup(now, slot, flow, key);
        }
        let Some(rule) = flow.rules.cache.rule() else {
            return Ok(None);
        };
        match self.rules.tx.ops(rule) {
            Some(ops) if ops.drop => Err(DropReason::RuleDrop),
            Some(ops) if ops.edit_count > 0 => Ok(Some(Rewrite(rule))),
            _ => Ok(None),
        }
    }

    /// Slow path of [`Self::tx_rule`]: the set changed since the flow's lookup.
    fn tx_relookup(&mut self, now: Instant, slot: u32, flow: &mut TxFlow, key: &FlowKey) {
        let before = *flow;
        flow.rules.cache = self
            .rules
            .tx
            .set
            .classify(&RuleKey::from_flow_key(key, VNIC));
        self.rules.stats.tx_lookups_count += 1;
        apply_overrides(&self.rules.tx.set, self.nic_set, flow);
        let moved = flow.policy != before.policy
            || flow.nics != before.nics
            || flow.tunnel != before.tunnel;
        if moved {
            self.rules.stats.tx_flows_replaced_count += 1;
            if flow.tunnel.is_some() {
                // Tunnelled flows are not braid's to place (engine/tunnel.rs).
                self.controller.remove_flow(flow.id);
            } else {
                flow.retry_at = self.place(now, flow).1;
            }
            self.drain_controller_events();
        }
        if let Some((_, f)) = self.tx_flows.slot_mut(slot) {
            f.rules = flow.rules;
            f.policy = flow.policy;
            f.nics = flow.nics;
            f.qos_class = flow.qos_class;
            f.tunnel = flow.tunnel;
            f.retry_at = flow.retry_at;
        }
    }

    /// Apply `rewrite` to the packet stored in `buf` (the engine's copy, `len` bytes).
    ///
    /// # Errors
    /// [`DropReason::RuleRewriteFailed`]: the packet is unchanged.
    pub(super) fn rules_rewrite_stored(
        &mut self,
        rewrite: Option<Rewrite>,
        buf: &crate::buffer::BufHandle,
        len: usize,
    ) -> Result<(), DropReason> {
        let Some(Rewrite(rule)) = rewrite else {
            return Ok(());
        };
        let Some(ops) = self.rules.tx.ops(rule) else {
            return Ok(());
        };
        let bytes = self.store.get_mut(buf);
        let packet = bytes.get_mut(..len).ok_or(DropReason::RuleRewriteFailed)?;
        apply_l3(packet, ops.edits()).map_err(|_| DropReason::RuleRewriteFailed)?;
        self.rules.stats.tx_rewritten_count += 1;
        Ok(())
    }

    /// The tunnel stage for a tunnelled flow's packet, after its rewrite (if any) in the
    /// scratch buffer: the tunnel stage copies the packet itself.
    pub(super) fn rules_tunnel_tx(
        &mut self,
        tunnel: u8,
        flow: FlowId,
        rewrite: Option<Rewrite>,
        packet: &[u8],
    ) -> TxVerdict {
        let Some(ops) = rewrite.and_then(|Rewrite(r)| self.rules.tx.ops(r)).copied() else {
            return self.tunnel_tx(tunnel, flow, packet);
        };
        let mut scratch = core::mem::take(&mut self.rules.scratch);
        let verdict = match scratch.get_mut(..packet.len()) {
            Some(copy) => {
                copy.copy_from_slice(packet);
                match apply_l3(copy, ops.edits()) {
                    Ok(()) => {
                        self.rules.stats.tx_rewritten_count += 1;
                        self.tunnel_tx(tunnel, flow, copy)
                    }
                    Err(_) => TxVerdict::Drop(DropReason::RuleRewriteFailed),
                }
            }
            // The scratch holds a vNIC-MTU packet and handle_tx checked the size.
            None => TxVerdict::Drop(DropReason::TooBig),
        };
        self.rules.scratch = scratch;
        verdict
    }

    // ------------------------------------------------------------------ RX hook

    /// RX hook for a tunnel's decapsulated packet (`engine/tunnel.rs`), as it is handed to
    /// the vNIC: the RX set, cached per tunnel.
    ///
    /// # Errors
    /// The drop reason (the caller counts it).
    pub(in crate::engine) fn rules_rx_tunnel(
        &mut self,
        tunnel: u8,
        packet: &mut [u8],
    ) -> Result<(), DropReason> {
        let Some(cache) = self.rules.tunnel_rx.get_mut(usize::from(tunnel)) else {
            return Ok(());
        };
        let mut c = *cache;
        let result = self.rules.rx_apply(&mut c, &self.config.classify, packet);
        self.rules.tunnel_rx[usize::from(tunnel)] = c;
        result
    }

    // ------------------------------------------------------------------ conditions

    /// Copy link health into the live state and evaluate both sets' conditions (every
    /// `handle_timeout`; after a replacement). Allocates nothing.
    pub(super) fn update_rule_conditions(&mut self, now: Instant) {
        if !self.rules.tx.has_conditions && !self.rules.rx.has_conditions {
            return;
        }
        for n in self.nics.iter().flatten() {
            let id = n.spec.id;
            let mut snap = self
                .health
                .link(id)
                .map_or(LinkSnapshot::UP, LinkSnapshot::from_stats);
            if !n.admin_up {
                snap.state = LinkState::Down;
            }
            self.rules.live.set(id, snap);
        }
        let live = self.rules.live;
        let tx = self.rules.tx.set.update_conditions(&live, now);
        let rx = self.rules.rx.set.update_conditions(&live, now);
        if tx || rx {
            self.rules.stats.condition_changes_count += 1;
        }
    }

    // ------------------------------------------------------------------ mutators

    /// [`Command::ReplaceRules`]: check both tables against the configuration in force, then
    /// swap them in (see the module doc). On error nothing changed.
    ///
    /// [`Command::ReplaceRules`]: super::super::Command::ReplaceRules
    pub(super) fn replace_rules(
        &mut self,
        now: Instant,
        tx: RuleTable,
        rx: RuleTable,
    ) -> Result<(), CommandError> {
        if tx.direction != RuleDirection::Tx {
            return Err(CommandError::InvalidValue("tx"));
        }
        if rx.direction != RuleDirection::Rx {
            return Err(CommandError::InvalidValue("rx"));
        }
        let nics = self.nic_set;
        for t in [&tx, &rx] {
            // Built for another set of NICs: its conditions and striping were checked
            // against those. (An empty table names none.)
            if !t.rules.is_empty() && t.nics != nics {
                return Err(CommandError::InvalidValue(t.direction.field()));
            }
        }
        let env = Env::of(&self.config);
        check_actions(RuleDirection::Tx, &tx.rules, &env).map_err(CommandError::InvalidRules)?;
        check_actions(RuleDirection::Rx, &rx.rules, &env).map_err(CommandError::InvalidRules)?;
        // The swap. The old sets are freed here, between batches.
        let RuleTable {
            rules: tx_rules,
            compiled: tx_new,
            ..
        } = tx;
        let RuleTable {
            rules: rx_rules,
            compiled: rx_new,
            ..
        } = rx;
        for (old, new) in [(&mut self.rules.tx, tx_new), (&mut self.rules.rx, rx_new)] {
            let Compiled {
                set,
                ops,
                has_conditions,
            } = new;
            drop(old.set.replace(set));
            old.ops = ops;
            old.has_conditions = has_conditions;
        }
        self.config.tx_rules = tx_rules;
        self.config.rx_rules = rx_rules;
        self.config.classify = self.rules.widen(self.config.classify);
        self.rules.stats.sets_replaced_count += 1;
        // Conditions of a new set start off: evaluate them on the live state now.
        self.update_rule_conditions(now);
        Ok(())
    }

    /// At build: the classification the rule sets need.
    pub(super) fn widen_classify_for_rules(&mut self) {
        self.config.classify = self.rules.widen(self.config.classify);
    }
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
