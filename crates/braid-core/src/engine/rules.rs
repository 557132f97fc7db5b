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
//! decapsulated, as they are handed to the vNIC: rewrites, `drop` and `pop_vlan` only
//! (striping,
//! priority classes and encapsulation have no meaning there; decapsulation is the tunnel
//! endpoint's, which runs first, so a rule cannot ask for it — [`RuleTable::build`] refuses
//! these with an error naming the rule). A braid flow on RX is a sender's flow, which the
//! receiver does not classify, so each RX flow caches its last [`RuleKey`] with the lookup:
//! a packet with the same key and the same set version takes the fast path.
//!
//! # VLAN
//!
//! The vNIC is TUN, so VLAN tags exist only in the inner Ethernet header of VXLAN (RFC
//! 7348; `engine/tunnel.rs`). A TX rule's `PushVlan` is the tag of its flows' VXLAN inner
//! frames: [`RuleTable::build`] refuses it, naming the rule and why, unless every flow the
//! rule matches is VXLAN-encapsulated (its own VXLAN action, or the flow classes its match
//! can fall in; `check_vlan`). On RX a tunnel hands the VLAN id of a tagged inner frame
//! with the packet: the key carries it (a `vlan` match sees it) and the rule that applies
//! must `PopVlan` it, else [`DropReason::TunnelVlanNotPopped`]. `PopVlan` on TX, `PushVlan`
//! on RX, `PopVlan` or an RX `vlan` match without a VXLAN tunnel, and a TX `vlan` match are
//! refused; so is an RX `vlan` match without `PopVlan` (or `Drop`), which would drop every
//! packet it matches. GRE gets no tag: a GRE tunnel carries the bare IP packet or, built
//! with an inner Ethernet header (`InnerFormat::IpInEthernet`, transparent Ethernet
//! bridging, which the tunnel table allows; the configuration file builds none), untagged
//! frames only — a `PushVlan` for a GRE flow is refused, and a tagged frame from GRE is
//! [`DropReason::TunnelInnerNotIp`]. These checks run at [`RuleTable::build`] and again
//! on every replacement, against the tunnels and flow classes the tables are to run with.
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
//! checks them against its configuration in force (tunnels, QoS classes, the flow classes'
//! tunnels for `PushVlan`, VXLAN for `PopVlan` and `vlan` matches: they may have changed
//! since the build), swaps both in between two batches with
//! [`RuleSet::replace`](crate::rules::RuleSet::replace) (so every cached lookup is stale),
//! evaluates their conditions at once and widens the flow classification if the new rules
//! match on a key it did not use (DSCP, VLAN, VNI, ports). A refused table changes nothing.
//!
//! **One slow-path lookup per flow after a change.** A replacement or a condition flip makes
//! every flow's cached lookup stale, and each flow is looked up again on its next packet
//! (one tuple-space lookup, about a microsecond with 10 000 rules), not all at the swap:
//! the cost is spread over the flows' next packets, a flow that never sends again costs
//! nothing, and the swap itself stays a move of a few pointers. This is deliberate.
//!
//! **Widening.** After a widening every flow's packets have a new, wider key (a DSCP, a
//! VNI). Installed again under it, each live flow would hold two entries until the old one
//! idled out, and count twice against the TX flow table. Instead, a TX miss first narrows
//! its key to each classification in force before the widening (at most
//! [`MAX_WIDENINGS`], for one TX idle timeout after the last one: by then every entry under
//! a narrower key has moved or expired) and, if the flow is there, moves its entry to the
//! new key: the table keeps one entry per flow, and the flow keeps its id, sequence and
//! placement (`tx_flows_rekeyed_count`). Packets of one old flow that now differ in the new
//! field are new flows, except for the first of them, which takes the old entry. The moved
//! entry's cached rule is made stale: it was looked up for the old key, and may even be
//! current (a fragment, whose key has no ports, hit the old entry after the replacement),
//! so the flow's next packet looks up its new key's rule. Each entry records the
//! classification generation it was keyed under (how many widenings came before it), and
//! only an entry keyed under the narrower classification moves: a flow installed since
//! whose key happens to be the narrowed one (the fragments' own flow after a widening to
//! ports) is some other flow's and stays.
//!
//! # Counters
//!
//! Each table has one [`RuleHits`] pair (packets, bytes) per rule, allocated when it is
//! built and bumped on the fast path by index ([`Engine::rule_hits`], with the names in
//! [`Engine::rule_names`]). A replacement brings the new table's counters, at zero:
//! nothing carries over, not even for a rule of the same name (the rule may match other
//! packets now). [`RuleStats`] counts the stages' work across replacements.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use braid_wire::IpSummary;
use braid_wire::rewrite::{Edit, VlanTag as WireVlanTag, apply_l3};

