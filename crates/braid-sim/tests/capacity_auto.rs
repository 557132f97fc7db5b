//! Capacity `auto` end to end: two real engines over braid-sim links of 100, 200 and
//! 300 Mbit/s, every NIC configured `auto` with a wrong initial guess (1 Gbit/s, or
//! 10 Mbit/s), a greedy striped bulk flow. The estimates must converge to the links' rates and
//! the bulk flow must then fill them; the same scenario with the estimator off (the guess
//! taken as the capacity) must fail the same checks, so the test cannot pass without it.

#[cfg(test)]
mod tests {
    use core::time::Duration;
    use std::fmt::Write;

    use braid_core::{Instant, NicId};
    use braid_sim::Direction;
    use braid_sim::scenario::{Scenario, build};

    const RATES_MBPS: [f64; 3] = [100.0, 200.0, 300.0];
    /// The estimates must be within this of the link rates...
    const TOLERANCE: f64 = 0.20;
    /// ...from this time on (and until the end)...
    const CONVERGED_BY: Duration = Duration::from_secs(3);
    const END: Duration = Duration::from_secs(6);
    /// ...and the bulk goodput from then on at least this fraction of what the links carry.
    const GOODPUT_FRACTION: f64 = 0.90;
    /// IP bytes per packet, and the UDP/IPv4 (28) + braid header (32) in front of each.
    const PACKET_BYTES: f64 = 1400.0;
    const OVERHEAD_BYTES: f64 = 60.0;

    fn scenario(guess_mbps: f64, auto: bool) -> Scenario {
        let mut toml = String::from("name = \"auto capacity\"\nduration_ms = 6000\n");
        for (i, (rate, delay)) in RATES_MBPS.iter().zip([5, 2, 1]).enumerate() {
            let _ = write!(
                toml,
                "[[links]]\nname = \"l{i}\"\nrate_mbps = {rate}\ndelay_ms = {delay}\n\
                 capacity_mbps = {guess_mbps}\ncapacity_auto = {auto}\n"
            );
        }
        toml.push_str(
            "[[flows]]\nname = \"bulk\"\npolicy = \"stripe\"\ntraffic = \"bulk\"\n\
             packet_bytes = 1400\nwindow_kib = 256\n",
        );
        Scenario::from_toml(&toml).unwrap_or_else(|e| panic!("scenario: {e:#?}"))
    }

    /// What a run measured.
    #[derive(Debug)]
    struct Figures {
        /// Per link, the estimate (capacity in force) every 100 ms, Mbit/s.
        trace: Vec<[f64; 3]>,
        /// When each link's estimate last entered the tolerance band for good.
        settled_at: [Option<Duration>; 3],
        /// Bulk goodput from CONVERGED_BY to the end, Mbit/s.
        goodput_mbps: f64,
        /// What the links can carry of 1400-byte packets, Mbit/s.
        ceiling_mbps: f64,
        /// Packets the links tail-dropped from CONVERGED_BY to END, and in all.
        late_queue_drops: u64,
        queue_drops: u64,
    }

    impl Figures {
        /// Whether the run meets the goals; the error says which it missed.
        fn check(&self) -> Result<(), String> {
            for (i, at) in self.settled_at.iter().enumerate() {
                match at {
                    Some(at) if *at <= CONVERGED_BY => {}
                    _ => {
                        return Err(format!(
                            "link {i}: the estimate is not within {TOLERANCE} of \
                             {} Mbit/s from {CONVERGED_BY:?} on (settled at {at:?})",
                            RATES_MBPS[i]
                        ));
                    }
                }
            }
            if self.goodput_mbps < GOODPUT_FRACTION * self.ceiling_mbps {
                return Err(format!(
                    "goodput {:.1} Mbit/s < {GOODPUT_FRACTION} × {:.1}",
                    self.goodput_mbps, self.ceiling_mbps
                ));
            }
            Ok(())
        }
    }

