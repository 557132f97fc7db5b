//! Standard IPv4/IPv6 fragmentation and reassembly, for peers that are not braid.
//!
//! Owns: splitting an L3 packet into fragments that fit a NIC's MTU ([`Fragmenter`], RFC 791
//! §2.3/§3.2 and RFC 8200 §4.5), and reassembling IPv4/IPv6 fragments that a kernel or a router
//! produced ([`IpReassembler`], RFC 791, RFC 8200 §4.5, RFC 5722, RFC 6946, in the spirit of
//! RFC 815), with every guarantee of ARCHITECTURE.md ("What the reassembler and the reorder
//! buffer must guarantee", points 1–3, 6, 7). Does not own: braid's own fragments (keyed on
//! braid's 64-bit datagram id: `crate::reassembly`), Ethernet framing (the engine strips and
//! prepends L2 headers: this module sees L3 packets only), which worker owns a datagram (the
//! engine hands every fragment of a (src, dst) pair to one owner, ARCHITECTURE point 4), nor
//! building ICMP errors (see "What is not done" below).
//!
//! # Fragmentation
//!
//! [`Fragmenter::new`] checks a packet and plans its fragments; [`Fragmenter::write_next`] then
//! writes one fragment at a time into a buffer the caller supplies (no allocation). Offsets are
//! multiples of 8 and every fragment is at most `mtu` bytes.
//!
//! - **IPv4** (RFC 791): the first fragment carries the whole header with every option; later
//!   fragments carry only the options whose *copied* flag is set (type bit 0x80), padded with
//!   End-of-Option-List to a multiple of 4. The identification of the original packet is kept
//!   (braid forwards the sender's datagram, as a router does). A fragment is fragmented again
//!   correctly (its offset is added, the last piece keeps the original MF). Each fragment's
//!   header checksum is recomputed. A packet with **DF** set is refused with
//!   [`FragmentError::DontFragment`] (counted by the engine as
//!   [`DropReason::FragmentationNeeded`]); the standard answer would be an ICMP "fragmentation
//!   needed" (type 3 code 4, with the next-hop MTU, RFC 1191) to the sender.
//! - **IPv6** (RFC 8200 §4.5): only the source fragments IPv6. braid is that source here: it
//!   carries the vNIC's packets over a NIC whose MTU is smaller, so it fragments IPv6 packets as
//!   the sending host would, taking the 32-bit identification from a caller-provided
//!   [`FragIdCounter`]. The Fragment header goes after the per-fragment headers (the IPv6 header,
//!   Hop-by-Hop, and every header up to the last Routing header); the rest of the chain is
//!   fragmentable. A packet that already has a Fragment header is refused
//!   ([`FragmentError::AlreadyFragmented`]). RFC 8200 requires links of MTU ≥ 1280; smaller
//!   MTUs are accepted (for tests) as long as one 8-byte block fits.
//!
//! A packet that already fits the MTU is emitted unchanged as a single "fragment" (no Fragment
//! header: atomic fragments are deprecated, RFC 8021); the engine usually sends it as it is.
//!
//! # Reassembly: call protocol
//!
//! `insert(now, out_store, packet)` for every packet that may be a fragment, with non-decreasing
//! `now`: a packet that is no fragment comes back as [`IpFragOutcome::NotFragment`] untouched;
//! a completed datagram comes back as a buffer of `out_store` (the caller frees it).
//! `poll_timeout` says when to call `handle_timeout(now, budget)`, which expires at most
//! `budget` contexts per call (call again while it returns `budget`). Fragment bytes wait in a
//! private [`PacketStore`] whose byte cap is the memory cap.
//!
//! # The rules, in the order they are checked (all before any byte is copied)
//!
//! 1. Fragment-local, no state touched: unparsable header, bad IPv4 header checksum, IP length
//!    field above the bytes received, IPv6 header chain malformed or longer than 8 headers →
//!    `Malformed`; zero bytes of data → `ZeroLength`; more fragments follow but the length is not
//!    a multiple of 8 (RFC 8200 §4.5; RFC 791 cuts fragments on 8-octet boundaries) →
//!    `BadLength`; header + offset + length above `max_datagram_bytes` (≤ 65 535: IPv4 total
//!    length, RFC 791; IPv6 payload length, RFC 8200 — the "ping of death") → `TooLarge`.
//!    Only the fragment is dropped.
//! 2. An IPv6 atomic fragment (offset 0, M clear) is reassembled on its own, at once, without a
//!    context (RFC 6946).
//! 3. A key whose datagram was dropped and whose tombstone still stands → `Stale`.
//! 4. A new key: the context cap (`ContextCap`) and the memory cap (`MemoryCap`) are checked and
//!    the *new* datagram is refused at the cap; live contexts are never evicted.
//! 5. An existing context, datagram-level (the whole datagram is dropped, its buffers freed):
//!    a second last fragment with a different end (two different ends) → `TotalMismatch`; then
//!    the overlap policy (RFC 5722, applied to IPv4 too): same offset and length as an accepted
//!    fragment → only the duplicate is dropped (`Duplicate`), any other overlap (partial on
//!    either side, containment, teardrop) → `Overlap`; then data past the end (a fragment
//!    beyond the known end, or a last fragment ending before data already received) →
//!    `PastEnd`; the first fragment's header plus the datagram's end above
//!    `max_datagram_bytes` → `TooLarge`; one fragment more than `max_fragments` →
//!    `TooManyFragments`. Fragment-level: no room in the memory cap → `MemoryCap` (the
//!    datagram stays and may still complete or time out).
//! 6. Timeout: `timeout` after the *first* fragment, never extended. A context past its
//!    deadline is expired (`Timeout`) by `handle_timeout`, or by `insert` if the caller has not
//!    yet called it, so a late fragment never completes a datagram after its deadline (it
//!    starts a new one).
//!
//! A whole-datagram drop frees the fragment buffers at once and leaves a **tombstone** (no
//! memory, one context slot) until the original deadline, so the datagram's remaining fragments
//! are counted as `Stale` instead of opening a fresh context. Tombstones count towards
//! `max_contexts`.
//!
//! Counting: [`IpFragStats`] keeps conservation laws that tests check: `fragments_in =
//! fragments_accepted + fragments_dropped`, `datagrams_started = datagrams_completed +
//! datagrams_dropped + contexts_live`, and every drop counter is one `Dropped` outcome, except
//! `timeout`, which counts expired datagrams.
//!
//! The reassembled packet: IPv4 gets the first fragment's header with total length set, MF and
//! offset cleared (DF kept as the first fragment had it) and the checksum recomputed; IPv6 gets
//! the first fragment's per-fragment headers with the Fragment header removed, the next-header
//! byte that pointed at it set to the Fragment header's next header, and the payload length
//! fixed (RFC 8200 §4.5).
//!
//! # Why these data structures
//!
//! - **One private-store buffer per fragment, one output buffer per datagram.** Unlike braid's
//!   fragments, an IP fragment does not say how long its datagram is (only the last one does),
//!   so a buffer sized for the datagram cannot be taken at the first fragment without reserving
//!   64 KiB for each (an attacker's 8-byte fragment would then cost 64 KiB). Each fragment's
//!   bytes go to a slot of the private [`PacketStore`] sized for it (≥ 128 bytes), which is
//!   what the memory cap counts: the accounting is honest for tiny fragments (FragmentSmack).
//!   The last fragment to arrive is not stored: its bytes, and the stored ones, are gathered
//!   straight into the caller's output buffer. Two copies per byte at most, no allocation.
//! - **Per context, a sorted array of pieces** (`(start, end, buffer)`, 6 bytes each, in a row of
//!   `max_fragments` entries reserved at construction), not an RFC 815 hole list: the overlap
//!   policy needs the *exact* fragments received (an exact duplicate drops only itself, a
//!   fragment re-covering two neighbours drops the datagram), and a hole list only knows the
//!   bytes covered. The pieces are disjoint, so the two neighbours of the insertion point
//!   (found at once for in-order and reversed arrival, else by binary search) decide duplicate
//!   / overlap in O(log n); insertion moves at most `max_fragments` × 6 bytes. This is what
//!   Linux moved to after FragmentSmack (CVE-2018-5391: a linked list scanned per fragment
//!   made a flood of tiny overlapping fragments cost O(n) each); here the cost per fragment is
//!   independent of the number of contexts and bounded by the fragment cap.
//! - **A slab of contexts plus a seeded [`hashbrown::HashTable`]** of slot numbers created with
//!   room for twice `max_contexts` (no rehash growth, no allocation in the steady state);
//!   foldhash seeded from config so an attacker cannot aim collisions. The slot touched last is
//!   remembered, so fragments of one datagram arriving back to back skip hashing.
//! - **Expiry by an intrusive deadline list**: one timeout for all, monotonic time, so creation
//!   order is deadline order: append at the tail, expire from the head, `poll_timeout` O(1).
//!
//! Memory bounds: fragment bytes ≤ `mem_cap_bytes` (slot sizes; the private store takes the
//! pages for the cap at construction and may take at most the cap's remainder plus 576 KiB
//! more, never given back); metadata ≤ `max_contexts × (~100 + 18 × max_fragments)` bytes,
//! reserved at construction, plus the hash index (`2 × max_contexts` slots).
//!
//! # What is not done
//!
//! No ICMP is built: "fragmentation needed"/"packet too big" for DF packets, and "time exceeded
//! (fragment reassembly)" (RFC 792 type 11 code 1, RFC 4443 type 3 code 1) on timeout are the
//! engine's to send if it wants. RFC 7112's "first fragment must hold the whole header chain"
//! is not enforced on receive. The IPv4 16-bit identification can wrap within the timeout at
//! high rates (RFC 4963): keep `timeout` short.

