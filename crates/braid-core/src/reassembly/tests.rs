//! Tests of the reassembler: one unit test per rule of the module doc, and property tests
//! (any permutation, duplication or loss of fragments, interleaved across datagrams).

use super::*;
use crate::buffer::PacketStore;
use proptest::prelude::*;
use std::collections::HashMap;
use std::vec::Vec;

const MS: u64 = 1_000_000;

fn key(seq: u64) -> DatagramKey {
    DatagramKey {
        flow: FlowId(7),
        seq,
    }
}

/// The bytes of datagram `seq`: a pattern that differs per datagram and per position.
fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from((i as u64 * 131 + seq * 17 + (i as u64 >> 8)) % 251).unwrap())
        .collect()
}

struct Harness {
    r: Reassembler,
    s: PacketStore,
    now: Instant,
}

impl Harness {
    fn new(config: ReassemblyConfig) -> Self {
        Self {
            r: Reassembler::new(config),
            s: PacketStore::new(256 << 20, 65_536),
            now: Instant::ZERO,
        }
    }

    fn small() -> Self {
        Self::new(ReassemblyConfig {
            timeout: Duration::from_millis(250),
            ..ReassemblyConfig::default()
        })
    }

    /// Insert `data[off..off+len]` of datagram `seq` (total = `data.len()`).
    fn frag(&mut self, seq: u64, data: &[u8], off: usize, len: usize) -> FragOutcome {
        let out = self.r.insert(
            self.now,
            &mut self.s,
            key(seq),
            u32::try_from(off).unwrap(),
            u32::try_from(data.len()).unwrap(),
            &data[off..off + len],
        );
        // A completed buffer now belongs to the caller, not to the reassembler.
        let extra = match &out {
            FragOutcome::Complete { len, .. } => PacketStore::class_bytes(*len).unwrap(),
            _ => 0,
        };
        self.r.check_invariants(&self.s, extra).unwrap();
        self.s.check_invariants().unwrap();
        out
    }

    /// Expect `out` to be a completion with exactly `want`; free the buffer.
    fn expect_complete(&mut self, out: FragOutcome, want: &[u8]) {
        match out {
            FragOutcome::Complete { buf, len } => {
                assert_eq!(len, want.len());
                assert_eq!(self.s.get(&buf), want, "reassembled bytes");
                self.s.free(buf);
            }
            other => panic!("expected Complete, got {other:?}"),
        }
        self.check();
    }

    fn check(&self) {
        self.r.check_invariants(&self.s, 0).unwrap();
        self.s.check_invariants().unwrap();
    }

    fn advance_ms(&mut self, ms: u64) {
        self.now = Instant::from_nanos(self.now.as_nanos() + ms * MS);
    }

    fn drops(&self, reason: DropReason) -> u64 {
        self.r.stats().drops.get(reason)
    }
}

#[test]
fn in_order_reverse_and_single() {
    let mut h = Harness::small();
    let d = payload(1, 3000);
    assert_eq!(h.frag(1, &d, 0, 1000), FragOutcome::Pending);
    assert_eq!(h.frag(1, &d, 1000, 1000), FragOutcome::Pending);
    let out = h.frag(1, &d, 2000, 1000);
    h.expect_complete(out, &d);

    let d2 = payload(2, 2500);
    assert_eq!(h.frag(2, &d2, 2000, 500), FragOutcome::Pending);
    assert_eq!(h.frag(2, &d2, 1000, 1000), FragOutcome::Pending);
    let out = h.frag(2, &d2, 0, 1000);
    h.expect_complete(out, &d2);

    let d3 = payload(3, 64);
    let out = h.frag(3, &d3, 0, 64);
    h.expect_complete(out, &d3);

    let st = h.r.stats();
    assert_eq!(st.datagrams_completed, 3);
    assert_eq!(st.fragments_accepted, 7);
    assert_eq!(st.drops.total(), 0);
    assert_eq!((st.contexts_live, st.bytes_held), (0, 0));
    assert_eq!(st.peak_bytes_held, 4096, "one 4 KiB slot at a time");
    assert_eq!(h.r.poll_timeout(), None);
    assert_eq!(h.s.used_bytes(), 0);
}

#[test]
fn exact_duplicate_drops_only_itself() {
    let mut h = Harness::small();
    let d = payload(1, 300);
    assert_eq!(h.frag(1, &d, 0, 100), FragOutcome::Pending);
    assert_eq!(
        h.frag(1, &d, 0, 100),
        FragOutcome::Dropped(DropReason::ReassemblyDuplicateFragment)
    );
    assert_eq!(h.frag(1, &d, 200, 100), FragOutcome::Pending);
    assert_eq!(
        h.frag(1, &d, 200, 100),
        FragOutcome::Dropped(DropReason::ReassemblyDuplicateFragment)
    );
    let out = h.frag(1, &d, 100, 100);
    h.expect_complete(out, &d);
    assert_eq!(h.drops(DropReason::ReassemblyDuplicateFragment), 2);
    assert_eq!(h.r.stats().datagrams_dropped, 0);
    assert_eq!(h.r.stats().contexts_live, 0);
}

