//! Tests of the rule engine: match semantics, lookup order, validation problems, conditions
//! with hysteresis, versioning, and properties (tuple-space lookup = linear scan; the shadow
//! check = a brute-force one) on random rule sets.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::time::Duration;

use proptest::prelude::*;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::flow::{FlowKey, IPPROTO_TCP, IPPROTO_UDP};
use crate::health::LinkState;
use crate::time::Instant;
use crate::types::ClassPolicy;
use crate::types::{NicId, NicSet};

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn v6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse::<Ipv6Addr>().expect("test address"))
}

fn pfx(addr: IpAddr, len: u8) -> IpPrefix {
    IpPrefix::new(addr, len).expect("test prefix")
}

fn key(src: IpAddr, dst: IpAddr, protocol: u8, sport: u16, dport: u16) -> RuleKey {
    RuleKey::from_flow_key(&FlowKey::five_tuple(src, dst, protocol, sport, dport), 0)
}

fn udp_to(port: u16) -> RuleMatch {
    RuleMatch {
        protocol: Some(IPPROTO_UDP),
        dst_ports: Some(PortRange::single(port)),
        ..RuleMatch::ANY
    }
}

fn stripe(policy: ClassPolicy, nics: NicSet) -> Action {
    Action::Stripe(Striping { policy, nics })
}

fn ctx() -> RuleContext {
    RuleContext {
        nics: NicSet(0b1111),
        vnics: vec![VnicLayer::Tun, VnicLayer::Tap],
        tunnels: vec![
            TunnelRef {
                id: TunnelId(1),
                kind: TunnelKind::Vxlan,
            },
            TunnelRef {
                id: TunnelId(2),
                kind: TunnelKind::Gre,
            },
        ],
        qos_classes: 4,
        tun_vlan: TunVlan::default(),
    }
}

fn build(rules: &[Rule]) -> Result<RuleSet, ValidationErrors> {
    RuleSet::build(rules, &ctx(), &RuleSetConfig::default())
}

fn problems(rules: &[Rule]) -> Vec<Problem> {
    build(rules)
        .expect_err("the set has problems")
        .problems()
        .to_vec()
}

// ---------------------------------------------------------------- matches

#[test]
fn prefix_checks_length_and_host_bits() {
    assert_eq!(
        IpPrefix::new(v4(10, 0, 0, 0), 33),
        Err(MatchError::PrefixTooLong { field: "prefix" })
    );
    assert_eq!(
        IpPrefix::new(v4(10, 1, 0, 0), 8),
        Err(MatchError::HostBitsSet { field: "prefix" })
    );
    assert!(IpPrefix::new(v6("2001:db8::"), 129).is_err());
    assert!(IpPrefix::new(v6("2001:db8::1"), 64).is_err());
    let p = pfx(v4(10, 1, 0, 0), 16);
    assert!(p.contains(v4(10, 1, 255, 3)));
    assert!(!p.contains(v4(10, 2, 0, 0)));
    // Never across IP versions: ::ffff:10.1.0.1 is not 10.1.0.1.
    assert!(!p.contains(v6("::ffff:10.1.0.1")));
    assert!(pfx(v4(0, 0, 0, 0), 0).contains(v4(1, 2, 3, 4)));
    assert!(!pfx(v4(0, 0, 0, 0), 0).contains(v6("::1")));
    let q = pfx(v6("2001:db8:1::"), 48);
    assert!(q.contains(v6("2001:db8:1:ffff::7")));
    assert!(!q.contains(v6("2001:db8:2::7")));
    assert!(IpPrefix::host(v6("::1")).contains(v6("::1")));
    assert_eq!(IpPrefix::host(v6("::1")).len, 128);
}

#[test]
fn every_match_field_is_tested() {
    let k = RuleKey {
        src: v4(10, 0, 0, 1),
        dst: v4(192, 168, 1, 9),
        protocol: IPPROTO_TCP,
        src_port: 40000,
        dst_port: 443,
        dscp: Some(46),
        vlan: Some(10),
        vni: Some(5000),
        vnic: 1,
    };
    let all = RuleMatch {
        src: Some(pfx(v4(10, 0, 0, 0), 8)),
        dst: Some(pfx(v4(192, 168, 1, 0), 24)),
        protocol: Some(IPPROTO_TCP),
        src_ports: Some(PortRange::new(32768, 60999)),
        dst_ports: Some(PortRange::single(443)),
        dscp: Some(DscpSet::of(&[34, 46])),
        vlan: Some(10),
        vni: Some(5000),
        vnic: Some(1),
    };
    assert!(all.matches(&k));
    assert!(RuleMatch::ANY.matches(&k));
    // Each field alone makes it fail.
    let misses = [
        RuleKey {
            src: v4(11, 0, 0, 1),
            ..k
        },
        RuleKey {
            dst: v4(192, 168, 2, 9),
            ..k
        },
        RuleKey {
            protocol: IPPROTO_UDP,
            ..k
        },
        RuleKey {
            src_port: 1000,
            ..k
        },
        RuleKey { dst_port: 444, ..k },
        RuleKey { dscp: Some(0), ..k },
        RuleKey { dscp: None, ..k },
        RuleKey {
            vlan: Some(11),
            ..k
        },
        RuleKey { vlan: None, ..k },
        RuleKey {
            vni: Some(5001),
            ..k
        },
        RuleKey { vni: None, ..k },
        RuleKey { vnic: 0, ..k },
    ];
    for (i, m) in misses.iter().enumerate() {
        assert!(!all.matches(m), "miss #{i} matched");
        assert!(RuleMatch::ANY.matches(m));
    }
    // An IPv4 match never matches IPv6 flows.
    let k6 = key(v6("2001:db8::1"), v6("2001:db8::2"), IPPROTO_TCP, 1, 443);
    let only_v4_dst = RuleMatch {
        dst: Some(IpPrefix::any(IpFamily::V4)),
        ..RuleMatch::ANY
    };
    assert!(!only_v4_dst.matches(&k6));
    assert!(only_v4_dst.matches(&k));
    // A match that fixes the version fixes it for both addresses.
    let mixed = RuleKey {
        src: v6("2001:db8::1"),
        ..k
    };
    assert!(!only_v4_dst.matches(&mixed));
    assert!(RuleMatch::ANY.matches(&mixed));
}

#[test]
fn covers_and_overlaps_respect_ip_version_and_ranges() {
    let v4_src = RuleMatch {
        src: Some(pfx(v4(10, 0, 0, 0), 8)),
        ..RuleMatch::ANY
    };
    let v4_dst_any = RuleMatch {
        dst: Some(IpPrefix::any(IpFamily::V4)),
        ..RuleMatch::ANY
    };
    let v6_dst = RuleMatch {
        dst: Some(pfx(v6("2001:db8::"), 32)),
        ..RuleMatch::ANY
    };
    // "dst 0.0.0.0/0" is every IPv4 flow: it covers "src 10/8", not the reverse.
    assert!(v4_dst_any.covers(&v4_src));
    assert!(!v4_src.covers(&v4_dst_any));
    assert!(v4_src.overlaps(&v4_dst_any));
    // Different versions never overlap, even on different sides.
    assert!(!v4_src.overlaps(&v6_dst));
    assert!(!v4_dst_any.covers(&v6_dst));
    // ANY covers everything; nothing narrower covers ANY.
    assert!(RuleMatch::ANY.covers(&v6_dst));
    assert!(!v6_dst.covers(&RuleMatch::ANY));
    // Port ranges.
    let tcp = |lo, hi| RuleMatch {
        protocol: Some(IPPROTO_TCP),
        dst_ports: Some(PortRange::new(lo, hi)),
        ..RuleMatch::ANY
    };
    assert!(tcp(1000, 2000).covers(&tcp(1500, 1500)));
    assert!(!tcp(1000, 2000).covers(&tcp(1500, 2001)));
    assert!(tcp(1000, 2000).overlaps(&tcp(2000, 3000)));
    assert!(!tcp(1000, 2000).overlaps(&tcp(2001, 3000)));
    // DSCP sets: a set does not cover "any" (keys without DSCP).
    let d = |v: &[u8]| RuleMatch {
        dscp: Some(DscpSet::of(v)),
        ..RuleMatch::ANY
    };
    assert!(d(&[10, 12, 46]).covers(&d(&[46])));
    assert!(!d(&[46]).covers(&d(&[10, 46])));
    assert!(!d(&[10]).overlaps(&d(&[46])));
    assert!(!d(&[0]).covers(&RuleMatch::ANY));
}

