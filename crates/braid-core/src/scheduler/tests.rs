//! Scheduler tests: the cost model on hand-computed cases, split sizing, and a property test
//! over random link views.

use super::*;
use proptest::prelude::*;

const MBPS: u64 = 1_000_000;

fn link(nic: u8, rate_bps: u64) -> LinkView {
    LinkView {
        nic: NicId(nic),
        usable: true,
        rate_bps,
        backlog_bytes: 0,
        delay: Duration::ZERO,
        loss: 0.0,
        mtu_payload: 1440,
    }
}

fn run(links: &[LinkView], mode: Mode, len: u32, config: &SchedulerConfig) -> Plan {
    let mut p = Plan::new();
    plan(links, mode, len, config, &mut p).expect("plan");
    p
}

/// Pieces are sorted, contiguous, non-empty and cover `[0, len)`.
fn assert_covers(pieces: &[Piece], len: u32) {
    let mut at = 0;
    for p in pieces {
        assert_eq!(p.offset, at, "contiguous: {pieces:?}");
        assert!(p.len > 0, "no zero-length piece: {pieces:?}");
        at += p.len;
    }
    assert_eq!(at, len, "covers the packet: {pieces:?}");
}

fn bytes_on(p: &Plan, nic: u8) -> u32 {
    p.pieces()
        .iter()
        .filter(|x| x.nic == NicId(nic))
        .map(|x| x.len)
        .sum()
}

#[test]
fn whole_picks_earliest_arrival_backlog_and_delay_both_count() {
    let config = SchedulerConfig::default();
    // 100 Mbit/s = 80 ns/byte. nic0: 100 KB backlog = 8 ms. nic1: 5 ms delay. nic2: 3 ms delay
    // but half the rate (serialisation 1560 B × 160 ns = 0.25 ms).
    let mut l0 = link(0, 100 * MBPS);
    l0.backlog_bytes = 100_000;
    let mut l1 = link(1, 100 * MBPS);
    l1.delay = Duration::from_millis(5);
    let mut l2 = link(2, 50 * MBPS);
    l2.delay = Duration::from_millis(3);
    let links = [l0, l1, l2];
    let p = run(&links, Mode::Single(NicSet::ALL), 1500, &config);
    assert_eq!(p.kind(), PlanKind::Whole);
    assert!(p.pieces().iter().all(|x| x.nic == NicId(2)));
    // 1500 B over a 1440 MTU: two near-equal pieces (750 + 750), two headers.
    assert_eq!(
        p.pieces().iter().map(|x| x.len).collect::<Vec<_>>(),
        vec![750, 750]
    );
    // 3 ms + (1500 + 2 × 60) × 160 ns = 3.2592 ms
    assert_eq!(p.expected_arrival, Duration::from_nanos(3_259_200));

    // Drain nic0's backlog: now it wins (2 packets: 1620 B × 80 ns).
    let mut links = links;
    links[0].backlog_bytes = 0;
    let p = run(&links, Mode::Single(NicSet::ALL), 1500, &config);
    assert!(p.pieces().iter().all(|x| x.nic == NicId(0)));
    assert_eq!(p.expected_arrival, Duration::from_nanos(129_600));

    // The set restricts the choice.
    let p = run(
        &links,
        Mode::Single(NicSet::single(NicId(1))),
        1500,
        &config,
    );
    assert!(p.pieces().iter().all(|x| x.nic == NicId(1)));
}

#[test]
fn loss_is_charged_as_time() {
    let config = SchedulerConfig::default();
    let mut a = link(0, 100 * MBPS);
    a.loss = 0.5; // + 5 ms
    let mut b = link(1, 100 * MBPS);
    b.delay = Duration::from_millis(4);
    let p = run(&[a, b], Mode::Single(NicSet::ALL), 1000, &config);
    assert_eq!(p.nics(), NicSet::single(NicId(1)));
    a.loss = 0.3; // + 3 ms < 4 ms
    let p = run(&[a, b], Mode::Single(NicSet::ALL), 1000, &config);
    assert_eq!(p.nics(), NicSet::single(NicId(0)));
}

