//! Replacing the tunnel table of a running engine, between batches: the tunnel part of
//! [`Command::ReplacePolicies`](crate::engine::Command::ReplacePolicies).
//!
//! Owns: which tunnels of the old table stay ([`TunnelMap`]), the run-time state they keep,
//! which TX counters a changed or re-added tunnel carries over ([`Retired`]), and what
//! becomes of the packets queued for the others. Does not own the checks of the new table
//! ([`super::check_tunnels`]) or of what names tunnels (flow classes, rules: the engine's
//! `policies.rs` checks them all before anything changes and remaps the flows).
//!
//! A tunnel **stays** when the new table has one of the same name, NIC and encapsulation
//! ([`Encap`]: endpoints, VNI or key, sequence numbers, checksum, inner format, ports, TTL,
//! TOS, DF). It keeps its run-time state under its new index: the next outer IPv4 id and GRE
//! sequence number, its counters, its queued packets in order, and the RFC 2890 receive
//! check, which restarts only when `rx_check_seq` or `rx_seq_resync_after` changed. Its
//! `mtu_bytes` is the new table's. Every other tunnel of the old table is **removed**, a
//! tunnel of the same name whose NIC or encapsulation changed included (it is removed and a
//! new one added): its queued packets, outer packets with the old headers or inner packets
//! it decapsulated, are freed and counted ([`DropReason::TunnelRemoved`], once per datagram:
//! the fragments of one outer datagram count as one), since their tunnel's index now means
//! another tunnel or none. A new tunnel starts as one configured at build, with fresh
//! counters and receive check.
//!
//! # The TX counters of a changed or re-added tunnel
//!
//! The peer tells one stream of outer packets by addresses and VNI or GRE key, not by the
//! TTL, TOS, DF or checksum flag, so a tunnel whose **name, NIC, endpoints and VNI or key**
//! are unchanged (and its kind) carries on its next GRE sequence number and its next outer
//! IPv4 id, whatever else changed, also when it is added back after a replacement removed
//! it (the last [`MAX_TUNNELS`] removed tunnels' counters are kept: a rollback to the
//! previous set, or a tunnel taken out and put back, carries on too). Why: a Linux GRE
//! peer with `iseq` drops every packet whose sequence number is below the one it expects
//! and never resynchronises, so a tunnel restarted at 0 would go dark until the counter
//! passed the old value (RFC 2890 §2.2); and a restarted IPv4 id would reuse ids the peer
//! may still hold fragments of (RFC 791, RFC 6864), which a fragmenting tunnel
//! (`tunnel/fragment.rs`) would mix into the wrong datagram. A tunnel whose endpoints, key
//! or VNI changed is another stream: it starts from 0 and from `first_ip_id`.
//!
//! The counters are this engine's. With several workers (the daemon's `vnic.queues` > 1)
//! every worker has its own engine and so its own GRE sequence counter and IPv4 ids for
//! each tunnel, and the peer sees their streams interleaved on one key: the counters are
//! one stream per worker, not one per tunnel. The daemon refuses `seq = true` with more
//! than one queue for that reason (`config/tunnels.rs`); the IPv4 ids of the workers start
//! from different seeds.
//!
//! This runs on the command path: it may allocate (the new state table; the queues and the
//! fragmentation scratch, the first time an engine without tunnels gets some).

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use braid_wire::tunnel::{Encap, GreSeqCheck};

use super::{MAX_TUNNELS, TunnelRt, TunnelSpec, Tunnels, decap_config, first_ip_id};
use crate::buffer::PacketStore;
use crate::engine::config::EngineConfig;
use crate::{DropCounters, DropReason};

/// The TX counters a tunnel hands over to the one that replaces it (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TxCounters {
    /// The next outer IPv4 id.
    ip_id: u16,
    /// The next GRE sequence number.
    gre_seq: u32,
}

impl TxCounters {
    fn of(t: &TunnelRt) -> Self {
        Self {
            ip_id: t.ip_id,
            gre_seq: t.gre_seq,
        }
    }

    fn give(self, t: &mut TunnelRt) {
        t.ip_id = self.ip_id;
        t.gre_seq = self.gre_seq;
    }
}

