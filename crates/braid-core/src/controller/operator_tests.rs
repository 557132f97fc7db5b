//! Operator moves and pins ([`FlowController::move_flow_to`]): admission as `assign_flow`'s
//! but a refusal leaves the flow where it was; a pinned flow is never moved to rebalance (the
//! periodic one, or room-making for another flow's admission); failover moves it and clears
//! the pin; `pin = false` unpins.

use std::vec::Vec;

use super::*;
use crate::time::Instant;
use crate::types::{FlowId, NicId, NicSet};

const M: u64 = 1_000_000;

fn ms(n: u64) -> Instant {
    Instant::from_millis(n)
}

/// A controller with NICs `0..caps.len()` of `caps[i]` Mbit/s.
fn ctl(caps_mbps: &[u64]) -> FlowController {
    let mut c = FlowController::new(ControllerConfig::default());
    for (i, &cap) in caps_mbps.iter().enumerate() {
        c.add_nic(NicConfig {
            id: NicId(u8::try_from(i).unwrap()),
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

fn committed_mbps(c: &FlowController, nic: u8) -> u64 {
    c.nic(NicId(nic)).unwrap().committed_bps / M
}

fn drain(c: &mut FlowController) -> Vec<ControllerEvent> {
    core::iter::from_fn(|| c.poll_event()).collect()
}

#[test]
fn a_move_is_admitted_keeps_the_measured_rate_and_says_operator() {
    let mut c = ctl(&[100, 100]);
    pin(&mut c, ms(0), 1, 0, 10);
    // The flow sends 30 Mbit/s for a second: its measured rate is its load.
    for i in 1..=1000 {
        c.observe(ms(i), FlowId(1), 30 * M / 8 / 1000);
    }
    let measured = c.assignment(FlowId(1)).unwrap().measured_bps;
    assert!((28 * M..=31 * M).contains(&measured), "{measured}");
    drain(&mut c);
    let out = c.move_flow_to(ms(1000), FlowId(1), NicId(1), 0, false);
    assert_eq!(out, Ok(AssignOutcome::Admitted(NicSet::single(NicId(1)))));
    let a = c.assignment(FlowId(1)).unwrap();
    assert_eq!(a.nics, NicSet::single(NicId(1)));
    assert_eq!((a.demand_bps, a.measured_bps), (10 * M, measured));
    assert_eq!(committed_mbps(&c, 0), 0);
    assert_eq!(
        committed_mbps(&c, 1),
        measured / M,
        "its load moved with it"
    );
    assert!(!c.is_pinned(FlowId(1)));
    assert_eq!(
        drain(&mut c),
        vec![ControllerEvent::FlowMoved {
            flow: FlowId(1),
            from: NicSet::single(NicId(0)),
            to: NicSet::single(NicId(1)),
            reason: MoveReason::Operator,
        }]
    );
    assert_eq!(c.stats().operator_moves, 1);
    assert_eq!(c.stats().moves, 0, "not a rebalance");
    let rate = c.flow_rate_bps(FlowId(1), ms(1000)).unwrap();
    assert!(rate.abs_diff(measured) < M, "{rate} vs {measured}");
    assert!(
        c.flow_rate_bps(FlowId(1), ms(1500)).unwrap() < rate / 10,
        "decays to now"
    );
}

#[test]
fn a_refused_move_leaves_the_flow_where_it_was() {
    let mut c = ctl(&[100, 100]);
    pin(&mut c, ms(0), 1, 0, 50);
    pin(&mut c, ms(0), 4, 0, 45);
    pin(&mut c, ms(0), 2, 1, 90);
    // nic1 has no room for 50, and its one flow (90) has nowhere to go: nic0 keeps 45
    // without flow 1. Refused.
    drain(&mut c);
    let out = c.move_flow_to(ms(10), FlowId(1), NicId(1), 0, true);
    assert_eq!(out, Err(RejectReason::NoRoom));
    assert_eq!(nics_of(&c, 1), NicSet::single(NicId(0)), "still on nic0");
    assert_eq!(nics_of(&c, 2), NicSet::single(NicId(1)));
    assert_eq!((committed_mbps(&c, 0), committed_mbps(&c, 1)), (95, 90));
    assert!(!c.is_pinned(FlowId(1)), "no pin either");
    assert!(drain(&mut c).is_empty());
    assert_eq!(
        (c.stats().operator_moves, c.stats().operator_moves_refused),
        (0, 1)
    );
    // An unknown NIC, or a down one, has no room.
    assert_eq!(
        c.move_flow_to(ms(10), FlowId(1), NicId(7), 0, false),
        Err(RejectReason::NoRoom)
    );
    c.set_nic_state(ms(10), NicId(1), NicState::Down);
    assert_eq!(nics_of(&c, 2), NicSet::single(NicId(0)), "failover");
    assert_eq!(
        c.move_flow_to(ms(10), FlowId(1), NicId(1), 0, false),
        Err(RejectReason::NoRoom)
    );
    assert_eq!(nics_of(&c, 1), NicSet::single(NicId(0)));
}

#[test]
fn a_queued_flow_moved_leaves_the_queue_and_a_refused_one_stays_in_it() {
    let mut c = ctl(&[100, 100]);
    pin(&mut c, ms(0), 1, 0, 90);
    pin(&mut c, ms(0), 2, 1, 90);
    let q = c.assign_flow(ms(0), FlowId(3), NicId(0), 40 * M, OverflowPolicy::Queue);
    assert_eq!(q, AssignOutcome::Queued);
    assert_eq!(
        c.move_flow_to(ms(1), FlowId(3), NicId(1), 40 * M, false),
        Err(RejectReason::NoRoom)
    );
    assert!(
        c.is_queued(FlowId(3)),
        "a refused move keeps its queue place"
    );
    c.remove_flow(FlowId(2));
    assert_eq!(
        c.move_flow_to(ms(2), FlowId(3), NicId(1), 40 * M, true),
        Ok(AssignOutcome::Admitted(NicSet::single(NicId(1))))
    );
    assert!(!c.is_queued(FlowId(3)));
    assert!(c.is_pinned(FlowId(3)));
    assert_eq!(committed_mbps(&c, 1), 40);
}

/// nic0 carries two 40 Mbit/s flows, nic1 none: the periodic rebalance moves one of them,
/// unless both are pinned.
#[test]
fn rebalancing_skips_pinned_flows() {
    for pinned in [0usize, 1, 2] {
        let mut c = ctl(&[100, 100]);
        pin(&mut c, ms(0), 1, 0, 40);
        pin(&mut c, ms(0), 2, 0, 40);
        for f in 1..=u32::try_from(pinned).unwrap() {
            // Pinned where it is.
            assert!(c.move_flow_to(ms(0), FlowId(f), NicId(0), 0, true).is_ok());
        }
        drain(&mut c);
        // Past the dwell of an operator move that did not move (none started: same NIC).
        c.handle_timeout(ms(2000));
        let on1: Vec<u32> = [1, 2]
            .into_iter()
            .filter(|&f| nics_of(&c, f) == NicSet::single(NicId(1)))
            .collect();
        match pinned {
            0 => assert_eq!(on1.len(), 1, "one of two unpinned flows moved"),
            1 => assert_eq!(on1, vec![2], "only the unpinned one moved"),
            _ => assert!(on1.is_empty(), "pinned flows stay: {on1:?}"),
        }
        assert_eq!(c.stats().moves, u64::from(pinned < 2));
    }
}

/// nic0 is full of flows; a new flow's admission on nic0 makes room by moving one of them
/// to nic1, but never a pinned one.
#[test]
fn room_making_skips_pinned_flows() {
    let mut c = ctl(&[100, 100]);
    pin(&mut c, ms(0), 1, 0, 45);
    pin(&mut c, ms(0), 2, 0, 45);
    assert!(c.move_flow_to(ms(0), FlowId(1), NicId(0), 0, true).is_ok());
    assert!(c.move_flow_to(ms(0), FlowId(2), NicId(0), 0, true).is_ok());
    assert_eq!(pin(&mut c, ms(10), 3, 0, 20), AssignOutcome::Rejected);
    assert_eq!(nics_of(&c, 1), NicSet::single(NicId(0)));
    assert_eq!(nics_of(&c, 2), NicSet::single(NicId(0)));
    // Unpinned (moved in place with pin = false), flow 2 may be moved to make room.
    assert!(
        c.move_flow_to(ms(20), FlowId(2), NicId(0), 0, false)
            .is_ok()
    );
    assert!(!c.is_pinned(FlowId(2)));
    assert_eq!(
        pin(&mut c, ms(20), 3, 0, 20),
        AssignOutcome::AdmittedAfterRebalance {
            nics: NicSet::single(NicId(0)),
            moved: 1
        }
    );
    assert_eq!(nics_of(&c, 2), NicSet::single(NicId(1)));
    assert_eq!(nics_of(&c, 1), NicSet::single(NicId(0)), "pinned, stayed");
}

#[test]
fn a_nic_failure_moves_a_pinned_flow_and_clears_its_pin() {
    let mut c = ctl(&[100, 100, 100]);
    pin(&mut c, ms(0), 1, 0, 20);
    pin(&mut c, ms(0), 2, 2, 30);
    assert!(c.move_flow_to(ms(0), FlowId(1), NicId(1), 0, true).is_ok());
    assert!(c.move_flow_to(ms(0), FlowId(2), NicId(2), 0, true).is_ok());
    assert!(c.is_pinned(FlowId(1)));
    drain(&mut c);
    c.set_nic_state(ms(10), NicId(1), NicState::Down);
    assert_eq!(
        nics_of(&c, 1),
        NicSet::single(NicId(0)),
        "moved to the least-utilised NIC"
    );
    assert!(!c.is_pinned(FlowId(1)), "the failover cleared the pin");
    assert!(c.is_pinned(FlowId(2)), "a pin on another NIC stays");
    assert_eq!(c.stats().pins_cleared, 1);
    // The NIC comes back: the flow does not go back by itself.
    c.set_nic_state(ms(20), NicId(1), NicState::Up);
    assert_eq!(nics_of(&c, 1), NicSet::single(NicId(0)));
}
