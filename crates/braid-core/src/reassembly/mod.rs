//! Bounded, attack-proof reassembly of braid fragments.
//!
//! Owns: turning the fragments of one braid datagram (keyed by flow id + 64-bit datagram
//! sequence) back into the datagram, in one [`PacketStore`] buffer, with every guarantee of
//! ARCHITECTURE.md ("What the reassembler and the reorder buffer must guarantee", points 1–3,
//! 6, 7). Does not own: parsing the braid header (braid-wire), which NIC a fragment came from
//! (the engine hands every fragment of a flow to the flow's one owner, point 4), re-ordering
//! and de-duplicating whole datagrams (`crate::reorder`), nor freeing completed datagrams
//! (their handle leaves the reassembler with [`FragOutcome::Complete`]). Standard IPv4/IPv6
//! fragmentation (RFC 791/8200) is a separate concern: this module keys on braid's 64-bit id,
//! never on the 16-bit IP id that wraps in 79 ms at 10 Gbit/s (RFC 4963).
//!
//! # Call protocol
//!
//! `insert` for every fragment, with non-decreasing `now`; `poll_timeout` says when to call
//! `handle_timeout`; `handle_timeout(now, store, budget)` expires at most `budget` contexts per
//! call (call again while it returns `budget`). `insert` is O(1) plus O(log n) to place a
//! fragment among the n (≤ `max_fragments`) already received; `handle_timeout` is O(budget).
//!
//! # The rules, in the order they are checked (all before any byte is copied)
//!
//! 1. Fragment-local checks, no state touched: zero length → `ReassemblyZeroLength`; total above
//!    `max_datagram_bytes` → `ReassemblyTooLarge`; `offset + len > total` → `ReassemblyPastEnd`.
//!    Only the fragment is dropped.
//! 2. A key whose datagram was dropped and whose tombstone still stands → `ReassemblyStale`.
//! 3. A new key: a fragment that is the whole datagram (`offset 0, len == total`) completes at
//!    once without a context. Otherwise the context cap (`ReassemblyContextCap`) and the memory
//!    cap (`ReassemblyMemoryCap`) are checked and the *new* datagram is refused at the cap; live
//!    contexts are never evicted. A full [`PacketStore`] → `StoreFull`.
//! 4. An existing context: a different total (two different ends) → the whole datagram is
//!    dropped, `ReassemblyTotalMismatch`. Same offset and length as an accepted fragment →
//!    only the duplicate is dropped, `ReassemblyDuplicateFragment`. Any other overlap (partial
//!    either side, containment, teardrop) → the whole datagram is dropped, `ReassemblyOverlap`
//!    (RFC 5722: overlapping fragments are a sign of attack; never guess which bytes win).
//!    One fragment more than `max_fragments` → the whole datagram, `ReassemblyTooManyFragments`.
//! 5. Timeout: `timeout` after the *first* fragment; later fragments never extend it. A context
//!    past its deadline is expired (`ReassemblyTimeout`) by `handle_timeout`, or by `insert`
//!    if the caller has not yet called `handle_timeout`, so a late fragment can never complete
//!    a datagram after its deadline.
//!
//! A whole-datagram drop frees the buffer at once and leaves a **tombstone** (no memory, one
//! context slot) until the original deadline, so the datagram's remaining fragments are
//! counted as `ReassemblyStale` instead of opening a fresh context that would only time out.
//! Tombstones count towards `max_contexts` (an attacker gains nothing over sending lone first
//! fragments) and expire with the deadline list like contexts.
//!
//! Counting: fragment-level reasons count the fragment; datagram-level reasons (overlap, too
//! many fragments, total mismatch, timeout) count the datagram once. [`ReassemblyStats`] keeps
//! conservation laws that tests check: `fragments_in = fragments_accepted + fragments_dropped`
//! and `datagrams_started = datagrams_completed + datagrams_dropped + contexts_live`.
//!
//! # Why these data structures
//!
//! - **One store buffer per datagram, sized by the total length** carried in every braid
//!   fragment. Fragments are copied straight into place; completion hands the same buffer on,
//!   so there is exactly one copy per byte and no final gather. (IP reassembly cannot do this
//!   because only the last fragment tells the total; braid's header carries it in each one.)
//! - **Fragment ranges as a small sorted array per context**: up to 8 `(start, end)` pairs
//!   inside the context itself (its second cache line), and for a datagram with more
//!   fragments a row of `max_fragments` pairs in one spill vector reserved at construction.
//!   The overlap policy needs to know the *exact* fragments received, not only the bytes
//!   covered: an RFC 815 hole list tracks coverage with no extra memory, but it cannot tell an
//!   exact duplicate (drop only it) from a fragment that re-covers two neighbours (drop the
//!   datagram). Because accepted ranges are disjoint, a look at the two neighbours of the
//!   insertion point (found at once for in-order and reversed arrival, else by binary search)
//!   decides duplicate / overlap in O(log n); insertion shifts at most `max_fragments`
//!   entries (64 by default, usually 2–8). Completion is `received == total`, exact because
//!   accepted ranges are disjoint and inside the total. No allocation per fragment; the
//!   per-datagram metadata is bounded by `max_fragments`; and a datagram of up to 8
//!   fragments touches no memory but its context and its buffer.
//! - **A slab of contexts plus a seeded [`hashbrown::HashTable`]** of slot numbers (4 bytes a
//!   bucket, so the index of 32 K contexts stays in L2; keys are compared in the slab only on a
//!   tag match), created with room for twice `max_contexts`, so the steady state never
//!   allocates (hashbrown re-hashes in place when it has at most half its capacity in use) and
//!   an attacker who does not know `hash_seed` cannot aim collisions (foldhash, seeded from
//!   config). The slot of the last context touched is remembered (the memo), so the fragments
//!   of one datagram arriving back to back skip hashing and probing; and a new context is put
//!   in the index only when another context takes the memo from it, so a datagram whose
//!   fragments all arrive back to back is never indexed nor hashed (and while the index is
//!   empty, a new key is not even looked up).
//! - **Expiry by an intrusive deadline list.** All contexts share one timeout and time is
//!   monotonic, so creation order is deadline order: appending at the tail keeps the list
//!   sorted, the head is the next deadline ([`Reassembler::poll_timeout`] is O(1)), expiry pops
//!   from the head, and a completed context unlinks itself in O(1) — no heap, no scan, no
//!   stale queue entries.
//! - **No memory of completed datagrams.** A completed context is forgotten at once. A late
//!   duplicate fragment of a completed datagram therefore opens a new context that is either
//!   completed again by further duplicates (the reorder stage de-duplicates whole datagrams and
//!   counts them) or times out (bounded by the caps, freed and counted). Remembering
//!   completions exactly would need a table of (completion rate × timeout) entries, millions at
//!   10 Mpps; a lossy direct-mapped cache of recent ids was tried and cost one cache miss per
//!   datagram (half the in-order time in `benches/reassembly.rs`) for a counter's sake, so it
//!   went. Drops, which are rare, do get exact tombstones.
//!
//! Memory bounds: store bytes ≤ `mem_cap_bytes` (counted by store slot size); metadata ≤
//! `max_contexts × (128 + 8 × max(max_fragments, 64))` bytes plus the hash index
//! (`max_contexts × 2` entries of 4 bytes plus control bytes).
//!
//! # Changing the configuration while datagrams are held
//!
//! [`Reassembler::reconfigure`] (the engine's `Command::ReplacePolicies`) replaces the caps
//! and the timeout between two batches; [`Reassembler::check_reconfigure`] says first
//! whether it can. What sizes the tables built at construction stays: `max_contexts` and
//! `hash_seed` may not change, and `max_fragments` may change up to the room each slot has
//! for ranges (the value at construction, or [`DEFAULT_MAX_FRAGMENTS`] if that was lower, so
//! a lowered cap can always go back to the default). Datagrams being reassembled when it
//! changes:
//!
//! - **Memory cap lowered below what is held**: the oldest live datagrams are dropped whole
//!   until the rest fits (`ReassemblyEvicted`, once per datagram, each leaving a tombstone
//!   like any whole-datagram drop). Refusing only new datagrams would leave the old cap in
//!   force until the held ones complete or time out, which is not what the operator asked.
//! - **`max_datagram_bytes` lowered below a held datagram's length, or `max_fragments`
//!   below the fragments it has**: that datagram is dropped the same way (it could never
//!   complete under the new caps).
//! - **Timeout shortened**: every context's deadline moves earlier by the difference (a
//!   context lives the new timeout from its first fragment; one already past it expires at
//!   the next `handle_timeout`, counted as a timeout). Shifting every deadline by the same
//!   amount keeps the deadline list sorted, and a context created later, with the new
//!   timeout, still lands at its tail. **Lengthened**: held contexts keep their deadline (a
//!   deadline is never extended); new ones get the new timeout.
//!
//! This is O(contexts) once per replacement, never per packet.

