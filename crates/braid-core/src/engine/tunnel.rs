//! The engine as a VXLAN (RFC 7348) and GRE (RFC 2784/2890) tunnel endpoint towards peers
//! that are not braid: a Linux VXLAN device, a router's GRE tunnel.
//!
//! Owns: the tunnel table ([`TunnelSpec`], in [`EngineConfig::tunnels`]) and its validation,
//! each tunnel's run-time state (outer IPv4 id, GRE TX sequence number, the RFC 2890 receive
//! check, [`TunnelStats`]), the bounded queue of encapsulated packets that
//! [`Engine::poll_tunnel_transmit`] hands out, and the bounded queue of decapsulated inner
//! packets that [`Engine::poll_deliver`] hands to the vNIC after braid's own. It does not own
//! the header formats or the encap/decap functions (braid-wire's [`braid_wire::tunnel`]),
//! which flows are tunnelled (the flow class's [`super::FlowClass::tunnel`], or the rule
//! engine's "VXLAN/GRE encap" action: both set the TX flow's tunnel), or the sockets
//! (braid-io's `tunnel` module).
//!
//! # TX
//!
//! A vNIC packet of a flow whose TX flow entry names a tunnel skips braid's scheduler, QoS
//! queues and braid header: [`Engine::handle_tx`] copies it once into the packet store, with
//! the tunnel's overhead as headroom in front, and writes the outer headers there in place
//! ([`Encap::encap_in_place`]: no second copy). The result is a whole outer IPv4/IPv6 packet,
//! queued (bounded, [`EngineConfig::tunnel_queue_packets`]; a full queue is a counted
//! [`DropReason::TunnelQueueFull`]) until the caller takes it with
//! [`Engine::poll_tunnel_transmit`] and sends it as it is on the tunnel's NIC (braid-io: a raw
//! `IPPROTO_RAW` socket, the IP header ours). The VXLAN UDP source port comes from the flow's
//! id (one port per flow, RFC 7348 §5); the outer IPv4 id is a per-tunnel counter (RFC 6864
//! allows it), never 0 (the kernel's raw socket replaces a 0 id per packet); the GRE
//! sequence number a per-tunnel counter from 0 (RFC 2890 §2.2). Both are this engine's: with
//! several engines (the daemon's workers) each has its own, and a replacement that keeps a
//! tunnel's stream carries them on (`tunnel/replace.rs`). A flow whose TX rule pushes
//! a VLAN tag (VXLAN only, checked by the rule tables) gets it in the inner Ethernet header
//! ([`EncapMeta::vlan`], 4 bytes more overhead).
//!
//! **Too big for the NIC.** An outer packet larger than the tunnel's
//! [`TunnelSpec::mtu_bytes`] is dropped and counted ([`DropReason::TunnelTooBig`]): VXLAN
//! endpoints must not fragment (RFC 7348 §4.3), and the fix is a vNIC MTU reduced by the
//! overhead, as Linux sets vxlan0's MTU to the link's minus 50. The kernel would not
//! fragment for us: a raw socket that supplies its own IP header (`IP_HDRINCL`) has its
//! oversized sends refused with `EMSGSIZE`, whatever DF says (`raw_send_hdrinc`). The
//! exception is GRE over IPv4 with DF clear ([`TunnelSpec::fragments_outer`]): braid
//! fragments the outer packet itself with `ipfrag`, all or none into the queue
//! (`tunnel/fragment.rs`).
//!
//! **Shaped with the NIC's braid traffic.** A tunnel's packets share its NIC's pacer with
//! braid's own: [`Engine::poll_tunnel_transmit`] hands out the oldest tunnel packet only
//! when that NIC's pacing allows a send (as `poll_transmit` does for braid's queues), and
//! sending it moves the NIC's next free time on by its wire time (the outer IP packet plus
//! an Ethernet header), so the two together stay within the NIC's capacity. The tunnel
//! queue is one FIFO: while the oldest packet's NIC is busy, the packets behind it wait too,
//! also those of a tunnel on another NIC (a bounded wait: that NIC's next free time). The
//! pacer holds the queue between datagrams only: the fragments of one outer datagram
//! follow its first without waiting (each still moves the NIC's next free time on), so
//! that the caller gets them together and can send them all or none. They
//! are not classified into the NIC's QoS classes (XXX(#4): a QoS class of the NIC's
//! scheduler once the rule engine sets priorities for tunnelled flows too).
//!
//! # RX
//!
//! [`Engine::handle_tunnel_rx`] takes a whole outer packet (an IPv4 raw socket for GRE gives
//! the IP header too) and [`Engine::handle_tunnel_payload_rx`] the payload that a socket hands
//! over without the outer headers (a UDP socket on port 4789 for VXLAN, an IPv6 raw socket
//! for GRE). Both: decapsulate ([`braid_wire::tunnel::decap`] / [`decap_payload`]; malformed
//! is [`DropReason::TunnelMalformed`]) → find the tunnel whose remote and local addresses and
//! VNI or GRE key match ([`DropReason::TunnelUnknown`] otherwise; the first of at most
//! [`MAX_TUNNELS`]) → the inner IP packet ([`Decapped::inner_l3`]; an inner frame without IP,
//! such as an ARP request from a VXLAN device, is [`DropReason::TunnelInnerNotIp`]) → for a
//! GRE tunnel with [`TunnelSpec::rx_check_seq`], the RFC 2890 sequence check, last so that a
//! packet dropped for another reason never moves it ([`DropReason::TunnelSeqOutOfOrder`]) →
//! copy the inner packet into the store and queue it for the vNIC (bounded by
//! [`EngineConfig::deliver_queue_packets`]). A VXLAN inner frame may carry one 802.1Q tag
//! ([`Decapped::inner_ip`]): the IP packet is stored without it and its VLAN id goes with
//! it to the RX rules, which match on it and must pop it
//! ([`DropReason::TunnelVlanNotPopped`] otherwise). Outer fragments are reassembled by the
//! kernel before the sockets see them (see `tunnel/fragment.rs`). Inner packets skip
//! braid's reorder stage: they are delivered in arrival order. The inner destination MAC of
//! a VXLAN frame is not checked (a TUN vNIC has none).
//!
//! Nothing here allocates once the packet store has warmed up: the queues are reserved when
//! the engine is built.
//!
//! The table is replaced at run time with the rest of the policies
//! ([`Command::ReplacePolicies`](super::Command::ReplacePolicies)), between batches: which
//! tunnels keep their state and what becomes of the others' queued packets is
//! `tunnel/replace.rs`'s; `check_tunnels` checks a table for both paths.

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use core::net::IpAddr;