mod fragment;
mod parse;
mod state;
#[cfg(test)]
mod tests;

use core::fmt;
use core::hash::BuildHasher;
use core::time::Duration;

use foldhash::fast::FixedState;
use hashbrown::HashTable;

pub use fragment::{FragIdCounter, FragmentError, Fragmenter};

use crate::buffer::{BufHandle, MAX_BUF_BYTES, PacketStore};
use crate::time::Instant;
use crate::types::DropReason;
use parse::{FragInfo, FragKey, Parsed, V4_DF};
use state::{Kind, NIL, NO_TOTAL, Place, Slab};

/// The most fragments per datagram [`IpReassemblyConfig::max_fragments`] may allow: it bounds
/// the per-fragment insertion cost and the per-context metadata row.
pub const MAX_FRAGMENTS_CAP: u16 = 1024;

/// IP reassembler configuration. Defaults are tuned for a host receiving fragmented traffic
/// from a few ordinary peers, not for a router; raise the caps for more.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct IpReassemblyConfig {
    /// Cap on fragment bytes held by incomplete datagrams (counted by private-store slot size,
    /// ≥ 128 bytes per fragment). At the cap new datagrams are refused. Default 4 MiB (Linux's
    /// `ipfrag_high_thresh`).
    pub mem_cap_bytes: usize,
    /// Cap on live contexts plus tombstones. At the cap new datagrams are refused. Default
    /// 4096. Clamped to `1..u32::MAX`.
    pub max_contexts: usize,
    /// Cap on accepted fragments per datagram; one more drops the datagram. Default 64 (a
    /// 64 KiB datagram over a 1500-byte MTU is 45 fragments). Clamped to
    /// `1..=MAX_FRAGMENTS_CAP`.
    pub max_fragments: u16,
    /// Lifetime of a context from its first fragment, never extended. Default 2 s (RFC 8200
    /// allows up to 60 s, Linux uses 30 s; fragments of one datagram are sent back to back, and
    /// a short timeout frees an attacker's memory sooner and limits IPv4 id wrap, RFC 4963).
    pub timeout: Duration,
    /// Largest reassembled packet, header included, bytes. Default and maximum 65 535 (the IPv4
    /// total length; for IPv6 this also bounds the payload length at 65 535 − headers, as
    /// output buffers are at most 64 KiB).
    pub max_datagram_bytes: u32,
    /// Seed of the context index's hash (from the engine config, never the OS). Default 0.
    pub hash_seed: u64,
}

