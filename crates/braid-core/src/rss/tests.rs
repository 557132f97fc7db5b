//! RSS tests: the Microsoft/Intel verification vectors (shared/testdata/rss-toeplitz.md),
//! the table against the reference, the symmetric key, fragments, indirection validation and
//! distribution.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rand::{RngExt, SeedableRng};

use super::*;

/// One row of the verification table: src, src port, dst, dst port, address-only hash,
/// hash with ports.
type Row = (&'static str, u16, &'static str, u16, u32, u32);

const VECTORS: [Row; 8] = [
    (
        "66.9.149.187",
        2794,
        "161.142.100.80",
        1766,
        0x323e_8fc2,
        0x51cc_c178,
    ),
    (
        "199.92.111.2",
        14230,
        "65.69.140.83",
        4739,
        0xd718_262a,
        0xc626_b0ea,
    ),
    (
        "24.19.198.95",
        12898,
        "12.22.207.184",
        38024,
        0xd2d0_a5de,
        0x5c2b_394a,
    ),
    (
        "38.27.205.30",
        48228,
        "209.142.163.6",
        2217,
        0x8298_9176,
        0xafc7_327f,
    ),
    (
        "153.39.163.191",
        44251,
        "202.188.127.2",
        1303,
        0x5d18_09c5,
        0x10e8_28a2,
    ),
    (
        "3ffe:2501:200:1fff::7",
        2794,
        "3ffe:2501:200:3::1",
        1766,
        0x2cc1_8cd5,
        0x4020_7d3d,
    ),
    (
        "3ffe:501:8::260:97ff:fe40:efab",
        14230,
        "ff02::1",
        4739,
        0x0f0c_461c,
        0xdde5_1bbf,
    ),
    (
        "3ffe:1900:4545:3:200:f8ff:fe21:67cf",
        44251,
        "fe80::200:f8ff:fe21:67cf",
        38024,
        0x4b61_e985,
        0x02d1_feef,
    ),
];

fn summary(src: IpAddr, dst: IpAddr, protocol: u8, sp: u16, dp: u16, frag: bool) -> IpSummary {
    IpSummary {
        src,
        dst,
        protocol,
        src_port: sp,
        dst_port: dp,
        dscp: 0,
        ecn: 0,
        ttl: 64,
        vlan: None,
        vxlan_vni: None,
        is_fragment: frag,
        total_len: 1500,
    }
}

fn octets(a: IpAddr) -> ([u8; 16], usize) {
    let mut out = [0u8; 16];
    match a {
        IpAddr::V4(a) => {
            out[..4].copy_from_slice(&a.octets());
            (out, 4)
        }
        IpAddr::V6(a) => {
            out.copy_from_slice(&a.octets());
            (out, 16)
        }
    }
}

/// `src ‖ dst [‖ sport ‖ dport]`, built by hand (independently of `hash_for`).
fn input(src: IpAddr, dst: IpAddr, ports: Option<(u16, u16)>) -> ([u8; 36], usize) {
    let mut buf = [0u8; 36];
    let (s, sl) = octets(src);
    let (d, dl) = octets(dst);
    buf[..sl].copy_from_slice(&s[..sl]);
    buf[sl..sl + dl].copy_from_slice(&d[..dl]);
    let mut len = sl + dl;
    if let Some((sp, dp)) = ports {
        buf[len..len + 2].copy_from_slice(&sp.to_be_bytes());
        buf[len + 2..len + 4].copy_from_slice(&dp.to_be_bytes());
        len += 4;
    }
    (buf, len)
}

#[test]
fn worked_input_of_row_one() {
    let (src, sp, dst, dp, _, with_ports) = VECTORS[0];
    let (buf, len) = input(src.parse().unwrap(), dst.parse().unwrap(), Some((sp, dp)));
    let expected = [
        0x42, 0x09, 0x95, 0xbb, 0xa1, 0x8e, 0x64, 0x50, 0x0a, 0xea, 0x06, 0xe6,
    ];
    assert_eq!(&buf[..len], &expected);
    assert_eq!(
        toeplitz_hash(&ToeplitzKey::MICROSOFT, &expected),
        with_ports
    );
}

