//! RSS benchmarks: cost of one Toeplitz hash (and queue pick) per packet.
//!
//! - `table/ipv4_ports`, `table/ipv6_ports`: [`Rss::queue_for`] on a TCP packet (12- and
//!   36-byte hash input) through the precomputed nibble table, as the vNIC workers use it.
//! - `reference/ipv4_ports`, `reference/ipv6_ports`: [`toeplitz_hash`] (sliding window, no
//!   set-up) on the same inputs.
//!
//! Each iteration hashes a batch of 1024 distinct flows (`Throughput::Elements`).
//! Run: `cargo bench -p braid-core --bench rss -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use braid_core::rss::{Rss, ToeplitzKey, toeplitz_hash};
use braid_wire::IpSummary;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::{RngExt, SeedableRng};

const BATCH: usize = 1024;

fn flows(v6: bool) -> Vec<IpSummary> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    (0..BATCH)
        .map(|_| {
            let (src, dst) = if v6 {
                let (s, d): (u128, u128) = (rng.random(), rng.random());
                (IpAddr::V6(Ipv6Addr::from(s)), IpAddr::V6(Ipv6Addr::from(d)))
            } else {
                let (s, d): (u32, u32) = (rng.random(), rng.random());
                (IpAddr::V4(Ipv4Addr::from(s)), IpAddr::V4(Ipv4Addr::from(d)))
            };
            IpSummary {
                src,
                dst,
                protocol: 6,
                src_port: rng.random(),
                dst_port: rng.random(),
                dscp: 0,
                ecn: 0,
                ttl: 64,
                vlan: None,
                vxlan_vni: None,
                is_fragment: false,
                total_len: 1500,
            }
        })
        .collect()
}

/// The hash input `src ‖ dst ‖ sport ‖ dport`, as `Rss::hash_for` builds it.
fn input(s: &IpSummary) -> Vec<u8> {
    let mut v = Vec::with_capacity(36);
    for a in [s.src, s.dst] {
        match a {
            IpAddr::V4(a) => v.extend_from_slice(&a.octets()),
            IpAddr::V6(a) => v.extend_from_slice(&a.octets()),
        }
    }
    v.extend_from_slice(&s.src_port.to_be_bytes());
    v.extend_from_slice(&s.dst_port.to_be_bytes());
    v
}

fn bench_rss(c: &mut Criterion) {
    let rss = Rss::new(ToeplitzKey::MICROSOFT, 4).expect("4 queues");
    let key = ToeplitzKey::MICROSOFT;
    let mut g = c.benchmark_group("rss");
    g.throughput(Throughput::Elements(BATCH as u64));
    for (name, v6) in [("ipv4_ports", false), ("ipv6_ports", true)] {
        let summaries = flows(v6);
        let inputs: Vec<Vec<u8>> = summaries.iter().map(input).collect();
        g.bench_function(format!("table/{name}"), |b| {
            b.iter(|| {
                let mut acc = 0u32;
                for s in &summaries {
                    acc = acc.wrapping_add(u32::from(rss.queue_for(black_box(s))));
                }
                acc
            });
        });
        g.bench_function(format!("reference/{name}"), |b| {
            b.iter(|| {
                let mut acc = 0u32;
                for i in &inputs {
                    acc ^= toeplitz_hash(&key, black_box(i));
                }
                acc
            });
        });
    }
    g.finish();
}

criterion_group!(benches, bench_rss);
criterion_main!(benches);
