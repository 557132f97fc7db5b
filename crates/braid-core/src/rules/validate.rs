//! Validation of a rule set as a whole, before it is built.
//!
//! Owns: the checks and the problem report ([`ValidationErrors`]). Does not own the set itself
//! ([`super::RuleSet::build`] calls this first and builds only a set with no problem).
//!
//! What is checked, every problem naming the rules by index and name:
//!
//! - each rule: its match ([`MatchError`]), each action against the match and the
//!   configuration ([`ActionError`]: tunnel ids, QoS classes, NICs, VLAN on TUN vNICs, ...),
//!   its condition ([`ConditionError`]); names are unique;
//! - **conflicts**: two rules of the same priority whose matches overlap and whose actions
//!   differ (which one applies would depend on list order);
//! - **duplicates**: the same priority, match, condition and actions twice;
//! - **shadowed rules**: a rule whose match is entirely covered by one rule that wins over it
//!   (a better priority, or the same priority listed earlier) and has no condition, so it can
//!   never fire. A conditional rule shadows nothing (it may be off). Coverage by the *union*
//!   of several rules is not detected: only one covering rule is looked for.
//!
//! Every problem is collected, not only the first; the report keeps the first
//! [`super::RuleSetConfig::max_problems`] and counts the rest.
//!
//! Cost: per-rule checks are linear. The conflict check does not compare every pair of rules
//! of a priority level either: `super::overlap` splits the level on the fields its rules
//! differ in (prefixes, ports, VNI, ...) and compares only the rules no field tells apart,
//! `O(k log² k)` for `k` rules of one priority that are told apart by their fields (10 000
//! rules of one priority: milliseconds, where the pairwise loop took seconds), `O(k²)` only
//! when they really overlap. The shadow check does not compare all pairs: it reuses the
//! tuple-space index and probes, for each rule, only the tuples whose shape is coarser than
//! its own, in the bucket its values fall in.

use alloc::collections::BinaryHeap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use foldhash::fast::FixedState;
use hashbrown::HashMap;

use super::action::{Action, ActionError, CompiledActions, TunnelId, TunnelKind};
use super::condition::ConditionError;
use super::lookup::{Candidate, Order, TupleSpace, order};
use super::matcher::{IpFamily, MatchError, RuleMatch};
use super::overlap;
use super::{Rule, RuleIndex, RuleSetConfig};
use crate::flow::{IPPROTO_TCP, IPPROTO_UDP};
use crate::types::NicSet;

/// The layer of a vNIC: TUN devices carry IP packets, TAP devices Ethernet frames.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum VnicLayer {
    /// A TUN device: IP packets, no Ethernet header, no VLAN tag.
    Tun,
    /// A TAP device: Ethernet frames, VLAN tags possible.
    Tap,
}

/// A tunnel table entry as the validator needs it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TunnelRef {
    /// The id actions refer to.
    pub id: TunnelId,
    /// VXLAN or GRE.
    pub kind: TunnelKind,
}

/// VLAN on a TUN vNIC. A TUN packet has no Ethernet header, but a tunnel may give it one:
/// braid's engine writes and reads the inner Ethernet header of VXLAN (RFC 7348), which can
/// carry an 802.1Q tag. What the rules may then do; the default (both `false`) refuses every
/// VLAN action and match on a TUN vNIC ([`ActionError::VlanOnTunVnic`],
/// [`MatchError::VlanOnTunVnic`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct TunVlan {
    /// [`Action::PushVlan`] is allowed: the caller checks that every flow of such a rule is
    /// encapsulated with an inner Ethernet header (TX into a VXLAN tunnel).
    pub push: bool,
    /// [`Action::PopVlan`] and VLAN matches are allowed: tagged inner frames arrive through
    /// a tunnel (RX from a VXLAN tunnel), and the match sees their VLAN id.
    pub pop_and_match: bool,
}