use super::{Engine, TxFlow};
use crate::engine::config::{ClassMatch, ClassPolicy, EngineConfig, FlowClass};
use crate::engine::tunnel::{MAX_TUNNELS, TunnelSpec};
use crate::engine::{CommandError, ConfigError, TxVerdict};
use crate::flow::{ClassifyConfig, FlowKey};
use crate::health::LinkState;
use crate::qos::QosConfig;
use crate::rules::{
    Action, CachedRule, CompiledActions, Encap, LinkSnapshot, LiveState, Rule, RuleContext,
    RuleIndex, RuleKey, RuleMatch, RuleSet, RuleSetConfig, TunVlan, TunnelId, TunnelKind,
    TunnelRef, ValidationErrors, VnicLayer,
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
    /// The action, by its position in the rule's list; `None`: the rule's match (with the
    /// actions it has, or lacks).
    pub action: Option<u32>,
    /// Why.
    pub why: &'static str,
}

impl RuleRefusal {
    /// What in the rule is refused: `action #1` or `match`.
    const fn part(&self) -> RefusedPart {
        RefusedPart(self.action)
    }
}

/// [`RuleRefusal::action`] as the messages say it.
struct RefusedPart(Option<u32>);

impl fmt::Display for RefusedPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(a) => write!(f, "action #{a}"),
            None => f.write_str("match"),
        }
    }
}

impl fmt::Display for RuleRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}[{}]: {}: {}",
            self.direction.field(),
            self.rule.0,
            self.part(),
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
                "{}[{}] {name:?}: {}: {}",
                refusal.direction.field(),
                refusal.rule.0,
                refusal.part(),
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
    /// TX: the 802.1Q tag for the flow's VXLAN inner Ethernet header.
    push_vlan: Option<WireVlanTag>,
    /// RX: a VXLAN tunnel's tagged inner frame may be delivered (its tag removed).
    pop_vlan: bool,
}

impl RuleOps {
    fn compile(a: &CompiledActions) -> Self {
        let mut ops = Self {
            drop: a.drop,
            edits: [Edit::SetDscp(0); MAX_EDITS],
            edit_count: 0,
            push_vlan: a.push_vlan.map(|t| WireVlanTag {
                pcp: t.pcp,
                dei: false,
                vid: t.vid,
            }),
            pop_vlan: a.pop_vlan,
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
    /// Per rule, by [`RuleIndex`]: what it applied to. Allocated with the table (one pair
    /// per rule), replaced with it: counters do not survive a replacement.
    hits: Vec<RuleHits>,
    /// The rules' names, by [`RuleIndex`], shared with the counters' readers (a snapshot
    /// clones a reference count, not the strings).
    names: Arc<[String]>,
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
            hits: vec![RuleHits::default(); set.len()],
            names: rules.iter().map(|r| r.name.clone()).collect(),
            set,
            ops,
            has_conditions: rules.iter().any(|r| r.condition.is_some()),
        }
    }

    fn ops(&self, rule: RuleIndex) -> Option<&RuleOps> {
        self.ops.get(rule.0 as usize)
    }

    /// A packet of `len` bytes that `rule` applied to. No allocation: the counters exist.
    #[inline]
    fn count(&mut self, rule: RuleIndex, len: usize) {
        if let Some(h) = self.hits.get_mut(rule.0 as usize) {
            h.packets_count += 1;
            h.bytes_count += len as u64;
        }
    }
}

/// Packets and bytes one rule applied to, in its direction (one pair per rule of the table
/// in force: [`Engine::rule_hits`]). Units are in the names.
///
/// On TX a packet counts for the rule of its flow when it reaches the rule stage (after the
/// flow lookup, before the QoS stage): whatever the rule then does with it (drops it,
/// rewrites it, places or tunnels its flow), and whether or not a later stage drops it.
/// On RX it counts for the rule that matched it on its way to the vNIC. Bytes are the IP
/// packet's as it reached the rule, before any rewrite. Counters start at zero with the
/// table: a replacement ([`Command::ReplaceRules`]) brings new ones, even for a rule of the
/// same name; a condition flip does not reset them.
///
/// [`Command::ReplaceRules`]: super::super::Command::ReplaceRules
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleHits {
    /// Packets the rule applied to.
    pub packets_count: u64,
    /// Their bytes.
    pub bytes_count: u64,
}

