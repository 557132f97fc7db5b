//! Tests of [`Command::ReplacePolicies`]: a tunnel that stays keeps its sequence numbers,
//! IPv4 ids, receive check, counters and queued packets under its new index; a removed one
//! drops its queued packets (counted, store freed) and its flows go back to braid's NICs;
//! a changed one starts afresh; tunnels added to an engine that had none carry packets both
//! ways; the parts are checked against each other (a rule on a QoS class the same command
//! adds); and every refusal changes nothing.

use alloc::vec;
use alloc::vec::Vec;

use braid_wire::tunnel::{DecapConfig, Tunnel, decap};

use super::Policies;
use crate::engine::tunnel::test_util::{
    NOW, config, drain_deliver, engine, gre_encap, gre_fields, next_outer, policies, replace,
    tunnelled_class, udp_packet, udp_rule, vxlan_encap,
};
use crate::engine::{
    Command, CommandError, Engine, QosError, RuleDirection, TunnelRefusal, TunnelSpec, TxVerdict,
};
use crate::qos::{ClassConfig as QosClassConfig, ClassId, QosConfig};
use crate::rules::{Action, QosClass, Rule, RuleMatch, TunnelId};
use crate::{DropReason, Instant, NicId};

/// A GRE tunnel with `key`, sequence numbers sent and checked; `mirror`: the far end's.
fn gre(name: &str, key: u32, mirror: bool) -> TunnelSpec {
    TunnelSpec::new(name, NicId(0), gre_encap(mirror, Some(key), true))
}

/// A VXLAN tunnel with `vni`; `mirror`: the far end's.
fn vxlan(name: &str, vni: u32, mirror: bool) -> TunnelSpec {
    TunnelSpec::new(name, NicId(0), vxlan_encap(mirror, vni))
}

