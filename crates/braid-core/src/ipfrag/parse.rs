//! Header parsing for standard IP fragmentation: which packets are fragments, of which datagram,
//! and where their data lies; plus the IPv4 header checksum (RFC 791 §3.1, RFC 1071).
//!
//! Owns: reading IPv4 headers and IPv6 header chains up to the Fragment header, bounded and
//! without panics (every index is checked against the slice). Does not own any reassembly
//! rule (overlap, caps, timeouts: `super`), nor building fragments (`super::fragment`).

use core::ops::Range;

use super::IpFragDrop;

/// IPv6 next-header values met before the Fragment header (RFC 8200 §4.1).
pub(super) const NH_HOP_BY_HOP: u8 = 0;
pub(super) const NH_ROUTING: u8 = 43;
pub(super) const NH_FRAGMENT: u8 = 44;
pub(super) const NH_DEST_OPTS: u8 = 60;

/// IPv4 flags/offset field bits (RFC 791 §3.1).
pub(super) const V4_DF: u16 = 0x4000;
pub(super) const V4_MF: u16 = 0x2000;
pub(super) const V4_OFFSET_MASK: u16 = 0x1fff;

/// The most extension headers walked before the Fragment header. A well-formed chain has at most
/// three (Hop-by-Hop, Destination Options, Routing); a longer chain is refused as malformed, so
/// the parse of one fragment is bounded whatever the packet says.
pub(super) const MAX_EXT_HEADERS: usize = 8;

/// The datagram a fragment belongs to: (src, dst, id, protocol) for IPv4 (RFC 791), (src, dst,
/// id) for IPv6 (RFC 8200 §4.5). IPv4 addresses sit in the first 4 bytes, the rest zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub(super) struct FragKey {
    pub(super) src: [u8; 16],
    pub(super) dst: [u8; 16],
    pub(super) id: u32,
    /// IPv4 protocol; 0 for IPv6.
    pub(super) proto: u8,
    pub(super) v6: bool,
}

/// One fragment, parsed.
#[derive(Clone, Debug)]
pub(super) struct FragInfo {
    pub(super) key: FragKey,
    /// Byte offset of the data in the datagram's fragmentable part (a multiple of 8).
    pub(super) offset: u32,
    /// More fragments follow (MF / M flag).
    pub(super) more: bool,
    /// Length of the header the reassembled packet starts with: the IPv4 header with its
    /// options (IHL × 4), or the IPv6 unfragmentable part (IPv6 header plus the extension
    /// headers before the Fragment header).
    pub(super) hdr_len: usize,
    /// The fragment's data inside the packet (after the headers, up to the IP length field).
    pub(super) data: Range<usize>,
    /// IPv6: index of the byte holding the next-header value that points at the Fragment
    /// header (6 in the IPv6 header, or the first byte of the last unfragmentable extension
    /// header). Unused for IPv4.
    pub(super) nh_pos: usize,
    /// IPv6: the Fragment header's next-header value (the first fragmentable header). Unused
    /// for IPv4.
    pub(super) next_header: u8,
}

/// What a packet is, as far as reassembly is concerned.
#[derive(Clone, Debug)]
pub(super) enum Parsed {
    /// A whole datagram (IPv4 with MF clear and offset 0, or IPv6 without a Fragment header).
    NotFragment,
    /// A fragment (an IPv6 atomic fragment, offset 0 and M clear, included: RFC 6946).
    Fragment(FragInfo),
    /// Unusable: dropped and counted under this reason.
    Drop(IpFragDrop),
}

#[inline]
fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at + 2)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

#[inline]
fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// The one's complement sum of `data` as 16-bit big-endian words (RFC 1071), not yet folded.
#[inline]
fn ones_sum(data: &[u8]) -> u32 {
    let mut sum = 0u32;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

#[inline]
fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // invariant: folded to 16 bits above.
    u16::try_from(sum).unwrap_or(u16::MAX)
}

/// `true` if the IPv4 header `hdr` (IHL × 4 bytes) carries a correct checksum.
#[inline]
pub(super) fn ipv4_checksum_ok(hdr: &[u8]) -> bool {
    fold(ones_sum(hdr)) == 0xffff
}

