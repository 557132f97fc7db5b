//! VXLAN (RFC 7348) and GRE (RFC 2784/2890) encapsulation and decapsulation of whole packets.
//!
//! Owns the per-tunnel encap configs ([`VxlanEncap`], [`GreEncap`], or either as [`Encap`]),
//! the functions that write an outer packet around an inner one — in place, in headroom in
//! front of the inner packet, or into another buffer — the function that validates an outer
//! packet and finds the inner one ([`decap`]), and the RFC 2890 receive sequence check
//! ([`GreSeqCheck`]). It does not own the header formats (the views in [`crate::vxlan`] and
//! [`crate::gre`]), which flows are tunnelled (braid-core's rules), the per-tunnel TX
//! sequence counter and IP id (the caller passes them), routing, ARP/ND, or sending.
//!
//! # Shapes
//!
//! The outer packet starts at the outer IP header: it is what goes out of a NIC as an IP
//! packet. The inner packet is either an Ethernet frame (from a TAP vNIC) or an IPv4/IPv6
//! packet (from a TUN vNIC); [`InnerFormat`] says which, and whether an IP packet gets a
//! synthesized Ethernet header (VXLAN always carries Ethernet; GRE carries either).
//!
//! ```text
//! VXLAN: outer IPv4/IPv6 | UDP (dst 4789) | VXLAN (8) | [Ethernet (14) [802.1Q tag (4)]] inner
//! GRE:   outer IPv4/IPv6 (protocol 47) | GRE (4..16) | [Ethernet (14) [802.1Q tag (4)]] inner
//! ```
//!
//! # VLAN tags in the inner frame
//!
//! A synthesized Ethernet header ([`InnerFormat::IpInEthernet`]) may carry one IEEE 802.1Q
//! tag (TPID 0x8100, then PCP/DEI/VID) between the source MAC and the EtherType, as a Linux
//! VLAN device on top of a VXLAN device sends and expects (`ip link add link vxlan0 name
//! vxlan0.100 type vlan id 100`). The tag is per packet ([`EncapMeta::vlan`]: braid-core's
//! rules push it per flow), so the overhead is [`Encap::overhead_for`] (4 bytes more with a
//! tag). On receipt, [`Decapped::inner_ip`] accepts an inner frame with at most one 802.1Q
//! tag and reports it ([`InnerIp::vlan`]); the IP range it gives leaves the tag out, which
//! is how the tag is popped for a TUN vNIC. A priority-tagged frame (VID 0, IEEE 802.1Q
//! §6.9) belongs to no VLAN: reported as a tag with `vid` 0. Two tags (QinQ), an 802.1ad
//! S-tag alone, or a VID of 4095 (reserved) are refused: braid delivers one IP packet per
//! frame and has no rule that pops two tags. [`Decapped::inner_l3`] keeps refusing every
//! tagged frame, for callers that do not handle tags.
//!
//! # Call protocol
//!
//! TX: at setup, `cfg.validate()` and `cfg.overhead()` (reduce the vNIC MTU by it); per
//! packet, [`Encap::encap_in_place`] when the buffer has `overhead()` bytes of headroom in
//! front of the inner packet (no copy), else [`Encap::encap_into`]. The caller supplies
//! [`EncapMeta`]: the flow hash (VXLAN source port), the outer IPv4 id and the GRE sequence
//! number, because those are per-flow or per-tunnel state this crate does not keep.
//!
//! RX: [`decap`] the outer packet: [`TunnelError::NotTunnel`] means an ordinary packet
//! (pass it on), [`TunnelError::Fragment`] means reassemble the outer datagram first and decap
//! the result, any other error is a counted drop. On success, [`Decapped::inner`] is the inner
//! packet's range in the same buffer (no copy); [`Decapped::inner_l3`] gives the IP packet
//! inside an inner Ethernet frame for a TUN vNIC. A GRE tunnel with sequence numbers runs
//! [`GreSeqCheck::check`] on [`Tunnel::Gre`]'s `seq`. A socket that hands over only the
//! tunnel payload (a UDP socket on the VXLAN port; an IPv6 raw socket for GRE) gives it to
//! [`decap_payload`] with the addresses the socket reports.
//!
//! # Decap rules, and why
//!
//! - **Outer IPv4**: version 4, IHL ≥ 5 (options are skipped), total length within the buffer
//!   and at least the header; the header checksum is always verified (20 bytes: cheap, and a
//!   corrupt header may have a corrupt protocol or address). A fragment (MF set or offset
//!   non-zero) is [`TunnelError::Fragment`]. Bytes after the total length (link padding) are
//!   ignored.
//! - **Outer IPv6**: version 6, payload length within the buffer. Hop-by-hop, destination
//!   options and routing headers are walked (at most [`MAX_IPV6_EXT_HEADERS`]); a routing
//!   header with segments left is [`ParseError::Unsupported`] (the packet is not at its final
//!   destination, and the UDP pseudo-header would need the final one); an atomic fragment
//!   (RFC 6946) is a whole packet; any other fragment header is [`TunnelError::Fragment`].
//! - **UDP** (VXLAN): the destination port must be the configured VXLAN port, else
//!   [`TunnelError::NotTunnel`]; the UDP length must equal the IP payload length. A zero
//!   checksum is accepted over IPv4 (RFC 7348 §5 lets senders send it) and refused over IPv6
//!   (RFC 8200 §8.1; Linux refuses it too unless `udp6zerocsumrx`). A non-zero checksum is
//!   verified when [`DecapConfig::verify_checksums`] is set.
//! - **VXLAN**: the flags byte must be exactly 0x08 ([`crate::vxlan::Repr::parse`]); the
//!   reserved bytes are ignored (RFC 7348 §5). The inner Ethernet frame must hold its 14-byte
//!   header.
//! - **GRE**: as [`crate::gre::Repr::parse`] (version 0, reserved bits 1, 4, 5 clear,
//!   checksum verified when asked); protocol type IPv4, IPv6 (the inner version nibble must
//!   agree) or transparent Ethernet bridging; any other type is [`ParseError::Unsupported`].
//!
//! Every check uses bounds-checked slicing on lengths validated first: nothing here panics on
//! packet bytes (a proptest feeds random bytes and mutated valid packets).
//!
//! # Encap choices
//!
//! - **Outer IPv4**: 20 bytes, no options; DF per [`OuterConfig::df`]; TTL per
//!   [`OuterConfig::ttl`]; TOS per [`OuterConfig::tos`]; the id from [`EncapMeta::ip_id`];
//!   header checksum computed. **Outer IPv6**: traffic class [`OuterConfig::tos`], flow label
//!   [`OuterConfig::flow_label`], hop limit [`OuterConfig::ttl`], no extension headers.
//! - **VXLAN UDP**: source port from [`EncapMeta::flow_hash`] in [`VxlanEncap::src_ports`]
//!   (RFC 7348 §5); the checksum is computed over IPv6 always (RFC 8200 §8.1; the zero
//!   checksum of RFC 6935/6936 is not offered) and over IPv4 only if
//!   [`VxlanEncap::udp_checksum_v4`] (RFC 7348 §5 allows 0, and Linux sends 0 by default).
//! - **Lengths**: an outer packet whose IPv4 total length, IPv6 payload length or UDP length
//!   would pass 65535 is [`TunnelError::TooLong`] (no jumbograms).
//!
//! # Matching a Linux VXLAN device
//!
//! `ip link add vxlan0 type vxlan id N dstport 4789 remote B local K dev ...` (no other
//! options) sends: outer IPv4 K → B with DF clear, TTL 64 (the route's hop limit), TOS 0, an
//! id of its choosing; UDP to 4789 from a flow-hash port in 32768–60999 (the UDP checksum:
//! iproute2 documents `noudpcsum` as the IPv4 default, but this machine's Linux 6.18 sent a
//! non-zero one in the interop test, crates/braid/tests/tunnels.rs; braid accepts both);
//! VXLAN flags 0x08 and VNI N; an Ethernet frame from vxlan0's MAC.
//! [`VxlanEncap::new`]`(V4 { src: B, dst: K }, N, IpInEthernet(macs))` produces the same
//! shape (set `src_ports` to [`SrcPortRange::LINUX_DEFAULT`] for the same port range; the
//! kernel accepts any), and its overhead, 50 bytes, is the 50 the kernel takes off vxlan0's
//! MTU (70 over IPv6). What the kernel requires of braid's packets: VNI N, flags exactly
//! 0x08, a zero or correct UDP checksum over IPv4 and a correct one over IPv6 (zero needs
//! `udp6zerocsumrx`); an inner destination MAC equal to vxlan0's address (or broadcast),
//! else the frame is for another host and dropped; an inner source MAC different from
//! vxlan0's (the kernel drops its own address as a loop). vxlan0 resolves braid's inner
//! address with ARP/ND, which braid does not answer: give vxlan0 a permanent neighbour entry
//! for braid's inner address with `macs.src`.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::ops::Range;