use braid_wire::rewrite::VlanTag;
use braid_wire::tunnel::{
    DecapConfig, Decapped, Encap, EncapMeta, GreSeqCheck, InnerFormat, Layer, OuterIp, PayloadMeta,
    SeqVerdict, Tunnel, TunnelError, decap, decap_payload,
};

use super::ConfigError;
use super::config::{EngineConfig, NicSpec};
use super::state::{Delivered, Engine, TxVerdict};
use crate::buffer::{BufHandle, PacketStore};
use crate::{DropCounters, DropReason, FlowId, Instant, NicId};

/// The most tunnels an engine has (a tunnel is named by a `u8` index).
pub const MAX_TUNNELS: usize = 32;

/// The smallest inner packet a tunnel must carry: the IPv4 minimum MTU (RFC 791).
const MIN_INNER_BYTES: u32 = 68;

/// One tunnel: where it leaves, how packets are wrapped, and what it accepts.
#[derive(Clone, Debug, PartialEq)]
pub struct TunnelSpec {
    /// A name for reports (unique).
    pub name: String,
    /// The NIC the outer packets leave on (a configured NIC; the caller sends them on its
    /// device).
    pub nic: NicId,
    /// The largest outer IP packet the NIC carries, bytes: its link MTU (default 1500). A
    /// larger outer packet is a counted drop (see the module doc).
    pub mtu_bytes: u32,
    /// The encapsulation: endpoints, VNI or GRE key/sequence/checksum, inner format
    /// ([`InnerFormat::Ip`] for GRE or [`InnerFormat::IpInEthernet`]: the engine's packets
    /// are IP packets). Received packets must come from its destination to its source and
    /// carry its VNI (VXLAN) or exactly its key, or none if it has none (GRE).
    pub encap: Encap,
    /// GRE: require a sequence number on received packets and drop those that are not in
    /// order (RFC 2890 §2.2). Default: the encap's `seq` (a peer configured with sequence
    /// numbers both ways, as Linux's `seq`). Ignored for VXLAN.
    pub rx_check_seq: bool,
    /// GRE: after this many consecutive out-of-order drops, accept the next packet as the new
    /// base (a peer that restarted from 0); 0 = never. Default 64.
    pub rx_seq_resync_after: u32,
}

