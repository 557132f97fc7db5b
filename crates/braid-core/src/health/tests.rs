//! Link health tests: a tiny hand-driven two-sided harness (two monitors, per-link delay,
//! jitter, loss and an outage window; replies sent at once) for detection and false-Down
//! bounds, plus hand-driven single-monitor tests for RFC 6298 and the state machine.

use super::*;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Msg {
    Probe {
        seq: u64,
        ts: Instant,
    },
    Reply {
        seq: u64,
        echo: Instant,
        peer_rx: Instant,
        send_ts: Instant,
    },
}

/// One NIC between the two sides (same in both directions).
#[derive(Clone, Copy, Debug)]
struct Path {
    owd: Duration,
    /// Uniform in `[-jitter, +jitter]`, delay clamped at zero.
    jitter: Duration,
    /// Independent per message.
    loss: f64,
    /// Everything sent in `[from, until)` is lost, both ways.
    outage: Option<(Instant, Instant)>,
    /// Drop side 0's probes with `seq % n == n - 1`.
    drop_probe_every: Option<u64>,
}

impl Path {
    fn new(owd_ms: u64) -> Self {
        Self {
            owd: Duration::from_millis(owd_ms),
            jitter: Duration::ZERO,
            loss: 0.0,
            outage: None,
            drop_probe_every: None,
        }
    }
}

/// (deliver at, send order, to side, nic, message), earliest first.
type InFlight = BinaryHeap<Reverse<(Instant, u64, usize, u8, Msg)>>;

struct Pair {
    sides: [HealthMonitor; 2],
    events: [Vec<LinkEvent>; 2],
    paths: Vec<Path>,
    rng: ChaCha8Rng,
    in_flight: InFlight,
    order: u64,
    now: Instant,
}

