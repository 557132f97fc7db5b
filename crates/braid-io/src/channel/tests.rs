//! Tests of the inter-NIC channel: order, full lanes, pool exhaustion, the mesh, two real
//! threads with a checksum, and zero allocations after setup.

use super::*;
use std::time::{Duration, Instant};

fn pool(id: u16, count: usize, bytes: usize) -> BufferPool {
    BufferPool::new(
        PoolId(id),
        &PoolConfig {
            buf_count: count,
            buf_bytes: bytes,
        },
    )
    .expect("valid config")
}

fn pkt(p: &mut BufferPool, tag: u64) -> PacketBuf {
    let mut b = p.alloc().expect("pool has room");
    b.fill_from(&tag.to_le_bytes()).expect("fits");
    b
}

fn tag(b: &PacketBuf) -> u64 {
    u64::from_le_bytes(b.bytes().try_into().expect("8 bytes"))
}

#[test]
fn config_errors() {
    let bad = |count, bytes| {
        BufferPool::new(
            PoolId(0),
            &PoolConfig {
                buf_count: count,
                buf_bytes: bytes,
            },
        )
        .err()
    };
    assert_eq!(bad(0, 2048), Some(ChannelError::ZeroBufCount));
    assert!(matches!(bad(1, 0), Some(ChannelError::BadBufBytes { .. })));
    assert!(matches!(
        bad(1, MAX_BUF_BYTES + 1),
        Some(ChannelError::BadBufBytes { .. })
    ));
    assert_eq!(bad(1, MAX_BUF_BYTES), None);
    assert_eq!(lane(0).err(), Some(ChannelError::ZeroLaneCapacity));
    assert_eq!(
        Mesh::build(1, 8).err(),
        Some(ChannelError::TooFewWorkers { workers: 1 })
    );
    assert_eq!(
        Mesh::build(3, 0).err(),
        Some(ChannelError::ZeroLaneCapacity)
    );
}

#[test]
fn packet_buf_length_and_bytes() {
    let mut p = pool(0, 1, 16);
    let mut b = p.alloc().expect("one buffer");
    assert_eq!((b.len(), b.capacity(), b.pool()), (0, 16, PoolId(0)));
    assert_eq!(
        b.fill_from(&[7; 17]),
        Err(LenError {
            len: 17,
            capacity: 16
        })
    );
    assert!(b.is_empty());
    b.storage_mut()[..3].copy_from_slice(&[1, 2, 3]);
    b.set_len(3).expect("fits");
    assert_eq!(b.bytes(), &[1, 2, 3]);
    b.bytes_mut()[0] = 9;
    assert_eq!(b.bytes(), &[9, 2, 3]);
    assert!(b.set_len(17).is_err());
    assert_eq!(b.len(), 3);
    b.meta.nic = NicId(4);
    p.free(b).expect("own buffer");
    // A reused buffer starts empty with default metadata.
    let b = p.alloc().expect("freed buffer is back");
    assert_eq!((b.len(), b.meta), (0, PacketMeta::default()));
}

#[test]
fn single_thread_order_and_full_lane() {
    let mut p = pool(0, 16, 64);
    let (mut tx, mut rx) = lane(4).expect("lane");
    for i in 0..4 {
        tx.try_send(pkt(&mut p, i)).expect("room");
    }
    // Full: the fifth packet comes back intact and is counted.
    let back = tx.try_send(pkt(&mut p, 99)).expect_err("lane is full");
    assert_eq!(tag(&back), 99);
    assert_eq!(
        tx.stats(),
        LaneStats {
            moved_count: 4,
            full_count: 1
        }
    );
    p.free(back).expect("own buffer");
    assert_eq!(rx.pending(), 4);
    for i in 0..4 {
        let b = rx.try_recv().expect("queued");
        assert_eq!(tag(&b), i, "FIFO order");
        p.free(b).expect("own buffer");
    }
    assert!(rx.try_recv().is_none());
    assert_eq!(rx.stats().moved_count, 4);
    assert_eq!(p.available(), 16);
}

