//! The packet store: a bounded slab arena of packet buffers, addressed by handles.
//!
//! Owns: the bytes of every datagram the engine holds between stages (reassembled datagrams,
//! datagrams waiting in the reorder stage), its byte cap, and the handle discipline. Does not
//! own: what is in the bytes, who holds which handle, or when a buffer is freed — the
//! reassembler allocates, the reorder stage holds, the engine frees after delivery.
//!
//! # Contract
//!
//! - [`PacketStore::alloc`] returns a [`BufHandle`] to a buffer of exactly `len` bytes (contents
//!   unspecified), or `None` if `len` is above `max_buf_bytes` or the byte cap is reached. A
//!   failed alloc is the caller's counted drop (`DropReason::StoreFull`).
//! - A [`BufHandle`] is neither `Clone` nor `Copy`: holding one is the responsibility to hand it
//!   back with [`PacketStore::free`], which consumes it.
//! - Memory is taken from the global allocator lazily, one 64 KiB page at a time, up to the cap,
//!   and never given back. Once the working set has been reached ("warm-up"), `alloc` and `free`
//!   perform **zero** heap allocations: free slots and free pages are reused from free lists.
//!
//! # Stale and foreign handles
//!
//! Every slot carries a 32-bit generation that is bumped on `alloc` and again on `free` (odd =
//! live). A handle remembers the generation it was issued with. A handle whose generation does
//! not match (a handle of this store that was already freed, which the type system makes hard
//! but a bug in unsafe-free code could still produce by rebuilding the store, or a handle of
//! *another* store that happens to point to a free slot here) is **ignored and counted**:
//! `free` does nothing, `get`/`get_mut` return an empty slice, `try_get` returns `None`, and
//! [`PacketStore::stale_handle_count`] goes up. There is no undefined behaviour (the crate
//! forbids `unsafe`) and no silent corruption of a live buffer by a stale handle of this store.
//! Limits, stated honestly: a handle of another store that points at a *live* slot with the
//! same generation is indistinguishable from the real owner's handle, and a slot's generation
//! repeats after 2^31 alloc/free cycles (ABA after ~2 billion reuses of one slot).
//!
//! # Why a page-based slab with size classes
//!
//! Datagrams range from a 64-byte probe to a 9000-byte jumbo frame to a 64 KiB reassembled
//! datagram, and the store holds tens of thousands of them at once. The choices, and why:
//!
//! - **Size classes** (128, 256, 512, 1 K, 2 K, 4 K, 9216, 16 K, 64 K) keep `alloc` O(1): the
//!   class is a couple of comparisons, and each class has its own free list, so no search and no
//!   splitting or coalescing. 9216 exists because jumbo frames (9000 + headers) are the common
//!   large case and a 16 K slot would waste 44 %. Internal waste is bounded by the class ratio.
//! - **64 KiB pages shared by all classes.** A store that kept one arena per class would hoard:
//!   a burst of small packets would pin memory that a later burst of jumbo frames cannot use.
//!   Here each page is carved into slots of one class only while it has a live slot; when its
//!   last slot is freed the page goes back to a shared free-page list and may be re-carved for
//!   another class. Carving is lazy (a bump index plus an intrusive free list per page), so
//!   taking a page is O(1), not O(slots per page). This is the classic slab allocator (Bonwick,
//!   USENIX 1994) without constructors.
//! - **Handles, not references.** The engine's stages pass buffers around in queues and tables;
//!   a `u32` slot index plus a `u32` generation is 8 bytes, `Copy`-free by design, survives the
//!   page vector growing, and lets a stale handle be detected instead of aliasing a live buffer.
//! - **Accounting.** [`PacketStore::used_bytes`] counts the slot size of every live buffer (the
//!   real footprint, class size rather than requested length); the cap bounds it. The number of
//!   pages is bounded separately by `ceil(cap_bytes / 64 KiB) + 9` (one spare page per size
//!   class, so that a small cap is not defeated by a page held half-used by another class):
//!   the memory taken from the global allocator never exceeds the cap rounded up to a page plus
//!   576 KiB (plus slot metadata, 8 bytes per 128 bytes of page). With mixed sizes and
//!   unlucky frees, pages can still be fragmented (one live small buffer keeps a page in its
//!   class); an alloc then fails although `used_bytes < cap_bytes`. That is the price of O(1)
//!   alloc; [`PacketStore::reserved_bytes`] shows it.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// Bytes in one page. Also the largest buffer the store can hand out.
pub const PAGE_BYTES: usize = 65_536;

