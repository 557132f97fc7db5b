//! Tests of the GRE outer fragmentation: fragments of at most the tunnel MTU that braid-core's
//! own IPv4 reassembler puts back into the exact outer packet (the kernel's reassembly is the
//! root test in crates/braid/tests/tunnels.rs), the tunnels that never fragment, the queue
//! taken all or none, and the counters.

use alloc::vec;
use alloc::vec::Vec;
use core::net::Ipv6Addr;

use braid_wire::tunnel::{
    DecapConfig, EncapMeta, GreEncap, InnerFormat, InnerMacs, OuterIp, VxlanEncap, decap,
};

use super::super::test_util::{NOW, config, drain_outer, outer, tunnelled_class, udp_packet};
use super::super::*;
use crate::buffer::PacketStore;
use crate::engine::EngineConfig;
use crate::ipfrag::{IpFragOutcome, IpReassembler, IpReassemblyConfig};
use crate::{DropReason, Instant, NicId};

/// GRE with key 7 and sequence numbers (IPv4, DF clear by default).
fn gre_keyed(ip: OuterIp) -> GreEncap {
    let mut g = GreEncap::new(ip, InnerFormat::Ip);
    g.key = Some(7);
    g.seq = true;
    g.checksum = true;
    g
}

/// One NIC, one tunnel of `mtu` bytes, UDP to 6000 in it.
fn tunnel_config(encap: Encap, mtu: u32) -> EngineConfig {
    let mut t = TunnelSpec::new("t0", NicId(0), encap);
    t.mtu_bytes = mtu;
    let mut cfg = config(vec![t]);
    cfg.classes.push(tunnelled_class(Some(0)));
    cfg
}

/// [`tunnel_config`] with a queue of `queue` packets and `seed`.
fn engine(encap: Encap, mtu: u32, queue: usize, seed: u64) -> Engine {
    let mut cfg = tunnel_config(encap, mtu);
    cfg.tunnel_queue_packets = queue;
    cfg.seed = seed;
    Engine::new(cfg, Instant::ZERO).unwrap()
}

fn ip_id(p: &[u8]) -> u16 {
    u16::from_be_bytes([p[4], p[5]])
}

/// (MF, offset in bytes) of an IPv4 packet.
fn frag(p: &[u8]) -> (bool, usize) {
    let f = u16::from_be_bytes([p[6], p[7]]);
    (f & 0x2000 != 0, usize::from(f & 0x1fff) * 8)
}

/// Reassemble `fragments` (in the given order) with braid-core's IPv4 reassembler.
fn reassemble(fragments: &[Vec<u8>]) -> Vec<u8> {
    let mut r = IpReassembler::new(IpReassemblyConfig::default());
    let mut out = PacketStore::new(1 << 20, 65_535);
    let mut whole = None;
    for f in fragments {
        match r.insert(NOW, &mut out, f) {
            IpFragOutcome::Pending => {}
            IpFragOutcome::Complete { buf, len } => {
                assert!(whole.is_none());
                whole = Some(out.get(&buf)[..len].to_vec());
                out.free(buf);
            }
            other => panic!("fragment refused: {other:?}"),
        }
    }
    whole.expect("the fragments complete the datagram")
}

