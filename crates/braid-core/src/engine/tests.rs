//! Engine unit tests: two engines joined by an ideal in-memory wire (no delay model; the
//! simulator's scenario tests cover links). They check the call protocol end to end.

use alloc::vec;
use alloc::vec::Vec;
use core::net::Ipv4Addr;
use core::time::Duration;

use super::*;
use crate::controller::OverflowPolicy;
use crate::{DropReason, FlowId, Instant, NicId, NicSet};
use braid_wire::{BraidRepr, PacketType};

fn nics(n: u8, mtu: u32) -> Vec<NicSpec> {
    (0..n)
        .map(|i| {
            NicSpec::udp_ipv4(
                NicId(i),
                &alloc::format!("link{i}"),
                1_000_000_000,
                mtu + 28,
            )
        })
        .collect()
}

/// An IPv4/UDP packet with `payload_len` bytes of a pattern derived from `seq` (also used
/// by `policies.rs`'s tuning tests).
pub(super) fn udp_packet(dst_port: u16, seq: u32, payload_len: usize) -> Vec<u8> {
    let mut p = vec![0u8; 28 + payload_len];
    for (i, b) in p[28..].iter_mut().enumerate() {
        *b = (seq as usize).wrapping_mul(31).wrapping_add(i) as u8;
    }
    braid_wire::ip::emit_udp_ipv4(
        &mut p,
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 2),
        4000,
        dst_port,
        0,
    )
    .unwrap();
    p
}

/// Move every transmittable packet from `a` to `b` (and back), dropping those on `dead`
/// NICs, advancing time in 10 µs steps (the engines pace their NICs) until both are quiet,
/// for at most 100 ms. Returns the packets delivered at `b` and the time reached.
fn pump(a: &mut Engine, b: &mut Engine, mut now: Instant, dead: NicSet) -> (Vec<Vec<u8>>, Instant) {
    let mut buf = vec![0u8; 70_000];
    let mut out = Vec::new();
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
        while let Some(d) = b.poll_deliver(now, &mut buf) {
            out.push(buf[..d.len].to_vec());
        }
        if a.tx_queued_bytes() == 0 && b.tx_queued_bytes() == 0 {
            break;
        }
        now += Duration::from_micros(10);
    }
    (out, now)
}

/// Compare delivered with sent without printing megabytes on failure.
fn assert_same(got: &[Vec<u8>], sent: &[Vec<u8>]) {
    assert_eq!(got.len(), sent.len(), "packet count");
    for (i, (g, s)) in got.iter().zip(sent).enumerate() {
        assert!(
            g == s,
            "packet {i} differs (len {} vs {})",
            g.len(),
            s.len()
        );
    }
}

fn pair(cfg: EngineConfig) -> (Engine, Engine) {
    let a = Engine::new(cfg.clone(), Instant::ZERO).unwrap();
    let b = Engine::new(cfg, Instant::ZERO).unwrap();
    (a, b)
}

#[test]
fn packets_cross_whole_and_in_order() {
    let (mut a, mut b) = pair(EngineConfig::new(nics(3, 1472)));
    let mut now = Instant::from_millis(1);
    let sent: Vec<Vec<u8>> = (0..200).map(|i| udp_packet(5000, i, 1000)).collect();
    let mut got = Vec::new();
    for p in &sent {
        assert_eq!(a.handle_tx(now, p), TxVerdict::Queued);
        let (d, t) = pump(&mut a, &mut b, now, NicSet::EMPTY);
        got.extend(d);
        now = t;
    }
    assert_same(&got, &sent);
    assert_eq!(b.stats().rx_delivered_count, 200);
    assert_eq!(b.stats().drops.total(), 0, "{:?}", b.stats().drops);
}

#[test]
fn jumbo_packets_are_split_and_reassembled() {
    let (mut a, mut b) = pair(EngineConfig::new(nics(3, 1472)));
    let now = Instant::from_millis(1);
    let sent: Vec<Vec<u8>> = (0..20).map(|i| udp_packet(5000, i, 8900)).collect();
    for p in &sent {
        assert_eq!(a.handle_tx(now, p), TxVerdict::Queued);
    }
    let (got, _) = pump(&mut a, &mut b, now, NicSet::EMPTY);
    assert_same(&got, &sent);
    assert_eq!(
        a.stats().tx_split_count,
        20,
        "9000 B over three idle 1500 B NICs is split"
    );
    assert_eq!(b.reassembly_stats().datagrams_completed, 20);
}

#[test]
fn duplicated_class_is_delivered_once_even_when_one_nic_is_dead() {
    let mut cfg = EngineConfig::new(nics(2, 1472));
    cfg.classes.push(FlowClass::duplicated_feed(7000));
    let (mut a, mut b) = pair(cfg);
    let now = Instant::from_millis(1);
    let sent: Vec<Vec<u8>> = (0..50).map(|i| udp_packet(7000, i, 100)).collect();
    for p in &sent[..25] {
        assert_eq!(a.handle_tx(now, p), TxVerdict::Queued);
    }
    let (mut got, now) = pump(&mut a, &mut b, now, NicSet::EMPTY);
    for p in &sent[25..] {
        assert_eq!(a.handle_tx(now, p), TxVerdict::Queued);
    }
    got.extend(pump(&mut a, &mut b, now, NicSet::single(NicId(0))).0);
    assert_same(&got, &sent);
    assert_eq!(a.stats().tx_duplicate_count, 50);
    assert_eq!(b.stats().drops.get(DropReason::DuplicateDatagram), 25);
}

#[test]
fn bad_input_is_counted_not_fatal() {
    let (mut a, mut b) = pair(EngineConfig::new(nics(2, 1472)));
    let now = Instant::from_millis(1);
    assert_eq!(
        a.handle_tx(now, &[0x45, 0, 0]),
        TxVerdict::Drop(DropReason::MalformedPacket)
    );
    assert_eq!(
        a.handle_tx(now, &vec![0u8; 10_000]),
        TxVerdict::Drop(DropReason::TooBig)
    );
    b.handle_rx(now, NicId(0), &[1, 2, 3]);
    b.handle_rx(now, NicId(9), &[1, 2, 3]);
    assert_eq!(b.stats().drops.get(DropReason::MalformedHeader), 1);
    assert_eq!(b.stats().drops.get(DropReason::UnknownLink), 1);
    assert_eq!(a.stats().drops.get(DropReason::MalformedPacket), 1);
    assert_eq!(a.stats().drops.get(DropReason::TooBig), 1);
}

#[test]
fn config_errors_name_the_field() {
    let mut cfg = EngineConfig::new(nics(2, 1472));
    cfg.nics[1].capacity_bps = 0;
    let err = Engine::new(cfg, Instant::ZERO).unwrap_err();
    assert_eq!(alloc::format!("{err}"), "nics[1].capacity_bps: must be > 0");
    let mut cfg = EngineConfig::new(nics(2, 1472));
    cfg.nics[1].id = NicId(0);
    assert!(matches!(
        Engine::new(cfg, Instant::ZERO),
        Err(ConfigError::BadNicId(NicId(0)))
    ));
    assert!(matches!(
        Engine::new(EngineConfig::new(Vec::new()), Instant::ZERO),
        Err(ConfigError::NoNics)
    ));
}

#[test]
fn probes_flow_without_traffic_and_a_dead_link_goes_down() {
    let (mut a, mut b) = pair(EngineConfig::new(nics(2, 1472)));
    let mut down_at = None;
    for step in 0..400u64 {
        let now = Instant::from_micros(step * 250);
        let dead = if now >= Instant::from_millis(50) {
            NicSet::single(NicId(1))
        } else {
            NicSet::EMPTY
        };
        pump(&mut a, &mut b, now, dead);
        while let Some(ev) = a.poll_event() {
            if let EngineEvent::Link(l) = ev
                && l.nic == NicId(1)
                && l.to == crate::health::LinkState::Down
            {
                down_at.get_or_insert(now);
            }
        }
    }
    let link0 = a.link(NicId(0)).unwrap();
    assert!(link0.replies > 0, "probes were answered");
    let down_at = down_at.expect("link 1 declared down");
    let took = down_at - Instant::from_millis(50);
    assert!(took <= Duration::from_millis(30), "detected after {took:?}");
    assert_eq!(
        a.link(NicId(0)).unwrap().state,
        crate::health::LinkState::Up
    );
}

