//! In-place header edits with incremental checksum updates: the actions of braid's rule
//! engine that change bytes of a packet without changing its length (DSCP, ECN, TTL / hop
//! limit, addresses, ports) and the two that do (VLAN push and pop).
//!
//! Owns [`IpPacket`] (an L3 packet parsed once, edited many times), [`Edit`] (one action,
//! as a rule compiles it), [`apply_l3`] / [`apply_frame`] (a compiled list on one packet or
//! frame, all or nothing), [`vlan_push`] / [`vlan_pop`], and [`RewriteError`]. It does not
//! own matching, rules or per-flow state (braid-core's rule engine), the checksum arithmetic
//! ([`crate::checksum`]), tunnels (`vxlan`, `gre`, `tunnel`), nor fragmentation.
//!
//! # Checksums
//!
//! Every edit keeps every checksum right by RFC 1624 Eqn. 3 (see [`crate::checksum`]), so
//! its cost does not depend on the packet's length, and a checksum that was wrong before
//! stays wrong by the same amount (a corrupted packet is not laundered). Input checksums
//! are not verified and must be complete: braid-io completes the kernel's partial
//! (offloaded) checksums before the engine sees a packet.
//!
//! - **IPv4 header checksum** (RFC 791): patched for DSCP/ECN (the TOS byte shares a word
//!   with version/IHL), TTL (shares a word with the protocol) and addresses. IPv6 has none.
//! - **TCP, UDP, UDP-Lite, DCCP** (RFC 9293 §3.1, RFC 768, RFC 3828, RFC 4340 §9): their
//!   checksum covers a pseudo-header with both addresses (RFC 8200 §8.1 for IPv6), so an
//!   address edit patches it as well as a port edit does. **ICMPv6** (RFC 4443 §2.3) has the
//!   pseudo-header too; **ICMPv4** (RFC 792) does not, and its checksum is left alone.
//!   Checksums of other protocols are not known here and are left alone: an address edit on
//!   such a packet changes only the IP header (what Linux NAT does for unknown protocols).
//! - **UDP's zero** (RFC 768): a UDP checksum of 0 means "none" and stays 0 — over IPv4 as
//!   RFC 768 allows, and over IPv6 too, where RFC 6935/6936 allow it for tunnels (a receiver
//!   that does not accept it drops the packet with or without the edit). A non-zero UDP or
//!   UDP-Lite checksum that computes to 0 is stored as `0xFFFF` (RFC 768, RFC 3828 §3.1).
//!
//! # Fragments
//!
//! Only the first fragment of a datagram carries the L4 header, and its L4 checksum covers
//! the whole datagram.
//!
//! - **Address edits on fragments are correct**: every fragment gets its IP header patched;
//!   the first one also gets its L4 checksum patched incrementally, which is exact although
//!   the rest of the datagram is elsewhere (Eqn. 3 needs only the changed words). Later
//!   fragments have no L4 header to patch. The reassembled datagram is right provided every
//!   fragment gets the same edit, which holds when rules key fragments on addresses only (as
//!   [`crate::IpSummary`] does). A first fragment too short to hold the L4 checksum field
//!   (a "tiny fragment", RFC 1858) is refused with [`RewriteError::Fragment`].
//! - **Port edits on any fragment are refused** ([`RewriteError::Fragment`]): the ports are
//!   in the first fragment only, and a stateless per-packet edit cannot know that the
//!   datagram's other fragments took the same rule (a rule keyed on ports never matches a
//!   fragment, whose ports classify as 0). To rewrite ports of fragmented traffic, reassemble
//!   it first, edit the whole datagram, and fragment it again, as Linux conntrack does.
//!
//! # Refused on purpose
//!
//! - Address or port edits on a packet with an Authentication Header (RFC 4302): the ICV
//!   covers the addresses and the L4 header, and no edit can keep it right (RFC 3715 §2.1).
//!   DSCP, ECN and TTL are mutable fields the ICV excludes, so those edits are allowed.
//! - A destination edit on a source-routed packet (IPv4 LSRR/SSRR option, RFC 791; an IPv6
//!   routing header with segments left, RFC 8200 §4.4): the L4 pseudo-header then holds the
//!   *final* destination, not the IP destination field, so the edit's meaning is unclear.
//! - Ports of ICMP and of unknown protocols; ICMP error payloads (the embedded header,
//!   RFC 5508 §4.2) are not rewritten.
//! - An IPv4 TTL / IPv6 hop limit at 0 or 1 on [`Edit::DecrementTtl`]: a router discards
//!   such a packet (RFC 1812 §5.3.1, RFC 8200 §3), [`RewriteError::TtlExpired`].
//!
//! # Parsing
//!
//! [`IpPacket::new`] checks the IP header strictly (version, IHL, the length field against
//! the buffer; bytes past the IP length, such as Ethernet padding, are ignored) and walks
//! IPv6 extension headers by hand (RFC 8200 §4, at most [`MAX_IPV6_EXT_HEADERS`], as
//! [`crate::ip`] does). A malformed L4 part (an extension header chain that does not fit, a
//! TCP header shorter than 20 bytes) fails only the edits that need it: DSCP, ECN and TTL
//! edits work on any packet with a valid IP header. No byte sequence makes any function
//! here panic; the property tests feed random bytes.
//!
//! # The engine's call
//!
//! A rule compiles to a slice of [`Edit`]s (`Copy`, no heap). [`apply_l3`] (TUN) and
//! [`apply_frame`] (TAP) parse once, check every edit, and only then write, so on an error
//! the packet is untouched and the engine drops it with the error's reason. Nothing here
//! allocates.
//!
//! Cost, whatever the packet's length (callgrind, release build): a NAT rewrite
//! (destination address and port) through [`apply_l3`] is about 440 instructions for
//! IPv4/TCP and 460 for IPv6/UDP, parse included; DSCP + TTL about 330. Recomputing only
//! the TCP checksum of a 1500-byte packet from scratch is about 800
//! (`benches/rewrite.rs` has the timings).

