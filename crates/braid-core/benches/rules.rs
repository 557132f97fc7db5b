//! Rule engine benchmarks: per-flow cost of the slow path (tuple-space lookup of a new flow)
//! with 10, 1 000 and 10 000 rules, of the fast path (the flow's cached compiled action), and
//! of building (validating + compiling) a 10 000-rule set.
//!
//! - `slow_path/{10,1000,10000}`: `RuleSet::lookup` over 4 096 precomputed keys, half drawn
//!   inside a random rule (a hit), half random (mostly the broad rules or no rule).
//! - `linear_scan/{1000,10000}`: the same keys against a priority-sorted linear scan of
//!   `RuleMatch::matches`, for reference: what tuple-space search saves.
//! - `fast_path/10000`: `RuleSet::cached_actions` with each flow's valid `CachedRule`.
//! - `build/10000`: `RuleSet::build` (validation with conflict and shadow checks, compile,
//!   index).
//! - `build_one_priority/10000`: the same for 10 000 rules that all have one priority (a
//!   NAT or service table: hosts, subnets, IPv6 networks and ports of one address, pairwise
//!   disjoint), where the conflict check must compare the rules of a priority with each
//!   other.
//! - `conflict_check_pairwise/10000`: for reference, the conflict check on the same rules as
//!   it was before the overlap search: every pair of the priority level compared.
//!
//! The rules look like a real policy: IPv4 (85 %) and IPv6 prefixes of common lengths,
//! TCP/UDP with well-known ports or port ranges, some DSCP matches; priorities favour more
//! specific rules, so the set is valid (no conflict, no shadowed rule).
//! Each measured iteration handles `BATCH` keys (`Throughput::Elements`).
//! Run: `cargo bench -p braid-core --bench rules -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use braid_core::NicSet;
use braid_core::flow::{IPPROTO_TCP, IPPROTO_UDP};
use braid_core::rules::{
    Action, CachedRule, CompiledActions, DscpSet, IpFamily, IpPrefix, PortRange, QosClass, Rule,
    RuleContext, RuleKey, RuleMatch, RuleSet, RuleSetConfig,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Keys per measured iteration.
const BATCH: usize = 1024;
/// Distinct keys cycled through.
const KEYS: usize = 4096;

const WELL_KNOWN: &[u16] = &[22, 53, 80, 123, 443, 3306, 5432, 6379, 8080, 9092];
/// Disjoint from each other and from `WELL_KNOWN`, so no range nests in another.
const RANGES: &[(u16, u16)] = &[(10_000, 10_999), (20_000, 29_999), (31_000, 31_999)];

fn prefix(rng: &mut ChaCha8Rng, family: IpFamily, under: u128) -> IpPrefix {
    let (len, bits): (u8, u128) = match family {
        IpFamily::V4 => (
            [8, 16, 16, 24, 24, 24, 32][rng.random_range(0..7)],
            u128::from(rng.random::<u32>()) | under,
        ),
        IpFamily::V6 => (
            [32, 48, 64, 64, 128][rng.random_range(0..5)],
            rng.random::<u128>() >> 32 | under,
        ),
    };
    let width = u32::from(family.bits());
    let mask = if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    } & !((1u128 << (width - u32::from(len))) - 1);
    let addr = match family {
        IpFamily::V4 => IpAddr::V4(Ipv4Addr::from((bits & mask) as u32)),
        IpFamily::V6 => IpAddr::V6(Ipv6Addr::from(bits & mask)),
    };
    IpPrefix::new(addr, len).expect("masked prefix")
}

/// A realistic random match and its specificity score.
fn random_match(rng: &mut ChaCha8Rng) -> (RuleMatch, u32) {
    let family = if rng.random_bool(0.85) {
        IpFamily::V4
    } else {
        IpFamily::V6
    };
    let (src_base, dst_base) = match family {
        // Sources in 10/8 (set below), destinations anywhere.
        IpFamily::V4 => (0, 0),
        IpFamily::V6 => (0x2001_0db8u128 << 96, 0x2001_0db8u128 << 96),
    };
    let mut m = RuleMatch::ANY;
    let mut score = 0;
    if rng.random_bool(0.5) {
        let mut p = prefix(rng, family, src_base);
        if family == IpFamily::V4 {
            // Keep sources inside 10/8.
            let IpAddr::V4(a) = p.addr else {
                unreachable!()
            };
            let o = a.octets();
            p = IpPrefix::new(IpAddr::V4(Ipv4Addr::new(10, o[1], o[2], o[3])), p.len)
                .expect("prefix");
        }
        score += u32::from(p.len);
        m.src = Some(p);
    }
    if rng.random_bool(0.8) {
        let p = prefix(rng, family, dst_base);
        score += u32::from(p.len);
        m.dst = Some(p);
    }
    let proto = rng.random_range(0..20);
    if proto < 18 {
        m.protocol = Some(if proto < 9 { IPPROTO_TCP } else { IPPROTO_UDP });
        score += 8;
        match rng.random_range(0..10) {
            0..5 => {
                m.dst_ports = Some(PortRange::single(
                    WELL_KNOWN[rng.random_range(0..WELL_KNOWN.len())],
                ));
                score += 16;
            }
            5..7 => {
                let (lo, hi) = RANGES[rng.random_range(0..RANGES.len())];
                m.dst_ports = Some(PortRange::new(lo, hi));
                score += 8;
            }
            _ => {}
        }
        if rng.random_bool(0.1) {
            m.src_ports = Some(PortRange::new(49_152, 65_535));
            score += 8;
        }
    }
    if rng.random_bool(0.1) {
        m.dscp = Some(DscpSet::single(
            [0, 10, 18, 26, 34, 46][rng.random_range(0..6)],
        ));
        score += 8;
    }
    (m, score)
}

