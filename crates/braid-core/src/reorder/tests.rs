//! Unit and property tests of the reorder buffer.

use super::*;
use alloc::vec::Vec;
use core::cell::Cell;
use proptest::prelude::*;

const MS: Duration = Duration::from_millis(1);

fn cfg(capacity: usize) -> ReorderConfig {
    ReorderConfig {
        capacity,
        ..ReorderConfig::default()
    }
}

fn t_us(us: u64) -> Instant {
    Instant::from_micros(us)
}

/// Release everything releasable at `now`; returns `(seq, gap_before)` pairs.
fn drain_ready<H>(b: &mut ReorderBuffer<H>, now: Instant, hold: Duration) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    while let Some(r) = b.poll_release(now, hold) {
        out.push((r.seq, r.gap_before));
    }
    out
}

fn accept<H>(b: &mut ReorderBuffer<H>, now: Instant, seq: u64, item: H) {
    match b.insert(now, seq, item) {
        Admit::Accepted => {}
        Admit::Rejected(_, r) => panic!("seq {seq} rejected: {r}"),
    }
}

fn reject_reason<H>(b: &mut ReorderBuffer<H>, now: Instant, seq: u64, item: H) -> DropReason {
    match b.insert(now, seq, item) {
        Admit::Accepted => panic!("seq {seq} accepted"),
        Admit::Rejected(_, r) => r,
    }
}

#[test]
fn config_rounding_and_defaults() {
    let d = ReorderConfig::default();
    assert_eq!(d.capacity, 1024);
    assert_eq!(d.max_hold, Duration::from_millis(25));
    assert_eq!(cfg(1000).effective_capacity(), 1024);
    assert_eq!(cfg(0).effective_capacity(), MIN_CAPACITY);
    assert_eq!(cfg(usize::MAX).effective_capacity(), MAX_CAPACITY);
    assert_eq!(ReorderBuffer::<u32>::new(&cfg(100)).capacity(), 128);
    // The memory figure in the ReorderConfig::capacity doc.
    assert_eq!(size_of::<Option<Slot<u64>>>(), 8 + 16);
    let b = ReorderBuffer::<u64>::new(&cfg(1024));
    let words = b.occupied.len() + b.given_up.len();
    assert_eq!((b.slots.len(), b.fifo.len(), words), (2048, 4096, 48));
}

#[test]
fn in_order_releases_immediately() {
    let mut b = ReorderBuffer::new(&cfg(16));
    for seq in 0..100u64 {
        let now = t_us(seq);
        accept(&mut b, now, seq, seq);
        let r = b.poll_release(now, 10 * MS).expect("head is releasable");
        assert_eq!(
            (r.seq, r.item, r.gap_before, r.held_for),
            (seq, seq, 0, Duration::ZERO)
        );
        assert!(b.poll_release(now, 10 * MS).is_none());
    }
    let s = b.stats();
    assert_eq!(
        (s.delivered_count, s.in_order_count, s.reordered_count),
        (100, 100, 0)
    );
    assert_eq!((s.gap_count, b.held(), b.next_expected()), (0, 0, 100));
    assert_eq!(s.hold_hist[0], 100);
}

#[test]
fn reversed_window_waits_for_the_head() {
    let mut b = ReorderBuffer::new(&cfg(16));
    for seq in (1..10u64).rev() {
        accept(&mut b, t_us(10 - seq), seq, seq);
        assert!(b.poll_release(t_us(10 - seq), 10 * MS).is_none());
    }
    assert_eq!(b.held(), 9);
    accept(&mut b, t_us(20), 0, 0);
    let got = drain_ready(&mut b, t_us(20), 10 * MS);
    assert_eq!(got, (0..10).map(|s| (s, 0)).collect::<Vec<_>>());
    let s = b.stats();
    assert_eq!(
        (s.in_order_count, s.reordered_count, s.gap_count),
        (1, 9, 0)
    );
    // seq 9 arrived at t=1 µs and left at t=20 µs.
    assert_eq!(s.hold_max_ns, 19_000);
}