/// The largest buffer the store can hand out (one whole page).
pub const MAX_BUF_BYTES: usize = PAGE_BYTES;

/// Slot sizes, in bytes, ascending. A buffer of `len` bytes takes the first class `>= len`.
pub const SIZE_CLASSES: [usize; 9] = [128, 256, 512, 1024, 2048, 4096, 9216, 16_384, 65_536];

const NUM_CLASSES: usize = SIZE_CLASSES.len();
/// Slots per page for each class (`PAGE_BYTES / class`, rounded down).
const SLOTS_PER_PAGE: [u16; NUM_CLASSES] = [512, 256, 128, 64, 32, 16, 7, 4, 1];
/// `log2` of the most slots a page can have (512, for the 128-byte class).
const SLOT_BITS: u32 = 9;
const SLOT_MASK: u32 = (1 << SLOT_BITS) - 1;
const MAX_SLOTS_PER_PAGE: usize = 1 << SLOT_BITS;
/// Page indices must fit in the handle's slot field next to the slot bits.
const MAX_PAGES: usize = 1 << (32 - SLOT_BITS);

const NIL: u32 = u32::MAX;
const NIL16: u16 = u16::MAX;
const NO_CLASS: u8 = u8::MAX;

/// A handle to one buffer in a [`PacketStore`].
///
/// Not `Clone`, not `Copy`: whoever holds the handle must eventually give it back with
/// [`PacketStore::free`]. Dropping a handle without freeing it leaks the buffer until the store
/// itself is dropped.
#[derive(Debug, PartialEq, Eq)]
pub struct BufHandle {
    /// `page << SLOT_BITS | slot in page`.
    slot: u32,
    /// The slot's generation when the handle was issued (odd).
    generation: u32,
}

/// Per-slot metadata.
#[derive(Clone, Copy, Default)]
struct SlotMeta {
    /// Odd while the slot is live, even while it is free.
    generation: u32,
    /// Live: the buffer's length in bytes. Free: the next free slot of the same page, or `NIL`.
    len_or_next: u32,
}

/// Per-page metadata.
#[derive(Clone, Copy)]
struct PageMeta {
    /// Size-class index while the page is carved, `NO_CLASS` while it is on the free list.
    class: u8,
    /// `SIZE_CLASSES[class]` (0 while free): spares a table lookup on every access.
    slot_bytes: u32,
    /// Live slots.
    live: u16,
    /// Slots `0..bump` have been handed out at least once since the page was carved.
    bump: u16,
    /// Head of the page's list of freed slots (below `bump`), or `NIL16`.
    free_head: u16,
    /// Doubly linked list of the class's partial pages (pages with a free slot), or, for a
    /// free page, `next` links the free-page list.
    prev: u32,
    next: u32,
}

impl PageMeta {
    const FREE: Self = Self {
        class: NO_CLASS,
        slot_bytes: 0,
        live: 0,
        bump: 0,
        free_head: NIL16,
        prev: NIL,
        next: NIL,
    };
}

/// A bounded slab arena of packet buffers. See the module documentation.
///
/// Call protocol: `alloc` → write through `get_mut` → pass the handle on → `get` → `free`. All
/// operations are O(1); none reads a clock.
pub struct PacketStore {
    /// The page bytes. Grows one page at a time up to `page_budget`, never shrinks.
    pages: Vec<Box<[u8]>>,
    page_meta: Vec<PageMeta>,
    /// `MAX_SLOTS_PER_PAGE` entries per page.
    slots: Vec<SlotMeta>,
    /// Head of each class's list of partial pages.
    partial: [u32; NUM_CLASSES],
    /// Head of the free-page list.
    free_pages: u32,
    cap_bytes: usize,
    max_buf_bytes: usize,
    page_budget: usize,
    used_bytes: usize,
    live: usize,
    stale_handles: u64,
}

