//! Classification: from a parsed IP summary to a [`FlowKey`].
//!
//! Owns: which header fields make up a flow's identity (the 5-tuple, optionally DSCP, VLAN and
//! VXLAN VNI) and the fragment rule. Does not own parsing (braid-wire's
//! [`IpSummary`]) nor flow state (the [`super::FlowTable`]).
//!
//! # The fragment rule
//!
//! Only the first fragment of an IP datagram carries the transport header (RFC 791 §2.3,
//! RFC 8200 §4.5), so a later fragment has no ports. If the first fragment were keyed on the
//! full 5-tuple and the later ones on addresses only, one datagram would be split across two
//! flows (two NICs, two reassembly owners) and could never be put back together. Every
//! fragment of a datagram, the first included, is therefore keyed on addresses and protocol
//! only, with ports zeroed — the same rule RSS applies (see the Toeplitz test data). A
//! protocol other than TCP or UDP also has ports zeroed: its bytes after the IP header are not
//! ports.

use core::net::IpAddr;

use braid_wire::ip::IpSummary;

/// IANA protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IANA protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;

/// Which fields identify a flow.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ClassifyConfig {
    /// Include TCP/UDP ports (5-tuple). Default `true`; `false` keys on addresses + protocol.
    pub use_ports: bool,
    /// Include the DSCP (RFC 2474) so different classes of one 5-tuple are separate flows.
    /// Default `false`.
    pub dscp: bool,
    /// Include the 802.1Q VLAN id. Default `false`.
    pub vlan: bool,
    /// Include the VXLAN VNI (RFC 7348) of an encapsulated packet. Default `false`.
    pub vni: bool,
}

impl Default for ClassifyConfig {
    fn default() -> Self {
        Self {
            use_ports: true,
            dscp: false,
            vlan: false,
            vni: false,
        }
    }
}

/// A flow's identity: the 5-tuple plus the deeper keys the [`ClassifyConfig`] enables
/// (`None` when disabled or absent).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct FlowKey {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol (IPv6: the upper-layer protocol after extension headers).
    pub protocol: u8,
    /// Source port; 0 for fragments, non-TCP/UDP, or when ports are not used.
    pub src_port: u16,
    /// Destination port; 0 for fragments, non-TCP/UDP, or when ports are not used.
    pub dst_port: u16,
    /// DSCP, if classified on it.
    pub dscp: Option<u8>,
    /// VLAN id, if classified on it and present.
    pub vlan: Option<u16>,
    /// VXLAN VNI, if classified on it and present.
    pub vni: Option<u32>,
}

impl FlowKey {
    /// The key of a parsed packet under `cfg` (see the fragment rule in the module doc).
    #[inline]
    #[must_use]
    pub fn from_summary(s: &IpSummary, cfg: &ClassifyConfig) -> Self {
        let ports = cfg.use_ports
            && !s.is_fragment
            && (s.protocol == IPPROTO_TCP || s.protocol == IPPROTO_UDP);
        let (src_port, dst_port) = if ports {
            (s.src_port, s.dst_port)
        } else {
            (0, 0)
        };
        Self {
            src: s.src,
            dst: s.dst,
            protocol: s.protocol,
            src_port,
            dst_port,
            dscp: cfg.dscp.then_some(s.dscp),
            vlan: if cfg.vlan { s.vlan } else { None },
            vni: if cfg.vni { s.vxlan_vni } else { None },
        }
    }

    /// A plain 5-tuple key (no deeper keys), e.g. for tests and the simulator.
    #[must_use]
    pub const fn five_tuple(
        src: IpAddr,
        dst: IpAddr,
        protocol: u8,
        src_port: u16,
        dst_port: u16,
    ) -> Self {
        Self {
            src,
            dst,
            protocol,
            src_port,
            dst_port,
            dscp: None,
            vlan: None,
            vni: None,
        }
    }
}
