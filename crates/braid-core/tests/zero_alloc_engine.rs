//! The engine's packet paths allocate nothing once warmed up: `handle_tx` (fast path: the
//! flow is installed), `poll_transmit`, `handle_rx` (whole packets, split jumbo packets
//! through the reassembler, duplicated copies), `poll_deliver` and `handle_timeout`. Measured
//! with a counting global allocator (`allocation-counter`, per-thread counts), with and
//! without packet authentication, with QoS at work (a vNIC meter, DRR between two weighted
//! classes, the strict class).

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use braid_core::auth::{AuthConfig, Role};
    use braid_core::engine::{
        ClassMatch, ClassPolicy, Engine, EngineConfig, FlowClass, NicSpec, TxVerdict,
    };
    use braid_core::qos::{ClassConfig as QosClass, ClassId, MeterConfig, MeterMode, SrTcmConfig};
    use braid_core::{Instant, NicId};

    fn udp_packet(buf: &mut [u8], dst_port: u16, seq: u32) {
        buf[28..32].copy_from_slice(&seq.to_be_bytes());
        braid_wire::ip::emit_udp_ipv4(
            buf,
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            4000,
            dst_port,
            0,
        )
        .unwrap();
    }

    fn config(auth: Option<Role>) -> EngineConfig {
        let nics = (0..3)
            .map(|i| NicSpec::udp_ipv4(NicId(i), &format!("link{i}"), 10_000_000_000, 1500))
            .collect();
        let mut cfg = EngineConfig::new(nics);
        cfg.classes.push(FlowClass::duplicated_feed(7000));
        // QoS on the fast path too: the jumbo flow in a second weighted class (DRR between
        // two backlogged classes), the bulk class metered at the vNIC (never Red here).
        cfg.classes.push(FlowClass {
            qos_class: Some(ClassId(2)),
            ..FlowClass::new("jumbo", ClassMatch::udp_dst_port(5001), ClassPolicy::Stripe)
        });
        cfg.qos
            .classes
            .push(QosClass::weighted(2, 2, 8192, 4 << 20));
        cfg.qos.classes[1].meter = Some(MeterConfig::SrTcm(SrTcmConfig {
            cir_bps: 10_000_000_000,
            cbs_bytes: 1 << 20,
            ebs_bytes: 0,
            mode: MeterMode::ColorBlind,
        }));
        cfg.qos.classes[1].drop_red = true;
        cfg.auth = auth.map(|role| AuthConfig::new([9; 32], role));
        cfg
    }

    /// One round: a bulk packet, a jumbo packet (split), a duplicated packet; everything
    /// moved across and delivered. Returns the packets delivered.
    fn round(
        a: &mut Engine,
        b: &mut Engine,
        now: &mut Instant,
        seq: u32,
        pkt: &mut [u8],
        wire: &mut [u8],
    ) -> usize {
        let mut delivered = 0;
        for (port, len) in [(5000u16, 1400usize), (5001, 9000), (7000, 200)] {
            udp_packet(&mut pkt[..len], port, seq);
            assert_eq!(a.handle_tx(*now, &pkt[..len]), TxVerdict::Queued);
        }
        for _ in 0..20 {
            *now += Duration::from_micros(5);
            a.handle_timeout(*now);
            b.handle_timeout(*now);
            while let Some(t) = a.poll_transmit(*now, wire) {
                b.handle_rx(*now, t.nic, &wire[..t.len]);
            }
            while let Some(t) = b.poll_transmit(*now, wire) {
                a.handle_rx(*now, t.nic, &wire[..t.len]);
            }
            while b.poll_deliver(*now, wire).is_some() {
                delivered += 1;
            }
        }
        delivered
    }

    #[test]
    fn engine_packet_paths_do_not_allocate_after_warm_up() {
        check_no_allocation(None, None);
    }

    #[test]
    fn authenticated_packet_paths_do_not_allocate_after_warm_up() {
        check_no_allocation(Some(Role::A), Some(Role::B));
    }

    fn check_no_allocation(role_a: Option<Role>, role_b: Option<Role>) {
        let mut a = Engine::new(config(role_a), Instant::ZERO).unwrap();
        let mut b = Engine::new(config(role_b), Instant::ZERO).unwrap();
        let mut pkt = vec![0u8; 9000];
        let mut wire = vec![0u8; 70_000];
        let mut now = Instant::from_millis(1);
        // Warm-up: flows installed on both sides, tables and queues touched.
        let mut delivered = 0;
        for seq in 0..200 {
            delivered += round(&mut a, &mut b, &mut now, seq, &mut pkt, &mut wire);
        }
        assert_eq!(delivered, 600, "warm-up delivered everything");
        // Control: the counter sees an allocation on this thread.
        let control = allocation_counter::measure(|| {
            std::hint::black_box(Vec::<u8>::with_capacity(8));
        });
        assert_eq!(control.count_total, 1);
        let mut delivered = 0;
        let info = allocation_counter::measure(|| {
            for seq in 200..2200 {
                delivered += round(&mut a, &mut b, &mut now, seq, &mut pkt, &mut wire);
            }
        });
        assert_eq!(delivered, 6000, "every packet delivered");
        assert!(
            b.stats().tx_probe_reply_count > 0,
            "probes ran during the measurement"
        );
        assert!(a.stats().tx_split_count >= 2200, "jumbo packets were split");
        let metered = a.vnic_meter_stats().class(ClassId(1));
        assert!(metered.green_count >= 2200, "the bulk class was metered");
        let nic0 = a.nic_qos_stats(NicId(0)).unwrap();
        assert!(nic0.class(ClassId(2)).dequeued_packets_count > 0, "DRR ran");
        assert_eq!(
            info.count_total, 0,
            "allocations on the packet paths after warm-up: {info:?}"
        );
    }
}
