//! Tests for the header edits. The oracle is a packet *model*: a random packet is described
//! by a [`Spec`], built into bytes by [`build`] (every checksum computed from scratch by the
//! naive RFC 1071 loop [`reference_checksum`], independent of `crate::checksum`), edited in
//! place by the code under test, and compared byte for byte with the bytes built from the
//! edited model. That checks at once that the edited fields hold the new values, that
//! nothing else moved, and that every incrementally updated checksum equals a full
//! recomputation. [`verify`] is the stand-alone verifier for packets not built from a model
//! (fragments, VLAN frames).

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::string::ToString;
use std::vec;
use std::vec::Vec;

use proptest::prelude::*;

use super::*;

// ---------------------------------------------------------------- the model and its builder

/// The upper layer of a model packet.
#[derive(Clone, Debug)]
enum L4 {
    /// TCP with `opt_words` 32-bit words of NOP options.
    Tcp {
        sport: u16,
        dport: u16,
        opt_words: u8,
    },
    /// UDP; `no_checksum` stores 0 ("none").
    Udp {
        sport: u16,
        dport: u16,
        no_checksum: bool,
    },
    /// UDP-Lite with full coverage (RFC 3828 §3.1: coverage 0).
    UdpLite { sport: u16, dport: u16 },
    /// DCCP with a 12-byte generic header (X = 0), full coverage.
    Dccp { sport: u16, dport: u16 },
    /// ICMP (v4) or ICMPv6 echo request.
    Icmp,
}

/// An IPv6 extension header before the upper layer.
#[derive(Clone, Copy, Debug)]
enum Ext {
    HopByHop,
    DestOpts,
    /// A type 4 routing header with this many segments left.
    Routing(u8),
    /// An atomic fragment (offset 0, M = 0; RFC 6946).
    AtomicFragment,
}

#[derive(Clone, Debug)]
struct Spec {
    v6: bool,
    traffic_class: u8,
    ttl: u8,
    /// IPv4 identification or IPv6 flow label (20 bits used).
    ident: u32,
    src: [u8; 16],
    dst: [u8; 16],
    /// IPv4 options: this many NOP words.
    v4_nop_words: u8,
    /// IPv4: add an LSRR option.
    v4_lsrr: bool,
    v6_exts: Vec<Ext>,
    l4: L4,
    payload: Vec<u8>,
}

impl Spec {
    fn protocol(&self) -> u8 {
        match self.l4 {
            L4::Tcp { .. } => 6,
            L4::Udp { .. } => 17,
            L4::UdpLite { .. } => 136,
            L4::Dccp { .. } => 33,
            L4::Icmp if self.v6 => 58,
            L4::Icmp => 1,
        }
    }

    fn source_routed(&self) -> bool {
        (self.v4_lsrr && !self.v6)
            || self
                .v6_exts
                .iter()
                .any(|ext| matches!(ext, Ext::Routing(left) if *left > 0))
    }
}

/// The naive RFC 1071 checksum: 16-bit words, end-around carry at every step.
fn reference_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([
            pair[0],
            pair.get(1).copied().unwrap_or(0),
        ]));
        if sum > 0xffff {
            sum -= 0xffff;
        }
    }
    !u16::try_from(sum).expect("below 0x10000")
}