mod state;
#[cfg(test)]
mod tests;

use core::hash::BuildHasher;
use core::time::Duration;

use foldhash::fast::FixedState;
use hashbrown::HashTable;

use crate::buffer::{BufHandle, MAX_BUF_BYTES, PacketStore};
use crate::time::Instant;
use crate::types::{DropCounters, DropReason, FlowId};
use state::{Accept, Kind, NIL, Range, Slab};

/// The fragment cap a reassembler always has room for ([`Reassembler::reconfigure`] may
/// raise `max_fragments` up to this, or up to the value it was built with if larger), and
/// the default of [`ReassemblyConfig::max_fragments`].
pub const DEFAULT_MAX_FRAGMENTS: u16 = 64;

/// Reassembler configuration. Defaults are tuned for a host receiving a few Gbit/s of braid
/// traffic split across a handful of NICs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ReassemblyConfig {
    /// Cap on store bytes held by incomplete datagrams (counted by store slot size). At the cap
    /// new datagrams are refused. Default 64 MiB.
    pub mem_cap_bytes: usize,
    /// Cap on live contexts plus tombstones. At the cap new datagrams are refused. Default
    /// 32 768. Clamped to `1..u32::MAX`.
    pub max_contexts: usize,
    /// Cap on accepted fragments per datagram; one more drops the datagram. Default 64.
    /// Clamped to at least 1.
    pub max_fragments: u16,
    /// Lifetime of a context from its first fragment, never extended. Default 250 ms.
    pub timeout: Duration,
    /// Largest datagram total length accepted, bytes. Default 65 535. Lengths above
    /// [`crate::buffer::MAX_BUF_BYTES`] are refused as too large whatever this says.
    pub max_datagram_bytes: u32,
    /// Seed of the context index's hash (from the engine config, never the OS). Default 0.
    pub hash_seed: u64,
}

