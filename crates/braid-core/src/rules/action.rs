//! What a rule does: the action vocabulary ([`Action`]) and its compiled, fixed-size form
//! ([`CompiledActions`]) that the fast path applies per packet.
//!
//! Owns: the actions as data and their compilation. Does not own the byte-level work: header
//! rewrites with RFC 1624 incremental checksums, VLAN push/pop (braid-wire `rewrite`), VXLAN
//! (RFC 7348) and GRE (RFC 2784/2890) encapsulation (braid-wire `tunnel`); the priority class
//! is the QoS stage's (braid-core `qos`) and the striping policy the engine's.
//!
//! # Order of application
//!
//! A rule's action list is a set, not a program: it compiles into one [`CompiledActions`]
//! whose fields are applied in a fixed pipeline order, the only order in which every
//! combination is well defined:
//!
//! 1. `drop` — nothing else happens;
//! 2. decapsulate (VXLAN or GRE): the rest applies to the inner packet;
//! 3. pop the outer VLAN tag;
//! 4. rewrite the IP/transport header: addresses, ports, DSCP, ECN, TTL/hop limit (disjoint
//!    fields, so their order does not matter; checksums are updated incrementally);
//! 5. push a VLAN tag;
//! 6. encapsulate (VXLAN or GRE, the outer headers from the tunnel table);
//!
//! and, at any point, the metadata: the QoS priority class and the striping policy. The
//! validator rejects a list written in another order (e.g. a DSCP rewrite after an
//! encapsulation, which a reader could take to mean the outer header) rather than silently
//! reorder it.

use core::fmt;
use core::net::IpAddr;

use crate::types::ClassPolicy;
use crate::types::NicSet;

/// A tunnel, by its id in the tunnel table (the outer addresses, VNI or GRE key, ...).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct TunnelId(pub u16);

/// The encapsulation a tunnel table entry describes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum TunnelKind {
    /// VXLAN over UDP (RFC 7348).
    Vxlan,
    /// GRE (RFC 2784), optionally with key and sequence number (RFC 2890).
    Gre,
}

/// A QoS priority class, by index (0 = the highest priority).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct QosClass(pub u8);

/// An 802.1Q tag to push.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct VlanTag {
    /// VLAN id, `1..=4094`.
    pub vid: u16,
    /// Priority code point (IEEE 802.1p), `0..=7`.
    pub pcp: u8,
}

/// How a flow uses the NICs: the engine's [`ClassPolicy`] (pin to one NIC, stripe, duplicate)
/// over a set of NICs. `Pin` with one NIC pins to that NIC; with several, the flow controller
/// picks one of them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Striping {
    /// Pin, stripe or duplicate.
    pub policy: ClassPolicy,
    /// The NICs the flow may use ([`NicSet::ALL`] = every NIC).
    pub nics: NicSet,
}

/// One action of a rule.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Action {
    /// Set the DSCP (RFC 2474), `0..=63`.
    SetDscp(u8),
    /// Set the ECN field (RFC 3168), `0..=3`.
    SetEcn(u8),
    /// Set the IPv4 TTL or IPv6 hop limit, `1..=255`.
    SetTtl(u8),
    /// Rewrite the source address (same IP version as the match).
    SetSrcAddr(IpAddr),
    /// Rewrite the destination address (same IP version as the match).
    SetDstAddr(IpAddr),
    /// Rewrite the TCP/UDP source port.
    SetSrcPort(u16),
    /// Rewrite the TCP/UDP destination port.
    SetDstPort(u16),
    /// Push an 802.1Q tag: on a TAP vNIC's frame, or, on a TUN vNIC, into the inner
    /// Ethernet header of the VXLAN tunnel that encapsulates the flow (see
    /// [`super::TunVlan`]).
    PushVlan(VlanTag),
    /// Pop the outer 802.1Q tag: of a TAP vNIC's frame, or, on a TUN vNIC, of a VXLAN
    /// tunnel's tagged inner frame before its IP packet is delivered (see
    /// [`super::TunVlan`]).
    PopVlan,
    /// Encapsulate in VXLAN with the tunnel table entry.
    VxlanEncap(TunnelId),
    /// Remove a VXLAN encapsulation.
    VxlanDecap,
    /// Encapsulate in GRE with the tunnel table entry.
    GreEncap(TunnelId),
    /// Remove a GRE encapsulation.
    GreDecap,
    /// Put the flow in a QoS priority class.
    SetPriorityClass(QosClass),
    /// Choose the flow's striping policy.
    Stripe(Striping),
    /// Drop the flow's packets.
    Drop,
}

/// Pipeline stage of an action (see the module doc); metadata has none.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(super) enum Stage {
    Decap,
    PopVlan,
    Rewrite,
    PushVlan,
    Encap,
}