use crate::ParseError;
use crate::checksum::{Sum, checksum};
use crate::gre;
use crate::rewrite::VlanTag;
use crate::vxlan::{self, SrcPortRange};

/// Length in bytes of an outer IPv4 header (braid emits no options).
pub const IPV4_HEADER_LEN: usize = 20;
/// Length in bytes of an outer IPv6 header (braid emits no extension headers).
pub const IPV6_HEADER_LEN: usize = 40;
/// Length in bytes of a UDP header.
pub const UDP_HEADER_LEN: usize = 8;
/// Length in bytes of an Ethernet II header without VLAN tags (and without FCS, which
/// neither VXLAN nor GRE carries).
pub const ETHERNET_HEADER_LEN: usize = 14;
/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// The most IPv6 extension headers [`decap`] walks before giving up.
pub const MAX_IPV6_EXT_HEADERS: usize = 8;

/// The IP protocol number of UDP.
const IP_PROTOCOL_UDP: u8 = 17;
/// IPv6 extension headers [`decap`] walks.
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_DEST_OPTS: u8 = 60;
/// IPv4 flags/fragment offset bits: DF, MF, and the offset.
const IPV4_DF: u16 = 0x4000;
const IPV4_MF_OFFSET: u16 = 0x3fff;
/// The largest 16-bit length field.
const MAX_LEN16: usize = 0xffff;
/// Length in bytes of an IEEE 802.1Q tag (TPID + TCI).
pub const VLAN_TAG_LEN: usize = 4;
/// The TPID of an IEEE 802.1Q customer VLAN tag.
pub const TPID_8021Q: u16 = 0x8100;

/// Why an encapsulation or a decapsulation failed.
///
/// A small `Copy` enum so the engine maps it to a drop reason without formatting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TunnelError {
    /// Decap: a well-formed packet that is not a tunnel packet this module handles (another
    /// IP protocol, UDP to another port). The caller treats it as ordinary traffic.
    NotTunnel,
    /// Decap: the outer packet is an IP fragment of a UDP or GRE datagram: reassemble it,
    /// then decap the whole datagram.
    Fragment,
    /// Decap or encap: a header is malformed or not supported; `layer` says which.
    Invalid {
        /// The header at fault.
        layer: Layer,
        /// What is wrong with it.
        error: ParseError,
    },
    /// Encap: the output buffer is too short, the headroom in front of the inner packet is
    /// less than the overhead, or the inner range is not inside the buffer.
    NoRoom,
    /// Encap: the outer packet would exceed a 16-bit length field (IPv4 total length, IPv6
    /// payload length, UDP length).
    TooLong,
    /// A config field is out of range (`validate`).
    BadConfig {
        /// The field's name, as in the config struct.
        field: &'static str,
    },
    /// Encap: [`EncapMeta::vlan`] asks for a VLAN tag but the inner packet gets no
    /// synthesized Ethernet header to carry it (only [`InnerFormat::IpInEthernet`] has
    /// one), or the tag's PCP is above 7 or its VID above 4094.
    VlanNotCarried,
}

impl fmt::Display for TunnelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotTunnel => f.write_str("not a tunnel packet"),
            Self::Fragment => f.write_str("outer packet is a fragment"),
            Self::Invalid { layer, error } => write!(f, "{layer}: {error}"),
            Self::NoRoom => f.write_str("no room for the outer headers"),
            Self::TooLong => f.write_str("outer packet too long"),
            Self::BadConfig { field } => write!(f, "bad tunnel config field {field}"),
            Self::VlanNotCarried => {
                f.write_str("vlan tag without a synthesized inner ethernet header, or invalid")
            }
        }
    }
}

impl core::error::Error for TunnelError {}

/// The header a [`TunnelError::Invalid`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layer {
    /// The outer IPv4/IPv6 header (and IPv6 extension headers).
    OuterIp,
    /// The outer UDP header (VXLAN).
    Udp,
    /// The VXLAN header.
    Vxlan,
    /// The GRE header.
    Gre,
    /// The inner packet or frame.
    Inner,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::OuterIp => "outer ip",
            Self::Udp => "udp",
            Self::Vxlan => "vxlan",
            Self::Gre => "gre",
            Self::Inner => "inner",
        })
    }
}

const fn invalid(layer: Layer, error: ParseError) -> TunnelError {
    TunnelError::Invalid { layer, error }
}

/// The MAC addresses of a synthesized inner Ethernet header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct InnerMacs {
    /// Source MAC: braid's side of the tunnel.
    pub src: [u8; 6],
    /// Destination MAC: the far end's (for a Linux VXLAN device, that device's address).
    pub dst: [u8; 6],
}

/// What the inner packet handed to encap is, and how it is carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InnerFormat {
    /// An IPv4/IPv6 packet (TUN), carried as is: GRE protocol type IPv4 or IPv6 from the
    /// packet's version nibble. GRE only: VXLAN carries Ethernet frames.
    Ip,
    /// An Ethernet frame (TAP), carried as is (VXLAN; GRE with transparent Ethernet
    /// bridging).
    Ethernet,
    /// An IPv4/IPv6 packet (TUN) carried in a synthesized Ethernet header with these MACs and
    /// the EtherType of the packet's version (VXLAN; GRE with transparent Ethernet bridging).
    IpInEthernet(InnerMacs),
}

impl InnerFormat {
    /// The bytes encap adds in front of the inner packet before the tunnel header (without
    /// a VLAN tag: see [`Encap::overhead_for`]).
    pub const fn added_len(&self) -> usize {
        match self {
            Self::IpInEthernet(_) => ETHERNET_HEADER_LEN,
            Self::Ip | Self::Ethernet => 0,
        }
    }

    /// The TCI of `tag` if this format can carry it (a synthesized Ethernet header), `None`
    /// without a tag.
    fn tag_tci(&self, tag: Option<VlanTag>) -> Result<Option<u16>, TunnelError> {
        match (tag, self) {
            (None, _) => Ok(None),
            (Some(tag), Self::IpInEthernet(_)) => {
                tag.tci().map(Some).map_err(|_| TunnelError::VlanNotCarried)
            }
            (Some(_), Self::Ip | Self::Ethernet) => Err(TunnelError::VlanNotCarried),
        }
    }
}

/// The bytes a VLAN tag in `meta` adds: 4 with a tag, else 0.
const fn tag_len(meta: &EncapMeta) -> usize {
    if meta.vlan.is_some() { VLAN_TAG_LEN } else { 0 }
}