impl Default for IpReassemblyConfig {
    fn default() -> Self {
        Self {
            mem_cap_bytes: 4 << 20,
            max_contexts: 4096,
            max_fragments: 64,
            timeout: Duration::from_secs(2),
            max_datagram_bytes: 65_535,
            hash_seed: 0,
        }
    }
}

/// Why a fragment (or its datagram) was dropped by the [`IpReassembler`]. The module doc says
/// which reasons drop the fragment alone and which drop the whole datagram.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(u8)]
#[non_exhaustive]
pub enum IpFragDrop {
    /// Unparsable IP header, bad IPv4 header checksum, length field above the bytes received,
    /// malformed or over-long IPv6 header chain.
    Malformed,
    /// More fragments follow but the length is not a multiple of 8.
    BadLength,
    /// A fragment with no data.
    ZeroLength,
    /// Header + offset + length above `max_datagram_bytes` (≤ 65 535).
    TooLarge,
    /// Data past the datagram's end (a fragment beyond the last one's end, or a last fragment
    /// ending before data already received). Whole datagram.
    PastEnd,
    /// Two last fragments with different ends. Whole datagram.
    TotalMismatch,
    /// An exact duplicate (same offset and length): only the duplicate is dropped.
    Duplicate,
    /// Any other overlap (RFC 5722). Whole datagram.
    Overlap,
    /// One fragment more than `max_fragments`. Whole datagram.
    TooManyFragments,
    /// Not complete within `timeout` of its first fragment. Whole datagram.
    Timeout,
    /// The context cap is reached: new datagram refused.
    ContextCap,
    /// The memory cap is reached: new datagram (or this fragment of a live one) refused.
    MemoryCap,
    /// The output store had no room for the reassembled packet. Whole datagram.
    StoreFull,
    /// A fragment of a datagram that was dropped and whose tombstone stands.
    Stale,
}

impl IpFragDrop {
    /// Every reason, in discriminant order.
    pub const ALL: [Self; 14] = [
        Self::Malformed,
        Self::BadLength,
        Self::ZeroLength,
        Self::TooLarge,
        Self::PastEnd,
        Self::TotalMismatch,
        Self::Duplicate,
        Self::Overlap,
        Self::TooManyFragments,
        Self::Timeout,
        Self::ContextCap,
        Self::MemoryCap,
        Self::StoreFull,
        Self::Stale,
    ];

    /// The stable snake_case name.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::BadLength => "bad_length",
            Self::ZeroLength => "zero_length",
            Self::TooLarge => "too_large",
            Self::PastEnd => "past_end",
            Self::TotalMismatch => "total_mismatch",
            Self::Duplicate => "duplicate",
            Self::Overlap => "overlap",
            Self::TooManyFragments => "too_many_fragments",
            Self::Timeout => "timeout",
            Self::ContextCap => "context_cap",
            Self::MemoryCap => "memory_cap",
            Self::StoreFull => "store_full",
            Self::Stale => "stale",
        }
    }

    /// The engine-level [`DropReason`] this counts as (several reasons share one).
    #[must_use]
    pub const fn drop_reason(self) -> DropReason {
        match self {
            Self::Malformed | Self::BadLength => DropReason::MalformedPacket,
            Self::ZeroLength => DropReason::ReassemblyZeroLength,
            Self::TooLarge => DropReason::ReassemblyTooLarge,
            Self::PastEnd => DropReason::ReassemblyPastEnd,
            Self::TotalMismatch => DropReason::ReassemblyTotalMismatch,
            Self::Duplicate => DropReason::ReassemblyDuplicateFragment,
            Self::Overlap => DropReason::ReassemblyOverlap,
            Self::TooManyFragments => DropReason::ReassemblyTooManyFragments,
            Self::Timeout => DropReason::ReassemblyTimeout,
            Self::ContextCap => DropReason::ReassemblyContextCap,
            Self::MemoryCap => DropReason::ReassemblyMemoryCap,
            Self::StoreFull => DropReason::StoreFull,
            Self::Stale => DropReason::ReassemblyStale,
        }
    }
}

