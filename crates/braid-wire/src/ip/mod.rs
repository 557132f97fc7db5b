//! Classification parsing: the few facts the flow classifier needs from an IP packet.
//!
//! Owns [`IpSummary`] and its two entry points: [`IpSummary::parse_l3`] for a TUN packet
//! (starting with the IP header) and [`IpSummary::parse_l2`] for a TAP frame (Ethernet II
//! with up to two VLAN tags). The headers themselves are sliced by etherparse (zero-copy, no
//! allocation); this module walks them, applies braid's rules, and maps errors to
//! [`ParseError`]. It does not own flow keys, hashing or RSS (braid-core), nor header
//! rewriting or checksums (the rule engine).
//!
//! # Rules, and why
//!
//! - **Fragments carry no ports.** Only the first fragment of an IP datagram holds the L4
//!   header, so every fragment — the first included — reports ports 0 and
//!   `is_fragment = true`; the classifier then keys them on addresses only, and all the
//!   fragments of a datagram land in one flow (the rule RSS uses, Microsoft's "Verifying the
//!   RSS Hash Calculation"). An IPv6 atomic fragment (a fragment header with offset 0 and
//!   M = 0, RFC 6946) is not a fragment: it is a whole packet and keeps its ports.
//! - **IPv6 extension headers are walked by hand** over etherparse's per-header slices
//!   (RFC 8200 §4): hop-by-hop only first, then routing, destination options, fragment, AH
//!   (RFC 4302), mobility, HIP, shim6. After the fragment header of a non-first fragment the
//!   walk stops — the bytes that follow are the middle of the datagram, not headers — and the
//!   fragment header's next header is the protocol. ESP and unknown numbers end the walk and
//!   are the protocol. At most [`MAX_IPV6_EXT_HEADERS`] headers are walked (bounded work).
//! - **Lengths are strict.** A buffer shorter than the IP header or than the IP length field
//!   is [`ParseError::Truncated`]; a length field inconsistent with another (IPv4 total
//!   length below the header, a UDP length or TCP data offset or extension header that does
//!   not fit in the IP payload) is [`ParseError::BadLength`]. Bytes after the IP packet
//!   (Ethernet padding) are ignored; `total_len` reports the IP packet's own length.
//! - **Checksums are not verified.** The packet comes from the local stack (TUN/TAP), braid
//!   carries it unchanged, and the receiving stack verifies it; classification must not pay
//!   for it.
//! - **VXLAN** (RFC 7348): a whole UDP packet to port 4789 whose payload is a valid VXLAN
//!   header reports its VNI; anything else on that port is plain UDP (`vxlan_vni = None`).

use core::fmt;
use core::net::IpAddr;

use etherparse::err::{LenError, ip_auth, ipv4, ipv6, tcp};
use etherparse::{
    EtherType, Ethernet2Slice, IpAuthHeaderSlice, IpNumber, Ipv4HeaderSlice,
    Ipv6FragmentHeaderSlice, Ipv6HeaderSlice, Ipv6RawExtHeaderSlice, LenSource, SingleVlanSlice,
    TcpSlice, UdpSlice, ip_number,
};

use crate::ParseError;
use crate::vxlan;

/// The most VLAN tags [`IpSummary::parse_l2`] accepts (802.1Q, or 802.1ad QinQ).
pub const MAX_VLAN_TAGS: usize = 2;
/// The most IPv6 extension headers walked before giving up with [`ParseError::Unsupported`].
pub const MAX_IPV6_EXT_HEADERS: usize = 16;

const IPV4_VERSION: u8 = 4;
const IPV6_VERSION: u8 = 6;
const IPV6_HEADER_LEN: usize = 40;

/// What the flow classifier needs to know about one IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpSummary {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// The upper-layer protocol: IPv4's protocol field (after an AH), IPv6's last next
    /// header after the extension headers.
    pub protocol: u8,
    /// TCP/UDP source port; 0 without ports (another protocol, or any fragment).
    pub src_port: u16,
    /// TCP/UDP destination port; 0 without ports (another protocol, or any fragment).
    pub dst_port: u16,
    /// DSCP (6 bits of the TOS / traffic class byte).
    pub dscp: u8,
    /// ECN (2 bits of the TOS / traffic class byte).
    pub ecn: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// The outer VLAN id (TAP frames only); `None` untagged or priority-tagged (VID 0).
    pub vlan: Option<u16>,
    /// The VNI of a VXLAN packet (UDP to port 4789 with a valid VXLAN header).
    pub vxlan_vni: Option<u32>,
    /// `true` for any fragment of an IP datagram (IPv4 MF or offset ≠ 0; IPv6 fragment
    /// header with M or offset ≠ 0).
    pub is_fragment: bool,
    /// The IP packet's length in bytes, header included, as its length field says.
    pub total_len: usize,
}