/// The outer addresses: both IPv4 or both IPv6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OuterIp {
    /// An IPv4 outer header.
    V4 {
        /// Local tunnel endpoint.
        src: Ipv4Addr,
        /// Remote tunnel endpoint.
        dst: Ipv4Addr,
    },
    /// An IPv6 outer header.
    V6 {
        /// Local tunnel endpoint.
        src: Ipv6Addr,
        /// Remote tunnel endpoint.
        dst: Ipv6Addr,
    },
}

impl OuterIp {
    /// The outer IP header length: 20 or 40 bytes.
    pub const fn header_len(&self) -> usize {
        match self {
            Self::V4 { .. } => IPV4_HEADER_LEN,
            Self::V6 { .. } => IPV6_HEADER_LEN,
        }
    }
}

/// The outer IP header of a tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OuterConfig {
    /// The endpoints.
    pub ip: OuterIp,
    /// IPv4 TTL or IPv6 hop limit; 1..=255, default 64 (Linux's default for a unicast
    /// remote).
    pub ttl: u8,
    /// IPv4 TOS byte or IPv6 traffic class (DSCP << 2 | ECN); default 0.
    pub tos: u8,
    /// IPv4 only: set Don't Fragment; default `false` (Linux VXLAN's `df unset`). With DF,
    /// an oversized outer packet is dropped by a router (and PMTUD applies) instead of
    /// being fragmented.
    pub df: bool,
    /// IPv6 only: the flow label, 20 bits; default 0.
    pub flow_label: u32,
}

impl OuterConfig {
    /// An outer header with the defaults: TTL 64, TOS 0, no DF, flow label 0.
    pub const fn new(ip: OuterIp) -> Self {
        Self {
            ip,
            ttl: 64,
            tos: 0,
            df: false,
            flow_label: 0,
        }
    }

    fn validate(&self) -> Result<(), TunnelError> {
        if self.ttl == 0 {
            return Err(TunnelError::BadConfig { field: "ttl" });
        }
        if self.flow_label > 0x000f_ffff {
            return Err(TunnelError::BadConfig {
                field: "flow_label",
            });
        }
        Ok(())
    }
}

/// Per-packet values encap needs from the caller's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct EncapMeta {
    /// A hash of the inner flow (VXLAN: picks the UDP source port); ignored by GRE.
    pub flow_hash: u32,
    /// The outer IPv4 identification (a per-tunnel counter is fine: RFC 6864); ignored over
    /// IPv6.
    pub ip_id: u16,
    /// The GRE sequence number, written when [`GreEncap::seq`] is set (the caller increments
    /// it per packet, per tunnel, RFC 2890 §2.2); ignored by VXLAN.
    pub gre_seq: u32,
    /// An IEEE 802.1Q tag for the synthesized inner Ethernet header
    /// ([`InnerFormat::IpInEthernet`] only; [`TunnelError::VlanNotCarried`] otherwise),
    /// written between the source MAC and the EtherType; `None` (the default): untagged.
    /// The overhead grows by [`VLAN_TAG_LEN`] ([`Encap::overhead_for`]).
    pub vlan: Option<VlanTag>,
}

/// A VXLAN tunnel's encapsulation (RFC 7348).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VxlanEncap {
    /// The outer IP header.
    pub outer: OuterConfig,
    /// The VXLAN network identifier, 24 bits.
    pub vni: u32,
    /// What the inner packet is: [`InnerFormat::Ethernet`] or
    /// [`InnerFormat::IpInEthernet`] ([`InnerFormat::Ip`] is refused: VXLAN carries frames).
    pub inner: InnerFormat,
    /// The UDP destination port; default [`vxlan::VXLAN_PORT`] (4789).
    pub dst_port: u16,
    /// The UDP source ports picked by flow hash; default [`SrcPortRange::RFC7348`].
    pub src_ports: SrcPortRange,
    /// Compute the UDP checksum over IPv4 (Linux's `udpcsum`); default `false`, which sends
    /// 0 as RFC 7348 allows. Over IPv6 it is always computed.
    pub udp_checksum_v4: bool,
}

impl VxlanEncap {
    /// A tunnel with the defaults: [`OuterConfig::new`], port 4789, RFC 7348 source ports,
    /// no UDP checksum over IPv4.
    pub const fn new(outer: OuterIp, vni: u32, inner: InnerFormat) -> Self {
        Self {
            outer: OuterConfig::new(outer),
            vni,
            inner,
            dst_port: vxlan::VXLAN_PORT,
            src_ports: SrcPortRange::RFC7348,
            udp_checksum_v4: false,
        }
    }

    /// Checks the config once, at setup.
    ///
    /// # Errors
    /// [`TunnelError::BadConfig`] naming the field: `vni` above 24 bits, `inner` =
    /// [`InnerFormat::Ip`], `dst_port` 0, `src_ports` inverted, `ttl` 0, `flow_label` above 20
    /// bits.
    pub fn validate(&self) -> Result<(), TunnelError> {
        self.outer.validate()?;
        if self.vni > vxlan::VNI_MAX {
            return Err(TunnelError::BadConfig { field: "vni" });
        }
        if matches!(self.inner, InnerFormat::Ip) {
            return Err(TunnelError::BadConfig { field: "inner" });
        }
        if self.dst_port == 0 {
            return Err(TunnelError::BadConfig { field: "dst_port" });
        }
        if !self.src_ports.is_valid() {
            return Err(TunnelError::BadConfig { field: "src_ports" });
        }
        Ok(())
    }

    /// The bytes encap adds in front of the inner packet: outer IP + UDP + VXLAN
    /// (+ a synthesized Ethernet header): 36/50 over IPv4, 56/70 over IPv6.
    pub const fn overhead(&self) -> usize {
        self.outer.ip.header_len() + UDP_HEADER_LEN + vxlan::HEADER_LEN + self.inner.added_len()
    }

    /// [`Self::overhead`] for a packet encapsulated with `meta`: 4 bytes more with a VLAN
    /// tag ([`EncapMeta::vlan`]).
    pub const fn overhead_for(&self, meta: &EncapMeta) -> usize {
        self.overhead() + tag_len(meta)
    }

    /// Writes the outer headers into the `overhead_for(&meta)` bytes in front of
    /// `buf[inner]` and returns the outer packet's range in `buf` (it ends where the inner
    /// packet ends).
    ///
    /// # Errors
    /// [`TunnelError::NoRoom`] if `inner.start < overhead_for(&meta)` or `inner` is outside
    /// `buf`; [`TunnelError::BadConfig`] as [`Self::validate`];
    /// `Invalid { layer: Inner, .. }` for an inner packet that does not match
    /// [`Self::inner`] (an Ethernet frame shorter than 14 bytes, an IP packet whose version is
    /// not 4 or 6); [`TunnelError::VlanNotCarried`] for a tag in `meta` that
    /// [`Self::inner`] cannot carry or that is invalid; [`TunnelError::TooLong`] if a length
    /// field would overflow.
    pub fn encap_in_place(
        &self,
        buf: &mut [u8],
        inner: Range<usize>,
        meta: EncapMeta,
    ) -> Result<Range<usize>, TunnelError> {
        self.validate()?;
        self.write_headers(buf, inner, meta)
    }

