//! Engine benchmarks: the whole sans-IO path per packet, both sides — `handle_tx` (classify,
//! flow hit, schedule, copy into the store) → `poll_transmit` (paced, braid header) →
//! `handle_rx` (parse, reassembly or store, reorder) → `poll_deliver` (copy out) — for
//! 64-byte, 1400-byte and 9000-byte packets (the last split across three 1500-byte NICs and
//! reassembled), plus a duplicated 200-byte flow, and 64/1400-byte packets with
//! authentication (keyed BLAKE3 tag and replay window) to show its cost. Throughput in packets
//! (Elements) and in bytes of the application's packets.
//!
//! The NICs are configured at 400 Gbit/s so pacing never holds a packet back: this measures
//! CPU cost, not link time.
//!
//! `engine_tx_rules`: `handle_tx` alone (plus draining `poll_transmit`, whose cost does not
//! depend on the rules) for a 1400-byte packet of an installed flow, with a TX rule set of
//! 10, 1 000 and 10 000 rules of which the flow's is one (fast path: the flow's cached rule,
//! one version compare), with a metadata-only action and with a NAT rewrite (destination
//! address and port, RFC 1624 checksum updates on the stored copy), against no rules.
//!
//! `cargo bench -p braid-core --bench engine -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Duration;

use braid_core::auth::{AuthConfig, Role};
use braid_core::engine::{Engine, EngineConfig, FlowClass, NicSpec, TxVerdict};
use braid_core::rules::{Action, IpPrefix, PortRange, QosClass, Rule, RuleMatch};
use braid_core::{Instant, NicId};
use criterion::{Criterion, Throughput, criterion_group};

const BATCH: usize = 64;

fn config(auth: Option<Role>) -> EngineConfig {
    let nics = (0..3)
        .map(|i| NicSpec::udp_ipv4(NicId(i), &format!("link{i}"), 400_000_000_000, 1500))
        .collect();
    let mut cfg = EngineConfig::new(nics);
    cfg.classes.push(FlowClass::duplicated_feed(7000));
    cfg.auth = auth.map(|role| AuthConfig::new([9; 32], role));
    cfg
}

fn udp_packet(len: usize, dst_port: u16) -> Vec<u8> {
    let mut p = vec![0u8; len];
    let (src, dst) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    braid_wire::ip::emit_udp_ipv4(&mut p, src, dst, 4000, dst_port, 0).unwrap();
    p
}

struct Pair {
    a: Engine,
    b: Engine,
    now: Instant,
    wire: Vec<u8>,
}

impl Pair {
    fn new(auth: bool) -> Self {
        let role = |r| auth.then_some(r);
        Self {
            a: Engine::new(config(role(Role::A)), Instant::ZERO).unwrap(),
            b: Engine::new(config(role(Role::B)), Instant::ZERO).unwrap(),
            now: Instant::from_millis(1),
            wire: vec![0u8; 70_000],
        }
    }