fn put16(buf: &mut [u8], at: usize, value: u16) {
    buf[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

fn get16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

/// The L4 bytes of `spec`, checksum field zero.
fn build_l4(spec: &Spec) -> (Vec<u8>, Option<usize>) {
    let mut l4 = Vec::new();
    let csum_at = match spec.l4 {
        L4::Tcp {
            sport,
            dport,
            opt_words,
        } => {
            l4.extend_from_slice(&sport.to_be_bytes());
            l4.extend_from_slice(&dport.to_be_bytes());
            l4.extend_from_slice(&[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
            l4.push((5 + opt_words) << 4);
            l4.extend_from_slice(&[0x18, 0xff, 0xf0, 0, 0, 0, 0]);
            l4.extend(std::iter::repeat_n(1u8, usize::from(opt_words) * 4));
            Some(16)
        }
        L4::Udp { sport, dport, .. } | L4::UdpLite { sport, dport } => {
            l4.extend_from_slice(&sport.to_be_bytes());
            l4.extend_from_slice(&dport.to_be_bytes());
            let len = if matches!(spec.l4, L4::UdpLite { .. }) {
                0 // coverage: the whole datagram
            } else {
                u16::try_from(8 + spec.payload.len()).expect("small")
            };
            l4.extend_from_slice(&len.to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
            Some(6)
        }
        L4::Dccp { sport, dport } => {
            l4.extend_from_slice(&sport.to_be_bytes());
            l4.extend_from_slice(&dport.to_be_bytes());
            // Data offset 3 words, CCVal 0 / CsCov 0, checksum, reserved/type 2/X 0, seq.
            l4.extend_from_slice(&[3, 0, 0, 0, 0x04, 0x12, 0x34, 0x56]);
            Some(6)
        }
        L4::Icmp => {
            let kind = if spec.v6 { 128 } else { 8 };
            l4.extend_from_slice(&[kind, 0, 0, 0, 0x12, 0x34, 0x00, 0x01]);
            Some(2)
        }
    };
    l4.extend_from_slice(&spec.payload);
    (l4, csum_at)
}

/// The L4 checksum of `spec` computed from scratch over its pseudo-header and bytes.
fn l4_checksum(spec: &Spec, l4: &[u8]) -> u16 {
    let protocol = spec.protocol();
    let mut data = Vec::new();
    if spec.v6 {
        if protocol != 1 {
            data.extend_from_slice(&spec.src);
            data.extend_from_slice(&spec.dst);
            data.extend_from_slice(&u32::try_from(l4.len()).expect("small").to_be_bytes());
            data.extend_from_slice(&[0, 0, 0, protocol]);
        }
    } else if protocol != 1 {
        data.extend_from_slice(&spec.src[..4]);
        data.extend_from_slice(&spec.dst[..4]);
        data.extend_from_slice(&[0, protocol]);
        data.extend_from_slice(&u16::try_from(l4.len()).expect("small").to_be_bytes());
    }
    data.extend_from_slice(l4);
    let sum = reference_checksum(&data);
    match spec.l4 {
        L4::Udp {
            no_checksum: true, ..
        } => 0,
        L4::Udp { .. } | L4::UdpLite { .. } if sum == 0 => 0xffff,
        _ => sum,
    }
}

/// The bytes of `spec`, with every checksum computed from scratch.
fn build(spec: &Spec) -> Vec<u8> {
    let (mut l4, csum_at) = build_l4(spec);
    if let Some(at) = csum_at {
        let sum = l4_checksum(spec, &l4);
        put16(&mut l4, at, sum);
    }
    let protocol = spec.protocol();
    let mut packet = Vec::new();
    if spec.v6 {
        let first = (6u32 << 28) | (u32::from(spec.traffic_class) << 20) | (spec.ident & 0xfffff);
        packet.extend_from_slice(&first.to_be_bytes());
        packet.extend_from_slice(&[0, 0, 0, spec.ttl]); // length and next header below
        packet.extend_from_slice(&spec.src);
        packet.extend_from_slice(&spec.dst);
        let mut next_at = 6;
        for ext in &spec.v6_exts {
            packet[next_at] = match ext {
                Ext::HopByHop => 0,
                Ext::DestOpts => 60,
                Ext::Routing(_) => 43,
                Ext::AtomicFragment => 44,
            };
            next_at = packet.len();
            match ext {
                // PadN over 6 bytes: 8 bytes in all.
                Ext::HopByHop | Ext::DestOpts => {
                    packet.extend_from_slice(&[0, 0, 1, 4, 0, 0, 0, 0])
                }
                // Type 4 (SRH-like shape), one 16-byte segment: 24 bytes.
                Ext::Routing(left) => {
                    packet.extend_from_slice(&[0, 2, 4, *left, 0, 0, 0, 0]);
                    packet.extend_from_slice(&[0x20; 16]);
                }
                Ext::AtomicFragment => {
                    packet.extend_from_slice(&[0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef])
                }
            }
        }
        packet[next_at] = protocol;
        packet.extend_from_slice(&l4);
        let payload_len = u16::try_from(packet.len() - 40).expect("small");
        put16(&mut packet, 4, payload_len);
    } else {
        let mut options = Vec::new();
        if spec.v4_lsrr {
            options.extend_from_slice(&[0x83, 7, 4, 192, 0, 2, 99, 1]);
        }
        options.extend(std::iter::repeat_n(1u8, usize::from(spec.v4_nop_words) * 4));
        let ihl = 5 + u8::try_from(options.len() / 4).expect("small");
        packet.extend_from_slice(&[0x40 | ihl, spec.traffic_class, 0, 0]);
        packet.extend_from_slice(
            &u16::try_from(spec.ident & 0xffff)
                .expect("masked")
                .to_be_bytes(),
        );
        packet.extend_from_slice(&[0x40, 0, spec.ttl, protocol, 0, 0]); // DF
        packet.extend_from_slice(&spec.src[..4]);
        packet.extend_from_slice(&spec.dst[..4]);
        packet.extend_from_slice(&options);
        let header_len = packet.len();
        packet.extend_from_slice(&l4);
        let total = u16::try_from(packet.len()).expect("small");
        put16(&mut packet, 2, total);
        let sum = reference_checksum(&packet[..header_len]);
        put16(&mut packet, 10, sum);
    }
    packet
}

/// What `edits` should do to `spec`: the edited model, or the error `apply_l3` must return.
fn model_apply(spec: &Spec, edits: &[Edit]) -> Result<Spec, RewriteError> {
    let mut out = spec.clone();
    for edit in edits {
        match *edit {
            Edit::SetDscp(dscp) if dscp > 63 => return Err(RewriteError::IllegalValue),
            Edit::SetDscp(dscp) => out.traffic_class = (dscp << 2) | (out.traffic_class & 3),
            Edit::SetEcn(ecn) if ecn > 3 => return Err(RewriteError::IllegalValue),
            Edit::SetEcn(ecn) => out.traffic_class = (out.traffic_class & 0xfc) | ecn,
            Edit::SetTtl(ttl) => out.ttl = ttl,
            Edit::DecrementTtl if out.ttl <= 1 => return Err(RewriteError::TtlExpired),
            Edit::DecrementTtl => out.ttl -= 1,
            Edit::SetSrcAddr(addr) | Edit::SetDstAddr(addr) => {
                let is_dst = matches!(edit, Edit::SetDstAddr(_));
                let field = if is_dst { &mut out.dst } else { &mut out.src };
                match addr {
                    IpAddr::V4(_) if spec.v6 => return Err(RewriteError::AddressFamily),
                    IpAddr::V6(_) if !spec.v6 => return Err(RewriteError::AddressFamily),
                    _ if is_dst && spec.source_routed() => return Err(RewriteError::Unsupported),
                    IpAddr::V4(addr) => field[..4].copy_from_slice(&addr.octets()),
                    IpAddr::V6(addr) => *field = addr.octets(),
                }
            }
            Edit::SetSrcPort(port) | Edit::SetDstPort(port) => {
                let is_dst = matches!(edit, Edit::SetDstPort(_));
                match &mut out.l4 {
                    L4::Tcp { sport, dport, .. }
                    | L4::Udp { sport, dport, .. }
                    | L4::UdpLite { sport, dport }
                    | L4::Dccp { sport, dport } => *(if is_dst { dport } else { sport }) = port,
                    L4::Icmp => return Err(RewriteError::Unsupported),
                }
            }
            Edit::PushVlan(_) | Edit::PopVlan => {}
        }
    }
    Ok(out)
}

/// Checks every checksum of a whole (unfragmented) IPv4/IPv6 packet by full recomputation,
/// walking its headers with etherparse (independent of the code under test). UDP's 0 is
/// accepted as "none".
fn verify(packet: &[u8]) {
    use etherparse::SlicedPacket;
    let sliced = SlicedPacket::from_ip(packet).expect("a valid packet");
    let (src, dst, l4_bytes, protocol) = match sliced.net.as_ref().expect("has IP") {
        etherparse::NetSlice::Ipv4(ip) => {
            let header = ip.header().slice();
            assert_eq!(reference_checksum(header), 0, "IPv4 header checksum");
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src[..4].copy_from_slice(&ip.header().source());
            dst[..4].copy_from_slice(&ip.header().destination());
            (src, dst, ip.payload().payload, ip.payload().ip_number.0)
        }
        etherparse::NetSlice::Ipv6(ip) => (
            ip.header().source(),
            ip.header().destination(),
            ip.payload().payload,
            ip.payload().ip_number.0,
        ),
        etherparse::NetSlice::Arp(_) => panic!("not IP"),
    };
    let v6 = packet[0] >> 4 == 6;
    let csum_at = match protocol {
        6 => 16,
        17 | 136 | 33 => 6,
        58 if v6 => 2,
        1 => {
            assert_eq!(reference_checksum(l4_bytes), 0, "ICMP checksum");
            return;
        }
        _ => return,
    };
    if protocol == 17 && get16(l4_bytes, 6) == 0 {
        return; // "no checksum"
    }
    let mut data = Vec::new();
    data.extend_from_slice(if v6 { &src[..] } else { &src[..4] });
    data.extend_from_slice(if v6 { &dst[..] } else { &dst[..4] });
    if v6 {
        data.extend_from_slice(&u32::try_from(l4_bytes.len()).expect("small").to_be_bytes());
        data.extend_from_slice(&[0, 0, 0, protocol]);
    } else {
        data.extend_from_slice(&[0, protocol]);
        data.extend_from_slice(&u16::try_from(l4_bytes.len()).expect("small").to_be_bytes());
    }
    let stored = get16(l4_bytes, csum_at);
    data.extend_from_slice(l4_bytes);
    let at = data.len() - l4_bytes.len() + csum_at;
    put16(&mut data, at, 0);
    let full = reference_checksum(&data);
    let expected = if full == 0 && matches!(protocol, 17 | 136) {
        0xffff
    } else {
        full
    };
    assert_eq!(stored, expected, "L4 checksum of protocol {protocol}");
}

// ---------------------------------------------------------------- fixed packets

fn v4(a: u8, b: u8, c: u8, d: u8) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&[a, b, c, d]);
    out
}

fn v6(last: u16) -> [u8; 16] {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last).octets()
}

fn tcp4() -> Spec {
    Spec {
        v6: false,
        traffic_class: 0xb9,
        ttl: 64,
        ident: 0x1c46,
        src: v4(10, 0, 0, 1),
        dst: v4(10, 0, 0, 2),
        v4_nop_words: 0,
        v4_lsrr: false,
        v6_exts: vec![],
        l4: L4::Tcp {
            sport: 49153,
            dport: 80,
            opt_words: 0,
        },
        payload: (1..=8).collect(),
    }
}

fn udp6() -> Spec {
    Spec {
        v6: true,
        traffic_class: 0x2a,
        ttl: 255,
        ident: 0x12345,
        src: v6(1),
        dst: v6(2),
        v4_nop_words: 0,
        v4_lsrr: false,
        v6_exts: vec![],
        l4: L4::Udp {
            sport: 5000,
            dport: 5001,
            no_checksum: false,
        },
        payload: b"wxyz".to_vec(),
    }
}

/// Applies `edits` with `apply_l3` and checks the result against the model.
fn check_against_model(spec: &Spec, edits: &[Edit]) -> Result<(), RewriteError> {
    let original = build(spec);
    verify(&original);
    let mut packet = original.clone();
    let result = apply_l3(&mut packet, edits);
    match model_apply(spec, edits) {
        Ok(edited) => {
            assert_eq!(result, Ok(()), "edits {edits:?} on {spec:?}");
            assert_eq!(packet, build(&edited), "edits {edits:?} on {spec:?}");
            verify(&packet);
        }
        Err(err) => {
            assert_eq!(result, Err(err), "edits {edits:?} on {spec:?}");
            assert_eq!(packet, original, "an error leaves the packet untouched");
        }
    }
    result
}

#[test]
fn the_test_builder_agrees_with_etherparse() {
    // The model's bytes are real packets: etherparse's own checksum code agrees.
    let packet = build(&tcp4());
    let ip = etherparse::Ipv4HeaderSlice::from_slice(&packet).expect("ipv4");
    assert_eq!(ip.header_checksum(), ip.to_header().calc_header_checksum());
    let tcp = etherparse::TcpSlice::from_slice(&packet[20..]).expect("tcp");
    assert_eq!(
        tcp.checksum(),
        tcp.calc_checksum_ipv4(ip.source(), ip.destination())
            .expect("small")
    );
    let packet = build(&udp6());
    let ip = etherparse::Ipv6HeaderSlice::from_slice(&packet).expect("ipv6");
    let udp = etherparse::UdpSlice::from_slice(&packet[40..]).expect("udp");
    assert_eq!(
        udp.checksum(),
        udp.to_header()
            .calc_checksum_ipv6_raw(ip.source(), ip.destination(), udp.payload())
            .expect("small")
    );
}

#[test]
fn every_single_edit_on_tcp4_and_udp6() {
    let edits_v4 = [
        Edit::SetDscp(46),
        Edit::SetDscp(0),
        Edit::SetEcn(3),
        Edit::SetTtl(1),
        Edit::DecrementTtl,
        Edit::SetSrcAddr(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))),
        Edit::SetDstAddr(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9))),
        Edit::SetSrcPort(1),
        Edit::SetDstPort(8080),
    ];
    for edit in edits_v4 {
        check_against_model(&tcp4(), &[edit]).expect("allowed");
    }
    let edits_v6 = [
        Edit::SetDscp(10),
        Edit::SetEcn(1),
        Edit::SetTtl(3),
        Edit::DecrementTtl,
        Edit::SetSrcAddr(IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1))),
        Edit::SetDstAddr(IpAddr::V6(Ipv6Addr::new(0xfd00, 1, 2, 3, 4, 5, 6, 7))),
        Edit::SetSrcPort(443),
        Edit::SetDstPort(65535),
    ];
    for edit in edits_v6 {
        check_against_model(&udp6(), &[edit]).expect("allowed");
    }
}

