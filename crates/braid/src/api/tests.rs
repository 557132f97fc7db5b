//! The adapter against real data-path workers (braid-io's `Dataplane`, each with its own
//! engine) on pipe ports: no root, no devices. What the API answers is checked against what
//! the workers' engines hold (their snapshots), and every refused change against the state
//! before it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use braid_control::schema::{AdminState, NicUpdate, PolicyName};
use braid_core::engine::Engine;
use braid_core::rss::{Rss, ToeplitzKey};
use braid_io::dataplane::{Dataplane, DataplaneConfig, NicPort, Steering};
use braid_io::pipe::PipePort;
use braid_io::transport::NicTransport;

use super::*;

const CONFIG: &str = r#"
[vnic]
name = "bapi0"
addresses = ["10.99.0.1/24"]
mtu = 1400
queues = 2

[peer]
role = "a"

[[nics]]
name = "a"
device = "da"
local = "10.77.0.1:7700"
peer = "10.77.0.2:7700"
capacity = "1gbit"

[[nics]]
name = "b"
device = "db"
local = "10.77.1.1:7700"
peer = "10.77.1.2:7700"
capacity = "100mbit"

[[classes]]
name = "feed"
protocol = "udp"
dst_ports = "5000"
policy = "duplicate"
latency_critical = true

[[rules]]
name = "mark"
protocol = "udp"
dst_ports = "6000"
set_dscp = 10
"#;

/// Two workers on pipe ports (the test holds the other ends), each with its engine on the
/// plan of `CONFIG`, running on threads, and the [`Control`] over them.
struct Rig {
    control: Arc<Control>,
    threads: Vec<std::thread::JoinHandle<braid_io::dataplane::Stopped>>,
    _ends: Vec<std::os::unix::net::UnixDatagram>,
    dir: PathBuf,
}

