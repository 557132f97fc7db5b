//! Standard IP fragmentation and reassembly benchmarks (`braid_core::ipfrag`).
//!
//! Group `ipfrag_fragment` (`Throughput::Bytes`): a 9000-byte IPv4 / IPv6 packet (a jumbo vNIC)
//! fragmented for MTUs 1280, 1500 and 4000 into one caller buffer, fragment by fragment.
//!
//! Group `ipfrag_reassemble` (`Throughput::Bytes`): the same fragments (built outside the timed
//! loop) reassembled in order, one datagram outstanding, the output buffer freed.
//!
//! Group `ipfrag_smack` (`Throughput::Elements` = fragments): FragmentSmack (CVE-2018-5391).
//! Each iteration offers ONE fragment. `n` attacker slots each send their datagram as 8-byte
//! fragments at offsets 16·k (k < `frags` − 2, random order, never complete), then an
//! overlapping 16-byte fragment (the datagram is dropped: a tombstone), then a stale one, then
//! move to a new id. Every 17th fragment belongs to a legitimate 3000-byte datagram (three
//! fragments at MTU 1500, in order) instead. Virtual time advances 100 ns per fragment, the
//! timeout is twice an attacker datagram's life, and `handle_timeout(now, 64)` runs every 64
//! fragments (its cost is in the figure). So about `n` attacker contexts are live at any time,
//! holding half their fragments on average.
//!
//! - `contexts/{10,1000,10000}`: `n` live attacker contexts, `frags` = 64 (the default cap).
//! - `frags_per_ctx/{8,64,512}`: 1000 live contexts, `frags` (= `max_fragments`) 8, 64, 512.
//! - `gen_only/1000`: the flood generator alone (building each fragment's bytes), to subtract.
//!
//! After each smack benchmark it is asserted that every legitimate datagram whose fragments
//! were all offered completed, no cap refused anything, and memory stayed under the cap; the
//! peak memory and live contexts are printed.
//!
//! Run: `cargo bench -p braid-core --bench ipfrag -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::time::{Duration, Instant as WallInstant};

