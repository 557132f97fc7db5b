//! The inter-NIC channel: a pre-allocated buffer pool and lock-free SPSC lanes of packet
//! handles between workers.
//!
//! Owns: the packet buffers (allocated once, at startup), the [`PacketBuf`] handle type, the
//! lanes that move handles from one worker to another ([`lane`], [`Mesh`]), the return lanes
//! that bring freed buffers home ([`ReturnLane`]) and their counters. Does not own: threads,
//! pinning, which worker owns which flow (the engine decides and calls
//! [`MeshPort::try_send_to`]), or what is in the bytes.
//!
//! # Ownership story: who allocates, who frees, where a handle lives
//!
//! - **Allocate.** Each worker that *creates* packets (a NIC receive worker, a vNIC queue
//!   worker) owns one [`BufferPool`]. At startup the pool allocates `buf_count` buffers of
//!   `buf_bytes` each, and never allocates or frees a buffer again. [`BufferPool::alloc`] pops
//!   a buffer from its local free stack and returns it as a [`PacketBuf`]; `None` when every
//!   buffer is out (the caller counts a drop, `DropReason::StoreFull`).
//! - **Hand off.** A [`PacketBuf`] is an owned value: `Box<[u8]>` + length + metadata. Sending
//!   it through a lane *moves* it (the ring slot receives the 16-byte box pointer, the length
//!   and the metadata, about 40 bytes); the packet bytes themselves are never copied. Exactly
//!   one worker holds a handle at any moment; the type system enforces that (no `Clone`).
//! - **Free.** A buffer goes back to the pool that made it (the handle carries its [`PoolId`]).
//!   The pool's own worker calls [`BufferPool::free`]. Any other worker holds a
//!   [`ReturnLane`] to that pool (an SPSC ring from that worker to the pool owner) and calls
//!   [`ReturnLane::free`]; the pool owner pulls those buffers back with
//!   [`BufferPool::reclaim`] (which `alloc` also does by itself when the local stack is empty).
//!
//! A return lane's capacity is the pool's `buf_count`, so it can never be full with buffers of
//! its own pool: a freed buffer is never lost and never dropped. A handle dropped without
//! being freed deallocates its buffer; the pool then simply has one buffer fewer
//! ([`BufferPool::in_flight`] shows it). That is a bug in the caller, not a memory error.
//!
//! # Why handles to owned boxes, and why SPSC rings
//!
//! The classic design is an arena of N slots addressed by index, shared by all workers. In
//! Rust that needs either `unsafe` (two threads writing disjoint slots of one allocation) or a
//! lock per slot. Moving a `Box<[u8]>` gives the same zero-copy hand-off with ownership that
//! the compiler checks: the box is the index, and whoever holds it may write it. The cost is
//! one pointer-sized move per hand-off, the same as an index.
//!
//! The lanes are single-producer single-consumer because every worker is one thread: an SPSC
//! ring ([`rtrb`]) needs no compare-and-swap, only one acquire load and one release store per
//! batch, and its head and tail sit on separate cache lines. All-to-all routing for K workers is
//! K·(K−1) such rings ([`Mesh`]) rather than one contended MPMC queue: no lock, no CAS retry
//! loop, and a full lane only slows the one pair of workers that share it.
//!
//! The free list is a plain `Vec` used as a stack (LIFO, so the most recently freed — cache-warm
//! — buffer is reused first), with its capacity reserved at startup so `push` never allocates.
//! Cross-thread frees go through return lanes instead of a shared free list, for the same
//! reason as above.
//!
//! # Bounds and counters
//!
//! Every lane has a fixed capacity. A full lane gives the packet back (`Err(pkt)`) and counts
//! it in [`LaneStats::full_count`]; the caller counts a drop (`DropReason::HandoffQueueFull`)
//! and frees the buffer. Counters are plain per-worker `u64`s, summed at scrape time.
//! `send`, `recv`, `alloc`, `free` and `reclaim` perform no heap allocation (tested with a
//! counting allocator).

