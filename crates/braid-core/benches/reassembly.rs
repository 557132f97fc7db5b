//! Reassembly benchmarks: DPDK's reassembly test matrix (`app/test/test_reassembly_perf.c`),
//! adapted to braid fragments, plus 1500-byte fragments against a plain memcpy.
//!
//! Group `reassembly_64B` (`Throughput::Elements` = fragments), 64-byte fragments, 2/3/8
//! fragments per datagram, `DATAGRAMS` = 32 768 datagrams per measured iteration:
//!
//! - `frags{N}/{order}/1` — one datagram outstanding: datagrams one after another; `order` is
//!   the order of the fragments within a datagram: `in_order`, `reversed`, `random`.
//! - `frags{N}/{order}/32k` — 32 768 datagrams outstanding: `interleaved` visits the datagrams
//!   round-robin (fragment 0 of every datagram, then fragment 1, ...), `reversed` likewise with
//!   the fragments of each datagram last to first, and `random` is a random permutation of all
//!   fragments of all 32 768 datagrams (any fragment of any datagram may come next: the worst
//!   case for the caches).
//!
//! Group `reassembly_1500B` (`Throughput::Bytes`): 9000-byte datagrams (a jumbo vNIC over
//! 1500-byte NICs) in six 1500-byte fragments, in order, one outstanding; `memcpy_1500` copies
//! the same bytes, fragment by fragment, into a 9000-byte buffer, in the same run.
//!
//! Fragment lists are built outside the timed loop; each iteration inserts every fragment and
//! frees every completed handle. Sequence numbers advance by `DATAGRAMS` per iteration, so every
//! iteration reassembles fresh datagram ids. After each benchmark the drop counters are checked
//! to be zero: the figures measure completed reassembly, not refusals.
//!
//! Run: `cargo bench -p braid-core --bench reassembly -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;

use braid_core::buffer::PacketStore;
use braid_core::reassembly::{DatagramKey, FragOutcome, Reassembler, ReassemblyConfig};
use braid_core::{FlowId, Instant};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Datagrams per measured iteration (and the "32 K outstanding" of the matrix).
const DATAGRAMS: usize = 32_768;

/// One fragment: datagram index within the iteration, offset, length.
#[derive(Clone, Copy)]
struct Frag {
    dgram: u32,
    offset: u32,
    len: u32,
}

/// A small deterministic PRNG (xorshift64*), enough to shuffle.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Arrival {
    InOrder,
    Reversed,
    Random,
    Interleaved,
}

impl Arrival {
    fn name(self) -> &'static str {
        match self {
            Self::InOrder => "in_order",
            Self::Reversed => "reversed",
            Self::Random => "random",
            Self::Interleaved => "interleaved",
        }
    }
}

/// The fragment order for `DATAGRAMS` datagrams of `nfrags` fragments of `frag_len` bytes.
fn build(
    nfrags: u32,
    frag_len: u32,
    order: Arrival,
    outstanding_all: bool,
    rng: &mut Rng,
) -> Vec<Frag> {
    let n = DATAGRAMS as u32;
    let piece = |d: u32, i: u32| Frag {
        dgram: d,
        offset: i * frag_len,
        len: frag_len,
    };
    let mut v = Vec::with_capacity(DATAGRAMS * nfrags as usize);
    if !outstanding_all {
        for d in 0..n {
            let mut idx: Vec<u32> = (0..nfrags).collect();
            match order {
                Arrival::InOrder => {}
                Arrival::Reversed => idx.reverse(),
                Arrival::Random => rng.shuffle(&mut idx),
                Arrival::Interleaved => unreachable!("interleaving needs many datagrams"),
            }
            v.extend(idx.into_iter().map(|i| piece(d, i)));
        }
        return v;
    }
    match order {
        Arrival::Interleaved | Arrival::InOrder => {
            for i in 0..nfrags {
                v.extend((0..n).map(|d| piece(d, i)));
            }
        }
        Arrival::Reversed => {
            for i in (0..nfrags).rev() {
                v.extend((0..n).map(|d| piece(d, i)));
            }
        }
        Arrival::Random => {
            for d in 0..n {
                v.extend((0..nfrags).map(|i| piece(d, i)));
            }
            rng.shuffle(&mut v);
        }
    }
    v
}

