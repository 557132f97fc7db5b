//! braid-sim: a discrete-event simulator of the links between two braid hosts.
//!
//! Two [`Host`]s (in braid's scenario tests: each a braid engine with its application
//! traffic) are joined by N full-duplex links. Time is virtual (a [`braid_core::Instant`]
//! that only the simulator moves), so a simulated second of three saturated 300 Mbit/s links
//! takes a fraction of a wall-clock second, and every behaviour is testable without root.
//!
//! # What it simulates
//!
//! Per link and per direction ([`LinkConfig`]): serialisation at a rate (with per-packet
//! overhead bytes), a bounded FIFO transmit queue with tail drop, one-way propagation delay,
//! jitter that keeps FIFO order, random loss, duplication, reordering (a packet held back by
//! an extra delay), an MTU, and a schedule of events ([`LinkEvent`]): down, up and changes of
//! rate, delay, jitter, loss, duplication and reordering. Every outcome is counted
//! ([`LinkStats`]). Randomness comes from a seeded ChaCha8 stream per link direction: the same
//! seed and the same (deterministic) hosts give the same run, event for event.
//!
//! # What it does not simulate
//!
//! No TCP or any transport (the hosts' packets are opaque bytes; whatever reliability or
//! congestion control there is lives in the hosts), no kernel (no socket buffers, GSO/GRO,
//! interrupts or scheduling latency), no CPU cost (hosts run in zero virtual time), no shared
//! bottleneck between links (each direction of each link is independent), and no correlated
//! (bursty) loss: loss is independent per packet.
//!
//! # Call protocol
//!
//! Build a [`SimConfig`], create [`Sim::new`] with the two hosts, then call
//! [`Sim::run_until`] / [`Sim::run_for`] as often as needed, reading counters
//! ([`Sim::link_stats`], [`Sim::utilisation`], [`Sim::host_stats`], [`Sim::snapshot`]) and the
//! hosts ([`Sim::a`], [`Sim::b`]) in between. The order of host calls within a run is
//! described in the `sim` module and on [`Host`].
//!
//! # Also here
//!
//! [`LatencyRecorder`] (HDR histogram, percentiles in µs), [`PacketPool`] (the free list that
//! keeps in-flight packets from allocating in steady state) and, in [`testing`], a
//! [`testing::CounterHost`] that sends numbered packets and records arrivals.
#![warn(missing_docs)]

mod event;
mod link;
mod pool;
pub mod scenario;
mod sim;
mod stats;
pub mod testing;

pub use link::{
    DEFAULT_MTU_BYTES, DEFAULT_OVERHEAD_BYTES, DEFAULT_QUEUE_BYTES, Direction, LinkAction,
    LinkConfig, LinkEvent, LinkStats,
};
pub use pool::PacketPool;
pub use sim::{Host, HostStats, Side, Sim, SimConfig, SimError, SimSnapshot};
pub use stats::{LATENCY_MAX, LatencyRecorder, LatencySummary};

#[cfg(test)]
mod tests;
