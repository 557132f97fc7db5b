//! The send half of the vNIC's virtio-net header offloads: coalescing the packets of one
//! flow queued for the kernel into one TCP or UDP super-packet (GRO done by the sender), so
//! the kernel's stack runs once per 64 KiB instead of once per packet.
//!
//! What this module owns: [`Coalescer`]. What it does not: the buffers (the queue's send
//! buffers, each with [`VNET_HDR_LEN`] bytes of header room first), the writes, and the
//! receive side ([`super::offload`]).
//!
//! # Why not tun-rs' `send_multiple`
//!
//! tun-rs ports wireguard-go's `handleGRO`, but copies every packet into a fresh `Vec` before
//! looking at it (`tcp_gro` / `udp_gro`): one allocation per packet, which braid's hot path
//! does not allow. This is a smaller, allocation-free version of the same rules (wireguard-go
//! `tun/offload_linux.go`, which follows the kernel's GRO self-tests):
//!
//! - Candidates: IPv4 without options and not a fragment, or IPv6 whose next header is TCP or
//!   UDP; length fields consistent with the buffer; TCP with only ACK or ACK|PSH set and a
//!   payload; UDP with a payload (only when the device accepts USO).
//! - A packet joins an open super-packet of its flow (addresses, ports, and for TCP the
//!   acknowledgement number) when the IP headers agree (IPv4 ToS, DF/reserved bits, TTL; IPv6
//!   traffic class and hop limit), TCP header length and options are equal, its TCP sequence
//!   number follows exactly, its payload is not larger than the first packet's (`gso_size`),
//!   nothing shorter or with PSH was appended before, the result stays ≤ 65 535 bytes and
//!   [`MAX_SEGMENTS`] segments, and both its checksum and the head's verify (a super-packet
//!   gets a new checksum from the kernel, which must not launder a corrupt segment).
//! - Only appends: a packet that arrives before the one it precedes starts its own write.
//! - The super-packet's header: `VIRTIO_NET_HDR_F_NEEDS_CSUM`, `GSO_TCPV4/TCPV6/UDP_L4`,
//!   `gso_size` = the first payload, `csum_start` = IP header length; its IP length (and IPv4
//!   header checksum, UDP length) rewritten, the transport checksum field set to the
//!   pseudo-header sum the kernel completes (RFC 1071, RFC 793 §3.1, RFC 768).
//!
//! Open flows live in a fixed table of [`OPEN_FLOWS`] entries searched linearly; a flow
//! pushed out simply stops growing. Writes keep the order of each super-packet's first
//! packet, so one flow is never reordered.

use super::offload::{VNET_HDR_LEN, ones_complement_sum};

/// Most packets in one super-packet (the kernel's `UDP_MAX_SEGMENTS` on older kernels).
pub(crate) const MAX_SEGMENTS: u16 = 64;

/// Flows tracked at once within one flush.
const OPEN_FLOWS: usize = 16;

const TCP: u8 = 6;
const UDP: u8 = 17;
const TCP_FLAG_ACK: u8 = 0x10;
const TCP_FLAG_PSH: u8 = 0x08;
const F_NEEDS_CSUM: u8 = 1;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_UDP_L4: u8 = 5;

/// What identifies a flow for coalescing.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FlowKey {
    src: [u8; 16],
    dst: [u8; 16],
    src_port: u16,
    dst_port: u16,
    /// TCP acknowledgement number (0 for UDP).
    ack: u32,
    protocol: u8,
}

/// A packet that may be coalesced.
#[derive(Clone, Copy)]
struct Candidate {
    key: FlowKey,
    is_v6: bool,
    /// IP header length (20 or 40).
    iph: usize,
    /// Transport header length (8 for UDP).
    l4h: usize,
    payload: usize,
    seq: u32,
    psh: bool,
}

/// One write: a buffer, and what was merged into it.
#[derive(Clone, Copy)]
struct Write {
    buf: u16,
    /// Set when the packet is a candidate (it can head a super-packet).
    head: Option<Head>,
}

#[derive(Clone, Copy)]
struct Head {
    cand: Candidate,
    merged: u16,
    /// The TCP sequence number the next segment must carry.
    next_seq: u32,
    /// Nothing more may be appended (a short or PSH segment was, or the head's checksum is
    /// bad).
    closed: bool,
    /// The head's own checksum was verified.
    head_verified: bool,
}

