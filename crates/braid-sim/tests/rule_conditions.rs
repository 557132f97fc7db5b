//! A rule with a condition on live link state, end to end: two real engines over braid-sim
//! links, a latency-critical feed striped over two links, and the rule "while loss on the
//! flow's links exceeds 1 % (until it is at most 0.5 %, held at least 500 ms), duplicate
//! this class". Link 0 loses 5 % of its packets from 1 s to 3 s.
//!
//! The rule must switch on by itself soon after the loss starts (the duplicate counters
//! move and, from then on, the feed loses nothing although link 0 keeps losing), and switch
//! off by itself once the loss has stopped and the hold has passed, exactly once each way
//! (no flapping). The same run with no rule, and with the rule's condition removed (always
//! on), must fail the same checks, so the test cannot pass without the condition logic.

#[cfg(test)]
mod tests {
    use core::time::Duration;
    use std::net::{IpAddr, Ipv4Addr};

    use braid_core::engine::ClassPolicy;
    use braid_core::rules::{
        Action, Condition, IpPrefix, PortRange, Rule, RuleIndex, RuleMatch, Striping,
    };
    use braid_core::{DropReason, Instant, NicSet};
    use braid_sim::Direction;
    use braid_sim::scenario::{Scenario, ScenarioHost, flow_port};
    use braid_sim::{Sim, SimConfig};

    const LOSS_FROM: Duration = Duration::from_millis(1000);
    const LOSS_TO: Duration = Duration::from_millis(3000);
    const END: Duration = Duration::from_millis(4500);
    const HOLD: Duration = Duration::from_millis(500);
    /// The rule must be on this soon after the loss starts (the probes' loss window is 64
    /// probes of 5 ms: one lost probe already reads 1.6 %).
    const ON_WITHIN: Duration = Duration::from_millis(300);
    /// Packets sent before the switch that may still be lost or late (in flight, in the
    /// reorder hold).
    const SETTLE: Duration = Duration::from_millis(100);

    fn scenario() -> Scenario {
        let toml = format!(
            "name = \"duplicate while lossy\"\nseed = 7\nduration_ms = {}\n\
             [[links]]\nname = \"l0\"\nrate_mbps = 100\ndelay_ms = 2\n\
             [[links.events]]\nat_ms = {}\naction = \"loss\"\nloss = 0.05\n\
             [[links.events]]\nat_ms = {}\naction = \"loss\"\nloss = 0.0\n\
             [[links]]\nname = \"l1\"\nrate_mbps = 100\ndelay_ms = 3\n\
             [[flows]]\nname = \"feed\"\npolicy = \"stripe\"\ntraffic = \"cbr\"\n\
             packet_bytes = 400\nrate_mbps = 8\n",
            END.as_millis(),
            LOSS_FROM.as_millis(),
            LOSS_TO.as_millis()
        );
        Scenario::from_toml(&toml).unwrap_or_else(|e| panic!("scenario: {e:#?}"))
    }

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Variant {
        /// The rule with its condition (what is tested).
        Conditional,
        /// No rule (control).
        NoRule,
        /// The rule without its condition: always on (control).
        AlwaysOn,
    }

