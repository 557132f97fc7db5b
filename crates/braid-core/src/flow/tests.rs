//! Tests of classification and the flow table (unit, scenario and a proptest model check).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::vec::Vec;

use braid_wire::ip::IpSummary;
use proptest::prelude::*;

use super::*;
use crate::time::Instant;
use core::time::Duration;

// --- packet builders ----------------------------------------------------------------------

fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in h.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet: `frag_off` in 8-byte units, `mf` = more fragments, `tos` = DSCP<<2|ECN.
fn ipv4(proto: u8, tos: u8, frag_off: u16, mf: bool, payload: &[u8]) -> Vec<u8> {
    let total = 20 + payload.len();
    let mut p = vec![0u8; 20];
    p[0] = 0x45;
    p[1] = tos;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[4..6].copy_from_slice(&0x1234u16.to_be_bytes()); // identification
    let ff = (u16::from(mf) << 13) | frag_off;
    p[6..8].copy_from_slice(&ff.to_be_bytes());
    p[8] = 64;
    p[9] = proto;
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&[10, 0, 0, 2]);
    let c = ipv4_checksum(&p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// A UDP header + `n` payload bytes (checksum 0 = none, legal for IPv4).
fn udp(sport: u16, dport: u16, n: usize) -> Vec<u8> {
    let mut u = vec![0u8; 8 + n];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&((8 + n) as u16).to_be_bytes());
    u
}

fn summary(pkt: &[u8]) -> IpSummary {
    IpSummary::parse_l3(pkt).expect("test packet parses")
}

fn k4(sport: u16, dport: u16) -> FlowKey {
    FlowKey::five_tuple(
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        IPPROTO_UDP,
        sport,
        dport,
    )
}

// --- classification -----------------------------------------------------------------------

#[test]
fn five_tuple_of_unfragmented_udp() {
    let s = summary(&ipv4(IPPROTO_UDP, 0xb8, 0, false, &udp(4000, 5000, 32)));
    let k = FlowKey::from_summary(&s, &ClassifyConfig::default());
    assert_eq!(k, k4(4000, 5000));
    assert_eq!(k.dscp, None, "DSCP is not part of the key by default");
}

#[test]
fn all_fragments_of_a_datagram_share_one_key() {
    let cfg = ClassifyConfig::default();
    // First fragment: offset 0, MF set, carries the UDP header (ports 4000 → 5000).
    let first = summary(&ipv4(IPPROTO_UDP, 0, 0, true, &udp(4000, 5000, 24)));
    // A middle fragment and the last one: no transport header.
    let middle = summary(&ipv4(IPPROTO_UDP, 0, 4, true, &[0xaa; 32]));
    let last = summary(&ipv4(IPPROTO_UDP, 0, 8, false, &[0xbb; 16]));
    assert!(first.is_fragment && middle.is_fragment && last.is_fragment);
    let kf = FlowKey::from_summary(&first, &cfg);
    assert_eq!(kf, FlowKey::from_summary(&middle, &cfg));
    assert_eq!(kf, FlowKey::from_summary(&last, &cfg));
    assert_eq!(
        (kf.src_port, kf.dst_port),
        (0, 0),
        "first fragment keyed without ports"
    );
    assert_eq!(kf.protocol, IPPROTO_UDP);
    // ... and that key differs from the unfragmented flow's 5-tuple key.
    let whole = summary(&ipv4(IPPROTO_UDP, 0, 0, false, &udp(4000, 5000, 24)));
    assert_ne!(kf, FlowKey::from_summary(&whole, &cfg));
}

#[test]
fn non_tcp_udp_has_no_ports_and_ports_can_be_disabled() {
    // ICMP echo: bytes after the header must not be read as ports.
    let s = summary(&ipv4(1, 0, 0, false, &[8, 0, 0x12, 0x34, 0, 1, 0, 1]));
    let k = FlowKey::from_summary(&s, &ClassifyConfig::default());
    assert_eq!((k.protocol, k.src_port, k.dst_port), (1, 0, 0));

    let s = summary(&ipv4(IPPROTO_UDP, 0, 0, false, &udp(1, 2, 0)));
    let cfg = ClassifyConfig {
        use_ports: false,
        ..ClassifyConfig::default()
    };
    let k = FlowKey::from_summary(&s, &cfg);
    assert_eq!((k.src_port, k.dst_port), (0, 0));
}