impl fmt::Display for IpFragDrop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// One counter per [`IpFragDrop`] reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpFragDrops {
    /// [`IpFragDrop::Malformed`].
    pub malformed: u64,
    /// [`IpFragDrop::BadLength`].
    pub bad_length: u64,
    /// [`IpFragDrop::ZeroLength`].
    pub zero_length: u64,
    /// [`IpFragDrop::TooLarge`].
    pub too_large: u64,
    /// [`IpFragDrop::PastEnd`].
    pub past_end: u64,
    /// [`IpFragDrop::TotalMismatch`].
    pub total_mismatch: u64,
    /// [`IpFragDrop::Duplicate`].
    pub duplicate: u64,
    /// [`IpFragDrop::Overlap`].
    pub overlap: u64,
    /// [`IpFragDrop::TooManyFragments`].
    pub too_many_fragments: u64,
    /// [`IpFragDrop::Timeout`].
    pub timeout: u64,
    /// [`IpFragDrop::ContextCap`].
    pub context_cap: u64,
    /// [`IpFragDrop::MemoryCap`].
    pub memory_cap: u64,
    /// [`IpFragDrop::StoreFull`].
    pub store_full: u64,
    /// [`IpFragDrop::Stale`].
    pub stale: u64,
}

impl IpFragDrops {
    fn slot(&mut self, r: IpFragDrop) -> &mut u64 {
        match r {
            IpFragDrop::Malformed => &mut self.malformed,
            IpFragDrop::BadLength => &mut self.bad_length,
            IpFragDrop::ZeroLength => &mut self.zero_length,
            IpFragDrop::TooLarge => &mut self.too_large,
            IpFragDrop::PastEnd => &mut self.past_end,
            IpFragDrop::TotalMismatch => &mut self.total_mismatch,
            IpFragDrop::Duplicate => &mut self.duplicate,
            IpFragDrop::Overlap => &mut self.overlap,
            IpFragDrop::TooManyFragments => &mut self.too_many_fragments,
            IpFragDrop::Timeout => &mut self.timeout,
            IpFragDrop::ContextCap => &mut self.context_cap,
            IpFragDrop::MemoryCap => &mut self.memory_cap,
            IpFragDrop::StoreFull => &mut self.store_full,
            IpFragDrop::Stale => &mut self.stale,
        }
    }

    /// Count one drop.
    #[inline]
    pub fn count(&mut self, r: IpFragDrop) {
        let s = self.slot(r);
        *s = s.wrapping_add(1);
    }

    /// The count for `r`.
    #[must_use]
    pub fn get(&self, r: IpFragDrop) -> u64 {
        let mut copy = *self;
        *copy.slot(r)
    }

    /// Sum over all reasons.
    #[must_use]
    pub fn total(&self) -> u64 {
        IpFragDrop::ALL.iter().map(|&r| self.get(r)).sum()
    }
}

/// What happened to one packet offered to [`IpReassembler::insert`].
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub enum IpFragOutcome {
    /// Not a fragment: the caller delivers its packet as it is. Nothing was counted as a
    /// fragment.
    NotFragment,
    /// A fragment, accepted; its datagram is still incomplete.
    Pending,
    /// The datagram is complete: `buf` (in the caller's output store, exactly `len` bytes) holds
    /// the reassembled packet with its header fixed. The caller owns it and must free it.
    Complete {
        /// The reassembled packet.
        buf: BufHandle,
        /// Its length, bytes.
        len: usize,
    },
    /// Dropped, and counted under this reason.
    Dropped(IpFragDrop),
}

/// IP reassembly counters and gauges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpFragStats {
    /// Packets that were not fragments (returned as `NotFragment`).
    pub packets_not_fragment: u64,
    /// Fragments offered (every packet but the `NotFragment` ones).
    pub fragments_in: u64,
    /// Fragments kept (`Pending` or `Complete`).
    pub fragments_accepted: u64,
    /// Fragments for which `insert` returned `Dropped`.
    pub fragments_dropped: u64,
    /// Accepted fragments thrown away later with their datagram.
    pub fragments_discarded: u64,
    /// Datagrams begun (contexts created, plus atomic fragments).
    pub datagrams_started: u64,
    /// Datagrams completed and handed out.
    pub datagrams_completed: u64,
    /// Datagrams dropped whole (overlap, past end, two ends, too large, too many fragments,
    /// store full, timeout).
    pub datagrams_dropped: u64,
    /// Contexts holding an incomplete datagram now.
    pub contexts_live: usize,
    /// Tombstones of dropped datagrams now.
    pub tombstones_live: usize,
    /// Private-store bytes held by fragments now (slot sizes).
    pub bytes_held: usize,
    /// The most `bytes_held` has ever been.
    pub peak_bytes_held: usize,
    /// Drops by reason.
    pub drops: IpFragDrops,
}

/// Reassembles standard IPv4/IPv6 fragments. See the module documentation.
#[derive(Debug)]
pub struct IpReassembler {
    config: IpReassemblyConfig,
    timeout_ns: u64,
    max_fragments: u16,
    max_datagram: usize,
    hasher: FixedState,
    /// Slot numbers of every live context and tombstone, hashed by key.
    index: HashTable<u32>,
    slab: Slab,
    /// Fragment bytes; its byte cap is `mem_cap_bytes`.
    frags: PacketStore,
    /// The slot touched last (may since have been freed or reused: check kind and key).
    last: u32,
    stats: IpFragStats,
}

