//! The engine's tunnel paths allocate nothing once warmed up: `handle_tx` of a tunnelled
//! flow (encapsulation in the packet store), `poll_tunnel_transmit`, `handle_tunnel_rx`
//! (whole outer packets), `handle_tunnel_payload_rx` (a socket's payload), the GRE sequence
//! check and `poll_deliver`, for VXLAN and GRE. Measured with a counting global allocator
//! (`allocation-counter`, per-thread counts).

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use braid_core::engine::{
        ClassMatch, ClassPolicy, Engine, EngineConfig, FlowClass, NicSpec, TunnelSpec, TxVerdict,
    };
    use braid_core::{Instant, NicId};
    use braid_wire::tunnel::{
        Encap, GreEncap, InnerFormat, InnerMacs, OuterIp, PayloadKind, PayloadMeta, VxlanEncap,
    };

    const A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

    fn config(flip: bool) -> EngineConfig {
        let (src, dst) = if flip { (B, A) } else { (A, B) };
        let outer = OuterIp::V4 { src, dst };
        let macs = InnerMacs {
            src: [2, 0, 0, 0, 0, 1],
            dst: [2, 0, 0, 0, 0, 2],
        };
        let mut gre = GreEncap::new(outer, InnerFormat::Ip);
        gre.key = Some(9);
        gre.seq = true;
        gre.checksum = true;
        let mut cfg = EngineConfig::new(vec![NicSpec::udp_ipv4(
            NicId(0),
            "link0",
            10_000_000_000,
            1500,
        )]);
        cfg.tunnels = vec![
            TunnelSpec::new(
                "vx",
                NicId(0),
                Encap::Vxlan(VxlanEncap::new(outer, 5, InnerFormat::IpInEthernet(macs))),
            ),
            TunnelSpec::new("gre", NicId(0), Encap::Gre(gre)),
        ];
        for (port, tunnel) in [(6000, 0), (6001, 1)] {
            let mut class = FlowClass::new("t", ClassMatch::udp_dst_port(port), ClassPolicy::Pin);
            class.tunnel = Some(tunnel);
            cfg.classes.push(class);
        }
        cfg
    }

    /// One round: a packet on each tunnel, out of `a` and into `b` (the VXLAN one as a UDP
    /// socket's payload every other round), delivered. Returns the packets delivered.
    fn round(a: &mut Engine, b: &mut Engine, seq: u32, pkt: &mut [u8], wire: &mut [u8]) -> usize {
        // A millisecond per round: the NIC's pacer, which tunnel packets share, lets both
        // packets of a round out.
        let now = Instant::from_millis(1 + u64::from(seq));
        for port in [6000u16, 6001] {
            pkt[28..32].copy_from_slice(&seq.to_be_bytes());
            braid_wire::ip::emit_udp_ipv4(pkt, A, B, 4000, port, 0).unwrap();
            assert_eq!(a.handle_tx(now, pkt), TxVerdict::Queued);
        }
        while let Some(t) = a.poll_tunnel_transmit(now, wire) {
            let outer = &wire[..t.len];
            let accepted = if t.tunnel == 0 && seq % 2 == 1 {
                let meta = PayloadMeta {
                    src: IpAddr::V4(A),
                    dst: IpAddr::V4(B),
                    kind: PayloadKind::Vxlan { src_port: 50000 },
                };
                b.handle_tunnel_payload_rx(now, &meta, &outer[28..])
            } else {
                b.handle_tunnel_rx(now, outer)
            };
            assert_eq!(accepted, Ok(t.tunnel));
        }
        let mut delivered = 0;
        while let Some(d) = b.poll_deliver(now, wire) {
            assert_eq!(d.len, pkt.len());
            assert_eq!(&wire[28..32], &seq.to_be_bytes());
            delivered += 1;
        }
        delivered
    }

    #[test]
    fn tunnel_paths_do_not_allocate_after_warm_up() {
        let mut a = Engine::new(config(false), Instant::ZERO).unwrap();
        let mut b = Engine::new(config(true), Instant::ZERO).unwrap();
        let mut pkt = vec![0u8; 1200];
        let mut wire = vec![0u8; 2000];
        let mut delivered = 0;
        for seq in 0..100 {
            delivered += round(&mut a, &mut b, seq, &mut pkt, &mut wire);
        }
        assert_eq!(delivered, 200, "warm-up delivered everything");
        let control = allocation_counter::measure(|| {
            std::hint::black_box(Vec::<u8>::with_capacity(8));
        });
        assert_eq!(control.count_total, 1);
        let mut delivered = 0;
        let info = allocation_counter::measure(|| {
            for seq in 100..2100 {
                delivered += round(&mut a, &mut b, seq, &mut pkt, &mut wire);
            }
        });
        assert_eq!(delivered, 4000, "every packet delivered");
        assert_eq!(b.tunnel_stats(1).unwrap().rx_packets_count, 2100);
        assert_eq!(b.stats().drops.total(), 0);
        assert_eq!(
            info.count_total, 0,
            "allocations on the tunnel paths after warm-up: {info:?}"
        );
    }
}
