//! Header-edit costs: the Internet checksum over a 1500-byte packet (full recomputation vs
//! RFC 1624 incremental update), a NAT-style rewrite (destination address + port) of an
//! IPv4/TCP and an IPv6/UDP packet, DSCP + TTL on IPv4, and a VLAN push + pop.
//!
//! Run: `cargo bench -p braid-wire --bench rewrite`. Owns no correctness checks (the unit
//! tests do); each benchmark first asserts that its input is valid and its edit succeeds
//! and keeps the checksums right, so a broken vector cannot produce a fast, meaningless
//! figure. Rewrites alternate between two targets so that every iteration really changes
//! the fields (an unchanged field is a no-op).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use braid_wire::checksum::{Sum, checksum, update_u32};
use braid_wire::rewrite::{Edit, VlanTag, apply_l3, vlan_pop, vlan_push};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const PACKET_LEN: usize = 1500;

/// A 1500-byte IPv4/TCP packet with valid checksums.
fn ipv4_tcp() -> Vec<u8> {
    let mut p = vec![0u8; PACKET_LEN];
    for (i, byte) in p.iter_mut().enumerate() {
        *byte = (i * 7 + 3) as u8;
    }
    let total = PACKET_LEN as u16;
    p[..20].copy_from_slice(&[
        0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ]);
    p[2..4].copy_from_slice(&total.to_be_bytes());
    let ip_sum = checksum(&p[..20]);
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    p[20..24].copy_from_slice(&[0xc0, 0x01, 0x00, 0x50]);
    p[32] = 5 << 4;
    p[36..38].fill(0);
    let tcp_sum = Sum::new()
        .add_ipv4_pseudo_header([10, 0, 0, 1], [10, 0, 0, 2], 6, total - 20)
        .add_bytes(&p[20..])
        .checksum();
    p[36..38].copy_from_slice(&tcp_sum.to_be_bytes());
    p
}

/// A 1500-byte IPv6/UDP packet with a valid checksum.
fn ipv6_udp() -> Vec<u8> {
    let mut p = vec![0u8; PACKET_LEN];
    for (i, byte) in p.iter_mut().enumerate() {
        *byte = (i * 13 + 1) as u8;
    }
    let payload = (PACKET_LEN - 40) as u16;
    p[..8].copy_from_slice(&[0x60, 0, 0, 0, 0, 0, 17, 64]);
    p[4..6].copy_from_slice(&payload.to_be_bytes());
    let src = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).octets();
    let dst = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2).octets();
    p[8..24].copy_from_slice(&src);
    p[24..40].copy_from_slice(&dst);
    p[40..44].copy_from_slice(&[0x13, 0x88, 0x13, 0x89]);
    p[44..46].copy_from_slice(&payload.to_be_bytes());
    p[46..48].fill(0);
    let sum = Sum::new()
        .add_ipv6_pseudo_header(src, dst, 17, u32::from(payload))
        .add_bytes(&p[40..])
        .checksum();
    p[46..48].copy_from_slice(&sum.to_be_bytes());
    p
}

/// Asserts the IPv4 header and TCP checksums of `p` verify.
fn assert_ipv4_tcp_valid(p: &[u8]) {
    assert_eq!(checksum(&p[..20]), 0);
    let len = (p.len() - 20) as u16;
    let sum = Sum::new()
        .add_ipv4_pseudo_header(
            p[12..16].try_into().unwrap(),
            p[16..20].try_into().unwrap(),
            6,
            len,
        )
        .add_bytes(&p[20..])
        .checksum();
    assert_eq!(sum, 0);
}

fn assert_ipv6_udp_valid(p: &[u8]) {
    let sum = Sum::new()
        .add_ipv6_pseudo_header(
            p[8..24].try_into().unwrap(),
            p[24..40].try_into().unwrap(),
            17,
            (p.len() - 40) as u32,
        )
        .add_bytes(&p[40..])
        .checksum();
    assert_eq!(sum, 0);
}

