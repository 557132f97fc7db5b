//! The reassembler's internal state: the context slab with its deadline list and the
//! per-context fragment ranges (inline for the first few, then a per-slot spill array).
//!
//! Owns: storage and O(1) list/slot bookkeeping. Does not own the reassembly rules (overlap,
//! caps, timeout policy, counters): those live in [`super::Reassembler`].

use alloc::vec::Vec;

use super::DatagramKey;
use crate::buffer::BufHandle;
use crate::time::Instant;

/// "No slot" in the intrusive lists.
pub(super) const NIL: u32 = u32::MAX;

/// What a slab slot holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Kind {
    /// On the free-slot list.
    Free,
    /// A datagram being reassembled: holds a store buffer.
    Live,
    /// A datagram that was dropped (overlap, too many fragments, total mismatch): holds no
    /// memory, keeps its id and its original deadline so that its remaining fragments are
    /// counted as stale instead of opening a new context.
    Tomb,
}

/// Fragment ranges kept inside the context itself; a datagram with more fragments spills them
/// to the slab's per-slot spill array.
pub(super) const INLINE_RANGES: usize = 8;

/// One reassembly context (or tombstone): two cache lines (header, then the inline ranges),
/// since with thousands of datagrams outstanding every fragment's first touch of its context
/// is a cache miss, and a datagram of up to 8 fragments needs nothing else.
#[derive(Debug)]
#[repr(align(128))]
pub(super) struct Ctx {
    pub(super) key: DatagramKey,
    /// `hash(key)`, kept for removal from the index without re-hashing; 0 until computed
    /// (a context that is never indexed is never hashed).
    pub(super) hash: u64,
    /// First fragment's arrival + timeout. Never moved.
    pub(super) deadline: Instant,
    /// The datagram's buffer (`Live` only).
    pub(super) buf: Option<BufHandle>,
    /// Total datagram length, bytes.
    pub(super) total_len: u32,
    /// Bytes received so far (sum of the accepted, disjoint fragment lengths).
    pub(super) received: u32,
    /// Accepted fragments; their ranges are `inline[..nfrags]` while `nfrags <=
    /// INLINE_RANGES`, else `spill[slot * stride ..][..nfrags]`.
    pub(super) nfrags: u16,
    pub(super) kind: Kind,
    /// In the hash index (else it is the reassembler's last-context memo).
    pub(super) indexed: bool,
    /// Deadline list (oldest first) while `Live`/`Tomb`; `next` links the free list while
    /// `Free`.
    pub(super) prev: u32,
    pub(super) next: u32,
    /// The first `INLINE_RANGES` ranges, sorted by start.
    inline: [Range; INLINE_RANGES],
}

const _: () = assert!(core::mem::size_of::<Ctx>() == 128, "Ctx is two cache lines");

/// What [`Slab::accept`] decided about a fragment.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Accept {
    /// Recorded; `complete` if every byte of the datagram is now present.
    Placed { complete: bool },
    /// Same offset and length as an accepted fragment.
    Duplicate,
    /// Overlaps an accepted fragment without being an exact duplicate.
    Overlap,
    /// Would be one fragment more than the cap.
    TooMany,
    /// Disagrees with the context on the datagram's total length.
    TotalMismatch,
}

/// A received byte range `[start, end)` of one accepted fragment.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub(super) struct Range {
    pub(super) start: u32,
    pub(super) end: u32,
}

/// The context slab: contexts and tombstones, a free-slot list, and the deadline list.
///
/// Because every context gets the same timeout and time is monotonic, creation order is
/// deadline order: appending at the tail keeps the list sorted, the head is the earliest
/// deadline, and expiry pops from the head — no heap, no timer wheel, no scan.
#[derive(Debug)]
pub(super) struct Slab {
    pub(super) ctx: Vec<Ctx>,
    /// `stride` ranges per slot for contexts with more than `INLINE_RANGES` fragments. Grown
    /// (within its reserved capacity) up to the highest slot that ever spilled.
    spill: Vec<Range>,
    stride: usize,
    free_head: u32,
    pub(super) head: u32,
    tail: u32,
    /// Slots in use (`Live` + `Tomb`).
    pub(super) used: usize,
    capacity: usize,
}