    /// [`Self::encap_in_place`] without the config check.
    fn write_headers(
        &self,
        buf: &mut [u8],
        inner: Range<usize>,
        meta: EncapMeta,
    ) -> Result<Range<usize>, TunnelError> {
        let tci = self.inner.tag_tci(meta.vlan)?;
        let start = headroom(buf, &inner, self.overhead_for(&meta))?;
        let ethertype = inner_ethertype(self.inner, &buf[inner.clone()])?;
        let ip_len = self.outer.ip.header_len();
        let udp_start = start + ip_len;
        let udp_len = inner.end - udp_start;
        if udp_len > MAX_LEN16 {
            return Err(TunnelError::TooLong);
        }
        write_outer_ip(
            &self.outer,
            meta.ip_id,
            IP_PROTOCOL_UDP,
            udp_len,
            &mut buf[start..],
        )?;
        let vxlan_start = udp_start + UDP_HEADER_LEN;
        vxlan::Repr { vni: self.vni }.emit(&mut vxlan::Packet::new_unchecked(
            &mut buf[vxlan_start..vxlan_start + vxlan::HEADER_LEN],
        ));
        write_synth_ethernet(self.inner, ethertype, tci, &mut buf[..inner.start]);
        {
            let udp = &mut buf[udp_start..udp_start + UDP_HEADER_LEN];
            udp[0..2].copy_from_slice(&self.src_ports.port(meta.flow_hash).to_be_bytes());
            udp[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
            udp[4..6].copy_from_slice(&len16(udp_len).to_be_bytes());
            udp[6..8].fill(0);
        }
        let v6 = matches!(self.outer.ip, OuterIp::V6 { .. });
        if v6 || self.udp_checksum_v4 {
            let pseudo = pseudo_header_sum(&buf[start..udp_start], IP_PROTOCOL_UDP, udp_len);
            let mut sum = pseudo.add_bytes(&buf[udp_start..inner.end]).checksum();
            if sum == 0 {
                // RFC 768: a computed 0 is sent as all ones (0 means "no checksum").
                sum = 0xffff;
            }
            buf[udp_start + 6..udp_start + 8].copy_from_slice(&sum.to_be_bytes());
        }
        Ok(start..inner.end)
    }

    /// Writes the whole outer packet (headers, then a copy of `inner`) at the start of `out`
    /// and returns its length.
    ///
    /// # Errors
    /// [`TunnelError::NoRoom`] if `out` is shorter than `overhead_for(&meta) + inner.len()`;
    /// otherwise as [`Self::encap_in_place`].
    pub fn encap_into(
        &self,
        inner: &[u8],
        out: &mut [u8],
        meta: EncapMeta,
    ) -> Result<usize, TunnelError> {
        self.validate()?;
        // The tag first: a refused one leaves `out` untouched.
        self.inner.tag_tci(meta.vlan)?;
        let range = copy_inner(self.overhead_for(&meta), inner, out)?;
        self.write_headers(out, range, meta).map(|r| r.len())
    }
}

/// A GRE tunnel's encapsulation (RFC 2784, with the RFC 2890 key and sequence number).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GreEncap {
    /// The outer IP header (protocol / next header 47).
    pub outer: OuterConfig,
    /// What the inner packet is, and so the protocol type: IPv4/IPv6 for
    /// [`InnerFormat::Ip`], transparent Ethernet bridging (0x6558) otherwise.
    pub inner: InnerFormat,
    /// The key (RFC 2890 §2.1), if any.
    pub key: Option<u32>,
    /// Carry a sequence number (RFC 2890 §2.2), taken from [`EncapMeta::gre_seq`].
    pub seq: bool,
    /// Carry a checksum over the GRE header and payload (RFC 2784 §2.5); costs a pass over
    /// the packet.
    pub checksum: bool,
}

impl GreEncap {
    /// A tunnel with [`OuterConfig::new`] defaults and no key, sequence or checksum.
    pub const fn new(outer: OuterIp, inner: InnerFormat) -> Self {
        Self {
            outer: OuterConfig::new(outer),
            inner,
            key: None,
            seq: false,
            checksum: false,
        }
    }

    /// Checks the config once, at setup.
    ///
    /// # Errors
    /// [`TunnelError::BadConfig`] naming the field: `ttl` 0, `flow_label` above 20 bits.
    pub fn validate(&self) -> Result<(), TunnelError> {
        self.outer.validate()
    }

    /// The bytes encap adds in front of the inner packet: outer IP + GRE (4, plus 4 for each
    /// of checksum, key, sequence) (+ a synthesized Ethernet header).
    pub const fn overhead(&self) -> usize {
        self.outer.ip.header_len() + self.gre_repr(0).buffer_len() + self.inner.added_len()
    }

    /// [`Self::overhead`] for a packet encapsulated with `meta`: 4 bytes more with a VLAN
    /// tag ([`EncapMeta::vlan`]).
    pub const fn overhead_for(&self, meta: &EncapMeta) -> usize {
        self.overhead() + tag_len(meta)
    }

    const fn gre_repr(&self, seq: u32) -> gre::Repr {
        gre::Repr {
            protocol_type: gre::PROTOCOL_TEB,
            checksum: self.checksum,
            key: self.key,
            seq: if self.seq { Some(seq) } else { None },
        }
    }

    /// Writes the outer headers into the `overhead_for(&meta)` bytes in front of
    /// `buf[inner]` and returns the outer packet's range in `buf` (it ends where the inner
    /// packet ends).
    ///
    /// # Errors
    /// As [`VxlanEncap::encap_in_place`].
    pub fn encap_in_place(
        &self,
        buf: &mut [u8],
        inner: Range<usize>,
        meta: EncapMeta,
    ) -> Result<Range<usize>, TunnelError> {
        self.validate()?;
        self.write_headers(buf, inner, meta)
    }

    /// [`Self::encap_in_place`] without the config check.
    fn write_headers(
        &self,
        buf: &mut [u8],
        inner: Range<usize>,
        meta: EncapMeta,
    ) -> Result<Range<usize>, TunnelError> {
        let tci = self.inner.tag_tci(meta.vlan)?;
        let start = headroom(buf, &inner, self.overhead_for(&meta))?;
        let ethertype = inner_ethertype(self.inner, &buf[inner.clone()])?;
        let gre_start = start + self.outer.ip.header_len();
        let gre_len = inner.end - gre_start;
        let mut repr = self.gre_repr(meta.gre_seq);
        if matches!(self.inner, InnerFormat::Ip) {
            repr.protocol_type = ethertype;
        }
        write_outer_ip(
            &self.outer,
            meta.ip_id,
            gre::IP_PROTOCOL,
            gre_len,
            &mut buf[start..],
        )?;
        write_synth_ethernet(self.inner, ethertype, tci, &mut buf[..inner.start]);
        // Last: the GRE checksum covers the synthesized Ethernet header and the inner packet.
        repr.emit(&mut gre::Packet::new_unchecked(
            &mut buf[gre_start..inner.end],
        ));
        Ok(start..inner.end)
    }

    /// Writes the whole outer packet (headers, then a copy of `inner`) at the start of `out`
    /// and returns its length.
    ///
    /// # Errors
    /// As [`VxlanEncap::encap_into`].
    pub fn encap_into(
        &self,
        inner: &[u8],
        out: &mut [u8],
        meta: EncapMeta,
    ) -> Result<usize, TunnelError> {
        self.validate()?;
        // The tag first: a refused one leaves `out` untouched.
        self.inner.tag_tci(meta.vlan)?;
        let range = copy_inner(self.overhead_for(&meta), inner, out)?;
        self.write_headers(out, range, meta).map(|r| r.len())
    }
}

/// Either tunnel's encapsulation: what a rule action holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encap {
    /// VXLAN over UDP.
    Vxlan(VxlanEncap),
    /// GRE.
    Gre(GreEncap),
}

impl Encap {
    /// As [`VxlanEncap::validate`] / [`GreEncap::validate`].
    ///
    /// # Errors
    /// [`TunnelError::BadConfig`].
    pub fn validate(&self) -> Result<(), TunnelError> {
        match self {
            Self::Vxlan(cfg) => cfg.validate(),
            Self::Gre(cfg) => cfg.validate(),
        }
    }

    /// The bytes encap adds in front of the inner packet: reduce the vNIC MTU by it.
    pub const fn overhead(&self) -> usize {
        match self {
            Self::Vxlan(cfg) => cfg.overhead(),
            Self::Gre(cfg) => cfg.overhead(),
        }
    }

