//! Per-flow reorder and dedup buffer: datagrams in, datagrams out in sequence order, each
//! sequence number delivered at most once.
//!
//! Owns: the [`ReorderBuffer`] of one receive flow (a fixed ring of opaque handles `H`, bounded
//! by count and by time), its [`ReorderStats`], and [`hold_from_spread`], the rule that turns
//! the measured delay spread of a flow's links into its hold time. Does not own: the packet
//! bytes (the engine's packet store; `H` is its handle), reassembly (which runs before this and
//! uses [`ReorderBuffer::check`] to skip datagrams that would be dropped here anyway), the link
//! measurements (link health), or the flow table that keeps one buffer per receive flow.
//!
//! # Contract (ARCHITECTURE.md, "What the reassembler and the reorder buffer must guarantee",
//! points 5–7)
//!
//! - **Sequences.** Senders number each flow's datagrams from 0 (64-bit, never wraps in
//!   practice). A new buffer expects 0, so a reordered flow start is repaired like any other
//!   reordering. If the first datagram a buffer ever accepts lies beyond the window
//!   (`seq >= capacity`), the receiver joined mid-flow (it restarted, or the flow was re-learned):
//!   that sequence becomes the base, nothing is counted as a gap.
//! - **In order.** [`ReorderBuffer::poll_release`] returns the datagram at
//!   [`next_expected`](ReorderBuffer::next_expected) if it is held.
//! - **Gaps, by time.** If `next_expected` is missing but later datagrams are held, the buffer
//!   waits until the datagram that has been held longest (earliest arrival) has been held for
//!   `hold`; then every missing sequence below the lowest held one is given up at once (one
//!   subtraction, not a loop), the gap is counted ([`ReorderStats::gap_count`] events,
//!   [`ReorderStats::gap_seq_count`] sequences) and reported in [`Release::gap_before`], and
//!   release continues in order. A later gap is given up at once too while that old datagram
//!   is still held, so **no datagram is held longer than `hold`** (plus the caller's polling
//!   delay). `hold == 0` is pure dedup: release at once in order, give up any gap at once.
//! - **Gaps, by count (overflow).** The window is `capacity` sequences from `next_expected`.
//!   A datagram at `next_expected + capacity ..= next_expected + 2*capacity - 1` is accepted:
//!   the buffer gives up as few leading sequences as needed for it to fit (it sets an internal
//!   "release everything below X" marker), and `poll_release` then returns the held datagrams
//!   below X in order regardless of the hold ([`ReorderStats::overflow_release_count`]).
//!   Nothing held is ever lost.
//! - **Far ahead.** A datagram `2*capacity` or more ahead is rejected with
//!   [`DropReason::ReorderOutOfWindow`] and remembered as a resync candidate. A second far
//!   datagram within `capacity` of the candidate, arriving when nothing is held, confirms a
//!   real jump (a burst loss longer than the window, or a sender that skipped ahead): the
//!   buffer restarts at it, counting the skipped sequences as one gap and a
//!   [`ReorderStats::resync_count`]. One corrupt or stray sequence number therefore costs one
//!   dropped datagram, never the flow; a real jump costs one datagram.
//! - **Duplicates and late datagrams.** A sequence that is held, or that was delivered, is
//!   [`DropReason::DuplicateDatagram`]. A sequence that was given up as a gap is
//!   [`DropReason::LateDatagram`]: in-order delivery was promised, so it is dropped. The buffer
//!   remembers which of the last `capacity` sequences below `next_expected` were delivered and
//!   which were given up (one bit each). A sequence older than that is also counted as late: the
//!   buffer cannot prove it was delivered, and "duplicate" would claim the data reached the
//!   application.
//! - **Handles.** `H` is never dropped silently: every `H` given to [`ReorderBuffer::insert`]
//!   comes back exactly once, in [`Admit::Rejected`], in a [`Release`], or from
//!   [`ReorderBuffer::drain`]. Drain before dropping the buffer.
//!
//! # Call protocol
//!
//! Time is passed in and must not go backwards. After each [`insert`](ReorderBuffer::insert)
//! (or batch of inserts) and when the deadline from [`poll_timeout`](ReorderBuffer::poll_timeout)
//! passes, call [`poll_release`](ReorderBuffer::poll_release) until it returns `None`. Each
//! call does bounded work: O(1) for an in-order release; a gap give-up scans the occupancy
//! bitmap (at most `2*capacity/64` words) and marks the given-up range in the history bitmap
//! a word at a time. Callers that do not drain after each insert still get correct results,
//! but may hold up to `2*capacity` datagrams until they do, and an overflow beyond that is
//! treated as far ahead.
//!
//! # Why
//!
//! *Why a ring.* A flow's sequence numbers are dense, so the slot of a datagram is its sequence
//! modulo the ring size: insert, lookup and in-order release are an index, with no hashing, no
//! tree and no allocation after [`ReorderBuffer::new`]. All storage is boxed slices sized
//! once (no `Vec` that could grow). The ring has `2*capacity` slots so that an overflowing
//! datagram can be stored at once, while the sequences it forces out still wait in their slots
//! to be released in order. Arrival order is kept in a second fixed ring (a FIFO of
//! sequences, popped lazily) so that "the datagram held longest" is O(1) to find.
//!
//! *Why the hold follows the spread.* Reordering in braid comes from sending one flow over
//! links of different delay: a datagram sent on the slow link arrives up to the delay spread
//! (plus jitter) after a later one sent on the fast link. Holding for less than that declares
//! gaps that are not losses (late drops, TCP retransmits); holding much longer adds latency to
//! every datagram behind a real loss. So the hold is recomputed from the links in use
//! ([`hold_from_spread`]) and passed to each `poll_*` call, instead of being a fixed timeout
//! like the 800 ms of count rings or the fixed 25 ms of feed handlers; 25 ms stays the default
//! ceiling (`max_hold`), and the gap declaration is bounded by the measured spread below it.
//!
//! *Why overflow releases instead of dropping.* When more than `capacity` sequences are
//! outstanding, something must give. Dropping the new datagram would lose data that arrived;
//! evicting held ones would break the in-order promise. Giving up the oldest missing sequences
//! (the ones least likely to still arrive) keeps every datagram that arrived, keeps order, and
//! bounds memory; the gap is counted like a timeout gap. Feed handlers do the same with their
//! "gap by count" rule (PEERS.md).