#[test]
fn dscp_splits_flows_only_when_enabled() {
    let ef = summary(&ipv4(IPPROTO_UDP, 46 << 2, 0, false, &udp(1, 2, 0)));
    let be = summary(&ipv4(IPPROTO_UDP, 0, 0, false, &udp(1, 2, 0)));
    let off = ClassifyConfig::default();
    assert_eq!(
        FlowKey::from_summary(&ef, &off),
        FlowKey::from_summary(&be, &off)
    );
    let on = ClassifyConfig { dscp: true, ..off };
    let kef = FlowKey::from_summary(&ef, &on);
    assert_eq!(kef.dscp, Some(46));
    assert_ne!(kef, FlowKey::from_summary(&be, &on));
}

#[test]
fn ipv6_udp_key() {
    let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
    let dst: Ipv6Addr = "2001:db8::2".parse().unwrap();
    let payload = udp(53, 5353, 4);
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.push(IPPROTO_UDP);
    p.push(64);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&payload);
    let k = FlowKey::from_summary(&summary(&p), &ClassifyConfig::default());
    assert_eq!(
        k,
        FlowKey::five_tuple(IpAddr::V6(src), IpAddr::V6(dst), IPPROTO_UDP, 53, 5353)
    );
}

// --- flow table ---------------------------------------------------------------------------

fn cfg(capacity: usize, eviction: EvictionPolicy) -> FlowTableConfig {
    FlowTableConfig {
        capacity,
        idle_timeout: Duration::from_secs(10),
        eviction,
        min_idle_for_eviction: Duration::from_secs(1),
        hash_seed: 7,
    }
}

fn ms(n: u64) -> Instant {
    Instant::from_millis(n)
}

#[test]
fn hit_miss_insert_remove_counted() {
    let mut t: FlowTable<FlowKey, u32> = FlowTable::new(cfg(4, EvictionPolicy::RejectNew));
    assert!(t.get_mut(&k4(1, 1), ms(0)).is_none());
    let ins = t.insert(k4(1, 1), ms(0), 100).unwrap();
    assert!(ins.evicted.is_none());
    let slot = ins.slot;
    *ins.value += 1;
    let (s, v) = t.get_mut(&k4(1, 1), ms(5)).unwrap();
    assert_eq!((s, *v), (slot, 101));
    assert_eq!(t.last_seen(&k4(1, 1)), Some(ms(5)));
    assert_eq!(
        t.slot_mut(slot).map(|(k, v)| (*k, *v)),
        Some((k4(1, 1), 101))
    );
    // Replacing hands the old value back.
    let ins = t.insert(k4(1, 1), ms(6), 7).unwrap();
    assert_eq!(ins.evicted, Some((k4(1, 1), 101)));
    assert_eq!(t.len(), 1);
    assert_eq!(t.remove(&k4(1, 1)), Some(7));
    assert_eq!(t.remove(&k4(1, 1)), None);
    assert!(t.is_empty());
    let st = *t.stats();
    assert_eq!(
        (st.hits, st.misses, st.inserts, st.replaced, st.removals),
        (1, 1, 1, 1, 1)
    );
}

#[test]
fn reject_new_keeps_live_entries() {
    let mut t: FlowTable<FlowKey, u32> = FlowTable::new(cfg(2, EvictionPolicy::RejectNew));
    t.insert(k4(1, 1), ms(0), 1).unwrap();
    t.insert(k4(2, 2), ms(0), 2).unwrap();
    // Even an hour-idle entry is not displaced under RejectNew.
    let err = t.insert(k4(3, 3), ms(3_600_000), 3).unwrap_err();
    assert_eq!(err.into_value(), 3);
    assert_eq!(t.stats().rejected_full, 1);
    assert_eq!(t.stats().evictions, 0);
    assert_eq!(t.len(), 2);
    assert!(t.peek(&k4(1, 1)).is_some() && t.peek(&k4(2, 2)).is_some());
}