    /// The bytes encap adds in front of the inner packet with `meta`: [`Self::overhead`],
    /// plus [`VLAN_TAG_LEN`] with a VLAN tag.
    pub const fn overhead_for(&self, meta: &EncapMeta) -> usize {
        self.overhead() + tag_len(meta)
    }

    /// As [`VxlanEncap::encap_in_place`] / [`GreEncap::encap_in_place`].
    ///
    /// # Errors
    /// As [`VxlanEncap::encap_in_place`].
    pub fn encap_in_place(
        &self,
        buf: &mut [u8],
        inner: Range<usize>,
        meta: EncapMeta,
    ) -> Result<Range<usize>, TunnelError> {
        match self {
            Self::Vxlan(cfg) => cfg.encap_in_place(buf, inner, meta),
            Self::Gre(cfg) => cfg.encap_in_place(buf, inner, meta),
        }
    }

    /// As [`VxlanEncap::encap_into`] / [`GreEncap::encap_into`].
    ///
    /// # Errors
    /// As [`VxlanEncap::encap_into`].
    pub fn encap_into(
        &self,
        inner: &[u8],
        out: &mut [u8],
        meta: EncapMeta,
    ) -> Result<usize, TunnelError> {
        match self {
            Self::Vxlan(cfg) => cfg.encap_into(inner, out, meta),
            Self::Gre(cfg) => cfg.encap_into(inner, out, meta),
        }
    }
}

/// Checks that `overhead` bytes fit in front of `inner` inside `buf`; returns the outer
/// packet's start.
fn headroom(buf: &[u8], inner: &Range<usize>, overhead: usize) -> Result<usize, TunnelError> {
    if inner.start > inner.end || inner.end > buf.len() {
        return Err(TunnelError::NoRoom);
    }
    inner.start.checked_sub(overhead).ok_or(TunnelError::NoRoom)
}

/// Copies `inner` to `out[overhead..]`; returns its range there.
fn copy_inner(overhead: usize, inner: &[u8], out: &mut [u8]) -> Result<Range<usize>, TunnelError> {
    let end = overhead
        .checked_add(inner.len())
        .filter(|end| *end <= out.len())
        .ok_or(TunnelError::NoRoom)?;
    out[overhead..end].copy_from_slice(inner);
    Ok(overhead..end)
}

/// The EtherType of the inner packet: from the IP version nibble for [`InnerFormat::Ip`] and
/// [`InnerFormat::IpInEthernet`]; [`gre::PROTOCOL_TEB`] for an Ethernet frame (checked to
/// hold its header).
fn inner_ethertype(format: InnerFormat, inner: &[u8]) -> Result<u16, TunnelError> {
    match format {
        InnerFormat::Ethernet => {
            if inner.len() < ETHERNET_HEADER_LEN {
                Err(invalid(Layer::Inner, ParseError::Truncated))
            } else {
                Ok(gre::PROTOCOL_TEB)
            }
        }
        InnerFormat::Ip | InnerFormat::IpInEthernet(_) => match inner.first().map(|b| b >> 4) {
            None => Err(invalid(Layer::Inner, ParseError::Truncated)),
            Some(4) => Ok(ETHERTYPE_IPV4),
            Some(6) => Ok(ETHERTYPE_IPV6),
            Some(_) => Err(invalid(
                Layer::Inner,
                ParseError::IllegalValue { field: "version" },
            )),
        },
    }
}

/// Writes the synthesized Ethernet header (with the 802.1Q tag `tci`, if any) into the last
/// 14 (18) bytes of `before_inner`, for [`InnerFormat::IpInEthernet`]; a no-op otherwise.
fn write_synth_ethernet(
    format: InnerFormat,
    ethertype: u16,
    tci: Option<u16>,
    before_inner: &mut [u8],
) {
    if let InnerFormat::IpInEthernet(macs) = format {
        let len = ETHERNET_HEADER_LEN + if tci.is_some() { VLAN_TAG_LEN } else { 0 };
        let at = before_inner.len() - len;
        let eth = &mut before_inner[at..];
        eth[0..6].copy_from_slice(&macs.dst);
        eth[6..12].copy_from_slice(&macs.src);
        let mut next = 12;
        if let Some(tci) = tci {
            eth[12..14].copy_from_slice(&TPID_8021Q.to_be_bytes());
            eth[14..16].copy_from_slice(&tci.to_be_bytes());
            next = 16;
        }
        eth[next..next + 2].copy_from_slice(&ethertype.to_be_bytes());
    }
}

/// A length already checked to fit in 16 bits.
fn len16(len: usize) -> u16 {
    u16::try_from(len).unwrap_or(u16::MAX)
}

/// Writes the outer IP header at the start of `out`, for a payload of `payload_len` bytes.
fn write_outer_ip(
    outer: &OuterConfig,
    ip_id: u16,
    protocol: u8,
    payload_len: usize,
    out: &mut [u8],
) -> Result<(), TunnelError> {
    match outer.ip {
        OuterIp::V4 { src, dst } => {
            let total = IPV4_HEADER_LEN + payload_len;
            if total > MAX_LEN16 {
                return Err(TunnelError::TooLong);
            }
            let h = &mut out[..IPV4_HEADER_LEN];
            h[0] = 0x45;
            h[1] = outer.tos;
            h[2..4].copy_from_slice(&len16(total).to_be_bytes());
            h[4..6].copy_from_slice(&ip_id.to_be_bytes());
            let frag: u16 = if outer.df { IPV4_DF } else { 0 };
            h[6..8].copy_from_slice(&frag.to_be_bytes());
            h[8] = outer.ttl;
            h[9] = protocol;
            h[10..12].fill(0);
            h[12..16].copy_from_slice(&src.octets());
            h[16..20].copy_from_slice(&dst.octets());
            let sum = checksum(h);
            h[10..12].copy_from_slice(&sum.to_be_bytes());
        }
        OuterIp::V6 { src, dst } => {
            if payload_len > MAX_LEN16 {
                return Err(TunnelError::TooLong);
            }
            let h = &mut out[..IPV6_HEADER_LEN];
            let first = (6u32 << 28) | (u32::from(outer.tos) << 20) | (outer.flow_label & 0xf_ffff);
            h[0..4].copy_from_slice(&first.to_be_bytes());
            h[4..6].copy_from_slice(&len16(payload_len).to_be_bytes());
            h[6] = protocol;
            h[7] = outer.ttl;
            h[8..24].copy_from_slice(&src.octets());
            h[24..40].copy_from_slice(&dst.octets());
        }
    }
    Ok(())
}

/// The pseudo-header sum (RFC 768 / RFC 8200 §8.1) from an outer IP header: its source and
/// destination addresses (contiguous in both versions), the protocol and the upper-layer
/// length.
fn pseudo_header_sum(ip_header: &[u8], protocol: u8, upper_len: usize) -> Sum {
    let addrs = if ip_header[0] >> 4 == 4 {
        &ip_header[12..20]
    } else {
        &ip_header[8..40]
    };
    // The IPv6 pseudo-header's length is 32 bits, IPv4's 16; both are sums of the same
    // 16-bit words for a length ≤ 65535, which every caller has checked.
    Sum::new()
        .add_bytes(addrs)
        .add_u16(u16::from(protocol))
        .add_u16(len16(upper_len))
}

/// Which IP version a packet is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpVersion {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// What the inner packet of a decapsulated tunnel packet is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InnerKind {
    /// An Ethernet frame (VXLAN; GRE with transparent Ethernet bridging).
    Ethernet,
    /// An IPv4 packet (GRE protocol type 0x0800).
    Ipv4,
    /// An IPv6 packet (GRE protocol type 0x86DD).
    Ipv6,
}

