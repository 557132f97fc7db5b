//! Tests of VLAN tags in VXLAN inner frames: a TX rule's `push_vlan` on a VXLAN-tunnelled
//! flow (bytes), an RX rule's `pop_vlan` and VLAN match on a tunnel's tagged frames (bytes
//! and counted drops), and the rule checks that refuse VLAN everywhere else, naming the
//! rule. The interop with a Linux VLAN device on a VXLAN device is in
//! crates/braid/tests/tunnels.rs.

use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr};

use braid_wire::tunnel::{DecapConfig, GreEncap, InnerFormat, PayloadKind, PayloadMeta, decap};

use super::test_util::{
    LOCAL, MACS, NOW, REMOTE, drain_deliver, drain_outer, gre_encap, outer, udp_packet, vxlan_encap,
};
use super::*;
use crate::engine::{
    ClassMatch, ClassPolicy, EngineConfig, FlowClass, RuleDirection, RuleTable, RulesError,
};
use crate::rules::{Action, PortRange, Rule, RuleMatch, TunnelId, VlanTag as RuleVlanTag};
use crate::{DropReason, Instant, NicId};

/// VXLAN with VNI 42; the far end's if `mirror`.
fn vxlan(mirror: bool) -> Encap {
    vxlan_encap(mirror, 42)
}

/// GRE carrying IP, without key or sequence numbers.
fn gre() -> Encap {
    gre_encap(false, None, false)
}

fn udp_to(port: u16) -> RuleMatch {
    RuleMatch {
        protocol: Some(17),
        dst_ports: Some(PortRange::single(port)),
        ..RuleMatch::ANY
    }
}

const TAG: RuleVlanTag = RuleVlanTag { vid: 100, pcp: 3 };

/// One NIC; `tunnels`; classes: UDP to 6000 in tunnel `class_tunnel` (if any), UDP to
/// 7000 in none.
fn config(tunnels: Vec<Encap>, class_tunnel: Option<u8>) -> EngineConfig {
    let mut cfg = super::test_util::config(
        tunnels
            .into_iter()
            .enumerate()
            .map(|(i, e)| TunnelSpec::new(&alloc::format!("t{i}"), NicId(0), e))
            .collect(),
    );
    let mut c = FlowClass::new("to-6000", ClassMatch::udp_dst_port(6000), ClassPolicy::Pin);
    c.tunnel = class_tunnel;
    cfg.classes.push(c);
    cfg.classes.push(FlowClass::new(
        "to-7000",
        ClassMatch::udp_dst_port(7000),
        ClassPolicy::Pin,
    ));
    cfg
}

/// The bytes of every packet `e` has for the vNIC, each checked to come from tunnel 0.
fn delivered(e: &mut Engine) -> Vec<Vec<u8>> {
    drain_deliver(e)
        .into_iter()
        .map(|(d, p)| {
            assert_eq!(d.tunnel, Some(0));
            p
        })
        .collect()
}

/// The inner frame of a VXLAN packet from `a`: MACs, TPID 0x8100, TCI (PCP 3, VID 100),
/// EtherType IPv4, then `inner` unchanged; and decap finds the tag.
fn assert_tagged(pkt: &[u8], inner: &[u8]) {
    assert_eq!(pkt.len(), 54 + inner.len(), "the tag adds 4 bytes");
    assert_eq!(&pkt[36..42], &MACS.dst);
    assert_eq!(&pkt[42..48], &MACS.src);
    assert_eq!(&pkt[48..54], &[0x81, 0x00, 0x60, 0x64, 0x08, 0x00]);
    assert_eq!(&pkt[54..], inner);
    assert_eq!(
        usize::from(u16::from_be_bytes([pkt[24], pkt[25]])),
        pkt.len() - 20,
        "udp length"
    );
    assert_eq!(braid_wire::checksum::checksum(&pkt[..20]), 0);
    let d = decap(pkt, &DecapConfig::default()).unwrap();
    let ip = d.inner_ip(pkt).unwrap();
    assert_eq!(&pkt[ip.range], inner);
    assert_eq!(
        ip.vlan.map(|t| (t.pcp, t.dei, t.vid)),
        Some((3, false, 100))
    );
}