#[test]
fn jumbo_over_three_equal_links_splits_in_thirds() {
    let config = SchedulerConfig::default();
    // 10 Mbit/s, 1500-byte MTU, 10 µs delay: serialisation dominates.
    let links: Vec<_> = (0..3)
        .map(|i| LinkView {
            mtu_payload: 1500,
            delay: Duration::from_micros(10),
            ..link(i, 10 * MBPS)
        })
        .collect();
    let whole = run(&links, Mode::Single(NicSet::ALL), 9000, &config);
    assert_eq!(whole.pieces().len(), 6);
    let p = run(&links, Mode::Stripe(NicSet::ALL), 9000, &config);
    assert_eq!(p.kind(), PlanKind::Split);
    assert_covers(p.pieces(), 9000);
    for nic in 0..3 {
        assert_eq!(bytes_on(&p, nic), 3000, "equal shares: {:?}", p.pieces());
    }
    assert!(p.pieces().iter().all(|x| x.len <= 1500));
    assert_eq!(p.pieces().len(), 6);
    // whole: 10 µs + 9360 × 800 ns = 7.498 ms; split: 10 µs + 3120 × 800 ns = 2.506 ms.
    assert_eq!(whole.expected_arrival, Duration::from_nanos(7_498_000));
    assert_eq!(p.expected_arrival, Duration::from_nanos(2_506_000));
    let ratio = p.expected_arrival.as_secs_f64() / whole.expected_arrival.as_secs_f64();
    assert!((0.32..0.35).contains(&ratio), "≈ 1/3: {ratio}");
}

#[test]
fn unequal_rates_get_proportional_shares() {
    let config = SchedulerConfig::default();
    let links = [
        link(0, 100 * MBPS),
        link(1, 200 * MBPS),
        link(2, 300 * MBPS),
    ];
    let len = 60_000;
    let p = run(&links, Mode::Stripe(NicSet::ALL), len, &config);
    assert_eq!(p.kind(), PlanKind::Split);
    assert_covers(p.pieces(), len);
    for (nic, sixths) in [(0u8, 1.0), (1, 2.0), (2, 3.0)] {
        let share = f64::from(bytes_on(&p, nic));
        let ideal = f64::from(len) * sixths / 6.0;
        assert!(
            (share - ideal).abs() / ideal < 0.01,
            "nic{nic}: {share} vs {ideal}"
        );
    }
    // Every NIC's pieces land within a few µs of each other (one header of skew at most).
    let arrivals: Vec<f64> = (0..3)
        .map(|nic| {
            let b = bytes_on(&p, nic);
            expected_arrival(&links[nic as usize], b, &config)
                .expect("usable")
                .as_secs_f64()
        })
        .collect();
    let spread = arrivals.iter().copied().fold(0.0, f64::max)
        - arrivals.iter().copied().fold(f64::INFINITY, f64::min);
    assert!(spread < 10e-6, "pieces land together: {arrivals:?}");
}

#[test]
fn a_late_link_gets_nothing() {
    let config = SchedulerConfig::default();
    let mut far = link(2, 100 * MBPS);
    far.delay = Duration::from_millis(10);
    let links = [link(0, 100 * MBPS), link(1, 100 * MBPS), far];
    let p = run(&links, Mode::Stripe(NicSet::ALL), 9000, &config);
    assert_eq!(p.kind(), PlanKind::Split);
    assert_covers(p.pieces(), 9000);
    assert_eq!(bytes_on(&p, 2), 0);
    assert_eq!(bytes_on(&p, 0), 4500);
    assert_eq!(bytes_on(&p, 1), 4500);
    // With a short delay the third link joins, with a smaller share.
    let mut links = links;
    links[2].delay = Duration::from_micros(100);
    let p = run(&links, Mode::Stripe(NicSet::ALL), 9000, &config);
    let near = bytes_on(&p, 2);
    assert!(near > 0 && near < 3000, "{:?}", p.pieces());
    assert_covers(p.pieces(), 9000);
}

