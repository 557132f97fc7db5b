//! Tests of the engine as a tunnel endpoint: encapsulation of a tunnelled class's packets,
//! decapsulation back through a mirrored engine, and every counted drop. The interop with
//! real peers (a Linux VXLAN device, tshark, scapy) is in crates/braid/tests/tunnels.rs.

use alloc::vec;
use alloc::vec::Vec;
use core::net::IpAddr;

use braid_wire::tunnel::{GreEncap, InnerFormat, PayloadKind, PayloadMeta, VxlanEncap};

use super::test_util::{
    LOCAL, MACS, NOW, REMOTE, config, drain_deliver, drain_tunnel, engine, gre_encap, outer,
    tunnelled_class, udp_packet, vxlan_encap,
};
use super::*;
use crate::engine::{ClassMatch, ClassPolicy, EngineConfig, FlowClass, NicSpec};
use crate::{DropReason, NicId};

fn spec(encap: Encap) -> TunnelSpec {
    TunnelSpec::new("t0", NicId(0), encap)
}

#[test]
fn vxlan_encap_of_a_tunnelled_class_and_decap_back() {
    let mut a = engine(vec![spec(vxlan_encap(false, 42))], Some(0));
    let mut b = engine(vec![spec(vxlan_encap(true, 42))], Some(0));
    let inner = udp_packet(6000, 1, 100);
    assert_eq!(a.handle_tx(NOW, &inner), TxVerdict::Queued);
    // Not a braid packet: no data for the NICs (probes only), one outer packet for the
    // tunnel.
    let mut buf = vec![0u8; 2000];
    while a.poll_transmit(NOW, &mut buf).is_some() {}
    assert_eq!(a.nic_stats(NicId(0)).unwrap().tx_payload_bytes_count, 0);
    let out = drain_tunnel(&mut a);
    assert_eq!(out.len(), 1);
    let (t, pkt) = &out[0];
    assert_eq!((t.tunnel, t.nic, t.len), (0, NicId(0), 50 + inner.len()));
    // The outer headers, byte by byte (RFC 791, 768, 7348): IPv4 without options or DF,
    // TTL 64, UDP to 4789 with checksum 0, VXLAN flags 0x08 and VNI 42, then the inner
    // frame with the configured MACs and EtherType IPv4, then the packet unchanged.
    assert_eq!(pkt[0], 0x45);
    assert_eq!(u16::from_be_bytes([pkt[2], pkt[3]]) as usize, pkt.len());
    assert_eq!(&pkt[6..10], &[0x00, 0x00, 64, 17]);
    assert_eq!(braid_wire::checksum::checksum(&pkt[..20]), 0);
    assert_eq!(&pkt[12..16], &LOCAL.octets());
    assert_eq!(&pkt[16..20], &REMOTE.octets());
    let src_port = u16::from_be_bytes([pkt[20], pkt[21]]);
    assert!(src_port >= 49152, "RFC 7348 source range: {src_port}");
    assert_eq!(&pkt[22..24], &4789u16.to_be_bytes());
    assert_eq!(
        usize::from(u16::from_be_bytes([pkt[24], pkt[25]])),
        pkt.len() - 20
    );
    assert_eq!(&pkt[26..28], &[0, 0]);
    assert_eq!(&pkt[28..36], &[0x08, 0, 0, 0, 0, 0, 42, 0]);
    assert_eq!(&pkt[36..42], &MACS.dst);
    assert_eq!(&pkt[42..48], &MACS.src);
    assert_eq!(&pkt[48..50], &[0x08, 0x00]);
    assert_eq!(&pkt[50..], &inner[..]);
    let stats = a.tunnel_stats(0).unwrap();
    assert_eq!(
        (stats.tx_packets_count, stats.tx_bytes_count),
        (1, pkt.len() as u64)
    );
    assert_eq!(a.stats().tx_packets_count, 1);
    // The flow was not placed on braid's NICs.
    assert_eq!(a.controller().flow_count(), 0);

    // The mirror engine takes it back, whole or as a UDP socket's payload.
    assert_eq!(b.handle_tunnel_rx(NOW, pkt), Ok(0));
    let meta = PayloadMeta {
        src: IpAddr::V4(LOCAL),
        dst: IpAddr::V4(REMOTE),
        kind: PayloadKind::Vxlan { src_port },
    };
    assert_eq!(b.handle_tunnel_payload_rx(NOW, &meta, &pkt[28..]), Ok(0));
    let got = drain_deliver(&mut b);
    assert_eq!(got.len(), 2);
    for (i, (d, bytes)) in got.iter().enumerate() {
        assert_eq!(bytes, &inner);
        assert_eq!(d.tunnel, Some(0));
        assert_eq!(d.seq, i as u64 + 1);
    }
    let stats = b.tunnel_stats(0).unwrap();
    assert_eq!(stats.rx_packets_count, 2);
    assert_eq!(stats.rx_bytes_count, 2 * inner.len() as u64);
    assert_eq!(b.stats().rx_delivered_count, 2);
    assert_eq!(b.stats().drops.total(), 0);
}

