//! Byte-vector tests for classification parsing: IPv4 TCP/UDP, IPv6 with extension headers,
//! fragments, VLAN-tagged Ethernet, VXLAN, and truncated / malformed inputs. The vectors'
//! checksums are valid (checked against etherparse's own checksum code below), so they are
//! real packets, not just shapes.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::string::ToString;
use std::vec;
use std::vec::Vec;

use etherparse::{Ipv4HeaderSlice, TcpSlice, UdpSlice};
use proptest::prelude::*;
use rstest::rstest;

use super::*;

/// IPv4 TCP SYN 10.0.0.1:49153 -> 10.0.0.2:80, DSCP 46 (EF), ECN 1, TTL 64, 8 bytes of data.
const IPV4_TCP: [u8; 48] = [
    0x45, 0xb9, 0x00, 0x30, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0x09, 0xc7, 0x0a, 0x00, 0x00, 0x01,
    0x0a, 0x00, 0x00, 0x02, 0xc0, 0x01, 0x00, 0x50, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
    0x50, 0x02, 0xff, 0xff, 0xcb, 0x71, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
];

/// IPv4 UDP 192.168.1.1:5000 -> 192.168.1.2:53, TTL 1, 4 bytes of data.
const IPV4_UDP: [u8; 32] = [
    0x45, 0x00, 0x00, 0x20, 0x00, 0x01, 0x40, 0x00, 0x01, 0x11, 0xf6, 0x78, 0xc0, 0xa8, 0x01, 0x01,
    0xc0, 0xa8, 0x01, 0x02, 0x13, 0x88, 0x00, 0x35, 0x00, 0x0c, 0xa3, 0xfe, 0x61, 0x62, 0x63, 0x64,
];

/// IPv6 UDP [2001:db8::1]:5000 -> [2001:db8::2]:5001 behind a hop-by-hop header (PadN), DSCP 10 (AF11), ECN 2, hop limit 255.
const IPV6_UDP_HBH: [u8; 60] = [
    0x62, 0xa1, 0x23, 0x45, 0x00, 0x14, 0x00, 0xff, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x11, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00,
    0x13, 0x88, 0x13, 0x89, 0x00, 0x0c, 0x8c, 0x5d, 0x77, 0x78, 0x79, 0x7a,
];

/// First fragment (MF, offset 0) of a 24-byte UDP datagram: its UDP header is here.
const IPV4_FRAG_FIRST: [u8; 36] = [
    0x45, 0x00, 0x00, 0x24, 0x07, 0x77, 0x20, 0x00, 0x40, 0x11, 0xcf, 0xfe, 0xc0, 0xa8, 0x01, 0x01,
    0xc0, 0xa8, 0x01, 0x02, 0x13, 0x88, 0x00, 0x35, 0x00, 0x18, 0x30, 0x6d, 0x00, 0x01, 0x02, 0x03,
    0x04, 0x05, 0x06, 0x07,
];

/// Last fragment (offset 2 units = 16 bytes) of the same datagram: data only.
const IPV4_FRAG_LATER: [u8; 28] = [
    0x45, 0x00, 0x00, 0x1c, 0x07, 0x77, 0x00, 0x02, 0x40, 0x11, 0xf0, 0x04, 0xc0, 0xa8, 0x01, 0x01,
    0xc0, 0xa8, 0x01, 0x02, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
];

/// IPv4 UDP 172.16.0.1:54321 -> 172.16.0.2:4789 carrying VXLAN VNI 0x123456 and an inner Ethernet header.
const IPV4_VXLAN: [u8; 50] = [
    0x45, 0x00, 0x00, 0x32, 0x00, 0x02, 0x40, 0x00, 0x40, 0x11, 0xe2, 0x95, 0xac, 0x10, 0x00, 0x01,
    0xac, 0x10, 0x00, 0x02, 0xd4, 0x31, 0x12, 0xb5, 0x00, 0x1e, 0x44, 0x70, 0x08, 0x00, 0x00, 0x00,
    0x12, 0x34, 0x56, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02,
    0x08, 0x00,
];

/// Ethernet, 802.1Q tag (PCP 3, VID 100), then IPV4_UDP.
const ETH_VLAN_IPV4_UDP: [u8; 50] = [
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x81, 0x00, 0x60, 0x64,
    0x08, 0x00, 0x45, 0x00, 0x00, 0x20, 0x00, 0x01, 0x40, 0x00, 0x01, 0x11, 0xf6, 0x78, 0xc0, 0xa8,
    0x01, 0x01, 0xc0, 0xa8, 0x01, 0x02, 0x13, 0x88, 0x00, 0x35, 0x00, 0x0c, 0xa3, 0xfe, 0x61, 0x62,
    0x63, 0x64,
];