/// Plans and builds the coalesced writes of one flush. Allocated once per queue.
#[derive(Debug)]
pub(crate) struct Coalescer {
    writes: Vec<Write>,
    /// (flow, index into `writes`) of the open super-packets.
    open: [Option<(FlowKey, u16)>; OPEN_FLOWS],
    /// Next slot of `open` to overwrite when it is full (round robin).
    evict: usize,
}

impl std::fmt::Debug for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Write")
            .field("buf", &self.buf)
            .field("merged", &self.head.map_or(0, |h| h.merged))
            .finish()
    }
}

impl std::fmt::Debug for FlowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowKey")
            .field("protocol", &self.protocol)
            .field("src_port", &self.src_port)
            .field("dst_port", &self.dst_port)
            .finish_non_exhaustive()
    }
}

impl Coalescer {
    /// A coalescer for flushes of up to `capacity` packets.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            writes: Vec::with_capacity(capacity),
            open: [None; OPEN_FLOWS],
            evict: 0,
        }
    }

    /// Coalesces `bufs` (each: [`VNET_HDR_LEN`] zeroed header bytes, then a packet; at most
    /// the capacity given to [`Coalescer::new`], at most 65 535) in place: packets are
    /// appended to the buffer of their super-packet's first packet, whose header and lengths
    /// are rewritten. Afterwards [`Coalescer::writes`] lists the buffers to write, in order,
    /// each with the number of packets merged into it.
    pub(crate) fn coalesce(&mut self, bufs: &mut [Vec<u8>], udp: bool) {
        self.writes.clear();
        self.open = [None; OPEN_FLOWS];
        self.evict = 0;
        for i in 0..bufs.len() {
            let buf = u16::try_from(i).expect("invariant: flush below 65536 packets");
            let Some(cand) = classify(&bufs[i][VNET_HDR_LEN..], udp) else {
                self.writes.push(Write { buf, head: None });
                continue;
            };
            if let Some(slot) = self
                .open
                .iter()
                .position(|o| o.is_some_and(|(k, _)| k == cand.key))
            {
                let (_, w) = self.open[slot].expect("invariant: slot found occupied");
                if self.try_append(bufs, usize::from(w), i, &cand) {
                    continue;
                }
                // This packet heads the flow's next super-packet.
                self.open[slot] = Some((cand.key, self.next_write_index()));
            } else {
                let slot = self
                    .open
                    .iter()
                    .position(Option::is_none)
                    .unwrap_or_else(|| {
                        let s = self.evict;
                        self.evict = (self.evict + 1) % OPEN_FLOWS;
                        s
                    });
                self.open[slot] = Some((cand.key, self.next_write_index()));
            }
            self.writes.push(Write {
                buf,
                head: Some(Head {
                    cand,
                    merged: 0,
                    next_seq: cand.seq.wrapping_add(payload_u32(cand.payload)),
                    closed: cand.psh,
                    head_verified: false,
                }),
            });
        }
        for w in &self.writes {
            if let Some(h) = w.head.filter(|h| h.merged > 0) {
                finish(&mut bufs[usize::from(w.buf)], &h);
            }
        }
    }

    /// The writes of the last [`Coalescer::coalesce`]: (buffer index, packets merged into
    /// it), in order.
    pub(crate) fn writes(&self) -> impl Iterator<Item = (usize, u16)> + '_ {
        self.writes
            .iter()
            .map(|w| (usize::from(w.buf), w.head.map_or(0, |h| h.merged)))
    }

    fn next_write_index(&self) -> u16 {
        u16::try_from(self.writes.len()).expect("invariant: flush below 65536 packets")
    }

    /// Appends packet `i` to the super-packet of write `w` if the rules allow.
    fn try_append(&mut self, bufs: &mut [Vec<u8>], w: usize, i: usize, cand: &Candidate) -> bool {
        let h = usize::from(self.writes[w].buf);
        let Some(head) = self.writes[w].head.as_mut() else {
            return false;
        };
        debug_assert!(h < i, "invariant: the head was queued first");
        let (left, right) = bufs.split_at_mut(i);
        let (head_buf, pkt_buf) = (&mut left[h], &right[0]);
        let head_pkt = &head_buf[VNET_HDR_LEN..];
        let pkt = &pkt_buf[VNET_HDR_LEN..];
        let hc = head.cand;
        let fits = !head.closed
            && head.merged + 1 < MAX_SEGMENTS
            && cand.l4h == hc.l4h
            && cand.payload <= hc.payload
            && head_pkt.len() + cand.payload <= usize::from(u16::MAX)
            && VNET_HDR_LEN + head_pkt.len() + cand.payload <= head_buf.capacity()
            && ip_headers_match(head_pkt, pkt, hc.is_v6)
            && (cand.key.protocol == UDP
                || (cand.seq == head.next_seq
                    && head_pkt[hc.iph + 20..hc.iph + hc.l4h]
                        == pkt[cand.iph + 20..cand.iph + cand.l4h]));
        if !fits {
            return false;
        }
        if !head.head_verified {
            if !checksum_ok(head_pkt, &hc) {
                head.closed = true;
                return false;
            }
            head.head_verified = true;
        }
        if !checksum_ok(pkt, cand) {
            return false;
        }
        let data = cand.iph + cand.l4h;
        head_buf.extend_from_slice(&pkt[data..]);
        head.merged += 1;
        head.next_seq = head.next_seq.wrapping_add(payload_u32(cand.payload));
        if cand.payload < hc.payload {
            head.closed = true;
        }
        if cand.psh {
            // PSH belongs on the last segment; the kernel's segmentation keeps it there.
            head_buf[VNET_HDR_LEN + hc.iph + 13] |= TCP_FLAG_PSH;
            head.closed = true;
        }
        true
    }
}

