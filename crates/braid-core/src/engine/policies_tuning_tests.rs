//! Tests of the striping policies and the tuning in [`Command::ReplacePolicies`]: a new
//! default or class policy reaches the flows already installed on their next packet; the
//! scheduler's cost model is the new one for the next packet; the reassembler's caps and
//! timeout apply to the datagrams it holds (the oldest dropped and counted when the memory
//! cap shrinks) and to new ones (a larger `max_datagram_bytes` than at start); a shorter
//! reorder hold releases what is held at the next poll; and every refusal names the field
//! and changes nothing, the other parts of the command included.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;

use braid_wire::{BraidPacket, PacketType};

use super::Policies;
use crate::engine::tests::udp_packet;
use crate::engine::{
    ClassMatch, ClassPolicy, Command, CommandError, Engine, EngineConfig, FlowClass, FlowDirection,
    FlowQuery, NicSpec, TxVerdict,
};
use crate::{DropReason, Instant, NicId, NicSet};

/// `n` NICs of 1 Gbit/s whose braid packets are up to 1472 bytes.
fn config(n: u8) -> EngineConfig {
    EngineConfig::new(
        (0..n)
            .map(|i| NicSpec::udp_ipv4(NicId(i), &alloc::format!("link{i}"), 1_000_000_000, 1500))
            .collect(),
    )
}

/// Every braid data packet `e` sends now: (NIC, bytes). Probes are left out.
fn data_out(e: &mut Engine, now: Instant) -> Vec<(NicId, Vec<u8>)> {
    let mut buf = vec![0u8; 70_000];
    let mut out = Vec::new();
    while let Some(t) = e.poll_transmit(now, &mut buf) {
        let p = BraidPacket::new_checked(&buf[..t.len]).unwrap();
        if p.packet_type() == Ok(PacketType::Data) {
            out.push((t.nic, buf[..t.len].to_vec()));
        }
    }
    out
}

/// (datagram sequence, fragment offset) of a braid data packet.
fn seq_offset(p: &[u8]) -> (u64, u32) {
    let p = BraidPacket::new_checked(p).unwrap();
    (p.seq(), p.frag_offset())
}

/// The NICs a set of packets went out on.
fn nics_of(out: &[(NicId, Vec<u8>)]) -> NicSet {
    let mut set = NicSet::EMPTY;
    for (n, _) in out {
        set.insert(*n);
    }
    set
}

/// Every packet `e` has for the vNIC: (gap before it, bytes).
fn delivered(e: &mut Engine, now: Instant) -> Vec<(u64, Vec<u8>)> {
    let mut buf = vec![0u8; 70_000];
    let mut out = Vec::new();
    while let Some(d) = e.poll_deliver(now, &mut buf) {
        out.push((d.gap_before, buf[..d.len].to_vec()));
    }
    out
}

fn replace(e: &mut Engine, now: Instant, p: Policies) -> Result<(), CommandError> {
    e.apply(now, Command::ReplacePolicies(Box::new(p)))
}

/// The TX flows' (id, policy), by destination port.
fn tx_policies(e: &Engine, now: Instant) -> Vec<(u16, u32, Option<ClassPolicy>)> {
    let query = FlowQuery {
        direction: Some(FlowDirection::Tx),
        ..FlowQuery::default()
    };
    let mut rows: Vec<_> = e
        .flows(now, &query)
        .iter()
        .map(|r| (r.key.map_or(0, |k| k.dst_port), r.id.0, r.policy))
        .collect();
    rows.sort_unstable_by_key(|r| (r.0, r.1));
    rows
}