/// Every overlap shape that is not an exact duplicate drops the whole datagram, before any
/// byte is copied, and frees its memory at once.
#[test]
fn overlaps_drop_the_whole_datagram() {
    // (first fragment, second fragment) as (offset, len) within a 400-byte datagram.
    type Case = ((usize, usize), (usize, usize), &'static str);
    let cases: [Case; 8] = [
        ((100, 100), (50, 100), "partial overlap on the left"),
        ((100, 100), (150, 100), "partial overlap on the right"),
        ((100, 100), (50, 200), "new contains old"),
        ((100, 100), (120, 50), "old contains new"),
        ((100, 100), (100, 50), "same start, shorter"),
        ((100, 100), (100, 150), "same start, longer"),
        ((100, 100), (150, 50), "same end, later start"),
        // Teardrop: the second fragment starts inside the first and ends before its end.
        ((0, 36), (24, 4), "teardrop"),
    ];
    for (i, (a, b, what)) in cases.into_iter().enumerate() {
        let mut h = Harness::small();
        let seq = i as u64;
        let d = payload(seq, 400);
        assert_eq!(h.frag(seq, &d, a.0, a.1), FragOutcome::Pending, "{what}");
        assert!(h.r.stats().bytes_held > 0);
        assert_eq!(
            h.frag(seq, &d, b.0, b.1),
            FragOutcome::Dropped(DropReason::ReassemblyOverlap),
            "{what}"
        );
        let st = h.r.stats();
        assert_eq!(st.drops.get(DropReason::ReassemblyOverlap), 1, "{what}");
        assert_eq!(
            (st.contexts_live, st.tombstones_live, st.bytes_held),
            (0, 1, 0),
            "{what}"
        );
        assert_eq!(st.fragments_discarded, 1, "{what}");
        assert_eq!(h.s.used_bytes(), 0, "memory freed at once: {what}");
        // The rest of the datagram is stale until the original deadline: no new context.
        assert_eq!(
            h.frag(seq, &d, 300, 100),
            FragOutcome::Dropped(DropReason::ReassemblyStale),
            "{what}"
        );
        assert_eq!(h.r.stats().contexts_live, 0);
    }
}

/// Off-by-one boundaries: touching neighbours are fine, one shared byte either side is not.
#[test]
fn one_byte_overlaps_and_exact_adjacency() {
    for (second, want) in [
        (
            (99, 51),
            FragOutcome::Dropped(DropReason::ReassemblyOverlap),
        ), // shares byte 99
        ((200, 50), FragOutcome::Pending), // touches the end
        ((50, 50), FragOutcome::Pending),  // touches the start
        (
            (50, 51),
            FragOutcome::Dropped(DropReason::ReassemblyOverlap),
        ), // shares byte 100
        (
            (199, 10),
            FragOutcome::Dropped(DropReason::ReassemblyOverlap),
        ), // shares byte 199
    ] {
        let mut h = Harness::small();
        let d = payload(3, 300);
        assert_eq!(h.frag(3, &d, 100, 100), FragOutcome::Pending);
        assert_eq!(h.frag(3, &d, second.0, second.1), want, "{second:?}");
    }
    // Filling a gap exactly between two neighbours, and one byte too long either side.
    for (gap, want) in [
        ((100, 100), FragOutcome::Pending),
        (
            (99, 101),
            FragOutcome::Dropped(DropReason::ReassemblyOverlap),
        ),
        (
            (100, 101),
            FragOutcome::Dropped(DropReason::ReassemblyOverlap),
        ),
    ] {
        let mut h = Harness::small();
        let d = payload(4, 400);
        assert_eq!(h.frag(4, &d, 0, 100), FragOutcome::Pending);
        assert_eq!(h.frag(4, &d, 200, 100), FragOutcome::Pending);
        assert_eq!(h.frag(4, &d, gap.0, gap.1), want, "{gap:?}");
    }
}

#[test]
fn overlap_with_a_neighbour_among_many() {
    let mut h = Harness::small();
    let d = payload(9, 1000);
    for off in [0, 200, 400, 800] {
        assert_eq!(h.frag(9, &d, off, 100), FragOutcome::Pending);
    }
    // Fits the gap [500, 800) exactly: fine.
    assert_eq!(h.frag(9, &d, 500, 300), FragOutcome::Pending);
    // Spans the gap [100, 200) and one byte into [200, 300).
    assert_eq!(
        h.frag(9, &d, 100, 101),
        FragOutcome::Dropped(DropReason::ReassemblyOverlap)
    );
    assert_eq!(h.r.stats().fragments_discarded, 5);
}

/// More fragments than fit inline in a context (8): the ranges spill to the slab's spill
/// array, and the overlap rules still hold there.
#[test]
fn many_fragments_spill_and_keep_the_rules() {
    let mut h = Harness::small();
    let d = payload(11, 2000);
    // 20 fragments of 100 bytes in a scrambled order (7 is coprime with 20).
    let order: Vec<usize> = (0..20).map(|i| (i * 7 + 3) % 20).collect();
    for (n, &i) in order.iter().enumerate().take(19) {
        assert_eq!(
            h.frag(11, &d, i * 100, 100),
            FragOutcome::Pending,
            "fragment {n}"
        );
        if n == 12 {
            assert_eq!(
                h.frag(11, &d, order[4] * 100, 100),
                FragOutcome::Dropped(DropReason::ReassemblyDuplicateFragment),
                "exact duplicate after the spill"
            );
        }
    }
    let out = h.frag(11, &d, order[19] * 100, 100);
    h.expect_complete(out, &d);

    // After a spill, an overlap with a spilled neighbour drops the datagram.
    let d2 = payload(12, 2000);
    for i in 0..12 {
        assert_eq!(h.frag(12, &d2, i * 150, 100), FragOutcome::Pending);
    }
    assert_eq!(
        h.frag(12, &d2, 1000, 60),
        FragOutcome::Dropped(DropReason::ReassemblyOverlap),
        "[1000, 1060) overlaps [1050, 1150)"
    );
    assert_eq!(h.r.stats().fragments_discarded, 12);
}

#[test]
fn tombstone_expires_at_the_original_deadline() {
    let mut h = Harness::small();
    let d = payload(1, 400);
    assert_eq!(h.frag(1, &d, 0, 100), FragOutcome::Pending);
    assert_eq!(h.r.poll_timeout(), Some(Instant::from_millis(250)));
    h.advance_ms(100);
    assert_eq!(
        h.frag(1, &d, 50, 100),
        FragOutcome::Dropped(DropReason::ReassemblyOverlap)
    );
    assert_eq!(
        h.r.poll_timeout(),
        Some(Instant::from_millis(250)),
        "deadline kept"
    );
    h.advance_ms(149);
    assert_eq!(h.r.handle_timeout(h.now, &mut h.s, 10), 0);
    h.advance_ms(1);
    assert_eq!(h.r.handle_timeout(h.now, &mut h.s, 10), 1);
    let st = h.r.stats();
    assert_eq!((st.tombstones_live, st.contexts_live), (0, 0));
    assert_eq!(
        st.drops.get(DropReason::ReassemblyTimeout),
        0,
        "a tombstone is no timeout"
    );
    assert_eq!(h.r.poll_timeout(), None);
    // After the deadline the id is free again (a new datagram, or a very late copy that will
    // time out: either way bounded and counted).
    assert_eq!(h.frag(1, &d, 0, 100), FragOutcome::Pending);
}

#[test]
fn two_different_ends_drop_the_datagram() {
    let mut h = Harness::small();
    let d = payload(1, 400);
    assert_eq!(h.frag(1, &d, 0, 100), FragOutcome::Pending);
    let out = h.r.insert(h.now, &mut h.s, key(1), 100, 500, &d[100..200]);
    assert_eq!(
        out,
        FragOutcome::Dropped(DropReason::ReassemblyTotalMismatch)
    );
    h.check();
    let st = h.r.stats();
    assert_eq!(
        (st.datagrams_dropped, st.bytes_held, st.tombstones_live),
        (1, 0, 1)
    );
    assert_eq!(
        h.frag(1, &d, 100, 100),
        FragOutcome::Dropped(DropReason::ReassemblyStale)
    );
}

#[test]
fn past_end_zero_length_and_too_large_drop_only_the_fragment() {
    let mut h = Harness::new(ReassemblyConfig {
        max_datagram_bytes: 9000,
        ..ReassemblyConfig::default()
    });
    let d = payload(1, 400);
    assert_eq!(h.frag(1, &d, 0, 100), FragOutcome::Pending);
    let r = &mut h.r;
    let s = &mut h.s;
    let now = h.now;
    assert_eq!(
        r.insert(now, s, key(1), 350, 400, &[0; 51]),
        FragOutcome::Dropped(DropReason::ReassemblyPastEnd)
    );
    assert_eq!(
        r.insert(now, s, key(1), u32::MAX, 400, &[0; 2]),
        FragOutcome::Dropped(DropReason::ReassemblyPastEnd),
        "offset + len overflowing u32"
    );
    assert_eq!(
        r.insert(now, s, key(1), 100, 400, &[]),
        FragOutcome::Dropped(DropReason::ReassemblyZeroLength)
    );
    assert_eq!(
        r.insert(now, s, key(2), 0, 9001, &[0; 100]),
        FragOutcome::Dropped(DropReason::ReassemblyTooLarge)
    );
    assert_eq!(
        r.insert(now, s, key(2), 0, 0, &[0; 1]),
        FragOutcome::Dropped(DropReason::ReassemblyPastEnd),
        "total 0"
    );
    h.check();
    let st = h.r.stats();
    assert_eq!(st.fragments_dropped, 5);
    assert_eq!(st.datagrams_dropped, 0);
    assert_eq!(st.contexts_live, 1, "the datagram itself survives");
    let out = h.frag(1, &d, 100, 300);
    h.expect_complete(out, &d);
}

#[test]
fn too_large_for_the_store_is_too_large() {
    let mut h = Harness::new(ReassemblyConfig {
        max_datagram_bytes: 100_000,
        ..ReassemblyConfig::default()
    });
    let out = h.r.insert(h.now, &mut h.s, key(1), 0, 70_000, &[1; 100]);
    assert_eq!(out, FragOutcome::Dropped(DropReason::ReassemblyTooLarge));
}

#[test]
fn too_many_fragments_drops_the_datagram() {
    let mut h = Harness::new(ReassemblyConfig {
        max_fragments: 4,
        ..ReassemblyConfig::default()
    });
    let d = payload(1, 500);
    for i in 0..4 {
        assert_eq!(h.frag(1, &d, i * 100, 100), FragOutcome::Pending);
    }
    // A duplicate at the limit is only a duplicate.
    assert_eq!(
        h.frag(1, &d, 0, 100),
        FragOutcome::Dropped(DropReason::ReassemblyDuplicateFragment)
    );
    assert_eq!(
        h.frag(1, &d, 400, 100),
        FragOutcome::Dropped(DropReason::ReassemblyTooManyFragments)
    );
    let st = h.r.stats();
    assert_eq!(
        (st.datagrams_dropped, st.fragments_discarded, st.bytes_held),
        (1, 4, 0)
    );
    // Exactly max_fragments fragments complete fine.
    let d2 = payload(2, 400);
    for i in 0..3 {
        assert_eq!(h.frag(2, &d2, i * 100, 100), FragOutcome::Pending);
    }
    let out = h.frag(2, &d2, 300, 100);
    h.expect_complete(out, &d2);
}

#[test]
fn memory_cap_refuses_new_datagrams_and_keeps_live_ones() {
    // 4 KiB slots (3000-byte datagrams), cap of 3 slots.
    let mut h = Harness::new(ReassemblyConfig {
        mem_cap_bytes: 3 * 4096,
        ..ReassemblyConfig::default()
    });
    let ds: Vec<_> = (0..4).map(|i| payload(i, 3000)).collect();
    for i in 0..3 {
        assert_eq!(h.frag(i, &ds[i as usize], 0, 1000), FragOutcome::Pending);
    }
    assert_eq!(h.r.stats().bytes_held, 3 * 4096);
    assert_eq!(
        h.frag(3, &ds[3], 0, 1000),
        FragOutcome::Dropped(DropReason::ReassemblyMemoryCap)
    );
    // A whole datagram in one fragment needs no context and is not refused.
    let small = payload(10, 200);
    let out = h.frag(10, &small, 0, 200);
    h.expect_complete(out, &small);
    // Live ones were not evicted: they complete.
    for i in 0..3 {
        assert_eq!(h.frag(i, &ds[i as usize], 1000, 1000), FragOutcome::Pending);
        let out = h.frag(i, &ds[i as usize], 2000, 1000);
        h.expect_complete(out, &ds[i as usize]);
    }
    assert_eq!(h.drops(DropReason::ReassemblyMemoryCap), 1);
    assert_eq!(h.r.stats().peak_bytes_held, 3 * 4096);
    // With room again, the refused datagram can start.
    assert_eq!(h.frag(3, &ds[3], 0, 1000), FragOutcome::Pending);
}

#[test]
fn context_cap_refuses_new_datagrams_and_keeps_live_ones() {
    let mut h = Harness::new(ReassemblyConfig {
        max_contexts: 2,
        ..ReassemblyConfig::default()
    });
    let ds: Vec<_> = (0..3).map(|i| payload(i, 200)).collect();
    assert_eq!(h.frag(0, &ds[0], 0, 100), FragOutcome::Pending);
    assert_eq!(h.frag(1, &ds[1], 0, 100), FragOutcome::Pending);
    for _ in 0..5 {
        assert_eq!(
            h.frag(2, &ds[2], 0, 100),
            FragOutcome::Dropped(DropReason::ReassemblyContextCap)
        );
    }
    assert_eq!(h.drops(DropReason::ReassemblyContextCap), 5);
    let out = h.frag(0, &ds[0], 100, 100);
    h.expect_complete(out, &ds[0]);
    let out = h.frag(1, &ds[1], 100, 100);
    h.expect_complete(out, &ds[1]);
    // Tombstones hold a slot too, until their deadline.
    assert_eq!(h.frag(2, &ds[2], 0, 100), FragOutcome::Pending);
    assert_eq!(
        h.frag(2, &ds[2], 50, 100),
        FragOutcome::Dropped(DropReason::ReassemblyOverlap)
    );
    assert_eq!(h.frag(3, &ds[0], 0, 100), FragOutcome::Pending);
    assert_eq!(
        h.frag(4, &ds[0], 0, 100),
        FragOutcome::Dropped(DropReason::ReassemblyContextCap)
    );
}

#[test]
fn store_full_is_counted() {
    let mut h = Harness::small();
    h.s = PacketStore::new(4096, 65_536);
    let d = payload(1, 3000);
    assert_eq!(h.frag(1, &d, 0, 1000), FragOutcome::Pending);
    assert_eq!(
        h.frag(2, &d, 0, 1000),
        FragOutcome::Dropped(DropReason::StoreFull)
    );
    assert_eq!(
        h.frag(3, &d, 0, 3000),
        FragOutcome::Dropped(DropReason::StoreFull),
        "whole datagram too"
    );
    assert_eq!(h.drops(DropReason::StoreFull), 2);
}

#[test]
fn timeout_runs_from_the_first_fragment_and_is_never_extended() {
    let mut h = Harness::small();
    let d = payload(1, 400);
    assert_eq!(h.frag(1, &d, 0, 100), FragOutcome::Pending);
    h.advance_ms(200);
    assert_eq!(h.frag(1, &d, 100, 100), FragOutcome::Pending);
    assert_eq!(
        h.r.poll_timeout(),
        Some(Instant::from_millis(250)),
        "not extended"
    );
    h.advance_ms(49);
    assert_eq!(h.frag(1, &d, 200, 100), FragOutcome::Pending);
    assert_eq!(
        h.r.handle_timeout(h.now, &mut h.s, 100),
        0,
        "249 ms: not yet"
    );
    h.advance_ms(1);
    assert_eq!(
        h.r.handle_timeout(h.now, &mut h.s, 100),
        1,
        "250 ms after the first"
    );
    h.check();
    let st = h.r.stats();
    assert_eq!(st.drops.get(DropReason::ReassemblyTimeout), 1);
    assert_eq!(
        (st.contexts_live, st.bytes_held, st.fragments_discarded),
        (0, 0, 3)
    );
    assert_eq!(h.s.used_bytes(), 0);
    // The last fragment, late, cannot complete the datagram: it starts a new context.
    assert_eq!(h.frag(1, &d, 300, 100), FragOutcome::Pending);
    assert_eq!(h.r.poll_timeout(), Some(Instant::from_millis(500)));
}

#[test]
fn late_fragment_before_handle_timeout_cannot_complete() {
    let mut h = Harness::small();
    let d = payload(1, 200);
    assert_eq!(h.frag(1, &d, 0, 100), FragOutcome::Pending);
    h.advance_ms(250);
    // handle_timeout not called yet: insert expires the old context itself.
    assert_eq!(h.frag(1, &d, 100, 100), FragOutcome::Pending);
    let st = h.r.stats();
    assert_eq!(st.drops.get(DropReason::ReassemblyTimeout), 1);
    assert_eq!((st.datagrams_completed, st.contexts_live), (0, 1));
}

#[test]
fn handle_timeout_respects_its_budget_and_order() {
    let mut h = Harness::small();
    for seq in 0..10 {
        let d = payload(seq, 200);
        assert_eq!(h.frag(seq, &d, 0, 100), FragOutcome::Pending);
        h.advance_ms(1);
    }
    h.now = Instant::from_millis(255);
    // Deadlines are 250..=259 ms; at 255 ms six are due.
    assert_eq!(h.r.handle_timeout(h.now, &mut h.s, 4), 4);
    assert_eq!(h.r.poll_timeout(), Some(Instant::from_millis(254)));
    assert_eq!(h.r.handle_timeout(h.now, &mut h.s, 4), 2);
    assert_eq!(h.r.handle_timeout(h.now, &mut h.s, 4), 0);
    assert_eq!(h.r.stats().contexts_live, 4);
    h.check();
    // The survivors are the youngest four.
    let d = payload(9, 200);
    let out = h.frag(9, &d, 100, 100);
    h.expect_complete(out, &d);
}

/// A completed datagram is forgotten (module doc): a late duplicate opens a new context, which
/// is completed again by a full second copy, or else times out, freed and counted.
#[test]
fn late_duplicates_after_completion() {
    let mut h = Harness::small();
    let d = payload(5, 200);
    assert_eq!(h.frag(5, &d, 0, 100), FragOutcome::Pending);
    let out = h.frag(5, &d, 100, 100);
    h.expect_complete(out, &d);
    // A whole second copy (redundant sending) completes again, identical.
    assert_eq!(h.frag(5, &d, 100, 100), FragOutcome::Pending);
    let out = h.frag(5, &d, 0, 100);
    h.expect_complete(out, &d);
    // A lone late copy of one fragment holds a context until its own timeout.
    assert_eq!(h.frag(5, &d, 0, 100), FragOutcome::Pending);
    h.advance_ms(250);
    assert_eq!(h.r.handle_timeout(h.now, &mut h.s, 8), 1);
    let st = h.r.stats();
    assert_eq!(st.datagrams_completed, 2);
    assert_eq!(st.drops.get(DropReason::ReassemblyTimeout), 1);
    assert_eq!(
        (st.contexts_live, st.bytes_held, h.s.used_bytes()),
        (0, 0, 0)
    );
}

#[test]
fn keys_differ_by_flow_and_seq() {
    let mut h = Harness::small();
    let d = payload(1, 200);
    let a = DatagramKey {
        flow: FlowId(1),
        seq: 1,
    };
    let b = DatagramKey {
        flow: FlowId(2),
        seq: 1,
    };
    assert_eq!(
        h.r.insert(h.now, &mut h.s, a, 0, 200, &d[..100]),
        FragOutcome::Pending
    );
    assert_eq!(
        h.r.insert(h.now, &mut h.s, b, 100, 200, &d[100..]),
        FragOutcome::Pending
    );
    assert_eq!(h.r.stats().contexts_live, 2);
    h.check();
}

#[test]
fn config_is_clamped() {
    let r = Reassembler::new(ReassemblyConfig {
        max_contexts: 0,
        max_fragments: 0,
        ..ReassemblyConfig::default()
    });
    assert_eq!(r.config().max_contexts, 1);
    assert_eq!(r.config().max_fragments, 1);
}

// --- reconfiguration --------------------------------------------------------------------------

/// A lower memory cap drops the oldest held datagrams until the rest fits (each counted
/// once, `ReassemblyEvicted`, leaving a tombstone: its later fragments are stale); the
/// newest one completes; a new datagram is refused at the new cap.
#[test]
fn a_lower_memory_cap_evicts_the_oldest_until_the_rest_fits() {
    let mut h = Harness::small();
    let ds: Vec<Vec<u8>> = (1..=3).map(|s| payload(s, 3000)).collect();
    for (i, d) in ds.iter().enumerate() {
        assert_eq!(h.frag(i as u64 + 1, d, 0, 1000), FragOutcome::Pending);
        h.advance_ms(1);
    }
    assert_eq!(h.r.stats().bytes_held, 3 * 4096);
    let cfg = ReassemblyConfig {
        mem_cap_bytes: 4096,
        ..*h.r.config()
    };
    h.r.check_reconfigure(&cfg).unwrap();
    assert_eq!(h.r.reconfigure(&mut h.s, cfg), 2);
    h.check();
    assert_eq!(h.r.config().mem_cap_bytes, 4096);
    let st = h.r.stats();
    assert_eq!((st.contexts_live, st.tombstones_live), (1, 2));
    assert_eq!((st.bytes_held, st.datagrams_dropped), (4096, 2));
    assert_eq!(h.drops(DropReason::ReassemblyEvicted), 2);
    // The two oldest are gone, the newest completes.
    assert_eq!(
        h.frag(1, &ds[0], 1000, 1000),
        FragOutcome::Dropped(DropReason::ReassemblyStale)
    );
    assert_eq!(h.frag(3, &ds[2], 1000, 1000), FragOutcome::Pending);
    let out = h.frag(3, &ds[2], 2000, 1000);
    h.expect_complete(out, &ds[2]);
    // At the new cap: one 4 KiB datagram fits, a second does not.
    let d4 = payload(4, 3000);
    let d5 = payload(5, 3000);
    assert_eq!(h.frag(4, &d4, 0, 1000), FragOutcome::Pending);
    assert_eq!(
        h.frag(5, &d5, 0, 1000),
        FragOutcome::Dropped(DropReason::ReassemblyMemoryCap)
    );
}

/// A shorter timeout moves held deadlines earlier (a context lives the new timeout from its
/// first fragment), a longer one leaves them (never extended) and applies to new contexts;
/// the deadline list stays sorted (the invariants check it).
#[test]
fn a_shorter_timeout_applies_to_held_datagrams_a_longer_one_to_new_ones() {
    let mut h = Harness::small();
    let d1 = payload(1, 3000);
    assert_eq!(h.frag(1, &d1, 0, 1000), FragOutcome::Pending);
    h.advance_ms(5);
    let shorter = ReassemblyConfig {
        timeout: Duration::from_millis(20),
        ..*h.r.config()
    };
    assert_eq!(h.r.reconfigure(&mut h.s, shorter), 0);
    h.check();
    assert_eq!(h.r.poll_timeout(), Some(Instant::from_millis(20)));
    // A context created now gets the new timeout, after the held one in the list.
    let d2 = payload(2, 3000);
    assert_eq!(h.frag(2, &d2, 0, 1000), FragOutcome::Pending);
    let longer = ReassemblyConfig {
        timeout: Duration::from_millis(500),
        ..*h.r.config()
    };
    h.r.reconfigure(&mut h.s, longer);
    h.check();
    h.now = Instant::from_millis(20);
    assert_eq!(h.r.handle_timeout(h.now, &mut h.s, 10), 1, "held: 20 ms");
    h.now = Instant::from_millis(25);
    assert_eq!(
        h.r.handle_timeout(h.now, &mut h.s, 10),
        1,
        "created at 5: 20 ms"
    );
    assert_eq!(h.drops(DropReason::ReassemblyTimeout), 2);
    let d3 = payload(3, 3000);
    assert_eq!(h.frag(3, &d3, 0, 1000), FragOutcome::Pending);
    assert_eq!(h.r.poll_timeout(), Some(Instant::from_millis(525)));
    h.check();
}

/// Lower caps on length and fragments drop the held datagrams that exceed them; the
/// fragment cap goes back up to the room the reassembler has (64 even when built lower),
/// not beyond; what sizes the tables is refused; nothing changes on a refusal.
#[test]
fn caps_on_length_and_fragments_and_what_cannot_change() {
    let mut h = Harness::new(ReassemblyConfig {
        max_fragments: 8,
        ..ReassemblyConfig::default()
    });
    assert_eq!(h.r.fragments_room(), 64);
    let big = payload(1, 5000);
    let many = payload(2, 1000);
    assert_eq!(h.frag(1, &big, 0, 100), FragOutcome::Pending);
    for i in 0..5 {
        assert_eq!(h.frag(2, &many, i * 100, 100), FragOutcome::Pending);
    }
    let cfg = ReassemblyConfig {
        max_datagram_bytes: 4000,
        max_fragments: 4,
        ..*h.r.config()
    };
    assert_eq!(h.r.reconfigure(&mut h.s, cfg), 2);
    h.check();
    assert_eq!(h.drops(DropReason::ReassemblyEvicted), 2);
    assert_eq!(
        h.frag(3, &big, 0, 100),
        FragOutcome::Dropped(DropReason::ReassemblyTooLarge)
    );
    // Up to the room: accepted; a datagram of 20 fragments completes.
    let room = ReassemblyConfig {
        max_fragments: 64,
        ..*h.r.config()
    };
    h.r.check_reconfigure(&room).unwrap();
    h.r.reconfigure(&mut h.s, room);
    let d = payload(4, 2000);
    for i in 0..19 {
        assert_eq!(h.frag(4, &d, i * 100, 100), FragOutcome::Pending);
    }
    let out = h.frag(4, &d, 1900, 100);
    h.expect_complete(out, &d);
    let before = *h.r.config();
    for (cfg, field) in [
        (
            ReassemblyConfig {
                max_fragments: 65,
                ..before
            },
            "max_fragments",
        ),
        (
            ReassemblyConfig {
                max_contexts: 10,
                ..before
            },
            "max_contexts",
        ),
        (
            ReassemblyConfig {
                hash_seed: 9,
                ..before
            },
            "hash_seed",
        ),
        (
            ReassemblyConfig {
                mem_cap_bytes: 0,
                ..before
            },
            "mem_cap_bytes",
        ),
        (
            ReassemblyConfig {
                timeout: Duration::ZERO,
                ..before
            },
            "timeout",
        ),
        (
            ReassemblyConfig {
                max_datagram_bytes: 70_000,
                ..before
            },
            "max_datagram_bytes",
        ),
    ] {
        assert_eq!(h.r.check_reconfigure(&cfg).map_err(|e| e.0), Err(field));
    }
    assert_eq!(*h.r.config(), before);
}

// --- property tests ------------------------------------------------------------------------

/// What happens to one fragment on the way.
#[derive(Clone, Copy, Debug)]
enum Fate {
    Deliver,
    /// Delivered this many extra times (exact duplicates).
    Duplicate(u8),
    Lose,
}

#[derive(Debug, Clone)]
struct Scenario {
    /// `(datagram length, cut points)` per datagram.
    datagrams: Vec<(usize, Vec<usize>)>,
    fates: Vec<Fate>,
    /// Swap-based shuffle seeds, applied to the event list.
    shuffle: Vec<(usize, usize)>,
    /// Time step before each event, in 10 µs.
    steps: Vec<u8>,
    mem_cap_bytes: usize,
    max_contexts: usize,
    max_fragments: u16,
    store_cap_bytes: usize,
}

fn datagram() -> impl Strategy<Value = (usize, Vec<usize>)> {
    (1usize..=9000).prop_flat_map(|len| {
        let cuts = proptest::collection::vec(1..len.max(2), 0..12);
        (Just(len), cuts).prop_map(|(len, mut cuts)| {
            cuts.retain(|&c| c < len);
            cuts.sort_unstable();
            cuts.dedup();
            (len, cuts)
        })
    })
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        proptest::collection::vec(datagram(), 1..24),
        proptest::collection::vec(
            prop_oneof![
                6 => Just(Fate::Deliver),
                2 => (1u8..3).prop_map(Fate::Duplicate),
                1 => Just(Fate::Lose),
            ],
            300,
        ),
        proptest::collection::vec((0usize..10_000, 0usize..10_000), 0..400),
        proptest::collection::vec(prop_oneof![8 => 0u8..3, 1 => 0u8..=255], 600),
        prop_oneof![1 => Just(24 * 1024), 1 => Just(160 * 1024), 2 => Just(64 << 20)],
        prop_oneof![1 => Just(3usize), 1 => Just(8), 3 => Just(64)],
        prop_oneof![1 => Just(4u16), 3 => Just(64)],
        prop_oneof![1 => Just(64 * 1024), 3 => Just(16 << 20)],
    )
        .prop_map(
            |(datagrams, fates, shuffle, steps, mem, ctxs, frags, store)| Scenario {
                datagrams,
                fates,
                shuffle,
                steps,
                mem_cap_bytes: mem,
                max_contexts: ctxs,
                max_fragments: frags,
                store_cap_bytes: store,
            },
        )
}