fn payload_u32(len: usize) -> u32 {
    u32::try_from(len).expect("invariant: payload below 64 KiB")
}

/// The coalescing facts of a packet, `None` if it is not a candidate.
fn classify(p: &[u8], udp: bool) -> Option<Candidate> {
    let (is_v6, iph, protocol, src, dst) = match p.first()? >> 4 {
        4 => {
            if p.len() < 20 || p[0] & 0x0f != 5 || usize::from(be16(p, 2)) != p.len() {
                return None;
            }
            // MF set or a fragment offset: a fragment.
            if p[6] & 0x20 != 0 || (be16(p, 6) & 0x1fff) != 0 {
                return None;
            }
            (false, 20, p[9], &p[12..16], &p[16..20])
        }
        6 => {
            if p.len() < 40 || usize::from(be16(p, 4)) != p.len() - 40 {
                return None;
            }
            (true, 40, p[6], &p[8..24], &p[24..40])
        }
        _ => return None,
    };
    let mut key = FlowKey {
        src: [0; 16],
        dst: [0; 16],
        src_port: 0,
        dst_port: 0,
        ack: 0,
        protocol,
    };
    key.src[..src.len()].copy_from_slice(src);
    key.dst[..dst.len()].copy_from_slice(dst);
    let l4 = p.get(iph..)?;
    let (l4h, seq, psh) = match protocol {
        TCP => {
            let l4h = usize::from(*l4.get(12)? >> 4) * 4;
            if !(20..=60).contains(&l4h) || l4.len() < l4h {
                return None;
            }
            let psh = match l4[13] {
                TCP_FLAG_ACK => false,
                f if f == TCP_FLAG_ACK | TCP_FLAG_PSH => true,
                _ => return None,
            };
            key.ack = u32::from_be_bytes([l4[8], l4[9], l4[10], l4[11]]);
            (l4h, u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]), psh)
        }
        UDP if udp => {
            if l4.len() < 8 || usize::from(be16(l4, 4)) != l4.len() {
                return None;
            }
            (8, 0, false)
        }
        _ => return None,
    };
    key.src_port = be16(l4, 0);
    key.dst_port = be16(l4, 2);
    let payload = l4.len() - l4h;
    (payload > 0).then_some(Candidate {
        key,
        is_v6,
        iph,
        l4h,
        payload,
        seq,
        psh,
    })
}

fn be16(p: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([p[at], p[at + 1]])
}

/// IP header fields that must agree (wireguard-go `ipHeadersCanCoalesce`).
fn ip_headers_match(a: &[u8], b: &[u8], is_v6: bool) -> bool {
    if is_v6 {
        // Version + traffic class, hop limit.
        a[0] == b[0] && a[1] >> 4 == b[1] >> 4 && a[7] == b[7]
    } else {
        // ToS, DF/reserved bits, TTL.
        a[1] == b[1] && a[6] >> 5 == b[6] >> 5 && a[8] == b[8]
    }
}

