//! Fragmentation of one L3 packet into fragments that fit an MTU (RFC 791 §2.3 and §3.2 for
//! IPv4, RFC 8200 §4.5 for IPv6), one fragment at a time into caller buffers.
//!
//! Owns: planning the split ([`Fragmenter::new`]) and writing each fragment
//! ([`Fragmenter::write_next`]). Does not own: choosing the MTU (the engine knows each NIC's),
//! sending, ICMP errors, nor reassembly (`super::IpReassembler`). See the module doc of
//! `super` for the rules followed.

use core::fmt;

use super::parse::{self, NH_FRAGMENT, V4_DF, V4_MF, V4_OFFSET_MASK};
use crate::types::DropReason;

/// The identification source for IPv6 fragments (RFC 8200 §4.5: unique among the source's
/// recent fragmented packets to the same destination). A wrapping 32-bit counter whose start
/// comes from the engine config (a seed the caller draws, never the OS here): with a random
/// start the values are not guessable off-path, though an on-path observer sees them advance
/// (RFC 7739 discusses the trade-offs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragIdCounter {
    next: u32,
}

impl FragIdCounter {
    /// A counter whose first identification is `start`.
    #[must_use]
    pub const fn new(start: u32) -> Self {
        Self { next: start }
    }

    /// The next identification (wrapping).
    pub fn next_id(&mut self) -> u32 {
        let id = self.next;
        self.next = self.next.wrapping_add(1);
        id
    }
}

/// Why a packet cannot be fragmented. No state changes when one is returned.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum FragmentError {
    /// Not an IPv4/IPv6 packet, a length field above the bytes given, bad IPv4 options, a
    /// malformed IPv6 header chain, or an IPv6 jumbogram.
    Malformed,
    /// IPv4 with DF set and larger than the MTU. The standard answer is an ICMP destination
    /// unreachable, "fragmentation needed and DF set" (type 3 code 4) carrying the next-hop
    /// MTU (RFC 792, RFC 1191).
    DontFragment,
    /// IPv6 that already carries a Fragment header and is larger than the MTU (a fragment is
    /// not fragmented again; the answer would be ICMPv6 Packet Too Big, RFC 4443).
    AlreadyFragmented,
    /// The MTU cannot hold the headers plus 8 bytes of data.
    MtuTooSmall,
    /// The caller's buffer is smaller than the next fragment ([`Fragmenter::next_len`]).
    BufferTooSmall,
}

impl FragmentError {
    /// The engine-level [`DropReason`] for the packet.
    #[must_use]
    pub const fn drop_reason(self) -> DropReason {
        match self {
            Self::Malformed => DropReason::MalformedPacket,
            Self::DontFragment | Self::AlreadyFragmented => DropReason::FragmentationNeeded,
            Self::MtuTooSmall | Self::BufferTooSmall => DropReason::TooBig,
        }
    }
}

impl fmt::Display for FragmentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => "malformed ip packet",
            Self::DontFragment => "ipv4 packet with df set exceeds the mtu",
            Self::AlreadyFragmented => "ipv6 fragment exceeds the mtu",
            Self::MtuTooSmall => "mtu too small for the headers plus 8 bytes",
            Self::BufferTooSmall => "buffer smaller than the fragment",
        })
    }
}

/// Writes the fragments of one packet, one at a time, into caller buffers: no allocation.
///
/// ```
/// use braid_core::ipfrag::{FragIdCounter, Fragmenter};
/// # let mut packet = vec![0u8; 3000];
/// # packet[0] = 0x45; packet[2..4].copy_from_slice(&3000u16.to_be_bytes());
/// let mut ids = FragIdCounter::new(0x1234_5678);
/// let mut frags = Fragmenter::new(&packet, 1500, &mut ids).expect("fragmentable");
/// let mut buf = [0u8; 1500];
/// while let Some(len) = frags.write_next(&mut buf).expect("buffer fits the mtu") {
///     assert!(len <= 1500); // send &buf[..len]
/// }
/// ```
#[derive(Clone, Debug)]
pub struct Fragmenter<'a> {
    /// The packet, cut at its IP length field.
    packet: &'a [u8],
    v6: bool,
    /// The packet fits: emit it unchanged, once.
    whole: bool,
    /// Header of the first fragment (IPv4: the whole header; IPv6: the per-fragment headers).
    hdr_len: usize,
    /// IPv4: header of later fragments (base header + copied options, padded).
    later_hdr: [u8; 60],
    later_len: usize,
    /// IPv6: the next-header byte to point at the Fragment header, and its original value.
    nh_pos: usize,
    next_header: u8,
    /// IPv6: the identification drawn for this packet.
    ident: u32,
    /// IPv4: offset of the packet itself (when fragmenting a fragment) and its MF flag.
    base_offset: usize,
    last_more: bool,
    /// Length of the fragmentable part, and data bytes per fragment (multiples of 8 except for
    /// the last piece).
    data_len: usize,
    first_chunk: usize,
    chunk: usize,
    /// Next data offset to emit; `data_len` (or `usize::MAX` when whole) once done.
    pos: usize,
    done: bool,
}

