//! QoS allocates nothing after construction: not on enqueue (accepted, tail-dropped, metered,
//! Red-dropped), not on dequeue (strict, guarded, DRR), not in the meters or the shaper, even
//! with every queue driven to its limit. Measured with a counting global allocator
//! (`allocation-counter`, thread-local counts, so parallel tests do not interfere).

#[cfg(test)]
mod tests {
    use braid_core::Instant;
    use braid_core::qos::{
        ClassConfig, ClassId, Color, Egress, MeterConfig, MeterMode, Qos, QosConfig, RateConfig,
        Shaper, ShaperConfig, SrTcm, SrTcmConfig, TrTcm, TrTcmConfig,
    };

    #[test]
    fn qos_fast_path_does_not_allocate() {
        let mut cfg = QosConfig {
            max_packet_bytes: 1500,
            quantum_bytes: 1500,
            classes: vec![
                ClassConfig::strict(
                    0,
                    Some(RateConfig {
                        rate_bps: 100_000_000,
                        burst_bytes: 15_000,
                    }),
                    256,
                    1 << 20,
                ),
                ClassConfig::weighted(1, 1, 256, 1 << 20),
                ClassConfig::weighted(2, 3, 256, 100_000),
                ClassConfig::weighted(7, 8, 64, 1 << 20),
            ],
        };
        cfg.classes[1].meter = Some(MeterConfig::TrTcm(TrTcmConfig {
            pir_bps: 500_000_000,
            pbs_bytes: 30_000,
            cir_bps: 200_000_000,
            cbs_bytes: 15_000,
            mode: MeterMode::ColorAware,
        }));
        cfg.classes[1].drop_red = true;
        let mut q: Qos<u32> = Qos::new(cfg, Instant::ZERO).unwrap();
        let mut shaper = Shaper::new(
            ShaperConfig {
                rate_bps: 1_000_000_000,
                burst_bytes: 3000,
                overhead_bytes: 50,
            },
            1500,
            Instant::ZERO,
        )
        .unwrap();
        let sr = SrTcmConfig {
            cir_bps: 10_000_000,
            cbs_bytes: 3000,
            ebs_bytes: 3000,
            mode: MeterMode::ColorBlind,
        };
        let mut srtcm = SrTcm::new(sr, 1500, Instant::ZERO).unwrap();
        let mut trtcm = TrTcm::new(
            TrTcmConfig {
                pir_bps: 20_000_000,
                pbs_bytes: 3000,
                cir_bps: 10_000_000,
                cbs_bytes: 3000,
                mode: MeterMode::ColorBlind,
            },
            1500,
            Instant::ZERO,
        )
        .unwrap();
        // Control: the counter does see an allocation on this thread.
        let control = allocation_counter::measure(|| {
            std::hint::black_box(Vec::<u8>::with_capacity(8));
        });
        assert_eq!(control.count_total, 1);
        let mut x = 7u32;
        let mut sent = 0u64;
        let mut colors = [0u64; 3];
        let info = allocation_counter::measure(|| {
            let mut now_ns = 0u64;
            for i in 0..200_000u32 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                now_ns += u64::from(x % 2000);
                let now = Instant::from_nanos(now_ns);
                let len = 64 + (x % 1437) as usize;
                // Over-offer so every queue fills and drops (including an unknown class).
                for class in [0u8, 1, 2, 7, 5] {
                    let pre = [Color::Green, Color::Yellow, Color::Red][(x % 3) as usize];
                    if let Ok(c) = q.enqueue(now, ClassId(class), i, len, pre) {
                        colors[c as usize] += 1;
                    }
                }
                let _ = srtcm.meter(now, len, Color::Green);
                let _ = trtcm.meter(now, len, Color::Green);
                for _ in 0..4 {
                    match q.dequeue_shaped(now, &mut shaper) {
                        Egress::Packet(d) => sent += d.len as u64,
                        Egress::NotBefore(_) | Egress::Idle => break,
                    }
                }
                if i % 64 == 0 {
                    let _ = q.dequeue(now);
                }
            }
        });
        assert_eq!(info.count_total, 0, "QoS fast path allocated: {info:?}");
        let s = q.stats();
        assert!(sent > 0);
        for c in [0u8, 1, 2, 7] {
            let cs = s.class(ClassId(c));
            assert!(cs.dequeued_packets_count > 0, "class {c}");
            assert!(cs.drop_queue_full_count > 0, "class {c}: {cs:?}");
        }
        assert!(s.class(ClassId(1)).drop_red_count > 0);
        assert!(s.drop_unknown_class_count > 0);
        assert!(colors.iter().all(|&n| n > 0), "{colors:?}");
    }
}
