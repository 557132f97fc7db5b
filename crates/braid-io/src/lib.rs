//! braid-io: braid's I/O layer, the code that moves packets between the engine (braid-core)
//! and the operating system.
//!
//! - [`vnic`]: the virtual NIC, a multi-queue TUN/TAP device with virtio-net offloads,
//!   configured through [`netlink`];
//! - [`udp`]: one UDP transport per NIC, bound to its device, batched with GSO/GRO;
//! - [`transport`]: what every port offers the worker (batches, a descriptor, counters);
//! - [`dataplane`]: the worker that drives one engine with those ports, and its handle for
//!   control commands and counters;
//! - [`crypto`] and [`keyfile`]: the AEAD for braid packets and the pre-shared key's file;
//! - [`pipe`]: a stand-in port over Unix datagram sockets, for tests without root;
//! - [`sched`]: real-time scheduling for a worker (`daemon.realtime_priority`);
//! - [`channel`]: the inter-NIC channel.
//!
//! # The inter-NIC channel
//!
//! Workers exchange packets as *handles* ([`channel::PacketBuf`]) to buffers of a pool that is
//! allocated once at startup ([`channel::BufferPool`]), through bounded, lock-free
//! single-producer single-consumer rings ([`channel::lane`], all-to-all via
//! [`channel::Mesh`]). Handing a packet to another worker moves a pointer, never the packet
//! bytes, and takes no lock; freed buffers travel home to their pool on return lanes
//! ([`channel::ReturnLane`]), so nothing is allocated or freed on the hot path. Today one
//! worker drives every port; when there is one worker per NIC and per vNIC queue, a fragment
//! that arrives on one NIC's worker reaches the worker that owns its flow this way.
//!
//! This crate knows nothing of flows: the engine decides which worker owns a flow; braid-io
//! moves batches of buffers. Its only `unsafe` code is in the private `sys` module.
#![warn(missing_docs)]

pub mod channel;
pub mod crypto;
pub mod dataplane;
pub mod keyfile;
pub mod netlink;
pub mod packet;
pub mod pipe;
pub mod sched;
pub mod transport;
pub mod tunnel;
pub mod udp;
pub mod vnic;

#[cfg(test)]
mod test_support;

// The only module allowed `unsafe` (each block with a `// SAFETY:` comment).
#[allow(unsafe_code)]
mod sys;