/// The tunnel header of a decapsulated packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tunnel {
    /// VXLAN.
    Vxlan {
        /// The VNI.
        vni: u32,
        /// The outer UDP source port (the sender's flow entropy).
        src_port: u16,
    },
    /// GRE.
    Gre {
        /// The key, if present.
        key: Option<u32>,
        /// The sequence number, if present: feed it to the tunnel's [`GreSeqCheck`].
        seq: Option<u32>,
    },
}

/// What [`decap`] found.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Decapped {
    /// The outer source address (the remote tunnel endpoint).
    pub outer_src: IpAddr,
    /// The outer destination address (ours).
    pub outer_dst: IpAddr,
    /// The tunnel and its identifiers.
    pub tunnel: Tunnel,
    /// What the inner packet is.
    pub inner_kind: InnerKind,
    /// The inner packet's range in the decapsulated buffer.
    pub inner: Range<usize>,
}

impl Decapped {
    /// The inner IP packet's version and range in `packet` (the buffer given to [`decap`]),
    /// for delivery to a TUN vNIC: inside the inner Ethernet frame, or the inner packet
    /// itself. The range is trimmed to the IP header's length (dropping Ethernet padding).
    ///
    /// # Errors
    /// `Invalid { layer: Inner, .. }`: an Ethernet frame whose EtherType is not IPv4/IPv6
    /// (VLAN-tagged frames included) is `Unsupported`; an IP header that is short, of
    /// another version than announced, or whose length field passes the frame, is
    /// `Truncated` / `IllegalValue { field: "version" }` / `BadLength`.
    pub fn inner_l3(&self, packet: &[u8]) -> Result<(IpVersion, Range<usize>), TunnelError> {
        let ip = self.inner_ip(packet)?;
        if ip.vlan.is_some() {
            return Err(invalid(Layer::Inner, ParseError::Unsupported));
        }
        Ok((ip.version, ip.range))
    }

    /// [`Self::inner_l3`] for an inner Ethernet frame that may carry one IEEE 802.1Q tag
    /// (TPID 0x8100), which it reports: the IP range leaves the tag out (see "VLAN tags in
    /// the inner frame" in the module doc). An inner IP packet (GRE) has no tag.
    ///
    /// # Errors
    /// As [`Self::inner_l3`], except that one 802.1Q tag is accepted; two tags, an 802.1ad
    /// or 0x9100 TPID, or a non-IP EtherType after the tag are `Unsupported`; a VID of 4095
    /// is `IllegalValue { field: "vid" }`; a frame that ends inside its tag is `Truncated`.
    pub fn inner_ip(&self, packet: &[u8]) -> Result<InnerIp, TunnelError> {
        let Some(inner) = packet.get(self.inner.clone()) else {
            return Err(invalid(Layer::Inner, ParseError::Truncated));
        };
        let at = |version, len, vlan| InnerIp {
            version,
            range: self.inner.start..self.inner.start + len,
            vlan,
        };
        match self.inner_kind {
            InnerKind::Ethernet => {
                let ip = l3_in_tagged_ethernet(inner)?;
                let start = self.inner.start + ip.range.start;
                Ok(InnerIp {
                    range: start..self.inner.start + ip.range.end,
                    ..ip
                })
            }
            InnerKind::Ipv4 => Ok(at(IpVersion::V4, ip_len(inner, IpVersion::V4)?, None)),
            InnerKind::Ipv6 => Ok(at(IpVersion::V6, ip_len(inner, IpVersion::V6)?, None)),
        }
    }
}

/// The IP packet of a decapsulated frame ([`Decapped::inner_ip`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InnerIp {
    /// Its version.
    pub version: IpVersion,
    /// Its range in the buffer, trimmed to its IP length field (no Ethernet header, tag or
    /// padding).
    pub range: Range<usize>,
    /// The inner frame's 802.1Q tag, if it had one (`vid` 0: a priority tag).
    pub vlan: Option<VlanTag>,
}

/// The IP packet inside an untagged Ethernet II frame: its version and its range in `frame`,
/// trimmed to the IP length field.
///
/// # Errors
/// As [`Decapped::inner_l3`].
pub fn l3_in_ethernet(frame: &[u8]) -> Result<(IpVersion, Range<usize>), TunnelError> {
    let ip = l3_in_tagged_ethernet(frame)?;
    if ip.vlan.is_some() {
        return Err(invalid(Layer::Inner, ParseError::Unsupported));
    }
    Ok((ip.version, ip.range))
}

/// The IP packet inside an Ethernet II frame with at most one 802.1Q tag: its version, its
/// range in `frame` (trimmed to the IP length field) and the tag.
///
/// # Errors
/// As [`Decapped::inner_ip`].
pub fn l3_in_tagged_ethernet(frame: &[u8]) -> Result<InnerIp, TunnelError> {
    if frame.len() < ETHERNET_HEADER_LEN {
        return Err(invalid(Layer::Inner, ParseError::Truncated));
    }
    let mut at = 12;
    let mut vlan = None;
    if u16::from_be_bytes([frame[12], frame[13]]) == TPID_8021Q {
        if frame.len() < ETHERNET_HEADER_LEN + VLAN_TAG_LEN {
            return Err(invalid(Layer::Inner, ParseError::Truncated));
        }
        let tag = VlanTag::from_tci(u16::from_be_bytes([frame[14], frame[15]]));
        if tag.vid == 0x0fff {
            return Err(invalid(
                Layer::Inner,
                ParseError::IllegalValue { field: "vid" },
            ));
        }
        vlan = Some(tag);
        at += VLAN_TAG_LEN;
    }
    let version = match u16::from_be_bytes([frame[at], frame[at + 1]]) {
        ETHERTYPE_IPV4 => IpVersion::V4,
        ETHERTYPE_IPV6 => IpVersion::V6,
        // Another tag (QinQ), an 802.1ad S-tag, ARP, ...
        _ => return Err(invalid(Layer::Inner, ParseError::Unsupported)),
    };
    let l3 = at + 2;
    let len = ip_len(&frame[l3..], version)?;
    Ok(InnerIp {
        version,
        range: l3..l3 + len,
        vlan,
    })
}

/// The length an IP header says its packet has, checked against `data` and the expected
/// version.
fn ip_len(data: &[u8], version: IpVersion) -> Result<usize, TunnelError> {
    let (min, nibble) = match version {
        IpVersion::V4 => (IPV4_HEADER_LEN, 4),
        IpVersion::V6 => (IPV6_HEADER_LEN, 6),
    };
    if data.len() < min {
        return Err(invalid(Layer::Inner, ParseError::Truncated));
    }
    if data[0] >> 4 != nibble {
        return Err(invalid(
            Layer::Inner,
            ParseError::IllegalValue { field: "version" },
        ));
    }
    let len = match version {
        IpVersion::V4 => {
            let total = usize::from(u16::from_be_bytes([data[2], data[3]]));
            if total < usize::from(data[0] & 0x0f) * 4 || total < IPV4_HEADER_LEN {
                return Err(invalid(Layer::Inner, ParseError::BadLength));
            }
            total
        }
        IpVersion::V6 => IPV6_HEADER_LEN + usize::from(u16::from_be_bytes([data[4], data[5]])),
    };
    if len > data.len() {
        return Err(invalid(Layer::Inner, ParseError::BadLength));
    }
    Ok(len)
}

/// How [`decap`] checks packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DecapConfig {
    /// The UDP destination port that means VXLAN; default 4789.
    pub vxlan_port: u16,
    /// Verify the outer UDP checksum (when non-zero) and the GRE checksum (when present);
    /// default `true`. Clear it when the NIC has verified them (checksum offload). The outer
    /// IPv4 header checksum is always verified.
    pub verify_checksums: bool,
}

impl Default for DecapConfig {
    fn default() -> Self {
        Self {
            vxlan_port: vxlan::VXLAN_PORT,
            verify_checksums: true,
        }
    }
}

