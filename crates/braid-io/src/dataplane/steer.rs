//! Several workers, one per vNIC queue: how a delivered packet reaches the worker that owns
//! its RSS queue, through the inter-NIC channel ([`crate::channel`]).
//!
//! With `vnic.queues = K`, the daemon runs K workers. Worker `k` owns vNIC queue `k`, its own
//! engine, and its own socket on every NIC (port `base + k` at both ends). The kernel's socket
//! lookup therefore hands every braid packet — every fragment — to the worker whose engine
//! sent it: worker `k` on one host only ever talks to worker `k` on the other, so the pair is
//! a complete braid session of its own (its own key, derived from the pre-shared key and `k`,
//! its own replay window, probes and flow table). No lock and no shared table sits between
//! the workers.
//!
//! What the kernel cannot do is put each *delivered* packet on the vNIC queue that RSS
//! chooses for its flow (the queue a VM's virtio-net expects it on). That is where the
//! channel comes in: the engine writes each delivered packet straight into a buffer of the
//! worker's [`BufferPool`]; if RSS picks the worker's own queue the buffer is written there
//! and freed, otherwise the *handle* is moved through an SPSC lane of the [`Mesh`] to the
//! owner of that queue, which writes it to its queue and sends the buffer home through a
//! [`ReturnLane`]. The packet bytes are written once (by the engine) and never copied
//! between workers.
//!
//! Bounds and counters ([`SteerStats`]): a full lane never loses or reorders a packet. The
//! packet waits in the worker's one-packet stash, the worker stops delivering (the rest
//! stays in order in its engine) and wakes the owner, and the stash goes first on the next
//! turn (`lane_full` counts these stalls). The pool holds enough buffers for every lane to
//! be full, so it cannot run dry; if it did, the packet would go to the worker's own queue
//! through its scratch buffer (`pool_exhausted`).
//!
//! Wake-ups: a worker that handed packets to another writes that worker's eventfd at the end
//! of the batch, or after a quarter of a lane, never per packet. A worker does not sleep
//! while handles wait in its lanes: it writes up to 4 × 256 a turn and comes straight back
//! for the rest.
//!
//! # Receiving: per worker, or one worker per NIC
//!
//! By default (`daemon.receive = "per-worker"`) the kernel's socket lookup sorts the braid
//! packets, as above. With `daemon.receive = "per-nic"` one worker reads each NIC for all of
//! them (NIC `n` by worker `n mod K`): the peer's workers all send NIC `n`'s traffic to that
//! worker's port (or EtherType), and it reads the lane in each packet's clear header (the
//! sender's worker, [`braid_wire::BraidPacket::lane`]) and hands every packet of another
//! worker's session to that worker through a second set of lanes (`RxLanes`): a fragment
//! that arrives on one NIC reaches the engine that owns its flow and holds its reassembly
//! state, without a lock. The receiving engine checks the lane again once the packet is
//! authenticated, so a forged lane only moves a packet to a worker that drops it.
//!
//! The hand-off copies the packet once, from the NIC's receive batch into a buffer of the
//! reading worker's receive pool (the batch is reused at the next `recvmmsg`); the handle
//! then moves, and the buffer goes home through a return lane. A full lane or an empty pool
//! drops the packet (counted: `rx_lane_full`, `rx_pool_exhausted`), as a full socket buffer
//! would: the owner is behind, and stalling the NIC's reader would stall the other workers'
//! traffic on that NIC too.
//!
//! Not owned here: the loop ([`super::Dataplane`]), the ports, which queue RSS picks
//! ([`braid_core::rss`]).

use std::os::fd::OwnedFd;
use std::sync::Arc;

use braid_core::NicId;

use crate::channel::{
    BufferPool, ChannelError, Mesh, MeshPort, PacketBuf, PacketMeta, PoolConfig, PoolId, ReturnLane,
};

/// Handles per lane between two workers.
pub(super) const LANE_CAPACITY: usize = 1024;

/// Buffers in each worker's pool: enough for every lane out of it to be full while each
/// other worker holds a whole inbox of them, plus the stash and the one being filled. So
/// `alloc` cannot fail while the workers follow the protocol.
fn pool_buffers(workers: usize) -> usize {
    (LANE_CAPACITY + INBOX) * (workers - 1) + 64
}