#[test]
fn every_vector_matches_reference_table_and_summary() {
    let rss = Rss::new(ToeplitzKey::MICROSOFT, 4).unwrap();
    for (i, &(src, sp, dst, dp, addr_only, with_ports)) in VECTORS.iter().enumerate() {
        let src: IpAddr = src.parse().unwrap();
        let dst: IpAddr = dst.parse().unwrap();
        assert_eq!(src.is_ipv4(), i < 5, "row {i} family");
        let (a, alen) = input(src, dst, None);
        let (p, plen) = input(src, dst, Some((sp, dp)));
        let key = ToeplitzKey::MICROSOFT;
        assert_eq!(
            toeplitz_hash(&key, &a[..alen]),
            addr_only,
            "row {i} reference, addresses"
        );
        assert_eq!(
            toeplitz_hash(&key, &p[..plen]),
            with_ports,
            "row {i} reference, ports"
        );
        assert_eq!(rss.hash(&a[..alen]), addr_only, "row {i} table, addresses");
        assert_eq!(rss.hash(&p[..plen]), with_ports, "row {i} table, ports");
        // Through IpSummary: TCP and UDP hash ports; ICMP and fragments do not.
        for proto in [6, 17] {
            let s = summary(src, dst, proto, sp, dp, false);
            assert_eq!(rss.hash_for(&s), with_ports, "row {i} proto {proto}");
            let q = rss.queue_for(&s);
            assert_eq!(q, rss.indirection()[(with_ports & 127) as usize]);
            assert_eq!(u32::from(q), with_ports % 4, "round robin over 4");
        }
        let icmp = summary(src, dst, 1, 0, 0, false);
        assert_eq!(rss.hash_for(&icmp), addr_only, "row {i} icmp");
        let frag = summary(src, dst, 17, sp, dp, true);
        assert_eq!(rss.hash_for(&frag), addr_only, "row {i} fragment");
    }
}

#[test]
fn table_equals_reference_on_random_inputs_and_keys() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    for _ in 0..200 {
        let mut key = [0u8; KEY_BYTES];
        rng.fill(&mut key[..]);
        let key = ToeplitzKey::new(key);
        let rss = Rss::new(key, 1).unwrap();
        for len in 0..=MAX_INPUT_BYTES {
            let mut buf = [0u8; MAX_INPUT_BYTES];
            rng.fill(&mut buf[..len]);
            assert_eq!(
                rss.hash(&buf[..len]),
                toeplitz_hash(&key, &buf[..len]),
                "len {len}"
            );
        }
    }
}

#[test]
fn single_bits_select_key_windows() {
    // Input bit k set alone yields key bits [k, k + 32): checks the MSB-first bit order.
    let key = ToeplitzKey::MICROSOFT;
    let rss = Rss::new(key, 1).unwrap();
    let kb = key.as_bytes();
    for k in 0..MAX_INPUT_BYTES * 8 {
        let mut buf = [0u8; MAX_INPUT_BYTES];
        buf[k / 8] = 0x80 >> (k % 8);
        let mut expected = 0u32;
        for j in 0..32 {
            let bit = k + j;
            expected = (expected << 1) | u32::from((kb[bit / 8] >> (7 - bit % 8)) & 1);
        }
        assert_eq!(toeplitz_hash(&key, &buf), expected, "bit {k}");
        assert_eq!(rss.hash(&buf), expected, "bit {k}");
    }
    assert_eq!(toeplitz_hash(&key, &[]), 0);
    assert_eq!(toeplitz_hash(&key, &[0; 36]), 0);
}

#[test]
fn input_past_36_bytes_is_ignored() {
    let key = ToeplitzKey::MICROSOFT;
    let rss = Rss::new(key, 1).unwrap();
    let mut long = [0xa5u8; 64];
    let h = toeplitz_hash(&key, &long[..MAX_INPUT_BYTES]);
    assert_ne!(h, 0);
    long[40] = 0;
    assert_eq!(toeplitz_hash(&key, &long), h);
    assert_eq!(rss.hash(&long), h);
}

