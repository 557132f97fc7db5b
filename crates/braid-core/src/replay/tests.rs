//! Unit and property tests of the anti-replay window.

use super::*;
use alloc::vec::Vec;
use proptest::prelude::*;
use std::collections::BTreeSet;

/// A small window (4 blocks, 192 usable bits) so tests cross blocks and wrap the ring often.
type Small = ReplayWindow<4>;

fn accept_all<const B: usize>(w: &mut ReplayWindow<B>, counters: impl IntoIterator<Item = u64>) {
    for c in counters {
        assert_eq!(w.check(c), Ok(()), "check {c}");
        assert_eq!(w.update(c), Ok(()), "update {c}");
    }
}

#[test]
fn window_sizes() {
    assert_eq!(Small::WINDOW_BITS, 192);
    assert_eq!(ReplayWindow::<32>::WINDOW_BITS, 1984); // WireGuard's 2048 - 64
    assert_eq!(DefaultReplayWindow::WINDOW_BITS, 32_704);
    // A fixed array, no heap: 4 KiB of bitmap plus highest and stats.
    assert_eq!(
        core::mem::size_of::<DefaultReplayWindow>(),
        512 * 8 + 16 + core::mem::size_of::<ReplayStats>()
    );
}

#[test]
fn in_order_accepted_once() {
    let mut w = Small::new();
    assert_eq!(w.highest(), None);
    accept_all(&mut w, 0..1000);
    assert_eq!(w.highest(), Some(999));
    assert_eq!(w.stats().accepted_count, 1000);
    // Every counter still in the window is now a replay.
    for c in 999 - 191..1000 {
        assert_eq!(w.check(c), Err(ReplayError::Replayed), "{c}");
    }
    assert_eq!(w.check(999 - 192), Err(ReplayError::TooOld));
    assert_eq!(w.check(0), Err(ReplayError::TooOld));
    assert_eq!(w.check(1000), Ok(()));
}

#[test]
fn duplicates_rejected_and_counted() {
    let mut w = Small::new();
    assert_eq!(w.update(5), Ok(()));
    assert_eq!(w.update(5), Err(ReplayError::Replayed));
    assert_eq!(w.update(3), Ok(()));
    assert_eq!(w.update(3), Err(ReplayError::Replayed));
    assert_eq!(w.update(5), Err(ReplayError::Replayed));
    assert_eq!(w.highest(), Some(5));
    let s = *w.stats();
    assert_eq!(s.accepted_count, 2);
    assert_eq!(s.replayed_count, 3);
    assert_eq!(s.too_old_count, 0);
}

#[test]
fn reordering_within_window_accepted_once_each() {
    let mut w = Small::new();
    // 0..192 in a scrambled order (a permutation: 7 is coprime with 192).
    let order: Vec<u64> = (0..192u64).map(|i| (i * 7 + 3) % 192).collect();
    accept_all(&mut w, order.iter().copied());
    assert_eq!(w.highest(), Some(191));
    for &c in &order {
        assert_eq!(w.update(c), Err(ReplayError::Replayed), "{c}");
    }
    assert_eq!(w.stats().accepted_count, 192);
    assert_eq!(w.stats().replayed_count, 192);
}

#[test]
fn too_old_rejected_at_exact_edge() {
    let mut w = Small::new();
    w.update(1000).unwrap();
    // highest - c < 192 is inside; 192 and more below is too old.
    assert_eq!(w.check(1000 - 191), Ok(()));
    assert_eq!(w.check(1000 - 192), Err(ReplayError::TooOld));
    assert_eq!(w.update(1000 - 192), Err(ReplayError::TooOld));
    assert_eq!(w.update(0), Err(ReplayError::TooOld));
    assert_eq!(w.update(1000 - 191), Ok(()));
    assert_eq!(w.stats().too_old_count, 2);
    assert_eq!(w.highest(), Some(1000));
}