/// A rule list validated against an engine configuration and compiled: what
/// [`EngineConfig::tx_rules`]/[`EngineConfig::rx_rules`] become in [`Engine::new`], and what
/// [`Command::ReplaceRules`] carries to a running engine. Build it off the fast path (the
/// control thread): [`RuleTable::build`] allocates and costs the rule engine's validation and
/// compilation: 10 000 rules build in tens of milliseconds, whether their priorities differ
/// or not (the conflict check among the rules of one priority compares only the rules their
/// fields do not tell apart; see `crate::rules::validate`).
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
        let env = Env::of(config);
        check_actions(direction, &rules, &env)
            .and_then(|()| check_vlan(direction, &rules, &env))
            .map_err(|refusal| RulesError::Unsupported {
                name: rules[refusal.rule.0 as usize].name.clone(),
                refusal,
            })?;
        let mut ctx = config.rule_context();
        // VLAN lives in the VXLAN inner frame (see `check_vlan`): a push on TX (checked
        // there per rule), a pop and a VLAN match on RX when a VXLAN tunnel can bring one.
        let vxlan = config
            .tunnels
            .iter()
            .any(|t| matches!(t.encap, braid_wire::tunnel::Encap::Vxlan(_)));
        ctx.tun_vlan = TunVlan {
            push: direction == RuleDirection::Tx,
            pop_and_match: direction == RuleDirection::Rx && vxlan,
        };
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
            // No VLAN here; `RuleTable::build` allows it per direction (VXLAN inner frames).
            tun_vlan: TunVlan::default(),
        }
    }
}

const fn tunnel_kind(e: &braid_wire::tunnel::Encap) -> TunnelKind {
    match e {
        braid_wire::tunnel::Encap::Vxlan(_) => TunnelKind::Vxlan,
        braid_wire::tunnel::Encap::Gre(_) => TunnelKind::Gre,
    }
}

/// What the engine's own checks of the actions and of VLAN need from the configuration
/// the rules are to run with.
struct Env {
    tunnels: Vec<TunnelKind>,
    /// Bit `i`: QoS class `i` exists.
    qos_known: u8,
    /// The flow classes, in order: each one's match and its tunnel (an index into
    /// `tunnels`).
    classes: Vec<(ClassMatch, Option<u8>)>,
}

impl Env {
    fn of(config: &EngineConfig) -> Self {
        Self::new(&config.tunnels, &config.qos, &config.classes, Some)
    }

    /// For a tunnel table and QoS configuration that are not (yet) the configuration's
    /// ([`Engine::check_rule_tables`]), with `classes` whose tunnels become
    /// `class_tunnel(index)` in that table (a policy replacement remaps them by name).
    fn new(
        tunnels: &[TunnelSpec],
        qos: &QosConfig,
        classes: &[FlowClass],
        class_tunnel: impl Fn(u8) -> Option<u8>,
    ) -> Self {
        Self {
            tunnels: tunnels.iter().map(|t| tunnel_kind(&t.encap)).collect(),
            qos_known: qos
                .classes
                .iter()
                .filter(|c| c.id.0 < 8)
                .fold(0, |m, c| m | 1 << c.id.0),
            classes: classes
                .iter()
                .map(|c| (c.matcher.clone(), c.tunnel.and_then(&class_tunnel)))
                .collect(),
        }
    }