#[test]
fn gap_given_up_after_hold() {
    let hold = 5 * MS;
    let mut b = ReorderBuffer::new(&cfg(16));
    accept(&mut b, Instant::ZERO, 0, 0);
    accept(&mut b, Instant::ZERO, 2, 2);
    accept(&mut b, Instant::from_millis(1), 3, 3);
    assert_eq!(drain_ready(&mut b, Instant::from_millis(1), hold), [(0, 0)]);
    assert_eq!(b.poll_timeout(hold), Some(Instant::from_millis(5)));
    let just_before = Instant::from_nanos(5_000_000 - 1);
    assert!(b.poll_release(just_before, hold).is_none());
    let r = b
        .poll_release(Instant::from_millis(5), hold)
        .expect("gap expired");
    assert_eq!((r.seq, r.gap_before, r.held_for), (2, 1, 5 * MS));
    let r = b
        .poll_release(Instant::from_millis(5), hold)
        .expect("3 follows");
    assert_eq!((r.seq, r.gap_before, r.held_for), (3, 0, 4 * MS));
    let s = b.stats();
    assert_eq!(
        (s.gap_count, s.gap_seq_count, s.timeout_release_count),
        (1, 1, 1)
    );
    assert_eq!((s.overflow_release_count, s.reordered_count), (0, 2));
    // The given-up sequence is late; delivered ones are duplicates.
    assert_eq!(b.check(1), Some(DropReason::LateDatagram));
    assert_eq!(b.check(2), Some(DropReason::DuplicateDatagram));
    assert_eq!(
        reject_reason(&mut b, Instant::from_millis(6), 1, 1),
        DropReason::LateDatagram
    );
    assert_eq!(b.stats().late_count, 1);
    assert_eq!(b.poll_timeout(hold), None);
}

#[test]
fn hold_is_measured_from_the_earliest_arrival() {
    // 5 arrives first, 3 later: once 5 has waited `hold`, both gaps (0..3 and 4) go at once,
    // so no datagram waits longer than `hold`.
    let hold = 5 * MS;
    let mut b = ReorderBuffer::new(&cfg(16));
    accept(&mut b, Instant::ZERO, 5, 5);
    accept(&mut b, Instant::from_millis(4), 3, 3);
    assert_eq!(b.poll_timeout(hold), Some(Instant::from_millis(5)));
    assert!(drain_ready(&mut b, Instant::from_millis(4), hold).is_empty());
    let got = drain_ready(&mut b, Instant::from_millis(5), hold);
    assert_eq!(got, [(3, 3), (5, 1)]);
    let s = b.stats();
    assert_eq!(
        (s.gap_count, s.gap_seq_count, s.timeout_release_count),
        (2, 4, 2)
    );
    assert_eq!(s.hold_max_ns, 5_000_000);
}

#[test]
fn hold_zero_is_pure_dedup() {
    let mut b = ReorderBuffer::new(&cfg(16));
    accept(&mut b, Instant::ZERO, 2, 2);
    assert_eq!(drain_ready(&mut b, Instant::ZERO, Duration::ZERO), [(2, 2)]);
    accept(&mut b, Instant::ZERO, 3, 3);
    assert_eq!(
        reject_reason(&mut b, Instant::ZERO, 3, 3),
        DropReason::DuplicateDatagram
    );
    assert_eq!(drain_ready(&mut b, Instant::ZERO, Duration::ZERO), [(3, 0)]);
    assert_eq!(
        reject_reason(&mut b, Instant::ZERO, 0, 0),
        DropReason::LateDatagram
    );
}

#[test]
fn duplicates_before_and_after_delivery() {
    let hold = 10 * MS;
    let mut b = ReorderBuffer::new(&cfg(16));
    accept(&mut b, Instant::ZERO, 0, 0);
    accept(&mut b, Instant::ZERO, 2, 2);
    // Held duplicate.
    assert_eq!(b.check(2), Some(DropReason::DuplicateDatagram));
    assert_eq!(
        reject_reason(&mut b, Instant::ZERO, 2, 22),
        DropReason::DuplicateDatagram
    );
    assert_eq!(drain_ready(&mut b, Instant::ZERO, hold), [(0, 0)]);
    // Delivered duplicate.
    assert_eq!(
        reject_reason(&mut b, Instant::ZERO, 0, 10),
        DropReason::DuplicateDatagram
    );
    assert_eq!(b.check(1), None);
    accept(&mut b, Instant::ZERO, 1, 1);
    assert_eq!(drain_ready(&mut b, Instant::ZERO, hold), [(1, 0), (2, 0)]);
    for seq in 0..3 {
        assert_eq!(b.check(seq), Some(DropReason::DuplicateDatagram));
    }
    assert_eq!(b.check(3), None);
    let s = b.stats();
    assert_eq!((s.duplicate_count, s.gap_count, s.late_count), (2, 0, 0));
    b.count_drop(DropReason::DuplicateDatagram);
    b.count_drop(DropReason::TooBig); // not a reorder outcome: ignored
    assert_eq!(b.stats().duplicate_count, 3);
}

