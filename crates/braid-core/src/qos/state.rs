//! The scheduler: bounded class queues, one strict class, DRR among the rest.
//!
//! Owns: [`Qos`] (queues of caller handles, DRR state, meters and the strict guard),
//! [`Dequeued`], [`Rejected`], [`Egress`]. The policy (why strict + guard, the order of the
//! enqueue checks, what a configuration replacement keeps) is described in the module root
//! (`qos/mod.rs`); this file is the mechanism.
//!
//! # Data layout
//!
//! A class is a `VecDeque` reserved to its packet capacity at construction and never grown
//! past it (the packet limit is checked before a push), so neither enqueue nor dequeue
//! allocates. An entry is the caller's handle plus a `u32` length. The classes sit in a fixed
//! array indexed by id; the DRR active list is a fixed ring of at most [`MAX_CLASSES`] ids.

use alloc::collections::VecDeque;

use super::config::{ClassConfig, ClassKind, MAX_CLASSES, QosConfig};
use super::meter::{Meter, TokenBucket};
use super::metrics::QosStats;
use super::shaper::Shaper;
use super::{ClassId, Color, QosConfigError, QosDrop};
use crate::time::Instant;

/// A packet given out by the scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dequeued<T> {
    /// The caller's handle, as enqueued.
    pub handle: T,
    /// The length given at enqueue, bytes.
    pub len: usize,
    /// The class it was queued in.
    pub class: ClassId,
}

/// A packet the scheduler refused (or gave back): the handle, for the caller to free its
/// buffer, and why. Already counted in [`QosStats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejected<T> {
    /// The caller's handle.
    pub handle: T,
    /// Why.
    pub reason: QosDrop,
}

/// What [`Qos::dequeue_shaped`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Egress<T> {
    /// Send this packet now (the shaper's tokens are taken).
    Packet(Dequeued<T>),
    /// The next packet must wait for the shaper until this instant (nothing was taken).
    NotBefore(Instant),
    /// Nothing is queued.
    Idle,
}

#[derive(Clone, Copy, Debug)]
struct Entry<T> {
    handle: T,
    len: u32,
}

#[derive(Debug)]
struct Class<T> {
    cfg: ClassConfig,
    queue: VecDeque<Entry<T>>,
    /// Bytes queued.
    bytes: u64,
    /// DRR quantum, bytes (`weight × quantum_bytes`; 0 for the strict class).
    quantum: u64,
    /// DRR deficit counter, bytes.
    deficit: u64,
    meter: Option<Meter>,
    /// The strict class's starvation guard.
    guard: Option<TokenBucket>,
}

impl<T: Copy> Class<T> {
    fn new(cfg: ClassConfig, quantum_bytes: u32, now: Instant) -> Self {
        let (quantum, guard) = match cfg.kind {
            ClassKind::Strict { guard } => (0, guard.map(|g| TokenBucket::new_unchecked(g, now))),
            ClassKind::Weighted { weight } => (u64::from(weight) * u64::from(quantum_bytes), None),
        };
        Self {
            cfg,
            queue: VecDeque::with_capacity(cfg.queue_packets as usize),
            bytes: 0,
            quantum,
            deficit: 0,
            meter: cfg.meter.map(|m| Meter::new_unchecked(m, now)),
            guard,
        }
    }

    const fn is_strict(&self) -> bool {
        matches!(self.cfg.kind, ClassKind::Strict { .. })
    }
}

/// The DRR active list: ids of the weighted classes with packets, in service order.
#[derive(Clone, Copy, Debug, Default)]
struct Active {
    ids: [u8; MAX_CLASSES],
    head: usize,
    len: usize,
}

impl Active {
    const fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn front(&self) -> Option<usize> {
        (self.len > 0).then(|| usize::from(self.ids[self.head]))
    }

    fn push_back(&mut self, id: usize) {
        debug_assert!(
            self.len < MAX_CLASSES,
            "invariant: each class is listed once"
        );
        self.ids[(self.head + self.len) % MAX_CLASSES] = id as u8;
        self.len += 1;
    }

    fn pop_front(&mut self) {
        if self.len > 0 {
            self.head = (self.head + 1) % MAX_CLASSES;
            self.len -= 1;
        }
    }

    /// The front class's turn is over: it goes to the back.
    fn rotate(&mut self) {
        if let Some(id) = self.front() {
            self.pop_front();
            self.push_back(id);
        }
    }