// ---------------------------------------------------------------- lookup

#[test]
fn lower_priority_wins_then_list_order() {
    let rules = vec![
        Rule::new("broad", 100, RuleMatch::ANY, &[Action::SetDscp(1)]),
        Rule::new("feed", 10, udp_to(5000), &[Action::SetDscp(46)]),
        Rule::new(
            "feed-net",
            10,
            RuleMatch {
                dst: Some(pfx(v4(239, 1, 0, 0), 16)),
                ..RuleMatch::ANY
            },
            &[Action::SetDscp(34)],
        ),
    ];
    // Compiled without validation: "feed" and "feed-net" conflict on purpose.
    let set = RuleSet::compile(&rules, 7);
    let k = key(v4(10, 0, 0, 1), v4(239, 1, 2, 3), IPPROTO_UDP, 999, 5000);
    assert_eq!(
        set.lookup(&k),
        Some(RuleIndex(1)),
        "equal priority: listed first wins"
    );
    let k2 = key(v4(10, 0, 0, 1), v4(239, 1, 2, 3), IPPROTO_UDP, 999, 5001);
    assert_eq!(set.lookup(&k2), Some(RuleIndex(2)));
    let k3 = key(v4(10, 0, 0, 1), v4(8, 8, 8, 8), IPPROTO_TCP, 999, 5000);
    assert_eq!(set.lookup(&k3), Some(RuleIndex(0)));
    assert_eq!(set.actions(RuleIndex(1)).and_then(|a| a.dscp), Some(46));
    assert_eq!(set.name(RuleIndex(2)), Some("feed-net"));
    assert_eq!(RuleSet::empty().lookup(&k), None);
}

#[test]
fn lookup_ipv6_ranges_and_deep_keys() {
    let rules = vec![
        Rule::new(
            "v6-web",
            5,
            RuleMatch {
                src: Some(pfx(v6("2001:db8:1::"), 48)),
                protocol: Some(IPPROTO_TCP),
                dst_ports: Some(PortRange::new(8000, 8999)),
                ..RuleMatch::ANY
            },
            &[Action::SetEcn(1)],
        ),
        Rule::new(
            "vni",
            6,
            RuleMatch {
                vni: Some(0),
                ..RuleMatch::ANY
            },
            &[Action::VxlanDecap],
        ),
        Rule::new(
            "ef",
            7,
            RuleMatch {
                dscp: Some(DscpSet::single(0)),
                vnic: Some(1),
                ..RuleMatch::ANY
            },
            &[Action::SetPriorityClass(QosClass(0))],
        ),
    ];
    let set = RuleSet::compile(&rules, 1);
    let mut k = key(
        v6("2001:db8:1:2::5"),
        v6("2001:db8:9::1"),
        IPPROTO_TCP,
        1,
        8080,
    );
    assert_eq!(set.lookup(&k), Some(RuleIndex(0)));
    k.dst_port = 9000;
    assert_eq!(set.lookup(&k), None);
    // VNI 0 is a real VNI: it matches Some(0), never an absent VNI.
    k.vni = Some(0);
    assert_eq!(set.lookup(&k), Some(RuleIndex(1)));
    k.vni = None;
    // DSCP 0 matches Some(0) only, on vNIC 1 only.
    k.dscp = Some(0);
    assert_eq!(set.lookup(&k), None);
    k.vnic = 1;
    assert_eq!(set.lookup(&k), Some(RuleIndex(2)));
    k.dscp = None;
    assert_eq!(set.lookup(&k), None);
    assert_eq!(
        set.required_keys(),
        crate::flow::ClassifyConfig {
            use_ports: true,
            dscp: true,
            vlan: false,
            vni: true
        }
    );
}

#[test]
fn conditional_rule_is_skipped_while_off() {
    let feed = udp_to(5000);
    let rules = vec![
        Rule::new(
            "feed-dup",
            1,
            feed,
            &[stripe(ClassPolicy::Duplicate, NicSet(0b11))],
        )
        .when(Condition::loss_above(NicSet(0b11), 10, 5)),
        Rule::new("feed", 2, feed, &[stripe(ClassPolicy::Pin, NicSet(0b11))]),
    ];
    let mut set = build(&rules).expect("valid: a conditional rule shadows nothing");
    let k = key(v4(10, 0, 0, 1), v4(10, 0, 0, 2), IPPROTO_UDP, 1, 5000);
    assert_eq!(set.lookup(&k), Some(RuleIndex(1)));
    assert!(!set.is_active(RuleIndex(0)));
    let mut live = LiveState::new();
    live.set(
        NicId(1),
        LinkSnapshot {
            loss_permille: 20,
            ..LinkSnapshot::UP
        },
    );
    assert!(set.update_conditions(&live, Instant::from_millis(1)));
    assert!(set.is_active(RuleIndex(0)));
    assert_eq!(set.lookup(&k), Some(RuleIndex(0)));
}

// ---------------------------------------------------------------- versions and swap

#[test]
fn cached_actions_follow_replacement_and_condition_flips() {
    let feed = udp_to(5000);
    let k = key(v4(10, 0, 0, 1), v4(10, 0, 0, 2), IPPROTO_UDP, 1, 5000);
    let mut set = build(&[Rule::new("a", 1, feed, &[Action::SetDscp(10)])]).expect("valid");
    let mut cache = CachedRule::STALE;
    assert_eq!(set.cached_actions(&mut cache, &k).dscp, Some(10));
    assert_eq!(cache.version(), set.version());
    assert_eq!(cache.rule(), Some(RuleIndex(0)));
    let v1 = set.version();

    // Replace: the new set's version is above the old one's, the cache is re-looked-up.
    let new = build(&[
        Rule::new("other", 1, udp_to(6000), &[Action::SetDscp(20)]),
        Rule::new("b", 2, feed, &[Action::SetDscp(46)]),
    ])
    .expect("valid");
    assert_eq!(new.version(), RuleSetVersion::INITIAL);
    let old = set.replace(new);
    assert_eq!(old.version(), v1);
    assert!(set.version() > v1);
    assert_eq!(set.cached_actions(&mut cache, &k).dscp, Some(46));
    assert_eq!(cache.rule(), Some(RuleIndex(1)));

    // A condition flip bumps the version too.
    let set2 = build(&[
        Rule::new(
            "dup",
            1,
            feed,
            &[stripe(ClassPolicy::Duplicate, NicSet::ALL)],
        )
        .when(Condition::any_degraded(NicSet::ALL)),
        Rule::new(
            "plain",
            2,
            feed,
            &[stripe(ClassPolicy::Stripe, NicSet::ALL)],
        ),
    ])
    .expect("valid");
    drop(set.replace(set2));
    let mut set2 = set;
    let mut c = set2.classify(&k);
    assert_eq!(c.rule(), Some(RuleIndex(1)));
    let mut live = LiveState::new();
    live.set(NicId(0), LinkSnapshot::UP);
    live.set(
        NicId(1),
        LinkSnapshot {
            state: LinkState::Degraded,
            ..LinkSnapshot::UP
        },
    );
    let v = set2.version();
    assert!(set2.update_conditions(&live, Instant::from_millis(5)));
    assert_eq!(set2.version(), RuleSetVersion(v.0 + 1));
    let a = set2.cached_actions(&mut c, &k);
    assert_eq!(
        a.striping.map(|s| s.policy),
        Some(ClassPolicy::Duplicate),
        "re-looked-up after the flip"
    );
    // No change: no bump, the cache stays valid.
    assert!(!set2.update_conditions(&live, Instant::from_millis(6)));
    assert_eq!(set2.version(), RuleSetVersion(v.0 + 1));
    assert_eq!(c.version(), set2.version());
}