/// The TX counters of the last [`MAX_TUNNELS`] tunnels that replacements removed, for a
/// tunnel of the same stream added back later (see the module doc). Bounded: the oldest
/// goes first.
#[derive(Debug, Default)]
pub(in crate::engine) struct Retired {
    /// Each removed tunnel's spec and counters, oldest first.
    tunnels: VecDeque<(TunnelSpec, TxCounters)>,
}

impl Retired {
    /// Remember `spec`'s counters (in place of an older entry of the same stream).
    fn keep(&mut self, spec: TunnelSpec, counters: TxCounters) {
        self.tunnels.retain(|(s, _)| !same_stream(s, &spec));
        if self.tunnels.len() >= MAX_TUNNELS {
            self.tunnels.pop_front();
        }
        self.tunnels.push_back((spec, counters));
    }

    /// The counters of a removed tunnel of `spec`'s stream, taken out.
    fn take(&mut self, spec: &TunnelSpec) -> Option<TxCounters> {
        let i = self
            .tunnels
            .iter()
            .position(|(s, _)| same_stream(s, spec))?;
        self.tunnels.remove(i).map(|(_, c)| c)
    }
}

/// `true` if `a` and `b` send one stream of outer packets as the peer sees it: the same
/// name, NIC, endpoints, kind, and VNI or GRE key (TTL, TOS, DF, checksum, ports may
/// differ).
fn same_stream(a: &TunnelSpec, b: &TunnelSpec) -> bool {
    a.name == b.name
        && a.nic == b.nic
        && a.endpoints() == b.endpoints()
        && match (&a.encap, &b.encap) {
            (Encap::Vxlan(x), Encap::Vxlan(y)) => x.vni == y.vni,
            (Encap::Gre(x), Encap::Gre(y)) => x.key == y.key,
            _ => false,
        }
}

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

    /// The old index of the tunnel of the same name as new tunnel `new`, stayed or changed.
    fn named_source_of(&self, new: usize) -> Option<usize> {
        self.named
            .iter()
            .position(|s| s.is_some_and(|j| usize::from(j) == new))
    }
}

impl Tunnels {
    /// Replace the table with `new` (checked), mapped by `map` (from the table in force):
    /// see the module doc. `cfg` is the engine's configuration (seed, queue sizes). Returns
    /// the number of queued datagrams dropped (the fragments of one count once).
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
        let retired = &mut self.retired;
        self.rt = new
            .iter()
            .enumerate()
            .map(|(j, spec)| {
                let stayed = map
                    .source_of(j)
                    .and_then(|i| old.get_mut(i))
                    .and_then(Option::take);
                if let Some(mut t) = stayed {
                    if t.spec.rx_check_seq != spec.rx_check_seq
                        || t.spec.rx_seq_resync_after != spec.rx_seq_resync_after
                    {
                        t.seq_check = GreSeqCheck::new(spec.rx_seq_resync_after);
                    }
                    t.spec = spec.clone();
                    return t;
                }
                // A new tunnel: the TX counters of the same stream carry on, from the old
                // tunnel of its name (changed) or from one removed before (re-added).
                let mut t = TunnelRt::new(spec.clone(), first_ip_id(cfg.seed, j));
                let changed = map
                    .named_source_of(j)
                    .and_then(|i| old.get_mut(i))
                    .and_then(|o| o.take_if(|o| same_stream(&o.spec, spec)));
                if let Some(c) = changed
                    .map(|o| TxCounters::of(&o))
                    .or_else(|| retired.take(spec))
                {
                    c.give(&mut t);
                }
                t
            })
            .collect();
        // The old tunnels that nothing took over: their counters, for one added back.
        for t in old.into_iter().flatten() {
            let counters = TxCounters::of(&t);
            self.retired.keep(t.spec, counters);
        }
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
                        // Once per datagram: at its last fragment, which is queued as long as
                        // any of them is (they leave in order).
                        if q.more_fragments == 0 {
                            drops.count(DropReason::TunnelRemoved);
                            dropped += 1;
                        }
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

#[cfg(test)]
mod tests;