impl IpSummary {
    /// Summarises an IP packet as a TUN device delivers it (IPv4 or IPv6 by the version
    /// nibble).
    ///
    /// # Errors
    /// [`ParseError::Truncated`], [`ParseError::BadLength`], [`ParseError::Unsupported`]
    /// (not IPv4/IPv6, too many extension headers) or [`ParseError::IllegalValue`], as the
    /// module doc explains. Never panics.
    pub fn parse_l3(packet: &[u8]) -> Result<Self, ParseError> {
        let first = *packet.first().ok_or(ParseError::Truncated)?;
        match first >> 4 {
            IPV4_VERSION => parse_ipv4(packet),
            IPV6_VERSION => parse_ipv6(packet),
            _ => Err(ParseError::Unsupported),
        }
    }

    /// Summarises an Ethernet II frame as a TAP device delivers it (no FCS), with up to
    /// [`MAX_VLAN_TAGS`] VLAN tags (TPID 0x8100, 0x88a8 or 0x9100); records the outer VLAN id.
    ///
    /// # Errors
    /// As [`IpSummary::parse_l3`], plus [`ParseError::Unsupported`] for a non-IP EtherType
    /// (ARP, ...) or more than [`MAX_VLAN_TAGS`] tags.
    pub fn parse_l2(frame: &[u8]) -> Result<Self, ParseError> {
        let eth = Ethernet2Slice::from_slice_without_fcs(frame).map_err(len_error)?;
        let mut ether_type = eth.ether_type();
        let mut rest = eth.payload_slice();
        let mut vlan = None;
        let mut tags = 0;
        while matches!(
            ether_type,
            EtherType::VLAN_TAGGED_FRAME
                | EtherType::PROVIDER_BRIDGING
                | EtherType::VLAN_DOUBLE_TAGGED_FRAME
        ) {
            if tags == MAX_VLAN_TAGS {
                return Err(ParseError::Unsupported);
            }
            let tag = SingleVlanSlice::from_slice(rest).map_err(len_error)?;
            if tags == 0 {
                let vid = tag.vlan_identifier().value();
                vlan = (vid != 0).then_some(vid);
            }
            ether_type = tag.ether_type();
            rest = tag.payload_slice();
            tags += 1;
        }
        let mut summary = match ether_type {
            EtherType::IPV4 => parse_ipv4(rest)?,
            EtherType::IPV6 => parse_ipv6(rest)?,
            _ => return Err(ParseError::Unsupported),
        };
        summary.vlan = vlan;
        Ok(summary)
    }
}

impl fmt::Display for IpSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.src, self.dst) {
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                write!(f, "[{src}]:{} -> [{dst}]:{}", self.src_port, self.dst_port)?
            }
            (src, dst) => write!(f, "{src}:{} -> {dst}:{}", self.src_port, self.dst_port)?,
        }
        write!(
            f,
            " proto={} dscp={} ecn={} ttl={} len={}",
            self.protocol, self.dscp, self.ecn, self.ttl, self.total_len
        )?;
        if let Some(vlan) = self.vlan {
            write!(f, " vlan={vlan}")?;
        }
        if let Some(vni) = self.vxlan_vni {
            write!(f, " vni={vni}")?;
        }
        if self.is_fragment {
            f.write_str(" fragment")?;
        }
        Ok(())
    }
}

/// A length error from etherparse: short of the buffer is a truncation, short of a length
/// field is an inconsistency.
fn len_error(err: LenError) -> ParseError {
    if err.len_source == LenSource::Slice {
        ParseError::Truncated
    } else {
        ParseError::BadLength
    }
}