use core::fmt;
use core::net::IpAddr;

use etherparse::ip_number;

use crate::checksum::{update_u16, update_u32, update_u128};
use crate::ip::{MAX_IPV6_EXT_HEADERS, MAX_VLAN_TAGS};

/// Why an edit was refused. The packet is unchanged when a function returns one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RewriteError {
    /// The buffer ends before a header the edit needs (or before the IP length field's end).
    Truncated,
    /// A length field is inconsistent: IHL below 5, an IPv4 total length below the header,
    /// an extension header or L4 header that does not fit in the IP payload, or a frame
    /// length larger than its buffer.
    BadLength,
    /// A packet or an edit this module does not handle: not IPv4/IPv6 (or a non-IP
    /// EtherType, or more than [`MAX_VLAN_TAGS`] tags), too many extension headers, an
    /// Authentication Header, a source-routed destination, ports on a protocol without
    /// them, a VLAN edit on an L3 packet.
    Unsupported,
    /// A port edit on a fragment, or an address edit on a first fragment too short to hold
    /// the L4 checksum (see the module doc).
    Fragment,
    /// An IPv4 address for an IPv6 packet, or the reverse.
    AddressFamily,
    /// A value out of its field's range: DSCP > 63, ECN > 3, PCP > 7, VID > 4094; or a
    /// hop-by-hop header that is not the first extension header (RFC 8200 §4.1).
    IllegalValue,
    /// A TTL / hop limit decrement on a packet whose TTL is 0 or 1.
    TtlExpired,
    /// The frame buffer has no room for a VLAN tag.
    NoRoom,
    /// A VLAN pop on an untagged frame.
    NotTagged,
}

impl fmt::Display for RewriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Truncated => "truncated packet",
            Self::BadLength => "inconsistent length",
            Self::Unsupported => "unsupported packet or edit",
            Self::Fragment => "edit impossible on a fragment",
            Self::AddressFamily => "address family differs from the packet's",
            Self::IllegalValue => "value out of range",
            Self::TtlExpired => "ttl expired",
            Self::NoRoom => "no room in the frame buffer",
            Self::NotTagged => "frame has no vlan tag",
        })
    }
}

impl core::error::Error for RewriteError {}

/// An 802.1Q tag to push: priority code point, drop eligible indicator, VLAN id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VlanTag {
    /// Priority code point (IEEE 802.1p), 0..=7.
    pub pcp: u8,
    /// Drop eligible indicator.
    pub dei: bool,
    /// VLAN identifier, 0..=4094 (0 is a priority tag; 4095 is reserved by 802.1Q).
    pub vid: u16,
}

impl VlanTag {
    /// The tag control information (PCP, DEI, VID) as it goes on the wire.
    ///
    /// # Errors
    /// [`RewriteError::IllegalValue`] if PCP > 7 or VID > 4094.
    pub const fn tci(self) -> Result<u16, RewriteError> {
        if self.pcp > 7 || self.vid > 4094 {
            return Err(RewriteError::IllegalValue);
        }
        Ok(((self.pcp as u16) << 13) | ((self.dei as u16) << 12) | self.vid)
    }

    /// The tag whose tag control information is `tci` (as read from a frame): PCP from the
    /// top 3 bits, DEI from bit 12, the VLAN id from the low 12 bits. A VID of 4095 (reserved
    /// by 802.1Q) is kept as it is: [`Self::tci`] refuses it.
    #[must_use]
    pub const fn from_tci(tci: u16) -> Self {
        Self {
            pcp: (tci >> 13) as u8,
            dei: tci & 0x1000 != 0,
            vid: tci & 0x0fff,
        }
    }
}

/// One header edit: a rule's action, compiled. `Copy` and heap-free, so a rule holds a
/// `[Edit; N]` or a slice and the engine applies it with [`apply_l3`] / [`apply_frame`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Edit {
    /// Set the DSCP (RFC 2474), 0..=63; the ECN bits are kept.
    SetDscp(u8),
    /// Set the ECN field (RFC 3168), 0..=3; the DSCP is kept.
    SetEcn(u8),
    /// Set the IPv4 TTL / IPv6 hop limit.
    SetTtl(u8),
    /// Decrement the TTL / hop limit, refusing at 0 or 1 ([`RewriteError::TtlExpired`]).
    DecrementTtl,
    /// Rewrite the source address (same family as the packet).
    SetSrcAddr(IpAddr),
    /// Rewrite the destination address (same family as the packet).
    SetDstAddr(IpAddr),
    /// Rewrite the TCP/UDP/UDP-Lite/DCCP source port.
    SetSrcPort(u16),
    /// Rewrite the TCP/UDP/UDP-Lite/DCCP destination port.
    SetDstPort(u16),
    /// Push an 802.1Q tag (TPID 0x8100) as the outermost tag; frames only.
    PushVlan(VlanTag),
    /// Remove the outermost VLAN tag (TPID 0x8100, 0x88a8 or 0x9100); frames only.
    PopVlan,
}

impl Edit {
    /// `true` for the edits that change an Ethernet frame's L2 header (VLAN push/pop).
    #[must_use]
    pub const fn is_l2(&self) -> bool {
        matches!(self, Self::PushVlan(_) | Self::PopVlan)
    }
}