/// What the rules are checked against: the rest of the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleContext {
    /// The configured NICs.
    pub nics: NicSet,
    /// The vNICs, by index (`RuleMatch::vnic`). Empty: a vNIC match is unknown, and VLAN
    /// actions are allowed.
    pub vnics: Vec<VnicLayer>,
    /// The tunnel table.
    pub tunnels: Vec<TunnelRef>,
    /// How many QoS priority classes exist (`0..qos_classes`). Default 8.
    pub qos_classes: u8,
    /// What VLAN actions and matches rules on a TUN vNIC may use. Default: none.
    pub tun_vlan: TunVlan,
}

impl RuleContext {
    /// A context with the given NICs, no vNIC, no tunnel and 8 priority classes.
    #[must_use]
    pub const fn new(nics: NicSet) -> Self {
        Self {
            nics,
            vnics: Vec::new(),
            tunnels: Vec::new(),
            qos_classes: 8,
            tun_vlan: TunVlan {
                push: false,
                pop_and_match: false,
            },
        }
    }

    /// `true` if a rule with this vNIC match may see packets of a TUN vNIC.
    fn may_be_tun(&self, vnic: Option<u16>) -> bool {
        match vnic {
            Some(v) => self.vnics.get(usize::from(v)) == Some(&VnicLayer::Tun),
            None => self.vnics.contains(&VnicLayer::Tun),
        }
    }
}

/// One problem of a rule set.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Problem {
    /// More rules than [`super::RuleSetConfig::max_rules`]; nothing else was checked.
    TooManyRules {
        /// Rules given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Two rules have the same name.
    DuplicateName {
        /// The later rule.
        rule: RuleIndex,
        /// The first rule with that name.
        first: RuleIndex,
    },
    /// A rule's match is invalid.
    InvalidMatch {
        /// The rule.
        rule: RuleIndex,
        /// Why.
        error: MatchError,
    },
    /// One of a rule's actions is invalid.
    InvalidAction {
        /// The rule.
        rule: RuleIndex,
        /// Position of the action in the rule's list.
        action: usize,
        /// Why.
        error: ActionError,
    },
    /// A rule's condition is invalid.
    InvalidCondition {
        /// The rule.
        rule: RuleIndex,
        /// Why.
        error: ConditionError,
    },
    /// Same priority, match, condition and actions as an earlier rule.
    Duplicate {
        /// The later rule.
        rule: RuleIndex,
        /// The earlier one.
        of: RuleIndex,
    },
    /// Same priority, overlapping matches, different actions.
    Conflict {
        /// The earlier rule.
        a: RuleIndex,
        /// The later rule.
        b: RuleIndex,
    },
    /// The rule can never fire: `by` covers its match and always wins.
    Shadowed {
        /// The rule that never fires.
        rule: RuleIndex,
        /// The rule that takes all its flows.
        by: RuleIndex,
    },
}

/// Writes `rule #i "name"`.
struct Named<'a>(RuleIndex, &'a [String]);

impl fmt::Display for Named<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule #{}", self.0.0)?;
        match self.1.get(self.0.0 as usize) {
            Some(name) if !name.is_empty() => write!(f, " {name:?}"),
            _ => Ok(()),
        }
    }
}

impl Problem {
    fn write(&self, f: &mut fmt::Formatter<'_>, names: &[String]) -> fmt::Result {
        let n = |i: RuleIndex| Named(i, names);
        match *self {
            Self::TooManyRules { count, max } => {
                write!(f, "{count} rules, more than the limit of {max}")
            }
            Self::DuplicateName { rule, first } => {
                write!(f, "{}: name already used by {}", n(rule), n(first))
            }
            Self::InvalidMatch { rule, error } => write!(f, "{}: match: {error}", n(rule)),
            Self::InvalidAction {
                rule,
                action,
                error,
            } => write!(f, "{}: action #{action}: {error}", n(rule)),
            Self::InvalidCondition { rule, error } => {
                write!(f, "{}: condition: {error}", n(rule))
            }
            Self::Duplicate { rule, of } => write!(f, "{}: duplicate of {}", n(rule), n(of)),
            Self::Conflict { a, b } => write!(
                f,
                "{} and {}: same priority, overlapping matches, different actions",
                n(a),
                n(b)
            ),
            Self::Shadowed { rule, by } => write!(
                f,
                "{}: shadowed by {}, which covers its match and wins, so it never fires",
                n(rule),
                n(by)
            ),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, &[])
    }
}