    /// One batch of `BATCH` packets across; returns how many were delivered.
    fn batch(&mut self, packet: &[u8]) -> usize {
        // 64 jumbo packets take 3.8 µs on the three 400 Gbit/s NICs: 20 µs per batch keeps
        // pacing from ever holding a packet back.
        self.now += Duration::from_micros(20);
        let now = self.now;
        for _ in 0..BATCH {
            let v = self.a.handle_tx(now, packet);
            debug_assert_eq!(v, TxVerdict::Queued);
        }
        while let Some(t) = self.a.poll_transmit(now, &mut self.wire) {
            self.b.handle_rx(now, t.nic, &self.wire[..t.len]);
        }
        while let Some(t) = self.b.poll_transmit(now, &mut self.wire) {
            self.a.handle_rx(now, t.nic, &self.wire[..t.len]);
        }
        let mut n = 0;
        while self.b.poll_deliver(now, &mut self.wire).is_some() {
            n += 1;
        }
        self.a.handle_timeout(now);
        self.b.handle_timeout(now);
        n
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine_tx_rx");
    for (name, len, port, auth) in [
        ("64B_stripe", 64usize, 5000u16, false),
        ("1400B_stripe", 1400, 5000, false),
        ("9000B_split_3nics", 9000, 5000, false),
        ("200B_duplicate_3nics", 200, 7000, false),
        ("64B_stripe_auth", 64, 5000, true),
        ("1400B_stripe_auth", 1400, 5000, true),
    ] {
        let packet = udp_packet(len, port);
        let mut pair = Pair::new(auth);
        // Warm up, and check that everything arrives.
        let mut got = 0;
        for _ in 0..100 {
            got += pair.batch(&packet);
        }
        assert_eq!(
            got,
            100 * BATCH,
            "{name}: every packet delivered; drops a {:?} b {:?}",
            pair.a.stats().drops,
            pair.b.stats().drops
        );
        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_function(format!("{name}/packets"), |b| {
            b.iter(|| black_box(pair.batch(&packet)));
        });
        group.throughput(Throughput::Bytes((BATCH * len) as u64));
        group.bench_function(format!("{name}/bytes"), |b| {
            b.iter(|| black_box(pair.batch(&packet)));
        });
    }
    group.finish();
}

/// `count` TX rules: `count - 1` on other destinations (distinct /24s of 172.16.0.0/12,
/// each its own priority: the set builds in milliseconds, where one priority for all would
/// cost the validator's pairwise conflict check) and the flow's own (UDP to 10.0.0.2:5000):
/// a NAT rewrite, or a metadata-only action (its QoS class, the one it would have anyway).
fn bench_rules(count: u32, nat: bool) -> Vec<Rule> {
    let v4 = |a: Ipv4Addr, len| Some(IpPrefix::new(std::net::IpAddr::V4(a), len).unwrap());
    let mut rules: Vec<Rule> = (1..count)
        .map(|i| {
            let [_, _, a, b] = i.to_be_bytes();
            let m = RuleMatch {
                dst: v4(Ipv4Addr::new(172, 16 + a, b, 0), 24),
                ..RuleMatch::ANY
            };
            Rule::new(
                &format!("r{i}"),
                10 + i,
                m,
                &[Action::SetDscp((i % 64) as u8)],
            )
        })
        .collect();
    if count > 0 {
        let ours = RuleMatch {
            dst: v4(Ipv4Addr::new(10, 0, 0, 2), 32),
            protocol: Some(17),
            dst_ports: Some(PortRange::single(5000)),
            ..RuleMatch::ANY
        };
        let actions: &[Action] = if nat {
            &[
                Action::SetDstAddr(std::net::IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))),
                Action::SetDstPort(8080),
            ]
        } else {
            &[Action::SetPriorityClass(QosClass(1))]
        };
        rules.push(Rule::new("ours", 1, ours, actions));
    }
    rules
}

fn bench_tx_rules(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine_tx_rules");
    group.throughput(Throughput::Elements(BATCH as u64));
    let packet = udp_packet(1400, 5000);
    for (name, count, nat) in [
        ("no_rules", 0u32, false),
        ("10_rules", 10, false),
        ("1000_rules", 1000, false),
        ("10000_rules", 10_000, false),
        ("10_rules_nat", 10, true),
        ("10000_rules_nat", 10_000, true),
    ] {
        let mut cfg = config(None);
        cfg.tx_rules = bench_rules(count, nat);
        let mut a = Engine::new(cfg, Instant::ZERO).unwrap();
        let mut wire = vec![0u8; 70_000];
        let mut now = Instant::from_millis(1);
        let mut batch = |a: &mut Engine, now: &mut Instant| {
            *now += Duration::from_micros(20);
            for _ in 0..BATCH {
                let v = a.handle_tx(*now, &packet);
                debug_assert_eq!(v, TxVerdict::Queued);
            }
            let mut n = 0;
            while a.poll_transmit(*now, &mut wire).is_some() {
                n += 1;
            }
            a.handle_timeout(*now);
            n
        };
        // Warm up (the links have no peer: they go down, and then carry everything as a
        // last resort, the same for every variant), and check nothing is dropped.
        for _ in 0..1000 {
            batch(&mut a, &mut now);
        }
        assert_eq!(a.stats().drops.total(), 0, "{name}: {:?}", a.stats().drops);
        let rewritten = a.rule_stats().tx_rewritten_count;
        assert_eq!(rewritten > 0, nat, "{name}: the NAT rule rewrites");
        group.bench_function(format!("{name}/handle_tx"), |b| {
            b.iter(|| black_box(batch(&mut a, &mut now)));
        });
    }
    group.finish();
}

criterion_group!(benches, bench, bench_tx_rules);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