use braid_core::types::NicId;
use rtrb::{Consumer, Producer, RingBuffer};

#[cfg(test)]
mod tests;

/// The largest buffer size a pool accepts: a 64 KiB GSO/GRO super-packet plus headroom.
pub const MAX_BUF_BYTES: usize = 65_536 + 512;

/// Which pool a buffer belongs to (one pool per allocating worker). Carried in every
/// [`PacketBuf`] so any worker can route a freed buffer home.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct PoolId(pub u16);

/// Setup errors of the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// A pool must hold at least one buffer.
    #[error("buffer pool needs at least one buffer (buf_count = 0)")]
    ZeroBufCount,
    /// Buffer size outside `1..=MAX_BUF_BYTES`.
    #[error("buffer size {buf_bytes} bytes is outside 1..={max}")]
    BadBufBytes {
        /// The configured size.
        buf_bytes: usize,
        /// [`MAX_BUF_BYTES`].
        max: usize,
    },
    /// A lane must have room for at least one handle.
    #[error("lane capacity must be at least 1")]
    ZeroLaneCapacity,
    /// A mesh needs at least two workers.
    #[error("mesh needs at least 2 workers, got {workers}")]
    TooFewWorkers {
        /// The configured worker count.
        workers: usize,
    },
}

/// A length that does not fit in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("length {len} bytes is above the buffer capacity of {capacity} bytes")]
pub struct LenError {
    /// The requested length.
    pub len: usize,
    /// The buffer's capacity.
    pub capacity: usize,
}

/// Metadata that travels with a packet between workers.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct PacketMeta {
    /// The NIC the packet arrived on (RX) or should leave on (TX).
    pub nic: NicId,
    /// A flow hash (RSS/Toeplitz or flow id) so the receiver need not re-parse to route it;
    /// 0 when unknown.
    pub flow_hash: u32,
}

/// An owned handle to one pool buffer: the bytes, the filled length and the metadata.
///
/// Not `Clone`: exactly one worker holds it. Moving it moves a pointer, never the bytes. Only
/// a [`BufferPool`] creates one; give it back with [`BufferPool::free`] or
/// [`ReturnLane::free`].
#[derive(Debug)]
pub struct PacketBuf {
    buf: Box<[u8]>,
    len: usize,
    pool: PoolId,
    /// Metadata carried with the packet.
    pub meta: PacketMeta,
}