mod metrics;
#[cfg(test)]
mod tests;

pub use metrics::{HOLD_BUCKETS, ReorderStats, hold_bucket_upper_ns};

use alloc::boxed::Box;
use core::fmt;
use core::time::Duration;

use crate::time::Instant;
use crate::types::DropReason;

/// Smallest window: a capacity below this is raised to it.
pub const MIN_CAPACITY: usize = 2;
/// Largest window: a capacity above this is lowered to it (memory per flow is bounded).
pub const MAX_CAPACITY: usize = 1 << 20;
/// Safety margin added to the measured spread by [`hold_from_spread`]: covers the
/// serialisation of one 1500-byte datagram down to ~120 Mbit/s and the caller's polling
/// granularity.
pub const HOLD_MARGIN: Duration = Duration::from_micros(100);

/// Configuration of one flow's reorder buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReorderConfig {
    /// Reorder window in datagrams: how far past the next expected sequence a datagram may
    /// land before leading sequences are given up. Rounded up to a power of two and clamped to
    /// `MIN_CAPACITY..=MAX_CAPACITY`. Default 1024 (PEERS.md: 1024 packets). Memory per flow,
    /// allocated once: `capacity * (2 * (size_of::<H>() + 16) + 33)` bytes, about 80 KiB at the
    /// default with an 8-byte handle (a `2 * capacity` slot ring, a `4 * capacity` arrival FIFO
    /// of `u64`, and three bits per unit of capacity).
    pub capacity: usize,
    /// Lower bound of the hold that [`hold_from_spread`] computes. Default 0.
    pub min_hold: Duration,
    /// Upper bound of the hold that [`hold_from_spread`] computes: the longest a datagram
    /// waits for a missing predecessor. Default 25 ms (the feed-handler gap time, PEERS.md).
    pub max_hold: Duration,
}

