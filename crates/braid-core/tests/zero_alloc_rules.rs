//! The rule engine allocates nothing per packet or per new flow: not on a slow-path lookup
//! (tuple-space search over 5 000 rules), not on the fast path (cached compiled action), not
//! on a re-lookup after the set's version changed, not when conditions are evaluated and
//! flip. Building and replacing a set allocate (off the fast path) and are not measured.
//! Measured with a counting global allocator (`allocation-counter`, thread-local counts).

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use braid_core::engine::ClassPolicy;
    use braid_core::flow::{FlowKey, IPPROTO_TCP, IPPROTO_UDP};
    use braid_core::rules::{
        Action, CachedRule, Condition, IpPrefix, LinkSnapshot, LiveState, PortRange, RuleContext,
        RuleKey, RuleMatch, RuleSet, RuleSetConfig, Striping,
    };
    use braid_core::{Instant, NicId, NicSet};

    fn rule(i: u32) -> braid_core::rules::Rule {
        let [_, _, a, b] = i.to_be_bytes();
        let m = RuleMatch {
            src: Some(IpPrefix::new(IpAddr::V4(Ipv4Addr::new(10, a, b, 0)), 24).expect("prefix")),
            protocol: Some(if i.is_multiple_of(2) {
                IPPROTO_TCP
            } else {
                IPPROTO_UDP
            }),
            dst_ports: Some(PortRange::new(1000, 1999)),
            ..RuleMatch::ANY
        };
        braid_core::rules::Rule::new(&format!("r{i}"), i, m, &[Action::SetDscp((i % 64) as u8)])
    }

    fn key(i: u32) -> RuleKey {
        let [_, _, a, b] = (i % 5000).to_be_bytes();
        let proto = if i.is_multiple_of(2) {
            IPPROTO_TCP
        } else {
            IPPROTO_UDP
        };
        RuleKey::from_flow_key(
            &FlowKey::five_tuple(
                IpAddr::V4(Ipv4Addr::new(10, a, b, 9)),
                IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1)),
                proto,
                40000,
                1000 + (i % 1500) as u16,
            ),
            0,
        )
    }

    #[test]
    fn lookup_fast_path_and_conditions_do_not_allocate() {
        let mut rules: Vec<_> = (0..5000).map(rule).collect();
        // A conditional rule above everything, flipped below.
        rules.push(
            braid_core::rules::Rule::new(
                "dup-when-lossy",
                0,
                RuleMatch {
                    protocol: Some(IPPROTO_UDP),
                    ..RuleMatch::ANY
                },
                &[Action::Stripe(Striping {
                    policy: ClassPolicy::Duplicate,
                    nics: NicSet::ALL,
                })],
            )
            .when(Condition::loss_above(NicSet::ALL, 10, 5)),
        );
        let mut set = RuleSet::build(
            &rules,
            &RuleContext::new(NicSet(0b11)),
            &RuleSetConfig::default(),
        )
        .expect("valid set");
        let keys: Vec<RuleKey> = (0..4096).map(|i| key(i * 7)).collect();
        let mut caches = vec![CachedRule::STALE; keys.len()];
        let mut live = LiveState::new();
        live.set(NicId(0), LinkSnapshot::UP);

        let control = allocation_counter::measure(|| {
            std::hint::black_box(Vec::<u8>::with_capacity(8));
        });
        assert_eq!(control.count_total, 1);

        let mut hits = 0u64;
        let mut duplicated = 0u64;
        let info = allocation_counter::measure(|| {
            for round in 0..6u64 {
                // Flip the condition every other round: the version changes and every
                // cached lookup is redone (slow path) on its next packet.
                let loss = if round % 2 == 0 { 0 } else { 50 };
                live.set(
                    NicId(1),
                    LinkSnapshot {
                        loss_permille: loss,
                        ..LinkSnapshot::UP
                    },
                );
                set.update_conditions(&live, Instant::from_millis(round));
                std::hint::black_box(set.poll_condition_timeout());
                for (k, c) in keys.iter().zip(caches.iter_mut()) {
                    // Slow path.
                    hits += u64::from(set.lookup(k).is_some());
                    // Fast path.
                    let a = set.cached_actions(c, k);
                    duplicated += u64::from(a.striping.is_some());
                }
            }
        });
        assert_eq!(info.count_total, 0, "rule lookup allocated: {info:?}");
        assert!(hits > 1000, "{hits}");
        assert!(
            duplicated > 1000,
            "the conditional rule applied: {duplicated}"
        );
    }
}
