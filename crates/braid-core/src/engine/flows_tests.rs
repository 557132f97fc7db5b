//! The flow table's snapshot, operator moves and the NICs' administrative state, on two
//! engines joined by an ideal in-memory wire: rows and pages, filters, where a moved flow's
//! packets go (the NICs' payload counters), refusals, failover of a pinned flow, and the
//! refusal to take down the last usable NIC.

use alloc::vec;
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr};
use core::time::Duration;

use super::*;
use crate::controller::RejectReason;
use crate::engine::{
    ClassMatch, ClassPolicy, Command, CommandError, EngineConfig, EngineEvent, FlowClass, NicSpec,
    RuleDirection, RuleTable, TxVerdict,
};
use crate::health::LinkState;
use crate::{FlowId, Instant, NicId, NicSet};

fn nics(n: u8) -> Vec<NicSpec> {
    (0..n)
        .map(|i| NicSpec::udp_ipv4(NicId(i), &alloc::format!("link{i}"), 1_000_000_000, 1500))
        .collect()
}

/// An IPv4/UDP packet 10.0.0.1:`sport` → 10.0.0.2:`dport` with `payload` bytes.
fn udp(sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    let mut p = vec![0u8; 28 + payload];
    braid_wire::ip::emit_udp_ipv4(
        &mut p,
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 2),
        sport,
        dport,
        0,
    )
    .unwrap();
    p
}

/// Move everything `a` and `b` transmit to the other, dropping what goes on `dead` NICs,
/// 10 µs steps until both are quiet (at most 100 ms). Returns what `b` delivered.
fn pump(a: &mut Engine, b: &mut Engine, mut now: Instant, dead: NicSet) -> (usize, Instant) {
    let mut buf = vec![0u8; 70_000];
    let mut delivered = 0;
    let end = now + Duration::from_millis(100);
    while now < end {
        a.handle_timeout(now);
        b.handle_timeout(now);
        while let Some(t) = a.poll_transmit(now, &mut buf) {
            if !dead.contains(t.nic) {
                b.handle_rx(now, t.nic, &buf[..t.len]);
            }
        }
        while let Some(t) = b.poll_transmit(now, &mut buf) {
            if !dead.contains(t.nic) {
                a.handle_rx(now, t.nic, &buf[..t.len]);
            }
        }
        while b.poll_deliver(now, &mut buf).is_some() {
            delivered += 1;
        }
        if a.tx_queued_bytes() == 0 && b.tx_queued_bytes() == 0 {
            break;
        }
        now += Duration::from_micros(10);
    }
    (delivered, now)
}

/// Payload bytes each NIC of `e` has sent so far.
fn payload(e: &Engine, n: u8) -> Vec<u64> {
    (0..n)
        .map(|i| e.nic_stats(NicId(i)).unwrap().tx_payload_bytes_count)
        .collect()
}

/// Send `count` packets of flow `sport` (500 B payload: 528 B each) and pump them across;
/// returns the payload bytes each NIC carried for them.
fn send(
    a: &mut Engine,
    b: &mut Engine,
    now: Instant,
    sport: u16,
    dport: u16,
    count: u32,
) -> (Vec<u64>, Instant) {
    let n = u8::try_from(a.config().nics.len()).unwrap();
    let before = payload(a, n);
    for _ in 0..count {
        assert_eq!(a.handle_tx(now, &udp(sport, dport, 500)), TxVerdict::Queued);
    }
    let (got, now) = pump(a, b, now, NicSet::EMPTY);
    assert_eq!(got, count as usize, "delivered");
    let after = payload(a, n);
    let delta = after.iter().zip(&before).map(|(x, y)| x - y).collect();
    (delta, now)
}

fn class(name: &str, matcher: ClassMatch, policy: ClassPolicy, demand_bps: u64) -> FlowClass {
    FlowClass {
        demand_bps,
        ..FlowClass::new(name, matcher, policy)
    }
}