impl Rig {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("braid-api-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test directory");
        let plan = Config::parse(CONFIG).expect("the test config");
        let workers = 2;
        let link_mtu = vec![1500u32; plan.nics.len()];
        let capacity: Vec<u64> = vec![1_000_000_000, 100_000_000];
        let share: Vec<u64> = capacity
            .iter()
            .map(|c| CapacityShares::equal_share(*c, workers))
            .collect();
        let rss = Rss::new(ToeplitzKey::MICROSOFT, 2).expect("rss");
        let mut steering = Steering::build(workers, 2048, None).expect("steering");
        steering.reverse();
        let mut ends = Vec::new();
        let mut dataplanes = Vec::new();
        for k in 0..workers {
            let mut ports = Vec::new();
            for n in &plan.nics {
                let (port, end) = PipePort::pair(1500, 64).expect("pipe");
                ends.push(end);
                ports.push(NicPort {
                    id: n.id,
                    name: n.name.clone(),
                    transport: Box::new(port),
                });
            }
            let (vnic, end) = PipePort::pair(1400, 64).expect("pipe");
            ends.push(end);
            let mut cfg = plan.engine_config(&link_mtu, &share);
            cfg.lane = u8::try_from(k).expect("small");
            let engine = Engine::new(cfg, braid_io::dataplane::now()).expect("engine");
            let dp = Dataplane::new(
                engine,
                ports,
                vec![Box::new(vnic) as Box<dyn NicTransport>],
                rss.clone(),
                DataplaneConfig::default(),
            )
            .expect("dataplane")
            .with_steering(steering.pop().expect("one per worker"))
            .expect("steering");
            dataplanes.push(dp);
        }
        braid_io::dataplane::link_workers(&mut dataplanes);
        let handles: Vec<_> = dataplanes.iter().map(Dataplane::handle).collect();
        let control = Arc::new(Control::new(ControlParts {
            workers: handles,
            plan,
            link_mtu,
            capacity_bps: capacity,
            vnic: VnicInfo {
                rss: rss_info(&rss),
            },
            persist: Some(dir.join("state/policies.toml")),
        }));
        let threads = dataplanes
            .into_iter()
            .map(|dp| std::thread::spawn(move || dp.run().expect("worker")))
            .collect();
        Self {
            control,
            threads,
            _ends: ends,
            dir,
        }
    }

    /// Stop worker `k` (its thread ends; its queue with it).
    fn stop_worker(&mut self, k: usize) {
        self.control.workers[k].stop();
        let t = self.threads.remove(k);
        t.join().expect("worker thread");
    }

    /// Stop every worker and give back their engines, in worker order (to read the
    /// configuration each has in force).
    fn engines(&mut self) -> Vec<Engine> {
        for w in &self.control.workers {
            w.stop();
        }
        self.threads
            .drain(..)
            .map(|t| t.join().expect("worker thread").engine)
            .collect()
    }

    /// Every worker's snapshot, once `done` holds for all of them (at most 3 s).
    fn snapshots_when(&self, done: impl Fn(&Snapshot) -> bool) -> Vec<Snapshot> {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let snaps = self.control.snapshots().expect("published");
            if snaps.iter().all(&done) {
                return snaps;
            }
            assert!(Instant::now() < deadline, "the workers never got there");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn persisted(&self) -> PathBuf {
        self.dir.join("state/policies.toml")
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for w in &self.control.workers {
            w.stop();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn capacity(s: &Snapshot, nic: u8) -> u64 {
    nic_of(s, NicId(nic)).map_or(0, |n| n.engine.capacity_bps)
}

fn tx_rule_names(s: &Snapshot) -> Vec<String> {
    s.rules.tx.names.to_vec()
}

/// `GET /v1/nics` merges the workers: the capacity configured, admin up, the link's state
/// from the engines (no RTT: no peer answers a pipe's probes), transport open. A capacity set through the API reaches every worker as an
/// equal share (and the share rounds start from it); an unknown NIC is 404.
#[test]
fn a_capacity_change_reaches_every_worker_as_an_equal_share() {
    let rig = Rig::new("capacity");
    let nics = rig.control.nics().expect("nics");
    assert_eq!(
        nics.iter()
            .map(|n| (n.name.as_str(), n.capacity_bps))
            .collect::<Vec<_>>(),
        [("a", 1_000_000_000), ("b", 100_000_000)]
    );
    assert!(
        nics.iter().all(|n| n.admin == AdminState::Up
            && n.link != ApiLinkState::Unknown
            && n.transport_open
            && n.transport == Transport::Udp
            && n.srtt_us.is_none()),
        "{nics:?}"
    );
    let set = NicUpdate {
        capacity_bps: Some(2_500_000_000),
        admin: None,
    };
    let nic = rig.control.update_nic("a", &set).expect("applied");
    assert_eq!(nic.capacity_bps, 2_500_000_000);
    rig.snapshots_when(|s| capacity(s, 0) == 1_250_000_000);
    assert_eq!(
        lock(&rig.control.shares).shares(1),
        [1_250_000_000, 50_000_000]
    );
    assert_eq!(
        rig.control.nics().expect("nics")[0].capacity_bps,
        2_500_000_000
    );
    let e = rig.control.update_nic("z", &set).expect_err("unknown");
    assert!(
        matches!(&e, DaemonError::NotFound { what } if what.contains("\"z\"")),
        "{e:?}"
    );
}

/// A worker that does not take its part undoes the change on the workers that took
/// theirs: the capacity in force is the old one everywhere.
#[test]
fn a_nic_change_is_all_or_nothing_across_workers() {
    let mut rig = Rig::new("nic-undo");
    rig.stop_worker(1);
    let set = NicUpdate {
        capacity_bps: Some(400_000_000),
        admin: Some(AdminState::Down),
    };
    let e = rig
        .control
        .update_nic("a", &set)
        .expect_err("worker 1 is gone");
    assert!(matches!(e, DaemonError::Unavailable { .. }), "{e:?}");
    // Worker 0 took 200 Mbit/s, then got its 500 back.
    let deadline = Instant::now() + Duration::from_secs(3);
    let worker0 = || rig.control.workers[0].snapshot().expect("published");
    while capacity(&worker0(), 0) != 500_000_000 {
        assert!(Instant::now() < deadline, "worker 0 kept the new share");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        *lock(&rig.control.settings),
        [
            NicSetting {
                capacity_bps: 1_000_000_000,
                up: true
            },
            NicSetting {
                capacity_bps: 100_000_000,
                up: true
            }
        ]
    );
    assert_eq!(
        lock(&rig.control.shares).shares(0),
        [500_000_000, 50_000_000]
    );
}

/// Taking NICs down: one may go, the last one in use may not (and nothing changes); up
/// again works.
#[test]
fn the_last_nic_in_use_cannot_be_taken_down() {
    let rig = Rig::new("admin");
    let down = NicUpdate {
        capacity_bps: None,
        admin: Some(AdminState::Down),
    };
    assert_eq!(
        rig.control.update_nic("b", &down).expect("b down").admin,
        AdminState::Down
    );
    let e = rig.control.update_nic("a", &down).expect_err("last one");
    assert!(
        matches!(&e, DaemonError::Refused { reason } if reason.contains("last NIC in use")),
        "{e:?}"
    );
    let nics = rig.control.nics().expect("nics");
    assert_eq!(
        nics.iter().map(|n| n.admin).collect::<Vec<_>>(),
        [AdminState::Up, AdminState::Down]
    );
    let up = NicUpdate {
        capacity_bps: None,
        admin: Some(AdminState::Up),
    };
    rig.control.update_nic("b", &up).expect("b up");
    rig.control.update_nic("a", &down).expect("a may go now");
}

fn document_with(extra_rule: &str, qos: &str) -> PolicyDocument {
    let text = format!(
        r#"
[[rules]]
name = "mark"
protocol = "udp"
dst_ports = "6000"
set_dscp = 10
{extra_rule}
{qos}
[reorder]
min_hold_ms = 5
max_hold_ms = 25
"#
    );
    toml::from_str(&text).expect("a document")
}

const QOS: &str = r#"
[qos]
classes = [{ name = "rt", strict = true }, { name = "bulk", weight = 4 }]
"#;

const GOLD_RULE: &str = r#"
[[rules]]
name = "gold"
protocol = "udp"
dst_ports = "7000"
qos = "bulk"
"#;

/// `PUT /v1/policies`: the document reaches every worker's engine (rules and QoS classes
/// together), comes back from `GET`, and is persisted as TOML that reads back to it.
#[test]
fn a_policy_document_reaches_every_worker_and_persists() {
    let rig = Rig::new("policies");
    let before = rig.control.policies().expect("policies");
    assert_eq!(before.rules.len(), 1);
    assert_eq!(before.policy.default, PolicyName::Stripe);
    assert!(
        !rig.persisted().exists(),
        "nothing persisted before a change"
    );
    let doc = document_with(GOLD_RULE, QOS);
    let back = rig.control.replace_policies(doc.clone()).expect("applied");
    assert_eq!(back, doc);
    assert_eq!(rig.control.policies().expect("policies"), doc);
    rig.snapshots_when(|s| tx_rule_names(s) == ["mark", "gold"]);
    assert_eq!(
        persist::read(&rig.persisted()).expect("readable"),
        Some(doc.clone())
    );
    let vnic = &rig.control.vnics().expect("vnics")[0];
    assert_eq!(
        vnic.qos
            .iter()
            .map(|c| (c.name.as_str(), c.strict, c.weight))
            .collect::<Vec<_>>(),
        [("rt", true, None), ("bulk", false, Some(4))]
    );
}

/// Refusals leave everything as it was, on every worker and in the file: a field error
/// names the field as the document does (the tuning sections' too, and a
/// `reassembly.max_fragments` above what the engines have room for says it needs a
/// restart); a worker that does not take the set puts the others back.
#[test]
fn refused_policies_change_nothing() {
    let mut rig = Rig::new("refused");
    let applied = document_with("", QOS);
    rig.control
        .replace_policies(applied.clone())
        .expect("applied");
    let file_before = std::fs::read(rig.persisted()).expect("persisted");
    let invalid = |doc: PolicyDocument| match rig.control.replace_policies(doc) {
        Err(DaemonError::Invalid { field, reason }) => (field, reason),
        other => panic!("not invalid: {other:?}"),
    };
    // A rule naming a QoS class the document does not have.
    let (field, reason) = invalid(document_with(&GOLD_RULE.replace("bulk", "gold"), QOS));
    assert_eq!(field, "rules[1].qos", "{reason}");
    assert!(reason.contains("\"gold\""), "{reason}");
    // A weight out of range.
    let (field, _) = invalid(document_with("", &QOS.replace("weight = 4", "weight = 0")));
    assert_eq!(field, "qos.classes[1].weight");
    // Reorder bounds the wrong way round: invalid before it is a restart's matter.
    let mut doc = applied.clone();
    doc.reorder.min_hold_ms = 50;
    let (field, _) = invalid(doc);
    assert_eq!(field, "reorder.min_hold_ms");
    // The tuning sections: ranges, and what sized the engines' tables at start.
    type Change = fn(&mut PolicyDocument);
    let cases: [(Change, &str, &str); 5] = [
        (
            |d| d.reassembly.max_fragments = 65,
            "reassembly.max_fragments",
            "needs a restart",
        ),
        (
            |d| d.reassembly.max_datagram_bytes = 1399,
            "reassembly.max_datagram_bytes",
            "vnic.mtu (1400)",
        ),
        (
            |d| d.reassembly.timeout_ms = 0,
            "reassembly.timeout_ms",
            "between 1 and 60000",
        ),
        (
            |d| d.fragmentation.max_split_links = 0,
            "fragmentation.max_split_links",
            "never split",
        ),
        (
            |d| d.fragmentation.loss_penalty_ms = 60_001,
            "fragmentation.loss_penalty_ms",
            "between 0 and 60000",
        ),
    ];
    for (change, want, why) in cases {
        let mut doc = applied.clone();
        doc.policy.default = PolicyName::Pin;
        change(&mut doc);
        let (field, reason) = invalid(doc);
        assert_eq!(field, want, "{reason}");
        assert!(reason.contains(why), "{field}: {reason}");
    }
    assert_eq!(rig.control.policies().expect("policies"), applied);
    // Worker 1 gone: worker 0 takes the new set, then is put back.
    rig.stop_worker(1);
    let e = rig
        .control
        .replace_policies(document_with(GOLD_RULE, QOS))
        .expect_err("worker 1 is gone");
    assert!(
        matches!(&e, DaemonError::Refused { reason } if reason.contains("worker 1")),
        "{e:?}"
    );
    let w0 = rig.control.workers[0].snapshot().expect("published");
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut names = tx_rule_names(&w0);
    while names != ["mark"] {
        assert!(Instant::now() < deadline, "worker 0 kept {names:?}");
        std::thread::sleep(Duration::from_millis(20));
        names = tx_rule_names(&rig.control.workers[0].snapshot().expect("published"));
    }
    assert_eq!(rig.control.policies().expect("policies"), applied);
    assert_eq!(
        std::fs::read(rig.persisted()).expect("persisted"),
        file_before,
        "the file is the old one"
    );
    let leftovers: Vec<_> = std::fs::read_dir(rig.dir.join("state"))
        .expect("state dir")
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    assert_eq!(leftovers.len(), 1, "no temporary file: {leftovers:?}");
}

/// Every policy section is applied live, on every worker's engine, with the rest of the
/// document: the default striping policy, the reorder holds, the split cost model and the
/// reassembly caps and timeout are the engines' own configuration afterwards; `GET` and the
/// policies file give the document back.
#[test]
fn the_tuning_sections_reach_every_engine_live() {
    let mut rig = Rig::new("tuning");
    let mut doc = rig.control.policies().expect("policies");
    doc.policy.default = PolicyName::Duplicate;
    doc.reorder.min_hold_ms = 2;
    doc.reorder.max_hold_ms = 7;
    doc.fragmentation.max_split_links = 1;
    doc.fragmentation.min_split_bytes = 3000;
    doc.fragmentation.min_split_gain_us = 9;
    doc.fragmentation.split_within_mtu = true;
    doc.fragmentation.per_packet_overhead_bytes = 70;
    doc.fragmentation.loss_penalty_ms = 20;
    doc.reassembly.mem_cap_bytes = 1 << 20;
    doc.reassembly.timeout_ms = 100;
    doc.reassembly.max_fragments = 32;
    doc.reassembly.max_datagram_bytes = 9000;
    let back = rig.control.replace_policies(doc.clone()).expect("applied");
    assert_eq!(back, doc);
    assert_eq!(rig.control.policies().expect("policies"), doc);
    assert_eq!(
        persist::read(&rig.persisted()).expect("readable"),
        Some(doc.clone())
    );
    // Back up to the room the engines have (64): taken.
    doc.reassembly.max_fragments = 64;
    rig.control.replace_policies(doc.clone()).expect("applied");
    let ms = Duration::from_millis;
    for (k, e) in rig.engines().iter().enumerate() {
        let c = e.config();
        assert_eq!(c.default_policy, ClassPolicy::Duplicate, "worker {k}");
        assert_eq!((c.reorder.min_hold, c.reorder.max_hold), (ms(2), ms(7)));
        let s = &c.scheduler;
        assert_eq!(
            (
                s.max_split_links,
                s.min_split_bytes,
                s.min_split_gain,
                s.split_within_mtu,
                s.per_packet_overhead_bytes,
                s.loss_penalty
            ),
            (1, 3000, Duration::from_micros(9), true, 70, ms(20)),
            "worker {k}"
        );
        let r = &c.reassembly;
        assert_eq!(
            (
                r.mem_cap_bytes,
                r.timeout,
                r.max_fragments,
                r.max_datagram_bytes
            ),
            (1 << 20, ms(100), 64, 9000),
            "worker {k}"
        );
    }
}

/// The rates come from two consecutive samples; counters from the latest snapshots; every
/// drop reason is listed, zeros included.
#[test]
fn stats_rates_come_from_consecutive_samples() {
    let rig = Rig::new("stats");
    let stats = rig.control.stats().expect("stats");
    assert_eq!(stats.interval_ms, 0, "no rates before two samples");
    assert!(stats.nics.iter().all(|n| n.tx_bps == 0));
    assert_eq!(
        stats.drops.len(),
        braid_core::DropReason::ALL.len(),
        "every reason"
    );
    *lock(&rig.control.samples) = (
        Some(Sample {
            at_ns: 1_000_000_000,
            nics: vec![[1_000, 10, 0, 0], [0, 0, 0, 0]],
            latency: Latency::default(),
        }),
        Some(Sample {
            at_ns: 1_500_000_000,
            nics: vec![[126_000, 110, 50_000, 40], [0, 0, 0, 0]],
            latency: Latency::default(),
        }),
    );
    let stats = rig.control.stats().expect("stats");
    assert_eq!(stats.interval_ms, 500);
    let a = &stats.nics[0];
    assert_eq!(
        (a.name.as_str(), a.tx_bps, a.tx_pps, a.rx_bps, a.rx_pps),
        ("a", 2_000_000, 200, 800_000, 80)
    );
    rig.control.sample();
    let (_, last) = lock(&rig.control.samples).clone();
    assert!(last.is_some_and(|s| s.at_ns > 1_500_000_000 && s.nics.len() == 2));
}

/// `GET /v1/stats` merges the workers: the held datagrams summed; percentiles of the sum of
/// their latency histograms over the interval between the two samples (not since start);
/// the busiest flows of every worker ranked together, with global ids; and `/metrics`'s
/// histograms are the cumulative sums. The workers' engine stats are replaced by two
/// engines' of the test's own, driven with time passed in, so every value is exact.
#[test]
fn stats_merge_the_workers_latency_holds_and_busiest_flows() {
    use braid_core::engine::{EngineConfig, NicSpec, TxVerdict};

    let rig = Rig::new("merge");
    let mut snaps = rig.snapshots_when(|_| true);
    // Busiest flows: engine 0 sends 10 packets of 500 bytes to port 5000, engine 1 20 to
    // port 6000 and 5 to port 7000, in the second before their first scan at 1.5 s.
    let spec = |id: u8, name: &str| NicSpec::udp_ipv4(NicId(id), name, 1_000_000_000, 1500);
    let start = braid_core::Instant::from_millis(500);
    let scan = braid_core::Instant::from_millis(1500);
    let mut engines: Vec<Engine> = (0..2)
        .map(|_| {
            Engine::new(
                EngineConfig::new(vec![spec(0, "a"), spec(1, "b")]),
                braid_core::Instant::ZERO,
            )
            .expect("engine")
        })
        .collect();
    for (k, port, n) in [(0, 5000, 10), (1, 6000, 20), (1, 7000, 5)] {
        let mut p = vec![0u8; 500];
        braid_wire::ip::emit_udp_ipv4(
            &mut p,
            std::net::Ipv4Addr::new(10, 99, 0, 1),
            std::net::Ipv4Addr::new(10, 99, 0, 2),
            40_000,
            port,
            0,
        )
        .expect("a packet");
        for _ in 0..n {
            assert_eq!(engines[k].handle_tx(start, &p), TxVerdict::Queued);
        }
    }
    for (k, e) in engines.iter_mut().enumerate() {
        e.handle_timeout(scan);
        snaps[k].engine = e.stats().clone();
        assert_eq!(snaps[k].engine.top_flows.scanned_at, Some(scan));
    }
    let id_of = |k: usize, rank: usize| {
        let r = snaps[k].engine.top_flows.as_slice()[rank];
        FlowRef {
            worker: k,
            direction: r.direction,
            id: r.id,
        }
        .global()
    };
    let want_top = vec![
        FlowRate {
            id: id_of(1, 0),
            direction: FlowDirection::Tx,
            rate_bps: 80_000,
        },
        FlowRate {
            id: id_of(0, 0),
            direction: FlowDirection::Tx,
            rate_bps: 40_000,
        },
        FlowRate {
            id: id_of(1, 1),
            direction: FlowDirection::Tx,
            rate_bps: 20_000,
        },
    ];
    // Held now: 3 datagrams (1200 bytes) on worker 0, 4 (600 bytes) on worker 1.
    for (k, n, bytes) in [(0, 3, 1200), (1, 4, 600)] {
        snaps[k].engine.rx_reorder_held_count = n;
        snaps[k].engine.rx_reorder_held_bytes = bytes;
    }
    // Latency: before the first sample, RTTs of 100 µs (×10, worker 0) and 300 µs (×5,
    // worker 1) on NIC a; between the samples 200 µs (×90, worker 0) and 1 ms (×10,
    // worker 1) on NIC a, delay variation 50 µs (×4, worker 1) on NIC b, holds of 5 ms
    // (worker 0) and 7 ms (worker 1).
    let record = |snaps: &mut [Snapshot], k: usize, what: &str, ns: u64, n: usize| {
        let l = &mut snaps[k].engine.latency;
        let h = match what {
            "rtt a" => &mut l.nics[0].rtt,
            "dv b" => &mut l.nics[1].delay_variation,
            _ => &mut l.reorder_hold,
        };
        for _ in 0..n {
            h.record(ns);
        }
    };
    record(&mut snaps, 0, "rtt a", 100_000, 10);
    record(&mut snaps, 1, "rtt a", 300_000, 5);
    let before = Latency::of(&snaps, &rig.control.nics);
    record(&mut snaps, 0, "rtt a", 200_000, 90);
    record(&mut snaps, 1, "rtt a", 1_000_000, 10);
    record(&mut snaps, 1, "dv b", 50_000, 4);
    record(&mut snaps, 0, "hold", 5_000_000, 1);
    record(&mut snaps, 1, "hold", 7_000_000, 1);
    let after = Latency::of(&snaps, &rig.control.nics);
    let sample = |at_ns, latency| Sample {
        at_ns,
        nics: vec![[0; 4]; 2],
        latency,
    };
    let stats = rig.control.stats_of(
        &snaps,
        (
            Some(sample(1_000_000_000, before)),
            Some(sample(2_000_000_000, after)),
        ),
    );
    assert_eq!(stats.interval_ms, 1000);
    assert_eq!(stats.top_flows, want_top);
    assert_eq!(
        (stats.reorder.held_now, stats.reorder.held_bytes),
        (7, 1800)
    );
    let p = |samples, p50_us, p90_us, p99_us, max_us| LatencyPercentiles {
        samples,
        p50_us,
        p90_us,
        p99_us,
        p999_us: max_us,
        max_us,
    };
    // The interval's 100 RTTs: 90 at 200 µs (reported as its bucket's midpoint, 204.8 µs)
    // and 10 at 1 ms (the largest ever recorded: exact). The 15 earlier ones are not in it.
    let (a, b) = (&stats.nics[0], &stats.nics[1]);
    assert_eq!(a.rtt_percentiles, Some(p(100, 204, 204, 1000, 1000)));
    assert_eq!(
        b.rtt_percentiles, None,
        "no RTT sample on b in the interval"
    );
    assert_eq!(b.delay_variation_percentiles, Some(p(4, 50, 50, 50, 50)));
    assert_eq!(a.delay_variation_percentiles, None);
    assert_eq!(
        stats.reorder.hold_percentiles,
        Some(p(2, 5000, 7000, 7000, 7000))
    );
    // Before two samples: no interval, no percentiles.
    let first = rig
        .control
        .stats_of(&snaps, (None, Some(sample(1, Latency::default()))));
    assert_eq!(first.nics[0].rtt_percentiles, None);
    assert_eq!(first.reorder.hold_percentiles, None);
    // `/metrics`: the cumulative sums, in seconds, on the exported edges.
    let rtt_a = prometheus_histogram(&Latency::of(&snaps, &rig.control.nics).nics[0].0);
    assert_eq!(rtt_a.count, 115);
    assert!(
        (rtt_a.sum_seconds - 0.0305).abs() < 1e-12,
        "{}",
        rtt_a.sum_seconds
    );
    let at = |le: f64| rtt_a.buckets.iter().find(|b| b.0 == le).map(|b| b.1);
    assert_eq!(at(1.024e-6), Some(0));
    assert_eq!(at(131_072e-9), Some(10), "100 µs");
    assert_eq!(at(393_216e-9), Some(105), "200 and 300 µs");
    assert_eq!(at(1_048_576e-9), Some(115), "1 ms");
}

/// `GET /v1/vnics`: the queues (one per worker), RSS as 80 hex digits and the table, the
/// default QoS classes by name.
#[test]
fn the_vnic_shows_queues_rss_and_qos() {
    let rig = Rig::new("vnic");
    let v = rig.control.vnics().expect("vnics");
    assert_eq!(v.len(), 1);
    let v = &v[0];
    assert_eq!(
        (v.name.as_str(), v.mtu, v.kind),
        ("bapi0", 1400, VnicKind::Tun)
    );
    assert_eq!(v.addresses, ["10.99.0.1/24"]);
    assert_eq!(v.queues.iter().map(|q| q.queue).collect::<Vec<_>>(), [0, 1]);
    let rss = v.rss.as_ref().expect("two queues");
    assert_eq!(rss.key.len(), 80);
    assert!(
        rss.key.starts_with("6d5a56da"),
        "the Microsoft key: {}",
        rss.key
    );
    assert!(rss.indirection.contains(&1));
    assert_eq!(
        v.qos.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["latency-critical", "default"]
    );
}

/// Every policy section, every field set, as TOML.
const ALL_POLICY_SECTIONS: &str = r#"
[[rules]]
name = "all"
priority = 7
direction = "rx"
protocol = "udp"
src = "10.0.0.0/8"
dst = "10.1.0.0/16"
src_ports = "1-2"
dst_ports = "3"
dscp = 4
vlan = 5
vni = 6
set_dscp = 8
set_ecn = 1
set_ttl = 9
set_src = "10.0.0.1"
set_dst = "10.0.0.2"
set_src_port = 10
set_dst_port = 11
qos = "q"
policy = "pin"
nics = ["a"]
tunnel = "t"
push_vlan = 12
vlan_pcp = 3
pop_vlan = true
drop = true
when = { loss_above_percent = 2.0, below_percent = 1.0, rtt_above_ms = 3.0, below_ms = 1.5, degraded_links = 1, down_links = 1, links = ["a"], hold_ms = 5 }

[qos]
quantum_bytes = 3000
classes = [
  { name = "s", strict = true, guard_rate = "1mbit", guard_burst_bytes = 3000, queue_packets = 5, queue_bytes = 6000, drop_red = true, meter = { type = "trtcm", cir = "1mbit", cbs_bytes = 2000, pir = "2mbit", pbs_bytes = 3000, color_aware = true } },
  { name = "w", weight = 2, meter = { type = "srtcm", cir = "1mbit", cbs_bytes = 2000, ebs_bytes = 1 } },
]

[[tunnels]]
name = "t"
kind = "vxlan"
nic = "a"
local = "10.77.0.1"
remote = "10.77.0.2"
vni = 1
port = 4790
src_ports = "5000-6000"
udp_checksum = true
inner_src_mac = "02:00:00:00:00:01"
inner_dst_mac = "02:00:00:00:00:02"
key = 3
seq = true
checksum = true
ttl = 9
tos = 4
df = true

[policy]
default = "duplicate"

[reorder]
min_hold_ms = 1
max_hold_ms = 2

[fragmentation]
min_split_bytes = 3000
min_split_gain_us = 9
max_split_links = 2
split_within_mtu = true
per_packet_overhead_bytes = 70
loss_penalty_ms = 20

[reassembly]
mem_cap_bytes = 1048576
timeout_ms = 100
max_fragments = 16
max_datagram_bytes = 9000
"#;

/// One schema: a config file's policy sections parse into exactly the document the API
/// returns for them (`GET /v1/policies` is `document_of` the plan in force), the same
/// document the API takes as JSON; and the daemon's own config reads back as the API's
/// document of its sections (the rig's `GET`).
#[test]
fn a_config_files_policy_sections_are_the_apis_document() {
    let base = CONFIG
        .split("[[rules]]")
        .next()
        .expect("the sections before");
    let text = format!("{base}{ALL_POLICY_SECTIONS}");
    let file: Config = toml::from_str(&text).expect("a config file");
    let from_file = document_of(&file);
    let alone: PolicyDocument = toml::from_str(ALL_POLICY_SECTIONS).expect("a document");
    assert_eq!(from_file, alone);
    let json = serde_json::to_string(&from_file).expect("json");
    let from_json: PolicyDocument = serde_json::from_str(&json).expect("the API's body");
    assert_eq!(from_json, from_file);
    // Nothing left at its default: every field came from the text.
    assert_eq!(from_file.rules[0].set_ttl, Some(9));
    assert_eq!(from_file.reassembly.max_fragments, 16);
    assert_eq!(from_file.fragmentation.per_packet_overhead_bytes, 70);
    assert!(from_file.tunnels[0].df == Some(true));
    // And back: the document's sections in a config are the same sections.
    let file = with_document(&Config::parse(CONFIG).expect("config").file, &from_file);
    assert_eq!(document_of(&file), from_file);

    let rig = Rig::new("one-schema");
    let rules = format!(
        "[[rules]]{}",
        CONFIG.split("[[rules]]").nth(1).expect("rules")
    );
    let own: PolicyDocument = toml::from_str(&rules).expect("the config's rules");
    assert_eq!(rig.control.policies().expect("GET"), own);
}

/// Config errors become `Invalid` with the field as a path of the document.
#[test]
fn config_errors_name_the_documents_field() {
    let cases = [
        (
            "rules[2] (\"feed\").qos: no QoS class is named \"gold\"",
            "rules[2].qos",
            "no QoS class is named \"gold\"",
        ),
        (
            "qos.classes[1].weight: must be 1..=65536",
            "qos.classes[1].weight",
            "must be 1..=65536",
        ),
        (
            "rules[0] (\"a: b\").set_dscp: too big",
            "rules[0].set_dscp",
            "too big",
        ),
        (
            "nics[0].capacity: \"x\" is not a rate",
            "nics[0].capacity",
            "\"x\" is not a rate",
        ),
        (
            "rules[0] (\"a\") and rules[1] (\"b\"): same priority",
            "rules[0]",
            "rules[0] (\"a\") and rules[1] (\"b\"): same priority",
        ),
        (
            "something else entirely",
            "policies",
            "something else entirely",
        ),
    ];
    for (text, field, reason) in cases {
        let e = invalid(&anyhow::anyhow!("{text}"));
        assert_eq!(
            e,
            DaemonError::Invalid {
                field: field.into(),
                reason: reason.into()
            },
            "{text}"
        );
    }
}

/// At start, a policies file replaces the config's policy sections, every one of them
/// (`[reorder]`, `[reassembly]` too); a corrupt or invalid file is an error that names the
/// file (and the field).
#[test]
fn a_policies_file_replaces_the_configs_policies_at_start() {
    let dir = std::env::temp_dir().join(format!("braid-api-start-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("policies.toml");
    let plan = || Config::parse(CONFIG).expect("config");
    let same = with_persisted(plan(), &path).expect("no file");
    assert_eq!(same.file.rules.len(), 1);
    let mut doc = document_with(GOLD_RULE, QOS);
    doc.reorder.max_hold_ms = 99;
    doc.policy.default = PolicyName::Pin;
    doc.reassembly.timeout_ms = 77;
    persist::Pending::write(&path, &persist::to_toml(&doc).expect("toml"))
        .expect("write")
        .commit()
        .expect("commit");
    let started = with_persisted(plan(), &path).expect("valid file");
    assert_eq!(
        started
            .file
            .rules
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["mark", "gold"]
    );
    assert_eq!(started.qos_names, ["rt", "bulk"]);
    assert_eq!(
        started.file.reorder.max_hold_ms, 99,
        "the policies file's reorder"
    );
    assert_eq!(started.file.policy.default, PolicyName::Pin);
    assert_eq!(document_of(&started.file), doc, "every section the file's");
    let cfg = started.engine_config(&[1500, 1500], &[1_000_000_000, 100_000_000]);
    assert_eq!(cfg.reassembly.timeout, Duration::from_millis(77));
    assert_eq!(cfg.default_policy, ClassPolicy::Pin);
    // Invalid against the config: the error names the file and the field.
    let bad = document_with(&GOLD_RULE.replace("bulk", "gold"), QOS);
    std::fs::write(&path, persist::to_toml(&bad).expect("toml")).expect("write");
    let e = format!("{:#}", with_persisted(plan(), &path).expect_err("invalid"));
    assert!(
        e.contains(&path.display().to_string()) && e.contains("rules[1]"),
        "{e}"
    );
    std::fs::write(&path, "[[rules]]\nname = 1\n").expect("write");
    let e = format!("{:#}", with_persisted(plan(), &path).expect_err("corrupt"));
    assert!(e.contains(&path.display().to_string()), "{e}");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// `[api]`: defaults (this host, port 7780, files in the state directory), and errors that
/// name the field; SIGHUP refuses a change of `[api]` (a restart applies it).
#[test]
fn the_api_section_has_defaults_and_errors_name_the_field() {
    let with = |api: &str| format!("{CONFIG}\n[api]\n{api}\n");
    let plan = Config::parse(&with("token_file = \"/etc/braid/api.token\"")).expect("minimal");
    let api = plan.file.api.as_ref().expect("present");
    assert_eq!(api.listen, "127.0.0.1:7780");
    assert_eq!(api.audit_log(), Path::new("/var/lib/braid/audit.jsonl"));
    assert_eq!(
        api.policies_file(),
        Path::new("/var/lib/braid/policies.toml")
    );
    let cfg = control_config(api).expect("control config");
    assert_eq!(cfg.listen, "127.0.0.1:7780".parse().expect("addr"));
    assert_eq!(cfg.rate_limit(), braid_control::auth::RateLimit::default());
    assert!(Config::parse(CONFIG).expect("no api").file.api.is_none());
    for (body, needle) in [
        ("token_file = \"/t\"\nlisten = \"localhost\"", "api.listen"),
        ("token_file = \"\"", "api.token_file"),
        (
            "token_file = \"/t\"\nauth_failure_burst = 0",
            "api.auth_failure_burst",
        ),
        (
            "token_file = \"/t\"\npolicies_file = \"/var/lib/braid/\"",
            "api.policies_file",
        ),
        ("listen = \"127.0.0.1:1\"", "token_file"),
        ("token_file = \"/t\"\nport = 1", "unknown field `port`"),
    ] {
        let e = format!("{:#}", Config::parse(&with(body)).expect_err(body));
        assert!(e.contains(needle), "{body}: {e}");
    }
}

/// One HTTP/1.1 request to `addr`; the status and body.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

/// The control thread serves braid-control's router over the workers (here on 127.0.0.1,
/// port 0): health without a token, the NICs with it, 401 without it, a PATCH audited; it
/// stops when asked. A token file other users can read stops the start, naming the field.
#[test]
fn the_control_thread_serves_the_api_and_stops() {
    use std::os::unix::fs::PermissionsExt;
    let rig = Rig::new("serve");
    let token_file = rig.dir.join("api.token");
    let token = braid_control::auth::generate_token_file(&token_file).expect("token");
    let text = std::fs::read_to_string(&token_file).expect("token file");
    let token_text = text.lines().next().expect("a line").to_owned();
    assert!(token.verify(&token_text));
    let section = ApiSection {
        listen: "127.0.0.1:0".into(),
        token_file: token_file.clone(),
        audit_log: None,
        policies_file: None,
        state_dir: rig.dir.join("state"),
        auth_failure_burst: 10,
        auth_failure_refill_ms: 6000,
    };
    let server = serve(&section, Arc::clone(&rig.control)).expect("serves");
    let addr = server.listen;
    assert_eq!(http(addr, "GET", "/healthz", None, "").0, 200);
    assert_eq!(http(addr, "GET", "/v1/nics", None, "").0, 401);
    let (status, body) = http(addr, "GET", "/v1/nics", Some(&token_text), "");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"name\":\"a\""), "{body}");
    let (status, body) = http(
        addr,
        "PATCH",
        "/v1/nics/b",
        Some(&token_text),
        r#"{"capacity_bps": 300000000}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"capacity_bps\":300000000"), "{body}");
    let (status, body) = http(addr, "GET", "/metrics", Some(&token_text), "");
    assert_eq!(status, 200);
    assert!(
        body.contains("braid_nic_capacity_bits_per_second{nic=\"b\"} 300000000"),
        "{body}"
    );
    server.stop();
    assert!(TcpStream::connect(addr).is_err(), "no longer listening");
    let audit = std::fs::read_to_string(rig.dir.join("state/audit.jsonl")).expect("audit log");
    assert!(
        audit.contains("\"method\":\"PATCH\"") && audit.contains("\"outcome\":\"applied\""),
        "{audit}"
    );
    // A token file others may read: refused at start, naming the field.
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let e = format!(
        "{:#}",
        serve(&section, Arc::clone(&rig.control)).expect_err("0644")
    );
    assert!(e.starts_with("api.token_file"), "{e}");
}

/// An IPv4/UDP packet from 10.99.0.1:`sport` to 10.99.0.2:`dport` with 32 bytes of payload
/// (header checksum filled in; UDP checksum 0, which IPv4 allows).
fn udp_packet(sport: u16, dport: u16) -> Vec<u8> {
    let payload = [0x5au8; 32];
    let total = 20 + 8 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&u16::try_from(total).expect("small").to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 99, 0, 1]);
    p[16..20].copy_from_slice(&[10, 99, 0, 2]);
    let sum: u32 = p[..20]
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    p[10..12].copy_from_slice(&(!u16::try_from(sum).expect("folded")).to_be_bytes());
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[24..26].copy_from_slice(
        &u16::try_from(8 + payload.len())
            .expect("small")
            .to_be_bytes(),
    );
    p[28..].copy_from_slice(&payload);
    p
}

/// The flow table across workers: a flow read from each worker's vNIC queue shows up with
/// its key, class, QoS class and policy; ids say the worker (pages go worker by worker,
/// with a cursor); one flow by id; filters by class; moves refused for what does not exist.
#[test]
fn the_flow_table_spans_the_workers() {
    let rig = Rig::new("flows");
    // The application's end of each worker's vNIC queue (after its two NICs' ends).
    rig._ends[2]
        .send(&udp_packet(40_000, 5000))
        .expect("to worker 0");
    rig._ends[5]
        .send(&udp_packet(40_001, 6000))
        .expect("to worker 1");
    let deadline = Instant::now() + Duration::from_secs(3);
    let all = loop {
        let page = rig.control.flows(&FlowQuery::default()).expect("flows");
        if page.flows.len() == 2 {
            break page;
        }
        assert!(Instant::now() < deadline, "flows: {page:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(all.next_cursor, None);
    let (f0, f1) = (&all.flows[0], &all.flows[1]);
    // The busiest flows: each worker's rate scan ranks both (one packet each) in the first
    // pass that finds their rate mark at least 100 ms old, within about 2 s of the start.
    let deadline = Instant::now() + Duration::from_secs(4);
    let top = loop {
        let top = rig.control.stats().expect("stats").top_flows;
        if [f0.id, f1.id]
            .iter()
            .all(|id| top.iter().any(|t| t.id == *id && t.rate_bps > 0))
        {
            break top;
        }
        assert!(Instant::now() < deadline, "top flows: {top:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(top.iter().all(|t| t.direction == FlowDirection::Tx));
    assert!(top.windows(2).all(|w| w[0].rate_bps >= w[1].rate_bps));
    assert_eq!(FlowRef::of(f0.id).worker, 0);
    assert_eq!(FlowRef::of(f1.id).worker, 1);
    assert_eq!(
        (f0.direction, f0.protocol, f0.src.as_str(), f0.dst.as_str()),
        (FlowDirection::Tx, 17, "10.99.0.1", "10.99.0.2")
    );
    assert_eq!((f0.src_port, f0.dst_port), (40_000, 5000));
    assert_eq!(f0.class.as_deref(), Some("feed"));
    assert_eq!(f0.qos_class.as_deref(), Some("latency-critical"));
    assert_eq!(f0.policy, PolicyName::Duplicate);
    assert_eq!((f1.dst_port, f1.class.as_deref()), (6000, None));
    assert_eq!(f1.policy, PolicyName::Stripe, "the default policy");
    assert_eq!(f0.packets, Some(1));
    // Pages of one: worker 0's flow, then worker 1's after the cursor.
    let mut q = FlowQuery {
        limit: 1,
        ..FlowQuery::default()
    };
    // Rates and idle times move on: flows are compared by id.
    let ids = |p: &FlowPage| p.flows.iter().map(|f| f.id).collect::<Vec<_>>();
    let p1 = rig.control.flows(&q).expect("page 1");
    assert_eq!(ids(&p1), [f0.id]);
    let cursor = p1.next_cursor.expect("more");
    q = FlowQuery::parse(Some(&format!("limit=1&cursor={cursor}"))).expect("query");
    let p2 = rig.control.flows(&q).expect("page 2");
    assert_eq!((ids(&p2), p2.next_cursor), (vec![f1.id], None));
    // Filters.
    let q = FlowQuery::parse(Some("class=feed")).expect("query");
    assert_eq!(ids(&rig.control.flows(&q).expect("feed")), [f0.id]);
    let q = FlowQuery::parse(Some("class=nope")).expect("query");
    assert!(rig.control.flows(&q).expect("none").flows.is_empty());
    let q = FlowQuery::parse(Some("port=6000&direction=tx")).expect("query");
    assert_eq!(ids(&rig.control.flows(&q).expect("6000")), [f1.id]);
    // One flow; unknown ones; moves of what does not exist.
    let one = rig.control.flow(f1.id).expect("flow");
    assert_eq!((one.id, one.dst_port, &one.nics), (f1.id, 6000, &f1.nics));
    for id in [f1.id + 7, 5 << 33, f0.id | 1 << 32] {
        let e = rig.control.flow(id).expect_err("no such flow");
        assert!(matches!(e, DaemonError::NotFound { .. }), "{id}: {e:?}");
    }
    let to = |nic: &str| FlowMove {
        nic: nic.into(),
        pin: true,
    };
    let e = rig.control.move_flow(f0.id, &to("zz")).expect_err("no NIC");
    assert!(
        matches!(&e, DaemonError::Invalid { field, .. } if field == "nic"),
        "{e:?}"
    );
    let e = rig
        .control
        .move_flow(f0.id + 99, &to("a"))
        .expect_err("no flow");
    assert!(matches!(e, DaemonError::NotFound { .. }), "{e:?}");
    let e = rig
        .control
        .move_flow(f0.id | 1 << 32, &to("a"))
        .expect_err("no RX flow");
    assert!(matches!(e, DaemonError::NotFound { .. }), "{e:?}");
}
