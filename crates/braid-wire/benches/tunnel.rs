//! VXLAN and GRE encapsulation and decapsulation costs on a 1400-byte inner packet.
//!
//! Run: `cargo bench -p braid-wire --bench tunnel`. Benchmarks: VXLAN (outer IPv4, inner IP
//! packet in a synthesized Ethernet header, as from a TUN vNIC; UDP checksum off as Linux
//! sends it, and on; outer IPv6, where it is mandatory) and GRE (outer IPv4, key + sequence,
//! without and with the checksum), each encap in place (headroom in front of the inner
//! packet) and copying (`encap_into`), and decap. Owns no correctness checks (the unit tests
//! do); each benchmark asserts its vector decaps, so a broken one cannot give a fast,
//! meaningless figure.

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};

use braid_wire::tunnel::{DecapConfig, InnerFormat, InnerMacs, OuterIp};
use braid_wire::{Encap, EncapMeta, GreEncap, VxlanEncap, decap};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const INNER_LEN: usize = 1400;

const OUTER_V4: OuterIp = OuterIp::V4 {
    src: Ipv4Addr::new(10, 0, 0, 1),
    dst: Ipv4Addr::new(10, 0, 0, 2),
};
const OUTER_V6: OuterIp = OuterIp::V6 {
    src: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
    dst: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2),
};
const MACS: InnerMacs = InnerMacs {
    src: [2, 0, 0, 0, 0, 1],
    dst: [2, 0, 0, 0, 0, 2],
};
const META: EncapMeta = EncapMeta {
    flow_hash: 0x1234_5678,
    ip_id: 7,
    gre_seq: 42,
    vlan: None,
};

/// A 1400-byte IPv4 UDP packet (the TUN vNIC's common case).
fn inner_packet() -> Vec<u8> {
    let mut p = vec![0x5a; INNER_LEN];
    p[..20].copy_from_slice(&[
        0x45, 0, 0x05, 0x78, 0, 1, 0x40, 0, 64, 17, 0, 0, 192, 168, 1, 1, 192, 168, 1, 2,
    ]);
    p
}

fn configs() -> Vec<(&'static str, Encap)> {
    let vxlan = VxlanEncap::new(OUTER_V4, 100, InnerFormat::IpInEthernet(MACS));
    let mut vxlan_csum = vxlan;
    vxlan_csum.udp_checksum_v4 = true;
    let vxlan6 = VxlanEncap::new(OUTER_V6, 100, InnerFormat::IpInEthernet(MACS));
    let mut gre = GreEncap::new(OUTER_V4, InnerFormat::Ip);
    gre.key = Some(9);
    gre.seq = true;
    let mut gre_csum = gre;
    gre_csum.checksum = true;
    vec![
        ("vxlan4", Encap::Vxlan(vxlan)),
        ("vxlan4_udpcsum", Encap::Vxlan(vxlan_csum)),
        ("vxlan6", Encap::Vxlan(vxlan6)),
        ("gre4_key_seq", Encap::Gre(gre)),
        ("gre4_key_seq_csum", Encap::Gre(gre_csum)),
    ]
}

fn bench_tunnel(c: &mut Criterion) {
    let inner = inner_packet();
    let decap_cfg = DecapConfig::default();
    let mut group = c.benchmark_group("tunnel");
    group.throughput(Throughput::Elements(1));
    for (name, cfg) in configs() {
        let overhead = cfg.overhead();
        // In place: the inner packet sits after `overhead` bytes of headroom; re-encap over
        // the same bytes each iteration (the headers are rewritten whole every time).
        let mut buf = vec![0u8; overhead + INNER_LEN];
        buf[overhead..].copy_from_slice(&inner);
        let range = cfg
            .encap_in_place(&mut buf, overhead..overhead + INNER_LEN, META)
            .expect("bench vector encaps");
        let outer = &buf[range];
        let decapped = decap(outer, &decap_cfg).expect("bench vector decaps");
        let (_, l3) = decapped
            .inner_l3(outer)
            .expect("bench vector has an IP packet");
        assert_eq!(&outer[l3], &inner[..]);
        group.bench_function(BenchmarkId::new("encap_in_place", name), |b| {
            b.iter(|| {
                cfg.encap_in_place(
                    black_box(&mut buf[..]),
                    overhead..overhead + INNER_LEN,
                    black_box(META),
                )
            });
        });
        let mut out = vec![0u8; overhead + INNER_LEN];
        group.bench_function(BenchmarkId::new("encap_into", name), |b| {
            b.iter(|| cfg.encap_into(black_box(&inner), black_box(&mut out[..]), META));
        });
        assert!(cfg.encap_into(&inner, &mut out, META).is_ok());
        let packet = out.clone();
        group.bench_function(BenchmarkId::new("decap", name), |b| {
            b.iter(|| decap(black_box(&packet[..]), &decap_cfg));
        });
        group.bench_function(BenchmarkId::new("decap_inner_l3", name), |b| {
            b.iter(|| {
                let d = decap(black_box(&packet[..]), &decap_cfg).expect("valid");
                d.inner_l3(&packet)
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench_tunnel);
criterion_main!(benches);