const IPV4_MIN_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
const IPV4_MF: u16 = 0x2000;
const IPV4_OFFSET_MASK: u16 = 0x1fff;
/// IPv4 options that make the pseudo-header's destination the route's last address.
const IPV4_OPT_LSRR: u8 = 0x83;
const IPV4_OPT_SSRR: u8 = 0x89;

/// Where the L4 header is, as far as the parse could tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    /// The L4 header of `protocol` starts at `offset` (it may still be too short).
    Header { offset: usize, protocol: u8 },
    /// This packet carries no L4 header: a later fragment.
    Absent,
    /// The header chain before it is malformed; edits that need the L4 header fail so.
    Invalid(RewriteError),
}

/// How a protocol's checksum treats 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Zero {
    /// TCP, DCCP, ICMPv6: 0 is an ordinary value.
    Plain,
    /// UDP: 0 means "no checksum" and stays 0; a computed 0 is stored as 0xFFFF.
    UdpOptional,
    /// UDP-Lite: always checksummed; a computed 0 is stored as 0xFFFF.
    Mandatory,
}

/// The L4 checksum field an edit must patch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct L4Checksum {
    /// Absolute offset of the 16-bit checksum field.
    at: usize,
    zero: Zero,
}

/// Where a port edit writes: the L4 header (source port, then destination port) and its
/// checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ports {
    /// Absolute offset of the source port.
    at: usize,
    checksum: L4Checksum,
}

/// An IPv4 or IPv6 packet (as a TUN device gives it), parsed once for editing.
///
/// Build it with [`IpPacket::new`], then call the edit methods (each patches every checksum
/// it affects and returns a [`RewriteError`] without touching the packet on refusal), or
/// [`IpPacket::apply_all`] for a compiled list. The parse decides once what an address or a
/// port edit must patch (or why it cannot), so each edit costs a few loads and stores.
#[derive(Debug)]
pub struct IpPacket<'a> {
    /// Exactly the IP packet: the buffer cut at the IP length field.
    buf: &'a mut [u8],
    is_v6: bool,
    /// Bytes of the IPv4 header (IHL × 4); 40 for IPv6.
    header_len: usize,
    is_fragment: bool,
    /// What an address edit patches in the L4 header (`None`: nothing), or why it cannot.
    addr_l4: Result<Option<L4Checksum>, RewriteError>,
    /// Where a port edit writes, or why it cannot.
    ports: Result<Ports, RewriteError>,
    /// An IPv6 routing header with segments left > 0 was seen.
    source_routed_v6: bool,
}

impl<'a> IpPacket<'a> {
    /// Parses the IP header (and finds the L4 header) of `packet`, which starts with an
    /// IPv4 or IPv6 header.
    ///
    /// # Errors
    /// [`RewriteError::Truncated`] if the buffer is shorter than the header or the IP
    /// length; [`RewriteError::BadLength`] for an IHL below 5 or a total length below the
    /// header; [`RewriteError::Unsupported`] for another IP version. Problems past the IP
    /// header are reported by the edits that need the L4 header.
    pub fn new(packet: &'a mut [u8]) -> Result<Self, RewriteError> {
        let first = *packet.first().ok_or(RewriteError::Truncated)?;
        match first >> 4 {
            4 => Self::new_v4(packet),
            6 => Self::new_v6(packet),
            _ => Err(RewriteError::Unsupported),
        }
    }

    fn new_v4(packet: &'a mut [u8]) -> Result<Self, RewriteError> {
        if packet.len() < IPV4_MIN_HEADER_LEN {
            return Err(RewriteError::Truncated);
        }
        let header_len = usize::from(packet[0] & 0x0f) * 4;
        if header_len < IPV4_MIN_HEADER_LEN {
            return Err(RewriteError::BadLength);
        }
        if header_len > packet.len() {
            return Err(RewriteError::Truncated);
        }
        let total_len = usize::from(read_u16(packet, 2));
        if total_len < header_len {
            return Err(RewriteError::BadLength);
        }
        let buf = packet.get_mut(..total_len).ok_or(RewriteError::Truncated)?;
        let frag = read_u16(buf, 6);
        let offset = frag & IPV4_OFFSET_MASK;
        let is_fragment = offset != 0 || frag & IPV4_MF != 0;
        let mut has_ah = false;
        let transport = if offset != 0 {
            Transport::Absent
        } else if buf[9] == ip_number::AUTH.0 {
            has_ah = true;
            // RFC 4302 §2.2: the AH's length is in 32-bit words, minus 2.
            match buf.get(header_len..header_len + 2) {
                Some(&[next, len]) if len > 0 => Transport::Header {
                    offset: header_len + (usize::from(len) + 2) * 4,
                    protocol: next,
                },
                _ => Transport::Invalid(short(is_fragment)),
            }
        } else {
            Transport::Header {
                offset: header_len,
                protocol: buf[9],
            }
        };
        let (addr_l4, ports) = l4_targets(transport, has_ah, is_fragment, false, buf.len());
        Ok(Self {
            buf,
            is_v6: false,
            header_len,
            is_fragment,
            addr_l4,
            ports,
            source_routed_v6: false,
        })
    }

