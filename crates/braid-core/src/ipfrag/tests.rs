//! Tests of standard IP fragmentation and reassembly: RFC behaviour of the fragmenter (byte
//! checks a kernel would make), reassembly of IPv4/IPv6 (with options and extension headers),
//! the attack matrix of ARCHITECTURE.md (one test per row, both IP versions), caps, timeouts,
//! FragmentSmack, and a property test over permutations, duplicates, losses and overlaps.

use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;

use proptest::prelude::*;

use super::parse::{NH_DEST_OPTS, NH_FRAGMENT, NH_HOP_BY_HOP, NH_ROUTING, ipv4_checksum_ok};
use super::*;

const UDP: u8 = 17;
const TIMEOUT_MS: u64 = 100;

// ---------------------------------------------------------------------------------------------
// Packet builders
// ---------------------------------------------------------------------------------------------

/// The byte at datagram offset `o` of datagram `id`: fragments of one datagram always agree.
fn pattern(id: u32, off: usize, len: usize) -> Vec<u8> {
    (off..off + len)
        .map(|o| (o as u32).wrapping_mul(7).wrapping_add(id.wrapping_mul(13)) as u8)
        .collect()
}

/// An IPv4 header (no checksum yet) of `hdr_len` bytes with `options` after the base header.
fn v4_header(id: u16, flags_off: u16, total: usize, options: &[u8]) -> Vec<u8> {
    let ihl = 20 + options.len();
    assert_eq!(ihl % 4, 0, "options padded");
    let mut h = vec![0u8; ihl];
    h[0] = 0x40 | (ihl / 4) as u8;
    h[1] = 0xb8; // DSCP EF, kept through fragmentation and reassembly
    h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    h[4..6].copy_from_slice(&id.to_be_bytes());
    h[6..8].copy_from_slice(&flags_off.to_be_bytes());
    h[8] = 64;
    h[9] = UDP;
    h[12..16].copy_from_slice(&[10, 0, 0, 1]);
    h[16..20].copy_from_slice(&[10, 0, 0, 2]);
    h[20..].copy_from_slice(options);
    parse::ipv4_fill_checksum(&mut h);
    h
}

/// A whole IPv4 packet of `payload` bytes (pattern data).
fn v4_packet(id: u16, payload: usize, options: &[u8], flags: u16) -> Vec<u8> {
    let mut p = v4_header(id, flags, 20 + options.len() + payload, options);
    p.extend(pattern(u32::from(id), 0, payload));
    p
}

/// An IPv4 fragment with arbitrary offset, data length and MF (pattern data).
fn v4_frag(id: u16, off: usize, len: usize, more: bool) -> Vec<u8> {
    let fo = (off / 8) as u16 | if more { 0x2000 } else { 0 };
    let mut p = v4_header(id, fo, 20 + len, &[]);
    p.extend(pattern(u32::from(id), off, len));
    p
}

fn v6_base(payload_len: usize, nh: u8) -> Vec<u8> {
    let mut h = vec![0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&(payload_len as u16).to_be_bytes());
    h[6] = nh;
    h[7] = 64;
    h[8..24].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    h[24..40].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    h
}

/// An extension header of type-agnostic layout: next header, length in 8-octet units - 1,
/// padding (PadN-free zeros are fine for the tests: nobody parses the options).
fn ext(next: u8, units: u8) -> Vec<u8> {
    let mut e = vec![0u8; (usize::from(units) + 1) * 8];
    e[0] = next;
    e[1] = units;
    e
}

/// A whole IPv6 packet: IPv6 header, the extension headers `exts` (types in order), then
/// `payload` bytes of UDP-ish pattern data.
fn v6_packet(id_seed: u32, exts: &[u8], payload: usize) -> Vec<u8> {
    let mut chain = Vec::new();
    for (i, _) in exts.iter().enumerate() {
        let next = exts.get(i + 1).copied().unwrap_or(UDP);
        chain.extend(ext(next, 1));
    }
    let first = exts.first().copied().unwrap_or(UDP);
    let mut p = v6_base(chain.len() + payload, first);
    p.extend(chain);
    p.extend(pattern(id_seed, 0, payload));
    p
}

