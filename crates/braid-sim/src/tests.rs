//! Behaviour tests of the simulator as a whole, driven by [`CounterHost`]s and a few
//! misbehaving hosts: bandwidth, exact delay, jitter without reordering, loss, duplication,
//! reordering, MTU, down/up schedules, tail drop, determinism, loop guards and speed.

use core::time::Duration;
use std::collections::HashMap;

use braid_core::Instant;

use crate::testing::{CounterHost, SendMode};
use crate::{Direction, Host, LinkAction, LinkConfig, LinkEvent, Side, Sim, SimConfig, SimError};

const MBIT: u64 = 1_000_000;

fn link(rate_bps: u64, delay: Duration) -> LinkConfig {
    LinkConfig::new(rate_bps, delay)
}

fn sim(
    seed: u64,
    links: Vec<LinkConfig>,
    a: CounterHost,
    b: CounterHost,
) -> Sim<CounterHost, CounterHost> {
    Sim::new(SimConfig::new(seed, links), a, b).expect("valid config")
}

fn greedy(links: Vec<usize>, bytes: usize) -> CounterHost {
    CounterHost::new(links, bytes, SendMode::Greedy { window: 8 })
}

fn paced(links: Vec<usize>, bytes: usize, interval: Duration) -> CounterHost {
    CounterHost::new(links, bytes, SendMode::Paced { interval })
}

#[test]
fn bandwidth_matches_rate_minus_overhead() {
    let mut s = sim(
        1,
        vec![link(100 * MBIT, Duration::from_millis(1))],
        greedy(vec![0], 1500),
        CounterHost::sink(),
    );
    s.run_for(Duration::from_millis(1001));
    // Bytes that arrived over [1 ms, 1001 ms): one second of transmission.
    let st = *s.link_stats(0, Direction::AToB);
    let goodput_bps = st.bytes_delivered as f64 * 8.0;
    let expected = 100e6 * 1500.0 / 1528.0;
    assert!(
        (goodput_bps - expected).abs() / expected < 0.01,
        "goodput {goodput_bps} expected {expected}"
    );
    assert_eq!(st.queue_drops, 0);
    assert_eq!(s.b().rx_bytes, st.bytes_delivered);
    let util = s.utilisation(0, Direction::AToB);
    assert!(util > 0.99, "utilisation {util}");
    assert_eq!(s.utilisation(0, Direction::BToA), 0.0);
}

#[test]
fn arrival_is_serialisation_plus_delay_exactly() {
    let delay = Duration::from_millis(5);
    let mut a = CounterHost::sink();
    a.blast(0, 2);
    let mut s = sim(
        1,
        vec![link(100 * MBIT, delay)],
        a,
        CounterHost::sink().with_log(),
    );
    s.run_for(Duration::from_millis(10));
    let log = s.b().arrivals();
    assert_eq!(log.len(), 2);
    // A sink's packets are 16 bytes: (16 + 28) * 8 bits at 100 Mbit/s = 3,520 ns.
    assert_eq!(log[0].len, 16);
    assert_eq!(log[0].sent_at, Instant::ZERO);
    assert_eq!(log[0].at, Instant::from_nanos(3_520 + 5_000_000));
    // The second waited for the first's transmission.
    assert_eq!(log[1].at, Instant::from_nanos(2 * 3_520 + 5_000_000));
    assert_eq!((log[0].seq, log[1].seq), (0, 1));
}

#[test]
fn arrival_of_full_packet_after_idle_gap() {
    let mut s = sim(
        1,
        vec![link(100 * MBIT, Duration::from_micros(250))],
        CounterHost::new(vec![0], 1000, SendMode::Sink),
        CounterHost::sink().with_log(),
    );
    s.run_until(Instant::from_millis(3));
    s.a_mut().blast(0, 1);
    s.run_for(Duration::from_millis(1));
    let log = s.b().arrivals();
    assert_eq!(log.len(), 1);
    // (1000 + 28) * 8 = 8,224 bits at 100 Mbit/s = 82,240 ns, plus 250 µs.
    assert_eq!(log[0].at, Instant::from_nanos(3_000_000 + 82_240 + 250_000));
    assert_eq!(log[0].sent_at, Instant::from_millis(3));
}