fn auth_error(err: ip_auth::HeaderSliceError) -> ParseError {
    match err {
        // Inside an IP payload whose length is already checked: the AH does not fit.
        ip_auth::HeaderSliceError::Len(_) => ParseError::BadLength,
        ip_auth::HeaderSliceError::Content(ip_auth::HeaderError::ZeroPayloadLen) => {
            ParseError::BadLength
        }
    }
}

fn parse_ipv4(packet: &[u8]) -> Result<IpSummary, ParseError> {
    let header = Ipv4HeaderSlice::from_slice(packet).map_err(|err| match err {
        ipv4::HeaderSliceError::Len(err) => len_error(err),
        ipv4::HeaderSliceError::Content(ipv4::HeaderError::UnexpectedVersion { .. }) => {
            ParseError::Unsupported
        }
        ipv4::HeaderSliceError::Content(ipv4::HeaderError::HeaderLengthSmallerThanHeader {
            ..
        }) => ParseError::BadLength,
    })?;
    let header_len = header.slice().len();
    let total_len = usize::from(header.total_len());
    if total_len < header_len {
        return Err(ParseError::BadLength);
    }
    let mut payload = packet
        .get(header_len..total_len)
        .ok_or(ParseError::Truncated)?;
    let first_fragment = header.fragments_offset().value() == 0;
    let mut protocol = header.protocol();
    // An AH (RFC 4302 §3.1) sits in the first fragment only: a later one carries data.
    if protocol == ip_number::AUTH && first_fragment {
        let auth = IpAuthHeaderSlice::from_slice(payload).map_err(auth_error)?;
        protocol = auth.next_header();
        payload = &payload[auth.slice().len()..];
    }
    let mut summary = IpSummary {
        src: header.source_addr().into(),
        dst: header.destination_addr().into(),
        protocol: protocol.0,
        src_port: 0,
        dst_port: 0,
        dscp: header.dcp().value(),
        ecn: header.ecn().value(),
        ttl: header.ttl(),
        vlan: None,
        vxlan_vni: None,
        is_fragment: header.is_fragmenting_payload(),
        total_len,
    };
    if !summary.is_fragment {
        read_transport(&mut summary, protocol, payload)?;
    }
    Ok(summary)
}

fn parse_ipv6(packet: &[u8]) -> Result<IpSummary, ParseError> {
    let header = Ipv6HeaderSlice::from_slice(packet).map_err(|err| match err {
        ipv6::HeaderSliceError::Len(err) => len_error(err),
        ipv6::HeaderSliceError::Content(ipv6::HeaderError::UnexpectedVersion { .. }) => {
            ParseError::Unsupported
        }
    })?;
    let mut next = header.next_header();
    let payload_len = usize::from(header.payload_length());
    let body = if payload_len == 0 && next == ip_number::IPV6_HOP_BY_HOP {
        // A jumbogram (RFC 2675): the real length is in a hop-by-hop option; the buffer's
        // end is the packet's end.
        // XXX(#2): the jumbo payload option is not read or checked.
        &packet[IPV6_HEADER_LEN..]
    } else {
        packet
            .get(IPV6_HEADER_LEN..IPV6_HEADER_LEN + payload_len)
            .ok_or(ParseError::Truncated)?
    };
    let total_len = IPV6_HEADER_LEN + body.len();

    let mut rest = body;
    let mut is_fragment = false;
    let mut walked = 0;
    loop {
        if next == ip_number::IPV6_HOP_BY_HOP && walked > 0 {
            // RFC 8200 §4.1: hop-by-hop options only immediately after the IPv6 header.
            return Err(ParseError::IllegalValue {
                field: "next_header",
            });
        }
        let is_ext = next == ip_number::IPV6_FRAG
            || next == ip_number::AUTH
            || Ipv6RawExtHeaderSlice::header_type_supported(next);
        if !is_ext {
            break;
        }
        if walked == MAX_IPV6_EXT_HEADERS {
            return Err(ParseError::Unsupported);
        }
        walked += 1;
        // The IPv6 payload length is checked against the buffer above: an extension header
        // that does not fit in it is an inconsistent length, not a truncated capture.
        if next == ip_number::IPV6_FRAG {
            let frag =
                Ipv6FragmentHeaderSlice::from_slice(rest).map_err(|_| ParseError::BadLength)?;
            next = frag.next_header();
            rest = &rest[frag.slice().len()..];
            if frag.is_fragmenting_payload() {
                is_fragment = true;
            }
            if frag.fragment_offset().value() != 0 {
                // A later fragment: what follows is the middle of the datagram.
                break;
            }
        } else if next == ip_number::AUTH {
            let auth = IpAuthHeaderSlice::from_slice(rest).map_err(auth_error)?;
            next = auth.next_header();
            rest = &rest[auth.slice().len()..];
        } else {
            let ext = Ipv6RawExtHeaderSlice::from_slice(rest).map_err(|_| ParseError::BadLength)?;
            next = ext.next_header();
            rest = &rest[ext.slice().len()..];
        }
    }

    let mut summary = IpSummary {
        src: header.source_addr().into(),
        dst: header.destination_addr().into(),
        protocol: next.0,
        src_port: 0,
        dst_port: 0,
        dscp: header.dscp().value(),
        ecn: header.ecn().value(),
        ttl: header.hop_limit(),
        vlan: None,
        vxlan_vni: None,
        is_fragment,
        total_len,
    };
    if !is_fragment {
        read_transport(&mut summary, next, rest)?;
    }
    Ok(summary)
}

