//! The IP reassembler's internal state: the context slab with its deadline list, and per
//! context a row of fragment pieces (sorted by offset) and a row of fragment buffers (in
//! arrival order).
//!
//! Owns: storage and O(1) list/slot bookkeeping, and the overlap/duplicate decision on a
//! context's sorted pieces. Does not own the rules (caps, timeouts, end consistency,
//! counters): those live in [`super::IpReassembler`].

use alloc::vec::Vec;

use super::parse::FragKey;
use crate::buffer::BufHandle;
use crate::time::Instant;

/// "No slot" in the intrusive lists.
pub(super) const NIL: u32 = u32::MAX;

/// `Ctx::total` while the last fragment has not arrived.
pub(super) const NO_TOTAL: u32 = u32::MAX;

/// What a slab slot holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Kind {
    /// On the free-slot list.
    Free,
    /// A datagram being reassembled: holds fragment buffers.
    Live,
    /// A datagram that was dropped whole: holds no buffer, keeps its key and its original
    /// deadline so that its remaining fragments are counted as stale.
    Tomb,
}

/// One accepted fragment: data bytes `[start, end)` of the fragmentable part, held in the
/// context's buffer number `buf` (arrival order). Offsets fit in `u16` because the rules
/// refuse any fragment whose end, plus its header, is above 65 535.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub(super) struct Piece {
    pub(super) start: u16,
    pub(super) end: u16,
    pub(super) buf: u16,
}

/// One reassembly context (or tombstone).
#[derive(Debug)]
pub(super) struct Ctx {
    pub(super) key: FragKey,
    /// `hash(key)`, kept for removal from the index without re-hashing.
    pub(super) hash: u64,
    /// First fragment's arrival + timeout. Never moved.
    pub(super) deadline: Instant,
    /// Length of the fragmentable part, known once the last fragment (MF clear) arrived;
    /// [`NO_TOTAL`] until then.
    pub(super) total: u32,
    /// Highest fragment end accepted.
    pub(super) max_end: u32,
    /// Data bytes received (sum of the accepted, disjoint pieces).
    pub(super) received: u32,
    /// Private-store bytes held by the fragment buffers (slot sizes).
    pub(super) held: u32,
    /// Header length stored in front of the offset-0 fragment's data; 0 until it arrived.
    pub(super) hdr_len: u16,
    /// IPv6: index in the header of the next-header byte to point at the fragmentable part.
    pub(super) nh_pos: u16,
    /// IPv6: the Fragment header's next-header value, from the offset-0 fragment.
    pub(super) next_header: u8,
    /// Accepted fragments: `pieces[row][..nfrags]`, `bufs[row][..nfrags]`.
    pub(super) nfrags: u16,
    pub(super) kind: Kind,
    /// Deadline list (oldest first) while `Live`/`Tomb`; `next` links the free list while
    /// `Free`.
    pub(super) prev: u32,
    pub(super) next: u32,
}

/// Where a new piece goes, or why it cannot.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Place {
    /// Insert at this index of the sorted pieces.
    At(usize),
    /// Same offset and length as an accepted piece.
    Duplicate,
    /// Overlaps an accepted piece without being an exact duplicate.
    Overlap,
}

/// The context slab: contexts and tombstones, a free-slot list, the deadline list, and a row
/// of `stride` pieces and `stride` buffer handles per slot.
///
/// Because every context gets the same timeout and time is monotonic, creation order is
/// deadline order: appending at the tail keeps the list sorted, the head is the earliest
/// deadline, and expiry pops from the head.
#[derive(Debug)]
pub(super) struct Slab {
    pub(super) ctx: Vec<Ctx>,
    pieces: Vec<Piece>,
    bufs: Vec<Option<BufHandle>>,
    pub(super) stride: usize,
    free_head: u32,
    pub(super) head: u32,
    tail: u32,
    /// Slots in use (`Live` + `Tomb`).
    pub(super) used: usize,
    capacity: usize,
}

impl Slab {
    /// A slab of `capacity` slots with rows of `stride` fragments. Every vector is reserved up
    /// front, so growing to `capacity` slots never reallocates.
    pub(super) fn new(capacity: usize, stride: usize) -> Self {
        let rows = capacity.saturating_mul(stride);
        Self {
            ctx: Vec::with_capacity(capacity),
            pieces: Vec::with_capacity(rows),
            bufs: Vec::with_capacity(rows),
            stride,
            free_head: NIL,
            head: NIL,
            tail: NIL,
            used: 0,
            capacity,
        }
    }