const SRC6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const DST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
/// IPV6_UDP_HBH's UDP header and data.
const UDP6_SEGMENT: [u8; 12] = [
    0x13, 0x88, 0x13, 0x89, 0x00, 0x0c, 0x8c, 0x5d, 0x77, 0x78, 0x79, 0x7a,
];

/// An IPv6 packet with IPV6_UDP_HBH's addresses and `body` (extension headers and
/// upper-layer data) after a first next header `next`; the payload length is set.
fn ipv6(next: u8, body: &[u8]) -> Vec<u8> {
    let mut packet = IPV6_UDP_HBH[..40].to_vec();
    packet[4..6].copy_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    packet[6] = next;
    packet.extend_from_slice(body);
    packet
}

/// An IPv6 fragment header: `next`, offset in 8-byte units, M flag.
fn frag_header(next: u8, offset_units: u16, more: bool) -> [u8; 8] {
    let field = (offset_units << 3) | u16::from(more);
    let [hi, lo] = field.to_be_bytes();
    [next, 0, hi, lo, 0xde, 0xad, 0xbe, 0xef]
}

/// A generic 8-byte extension header (destination options / routing) with PadN.
fn ext8(next: u8) -> [u8; 8] {
    [next, 0, 1, 4, 0, 0, 0, 0]
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

#[test]
fn vectors_have_valid_checksums() {
    for packet in [
        &IPV4_TCP[..],
        &IPV4_UDP,
        &IPV4_FRAG_FIRST,
        &IPV4_FRAG_LATER,
        &IPV4_VXLAN,
    ] {
        let header = Ipv4HeaderSlice::from_slice(packet).unwrap();
        assert_eq!(
            header.to_header().calc_header_checksum(),
            header.header_checksum()
        );
    }
    let tcp = TcpSlice::from_slice(&IPV4_TCP[20..]).unwrap();
    assert_eq!(
        tcp.calc_checksum_ipv4([10, 0, 0, 1], [10, 0, 0, 2])
            .unwrap(),
        tcp.checksum()
    );
    for (packet, src, dst) in [
        (&IPV4_UDP[..], [192, 168, 1, 1], [192, 168, 1, 2]),
        (&IPV4_VXLAN[..], [172, 16, 0, 1], [172, 16, 0, 2]),
    ] {
        let udp = UdpSlice::from_slice(&packet[20..]).unwrap();
        let sum = udp
            .to_header()
            .calc_checksum_ipv4_raw(src, dst, udp.payload())
            .unwrap();
        assert_eq!(sum, udp.checksum());
    }
    let udp6 = UdpSlice::from_slice(&UDP6_SEGMENT).unwrap();
    let sum = udp6
        .to_header()
        .calc_checksum_ipv6_raw(SRC6.octets(), DST6.octets(), udp6.payload())
        .unwrap();
    assert_eq!(sum, udp6.checksum());
}

#[test]
fn ipv4_tcp() {
    let summary = IpSummary::parse_l3(&IPV4_TCP).unwrap();
    assert_eq!(
        summary,
        IpSummary {
            src: v4(10, 0, 0, 1),
            dst: v4(10, 0, 0, 2),
            protocol: 6,
            src_port: 49153,
            dst_port: 80,
            dscp: 46,
            ecn: 1,
            ttl: 64,
            vlan: None,
            vxlan_vni: None,
            is_fragment: false,
            total_len: 48,
        }
    );
    assert_eq!(
        summary.to_string(),
        "10.0.0.1:49153 -> 10.0.0.2:80 proto=6 dscp=46 ecn=1 ttl=64 len=48"
    );
}

#[test]
fn ipv4_udp() {
    let summary = IpSummary::parse_l3(&IPV4_UDP).unwrap();
    assert_eq!(
        summary,
        IpSummary {
            src: v4(192, 168, 1, 1),
            dst: v4(192, 168, 1, 2),
            protocol: 17,
            src_port: 5000,
            dst_port: 53,
            dscp: 0,
            ecn: 0,
            ttl: 1,
            vlan: None,
            vxlan_vni: None,
            is_fragment: false,
            total_len: 32,
        }
    );
}

#[test]
fn ipv6_udp_behind_hop_by_hop() {
    let summary = IpSummary::parse_l3(&IPV6_UDP_HBH).unwrap();
    assert_eq!(
        summary,
        IpSummary {
            src: IpAddr::V6(SRC6),
            dst: IpAddr::V6(DST6),
            protocol: 17,
            src_port: 5000,
            dst_port: 5001,
            dscp: 10,
            ecn: 2,
            ttl: 255,
            vlan: None,
            vxlan_vni: None,
            is_fragment: false,
            total_len: 60,
        }
    );
    assert_eq!(
        summary.to_string(),
        "[2001:db8::1]:5000 -> [2001:db8::2]:5001 proto=17 dscp=10 ecn=2 ttl=255 len=60"
    );
}

#[test]
fn ipv6_udp_behind_a_chain() {
    // hop-by-hop -> destination options -> routing -> UDP
    let mut body = vec![];
    body.extend_from_slice(&ext8(60));
    body.extend_from_slice(&ext8(43));
    body.extend_from_slice(&ext8(17));
    body.extend_from_slice(&UDP6_SEGMENT);
    let packet = ipv6(0, &body);
    let summary = IpSummary::parse_l3(&packet).unwrap();
    assert_eq!(summary.protocol, 17);
    assert_eq!((summary.src_port, summary.dst_port), (5000, 5001));
    assert_eq!(summary.total_len, 40 + 24 + 12);
}

#[test]
fn ipv6_hop_by_hop_only_first() {
    let mut body = vec![];
    body.extend_from_slice(&ext8(0)); // destination options, then hop-by-hop: illegal
    body.extend_from_slice(&ext8(17));
    body.extend_from_slice(&UDP6_SEGMENT);
    assert_eq!(
        IpSummary::parse_l3(&ipv6(60, &body)),
        Err(ParseError::IllegalValue {
            field: "next_header"
        })
    );
}

#[test]
fn ipv6_extension_header_limit() {
    let mut body = vec![];
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        body.extend_from_slice(&ext8(60));
    }
    let mut at_limit = body.clone();
    let last = at_limit.len() - 8;
    at_limit[last] = 17;
    at_limit.extend_from_slice(&UDP6_SEGMENT);
    assert_eq!(
        IpSummary::parse_l3(&ipv6(60, &at_limit)).unwrap().dst_port,
        5001
    );

    body.extend_from_slice(&ext8(17));
    body.extend_from_slice(&UDP6_SEGMENT);
    assert_eq!(
        IpSummary::parse_l3(&ipv6(60, &body)),
        Err(ParseError::Unsupported)
    );
}

