//! The bounded flow table: a pre-sized slab of entries, a seeded hash index and an intrusive
//! LRU list, with idle expiry and an eviction policy.
//!
//! Owns: storage, lookup, LRU order, idle expiry and eviction of `K → V` entries. Does not own
//! what a key means (see [`super::FlowKey`]) nor what the values hold: evicted and expired
//! values are handed back to the caller, who frees whatever they reference.
//!
//! # Why this layout
//!
//! - **Slab + index.** Entries live in a `Vec` reserved to `capacity` at construction; a slot
//!   number (`u32`) is stable for the life of an entry, so the engine may cache it. The hash
//!   index is a [`hashbrown::HashTable`] of slot numbers (4 bytes a bucket, not a copy of the
//!   key), hashed with a seeded foldhash so an attacker who does not know the seed cannot aim
//!   collisions at one bucket chain.
//! - **No allocation after `new`.** The index is created with room for twice the capacity.
//!   hashbrown re-hashes *in place* (no allocation) when tombstones use up its growth budget
//!   while it holds at most half its full capacity, which is always the case here. The counting
//!   allocator test in `tests/zero_alloc_flow.rs` holds this to account under churn.
//! - **Intrusive LRU list by slot index.** A hit moves the entry to the head in O(1); the tail
//!   is the least recently used entry, so eviction is O(1) and idle expiry walks from the tail
//!   and stops at the first entry that is still live: the work is proportional to what is
//!   expired, and capped by a budget.
//! - Last-seen times are kept non-decreasing from tail to head (a `now` earlier than the
//!   head's is clamped), so the list stays sorted even if a caller passes a stale `now`.

use core::fmt;
use core::hash::{BuildHasher, Hash};
use core::time::Duration;

use alloc::vec::Vec;
use foldhash::fast::FixedState;
use hashbrown::HashTable;

use crate::time::Instant;

/// "No slot" in the intrusive lists.
const NIL: u32 = u32::MAX;

/// What to do when the table is full and a new key arrives.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum EvictionPolicy {
    /// Refuse the new key ([`InsertError::Full`]); live entries are never disturbed. The safe
    /// choice under attack: a flood of new keys cannot push established flows out.
    RejectNew,
    /// Evict the least-recently-used entry, but only if it has been idle for at least
    /// [`FlowTableConfig::min_idle_for_eviction`]; otherwise refuse like `RejectNew`.
    #[default]
    EvictOldestIdle,
}

/// Flow table configuration.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FlowTableConfig {
    /// Maximum number of entries. Default 65 536 (tuned for a host with tens of thousands of
    /// concurrent flows). Must be below `u32::MAX`.
    pub capacity: usize,
    /// An entry not hit for this long is expired by [`FlowTable::expire`]. Default 30 s.
    pub idle_timeout: Duration,
    /// What to do when the table is full. Default [`EvictionPolicy::EvictOldestIdle`].
    pub eviction: EvictionPolicy,
    /// Under `EvictOldestIdle`, the LRU entry is evicted only if idle at least this long.
    /// Default 1 s: a flow that sent within the last second is never pushed out.
    pub min_idle_for_eviction: Duration,
    /// Seed of the index's hash function (from the engine's config, never the OS). Default 0.
    pub hash_seed: u64,
}

impl Default for FlowTableConfig {
    fn default() -> Self {
        Self {
            capacity: 65_536,
            idle_timeout: Duration::from_secs(30),
            eviction: EvictionPolicy::EvictOldestIdle,
            min_idle_for_eviction: Duration::from_secs(1),
            hash_seed: 0,
        }
    }
}

/// Counters of a [`FlowTable`]. Plain `u64`s, summed by the caller at scrape time.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct FlowTableStats {
    /// `get_mut` found the key (fast path).
    pub hits: u64,
    /// `get_mut` did not find the key.
    pub misses: u64,
    /// New entries inserted.
    pub inserts: u64,
    /// `insert` on a key already present: value replaced, old one handed back.
    pub replaced: u64,
    /// Entries evicted to make room for a new key.
    pub evictions: u64,
    /// Entries expired by idle timeout.
    pub expirations: u64,
    /// Entries removed by `remove`.
    pub removals: u64,
    /// Inserts refused because the table was full and the policy did not allow eviction.
    pub rejected_full: u64,
}