impl Action {
    /// The pipeline stage, `None` for metadata and `Drop`.
    pub(super) const fn stage(&self) -> Option<Stage> {
        match self {
            Self::VxlanDecap | Self::GreDecap => Some(Stage::Decap),
            Self::PopVlan => Some(Stage::PopVlan),
            Self::SetDscp(_)
            | Self::SetEcn(_)
            | Self::SetTtl(_)
            | Self::SetSrcAddr(_)
            | Self::SetDstAddr(_)
            | Self::SetSrcPort(_)
            | Self::SetDstPort(_) => Some(Stage::Rewrite),
            Self::PushVlan(_) => Some(Stage::PushVlan),
            Self::VxlanEncap(_) | Self::GreEncap(_) => Some(Stage::Encap),
            Self::SetPriorityClass(_) | Self::Stripe(_) | Self::Drop => None,
        }
    }

    /// The field of [`CompiledActions`] the action sets: two actions of one slot in a list
    /// are a repetition (the validator rejects it; compilation keeps the last).
    pub(super) const fn slot(&self) -> u8 {
        match self {
            Self::SetDscp(_) => 0,
            Self::SetEcn(_) => 1,
            Self::SetTtl(_) => 2,
            Self::SetSrcAddr(_) => 3,
            Self::SetDstAddr(_) => 4,
            Self::SetSrcPort(_) => 5,
            Self::SetDstPort(_) => 6,
            Self::PushVlan(_) => 7,
            Self::PopVlan => 8,
            Self::VxlanEncap(_) | Self::GreEncap(_) => 9,
            Self::VxlanDecap | Self::GreDecap => 10,
            Self::SetPriorityClass(_) => 11,
            Self::Stripe(_) => 12,
            Self::Drop => 13,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SetDscp(v) => write!(f, "set dscp {v}"),
            Self::SetEcn(v) => write!(f, "set ecn {v}"),
            Self::SetTtl(v) => write!(f, "set ttl {v}"),
            Self::SetSrcAddr(a) => write!(f, "set src {a}"),
            Self::SetDstAddr(a) => write!(f, "set dst {a}"),
            Self::SetSrcPort(p) => write!(f, "set src port {p}"),
            Self::SetDstPort(p) => write!(f, "set dst port {p}"),
            Self::PushVlan(t) => write!(f, "push vlan {} pcp {}", t.vid, t.pcp),
            Self::PopVlan => f.write_str("pop vlan"),
            Self::VxlanEncap(t) => write!(f, "vxlan encap tunnel {}", t.0),
            Self::VxlanDecap => f.write_str("vxlan decap"),
            Self::GreEncap(t) => write!(f, "gre encap tunnel {}", t.0),
            Self::GreDecap => f.write_str("gre decap"),
            Self::SetPriorityClass(c) => write!(f, "priority class {}", c.0),
            Self::Stripe(s) => write!(f, "{:?} over {:?}", s.policy, s.nics),
            Self::Drop => f.write_str("drop"),
        }
    }
}

/// An encapsulation to add.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Encap {
    /// VXLAN with this tunnel.
    Vxlan(TunnelId),
    /// GRE with this tunnel.
    Gre(TunnelId),
}

/// An encapsulation to remove.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Decap {
    /// VXLAN.
    Vxlan,
    /// GRE.
    Gre,
}

/// A rule's actions compiled for the fast path: `Copy`, fixed size, no heap. Apply the
/// fields in the order of the module doc; `None`/`false` means "leave as is".
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct CompiledActions {
    /// Drop the packet (nothing else applies).
    pub drop: bool,
    /// Remove an encapsulation first.
    pub decap: Option<Decap>,
    /// Pop the outer VLAN tag.
    pub pop_vlan: bool,
    /// New source address.
    pub src_addr: Option<IpAddr>,
    /// New destination address.
    pub dst_addr: Option<IpAddr>,
    /// New TCP/UDP source port.
    pub src_port: Option<u16>,
    /// New TCP/UDP destination port.
    pub dst_port: Option<u16>,
    /// New DSCP.
    pub dscp: Option<u8>,
    /// New ECN.
    pub ecn: Option<u8>,
    /// New TTL / hop limit.
    pub ttl: Option<u8>,
    /// VLAN tag to push.
    pub push_vlan: Option<VlanTag>,
    /// Encapsulation to add last.
    pub encap: Option<Encap>,
    /// QoS priority class.
    pub priority_class: Option<QosClass>,
    /// Striping policy (overrides the engine's flow class policy).
    pub striping: Option<Striping>,
}

impl CompiledActions {
    /// No action: the packet passes unchanged under the engine's own policy.
    pub const NONE: Self = Self {
        drop: false,
        decap: None,
        pop_vlan: false,
        src_addr: None,
        dst_addr: None,
        src_port: None,
        dst_port: None,
        dscp: None,
        ecn: None,
        ttl: None,
        push_vlan: None,
        encap: None,
        priority_class: None,
        striping: None,
    };

