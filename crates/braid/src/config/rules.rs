//! `[[rules]]`: the rule engine's match → actions rules, with conditions on live link state,
//! and their check and translation into the engine's rule lists (TX and RX).
//!
//! What this file owns: the section's checks field by field (its schema is braid-control's
//! `RuleSection`, the REST API's: one schema), the translation
//! into braid-core's [`Rule`]s, and the set-level check (conflicts, shadowed rules: the
//! engine's [`RuleTable::build`], its problems reported against the file's `rules[i]` and
//! field names). What it does not: matching and applying rules (braid-core's `rules` and
//! `engine/rules.rs`), replacing them in a running daemon (`run::apply_policies`).

use std::net::IpAddr;

use anyhow::{Context, Result, bail};
use braid_control::schema::{
    DirectionName, RuleSection, TunnelKindName, TunnelSection, WhenSection,
};
use braid_core::NicSet;
use braid_core::engine::{RuleDirection, RuleTable, RulesError};
use braid_core::qos::ClassId;
use braid_core::rules::{
    Action, Condition, DscpSet, IpPrefix, Metric, PortRange, Problem, QosClass, Rule, RuleIndex,
    RuleMatch, Striping, TunnelId, VlanTag,
};

use super::{NicPlan, Plan, class_policy, parse_port_range, parse_prefix};

/// Where a translated rule came from: its entry in the file and, per action, the field.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Source {
    index: usize,
    fields: Vec<&'static str>,
}

/// `[[rules]]` translated: the engine's TX and RX lists, each rule traced to its entry.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct RulePlan {
    /// For [`braid_core::engine::EngineConfig::tx_rules`].
    pub tx: Vec<Rule>,
    /// For [`braid_core::engine::EngineConfig::rx_rules`].
    pub rx: Vec<Rule>,
    tx_src: Vec<Source>,
    rx_src: Vec<Source>,
}

/// What the rules refer to by name.
pub(crate) struct Names<'a> {
    /// The NICs.
    pub nics: &'a [NicPlan],
    /// `[[qos.classes]]` names, by class id.
    pub qos: &'a [String],
    /// `[[tunnels]]`, by id.
    pub tunnels: &'a [TunnelSection],
}

/// Check `[[rules]]` field by field and translate it.
pub(crate) fn check(rules: &[RuleSection], names: &Names<'_>) -> Result<RulePlan> {
    let mut plan = RulePlan::default();
    for (i, r) in rules.iter().enumerate() {
        let at = |f: &str| format!("rules[{i}].{f}");
        if r.name.is_empty() || rules[..i].iter().any(|o| o.name == r.name) {
            bail!("{}: {:?} is empty or used twice", at("name"), r.name);
        }
        let (matcher, rule_nics) = rule_match(r, names.nics, &at)?;
        let (actions, fields) = actions(r, names, &at)?;
        if actions.is_empty() {
            bail!(
                "rules[{i}] ({:?}): no action (set_*, push_vlan, pop_vlan, qos, policy, tunnel \
                 or drop)",
                r.name
            );
        }
        let mut rule = Rule::new(&r.name, r.priority, matcher, &actions);
        if let Some(w) = &r.when {
            rule = rule.when(condition(w, names.nics, rule_nics, &at)?);
        }
        let src = Source { index: i, fields };
        match r.direction {
            DirectionName::Tx => {
                plan.tx.push(rule);
                plan.tx_src.push(src);
            }
            DirectionName::Rx => {
                plan.rx.push(rule);
                plan.rx_src.push(src);
            }
        }
    }
    Ok(plan)
}