/// Why [`super::RuleSet::build`] refused a rule set: every problem found (the first
/// `max_problems` of them), with the rules' names for the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationErrors {
    problems: Vec<Problem>,
    total: usize,
    names: Vec<String>,
}

impl ValidationErrors {
    /// The problems kept (at most `max_problems`), in the order found.
    #[must_use]
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// How many problems were found, including those not kept.
    #[must_use]
    pub const fn total(&self) -> usize {
        self.total
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid rule set: {} problem(s)", self.total)?;
        for p in &self.problems {
            f.write_str("\n  - ")?;
            p.write(f, &self.names)?;
        }
        if self.total > self.problems.len() {
            write!(f, "\n  ... and {} more", self.total - self.problems.len())?;
        }
        Ok(())
    }
}

impl core::error::Error for ValidationErrors {}

/// A bounded problem list.
struct Report {
    problems: Vec<Problem>,
    total: usize,
    max: usize,
}

impl Report {
    fn push(&mut self, p: Problem) {
        self.total += 1;
        if self.problems.len() < self.max {
            self.problems.push(p);
        }
    }
}

/// The `room` smallest items offered, and how many others there were: the first problems
/// in report order, without holding every problem of a set where all rules conflict.
struct Smallest<T: Ord> {
    room: usize,
    heap: BinaryHeap<T>,
    rest: usize,
}

impl<T: Ord> Smallest<T> {
    fn new(room: usize) -> Self {
        Self {
            room,
            heap: BinaryHeap::new(),
            rest: 0,
        }
    }

    fn offer(&mut self, item: T) {
        if self.heap.len() < self.room {
            self.heap.push(item);
            return;
        }
        self.rest += 1;
        if let Some(mut largest) = self.heap.peek_mut()
            && item < *largest
        {
            *largest = item;
        }
    }

    /// The kept items in ascending order, and the count of the others.
    fn into_sorted(self) -> (Vec<T>, usize) {
        (self.heap.into_sorted_vec(), self.rest)
    }
}

/// A valid rule as the shadow check indexes it.
struct Entry {
    matcher: RuleMatch,
    order: Order,
}

impl Candidate for Entry {
    fn matcher(&self) -> &RuleMatch {
        &self.matcher
    }
    fn order(&self) -> Order {
        self.order
    }
    fn active(&self) -> bool {
        true
    }
}

fn idx(i: usize) -> RuleIndex {
    RuleIndex(u32::try_from(i).unwrap_or(u32::MAX))
}