#[test]
fn gre_with_df_clear_fragments_and_the_fragments_reassemble_to_the_outer_packet() {
    let g = gre_keyed(outer(false));
    let mut a = engine(Encap::Gre(g), 576, 64, 0x0b5a_1d00_5eed);
    let big = udp_packet(6000, 1, 1372); // 1400 bytes: 1400 + 36 > 576
    let small = udp_packet(6000, 2, 100);
    assert_eq!(a.handle_tx(NOW, &big), TxVerdict::Queued);
    assert_eq!(a.handle_tx(NOW, &small), TxVerdict::Queued);
    let out = drain_outer(&mut a);
    // 1436 outer bytes: 1416 after the IPv4 header, in pieces of 552 (576 − 20, down to a
    // multiple of 8): 3 fragments,
    // then the small packet whole.
    assert_eq!(out.len(), 4);
    let (frags, whole_small) = (&out[..3], &out[3]);
    let id = ip_id(&frags[0]);
    assert_ne!(id, 0, "never 0: the kernel would replace it per fragment");
    let mut expect_offset = 0;
    for (i, f) in frags.iter().enumerate() {
        assert!(f.len() <= 576, "fragment {i}: {} bytes", f.len());
        assert_eq!(ip_id(f), id, "one id for the datagram");
        assert_eq!(f[9], 47, "protocol GRE in every fragment");
        assert_eq!(f[6] & 0x40, 0, "DF clear");
        assert_eq!(
            braid_wire::checksum::checksum(&f[..20]),
            0,
            "header checksum"
        );
        assert_eq!(frag(f), (i < 2, expect_offset));
        expect_offset += f.len() - 20;
    }
    assert_eq!(expect_offset, 16 + big.len(), "GRE header + inner");
    // Whatever order they arrive in, they reassemble to the outer packet braid-wire
    // builds for the same id and sequence number 0; decap gives the inner packet back.
    let mut expected = vec![0u8; 2000];
    let meta = EncapMeta {
        ip_id: id,
        gre_seq: 0,
        ..EncapMeta::default()
    };
    let n = g.encap_into(&big, &mut expected, meta).unwrap();
    expected.truncate(n);
    for order in [[0, 1, 2], [2, 0, 1], [1, 2, 0]] {
        let shuffled: Vec<Vec<u8>> = order.iter().map(|&i| frags[i].clone()).collect();
        assert_eq!(reassemble(&shuffled), expected);
    }
    let d = decap(&expected, &DecapConfig::default()).unwrap();
    assert_eq!(&expected[d.inner.clone()], &big[..]);
    // The next outer packet: the next id and sequence number (one per outer packet).
    assert_eq!(ip_id(whole_small), id.wrapping_add(1));
    assert_eq!(frag(whole_small), (false, 0));
    let d = decap(whole_small, &DecapConfig::default()).unwrap();
    assert!(matches!(d.tunnel, Tunnel::Gre { seq: Some(1), .. }));
    let stats = a.tunnel_stats(0).unwrap();
    assert_eq!(stats.tx_fragmented_count, 1);
    assert_eq!(stats.tx_fragments_count, 3);
    assert_eq!(
        stats.tx_packets_count, 4,
        "every fragment is an outer packet sent"
    );
    assert_eq!(a.stats().drops.total(), 0);
    assert_eq!(a.store_used_bytes(), 0);
}

#[test]
fn df_set_vxlan_and_ipv6_outer_packets_are_not_fragmented() {
    let mut df = gre_keyed(outer(false));
    df.outer.df = true;
    let v6 = OuterIp::V6 {
        src: Ipv6Addr::LOCALHOST,
        dst: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2),
    };
    let vxlan = VxlanEncap::new(
        outer(false),
        42,
        InnerFormat::IpInEthernet(InnerMacs::default()),
    );
    for encap in [
        Encap::Gre(df),
        Encap::Vxlan(vxlan),
        Encap::Gre(gre_keyed(v6)),
    ] {
        let mut a = engine(encap, 576, 64, 1);
        assert_eq!(
            a.handle_tx(NOW, &udp_packet(6000, 1, 1000)),
            TxVerdict::Drop(DropReason::TunnelTooBig),
            "{encap:?}"
        );
        assert!(drain_outer(&mut a).is_empty());
        assert_eq!(a.tunnel_stats(0).unwrap().tx_fragmented_count, 0);
        assert_eq!(a.store_used_bytes(), 0);
    }
}

#[test]
fn fragments_are_queued_all_or_none_within_the_queue_limit() {
    let mut a = engine(Encap::Gre(gre_keyed(outer(false))), 576, 4, 1);
    // 3 fragments fit a queue of 4.
    assert_eq!(
        a.handle_tx(NOW, &udp_packet(6000, 1, 1372)),
        TxVerdict::Queued
    );
    assert_eq!(a.tunnel_tx_queued(), 3);
    // 3 more do not fit the 1 slot left: the packet is dropped whole, nothing queued.
    assert_eq!(
        a.handle_tx(NOW, &udp_packet(6000, 2, 1372)),
        TxVerdict::Drop(DropReason::TunnelQueueFull)
    );
    assert_eq!(a.tunnel_tx_queued(), 3);
    // A whole packet still takes the last slot.
    assert_eq!(
        a.handle_tx(NOW, &udp_packet(6000, 3, 10)),
        TxVerdict::Queued
    );
    assert_eq!(a.tunnel_tx_queued(), 4);
    assert_eq!(a.stats().drops.get(DropReason::TunnelQueueFull), 1);
    let out = drain_outer(&mut a);
    assert_eq!(out.len(), 4);
    assert_eq!(reassemble(&out[..3]).len(), 20 + 16 + 1400);
    let stats = a.tunnel_stats(0).unwrap();
    assert_eq!(
        (stats.tx_fragmented_count, stats.tx_fragments_count),
        (1, 3)
    );
    assert_eq!(a.store_used_bytes(), 0);
}