/// The NAT case, bytes spelled out: 10.0.0.1:49153 → 10.0.0.2:80 becomes → 10.9.9.9:8080.
#[test]
fn nat_rewrite_matches_a_packet_built_from_scratch() {
    let mut packet = build(&tcp4());
    apply_l3(
        &mut packet,
        &[
            Edit::SetDstAddr(IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9))),
            Edit::SetDstPort(8080),
        ],
    )
    .expect("NAT");
    assert_eq!(&packet[16..20], &[10, 9, 9, 9]);
    assert_eq!(get16(&packet, 22), 8080);
    verify(&packet);
    // The same with etherparse's checksum code.
    let ip = etherparse::Ipv4HeaderSlice::from_slice(&packet).expect("ipv4");
    assert_eq!(ip.header_checksum(), ip.to_header().calc_header_checksum());
    let tcp = etherparse::TcpSlice::from_slice(&packet[20..]).expect("tcp");
    assert_eq!(
        tcp.checksum(),
        tcp.calc_checksum_ipv4(ip.source(), ip.destination())
            .expect("small")
    );
}

#[test]
fn ipv4_options_shift_the_l4_header() {
    let mut spec = tcp4();
    spec.v4_nop_words = 3; // IHL 8
    check_against_model(
        &spec,
        &[
            Edit::SetSrcAddr(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4))),
            Edit::SetDstAddr(IpAddr::V4(Ipv4Addr::new(5, 6, 7, 8))),
            Edit::SetSrcPort(7),
            Edit::SetDscp(63),
            Edit::DecrementTtl,
        ],
    )
    .expect("allowed");
    // IHL 15, the maximum.
    spec.v4_nop_words = 10;
    check_against_model(&spec, &[Edit::SetDstPort(9)]).expect("allowed");
}