fn rule_match(
    r: &RuleSection,
    nics: &[NicPlan],
    at: &dyn Fn(&str) -> String,
) -> Result<(RuleMatch, NicSet)> {
    let protocol = match r.protocol.as_deref() {
        None => None,
        Some("udp") => Some(17),
        Some("tcp") => Some(6),
        Some(p) => Some(p.parse::<u8>().map_err(|_| {
            anyhow::anyhow!("{}: {p:?} must be udp, tcp or 0..=255", at("protocol"))
        })?),
    };
    let prefix = |s: &Option<String>, f: &str| -> Result<Option<IpPrefix>> {
        let Some(s) = s else { return Ok(None) };
        let (addr, len) = parse_prefix(s).with_context(|| format!("{}: {s:?}", at(f)))?;
        IpPrefix::new(addr, len)
            .map(Some)
            .map_err(|_| anyhow::anyhow!("{}: {s:?} has bits set beyond the prefix length", at(f)))
    };
    let ports = |s: &Option<String>, f: &str| -> Result<Option<PortRange>> {
        s.as_deref()
            .map(|s| {
                let (lo, hi) = parse_port_range(s).with_context(|| at(f))?;
                if !matches!(protocol, Some(6 | 17)) {
                    bail!("{}: needs protocol = \"udp\" or \"tcp\"", at(f));
                }
                Ok(PortRange::new(lo, hi))
            })
            .transpose()
    };
    if r.dscp.is_some_and(|d| d > 63) {
        bail!("{}: must be 0..=63", at("dscp"));
    }
    if r.vlan.is_some_and(|v| !(1..=4094).contains(&v)) {
        bail!("{}: must be 1..=4094", at("vlan"));
    }
    if r.vni.is_some_and(|v| v > 0x00ff_ffff) {
        bail!("{}: must be 0..=16777215 (24 bits)", at("vni"));
    }
    let m = RuleMatch {
        src: prefix(&r.src, "src")?,
        dst: prefix(&r.dst, "dst")?,
        protocol,
        src_ports: ports(&r.src_ports, "src_ports")?,
        dst_ports: ports(&r.dst_ports, "dst_ports")?,
        dscp: r.dscp.map(DscpSet::single),
        vlan: r.vlan,
        vni: r.vni,
        vnic: None,
    };
    if let (Some(s), Some(d)) = (m.src, m.dst)
        && s.family() != d.family()
    {
        bail!("{}: not the IP version of src", at("dst"));
    }
    let rule_nics = match &r.nics {
        Some(list) => nic_set(list, nics, &at("nics"))?,
        None => NicSet::ALL,
    };
    Ok((m, rule_nics))
}

fn nic_set(list: &[String], nics: &[NicPlan], field: &str) -> Result<NicSet> {
    let mut set = NicSet::EMPTY;
    for name in list {
        let nic = nics
            .iter()
            .find(|n| &n.name == name)
            .with_context(|| format!("{field}: no NIC is named {name:?}"))?;
        set.insert(nic.id);
    }
    if set.is_empty() {
        bail!("{field}: empty; leave it out to use every NIC");
    }
    Ok(set)
}