#[test]
fn jitter_without_reorder_keeps_fifo() {
    let mut l = link(1000 * MBIT, Duration::from_millis(1));
    l.jitter = Duration::from_micros(500);
    let mut s = sim(
        7,
        vec![l],
        paced(vec![0], 200, Duration::from_micros(10)).with_limit(20_000),
        CounterHost::sink().with_log(),
    );
    s.run_for(Duration::from_millis(300));
    let b = s.b();
    assert_eq!(b.rx_packets, 20_000);
    assert_eq!(b.rx_out_of_order, 0);
    assert!(
        b.arrivals()
            .windows(2)
            .all(|w| w[0].seq < w[1].seq && w[0].at <= w[1].at)
    );
    // Jitter did act: latency spread well beyond serialisation alone.
    let lat = b.latency();
    let spread = lat.quantile(1.0) - lat.quantile(0.0);
    assert!(spread > Duration::from_micros(500), "spread {spread:?}");
    assert!(lat.quantile(0.0) >= Duration::from_micros(500));
    assert_eq!(s.link_stats(0, Direction::AToB).reordered, 0);
}

#[test]
fn loss_rate_matches_over_100k_packets() {
    let mut l = link(1000 * MBIT, Duration::from_micros(100));
    l.loss = 0.05;
    let mut s = sim(
        42,
        vec![l],
        greedy(vec![0], 100).with_limit(100_000),
        CounterHost::sink(),
    );
    s.run_for(Duration::from_secs(1));
    let st = *s.link_stats(0, Direction::AToB);
    assert_eq!(st.packets_offered, 100_000);
    assert_eq!(st.packets_sent, 100_000);
    let rate = st.lost_random as f64 / st.packets_sent as f64;
    // σ = sqrt(0.05 · 0.95 / 1e5) ≈ 0.0007.
    assert!((rate - 0.05).abs() < 0.003, "loss rate {rate}");
    assert_eq!(st.delivered + st.lost_random, st.packets_sent);
    assert_eq!(s.b().rx_packets, st.delivered);
}

#[test]
fn duplication_delivers_copies() {
    let mut l = link(1000 * MBIT, Duration::from_micros(100));
    l.duplicate = 0.1;
    let mut s = sim(
        3,
        vec![l],
        greedy(vec![0], 100).with_limit(20_000),
        CounterHost::sink().with_log(),
    );
    s.run_for(Duration::from_secs(1));
    let st = *s.link_stats(0, Direction::AToB);
    let rate = st.duplicated as f64 / 20_000.0;
    assert!((rate - 0.1).abs() < 0.01, "duplicate rate {rate}");
    assert_eq!(st.delivered, 20_000 + st.duplicated);
    let mut seen: HashMap<u64, u32> = HashMap::new();
    for a in s.b().arrivals() {
        *seen.entry(a.seq).or_default() += 1;
    }
    assert_eq!(seen.len(), 20_000);
    assert_eq!(
        seen.values().filter(|&&n| n == 2).count() as u64,
        st.duplicated
    );
    assert!(seen.values().all(|&n| n <= 2));
}

#[test]
fn reorder_holds_packets_back() {
    let mut l = link(1000 * MBIT, Duration::from_micros(100));
    l.reorder = 0.05;
    l.reorder_delay = Duration::from_micros(50);
    let mut s = sim(
        5,
        vec![l],
        paced(vec![0], 200, Duration::from_micros(10)).with_limit(20_000),
        CounterHost::sink().with_log(),
    );
    s.run_for(Duration::from_millis(300));
    let st = *s.link_stats(0, Direction::AToB);
    let rate = st.reordered as f64 / 20_000.0;
    assert!((rate - 0.05).abs() < 0.01, "reorder rate {rate}");
    assert_eq!(s.b().rx_packets, 20_000, "reordering loses nothing");
    // A packet held back 50 µs is overtaken by the ones sent 10 µs after it: each arrives
    // after a higher sequence number.
    assert_eq!(s.b().rx_out_of_order, st.reordered);
    let late = s
        .b()
        .arrivals()
        .iter()
        .filter(|a| a.at - a.sent_at >= Duration::from_micros(150))
        .count() as u64;
    assert_eq!(late, st.reordered);
}