#[test]
fn no_rule_gives_no_action() {
    let set = build(&[Rule::new("a", 1, udp_to(1), &[Action::Drop])]).expect("valid");
    let mut c = CachedRule::STALE;
    let k = key(v4(1, 1, 1, 1), v4(2, 2, 2, 2), IPPROTO_TCP, 1, 1);
    assert!(set.cached_actions(&mut c, &k).is_none());
    assert_eq!(c.rule(), None);
    let k2 = key(v4(1, 1, 1, 1), v4(2, 2, 2, 2), IPPROTO_UDP, 1, 1);
    let mut c2 = CachedRule::STALE;
    assert!(set.cached_actions(&mut c2, &k2).drop);
}

// ---------------------------------------------------------------- actions

#[test]
fn compile_collects_actions_and_flags_packet_changes() {
    let acts = [
        Action::GreDecap,
        Action::PopVlan,
        Action::SetSrcAddr(v4(192, 0, 2, 1)),
        Action::SetDstPort(8443),
        Action::SetTtl(9),
        Action::PushVlan(VlanTag { vid: 30, pcp: 5 }),
        Action::VxlanEncap(TunnelId(1)),
        Action::SetPriorityClass(QosClass(2)),
    ];
    let c = CompiledActions::compile(&acts);
    assert_eq!(c.decap, Some(Decap::Gre));
    assert!(c.pop_vlan);
    assert_eq!(c.src_addr, Some(v4(192, 0, 2, 1)));
    assert_eq!(c.dst_port, Some(8443));
    assert_eq!(c.ttl, Some(9));
    assert_eq!(c.push_vlan, Some(VlanTag { vid: 30, pcp: 5 }));
    assert_eq!(c.encap, Some(Encap::Vxlan(TunnelId(1))));
    assert_eq!(c.priority_class, Some(QosClass(2)));
    assert!(c.modifies_packet());
    assert!(!c.drop);
    let meta = CompiledActions::compile(&[stripe(ClassPolicy::Pin, NicSet::single(NicId(2)))]);
    assert!(!meta.modifies_packet());
    assert!(!meta.is_none());
    assert!(CompiledActions::compile(&[]).is_none());
    // Copy, no heap, small enough to cache per flow.
    assert!(core::mem::size_of::<CompiledActions>() <= 96);
    assert_eq!(core::mem::size_of::<CachedRule>(), 16);
}

// ---------------------------------------------------------------- validation

#[test]
fn conflict_duplicate_and_shadow_are_reported() {
    let web = RuleMatch {
        protocol: Some(IPPROTO_TCP),
        dst_ports: Some(PortRange::single(443)),
        ..RuleMatch::ANY
    };
    let net = RuleMatch {
        dst: Some(pfx(v4(10, 0, 0, 0), 8)),
        ..RuleMatch::ANY
    };
    let web_in_net = RuleMatch {
        dst: Some(pfx(v4(10, 1, 0, 0), 16)),
        ..web
    };
    let rules = vec![
        Rule::new("web", 10, web, &[Action::SetDscp(10)]),
        Rule::new("net", 10, net, &[Action::SetDscp(20)]), // overlaps "web": conflict
        Rule::new("web-again", 10, web, &[Action::SetDscp(10)]), // duplicate of "web"
        Rule::new("inner", 20, web_in_net, &[Action::SetDscp(30)]), // shadowed by "web"
        Rule::new(
            "disjoint",
            10,
            RuleMatch {
                dst: Some(pfx(v4(192, 168, 0, 0), 16)),
                ..udp_to(53)
            },
            &[Action::SetDscp(40)],
        ), // fine
    ];
    let p = problems(&rules);
    assert!(p.contains(&Problem::Conflict {
        a: RuleIndex(0),
        b: RuleIndex(1)
    }));
    assert!(p.contains(&Problem::Conflict {
        a: RuleIndex(1),
        b: RuleIndex(2)
    }));
    assert!(p.contains(&Problem::Duplicate {
        rule: RuleIndex(2),
        of: RuleIndex(0)
    }));
    assert!(p.contains(&Problem::Shadowed {
        rule: RuleIndex(3),
        by: RuleIndex(0)
    }));
    assert_eq!(p.len(), 4, "{p:?}");
    // The message names the rules.
    let text = build(&rules).expect_err("problems").to_string();
    assert!(
        text.contains("rule #3 \"inner\": shadowed by rule #0 \"web\""),
        "{text}"
    );
    assert!(
        text.contains("rule #2 \"web-again\": duplicate of rule #0 \"web\""),
        "{text}"
    );
    assert!(text.starts_with("invalid rule set: 4 problem(s)"), "{text}");
}

#[test]
fn conditional_rules_do_not_shadow_but_can_be_shadowed() {
    let feed = udp_to(5000);
    let cond = Condition::loss_above(NicSet::ALL, 10, 5);
    // A conditional rule above an identical unconditional one: fine (the engine's duplicate
    // class while lossy).
    assert!(
        build(&[
            Rule::new("dup", 1, feed, &[Action::SetDscp(46)]).when(cond),
            Rule::new("plain", 2, feed, &[Action::SetDscp(0)]),
        ])
        .is_ok()
    );
    // The reverse order: the conditional rule can never fire.
    assert_eq!(
        problems(&[
            Rule::new("plain", 1, feed, &[Action::SetDscp(0)]),
            Rule::new("dup", 2, feed, &[Action::SetDscp(46)]).when(cond),
        ]),
        vec![Problem::Shadowed {
            rule: RuleIndex(1),
            by: RuleIndex(0)
        }]
    );
    // A more specific rule above a broader one is not shadowed.
    assert!(
        build(&[
            Rule::new("specific", 1, feed, &[Action::SetDscp(46)]),
            Rule::new(
                "all-udp",
                2,
                RuleMatch {
                    protocol: Some(IPPROTO_UDP),
                    ..RuleMatch::ANY
                },
                &[Action::SetDscp(0)]
            ),
        ])
        .is_ok()
    );
}