#[test]
fn jump_far_ahead_clears_window() {
    let mut w = Small::new();
    accept_all(&mut w, [10, 11, 12, 100, 150]);
    // A jump further than the whole ring: everything before is TooOld, nothing stale is left.
    w.update(10_000).unwrap();
    for c in 10_000 - 191..10_000 {
        assert_eq!(w.check(c), Ok(()), "{c}: never seen, inside the new window");
    }
    assert_eq!(w.check(150), Err(ReplayError::TooOld));
    assert_eq!(w.check(10_000), Err(ReplayError::Replayed));
    // Ring aliases of the old counters (same word and bit: equal modulo 4 * 64 = 256) inside
    // the new window are clean.
    for c in [9_994, 9_995, 9_996, 9_828, 9_878] {
        assert_eq!(w.check(c), Ok(()), "{c}");
    }
}

#[test]
fn jump_partly_ahead_keeps_recent_and_clears_entered_blocks() {
    let mut w = Small::new();
    // Seen: 100..=127 (block 1, ring word 1, bits 36..63) and 200..=260 except 230; highest
    // 260 (block 4).
    accept_all(&mut w, (100..=127).chain((200..=260).filter(|&c| c != 230)));
    // Jump by 100 (to block 5): the window is now 169..=360.
    w.update(360).unwrap();
    for c in 200..=260 {
        let want = if c == 230 {
            Ok(())
        } else {
            Err(ReplayError::Replayed)
        };
        assert_eq!(w.check(c), want, "{c}: seen before the jump, still inside");
    }
    for c in 169..200 {
        assert_eq!(w.check(c), Ok(()), "{c}");
    }
    assert_eq!(w.check(168), Err(ReplayError::TooOld));
    for c in 100..=127 {
        assert_eq!(w.check(c), Err(ReplayError::TooOld), "{c}");
    }
    // 356..=359 share ring word 1 and its bits with 100..=103: the word was zeroed on entry.
    for c in 261..360 {
        assert_eq!(
            w.check(c),
            Ok(()),
            "{c}: never seen, in blocks just entered"
        );
    }
}

#[test]
fn block_boundaries() {
    let mut w = Small::new();
    accept_all(&mut w, [63, 64, 127, 128]);
    for c in [63, 64, 127, 128] {
        assert_eq!(w.check(c), Err(ReplayError::Replayed), "{c}");
    }
    for c in [0, 62, 65, 126, 129] {
        assert_eq!(w.check(c), Ok(()), "{c}");
    }
    accept_all(&mut w, [255, 256]);
    // 256 is in ring word 0 again (block 4): word 0 (counters 0..64) was zeroed for it, and
    // the window is now 65..=256 (256 - 192 = 64 is the first too old).
    assert_eq!(w.check(63), Err(ReplayError::TooOld));
    assert_eq!(w.check(64), Err(ReplayError::TooOld));
    assert_eq!(w.check(65), Ok(()));
    for c in [127, 128, 255, 256] {
        assert_eq!(w.check(c), Err(ReplayError::Replayed), "{c}");
    }
    for c in [126, 129, 254, 257] {
        assert_eq!(w.check(c), Ok(()), "{c}");
    }
    // Step exactly one block at a time, last bit to first bit of the next block.
    let mut w = Small::new();
    for b in 0..20u64 {
        accept_all(&mut w, [b * 64 + 63, (b + 1) * 64]);
        assert_eq!(w.check(b * 64 + 63), Err(ReplayError::Replayed));
        assert_eq!(w.check((b + 1) * 64 + 1), Ok(()));
        assert_eq!(w.check(b * 64 + 62), Ok(()));
    }
}

#[test]
fn jump_of_exactly_blocks_minus_one_and_blocks() {
    for jump_blocks in [3u64, 4, 5] {
        let mut w = Small::new();
        accept_all(&mut w, [0, 1, 63]);
        let top = jump_blocks * 64 + 1;
        w.update(top).unwrap();
        for c in [0u64, 1, 63] {
            let want = if top - c >= 192 {
                Err(ReplayError::TooOld)
            } else {
                Err(ReplayError::Replayed)
            };
            assert_eq!(w.check(c), want, "jump {jump_blocks}: {c}");
        }
        for c in (top.saturating_sub(191)..top).filter(|c| ![0, 1, 63].contains(c)) {
            assert_eq!(w.check(c), Ok(()), "jump {jump_blocks}: {c}");
        }
    }
}