/// Handles taken from the lanes per batch.
pub(super) const INBOX: usize = 256;

/// Batches of [`INBOX`] handles written per loop turn, at most; a worker with more waiting
/// does not sleep before its next turn.
pub(super) const INBOX_TURNS: usize = 4;

/// Handles sent to one worker before it is woken, even mid-drain: a quarter of a lane.
const WAKE_EVERY: u32 = (LANE_CAPACITY / 4) as u32;

/// Counters of one worker's steering.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SteerStats {
    /// Delivered packets handed to the worker that owns their RSS queue.
    pub steered_out: u64,
    /// Packets received from other workers and written to this worker's queue.
    pub steered_in: u64,
    /// Handoffs that found the lane full: the packet waited in the worker's stash (and the
    /// worker stopped delivering) until the owner made room. Nothing is lost or reordered.
    pub lane_full: u64,
    /// Delivered packets for which the pool had no buffer (cannot happen while the pool
    /// covers every lane); they went to this worker's own queue through its scratch buffer.
    pub pool_exhausted: u64,
    /// `per-nic` receive: braid packets this worker read from a NIC and handed to the
    /// worker whose lane they carry.
    pub rx_handed_out: u64,
    /// `per-nic` receive: braid packets other workers read and handed to this one.
    pub rx_handed_in: u64,
    /// `per-nic` receive: packets dropped because the owner's lane was full.
    pub rx_lane_full: u64,
    /// `per-nic` receive: packets dropped because the receive pool had no buffer.
    pub rx_pool_exhausted: u64,
    /// `per-nic` receive: packets dropped because they exceed a receive pool buffer (larger
    /// than every NIC's MTU: never expected).
    pub rx_too_big: u64,
}

/// The receive side of the channel (`per-nic` receive): lanes of braid packets from the
/// worker that read them to the worker whose session they belong to.
#[derive(Debug)]
pub(super) struct RxLanes {
    pub(super) mesh: MeshPort,
    pub(super) pool: BufferPool,
    homes: Vec<Option<ReturnLane>>,
    pub(super) inbox: Vec<PacketBuf>,
}

/// One worker's end of the steering: its index, its pool, its lanes to and from the other
/// workers, and the return lanes to their pools. Make them all at once with
/// [`Steering::build`] and give one to each worker ([`super::Dataplane::with_steering`]).
#[derive(Debug)]
pub struct Steering {
    pub(super) worker: usize,
    pub(super) mesh: MeshPort,
    pub(super) pool: BufferPool,
    /// Return lane to worker `j`'s pool at index `j` (`None` at this worker's own index).
    homes: Vec<Option<ReturnLane>>,
    /// Other workers' wake-up eventfds (`None` until [`super::link_workers`]).
    pub(super) wakes: Vec<Option<Arc<OwnedFd>>>,
    /// Workers handed a packet since the last [`Steering::wake_peers`], one bit each.
    pending_wake: u128,
    /// Hand-offs to each worker since it was last woken.
    since_wake: Vec<u32>,
    /// A packet whose lane was full, with its owner: sent first next time, before any
    /// other delivery.
    stash: Option<(usize, PacketBuf)>,
    pub(super) inbox: Vec<PacketBuf>,
    pub(super) stats: SteerStats,
    /// With `per-nic` receive, the lanes of received braid packets.
    pub(super) rx: Option<RxLanes>,
}

/// The most workers (vNIC queues) that steering supports: one bit each in a `u128`.
pub const MAX_WORKERS: usize = 128;

/// Why steering could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    /// Fewer than 2 or more than [`MAX_WORKERS`] workers.
    #[error("steering needs 2 to {MAX_WORKERS} workers, not {0}")]
    Workers(usize),
    /// The channel refused its sizes.
    #[error(transparent)]
    Channel(#[from] ChannelError),
}

