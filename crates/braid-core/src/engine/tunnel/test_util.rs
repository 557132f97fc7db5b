//! Test helpers shared by the engine's tunnel tests (`tunnel/tests.rs`,
//! `tunnel/vlan_tests.rs`, `tunnel/fragment/tests.rs`, `tunnel/replace/tests.rs`) and the
//! policy replacement's (`engine/policies_tests.rs`): the tunnel endpoints' addresses, the
//! inner packets, VXLAN/GRE encapsulations, a one-NIC engine with a tunnelled flow class,
//! a replacement of its policies, and the drains of its tunnel and vNIC queues.
//!
//! It owns no test and asserts nothing about the engine: the tests build on it and say what
//! they check. Compiled for tests only.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr};

use braid_wire::tunnel::{
    DecapConfig, Encap, GreEncap, InnerFormat, InnerMacs, OuterIp, Tunnel, VxlanEncap, decap,
};

use super::{TunnelSpec, TunnelTransmit};
use crate::engine::{
    ClassMatch, ClassPolicy, Command, CommandError, Delivered, Engine, EngineConfig, FlowClass,
    NicSpec, Policies,
};
use crate::rules::{Action, IpPrefix, PortRange, Rule, RuleMatch};
use crate::{Instant, NicId};

/// The near end's outer address (braid's, as in the root tests' namespace a).
pub(crate) const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The far end's outer address.
pub(crate) const REMOTE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// The inner Ethernet MACs of VXLAN frames: braid's default and the root tests' vxlan0.
pub(crate) const MACS: InnerMacs = InnerMacs {
    src: [0x02, 0x62, 0x72, 0x61, 0x69, 0x64],
    dst: [0x02, 0, 0, 0, 0, 0x0b],
};
/// The time every call of these tests passes.
pub(crate) const NOW: Instant = Instant::from_millis(1);

/// An IPv4/UDP packet 192.168.5.1:4000 → 192.168.5.2:`dst_port` with `payload_len` bytes of
/// a pattern from `seq` (byte `i` is `seq * 31 + i`, modulo 256).
pub(crate) fn udp_packet(dst_port: u16, seq: u32, payload_len: usize) -> Vec<u8> {
    let mut p = vec![0u8; 28 + payload_len];
    for (i, b) in p[28..].iter_mut().enumerate() {
        *b = (seq as usize).wrapping_mul(31).wrapping_add(i) as u8;
    }
    braid_wire::ip::emit_udp_ipv4(
        &mut p,
        Ipv4Addr::new(192, 168, 5, 1),
        Ipv4Addr::new(192, 168, 5, 2),
        4000,
        dst_port,
        0,
    )
    .unwrap();
    p
}

/// [`LOCAL`] → [`REMOTE`]; the far end's ([`REMOTE`] → [`LOCAL`]) if `mirror`.
pub(crate) fn outer(mirror: bool) -> OuterIp {
    let (src, dst) = if mirror {
        (REMOTE, LOCAL)
    } else {
        (LOCAL, REMOTE)
    };
    OuterIp::V4 { src, dst }
}

/// VXLAN with `vni`, inner frames with [`MACS`]; the far end's if `mirror`.
pub(crate) fn vxlan_encap(mirror: bool, vni: u32) -> Encap {
    Encap::Vxlan(VxlanEncap::new(
        outer(mirror),
        vni,
        InnerFormat::IpInEthernet(MACS),
    ))
}

/// GRE carrying IP, with `key` and sequence numbers if `seq`; the far end's if `mirror`.
pub(crate) fn gre_encap(mirror: bool, key: Option<u32>, seq: bool) -> Encap {
    let mut g = GreEncap::new(outer(mirror), InnerFormat::Ip);
    g.key = key;
    g.seq = seq;
    Encap::Gre(g)
}

/// One NIC (`link0`, 1 Gbit/s, 1500-byte link MTU) and `tunnels` on it.
pub(crate) fn config(tunnels: Vec<TunnelSpec>) -> EngineConfig {
    let mut cfg = EngineConfig::new(vec![NicSpec::udp_ipv4(
        NicId(0),
        "link0",
        1_000_000_000,
        1500,
    )]);
    cfg.tunnels = tunnels;
    cfg
}