    fn new_v6(packet: &'a mut [u8]) -> Result<Self, RewriteError> {
        if packet.len() < IPV6_HEADER_LEN {
            return Err(RewriteError::Truncated);
        }
        let payload_len = usize::from(read_u16(packet, 4));
        let mut next = packet[6];
        let buf = if payload_len == 0 && next == ip_number::IPV6_HOP_BY_HOP.0 {
            // A jumbogram (RFC 2675): its length is in a hop-by-hop option; the buffer's
            // end is the packet's end, as crate::ip reads it.
            packet
        } else {
            packet
                .get_mut(..IPV6_HEADER_LEN + payload_len)
                .ok_or(RewriteError::Truncated)?
        };
        let end = buf.len();
        let mut at = IPV6_HEADER_LEN;
        let mut is_fragment = false;
        let mut has_ah = false;
        let mut source_routed_v6 = false;
        let mut walked = 0;
        let transport = loop {
            let ext = IpNumberKind::of(next);
            if ext == IpNumberKind::Upper {
                break Transport::Header {
                    offset: at,
                    protocol: next,
                };
            }
            if walked == MAX_IPV6_EXT_HEADERS {
                break Transport::Invalid(RewriteError::Unsupported);
            }
            if next == ip_number::IPV6_HOP_BY_HOP.0 && walked > 0 {
                break Transport::Invalid(RewriteError::IllegalValue);
            }
            walked += 1;
            // Every extension header starts with next header and a length byte.
            let Some(&[header_next, len]) = buf.get(at..at + 2) else {
                break Transport::Invalid(short(is_fragment));
            };
            let header_len = match ext {
                IpNumberKind::Fragment => 8,
                IpNumberKind::Auth => (usize::from(len) + 2) * 4,
                _ => (usize::from(len) + 1) * 8,
            };
            if at + header_len > end || (ext == IpNumberKind::Auth && len == 0) {
                break Transport::Invalid(short(is_fragment));
            }
            match ext {
                IpNumberKind::Fragment => {
                    let field = read_u16(buf, at + 2);
                    let offset = field >> 3;
                    // An atomic fragment (offset 0, M = 0; RFC 6946) is a whole packet.
                    if offset != 0 || field & 1 != 0 {
                        is_fragment = true;
                    }
                    if offset != 0 {
                        // A later fragment: what follows is the middle of the datagram.
                        break Transport::Absent;
                    }
                }
                IpNumberKind::Auth => has_ah = true,
                IpNumberKind::Routing => source_routed_v6 |= buf[at + 3] != 0,
                IpNumberKind::Other | IpNumberKind::Upper => {}
            }
            next = header_next;
            at += header_len;
        };
        let (addr_l4, ports) = l4_targets(transport, has_ah, is_fragment, true, end);
        Ok(Self {
            buf,
            is_v6: true,
            header_len: IPV6_HEADER_LEN,
            is_fragment,
            addr_l4,
            ports,
            source_routed_v6,
        })
    }

    /// `true` for an IPv6 packet, `false` for IPv4.
    #[must_use]
    pub const fn is_ipv6(&self) -> bool {
        self.is_v6
    }

    /// `true` for any fragment of a datagram (IPv4 MF or offset ≠ 0; an IPv6 fragment header
    /// with M or offset ≠ 0).
    #[must_use]
    pub const fn is_fragment(&self) -> bool {
        self.is_fragment
    }