/// A new default policy and a new class policy reach the flows already installed, on
/// their next packet: the same flows (same ids, no new entry) are duplicated on both NICs
/// instead of striped or pinned.
#[test]
fn new_striping_policies_reach_installed_flows() {
    let mut cfg = config(2);
    cfg.classes.push(FlowClass::new(
        "pinned",
        ClassMatch::udp_dst_port(6000),
        ClassPolicy::Pin,
    ));
    let mut a = Engine::new(cfg, Instant::ZERO).unwrap();
    let now = Instant::from_millis(1);
    for port in [5000, 6000] {
        assert_eq!(
            a.handle_tx(now, &udp_packet(port, 0, 100)),
            TxVerdict::Queued
        );
    }
    assert_eq!(data_out(&mut a, now).len(), 2, "one copy each");
    let before = tx_policies(&a, now);
    assert_eq!(
        before.iter().map(|r| (r.0, r.2)).collect::<Vec<_>>(),
        [
            (5000, Some(ClassPolicy::Stripe)),
            (6000, Some(ClassPolicy::Pin))
        ]
    );

    let mut p = Policies::of(a.config()).unwrap();
    p.default_policy = ClassPolicy::Duplicate;
    p.class_policies = vec![ClassPolicy::Duplicate];
    replace(&mut a, now, p).unwrap();
    assert_eq!(a.config().default_policy, ClassPolicy::Duplicate);
    assert_eq!(a.config().classes[0].policy, ClassPolicy::Duplicate);

    let later = now + Duration::from_millis(1);
    for port in [5000, 6000] {
        assert_eq!(
            a.handle_tx(later, &udp_packet(port, 1, 100)),
            TxVerdict::Queued
        );
        let out = data_out(&mut a, later);
        assert_eq!(out.len(), 2, "port {port}: a copy on each NIC");
        assert_eq!(nics_of(&out), NicSet::ALL.and(a_nics()));
    }
    let after = tx_policies(&a, later);
    assert_eq!(
        after.iter().map(|r| (r.0, r.1, r.2)).collect::<Vec<_>>(),
        before
            .iter()
            .map(|r| (r.0, r.1, Some(ClassPolicy::Duplicate)))
            .collect::<Vec<_>>(),
        "the same flows, with the new policy"
    );
}

/// NICs 0 and 1.
fn a_nics() -> NicSet {
    let mut s = NicSet::EMPTY;
    s.insert(NicId(0));
    s.insert(NicId(1));
    s
}

/// The scheduler plans the next packet with the new cost model: a jumbo packet split over
/// both NICs before is kept on one NIC with `max_split_links = 1`.
#[test]
fn the_next_packet_is_planned_with_the_new_cost_model() {
    let mut a = Engine::new(config(2), Instant::ZERO).unwrap();
    let mut now = Instant::from_millis(1);
    assert_eq!(
        a.handle_tx(now, &udp_packet(5000, 0, 8000)),
        TxVerdict::Queued
    );
    let out = data_out(&mut a, now);
    assert!(out.len() >= 6, "{} pieces", out.len());
    assert_eq!(nics_of(&out), a_nics(), "split over both NICs");

    let mut p = Policies::of(a.config()).unwrap();
    p.scheduler.max_split_links = 1;
    replace(&mut a, now, p).unwrap();
    assert_eq!(a.config().scheduler.max_split_links, 1);
    for seq in 1..4 {
        now += Duration::from_millis(1);
        assert_eq!(
            a.handle_tx(now, &udp_packet(5000, seq, 8000)),
            TxVerdict::Queued
        );
        let out = data_out(&mut a, now);
        assert!(out.len() >= 6, "{} pieces", out.len());
        assert_eq!(nics_of(&out).len(), 1, "packet {seq}: whole on one NIC");
    }
}