#[test]
fn mtu_drops_larger_packets() {
    let mut l = link(100 * MBIT, Duration::ZERO);
    l.mtu = 1000;
    let mut a = CounterHost::new(vec![0], 1001, SendMode::Sink);
    a.blast(0, 10);
    let mut s = sim(1, vec![l.clone()], a, CounterHost::sink());
    s.run_for(Duration::from_millis(10));
    let st = *s.link_stats(0, Direction::AToB);
    assert_eq!(
        (st.packets_offered, st.mtu_drops, st.delivered),
        (10, 10, 0)
    );

    let mut a = CounterHost::new(vec![0], 1000, SendMode::Sink);
    a.blast(0, 10);
    let mut s = sim(1, vec![l], a, CounterHost::sink());
    s.run_for(Duration::from_millis(10));
    let st = *s.link_stats(0, Direction::AToB);
    assert_eq!(
        (st.mtu_drops, st.delivered, st.bytes_delivered),
        (0, 10, 10_000)
    );
}

#[test]
fn queue_tail_drop() {
    let mut l = link(10 * MBIT, Duration::ZERO);
    l.queue_bytes = 10_000;
    let mut a = CounterHost::new(vec![0], 1000, SendMode::Sink);
    a.blast(0, 50);
    let mut s = sim(1, vec![l], a, CounterHost::sink());
    s.run_for(Duration::from_millis(100));
    let st = *s.link_stats(0, Direction::AToB);
    // One on the wire, ten queued, the rest dropped.
    assert_eq!(st.packets_offered, 50);
    assert_eq!(st.queue_drops, 39);
    assert_eq!(st.delivered, 11);
    assert_eq!(st.queue_high_water_bytes, 10_000);
    assert_eq!(s.queued_bytes(0, Direction::AToB), 0);
}

#[test]
fn down_loses_everything_in_flight_and_up_resumes() {
    let mut l = link(100 * MBIT, Duration::from_millis(10));
    l.events = vec![
        LinkEvent::new(Duration::from_millis(100), LinkAction::Down),
        LinkEvent::new(Duration::from_millis(200), LinkAction::Up),
    ];
    let mut s = sim(
        1,
        vec![l],
        greedy(vec![0], 1500),
        CounterHost::sink().with_log(),
    );
    s.run_until(Instant::from_millis(150));
    assert!(!s.link_is_up(0, Direction::AToB));
    assert!(!s.link_is_up(0, Direction::BToA));
    let at_down = *s.link_stats(0, Direction::AToB);
    // ~10 ms of packets propagating + the queue + the one on the wire were lost.
    assert!(at_down.lost_down > 70, "{at_down:?}");
    assert_eq!(s.in_flight(0, Direction::AToB), 0);
    // Nothing arrives between Down and Up, though packets were in flight at Down.
    s.run_until(Instant::from_millis(300));
    let log = s.b().arrivals();
    assert!(
        log.iter()
            .all(|a| a.at <= Instant::from_millis(100) || a.at >= Instant::from_millis(200))
    );
    let after_up = log
        .iter()
        .filter(|a| a.at >= Instant::from_millis(200))
        .count();
    // Up at 200 ms + 10 ms delay: 90 ms of 1528-byte packets at 100 Mbit/s ≈ 736.
    assert!(after_up >= 730, "traffic resumed: {after_up}");
    assert!(
        log.iter()
            .filter(|a| a.at >= Instant::from_millis(200))
            .all(|a| a.sent_at >= Instant::from_millis(200))
    );
    let st = *s.link_stats(0, Direction::AToB);
    assert!(s.host_stats(Side::A).link_ready_calls > 0);
    assert_eq!(
        st.queue_drops + st.mtu_drops + st.lost_random + st.duplicated,
        0
    );
    assert_conservation(&s, 0, Direction::AToB, 1500);
}

/// Every offered packet (and duplicate) is delivered, counted lost or dropped, or still in
/// the link: queued, on the wire (0 or 1) or propagating.
fn assert_conservation<A: Host, B: Host>(
    s: &Sim<A, B>,
    link: usize,
    dir: Direction,
    packet_bytes: u64,
) {
    let st = *s.link_stats(link, dir);
    let accounted = st.delivered
        + st.lost_random
        + st.lost_down
        + st.queue_drops
        + st.mtu_drops
        + s.in_flight(link, dir)
        + s.queued_bytes(link, dir) / packet_bytes;
    let on_wire = (st.packets_offered + st.duplicated).checked_sub(accounted);
    assert!(
        matches!(on_wire, Some(0 | 1)),
        "{st:?} in flight {}",
        s.in_flight(link, dir)
    );
}