/// The TX row of the flow from source port `sport`.
fn tx_row(e: &Engine, now: Instant, sport: u16) -> FlowRow {
    let q = FlowQuery {
        direction: Some(FlowDirection::Tx),
        port: Some(sport),
        ..FlowQuery::default()
    };
    let rows = e.flows(now, &q);
    assert_eq!(rows.len(), 1, "one flow from port {sport}: {rows:?}");
    rows.into_iter().next().unwrap()
}

/// Three NICs; class 0 "pinned" (UDP to 5000, one NIC by the controller), class 1 "feed"
/// (UDP to 7000, duplicated, strict), everything else striped (the default policy).
fn cfg3() -> EngineConfig {
    let mut cfg = EngineConfig::new(nics(3));
    cfg.classes.push(class(
        "pinned",
        ClassMatch::udp_dst_port(5000),
        ClassPolicy::Pin,
        0,
    ));
    cfg.classes.push(FlowClass::duplicated_feed(7000));
    cfg
}

fn pair(cfg: &EngineConfig) -> (Engine, Engine) {
    (
        Engine::new(cfg.clone(), Instant::ZERO).unwrap(),
        Engine::new(cfg.clone(), Instant::ZERO).unwrap(),
    )
}

#[test]
fn rows_say_what_each_flow_is() {
    let (mut a, mut b) = pair(&cfg3());
    let now = Instant::from_millis(1);
    let (_, now) = send(&mut a, &mut b, now, 40_000, 5000, 3);
    let (_, now) = send(&mut a, &mut b, now, 40_001, 7000, 2);
    let (_, t) = send(&mut a, &mut b, now, 40_002, 9999, 4);
    let later = t + Duration::from_millis(5);
    let rows = a.flows(later, &FlowQuery::default());
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows.windows(2).all(|w| w[0].id < w[1].id), "by id");
    let pinned = tx_row(&a, later, 40_000);
    assert_eq!(pinned.direction, FlowDirection::Tx);
    let key = pinned.key.expect("tx key");
    assert_eq!(
        (key.src, key.dst, key.protocol, key.src_port, key.dst_port),
        (
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            17,
            40_000,
            5000
        )
    );
    assert_eq!(pinned.class, Some(0));
    assert_eq!(pinned.class_name.as_deref(), Some("pinned"));
    assert_eq!(pinned.policy, Some(ClassPolicy::Pin));
    assert_eq!(
        pinned.qos_class,
        Some(crate::qos::ClassId(1)),
        "default class"
    );
    assert_eq!(pinned.nics.len(), 1, "one NIC: {:?}", pinned.nics);
    assert_eq!((pinned.packets, pinned.bytes), (Some(3), Some(3 * 528)));
    assert!(!pinned.pinned);
    assert!(
        pinned.rate_bps.is_some_and(|r| r > 0),
        "{:?}",
        pinned.rate_bps
    );
    assert!(
        pinned.idle_ns >= 5_000_000,
        "idle since its last packet: {}",
        pinned.idle_ns
    );

    let feed = tx_row(&a, later, 40_001);
    assert_eq!(feed.class_name.as_deref(), Some("feed"));
    assert_eq!(feed.policy, Some(ClassPolicy::Duplicate));
    assert_eq!(feed.qos_class, Some(crate::qos::ClassId(0)), "strict");
    assert_eq!(feed.nics, NicSet(0b111), "a copy on each NIC");

    let other = tx_row(&a, later, 40_002);
    assert_eq!((other.class, other.class_name.as_deref()), (None, None));
    assert_eq!(other.policy, Some(ClassPolicy::Stripe));
    assert_eq!(other.nics, NicSet(0b111));

    // The receiver: RX rows keyed by the sender's ids, with the key of what they delivered.
    let rx = b.flows(later, &FlowQuery::default());
    assert_eq!(rx.len(), 3);
    let ids: Vec<FlowId> = rows.iter().map(|r| r.id).collect();
    for r in &rx {
        assert_eq!(r.direction, FlowDirection::Rx);
        assert!(ids.contains(&r.id), "the sender's id {:?}", r.id);
        let sent = rows.iter().find(|t| t.id == r.id).unwrap();
        assert_eq!(r.key, sent.key, "the delivered packets' key");
        assert_eq!(r.packets, sent.packets, "delivered once each");
        assert!(!r.nics.is_empty());
        assert_eq!((r.class, r.policy, r.rate_bps), (None, None, None));
    }
    let feed_rx = rx.iter().find(|r| r.id == feed.id).unwrap();
    assert_eq!(
        feed_rx.nics,
        NicSet(0b111),
        "its copies arrived on every NIC"
    );
    // One flow by id, in each table; an id in the wrong table is not found.
    assert_eq!(
        a.flow(later, FlowDirection::Tx, feed.id).as_ref(),
        Some(&feed)
    );
    assert_eq!(
        b.flow(later, FlowDirection::Rx, feed.id).as_ref(),
        Some(feed_rx)
    );
    assert_eq!(a.flow(later, FlowDirection::Rx, feed.id), None);
    assert_eq!(
        a.flow(later, FlowDirection::Tx, FlowId(feed.id.0 ^ 0xffff)),
        None
    );
}

