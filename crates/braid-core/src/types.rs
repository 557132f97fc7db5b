//! Small shared types: NIC ids and sets, flow ids, and the drop reasons every stage counts.
//!
//! Drops on the hot path are a `Copy`, fieldless [`DropReason`] counted in
//! `DropCounters[reason]`: no strings, no allocation, no logging per packet.

use core::fmt;

/// The most NICs one engine drives. A [`NicSet`] is a `u32` bit mask.
pub const MAX_NICS: usize = 32;

/// A NIC (one physical link to the peer), numbered `0..MAX_NICS`. Carried in the braid header
/// as the link id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct NicId(pub u8);

impl NicId {
    /// The id as an index, `0..MAX_NICS` for a valid id.
    #[must_use]
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// `true` if the id is below [`MAX_NICS`].
    #[must_use]
    pub const fn is_valid(self) -> bool {
        (self.0 as usize) < MAX_NICS
    }
}

impl fmt::Display for NicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "nic{}", self.0)
    }
}

/// A set of NICs as a bit mask (bit `i` = `NicId(i)`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NicSet(pub u32);

impl NicSet {
    /// The empty set.
    pub const EMPTY: Self = Self(0);
    /// Every NIC.
    pub const ALL: Self = Self(u32::MAX);

    /// The set holding only `nic` (empty if `nic` is invalid).
    #[must_use]
    pub const fn single(nic: NicId) -> Self {
        if nic.is_valid() {
            Self(1 << nic.0)
        } else {
            Self::EMPTY
        }
    }

    /// `true` if `nic` is in the set.
    #[must_use]
    pub const fn contains(self, nic: NicId) -> bool {
        nic.is_valid() && self.0 & (1 << nic.0) != 0
    }

    /// Add `nic` (ignored if invalid).
    pub fn insert(&mut self, nic: NicId) {
        self.0 |= Self::single(nic).0;
    }

    /// Remove `nic`.
    pub fn remove(&mut self, nic: NicId) {
        self.0 &= !Self::single(nic).0;
    }

    /// Number of NICs in the set.
    #[must_use]
    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// `true` if the set is empty.
    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Intersection.
    #[must_use]
    pub const fn and(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// The NICs in ascending order.
    pub fn iter(self) -> impl Iterator<Item = NicId> {
        let mut bits = self.0;
        core::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let i = bits.trailing_zeros();
            bits &= bits - 1;
            // invariant: i < 32 = MAX_NICS, so it fits in u8.
            Some(NicId(u8::try_from(i).unwrap_or(u8::MAX)))
        })
    }
}

impl FromIterator<NicId> for NicSet {
    fn from_iter<I: IntoIterator<Item = NicId>>(iter: I) -> Self {
        let mut s = Self::EMPTY;
        for n in iter {
            s.insert(n);
        }
        s
    }
}

impl fmt::Debug for NicSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(|n| n.0)).finish()
    }
}

/// A flow's id on the wire: assigned by the sending engine when the flow is first seen and
/// carried in every braid data packet. The receiver keys reassembly and reorder on it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct FlowId(pub u32);

impl fmt::Display for FlowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "flow{}", self.0)
    }
}