#[test]
fn push_vlan_tags_the_inner_frame_of_a_class_tunnel_and_of_a_rule_tunnel() {
    let mut cfg = config(vec![vxlan(false)], Some(0));
    cfg.tx_rules = vec![
        // The class's VXLAN tunnel.
        Rule::new("tag-6000", 10, udp_to(6000), &[Action::PushVlan(TAG)]),
        // The rule's own VXLAN tunnel, with a rewrite too.
        Rule::new(
            "tag-7000",
            10,
            udp_to(7000),
            &[
                Action::SetDscp(46),
                Action::PushVlan(TAG),
                Action::VxlanEncap(TunnelId(0)),
            ],
        ),
    ];
    let mut a = Engine::new(cfg, Instant::ZERO).unwrap();
    let to_6000 = udp_packet(6000, 1, 300);
    let to_7000 = udp_packet(7000, 2, 200);
    assert_eq!(a.handle_tx(NOW, &to_6000), TxVerdict::Queued);
    assert_eq!(a.handle_tx(NOW, &to_7000), TxVerdict::Queued);
    let out = drain_outer(&mut a);
    assert_eq!(out.len(), 2);
    assert_tagged(&out[0], &to_6000);
    let mut rewritten = to_7000.clone();
    braid_wire::rewrite::apply_l3(&mut rewritten, &[braid_wire::rewrite::Edit::SetDscp(46)])
        .unwrap();
    assert_eq!(rewritten[1], 46 << 2);
    assert_tagged(&out[1], &rewritten);
    let stats = a.tunnel_stats(0).unwrap();
    assert_eq!(stats.tx_vlan_tagged_count, 2);
    assert_eq!(stats.tx_packets_count, 2);
    assert_eq!(a.stats().drops.total(), 0);
}

/// The peer's frames: VXLAN to `b` (the mirror endpoint), inner `inner` tagged with `vid`
/// (or untagged), built by braid-wire's encap as a Linux VLAN device on vxlan0 sends them.
fn from_peer(inner: &[u8], vid: Option<u16>) -> Vec<u8> {
    let Encap::Vxlan(v) = vxlan(false) else {
        unreachable!()
    };
    let meta = braid_wire::tunnel::EncapMeta {
        flow_hash: 7,
        ip_id: 9,
        gre_seq: 0,
        vlan: vid.map(|vid| braid_wire::rewrite::VlanTag {
            pcp: 0,
            dei: false,
            vid,
        }),
    };
    let mut out = vec![0u8; 2000];
    let n = v.encap_into(inner, &mut out, meta).unwrap();
    out.truncate(n);
    out
}

#[test]
fn pop_vlan_delivers_tagged_frames_its_rules_match_and_drops_the_rest() {
    let mut cfg = config(vec![vxlan(true)], Some(0));
    cfg.rx_rules = vec![
        Rule::new(
            "vlan-100",
            10,
            RuleMatch {
                vlan: Some(100),
                ..RuleMatch::ANY
            },
            &[Action::PopVlan],
        ),
        Rule::new(
            "vlan-200-dscp",
            10,
            RuleMatch {
                vlan: Some(200),
                ..RuleMatch::ANY
            },
            &[Action::PopVlan, Action::SetDscp(10)],
        ),
    ];
    let mut b = Engine::new(cfg, Instant::ZERO).unwrap();
    let p = |i: u8| udp_packet(6002, u32::from(i), 100 + usize::from(i));
    // VLAN 100: popped; 200: popped and rewritten; 300: no rule pops it; untagged: no
    // rule needed; a priority tag (VID 0) belongs to no VLAN: delivered as untagged.
    assert_eq!(b.handle_tunnel_rx(NOW, &from_peer(&p(1), Some(100))), Ok(0));
    assert_eq!(b.handle_tunnel_rx(NOW, &from_peer(&p(2), Some(200))), Ok(0));
    assert_eq!(b.handle_tunnel_rx(NOW, &from_peer(&p(3), Some(300))), Ok(0));
    assert_eq!(b.handle_tunnel_rx(NOW, &from_peer(&p(4), None)), Ok(0));
    assert_eq!(b.handle_tunnel_rx(NOW, &from_peer(&p(5), Some(0))), Ok(0));
    // The same through the UDP socket's entry (the VXLAN header onward).
    let whole = from_peer(&p(6), Some(100));
    let meta = PayloadMeta {
        src: IpAddr::V4(LOCAL),
        dst: IpAddr::V4(REMOTE),
        kind: PayloadKind::Vxlan { src_port: 50000 },
    };
    assert_eq!(b.handle_tunnel_payload_rx(NOW, &meta, &whole[28..]), Ok(0));
    let got = delivered(&mut b);
    let mut dscp_10 = p(2);
    braid_wire::rewrite::apply_l3(&mut dscp_10, &[braid_wire::rewrite::Edit::SetDscp(10)]).unwrap();
    assert_eq!(got, vec![p(1), dscp_10, p(4), p(5), p(6)]);
    assert_eq!(b.stats().drops.get(DropReason::TunnelVlanNotPopped), 1);
    assert_eq!(b.stats().drops.total(), 1);
    let stats = b.tunnel_stats(0).unwrap();
    assert_eq!(stats.rx_vlan_popped_count, 3);
    assert_eq!(stats.rx_packets_count, 6);
}

