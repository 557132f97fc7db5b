//! Tests of VXLAN/GRE encap and decap: hand-written golden vectors, round trips over every
//! combination, every malformed case, and properties (no panic, decap ∘ encap = id).

extern crate std;

use std::string::ToString;
use std::vec;
use std::vec::Vec;

use proptest::prelude::*;

use super::*;

const MAC_BRAID: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const MAC_PEER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const MACS: InnerMacs = InnerMacs {
    src: MAC_BRAID,
    dst: MAC_PEER,
};
const V4_SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const V4_DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const V6_SRC: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const V6_DST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const OUTER_V4: OuterIp = OuterIp::V4 {
    src: V4_SRC,
    dst: V4_DST,
};
const OUTER_V6: OuterIp = OuterIp::V6 {
    src: V6_SRC,
    dst: V6_DST,
};

/// The inner packet of the golden vectors: IPv4 192.168.1.1 → 192.168.1.2, UDP 1234 → 5678,
/// "ping" (32 bytes; the IPv4 header checksum 0xf778 computed independently).
const INNER_V4: [u8; 32] = [
    0x45, 0x00, 0x00, 0x20, // version 4, IHL 5, TOS 0, total length 32
    0x00, 0x01, 0x00, 0x00, // id 1, no flags
    0x40, 0x11, 0xf7, 0x78, // TTL 64, UDP, checksum
    192, 168, 1, 1, // source
    192, 168, 1, 2, // destination
    0x04, 0xd2, 0x16, 0x2e, 0x00, 0x0c, 0x00,
    0x00, // UDP 1234 → 5678, length 12, no checksum
    b'p', b'i', b'n', b'g',
];

/// VXLAN over IPv4 (RFC 7348 §5 layout), inner IPv4 in a synthesized Ethernet header.
/// Outer IPv4 total length 82 = 20 + UDP 62 (8 + VXLAN 8 + Ethernet 14 + 32); header
/// checksum 0x5465 and UDP checksum 0 (not computed over IPv4 by default).
const VXLAN_V4_GOLDEN: [u8; 82] = [
    // Outer IPv4: version/IHL, TOS, total length, id 0x1234, flags 0 (DF clear), TTL 64,
    // protocol UDP, header checksum, 10.0.0.1, 10.0.0.2.
    0x45, 0x00, 0x00, 0x52, 0x12, 0x34, 0x00, 0x00, 0x40, 0x11, 0x54, 0x65, 10, 0, 0, 1, 10, 0, 0,
    2, //
    // UDP: source port 50000, destination 4789, length 62, checksum 0.
    0xc3, 0x50, 0x12, 0xb5, 0x00, 0x3e, 0x00, 0x00, //
    // VXLAN: flags I, reserved, VNI 0x123456, reserved.
    0x08, 0x00, 0x00, 0x00, 0x12, 0x34, 0x56, 0x00, //
    // Inner Ethernet: destination (peer), source (braid), EtherType IPv4.
    0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00, //
    // Inner IPv4 packet (INNER_V4).
    0x45, 0x00, 0x00, 0x20, 0x00, 0x01, 0x00, 0x00, 0x40, 0x11, 0xf7, 0x78, 192, 168, 1, 1, 192,
    168, 1, 2, 0x04, 0xd2, 0x16, 0x2e, 0x00, 0x0c, 0x00, 0x00, b'p', b'i', b'n', b'g',
];

/// VXLAN over IPv6: the same UDP payload; payload length 62, next header UDP, hop limit 64;
/// the UDP checksum (mandatory over IPv6) 0x57e3 computed independently over the RFC 8200
/// §8.1 pseudo-header.
const VXLAN_V6_GOLDEN: [u8; 102] = [
    // Outer IPv6: version 6, traffic class 0, flow label 0; payload length 62, UDP, hop 64.
    0x60, 0x00, 0x00, 0x00, 0x00, 0x3e, 0x11, 0x40, //
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // 2001:db8::1
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, // 2001:db8::2
    // UDP: 50000 → 4789, length 62, checksum.
    0xc3, 0x50, 0x12, 0xb5, 0x00, 0x3e, 0x57, 0xe3, //
    0x08, 0x00, 0x00, 0x00, 0x12, 0x34, 0x56, 0x00, // VXLAN
    0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00, // inner Ethernet
    0x45, 0x00, 0x00, 0x20, 0x00, 0x01, 0x00, 0x00, 0x40, 0x11, 0xf7, 0x78, 192, 168, 1, 1, 192,
    168, 1, 2, 0x04, 0xd2, 0x16, 0x2e, 0x00, 0x0c, 0x00, 0x00, b'p', b'i', b'n', b'g',
];

/// GRE over IPv4 (RFC 2784 + RFC 2890 layout) with checksum, key 42 and sequence 7, carrying
/// INNER_V4 as protocol type IPv4. Outer total length 68 = 20 + GRE 16 + 32, DF set, id
/// 0xabcd, protocol 47; IPv4 header checksum 0x7abb and GRE checksum 0x4df1 (over the GRE
/// header and the inner packet) computed independently.
const GRE_V4_GOLDEN: [u8; 68] = [
    0x45, 0x00, 0x00, 0x44, 0xab, 0xcd, 0x40, 0x00, 0x40, 0x2f, 0x7a, 0xbb, 10, 0, 0, 1, 10, 0, 0,
    2, //
    0xb0, 0x00, 0x08, 0x00, // C, K, S; version 0; protocol type IPv4
    0x4d, 0xf1, 0x00, 0x00, // checksum, reserved1
    0x00, 0x00, 0x00, 0x2a, // key 42
    0x00, 0x00, 0x00, 0x07, // sequence number 7
    0x45, 0x00, 0x00, 0x20, 0x00, 0x01, 0x00, 0x00, 0x40, 0x11, 0xf7, 0x78, 192, 168, 1, 1, 192,
    168, 1, 2, 0x04, 0xd2, 0x16, 0x2e, 0x00, 0x0c, 0x00, 0x00, b'p', b'i', b'n', b'g',
];

fn golden_vxlan(outer: OuterIp) -> VxlanEncap {
    let mut cfg = VxlanEncap::new(outer, 0x12_3456, InnerFormat::IpInEthernet(MACS));
    cfg.src_ports = SrcPortRange {
        min: 50000,
        max: 50000,
    };
    cfg
}

fn golden_gre() -> GreEncap {
    let mut cfg = GreEncap::new(OUTER_V4, InnerFormat::Ip);
    cfg.outer.df = true;
    cfg.key = Some(42);
    cfg.seq = true;
    cfg.checksum = true;
    cfg
}

const META: EncapMeta = EncapMeta {
    flow_hash: 0xdead_beef,
    ip_id: 0x1234,
    gre_seq: 7,
    vlan: None,
};

fn decap_default(packet: &[u8]) -> Result<Decapped, TunnelError> {
    decap(packet, &DecapConfig::default())
}

/// Encapsulates both ways (copying, and in place with `extra` spare bytes of headroom),
/// asserts they agree, and returns the outer packet.
fn encap_both(cfg: &Encap, inner: &[u8], meta: EncapMeta, extra: usize) -> Vec<u8> {
    let mut out = vec![0u8; cfg.overhead_for(&meta) + inner.len() + 3];
    let len = cfg.encap_into(inner, &mut out, meta).unwrap();
    assert_eq!(len, cfg.overhead_for(&meta) + inner.len());
    out.truncate(len);

    let start = extra + cfg.overhead_for(&meta);
    let mut buf = vec![0xeeu8; start + inner.len() + 5];
    buf[start..start + inner.len()].copy_from_slice(inner);
    let range = cfg
        .encap_in_place(&mut buf, start..start + inner.len(), meta)
        .unwrap();
    assert_eq!(range, extra..start + inner.len());
    assert_eq!(&buf[range], &out[..], "in place and copying differ");
    assert!(
        buf[..extra].iter().all(|b| *b == 0xee),
        "wrote before the headroom"
    );
    assert!(
        buf[start + inner.len()..].iter().all(|b| *b == 0xee),
        "wrote after the inner"
    );
    out
}