    /// The IP packet's length in bytes, as its length field says.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.buf.len()
    }

    /// Always `false`: a parsed packet has at least its IP header (clippy's `len` pairing).
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The IPv4 TTL / IPv6 hop limit.
    #[must_use]
    pub fn ttl(&self) -> u8 {
        self.buf[if self.is_v6 { 7 } else { 8 }]
    }

    /// The DSCP / ECN byte: IPv4's TOS, IPv6's traffic class.
    #[must_use]
    pub fn traffic_class(&self) -> u8 {
        if self.is_v6 {
            (self.buf[0] << 4) | (self.buf[1] >> 4)
        } else {
            self.buf[1]
        }
    }

    /// The packet's bytes (the IP packet only, without any trailing padding).
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        self.buf
    }

    /// Sets the DSCP (RFC 2474), keeping the ECN bits.
    ///
    /// # Errors
    /// [`RewriteError::IllegalValue`] if `dscp` > 63.
    pub fn set_dscp(&mut self, dscp: u8) -> Result<(), RewriteError> {
        self.apply(&Edit::SetDscp(dscp))
    }

    /// Sets the ECN field (RFC 3168), keeping the DSCP.
    ///
    /// # Errors
    /// [`RewriteError::IllegalValue`] if `ecn` > 3.
    pub fn set_ecn(&mut self, ecn: u8) -> Result<(), RewriteError> {
        self.apply(&Edit::SetEcn(ecn))
    }

    /// Sets the IPv4 TTL / IPv6 hop limit.
    pub fn set_ttl(&mut self, ttl: u8) {
        self.write(&Edit::SetTtl(ttl));
    }

    /// Decrements the TTL / hop limit, as a router forwarding the packet does.
    ///
    /// # Errors
    /// [`RewriteError::TtlExpired`] if it is 0 or 1: a router discards the packet (RFC 1812
    /// §5.3.1, RFC 8200 §3) and the caller may send ICMP Time Exceeded.
    pub fn decrement_ttl(&mut self) -> Result<(), RewriteError> {
        self.apply(&Edit::DecrementTtl)
    }

    /// Rewrites the source address, patching the IPv4 header checksum and the L4 checksum's
    /// pseudo-header (TCP, UDP, UDP-Lite, DCCP, ICMPv6).
    ///
    /// # Errors
    /// [`RewriteError::AddressFamily`]; [`RewriteError::Unsupported`] with an AH;
    /// [`RewriteError::Fragment`] on a first fragment too short for the L4 checksum;
    /// [`RewriteError::BadLength`] (or another parse error) if the L4 header is malformed.
    pub fn set_src_addr(&mut self, addr: IpAddr) -> Result<(), RewriteError> {
        self.apply(&Edit::SetSrcAddr(addr))
    }

    /// Rewrites the destination address, as [`IpPacket::set_src_addr`] does.
    ///
    /// # Errors
    /// As [`IpPacket::set_src_addr`], plus [`RewriteError::Unsupported`] for a source-routed
    /// packet and [`RewriteError::BadLength`] for malformed IPv4 options (see the module doc).
    pub fn set_dst_addr(&mut self, addr: IpAddr) -> Result<(), RewriteError> {
        self.apply(&Edit::SetDstAddr(addr))
    }

    /// Rewrites the TCP/UDP/UDP-Lite/DCCP source port, patching the L4 checksum.
    ///
    /// # Errors
    /// [`RewriteError::Fragment`] on any fragment; [`RewriteError::Unsupported`] for another
    /// protocol or an AH; [`RewriteError::BadLength`] if the L4 header does not fit.
    pub fn set_src_port(&mut self, port: u16) -> Result<(), RewriteError> {
        self.apply(&Edit::SetSrcPort(port))
    }

    /// Rewrites the TCP/UDP/UDP-Lite/DCCP destination port, as [`IpPacket::set_src_port`].
    ///
    /// # Errors
    /// As [`IpPacket::set_src_port`].
    pub fn set_dst_port(&mut self, port: u16) -> Result<(), RewriteError> {
        self.apply(&Edit::SetDstPort(port))
    }

    /// Checks that `edit` would succeed on this packet, without changing it.
    ///
    /// # Errors
    /// The error the edit would return. A VLAN edit is [`RewriteError::Unsupported`] here.
    pub fn check(&self, edit: &Edit) -> Result<(), RewriteError> {
        match *edit {
            Edit::SetDscp(dscp) if dscp > 63 => Err(RewriteError::IllegalValue),
            Edit::SetEcn(ecn) if ecn > 3 => Err(RewriteError::IllegalValue),
            Edit::SetDscp(_) | Edit::SetEcn(_) | Edit::SetTtl(_) => Ok(()),
            Edit::DecrementTtl if self.ttl() <= 1 => Err(RewriteError::TtlExpired),
            Edit::DecrementTtl => Ok(()),
            Edit::SetSrcAddr(addr) => self.check_addr(addr, false),
            Edit::SetDstAddr(addr) => self.check_addr(addr, true),
            Edit::SetSrcPort(_) | Edit::SetDstPort(_) => self.ports.map(drop),
            Edit::PushVlan(_) | Edit::PopVlan => Err(RewriteError::Unsupported),
        }
    }

    /// Applies one edit: [`IpPacket::check`], then the write.
    ///
    /// # Errors
    /// As [`IpPacket::check`]; the packet is unchanged on error.
    pub fn apply(&mut self, edit: &Edit) -> Result<(), RewriteError> {
        self.check(edit)?;
        self.write(edit);
        Ok(())
    }

    /// Applies `edits` in order, all or nothing: every edit is checked first (following the
    /// TTL through [`Edit::SetTtl`] and [`Edit::DecrementTtl`]), then all are written. VLAN
    /// edits are skipped (they are [`apply_frame`]'s).
    ///
    /// # Errors
    /// The first edit's error, with the packet unchanged.
    pub fn apply_all(&mut self, edits: &[Edit]) -> Result<(), RewriteError> {
        let mut ttl = self.ttl();
        for edit in edits {
            match *edit {
                Edit::PushVlan(_) | Edit::PopVlan => {}
                Edit::SetTtl(value) => ttl = value,
                Edit::DecrementTtl if ttl <= 1 => return Err(RewriteError::TtlExpired),
                Edit::DecrementTtl => ttl -= 1,
                _ => self.check(edit)?,
            }
        }
        for edit in edits {
            self.write(edit);
        }
        Ok(())
    }

    /// Validates an address edit (the L4 part was decided by the parse).
    fn check_addr(&self, addr: IpAddr, is_dst: bool) -> Result<(), RewriteError> {
        if addr.is_ipv6() != self.is_v6 {
            return Err(RewriteError::AddressFamily);
        }
        self.addr_l4?;
        if is_dst && (self.source_routed_v6 || self.ipv4_source_routed()?) {
            return Err(RewriteError::Unsupported);
        }
        Ok(())
    }

    /// `true` if an IPv4 header's options hold a loose or strict source route.
    fn ipv4_source_routed(&self) -> Result<bool, RewriteError> {
        if self.is_v6 {
            return Ok(false);
        }
        let options = &self.buf[IPV4_MIN_HEADER_LEN..self.header_len];
        let mut at = 0;
        // Each step advances by at least one byte: at most 40 steps.
        while let Some(&kind) = options.get(at) {
            match kind {
                0 => break,
                1 => at += 1,
                _ => {
                    let len = usize::from(*options.get(at + 1).ok_or(RewriteError::BadLength)?);
                    if len < 2 || at + len > options.len() {
                        return Err(RewriteError::BadLength);
                    }
                    if kind == IPV4_OPT_LSRR || kind == IPV4_OPT_SSRR {
                        return Ok(true);
                    }
                    at += len;
                }
            }
        }
        Ok(false)
    }

    /// Writes a checked edit. An edit that [`IpPacket::check`] refuses must not come here:
    /// it would be written (values are masked to their fields, nothing panics) or skipped
    /// (an L4 part the parse found unusable).
    fn write(&mut self, edit: &Edit) {
        match *edit {
            Edit::SetDscp(dscp) => {
                let tc = (dscp << 2) | (self.traffic_class() & 0x03);
                self.write_traffic_class(tc);
            }
            Edit::SetEcn(ecn) => {
                let tc = (self.traffic_class() & 0xfc) | (ecn & 0x03);
                self.write_traffic_class(tc);
            }
            Edit::SetTtl(ttl) => self.write_ttl(ttl),
            Edit::DecrementTtl => self.write_ttl(self.ttl().saturating_sub(1)),
            Edit::SetSrcAddr(addr) => self.write_addr(if self.is_v6 { 8 } else { 12 }, addr),
            Edit::SetDstAddr(addr) => self.write_addr(if self.is_v6 { 24 } else { 16 }, addr),
            Edit::SetSrcPort(port) => self.write_port(0, port),
            Edit::SetDstPort(port) => self.write_port(2, port),
            Edit::PushVlan(_) | Edit::PopVlan => {}
        }
    }

    fn write_traffic_class(&mut self, tc: u8) {
        if self.is_v6 {
            // Version (4 bits), traffic class (8), flow label (20): no checksum.
            self.buf[0] = (self.buf[0] & 0xf0) | (tc >> 4);
            self.buf[1] = (tc << 4) | (self.buf[1] & 0x0f);
        } else {
            // The TOS byte is the low half of the header's first word. The new word is
            // computed, not read back: a 2-byte load right after a 1-byte store to it would
            // stall on store forwarding.
            let old = read_u16(self.buf, 0);
            let new = (old & 0xff00) | u16::from(tc);
            write_u16(self.buf, 0, new);
            self.patch_ipv4_header(old, new);
        }
    }

    fn write_ttl(&mut self, ttl: u8) {
        if self.is_v6 {
            self.buf[7] = ttl;
        } else {
            // The TTL is the high half of the word it shares with the protocol.
            let old = read_u16(self.buf, 8);
            let new = (u16::from(ttl) << 8) | (old & 0x00ff);
            write_u16(self.buf, 8, new);
            self.patch_ipv4_header(old, new);
        }
    }

    /// Patches the IPv4 header checksum after the header word at `old` became `new`.
    fn patch_ipv4_header(&mut self, old: u16, new: u16) {
        let hc = read_u16(self.buf, 10);
        write_u16(self.buf, 10, update_u16(hc, old, new));
    }

    /// Patches an L4 checksum with `update`, honouring the protocol's zero rule.
    fn patch_l4(&mut self, l4: L4Checksum, update: impl FnOnce(u16) -> u16) {
        let old = read_u16(self.buf, l4.at);
        if l4.zero == Zero::UdpOptional && old == 0 {
            return;
        }
        let mut new = update(old);
        if new == 0 && l4.zero != Zero::Plain {
            new = 0xffff;
        }
        write_u16(self.buf, l4.at, new);
    }

    /// Writes an address at `at` and patches the checksums that cover it.
    fn write_addr(&mut self, at: usize, addr: IpAddr) {
        let l4 = self.addr_l4.ok().flatten();
        match addr {
            IpAddr::V4(addr) if !self.is_v6 => {
                let old = read_u32(self.buf, at);
                let new = u32::from(addr);
                self.buf[at..at + 4].copy_from_slice(&addr.octets());
                let hc = read_u16(self.buf, 10);
                write_u16(self.buf, 10, update_u32(hc, old, new));
                if let Some(l4) = l4 {
                    self.patch_l4(l4, |sum| update_u32(sum, old, new));
                }
            }
            IpAddr::V6(addr) if self.is_v6 => {
                let mut old = [0u8; 16];
                old.copy_from_slice(&self.buf[at..at + 16]);
                let new = addr.octets();
                self.buf[at..at + 16].copy_from_slice(&new);
                if let Some(l4) = l4 {
                    self.patch_l4(l4, |sum| update_u128(sum, old, new));
                }
            }
            // Another family: refused by check_addr.
            IpAddr::V4(_) | IpAddr::V6(_) => {}
        }
    }

    /// Writes the port at `offset` (0: source, 2: destination) and patches the checksum.
    fn write_port(&mut self, offset: usize, port: u16) {
        let Ok(ports) = self.ports else {
            return; // refused by check
        };
        let at = ports.at + offset;
        let old = read_u16(self.buf, at);
        write_u16(self.buf, at, port);
        self.patch_l4(ports.checksum, |sum| update_u16(sum, old, port));
    }
}