impl fmt::Debug for PacketStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacketStore")
            .field("cap_bytes", &self.cap_bytes)
            .field("max_buf_bytes", &self.max_buf_bytes)
            .field("used_bytes", &self.used_bytes)
            .field("reserved_bytes", &self.reserved_bytes())
            .field("live", &self.live)
            .field("stale_handles", &self.stale_handles)
            .finish_non_exhaustive()
    }
}

impl PacketStore {
    /// A store that holds at most `cap_bytes` bytes of live buffers (counted by slot size) and
    /// hands out buffers of at most `max_buf_bytes` bytes (clamped to [`MAX_BUF_BYTES`]).
    ///
    /// Allocates nothing up front: pages are taken lazily as buffers are allocated.
    #[must_use]
    pub fn new(cap_bytes: usize, max_buf_bytes: usize) -> Self {
        let page_budget = if cap_bytes == 0 {
            0
        } else {
            (cap_bytes.div_ceil(PAGE_BYTES) + NUM_CLASSES).min(MAX_PAGES)
        };
        Self {
            pages: Vec::new(),
            page_meta: Vec::new(),
            slots: Vec::new(),
            partial: [NIL; NUM_CLASSES],
            free_pages: NIL,
            cap_bytes,
            max_buf_bytes: max_buf_bytes.min(MAX_BUF_BYTES),
            page_budget,
            used_bytes: 0,
            live: 0,
            stale_handles: 0,
        }
    }

    /// The slot size a buffer of `len` bytes occupies (what [`used_bytes`](Self::used_bytes)
    /// counts for it), or `None` if `len` is above [`MAX_BUF_BYTES`].
    #[inline]
    #[must_use]
    pub fn class_bytes(len: usize) -> Option<usize> {
        class_index(len).map(|c| SIZE_CLASSES[c])
    }

    /// A buffer of exactly `len` bytes, contents unspecified; `None` if `len > max_buf_bytes`,
    /// if the byte cap would be exceeded, or if no page is left (see the module doc on
    /// fragmentation). O(1); allocates from the global allocator only when a new page is needed.
    #[inline]
    pub fn alloc(&mut self, len: usize) -> Option<BufHandle> {
        if len > self.max_buf_bytes {
            return None;
        }
        let class = class_index(len)?;
        let class_bytes = SIZE_CLASSES[class];
        if self.used_bytes + class_bytes > self.cap_bytes {
            return None;
        }
        let page = match self.partial[class] {
            NIL => self.take_page(class)?,
            p => p,
        };
        let pi = page as usize;
        let base = pi * MAX_SLOTS_PER_PAGE;
        let pm = &mut self.page_meta[pi];
        let idx = if pm.free_head == NIL16 {
            let i = pm.bump;
            pm.bump += 1;
            i
        } else {
            let i = pm.free_head;
            // Free slots store the next free slot of the page (a u16 value or NIL).
            pm.free_head =
                u16::try_from(self.slots[base + usize::from(i)].len_or_next).unwrap_or(NIL16);
            i
        };
        pm.live += 1;
        if pm.live == SLOTS_PER_PAGE[class] {
            self.unlink_partial(class, page);
        }
        let meta = &mut self.slots[base + usize::from(idx)];
        meta.generation = meta.generation.wrapping_add(1);
        // invariant: len <= MAX_BUF_BYTES = 65536 fits in u32.
        meta.len_or_next = u32::try_from(len).unwrap_or(u32::MAX);
        self.used_bytes += class_bytes;
        self.live += 1;
        Some(BufHandle {
            slot: (page << SLOT_BITS) | u32::from(idx),
            generation: meta.generation,
        })
    }