/// A GRE tunnel that stays (same name, NIC and encapsulation) while another is added in
/// front of it: it keeps its sequence numbers, IPv4 ids, counters and queued packet under
/// its new index, its receive check too (a replayed packet is still out of order), and the
/// class that names it follows it.
#[test]
fn a_tunnel_that_stays_keeps_its_state_under_its_new_index() {
    let mut a = engine(vec![gre("g", 7, false)], Some(0));
    let mut b = engine(vec![gre("g", 7, true)], Some(0));
    let sent: Vec<Vec<u8>> = (0..3).map(|s| udp_packet(6000, s, 100)).collect();
    for p in &sent {
        assert_eq!(a.handle_tx(NOW, p), TxVerdict::Queued);
    }
    let first: Vec<_> = (0..2).map(|_| next_outer(&mut a).unwrap()).collect();
    assert_eq!(a.tunnel_tx_queued(), 1);
    // a receives b's packets 0 and 1; b's 1 is kept to be replayed.
    let mut from_b = Vec::new();
    for s in 0..3 {
        assert_eq!(
            b.handle_tx(NOW, &udp_packet(6000, 10 + s, 80)),
            TxVerdict::Queued
        );
        from_b.push(next_outer(&mut b).unwrap().1);
    }
    assert_eq!(a.handle_tunnel_rx(NOW, &from_b[0]), Ok(0));
    assert_eq!(a.handle_tunnel_rx(NOW, &from_b[1]), Ok(0));
    let before = *a.tunnel_stats(0).unwrap();

    let p = policies(
        &a,
        vec![vxlan("v", 42, false), gre("g", 7, false)],
        Vec::new(),
    );
    replace(&mut a, p).unwrap();
    assert_eq!(a.config().tunnels.len(), 2);
    assert_eq!(
        a.config().classes[0].tunnel,
        Some(1),
        "the class follows its name"
    );
    assert_eq!(a.tunnel_stats(1), Some(&before), "counters kept");
    assert_eq!(a.tunnel_stats(0), Some(&Default::default()), "the new one");
    assert_eq!(a.tunnel_tx_queued(), 1, "its queued packet kept");
    assert_eq!(a.stats().drops.get(DropReason::TunnelRemoved), 0);
    // The flow is looked up again (the rule sets were swapped) but not moved.
    assert_eq!(
        a.handle_tx(NOW, &udp_packet(6000, 3, 100)),
        TxVerdict::Queued
    );
    assert_eq!(a.rule_stats().tx_flows_replaced_count, 0);
    let after: Vec<_> = (0..2).map(|_| next_outer(&mut a).unwrap()).collect();
    assert!(next_outer(&mut a).is_none());
    // One stream: sequence numbers 0..4, consecutive IPv4 ids, the bytes unchanged.
    let all: Vec<_> = first.iter().chain(&after).collect();
    let id0 = gre_fields(&all[0].1).2;
    for (i, (tunnel, outer)) in all.iter().enumerate() {
        assert_eq!(*tunnel, if i < 2 { 0 } else { 1 });
        let (key, seq, id, inner) = gre_fields(outer);
        assert_eq!(key, Some(7));
        assert_eq!(seq, Some(i as u32));
        assert_eq!(id, id0.wrapping_add(i as u16));
        let expected = if i < 3 {
            sent[i].clone()
        } else {
            udp_packet(6000, 3, 100)
        };
        assert_eq!(inner, expected);
    }
    let stats = a.tunnel_stats(1).unwrap();
    assert_eq!(stats.tx_packets_count, 4);
    assert_eq!(
        stats.tx_bytes_count,
        all.iter().map(|(_, o)| o.len() as u64).sum::<u64>()
    );
    // The receive check kept its place: b's packet 1 again is out of order (a restarted
    // check would take it as its first), then b's packet 2 is in order.
    assert_eq!(
        a.handle_tunnel_rx(NOW, &from_b[1]),
        Err(DropReason::TunnelSeqOutOfOrder)
    );
    assert_eq!(a.handle_tunnel_rx(NOW, &from_b[2]), Ok(1));
    assert_eq!(a.tunnel_stats(1).unwrap().rx_packets_count, 3);
    let got = drain_deliver(&mut a);
    let tunnels: Vec<_> = got.iter().map(|(d, _)| d.tunnel).collect();
    assert_eq!(
        tunnels,
        [Some(1), Some(1), Some(1)],
        "queued ones renumbered"
    );
    assert_eq!(got[2].1, udp_packet(6000, 12, 80));
}

/// A removed tunnel: its queued packets, both ways, are freed and counted; the flow a rule
/// had put into it is looked up again, finds no rule and goes to the braid peer, placed by
/// the flow controller.
#[test]
fn a_removed_tunnel_drops_its_queued_packets_and_its_flows_go_back_to_braid() {
    let mut cfg = config(vec![gre("g0", 1, false), gre("g1", 2, false)]);
    cfg.tx_rules = vec![udp_rule("to-g1", 7000, Action::GreEncap(TunnelId(1)))];
    let mut a = Engine::new(cfg, Instant::ZERO).unwrap();
    let mut b = Engine::new(
        {
            let mut c = config(vec![gre("g1", 2, true)]);
            c.tx_rules = vec![udp_rule("to-g1", 7000, Action::GreEncap(TunnelId(0)))];
            c
        },
        Instant::ZERO,
    )
    .unwrap();
    for s in 0..3 {
        assert_eq!(
            a.handle_tx(NOW, &udp_packet(7000, s, 200)),
            TxVerdict::Queued
        );
        assert_eq!(
            b.handle_tx(NOW, &udp_packet(7000, s, 50)),
            TxVerdict::Queued
        );
    }
    for _ in 0..2 {
        let (_, outer) = next_outer(&mut b).unwrap();
        assert_eq!(a.handle_tunnel_rx(NOW, &outer), Ok(1));
    }
    assert_eq!(a.tunnel_tx_queued(), 3);
    assert_eq!(a.controller().flow_count(), 0, "tunnelled, not placed");
    assert!(a.store_used_bytes() > 0);

    let p = policies(&a, vec![gre("g0", 1, false)], Vec::new());
    replace(&mut a, p).unwrap();
    assert_eq!(a.stats().drops.get(DropReason::TunnelRemoved), 5);
    assert_eq!(a.tunnel_tx_queued(), 0);
    assert!(drain_deliver(&mut a).is_empty());
    assert_eq!(a.store_used_bytes(), 0, "every buffer freed");
    assert_eq!(a.tunnel_stats(1), None);

    // The flow's next packet: no rule, no tunnel, a braid packet on the NIC.
    let p = udp_packet(7000, 3, 200);
    assert_eq!(a.handle_tx(NOW, &p), TxVerdict::Queued);
    assert_eq!(a.rule_stats().tx_flows_replaced_count, 1);
    assert_eq!(a.controller().flow_count(), 1);
    assert!(next_outer(&mut a).is_none());
    let mut buf = vec![0u8; 2000];
    while a.poll_transmit(NOW, &mut buf).is_some() {}
    assert_eq!(
        a.nic_stats(NicId(0)).unwrap().tx_payload_bytes_count,
        p.len() as u64
    );
    // b's packets for the removed tunnel are now unknown.
    let (_, outer) = next_outer(&mut b).unwrap();
    assert_eq!(
        a.handle_tunnel_rx(NOW, &outer),
        Err(DropReason::TunnelUnknown)
    );
}