#[test]
fn pages_walk_the_table_in_order_and_filters_match() {
    let (mut a, mut b) = pair(&cfg3());
    let mut now = Instant::from_millis(1);
    // 250 flows: even source ports to 5000 ("pinned"), odd ones to 9999 (no class).
    for i in 0..250u16 {
        let dport = if i % 2 == 0 { 5000 } else { 9999 };
        assert_eq!(
            a.handle_tx(now, &udp(30_000 + i, dport, 100)),
            TxVerdict::Queued
        );
        if i % 50 == 49 {
            now = pump(&mut a, &mut b, now, NicSet::EMPTY).1;
        }
    }
    let all = a.flows(
        now,
        &FlowQuery {
            limit: MAX_FLOW_ROWS,
            ..FlowQuery::default()
        },
    );
    assert_eq!(all.len(), 250, "fewer than the limit: no extra row");
    // Pages of 100: 101 rows while there are more; the next starts after the 100th.
    let mut q = FlowQuery {
        limit: 100,
        ..FlowQuery::default()
    };
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let mut rows = a.flows(now, &q);
        pages += 1;
        let more = rows.len() == 101;
        rows.truncate(100);
        seen.extend(rows.iter().map(FlowRow::cursor));
        if !more {
            break;
        }
        q.after = rows.last().map(FlowRow::cursor);
    }
    assert_eq!(pages, 3);
    let want: Vec<FlowCursor> = all.iter().map(FlowRow::cursor).collect();
    assert_eq!(seen, want, "every flow once, in order");
    // Filters.
    let count = |q: FlowQuery| a.flows(now, &q).len();
    let any = FlowQuery {
        limit: MAX_FLOW_ROWS,
        ..FlowQuery::default()
    };
    assert_eq!(
        count(FlowQuery {
            class: Some(0),
            ..any
        }),
        125
    );
    assert_eq!(
        count(FlowQuery {
            class: Some(1),
            ..any
        }),
        0
    );
    assert_eq!(
        count(FlowQuery {
            port: Some(9999),
            ..any
        }),
        125
    );
    assert_eq!(
        count(FlowQuery {
            port: Some(30_007),
            ..any
        }),
        1
    );
    assert_eq!(
        count(FlowQuery {
            protocol: Some(6),
            ..any
        }),
        0
    );
    let dst = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    assert_eq!(
        count(FlowQuery {
            address: Some(dst),
            ..any
        }),
        250
    );
    let other = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3));
    assert_eq!(
        count(FlowQuery {
            address: Some(other),
            ..any
        }),
        0
    );
    assert_eq!(
        count(FlowQuery {
            direction: Some(FlowDirection::Rx),
            ..any
        }),
        0
    );
    // The pinned flows are spread over the NICs; the striped ones use them all.
    let per_nic: Vec<usize> = (0..3)
        .map(|n| {
            count(FlowQuery {
                nic: Some(NicId(n)),
                class: Some(0),
                ..any
            })
        })
        .collect();
    assert_eq!(per_nic.iter().sum::<usize>(), 125, "{per_nic:?}");
    assert!(per_nic.iter().all(|&n| n > 0), "{per_nic:?}");
    assert_eq!(
        count(FlowQuery {
            nic: Some(NicId(2)),
            port: Some(9999),
            ..any
        }),
        125
    );
    // A limit beyond the maximum is clamped.
    let big = a.flows(
        now,
        &FlowQuery {
            limit: 5000,
            ..FlowQuery::default()
        },
    );
    assert_eq!(big.len(), 250);
    let one = a.flows(now, &FlowQuery { limit: 0, ..any });
    assert_eq!(one.len(), 2, "limit 0 counts as 1, plus the extra row");
}