/// An IPv4 packet of `total` bytes (≥ 20) with a consistent length field.
fn ipv4_packet(total: usize, fill: u8) -> Vec<u8> {
    let mut p = vec![fill; total];
    p[..20].copy_from_slice(&[
        0x45, 0, 0, 0, 0, 9, 0, 0, 64, 17, 0, 0, 192, 168, 0, 1, 192, 168, 0, 2,
    ]);
    p[2..4].copy_from_slice(&u16::try_from(total).unwrap().to_be_bytes());
    let sum = checksum(&p[..20]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p
}

/// An IPv6 packet of `total` bytes (≥ 40) with a consistent payload length.
fn ipv6_packet(total: usize, fill: u8) -> Vec<u8> {
    let mut p = vec![fill; total];
    p[..8].copy_from_slice(&[0x60, 0, 0, 0, 0, 0, 59, 64]);
    p[4..6].copy_from_slice(&u16::try_from(total - 40).unwrap().to_be_bytes());
    p[8..40].fill(0x20);
    p
}

fn ethernet_frame(l3: &[u8]) -> Vec<u8> {
    let ethertype = if l3[0] >> 4 == 4 {
        ETHERTYPE_IPV4
    } else {
        ETHERTYPE_IPV6
    };
    let mut f = Vec::from(MAC_PEER);
    f.extend_from_slice(&MAC_BRAID);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(l3);
    f
}

/// Recomputes an outer IPv4 header's checksum after a test edited it.
fn refill_v4_checksum(packet: &mut [u8]) {
    let header_len = usize::from(packet[0] & 0x0f) * 4;
    packet[10..12].fill(0);
    let sum = checksum(&packet[..header_len]);
    packet[10..12].copy_from_slice(&sum.to_be_bytes());
}

/// Recomputes an outer UDP checksum (IPv4 or IPv6, no extension headers).
fn refill_udp_checksum(packet: &mut [u8]) {
    let ip_len = if packet[0] >> 4 == 4 { 20 } else { 40 };
    packet[ip_len + 6..ip_len + 8].fill(0);
    let udp_len = packet.len() - ip_len;
    let sum = pseudo_header_sum(&packet[..ip_len], 17, udp_len)
        .add_bytes(&packet[ip_len..])
        .checksum();
    let sum = if sum == 0 { 0xffff } else { sum };
    packet[ip_len + 6..ip_len + 8].copy_from_slice(&sum.to_be_bytes());
}

fn invalid_at(layer: Layer, error: ParseError) -> Result<Decapped, TunnelError> {
    Err(TunnelError::Invalid { layer, error })
}

// ---------------------------------------------------------------------------------------
// Golden vectors

#[test]
fn vxlan_v4_golden_encap_and_decap() {
    let cfg = Encap::Vxlan(golden_vxlan(OUTER_V4));
    assert_eq!(cfg.overhead(), 20 + 8 + 8 + 14);
    let packet = encap_both(&cfg, &INNER_V4, META, 0);
    assert_eq!(packet, VXLAN_V4_GOLDEN);

    let d = decap_default(&VXLAN_V4_GOLDEN).unwrap();
    assert_eq!(d.outer_src, IpAddr::V4(V4_SRC));
    assert_eq!(d.outer_dst, IpAddr::V4(V4_DST));
    assert_eq!(
        d.tunnel,
        Tunnel::Vxlan {
            vni: 0x12_3456,
            src_port: 50000
        }
    );
    assert_eq!(d.inner_kind, InnerKind::Ethernet);
    assert_eq!(d.inner, 36..82);
    assert_eq!(
        &VXLAN_V4_GOLDEN[d.inner.start..d.inner.start + 6],
        &MAC_PEER
    );
    let (version, l3) = d.inner_l3(&VXLAN_V4_GOLDEN).unwrap();
    assert_eq!(version, IpVersion::V4);
    assert_eq!(&VXLAN_V4_GOLDEN[l3], &INNER_V4);
}

#[test]
fn vxlan_v6_golden_encap_and_decap() {
    let cfg = Encap::Vxlan(golden_vxlan(OUTER_V6));
    assert_eq!(cfg.overhead(), 40 + 8 + 8 + 14);
    let packet = encap_both(&cfg, &INNER_V4, META, 0);
    assert_eq!(packet, VXLAN_V6_GOLDEN);

    let d = decap_default(&VXLAN_V6_GOLDEN).unwrap();
    assert_eq!(d.outer_src, IpAddr::V6(V6_SRC));
    assert_eq!(d.outer_dst, IpAddr::V6(V6_DST));
    assert_eq!(
        d.tunnel,
        Tunnel::Vxlan {
            vni: 0x12_3456,
            src_port: 50000
        }
    );
    let (version, l3) = d.inner_l3(&VXLAN_V6_GOLDEN).unwrap();
    assert_eq!(version, IpVersion::V4);
    assert_eq!(&VXLAN_V6_GOLDEN[l3], &INNER_V4);
}

#[test]
fn gre_v4_key_seq_csum_golden_encap_and_decap() {
    let cfg = Encap::Gre(golden_gre());
    assert_eq!(cfg.overhead(), 20 + 16);
    let meta = EncapMeta {
        ip_id: 0xabcd,
        ..META
    };
    let packet = encap_both(&cfg, &INNER_V4, meta, 0);
    assert_eq!(packet, GRE_V4_GOLDEN);

    let d = decap_default(&GRE_V4_GOLDEN).unwrap();
    assert_eq!(
        d.tunnel,
        Tunnel::Gre {
            key: Some(42),
            seq: Some(7)
        }
    );
    assert_eq!(d.inner_kind, InnerKind::Ipv4);
    assert_eq!(d.inner, 36..68);
    assert_eq!(&GRE_V4_GOLDEN[d.inner.clone()], &INNER_V4);
    let (version, l3) = d.inner_l3(&GRE_V4_GOLDEN).unwrap();
    assert_eq!((version, l3), (IpVersion::V4, d.inner.clone()));
}

#[test]
fn gre_bare_over_ipv6_bytes() {
    // The smallest GRE: 4-byte header, protocol type IPv6, inner IPv6 (next header 59).
    let inner = ipv6_packet(40, 0);
    let cfg = Encap::Gre(GreEncap::new(OUTER_V6, InnerFormat::Ip));
    let packet = encap_both(&cfg, &inner, META, 0);
    assert_eq!(packet.len(), 40 + 4 + 40);
    assert_eq!(&packet[..8], &[0x60, 0, 0, 0, 0x00, 0x2c, 47, 64]);
    assert_eq!(&packet[40..44], &[0x00, 0x00, 0x86, 0xdd]);
    assert_eq!(&packet[44..], &inner[..]);
}

#[test]
fn outer_fields_follow_the_config() {
    let mut vx = golden_vxlan(OUTER_V4);
    vx.outer.ttl = 7;
    vx.outer.tos = 0xb8; // DSCP EF
    vx.outer.df = true;
    vx.dst_port = 8472;
    let packet = encap_both(&Encap::Vxlan(vx), &INNER_V4, META, 0);
    assert_eq!(packet[1], 0xb8);
    assert_eq!(&packet[6..8], &[0x40, 0x00]);
    assert_eq!(packet[8], 7);
    assert_eq!(&packet[22..24], &8472u16.to_be_bytes());
    assert_eq!(checksum(&packet[..20]), 0, "IPv4 header checksum");
    // The non-default port decaps with a matching config only.
    assert_eq!(decap_default(&packet), Err(TunnelError::NotTunnel));
    let cfg = DecapConfig {
        vxlan_port: 8472,
        ..DecapConfig::default()
    };
    assert!(decap(&packet, &cfg).is_ok());

    let mut v6 = golden_vxlan(OUTER_V6);
    v6.outer.tos = 0xb8;
    v6.outer.flow_label = 0xabcde;
    v6.outer.ttl = 9;
    let packet = encap_both(&Encap::Vxlan(v6), &INNER_V4, META, 0);
    assert_eq!(&packet[..4], &[0x6b, 0x8a, 0xbc, 0xde]);
    assert_eq!(packet[7], 9);
}

#[test]
fn vxlan_udp_checksum_over_ipv4_when_asked() {
    let mut cfg = golden_vxlan(OUTER_V4);
    cfg.udp_checksum_v4 = true;
    let packet = encap_both(&Encap::Vxlan(cfg), &INNER_V4, META, 0);
    let stored = u16::from_be_bytes([packet[26], packet[27]]);
    assert_ne!(stored, 0);
    let mut zeroed = packet.clone();
    refill_udp_checksum(&mut zeroed);
    assert_eq!(
        zeroed, packet,
        "the stored checksum is the one recomputed independently"
    );
    assert!(decap_default(&packet).is_ok());
}

#[test]
fn vxlan_source_port_follows_the_flow_hash() {
    let cfg = VxlanEncap::new(OUTER_V4, 1, InnerFormat::IpInEthernet(MACS));
    let port = |hash| {
        let packet = encap_both(
            &Encap::Vxlan(cfg),
            &INNER_V4,
            EncapMeta {
                flow_hash: hash,
                ..META
            },
            0,
        );
        u16::from_be_bytes([packet[20], packet[21]])
    };
    assert_eq!(port(1), SrcPortRange::RFC7348.port(1));
    assert_eq!(port(0x8000_0000), SrcPortRange::RFC7348.port(0x8000_0000));
    assert_ne!(port(0), port(0x8000_0000));
    assert!(port(u32::MAX) >= 49152);
}

// ---------------------------------------------------------------------------------------
// Round trips over every combination

/// Every inner packet: IPv4, IPv6, and Ethernet frames around each.
fn inners() -> [(Vec<u8>, IpVersion); 2] {
    [
        (ipv4_packet(1400, 0x5a), IpVersion::V4),
        (ipv6_packet(1400, 0xa5), IpVersion::V6),
    ]
}

#[test]
fn roundtrip_every_combination() {
    let mut cases = 0;
    for outer in [OUTER_V4, OUTER_V6] {
        for (l3, version) in inners() {
            let frame = ethernet_frame(&l3);
            // VXLAN: an Ethernet frame as is, or the L3 packet with synthesized MACs.
            for (format, inner) in [
                (InnerFormat::Ethernet, &frame),
                (InnerFormat::IpInEthernet(MACS), &l3),
            ] {
                let cfg = Encap::Vxlan(VxlanEncap::new(outer, 0xabc, format));
                let packet = encap_both(&cfg, inner, META, 3);
                let d = decap_default(&packet).unwrap();
                assert_eq!(d.inner_kind, InnerKind::Ethernet);
                assert_eq!(&packet[d.inner.clone()], &frame[..]);
                let (v, range) = d.inner_l3(&packet).unwrap();
                assert_eq!((v, &packet[range]), (version, &l3[..]));
                assert!(matches!(d.tunnel, Tunnel::Vxlan { vni: 0xabc, .. }));
                cases += 1;
            }
            // GRE: every option set × every inner format.
            for options in 0..8u8 {
                for (format, inner, kind) in [
                    (
                        InnerFormat::Ip,
                        &l3,
                        if version == IpVersion::V4 {
                            InnerKind::Ipv4
                        } else {
                            InnerKind::Ipv6
                        },
                    ),
                    (InnerFormat::Ethernet, &frame, InnerKind::Ethernet),
                    (InnerFormat::IpInEthernet(MACS), &l3, InnerKind::Ethernet),
                ] {
                    let mut gre = GreEncap::new(outer, format);
                    gre.key = (options & 1 != 0).then_some(0xfeed_f00d);
                    gre.seq = options & 2 != 0;
                    gre.checksum = options & 4 != 0;
                    let cfg = Encap::Gre(gre);
                    assert_eq!(
                        cfg.overhead(),
                        outer.header_len()
                            + 4
                            + 4 * options.count_ones() as usize
                            + format.added_len()
                    );
                    let packet = encap_both(&cfg, inner, META, 1);
                    let d = decap_default(&packet).unwrap();
                    assert_eq!(d.inner_kind, kind);
                    let expected_inner = if kind == InnerKind::Ethernet {
                        &frame
                    } else {
                        &l3
                    };
                    assert_eq!(&packet[d.inner.clone()], &expected_inner[..]);
                    assert_eq!(
                        d.tunnel,
                        Tunnel::Gre {
                            key: gre.key,
                            seq: gre.seq.then_some(META.gre_seq)
                        }
                    );
                    let (v, range) = d.inner_l3(&packet).unwrap();
                    assert_eq!((v, &packet[range]), (version, &l3[..]));
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 2 * 2 * (2 + 8 * 3));
}

#[test]
fn inner_ethernet_padding_is_trimmed_for_tun() {
    // A 28-byte IPv4 packet in a frame padded to the 60-byte Ethernet minimum.
    let l3 = ipv4_packet(28, 0x11);
    let mut frame = ethernet_frame(&l3);
    frame.resize(60, 0);
    let cfg = Encap::Vxlan(VxlanEncap::new(OUTER_V4, 5, InnerFormat::Ethernet));
    let packet = encap_both(&cfg, &frame, META, 0);
    let d = decap_default(&packet).unwrap();
    assert_eq!(d.inner.len(), 60);
    let (_, range) = d.inner_l3(&packet).unwrap();
    assert_eq!(&packet[range], &l3[..]);
}

#[test]
fn trailing_link_padding_after_the_outer_packet_is_ignored() {
    let mut packet = VXLAN_V4_GOLDEN.to_vec();
    packet.extend_from_slice(&[0; 6]);
    let d = decap_default(&packet).unwrap();
    assert_eq!(d.inner, 36..82);
}

// ---------------------------------------------------------------------------------------
// Decap: malformed and foreign packets

#[test]
fn every_truncation_of_the_outer_packet_is_an_error() {
    let gre_v6 = encap_both(&Encap::Gre(golden_gre_v6()), &INNER_V4, META, 0);
    for packet in [
        &VXLAN_V4_GOLDEN[..],
        &VXLAN_V6_GOLDEN[..],
        &GRE_V4_GOLDEN[..],
        &gre_v6[..],
    ] {
        for len in 0..packet.len() {
            assert_eq!(
                decap_default(&packet[..len]),
                invalid_at(Layer::OuterIp, ParseError::Truncated),
                "prefix of {len} bytes"
            );
        }
    }
}

fn golden_gre_v6() -> GreEncap {
    let mut cfg = golden_gre();
    cfg.outer.ip = OUTER_V6;
    cfg
}

/// Cuts the UDP payload of a VXLAN/IPv4 packet to `udp_len` bytes with every length field
/// and checksum consistent, so the error comes from the inner layers.
#[test]
fn consistent_truncation_reports_the_layer() {
    for udp_len in 0..8 + 8 + 14 {
        let mut packet = VXLAN_V4_GOLDEN[..20 + udp_len].to_vec();
        packet[2..4].copy_from_slice(&u16::try_from(20 + udp_len).unwrap().to_be_bytes());
        refill_v4_checksum(&mut packet);
        if udp_len >= 6 {
            packet[24..26].copy_from_slice(&u16::try_from(udp_len).unwrap().to_be_bytes());
        }
        let expected = match udp_len {
            0..8 => invalid_at(Layer::Udp, ParseError::Truncated),
            8..16 => invalid_at(Layer::Vxlan, ParseError::Truncated),
            _ => invalid_at(Layer::Inner, ParseError::Truncated),
        };
        assert_eq!(decap_default(&packet), expected, "udp length {udp_len}");
    }
    // The same over IPv6 (checksums recomputed).
    for udp_len in 8..8 + 8 + 14 {
        let mut packet = VXLAN_V6_GOLDEN[..40 + udp_len].to_vec();
        packet[4..6].copy_from_slice(&u16::try_from(udp_len).unwrap().to_be_bytes());
        packet[44..46].copy_from_slice(&u16::try_from(udp_len).unwrap().to_be_bytes());
        refill_udp_checksum(&mut packet);
        let expected = match udp_len {
            8..16 => invalid_at(Layer::Vxlan, ParseError::Truncated),
            _ => invalid_at(Layer::Inner, ParseError::Truncated),
        };
        assert_eq!(decap_default(&packet), expected, "udp length {udp_len}");
    }
    // GRE with key + seq (no checksum to refill): header cut, then an empty inner packet.
    let mut gre = golden_gre();
    gre.checksum = false;
    let full = encap_both(&Encap::Gre(gre), &INNER_V4, META, 0);
    for gre_len in 0..=12 {
        let mut packet = full[..20 + gre_len].to_vec();
        packet[2..4].copy_from_slice(&u16::try_from(20 + gre_len).unwrap().to_be_bytes());
        refill_v4_checksum(&mut packet);
        let expected = if gre_len < 12 {
            invalid_at(Layer::Gre, ParseError::Truncated)
        } else {
            invalid_at(Layer::Inner, ParseError::Truncated)
        };
        assert_eq!(decap_default(&packet), expected, "gre length {gre_len}");
    }
}

#[test]
fn outer_ipv4_header_errors() {
    let good = VXLAN_V4_GOLDEN;
    let edit = |f: &dyn Fn(&mut [u8]), refill: bool| {
        let mut p = good.to_vec();
        f(&mut p);
        if refill {
            refill_v4_checksum(&mut p);
        }
        decap_default(&p)
    };
    // Version.
    for version in [0u8, 5, 7, 15] {
        assert_eq!(
            edit(&|p| p[0] = (version << 4) | 5, true),
            invalid_at(
                Layer::OuterIp,
                ParseError::IllegalValue { field: "version" }
            )
        );
    }
    // IHL below 5, IHL past the buffer, total length below the header or past the buffer.
    assert_eq!(
        edit(&|p| p[0] = 0x44, false),
        invalid_at(Layer::OuterIp, ParseError::BadLength)
    );
    assert_eq!(
        decap_default(&{
            let mut p = good[..24].to_vec();
            p[0] = 0x47;
            p
        }),
        invalid_at(Layer::OuterIp, ParseError::Truncated)
    );
    assert_eq!(
        edit(&|p| p[2..4].copy_from_slice(&19u16.to_be_bytes()), true),
        invalid_at(Layer::OuterIp, ParseError::BadLength)
    );
    assert_eq!(
        edit(&|p| p[2..4].copy_from_slice(&83u16.to_be_bytes()), true),
        invalid_at(Layer::OuterIp, ParseError::Truncated)
    );
    // Header checksum, on any header byte.
    for byte in [1usize, 4, 8, 11, 12, 19] {
        assert_eq!(
            edit(&|p| p[byte] ^= 0x10, false),
            invalid_at(Layer::OuterIp, ParseError::BadChecksum),
            "byte {byte}"
        );
    }
    // Fragments: MF, an offset, both; DF alone is not a fragment.
    for frag in [0x2000u16, 0x0001, 0x2010, 0x1fff] {
        assert_eq!(
            edit(&|p| p[6..8].copy_from_slice(&frag.to_be_bytes()), true),
            Err(TunnelError::Fragment),
            "flags/offset {frag:#06x}"
        );
    }
    assert!(edit(&|p| p[6] = 0x40, true).is_ok());
    // Other protocols, fragmented or not, are not tunnel packets.
    assert_eq!(edit(&|p| p[9] = 6, true), Err(TunnelError::NotTunnel));
    assert_eq!(
        edit(
            &|p| {
                p[9] = 1;
                p[6] = 0x20;
            },
            true
        ),
        Err(TunnelError::NotTunnel)
    );
    // A UDP packet to another port is not VXLAN.
    assert_eq!(
        edit(&|p| p[22..24].copy_from_slice(&53u16.to_be_bytes()), false),
        Err(TunnelError::NotTunnel)
    );
}

#[test]
fn outer_ipv4_options_are_skipped() {
    // Insert a 4-byte option (NOP × 4) into the golden packet: IHL 6.
    let mut p = VXLAN_V4_GOLDEN[..20].to_vec();
    p.extend_from_slice(&[1, 1, 1, 1]);
    p.extend_from_slice(&VXLAN_V4_GOLDEN[20..]);
    p[0] = 0x46;
    p[2..4].copy_from_slice(&86u16.to_be_bytes());
    refill_v4_checksum(&mut p);
    let d = decap_default(&p).unwrap();
    assert_eq!(d.inner, 40..86);
    assert_eq!(
        d.tunnel,
        Tunnel::Vxlan {
            vni: 0x12_3456,
            src_port: 50000
        }
    );
}

#[test]
fn udp_errors() {
    // Length field above and below the IP payload, and below the header.
    for udp_len in [63u16, 61, 7, 0] {
        let mut p = VXLAN_V4_GOLDEN.to_vec();
        p[24..26].copy_from_slice(&udp_len.to_be_bytes());
        assert_eq!(
            decap_default(&p),
            invalid_at(Layer::Udp, ParseError::BadLength),
            "udp length {udp_len}"
        );
    }
    // A bad non-zero checksum over IPv4 and over IPv6; the capability skips the check.
    let mut cfg = golden_vxlan(OUTER_V4);
    cfg.udp_checksum_v4 = true;
    let v4 = encap_both(&Encap::Vxlan(cfg), &INNER_V4, META, 0);
    for good in [v4, VXLAN_V6_GOLDEN.to_vec()] {
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x01;
        assert_eq!(
            decap_default(&bad),
            invalid_at(Layer::Udp, ParseError::BadChecksum)
        );
        let unverified = DecapConfig {
            verify_checksums: false,
            ..DecapConfig::default()
        };
        assert!(decap(&bad, &unverified).is_ok());
    }
    // Zero checksum: fine over IPv4 (the golden vector), refused over IPv6 even unverified.
    let mut zero = VXLAN_V6_GOLDEN;
    zero[46..48].fill(0);
    for verify_checksums in [true, false] {
        let cfg = DecapConfig {
            verify_checksums,
            ..DecapConfig::default()
        };
        assert_eq!(
            decap(&zero, &cfg),
            invalid_at(Layer::Udp, ParseError::BadChecksum)
        );
    }
}

#[test]
fn vxlan_flag_errors() {
    for flags in [0x00u8, 0x0c, 0x88, 0xff, 0x09] {
        let mut p = VXLAN_V4_GOLDEN;
        p[28] = flags;
        assert_eq!(
            decap_default(&p),
            invalid_at(Layer::Vxlan, ParseError::IllegalValue { field: "flags" }),
            "flags {flags:#04x}"
        );
    }
    // Reserved bytes are ignored on receipt (RFC 7348 §5).
    let mut p = VXLAN_V4_GOLDEN;
    p[29..32].fill(0xff);
    p[35] = 0xff;
    assert!(decap_default(&p).is_ok());
}

#[test]
fn gre_errors() {
    let edit = |f: &dyn Fn(&mut [u8])| {
        let mut p = GRE_V4_GOLDEN.to_vec();
        f(&mut p);
        // Refill the GRE checksum so only the edited field is wrong.
        let mut view = gre::Packet::new_unchecked(&mut p[20..]);
        view.fill_checksum();
        decap_default(&p)
    };
    assert_eq!(
        edit(&|p| p[21] |= 0x01),
        invalid_at(Layer::Gre, ParseError::Unsupported),
        "version 1 (PPTP)"
    );
    for bits in [0x40u8, 0x08, 0x04] {
        assert_eq!(
            edit(&|p| p[20] |= bits),
            invalid_at(Layer::Gre, ParseError::IllegalValue { field: "flags" }),
            "reserved0 bits {bits:#04x}"
        );
    }
    // Bits 6–12 are ignored.
    assert!(
        edit(&|p| {
            p[20] |= 0x03;
            p[21] |= 0xf8;
        })
        .is_ok()
    );
    assert_eq!(
        edit(&|p| p[22..24].copy_from_slice(&0x8847u16.to_be_bytes())),
        invalid_at(Layer::Gre, ParseError::Unsupported),
        "MPLS"
    );
    // The inner version must match the protocol type.
    assert_eq!(
        edit(&|p| p[22..24].copy_from_slice(&gre::PROTOCOL_IPV6.to_be_bytes())),
        invalid_at(Layer::Inner, ParseError::IllegalValue { field: "version" })
    );
    assert_eq!(
        edit(&|p| p[36] = 0x65),
        invalid_at(Layer::Inner, ParseError::IllegalValue { field: "version" })
    );
    // A TEB payload shorter than an Ethernet header.
    assert_eq!(
        edit(&|p| p[22..24].copy_from_slice(&gre::PROTOCOL_TEB.to_be_bytes()))
            .map(|d| d.inner_kind),
        Ok(InnerKind::Ethernet)
    );
    let mut short = GRE_V4_GOLDEN[..36 + 10].to_vec();
    short[2..4].copy_from_slice(&46u16.to_be_bytes());
    short[22..24].copy_from_slice(&gre::PROTOCOL_TEB.to_be_bytes());
    refill_v4_checksum(&mut short);
    gre::Packet::new_unchecked(&mut short[20..]).fill_checksum();
    assert_eq!(
        decap_default(&short),
        invalid_at(Layer::Inner, ParseError::Truncated)
    );
    // A corrupted byte anywhere in the GRE header or payload fails the checksum...
    for byte in [24usize, 29, 35, 36, 67] {
        let mut p = GRE_V4_GOLDEN;
        p[byte] ^= 0x40;
        assert_eq!(
            decap_default(&p),
            invalid_at(Layer::Gre, ParseError::BadChecksum),
            "byte {byte}"
        );
    }
    // ...unless the caller has verified it already.
    let mut p = GRE_V4_GOLDEN;
    p[67] ^= 0x40;
    let unverified = DecapConfig {
        verify_checksums: false,
        ..DecapConfig::default()
    };
    assert!(decap(&p, &unverified).is_ok());
}

/// Rebuilds a VXLAN/IPv6 packet with extension headers between the IPv6 header and UDP.
fn v6_with_ext(exts: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let udp = &VXLAN_V6_GOLDEN[40..];
    let mut p = VXLAN_V6_GOLDEN[..40].to_vec();
    let mut body = Vec::new();
    for (i, (kind, ext)) in exts.iter().enumerate() {
        let next = exts.get(i + 1).map_or(17, |(k, _)| *k);
        let mut ext = ext.clone();
        ext[0] = next;
        body.extend_from_slice(&ext);
        if i == 0 {
            p[6] = *kind;
        }
    }
    body.extend_from_slice(udp);
    p[4..6].copy_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    p.extend_from_slice(&body);
    p
}

#[test]
fn outer_ipv6_extension_headers() {
    let opts = |len_units: u8| {
        let mut e = vec![0u8; (usize::from(len_units) + 1) * 8];
        e[1] = len_units;
        e[2] = 1; // PadN
        e[3] = u8::try_from(e.len() - 4).unwrap();
        e
    };
    let routing = |segments_left: u8| vec![0, 0, 4, segments_left, 0, 0, 0, 0];
    let fragment = |offset_m: u16| {
        let mut e = vec![0, 0, 0, 0, 0, 0, 0, 9];
        e[2..4].copy_from_slice(&offset_m.to_be_bytes());
        e
    };
    // Walked: hop-by-hop first, destination options, routing done, atomic fragment.
    for exts in [
        vec![(0u8, opts(0))],
        vec![(0, opts(1)), (60, opts(0))],
        vec![(60, opts(2)), (43, routing(0)), (44, fragment(0))],
    ] {
        let p = v6_with_ext(&exts);
        let d = decap_default(&p).unwrap();
        let ext_len: usize = exts.iter().map(|(_, e)| e.len()).sum();
        assert_eq!(d.inner.start, 40 + ext_len + 16);
        assert_eq!(&p[d.inner.clone()], &VXLAN_V6_GOLDEN[56..]);
    }
    assert_eq!(
        decap_default(&v6_with_ext(&[(43, routing(1))])),
        invalid_at(Layer::OuterIp, ParseError::Unsupported)
    );
    for offset_m in [0x0001u16, 0x0008, 0xfff9] {
        assert_eq!(
            decap_default(&v6_with_ext(&[(44, fragment(offset_m))])),
            Err(TunnelError::Fragment)
        );
    }
    assert_eq!(
        decap_default(&v6_with_ext(&[(60, opts(0)), (0, opts(0))])),
        invalid_at(
            Layer::OuterIp,
            ParseError::IllegalValue {
                field: "next_header"
            }
        )
    );
    let too_many: Vec<_> = (0..=MAX_IPV6_EXT_HEADERS).map(|_| (60, opts(0))).collect();
    assert_eq!(
        decap_default(&v6_with_ext(&too_many)),
        invalid_at(Layer::OuterIp, ParseError::Unsupported)
    );
    let at_most: Vec<_> = (0..MAX_IPV6_EXT_HEADERS).map(|_| (60, opts(0))).collect();
    assert!(decap_default(&v6_with_ext(&at_most)).is_ok());
    // An extension header longer than the payload, or cut before its 8 bytes.
    let mut p = v6_with_ext(&[(60, opts(0))]);
    p[41] = 200;
    assert_eq!(
        decap_default(&p),
        invalid_at(Layer::OuterIp, ParseError::BadLength)
    );
    let mut p = VXLAN_V6_GOLDEN[..40].to_vec();
    p.extend_from_slice(&[17, 0, 1, 2]);
    p[4..6].copy_from_slice(&4u16.to_be_bytes());
    p[6] = 60;
    assert_eq!(
        decap_default(&p),
        invalid_at(Layer::OuterIp, ParseError::BadLength)
    );
    // A non-tunnel next header (ICMPv6), and a fragment of one.
    let mut p = VXLAN_V6_GOLDEN;
    p[6] = 58;
    assert_eq!(decap_default(&p), Err(TunnelError::NotTunnel));
    let mut frag = fragment(0x0001);
    frag[0] = 58;
    let mut p = VXLAN_V6_GOLDEN[..40].to_vec();
    p[6] = 44;
    p[4..6].copy_from_slice(&8u16.to_be_bytes());
    p.extend_from_slice(&frag);
    assert_eq!(decap_default(&p), Err(TunnelError::NotTunnel));
}

#[test]
fn outer_ipv6_payload_length_errors() {
    let mut p = VXLAN_V6_GOLDEN;
    p[4..6].copy_from_slice(&63u16.to_be_bytes());
    assert_eq!(
        decap_default(&p),
        invalid_at(Layer::OuterIp, ParseError::Truncated)
    );
    // A payload length shorter than the UDP datagram: the UDP length no longer matches.
    let mut p = VXLAN_V6_GOLDEN;
    p[4..6].copy_from_slice(&61u16.to_be_bytes());
    assert_eq!(
        decap_default(&p),
        invalid_at(Layer::Udp, ParseError::BadLength)
    );
}

#[test]
fn inner_l3_errors() {
    let decapped = |frame: &[u8]| {
        let cfg = Encap::Vxlan(VxlanEncap::new(OUTER_V4, 1, InnerFormat::Ethernet));
        let p = encap_both(&cfg, frame, META, 0);
        let d = decap_default(&p).unwrap();
        d.inner_l3(&p)
    };
    let mut frame = ethernet_frame(&INNER_V4);
    frame[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
    assert_eq!(
        decapped(&frame),
        Err(invalid(Layer::Inner, ParseError::Unsupported)),
        "VLAN-tagged"
    );
    let mut frame = ethernet_frame(&INNER_V4);
    frame[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    assert_eq!(
        decapped(&frame),
        Err(invalid(Layer::Inner, ParseError::Truncated)),
        "IPv6 EtherType, 32-byte payload"
    );
    let mut frame = ethernet_frame(&ipv6_packet(48, 0));
    frame[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    assert_eq!(
        decapped(&frame),
        Err(invalid(
            Layer::Inner,
            ParseError::IllegalValue { field: "version" }
        ))
    );
    let mut frame = ethernet_frame(&INNER_V4);
    frame[16..18].copy_from_slice(&33u16.to_be_bytes());
    assert_eq!(
        decapped(&frame),
        Err(invalid(Layer::Inner, ParseError::BadLength)),
        "IPv4 length past the frame"
    );
    frame[16..18].copy_from_slice(&19u16.to_be_bytes());
    assert_eq!(
        decapped(&frame),
        Err(invalid(Layer::Inner, ParseError::BadLength)),
        "IPv4 length below the header"
    );
    let mut frame = ethernet_frame(&ipv6_packet(48, 0));
    frame[18..20].copy_from_slice(&9u16.to_be_bytes());
    assert_eq!(
        decapped(&frame),
        Err(invalid(Layer::Inner, ParseError::BadLength)),
        "IPv6 payload length past the frame"
    );
    // Asked about a buffer that is not the decapsulated one.
    let d = decap_default(&VXLAN_V4_GOLDEN).unwrap();
    assert_eq!(
        d.inner_l3(&VXLAN_V4_GOLDEN[..50]),
        Err(invalid(Layer::Inner, ParseError::Truncated))
    );
}

// ---------------------------------------------------------------------------------------
// Encap errors and config validation

#[test]
fn encap_errors() {
    let vx = Encap::Vxlan(golden_vxlan(OUTER_V4));
    let overhead = vx.overhead();
    let mut buf = vec![0u8; 200];
    // Headroom short by one, range past the buffer, inverted range.
    assert_eq!(
        vx.encap_in_place(&mut buf, overhead - 1..overhead + 31, META),
        Err(TunnelError::NoRoom)
    );
    assert_eq!(
        vx.encap_in_place(&mut buf, overhead..201, META),
        Err(TunnelError::NoRoom)
    );
    #[allow(clippy::reversed_empty_ranges)]
    let inverted = overhead + 10..overhead;
    assert_eq!(
        vx.encap_in_place(&mut buf, inverted, META),
        Err(TunnelError::NoRoom)
    );
    // Output short by one.
    let mut out = vec![0u8; overhead + INNER_V4.len() - 1];
    assert_eq!(
        vx.encap_into(&INNER_V4, &mut out, META),
        Err(TunnelError::NoRoom)
    );
    // Inner packets that do not match the format.
    let mut out = vec![0u8; 2000];
    assert_eq!(
        vx.encap_into(&[], &mut out, META),
        Err(invalid(Layer::Inner, ParseError::Truncated))
    );
    assert_eq!(
        vx.encap_into(&[0x50; 30], &mut out, META),
        Err(invalid(
            Layer::Inner,
            ParseError::IllegalValue { field: "version" }
        ))
    );
    let eth = Encap::Vxlan(VxlanEncap::new(OUTER_V4, 1, InnerFormat::Ethernet));
    assert_eq!(
        eth.encap_into(&[0; 13], &mut out, META),
        Err(invalid(Layer::Inner, ParseError::Truncated))
    );
    assert!(eth.encap_into(&[0; 14], &mut out, META).is_ok());
    let gre_ip = Encap::Gre(GreEncap::new(OUTER_V6, InnerFormat::Ip));
    assert_eq!(
        gre_ip.encap_into(&[0x20; 40], &mut out, META),
        Err(invalid(
            Layer::Inner,
            ParseError::IllegalValue { field: "version" }
        ))
    );
    let gre_eth = Encap::Gre(GreEncap::new(OUTER_V6, InnerFormat::Ethernet));
    assert_eq!(
        gre_eth.encap_into(&[0; 13], &mut out, META),
        Err(invalid(Layer::Inner, ParseError::Truncated))
    );
}

#[test]
fn encap_refuses_lengths_past_16_bits() {
    let mut buf = vec![0u8; 70_000];
    let vx4 = Encap::Vxlan(VxlanEncap::new(OUTER_V4, 1, InnerFormat::Ethernet));
    let vx6 = Encap::Vxlan(VxlanEncap::new(OUTER_V6, 1, InnerFormat::Ethernet));
    let gre4 = Encap::Gre(GreEncap::new(OUTER_V4, InnerFormat::Ethernet));
    let gre6 = Encap::Gre(GreEncap::new(OUTER_V6, InnerFormat::Ethernet));
    // The largest inner that fits: IPv4 total length 65535; IPv6/UDP length 65535.
    for (cfg, max_inner) in [
        (vx4, 65535 - 36),
        (vx6, 65535 - 16),
        (gre4, 65535 - 24),
        (gre6, 65535 - 4),
    ] {
        let start = cfg.overhead();
        assert!(
            cfg.encap_in_place(&mut buf, start..start + max_inner, META)
                .is_ok(),
            "{cfg:?} {max_inner}"
        );
        assert_eq!(
            cfg.encap_in_place(&mut buf, start..start + max_inner + 1, META),
            Err(TunnelError::TooLong),
            "{cfg:?}"
        );
    }
    // The largest IPv4 one decaps.
    let start = vx4.overhead();
    let outer = vx4
        .encap_in_place(&mut buf, start..start + 65535 - 36, META)
        .unwrap();
    assert_eq!(decap_default(&buf[outer]).unwrap().inner.len(), 65535 - 36);
}

#[test]
fn config_validation() {
    let good = VxlanEncap::new(OUTER_V4, vxlan::VNI_MAX, InnerFormat::Ethernet);
    assert_eq!(good.validate(), Ok(()));
    let bad = |f: &dyn Fn(&mut VxlanEncap)| {
        let mut cfg = good;
        f(&mut cfg);
        let mut out = [0u8; 200];
        // encap validates too, before touching the buffer.
        assert_eq!(
            cfg.encap_into(&INNER_V4, &mut out, META),
            cfg.validate().map(|()| 0)
        );
        assert!(out.iter().all(|b| *b == 0));
        cfg.validate()
    };
    let field = |field| Err(TunnelError::BadConfig { field });
    assert_eq!(bad(&|c| c.vni = vxlan::VNI_MAX + 1), field("vni"));
    assert_eq!(bad(&|c| c.inner = InnerFormat::Ip), field("inner"));
    assert_eq!(bad(&|c| c.dst_port = 0), field("dst_port"));
    assert_eq!(
        bad(&|c| c.src_ports = SrcPortRange { min: 2, max: 1 }),
        field("src_ports")
    );
    assert_eq!(bad(&|c| c.outer.ttl = 0), field("ttl"));
    assert_eq!(
        bad(&|c| c.outer.flow_label = 0x10_0000),
        field("flow_label")
    );
    let mut gre = GreEncap::new(OUTER_V6, InnerFormat::Ip);
    gre.outer.ttl = 0;
    assert_eq!(Encap::Gre(gre).validate(), field("ttl"));
    gre.outer.ttl = 1;
    assert_eq!(Encap::Gre(gre).validate(), Ok(()));
}

#[test]
fn errors_display() {
    assert_eq!(
        invalid(Layer::Gre, ParseError::BadChecksum).to_string(),
        "gre: bad checksum"
    );
    assert_eq!(TunnelError::NotTunnel.to_string(), "not a tunnel packet");
    assert_eq!(
        TunnelError::Fragment.to_string(),
        "outer packet is a fragment"
    );
    assert_eq!(
        TunnelError::NoRoom.to_string(),
        "no room for the outer headers"
    );
    assert_eq!(TunnelError::TooLong.to_string(), "outer packet too long");
    assert_eq!(
        TunnelError::BadConfig { field: "vni" }.to_string(),
        "bad tunnel config field vni"
    );
    assert_eq!(
        invalid(Layer::OuterIp, ParseError::Truncated).to_string(),
        "outer ip: truncated packet"
    );
}

// ---------------------------------------------------------------------------------------
// GRE sequence check

#[test]
fn seq_check_in_order_with_wraparound() {
    let mut check = GreSeqCheck::new(0);
    assert_eq!(check.last(), None);
    for seq in [0xffff_fffd, 0xffff_fffe, 0xffff_ffff, 0, 1, 5, 1 << 30] {
        assert_eq!(check.check(seq), SeqVerdict::InOrder, "{seq:#x}");
        assert_eq!(check.last(), Some(seq));
    }
}

#[test]
fn seq_check_drops_duplicates_and_older() {
    let mut check = GreSeqCheck::new(0);
    assert_eq!(check.check(100), SeqVerdict::InOrder);
    assert_eq!(check.check(100), SeqVerdict::OutOfOrder, "duplicate");
    assert_eq!(check.check(99), SeqVerdict::OutOfOrder, "older");
    assert_eq!(
        check.check(100 + (1 << 31)),
        SeqVerdict::OutOfOrder,
        "2^31 ahead"
    );
    assert_eq!(
        check.check(100u32.wrapping_sub(1 << 31)),
        SeqVerdict::OutOfOrder
    );
    assert_eq!(check.last(), Some(100), "a drop does not move the base");
    assert!(
        check.check(100 + (1 << 31) - 1).is_accepted(),
        "2^31 − 1 ahead"
    );
    // Across the wrap: 5 is after 0xffff_fff0, 0xffff_fff0 is before 5.
    let mut check = GreSeqCheck::new(0);
    check.check(0xffff_fff0);
    assert_eq!(check.check(5), SeqVerdict::InOrder);
    assert_eq!(check.check(0xffff_fff0), SeqVerdict::OutOfOrder);
    // Without resync, a restarted peer is dropped until it passes the old value.
    for _ in 0..1000 {
        assert_eq!(check.check(0), SeqVerdict::OutOfOrder);
    }
    check.reset();
    assert_eq!(check.check(0), SeqVerdict::InOrder);
}

#[test]
fn seq_check_resyncs_after_a_run_of_drops() {
    let mut check = GreSeqCheck::new(3);
    check.check(1_000_000);
    for seq in 0..3 {
        assert_eq!(check.check(seq), SeqVerdict::OutOfOrder);
    }
    assert_eq!(check.check(3), SeqVerdict::Resync);
    assert!(SeqVerdict::Resync.is_accepted());
    assert_eq!(check.check(4), SeqVerdict::InOrder);
    // An in-order packet ends the run: two drops, one good, two drops do not resync.
    check.check(2);
    check.check(2);
    assert_eq!(check.check(5), SeqVerdict::InOrder);
    check.check(1);
    check.check(1);
    assert_eq!(check.check(1), SeqVerdict::OutOfOrder);
}

// ---------------------------------------------------------------------------------------
// Properties

fn arb_outer() -> impl Strategy<Value = OuterConfig> {
    let ip = prop_oneof![
        (any::<[u8; 4]>(), any::<[u8; 4]>()).prop_map(|(s, d)| OuterIp::V4 {
            src: Ipv4Addr::from(s),
            dst: Ipv4Addr::from(d)
        }),
        (any::<[u8; 16]>(), any::<[u8; 16]>()).prop_map(|(s, d)| OuterIp::V6 {
            src: Ipv6Addr::from(s),
            dst: Ipv6Addr::from(d)
        }),
    ];
    (ip, 1u8..=255, any::<u8>(), any::<bool>(), 0u32..=0xf_ffff).prop_map(
        |(ip, ttl, tos, df, flow_label)| OuterConfig {
            ip,
            ttl,
            tos,
            df,
            flow_label,
        },
    )
}

fn arb_format() -> impl Strategy<Value = InnerFormat> {
    prop_oneof![
        Just(InnerFormat::Ip),
        Just(InnerFormat::Ethernet),
        (any::<[u8; 6]>(), any::<[u8; 6]>())
            .prop_map(|(src, dst)| InnerFormat::IpInEthernet(InnerMacs { src, dst })),
    ]
}

fn arb_encap() -> impl Strategy<Value = Encap> {
    let vxlan = (
        arb_outer(),
        0..=vxlan::VNI_MAX,
        arb_format(),
        1u16..,
        any::<bool>(),
    )
        .prop_map(|(outer, vni, format, dst_port, udp_checksum_v4)| {
            let inner = if format == InnerFormat::Ip {
                InnerFormat::Ethernet
            } else {
                format
            };
            Encap::Vxlan(VxlanEncap {
                outer,
                vni,
                inner,
                dst_port,
                src_ports: SrcPortRange::RFC7348,
                udp_checksum_v4,
            })
        });
    let gre = (
        arb_outer(),
        arb_format(),
        any::<Option<u32>>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(outer, inner, key, seq, checksum)| {
            Encap::Gre(GreEncap {
                outer,
                inner,
                key,
                seq,
                checksum,
            })
        });
    prop_oneof![vxlan, gre]
}

/// An inner packet for `format`: an IPv4/IPv6 packet with consistent lengths (wrapped in
/// Ethernet for `Ethernet`), of `len` bytes of payload.
fn make_inner(format: InnerFormat, v6: bool, len: usize, fill: u8) -> (Vec<u8>, Vec<u8>) {
    let l3 = if v6 {
        ipv6_packet(40 + len, fill)
    } else {
        ipv4_packet(20 + len, fill)
    };
    let inner = if format == InnerFormat::Ethernet {
        ethernet_frame(&l3)
    } else {
        l3.clone()
    };
    (inner, l3)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decap_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..160)) {
        let d = decap(&bytes, &DecapConfig::default());
        if let Ok(d) = d {
            prop_assert!(d.inner.end <= bytes.len());
            let _ = d.inner_l3(&bytes);
            let _ = d.inner_ip(&bytes);
        }
    }

    /// Random bytes behind plausible outer headers, so the fuzz gets past the first checks
    /// (the checksums are verified, so most reach only the IPv4 check; the unverified config
    /// goes deeper).
    #[test]
    fn decap_never_panics_behind_plausible_headers(
        v6 in any::<bool>(),
        proto in prop_oneof![Just(17u8), Just(47u8), any::<u8>()],
        tail in proptest::collection::vec(any::<u8>(), 0..120),
        port in prop_oneof![Just(4789u16), any::<u16>()],
    ) {
        let mut p = if v6 { vec![0x60, 0, 0, 0, 0, 0, proto, 64] } else {
            vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0]
        };
        p.resize(if v6 { 40 } else { 20 }, 1);
        if tail.len() >= 4 && proto == 17 {
            let mut tail = tail.clone();
            tail[2..4].copy_from_slice(&port.to_be_bytes());
            p.extend_from_slice(&tail);
        } else {
            p.extend_from_slice(&tail);
        }
        let payload = u16::try_from(tail.len()).unwrap();
        if v6 {
            p[4..6].copy_from_slice(&payload.to_be_bytes());
        } else {
            p[2..4].copy_from_slice(&(payload + 20).to_be_bytes());
            refill_v4_checksum(&mut p);
        }
        for verify_checksums in [true, false] {
            let cfg = DecapConfig { verify_checksums, ..DecapConfig::default() };
            if let Ok(d) = decap(&p, &cfg) {
                prop_assert!(d.inner.start <= d.inner.end && d.inner.end <= p.len());
                let _ = d.inner_l3(&p);
            }
        }
    }

    #[test]
    fn decap_inverts_encap(
        cfg in arb_encap(),
        v6_inner in any::<bool>(),
        len in 0usize..1500,
        fill in any::<u8>(),
        meta in (any::<u32>(), any::<u16>(), any::<u32>())
            .prop_map(|(flow_hash, ip_id, gre_seq)| EncapMeta {
                flow_hash, ip_id, gre_seq, vlan: None,
            }),
        tag in proptest::option::of((0u8..8, any::<bool>(), 0u16..4095)),
        extra in 0usize..8,
    ) {
        let format = match cfg {
            Encap::Vxlan(v) => v.inner,
            Encap::Gre(g) => g.inner,
        };
        // A tag only where a synthesized Ethernet header can carry it.
        let vlan = tag
            .filter(|_| matches!(format, InnerFormat::IpInEthernet(_)))
            .map(|(pcp, dei, vid)| VlanTag { pcp, dei, vid });
        let meta = EncapMeta { vlan, ..meta };
        let (inner, l3) = make_inner(format, v6_inner, len, fill);
        let packet = encap_both(&cfg, &inner, meta, extra);
        let d = decap(&packet, &DecapConfig {
            vxlan_port: match cfg { Encap::Vxlan(v) => v.dst_port, Encap::Gre(_) => 4789 },
            verify_checksums: true,
        }).unwrap();
        match (cfg, d.tunnel) {
            (Encap::Vxlan(v), Tunnel::Vxlan { vni, src_port }) => {
                prop_assert_eq!(vni, v.vni);
                prop_assert_eq!(src_port, v.src_ports.port(meta.flow_hash));
            }
            (Encap::Gre(g), Tunnel::Gre { key, seq }) => {
                prop_assert_eq!(key, g.key);
                prop_assert_eq!(seq, g.seq.then_some(meta.gre_seq));
            }
            (cfg, tunnel) => prop_assert!(false, "{cfg:?} decapped as {tunnel:?}"),
        }
        let (outer_src, outer_dst) = match cfg {
            Encap::Vxlan(VxlanEncap { outer, .. }) | Encap::Gre(GreEncap { outer, .. }) => {
                match outer.ip {
                    OuterIp::V4 { src, dst } => (IpAddr::V4(src), IpAddr::V4(dst)),
                    OuterIp::V6 { src, dst } => (IpAddr::V6(src), IpAddr::V6(dst)),
                }
            }
        };
        prop_assert_eq!((d.outer_src, d.outer_dst), (outer_src, outer_dst));
        if format == InnerFormat::Ip || format == InnerFormat::Ethernet {
            prop_assert_eq!(&packet[d.inner.clone()], &inner[..]);
        }
        let ip = d.inner_ip(&packet).unwrap();
        prop_assert_eq!(ip.version == IpVersion::V6, v6_inner);
        prop_assert_eq!(&packet[ip.range.clone()], &l3[..]);
        prop_assert_eq!(ip.vlan, vlan);
        // The tag-blind entry agrees on untagged frames and refuses tagged ones.
        match d.inner_l3(&packet) {
            Ok((_, range)) => prop_assert!(vlan.is_none() && range == ip.range),
            Err(e) => prop_assert!(
                vlan.is_some() && e == invalid(Layer::Inner, ParseError::Unsupported),
                "{e:?}"
            ),
        }
    }

    /// A valid packet with bytes flipped: decap must return (not panic), and an accepted
    /// result must point inside the packet.
    #[test]
    fn decap_never_panics_on_mutated_packets(
        cfg in arb_encap(),
        len in 0usize..64,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        cut in any::<usize>(),
    ) {
        let format = match cfg {
            Encap::Vxlan(v) => v.inner,
            Encap::Gre(g) => g.inner,
        };
        let (inner, _) = make_inner(format, false, len, 0x33);
        let mut packet = encap_both(&cfg, &inner, META, 0);
        for (at, xor) in flips {
            let at = at % packet.len();
            packet[at] ^= xor;
        }
        let keep = packet.len() - cut % 8;
        packet.truncate(keep);
        for verify_checksums in [true, false] {
            let dcfg = DecapConfig { verify_checksums, ..DecapConfig::default() };
            if let Ok(d) = decap(&packet, &dcfg) {
                prop_assert!(d.inner.start <= d.inner.end && d.inner.end <= packet.len());
                if let Ok((_, range)) = d.inner_l3(&packet) {
                    prop_assert!(range.start >= d.inner.start && range.end <= d.inner.end);
                }
                if let Ok(ip) = d.inner_ip(&packet) {
                    prop_assert!(ip.range.start >= d.inner.start && ip.range.end <= d.inner.end);
                }
            }
        }
    }
}

/// The payload entry ([`decap_payload`]) finds the same inner packet as [`decap`] on the
/// whole packet, for what a UDP socket (VXLAN) or an IPv6 raw socket (GRE) hands over.
#[test]
fn decap_payload_matches_decap_on_the_golden_vectors() {
    let cfg = DecapConfig::default();
    let meta = |kind| PayloadMeta {
        src: IpAddr::V4(V4_SRC),
        dst: IpAddr::V4(V4_DST),
        kind,
    };
    // VXLAN: the UDP payload starts after 20 + 8 bytes.
    let whole = decap_default(&VXLAN_V4_GOLDEN).unwrap();
    let payload = &VXLAN_V4_GOLDEN[28..];
    let d = decap_payload(payload, &meta(PayloadKind::Vxlan { src_port: 50000 }), &cfg).unwrap();
    assert_eq!(d.tunnel, whole.tunnel);
    assert_eq!(d.inner_kind, InnerKind::Ethernet);
    assert_eq!(d.inner, 8..payload.len());
    assert_eq!(&payload[d.inner.clone()], &VXLAN_V4_GOLDEN[whole.inner]);
    let (version, l3) = d.inner_l3(payload).unwrap();
    assert_eq!(version, IpVersion::V4);
    assert_eq!(&payload[l3], &INNER_V4);
    assert_eq!(d.outer_src, IpAddr::V4(V4_SRC));
    // GRE with key, sequence and checksum: the payload starts after the 20-byte header.
    let payload = &GRE_V4_GOLDEN[20..];
    let d = decap_payload(payload, &meta(PayloadKind::Gre), &cfg).unwrap();
    assert_eq!(
        d.tunnel,
        Tunnel::Gre {
            key: Some(42),
            seq: Some(7)
        }
    );
    assert_eq!(&payload[d.inner.clone()], &INNER_V4);
    let (_, l3) = d.inner_l3(payload).unwrap();
    assert_eq!(&payload[l3], &INNER_V4);
}

#[test]
fn decap_payload_errors() {
    let cfg = DecapConfig::default();
    let vxlan = PayloadMeta {
        src: IpAddr::V6(V6_SRC),
        dst: IpAddr::V6(V6_DST),
        kind: PayloadKind::Vxlan { src_port: 1 },
    };
    let gre = PayloadMeta {
        kind: PayloadKind::Gre,
        ..vxlan
    };
    let good = &VXLAN_V4_GOLDEN[28..];
    // Flags other than exactly 0x08.
    let mut bad = good.to_vec();
    bad[0] = 0x0c;
    assert!(matches!(
        decap_payload(&bad, &vxlan, &cfg),
        Err(TunnelError::Invalid {
            layer: Layer::Vxlan,
            ..
        })
    ));
    // Short VXLAN header; a header with no room for the inner Ethernet header.
    assert_eq!(
        decap_payload(&good[..7], &vxlan, &cfg),
        invalid_at(Layer::Vxlan, ParseError::Truncated)
    );
    assert_eq!(
        decap_payload(&good[..8 + 13], &vxlan, &cfg),
        invalid_at(Layer::Inner, ParseError::Truncated)
    );
    // GRE: a corrupted payload fails the GRE checksum, unless checksums are not verified.
    let mut bad = GRE_V4_GOLDEN[20..].to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    assert_eq!(
        decap_payload(&bad, &gre, &cfg),
        invalid_at(Layer::Gre, ParseError::BadChecksum)
    );
    let lax = DecapConfig {
        verify_checksums: false,
        ..cfg
    };
    assert!(decap_payload(&bad, &gre, &lax).is_ok());
    assert!(decap_payload(&[], &gre, &cfg).is_err());
    assert!(decap_payload(&[], &vxlan, &cfg).is_err());
}

proptest! {
    #[test]
    fn decap_payload_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..120),
        vxlan in any::<bool>(),
    ) {
        let meta = PayloadMeta {
            src: IpAddr::V4(V4_SRC),
            dst: IpAddr::V4(V4_DST),
            kind: if vxlan { PayloadKind::Vxlan { src_port: 9 } } else { PayloadKind::Gre },
        };
        if let Ok(d) = decap_payload(&bytes, &meta, &DecapConfig::default()) {
            prop_assert!(d.inner.end <= bytes.len() && d.inner.start <= d.inner.end);
            let _ = d.inner_l3(&bytes);
        }
    }
}

// ---------------------------------------------------------------------------------------
// VLAN tags in the inner frame

/// VXLAN_V4_GOLDEN with an 802.1Q tag (PCP 3, VID 100: TCI 0x6064) in the inner Ethernet
/// header: outer total length 86, UDP length 66, IPv4 header checksum 0x5461 (computed
/// independently).
const VXLAN_V4_TAGGED_GOLDEN: [u8; 86] = [
    0x45, 0x00, 0x00, 0x56, 0x12, 0x34, 0x00, 0x00, 0x40, 0x11, 0x54, 0x61, 10, 0, 0, 1, 10, 0, 0,
    2, //
    0xc3, 0x50, 0x12, 0xb5, 0x00, 0x42, 0x00, 0x00, // UDP 50000 → 4789, length 66
    0x08, 0x00, 0x00, 0x00, 0x12, 0x34, 0x56, 0x00, // VXLAN, VNI 0x123456
    // Inner Ethernet: destination, source, TPID 0x8100, TCI 0x6064, EtherType IPv4.
    0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x81, 0x00, 0x60, 0x64, 0x08, 0x00, //
    0x45, 0x00, 0x00, 0x20, 0x00, 0x01, 0x00, 0x00, 0x40, 0x11, 0xf7, 0x78, 192, 168, 1, 1, 192,
    168, 1, 2, 0x04, 0xd2, 0x16, 0x2e, 0x00, 0x0c, 0x00, 0x00, b'p', b'i', b'n', b'g',
];

const TAG_100: VlanTag = VlanTag {
    pcp: 3,
    dei: false,
    vid: 100,
};

#[test]
fn vxlan_tagged_golden_encap_and_decap() {
    let cfg = Encap::Vxlan(golden_vxlan(OUTER_V4));
    let meta = EncapMeta {
        vlan: Some(TAG_100),
        ..META
    };
    assert_eq!(cfg.overhead(), 50);
    assert_eq!(cfg.overhead_for(&meta), 54);
    assert_eq!(cfg.overhead_for(&META), 50);
    // In place and copying, with and without spare headroom.
    for extra in [0, 3] {
        assert_eq!(
            encap_both(&cfg, &INNER_V4, meta, extra),
            VXLAN_V4_TAGGED_GOLDEN
        );
    }
    let d = decap_default(&VXLAN_V4_TAGGED_GOLDEN).unwrap();
    assert_eq!(d.inner_kind, InnerKind::Ethernet);
    assert_eq!(d.inner, 36..86);
    let ip = d.inner_ip(&VXLAN_V4_TAGGED_GOLDEN).unwrap();
    assert_eq!(ip.version, IpVersion::V4);
    assert_eq!(ip.range, 54..86);
    assert_eq!(&VXLAN_V4_TAGGED_GOLDEN[ip.range], &INNER_V4[..]);
    assert_eq!(ip.vlan, Some(TAG_100));
    // The tag-blind entry refuses the tagged frame, and takes the untagged golden one.
    assert_eq!(
        d.inner_l3(&VXLAN_V4_TAGGED_GOLDEN),
        Err(invalid(Layer::Inner, ParseError::Unsupported))
    );
    let plain = decap_default(&VXLAN_V4_GOLDEN).unwrap();
    let ip = plain.inner_ip(&VXLAN_V4_GOLDEN).unwrap();
    assert_eq!((ip.range, ip.vlan), (50..82, None));
    // Through the socket entry (what braid's VXLAN UDP socket hands over).
    let payload = &VXLAN_V4_TAGGED_GOLDEN[28..];
    let d = decap_payload(
        payload,
        &PayloadMeta {
            src: IpAddr::V4(V4_SRC),
            dst: IpAddr::V4(V4_DST),
            kind: PayloadKind::Vxlan { src_port: 50000 },
        },
        &DecapConfig::default(),
    )
    .unwrap();
    let ip = d.inner_ip(payload).unwrap();
    assert_eq!(
        (&payload[ip.range], ip.vlan),
        (&INNER_V4[..], Some(TAG_100))
    );
}

#[test]
fn vxlan_tagged_over_ipv6_and_gre_teb_carry_the_tag() {
    let tag = VlanTag {
        pcp: 7,
        dei: true,
        vid: 4094,
    };
    let meta = EncapMeta {
        vlan: Some(tag),
        ..META
    };
    let gre = GreEncap::new(OUTER_V4, InnerFormat::IpInEthernet(MACS));
    for cfg in [Encap::Vxlan(golden_vxlan(OUTER_V6)), Encap::Gre(gre)] {
        for (l3, version) in inners() {
            let packet = encap_both(&cfg, &l3, meta, 1);
            assert_eq!(packet.len(), cfg.overhead() + 4 + l3.len());
            let d = decap_default(&packet).unwrap();
            // The inner frame: MACs, then 81 00, TCI 0xf ffe, then the EtherType.
            let eth = &packet[d.inner.clone()];
            assert_eq!(&eth[..12], &[MAC_PEER, MAC_BRAID].concat()[..]);
            assert_eq!(&eth[12..16], &[0x81, 0x00, 0xff, 0xfe]);
            let ethertype: u16 = if version == IpVersion::V4 {
                0x0800
            } else {
                0x86dd
            };
            assert_eq!(eth[16..18], ethertype.to_be_bytes());
            let ip = d.inner_ip(&packet).unwrap();
            assert_eq!((ip.version, ip.vlan), (version, Some(tag)));
            assert_eq!(&packet[ip.range], &l3[..]);
        }
    }
}

#[test]
fn a_tag_needs_a_synthesized_ethernet_header_and_a_valid_value() {
    let tagged = EncapMeta {
        vlan: Some(TAG_100),
        ..META
    };
    let eth = ethernet_frame(&INNER_V4);
    let cases = [
        (Encap::Gre(golden_gre()), INNER_V4.to_vec()),
        (
            Encap::Gre(GreEncap::new(OUTER_V4, InnerFormat::Ethernet)),
            eth.clone(),
        ),
        (
            Encap::Vxlan(VxlanEncap::new(OUTER_V4, 1, InnerFormat::Ethernet)),
            eth,
        ),
    ];
    for (cfg, inner) in cases {
        let mut out = vec![0u8; 200];
        assert_eq!(
            cfg.encap_into(&inner, &mut out, tagged),
            Err(TunnelError::VlanNotCarried),
            "{cfg:?}"
        );
        let start = cfg.overhead_for(&tagged);
        let mut buf = vec![0u8; start + inner.len()];
        buf[start..].copy_from_slice(&inner);
        let end = buf.len();
        assert_eq!(
            cfg.encap_in_place(&mut buf, start..end, tagged),
            Err(TunnelError::VlanNotCarried)
        );
    }
    // PCP above 7 or VID 4095: refused, nothing written.
    let cfg = Encap::Vxlan(golden_vxlan(OUTER_V4));
    for bad in [
        VlanTag {
            pcp: 8,
            dei: false,
            vid: 1,
        },
        VlanTag {
            pcp: 0,
            dei: false,
            vid: 4095,
        },
    ] {
        let mut out = vec![0u8; 200];
        let meta = EncapMeta {
            vlan: Some(bad),
            ..META
        };
        assert_eq!(
            cfg.encap_into(&INNER_V4, &mut out, meta),
            Err(TunnelError::VlanNotCarried)
        );
        assert!(out.iter().all(|b| *b == 0));
    }
    // Headroom for the untagged header only: no room for the tag.
    let start = cfg.overhead();
    let mut buf = vec![0u8; start + INNER_V4.len()];
    buf[start..].copy_from_slice(&INNER_V4);
    let end = buf.len();
    assert_eq!(
        cfg.encap_in_place(&mut buf, start..end, tagged),
        Err(TunnelError::NoRoom)
    );
    assert!(TunnelError::VlanNotCarried.to_string().contains("vlan"));
}

/// The inner-frame rules of [`Decapped::inner_ip`] on hand-made frames in a VXLAN packet.
#[test]
fn inner_ip_tag_errors() {
    let vxlan = |frame: &[u8]| {
        let cfg = Encap::Vxlan(VxlanEncap::new(OUTER_V4, 5, InnerFormat::Ethernet));
        encap_both(&cfg, frame, META, 0)
    };
    let with = |tags: &[[u8; 4]], ethertype: [u8; 2], l3: &[u8]| {
        let mut f = [MAC_PEER, MAC_BRAID].concat();
        for t in tags {
            f.extend_from_slice(t);
        }
        f.extend_from_slice(&ethertype);
        f.extend_from_slice(l3);
        f
    };
    let check = |frame: Vec<u8>| {
        let p = vxlan(&frame);
        decap_default(&p).unwrap().inner_ip(&p)
    };
    // One 802.1Q tag: accepted, the range leaves the tag out.
    let ok = check(with(&[[0x81, 0, 0x00, 0x64]], [8, 0], &INNER_V4)).unwrap();
    assert_eq!(ok.vlan.map(|t| (t.pcp, t.vid)), Some((0, 100)));
    assert_eq!(ok.range.len(), INNER_V4.len());
    // A priority tag (VID 0) is reported as such.
    let prio = check(with(&[[0x81, 0, 0xa0, 0x00]], [8, 0], &INNER_V4)).unwrap();
    assert_eq!(prio.vlan.map(|t| (t.pcp, t.vid)), Some((5, 0)));
    let unsupported = Err(invalid(Layer::Inner, ParseError::Unsupported));
    // Two tags (QinQ), an 802.1ad S-tag, ARP under a tag.
    assert_eq!(
        check(with(
            &[[0x81, 0, 0, 100], [0x81, 0, 0, 7]],
            [8, 0],
            &INNER_V4
        )),
        unsupported
    );
    assert_eq!(
        check(with(&[[0x88, 0xa8, 0, 100]], [8, 0], &INNER_V4)),
        unsupported
    );
    assert_eq!(
        check(with(&[[0x81, 0, 0, 100]], [8, 6], &[0u8; 28])),
        unsupported
    );
    // VID 4095 is reserved.
    assert_eq!(
        check(with(&[[0x81, 0, 0x0f, 0xff]], [8, 0], &INNER_V4)),
        Err(invalid(
            Layer::Inner,
            ParseError::IllegalValue { field: "vid" }
        ))
    );
    // A frame that ends inside its tag or its IP header.
    let mut short = [MAC_PEER, MAC_BRAID].concat();
    short.extend_from_slice(&[0x81, 0x00, 0x00]);
    let tagged = with(&[[0x81, 0, 0, 100]], [8, 0], &INNER_V4[..10]);
    let truncated = Err(invalid(Layer::Inner, ParseError::Truncated));
    assert_eq!(l3_in_tagged_ethernet(&short), truncated);
    assert_eq!(
        l3_in_tagged_ethernet(&[[MAC_PEER, MAC_BRAID].concat(), vec![0x81, 0]].concat()),
        truncated
    );
    assert_eq!(check(tagged), truncated);
    // GRE's inner IP packets have no tag.
    let p = encap_both(&Encap::Gre(golden_gre()), &INNER_V4, META, 0);
    let ip = decap_default(&p).unwrap().inner_ip(&p).unwrap();
    assert_eq!((ip.version, ip.vlan), (IpVersion::V4, None));
}
