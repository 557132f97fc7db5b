//! The receive half of the vNIC's virtio-net header offloads: checking the header the kernel
//! puts before each packet, completing a partial checksum (`VIRTIO_NET_HDR_F_NEEDS_CSUM`), and
//! splitting a GSO super-packet into ordinary IP packets straight into an [`RxBatch`].
//!
//! What this module owns: [`RxVnetHdr`] (the parsed header), [`complete_checksum`],
//! [`split_into_batch`] and the one's complement sum. What it does not: reading the device
//! and the transmit side ([`super::coalesce`]).
//!
//! The segmentation itself is tun-rs' port of wireguard-go's `gsoSplit` (`tun_rs::gso_split`):
//! it copies the headers to each segment, fixes the IPv4 total length, ID and header
//! checksum, the IPv6 payload length, the TCP sequence number and flags (FIN/PSH only on the
//! last segment, CWR only on the first) or the UDP length, and computes each segment's
//! TCP/UDP checksum in full (RFC 793 §3.1, RFC 768, RFC 8200 §8.1). What this module adds is
//! what tun-rs does in a private function before calling it: never trusting the kernel's
//! `hdr_len` (it can span the whole first packet on the forwarding path, so it is rebuilt from
//! `csum_start` and the real TCP/UDP header length), and handing the segments to fixed slices
//! of the batch arena (a stack array of slice references, so nothing is allocated).
//!
//! Layout of `struct virtio_net_hdr` (virtio spec 1.2 §5.1.6, 10 bytes, little-endian on
//! Linux's TUN unless `TUNSETVNETBE`): `flags: u8, gso_type: u8, hdr_len: u16, gso_size: u16,
//! csum_start: u16, csum_offset: u16`.

use tun_rs::VirtioNetHdr;

use crate::transport::RxBatch;

/// Bytes of the virtio-net header before every packet on a TUN opened with `IFF_VNET_HDR`
/// (the kernel's default `vnet_hdr_sz`, which braid never changes).
pub(crate) const VNET_HDR_LEN: usize = tun_rs::VIRTIO_NET_HDR_LEN;

/// Most segments one super-packet may be split into: the output slice array lives on the
/// stack (128 × 16 B). The vNIC also asks the kernel for `gso_max_segs` ≤ this, so larger
/// super-packets only arrive if the kernel ignored that (counted as a drop).
pub(crate) const MAX_GSO_SEGMENTS: usize = 128;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the transport checksum is partial (pseudo-header only).
const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_NONE`.
const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
const GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_UDP_L4` (USO, Linux ≥ 6.2 on TUN).
const GSO_UDP_L4: u8 = 5;
/// `VIRTIO_NET_HDR_GSO_ECN`: a flag on the TCP types.
const GSO_ECN: u8 = 0x80;

const UDP_HEADER_LEN: u16 = 8;

/// Why a packet with a virtio-net header was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VnetDrop {
    /// Header fields inconsistent with the packet (offsets past the end, unknown GSO type,
    /// bad TCP header length, zero `gso_size`, not IPv4/IPv6), or tun-rs refused the split.
    Malformed,
    /// More segments than [`MAX_GSO_SEGMENTS`] or than the batch has slots.
    TooManySegments,
}

/// A parsed virtio-net header, with `hdr_len` already rebuilt from the packet (see the
/// module doc).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RxVnetHdr {
    hdr: VirtioNetHdr,
}

impl RxVnetHdr {
    /// Parses the first [`VNET_HDR_LEN`] bytes of `raw` (little-endian fields).
    pub(crate) fn parse(raw: &[u8; VNET_HDR_LEN]) -> Self {
        let le = |i: usize| u16::from_le_bytes([raw[i], raw[i + 1]]);
        Self {
            hdr: VirtioNetHdr {
                flags: raw[0],
                gso_type: raw[1],
                hdr_len: le(2),
                gso_size: le(4),
                csum_start: le(6),
                csum_offset: le(8),
            },
        }
    }

    /// `true` for a super-packet that must be split.
    pub(crate) fn is_gso(&self) -> bool {
        self.hdr.gso_type != GSO_NONE
    }

    /// `true` if the transport checksum is partial and must be completed.
    pub(crate) fn needs_csum(&self) -> bool {
        self.hdr.flags & F_NEEDS_CSUM != 0
    }

