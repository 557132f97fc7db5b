//! Per-header parse and emit costs: the braid header (parse, emit) and classification
//! (`IpSummary::parse_l3`) for IPv4 TCP and IPv6 UDP.
//!
//! Run: `cargo bench -p braid-wire --bench parse`. Owns no correctness checks (the unit
//! tests do); each benchmark asserts only that its input parses, so a broken vector cannot
//! produce a fast, meaningless figure.

use std::hint::black_box;

use braid_wire::{BraidPacket, BraidRepr, IpSummary, PacketType};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// A 1400-byte data fragment with AUTH, the TX path's common case.
fn braid_repr() -> BraidRepr {
    BraidRepr {
        packet_type: PacketType::Data,
        link_id: 2,
        flow_id: 0x0102_0304,
        seq: 0x1122_3344_5566_7788,
        frag_offset: 1400,
        total_len: 9000,
        timestamp_ns: 1_700_000_000_000_000_000,
        duplicate: false,
        auth: Some(42),
        payload_len: 1400,
    }
}

/// IPv4 TCP, 20-byte header + 20-byte TCP header + 8 bytes of data.
const IPV4_TCP: [u8; 48] = [
    0x45, 0x00, 0x00, 0x30, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x01,
    0x0a, 0x00, 0x00, 0x02, // IPv4
    0xc0, 0x01, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0, // TCP
    1, 2, 3, 4, 5, 6, 7, 8,
];

/// IPv6 UDP, 40-byte header + 8-byte UDP header + 8 bytes of data.
const IPV6_UDP: [u8; 56] = [
    0x60, 0x00, 0x00, 0x00, 0x00, 0x10, 0x11, 0x40, // version, tc, flow, len 16, UDP, hop 64
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // 2001:db8::1
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, // 2001:db8::2
    0x13, 0x88, 0x13, 0x89, 0x00, 0x10, 0x00, 0x00, // UDP 5000 -> 5001, len 16
    1, 2, 3, 4, 5, 6, 7, 8,
];

fn bench_braid(c: &mut Criterion) {
    let repr = braid_repr();
    let mut packet = vec![0u8; repr.buffer_len()];
    repr.emit_into(&mut packet).expect("bench vector emits");

    let mut group = c.benchmark_group("braid_header");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse", |b| {
        b.iter(|| {
            let view = BraidPacket::new_checked(black_box(&packet[..])).expect("valid");
            BraidRepr::parse(&view).expect("valid")
        });
    });
    let mut out = vec![0u8; repr.buffer_len()];
    group.bench_function("emit", |b| {
        b.iter(|| black_box(&repr).emit_into(black_box(&mut out[..])));
    });
    group.finish();
}

fn bench_classify(c: &mut Criterion) {
    assert!(IpSummary::parse_l3(&IPV4_TCP).is_ok());
    assert!(IpSummary::parse_l3(&IPV6_UDP).is_ok());
    let mut group = c.benchmark_group("ip_summary_parse_l3");
    group.throughput(Throughput::Elements(1));
    group.bench_function("ipv4_tcp", |b| {
        b.iter(|| IpSummary::parse_l3(black_box(&IPV4_TCP)));
    });
    group.bench_function("ipv6_udp", |b| {
        b.iter(|| IpSummary::parse_l3(black_box(&IPV6_UDP)));
    });
    group.finish();
}

criterion_group!(benches, bench_braid, bench_classify);
criterion_main!(benches);