/// `n` valid rules: unique matches, priorities by specificity (more specific wins), so a
/// rule is only ever covered by rules it beats.
fn rules(n: usize, seed: u64) -> Vec<Rule> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let (m, score) = random_match(&mut rng);
        if !seen.insert(m) {
            continue;
        }
        let i = out.len() as u32;
        let action = match i % 3 {
            0 => Action::SetDscp((i % 64) as u8),
            1 => Action::SetPriorityClass(QosClass((i % 8) as u8)),
            _ => Action::SetTtl(64),
        };
        out.push(Rule::new(
            &format!("r{i}"),
            (1000 - score) * 100_000 + i,
            m,
            &[action],
        ));
    }
    out
}

/// `n` rules of one priority, pairwise disjoint (so the set is valid): a quarter each of
/// IPv4 hosts with a protocol and port, IPv4 /24 subnets, IPv6 /64 networks, and UDP ports of
/// one IPv4 /16. Actions differ from rule to rule, so any overlap would be a conflict.
fn one_priority_rules(n: usize) -> Vec<Rule> {
    (0..n)
        .map(|i| {
            let k = (i / 4) as u32;
            let m = match i % 4 {
                0 => RuleMatch {
                    dst: Some(IpPrefix::host(IpAddr::V4(Ipv4Addr::from(0x6440_0000 + k)))),
                    protocol: Some(if k.is_multiple_of(2) {
                        IPPROTO_TCP
                    } else {
                        IPPROTO_UDP
                    }),
                    dst_ports: Some(PortRange::single(WELL_KNOWN[k as usize % WELL_KNOWN.len()])),
                    ..RuleMatch::ANY
                },
                1 => RuleMatch {
                    dst: Some(
                        IpPrefix::new(IpAddr::V4(Ipv4Addr::from(0xac10_0000 + (k << 8))), 24)
                            .expect("prefix"),
                    ),
                    ..RuleMatch::ANY
                },
                2 => RuleMatch {
                    dst: Some(
                        IpPrefix::new(
                            IpAddr::V6(Ipv6Addr::from(
                                (0x2001_0db8u128 << 96) | (u128::from(k) << 64),
                            )),
                            64,
                        )
                        .expect("prefix"),
                    ),
                    ..RuleMatch::ANY
                },
                _ => RuleMatch {
                    dst: Some(
                        IpPrefix::new(IpAddr::V4(Ipv4Addr::new(192, 168, 0, 0)), 16)
                            .expect("prefix"),
                    ),
                    protocol: Some(IPPROTO_UDP),
                    dst_ports: Some(PortRange::single(20_000 + k as u16)),
                    ..RuleMatch::ANY
                },
            };
            let action = match i % 3 {
                0 => Action::SetDscp((i % 64) as u8),
                1 => Action::SetPriorityClass(QosClass((i % 8) as u8)),
                _ => Action::SetTtl((i % 255) as u8 + 1),
            };
            Rule::new(&format!("r{i}"), 100, m, &[action])
        })
        .collect()
}

/// The conflict check as a loop over every pair of each priority level (the validator's
/// before `rules::overlap`): the number of conflicting pairs.
fn conflicts_pairwise(rules: &[Rule]) -> usize {
    let compiled: Vec<CompiledActions> = rules
        .iter()
        .map(|r| CompiledActions::compile(&r.actions))
        .collect();
    let mut order: Vec<usize> = (0..rules.len()).collect();
    order.sort_by_key(|&i| (rules[i].priority, i));
    let mut conflicts = 0;
    for level in order.chunk_by(|&a, &b| rules[a].priority == rules[b].priority) {
        for (x, &a) in level.iter().enumerate() {
            for &b in &level[x + 1..] {
                if rules[a].matcher.overlaps(&rules[b].matcher) && compiled[a] != compiled[b] {
                    conflicts += 1;
                }
            }
        }
    }
    conflicts
}

fn addr_in(rng: &mut ChaCha8Rng, p: Option<IpPrefix>, family: IpFamily) -> IpAddr {
    let random = match family {
        IpFamily::V4 => u128::from(rng.random::<u32>()),
        IpFamily::V6 => rng.random::<u128>(),
    };
    let Some(p) = p else {
        return match family {
            IpFamily::V4 => IpAddr::V4(Ipv4Addr::from(random as u32)),
            IpFamily::V6 => IpAddr::V6(Ipv6Addr::from(random)),
        };
    };
    let width = u32::from(family.bits());
    let host = if u32::from(p.len) == width {
        0
    } else {
        random & ((1u128 << (width - u32::from(p.len))) - 1)
    };
    match p.addr {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) | host as u32)),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) | host)),
    }
}