    /// Take `id` out of the list wherever it is, keeping the others' order. Returns whether
    /// it was the front.
    fn remove(&mut self, id: usize) -> bool {
        let was_front = self.front() == Some(id);
        let mut kept = Self::default();
        for k in 0..self.len {
            let other = usize::from(self.ids[(self.head + k) % MAX_CLASSES]);
            if other != id {
                kept.push_back(other);
            }
        }
        *self = kept;
        was_front
    }
}

/// A strict-priority + DRR scheduler over bounded class queues of caller handles `T` (see the
/// module root for the call protocol and the policy).
#[derive(Debug)]
pub struct Qos<T> {
    cfg: QosConfig,
    classes: [Option<Class<T>>; MAX_CLASSES],
    /// The strict class's id.
    strict: Option<usize>,
    active: Active,
    /// The front active class's DRR turn has started (its quantum was added).
    turn_open: bool,
    packets: usize,
    bytes: u64,
    stats: QosStats,
}

impl<T: Copy> Qos<T> {
    /// A scheduler with empty queues, each reserved to its capacity, and full meters.
    ///
    /// # Errors
    /// [`QosConfigError`] if `cfg` fails [`QosConfig::validate`].
    pub fn new(cfg: QosConfig, now: Instant) -> Result<Self, QosConfigError> {
        cfg.validate()?;
        let mut q = Self {
            classes: core::array::from_fn(|_| None),
            strict: None,
            active: Active::default(),
            turn_open: false,
            packets: 0,
            bytes: 0,
            stats: QosStats::default(),
            cfg,
        };
        for c in &q.cfg.classes {
            q.classes[c.id.index()] = Some(Class::new(*c, q.cfg.quantum_bytes, now));
        }
        q.strict = q
            .cfg
            .classes
            .iter()
            .find(|c| matches!(c.kind, ClassKind::Strict { .. }))
            .map(|c| c.id.index());
        Ok(q)
    }

    /// The configuration in force.
    #[must_use]
    pub const fn config(&self) -> &QosConfig {
        &self.cfg
    }

    /// The counters.
    #[must_use]
    pub const fn stats(&self) -> &QosStats {
        &self.stats
    }