/// Check `rules` as a set; `Ok` if there is no problem.
pub(super) fn validate(
    rules: &[Rule],
    ctx: &RuleContext,
    config: &RuleSetConfig,
) -> Result<(), ValidationErrors> {
    let mut report = Report {
        problems: Vec::new(),
        total: 0,
        max: config.max_problems.max(1),
    };
    let fail = |report: Report| ValidationErrors {
        problems: report.problems,
        total: report.total,
        names: rules.iter().map(|r| r.name.clone()).collect(),
    };
    if rules.len() > config.max_rules || u32::try_from(rules.len()).is_err() {
        report.push(Problem::TooManyRules {
            count: rules.len(),
            max: config.max_rules,
        });
        return Err(fail(report));
    }

    let mut names: HashMap<&str, usize, FixedState> =
        HashMap::with_capacity_and_hasher(rules.len(), FixedState::with_seed(config.hash_seed));
    for (i, r) in rules.iter().enumerate().filter(|(_, r)| !r.name.is_empty()) {
        if let Some(&first) = names.get(r.name.as_str()) {
            report.push(Problem::DuplicateName {
                rule: idx(i),
                first: idx(first),
            });
        } else {
            names.insert(r.name.as_str(), i);
        }
    }

    // Per rule. Only rules with a valid match take part in the set checks.
    let mut valid = Vec::with_capacity(rules.len());
    for (i, r) in rules.iter().enumerate() {
        valid.push(check_rule(i, r, ctx, &mut report));
    }
    let compiled: Vec<CompiledActions> = rules
        .iter()
        .map(|r| CompiledActions::compile(&r.actions))
        .collect();
    let same = |a: usize, b: usize| {
        rules[a].matcher == rules[b].matcher
            && rules[a].condition == rules[b].condition
            && compiled[a] == compiled[b]
    };

    // Conflicts and duplicates: every overlapping pair within each priority level (found
    // by `overlap`, which does not compare every pair), reported in the order of a pairwise
    // loop — by the first rule, then the second — so the problems kept are the same.
    let mut by_priority: Vec<usize> = (0..rules.len()).filter(|&i| valid[i]).collect();
    by_priority.sort_by_key(|&i| (rules[i].priority, i));
    for level in by_priority.chunk_by(|&a, &b| rules[a].priority == rules[b].priority) {
        let matchers: Vec<RuleMatch> = level.iter().map(|&i| rules[i].matcher).collect();
        let mut first = Smallest::new(report.max.saturating_sub(report.problems.len()));
        overlap::overlapping_pairs(&matchers, |x, y| {
            // `level` is in list order, so x < y means level[x] is listed first.
            let (a, b) = (level[x], level[y]);
            if compiled[a] != compiled[b] {
                first.offer((a, b, false));
            } else if same(a, b) {
                first.offer((a, b, true));
            }
        });
        let (kept, rest) = first.into_sorted();
        for (a, b, duplicate) in kept {
            report.push(if duplicate {
                Problem::Duplicate {
                    rule: idx(b),
                    of: idx(a),
                }
            } else {
                Problem::Conflict {
                    a: idx(a),
                    b: idx(b),
                }
            });
        }
        report.total += rest;
    }

    // Shadowed rules, through the tuple-space index of the valid rules.
    let valid_idx: Vec<usize> = (0..rules.len()).filter(|&i| valid[i]).collect();
    let entries: Vec<Entry> = valid_idx
        .iter()
        .map(|&i| Entry {
            matcher: rules[i].matcher,
            order: order(rules[i].priority, idx(i).0),
        })
        .collect();
    let space = TupleSpace::build(&entries, config.hash_seed);
    for (e, &r) in valid_idx.iter().enumerate() {
        let mine = entries[e].order;
        let by = space
            .covering_candidates(&entries[e].matcher)
            .filter_map(|c| {
                let s = valid_idx[c as usize];
                let already_reported = rules[s].priority == rules[r].priority
                    && (compiled[s] != compiled[r] || same(s, r));
                (s != r
                    && entries[c as usize].order < mine
                    && rules[s].condition.is_none()
                    && !already_reported
                    && rules[s].matcher.covers(&rules[r].matcher))
                .then_some((entries[c as usize].order, s))
            })
            .min();
        if let Some((_, s)) = by {
            report.push(Problem::Shadowed {
                rule: idx(r),
                by: idx(s),
            });
        }
    }

    if report.total == 0 {
        Ok(())
    } else {
        Err(fail(report))
    }
}