#[test]
fn evict_oldest_idle_evicts_lru_only_when_idle_long_enough() {
    let mut t: FlowTable<FlowKey, u32> = FlowTable::new(cfg(2, EvictionPolicy::EvictOldestIdle));
    t.insert(k4(1, 1), ms(0), 1).unwrap();
    t.insert(k4(2, 2), ms(100), 2).unwrap();
    // Hit 1 at 200 ms: 2 is now the LRU.
    t.get_mut(&k4(1, 1), ms(200)).unwrap();
    // At 900 ms the LRU (2, last seen 100 ms) has been idle 800 ms < 1 s: refused.
    assert!(matches!(
        t.insert(k4(3, 3), ms(900), 3),
        Err(InsertError::Full(3))
    ));
    assert_eq!(t.stats().rejected_full, 1);
    // At 1100 ms it has been idle 1 s: evicted and handed back.
    let ins = t.insert(k4(3, 3), ms(1100), 3).unwrap();
    assert_eq!(ins.evicted, Some((k4(2, 2), 2)));
    assert_eq!(t.stats().evictions, 1);
    assert!(t.peek(&k4(2, 2)).is_none());
    assert_eq!(t.peek(&k4(1, 1)), Some(&1));
    assert_eq!(t.len(), 2);
}

#[test]
fn expire_is_budgeted_oldest_first_and_eventually_complete() {
    let mut t: FlowTable<FlowKey, u32> = FlowTable::new(cfg(16, EvictionPolicy::RejectNew));
    for i in 0..10u16 {
        t.insert(k4(i, i), ms(u64::from(i)), u32::from(i)).unwrap();
    }
    // Keep key 3 alive.
    t.get_mut(&k4(3, 3), ms(5_000)).unwrap();
    assert_eq!(t.next_expiry(), Some(ms(10_000)));
    // Nothing is idle yet at 9.999 s.
    assert_eq!(t.expire(ms(9_999), 100, |_, _| panic!("nothing idle")), 0);
    let mut out = Vec::new();
    let now = ms(10_020);
    assert_eq!(t.expire(now, 4, |k, v| out.push((k.src_port, v))), 4);
    assert_eq!(
        out,
        vec![(0, 0), (1, 1), (2, 2), (4, 4)],
        "oldest first, 3 skipped (refreshed)"
    );
    let mut total = 4;
    loop {
        let n = t.expire(now, 4, |k, v| out.push((k.src_port, v)));
        total += n;
        if n < 4 {
            break;
        }
    }
    assert_eq!(total, 9);
    assert_eq!(t.len(), 1);
    assert_eq!(t.peek(&k4(3, 3)), Some(&3));
    assert_eq!(t.stats().expirations, 9);
    assert_eq!(t.next_expiry(), Some(ms(15_000)));
}

#[test]
fn lru_order_survives_stale_now() {
    let mut t: FlowTable<FlowKey, u32> = FlowTable::new(cfg(4, EvictionPolicy::RejectNew));
    t.insert(k4(1, 1), ms(1000), 1).unwrap();
    // A stale `now` is clamped: the list stays sorted, expiry still finds the oldest first.
    t.insert(k4(2, 2), ms(10), 2).unwrap();
    let seen: Vec<_> = t.iter_lru().map(|(k, at)| (k.src_port, at)).collect();
    assert_eq!(seen, vec![(2, ms(1000)), (1, ms(1000))]);
}

#[test]
fn slots_are_reused_and_stay_within_capacity() {
    let mut t: FlowTable<FlowKey, u32> = FlowTable::new(cfg(8, EvictionPolicy::EvictOldestIdle));
    let mut now = 0;
    for i in 0..1000u16 {
        now += 2000; // every entry is idle long enough to be evicted
        let ins = t.insert(k4(i, 0), ms(now), u32::from(i)).unwrap();
        assert!((ins.slot as usize) < 8);
    }
    assert_eq!(t.len(), 8);
    assert_eq!(t.stats().evictions, 1000 - 8);
    let mut keys: Vec<_> = t.iter().map(|(k, v)| (k.src_port, *v)).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        (992..1000).map(|i| (i, u32::from(i))).collect::<Vec<_>>()
    );
}