impl Pair {
    fn new(paths: &[Path], config: HealthConfig, seed: u64) -> Self {
        let mut sides = [HealthMonitor::new(config), HealthMonitor::new(config)];
        for side in &mut sides {
            for nic in 0..paths.len() {
                side.add_link(Instant::ZERO, NicId(u8::try_from(nic).expect("few nics")));
            }
        }
        Self {
            sides,
            events: [Vec::new(), Vec::new()],
            paths: paths.to_vec(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            in_flight: BinaryHeap::new(),
            order: 0,
            now: Instant::ZERO,
        }
    }

    fn send(&mut self, from: usize, nic: u8, msg: Msg) {
        let path = self.paths[usize::from(nic)];
        if path
            .outage
            .is_some_and(|(a, b)| a <= self.now && self.now < b)
        {
            return;
        }
        if let (Some(n), 0, Msg::Probe { seq, .. }) = (path.drop_probe_every, from, msg)
            && seq % n == n - 1
        {
            return;
        }
        if path.loss > 0.0 && self.rng.random::<f64>() < path.loss {
            return;
        }
        let j = i64::try_from(path.jitter.as_nanos()).expect("small");
        let jitter = if j > 0 {
            self.rng.random_range(-j..=j)
        } else {
            0
        };
        let delay_ns = (i64::try_from(path.owd.as_nanos()).expect("small") + jitter).max(0);
        let at = self.now + Duration::from_nanos(delay_ns.unsigned_abs());
        self.order += 1;
        self.in_flight
            .push(Reverse((at, self.order, 1 - from, nic, msg)));
    }

    fn deliver(&mut self, to: usize, nic: u8, msg: Msg) {
        let now = self.now;
        let m = &mut self.sides[to];
        match msg {
            Msg::Probe { seq, ts } => {
                m.on_rx(now, NicId(nic), ts);
                // The engine replies at once: echo the probe's timestamp, add our rx time.
                self.send(
                    to,
                    nic,
                    Msg::Reply {
                        seq,
                        echo: ts,
                        peer_rx: now,
                        send_ts: now,
                    },
                );
            }
            Msg::Reply {
                seq,
                echo,
                peer_rx,
                send_ts,
            } => {
                m.on_rx(now, NicId(nic), send_ts);
                m.on_probe_reply(now, NicId(nic), seq, echo, peer_rx);
            }
        }
    }

    /// Run the event loop until `end` (inclusive).
    fn run_until(&mut self, end: Instant) {
        let mut steps = 0u64;
        loop {
            steps += 1;
            assert!(steps < 50_000_000, "event loop does not progress");
            let next = [
                self.sides[0].poll_timeout(),
                self.sides[1].poll_timeout(),
                self.in_flight.peek().map(|Reverse((at, ..))| *at),
            ]
            .into_iter()
            .flatten()
            .min()
            .expect("links exist");
            if next > end {
                self.now = end;
                return;
            }
            self.now = self.now.max(next);
            while let Some(Reverse((at, _, to, nic, msg))) = self.in_flight.peek().copied() {
                if at > self.now {
                    break;
                }
                self.in_flight.pop();
                self.deliver(to, nic, msg);
            }
            for s in 0..2 {
                self.sides[s].handle_timeout(self.now);
                while let Some(p) = self.sides[s].poll_probe(self.now) {
                    self.send(
                        s,
                        p.nic.0,
                        Msg::Probe {
                            seq: p.seq,
                            ts: p.timestamp,
                        },
                    );
                }
                while let Some(ev) = self.sides[s].poll_event() {
                    self.events[s].push(ev);
                }
            }
            // Everything due at `now` is handled: the next deadline is later.
            for s in 0..2 {
                assert!(self.sides[s].poll_timeout().is_some_and(|t| t > self.now));
            }
        }
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The failure-detection requirement: Down within 30 ms of the failure at 1, 5 and 10 ms
/// one-way delay, with no traffic but probes, on both sides, for several failure phases
/// relative to the probe schedule; the healthy link sees no event.
#[test]
fn failure_detected_within_30ms() {
    let mut worst = Duration::ZERO;
    for owd_ms in [1, 5, 10] {
        for phase_us in [0, 1_234, 2_500, 4_999] {
            let fail = Instant::from_millis(2_000) + Duration::from_micros(phase_us);
            let mut dead = Path::new(owd_ms);
            dead.outage = Some((fail, Instant::MAX));
            let mut pair = Pair::new(&[dead, Path::new(2)], HealthConfig::default(), 1);
            pair.run_until(fail + ms(200));
            for s in 0..2 {
                let evs = &pair.events[s];
                assert_eq!(evs.len(), 1, "owd {owd_ms} ms side {s}: {evs:?}");
                let ev = evs[0];
                assert_eq!(
                    (ev.nic, ev.from, ev.to),
                    (NicId(0), LinkState::Up, LinkState::Down)
                );
                let took = ev.at - fail;
                assert!(
                    took <= ms(30),
                    "owd {owd_ms} ms phase {phase_us} µs side {s}: {took:?}"
                );
                worst = worst.max(took);
                let st = pair.sides[s].link(NicId(0)).expect("link");
                // Not before the configured number of intervals of silence.
                let silence = ev.at - st.last_rx.expect("heard before the failure");
                assert!(silence >= ms(15), "premature: {silence:?}");
                assert_eq!(st.state, LinkState::Down);
                assert_eq!(st.down_events, 1);
                assert!(st.probes_lost >= 30, "probes keep going: {st:?}");
                assert_eq!(
                    pair.sides[s].link(NicId(1)).expect("link").state,
                    LinkState::Up
                );
            }
        }
    }
    println!("worst detection time: {worst:?}");
}

/// The same with ±2 ms jitter and 1 % loss at 5 ms: jitter adds to the last packet's delay
/// and fills the rttvar margin, and the bound (5 + 2 + 15 + 5 ms) still holds.
#[test]
fn failure_detected_within_30ms_under_jitter() {
    for seed in 0..8 {
        let fail = Instant::from_millis(3_000) + Duration::from_micros(seed * 617);
        let healthy = Path {
            jitter: ms(2),
            loss: 0.01,
            ..Path::new(5)
        };
        let dead = Path {
            outage: Some((fail, Instant::MAX)),
            ..healthy
        };
        let mut pair = Pair::new(&[dead, healthy], HealthConfig::default(), seed);
        pair.run_until(fail + ms(100));
        for s in 0..2 {
            let evs: Vec<_> = pair.events[s]
                .iter()
                .filter(|e| e.to == LinkState::Down)
                .collect();
            assert_eq!(evs.len(), 1, "seed {seed} side {s}: {evs:?}");
            assert_eq!(evs[0].nic, NicId(0));
            assert!(
                evs[0].at - fail <= ms(30),
                "seed {seed}: {:?}",
                evs[0].at - fail
            );
        }
    }
}

/// ±2 ms jitter and 1 % loss per packet each way, 60 s × 3 links × 3 delays: no false Down.
#[test]
fn no_false_down_with_jitter_and_loss() {
    for (owd_ms, seed) in [(1, 7), (5, 8), (10, 9)] {
        let path = Path {
            jitter: ms(2),
            loss: 0.01,
            ..Path::new(owd_ms)
        };
        let mut pair = Pair::new(&[path, path, path], HealthConfig::default(), seed);
        pair.run_until(Instant::from_millis(60_000));
        for s in 0..2 {
            let downs: Vec<_> = pair.events[s]
                .iter()
                .filter(|e| e.to == LinkState::Down)
                .collect();
            assert!(
                downs.is_empty(),
                "owd {owd_ms}: false Down on side {s}: {downs:?}"
            );
            for nic in 0..3 {
                let st = pair.sides[s].link(NicId(nic)).expect("link");
                assert_eq!(st.down_events, 0);
                assert!(st.probes_sent >= 12_000, "{st:?}");
                // Round trip: ~2 % of probes or their replies lost.
                let lost = st.probes_lost as f64 / st.probes_sent as f64;
                assert!((0.01..0.03).contains(&lost), "owd {owd_ms}: lost {lost}");
                assert_eq!(
                    st.replies + st.probes_lost,
                    st.probes_sent - outstanding(st)
                );
            }
        }
    }
}

/// Probes still waiting for a reply or their timeout at the end of a run (at most a few).
fn outstanding(st: &LinkStats) -> u64 {
    let n = st.probes_sent - st.replies - st.probes_lost;
    assert!(n <= 10, "{st:?}");
    n
}

/// RFC 6298 §2.2/2.3 on a worked sequence of samples 100, 120, 80, 100 ms:
/// SRTT 100 → 102.5 → 99.6875 → 99.7265625; RTTVAR 50 → 42.5 → 37.5 → 28.203125.
#[test]
fn rtt_estimator_matches_rfc6298() {
    let mut m = HealthMonitor::new(HealthConfig::default());
    let nic = NicId(3);
    m.add_link(Instant::ZERO, nic);
    let mut now = Instant::ZERO;
    let expected = [
        (100, 100_000_000, 50_000_000),
        (120, 102_500_000, 42_500_000),
        (80, 99_687_500, 37_500_000),
        (100, 99_726_562, 28_203_125),
    ];
    for (k, (r_ms, srtt_ns, rttvar_ns)) in expected.into_iter().enumerate() {
        let p = m.poll_probe(now).expect("a probe is due");
        assert_eq!((p.nic, p.seq, p.timestamp), (nic, k as u64, now));
        assert_eq!(m.poll_probe(now), None, "one probe per link per interval");
        now += ms(r_ms);
        m.on_probe_reply(now, nic, p.seq, p.timestamp, p.timestamp + ms(r_ms / 2));
        let st = m.link(nic).expect("link");
        assert_eq!(st.srtt, Duration::from_nanos(srtt_ns), "sample {k}");
        assert_eq!(st.rttvar, Duration::from_nanos(rttvar_ns), "sample {k}");
    }
    let st = m.link(nic).expect("link");
    assert_eq!(st.min_rtt, ms(80));
    assert_eq!(st.replies, 4);
    assert_eq!(st.probes_lost, 0);
    assert_eq!(st.last_rx, Some(now));
    assert_eq!(m.counters().stale_replies, 0);
}

/// Every 10th probe lost, 60-probe window: exactly 10 %; that is above 5 %, so Degraded; once
/// the loss stops the link returns to Up.
#[test]
fn loss_window_converges_and_degrades() {
    let config = HealthConfig {
        loss_window: 60,
        ..HealthConfig::default()
    };
    let mut path = Path::new(2);
    path.drop_probe_every = Some(10);
    let mut pair = Pair::new(&[path], config, 3);
    pair.run_until(Instant::from_millis(2_000));
    let st = *pair.sides[0].link(NicId(0)).expect("link");
    assert!((st.loss - 0.1).abs() < 1e-9, "{st:?}");
    assert_eq!(st.state, LinkState::Degraded);
    assert_eq!(st.down_events, 0);
    // The other side's probes are not dropped.
    assert_eq!(pair.sides[1].link(NicId(0)).expect("link").loss, 0.0);
    assert!(pair.events[1].is_empty());

    pair.paths[0].drop_probe_every = None;
    pair.run_until(Instant::from_millis(3_000));
    let st = *pair.sides[0].link(NicId(0)).expect("link");
    assert_eq!(st.loss, 0.0);
    assert_eq!(st.state, LinkState::Up);
    let states: Vec<_> = pair.events[0].iter().map(|e| (e.from, e.to)).collect();
    assert_eq!(
        states,
        vec![
            (LinkState::Up, LinkState::Degraded),
            (LinkState::Degraded, LinkState::Up)
        ]
    );
}

/// Seeded 5 % random loss each way over a 1000-probe window converges to the round-trip rate
/// 1 − 0.95² ≈ 9.75 %.
#[test]
fn loss_estimate_converges_to_injected_rate() {
    let config = HealthConfig {
        loss_window: 1000,
        ..HealthConfig::default()
    };
    let path = Path {
        loss: 0.05,
        ..Path::new(3)
    };
    let mut pair = Pair::new(&[path], config, 11);
    pair.run_until(Instant::from_millis(60_000));
    let expected = 1.0 - 0.95 * 0.95;
    for s in 0..2 {
        let st = pair.sides[s].link(NicId(0)).expect("link");
        assert!((st.loss - expected).abs() < 0.03, "windowed {}", st.loss);
        let total = st.probes_lost as f64 / st.probes_sent as f64;
        assert!((total - expected).abs() < 0.01, "overall {total}");
    }
}

/// A link fails for 500 ms then heals: Down, then Up again after `up_after` replies, with the
/// loss window restarted.
#[test]
fn recovery_after_up_after_replies() {
    for up_after in [1, 3] {
        let config = HealthConfig {
            up_after,
            ..HealthConfig::default()
        };
        let (fail, heal) = (Instant::from_millis(1_000), Instant::from_millis(1_500));
        let mut path = Path::new(2);
        path.outage = Some((fail, heal));
        let mut pair = Pair::new(&[path], config, 5);
        pair.run_until(Instant::from_millis(2_000));
        for s in 0..2 {
            let evs = &pair.events[s];
            let states: Vec<_> = evs.iter().map(|e| (e.from, e.to)).collect();
            assert_eq!(
                states,
                vec![
                    (LinkState::Up, LinkState::Down),
                    (LinkState::Down, LinkState::Up)
                ]
            );
            // The first probe sent after `heal` leaves within one interval; its reply is back
            // 2 × owd later; each further reply one interval later.
            let took = evs[1].at - heal;
            let k = u64::from(up_after);
            assert!(took >= ms(4 + 5 * (k - 1)), "up_after {up_after}: {took:?}");
            assert!(took <= ms(4 + 5 * k), "up_after {up_after}: {took:?}");
            let st = pair.sides[s].link(NicId(0)).expect("link");
            assert_eq!((st.state, st.down_events), (LinkState::Up, 1));
            assert_eq!(st.loss, 0.0, "window restarted: {st:?}");
            assert!(st.probes_lost >= 99, "outage probes counted: {st:?}");
        }
    }
}

/// Recovery needs *consecutive* replies: a probe counted lost in between resets the count.
#[test]
fn recovery_needs_consecutive_replies() {
    let mut m = HealthMonitor::new(HealthConfig::default());
    let nic = NicId(0);
    m.add_link(Instant::ZERO, nic);
    // Nothing heard: Down exactly at 3 × 5 ms (no RTT sample, so no margin).
    let mut now = Instant::ZERO;
    let mut sent = Vec::new();
    while let Some(t) = m.poll_timeout() {
        if m.link(nic).expect("link").state == LinkState::Down {
            break;
        }
        now = t;
        m.handle_timeout(now);
        while let Some(p) = m.poll_probe(now) {
            sent.push(p);
        }
    }
    assert_eq!(now, Instant::from_millis(15));
    let ev = m.poll_event().expect("event");
    assert_eq!(
        (ev.from, ev.to, ev.at),
        (LinkState::Up, LinkState::Down, now)
    );
    assert_eq!(m.poll_event(), None);
    assert_eq!(sent.len(), 4, "probes at 0, 5, 10, 15 ms");

    // Two replies, then a probe goes unanswered past its timeout, then two more: still Down.
    let reply = |m: &mut HealthMonitor, now: &mut Instant| {
        *now += ms(5);
        let p = m.poll_probe(*now).expect("due");
        *now += ms(1);
        m.on_probe_reply(*now, nic, p.seq, p.timestamp, p.timestamp);
    };
    reply(&mut m, &mut now);
    reply(&mut m, &mut now);
    now += ms(5);
    let _unanswered = m.poll_probe(now).expect("due");
    // srtt 1 ms, rttvar ~0.4 ms: the timeout is ~7.5 ms.
    now += ms(10);
    m.handle_timeout(now);
    assert!(m.link(nic).expect("link").probes_lost >= 1);
    reply(&mut m, &mut now);
    reply(&mut m, &mut now);
    assert_eq!(m.link(nic).expect("link").state, LinkState::Down);
    assert_eq!(m.poll_event(), None);
    reply(&mut m, &mut now);
    assert_eq!(m.link(nic).expect("link").state, LinkState::Up);
    let ev = m.poll_event().expect("event");
    assert_eq!(
        (ev.from, ev.to, ev.at),
        (LinkState::Down, LinkState::Up, now)
    );
}

#[test]
fn stale_replies_are_counted_not_used() {
    let mut m = HealthMonitor::new(HealthConfig::default());
    let nic = NicId(1);
    m.add_link(Instant::ZERO, nic);
    let p = m.poll_probe(Instant::ZERO).expect("due");
    let t = Instant::from_millis(2);
    m.on_probe_reply(t, nic, p.seq + 1, p.timestamp, t); // never sent
    m.on_probe_reply(t, nic, p.seq, p.timestamp + ms(1), t); // wrong echo
    m.on_probe_reply(t, nic, p.seq, p.timestamp, t); // good
    m.on_probe_reply(t, nic, p.seq, p.timestamp, t); // duplicate
    m.on_probe_reply(t, NicId(9), p.seq, p.timestamp, t); // unknown link
    let st = m.link(nic).expect("link");
    assert_eq!((st.replies, st.srtt), (1, ms(2)));
    assert_eq!(m.counters().stale_replies, 3);
    assert_eq!(m.counters().unknown_link, 1);
    assert_eq!(
        st.last_rx,
        Some(t),
        "a stale reply still proves the link alive"
    );
}

/// Three links at 1, 3 and 7 ms: owd, rtt and the spread; a Down link leaves the spread.
#[test]
fn delay_spread_and_owd() {
    let mut far = Path::new(7);
    far.outage = Some((Instant::from_millis(1_000), Instant::MAX));
    let mut pair = Pair::new(
        &[Path::new(1), Path::new(3), far],
        HealthConfig::default(),
        2,
    );
    pair.run_until(Instant::from_millis(900));
    let m = &pair.sides[0];
    let st = m.link(NicId(1)).expect("link");
    assert_eq!(
        (st.srtt, st.min_rtt, st.owd, st.rx_owd),
        (ms(6), ms(6), ms(3), ms(3))
    );
    assert_eq!(
        (st.owd_jitter, st.rx_owd_jitter),
        (Duration::ZERO, Duration::ZERO)
    );
    assert_eq!(m.delay_spread(NicSet::ALL), (ms(6), Duration::ZERO));
    let two: NicSet = [NicId(0), NicId(1)].into_iter().collect();
    assert_eq!(m.delay_spread(two).0, ms(2));
    assert_eq!(m.delay_spread(NicSet::single(NicId(0))).0, Duration::ZERO);
    pair.run_until(Instant::from_millis(1_100));
    assert_eq!(
        pair.sides[0].link(NicId(2)).expect("link").state,
        LinkState::Down
    );
    // A Down link keeps counting with its last estimate (its packets will overtake the
    // others' when it returns).
    assert_eq!(pair.sides[0].delay_spread(NicSet::ALL).0, ms(6));
}

/// Jitter is measured (RFC 3550 style) and a ±2 ms jitter on a 5 ms link does not make it
/// Degraded by RTT (the baseline is the windowed minimum).
#[test]
fn jitter_is_measured() {
    let path = Path {
        jitter: ms(2),
        ..Path::new(5)
    };
    let mut pair = Pair::new(&[path, Path::new(5)], HealthConfig::default(), 4);
    pair.run_until(Instant::from_millis(5_000));
    let m = &pair.sides[0];
    let jittery = m.link(NicId(0)).expect("link");
    // Uniform ±2 ms: E|D| between consecutive samples = 4/3 ms.
    assert!(
        jittery.rx_owd_jitter > Duration::from_micros(900),
        "{jittery:?}"
    );
    assert!(
        jittery.rx_owd_jitter < Duration::from_micros(1_800),
        "{jittery:?}"
    );
    assert_eq!(jittery.state, LinkState::Up);
    let (spread, jitter) = m.delay_spread(NicSet::ALL);
    assert!(spread < ms(1), "{spread:?}");
    assert_eq!(jitter, jittery.rx_owd_jitter);
}

#[test]
fn probes_follow_the_interval_and_poll_timeout() {
    let mut m = HealthMonitor::new(HealthConfig::default());
    m.add_link(Instant::ZERO, NicId(0));
    m.add_link(Instant::from_millis(1), NicId(4));
    let mut count = [0u32; 2];
    let mut now = Instant::ZERO;
    while now <= Instant::from_millis(100) {
        while let Some(p) = m.poll_probe(now) {
            // Keep both links alive so only probes drive the timeline.
            m.on_rx(now, p.nic, now);
            count[usize::from(p.nic.0 != 0)] += 1;
        }
        m.handle_timeout(now);
        now = m.poll_timeout().expect("links");
    }
    assert_eq!(
        count,
        [21, 20],
        "0..=100 ms every 5 ms; 1..=96 ms every 5 ms"
    );
    assert_eq!(m.links(), [NicId(0), NicId(4)].into_iter().collect());
    m.remove_link(NicId(4));
    assert!(m.link(NicId(4)).is_none());
    m.add_link(Instant::ZERO, NicId(200));
    assert_eq!(m.counters().unknown_link, 1);
}

#[test]
fn event_queue_is_bounded_and_counts_drops() {
    let config = HealthConfig {
        up_after: 1,
        ..HealthConfig::default()
    };
    let mut m = HealthMonitor::new(config);
    let nic = NicId(0);
    m.add_link(Instant::ZERO, nic);
    let mut now = Instant::ZERO;
    for _ in 0..40 {
        // Silence → Down; one reply → Up.
        now += ms(20);
        m.handle_timeout(now);
        let p = m.poll_probe(now).expect("due");
        m.on_probe_reply(now, nic, p.seq, p.timestamp, now);
    }
    assert_eq!(m.link(nic).expect("link").down_events, 40);
    assert_eq!(m.counters().events_dropped, 80 - EVENT_QUEUE_CAP as u64);
    let mut n = 0;
    let mut last = None;
    while let Some(ev) = m.poll_event() {
        n += 1;
        last = Some(ev);
    }
    assert_eq!(n, EVENT_QUEUE_CAP);
    assert_eq!(
        last.map(|e| (e.to, e.at)),
        Some((LinkState::Up, now)),
        "newest kept"
    );
}