impl Slab {
    /// A slab of `capacity` slots with room for `stride` ranges each. Both vectors are reserved
    /// up front so that growing to `capacity` never reallocates.
    pub(super) fn new(capacity: usize, stride: usize) -> Self {
        let spill = if stride > INLINE_RANGES {
            capacity.saturating_mul(stride)
        } else {
            0
        };
        Self {
            ctx: Vec::with_capacity(capacity),
            spill: Vec::with_capacity(spill),
            stride,
            free_head: NIL,
            head: NIL,
            tail: NIL,
            used: 0,
            capacity,
        }
    }

    /// Room for ranges per slot (fixed at construction).
    pub(super) fn stride(&self) -> usize {
        self.stride
    }

    /// `true` if every slot is in use.
    #[inline]
    pub(super) fn is_full(&self) -> bool {
        self.used >= self.capacity
    }

    /// Take a slot, fill it as a new `Live` context holding its first fragment's range
    /// `first`, append it to the deadline list. The caller checked `!is_full()`.
    #[inline]
    pub(super) fn alloc(
        &mut self,
        key: DatagramKey,
        hash: u64,
        deadline: Instant,
        buf: BufHandle,
        total_len: u32,
        first: Range,
    ) -> u32 {
        let prev = self.tail;
        let idx = if self.free_head == NIL {
            // invariant: capacity < u32::MAX (clamped in Reassembler::new).
            let idx = u32::try_from(self.ctx.len()).unwrap_or(NIL);
            self.ctx.push(Ctx {
                key,
                hash,
                deadline,
                buf: Some(buf),
                total_len,
                received: first.end - first.start,
                nfrags: 1,
                kind: Kind::Live,
                indexed: false,
                prev,
                next: NIL,
                inline: [first; INLINE_RANGES],
            });
            idx
        } else {
            let idx = self.free_head;
            let c = &mut self.ctx[idx as usize];
            self.free_head = c.next;
            // Field by field: the inline ranges are left as they are (only `inline[..nfrags]`
            // is ever read), which saves rewriting a cache line per datagram.
            c.key = key;
            c.hash = hash;
            c.deadline = deadline;
            c.buf = Some(buf);
            c.total_len = total_len;
            c.received = first.end - first.start;
            c.nfrags = 1;
            c.inline[0] = first;
            c.kind = Kind::Live;
            c.indexed = false;
            c.prev = prev;
            c.next = NIL;
            idx
        };
        if self.tail == NIL {
            self.head = idx;
        } else {
            self.ctx[self.tail as usize].next = idx;
        }
        self.tail = idx;
        self.used += 1;
        idx
    }

