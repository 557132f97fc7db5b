//! Engine tests of what `metrics.rs` exports: probe RTTs and one-way delay variation land
//! in the NIC's histograms, reorder holds in the hold histogram, the held gauges follow the
//! reorder buffers, and the rate scan ranks every flow (`top_flows.rs`). Time is passed in,
//! so the recorded values are exact.

use alloc::vec;
use alloc::vec::Vec;
use core::net::Ipv4Addr;
use core::time::Duration;

use braid_wire::{BraidPacket, BraidRepr, PacketType};

use super::super::{Engine, EngineConfig, FlowDirection, NicSpec, TOP_FLOWS, TxVerdict};
use crate::histogram::bucket_index;
use crate::{FlowId, Instant, NicId};

fn config(nics: u8) -> EngineConfig {
    EngineConfig::new(
        (0..nics)
            .map(|i| NicSpec::udp_ipv4(NicId(i), &alloc::format!("link{i}"), 1_000_000_000, 1500))
            .collect(),
    )
}

fn udp_packet(dst_port: u16, payload_len: usize) -> Vec<u8> {
    let mut p = vec![0u8; 28 + payload_len];
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

/// Every packet `e` transmits at `now`, with its type.
fn transmit(e: &mut Engine, now: Instant) -> Vec<(NicId, PacketType, Vec<u8>)> {
    let mut buf = vec![0u8; 70_000];
    let mut out = Vec::new();
    while let Some(t) = e.poll_transmit(now, &mut buf) {
        let bytes = buf[..t.len].to_vec();
        let kind = BraidRepr::parse(&BraidPacket::new_checked(&bytes[..]).unwrap())
            .unwrap()
            .packet_type;
        out.push((t.nic, kind, bytes));
    }
    out
}

#[test]
fn probe_rtt_lands_in_the_nics_histogram() {
    let mut a = Engine::new(config(2), Instant::ZERO).unwrap();
    let mut b = Engine::new(config(2), Instant::ZERO).unwrap();
    assert_eq!(a.stats().latency.nics.len(), 2, "one set per NIC id");
    let t0 = Instant::from_millis(10);
    a.handle_timeout(t0);
    let probes: Vec<_> = transmit(&mut a, t0)
        .into_iter()
        .filter(|(nic, kind, _)| *nic == NicId(1) && *kind == PacketType::Probe)
        .collect();
    assert_eq!(probes.len(), 1, "one probe on NIC 1");
    // Out 100 µs, answered 100 µs later, back 100 µs later: an RTT of 300 µs.
    b.handle_rx(t0 + Duration::from_micros(100), NicId(1), &probes[0].2);
    let t1 = t0 + Duration::from_micros(200);
    let replies: Vec<_> = transmit(&mut b, t1)
        .into_iter()
        .filter(|(_, kind, _)| *kind == PacketType::ProbeReply)
        .collect();
    assert_eq!(replies.len(), 1);
    a.handle_rx(t1 + Duration::from_micros(100), replies[0].0, &replies[0].2);

    let rtt = &a.stats().latency.nic(NicId(1)).unwrap().rtt;
    assert_eq!(rtt.count(), 1);
    assert_eq!(rtt.sum_ns(), 300_000);
    assert_eq!(rtt.bucket_count(bucket_index(300_000)), 1);
    assert_eq!(
        rtt.quantile_ns(990_000),
        Some(300_000),
        "one sample is exact"
    );
    assert_eq!(a.stats().latency.nic(NicId(0)).unwrap().rtt.count(), 0);
    // The same reply again is stale: no second sample.
    a.handle_rx(t1 + Duration::from_micros(150), replies[0].0, &replies[0].2);
    assert_eq!(a.stats().latency.nic(NicId(1)).unwrap().rtt.count(), 1);
}

#[test]
fn one_way_delay_variation_is_the_step_between_packets() {
    let mut a = Engine::new(config(1), Instant::ZERO).unwrap();
    let mut b = Engine::new(config(1), Instant::ZERO).unwrap();
    // Three rounds sent 1 ms apart, taking 100, 250 and 100 µs: steps of 150 µs into the
    // second round and out of it, 0 between packets of one round.
    for (k, transit_us) in [100u64, 250, 100].into_iter().enumerate() {
        let sent = Instant::from_millis(10 + k as u64);
        assert_eq!(a.handle_tx(sent, &udp_packet(5000, 100)), TxVerdict::Queued);
        for (nic, _, bytes) in transmit(&mut a, sent) {
            b.handle_rx(sent + Duration::from_micros(transit_us), nic, &bytes);
        }
    }
    let dv = &b.stats().latency.nic(NicId(0)).unwrap().delay_variation;
    // Every packet heard but the first gives a step (the first round has a probe too).
    let heard = b.stats().nics[0].rx_packets_count;
    assert!(heard >= 3);
    assert_eq!(dv.count(), heard - 1);
    assert_eq!(dv.sum_ns(), 300_000);
    assert_eq!(dv.max_ns(), Some(150_000));
    assert_eq!(dv.bucket_count(bucket_index(150_000)), 2);
    assert_eq!(dv.bucket_count(0), heard - 3);
}

#[test]
fn reorder_hold_lands_in_the_hold_histogram_and_the_held_gauges() {
    let mut a = Engine::new(config(1), Instant::ZERO).unwrap();
    let mut b = Engine::new(config(1), Instant::ZERO).unwrap();
    let now = Instant::from_millis(10);
    let p = udp_packet(5000, 472);
    for _ in 0..2 {
        assert_eq!(a.handle_tx(now, &p), TxVerdict::Queued);
    }
    let data: Vec<_> = transmit(&mut a, now)
        .into_iter()
        .filter(|(_, kind, _)| *kind == PacketType::Data)
        .collect();
    assert_eq!(data.len(), 2);
    // Sequence 1 first: held, waiting for 0.
    b.handle_rx(now, data[1].0, &data[1].2);
    assert_eq!(b.stats().rx_reorder_held_count, 1);
    assert_eq!(
        b.stats().rx_reorder_held_bytes,
        500,
        "the IP packet's bytes"
    );
    assert_eq!(b.stats().latency.reorder_hold.count(), 0);
    // Sequence 0, 70 µs later: both released, 1 after waiting 70 µs, 0 without waiting.
    b.handle_rx(now + Duration::from_micros(70), data[0].0, &data[0].2);
    assert_eq!(b.stats().rx_reorder_held_count, 0);
    assert_eq!(b.stats().rx_reorder_held_bytes, 0);
    let hold = &b.stats().latency.reorder_hold;
    assert_eq!(hold.count(), 1, "only the datagram that waited");
    assert_eq!(hold.sum_ns(), 70_000);
    assert_eq!(hold.quantile_ns(500_000), Some(70_000));
    assert_eq!(b.stats().rx_reordered_count, 1);
}

#[test]
fn held_gauges_drop_when_a_gap_is_given_up() {
    let mut a = Engine::new(config(1), Instant::ZERO).unwrap();
    let mut b = Engine::new(config(1), Instant::ZERO).unwrap();
    let now = Instant::from_millis(10);
    let p = udp_packet(5000, 100);
    for _ in 0..3 {
        assert_eq!(a.handle_tx(now, &p), TxVerdict::Queued);
    }
    let data: Vec<_> = transmit(&mut a, now)
        .into_iter()
        .filter(|(_, kind, _)| *kind == PacketType::Data)
        .collect();
    // 0 is lost; 1 and 2 wait until the hold (25 ms at most) gives 0 up.
    b.handle_rx(now, data[1].0, &data[1].2);
    b.handle_rx(now, data[2].0, &data[2].2);
    assert_eq!(b.stats().rx_reorder_held_count, 2);
    assert_eq!(b.stats().rx_reorder_held_bytes, 256);
    let later = now + Duration::from_millis(30);
    b.handle_timeout(later);
    assert_eq!(b.stats().rx_reorder_held_count, 0);
    assert_eq!(b.stats().rx_reorder_held_bytes, 0);
    let hold = &b.stats().latency.reorder_hold;
    assert_eq!(hold.count(), 2);
    assert_eq!(hold.max_ns(), Some(30_000_000));
}

#[test]
fn the_rate_scan_ranks_every_flow_by_rate() {
    // More TX flows than one page of the flow snapshot (MAX_FLOW_ROWS = 1000) and than one
    // step of the scan: the busiest is the last installed (the highest id).
    let mut a = Engine::new(config(1), Instant::ZERO).unwrap();
    let start = Instant::from_millis(500);
    for port in 0..1500u16 {
        assert_eq!(
            a.handle_tx(start, &udp_packet(10_000 + port, 72)),
            TxVerdict::Queued
        );
    }
    for _ in 0..10 {
        assert_eq!(
            a.handle_tx(start, &udp_packet(20_000, 972)),
            TxVerdict::Queued
        );
    }
    assert!(a.stats().top_flows.scanned_at.is_none());
    // The first pass starts 1 s after the engine: at 1.5 s every mark is 1 s old.
    let t = Instant::from_millis(1500);
    a.handle_timeout(t);
    assert!(
        a.stats().top_flows.scanned_at.is_none(),
        "1501 slots take two steps of 1024"
    );
    a.handle_timeout(t);
    let top = &a.stats().top_flows;
    assert_eq!(top.scanned_at, Some(t));
    let rows = top.as_slice();
    assert_eq!(rows.len(), TOP_FLOWS);
    assert_eq!(rows[0].direction, FlowDirection::Tx);
    // 10 packets of 1000 bytes in 1 s.
    assert_eq!(rows[0].rate_bps, 80_000);
    let busiest = a
        .flows(
            t,
            &super::super::FlowQuery {
                port: Some(20_000),
                ..super::super::FlowQuery::default()
            },
        )
        .into_iter()
        .next()
        .unwrap();
    assert_eq!(rows[0].id, busiest.id);
    // The others: one 100-byte packet in 1 s each; ties by id, lowest first.
    assert!(rows[1..].iter().all(|r| r.rate_bps == 800));
    assert!(rows[1..].windows(2).all(|w| w[0].id.0 < w[1].id.0));
    // The next pass measures the second second: nothing more was sent.
    let t2 = Instant::from_millis(2600);
    a.handle_timeout(t2);
    a.handle_timeout(t2);
    assert_eq!(a.stats().top_flows.scanned_at, Some(t2));
    assert!(
        a.stats().top_flows.as_slice().is_empty(),
        "idle flows are not ranked"
    );
}

#[test]
fn rx_flows_are_ranked_by_their_delivered_bytes() {
    let mut a = Engine::new(config(1), Instant::ZERO).unwrap();
    let mut b = Engine::new(config(1), Instant::ZERO).unwrap();
    let now = Instant::from_millis(300);
    for (port, n) in [(5000u16, 4), (6000, 2)] {
        for _ in 0..n {
            assert_eq!(a.handle_tx(now, &udp_packet(port, 472)), TxVerdict::Queued);
        }
    }
    let sent = transmit(&mut a, now);
    assert_eq!(
        sent.iter()
            .filter(|(_, kind, _)| *kind == PacketType::Data)
            .count(),
        6,
        "all within the pacer's burst"
    );
    for (nic, _, bytes) in sent {
        b.handle_rx(now, nic, &bytes);
    }
    assert_eq!(
        b.stats().rx_delivered_count,
        0,
        "not polled, but in the queue"
    );
    let scan = Instant::from_millis(1300);
    b.handle_timeout(scan);
    let rows = b.stats().top_flows.as_slice();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.direction == FlowDirection::Rx));
    // Installed at 300 ms: 4 × 500 bytes over 1 s, 2 × 500 bytes over 1 s.
    assert_eq!(
        rows.iter().map(|r| r.rate_bps).collect::<Vec<_>>(),
        [16_000, 8_000]
    );
    // RX ids are the sender's.
    let tx_id = |port: u16| -> FlowId {
        a.flows(
            scan,
            &super::super::FlowQuery {
                port: Some(port),
                ..super::super::FlowQuery::default()
            },
        )[0]
        .id
    };
    assert_eq!((rows[0].id, rows[1].id), (tx_id(5000), tx_id(6000)));
}
