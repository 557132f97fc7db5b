//! QoS benchmarks, per packet (`Throughput::Elements`):
//! - `qos/enqueue_dequeue/{1,4,8}`: a batch of 64 packets (sizes 64..=1500, seeded) enqueued
//!   round-robin over 1, 4 or 8 classes (with more than one: class 0 strict, the others
//!   weighted 1, 2, 3, …; no meters), then dequeued. One element = one enqueue + one dequeue.
//! - `qos/enqueue_dequeue_metered/4`: the same with a trTCM meter on every class.
//! - `qos/dequeue_shaped/4`: enqueue + `dequeue_shaped` through a 10 Gbit/s shaper, time
//!   advancing by each packet's wire time.
//! - `meter/srtcm`, `meter/trtcm`: one `meter` call, time advancing ~1 µs per packet.
//! - `shaper/try_consume`, `shaper/earliest_send`: one call, time advancing.
//!
//! Run: `cargo bench -p braid-core --bench qos -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;

use braid_core::Instant;
use braid_core::qos::{
    ClassConfig, ClassId, Color, Egress, MeterConfig, MeterMode, Qos, QosConfig, Shaper,
    ShaperConfig, SrTcm, SrTcmConfig, TrTcm, TrTcmConfig,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Packets per measured iteration.
const BATCH: usize = 64;

fn sizes() -> [usize; BATCH] {
    let mut x = 0x9e37_79b9_u32;
    core::array::from_fn(|_| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        64 + (x % 1437) as usize
    })
}

fn config(classes: u8, metered: bool) -> QosConfig {
    let classes = (0..classes)
        .map(|i| {
            let mut c = if i == 0 && classes > 1 {
                ClassConfig::strict(0, None, 1024, 1 << 22)
            } else {
                ClassConfig::weighted(i, u32::from(i.max(1)), 1024, 1 << 22)
            };
            if metered {
                c.meter = Some(MeterConfig::TrTcm(TrTcmConfig {
                    pir_bps: 10_000_000_000,
                    pbs_bytes: 1 << 20,
                    cir_bps: 5_000_000_000,
                    cbs_bytes: 1 << 19,
                    mode: MeterMode::ColorBlind,
                }));
            }
            c
        })
        .collect();
    QosConfig {
        max_packet_bytes: 1500,
        quantum_bytes: 1500,
        classes,
    }
}

fn bench_sched(c: &mut Criterion) {
    let sizes = sizes();
    let mut g = c.benchmark_group("qos");
    g.throughput(Throughput::Elements(BATCH as u64));
    for (name, classes, metered) in [
        ("enqueue_dequeue", 1u8, false),
        ("enqueue_dequeue", 4, false),
        ("enqueue_dequeue", 8, false),
        ("enqueue_dequeue_metered", 4, true),
    ] {
        let mut q: Qos<u32> = Qos::new(config(classes, metered), Instant::ZERO).unwrap();
        let mut now = 0u64;
        g.bench_function(BenchmarkId::new(name, classes), |b| {
            b.iter(|| {
                now += 50_000;
                let t = Instant::from_nanos(now);
                for (i, &len) in sizes.iter().enumerate() {
                    let class = ClassId((i % usize::from(classes)) as u8);
                    let _ = q.enqueue(t, class, i as u32, black_box(len), Color::Green);
                }
                let mut sum = 0usize;
                while let Some(d) = q.dequeue(t) {
                    sum += d.len;
                }
                sum
            });
        });
        assert_eq!(q.stats().drops(), 0, "the bench must not drop");
    }

    let mut q: Qos<u32> = Qos::new(config(4, false), Instant::ZERO).unwrap();
    let mut shaper = Shaper::new(
        ShaperConfig {
            rate_bps: 10_000_000_000,
            burst_bytes: 3100,
            overhead_bytes: 50,
        },
        1500,
        Instant::ZERO,
    )
    .unwrap();
    let mut now = 0u64;
    g.bench_function(BenchmarkId::new("dequeue_shaped", 4), |b| {
        b.iter(|| {
            let mut sent = 0usize;
            for (i, &len) in sizes.iter().enumerate() {
                let class = ClassId((i % 4) as u8);
                let _ = q.enqueue(Instant::from_nanos(now), class, i as u32, len, Color::Green);
            }
            while sent < BATCH {
                match q.dequeue_shaped(Instant::from_nanos(now), &mut shaper) {
                    Egress::Packet(d) => {
                        sent += 1;
                        black_box(d);
                    }
                    Egress::NotBefore(t) => now = t.as_nanos(),
                    Egress::Idle => break,
                }
            }
            sent
        });
    });
    g.finish();
}

fn bench_meter(c: &mut Criterion) {
    let sizes = sizes();
    let mut g = c.benchmark_group("meter");
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut sr = SrTcm::new(
        SrTcmConfig {
            cir_bps: 1_000_000_000,
            cbs_bytes: 15_000,
            ebs_bytes: 30_000,
            mode: MeterMode::ColorBlind,
        },
        1500,
        Instant::ZERO,
    )
    .unwrap();
    let mut now = 0u64;
    g.bench_function("srtcm", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for &len in &sizes {
                now += 1_000;
                n += sr.meter(Instant::from_nanos(now), black_box(len), Color::Green) as usize;
            }
            n
        });
    });
    let mut tr = TrTcm::new(
        TrTcmConfig {
            pir_bps: 2_000_000_000,
            pbs_bytes: 30_000,
            cir_bps: 1_000_000_000,
            cbs_bytes: 15_000,
            mode: MeterMode::ColorAware,
        },
        1500,
        Instant::ZERO,
    )
    .unwrap();
    g.bench_function("trtcm", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for &len in &sizes {
                now += 1_000;
                n += tr.meter(Instant::from_nanos(now), black_box(len), Color::Green) as usize;
            }
            n
        });
    });
    g.finish();

    let mut g = c.benchmark_group("shaper");
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut s = Shaper::new(
        ShaperConfig {
            rate_bps: 10_000_000_000,
            burst_bytes: 15_500,
            overhead_bytes: 50,
        },
        1500,
        Instant::ZERO,
    )
    .unwrap();
    g.bench_function("try_consume", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for &len in &sizes {
                now += 700;
                n += usize::from(s.try_consume(Instant::from_nanos(now), black_box(len)));
            }
            n
        });
    });
    g.bench_function("earliest_send", |b| {
        b.iter(|| {
            let mut n = 0u64;
            for &len in &sizes {
                now += 700;
                n ^= s
                    .earliest_send(Instant::from_nanos(now), black_box(len))
                    .as_nanos();
            }
            n
        });
    });
    g.finish();
}

criterion_group!(benches, bench_sched, bench_meter);
criterion_main!(benches);