#[test]
fn shadowing_across_prefix_lengths_and_versions() {
    let rules = vec![
        Rule::new(
            "all-v4",
            1,
            RuleMatch {
                dst: Some(IpPrefix::any(IpFamily::V4)),
                ..RuleMatch::ANY
            },
            &[Action::SetTtl(64)],
        ),
        // IPv6: not covered by "all-v4".
        Rule::new(
            "v6",
            2,
            RuleMatch {
                src: Some(pfx(v6("2001:db8::"), 32)),
                ..RuleMatch::ANY
            },
            &[Action::SetTtl(32)],
        ),
        // Every IPv4 flow from 10/8 to 192.168.1.0/24 on TCP 80: covered.
        Rule::new(
            "v4-web",
            3,
            RuleMatch {
                src: Some(pfx(v4(10, 0, 0, 0), 8)),
                dst: Some(pfx(v4(192, 168, 1, 0), 24)),
                protocol: Some(IPPROTO_TCP),
                dst_ports: Some(PortRange::single(80)),
                ..RuleMatch::ANY
            },
            &[Action::SetTtl(8)],
        ),
        // Any version: not covered by an IPv4-only rule.
        Rule::new("any", 4, RuleMatch::ANY, &[Action::SetTtl(16)]),
    ];
    assert_eq!(
        problems(&rules),
        vec![Problem::Shadowed {
            rule: RuleIndex(2),
            by: RuleIndex(0)
        }]
    );
}

#[test]
fn invalid_actions_are_reported_with_their_position() {
    let tcp_v4 = RuleMatch {
        dst: Some(pfx(v4(10, 0, 0, 0), 8)),
        protocol: Some(IPPROTO_TCP),
        ..RuleMatch::ANY
    };
    let on_tun = RuleMatch {
        vnic: Some(0),
        ..tcp_v4
    };
    let on_tap = RuleMatch {
        vnic: Some(1),
        ..tcp_v4
    };
    let rules = vec![
        Rule::new("pop-on-tun", 1, on_tun, &[Action::PopVlan]),
        Rule::new("pop-on-tap", 2, on_tap, &[Action::PopVlan]), // fine
        Rule::new(
            "tunnels",
            3,
            RuleMatch {
                src: Some(pfx(v4(1, 0, 0, 0), 8)),
                ..RuleMatch::ANY
            },
            &[Action::VxlanEncap(TunnelId(9))],
        ),
        Rule::new(
            "kind",
            4,
            RuleMatch {
                src: Some(pfx(v4(2, 0, 0, 0), 8)),
                ..RuleMatch::ANY
            },
            &[Action::GreEncap(TunnelId(1))],
        ),
        Rule::new(
            "port-no-proto",
            5,
            RuleMatch {
                src: Some(pfx(v4(3, 0, 0, 0), 8)),
                ..RuleMatch::ANY
            },
            &[Action::SetDstPort(80)],
        ),
        Rule::new(
            "addr",
            6,
            RuleMatch {
                src: Some(pfx(v4(4, 0, 0, 0), 8)),
                ..RuleMatch::ANY
            },
            &[Action::SetDstAddr(v6("2001:db8::1"))],
        ),
        Rule::new(
            "addr-any",
            7,
            RuleMatch {
                protocol: Some(47),
                ..RuleMatch::ANY
            },
            &[Action::SetSrcAddr(v4(1, 2, 3, 4))],
        ),
        Rule::new(
            "order",
            8,
            RuleMatch {
                src: Some(pfx(v4(5, 0, 0, 0), 8)),
                ..RuleMatch::ANY
            },
            &[Action::VxlanEncap(TunnelId(1)), Action::SetDscp(46)],
        ),
        Rule::new(
            "repeat-and-ranges",
            9,
            RuleMatch {
                src: Some(pfx(v4(6, 0, 0, 0), 8)),
                ..RuleMatch::ANY
            },
            &[
                Action::SetDscp(64),
                Action::SetDscp(1),
                Action::SetEcn(4),
                Action::SetTtl(0),
                Action::SetPriorityClass(QosClass(4)),
                stripe(ClassPolicy::Pin, NicSet(0b1_0000)),
            ],
        ),
        Rule::new(
            "drop-plus",
            10,
            RuleMatch {
                src: Some(pfx(v4(7, 0, 0, 0), 8)),
                ..RuleMatch::ANY
            },
            &[Action::Drop, Action::SetDscp(1)],
        ),
        Rule::new(
            "vlan-range",
            11,
            RuleMatch {
                dst: Some(pfx(v4(11, 0, 0, 0), 8)),
                ..on_tap
            },
            &[
                Action::PopVlan,
                Action::PushVlan(VlanTag { vid: 4095, pcp: 8 }),
            ],
        ),
        // Decapsulation: the inner packet's version/protocol are unknown, so rewrites are
        // not checked against the outer match.
        Rule::new(
            "decap-rewrite",
            12,
            RuleMatch {
                vni: Some(77),
                ..RuleMatch::ANY
            },
            &[
                Action::VxlanDecap,
                Action::SetDstAddr(v6("::1")),
                Action::SetDstPort(1),
            ],
        ),
    ];
    let p = problems(&rules);
    let act = |rule: u32, action: usize, error: ActionError| Problem::InvalidAction {
        rule: RuleIndex(rule),
        action,
        error,
    };
    let expected = vec![
        act(0, 0, ActionError::VlanOnTunVnic),
        act(2, 0, ActionError::UnknownTunnel(TunnelId(9))),
        act(3, 0, ActionError::TunnelKindMismatch(TunnelId(1))),
        act(4, 0, ActionError::PortRewriteNeedsTcpOrUdp),
        act(5, 0, ActionError::AddressFamilyMismatch),
        act(6, 0, ActionError::AddressNeedsFamily),
        act(7, 1, ActionError::OutOfOrder),
        act(8, 0, ActionError::DscpOutOfRange(64)),
        act(8, 1, ActionError::Repeated),
        act(8, 2, ActionError::EcnOutOfRange(4)),
        act(8, 3, ActionError::TtlZero),
        act(8, 4, ActionError::UnknownPriorityClass(QosClass(4))),
        act(8, 5, ActionError::NoUsableNics),
        act(9, 0, ActionError::DropWithOthers),
        act(10, 1, ActionError::VlanOutOfRange(4095)),
    ];
    assert_eq!(p, expected);
    // PCP is checked once the VID is valid.
    assert_eq!(
        problems(&[Rule::new(
            "pcp",
            1,
            on_tap,
            &[Action::PushVlan(VlanTag { vid: 5, pcp: 8 })]
        )]),
        vec![act(0, 0, ActionError::PcpOutOfRange(8))]
    );
    // A VLAN action without a vNIC match is invalid while any vNIC is a TUN.
    assert_eq!(
        problems(&[Rule::new("pop-any", 1, tcp_v4, &[Action::PopVlan])]),
        vec![act(0, 0, ActionError::VlanOnTunVnic)]
    );
}

