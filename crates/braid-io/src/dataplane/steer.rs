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
//! Bounds and counters ([`SteerStats`]): a full lane or an exhausted pool never loses a packet
//! silently: a full lane counts `lane_full` and the packet is written to the worker's own
//! queue instead (it reaches the application, on another queue), and an exhausted pool
//! counts `pool_exhausted` and does the same through the worker's scratch buffer.
//!
//! Wake-ups: a worker that handed packets to another writes that worker's eventfd once per
//! batch (never per packet), so a sleeping owner wakes up.
//!
//! Not owned here: the loop ([`super::Dataplane`]), the ports, which queue RSS picks
//! ([`braid_core::rss`]).

use std::os::fd::OwnedFd;
use std::sync::Arc;

use crate::channel::{
    BufferPool, ChannelError, Mesh, MeshPort, PacketBuf, PoolConfig, PoolId, ReturnLane,
};

/// Handles per lane between two workers.
const LANE_CAPACITY: usize = 1024;

/// Buffers in each worker's pool: a full lane's worth for every other worker, plus one
/// batch in the worker's own hands.
fn pool_buffers(workers: usize) -> usize {
    LANE_CAPACITY * (workers - 1) + 256
}

/// Handles taken from the lanes per loop turn.
pub(super) const INBOX: usize = 256;

/// Counters of one worker's steering.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SteerStats {
    /// Delivered packets handed to the worker that owns their RSS queue.
    pub steered_out: u64,
    /// Packets received from other workers and written to this worker's queue.
    pub steered_in: u64,
    /// Handoffs refused by a full lane; those packets went to this worker's own queue.
    pub lane_full: u64,
    /// Delivered packets for which the pool had no buffer; they went to this worker's own
    /// queue through its scratch buffer.
    pub pool_exhausted: u64,
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
    pub(super) inbox: Vec<PacketBuf>,
    pub(super) stats: SteerStats,
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
    /// delivered packet (the vNIC MTU). Allocates every buffer and ring now; nothing after.
    ///
    /// # Errors
    /// [`SteerError`] for a bad worker count or buffer size.
    pub fn build(workers: usize, buf_bytes: usize) -> Result<Vec<Self>, SteerError> {
        if !(2..=MAX_WORKERS).contains(&workers) {
            return Err(SteerError::Workers(workers));
        }
        let cfg = PoolConfig {
            buf_count: pool_buffers(workers),
            buf_bytes,
        };
        let mut pools = (0..workers)
            .map(|k| {
                let id = PoolId(u16::try_from(k).expect("invariant: workers <= MAX_WORKERS"));
                BufferPool::new(id, &cfg)
            })
            .collect::<Result<Vec<_>, _>>()?;
        // homes[q][k]: worker q's return lane into pool k.
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
        let meshes = Mesh::build(workers, LANE_CAPACITY)?;
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
                inbox: Vec::with_capacity(INBOX),
                stats: SteerStats::default(),
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

    /// Hand `buf` to worker `to`. On a full lane the packet comes back (counted).
    pub(super) fn hand_off(&mut self, to: usize, buf: PacketBuf) -> Result<(), PacketBuf> {
        match self.mesh.try_send_to(to, buf) {
            Ok(()) => {
                self.stats.steered_out += 1;
                self.pending_wake |= 1u128 << to;
                Ok(())
            }
            Err(buf) => {
                self.stats.lane_full += 1;
                Err(buf)
            }
        }
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

    /// Wake every worker handed a packet since the last call (one eventfd write each).
    pub(super) fn wake_peers(&mut self) {
        while self.pending_wake != 0 {
            let to = self.pending_wake.trailing_zeros() as usize;
            self.pending_wake &= self.pending_wake - 1;
            if let Some(Some(fd)) = self.wakes.get(to) {
                // Fails only if the counter would overflow: the peer has wake-ups pending.
                let _ = rustix::io::write(&**fd, &1u64.to_ne_bytes());
            }
        }
    }
}