#[test]
fn history_is_bounded_older_is_late() {
    let mut b = ReorderBuffer::new(&cfg(8));
    for seq in 0..20 {
        accept(&mut b, Instant::ZERO, seq, seq);
        let _ = drain_ready(&mut b, Instant::ZERO, MS);
    }
    // 12..20 are within the last 8: delivered -> duplicate. 11 and older: too old -> late.
    assert_eq!(b.check(12), Some(DropReason::DuplicateDatagram));
    assert_eq!(b.check(19), Some(DropReason::DuplicateDatagram));
    assert_eq!(b.check(11), Some(DropReason::LateDatagram));
    assert_eq!(b.check(0), Some(DropReason::LateDatagram));
}

#[test]
fn overflow_gives_up_leading_sequences_in_order() {
    let hold = Duration::from_secs(1);
    let mut b = ReorderBuffer::new(&cfg(8));
    for seq in [1u64, 3, 5, 7] {
        accept(&mut b, Instant::ZERO, seq, seq);
    }
    assert!(drain_ready(&mut b, Instant::ZERO, hold).is_empty());
    // 12 >= 0 + 8: the window must start at 5; 0, 2, 4 are given up, 1, 3, 5 released.
    accept(&mut b, t_us(1), 12, 12);
    assert_eq!(b.poll_timeout(hold), Some(Instant::ZERO), "releasable now");
    let got = drain_ready(&mut b, t_us(1), hold);
    assert_eq!(got, [(1, 1), (3, 1), (5, 1)]);
    assert_eq!((b.next_expected(), b.held()), (6, 2));
    let s = b.stats();
    assert_eq!((s.overflow_release_count, s.timeout_release_count), (3, 0));
    assert_eq!((s.gap_count, s.gap_seq_count), (3, 3));
    assert_eq!(b.check(0), Some(DropReason::LateDatagram));
    assert_eq!(b.check(4), Some(DropReason::LateDatagram));
    assert_eq!(b.check(3), Some(DropReason::DuplicateDatagram));
    // 6 is still awaited (within hold), and not lost.
    accept(&mut b, t_us(2), 6, 6);
    assert_eq!(drain_ready(&mut b, t_us(2), hold), [(6, 0), (7, 0)]);
}

#[test]
fn overflow_past_the_lowest_held_waits_for_the_rest() {
    // Held {7}; 12 arrives in a window of 8: only 0..5 must go. 5 and 6 are still awaited
    // until the hold expires; the gap reported on 7 covers both runs.
    let hold = 5 * MS;
    let mut b = ReorderBuffer::new(&cfg(8));
    accept(&mut b, Instant::ZERO, 7, 7);
    accept(&mut b, Instant::ZERO, 12, 12);
    assert!(drain_ready(&mut b, Instant::ZERO, hold).is_empty());
    assert_eq!(b.next_expected(), 5);
    assert_eq!(b.check(4), Some(DropReason::LateDatagram));
    assert_eq!(b.check(5), None);
    assert_eq!(b.poll_timeout(hold), Some(Instant::from_millis(5)));
    let got = drain_ready(&mut b, Instant::from_millis(5), hold);
    assert_eq!(got, [(7, 7), (12, 4)]);
    let s = b.stats();
    assert_eq!((s.gap_count, s.gap_seq_count), (2, 11));
    assert_eq!((s.overflow_release_count, s.timeout_release_count), (1, 1));
}