#[test]
fn invalid_matches_conditions_and_names() {
    let bad = |m: RuleMatch| Rule::new("", 1, m, &[]);
    let rules = vec![
        bad(RuleMatch {
            src: Some(IpPrefix {
                addr: v4(10, 1, 0, 0),
                len: 8,
            }),
            ..RuleMatch::ANY
        }),
        bad(RuleMatch {
            src: Some(pfx(v4(10, 0, 0, 0), 8)),
            dst: Some(pfx(v6("2001:db8::"), 32)),
            ..RuleMatch::ANY
        }),
        bad(RuleMatch {
            protocol: Some(IPPROTO_TCP),
            dst_ports: Some(PortRange::new(10, 9)),
            ..RuleMatch::ANY
        }),
        bad(RuleMatch {
            protocol: Some(1),
            dst_ports: Some(PortRange::single(9)),
            ..RuleMatch::ANY
        }),
        bad(RuleMatch {
            dscp: Some(DscpSet(0)),
            ..RuleMatch::ANY
        }),
        bad(RuleMatch {
            vlan: Some(4095),
            vnic: Some(1),
            ..RuleMatch::ANY
        }),
        bad(RuleMatch {
            vni: Some(1 << 24),
            ..RuleMatch::ANY
        }),
        bad(RuleMatch {
            vnic: Some(2),
            ..RuleMatch::ANY
        }),
        bad(RuleMatch {
            vlan: Some(5),
            vnic: Some(0),
            ..RuleMatch::ANY
        }),
        Rule::new("x", 2, udp_to(1), &[]).when(Condition::loss_above(NicSet::ALL, 5, 5)),
        Rule::new("x", 3, udp_to(2), &[]).when(Condition::loss_above(NicSet::ALL, 1001, 5)),
        Rule::new("y", 4, udp_to(3), &[]).when(Condition::any_degraded(NicSet(1 << 20))),
    ];
    let m = |rule: u32, error: MatchError| Problem::InvalidMatch {
        rule: RuleIndex(rule),
        error,
    };
    let c = |rule: u32, error: ConditionError| Problem::InvalidCondition {
        rule: RuleIndex(rule),
        error,
    };
    assert_eq!(
        problems(&rules),
        vec![
            Problem::DuplicateName {
                rule: RuleIndex(10),
                first: RuleIndex(9)
            },
            m(0, MatchError::HostBitsSet { field: "src" }),
            m(1, MatchError::MixedFamilies),
            m(2, MatchError::EmptyPortRange { field: "dst_ports" }),
            m(3, MatchError::PortsNeedTcpOrUdp),
            m(4, MatchError::EmptyDscpSet),
            m(5, MatchError::VlanOutOfRange(4095)),
            m(6, MatchError::VniOutOfRange(1 << 24)),
            m(7, MatchError::UnknownVnic(2)),
            m(8, MatchError::VlanOnTunVnic),
            c(9, ConditionError::ThresholdsInverted),
            c(10, ConditionError::LossAbove1000),
            c(11, ConditionError::NoLinks),
        ]
    );
}

#[test]
fn problem_list_is_bounded_and_counts_the_rest() {
    // 100 rules with an unknown tunnel each, 10 kept.
    let rules: Vec<Rule> = (0..100u8)
        .map(|i| {
            Rule::new(
                &format!("r{i}"),
                u32::from(i),
                RuleMatch {
                    src: Some(pfx(v4(10, i, 0, 0), 16)),
                    ..RuleMatch::ANY
                },
                &[Action::GreEncap(TunnelId(99))],
            )
        })
        .collect();
    let cfg = RuleSetConfig {
        max_problems: 10,
        ..RuleSetConfig::default()
    };
    let e = RuleSet::build(&rules, &ctx(), &cfg).expect_err("problems");
    assert_eq!(e.problems().len(), 10);
    assert_eq!(e.total(), 100);
    assert!(e.to_string().ends_with("... and 90 more"), "{e}");
    // Too many rules: one problem, nothing else checked.
    let cfg = RuleSetConfig {
        max_rules: 50,
        ..RuleSetConfig::default()
    };
    let e = RuleSet::build(&rules, &ctx(), &cfg).expect_err("too many");
    assert_eq!(
        e.problems(),
        &[Problem::TooManyRules {
            count: 100,
            max: 50
        }]
    );
}

#[test]
fn a_realistic_set_builds() {
    let feed = udp_to(5000);
    let bulk = RuleMatch {
        protocol: Some(IPPROTO_TCP),
        dst_ports: Some(PortRange::new(10_000, 20_000)),
        ..RuleMatch::ANY
    };
    let rules = vec![
        Rule::new(
            "feed-dup-when-lossy",
            10,
            feed,
            &[
                Action::SetDscp(46),
                Action::SetPriorityClass(QosClass(0)),
                stripe(ClassPolicy::Duplicate, NicSet(0b11)),
            ],
        )
        .when(Condition::loss_above(NicSet(0b11), 10, 5).with_hold(Duration::from_secs(2))),
        Rule::new(
            "feed",
            20,
            feed,
            &[
                Action::SetDscp(46),
                Action::SetPriorityClass(QosClass(0)),
                stripe(ClassPolicy::Pin, NicSet(0b11)),
            ],
        ),
        Rule::new(
            "bulk-avoid-degraded",
            30,
            bulk,
            &[stripe(ClassPolicy::Pin, NicSet(0b1100))],
        )
        .when(Condition::any_degraded(NicSet(0b11))),
        Rule::new(
            "bulk",
            40,
            bulk,
            &[
                Action::SetPriorityClass(QosClass(3)),
                stripe(ClassPolicy::Stripe, NicSet::ALL),
            ],
        ),
        Rule::new(
            "tenant-vxlan",
            50,
            RuleMatch {
                src: Some(pfx(v4(172, 16, 0, 0), 12)),
                vnic: Some(1),
                ..RuleMatch::ANY
            },
            &[
                Action::PopVlan,
                Action::SetTtl(63),
                Action::VxlanEncap(TunnelId(1)),
            ],
        ),
        Rule::new(
            "nat",
            60,
            RuleMatch {
                dst: Some(pfx(v6("2001:db8:ff::"), 48)),
                protocol: Some(IPPROTO_TCP),
                ..RuleMatch::ANY
            },
            &[
                Action::SetDstAddr(v6("2001:db8:1::10")),
                Action::SetDstPort(8443),
            ],
        ),
        Rule::new(
            "gre-in",
            70,
            RuleMatch {
                protocol: Some(47),
                ..RuleMatch::ANY
            },
            &[Action::GreDecap],
        ),
    ];
    let set = build(&rules).expect("a realistic set is valid");
    assert_eq!(set.len(), 7);
    let k = key(v4(172, 20, 1, 1), v4(8, 8, 8, 8), IPPROTO_UDP, 1, 53);
    assert_eq!(set.lookup(&RuleKey { vnic: 1, ..k }), Some(RuleIndex(4)));
    assert_eq!(set.lookup(&k), None);
}

// ---------------------------------------------------------------- conditions

fn lossy(nic: u8, permille: u16) -> LiveState {
    let mut live = LiveState::new();
    live.set(NicId(0), LinkSnapshot::UP);
    live.set(
        NicId(nic),
        LinkSnapshot {
            loss_permille: permille,
            ..LinkSnapshot::UP
        },
    );
    live
}

fn one_conditional(cond: Condition) -> RuleSet {
    build(&[
        Rule::new("c", 1, udp_to(5000), &[Action::SetDscp(46)]).when(cond),
        Rule::new("u", 2, udp_to(5000), &[Action::SetDscp(0)]),
    ])
    .expect("valid")
}

#[test]
fn condition_switches_on_above_on_holds_between_and_off_below_off() {
    let mut set = one_conditional(Condition::loss_above(NicSet::ALL, 10, 5));
    let r = RuleIndex(0);
    let t = Instant::from_millis;
    assert!(!set.update_conditions(&lossy(1, 9), t(1)));
    assert!(!set.is_active(r), "below ON: stays off");
    assert!(set.update_conditions(&lossy(1, 10), t(2)));
    assert!(set.is_active(r), "at ON: on");
    for (i, v) in [9, 6, 8, 7, 6].into_iter().enumerate() {
        assert!(!set.update_conditions(&lossy(1, v), t(3 + i as u64)));
        assert!(set.is_active(r), "between OFF and ON: stays on ({v})");
    }
    assert!(set.update_conditions(&lossy(1, 5), t(10)));
    assert!(!set.is_active(r), "at OFF: off");
    assert!(!set.update_conditions(&lossy(1, 9), t(11)));
    assert!(!set.is_active(r), "between: stays off");
}