/// Per-datagram record of what the test saw.
#[derive(Default, Debug)]
struct Seen {
    completions: u32,
    inserts: u32,
    first_insert: Option<Instant>,
    last_insert: Instant,
    lossy: bool,
    /// Dropped with a reason that refuses or kills the datagram (caps, store, fragment cap).
    refused: bool,
}

fn run_scenario(sc: &Scenario) -> Result<ReassemblyStats, TestCaseError> {
    let timeout = Duration::from_millis(20);
    let config = ReassemblyConfig {
        mem_cap_bytes: sc.mem_cap_bytes,
        max_contexts: sc.max_contexts,
        max_fragments: sc.max_fragments,
        timeout,
        max_datagram_bytes: 9000,
        hash_seed: 0x5eed,
    };
    let mut r = Reassembler::new(config);
    let mut store = PacketStore::new(sc.store_cap_bytes, 9216);
    let datas: Vec<Vec<u8>> = (0..sc.datagrams.len())
        .map(|i| payload(i as u64, sc.datagrams[i].0))
        .collect();

    // Events: (datagram, offset, len), with duplicates and losses applied.
    let mut events = Vec::new();
    let mut seen: Vec<Seen> = (0..sc.datagrams.len()).map(|_| Seen::default()).collect();
    let mut fate_i = 0;
    let mut frags_of = Vec::new();
    for (d, (len, cuts)) in sc.datagrams.iter().enumerate() {
        let mut bounds = Vec::with_capacity(cuts.len() + 2);
        bounds.push(0);
        bounds.extend_from_slice(cuts);
        bounds.push(*len);
        frags_of.push(bounds.len() - 1);
        for w in bounds.windows(2) {
            let fate = sc.fates[fate_i % sc.fates.len()];
            fate_i += 1;
            let copies = match fate {
                Fate::Deliver => 1,
                Fate::Duplicate(n) => 1 + usize::from(n),
                Fate::Lose => {
                    seen[d].lossy = true;
                    0
                }
            };
            for _ in 0..copies {
                events.push((d, w[0], w[1] - w[0]));
            }
        }
    }
    let n = events.len();
    if n > 1 {
        for &(a, b) in &sc.shuffle {
            events.swap(a % n, b % n);
        }
    }

    let mut now = Instant::ZERO;
    let mut outcomes: HashMap<DropReason, u64> = HashMap::new();
    let (mut pending, mut completes, mut frags_completed) = (0u64, 0u64, 0u64);
    for (i, &(d, off, len)) in events.iter().enumerate() {
        now =
            Instant::from_nanos(now.as_nanos() + u64::from(sc.steps[i % sc.steps.len()]) * 10_000);
        if i % 7 == 0 {
            r.handle_timeout(now, &mut store, i % 4);
        }
        let data = &datas[d];
        let out = r.insert(
            now,
            &mut store,
            key(d as u64),
            u32::try_from(off).unwrap(),
            u32::try_from(data.len()).unwrap(),
            &data[off..off + len],
        );
        let s = &mut seen[d];
        s.inserts += 1;
        s.first_insert.get_or_insert(now);
        s.last_insert = now;
        match out {
            FragOutcome::Complete { buf, len } => {
                prop_assert_eq!(len, data.len());
                prop_assert!(
                    store.get(&buf) == data.as_slice(),
                    "datagram {} bytes differ",
                    d
                );
                store.free(buf);
                s.completions += 1;
                completes += 1;
                frags_completed += frags_of[d] as u64;
            }
            FragOutcome::Pending => pending += 1,
            FragOutcome::Dropped(reason) => {
                *outcomes.entry(reason).or_default() += 1;
                match reason {
                    DropReason::ReassemblyMemoryCap
                    | DropReason::ReassemblyContextCap
                    | DropReason::StoreFull
                    | DropReason::ReassemblyTooManyFragments => s.refused = true,
                    DropReason::ReassemblyDuplicateFragment | DropReason::ReassemblyStale => {}
                    other => prop_assert!(false, "unexpected drop {:?}", other),
                }
            }
        }
        r.check_invariants(&store, 0).map_err(TestCaseError::fail)?;
        prop_assert!(r.stats().bytes_held <= sc.mem_cap_bytes);
    }

    // Advance past every deadline and drain with a small budget: nothing survives.
    now += timeout;
    let mut rounds = 0;
    while r.handle_timeout(now, &mut store, 5) > 0 {
        rounds += 1;
        prop_assert!(rounds <= sc.max_contexts, "drain must end");
    }
    r.check_invariants(&store, 0).map_err(TestCaseError::fail)?;
    let st = r.stats();
    prop_assert_eq!(
        (st.contexts_live, st.tombstones_live, st.bytes_held),
        (0, 0, 0)
    );
    prop_assert_eq!(r.poll_timeout(), None);
    prop_assert_eq!((store.used_bytes(), store.live()), (0, 0));

    // Counters add up against what the test saw.
    prop_assert_eq!(st.fragments_in, n as u64);
    prop_assert_eq!(st.fragments_accepted, pending + completes);
    prop_assert_eq!(st.datagrams_completed, completes);
    prop_assert_eq!(
        st.datagrams_started,
        st.datagrams_completed + st.datagrams_dropped
    );
    // Every accepted fragment went into a completed datagram or was discarded with a drop.
    prop_assert_eq!(
        st.fragments_accepted,
        frags_completed + st.fragments_discarded
    );
    for (&reason, &count) in &outcomes {
        prop_assert_eq!(st.drops.get(reason), count, "{:?}", reason);
    }
    prop_assert_eq!(
        st.drops.get(DropReason::ReassemblyOverlap),
        0,
        "exact duplicates only"
    );

    // Every datagram: completed, or accounted for (lost fragment, refused, or timed out).
    for (d, s) in seen.iter().enumerate() {
        if s.completions > 0 || s.inserts == 0 {
            continue;
        }
        let span = s.last_insert - s.first_insert.unwrap_or(Instant::ZERO);
        prop_assert!(
            s.lossy || s.refused || span >= timeout,
            "datagram {} neither completed nor accounted for: {:?}",
            d,
            s
        );
        if !s.lossy && !s.refused {
            prop_assert!(st.drops.get(DropReason::ReassemblyTimeout) > 0);
        }
    }
    Ok(st.clone())
}

