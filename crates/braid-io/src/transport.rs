//! What every NIC transport (UDP per NIC, raw Ethernet over AF_PACKET) offers the data path:
//! batched receive into a pre-allocated [`RxBatch`], batched send from its own pre-allocated
//! queue, a file descriptor to wait on, and counters.
//!
//! What this module owns: the batch types and the [`NicTransport`] trait. What it does not:
//! sockets (see [`crate::udp`] and [`crate::packet`]) and the engine (braid-core).
//!
//! Both batch types are allocated once, when the transport opens; nothing here allocates per
//! packet.

use std::io;
use std::os::fd::BorrowedFd;

/// Datagrams received in one batch. One arena split into fixed slots (one `recvmmsg` entry
/// each; a slot may hold a GRO super-datagram of many segments), and a list of the segments
/// found in them.
#[derive(Debug)]
pub struct RxBatch {
    arena: Box<[u8]>,
    slot_bytes: usize,
    /// (offset into `arena`, length) of each received braid packet, in arrival order.
    segments: Vec<(u32, u32)>,
}

impl RxBatch {
    /// A batch of `slots` receive slots of `slot_bytes` each (65 535 with GRO, the link MTU
    /// without). Holds at most `max_segments` packets.
    ///
    /// # Panics
    /// If `slots` or `slot_bytes` is 0, or the arena would exceed 4 GiB (setup bugs).
    #[must_use]
    pub fn new(slots: usize, slot_bytes: usize, max_segments: usize) -> Self {
        assert!(slots > 0 && slot_bytes > 0, "invariant: empty rx batch");
        let bytes = slots
            .checked_mul(slot_bytes)
            .filter(|b| u32::try_from(*b).is_ok())
            .expect("invariant: rx arena below 4 GiB");
        Self {
            arena: vec![0u8; bytes].into_boxed_slice(),
            slot_bytes,
            segments: Vec::with_capacity(max_segments.max(slots)),
        }
    }

    /// Number of receive slots.
    #[must_use]
    pub fn slots(&self) -> usize {
        self.arena.len() / self.slot_bytes
    }

    /// Bytes per receive slot.
    #[must_use]
    pub fn slot_bytes(&self) -> usize {
        self.slot_bytes
    }

    /// Forget the packets of the last batch.
    pub fn clear(&mut self) {
        self.segments.clear();
    }

    /// Number of packets in the batch.
    #[must_use]
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    /// `true` if the batch holds no packet.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// The `i`-th packet.
    #[must_use]
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let &(off, len) = self.segments.get(i)?;
        self.arena.get(off as usize..off as usize + len as usize)
    }

    /// The `i`-th packet, writable (the engine decrypts in place).
    pub fn get_mut(&mut self, i: usize) -> Option<&mut [u8]> {
        let &(off, len) = self.segments.get(i)?;
        self.arena
            .get_mut(off as usize..off as usize + len as usize)
    }

    /// The packets, in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.segments
            .iter()
            .map(|&(off, len)| &self.arena[off as usize..off as usize + len as usize])
    }

    /// The whole arena, for a transport to receive into (slot `k` is
    /// `k * slot_bytes .. (k + 1) * slot_bytes`).
    pub fn arena_mut(&mut self) -> &mut [u8] {
        &mut self.arena
    }

    /// Record a packet at `offset..offset + len` of the arena. Returns `false` (and records
    /// nothing) if the segment list is full or the range is outside the arena: the transport
    /// counts that as a drop.
    pub fn push_segment(&mut self, offset: usize, len: usize) -> bool {
        if self.segments.len() == self.segments.capacity()
            || offset
                .checked_add(len)
                .is_none_or(|end| end > self.arena.len())
        {
            return false;
        }
        // Both fit in u32: the arena is below 4 GiB (checked in `new`).
        self.segments.push((offset as u32, len as u32));
        true
    }
}

/// Why a packet could not be queued for sending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// The transport's send queue is full (the kernel has not taken the last batch yet).
    Full,
    /// The packet is larger than the transport's MTU.
    TooBig,
    /// The transport is not open (its device is gone); it is retried in the background.
    Closed,
}

/// Counters every transport keeps (plain integers: one owner thread, summed at scrape).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Packets received and handed to the engine.
    pub rx_packets: u64,
    /// Bytes of those packets.
    pub rx_bytes: u64,
    /// Receive system calls that returned at least one packet.
    pub rx_batches: u64,
    /// Packets sent (each GSO segment counts).
    pub tx_packets: u64,
    /// Bytes of those packets.
    pub tx_bytes: u64,
    /// Send system calls.
    pub tx_syscalls: u64,
    /// Packets dropped because the send queue was full.
    pub tx_drop_queue_full: u64,
    /// Packets dropped because they exceed the MTU.
    pub tx_drop_too_big: u64,
    /// Packets dropped because the transport was closed (device gone).
    pub tx_drop_closed: u64,
    /// Packets the kernel refused on send (the errno is logged once per change).
    pub tx_errors: u64,
    /// Receive errors (other than "would block").
    pub rx_errors: u64,
    /// Packets from a source that is not the configured peer, dropped.
    pub rx_drop_foreign: u64,
    /// Packets that did not fit the batch (segment list full), dropped.
    pub rx_drop_batch_full: u64,
    /// Packets truncated by the kernel (larger than a receive slot), dropped.
    pub rx_drop_truncated: u64,
    /// Times an offload (GSO or GRO) was switched off after the kernel refused it.
    pub offload_disabled: u64,
    /// Times the transport was reopened after its device came back.
    pub reopened: u64,
}

/// One NIC's transport, owned by one thread.
pub trait NicTransport: std::fmt::Debug + Send {
    /// The descriptor to wait on for readability (and writability while
    /// [`NicTransport::has_backlog`]). `None` while closed.
    fn fd(&self) -> Option<BorrowedFd<'_>>;

    /// Receive what is ready, without blocking, into `batch` (cleared first). Returns the
    /// number of packets. "Would block" is `Ok(0)`.
    ///
    /// # Errors
    /// An I/O error the caller should log; the transport stays usable.
    fn recv_batch(&mut self, batch: &mut RxBatch) -> io::Result<usize>;

    /// Queue one braid packet for sending; it is copied into the transport's send queue.
    ///
    /// # Errors
    /// [`QueueError`]; the packet was counted as dropped.
    fn queue(&mut self, packet: &[u8]) -> Result<(), QueueError>;

    /// Send what is queued, without blocking. What the kernel does not take stays queued.
    ///
    /// # Errors
    /// An I/O error other than "would block"; the failed packets were counted and dropped.
    fn flush(&mut self) -> io::Result<()>;

    /// `true` if packets are queued but not yet sent.
    fn has_backlog(&self) -> bool;

    /// The largest braid packet this transport carries (link MTU minus its headers).
    fn mtu(&self) -> usize;

    /// The common counters (a copy: plain integers, read between batches).
    fn stats(&self) -> TransportStats;

    /// Counters only this kind of transport has (offload splits, GSO sends, ...), by name.
    /// The default has none.
    fn counters(&self, _out: &mut dyn FnMut(&'static str, u64)) {}

    /// Housekeeping, called about once a second by the owner thread: a closed transport
    /// (its device disappeared) tries to reopen, and returns `true` when it did.
    fn maintain(&mut self) -> bool;
}