#[test]
fn condition_honours_hold_time() {
    let hold = Duration::from_millis(100);
    let mut set = one_conditional(Condition::loss_above(NicSet::ALL, 10, 5).with_hold(hold));
    let r = RuleIndex(0);
    let t = Instant::from_millis;
    assert!(
        set.update_conditions(&lossy(1, 50), t(1000)),
        "first flip not held"
    );
    assert_eq!(set.poll_condition_timeout(), None);
    assert!(!set.update_conditions(&lossy(1, 0), t(1050)));
    assert!(set.is_active(r), "held on for 100 ms");
    assert_eq!(set.poll_condition_timeout(), Some(t(1100)));
    assert!(!set.update_conditions(&lossy(1, 0), t(1099)));
    assert!(set.is_active(r));
    assert!(set.update_conditions(&lossy(1, 0), t(1100)));
    assert!(!set.is_active(r), "off once the hold ends");
    assert_eq!(set.poll_condition_timeout(), None);
    // A held-back wish that disappears is forgotten.
    assert!(!set.update_conditions(&lossy(1, 50), t(1150)));
    assert_eq!(set.poll_condition_timeout(), Some(t(1200)));
    assert!(!set.update_conditions(&lossy(1, 7), t(1160)));
    assert_eq!(set.poll_condition_timeout(), None);
    assert!(!set.update_conditions(&lossy(1, 7), t(1300)));
    assert!(!set.is_active(r));
}

#[test]
fn noisy_input_does_not_flap() {
    // A value oscillating inside the band never flips.
    let mut set = one_conditional(Condition::loss_above(NicSet::ALL, 10, 5));
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for i in 0..10_000u64 {
        let v = rng.random_range(6..=9);
        assert!(!set.update_conditions(&lossy(1, v), Instant::from_micros(i)));
    }
    // Wild noise across both thresholds, sampled every ms: at most one flip per hold time.
    let hold = Duration::from_millis(250);
    let mut set = one_conditional(Condition::loss_above(NicSet::ALL, 10, 5).with_hold(hold));
    let mut flips = Vec::new();
    for ms in 0..10_000u64 {
        let v = if rng.random_bool(0.5) { 0 } else { 30 };
        if set.update_conditions(&lossy(1, v), Instant::from_millis(ms)) {
            flips.push(ms);
        }
    }
    assert!(flips.len() > 10, "it does react: {}", flips.len());
    assert!(flips.len() <= 41, "{} flips in 10 s", flips.len());
    assert!(flips.windows(2).all(|w| w[1] - w[0] >= 250), "{flips:?}");
    // The version moved once per flip.
    assert_eq!(
        set.version(),
        RuleSetVersion(RuleSetVersion::INITIAL.0 + flips.len() as u64)
    );
}

#[test]
fn condition_values_scope_and_aggregates() {
    let mut live = LiveState::new();
    let snap = |state, loss, rtt| LinkSnapshot {
        state,
        loss_permille: loss,
        rtt_us: rtt,
    };
    live.set(NicId(0), snap(LinkState::Up, 3, 900));
    live.set(NicId(1), snap(LinkState::Degraded, 40, 20_000));
    live.set(NicId(2), snap(LinkState::Down, 1000, 0));
    live.set(NicId(40), snap(LinkState::Down, 1000, 0)); // invalid id: ignored
    assert_eq!(live.present(), NicSet(0b111));
    let c = |metric, links, aggregate| Condition {
        metric,
        links,
        aggregate,
        on_at: 1,
        off_at: 0,
        min_hold: Duration::ZERO,
    };
    use Aggregate::{Best, Worst};
    assert_eq!(
        c(Metric::LossPermille, NicSet::ALL, Worst).value(&live),
        1000
    );
    assert_eq!(
        c(Metric::LossPermille, NicSet(0b11), Worst).value(&live),
        40
    );
    assert_eq!(c(Metric::LossPermille, NicSet(0b11), Best).value(&live), 3);
    assert_eq!(
        c(Metric::RttMicros, NicSet(0b11), Worst).value(&live),
        20_000
    );
    assert_eq!(c(Metric::LinksDegraded, NicSet::ALL, Worst).value(&live), 2);
    assert_eq!(c(Metric::LinksDown, NicSet::ALL, Worst).value(&live), 1);
    assert_eq!(c(Metric::LinksDown, NicSet(0b1000), Worst).value(&live), 0);
    live.remove(NicId(2));
    assert_eq!(c(Metric::LinksDown, NicSet::ALL, Worst).value(&live), 0);
    assert_eq!(live.get(NicId(2)), None);
    // From link health's stats.
    let stats = crate::health::LinkStats {
        state: LinkState::Degraded,
        srtt: Duration::from_micros(1234),
        rttvar: Duration::ZERO,
        min_rtt: Duration::ZERO,
        owd: Duration::ZERO,
        owd_jitter: Duration::ZERO,
        rx_owd: Duration::ZERO,
        rx_owd_jitter: Duration::ZERO,
        loss: 0.0125,
        last_rx: None,
        probes_sent: 0,
        replies: 0,
        probes_lost: 0,
        down_events: 0,
    };
    assert_eq!(
        LinkSnapshot::from_stats(&stats),
        snap(LinkState::Degraded, 13, 1234)
    );
}

// ---------------------------------------------------------------- properties

/// A random, realistic-looking rule set over a small address/port space (so rules overlap
/// and nest), with ~20 % conditional rules, and random keys drawn from the same space.
struct Gen(ChaCha8Rng);