fn port_in(rng: &mut ChaCha8Rng, r: Option<PortRange>) -> u16 {
    match r {
        Some(r) => rng.random_range(r.lo..=r.hi),
        None => rng.random(),
    }
}

/// Half the keys inside a random rule, half random.
fn keys(rules: &[Rule], seed: u64) -> Vec<RuleKey> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..KEYS)
        .map(|_| {
            if rng.random_bool(0.5) {
                let m = rules[rng.random_range(0..rules.len())].matcher;
                let family = m.family().unwrap_or(IpFamily::V4);
                RuleKey {
                    src: addr_in(&mut rng, m.src, family),
                    dst: addr_in(&mut rng, m.dst, family),
                    protocol: m.protocol.unwrap_or(IPPROTO_UDP),
                    src_port: port_in(&mut rng, m.src_ports),
                    dst_port: port_in(&mut rng, m.dst_ports),
                    dscp: Some(m.dscp.and_then(|d| d.as_single()).unwrap_or(0)),
                    vlan: None,
                    vni: None,
                    vnic: 0,
                }
            } else {
                let family = if rng.random_bool(0.85) {
                    IpFamily::V4
                } else {
                    IpFamily::V6
                };
                RuleKey {
                    src: addr_in(&mut rng, None, family),
                    dst: addr_in(&mut rng, None, family),
                    protocol: if rng.random_bool(0.5) {
                        IPPROTO_TCP
                    } else {
                        IPPROTO_UDP
                    },
                    src_port: rng.random(),
                    dst_port: WELL_KNOWN[rng.random_range(0..WELL_KNOWN.len())],
                    dscp: Some(0),
                    vlan: None,
                    vni: None,
                    vnic: 0,
                }
            }
        })
        .collect()
}

fn build(rules: &[Rule]) -> RuleSet {
    RuleSet::build(
        rules,
        &RuleContext::new(NicSet::ALL),
        &RuleSetConfig::default(),
    )
    .unwrap_or_else(|e| panic!("bench set must be valid: {e}"))
}

fn bench_rules(c: &mut Criterion) {
    let mut g = c.benchmark_group("rules");
    g.throughput(Throughput::Elements(BATCH as u64));
    for n in [10usize, 1_000, 10_000] {
        let rs = rules(n, 42);
        let set = build(&rs);
        let ks = keys(&rs, 7);
        let hits = ks.iter().filter(|k| set.lookup(k).is_some()).count();
        eprintln!(
            "rules/{n}: {} tuples, {hits}/{} keys match a rule",
            set.tuple_count(),
            ks.len()
        );
        let mut at = 0;
        g.bench_function(format!("slow_path/{n}"), |b| {
            b.iter(|| {
                let mut found = 0u32;
                for k in &ks[at..at + BATCH] {
                    found += u32::from(set.lookup(black_box(k)).is_some());
                }
                at = (at + BATCH) % KEYS;
                found
            });
        });
        if n >= 1_000 {
            let mut sorted: Vec<(u32, usize)> = rs
                .iter()
                .enumerate()
                .map(|(i, r)| (r.priority, i))
                .collect();
            sorted.sort_unstable();
            let by_priority: Vec<RuleMatch> = sorted.iter().map(|&(_, i)| rs[i].matcher).collect();
            let mut at = 0;
            g.bench_function(format!("linear_scan/{n}"), |b| {
                b.iter(|| {
                    let mut found = 0u32;
                    for k in &ks[at..at + BATCH] {
                        let k = black_box(k);
                        found += u32::from(by_priority.iter().any(|m| m.matches(k)));
                    }
                    at = (at + BATCH) % KEYS;
                    found
                });
            });
        }
        if n == 10_000 {
            let mut caches: Vec<CachedRule> = ks.iter().map(|k| set.classify(k)).collect();
            let mut at = 0;
            g.bench_function(format!("fast_path/{n}"), |b| {
                b.iter(|| {
                    let mut changed = 0u32;
                    for (k, c) in ks[at..at + BATCH]
                        .iter()
                        .zip(caches[at..at + BATCH].iter_mut())
                    {
                        let a = set.cached_actions(black_box(c), k);
                        changed += u32::from(a.modifies_packet());
                    }
                    at = (at + BATCH) % KEYS;
                    changed
                });
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("rules");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    let rs = rules(10_000, 42);
    g.bench_function("build/10000", |b| b.iter(|| build(black_box(&rs))));
    let rs = one_priority_rules(10_000);
    g.bench_function("build_one_priority/10000", |b| {
        b.iter(|| build(black_box(&rs)))
    });
    assert_eq!(conflicts_pairwise(&rs), 0, "the table is disjoint");
    g.bench_function("conflict_check_pairwise/10000", |b| {
        b.iter(|| conflicts_pairwise(black_box(&rs)))
    });
    g.finish();
}

criterion_group!(benches, bench_rules);
criterion_main!(benches);