#[test]
fn far_ahead_is_rejected_until_confirmed() {
    let hold = MS;
    let mut b = ReorderBuffer::new(&cfg(8));
    accept(&mut b, Instant::ZERO, 0, 0);
    accept(&mut b, Instant::ZERO, 2, 2);
    assert_eq!(drain_ready(&mut b, Instant::ZERO, hold), [(0, 0)]);
    // 16 = 0 + 2*8 ahead: far. A stray one is dropped, the flow goes on.
    assert_eq!(b.check(1000), None);
    assert_eq!(
        reject_reason(&mut b, Instant::ZERO, 1000, 1000),
        DropReason::ReorderOutOfWindow
    );
    // A confirming one while something is held is still rejected.
    assert_eq!(
        reject_reason(&mut b, Instant::ZERO, 1001, 1001),
        DropReason::ReorderOutOfWindow
    );
    assert_eq!(drain_ready(&mut b, Instant::from_millis(1), hold), [(2, 1)]);
    // 15 is in the overflow zone, not far: accepted.
    assert_eq!(b.check(15), None);
    // Nothing held now: 1003 confirms the candidate 1001 -> resync at 1003.
    accept(&mut b, Instant::from_millis(2), 1003, 1003);
    assert_eq!(
        drain_ready(&mut b, Instant::from_millis(2), hold),
        [(1003, 1000)]
    );
    let s = b.stats();
    assert_eq!((s.out_of_window_count, s.resync_count), (2, 1));
    assert_eq!((s.gap_count, s.gap_seq_count), (2, 1001));
    assert_eq!(b.check(1001), Some(DropReason::LateDatagram));
    assert_eq!(b.check(3), Some(DropReason::LateDatagram));
    accept(&mut b, Instant::from_millis(2), 1004, 1004);
    assert_eq!(
        drain_ready(&mut b, Instant::from_millis(2), hold),
        [(1004, 0)]
    );
}

#[test]
fn receiver_joining_mid_flow_adopts_the_first_sequence() {
    let mut b = ReorderBuffer::new(&cfg(8));
    accept(&mut b, Instant::ZERO, 5000, 0);
    assert_eq!(drain_ready(&mut b, Instant::ZERO, MS), [(5000, 0)]);
    assert_eq!(b.next_expected(), 5001);
    assert_eq!(b.check(4999), Some(DropReason::LateDatagram));
    let s = b.stats();
    assert_eq!(
        (s.gap_count, s.resync_count, s.out_of_window_count),
        (0, 0, 0)
    );
    // A flow whose start is merely reordered keeps base 0.
    let mut b = ReorderBuffer::new(&cfg(8));
    accept(&mut b, Instant::ZERO, 3, 3);
    accept(&mut b, Instant::ZERO, 0, 0);
    assert_eq!(drain_ready(&mut b, Instant::ZERO, MS), [(0, 0)]);
    assert_eq!(b.next_expected(), 1);
}

#[test]
fn poll_timeout_tracks_state() {
    let hold = 2 * MS;
    let mut b = ReorderBuffer::new(&cfg(16));
    assert_eq!(b.poll_timeout(hold), None);
    accept(&mut b, Instant::from_millis(1), 1, 1);
    assert_eq!(b.poll_timeout(hold), Some(Instant::from_millis(3)));
    accept(&mut b, Instant::from_millis(2), 4, 4);
    assert_eq!(
        b.poll_timeout(hold),
        Some(Instant::from_millis(3)),
        "earliest arrival"
    );
    accept(&mut b, Instant::from_millis(2), 0, 0);
    assert_eq!(
        b.poll_timeout(hold),
        Some(Instant::from_millis(1)),
        "head present: due"
    );
    assert_eq!(
        drain_ready(&mut b, Instant::from_millis(2), hold),
        [(0, 0), (1, 0)]
    );
    // Now only 4 is held, arrived at 2 ms.
    assert_eq!(b.poll_timeout(hold), Some(Instant::from_millis(4)));
    assert!(b.poll_release(Instant::from_millis(3), hold).is_none());
    assert_eq!(drain_ready(&mut b, Instant::from_millis(4), hold), [(4, 2)]);
    assert_eq!(b.poll_timeout(hold), None);
}

#[test]
fn hold_from_spread_clamps() {
    let c = ReorderConfig::default();
    let h = hold_from_spread(MS, Duration::from_micros(500), &c);
    assert_eq!(h, Duration::from_micros(2_100));
    assert_eq!(
        hold_from_spread(Duration::ZERO, Duration::ZERO, &c),
        HOLD_MARGIN
    );
    assert_eq!(
        hold_from_spread(Duration::from_secs(1), Duration::ZERO, &c),
        c.max_hold
    );
    assert_eq!(
        hold_from_spread(Duration::MAX, Duration::MAX, &c),
        c.max_hold
    );
    let floor = ReorderConfig { min_hold: MS, ..c };
    assert_eq!(hold_from_spread(Duration::ZERO, Duration::ZERO, &floor), MS);
    let inverted = ReorderConfig {
        min_hold: 10 * MS,
        max_hold: 2 * MS,
        ..c
    };
    assert_eq!(
        hold_from_spread(Duration::ZERO, Duration::ZERO, &inverted),
        2 * MS
    );
}