    /// `true` if every slot is in use.
    #[inline]
    pub(super) fn is_full(&self) -> bool {
        self.used >= self.capacity
    }

    /// Take a slot for a new, empty `Live` context of `key`, append it to the deadline list.
    /// The caller checked `!is_full()`.
    pub(super) fn alloc(&mut self, key: FragKey, hash: u64, deadline: Instant) -> u32 {
        let prev = self.tail;
        let fresh = Ctx {
            key,
            hash,
            deadline,
            total: NO_TOTAL,
            max_end: 0,
            received: 0,
            held: 0,
            hdr_len: 0,
            nh_pos: 0,
            next_header: 0,
            nfrags: 0,
            kind: Kind::Live,
            prev,
            next: NIL,
        };
        let idx = if self.free_head == NIL {
            // invariant: capacity < u32::MAX (clamped by the reassembler).
            let idx = u32::try_from(self.ctx.len()).unwrap_or(NIL);
            self.ctx.push(fresh);
            // Grow the rows to cover the new slot, within the reserved capacity.
            let rows = self.ctx.len() * self.stride;
            self.pieces.resize(rows, Piece::default());
            self.bufs.resize_with(rows, || None);
            idx
        } else {
            let idx = self.free_head;
            let c = &mut self.ctx[idx as usize];
            self.free_head = c.next;
            *c = fresh;
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

    /// Unlink slot `idx` from the deadline list and put it on the free list. Its buffers must
    /// already have been taken.
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
        c.kind = Kind::Free;
        c.prev = NIL;
        c.next = self.free_head;
        c.nfrags = 0;
        self.free_head = idx;
        self.used -= 1;
    }

    /// The accepted pieces of slot `idx`, sorted by start and disjoint.
    #[inline]
    pub(super) fn pieces(&self, idx: u32) -> &[Piece] {
        let base = idx as usize * self.stride;
        let n = usize::from(self.ctx[idx as usize].nfrags);
        &self.pieces[base..base + n]
    }

    /// The buffer of piece `p` of slot `idx`.
    #[inline]
    pub(super) fn buf(&self, idx: u32, p: Piece) -> Option<&BufHandle> {
        self.bufs[idx as usize * self.stride + usize::from(p.buf)].as_ref()
    }

    /// Take the buffer handles of slot `idx` out, one at a time (for freeing).
    #[inline]
    pub(super) fn take_buf(&mut self, idx: u32, i: usize) -> Option<BufHandle> {
        self.bufs[idx as usize * self.stride + i].take()
    }

    /// Where `[start, end)` would go among the pieces of slot `idx`: an exact duplicate, an
    /// overlap, or an insertion index. O(log n) by binary search (O(1) for in-order and
    /// reversed arrival); the accepted pieces are disjoint, so looking at the two neighbours
    /// of the insertion point decides.
    #[inline]
    pub(super) fn place(&self, idx: u32, start: u16, end: u16) -> Place {
        let ps = self.pieces(idx);
        let n = ps.len();
        let pos = match (ps.first(), ps.last()) {
            (_, Some(last)) if last.end <= start => n,
            (Some(first), _) if end <= first.start => 0,
            _ => ps.partition_point(|x| x.start < start),
        };
        if let Some(next) = ps.get(pos) {
            if next.start == start && next.end == end {
                return Place::Duplicate;
            }
            if next.start < end {
                return Place::Overlap;
            }
        }
        if pos > 0 && ps[pos - 1].end > start {
            return Place::Overlap;
        }
        Place::At(pos)
    }

    /// Record piece `[start, end)` at sorted index `pos` of slot `idx`, held in `buf`. The
    /// caller checked the place and that `nfrags < stride`.
    #[inline]
    pub(super) fn insert(&mut self, idx: u32, pos: usize, start: u16, end: u16, buf: BufHandle) {
        let base = idx as usize * self.stride;
        let c = &mut self.ctx[idx as usize];
        let n = usize::from(c.nfrags);
        debug_assert!(n < self.stride && pos <= n, "invariant: room in the row");
        c.nfrags += 1;
        // Buffers in arrival order (slot n), pieces sorted: shift the tail right by one.
        self.bufs[base + n] = Some(buf);
        let row = &mut self.pieces[base..=base + n];
        row.copy_within(pos..n, pos + 1);
        // invariant: n < stride <= MAX_FRAGMENTS_CAP fits in u16.
        row[pos] = Piece {
            start,
            end,
            buf: u16::try_from(n).unwrap_or(u16::MAX),
        };
    }
}