/// An IPv6 fragment (no other extension header) with arbitrary offset, length and M.
fn v6_frag(id: u32, off: usize, len: usize, more: bool) -> Vec<u8> {
    let mut p = v6_base(8 + len, NH_FRAGMENT);
    let off_m = off as u16 & !7 | u16::from(more);
    p.extend([UDP, 0]);
    p.extend(off_m.to_be_bytes());
    p.extend(id.to_be_bytes());
    p.extend(pattern(id, off, len));
    p
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ver {
    V4,
    V6,
}

const BOTH: [Ver; 2] = [Ver::V4, Ver::V6];

fn frag(v: Ver, id: u16, off: usize, len: usize, more: bool) -> Vec<u8> {
    match v {
        Ver::V4 => v4_frag(id, off, len, more),
        Ver::V6 => v6_frag(u32::from(id), off, len, more),
    }
}

/// What `frag` fragments reassemble to when the datagram's data is `total` bytes.
fn expected(v: Ver, id: u16, total: usize) -> Vec<u8> {
    match v {
        Ver::V4 => {
            let mut p = v4_header(id, 0, 20 + total, &[]);
            p.extend(pattern(u32::from(id), 0, total));
            p
        }
        Ver::V6 => {
            let mut p = v6_base(total, UDP);
            p.extend(pattern(u32::from(id), 0, total));
            p
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rig
// ---------------------------------------------------------------------------------------------

#[derive(Debug, PartialEq, Eq)]
enum Res {
    NotFragment,
    Pending,
    Done(Vec<u8>),
    Drop(IpFragDrop),
}

struct Rig {
    r: IpReassembler,
    out: PacketStore,
    done: Vec<Vec<u8>>,
}

fn cfg() -> IpReassemblyConfig {
    IpReassemblyConfig {
        timeout: Duration::from_millis(TIMEOUT_MS),
        hash_seed: 0xfeed_f00d,
        ..IpReassemblyConfig::default()
    }
}

impl Rig {
    fn new(config: IpReassemblyConfig) -> Self {
        Self {
            r: IpReassembler::new(config),
            out: PacketStore::new(64 << 20, MAX_BUF_BYTES),
            done: Vec::new(),
        }
    }

    fn feed_at(&mut self, now: Instant, pkt: &[u8]) -> Res {
        let res = match self.r.insert(now, &mut self.out, pkt) {
            IpFragOutcome::NotFragment => Res::NotFragment,
            IpFragOutcome::Pending => Res::Pending,
            IpFragOutcome::Complete { buf, len } => {
                let bytes = self.out.get(&buf).to_vec();
                assert_eq!(bytes.len(), len);
                self.out.free(buf);
                self.done.push(bytes.clone());
                Res::Done(bytes)
            }
            IpFragOutcome::Dropped(r) => Res::Drop(r),
        };
        self.r.check_invariants().expect("invariants");
        assert_eq!(self.out.used_bytes(), 0, "outputs are freed by the rig");
        res
    }

    fn feed(&mut self, t_ms: u64, pkt: &[u8]) -> Res {
        self.feed_at(Instant::from_millis(t_ms), pkt)
    }

    /// Expire everything due at `t_ms`, in budgets of 3.
    fn expire(&mut self, t_ms: u64) -> usize {
        let now = Instant::from_millis(t_ms);
        let mut total = 0;
        loop {
            let n = self.r.handle_timeout(now, 3);
            total += n;
            self.r.check_invariants().expect("invariants");
            if n < 3 {
                return total;
            }
        }
    }

    fn drops(&self) -> IpFragDrops {
        self.r.stats().drops
    }

    /// After every deadline: nothing outlives its timeout.
    fn assert_empty_after_timeout(&mut self, t_ms: u64) {
        self.expire(t_ms + TIMEOUT_MS + 1);
        let s = self.r.stats();
        assert_eq!(
            (s.contexts_live, s.tombstones_live, s.bytes_held),
            (0, 0, 0)
        );
        assert_eq!(self.r.poll_timeout(), None);
    }
}

/// Only `reason` was counted, `n` times.
fn only(drops: &IpFragDrops, reason: IpFragDrop, n: u64) {
    assert_eq!(drops.get(reason), n, "{reason} count in {drops:?}");
    assert_eq!(drops.total(), n, "no other drop in {drops:?}");
}

/// All fragments of `packet` at `mtu`, as emitted by the fragmenter.
fn fragments(packet: &[u8], mtu: usize, ids: &mut FragIdCounter) -> Vec<Vec<u8>> {
    let mut f = Fragmenter::new(packet, mtu, ids).expect("fragmentable");
    let count = f.fragment_count();
    let mut out = Vec::new();
    let mut buf = vec![0u8; mtu.max(packet.len())];
    while let Some(len) = f.write_next(&mut buf).expect("buffer large enough") {
        out.push(buf[..len].to_vec());
    }
    assert_eq!(out.len(), count, "fragment_count matches");
    assert_eq!(f.write_next(&mut buf), Ok(None), "done stays done");
    out
}

/// The checks a receiving kernel makes on each fragment of a fragmented packet (Linux
/// `ip_rcv`/`ip_defrag`, `ipv6_frag_rcv`): size within the MTU, valid IPv4 header checksum and
/// lengths, non-last fragments a multiple of 8 bytes, contiguous offsets, one id.
fn assert_kernel_acceptable(frags: &[Vec<u8>], mtu: usize) {
    let mut next_off = None;
    for (i, f) in frags.iter().enumerate() {
        assert!(f.len() <= mtu, "fragment {i} within the mtu");
        let last = i + 1 == frags.len();
        let Parsed::Fragment(info) = parse::parse(f) else {
            panic!("fragment {i} parses as a fragment");
        };
        if !info.key.v6 {
            assert!(ipv4_checksum_ok(&f[..info.hdr_len]), "checksum {i}");
            assert_eq!(usize::from(u16::from_be_bytes([f[2], f[3]])), f.len());
        } else {
            assert_eq!(usize::from(u16::from_be_bytes([f[4], f[5]])) + 40, f.len());
        }
        if !last {
            assert!(info.more);
            assert_eq!(info.data.len() % 8, 0, "non-last fragment multiple of 8");
        }
        if let Some(o) = next_off {
            assert_eq!(info.offset as usize, o, "offsets contiguous");
        }
        assert_eq!(info.offset % 8, 0);
        next_off = Some(info.offset as usize + info.data.len());
    }
}

// ---------------------------------------------------------------------------------------------
// Fragmentation
// ---------------------------------------------------------------------------------------------

#[test]
fn ipv4_fragments_fit_the_mtu_and_reassemble_to_the_original() {
    for (payload, mtu) in [
        (3000, 1500),
        (1481, 1500),
        (65_515, 1500),
        (100, 68),
        (8000, 576),
    ] {
        let p = v4_packet(0x1234, payload, &[], 0);
        let frags = fragments(&p, mtu, &mut FragIdCounter::new(0));
        assert!(frags.len() > 1);
        assert_kernel_acceptable(&frags, mtu);
        // Data per fragment: the largest multiple of 8 that fits.
        let per = (mtu - 20) & !7;
        assert_eq!(frags[0].len(), 20 + per);
        assert_eq!(frags.len(), payload.div_ceil(per));
        for f in &frags {
            assert_eq!(&f[4..6], &[0x12, 0x34], "ipv4 keeps the packet's id");
            assert_eq!(f[1], 0xb8, "dscp copied");
        }
        let mut rig = Rig::new(cfg());
        for (i, f) in frags.iter().enumerate().rev() {
            let res = rig.feed(1, f);
            if i == 0 {
                assert_eq!(res, Res::Done(p.clone()), "byte-exact original");
            } else {
                assert_eq!(res, Res::Pending);
            }
        }
    }
}

#[test]
fn ipv4_options_copied_only_if_their_copy_flag_says_so() {
    // Options: NOP; Record Route (type 7, copied flag 0, 11 bytes); Security-like option type
    // 130 (copied flag 1, 6 bytes); router alert 148 (copied, 4 bytes); EOL padding.
    let mut opts = vec![
        1u8, 7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0, 130, 6, 1, 2, 3, 4, 148, 4, 0, 0,
    ];
    opts.resize(24, 0);
    let p = v4_packet(77, 2000, &opts, 0);
    let frags = fragments(&p, 600, &mut FragIdCounter::new(0));
    assert_kernel_acceptable(&frags, 600);
    assert_eq!(frags[0][0], 0x4b, "first fragment: ihl 11");
    assert_eq!(
        &frags[0][20..44],
        &opts[..],
        "first fragment has every option"
    );
    for f in &frags[1..] {
        assert_eq!(f[0], 0x48, "20 + 10 copied bytes, padded to 32 = ihl 8");
        assert_eq!(
            &f[20..30],
            &[130, 6, 1, 2, 3, 4, 148, 4, 0, 0],
            "copied options only"
        );
        assert_eq!(&f[30..32], &[0, 0], "end-of-options padding");
        assert_eq!(&f[12..20], &p[12..20]);
    }
    // Data per fragment differs: (600-44)&!7 = 552 first, (600-32)&!7 = 568 later.
    assert_eq!(frags[0].len(), 44 + 552);
    assert_eq!(frags[1].len(), 32 + 568);
    let mut rig = Rig::new(cfg());
    let mut got = None;
    for f in &frags {
        if let Res::Done(b) = rig.feed(1, f) {
            got = Some(b);
        }
    }
    assert_eq!(
        got,
        Some(p),
        "reassembled with the first fragment's full header"
    );
}

#[test]
fn ipv4_fragment_of_a_fragment_keeps_offsets_and_mf() {
    // A middle fragment (offset 1480, MF set) of a larger datagram, re-fragmented for 576.
    let mut mid = v4_header(9, 0x2000 | (1480 / 8), 20 + 1480, &[]);
    mid.extend(pattern(9, 1480, 1480));
    let frags = fragments(&mid, 576, &mut FragIdCounter::new(0));
    assert_eq!(frags.len(), 3);
    for (i, f) in frags.iter().enumerate() {
        let fo = u16::from_be_bytes([f[6], f[7]]);
        assert_ne!(fo & 0x2000, 0, "MF kept on every piece, the last too: {i}");
        assert!(usize::from(fo & 0x1fff) * 8 >= 1480);
    }
    // With the datagram's first and last fragments, the pieces reassemble the whole.
    let mut rig = Rig::new(cfg());
    assert_eq!(rig.feed(1, &v4_frag(9, 0, 1480, true)), Res::Pending);
    for f in &frags {
        assert_eq!(rig.feed(1, f), Res::Pending);
    }
    assert_eq!(
        rig.feed(1, &v4_frag(9, 2960, 100, false)),
        Res::Done(expected(Ver::V4, 9, 3060))
    );
}

#[test]
fn ipv4_dont_fragment_is_refused_with_a_counted_error() {
    let p = v4_packet(1, 3000, &[], 0x4000);
    let err = Fragmenter::new(&p, 1500, &mut FragIdCounter::new(0)).unwrap_err();
    assert_eq!(err, FragmentError::DontFragment);
    assert_eq!(err.drop_reason(), DropReason::FragmentationNeeded);
    // DF but fitting: emitted whole, unchanged.
    let small = v4_packet(1, 1000, &[], 0x4000);
    assert_eq!(
        fragments(&small, 1500, &mut FragIdCounter::new(0)),
        vec![small.clone()]
    );
}

#[test]
fn ipv6_fragment_header_goes_after_the_per_fragment_headers() {
    let mut ids = FragIdCounter::new(0xabcd_0000);
    // HbH, DestOpts, Routing are per-fragment; the DestOpts after Routing is fragmentable.
    let exts = [NH_HOP_BY_HOP, NH_DEST_OPTS, NH_ROUTING, NH_DEST_OPTS];
    let p = v6_packet(5, &exts, 3000);
    let frags = fragments(&p, 1280, &mut ids);
    assert_kernel_acceptable(&frags, 1280);
    let unfrag = 40 + 3 * 16;
    for (i, f) in frags.iter().enumerate() {
        assert_eq!(&f[..4], &p[..4]);
        assert_eq!(
            &f[8..unfrag],
            &{
                let mut h = p[8..unfrag].to_vec();
                h[unfrag - 8 - 16] = NH_FRAGMENT; // the routing header's next header
                h
            }[..],
            "per-fragment headers copied, routing header points at the fragment header"
        );
        assert_eq!(f[unfrag], NH_DEST_OPTS, "fragment header's next header");
        assert_eq!(
            &f[unfrag + 4..unfrag + 8],
            &0xabcd_0000u32.to_be_bytes(),
            "id {i}"
        );
    }
    assert_eq!(
        ids.next_id(),
        0xabcd_0001,
        "one id drawn per fragmented packet"
    );
    let mut rig = Rig::new(cfg());
    let mut got = None;
    for f in frags.iter().rev() {
        if let Res::Done(b) = rig.feed(1, f) {
            got = Some(b);
        }
    }
    assert_eq!(
        got,
        Some(p),
        "byte-exact original: next header and payload length restored"
    );
}

#[test]
fn ipv6_without_extension_headers_roundtrips_at_three_mtus() {
    for mtu in [1280, 1500, 9000] {
        let mut ids = FragIdCounter::new(u32::MAX);
        let p = v6_packet(1, &[], 20_000);
        let frags = fragments(&p, mtu, &mut ids);
        assert_kernel_acceptable(&frags, mtu);
        assert_eq!(frags[0][6], NH_FRAGMENT);
        assert_eq!(frags[0].len(), 48 + ((mtu - 48) & !7));
        assert_eq!(ids.next_id(), 0, "counter wraps");
        let mut rig = Rig::new(cfg());
        let mut got = None;
        for f in &frags {
            if let Res::Done(b) = rig.feed(1, f) {
                got = Some(b);
            }
        }
        assert_eq!(got, Some(p));
    }
}

#[test]
fn fragmenter_errors() {
    let mut ids = FragIdCounter::new(0);
    assert_eq!(
        Fragmenter::new(&[0x50; 40], 1500, &mut ids).unwrap_err(),
        FragmentError::Malformed
    );
    let mut lying = v4_packet(1, 100, &[], 0);
    lying[2..4].copy_from_slice(&500u16.to_be_bytes());
    assert_eq!(
        Fragmenter::new(&lying, 60, &mut ids).unwrap_err(),
        FragmentError::Malformed
    );
    let p = v4_packet(1, 100, &[], 0);
    assert_eq!(
        Fragmenter::new(&p, 27, &mut ids).unwrap_err(),
        FragmentError::MtuTooSmall
    );
    assert!(Fragmenter::new(&p, 28, &mut ids).is_ok(), "20 + 8 fits");
    let f = v6_frag(3, 0, 2000, true);
    assert_eq!(
        Fragmenter::new(&f, 1280, &mut ids).unwrap_err(),
        FragmentError::AlreadyFragmented
    );
    assert_eq!(
        fragments(&f, 2100, &mut ids),
        vec![f.clone()],
        "fits: unchanged"
    );
    let v6 = v6_packet(1, &[], 2000);
    assert_eq!(
        Fragmenter::new(&v6, 55, &mut ids).unwrap_err(),
        FragmentError::MtuTooSmall
    );
    let mut fr = Fragmenter::new(&v6, 1280, &mut ids).expect("ok");
    let mut small = [0u8; 100];
    assert_eq!(
        fr.write_next(&mut small),
        Err(FragmentError::BufferTooSmall)
    );
    let mut big = [0u8; 1280];
    assert_eq!(
        fr.next_len(),
        Some(1280),
        "48 + 1232: a multiple of 8 fills the mtu"
    );
    assert_eq!(
        fr.write_next(&mut big),
        Ok(Some(1280)),
        "nothing consumed by the error"
    );
    // Trailing link padding is ignored.
    let mut padded = v4_packet(2, 30, &[], 0);
    padded.extend([0xee; 10]);
    assert_eq!(
        fragments(&padded, 1500, &mut ids),
        vec![padded[..50].to_vec()]
    );
}

// ---------------------------------------------------------------------------------------------
// Reassembly basics
// ---------------------------------------------------------------------------------------------

#[test]
fn whole_packets_are_not_fragments() {
    let mut rig = Rig::new(cfg());
    assert_eq!(
        rig.feed(1, &v4_packet(1, 100, &[], 0x4000)),
        Res::NotFragment
    );
    assert_eq!(
        rig.feed(1, &v6_packet(1, &[NH_HOP_BY_HOP], 100)),
        Res::NotFragment
    );
    let s = rig.r.stats();
    assert_eq!((s.packets_not_fragment, s.fragments_in), (2, 0));
}

#[test]
fn ipv6_atomic_fragment_is_reassembled_alone() {
    let mut rig = Rig::new(cfg());
    assert_eq!(rig.feed(1, &v6_frag(7, 0, 8, true)), Res::Pending);
    // RFC 6946: an atomic fragment with the same id does not touch the pending datagram.
    assert_eq!(
        rig.feed(1, &v6_frag(7, 0, 300, false)),
        Res::Done(expected(Ver::V6, 7, 300))
    );
    assert_eq!(rig.r.stats().contexts_live, 1);
    assert_eq!(
        rig.feed(1, &v6_frag(7, 8, 8, false)),
        Res::Done(expected(Ver::V6, 7, 16))
    );
}

#[test]
fn malformed_fragments_are_counted() {
    let mut rig = Rig::new(cfg());
    let mut bad_sum = v4_frag(1, 0, 16, true);
    bad_sum[10] ^= 1;
    let mut short = v4_frag(1, 0, 16, true);
    short.truncate(30);
    let mut v6_short = v6_frag(1, 0, 16, true);
    v6_short.truncate(50);
    let mut v6_long_chain = v6_base(8 * 9 + 8 + 8, NH_DEST_OPTS);
    for i in 0..9 {
        v6_long_chain.extend(ext(if i == 8 { NH_FRAGMENT } else { NH_DEST_OPTS }, 0));
    }
    v6_long_chain.extend([UDP, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    let mut hbh_late = v6_base(16 + 8 + 8, NH_DEST_OPTS);
    hbh_late.extend(ext(NH_HOP_BY_HOP, 0));
    hbh_late.extend(ext(NH_FRAGMENT, 0));
    hbh_late.extend([UDP, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    for p in [
        &bad_sum,
        &short,
        &v6_short,
        &v6_long_chain,
        &hbh_late,
        &vec![0x45; 10],
        &vec![],
    ] {
        assert_eq!(rig.feed(1, p), Res::Drop(IpFragDrop::Malformed), "{p:?}");
    }
    for v in BOTH {
        assert_eq!(
            rig.feed(1, &frag(v, 2, 0, 12, true)),
            Res::Drop(IpFragDrop::BadLength)
        );
    }
    assert_eq!(rig.drops().malformed, 7);
    assert_eq!(rig.drops().bad_length, 2);
    assert_eq!(rig.drops().total(), 9);
    assert_eq!(
        IpFragDrop::BadLength.drop_reason(),
        DropReason::MalformedPacket
    );
    assert_eq!(rig.r.stats().contexts_live, 0);
}

#[test]
fn reassembles_in_any_order_with_many_datagrams_outstanding() {
    let mut rig = Rig::new(cfg());
    let n = 200u16;
    let mut frags = Vec::new();
    for v in BOTH {
        for id in 0..n {
            for k in 0..5 {
                frags.push((v, id, k));
            }
        }
    }
    // A deterministic shuffle.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..frags.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        frags.swap(i, (x % (i as u64 + 1)) as usize);
    }
    for &(v, id, k) in &frags {
        let _ = rig.feed(1, &frag(v, id, k * 96, 96, k < 4));
    }
    assert_eq!(rig.done.len(), 2 * usize::from(n));
    for v in BOTH {
        for id in 0..n {
            assert!(rig.done.contains(&expected(v, id, 480)), "{v:?} {id}");
        }
    }
    assert_eq!(rig.drops().total(), 0);
    assert_eq!(rig.r.stats().bytes_held, 0);
}

#[test]
fn key_includes_protocol_for_ipv4_and_not_for_ipv6() {
    let mut rig = Rig::new(cfg());
    let a = v4_frag(5, 0, 16, true);
    let mut b = v4_frag(5, 16, 16, false);
    b[9] = 6; // TCP: another datagram
    parse::ipv4_fill_checksum(&mut b[..20]);
    assert_eq!(rig.feed(1, &a), Res::Pending);
    assert_eq!(rig.feed(1, &b), Res::Pending);
    assert_eq!(rig.r.stats().contexts_live, 2);
    // IPv6: the Fragment header's next header is not part of the key.
    let c = v6_frag(5, 0, 16, true);
    let mut d = v6_frag(5, 16, 16, false);
    d[40] = 6;
    assert_eq!(rig.feed(1, &c), Res::Pending);
    assert_eq!(
        rig.feed(1, &d),
        Res::Done(expected(Ver::V6, 5, 32)),
        "first fragment's next header wins"
    );
}

// ---------------------------------------------------------------------------------------------
// The attack matrix (ARCHITECTURE.md): one test per row, both IP versions
// ---------------------------------------------------------------------------------------------

#[test]
fn attack_exact_duplicates_drop_only_themselves() {
    for v in BOTH {
        let mut rig = Rig::new(cfg());
        assert_eq!(rig.feed(1, &frag(v, 1, 0, 16, true)), Res::Pending);
        assert_eq!(
            rig.feed(1, &frag(v, 1, 0, 16, true)),
            Res::Drop(IpFragDrop::Duplicate)
        );
        assert_eq!(rig.feed(1, &frag(v, 1, 24, 8, false)), Res::Pending);
        assert_eq!(
            rig.feed(1, &frag(v, 1, 24, 8, false)),
            Res::Drop(IpFragDrop::Duplicate)
        );
        assert_eq!(
            rig.feed(1, &frag(v, 1, 16, 8, true)),
            Res::Done(expected(v, 1, 32))
        );
        only(&rig.drops(), IpFragDrop::Duplicate, 2);
        assert_eq!(rig.done.len(), 1, "exactly one datagram out");
        rig.assert_empty_after_timeout(1);
    }
}

#[test]
fn attack_teardrop_drops_the_datagram() {
    // Teardrop (1997): the second fragment lies inside the first and ends before it.
    for v in BOTH {
        let mut rig = Rig::new(cfg());
        assert_eq!(rig.feed(1, &frag(v, 2, 0, 32, true)), Res::Pending);
        assert_eq!(
            rig.feed(1, &frag(v, 2, 24, 4, false)),
            Res::Drop(IpFragDrop::Overlap)
        );
        // The rest of the datagram is stale: nothing leaks out.
        assert_eq!(
            rig.feed(1, &frag(v, 2, 32, 8, false)),
            Res::Drop(IpFragDrop::Stale)
        );
        assert_eq!(rig.drops().overlap, 1);
        assert_eq!(rig.drops().stale, 1);
        assert!(rig.done.is_empty());
        assert_eq!(rig.r.stats().bytes_held, 0, "buffers freed at once");
        rig.assert_empty_after_timeout(1);
    }
}

#[test]
fn attack_partial_overlaps_on_either_side() {
    for v in BOTH {
        let mut rig = Rig::new(cfg());
        // New fragment overlaps the end of an accepted one (left neighbour).
        assert_eq!(rig.feed(1, &frag(v, 3, 0, 16, true)), Res::Pending);
        assert_eq!(
            rig.feed(1, &frag(v, 3, 8, 16, true)),
            Res::Drop(IpFragDrop::Overlap)
        );
        // New fragment overlaps the start of an accepted one (right neighbour).
        assert_eq!(rig.feed(1, &frag(v, 4, 16, 16, true)), Res::Pending);
        assert_eq!(
            rig.feed(1, &frag(v, 4, 8, 16, true)),
            Res::Drop(IpFragDrop::Overlap)
        );
        // Straddling two accepted neighbours.
        assert_eq!(rig.feed(1, &frag(v, 5, 0, 8, true)), Res::Pending);
        assert_eq!(rig.feed(1, &frag(v, 5, 16, 8, false)), Res::Pending);
        assert_eq!(
            rig.feed(1, &frag(v, 5, 0, 24, true)),
            Res::Drop(IpFragDrop::Overlap)
        );
        only(&rig.drops(), IpFragDrop::Overlap, 3);
        assert!(rig.done.is_empty());
        let s = rig.r.stats();
        assert_eq!(
            (s.datagrams_dropped, s.tombstones_live, s.bytes_held),
            (3, 3, 0)
        );
        rig.assert_empty_after_timeout(1);
    }
}

#[test]
fn attack_fragment_containing_another() {
    for v in BOTH {
        let mut rig = Rig::new(cfg());
        // Big first, small inside.
        assert_eq!(rig.feed(1, &frag(v, 6, 0, 32, true)), Res::Pending);
        assert_eq!(
            rig.feed(1, &frag(v, 6, 8, 8, true)),
            Res::Drop(IpFragDrop::Overlap)
        );
        // Small first, big around it.
        assert_eq!(rig.feed(1, &frag(v, 7, 8, 8, true)), Res::Pending);
        assert_eq!(
            rig.feed(1, &frag(v, 7, 0, 32, true)),
            Res::Drop(IpFragDrop::Overlap)
        );
        // Same start, longer.
        assert_eq!(rig.feed(1, &frag(v, 8, 0, 8, true)), Res::Pending);
        assert_eq!(
            rig.feed(1, &frag(v, 8, 0, 16, true)),
            Res::Drop(IpFragDrop::Overlap)
        );
        only(&rig.drops(), IpFragDrop::Overlap, 3);
        assert!(rig.done.is_empty());
        rig.assert_empty_after_timeout(1);
    }
}

#[test]
fn attack_two_different_ends() {
    for v in BOTH {
        let mut rig = Rig::new(cfg());
        assert_eq!(rig.feed(1, &frag(v, 9, 0, 8, true)), Res::Pending);
        assert_eq!(rig.feed(1, &frag(v, 9, 32, 8, false)), Res::Pending);
        assert_eq!(
            rig.feed(1, &frag(v, 9, 48, 8, false)),
            Res::Drop(IpFragDrop::TotalMismatch)
        );
        // The datagram is gone; even the missing middle does not complete anything.
        assert_eq!(
            rig.feed(1, &frag(v, 9, 8, 24, true)),
            Res::Drop(IpFragDrop::Stale)
        );
        assert_eq!(rig.drops().total_mismatch, 1);
        assert_eq!(rig.drops().total(), 2);
        assert!(rig.done.is_empty());
        rig.assert_empty_after_timeout(1);
    }
}

#[test]
fn attack_data_past_the_end() {
    for v in BOTH {
        let mut rig = Rig::new(cfg());
        // A fragment beyond the known end.
        assert_eq!(rig.feed(1, &frag(v, 10, 0, 8, true)), Res::Pending);
        assert_eq!(rig.feed(1, &frag(v, 10, 16, 8, false)), Res::Pending);
        assert_eq!(
            rig.feed(1, &frag(v, 10, 24, 8, true)),
            Res::Drop(IpFragDrop::PastEnd)
        );
        // A last fragment ending before data already received.
        assert_eq!(rig.feed(1, &frag(v, 11, 32, 8, true)), Res::Pending);
        assert_eq!(
            rig.feed(1, &frag(v, 11, 8, 8, false)),
            Res::Drop(IpFragDrop::PastEnd)
        );
        only(&rig.drops(), IpFragDrop::PastEnd, 2);
        assert!(rig.done.is_empty());
        rig.assert_empty_after_timeout(1);
    }
}

#[test]
fn attack_zero_length_fragments() {
    for v in BOTH {
        let mut rig = Rig::new(cfg());
        assert_eq!(
            rig.feed(1, &frag(v, 12, 8, 0, true)),
            Res::Drop(IpFragDrop::ZeroLength)
        );
        assert_eq!(rig.feed(1, &frag(v, 12, 0, 8, true)), Res::Pending);
        assert_eq!(
            rig.feed(1, &frag(v, 12, 8, 0, false)),
            Res::Drop(IpFragDrop::ZeroLength)
        );
        only(&rig.drops(), IpFragDrop::ZeroLength, 2);
        assert_eq!(
            rig.r.stats().contexts_live,
            1,
            "the zero-length ones made no context"
        );
        assert!(rig.done.is_empty());
        rig.assert_empty_after_timeout(1);
    }
}

#[test]
fn attack_too_many_fragments() {
    for v in BOTH {
        let mut rig = Rig::new(IpReassemblyConfig {
            max_fragments: 4,
            ..cfg()
        });
        for k in 0..4 {
            assert_eq!(rig.feed(1, &frag(v, 13, k * 16, 8, true)), Res::Pending);
        }
        assert_eq!(
            rig.feed(1, &frag(v, 13, 64, 8, true)),
            Res::Drop(IpFragDrop::TooManyFragments)
        );
        // A datagram of exactly 4 fragments still completes.
        for k in 0..3 {
            assert_eq!(rig.feed(1, &frag(v, 14, k * 8, 8, true)), Res::Pending);
        }
        assert_eq!(
            rig.feed(1, &frag(v, 14, 24, 8, false)),
            Res::Done(expected(v, 14, 32))
        );
        only(&rig.drops(), IpFragDrop::TooManyFragments, 1);
        let s = rig.r.stats();
        assert_eq!((s.fragments_discarded, s.bytes_held), (4, 0));
        assert_eq!(rig.done.len(), 1);
        rig.assert_empty_after_timeout(1);
    }
}

#[test]
fn attack_offset_plus_length_above_65535() {
    for v in BOTH {
        let mut rig = Rig::new(cfg());
        // Ping of death: the last fragment at the highest offset, too long.
        assert_eq!(
            rig.feed(1, &frag(v, 15, 65_528, 16, false)),
            Res::Drop(IpFragDrop::TooLarge)
        );
        // IPv4: header + data one byte above 65 535 (total length 65 536); IPv6: a payload
        // length of 65 536.
        let over = if v == Ver::V6 { 32 } else { 12 };
        assert_eq!(
            rig.feed(1, &frag(v, 15, 65_504, over, false)),
            Res::Drop(IpFragDrop::TooLarge)
        );
        only(&rig.drops(), IpFragDrop::TooLarge, 2);
        assert_eq!(rig.r.stats().contexts_live, 0);
        assert!(rig.done.is_empty());
    }
    // The first fragment's longer header decides: IPv4 with 40 bytes of options, and an IPv6
    // routing header, push an end that fits alone above 65 535.
    let mut rig = Rig::new(cfg());
    let opts = [148u8, 4, 0, 0].repeat(10);
    let mut first = v4_header(16, 0x2000, 20 + 40 + 8, &opts);
    first.extend(pattern(16, 0, 8));
    assert_eq!(rig.feed(1, &first), Res::Pending);
    assert_eq!(
        rig.feed(1, &v4_frag(16, 65_472, 40, false)),
        Res::Drop(IpFragDrop::TooLarge),
        "20 + 65 512 fits alone, 60 + 65 512 > 65 535"
    );
    let mut v6_first = v6_base(16 + 8 + 8, NH_ROUTING);
    v6_first.extend(ext(NH_FRAGMENT, 1));
    v6_first.extend([UDP, 0, 0, 1, 0, 0, 0, 16]);
    v6_first.extend(pattern(16, 0, 8));
    assert_eq!(rig.feed(1, &v6_first), Res::Pending);
    assert_eq!(
        rig.feed(1, &v6_frag(16, 65_472, 16, false)),
        Res::Drop(IpFragDrop::TooLarge),
        "40 + 65 488 fits alone, 56 + 65 488 > 65 535"
    );
    only(&rig.drops(), IpFragDrop::TooLarge, 2);
    assert_eq!(rig.r.stats().datagrams_dropped, 2);
    assert!(rig.done.is_empty());
}

#[test]
fn attack_fragments_after_expiry() {
    for v in BOTH {
        let mut rig = Rig::new(cfg());
        assert_eq!(rig.feed(0, &frag(v, 17, 0, 8, true)), Res::Pending);
        assert_eq!(rig.r.poll_timeout(), Some(Instant::from_millis(TIMEOUT_MS)));
        // A later fragment does not extend the deadline.
        assert_eq!(
            rig.feed(TIMEOUT_MS - 1, &frag(v, 17, 16, 8, true)),
            Res::Pending
        );
        assert_eq!(rig.r.poll_timeout(), Some(Instant::from_millis(TIMEOUT_MS)));
        // At the deadline the datagram is gone, even before handle_timeout ran: the late
        // fragment that would complete it opens a new datagram instead.
        assert_eq!(
            rig.feed(TIMEOUT_MS, &frag(v, 17, 8, 8, false)),
            Res::Pending
        );
        assert_eq!(rig.drops().timeout, 1);
        assert_eq!(rig.r.stats().fragments_discarded, 2);
        // And the next late one, after handle_timeout expired that one too.
        assert_eq!(rig.expire(2 * TIMEOUT_MS), 1);
        assert_eq!(
            rig.feed(2 * TIMEOUT_MS, &frag(v, 17, 0, 8, true)),
            Res::Pending
        );
        rig.assert_empty_after_timeout(2 * TIMEOUT_MS);
        only(&rig.drops(), IpFragDrop::Timeout, 3);
        assert!(rig.done.is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// Caps
// ---------------------------------------------------------------------------------------------

#[test]
fn context_cap_refuses_new_datagrams_and_never_evicts() {
    for v in BOTH {
        let mut rig = Rig::new(IpReassemblyConfig {
            max_contexts: 3,
            ..cfg()
        });
        for id in 0..3 {
            assert_eq!(rig.feed(1, &frag(v, id, 0, 8, true)), Res::Pending);
        }
        assert_eq!(
            rig.feed(2, &frag(v, 3, 0, 8, true)),
            Res::Drop(IpFragDrop::ContextCap)
        );
        // Live ones still complete; their slots then take new datagrams.
        assert_eq!(
            rig.feed(3, &frag(v, 0, 8, 8, false)),
            Res::Done(expected(v, 0, 16))
        );
        assert_eq!(rig.feed(4, &frag(v, 3, 0, 8, true)), Res::Pending);
        // Tombstones count: an overlap keeps the slot until the deadline.
        assert_eq!(
            rig.feed(5, &frag(v, 1, 0, 16, true)),
            Res::Drop(IpFragDrop::Overlap)
        );
        assert_eq!(
            rig.feed(5, &frag(v, 4, 0, 8, true)),
            Res::Drop(IpFragDrop::ContextCap)
        );
        rig.expire(1 + TIMEOUT_MS);
        assert_eq!(
            rig.feed(1 + TIMEOUT_MS, &frag(v, 4, 0, 8, true)),
            Res::Pending
        );
        assert_eq!(rig.drops().context_cap, 2);
        assert_eq!(
            IpFragDrop::ContextCap.drop_reason(),
            DropReason::ReassemblyContextCap
        );
    }
}

#[test]
fn memory_cap_holds_and_refuses_new_datagrams() {
    for v in BOTH {
        // 1500-byte fragments take 2048-byte slots: four fit in 8 KiB.
        let mut rig = Rig::new(IpReassemblyConfig {
            mem_cap_bytes: 8192,
            ..cfg()
        });
        for id in 0..4 {
            assert_eq!(rig.feed(1, &frag(v, id, 1504, 1496, true)), Res::Pending);
        }
        assert_eq!(rig.r.stats().bytes_held, 8192);
        assert_eq!(
            rig.feed(1, &frag(v, 9, 1504, 1496, true)),
            Res::Drop(IpFragDrop::MemoryCap),
            "new datagram refused"
        );
        assert_eq!(
            rig.feed(1, &frag(v, 0, 3000, 8, true)),
            Res::Drop(IpFragDrop::MemoryCap),
            "a fragment of a live datagram that would need more memory"
        );
        // Neither may a first fragment (stored with its header) nor a last one that does not
        // complete its datagram.
        assert_eq!(
            rig.feed(1, &frag(v, 1, 0, 1504, true)),
            Res::Drop(IpFragDrop::MemoryCap)
        );
        assert_eq!(
            rig.feed(1, &frag(v, 2, 3000, 8, false)),
            Res::Drop(IpFragDrop::MemoryCap)
        );
        assert_eq!(rig.r.stats().contexts_live, 4, "nothing evicted");
        assert!(rig.r.stats().peak_bytes_held <= 8192);
        assert_eq!(
            IpFragDrop::MemoryCap.drop_reason(),
            DropReason::ReassemblyMemoryCap
        );
        rig.assert_empty_after_timeout(1);
        assert_eq!(rig.drops().timeout, 4);
    }
}

#[test]
fn fragment_memory_is_taken_at_construction() {
    let r = IpReassembler::new(IpReassemblyConfig {
        mem_cap_bytes: 1 << 20,
        ..cfg()
    });
    assert_eq!(r.reserved_bytes(), 1 << 20, "the cap's pages, up front");
    let r = IpReassembler::new(IpReassemblyConfig {
        mem_cap_bytes: 100_000,
        ..cfg()
    });
    assert_eq!(r.reserved_bytes(), 65_536, "rounded down to whole pages");
}

#[test]
fn completing_fragment_needs_no_memory() {
    let mut rig = Rig::new(IpReassemblyConfig {
        mem_cap_bytes: 2048,
        ..cfg()
    });
    assert_eq!(rig.feed(1, &v4_frag(1, 0, 1480, true)), Res::Pending);
    assert_eq!(rig.r.stats().bytes_held, 2048);
    assert_eq!(
        rig.feed(1, &v4_frag(1, 1480, 1000, false)),
        Res::Done(expected(Ver::V4, 1, 2480))
    );
    assert_eq!(rig.r.stats().bytes_held, 0);
}

#[test]
fn full_output_store_drops_the_datagram() {
    let mut r = IpReassembler::new(cfg());
    let mut out = PacketStore::new(1024, MAX_BUF_BYTES);
    let now = Instant::from_millis(1);
    assert_eq!(
        r.insert(now, &mut out, &v4_frag(1, 0, 800, true)),
        IpFragOutcome::Pending
    );
    assert_eq!(
        r.insert(now, &mut out, &v4_frag(1, 800, 800, false)),
        IpFragOutcome::Dropped(IpFragDrop::StoreFull)
    );
    assert_eq!(
        r.insert(now, &mut out, &v6_frag(1, 0, 2000, false)),
        IpFragOutcome::Dropped(IpFragDrop::StoreFull),
        "atomic fragment"
    );
    r.check_invariants().expect("invariants");
    let s = r.stats();
    assert_eq!(
        (s.drops.store_full, s.datagrams_dropped, s.bytes_held),
        (2, 1, 0)
    );
    assert_eq!(out.used_bytes(), 0);
}

#[test]
fn handle_timeout_is_budgeted() {
    let mut rig = Rig::new(cfg());
    for id in 0..10 {
        assert_eq!(rig.feed(id, &v4_frag(id as u16, 0, 8, true)), Res::Pending);
    }
    let late = Instant::from_millis(10 + TIMEOUT_MS);
    assert_eq!(rig.r.handle_timeout(late, 4), 4);
    assert_eq!(rig.r.handle_timeout(late, 4), 4);
    assert_eq!(rig.r.handle_timeout(late, 4), 2);
    assert_eq!(rig.r.handle_timeout(late, 4), 0);
    assert_eq!(rig.drops().timeout, 10);
    // Only what is due: deadlines are per datagram.
    assert_eq!(rig.feed(200, &v4_frag(1, 0, 8, true)), Res::Pending);
    assert_eq!(rig.feed(250, &v4_frag(2, 0, 8, true)), Res::Pending);
    assert_eq!(rig.r.handle_timeout(Instant::from_millis(300), 10), 1);
    assert_eq!(rig.r.poll_timeout(), Some(Instant::from_millis(350)));
}

// ---------------------------------------------------------------------------------------------
// FragmentSmack
// ---------------------------------------------------------------------------------------------

/// A FragmentSmack-style flood (CVE-2018-5391): tiny 8-byte fragments of many datagrams, in
/// random order within each datagram, each datagram eventually hit by an overlapping
/// fragment; 3-fragment legitimate datagrams interleaved. Memory stays under the cap, state
/// stays within the context cap, and every legitimate datagram completes.
#[test]
fn fragment_smack_flood_keeps_memory_capped_and_legit_traffic_flowing() {
    let mem_cap = 12 << 20;
    let mut rig = Rig::new(IpReassemblyConfig {
        mem_cap_bytes: mem_cap,
        max_contexts: 4096,
        max_fragments: 64,
        timeout: Duration::from_millis(TIMEOUT_MS),
        ..cfg()
    });
    let attackers = 1000usize;
    // Per attacker slot: its current id and the offsets still to send (shuffled).
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut plans: Vec<(u32, Vec<usize>)> = Vec::new();
    let new_plan = |id: u32, next: &mut dyn FnMut() -> u64| {
        // 62 disjoint tiny fragments (offsets 16k), then overlapping ones (offset 16k + 8,
        // 16 bytes: overlaps the next tiny fragment partially).
        // Popped from the end: the overlaps (odd markers) come last.
        let mut offs: Vec<usize> = (0..62).map(|k| k * 16).collect();
        for i in (1..offs.len()).rev() {
            offs.swap(i, (next() % (i as u64 + 1)) as usize);
        }
        offs.insert(0, 16 * 10 + 8 + 1);
        offs.insert(0, 16 * 20 + 8 + 1);
        (id, offs)
    };
    let mut next_id = 100_000u32;
    for _ in 0..attackers {
        plans.push(new_plan(next_id, &mut next));
        next_id += 1;
    }
    let mut t_us = 0u64;
    let mut legit_sent = 0u32;
    let legit_mtu = 1500;
    let mut ids = FragIdCounter::new(1);
    let mut sent = 0usize;
    while sent < 200_000 {
        let slot = (next() % attackers as u64) as usize;
        let (id, offs) = &mut plans[slot];
        let Some(o) = offs.pop() else {
            plans[slot] = new_plan(next_id, &mut next);
            next_id += 1;
            continue;
        };
        let v6 = id.is_multiple_of(2);
        let pkt = if o % 2 == 1 {
            let o = o - 1;
            if v6 {
                v6_frag(*id, o, 16, true)
            } else {
                v4_frag(*id as u16, o, 16, true)
            }
        } else if v6 {
            v6_frag(*id, o, 8, true)
        } else {
            v4_frag(*id as u16, o, 8, true)
        };
        t_us += 1;
        let now = Instant::from_micros(t_us);
        let _ = rig.r.insert(now, &mut rig.out, &pkt);
        sent += 1;
        if sent.is_multiple_of(50) {
            // A legitimate datagram: 3000 bytes, fragmented by our fragmenter, both versions.
            legit_sent += 1;
            let p = if legit_sent.is_multiple_of(2) {
                v4_packet(legit_sent as u16, 3000, &[], 0)
            } else {
                v6_packet(legit_sent, &[], 3000)
            };
            for f in fragments(&p, legit_mtu, &mut ids) {
                t_us += 1;
                match rig.r.insert(Instant::from_micros(t_us), &mut rig.out, &f) {
                    IpFragOutcome::Complete { buf, len } => {
                        assert_eq!(rig.out.get(&buf), &p[..], "legit datagram byte-exact");
                        assert_eq!(len, p.len());
                        rig.out.free(buf);
                        rig.done.push(Vec::new());
                    }
                    IpFragOutcome::Pending => {}
                    other => panic!("legit fragment refused under the flood: {other:?}"),
                }
            }
        }
        if sent.is_multiple_of(100) {
            rig.r.handle_timeout(now, 64);
            let s = rig.r.stats();
            assert!(s.bytes_held <= mem_cap && s.contexts_live + s.tombstones_live <= 4096);
        }
        if sent.is_multiple_of(20_000) {
            rig.r.check_invariants().expect("invariants");
        }
    }
    let s = rig.r.stats().clone();
    assert_eq!(
        rig.done.len(),
        legit_sent as usize,
        "every legitimate datagram completed"
    );
    assert_eq!(
        s.datagrams_completed,
        u64::from(legit_sent),
        "no attack datagram completed"
    );
    assert!(
        s.drops.overlap > 1000,
        "the flood's overlaps were caught: {s:?}"
    );
    assert!(s.peak_bytes_held <= mem_cap);
    assert!(
        rig.r.reserved_bytes() <= mem_cap + (9 + 1) * 65_536,
        "pages bounded by the cap"
    );
    rig.assert_empty_after_timeout(t_us / 1000 + 1);
}

/// When a flood does fill the context cap, new datagrams (legitimate ones included) are
/// refused and counted, live ones are not evicted, and service resumes one timeout later.
#[test]
fn flood_at_the_context_cap_refuses_then_recovers() {
    let mut rig = Rig::new(IpReassemblyConfig {
        max_contexts: 100,
        ..cfg()
    });
    assert_eq!(
        rig.feed(0, &v4_frag(1, 0, 8, true)),
        Res::Pending,
        "a live legit datagram"
    );
    for id in 0..200u16 {
        let _ = rig.feed(1, &v6_frag(u32::from(id) + 1000, 8, 8, true));
    }
    assert_eq!(rig.drops().context_cap, 101);
    assert_eq!(
        rig.feed(2, &v4_frag(2, 0, 8, true)),
        Res::Drop(IpFragDrop::ContextCap)
    );
    assert_eq!(
        rig.feed(2, &v4_frag(1, 8, 8, false)),
        Res::Done(expected(Ver::V4, 1, 16))
    );
    rig.expire(1 + TIMEOUT_MS);
    assert_eq!(
        rig.feed(1 + TIMEOUT_MS, &v4_frag(2, 0, 8, true)),
        Res::Pending
    );
    assert_eq!(
        rig.feed(1 + TIMEOUT_MS, &v4_frag(2, 8, 8, false)),
        Res::Done(expected(Ver::V4, 2, 16))
    );
}

// ---------------------------------------------------------------------------------------------
// Property: permutation / duplication / loss / overlap → original or counted drop
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Dgram {
    v6: bool,
    payload: usize,
    mtu: usize,
    /// Also send the datagram fragmented at this second MTU (overlapping fragments).
    alt_mtu: Option<usize>,
}

fn dgram() -> impl Strategy<Value = Dgram> {
    (
        any::<bool>(),
        1usize..6000,
        prop_oneof![Just(68usize), 100..1500usize, Just(1280), Just(1500)],
        prop::option::weighted(0.15, 100..1500usize),
    )
        .prop_map(|(v6, payload, mtu, alt_mtu)| Dgram {
            v6,
            payload,
            mtu: if v6 { mtu.max(64) } else { mtu },
            alt_mtu: alt_mtu.map(|m| if v6 { m.max(64) } else { m }),
        })
}

fn run_property(
    dgrams: &[Dgram],
    copies: &[u8],
    swaps: &[(usize, usize)],
    steps: &[u8],
    max_contexts: usize,
) -> Result<(), TestCaseError> {
    let mut rig = Rig::new(IpReassemblyConfig {
        max_contexts,
        mem_cap_bytes: 1 << 20,
        ..cfg()
    });
    let mut ids = FragIdCounter::new(0x7000_0000);
    let mut originals = Vec::new();
    // (datagram, fragment bytes, is an alt-mtu fragment)
    let mut events: Vec<(usize, Vec<u8>, bool)> = Vec::new();
    let mut total_frags = Vec::new();
    let mut ci = 0;
    for (d, g) in dgrams.iter().enumerate() {
        let p = if g.v6 {
            v6_packet(d as u32, &[], g.payload)
        } else {
            v4_packet(d as u16, g.payload, &[], 0)
        };
        let mut fr = Fragmenter::new(&p, g.mtu, &mut ids).expect("fragmentable");
        let ident = fr.ident();
        let mut buf = vec![0u8; p.len().max(g.mtu)];
        let mut n = 0;
        while let Some(len) = fr.write_next(&mut buf).expect("fits") {
            n += 1;
            let c = copies[ci % copies.len()];
            ci += 1;
            for _ in 0..c {
                events.push((d, buf[..len].to_vec(), false));
            }
        }
        total_frags.push(n);
        if let Some(alt) = g.alt_mtu {
            let mut same = FragIdCounter::new(ident);
            for f in fragments(&p, alt, &mut same) {
                events.push((d, f, true));
            }
        }
        originals.push(p);
    }
    for &(a, b) in swaps {
        if !events.is_empty() {
            let n = events.len();
            events.swap(a % n, b % n);
        }
    }
    let mut t_us = 0u64;
    for (i, (_d, f, _alt)) in events.iter().enumerate() {
        t_us += u64::from(steps[i % steps.len()]) * 100;
        let now = Instant::from_micros(t_us);
        match rig.feed_at(now, f) {
            Res::Done(bytes) => {
                prop_assert!(
                    originals.contains(&bytes),
                    "a completed datagram is byte-exact one of the originals"
                );
            }
            Res::Pending | Res::Drop(_) => {}
            Res::NotFragment => {
                // Packets that fit the MTU are emitted whole.
                prop_assert!(originals.contains(f));
            }
        }
        if i % 7 == 0 {
            rig.r.handle_timeout(now, 8);
        }
        // No state outlives its timeout once handle_timeout has run at `now`.
        rig.r.handle_timeout(now, usize::MAX);
        if let Some(t) = rig.r.poll_timeout() {
            prop_assert!(t > now);
        }
    }
    // Every datagram whose fragments all arrived, none overlapping, within its timeout and
    // under the caps, came out.
    let refused = rig.drops().context_cap + rig.drops().memory_cap;
    for (d, g) in dgrams.iter().enumerate() {
        let arrived: Vec<_> = events.iter().filter(|e| e.0 == d).collect();
        let distinct = {
            let mut v: Vec<&Vec<u8>> = arrived.iter().filter(|e| !e.2).map(|e| &e.1).collect();
            v.sort();
            v.dedup();
            v.len()
        };
        let whole = distinct == total_frags[d] && g.alt_mtu.is_none();
        if whole && refused == 0 && total_frags[d] <= 64 && t_us < TIMEOUT_MS * 1000 {
            prop_assert!(
                rig.done.contains(&originals[d]) || total_frags[d] == 1,
                "datagram {} with every fragment delivered completed",
                d
            );
        }
    }
    rig.assert_empty_after_timeout(t_us / 1000 + 1);
    let s = rig.r.stats();
    prop_assert_eq!(
        s.datagrams_started,
        s.datagrams_completed + s.datagrams_dropped
    );
    prop_assert_eq!(s.fragments_in, s.fragments_accepted + s.fragments_dropped);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn any_permutation_duplication_loss_or_overlap_yields_original_or_counted_drop(
        dgrams in prop::collection::vec(dgram(), 1..10),
        copies in prop::collection::vec(prop_oneof![8 => Just(1u8), 1 => Just(0), 1 => Just(2)], 1..64),
        swaps in prop::collection::vec((any::<usize>(), any::<usize>()), 0..200),
        steps in prop::collection::vec(prop_oneof![9 => 0u8..4, 1 => any::<u8>()], 1..64),
        max_contexts in prop_oneof![1 => Just(3usize), 4 => Just(4096)],
    ) {
        run_property(&dgrams, &copies, &swaps, &steps, max_contexts)?;
    }

    /// Arbitrary bytes never panic and keep every invariant.
    #[test]
    fn arbitrary_packets_never_panic(
        pkts in prop::collection::vec(
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..120),
                (any::<u16>(), 0usize..2000, 0usize..200, any::<bool>(), any::<bool>())
                    .prop_map(|(id, off, len, more, v6)| {
                        if v6 { v6_frag(u32::from(id % 8), off & !7, len, more) }
                        else { v4_frag(id % 8, off & !7, len, more) }
                    }),
            ],
            1..200,
        ),
    ) {
        let mut rig = Rig::new(IpReassemblyConfig { max_fragments: 8, max_contexts: 16, ..cfg() });
        let mut ids = FragIdCounter::new(0);
        for (i, p) in pkts.iter().enumerate() {
            let _ = rig.feed(i as u64, p);
            if let Ok(mut f) = Fragmenter::new(p, 96, &mut ids) {
                let mut buf = [0u8; 256];
                while let Ok(Some(len)) = f.write_next(&mut buf) {
                    prop_assert!(len <= 96 || f.is_whole());
                }
            }
        }
        rig.assert_empty_after_timeout(pkts.len() as u64);
    }
}