#[test]
fn ring_wraps_around_many_times() {
    // Window 4 (ring of 8 slots, 4 history bits): 10_000 datagrams with adjacent pairs swapped
    // and every 7th lost, a long hold, so only overflow gives the lost ones up. Every present
    // one is delivered in order, each lost one is exactly one gap, no swapped one is given up.
    let hold = Duration::from_secs(1);
    let mut b = ReorderBuffer::new(&cfg(4));
    let mut delivered = Vec::new();
    let mut gaps = 0;
    let n = 10_000u64;
    let lost = |s: u64| s % 7 == 3;
    for pair in (0..n).step_by(2) {
        for seq in [pair + 1, pair] {
            if lost(seq) {
                continue;
            }
            accept(&mut b, Instant::ZERO, seq, seq);
            assert!(b.held() <= 4);
            while let Some(r) = b.poll_release(Instant::ZERO, hold) {
                gaps += r.gap_before;
                delivered.push(r.seq);
            }
        }
    }
    let last = *delivered.last().expect("delivered");
    let expect: Vec<u64> = (0..=last).filter(|&s| !lost(s)).collect();
    assert_eq!(delivered, expect);
    let lost_below = (0..last).filter(|&s| lost(s)).count() as u64;
    assert_eq!(gaps, lost_below);
    let s = b.stats().clone();
    assert_eq!(
        (s.gap_count, s.gap_seq_count, s.overflow_release_count),
        (lost_below, lost_below, lost_below)
    );
    assert_eq!(
        s.late_count + s.duplicate_count + s.timeout_release_count,
        0
    );
    // The tail (after the last lost seq) is still held, waiting; time lets it go.
    let tail = drain_ready(&mut b, Instant::from_millis(1_000), hold);
    assert_eq!(
        tail.len() as u64 + s.delivered_count,
        (0..n).filter(|&s| !lost(s)).count() as u64
    );
}

#[test]
fn no_allocation_after_new() {
    // Counting global allocator (thread-local counts): every path after new() - in order,
    // reordered, duplicate, late, gap by time, overflow, far ahead, resync, drain - allocates
    // nothing.
    let control = allocation_counter::measure(|| {
        std::hint::black_box(Vec::<u8>::with_capacity(8));
    });
    assert_eq!(control.count_total, 1, "the counter sees allocations");
    let mut b: ReorderBuffer<u64> = ReorderBuffer::new(&cfg(64));
    let hold = MS;
    let mut sink = 0u64;
    let counted = allocation_counter::measure(|| {
        let mut t = 0u64;
        let mut offer = |b: &mut ReorderBuffer<u64>, seq: u64, t: u64| {
            if let Admit::Rejected(item, _) = b.insert(t_us(t), seq, seq) {
                sink += item;
            }
            while let Some(r) = b.poll_release(t_us(t), hold) {
                sink += r.item + r.gap_before;
            }
            let _ = b.poll_timeout(hold);
        };
        for base in (0..20_000u64).step_by(8) {
            t += 10;
            for off in [1, 0, 3, 2, 2, 5, 7, 6] {
                offer(&mut b, base + off, t); // 4 lost, 2 twice
            }
            offer(&mut b, base, t); // delivered duplicate
        }
        t += 5_000;
        offer(&mut b, 20_000, t); // every gap times out, then 20_000 in order
        offer(&mut b, 20_100, t); // overflow of the window of 64: 20_001..20_037 given up
        offer(&mut b, 20_004, t); // late
        offer(&mut b, 90_000, t); // far: candidate
        offer(&mut b, 90_001, t); // confirms, but 20_100 is held: rejected
        t += 5_000;
        offer(&mut b, 20_101, t); // 20_100 times out and goes, then 20_101
        offer(&mut b, 90_003, t); // nothing held: resync
        offer(&mut b, 90_005, t); // waits for 90_004; drained
        sink += b.drain().sum::<u64>();
    });
    assert_eq!(counted.count_total, 0, "allocations after new()");
    let s = b.stats();
    assert!(
        s.gap_count > 2_000 && s.duplicate_count > 4_000 && s.late_count >= 1,
        "{s:?}"
    );
    assert_eq!(
        (s.resync_count, s.out_of_window_count, s.drained_count),
        (1, 2, 1)
    );
    assert!(s.overflow_release_count >= 1 && sink > 0);
}