#[test]
fn down_in_one_direction_only() {
    let mut l = link(100 * MBIT, Duration::from_millis(1));
    l.events = vec![LinkEvent {
        direction: Some(Direction::AToB),
        ..LinkEvent::new(Duration::ZERO, LinkAction::Down)
    }];
    let mut s = sim(1, vec![l], greedy(vec![0], 500), greedy(vec![0], 500));
    s.run_for(Duration::from_millis(50));
    assert_eq!(s.b().rx_packets, 0);
    assert!(s.a().rx_packets > 1000);
    assert!(s.link_stats(0, Direction::AToB).lost_down > 0);
    assert_eq!(s.link_stats(0, Direction::BToA).lost_down, 0);
}

#[test]
fn set_rate_changes_throughput() {
    let mut l = link(100 * MBIT, Duration::ZERO);
    l.events = vec![LinkEvent::new(
        Duration::from_millis(500),
        LinkAction::SetRate(50 * MBIT),
    )];
    let mut s = sim(1, vec![l], greedy(vec![0], 1500), CounterHost::sink());
    s.run_until(Instant::from_millis(500));
    let first = s.link_stats(0, Direction::AToB).bytes_delivered;
    s.run_until(Instant::from_millis(1000));
    assert_eq!(s.link_rate_bps(0, Direction::AToB), 50 * MBIT);
    let second = s.link_stats(0, Direction::AToB).bytes_delivered - first;
    let ratio = second as f64 / first as f64;
    assert!((ratio - 0.5).abs() < 0.01, "ratio {ratio}");
}

/// A config exercising every random feature on three links, both directions.
fn busy_config(seed: u64) -> SimConfig {
    let mut links = Vec::new();
    for i in 0..3u32 {
        let mut l = link(
            u64::from(i + 1) * 20 * MBIT,
            Duration::from_millis(u64::from(i) + 1),
        );
        l.jitter = Duration::from_micros(200);
        l.loss = 0.01;
        l.duplicate = 0.01;
        l.reorder = 0.01;
        l.reorder_delay = Duration::from_micros(300);
        l.queue_bytes = 20_000;
        links.push(l);
    }
    links[1].events = vec![
        LinkEvent::new(Duration::from_millis(40), LinkAction::Down),
        LinkEvent::new(Duration::from_millis(60), LinkAction::Up),
    ];
    SimConfig::new(seed, links)
}

fn busy_run(seed: u64) -> (crate::SimSnapshot, Vec<crate::testing::Arrival>) {
    let a = CounterHost::new(vec![0, 1, 2], 1200, SendMode::Greedy { window: 32 });
    let b = paced(vec![2, 0], 300, Duration::from_micros(20)).with_log();
    let mut s = Sim::new(busy_config(seed), a.with_log(), b).expect("valid");
    s.run_for(Duration::from_millis(100));
    for l in 0..3 {
        assert_conservation(&s, l, Direction::AToB, 1200);
        assert_conservation(&s, l, Direction::BToA, 300);
    }
    let mut log = s.b().arrivals().to_vec();
    log.extend_from_slice(s.a().arrivals());
    (s.snapshot(), log)
}

#[test]
fn same_seed_same_run_different_seed_different_losses() {
    let (snap1, log1) = busy_run(11);
    let (snap2, log2) = busy_run(11);
    assert_eq!(snap1, snap2);
    assert_eq!(log1, log2);
    // The run did exercise every feature.
    let l0 = snap1.links[0][0];
    assert!(
        l0.lost_random > 0 && l0.duplicated > 0 && l0.reordered > 0 && l0.queue_drops > 0,
        "{l0:?}"
    );
    assert!(snap1.links[1][0].lost_down > 0);
    let (snap3, log3) = busy_run(12);
    assert_ne!(snap1, snap3);
    assert_ne!(log1, log3);
    let lost = |s: &crate::SimSnapshot| {
        s.links
            .iter()
            .map(|l| l[0].lost_random + l[1].lost_random)
            .collect::<Vec<_>>()
    };
    assert_ne!(lost(&snap1), lost(&snap3));
}

/// A host whose deadline is always in the past and that always has a packet.
#[derive(Debug, Default)]
struct Misbehaving {
    timeouts: u64,
    sent: u64,
    link: usize,
}