macro_rules! drop_reasons {
    ($($(#[$doc:meta])* $name:ident = $label:literal,)*) => {
        /// Why a packet, fragment or datagram was dropped. Counted in [`DropCounters`].
        ///
        /// Fieldless and `#[repr(u8)]` so the hot path counts it with one array increment.
        /// New reasons are appended; `label()` is the stable name used in reports and metrics.
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
        #[repr(u8)]
        #[non_exhaustive]
        pub enum DropReason {
            $($(#[$doc])* $name,)*
        }

        impl DropReason {
            /// Every reason, in discriminant order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$name,)*];
            /// How many reasons there are.
            pub const COUNT: usize = Self::ALL.len();

            /// The stable snake_case name of the reason.
            #[must_use]
            pub const fn label(self) -> &'static str {
                match self {
                    $(DropReason::$name => $label,)*
                }
            }
        }
    };
}

drop_reasons! {
    // --- wire / input ---
    /// The braid header failed to parse (truncated, bad length, bad version, bad field).
    MalformedHeader = "malformed_header",
    /// The inner IP packet could not be classified (truncated or not IPv4/IPv6).
    MalformedPacket = "malformed_packet",
    /// A packet arrived on a link id the engine does not know.
    UnknownLink = "unknown_link",
    /// A packet type the engine does not handle.
    UnsupportedType = "unsupported_type",
    /// The packet is larger than the configured vNIC MTU.
    TooBig = "too_big",
    // --- tx side ---
    /// No NIC is up to carry the packet.
    NoLinkUp = "no_link_up",
    /// The flow table is full and the eviction policy refused a new flow.
    FlowTableFull = "flow_table_full",
    /// The flow controller rejected the flow (all NICs full, policy reject).
    FlowRejected = "flow_rejected",
    /// A NIC transmit queue was full.
    TxQueueFull = "tx_queue_full",
    /// The packet store had no room for the packet.
    StoreFull = "store_full",
    // --- reassembly ---
    /// Reassembly memory cap reached: new datagram refused.
    ReassemblyMemoryCap = "reassembly_memory_cap",
    /// Reassembly context cap reached: new datagram refused.
    ReassemblyContextCap = "reassembly_context_cap",
    /// Too many fragments for one datagram: whole datagram dropped.
    ReassemblyTooManyFragments = "reassembly_too_many_fragments",
    /// Datagram not complete before its timeout (from the first fragment).
    ReassemblyTimeout = "reassembly_timeout",
    /// An exact duplicate fragment: only the duplicate is dropped.
    ReassemblyDuplicateFragment = "reassembly_duplicate_fragment",
    /// A partial overlap: the whole datagram is dropped (RFC 5722 style).
    ReassemblyOverlap = "reassembly_overlap",
    /// A zero-length fragment.
    ReassemblyZeroLength = "reassembly_zero_length",
    /// A fragment with data past the datagram's end.
    ReassemblyPastEnd = "reassembly_past_end",
    /// Fragments disagree on the datagram's total length.
    ReassemblyTotalMismatch = "reassembly_total_mismatch",
    /// The total length is above the configured maximum datagram size.
    ReassemblyTooLarge = "reassembly_too_large",
    /// A fragment of a datagram that was already completed or dropped.
    ReassemblyStale = "reassembly_stale",
    // --- reorder / dedup ---
    /// A duplicate of a sequence number already held or delivered (redundant mode).
    DuplicateDatagram = "duplicate_datagram",
    /// A datagram arrived after its sequence number was given up as a gap.
    LateDatagram = "late_datagram",
    /// A datagram far ahead of the reorder window.
    ReorderOutOfWindow = "reorder_out_of_window",
    /// The receive flow table is full.
    RxFlowTableFull = "rx_flow_table_full",
    /// The delivery queue to the vNIC is full.
    DeliverQueueFull = "deliver_queue_full",
    // --- probes ---
    /// A probe reply that matches no outstanding probe.
    StaleProbeReply = "stale_probe_reply",
    /// The flow waits in the flow controller's admission queue (policy queue).
    FlowQueued = "flow_queued",
    /// A datagram still held by a receive flow that expired or was evicted.
    RxFlowRetired = "rx_flow_retired",
    /// A probe arrived while the probe-reply queue was full; the peer counts it as lost.
    ProbeReplyQueueFull = "probe_reply_queue_full",
    // --- authentication / replay ---
    /// An authenticated packet whose replay counter was already seen (inside the window).
    ReplayedPacket = "replayed_packet",
    /// An authenticated packet whose replay counter is below the replay window.
    ReplayTooOld = "replay_too_old",
    /// An authenticated packet with replay counter `u64::MAX`, never accepted (rekey first).
    ReplayCounterExhausted = "replay_counter_exhausted",
    /// Authentication is on, and the packet carries no authentication.
    Unauthenticated = "unauthenticated",
    /// The packet's authentication tag is wrong (forged, corrupted or reflected).
    BadAuthTag = "bad_auth_tag",
    /// The inter-NIC hand-off lane to the flow's owner worker was full (braid-io channel).
    HandoffQueueFull = "handoff_queue_full",
    /// The packet's ENCRYPTED flag does not match this engine's protection: a plain
    /// (MAC-only) packet at a receiver that decrypts, or an encrypted one at a receiver that
    /// does not.
    EncryptionMismatch = "encryption_mismatch",
    /// TX: the packet protection refused to seal (its nonce would repeat); the packet was not
    /// sent. Never expected: the engine's counter only goes up.
    SealRefused = "seal_refused",
    /// RX: the packet's lane (the sender's worker) is not this engine's: the peers disagree
    /// on `vnic.queues` or on how NICs are read (`daemon.receive`).
    WrongLane = "wrong_lane",
    /// TX: an IP packet larger than the NIC's MTU that may not be fragmented: IPv4 with DF
    /// set (RFC 791), or an IPv6 packet that is already a fragment (`crate::ipfrag`). The
    /// standard answer is ICMP "fragmentation needed" / ICMPv6 "packet too big" (RFC 1191,
    /// RFC 4443).
    FragmentationNeeded = "fragmentation_needed",
    /// TX: the vNIC meter of the packet's QoS class coloured it Red (RFC 2697/2698) and the
    /// class drops Red (`drop_red`: a policer).
    QosMeterRed = "qos_meter_red",
    /// TX: a piece longer than the QoS scheduler's `max_packet_bytes` (not expected: the
    /// engine raises it to the largest packet it queues).
    QosOversize = "qos_oversize",
    /// TX: a QoS class the NIC's scheduler does not have (not expected: a flow whose class
    /// is gone goes to the default class).
    QosUnknownClass = "qos_unknown_class",
    /// TX: a queued piece given back when a QoS configuration replacement removed its class
    /// or shrank its queue below what it held.
    QosClassRemoved = "qos_class_removed",
    /// RX: a packet from a tunnel socket that is not a well-formed VXLAN (RFC 7348) or GRE
    /// (RFC 2784/2890) packet: a bad outer header or checksum, bad VXLAN flags, a GRE
    /// version or protocol type braid does not carry, a truncated inner packet
    /// (`engine::tunnel`).
    TunnelMalformed = "tunnel_malformed",
    /// RX: a well-formed VXLAN/GRE packet that matches no configured tunnel (outer
    /// addresses, VNI, GRE key; a GRE tunnel that checks sequence numbers and a packet
    /// without one).
    TunnelUnknown = "tunnel_unknown",
    /// RX: a GRE packet whose sequence number is not after the last one accepted (RFC 2890
    /// §2.2: out of order or a duplicate).
    TunnelSeqOutOfOrder = "tunnel_seq_out_of_order",
    /// RX: the tunnel carried an Ethernet frame that holds no IP packet (ARP; two VLAN tags;
    /// a VLAN tag from a GRE tunnel — one 802.1Q tag from a VXLAN tunnel is popped by the RX
    /// rules, see [`Self::TunnelVlanNotPopped`]), which a TUN vNIC cannot take.
    TunnelInnerNotIp = "tunnel_inner_not_ip",
    /// TX: the encapsulated packet is larger than the tunnel NIC's MTU (VXLAN endpoints must
    /// not fragment, RFC 7348 §4.3; reduce the vNIC MTU by the tunnel's overhead).
    TunnelTooBig = "tunnel_too_big",
    /// TX: the queue of encapsulated packets waiting for `poll_tunnel_transmit` was full.
    TunnelQueueFull = "tunnel_queue_full",
    /// TX/RX: the rule that applies to the packet's flow says `drop` (`engine/rules.rs`).
    RuleDrop = "rule_drop",
    /// TX/RX: the rule's header rewrite cannot be applied to this packet (a port rewrite on
    /// a fragment, an address of the other IP version, a malformed header: braid-wire's
    /// `RewriteError`); the packet is dropped unchanged rather than sent half-rewritten.
    RuleRewriteFailed = "rule_rewrite_failed",
    /// TX/RX: a packet queued for a tunnel (encapsulated, or decapsulated for the vNIC) when
    /// a policy replacement removed the tunnel or changed its endpoints or encapsulation
    /// (`Command::ReplacePolicies`, `engine/tunnel/replace.rs`).
    TunnelRemoved = "tunnel_removed",
    /// RX: a VXLAN tunnel's inner frame carried an 802.1Q tag that no RX rule pops
    /// (`pop_vlan`): the TUN vNIC cannot take a tag (`engine/rules.rs`).
    TunnelVlanNotPopped = "tunnel_vlan_not_popped",
    /// TX: the rule pushes a VLAN tag but the flow is not VXLAN-encapsulated, so there is no
    /// inner Ethernet header to carry it. Not expected: the rule tables are checked against
    /// the flow classes and tunnels they are built for.
    RuleVlanNoTunnel = "rule_vlan_no_tunnel",
    /// RX: a datagram being reassembled was dropped whole because a policy replacement
    /// (`Command::ReplacePolicies`) lowered the reassembler's memory cap below what it held
    /// (the oldest go first), its largest datagram below the datagram's length, or its
    /// fragment cap below the fragments it had.
    ReassemblyEvicted = "reassembly_evicted",
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// How a class's flows use the NICs (a flow class's policy, or a rule's striping action).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassPolicy {
    /// One NIC per flow, chosen by the flow controller by capacity and load.
    Pin,
    /// Per packet: whole on the NIC that lands it first, or split across several.
    Stripe,
    /// A copy on every NIC of the set; the receiver keeps the first (A/B feed arbitration).
    Duplicate,
}

/// A counter per [`DropReason`].
#[derive(Clone, PartialEq, Eq)]
pub struct DropCounters([u64; DropReason::COUNT]);

impl Default for DropCounters {
    fn default() -> Self {
        Self([0; DropReason::COUNT])
    }
}

impl DropCounters {
    /// Count one drop.
    #[inline]
    pub fn count(&mut self, reason: DropReason) {
        self.add(reason, 1);
    }

    /// Count `n` drops.
    #[inline]
    pub fn add(&mut self, reason: DropReason, n: u64) {
        let slot = &mut self.0[reason as usize];
        *slot = slot.wrapping_add(n);
    }

    /// The count for `reason`.
    #[must_use]
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason as usize]
    }

    /// Sum over all reasons.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// `(reason, count)` for every reason with a non-zero count.
    pub fn nonzero(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|&r| (r, self.get(r)))
            .filter(|&(_, n)| n != 0)
    }

    /// Add every counter of `other` into `self`.
    pub fn merge(&mut self, other: &Self) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a = a.wrapping_add(*b);
        }
    }
}

impl fmt::Debug for DropCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.nonzero().map(|(r, n)| (r.label(), n)))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nicset_ops() {
        let mut s = NicSet::EMPTY;
        s.insert(NicId(0));
        s.insert(NicId(5));
        s.insert(NicId(31));
        s.insert(NicId(40)); // invalid: ignored
        assert_eq!(s.len(), 3);
        assert!(s.contains(NicId(5)));
        assert!(!s.contains(NicId(40)));
        assert_eq!(s.iter().map(|n| n.0).collect::<Vec<_>>(), vec![0, 5, 31]);
        s.remove(NicId(5));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn drop_counters() {
        let mut c = DropCounters::default();
        c.count(DropReason::ReassemblyOverlap);
        c.add(DropReason::TooBig, 3);
        assert_eq!(c.total(), 4);
        assert_eq!(c.get(DropReason::TooBig), 3);
        assert_eq!(
            DropReason::ALL[DropReason::TooBig as usize],
            DropReason::TooBig
        );
        let labels: std::collections::HashSet<_> =
            DropReason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), DropReason::COUNT, "labels are unique");
    }
}