#[test]
fn when_every_link_is_down_packets_still_go_out() {
    let (mut a, mut b) = pair(EngineConfig::new(nics(2, 1472)));
    // Both links work and a flow is established, then both go silent for 100 ms (a stalled
    // peer looks like this).
    let mut now = Instant::ZERO;
    let mut sent = Vec::new();
    for step in 0..40u64 {
        now = Instant::from_micros(step * 250);
        if step == 20 {
            sent.push(udp_packet(9000, 0, 500));
            assert!(matches!(a.handle_tx(now, &sent[0]), TxVerdict::Queued));
        }
        let (got, _) = pump(&mut a, &mut b, now, NicSet::EMPTY);
        assert_same(&got, &sent[..got.len()]);
    }
    let all = NicSet::ALL;
    for step in 0..400u64 {
        now = Instant::from_millis(10) + Duration::from_micros(step * 250);
        pump(&mut a, &mut b, now, all);
    }
    for nic in [NicId(0), NicId(1)] {
        assert_eq!(a.link(nic).unwrap().state, crate::health::LinkState::Down);
    }
    // Traffic while every link is down: sent on them all the same, not dropped.
    let sent: Vec<_> = (1..20).map(|s| udp_packet(9000, s, 500)).collect();
    for p in &sent {
        let v = a.handle_tx(now, p);
        assert!(matches!(v, TxVerdict::Queued), "{v:?}");
    }
    let (got, _) = pump(&mut a, &mut b, now, NicSet::EMPTY);
    assert_same(&got, &sent);
    assert_eq!(a.stats().drops.get(DropReason::NoLinkUp), 0);
}

#[test]
fn pieces_queued_when_every_link_goes_down_are_sent_or_counted() {
    // Slow NICs, so the packets wait in the paced queues while both links go silent.
    let mut specs = nics(2, 1472);
    for n in &mut specs {
        n.capacity_bps = 1_000_000;
    }
    let (mut a, mut b) = pair(EngineConfig::new(specs));
    let mut now = Instant::ZERO;
    for step in 0..40u64 {
        now = Instant::from_micros(step * 250);
        pump(&mut a, &mut b, now, NicSet::EMPTY);
    }
    const N: u64 = 20;
    for seq in 0..N {
        let v = a.handle_tx(now, &udp_packet(9000, seq as u32, 1000));
        assert!(matches!(v, TxVerdict::Queued), "{v:?}");
    }
    // Nothing comes back from b: both links go Down while the packets drain, one by one.
    let mut buf = vec![0u8; 70_000];
    let mut sent = 0u64;
    for _ in 0..4000 {
        now += Duration::from_micros(250);
        a.handle_timeout(now);
        while let Some(t) = a.poll_transmit(now, &mut buf) {
            let p = braid_wire::BraidPacket::new_checked(&buf[..t.len]).unwrap();
            if p.packet_type() == Ok(PacketType::Data) {
                sent += 1;
            }
        }
    }
    for nic in [NicId(0), NicId(1)] {
        assert_eq!(a.link(nic).unwrap().state, crate::health::LinkState::Down);
    }
    assert_eq!(a.tx_queued_bytes(), 0, "the queues drained");
    let dropped = a.stats().drops.get(DropReason::NoLinkUp);
    assert_eq!(
        sent + dropped,
        N,
        "sent {sent}, dropped {dropped}: none vanished"
    );
}

#[test]
fn a_late_datagram_raises_the_flows_hold() {
    let (mut a, mut b) = pair(EngineConfig::new(nics(1, 1472)));
    let mut now = Instant::from_millis(1);
    let mut buf = vec![0u8; 70_000];
    // Warm up: a packet a millisecond installs the flow at b, and its hold settles.
    let mut flow = None;
    for seq in 0..100 {
        a.handle_tx(now, &udp_packet(9000, seq, 100));
        a.handle_timeout(now);
        b.handle_timeout(now);
        while let Some(t) = a.poll_transmit(now, &mut buf) {
            let p = braid_wire::BraidPacket::new_checked(&buf[..t.len]).unwrap();
            if p.packet_type() == Ok(PacketType::Data) {
                flow = Some(FlowId(p.flow_id()));
            }
            b.handle_rx(now, t.nic, &buf[..t.len]);
        }
        while let Some(t) = b.poll_transmit(now, &mut buf) {
            a.handle_rx(now, t.nic, &buf[..t.len]);
        }
        while b.poll_deliver(now, &mut buf).is_some() {}
        now += Duration::from_millis(1);
    }
    let flow = flow.expect("a data packet was sent");
    let settled = b.rx_flow(flow).unwrap().hold;
    assert!(settled < Duration::from_millis(1), "one link: {settled:?}");

    // Two more packets; the first is held back past the hold, so its gap is declared.
    a.handle_tx(now, &udp_packet(9000, 100, 100));
    a.handle_tx(now, &udp_packet(9000, 101, 100));
    let mut data = Vec::new();
    while let Some(t) = a.poll_transmit(now, &mut buf) {
        data.push((t.nic, buf[..t.len].to_vec()));
    }
    let data: Vec<_> = data
        .into_iter()
        .filter(|(_, p)| {
            braid_wire::BraidPacket::new_checked(&p[..])
                .unwrap()
                .packet_type()
                == Ok(PacketType::Data)
        })
        .collect();
    assert_eq!(data.len(), 2);
    b.handle_rx(now, data[1].0, &data[1].1);
    now += Duration::from_millis(5);
    b.handle_timeout(now);
    let late = b.stats().drops.get(DropReason::LateDatagram);
    b.handle_rx(now, data[0].0, &data[0].1);
    assert_eq!(b.stats().drops.get(DropReason::LateDatagram), late + 1);
    let raised = b.rx_flow(flow).unwrap().hold;
    assert!(
        raised >= Duration::from_millis(1),
        "{settled:?} -> {raised:?}"
    );
}

#[test]
fn bulk_that_fills_the_queues_never_refuses_a_latency_critical_packet() {
    let mut cfg = EngineConfig::new(nics(2, 1472));
    for c in &mut cfg.qos.classes {
        c.queue_packets = 64;
    }
    cfg.classes.push(FlowClass::duplicated_feed(7000));
    let (mut a, _b) = pair(cfg);
    let now = Instant::from_millis(1);
    // Bulk until the queues refuse it (nothing is polled, so nothing drains).
    let mut refused = false;
    for seq in 0..1000 {
        if let TxVerdict::Drop(r) = a.handle_tx(now, &udp_packet(5000, seq, 1000)) {
            assert_eq!(r, DropReason::TxQueueFull);
            refused = true;
            break;
        }
    }
    assert!(refused, "the bulk band filled up");
    // The feed still gets in, a copy on each NIC.
    for seq in 0..10 {
        let v = a.handle_tx(now, &udp_packet(7000, seq, 200));
        assert!(matches!(v, TxVerdict::Queued), "{v:?}");
    }
    assert_eq!(a.stats().tx_duplicate_count, 10);
}

#[test]
fn admission_rejects_or_queues_when_every_nic_is_full() {
    // Two 100 Mbit/s NICs; every pinned flow declares 60 Mbit/s: two fit, a third does not,
    // and no rebalance can make room.
    let mut specs = nics(2, 1472);
    for n in &mut specs {
        n.capacity_bps = 100_000_000;
    }
    let mut cfg = EngineConfig::new(specs);
    cfg.tx_flows.idle_timeout = Duration::from_secs(1);
    for (lo, overflow) in [
        (6000, OverflowPolicy::Reject),
        (7000, OverflowPolicy::Queue),
    ] {
        cfg.classes.push(FlowClass {
            name: alloc::format!("{overflow:?}"),
            matcher: ClassMatch {
                protocol: Some(17),
                dst_ports: Some((lo, lo + 9)),
                ..ClassMatch::default()
            },
            policy: ClassPolicy::Pin,
            nics: NicSet::ALL,
            demand_bps: 60_000_000,
            latency_critical: false,
            qos_class: None,
            overflow,
            tunnel: None,
        });
    }
    let (mut a, mut b) = pair(cfg);
    let mut now = Instant::from_millis(1);
    assert_eq!(
        a.handle_tx(now, &udp_packet(6000, 0, 100)),
        TxVerdict::Queued
    );
    assert_eq!(
        a.handle_tx(now, &udp_packet(6001, 0, 100)),
        TxVerdict::Queued
    );
    let nics: Vec<NicSet> = a.controller().flows().map(|(_, f)| f.nics).collect();
    assert_eq!(nics.len(), 2);
    assert_ne!(nics[0], nics[1], "one flow per NIC");
    // The third is rejected, and asking again on every packet is avoided.
    for _ in 0..10 {
        assert_eq!(
            a.handle_tx(now, &udp_packet(6002, 0, 100)),
            TxVerdict::Drop(DropReason::FlowRejected)
        );
    }
    assert_eq!(
        a.controller().stats().rejected,
        1,
        "placed once, not per packet"
    );
    // A queued one waits.
    assert_eq!(
        a.handle_tx(now, &udp_packet(7000, 0, 100)),
        TxVerdict::Drop(DropReason::FlowQueued)
    );
    assert_eq!(a.stats().drops.get(DropReason::FlowRejected), 10);
    assert_eq!(a.stats().drops.get(DropReason::FlowQueued), 1);
    // The two admitted flows go idle and expire; the queued flow, which keeps sending, is
    // admitted in their place.
    let mut verdicts = Vec::new();
    for i in 0..50 {
        // Keep the links alive: probes go both ways every 5 ms.
        for _ in 0..10 {
            now += Duration::from_millis(5);
            now = pump(&mut a, &mut b, now, NicSet::EMPTY).1;
        }
        verdicts.push(a.handle_tx(now, &udp_packet(7000, i, 100)));
    }
    let admitted_at = verdicts
        .iter()
        .position(|v| *v == TxVerdict::Queued)
        .expect("queued flow admitted");
    assert!(
        verdicts[..admitted_at]
            .iter()
            .all(|v| *v == TxVerdict::Drop(DropReason::FlowQueued)),
        "{verdicts:?}"
    );
    assert!(
        verdicts[admitted_at..]
            .iter()
            .all(|v| *v == TxVerdict::Queued),
        "{verdicts:?}"
    );
    // Admitted once the idle flows expired (1 s idle timeout), not before.
    assert!(
        (19..=25).contains(&admitted_at),
        "admitted after {admitted_at} steps"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Any bytes into either side never panic; every packet the engine refuses is counted.
    #[test]
    fn arbitrary_bytes_are_counted_never_fatal(
        inputs in proptest::collection::vec(
            (0u8..4, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)),
            1..64,
        ),
        header_like in proptest::prelude::any::<bool>(),
    ) {
        let (mut a, mut b) = pair(EngineConfig::new(nics(2, 1472)));
        let now = Instant::from_millis(1);
        let mut refused = 0;
        let received = inputs.len() as u64;
        for (nic, mut bytes) in inputs {
            if header_like && bytes.len() >= 4 {
                // Mostly-valid braid data headers, to get past the first checks.
                bytes[0] = 0x10;
                bytes[1] &= 0x02;
                bytes[3] = 8;
            }
            b.handle_rx(now, NicId(nic), &bytes);
            if a.handle_tx(now, &bytes) != TxVerdict::Queued {
                refused += 1;
            }
        }
        proptest::prop_assert_eq!(a.stats().drops.total(), refused);
        // Every received packet either parsed (counted per NIC) or was dropped and counted.
        let parsed: u64 = b.stats().nics.iter().map(|n| n.rx_packets_count).sum();
        proptest::prop_assert!(b.stats().drops.total() + parsed >= received);
        // And the engines still work afterwards.
        let (_, _) = pump(&mut a, &mut b, now, NicSet::EMPTY);
    }
}