impl Host for Misbehaving {
    fn handle_rx(&mut self, _now: Instant, _link: usize, _packet: &[u8]) {}
    fn poll_transmit(&mut self, _now: Instant, buf: &mut [u8]) -> Option<(usize, usize)> {
        self.sent += 1;
        buf[0] = 1;
        Some((self.link, 1))
    }
    fn handle_timeout(&mut self, _now: Instant) {
        self.timeouts += 1;
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Some(Instant::ZERO)
    }
}

#[test]
fn misbehaving_host_cannot_hang_the_loop() {
    let mut config = SimConfig::new(1, vec![link(10 * MBIT, Duration::from_micros(10))]);
    config.transmit_budget = 100;
    config.links[0].queue_bytes = 100;
    let bad = Misbehaving::default();
    let mut s = Sim::new(config, bad, CounterHost::sink()).expect("valid");
    s.run_until(Instant::from_millis(1));
    assert_eq!(s.now(), Instant::from_millis(1));
    let hs = *s.host_stats(Side::A);
    assert!(hs.timer_stalls > 0);
    assert!(hs.transmit_budget_exhausted > 0);
    // Bounded work: at most 100 timeouts per distinct instant, 100 packets per step.
    assert!(s.a().timeouts <= 100 * (s.events_processed() + 1));
    assert!(s.link_stats(0, Direction::AToB).queue_drops > 0);
    let received = s.host_stats(Side::B).received;
    assert!(received > 0, "the link still carried packets");
    assert_eq!(s.b().rx_malformed, received, "1-byte packets");
    // One budget per step at most, and re-polls spaced 1 µs apart (~1,000 in 1 ms).
    assert!(
        hs.transmit_budget_exhausted <= s.events_processed() + 1,
        "{hs:?}"
    );
    assert!(hs.transmits <= 100 * (s.events_processed() + 1), "{hs:?}");
    assert!(s.pending_events() < 1_000);
}

#[test]
fn invalid_transmits_are_counted() {
    let bad = Misbehaving {
        link: 7,
        ..Default::default()
    };
    let mut config = SimConfig::new(1, vec![link(10 * MBIT, Duration::ZERO)]);
    config.transmit_budget = 10;
    let mut s = Sim::new(config, bad, CounterHost::sink()).expect("valid");
    s.run_until(Instant::from_micros(100));
    let hs = *s.host_stats(Side::A);
    assert_eq!(hs.invalid_transmits, hs.transmits);
    assert!(hs.transmits > 0);
    assert_eq!(s.link_stats(0, Direction::AToB).packets_offered, 0);
}

#[test]
fn new_rejects_bad_configs() {
    let err = Sim::new(
        SimConfig::new(1, vec![]),
        CounterHost::sink(),
        CounterHost::sink(),
    )
    .expect_err("no links");
    assert_eq!(err, SimError::NoLinks);
    let mut l = link(MBIT, Duration::ZERO);
    l.duplicate = 2.0;
    let err = Sim::new(
        SimConfig::new(1, vec![link(MBIT, Duration::ZERO), l]),
        CounterHost::sink(),
        CounterHost::sink(),
    )
    .expect_err("bad link");
    assert_eq!(
        err.to_string(),
        "link 1: duplicate must be a probability in [0, 1]"
    );
}

#[test]
fn sim_config_from_toml() {
    let c: SimConfig = toml::from_str(
        r#"
        seed = 9
        [[links]]
        rate_bps = 1_000_000
        [[links]]
        rate_bps = 2_000_000
        mtu = 9000
        "#,
    )
    .expect("valid");
    assert_eq!(c.seed, 9);
    assert_eq!(c.links.len(), 2);
    assert_eq!(c.links[1].mtu, 9000);
    assert_eq!(c.transmit_budget, 10_000);
    let err =
        toml::from_str::<SimConfig>("seed = 1\nlinks = []\nbudget = 3\n").expect_err("unknown");
    assert!(err.to_string().contains("budget"), "{err}");
}