impl TunnelSpec {
    /// A tunnel with the defaults: 1500-byte MTU, GRE sequence numbers checked on receive if
    /// the encap sends them, resync after 64 consecutive drops.
    #[must_use]
    pub fn new(name: &str, nic: NicId, encap: Encap) -> Self {
        Self {
            name: name.into(),
            nic,
            mtu_bytes: 1500,
            rx_check_seq: matches!(encap, Encap::Gre(g) if g.seq),
            rx_seq_resync_after: 64,
            encap,
        }
    }

    /// `true` if an outer packet larger than [`Self::mtu_bytes`] is sent as IPv4 fragments
    /// instead of dropped: GRE over IPv4 with DF clear (VXLAN never fragments, RFC 7348
    /// §4.3). See `tunnel/fragment.rs`.
    #[must_use]
    pub fn fragments_outer(&self) -> bool {
        fragment::may_fragment(self)
    }

    /// (local, remote) outer addresses.
    #[must_use]
    pub fn endpoints(&self) -> (IpAddr, IpAddr) {
        let outer = match &self.encap {
            Encap::Vxlan(v) => v.outer.ip,
            Encap::Gre(g) => g.outer.ip,
        };
        match outer {
            OuterIp::V4 { src, dst } => (IpAddr::V4(src), IpAddr::V4(dst)),
            OuterIp::V6 { src, dst } => (IpAddr::V6(src), IpAddr::V6(dst)),
        }
    }

    /// `true` if a decapsulated packet is this tunnel's: from its remote to its local
    /// address, with its VNI or its GRE key (or none when it has none).
    fn accepts(&self, d: &Decapped) -> bool {
        let (local, remote) = self.endpoints();
        d.outer_src == remote
            && d.outer_dst == local
            && match (&self.encap, d.tunnel) {
                (Encap::Vxlan(v), Tunnel::Vxlan { vni, .. }) => v.vni == vni,
                (Encap::Gre(g), Tunnel::Gre { key, .. }) => g.key == key,
                _ => false,
            }
    }

    /// `true` if the two tunnels would accept the same packets.
    fn same_rx(&self, other: &Self) -> bool {
        self.endpoints() == other.endpoints()
            && match (&self.encap, &other.encap) {
                (Encap::Vxlan(a), Encap::Vxlan(b)) => a.vni == b.vni,
                (Encap::Gre(a), Encap::Gre(b)) => a.key == b.key,
                _ => false,
            }
    }
}

/// One tunnel's counters. Units are in the names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TunnelStats {
    /// Outer packets handed out by [`Engine::poll_tunnel_transmit`].
    pub tx_packets_count: u64,
    /// Their bytes (outer IP header included).
    pub tx_bytes_count: u64,
    /// Received packets accepted and queued for the vNIC.
    pub rx_packets_count: u64,
    /// Their inner IP bytes.
    pub rx_bytes_count: u64,
    /// GRE: times the sequence check took a packet as its new base after a run of drops
    /// ([`TunnelSpec::rx_seq_resync_after`]).
    pub rx_seq_resync_count: u64,
    /// VXLAN: packets sent with an 802.1Q tag in the inner Ethernet header (a TX rule's
    /// `push_vlan`).
    pub tx_vlan_tagged_count: u64,
    /// VXLAN: received tagged inner frames delivered with their tag removed (an RX rule's
    /// `pop_vlan`).
    pub rx_vlan_popped_count: u64,
    /// GRE over IPv4 with DF clear: outer packets larger than the tunnel's MTU that were
    /// fragmented (RFC 791) instead of dropped.
    pub tx_fragmented_count: u64,
    /// The fragments they made, queued for [`Engine::poll_tunnel_transmit`] (each is counted
    /// again in `tx_packets_count` when handed out).
    pub tx_fragments_count: u64,
}

/// An outer packet for a tunnel's NIC, written by [`Engine::poll_tunnel_transmit`] into the
/// caller's buffer: a whole IPv4/IPv6 packet, to be sent as it is (not a braid packet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunnelTransmit {
    /// The tunnel (index into [`EngineConfig::tunnels`]).
    pub tunnel: u8,
    /// Its NIC.
    pub nic: NicId,
    /// Bytes written at the start of the buffer.
    pub len: usize,
    /// The fragments of the same outer datagram that the next calls hand out, right after
    /// this one and without waiting for the NIC's pacer (`tunnel/fragment.rs`): 0 for a
    /// whole packet or a datagram's last fragment. At a datagram's first fragment this is
    /// how many more the caller must have room for to send the datagram all or none.
    pub more_fragments: u16,
}

/// One tunnel's run-time state.
#[derive(Debug)]
struct TunnelRt {
    spec: TunnelSpec,
    /// The next outer IPv4 id.
    ip_id: u16,
    /// The next GRE sequence number sent.
    gre_seq: u32,
    seq_check: GreSeqCheck,
    stats: TunnelStats,
}