#[test]
fn a_moved_flow_goes_on_its_new_nic_and_a_pin_holds_it() {
    let (mut a, mut b) = pair(&cfg3());
    let now = Instant::from_millis(1);
    // A pinned-class flow and a striped one.
    let (first, now) = send(&mut a, &mut b, now, 40_000, 5000, 5);
    let from = tx_row(&a, now, 40_000);
    let on = from.nics.iter().next().unwrap();
    assert_eq!(first[usize::from(on.0)], 5 * 528, "on its NIC: {first:?}");
    let to = NicId((on.0 + 1) % 3);
    assert_eq!(
        a.apply(
            now,
            Command::MoveFlow {
                flow: from.id,
                nic: to,
                pin: true
            }
        ),
        Ok(())
    );
    let row = tx_row(&a, now, 40_000);
    assert_eq!(row.nics, NicSet::single(to));
    assert!(row.pinned);
    assert_eq!(row.policy, Some(ClassPolicy::Pin));
    let (moved, now) = send(&mut a, &mut b, now, 40_000, 5000, 7);
    let mut want = vec![0; 3];
    want[usize::from(to.0)] = 7 * 528;
    assert_eq!(moved, want, "every packet on the new NIC");
    assert!(a.stats().drops.total() == 0, "{:?}", a.stats().drops);
    let ev: Vec<_> = core::iter::from_fn(|| a.poll_event()).collect();
    assert!(
        ev.iter().any(|e| matches!(
            e,
            EngineEvent::Controller(crate::controller::ControllerEvent::FlowMoved {
                reason: crate::controller::MoveReason::Operator,
                ..
            })
        )),
        "{ev:?}"
    );

    // A striped flow moved (not pinned) becomes a one-NIC flow.
    let (_, now) = send(&mut a, &mut b, now, 40_002, 9999, 3);
    let striped = tx_row(&a, now, 40_002);
    assert_eq!(striped.nics, NicSet(0b111));
    a.apply(
        now,
        Command::MoveFlow {
            flow: striped.id,
            nic: NicId(2),
            pin: false,
        },
    )
    .unwrap();
    let row = tx_row(&a, now, 40_002);
    assert_eq!(
        (row.nics, row.policy, row.pinned),
        (NicSet::single(NicId(2)), Some(ClassPolicy::Pin), false)
    );
    // Jumbo packets would be split across NICs if it were still striped.
    let before = payload(&a, 3);
    for _ in 0..4 {
        assert_eq!(
            a.handle_tx(now, &udp(40_002, 9999, 4000)),
            TxVerdict::Queued
        );
    }
    let (got, now) = pump(&mut a, &mut b, now, NicSet::EMPTY);
    assert_eq!(got, 4);
    let after = payload(&a, 3);
    assert_eq!(after[0] - before[0], 0);
    assert_eq!(after[1] - before[1], 0);
    assert_eq!(after[2] - before[2], 4 * 4028);
    // Unpinning the first one: moved in place, pin = false.
    a.apply(
        now,
        Command::MoveFlow {
            flow: from.id,
            nic: to,
            pin: false,
        },
    )
    .unwrap();
    assert!(!tx_row(&a, now, 40_000).pinned);
    assert_eq!(tx_row(&a, now, 40_000).nics, NicSet::single(to));
}