/// The actions in the rule engine's pipeline order (rewrites, then the tunnel; metadata),
/// with the field each came from.
fn actions(
    r: &RuleSection,
    names: &Names<'_>,
    at: &dyn Fn(&str) -> String,
) -> Result<(Vec<Action>, Vec<&'static str>)> {
    let mut out = Vec::new();
    let mut push = |a: Action, f: &'static str| out.push((a, f));
    let addr = |s: &str, f: &str| -> Result<IpAddr> {
        s.parse()
            .map_err(|_| anyhow::anyhow!("{}: {s:?} is not an IP address", at(f)))
    };
    if r.pop_vlan {
        push(Action::PopVlan, "pop_vlan");
    }
    if let Some(v) = r.set_dscp {
        if v > 63 {
            bail!("{}: must be 0..=63", at("set_dscp"));
        }
        push(Action::SetDscp(v), "set_dscp");
    }
    if let Some(v) = r.set_ecn {
        if v > 3 {
            bail!("{}: must be 0..=3", at("set_ecn"));
        }
        push(Action::SetEcn(v), "set_ecn");
    }
    if let Some(v) = r.set_ttl {
        if v == 0 {
            bail!(
                "{}: must be 1..=255 (the next hop discards 0)",
                at("set_ttl")
            );
        }
        push(Action::SetTtl(v), "set_ttl");
    }
    if let Some(s) = &r.set_src {
        push(Action::SetSrcAddr(addr(s, "set_src")?), "set_src");
    }
    if let Some(s) = &r.set_dst {
        push(Action::SetDstAddr(addr(s, "set_dst")?), "set_dst");
    }
    if let Some(p) = r.set_src_port {
        push(Action::SetSrcPort(p), "set_src_port");
    }
    if let Some(p) = r.set_dst_port {
        push(Action::SetDstPort(p), "set_dst_port");
    }
    match (r.push_vlan, r.vlan_pcp) {
        (Some(vid), pcp) => {
            if !(1..=4094).contains(&vid) {
                bail!("{}: must be 1..=4094", at("push_vlan"));
            }
            let pcp = pcp.unwrap_or(0);
            if pcp > 7 {
                bail!("{}: must be 0..=7", at("vlan_pcp"));
            }
            push(Action::PushVlan(VlanTag { vid, pcp }), "push_vlan");
        }
        (None, Some(_)) => bail!("{}: only with push_vlan", at("vlan_pcp")),
        (None, None) => {}
    }
    if let Some(name) = &r.tunnel {
        let id = names
            .tunnels
            .iter()
            .position(|t| &t.name == name)
            .with_context(|| {
                format!(
                    "{}: no [[tunnels]] entry is named {name:?} (there are {:?})",
                    at("tunnel"),
                    names
                        .tunnels
                        .iter()
                        .map(|t| t.name.as_str())
                        .collect::<Vec<_>>()
                )
            })?;
        let id = TunnelId(u16::try_from(id).expect("invariant: at most MAX_TUNNELS tunnels"));
        push(
            match names.tunnels[usize::from(id.0)].kind {
                TunnelKindName::Vxlan => Action::VxlanEncap(id),
                TunnelKindName::Gre => Action::GreEncap(id),
            },
            "tunnel",
        );
    }
    if let Some(name) = &r.qos {
        let id = names.qos.iter().position(|n| n == name).with_context(|| {
            format!(
                "{}: no [[qos.classes]] entry is named {name:?} (there are {:?})",
                at("qos"),
                names.qos
            )
        })?;
        let id = ClassId(u8::try_from(id).expect("invariant: at most 8 qos classes"));
        push(Action::SetPriorityClass(QosClass(id.0)), "qos");
    }
    match (r.policy, &r.nics) {
        (Some(p), nics) => {
            let nics = match nics {
                Some(list) => nic_set(list, names.nics, &at("nics"))?,
                None => NicSet::ALL,
            };
            push(
                Action::Stripe(Striping {
                    policy: class_policy(p),
                    nics,
                }),
                "policy",
            );
        }
        (None, Some(_)) => bail!("{}: needs policy (pin, stripe or duplicate)", at("nics")),
        (None, None) => {}
    }
    if r.drop {
        push(Action::Drop, "drop");
    }
    Ok(out.into_iter().unzip())
}