impl Default for ReorderConfig {
    fn default() -> Self {
        Self {
            capacity: 1024,
            min_hold: Duration::ZERO,
            max_hold: Duration::from_millis(25),
        }
    }
}

impl ReorderConfig {
    /// The window actually used: `capacity` clamped and rounded up to a power of two.
    #[must_use]
    pub fn effective_capacity(&self) -> usize {
        self.capacity
            .clamp(MIN_CAPACITY, MAX_CAPACITY)
            .next_power_of_two()
    }
}

/// The hold time for a flow whose links in use differ in one-way delay by `spread` and
/// jitter by up to `jitter` each:
///
/// `hold = clamp(spread + 2 * jitter + HOLD_MARGIN, min_hold, max_hold)` (if `min_hold >
/// max_hold`, `max_hold` wins).
///
/// Why this formula: a datagram sent on the slowest link is overtaken by later ones sent on the
/// fastest link by at most the difference of their delays. `spread` is that difference for
/// the smoothed delays; the slow packet may be late by one jitter and the fast one early by
/// one jitter, hence `2 * jitter` (jitter as a mean deviation, as RFC 6298 keeps RTTVAR; we
/// use 2 and not RFC 6298's 4 because a late give-up costs one datagram while a longer hold
/// delays every datagram behind each real loss). [`HOLD_MARGIN`] covers serialisation and
/// polling granularity. For a duplicated flow (A/B) the same bound applies: when the fast
/// copy is lost, the slow copy arrives `spread` later. A single link has `spread == 0`.
#[must_use]
pub fn hold_from_spread(spread: Duration, jitter: Duration, config: &ReorderConfig) -> Duration {
    let raw = spread
        .saturating_add(jitter.saturating_mul(2))
        .saturating_add(HOLD_MARGIN);
    raw.max(config.min_hold).min(config.max_hold)
}

/// The outcome of [`ReorderBuffer::insert`].
#[derive(Debug)]
#[must_use = "a rejected handle must be freed by the caller"]
pub enum Admit<H> {
    /// The datagram is held; it comes back from [`ReorderBuffer::poll_release`] (or
    /// [`ReorderBuffer::drain`]).
    Accepted,
    /// The datagram is not held; the handle is returned to be freed, with the reason
    /// ([`DropReason::DuplicateDatagram`], [`DropReason::LateDatagram`] or
    /// [`DropReason::ReorderOutOfWindow`]). Already counted in [`ReorderStats`].
    Rejected(H, DropReason),
}

/// One datagram released in order by [`ReorderBuffer::poll_release`].
#[derive(Debug)]
pub struct Release<H> {
    /// Its sequence number.
    pub seq: u64,
    /// The handle given to [`ReorderBuffer::insert`].
    pub item: H,
    /// Sequences given up just before this one (0 if none): the feed-handler gap report.
    pub gap_before: u64,
    /// Time from its arrival (insert) to this release.
    pub held_for: Duration,
}

/// Why the pending gap was given up; the largest cause wins when runs merge.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum GapCause {
    None,
    Timeout,
    Overflow,
    Resync,
}

#[derive(Debug)]
struct Slot<H> {
    item: H,
    arrival: Instant,
    /// It arrived as `next_expected` (did not wait for a predecessor).
    in_order: bool,
}