#[test]
fn moves_that_cannot_be_are_refused_and_change_nothing() {
    // Two NICs; flows of the class declare 600 Mbit/s each: one per NIC.
    let mut cfg = EngineConfig::new(nics(2));
    cfg.classes.push(class(
        "big",
        ClassMatch::udp_dst_port(5000),
        ClassPolicy::Pin,
        600_000_000,
    ));
    let (mut a, mut b) = pair(&cfg);
    let now = Instant::from_millis(1);
    let (_, now) = send(&mut a, &mut b, now, 1, 5000, 2);
    let (_, now) = send(&mut a, &mut b, now, 2, 5000, 2);
    let f1 = tx_row(&a, now, 1);
    let f2 = tx_row(&a, now, 2);
    assert_ne!(f1.nics, f2.nics, "one per NIC");
    let nic2 = f2.nics.iter().next().unwrap();
    // Flow 2 pinned where it is: moving flow 1 onto its NIC cannot make room.
    let pin2 = Command::MoveFlow {
        flow: f2.id,
        nic: nic2,
        pin: true,
    };
    assert_eq!(a.apply(now, pin2), Ok(()));
    let refused = a.apply(
        now,
        Command::MoveFlow {
            flow: f1.id,
            nic: nic2,
            pin: false,
        },
    );
    assert_eq!(
        refused,
        Err(CommandError::MoveRefused {
            flow: f1.id,
            nic: nic2,
            reason: RejectReason::NoRoom
        })
    );
    assert!(refused.unwrap_err().to_string().contains("no room"));
    assert_eq!(tx_row(&a, now, 1).nics, f1.nics, "flow 1 stayed");
    let (sent, now) = send(&mut a, &mut b, now, 1, 5000, 3);
    let on1 = f1.nics.iter().next().unwrap();
    assert_eq!(sent[usize::from(on1.0)], 3 * 528, "still sent on its NIC");
    // Unpinned, flow 2 may be moved to make room: the two swap.
    a.apply(
        now,
        Command::MoveFlow {
            flow: f2.id,
            nic: nic2,
            pin: false,
        },
    )
    .unwrap();
    assert_eq!(
        a.apply(
            now,
            Command::MoveFlow {
                flow: f1.id,
                nic: nic2,
                pin: false
            }
        ),
        Ok(())
    );
    assert_eq!(tx_row(&a, now, 1).nics, NicSet::single(nic2));
    assert_eq!(tx_row(&a, now, 2).nics, NicSet::single(on1), "made room");

    // Other refusals.
    let unknown = FlowId(f1.id.0.wrapping_add(1000));
    let mv = |flow, nic| Command::MoveFlow {
        flow,
        nic,
        pin: true,
    };
    assert_eq!(
        a.apply(now, mv(unknown, NicId(0))),
        Err(CommandError::UnknownFlow(unknown))
    );
    assert_eq!(
        a.apply(now, mv(f1.id, NicId(7))),
        Err(CommandError::UnknownNic(NicId(7)))
    );
    // The receiver knows the flow as an RX flow only.
    let rx = b.apply(now, mv(f1.id, NicId(0)));
    assert!(
        matches!(rx, Err(CommandError::FlowNotMovable { flow, .. }) if flow == f1.id),
        "{rx:?}"
    );
    a.apply(
        now,
        Command::SetNicAdmin {
            nic: on1,
            up: false,
        },
    )
    .unwrap();
    assert_eq!(
        a.apply(now, mv(f1.id, on1)),
        Err(CommandError::NicNotUsable(on1))
    );
    assert_eq!(a.controller().stats().operator_moves_refused, 1);
}