/// The one's complement sum of the pseudo-header (RFC 793 §3.1, RFC 8200 §8.1).
fn pseudo_header_sum(p: &[u8], c: &Candidate, l4_len: usize) -> u32 {
    let addrs = if c.is_v6 { &p[8..40] } else { &p[12..20] };
    let len = u32::try_from(l4_len).expect("invariant: below 64 KiB");
    u32::from(ones_complement_sum(addrs, 0)) + u32::from(c.key.protocol) + len
}

/// `true` if the packet's transport checksum verifies (a UDP checksum of 0, "none", does not:
/// the super-packet would get one).
fn checksum_ok(p: &[u8], c: &Candidate) -> bool {
    let l4 = &p[c.iph..];
    if c.key.protocol == UDP && be16(l4, 6) == 0 {
        return false;
    }
    ones_complement_sum(l4, pseudo_header_sum(p, c, l4.len())) == 0xffff
}

/// Writes the super-packet's virtio header, lengths and partial checksum.
fn finish(buf: &mut [u8], h: &Head) {
    let c = &h.cand;
    let (hdr, p) = buf.split_at_mut(VNET_HDR_LEN);
    let len = p.len();
    let l4_len = len - c.iph;
    if c.is_v6 {
        p[4..6].copy_from_slice(&be(l4_len));
    } else {
        p[2..4].copy_from_slice(&be(len));
        p[10..12].fill(0);
        let sum = !ones_complement_sum(&p[..20], 0);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
    }
    let (gso_type, csum_offset) = match (c.key.protocol, c.is_v6) {
        (UDP, _) => {
            p[c.iph + 4..c.iph + 6].copy_from_slice(&be(l4_len));
            (GSO_UDP_L4, 6u16)
        }
        (_, false) => (GSO_TCPV4, 16),
        (_, true) => (GSO_TCPV6, 16),
    };
    let at = c.iph + usize::from(csum_offset);
    let partial = ones_complement_sum(&[], pseudo_header_sum(p, c, l4_len));
    p[at..at + 2].copy_from_slice(&partial.to_be_bytes());
    let le = |v: usize| {
        u16::try_from(v)
            .expect("invariant: below 64 KiB")
            .to_le_bytes()
    };
    hdr[0] = F_NEEDS_CSUM;
    hdr[1] = gso_type;
    hdr[2..4].copy_from_slice(&le(c.iph + c.l4h));
    hdr[4..6].copy_from_slice(&le(c.payload));
    hdr[6..8].copy_from_slice(&le(c.iph));
    hdr[8..10].copy_from_slice(&csum_offset.to_le_bytes());
}