/// Decides, from where the parse found the L4 header, what an address edit patches and where
/// a port edit writes (or why each cannot), for a packet of `len` bytes.
fn l4_targets(
    transport: Transport,
    has_ah: bool,
    is_fragment: bool,
    is_v6: bool,
    len: usize,
) -> (
    Result<Option<L4Checksum>, RewriteError>,
    Result<Ports, RewriteError>,
) {
    if has_ah {
        // The ICV covers addresses and the L4 header (module doc).
        return (
            Err(RewriteError::Unsupported),
            Err(RewriteError::Unsupported),
        );
    }
    let (offset, protocol) = match transport {
        // A later fragment: addresses are L3 only; ports are not here.
        Transport::Absent => return (Ok(None), Err(RewriteError::Fragment)),
        Transport::Invalid(err) => return (Err(err), Err(err)),
        Transport::Header { offset, protocol } => (offset, protocol),
    };
    let Some((field, min_len, zero)) = l4_checksum_field(protocol, is_v6) else {
        // No pseudo-header checksum known: addresses are L3 only; no ports to edit.
        return (Ok(None), Err(RewriteError::Unsupported));
    };
    let checksum = L4Checksum {
        at: offset + field,
        zero,
    };
    let whole_header = offset + min_len <= len;
    let addr_l4 = if is_fragment {
        // A first fragment holds the datagram's first bytes only: need the field itself.
        if checksum.at + 2 <= len {
            Ok(Some(checksum))
        } else {
            Err(RewriteError::Fragment)
        }
    } else if whole_header {
        Ok(Some(checksum))
    } else {
        Err(RewriteError::BadLength)
    };
    let ports = if protocol == ip_number::IPV6_ICMP.0 {
        Err(RewriteError::Unsupported)
    } else if is_fragment {
        Err(RewriteError::Fragment)
    } else if whole_header {
        Ok(Ports {
            at: offset,
            checksum,
        })
    } else {
        Err(RewriteError::BadLength)
    };
    (addr_l4, ports)
}