/// A flood of data packets with new flow ids fills the RX flow table to its capacity and no
/// further: the rest are refused and counted, and the store holds nothing for them.
#[test]
fn a_flood_of_new_flow_ids_is_bounded_and_counted() {
    let mut cfg = EngineConfig::new(nics(2, 1472));
    cfg.rx_flows.capacity = 64;
    let (_, mut b) = pair(cfg);
    let now = Instant::from_millis(1);
    let mut buf = [0u8; 100];
    for id in 0..1000u32 {
        let repr = BraidRepr {
            packet_type: PacketType::Data,
            link_id: 0,
            flow_id: id,
            seq: 5,
            frag_offset: 0,
            total_len: 20,
            timestamp_ns: now.as_nanos(),
            duplicate: false,
            auth: None,
            payload_len: 20,
        };
        let h = repr.emit_into(&mut buf).unwrap();
        b.handle_rx(now, NicId(0), &buf[..h + 20]);
    }
    assert_eq!(b.flow_counts().1, 64);
    assert_eq!(b.stats().drops.get(DropReason::RxFlowTableFull), 1000 - 64);
    // The 64 admitted flows each hold their datagram (seq 5, waiting for 0..5).
    assert_eq!(b.store_used_bytes(), 64 * 128);
}

/// A pinned class limited to one NIC stays on it.
#[test]
fn a_pinned_class_keeps_to_its_nics() {
    let mut cfg = EngineConfig::new(nics(3, 1472));
    cfg.classes.push(FlowClass {
        name: "only-nic2".into(),
        matcher: ClassMatch::default(),
        policy: ClassPolicy::Pin,
        nics: NicSet::single(NicId(2)),
        demand_bps: 0,
        latency_critical: false,
        qos_class: None,
        overflow: OverflowPolicy::Reject,
        tunnel: None,
    });
    let (mut a, mut b) = pair(cfg);
    let now = Instant::from_millis(1);
    let sent: Vec<Vec<u8>> = (0..30)
        .map(|i| udp_packet(5000 + (i % 10) as u16, i, 500))
        .collect();
    for p in &sent {
        assert_eq!(a.handle_tx(now, p), TxVerdict::Queued);
    }
    let (got, _) = pump(&mut a, &mut b, now, NicSet::EMPTY);
    assert_eq!(got.len(), 30);
    assert_eq!(a.nic_stats(NicId(0)).unwrap().tx_payload_bytes_count, 0);
    assert_eq!(a.nic_stats(NicId(1)).unwrap().tx_payload_bytes_count, 0);
    assert_eq!(
        a.nic_stats(NicId(2)).unwrap().tx_payload_bytes_count,
        30 * 528
    );
}

/// With authentication on, traffic flows; forged, replayed, reflected and unauthenticated
/// packets reach nothing and are counted.
#[test]
fn authenticated_packets_pass_and_forgeries_are_counted() {
    use crate::auth::{AuthConfig, Role};
    let mut cfg = EngineConfig::new(nics(2, 1472));
    let with_role = |cfg: &EngineConfig, role| {
        let mut c = cfg.clone();
        c.auth = Some(AuthConfig::new([42; 32], role));
        Engine::new(c, Instant::ZERO).unwrap()
    };
    let mut a = with_role(&cfg, Role::A);
    let mut b = with_role(&cfg, Role::B);
    let now = Instant::from_millis(1);
    let sent: Vec<Vec<u8>> = (0..20).map(|i| udp_packet(5000, i, 1200)).collect();
    for p in &sent[..10] {
        assert_eq!(a.handle_tx(now, p), TxVerdict::Queued);
    }
    let (mut got, now) = pump(&mut a, &mut b, now, NicSet::EMPTY);
    assert_same(&got, &sent[..10]);
    // Capture one genuine packet from a.
    assert_eq!(a.handle_tx(now, &sent[10]), TxVerdict::Queued);
    let mut wire = vec![0u8; 2000];
    let t = a.poll_transmit(now, &mut wire).expect("a packet");
    let genuine = wire[..t.len].to_vec();
    b.handle_rx(now, t.nic, &genuine);
    // Replayed.
    b.handle_rx(now, t.nic, &genuine);
    assert_eq!(b.stats().drops.get(DropReason::ReplayedPacket), 1);
    // Forged: one payload bit flipped, with a fresh counter so the window lets it through.
    let mut forged = genuine.clone();
    forged[32..40].copy_from_slice(&99u64.to_be_bytes()); // the replay counter
    let at = forged.len() - 20;
    forged[at] ^= 1;
    b.handle_rx(now, t.nic, &forged);
    assert_eq!(b.stats().drops.get(DropReason::BadAuthTag), 1);
    // Reflected: a's own packet sent back to a fails a's receive key.
    a.handle_rx(now, t.nic, &genuine);
    assert_eq!(a.stats().drops.get(DropReason::BadAuthTag), 1);
    // Unauthenticated: an engine without the key.
    cfg.auth = None;
    let mut stranger = Engine::new(cfg, Instant::ZERO).unwrap();
    assert_eq!(stranger.handle_tx(now, &sent[0]), TxVerdict::Queued);
    while let Some(t) = stranger.poll_transmit(now, &mut wire) {
        b.handle_rx(now, t.nic, &wire[..t.len]);
    }
    assert!(b.stats().drops.get(DropReason::Unauthenticated) >= 1);
    // The genuine traffic still flows, and nothing forged was delivered.
    for p in &sent[11..] {
        assert_eq!(a.handle_tx(now, p), TxVerdict::Queued);
    }
    got.extend(pump(&mut a, &mut b, now, NicSet::EMPTY).0);
    assert_same(&got, &sent);
}

/// An authenticated pair whose sender `a` starts its replay counter at `start`.
fn auth_pair(cfg: &EngineConfig, start: u64) -> (Engine, Engine) {
    use crate::auth::{AuthConfig, Role};
    let mut ca = cfg.clone();
    ca.auth = Some(AuthConfig {
        counter_start: start,
        ..AuthConfig::new([42; 32], Role::A)
    });
    let mut cb = cfg.clone();
    cb.auth = Some(AuthConfig::new([42; 32], Role::B));
    (
        Engine::new(ca, Instant::ZERO).unwrap(),
        Engine::new(cb, Instant::ZERO).unwrap(),
    )
}