struct Rig {
    r: Reassembler,
    store: PacketStore,
    src: Vec<u8>,
    base_seq: u64,
    now: Instant,
}

impl Rig {
    fn new() -> Self {
        Self {
            r: Reassembler::new(ReassemblyConfig {
                max_contexts: DATAGRAMS,
                ..ReassemblyConfig::default()
            }),
            store: PacketStore::new(512 << 20, 65_536),
            src: (0..65_536u32).map(|i| (i * 7 + 3) as u8).collect(),
            base_seq: 0,
            now: Instant::ZERO,
        }
    }

    /// Insert every fragment of the list (one iteration), freeing completed datagrams.
    #[inline]
    fn run(&mut self, frags: &[Frag], total_len: u32) -> usize {
        let mut done = 0;
        for f in frags {
            let key = DatagramKey {
                flow: FlowId(1),
                seq: self.base_seq + u64::from(f.dgram),
            };
            let data = &self.src[f.offset as usize..(f.offset + f.len) as usize];
            match self
                .r
                .insert(self.now, &mut self.store, key, f.offset, total_len, data)
            {
                FragOutcome::Complete { buf, len } => {
                    black_box(len);
                    self.store.free(buf);
                    done += 1;
                }
                FragOutcome::Pending => {}
                FragOutcome::Dropped(r) => {
                    black_box(r);
                }
            }
        }
        self.base_seq += DATAGRAMS as u64;
        // 1 µs per iteration: far from the 250 ms timeout.
        self.now = Instant::from_nanos(self.now.as_nanos() + 1_000);
        done
    }

    fn assert_clean(&self, what: &str) {
        let st = self.r.stats();
        if st.fragments_in == 0 {
            return; // filtered out on the command line
        }
        assert_eq!(st.drops.total(), 0, "{what}: drops {:?}", st.drops);
        assert_eq!(st.contexts_live, 0, "{what}: contexts left");
        assert!(st.datagrams_completed > 0, "{what}: nothing completed");
    }
}

fn bench_64(c: &mut Criterion) {
    let mut g = c.benchmark_group("reassembly_64B");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for nfrags in [2u32, 3, 8] {
        let total = nfrags * 64;
        let cases = [
            (Arrival::InOrder, false),
            (Arrival::Reversed, false),
            (Arrival::Random, false),
            (Arrival::Interleaved, true),
            (Arrival::Reversed, true),
            (Arrival::Random, true),
        ];
        for (order, all) in cases {
            let frags = build(nfrags, 64, order, all, &mut rng);
            let name = format!(
                "frags{nfrags}/{}/{}",
                order.name(),
                if all { "32k" } else { "1" }
            );
            g.throughput(Throughput::Elements(frags.len() as u64));
            let mut rig = Rig::new();
            g.bench_function(&name, |b| {
                b.iter(|| black_box(rig.run(&frags, total)));
            });
            rig.assert_clean(&name);
        }
    }
    g.finish();
}

fn bench_1500(c: &mut Criterion) {
    const FRAG: u32 = 1500;
    const NFRAGS: u32 = 6;
    const TOTAL: u32 = FRAG * NFRAGS;
    /// Datagrams per iteration in this group (the list is cycled through `DATAGRAMS` ids).
    const PER_ITER: usize = 1024;
    let mut g = c.benchmark_group("reassembly_1500B");
    let mut rng = Rng(1);
    let mut frags = build(NFRAGS, FRAG, Arrival::InOrder, false, &mut rng);
    frags.truncate(PER_ITER * NFRAGS as usize);
    let bytes = u64::from(TOTAL) * PER_ITER as u64;
    g.throughput(Throughput::Bytes(bytes));

    let mut rig = Rig::new();
    g.bench_function("reassemble_9000_in_6x1500", |b| {
        b.iter(|| black_box(rig.run(&frags, TOTAL)));
    });
    rig.assert_clean("reassemble_9000_in_6x1500");

    let src = rig.src.clone();
    let mut dst = vec![0u8; TOTAL as usize];
    g.bench_function("memcpy_1500", |b| {
        b.iter(|| {
            for f in &frags {
                let r = f.offset as usize..(f.offset + f.len) as usize;
                dst[r.clone()].copy_from_slice(black_box(&src[r]));
                black_box(&mut dst);
            }
        });
    });
    g.finish();
}

criterion_group!(benches, bench_64, bench_1500);
criterion_main!(benches);
