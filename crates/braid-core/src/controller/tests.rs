//! Scenario tests of the flow controller: admission, rebalance, hysteresis, rate bound, dwell,
//! overflow, failover, degraded NICs, stripe/duplicate sets, and load measurement.

use std::vec::Vec;

use super::*;
use crate::time::Instant;
use crate::types::{FlowId, NicId, NicSet};

const M: u64 = 1_000_000;

fn ms(n: u64) -> Instant {
    Instant::from_millis(n)
}

fn set(ids: &[u8]) -> NicSet {
    ids.iter().map(|&i| NicId(i)).collect()
}

/// A controller with NICs `0..caps.len()` of `caps[i]` Mbit/s.
fn ctl(config: ControllerConfig, caps_mbps: &[u64]) -> FlowController {
    let mut c = FlowController::new(config);
    for (i, &cap) in caps_mbps.iter().enumerate() {
        c.add_nic(NicConfig {
            id: NicId(i as u8),
            capacity_bps: cap * M,
        })
        .unwrap();
    }
    c
}

fn pin(c: &mut FlowController, now: Instant, flow: u32, nic: u8, mbps: u64) -> AssignOutcome {
    c.assign_flow(
        now,
        FlowId(flow),
        NicId(nic),
        mbps * M,
        OverflowPolicy::Reject,
    )
}

fn nics_of(c: &FlowController, flow: u32) -> NicSet {
    c.assignment(FlowId(flow)).expect("flow assigned").nics
}

fn drain(c: &mut FlowController) -> Vec<ControllerEvent> {
    core::iter::from_fn(|| c.poll_event()).collect()
}

fn committed_mbps(c: &FlowController, nic: u8) -> u64 {
    c.nic(NicId(nic)).unwrap().committed_bps / M
}

#[test]
fn admission_with_room() {
    let mut c = ctl(ControllerConfig::default(), &[100, 100]);
    assert_eq!(
        pin(&mut c, ms(0), 1, 0, 50),
        AssignOutcome::Admitted(set(&[0]))
    );
    // 50 + 45 = 95 = 100 × (1 − 0.05): exactly at the limit is admitted.
    assert_eq!(
        pin(&mut c, ms(0), 2, 0, 45),
        AssignOutcome::Admitted(set(&[0]))
    );
    let n0 = c.nic(NicId(0)).unwrap();
    assert_eq!(
        (n0.committed_bps, n0.demand_bps, n0.flows),
        (95 * M, 95 * M, 2)
    );
    // place_flow picks the least-utilised Up NIC.
    let out = c.place_flow(
        ms(0),
        FlowId(3),
        FlowPolicy::Pin,
        10 * M,
        OverflowPolicy::Reject,
    );
    assert_eq!(out, AssignOutcome::Admitted(set(&[1])));
    assert_eq!(c.stats().admitted, 3);
    assert_eq!(c.stats().moves, 0);
    assert!(drain(&mut c).is_empty());
    // Removing a flow frees its load.
    c.remove_flow(FlowId(1));
    assert_eq!(committed_mbps(&c, 0), 45);
    assert_eq!(c.nic(NicId(0)).unwrap().flows, 1);
}

#[test]
fn full_nic_rebalances_a_smaller_flow_then_admits() {
    let mut c = ctl(ControllerConfig::default(), &[100, 100]);
    pin(&mut c, ms(0), 1, 0, 60);
    pin(&mut c, ms(0), 2, 0, 30);
    pin(&mut c, ms(0), 3, 1, 20);
    drain(&mut c);
    // nic0: 90 + 20 > 95. Moving flow 2 (30, the smallest that frees the 15 needed) to nic1
    // makes room.
    let out = pin(&mut c, ms(10), 4, 0, 20);
    assert_eq!(
        out,
        AssignOutcome::AdmittedAfterRebalance {
            nics: set(&[0]),
            moved: 1
        }
    );
    assert_eq!(nics_of(&c, 2), set(&[1]));
    assert_eq!(nics_of(&c, 1), set(&[0]), "the larger flow stays");
    assert_eq!((committed_mbps(&c, 0), committed_mbps(&c, 1)), (80, 50));
    assert_eq!(
        drain(&mut c),
        vec![ControllerEvent::FlowMoved {
            flow: FlowId(2),
            from: set(&[0]),
            to: set(&[1]),
            reason: MoveReason::Rebalance
        }]
    );
    assert_eq!(c.stats().moves, 1);
    assert_eq!(c.stats().admitted_after_rebalance, 1);
}