/// The private fragment store, with the pages for `cap` bytes taken now (allocated whole and
/// freed at once: the pages stay on the store's free-page list for any size class).
fn prewarmed_store(cap: usize) -> PacketStore {
    let mut store = PacketStore::new(cap, MAX_BUF_BYTES);
    let mut pages = alloc::vec::Vec::with_capacity(cap / MAX_BUF_BYTES);
    while let Some(h) = store.alloc(MAX_BUF_BYTES) {
        pages.push(h);
    }
    for h in pages {
        store.free(h);
    }
    store
}

/// Store bytes a fragment of `len` bytes holds (its slot size).
#[inline]
fn held_bytes(len: usize) -> usize {
    PacketStore::class_bytes(len).unwrap_or(0)
}

/// `x` as `u16`; only called on values the rules bounded to ≤ 65 535.
#[inline]
fn as_u16(x: usize) -> u16 {
    u16::try_from(x).unwrap_or(u16::MAX)
}

impl IpReassembler {
    /// A reassembler with `config` (out-of-range values are clamped, see the field docs).
    /// Allocates up front its index, slab and fragment rows, and the pages of its private
    /// fragment store for the whole memory cap (`mem_cap_bytes` rounded down to 64 KiB; the
    /// memory is taken from the allocator now, and touched only when used). Contexts are then
    /// created and recycled without allocating. The one exception is bounded: when fragments
    /// of different sizes pin partly used pages, the store may take up to 9 more pages
    /// (one per size class) plus the remainder of the cap, once each (see [`PacketStore`]).
    #[must_use]
    pub fn new(config: IpReassemblyConfig) -> Self {
        let max_contexts = config.max_contexts.clamp(1, u32::MAX as usize - 1);
        let max_fragments = config.max_fragments.clamp(1, MAX_FRAGMENTS_CAP);
        let max_datagram_bytes = config.max_datagram_bytes.min(65_535);
        let config = IpReassemblyConfig {
            max_contexts,
            max_fragments,
            max_datagram_bytes,
            ..config
        };
        Self {
            timeout_ns: crate::time::duration_nanos(config.timeout),
            max_fragments,
            max_datagram: max_datagram_bytes as usize,
            hasher: FixedState::with_seed(config.hash_seed),
            index: HashTable::with_capacity(max_contexts.saturating_mul(2)),
            slab: Slab::new(max_contexts, usize::from(max_fragments)),
            frags: prewarmed_store(config.mem_cap_bytes),
            last: NIL,
            stats: IpFragStats::default(),
            config,
        }
    }

    /// The configuration in force (after clamping).
    #[must_use]
    pub fn config(&self) -> &IpReassemblyConfig {
        &self.config
    }

    /// Counters and gauges.
    #[must_use]
    pub fn stats(&self) -> &IpFragStats {
        &self.stats
    }

    /// Page memory the private fragment store has taken from the global allocator so far.
    #[must_use]
    pub fn reserved_bytes(&self) -> usize {
        self.frags.reserved_bytes()
    }

