//! Reorder buffer benchmarks: cost per datagram of `insert` + `poll_release` on one flow.
//!
//! Three streams, each measured per datagram (`Throughput::Elements`):
//! - `in_order`: seqs 0, 1, 2, ...; every insert releases one datagram.
//! - `reordered_w64`: each block of 64 seqs arrives in a random permutation (seeded).
//! - `duplicated`: every seq twice (A/B redundancy); the second copy is a counted duplicate.
//!
//! Run: `cargo bench -p braid-core --bench reorder -- --warm-up-time 1 --measurement-time 3`.
//! Does not measure gap give-ups by time (they happen at most once per loss).

use std::hint::black_box;
use std::time::Duration;

use braid_core::Instant;
use braid_core::reorder::{Admit, ReorderBuffer, ReorderConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::seq::SliceRandom;

/// Datagrams per measured iteration.
const BATCH: u64 = 4096;
const HOLD: Duration = Duration::from_millis(25);

/// Insert `seq` and release what is ready; returns the number released (kept alive through
/// `black_box`). The handle is a `u64`, as a packet-store index would be.
#[inline]
fn step(b: &mut ReorderBuffer<u64>, now: Instant, seq: u64) -> u64 {
    let mut n = 0;
    if let Admit::Rejected(item, reason) = b.insert(now, seq, seq) {
        black_box((item, reason));
    }
    while let Some(r) = b.poll_release(now, HOLD) {
        black_box(r.item);
        n += 1;
    }
    n
}

fn bench_reorder(c: &mut Criterion) {
    let config = ReorderConfig::default();
    assert_eq!(sanity_check_duplicates(&config), 100);
    let now = Instant::from_millis(1);
    let mut g = c.benchmark_group("reorder");
    g.throughput(Throughput::Elements(BATCH));

    g.bench_function("in_order", |bch| {
        let mut b = ReorderBuffer::new(&config);
        let mut next = 0u64;
        bch.iter(|| {
            let mut released = 0;
            for _ in 0..BATCH {
                released += step(&mut b, now, next);
                next += 1;
            }
            assert_eq!(released, BATCH);
        });
    });

    // A fixed seeded permutation of offsets, each block of 64 shuffled.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut offsets: Vec<u64> = (0..BATCH).collect();
    for block in offsets.chunks_mut(64) {
        block.shuffle(&mut rng);
    }
    g.bench_function("reordered_w64", |bch| {
        let mut b = ReorderBuffer::new(&config);
        let mut base = 0u64;
        bch.iter(|| {
            let mut released = 0;
            for &off in &offsets {
                released += step(&mut b, now, base + off);
            }
            base += BATCH;
            assert_eq!(released, BATCH);
        });
    });

    g.bench_function("duplicated", |bch| {
        let mut b = ReorderBuffer::new(&config);
        let mut next = 0u64;
        bch.iter(|| {
            let mut released = 0;
            for _ in 0..BATCH / 2 {
                released += step(&mut b, now, next);
                released += step(&mut b, now, next);
                next += 1;
            }
            assert_eq!(released, BATCH / 2);
        });
    });
    g.finish();
}

/// The duplicated stream must count its duplicates (guards against benchmarking a no-op).
fn sanity_check_duplicates(config: &ReorderConfig) -> u64 {
    let mut b = ReorderBuffer::new(config);
    let now = Instant::ZERO;
    for seq in 0..100 {
        step(&mut b, now, seq);
        step(&mut b, now, seq);
    }
    assert_eq!(b.stats().duplicate_count, 100);
    b.stats().delivered_count
}

criterion_group!(benches, bench_reorder);
criterion_main!(benches);