impl TunnelRt {
    /// A tunnel's state when it is configured (at build, or added by a replacement): the
    /// IPv4 ids start from `ip_id`, the GRE sequence from 0, nothing received yet.
    fn new(spec: TunnelSpec, ip_id: u16) -> Self {
        Self {
            seq_check: GreSeqCheck::new(spec.rx_seq_resync_after),
            spec,
            ip_id,
            gre_seq: 0,
            stats: TunnelStats::default(),
        }
    }

    /// One outer packet (whole, or all the fragments of one) was queued: the next IPv4 id
    /// and GRE sequence number, and the tag counter.
    fn sent_one(&mut self, tagged: bool) {
        self.ip_id = self.ip_id.wrapping_add(1);
        if matches!(self.spec.encap, Encap::Gre(g) if g.seq) {
            self.gre_seq = self.gre_seq.wrapping_add(1);
        }
        if tagged {
            self.stats.tx_vlan_tagged_count += 1;
        }
    }
}

/// A packet in a tunnel queue: the stored bytes and their tunnel.
#[derive(Debug)]
struct Queued {
    tunnel: u8,
    buf: BufHandle,
    /// RX: the tunnel's count of accepted packets, this one included (`Delivered::seq`).
    seq: u64,
    /// RX: the VLAN id of the VXLAN inner frame's 802.1Q tag (left out of the stored IP
    /// packet), which an RX rule must pop; `None` untagged or priority-tagged (VID 0).
    vlan: Option<u16>,
    /// TX: the fragments of the same outer datagram queued right behind this one (0: a
    /// whole packet or a datagram's last fragment; always 0 on RX).
    more_fragments: u16,
    /// TX: a fragment after its datagram's first, handed out without waiting for the pacer
    /// (`false` for a whole packet, a first fragment and on RX).
    follows: bool,
}

/// The tunnels of an engine and their queues (see the module doc).
#[derive(Debug)]
pub(super) struct Tunnels {
    rt: alloc::vec::Vec<TunnelRt>,
    /// Encapsulated packets waiting for `poll_tunnel_transmit`.
    tx: VecDeque<Queued>,
    tx_capacity: usize,
    /// Decapsulated inner packets waiting for `poll_deliver`.
    rx: VecDeque<Queued>,
    rx_capacity: usize,
    /// How whole outer packets are decapsulated: the first VXLAN tunnel's port.
    decap: DecapConfig,
    /// Where an outer packet to be fragmented is built (`tunnel/fragment.rs`): a vNIC-MTU
    /// packet with the largest overhead, reserved at build when there are tunnels.
    scratch: alloc::vec::Vec<u8>,
    /// That size, bytes.
    scratch_bytes: usize,
    /// The TX counters of tunnels a replacement removed, for one added back
    /// (`tunnel/replace.rs`).
    retired: replace::Retired,
}

impl Tunnels {
    /// The run-time state of `cfg.tunnels` (validated), with both queues reserved.
    pub(super) fn new(cfg: &EngineConfig) -> Self {
        let has = !cfg.tunnels.is_empty();
        let tx_capacity = if has { cfg.tunnel_queue_packets } else { 0 };
        let rx_capacity = if has { cfg.deliver_queue_packets } else { 0 };
        Self {
            rt: cfg
                .tunnels
                .iter()
                .enumerate()
                .map(|(i, spec)| TunnelRt::new(spec.clone(), first_ip_id(cfg.seed, i)))
                .collect(),
            tx: VecDeque::with_capacity(tx_capacity),
            tx_capacity,
            rx: VecDeque::with_capacity(rx_capacity),
            rx_capacity,
            decap: decap_config(&cfg.tunnels),
            scratch: alloc::vec![0; if has { fragment::scratch_bytes(cfg) } else { 0 }],
            scratch_bytes: fragment::scratch_bytes(cfg),
            retired: replace::Retired::default(),
        }
    }