impl Default for ReassemblyConfig {
    fn default() -> Self {
        Self {
            mem_cap_bytes: 64 << 20,
            max_contexts: 32_768,
            max_fragments: DEFAULT_MAX_FRAGMENTS,
            timeout: Duration::from_millis(250),
            max_datagram_bytes: 65_535,
            hash_seed: 0,
        }
    }
}

/// The id of one braid datagram: the flow it belongs to and its 64-bit sequence number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct DatagramKey {
    /// The flow id from the braid header.
    pub flow: FlowId,
    /// The datagram sequence number from the braid header.
    pub seq: u64,
}

/// What happened to one fragment.
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub enum FragOutcome {
    /// The datagram is complete. The caller now owns `buf` (exactly `len` bytes) and must free
    /// it in the store.
    Complete {
        /// The reassembled datagram.
        buf: BufHandle,
        /// Its length in bytes (the total length of its fragments).
        len: usize,
    },
    /// Accepted; the datagram is still incomplete.
    Pending,
    /// Dropped, and counted under this reason (see the module doc for whether the fragment
    /// alone or its whole datagram was dropped).
    Dropped(DropReason),
}

/// Reassembly counters and gauges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReassemblyStats {
    /// Every fragment passed to `insert`.
    pub fragments_in: u64,
    /// Fragments copied into a datagram (`Pending` or `Complete`).
    pub fragments_accepted: u64,
    /// Fragments for which `insert` returned `Dropped`.
    pub fragments_dropped: u64,
    /// Accepted fragments thrown away later with their datagram (overlap, too many fragments,
    /// total mismatch, timeout).
    pub fragments_discarded: u64,
    /// Datagrams begun (contexts created, plus whole-datagram fragments).
    pub datagrams_started: u64,
    /// Datagrams completed and handed out.
    pub datagrams_completed: u64,
    /// Datagrams dropped whole (overlap, too many fragments, total mismatch, timeout).
    pub datagrams_dropped: u64,
    /// Contexts holding an incomplete datagram now.
    pub contexts_live: usize,
    /// Tombstones of dropped datagrams now (see the module doc).
    pub tombstones_live: usize,
    /// Store bytes held by live contexts now (slot sizes).
    pub bytes_held: usize,
    /// The most `bytes_held` has ever been.
    pub peak_bytes_held: usize,
    /// Drops by reason.
    pub drops: DropCounters,
}

/// Store bytes a context of `total_len` holds (its buffer's slot size). Only called for
/// contexts whose buffer was allocated, so the size is in range.
#[inline]
fn held_bytes(total_len: u32) -> usize {
    PacketStore::class_bytes(total_len as usize).unwrap_or(0)
}