#[test]
fn small_or_pointless_splits_stay_whole() {
    let config = SchedulerConfig::default();
    let links = [link(0, 100 * MBPS), link(1, 100 * MBPS)];
    // Below min_split_bytes.
    let p = run(&links, Mode::Stripe(NicSet::ALL), 1000, &config);
    assert_eq!(p.kind(), PlanKind::Whole);
    assert_eq!(p.pieces().len(), 1);
    // Gain below min_split_gain: at 100 Gbit/s splitting 1400 B saves ~0.05 µs.
    let fast = [link(0, 100_000 * MBPS), link(1, 100_000 * MBPS)];
    let p = run(&fast, Mode::Stripe(NicSet::ALL), 1400, &config);
    assert_eq!(p.kind(), PlanKind::Whole);
    // The same with no gain required, and splits of packets that fit one piece allowed,
    // splits.
    let eager = SchedulerConfig {
        min_split_gain: Duration::ZERO,
        split_within_mtu: true,
        ..config
    };
    let p = run(&fast, Mode::Stripe(NicSet::ALL), 1400, &eager);
    assert_eq!(p.kind(), PlanKind::Split);
    assert_covers(p.pieces(), 1400);
    // By default a packet that fits one piece stays whole even where a split would land
    // sooner (slow links): the extra header costs bulk goodput.
    let p = run(&links, Mode::Stripe(NicSet::ALL), 1400, &config);
    assert_eq!(p.kind(), PlanKind::Whole);
    let p = run(
        &links,
        Mode::Stripe(NicSet::ALL),
        1400,
        &SchedulerConfig {
            split_within_mtu: true,
            ..config
        },
    );
    assert_eq!(p.kind(), PlanKind::Split);
}

#[test]
fn max_split_links_keeps_the_biggest_shares() {
    let config = SchedulerConfig {
        max_split_links: 2,
        ..SchedulerConfig::default()
    };
    let links = [
        link(0, 100 * MBPS),
        link(1, 1000 * MBPS),
        link(2, 1000 * MBPS),
    ];
    let p = run(&links, Mode::Stripe(NicSet::ALL), 60_000, &config);
    assert_eq!(p.kind(), PlanKind::Split);
    assert_covers(p.pieces(), 60_000);
    assert_eq!(p.nics(), [NicId(1), NicId(2)].into_iter().collect());
    assert_eq!(bytes_on(&p, 1), 30_000);
}

#[test]
fn duplicate_is_one_copy_per_usable_nic() {
    let config = SchedulerConfig::default();
    let mut down = link(1, 100 * MBPS);
    down.usable = false;
    let mut slow = link(2, 10 * MBPS);
    slow.mtu_payload = 1000;
    let links = [link(0, 100 * MBPS), down, slow, link(3, 100 * MBPS)];
    let set: NicSet = [NicId(0), NicId(1), NicId(2)].into_iter().collect();
    let p = run(&links, Mode::Duplicate(set), 1400, &config);
    assert_eq!(p.kind(), PlanKind::Duplicate);
    assert_eq!(p.nics(), [NicId(0), NicId(2)].into_iter().collect());
    for nic in [0u8, 2] {
        let copy: Vec<Piece> = p
            .pieces()
            .iter()
            .copied()
            .filter(|x| x.nic == NicId(nic))
            .collect();
        assert_covers(&copy, 1400);
    }
    assert_eq!(
        p.pieces().len(),
        2 + 2,
        "both copies cut at the smallest MTU of the set (nic2's 1000 bytes)"
    );
    // First arrival wins: the 100 Mbit/s copy, 2 packets: (1400 + 2 × 60) × 80 ns.
    assert_eq!(p.expected_arrival, Duration::from_nanos(121_600));
}