/// Why [`FlowTable::insert`] failed. The value is handed back.
#[derive(PartialEq, Eq)]
pub enum InsertError<V> {
    /// The table is full and the eviction policy refused to make room.
    Full(V),
}

impl<V> InsertError<V> {
    /// The value that was not inserted.
    pub fn into_value(self) -> V {
        match self {
            Self::Full(v) => v,
        }
    }
}

impl<V> fmt::Debug for InsertError<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(_) => f.write_str("Full(..)"),
        }
    }
}

impl<V> fmt::Display for InsertError<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(_) => f.write_str("flow table full"),
        }
    }
}

/// A successful [`FlowTable::insert`].
#[derive(Debug)]
pub struct Inserted<'a, K, V> {
    /// The entry's slot, stable until the entry is removed, evicted or expired.
    pub slot: u32,
    /// The value just inserted.
    pub value: &'a mut V,
    /// An entry displaced by this insert, for the caller to clean up: either the LRU entry
    /// evicted to make room (counted in `evictions`), or, if `key` was already present, its
    /// previous value (counted in `replaced`).
    pub evicted: Option<(K, V)>,
}

/// One slab slot. A free slot has `entry == None` and sits on the free list through `next`.
#[derive(Debug)]
struct Slot<K, V> {
    entry: Option<(K, V)>,
    hash: u64,
    last_seen: Instant,
    /// Towards the head (more recently used); free list: unused.
    prev: u32,
    /// Towards the tail (less recently used); free list: next free slot.
    next: u32,
}

/// A bounded `K → V` table with LRU order, idle expiry and an eviction policy.
///
/// Call protocol: [`get_mut`](Self::get_mut) on every packet (fast path); on a miss,
/// [`insert`](Self::insert) (slow path) and clean up any `evicted` entry it returns;
/// periodically [`expire`](Self::expire) with a budget, at [`next_expiry`](Self::next_expiry).
/// `now` must not go backwards (a stale `now` is clamped, never a panic).
pub struct FlowTable<K, V> {
    config: FlowTableConfig,
    hasher: FixedState,
    index: HashTable<u32>,
    slots: Vec<Slot<K, V>>,
    /// Head of the free list of slots in `slots` (slots beyond `slots.len()` are also free).
    free: u32,
    /// Most recently used.
    head: u32,
    /// Least recently used.
    tail: u32,
    len: usize,
    stats: FlowTableStats,
}

