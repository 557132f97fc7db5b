//! braid-wire: braid's wire formats as zero-copy views and high-level reprs.
//!
//! # Layering
//!
//! Every format comes in two layers, in the smoltcp style:
//!
//! - a **view**, `Packet<T: AsRef<[u8]>>`, over a caller's buffer: getters named after the
//!   fields, `set_<field>` when the buffer is mutable, `payload()` / `payload_mut()`.
//!   `Packet::new_checked` (which runs `check_len`) must be used on untrusted bytes; after it,
//!   no accessor panics. Views do not validate values.
//! - a **repr**, a plain `Copy` struct: `Repr::parse(&packet)` validates every field and
//!   returns a typed [`ParseError`]; `Repr::buffer_len()` sizes a buffer;
//!   `Repr::emit(&mut packet)` writes the header.
//!
//! What is here:
//!
//! - [`braid`]: the braid header every braid datagram carries ([`BraidPacket`],
//!   [`BraidRepr`], [`PacketType`], [`ProbeReplyBody`], [`ProbeReplyCounters`]);
//! - [`ip`]: [`IpSummary`], the classification facts from an IPv4/IPv6 packet or an Ethernet
//!   frame, sliced by etherparse;
//! - [`vxlan`]: the VXLAN header ([`VxlanPacket`], [`VxlanRepr`]) and its UDP source port
//!   rule;
//! - [`gre`]: the GRE header with key, sequence number and checksum ([`GrePacket`],
//!   [`GreRepr`]);
//! - [`tunnel`]: VXLAN and GRE encapsulation and decapsulation of whole packets
//!   ([`VxlanEncap`], [`GreEncap`], [`Encap`], [`decap`], [`GreSeqCheck`]);
//! - [`checksum`]: the Internet checksum (RFC 1071) and its incremental update (RFC 1624);
//! - [`rewrite`]: in-place header edits (DSCP, ECN, TTL, addresses, ports) that keep every
//!   checksum right, and VLAN push/pop ([`rewrite::Edit`], [`rewrite::apply_l3`],
//!   [`rewrite::apply_frame`]);
//! - [`error`]: [`ParseError`], shared by all of them.
//!
//! # What is not here
//!
//! No I/O, no clock, no allocation (`#![no_std]`, no `alloc`), no `unsafe`. Nothing in this
//! crate panics on packet bytes: the fuzz target in `fuzz/fuzz_targets/braid_header.rs`
//! checks it. Flow state, reassembly and the engine live in braid-core; sockets and devices
//! in braid-io.
#![no_std]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod braid;
pub mod checksum;
pub mod error;
pub mod gre;
pub mod ip;
pub mod rewrite;
pub mod tunnel;
pub mod vxlan;

#[cfg(any(fuzzing, feature = "fuzzing"))]
pub mod fuzzing;

pub use braid::{
    AUTH_COUNTER_LEN as BRAID_AUTH_COUNTER_LEN, AUTH_TAG_LEN as BRAID_AUTH_TAG_LEN,
    FLAG_ENCRYPTED as BRAID_FLAG_ENCRYPTED, HEADER_LEN as BRAID_HEADER_LEN,
    MAX_LANES as BRAID_MAX_LANES, MAX_OVERHEAD as BRAID_MAX_OVERHEAD, Packet as BraidPacket,
    PacketType, ProbeReplyBody, ProbeReplyCounters, Repr as BraidRepr, VERSION as BRAID_VERSION,
};
pub use error::ParseError;
pub use gre::{Packet as GrePacket, Repr as GreRepr};
pub use ip::IpSummary;
pub use tunnel::{
    Decapped, Encap, EncapMeta, GreEncap, GreSeqCheck, PayloadKind, PayloadMeta, TunnelError,
    VxlanEncap, decap, decap_payload,
};
pub use vxlan::{
    HEADER_LEN as VXLAN_HEADER_LEN, Packet as VxlanPacket, Repr as VxlanRepr, VXLAN_PORT,
};