/// Reassembles braid datagrams from their fragments. See the module documentation.
#[derive(Debug)]
pub struct Reassembler {
    config: ReassemblyConfig,
    timeout_ns: u64,
    max_fragments: u16,
    hasher: FixedState,
    /// `(key, slot)` for every live context and tombstone.
    index: HashTable<u32>,
    slab: Slab,
    /// The slot of the context touched last (a live context or tombstone), if still used.
    last: Option<u32>,
    stats: ReassemblyStats,
}

impl Reassembler {
    /// A reassembler with `config` (out-of-range values are clamped, see the field docs).
    /// Allocates its index and the capacity of its slab up front; contexts are
    /// then created and recycled without allocating.
    #[must_use]
    pub fn new(config: ReassemblyConfig) -> Self {
        let max_contexts = config.max_contexts.clamp(1, u32::MAX as usize - 1);
        let max_fragments = config.max_fragments.max(1);
        let config = ReassemblyConfig {
            max_contexts,
            max_fragments,
            ..config
        };
        Self {
            timeout_ns: crate::time::duration_nanos(config.timeout),
            max_fragments,
            hasher: FixedState::with_seed(config.hash_seed),
            index: HashTable::with_capacity(max_contexts.saturating_mul(2)),
            // Room for at least the default cap, so a cap lowered at run time can go back up.
            slab: Slab::new(
                max_contexts,
                usize::from(max_fragments.max(DEFAULT_MAX_FRAGMENTS)),
            ),
            last: None,
            stats: ReassemblyStats::default(),
            config,
        }
    }

    /// The configuration in force (after clamping).
    #[must_use]
    pub fn config(&self) -> &ReassemblyConfig {
        &self.config
    }

    /// Counters and gauges.
    #[must_use]
    pub fn stats(&self) -> &ReassemblyStats {
        &self.stats
    }

    /// The largest `max_fragments` [`Self::reconfigure`] takes: the room each context has
    /// for its fragments' ranges, fixed at construction.
    #[must_use]
    pub fn fragments_room(&self) -> u16 {
        u16::try_from(self.slab.stride()).unwrap_or(u16::MAX)
    }

    /// Whether [`Self::reconfigure`] can put `new` in force; `Err((field, why))` names the
    /// field (as in [`ReassemblyConfig`]) that it cannot change. Nothing is changed.
    ///
    /// # Errors
    /// `max_contexts` or `hash_seed` differ from the ones in force (they size and seed the
    /// tables built at construction); `max_fragments` is 0 or above [`Self::fragments_room`];
    /// `mem_cap_bytes`, `timeout` or `max_datagram_bytes` is zero; `max_datagram_bytes` is
    /// above [`crate::buffer::MAX_BUF_BYTES`].
    pub fn check_reconfigure(
        &self,
        new: &ReassemblyConfig,
    ) -> Result<(), (&'static str, &'static str)> {
        if new.max_contexts != self.config.max_contexts {
            return Err((
                "max_contexts",
                "sizes the context table, built at start: a change needs a restart",
            ));
        }
        if new.hash_seed != self.config.hash_seed {
            return Err(("hash_seed", "seeds the context index, built at start"));
        }
        if new.max_fragments == 0 || new.max_fragments > self.fragments_room() {
            return Err((
                "max_fragments",
                "must be at least 1 and at most the room each context was built with (the \
                 value at start, or 64 if that was lower): a larger one needs a restart",
            ));
        }
        if new.mem_cap_bytes == 0 {
            return Err(("mem_cap_bytes", "must be > 0"));
        }
        if new.timeout.is_zero() {
            return Err(("timeout", "must be > 0"));
        }
        if new.max_datagram_bytes == 0 || new.max_datagram_bytes as usize > MAX_BUF_BYTES {
            return Err(("max_datagram_bytes", "must be between 1 and 65536"));
        }
        Ok(())
    }