#[test]
fn pool_stops_allocating_in_steady_state() {
    let mut l = link(100 * MBIT, Duration::from_millis(2));
    l.jitter = Duration::from_micros(100);
    l.duplicate = 0.01;
    let mut s = sim(
        1,
        vec![l.clone(), l],
        greedy(vec![0, 1], 1500),
        greedy(vec![1], 700),
    );
    s.run_for(Duration::from_millis(100));
    let warm = s.pool().allocations();
    assert!(warm > 0);
    s.run_for(Duration::from_millis(400));
    assert_eq!(s.pool().allocations(), warm);
    // 0.5 s × 2 links × 8,180 packets/s.
    assert!(s.b().rx_packets > 8_000, "{}", s.b().rx_packets);
}

/// 1 s of 3 links × 300 Mbit/s of 1500-byte packets, saturated in both directions.
#[test]
fn three_saturated_300m_links_for_one_second() {
    let links = vec![link(300 * MBIT, Duration::from_millis(1)); 3];
    let a = greedy(vec![0, 1, 2], 1500);
    let b = greedy(vec![0, 1, 2], 1500);
    let mut s = sim(1, links, a, b);
    let wall = std::time::Instant::now();
    s.run_for(Duration::from_secs(1));
    let elapsed = wall.elapsed();
    eprintln!(
        "simulated 1 s of 3 x 300 Mbit/s full duplex ({} events) in {elapsed:?}",
        s.events_processed()
    );
    for l in 0..3 {
        for d in Direction::BOTH {
            let u = s.utilisation(l, d);
            assert!(u > 0.99, "link {l} {d:?} utilisation {u}");
            assert_eq!(s.link_stats(l, d).queue_drops, 0);
        }
    }
    // 300 Mbit/s / ((1500 + 28) * 8) ≈ 24,542 packets/s per direction, minus 1 ms in flight.
    assert!(s.b().rx_packets > 3 * 24_400, "{}", s.b().rx_packets);
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn action() -> impl Strategy<Value = LinkAction> {
        prop_oneof![
            Just(LinkAction::Down),
            Just(LinkAction::Up),
            (1..200u64).prop_map(|m| LinkAction::SetRate(m * MBIT)),
            (0..5_000u64).prop_map(|us| LinkAction::SetDelay(Duration::from_micros(us))),
            (0..2_000u64).prop_map(|us| LinkAction::SetJitter(Duration::from_micros(us))),
            (0.0..0.5f64).prop_map(LinkAction::SetLoss),
            (0.0..0.5f64).prop_map(LinkAction::SetDuplicate),
        ]
    }

    prop_compose! {
        fn any_link()(
            rate_mbit in 1..300u64,
            delay_us in 0..5_000u64,
            jitter_us in 0..2_000u64,
            loss in 0.0..0.3f64,
            duplicate in 0.0..0.3f64,
            mtu in 100..1600u32,
            queue_bytes in 0..50_000u64,
            events in prop::collection::vec((0..50_000u64, action()), 0..6),
        ) -> LinkConfig {
            let mut l = LinkConfig::new(rate_mbit * MBIT, Duration::from_micros(delay_us));
            l.jitter = Duration::from_micros(jitter_us);
            l.loss = loss;
            l.duplicate = duplicate;
            l.mtu = mtu;
            l.queue_bytes = queue_bytes;
            l.events = events
                .into_iter()
                .map(|(us, a)| LinkEvent::new(Duration::from_micros(us), a))
                .collect();
            l
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Whatever the impairments and schedule: every packet is accounted for exactly once,
        /// and without `reorder` nothing arrives out of order on a link.
        #[test]
        fn conservation_and_fifo(
            seed in any::<u64>(),
            links in prop::collection::vec(any_link(), 1..4),
            bytes in 16..1500usize,
            window in 1..40u32,
        ) {
            let n = links.len();
            let a = CounterHost::new((0..n).collect(), bytes, SendMode::Greedy { window });
            let b = paced((0..n).collect(), bytes, Duration::from_micros(37));
            let mut s = Sim::new(SimConfig::new(seed, links), a, b).expect("valid");
            s.run_for(Duration::from_millis(60));
            for l in 0..n {
                for d in Direction::BOTH {
                    assert_conservation(&s, l, d, bytes as u64);
                }
            }
            prop_assert_eq!(s.a().rx_out_of_order, 0);
            prop_assert_eq!(s.b().rx_out_of_order, 0);
            let delivered: u64 = (0..n).map(|l| s.link_stats(l, Direction::AToB).delivered).sum();
            prop_assert_eq!(s.b().rx_packets, delivered);
        }
    }
}
