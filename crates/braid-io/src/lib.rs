//! braid-io: braid's I/O layer, the code that moves packets between the engine (braid-core)
//! and the operating system.
//!
//! It will hold the TUN/TAP virtual NIC, the per-NIC UDP and AF_PACKET transports, netlink
//! and the worker threads. For now it holds the **inter-NIC channel** ([`channel`]).
//!
//! # The inter-NIC channel
//!
//! braid runs one worker thread per NIC and per vNIC queue. Workers exchange packets as
//! *handles* ([`channel::PacketBuf`]) to buffers of a pool that is allocated once at startup
//! ([`channel::BufferPool`]), through bounded, lock-free single-producer single-consumer rings
//! ([`channel::lane`], all-to-all via [`channel::Mesh`]). Handing a packet to another worker
//! moves a pointer, never the packet bytes, and takes no lock; a fragment that arrives on one
//! NIC's worker reaches the worker that owns its flow this way. Freed buffers travel home to
//! their pool on return lanes ([`channel::ReturnLane`]), so nothing is allocated or freed on
//! the hot path.
//!
//! This crate knows nothing of flows: the engine decides which worker owns a flow; braid-io
//! moves batches of buffers. Its only `unsafe` code is in the private `sys` module.
#![warn(missing_docs)]

pub mod channel;
pub mod crypto;
pub mod dataplane;
pub mod keyfile;
pub mod netlink;
pub mod pipe;
pub mod transport;
pub mod udp;
pub mod vnic;

// The only module allowed `unsafe` (each block with a `// SAFETY:` comment).
#[allow(unsafe_code)]
mod sys;