    /// Put `new` in force (see "Changing the configuration while datagrams are held" in
    /// the module doc): datagrams that no longer fit are dropped and counted
    /// (`ReassemblyEvicted`), deadlines move earlier if the timeout shrank. Returns how many
    /// datagrams were dropped. O(live contexts); call [`Self::check_reconfigure`] first.
    ///
    /// # Panics
    /// Never; a configuration [`Self::check_reconfigure`] refuses is taken with its
    /// `max_contexts` and `hash_seed` ignored and its `max_fragments` clamped to the room.
    pub fn reconfigure(&mut self, store: &mut PacketStore, new: ReassemblyConfig) -> usize {
        let max_fragments = new.max_fragments.clamp(1, self.fragments_room());
        let new = ReassemblyConfig {
            max_contexts: self.config.max_contexts,
            hash_seed: self.config.hash_seed,
            max_fragments,
            ..new
        };
        let new_timeout_ns = crate::time::duration_nanos(new.timeout);
        let earlier_ns = self.timeout_ns.saturating_sub(new_timeout_ns);
        // Oldest first: the deadline list is in creation order.
        let mut evicted = 0;
        let mut cur = self.slab.head;
        while cur != NIL {
            let next = self.slab.ctx[cur as usize].next;
            let c = &mut self.slab.ctx[cur as usize];
            c.deadline = Instant::from_nanos(c.deadline.as_nanos().saturating_sub(earlier_ns));
            let evict = c.kind == Kind::Live
                && (c.total_len > new.max_datagram_bytes
                    || c.nfrags > max_fragments
                    || self.stats.bytes_held > new.mem_cap_bytes);
            if evict {
                // The datagram leaves; its tombstone stays until the (new) deadline.
                self.free_live(store, cur);
                self.slab.ctx[cur as usize].kind = Kind::Tomb;
                self.stats.tombstones_live += 1;
                self.stats.drops.count(DropReason::ReassemblyEvicted);
                evicted += 1;
            }
            cur = next;
        }
        self.timeout_ns = new_timeout_ns;
        self.max_fragments = max_fragments;
        self.config = new;
        evicted
    }

