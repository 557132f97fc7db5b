//! Anti-replay window benchmarks: cost per packet of `check` + `update` on the default
//! window (`ReplayWindow<512>`, 32 704 usable counters).
//!
//! Three streams, each measured per packet (`Throughput::Elements`):
//! - `in_order`: counters 0, 1, 2, ...; every packet accepted.
//! - `reordered_w64`: each block of 64 counters arrives in a random permutation (seeded).
//! - `replayed`: every counter twice; the second copy is refused by `check`.
//!
//! Run: `cargo bench -p braid-core --bench replay -- --warm-up-time 1 --measurement-time 3`.
//! Does not measure the MAC (a later module), only the window.

use std::hint::black_box;

use braid_core::replay::DefaultReplayWindow;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::seq::SliceRandom;

/// Packets per measured iteration.
const BATCH: u64 = 4096;

/// The RX protocol: check, (MAC would be verified here), update. Returns 1 if recorded.
#[inline]
fn step(w: &mut DefaultReplayWindow, counter: u64) -> u64 {
    match w.check(counter) {
        Ok(()) => u64::from(w.update(counter).is_ok()),
        Err(e) => {
            w.count_rejected(e);
            0
        }
    }
}

fn bench_replay(c: &mut Criterion) {
    let mut g = c.benchmark_group("replay");
    g.throughput(Throughput::Elements(BATCH));

    let mut w = DefaultReplayWindow::new();
    let mut next = 0u64;
    g.bench_function("in_order", |b| {
        b.iter(|| {
            let mut n = 0;
            for _ in 0..BATCH {
                n += step(&mut w, black_box(next));
                next += 1;
            }
            n
        });
    });

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut offsets: Vec<u64> = Vec::with_capacity(usize::try_from(BATCH).unwrap());
    for k in 0..BATCH / 64 {
        let mut block: Vec<u64> = (k * 64..(k + 1) * 64).collect();
        block.shuffle(&mut rng);
        offsets.extend(block);
    }
    let mut w = DefaultReplayWindow::new();
    let mut base = 0u64;
    g.bench_function("reordered_w64", |b| {
        b.iter(|| {
            let mut n = 0;
            for &o in &offsets {
                n += step(&mut w, black_box(base + o));
            }
            base += BATCH;
            n
        });
    });

    let mut w = DefaultReplayWindow::new();
    let mut next = 0u64;
    g.throughput(Throughput::Elements(2 * BATCH));
    g.bench_function("replayed", |b| {
        b.iter(|| {
            let mut n = 0;
            for _ in 0..BATCH {
                n += step(&mut w, black_box(next));
                n += step(&mut w, black_box(next));
                next += 1;
            }
            n
        });
    });
    g.finish();
}

criterion_group!(benches, bench_replay);
criterion_main!(benches);