impl Gen {
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.0.random_range(0..xs.len())]
    }

    fn prefix(&mut self, family: IpFamily) -> IpPrefix {
        let (addr, len) = match family {
            IpFamily::V4 => {
                let a = Ipv4Addr::new(
                    10,
                    self.0.random_range(0..3),
                    self.0.random_range(0..3),
                    self.0.random_range(0..3),
                );
                (IpAddr::V4(a), self.pick(&[0, 8, 16, 24, 32]))
            }
            IpFamily::V6 => {
                let mut s = [0u16; 8];
                s[0] = 0x2001;
                s[1] = 0xdb8;
                s[2] = self.0.random_range(0..3);
                s[7] = self.0.random_range(0..3);
                (IpAddr::V6(Ipv6Addr::from(s)), self.pick(&[0, 32, 48, 128]))
            }
        };
        let bits = matcher::addr_bits(addr) & matcher::prefix_mask(family, len);
        let addr = match family {
            IpFamily::V4 => IpAddr::V4(Ipv4Addr::from(u32::try_from(bits).unwrap_or(0))),
            IpFamily::V6 => IpAddr::V6(Ipv6Addr::from(bits)),
        };
        pfx(addr, len)
    }

    fn ports(&mut self) -> Option<PortRange> {
        match self.0.random_range(0..6) {
            0 | 1 => None,
            2 | 3 => Some(PortRange::single(self.pick(&[53, 80, 443, 5000]))),
            _ => Some(self.pick(&[
                PortRange::new(1000, 2000),
                PortRange::new(1500, 6000),
                PortRange::new(0, 1023),
            ])),
        }
    }

    fn rule(&mut self, i: usize) -> Rule {
        let family = self.pick(&[
            None,
            Some(IpFamily::V4),
            Some(IpFamily::V4),
            Some(IpFamily::V6),
        ]);
        let (mut src, mut dst) = (None, None);
        if let Some(f) = family {
            match self.0.random_range(0..3) {
                0 => src = Some(self.prefix(f)),
                1 => dst = Some(self.prefix(f)),
                _ => (src, dst) = (Some(self.prefix(f)), Some(self.prefix(f))),
            }
        }
        let (src_ports, dst_ports) = (self.ports(), self.ports());
        let protocol = if src_ports.is_some() || dst_ports.is_some() {
            Some(self.pick(&[IPPROTO_TCP, IPPROTO_UDP]))
        } else {
            self.pick(&[None, Some(IPPROTO_TCP), Some(IPPROTO_UDP), Some(1)])
        };
        let m = RuleMatch {
            src,
            dst,
            protocol,
            src_ports,
            dst_ports,
            dscp: self.pick(&[
                None,
                None,
                None,
                Some(DscpSet::single(0)),
                Some(DscpSet::single(46)),
                Some(DscpSet::of(&[10, 12, 46])),
            ]),
            vlan: self.pick(&[None, None, None, Some(10), Some(20)]),
            vni: self.pick(&[None, None, None, Some(0), Some(200)]),
            vnic: self.pick(&[None, None, None, Some(0), Some(1)]),
        };
        let action = self.pick(&[
            Action::SetDscp(1),
            Action::SetDscp(2),
            Action::Drop,
            Action::SetPriorityClass(QosClass(1)),
        ]);
        let r = Rule::new(&format!("r{i}"), self.0.random_range(0..40), m, &[action]);
        if self.0.random_bool(0.2) {
            r.when(Condition::loss_above(
                NicSet::single(NicId(self.0.random_range(0..4))),
                10,
                5,
            ))
        } else {
            r
        }
    }

    fn addr(&mut self, family: IpFamily) -> IpAddr {
        match family {
            IpFamily::V4 => v4(
                self.pick(&[10, 10, 10, 11]),
                self.0.random_range(0..4),
                self.0.random_range(0..4),
                self.0.random_range(0..4),
            ),
            IpFamily::V6 => {
                let mut s = [0u16; 8];
                s[0] = 0x2001;
                s[1] = self.pick(&[0xdb8, 0xdb8, 0xdb9]);
                s[2] = self.0.random_range(0..4);
                s[7] = self.0.random_range(0..4);
                IpAddr::V6(Ipv6Addr::from(s))
            }
        }
    }

    fn key(&mut self) -> RuleKey {
        let f = self.pick(&[IpFamily::V4, IpFamily::V4, IpFamily::V6]);
        let mut opt = |xs: &[u32]| {
            if self.0.random_bool(0.5) {
                None
            } else {
                Some(xs[self.0.random_range(0..xs.len())])
            }
        };
        let dscp = opt(&[0, 10, 46, 63]).map(|d| d as u8);
        let vlan = opt(&[10, 20, 30]).map(|d| d as u16);
        let vni = opt(&[0, 200, 300]);
        // Now and then a key that mixes IP versions (no packet does; a hand-made key may).
        let g = if self.0.random_bool(0.05) {
            self.pick(&[IpFamily::V4, IpFamily::V6])
        } else {
            f
        };
        RuleKey {
            src: self.addr(f),
            dst: self.addr(g),
            protocol: self.pick(&[IPPROTO_TCP, IPPROTO_UDP, 1]),
            src_port: self.pick(&[0, 53, 80, 443, 1500, 5000, 7000]),
            dst_port: self.pick(&[0, 53, 80, 443, 1500, 5000, 7000]),
            dscp,
            vlan,
            vni,
            vnic: self.0.random_range(0..3),
        }
    }

    /// A key inside `r`'s match (so a hit unless a better rule takes it or `r` is off).
    fn key_in(&mut self, r: &Rule) -> RuleKey {
        let m = r.matcher;
        let f = m.family().unwrap_or(IpFamily::V4);
        let inside = |p: Option<IpPrefix>, g: &mut Self| {
            let a = g.addr(f);
            p.map_or(a, |p| {
                let host = matcher::addr_bits(a) & !matcher::prefix_mask(f, p.len);
                let bits = matcher::addr_bits(p.addr) | host;
                match f {
                    IpFamily::V4 => IpAddr::V4(Ipv4Addr::from(u32::try_from(bits).unwrap_or(0))),
                    IpFamily::V6 => IpAddr::V6(Ipv6Addr::from(bits)),
                }
            })
        };
        let src = inside(m.src, self);
        let dst = inside(m.dst, self);
        let port = |r: Option<PortRange>, g: &mut Self| {
            r.map_or(g.pick(&[0, 53, 80, 7000]), |r| {
                g.0.random_range(r.lo..=r.hi)
            })
        };
        let src_port = port(m.src_ports, self);
        let dst_port = port(m.dst_ports, self);
        let dscp = m
            .dscp
            .map(|s| (0..64).find(|&d| s.contains(d)).unwrap_or(0));
        RuleKey {
            src,
            dst,
            protocol: m.protocol.unwrap_or(IPPROTO_UDP),
            src_port,
            dst_port,
            dscp,
            vlan: m.vlan,
            vni: m.vni,
            vnic: m.vnic.unwrap_or(2),
        }
    }

    fn live(&mut self) -> LiveState {
        let mut live = LiveState::new();
        for n in 0..4 {
            live.set(
                NicId(n),
                LinkSnapshot {
                    loss_permille: self.pick(&[0, 50]),
                    ..LinkSnapshot::UP
                },
            );
        }
        live
    }
}

/// The reference: a linear scan by `(priority, list position)` over the active rules.
fn linear(rules: &[Rule], live: &LiveState, key: &RuleKey) -> Option<RuleIndex> {
    rules
        .iter()
        .enumerate()
        .filter(|(_, r)| r.condition.is_none_or(|c| c.value(live) >= c.on_at))
        .filter(|(_, r)| r.matcher.matches(key))
        .min_by_key(|&(i, r)| (r.priority, i))
        .map(|(i, _)| RuleIndex(i as u32))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The tuple-space lookup returns the rule a linear scan by priority returns, on random
    /// sets of 10..1000 rules (with conflicts, nesting, both IP versions, conditions).
    #[test]
    fn lookup_equals_linear_scan(seed in any::<u64>(), n in 10usize..1000) {
        let mut g = Gen(ChaCha8Rng::seed_from_u64(seed));
        let rules: Vec<Rule> = (0..n).map(|i| g.rule(i)).collect();
        let mut set = RuleSet::compile(&rules, seed);
        let live = g.live();
        set.update_conditions(&live, Instant::from_millis(1));
        let mut hits = 0;
        for i in 0..300 {
            let k = if i % 2 == 0 {
                let r = &rules[g.0.random_range(0..rules.len())];
                g.key_in(r)
            } else {
                g.key()
            };
            let want = linear(&rules, &live, &k);
            hits += usize::from(want.is_some());
            prop_assert_eq!(set.lookup(&k), want, "key {:?}", k);
            let mut c = CachedRule::STALE;
            let expect = want.map_or(CompiledActions::NONE, |r| {
                CompiledActions::compile(&rules[r.0 as usize].actions)
            });
            prop_assert_eq!(*set.cached_actions(&mut c, &k), expect);
        }
        // The generator does produce matches (the property is not vacuous).
        prop_assert!(hits > 0);
    }

    /// The shadow check (tuple-space probes) finds exactly the rules a brute-force pairwise
    /// check finds.
    #[test]
    fn shadow_check_equals_brute_force(seed in any::<u64>(), n in 10usize..300) {
        let mut g = Gen(ChaCha8Rng::seed_from_u64(seed));
        let rules: Vec<Rule> = (0..n).map(|i| g.rule(i)).collect();
        let cfg = RuleSetConfig { max_problems: usize::MAX, ..RuleSetConfig::default() };
        let ctx = RuleContext { nics: NicSet::ALL, vnics: vec![VnicLayer::Tap; 2], ..ctx() };
        let found: Vec<RuleIndex> = match RuleSet::build(&rules, &ctx, &cfg) {
            Ok(_) => Vec::new(),
            Err(e) => e
                .problems()
                .iter()
                .filter_map(|p| match p {
                    Problem::Shadowed { rule, .. } => Some(*rule),
                    _ => None,
                })
                .collect(),
        };
        let acts = |i: usize| CompiledActions::compile(&rules[i].actions);
        let brute: Vec<RuleIndex> = (0..n)
            .filter(|&r| {
                (0..n).any(|s| {
                    let (rs, rr) = (&rules[s], &rules[r]);
                    let same_level_reported = rs.priority == rr.priority
                        && (acts(s) != acts(r)
                            || (rs.matcher == rr.matcher && rs.condition == rr.condition));
                    s != r
                        && (rs.priority, s) < (rr.priority, r)
                        && rs.condition.is_none()
                        && !same_level_reported
                        && rs.matcher.covers(&rr.matcher)
                })
            })
            .map(|r| RuleIndex(r as u32))
            .collect();
        prop_assert_eq!(found, brute);
    }
}