/// A tunnel of the same name whose key changed is a new tunnel: its queued packet (with the
/// old key) is dropped and counted, its counters and sequence numbers start again, and the
/// class keeps sending into it.
#[test]
fn a_changed_tunnel_starts_afresh() {
    let mut a = engine(vec![gre("g", 7, false)], Some(0));
    for s in 0..2 {
        assert_eq!(
            a.handle_tx(NOW, &udp_packet(6000, s, 100)),
            TxVerdict::Queued
        );
    }
    let (_, first) = next_outer(&mut a).unwrap();
    assert_eq!(gre_fields(&first).1, Some(0));
    let p = policies(&a, vec![gre("g", 8, false)], Vec::new());
    replace(&mut a, p).unwrap();
    assert_eq!(a.stats().drops.get(DropReason::TunnelRemoved), 1);
    assert_eq!(a.tunnel_stats(0), Some(&Default::default()));
    assert_eq!(a.config().classes[0].tunnel, Some(0));
    assert_eq!(
        a.handle_tx(NOW, &udp_packet(6000, 2, 100)),
        TxVerdict::Queued
    );
    let (tunnel, outer) = next_outer(&mut a).unwrap();
    let (key, seq, _, inner) = gre_fields(&outer);
    assert_eq!((tunnel, key, seq), (0, Some(8), Some(0)));
    assert_eq!(inner, udp_packet(6000, 2, 100));
    assert_eq!(a.tunnel_stats(0).unwrap().tx_packets_count, 1);
    assert_eq!(a.rule_stats().tx_flows_replaced_count, 0, "still tunnelled");
    assert_eq!(a.controller().flow_count(), 0);
}