    /// TX: encapsulate `packet` (an IP packet of flow `flow`, with the 802.1Q tag `vlan` in
    /// the VXLAN inner Ethernet header if any) for `tunnel` into the store and queue it —
    /// as fragments for a GRE tunnel over IPv4 with DF clear when it is larger than the
    /// tunnel's MTU (`tunnel/fragment.rs`). The caller counts the drop.
    fn encap(
        &mut self,
        tunnel: u8,
        flow: FlowId,
        packet: &[u8],
        vlan: Option<VlanTag>,
        store: &mut PacketStore,
    ) -> Result<(), DropReason> {
        let rt = self
            .rt
            .get_mut(usize::from(tunnel))
            .ok_or(DropReason::TunnelUnknown)?;
        if vlan.is_some() && !matches!(rt.spec.encap, Encap::Vxlan(_)) {
            // The rules give a tag only to VXLAN flows (engine/rules.rs `check_vlan`).
            return Err(DropReason::RuleVlanNoTunnel);
        }
        // Never 0: braid-io sends through a raw socket, whose kernel replaces an IPv4 id of
        // 0 by one of its own for each packet, which would give each fragment of one
        // datagram another id.
        if rt.ip_id == 0 {
            rt.ip_id = 1;
        }
        let meta = EncapMeta {
            // A multiplicative hash of the flow id, so that consecutive ids spread over the
            // whole source port range (which takes the hash's high bits).
            flow_hash: flow.0.wrapping_mul(0x9e37_79b9),
            ip_id: rt.ip_id,
            gre_seq: rt.gre_seq,
            vlan,
        };
        let overhead = rt.spec.encap.overhead_for(&meta);
        let total = overhead + packet.len();
        if total > rt.spec.mtu_bytes as usize {
            // VXLAN must not fragment (RFC 7348 §4.3), nor a tunnel with DF set; GRE over
            // IPv4 with DF clear does (an IPv4 delivery header, RFC 2784, RFC 791).
            if !fragment::may_fragment(&rt.spec) {
                return Err(DropReason::TunnelTooBig);
            }
            return self.encap_fragmented(tunnel, packet, meta, store);
        }
        if self.tx.len() >= self.tx_capacity {
            return Err(DropReason::TunnelQueueFull);
        }
        let buf = store.alloc(total).ok_or(DropReason::StoreFull)?;
        let bytes = store.get_mut(&buf);
        bytes[overhead..].copy_from_slice(packet);
        match rt.spec.encap.encap_in_place(bytes, overhead..total, meta) {
            Ok(_) => {
                rt.sent_one(vlan.is_some());
                self.tx.push_back(Queued {
                    tunnel,
                    buf,
                    seq: 0,
                    vlan: None,
                    more_fragments: 0,
                    follows: false,
                });
                Ok(())
            }
            Err(e) => {
                store.free(buf);
                Err(encap_drop(e))
            }
        }
    }

    /// RX: the decapsulation result of `bytes` (a whole packet or a socket's payload).
    /// Returns the tunnel the packet was queued for.
    fn accept(
        &mut self,
        bytes: &[u8],
        decapped: Result<Decapped, TunnelError>,
        store: &mut PacketStore,
    ) -> Result<u8, DropReason> {
        let d = decapped.map_err(|_| DropReason::TunnelMalformed)?;
        let index = self
            .rt
            .iter()
            .position(|t| t.spec.accepts(&d))
            .ok_or(DropReason::TunnelUnknown)?;
        let rt = &mut self.rt[index];
        let not_ip = |e| match e {
            TunnelError::Invalid {
                layer: Layer::Inner,
                error: braid_wire::ParseError::Unsupported,
            } => DropReason::TunnelInnerNotIp,
            _ => DropReason::TunnelMalformed,
        };
        // VXLAN: one 802.1Q tag in the inner frame is taken off here (the IP packet is what
        // is stored) and its VLAN id goes with the packet to the RX rules, which must pop
        // it (engine/rules.rs). Other tunnels: no tag.
        let (l3, vlan) = if matches!(rt.spec.encap, Encap::Vxlan(_)) {
            let ip = d.inner_ip(bytes).map_err(not_ip)?;
            (ip.range, ip.vlan.map(|t| t.vid).filter(|vid| *vid != 0))
        } else {
            (d.inner_l3(bytes).map_err(not_ip)?.1, None)
        };
        if self.rx.len() >= self.rx_capacity {
            return Err(DropReason::DeliverQueueFull);
        }
        let inner = &bytes[l3];
        // The sequence check last, once the packet has its buffer: a packet dropped for
        // another reason (the store full included) must not move it.
        let buf = store.alloc(inner.len()).ok_or(DropReason::StoreFull)?;
        if rt.spec.rx_check_seq && matches!(rt.spec.encap, Encap::Gre(_)) {
            // A packet of this tunnel without the sequence number it must carry is malformed
            // for it (RFC 2890 §2.2).
            let verdict = match d.tunnel {
                Tunnel::Gre { seq: Some(seq), .. } => rt.seq_check.check(seq),
                _ => {
                    store.free(buf);
                    return Err(DropReason::TunnelMalformed);
                }
            };
            match verdict {
                SeqVerdict::InOrder => {}
                SeqVerdict::Resync => rt.stats.rx_seq_resync_count += 1,
                SeqVerdict::OutOfOrder => {
                    store.free(buf);
                    return Err(DropReason::TunnelSeqOutOfOrder);
                }
            }
        }
        store.get_mut(&buf).copy_from_slice(inner);
        rt.stats.rx_packets_count += 1;
        rt.stats.rx_bytes_count += inner.len() as u64;
        let tunnel = u8::try_from(index).expect("invariant: at most MAX_TUNNELS tunnels");
        self.rx.push_back(Queued {
            tunnel,
            buf,
            seq: rt.stats.rx_packets_count,
            vlan,
            more_fragments: 0,
            follows: false,
        });
        Ok(tunnel)
    }
}

