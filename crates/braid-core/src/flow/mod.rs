//! Flow classification and the bounded flow table.
//!
//! Owns: turning a parsed packet into a [`FlowKey`] ([`classify`]) and the generic bounded
//! [`FlowTable`] the engine uses twice (TX: `FlowKey → tx flow state`; RX:
//! `(peer, FlowId) → rx state`). Does not own packet parsing (braid-wire), what a flow's state
//! holds (engine), nor which NIC a flow uses (the [`crate::controller`]).
//!
//! Fast path and slow path, as the engine uses them:
//!
//! ```text
//! packet ─ IpSummary::parse_l3 ─ FlowKey::from_summary ─ FlowTable::get_mut ──hit──▶ cached state   (FAST PATH)
//!                                                                 └─miss─▶ FlowTable::insert     (SLOW PATH:
//!                                                                          controller placement,
//!                                                                          eviction hand-back)
//! ```
//!
//! Every table is bounded: `capacity` entries, an idle timeout (expired in budgeted batches)
//! and an [`EvictionPolicy`] for a full table; each outcome is counted in
//! [`FlowTableStats`], and every evicted or expired value is handed back to the caller so it
//! can free the buffers it references.

pub mod classify;
pub mod table;

pub use classify::{ClassifyConfig, FlowKey, IPPROTO_TCP, IPPROTO_UDP};
pub use table::{
    EvictionPolicy, FlowTable, FlowTableConfig, FlowTableStats, InsertError, Inserted,
};

#[cfg(test)]
mod tests;