impl Steering {
    /// One [`Steering`] per worker, in worker order. `buf_bytes` must hold the largest
    /// delivered packet (the vNIC MTU). With `rx_buf_bytes` (the largest braid packet any
    /// NIC carries), the workers also get lanes for received braid packets (`per-nic`
    /// receive). Allocates every buffer and ring now; nothing after.
    ///
    /// # Errors
    /// [`SteerError`] for a bad worker count or buffer size.
    pub fn build(
        workers: usize,
        buf_bytes: usize,
        rx_buf_bytes: Option<usize>,
    ) -> Result<Vec<Self>, SteerError> {
        if !(2..=MAX_WORKERS).contains(&workers) {
            return Err(SteerError::Workers(workers));
        }
        let (pools, homes) = pools_and_homes(workers, buf_bytes, 0)?;
        let meshes = Mesh::build(workers, LANE_CAPACITY)?;
        let mut rx: Vec<Option<RxLanes>> = match rx_buf_bytes {
            Some(bytes) => {
                // Pool ids after the delivery pools', so a stray buffer is never taken for
                // the other kind.
                let first = u16::try_from(MAX_WORKERS).expect("invariant: MAX_WORKERS fits");
                let (pools, homes) = pools_and_homes(workers, bytes, first)?;
                Mesh::build(workers, LANE_CAPACITY)?
                    .into_iter()
                    .zip(pools)
                    .zip(homes)
                    .map(|((mesh, pool), homes)| {
                        Some(RxLanes {
                            mesh,
                            pool,
                            homes,
                            inbox: Vec::with_capacity(INBOX),
                        })
                    })
                    .collect()
            }
            None => (0..workers).map(|_| None).collect(),
        };
        Ok(meshes
            .into_iter()
            .zip(pools)
            .zip(homes)
            .enumerate()
            .map(|(worker, ((mesh, pool), homes))| Self {
                worker,
                mesh,
                pool,
                homes,
                wakes: (0..workers).map(|_| None).collect(),
                pending_wake: 0,
                since_wake: vec![0; workers],
                stash: None,
                inbox: Vec::with_capacity(INBOX),
                stats: SteerStats::default(),
                rx: rx[worker].take(),
            })
            .collect())
    }