impl Engine {
    /// TX hook of [`Engine::handle_tx`] for a flow whose TX entry names `tunnel`; `vlan`:
    /// the tag its TX rule pushes into the VXLAN inner Ethernet header.
    pub(super) fn tunnel_tx(
        &mut self,
        tunnel: u8,
        flow: FlowId,
        packet: &[u8],
        vlan: Option<VlanTag>,
    ) -> TxVerdict {
        match self
            .tunnels
            .encap(tunnel, flow, packet, vlan, &mut self.store)
        {
            Ok(()) => TxVerdict::Queued,
            Err(reason) => TxVerdict::Drop(reason),
        }
    }

    /// Take one outer packet that arrived on a tunnel socket, starting at its outer IPv4/IPv6
    /// header (an IPv4 raw `IPPROTO_GRE` socket; a capture). Returns the tunnel it was queued
    /// for ([`Self::poll_deliver`] hands its inner packet to the vNIC).
    ///
    /// # Errors
    /// The drop reason, counted: see the [module documentation](self).
    pub fn handle_tunnel_rx(&mut self, _now: Instant, packet: &[u8]) -> Result<u8, DropReason> {
        let decapped = decap(packet, &self.tunnels.decap);
        let result = self.tunnels.accept(packet, decapped, &mut self.store);
        count(&mut self.stats.drops, result)
    }

    /// [`Self::handle_tunnel_rx`] for the payload a socket hands over without the outer
    /// headers, with the addresses it reports: a UDP socket on the VXLAN port (the VXLAN
    /// header onward; the kernel has checked the UDP checksum), an IPv6 raw `IPPROTO_GRE`
    /// socket (the GRE header onward).
    ///
    /// # Errors
    /// As [`Self::handle_tunnel_rx`].
    pub fn handle_tunnel_payload_rx(
        &mut self,
        _now: Instant,
        meta: &PayloadMeta,
        payload: &[u8],
    ) -> Result<u8, DropReason> {
        let decapped = decap_payload(payload, meta, &self.tunnels.decap);
        let result = self.tunnels.accept(payload, decapped, &mut self.store);
        count(&mut self.stats.drops, result)
    }

    /// The next encapsulated packet for a tunnel's NIC, written into `buf` (which should hold
    /// the largest tunnel MTU): a whole outer IP packet to send as it is. A packet larger
    /// than `buf` is dropped and counted as [`DropReason::TooBig`] (a fragment with the rest
    /// of its datagram, counted once).
    ///
    /// The fragments of one outer datagram come out one call after the other, the NIC's
    /// pacer consulted at the first only ([`TunnelTransmit::more_fragments`]), so that a
    /// caller that drains until `None` has them all in one go.
    #[must_use]
    pub fn poll_tunnel_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<TunnelTransmit> {
        loop {
            // The NIC's pacer first (see the module doc): a busy NIC holds the queue. Not
            // between the fragments of a datagram: they are charged to it all the same.
            if !self.tunnels.tx.front()?.follows
                && self.tunnel_pacing_timeout().is_some_and(|t| t > now)
            {
                return None;
            }
            let q = self.tunnels.tx.pop_front()?;
            let bytes = self.store.get(&q.buf);
            let len = bytes.len();
            let fits = match buf.get_mut(..len) {
                Some(out) => {
                    out.copy_from_slice(bytes);
                    true
                }
                None => false,
            };
            self.store.free(q.buf);
            if !fits {
                // The datagram's other fragments are useless without this one.
                while self.tunnels.tx.front().is_some_and(|f| f.follows) {
                    if let Some(f) = self.tunnels.tx.pop_front() {
                        self.store.free(f.buf);
                    }
                }
                self.stats.drops.count(DropReason::TooBig);
                continue;
            }
            let rt = &mut self.tunnels.rt[usize::from(q.tunnel)];
            rt.stats.tx_packets_count += 1;
            rt.stats.tx_bytes_count += len as u64;
            let nic = rt.spec.nic;
            self.pace_tunnel_send(now, nic, len);
            return Some(TunnelTransmit {
                tunnel: q.tunnel,
                nic,
                len,
                more_fragments: q.more_fragments,
            });
        }
    }