    /// The earliest deadline of a live context or tombstone, if any.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.slab.head {
            NIL => None,
            h => Some(self.slab.ctx[h as usize].deadline),
        }
    }

    /// Offer one L3 packet (IPv4 or IPv6; bytes past the IP length field are ignored). A packet
    /// that is not a fragment is returned as [`IpFragOutcome::NotFragment`]; a fragment is
    /// checked (module doc) and kept; when its datagram is complete the reassembled packet is
    /// written into a new buffer of `out` and handed out in [`IpFragOutcome::Complete`].
    /// O(log max_fragments) plus a copy of the fragment; no allocation once the private store
    /// is warm.
    pub fn insert(&mut self, now: Instant, out: &mut PacketStore, packet: &[u8]) -> IpFragOutcome {
        let info = match parse::parse(packet) {
            Parsed::NotFragment => {
                self.stats.packets_not_fragment += 1;
                return IpFragOutcome::NotFragment;
            }
            Parsed::Drop(reason) => {
                self.stats.fragments_in += 1;
                return self.drop_fragment(reason);
            }
            Parsed::Fragment(info) => info,
        };
        self.stats.fragments_in += 1;
        let len = info.data.len();
        if len == 0 {
            return self.drop_fragment(IpFragDrop::ZeroLength);
        }
        if info.more && !len.is_multiple_of(8) {
            return self.drop_fragment(IpFragDrop::BadLength);
        }
        let end = info.offset as usize + len;
        if info.hdr_len + end > self.max_datagram {
            return self.drop_fragment(IpFragDrop::TooLarge);
        }
        if info.offset == 0 && !info.more {
            return self.atomic(out, packet, &info);
        }
        // From here on the header, offsets and ends are ≤ 65 535.
        let (found, hash) = self.lookup(&info.key);
        if let Some(idx) = found {
            let ctx = &self.slab.ctx[idx as usize];
            if now < ctx.deadline {
                if ctx.kind == Kind::Tomb {
                    return self.drop_fragment(IpFragDrop::Stale);
                }
                return self.insert_existing(idx, out, packet, &info, end);
            }
            // Past its deadline but not yet expired by handle_timeout: expire it now, so the
            // timeout is never extended, and treat the fragment as the first of a new datagram.
            self.expire(idx);
        }
        self.insert_new(now, hash, packet, &info, end)
    }

    /// Expire contexts and tombstones whose deadline is `<= now`, at most `budget` of them,
    /// oldest first; returns how many were expired. An expired context frees its fragment
    /// buffers (at most `max_fragments`) and counts `Timeout`. If it returns `budget`, more may
    /// be due: call again.
    pub fn handle_timeout(&mut self, now: Instant, budget: usize) -> usize {
        let mut n = 0;
        while n < budget {
            let head = self.slab.head;
            if head == NIL || self.slab.ctx[head as usize].deadline > now {
                break;
            }
            self.expire(head);
            n += 1;
        }
        n
    }

    /// The slot of `key` if it has a context or tombstone, and `hash(key)`.
    #[inline]
    fn lookup(&self, key: &FragKey) -> (Option<u32>, u64) {
        if let Some(c) = self.slab.ctx.get(self.last as usize)
            && c.kind != Kind::Free
            && c.key == *key
        {
            return (Some(self.last), c.hash);
        }
        let hash = self.hasher.hash_one(key);
        let slab = &self.slab.ctx;
        let found = self
            .index
            .find(hash, |&i| slab[i as usize].key == *key)
            .copied();
        (found, hash)
    }

    /// An IPv6 atomic fragment: strip the Fragment header, no context (RFC 6946).
    fn atomic(&mut self, out: &mut PacketStore, packet: &[u8], info: &FragInfo) -> IpFragOutcome {
        let hdr = info.hdr_len;
        let len = hdr + info.data.len();
        let Some(buf) = out.alloc(len) else {
            return self.drop_fragment(IpFragDrop::StoreFull);
        };
        let dst = out.get_mut(&buf);
        dst[..hdr].copy_from_slice(&packet[..hdr]);
        dst[hdr..].copy_from_slice(&packet[info.data.clone()]);
        fix_header(dst, info.key.v6, hdr, info.nh_pos, info.next_header);
        self.stats.fragments_accepted += 1;
        self.stats.datagrams_started += 1;
        self.stats.datagrams_completed += 1;
        IpFragOutcome::Complete { buf, len }
    }

    /// The first fragment of a datagram with no context.
    fn insert_new(
        &mut self,
        now: Instant,
        hash: u64,
        packet: &[u8],
        info: &FragInfo,
        end: usize,
    ) -> IpFragOutcome {
        if self.slab.is_full() {
            return self.drop_fragment(IpFragDrop::ContextCap);
        }
        let first = info.offset == 0;
        let stored = if first {
            info.hdr_len + info.data.len()
        } else {
            info.data.len()
        };
        let Some(buf) = self.frags.alloc(stored) else {
            return self.drop_fragment(IpFragDrop::MemoryCap);
        };
        self.store_fragment(&buf, packet, info);
        let deadline = Instant::from_nanos(now.as_nanos().saturating_add(self.timeout_ns));
        let idx = self.slab.alloc(info.key, hash, deadline);
        let held = held_bytes(stored);
        self.slab
            .insert(idx, 0, as_u16(info.offset as usize), as_u16(end), buf);
        let c = &mut self.slab.ctx[idx as usize];
        c.received = (end - info.offset as usize) as u32;
        c.max_end = end as u32;
        c.held = held as u32;
        if !info.more {
            c.total = end as u32;
        }
        if first {
            c.hdr_len = as_u16(info.hdr_len);
            c.nh_pos = as_u16(info.nh_pos);
            c.next_header = info.next_header;
        }
        let slab = &self.slab.ctx;
        self.index
            .insert_unique(hash, idx, |&i| slab[i as usize].hash);
        self.last = idx;
        self.stats.fragments_accepted += 1;
        self.stats.datagrams_started += 1;
        self.stats.contexts_live += 1;
        self.add_held(held);
        IpFragOutcome::Pending
    }

    /// A fragment of a datagram with a live context.
    fn insert_existing(
        &mut self,
        idx: u32,
        out: &mut PacketStore,
        packet: &[u8],
        info: &FragInfo,
        end: usize,
    ) -> IpFragOutcome {
        self.last = idx;
        let c = &self.slab.ctx[idx as usize];
        let (start16, end16) = (as_u16(info.offset as usize), as_u16(end));
        let end32 = end as u32;
        // Every check happens before any byte is copied.
        if !info.more && c.total != NO_TOTAL && c.total != end32 {
            return self.drop_datagram(idx, IpFragDrop::TotalMismatch);
        }
        let pos = match self.slab.place(idx, start16, end16) {
            Place::At(pos) => pos,
            Place::Duplicate => return self.drop_fragment(IpFragDrop::Duplicate),
            Place::Overlap => return self.drop_datagram(idx, IpFragDrop::Overlap),
        };
        let past_end = if info.more {
            c.total != NO_TOTAL && end32 > c.total
        } else {
            end32 < c.max_end
        };
        if past_end {
            return self.drop_datagram(idx, IpFragDrop::PastEnd);
        }
        let first = info.offset == 0;
        let hdr_len = if first {
            info.hdr_len
        } else {
            usize::from(c.hdr_len)
        };
        let total = if info.more { c.total } else { end32 };
        if hdr_len != 0 && total != NO_TOTAL && hdr_len + total as usize > self.max_datagram {
            return self.drop_datagram(idx, IpFragDrop::TooLarge);
        }
        if c.nfrags >= self.max_fragments {
            return self.drop_datagram(idx, IpFragDrop::TooManyFragments);
        }
        let len = info.data.len();
        if total != NO_TOTAL && c.received as usize + len == total as usize {
            // The last missing piece: gather straight into the output, not stored.
            return self.complete(idx, out, packet, info, total as usize);
        }
        let stored = if first { info.hdr_len + len } else { len };
        let Some(buf) = self.frags.alloc(stored) else {
            return self.drop_fragment(IpFragDrop::MemoryCap);
        };
        self.store_fragment(&buf, packet, info);
        self.slab.insert(idx, pos, start16, end16, buf);
        let held = held_bytes(stored);
        let c = &mut self.slab.ctx[idx as usize];
        c.received += len as u32;
        c.max_end = c.max_end.max(end32);
        c.total = total;
        c.held += held as u32;
        if first {
            c.hdr_len = as_u16(info.hdr_len);
            c.nh_pos = as_u16(info.nh_pos);
            c.next_header = info.next_header;
        }
        self.stats.fragments_accepted += 1;
        self.add_held(held);
        IpFragOutcome::Pending
    }

    /// Copy a fragment into its private buffer: the header first for the offset-0 fragment
    /// (the IPv6 Fragment header is skipped), then its data.
    fn store_fragment(&mut self, buf: &BufHandle, packet: &[u8], info: &FragInfo) {
        let dst = self.frags.get_mut(buf);
        let data = &packet[info.data.clone()];
        if info.offset == 0 {
            dst[..info.hdr_len].copy_from_slice(&packet[..info.hdr_len]);
            dst[info.hdr_len..].copy_from_slice(data);
        } else {
            dst.copy_from_slice(data);
        }
    }

    /// `info` completes context `idx` (its data fills the last hole): gather the stored
    /// fragments and this one into a new buffer of `out`, fix the header, free the context.
    fn complete(
        &mut self,
        idx: u32,
        out: &mut PacketStore,
        packet: &[u8],
        info: &FragInfo,
        total: usize,
    ) -> IpFragOutcome {
        let c = &self.slab.ctx[idx as usize];
        let (hdr, nh_pos, next_header) = if info.offset == 0 {
            (info.hdr_len, info.nh_pos, info.next_header)
        } else {
            (usize::from(c.hdr_len), usize::from(c.nh_pos), c.next_header)
        };
        let len = hdr + total;
        let Some(ob) = out.alloc(len) else {
            return self.drop_datagram(idx, IpFragDrop::StoreFull);
        };
        let dst = out.get_mut(&ob);
        for &p in self.slab.pieces(idx) {
            let src = self.slab.buf(idx, p).map_or(&[][..], |b| self.frags.get(b));
            let at = if p.start == 0 {
                0
            } else {
                hdr + usize::from(p.start)
            };
            if let Some(d) = dst.get_mut(at..at + src.len()) {
                d.copy_from_slice(src);
            }
        }
        let data = &packet[info.data.clone()];
        if info.offset == 0 {
            dst[..hdr].copy_from_slice(&packet[..hdr]);
        }
        let at = hdr + info.offset as usize;
        dst[at..at + data.len()].copy_from_slice(data);
        fix_header(dst, info.key.v6, hdr, nh_pos, next_header);
        self.free_bufs(idx);
        self.remove(idx);
        self.stats.fragments_accepted += 1;
        self.stats.contexts_live -= 1;
        self.stats.datagrams_completed += 1;
        IpFragOutcome::Complete { buf: ob, len }
    }

    #[inline]
    fn add_held(&mut self, held: usize) {
        self.stats.bytes_held += held;
        self.stats.peak_bytes_held = self.stats.peak_bytes_held.max(self.stats.bytes_held);
    }

    /// Count a drop of this fragment alone.
    #[inline]
    fn drop_fragment(&mut self, reason: IpFragDrop) -> IpFragOutcome {
        self.stats.fragments_dropped += 1;
        self.stats.drops.count(reason);
        IpFragOutcome::Dropped(reason)
    }

    /// Drop the whole datagram of live context `idx` (this fragment included): free its
    /// buffers now, keep a tombstone until the original deadline.
    #[cold]
    fn drop_datagram(&mut self, idx: u32, reason: IpFragDrop) -> IpFragOutcome {
        self.free_live(idx);
        self.slab.ctx[idx as usize].kind = Kind::Tomb;
        self.stats.tombstones_live += 1;
        self.drop_fragment(reason)
    }

    /// Free the buffers of live context `idx` and count its datagram as dropped.
    fn free_live(&mut self, idx: u32) {
        self.stats.fragments_discarded += u64::from(self.slab.ctx[idx as usize].nfrags);
        self.free_bufs(idx);
        self.stats.contexts_live -= 1;
        self.stats.datagrams_dropped += 1;
    }

    /// Give every fragment buffer of context `idx` back to the private store.
    fn free_bufs(&mut self, idx: u32) {
        let n = usize::from(self.slab.ctx[idx as usize].nfrags);
        for i in 0..n {
            if let Some(b) = self.slab.take_buf(idx, i) {
                self.frags.free(b);
            }
        }
        let c = &mut self.slab.ctx[idx as usize];
        self.stats.bytes_held -= c.held as usize;
        c.held = 0;
        c.nfrags = 0;
    }

    /// Remove context or tombstone `idx` (its deadline passed): a live one counts a timeout.
    fn expire(&mut self, idx: u32) {
        match self.slab.ctx[idx as usize].kind {
            Kind::Live => {
                self.free_live(idx);
                self.stats.drops.count(IpFragDrop::Timeout);
            }
            Kind::Tomb => self.stats.tombstones_live -= 1,
            Kind::Free => {
                debug_assert!(false, "invariant: only used slots expire");
                return;
            }
        }
        self.remove(idx);
    }

    /// Take slot `idx` out of the index and give it back to the slab.
    fn remove(&mut self, idx: u32) {
        let hash = self.slab.ctx[idx as usize].hash;
        if let Ok(entry) = self.index.find_entry(hash, |&i| i == idx) {
            entry.remove();
        } else {
            debug_assert!(false, "invariant: every used slot is in the index");
        }
        self.slab.release(idx);
    }

    /// Check every internal invariant; `Err` names the first broken one.
    #[cfg(any(test, fuzzing, feature = "fuzzing"))]
    pub(crate) fn check_invariants(&self) -> Result<(), &'static str> {
        let s = &self.stats;
        if s.fragments_in != s.fragments_accepted + s.fragments_dropped {
            return Err("fragments_in != accepted + dropped");
        }
        if s.datagrams_started
            != s.datagrams_completed + s.datagrams_dropped + s.contexts_live as u64
        {
            return Err("datagrams_started != completed + dropped + live");
        }
        if s.fragments_dropped != s.drops.total() - s.drops.timeout {
            return Err("fragments_dropped != drops other than timeouts");
        }
        if s.bytes_held != self.frags.used_bytes()
            || s.bytes_held > self.config.mem_cap_bytes
            || s.bytes_held > s.peak_bytes_held
        {
            return Err("bytes_held out of sync with the store, the cap or the peak");
        }
        let (mut live, mut tombs, mut held) = (0usize, 0usize, 0usize);
        let (mut prev, mut prev_deadline, mut cur) = (NIL, Instant::ZERO, self.slab.head);
        while cur != NIL {
            let c = &self.slab.ctx[cur as usize];
            if c.prev != prev || c.deadline < prev_deadline {
                return Err("deadline list broken or unsorted");
            }
            let slab = &self.slab.ctx;
            if self.hasher.hash_one(c.key) != c.hash
                || self.index.find(c.hash, |&i| slab[i as usize].key == c.key) != Some(&cur)
            {
                return Err("context not indexed under its key");
            }
            match c.kind {
                Kind::Live => {
                    live += 1;
                    let ps = self.slab.pieces(cur);
                    if ps.is_empty() || ps.len() > usize::from(self.max_fragments) {
                        return Err("fragment count out of range");
                    }
                    let (mut sum, mut bytes, mut max_end) = (0u32, 0usize, 0u32);
                    for (i, p) in ps.iter().enumerate() {
                        if p.start >= p.end || (i > 0 && ps[i - 1].end > p.start) {
                            return Err("pieces empty, overlapping or unsorted");
                        }
                        let b = self.slab.buf(cur, *p).ok_or("piece without buffer")?;
                        let want = usize::from(p.end - p.start)
                            + if p.start == 0 {
                                usize::from(c.hdr_len)
                            } else {
                                0
                            };
                        if self.frags.try_get(b).map(<[u8]>::len) != Some(want) {
                            return Err("piece buffer has the wrong length");
                        }
                        sum += u32::from(p.end - p.start);
                        bytes += held_bytes(want);
                        max_end = max_end.max(u32::from(p.end));
                    }
                    if sum != c.received || bytes != c.held as usize || max_end != c.max_end {
                        return Err("received, held or max_end wrong");
                    }
                    if c.total != NO_TOTAL && (c.max_end > c.total || c.received >= c.total) {
                        return Err("data past the end or complete but kept");
                    }
                    if (c.hdr_len != 0) != (ps[0].start == 0) {
                        return Err("header length without the first fragment");
                    }
                    held += c.held as usize;
                }
                Kind::Tomb => {
                    tombs += 1;
                    if c.nfrags != 0 || c.held != 0 {
                        return Err("tombstone holds buffers");
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
        if live + tombs != self.index.len() || live + tombs != self.slab.used {
            return Err("index or slab size out of sync");
        }
        if self.slab.used > self.config.max_contexts {
            return Err("context cap exceeded");
        }
        Ok(())
    }
}

/// Fix the header of a reassembled packet `p` whose header is `hdr` bytes: IPv4 total length,
/// MF and offset cleared (DF kept), checksum; IPv6 payload length and the next-header byte at
/// `nh_pos` (RFC 8200 §4.5).
fn fix_header(p: &mut [u8], v6: bool, hdr: usize, nh_pos: usize, next_header: u8) {
    let len = as_u16(p.len());
    if v6 {
        if let Some(b) = p.get_mut(nh_pos) {
            *b = next_header;
        }
        p[4..6].copy_from_slice(&(len - 40).to_be_bytes());
    } else {
        p[2..4].copy_from_slice(&len.to_be_bytes());
        let flags = u16::from_be_bytes([p[6], p[7]]) & V4_DF;
        p[6..8].copy_from_slice(&flags.to_be_bytes());
        parse::ipv4_fill_checksum(&mut p[..hdr]);
    }
}