impl<K, V> fmt::Debug for FlowTable<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlowTable")
            .field("len", &self.len)
            .field("capacity", &self.config.capacity)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Copy, V> FlowTable<K, V> {
    /// A table with every structure allocated up front for `config.capacity` entries.
    ///
    /// # Panics
    ///
    /// If `config.capacity` is zero or not below `u32::MAX` (a configuration error that the
    /// control plane validates before it reaches the engine).
    #[must_use]
    pub fn new(config: FlowTableConfig) -> Self {
        assert!(
            config.capacity > 0 && config.capacity < NIL as usize,
            "flow table capacity must be in 1..u32::MAX"
        );
        Self {
            config,
            hasher: FixedState::with_seed(config.hash_seed),
            // Twice the capacity: see the module doc (in-place rehash, never a resize).
            index: HashTable::with_capacity(config.capacity.saturating_mul(2)),
            slots: Vec::with_capacity(config.capacity),
            free: NIL,
            head: NIL,
            tail: NIL,
            len: 0,
            stats: FlowTableStats::default(),
        }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &FlowTableConfig {
        &self.config
    }

    /// Number of live entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` if the table holds no entry.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum number of entries.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.config.capacity
    }

    /// One past the highest slot ever used: every entry's slot is below it (at most
    /// [`Self::capacity`]), so a walk by slot number may stop there.
    #[must_use]
    pub fn slot_bound(&self) -> usize {
        self.slots.len()
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> &FlowTableStats {
        &self.stats
    }

    #[inline]
    fn hash_of(&self, key: &K) -> u64 {
        self.hasher.hash_one(key)
    }

    #[inline]
    fn find_slot(&self, hash: u64, key: &K) -> Option<u32> {
        let slots = &self.slots;
        self.index
            .find(hash, |&s| {
                let slot = &slots[s as usize];
                slot.hash == hash && slot.entry.as_ref().is_some_and(|(k, _)| k == key)
            })
            .copied()
    }

    /// FAST PATH: look `key` up; a hit refreshes its last-seen time and LRU position.
    ///
    /// Returns the slot number and the value. No allocation, O(1).
    #[inline]
    pub fn get_mut(&mut self, key: &K, now: Instant) -> Option<(u32, &mut V)> {
        let hash = self.hash_of(key);
        let Some(s) = self.find_slot(hash, key) else {
            self.stats.misses += 1;
            return None;
        };
        self.stats.hits += 1;
        self.touch(s, now);
        let value = &mut self.slots[s as usize]
            .entry
            .as_mut()
            .expect("invariant: indexed slot is occupied")
            .1;
        Some((s, value))
    }

    /// Look `key` up without refreshing it or counting a hit or miss.
    #[must_use]
    pub fn peek(&self, key: &K) -> Option<&V> {
        let s = self.find_slot(self.hash_of(key), key)?;
        self.slots[s as usize].entry.as_ref().map(|(_, v)| v)
    }

    /// The entry in `slot`, if occupied (for callers that cached a slot number). Does not
    /// refresh the entry.
    pub fn slot_mut(&mut self, slot: u32) -> Option<(&K, &mut V)> {
        self.slots
            .get_mut(slot as usize)?
            .entry
            .as_mut()
            .map(|(k, v)| (&*k, v))
    }

    /// The time `key` was last hit or inserted.
    #[must_use]
    pub fn last_seen(&self, key: &K) -> Option<Instant> {
        let s = self.find_slot(self.hash_of(key), key)?;
        Some(self.slots[s as usize].last_seen)
    }

    /// SLOW PATH: insert `key → value` after a miss.
    ///
    /// If `key` is already present its value is replaced and the old one handed back in
    /// [`Inserted::evicted`]. If the table is full, the eviction policy decides: under
    /// `EvictOldestIdle` the LRU entry, if idle long enough, is evicted and handed back; else
    /// the insert is refused and the value returned in [`InsertError::Full`] (counted in
    /// `rejected_full`).
    ///
    /// # Errors
    ///
    /// [`InsertError::Full`] when the table is full and nothing may be evicted.
    pub fn insert(
        &mut self,
        key: K,
        now: Instant,
        value: V,
    ) -> Result<Inserted<'_, K, V>, InsertError<V>> {
        let hash = self.hash_of(&key);
        if let Some(s) = self.find_slot(hash, &key) {
            self.stats.replaced += 1;
            self.touch(s, now);
            let entry = self.slots[s as usize]
                .entry
                .as_mut()
                .expect("invariant: indexed slot is occupied");
            let old = core::mem::replace(&mut entry.1, value);
            return Ok(Inserted {
                slot: s,
                value: &mut entry.1,
                evicted: Some((key, old)),
            });
        }
        let mut evicted = None;
        if self.len >= self.config.capacity {
            let can_evict = self.config.eviction == EvictionPolicy::EvictOldestIdle
                && self.tail != NIL
                && now.saturating_duration_since(self.slots[self.tail as usize].last_seen)
                    >= self.config.min_idle_for_eviction;
            if !can_evict {
                self.stats.rejected_full += 1;
                return Err(InsertError::Full(value));
            }
            evicted = Some(self.unlink_and_free(self.tail));
            self.stats.evictions += 1;
        }
        let s = self.alloc_slot();
        let last_seen = self.clamp_now(now);
        {
            let slot = &mut self.slots[s as usize];
            slot.entry = Some((key, value));
            slot.hash = hash;
            slot.last_seen = last_seen;
        }
        self.push_head(s);
        let slots = &self.slots;
        self.index
            .insert_unique(hash, s, |&x| slots[x as usize].hash);
        self.len += 1;
        self.stats.inserts += 1;
        let value = &mut self.slots[s as usize]
            .entry
            .as_mut()
            .expect("invariant: slot just filled")
            .1;
        Ok(Inserted {
            slot: s,
            value,
            evicted,
        })
    }

    /// Remove `key`, returning its value.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let hash = self.hash_of(key);
        let s = self.find_slot(hash, key)?;
        self.stats.removals += 1;
        Some(self.unlink_and_free(s).1)
    }

    /// Expire entries idle for at least `idle_timeout`, oldest first, handing each to `out`.
    ///
    /// Examines at most `budget` entries (bounded work), and stops at the first live one.
    /// Returns how many were expired; if it returns `budget`, more may be pending, and
    /// repeated calls eventually expire every idle entry.
    pub fn expire(&mut self, now: Instant, budget: usize, mut out: impl FnMut(K, V)) -> usize {
        let mut n = 0;
        while n < budget && self.tail != NIL {
            let t = self.tail;
            if now.saturating_duration_since(self.slots[t as usize].last_seen)
                < self.config.idle_timeout
            {
                break;
            }
            let (k, v) = self.unlink_and_free(t);
            self.stats.expirations += 1;
            out(k, v);
            n += 1;
        }
        n
    }

    /// When the oldest entry becomes idle-expired (`None` if empty). May be in the past.
    #[must_use]
    pub fn next_expiry(&self) -> Option<Instant> {
        (self.tail != NIL)
            .then(|| self.slots[self.tail as usize].last_seen + self.config.idle_timeout)
    }

    /// Every entry, in slot order (not LRU order).
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.slots
            .iter()
            .filter_map(|s| s.entry.as_ref().map(|(k, v)| (k, v)))
    }

    /// `true` if an insert of a new key at `now` would succeed (there is room, or the eviction
    /// policy may evict the least recently used entry). Lets a caller check before it builds
    /// an expensive value.
    #[must_use]
    pub fn can_insert(&self, now: Instant) -> bool {
        self.len < self.config.capacity
            || (self.config.eviction == EvictionPolicy::EvictOldestIdle
                && self.tail != NIL
                && now.saturating_duration_since(self.slots[self.tail as usize].last_seen)
                    >= self.config.min_idle_for_eviction)
    }

    /// Keys from most to least recently used (for tests and diagnostics; O(len)).
    pub fn iter_lru(&self) -> impl Iterator<Item = (&K, Instant)> {
        let mut cur = self.head;
        core::iter::from_fn(move || {
            if cur == NIL {
                return None;
            }
            let slot = &self.slots[cur as usize];
            cur = slot.next;
            slot.entry.as_ref().map(|(k, _)| (k, slot.last_seen))
        })
    }

    // --- internals -------------------------------------------------------------------------

    /// Keep last-seen times non-decreasing towards the head.
    #[inline]
    fn clamp_now(&self, now: Instant) -> Instant {
        if self.head == NIL {
            now
        } else {
            now.max(self.slots[self.head as usize].last_seen)
        }
    }

    #[inline]
    fn touch(&mut self, s: u32, now: Instant) {
        let t = self.clamp_now(now);
        self.slots[s as usize].last_seen = t;
        if self.head != s {
            self.unlink(s);
            self.push_head(s);
        }
    }

    #[inline]
    fn unlink(&mut self, s: u32) {
        let (prev, next) = {
            let slot = &self.slots[s as usize];
            (slot.prev, slot.next)
        };
        if prev == NIL {
            self.head = next;
        } else {
            self.slots[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.slots[next as usize].prev = prev;
        }
    }

    #[inline]
    fn push_head(&mut self, s: u32) {
        let old = self.head;
        {
            let slot = &mut self.slots[s as usize];
            slot.prev = NIL;
            slot.next = old;
        }
        if old == NIL {
            self.tail = s;
        } else {
            self.slots[old as usize].prev = s;
        }
        self.head = s;
    }

    /// A free slot: from the free list, or a new one at the end of the slab (never past the
    /// reserved capacity, so the push does not allocate).
    fn alloc_slot(&mut self) -> u32 {
        if self.free != NIL {
            let s = self.free;
            self.free = self.slots[s as usize].next;
            return s;
        }
        debug_assert!(self.slots.len() < self.config.capacity);
        let s = u32::try_from(self.slots.len()).expect("invariant: capacity < u32::MAX");
        self.slots.push(Slot {
            entry: None,
            hash: 0,
            last_seen: Instant::ZERO,
            prev: NIL,
            next: NIL,
        });
        s
    }

    /// Remove slot `s` from the index and the LRU list, put it on the free list, and return
    /// its entry.
    fn unlink_and_free(&mut self, s: u32) -> (K, V) {
        let hash = self.slots[s as usize].hash;
        if let Ok(e) = self.index.find_entry(hash, |&x| x == s) {
            e.remove();
        } else {
            debug_assert!(false, "invariant: occupied slot is indexed");
        }
        self.unlink(s);
        let free = self.free;
        let slot = &mut self.slots[s as usize];
        slot.next = free;
        slot.prev = NIL;
        self.free = s;
        self.len -= 1;
        slot.entry
            .take()
            .expect("invariant: unlinked slot was occupied")
    }
}