#[test]
fn a_nic_taken_down_moves_a_pinned_flow_and_clears_the_pin() {
    let (mut a, mut b) = pair(&cfg3());
    let now = Instant::from_millis(1);
    let (_, now) = send(&mut a, &mut b, now, 40_000, 5000, 2);
    let f = tx_row(&a, now, 40_000);
    a.apply(
        now,
        Command::MoveFlow {
            flow: f.id,
            nic: NicId(1),
            pin: true,
        },
    )
    .unwrap();
    assert!(tx_row(&a, now, 40_000).pinned);
    a.apply(
        now,
        Command::SetNicAdmin {
            nic: NicId(1),
            up: false,
        },
    )
    .unwrap();
    let row = tx_row(&a, now, 40_000);
    assert!(!row.pinned, "the failover cleared the pin");
    assert_eq!(row.nics.len(), 1);
    assert!(!row.nics.contains(NicId(1)), "{:?}", row.nics);
    let (sent, now) = send(&mut a, &mut b, now, 40_000, 5000, 4);
    assert_eq!(sent[1], 0, "nothing on the NIC taken down");
    assert_eq!(sent.iter().sum::<u64>(), 4 * 528);
    assert_eq!(a.controller().stats().pins_cleared, 1);
    // Back up: the flow stays where failover put it.
    a.apply(
        now,
        Command::SetNicAdmin {
            nic: NicId(1),
            up: true,
        },
    )
    .unwrap();
    assert_eq!(tx_row(&a, now, 40_000).nics, row.nics);
}

#[test]
fn a_policy_change_of_a_moved_flow_places_it_again() {
    use crate::rules::{Action, PortRange, Rule, RuleMatch, Striping};

    let cfg = cfg3();
    let (mut a, mut b) = pair(&cfg);
    let now = Instant::from_millis(1);
    let (_, now) = send(&mut a, &mut b, now, 40_000, 5000, 2);
    let f = tx_row(&a, now, 40_000);
    let to = NicId((f.nics.iter().next().unwrap().0 + 1) % 3);
    a.apply(
        now,
        Command::MoveFlow {
            flow: f.id,
            nic: to,
            pin: true,
        },
    )
    .unwrap();
    // A rule set that leaves the flow's policy alone keeps the move.
    let build = |rules: Vec<Rule>| {
        let tx = RuleTable::build(&cfg, RuleDirection::Tx, rules).unwrap();
        let rx = RuleTable::build(&cfg, RuleDirection::Rx, Vec::new()).unwrap();
        Command::ReplaceRules {
            tx: alloc::boxed::Box::new(tx),
            rx: alloc::boxed::Box::new(rx),
        }
    };
    let other_port = RuleMatch {
        protocol: Some(17),
        src_ports: Some(PortRange::single(1)),
        ..RuleMatch::ANY
    };
    a.apply(
        now,
        build(vec![Rule::new(
            "other",
            1,
            other_port,
            &[Action::SetDscp(10)],
        )]),
    )
    .unwrap();
    let (sent, now) = send(&mut a, &mut b, now, 40_000, 5000, 2);
    assert_eq!(sent[usize::from(to.0)], 2 * 528);
    let row = tx_row(&a, now, 40_000);
    assert!(row.pinned && row.nics == NicSet::single(to), "{row:?}");
    // One that stripes it: placed again by its new policy, the move and the pin end.
    let this = RuleMatch {
        protocol: Some(17),
        src_ports: Some(PortRange::single(40_000)),
        ..RuleMatch::ANY
    };
    let stripe = Action::Stripe(Striping {
        policy: ClassPolicy::Stripe,
        nics: NicSet::ALL,
    });
    a.apply(now, build(vec![Rule::new("stripe", 1, this, &[stripe])]))
        .unwrap();
    let (_, now) = send(&mut a, &mut b, now, 40_000, 5000, 1);
    let row = tx_row(&a, now, 40_000);
    assert_eq!(row.policy, Some(ClassPolicy::Stripe));
    assert_eq!(row.nics, NicSet(0b111));
    assert!(!row.pinned);
}

