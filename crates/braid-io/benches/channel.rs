//! Benchmarks of the inter-NIC channel: one hand-off on one thread, a batch of 64, a received
//! packet copied into a pool buffer and handed off (`per-nic` receive), the round trip
//! between two threads, and one-way hand-offs per second between two threads.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use braid_io::channel::{BufferPool, PacketBuf, PoolConfig, PoolId, lane};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn pool(count: usize) -> BufferPool {
    BufferPool::new(
        PoolId(0),
        &PoolConfig {
            buf_count: count,
            buf_bytes: 2048,
        },
    )
    .expect("valid config")
}

fn single_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("channel");
    let mut p = pool(128);
    let (mut tx, mut rx) = lane(256).expect("lane");

    g.throughput(Throughput::Elements(1));
    let mut cur = Some(p.alloc().expect("room"));
    g.bench_function("handoff_1_one_thread", |b| {
        b.iter(|| {
            let pkt = cur.take().expect("held");
            tx.try_send(black_box(pkt)).expect("room");
            cur = Some(black_box(rx.try_recv().expect("queued")));
        });
    });

    g.throughput(Throughput::Elements(64));
    let mut batch: Vec<PacketBuf> = (0..64).map(|_| p.alloc().expect("room")).collect();
    let mut out: Vec<PacketBuf> = Vec::with_capacity(64);
    g.bench_function("handoff_batch64_one_thread", |b| {
        b.iter(|| {
            assert_eq!(tx.send_batch(&mut batch), 64);
            assert_eq!(rx.recv_batch(&mut out, 64), 64);
            std::mem::swap(&mut batch, &mut out);
        });
    });

    g.throughput(Throughput::Elements(1));
    g.bench_function("alloc_free_one_thread", |b| {
        b.iter(|| {
            let pkt = p.alloc().expect("room");
            p.free(black_box(pkt)).expect("own");
        });
    });

    // What `per-nic` receive adds per handed packet (dataplane::steer): a pool buffer, the
    // copy of a 1 400-byte braid packet out of the receive batch, the hand-off, and the
    // buffer freed by the receiver (here on one thread, so the return lane is not used).
    let received = vec![0xa5u8; 1400];
    g.bench_function("rx_handoff_copy_1400B_one_thread", |b| {
        b.iter(|| {
            let mut pkt = p.alloc().expect("room");
            pkt.fill_from(black_box(&received)).expect("fits");
            tx.try_send(pkt).expect("room");
            let got = rx.try_recv().expect("queued");
            black_box(got.bytes()[0]);
            p.free(got).expect("own");
        });
    });
    g.finish();
}

/// Spins on `f` until it returns `Some`, yielding now and then (the machine is shared).
fn spin<T>(mut f: impl FnMut() -> Option<T>, stop: &AtomicBool) -> Option<T> {
    let mut n = 0u32;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        n += 1;
        if n.is_multiple_of(1024) {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            std::thread::yield_now();
        }
        std::hint::spin_loop();
    }
}

fn two_threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("channel");
    g.throughput(Throughput::Elements(1));

    // Round trip: main sends one handle on A, the echo thread sends it back on B.
    g.bench_function("round_trip_two_threads", |b| {
        b.iter_custom(|iters| {
            let mut p = pool(4);
            let (mut a_tx, mut a_rx) = lane(16).expect("lane");
            let (mut b_tx, mut b_rx) = lane(16).expect("lane");
            let stop = Arc::new(AtomicBool::new(false));
            let stop2 = Arc::clone(&stop);
            let echo = std::thread::spawn(move || {
                while let Some(pkt) = spin(|| a_rx.try_recv(), &stop2) {
                    b_tx.try_send(pkt).expect("room");
                }
            });
            let mut pkt = p.alloc().expect("room");
            let start = Instant::now();
            for _ in 0..iters {
                a_tx.try_send(pkt).expect("room");
                pkt = spin(|| b_rx.try_recv(), &stop).expect("echo");
            }
            let elapsed = start.elapsed();
            stop.store(true, Ordering::Relaxed);
            echo.join().expect("echo thread");
            elapsed
        });
    });

    // One way: main sends handles on A as fast as it can; the other thread receives them in
    // batches and sends them back on B in batches so the main thread can reuse them.
    g.bench_function("one_way_two_threads", |b| {
        b.iter_custom(|iters| {
            const INFLIGHT: usize = 512;
            let mut p = pool(INFLIGHT);
            let (mut a_tx, mut a_rx) = lane(256).expect("lane");
            let (mut b_tx, mut b_rx) = lane(INFLIGHT).expect("lane");
            let stop = Arc::new(AtomicBool::new(false));
            let stop2 = Arc::clone(&stop);
            let sink = std::thread::spawn(move || {
                let mut got = Vec::with_capacity(64);
                let mut n = 0u64;
                while spin(|| (a_rx.recv_batch(&mut got, 64) > 0).then_some(()), &stop2).is_some() {
                    n += got.len() as u64;
                    b_tx.send_batch(&mut got);
                    debug_assert!(got.is_empty());
                }
                n
            });
            let mut free: Vec<PacketBuf> =
                (0..INFLIGHT).map(|_| p.alloc().expect("room")).collect();
            let start = Instant::now();
            let mut sent = 0u64;
            while sent < iters {
                if free.is_empty() {
                    spin(
                        || (b_rx.recv_batch(&mut free, INFLIGHT) > 0).then_some(()),
                        &stop,
                    );
                }
                let pkt = free.pop().expect("non-empty");
                match a_tx.try_send(pkt) {
                    Ok(()) => sent += 1,
                    Err(pkt) => {
                        free.push(pkt);
                        b_rx.recv_batch(&mut free, INFLIGHT);
                        std::hint::spin_loop();
                    }
                }
            }
            // Wait until the receiver has taken everything: that is the one-way time.
            let deadline = Instant::now() + Duration::from_secs(10);
            while a_tx.slots() < 256 && Instant::now() < deadline {
                std::hint::spin_loop();
            }
            let elapsed = start.elapsed();
            stop.store(true, Ordering::Relaxed);
            let n = sink.join().expect("sink thread");
            assert!(n >= iters, "every handle received");
            elapsed
        });
    });
    g.finish();
}

criterion_group!(benches, single_thread, two_threads);
criterion_main!(benches);