impl PacketBuf {
    /// The buffer size in bytes (the pool's `buf_bytes`).
    #[must_use]
    #[inline]
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// The filled length in bytes.
    #[must_use]
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` if no byte is filled.
    #[must_use]
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The pool this buffer belongs to.
    #[must_use]
    #[inline]
    pub fn pool(&self) -> PoolId {
        self.pool
    }

    /// The filled bytes, `[..len]`.
    #[must_use]
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The filled bytes, writable.
    #[must_use]
    #[inline]
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len]
    }

    /// The whole buffer, for a receive call to fill; follow with [`PacketBuf::set_len`].
    #[must_use]
    #[inline]
    pub fn storage_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// Set the filled length (after writing through [`PacketBuf::storage_mut`]).
    ///
    /// # Errors
    /// [`LenError`] if `len` is above [`PacketBuf::capacity`]; the length is unchanged.
    #[inline]
    pub fn set_len(&mut self, len: usize) -> Result<(), LenError> {
        if len > self.buf.len() {
            return Err(LenError {
                len,
                capacity: self.buf.len(),
            });
        }
        self.len = len;
        Ok(())
    }

    /// Copy `data` into the buffer and set the length to `data.len()`.
    ///
    /// # Errors
    /// [`LenError`] if `data` does not fit; the buffer is unchanged.
    #[inline]
    pub fn fill_from(&mut self, data: &[u8]) -> Result<(), LenError> {
        let capacity = self.buf.len();
        let dst = self.buf.get_mut(..data.len()).ok_or(LenError {
            len: data.len(),
            capacity,
        })?;
        dst.copy_from_slice(data);
        self.len = data.len();
        Ok(())
    }
}

/// Size of a [`BufferPool`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PoolConfig {
    /// Number of buffers, allocated once at startup. Default 4096.
    pub buf_count: usize,
    /// Size of each buffer in bytes, `1..=MAX_BUF_BYTES`. Default 2048 (a 1500-byte MTU frame
    /// plus braid and tunnel headers); use 9216 for jumbo frames.
    pub buf_bytes: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            buf_count: 4096,
            buf_bytes: 2048,
        }
    }
}

/// Counters of a [`BufferPool`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct PoolStats {
    /// Successful `alloc` calls.
    pub alloc_count: u64,
    /// `alloc` calls that found no free buffer (the caller counted a drop).
    pub exhausted_count: u64,
    /// Buffers freed locally with [`BufferPool::free`].
    pub free_count: u64,
    /// Buffers brought back from return lanes by [`BufferPool::reclaim`].
    pub reclaimed_count: u64,
    /// `free` calls refused because the buffer belongs to another pool.
    pub foreign_count: u64,
}

/// A fixed set of packet buffers owned by one worker (the one that allocates them).
///
/// The call protocol: `alloc` → fill → hand off or process → `free` here or
/// [`ReturnLane::free`] on another worker. Return lanes are made at setup with
/// [`BufferPool::return_lane`] (that allocates a ring); everything after setup is
/// allocation-free.
#[derive(Debug)]
pub struct BufferPool {
    id: PoolId,
    buf_count: usize,
    buf_bytes: usize,
    free: Vec<PacketBuf>,
    returns: Vec<Consumer<PacketBuf>>,
    stats: PoolStats,
}

impl BufferPool {
    /// Allocate `cfg.buf_count` zeroed buffers of `cfg.buf_bytes` bytes. This is the only place
    /// packet buffers are allocated.
    ///
    /// # Errors
    /// [`ChannelError::ZeroBufCount`] or [`ChannelError::BadBufBytes`].
    pub fn new(id: PoolId, cfg: &PoolConfig) -> Result<Self, ChannelError> {
        if cfg.buf_count == 0 {
            return Err(ChannelError::ZeroBufCount);
        }
        if cfg.buf_bytes == 0 || cfg.buf_bytes > MAX_BUF_BYTES {
            return Err(ChannelError::BadBufBytes {
                buf_bytes: cfg.buf_bytes,
                max: MAX_BUF_BYTES,
            });
        }
        let mut free = Vec::with_capacity(cfg.buf_count);
        free.extend((0..cfg.buf_count).map(|_| PacketBuf {
            buf: vec![0u8; cfg.buf_bytes].into_boxed_slice(),
            len: 0,
            pool: id,
            meta: PacketMeta::default(),
        }));
        Ok(Self {
            id,
            buf_count: cfg.buf_count,
            buf_bytes: cfg.buf_bytes,
            free,
            returns: Vec::new(),
            stats: PoolStats::default(),
        })
    }

    /// This pool's id.
    #[must_use]
    pub fn id(&self) -> PoolId {
        self.id
    }

    /// Total buffers of this pool.
    #[must_use]
    pub fn buf_count(&self) -> usize {
        self.buf_count
    }

    /// Size of each buffer in bytes.
    #[must_use]
    pub fn buf_bytes(&self) -> usize {
        self.buf_bytes
    }

    /// Buffers on the local free stack now (not counting those waiting in return lanes).
    #[must_use]
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Buffers not on the local free stack: held by workers or waiting in return lanes.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.buf_count - self.free.len()
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> PoolStats {
        self.stats
    }

    /// Make a return lane for one other worker (setup time: allocates a ring of `buf_count`
    /// slots, so the lane can hold every buffer of this pool and is never full).
    pub fn return_lane(&mut self) -> ReturnLane {
        let (tx, rx) = RingBuffer::new(self.buf_count);
        self.returns.push(rx);
        ReturnLane {
            pool: self.id,
            tx,
            freed_count: 0,
        }
    }

    /// Take a buffer (length 0, default metadata; the bytes are whatever the last user left).
    /// When the local stack is empty, first pulls freed buffers back from the return lanes.
    /// `None` if every buffer is out (counted in [`PoolStats::exhausted_count`]).
    #[inline]
    pub fn alloc(&mut self) -> Option<PacketBuf> {
        if self.free.is_empty() {
            self.reclaim();
        }
        if let Some(mut b) = self.free.pop() {
            b.len = 0;
            b.meta = PacketMeta::default();
            self.stats.alloc_count += 1;
            Some(b)
        } else {
            self.stats.exhausted_count += 1;
            None
        }
    }

    /// Give a buffer of this pool back.
    ///
    /// # Errors
    /// The buffer comes back if it belongs to another pool (counted in
    /// [`PoolStats::foreign_count`]), or if the stack is already full (only possible with a
    /// buffer from another pool that reuses this pool's id).
    #[inline]
    pub fn free(&mut self, buf: PacketBuf) -> Result<(), PacketBuf> {
        // The capacity check keeps `push` allocation-free even with a mislabelled buffer.
        if buf.pool != self.id || self.free.len() == self.free.capacity() {
            self.stats.foreign_count += 1;
            return Err(buf);
        }
        self.free.push(buf);
        self.stats.free_count += 1;
        Ok(())
    }

    /// Pull every buffer waiting in the return lanes back onto the local stack; returns how
    /// many. Bounded: at most `buf_count` buffers exist.
    pub fn reclaim(&mut self) -> usize {
        let mut n = 0;
        for rx in &mut self.returns {
            let room = self.free.capacity() - self.free.len();
            let take = rx.slots().min(room);
            if take == 0 {
                continue;
            }
            let chunk = rx
                .read_chunk(take)
                .expect("invariant: take <= slots() of this consumer");
            self.free.extend(chunk);
            n += take;
        }
        self.stats.reclaimed_count += n as u64;
        n
    }
}

/// The sending end of a return lane: frees buffers of one pool from another worker.
#[derive(Debug)]
pub struct ReturnLane {
    pool: PoolId,
    tx: Producer<PacketBuf>,
    freed_count: u64,
}

impl ReturnLane {
    /// The pool this lane returns to.
    #[must_use]
    pub fn pool(&self) -> PoolId {
        self.pool
    }

    /// Buffers sent home through this lane.
    #[must_use]
    pub fn freed_count(&self) -> u64 {
        self.freed_count
    }

    /// Send a buffer home to its pool.
    ///
    /// # Errors
    /// The buffer comes back if it belongs to another pool, or if the lane is full (only
    /// possible with buffers of another pool that reuse this pool's id: the lane holds
    /// `buf_count` handles).
    #[inline]
    pub fn free(&mut self, buf: PacketBuf) -> Result<(), PacketBuf> {
        if buf.pool != self.pool {
            return Err(buf);
        }
        match self.tx.push(buf) {
            Ok(()) => {
                self.freed_count += 1;
                Ok(())
            }
            Err(rtrb::PushError::Full(buf)) => Err(buf),
        }
    }
}

/// Counters of one lane end.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct LaneStats {
    /// Handles sent (sender) or received (receiver).
    pub moved_count: u64,
    /// Handles refused because the lane was full (sender only).
    pub full_count: u64,
}

/// Make a lane: a bounded SPSC ring of `capacity` packet handles from one worker to another.
///
/// # Errors
/// [`ChannelError::ZeroLaneCapacity`].
pub fn lane(capacity: usize) -> Result<(LaneSender, LaneReceiver), ChannelError> {
    if capacity == 0 {
        return Err(ChannelError::ZeroLaneCapacity);
    }
    let (tx, rx) = RingBuffer::new(capacity);
    Ok((
        LaneSender {
            tx,
            stats: LaneStats::default(),
        },
        LaneReceiver {
            rx,
            stats: LaneStats::default(),
        },
    ))
}

/// The sending end of a lane (one worker).
#[derive(Debug)]
pub struct LaneSender {
    tx: Producer<PacketBuf>,
    stats: LaneStats,
}

impl LaneSender {
    /// Send one handle.
    ///
    /// # Errors
    /// The lane is full: the packet comes back (counted in [`LaneStats::full_count`]); the
    /// caller counts a drop and frees the buffer, or retries later.
    #[inline]
    pub fn try_send(&mut self, pkt: PacketBuf) -> Result<(), PacketBuf> {
        match self.tx.push(pkt) {
            Ok(()) => {
                self.stats.moved_count += 1;
                Ok(())
            }
            Err(rtrb::PushError::Full(pkt)) => {
                self.stats.full_count += 1;
                Err(pkt)
            }
        }
    }

    /// Send as many handles from the front of `batch` as the lane has room for (one
    /// synchronisation for the whole batch) and remove them from `batch`; returns how many.
    /// Those left in `batch` did not fit and are counted in [`LaneStats::full_count`].
    #[inline]
    pub fn send_batch(&mut self, batch: &mut Vec<PacketBuf>) -> usize {
        let n = self.tx.slots().min(batch.len());
        if n > 0 {
            let chunk = self
                .tx
                .write_chunk_uninit(n)
                .expect("invariant: n <= slots() of this producer");
            let written = chunk.fill_from_iter(batch.drain(..n));
            debug_assert_eq!(written, n);
        }
        self.stats.moved_count += n as u64;
        self.stats.full_count += batch.len() as u64;
        n
    }

    /// Free slots in the lane now.
    #[must_use]
    pub fn slots(&self) -> usize {
        self.tx.slots()
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> LaneStats {
        self.stats
    }

    /// `true` if the receiving end was dropped (its worker is gone).
    #[must_use]
    pub fn is_abandoned(&self) -> bool {
        self.tx.is_abandoned()
    }
}

/// The receiving end of a lane (one worker).
#[derive(Debug)]
pub struct LaneReceiver {
    rx: Consumer<PacketBuf>,
    stats: LaneStats,
}

impl LaneReceiver {
    /// Take one handle, if any.
    #[inline]
    pub fn try_recv(&mut self) -> Option<PacketBuf> {
        let pkt = self.rx.pop().ok()?;
        self.stats.moved_count += 1;
        Some(pkt)
    }

    /// Append up to `max` handles to `out` (one synchronisation for the whole batch); returns
    /// how many. Never takes more than `out`'s spare capacity, so it never allocates: reserve
    /// the batch vector once at setup.
    #[inline]
    pub fn recv_batch(&mut self, out: &mut Vec<PacketBuf>, max: usize) -> usize {
        let n = self.rx.slots().min(max).min(out.capacity() - out.len());
        if n > 0 {
            let chunk = self
                .rx
                .read_chunk(n)
                .expect("invariant: n <= slots() of this consumer");
            out.extend(chunk);
        }
        self.stats.moved_count += n as u64;
        n
    }

    /// Handles waiting in the lane now.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.rx.slots()
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> LaneStats {
        self.stats
    }

    /// `true` if the sending end was dropped (its worker is gone).
    #[must_use]
    pub fn is_abandoned(&self) -> bool {
        self.rx.is_abandoned()
    }
}

/// Builds the all-to-all lanes for K workers: worker `i` gets a sender to every `j != i` and
/// a receiver from every `j != i`, K·(K−1) SPSC lanes in all.
#[derive(Debug)]
pub struct Mesh;

impl Mesh {
    /// Make the lanes and return one [`MeshPort`] per worker, in worker order; move each port
    /// to its worker's thread.
    ///
    /// # Errors
    /// [`ChannelError::TooFewWorkers`] (fewer than 2) or [`ChannelError::ZeroLaneCapacity`].
    pub fn build(workers: usize, lane_capacity: usize) -> Result<Vec<MeshPort>, ChannelError> {
        if workers < 2 {
            return Err(ChannelError::TooFewWorkers { workers });
        }
        if lane_capacity == 0 {
            return Err(ChannelError::ZeroLaneCapacity);
        }
        let mut ports: Vec<MeshPort> = (0..workers)
            .map(|worker| MeshPort {
                worker,
                to: (0..workers).map(|_| None).collect(),
                from: (0..workers).map(|_| None).collect(),
                next_from: 0,
            })
            .collect();
        for i in 0..workers {
            for j in 0..workers {
                if i != j {
                    let (tx, rx) = lane(lane_capacity)?;
                    ports[i].to[j] = Some(tx);
                    ports[j].from[i] = Some(rx);
                }
            }
        }
        Ok(ports)
    }
}

/// One worker's end of a [`Mesh`]: a sender to every other worker and a receiver from every
/// other worker.
#[derive(Debug)]
pub struct MeshPort {
    worker: usize,
    to: Vec<Option<LaneSender>>,
    from: Vec<Option<LaneReceiver>>,
    next_from: usize,
}

impl MeshPort {
    /// This worker's index.
    #[must_use]
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// Number of workers in the mesh.
    #[must_use]
    pub fn workers(&self) -> usize {
        self.to.len()
    }

    /// Hand a packet to worker `to` (the owner of its flow).
    ///
    /// # Errors
    /// The packet comes back if the lane is full (counted on that lane), or if `to` is this
    /// worker or out of range (nothing to count: the caller keeps the packet).
    #[inline]
    pub fn try_send_to(&mut self, to: usize, pkt: PacketBuf) -> Result<(), PacketBuf> {
        match self.to.get_mut(to) {
            Some(Some(tx)) => tx.try_send(pkt),
            _ => Err(pkt),
        }
    }

    /// The sender to worker `to` (`None` for this worker or out of range).
    #[must_use]
    pub fn sender(&mut self, to: usize) -> Option<&mut LaneSender> {
        self.to.get_mut(to)?.as_mut()
    }

    /// The receiver from worker `from` (`None` for this worker or out of range).
    #[must_use]
    pub fn receiver(&mut self, from: usize) -> Option<&mut LaneReceiver> {
        self.from.get_mut(from)?.as_mut()
    }

    /// Append up to `max` handles from all peers to `out` (never beyond its spare capacity),
    /// starting with a different peer each call so no peer starves another; returns how many.
    pub fn recv_batch(&mut self, out: &mut Vec<PacketBuf>, max: usize) -> usize {
        let k = self.from.len();
        let start = self.next_from;
        self.next_from = (start + 1) % k;
        let mut n = 0;
        for off in 0..k {
            if n >= max {
                break;
            }
            if let Some(rx) = &mut self.from[(start + off) % k] {
                n += rx.recv_batch(out, max - n);
            }
        }
        n
    }

    /// Sum of the counters over this worker's senders (`moved_count` = sent, `full_count`).
    #[must_use]
    pub fn sent_stats(&self) -> LaneStats {
        sum(self.to.iter().flatten().map(LaneSender::stats))
    }

    /// Sum of the counters over this worker's receivers (`moved_count` = received).
    #[must_use]
    pub fn received_stats(&self) -> LaneStats {
        sum(self.from.iter().flatten().map(LaneReceiver::stats))
    }
}

fn sum(it: impl Iterator<Item = LaneStats>) -> LaneStats {
    it.fold(LaneStats::default(), |a, s| LaneStats {
        moved_count: a.moved_count + s.moved_count,
        full_count: a.full_count + s.full_count,
    })
}