#[test]
fn other_classes_still_go_as_braid_packets() {
    let mut a = engine(vec![spec(vxlan_encap(false, 42))], Some(0));
    assert_eq!(
        a.handle_tx(NOW, &udp_packet(5000, 0, 100)),
        TxVerdict::Queued
    );
    assert!(drain_tunnel(&mut a).is_empty());
    let mut buf = vec![0u8; 2000];
    let t = a.poll_transmit(NOW, &mut buf).expect("a braid packet");
    assert_eq!(t.nic, NicId(0));
    assert_eq!(a.controller().flow_count(), 1);
}

#[test]
fn gre_key_and_sequence_numbers_out_and_back() {
    let mut a = engine(vec![spec(gre_encap(false, Some(7), true))], Some(0));
    let mut b = engine(vec![spec(gre_encap(true, Some(7), true))], Some(0));
    let inners: Vec<Vec<u8>> = (0..3)
        .map(|s| udp_packet(6000, s, 60 + s as usize))
        .collect();
    for p in &inners {
        assert_eq!(a.handle_tx(NOW, p), TxVerdict::Queued);
    }
    let out = drain_tunnel(&mut a);
    assert_eq!(out.len(), 3);
    for (i, (_, pkt)) in out.iter().enumerate() {
        // IPv4 protocol 47; GRE flags K and S (RFC 2890), protocol IPv4, key, sequence.
        assert_eq!(pkt[9], 47);
        assert_eq!(&pkt[20..24], &[0x30, 0x00, 0x08, 0x00]);
        assert_eq!(&pkt[24..28], &7u32.to_be_bytes());
        assert_eq!(&pkt[28..32], &(i as u32).to_be_bytes());
        assert_eq!(&pkt[32..], &inners[i][..]);
    }
    // The outer IPv4 ids differ packet to packet.
    assert_ne!(&out[0].1[4..6], &out[1].1[4..6]);
    // In order: 0, 2 accepted; 1 after 2 is out of order; 2 again is a duplicate.
    assert_eq!(b.handle_tunnel_rx(NOW, &out[0].1), Ok(0));
    assert_eq!(b.handle_tunnel_rx(NOW, &out[2].1), Ok(0));
    assert_eq!(
        b.handle_tunnel_rx(NOW, &out[1].1),
        Err(DropReason::TunnelSeqOutOfOrder)
    );
    assert_eq!(
        b.handle_tunnel_rx(NOW, &out[2].1),
        Err(DropReason::TunnelSeqOutOfOrder)
    );
    assert_eq!(b.stats().drops.get(DropReason::TunnelSeqOutOfOrder), 2);
    let got = drain_deliver(&mut b);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].1, inners[0]);
    assert_eq!(got[1].1, inners[2]);

    // A tunnel that checks sequence numbers refuses a packet without one (malformed for
    // it, RFC 2890 §2.2), and one with another key or none is another tunnel's.
    let mut c = engine(vec![spec(gre_encap(false, Some(7), false))], Some(0));
    let mut d = engine(vec![spec(gre_encap(false, None, true))], Some(0));
    for e in [&mut c, &mut d] {
        assert_eq!(e.handle_tx(NOW, &inners[0]), TxVerdict::Queued);
    }
    let no_seq = drain_tunnel(&mut c).remove(0).1;
    let no_key = drain_tunnel(&mut d).remove(0).1;
    assert_eq!(
        b.handle_tunnel_rx(NOW, &no_seq),
        Err(DropReason::TunnelMalformed)
    );
    assert_eq!(
        b.handle_tunnel_rx(NOW, &no_key),
        Err(DropReason::TunnelUnknown)
    );
    assert_eq!(b.stats().drops.get(DropReason::TunnelUnknown), 1);
    assert_eq!(b.tunnel_stats(0).unwrap().rx_packets_count, 2);
}