#[test]
fn batches_keep_order_and_leftovers() {
    let mut p = pool(0, 32, 64);
    let (mut tx, mut rx) = lane(8).expect("lane");
    let mut batch: Vec<PacketBuf> = (0..10).map(|i| pkt(&mut p, i)).collect();
    assert_eq!(tx.send_batch(&mut batch), 8);
    // The two that did not fit stay in the batch, in order.
    assert_eq!(batch.iter().map(tag).collect::<Vec<_>>(), [8, 9]);
    assert_eq!(tx.stats().full_count, 2);
    let mut out = Vec::with_capacity(5);
    assert_eq!(rx.recv_batch(&mut out, 100), 5, "capped by spare capacity");
    assert_eq!(out.iter().map(tag).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    assert_eq!(tx.send_batch(&mut batch), 2);
    assert!(batch.is_empty());
    let mut out2 = Vec::with_capacity(16);
    assert_eq!(rx.recv_batch(&mut out2, 3), 3, "capped by max");
    assert_eq!(rx.recv_batch(&mut out2, 16), 2);
    assert_eq!(out2.iter().map(tag).collect::<Vec<_>>(), [5, 6, 7, 8, 9]);
    assert_eq!(rx.stats().moved_count, 10);
    assert_eq!(tx.stats().moved_count, 10);
}

#[test]
fn pool_exhaustion_and_recovery() {
    let mut p = pool(3, 4, 32);
    let mut held: Vec<PacketBuf> = (0..4).map(|_| p.alloc().expect("room")).collect();
    assert!(p.alloc().is_none());
    assert!(p.alloc().is_none());
    assert_eq!(p.stats().exhausted_count, 2);
    assert_eq!(p.in_flight(), 4);
    // A local free brings one back.
    p.free(held.pop().expect("held")).expect("own buffer");
    assert!(p.alloc().is_some_and(|b| p.free(b).is_ok()));
    // A free from another worker through a return lane: alloc reclaims by itself.
    let mut ret = p.return_lane();
    let _ = p.alloc().expect("the freed one");
    assert!(p.alloc().is_none());
    ret.free(held.pop().expect("held"))
        .expect("room in return lane");
    assert_eq!(ret.freed_count(), 1);
    assert_eq!(p.available(), 0);
    assert!(p.alloc().is_some(), "reclaimed from the return lane");
    assert_eq!(p.stats().reclaimed_count, 1);
    assert_eq!(p.stats().exhausted_count, 3);
    // Foreign buffers are refused by the pool and by its return lanes.
    let mut other = pool(4, 1, 32);
    let foreign = other.alloc().expect("room");
    let foreign = p.free(foreign).expect_err("foreign buffer");
    assert_eq!(p.stats().foreign_count, 1);
    let foreign = ret.free(foreign).expect_err("foreign buffer");
    other.free(foreign).expect("home");
}

#[test]
fn mesh_delivers_to_the_right_worker() {
    const K: usize = 4;
    let mut p = pool(0, 64, 64);
    let mut ports = Mesh::build(K, 8).expect("mesh");
    assert!(ports.iter().enumerate().all(|(i, m)| m.worker() == i));
    assert!(ports[1].sender(1).is_none() && ports[1].receiver(1).is_none());
    // Every worker sends to every other worker a packet tagged (from << 8 | to).
    for (from, port) in ports.iter_mut().enumerate() {
        for to in 0..K {
            let b = pkt(&mut p, ((from << 8) | to) as u64);
            match port.try_send_to(to, b) {
                Ok(()) => assert_ne!(from, to),
                Err(b) => {
                    assert_eq!(from, to, "only sending to self fails");
                    p.free(b).expect("own");
                }
            }
        }
        let b = pkt(&mut p, 0);
        p.free(port.try_send_to(K, b).expect_err("out of range"))
            .expect("own");
    }
    for (to, port) in ports.iter_mut().enumerate() {
        let mut out = Vec::with_capacity(16);
        assert_eq!(port.recv_batch(&mut out, 16), K - 1);
        let mut froms: Vec<usize> = out
            .iter()
            .map(|b| {
                let t = tag(b) as usize;
                assert_eq!(t & 0xff, to, "delivered to the addressee");
                t >> 8
            })
            .collect();
        froms.sort_unstable();
        let expect: Vec<usize> = (0..K).filter(|&f| f != to).collect();
        assert_eq!(froms, expect, "one from each other worker");
        assert_eq!(port.received_stats().moved_count, (K - 1) as u64);
        assert_eq!(port.sent_stats().moved_count, (K - 1) as u64);
        out.drain(..).for_each(|b| p.free(b).expect("own"));
    }
    assert_eq!(p.available(), 64);
}

#[test]
fn mesh_recv_budget_is_shared_fairly() {
    let mut p = pool(0, 64, 64);
    let mut ports = Mesh::build(3, 16).expect("mesh");
    for from in [1, 2] {
        for i in 0..10 {
            let b = pkt(&mut p, from * 100 + i);
            assert!(ports[from as usize].try_send_to(0, b).is_ok());
        }
    }
    // A budget of 4 per call; the starting peer rotates, so both peers are served.
    let mut seen = [0u32; 3];
    let mut out = Vec::with_capacity(4);
    for _ in 0..4 {
        assert_eq!(ports[0].recv_batch(&mut out, 4), 4);
        for b in out.drain(..) {
            seen[(tag(&b) / 100) as usize] += 1;
            p.free(b).expect("own");
        }
    }
    assert!(seen[1] >= 4 && seen[2] >= 4, "both peers served: {seen:?}");
    assert_eq!(seen[1] + seen[2], 16);
}

/// One producer thread fills buffers and hands them over; one consumer checksums the bytes
/// and returns the buffers home on a return lane. The pool is far smaller than the packet
/// count, so every buffer is recycled thousands of times.
#[test]
fn two_threads_one_million_handles_with_checksum() {
    const N: u64 = 1_000_000;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut p = pool(1, 256, 256);
    let mut ret = p.return_lane();
    let (mut tx, mut rx) = lane(128).expect("lane");

    let fill = |b: &mut PacketBuf, i: u64| {
        // Length 16..=79 bytes, content derived from i.
        let len = 16 + (i % 64) as usize;
        let s = b.storage_mut();
        s[..8].copy_from_slice(&i.to_le_bytes());
        for (k, byte) in s[8..len].iter_mut().enumerate() {
            *byte = (i as u8).wrapping_mul(31).wrapping_add(k as u8);
        }
        b.set_len(len).expect("fits");
    };
    let sum_of = |b: &PacketBuf| -> u64 {
        b.bytes().iter().enumerate().fold(0u64, |a, (k, &x)| {
            a.wrapping_add((k as u64 + 1) * u64::from(x))
        })
    };
    // Expected checksum, computed on one thread with one buffer.
    let mut scratch = pool(9, 1, 256);
    let mut one = scratch.alloc().expect("room");
    let expected = (0..N).fold(0u64, |a, i| {
        fill(&mut one, i);
        a.wrapping_add(sum_of(&one))
    });

    let consumer = std::thread::spawn(move || {
        let (mut got, mut sum, mut in_order) = (0u64, 0u64, true);
        while got < N && Instant::now() < deadline {
            let Some(b) = rx.try_recv() else {
                std::thread::yield_now();
                continue;
            };
            in_order &= u64::from_le_bytes(b.bytes()[..8].try_into().expect("8")) == got;
            sum = sum.wrapping_add(sum_of(&b));
            got += 1;
            ret.free(b).expect("return lane holds every buffer");
        }
        (got, sum, in_order)
    });
    let mut sent = 0u64;
    let mut pending: Option<PacketBuf> = None;
    while sent < N && Instant::now() < deadline {
        let b = match pending.take() {
            Some(b) => b,
            None => {
                let Some(mut b) = p.alloc() else {
                    std::thread::yield_now();
                    continue;
                };
                fill(&mut b, sent);
                b
            }
        };
        match tx.try_send(b) {
            Ok(()) => sent += 1,
            Err(b) => {
                pending = Some(b);
                std::thread::yield_now();
            }
        }
    }
    let (got, sum, in_order) = consumer.join().expect("consumer thread");
    assert_eq!(sent, N, "producer finished before the deadline");
    assert_eq!(got, N, "consumer received everything before the deadline");
    assert!(in_order, "FIFO across threads");
    assert_eq!(sum, expected, "packet bytes intact");
    assert_eq!(tx.stats().moved_count, N);
    // Every buffer comes home.
    p.reclaim();
    assert_eq!(p.available(), 256);
    assert_eq!(p.stats().alloc_count, N);
    assert!(
        p.stats().reclaimed_count >= N - 256,
        "buffers were recycled"
    );
}

#[test]
fn zero_allocations_after_setup() {
    let control = allocation_counter::measure(|| {
        std::hint::black_box(Vec::<u8>::with_capacity(8));
    });
    assert_eq!(control.count_total, 1, "the counter sees allocations");

    // Setup (allocates): pool, return lane, lanes, mesh, batch vectors.
    let mut p = pool(0, 128, 2048);
    let mut ret = p.return_lane();
    let (mut tx, mut rx) = lane(64).expect("lane");
    let mut ports = Mesh::build(3, 32).expect("mesh");
    let mut batch: Vec<PacketBuf> = Vec::with_capacity(80);
    let mut out: Vec<PacketBuf> = Vec::with_capacity(64);
    let mut sink = 0u64;

    let counted = allocation_counter::measure(|| {
        for round in 0..200u64 {
            // Single hand-offs, freed locally.
            for i in 0..32 {
                let b = pkt(&mut p, round * 100 + i);
                tx.try_send(b).expect("room");
            }
            while let Some(b) = rx.try_recv() {
                sink += tag(&b);
                p.free(b).expect("own");
            }
            // Batches, freed through the return lane, reclaimed by alloc.
            for i in 0..80u64 {
                match p.alloc() {
                    Some(mut b) => {
                        b.fill_from(&i.to_le_bytes()).expect("fits");
                        batch.push(b);
                    }
                    None => break,
                }
            }
            tx.send_batch(&mut batch);
            for b in batch.drain(..) {
                p.free(b).expect("own"); // did not fit
            }
            rx.recv_batch(&mut out, 64);
            for b in out.drain(..) {
                sink += b.len() as u64;
                ret.free(b).expect("room");
            }
            p.reclaim();
            // Mesh hand-off and receive.
            let b = p.alloc().expect("room");
            if let Err(b) = ports[1].try_send_to(2, b) {
                p.free(b).expect("own");
            }
            ports[2].recv_batch(&mut out, 8);
            for b in out.drain(..) {
                p.free(b).expect("own");
            }
        }
    });
    std::hint::black_box(sink);
    assert_eq!(counted.count_total, 0, "no allocation after setup");
    assert!(p.stats().alloc_count > 200 * 100, "the loop did work");
    assert!(p.stats().reclaimed_count > 0);
    assert_eq!(p.available(), 128);
}