/// DCCP's protocol number (RFC 4340), which etherparse does not name.
const DCCP: u8 = 33;

/// The L4 checksum field of `protocol`: its offset in the L4 header, the header's minimum
/// length, and its zero rule; `None` for a protocol whose checksum ignores the addresses
/// (ICMPv4) or is not known here.
fn l4_checksum_field(protocol: u8, is_v6: bool) -> Option<(usize, usize, Zero)> {
    match protocol {
        p if p == ip_number::TCP.0 => Some((16, 20, Zero::Plain)),
        p if p == ip_number::UDP.0 => Some((6, 8, Zero::UdpOptional)),
        p if p == ip_number::UDP_LITE.0 => Some((6, 8, Zero::Mandatory)),
        // RFC 4340 §5.1: the generic header is at least 12 bytes, the checksum at 6.
        DCCP => Some((6, 12, Zero::Plain)),
        p if p == ip_number::IPV6_ICMP.0 && is_v6 => Some((2, 4, Zero::Plain)),
        _ => None,
    }
}

/// The IPv6 next-header values the walk steps over (RFC 8200 §4, RFC 4302).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IpNumberKind {
    Fragment,
    Auth,
    Routing,
    /// Hop-by-hop, destination options, mobility, HIP, shim6: `(len + 1) × 8` bytes.
    Other,
    /// Anything else ends the walk: an upper layer, ESP, no next header, unknown.
    Upper,
}

impl IpNumberKind {
    fn of(next: u8) -> Self {
        match etherparse::IpNumber(next) {
            ip_number::IPV6_FRAG => Self::Fragment,
            ip_number::AUTH => Self::Auth,
            ip_number::IPV6_ROUTE => Self::Routing,
            ip_number::IPV6_HOP_BY_HOP
            | ip_number::IPV6_DEST_OPTIONS
            | ip_number::MOBILITY
            | ip_number::HIP
            | ip_number::SHIM6 => Self::Other,
            _ => Self::Upper,
        }
    }
}

/// The error for a header that does not fit: in a first fragment the datagram goes on in
/// the next fragment (a tiny or split header chain), elsewhere the lengths disagree.
const fn short(is_fragment: bool) -> RewriteError {
    if is_fragment {
        RewriteError::Fragment
    } else {
        RewriteError::BadLength
    }
}

/// Reads a big-endian u16 at `at`; callers have checked `at + 2 <= buf.len()` (one bounds
/// check here, for the slice).
fn read_u16(buf: &[u8], at: usize) -> u16 {
    let bytes = buf[at..at + 2].first_chunk::<2>();
    u16::from_be_bytes(*bytes.expect("invariant: a 2-byte slice has a 2-byte chunk"))
}

/// Reads a big-endian u32 at `at`; callers have checked `at + 4 <= buf.len()`.
fn read_u32(buf: &[u8], at: usize) -> u32 {
    let bytes = buf[at..at + 4].first_chunk::<4>();
    u32::from_be_bytes(*bytes.expect("invariant: a 4-byte slice has a 4-byte chunk"))
}