#[test]
fn a_tagged_frame_without_rx_rules_or_over_gre_is_dropped_and_counted() {
    // No RX rule at all: nothing pops the tag.
    let mut b = Engine::new(config(vec![vxlan(true)], Some(0)), Instant::ZERO).unwrap();
    let inner = udp_packet(6002, 1, 50);
    assert_eq!(
        b.handle_tunnel_rx(NOW, &from_peer(&inner, Some(100))),
        Ok(0)
    );
    assert_eq!(b.handle_tunnel_rx(NOW, &from_peer(&inner, None)), Ok(0));
    assert_eq!(delivered(&mut b), vec![inner.clone()]);
    assert_eq!(b.stats().drops.get(DropReason::TunnelVlanNotPopped), 1);
    // A GRE tunnel carrying Ethernet (transparent bridging) with a tag: not VXLAN, so not
    // an IP packet braid delivers.
    let mut g = GreEncap::new(outer(true), InnerFormat::IpInEthernet(MACS));
    let mut b = Engine::new(config(vec![Encap::Gre(g)], Some(0)), Instant::ZERO).unwrap();
    g.outer.ip = outer(false);
    let meta = braid_wire::tunnel::EncapMeta {
        vlan: Some(braid_wire::rewrite::VlanTag {
            pcp: 0,
            dei: false,
            vid: 100,
        }),
        ..Default::default()
    };
    let mut out = vec![0u8; 2000];
    let n = g.encap_into(&inner, &mut out, meta).unwrap();
    assert_eq!(
        b.handle_tunnel_rx(NOW, &out[..n]),
        Err(DropReason::TunnelInnerNotIp)
    );
}