    /// The earliest deadline of a live context or tombstone, if any.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.slab.head {
            NIL => None,
            h => Some(self.slab.ctx[h as usize].deadline),
        }
    }

    /// Offer one fragment: `data` is the bytes at `offset` of datagram `key`, whose total
    /// length is `total_len`. On the first fragment of a key a context and one store buffer of
    /// `total_len` bytes are allocated; each fragment is checked (module doc) and copied into
    /// place; when every byte is present the buffer is handed out in
    /// [`FragOutcome::Complete`]. O(log max_fragments), no allocation.
    #[inline]
    pub fn insert(
        &mut self,
        now: Instant,
        store: &mut PacketStore,
        key: DatagramKey,
        offset: u32,
        total_len: u32,
        data: &[u8],
    ) -> FragOutcome {
        // Fastest path: the next fragment, in order, of the datagram touched last. `try_append`
        // applies every rule of the general path to that case (module doc) before anything
        // is recorded or copied; any other fragment takes the general path.
        if let Some(idx) = self.last
            && let Some(complete) = self.slab.try_append(
                idx,
                key,
                now,
                offset,
                total_len,
                data.len(),
                self.max_fragments,
            )
        {
            self.stats.fragments_in += 1;
            self.stats.fragments_accepted += 1;
            let buf = self.slab.ctx[idx as usize]
                .buf
                .as_ref()
                .expect("invariant: live context holds a buffer");
            let written = store.write(buf, offset as usize, data);
            debug_assert!(
                written,
                "invariant: checked range inside the context's buffer"
            );
            if !complete {
                return FragOutcome::Pending;
            }
            return self.complete(idx);
        }
        self.insert_general(now, store, key, offset, total_len, data)
    }

    /// `insert` for every case but an in-order fragment of the last datagram.
    #[inline(never)]
    fn insert_general(
        &mut self,
        now: Instant,
        store: &mut PacketStore,
        key: DatagramKey,
        offset: u32,
        total_len: u32,
        data: &[u8],
    ) -> FragOutcome {
        self.stats.fragments_in += 1;
        if data.is_empty() {
            return self.drop_fragment(DropReason::ReassemblyZeroLength);
        }
        if total_len > self.config.max_datagram_bytes {
            return self.drop_fragment(DropReason::ReassemblyTooLarge);
        }
        let end = u64::from(offset) + data.len() as u64;
        if end > u64::from(total_len) {
            return self.drop_fragment(DropReason::ReassemblyPastEnd);
        }
        // invariant: end <= total_len, a u32.
        let range = Range {
            start: offset,
            end: u32::try_from(end).unwrap_or(total_len),
        };
        // Fast path: the same datagram as the previous fragment (fragments of one datagram
        // usually arrive back to back) skips hashing and the index probe; so does an empty
        // index (every live context is the memo). `hash` 0 means "not computed yet".
        let mut hash = 0;
        let found = match self.last {
            Some(idx) if self.slab.ctx[idx as usize].key == key => Some(idx),
            _ if self.index.is_empty() => None,
            _ => {
                hash = self.hasher.hash_one(key);
                let slab = &self.slab.ctx;
                let found = self
                    .index
                    .find(hash, |&i| slab[i as usize].key == key)
                    .copied();
                if let Some(idx) = found {
                    self.set_last(idx);
                }
                found
            }
        };
        if let Some(idx) = found {
            let ctx = &self.slab.ctx[idx as usize];
            if now < ctx.deadline {
                if ctx.kind == Kind::Tomb {
                    return self.drop_fragment(DropReason::ReassemblyStale);
                }
                return self.insert_existing(store, idx, range, total_len, data);
            }
            // Past its deadline but not yet expired by handle_timeout: expire it now, so the
            // timeout is never extended, and treat the fragment as the first of a new datagram.
            hash = self.slab.ctx[idx as usize].hash;
            self.expire(store, idx);
        }
        self.insert_new(now, store, hash, key, range, total_len, data)
    }

    /// Expire contexts and tombstones whose deadline is `<= now`, at most `budget` of them,
    /// oldest first; returns how many were expired. Expired contexts free their buffer and
    /// count `ReassemblyTimeout`. If it returns `budget`, more may be due: call again.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        store: &mut PacketStore,
        budget: usize,
    ) -> usize {
        let mut n = 0;
        while n < budget {
            let head = self.slab.head;
            if head == NIL || self.slab.ctx[head as usize].deadline > now {
                break;
            }
            self.expire(store, head);
            n += 1;
        }
        n
    }

    /// A fragment of a datagram with a live context (the per-fragment hot path: one call
    /// site, always inlined).
    #[inline(always)]
    fn insert_existing(
        &mut self,
        store: &mut PacketStore,
        idx: u32,
        r: Range,
        total_len: u32,
        data: &[u8],
    ) -> FragOutcome {
        // Every check on the context and its ranges happens before any byte is copied.
        let complete = match self.slab.accept(idx, r, total_len, self.max_fragments) {
            Accept::Placed { complete } => complete,
            Accept::Duplicate => {
                return self.drop_fragment(DropReason::ReassemblyDuplicateFragment);
            }
            Accept::TotalMismatch => {
                return self.drop_datagram(store, idx, DropReason::ReassemblyTotalMismatch);
            }
            Accept::Overlap => {
                return self.drop_datagram(store, idx, DropReason::ReassemblyOverlap);
            }
            Accept::TooMany => {
                return self.drop_datagram(store, idx, DropReason::ReassemblyTooManyFragments);
            }
        };
        let ctx = &mut self.slab.ctx[idx as usize];
        let buf = ctx
            .buf
            .as_ref()
            .expect("invariant: live context holds a buffer");
        let written = store.write(buf, r.start as usize, data);
        debug_assert!(
            written,
            "invariant: checked range inside the context's buffer"
        );
        self.stats.fragments_accepted += 1;
        if !complete {
            return FragOutcome::Pending;
        }
        self.complete(idx)
    }

    /// Hand out the datagram of context `idx`, which just received its last byte: the
    /// buffer leaves the reassembler's accounting.
    #[inline]
    fn complete(&mut self, idx: u32) -> FragOutcome {
        let ctx = &mut self.slab.ctx[idx as usize];
        let buf = ctx
            .buf
            .take()
            .expect("invariant: live context holds a buffer");
        let (hash, total_len) = (ctx.hash, ctx.total_len);
        self.remove_index(hash, idx);
        self.slab.release(idx);
        self.stats.bytes_held -= held_bytes(total_len);
        self.stats.contexts_live -= 1;
        self.stats.datagrams_completed += 1;
        FragOutcome::Complete {
            buf,
            len: total_len as usize,
        }
    }

    /// The first fragment of a datagram with no context.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn insert_new(
        &mut self,
        now: Instant,
        store: &mut PacketStore,
        hash: u64,
        key: DatagramKey,
        r: Range,
        total_len: u32,
        data: &[u8],
    ) -> FragOutcome {
        let total = total_len as usize;
        let Some(held) = PacketStore::class_bytes(total) else {
            return self.drop_fragment(DropReason::ReassemblyTooLarge);
        };
        let deadline = Instant::from_nanos(now.as_nanos().saturating_add(self.timeout_ns));
        if r.start == 0 && r.end == total_len {
            // The whole datagram in one fragment: no context needed.
            let Some(buf) = store.alloc(total) else {
                return self.drop_fragment(DropReason::StoreFull);
            };
            store.get_mut(&buf).copy_from_slice(data);
            self.stats.fragments_accepted += 1;
            self.stats.datagrams_started += 1;
            self.stats.datagrams_completed += 1;
            return FragOutcome::Complete { buf, len: total };
        }
        if self.slab.is_full() {
            return self.drop_fragment(DropReason::ReassemblyContextCap);
        }
        if self.stats.bytes_held + held > self.config.mem_cap_bytes {
            return self.drop_fragment(DropReason::ReassemblyMemoryCap);
        }
        let Some(buf) = store.alloc(total) else {
            return self.drop_fragment(DropReason::StoreFull);
        };
        let written = store.write(&buf, r.start as usize, data);
        debug_assert!(written, "invariant: checked range inside the new buffer");
        let idx = self.slab.alloc(key, hash, deadline, buf, total_len, r);
        // Not indexed yet: it is the memo, and is indexed only if another context becomes the
        // memo before it completes (see `set_last`).
        self.set_last(idx);
        self.stats.fragments_accepted += 1;
        self.stats.datagrams_started += 1;
        self.stats.contexts_live += 1;
        self.stats.bytes_held += held;
        self.stats.peak_bytes_held = self.stats.peak_bytes_held.max(self.stats.bytes_held);
        FragOutcome::Pending
    }

    /// Count a drop of this fragment alone.
    #[inline]
    fn drop_fragment(&mut self, reason: DropReason) -> FragOutcome {
        self.stats.fragments_dropped += 1;
        self.stats.drops.count(reason);
        FragOutcome::Dropped(reason)
    }

    /// Drop the whole datagram of live context `idx` (this fragment included): free its
    /// buffer now, keep a tombstone until the original deadline.
    #[cold]
    fn drop_datagram(
        &mut self,
        store: &mut PacketStore,
        idx: u32,
        reason: DropReason,
    ) -> FragOutcome {
        self.free_live(store, idx);
        self.slab.ctx[idx as usize].kind = Kind::Tomb;
        self.stats.tombstones_live += 1;
        self.stats.drops.count(reason);
        self.stats.fragments_dropped += 1;
        FragOutcome::Dropped(reason)
    }

    /// Free the buffer of live context `idx` and take it out of the live accounting.
    fn free_live(&mut self, store: &mut PacketStore, idx: u32) {
        let ctx = &mut self.slab.ctx[idx as usize];
        if let Some(buf) = ctx.buf.take() {
            store.free(buf);
        }
        self.stats.bytes_held -= held_bytes(ctx.total_len);
        self.stats.fragments_discarded += u64::from(ctx.nfrags);
        self.stats.contexts_live -= 1;
        self.stats.datagrams_dropped += 1;
    }

    /// Remove context or tombstone `idx` (its deadline passed): a live one counts a timeout.
    fn expire(&mut self, store: &mut PacketStore, idx: u32) {
        match self.slab.ctx[idx as usize].kind {
            Kind::Live => {
                self.free_live(store, idx);
                self.stats.drops.count(DropReason::ReassemblyTimeout);
            }
            Kind::Tomb => self.stats.tombstones_live -= 1,
            Kind::Free => {
                debug_assert!(false, "invariant: only used slots expire");
                return;
            }
        }
        self.remove_index(self.slab.ctx[idx as usize].hash, idx);
        self.slab.release(idx);
    }

    /// Make `idx` the last-context memo. The previous memo, if it is still in use and not
    /// indexed, is indexed now: every used slot is either indexed or the memo.
    #[inline]
    fn set_last(&mut self, idx: u32) {
        if let Some(prev) = self.last
            && prev != idx
        {
            let c = &mut self.slab.ctx[prev as usize];
            if !c.indexed {
                c.indexed = true;
                if c.hash == 0 {
                    c.hash = self.hasher.hash_one(c.key);
                }
                let slab = &self.slab.ctx;
                self.index
                    .insert_unique(slab[prev as usize].hash, prev, |&i| slab[i as usize].hash);
            }
        }
        self.last = Some(idx);
    }

    /// Take slot `idx` out of the index (if it is there) and out of the memo.
    #[inline]
    fn remove_index(&mut self, hash: u64, idx: u32) {
        if self.last == Some(idx) {
            self.last = None;
        }
        if !self.slab.ctx[idx as usize].indexed {
            return;
        }
        if let Ok(entry) = self.index.find_entry(hash, |&i| i == idx) {
            entry.remove();
        } else {
            debug_assert!(false, "invariant: every indexed slot is in the index");
        }
    }

    /// Check every internal invariant against `store`'s view; `Err` names the first broken one.
    /// `extra_store_bytes` is what the caller holds in `store` besides this reassembler.
    #[cfg(any(test, fuzzing, feature = "fuzzing"))]
    pub(crate) fn check_invariants(
        &self,
        store: &PacketStore,
        extra_store_bytes: usize,
    ) -> Result<(), &'static str> {
        let s = &self.stats;
        if s.fragments_in != s.fragments_accepted + s.fragments_dropped {
            return Err("fragments_in != accepted + dropped");
        }
        if s.datagrams_started
            != s.datagrams_completed + s.datagrams_dropped + s.contexts_live as u64
        {
            return Err("datagrams_started != completed + dropped + live");
        }
        let whole_drops = [
            DropReason::ReassemblyOverlap,
            DropReason::ReassemblyTooManyFragments,
            DropReason::ReassemblyTotalMismatch,
            DropReason::ReassemblyTimeout,
            DropReason::ReassemblyEvicted,
        ]
        .iter()
        .map(|&r| s.drops.get(r))
        .sum::<u64>();
        if whole_drops != s.datagrams_dropped {
            return Err("datagram-level drops != datagrams_dropped");
        }
        // Timeouts and evictions drop datagrams, not a fragment being inserted.
        let not_fragments =
            s.drops.get(DropReason::ReassemblyTimeout) + s.drops.get(DropReason::ReassemblyEvicted);
        if s.fragments_dropped != s.drops.total() - not_fragments {
            return Err("fragments_dropped != drops other than timeouts and evictions");
        }
        if s.bytes_held > self.config.mem_cap_bytes || s.bytes_held > s.peak_bytes_held {
            return Err("bytes_held above the cap or the peak");
        }
        if store.used_bytes() != s.bytes_held + extra_store_bytes {
            return Err("store bytes != bytes_held + caller's");
        }
        // Walk the deadline list: sorted, consistent with the counts and the index.
        let (mut live, mut tombs, mut held, mut unindexed) = (0usize, 0usize, 0usize, 0usize);
        let mut prev_deadline = Instant::ZERO;
        let mut prev = NIL;
        let mut cur = self.slab.head;
        while cur != NIL {
            let c = &self.slab.ctx[cur as usize];
            if c.prev != prev || c.deadline < prev_deadline {
                return Err("deadline list broken or unsorted");
            }
            let hash = self.hasher.hash_one(c.key);
            let slab = &self.slab.ctx;
            let found = self.index.find(hash, |&i| slab[i as usize].key == c.key);
            let want = if c.indexed { Some(&cur) } else { None };
            if (c.indexed || c.hash != 0) && hash != c.hash || found != want {
                return Err("context not indexed under its key");
            }
            if !c.indexed && self.last != Some(cur) {
                return Err("a context is neither indexed nor the memo");
            }
            unindexed += usize::from(!c.indexed);
            match c.kind {
                Kind::Live => {
                    live += 1;
                    held += held_bytes(c.total_len);
                    let buf = c.buf.as_ref().ok_or("live context without buffer")?;
                    if store.try_get(buf).map(<[u8]>::len) != Some(c.total_len as usize) {
                        return Err("context buffer has the wrong length");
                    }
                    let rs = self.slab.ranges(cur);
                    if rs.is_empty() || rs.len() > usize::from(self.max_fragments) {
                        return Err("fragment count out of range");
                    }
                    let mut sum = 0u32;
                    for (i, r) in rs.iter().enumerate() {
                        if r.start >= r.end || r.end > c.total_len {
                            return Err("range empty or past the end");
                        }
                        if i > 0 && rs[i - 1].end > r.start {
                            return Err("ranges overlap or unsorted");
                        }
                        sum += r.end - r.start;
                    }
                    if sum != c.received || c.received >= c.total_len {
                        return Err("received bytes wrong");
                    }
                }
                Kind::Tomb => {
                    tombs += 1;
                    if c.buf.is_some() {
                        return Err("tombstone holds a buffer");
                    }
                }
                Kind::Free => return Err("free slot on the deadline list"),
            }
            prev_deadline = c.deadline;
            prev = cur;
            cur = c.next;
        }
        if live != s.contexts_live || tombs != s.tombstones_live || held != s.bytes_held {
            return Err("gauges out of sync with the contexts");
        }
        if live + tombs != self.index.len() + unindexed || live + tombs != self.slab.used {
            return Err("index or slab size out of sync");
        }
        if self.slab.used > self.config.max_contexts {
            return Err("context cap exceeded");
        }
        if let Some(l) = self.last
            && self
                .slab
                .ctx
                .get(l as usize)
                .is_none_or(|c| c.kind == Kind::Free)
        {
            return Err("last-context memo points at a free slot");
        }
        Ok(())
    }
}