/// Fills the ports (and the VXLAN VNI) from the L4 header of a whole (unfragmented) packet.
fn read_transport(
    summary: &mut IpSummary,
    protocol: IpNumber,
    l4: &[u8],
) -> Result<(), ParseError> {
    // The IP length is already checked against the buffer: an L4 header that does not fit
    // in the IP payload is an inconsistent length.
    if protocol == ip_number::TCP {
        let tcp = TcpSlice::from_slice(l4).map_err(|err| match err {
            tcp::HeaderSliceError::Len(_)
            | tcp::HeaderSliceError::Content(tcp::HeaderError::DataOffsetTooSmall { .. }) => {
                ParseError::BadLength
            }
        })?;
        summary.src_port = tcp.source_port();
        summary.dst_port = tcp.destination_port();
    } else if protocol == ip_number::UDP {
        let udp = UdpSlice::from_slice(l4).map_err(|_| ParseError::BadLength)?;
        summary.src_port = udp.source_port();
        summary.dst_port = udp.destination_port();
        if summary.dst_port == vxlan::VXLAN_PORT {
            summary.vxlan_vni = vxlan::Packet::new_checked(udp.payload())
                .and_then(|packet| vxlan::Repr::parse(&packet))
                .ok()
                .map(|repr| repr.vni);
        }
    }
    Ok(())
}

/// Bytes of an IPv4 header without options plus a UDP header.
pub const UDP_IPV4_HEADERS_LEN: usize = 28;

/// Write an IPv4 header (no options, TTL 64, header checksum filled in) and a UDP header at
/// the start of `packet`, for a datagram of exactly `packet.len()` bytes; the UDP payload is
/// what follows them and is left as it is. The UDP checksum is 0 ("none", which RFC 768
/// allows over IPv4). For traffic generators and tests.
///
/// # Errors
/// [`ParseError::Truncated`] if `packet` is shorter than the two headers,
/// [`ParseError::BadLength`] if it is longer than an IPv4 datagram can be.
pub fn emit_udp_ipv4(
    packet: &mut [u8],
    src: core::net::Ipv4Addr,
    dst: core::net::Ipv4Addr,
    src_port: u16,
    dst_port: u16,
    ident: u16,
) -> Result<(), ParseError> {
    if packet.len() < UDP_IPV4_HEADERS_LEN {
        return Err(ParseError::Truncated);
    }
    let total = u16::try_from(packet.len()).map_err(|_| ParseError::BadLength)?;
    let h = &mut packet[..UDP_IPV4_HEADERS_LEN];
    h.fill(0);
    h[0] = 0x45;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[4..6].copy_from_slice(&ident.to_be_bytes());
    h[8] = 64;
    h[9] = 17;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let mut sum: u32 = h[..20]
        .chunks_exact(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let checksum = !u16::try_from(sum).unwrap_or(u16::MAX);
    h[10..12].copy_from_slice(&checksum.to_be_bytes());
    h[20..22].copy_from_slice(&src_port.to_be_bytes());
    h[22..24].copy_from_slice(&dst_port.to_be_bytes());
    h[24..26].copy_from_slice(&(total - 20).to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests;
