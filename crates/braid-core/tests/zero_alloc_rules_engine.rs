//! The engine's packet paths with rules allocate nothing once warmed up: `handle_tx` through
//! a TX set of 1 000 rules (fast path: the flow's cached rule, a NAT rewrite of the stored
//! packet), the RX set's un-NAT on delivery, and condition evaluation at every
//! `handle_timeout`; nor does the swap of prebuilt tables
//! ([`Command::ReplaceRules`](braid_core::engine::Command::ReplaceRules)) and the lazy
//! re-lookup of every flow that follows it. Building the tables allocates (off the fast
//! path, on the control thread) and is not measured. Counting global allocator
//! (`allocation-counter`, per-thread counts).

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    use braid_core::engine::{
        Command, Engine, EngineConfig, NicSpec, RuleDirection, RuleTable, TxVerdict,
    };
    use braid_core::rules::{Action, Condition, IpPrefix, PortRange, Rule, RuleMatch};
    use braid_core::{Instant, NicId, NicSet};

    const NAT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 9);

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

    fn prefix(a: Ipv4Addr, len: u8) -> Option<IpPrefix> {
        Some(IpPrefix::new(IpAddr::V4(a), len).unwrap())
    }

    /// 1 000 rules on other destinations, a NAT rule for UDP to `port`, and a rule that
    /// duplicates it while loss exceeds 5 % (never, here: conditions are evaluated, not
    /// flipped).
    fn tx_rules(port: u16, nat: Ipv4Addr) -> Vec<Rule> {
        let mut rules: Vec<Rule> = (0..1000u32)
            .map(|i| {
                let [_, _, a, b] = i.to_be_bytes();
                let m = RuleMatch {
                    dst: prefix(Ipv4Addr::new(172, 16 + a, b, 0), 24),
                    ..RuleMatch::ANY
                };
                Rule::new(&format!("r{i}"), 10, m, &[Action::SetDscp((i % 64) as u8)])
            })
            .collect();
        let ours = RuleMatch {
            dst: prefix(Ipv4Addr::new(10, 0, 0, 2), 32),
            protocol: Some(17),
            dst_ports: Some(PortRange::single(port)),
            ..RuleMatch::ANY
        };
        let dup = braid_core::rules::Striping {
            policy: braid_core::engine::ClassPolicy::Duplicate,
            nics: NicSet::ALL,
        };
        rules.push(
            Rule::new("dup-on-loss", 1, ours, &[Action::Stripe(dup)]).when(Condition::loss_above(
                NicSet::ALL,
                50,
                10,
            )),
        );
        rules.push(Rule::new(
            "nat",
            5,
            ours,
            &[
                Action::SetDstAddr(IpAddr::V4(nat)),
                Action::SetDstPort(port + 1),
            ],
        ));
        rules
    }

    fn rx_rules(port: u16, nat: Ipv4Addr) -> Vec<Rule> {
        let m = RuleMatch {
            dst: prefix(nat, 32),
            protocol: Some(17),
            dst_ports: Some(PortRange::single(port + 1)),
            ..RuleMatch::ANY
        };
        vec![Rule::new(
            "un-nat",
            1,
            m,
            &[
                Action::SetDstAddr(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))),
                Action::SetDstPort(port),
            ],
        )]
    }

    fn config() -> EngineConfig {
        let nics = (0..3)
            .map(|i| NicSpec::udp_ipv4(NicId(i), &format!("link{i}"), 10_000_000_000, 1500))
            .collect();
        let mut cfg = EngineConfig::new(nics);
        cfg.tx_rules = tx_rules(5000, NAT);
        cfg.rx_rules = rx_rules(5000, NAT);
        cfg
    }

    /// One round: a packet of each of three flows through both engines. Returns the packets
    /// delivered with the original destination (the NAT undone).
    fn round(
        a: &mut Engine,
        b: &mut Engine,
        now: &mut Instant,
        seq: u32,
        pkt: &mut [u8],
        wire: &mut [u8],
    ) -> usize {
        let mut delivered = 0;
        for port in [5000u16, 6000, 7000] {
            udp_packet(&mut pkt[..1400], port, seq);
            assert_eq!(a.handle_tx(*now, &pkt[..1400]), TxVerdict::Queued);
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
                if wire[16..20] == [10, 0, 0, 2] {
                    delivered += 1;
                }
            }
        }
        delivered
    }

    #[test]
    fn rule_paths_do_not_allocate_after_warm_up() {
        let mut a = Engine::new(config(), Instant::ZERO).unwrap();
        let mut b = Engine::new(config(), Instant::ZERO).unwrap();
        let mut pkt = vec![0u8; 1400];
        let mut wire = vec![0u8; 70_000];
        let mut now = Instant::from_millis(1);
        let mut delivered = 0;
        for seq in 0..200 {
            delivered += round(&mut a, &mut b, &mut now, seq, &mut pkt, &mut wire);
        }
        assert_eq!(delivered, 600, "warm-up delivered everything");
        // Prebuilt tables for a swap during the measurement (another NAT address).
        let other = Ipv4Addr::new(192, 0, 2, 10);
        let tx = RuleTable::build(a.config(), RuleDirection::Tx, tx_rules(5000, other)).unwrap();
        let rx = RuleTable::build(b.config(), RuleDirection::Rx, rx_rules(5000, other)).unwrap();
        let (tx_a, rx_a) = (
            Box::new(tx.clone()),
            Box::new(RuleTable::empty(RuleDirection::Rx)),
        );
        let (tx_b, rx_b) = (Box::new(RuleTable::empty(RuleDirection::Tx)), Box::new(rx));
        let control = allocation_counter::measure(|| {
            std::hint::black_box(Vec::<u8>::with_capacity(8));
        });
        assert_eq!(control.count_total, 1);
        let lookups = a.rule_stats().tx_lookups_count;
        let mut delivered = 0;
        let mut commands = Some((tx_a, rx_a, tx_b, rx_b));
        let info = allocation_counter::measure(|| {
            for seq in 200..2200 {
                if seq == 1200 {
                    // Between two batches: b takes its new RX set first, then a its TX set.
                    let (tx_a, rx_a, tx_b, rx_b) = commands.take().unwrap();
                    b.apply(now, Command::ReplaceRules { tx: tx_b, rx: rx_b })
                        .unwrap();
                    a.apply(now, Command::ReplaceRules { tx: tx_a, rx: rx_a })
                        .unwrap();
                }
                delivered += round(&mut a, &mut b, &mut now, seq, &mut pkt, &mut wire);
            }
        });
        assert_eq!(delivered, 6000, "every packet delivered, the NAT undone");
        let s = a.rule_stats();
        assert_eq!(
            s.tx_rewritten_count, 2200,
            "the NAT rewrote every packet of its flow"
        );
        assert_eq!(b.rule_stats().rx_rewritten_count, 2200);
        assert_eq!(
            s.tx_lookups_count - lookups,
            3,
            "each flow once after the swap"
        );
        assert!(b.stats().tx_probe_reply_count > 0, "probes ran");
        assert_eq!(
            info.count_total, 0,
            "allocations on the rule paths after warm-up: {info:?}"
        );
    }
}