#[test]
fn ipv6_ah_then_tcp() {
    // AH (RFC 4302): payload length 4 = (4 + 2) * 4 = 24 bytes, then a TCP header.
    let mut body = vec![6, 4, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1];
    body.extend_from_slice(&[0xab; 12]); // ICV
    body.extend_from_slice(&IPV4_TCP[20..]);
    let summary = IpSummary::parse_l3(&ipv6(51, &body)).unwrap();
    assert_eq!(summary.protocol, 6);
    assert_eq!((summary.src_port, summary.dst_port), (49153, 80));
}

#[test]
fn ipv6_esp_and_no_next_header_have_no_ports() {
    for next in [50u8, 59] {
        let summary = IpSummary::parse_l3(&ipv6(next, &[0x11; 16])).unwrap();
        assert_eq!(summary.protocol, next);
        assert_eq!((summary.src_port, summary.dst_port), (0, 0));
        assert!(!summary.is_fragment);
    }
}

#[test]
fn ipv6_first_fragment() {
    let mut body = frag_header(17, 0, true).to_vec();
    body.extend_from_slice(&UDP6_SEGMENT[..8]);
    let summary = IpSummary::parse_l3(&ipv6(44, &body)).unwrap();
    assert!(summary.is_fragment);
    assert_eq!(summary.protocol, 17);
    assert_eq!((summary.src_port, summary.dst_port), (0, 0));
}

#[test]
fn ipv6_later_fragment_is_not_walked() {
    // The fragmentable part started with a destination options header; this later
    // fragment's bytes are datagram data that would not parse as one.
    let mut body = frag_header(60, 1, false).to_vec();
    body.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
    let summary = IpSummary::parse_l3(&ipv6(44, &body)).unwrap();
    assert!(summary.is_fragment);
    assert_eq!(summary.protocol, 60);
    assert_eq!((summary.src_port, summary.dst_port), (0, 0));
}