#[test]
fn source_routed_destination_is_refused_source_is_not() {
    let mut spec = tcp4();
    spec.v4_lsrr = true;
    let dst = Edit::SetDstAddr(IpAddr::V4(Ipv4Addr::new(5, 6, 7, 8)));
    assert_eq!(
        check_against_model(&spec, &[dst]),
        Err(RewriteError::Unsupported)
    );
    check_against_model(
        &spec,
        &[Edit::SetSrcAddr(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)))],
    )
    .expect("source is fine");

    let mut spec = udp6();
    spec.v6_exts = vec![Ext::Routing(1)];
    let dst = Edit::SetDstAddr(IpAddr::V6(Ipv6Addr::LOCALHOST));
    assert_eq!(
        check_against_model(&spec, &[dst]),
        Err(RewriteError::Unsupported)
    );
    // Segments left 0: the destination field is the final one.
    spec.v6_exts = vec![Ext::Routing(0)];
    check_against_model(&spec, &[dst]).expect("allowed");
}

#[test]
fn malformed_ipv4_options_fail_only_destination_edits() {
    let mut packet = build(&tcp4());
    // Make room for one option word: IHL 6 with a bad option length.
    packet.splice(20..20, [0x44, 9, 0, 0]);
    packet[0] = 0x46;
    let total = u16::try_from(packet.len()).expect("small");
    put16(&mut packet, 2, total);
    put16(&mut packet, 10, 0);
    let sum = reference_checksum(&packet[..24]);
    put16(&mut packet, 10, sum);
    let dst = Edit::SetDstAddr(IpAddr::V4(Ipv4Addr::new(5, 6, 7, 8)));
    assert_eq!(apply_l3(&mut packet, &[dst]), Err(RewriteError::BadLength));
    apply_l3(&mut packet, &[Edit::SetDscp(1), Edit::SetDstPort(1)]).expect("no options read");
}

#[test]
fn ipv6_extension_headers_before_tcp_and_udp() {
    let chains = [
        vec![Ext::HopByHop],
        vec![
            Ext::HopByHop,
            Ext::DestOpts,
            Ext::Routing(0),
            Ext::AtomicFragment,
        ],
        vec![Ext::DestOpts, Ext::AtomicFragment, Ext::DestOpts],
    ];
    let edits = [
        Edit::SetSrcAddr(IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 9))),
        Edit::SetDstAddr(IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 8))),
        Edit::SetSrcPort(1234),
        Edit::SetDstPort(4321),
        Edit::SetDscp(46),
        Edit::DecrementTtl,
    ];
    for chain in chains {
        for l4 in [
            L4::Tcp {
                sport: 1,
                dport: 2,
                opt_words: 2,
            },
            L4::Udp {
                sport: 3,
                dport: 4,
                no_checksum: false,
            },
        ] {
            let mut spec = udp6();
            spec.v6_exts = chain.clone();
            spec.l4 = l4;
            check_against_model(&spec, &edits).expect("allowed");
        }
    }
}

#[test]
fn misplaced_hop_by_hop_and_long_chains_fail_l4_edits_only() {
    let mut spec = udp6();
    spec.v6_exts = vec![Ext::DestOpts, Ext::HopByHop];
    let mut packet = build(&spec);
    let port = Edit::SetDstPort(1);
    assert_eq!(
        apply_l3(&mut packet, &[port]),
        Err(RewriteError::IllegalValue)
    );
    apply_l3(&mut packet, &[Edit::SetDscp(7), Edit::SetTtl(9)]).expect("L3 only");

    spec.v6_exts = vec![Ext::DestOpts; MAX_IPV6_EXT_HEADERS];
    check_against_model(&spec, &[port]).expect("at the limit");
    spec.v6_exts.push(Ext::DestOpts);
    let mut packet = build(&spec);
    assert_eq!(
        apply_l3(&mut packet, &[port]),
        Err(RewriteError::Unsupported)
    );
}

#[test]
fn udp_checksum_zero_means_none_and_stays_zero() {
    for v6 in [false, true] {
        let mut spec = if v6 { udp6() } else { tcp4() };
        spec.l4 = L4::Udp {
            sport: 5,
            dport: 6,
            no_checksum: true,
        };
        let src = if v6 {
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 5))
        } else {
            IpAddr::V4(Ipv4Addr::new(10, 1, 1, 1))
        };
        let mut packet = build(&spec);
        let l4 = packet.len() - spec.payload.len() - 8;
        assert_eq!(get16(&packet, l4 + 6), 0);
        apply_l3(&mut packet, &[Edit::SetSrcAddr(src), Edit::SetDstPort(53)]).expect("ok");
        assert_eq!(get16(&packet, l4 + 6), 0, "still none (v6: {v6})");
        check_against_model(&spec, &[Edit::SetSrcAddr(src), Edit::SetDstPort(53)]).expect("model");
    }
}

/// The port value `m'` that makes Eqn. 3 give 0 when replacing `m` under checksum `hc`:
/// `~hc + ~m + m' = 0xFFFF` in ones' complement.
fn port_giving_zero(hc: u16, m: u16) -> u16 {
    // m' = 0xFFFF - (~hc +' ~m), with the end-around carry.
    let mut sum = u32::from(!hc) + u32::from(!m);
    if sum > 0xffff {
        sum -= 0xffff;
    }
    0xffff - u16::try_from(sum).expect("folded")
}

#[test]
fn udp_computed_zero_is_sent_as_all_ones_tcp_keeps_zero() {
    for v6 in [false, true] {
        let mut spec = if v6 { udp6() } else { tcp4() };
        spec.l4 = L4::Udp {
            sport: 5000,
            dport: 6000,
            no_checksum: false,
        };
        let mut packet = build(&spec);
        let l4 = packet.len() - spec.payload.len() - 8;
        let port = port_giving_zero(get16(&packet, l4 + 6), 6000);
        apply_l3(&mut packet, &[Edit::SetDstPort(port)]).expect("ok");
        assert_eq!(get16(&packet, l4 + 6), 0xffff, "v6: {v6}");
        verify(&packet);
        check_against_model(&spec, &[Edit::SetDstPort(port)]).expect("model");

        // TCP: 0 is an ordinary checksum value.
        spec.l4 = L4::Tcp {
            sport: 5000,
            dport: 6000,
            opt_words: 0,
        };
        let mut packet = build(&spec);
        let l4 = packet.len() - spec.payload.len() - 20;
        let port = port_giving_zero(get16(&packet, l4 + 16), 6000);
        apply_l3(&mut packet, &[Edit::SetDstPort(port)]).expect("ok");
        assert_eq!(get16(&packet, l4 + 16), 0, "v6: {v6}");
        verify(&packet);
    }
}

#[test]
fn icmp_has_no_pseudo_header_icmpv6_has() {
    let mut spec = tcp4();
    spec.l4 = L4::Icmp;
    let mut packet = build(&spec);
    let icmp_before = packet[20..].to_vec();
    apply_l3(
        &mut packet,
        &[Edit::SetDstAddr(IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)))],
    )
    .expect("ok");
    assert_eq!(packet[20..], icmp_before[..], "ICMPv4 untouched");
    verify(&packet);
    assert_eq!(
        check_against_model(&spec, &[Edit::SetDstPort(1)]),
        Err(RewriteError::Unsupported)
    );

    let mut spec = udp6();
    spec.l4 = L4::Icmp;
    check_against_model(
        &spec,
        &[Edit::SetSrcAddr(IpAddr::V6(Ipv6Addr::new(
            0xfe80, 0, 0, 0, 0, 0, 0, 1,
        )))],
    )
    .expect("ICMPv6 checksum patched");
}