#[test]
fn symmetric_key_gives_both_directions_one_hash() {
    let key = ToeplitzKey::symmetric();
    assert_eq!(&key.as_bytes()[..4], &[0x6d, 0x5a, 0x6d, 0x5a]);
    assert!(key.as_bytes().chunks(2).all(|c| c == [0x6d, 0x5a]));
    let rss = Rss::new(key, 8).unwrap();
    let asym = Rss::new(ToeplitzKey::MICROSOFT, 8).unwrap();
    let mut asym_differs = 0;
    for &(src, sp, dst, dp, _, _) in &VECTORS {
        let (src, dst): (IpAddr, IpAddr) = (src.parse().unwrap(), dst.parse().unwrap());
        for (proto, frag) in [(6, false), (17, false), (17, true), (1, false)] {
            let ab = summary(src, dst, proto, sp, dp, frag);
            let ba = summary(dst, src, proto, dp, sp, frag);
            assert_eq!(
                rss.hash_for(&ab),
                rss.hash_for(&ba),
                "{src} -> {dst} {proto}"
            );
            assert_eq!(rss.queue_for(&ab), rss.queue_for(&ba));
            asym_differs += usize::from(asym.hash_for(&ab) != asym.hash_for(&ba));
        }
    }
    // The test can fail: the Microsoft key is not symmetric.
    assert!(asym_differs >= 30, "{asym_differs}");
}

#[test]
fn fragments_of_one_datagram_land_on_one_queue() {
    let rss = Rss::new(ToeplitzKey::MICROSOFT, 16).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let mut split_if_ports_hashed = 0;
    for v6 in [false, true] {
        for _ in 0..200 {
            let (src, dst) = if v6 {
                let s: u128 = rng.random();
                let d: u128 = rng.random();
                (IpAddr::V6(Ipv6Addr::from(s)), IpAddr::V6(Ipv6Addr::from(d)))
            } else {
                let s: u32 = rng.random();
                let d: u32 = rng.random();
                (IpAddr::V4(Ipv4Addr::from(s)), IpAddr::V4(Ipv4Addr::from(d)))
            };
            let (sp, dp): (u16, u16) = (rng.random(), rng.random());
            // As braid-wire reports them: the first fragment may carry ports, later ones
            // never do (src_port = dst_port = 0); both are `is_fragment`.
            let first = summary(src, dst, 17, sp, dp, true);
            let later = summary(src, dst, 17, 0, 0, true);
            let q = rss.queue_for(&first);
            assert_eq!(rss.queue_for(&later), q);
            for off in 1..4 {
                let mut more = later;
                more.total_len = 1500 - off * 8;
                assert_eq!(rss.queue_for(&more), q);
            }
            // Same addresses, unfragmented: hashed with ports, so mostly another queue.
            let whole = summary(src, dst, 17, sp, dp, false);
            split_if_ports_hashed += usize::from(rss.queue_for(&whole) != q);
        }
    }
    // With 16 queues about 15/16 of 400 would differ; proves the ports really are skipped.
    assert!(split_if_ports_hashed > 300, "{split_if_ports_hashed}");
}

#[test]
fn new_validates_the_queue_count_and_fills_round_robin() {
    assert_eq!(
        Rss::new(ToeplitzKey::MICROSOFT, 0).unwrap_err(),
        RssError::QueueCount { queues: 0 }
    );
    assert_eq!(
        Rss::new(ToeplitzKey::MICROSOFT, 257).unwrap_err(),
        RssError::QueueCount { queues: 257 }
    );
    let max = Rss::new(ToeplitzKey::MICROSOFT, 256).unwrap();
    assert_eq!(max.queues(), 256);
    let rss = Rss::new(ToeplitzKey::symmetric(), 3).unwrap();
    assert_eq!(rss.key(), &ToeplitzKey::symmetric());
    assert_eq!(rss.indirection().len(), DEFAULT_INDIRECTION_LEN);
    for (i, &q) in rss.indirection().iter().enumerate() {
        assert_eq!(usize::from(q), i % 3);
    }
}