#[test]
fn u64_edge_values() {
    let mut w = Small::new();
    assert_eq!(w.check(u64::MAX), Err(ReplayError::Exhausted));
    assert_eq!(w.update(u64::MAX), Err(ReplayError::Exhausted));
    assert_eq!(w.highest(), None, "exhausted counter not recorded");
    assert_eq!(w.update(0), Ok(()));
    assert_eq!(w.update(0), Err(ReplayError::Replayed));
    let top = u64::MAX - 1;
    assert_eq!(w.update(top), Ok(()));
    assert_eq!(w.highest(), Some(top));
    assert_eq!(w.update(top), Err(ReplayError::Replayed));
    assert_eq!(w.update(u64::MAX), Err(ReplayError::Exhausted));
    assert_eq!(w.update(0), Err(ReplayError::TooOld));
    assert_eq!(w.update(top - 191), Ok(()));
    assert_eq!(w.update(top - 192), Err(ReplayError::TooOld));
    assert_eq!(w.update(top - 1), Ok(()));
    let s = *w.stats();
    assert_eq!(
        (
            s.accepted_count,
            s.replayed_count,
            s.too_old_count,
            s.exhausted_count
        ),
        (4, 2, 2, 2)
    );
    assert_eq!(
        DropReason::from(ReplayError::Replayed),
        DropReason::ReplayedPacket
    );
    assert_eq!(
        DropReason::from(ReplayError::TooOld),
        DropReason::ReplayTooOld
    );
    assert_eq!(
        DropReason::from(ReplayError::Exhausted).label(),
        "replay_counter_exhausted"
    );
}

#[test]
fn first_counter_may_be_large() {
    let mut w = Small::new();
    w.update(1 << 40).unwrap();
    assert_eq!(w.check((1 << 40) - 1), Ok(()));
    assert_eq!(w.check((1 << 40) - 192), Err(ReplayError::TooOld));
}

#[test]
fn check_never_mutates() {
    let mut w = Small::new();
    accept_all(&mut w, [1, 2, 3, 70, 200]);
    let before = (w.bitmap, w.highest, *w.stats());
    for c in [
        0,
        1,
        4,
        70,
        71,
        199,
        200,
        201,
        10_000,
        u64::MAX - 1,
        u64::MAX,
    ] {
        let _ = w.check(c);
        let _ = w.check(c);
    }
    assert_eq!((w.bitmap, w.highest, *w.stats()), before);
    // A checked-but-not-updated counter (MAC failed) stays acceptable, and the window did not
    // advance for it.
    assert_eq!(w.check(10_000), Ok(()));
    assert_eq!(w.check(71), Ok(()));
    assert_eq!(w.highest(), Some(200));
}

#[test]
fn reset_forgets_counters_keeps_stats() {
    let mut w = Small::new();
    accept_all(&mut w, [5, 6, 7]);
    w.update(5).unwrap_err();
    w.reset();
    assert_eq!(w.highest(), None);
    accept_all(&mut w, [5, 6, 7, 0]);
    assert_eq!(w.stats().accepted_count, 7);
    assert_eq!(w.stats().replayed_count, 1);
}

#[test]
fn count_rejected_counts_check_verdicts() {
    let mut w = Small::new();
    w.update(500).unwrap();
    for c in [500, 1, u64::MAX] {
        if let Err(e) = w.check(c) {
            w.count_rejected(e);
        }
    }
    let s = *w.stats();
    assert_eq!(
        (s.replayed_count, s.too_old_count, s.exhausted_count),
        (1, 1, 1)
    );
    assert_eq!(s.accepted_count, 1);
}