/// Tunnels and a rule added to an engine that had none: the flow the rule names, installed
/// before as braid traffic, is taken off the flow controller and tunnelled; the far end's
/// packets come back through the new tunnel.
#[test]
fn tunnels_added_to_an_engine_without_any_carry_packets_both_ways() {
    let mut a = engine(Vec::new(), None);
    assert_eq!(
        a.handle_tx(NOW, &udp_packet(6001, 0, 100)),
        TxVerdict::Queued
    );
    assert_eq!(a.controller().flow_count(), 1);
    let p = policies(
        &a,
        vec![vxlan("v", 42, false)],
        vec![udp_rule("to-v", 6001, Action::VxlanEncap(TunnelId(0)))],
    );
    replace(&mut a, p).unwrap();
    let sent = udp_packet(6001, 1, 100);
    assert_eq!(a.handle_tx(NOW, &sent), TxVerdict::Queued);
    assert_eq!(a.rule_stats().tx_flows_replaced_count, 1);
    assert_eq!(a.controller().flow_count(), 0);
    let (tunnel, outer) = next_outer(&mut a).unwrap();
    assert_eq!(tunnel, 0);
    let d = decap(&outer, &DecapConfig::default()).unwrap();
    assert!(matches!(d.tunnel, Tunnel::Vxlan { vni: 42, .. }));
    let (_, inner) = d.inner_l3(&outer).unwrap();
    assert_eq!(&outer[inner], &sent[..]);
    assert_eq!(a.tunnel_stats(0).unwrap().tx_packets_count, 1);

    // The far end (a mirrored engine) answers through it.
    let mut b = engine(vec![vxlan("v", 42, true)], Some(0));
    let back = udp_packet(6000, 9, 300);
    assert_eq!(b.handle_tx(NOW, &back), TxVerdict::Queued);
    let (_, outer) = next_outer(&mut b).unwrap();
    assert_eq!(a.handle_tunnel_rx(NOW, &outer), Ok(0));
    let got = drain_deliver(&mut a);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].0.tunnel, &got[0].1), (Some(0), &back));
    assert_eq!(a.stats().drops.total(), 0);
}

/// The parts are checked against each other, not against what is in force: a rule that
/// puts its flow in a QoS class only the new `qos` has is refused by `ReplaceRules` alone,
/// and taken with it in one `ReplacePolicies`.
#[test]
fn rules_are_checked_against_the_qos_classes_of_the_same_set() {
    let mut a = engine(Vec::new(), None);
    let mut cfg = a.config().clone();
    cfg.qos
        .classes
        .push(QosClassConfig::weighted(2, 4, 100, 1 << 20));
    cfg.tx_rules = vec![udp_rule(
        "gold",
        5000,
        Action::SetPriorityClass(QosClass(2)),
    )];
    let p = Policies::of(&cfg).unwrap();
    let alone = Command::ReplaceRules {
        tx: alloc::boxed::Box::new(p.tx_rules.clone()),
        rx: alloc::boxed::Box::new(p.rx_rules.clone()),
    };
    assert!(matches!(
        a.apply(NOW, alone),
        Err(CommandError::InvalidRules(_))
    ));
    replace(&mut a, p).unwrap();
    assert_eq!(a.config().qos, cfg.qos);
    assert_eq!(
        a.handle_tx(NOW, &udp_packet(5000, 0, 100)),
        TxVerdict::Queued
    );
    assert_eq!(a.nic_qos_queued(NicId(0), ClassId(2)).map(|q| q.0), Some(1));
}

