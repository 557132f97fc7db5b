//! The flow table's snapshot (`Engine::flows`) allocates its output `Vec` once, sized for the
//! page, and nothing per row, however many flows the table holds: a class's name is shared
//! (`Arc<str>`), not copied. Measured with a counting global allocator (`allocation-counter`,
//! per-thread counts). Also prints how long one page of 1000 takes over 60 000 TX flows
//! (`cargo test -p braid-core --release --test flow_snapshot_alloc -- --nocapture`).

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use braid_core::engine::{
        ClassMatch, ClassPolicy, Engine, EngineConfig, FlowClass, FlowQuery, MAX_FLOW_ROWS, NicSpec,
    };
    use braid_core::{Instant, NicId};

    const FLOWS: u32 = 60_000;

    fn engine_with_flows() -> (Engine, Instant) {
        let nics = (0..3)
            .map(|i| NicSpec::udp_ipv4(NicId(i), &format!("link{i}"), 10_000_000_000, 1500))
            .collect();
        let mut cfg = EngineConfig::new(nics);
        cfg.classes.push(FlowClass::new(
            "bulk",
            ClassMatch::udp_dst_port(5000),
            ClassPolicy::Pin,
        ));
        let mut e = Engine::new(cfg, Instant::ZERO).expect("engine");
        let now = Instant::from_millis(1);
        let mut p = vec![0u8; 28 + 16];
        let mut buf = vec![0u8; 2048];
        for i in 0..FLOWS {
            let src = Ipv4Addr::from(0x0a00_0000 | (i >> 16));
            let sport = u16::try_from(i & 0xffff).expect("16 bits");
            let dport = if i % 2 == 0 { 5000 } else { 6000 };
            braid_wire::ip::emit_udp_ipv4(&mut p, src, Ipv4Addr::new(10, 9, 0, 1), sport, dport, 0)
                .expect("emit");
            // The flow is installed whatever happens to the packet.
            let _ = e.handle_tx(now, &p);
            if i % 1000 == 999 {
                while e
                    .poll_transmit(now + Duration::from_secs(1), &mut buf)
                    .is_some()
                {}
            }
        }
        assert_eq!(e.flow_counts().0, FLOWS as usize);
        (e, now + Duration::from_millis(10))
    }

    #[test]
    fn a_page_allocates_its_vec_once_and_nothing_per_row() {
        let (e, now) = engine_with_flows();
        let control = allocation_counter::measure(|| {
            std::hint::black_box(Vec::<u8>::with_capacity(8));
        });
        assert_eq!(control.count_total, 1);
        for q in [
            FlowQuery {
                limit: MAX_FLOW_ROWS,
                ..FlowQuery::default()
            },
            FlowQuery {
                limit: MAX_FLOW_ROWS,
                class: Some(0),
                ..FlowQuery::default()
            },
            FlowQuery {
                limit: 10,
                port: Some(5000),
                ..FlowQuery::default()
            },
        ] {
            let mut rows = Vec::new();
            let info = allocation_counter::measure(|| {
                rows = e.flows(now, &q);
            });
            assert_eq!(rows.len(), q.limit + 1, "a full page and the extra row");
            assert!(
                rows.windows(2).all(|w| w[0].cursor() < w[1].cursor()),
                "in order"
            );
            assert_eq!(info.count_total, 1, "one allocation, the Vec: {info:?}");
            if q.class == Some(0) {
                assert!(
                    rows.iter().all(|r| r.class_name.as_deref() == Some("bulk")),
                    "named rows"
                );
            }
        }
        // How long a full page takes (printed; not asserted: the machine is shared).
        let q = FlowQuery {
            limit: MAX_FLOW_ROWS,
            ..FlowQuery::default()
        };
        let started = std::time::Instant::now();
        let runs = 10;
        for _ in 0..runs {
            std::hint::black_box(e.flows(now, &q));
        }
        println!(
            "flows(): a page of {MAX_FLOW_ROWS} over {FLOWS} TX flows: {:?} each",
            started.elapsed() / runs
        );
    }
}