/// The reorder and dedup buffer of one receive flow. See the module doc for the rules.
///
/// Call protocol: getters (`check`, `held`, `next_expected`, `stats`, `poll_timeout`) any
/// time; `insert` per datagram; then `poll_release` until `None`; `drain` when the flow is
/// removed. `now` never goes backwards.
pub struct ReorderBuffer<H> {
    /// Window `C` (power of two).
    cap: u64,
    /// `2C - 1`: mask of the slot ring.
    ring_mask: u64,
    /// `2C` slots, indexed by `seq & ring_mask`; every held seq is in
    /// `next_expected .. next_expected + 2C`.
    slots: Box<[Option<Slot<H>>]>,
    /// One bit per slot: held. Lets a gap give-up find the lowest held seq a word at a time.
    occupied: Box<[u64]>,
    /// `C` bits indexed by `seq & (C - 1)` for `seq` in `next_expected - C .. next_expected`:
    /// 1 = given up as a gap, 0 = delivered.
    given_up: Box<[u64]>,
    /// Accepted seqs in arrival order (`4C` entries), popped lazily: the front is always a
    /// held seq when anything is held (so it is the earliest arrival).
    fifo: Box<[u64]>,
    fifo_head: usize,
    fifo_len: usize,
    next_expected: u64,
    /// Overflow marker: everything below it is released regardless of the hold.
    flush_to: u64,
    held: usize,
    /// Something was ever accepted (before that, a far first seq becomes the base).
    started: bool,
    resync_candidate: Option<u64>,
    /// Sequences given up and not yet reported in a `Release`.
    pending_gap: u64,
    pending_cause: GapCause,
    stats: ReorderStats,
}

impl<H> fmt::Debug for ReorderBuffer<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReorderBuffer")
            .field("capacity", &self.cap)
            .field("next_expected", &self.next_expected)
            .field("flush_to", &self.flush_to)
            .field("held", &self.held)
            .field("pending_gap", &self.pending_gap)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Drains every held handle, lowest sequence first (see [`ReorderBuffer::drain`]).
#[derive(Debug)]
pub struct Drain<'a, H> {
    buf: &'a mut ReorderBuffer<H>,
}

impl<H> Iterator for Drain<'_, H> {
    type Item = H;
    fn next(&mut self) -> Option<H> {
        self.buf.pop_lowest()
    }
}

impl<H> ReorderBuffer<H> {
    /// A buffer for one flow, expecting sequence 0. Allocates all its memory here, once.
    #[must_use]
    pub fn new(config: &ReorderConfig) -> Self {
        let cap = config.effective_capacity();
        let ring = cap * 2;
        Self {
            cap: cap as u64,
            ring_mask: ring as u64 - 1,
            slots: (0..ring).map(|_| None).collect(),
            occupied: alloc::vec![0; ring.div_ceil(64)].into_boxed_slice(),
            given_up: alloc::vec![0; cap.div_ceil(64)].into_boxed_slice(),
            fifo: alloc::vec![0; ring * 2].into_boxed_slice(),
            fifo_head: 0,
            fifo_len: 0,
            next_expected: 0,
            flush_to: 0,
            held: 0,
            started: false,
            resync_candidate: None,
            pending_gap: 0,
            pending_cause: GapCause::None,
            stats: ReorderStats::default(),
        }
    }