#[test]
fn udp_lite_and_dccp_addresses_and_ports() {
    for v6 in [false, true] {
        for l4 in [
            L4::UdpLite { sport: 1, dport: 2 },
            L4::Dccp { sport: 3, dport: 4 },
        ] {
            let mut spec = if v6 { udp6() } else { tcp4() };
            spec.l4 = l4;
            let src = if v6 {
                IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 5))
            } else {
                IpAddr::V4(Ipv4Addr::new(10, 1, 1, 1))
            };
            check_against_model(&spec, &[Edit::SetSrcAddr(src), Edit::SetDstPort(99)])
                .expect("allowed");
        }
    }
}

#[test]
fn ttl_expiry_and_value_ranges() {
    let mut spec = tcp4();
    spec.ttl = 1;
    assert_eq!(
        check_against_model(&spec, &[Edit::DecrementTtl]),
        Err(RewriteError::TtlExpired)
    );
    spec.ttl = 0;
    assert_eq!(
        check_against_model(&spec, &[Edit::DecrementTtl]),
        Err(RewriteError::TtlExpired)
    );
    // The TTL is followed through the list: 2 → 1 → expired, nothing written.
    spec.ttl = 2;
    assert_eq!(
        check_against_model(
            &spec,
            &[Edit::SetDscp(1), Edit::DecrementTtl, Edit::DecrementTtl]
        ),
        Err(RewriteError::TtlExpired)
    );
    check_against_model(
        &spec,
        &[Edit::SetTtl(9), Edit::DecrementTtl, Edit::DecrementTtl],
    )
    .expect("set first");
    for bad in [Edit::SetDscp(64), Edit::SetEcn(4)] {
        assert_eq!(
            check_against_model(&udp6(), &[bad]),
            Err(RewriteError::IllegalValue)
        );
    }
    assert_eq!(
        check_against_model(
            &udp6(),
            &[Edit::SetSrcAddr(IpAddr::V4(Ipv4Addr::LOCALHOST))]
        ),
        Err(RewriteError::AddressFamily)
    );
    assert_eq!(
        check_against_model(
            &tcp4(),
            &[Edit::SetDstAddr(IpAddr::V6(Ipv6Addr::LOCALHOST))]
        ),
        Err(RewriteError::AddressFamily)
    );
}

#[test]
fn ipv6_dscp_keeps_version_and_flow_label() {
    let mut packet = build(&udp6());
    apply_l3(&mut packet, &[Edit::SetDscp(0x3f), Edit::SetEcn(0)]).expect("ok");
    let word = u32::from_be_bytes([packet[0], packet[1], packet[2], packet[3]]);
    assert_eq!(word >> 28, 6);
    assert_eq!((word >> 20) & 0xff, 0xfc);
    assert_eq!(word & 0xfffff, 0x12345);
    let ip = IpPacket::new(&mut packet).expect("valid");
    assert_eq!(ip.traffic_class(), 0xfc);
}

#[test]
fn trailing_padding_is_ignored_and_untouched() {
    let mut packet = build(&tcp4());
    let len = packet.len();
    packet.extend_from_slice(&[0xee; 6]); // Ethernet padding after a short packet
    apply_l3(&mut packet, &[Edit::SetSrcPort(1), Edit::SetDscp(3)]).expect("ok");
    assert_eq!(packet[len..], [0xee; 6]);
    verify(&packet[..len]);
    let ip = IpPacket::new(&mut packet).expect("valid");
    assert_eq!(ip.len(), len);
}

#[test]
fn truncated_and_bad_lengths() {
    let whole = build(&tcp4());
    let edits = [Edit::SetDstPort(1)];
    for cut in 0..whole.len() {
        let mut packet = whole[..cut].to_vec();
        assert_eq!(
            apply_l3(&mut packet, &edits),
            Err(RewriteError::Truncated),
            "cut at {cut}"
        );
        assert_eq!(packet, whole[..cut]);
    }
    // IHL 4.
    let mut packet = whole.clone();
    packet[0] = 0x44;
    assert_eq!(apply_l3(&mut packet, &edits), Err(RewriteError::BadLength));
    // Total length below the header.
    let mut packet = whole.clone();
    put16(&mut packet, 2, 19);
    assert_eq!(apply_l3(&mut packet, &edits), Err(RewriteError::BadLength));
    // Total length leaving a 10-byte TCP header: L3 edits still work, ports do not.
    let mut packet = whole.clone();
    put16(&mut packet, 2, 30);
    assert_eq!(apply_l3(&mut packet, &edits), Err(RewriteError::BadLength));
    let dst = Edit::SetDstAddr(IpAddr::V4(Ipv4Addr::new(1, 1, 1, 1)));
    assert_eq!(apply_l3(&mut packet, &[dst]), Err(RewriteError::BadLength));
    apply_l3(&mut packet, &[Edit::SetTtl(3)]).expect("L3 only");
    // Version 5.
    let mut packet = whole.clone();
    packet[0] = 0x55;
    assert_eq!(
        apply_l3(&mut packet, &edits),
        Err(RewriteError::Unsupported)
    );
    // IPv6 cut inside an extension header: the payload length says more than there is.
    let mut spec = udp6();
    spec.v6_exts = vec![Ext::HopByHop];
    let whole = build(&spec);
    for cut in 0..whole.len() {
        let mut packet = whole[..cut].to_vec();
        assert_eq!(
            apply_l3(&mut packet, &edits),
            Err(RewriteError::Truncated),
            "cut at {cut}"
        );
    }
    // An extension header longer than the payload length.
    let mut packet = whole.clone();
    packet[41] = 200;
    assert_eq!(apply_l3(&mut packet, &edits), Err(RewriteError::BadLength));
}

#[test]
fn authentication_header_allows_mutable_fields_only() {
    // IPv4 | AH (12 bytes: next TCP, len 1) | TCP
    let inner = build(&tcp4());
    let mut packet = inner[..20].to_vec();
    packet[9] = 51;
    packet.extend_from_slice(&[6, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 7]);
    packet.extend_from_slice(&inner[20..]);
    let total = u16::try_from(packet.len()).expect("small");
    put16(&mut packet, 2, total);
    put16(&mut packet, 10, 0);
    let sum = reference_checksum(&packet[..20]);
    put16(&mut packet, 10, sum);
    let before = packet.clone();
    for edit in [
        Edit::SetSrcAddr(IpAddr::V4(Ipv4Addr::new(1, 1, 1, 1))),
        Edit::SetDstPort(1),
    ] {
        assert_eq!(
            apply_l3(&mut packet, &[edit]),
            Err(RewriteError::Unsupported)
        );
        assert_eq!(packet, before);
    }
    apply_l3(&mut packet, &[Edit::SetDscp(46), Edit::DecrementTtl]).expect("mutable");
    assert_eq!(reference_checksum(&packet[..20]), 0);
}

