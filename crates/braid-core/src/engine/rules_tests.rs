//! Tests of the rule engine in the engine: rewrites byte-exact against a full checksum
//! recomputation written here (independent of braid-wire's arithmetic), counted drops,
//! striping, priority-class and tunnel overrides observed where the packets go, RX rules,
//! atomic replacement mid-traffic, conditions on live link state, and the refusals.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::time::Duration;

use braid_wire::tunnel::{DecapConfig, Encap, GreEncap, InnerFormat, OuterIp, decap};

use crate::engine::{
    ClassMatch, ClassPolicy, Command, CommandError, ConfigError, Engine, EngineConfig, FlowClass,
    NicSpec, RuleDirection, RuleTable, RulesError, TunnelSpec, TxVerdict,
};
use crate::qos::{ClassConfig as QosClassConfig, ClassId};
use crate::rules::{
    Action, Condition, IpPrefix, PortRange, QosClass, Rule, RuleIndex, RuleMatch, Striping,
    TunnelId,
};
use crate::{DropReason, Instant, NicId, NicSet};

const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const NAT_DST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 77);
const UDP: u8 = 17;
const TCP: u8 = 6;

// ---------------------------------------------------------------- packets and checksums

/// One's complement sum of 16-bit big-endian words (RFC 1071), not folded.
fn sum16(data: &[u8], mut acc: u64) -> u64 {
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        acc += u64::from(w);
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Recompute every checksum of an IPv4 or IPv6 packet with a TCP or UDP header from
/// scratch: the IPv4 header checksum and the L4 checksum over the pseudo-header (RFC 768,
/// RFC 9293, RFC 8200 §8.1). A UDP checksum that computes to 0 is sent as 0xFFFF.
fn recompute(p: &mut [u8]) {
    let (l4, pseudo) = if p[0] >> 4 == 4 {
        let ihl = usize::from(p[0] & 0x0f) * 4;
        p[10..12].fill(0);
        let c = fold(sum16(&p[..ihl], 0));
        p[10..12].copy_from_slice(&c.to_be_bytes());
        let len = (p.len() - ihl) as u64;
        let pseudo = sum16(&p[12..20], 0) + u64::from(p[9]) + len;
        (ihl, pseudo)
    } else {
        let len = (p.len() - 40) as u64;
        (40, sum16(&p[8..40], 0) + u64::from(p[6]) + len)
    };
    let proto = if p[0] >> 4 == 4 { p[9] } else { p[6] };
    let at = l4 + if proto == TCP { 16 } else { 6 };
    p[at..at + 2].fill(0);
    let mut c = fold(sum16(&p[l4..], pseudo));
    if proto == UDP && c == 0 {
        c = 0xffff;
    }
    p[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// An IPv4 packet (TTL 64, DSCP 0) with a UDP or TCP header and every checksum right.
fn ipv4(proto: u8, dst_port: u16, seq: u32, payload: usize) -> Vec<u8> {
    let l4 = if proto == TCP { 20 } else { 8 };
    let mut p = vec![0u8; 20 + l4 + payload];
    let total = p.len() as u16;
    p[0] = 0x45;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p[4..6].copy_from_slice(&(seq as u16).to_be_bytes());
    p[8] = 64;
    p[9] = proto;
    p[12..16].copy_from_slice(&SRC.octets());
    p[16..20].copy_from_slice(&DST.octets());
    p[20..22].copy_from_slice(&4000u16.to_be_bytes());
    p[22..24].copy_from_slice(&dst_port.to_be_bytes());
    if proto == TCP {
        p[24..28].copy_from_slice(&seq.to_be_bytes());
        p[32] = 5 << 4;
        p[33] = 0x18;
        p[34..36].copy_from_slice(&1024u16.to_be_bytes());
    } else {
        p[24..26].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
    }
    for (i, b) in p[20 + l4..].iter_mut().enumerate() {
        *b = (seq as usize).wrapping_mul(31).wrapping_add(i) as u8;
    }
    recompute(&mut p);
    p
}

/// An IPv6/UDP packet (hop limit 64) with its checksum right.
fn ipv6_udp(dst_port: u16, seq: u32, payload: usize) -> Vec<u8> {
    let mut p = vec![0u8; 48 + payload];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
    p[6] = UDP;
    p[7] = 64;
    p[8..24].copy_from_slice(&Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1).octets());
    p[24..40].copy_from_slice(&Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2).octets());
    p[40..42].copy_from_slice(&4000u16.to_be_bytes());
    p[42..44].copy_from_slice(&dst_port.to_be_bytes());
    p[44..46].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
    for (i, b) in p[48..].iter_mut().enumerate() {
        *b = (seq as usize).wrapping_mul(7).wrapping_add(i) as u8;
    }
    recompute(&mut p);
    p
}

fn dst_port_of(p: &[u8]) -> u16 {
    let l4 = if p[0] >> 4 == 4 {
        usize::from(p[0] & 0x0f) * 4
    } else {
        40
    };
    u16::from_be_bytes([p[l4 + 2], p[l4 + 3]])
}

// ---------------------------------------------------------------- engines

fn nics(n: u8) -> Vec<NicSpec> {
    (0..n)
        .map(|i| NicSpec::udp_ipv4(NicId(i), &alloc::format!("link{i}"), 1_000_000_000, 1500))
        .collect()
}

fn v4(a: Ipv4Addr, len: u8) -> Option<IpPrefix> {
    Some(IpPrefix::new(IpAddr::V4(a), len).unwrap())
}

/// A match on IPv4 `proto` to `dst_port`.
fn to_port(proto: u8, dst_port: u16) -> RuleMatch {
    RuleMatch {
        dst: v4(Ipv4Addr::UNSPECIFIED, 0),
        protocol: Some(proto),
        dst_ports: Some(PortRange::single(dst_port)),
        ..RuleMatch::ANY
    }
}

/// Move every packet from `a` to `b` (and back) until both are quiet (at most 100 ms of
/// 10 µs steps), dropping those on `dead` NICs; the packets `b` delivered.
fn pump(a: &mut Engine, b: &mut Engine, now: &mut Instant, dead: NicSet) -> Vec<Vec<u8>> {
    let mut buf = vec![0u8; 70_000];
    let mut out = Vec::new();
    let end = *now + Duration::from_millis(100);
    while *now < end {
        a.handle_timeout(*now);
        b.handle_timeout(*now);
        while let Some(t) = a.poll_transmit(*now, &mut buf) {
            if !dead.contains(t.nic) {
                b.handle_rx(*now, t.nic, &buf[..t.len]);
            }
        }
        while let Some(t) = b.poll_transmit(*now, &mut buf) {
            if !dead.contains(t.nic) {
                a.handle_rx(*now, t.nic, &buf[..t.len]);
            }
        }
        while let Some(d) = b.poll_deliver(*now, &mut buf) {
            out.push(buf[..d.len].to_vec());
        }
        if a.tx_queued_bytes() == 0 && b.tx_queued_bytes() == 0 {
            break;
        }
        *now += Duration::from_micros(10);
    }
    out
}

fn pair(a: EngineConfig, b: EngineConfig) -> (Engine, Engine) {
    (
        Engine::new(a, Instant::ZERO).unwrap(),
        Engine::new(b, Instant::ZERO).unwrap(),
    )
}

fn send_all(a: &mut Engine, now: Instant, packets: &[Vec<u8>]) {
    for p in packets {
        assert_eq!(a.handle_tx(now, p), TxVerdict::Queued);
    }
}

// ---------------------------------------------------------------- rewrites

/// NAT (destination address and port), DSCP, ECN and TTL on TX, over UDP, TCP and IPv6:
/// the delivered bytes are the sent bytes with those fields changed and every checksum
/// recomputed from scratch. A flow the rule does not match passes untouched.
#[test]
fn tx_rewrites_are_byte_exact_with_every_checksum_right() {
    let nat = [
        Action::SetDscp(46),
        Action::SetEcn(1),
        Action::SetTtl(9),
        Action::SetDstAddr(IpAddr::V4(NAT_DST)),
        Action::SetDstPort(8080),
    ];
    let v6_match = RuleMatch {
        dst: Some(IpPrefix::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0).unwrap()),
        protocol: Some(UDP),
        dst_ports: Some(PortRange::single(5002)),
        ..RuleMatch::ANY
    };
    let mut cfg = EngineConfig::new(nics(2));
    cfg.tx_rules = vec![
        Rule::new("nat-udp", 10, to_port(UDP, 5000), &nat),
        Rule::new("nat-tcp", 10, to_port(TCP, 5001), &nat),
        Rule::new(
            "v6",
            10,
            v6_match,
            &[Action::SetSrcPort(1234), Action::SetTtl(3)],
        ),
    ];
    let (mut a, mut b) = pair(cfg, EngineConfig::new(nics(2)));
    let mut now = Instant::from_millis(1);
    let mut sent = Vec::new();
    let mut want = Vec::new();
    for seq in 0..30u32 {
        for (p, port) in [
            (ipv4(UDP, 5000, seq, 100 + seq as usize), 5000),
            (ipv4(TCP, 5001, seq, 300), 5001),
            (ipv6_udp(5002, seq, 50), 5002),
            (ipv4(UDP, 6000, seq, 80), 6000),
        ] {
            let mut w = p.clone();
            match port {
                5000 | 5001 => {
                    w[1] = (46 << 2) | 1;
                    w[8] = 9;
                    w[16..20].copy_from_slice(&NAT_DST.octets());
                    w[22..24].copy_from_slice(&8080u16.to_be_bytes());
                    recompute(&mut w);
                }
                5002 => {
                    w[7] = 3;
                    w[40..42].copy_from_slice(&1234u16.to_be_bytes());
                    recompute(&mut w);
                }
                _ => {}
            }
            sent.push(p);
            want.push(w);
        }
    }
    send_all(&mut a, now, &sent);
    let mut got = pump(&mut a, &mut b, &mut now, NicSet::EMPTY);
    assert_eq!(got.len(), want.len(), "drops a {:?}", a.stats().drops);
    // Flows are independent: compare per flow, in order.
    let key = |p: &Vec<u8>| (p[0] >> 4, p[9], dst_port_of(p));
    got.sort_by_key(key);
    want.sort_by_key(key);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(g == w, "packet {i}: got {g:02x?}\nwant {w:02x?}");
    }
    assert_eq!(a.rule_stats().tx_rewritten_count, 90);
    // One slow-path lookup per flow, at install; the rest took the fast path.
    assert_eq!(a.rule_stats().tx_lookups_count, 4);
    assert_eq!(a.stats().drops.total(), 0);
}

