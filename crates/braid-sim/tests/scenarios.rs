//! Scenario tests: two braid engines over braid-sim, asserting on delivered bytes (the sink
//! checks every packet byte for byte, in order) and on counters.

#[cfg(test)]
mod tests {
    use braid_core::DropReason;
    use braid_sim::scenario::{Report, Scenario, run};

    fn run_toml(toml: &str) -> Report {
        let s = Scenario::from_toml(toml).unwrap_or_else(|e| panic!("scenario: {e:#?}"));
        run(&s, |_| {}).expect("run")
    }

    fn assert_clean(r: &Report) {
        for f in &r.flows {
            assert_eq!(f.corrupt, 0, "{}: corrupt packets\n{r}", f.name);
            assert_eq!(f.out_of_order, 0, "{}: out of order\n{r}", f.name);
        }
    }

    /// UDP/IPv4 (28) + braid header (32) in front of every piece.
    const OVERHEAD: f64 = 60.0;

    #[test]
    fn bulk_over_three_unequal_links_reaches_95_percent_of_the_sum() {
        let r = run_toml(
            r#"
            name = "bulk 100/200/300"
            duration_ms = 1500
            [[links]]
            name = "l100"
            rate_mbps = 100
            delay_ms = 5
            [[links]]
            name = "l200"
            rate_mbps = 200
            delay_ms = 2
            [[links]]
            name = "l300"
            rate_mbps = 300
            delay_ms = 1
            [[flows]]
            name = "bulk"
            policy = "stripe"
            traffic = "bulk"
            packet_bytes = 1400
            window_kib = 256
            "#,
        );
        assert_clean(&r);
        let bulk = r.flow("bulk").unwrap();
        assert_eq!(bulk.missing, 0, "complete\n{r}");
        // What was sent but not delivered is only what sat in braid's window, on the wires (at
        // most 5 ms) or in the receiver's reorder hold (at most 5 ms here) when the run stopped.
        let window_packets = 256 * 1024 / 1400;
        let in_flight_packets = 600e6 / 8.0 / 1400.0 * 0.010;
        assert!(
            (bulk.sent - bulk.delivered) as f64 <= window_packets as f64 + in_flight_packets,
            "{r}"
        );
        // What the links can carry of 1400-byte packets after braid's and UDP/IP's headers.
        let ceiling = 600.0 * 1400.0 / (1400.0 + OVERHEAD);
        assert!(
            bulk.goodput_mbps >= 0.95 * ceiling,
            "goodput {:.1} Mbit/s < 95 % of {ceiling:.1}\n{r}",
            bulk.goodput_mbps
        );
        assert_eq!(r.drops.total(), 0, "{r}");
    }

    fn jumbo(policy: &str) -> Report {
        run_toml(&format!(
            r#"
            name = "jumbo {policy}"
            duration_ms = 1000
            vnic_mtu = 9000
            [[links]]
            name = "a"
            rate_mbps = 10
            delay_ms = 0.1
            [[links]]
            name = "b"
            rate_mbps = 10
            delay_ms = 0.1
            [[links]]
            name = "c"
            rate_mbps = 10
            delay_ms = 0.1
            [[flows]]
            name = "jumbo"
            policy = "{policy}"
            traffic = "cbr"
            packet_bytes = 9000
            rate_mbps = 3
            "#
        ))
    }

    #[test]
    fn jumbo_packets_split_across_slow_links_land_close_to_three_times_sooner() {
        let whole = jumbo("pin");
        let split = jumbo("stripe");
        assert_clean(&whole);
        assert_clean(&split);
        let (w, s) = (whole.flow("jumbo").unwrap(), split.flow("jumbo").unwrap());
        assert_eq!(w.missing + s.missing, 0);
        assert!(
            split.sender.tx_split_count > 0,
            "the scheduler split\n{split}"
        );
        assert_eq!(
            whole.sender.tx_split_count, 0,
            "pinned packets are not split\n{whole}"
        );
        let ratio = w.latency.p50_us / s.latency.p50_us;
        assert!(
            ratio >= 2.6,
            "split p50 {:.0} us vs whole {:.0} us: ratio {ratio:.2} (want close to 3)\n{whole}\n{split}",
            s.latency.p50_us,
            w.latency.p50_us
        );
    }