#[test]
fn set_indirection_validates_length_and_entries() {
    let mut rss = Rss::new(ToeplitzKey::MICROSOFT, 4).unwrap();
    let before: alloc::vec::Vec<u16> = rss.indirection().to_vec();
    for len in [0, 3, 100, 1024] {
        let t = alloc::vec![0u16; len];
        assert_eq!(rss.set_indirection(&t), Err(RssError::TableLength { len }));
    }
    let mut t = [1u16; 64];
    t[17] = 4;
    t[30] = 9;
    assert_eq!(
        rss.set_indirection(&t),
        Err(RssError::QueueOutOfRange {
            index: 17,
            queue: 4,
            queues: 4
        })
    );
    assert_eq!(
        rss.indirection(),
        &before[..],
        "a failed set keeps the old table"
    );

    // A valid table is installed and used: everything on queue 3 but slot 0.
    let mut t = [3u16; 512];
    t[0] = 0;
    rss.set_indirection(&t).unwrap();
    assert_eq!(rss.indirection().len(), 512);
    assert_eq!(rss.queue_for_hash(0x1000 << 9), 0);
    assert_eq!(rss.queue_for_hash(1), 3);
    rss.set_indirection(&[2]).unwrap();
    assert_eq!(rss.queue_for_hash(u32::MAX), 2);
}

#[test]
fn errors_display_their_values() {
    let e = RssError::QueueOutOfRange {
        index: 5,
        queue: 9,
        queues: 4,
    };
    assert_eq!(
        alloc::format!("{e}"),
        "rss indirection entry 5 names queue 9, but there are 4 queues"
    );
    assert_eq!(
        alloc::format!("{}", RssError::QueueCount { queues: 0 }),
        "rss queue count 0 is not in 1..=256"
    );
    assert_eq!(
        alloc::format!("{}", RssError::TableLength { len: 3 }),
        "rss indirection table length 3 is not a power of two in 1..=512"
    );
}

#[test]
fn random_flows_spread_evenly_over_four_queues() {
    for key in [ToeplitzKey::MICROSOFT, ToeplitzKey::symmetric()] {
        let rss = Rss::new(key, 4).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let flows = 4000;
        let mut counts = [0u32; 4];
        for i in 0..flows {
            let (src, dst) = if i % 2 == 0 {
                let (s, d): (u32, u32) = (rng.random(), rng.random());
                (IpAddr::V4(Ipv4Addr::from(s)), IpAddr::V4(Ipv4Addr::from(d)))
            } else {
                let (s, d): (u128, u128) = (rng.random(), rng.random());
                (IpAddr::V6(Ipv6Addr::from(s)), IpAddr::V6(Ipv6Addr::from(d)))
            };
            let proto = if rng.random::<bool>() { 6 } else { 17 };
            let s = summary(src, dst, proto, rng.random(), rng.random(), false);
            counts[usize::from(rss.queue_for(&s))] += 1;
        }
        let mean = flows / 4;
        for (q, &c) in counts.iter().enumerate() {
            assert!(
                c * 5 >= mean * 4 && c * 5 <= mean * 6,
                "{key:?} queue {q}: {c} of {flows} ({counts:?})"
            );
        }
    }
}

#[test]
fn spread_over_many_flows_from_one_client() {
    // One client, one server, many source ports (the usual iperf -P case): still spread.
    let rss = Rss::new(ToeplitzKey::MICROSOFT, 4).unwrap();
    let src = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let dst = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    let mut counts = [0u32; 4];
    for sp in 40_000..44_000u16 {
        counts[usize::from(rss.queue_for(&summary(src, dst, 6, sp, 5201, false)))] += 1;
    }
    for &c in &counts {
        assert!((800..=1200).contains(&c), "{counts:?}");
    }
}
