//! Replacing the tunnel table of a running engine, between batches: the tunnel part of
//! [`Command::ReplacePolicies`](crate::engine::Command::ReplacePolicies).
//!
//! Owns: which tunnels of the old table stay ([`TunnelMap`]), the run-time state they keep,
//! and what becomes of the packets queued for the others. Does not own the checks of the new
//! table ([`super::check_tunnels`]) or of what names tunnels (flow classes, rules: the
//! engine's `policies.rs` checks them all before anything changes and remaps the flows).
//!
//! A tunnel **stays** when the new table has one of the same name, NIC and encapsulation
//! ([`Encap`]: endpoints, VNI or key, sequence numbers, checksum, inner format, ports, TTL,
//! TOS, DF). It keeps its run-time state under its new index: the next outer IPv4 id and GRE
//! sequence number (the peer sees one stream, RFC 2890 §2.2), its counters, its queued
//! packets in order, and the RFC 2890 receive check, which restarts only when `rx_check_seq`
//! or `rx_seq_resync_after` changed. Its `mtu_bytes` is the new table's. Every other tunnel
//! of the old table is **removed**, a tunnel of the same name whose NIC or encapsulation
//! changed included (it is removed and a new one added): its queued packets, outer packets
//! with the old headers or inner packets it decapsulated, are freed and counted
//! ([`DropReason::TunnelRemoved`]), since their tunnel's index now means another tunnel or
//! none. A new tunnel starts as one configured at build.
//!
//! This runs on the command path: it may allocate (the new state table; the queues and the
//! fragmentation scratch, the first time an engine without tunnels gets some).

use alloc::vec::Vec;

use braid_wire::tunnel::GreSeqCheck;

use super::{MAX_TUNNELS, TunnelRt, TunnelSpec, Tunnels, decap_config, first_ip_id};
use crate::buffer::PacketStore;
use crate::engine::config::EngineConfig;
use crate::{DropCounters, DropReason};

/// How the old table's tunnels (by index) map onto the new table's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::engine) struct TunnelMap {
    /// `stays[old]`: the new index of the tunnel if it stays (same name, NIC and
    /// encapsulation), else `None`.
    pub(in crate::engine) stays: [Option<u8>; MAX_TUNNELS],
    /// `named[old]`: the new index of the tunnel of the same name, whether it stayed or
    /// changed (what a flow class naming the tunnel by name follows).
    pub(in crate::engine) named: [Option<u8>; MAX_TUNNELS],
}

impl TunnelMap {
    /// Map `old` (the table in force) onto `new` (checked: names unique, at most
    /// [`MAX_TUNNELS`]).
    pub(in crate::engine) fn new(old: &[TunnelSpec], new: &[TunnelSpec]) -> Self {
        let mut map = Self {
            stays: [None; MAX_TUNNELS],
            named: [None; MAX_TUNNELS],
        };
        for (i, o) in old.iter().enumerate().take(MAX_TUNNELS) {
            let Some((j, n)) = new.iter().enumerate().find(|(_, n)| n.name == o.name) else {
                continue;
            };
            let j = u8::try_from(j).ok();
            map.named[i] = j;
            if n.nic == o.nic && n.encap == o.encap {
                map.stays[i] = j;
            }
        }
        map
    }

    /// The new index of old tunnel `old` if it stays.
    pub(in crate::engine) fn stays(&self, old: u8) -> Option<u8> {
        self.stays.get(usize::from(old)).copied().flatten()
    }

    /// The old index of the tunnel that stays as new tunnel `new`.
    fn source_of(&self, new: usize) -> Option<usize> {
        self.stays
            .iter()
            .position(|s| s.is_some_and(|j| usize::from(j) == new))
    }
}

impl Tunnels {
    /// Replace the table with `new` (checked), mapped by `map` (from the table in force):
    /// see the module doc. `cfg` is the engine's configuration (seed, queue sizes). Returns
    /// the number of queued packets dropped.
    pub(in crate::engine) fn replace(
        &mut self,
        new: &[TunnelSpec],
        map: &TunnelMap,
        cfg: &EngineConfig,
        store: &mut PacketStore,
        drops: &mut DropCounters,
    ) -> u64 {
        let mut old: Vec<Option<TunnelRt>> = core::mem::take(&mut self.rt)
            .into_iter()
            .map(Some)
            .collect();
        self.rt = new
            .iter()
            .enumerate()
            .map(|(j, spec)| {
                let stayed = map
                    .source_of(j)
                    .and_then(|i| old.get_mut(i))
                    .and_then(Option::take);
                match stayed {
                    Some(mut t) => {
                        if t.spec.rx_check_seq != spec.rx_check_seq
                            || t.spec.rx_seq_resync_after != spec.rx_seq_resync_after
                        {
                            t.seq_check = GreSeqCheck::new(spec.rx_seq_resync_after);
                        }
                        t.spec = spec.clone();
                        t
                    }
                    None => TunnelRt::new(spec.clone(), first_ip_id(cfg.seed, j)),
                }
            })
            .collect();
        // The queues, in place and in order: a packet of a tunnel that stays takes its new
        // index, the others are freed and counted.
        let mut dropped = 0;
        for queue in [&mut self.tx, &mut self.rx] {
            for _ in 0..queue.len() {
                let Some(mut q) = queue.pop_front() else {
                    break;
                };
                match map.stays(q.tunnel) {
                    Some(j) => {
                        q.tunnel = j;
                        queue.push_back(q);
                    }
                    None => {
                        store.free(q.buf);
                        drops.count(DropReason::TunnelRemoved);
                        dropped += 1;
                    }
                }
            }
        }
        // An engine built without tunnels has no room in its queues yet.
        if !new.is_empty() {
            if self.tx_capacity == 0 {
                self.tx_capacity = cfg.tunnel_queue_packets;
                self.tx.reserve(self.tx_capacity);
            }
            if self.rx_capacity == 0 {
                self.rx_capacity = cfg.deliver_queue_packets;
                self.rx.reserve(self.rx_capacity);
            }
            // The outer fragmentation's scratch (`tunnel/fragment.rs`), so that the fast
            // path does not grow it.
            if self.scratch.len() < self.scratch_bytes {
                self.scratch.resize(self.scratch_bytes, 0);
            }
        }
        self.decap = decap_config(new);
        dropped
    }
}