#[test]
fn the_last_usable_nic_cannot_be_taken_down() {
    let (mut a, mut b) = pair(&EngineConfig::new(nics(2)));
    let down = |nic| Command::SetNicAdmin {
        nic: NicId(nic),
        up: false,
    };
    let now = Instant::from_millis(1);
    assert_eq!(a.nic_admin_up(NicId(0)), Some(true));
    assert_eq!(a.nic_admin_up(NicId(5)), None);
    assert_eq!(a.apply(now, down(0)), Ok(()));
    assert_eq!(a.nic_admin_up(NicId(0)), Some(false));
    assert_eq!(
        a.apply(now, down(1)),
        Err(CommandError::LastUsableNic(NicId(1)))
    );
    assert_eq!(a.nic_admin_up(NicId(1)), Some(true), "nothing changed");
    assert_eq!(a.apply(now, down(0)), Ok(()), "already down: no change");
    let up0 = Command::SetNicAdmin {
        nic: NicId(0),
        up: true,
    };
    assert_eq!(a.apply(now, up0.clone()), Ok(()));
    // nic1's link dies: nic0 is then the last live NIC; nic1 may go (its link is dead).
    let mut t = now;
    for step in 0..400u64 {
        t = Instant::from_micros(1000 + step * 250);
        pump(&mut a, &mut b, t, NicSet::single(NicId(1)));
    }
    assert_eq!(a.link(NicId(1)).unwrap().state, LinkState::Down);
    assert_eq!(a.link(NicId(0)).unwrap().state, LinkState::Up);
    let refused = a.apply(t, down(0));
    assert_eq!(refused, Err(CommandError::LastUsableNic(NicId(0))));
    assert!(refused.unwrap_err().to_string().contains("last usable"));
    assert_eq!(a.apply(t, down(1)), Ok(()));
    assert_eq!(
        a.apply(t, down(0)),
        Err(CommandError::LastUsableNic(NicId(0)))
    );
    assert_eq!(a.apply(t, up0), Ok(()));
}

/// A tunnelled flow leaves on its tunnel's NIC: its row says so, and a move is refused.
#[test]
fn a_tunnelled_flow_is_shown_on_its_tunnels_nic_and_cannot_be_moved() {
    use braid_wire::tunnel::{Encap, InnerFormat, InnerMacs, OuterIp, VxlanEncap};

    use crate::engine::TunnelSpec;

    let mut cfg = EngineConfig::new(nics(2));
    let outer = OuterIp::V4 {
        src: Ipv4Addr::new(10, 77, 0, 1),
        dst: Ipv4Addr::new(10, 77, 0, 2),
    };
    let macs = InnerMacs {
        src: [2, 0, 0, 0, 0, 1],
        dst: [2, 0, 0, 0, 0, 2],
    };
    let encap = Encap::Vxlan(VxlanEncap::new(outer, 42, InnerFormat::IpInEthernet(macs)));
    cfg.tunnels = vec![TunnelSpec::new("t0", NicId(1), encap)];
    let mut c = FlowClass::new(
        "tunnelled",
        ClassMatch::udp_dst_port(6000),
        ClassPolicy::Pin,
    );
    c.tunnel = Some(0);
    cfg.classes.push(c);
    let mut a = Engine::new(cfg, Instant::ZERO).unwrap();
    let now = Instant::from_millis(1);
    assert_eq!(a.handle_tx(now, &udp(40_000, 6000, 100)), TxVerdict::Queued);
    let row = tx_row(&a, now, 40_000);
    assert_eq!(row.tunnel, Some(0));
    assert_eq!(row.nics, NicSet::single(NicId(1)), "the tunnel's NIC");
    assert_eq!((row.policy, row.qos_class), (None, None));
    assert_eq!((row.packets, row.bytes), (Some(1), Some(128)));
    let refused = a.apply(
        now,
        Command::MoveFlow {
            flow: row.id,
            nic: NicId(0),
            pin: false,
        },
    );
    assert!(
        matches!(refused, Err(CommandError::FlowNotMovable { flow, why }) if flow == row.id && why.contains("tunnel")),
        "{refused:?}"
    );
}
