//! Scheduler benchmarks: `plan()` per packet for the three shapes the engine sees most —
//! a 1500-byte packet whole over 3 links, a 9000-byte packet split over 3 links, and a
//! duplicate over 2 links. Each case first checks that it produces the plan kind it is named
//! after and, with a counting global allocator (`allocation-counter`), that 30 000 plans
//! allocate nothing: `plan()` writes into a caller-owned fixed-size `Plan`.
//!
//! `cargo bench -p braid-core --bench scheduler -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::Duration;

use braid_core::scheduler::{LinkView, Mode, Plan, PlanKind, SchedulerConfig, plan};
use braid_core::{NicId, NicSet};
use criterion::{Criterion, Throughput, criterion_group};

fn links(n: u8, rates_mbps: &[u64]) -> Vec<LinkView> {
    (0..n)
        .map(|i| LinkView {
            nic: NicId(i),
            usable: true,
            rate_bps: rates_mbps[usize::from(i)] * 1_000_000,
            backlog_bytes: 3_000 * u64::from(i),
            delay: Duration::from_micros(100 + 50 * u64::from(i)),
            loss: 0.001,
            mtu_payload: 1_500,
        })
        .collect()
}

struct Case {
    name: &'static str,
    links: Vec<LinkView>,
    mode: Mode,
    len: u32,
    kind: PlanKind,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "whole_1500B_3links",
            links: links(3, &[100, 200, 300]),
            mode: Mode::Single(NicSet::ALL),
            len: 1_500,
            kind: PlanKind::Whole,
        },
        Case {
            name: "split_9000B_3links",
            links: links(3, &[100, 200, 300]),
            mode: Mode::Stripe(NicSet::ALL),
            len: 9_000,
            kind: PlanKind::Split,
        },
        Case {
            name: "duplicate_1500B_2links",
            links: links(2, &[1_000, 1_000]),
            mode: Mode::Duplicate(NicSet::ALL),
            len: 1_500,
            kind: PlanKind::Duplicate,
        },
    ]
}

fn check_plans() {
    let config = SchedulerConfig::default();
    let mut out = Plan::new();
    let cases = cases();
    for c in &cases {
        plan(&c.links, c.mode, c.len, &config, &mut out).expect("plan");
        assert_eq!(out.kind(), c.kind, "{}: {:?}", c.name, out.pieces());
    }
    let control = allocation_counter::measure(|| {
        black_box(Vec::<u8>::with_capacity(8));
    });
    assert_eq!(control.count_total, 1, "the counter counts");
    let info = allocation_counter::measure(|| {
        for _ in 0..10_000 {
            for c in &cases {
                plan(
                    black_box(&c.links),
                    c.mode,
                    black_box(c.len),
                    &config,
                    &mut out,
                )
                .expect("plan");
            }
        }
    });
    assert_eq!(info.count_total, 0, "plan() must not allocate");
    println!("plan(): 0 allocations over {} calls", 10_000 * cases.len());
}

fn bench_plan(c: &mut Criterion) {
    let config = SchedulerConfig::default();
    let mut group = c.benchmark_group("scheduler/plan");
    group.throughput(Throughput::Elements(1));
    for case in cases() {
        let mut out = Plan::new();
        group.bench_function(case.name, |b| {
            b.iter(|| {
                plan(
                    black_box(&case.links),
                    case.mode,
                    black_box(case.len),
                    &config,
                    &mut out,
                )
                .expect("plan");
                black_box(out.expected_arrival)
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench_plan);

fn main() {
    check_plans();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