    /// Runs the scenario to `end` (at most END), sampling every 100 ms.
    fn run(guess_mbps: f64, auto: bool, end: Duration) -> Figures {
        let s = scenario(guess_mbps, auto);
        let mut sim = build(&s).expect("build");
        let step = Duration::from_millis(100);
        let mut t = Duration::ZERO;
        let mut trace = Vec::new();
        let mut settled_at = [None; 3];
        let mut bytes_at_converged = 0;
        let mut drops_at_converged = 0;
        let drops = |sim: &braid_sim::Sim<_, _>| -> u64 {
            (0..3)
                .map(|l| sim.link_stats(l, Direction::AToB).queue_drops)
                .sum()
        };
        while t < end {
            t += step;
            sim.run_until(Instant::ZERO + t);
            let engine = &sim.a().engine;
            let mut row = [0.0; 3];
            for (i, rate) in RATES_MBPS.iter().enumerate() {
                let nic = NicId(i as u8);
                let capacity = engine.nic_stats(nic).unwrap().capacity_bps as f64 / 1e6;
                row[i] = capacity;
                if auto {
                    // The capacity in force follows the estimate to within 1/32.
                    let est = engine.capacity_estimate(nic).unwrap().estimate_bps;
                    let cap = engine.nic_stats(nic).unwrap().capacity_bps;
                    assert!(cap.abs_diff(est) <= cap / 32, "{cap} vs {est}");
                }
                let ok = (capacity - rate).abs() <= rate * TOLERANCE;
                match (ok, settled_at[i]) {
                    (true, None) => settled_at[i] = Some(t),
                    (false, _) => settled_at[i] = None,
                    _ => {}
                }
            }
            trace.push(row);
            if t == CONVERGED_BY {
                bytes_at_converged = sim.b().sink_totals().bytes;
                drops_at_converged = drops(&sim);
            }
        }
        let bytes = sim.b().sink_totals().bytes - bytes_at_converged;
        let secs = (end - CONVERGED_BY).as_secs_f64();
        let sum: f64 = RATES_MBPS.iter().sum();
        Figures {
            trace,
            settled_at,
            goodput_mbps: bytes as f64 * 8.0 / secs / 1e6,
            ceiling_mbps: sum * PACKET_BYTES / (PACKET_BYTES + OVERHEAD_BYTES),
            late_queue_drops: drops(&sim) - drops_at_converged,
            queue_drops: drops(&sim),
        }
    }

    fn report(f: &Figures) -> String {
        let mut s = format!(
            "goodput {:.1} of {:.1} Mbit/s, settled at {:?}, queue drops {} ({} after \
             {CONVERGED_BY:?})\n",
            f.goodput_mbps, f.ceiling_mbps, f.settled_at, f.queue_drops, f.late_queue_drops
        );
        for (k, row) in f.trace.iter().enumerate() {
            let _ = writeln!(
                s,
                "{:>5} ms  {:>7.1} {:>7.1} {:>7.1}",
                (k + 1) * 100,
                row[0],
                row[1],
                row[2]
            );
        }
        s
    }

    fn converges_from(guess_mbps: f64) {
        let f = run(guess_mbps, true, END);
        println!("guess {guess_mbps} Mbit/s, auto:\n{}", report(&f));
        if let Err(e) = f.check() {
            panic!("{e}\n{}", report(&f));
        }
        // After convergence the links are not overrun: the probes upward add at most a
        // quarter of a round's traffic to a 1.5 MB queue.
        assert_eq!(f.late_queue_drops, 0, "{}", report(&f));
        // The same links with the estimator off (the guess is the capacity) miss the goals.
        // (A shorter run: the estimate cannot move, and a guess too high costs the simulator
        // millions of packets.)
        let off = run(guess_mbps, false, CONVERGED_BY + Duration::from_millis(500));
        println!(
            "guess {guess_mbps} Mbit/s, estimator off:\n{}",
            report(&off)
        );
        assert!(
            off.check().is_err(),
            "the checks pass without the estimator\n{}",
            report(&off)
        );
    }

    #[test]
    fn auto_capacity_converges_from_a_guess_of_1_gbit() {
        converges_from(1000.0);
    }

    #[test]
    fn auto_capacity_converges_from_a_guess_of_10_mbit() {
        converges_from(10.0);
    }
}