impl<'a> Fragmenter<'a> {
    /// Plan the fragments of `packet` (an L3 IPv4/IPv6 packet; bytes past its IP length field
    /// are ignored) for a link of `mtu` bytes. IPv6 packets that need fragmenting draw one
    /// identification from `ids`; IPv4 fragments keep the packet's own identification.
    ///
    /// # Errors
    ///
    /// [`FragmentError`]: malformed packet, DF set, an IPv6 fragment, or an MTU that cannot hold
    /// the headers plus 8 bytes. A packet that fits `mtu` never fails (it is emitted whole).
    pub fn new(
        packet: &'a [u8],
        mtu: usize,
        ids: &mut FragIdCounter,
    ) -> Result<Self, FragmentError> {
        let mut f = Self {
            packet,
            v6: false,
            whole: false,
            hdr_len: 0,
            later_hdr: [0; 60],
            later_len: 0,
            nh_pos: 0,
            next_header: 0,
            ident: 0,
            base_offset: 0,
            last_more: false,
            data_len: 0,
            first_chunk: 0,
            chunk: 0,
            pos: 0,
            done: false,
        };
        match packet.first().map(|b| b >> 4) {
            Some(4) => f.plan_v4(mtu)?,
            Some(6) => f.plan_v6(mtu, ids)?,
            _ => return Err(FragmentError::Malformed),
        }
        Ok(f)
    }