/// RX rules rewrite what goes to the vNIC (un-NAT), on braid's packets; TX and RX together
/// give the application its original bytes back.
#[test]
fn rx_rules_rewrite_delivered_packets() {
    let mut tx = EngineConfig::new(nics(2));
    tx.tx_rules = vec![Rule::new(
        "nat",
        1,
        to_port(UDP, 5000),
        &[Action::SetDstAddr(IpAddr::V4(NAT_DST))],
    )];
    let mut rx = EngineConfig::new(nics(2));
    let back = RuleMatch {
        dst: v4(NAT_DST, 32),
        ..RuleMatch::ANY
    };
    rx.rx_rules = vec![Rule::new(
        "un-nat",
        1,
        back,
        &[Action::SetDstAddr(IpAddr::V4(DST))],
    )];
    let (mut a, mut b) = pair(tx, rx);
    let mut now = Instant::from_millis(1);
    let sent: Vec<Vec<u8>> = (0..40).map(|s| ipv4(UDP, 5000, s, 200)).collect();
    send_all(&mut a, now, &sent);
    let got = pump(&mut a, &mut b, &mut now, NicSet::EMPTY);
    assert_eq!(got, sent);
    assert_eq!(a.rule_stats().tx_rewritten_count, 40);
    assert_eq!(b.rule_stats().rx_rewritten_count, 40);
    // One RX flow, one key: one slow-path lookup.
    assert_eq!(b.rule_stats().rx_lookups_count, 1);
}