    /// The buffer's bytes: exactly the `len` it was allocated with (or truncated to). Empty for
    /// a stale or foreign handle (see the module doc).
    #[inline(always)]
    #[must_use]
    pub fn get(&self, h: &BufHandle) -> &[u8] {
        self.try_get(h).unwrap_or(&[])
    }

    /// The buffer's bytes, mutable. Empty for a stale or foreign handle.
    #[inline(always)]
    pub fn get_mut(&mut self, h: &BufHandle) -> &mut [u8] {
        self.try_get_mut(h).unwrap_or(&mut [])
    }

    /// The buffer's bytes, or `None` for a stale or foreign handle.
    #[inline(always)]
    #[must_use]
    pub fn try_get(&self, h: &BufHandle) -> Option<&[u8]> {
        let (page, off, len) = self.resolve(h)?;
        Some(&self.pages[page][off..off + len])
    }

    /// The buffer's bytes, mutable, or `None` for a stale or foreign handle.
    #[inline(always)]
    pub fn try_get_mut(&mut self, h: &BufHandle) -> Option<&mut [u8]> {
        let (page, off, len) = self.resolve(h)?;
        Some(&mut self.pages[page][off..off + len])
    }

    /// Copy `data` into the buffer at byte `offset`; `false` (nothing written) if it does not
    /// fit in the buffer's length or the handle is stale (counted). One bounds check instead of
    /// `get_mut(h)[offset..][..len]`'s three.
    #[inline(always)]
    pub fn write(&mut self, h: &BufHandle, offset: usize, data: &[u8]) -> bool {
        let Some((page, off, len)) = self.resolve(h) else {
            self.stale_handles += 1;
            return false;
        };
        let end = offset.saturating_add(data.len());
        if end > len {
            return false;
        }
        match self.pages[page].get_mut(off + offset..off + end) {
            Some(dst) => {
                dst.copy_from_slice(data);
                true
            }
            None => false,
        }
    }

    /// Shorten the buffer to `len` bytes (no-op if `len` is not shorter). The slot keeps its
    /// size class. Ignored (and counted) for a stale handle.
    pub fn truncate(&mut self, h: &BufHandle, len: usize) {
        match self.resolve(h) {
            Some((_, _, cur)) if len < cur => {
                // invariant: len < cur <= 65536.
                self.slots[h.slot as usize].len_or_next = u32::try_from(len).unwrap_or(0);
            }
            Some(_) => {}
            None => self.stale_handles += 1,
        }
    }

    /// Give the buffer back. O(1), never allocates. A stale or foreign handle is ignored and
    /// counted in [`stale_handle_count`](Self::stale_handle_count).
    #[inline]
    pub fn free(&mut self, h: BufHandle) {
        let Some((pi, _, _)) = self.resolve(&h) else {
            self.stale_handles += 1;
            return;
        };
        let idx = h.slot & SLOT_MASK;
        let pm = &mut self.page_meta[pi];
        let class = usize::from(pm.class);
        let meta = &mut self.slots[h.slot as usize];
        meta.generation = meta.generation.wrapping_add(1);
        meta.len_or_next = if pm.free_head == NIL16 {
            NIL
        } else {
            u32::from(pm.free_head)
        };
        // invariant: idx < MAX_SLOTS_PER_PAGE = 512 fits in u16.
        pm.free_head = u16::try_from(idx).unwrap_or(NIL16);
        let was_full = pm.live == SLOTS_PER_PAGE[class];
        pm.live -= 1;
        let now_empty = pm.live == 0;
        // invariant: pi < MAX_PAGES fits in u32.
        let page = u32::try_from(pi).unwrap_or(NIL);
        if was_full {
            self.push_partial(class, page);
        }
        if now_empty && !(self.partial[class] == page && self.page_meta[pi].next == NIL) {
            // An empty page goes back to the shared free-page list, unless it is its class's
            // only partial page: that one stays carved, so that a class cycling one buffer
            // (alloc, free, alloc, ...) does not re-take a page each time. Each class thus
            // holds at most one empty page (the page budget has a spare page per class).
            self.unlink_partial(class, page);
            self.page_meta[pi] = PageMeta {
                next: self.free_pages,
                ..PageMeta::FREE
            };
            self.free_pages = page;
        }
        self.used_bytes -= SIZE_CLASSES[class];
        self.live -= 1;
    }

