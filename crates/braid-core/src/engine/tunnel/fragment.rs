//! Fragmentation of a GRE tunnel's outer IPv4 packets (RFC 791 §2.3, §3.2) when they are
//! larger than the tunnel's MTU and the tunnel's outer header has DF clear: the `XXX(#4)`
//! of `Tunnels::encap`, done with braid-core's [`Fragmenter`] (tested against the Linux
//! kernel's reassembly in `ipfrag`).
//!
//! Owns: which tunnels fragment ([`may_fragment`]) and the fragmenting encapsulation
//! (`Tunnels::encap_fragmented`). Does not own the encapsulation (braid-wire's
//! [`braid_wire::tunnel`]), the fragmenter ([`crate::ipfrag`]) or the queue
//! (`super::Tunnels`).
//!
//! # Which tunnels, and why
//!
//! - **GRE over IPv4 with DF clear** fragments: RFC 2784 carries GRE in an ordinary IPv4
//!   delivery header, and IPv4 fragments a packet whose DF is clear (RFC 791). With DF set
//!   (`[[tunnels]] df = true`) the packet is dropped as `tunnel_too_big`, as a router would.
//! - **VXLAN** never fragments: RFC 7348 §4.3 says VTEPs MUST NOT fragment VXLAN packets;
//!   the vNIC MTU is reduced by the overhead instead.
//! - **IPv6** outer headers do not: only the source fragments IPv6, and the tunnels'
//!   `df` is an IPv4 option (`tunnel_too_big`).
//!
//! # How
//!
//! The whole outer packet is built once in a scratch buffer of the tunnel state (sized at
//! build for a vNIC-MTU packet with the largest overhead, so nothing is allocated per
//! packet), then cut into fragments of at most the tunnel's MTU, each written into its own
//! packet-store buffer and queued in order. The fragments keep the outer packet's IPv4 id,
//! which is never 0 (`Tunnels::encap`: the kernel's raw socket would give each fragment
//! another id). They are queued all or none: if the TX queue cannot take all of them the
//! packet is dropped as `tunnel_queue_full`, and if the store runs dry half-way the ones
//! already queued are freed and the packet is dropped as `store_full` (a datagram missing
//! a fragment is lost at the far end anyway, after holding its reassembly memory).
//! The rest of the way keeps them together: `poll_tunnel_transmit` hands out a datagram's
//! fragments one call after the other (the NIC's pacer is asked at the first only), tells
//! the caller how many follow ([`TunnelTransmit::more_fragments`]: braid-io checks that
//! the tunnel port has room for all of them before it queues the first), drops the rest of
//! a datagram with a fragment too big for the caller's buffer (one `too_big`), and a
//! replacement that removes the tunnel counts its queued datagrams once each
//! (`tunnel_removed`).
//!
//! [`TunnelTransmit::more_fragments`]: super::TunnelTransmit::more_fragments
//! The GRE sequence number (RFC 2890 §2.2) is per outer packet: the fragments of one share
//! it, inside the first fragment's payload.
//!
//! On receipt braid does not reassemble outer fragments: the kernel does it before the
//! tunnel sockets see them (`ip_local_deliver` reassembles before `raw_local_deliver` and
//! the UDP socket lookup: see braid-io's `tunnel` module and the root test
//! `crates/braid/tests/tunnels.rs`).

use braid_wire::tunnel::{Encap, EncapMeta, OuterIp};

use super::{Queued, TunnelSpec, Tunnels, encap_drop};
use crate::DropReason;
use crate::buffer::PacketStore;
use crate::engine::config::EngineConfig;
use crate::ipfrag::{FragIdCounter, Fragmenter};

/// The most bytes any encapsulation adds (outer IPv6 40 + GRE 16 or UDP + VXLAN 16, inner
/// Ethernet 14, an 802.1Q tag 4), rounded up.
const MAX_OVERHEAD_BYTES: usize = 96;

/// `true` if the tunnel fragments an outer packet larger than its MTU: GRE over IPv4 with
/// DF clear (see the module doc).
pub(super) fn may_fragment(spec: &TunnelSpec) -> bool {
    matches!(spec.encap, Encap::Gre(g) if !g.outer.df && matches!(g.outer.ip, OuterIp::V4 { .. }))
}

/// The scratch an engine with `cfg` needs to build a whole outer packet.
pub(super) fn scratch_bytes(cfg: &EngineConfig) -> usize {
    cfg.vnic_mtu as usize + MAX_OVERHEAD_BYTES
}

impl Tunnels {
    /// Encapsulate `packet` for `tunnel` (one that [`may_fragment`]) with `meta` and queue
    /// the outer packet as fragments of at most the tunnel's MTU (see the module doc).
    pub(super) fn encap_fragmented(
        &mut self,
        tunnel: u8,
        packet: &[u8],
        meta: EncapMeta,
        store: &mut PacketStore,
    ) -> Result<(), DropReason> {
        let Self {
            rt,
            tx,
            tx_capacity,
            scratch,
            scratch_bytes,
            ..
        } = self;
        let rt = rt
            .get_mut(usize::from(tunnel))
            .ok_or(DropReason::TunnelUnknown)?;
        let total = rt.spec.encap.overhead_for(&meta) + packet.len();
        if scratch.len() < total {
            // Reserved at build when the engine has tunnels; only a tunnel table replacement
            // that gave an engine its first tunnels leaves it empty: grown once, here.
            scratch.resize(total.max(*scratch_bytes), 0);
        }
        let len = rt
            .spec
            .encap
            .encap_into(packet, &mut scratch[..total], meta)
            .map_err(encap_drop)?;
        // IPv4 fragments keep the outer packet's id; the counter is for IPv6 (not used).
        let mut ids = FragIdCounter::new(0);
        let mut frags = Fragmenter::new(&scratch[..len], rt.spec.mtu_bytes as usize, &mut ids)
            .map_err(|_| DropReason::TunnelTooBig)?;
        let count = frags.fragment_count();
        if tx.len() + count > *tx_capacity {
            return Err(DropReason::TunnelQueueFull);
        }
        // What poll_tunnel_transmit tells the caller of each fragment (`more_fragments`).
        let last = u16::try_from(count.saturating_sub(1)).map_err(|_| DropReason::TunnelTooBig)?;
        let first = tx.len();
        let mut index: u16 = 0;
        while let Some(next) = frags.next_len() {
            let written = store.alloc(next).map(|buf| {
                let ok = matches!(frags.write_next(store.get_mut(&buf)), Ok(Some(_)));
                (buf, ok)
            });
            match written {
                Some((buf, true)) => {
                    tx.push_back(Queued {
                        tunnel,
                        buf,
                        seq: 0,
                        vlan: None,
                        more_fragments: last.saturating_sub(index),
                        follows: index > 0,
                    });
                    index = index.saturating_add(1);
                }
                failed => {
                    // All or none: free the fragments queued so far.
                    let reason = match failed {
                        Some((buf, _)) => {
                            // invariant: the buffer holds next_len() bytes; not expected.
                            store.free(buf);
                            DropReason::TunnelTooBig
                        }
                        None => DropReason::StoreFull,
                    };
                    for q in tx.drain(first..) {
                        store.free(q.buf);
                    }
                    return Err(reason);
                }
            }
        }
        rt.sent_one(meta.vlan.is_some());
        rt.stats.tx_fragmented_count += 1;
        rt.stats.tx_fragments_count += count as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
