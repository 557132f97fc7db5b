//! The flow table allocates nothing after construction: not on a hit (fast path), not on a
//! miss + insert with eviction, not on remove or expiry, even under heavy churn that leaves
//! tombstones in the hash index. Measured with a counting global allocator
//! (`allocation-counter`, thread-local counts, so parallel tests do not interfere).

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    use braid_core::Instant;
    use braid_core::flow::{
        ClassifyConfig, EvictionPolicy, FlowKey, FlowTable, FlowTableConfig, IPPROTO_UDP,
    };
    use braid_wire::ip::IpSummary;

    fn key(i: u32) -> FlowKey {
        FlowKey::five_tuple(
            IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i >> 16))),
            IpAddr::V4(Ipv4Addr::new(10, 255, 0, 1)),
            IPPROTO_UDP,
            (i & 0xffff) as u16,
            4789,
        )
    }

    #[test]
    fn flow_table_does_not_allocate_after_new() {
        let capacity = 4096;
        let mut t: FlowTable<FlowKey, [u64; 4]> = FlowTable::new(FlowTableConfig {
            capacity,
            idle_timeout: Duration::from_millis(20),
            eviction: EvictionPolicy::EvictOldestIdle,
            min_idle_for_eviction: Duration::from_millis(1),
            hash_seed: 42,
        });
        // Control: the counter does see an allocation on this thread.
        let control = allocation_counter::measure(|| {
            std::hint::black_box(Vec::<u8>::with_capacity(8));
        });
        assert_eq!(control.count_total, 1);
        let mut now_us = 0u64;
        let info = allocation_counter::measure(|| {
            // Fill, hit, churn through 16× the capacity with evictions, removals and expiry.
            for i in 0..(capacity as u32 * 16) {
                now_us += 10;
                let now = Instant::from_micros(now_us);
                let k = key(i);
                if t.get_mut(&k, now).is_none() {
                    let ins = t.insert(k, now, [u64::from(i); 4]).expect("evictable");
                    std::hint::black_box(ins.evicted);
                }
                // Re-hit a recent key (fast path) and remove an older one (tombstones).
                let _ = t.get_mut(&key(i.saturating_sub(3)), now);
                if i % 7 == 0 {
                    let _ = t.remove(&key(i.saturating_sub(100)));
                }
                if i % 1024 == 0 {
                    t.expire(now, 64, |_, v| {
                        std::hint::black_box(v);
                    });
                }
            }
        });
        assert_eq!(info.count_total, 0, "flow table allocated: {info:?}");
        assert!(t.len() <= capacity);
        assert!(t.stats().evictions > 0 && t.stats().removals > 0 && t.stats().expirations > 0);
    }

    #[test]
    fn classify_and_lookup_does_not_allocate() {
        // IPv4/UDP 10.0.0.1:4000 → 10.0.0.2:5000; the header checksum is filled in below.
        let mut p = vec![
            0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 0x0f, 0xa0,
            0x13, 0x88, 0, 8, 0, 0,
        ];
        let mut sum: u32 = p[..20]
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        let cfg = ClassifyConfig::default();
        let mut t: FlowTable<FlowKey, u64> = FlowTable::new(FlowTableConfig::default());
        let k = FlowKey::from_summary(&IpSummary::parse_l3(&p).unwrap(), &cfg);
        t.insert(k, Instant::ZERO, 0).unwrap();
        let info = allocation_counter::measure(|| {
            for i in 0..10_000u64 {
                let s = IpSummary::parse_l3(std::hint::black_box(&p)).unwrap();
                let k = FlowKey::from_summary(&s, &cfg);
                *t.get_mut(&k, Instant::from_nanos(i)).unwrap().1 += 1;
            }
        });
        assert_eq!(info.count_total, 0, "fast path allocated: {info:?}");
        assert_eq!(t.stats().hits, 10_000);
    }
}