/// A port rewrite cannot be applied to a fragment: the packet is a counted drop, unchanged
/// and unsent, and the flow's sequence does not move (no gap at the receiver).
#[test]
fn a_rewrite_the_packet_refuses_is_a_counted_drop() {
    let mut cfg = EngineConfig::new(nics(1));
    let any_udp = RuleMatch {
        dst: v4(Ipv4Addr::UNSPECIFIED, 0),
        protocol: Some(UDP),
        ..RuleMatch::ANY
    };
    cfg.tx_rules = vec![Rule::new("port", 1, any_udp, &[Action::SetDstPort(9)])];
    let (mut a, mut b) = pair(cfg.clone(), cfg);
    let mut now = Instant::from_millis(1);
    let mut frag = ipv4(UDP, 5000, 1, 100);
    frag[6] = 0x20; // More Fragments: a first fragment
    recompute(&mut frag);
    assert_eq!(
        a.handle_tx(now, &frag),
        TxVerdict::Drop(DropReason::RuleRewriteFailed)
    );
    assert_eq!(a.stats().drops.get(DropReason::RuleRewriteFailed), 1);
    assert_eq!(a.tx_queued_bytes(), 0);
    let whole = ipv4(UDP, 5000, 2, 100);
    assert_eq!(a.handle_tx(now, &whole), TxVerdict::Queued);
    let got = pump(&mut a, &mut b, &mut now, NicSet::EMPTY);
    assert_eq!(got.len(), 1);
    assert_eq!(dst_port_of(&got[0]), 9);
}

// ---------------------------------------------------------------- drop and metadata

#[test]
fn a_drop_rule_drops_and_counts_only_its_flows() {
    let mut cfg = EngineConfig::new(nics(2));
    cfg.tx_rules = vec![Rule::new("block", 1, to_port(UDP, 6666), &[Action::Drop])];
    let (mut a, mut b) = pair(cfg, EngineConfig::new(nics(2)));
    let mut now = Instant::from_millis(1);
    for s in 0..25 {
        assert_eq!(
            a.handle_tx(now, &ipv4(UDP, 6666, s, 50)),
            TxVerdict::Drop(DropReason::RuleDrop)
        );
        assert_eq!(a.handle_tx(now, &ipv4(UDP, 5000, s, 50)), TxVerdict::Queued);
    }
    assert_eq!(a.stats().drops.get(DropReason::RuleDrop), 25);
    let got = pump(&mut a, &mut b, &mut now, NicSet::EMPTY);
    assert_eq!(got.len(), 25);
    assert!(got.iter().all(|p| dst_port_of(p) == 5000));
    // RX: a drop rule on the receiver.
    let mut rx = EngineConfig::new(nics(2));
    rx.rx_rules = vec![Rule::new("no-5001", 1, to_port(UDP, 5001), &[Action::Drop])];
    let (mut a, mut b) = pair(EngineConfig::new(nics(2)), rx);
    for s in 0..10 {
        assert_eq!(a.handle_tx(now, &ipv4(UDP, 5001, s, 50)), TxVerdict::Queued);
        assert_eq!(a.handle_tx(now, &ipv4(UDP, 5000, s, 50)), TxVerdict::Queued);
    }
    let got = pump(&mut a, &mut b, &mut now, NicSet::EMPTY);
    assert_eq!(got.len(), 10);
    assert_eq!(b.stats().drops.get(DropReason::RuleDrop), 10);
}

/// Payload bytes each NIC carried.
fn payload_per_nic(e: &Engine, n: u8) -> Vec<u64> {
    (0..n)
        .map(|i| e.nic_stats(NicId(i)).unwrap().tx_payload_bytes_count)
        .collect()
}

/// A rule's striping overrides the class: a striped class pinned to NIC 2, or duplicated
/// over NICs 0 and 1; the other flows keep their class's policy over every NIC.
#[test]
fn a_striping_rule_decides_which_nics_carry_the_pieces() {
    let mut cfg = EngineConfig::new(nics(3));
    cfg.classes.push(FlowClass::new(
        "bulk",
        ClassMatch {
            protocol: Some(UDP),
            ..ClassMatch::default()
        },
        ClassPolicy::Stripe,
    ));
    let only_2 = Striping {
        policy: ClassPolicy::Pin,
        nics: NicSet::single(NicId(2)),
    };
    let dup_01 = Striping {
        policy: ClassPolicy::Duplicate,
        nics: [NicId(0), NicId(1)].into_iter().collect(),
    };
    cfg.tx_rules = vec![
        Rule::new("pin2", 1, to_port(UDP, 5000), &[Action::Stripe(only_2)]),
        Rule::new("dup", 1, to_port(UDP, 5001), &[Action::Stripe(dup_01)]),
    ];
    let (mut a, mut b) = pair(cfg.clone(), cfg);
    let mut now = Instant::from_millis(1);
    // Pinned to NIC 2: jumbo-free 1000-byte packets, all on NIC 2.
    let sent: Vec<Vec<u8>> = (0..50).map(|s| ipv4(UDP, 5000, s, 1000)).collect();
    send_all(&mut a, now, &sent);
    assert_eq!(pump(&mut a, &mut b, &mut now, NicSet::EMPTY), sent);
    let after_pin = payload_per_nic(&a, 3);
    assert_eq!(after_pin[0], 0);
    assert_eq!(after_pin[1], 0);
    assert_eq!(after_pin[2], 50 * 1028);
    // Duplicated on NICs 0 and 1: each carries every packet, NIC 2 none.
    let sent: Vec<Vec<u8>> = (0..50).map(|s| ipv4(UDP, 5001, s, 500)).collect();
    send_all(&mut a, now, &sent);
    assert_eq!(pump(&mut a, &mut b, &mut now, NicSet::EMPTY), sent);
    let after_dup = payload_per_nic(&a, 3);
    assert_eq!(after_dup[0] - after_pin[0], 50 * 528);
    assert_eq!(after_dup[1] - after_pin[1], 50 * 528);
    assert_eq!(after_dup[2], after_pin[2]);
    assert_eq!(a.stats().tx_duplicate_count, 50);
    // No rule: the class stripes over all three (100 big packets reach every NIC).
    let sent: Vec<Vec<u8>> = (0..100).map(|s| ipv4(UDP, 5002, s, 1400)).collect();
    send_all(&mut a, now, &sent);
    assert_eq!(pump(&mut a, &mut b, &mut now, NicSet::EMPTY).len(), 100);
    let after = payload_per_nic(&a, 3);
    for i in 0..3 {
        assert!(
            after[i] > after_dup[i],
            "nic {i} carried none of the striped flow"
        );
    }
}