#[test]
fn ipv6_atomic_fragment_keeps_ports() {
    // RFC 6946: offset 0 and M = 0 is a whole packet.
    let mut body = frag_header(17, 0, false).to_vec();
    body.extend_from_slice(&UDP6_SEGMENT);
    let summary = IpSummary::parse_l3(&ipv6(44, &body)).unwrap();
    assert!(!summary.is_fragment);
    assert_eq!((summary.src_port, summary.dst_port), (5000, 5001));
}

#[rstest]
#[case::first(&IPV4_FRAG_FIRST, 36)]
#[case::later(&IPV4_FRAG_LATER, 28)]
fn ipv4_fragments_have_no_ports(#[case] packet: &[u8], #[case] total_len: usize) {
    let summary = IpSummary::parse_l3(packet).unwrap();
    assert!(summary.is_fragment);
    assert_eq!(summary.protocol, 17);
    assert_eq!((summary.src_port, summary.dst_port), (0, 0));
    assert_eq!(summary.total_len, total_len);
    // Both fragments of the datagram classify the same way.
    let other = IpSummary::parse_l3(&IPV4_FRAG_LATER).unwrap();
    assert_eq!(
        (summary.src, summary.dst, summary.protocol, summary.src_port),
        (other.src, other.dst, other.protocol, other.src_port)
    );
}

#[test]
fn ipv4_dont_fragment_is_not_a_fragment() {
    // IPV4_UDP has DF set (0x4000): not a fragment.
    assert_eq!(IPV4_UDP[6], 0x40);
    assert!(!IpSummary::parse_l3(&IPV4_UDP).unwrap().is_fragment);
}

#[test]
fn ipv4_ah_then_tcp() {
    let mut packet = IPV4_TCP[..20].to_vec();
    packet[9] = 51;
    packet.extend_from_slice(&[6, 4, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1]);
    packet.extend_from_slice(&[0xab; 12]);
    packet.extend_from_slice(&IPV4_TCP[20..]);
    let len = u16::try_from(packet.len()).unwrap();
    packet[2..4].copy_from_slice(&len.to_be_bytes());
    let summary = IpSummary::parse_l3(&packet).unwrap();
    assert_eq!(summary.protocol, 6);
    assert_eq!(summary.dst_port, 80);
}

#[test]
fn ipv4_options_are_skipped() {
    // IHL 6: one word of options (NOP x4) before the UDP header.
    let mut packet = IPV4_UDP[..20].to_vec();
    packet[0] = 0x46;
    packet.extend_from_slice(&[1, 1, 1, 1]);
    packet.extend_from_slice(&IPV4_UDP[20..]);
    packet[3] = 36;
    let summary = IpSummary::parse_l3(&packet).unwrap();
    assert_eq!((summary.src_port, summary.dst_port), (5000, 53));
    assert_eq!(summary.total_len, 36);
}

#[test]
fn icmp_has_no_ports() {
    let mut packet = IPV4_UDP;
    packet[9] = 1;
    let summary = IpSummary::parse_l3(&packet).unwrap();
    assert_eq!(summary.protocol, 1);
    assert_eq!((summary.src_port, summary.dst_port), (0, 0));
}

#[test]
fn vxlan_vni() {
    let summary = IpSummary::parse_l3(&IPV4_VXLAN).unwrap();
    assert_eq!(summary.dst_port, 4789);
    assert_eq!(summary.vxlan_vni, Some(0x12_3456));
    assert!(summary.to_string().ends_with(" vni=1193046"));
}

#[rstest]
#[case::no_i_flag(28, 0x00)]
#[case::extension_flag(28, 0x0c)]
#[case::other_port(22, 0x13)]
fn not_vxlan(#[case] offset: usize, #[case] value: u8) {
    let mut packet = IPV4_VXLAN;
    packet[offset] = value;
    let summary = IpSummary::parse_l3(&packet).unwrap();
    assert_eq!(summary.vxlan_vni, None);
    assert_eq!(summary.protocol, 17);
}

#[test]
fn vxlan_port_with_short_payload_is_plain_udp() {
    // UDP to 4789 with 4 bytes of payload: too short for a VXLAN header.
    let mut packet = IPV4_UDP;
    packet[22..24].copy_from_slice(&4789u16.to_be_bytes());
    let summary = IpSummary::parse_l3(&packet).unwrap();
    assert_eq!(summary.dst_port, 4789);
    assert_eq!(summary.vxlan_vni, None);
}