/// The per-rule checks; `true` if the match is valid.
fn check_rule(i: usize, r: &Rule, ctx: &RuleContext, report: &mut Report) -> bool {
    let rule = idx(i);
    let m = &r.matcher;
    let mut match_ok = true;
    let mut bad_match = |error| {
        report.push(Problem::InvalidMatch { rule, error });
        false
    };
    if let Err(error) = m.check() {
        match_ok = bad_match(error);
    }
    if let Some(v) = m.vnic
        && usize::from(v) >= ctx.vnics.len()
    {
        match_ok = bad_match(MatchError::UnknownVnic(v));
    }
    let may_be_tun = ctx.may_be_tun(m.vnic);
    if m.vlan.is_some() && may_be_tun && !ctx.tun_vlan.pop_and_match {
        match_ok = bad_match(MatchError::VlanOnTunVnic);
    }

    let decaps = r
        .actions
        .iter()
        .any(|a| matches!(a, Action::VxlanDecap | Action::GreDecap));
    let mut seen_slots = 0u32;
    let mut stage = None;
    for (j, a) in r.actions.iter().enumerate() {
        let mut bad = |error| {
            report.push(Problem::InvalidAction {
                rule,
                action: j,
                error,
            });
        };
        let slot = 1u32 << a.slot();
        if seen_slots & slot != 0 {
            bad(ActionError::Repeated);
        }
        seen_slots |= slot;
        if let Some(s) = a.stage() {
            if stage.is_some_and(|last| s < last) {
                bad(ActionError::OutOfOrder);
            }
            stage = stage.max(Some(s));
        }
        if let Err(error) = check_action(a, m, ctx, decaps, may_be_tun) {
            bad(error);
        }
        if *a == Action::Drop && r.actions.len() > 1 {
            bad(ActionError::DropWithOthers);
        }
    }

    if let Some(c) = &r.condition
        && let Err(error) = c.check(ctx.nics)
    {
        report.push(Problem::InvalidCondition { rule, error });
    }
    match_ok
}

/// One action against the rule's match and the context. `decaps`: the rule removes a tunnel,
/// so rewrites apply to an inner packet whose version and protocol the match does not fix
/// (the rewrite stage checks them per packet).
fn check_action(
    a: &Action,
    m: &RuleMatch,
    ctx: &RuleContext,
    decaps: bool,
    may_be_tun: bool,
) -> Result<(), ActionError> {
    let tunnel = |id: TunnelId, kind: TunnelKind| match ctx.tunnels.iter().find(|t| t.id == id) {
        None => Err(ActionError::UnknownTunnel(id)),
        Some(t) if t.kind != kind => Err(ActionError::TunnelKindMismatch(id)),
        Some(_) => Ok(()),
    };
    match *a {
        Action::SetDscp(v) if v > 63 => Err(ActionError::DscpOutOfRange(v)),
        Action::SetEcn(v) if v > 3 => Err(ActionError::EcnOutOfRange(v)),
        Action::SetTtl(0) => Err(ActionError::TtlZero),
        Action::SetSrcAddr(addr) | Action::SetDstAddr(addr) if !decaps => match m.family() {
            None => Err(ActionError::AddressNeedsFamily),
            Some(f) if f != IpFamily::of(addr) => Err(ActionError::AddressFamilyMismatch),
            Some(_) => Ok(()),
        },
        Action::SetSrcPort(_) | Action::SetDstPort(_)
            if !decaps && !matches!(m.protocol, Some(IPPROTO_TCP | IPPROTO_UDP)) =>
        {
            Err(ActionError::PortRewriteNeedsTcpOrUdp)
        }
        Action::PushVlan(_) if may_be_tun && !ctx.tun_vlan.push => Err(ActionError::VlanOnTunVnic),
        Action::PopVlan if may_be_tun && !ctx.tun_vlan.pop_and_match => {
            Err(ActionError::VlanOnTunVnic)
        }
        Action::PushVlan(t) if !(1..=4094).contains(&t.vid) => {
            Err(ActionError::VlanOutOfRange(t.vid))
        }
        Action::PushVlan(t) if t.pcp > 7 => Err(ActionError::PcpOutOfRange(t.pcp)),
        Action::VxlanEncap(id) => tunnel(id, TunnelKind::Vxlan),
        Action::GreEncap(id) => tunnel(id, TunnelKind::Gre),
        Action::SetPriorityClass(c) if c.0 >= ctx.qos_classes => {
            Err(ActionError::UnknownPriorityClass(c))
        }
        Action::Stripe(s) if s.nics.and(ctx.nics).is_empty() => Err(ActionError::NoUsableNics),
        _ => Ok(()),
    }
}