    /// `true` if tunnel `t` is a VXLAN tunnel: the one kind whose inner frames braid tags
    /// and untags (see [`check_vlan`]).
    fn vxlan(&self, t: u8) -> bool {
        self.tunnels.get(usize::from(t)) == Some(&TunnelKind::Vxlan)
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
                    action: Some(u32::try_from(j).unwrap_or(u32::MAX)),
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

/// The engine's VLAN checks (the vNIC is TUN: the one Ethernet header braid writes and reads
/// for peers that are not braid is the inner one of VXLAN, RFC 7348), against `env`: the
/// tunnels and flow classes the rules are to run with (at build, the configuration's; on a
/// replacement, the new tunnel table and the classes remapped to it). A TX rule may push a
/// tag only if every flow it applies to is VXLAN-encapsulated — by its own VXLAN tunnel
/// action, or, without one, by the flow classes its match falls in (each class it may
/// overlap, in class order until one covers it, has a VXLAN tunnel). An RX rule may pop
/// one, or match on a VLAN id, only when a VXLAN tunnel exists; and an RX rule that matches
/// a VLAN id must pop the tag (or drop), since every packet it takes is tagged and a tag
/// that the packet's rule does not pop is [`DropReason::TunnelVlanNotPopped`]. GRE gets no
/// tag either way: a GRE tunnel of the configuration file carries the bare IP packet, and
/// one built with an inner Ethernet header ([`InnerFormat::IpInEthernet`], transparent
/// Ethernet bridging, which `check_tunnels` allows) carries untagged frames only (its
/// tagged frames are [`DropReason::TunnelInnerNotIp`] on receipt, `engine/tunnel.rs`).
/// The first refusal, naming the rule and why.
///
/// [`InnerFormat::IpInEthernet`]: braid_wire::tunnel::InnerFormat::IpInEthernet
fn check_vlan(direction: RuleDirection, rules: &[Rule], env: &Env) -> Result<(), RuleRefusal> {
    let any_vxlan = env.tunnels.contains(&TunnelKind::Vxlan);
    let refusal = |i: usize, action: Option<usize>, why| RuleRefusal {
        direction,
        rule: RuleIndex(u32::try_from(i).unwrap_or(u32::MAX)),
        action: action.map(|j| u32::try_from(j).unwrap_or(u32::MAX)),
        why,
    };
    for (i, r) in rules.iter().enumerate() {
        for (j, a) in r.actions.iter().enumerate() {
            let why = match (direction, a) {
                (RuleDirection::Tx, Action::PushVlan(_)) => push_vlan_refusal(r, env),
                (RuleDirection::Tx, Action::PopVlan) => Some(
                    "pop_vlan on tx: the packets come from the tun vnic and carry no vlan tag \
                     (a tag from a vxlan peer is popped by an rx rule)",
                ),
                (RuleDirection::Rx, Action::PushVlan(_)) => Some(
                    "push_vlan on rx: the packets go to the tun vnic, which cannot carry a vlan \
                     tag (push_vlan is a tx action for flows into a vxlan tunnel)",
                ),
                (RuleDirection::Rx, Action::PopVlan) if !any_vxlan => Some(
                    "pop_vlan needs a vxlan tunnel: only a vxlan tunnel's inner ethernet frame \
                     brings a vlan tag",
                ),
                _ => None,
            };
            if let Some(why) = why {
                return Err(refusal(i, Some(j), why));
            }
        }
        if direction == RuleDirection::Rx && r.matcher.vlan.is_some() {
            let acts = |want: &Action| r.actions.iter().any(|a| a == want);
            if !any_vxlan {
                return Err(refusal(
                    i,
                    None,
                    "a vlan match needs a vxlan tunnel: only a vxlan tunnel's inner ethernet \
                     frame brings a vlan tag",
                ));
            }
            if !acts(&Action::PopVlan) && !acts(&Action::Drop) {
                return Err(refusal(
                    i,
                    None,
                    "a vlan match without pop_vlan: every packet it matches is tagged, and a \
                     tagged packet whose rule does not pop the tag is dropped \
                     (tunnel_vlan_not_popped); add pop_vlan to the rule (or drop)",
                ));
            }
        }
    }
    Ok(())
}

/// Why TX rule `r` may not push a VLAN tag (see [`check_vlan`]), `None` if it may.
fn push_vlan_refusal(r: &Rule, env: &Env) -> Option<&'static str> {
    for a in &r.actions {
        match a {
            // Its own tunnel: the kind was checked by `check_actions`.
            Action::VxlanEncap(_) => return None,
            Action::GreEncap(_) => {
                return Some(
                    "push_vlan needs a vxlan tunnel, and the rule's tunnel is gre: braid writes \
                     vlan tags only into vxlan inner ethernet headers (a gre tunnel carries \
                     the bare ip packet, or, with an inner ethernet header, untagged frames)",
                );
            }
            _ => {}
        }
    }
    // No tunnel of its own: the flow's class gives it one. The first class that matches a
    // packet is its flow's, so walk the classes in order: each one that may take some of
    // the rule's flows must tunnel them over VXLAN, until one takes them all.
    for (matcher, tunnel) in &env.classes {
        if !class_may_overlap(matcher, &r.matcher) {
            continue;
        }
        if !tunnel.is_some_and(|t| env.vxlan(t)) {
            return Some(
                "push_vlan needs a vxlan-encapsulated flow: some of the flows it matches are \
                 in a flow class without a vxlan tunnel (the tag goes in the vxlan inner \
                 ethernet header); add a vxlan tunnel action or narrow the match",
            );
        }
        if class_covers(matcher, &r.matcher) {
            return None;
        }
    }
    Some(
        "push_vlan needs a vxlan-encapsulated flow: some of the flows it matches are in no \
         flow class with a vxlan tunnel (the tag goes in the vxlan inner ethernet header); \
         add a vxlan tunnel action or narrow the match to such a class",
    )
}

/// `true` unless no flow the rule match `m` takes can be in class `c` (conservative: `true`
/// when unsure).
fn class_may_overlap(c: &ClassMatch, m: &RuleMatch) -> bool {
    c.protocol.is_none_or(|p| m.protocol.is_none_or(|q| p == q))
        && ports_may_overlap(c.dst_ports, m.dst_ports)
        && ports_may_overlap(c.src_ports, m.src_ports)
        && c.dscp
            .is_none_or(|d| m.dscp.is_none_or(|set| set.contains(d)))
}

/// `true` if every flow the rule match `m` takes is in class `c` (if no earlier class takes
/// it): every field the class matches on is one the rule fixes inside it.
fn class_covers(c: &ClassMatch, m: &RuleMatch) -> bool {
    c.protocol.is_none_or(|p| m.protocol == Some(p))
        && ports_cover(c.dst_ports, m.dst_ports)
        && ports_cover(c.src_ports, m.src_ports)
        && c.dscp
            .is_none_or(|d| m.dscp.is_some_and(|set| set.as_single() == Some(d)))
}

/// A class port range against a rule's. A flow key's ports are 0 for fragments, other
/// protocols and classification without ports, whatever its packets' ports (which the class
/// matches), so a rule range that holds 0 may meet any class range and is covered by none.
fn ports_may_overlap(class: Option<(u16, u16)>, rule: Option<crate::rules::PortRange>) -> bool {
    match (class, rule) {
        (Some((lo, hi)), Some(r)) => r.lo == 0 || (r.lo <= hi && lo <= r.hi),
        _ => true,
    }
}

/// See [`ports_may_overlap`].
fn ports_cover(class: Option<(u16, u16)>, rule: Option<crate::rules::PortRange>) -> bool {
    match (class, rule) {
        (None, _) => true,
        (Some((lo, hi)), Some(r)) => r.lo > 0 && lo <= r.lo && r.hi <= hi,
        (Some(_), None) => false,
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

/// A TX flow's rule state: the cached lookup, the class's values, and the classification
/// its entry's key was made under.
#[derive(Clone, Copy, Debug)]
pub(super) struct FlowRules {
    cache: CachedRule,
    class: ClassDefaults,
    /// How many widenings of the classification came before the entry was installed (or
    /// moved) under its key ([`RulesRt::classify_gen`] then): only an entry of an earlier
    /// generation may move to a wider key (see [`Engine::rules_rekey_tx`]).
    classify_gen: u8,
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
        classify_gen: 0,
    };

    /// The flow's class (or the default policy, for a flow of no class) has a new striping
    /// policy ([`super::Command::ReplacePolicies`]): it is what the flow's next lookup
    /// starts from.
    pub(super) fn set_class_policy(&mut self, policy: ClassPolicy) {
        self.class.policy = policy;
    }

    /// The tunnel table was replaced: the class's tunnel by its new index (`new_index`; the
    /// replacement checked that every class's tunnel has one).
    pub(super) fn remap_class_tunnel(&mut self, new_index: impl Fn(u8) -> Option<u8>) {
        self.class.tunnel = self.class.tunnel.and_then(new_index);
    }
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
    /// TX flows moved to their new key after a replacement widened the classification
    /// (their entry kept, not installed a second time: see the module doc).
    pub tx_flows_rekeyed_count: u64,
}

/// The most times the classification can widen: each widening turns on at least one of
/// ports, DSCP, VLAN and VNI, and none is ever turned off.
const MAX_WIDENINGS: usize = 4;

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
    /// The classifications in force before replacements widened it, most recent first
    /// (all of them, at most [`MAX_WIDENINGS`]; the slots past the widenings so far are
    /// unused): TX flows installed under one of them may still be in the table under their
    /// narrower key (see the module doc, "Widening"). A miss probes
    /// `narrower[..narrower_len]`, the widenings of the last idle timeout.
    narrower: [ClassifyConfig; MAX_WIDENINGS],
    narrower_len: usize,
    /// Until when `narrower` is tried: one TX idle timeout after the last widening, when
    /// every entry under a narrower key has moved or expired.
    rekey_until: Instant,
    /// How many times the classification has widened (at most [`MAX_WIDENINGS`]): the
    /// generation of the classification in force, recorded in each TX flow entry it keys
    /// (`FlowRules::classify_gen`). The classification of generation `g < classify_gen`
    /// is `narrower[classify_gen - 1 - g]`.
    classify_gen: u8,
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
            narrower: [config.classify; MAX_WIDENINGS],
            narrower_len: 0,
            rekey_until: Instant::ZERO,
            classify_gen: 0,
        })
    }

    /// The classification widened from `before`: remember it until `until`.
    fn widened(&mut self, before: ClassifyConfig, until: Instant) {
        // Most recent first; the oldest falls off (never, by MAX_WIDENINGS).
        self.narrower.copy_within(..MAX_WIDENINGS - 1, 1);
        self.narrower[0] = before;
        self.narrower_len = (self.narrower_len + 1).min(MAX_WIDENINGS);
        self.rekey_until = until;
        self.classify_gen = self.classify_gen.saturating_add(1);
    }

    /// `true` if a TX flow entry of generation `entry_gen`, found under `old` (the key
    /// `key` narrowed), is the flow of the packet keyed `key`: it was installed before a
    /// widening, under a classification that keys this packet as `old`. An entry installed
    /// since (a fragment's flow, whose key has no ports; a packet without the new field) is
    /// some other flow's, whose key happens to be `old` under the classification in force.
    fn keyed_before(&self, entry_gen: u8, key: &FlowKey, old: &FlowKey) -> bool {
        let Some(age) = self.classify_gen.checked_sub(entry_gen) else {
            return false;
        };
        // `narrower` keeps every classification of before (not only the `narrower_len`
        // probed): an entry kept alive under a key that a widening left unchanged (no
        // ports for ICMP) may be found through a later classification's narrowing.
        usize::from(age)
            .checked_sub(1)
            .and_then(|i| self.narrower.get(i))
            .is_some_and(|cfg| narrowed(key, cfg) == *old)
    }

    /// The tunnel table was replaced (now `count` tunnels): one RX lookup per tunnel, all
    /// stale, and the rewrite scratch if there are tunnels now. Between batches: it may
    /// allocate.
    pub(super) fn tunnels_replaced(&mut self, count: usize, vnic_mtu: u32) {
        self.tunnel_rx.clear();
        self.tunnel_rx.resize(count, RxRuleCache::STALE);
        if count > 0 && self.scratch.is_empty() {
            self.scratch = vec![0; vnic_mtu as usize];
        }
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
        self.rx_apply_tagged(cache, classify, packet, None)
    }

    /// [`Self::rx_apply`] for a packet whose VXLAN inner frame had an 802.1Q tag with VLAN
    /// id `vlan` (left out of `packet`): the key carries it (when the classification uses
    /// VLAN ids), and the rule that applies must pop it, else
    /// [`DropReason::TunnelVlanNotPopped`].
    pub(super) fn rx_apply_tagged(
        &mut self,
        cache: &mut RxRuleCache,
        classify: &ClassifyConfig,
        packet: &mut [u8],
        vlan: Option<u16>,
    ) -> Result<(), DropReason> {
        let untagged = || match vlan {
            Some(_) => Err(DropReason::TunnelVlanNotPopped),
            None => Ok(()),
        };
        if self.rx.set.is_empty() {
            return untagged();
        }
        // A packet that does not parse as IP matches no rule (the sender's engine parsed
        // it; a tunnel's inner packet was checked by the decapsulation).
        let Ok(summary) = IpSummary::parse_l3(packet) else {
            return untagged();
        };
        let mut key = RuleKey::from_flow_key(&FlowKey::from_summary(&summary, classify), VNIC);
        if classify.vlan {
            key.vlan = vlan;
        }
        if cache.key != Some(key) || cache.cache.version() != self.rx.set.version() {
            // Slow path: a new key on this flow, or a changed set.
            cache.cache = self.rx.set.classify(&key);
            cache.key = Some(key);
            self.stats.rx_lookups_count += 1;
        }
        let Some(rule) = cache.cache.rule() else {
            return untagged();
        };
        self.rx.count(rule, packet.len());
        let Some(ops) = self.rx.ops(rule) else {
            return untagged();
        };
        if ops.drop {
            return Err(DropReason::RuleDrop);
        }
        if vlan.is_some() && !ops.pop_vlan {
            return Err(DropReason::TunnelVlanNotPopped);
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

/// `key` as a classification narrower than its own (`cfg`, one the classification widened
/// from) keys the same packet: the fields `cfg` leaves out cleared. Equal to
/// `FlowKey::from_summary(s, cfg)` whenever `key` is `from_summary(s, wider)`.
fn narrowed(key: &FlowKey, cfg: &ClassifyConfig) -> FlowKey {
    let (src_port, dst_port) = if cfg.use_ports {
        (key.src_port, key.dst_port)
    } else {
        (0, 0)
    };
    FlowKey {
        src_port,
        dst_port,
        dscp: key.dscp.filter(|_| cfg.dscp),
        vlan: key.vlan.filter(|_| cfg.vlan),
        vni: key.vni.filter(|_| cfg.vni),
        ..*key
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

    /// Per-rule counters of the table in force in `direction`, by [`RuleIndex`] (one pair
    /// per rule; zeroed by a replacement: see [`RuleHits`]).
    #[must_use]
    pub fn rule_hits(&self, direction: RuleDirection) -> &[RuleHits] {
        match direction {
            RuleDirection::Tx => &self.rules.tx.hits,
            RuleDirection::Rx => &self.rules.rx.hits,
        }
    }

    /// The names of the rules in force in `direction`, by [`RuleIndex`], shared: cloning
    /// the `Arc` does not copy them (what a counter snapshot holds next to
    /// [`Self::rule_hits`]).
    #[must_use]
    pub fn rule_names(&self, direction: RuleDirection) -> &Arc<[String]> {
        match direction {
            RuleDirection::Tx => &self.rules.tx.names,
            RuleDirection::Rx => &self.rules.rx.names,
        }
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
        flow.rules.classify_gen = self.rules.classify_gen;
        flow.rules.cache = self
            .rules
            .tx
            .set
            .classify(&RuleKey::from_flow_key(key, VNIC));
        self.rules.stats.tx_lookups_count += 1;
        apply_overrides(&self.rules.tx.set, self.nic_set, flow);
    }

    /// **Slow path**, on a TX flow table miss for `key`, before a flow is installed: if a
    /// replacement widened the classification less than one idle timeout ago and the flow
    /// is still in the table under its key of before (the key narrowed to an earlier
    /// classification, by an entry installed under that classification: not one installed
    /// since, see `RulesRt::keyed_before`), its entry moves to `key` — same flow id,
    /// sequence, placement — and is returned with its slot. Its cached rule lookup is made
    /// stale: it was for the old key, and may be current (a packet that still keys as
    /// before, a fragment, looked it up again after the replacement), so the flow's next
    /// packet looks up the rule for its new key. `None`: install a new flow. At most
    /// [`MAX_WIDENINGS`] probes; none once the window has passed.
    pub(super) fn rules_rekey_tx(&mut self, now: Instant, key: &FlowKey) -> Option<(u32, TxFlow)> {
        if self.rules.narrower_len == 0 {
            return None;
        }
        if now >= self.rules.rekey_until {
            // Every entry of a narrower key has moved or idled out by now.
            self.rules.narrower_len = 0;
            return None;
        }
        for i in 0..self.rules.narrower_len {
            let old = narrowed(key, &self.rules.narrower[i]);
            if old == *key {
                continue;
            }
            let Some(entry) = self.tx_flows.peek(&old) else {
                continue;
            };
            if !self.rules.keyed_before(entry.rules.classify_gen, key, &old) {
                continue;
            }
            let Some(mut flow) = self.tx_flows.remove(&old) else {
                continue;
            };
            // Under its new key: of this generation, and its rule looked up again.
            flow.rules.classify_gen = self.rules.classify_gen;
            flow.rules.cache = CachedRule::STALE;
            // The removal made room, and `key` missed: the insert neither evicts nor fails.
            return match self.tx_flows.insert(*key, now, flow) {
                Ok(inserted) => {
                    let slot = inserted.slot;
                    if let Some((_, evicted)) = inserted.evicted {
                        self.controller.remove_flow(evicted.id);
                    }
                    self.rules.stats.tx_flows_rekeyed_count += 1;
                    Some((slot, flow))
                }
                Err(_) => {
                    self.controller.remove_flow(flow.id);
                    None
                }
            };
        }
        None
    }

    /// **Fast path** of every TX packet of an installed flow (the flow entry at `slot`, its
    /// copy `flow`): the cached rule if the set's version is the cached one; else the slow
    /// path looks the flow up again, re-applies the overrides and, if its policy, NICs or
    /// tunnel changed, places it again (the entry is updated). Counts the packet (`len`
    /// bytes) for its rule ([`RuleHits`]). Returns the rewrite to apply to the stored
    /// packet, if any.
    ///
    /// After a replacement or a condition flip every flow takes that slow path once, on its
    /// next packet (one tuple-space lookup, about a microsecond with 10 000 rules): the
    /// lookups are spread over the flows' next packets instead of stalling one batch with
    /// all of them, and a flow that never sends again costs none. Left so on purpose.
    ///
    /// # Errors
    /// [`DropReason::RuleDrop`] when the rule drops the flow's packets.
    pub(super) fn tx_rule(
        &mut self,
        now: Instant,
        slot: u32,
        flow: &mut TxFlow,
        key: &FlowKey,
        len: usize,
    ) -> Result<Option<Rewrite>, DropReason> {
        if flow.rules.cache.version() != self.rules.tx.set.version() {
            self.tx_relookup(now, slot, flow, key);
        }
        let Some(rule) = flow.rules.cache.rule() else {
            return Ok(None);
        };
        self.rules.tx.count(rule, len);
        match self.rules.tx.ops(rule) {
            Some(ops) if ops.drop => Err(DropReason::RuleDrop),
            Some(ops) if ops.edit_count > 0 || ops.push_vlan.is_some() => Ok(Some(Rewrite(rule))),
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
            // Placed again by its new policy: an operator's move and pin end
            // (`engine/flows.rs`).
            flow.moved = false;
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
            f.moved = flow.moved;
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
        if ops.push_vlan.is_some() {
            // A braid packet has no Ethernet header: the tag needs a VXLAN tunnel, which
            // the rule tables were checked to give every such flow (`check_vlan`).
            return Err(DropReason::RuleVlanNoTunnel);
        }
        if ops.edit_count == 0 {
            return Ok(());
        }
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
            return self.tunnel_tx(tunnel, flow, packet, None);
        };
        if ops.edit_count == 0 {
            // A VLAN tag only: the tunnel stage writes it in the inner Ethernet header.
            return self.tunnel_tx(tunnel, flow, packet, ops.push_vlan);
        }
        let mut scratch = core::mem::take(&mut self.rules.scratch);
        let verdict = match scratch.get_mut(..packet.len()) {
            Some(copy) => {
                copy.copy_from_slice(packet);
                match apply_l3(copy, ops.edits()) {
                    Ok(()) => {
                        self.rules.stats.tx_rewritten_count += 1;
                        self.tunnel_tx(tunnel, flow, copy, ops.push_vlan)
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
    /// the vNIC: the RX set, cached per tunnel. `vlan`: the VLAN id of the VXLAN inner
    /// frame's 802.1Q tag, already left out of `packet`; the rule that applies must pop it
    /// (and may match on it).
    ///
    /// # Errors
    /// The drop reason (the caller counts it).
    pub(in crate::engine) fn rules_rx_tunnel(
        &mut self,
        tunnel: u8,
        vlan: Option<u16>,
        packet: &mut [u8],
    ) -> Result<(), DropReason> {
        let Some(cache) = self.rules.tunnel_rx.get_mut(usize::from(tunnel)) else {
            return match vlan {
                Some(_) => Err(DropReason::TunnelVlanNotPopped),
                None => Ok(()),
            };
        };
        let mut c = *cache;
        let result = self
            .rules
            .rx_apply_tagged(&mut c, &self.config.classify, packet, vlan);
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
        self.check_rule_tables(&tx, &rx, &Env::of(&self.config))?;
        self.swap_rule_tables(now, tx, rx);
        Ok(())
    }

    /// The checks of [`Self::replace_rules`] against `tunnels` and `qos`, which a
    /// policy replacement installs together with the tables
    /// (`Command::ReplacePolicies`, `engine/policies.rs`), and the flow classes with their
    /// tunnels remapped to `tunnels` (`class_tunnel`: a class's tunnel index in force to
    /// its index in `tunnels`).
    ///
    /// # Errors
    /// As [`Self::replace_rules`].
    pub(super) fn check_rules_against(
        &self,
        tx: &RuleTable,
        rx: &RuleTable,
        tunnels: &[TunnelSpec],
        qos: &QosConfig,
        class_tunnel: impl Fn(u8) -> Option<u8>,
    ) -> Result<(), CommandError> {
        let env = Env::new(tunnels, qos, &self.config.classes, class_tunnel);
        self.check_rule_tables(tx, rx, &env)
    }

    fn check_rule_tables(
        &self,
        tx: &RuleTable,
        rx: &RuleTable,
        env: &Env,
    ) -> Result<(), CommandError> {
        if tx.direction != RuleDirection::Tx {
            return Err(CommandError::InvalidValue("tx"));
        }
        if rx.direction != RuleDirection::Rx {
            return Err(CommandError::InvalidValue("rx"));
        }
        let nics = self.nic_set;
        for t in [tx, rx] {
            // Built for another set of NICs: its conditions and striping were checked
            // against those. (An empty table names none.)
            if !t.rules.is_empty() && t.nics != nics {
                return Err(CommandError::InvalidValue(t.direction.field()));
            }
        }
        // What depends on the configuration the tables are to run with (the tunnels, the QoS
        // classes, the flow classes' tunnels), checked again: it may differ from the one
        // they were built against. The rest was checked by `RuleTable::build`.
        for t in [tx, rx] {
            check_actions(t.direction, &t.rules, env)
                .and_then(|()| check_vlan(t.direction, &t.rules, env))
                .map_err(CommandError::InvalidRules)?;
        }
        Ok(())
    }

    /// Swap in two tables that passed [`Self::check_rule_tables`].
    /// Keep the rule sets in force (a replacement with the same rules against the same
    /// tunnels and QoS classes): their conditions' state and counters stay; only their
    /// versions move, so every flow looks its rule up again on its next packet (its class's
    /// striping policy, which a lookup starts from, may have changed).
    pub(super) fn keep_rule_tables(&mut self) {
        self.rules.tx.set.invalidate();
        self.rules.rx.set.invalidate();
    }

    pub(super) fn swap_rule_tables(&mut self, now: Instant, tx: RuleTable, rx: RuleTable) {
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
                hits,
                names,
            } = new;
            drop(old.set.replace(set));
            old.ops = ops;
            old.has_conditions = has_conditions;
            // New counters with the new table (documented on `RuleHits`).
            old.hits = hits;
            old.names = names;
        }
        self.config.tx_rules = tx_rules;
        self.config.rx_rules = rx_rules;
        let before = self.config.classify;
        self.config.classify = self.rules.widen(before);
        if self.config.classify != before {
            // Installed flows keep their entries, moved to their new key on their next
            // packet (`rules_rekey_tx`).
            let until = now + self.tx_flows.config().idle_timeout;
            self.rules.widened(before, until);
        }
        self.rules.stats.sets_replaced_count += 1;
        // Conditions of a new set start off: evaluate them on the live state now.
        self.update_rule_conditions(now);
    }

    /// At build: the classification the rule sets need.
    pub(super) fn widen_classify_for_rules(&mut self) {
        self.config.classify = self.rules.widen(self.config.classify);
    }
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
