//! Classification benchmarks: cost per packet of the TX fast path and slow path of the flow
//! table.
//!
//! - `hit/ipv4_tcp`, `hit/ipv6_udp`: `IpSummary::parse_l3` + `FlowKey::from_summary` +
//!   `FlowTable::get_mut` hit, with 64 K flows in the table; packets cycle over 4 096 of those
//!   flows (so lookups touch different buckets, not one hot line). `*_table_only`: the same
//!   lookups with precomputed keys, to split the cost between parsing and the table.
//! - `miss_insert/evict_at_capacity`: a key never seen, `get_mut` miss + `insert` into a full
//!   64 K table that evicts its LRU entry (`EvictOldestIdle`, no minimum idle).
//!
//! Each measured iteration handles `BATCH` packets (`Throughput::Elements`).
//! Run: `cargo bench -p braid-core --bench classify -- --warm-up-time 1 --measurement-time 3`.
//! Does not measure expiry (bounded batches off the packet path).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use braid_core::Instant;
use braid_core::flow::{
    ClassifyConfig, EvictionPolicy, FlowKey, FlowTable, FlowTableConfig, IPPROTO_TCP, IPPROTO_UDP,
};
use braid_wire::ip::IpSummary;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Flows in the table.
const FLOWS: u32 = 65_536;
/// Distinct packets cycled through in the hit benchmarks.
const PACKETS: u32 = 4_096;
/// Packets per measured iteration.
const BATCH: u64 = 1_024;

fn ipv4_tcp(i: u32) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&40u16.to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64;
    p[9] = IPPROTO_TCP;
    p[12..16].copy_from_slice(&[10, 1, (i >> 8) as u8, i as u8]);
    p[16..20].copy_from_slice(&[10, 2, 0, 1]);
    let mut sum: u32 = p[..20]
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p[20..22].copy_from_slice(&((i >> 16) as u16 + 1024).to_be_bytes());
    p[22..24].copy_from_slice(&443u16.to_be_bytes());
    p[32] = 0x50; // data offset 5
    p[33] = 0x10; // ACK
    p
}

fn ipv6_udp(i: u32) -> Vec<u8> {
    let mut p = vec![0u8; 48];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&8u16.to_be_bytes());
    p[6] = IPPROTO_UDP;
    p[7] = 64;
    let src = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, (i >> 16) as u16, i as u16);
    let dst = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p[40..42].copy_from_slice(&5000u16.to_be_bytes());
    p[42..44].copy_from_slice(&5001u16.to_be_bytes());
    p[44..46].copy_from_slice(&8u16.to_be_bytes());
    p
}

fn table(capacity: usize) -> FlowTable<FlowKey, u64> {
    FlowTable::new(FlowTableConfig {
        capacity,
        idle_timeout: Duration::from_secs(30),
        eviction: EvictionPolicy::EvictOldestIdle,
        min_idle_for_eviction: Duration::ZERO,
        hash_seed: 0x5eed,
    })
}

fn bench_hit(c: &mut Criterion, name: &str, build: fn(u32) -> Vec<u8>) {
    let cfg = ClassifyConfig::default();
    let mut t = table(FLOWS as usize);
    for i in 0..FLOWS {
        let k = FlowKey::from_summary(&IpSummary::parse_l3(&build(i)).unwrap(), &cfg);
        t.insert(k, Instant::ZERO, 0).unwrap();
    }
    assert_eq!(t.len(), FLOWS as usize, "{name}: keys must be distinct");
    // Spread the cycled packets over the whole table.
    let packets: Vec<Vec<u8>> = (0..PACKETS).map(|i| build(i * (FLOWS / PACKETS))).collect();
    let mut g = c.benchmark_group("hit");
    g.throughput(Throughput::Elements(BATCH));
    let mut n = 0usize;
    let mut now = 0u64;
    g.bench_function(name, |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                let p = &packets[n % packets.len()];
                n += 1;
                now += 100;
                let s = IpSummary::parse_l3(black_box(p)).expect("valid packet");
                let k = FlowKey::from_summary(&s, &cfg);
                let (_, v) = t.get_mut(&k, Instant::from_nanos(now)).expect("hit");
                *v += 1;
            }
        });
    });
    // The same lookups with the keys precomputed: the table's share of the cost.
    let keys: Vec<FlowKey> = packets
        .iter()
        .map(|p| FlowKey::from_summary(&IpSummary::parse_l3(p).unwrap(), &cfg))
        .collect();
    g.bench_function(format!("{name}_table_only"), |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                let k = &keys[n % keys.len()];
                n += 1;
                now += 100;
                let (_, v) = t
                    .get_mut(black_box(k), Instant::from_nanos(now))
                    .expect("hit");
                *v += 1;
            }
        });
    });
    g.finish();
    assert_eq!(t.stats().misses, 0);
}

fn bench_miss_insert(c: &mut Criterion) {
    let mut t = table(FLOWS as usize);
    let mut i = 0u32;
    let mut now = 0u64;
    let key = |i: u32| {
        FlowKey::five_tuple(
            IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i >> 16))),
            IpAddr::V4(Ipv4Addr::new(10, 255, 0, 1)),
            IPPROTO_UDP,
            i as u16,
            53,
        )
    };
    while t.len() < FLOWS as usize {
        t.insert(key(i), Instant::ZERO, 0).unwrap();
        i += 1;
    }
    let mut g = c.benchmark_group("miss_insert");
    g.throughput(Throughput::Elements(BATCH));
    g.bench_function("evict_at_capacity", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                let k = key(i);
                i = i.wrapping_add(1);
                now += 100;
                let now = Instant::from_nanos(now);
                if t.get_mut(&k, now).is_none() {
                    let ins = t.insert(k, now, 1).expect("LRU evictable");
                    black_box(ins.evicted);
                }
            }
        });
    });
    g.finish();
    assert!(t.stats().evictions > 0);
    assert_eq!(t.len(), FLOWS as usize);
}

fn bench_classify(c: &mut Criterion) {
    bench_hit(c, "ipv4_tcp", ipv4_tcp);
    bench_hit(c, "ipv6_udp", ipv6_udp);
    bench_miss_insert(c);
}

criterion_group!(benches, bench_classify);
criterion_main!(benches);