    #[test]
    fn duplicated_flow_loses_nothing_when_a_link_fails_and_tracks_the_better_link() {
        let r = run_toml(
            r#"
            name = "A/B feed"
            duration_ms = 2000
            [[links]]
            name = "fast"
            rate_mbps = 100
            delay_ms = 1
            events = [ { at_ms = 800, action = "down" } ]
            [[links]]
            name = "slow"
            rate_mbps = 100
            delay_ms = 3
            events = [ { at_ms = 300, action = "jitter", jitter_ms = 2 } ]
            [[flows]]
            name = "md"
            policy = "duplicate"
            traffic = "cbr"
            packet_bytes = 200
            rate_mbps = 2
            "#,
        );
        assert_clean(&r);
        let md = r.flow("md").unwrap();
        assert_eq!(md.missing, 0, "zero loss\n{r}");
        // All but the few still in flight at the end (5 ms at 1250 packets/s) were delivered.
        assert!(
            md.sent - md.delivered <= 10,
            "all but the last in flight delivered\n{r}"
        );
        assert!(
            r.drops.get(DropReason::DuplicateDatagram) > 0,
            "copies were deduplicated\n{r}"
        );
        // Until 800 ms (40 % of the run) the fast link (1 ms) wins; after it, the jittery 3 ms link
        // carries the feed alone. p50 tracks the fast link; p99 is bounded by the slow link's
        // worst case (3 + 2 ms), never worse.
        assert!(
            md.latency.p50_us < 3_100.0,
            "p50 {} us\n{r}",
            md.latency.p50_us
        );
        assert!(
            md.latency.max_us < 5_500.0,
            "max {} us\n{r}",
            md.latency.max_us
        );
    }

    #[test]
    fn striped_flow_survives_a_link_failure_detected_within_30_ms() {
        let r = run_toml(
            r#"
            name = "stripe failover"
            duration_ms = 1500
            authenticate = true
            [[links]]
            name = "l0"
            rate_mbps = 100
            delay_ms = 2
            [[links]]
            name = "l1"
            rate_mbps = 100
            delay_ms = 3
            events = [ { at_ms = 500, action = "down" } ]
            [[links]]
            name = "l2"
            rate_mbps = 100
            delay_ms = 1
            [[flows]]
            name = "bulk"
            policy = "stripe"
            traffic = "bulk"
            packet_bytes = 1400
            window_kib = 128
            "#,
        );
        assert_clean(&r);
        let (at, detected) = r.links[1].detections[0];
        assert_eq!(at, 500.0);
        let ms = detected.expect("failure detected");
        assert!(ms <= 30.0, "detected after {ms} ms\n{r}");
        let bulk = r.flow("bulk").unwrap();
        // Packets in flight on the failed link are lost (gaps); everything after the detection
        // moves to the two others, which stay full.
        assert!(r.links[1].stats.lost_down > 0);
        let after_ceiling = 200.0 * 1400.0 / (1400.0 + OVERHEAD);
        assert!(bulk.goodput_mbps > 0.9 * after_ceiling, "{r}");
        assert!(
            bulk.missing <= r.links[1].stats.lost_down,
            "only packets lost on the wire are missing\n{r}"
        );
        // The flows moved: after the failure the dead link was offered only what was sent
        // before detection (≤ 30 ms of 100 Mbit/s in 1460-byte packets, plus 3 ms in flight)
        // and the probes that keep looking for it (one per 5 ms for 1 s).
        let before_detection = 100e6 / 8.0 / 1460.0 * 0.033;
        let probes = 1000.0 / 5.0 + 1.0;
        assert!(
            (r.links[1].stats.lost_down as f64) <= before_detection + probes,
            "lost on the dead link: {}\n{r}",
            r.links[1].stats.lost_down
        );
    }

    #[test]
    fn default_scenario_runs_clean() {
        let s = Scenario::default_scenario();
        let r = run(&s, |_| {}).unwrap();
        assert_clean(&r);
        let md = r.flow("market-data").unwrap();
        assert_eq!(md.missing, 0, "{r}");
        let text = r.to_string();
        for needle in [
            "links",
            "flows",
            "p99",
            "drops by reason",
            "failure detected",
        ] {
            assert!(text.contains(needle), "report shows {needle}:\n{text}");
        }
    }