fn bench_checksum(c: &mut Criterion) {
    let packet = ipv4_tcp();
    assert_ipv4_tcp_valid(&packet);
    let mut group = c.benchmark_group("checksum_1500B");
    group.throughput(Throughput::Elements(1));
    // What a rewrite without RFC 1624 would do: the whole TCP checksum again.
    group.bench_function("full_tcp_recompute", |b| {
        b.iter(|| {
            let p = black_box(&packet[..]);
            Sum::new()
                .add_ipv4_pseudo_header([10, 0, 0, 1], [10, 0, 0, 9], 6, 1480)
                .add_bytes(&p[20..])
                .checksum()
        });
    });
    // RFC 1624 Eqn. 3 for the changed destination address.
    group.bench_function("incremental_u32", |b| {
        b.iter(|| {
            update_u32(
                black_box(0x1234),
                black_box(0x0a00_0002),
                black_box(0x0a00_0009),
            )
        });
    });
    group.finish();

    let mut group = c.benchmark_group("checksum_bytes");
    group.throughput(Throughput::Bytes(PACKET_LEN as u64));
    group.bench_function("1500B", |b| b.iter(|| checksum(black_box(&packet[..]))));
    group.finish();
}

fn bench_nat(c: &mut Criterion) {
    let mut group = c.benchmark_group("rewrite");
    // Two rewrites per iteration (there and back): report per rewrite.
    group.throughput(Throughput::Elements(2));

    let mut v4 = ipv4_tcp();
    let to = [
        Edit::SetDstAddr(IpAddr::V4(Ipv4Addr::new(192, 168, 7, 7))),
        Edit::SetDstPort(8080),
    ];
    let back = [
        Edit::SetDstAddr(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))),
        Edit::SetDstPort(80),
    ];
    apply_l3(&mut v4, &to).expect("valid");
    assert_ipv4_tcp_valid(&v4);
    assert_eq!(&v4[16..20], &[192, 168, 7, 7]);
    apply_l3(&mut v4, &back).expect("valid");
    assert_eq!(v4, ipv4_tcp());
    group.bench_function("nat_ipv4_tcp", |b| {
        b.iter(|| {
            apply_l3(black_box(&mut v4[..]), black_box(&to)).expect("valid");
            apply_l3(black_box(&mut v4[..]), black_box(&back)).expect("valid");
        });
    });

    let mut v6 = ipv6_udp();
    let to = [
        Edit::SetDstAddr(IpAddr::V6(Ipv6Addr::new(0xfd00, 1, 2, 3, 4, 5, 6, 7))),
        Edit::SetDstPort(53),
    ];
    let back = [
        Edit::SetDstAddr(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2))),
        Edit::SetDstPort(5001),
    ];
    apply_l3(&mut v6, &to).expect("valid");
    assert_ipv6_udp_valid(&v6);
    apply_l3(&mut v6, &back).expect("valid");
    assert_eq!(v6, ipv6_udp());
    group.bench_function("nat_ipv6_udp", |b| {
        b.iter(|| {
            apply_l3(black_box(&mut v6[..]), black_box(&to)).expect("valid");
            apply_l3(black_box(&mut v6[..]), black_box(&back)).expect("valid");
        });
    });

    let mut v4 = ipv4_tcp();
    let to = [Edit::SetDscp(46), Edit::SetTtl(9)];
    let back = [Edit::SetDscp(0), Edit::SetTtl(64)];
    apply_l3(&mut v4, &to).expect("valid");
    assert_ipv4_tcp_valid(&v4);
    group.bench_function("dscp_ttl_ipv4", |b| {
        b.iter(|| {
            apply_l3(black_box(&mut v4[..]), black_box(&back)).expect("valid");
            apply_l3(black_box(&mut v4[..]), black_box(&to)).expect("valid");
        });
    });
    group.finish();
}

fn bench_vlan(c: &mut Criterion) {
    // A 1514-byte Ethernet frame (MACs, EtherType, the IPv4 packet) with room for a tag.
    let mut frame = vec![0u8; 14 + PACKET_LEN + 4];
    frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    frame[14..14 + PACKET_LEN].copy_from_slice(&ipv4_tcp());
    let len = 14 + PACKET_LEN;
    let original = frame.clone();
    let tag = VlanTag {
        pcp: 5,
        dei: false,
        vid: 100,
    };
    let pushed = vlan_push(&mut frame, len, tag).expect("room");
    assert_eq!(pushed, len + 4);
    assert_eq!(vlan_pop(&mut frame, pushed), Ok(len));
    assert_eq!(frame[..len], original[..len]);

    let mut group = c.benchmark_group("vlan_1514B");
    group.throughput(Throughput::Elements(1));
    group.bench_function("push_pop", |b| {
        b.iter(|| {
            let pushed = vlan_push(black_box(&mut frame[..]), len, tag).expect("room");
            vlan_pop(black_box(&mut frame[..]), pushed).expect("tagged")
        });
    });
    group.finish();
}

criterion_group!(benches, bench_checksum, bench_nat, bench_vlan);
criterion_main!(benches);