fn be(v: usize) -> [u8; 2] {
    u16::try_from(v)
        .expect("invariant: below 64 KiB")
        .to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::super::offload::{RxVnetHdr, split_into_batch};
    use super::*;
    use crate::transport::RxBatch;
    use crate::vnic::tests::assert_checksums_valid;

    const CAP: usize = 2 * VNET_HDR_LEN + 65_535;

    /// A TCP/IPv4 packet with valid checksums, in a send buffer (zeroed header first).
    fn tcp4(seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ipv4([10, 1, 0, 1], [10, 1, 0, 2], 64)
            .tcp(40000, 80, seq, 65535)
            .ack(ack);
        let b = if flags & TCP_FLAG_PSH != 0 {
            b.psh()
        } else {
            b
        };
        let mut buf = Vec::with_capacity(CAP);
        buf.resize(VNET_HDR_LEN, 0);
        b.write(&mut buf, payload).unwrap();
        buf
    }

    fn udp4(sport: u16, payload: &[u8]) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ipv4([10, 1, 0, 1], [10, 1, 0, 2], 64).udp(sport, 53);
        let mut buf = Vec::with_capacity(CAP);
        buf.resize(VNET_HDR_LEN, 0);
        b.write(&mut buf, payload).unwrap();
        buf
    }

    fn udp6(payload: &[u8]) -> Vec<u8> {
        let src = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let mut dst = src;
        dst[15] = 2;
        let b = etherparse::PacketBuilder::ipv6(src, dst, 64).udp(5000, 6000);
        let mut buf = Vec::with_capacity(CAP);
        buf.resize(VNET_HDR_LEN, 0);
        b.write(&mut buf, payload).unwrap();
        buf
    }

    fn plan(c: &Coalescer) -> Vec<(usize, u16)> {
        c.writes().collect()
    }

    /// Splits a written super-packet back with the receive path (tun-rs' gso_split) and
    /// returns the segments: the round trip must give back the original packets.
    fn resplit(buf: &[u8], segments: usize) -> Vec<Vec<u8>> {
        let hdr = RxVnetHdr::parse(buf[..VNET_HDR_LEN].try_into().unwrap());
        assert!(hdr.is_gso());
        let mut pkt = buf[VNET_HDR_LEN..].to_vec();
        let mut batch = RxBatch::new(segments, 1500, segments);
        assert_eq!(
            split_into_batch(&hdr, &mut pkt, &mut batch, 0),
            Ok(segments)
        );
        batch.iter().map(<[u8]>::to_vec).collect()
    }

    #[test]
    fn in_order_tcp_segments_become_one_super_packet() {
        let payloads: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 1000]).collect();
        let mut bufs: Vec<Vec<u8>> = (0..4u32)
            .map(|i| {
                let flags = if i == 3 {
                    TCP_FLAG_ACK | TCP_FLAG_PSH
                } else {
                    TCP_FLAG_ACK
                };
                tcp4(7000 + 1000 * i, 99, flags, &payloads[i as usize])
            })
            .collect();
        let originals: Vec<Vec<u8>> = bufs.iter().map(|b| b[VNET_HDR_LEN..].to_vec()).collect();
        let mut c = Coalescer::new(8);
        c.coalesce(&mut bufs, false);
        assert_eq!(plan(&c), vec![(0, 3)]);
        let hdr = &bufs[0][..VNET_HDR_LEN];
        assert_eq!((hdr[0], hdr[1]), (F_NEEDS_CSUM, GSO_TCPV4));
        assert_eq!(u16::from_le_bytes([hdr[4], hdr[5]]), 1000);
        assert_eq!(bufs[0].len(), VNET_HDR_LEN + 40 + 4000);
        for (seg, orig) in resplit(&bufs[0], 4).iter().zip(&originals) {
            assert_checksums_valid(seg);
            // Same bytes except the IPv4 identification (the split numbers it from the head)
            // and so the IPv4 header checksum.
            assert_eq!(seg[..4], orig[..4]);
            assert_eq!(seg[6..10], orig[6..10]);
            assert_eq!(seg[12..], orig[12..]);
        }
    }

    #[test]
    fn tcp_rules_keep_packets_apart() {
        let mut c = Coalescer::new(16);
        // A gap in sequence, another ack, a SYN, a larger packet after a smaller one, and
        // anything after PSH: each starts its own write.
        let mut bufs = vec![
            tcp4(0, 1, TCP_FLAG_ACK, &[1; 500]),
            tcp4(600, 1, TCP_FLAG_ACK, &[2; 500]),  // gap
            tcp4(1100, 2, TCP_FLAG_ACK, &[3; 500]), // other ack: other flow
            tcp4(1100, 1, TCP_FLAG_ACK, &[4; 300]), // follows #1: merges (short, closes)
            tcp4(1400, 1, TCP_FLAG_ACK, &[5; 300]), // after a short one
            tcp4(1700, 1, TCP_FLAG_ACK | TCP_FLAG_PSH, &[6; 300]), // follows #4: merges, PSH
            tcp4(2000, 1, TCP_FLAG_ACK, &[7; 300]), // after PSH
        ];
        let mut syn = tcp4(2300, 1, TCP_FLAG_ACK, &[8; 300]);
        syn[VNET_HDR_LEN + 20 + 13] |= 0x02;
        bufs.push(syn);
        c.coalesce(&mut bufs, false);
        assert_eq!(
            plan(&c),
            vec![(0, 0), (1, 1), (2, 0), (4, 1), (6, 0), (7, 0)],
            "writes (buffer, merged)"
        );
    }

    #[test]
    fn a_bad_checksum_is_never_merged() {
        let mut bufs = vec![
            tcp4(0, 1, TCP_FLAG_ACK, &[1; 500]),
            tcp4(500, 1, TCP_FLAG_ACK, &[2; 500]),
        ];
        let last = bufs[1].len() - 1;
        bufs[1][last] ^= 0xff; // corrupt the payload
        let mut c = Coalescer::new(4);
        c.coalesce(&mut bufs, false);
        assert_eq!(plan(&c), vec![(0, 0), (1, 0)]);
        // Untouched: GSO_NONE headers.
        assert!(bufs.iter().all(|b| b[..VNET_HDR_LEN] == [0; VNET_HDR_LEN]));
    }

    #[test]
    fn udp_merges_only_with_uso_and_by_flow() {
        let make = || {
            vec![
                udp4(1, &[1; 800]),
                udp4(2, &[9; 800]),
                udp4(1, &[2; 800]),
                udp4(1, &[3; 500]),
                udp4(1, &[4; 500]), // after a short one
            ]
        };
        let mut c = Coalescer::new(8);
        let mut bufs = make();
        c.coalesce(&mut bufs, false);
        assert_eq!(
            plan(&c).iter().map(|w| w.1).sum::<u16>(),
            0,
            "no USO, no UDP merge"
        );

        let mut bufs = make();
        let originals: Vec<Vec<u8>> = bufs.iter().map(|b| b[VNET_HDR_LEN..].to_vec()).collect();
        c.coalesce(&mut bufs, true);
        assert_eq!(plan(&c), vec![(0, 2), (1, 0), (4, 0)]);
        assert_eq!(bufs[0][1], GSO_UDP_L4);
        let segs = resplit(&bufs[0], 3);
        for (seg, orig) in segs
            .iter()
            .zip([&originals[0], &originals[2], &originals[3]])
        {
            assert_checksums_valid(seg);
            assert_eq!(seg[28..], orig[28..]);
        }
    }

    #[test]
    fn udp6_merges_and_round_trips() {
        let mut bufs = vec![udp6(&[1; 1000]), udp6(&[2; 1000]), udp6(&[3; 10])];
        let originals: Vec<Vec<u8>> = bufs.iter().map(|b| b[VNET_HDR_LEN..].to_vec()).collect();
        let mut c = Coalescer::new(4);
        c.coalesce(&mut bufs, true);
        assert_eq!(plan(&c), vec![(0, 2)]);
        let hdr = RxVnetHdr::parse(bufs[0][..VNET_HDR_LEN].try_into().unwrap());
        let mut pkt = bufs[0][VNET_HDR_LEN..].to_vec();
        let mut batch = RxBatch::new(3, 1100, 3);
        assert_eq!(split_into_batch(&hdr, &mut pkt, &mut batch, 0), Ok(3));
        for (seg, orig) in batch.iter().zip(&originals) {
            assert_eq!(seg, &orig[..], "IPv6 segments come back byte for byte");
        }
    }

    #[test]
    fn segment_and_size_caps_hold() {
        let mut c = Coalescer::new(100);
        let mut bufs: Vec<Vec<u8>> = (0..70).map(|_| udp4(1, &[7; 100])).collect();
        c.coalesce(&mut bufs, true);
        assert_eq!(plan(&c), vec![(0, MAX_SEGMENTS - 1), (64, 5)]);

        let mut bufs: Vec<Vec<u8>> = (0..50u32)
            .map(|i| tcp4(i * 1400, 5, TCP_FLAG_ACK, &[3; 1400]))
            .collect();
        c.coalesce(&mut bufs, false);
        let writes = plan(&c);
        // 46 × 1400 + 40 > 65 535: the 47th segment starts a new super-packet.
        assert_eq!(writes, vec![(0, 45), (46, 3)]);
        assert!(bufs[0].len() - VNET_HDR_LEN <= 65_535);
        assert_checksums_valid(&resplit(&bufs[0], 46)[45]);
    }

    #[test]
    fn non_candidates_pass_through_untouched() {
        let mut frag = udp4(1, &[1; 100]);
        frag[VNET_HDR_LEN + 6] = 0x20; // MF
        let mut opts = tcp4(0, 1, TCP_FLAG_ACK, &[1; 100]);
        opts[VNET_HDR_LEN] = 0x46; // IHL 6: options (and now inconsistent)
        let icmp = {
            let b = etherparse::PacketBuilder::ipv4([10, 1, 0, 1], [10, 1, 0, 2], 64)
                .icmpv4_echo_request(1, 1);
            let mut buf = vec![0; VNET_HDR_LEN];
            b.write(&mut buf, &[0; 32]).unwrap();
            buf
        };
        let mut bufs = vec![
            frag.clone(),
            frag,
            opts.clone(),
            opts,
            icmp.clone(),
            icmp,
            vec![0; 10],
            vec![0x45; 11],
        ];
        let before = bufs.clone();
        let mut c = Coalescer::new(8);
        c.coalesce(&mut bufs, true);
        assert_eq!(plan(&c).len(), 8);
        assert_eq!(bufs, before);
    }
}