/// The flow class `tunnelled`: UDP to 6000, pinned, into `tunnel`.
pub(crate) fn tunnelled_class(tunnel: Option<u8>) -> FlowClass {
    let mut class = FlowClass::new(
        "tunnelled",
        ClassMatch::udp_dst_port(6000),
        ClassPolicy::Pin,
    );
    class.tunnel = tunnel;
    class
}

/// An engine of [`config`] with `tunnels` and the [`tunnelled_class`] into `class_tunnel`.
pub(crate) fn engine(tunnels: Vec<TunnelSpec>, class_tunnel: Option<u8>) -> Engine {
    let mut cfg = config(tunnels);
    cfg.classes.push(tunnelled_class(class_tunnel));
    Engine::new(cfg, Instant::ZERO).unwrap()
}

/// A rule (priority 1): IPv4 UDP to `dst_port` → `action`.
pub(crate) fn udp_rule(name: &str, dst_port: u16, action: Action) -> Rule {
    let m = RuleMatch {
        dst: Some(IpPrefix::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).unwrap()),
        protocol: Some(17),
        dst_ports: Some(PortRange::single(dst_port)),
        ..RuleMatch::ANY
    };
    Rule::new(name, 1, m, &[action])
}

/// The policies of `e`'s configuration with `tunnels` and `tx_rules` instead (the tables
/// built against the new tunnels, as the daemon builds them).
pub(crate) fn policies(e: &Engine, tunnels: Vec<TunnelSpec>, tx_rules: Vec<Rule>) -> Policies {
    let mut cfg = e.config().clone();
    cfg.tunnels = tunnels;
    cfg.tx_rules = tx_rules;
    Policies::of(&cfg).unwrap()
}

/// Apply `p` to `e` ([`Command::ReplacePolicies`]).
pub(crate) fn replace(e: &mut Engine, p: Policies) -> Result<(), CommandError> {
    e.apply(NOW, Command::ReplacePolicies(Box::new(p)))
}

/// The next outer packet `e` has for its tunnels, and its bytes.
pub(crate) fn poll_outer(e: &mut Engine) -> Option<(TunnelTransmit, Vec<u8>)> {
    let mut buf = vec![0u8; 2000];
    e.poll_tunnel_transmit(NOW, &mut buf)
        .map(|t| (t, buf[..t.len].to_vec()))
}

/// The next outer packet: its tunnel index and bytes.
pub(crate) fn next_outer(e: &mut Engine) -> Option<(u8, Vec<u8>)> {
    poll_outer(e).map(|(t, p)| (t.tunnel, p))
}

/// Every outer packet `e` has for its tunnels, in order.
pub(crate) fn drain_tunnel(e: &mut Engine) -> Vec<(TunnelTransmit, Vec<u8>)> {
    core::iter::from_fn(|| poll_outer(e)).collect()
}

/// The bytes of every outer packet `e` has for its tunnels, in order.
pub(crate) fn drain_outer(e: &mut Engine) -> Vec<Vec<u8>> {
    core::iter::from_fn(|| poll_outer(e))
        .map(|(_, p)| p)
        .collect()
}

/// Every packet `e` has for the vNIC, in order.
pub(crate) fn drain_deliver(e: &mut Engine) -> Vec<(Delivered, Vec<u8>)> {
    let mut buf = vec![0u8; 2000];
    let mut out = Vec::new();
    while let Some(d) = e.poll_deliver(NOW, &mut buf) {
        out.push((d, buf[..d.len].to_vec()));
    }
    out
}

/// (GRE key, GRE sequence number, outer IPv4 id, inner bytes) of an outer GRE packet.
pub(crate) fn gre_fields(outer: &[u8]) -> (Option<u32>, Option<u32>, u16, Vec<u8>) {
    let d = decap(outer, &DecapConfig::default()).unwrap();
    let (_, inner) = d.inner_l3(outer).unwrap();
    let Tunnel::Gre { key, seq } = d.tunnel else {
        panic!("not GRE: {:?}", d.tunnel)
    };
    (
        key,
        seq,
        u16::from_be_bytes([outer[4], outer[5]]),
        outer[inner].to_vec(),
    )
}