/// "Set priority class" puts the flow in that QoS class on every NIC.
#[test]
fn a_priority_class_rule_sets_the_flows_qos_class() {
    let mut cfg = EngineConfig::new(nics(1));
    cfg.qos
        .classes
        .push(QosClassConfig::weighted(2, 4, 1024, 1 << 20));
    cfg.tx_rules = vec![Rule::new(
        "gold",
        1,
        to_port(UDP, 5000),
        &[Action::SetPriorityClass(QosClass(2))],
    )];
    let (mut a, mut b) = pair(cfg.clone(), cfg);
    let mut now = Instant::from_millis(1);
    send_all(
        &mut a,
        now,
        &[ipv4(UDP, 5000, 0, 100), ipv4(UDP, 5000, 1, 100)],
    );
    send_all(&mut a, now, &[ipv4(UDP, 5001, 0, 100)]);
    assert_eq!(pump(&mut a, &mut b, &mut now, NicSet::EMPTY).len(), 3);
    let q = a.nic_qos_stats(NicId(0)).unwrap();
    assert_eq!(q.class(ClassId(2)).dequeued_packets_count, 2);
    assert_eq!(q.class(ClassId(1)).dequeued_packets_count, 1);
    // A class the QoS configuration does not have is refused at build.
    let mut bad = EngineConfig::new(nics(1));
    bad.tx_rules = vec![Rule::new(
        "x",
        1,
        to_port(UDP, 5000),
        &[Action::SetPriorityClass(QosClass(5))],
    )];
    assert!(Engine::new(bad, Instant::ZERO).is_err());
}

const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const REMOTE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

fn gre_tunnel(flip: bool) -> TunnelSpec {
    let ip = if flip {
        OuterIp::V4 {
            src: REMOTE,
            dst: LOCAL,
        }
    } else {
        OuterIp::V4 {
            src: LOCAL,
            dst: REMOTE,
        }
    };
    TunnelSpec::new(
        "gre0",
        NicId(0),
        Encap::Gre(GreEncap::new(ip, InnerFormat::Ip)),
    )
}

/// An encapsulation rule sends the flow into its tunnel, rewritten first (DSCP); the
/// tunnel peer's RX rule rewrites the decapsulated packet (TTL) before the vNIC.
#[test]
fn an_encap_rule_tunnels_the_flow_and_rx_rules_see_decapsulated_packets() {
    let mut a_cfg = EngineConfig::new(nics(1));
    a_cfg.tunnels.push(gre_tunnel(false));
    a_cfg.tx_rules = vec![Rule::new(
        "to-gre",
        1,
        to_port(UDP, 5000),
        &[Action::SetDscp(10), Action::GreEncap(TunnelId(0))],
    )];
    let mut b_cfg = EngineConfig::new(nics(1));
    b_cfg.tunnels.push(gre_tunnel(true));
    b_cfg.rx_rules = vec![Rule::new(
        "ttl",
        1,
        to_port(UDP, 5000),
        &[Action::SetTtl(5)],
    )];
    let (mut a, mut b) = pair(a_cfg, b_cfg);
    let now = Instant::from_millis(1);
    let sent: Vec<Vec<u8>> = (0..10).map(|s| ipv4(UDP, 5000, s, 64)).collect();
    send_all(&mut a, now, &sent);
    assert_eq!(a.handle_tx(now, &ipv4(UDP, 5001, 0, 64)), TxVerdict::Queued);
    assert_eq!(a.tunnel_tx_queued(), 10, "only the ruled flow is tunnelled");
    let mut buf = vec![0u8; 2000];
    let mut got = Vec::new();
    for p in &sent {
        let t = a.poll_tunnel_transmit(now, &mut buf).unwrap();
        let outer = &buf[..t.len];
        let d = decap(outer, &DecapConfig::default()).unwrap();
        let (_, inner) = d.inner_l3(outer).unwrap();
        let mut w = p.clone();
        w[1] = 10 << 2;
        recompute(&mut w);
        assert_eq!(&outer[inner], &w[..]);
        assert_eq!(b.handle_tunnel_rx(now, outer), Ok(0));
        let del = b.poll_deliver(now, &mut buf).unwrap();
        got.push(buf[..del.len].to_vec());
        w[8] = 5;
        recompute(&mut w);
        assert_eq!(got.last().unwrap(), &w);
    }
    assert_eq!(b.rule_stats().rx_rewritten_count, 10);
    assert_eq!(b.rule_stats().rx_lookups_count, 1, "cached per tunnel");
}

// ---------------------------------------------------------------- replacement

fn dscp_of(p: &[u8]) -> u8 {
    p[1] >> 2
}

fn dscp_rule(dscp: u8) -> Vec<crate::rules::Rule> {
    vec![Rule::new(
        "mark",
        1,
        to_port(UDP, 5000),
        &[Action::SetDscp(dscp)],
    )]
}