    /// Bytes of live buffers, counted by slot size (the real footprint).
    #[must_use]
    pub fn used_bytes(&self) -> usize {
        self.used_bytes
    }

    /// The byte cap `used_bytes` may not exceed.
    #[must_use]
    pub fn cap_bytes(&self) -> usize {
        self.cap_bytes
    }

    /// The largest buffer `alloc` hands out.
    #[must_use]
    pub fn max_buf_bytes(&self) -> usize {
        self.max_buf_bytes
    }

    /// Live buffers.
    #[must_use]
    pub fn live(&self) -> usize {
        self.live
    }

    /// Page memory taken from the global allocator so far (never given back).
    #[must_use]
    pub fn reserved_bytes(&self) -> usize {
        self.pages.len() * PAGE_BYTES
    }

    /// How many stale or foreign handles were ignored.
    #[must_use]
    pub fn stale_handle_count(&self) -> u64 {
        self.stale_handles
    }

    /// `(page index, byte offset in page, len)` for a live handle of this store.
    #[inline(always)]
    fn resolve(&self, h: &BufHandle) -> Option<(usize, usize, usize)> {
        let meta = self.slots.get(h.slot as usize)?;
        if meta.generation != h.generation || h.generation & 1 == 0 {
            return None;
        }
        let page = (h.slot >> SLOT_BITS) as usize;
        let idx = (h.slot & SLOT_MASK) as usize;
        // A live slot's page is always carved for a class (it is freed only when empty).
        let slot_bytes = self.page_meta[page].slot_bytes as usize;
        Some((page, idx * slot_bytes, meta.len_or_next as usize))
    }

    /// A page for `class`: from the free-page list, else a new one within the budget. The page
    /// is put on the class's partial list.
    #[cold]
    fn take_page(&mut self, class: usize) -> Option<u32> {
        let page = if self.free_pages == NIL {
            if self.pages.len() >= self.page_budget {
                return None;
            }
            let page = u32::try_from(self.pages.len()).ok()?;
            self.pages.push(vec![0u8; PAGE_BYTES].into_boxed_slice());
            self.page_meta.push(PageMeta::FREE);
            self.slots
                .resize(self.slots.len() + MAX_SLOTS_PER_PAGE, SlotMeta::default());
            page
        } else {
            let page = self.free_pages;
            self.free_pages = self.page_meta[page as usize].next;
            page
        };
        // invariant: class < NUM_CLASSES = 9 fits in u8.
        self.page_meta[page as usize] = PageMeta {
            class: u8::try_from(class).unwrap_or(NO_CLASS),
            // invariant: class sizes fit in u32.
            slot_bytes: u32::try_from(SIZE_CLASSES[class]).unwrap_or(0),
            ..PageMeta::FREE
        };
        self.push_partial(class, page);
        Some(page)
    }

    fn push_partial(&mut self, class: usize, page: u32) {
        let head = self.partial[class];
        let pm = &mut self.page_meta[page as usize];
        pm.prev = NIL;
        pm.next = head;
        if head != NIL {
            self.page_meta[head as usize].prev = page;
        }
        self.partial[class] = page;
    }

    fn unlink_partial(&mut self, class: usize, page: u32) {
        let PageMeta { prev, next, .. } = self.page_meta[page as usize];
        if prev == NIL {
            self.partial[class] = next;
        } else {
            self.page_meta[prev as usize].next = next;
        }
        if next != NIL {
            self.page_meta[next as usize].prev = prev;
        }
        let pm = &mut self.page_meta[page as usize];
        pm.prev = NIL;
        pm.next = NIL;
    }