fn write_u16(buf: &mut [u8], at: usize, value: u16) {
    buf[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

/// Applies a compiled list of L3 edits to an IP packet (as a TUN device gives it), all or
/// nothing. VLAN edits are skipped: a TUN packet has no L2 header.
///
/// # Errors
/// As [`IpPacket::new`] and [`IpPacket::apply_all`]; the packet is unchanged on error.
pub fn apply_l3(packet: &mut [u8], edits: &[Edit]) -> Result<(), RewriteError> {
    IpPacket::new(packet)?.apply_all(edits)
}

/// EtherTypes of a VLAN tag: 802.1Q, 802.1ad, and the older QinQ value (as [`crate::ip`]).
const VLAN_TPIDS: [u16; 3] = [0x8100, 0x88a8, 0x9100];
const TPID_8021Q: u16 = 0x8100;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
/// Destination and source MAC addresses: the EtherType or first TPID follows.
const MACS_LEN: usize = 12;
const ETHERNET_HEADER_LEN: usize = 14;
const VLAN_TAG_LEN: usize = 4;

/// Counts the VLAN tags at the start of `frame` (Ethernet II, no FCS), up to one more than
/// [`MAX_VLAN_TAGS`], and returns the count and the offset of the EtherType after them.
fn vlan_tags(frame: &[u8]) -> Result<(usize, usize), RewriteError> {
    if frame.len() < ETHERNET_HEADER_LEN {
        return Err(RewriteError::Truncated);
    }
    let mut at = MACS_LEN;
    let mut tags = 0;
    while tags <= MAX_VLAN_TAGS && VLAN_TPIDS.contains(&read_u16(frame, at)) {
        // The tag's TCI and the next EtherType must both be there.
        if at + VLAN_TAG_LEN + 2 > frame.len() {
            return Err(RewriteError::Truncated);
        }
        tags += 1;
        at += VLAN_TAG_LEN;
    }
    Ok((tags, at))
}

/// The offset of the IP header in an Ethernet II frame (no FCS) with up to
/// [`MAX_VLAN_TAGS`] VLAN tags.
///
/// # Errors
/// [`RewriteError::Truncated`] if the frame ends inside its L2 header;
/// [`RewriteError::Unsupported`] for more tags or a non-IP EtherType.
pub fn l3_offset(frame: &[u8]) -> Result<usize, RewriteError> {
    let (tags, at) = vlan_tags(frame)?;
    if tags > MAX_VLAN_TAGS {
        return Err(RewriteError::Unsupported);
    }
    match read_u16(frame, at) {
        ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => Ok(at + 2),
        _ => Err(RewriteError::Unsupported),
    }
}

/// Pushes an 802.1Q tag (TPID 0x8100) as the outermost tag of the frame in `buf[..len]`,
/// moving everything after the MAC addresses 4 bytes up. Returns the new length.
///
/// Pushing onto a tagged frame makes a double-tagged frame with an 0x8100 outer TPID (what
/// Linux's VLAN devices emit by default), up to [`MAX_VLAN_TAGS`] tags so that the frame
/// stays classifiable. The FCS is not handled (TAP frames have none).
///
/// # Errors
/// [`RewriteError::IllegalValue`] for a bad tag, [`RewriteError::BadLength`] if `len >
/// buf.len()`, [`RewriteError::Truncated`] for a frame shorter than an Ethernet header,
/// [`RewriteError::Unsupported`] if the frame already has [`MAX_VLAN_TAGS`] tags,
/// [`RewriteError::NoRoom`] if `buf` has fewer than 4 spare bytes.
pub fn vlan_push(buf: &mut [u8], len: usize, tag: VlanTag) -> Result<usize, RewriteError> {
    let tci = tag.tci()?;
    let frame = buf.get(..len).ok_or(RewriteError::BadLength)?;
    let (tags, _) = vlan_tags(frame)?;
    if tags >= MAX_VLAN_TAGS {
        return Err(RewriteError::Unsupported);
    }
    let new_len = len + VLAN_TAG_LEN;
    if new_len > buf.len() {
        return Err(RewriteError::NoRoom);
    }
    buf.copy_within(MACS_LEN..len, MACS_LEN + VLAN_TAG_LEN);
    buf[MACS_LEN..MACS_LEN + 2].copy_from_slice(&TPID_8021Q.to_be_bytes());
    buf[MACS_LEN + 2..MACS_LEN + 4].copy_from_slice(&tci.to_be_bytes());
    Ok(new_len)
}

/// Removes the outermost VLAN tag (TPID 0x8100, 0x88a8 or 0x9100) of the frame in
/// `buf[..len]`. Returns the new length. The frame is not padded back to 60 bytes: a TAP
/// device takes short frames, and a NIC pads on transmit.
///
/// # Errors
/// [`RewriteError::BadLength`] if `len > buf.len()`, [`RewriteError::Truncated`] for a
/// frame that ends inside its L2 header, [`RewriteError::NotTagged`] for an untagged frame.
pub fn vlan_pop(buf: &mut [u8], len: usize) -> Result<usize, RewriteError> {
    let frame = buf.get(..len).ok_or(RewriteError::BadLength)?;
    let (tags, _) = vlan_tags(frame)?;
    if tags == 0 {
        return Err(RewriteError::NotTagged);
    }
    buf.copy_within(MACS_LEN + VLAN_TAG_LEN..len, MACS_LEN);
    Ok(len - VLAN_TAG_LEN)
}

/// Applies a compiled list of edits to the Ethernet frame in `buf[..len]` (as a TAP device
/// gives it), all or nothing, and returns the frame's new length. `buf` past `len` is room
/// for VLAN pushes.
///
/// L3 edits apply to the IP packet after up to [`MAX_VLAN_TAGS`] tags (the frame need not
/// be IP when the list has VLAN edits only). VLAN edits apply in list order; they commute
/// with the L3 edits, which are written first.
///
/// # Errors
/// As [`l3_offset`], [`IpPacket::apply_all`], [`vlan_push`] and [`vlan_pop`], checked for
/// the whole list before anything is written; the frame is unchanged on error.
pub fn apply_frame(buf: &mut [u8], len: usize, edits: &[Edit]) -> Result<usize, RewriteError> {
    let frame = buf.get(..len).ok_or(RewriteError::BadLength)?;
    // Check the VLAN edits by following the tag count and the length through the list.
    let (mut tags, _) = vlan_tags(frame)?;
    let mut new_len = len;
    for edit in edits {
        match *edit {
            Edit::PushVlan(tag) => {
                tag.tci()?;
                if tags >= MAX_VLAN_TAGS {
                    return Err(RewriteError::Unsupported);
                }
                if new_len + VLAN_TAG_LEN > buf.len() {
                    return Err(RewriteError::NoRoom);
                }
                tags += 1;
                new_len += VLAN_TAG_LEN;
            }
            Edit::PopVlan => {
                if tags == 0 {
                    return Err(RewriteError::NotTagged);
                }
                tags -= 1;
                new_len -= VLAN_TAG_LEN;
            }
            _ => {}
        }
    }
    if edits.iter().any(|edit| !edit.is_l2()) {
        let l3 = l3_offset(frame)?;
        // Checks every L3 edit, then writes them: nothing is written on an error.
        IpPacket::new(&mut buf[l3..len])?.apply_all(edits)?;
    }
    let mut len = len;
    for edit in edits {
        len = match *edit {
            Edit::PushVlan(tag) => vlan_push(buf, len, tag),
            Edit::PopVlan => vlan_pop(buf, len),
            _ => Ok(len),
        }
        .expect("invariant: every VLAN edit was checked against this frame");
    }
    debug_assert_eq!(len, new_len);
    Ok(len)
}

#[cfg(test)]
mod tests;
