//! The capacity estimator against a fluid model of one link: a FIFO queue of bounded bytes
//! drained at the link's rate, a propagation delay, random loss, and probes in the same FIFO
//! every 5 ms whose replies carry the bytes delivered ahead of them. The sender either keeps
//! the pacer busy (greedy) or offers a fixed rate.

use std::collections::VecDeque;
use std::vec::Vec;

use proptest::prelude::*;

use super::*;

const STEP: Duration = Duration::from_micros(250);
const PROBE_EVERY: Duration = Duration::from_millis(5);
const NIC: NicId = NicId(0);

/// The link and the sender's application.
#[derive(Clone, Copy, Debug)]
struct Model {
    rate_bps: u64,
    delay: Duration,
    /// Queue bound in bytes (tail drop beyond it).
    queue_bytes: f64,
    /// Fraction of bytes lost at random (no queue involved).
    loss: f64,
    /// The application's rate; `None` = greedy (always more than the pacer allows).
    app_bps: Option<u64>,
    /// A receiver that stalls: each probe is taken up to this much late (pseudo-randomly),
    /// and the bytes behind it with it. Nothing is lost.
    rx_stall: Duration,
}

impl Model {
    /// A TBF-like link: a 10 ms queue, 1 ms delay, greedy sender.
    fn tbf(rate_bps: u64) -> Self {
        Self {
            rate_bps,
            delay: Duration::from_millis(1),
            queue_bytes: rate_bps as f64 / 8.0 * 0.010 + 65_536.0,
            loss: 0.0,
            app_bps: None,
            rx_stall: Duration::ZERO,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Reply {
    at: Instant,
    seq: u64,
    sent_at: Instant,
    rx_at: Instant,
    delivered: u64,
}

/// Runs the model; `change(t)` may return a new model (a rate change). Returns the estimate
/// and pacing rate every 100 ms, and the estimator.
struct Run {
    est: CapacityEstimator,
    trace: Vec<(Instant, u64)>,
    delivered_bytes: f64,
    dropped_bytes: f64,
}

fn run(
    model: Model,
    guess_bps: u64,
    duration: Duration,
    change: impl FnMut(Instant) -> Option<Model>,
) -> Run {
    let mut est = CapacityEstimator::new(CapacityConfig::default());
    est.add_link(Instant::ZERO, NIC, guess_bps);
    run_with(est, model, duration, change)
}

/// [`run`] with an estimator set up by the caller (link [`NIC`] added at time zero).
fn run_with(
    mut est: CapacityEstimator,
    mut model: Model,
    duration: Duration,
    mut change: impl FnMut(Instant) -> Option<Model>,
) -> Run {
    let mut now = Instant::ZERO;
    let (mut queue, mut sent, mut accepted, mut dropped) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    let mut delivered = 0.0f64;
    let mut replies: VecDeque<Reply> = VecDeque::new();
    let mut seq = 0u64;
    let mut next_probe = now;
    let mut trace = Vec::new();
    let mut next_trace = now;
    let end = now + duration;
    let dt = STEP.as_secs_f64();
    while now < end {
        if let Some(m) = change(now) {
            model = m;
        }
        let pacing = est.stats(NIC).unwrap().pacing_bps as f64;
        let offer = match model.app_bps {
            None => pacing,
            Some(app) => pacing.min(app as f64),
        } / 8.0
            * dt;
        sent += offer;
        let arriving = offer * (1.0 - model.loss);
        let room = (model.queue_bytes - queue).max(0.0);
        let taken = arriving.min(room);
        dropped += offer - taken;
        queue += taken;
        accepted += taken;
        let drained = (model.rate_bps as f64 / 8.0 * dt).min(queue);
        queue -= drained;
        delivered += drained;
        if now >= next_probe {
            next_probe = now + PROBE_EVERY;
            est.on_probe_sent(now, NIC, seq, sent as u64);
            let wait = Duration::from_secs_f64(queue * 8.0 / model.rate_bps as f64);
            // The receiver takes the probe late, but in order (never before the one before).
            let stall = model.rx_stall * u32::try_from((seq * 37) % 11).unwrap() / 10;
            let rx_at = (now + wait + model.delay + stall)
                .max(replies.back().map_or(Instant::ZERO, |r: &Reply| r.rx_at));
            replies.push_back(Reply {
                at: rx_at + model.delay,
                seq,
                sent_at: now,
                rx_at,
                // FIFO: everything accepted before the probe is delivered before it.
                delivered: accepted as u64,
            });
            seq += 1;
        }
        while replies.front().is_some_and(|r| r.at <= now) {
            let r = replies.pop_front().unwrap();
            est.on_probe_reply(now, NIC, r.seq, r.sent_at, r.rx_at, r.delivered);
        }
        if now >= next_trace {
            next_trace = now + Duration::from_millis(100);
            trace.push((now, est.stats(NIC).unwrap().estimate_bps));
        }
        now += STEP;
    }
    Run {
        est,
        trace,
        delivered_bytes: delivered,
        dropped_bytes: dropped,
    }
}

/// The estimates from `from` on.
fn after(trace: &[(Instant, u64)], from: Duration) -> impl Iterator<Item = u64> + '_ {
    trace
        .iter()
        .filter(move |(t, _)| *t >= Instant::ZERO + from)
        .map(|&(_, e)| e)
}

fn within(x: u64, target: f64, tolerance: f64) -> bool {
    (x as f64 - target).abs() <= target * tolerance
}

/// The wire rate the fluid link delivers (no overhead in this model).
fn mbit(x: u64) -> u64 {
    x * 1_000_000
}

#[test]
fn converges_down_from_a_guess_ten_times_too_high() {
    let r = run(
        Model::tbf(mbit(100)),
        mbit(1000),
        Duration::from_secs(4),
        |_| None,
    );
    // Halving per sample at most (`one_sample_moves_the_estimate_by_at_most_a_factor_of_two`,
    // a sample spans half a round at least): four samples, there by 0.5 s.
    for e in after(&r.trace, Duration::from_millis(500)) {
        assert!(within(e, 100e6, 0.10), "estimate {e}\n{:?}", r.trace);
    }
    assert!(r.est.stats(NIC).unwrap().samples >= 4);
    for e in after(&r.trace, Duration::from_millis(1500)) {
        assert!(within(e, 100e6, 0.10), "estimate {e}\n{:?}", r.trace);
    }
    let s = r.est.stats(NIC).unwrap();
    assert!(s.counted_samples >= 3 && s.congestion_count >= 1, "{s:?}");
    assert_ne!(s.phase, CapacityPhase::Startup, "{s:?}");
    // Once converged, the link is nearly full: at least 90 % of 3.5 s at 100 Mbit/s.
    assert!(
        r.delivered_bytes >= 0.9 * 100e6 / 8.0 * 3.5,
        "{}",
        r.delivered_bytes
    );
}

#[test]
fn converges_up_from_a_guess_thirty_times_too_low() {
    let r = run(
        Model::tbf(mbit(300)),
        mbit(10),
        Duration::from_secs(4),
        |_| None,
    );
    // Startup doubles per round: 10 → 300 Mbit/s in about five rounds.
    let at_1s = after(&r.trace, Duration::from_secs(1)).next().unwrap();
    assert!(at_1s >= mbit(240), "estimate at 1 s {at_1s}\n{:?}", r.trace);
    for e in after(&r.trace, Duration::from_millis(2000)) {
        assert!(within(e, 300e6, 0.10), "estimate {e}\n{:?}", r.trace);
    }
    // The overshoot of Startup and the probes upward lose little: < 2 % of what was sent.
    assert!(
        r.dropped_bytes < 0.02 * r.delivered_bytes,
        "{} dropped of {}",
        r.dropped_bytes,
        r.delivered_bytes
    );
}

#[test]
fn an_overrun_queue_caps_the_estimate_even_when_the_pacer_is_not_the_limit() {
    // 150 Mbit/s offered into a 100 Mbit/s link with a 1.5 MB queue, guessed at 1 Gbit/s:
    // never loaded (150 ≪ 2 Gbit/s of pacing), and too little traffic for a deficit alone to
    // count, but the queue overflows within a third of a second, and the busy stretches give
    // the link's rate.
    let model = Model {
        app_bps: Some(mbit(150)),
        queue_bytes: 1.5e6,
        ..Model::tbf(mbit(100))
    };
    let r = run(model, mbit(1000), Duration::from_millis(2500), |_| None);
    for e in after(&r.trace, Duration::from_millis(1000)) {
        assert!(within(e, 100e6, 0.10), "estimate {e}\n{:?}", r.trace);
    }
    assert!(r.est.stats(NIC).unwrap().congestion_count >= 1);
}

#[test]
fn a_stalling_receiver_does_not_sink_the_estimate() {
    // 20 Mbit/s on a 100 Mbit/s link guessed right, the receiver taking probes up to 20 ms
    // late: queues and deficits that are the host's, not the link's, and no loss.
    let model = Model {
        app_bps: Some(mbit(20)),
        rx_stall: Duration::from_millis(20),
        ..Model::tbf(mbit(100))
    };
    let r = run(model, mbit(100), Duration::from_secs(10), |_| None);
    let min = after(&r.trace, Duration::ZERO).min().unwrap();
    assert!(min >= mbit(100), "estimate fell to {min}\n{:?}", r.trace);
    let s = r.est.stats(NIC).unwrap();
    assert_eq!(s.congestion_count, 0, "{s:?}");
}

#[test]
fn startup_ends_when_the_traffic_does_not_fill_the_link() {
    // 20 Mbit/s of traffic: Startup cannot grow the estimate, and twice the estimate would
    // only mislead the scheduler, so it ends after a few rounds.
    let model = Model {
        app_bps: Some(mbit(20)),
        ..Model::tbf(mbit(100))
    };
    let r = run(model, mbit(50), Duration::from_secs(2), |_| None);
    let s = r.est.stats(NIC).unwrap();
    assert_ne!(s.phase, CapacityPhase::Startup, "{s:?}");
    assert_eq!(s.estimate_bps, mbit(50), "{s:?}");
}

#[test]
fn an_estimate_far_too_low_outside_startup_is_found_again_quickly() {
    // As after a cap while another sender shared the link: 10 Mbit/s in Cruise on a
    // 300 Mbit/s link. A probe upward that finds room restarts Startup; at 25 % per cycle
    // (0.8 s) it would take 12 s.
    let mut est = CapacityEstimator::new(CapacityConfig::default());
    est.add_link(Instant::ZERO, NIC, mbit(10));
    let cfg = est.config;
    est.links[0]
        .as_mut()
        .unwrap()
        .enter(Instant::ZERO, CapacityPhase::Cruise, &cfg);
    let r = run_with(est, Model::tbf(mbit(300)), Duration::from_secs(3), |_| None);
    for e in after(&r.trace, Duration::from_millis(2500)) {
        assert!(within(e, 300e6, 0.10), "estimate {e}\n{:?}", r.trace);
    }
}

#[test]
fn light_traffic_does_not_shrink_the_estimate() {
    // 5 Mbit/s of traffic on a 100 Mbit/s link guessed right: application-limited samples say
    // nothing, so the estimate stays (no feedback loop toward the traffic's rate or zero).
    let model = Model {
        app_bps: Some(mbit(5)),
        ..Model::tbf(mbit(100))
    };
    let r = run(model, mbit(100), Duration::from_secs(10), |_| None);
    for e in after(&r.trace, Duration::ZERO) {
        assert!(e >= mbit(100), "estimate {e}");
    }
    let s = r.est.stats(NIC).unwrap();
    assert!(s.samples > 50, "{s:?}");
    assert_eq!(s.counted_samples, 0, "{s:?}");
}

#[test]
fn traffic_just_below_the_estimate_does_not_drag_it_down() {
    // 80 Mbit/s offered on a 100 Mbit/s link guessed right: below the loaded fraction.
    let model = Model {
        app_bps: Some(mbit(80)),
        ..Model::tbf(mbit(100))
    };
    let r = run(model, mbit(100), Duration::from_secs(10), |_| None);
    let min = after(&r.trace, Duration::ZERO).min().unwrap();
    assert!(min >= mbit(95), "estimate fell to {min}");
}

#[test]
fn traffic_that_loads_the_pacer_but_not_the_link_does_not_sink_the_estimate() {
    // 95 Mbit/s on a 100 Mbit/s link guessed right: above the loaded fraction of the pacer,
    // but the link delivers everything (no deficit, no loss), so the link was not the limit:
    // the estimate must not sink to the traffic's rate.
    let model = Model {
        app_bps: Some(mbit(95)),
        ..Model::tbf(mbit(100))
    };
    let r = run(model, mbit(100), Duration::from_secs(10), |_| None);
    let min = after(&r.trace, Duration::ZERO).min().unwrap();
    assert!(min >= mbit(99), "estimate fell to {min}\n{:?}", r.trace);
}

#[test]
fn random_loss_does_not_ratchet_the_estimate_down() {
    // 3 % random loss and no queue: above the loss threshold, but not congestion.
    let model = Model {
        loss: 0.03,
        ..Model::tbf(mbit(200))
    };
    let r = run(model, mbit(200), Duration::from_secs(10), |_| None);
    for e in after(&r.trace, Duration::from_secs(2)) {
        assert!(within(e, 200e6 * 0.97, 0.08), "estimate {e}\n{:?}", r.trace);
    }
}

#[test]
fn follows_a_link_that_slows_down_within_a_second() {
    let r = run(
        Model::tbf(mbit(300)),
        mbit(300),
        Duration::from_secs(6),
        |t| (t == Instant::from_millis(3000)).then(|| Model::tbf(mbit(100))),
    );
    for e in after(&r.trace, Duration::from_millis(2500)).take(4) {
        assert!(
            within(e, 300e6, 0.10),
            "before the change {e}\n{:?}",
            r.trace
        );
    }
    for e in after(&r.trace, Duration::from_millis(4000)) {
        assert!(
            within(e, 100e6, 0.10),
            "after the change {e}\n{:?}",
            r.trace
        );
    }
    assert!(r.est.stats(NIC).unwrap().congestion_count >= 1);
}

#[test]
fn a_link_that_delivers_nothing_stops_at_the_floor() {
    let model = Model {
        loss: 1.0,
        ..Model::tbf(mbit(100))
    };
    let r = run(model, mbit(100), Duration::from_secs(5), |_| None);
    let s = r.est.stats(NIC).unwrap();
    assert_eq!(s.estimate_bps, CapacityConfig::default().min_bps, "{s:?}");
    assert!(s.pacing_bps >= CapacityConfig::default().min_bps, "{s:?}");
}

#[test]
fn one_sample_moves_the_estimate_by_at_most_a_factor_of_two() {
    let mut est = CapacityEstimator::new(CapacityConfig::default());
    let t0 = Instant::ZERO;
    est.add_link(t0, NIC, mbit(100));
    let t1 = t0 + Duration::from_millis(100);
    est.on_probe_sent(t0, NIC, 0, 0);
    est.on_probe_sent(t1, NIC, 1, 10_000_000);
    // 10 MB in 100 ms = 800 Mbit/s delivered: above the estimate, so it counts, but ×2 at most.
    est.on_probe_reply(t1, NIC, 0, t0, t0, 0);
    est.on_probe_reply(t1, NIC, 1, t1, t1, 10_000_000);
    let s = *est.stats(NIC).unwrap();
    assert_eq!(s.samples, 1);
    assert_eq!(s.delivery_bps, mbit(800));
    assert_eq!(s.estimate_bps, mbit(200));
    assert_eq!(
        s.pacing_bps,
        mbit(400),
        "startup paces at twice the estimate"
    );
}

#[test]
fn stale_duplicate_and_restart_replies_are_counted_not_sampled() {
    let mut est = CapacityEstimator::new(CapacityConfig::default());
    est.add_link(Instant::ZERO, NIC, mbit(100));
    let t = |ms| Instant::from_millis(ms);
    est.on_probe_sent(t(0), NIC, 0, 1000);
    // Wrong timestamp, unknown seq: stale.
    est.on_probe_reply(t(1), NIC, 0, t(5), t(1), 1000);
    est.on_probe_reply(t(1), NIC, 7, t(0), t(1), 1000);
    assert_eq!(est.stats(NIC).unwrap().stale_reply_count, 2);
    est.on_probe_reply(t(1), NIC, 0, t(0), t(1), 1000);
    // The same reply again: stale.
    est.on_probe_reply(t(1), NIC, 0, t(0), t(1), 1000);
    assert_eq!(est.stats(NIC).unwrap().stale_reply_count, 3);
    // The peer restarted: its counter went back. No sample, a restart.
    est.on_probe_sent(t(200), NIC, 1, 3_000_000);
    est.on_probe_reply(t(201), NIC, 1, t(200), t(201), 10);
    let s = est.stats(NIC).unwrap();
    assert_eq!((s.samples, s.restart_count), (0, 1), "{s:?}");
    assert_eq!(s.estimate_bps, mbit(100));
    // Down drops the start point too.
    est.on_link_down(NIC);
    assert_eq!(est.stats(NIC).unwrap().restart_count, 2);
    // Unknown NICs are ignored.
    est.on_probe_sent(t(300), NicId(5), 0, 0);
    est.on_link_down(NicId(200));
    assert!(est.stats(NicId(5)).is_none());
}

#[test]
fn phases_cycle_and_links_are_offset() {
    let mut seen = [false; 5];
    // Probes without replies: the cycle runs on rounds alone.
    let mut est = CapacityEstimator::new(CapacityConfig::default());
    est.add_link(Instant::ZERO, NIC, mbit(100));
    est.add_link(Instant::ZERO, NicId(1), mbit(100));
    for k in 0..2000u64 {
        let now = Instant::from_millis(5 * k);
        est.on_probe_sent(now, NIC, k, 0);
        est.on_probe_sent(now, NicId(1), k, 0);
        let phase = est.stats(NIC).unwrap().phase;
        seen[phase as usize] = true;
        if k == 40 {
            // Leave Startup (that takes samples) for the cycle.
            est.links[0]
                .as_mut()
                .unwrap()
                .enter(now, CapacityPhase::Cruise, &est.config);
            est.links[1]
                .as_mut()
                .unwrap()
                .enter(now, CapacityPhase::Cruise, &est.config);
        }
    }
    assert!(seen[CapacityPhase::ProbeUp as usize] && seen[CapacityPhase::ProbeDown as usize]);
    assert!(seen[CapacityPhase::Cruise as usize] && seen[CapacityPhase::Startup as usize]);
    // The gains apply to the pacing rate.
    for phase in [
        CapacityPhase::Startup,
        CapacityPhase::Drain,
        CapacityPhase::ProbeUp,
        CapacityPhase::ProbeDown,
        CapacityPhase::Cruise,
    ] {
        let link = est.links[0].as_mut().unwrap();
        link.enter(Instant::from_millis(20_000), phase, &est.config);
        let s = link.stats;
        assert_eq!(s.pacing_bps as f64, s.estimate_bps as f64 * phase.gain());
        assert!(!phase.label().is_empty());
    }
}

#[test]
fn nics_probe_upward_at_different_times() {
    let mut est = CapacityEstimator::new(CapacityConfig::default());
    for n in 0..3 {
        est.add_link(Instant::ZERO, NicId(n), mbit(100));
    }
    let mut first_probe_up = [None; 3];
    for k in 0..1000u64 {
        let now = Instant::from_millis(5 * k);
        for n in 0..3u8 {
            if k == 0 {
                let cfg = est.config;
                est.links[usize::from(n)]
                    .as_mut()
                    .unwrap()
                    .enter(now, CapacityPhase::Cruise, &cfg);
            }
            est.on_probe_sent(now, NicId(n), k, 0);
            if est.stats(NicId(n)).unwrap().phase == CapacityPhase::ProbeUp {
                first_probe_up[usize::from(n)].get_or_insert(k);
            }
        }
    }
    let [a, b, c] = first_probe_up.map(Option::unwrap);
    assert!(a != b && b != c && a != c, "{first_probe_up:?}");
}

proptest! {
    /// Any sequence of calls with any numbers: no panic, and the estimate and the pacing rate
    /// stay within the bounds.
    #[test]
    fn arbitrary_calls_keep_the_bounds(
        guess in any::<u64>(),
        ops in proptest::collection::vec(
            (0u8..5, any::<u64>(), 0u64..70, any::<u64>(), any::<u64>(), any::<u64>()),
            0..200,
        ),
    ) {
        let cfg = CapacityConfig::default();
        let mut est = CapacityEstimator::new(cfg);
        est.add_link(Instant::ZERO, NIC, guess);
        let mut now = Instant::ZERO;
        for (op, step, seq, a, b, c) in ops {
            now = now.saturating_add(Duration::from_nanos(step % 200_000_000));
            match op {
                0 => est.on_probe_sent(now, NIC, seq, a),
                1 => {
                    let (echo, rx) = (Instant::from_nanos(a), Instant::from_nanos(b));
                    est.on_probe_reply(now, NIC, seq, echo, rx, c);
                }
                2 => {
                    // A consistent reply to the latest probe of this seq.
                    let sent = est.links[0].as_ref().unwrap().sent[slot(seq)];
                    est.on_probe_reply(now, NIC, sent.seq, sent.at, Instant::from_nanos(b), c);
                }
                3 => est.on_link_down(NIC),
                _ => est.set_estimate(now, NIC, a),
            }
            let s = est.stats(NIC).unwrap();
            prop_assert!(s.estimate_bps >= cfg.min_bps && s.estimate_bps <= cfg.max_bps);
            prop_assert!(s.pacing_bps >= cfg.min_bps && s.pacing_bps <= cfg.max_bps);
            prop_assert!((0.0..=1.0).contains(&s.loss));
        }
    }
}