/// Every refusal names the part at fault and changes nothing: tunnels, QoS, rules, the
/// classes' tunnels, the queued packet and the sequence numbers stay as they were.
#[test]
fn a_refused_replacement_changes_nothing() {
    let mut a = engine(vec![gre("g", 7, false)], Some(0));
    let mut cfg = a.config().clone();
    cfg.tx_rules = vec![udp_rule("mark", 5000, Action::SetDscp(10))];
    replace(&mut a, Policies::of(&cfg).unwrap()).unwrap();
    assert_eq!(
        a.handle_tx(NOW, &udp_packet(6000, 0, 100)),
        TxVerdict::Queued
    );
    let config = a.config().clone();
    let version = a.tx_rule_set().version();
    let used = a.store_used_bytes();

    // A bad tunnel (the VNI does not fit in 24 bits).
    let p = policies(
        &a,
        vec![gre("g", 7, false), vxlan("v", 1 << 24, false)],
        Vec::new(),
    );
    let e = replace(&mut a, p).unwrap_err();
    assert_eq!(
        e,
        CommandError::InvalidTunnels(TunnelRefusal {
            tunnel: Some(1),
            field: "vni",
            why: "must fit in 24 bits (0..=16777215)",
        })
    );
    assert_eq!(
        alloc::format!("{e}"),
        "tunnel table refused: tunnels[1].vni: must fit in 24 bits (0..=16777215)"
    );
    // Two tunnels that accept the same packets.
    let p = policies(&a, vec![gre("g", 7, false), gre("h", 7, false)], Vec::new());
    let e = replace(&mut a, p).unwrap_err();
    assert!(
        alloc::format!("{e}").contains("tunnels[1]: accepts the same packets"),
        "{e}"
    );
    // The class's tunnel removed.
    let p = policies(&a, vec![gre("other", 9, false)], Vec::new());
    assert_eq!(
        replace(&mut a, p),
        Err(CommandError::ClassTunnelRemoved { class: 0 })
    );
    // A rule built for a table with a second tunnel, sent with a table without it.
    let mut p = policies(
        &a,
        vec![gre("g", 7, false), gre("h", 8, false)],
        vec![udp_rule("to-h", 7000, Action::GreEncap(TunnelId(1)))],
    );
    p.tunnels.pop();
    match replace(&mut a, p) {
        Err(CommandError::InvalidRules(r)) => assert_eq!(r.direction, RuleDirection::Tx),
        other => panic!("{other:?}"),
    }
    // A QoS configuration without a weighted class, with otherwise good tunnels and rules.
    let mut p = policies(
        &a,
        vec![vxlan("v", 42, false), gre("g", 7, false)],
        Vec::new(),
    );
    p.qos = QosConfig {
        classes: vec![QosClassConfig::strict(0, None, 100, 1 << 20)],
        ..QosConfig::default()
    };
    assert_eq!(
        replace(&mut a, p),
        Err(CommandError::InvalidQos(QosError::NoWeightedClass))
    );

    let c = a.config();
    assert_eq!(c.tunnels, config.tunnels);
    assert_eq!(c.qos, config.qos);
    assert_eq!(c.tx_rules, config.tx_rules);
    assert_eq!(c.classes, config.classes);
    assert_eq!(a.tx_rule_set().version(), version);
    assert_eq!(a.rule_stats().sets_replaced_count, 1);
    assert_eq!(a.store_used_bytes(), used);
    assert_eq!(a.stats().drops.total(), 0);
    assert_eq!(a.tunnel_tx_queued(), 1);
    let (tunnel, outer) = next_outer(&mut a).unwrap();
    let (key, seq, _, inner) = gre_fields(&outer);
    assert_eq!((tunnel, key, seq), (0, Some(7), Some(0)));
    assert_eq!(inner, udp_packet(6000, 0, 100));
}