    fn plan_v4(&mut self, mtu: usize) -> Result<(), FragmentError> {
        let p = self.packet;
        if p.len() < 20 {
            return Err(FragmentError::Malformed);
        }
        let ihl = usize::from(p[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
        if ihl < 20 || total < ihl || total > p.len() {
            return Err(FragmentError::Malformed);
        }
        self.packet = &p[..total];
        self.hdr_len = ihl;
        if total <= mtu {
            self.whole = true;
            return Ok(());
        }
        let flags = u16::from_be_bytes([p[6], p[7]]);
        if flags & V4_DF != 0 {
            return Err(FragmentError::DontFragment);
        }
        // Later fragments: the base header plus the options with the copied flag (RFC 791 §3.1,
        // "Options": copied flag 1 = copied into all fragments), padded with End-of-Options.
        self.later_hdr[..20].copy_from_slice(&p[..20]);
        let mut n = 20;
        let mut i = 20;
        while i < ihl {
            match p[i] {
                0 => break,  // End of Option List
                1 => i += 1, // No Operation: not copied (copied flag 0)
                t => {
                    let l = usize::from(*p.get(i + 1).ok_or(FragmentError::Malformed)?);
                    if l < 2 || i + l > ihl {
                        return Err(FragmentError::Malformed);
                    }
                    if t & 0x80 != 0 {
                        self.later_hdr[n..n + l].copy_from_slice(&p[i..i + l]);
                        n += l;
                    }
                    i += l;
                }
            }
        }
        let later_len = n.div_ceil(4) * 4;
        self.later_hdr[n..later_len].fill(0);
        // invariant: later_len <= ihl <= 60, so later_len / 4 <= 15.
        self.later_hdr[0] = 0x40 | u8::try_from(later_len / 4).unwrap_or(0x0f);
        self.later_len = later_len;
        if mtu < ihl + 8 {
            return Err(FragmentError::MtuTooSmall);
        }
        self.first_chunk = (mtu - ihl) & !7;
        self.chunk = (mtu - later_len) & !7;
        self.base_offset = usize::from(flags & V4_OFFSET_MASK) * 8;
        self.last_more = flags & V4_MF != 0;
        self.data_len = total - ihl;
        Ok(())
    }

    fn plan_v6(&mut self, mtu: usize, ids: &mut FragIdCounter) -> Result<(), FragmentError> {
        self.v6 = true;
        let chain = parse::walk_v6(self.packet).ok_or(FragmentError::Malformed)?;
        self.packet = &self.packet[..chain.end];
        if chain.end <= mtu {
            self.whole = true;
            return Ok(());
        }
        if chain.fragment {
            return Err(FragmentError::AlreadyFragmented);
        }
        let u = chain.unfrag_end;
        if mtu < u + 16 {
            return Err(FragmentError::MtuTooSmall);
        }
        self.hdr_len = u;
        self.nh_pos = chain.unfrag_nh_pos;
        self.next_header = self.packet[chain.unfrag_nh_pos];
        self.ident = ids.next_id();
        self.first_chunk = (mtu - u - 8) & !7;
        self.chunk = self.first_chunk;
        self.data_len = chain.end - u;
        Ok(())
    }

    /// How many fragments this packet makes (1 if it fits the MTU).
    #[must_use]
    pub fn fragment_count(&self) -> usize {
        if self.whole {
            return 1;
        }
        1 + (self.data_len - self.first_chunk).div_ceil(self.chunk)
    }

    /// `true` if the packet fits the MTU and is emitted unchanged.
    #[must_use]
    pub fn is_whole(&self) -> bool {
        self.whole
    }

    /// The IPv6 identification drawn for this packet (0 for IPv4 and whole packets).
    #[must_use]
    pub fn ident(&self) -> u32 {
        self.ident
    }

    /// The length of the next fragment, or `None` once every fragment was written.
    #[must_use]
    pub fn next_len(&self) -> Option<usize> {
        if self.done {
            return None;
        }
        if self.whole {
            return Some(self.packet.len());
        }
        let (h, n) = self.next_sizes();
        Some(h + n)
    }

    /// (header bytes, data bytes) of the next fragment (not whole, not done).
    fn next_sizes(&self) -> (usize, usize) {
        let first = self.pos == 0;
        let chunk = if first { self.first_chunk } else { self.chunk };
        let n = chunk.min(self.data_len - self.pos);
        let h = if self.v6 {
            self.hdr_len + 8
        } else if first {
            self.hdr_len
        } else {
            self.later_len
        };
        (h, n)
    }

    /// Write the next fragment into `out`; `Ok(Some(len))` with its length, `Ok(None)` once
    /// every fragment was written.
    ///
    /// # Errors
    ///
    /// [`FragmentError::BufferTooSmall`] if `out` is shorter than [`Self::next_len`]; nothing
    /// is consumed, the call may be repeated with a larger buffer.
    pub fn write_next(&mut self, out: &mut [u8]) -> Result<Option<usize>, FragmentError> {
        if self.done {
            return Ok(None);
        }
        if self.whole {
            let len = self.packet.len();
            let dst = out.get_mut(..len).ok_or(FragmentError::BufferTooSmall)?;
            dst.copy_from_slice(self.packet);
            self.done = true;
            return Ok(Some(len));
        }
        let (h, n) = self.next_sizes();
        let dst = out.get_mut(..h + n).ok_or(FragmentError::BufferTooSmall)?;
        let pos = self.pos;
        let last = pos + n == self.data_len;
        let data = &self.packet[self.hdr_len + pos..self.hdr_len + pos + n];
        // invariant: every length and offset below is ≤ 65 535 (the packet's own length field).
        if self.v6 {
            let u = self.hdr_len;
            dst[..u].copy_from_slice(&self.packet[..u]);
            dst[self.nh_pos] = NH_FRAGMENT;
            let payload = u16::try_from(u - 40 + 8 + n).unwrap_or(u16::MAX);
            dst[4..6].copy_from_slice(&payload.to_be_bytes());
            let off_m = u16::try_from(pos).unwrap_or(0) | u16::from(!last);
            dst[u] = self.next_header;
            dst[u + 1] = 0;
            dst[u + 2..u + 4].copy_from_slice(&off_m.to_be_bytes());
            dst[u + 4..u + 8].copy_from_slice(&self.ident.to_be_bytes());
        } else {
            if pos == 0 {
                dst[..h].copy_from_slice(&self.packet[..h]);
            } else {
                dst[..h].copy_from_slice(&self.later_hdr[..h]);
            }
            let total = u16::try_from(h + n).unwrap_or(u16::MAX);
            dst[2..4].copy_from_slice(&total.to_be_bytes());
            let more = !last || self.last_more;
            let off = u16::try_from((self.base_offset + pos) / 8).unwrap_or(0) & V4_OFFSET_MASK;
            let flags_off = if more { V4_MF | off } else { off };
            dst[6..8].copy_from_slice(&flags_off.to_be_bytes());
            parse::ipv4_fill_checksum(&mut dst[..h]);
        }
        dst[h..].copy_from_slice(data);
        self.pos += n;
        self.done = last;
        Ok(Some(h + n))
    }
}