thread_local! {
    static DROPPED: Cell<u64> = const { Cell::new(0) };
}

/// A handle that is not `Clone` and counts its drops.
#[derive(Debug, PartialEq, Eq)]
struct Tok(u64);

impl Drop for Tok {
    fn drop(&mut self) {
        DROPPED.with(|d| d.set(d.get() + 1));
    }
}

#[test]
fn every_handle_comes_back_exactly_once() {
    DROPPED.with(|d| d.set(0));
    let hold = Duration::from_secs(1);
    let mut b = ReorderBuffer::new(&cfg(8));
    let mut back: Vec<Tok> = Vec::new();
    let mut id = 0;
    let arrivals: [u64; 14] = [0, 2, 2, 1, 0, 9, 30, 40, 41, 5, 7, 7, 6, 3];
    for (i, &seq) in arrivals.iter().enumerate() {
        let now = Instant::from_millis(i as u64 / 4);
        match b.insert(now, seq, Tok(id)) {
            Admit::Accepted => {}
            Admit::Rejected(t, _) => back.push(t),
        }
        id += 1;
        while let Some(r) = b.poll_release(now, hold) {
            back.push(r.item);
        }
    }
    assert_eq!(b.held(), 4, "5, 6, 7 and 9 wait for 4");
    back.extend(b.drain());
    assert_eq!(b.held(), 0);
    assert_eq!(DROPPED.with(Cell::get), 0, "the buffer dropped a handle");
    let mut ids: Vec<u64> = back.iter().map(|t| t.0).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..id).collect::<Vec<_>>());
    let s = b.stats().clone();
    assert_eq!(
        s.delivered_count
            + s.drained_count
            + s.duplicate_count
            + s.late_count
            + s.out_of_window_count,
        id
    );
    drop(back);
    assert_eq!(DROPPED.with(Cell::get), id);
}

#[test]
fn market_data_a_b_each_sequence_once() {
    // Feed A on a 5 µs link, feed B on a 300 µs link, 10 µs between datagrams; each copy is
    // lost 1 time in 10, never both. Hold from the spread: every seq is delivered once, from
    // whichever copy came first, and the other copy is a counted duplicate.
    let config = ReorderConfig::default();
    let hold = hold_from_spread(
        Duration::from_micros(295),
        Duration::from_micros(10),
        &config,
    );
    let n = 5_000u64;
    let mut events = Vec::new();
    let mut both = 0;
    for seq in 0..n {
        let lose_a = seq % 10 == 3;
        let lose_b = seq % 10 == 7;
        if !lose_a {
            events.push((seq * 10 + 5, seq, 'A'));
        }
        if !lose_b {
            events.push((seq * 10 + 300, seq, 'B'));
        }
        both += u64::from(!lose_a && !lose_b);
    }
    events.sort_unstable();
    let mut b = ReorderBuffer::new(&config);
    let mut next = 0u64;
    let mut max_hold = Duration::ZERO;
    for (t, seq, _) in events {
        let now = t_us(t);
        let _ = b.insert(now, seq, seq);
        while let Some(r) = b.poll_release(now, hold) {
            assert_eq!((r.seq, r.gap_before), (next, 0));
            next += 1;
            max_hold = max_hold.max(r.held_for);
        }
    }
    assert_eq!(next, n);
    let s = b.stats();
    assert_eq!((s.delivered_count, s.gap_count, s.late_count), (n, 0, 0));
    assert_eq!(s.duplicate_count, both);
    // A datagram behind a lost A copy waits for B: ~spread, never more than the hold.
    assert!(
        max_hold >= Duration::from_micros(280) && max_hold <= hold,
        "{max_hold:?}"
    );
}