// ---------------------------------------------------------------- fragments

/// Splits a whole IPv4 packet (20-byte header) into fragments of `chunk` data bytes.
fn fragment_v4(whole: &[u8], chunk: usize) -> Vec<Vec<u8>> {
    let data = &whole[20..];
    let mut out = Vec::new();
    for (i, piece) in data.chunks(chunk).enumerate() {
        let mut frag = whole[..20].to_vec();
        frag.extend_from_slice(piece);
        let total = u16::try_from(frag.len()).expect("small");
        put16(&mut frag, 2, total);
        let more = (i + 1) * chunk < data.len();
        let offset = u16::try_from(i * chunk / 8).expect("small");
        put16(&mut frag, 6, offset | if more { 0x2000 } else { 0 });
        put16(&mut frag, 10, 0);
        let sum = reference_checksum(&frag[..20]);
        put16(&mut frag, 10, sum);
        out.push(frag);
    }
    out
}

/// Reassembles fragments from `fragment_v4` (in order) into a whole packet.
fn reassemble_v4(frags: &[Vec<u8>]) -> Vec<u8> {
    let mut whole = frags[0][..20].to_vec();
    for frag in frags {
        assert_eq!(
            reference_checksum(&frag[..20]),
            0,
            "fragment header checksum"
        );
        whole.extend_from_slice(&frag[20..]);
    }
    let total = u16::try_from(whole.len()).expect("small");
    put16(&mut whole, 2, total);
    put16(&mut whole, 6, 0x4000); // DF as the original had
    put16(&mut whole, 10, 0);
    let sum = reference_checksum(&whole[..20]);
    put16(&mut whole, 10, sum);
    whole
}

#[test]
fn address_rewrite_on_ipv4_fragments_is_correct_after_reassembly() {
    for l4 in [
        L4::Tcp {
            sport: 1000,
            dport: 80,
            opt_words: 0,
        },
        L4::Udp {
            sport: 1000,
            dport: 53,
            no_checksum: false,
        },
    ] {
        let mut spec = tcp4();
        spec.l4 = l4;
        spec.payload = (0..100).collect();
        let mut frags = fragment_v4(&build(&spec), 24);
        assert!(frags.len() > 3);
        let edits = [
            Edit::SetSrcAddr(IpAddr::V4(Ipv4Addr::new(172, 16, 0, 1))),
            Edit::SetDstAddr(IpAddr::V4(Ipv4Addr::new(172, 16, 0, 2))),
            Edit::SetDscp(10),
            Edit::DecrementTtl,
        ];
        for frag in &mut frags {
            let data_before = frag[20..].to_vec();
            let first = get16(frag, 6) & 0x1fff == 0;
            apply_l3(frag, &edits).expect("addresses on fragments");
            if !first {
                assert_eq!(frag[20..], data_before[..], "later fragment: L3 only");
            }
            // Ports: refused on every fragment, nothing written.
            let before = frag.clone();
            assert_eq!(
                apply_l3(frag, &[Edit::SetDscp(1), Edit::SetDstPort(1)]),
                Err(RewriteError::Fragment)
            );
            assert_eq!(*frag, before);
        }
        let edited = model_apply(&spec, &edits).expect("model");
        assert_eq!(reassemble_v4(&frags), build(&edited));
        verify(&reassemble_v4(&frags));
    }
}

#[test]
fn tiny_first_fragment_refuses_address_rewrite() {
    let mut spec = tcp4();
    spec.payload = (0..40).collect();
    // 8 bytes of TCP in the first fragment: its checksum (bytes 16..18) is in the second.
    let mut frags = fragment_v4(&build(&spec), 8);
    let dst = Edit::SetDstAddr(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)));
    let before = frags[0].clone();
    assert_eq!(apply_l3(&mut frags[0], &[dst]), Err(RewriteError::Fragment));
    assert_eq!(frags[0], before);
    apply_l3(&mut frags[0], &[Edit::SetDscp(5)]).expect("L3 edits still work");
    assert_eq!(reference_checksum(&frags[0][..20]), 0);
}

#[test]
fn address_rewrite_on_ipv6_fragments_is_correct_after_reassembly() {
    let mut spec = udp6();
    spec.v6_exts = vec![Ext::DestOpts];
    spec.payload = (0..90).collect();
    let whole = build(&spec);
    // Unfragmentable part: IPv6 header; fragmentable: DestOpts + UDP + payload.
    let fragmentable = &whole[40..];
    let mut frags = Vec::new();
    for (i, piece) in fragmentable.chunks(32).enumerate() {
        let mut frag = whole[..40].to_vec();
        frag[6] = 44;
        let more = (i + 1) * 32 < fragmentable.len();
        let offset = u16::try_from(i * 32).expect("small") | u16::from(more);
        frag.extend_from_slice(&[60, 0]);
        frag.extend_from_slice(&offset.to_be_bytes());
        frag.extend_from_slice(&[0, 0, 0, 42]);
        frag.extend_from_slice(piece);
        let payload = u16::try_from(frag.len() - 40).expect("small");
        put16(&mut frag, 4, payload);
        frags.push(frag);
    }
    let edits = [
        Edit::SetSrcAddr(IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x51))),
        Edit::SetDstAddr(IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x52))),
    ];
    for frag in &mut frags {
        apply_l3(frag, &edits).expect("addresses on fragments");
        assert_eq!(
            apply_l3(frag, &[Edit::SetSrcPort(1)]),
            Err(RewriteError::Fragment)
        );
    }
    let mut reassembled = frags[0][..40].to_vec();
    reassembled[6] = 60;
    for frag in &frags {
        reassembled.extend_from_slice(&frag[48..]);
    }
    let payload = u16::try_from(reassembled.len() - 40).expect("small");
    put16(&mut reassembled, 4, payload);
    assert_eq!(
        reassembled,
        build(&model_apply(&spec, &edits).expect("model"))
    );
    verify(&reassembled);
}

// ---------------------------------------------------------------- VLAN frames

const MACS: [u8; 12] = [2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];

/// An Ethernet II frame with `tags` (TPID, TCI) around `ip`, in a buffer with `room` spare.
fn frame(tags: &[(u16, u16)], ether_type: u16, ip: &[u8], room: usize) -> (Vec<u8>, usize) {
    let mut out = MACS.to_vec();
    for (tpid, tci) in tags {
        out.extend_from_slice(&tpid.to_be_bytes());
        out.extend_from_slice(&tci.to_be_bytes());
    }
    out.extend_from_slice(&ether_type.to_be_bytes());
    out.extend_from_slice(ip);
    let len = out.len();
    out.resize(len + room, 0);
    (out, len)
}