/// The outer IP header, validated.
struct Outer {
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    /// The upper-layer payload (after any extension headers), trimmed to the IP length.
    payload: Range<usize>,
    /// `true` for IPv6.
    v6: bool,
}

/// Validates an outer packet (from its outer IP header) and finds the inner packet; see the
/// module doc for every rule.
///
/// # Errors
/// [`TunnelError::NotTunnel`] for a packet that is not VXLAN (on `cfg.vxlan_port`) or GRE;
/// [`TunnelError::Fragment`] for an outer fragment of a UDP or GRE datagram;
/// [`TunnelError::Invalid`] naming the layer for anything malformed or unsupported.
pub fn decap(packet: &[u8], cfg: &DecapConfig) -> Result<Decapped, TunnelError> {
    let outer = parse_outer(packet)?;
    let payload = &packet[outer.payload.clone()];
    let (tunnel, inner_kind, inner_offset) = match outer.protocol {
        IP_PROTOCOL_UDP => decap_vxlan(packet, &outer, payload, cfg)?,
        gre::IP_PROTOCOL => decap_gre(payload, cfg)?,
        _ => return Err(TunnelError::NotTunnel),
    };
    Ok(Decapped {
        outer_src: outer.src,
        outer_dst: outer.dst,
        tunnel,
        inner_kind,
        inner: outer.payload.start + inner_offset..outer.payload.end,
    })
}

fn decap_vxlan(
    packet: &[u8],
    outer: &Outer,
    udp: &[u8],
    cfg: &DecapConfig,
) -> Result<(Tunnel, InnerKind, usize), TunnelError> {
    if udp.len() < UDP_HEADER_LEN {
        return Err(invalid(Layer::Udp, ParseError::Truncated));
    }
    if u16::from_be_bytes([udp[2], udp[3]]) != cfg.vxlan_port {
        return Err(TunnelError::NotTunnel);
    }
    if usize::from(u16::from_be_bytes([udp[4], udp[5]])) != udp.len() {
        return Err(invalid(Layer::Udp, ParseError::BadLength));
    }
    let udp_checksum = u16::from_be_bytes([udp[6], udp[7]]);
    if udp_checksum == 0 {
        if outer.v6 && !cfg!(fuzzing) {
            return Err(invalid(Layer::Udp, ParseError::BadChecksum));
        }
    } else if cfg.verify_checksums && !cfg!(fuzzing) {
        let ip_header_end = if outer.v6 {
            IPV6_HEADER_LEN
        } else {
            IPV4_HEADER_LEN
        };
        let pseudo = pseudo_header_sum(&packet[..ip_header_end], IP_PROTOCOL_UDP, udp.len());
        if pseudo.add_bytes(udp).checksum() != 0 {
            return Err(invalid(Layer::Udp, ParseError::BadChecksum));
        }
    }
    let tunnel = Tunnel::Vxlan {
        vni: vxlan_vni(&udp[UDP_HEADER_LEN..])?,
        src_port: u16::from_be_bytes([udp[0], udp[1]]),
    };
    Ok((
        tunnel,
        InnerKind::Ethernet,
        UDP_HEADER_LEN + vxlan::HEADER_LEN,
    ))
}

/// The VNI of a VXLAN header (RFC 7348 §5: flags exactly 0x08), checked to be followed by
/// at least an Ethernet header.
fn vxlan_vni(vxlan_bytes: &[u8]) -> Result<u32, TunnelError> {
    let view = vxlan::Packet::new_checked(vxlan_bytes).map_err(|e| invalid(Layer::Vxlan, e))?;
    let repr = vxlan::Repr::parse(&view).map_err(|e| invalid(Layer::Vxlan, e))?;
    if view.payload().len() < ETHERNET_HEADER_LEN {
        return Err(invalid(Layer::Inner, ParseError::Truncated));
    }
    Ok(repr.vni)
}

/// What carried a tunnel payload that arrived without its outer IP header, as a socket
/// hands it over: a UDP socket on the VXLAN port strips the IP and UDP headers, and an IPv6
/// raw socket (`IPPROTO_GRE`) strips the IPv6 header (an IPv4 raw socket keeps it: use
/// [`decap`] there).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PayloadKind {
    /// The payload of a UDP datagram to the VXLAN port: the VXLAN header and the inner frame.
    Vxlan {
        /// The datagram's UDP source port (the sender's flow entropy).
        src_port: u16,
    },
    /// The payload of an IP packet of protocol 47: the GRE header and the inner packet.
    Gre,
}

/// The outer facts a socket reports with a tunnel payload ([`decap_payload`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PayloadMeta {
    /// The outer source address (the remote tunnel endpoint: the datagram's source).
    pub src: IpAddr,
    /// The outer destination address (ours: the address the socket is bound to).
    pub dst: IpAddr,
    /// What the payload is.
    pub kind: PayloadKind,
}

/// [`decap`] for a payload that a socket received without its outer IP (and UDP) header:
/// the same VXLAN and GRE checks, on the tunnel header onward. The kernel has already
/// checked and removed the outer headers — the IP header, the UDP length and checksum (a
/// UDP socket drops a datagram whose checksum is wrong) — and reassembled outer fragments,
/// so those checks are not repeated; the GRE checksum is verified when `cfg` asks. The
/// returned [`Decapped::inner`] is a range in `payload`, and [`Decapped::inner_l3`] works on
/// `payload` as it does on a whole packet.
///
/// # Errors
/// `Invalid { layer: Vxlan | Gre | Inner, .. }` as [`decap`].
pub fn decap_payload(
    payload: &[u8],
    meta: &PayloadMeta,
    cfg: &DecapConfig,
) -> Result<Decapped, TunnelError> {
    let (tunnel, inner_kind, offset) = match meta.kind {
        PayloadKind::Vxlan { src_port } => {
            let vni = vxlan_vni(payload)?;
            (
                Tunnel::Vxlan { vni, src_port },
                InnerKind::Ethernet,
                vxlan::HEADER_LEN,
            )
        }
        PayloadKind::Gre => decap_gre(payload, cfg)?,
    };
    Ok(Decapped {
        outer_src: meta.src,
        outer_dst: meta.dst,
        tunnel,
        inner_kind,
        inner: offset..payload.len(),
    })
}

fn decap_gre(
    gre_bytes: &[u8],
    cfg: &DecapConfig,
) -> Result<(Tunnel, InnerKind, usize), TunnelError> {
    let view = gre::Packet::new_checked(gre_bytes).map_err(|e| invalid(Layer::Gre, e))?;
    let repr = gre::Repr::parse(&view, cfg.verify_checksums).map_err(|e| invalid(Layer::Gre, e))?;
    let inner = view.payload();
    let (kind, nibble) = match repr.protocol_type {
        gre::PROTOCOL_IPV4 => (InnerKind::Ipv4, 4),
        gre::PROTOCOL_IPV6 => (InnerKind::Ipv6, 6),
        gre::PROTOCOL_TEB => {
            if inner.len() < ETHERNET_HEADER_LEN {
                return Err(invalid(Layer::Inner, ParseError::Truncated));
            }
            (InnerKind::Ethernet, 0)
        }
        _ => return Err(invalid(Layer::Gre, ParseError::Unsupported)),
    };
    if kind != InnerKind::Ethernet {
        match inner.first() {
            None => return Err(invalid(Layer::Inner, ParseError::Truncated)),
            Some(byte) if byte >> 4 != nibble => {
                return Err(invalid(
                    Layer::Inner,
                    ParseError::IllegalValue { field: "version" },
                ));
            }
            Some(_) => {}
        }
    }
    let tunnel = Tunnel::Gre {
        key: repr.key,
        seq: repr.seq,
    };
    Ok((tunnel, kind, view.header_len()))
}