/// The refusal of `rules` in `direction` against `cfg`: its rule index and reason.
fn refusal(cfg: &EngineConfig, direction: RuleDirection, rules: Vec<Rule>) -> (u32, &'static str) {
    match RuleTable::build(cfg, direction, rules) {
        Err(RulesError::Unsupported { refusal, name }) => {
            assert!(!name.is_empty());
            (refusal.rule.0, refusal.why)
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn vlan_outside_a_vxlan_inner_frame_is_refused_naming_the_rule() {
    let push = |m: RuleMatch, extra: &[Action]| {
        let mut actions = vec![Action::PushVlan(TAG)];
        actions.extend_from_slice(extra);
        Rule::new("push", 10, m, &actions)
    };
    let ok = |cfg: &EngineConfig, d, rules: Vec<Rule>| RuleTable::build(cfg, d, rules).unwrap();
    let tx = RuleDirection::Tx;
    let rx = RuleDirection::Rx;

    // Accepted: the class's VXLAN tunnel covers the match; the rule's own VXLAN tunnel.
    let vx_class = config(vec![vxlan(false), gre()], Some(0));
    ok(&vx_class, tx, vec![push(udp_to(6000), &[])]);
    ok(
        &vx_class,
        tx,
        vec![push(RuleMatch::ANY, &[Action::VxlanEncap(TunnelId(0))])],
    );

    // Refused: the rule's GRE tunnel; a class without a tunnel or with a GRE one; a match
    // wider than the VXLAN class (UDP to 7000 is in an untunnelled class, UDP to 5999 in
    // none).
    let cases = [
        (
            &vx_class,
            push(udp_to(6000), &[Action::GreEncap(TunnelId(1))]),
            "gre",
        ),
        (
            &vx_class,
            push(udp_to(7000), &[]),
            "class without a vxlan tunnel",
        ),
        (
            &vx_class,
            push(
                RuleMatch {
                    protocol: Some(17),
                    ..RuleMatch::ANY
                },
                &[],
            ),
            // UDP to 7000 is in the class without a tunnel.
            "class without a vxlan tunnel",
        ),
        (
            &vx_class,
            push(
                RuleMatch {
                    protocol: Some(17),
                    dst_ports: Some(PortRange::new(5999, 6000)),
                    ..RuleMatch::ANY
                },
                &[],
            ),
            "no flow class with a vxlan tunnel",
        ),
        (
            &config(vec![gre(), vxlan(false)], Some(0)),
            push(udp_to(6000), &[]),
            "class without a vxlan tunnel",
        ),
        (
            &config(vec![], None),
            push(udp_to(6000), &[]),
            "class without a vxlan tunnel",
        ),
    ];
    for (cfg, rule, why) in cases {
        let rules = vec![
            Rule::new("first", 1, udp_to(9), &[Action::SetDscp(1)]),
            rule,
        ];
        let (index, reason) = refusal(cfg, tx, rules.clone());
        assert_eq!(index, 1, "{reason}");
        assert!(reason.contains(why), "{reason:?} should say {why:?}");
        // The message names the direction, the rule and its name.
        let e = RuleTable::build(cfg, tx, rules).unwrap_err().to_string();
        assert!(e.starts_with("tx_rules[1] \"push\": action #0: "), "{e}");
    }

    // Pop on TX, push on RX, pop on RX without a VXLAN tunnel.
    let pop = Rule::new("pop", 10, RuleMatch::ANY, &[Action::PopVlan]);
    assert!(
        refusal(&vx_class, tx, vec![pop.clone()])
            .1
            .contains("pop_vlan on tx")
    );
    assert!(
        refusal(&vx_class, rx, vec![push(RuleMatch::ANY, &[])])
            .1
            .contains("push_vlan on rx")
    );
    assert!(
        refusal(&config(vec![gre()], Some(0)), rx, vec![pop.clone()])
            .1
            .contains("needs a vxlan tunnel")
    );
    ok(&vx_class, rx, vec![pop]);

    // A VLAN match: on RX with a VXLAN tunnel; never on TX (a TUN packet has no tag).
    let tagged = RuleMatch {
        vlan: Some(100),
        ..RuleMatch::ANY
    };
    let pop_100 = Rule::new("pop-100", 10, tagged, &[Action::PopVlan]);
    ok(&vx_class, rx, vec![pop_100]);
    let drop_100 = Rule::new("drop-100", 10, tagged, &[Action::Drop]);
    assert!(matches!(
        RuleTable::build(&vx_class, tx, vec![drop_100.clone()]),
        Err(RulesError::Invalid { .. })
    ));
    let (index, reason) = refusal(&config(vec![gre()], Some(0)), rx, vec![drop_100]);
    assert_eq!(index, 0);
    assert!(
        reason.contains("a vlan match needs a vxlan tunnel"),
        "{reason}"
    );
    // The engine refuses the same at build.
    let mut cfg = config(vec![vxlan(false)], None);
    cfg.tx_rules = vec![push(udp_to(6000), &[])];
    let e = Engine::new(cfg, Instant::ZERO).unwrap_err().to_string();
    assert!(
        e.contains("tx_rules[0] \"push\"") && e.contains("vxlan"),
        "{e}"
    );
}

#[test]
fn a_push_on_a_flow_that_lost_its_vxlan_tunnel_is_a_counted_drop() {
    // The run-time check behind the table check: a tag for a GRE tunnel (not expected:
    // tables are checked against the tunnels), straight into the tunnel stage.
    let mut a = Engine::new(config(vec![gre()], Some(0)), Instant::ZERO).unwrap();
    let tag = braid_wire::rewrite::VlanTag {
        pcp: 0,
        dei: false,
        vid: 5,
    };
    assert_eq!(
        a.tunnel_tx(0, crate::FlowId(1), &udp_packet(6000, 0, 10), Some(tag)),
        TxVerdict::Drop(DropReason::RuleVlanNoTunnel)
    );
    assert!(drain_outer(&mut a).is_empty());
    assert_eq!(a.store_used_bytes(), 0);
}

fn gre_in_ethernet() -> Encap {
    Encap::Gre(GreEncap::new(outer(false), InnerFormat::IpInEthernet(MACS)))
}

/// GRE gets no tag even with an inner Ethernet header (transparent Ethernet bridging,
/// which the tunnel table allows): braid tags and untags VXLAN inner frames only, and the
/// refusal says so rather than that GRE has no Ethernet header.
#[test]
fn push_vlan_onto_gre_is_refused_even_with_an_inner_ethernet_header() {
    let tx = RuleDirection::Tx;
    let cfg = config(vec![vxlan(false), gre_in_ethernet()], Some(1));
    // The rule's own GRE tunnel.
    let rule = Rule::new(
        "tag-gre",
        10,
        udp_to(6000),
        &[Action::PushVlan(TAG), Action::GreEncap(TunnelId(1))],
    );
    let (index, reason) = refusal(&cfg, tx, vec![rule]);
    assert_eq!(index, 0);
    assert!(
        reason.contains("the rule's tunnel is gre")
            && reason.contains("only into vxlan inner ethernet headers")
            && reason.contains("untagged frames"),
        "{reason}"
    );
    // The class's GRE tunnel.
    let rule = Rule::new("tag-class", 10, udp_to(6000), &[Action::PushVlan(TAG)]);
    let (_, reason) = refusal(&cfg, tx, vec![rule]);
    assert!(reason.contains("class without a vxlan tunnel"), "{reason}");
    // The tunnel stage refuses a tag for it too (the run-time check behind the tables').
    let mut a = Engine::new(cfg, Instant::ZERO).unwrap();
    let tag = braid_wire::rewrite::VlanTag {
        pcp: 0,
        dei: false,
        vid: 5,
    };
    assert_eq!(
        a.tunnel_tx(1, crate::FlowId(1), &udp_packet(6000, 0, 10), Some(tag)),
        TxVerdict::Drop(DropReason::RuleVlanNoTunnel)
    );
    assert_eq!(
        a.handle_tx(NOW, &udp_packet(6000, 0, 10)),
        TxVerdict::Queued
    );
    let out = drain_outer(&mut a);
    assert_eq!(out.len(), 1);
    let d = decap(&out[0], &DecapConfig::default()).unwrap();
    assert_eq!(d.inner_ip(&out[0]).unwrap().vlan, None, "untagged");
}

/// An RX rule that matches a VLAN id takes tagged packets only, so it must pop the tag (or
/// drop them): without `pop_vlan` every packet it matches would be dropped as
/// `tunnel_vlan_not_popped`. Refused at build, naming the rule and saying to add
/// `pop_vlan`.
#[test]
fn an_rx_vlan_match_without_pop_vlan_is_refused() {
    let rx = RuleDirection::Rx;
    let cfg = config(vec![vxlan(true)], Some(0));
    let tagged = RuleMatch {
        vlan: Some(100),
        dst: Some(crate::rules::IpPrefix::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).unwrap()),
        ..RuleMatch::ANY
    };
    let nat = Rule::new(
        "nat-100",
        10,
        tagged,
        &[Action::SetDstAddr(IpAddr::V4(Ipv4Addr::new(
            192, 168, 5, 9,
        )))],
    );
    let rules = vec![
        Rule::new(
            "pop-200",
            10,
            RuleMatch {
                vlan: Some(200),
                ..RuleMatch::ANY
            },
            &[Action::PopVlan],
        ),
        nat.clone(),
    ];
    let e = RuleTable::build(&cfg, rx, rules).unwrap_err();
    match &e {
        RulesError::Unsupported { refusal, name } => {
            assert_eq!(
                (refusal.rule.0, refusal.action, name.as_str()),
                (1, None, "nat-100")
            );
        }
        other => panic!("{other:?}"),
    }
    let text = e.to_string();
    assert!(
        text.starts_with("rx_rules[1] \"nat-100\": match: a vlan match without pop_vlan")
            && text.contains("add pop_vlan"),
        "{text}"
    );
    let mut bad = cfg.clone();
    bad.rx_rules = vec![nat];
    assert!(Engine::new(bad, Instant::ZERO).is_err());
    // With pop_vlan, or dropping: accepted. The NAT applies to the popped packet.
    let popped = Rule::new(
        "nat-100",
        10,
        tagged,
        &[
            Action::PopVlan,
            Action::SetDstAddr(IpAddr::V4(Ipv4Addr::new(192, 168, 5, 9))),
        ],
    );
    RuleTable::build(
        &cfg,
        rx,
        vec![Rule::new("drop-100", 10, tagged, &[Action::Drop])],
    )
    .unwrap();
    let mut good = cfg;
    good.rx_rules = vec![popped];
    let mut b = Engine::new(good, Instant::ZERO).unwrap();
    let inner = udp_packet(6002, 1, 40);
    assert_eq!(
        b.handle_tunnel_rx(NOW, &from_peer(&inner, Some(100))),
        Ok(0)
    );
    let got = delivered(&mut b);
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0][16..20], &[192, 168, 5, 9]);
    assert_eq!(b.stats().drops.total(), 0);
}