    /// Compile an action list (build time). A repeated action keeps its last value (the
    /// validator reports the repetition before a set is built).
    #[must_use]
    pub fn compile(actions: &[Action]) -> Self {
        let mut c = Self::NONE;
        for a in actions {
            match *a {
                Action::SetDscp(v) => c.dscp = Some(v),
                Action::SetEcn(v) => c.ecn = Some(v),
                Action::SetTtl(v) => c.ttl = Some(v),
                Action::SetSrcAddr(v) => c.src_addr = Some(v),
                Action::SetDstAddr(v) => c.dst_addr = Some(v),
                Action::SetSrcPort(v) => c.src_port = Some(v),
                Action::SetDstPort(v) => c.dst_port = Some(v),
                Action::PushVlan(t) => c.push_vlan = Some(t),
                Action::PopVlan => c.pop_vlan = true,
                Action::VxlanEncap(t) => c.encap = Some(Encap::Vxlan(t)),
                Action::GreEncap(t) => c.encap = Some(Encap::Gre(t)),
                Action::VxlanDecap => c.decap = Some(Decap::Vxlan),
                Action::GreDecap => c.decap = Some(Decap::Gre),
                Action::SetPriorityClass(q) => c.priority_class = Some(q),
                Action::Stripe(s) => c.striping = Some(s),
                Action::Drop => c.drop = true,
            }
        }
        c
    }

    /// `true` if nothing is to be done.
    #[must_use]
    pub fn is_none(&self) -> bool {
        *self == Self::NONE
    }

    /// `true` if the packet's bytes change (a rewrite, a tag or a tunnel); `false` for
    /// metadata only, so the engine can skip the rewrite stage.
    #[must_use]
    pub const fn modifies_packet(&self) -> bool {
        self.decap.is_some()
            || self.pop_vlan
            || self.src_addr.is_some()
            || self.dst_addr.is_some()
            || self.src_port.is_some()
            || self.dst_port.is_some()
            || self.dscp.is_some()
            || self.ecn.is_some()
            || self.ttl.is_some()
            || self.push_vlan.is_some()
            || self.encap.is_some()
    }
}

/// Why an action is invalid.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ActionError {
    /// DSCP above 63.
    DscpOutOfRange(u8),
    /// ECN above 3.
    EcnOutOfRange(u8),
    /// TTL / hop limit 0: the next router would discard every packet.
    TtlZero,
    /// An address rewrite to another IP version than the match's.
    AddressFamilyMismatch,
    /// An address rewrite on a match that allows either IP version (no prefix): add a prefix
    /// (e.g. `0.0.0.0/0`) to fix the version.
    AddressNeedsFamily,
    /// A port rewrite on a match that is not limited to `protocol` TCP or UDP.
    PortRewriteNeedsTcpOrUdp,
    /// A pushed VLAN id outside `1..=4094`.
    VlanOutOfRange(u16),
    /// A pushed PCP above 7.
    PcpOutOfRange(u8),
    /// VLAN push or pop on a rule that applies to a TUN (layer 3) vNIC, where the context
    /// allows none ([`super::TunVlan`]).
    VlanOnTunVnic,
    /// A tunnel id that is not in the tunnel table.
    UnknownTunnel(TunnelId),
    /// A VXLAN action on a GRE tunnel or the reverse.
    TunnelKindMismatch(TunnelId),
    /// A priority class the QoS configuration does not have.
    UnknownPriorityClass(QosClass),
    /// A striping policy whose NICs include none of the configured NICs.
    NoUsableNics,
    /// The action's field is set twice in the list.
    Repeated,
    /// The action comes after one of a later pipeline stage (see the module doc).
    OutOfOrder,
    /// `Drop` with other actions: they could never apply.
    DropWithOthers,
}

impl fmt::Display for ActionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DscpOutOfRange(v) => write!(f, "dscp {v} above 63"),
            Self::EcnOutOfRange(v) => write!(f, "ecn {v} above 3"),
            Self::TtlZero => f.write_str("ttl 0 would be discarded by the next hop"),
            Self::AddressFamilyMismatch => {
                f.write_str("address rewrite to another ip version than the match's")
            }
            Self::AddressNeedsFamily => {
                f.write_str("address rewrite needs a prefix match that fixes the ip version")
            }
            Self::PortRewriteNeedsTcpOrUdp => {
                f.write_str("port rewrite needs a match on protocol tcp (6) or udp (17)")
            }
            Self::VlanOutOfRange(v) => write!(f, "vlan {v} outside 1..=4094"),
            Self::PcpOutOfRange(v) => write!(f, "pcp {v} above 7"),
            Self::VlanOnTunVnic => f.write_str(
                "vlan push/pop on a tun (layer 3) vnic: only a vxlan tunnel's inner ethernet \
                 header carries a tag",
            ),
            Self::UnknownTunnel(t) => write!(f, "unknown tunnel {}", t.0),
            Self::TunnelKindMismatch(t) => write!(f, "tunnel {} is of another kind", t.0),
            Self::UnknownPriorityClass(c) => write!(f, "unknown priority class {}", c.0),
            Self::NoUsableNics => f.write_str("striping names none of the configured nics"),
            Self::Repeated => f.write_str("repeats an earlier action of the same kind"),
            Self::OutOfOrder => f.write_str(
                "out of order: decap, pop vlan, rewrites, push vlan, encap is the only order",
            ),
            Self::DropWithOthers => f.write_str("drop with other actions"),
        }
    }
}