fn parse_outer(packet: &[u8]) -> Result<Outer, TunnelError> {
    let Some(first) = packet.first() else {
        return Err(invalid(Layer::OuterIp, ParseError::Truncated));
    };
    match first >> 4 {
        4 => parse_outer_v4(packet),
        6 => parse_outer_v6(packet),
        _ => Err(invalid(
            Layer::OuterIp,
            ParseError::IllegalValue { field: "version" },
        )),
    }
}

fn parse_outer_v4(packet: &[u8]) -> Result<Outer, TunnelError> {
    if packet.len() < IPV4_HEADER_LEN {
        return Err(invalid(Layer::OuterIp, ParseError::Truncated));
    }
    let header_len = usize::from(packet[0] & 0x0f) * 4;
    if header_len < IPV4_HEADER_LEN {
        return Err(invalid(Layer::OuterIp, ParseError::BadLength));
    }
    if packet.len() < header_len {
        return Err(invalid(Layer::OuterIp, ParseError::Truncated));
    }
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    if total < header_len {
        return Err(invalid(Layer::OuterIp, ParseError::BadLength));
    }
    if total > packet.len() {
        return Err(invalid(Layer::OuterIp, ParseError::Truncated));
    }
    if !cfg!(fuzzing) && checksum(&packet[..header_len]) != 0 {
        return Err(invalid(Layer::OuterIp, ParseError::BadChecksum));
    }
    let protocol = packet[9];
    let tunnel_protocol = protocol == IP_PROTOCOL_UDP || protocol == gre::IP_PROTOCOL;
    if u16::from_be_bytes([packet[6], packet[7]]) & IPV4_MF_OFFSET != 0 {
        return Err(if tunnel_protocol {
            TunnelError::Fragment
        } else {
            TunnelError::NotTunnel
        });
    }
    if !tunnel_protocol {
        return Err(TunnelError::NotTunnel);
    }
    let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    Ok(Outer {
        src: IpAddr::V4(src),
        dst: IpAddr::V4(dst),
        protocol,
        payload: header_len..total,
        v6: false,
    })
}

fn parse_outer_v6(packet: &[u8]) -> Result<Outer, TunnelError> {
    if packet.len() < IPV6_HEADER_LEN {
        return Err(invalid(Layer::OuterIp, ParseError::Truncated));
    }
    let end = IPV6_HEADER_LEN + usize::from(u16::from_be_bytes([packet[4], packet[5]]));
    if end > packet.len() {
        return Err(invalid(Layer::OuterIp, ParseError::Truncated));
    }
    let mut next = packet[6];
    let mut offset = IPV6_HEADER_LEN;
    for index in 0..=MAX_IPV6_EXT_HEADERS {
        match next {
            IP_PROTOCOL_UDP | gre::IP_PROTOCOL => {
                let mut src = [0u8; 16];
                let mut dst = [0u8; 16];
                src.copy_from_slice(&packet[8..24]);
                dst.copy_from_slice(&packet[24..40]);
                return Ok(Outer {
                    src: IpAddr::V6(Ipv6Addr::from(src)),
                    dst: IpAddr::V6(Ipv6Addr::from(dst)),
                    protocol: next,
                    payload: offset..end,
                    v6: true,
                });
            }
            _ if index == MAX_IPV6_EXT_HEADERS => break,
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS => {
                if next == IPV6_HOP_BY_HOP && index != 0 {
                    // RFC 8200 §4.3: hop-by-hop only right after the IPv6 header.
                    return Err(invalid(
                        Layer::OuterIp,
                        ParseError::IllegalValue {
                            field: "next_header",
                        },
                    ));
                }
                let Some(ext) = packet.get(offset..end).filter(|ext| ext.len() >= 8) else {
                    return Err(invalid(Layer::OuterIp, ParseError::BadLength));
                };
                let len = (usize::from(ext[1]) + 1) * 8;
                if len > ext.len() {
                    return Err(invalid(Layer::OuterIp, ParseError::BadLength));
                }
                if next == IPV6_ROUTING && ext[3] != 0 {
                    // Segments left: not yet at the final destination.
                    return Err(invalid(Layer::OuterIp, ParseError::Unsupported));
                }
                next = ext[0];
                offset += len;
            }
            IPV6_FRAGMENT => {
                let Some(ext) = packet.get(offset..end).filter(|ext| ext.len() >= 8) else {
                    return Err(invalid(Layer::OuterIp, ParseError::BadLength));
                };
                let inner_next = ext[0];
                // Offset (13 bits) and M: both zero is an atomic fragment (RFC 6946).
                if u16::from_be_bytes([ext[2], ext[3]]) & 0xfff9 != 0 {
                    return Err(
                        if inner_next == IP_PROTOCOL_UDP || inner_next == gre::IP_PROTOCOL {
                            TunnelError::Fragment
                        } else {
                            TunnelError::NotTunnel
                        },
                    );
                }
                next = inner_next;
                offset += 8;
            }
            _ => return Err(TunnelError::NotTunnel),
        }
    }
    Err(invalid(Layer::OuterIp, ParseError::Unsupported))
}

/// The RFC 2890 §2.2 receive check of one GRE tunnel's sequence numbers.
///
/// A packet is in order if its sequence number is after the last accepted one in serial
/// number arithmetic (RFC 1982, 32 bits: `0 < seq − last < 2^31`, wrapping); anything else —
/// a duplicate, an older packet, one exactly 2^31 ahead (undefined in RFC 1982) — is out of
/// order and the caller drops it and counts it. The first packet is accepted. RFC 2890 also
/// allows buffering out-of-order packets for a while; braid does not (its own reorder stage
/// works on braid sequence numbers, not GRE's).
///
/// A peer that restarts its sequence from 0 would otherwise see everything dropped until it
/// passes the old value, so `resync_after` (0 = never) accepts a packet after that many
/// consecutive out-of-order drops, and takes it as the new base ([`SeqVerdict::Resync`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct GreSeqCheck {
    last: Option<u32>,
    resync_after: u32,
    rejected_run: u32,
}

/// What [`GreSeqCheck::check`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SeqVerdict {
    /// In order (or the first packet): deliver.
    InOrder,
    /// Out of order or a duplicate: drop and count.
    OutOfOrder,
    /// Out of order, but after `resync_after` consecutive drops: taken as the new base;
    /// deliver, and count the resync.
    Resync,
}

impl SeqVerdict {
    /// `true` if the packet is to be delivered.
    pub const fn is_accepted(self) -> bool {
        !matches!(self, Self::OutOfOrder)
    }
}

impl GreSeqCheck {
    /// A check with no packet seen; `resync_after` consecutive drops (0 = never) resync it.
    pub const fn new(resync_after: u32) -> Self {
        Self {
            last: None,
            resync_after,
            rejected_run: 0,
        }
    }

    /// The last accepted sequence number.
    pub const fn last(&self) -> Option<u32> {
        self.last
    }

    /// Forgets the last sequence number (the next packet is accepted).
    pub const fn reset(&mut self) {
        self.last = None;
        self.rejected_run = 0;
    }

    /// Checks one received sequence number and, if accepted, records it.
    pub const fn check(&mut self, seq: u32) -> SeqVerdict {
        let in_order = match self.last {
            None => true,
            Some(last) => {
                let ahead = seq.wrapping_sub(last);
                ahead != 0 && ahead < 1 << 31
            }
        };
        if in_order {
            self.last = Some(seq);
            self.rejected_run = 0;
            return SeqVerdict::InOrder;
        }
        if self.resync_after != 0 && self.rejected_run >= self.resync_after {
            self.last = Some(seq);
            self.rejected_run = 0;
            return SeqVerdict::Resync;
        }
        self.rejected_run = self.rejected_run.saturating_add(1);
        SeqVerdict::OutOfOrder
    }
}

#[cfg(test)]
mod tests;