/// Release everything due up to `until`, as an engine's timer would: at each deadline from
/// `poll_timeout`, drain `poll_release`. Panics if a deadline passes without progress.
fn run_timers(
    b: &mut ReorderBuffer<Tok>,
    last: &mut Instant,
    until: Instant,
    hold: Duration,
    out: &mut Vec<Release<Tok>>,
) {
    while let Some(d) = b.poll_timeout(hold) {
        if d > until {
            break;
        }
        let at = d.max(*last);
        *last = at;
        let before = (b.held(), b.next_expected());
        while let Some(r) = b.poll_release(at, hold) {
            out.push(r);
        }
        assert_ne!(
            (b.held(), b.next_expected()),
            before,
            "deadline {d:?} passed, no progress"
        );
    }
}

/// What a run returns: the buffer, the releases, the rejections and the drained handles.
type Run = (
    ReorderBuffer<Tok>,
    Vec<Release<Tok>>,
    Vec<(Tok, DropReason)>,
    Vec<Tok>,
);

/// Feed `(time µs, seq)` arrivals (sorted by time) with a timer; check `held() <= capacity`
/// throughout; at the end let time pass and drain.
fn run_arrivals(capacity: usize, hold: Duration, arrivals: &[(u64, u64)]) -> Run {
    let mut b = ReorderBuffer::new(&cfg(capacity));
    let mut released = Vec::new();
    let mut rejected = Vec::new();
    let cap = b.capacity();
    let mut last = Instant::ZERO;
    let mut held = std::collections::BTreeSet::new();
    let mut delivered = std::collections::BTreeSet::new();
    let mut seen = 0;
    for (i, &(t, seq)) in arrivals.iter().enumerate() {
        let now = t_us(t);
        run_timers(&mut b, &mut last, now, hold, &mut released);
        last = now;
        // Reference model of the verdict, from what was released so far.
        for r in &released[seen..] {
            held.remove(&r.seq);
            assert!(delivered.insert(r.seq), "seq {} delivered twice", r.seq);
        }
        seen = released.len();
        let ne = b.next_expected();
        let verdict = b.insert(now, seq, Tok(i as u64));
        let expect = if seq < ne {
            let dup = delivered.contains(&seq) && ne - seq <= cap as u64;
            Some(if dup {
                DropReason::DuplicateDatagram
            } else {
                DropReason::LateDatagram
            })
        } else if held.contains(&seq) {
            Some(DropReason::DuplicateDatagram)
        } else if seq - ne >= 2 * cap as u64 && !matches!(verdict, Admit::Accepted) {
            Some(DropReason::ReorderOutOfWindow)
        } else {
            None
        };
        match verdict {
            Admit::Accepted => {
                assert_eq!(expect, None, "seq {seq} accepted");
                held.insert(seq);
            }
            Admit::Rejected(tok, r) => {
                assert_eq!(expect, Some(r), "seq {seq} rejected as {r}");
                rejected.push((tok, r));
            }
        }
        assert!(b.held() <= cap, "held {} > capacity {cap}", b.held());
        while let Some(r) = b.poll_release(now, hold) {
            released.push(r);
        }
        assert!(b.held() <= cap);
    }
    run_timers(&mut b, &mut last, Instant::MAX, hold, &mut released);
    assert_eq!(b.held(), 0, "nothing outlives the hold");
    assert_eq!(b.poll_timeout(hold), None);
    let drained: Vec<Tok> = b.drain().collect();
    (b, released, rejected, drained)
}