fn condition(
    w: &WhenSection,
    nics: &[NicPlan],
    rule_nics: NicSet,
    at: &dyn Fn(&str) -> String,
) -> Result<Condition> {
    let at = |f: &str| at(&format!("when.{f}"));
    let links = match &w.links {
        Some(list) => nic_set(list, nics, &at("links"))?,
        // A rule that names NICs watches those; otherwise every NIC.
        None => rule_nics,
    };
    let given = [
        w.loss_above_percent.is_some(),
        w.rtt_above_ms.is_some(),
        w.degraded_links.is_some(),
        w.down_links.is_some(),
    ];
    if given.iter().filter(|&&g| g).count() != 1 {
        bail!(
            "{}: give exactly one of loss_above_percent, rtt_above_ms, degraded_links, \
             down_links",
            at("").trim_end_matches('.')
        );
    }
    if w.below_percent.is_some() && w.loss_above_percent.is_none() {
        bail!("{}: only with loss_above_percent", at("below_percent"));
    }
    if w.below_ms.is_some() && w.rtt_above_ms.is_none() {
        bail!("{}: only with rtt_above_ms", at("below_ms"));
    }
    let finite = |v: f64, f: &str, max: f64| -> Result<f64> {
        if !(v.is_finite() && v >= 0.0 && v <= max) {
            bail!("{}: {v} must be between 0 and {max}", at(f));
        }
        Ok(v)
    };
    // In range (checked), so the casts neither saturate nor lose more than the rounding.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let round = |v: f64| v.round() as u32;
    let (metric, on, off) = if let Some(above) = w.loss_above_percent {
        let above = finite(above, "loss_above_percent", 100.0)?;
        let below = finite(
            w.below_percent.unwrap_or(above / 2.0),
            "below_percent",
            100.0,
        )?;
        // Percent to the engine's permille (probe loss is measured in 0.1 % steps at best).
        (
            Metric::LossPermille,
            round(above * 10.0),
            round(below * 10.0),
        )
    } else if let Some(above) = w.rtt_above_ms {
        let above = finite(above, "rtt_above_ms", 60_000.0)?;
        let below = finite(w.below_ms.unwrap_or(above / 2.0), "below_ms", 60_000.0)?;
        (
            Metric::RttMicros,
            round(above * 1000.0),
            round(below * 1000.0),
        )
    } else if let Some(n) = w.degraded_links {
        (Metric::LinksDegraded, n, n.saturating_sub(1))
    } else {
        let n = w.down_links.unwrap_or(1);
        (Metric::LinksDown, n, n.saturating_sub(1))
    };
    let (f_on, f_off) = match metric {
        Metric::LossPermille => ("loss_above_percent", "below_percent"),
        Metric::RttMicros => ("rtt_above_ms", "below_ms"),
        Metric::LinksDegraded => ("degraded_links", "degraded_links"),
        Metric::LinksDown => ("down_links", "down_links"),
    };
    if on == 0 {
        bail!("{}: must be above 0", at(f_on));
    }
    if off >= on {
        bail!(
            "{}: must be below {f_on} (the band between them is the hysteresis)",
            at(f_off)
        );
    }
    Ok(Condition {
        metric,
        links,
        aggregate: braid_core::rules::Aggregate::Worst,
        on_at: on,
        off_at: off,
        min_hold: std::time::Duration::from_millis(u64::from(w.hold_ms)),
    })
}

/// The set-level check of a plan's rules: build both tables against the engine
/// configuration the plan gives (any link MTU and capacity will do: rules depend on the
/// NICs, tunnels and QoS classes only), with every problem reported against the file.
pub(crate) fn check_sets(plan: &Plan) -> Result<()> {
    build_tables(plan).map(drop)
}

/// Both tables for `plan`, ready for the engine (`Command::ReplaceRules`).
pub(crate) fn build_tables(plan: &Plan) -> Result<(RuleTable, RuleTable)> {
    let n = plan.nics.len();
    let cfg = plan.engine_config(&vec![1500; n], &vec![1_000_000_000; n]);
    let r = &plan.rules;
    let tx = RuleTable::build(&cfg, RuleDirection::Tx, r.tx.clone())
        .map_err(|e| r.explain(&e, &plan.file.rules))?;
    let rx = RuleTable::build(&cfg, RuleDirection::Rx, r.rx.clone())
        .map_err(|e| r.explain(&e, &plan.file.rules))?;
    Ok((tx, rx))
}