    /// "Duplicate the feed's class", with the condition unless `AlwaysOn`.
    fn rule(variant: Variant) -> Vec<Rule> {
        let feed = RuleMatch {
            dst: Some(IpPrefix::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).expect("prefix")),
            protocol: Some(17),
            dst_ports: Some(PortRange::single(flow_port(0))),
            ..RuleMatch::ANY
        };
        let dup = Action::Stripe(Striping {
            policy: ClassPolicy::Duplicate,
            nics: NicSet::ALL,
        });
        let r = Rule::new("duplicate-while-lossy", 1, feed, &[dup]);
        match variant {
            // On at 1 % (10 ‰) of probe loss on any of the links, off at 0.5 % (5 ‰).
            Variant::Conditional => {
                vec![r.when(Condition::loss_above(NicSet::ALL, 10, 5).with_hold(HOLD))]
            }
            Variant::AlwaysOn => vec![r],
            Variant::NoRule => Vec::new(),
        }
    }

    fn build(variant: Variant) -> Sim<ScenarioHost, ScenarioHost> {
        let s = scenario();
        let mut cfg = s.engine_config();
        cfg.tx_rules = rule(variant);
        let a = ScenarioHost::new_source(&s, cfg.clone()).expect("host a");
        let b = ScenarioHost::new_sink(&s, cfg).expect("host b");
        Sim::new(SimConfig::new(s.seed, s.link_configs()), a, b).expect("sim")
    }

    /// What a run measured, sampled every 5 ms.
    #[derive(Debug)]
    struct Figures {
        /// When the rule was seen on, and off again (first time each).
        on_at: Option<Duration>,
        off_at: Option<Duration>,
        /// On/off transitions seen in the samples, and condition flips the engine counted.
        transitions: u32,
        flips: u64,
        /// Duplicated packets sent before the loss, while the rule was on, after it was off.
        dup_before: u64,
        dup_while_on: u64,
        dup_after: u64,
        /// Feed packets missing at the sink from `on_at + SETTLE` to `off_at`.
        missing_while_on: u64,
        /// Feed packets sent in the same interval.
        sent_while_on: u64,
        /// Packets link 0 lost (a → b) during the run.
        link0_lost: u64,
        /// Copies the sink dropped as duplicates.
        sink_duplicates: u64,
    }

    impl Figures {
        fn check(&self) -> Result<(), String> {
            let on = self.on_at.ok_or("the rule never switched on")?;
            if on < LOSS_FROM || on > LOSS_FROM + ON_WITHIN {
                return Err(format!(
                    "switched on at {on:?}, not within {ON_WITHIN:?} of the loss"
                ));
            }
            let off = self.off_at.ok_or("the rule never switched off")?;
            if off < LOSS_TO || off < on + HOLD {
                return Err(format!(
                    "switched off at {off:?}: before the loss ended or the hold"
                ));
            }
            if off > LOSS_TO + Duration::from_millis(800) {
                return Err(format!("switched off late, at {off:?}"));
            }
            if self.transitions != 2 || self.flips != 2 {
                return Err(format!(
                    "flapped: {} transitions seen, {} flips counted",
                    self.transitions, self.flips
                ));
            }
            if self.dup_before != 0 || self.dup_after != 0 {
                return Err(format!(
                    "duplicated outside the lossy period: {} before, {} after",
                    self.dup_before, self.dup_after
                ));
            }
            if self.dup_while_on + 10 < self.sent_while_on {
                return Err(format!(
                    "{} of {} packets duplicated while on",
                    self.dup_while_on, self.sent_while_on
                ));
            }
            if self.missing_while_on != 0 {
                return Err(format!("{} packets lost while on", self.missing_while_on));
            }
            Ok(())
        }
    }

    fn run(variant: Variant) -> Figures {
        let mut sim = build(variant);
        let step = Duration::from_millis(5);
        let mut t = Duration::ZERO;
        let mut was_on = false;
        let mut f = Figures {
            on_at: None,
            off_at: None,
            transitions: 0,
            flips: 0,
            dup_before: 0,
            dup_while_on: 0,
            dup_after: 0,
            missing_while_on: 0,
            sent_while_on: 0,
            link0_lost: 0,
            sink_duplicates: 0,
        };
        let (mut dup_at_on, mut dup_at_off) = (0, 0);
        let (mut missing_at, mut sent_at) = (None, 0);
        while t < END {
            t += step;
            sim.run_until(Instant::ZERO + t);
            let a = &sim.a().engine;
            let dup = a.stats().tx_duplicate_count;
            if t <= LOSS_FROM {
                f.dup_before = dup;
            }
            let on = a.tx_rule_set().len() == 1 && a.tx_rule_set().is_active(RuleIndex(0));
            let on = on && variant != Variant::NoRule;
            if on != was_on {
                f.transitions += 1;
                was_on = on;
                if on && f.on_at.is_none() {
                    f.on_at = Some(t);
                    dup_at_on = dup;
                } else if !on && f.off_at.is_none() {
                    f.off_at = Some(t);
                    dup_at_off = dup;
                    if let Some(m) = missing_at {
                        f.missing_while_on = sim.b().flows[0].missing - m;
                        f.sent_while_on = sim.a().flows[0].sent - sent_at;
                    }
                }
            }
            if f.on_at.is_some_and(|on| t == on + SETTLE) && f.off_at.is_none() {
                missing_at = Some(sim.b().flows[0].missing);
                sent_at = sim.a().flows[0].sent;
                // The duplicated packets are counted from here too.
                dup_at_on = dup;
            }
        }
        let a = &sim.a().engine;
        let dup = a.stats().tx_duplicate_count;
        f.flips = a.rule_stats().condition_changes_count;
        if f.off_at.is_some() {
            f.dup_while_on = dup_at_off - dup_at_on;
            f.dup_after = dup - dup_at_off;
        } else if f.on_at.is_some() {
            f.dup_while_on = dup - dup_at_on;
        }
        f.link0_lost = sim.link_stats(0, Direction::AToB).lost_random;
        f.sink_duplicates = sim
            .b()
            .engine
            .stats()
            .drops
            .get(DropReason::DuplicateDatagram);
        f
    }

    #[test]
    fn a_loss_condition_duplicates_a_class_while_a_link_is_lossy() {
        let f = run(Variant::Conditional);
        println!("conditional: {f:?}");
        if let Err(e) = f.check() {
            panic!("{e}\n{f:#?}");
        }
        assert!(
            f.link0_lost > 100,
            "link 0 lost packets during the run: {f:?}"
        );
        assert!(
            f.sink_duplicates >= f.dup_while_on / 2,
            "the sink dropped the second copies: {f:?}"
        );
        // Controls: the same run without the rule, and with the rule always on.
        for control in [Variant::NoRule, Variant::AlwaysOn] {
            let c = run(control);
            println!("{control:?}: {c:?}");
            assert!(
                c.check().is_err(),
                "{control:?} passes the checks: the test would not catch a broken \
                 condition\n{c:#?}"
            );
        }
    }
}