    /// Unlink slot `idx` from the deadline list and put it on the free list. Its buffer must
    /// already have been taken.
    #[inline]
    pub(super) fn release(&mut self, idx: u32) {
        let (prev, next) = {
            let c = &self.ctx[idx as usize];
            (c.prev, c.next)
        };
        if prev == NIL {
            self.head = next;
        } else {
            self.ctx[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.ctx[next as usize].prev = prev;
        }
        let c = &mut self.ctx[idx as usize];
        debug_assert!(c.buf.is_none(), "invariant: buffer taken before release");
        c.kind = Kind::Free;
        c.prev = NIL;
        c.next = self.free_head;
        c.nfrags = 0;
        self.free_head = idx;
        self.used -= 1;
    }

    /// The accepted fragment ranges of slot `idx` (sorted by start, disjoint).
    #[cfg(any(test, fuzzing, feature = "fuzzing"))]
    pub(super) fn ranges(&self, idx: u32) -> &[Range] {
        let c = &self.ctx[idx as usize];
        let n = usize::from(c.nfrags);
        if n <= INLINE_RANGES {
            &c.inline[..n]
        } else {
            let base = idx as usize * self.stride;
            &self.spill[base..base + n]
        }
    }

    /// The fast path of `insert`: if slot `idx` is a live context of `key`, before its
    /// deadline, of the same total length, with room for another inline range, and the
    /// fragment (`len > 0` bytes at `offset`) starts at or after the end of its last range and
    /// ends inside the total, record the range and return `Some(complete)`. These are exactly
    /// the conditions under which the general path would accept the fragment without a shift:
    /// not empty, not past the end, no overlap (ranges are sorted, so the last one ends
    /// last), hence no duplicate either, and under the fragment cap. Otherwise `None`, and
    /// nothing is changed.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(super) fn try_append(
        &mut self,
        idx: u32,
        key: DatagramKey,
        now: Instant,
        offset: u32,
        total_len: u32,
        len: usize,
        max: u16,
    ) -> Option<bool> {
        let c = &mut self.ctx[idx as usize];
        let n = usize::from(c.nfrags);
        if c.key != key
            || c.kind != Kind::Live
            || now >= c.deadline
            || c.total_len != total_len
            || n == 0
            || n >= INLINE_RANGES
            || c.nfrags >= max
            || len == 0
            || offset < c.inline[n - 1].end
        {
            return None;
        }
        let end = u32::try_from(u64::from(offset) + len as u64).ok()?;
        if end > total_len {
            return None;
        }
        c.inline[n] = Range { start: offset, end };
        c.nfrags += 1;
        c.received += end - offset;
        Some(c.received == c.total_len)
    }

    /// Check fragment `r` (of a datagram of `total_len` bytes) against live context `idx` and,
    /// if it passes, record it: the range is inserted and `received` updated. Nothing is
    /// recorded unless the verdict is `Placed`. One borrow of the context for all of it.
    #[inline(always)]
    pub(super) fn accept(&mut self, idx: u32, r: Range, total_len: u32, max: u16) -> Accept {
        let c = &mut self.ctx[idx as usize];
        if total_len != c.total_len {
            return Accept::TotalMismatch;
        }
        let n = usize::from(c.nfrags);
        let base = idx as usize * self.stride;
        let ranges: &[Range] = if n <= INLINE_RANGES {
            &c.inline[..n]
        } else {
            &self.spill[base..base + n]
        };
        // In order (append) and reversed (prepend) are the common cases; else binary search.
        let pos = match (ranges.first(), ranges.last()) {
            (_, Some(last)) if last.end <= r.start => n,
            (Some(first), _) if r.end <= first.start => 0,
            _ => ranges.partition_point(|x| x.start < r.start),
        };
        if let Some(next) = ranges.get(pos) {
            if *next == r {
                return Accept::Duplicate;
            }
            if next.start < r.end {
                return Accept::Overlap;
            }
        }
        if pos > 0 && ranges[pos - 1].end > r.start {
            return Accept::Overlap;
        }
        if c.nfrags >= max {
            return Accept::TooMany;
        }
        c.received += r.end - r.start;
        c.nfrags += 1;
        let complete = c.received == c.total_len;
        if n < INLINE_RANGES {
            insert_at(&mut c.inline[..=n], pos, r);
        } else {
            if n == INLINE_RANGES {
                // Spill: move the inline ranges to this slot's row of the spill array, growing
                // the array (within its reserved capacity: no reallocation) to cover the row.
                if self.spill.len() < base + self.stride {
                    self.spill.resize(base + self.stride, Range::default());
                }
                self.spill[base..base + n].copy_from_slice(&c.inline);
            }
            insert_at(&mut self.spill[base..=base + n], pos, r);
        }
        Accept::Placed { complete }
    }
}

/// Insert `r` at `pos` into `slice`, whose last element is free: shift the tail right by one.
/// A handful of entries, so a plain loop beats a call to memmove; appending shifts nothing.
#[inline(always)]
fn insert_at(slice: &mut [Range], pos: usize, r: Range) {
    let mut i = slice.len() - 1;
    while i > pos {
        slice[i] = slice[i - 1];
        i -= 1;
    }
    slice[pos] = r;
}