/// The first packet carries `counter_start`, the next ones count up from it.
#[test]
fn the_replay_counter_starts_at_counter_start() {
    let cfg = EngineConfig::new(nics(1, 1472));
    let (mut a, _) = auth_pair(&cfg, 1_000_000);
    let now = Instant::from_millis(1);
    let mut buf = vec![0u8; 2000];
    for i in 0..3u64 {
        assert_eq!(
            a.handle_tx(now, &udp_packet(5000, 0, 100)),
            TxVerdict::Queued
        );
        let t = a.poll_transmit(now, &mut buf).expect("a packet");
        let packet = braid_wire::BraidPacket::new_checked(&buf[..t.len]).unwrap();
        assert_eq!(packet.replay_counter(), Some(1_000_000 + i));
    }
}

/// A restarted sender (a new engine, same key, a later counter start, as the daemon's
/// wall-clock start gives) is accepted at once by the receiver that kept running, while a
/// restarted sender that started its counter over again would be refused as replays.
#[test]
fn a_restarted_sender_with_a_later_counter_start_is_accepted() {
    let cfg = EngineConfig::new(nics(2, 1472));
    let (mut a, mut b) = auth_pair(&cfg, 5_000);
    let now = Instant::from_millis(1);
    let sent: Vec<Vec<u8>> = (0..40).map(|i| udp_packet(5000, i, 600)).collect();
    for p in &sent[..20] {
        assert_eq!(a.handle_tx(now, p), TxVerdict::Queued);
    }
    let (got, now) = pump(&mut a, &mut b, now, NicSet::EMPTY);
    assert_same(&got, &sent[..20]);
    // Restart with the same counter start: every packet is refused as a replay.
    let (mut again, _) = auth_pair(&cfg, 5_000);
    let drops_before = b.stats().drops.total();
    for p in &sent[20..30] {
        assert_eq!(again.handle_tx(now, p), TxVerdict::Queued);
    }
    let (got, now) = pump(&mut again, &mut b, now, NicSet::EMPTY);
    assert!(
        got.is_empty(),
        "a sender reusing counters gets nothing through"
    );
    assert!(b.stats().drops.get(DropReason::ReplayedPacket) >= 10);
    assert!(b.stats().drops.total() - drops_before >= 10);
    // Restart far ahead (a jump of 10^15, far past the window): accepted at once. (The flow
    // id base comes from the seed, so give the new engine a new seed, as the daemon does.)
    let mut cfg2 = cfg.clone();
    cfg2.seed = 77;
    let (mut restarted, _) = auth_pair(&cfg2, 1_000_000_000_000_000);
    for p in &sent[30..] {
        assert_eq!(restarted.handle_tx(now, p), TxVerdict::Queued);
    }
    let (got, _) = pump(&mut restarted, &mut b, now, NicSet::EMPTY);
    assert_same(&got, &sent[30..]);
}

/// The sender never sends counter `u64::MAX`: the packet before it is the last one, the rest
/// are dropped and counted on the sender.
#[test]
fn the_replay_counter_never_wraps() {
    let cfg = EngineConfig::new(nics(1, 1472));
    let (mut a, mut b) = auth_pair(&cfg, u64::MAX - 2);
    let now = Instant::from_millis(1);
    let mut buf = vec![0u8; 2000];
    let mut counters = Vec::new();
    for i in 0..4 {
        assert_eq!(
            a.handle_tx(now, &udp_packet(5000, i, 100)),
            TxVerdict::Queued
        );
        if let Some(t) = a.poll_transmit(now, &mut buf) {
            counters.push(
                braid_wire::BraidPacket::new_checked(&buf[..t.len])
                    .unwrap()
                    .replay_counter(),
            );
            b.handle_rx(now, t.nic, &buf[..t.len]);
        }
    }
    assert_eq!(counters, [Some(u64::MAX - 2), Some(u64::MAX - 1)]);
    assert_eq!(a.stats().drops.get(DropReason::ReplayCounterExhausted), 2);
    assert_eq!(b.stats().drops.total(), 0);
    let mut c = cfg.clone();
    c.auth = Some(crate::auth::AuthConfig {
        counter_start: u64::MAX,
        ..crate::auth::AuthConfig::new([1; 32], crate::auth::Role::A)
    });
    assert!(matches!(
        Engine::new(c, Instant::ZERO),
        Err(ConfigError::Invalid { field, .. }) if field == "auth.counter_start"
    ));
}

/// A packet whose ENCRYPTED flag does not match the receiver is dropped as
/// `EncryptionMismatch` before its tag is checked, whatever the receiver: a MAC-only one, or
/// one with no authentication (which would otherwise deliver cipher text as data).
#[test]
fn an_encrypted_packet_at_a_receiver_that_does_not_decrypt_is_refused() {
    let cfg = EngineConfig::new(nics(1, 1472));
    let (mut a, mut b) = auth_pair(&cfg, 1);
    let mut plain = Engine::new(cfg.clone(), Instant::ZERO).unwrap();
    let now = Instant::from_millis(1);
    let mut buf = vec![0u8; 2000];
    assert_eq!(
        a.handle_tx(now, &udp_packet(5000, 0, 100)),
        TxVerdict::Queued
    );
    let t = a.poll_transmit(now, &mut buf).unwrap();
    let mut flagged = buf[..t.len].to_vec();
    braid_wire::BraidPacket::new_unchecked(&mut flagged[..]).set_encrypted(true);
    b.handle_rx(now, t.nic, &flagged);
    b.handle_rx_mut(now, t.nic, &mut flagged.clone());
    assert_eq!(b.stats().drops.get(DropReason::EncryptionMismatch), 2);
    assert_eq!(b.stats().drops.get(DropReason::BadAuthTag), 0);
    plain.handle_rx(now, t.nic, &flagged);
    assert_eq!(plain.stats().drops.get(DropReason::EncryptionMismatch), 1);
    // The genuine packet still passes, through either entry point.
    b.handle_rx_mut(now, t.nic, &mut buf[..t.len]);
    assert_eq!(b.nic_stats(t.nic).unwrap().rx_packets_count, 1);
    assert_eq!(b.stats().drops.total(), 2);
}

/// `with_protection` needs `auth` (for the counter start) and a consistent pair.
#[test]
fn with_protection_checks_its_inputs() {
    use crate::auth::{AuthConfig, Blake3Mac, Role};
    let mut cfg = EngineConfig::new(nics(1, 1472));
    let keys = AuthConfig::new([5; 32], Role::A);
    let (tx, rx) = Blake3Mac::pair(&keys);
    let err = Engine::with_protection(
        cfg.clone(),
        Instant::ZERO,
        alloc::boxed::Box::new(tx),
        alloc::boxed::Box::new(rx),
    );
    assert!(matches!(err, Err(ConfigError::Invalid { field, .. }) if field == "auth"));
    cfg.auth = Some(keys.clone());
    let (tx, rx) = Blake3Mac::pair(&keys);
    let e = Engine::with_protection(
        cfg,
        Instant::ZERO,
        alloc::boxed::Box::new(tx),
        alloc::boxed::Box::new(rx),
    )
    .unwrap();
    assert!(e.config().auth.is_some());
}

/// Probe replies carry the replier's receive counters of the link, read when the probe
/// arrived (the probe included, later packets not).
#[test]
fn probe_replies_carry_the_receive_counters() {
    let (mut a, mut b) = pair(EngineConfig::new(nics(1, 1472)));
    let mut buf = vec![0u8; 2000];
    let mut replies = Vec::new();
    let mut data_len = 0;
    for (k, now) in [Instant::from_millis(1), Instant::from_millis(7)]
        .into_iter()
        .enumerate()
    {
        // A sends its probe, then a data packet; B takes both and answers the probe.
        assert_eq!(
            a.handle_tx(now, &udp_packet(5000, k as u32, 500)),
            TxVerdict::Queued
        );
        while let Some(t) = a.poll_transmit(now, &mut buf) {
            if k == 0 && t.len > braid_wire::BRAID_HEADER_LEN {
                data_len = t.len as u64;
            }
            b.handle_rx(now, t.nic, &buf[..t.len]);
        }
        while let Some(t) = b.poll_transmit(now, &mut buf) {
            let packet = braid_wire::BraidPacket::new_checked(&buf[..t.len]).unwrap();
            if BraidRepr::parse(&packet).unwrap().packet_type == PacketType::ProbeReply {
                replies.push(braid_wire::ProbeReplyCounters::parse(packet.payload()).unwrap());
            }
        }
    }
    let probe = braid_wire::BRAID_HEADER_LEN as u64;
    assert_eq!(replies.len(), 2);
    assert_eq!((replies[0].rx_packets, replies[0].rx_bytes), (1, probe));
    // The second probe counts the first round's data packet and itself.
    assert_eq!(
        (replies[1].rx_packets, replies[1].rx_bytes),
        (3, 2 * probe + data_len)
    );
    assert_eq!(b.nic_stats(NicId(0)).unwrap().rx_packets_count, 4);
}