    /// Checks a super-packet against its header and rebuilds `hdr_len`. Returns the number of
    /// segments it splits into and whether it is IPv6.
    ///
    /// # Errors
    /// [`VnetDrop::Malformed`].
    fn prepare_split(&mut self, packet: &[u8]) -> Result<(usize, bool), VnetDrop> {
        let is_v6 = match packet.first().map(|b| b >> 4) {
            Some(4) => false,
            Some(6) => true,
            _ => return Err(VnetDrop::Malformed),
        };
        let base = self.hdr.gso_type & !GSO_ECN;
        let is_tcp = match (base, is_v6) {
            (GSO_TCPV4, false) | (GSO_TCPV6, true) => true,
            (GSO_UDP_L4, _) if self.hdr.gso_type & GSO_ECN == 0 => false,
            _ => return Err(VnetDrop::Malformed),
        };
        let start = usize::from(self.hdr.csum_start);
        let transport_len = if is_tcp {
            // Data offset: the high nibble of byte 12 of the TCP header, in 32-bit words.
            let off = packet.get(start + 12).ok_or(VnetDrop::Malformed)?;
            let len = u16::from(off >> 4) * 4;
            if !(20..=60).contains(&len) {
                return Err(VnetDrop::Malformed);
            }
            len
        } else {
            UDP_HEADER_LEN
        };
        self.hdr.hdr_len = self
            .hdr
            .csum_start
            .checked_add(transport_len)
            .ok_or(VnetDrop::Malformed)?;
        let hdr_len = usize::from(self.hdr.hdr_len);
        let gso_size = usize::from(self.hdr.gso_size);
        if gso_size == 0 || packet.len() <= hdr_len {
            return Err(VnetDrop::Malformed);
        }
        Ok(((packet.len() - hdr_len).div_ceil(gso_size), is_v6))
    }
}

/// Completes a partial transport checksum in place (`VIRTIO_NET_HDR_F_NEEDS_CSUM` with
/// `GSO_NONE`): the field holds the pseudo-header sum; the checksum is the one's complement
/// of the one's complement sum of that and every byte from `csum_start` to the end
/// (RFC 1071). A result of 0 is sent as `0xffff` (RFC 768: 0 means "no checksum" for UDP; for
/// TCP both are the same value in one's complement).
///
/// # Errors
/// [`VnetDrop::Malformed`] if the checksum field lies outside the packet.
pub(crate) fn complete_checksum(hdr: &RxVnetHdr, packet: &mut [u8]) -> Result<(), VnetDrop> {
    let start = usize::from(hdr.hdr.csum_start);
    let at = start + usize::from(hdr.hdr.csum_offset);
    if at + 2 > packet.len() {
        return Err(VnetDrop::Malformed);
    }
    let initial = u16::from_be_bytes([packet[at], packet[at + 1]]);
    packet[at] = 0;
    packet[at + 1] = 0;
    let sum = ones_complement_sum(&packet[start..], u32::from(initial));
    let csum = match !sum {
        0 => 0xffff,
        c => c,
    };
    packet[at..at + 2].copy_from_slice(&csum.to_be_bytes());
    Ok(())
}