/// The VLAN checks run against what the rules are to run with, not only at build: a
/// `push_vlan` whose flows' class tunnel becomes GRE (same name, other kind), an RX
/// `pop_vlan` or VLAN match with no VXLAN tunnel left, and, through `ReplaceRules`, tables
/// built for a VXLAN class on an engine whose class tunnel is GRE, are refused naming the
/// rule, and nothing changes. The class's tunnel is checked at its new index (it follows
/// its name).
#[test]
fn vlan_rules_are_checked_against_the_new_tunnels_and_classes() {
    use crate::engine::RuleTable;
    use crate::rules::{RuleIndex, VlanTag};
    let tag = Action::PushVlan(VlanTag { vid: 100, pcp: 0 });
    let vlan_100 = RuleMatch {
        vlan: Some(100),
        ..RuleMatch::ANY
    };
    let mut a = engine(vec![vxlan("t", 42, false)], Some(0));
    let mut cfg = a.config().clone();
    cfg.tx_rules = vec![
        udp_rule("mark", 5000, Action::SetDscp(10)),
        udp_rule("tag", 6000, tag),
    ];
    cfg.rx_rules = vec![Rule::new("untag", 1, vlan_100, &[Action::PopVlan])];
    let p = Policies::of(&cfg).unwrap();
    replace(&mut a, p.clone()).unwrap();
    let config = a.config().clone();
    let version = a.tx_rule_set().version();
    let refused = |e: CommandError| match e {
        CommandError::InvalidRules(r) => (r, alloc::format!("{e}")),
        other => panic!("{other:?}"),
    };

    // The class's tunnel "t" is GRE in the new table.
    let mut to_gre = p.clone();
    to_gre.tunnels = vec![gre("t", 7, false)];
    let (r, text) = refused(replace(&mut a, to_gre.clone()).unwrap_err());
    assert_eq!(
        (r.direction, r.rule, r.action),
        (RuleDirection::Tx, RuleIndex(1), Some(0))
    );
    assert!(
        text.contains("tx_rules[1]: action #0: push_vlan needs a vxlan-encapsulated flow"),
        "{text}"
    );
    // Without the push: the RX pop has no VXLAN tunnel left.
    to_gre.tx_rules = RuleTable::empty(RuleDirection::Tx);
    let (r, text) = refused(replace(&mut a, to_gre.clone()).unwrap_err());
    assert_eq!((r.direction, r.rule), (RuleDirection::Rx, RuleIndex(0)));
    assert!(text.contains("pop_vlan needs a vxlan tunnel"), "{text}");
    // Nor a VLAN match (which drops, so needs no pop).
    let mut drop_cfg = cfg.clone();
    drop_cfg.rx_rules = vec![Rule::new("drop-100", 1, vlan_100, &[Action::Drop])];
    to_gre.rx_rules = Policies::of(&drop_cfg).unwrap().rx_rules;
    let (r, text) = refused(replace(&mut a, to_gre).unwrap_err());
    assert_eq!(r.action, None);
    assert!(
        text.contains("rx_rules[0]: match: a vlan match needs a vxlan tunnel"),
        "{text}"
    );
    let c = a.config();
    assert_eq!(
        (&c.tunnels, &c.classes, &c.tx_rules, &c.rx_rules),
        (
            &config.tunnels,
            &config.classes,
            &config.tx_rules,
            &config.rx_rules
        ),
        "nothing changed"
    );
    assert_eq!(a.tx_rule_set().version(), version);

    // A GRE tunnel in front: "t" moves to index 1, and the class with it: accepted, and
    // the class's flows are tagged in "t".
    let mut moved = p;
    moved.tunnels = vec![gre("g", 7, false), vxlan("t", 42, false)];
    replace(&mut a, moved).unwrap();
    assert_eq!(a.config().classes[0].tunnel, Some(1));
    assert_eq!(
        a.handle_tx(NOW, &udp_packet(6000, 0, 100)),
        TxVerdict::Queued
    );
    let (tunnel, outer) = next_outer(&mut a).unwrap();
    assert_eq!(tunnel, 1);
    let d = decap(&outer, &DecapConfig::default()).unwrap();
    assert_eq!(d.inner_ip(&outer).unwrap().vlan.map(|t| t.vid), Some(100));

    // ReplaceRules: tables built for a VXLAN class tunnel, on an engine whose class
    // tunnel is GRE.
    let mut b = engine(vec![gre("t", 7, false)], Some(0));
    let version = b.tx_rule_set().version();
    let e = b
        .apply(
            NOW,
            Command::ReplaceRules {
                tx: alloc::boxed::Box::new(Policies::of(&cfg).unwrap().tx_rules),
                rx: alloc::boxed::Box::new(RuleTable::empty(RuleDirection::Rx)),
            },
        )
        .unwrap_err();
    let (r, _) = refused(e);
    assert_eq!((r.rule, r.action), (RuleIndex(1), Some(0)));
    assert_eq!(b.tx_rule_set().version(), version);
    assert!(b.config().tx_rules.is_empty());
}