/// nic0: 3 + 91 = 94, nic1: 88; a new 3 on nic0 needs 2 freed. Moving the 3 to nic1 is
/// possible but only narrows the gap from 9 to 3 points.
fn tiny_imbalance(hysteresis: f64) -> (FlowController, AssignOutcome) {
    let cfg = ControllerConfig {
        hysteresis,
        ..ControllerConfig::default()
    };
    let mut c = ctl(cfg, &[100, 100]);
    pin(&mut c, ms(0), 1, 0, 3);
    pin(&mut c, ms(0), 2, 0, 91);
    pin(&mut c, ms(0), 3, 1, 88);
    let out = pin(&mut c, ms(0), 4, 0, 3);
    (c, out)
}

#[test]
fn hysteresis_keeps_tiny_imbalances_from_moving_flows() {
    let (c, out) = tiny_imbalance(0.10);
    assert_eq!(out, AssignOutcome::Rejected);
    assert_eq!(c.stats().moves, 0);
    assert_eq!(c.stats().moves_suppressed_by_hysteresis, 1);
    assert_eq!(nics_of(&c, 1), set(&[0]));
    // Control: without hysteresis the same situation does move the flow.
    let (c, out) = tiny_imbalance(0.0);
    assert_eq!(
        out,
        AssignOutcome::AdmittedAfterRebalance {
            nics: set(&[0]),
            moved: 1
        }
    );
    assert_eq!(nics_of(&c, 1), set(&[1]));
}

#[test]
fn rate_limit_moves_one_flow_per_second() {
    let cfg = ControllerConfig {
        max_moves_per_sec: 1,
        ..ControllerConfig::default()
    };
    let mut c = ctl(cfg, &[1000, 1000]);
    for f in 1..=4 {
        pin(&mut c, ms(0), f, 0, 200);
    }
    // Pressure 1 at t=0: one move (token available).
    assert!(matches!(
        pin(&mut c, ms(0), 10, 0, 300),
        AssignOutcome::AdmittedAfterRebalance { moved: 1, .. }
    ));
    // Pressure 2 at 10 ms and 500 ms: a move would help, but the bucket is empty.
    assert_eq!(pin(&mut c, ms(10), 11, 0, 100), AssignOutcome::Rejected);
    assert_eq!(pin(&mut c, ms(500), 11, 0, 100), AssignOutcome::Rejected);
    assert_eq!(c.stats().moves, 1);
    assert_eq!(c.stats().moves_suppressed_by_rate_limit, 2);
    // One second after the first move, the next one is allowed.
    assert!(matches!(
        pin(&mut c, ms(1000), 11, 0, 100),
        AssignOutcome::AdmittedAfterRebalance { moved: 1, .. }
    ));
    assert_eq!(c.stats().moves, 2);
    assert_eq!((committed_mbps(&c, 0), committed_mbps(&c, 1)), (800, 400));
    let moves = drain(&mut c)
        .into_iter()
        .filter(|e| matches!(e, ControllerEvent::FlowMoved { .. }))
        .count();
    assert_eq!(moves, 2);
}

#[test]
fn min_dwell_prevents_flapping_back() {
    let mut c = ctl(ControllerConfig::default(), &[100, 100]);
    pin(&mut c, ms(0), 1, 0, 40);
    pin(&mut c, ms(0), 2, 0, 50);
    // Flow 1 is moved nic0 → nic1 to admit flow 3.
    assert!(matches!(
        pin(&mut c, ms(0), 3, 0, 30),
        AssignOutcome::AdmittedAfterRebalance { moved: 1, .. }
    ));
    assert_eq!(nics_of(&c, 1), set(&[1]));
    // nic0 empties; now pressure on nic1 would move flow 1 straight back: the flap.
    c.remove_flow(FlowId(2));
    c.remove_flow(FlowId(3));
    assert_eq!(pin(&mut c, ms(100), 4, 1, 60), AssignOutcome::Rejected);
    assert_eq!(nics_of(&c, 1), set(&[1]), "flow 1 did not bounce back");
    assert_eq!(c.stats().moves_suppressed_by_dwell, 1);
    assert_eq!(c.stats().moves, 1);
    // After the dwell the move is a legitimate rebalance.
    assert!(matches!(
        pin(&mut c, ms(1100), 4, 1, 60),
        AssignOutcome::AdmittedAfterRebalance { moved: 1, .. }
    ));
    assert_eq!(nics_of(&c, 1), set(&[0]));
    assert_eq!(c.stats().moves, 2);
}