#[test]
fn vlan_push_then_pop_round_trips() {
    let ip = build(&tcp4());
    let (mut buf, len) = frame(&[], 0x0800, &ip, 8);
    let original = buf[..len].to_vec();
    let tag = VlanTag {
        pcp: 5,
        dei: true,
        vid: 100,
    };
    let new_len = vlan_push(&mut buf, len, tag).expect("room");
    assert_eq!(new_len, len + 4);
    let (expected, _) = frame(&[(0x8100, (5 << 13) | (1 << 12) | 100)], 0x0800, &ip, 0);
    assert_eq!(buf[..new_len], expected[..]);
    let summary = crate::IpSummary::parse_l2(&buf[..new_len]).expect("classifies");
    assert_eq!(summary.vlan, Some(100));
    // A second tag becomes the outer one (QinQ with an 0x8100 outer TPID).
    let inner_tag = VlanTag {
        pcp: 0,
        dei: false,
        vid: 7,
    };
    let two = vlan_push(&mut buf, new_len, inner_tag).expect("room");
    assert_eq!(
        crate::IpSummary::parse_l2(&buf[..two]).expect("ok").vlan,
        Some(7)
    );
    assert_eq!(
        vlan_push(&mut buf, two, tag),
        Err(RewriteError::Unsupported)
    );
    let one = vlan_pop(&mut buf, two).expect("tagged");
    assert_eq!(buf[..one], expected[..]);
    let zero = vlan_pop(&mut buf, one).expect("tagged");
    assert_eq!(buf[..zero], original[..]);
    assert_eq!(vlan_pop(&mut buf, zero), Err(RewriteError::NotTagged));
}

#[test]
fn vlan_errors() {
    let ip = build(&tcp4());
    let (mut buf, len) = frame(&[], 0x0800, &ip, 3);
    let tag = VlanTag {
        pcp: 0,
        dei: false,
        vid: 1,
    };
    assert_eq!(vlan_push(&mut buf, len, tag), Err(RewriteError::NoRoom));
    assert_eq!(
        vlan_push(&mut buf, len, VlanTag { pcp: 8, ..tag }),
        Err(RewriteError::IllegalValue)
    );
    assert_eq!(
        vlan_push(&mut buf, len, VlanTag { vid: 4095, ..tag }),
        Err(RewriteError::IllegalValue)
    );
    let buf_len = buf.len();
    assert_eq!(
        vlan_push(&mut buf, buf_len + 1, tag),
        Err(RewriteError::BadLength)
    );
    assert_eq!(vlan_push(&mut buf, 13, tag), Err(RewriteError::Truncated));
    // A TPID with no room for the TCI and the next EtherType.
    let mut short = MACS.to_vec();
    short.extend_from_slice(&[0x81, 0x00, 0x00, 0x01, 0x08]);
    let short_len = short.len();
    assert_eq!(
        vlan_pop(&mut short, short_len),
        Err(RewriteError::Truncated)
    );
}

#[test]
fn apply_frame_edits_l3_behind_tags_and_moves_tags() {
    let spec = tcp4();
    let ip = build(&spec);
    let edits = [
        Edit::PopVlan,
        Edit::SetDstAddr(IpAddr::V4(Ipv4Addr::new(10, 7, 7, 7))),
        Edit::SetDstPort(8443),
        Edit::PushVlan(VlanTag {
            pcp: 3,
            dei: false,
            vid: 200,
        }),
    ];
    let (mut buf, len) = frame(&[(0x88a8, 10), (0x8100, 20)], 0x0800, &ip, 8);
    let new_len = apply_frame(&mut buf, len, &edits).expect("ok");
    let edited_ip = build(&model_apply(&spec, &edits).expect("model"));
    let (expected, _) = frame(
        &[(0x8100, (3 << 13) | 200), (0x8100, 20)],
        0x0800,
        &edited_ip,
        0,
    );
    // The outer 802.1ad tag replaced by an 802.1Q one; the inner tag kept.
    assert_eq!(new_len, len);
    assert_eq!(buf[..new_len], expected[..]);
}

#[test]
fn apply_frame_is_all_or_nothing() {
    let ip = build(&udp6());
    let (mut buf, len) = frame(&[(0x8100, 5)], 0x86dd, &ip, 4);
    let before = buf.clone();
    // Push, pop, pop are fine; the third pop finds no tag.
    let tag = VlanTag {
        pcp: 0,
        dei: false,
        vid: 9,
    };
    let edits = [
        Edit::SetDstPort(1),
        Edit::PushVlan(tag),
        Edit::PopVlan,
        Edit::PopVlan,
        Edit::PopVlan,
    ];
    assert_eq!(
        apply_frame(&mut buf, len, &edits),
        Err(RewriteError::NotTagged)
    );
    assert_eq!(buf, before);
    let edits = [
        Edit::PushVlan(tag),
        Edit::SetDstAddr(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    ];
    assert_eq!(
        apply_frame(&mut buf, len, &edits),
        Err(RewriteError::AddressFamily)
    );
    assert_eq!(buf, before);
    // Three tags in the frame: L3 is not found, VLAN edits alone still work.
    let (mut buf, len) = frame(&[(0x8100, 1), (0x8100, 2), (0x8100, 3)], 0x0800, &ip, 0);
    assert_eq!(
        apply_frame(&mut buf, len, &[Edit::SetTtl(1)]),
        Err(RewriteError::Unsupported)
    );
    assert_eq!(apply_frame(&mut buf, len, &[Edit::PopVlan]), Ok(len - 4));
}

#[test]
fn apply_frame_vlan_only_on_a_non_ip_frame() {
    let arp = [0u8; 28];
    let (mut buf, len) = frame(&[], 0x0806, &arp, 4);
    let tag = VlanTag {
        pcp: 0,
        dei: false,
        vid: 42,
    };
    assert_eq!(
        apply_frame(&mut buf, len, &[Edit::PushVlan(tag)]),
        Ok(len + 4)
    );
    assert_eq!(get16(&buf, 12), 0x8100);
    assert_eq!(get16(&buf, 16), 0x0806);
    assert_eq!(
        apply_frame(&mut buf, len + 4, &[Edit::SetDscp(1)]),
        Err(RewriteError::Unsupported)
    );
    assert_eq!(l3_offset(&buf[..len + 4]), Err(RewriteError::Unsupported));
}

#[test]
fn errors_display() {
    assert_eq!(
        RewriteError::Fragment.to_string(),
        "edit impossible on a fragment"
    );
    assert_eq!(RewriteError::TtlExpired.to_string(), "ttl expired");
}

// ---------------------------------------------------------------- property tests

fn arb_l4() -> impl Strategy<Value = L4> {
    prop_oneof![
        4 => (any::<u16>(), any::<u16>(), 0u8..=10)
            .prop_map(|(sport, dport, opt_words)| L4::Tcp { sport, dport, opt_words }),
        4 => (any::<u16>(), any::<u16>(), prop::bool::weighted(0.2))
            .prop_map(|(sport, dport, no_checksum)| L4::Udp { sport, dport, no_checksum }),
        1 => (any::<u16>(), any::<u16>()).prop_map(|(sport, dport)| L4::UdpLite { sport, dport }),
        1 => (any::<u16>(), any::<u16>()).prop_map(|(sport, dport)| L4::Dccp { sport, dport }),
        1 => Just(L4::Icmp),
    ]
}

fn arb_ext() -> impl Strategy<Value = Ext> {
    prop_oneof![
        Just(Ext::DestOpts),
        (0u8..3).prop_map(Ext::Routing),
        Just(Ext::AtomicFragment),
    ]
}

fn arb_spec() -> impl Strategy<Value = Spec> {
    (
        any::<bool>(),
        (any::<u8>(), any::<u8>(), any::<u32>()),
        (any::<[u8; 16]>(), any::<[u8; 16]>()),
        (0u8..=7, prop::bool::weighted(0.1)),
        (any::<bool>(), prop::collection::vec(arb_ext(), 0..4)),
        arb_l4(),
        prop::collection::vec(any::<u8>(), 0..1400),
    )
        .prop_map(
            |(
                v6,
                (traffic_class, ttl, ident),
                (src, dst),
                (v4_nop_words, v4_lsrr),
                (hbh, exts),
                l4,
                payload,
            )| {
                let mut v6_exts = Vec::new();
                if v6 && hbh {
                    v6_exts.push(Ext::HopByHop);
                }
                if v6 {
                    v6_exts.extend(exts);
                }
                let mut spec = Spec {
                    v6,
                    traffic_class,
                    ttl,
                    ident,
                    src,
                    dst,
                    v4_nop_words: if v6 {
                        0
                    } else {
                        v4_nop_words.min(if v4_lsrr { 8 } else { 10 })
                    },
                    v4_lsrr: v4_lsrr && !v6,
                    v6_exts,
                    l4,
                    payload,
                };
                if !v6 {
                    spec.src[4..].fill(0);
                    spec.dst[4..].fill(0);
                }
                spec
            },
        )
}

fn arb_addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        any::<[u8; 16]>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
    ]
}