impl RulePlan {
    /// The engine's refusal, said in the file's terms (`rules[i]`, the field).
    fn explain(&self, e: &RulesError, file: &[RuleSection]) -> anyhow::Error {
        let src = |d: RuleDirection| match d {
            RuleDirection::Tx => &self.tx_src,
            RuleDirection::Rx => &self.rx_src,
        };
        let name = |d: RuleDirection, r: RuleIndex| {
            let s = src(d).get(r.0 as usize);
            let i = s.map_or(usize::MAX, |s| s.index);
            let n = file.get(i).map_or("", |f| f.name.as_str());
            format!("rules[{i}] ({n:?})")
        };
        let field = |d: RuleDirection, r: RuleIndex, action: usize| {
            src(d)
                .get(r.0 as usize)
                .and_then(|s| s.fields.get(action))
                .copied()
                .unwrap_or("actions")
        };
        match e {
            RulesError::Unsupported { refusal, .. } => match refusal.action {
                Some(action) => anyhow::anyhow!(
                    "{}.{}: {}",
                    name(refusal.direction, refusal.rule),
                    field(refusal.direction, refusal.rule, action as usize),
                    refusal.why
                ),
                // The rule's match, with the actions it has or lacks.
                None => anyhow::anyhow!(
                    "{}: match: {}",
                    name(refusal.direction, refusal.rule),
                    refusal.why
                ),
            },
            RulesError::Invalid { direction, errors } => {
                let d = *direction;
                let lines: Vec<String> = errors
                    .problems()
                    .iter()
                    .map(|p| match *p {
                        Problem::InvalidMatch { rule, error } => {
                            format!("{}: match: {error}", name(d, rule))
                        }
                        Problem::InvalidAction {
                            rule,
                            action,
                            error,
                        } => format!("{}.{}: {error}", name(d, rule), field(d, rule, action)),
                        Problem::InvalidCondition { rule, error } => {
                            format!("{}.when: {error}", name(d, rule))
                        }
                        Problem::Conflict { a, b } => format!(
                            "{} and {}: same priority, overlapping matches, different \
                             actions (which one applies would depend on their order)",
                            name(d, a),
                            name(d, b)
                        ),
                        Problem::Duplicate { rule, of } => {
                            format!("{}: the same as {}", name(d, rule), name(d, of))
                        }
                        Problem::Shadowed { rule, by } => format!(
                            "{}: shadowed by {}, which matches all its packets and wins, so \
                             it never applies",
                            name(d, rule),
                            name(d, by)
                        ),
                        ref other => other.to_string(),
                    })
                    .collect();
                let more = errors.total() - lines.len();
                let mut text = lines.join("; ");
                if more > 0 {
                    text += &format!("; and {more} more");
                }
                anyhow::anyhow!("rules: {text}")
            }
            _ => anyhow::anyhow!("rules: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use braid_core::NicId;
    use braid_core::engine::ClassPolicy;
    use braid_core::rules::{Aggregate, PortRange};

    use super::super::Config;
    use super::super::tests::{assert_errors_name, err};
    use super::*;

    const BASE: &str = r#"
[vnic]
name = "braid0"
mtu = 1400

[peer]
role = "a"

[[nics]]
name = "link0"
device = "veth0"
local = "10.77.0.1:7700"
peer = "10.77.0.2:7700"
capacity = "1gbit"

[[nics]]
name = "link1"
device = "veth1"
local = "10.77.1.1:7700"
peer = "10.77.1.2:7700"
capacity = "1gbit"

[[tunnels]]
name = "gre"
kind = "gre"
nic = "link0"
local = "10.77.0.1"
remote = "10.77.0.2"

[qos]
[[qos.classes]]
name = "feed"
strict = true

[[qos.classes]]
name = "bulk"

[[qos.classes]]
name = "gold"
weight = 4

[[rules]]
name = "nat"
priority = 10
protocol = "udp"
dst = "10.99.0.0/24"
dst_ports = "5000-5009"
set_dst = "192.0.2.7"
set_dst_port = 8080
set_dscp = 46
qos = "gold"

[[rules]]
name = "dup-while-lossy"
priority = 5
protocol = "udp"
dst_ports = "7000"
policy = "duplicate"
when = { loss_above_percent = 1.0, below_percent = 0.5, links = ["link0"], hold_ms = 500 }

[[rules]]
name = "pin-ssh"
protocol = "tcp"
dst_ports = "22"
policy = "pin"
nics = ["link1"]

[[rules]]
name = "to-gre"
protocol = "udp"
dst_ports = "6000"
set_ttl = 9
tunnel = "gre"

[[rules]]
name = "un-nat"
direction = "rx"
src = "192.0.2.7/32"
set_src = "10.99.0.2"

[[rules]]
name = "block"
direction = "rx"
priority = 50
protocol = "udp"
src_ports = "53"
drop = true

[daemon]
"#;

    #[test]
    fn rules_translate() {
        let plan = Config::parse(BASE).unwrap();
        let r = &plan.rules;
        assert_eq!(
            r.tx.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["nat", "dup-while-lossy", "pin-ssh", "to-gre"]
        );
        assert_eq!(
            r.rx.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["un-nat", "block"]
        );
        let nat = &r.tx[0];
        assert_eq!(nat.priority, 10);
        assert_eq!(nat.matcher.protocol, Some(17));
        assert_eq!(nat.matcher.dst_ports, Some(PortRange::new(5000, 5009)));
        assert_eq!(
            nat.matcher.dst,
            Some(IpPrefix::new("10.99.0.0".parse().unwrap(), 24).unwrap())
        );
        assert_eq!(
            nat.actions,
            [
                Action::SetDscp(46),
                Action::SetDstAddr("192.0.2.7".parse().unwrap()),
                Action::SetDstPort(8080),
                Action::SetPriorityClass(QosClass(2)),
            ]
        );
        assert_eq!(nat.condition, None);
        let dup = &r.tx[1];
        assert_eq!(
            dup.actions,
            [Action::Stripe(Striping {
                policy: ClassPolicy::Duplicate,
                nics: NicSet::ALL
            })]
        );
        assert_eq!(
            dup.condition,
            Some(Condition {
                metric: Metric::LossPermille,
                links: NicSet::single(NicId(0)),
                aggregate: Aggregate::Worst,
                on_at: 10,
                off_at: 5,
                min_hold: std::time::Duration::from_millis(500),
            })
        );
        assert_eq!(
            r.tx[2].actions,
            [Action::Stripe(Striping {
                policy: ClassPolicy::Pin,
                nics: NicSet::single(NicId(1))
            })]
        );
        assert_eq!(
            r.tx[3].actions,
            [Action::SetTtl(9), Action::GreEncap(TunnelId(0))]
        );
        assert_eq!(r.rx[1].actions, [Action::Drop]);
        // Into the engine: valid, and the engine builds them.
        let cfg = plan.engine_config(&[1500, 1500], &[1_000_000_000; 2]);
        assert_eq!(cfg.tx_rules, r.tx);
        assert_eq!(cfg.rx_rules, r.rx);
        cfg.validate().unwrap();
        let (tx, rx) = build_tables(&plan).unwrap();
        assert_eq!((tx.rules().len(), rx.rules().len()), (4, 2));
        // Without [[rules]]: empty lists.
        let start = BASE.find("[[rules]]").unwrap();
        let none = Config::parse(&format!("{}[daemon]\n", &BASE[..start])).unwrap();
        assert!(none.rules.tx.is_empty() && none.rules.rx.is_empty());
    }

    #[test]
    fn rule_errors_name_the_rule_and_field() {
        Config::parse(BASE).unwrap();
        let cases = [
            ("set_dscp = 46", "set_dscp = 64", "rules[0].set_dscp"),
            (
                "set_dst = \"192.0.2.7\"",
                "set_dst = \"nowhere\"",
                "rules[0].set_dst",
            ),
            (
                "dst = \"10.99.0.0/24\"",
                "dst = \"10.99.0.0/33\"",
                "rules[0].dst",
            ),
            (
                "dst = \"10.99.0.0/24\"",
                "dst = \"10.99.0.1/24\"",
                "rules[0].dst",
            ),
            ("qos = \"gold\"", "qos = \"silver\"", "rules[0].qos"),
            ("name = \"nat\"", "name = \"un-nat\"", "rules[4].name"),
            ("nics = [\"link1\"]", "nics = [\"link9\"]", "rules[2].nics"),
            ("policy = \"pin\"\n", "", "rules[2].nics: needs policy"),
            ("tunnel = \"gre\"", "tunnel = \"vx\"", "rules[3].tunnel"),
            ("set_ttl = 9", "set_ttl = 0", "rules[3].set_ttl"),
            (
                "src_ports = \"53\"",
                "src_ports = \"53-50\"",
                "rules[5].src_ports",
            ),
            (
                "protocol = \"udp\"\nsrc_ports",
                "src_ports",
                "rules[5].src_ports: needs protocol",
            ),
            (
                "links = [\"link0\"]",
                "links = [\"wan\"]",
                "rules[1].when.links",
            ),
            (
                "below_percent = 0.5",
                "below_percent = 1.5",
                "rules[1].when.below_percent: must be below loss_above_percent",
            ),
            (
                "hold_ms = 500 }",
                "hold_ms = 500, down_links = 1 }",
                "rules[1].when: give exactly one of",
            ),
            (
                "loss_above_percent = 1.0",
                "loss_above_percent = 120.0",
                "rules[1].when.loss_above_percent",
            ),
            (
                "drop = true",
                "drop = true\ncolour = 1",
                "unknown field `colour`",
            ),
            ("direction = \"rx\"", "direction = \"up\"", "direction"),
            // The engine's checks, in the file's terms.
            (
                "src = \"192.0.2.7/32\"\n",
                "",
                "rules[4] (\"un-nat\").set_src: address rewrite needs a prefix match",
            ),
            (
                "name = \"block\"\ndirection = \"rx\"",
                "name = \"block\"\ndirection = \"rx\"\npolicy = \"stripe\"",
                "rules[5] (\"block\").policy: an rx rule acts on packets going to the vnic",
            ),
            (
                "set_dst_port = 8080",
                "set_dst_port = 8080\ndrop = true",
                "rules[0] (\"nat\").drop: drop with other actions",
            ),
        ];
        assert_errors_name(BASE, &cases);
        // Set problems name both rules.
        let conflict = BASE.replacen(
            "name = \"pin-ssh\"",
            "name = \"pin-ssh\"\npriority = 10\nset_ttl = 5",
            1,
        );
        let conflict = conflict.replacen(
            "protocol = \"tcp\"\ndst_ports = \"22\"",
            "protocol = \"udp\"\ndst = \"10.99.0.0/24\"\ndst_ports = \"5005\"",
            1,
        );
        let e = err(&conflict);
        assert!(
            e.contains("rules[0] (\"nat\") and rules[2] (\"pin-ssh\"): same priority"),
            "{e}"
        );
        let shadowed = BASE.replacen(
            "name = \"pin-ssh\"",
            "name = \"pin-ssh\"\npriority = 20\nset_ttl = 5",
            1,
        );
        let shadowed = shadowed.replacen(
            "protocol = \"tcp\"\ndst_ports = \"22\"",
            "protocol = \"udp\"\ndst = \"10.99.0.0/24\"\ndst_ports = \"5005\"",
            1,
        );
        let e = err(&shadowed);
        assert!(
            e.contains("rules[2] (\"pin-ssh\"): shadowed by rules[0] (\"nat\")"),
            "{e}"
        );
        // A rule with nothing to do.
        let e = err(&BASE.replacen("drop = true\n", "", 1));
        assert!(e.contains("rules[5] (\"block\"): no action"), "{e}");
    }

    const VLAN: &str = r#"
[vnic]
name = "braid0"
mtu = 1400

[peer]
role = "a"

[[nics]]
name = "link0"
device = "veth0"
local = "10.77.0.1:7700"
peer = "10.77.0.2:7700"
capacity = "1gbit"

[[tunnels]]
name = "vx"
kind = "vxlan"
nic = "link0"
local = "10.77.0.1"
remote = "10.77.0.2"
vni = 42
inner_dst_mac = "02:00:00:00:00:0b"

[[classes]]
name = "to-vx"
protocol = "udp"
dst_ports = "6000"
policy = "pin"
tunnel = "vx"

[[rules]]
name = "tag"
protocol = "udp"
dst_ports = "6000"
push_vlan = 100
vlan_pcp = 3

[[rules]]
name = "untag"
direction = "rx"
vlan = 100
pop_vlan = true

[daemon]
"#;

    #[test]
    fn vlan_rules_translate_and_their_errors_name_the_field() {
        let plan = Config::parse(VLAN).unwrap();
        assert_eq!(
            plan.rules.tx[0].actions,
            [Action::PushVlan(VlanTag { vid: 100, pcp: 3 })]
        );
        assert_eq!(plan.rules.rx[0].matcher.vlan, Some(100));
        assert_eq!(plan.rules.rx[0].actions, [Action::PopVlan]);
        build_tables(&plan).unwrap();
        // The pipeline order: pop, rewrites, push, tunnel.
        let all = VLAN.replacen(
            "push_vlan = 100",
            "push_vlan = 100\nset_dscp = 10\ntunnel = \"vx\"",
            1,
        );
        assert_eq!(
            Config::parse(&all).unwrap().rules.tx[0].actions,
            [
                Action::SetDscp(10),
                Action::PushVlan(VlanTag { vid: 100, pcp: 3 }),
                Action::VxlanEncap(TunnelId(0)),
            ]
        );
        let cases = [
            ("push_vlan = 100", "push_vlan = 4095", "rules[0].push_vlan"),
            ("vlan_pcp = 3", "vlan_pcp = 8", "rules[0].vlan_pcp"),
            (
                "push_vlan = 100\n",
                "",
                "rules[0].vlan_pcp: only with push_vlan",
            ),
            // The engine's checks, in the file's terms.
            (
                "dst_ports = \"6000\"\npush",
                "dst_ports = \"6001\"\npush",
                "rules[0] (\"tag\").push_vlan: push_vlan needs a vxlan-encapsulated flow",
            ),
            (
                "name = \"tag\"\n",
                "name = \"tag\"\ndirection = \"rx\"\n",
                "rules[0] (\"tag\").push_vlan: push_vlan on rx",
            ),
            (
                "name = \"untag\"\ndirection = \"rx\"\n",
                "name = \"untag\"\n",
                "rules[1] (\"untag\")",
            ),
            (
                "kind = \"vxlan\"",
                "kind = \"gre\"",
                "only for kind = \"vxlan\"",
            ),
            // An rx VLAN match that does not pop the tag would drop all it matches.
            (
                "vlan = 100\npop_vlan = true",
                "vlan = 100\nset_dscp = 1",
                "rules[1] (\"untag\"): match: a vlan match without pop_vlan",
            ),
        ];
        assert_errors_name(VLAN, &cases);
        // A VLAN match on TX: the vNIC's packets have no tag.
        let e = err(&VLAN.replacen(
            "direction = \"rx\"\nvlan = 100\npop_vlan = true",
            "vlan = 100\nset_dscp = 1",
            1,
        ));
        assert!(e.contains("rules[1] (\"untag\"): match: vlan match"), "{e}");
    }
}