    /// Packets queued in all classes.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.packets
    }

    /// Bytes queued in all classes.
    #[must_use]
    pub const fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether nothing is queued.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.packets == 0
    }

    /// (packets, bytes) queued in class `id` (zeros for an unknown id).
    #[must_use]
    pub fn class_queued(&self, id: ClassId) -> (usize, u64) {
        self.classes
            .get(id.index())
            .and_then(Option::as_ref)
            .map_or((0, 0), |c| (c.queue.len(), c.bytes))
    }

    /// Count a packet of class `class` that the caller refused before offering it, for a
    /// reason of this scheduler's (e.g. [`QosDrop::QueueFull`] when its own room check,
    /// across several schedulers, found this one's class queue full), so the class's
    /// counters see every refusal. Nothing is queued.
    pub fn count_refused(&mut self, class: ClassId, why: QosDrop) {
        match self.stats.classes.get_mut(class.index()) {
            Some(st) if self.classes.get(class.index()).is_some_and(Option::is_some) => {
                st.count_drop(why);
            }
            _ => self.stats.drop_unknown_class_count += 1,
        }
    }

    /// Queue a packet of `len` bytes (its handle) in class `class`, metering it with
    /// pre-colour `pre` (use [`Color::Green`] when nothing upstream coloured it).
    ///
    /// Returns the packet's colour (`pre` unchanged if the class has no meter), counted in
    /// the class's `green_count`/`yellow_count`/`red_count` either way.
    ///
    /// # Errors
    /// [`Rejected`] with the handle and the reason ([`QosDrop::UnknownClass`], `Oversize`,
    /// `QueueFull`, `MeterRed`), already counted.
    #[inline]
    pub fn enqueue(
        &mut self,
        now: Instant,
        class: ClassId,
        handle: T,
        len: usize,
        pre: Color,
    ) -> Result<Color, Rejected<T>> {
        let idx = class.index();
        let Some(c) = self.classes.get_mut(idx).and_then(Option::as_mut) else {
            self.stats.drop_unknown_class_count += 1;
            return Err(Rejected {
                handle,
                reason: QosDrop::UnknownClass,
            });
        };
        let st = &mut self.stats.classes[idx];
        let reject = |st: &mut super::ClassStats, reason| {
            st.count_drop(reason);
            Err(Rejected { handle, reason })
        };
        if len > self.cfg.max_packet_bytes as usize {
            return reject(st, QosDrop::Oversize);
        }
        let len32 = len as u32; // ≤ MAX_PACKET_BYTES
        if c.queue.len() >= c.cfg.queue_packets as usize
            || c.bytes + u64::from(len32) > u64::from(c.cfg.queue_bytes)
        {
            return reject(st, QosDrop::QueueFull);
        }
        let color = match c.meter.as_mut() {
            Some(m) => m.meter(now, len, pre),
            None => pre,
        };
        st.count_color(color);
        if color == Color::Red && c.cfg.drop_red {
            return reject(st, QosDrop::MeterRed);
        }
        let was_empty = c.queue.is_empty();
        c.queue.push_back(Entry { handle, len: len32 });
        c.bytes += u64::from(len32);
        if was_empty && !c.is_strict() {
            c.deficit = 0;
            self.active.push_back(idx);
        }
        self.packets += 1;
        self.bytes += u64::from(len32);
        st.enqueued_packets_count = st.enqueued_packets_count.wrapping_add(1);
        st.enqueued_bytes_count = st.enqueued_bytes_count.wrapping_add(len as u64);
        Ok(color)
    }

    /// The packet [`Self::dequeue`] would give out at `now`, left in place. Calling it again
    /// at the same `now` returns the same packet (it may open a DRR turn, which is kept).
    #[must_use]
    pub fn peek(&mut self, now: Instant) -> Option<Dequeued<T>> {
        let idx = self.select(now)?;
        let c = self.classes[idx]
            .as_ref()
            .expect("invariant: select returns a configured class");
        let e = c
            .queue
            .front()
            .expect("invariant: select returns a class with packets");
        Some(Dequeued {
            handle: e.handle,
            len: e.len as usize,
            class: ClassId(idx as u8),
        })
    }

    /// Give out the next packet: the strict class's head if it has one (and its guard allows,
    /// or no other class has packets), else the DRR pick. `None` if nothing is queued.
    #[inline]
    pub fn dequeue(&mut self, now: Instant) -> Option<Dequeued<T>> {
        let idx = self.select(now)?;
        Some(self.commit(now, idx))
    }

    /// Give out the next packet only if `admit` accepts it (e.g. a shaper or a ring with
    /// room); otherwise leave it queued and return `None`.
    #[inline]
    pub fn dequeue_if(
        &mut self,
        now: Instant,
        admit: impl FnOnce(&Dequeued<T>) -> bool,
    ) -> Option<Dequeued<T>> {
        let head = self.peek(now)?;
        if admit(&head) {
            Some(self.commit(now, head.class.index()))
        } else {
            None
        }
    }

    /// Give out the next packet if the NIC's shaper lets it leave at `now`, taking its
    /// tokens; otherwise say when it may.
    #[inline]
    pub fn dequeue_shaped(&mut self, now: Instant, shaper: &mut Shaper) -> Egress<T> {
        let Some(head) = self.peek(now) else {
            return Egress::Idle;
        };
        if shaper.try_consume(now, head.len) {
            Egress::Packet(self.commit(now, head.class.index()))
        } else {
            Egress::NotBefore(shaper.earliest_send(now, head.len))
        }
    }

    /// Give every queued packet to `f` (teardown), emptying the queues. Not counted as drops:
    /// the caller decides what they are.
    pub fn drain(&mut self, mut f: impl FnMut(Dequeued<T>)) {
        for (idx, slot) in self.classes.iter_mut().enumerate() {
            if let Some(c) = slot {
                for e in c.queue.drain(..) {
                    f(Dequeued {
                        handle: e.handle,
                        len: e.len as usize,
                        class: ClassId(idx as u8),
                    });
                }
                c.bytes = 0;
                c.deficit = 0;
            }
        }
        self.active = Active::default();
        self.turn_open = false;
        self.packets = 0;
        self.bytes = 0;
    }

    /// Take back the newest packet: from the weighted classes first (highest id first), the
    /// strict class last, newest first within a class. For moving a failed link's queue to
    /// other links with [`Self::push_front`], which keeps each class's order when the packets
    /// are taken this way. Counted as dequeued; `None` if nothing is queued.
    pub fn pop_back(&mut self) -> Option<Dequeued<T>> {
        let idx = (0..MAX_CLASSES)
            .rev()
            .filter(|&i| Some(i) != self.strict)
            .chain(self.strict)
            .find(|&i| {
                self.classes[i]
                    .as_ref()
                    .is_some_and(|c| !c.queue.is_empty())
            })?;
        let c = self.classes[idx]
            .as_mut()
            .expect("invariant: the class was found configured");
        let e = c
            .queue
            .pop_back()
            .expect("invariant: the class was found with packets");
        let len = u64::from(e.len);
        c.bytes -= len;
        if !c.is_strict() && c.queue.is_empty() {
            c.deficit = 0;
            if self.active.remove(idx) {
                self.turn_open = false;
            }
        }
        self.packets -= 1;
        self.bytes -= len;
        let st = &mut self.stats.classes[idx];
        st.dequeued_packets_count = st.dequeued_packets_count.wrapping_add(1);
        st.dequeued_bytes_count = st.dequeued_bytes_count.wrapping_add(len);
        Some(Dequeued {
            handle: e.handle,
            len: e.len as usize,
            class: ClassId(idx as u8),
        })
    }

    /// Queue a packet at the head of class `class`, ahead of what it holds: for packets
    /// older than everything queued here (moved from a failed link). Not metered (it was when
    /// first queued); the queue limits apply.
    ///
    /// # Errors
    /// [`Rejected`] with the handle ([`QosDrop::UnknownClass`], `Oversize`, `QueueFull`),
    /// already counted.
    pub fn push_front(&mut self, class: ClassId, handle: T, len: usize) -> Result<(), Rejected<T>> {
        let idx = class.index();
        let Some(c) = self.classes.get_mut(idx).and_then(Option::as_mut) else {
            self.stats.drop_unknown_class_count += 1;
            return Err(Rejected {
                handle,
                reason: QosDrop::UnknownClass,
            });
        };
        let st = &mut self.stats.classes[idx];
        let reason = if len > self.cfg.max_packet_bytes as usize {
            Some(QosDrop::Oversize)
        } else if c.queue.len() >= c.cfg.queue_packets as usize
            || c.bytes + len as u64 > u64::from(c.cfg.queue_bytes)
        {
            Some(QosDrop::QueueFull)
        } else {
            None
        };
        if let Some(reason) = reason {
            st.count_drop(reason);
            return Err(Rejected { handle, reason });
        }
        let len32 = len as u32; // ≤ MAX_PACKET_BYTES
        let was_empty = c.queue.is_empty();
        c.queue.push_front(Entry { handle, len: len32 });
        c.bytes += u64::from(len32);
        if was_empty && !c.is_strict() {
            c.deficit = 0;
            self.active.push_back(idx);
        }
        self.packets += 1;
        self.bytes += u64::from(len32);
        st.enqueued_packets_count = st.enqueued_packets_count.wrapping_add(1);
        st.enqueued_bytes_count = st.enqueued_bytes_count.wrapping_add(len as u64);
        Ok(())
    }

    /// Replace the whole configuration at once (see the module root for what is kept).
    /// Packets that no longer fit, or whose class is gone, go to `on_drop`, counted as
    /// `drop_reconfig_count` of their class. Allocates (new queue reservations): call it
    /// between batches, not per packet.
    ///
    /// # Errors
    /// [`QosConfigError`] if `cfg` is invalid; nothing is changed then.
    pub fn replace_config(
        &mut self,
        now: Instant,
        cfg: QosConfig,
        mut on_drop: impl FnMut(Dequeued<T>),
    ) -> Result<(), QosConfigError> {
        cfg.validate()?;
        let mut old: [Option<Class<T>>; MAX_CLASSES] =
            core::mem::replace(&mut self.classes, core::array::from_fn(|_| None));
        let stats = &mut self.stats;
        let mut give_back = |idx: usize, e: Entry<T>| {
            stats.classes[idx].count_drop(QosDrop::ClassRemoved);
            on_drop(Dequeued {
                handle: e.handle,
                len: e.len as usize,
                class: ClassId(idx as u8),
            });
        };
        for nc in &cfg.classes {
            let idx = nc.id.index();
            let mut fresh = Class::new(*nc, cfg.quantum_bytes, now);
            if let Some(mut prev) = old[idx].take() {
                // Keep the oldest packets, in order, while they fit the new limits.
                for e in prev.queue.drain(..) {
                    let fits = e.len <= cfg.max_packet_bytes
                        && fresh.queue.len() < nc.queue_packets as usize
                        && fresh.bytes + u64::from(e.len) <= u64::from(nc.queue_bytes);
                    if fits {
                        fresh.bytes += u64::from(e.len);
                        fresh.queue.push_back(e);
                    } else {
                        give_back(idx, e);
                    }
                }
                if prev.cfg.meter == nc.meter {
                    fresh.meter = prev.meter;
                }
                if prev.cfg.kind == nc.kind {
                    fresh.guard = prev.guard;
                }
                if !fresh.is_strict() && !prev.is_strict() && !fresh.queue.is_empty() {
                    fresh.deficit = prev.deficit.min(fresh.quantum);
                }
            }
            self.classes[idx] = Some(fresh);
        }
        for (idx, slot) in old.iter_mut().enumerate() {
            if let Some(prev) = slot.take() {
                for e in prev.queue {
                    give_back(idx, e);
                }
            }
        }
        // Rebuild the derived state.
        self.strict = None;
        self.active = Active::default();
        self.turn_open = false;
        self.packets = 0;
        self.bytes = 0;
        for (idx, c) in self.classes.iter().enumerate() {
            let Some(c) = c else { continue };
            self.packets += c.queue.len();
            self.bytes += c.bytes;
            if c.is_strict() {
                self.strict = Some(idx);
            } else if !c.queue.is_empty() {
                self.active.push_back(idx);
            }
        }
        self.cfg = cfg;
        Ok(())
    }

    /// The class whose head packet goes next. Idempotent for a given `now`: it may open the
    /// front class's DRR turn (add its quantum) and end turns whose deficit cannot cover the
    /// head, but once it returns a class, calling it again returns the same one.
    #[inline]
    fn select(&mut self, now: Instant) -> Option<usize> {
        if let Some(s) = self.strict {
            let c = self.classes[s]
                .as_ref()
                .expect("invariant: the strict id is configured");
            if let Some(head) = c.queue.front() {
                let allowed = c
                    .guard
                    .as_ref()
                    .is_none_or(|g| g.can_take(now, u64::from(head.len)));
                if allowed || self.active.is_empty() {
                    return Some(s);
                }
            }
        }
        // Every class's quantum is at least the largest packet, so a class whose turn opens
        // can send its head: the loop ends within one pass over the active list plus one.
        for _ in 0..=self.active.len {
            let idx = self.active.front()?;
            let c = self.classes[idx]
                .as_mut()
                .expect("invariant: active classes are configured");
            if !self.turn_open {
                c.deficit += c.quantum;
                self.turn_open = true;
            }
            let head = c
                .queue
                .front()
                .expect("invariant: active classes have packets");
            if u64::from(head.len) <= c.deficit {
                return Some(idx);
            }
            self.active.rotate();
            self.turn_open = false;
        }
        debug_assert!(false, "invariant: a DRR turn sends at least one packet");
        None
    }

    /// Take the head of class `idx` (just returned by `select`).
    #[inline]
    fn commit(&mut self, now: Instant, idx: usize) -> Dequeued<T> {
        let strict_waiting = self.strict.is_some_and(|s| {
            s != idx
                && self.classes[s]
                    .as_ref()
                    .is_some_and(|c| !c.queue.is_empty())
        });
        let c = self.classes[idx]
            .as_mut()
            .expect("invariant: commit follows select");
        let e = c
            .queue
            .pop_front()
            .expect("invariant: select returns a class with packets");
        let len = u64::from(e.len);
        c.bytes -= len;
        if let Some(g) = c.guard.as_mut() {
            g.take_saturating(now, len);
        }
        if !c.is_strict() {
            c.deficit -= len;
            if c.queue.is_empty() {
                c.deficit = 0;
                self.active.pop_front();
                self.turn_open = false;
            }
        }
        self.packets -= 1;
        self.bytes -= len;
        let st = &mut self.stats.classes[idx];
        st.dequeued_packets_count = st.dequeued_packets_count.wrapping_add(1);
        st.dequeued_bytes_count = st.dequeued_bytes_count.wrapping_add(len);
        if strict_waiting && let Some(s) = self.strict {
            self.stats.classes[s].guard_yield_count += 1;
        }
        Dequeued {
            handle: e.handle,
            len: e.len as usize,
            class: ClassId(idx as u8),
        }
    }
}