#[test]
fn vlan_tagged_ethernet() {
    let summary = IpSummary::parse_l2(&ETH_VLAN_IPV4_UDP).unwrap();
    assert_eq!(summary.vlan, Some(100));
    assert_eq!(
        summary,
        IpSummary {
            vlan: Some(100),
            ..IpSummary::parse_l3(&IPV4_UDP).unwrap()
        }
    );
    assert!(summary.to_string().contains(" vlan=100"));
}

/// An Ethernet frame with the given tags (TPID, VID) before IPV4_UDP.
fn frame_with_tags(tags: &[(u16, u16)]) -> Vec<u8> {
    let mut frame = ETH_VLAN_IPV4_UDP[..12].to_vec();
    for &(tpid, vid) in tags {
        frame.extend_from_slice(&tpid.to_be_bytes());
        frame.extend_from_slice(&vid.to_be_bytes());
    }
    frame.extend_from_slice(&[0x08, 0x00]);
    frame.extend_from_slice(&IPV4_UDP);
    frame
}

#[rstest]
#[case::untagged(&[], Ok(None))]
#[case::qinq_88a8(&[(0x88a8, 200), (0x8100, 100)], Ok(Some(200)))]
#[case::qinq_9100(&[(0x9100, 300), (0x8100, 100)], Ok(Some(300)))]
#[case::priority_tag(&[(0x8100, 0x6000)], Ok(None))]
#[case::pcp_bits_ignored(&[(0x8100, 0xe00a)], Ok(Some(10)))]
#[case::three_tags(&[(0x88a8, 1), (0x8100, 2), (0x8100, 3)], Err(ParseError::Unsupported))]
fn vlan_tags(#[case] tags: &[(u16, u16)], #[case] expected: Result<Option<u16>, ParseError>) {
    let result = IpSummary::parse_l2(&frame_with_tags(tags)).map(|summary| summary.vlan);
    assert_eq!(result, expected);
}

#[test]
fn ethernet_ipv6() {
    let mut frame = ETH_VLAN_IPV4_UDP[..12].to_vec();
    frame.extend_from_slice(&[0x86, 0xdd]);
    frame.extend_from_slice(&IPV6_UDP_HBH);
    let summary = IpSummary::parse_l2(&frame).unwrap();
    assert_eq!(summary, IpSummary::parse_l3(&IPV6_UDP_HBH).unwrap());
}

#[test]
fn ethernet_padding_is_ignored() {
    // A minimum-size frame pads a short IP packet; total_len is the IP packet's.
    let mut frame = frame_with_tags(&[]);
    frame.extend_from_slice(&[0; 14]);
    let summary = IpSummary::parse_l2(&frame).unwrap();
    assert_eq!(summary.total_len, 32);
    assert_eq!(summary.dst_port, 53);
}

#[test]
fn non_ip_ethertype_is_unsupported() {
    let mut frame = frame_with_tags(&[]);
    frame[12..14].copy_from_slice(&[0x08, 0x06]); // ARP
    assert_eq!(IpSummary::parse_l2(&frame), Err(ParseError::Unsupported));
    // An IPv6 EtherType over a (40+ byte) IPv4 packet: the version does not match.
    let mut frame = ETH_VLAN_IPV4_UDP[..12].to_vec();
    frame.extend_from_slice(&[0x86, 0xdd]);
    frame.extend_from_slice(&IPV4_TCP);
    assert_eq!(IpSummary::parse_l2(&frame), Err(ParseError::Unsupported));
}

#[rstest]
#[case::zero(0x05)]
#[case::five(0x55)]
#[case::fifteen(0xf5)]
fn unknown_ip_version(#[case] first_byte: u8) {
    let mut packet = IPV4_UDP;
    packet[0] = first_byte;
    assert_eq!(IpSummary::parse_l3(&packet), Err(ParseError::Unsupported));
}

/// Every prefix of every vector is an error — IP length fields make truncation visible —
/// and nothing panics.
#[test]
fn truncated_every_prefix() {
    let l3: [&[u8]; 6] = [
        &IPV4_TCP,
        &IPV4_UDP,
        &IPV6_UDP_HBH,
        &IPV4_FRAG_FIRST,
        &IPV4_FRAG_LATER,
        &IPV4_VXLAN,
    ];
    for packet in l3 {
        for len in 0..packet.len() {
            assert_eq!(
                IpSummary::parse_l3(&packet[..len]),
                Err(ParseError::Truncated),
                "prefix {len} of {packet:02x?}"
            );
        }
    }
    for len in 0..ETH_VLAN_IPV4_UDP.len() {
        assert_eq!(
            IpSummary::parse_l2(&ETH_VLAN_IPV4_UDP[..len]),
            Err(ParseError::Truncated),
            "prefix {len}"
        );
    }
}