fn arb_edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        1 => (0u8..70).prop_map(Edit::SetDscp),
        1 => (0u8..5).prop_map(Edit::SetEcn),
        1 => any::<u8>().prop_map(Edit::SetTtl),
        1 => Just(Edit::DecrementTtl),
        3 => arb_addr().prop_map(Edit::SetSrcAddr),
        3 => arb_addr().prop_map(Edit::SetDstAddr),
        3 => any::<u16>().prop_map(Edit::SetSrcPort),
        3 => any::<u16>().prop_map(Edit::SetDstPort),
    ]
}

/// An address edit of the packet's own family (the common, successful case).
fn same_family(spec: &Spec, edit: Edit) -> Edit {
    let fix = |addr: IpAddr| match (addr, spec.v6) {
        (IpAddr::V4(a), true) => IpAddr::V6(a.to_ipv6_mapped()),
        (IpAddr::V6(a), false) => {
            let o = a.octets();
            IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15]))
        }
        (addr, _) => addr,
    };
    match edit {
        Edit::SetSrcAddr(addr) => Edit::SetSrcAddr(fix(addr)),
        Edit::SetDstAddr(addr) => Edit::SetDstAddr(fix(addr)),
        other => other,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Random IPv4/IPv6 packets (TCP, UDP with or without a checksum, UDP-Lite, DCCP,
    /// ICMP; IPv4 options; IPv6 extension headers), random edit lists: the result equals
    /// the packet built from scratch from the edited model, or the model's error with the
    /// packet untouched.
    #[test]
    fn edits_equal_full_recomputation(
        spec in arb_spec(),
        edits in prop::collection::vec(arb_edit(), 1..6),
        keep_family in prop::bool::weighted(0.9),
    ) {
        let edits: Vec<Edit> = if keep_family {
            edits.into_iter().map(|edit| same_family(&spec, edit)).collect()
        } else {
            edits
        };
        let _ = check_against_model(&spec, &edits);
    }

    /// Random bytes, and valid packets with a few bytes flipped, never make an edit panic;
    /// a refused edit leaves the bytes untouched.
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..120),
        version in prop::sample::select(&[0x45u8, 0x46, 0x4f, 0x60, 0x61, 0x00][..]),
        edits in prop::collection::vec(arb_edit(), 1..4),
        room in 0usize..10,
    ) {
        let mut packet = bytes.clone();
        if let Some(first) = packet.first_mut() {
            *first = version;
        }
        let before = packet.clone();
        if apply_l3(&mut packet, &edits).is_err() {
            prop_assert_eq!(&packet, &before);
        }
        let mut frame = bytes;
        let len = frame.len();
        frame.resize(len + room, 0);
        let mut with_l2 = edits.clone();
        with_l2.push(Edit::PopVlan);
        let _ = apply_frame(&mut frame, len, &edits);
        let _ = apply_frame(&mut frame, len, &with_l2);
        let _ = vlan_pop(&mut frame, len);
        let _ = vlan_push(&mut frame, len, VlanTag { pcp: 1, dei: false, vid: 2 });
    }

    #[test]
    fn flipped_packets_never_panic(
        spec in arb_spec(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        edits in prop::collection::vec(arb_edit(), 1..4),
    ) {
        let mut packet = build(&spec);
        for (at, value) in flips {
            let at = at.index(packet.len().min(80));
            packet[at] = value;
        }
        let before = packet.clone();
        if apply_l3(&mut packet, &edits).is_err() {
            prop_assert_eq!(packet, before);
        }
    }
}

#[test]
fn vlan_tag_from_tci_inverts_tci() {
    for (pcp, dei, vid) in [
        (0, false, 0),
        (3, false, 100),
        (7, true, 4094),
        (5, true, 1),
    ] {
        let tag = VlanTag { pcp, dei, vid };
        let tci = tag.tci().expect("valid tag");
        assert_eq!(VlanTag::from_tci(tci), tag);
    }
    // PCP 3, VID 100 on the wire: 0x6064.
    assert_eq!(
        VlanTag::from_tci(0x6064),
        VlanTag {
            pcp: 3,
            dei: false,
            vid: 100
        }
    );
    // VID 4095 is read as it is, and refused on the way out.
    assert_eq!(VlanTag::from_tci(0x0fff).vid, 4095);
    assert_eq!(
        VlanTag::from_tci(0x0fff).tci(),
        Err(RewriteError::IllegalValue)
    );
}