fn replace(e: &mut Engine, now: Instant, tx: Vec<Rule>, rx: Vec<Rule>) -> Result<(), CommandError> {
    let cfg = e.config().clone();
    let tx = RuleTable::build(&cfg, RuleDirection::Tx, tx).unwrap();
    let rx = RuleTable::build(&cfg, RuleDirection::Rx, rx).unwrap();
    e.apply(
        now,
        Command::ReplaceRules {
            tx: Box::new(tx),
            rx: Box::new(rx),
        },
    )
}

/// Rules replaced between two batches mid-traffic: every packet before the swap carries
/// the old marking, every one after it the new one, none is unmarked or lost; a refused
/// replacement leaves the set in force as it was.
#[test]
fn rules_are_replaced_atomically_between_batches() {
    let mut cfg = EngineConfig::new(nics(2));
    cfg.tx_rules = dscp_rule(10);
    let (mut a, mut b) = pair(cfg, EngineConfig::new(nics(2)));
    let mut now = Instant::from_millis(1);
    let mut got = Vec::new();
    let mut seq = 0;
    // Batches of 8 with the queues not drained in between: the swap lands with packets of
    // the old set still queued.
    for batch in 0..10 {
        if batch == 5 {
            let v = a.tx_rule_set().version();
            replace(&mut a, now, dscp_rule(20), Vec::new()).unwrap();
            assert!(a.tx_rule_set().version() > v);
        }
        for _ in 0..8 {
            assert_eq!(
                a.handle_tx(now, &ipv4(UDP, 5000, seq, 300)),
                TxVerdict::Queued
            );
            seq += 1;
        }
        if batch % 3 == 2 {
            got.extend(pump(&mut a, &mut b, &mut now, NicSet::EMPTY));
        }
    }
    got.extend(pump(&mut a, &mut b, &mut now, NicSet::EMPTY));
    assert_eq!(got.len(), 80);
    let marks: Vec<u8> = got.iter().map(|p| dscp_of(p)).collect();
    assert!(marks[..40].iter().all(|&d| d == 10), "{marks:?}");
    assert!(marks[40..].iter().all(|&d| d == 20), "{marks:?}");
    // The one flow was looked up at install and once more after the swap, lazily.
    assert_eq!(a.rule_stats().tx_lookups_count, 2);
    assert_eq!(a.rule_stats().sets_replaced_count, 1);

    // Refused: a table built for a configuration with a tunnel, on an engine without one.
    let mut with_tunnel = a.config().clone();
    with_tunnel.tunnels.push(gre_tunnel(false));
    let tunnelled = vec![Rule::new(
        "gre",
        1,
        to_port(UDP, 5000),
        &[Action::GreEncap(TunnelId(0))],
    )];
    let tx = RuleTable::build(&with_tunnel, RuleDirection::Tx, tunnelled).unwrap();
    let version = a.tx_rule_set().version();
    let e = a
        .apply(
            now,
            Command::ReplaceRules {
                tx: Box::new(tx),
                rx: Box::new(RuleTable::empty(RuleDirection::Rx)),
            },
        )
        .unwrap_err();
    match e {
        CommandError::InvalidRules(r) => {
            assert_eq!(
                (r.direction, r.rule, r.action),
                (RuleDirection::Tx, RuleIndex(0), Some(0))
            );
            assert!(alloc::format!("{e}").contains("tx_rules[0]"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    // Tables swapped round are refused too.
    let e = a
        .apply(
            now,
            Command::ReplaceRules {
                tx: Box::new(RuleTable::empty(RuleDirection::Rx)),
                rx: Box::new(RuleTable::empty(RuleDirection::Rx)),
            },
        )
        .unwrap_err();
    assert_eq!(e, CommandError::InvalidValue("tx"));
    assert_eq!(a.tx_rule_set().version(), version, "nothing changed");
    assert_eq!(a.config().tx_rules, dscp_rule(20));
    assert_eq!(
        a.handle_tx(now, &ipv4(UDP, 5000, seq, 300)),
        TxVerdict::Queued
    );
    let got = pump(&mut a, &mut b, &mut now, NicSet::EMPTY);
    assert_eq!(dscp_of(&got[0]), 20);
}

/// A replacement whose rules match on DSCP widens the flow classification (a rule could
/// not tell DSCP values apart otherwise).
#[test]
fn rules_on_dscp_widen_the_classification() {
    let mut a = Engine::new(EngineConfig::new(nics(1)), Instant::ZERO).unwrap();
    assert!(!a.config().classify.dscp);
    let on_dscp = RuleMatch {
        dscp: Some(crate::rules::DscpSet::single(46)),
        ..RuleMatch::ANY
    };
    let rules = vec![Rule::new("ef", 1, on_dscp, &[Action::Drop])];
    replace(&mut a, Instant::from_millis(1), rules, Vec::new()).unwrap();
    assert!(a.config().classify.dscp);
    let now = Instant::from_millis(2);
    let mut ef = ipv4(UDP, 5000, 0, 50);
    ef[1] = 46 << 2;
    recompute(&mut ef);
    assert_eq!(a.handle_tx(now, &ef), TxVerdict::Drop(DropReason::RuleDrop));
    assert_eq!(a.handle_tx(now, &ipv4(UDP, 5000, 1, 50)), TxVerdict::Queued);
}

// ---------------------------------------------------------------- conditions

/// "While a link is down, drop this class": the rule switches on when link health declares
/// NIC 1 down, and off by itself once it is up again and the hold has passed; the version
/// change makes the installed flow look its rule up again both times.
#[test]
fn a_condition_on_link_state_switches_a_rule_on_and_off() {
    let mut cfg = EngineConfig::new(nics(2));
    let hold = Duration::from_millis(50);
    let down = Condition {
        metric: crate::rules::Metric::LinksDown,
        ..Condition::any_degraded(NicSet::ALL)
    }
    .with_hold(hold);
    cfg.tx_rules = vec![Rule::new("shed", 1, to_port(UDP, 5000), &[Action::Drop]).when(down)];
    let (mut a, mut b) = pair(cfg.clone(), cfg);
    let mut now = Instant::from_millis(1);
    let step = |a: &mut Engine, b: &mut Engine, now: &mut Instant, dead, ms: u64| {
        let end = *now + Duration::from_millis(ms);
        while *now < end {
            pump(a, b, now, dead);
            *now += Duration::from_millis(1);
        }
    };
    step(&mut a, &mut b, &mut now, NicSet::EMPTY, 20);
    assert_eq!(a.handle_tx(now, &ipv4(UDP, 5000, 0, 50)), TxVerdict::Queued);
    assert!(!a.tx_rule_set().is_active(RuleIndex(0)));
    // NIC 1 dies: down after a few probe intervals, the rule switches on.
    step(&mut a, &mut b, &mut now, NicSet::single(NicId(1)), 60);
    assert!(a.tx_rule_set().is_active(RuleIndex(0)));
    assert_eq!(
        a.handle_tx(now, &ipv4(UDP, 5000, 1, 50)),
        TxVerdict::Drop(DropReason::RuleDrop)
    );
    let lookups = a.rule_stats().tx_lookups_count;
    assert_eq!(lookups, 2, "installed, then once after the flip");
    // NIC 1 back: up after a few replies, the rule switches off by itself.
    step(&mut a, &mut b, &mut now, NicSet::EMPTY, 100);
    assert!(!a.tx_rule_set().is_active(RuleIndex(0)));
    assert_eq!(a.handle_tx(now, &ipv4(UDP, 5000, 2, 50)), TxVerdict::Queued);
    assert_eq!(a.rule_stats().condition_changes_count, 2);
}

/// A flip the hold time holds back happens at the hold's end, which `poll_timeout`
/// reports, and not before.
#[test]
fn poll_timeout_reports_the_end_of_a_condition_hold() {
    let mut cfg = EngineConfig::new(nics(2));
    let hold = Duration::from_millis(300);
    let down = Condition {
        metric: crate::rules::Metric::LinksDown,
        ..Condition::any_degraded(NicSet::ALL)
    }
    .with_hold(hold);
    cfg.tx_rules = vec![Rule::new("shed", 1, to_port(UDP, 5000), &[Action::Drop]).when(down)];
    let mut a = Engine::new(cfg, Instant::ZERO).unwrap();
    // No peer: both links go down, and the rule switches on at once (its first flip)...
    let mut now = Instant::ZERO;
    let mut buf = vec![0u8; 2000];
    while !a.tx_rule_set().is_active(RuleIndex(0)) {
        now += Duration::from_millis(1);
        a.handle_timeout(now);
        while a.poll_transmit(now, &mut buf).is_some() {}
        assert!(now < Instant::from_millis(500), "the links never went down");
    }
    let end = now + hold;
    // ...then the peer answers: the links come up, the condition wants off, but the hold
    // keeps it on until `end`, which poll_timeout reports.
    let mut b = Engine::new(EngineConfig::new(nics(2)), Instant::ZERO).unwrap();
    let mut held = false;
    while now < end {
        now += Duration::from_millis(1);
        pump(&mut a, &mut b, &mut now, NicSet::EMPTY);
        if now < end {
            assert!(
                a.tx_rule_set().is_active(RuleIndex(0)),
                "off before the hold ended"
            );
            if a.tx_rule_set().poll_condition_timeout() == Some(end) {
                held = true;
                assert!(a.poll_timeout().is_some_and(|p| p <= end));
            }
        }
    }
    assert!(held, "the links never came back up within the hold");
    assert!(!a.tx_rule_set().is_active(RuleIndex(0)));
}

// ---------------------------------------------------------------- refusals

#[test]
fn rules_the_engine_cannot_carry_out_are_refused_naming_the_rule() {
    let cfg = EngineConfig::new(nics(2));
    let build = |d, rules: Vec<Rule>| RuleTable::build(&cfg, d, rules).unwrap_err();
    // Decapsulation is the tunnels'.
    let e = build(
        RuleDirection::Tx,
        vec![
            Rule::new("ok", 1, to_port(UDP, 1), &[Action::SetTtl(3)]),
            Rule::new("decap", 2, to_port(UDP, 2), &[Action::VxlanDecap]),
        ],
    );
    let text = alloc::format!("{e}");
    assert!(text.contains("tx_rules[1] \"decap\": action #0"), "{text}");
    assert!(matches!(e, RulesError::Unsupported { .. }));
    // RX: only rewrites and drop.
    let stripe = Striping {
        policy: ClassPolicy::Duplicate,
        nics: NicSet::ALL,
    };
    let e = build(
        RuleDirection::Rx,
        vec![Rule::new(
            "dup",
            1,
            to_port(UDP, 2),
            &[Action::Stripe(stripe)],
        )],
    );
    assert!(alloc::format!("{e}").contains("rx_rules[0] \"dup\""), "{e}");
    // A TUN vNIC has no VLAN tag (the rule engine's own check, with the engine's context).
    let tag = crate::rules::VlanTag { vid: 5, pcp: 0 };
    let e = build(
        RuleDirection::Tx,
        vec![Rule::new(
            "vlan",
            1,
            to_port(UDP, 2),
            &[Action::PushVlan(tag)],
        )],
    );
    let text = alloc::format!("{e}");
    assert!(text.contains("vlan") && text.contains("\"vlan\""), "{text}");
    // Set problems: a conflict and a shadowed rule, both named.
    let e = build(
        RuleDirection::Tx,
        vec![
            Rule::new("a", 1, to_port(UDP, 7), &[Action::SetTtl(3)]),
            Rule::new("b", 1, to_port(UDP, 7), &[Action::SetTtl(4)]),
            Rule::new("c", 5, to_port(UDP, 7), &[Action::Drop]),
        ],
    );
    let text = alloc::format!("{e}");
    assert!(text.starts_with("tx_rules: invalid rule set"), "{text}");
    assert!(text.contains("\"a\" and rule #1 \"b\""), "{text}");
    assert!(text.contains("\"c\": shadowed"), "{text}");
    // Engine::new reports it as a configuration error.
    let mut bad = cfg.clone();
    bad.tx_rules = vec![Rule::new("decap", 2, to_port(UDP, 2), &[Action::GreDecap])];
    match Engine::new(bad.clone(), Instant::ZERO) {
        Err(ConfigError::Rules(e)) => assert!(matches!(*e, RulesError::Unsupported { .. })),
        other => panic!("{other:?}"),
    }
    assert!(bad.validate().is_err());
}

// ---------------------------------------------------------------- counters and re-keying

/// One counter pair per rule and direction: packets and bytes (as they reached the rule,
/// before a rewrite), whatever the rule does with them; no rule, no count. A replacement
/// brings new counters at zero, even for the same rules.
#[test]
fn each_rule_counts_its_packets_and_bytes_until_it_is_replaced() {
    use crate::engine::RuleHits;
    let mut tx = EngineConfig::new(nics(2));
    tx.tx_rules = vec![
        Rule::new("mark", 1, to_port(UDP, 5000), &[Action::SetDscp(10)]),
        Rule::new("shed", 1, to_port(UDP, 6000), &[Action::Drop]),
    ];
    let mut rx = EngineConfig::new(nics(2));
    rx.rx_rules = vec![Rule::new(
        "ttl",
        1,
        to_port(UDP, 5000),
        &[Action::SetTtl(7)],
    )];
    let (mut a, mut b) = pair(tx.clone(), rx);
    let mut now = Instant::from_millis(1);
    let marked: Vec<Vec<u8>> = (0..10)
        .map(|s| ipv4(UDP, 5000, s, 100 + s as usize))
        .collect();
    let marked_bytes: u64 = marked.iter().map(|p| p.len() as u64).sum();
    send_all(&mut a, now, &marked);
    for s in 0..5 {
        assert_eq!(
            a.handle_tx(now, &ipv4(UDP, 6000, s, 300)),
            TxVerdict::Drop(DropReason::RuleDrop)
        );
    }
    // No rule for port 7000.
    send_all(
        &mut a,
        now,
        &[ipv4(UDP, 7000, 0, 50), ipv4(UDP, 7000, 1, 50)],
    );
    let hits = |packets_count, bytes_count| RuleHits {
        packets_count,
        bytes_count,
    };
    assert_eq!(
        a.rule_hits(RuleDirection::Tx),
        &[hits(10, marked_bytes), hits(5, 5 * 328)]
    );
    assert_eq!(a.rule_names(RuleDirection::Tx)[..], ["mark", "shed"]);
    assert!(a.rule_hits(RuleDirection::Rx).is_empty());
    let got = pump(&mut a, &mut b, &mut now, NicSet::EMPTY);
    assert_eq!(got.len(), 12);
    // RX: the 10 marked packets matched "ttl" on their way to the vNIC; port 7000 did not.
    assert_eq!(b.rule_hits(RuleDirection::Rx), &[hits(10, marked_bytes)]);
    assert_eq!(b.rule_names(RuleDirection::Rx)[..], ["ttl"]);

    // The same rules again: new table, new counters.
    let rules = tx.tx_rules.clone();
    replace(&mut a, now, rules, Vec::new()).unwrap();
    assert_eq!(a.rule_hits(RuleDirection::Tx), &[hits(0, 0), hits(0, 0)]);
    send_all(&mut a, now, &marked[..2]);
    let two = (marked[0].len() + marked[1].len()) as u64;
    assert_eq!(a.rule_hits(RuleDirection::Tx)[0], hits(2, two));
}

/// A replacement whose rules match on DSCP widens the classification: every live flow now
/// has a new key. Each keeps its one entry (moved to the new key on its next packet), its
/// flow id and sequence — the table holds as many flows after the flip as before, and the
/// receiver sees no new flow — while a packet of an old flow that differs in the new field
/// is a new flow.
#[test]
fn a_widening_replacement_keeps_one_table_entry_per_flow() {
    const FLOWS: u16 = 40;
    let (mut a, mut b) = pair(EngineConfig::new(nics(2)), EngineConfig::new(nics(2)));
    let mut now = Instant::from_millis(1);
    let round = |a: &mut Engine, now: Instant, seq: u32| {
        let packets: Vec<Vec<u8>> = (0..FLOWS).map(|f| ipv4(UDP, 5000 + f, seq, 100)).collect();
        send_all(a, now, &packets);
    };
    round(&mut a, now, 0);
    assert_eq!(
        pump(&mut a, &mut b, &mut now, NicSet::EMPTY).len(),
        FLOWS as usize
    );
    assert_eq!(a.flow_counts().0, FLOWS as usize);
    assert_eq!(b.flow_counts().1, FLOWS as usize);
    assert!(!a.config().classify.dscp);
    assert_eq!(
        a.rule_stats().tx_lookups_count,
        u64::from(FLOWS),
        "one per install"
    );

    let ef = RuleMatch {
        dscp: Some(crate::rules::DscpSet::single(46)),
        ..RuleMatch::ANY
    };
    replace(
        &mut a,
        now,
        vec![Rule::new("ef", 1, ef, &[Action::SetTtl(9)])],
        Vec::new(),
    )
    .unwrap();
    assert!(a.config().classify.dscp, "widened");
    for seq in 1..3 {
        round(&mut a, now, seq);
        assert_eq!(
            a.flow_counts().0,
            FLOWS as usize,
            "round {seq}: one entry per flow"
        );
    }
    assert_eq!(a.rule_stats().tx_flows_rekeyed_count, u64::from(FLOWS));
    // After the flip each flow took the slow path exactly once, on its first packet (by
    // design: see engine/rules.rs), and the fast path for the second round.
    assert_eq!(a.rule_stats().tx_lookups_count, 2 * u64::from(FLOWS));
    let got = pump(&mut a, &mut b, &mut now, NicSet::EMPTY);
    assert_eq!(got.len(), 2 * FLOWS as usize);
    // Same flow ids, sequences continued: no new RX flow, no gap, nothing late.
    assert_eq!(b.flow_counts().1, FLOWS as usize);
    assert_eq!(b.stats().rx_gap_count, 0);
    assert_eq!(b.stats().drops.total(), 0, "{:?}", b.stats().drops);

    // DSCP 46 on flow 0 is another flow now (and under the rule).
    let mut p = ipv4(UDP, 5000, 9, 100);
    p[1] = 46 << 2;
    recompute(&mut p);
    send_all(&mut a, now, &[p]);
    assert_eq!(a.flow_counts().0, FLOWS as usize + 1);
    assert_eq!(a.rule_hits(RuleDirection::Tx)[0].packets_count, 1);
    assert_eq!(a.rule_stats().tx_flows_rekeyed_count, u64::from(FLOWS));
}

/// `ipv4(UDP, dst_port, seq, 100)` as a first fragment (MF set): its flow key has no ports,
/// whatever the classification.
fn first_fragment(dst_port: u16, seq: u32) -> Vec<u8> {
    let mut p = ipv4(UDP, dst_port, seq, 100);
    p[6] = 0x20;
    recompute(&mut p);
    p
}

/// A flow moved to its wider key is looked up again under that key, even when its old
/// entry was refreshed after the widening (by a fragment, whose key has no ports): it does
/// not keep the rule of its old key. And an entry installed after the widening (the
/// fragments' own flow) is not taken by the next full packet of another flow.
#[test]
fn a_flow_moved_to_its_wider_key_gets_that_keys_rule() {
    let mut cfg = EngineConfig::new(nics(2));
    cfg.classify.use_ports = false;
    let mut a = Engine::new(cfg, Instant::ZERO).unwrap();
    let now = Instant::from_millis(1);
    assert_eq!(
        a.handle_tx(now, &ipv4(UDP, 5000, 0, 100)),
        TxVerdict::Queued
    );
    assert_eq!(a.flow_counts().0, 1);
    replace(
        &mut a,
        now,
        vec![Rule::new("shed", 1, to_port(UDP, 6000), &[Action::Drop])],
        Vec::new(),
    )
    .unwrap();
    assert!(a.config().classify.use_ports, "widened");
    // A fragment keys as before the widening: it hits the old entry, which is looked up
    // again (no rule for a key without ports) and so is current.
    assert_eq!(
        a.handle_tx(now, &first_fragment(5000, 1)),
        TxVerdict::Queued
    );
    assert_eq!(a.rule_stats().tx_flows_rekeyed_count, 0);
    // The first full packet takes the old entry, and its key's rule.
    assert_eq!(
        a.handle_tx(now, &ipv4(UDP, 6000, 2, 100)),
        TxVerdict::Drop(DropReason::RuleDrop)
    );
    assert_eq!(a.rule_stats().tx_flows_rekeyed_count, 1);
    assert_eq!(a.rule_hits(RuleDirection::Tx)[0].packets_count, 1);
    assert_eq!(a.flow_counts().0, 1);
    // Fragments are a new flow now, installed under the wider classification; full
    // packets to 5000 are another one, which does not take the fragments' entry.
    for seq in 3..6 {
        assert_eq!(
            a.handle_tx(now, &first_fragment(5000, seq)),
            TxVerdict::Queued
        );
        assert_eq!(
            a.handle_tx(now, &ipv4(UDP, 5000, seq, 100)),
            TxVerdict::Queued
        );
    }
    assert_eq!(a.rule_stats().tx_flows_rekeyed_count, 1);
    assert_eq!(a.flow_counts().0, 3);
    assert_eq!(a.rule_hits(RuleDirection::Tx)[0].packets_count, 1);
}

/// A flow whose key the first widening left unchanged (ICMP has no ports) keeps its entry
/// alive past the re-keying window; a later widening (DSCP) still moves that entry, found
/// through the narrowing to the classification in between, since it was keyed under the
/// first classification.
#[test]
fn an_entry_two_widenings_old_moves_to_its_wider_key() {
    let icmp = |seq: u32| {
        let mut p = ipv4(UDP, 7, seq, 60);
        p[9] = 1;
        recompute(&mut p);
        p
    };
    let mut cfg = EngineConfig::new(nics(2));
    cfg.classify.use_ports = false;
    let mut a = Engine::new(cfg, Instant::ZERO).unwrap();
    let mut now = Instant::from_millis(1);
    assert_eq!(a.handle_tx(now, &icmp(0)), TxVerdict::Queued);
    let ports = vec![Rule::new("shed", 1, to_port(UDP, 6000), &[Action::Drop])];
    replace(&mut a, now, ports.clone(), Vec::new()).unwrap();
    assert!(a.config().classify.use_ports);
    // Past the re-keying window (one idle timeout, 30 s), the ICMP flow kept alive; a new
    // flow's miss closes the window.
    for s in 1..5 {
        now += Duration::from_secs(10);
        assert_eq!(a.handle_tx(now, &icmp(s)), TxVerdict::Queued);
    }
    assert_eq!(a.handle_tx(now, &ipv4(UDP, 5000, 0, 60)), TxVerdict::Queued);
    assert_eq!(a.flow_counts().0, 2);
    let mut both = ports;
    both.push(Rule::new(
        "ef",
        2,
        RuleMatch {
            dscp: Some(crate::rules::DscpSet::single(46)),
            ..RuleMatch::ANY
        },
        &[Action::SetTtl(9)],
    ));
    replace(&mut a, now, both, Vec::new()).unwrap();
    assert!(a.config().classify.dscp);
    assert_eq!(a.handle_tx(now, &icmp(9)), TxVerdict::Queued);
    assert_eq!(a.rule_stats().tx_flows_rekeyed_count, 1);
    assert_eq!(a.flow_counts().0, 2, "the ICMP flow kept its one entry");
}