    /// The window in datagrams (the configured capacity, rounded).
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.cap as usize
    }

    /// Datagrams held now.
    #[must_use]
    pub fn held(&self) -> usize {
        self.held
    }

    /// The lowest sequence not yet delivered nor given up.
    #[must_use]
    pub fn next_expected(&self) -> u64 {
        self.next_expected
    }

    /// Counters of this flow.
    #[must_use]
    pub fn stats(&self) -> &ReorderStats {
        &self.stats
    }

    /// Cheap pre-check, used before reassembly so that a datagram this buffer would drop is
    /// not reassembled: `Some(DuplicateDatagram)` if `seq` is held or was delivered,
    /// `Some(LateDatagram)` if it was given up as a gap (or is too old to know), `None` if
    /// [`insert`](Self::insert) would decide (accept, or far ahead). Counts nothing: a caller
    /// that drops on `Some` reports it with [`count_drop`](Self::count_drop).
    #[must_use]
    pub fn check(&self, seq: u64) -> Option<DropReason> {
        if seq >= self.next_expected {
            let off = seq - self.next_expected;
            if off <= self.ring_mask && self.is_held(seq) {
                return Some(DropReason::DuplicateDatagram);
            }
            return None;
        }
        if self.next_expected - seq <= self.cap && !self.history_given_up(seq) {
            Some(DropReason::DuplicateDatagram)
        } else {
            Some(DropReason::LateDatagram)
        }
    }

    /// Count a drop decided from [`check`](Self::check) in this flow's stats
    /// (`DuplicateDatagram`, `LateDatagram`, `ReorderOutOfWindow`; other reasons are not
    /// reorder outcomes and are ignored).
    pub fn count_drop(&mut self, reason: DropReason) {
        let s = &mut self.stats;
        match reason {
            DropReason::DuplicateDatagram => s.duplicate_count += 1,
            DropReason::LateDatagram => s.late_count += 1,
            DropReason::ReorderOutOfWindow => s.out_of_window_count += 1,
            _ => {}
        }
    }

    /// Offer datagram `seq` (its handle `item`) that arrived at `now`. Either holds it
    /// (`Accepted`; it comes back from [`poll_release`](Self::poll_release)) or hands the
    /// handle back with the reason (counted). Never allocates.
    pub fn insert(&mut self, now: Instant, seq: u64, item: H) -> Admit<H> {
        if let Some(reason) = self.check(seq) {
            self.count_drop(reason);
            return Admit::Rejected(item, reason);
        }
        // check() returned None, so seq >= next_expected.
        let off = seq - self.next_expected;
        if !self.started && off >= self.cap {
            // The first datagram ever lands beyond the window: we joined mid-flow.
            self.rebase(seq, false);
        } else if off > self.ring_mask {
            let confirmed = matches!(self.resync_candidate,
                Some(c) if self.held == 0 && c.abs_diff(seq) < self.cap);
            if !confirmed {
                self.resync_candidate = Some(seq);
                self.count_drop(DropReason::ReorderOutOfWindow);
                return Admit::Rejected(item, DropReason::ReorderOutOfWindow);
            }
            self.rebase(seq, true);
        } else if seq >= self.next_expected.max(self.flush_to) + self.cap {
            // Overflow: give up as few leading sequences as needed for seq to fit.
            self.flush_to = seq - self.cap + 1;
        }
        let in_order = seq == self.next_expected;
        let idx = seq & self.ring_mask;
        self.slots[idx as usize] = Some(Slot {
            item,
            arrival: now,
            in_order,
        });
        set_bit(&mut self.occupied, idx, true);
        self.held += 1;
        self.started = true;
        self.stats.accepted_count += 1;
        self.fifo_push(seq);
        Admit::Accepted
    }

    /// The next datagram in order, if it may be released at `now` with hold time `hold`
    /// (see the module doc): the head if held; else, if anything is held, the lowest held one
    /// once the leading gap is given up by overflow or because the datagram held longest has
    /// waited `hold`. Call until `None`. Bounded work per call, no allocation.
    pub fn poll_release(&mut self, now: Instant, hold: Duration) -> Option<Release<H>> {
        if self.held == 0 {
            return None;
        }
        if self.next_expected < self.flush_to && !self.is_held(self.next_expected) {
            let first = self.first_held().expect("invariant: held > 0");
            self.give_up_to(first.min(self.flush_to), GapCause::Overflow);
        }
        if !self.is_held(self.next_expected) {
            let oldest = self.oldest_arrival().unwrap_or(Instant::ZERO);
            if now.saturating_duration_since(oldest) < hold {
                return None;
            }
            let first = self.first_held().expect("invariant: held > 0");
            self.give_up_to(first, GapCause::Timeout);
        }
        Some(self.release_head(now))
    }

    /// When [`poll_release`](Self::poll_release) will next have something to return if
    /// nothing else arrives: `None` if nothing is held; the earliest arrival (a time not after
    /// the last `now`, meaning "now") if the head is releasable; else the instant the leading
    /// gap will be given up (earliest arrival + `hold`).
    #[must_use]
    pub fn poll_timeout(&self, hold: Duration) -> Option<Instant> {
        if self.held == 0 {
            return None;
        }
        let oldest = self.oldest_arrival().unwrap_or(Instant::ZERO);
        if self.is_held(self.next_expected) || self.next_expected < self.flush_to {
            Some(oldest)
        } else {
            Some(oldest.saturating_add(hold))
        }
    }

    /// Take every held handle back (lowest sequence first), to free them when the flow is
    /// removed. Drained sequences count as never received ([`ReorderStats::drained_count`]);
    /// `next_expected` is unchanged. Work is bounded by the window per item.
    pub fn drain(&mut self) -> Drain<'_, H> {
        Drain { buf: self }
    }

    fn pop_lowest(&mut self) -> Option<H> {
        let seq = self.first_held()?;
        let idx = seq & self.ring_mask;
        let slot = self.slots[idx as usize]
            .take()
            .expect("invariant: occupied bit matches slot");
        set_bit(&mut self.occupied, idx, false);
        self.held -= 1;
        self.stats.drained_count += 1;
        self.fifo_clean_front();
        Some(slot.item)
    }

    fn release_head(&mut self, now: Instant) -> Release<H> {
        let seq = self.next_expected;
        let idx = seq & self.ring_mask;
        let slot = self.slots[idx as usize]
            .take()
            .expect("invariant: the head is held");
        set_bit(&mut self.occupied, idx, false);
        set_bit(&mut self.given_up, seq & (self.cap - 1), false);
        self.next_expected = seq + 1;
        self.held -= 1;
        let gap_before = core::mem::take(&mut self.pending_gap);
        let cause = core::mem::replace(&mut self.pending_cause, GapCause::None);
        let held_ns = now.as_nanos().saturating_sub(slot.arrival.as_nanos());
        let s = &mut self.stats;
        s.delivered_count += 1;
        if slot.in_order {
            s.in_order_count += 1;
        } else {
            s.reordered_count += 1;
        }
        if gap_before > 0 {
            match cause {
                GapCause::Timeout => s.timeout_release_count += 1,
                GapCause::Overflow => s.overflow_release_count += 1,
                GapCause::Resync | GapCause::None => {}
            }
        }
        s.record_hold(held_ns);
        self.fifo_clean_front();
        Release {
            seq,
            item: slot.item,
            gap_before,
            held_for: Duration::from_nanos(held_ns),
        }
    }

    /// Give up every sequence in `next_expected .. to` (none is held) by arithmetic.
    fn give_up_to(&mut self, to: u64, cause: GapCause) {
        let n = to.saturating_sub(self.next_expected);
        if n == 0 {
            return;
        }
        // Only the last C sequences are remembered.
        let from = self.next_expected.max(to - n.min(self.cap));
        set_range(&mut self.given_up, self.cap, from, to - from);
        if self.pending_gap == 0 {
            self.stats.gap_count += 1;
        }
        self.pending_gap += n;
        self.pending_cause = self.pending_cause.max(cause);
        self.stats.gap_seq_count += n;
        self.next_expected = to;
    }

    /// Restart the window at `seq` (nothing is held). `count` = the flow had started, so the
    /// skipped sequences are a gap (a resync); otherwise we joined mid-flow.
    fn rebase(&mut self, seq: u64, count: bool) {
        debug_assert_eq!(self.held, 0);
        if count {
            self.give_up_to(seq, GapCause::Resync);
            self.stats.resync_count += 1;
        }
        self.next_expected = seq;
        self.flush_to = seq;
        self.resync_candidate = None;
        // Everything below the new base is unknown: a straggler from before is late.
        self.given_up.fill(u64::MAX);
        self.fifo_len = 0;
    }

    fn is_held(&self, seq: u64) -> bool {
        get_bit(&self.occupied, seq & self.ring_mask)
    }

    fn history_given_up(&self, seq: u64) -> bool {
        get_bit(&self.given_up, seq & (self.cap - 1))
    }

    /// The lowest held sequence: a scan of the occupancy bitmap from `next_expected`, at most
    /// `2C/64 + 1` words.
    fn first_held(&self) -> Option<u64> {
        if self.held == 0 {
            return None;
        }
        let words = self.occupied.len();
        let start = self.next_expected & self.ring_mask;
        let mut w = (start >> 6) as usize;
        let mut word = self.occupied[w] & (u64::MAX << (start & 63));
        for _ in 0..=words {
            if word != 0 {
                let idx = (w as u64) * 64 + u64::from(word.trailing_zeros());
                return Some(self.next_expected + (idx.wrapping_sub(start) & self.ring_mask));
            }
            w = (w + 1) % words;
            word = self.occupied[w];
        }
        None
    }

    fn oldest_arrival(&self) -> Option<Instant> {
        if self.fifo_len == 0 {
            return None;
        }
        let seq = self.fifo[self.fifo_head];
        self.slots[(seq & self.ring_mask) as usize]
            .as_ref()
            .map(|s| s.arrival)
    }

    fn fifo_push(&mut self, seq: u64) {
        let mask = self.fifo.len() - 1;
        if self.fifo_len == self.fifo.len() {
            // Not reachable: behind the (live) front there are at most 2C live entries and fewer
            // than 2C stale ones (seqs released while the front waits lie in the 2C below it).
            // If it were, losing the oldest entry only lets one gap wait longer; overflow still
            // bounds it.
            self.fifo_head = (self.fifo_head + 1) & mask;
            self.fifo_len -= 1;
            self.fifo_clean_front();
        }
        self.fifo[(self.fifo_head + self.fifo_len) & mask] = seq;
        self.fifo_len += 1;
    }

    /// Pop entries that are no longer held (released, given up or drained); amortised O(1):
    /// each entry is popped once.
    fn fifo_clean_front(&mut self) {
        let mask = self.fifo.len() - 1;
        while self.fifo_len > 0 {
            let seq = self.fifo[self.fifo_head];
            if seq >= self.next_expected && self.is_held(seq) {
                break;
            }
            self.fifo_head = (self.fifo_head + 1) & mask;
            self.fifo_len -= 1;
        }
    }
}

fn get_bit(bits: &[u64], idx: u64) -> bool {
    (bits[(idx >> 6) as usize] >> (idx & 63)) & 1 == 1
}

fn set_bit(bits: &mut [u64], idx: u64, value: bool) {
    let word = &mut bits[(idx >> 6) as usize];
    let m = 1u64 << (idx & 63);
    if value {
        *word |= m;
    } else {
        *word &= !m;
    }
}

/// Set the bits of sequences `from .. from + n` in a ring of `nbits` bits (`nbits` a power of
/// two, `n <= nbits`), a word at a time.
fn set_range(bits: &mut [u64], nbits: u64, from: u64, n: u64) {
    let mut idx = from & (nbits - 1);
    let mut left = n;
    while left > 0 {
        let bit = idx & 63;
        let k = left.min(64 - bit).min(nbits - idx);
        let m = if k == 64 {
            u64::MAX
        } else {
            ((1u64 << k) - 1) << bit
        };
        bits[(idx >> 6) as usize] |= m;
        left -= k;
        idx = (idx + k) & (nbits - 1);
    }
}