use braid_core::Instant;
use braid_core::buffer::{MAX_BUF_BYTES, PacketStore};
use braid_core::ipfrag::{
    FragIdCounter, Fragmenter, IpFragOutcome, IpReassembler, IpReassemblyConfig,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// A small deterministic PRNG (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn checksum(h: &mut [u8]) {
    h[10] = 0;
    h[11] = 0;
    let mut sum = 0u32;
    for c in h.chunks_exact(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    h[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

fn v4_packet(id: u16, payload: usize) -> Vec<u8> {
    let total = 20 + payload;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[192, 0, 2, 1]);
    p[16..20].copy_from_slice(&[192, 0, 2, 2]);
    checksum(&mut p[..20]);
    for (i, b) in p[20..].iter_mut().enumerate() {
        *b = i as u8;
    }
    p
}

fn v6_packet(payload: usize) -> Vec<u8> {
    let mut p = vec![0u8; 40 + payload];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(payload as u16).to_be_bytes());
    p[6] = 17;
    p[7] = 64;
    p[8] = 0x20;
    p[9] = 0x01;
    p[23] = 1;
    p[24] = 0x20;
    p[25] = 0x01;
    p[39] = 2;
    for (i, b) in p[40..].iter_mut().enumerate() {
        *b = i as u8;
    }
    p
}

fn all_fragments(p: &[u8], mtu: usize, ids: &mut FragIdCounter) -> Vec<Vec<u8>> {
    let mut f = Fragmenter::new(p, mtu, ids).expect("fragmentable");
    let mut buf = vec![0u8; mtu];
    let mut out = Vec::new();
    while let Some(len) = f.write_next(&mut buf).expect("fits") {
        out.push(buf[..len].to_vec());
    }
    out
}

const MTUS: [usize; 3] = [1280, 1500, 4000];

fn bench_fragment_reassemble(c: &mut Criterion) {
    let mut g = c.benchmark_group("ipfrag_fragment");
    g.throughput(Throughput::Bytes(9000));
    for (name, p) in [
        ("v4_9000B", v4_packet(7, 8980)),
        ("v6_9000B", v6_packet(8960)),
    ] {
        for mtu in MTUS {
            let mut ids = FragIdCounter::new(1);
            let mut buf = vec![0u8; mtu];
            g.bench_function(BenchmarkId::new(name, format!("mtu{mtu}")), |b| {
                b.iter(|| {
                    let mut f = Fragmenter::new(black_box(&p), mtu, &mut ids).expect("ok");
                    while let Some(len) = f.write_next(&mut buf).expect("fits") {
                        black_box(&buf[..len]);
                    }
                });
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("ipfrag_reassemble");
    g.throughput(Throughput::Bytes(9000));
    for (name, p) in [
        ("v4_9000B", v4_packet(7, 8980)),
        ("v6_9000B", v6_packet(8960)),
    ] {
        for mtu in MTUS {
            let frags = all_fragments(&p, mtu, &mut FragIdCounter::new(1));
            let mut r = IpReassembler::new(IpReassemblyConfig::default());
            let mut out = PacketStore::new(16 << 20, MAX_BUF_BYTES);
            let mut t = 0u64;
            let mut done = 0u64;
            g.bench_function(BenchmarkId::new(name, format!("mtu{mtu}")), |b| {
                b.iter(|| {
                    t += 1;
                    for f in &frags {
                        match r.insert(Instant::from_nanos(t), &mut out, black_box(f)) {
                            IpFragOutcome::Complete { buf, len } => {
                                black_box(len);
                                out.free(buf);
                                done += 1;
                            }
                            IpFragOutcome::Pending => {}
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                });
            });
            assert_eq!(r.stats().drops.total(), 0);
            assert_eq!(r.stats().datagrams_completed, done);
            assert_eq!(r.stats().contexts_live, 0);
        }
    }
    g.finish();
}

/// One attacker slot of the flood: its datagram id and how many of its fragments were sent.
/// Eight bytes, so the generator's state stays in cache and the benchmark measures the
/// reassembler, not the generator.
#[derive(Clone, Copy)]
struct Slot {
    id: u32,
    sent: u32,
}

/// The FragmentSmack flood plus interleaved legitimate datagrams.
struct Flood {
    slots: Vec<Slot>,
    /// Disjoint 8-byte fragments per attacker datagram (`frags` - 2): sent in the order
    /// `16 · ((mult · k + id) mod tiny)`, a permutation (`mult` is coprime to `tiny`).
    tiny: u32,
    mult: u32,
    rng: Rng,
    next_id: u32,
    /// Legitimate datagrams' fragments (3 each, 256 datagrams, distinct ids), cycled.
    legit: Vec<Vec<Vec<u8>>>,
    legit_i: usize,
    legit_frag: usize,
    legit_sent: u64,
    step: u64,
    buf: [u8; 64],
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl Flood {
    fn new(n: usize, frags: usize) -> Self {
        let mut ids = FragIdCounter::new(1);
        let legit = (0..256u16)
            .map(|i| {
                let p = if i % 2 == 0 {
                    v4_packet(i, 3000)
                } else {
                    v6_packet(3000)
                };
                all_fragments(&p, 1500, &mut ids)
            })
            .collect();
        let tiny = u32::try_from(frags - 2).expect("small");
        let mut mult = (tiny * 5 / 8).max(1);
        while gcd(mult, tiny) != 1 {
            mult += 1;
        }
        let mut f = Self {
            slots: Vec::with_capacity(n),
            tiny,
            mult,
            rng: Rng(0x9e37_79b9_7f4a_7c15),
            next_id: 1_000_000,
            legit,
            legit_i: 0,
            legit_frag: 0,
            legit_sent: 0,
            step: 0,
            buf: [0; 64],
        };
        for _ in 0..n {
            // Start the slots at different points of their plan, so the live contexts hold
            // every fill level from the start.
            let sent = (f.rng.next() % u64::from(tiny + 1)) as u32;
            f.slots.push(Slot {
                id: f.next_id,
                sent,
            });
            f.next_id += 1;
        }
        f
    }

    /// Write the next fragment to offer; returns its bytes.
    #[inline]
    fn next(&mut self) -> &[u8] {
        self.step += 1;
        if self.step.is_multiple_of(17) {
            let (d, i) = (self.legit_i, self.legit_frag);
            self.legit_frag += 1;
            if self.legit_frag == self.legit[d].len() {
                self.legit_frag = 0;
                self.legit_i = (d + 1) % self.legit.len();
                self.legit_sent += 1;
            }
            return &self.legit[d][i];
        }
        let si = (self.rng.next() % self.slots.len() as u64) as usize;
        let mut s = self.slots[si];
        if s.sent == self.tiny + 2 {
            s = Slot {
                id: self.next_id,
                sent: 0,
            };
            self.next_id = self.next_id.wrapping_add(1);
        }
        let (off, len) = if s.sent < self.tiny {
            (16 * ((self.mult * s.sent + s.id) % self.tiny) as usize, 8)
        } else if s.sent == self.tiny {
            (24, 16) // overlaps the tiny fragment at 32: the datagram is dropped
        } else {
            (40, 16) // stale: the datagram's tombstone catches it
        };
        s.sent += 1;
        self.slots[si] = s;
        let n = if s.id.is_multiple_of(2) {
            // IPv4: 20-byte header + data.
            let b = &mut self.buf;
            b[..20].fill(0);
            b[0] = 0x45;
            b[2..4].copy_from_slice(&((20 + len) as u16).to_be_bytes());
            b[4..6].copy_from_slice(&(s.id as u16).to_be_bytes());
            b[6..8].copy_from_slice(&(0x2000 | (off / 8) as u16).to_be_bytes());
            b[8] = 64;
            b[9] = 17;
            b[12..16].copy_from_slice(&[198, 51, 100, 7]);
            b[16..20].copy_from_slice(&[192, 0, 2, 2]);
            checksum(&mut b[..20]);
            20 + len
        } else {
            let b = &mut self.buf;
            b[..48].fill(0);
            b[0] = 0x60;
            b[4..6].copy_from_slice(&((8 + len) as u16).to_be_bytes());
            b[6] = 44;
            b[7] = 64;
            b[8] = 0x20;
            b[9] = 0x01;
            b[23] = 7;
            b[24] = 0x20;
            b[25] = 0x01;
            b[39] = 2;
            b[40] = 17;
            b[42..44].copy_from_slice(&((off as u16) | 1).to_be_bytes());
            b[44..48].copy_from_slice(&s.id.to_be_bytes());
            48 + len
        };
        &self.buf[..n]
    }
}

/// Reassembler, output store and flood for one smack benchmark.
struct Smack {
    r: IpReassembler,
    out: PacketStore,
    flood: Flood,
    t_ns: u64,
    completed: u64,
    mem_cap: usize,
    max_contexts: usize,
    peak_live: usize,
}

impl Smack {
    fn new(n: usize, frags: u16) -> Self {
        let dt = 100u64;
        // An attacker datagram lives about n × frags × 17/16 fragments; twice that.
        let life_ns = n as u64 * u64::from(frags) * dt * 17 / 16;
        let mem_cap = 64 << 20;
        let max_contexts = 4 * n + 1024;
        let mut s = Self {
            r: IpReassembler::new(IpReassemblyConfig {
                mem_cap_bytes: mem_cap,
                max_contexts,
                max_fragments: frags,
                timeout: Duration::from_nanos(2 * life_ns),
                hash_seed: 0xdead_beef,
                ..IpReassemblyConfig::default()
            }),
            out: PacketStore::new(16 << 20, MAX_BUF_BYTES),
            flood: Flood::new(n, usize::from(frags)),
            t_ns: 0,
            completed: 0,
            mem_cap,
            max_contexts,
            peak_live: 0,
        };
        // Warm up: three attacker lifetimes, so contexts, tombstones and pages are in steady
        // state before anything is timed.
        let warm = 3 * n * usize::from(frags) * 17 / 16;
        for _ in 0..warm {
            s.step();
        }
        s
    }

    #[inline]
    fn step(&mut self) {
        self.t_ns += 100;
        let now = Instant::from_nanos(self.t_ns);
        let pkt = self.flood.next();
        if let IpFragOutcome::Complete { buf, len } = self.r.insert(now, &mut self.out, pkt) {
            black_box(len);
            self.out.free(buf);
            self.completed += 1;
        }
        if self.flood.step.is_multiple_of(64) {
            self.r.handle_timeout(now, 64);
            self.peak_live = self.peak_live.max(self.r.stats().contexts_live);
        }
    }

    fn check(&self, name: &str) {
        let s = self.r.stats();
        assert_eq!(
            s.datagrams_completed, self.completed,
            "{name}: completions counted"
        );
        assert_eq!(
            self.completed, self.flood.legit_sent,
            "{name}: every legitimate datagram completed, no attack datagram did"
        );
        assert_eq!(
            s.drops.context_cap + s.drops.memory_cap,
            0,
            "{name}: no cap refused anything"
        );
        assert!(s.peak_bytes_held <= self.mem_cap);
        assert!(s.contexts_live + s.tombstones_live <= self.max_contexts);
        eprintln!(
            "{name}: legit completed {}, overlaps {}, stale {}, timeouts {}, peak live contexts {}, \
             peak held {} KiB, reserved {} KiB",
            self.completed,
            s.drops.overlap,
            s.drops.stale,
            s.drops.timeout,
            self.peak_live,
            s.peak_bytes_held >> 10,
            self.r.reserved_bytes() >> 10,
        );
    }
}

fn bench_smack(c: &mut Criterion) {
    let mut g = c.benchmark_group("ipfrag_smack");
    g.throughput(Throughput::Elements(1));
    let cases: [(&str, usize, u16); 6] = [
        ("contexts", 10, 64),
        ("contexts", 1000, 64),
        ("contexts", 10_000, 64),
        ("frags_per_ctx", 1000, 8),
        ("frags_per_ctx", 1000, 64),
        ("frags_per_ctx", 1000, 512),
    ];
    for (group, n, frags) in cases {
        let param = if group == "contexts" {
            n.to_string()
        } else {
            frags.to_string()
        };
        // Built (and warmed up) only if the benchmark is selected by the filter.
        let mut smack: Option<Smack> = None;
        g.bench_function(BenchmarkId::new(group, &param), |b| {
            let smack = smack.get_or_insert_with(|| Smack::new(n, frags));
            b.iter_custom(|iters| {
                let start = WallInstant::now();
                for _ in 0..iters {
                    smack.step();
                }
                start.elapsed()
            });
        });
        if let Some(mut smack) = smack {
            // Let the in-flight legitimate datagram finish before checking.
            while smack.flood.legit_frag != 0 {
                smack.step();
            }
            smack.check(&format!("{group}/{param}"));
        }
    }
    let mut flood = Flood::new(1000, 64);
    g.bench_function(BenchmarkId::new("gen_only", "1000"), |b| {
        b.iter(|| black_box(flood.next().len()));
    });
    g.finish();
}

criterion_group!(benches, bench_fragment_reassemble, bench_smack);
criterion_main!(benches);
