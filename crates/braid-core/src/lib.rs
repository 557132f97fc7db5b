//! braid-core: the sans-IO engine of braid.
//!
//! This crate contains no networking code. It never makes a syscall, spawns a thread, reads a
//! clock, the environment or a file, and draws no OS randomness: `#![no_std]` (outside tests)
//! lets the compiler enforce that. Every input takes `now` ([`Instant`]), and the caller pulls
//! outputs into buffers it supplies. The same engine runs under the simulator (braid-sim), in
//! the daemon and in benchmarks.
//!
//! Layering (dependencies point down):
//!
//! ```text
//! engine      the Engine type: handle_* / poll_* / apply, ties everything together
//!   ├─ flow        classification (5-tuple + deeper keys), bounded flow table, idle expiry
//!   ├─ rules       match → actions rule engine: set validation, tuple-space lookup, live conditions
//!   ├─ controller  flow controller (NIC affinity): NIC registry, admission, rebalance
//!   ├─ scheduler   per-packet cost model: whole, split across k NICs, or duplicate
//!   ├─ health      link health: probes, RTT, one-way delay, loss, liveness
//!   ├─ reassembly  bounded, attack-proof reassembly of braid fragments
//!   ├─ ipfrag      standard IPv4/IPv6 fragmentation and reassembly (RFC 791/8200/5722)
//!   ├─ reorder     per-flow reorder and dedup, bounded by count and time
//!   ├─ replay      per-peer anti-replay window for authenticated packets (RFC 6479)
//!   ├─ rss         Toeplitz hash + indirection table: vNIC queue per flow
//!   ├─ qos         RFC 2697/2698 meters, strict priority + DRR class queues, per-NIC shaper
//!   └─ buffer      the packet store: a bounded slab arena with handles
//! time, types     Instant, NicId, NicSet, FlowId, DropReason, counters
//! histogram       fixed-size log-bucketed latency histogram (RTT, delay variation, holds)
//! ```
#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]

extern crate alloc;

pub mod auth;
pub mod buffer;
pub mod controller;
pub mod engine;
pub mod flow;
#[cfg(any(test, fuzzing, feature = "fuzzing"))]
pub mod fuzzing;
pub mod health;
pub mod histogram;
pub mod ipfrag;
pub mod qos;
pub mod reassembly;
pub mod reorder;
pub mod replay;
pub mod rss;
pub mod rules;
pub mod scheduler;
pub mod time;
pub mod types;

pub use time::Instant;
pub use types::{DropCounters, DropReason, FlowId, MAX_NICS, NicId, NicSet};