#[test]
fn rules_that_differ_only_in_values_share_one_tuple() {
    let rules: Vec<Rule> = (0..1000u32)
        .map(|i| {
            let [_, _, a, b] = i.to_be_bytes();
            Rule::new(
                &format!("r{i}"),
                i,
                RuleMatch {
                    dst: Some(pfx(v4(10, a, b, 0), 24)),
                    ..udp_to(5000 + (i % 7) as u16)
                },
                &[Action::SetDscp((i % 64) as u8)],
            )
        })
        .collect();
    let set = build(&rules).expect("disjoint rules are valid");
    assert_eq!(set.tuple_count(), 1);
    let k = key(
        v4(1, 1, 1, 1),
        v4(10, 3, 0xe7, 9),
        IPPROTO_UDP,
        1,
        5000 + (999 % 7),
    );
    assert_eq!(set.lookup(&k), Some(RuleIndex(999)));
}

/// A TUN vNIC's VLAN actions and matches follow [`RuleContext::tun_vlan`]: the engine allows
/// a push on TX (into a VXLAN inner frame, which it checks itself) and a pop and a VLAN
/// match on RX; everything else stays refused.
#[test]
fn tun_vlan_context_allows_what_it_says() {
    let on_tun = RuleMatch {
        vnic: Some(0),
        ..udp_to(6000)
    };
    let tagged = RuleMatch {
        vlan: Some(100),
        ..on_tun
    };
    let push = Rule::new(
        "push",
        1,
        on_tun,
        &[Action::PushVlan(VlanTag { vid: 100, pcp: 3 })],
    );
    let pop = Rule::new("pop", 1, tagged, &[Action::PopVlan]);
    let check = |tun_vlan: TunVlan, rule: &Rule| {
        let ctx = RuleContext { tun_vlan, ..ctx() };
        match RuleSet::build(core::slice::from_ref(rule), &ctx, &RuleSetConfig::default()) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems().to_vec(),
        }
    };
    let act = Problem::InvalidAction {
        rule: RuleIndex(0),
        action: 0,
        error: ActionError::VlanOnTunVnic,
    };
    let vlan_match = Problem::InvalidMatch {
        rule: RuleIndex(0),
        error: MatchError::VlanOnTunVnic,
    };
    let none = TunVlan::default();
    let tx = TunVlan {
        push: true,
        pop_and_match: false,
    };
    let rx = TunVlan {
        push: false,
        pop_and_match: true,
    };
    assert_eq!(check(none, &push), vec![act]);
    assert_eq!(check(tx, &push), vec![]);
    assert_eq!(check(rx, &push), vec![act]);
    assert_eq!(check(none, &pop), vec![vlan_match, act]);
    assert_eq!(check(tx, &pop), vec![vlan_match, act]);
    assert_eq!(check(rx, &pop), vec![]);
    // The values are checked whatever the context.
    let bad = Rule::new(
        "bad",
        1,
        on_tun,
        &[Action::PushVlan(VlanTag { vid: 4095, pcp: 3 })],
    );
    assert_eq!(
        check(tx, &bad),
        vec![Problem::InvalidAction {
            rule: RuleIndex(0),
            action: 0,
            error: ActionError::VlanOutOfRange(4095),
        }]
    );
    assert!(ActionError::VlanOnTunVnic.to_string().contains("vxlan"));
}

/// The conflicts and duplicates of a set, as a loop over every pair of each priority level
/// reports them (the validator's check before `overlap`): the reference.
fn pairwise_conflicts(rules: &[Rule]) -> Vec<Problem> {
    let acts = |i: usize| CompiledActions::compile(&rules[i].actions);
    let mut order: Vec<usize> = (0..rules.len())
        .filter(|&i| rules[i].matcher.check().is_ok())
        .collect();
    order.sort_by_key(|&i| (rules[i].priority, i));
    let mut out = Vec::new();
    for level in order.chunk_by(|&a, &b| rules[a].priority == rules[b].priority) {
        for (x, &a) in level.iter().enumerate() {
            for &b in &level[x + 1..] {
                if !rules[a].matcher.overlaps(&rules[b].matcher) {
                    continue;
                }
                let (ra, rb) = (RuleIndex(a as u32), RuleIndex(b as u32));
                if acts(a) != acts(b) {
                    out.push(Problem::Conflict { a: ra, b: rb });
                } else if rules[a].matcher == rules[b].matcher
                    && rules[a].condition == rules[b].condition
                {
                    out.push(Problem::Duplicate { rule: rb, of: ra });
                }
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The conflict check, which does not compare every pair, reports the conflicts and
    /// duplicates a pairwise loop reports, in the same order; with a bounded report it keeps
    /// the same first problems and counts the same total. Few priorities, so levels hold
    /// up to a few hundred rules (the search splits them) over a small space (they overlap).
    #[test]
    fn conflict_check_equals_pairwise(seed in any::<u64>(), n in 10usize..600, levels in 1u32..4) {
        let mut g = Gen(ChaCha8Rng::seed_from_u64(seed));
        let rules: Vec<Rule> = (0..n)
            .map(|i| {
                let mut r = g.rule(i);
                r.priority %= levels;
                r
            })
            .collect();
        let ctx = RuleContext { nics: NicSet::ALL, vnics: vec![VnicLayer::Tap; 2], ..ctx() };
        let all = |max_problems| {
            let cfg = RuleSetConfig { max_problems, ..RuleSetConfig::default() };
            RuleSet::build(&rules, &ctx, &cfg).err()
        };
        let full = all(usize::MAX);
        let found: Vec<Problem> = full
            .as_ref()
            .map(|e| {
                e.problems()
                    .iter()
                    .filter(|p| matches!(p, Problem::Conflict { .. } | Problem::Duplicate { .. }))
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        prop_assert_eq!(&found, &pairwise_conflicts(&rules));
        // The generator makes conflicts (the property is not vacuous).
        prop_assert!(n < 40 || !found.is_empty());
        if let Some(full) = full {
            for max in [1, 7, 50] {
                let bounded = all(max).expect("the same problems");
                let keep = max.min(full.problems().len());
                prop_assert_eq!(bounded.problems(), &full.problems()[..keep]);
                prop_assert_eq!(bounded.total(), full.total());
            }
        }
    }
}