/// Arrivals of seqs `0..n`, each sent at `seq * gap_us`, with 0..=2 copies (loss and
/// duplication) each delayed by up to `spread_us`, sorted by arrival time. A few stray seqs
/// far ahead are mixed in.
fn arrivals_strategy() -> impl Strategy<Value = (usize, u64, Vec<(u64, u64)>)> {
    (
        prop::sample::select(vec![2usize, 4, 8, 16, 64]),
        0u64..3_000,
        prop::collection::vec((0u8..=3, 0u64..2_000, 0u64..2_000), 1..300),
        prop::collection::vec((0usize..300, 1u64..1_000_000), 0..3),
    )
        .prop_map(|(cap, hold_us, per_seq, strays)| {
            let mut arr = Vec::new();
            for (seq, &(copies, d1, d2)) in per_seq.iter().enumerate() {
                let seq = seq as u64;
                // 0 copies = lost; 3 = one copy (weights loss 1/4, dup 1/4).
                let copies = match copies {
                    0 => 0,
                    2 => 2,
                    _ => 1,
                };
                for d in [d1, d2].into_iter().take(copies) {
                    arr.push((seq * 20 + d, seq));
                }
            }
            for (at, ahead) in strays {
                arr.push((at as u64 * 20, at as u64 + ahead));
            }
            arr.sort_by_key(|a| a.0);
            (cap, hold_us, arr)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn prop_released_once_in_order_and_every_handle_returned(
        (cap, hold_us, arrivals) in arrivals_strategy()
    ) {
        let hold = Duration::from_micros(hold_us);
        let (b, released, rejected, drained) = run_arrivals(cap, hold, &arrivals);
        // (a) + (b): strictly increasing, hence each at most once.
        for w in released.windows(2) {
            prop_assert!(w[0].seq < w[1].seq, "{} then {}", w[0].seq, w[1].seq);
        }
        // Gap reports are exact: what is skipped between releases is what was reported.
        let mut expect_next = None;
        let mut gap_sum = 0;
        for r in &released {
            if let Some(n) = expect_next {
                prop_assert_eq!(r.seq - n, r.gap_before);
            }
            // No datagram waits longer than the hold (timers fire at poll_timeout).
            prop_assert!(r.held_for <= hold, "seq {} held {:?}", r.seq, r.held_for);
            gap_sum += r.gap_before;
            expect_next = Some(r.seq + 1);
        }
        let s = b.stats();
        prop_assert_eq!(s.gap_seq_count, gap_sum + b.pending_gap);
        prop_assert_eq!(s.delivered_count, released.len() as u64);
        prop_assert_eq!(s.delivered_count, s.in_order_count + s.reordered_count);
        prop_assert_eq!(s.accepted_count, s.delivered_count + s.drained_count);
        prop_assert_eq!(
            s.gap_count,
            s.timeout_release_count + s.overflow_release_count + s.resync_count
                + u64::from(b.pending_gap > 0)
        );
        // Every released seq was actually sent with that seq.
        for r in &released {
            prop_assert_eq!(arrivals[r.item.0 as usize].1, r.seq);
        }
        // (c): every handle back exactly once.
        let mut ids: Vec<u64> = released.iter().map(|r| r.item.0)
            .chain(rejected.iter().map(|(t, _)| t.0))
            .chain(drained.iter().map(|t| t.0))
            .collect();
        ids.sort_unstable();
        prop_assert_eq!(ids, (0..arrivals.len() as u64).collect::<Vec<_>>());
        let drops = s.duplicate_count + s.late_count + s.out_of_window_count;
        prop_assert_eq!(drops, rejected.len() as u64);
        // A seq that was delivered is never also given up, and every seq below the end is one
        // or the other.
        let delivered: std::collections::BTreeSet<u64> = released.iter().map(|r| r.seq).collect();
        // Every seq below next_expected was delivered or given up (from the base: 0, or the
        // first seq if it lay beyond the window).
        let first = arrivals.first().map_or(0, |a| a.1);
        let base = if first >= b.capacity() as u64 { first } else { 0 };
        prop_assert_eq!(b.next_expected(), base + s.delivered_count + s.gap_seq_count);
        prop_assert_eq!(delivered.len() as u64, s.delivered_count);
    }

    #[test]
    fn prop_no_gap_when_everything_arrives_within_the_hold(
        n in 1usize..200,
        times in prop::collection::vec(0u64..1_000, 200),
        hold_us in 1_001u64..5_000,
        extra_dups in prop::collection::vec(0usize..200, 0..20),
    ) {
        // (d): every seq 0..n arrives (some twice) within a span shorter than the hold, and the
        // window holds them all: no gap, everything delivered in order.
        let mut arr: Vec<(u64, u64)> = (0..n).map(|s| (times[s], s as u64)).collect();
        for d in extra_dups {
            arr.push((times[d % n], (d % n) as u64));
        }
        arr.sort_by_key(|a| a.0);
        let hold = Duration::from_micros(hold_us);
        let (b, released, rejected, drained) = run_arrivals(256, hold, &arr);
        let seqs: Vec<u64> = released.iter().map(|r| r.seq).collect();
        prop_assert_eq!(seqs, (0..n as u64).collect::<Vec<_>>());
        let s = b.stats();
        prop_assert_eq!((s.gap_count, s.late_count, s.out_of_window_count), (0, 0, 0));
        prop_assert_eq!(s.duplicate_count, rejected.len() as u64);
        prop_assert!(drained.is_empty());
        prop_assert!(released.iter().all(|r| r.held_for < hold));
    }
}