#[test]
fn no_allocation() {
    let control = allocation_counter::measure(|| {
        std::hint::black_box(Vec::<u8>::with_capacity(8));
    });
    assert_eq!(control.count_total, 1, "the counter sees allocations");
    let mut w = DefaultReplayWindow::new();
    let mut accepted = 0u64;
    let counted = allocation_counter::measure(|| {
        for c in (0..200_000u64).chain(150_000..250_000).chain([1 << 50, 3]) {
            if w.check(c).is_ok() && w.update(c).is_ok() {
                accepted += 1;
            }
        }
        w.reset();
    });
    assert_eq!(counted.count_total, 0);
    assert_eq!(accepted, 250_001);
}

/// The model: every counter ever recorded, and the highest.
#[derive(Default)]
struct Model {
    seen: BTreeSet<u64>,
    highest: Option<u64>,
}

impl Model {
    fn verdict(&self, c: u64, window: u64) -> Result<(), ReplayError> {
        if c == u64::MAX {
            return Err(ReplayError::Exhausted);
        }
        match self.highest {
            Some(h) if c <= h && h - c >= window => Err(ReplayError::TooOld),
            _ if self.seen.contains(&c) => Err(ReplayError::Replayed),
            _ => Ok(()),
        }
    }

    fn record(&mut self, c: u64) {
        self.seen.insert(c);
        self.highest = self.highest.max(Some(c));
    }
}

/// An op: offset from the current highest (negative = behind), or an absolute jump.
#[derive(Clone, Debug)]
enum Op {
    Near(i64),
    Jump(u64),
    Edge(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        20 => (-300i64..40).prop_map(Op::Near),
        2 => (0u64..2_000).prop_map(Op::Jump),
        1 => prop_oneof![Just(0u64), Just(u64::MAX), Just(u64::MAX - 1), Just(u64::MAX - 200)]
            .prop_map(Op::Edge),
    ]
}

fn run_against_model<const B: usize>(start: u64, ops: &[Op]) {
    let window = ReplayWindow::<B>::WINDOW_BITS;
    let mut w = ReplayWindow::<B>::new();
    let mut m = Model::default();
    for op in ops {
        let h = m.highest.unwrap_or(start);
        let c = match *op {
            Op::Near(d) => h.saturating_add_signed(d),
            Op::Jump(d) => h.saturating_add(d),
            Op::Edge(c) => c,
        };
        let want = m.verdict(c, window);
        assert_eq!(w.check(c), want, "check {c} (highest {:?})", m.highest);
        assert_eq!(w.update(c), want, "update {c}");
        if want.is_ok() {
            m.record(c);
        }
        assert_eq!(w.highest(), m.highest);
        // After every op, sweep the window and a margin on both sides (every counter for
        // small windows, a stride for large ones), and every recorded counter near it.
        if let Some(h) = m.highest {
            let lo = h.saturating_sub(window + 70);
            let hi = h.saturating_add(70);
            let step = if window < 1_000 { 1 } else { 97 };
            for c in (lo..=hi)
                .step_by(step)
                .chain(m.seen.range(lo..=hi).copied())
            {
                assert_eq!(w.check(c), m.verdict(c, window), "sweep {c}, highest {h}");
            }
        }
    }
    let accepted = u64::try_from(m.seen.len()).unwrap();
    assert_eq!(w.stats().accepted_count, accepted);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn matches_model_small(start in prop_oneof![Just(0u64), 0u64..1_000_000, Just(u64::MAX - 5_000)],
                           ops in proptest::collection::vec(op(), 1..120)) {
        run_against_model::<4>(start, &ops);
    }

    #[test]
    fn matches_model_two_blocks(start in 0u64..10_000, ops in proptest::collection::vec(op(), 1..120)) {
        run_against_model::<2>(start, &ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn matches_model_default(start in 0u64..1_000_000,
                             near in proptest::collection::vec(-40_000i64..64, 1..300)) {
        // The default window: offsets reach beyond its 32 704 bits.
        let ops: Vec<Op> = near.into_iter().map(Op::Near).collect();
        run_against_model::<512>(start, &ops);
    }
}