#[rstest]
#[case::ihl_below_5(0, 0x44)]
#[case::total_len_below_header(3, 19)]
#[case::udp_len_past_ip_payload(25, 13)]
#[case::udp_len_below_header(25, 7)]
fn ipv4_bad_length(#[case] offset: usize, #[case] value: u8) {
    let mut packet = IPV4_UDP;
    packet[offset] = value;
    assert_eq!(IpSummary::parse_l3(&packet), Err(ParseError::BadLength));
}

#[rstest]
#[case::tcp_data_offset_below_5(32, 0x40)]
#[case::tcp_header_past_ip_payload(32, 0xf0)]
fn tcp_bad_length(#[case] offset: usize, #[case] value: u8) {
    let mut packet = IPV4_TCP;
    packet[offset] = value;
    assert_eq!(IpSummary::parse_l3(&packet), Err(ParseError::BadLength));
}

#[test]
fn ipv6_bad_lengths() {
    // The hop-by-hop header claims 16 bytes; only 8 + 4 are in the payload.
    let mut body = vec![17, 1, 1, 4, 0, 0, 0, 0];
    body.extend_from_slice(&[0; 4]);
    assert_eq!(
        IpSummary::parse_l3(&ipv6(0, &body)),
        Err(ParseError::BadLength)
    );
    // A fragment header cut by the payload length.
    assert_eq!(
        IpSummary::parse_l3(&ipv6(44, &[17, 0, 0, 1])),
        Err(ParseError::BadLength)
    );
    // A payload length past the buffer is a truncation.
    let mut packet = IPV6_UDP_HBH.to_vec();
    packet[5] += 1;
    assert_eq!(IpSummary::parse_l3(&packet), Err(ParseError::Truncated));
}

#[test]
fn ipv6_jumbogram_uses_the_buffer() {
    // RFC 2675: payload length 0 with a hop-by-hop header; the buffer's end is the end.
    let mut packet = IPV6_UDP_HBH;
    packet[4..6].fill(0);
    let summary = IpSummary::parse_l3(&packet).unwrap();
    assert_eq!(summary.total_len, 60);
    assert_eq!(summary.dst_port, 5001);
}

proptest! {
    #[test]
    fn parse_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(summary) = IpSummary::parse_l3(&bytes) {
            prop_assert!(summary.total_len <= bytes.len());
        }
        if let Ok(summary) = IpSummary::parse_l2(&bytes) {
            prop_assert!(summary.total_len + 14 <= bytes.len());
        }
    }

    #[test]
    fn mutated_vectors_never_panic(
        which in 0usize..4,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = match which {
            0 => IPV4_TCP.to_vec(),
            1 => IPV6_UDP_HBH.to_vec(),
            2 => IPV4_VXLAN.to_vec(),
            _ => ETH_VLAN_IPV4_UDP.to_vec(),
        };
        for (index, value) in flips {
            let i = index.index(bytes.len());
            bytes[i] = value;
        }
        if let Ok(summary) = IpSummary::parse_l3(&bytes) {
            prop_assert!(summary.total_len <= bytes.len());
            if summary.is_fragment {
                prop_assert_eq!((summary.src_port, summary.dst_port), (0, 0));
            }
        }
        let _ = IpSummary::parse_l2(&bytes);
    }
}

#[test]
fn emit_udp_ipv4_builds_a_packet_etherparse_accepts() {
    use core::net::Ipv4Addr;
    let mut p = [0xaau8; 100];
    emit_udp_ipv4(
        &mut p,
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 2),
        4000,
        5000,
        7,
    )
    .unwrap();
    let ip = etherparse::Ipv4HeaderSlice::from_slice(&p).unwrap();
    assert_eq!(ip.to_header().calc_header_checksum(), ip.header_checksum());
    assert_eq!(
        (ip.total_len(), ip.identification(), ip.ttl()),
        (100, 7, 64)
    );
    let s = IpSummary::parse_l3(&p).unwrap();
    assert_eq!(
        (s.protocol, s.src_port, s.dst_port, s.total_len),
        (17, 4000, 5000, 100)
    );
    assert_eq!(p[28..], [0xaa; 72], "payload untouched");
    assert_eq!(
        emit_udp_ipv4(
            &mut p[..27],
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            1,
            2,
            0
        ),
        Err(ParseError::Truncated)
    );
}