#[test]
fn all_full_reject_or_queue_then_admit_from_queue() {
    let cfg = ControllerConfig {
        max_queued: 1,
        ..ControllerConfig::default()
    };
    let mut c = ctl(cfg, &[100, 100]);
    pin(&mut c, ms(0), 1, 0, 90);
    pin(&mut c, ms(0), 2, 1, 90);
    drain(&mut c);
    let r = c.place_flow(
        ms(0),
        FlowId(3),
        FlowPolicy::Pin,
        20 * M,
        OverflowPolicy::Reject,
    );
    assert_eq!(r, AssignOutcome::Rejected);
    assert!(c.assignment(FlowId(3)).is_none());
    let q = c.place_flow(
        ms(0),
        FlowId(4),
        FlowPolicy::Pin,
        20 * M,
        OverflowPolicy::Queue,
    );
    assert_eq!(q, AssignOutcome::Queued);
    assert!(c.is_queued(FlowId(4)));
    // The queue holds one: the next is rejected with QueueFull.
    let q2 = c.assign_flow(ms(0), FlowId(5), NicId(0), 20 * M, OverflowPolicy::Queue);
    assert_eq!(q2, AssignOutcome::Rejected);
    assert_eq!(
        drain(&mut c),
        vec![
            ControllerEvent::FlowRejected {
                flow: FlowId(3),
                reason: RejectReason::NoRoom
            },
            ControllerEvent::FlowRejected {
                flow: FlowId(5),
                reason: RejectReason::QueueFull
            },
        ]
    );
    let s = *c.stats();
    assert_eq!((s.rejected, s.queue_full, s.queued), (2, 1, 1));
    // Still no room: stays queued.
    c.handle_timeout(ms(100));
    assert!(c.is_queued(FlowId(4)));
    // Room appears on nic1.
    c.remove_flow(FlowId(2));
    c.handle_timeout(ms(200));
    assert!(!c.is_queued(FlowId(4)));
    assert_eq!(nics_of(&c, 4), set(&[1]));
    assert_eq!(c.stats().admitted_from_queue, 1);
    assert_eq!(
        drain(&mut c),
        vec![ControllerEvent::FlowAdmittedFromQueue {
            flow: FlowId(4),
            nics: set(&[1])
        }]
    );
}