    /// Check every internal invariant; `Err` names the first one broken.
    #[cfg(any(test, fuzzing, feature = "fuzzing"))]
    pub(crate) fn check_invariants(&self) -> Result<(), &'static str> {
        let mut used = 0;
        let mut live = 0;
        let mut empty_per_class = [0u8; NUM_CLASSES];
        for (pi, pm) in self.page_meta.iter().enumerate() {
            let base = pi * MAX_SLOTS_PER_PAGE;
            let slots = &self.slots[base..base + MAX_SLOTS_PER_PAGE];
            let live_here = slots.iter().filter(|s| s.generation & 1 == 1).count();
            if pm.class == NO_CLASS {
                if live_here != 0 {
                    return Err("free page has live slots");
                }
                continue;
            }
            let class = usize::from(pm.class);
            if pm.slot_bytes as usize != SIZE_CLASSES[class] {
                return Err("page slot size out of sync with its class");
            }
            if live_here != usize::from(pm.live) {
                return Err("page live count wrong");
            }
            if pm.live == 0 {
                empty_per_class[class] += 1;
                if empty_per_class[class] > 1 {
                    return Err("a class keeps more than one empty page");
                }
            }
            if slots[usize::from(pm.bump)..]
                .iter()
                .any(|s| s.generation & 1 == 1)
            {
                return Err("live slot above bump");
            }
            used += live_here * SIZE_CLASSES[class];
            live += live_here;
            for s in slots.iter().filter(|s| s.generation & 1 == 1) {
                if s.len_or_next as usize > SIZE_CLASSES[class] {
                    return Err("len above class size");
                }
            }
        }
        if used != self.used_bytes || live != self.live {
            return Err("used_bytes or live out of sync");
        }
        if self.used_bytes > self.cap_bytes || self.pages.len() > self.page_budget {
            return Err("cap exceeded");
        }
        Ok(())
    }
}