#[test]
fn the_outer_ipv4_id_is_never_zero() {
    // A seed whose first id is 0 (first_ip_id takes bits 16..32): the first packet gets 1.
    let mut a = engine(Encap::Gre(gre_keyed(outer(false))), 1500, 64, 0);
    assert_eq!(
        a.handle_tx(NOW, &udp_packet(6000, 1, 10)),
        TxVerdict::Queued
    );
    assert_eq!(
        a.handle_tx(NOW, &udp_packet(6000, 2, 10)),
        TxVerdict::Queued
    );
    let out = drain_outer(&mut a);
    assert_eq!(out.iter().map(|p| ip_id(p)).collect::<Vec<_>>(), vec![1, 2]);
}

/// One NIC of `bps`, one GRE tunnel (key, sequence numbers, DF clear) of 576 bytes, UDP to
/// 6000 in it.
fn paced_engine(bps: u64) -> Engine {
    let mut cfg = tunnel_config(Encap::Gre(gre_keyed(outer(false))), 576);
    cfg.nics[0].capacity_bps = bps;
    Engine::new(cfg, Instant::ZERO).unwrap()
}

/// The NIC's pacer holds the tunnel queue between datagrams, never between the fragments
/// of one: each call hands out the next fragment at once, and says how many more of its
/// datagram follow, so a caller that drains until `None` always has whole datagrams (and
/// can check its port has room for all of a datagram's fragments before the first).
#[test]
fn the_pacer_never_stops_a_datagram_between_its_fragments() {
    // 1 Mbit/s: a 576-byte fragment is 4.7 ms on the wire, so the pacer holds the queue
    // after its burst, many times over for 30 fragments.
    let mut a = paced_engine(1_000_000);
    for s in 0..10 {
        assert_eq!(
            a.handle_tx(NOW, &udp_packet(6000, s, 1372)),
            TxVerdict::Queued
        );
    }
    assert_eq!(a.tunnel_tx_queued(), 30);
    let mut buf = vec![0u8; 2000];
    let mut now = NOW;
    let mut more = Vec::new();
    let mut rounds = 0;
    while more.len() < 30 {
        let mut round = Vec::new();
        while let Some(t) = a.poll_tunnel_transmit(now, &mut buf) {
            round.push(t.more_fragments);
        }
        assert_eq!(
            round.last().copied().unwrap_or(0),
            0,
            "round {rounds} stopped inside a datagram: {round:?}"
        );
        more.extend(round);
        rounds += 1;
        assert!(rounds < 1000, "the queue drains");
        if more.len() < 30 {
            now = a
                .tunnel_pacing_timeout()
                .expect("queued packets set a timeout");
        }
    }
    assert_eq!(more, [2, 1, 0].repeat(10));
    assert!(
        rounds > 2,
        "the pacer held the queue between datagrams: {rounds} rounds"
    );
    assert_eq!(a.tunnel_stats(0).unwrap().tx_packets_count, 30);
}

/// A fragment larger than the caller's buffer is dropped with the rest of its datagram,
/// counted once: no fragment of it goes out (the peer would hold it until its reassembly
/// timeout), and the next packet does.
#[test]
fn a_fragment_too_big_for_the_buffer_drops_its_whole_datagram_once() {
    let mut a = paced_engine(1_000_000_000);
    for s in 0..2 {
        assert_eq!(
            a.handle_tx(NOW, &udp_packet(6000, s, 1372)),
            TxVerdict::Queued
        );
    }
    let small = udp_packet(6000, 9, 100);
    assert_eq!(a.handle_tx(NOW, &small), TxVerdict::Queued);
    assert_eq!(a.tunnel_tx_queued(), 7);
    // The first fragments (576 bytes) do not fit, the last ones (352) and the small packet
    // would.
    let mut buf = vec![0u8; 400];
    let t = a
        .poll_tunnel_transmit(NOW, &mut buf)
        .expect("the small packet");
    assert_eq!(t.more_fragments, 0);
    let d = decap(&buf[..t.len], &DecapConfig::default()).unwrap();
    assert_eq!(&buf[..t.len][d.inner], &small[..]);
    assert!(a.poll_tunnel_transmit(NOW, &mut buf).is_none());
    assert_eq!(
        a.stats().drops.get(DropReason::TooBig),
        2,
        "one per datagram"
    );
    assert_eq!(a.tunnel_stats(0).unwrap().tx_packets_count, 1);
    assert_eq!(a.store_used_bytes(), 0);
}