#[test]
fn nic_down_moves_every_flow_off_it() {
    let mut c = ctl(ControllerConfig::default(), &[100, 100, 100]);
    for f in 0..6u32 {
        pin(&mut c, ms(0), f, (f % 3) as u8, 10);
    }
    let stripe = c.place_flow(
        ms(0),
        FlowId(100),
        FlowPolicy::Stripe(set(&[0, 1, 2])),
        30 * M,
        OverflowPolicy::Reject,
    );
    assert_eq!(stripe, AssignOutcome::Admitted(set(&[0, 1, 2])));
    assert_eq!(
        committed_mbps(&c, 0),
        30,
        "20 pinned + a third of the stripe"
    );
    drain(&mut c);

    c.set_nic_state(ms(50), NicId(0), NicState::Down);
    for (flow, a) in c.flows() {
        assert!(!a.nics.contains(NicId(0)), "{flow} left on the down NIC");
        assert!(!a.nics.is_empty(), "{flow} black-holed");
    }
    let n0 = c.nic(NicId(0)).unwrap();
    assert_eq!((n0.flows, n0.committed_bps), (0, 0));
    assert_eq!(nics_of(&c, 100), set(&[1, 2]));
    assert_eq!(committed_mbps(&c, 1) + committed_mbps(&c, 2), 90);
    let ev = drain(&mut c);
    assert_eq!(
        ev[0],
        ControllerEvent::NicStateChanged {
            nic: NicId(0),
            from: NicState::Up,
            to: NicState::Down
        }
    );
    let mut moved: Vec<u32> = ev[1..]
        .iter()
        .map(|e| match *e {
            ControllerEvent::FlowMoved {
                flow,
                from,
                reason: MoveReason::NicDown,
                ..
            } => {
                assert!(from.contains(NicId(0)));
                flow.0
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    moved.sort_unstable();
    assert_eq!(moved, vec![0, 3, 100]);
    assert_eq!(c.stats().failover_moves, 3);
    assert_eq!(c.stats().moves, 0, "failover is not counted as rebalance");
    assert_eq!(c.usable_nics(), set(&[1, 2]));
}

#[test]
fn failover_overcommits_rather_than_black_holes_and_strands_only_with_no_nic() {
    let mut c = ctl(ControllerConfig::default(), &[100, 100]);
    pin(&mut c, ms(0), 1, 0, 80);
    pin(&mut c, ms(0), 2, 1, 80);
    c.set_nic_state(ms(1), NicId(0), NicState::Down);
    assert_eq!(nics_of(&c, 1), set(&[1]));
    assert_eq!(committed_mbps(&c, 1), 160);
    assert_eq!(c.stats().failover_overcommit, 1);
    c.set_nic_state(ms(2), NicId(1), NicState::Down);
    assert!(nics_of(&c, 1).is_empty() && nics_of(&c, 2).is_empty());
    assert_eq!(c.stats().stranded, 2);
    drain(&mut c);
    // A NIC returns: stranded flows are placed on it.
    c.set_nic_state(ms(3), NicId(0), NicState::Up);
    assert_eq!(nics_of(&c, 1), set(&[0]));
    assert_eq!(nics_of(&c, 2), set(&[0]));
    let up_moves = drain(&mut c)
        .iter()
        .filter(|e| {
            matches!(
                e,
                ControllerEvent::FlowMoved {
                    reason: MoveReason::NicUp,
                    ..
                }
            )
        })
        .count();
    assert_eq!(up_moves, 2);
}

#[test]
fn degraded_nics_used_only_when_up_ones_lack_room() {
    let mut c = ctl(ControllerConfig::default(), &[100, 100]);
    c.set_nic_state(ms(0), NicId(0), NicState::Degraded);
    // nic0 is empty (least utilised) but degraded: the Up nic1 is chosen.
    let place = |c: &mut FlowController, f: u32, mbps: u64| {
        c.place_flow(
            ms(0),
            FlowId(f),
            FlowPolicy::Pin,
            mbps * M,
            OverflowPolicy::Reject,
        )
    };
    assert_eq!(place(&mut c, 1, 30), AssignOutcome::Admitted(set(&[1])));
    assert_eq!(place(&mut c, 2, 60), AssignOutcome::Admitted(set(&[1])));
    // nic1 at 90: a 30 no longer fits on an Up NIC → the degraded one.
    assert_eq!(place(&mut c, 3, 30), AssignOutcome::Admitted(set(&[0])));
    assert_eq!(c.usable_nics(), set(&[0, 1]));
}

#[test]
fn stripe_and_duplicate_sets_lose_and_regain_a_nic() {
    let mut c = ctl(ControllerConfig::default(), &[100, 100, 200]);
    let s = FlowPolicy::Stripe(set(&[0, 1, 2]));
    let d = FlowPolicy::Duplicate(set(&[0, 1]));
    assert_eq!(
        c.place_flow(ms(0), FlowId(1), s, 40 * M, OverflowPolicy::Reject),
        AssignOutcome::Admitted(set(&[0, 1, 2]))
    );
    assert_eq!(
        c.place_flow(ms(0), FlowId(2), d, 5 * M, OverflowPolicy::Reject),
        AssignOutcome::Admitted(set(&[0, 1]))
    );
    // Stripe shares follow capacity (10/10/20), duplicate counts in full on each NIC.
    assert_eq!(
        (
            committed_mbps(&c, 0),
            committed_mbps(&c, 1),
            committed_mbps(&c, 2)
        ),
        (15, 15, 20)
    );
    c.set_nic_state(ms(10), NicId(1), NicState::Down);
    assert_eq!(nics_of(&c, 1), set(&[0, 2]));
    assert_eq!(nics_of(&c, 2), set(&[0]));
    assert_eq!(committed_mbps(&c, 1), 0);
    // 40 split 100:200 over nic0 and nic2, plus the duplicate's 5 on nic0.
    assert_eq!((committed_mbps(&c, 0), committed_mbps(&c, 2)), (18, 26));
    drain(&mut c);
    c.set_nic_state(ms(20), NicId(1), NicState::Up);
    assert_eq!(nics_of(&c, 1), set(&[0, 1, 2]));
    assert_eq!(nics_of(&c, 2), set(&[0, 1]));
    assert_eq!(
        (
            committed_mbps(&c, 0),
            committed_mbps(&c, 1),
            committed_mbps(&c, 2)
        ),
        (15, 15, 20)
    );
    let regained: Vec<_> = drain(&mut c)
        .into_iter()
        .filter_map(|e| match e {
            ControllerEvent::FlowMoved {
                flow,
                to,
                reason: MoveReason::NicUp,
                ..
            } => Some((flow.0, to)),
            _ => None,
        })
        .collect();
    assert_eq!(regained.len(), 2);
    assert!(regained.contains(&(1, set(&[0, 1, 2]))));
    assert!(regained.contains(&(2, set(&[0, 1]))));
}

#[test]
fn periodic_rebalance_after_recovery_respects_dwell_and_rate() {
    let cfg = ControllerConfig {
        max_moves_per_sec: 1,
        ..ControllerConfig::default()
    };
    let mut c = ctl(cfg, &[100, 100]);
    for f in 0..4u32 {
        pin(&mut c, ms(0), f, 0, 20);
    }
    // Every flow fails over to nic1 and starts a dwell.
    c.set_nic_state(ms(0), NicId(0), NicState::Down);
    c.set_nic_state(ms(100), NicId(0), NicState::Up);
    assert_eq!((committed_mbps(&c, 0), committed_mbps(&c, 1)), (0, 80));
    // Within the dwell of the failover moves: nothing moves back.
    c.handle_timeout(ms(200));
    assert_eq!(c.stats().moves, 0);
    assert!(c.stats().moves_suppressed_by_dwell >= 1);
    // After the dwell: one move per second.
    c.handle_timeout(ms(1100));
    assert_eq!(c.stats().moves, 1);
    assert_eq!(c.stats().moves_suppressed_by_rate_limit, 1);
    assert_eq!((committed_mbps(&c, 0), committed_mbps(&c, 1)), (20, 60));
    c.handle_timeout(ms(1500));
    assert_eq!(c.stats().moves, 1);
    c.handle_timeout(ms(2100));
    assert_eq!((committed_mbps(&c, 0), committed_mbps(&c, 1)), (40, 40));
    // Balanced: further checks move nothing, even with credit available.
    c.handle_timeout(ms(9000));
    assert_eq!(c.stats().moves, 2);
}

#[test]
fn ewma_converges_within_a_few_tau_with_irregular_samples() {
    use rand::{RngExt, SeedableRng};
    let mut c = ctl(ControllerConfig::default(), &[1000]);
    pin(&mut c, ms(0), 1, 0, 10);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    // 80 Mbit/s = 10 bytes/µs, sent at irregular intervals of 50 µs to 3 ms.
    let mut t_us = 0u64;
    while t_us < 500_000 {
        let dt = rng.random_range(50..3_000u64);
        t_us += dt;
        c.observe(Instant::from_micros(t_us), FlowId(1), dt * 10);
    }
    let measured = c.assignment(FlowId(1)).unwrap().measured_bps as f64;
    assert!(
        (measured / 80e6 - 1.0).abs() < 0.06,
        "after 5 tau: {measured}"
    );
    let nic = c.nic(NicId(0)).unwrap();
    assert!((nic.load_bps as f64 / 80e6 - 1.0).abs() < 0.06);
    // Admission load is max(demand 10, measured 80).
    assert!((nic.committed_bps as f64 / 80e6 - 1.0).abs() < 0.06);
    // Silence: decays to < 1 % within 5 tau (handle_timeout refreshes).
    c.handle_timeout(Instant::from_micros(t_us + 500_000));
    let a = c.assignment(FlowId(1)).unwrap();
    assert!(a.measured_bps < 800_000, "{}", a.measured_bps);
    assert_eq!(
        c.nic(NicId(0)).unwrap().committed_bps,
        10 * M,
        "back to the declared demand"
    );
}

#[test]
fn exp_neg_matches_std() {
    let mut x = 0.0;
    while x < 40.0 {
        let rel = (exp_neg(x) / (-x).exp() - 1.0).abs();
        assert!(rel < 1e-8, "x={x}: {rel}");
        x += 0.013;
    }
    assert_eq!(exp_neg(-1.0), 1.0);
    assert_eq!(exp_neg(1000.0), 0.0);
    assert_eq!(exp_neg(f64::NAN), 0.0);
}

#[test]
fn bounds_flows_events_and_setup_errors() {
    let cfg = ControllerConfig {
        max_flows: 2,
        max_events: 2,
        ..ControllerConfig::default()
    };
    let mut c = ctl(cfg, &[100]);
    pin(&mut c, ms(0), 1, 0, 1);
    pin(&mut c, ms(0), 2, 0, 1);
    assert_eq!(pin(&mut c, ms(0), 3, 0, 1), AssignOutcome::Rejected);
    assert_eq!(pin(&mut c, ms(0), 4, 0, 1), AssignOutcome::Rejected);
    assert_eq!(pin(&mut c, ms(0), 5, 0, 1), AssignOutcome::Rejected);
    assert_eq!(c.stats().rejected_flow_limit, 3);
    assert_eq!(c.flow_count(), 2);
    // Event queue of 2: the oldest rejection was dropped and counted.
    assert_eq!(c.stats().events_dropped, 1);
    assert_eq!(
        drain(&mut c),
        vec![
            ControllerEvent::FlowRejected {
                flow: FlowId(4),
                reason: RejectReason::FlowLimit
            },
            ControllerEvent::FlowRejected {
                flow: FlowId(5),
                reason: RejectReason::FlowLimit
            },
        ]
    );
    // Re-assigning an existing flow replaces it (does not count against the limit).
    assert_eq!(
        pin(&mut c, ms(0), 2, 0, 5),
        AssignOutcome::Admitted(set(&[0]))
    );
    assert_eq!(committed_mbps(&c, 0), 6);

    let nic = |id, cap| NicConfig {
        id: NicId(id),
        capacity_bps: cap,
    };
    assert_eq!(
        c.add_nic(nic(0, 1)),
        Err(ControllerError::DuplicateNic { nic: NicId(0) })
    );
    assert_eq!(
        c.add_nic(nic(32, 1)).unwrap_err().to_string(),
        "nic id 32 is not below 32"
    );
    assert_eq!(
        c.add_nic(nic(3, 0)).unwrap_err().to_string(),
        "nic3 has zero capacity"
    );
    assert_eq!(
        c.set_capacity(NicId(9), 5),
        Err(ControllerError::UnknownNic { nic: NicId(9) })
    );
    let bad = ControllerConfig {
        headroom: 1.0,
        ..ControllerConfig::default()
    };
    assert_eq!(
        FlowController::try_new(bad).unwrap_err().to_string(),
        "controller config field headroom out of range"
    );
}

#[test]
fn set_capacity_and_remove_nic_reaccount() {
    let mut c = ctl(ControllerConfig::default(), &[100, 100]);
    c.place_flow(
        ms(0),
        FlowId(1),
        FlowPolicy::Stripe(set(&[0, 1])),
        40 * M,
        OverflowPolicy::Reject,
    );
    pin(&mut c, ms(0), 2, 0, 10);
    c.set_capacity(NicId(1), 300 * M).unwrap();
    assert_eq!((committed_mbps(&c, 0), committed_mbps(&c, 1)), (20, 30));
    c.remove_nic(ms(1), NicId(0)).unwrap();
    assert!(c.nic(NicId(0)).is_none());
    assert_eq!(nics_of(&c, 1), set(&[1]));
    assert_eq!(nics_of(&c, 2), set(&[1]));
    assert_eq!(committed_mbps(&c, 1), 50);
    assert_eq!(
        c.remove_nic(ms(1), NicId(0)),
        Err(ControllerError::UnknownNic { nic: NicId(0) })
    );
}