/// The 16-bit one's complement sum of `data` (big-endian words, an odd last byte padded with
/// zero) plus `initial`, folded.
pub(super) fn ones_complement_sum(data: &[u8], initial: u32) -> u16 {
    // 32-bit words into a 64-bit sum (RFC 1071 §2: the sum can be taken over larger words
    // and folded at the end, since 2^16 ≡ 1 modulo 2^16 − 1); half the additions of 16-bit
    // words, and the compiler vectorises the loop. A packet checksum is the receive path's
    // largest cost after the AEAD when packets are coalesced.
    let mut sum = u64::from(initial);
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        sum += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let mut pairs = words.remainder().chunks_exact(2);
    for c in &mut pairs {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = pairs.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    u16::try_from(sum).expect("invariant: folded to 16 bits")
}

/// Splits the super-packet `packet` (described by `hdr`) into the batch, one segment per
/// slot starting at slot `first_slot`. Returns the number of segments, each recorded in the
/// batch with a complete checksum and at most `hdr_len + gso_size` bytes.
///
/// Call [`segments_needed`] first: this fails with [`VnetDrop::TooManySegments`] if the
/// segments do not fit the free slots.
///
/// # Errors
/// [`VnetDrop`]; nothing was recorded in the batch.
pub(crate) fn split_into_batch(
    hdr: &RxVnetHdr,
    packet: &mut [u8],
    batch: &mut RxBatch,
    first_slot: usize,
) -> Result<usize, VnetDrop> {
    let mut hdr = *hdr;
    let (segments, is_v6) = hdr.prepare_split(packet)?;
    let slot_bytes = batch.slot_bytes();
    let free = batch.slots().saturating_sub(first_slot);
    if segments > free || segments > MAX_GSO_SEGMENTS {
        return Err(VnetDrop::TooManySegments);
    }
    let arena = batch.arena_mut();
    let mut chunks = arena[first_slot * slot_bytes..].chunks_exact_mut(slot_bytes);
    let mut outs: [&mut [u8]; MAX_GSO_SEGMENTS] =
        core::array::from_fn(|_| chunks.next().unwrap_or_default());
    let mut sizes = [0usize; MAX_GSO_SEGMENTS];
    let n = tun_rs::gso_split(
        packet,
        hdr.hdr,
        &mut outs[..segments],
        &mut sizes[..segments],
        0,
        is_v6,
    )
    .map_err(|_| VnetDrop::Malformed)?;
    for (i, &len) in sizes.iter().enumerate().take(n) {
        let pushed = batch.push_segment((first_slot + i) * slot_bytes, len);
        debug_assert!(pushed, "invariant: one segment per free slot");
    }
    Ok(n)
}

/// The number of segments a super-packet splits into, or why it cannot be split.
///
/// # Errors
/// [`VnetDrop::Malformed`].
pub(crate) fn segments_needed(hdr: &RxVnetHdr, packet: &[u8]) -> Result<usize, VnetDrop> {
    let mut hdr = *hdr;
    hdr.prepare_split(packet).map(|(n, _)| n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vnic::tests::assert_checksums_valid;

    /// A virtio-net header, little-endian.
    fn raw_hdr(
        flags: u8,
        gso_type: u8,
        gso_size: u16,
        csum_start: u16,
        csum_offset: u16,
    ) -> [u8; 10] {
        let mut h = [0u8; 10];
        h[0] = flags;
        h[1] = gso_type;
        h[2..4].copy_from_slice(&9999u16.to_le_bytes()); // a hdr_len that must be ignored
        h[4..6].copy_from_slice(&gso_size.to_le_bytes());
        h[6..8].copy_from_slice(&csum_start.to_le_bytes());
        h[8..10].copy_from_slice(&csum_offset.to_le_bytes());
        h
    }

    /// An IPv4/TCP super-packet of `payload` bytes as the kernel hands it over: total length
    /// covering everything, IP checksum 0, TCP checksum = the partial pseudo-header sum.
    fn tcp4_super(payload: &[u8], seq: u32, flags: u8) -> Vec<u8> {
        let mut p = vec![0u8; 40 + payload.len()];
        p[0] = 0x45;
        let total = u16::try_from(p.len()).unwrap();
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[10, 77, 0, 1]);
        p[16..20].copy_from_slice(&[10, 77, 0, 2]);
        p[20..22].copy_from_slice(&40000u16.to_be_bytes());
        p[22..24].copy_from_slice(&7000u16.to_be_bytes());
        p[24..28].copy_from_slice(&seq.to_be_bytes());
        p[32] = 5 << 4;
        p[33] = flags;
        p[34..36].copy_from_slice(&65535u16.to_be_bytes());
        p[40..].copy_from_slice(payload);
        p
    }

    fn udp4(payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 28 + payload.len()];
        p[0] = 0x45;
        let total = u16::try_from(p.len()).unwrap();
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&[10, 77, 0, 1]);
        p[16..20].copy_from_slice(&[10, 77, 0, 2]);
        p[20..22].copy_from_slice(&5555u16.to_be_bytes());
        p[22..24].copy_from_slice(&6666u16.to_be_bytes());
        let udp_len = u16::try_from(8 + payload.len()).unwrap();
        p[24..26].copy_from_slice(&udp_len.to_be_bytes());
        p[28..].copy_from_slice(payload);
        p
    }

    /// Puts the pseudo-header sum into the TCP/UDP checksum field, as the kernel does for
    /// CHECKSUM_PARTIAL.
    fn set_partial(p: &mut [u8], csum_at: usize) {
        let proto = p[9];
        let len = u16::try_from(p.len() - 20).unwrap();
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&p[12..20]);
        pseudo.extend_from_slice(&[0, proto]);
        pseudo.extend_from_slice(&len.to_be_bytes());
        let s = ones_complement_sum(&pseudo, 0);
        p[csum_at..csum_at + 2].copy_from_slice(&s.to_be_bytes());
    }

    #[test]
    fn header_parses_little_endian_fields() {
        let h = RxVnetHdr::parse(&raw_hdr(1, GSO_TCPV4, 1448, 20, 16));
        assert!(h.is_gso() && h.needs_csum());
        assert_eq!(h.hdr.gso_size, 1448);
        assert_eq!(h.hdr.csum_start, 20);
        assert_eq!(h.hdr.csum_offset, 16);
        let none = RxVnetHdr::parse(&raw_hdr(0, GSO_NONE, 0, 0, 0));
        assert!(!none.is_gso() && !none.needs_csum());
    }

    #[test]
    fn tcp_super_packet_splits_into_valid_segments() {
        let payload: Vec<u8> = (0..3500u32).map(|i| (i % 251) as u8).collect();
        let mut sup = tcp4_super(&payload, 1_000_000, 0x18); // PSH|ACK
        set_partial(&mut sup, 36);
        let hdr = RxVnetHdr::parse(&raw_hdr(1, GSO_TCPV4, 1000, 20, 16));
        assert_eq!(segments_needed(&hdr, &sup), Ok(4));

        let mut batch = RxBatch::new(8, 1100, 8);
        batch.push_segment(0, 10); // slot 0 already used
        let n = split_into_batch(&hdr, &mut sup, &mut batch, 1).unwrap();
        assert_eq!(n, 4);
        assert_eq!(batch.len(), 5);
        let mut rebuilt = Vec::new();
        for (i, seg) in batch.iter().skip(1).enumerate() {
            assert_checksums_valid(seg);
            let data = &seg[40..];
            assert_eq!(data.len(), if i < 3 { 1000 } else { 500 });
            let seq = u32::from_be_bytes(seg[24..28].try_into().unwrap());
            assert_eq!(seq, 1_000_000 + 1000 * u32::try_from(i).unwrap());
            // PSH only on the last segment.
            assert_eq!(seg[33] & 0x08 != 0, i == 3, "psh on segment {i}");
            let id = u16::from_be_bytes([seg[4], seg[5]]);
            assert_eq!(id, 0x1234 + u16::try_from(i).unwrap());
            rebuilt.extend_from_slice(data);
        }
        assert_eq!(rebuilt, payload);
    }

    #[test]
    fn kernel_hdr_len_is_not_trusted() {
        // The header's hdr_len field says 9999 (see raw_hdr); the split must still work.
        let payload = vec![7u8; 2500];
        let mut sup = tcp4_super(&payload, 1, 0x10);
        set_partial(&mut sup, 36);
        let hdr = RxVnetHdr::parse(&raw_hdr(1, GSO_TCPV4, 1200, 20, 16));
        let mut batch = RxBatch::new(4, 1300, 4);
        assert_eq!(split_into_batch(&hdr, &mut sup, &mut batch, 0), Ok(3));
        batch.iter().for_each(assert_checksums_valid);
    }

    #[test]
    fn udp_super_packet_splits_with_udp_lengths() {
        let payload: Vec<u8> = (0..2600u32).map(|i| (i * 7 % 256) as u8).collect();
        let mut sup = udp4(&payload);
        set_partial(&mut sup, 26);
        let hdr = RxVnetHdr::parse(&raw_hdr(1, GSO_UDP_L4, 1000, 20, 6));
        let mut batch = RxBatch::new(4, 1028, 4);
        assert_eq!(split_into_batch(&hdr, &mut sup, &mut batch, 0), Ok(3));
        let mut rebuilt = Vec::new();
        for seg in batch.iter() {
            assert_checksums_valid(seg);
            rebuilt.extend_from_slice(&seg[28..]);
        }
        assert_eq!(rebuilt, payload);
    }

    #[test]
    fn too_few_free_slots_refuses_without_recording() {
        let mut sup = tcp4_super(&[1u8; 3000], 1, 0x10);
        set_partial(&mut sup, 36);
        let hdr = RxVnetHdr::parse(&raw_hdr(1, GSO_TCPV4, 1000, 20, 16));
        let mut batch = RxBatch::new(4, 1100, 4);
        assert_eq!(
            split_into_batch(&hdr, &mut sup, &mut batch, 2),
            Err(VnetDrop::TooManySegments)
        );
        assert!(batch.is_empty());
    }

    #[test]
    fn malformed_headers_are_refused() {
        let mut sup = tcp4_super(&[1u8; 3000], 1, 0x10);
        let mut batch = RxBatch::new(8, 1100, 8);
        let cases = [
            raw_hdr(1, GSO_TCPV4, 0, 20, 16),      // gso_size 0
            raw_hdr(1, GSO_TCPV6, 1000, 20, 16),   // v6 type on a v4 packet
            raw_hdr(1, 3, 1000, 20, 16),           // UFO: not supported
            raw_hdr(1, GSO_TCPV4, 1000, 5000, 16), // csum_start past the end
            raw_hdr(1, GSO_TCPV4, 1000, 20, 6),    // UDP's offset on TCP
            raw_hdr(1, GSO_TCPV4, 1000, 8, 16),    // csum_start inside the IP header
        ];
        for raw in cases {
            let hdr = RxVnetHdr::parse(&raw);
            assert_eq!(
                split_into_batch(&hdr, &mut sup, &mut batch, 0),
                Err(VnetDrop::Malformed),
                "{raw:?}"
            );
            assert!(batch.is_empty());
        }
        let mut not_ip = sup.clone();
        not_ip[0] = 0x15;
        let hdr = RxVnetHdr::parse(&raw_hdr(1, GSO_TCPV4, 1000, 20, 16));
        assert_eq!(segments_needed(&hdr, &not_ip), Err(VnetDrop::Malformed));
        assert_eq!(segments_needed(&hdr, &[]), Err(VnetDrop::Malformed));
    }

    #[test]
    fn partial_checksum_is_completed() {
        let mut p = udp4(b"hello braid, a partial checksum");
        set_partial(&mut p, 26);
        let hdr = RxVnetHdr::parse(&raw_hdr(1, GSO_NONE, 0, 20, 6));
        complete_checksum(&hdr, &mut p).unwrap();
        // The IPv4 header checksum is the kernel's job (it is complete already); set it here.
        let ip = etherparse::Ipv4HeaderSlice::from_slice(&p)
            .unwrap()
            .to_header();
        let c = ip.calc_header_checksum();
        p[10..12].copy_from_slice(&c.to_be_bytes());
        assert_checksums_valid(&p);

        let short = RxVnetHdr::parse(&raw_hdr(1, GSO_NONE, 0, 20, 60));
        assert_eq!(complete_checksum(&short, &mut p), Err(VnetDrop::Malformed));
    }

    #[test]
    fn ones_complement_sum_equals_the_16_bit_definition() {
        fn by_16_bits(data: &[u8], initial: u32) -> u16 {
            let mut sum = u64::from(initial);
            let mut chunks = data.chunks_exact(2);
            for c in &mut chunks {
                sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
            }
            if let [last] = chunks.remainder() {
                sum += u64::from(*last) << 8;
            }
            while sum > 0xffff {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            u16::try_from(sum).expect("folded")
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut data = vec![0u8; 9_001];
        for b in &mut data {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        for len in (0..64).chain([1499, 1500, 8999, 9000, 9001]) {
            for initial in [0, 0xffff, 0x1_2345, u32::MAX >> 1] {
                assert_eq!(
                    ones_complement_sum(&data[..len], initial),
                    by_16_bits(&data[..len], initial),
                    "len {len} initial {initial:#x}"
                );
            }
        }
        // All ones: the sum must fold to 0xffff, never 0.
        assert_eq!(ones_complement_sum(&[0xff; 1500], 0), 0xffff);
    }

    #[test]
    fn ones_complement_sum_matches_rfc1071_example() {
        // RFC 1071 §3: the sum of 00 01 f2 03 f4 f5 f6 f7 is ddf2.
        assert_eq!(
            ones_complement_sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7], 0),
            0xddf2
        );
        // 0xff00 + 0x0100 = 0x1_0000, folded: 0x0001.
        assert_eq!(ones_complement_sum(&[0xff], 0x0100), 0x0001);
    }
}