/// Recompute and store the checksum of the IPv4 header `hdr` (IHL × 4 bytes, at least 20).
#[inline]
pub(super) fn ipv4_fill_checksum(hdr: &mut [u8]) {
    if hdr.len() < 20 {
        return;
    }
    hdr[10] = 0;
    hdr[11] = 0;
    let c = !fold(ones_sum(hdr));
    hdr[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Classify `packet` (an L3 packet, IPv4 or IPv6, possibly followed by link padding).
pub(super) fn parse(packet: &[u8]) -> Parsed {
    match packet.first().map(|b| b >> 4) {
        Some(4) => parse_v4(packet),
        Some(6) => parse_v6(packet),
        _ => Parsed::Drop(IpFragDrop::Malformed),
    }
}

fn parse_v4(p: &[u8]) -> Parsed {
    let malformed = Parsed::Drop(IpFragDrop::Malformed);
    if p.len() < 20 {
        return malformed;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let Some(total) = be16(p, 2).map(usize::from) else {
        return malformed;
    };
    // Total-length consistency: the header fits, the datagram fits in what arrived (bytes past
    // `total` are link padding and ignored).
    if ihl < 20 || total < ihl || total > p.len() {
        return malformed;
    }
    let Some(flags_off) = be16(p, 6) else {
        return malformed;
    };
    let more = flags_off & V4_MF != 0;
    let offset = u32::from(flags_off & V4_OFFSET_MASK) * 8;
    if !more && offset == 0 {
        return Parsed::NotFragment;
    }
    if !ipv4_checksum_ok(&p[..ihl]) {
        return malformed;
    }
    let mut key = FragKey {
        id: u32::from(be16(p, 4).unwrap_or(0)),
        proto: p[9],
        ..FragKey::default()
    };
    key.src[..4].copy_from_slice(&p[12..16]);
    key.dst[..4].copy_from_slice(&p[16..20]);
    Parsed::Fragment(FragInfo {
        key,
        offset,
        more,
        hdr_len: ihl,
        data: ihl..total,
        nh_pos: 0,
        next_header: p[9],
    })
}

/// Where an IPv6 packet's Fragment header is, if it has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct V6Chain {
    /// End of the IPv6 packet (40 + payload length).
    pub(super) end: usize,
    /// Offset of the first header after the last header walked (the Fragment header if
    /// `fragment`, else the first header that is not Hop-by-Hop/Routing/Destination Options).
    pub(super) pos: usize,
    /// Index of the byte that holds the next-header value of the header at `pos`.
    pub(super) nh_pos: usize,
    /// End of the per-fragment (unfragmentable) headers, RFC 8200 §4.5: after the last Routing
    /// header if any, else after a Hop-by-Hop header, else 40.
    pub(super) unfrag_end: usize,
    /// Index of the next-header byte that points past `unfrag_end`.
    pub(super) unfrag_nh_pos: usize,
    /// A Fragment header is at `pos`.
    pub(super) fragment: bool,
}

/// Walk the IPv6 header chain of `p` up to a Fragment header or the first header that is not
/// Hop-by-Hop, Routing or Destination Options. `None` if malformed (truncated, payload length
/// 0 — jumbograms are not fragmented, RFC 2675 — Hop-by-Hop not first, or a chain longer than
/// [`MAX_EXT_HEADERS`]).
pub(super) fn walk_v6(p: &[u8]) -> Option<V6Chain> {
    if p.len() < 40 || p[0] >> 4 != 6 {
        return None;
    }
    let payload = usize::from(be16(p, 4)?);
    let end = 40 + payload;
    if payload == 0 || end > p.len() {
        return None;
    }
    let mut nh_pos = 6;
    let mut pos = 40;
    let mut unfrag_end = 40;
    let mut unfrag_nh_pos = 6;
    for _ in 0..=MAX_EXT_HEADERS {
        let nh = p[nh_pos];
        match nh {
            NH_FRAGMENT => {
                return Some(V6Chain {
                    end,
                    pos,
                    nh_pos,
                    unfrag_end,
                    unfrag_nh_pos,
                    fragment: true,
                });
            }
            NH_HOP_BY_HOP | NH_ROUTING | NH_DEST_OPTS => {
                if nh == NH_HOP_BY_HOP && pos != 40 {
                    return None;
                }
                let len = (usize::from(*p.get(pos + 1)?) + 1) * 8;
                if pos + len > end {
                    return None;
                }
                let next = pos + len;
                if nh != NH_DEST_OPTS {
                    unfrag_end = next;
                    unfrag_nh_pos = pos;
                }
                nh_pos = pos;
                pos = next;
            }
            _ => {
                return Some(V6Chain {
                    end,
                    pos,
                    nh_pos,
                    unfrag_end,
                    unfrag_nh_pos,
                    fragment: false,
                });
            }
        }
    }
    None
}

fn parse_v6(p: &[u8]) -> Parsed {
    let Some(chain) = walk_v6(p) else {
        return Parsed::Drop(IpFragDrop::Malformed);
    };
    if !chain.fragment {
        return Parsed::NotFragment;
    }
    let at = chain.pos;
    if at + 8 > chain.end {
        return Parsed::Drop(IpFragDrop::Malformed);
    }
    let (Some(off_m), Some(id)) = (be16(p, at + 2), be32(p, at + 4)) else {
        return Parsed::Drop(IpFragDrop::Malformed);
    };
    let mut key = FragKey {
        id,
        v6: true,
        ..FragKey::default()
    };
    key.src.copy_from_slice(&p[8..24]);
    key.dst.copy_from_slice(&p[24..40]);
    Parsed::Fragment(FragInfo {
        key,
        offset: u32::from(off_m >> 3) * 8,
        more: off_m & 1 != 0,
        hdr_len: at,
        data: at + 8..chain.end,
        nh_pos: chain.nh_pos,
        next_header: p[at],
    })
}