/// A replacement that changes neither the rules nor the tunnels nor QoS (here only the
/// reorder holds) keeps the rule sets in force: their counters go on and the sets are not
/// counted as replaced (a condition that is on would stay on); their versions still move, so
/// the flows look their rule up again. A replacement with other rules swaps them.
#[test]
fn a_tuning_change_keeps_the_rule_sets_and_their_counters() {
    let mut a = engine(vec![gre("g", 7, false)], Some(0));
    let mut cfg = a.config().clone();
    cfg.tx_rules = vec![udp_rule("mark", 5000, Action::SetDscp(10))];
    replace(&mut a, Policies::of(&cfg).unwrap()).unwrap();
    assert_eq!(a.rule_stats().sets_replaced_count, 1);
    assert_eq!(
        a.handle_tx(NOW, &udp_packet(5000, 0, 100)),
        TxVerdict::Queued
    );
    let hits = |a: &Engine| a.rule_hits(RuleDirection::Tx)[0].packets_count;
    assert_eq!(hits(&a), 1);
    let version = a.tx_rule_set().version();

    let mut p = Policies::of(a.config()).unwrap();
    p.reorder.max_hold /= 2;
    replace(&mut a, p).unwrap();
    assert_eq!(a.config().reorder.max_hold, cfg.reorder.max_hold / 2);
    assert_eq!(a.rule_stats().sets_replaced_count, 1, "the sets stayed");
    assert_eq!(hits(&a), 1, "their counters too");
    assert!(a.tx_rule_set().version() > version, "lookups are stale");
    assert_eq!(
        a.handle_tx(NOW, &udp_packet(5000, 1, 100)),
        TxVerdict::Queued
    );
    assert_eq!(hits(&a), 2);

    let p = policies(
        &a,
        vec![gre("g", 7, false)],
        vec![udp_rule("mark", 5000, Action::SetDscp(12))],
    );
    replace(&mut a, p).unwrap();
    assert_eq!(
        a.rule_stats().sets_replaced_count,
        2,
        "other rules: swapped"
    );
    assert_eq!(hits(&a), 0, "new counters with the new set");
}

/// `reassembly.max_datagram_bytes` at its smallest (the vNIC MTU) does not bound the packet
/// store, which tunnel encapsulation uses too: a full-size vNIC packet still becomes an
/// outer GRE packet larger than the cap, and nothing is dropped.
#[test]
fn a_small_datagram_cap_does_not_bound_tunnel_packets() {
    // A 1500-byte vNIC over a 9000-byte link and tunnel, so the outer packet is whole.
    let mut tunnel = gre("g", 7, false);
    tunnel.mtu_bytes = 9000;
    let mut cfg = config(vec![tunnel]);
    cfg.nics = vec![crate::engine::NicSpec::udp_ipv4(
        NicId(0),
        "link0",
        1_000_000_000,
        9000,
    )];
    cfg.vnic_mtu = 1500;
    cfg.classes.push(tunnelled_class(Some(0)));
    let mut a = Engine::new(cfg, Instant::ZERO).unwrap();
    let mtu = a.config().vnic_mtu;
    let mut p = Policies::of(a.config()).unwrap();
    p.reassembly.max_datagram_bytes = mtu;
    replace(&mut a, p).unwrap();
    assert_eq!(a.config().reassembly.max_datagram_bytes, mtu);
    let packet = udp_packet(6000, 0, mtu as usize - 28);
    assert_eq!(packet.len(), mtu as usize);
    assert_eq!(a.handle_tx(NOW, &packet), TxVerdict::Queued);
    let (tunnel, outer) = next_outer(&mut a).expect("an outer packet");
    assert_eq!(tunnel, 0);
    assert!(
        outer.len() > mtu as usize,
        "{} bytes, mtu {mtu}",
        outer.len()
    );
    assert_eq!(gre_fields(&outer).3, packet, "the inner packet, whole");
    assert_eq!(a.stats().drops.total(), 0);
}