#[test]
fn gre_sequence_resyncs_after_a_run_of_drops() {
    let mut tx = engine(vec![spec(gre_encap(false, None, true))], Some(0));
    let mut rx_spec = spec(gre_encap(true, None, true));
    rx_spec.rx_seq_resync_after = 2;
    let mut rx = engine(vec![rx_spec], Some(0));
    for s in 0..4 {
        assert_eq!(
            tx.handle_tx(NOW, &udp_packet(6000, s, 40)),
            TxVerdict::Queued
        );
    }
    let out = drain_tunnel(&mut tx);
    assert_eq!(rx.handle_tunnel_rx(NOW, &out[3].1), Ok(0));
    // A sender that restarted: 0, 1 dropped; the third in a row becomes the new base.
    assert!(rx.handle_tunnel_rx(NOW, &out[0].1).is_err());
    assert!(rx.handle_tunnel_rx(NOW, &out[1].1).is_err());
    assert_eq!(rx.handle_tunnel_rx(NOW, &out[2].1), Ok(0));
    assert_eq!(rx.tunnel_stats(0).unwrap().rx_seq_resync_count, 1);
    assert_eq!(rx.stats().drops.get(DropReason::TunnelSeqOutOfOrder), 2);
}

#[test]
fn unknown_and_malformed_tunnel_packets_are_dropped_and_counted() {
    let mut a = engine(vec![spec(vxlan_encap(false, 42))], Some(0));
    let mut b = engine(vec![spec(vxlan_encap(true, 42))], Some(0));
    let inner = udp_packet(6000, 1, 100);
    assert_eq!(a.handle_tx(NOW, &inner), TxVerdict::Queued);
    let good = drain_tunnel(&mut a).remove(0).1;
    // Another VNI (the IPv4 header is unchanged, UDP checksum 0).
    let mut other_vni = good.clone();
    other_vni[34] = 43;
    assert_eq!(
        b.handle_tunnel_rx(NOW, &other_vni),
        Err(DropReason::TunnelUnknown)
    );
    // From another remote: the same packet from 10.77.0.3 (header checksum redone).
    let mut other_remote = good.clone();
    other_remote[15] = 3;
    other_remote[10..12].fill(0);
    let sum = braid_wire::checksum::checksum(&other_remote[..20]);
    other_remote[10..12].copy_from_slice(&sum.to_be_bytes());
    assert_eq!(
        b.handle_tunnel_rx(NOW, &other_remote),
        Err(DropReason::TunnelUnknown)
    );
    // Malformed: bad VXLAN flags, a corrupt IPv4 header, a non-tunnel protocol, garbage.
    let mut bad_flags = good.clone();
    bad_flags[28] = 0x0c;
    let mut bad_sum = good.clone();
    bad_sum[8] = 1;
    let mut tcp = good.clone();
    tcp[9] = 6;
    for p in [
        &bad_flags[..],
        &bad_sum[..],
        &tcp[..],
        &[0xffu8; 30][..],
        &[][..],
    ] {
        assert_eq!(b.handle_tunnel_rx(NOW, p), Err(DropReason::TunnelMalformed));
    }
    // An inner ARP frame (EtherType 0x0806) holds no IP packet for a TUN vNIC.
    let mut arp = good.clone();
    arp[48..50].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(
        b.handle_tunnel_rx(NOW, &arp),
        Err(DropReason::TunnelInnerNotIp)
    );
    let drops = &b.stats().drops;
    assert_eq!(drops.get(DropReason::TunnelUnknown), 2);
    assert_eq!(drops.get(DropReason::TunnelMalformed), 5);
    assert_eq!(drops.get(DropReason::TunnelInnerNotIp), 1);
    assert!(drain_deliver(&mut b).is_empty());
    assert_eq!(b.tunnel_stats(0).unwrap().rx_packets_count, 0);
    // An engine without tunnels refuses everything, counted.
    let mut none = Engine::new(
        EngineConfig::new(vec![NicSpec::udp_ipv4(NicId(0), "l", 1_000_000, 1500)]),
        NOW,
    )
    .unwrap();
    assert_eq!(
        none.handle_tunnel_rx(NOW, &good),
        Err(DropReason::TunnelUnknown)
    );
}

