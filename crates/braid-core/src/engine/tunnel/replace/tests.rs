//! Tests of the tunnel table replacement's TX counters and drops: a GRE tunnel whose TTL,
//! TOS, DF or checksum changed, or that is removed and added back (a rollback), carries on
//! its sequence numbers and outer IPv4 ids; one whose key changed starts afresh; a removed
//! tunnel's queued fragments count one drop per datagram. (Which tunnels stay, with their
//! queues and receive check, is tested in `engine/policies_tests.rs`.)

use alloc::vec;
use alloc::vec::Vec;

use braid_wire::tunnel::Encap;

use super::super::test_util::{
    self, NOW, gre_encap, gre_fields, next_outer, policies, udp_packet, udp_rule,
};
use crate::engine::{Engine, EngineConfig, TunnelSpec, TxVerdict};
use crate::rules::{Action, Rule, TunnelId};
use crate::{DropReason, Instant, NicId};

/// GRE tunnel `name` from 10.77.0.1 to 10.77.0.2 with `key` and sequence numbers, 576
/// bytes (DF clear: larger outer packets are fragmented).
fn gre(name: &str, key: u32) -> TunnelSpec {
    let mut t = TunnelSpec::new(name, NicId(0), gre_encap(false, Some(key), true));
    t.mtu_bytes = 576;
    t
}

/// With any tunnel, a TX rule: UDP to 6000 → GRE tunnel 0 (a rule, not a flow class, so that
/// the tunnel can be removed).
fn tx_rules(tunnels: &[TunnelSpec]) -> Vec<Rule> {
    if tunnels.is_empty() {
        Vec::new()
    } else {
        vec![udp_rule("to-t0", 6000, Action::GreEncap(TunnelId(0)))]
    }
}

fn config(tunnels: Vec<TunnelSpec>) -> EngineConfig {
    let tx_rules = tx_rules(&tunnels);
    let mut cfg = test_util::config(tunnels);
    cfg.tx_rules = tx_rules;
    cfg
}

/// Replace `e`'s tunnels with `tunnels` (and the rule into tunnel 0 if there is one).
fn replace(e: &mut Engine, tunnels: Vec<TunnelSpec>) {
    let tx_rules = tx_rules(&tunnels);
    let p = policies(e, tunnels, tx_rules);
    test_util::replace(e, p).unwrap();
}

/// Send one small packet into tunnel 0 and return its (GRE sequence number, outer IPv4 id).
fn send_one(e: &mut Engine, seq: u32) -> (Option<u32>, u16) {
    assert_eq!(
        e.handle_tx(NOW, &udp_packet(6000, seq, 100)),
        TxVerdict::Queued
    );
    let (_, outer) = next_outer(e).expect("an outer packet");
    let (_, seq, id, _) = gre_fields(&outer);
    (seq, id)
}

/// A changed GRE tunnel (same name, NIC, endpoints and key; TTL, TOS, DF and checksum
/// changed) carries on its sequence numbers and IPv4 ids: a Linux peer with `iseq` would
/// drop every packet below the sequence number it expects, for good.
#[test]
fn a_gre_tunnel_whose_ttl_tos_df_or_checksum_changed_carries_on_its_counters() {
    let mut e = Engine::new(config(vec![gre("g", 7)]), Instant::ZERO).unwrap();
    let (_, id0) = send_one(&mut e, 0);
    for s in 1..3 {
        assert_eq!(send_one(&mut e, s), (Some(s), id0.wrapping_add(s as u16)));
    }
    // Packet `next` after change `change`: sequence numbers 3, 4, 5, 6.
    for (next, change) in (3..).zip(0..4) {
        let mut t = gre("g", 7);
        let Encap::Gre(g) = &mut t.encap else {
            unreachable!()
        };
        match change {
            0 => g.outer.ttl = 9,
            1 => g.outer.tos = 0x10,
            2 => g.outer.df = true,
            _ => g.checksum = true,
        }
        replace(&mut e, vec![t]);
        assert_eq!(
            send_one(&mut e, next),
            (Some(next), id0.wrapping_add(next as u16)),
            "after change {change}"
        );
    }
    // Another key is another stream for the peer: from 0 again.
    replace(&mut e, vec![gre("g", 8)]);
    assert_eq!(send_one(&mut e, 99).0, Some(0));
}

/// A tunnel that a replacement removed and a later one adds back (a rollback to the
/// previous set is one) carries on where it stopped; so does the one before it, once its
/// own counters were put aside in turn.
#[test]
fn a_removed_tunnel_added_back_carries_on_its_counters() {
    let mut e = Engine::new(config(vec![gre("g", 7)]), Instant::ZERO).unwrap();
    let (_, id0) = send_one(&mut e, 0);
    assert_eq!(send_one(&mut e, 1), (Some(1), id0.wrapping_add(1)));
    // The new set has no tunnel; the rollback (or the next reload) puts it back.
    replace(&mut e, Vec::new());
    assert_eq!(
        e.handle_tx(NOW, &udp_packet(6000, 2, 100)),
        TxVerdict::Queued
    );
    assert_eq!(e.tunnel_tx_queued(), 0, "to the braid peer now");
    replace(&mut e, vec![gre("g", 7)]);
    assert_eq!(send_one(&mut e, 3), (Some(2), id0.wrapping_add(2)));
    // Replaced by another stream of the same name (another key) and back: both carry on.
    replace(&mut e, vec![gre("g", 8)]);
    let (seq, other_id) = send_one(&mut e, 4);
    assert_eq!(seq, Some(0));
    replace(&mut e, vec![gre("g", 7)]);
    assert_eq!(send_one(&mut e, 5), (Some(3), id0.wrapping_add(3)));
    replace(&mut e, vec![gre("g", 8)]);
    assert_eq!(send_one(&mut e, 6), (Some(1), other_id.wrapping_add(1)));
}

/// The fragments of a removed tunnel's queued datagrams are freed and counted once per
/// datagram, as `tunnel_removed`.
#[test]
fn a_removed_tunnels_queued_fragments_count_one_drop_per_datagram() {
    let mut e = Engine::new(config(vec![gre("g", 7)]), Instant::ZERO).unwrap();
    for s in 0..2 {
        // 1400 bytes + 36 of GRE and IPv4 over a 576-byte MTU: 3 fragments.
        assert_eq!(
            e.handle_tx(NOW, &udp_packet(6000, s, 1372)),
            TxVerdict::Queued
        );
    }
    assert_eq!(
        e.handle_tx(NOW, &udp_packet(6000, 2, 100)),
        TxVerdict::Queued
    );
    assert_eq!(e.tunnel_tx_queued(), 7);
    replace(&mut e, Vec::new());
    assert_eq!(e.tunnel_tx_queued(), 0);
    assert_eq!(e.stats().drops.get(DropReason::TunnelRemoved), 3);
    assert_eq!(e.store_used_bytes(), 0);
}