/// A lower memory cap drops the oldest datagram the receiver holds (counted in the
/// engine's drops as `reassembly_evicted`), its later fragments are stale, the newer one
/// completes; a shorter timeout expires a held datagram at the new deadline.
#[test]
fn reassembly_caps_and_timeout_apply_to_held_datagrams() {
    let mut a = Engine::new(config(1), Instant::ZERO).unwrap();
    let mut b = Engine::new(config(1), Instant::ZERO).unwrap();
    let now = Instant::from_millis(1);
    for seq in 0..2 {
        assert_eq!(
            a.handle_tx(now, &udp_packet(5000, seq, 3000)),
            TxVerdict::Queued
        );
    }
    let out = data_out(&mut a, now);
    let frags = |seq: u64| -> Vec<&Vec<u8>> {
        out.iter()
            .map(|(_, p)| p)
            .filter(|p| seq_offset(p).0 == seq)
            .collect()
    };
    let (d0, d1) = (frags(0), frags(1));
    assert_eq!((d0.len(), d1.len()), (3, 3), "three fragments each");
    b.handle_rx(now, NicId(0), d0[0]);
    b.handle_rx(now, NicId(0), d1[0]);
    assert_eq!(b.reassembly_stats().bytes_held, 2 * 4096);

    let mut p = Policies::of(b.config()).unwrap();
    p.reassembly.mem_cap_bytes = 4096;
    replace(&mut b, now, p).unwrap();
    assert_eq!(b.config().reassembly.mem_cap_bytes, 4096);
    assert_eq!(b.stats().drops.get(DropReason::ReassemblyEvicted), 1);
    assert_eq!(b.reassembly_stats().bytes_held, 4096);
    for f in &d0[1..] {
        b.handle_rx(now, NicId(0), f);
    }
    assert_eq!(b.stats().drops.get(DropReason::ReassemblyStale), 2);
    for f in &d1[1..] {
        b.handle_rx(now, NicId(0), f);
    }
    assert_eq!(b.reassembly_stats().datagrams_completed, 1);
    // Datagram 0 is lost: 1 is delivered once its hold gives up the gap.
    let t = now + Duration::from_millis(30);
    b.handle_timeout(t);
    let got = delivered(&mut b, t);
    assert_eq!(got, [(1, udp_packet(5000, 1, 3000))]);

    // Timeout: 250 ms by default; 10 ms now, for the datagram already held.
    assert_eq!(
        a.handle_tx(t, &udp_packet(5000, 2, 3000)),
        TxVerdict::Queued
    );
    let out = data_out(&mut a, t);
    b.handle_rx(t, NicId(0), &out[0].1);
    assert_eq!(b.reassembly_stats().contexts_live, 1);
    let mut p = Policies::of(b.config()).unwrap();
    p.reassembly.timeout = Duration::from_millis(10);
    replace(&mut b, t, p).unwrap();
    b.handle_timeout(t + Duration::from_millis(9));
    assert_eq!(
        b.reassembly_stats().contexts_live,
        1,
        "before the new deadline"
    );
    b.handle_timeout(t + Duration::from_millis(10));
    assert_eq!(b.reassembly_stats().contexts_live, 0);
    assert_eq!(b.stats().drops.get(DropReason::ReassemblyTimeout), 1);
}

/// `max_datagram_bytes` above the value the engine started with: datagrams refused before
/// (`reassembly_too_large`) are reassembled and delivered after.
#[test]
fn a_larger_datagram_cap_than_at_start_is_taken() {
    let mut big = config(1);
    big.vnic_mtu = 16_000;
    big.reassembly.max_datagram_bytes = 16_000;
    let mut a = Engine::new(big, Instant::ZERO).unwrap();
    let mut b = Engine::new(config(1), Instant::ZERO).unwrap();
    assert_eq!(b.config().reassembly.max_datagram_bytes, 65_535);
    let mut p = Policies::of(b.config()).unwrap();
    p.reassembly.max_datagram_bytes = 9000;
    replace(&mut b, Instant::ZERO, p).unwrap();
    let mut now = Instant::from_millis(1);
    let packet = udp_packet(5000, 0, 12_000);
    assert_eq!(a.handle_tx(now, &packet), TxVerdict::Queued);
    for (nic, f) in data_out(&mut a, now) {
        b.handle_rx(now, nic, &f);
    }
    assert!(b.stats().drops.get(DropReason::ReassemblyTooLarge) > 0);
    assert!(delivered(&mut b, now).is_empty());

    let mut p = Policies::of(b.config()).unwrap();
    p.reassembly.max_datagram_bytes = 16_000;
    replace(&mut b, now, p).unwrap();
    now += Duration::from_millis(1);
    let packet = udp_packet(5000, 1, 12_000);
    assert_eq!(a.handle_tx(now, &packet), TxVerdict::Queued);
    for (nic, f) in data_out(&mut a, now) {
        b.handle_rx(now, nic, &f);
    }
    let t = now + Duration::from_millis(30);
    b.handle_timeout(t);
    assert_eq!(delivered(&mut b, t), [(1, packet)]);
}