#[test]
fn too_big_and_full_queue_are_counted_drops() {
    let mut s = spec(vxlan_encap(false, 42));
    s.mtu_bytes = 600;
    let mut cfg = config(vec![s]);
    cfg.tunnel_queue_packets = 4;
    cfg.classes.push(tunnelled_class(Some(0)));
    let mut a = Engine::new(cfg, NOW).unwrap();
    // 550 + 50 = 600 fits exactly; one byte more does not.
    assert_eq!(
        a.handle_tx(NOW, &udp_packet(6000, 0, 522)),
        TxVerdict::Queued
    );
    assert_eq!(
        a.handle_tx(NOW, &udp_packet(6000, 0, 523)),
        TxVerdict::Drop(DropReason::TunnelTooBig)
    );
    for _ in 0..3 {
        assert_eq!(
            a.handle_tx(NOW, &udp_packet(6000, 0, 10)),
            TxVerdict::Queued
        );
    }
    assert_eq!(
        a.handle_tx(NOW, &udp_packet(6000, 0, 10)),
        TxVerdict::Drop(DropReason::TunnelQueueFull)
    );
    assert_eq!(a.tunnel_tx_queued(), 4);
    assert_eq!(a.stats().drops.get(DropReason::TunnelTooBig), 1);
    assert_eq!(a.stats().drops.get(DropReason::TunnelQueueFull), 1);
    // A buffer too small for the packet: dropped and counted, the queue moves on.
    let mut small = [0u8; 100];
    let t = a
        .poll_tunnel_transmit(NOW, &mut small)
        .expect("a small packet");
    assert_eq!(t.len, 50 + 38);
    assert_eq!(a.stats().drops.get(DropReason::TooBig), 1);
    assert_eq!(drain_tunnel(&mut a).len(), 2);
    assert_eq!(a.store_used_bytes(), 0, "every stored packet freed");
}