/// The scenario generator is not vacuous: over a fixed sample of scenarios, every outcome the
/// property is about happens many times.
#[test]
fn scenarios_reach_every_outcome() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut total = ReassemblyStats::default();
    for _ in 0..200 {
        let sc = scenario().new_tree(&mut runner).unwrap().current();
        let st = run_scenario(&sc).unwrap();
        total.datagrams_completed += st.datagrams_completed;
        total.datagrams_dropped += st.datagrams_dropped;
        total.drops.merge(&st.drops);
    }
    for reason in [
        DropReason::ReassemblyTimeout,
        DropReason::ReassemblyMemoryCap,
        DropReason::ReassemblyContextCap,
        DropReason::ReassemblyTooManyFragments,
        DropReason::ReassemblyDuplicateFragment,
        DropReason::ReassemblyStale,
        DropReason::StoreFull,
    ] {
        assert!(total.drops.get(reason) >= 5, "{reason}: {:?}", total.drops);
    }
    assert!(
        total.datagrams_completed > 500,
        "{}",
        total.datagrams_completed
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any permutation, duplication or loss of fragments, interleaved across datagrams, gives
    /// the original bytes or a counted drop; no state outlives its timeout; the memory cap
    /// holds at every step.
    #[test]
    fn prop_permute_duplicate_lose(sc in scenario()) {
        run_scenario(&sc)?;
    }

    /// Arbitrary op programs (random offsets, lengths, totals, timing, caps) against the
    /// reference model of `crate::fuzzing`: the same check the fuzzer runs, on random input.
    #[test]
    fn prop_random_programs_match_the_model(
        prog in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        crate::fuzzing::reassembly_ops(&prog);
    }

    /// With ample caps, no loss and no time passing, every datagram completes, exactly once,
    /// whatever the order and however many exact duplicates.
    #[test]
    fn prop_lossless_completes_everything(
        dgs in proptest::collection::vec(datagram(), 1..40),
        shuffle in proptest::collection::vec((0usize..10_000, 0usize..10_000), 0..600),
        dups in proptest::collection::vec(0u8..3, 400),
    ) {
        let mut r = Reassembler::new(ReassemblyConfig::default());
        let mut store = PacketStore::new(64 << 20, 65_536);
        let datas: Vec<Vec<u8>> = (0..dgs.len()).map(|i| payload(i as u64, dgs[i].0)).collect();
        let mut events = Vec::new();
        for (d, (len, cuts)) in dgs.iter().enumerate() {
            let mut b = vec![0];
            b.extend_from_slice(cuts);
            b.push(*len);
            for w in b.windows(2) {
                for _ in 0..=dups[events.len() % dups.len()] {
                    events.push((d, w[0], w[1] - w[0]));
                }
            }
        }
        let n = events.len();
        for &(a, b) in &shuffle {
            events.swap(a % n, b % n);
        }
        let mut completions = vec![0u32; dgs.len()];
        for &(d, off, len) in &events {
            let data = &datas[d];
            let out = r.insert(
                Instant::ZERO,
                &mut store,
                key(d as u64),
                u32::try_from(off).unwrap(),
                u32::try_from(data.len()).unwrap(),
                &data[off..off + len],
            );
            if let FragOutcome::Complete { buf, .. } = out {
                prop_assert!(store.get(&buf) == data.as_slice());
                store.free(buf);
                completions[d] += 1;
            }
        }
        // A duplicate that arrives after completion starts a new context that may complete
        // again with identical bytes (checked above) — so "at least once".
        prop_assert!(completions.iter().all(|&c| c >= 1), "{:?}", completions);
        r.check_invariants(&store, 0).map_err(TestCaseError::fail)?;
    }
}