    #[test]
    fn bad_scenarios_name_the_field() {
        let err = Scenario::from_toml(
            r#"
            name = "x"
            duration_ms = 100
            [[links]]
            name = "l"
            rate_mbps = 0
            [[flows]]
            name = "f"
            policy = "stripe"
            traffic = "bulk"
            packet_bytes = 1000
            "#,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "links[0].rate_mbps: must be > 0 and at most 1000000"
        );
        let err = Scenario::from_toml(
            "name = \"x\"\nduration_ms = 100\nlinks = []\nflows = []\nbogus = 1\n",
        )
        .unwrap_err();
        let msg = format!("{:#}", anyhow_like(&err));
        assert!(msg.contains("bogus"), "{msg}");
        let err = Scenario::from_toml(
            r#"
            name = "x"
            duration_ms = 100
            [[links]]
            name = "l"
            rate_mbps = 10
            [[flows]]
            name = "f"
            policy = "sprinkle"
            traffic = "bulk"
            packet_bytes = 1000
            "#,
        )
        .unwrap_err();
        let msg = anyhow_like(&err);
        assert!(msg.contains("policy") && msg.contains("sprinkle"), "{msg}");
    }

    /// The error and its sources, as the binary prints them.
    fn anyhow_like(e: &dyn std::error::Error) -> String {
        let mut s = e.to_string();
        let mut cur = e.source();
        while let Some(c) = cur {
            s.push_str(": ");
            s.push_str(&c.to_string());
            cur = c.source();
        }
        s
    }

    #[test]
    fn flow_controller_admits_pins_and_rejects_when_links_are_full() {
        let flow = |name: &str, admission: &str| {
            format!(
                r#"
                [[flows]]
                name = "{name}"
                policy = "pin"
                traffic = "cbr"
                packet_bytes = 1000
                rate_mbps = 40
                demand_mbps = 60
                admission = "{admission}"
                "#
            )
        };
        let r = run_toml(&format!(
            r#"
            name = "admission"
            duration_ms = 500
            [[links]]
            name = "a"
            rate_mbps = 100
            delay_ms = 1
            [[links]]
            name = "b"
            rate_mbps = 100
            delay_ms = 1
            {}{}{}{}
            "#,
            flow("f1", "reject"),
            flow("f2", "reject"),
            flow("f3", "reject"),
            flow("f4", "queue")
        ));
        assert_clean(&r);
        // Two flows of 60 Mbit/s fit on two 100 Mbit/s links, one per link; the third and
        // fourth find no room: one is refused, one waits in the controller's queue.
        let (f1, f2) = (r.flow("f1").unwrap(), r.flow("f2").unwrap());
        assert!(
            f1.delivered > 0 && f2.delivered > 0 && f1.missing + f2.missing == 0,
            "{r}"
        );
        assert_eq!(r.flow("f3").unwrap().delivered, 0, "{r}");
        assert_eq!(r.flow("f4").unwrap().delivered, 0, "{r}");
        assert!(r.drops.get(DropReason::FlowRejected) > 0, "{r}");
        assert!(r.drops.get(DropReason::FlowQueued) > 0, "{r}");
        // Pinned: each admitted flow used one link only.
        assert!(
            r.links
                .iter()
                .all(|l| l.utilisation > 0.3 && l.utilisation < 0.5),
            "{r}"
        );
    }

    #[test]
    fn example_scenarios_parse_and_run_clean() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/scenarios");
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).expect("examples/scenarios exists") {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let mut s = Scenario::from_toml(&text)
                .unwrap_or_else(|e| panic!("{}: {}", path.display(), anyhow_like(&e)));
            // A short run is enough to show the file drives the engines.
            s.duration_ms = s.duration_ms.min(300.0);
            for l in &mut s.links {
                l.events.retain(|e| e.at_ms <= 300.0);
            }
            let r = run(&s, |_| {}).unwrap();
            assert_clean(&r);
            assert!(
                r.flows.iter().all(|f| f.delivered > 0),
                "{}\n{r}",
                path.display()
            );
            count += 1;
        }
        assert!(count >= 3, "found {count} example scenarios");
    }
}