#[test]
fn errors() {
    let config = SchedulerConfig::default();
    let mut p = Plan::new();
    let mut l = link(0, 100 * MBPS);
    assert_eq!(
        plan(&[l], Mode::Stripe(NicSet::ALL), 0, &config, &mut p),
        Err(ScheduleError::Empty)
    );
    assert_eq!(
        plan(&[], Mode::Stripe(NicSet::ALL), 10, &config, &mut p),
        Err(ScheduleError::NoUsableLink)
    );
    let set = NicSet::single(NicId(3));
    assert_eq!(
        plan(&[l], Mode::Duplicate(set), 10, &config, &mut p),
        Err(ScheduleError::NoUsableLink)
    );
    l.usable = false;
    assert_eq!(
        plan(&[l], Mode::Single(NicSet::ALL), 10, &config, &mut p),
        Err(ScheduleError::NoUsableLink)
    );
    l.usable = true;
    l.rate_bps = 0;
    assert_eq!(
        plan(&[l], Mode::Single(NicSet::ALL), 10, &config, &mut p),
        Err(ScheduleError::NoUsableLink)
    );
    l.rate_bps = MBPS;
    l.mtu_payload = 100;
    assert_eq!(
        plan(&[l], Mode::Single(NicSet::ALL), 6401, &config, &mut p),
        Err(ScheduleError::TooManyPieces)
    );
    assert!(p.pieces().is_empty());
    assert!(plan(&[l], Mode::Single(NicSet::ALL), 6400, &config, &mut p).is_ok());
    assert_eq!(p.pieces().len(), MAX_PIECES);
    // Two such copies do not fit.
    let l2 = LinkView { nic: NicId(1), ..l };
    assert_eq!(
        plan(
            &[l, l2],
            Mode::Duplicate(NicSet::ALL),
            6400,
            &config,
            &mut p
        ),
        Err(ScheduleError::TooManyPieces)
    );
    // Nor does a split: any plan of 6401 B at 100 B per piece needs 65 pieces.
    assert_eq!(
        plan(&[l, l2], Mode::Stripe(NicSet::ALL), 6401, &config, &mut p),
        Err(ScheduleError::TooManyPieces)
    );
    // A bigger-MTU NIC in the set carries it whole.
    let big = LinkView {
        nic: NicId(2),
        mtu_payload: 9000,
        ..l
    };
    plan(
        &[l, l2, big],
        Mode::Stripe(NicSet::ALL),
        6401,
        &config,
        &mut p,
    )
    .expect("fits");
    assert!(p.pieces().iter().all(|x| x.len <= 100 || x.nic == NicId(2)));
    assert_covers(p.pieces(), 6401);
}

#[test]
fn duplicate_nic_entries_are_used_once() {
    let config = SchedulerConfig::default();
    let links = [link(0, 100 * MBPS), link(0, 100 * MBPS)];
    let p = run(&links, Mode::Duplicate(NicSet::ALL), 500, &config);
    assert_eq!(p.pieces().len(), 1);
}

fn arb_link(nic: u8) -> impl Strategy<Value = LinkView> {
    (
        any::<bool>().prop_map(move |b| b || nic.is_multiple_of(2)), // mostly usable
        prop_oneof![Just(0u64), 1_000u64..100_000_000_000],
        0u64..10_000_000,
        0u64..50_000_000,
        prop_oneof![Just(0.0f64), 0.0f64..1.0],
        prop_oneof![Just(0u32), 1u32..200, 200u32..9_000],
    )
        .prop_map(
            move |(usable, rate_bps, backlog_bytes, delay_ns, loss, mtu_payload)| LinkView {
                nic: NicId(nic),
                usable,
                rate_bps,
                backlog_bytes,
                delay: Duration::from_nanos(delay_ns),
                loss,
                mtu_payload,
            },
        )
}

