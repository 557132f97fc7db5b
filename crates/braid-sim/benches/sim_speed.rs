//! Wall-clock speed of the simulator: 1 s of virtual time on 3 links × 300 Mbit/s, saturated
//! with 1500-byte packets in both directions by two trivial hosts.
//!
//! Run: `cargo bench -p braid-sim --bench sim_speed`. Prints wall time, the speed-up over real
//! time and events per second; it measures the simulator, not braid's engine.

use core::time::Duration;

use braid_sim::testing::{CounterHost, SendMode};
use braid_sim::{Direction, LinkConfig, Sim, SimConfig};

fn main() {
    const RUNS: u32 = 5;
    let mut best = Duration::MAX;
    let mut events = 0;
    let mut delivered = 0;
    let mut util = 1.0_f64;
    for _ in 0..RUNS {
        let links = vec![LinkConfig::new(300_000_000, Duration::from_millis(1)); 3];
        let host = || CounterHost::new(vec![0, 1, 2], 1500, SendMode::Greedy { window: 8 });
        let mut sim = Sim::new(SimConfig::new(1, links), host(), host()).expect("valid config");
        let start = std::time::Instant::now();
        sim.run_for(Duration::from_secs(1));
        best = best.min(start.elapsed());
        events = sim.events_processed();
        delivered = sim.a().rx_packets + sim.b().rx_packets;
        for l in 0..3 {
            for d in Direction::BOTH {
                util = util.min(sim.utilisation(l, d));
            }
        }
    }
    println!(
        "sim_speed: 1 s simulated, 3 links x 300 Mbit/s full duplex, 1500 B packets: \
         best of {RUNS} = {:.1} ms wall ({:.0}x real time), {events} events ({:.1} M events/s), \
         {delivered} packets delivered, min utilisation {:.4}",
        best.as_secs_f64() * 1e3,
        1.0 / best.as_secs_f64(),
        events as f64 / best.as_secs_f64() / 1e6,
        util
    );
}