/// A shorter `max_hold` releases a datagram held behind a missing one at the next poll, not
/// after the old hold: `b` gives the gap up at 2 ms, `c` (the same, not replaced) still
/// holds.
#[test]
fn a_shorter_hold_releases_what_is_held_at_the_next_poll() {
    let mut a = Engine::new(config(1), Instant::ZERO).unwrap();
    let mut b = Engine::new(config(1), Instant::ZERO).unwrap();
    let mut c = Engine::new(config(1), Instant::ZERO).unwrap();
    let now = Instant::from_millis(1);
    for seq in 0..2 {
        assert_eq!(
            a.handle_tx(now, &udp_packet(5000, seq, 100)),
            TxVerdict::Queued
        );
    }
    let out = data_out(&mut a, now);
    let second = &out.iter().find(|(_, p)| seq_offset(p).0 == 1).unwrap().1;
    b.handle_rx(now, NicId(0), second);
    c.handle_rx(now, NicId(0), second);
    let mut p = Policies::of(b.config()).unwrap();
    p.reorder.max_hold = Duration::from_millis(1);
    replace(&mut b, now, p).unwrap();
    assert_eq!(b.config().reorder.max_hold, Duration::from_millis(1));
    assert!(
        b.poll_timeout()
            .is_some_and(|t| t <= now + Duration::from_millis(1))
    );
    let t = now + Duration::from_millis(2);
    for e in [&mut b, &mut c] {
        e.handle_timeout(t);
    }
    assert_eq!(delivered(&mut b, t), [(1, udp_packet(5000, 1, 100))]);
    assert!(delivered(&mut c, t).is_empty(), "the old hold still holds");
}

/// Every part the engine cannot take is refused naming the field, and nothing changes:
/// not the part refused, nor the default policy and scheduler sent with it.
#[test]
fn refusals_name_the_field_and_change_nothing() {
    let mut cfg = config(1);
    cfg.classes.push(FlowClass::new(
        "c",
        ClassMatch::udp_dst_port(6000),
        ClassPolicy::Pin,
    ));
    cfg.reassembly.max_fragments = 8;
    let mut e = Engine::new(cfg, Instant::ZERO).unwrap();
    let base = Policies::of(e.config()).unwrap();
    let tweak = |f: &dyn Fn(&mut Policies)| {
        let mut p = base.clone();
        p.default_policy = ClassPolicy::Duplicate;
        p.scheduler.min_split_bytes = 4000;
        f(&mut p);
        p
    };
    type Change<'a> = &'a dyn Fn(&mut Policies);
    let cases: [(Change<'_>, &str); 8] = [
        (&|p| p.class_policies.clear(), "class_policies"),
        (
            &|p| p.scheduler.max_split_links = 0,
            "scheduler.max_split_links",
        ),
        (
            &|p| p.scheduler.max_split_links = 33,
            "scheduler.max_split_links",
        ),
        (
            &|p| p.reassembly.max_fragments = 65,
            "reassembly.max_fragments",
        ),
        (
            &|p| p.reassembly.max_contexts = 10,
            "reassembly.max_contexts",
        ),
        (
            &|p| p.reassembly.mem_cap_bytes = 0,
            "reassembly.mem_cap_bytes",
        ),
        (
            &|p| p.reassembly.max_datagram_bytes = 8999,
            "reassembly.max_datagram_bytes",
        ),
        (&|p| p.reorder.capacity = 64, "reorder.capacity"),
    ];
    for (f, field) in cases {
        let Err(err) = replace(&mut e, Instant::ZERO, tweak(f)) else {
            panic!("{field}: taken");
        };
        assert!(
            matches!(err, CommandError::PolicyRefused { field: got, .. } if got == field),
            "{field}: {err:?}"
        );
        assert!(alloc::format!("{err}").starts_with(field), "{err}");
        let c = e.config();
        assert_eq!(c.default_policy, ClassPolicy::Stripe, "{field}");
        assert_eq!(c.scheduler, base.scheduler, "{field}");
        assert_eq!(c.reassembly, base.reassembly, "{field}");
        assert_eq!(c.reorder, base.reorder, "{field}");
        assert_eq!(c.classes[0].policy, ClassPolicy::Pin, "{field}");
    }
    // Up to the reassembler's room (64, although built with 8): taken.
    let p = tweak(&|p| p.reassembly.max_fragments = 64);
    replace(&mut e, Instant::ZERO, p).unwrap();
    assert_eq!(e.config().reassembly.max_fragments, 64);
    assert_eq!(e.config().default_policy, ClassPolicy::Duplicate);
    assert_eq!(e.config().scheduler.min_split_bytes, 4000);
}