fn arb_links() -> impl Strategy<Value = Vec<LinkView>> {
    (1usize..=8).prop_flat_map(|n| {
        (0..n)
            .map(|i| arb_link(u8::try_from(i).expect("small")))
            .collect::<Vec<_>>()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn plans_are_sound(links in arb_links(), len in 1u32..=65_535, set_bits in any::<u32>(),
                       which in 0u8..3) {
        let config = SchedulerConfig::default();
        let set = NicSet(set_bits | 1);
        let mode = match which { 0 => Mode::Single(set), 1 => Mode::Stripe(set), _ => Mode::Duplicate(set) };
        let mut p = Plan::new();
        let usable = |nic: NicId| links.iter().find(|l| l.nic == nic)
            .filter(|l| l.usable && l.rate_bps > 0 && l.mtu_payload > 0 && set.contains(nic));
        let any_usable = links.iter().any(|l| usable(l.nic).is_some());
        match plan(&links, mode, len, &config, &mut p) {
            Err(ScheduleError::NoUsableLink) => prop_assert!(!any_usable),
            Err(ScheduleError::TooManyPieces) => {
                prop_assert!(any_usable);
                prop_assert!(p.pieces().is_empty());
                // Only when no usable NIC carries it whole (or, for duplicate, all copies).
                if which != 2 {
                    prop_assert!(links.iter().filter_map(|l| usable(l.nic))
                        .all(|l| len.div_ceil(l.mtu_payload) as usize > MAX_PIECES));
                }
            }
            Err(ScheduleError::Empty) => prop_assert!(false, "len >= 1"),
            Ok(()) => {
                prop_assert!(!p.pieces().is_empty() && p.pieces().len() <= MAX_PIECES);
                for piece in p.pieces() {
                    let l = usable(piece.nic);
                    prop_assert!(l.is_some(), "unusable nic used: {:?}", piece);
                    prop_assert!(piece.len <= l.map_or(0, |l| l.mtu_payload));
                }
                match p.kind() {
                    PlanKind::Whole | PlanKind::Split => {
                        let mut at = 0;
                        for piece in p.pieces() {
                            prop_assert_eq!(piece.offset, at);
                            prop_assert!(piece.len > 0);
                            at += piece.len;
                        }
                        prop_assert_eq!(at, len);
                        if p.kind() == PlanKind::Whole {
                            prop_assert_eq!(p.nics().len(), 1);
                        } else {
                            prop_assert!(p.nics().len() >= 2);
                            prop_assert!(p.nics().len() <= config.max_split_links);
                            prop_assert!(len >= config.min_split_bytes);
                        }
                        if which == 1 {
                            let mut whole = Plan::new();
                            if plan(&links, Mode::Single(set), len, &config, &mut whole).is_ok() {
                                prop_assert!(p.expected_arrival <= whole.expected_arrival,
                                    "split {:?} later than whole {:?}", p.expected_arrival, whole.expected_arrival);
                            }
                        } else {
                            prop_assert_eq!(p.kind(), PlanKind::Whole);
                        }
                    }
                    PlanKind::Duplicate => {
                        let expected: NicSet = links.iter().filter_map(|l| usable(l.nic)).map(|l| l.nic).collect();
                        prop_assert_eq!(p.nics(), expected);
                        for nic in expected.iter() {
                            let mut at = 0;
                            for piece in p.pieces().iter().filter(|x| x.nic == nic) {
                                prop_assert_eq!(piece.offset, at);
                                prop_assert!(piece.len > 0);
                                at += piece.len;
                            }
                            prop_assert_eq!(at, len);
                        }
                    }
                }
            }
        }
    }
}

/// Copies of a duplicated packet are cut at the same offsets even when the NICs' MTUs differ,
/// so the receiver can mix pieces of the copies without an (RFC 5722) overlap.
#[test]
fn duplicate_copies_share_fragment_offsets_across_mtus() {
    let mut big = link(1, 1_000 * MBPS);
    big.mtu_payload = 4000;
    let links = [link(0, 1_000 * MBPS), big];
    let p = run(
        &links,
        Mode::Duplicate(NicSet::ALL),
        9000,
        &SchedulerConfig::default(),
    );
    assert_eq!(p.kind(), PlanKind::Duplicate);
    let cut = |nic: u8| -> Vec<(u32, u32)> {
        p.pieces()
            .iter()
            .filter(|x| x.nic == NicId(nic))
            .map(|x| (x.offset, x.len))
            .collect()
    };
    assert_eq!(cut(0), cut(1));
    assert!(cut(0).iter().all(|&(_, len)| len <= 1440));
    assert_covers(&p.pieces()[..cut(0).len()], 9000);
}