    /// When the oldest queued tunnel packet's NIC may send again (for
    /// [`Self::poll_timeout`]); `None` with an empty queue.
    pub(super) fn tunnel_pacing_timeout(&self) -> Option<Instant> {
        let tunnel = usize::from(self.tunnels.tx.front()?.tunnel);
        self.nic_next_send(self.tunnels.rt.get(tunnel)?.spec.nic)
    }

    /// The next decapsulated inner packet for the vNIC, for [`Self::poll_deliver`] (after
    /// braid's own): `flow` 0 and `seq` the tunnel's count of accepted packets (a tunnel
    /// packet belongs to no braid flow), `tunnel` set.
    pub(super) fn poll_tunnel_deliver(&mut self, buf: &mut [u8]) -> Option<Delivered> {
        while let Some(q) = self.tunnels.rx.pop_front() {
            let bytes = self.store.get(&q.buf);
            let len = bytes.len();
            let fits = match buf.get_mut(..len) {
                Some(out) => {
                    out.copy_from_slice(bytes);
                    true
                }
                None => false,
            };
            self.store.free(q.buf);
            if !fits {
                self.stats.drops.count(DropReason::TooBig);
                continue;
            }
            // The RX rule set, on the inner packet going to the vNIC (engine/rules.rs).
            if let Err(reason) = self.rules_rx_tunnel(q.tunnel, q.vlan, &mut buf[..len]) {
                self.stats.drops.count(reason);
                continue;
            }
            if q.vlan.is_some()
                && let Some(rt) = self.tunnels.rt.get_mut(usize::from(q.tunnel))
            {
                rt.stats.rx_vlan_popped_count += 1;
            }
            self.stats.rx_delivered_count += 1;
            self.stats.rx_delivered_bytes += len as u64;
            return Some(Delivered {
                len,
                flow: FlowId(0),
                seq: q.seq,
                gap_before: 0,
                tunnel: Some(q.tunnel),
            });
        }
        None
    }

    /// One tunnel's counters (`tunnel` indexes [`EngineConfig::tunnels`]).
    #[must_use]
    pub fn tunnel_stats(&self, tunnel: u8) -> Option<&TunnelStats> {
        self.tunnels.rt.get(usize::from(tunnel)).map(|t| &t.stats)
    }

    /// Outer packets waiting for [`Self::poll_tunnel_transmit`].
    #[must_use]
    pub fn tunnel_tx_queued(&self) -> usize {
        self.tunnels.tx.len()
    }
}

/// How whole outer packets are decapsulated for `tunnels`: the first VXLAN tunnel's port.
fn decap_config(tunnels: &[TunnelSpec]) -> DecapConfig {
    let mut decap = DecapConfig::default();
    if let Some(port) = tunnels.iter().find_map(|t| match &t.encap {
        Encap::Vxlan(v) => Some(v.dst_port),
        Encap::Gre(_) => None,
    }) {
        decap.vxlan_port = port;
    }
    decap
}

/// Where tunnel `index`'s outer IPv4 ids start: somewhere the seed says, so two engines (or
/// a restarted one) do not start with the same ids towards one peer, and 4096 apart between
/// tunnels.
fn first_ip_id(seed: u64, index: usize) -> u16 {
    ((seed >> 16) as u16).wrapping_add((index as u16).wrapping_mul(0x1000))
}

/// The drop reason of an encapsulation that failed.
fn encap_drop(e: TunnelError) -> DropReason {
    match e {
        // The length fields: a packet above 64 KiB with its headers.
        TunnelError::TooLong | TunnelError::NoRoom => DropReason::TunnelTooBig,
        // A tag on a tunnel without a synthesized Ethernet header (checked before).
        TunnelError::VlanNotCarried => DropReason::RuleVlanNoTunnel,
        // Not IPv4/IPv6 (handle_tx has classified it, so not expected).
        _ => DropReason::MalformedPacket,
    }
}

/// Count a refusal.
fn count(drops: &mut DropCounters, result: Result<u8, DropReason>) -> Result<u8, DropReason> {
    if let Err(reason) = result {
        drops.count(reason);
    }
    result
}