#[test]
fn config_errors_name_the_field() {
    let base = || {
        config(vec![
            spec(vxlan_encap(false, 42)),
            TunnelSpec::new("t1", NicId(0), gre_encap(false, Some(1), true)),
        ])
    };
    base().validate().unwrap();
    let field = |cfg: EngineConfig| match cfg.validate() {
        Err(ConfigError::Invalid { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    let mut c = base();
    c.tunnels[1].name = "t0".into();
    assert_eq!(field(c), "tunnels[1].name");
    let mut c = base();
    c.tunnels[0].nic = NicId(3);
    assert_eq!(field(c), "tunnels[0].nic");
    let mut c = base();
    c.tunnels[0].encap = vxlan_encap(false, 1 << 24);
    assert_eq!(field(c), "tunnels[0].vni");
    let mut c = base();
    c.tunnels[0].encap = Encap::Vxlan(VxlanEncap::new(outer(false), 1, InnerFormat::Ip));
    assert_eq!(field(c), "tunnels[0].inner");
    let mut c = base();
    c.tunnels[1].encap = Encap::Gre(GreEncap::new(outer(false), InnerFormat::Ethernet));
    assert_eq!(field(c), "tunnels[1].inner");
    let mut c = base();
    c.tunnels[0].mtu_bytes = 100;
    assert_eq!(field(c), "tunnels[0].mtu_bytes");
    let mut c = base();
    c.tunnels[1].encap = vxlan_encap(false, 42);
    assert_eq!(field(c), "tunnels[1]");
    let mut c = base();
    let mut class = FlowClass::new("x", ClassMatch::default(), ClassPolicy::Pin);
    class.tunnel = Some(2);
    c.classes.push(class);
    assert_eq!(field(c), "classes[0].tunnel");
    let mut c = base();
    c.tunnel_queue_packets = 0;
    assert_eq!(field(c), "tunnel_queue_packets");
}

#[test]
fn tunnel_packets_are_paced_at_their_nics_rate() {
    // 10 Mbit/s: a 1 000-byte outer packet plus its Ethernet header is 811.2 µs on the wire.
    let mut cfg = config(vec![spec(vxlan_encap(false, 42))]);
    cfg.nics[0].capacity_bps = 10_000_000;
    cfg.classes.push(tunnelled_class(Some(0)));
    let mut a = Engine::new(cfg, NOW).unwrap();
    let outer_len = 1000;
    // VXLAN over IPv4 with an inner Ethernet header adds 50 bytes.
    let payload = outer_len - 50 - 28;
    for seq in 0..20 {
        assert_eq!(
            a.handle_tx(NOW, &udp_packet(6000, seq, payload)),
            TxVerdict::Queued
        );
    }
    let mut buf = vec![0u8; 2000];
    let mut now = NOW;
    let mut sent_at = Vec::new();
    for _ in 0..200 {
        while let Some(t) = a.poll_tunnel_transmit(now, &mut buf) {
            assert_eq!(t.len, outer_len);
            sent_at.push(now);
        }
        if sent_at.len() == 20 {
            break;
        }
        let next = a
            .tunnel_pacing_timeout()
            .expect("queued tunnel packets set a timeout");
        assert!(
            next > now,
            "the timeout moves time on: {next:?} after {now:?}"
        );
        assert!(
            a.poll_timeout().is_some_and(|t| t <= next),
            "the engine's timeout covers it"
        );
        now = next;
    }
    assert_eq!(sent_at.len(), 20, "every packet leaves");
    // The pacer lets a burst out at once (pacing credit + burst), then one packet per
    // wire time: the last leaves about 20 wire times after the first, less the burst.
    let span = sent_at[19].as_nanos() - sent_at[0].as_nanos();
    let wire_ns = (1000 + 14) * 8 * 1_000_000_000 / 10_000_000;
    assert!(
        span >= 15 * wire_ns && span <= 20 * wire_ns,
        "20 packets at 10 Mbit/s took {span} ns (wire time {wire_ns} ns each)"
    );
}

#[test]
fn braid_traffic_and_tunnel_traffic_share_the_nics_pacer() {
    let mut cfg = config(vec![spec(vxlan_encap(false, 42))]);
    cfg.nics[0].capacity_bps = 10_000_000;
    cfg.classes.push(tunnelled_class(Some(0)));
    let mut a = Engine::new(cfg, NOW).unwrap();
    // Braid packets (port 7000, not tunnelled) use up the NIC's burst...
    for seq in 0..20 {
        assert_eq!(
            a.handle_tx(NOW, &udp_packet(7000, seq, 1000)),
            TxVerdict::Queued
        );
    }
    let mut buf = vec![0u8; 2000];
    let mut braid_sent = 0;
    while a.poll_transmit(NOW, &mut buf).is_some() {
        braid_sent += 1;
    }
    assert!(
        braid_sent > 0 && braid_sent < 20,
        "a burst, then the pacer: {braid_sent}"
    );
    // ... so a tunnel packet queued now waits for the pacer too, and leaves when it allows.
    assert_eq!(
        a.handle_tx(NOW, &udp_packet(6000, 0, 100)),
        TxVerdict::Queued
    );
    assert!(a.poll_tunnel_transmit(NOW, &mut buf).is_none());
    let at = a
        .tunnel_pacing_timeout()
        .expect("a timeout for the tunnel packet");
    assert!(at > NOW, "{at:?}");
    assert!(
        a.poll_tunnel_transmit(at, &mut buf).is_some(),
        "it leaves at {at:?}"
    );
}