    /// This worker's index (= its vNIC queue).
    #[must_use]
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// Number of workers.
    #[must_use]
    pub fn workers(&self) -> usize {
        self.mesh.workers()
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> SteerStats {
        self.stats
    }

    /// Hand `buf` to worker `to`. `false` if the lane was full: the packet is then kept in
    /// the stash (counted), the owner is woken, and the caller must stop delivering until
    /// [`Steering::retry_stash`] succeeds.
    pub(super) fn hand_off(&mut self, to: usize, buf: PacketBuf) -> bool {
        match self.mesh.try_send_to(to, buf) {
            Ok(()) => {
                self.stats.steered_out += 1;
                self.pending_wake |= 1u128 << to;
                if let Some(n) = self.since_wake.get_mut(to) {
                    *n += 1;
                    if *n >= WAKE_EVERY {
                        self.wake_peers();
                    }
                }
                true
            }
            Err(buf) => {
                self.stats.lane_full += 1;
                self.stash = Some((to, buf));
                self.wake_peers();
                false
            }
        }
    }

    /// Send the stashed packet, if any. `true` if the stash is empty now.
    pub(super) fn retry_stash(&mut self) -> bool {
        let Some((to, buf)) = self.stash.take() else {
            return true;
        };
        match self.mesh.try_send_to(to, buf) {
            Ok(()) => {
                self.stats.steered_out += 1;
                self.pending_wake |= 1u128 << to;
                true
            }
            Err(buf) => {
                self.stash = Some((to, buf));
                false
            }
        }
    }

    /// `true` if the worker must not sleep: handles wait in its lanes, or a packet in its
    /// stash.
    pub(super) fn has_work(&mut self) -> bool {
        if self.stash.is_some() {
            return true;
        }
        let workers = self.mesh.workers();
        (0..workers).any(|j| self.mesh.receiver(j).is_some_and(|r| r.pending() > 0))
            || self.rx.as_mut().is_some_and(|rx| {
                (0..workers).any(|j| rx.mesh.receiver(j).is_some_and(|r| r.pending() > 0))
            })
    }

    /// Give a buffer back to the pool it came from. A buffer that no pool takes (a bug: a
    /// foreign pool id) is dropped, and its pool has one buffer fewer.
    pub(super) fn release(&mut self, buf: PacketBuf) {
        let home = usize::from(buf.pool().0);
        if home == self.worker {
            let _ = self.pool.free(buf);
        } else if let Some(Some(lane)) = self.homes.get_mut(home) {
            let _ = lane.free(buf);
        }
    }

    /// The worker a braid packet read from a NIC belongs to, if not this one: the lane in
    /// its header, with `per-nic` receive. `None`: this worker's engine takes it (its own
    /// lane, a lane no worker has, or too short to say: the engine counts those).
    pub(super) fn rx_owner(&self, packet: &[u8]) -> Option<usize> {
        self.rx.as_ref()?;
        let lane = usize::from(braid_wire::BraidPacket::new_checked(packet).ok()?.lane());
        (lane != self.worker && lane < self.workers()).then_some(lane)
    }

    /// Hand a braid packet read from NIC `nic` to worker `to`: copied into a buffer of the
    /// receive pool, whose handle goes through the lane. Dropped and counted if the lane is
    /// full or the pool empty.
    pub(super) fn hand_off_rx(&mut self, to: usize, nic: NicId, packet: &[u8]) {
        let Some(rx) = self.rx.as_mut() else {
            return;
        };
        let Some(mut buf) = rx.pool.alloc() else {
            self.stats.rx_pool_exhausted += 1;
            return;
        };
        if buf.fill_from(packet).is_err() {
            self.stats.rx_too_big += 1;
            let _ = rx.pool.free(buf);
            return;
        }
        buf.meta = PacketMeta { nic, flow_hash: 0 };
        match rx.mesh.try_send_to(to, buf) {
            Ok(()) => {
                self.stats.rx_handed_out += 1;
                self.pending_wake |= 1u128 << to;
            }
            Err(buf) => {
                self.stats.rx_lane_full += 1;
                let _ = rx.pool.free(buf);
                self.pending_wake |= 1u128 << to;
            }
        }
    }

    /// Give a received packet's buffer back to the receive pool it came from (pool id
    /// [`MAX_WORKERS`] + its worker).
    pub(super) fn release_rx(&mut self, buf: PacketBuf) {
        let Some(rx) = self.rx.as_mut() else {
            return;
        };
        let home = usize::from(buf.pool().0).wrapping_sub(MAX_WORKERS);
        if home == self.worker {
            let _ = rx.pool.free(buf);
        } else if let Some(Some(lane)) = rx.homes.get_mut(home) {
            let _ = lane.free(buf);
        }
    }

    /// Wake every worker handed a packet since the last call (one eventfd write each).
    pub(super) fn wake_peers(&mut self) {
        while self.pending_wake != 0 {
            let to = self.pending_wake.trailing_zeros() as usize;
            self.pending_wake &= self.pending_wake - 1;
            if let Some(n) = self.since_wake.get_mut(to) {
                *n = 0;
            }
            if let Some(Some(fd)) = self.wakes.get(to) {
                // Fails only if the counter would overflow: the peer has wake-ups pending.
                let _ = rustix::io::write(&**fd, &1u64.to_ne_bytes());
            }
        }
    }
}

/// One pool per worker (ids `first_id + k`), and for each worker the return lanes into the
/// other workers' pools (`homes[q][k]`: worker q's lane into pool k).
#[allow(clippy::type_complexity)]
fn pools_and_homes(
    workers: usize,
    buf_bytes: usize,
    first_id: u16,
) -> Result<(Vec<BufferPool>, Vec<Vec<Option<ReturnLane>>>), SteerError> {
    let cfg = PoolConfig {
        buf_count: pool_buffers(workers),
        buf_bytes,
    };
    let mut pools = (0..workers)
        .map(|k| {
            let k = u16::try_from(k).expect("invariant: workers <= MAX_WORKERS");
            BufferPool::new(PoolId(first_id + k), &cfg)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut homes: Vec<Vec<Option<ReturnLane>>> = (0..workers)
        .map(|_| (0..workers).map(|_| None).collect())
        .collect();
    for (k, pool) in pools.iter_mut().enumerate() {
        for (q, h) in homes.iter_mut().enumerate() {
            if q != k {
                h[k] = Some(pool.return_lane());
            }
        }
    }
    Ok((pools, homes))
}