/// Check [`EngineConfig::tunnels`] and the flow classes' tunnel names; the error names the
/// field (`tunnels[1].vni`, `classes[0].tunnel`).
pub(super) fn validate(cfg: &EngineConfig) -> Result<(), ConfigError> {
    let invalid = |field: String, why: &'static str| ConfigError::Invalid { field, why };
    check_tunnels(&cfg.tunnels, &cfg.nics).map_err(|r| invalid(r.path(), r.why))?;
    if cfg.tunnel_queue_packets == 0 {
        return Err(invalid("tunnel_queue_packets".into(), "must be > 0"));
    }
    for (i, c) in cfg.classes.iter().enumerate() {
        if c.tunnel
            .is_some_and(|t| usize::from(t) >= cfg.tunnels.len())
        {
            return Err(invalid(
                format!("classes[{i}].tunnel"),
                "names no configured tunnel",
            ));
        }
    }
    Ok(())
}

/// Why a tunnel table is refused: by [`Engine::new`] (as a [`ConfigError`]) or by
/// [`Command::ReplacePolicies`](super::Command::ReplacePolicies) (as a
/// [`CommandError::InvalidTunnels`](super::CommandError::InvalidTunnels), hence `Copy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunnelRefusal {
    /// The tunnel, by its position in the table; `None`: the table as a whole.
    pub tunnel: Option<u8>,
    /// The [`TunnelSpec`] field at fault (`vni`, `mtu_bytes`, ...); empty when the tunnel as
    /// a whole is.
    pub field: &'static str,
    /// What is allowed.
    pub why: &'static str,
}

impl TunnelRefusal {
    /// The field as a path from [`EngineConfig`]: `tunnels`, `tunnels[1]`, `tunnels[1].vni`.
    #[must_use]
    pub fn path(&self) -> String {
        match (self.tunnel, self.field) {
            (None, _) => "tunnels".into(),
            (Some(i), "") => format!("tunnels[{i}]"),
            (Some(i), f) => format!("tunnels[{i}].{f}"),
        }
    }
}

impl core::fmt::Display for TunnelRefusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}: {}", self.path(), self.why)
    }
}

/// Check a tunnel table against the engine's NICs (each tunnel on its own; names unique; no
/// two tunnels accept the same packets): the first problem.
pub(super) fn check_tunnels(tunnels: &[TunnelSpec], nics: &[NicSpec]) -> Result<(), TunnelRefusal> {
    if tunnels.len() > MAX_TUNNELS {
        return Err(TunnelRefusal {
            tunnel: None,
            field: "",
            why: "at most 32 tunnels",
        });
    }
    for (i, t) in tunnels.iter().enumerate() {
        let refuse = |field: &'static str, why: &'static str| TunnelRefusal {
            tunnel: u8::try_from(i).ok(),
            field,
            why,
        };
        if t.name.is_empty() || tunnels[..i].iter().any(|o| o.name == t.name) {
            return Err(refuse("name", "is empty or used twice"));
        }
        if !nics.iter().any(|n| n.id == t.nic) {
            return Err(refuse("nic", "names no configured nic"));
        }
        if let Err(TunnelError::BadConfig { field }) = t.encap.validate() {
            let why = match field {
                "vni" => "must fit in 24 bits (0..=16777215)",
                "inner" => "VXLAN carries Ethernet frames: use IpInEthernet (inner MACs)",
                "dst_port" => "must be > 0",
                "src_ports" => "range start is above its end",
                "ttl" => "must be 1..=255",
                "flow_label" => "must fit in 20 bits",
                _ => "is out of range",
            };
            return Err(refuse(field, why));
        }
        let inner = match &t.encap {
            Encap::Vxlan(v) => v.inner,
            Encap::Gre(g) => g.inner,
        };
        if inner == InnerFormat::Ethernet {
            return Err(refuse(
                "inner",
                "the engine's packets are IP packets: use Ip (GRE) or IpInEthernet",
            ));
        }
        let overhead = u32::try_from(t.encap.overhead()).unwrap_or(u32::MAX);
        if t.mtu_bytes < overhead + MIN_INNER_BYTES || t.mtu_bytes > 65_535 {
            return Err(refuse(
                "mtu_bytes",
                "must hold the tunnel's overhead plus a 68-byte packet, and be at most 65535",
            ));
        }
        if tunnels[..i].iter().any(|o| o.same_rx(t)) {
            return Err(refuse(
                "",
                "accepts the same packets as an earlier tunnel (same addresses and VNI or key)",
            ));
        }
    }
    Ok(())
}

mod fragment;
pub(super) mod replace;

#[cfg(test)]
pub(crate) mod test_util;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod vlan_tests;