/// An `auto` NIC's capacity follows the estimator: over a wire that delivers everything, a
/// greedy sender's estimate doubles per round from a low guess, and the capacity gauge, the
/// flow controller and the pacing rate follow. A configured NIC keeps its capacity.
#[test]
fn an_auto_nics_capacity_follows_the_measured_delivery() {
    let mut specs = nics(2, 1472);
    specs[0].capacity_bps = 10_000_000;
    specs[0].capacity_auto = true;
    let mut cfg = EngineConfig::new(specs);
    cfg.classes = vec![FlowClass {
        nics: NicSet::single(NicId(0)),
        ..FlowClass::new("bulk", ClassMatch::udp_dst_port(5000), ClassPolicy::Stripe)
    }];
    let (mut a, mut b) = pair(cfg);
    assert_eq!(a.nic_stats(NicId(0)).unwrap().capacity_bps, 10_000_000);
    assert_eq!(
        a.nic_stats(NicId(0)).unwrap().pacing_bps,
        20_000_000,
        "startup gain 2"
    );
    assert!(a.capacity_estimate(NicId(1)).is_none());
    let mut buf = vec![0u8; 2000];
    let mut seq = 0;
    // The engines wake when they ask to (the pacer's next send, a probe), as a data path does.
    let mut now = Instant::ZERO;
    while now < Instant::from_millis(1000) {
        while a.tx_queued_bytes() < 64 * 1024 {
            assert_eq!(
                a.handle_tx(now, &udp_packet(5000, seq, 1372)),
                TxVerdict::Queued
            );
            seq += 1;
        }
        a.handle_timeout(now);
        b.handle_timeout(now);
        while let Some(t) = a.poll_transmit(now, &mut buf) {
            b.handle_rx(now, t.nic, &buf[..t.len]);
        }
        while let Some(t) = b.poll_transmit(now, &mut buf) {
            a.handle_rx(now, t.nic, &buf[..t.len]);
        }
        while b.poll_deliver(now, &mut buf).is_some() {}
        let next = [a.poll_timeout(), b.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        now = next
            .map_or(now, |t| t.max(now))
            .max(now + Duration::from_micros(1));
    }
    let est = *a.capacity_estimate(NicId(0)).unwrap();
    assert!(est.samples >= 5, "{est:?}");
    assert!(est.estimate_bps >= 160_000_000, "{est:?}");
    let c = a.nic_stats(NicId(0)).unwrap();
    assert_eq!(c.pacing_bps, est.pacing_bps);
    assert!(
        c.capacity_bps.abs_diff(est.estimate_bps) <= c.capacity_bps / 32,
        "{c:?}"
    );
    let placed = a.controller().nic(NicId(0)).unwrap().config.capacity_bps;
    assert_eq!(placed, c.capacity_bps);
    assert_eq!(a.nic_stats(NicId(1)).unwrap().capacity_bps, 1_000_000_000);
    // B carried no load: its guess stands.
    assert_eq!(
        b.capacity_estimate(NicId(0)).unwrap().estimate_bps,
        10_000_000
    );

    // SetNicCapacity on an auto NIC is a new guess; on a configured one, the capacity.
    let now = Instant::from_millis(1500);
    a.apply(
        now,
        Command::SetNicCapacity {
            nic: NicId(0),
            capacity_bps: 50_000_000,
        },
    )
    .unwrap();
    let est = a.capacity_estimate(NicId(0)).unwrap();
    assert_eq!(est.estimate_bps, 50_000_000);
    assert_eq!(est.phase, crate::health::capacity::CapacityPhase::Startup);
    assert_eq!(a.nic_stats(NicId(0)).unwrap().capacity_bps, 50_000_000);
    a.apply(
        now,
        Command::SetNicCapacity {
            nic: NicId(1),
            capacity_bps: 70_000_000,
        },
    )
    .unwrap();
    let c = a.nic_stats(NicId(1)).unwrap();
    assert_eq!((c.capacity_bps, c.pacing_bps), (70_000_000, 70_000_000));
    // The configuration in force follows both commands (for the auto NIC: its new guess).
    let spec = |id| {
        a.config()
            .nics
            .iter()
            .find(|s| s.id == id)
            .unwrap()
            .capacity_bps
    };
    assert_eq!((spec(NicId(0)), spec(NicId(1))), (50_000_000, 70_000_000));
}

/// A worker that falls behind its pacing schedule (preempted for 2 ms) makes up to
/// `pacing_credit` of the lost link time at once, instead of losing it for good; with no
/// credit it sends only the usual `pacing_burst` ahead.
#[test]
fn a_late_engine_catches_up_on_its_pacing_schedule_within_the_credit() {
    let sent_after_stall = |credit: Duration| {
        let mut specs = nics(1, 1472);
        specs[0].capacity_bps = 100_000_000; // a 1000-byte packet takes about 85 µs
        let mut cfg = EngineConfig::new(specs);
        cfg.pacing_credit = credit;
        let (mut a, _b) = pair(cfg);
        let t0 = Instant::from_millis(1);
        for seq in 0..200 {
            assert_eq!(
                a.handle_tx(t0, &udp_packet(5000, seq, 1000)),
                TxVerdict::Queued
            );
        }
        let mut buf = vec![0u8; 2048];
        let mut data = |a: &mut Engine, now| {
            let mut n = 0;
            while let Some(t) = a.poll_transmit(now, &mut buf) {
                if t.len > 1000 {
                    n += 1;
                }
            }
            n
        };
        let first = data(&mut a, t0);
        assert!(first >= 1, "the schedule starts at once");
        // The worker is away for 2 ms, then comes back.
        data(&mut a, t0 + Duration::from_millis(2))
    };
    let with_credit = sent_after_stall(Duration::from_millis(1));
    let without = sent_after_stall(Duration::ZERO);
    // 1 ms of credit + 100 µs of burst at ~85 µs a packet: about 12; without: about 2.
    assert!(
        (11..=14).contains(&with_credit),
        "with credit: {with_credit}"
    );
    assert!(without <= 3, "without credit: {without}");
}

/// One NIC paced at `capacity_bps`, and the duplicated feed (UDP port 7000) in the strict
/// class.
fn paced_feed_config(capacity_bps: u64) -> EngineConfig {
    let mut specs = nics(1, 1472);
    specs[0].capacity_bps = capacity_bps;
    let mut cfg = EngineConfig::new(specs);
    cfg.classes.push(FlowClass::duplicated_feed(7000));
    cfg
}

/// Queue `count` UDP packets of `len` payload bytes to `port` at `now`, each accepted.
fn queue_udp(a: &mut Engine, now: Instant, port: u16, count: u32, len: usize) {
    for seq in 0..count {
        assert_eq!(
            a.handle_tx(now, &udp_packet(port, seq, len)),
            TxVerdict::Queued
        );
    }
}

/// Run the timers (the first probe goes) and send all the pacer lets out at `now`: the
/// schedule is then `pacing_burst` ahead.
fn send_burst(a: &mut Engine, now: Instant, buf: &mut [u8]) {
    a.handle_timeout(now);
    while a.poll_transmit(now, buf).is_some() {}
}

/// On a link the bulk keeps saturated, a latency-critical packet does not wait for the
/// pacer's next slot: it may go up to `pacing_strict_advance` ahead of the schedule, the bulk
/// may not, and the timer says so. Beyond the advance the strict class is paced too, and its
/// wire time still moves the schedule on (the bulk makes up for it).
#[test]
fn the_strict_class_goes_ahead_of_the_pacing_schedule_by_at_most_the_advance() {
    // (feed packets sent at once, bulk packets sent at once, poll_timeout after the burst)
    let run = |advance: Duration| {
        // A 1000-byte packet: about 85 µs of wire time.
        let mut cfg = paced_feed_config(100_000_000);
        cfg.pacing_strict_advance = advance;
        let (mut a, _b) = pair(cfg);
        let t0 = Instant::from_millis(1);
        queue_udp(&mut a, t0, 5000, 100, 1000);
        let mut buf = vec![0u8; 2048];
        // The bulk's burst: the next timer is the bulk's.
        send_burst(&mut a, t0, &mut buf);
        let bulk_timer = a.poll_timeout().unwrap();
        assert!(
            bulk_timer > t0,
            "the bulk waits for its slot: {bulk_timer:?}"
        );
        // Its timer comes when half the burst is left, so a wake-up sends more than one.
        let slot = a.nic_next_send(NicId(0)).unwrap();
        assert_eq!(bulk_timer, slot + Duration::from_micros(50));
        // 100 feed packets of ~290 bytes on the wire (about 23 µs each) arrive now.
        queue_udp(&mut a, t0, 7000, 100, 200);
        let timer = a.poll_timeout().unwrap();
        let (mut feed, mut bulk) = (0, 0);
        while let Some(t) = a.poll_transmit(t0, &mut buf) {
            if t.len > 1000 {
                bulk += 1;
            } else {
                feed += 1;
            }
        }
        let moved = a.nic_next_send(NicId(0)).unwrap() - slot;
        (feed, bulk, timer <= t0, moved)
    };
    // 500 µs at about 23 µs a packet: 21 or 22 go at once (one may start on the last
    // credit); the rest wait for the schedule, and so does the bulk, now further back.
    let (feed, bulk, timer_now, moved) = run(Duration::from_micros(500));
    assert!((20..=23).contains(&feed), "feed sent ahead: {feed}");
    assert_eq!(bulk, 0, "the bulk waits for its slot");
    assert!(timer_now, "the timer is due at once while the feed may go");
    assert!(
        moved >= Duration::from_micros(480) && moved <= Duration::from_micros(530),
        "the feed's wire time moved the schedule on: {moved:?}"
    );
    // No advance: the feed waits for the pacer like the bulk (it still goes first).
    let (feed, bulk, timer_now, _) = run(Duration::ZERO);
    assert_eq!((feed, bulk, timer_now), (0, 0, false));
}

/// The advance is for a strict packet its starvation guard lets out: while the guard holds
/// the strict class back, the timer is the bulk's, not "at once" (which would come again at
/// once and keep the worker spinning until the guard refills).
#[test]
fn a_strict_class_held_by_its_guard_does_not_make_the_timer_come_early() {
    // 1 Gbit/s: the guard, not the advance, stops the feed.
    let mut cfg = paced_feed_config(1_000_000_000);
    // One largest packet of credit (the least a guard may hold), refilled at 8 kbit/s.
    let burst_bytes = cfg.vnic_mtu.max(cfg.qos.max_packet_bytes);
    let strict = cfg
        .qos
        .classes
        .iter_mut()
        .find(|c| matches!(c.kind, crate::qos::ClassKind::Strict { .. }))
        .expect("the default QoS has a strict class");
    strict.kind = crate::qos::ClassKind::Strict {
        guard: Some(crate::qos::RateConfig {
            rate_bps: 8_000,
            burst_bytes,
        }),
    };
    let (mut a, _b) = pair(cfg);
    let t0 = Instant::from_millis(1);
    // More bulk than the first burst sends (1.1 ms of the link), so it stays active and the
    // guard, not an idle bulk class, decides.
    queue_udp(&mut a, t0, 5000, 400, 1000);
    let mut buf = vec![0u8; 2048];
    send_burst(&mut a, t0, &mut buf);
    queue_udp(&mut a, t0, 7000, 100, 200);
    let mut feed = 0;
    while let Some(t) = a.poll_transmit(t0, &mut buf) {
        assert!(t.len < 1000, "no bulk ahead of the schedule");
        feed += 1;
    }
    assert!((1..100).contains(&feed), "the guard let some go: {feed}");
    // The rest wait for the guard: the timer is in the future (without the guard's hold it
    // would be due at once, again and again).
    let timer = a.poll_timeout().unwrap();
    assert!(timer > t0, "{timer:?}");
}

/// A flow refused while every link was down is placed again as soon as a link comes back,
/// not only after the rest of its admission retry delay (100 ms): a peer that starts a few
/// ms late must not cost the first flow 100 ms of drops.
#[test]
fn a_flow_refused_while_links_were_down_is_placed_when_one_comes_back() {
    let (mut a, mut b) = pair(EngineConfig::new(nics(2, 1472)));
    // Nothing answers at first: both links go down.
    let mut now = Instant::ZERO;
    for step in 0..200u64 {
        now = Instant::from_micros(step * 250);
        pump(&mut a, &mut b, now, NicSet::ALL);
    }
    for nic in [NicId(0), NicId(1)] {
        assert_eq!(a.link(nic).unwrap().state, crate::health::LinkState::Down);
    }
    // A new flow now has nowhere to go.
    assert_eq!(
        a.handle_tx(now, &udp_packet(9000, 0, 500)),
        TxVerdict::Drop(DropReason::FlowRejected)
    );
    let refused_at = now;
    // The peer answers: the links come back within a few ms.
    let mut up_at = None;
    for step in 1..200u64 {
        now = refused_at + Duration::from_micros(step * 250);
        pump(&mut a, &mut b, now, NicSet::EMPTY);
        if a.link(NicId(0)).unwrap().state == crate::health::LinkState::Up {
            up_at = Some(now);
            break;
        }
    }
    let up_at = up_at.expect("link 0 back up");
    assert!(up_at < refused_at + Duration::from_millis(50), "{up_at:?}");
    // The flow is placed again at once: this packet is still dropped (it was planned before
    // the flow had NICs), the next one goes.
    let _ = a.handle_tx(now, &udp_packet(9000, 1, 500));
    assert_eq!(
        a.handle_tx(now, &udp_packet(9000, 2, 500)),
        TxVerdict::Queued,
        "placed {:?} after the refusal, within the 100 ms retry delay",
        now.saturating_duration_since(refused_at)
    );
}

/// Every packet carries the engine's lane (data and probes, authenticated: the tag covers
/// it), a pair on lane 3 talks as on lane 0, and an engine on another lane drops each packet
/// as `wrong_lane` before any key is used.
#[test]
fn packets_carry_the_lane_and_another_lane_drops_them() {
    let mut cfg = EngineConfig::new(nics(2, 1472));
    cfg.lane = 3;
    let (mut a, mut b) = auth_pair(&cfg, 1);
    let mut now = Instant::from_millis(1);
    let sent: Vec<Vec<u8>> = (0..20).map(|i| udp_packet(5000, i, 1200)).collect();
    let mut got = Vec::new();
    for p in &sent {
        assert_eq!(a.handle_tx(now, p), TxVerdict::Queued);
        let (d, t) = pump(&mut a, &mut b, now, NicSet::EMPTY);
        got.extend(d);
        now = t;
    }
    assert_same(&got, &sent);
    assert_eq!(b.stats().drops.total(), 0, "{:?}", b.stats().drops);
    // A probe and a data packet, captured: both carry lane 3.
    let mut wire = vec![0u8; 2000];
    now += Duration::from_secs(1);
    a.handle_timeout(now);
    assert_eq!(a.handle_tx(now, &sent[0]), TxVerdict::Queued);
    let mut captured = Vec::new();
    while let Some(t) = a.poll_transmit(now, &mut wire) {
        let view = braid_wire::BraidPacket::new_checked(&wire[..t.len]).unwrap();
        assert_eq!(view.lane(), 3, "{view}");
        captured.push((t.nic, wire[..t.len].to_vec()));
    }
    let types: Vec<_> = captured
        .iter()
        .map(|(_, p)| {
            braid_wire::BraidPacket::new_checked(&p[..])
                .unwrap()
                .packet_type()
        })
        .collect();
    assert!(
        types.contains(&Ok(braid_wire::PacketType::Probe)),
        "{types:?}"
    );
    assert!(
        types.contains(&Ok(braid_wire::PacketType::Data)),
        "{types:?}"
    );
    // The same bytes at an engine of lane 0 (same key): every one dropped as wrong_lane.
    let mut other = cfg.clone();
    other.lane = 0;
    let (_, mut c) = auth_pair(&other, 1);
    for (nic, p) in &captured {
        c.handle_rx(now, *nic, p);
    }
    assert_eq!(
        c.stats().drops.get(DropReason::WrongLane),
        captured.len() as u64
    );
    assert_eq!(c.stats().rx_delivered_count, 0);
    // Lane 16 does not fit the header.
    cfg.lane = 16;
    assert!(Engine::new(cfg, Instant::ZERO).is_err());
}

// ---------------------------------------------------------------------------------- QoS

/// One NIC at `bps`, classes as given.
fn qos_engines(
    bps: u64,
    classes: Vec<FlowClass>,
    qos: Option<crate::qos::QosConfig>,
) -> (Engine, Engine) {
    let mut specs = nics(1, 1472);
    specs[0].capacity_bps = bps;
    let mut cfg = EngineConfig::new(specs);
    cfg.classes = classes;
    if let Some(q) = qos {
        cfg.qos = q;
    }
    pair(cfg)
}

/// The UDP destination port of a delivered IPv4 packet.
fn dst_port(p: &[u8]) -> u16 {
    u16::from_be_bytes([p[22], p[23]])
}

/// Send everything `a` has queued to `b` in 10 µs steps until it is empty (at most
/// `limit`), and return the delivered packets in order.
fn drain_in_order(
    a: &mut Engine,
    b: &mut Engine,
    mut now: Instant,
    limit: Duration,
) -> Vec<Vec<u8>> {
    let mut buf = vec![0u8; 70_000];
    let mut out = Vec::new();
    let end = now + limit;
    while now < end && a.tx_queued_bytes() > 0 {
        while let Some(t) = a.poll_transmit(now, &mut buf) {
            b.handle_rx(now, t.nic, &buf[..t.len]);
        }
        while let Some(d) = b.poll_deliver(now, &mut buf) {
            out.push(buf[..d.len].to_vec());
        }
        now += Duration::from_micros(10);
    }
    out
}

/// Bulk queued first on a slow NIC; a latency-critical flow queued after it still goes
/// out first (strict class). The same flow in the default weighted class waits behind the
/// bulk: the QoS class is what makes the difference.
#[test]
fn the_strict_class_goes_first_under_bulk() {
    for latency_critical in [true, false] {
        let feed = FlowClass {
            latency_critical,
            ..FlowClass::new("feed", ClassMatch::udp_dst_port(7000), ClassPolicy::Pin)
        };
        let (mut a, mut b) = qos_engines(100_000_000, vec![feed], None);
        let now = Instant::from_millis(1);
        for seq in 0..40 {
            assert_eq!(
                a.handle_tx(now, &udp_packet(5000, seq, 1000)),
                TxVerdict::Queued
            );
        }
        for seq in 0..5 {
            assert_eq!(
                a.handle_tx(now, &udp_packet(7000, seq, 100)),
                TxVerdict::Queued
            );
        }
        let strict = a.nic_qos_queued(NicId(0), crate::qos::ClassId(0)).unwrap();
        assert_eq!(strict.0, if latency_critical { 5 } else { 0 });
        let got = drain_in_order(&mut a, &mut b, now, Duration::from_millis(50));
        assert_eq!(got.len(), 45);
        let feed_at: Vec<usize> = (0..got.len())
            .filter(|&i| dst_port(&got[i]) == 7000)
            .collect();
        if latency_critical {
            assert_eq!(feed_at, [0, 1, 2, 3, 4], "the feed jumps the bulk");
        } else {
            assert_eq!(feed_at, [40, 41, 42, 43, 44], "without QoS it waits");
        }
        let q = a.nic_qos_stats(NicId(0)).unwrap();
        assert_eq!(
            q.class(crate::qos::ClassId(0)).dequeued_packets_count,
            if latency_critical { 5 } else { 0 }
        );
    }
}

/// Two weighted classes (weights 1 and 3) keep a 100 Mbit/s NIC saturated: the NIC is
/// busy all the time and the bytes it carries split 1:3, in simulated time.
#[test]
fn drr_weights_share_a_saturated_nic_in_proportion() {
    use crate::qos::{ClassConfig, ClassId, QosConfig};
    let qos = QosConfig {
        classes: vec![
            ClassConfig::strict(0, None, 256, 1 << 20),
            ClassConfig::weighted(1, 1, 256, 1 << 20),
            ClassConfig::weighted(2, 3, 256, 1 << 20),
        ],
        ..QosConfig::default()
    };
    let class = |name: &str, port: u16, id: u8| FlowClass {
        qos_class: Some(ClassId(id)),
        ..FlowClass::new(name, ClassMatch::udp_dst_port(port), ClassPolicy::Pin)
    };
    let (mut a, mut b) = qos_engines(
        100_000_000,
        vec![class("light", 5000, 1), class("heavy", 6000, 2)],
        Some(qos),
    );
    let mut buf = vec![0u8; 70_000];
    let mut now = Instant::from_millis(1);
    let mut seq = [0u32; 2];
    let mut delivered = [0u64; 2];
    let end = now + Duration::from_millis(300);
    let measure_from = now + Duration::from_millis(50);
    while now < end {
        // Both classes stay backlogged.
        for (k, (port, id)) in [(5000u16, 1u8), (6000, 2)].into_iter().enumerate() {
            while a.nic_qos_queued(NicId(0), ClassId(id)).unwrap().0 < 16 {
                assert_eq!(
                    a.handle_tx(now, &udp_packet(port, seq[k], 1200)),
                    TxVerdict::Queued
                );
                seq[k] += 1;
            }
        }
        a.handle_timeout(now);
        b.handle_timeout(now);
        while let Some(t) = a.poll_transmit(now, &mut buf) {
            b.handle_rx(now, t.nic, &buf[..t.len]);
        }
        while let Some(t) = b.poll_transmit(now, &mut buf) {
            a.handle_rx(now, t.nic, &buf[..t.len]);
        }
        while let Some(d) = b.poll_deliver(now, &mut buf) {
            if now >= measure_from {
                let k = usize::from(dst_port(&buf[..d.len]) == 6000);
                delivered[k] += d.len as u64;
            }
        }
        now += Duration::from_micros(10);
    }
    let ratio = delivered[1] as f64 / delivered[0] as f64;
    assert!(
        (ratio - 3.0).abs() < 0.1,
        "heavy/light = {ratio} ({delivered:?})"
    );
    // Saturated: 250 ms at 100 Mbit/s is 3.125 MB on the wire; the payload is 1228 of every
    // 1228 + 32 + 28 + 14 wire bytes.
    let total = (delivered[0] + delivered[1]) as f64;
    let expected = 100e6 / 8.0 * 0.25 * 1228.0 / (1228.0 + 74.0);
    assert!(
        (total / expected - 1.0).abs() < 0.03,
        "{total} of {expected}"
    );
    assert_eq!(a.stats().drops.total(), 0, "{:?}", a.stats().drops);
}

/// A class with an RFC 2697 meter and `drop_red` polices at the vNIC: beyond its burst,
/// packets are dropped and counted as `qos_meter_red`; the meter refills at its rate.
#[test]
fn a_meter_red_packet_is_a_counted_drop() {
    use crate::qos::{ClassId, MeterConfig, MeterMode, QosConfig, SrTcmConfig};
    let mut qos = QosConfig::default();
    qos.classes[1].meter = Some(MeterConfig::SrTcm(SrTcmConfig {
        cir_bps: 8_000_000, // 1000 bytes per ms
        cbs_bytes: 9000,
        ebs_bytes: 0,
        mode: MeterMode::ColorBlind,
    }));
    qos.classes[1].drop_red = true;
    let feed = FlowClass::duplicated_feed(7000);
    let (mut a, _b) = qos_engines(1_000_000_000, vec![feed], Some(qos));
    let now = Instant::from_millis(1);
    // 1028-byte packets: 8 fit the 9000-byte burst (8224), the 9th does not.
    let verdicts: Vec<TxVerdict> = (0..100)
        .map(|seq| a.handle_tx(now, &udp_packet(5000, seq, 1000)))
        .collect();
    assert!(verdicts[..8].iter().all(|v| *v == TxVerdict::Queued));
    assert!(
        verdicts[8..]
            .iter()
            .all(|v| *v == TxVerdict::Drop(DropReason::QosMeterRed))
    );
    assert_eq!(a.stats().drops.get(DropReason::QosMeterRed), 92);
    let m = a.vnic_meter_stats().class(ClassId(1));
    assert_eq!((m.green_count, m.red_count, m.drop_red_count), (8, 92, 92));
    // Metered once, at the vNIC: the NICs' schedulers carry no meter of their own, so a
    // piece the vNIC passed can never turn Red on a NIC (they count the colour each piece
    // came with: the 8 Green packets).
    let mut green = 0;
    for nic in [NicId(0), NicId(1)] {
        if let Some(q) = a.nic_qos_stats(nic) {
            let c = q.class(ClassId(1));
            assert_eq!((c.yellow_count, c.red_count), (0, 0), "nic {}", nic.0);
            green += c.green_count;
        }
    }
    assert_eq!(green, 8);
    // The strict class has no meter: the feed is not policed.
    for seq in 0..20 {
        assert_eq!(
            a.handle_tx(now, &udp_packet(7000, seq, 1000)),
            TxVerdict::Queued
        );
    }
    // 3 ms later the bucket holds 3000 bytes more (+ the 776 left): three packets, not four.
    let later = now + Duration::from_millis(3);
    let ok = (100..104)
        .filter(|&seq| a.handle_tx(later, &udp_packet(5000, seq, 1000)) == TxVerdict::Queued)
        .count();
    assert_eq!(ok, 3);
}

/// Per NIC and class, the QoS counters see every packet: queued (with the colour the vNIC's
/// meter gave it), refused because the class queue was full (the room check's refusal is
/// counted on the full NIC's class, not only as `tx_queue_full`), dequeued, and the queue's
/// depth; the vNIC meter's counters agree on the colours.
#[test]
fn nic_qos_counters_see_every_packet_of_a_class() {
    use crate::qos::{ClassId, MeterConfig, MeterMode, QosConfig, SrTcmConfig};
    let mut qos = QosConfig::default();
    qos.classes[1].queue_packets = 24;
    qos.classes[1].meter = Some(MeterConfig::SrTcm(SrTcmConfig {
        cir_bps: 8_000_000,
        cbs_bytes: 9 * 1028,
        ebs_bytes: 9 * 1028,
        mode: MeterMode::ColorBlind,
    }));
    let (mut a, _b) = qos_engines(1_000_000_000, Vec::new(), Some(qos));
    let now = Instant::from_millis(1);
    // 1028-byte packets: 9 Green (the committed burst), 9 Yellow (the excess burst), then
    // Red (queued: no drop_red); the 25th and 26th find the queue full and take no tokens.
    let verdicts: Vec<TxVerdict> = (0..26)
        .map(|seq| a.handle_tx(now, &udp_packet(5000, seq, 1000)))
        .collect();
    assert!(verdicts[..24].iter().all(|v| *v == TxVerdict::Queued));
    assert!(
        verdicts[24..]
            .iter()
            .all(|v| *v == TxVerdict::Drop(DropReason::TxQueueFull))
    );
    let c = a.nic_qos_stats(NicId(0)).expect("nic 0").class(ClassId(1));
    assert_eq!(
        (c.enqueued_packets_count, c.enqueued_bytes_count),
        (24, 24 * 1028)
    );
    assert_eq!((c.green_count, c.yellow_count, c.red_count), (9, 9, 6));
    assert_eq!(c.drop_queue_full_count, 2);
    assert_eq!(
        a.nic_qos_queued(NicId(0), ClassId(1)),
        Some((24, 24 * 1028))
    );
    let m = a.vnic_meter_stats().class(ClassId(1));
    assert_eq!((m.green_count, m.yellow_count, m.red_count), (9, 9, 6));
    // Send what pacing allows: the dequeued and the still queued make the 24.
    let mut buf = vec![0u8; 2048];
    let later = now + Duration::from_micros(30);
    while a.poll_transmit(later, &mut buf).is_some() {}
    let c = a.nic_qos_stats(NicId(0)).expect("nic 0").class(ClassId(1));
    let (queued, _) = a.nic_qos_queued(NicId(0), ClassId(1)).expect("class 1");
    assert!(c.dequeued_packets_count > 0);
    assert_eq!(c.dequeued_packets_count + queued as u64, 24);
    assert_eq!(c.dequeued_bytes_count, c.dequeued_packets_count * 1028);
}

/// `SetQos` replaces every NIC's configuration between batches: packets queued in classes
/// that stay are kept and sent; a refused configuration changes nothing; a shrunk queue
/// gives back its newest packets as counted drops, freeing their buffers.
#[test]
fn a_live_qos_replacement_keeps_queued_packets() {
    use crate::qos::{ClassConfig, ClassId, QosConfig};
    let (mut a, mut b) = qos_engines(100_000_000, Vec::new(), None);
    let now = Instant::from_millis(1);
    let sent: Vec<Vec<u8>> = (0..40).map(|seq| udp_packet(5000, seq, 1000)).collect();
    for p in &sent {
        assert_eq!(a.handle_tx(now, p), TxVerdict::Queued);
    }
    let queued = a.tx_queued_bytes();
    assert_eq!(queued, 40 * 1028);
    // Weight changed, a class added: everything stays queued.
    let mut bigger = QosConfig::default();
    bigger.classes[1].kind = crate::qos::ClassKind::Weighted { weight: 4 };
    bigger
        .classes
        .push(ClassConfig::weighted(2, 1, 100, 1 << 20));
    a.apply(now, Command::SetQos(bigger.clone())).unwrap();
    assert_eq!(a.config().qos, bigger);
    assert_eq!(a.tx_queued_bytes(), queued);
    assert_eq!(
        a.nic_qos_queued(NicId(0), ClassId(1)),
        Some((40, 40 * 1028))
    );
    // Refused: no weighted class left, or a queue too small for a vNIC-MTU packet.
    let only_strict = QosConfig {
        classes: vec![ClassConfig::strict(0, None, 10, 1 << 20)],
        ..QosConfig::default()
    };
    let e = a.apply(now, Command::SetQos(only_strict)).unwrap_err();
    assert_eq!(e, CommandError::InvalidQos(QosError::NoWeightedClass));
    let mut tiny = QosConfig::default();
    tiny.classes[1].queue_bytes = 2000;
    let e = a.apply(now, Command::SetQos(tiny)).unwrap_err();
    assert_eq!(
        alloc::string::ToString::to_string(&e),
        "qos configuration refused: qos.classes[1].queue_bytes: must hold the largest packet \
         braid queues or meters (vnic_mtu or a NIC's mtu_bytes)"
    );
    assert_eq!(
        a.config().qos,
        bigger,
        "a refused configuration changes nothing"
    );
    assert_eq!(a.tx_queued_bytes(), queued);
    // Shrunk to 10 packets: the 30 newest are dropped and counted, the 10 oldest sent.
    let mut small = QosConfig::default();
    small.classes[1].queue_packets = 10;
    a.apply(now, Command::SetQos(small)).unwrap();
    assert_eq!(a.stats().drops.get(DropReason::QosClassRemoved), 30);
    assert_eq!(a.tx_queued_bytes(), 10 * 1028);
    let got = drain_in_order(&mut a, &mut b, now, Duration::from_millis(50));
    assert_same(&got, &sent[..10]);
    assert_eq!(a.store_used_bytes(), 0, "every buffer freed");
    // The slots came back too: a full queue's worth can be queued again.
    for p in &sent[..10] {
        assert_eq!(a.handle_tx(now, p), TxVerdict::Queued);
    }
}

/// The QoS configuration is checked with the rest, and errors name the field.
#[test]
fn qos_config_errors_name_the_field() {
    use crate::qos::ClassId;
    let err = |cfg: &EngineConfig| match cfg.validate() {
        Err(ConfigError::Invalid { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    let mut cfg = EngineConfig::new(nics(1, 1472));
    cfg.classes.push(FlowClass {
        qos_class: Some(ClassId(5)),
        ..FlowClass::new("x", ClassMatch::default(), ClassPolicy::Stripe)
    });
    assert_eq!(err(&cfg), "classes[0].qos_class");
    cfg.classes[0].qos_class = None;
    cfg.classes[0].latency_critical = true;
    cfg.validate().unwrap();
    cfg.qos.classes.remove(0);
    assert_eq!(err(&cfg), "classes[0].latency_critical");
    let mut cfg = EngineConfig::new(nics(1, 1472));
    cfg.qos.classes[1].queue_packets = 0;
    assert_eq!(err(&cfg), "qos.classes[1].queue_packets");
    // The scheduler holds packets up to the vNIC MTU (9000 by default): a 4000-byte queue
    // does not, though it would for 1500-byte packets.
    let mut cfg = EngineConfig::new(nics(1, 1472));
    cfg.qos.classes[0].queue_bytes = 4000;
    assert_eq!(err(&cfg), "qos.classes[0].queue_bytes");
    cfg.vnic_mtu = 1500;
    cfg.validate().unwrap();
}

/// While bulk keeps a NIC above the admission limit, a new bulk flow is refused
/// (`flow_rejected`), but a new latency-critical flow is not: it goes ahead of the bulk in
/// the strict class, so the bulk's load is no reason to keep it out.
#[test]
fn a_saturated_nic_still_takes_a_new_latency_critical_flow() {
    let feed = FlowClass {
        latency_critical: true,
        ..FlowClass::new("feed", ClassMatch::udp_dst_port(7000), ClassPolicy::Pin)
    };
    let (mut a, mut b) = qos_engines(100_000_000, vec![feed], None);
    let mut buf = vec![0u8; 70_000];
    let mut now = Instant::from_millis(1);
    // 1228-byte packets every 80 µs: 123 Mbit/s offered to a 100 Mbit/s NIC for 300 ms.
    for step in 0..30_000u32 {
        if step % 8 == 0 {
            assert_eq!(
                a.handle_tx(now, &udp_packet(5000, step / 8, 1200)),
                TxVerdict::Queued
            );
        }
        a.handle_timeout(now);
        b.handle_timeout(now);
        while let Some(t) = a.poll_transmit(now, &mut buf) {
            b.handle_rx(now, t.nic, &buf[..t.len]);
        }
        while let Some(t) = b.poll_transmit(now, &mut buf) {
            a.handle_rx(now, t.nic, &buf[..t.len]);
        }
        while b.poll_deliver(now, &mut buf).is_some() {}
        now += Duration::from_micros(10);
    }
    assert!(a.controller().nic(NicId(0)).unwrap().utilisation() > 0.95);
    assert_eq!(
        a.handle_tx(now, &udp_packet(6000, 0, 1200)),
        TxVerdict::Drop(DropReason::FlowRejected),
        "a new bulk flow is refused"
    );
    for seq in 0..3 {
        assert_eq!(
            a.handle_tx(now, &udp_packet(7000, seq, 100)),
            TxVerdict::Queued,
            "the feed is carried"
        );
    }
    // ... and sent first, ahead of the bulk backlog.
    let mut first = Vec::new();
    while first.len() < 3 {
        now += Duration::from_micros(10);
        while let Some(t) = a.poll_transmit(now, &mut buf) {
            b.handle_rx(now, t.nic, &buf[..t.len]);
        }
        while let Some(d) = b.poll_deliver(now, &mut buf) {
            first.push(dst_port(&buf[..d.len]));
        }
    }
    assert_eq!(first, [7000, 7000, 7000]);
}