// --- proptest: the table against a std HashMap model ---------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Get(u8),
    Insert(u8, u32),
    Remove(u8),
    Expire(u8),
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any::<u8>().prop_map(|k| Op::Get(k % 24)),
        4 => (any::<u8>(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k % 24, v)),
        2 => any::<u8>().prop_map(|k| Op::Remove(k % 24)),
        1 => any::<u8>().prop_map(|b| Op::Expire(b % 6)),
        2 => (0u16..3000).prop_map(Op::Advance),
    ]
}

/// Model: key → (value, last_seen_ms). LRU = smallest last-seen, ties by insertion order
/// (tracked with a counter).
#[derive(Default)]
struct Model {
    map: HashMap<u8, (u32, u64, u64)>,
    tick: u64,
}

impl Model {
    fn lru(&self) -> Option<u8> {
        self.map
            .iter()
            .min_by_key(|(_, (_, seen, tick))| (*seen, *tick))
            .map(|(k, _)| *k)
    }
}

proptest! {
    #[test]
    fn table_matches_model(
        ops in proptest::collection::vec(op(), 1..300),
        reject in any::<bool>(),
    ) {
        let capacity = 8;
        let policy = if reject { EvictionPolicy::RejectNew } else { EvictionPolicy::EvictOldestIdle };
        let c = FlowTableConfig {
            capacity,
            idle_timeout: Duration::from_secs(5),
            eviction: policy,
            min_idle_for_eviction: Duration::from_secs(1),
            hash_seed: 99,
        };
        let mut t: FlowTable<u8, u32> = FlowTable::new(c);
        let mut m = Model::default();
        let mut now_ms = 0u64;
        for op in ops {
            let now = ms(now_ms);
            match op {
                Op::Get(k) => {
                    let got = t.get_mut(&k, now).map(|(_, v)| *v);
                    let want = m.map.get(&k).map(|e| e.0);
                    prop_assert_eq!(got, want);
                    m.tick += 1;
                    let tick = m.tick;
                    if let Some(e) = m.map.get_mut(&k) { e.1 = now_ms; e.2 = tick; }
                }
                Op::Insert(k, v) => {
                    m.tick += 1;
                    let tick = m.tick;
                    let res = t.insert(k, now, v).map(|i| i.evicted);
                    if let Some(old) = m.map.insert(k, (v, now_ms, tick)) {
                        prop_assert_eq!(res.unwrap(), Some((k, old.0)));
                    } else if m.map.len() > capacity {
                        m.map.remove(&k);
                        let lru = m.lru().unwrap();
                        let idle = now_ms - m.map[&lru].1;
                        if !reject && idle >= 1000 {
                            let old = m.map.remove(&lru).unwrap();
                            m.map.insert(k, (v, now_ms, tick));
                            prop_assert_eq!(res.unwrap(), Some((lru, old.0)));
                        } else {
                            prop_assert!(matches!(res, Err(InsertError::Full(x)) if x == v));
                        }
                    } else {
                        prop_assert_eq!(res.unwrap(), None);
                    }
                }
                Op::Remove(k) => {
                    prop_assert_eq!(t.remove(&k), m.map.remove(&k).map(|e| e.0));
                }
                Op::Expire(budget) => {
                    let mut got = Vec::new();
                    let n = t.expire(now, usize::from(budget), |k, v| got.push((k, v)));
                    prop_assert_eq!(n, got.len());
                    prop_assert!(n <= usize::from(budget));
                    for (k, v) in &got {
                        let e = m.map.remove(k).expect("expired key was in the model");
                        prop_assert_eq!(e.0, *v);
                        prop_assert!(now_ms - e.1 >= 5000, "expired a live entry");
                    }
                    if n < usize::from(budget) {
                        prop_assert!(m.map.values().all(|e| now_ms - e.1 < 5000), "idle entry left");
                    }
                }
                Op::Advance(d) => now_ms += u64::from(d),
            }
            prop_assert!(t.len() <= capacity);
            prop_assert_eq!(t.len(), m.map.len());
        }
        // Repeated expiry far in the future empties the table.
        let far = ms(now_ms + 10_000);
        while t.expire(far, 3, |_, _| {}) == 3 {}
        prop_assert!(t.is_empty());
        prop_assert_eq!(t.next_expiry(), None);
    }
}