/// The size-class index for `len`, or `None` above [`MAX_BUF_BYTES`].
#[inline]
fn class_index(len: usize) -> Option<usize> {
    if len <= 4096 {
        // 128 → 0, 256 → 1, ..., 4096 → 5.
        Some(len.max(128).next_power_of_two().trailing_zeros() as usize - 7)
    } else if len <= 9216 {
        Some(6)
    } else if len <= 16_384 {
        Some(7)
    } else if len <= MAX_BUF_BYTES {
        Some(8)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_index_matches_table() {
        for len in [
            0, 1, 127, 128, 129, 256, 257, 1500, 4096, 4097, 9000, 9216, 9217, 65_536,
        ] {
            let c = class_index(len).expect("in range");
            assert!(len <= SIZE_CLASSES[c], "len {len} fits class {c}");
            if c > 0 {
                assert!(
                    len > SIZE_CLASSES[c - 1],
                    "len {len} is not in a smaller class"
                );
            }
        }
        assert_eq!(class_index(65_537), None);
        for (c, &size) in SIZE_CLASSES.iter().enumerate() {
            assert_eq!(usize::from(SLOTS_PER_PAGE[c]), PAGE_BYTES / size);
        }
    }

    #[test]
    fn alloc_gives_exact_len_and_distinct_memory() {
        let mut s = PacketStore::new(1 << 20, 9216);
        let a = s.alloc(100).expect("room");
        let b = s.alloc(1500).expect("room");
        assert_eq!(s.get(&a).len(), 100);
        assert_eq!(s.get(&b).len(), 1500);
        s.get_mut(&a).fill(0xaa);
        s.get_mut(&b).fill(0xbb);
        assert!(s.get(&a).iter().all(|&x| x == 0xaa));
        assert!(s.get(&b).iter().all(|&x| x == 0xbb));
        assert_eq!(s.used_bytes(), 128 + 2048);
        assert_eq!(s.live(), 2);
        s.free(a);
        s.free(b);
        assert_eq!(s.used_bytes(), 0);
        assert_eq!(s.live(), 0);
        s.check_invariants().unwrap();
    }

    #[test]
    fn many_buffers_do_not_alias() {
        let mut s = PacketStore::new(4 << 20, 65_536);
        let mut hs = Vec::new();
        for i in 0..3000usize {
            let len = [10, 200, 700, 1500, 3000, 9000, 12_000, 40_000][i % 8];
            let h = s.alloc(len).expect("room");
            s.get_mut(&h).fill(u8::try_from(i % 251).unwrap());
            hs.push((h, len, i));
            if i % 3 == 0 {
                let (h, _, _) = hs.swap_remove(i % hs.len());
                s.free(h);
            }
            if s.used_bytes() > 3 << 20 {
                let (h, _, _) = hs.swap_remove(0);
                s.free(h);
            }
        }
        s.check_invariants().unwrap();
        for (h, len, i) in &hs {
            let b = s.get(h);
            assert_eq!(b.len(), *len);
            assert!(
                b.iter().all(|&x| usize::from(x) == i % 251),
                "buffer {i} intact"
            );
        }
        for (h, _, _) in hs {
            s.free(h);
        }
        assert_eq!((s.used_bytes(), s.live()), (0, 0));
        s.check_invariants().unwrap();
    }

    #[test]
    fn refuses_above_max_buf_and_cap() {
        let mut s = PacketStore::new(1024, 600);
        assert!(s.alloc(601).is_none(), "above max_buf_bytes");
        let a = s.alloc(512).expect("room"); // 512
        let b = s.alloc(300).expect("room"); // 512 → 1024 used
        assert!(s.alloc(1).is_none(), "cap reached");
        assert_eq!(s.used_bytes(), 1024);
        s.free(a);
        let c = s.alloc(1).expect("room again");
        assert_eq!(s.used_bytes(), 512 + 128);
        s.free(b);
        s.free(c);
        // max_buf_bytes is clamped to one page.
        assert_eq!(
            PacketStore::new(1 << 30, 1 << 20).max_buf_bytes(),
            MAX_BUF_BYTES
        );
        assert!(
            PacketStore::new(0, 100).alloc(1).is_none(),
            "zero cap holds nothing"
        );
    }

    #[test]
    fn empty_pages_are_reused_by_other_classes() {
        // Fill pages with small buffers, free them all, then jumbo buffers reuse the pages.
        let mut s = PacketStore::new(2 * PAGE_BYTES, MAX_BUF_BYTES);
        let small: Vec<_> = (0..1024).map(|_| s.alloc(100).expect("room")).collect();
        assert_eq!(s.reserved_bytes(), 2 * PAGE_BYTES);
        assert!(s.alloc(100).is_none(), "byte cap reached");
        for h in small {
            s.free(h);
        }
        // The 128-byte class keeps one empty page carved; the other page is re-carved.
        let big1 = s.alloc(65_536).expect("page reused");
        assert_eq!(s.reserved_bytes(), 2 * PAGE_BYTES, "no new page");
        let small = s.alloc(100).expect("the kept page");
        assert_eq!(s.reserved_bytes(), 2 * PAGE_BYTES, "no new page");
        s.free(big1);
        s.free(small);
        s.check_invariants().unwrap();
    }

    #[test]
    fn fragmentation_limits_pages_not_bytes() {
        // 20 pages of cap → 29 pages of budget. Pin 20 pages with one small buffer each, take
        // the 9 spare pages with jumbo buffers: a further jumbo alloc fails for lack of a page
        // although used_bytes is well below the cap (documented behaviour).
        let mut s = PacketStore::new(20 * PAGE_BYTES, MAX_BUF_BYTES);
        let mut small: Vec<_> = (0..20 * 512).map(|_| s.alloc(100).expect("room")).collect();
        let pinned: Vec<_> = small
            .drain(..)
            .enumerate()
            .filter_map(|(i, h)| {
                if i % 512 == 0 {
                    Some(h)
                } else {
                    s.free(h);
                    None
                }
            })
            .collect();
        assert_eq!(s.used_bytes(), 20 * 128);
        let big: Vec<_> = (0..9)
            .map(|_| s.alloc(65_536).expect("spare page"))
            .collect();
        assert!(s.used_bytes() + 65_536 <= s.cap_bytes());
        assert!(s.alloc(65_536).is_none(), "no page left");
        assert_eq!(s.reserved_bytes(), 29 * PAGE_BYTES);
        for h in pinned.into_iter().chain(big) {
            s.free(h);
        }
        let again = s.alloc(65_536).expect("pages free again");
        s.free(again);
        s.check_invariants().unwrap();
    }

    #[test]
    fn stale_and_foreign_handles_are_ignored_and_counted() {
        let mut s = PacketStore::new(1 << 20, 2048);
        let a = s.alloc(100).expect("room");
        let forged = BufHandle {
            slot: a.slot,
            generation: a.generation,
        };
        s.free(a);
        // The slot is reused by a new live buffer; the old handle must not reach it.
        let b = s.alloc(100).expect("room");
        assert_eq!(b.slot, forged.slot, "same slot reused");
        s.get_mut(&b).fill(7);
        assert!(s.try_get(&forged).is_none());
        assert!(s.get(&forged).is_empty());
        assert!(s.get_mut(&forged).is_empty());
        s.free(forged);
        assert_eq!(s.stale_handle_count(), 1);
        assert_eq!(s.live(), 1, "live buffer not freed by the stale handle");
        assert!(s.get(&b).iter().all(|&x| x == 7));
        // A handle from another, bigger store: out of range here.
        let mut other = PacketStore::new(1 << 24, 2048);
        let far: Vec<_> = (0..2000)
            .map(|_| other.alloc(2000).expect("room"))
            .collect();
        let last = far.into_iter().last().expect("non-empty");
        assert!(s.try_get(&last).is_none());
        s.free(last);
        assert_eq!(s.stale_handle_count(), 2);
        s.free(b);
        s.check_invariants().unwrap();
    }

    #[test]
    fn write_copies_in_bounds_only() {
        let mut s = PacketStore::new(1 << 20, 2048);
        let a = s.alloc(100).expect("room");
        s.get_mut(&a).fill(0);
        assert!(s.write(&a, 90, &[7; 10]));
        assert!(!s.write(&a, 91, &[7; 10]), "one byte past the end");
        assert!(!s.write(&a, usize::MAX, &[7; 1]), "overflowing offset");
        assert_eq!(&s.get(&a)[88..], &[0, 0, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7]);
        let stale = BufHandle {
            slot: a.slot,
            generation: a.generation,
        };
        s.free(a);
        assert!(!s.write(&stale, 0, &[1]));
        assert_eq!(s.stale_handle_count(), 1);
    }

    #[test]
    fn truncate_shortens() {
        let mut s = PacketStore::new(1 << 20, 2048);
        let a = s.alloc(1500).expect("room");
        s.truncate(&a, 60);
        assert_eq!(s.get(&a).len(), 60);
        s.truncate(&a, 100);
        assert_eq!(s.get(&a).len(), 60, "truncate never grows");
        assert_eq!(s.used_bytes(), 2048, "class kept");
        s.free(a);
    }

    #[test]
    fn steady_state_reuses_pages() {
        let mut s = PacketStore::new(1 << 24, 9216);
        for round in 0..50 {
            let hs: Vec<_> = (0..300)
                .map(|i| s.alloc(64 + (i * 37 + round) % 9000))
                .collect();
            for h in hs.into_iter().flatten() {
                s.free(h);
            }
        }
        let reserved = s.reserved_bytes();
        for round in 0..50 {
            let hs: Vec<_> = (0..300)
                .map(|i| s.alloc(64 + (i * 37 + round) % 9000))
                .collect();
            for h in hs.into_iter().flatten() {
                s.free(h);
            }
        }
        assert_eq!(s.reserved_bytes(), reserved, "no growth after warm-up");
        assert_eq!(s.live(), 0);
    }
}
