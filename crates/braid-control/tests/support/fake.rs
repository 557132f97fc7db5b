//! A fake daemon for the API's tests and the example server (`examples/fake_daemon.rs`): two
//! NICs, one vNIC, a small flow table and a policy document, held in memory, with the rules
//! the real daemon applies where the API's behaviour depends on them (unknown names, the
//! last NIC in use, admission, field-named validation, a refusal that changes nothing).
//!
//! It is a test double, not braid: its checks are a small subset of the daemon's
//! (`crates/braid/src/config.rs`), enough to drive every status code the API can return.

#![allow(dead_code, unreachable_pub)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use braid_control::metrics::{Histogram, LatencyHistograms};
use braid_control::schema::{
    AdminState, Flow, FlowDirection, FlowMove, FlowPage, FlowRate, LatencyPercentiles, LinkState,
    Nic, NicStats, NicUpdate, PolicyDocument, PolicyName, QosClassStatus, RssInfo, Stats,
    Transport, Vnic, VnicKind, VnicQueue,
};
use braid_control::{Daemon, DaemonError, FlowQuery};

/// What the next call does instead of its work (tests of 5xx).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Answer with this error.
    Error(DaemonError),
    /// Panic.
    Panic,
}

/// The fake daemon's state.
#[derive(Debug)]
pub struct FakeDaemon {
    pub nics: Mutex<Vec<Nic>>,
    pub flows: Mutex<Vec<Flow>>,
    pub policies: Mutex<PolicyDocument>,
    /// Policy replacements applied.
    pub applied: Mutex<u32>,
    /// Every call fails this way while set.
    pub failure: Mutex<Option<Failure>>,
    /// Set by `stats`.
    pub stats_called: AtomicBool,
}

fn nic(id: u8, name: &str, device: &str, capacity_bps: u64) -> Nic {
    Nic {
        id,
        name: name.to_owned(),
        device: device.to_owned(),
        transport: Transport::Udp,
        capacity_bps,
        capacity_auto: false,
        admin: AdminState::Up,
        link: LinkState::Up,
        transport_open: true,
        srtt_us: Some(180 + u64::from(id) * 40),
        loss_ratio: Some(0.0),
        tx_packets: 1000 * (u64::from(id) + 1),
        tx_bytes: 1_400_000 * (u64::from(id) + 1),
        rx_packets: 900,
        rx_bytes: 1_200_000,
        flows: 0,
    }
}

/// Flow `i` of the fake table: TX flows have even ids, RX odd; UDP to ports 5000+, every
/// fifth TCP to 443; on NIC a or b alternately.
fn flow(i: u64) -> Flow {
    let tcp = i.is_multiple_of(5);
    Flow {
        id: i,
        direction: if i.is_multiple_of(2) {
            FlowDirection::Tx
        } else {
            FlowDirection::Rx
        },
        protocol: if tcp { 6 } else { 17 },
        src: "10.99.0.1".to_owned(),
        dst: format!("10.99.1.{}", i % 250 + 1),
        src_port: u16::try_from(40_000 + i % 20_000).unwrap_or(40_000),
        dst_port: if tcp {
            443
        } else {
            u16::try_from(5000 + i % 100).unwrap_or(5000)
        },
        dscp: None,
        class: Some(if tcp { "web" } else { "feed" }.to_owned()),
        qos_class: Some(if tcp { "default" } else { "latency-critical" }.to_owned()),
        policy: if tcp {
            PolicyName::Stripe
        } else {
            PolicyName::Duplicate
        },
        nics: vec![if i.is_multiple_of(3) { "b" } else { "a" }.to_owned()],
        pinned: false,
        rate_bps: 1000 * i,
        packets: Some(10 * i),
        bytes: Some(14_000 * i),
        idle_ms: i % 1000,
    }
}

impl FakeDaemon {
    /// Two NICs (`a` on veth-a, `b` on veth-b), `flows` flows, empty policies.
    #[must_use]
    pub fn new(flows: u64) -> Self {
        Self {
            nics: Mutex::new(vec![
                nic(0, "a", "veth-a", 1_000_000_000),
                nic(1, "b", "veth-b", 100_000_000),
            ]),
            flows: Mutex::new((1..=flows).map(flow).collect()),
            policies: Mutex::new(PolicyDocument::default()),
            applied: Mutex::new(0),
            failure: Mutex::new(None),
            stats_called: AtomicBool::new(false),
        }
    }

    /// Make every call fail (`Some`) or work again (`None`).
    pub fn fail(&self, failure: Option<Failure>) {
        *self.failure.lock().expect("lock") = failure;
    }

    fn check(&self) -> Result<(), DaemonError> {
        let failure = self.failure.lock().expect("lock").clone();
        match failure {
            None => Ok(()),
            Some(Failure::Error(e)) => Err(e),
            Some(Failure::Panic) => panic!("the fake daemon was told to panic"),
        }
    }

    /// The subset of the daemon's checks the tests need; errors name the field.
    fn validate(&self, doc: &PolicyDocument) -> Result<(), DaemonError> {
        let invalid = |field: String, reason: &str| {
            Err(DaemonError::Invalid {
                field,
                reason: reason.to_owned(),
            })
        };
        let r = &doc.reorder;
        if r.max_hold_ms == 0 || r.max_hold_ms > 10_000 {
            return invalid(
                "reorder.max_hold_ms".into(),
                &format!("{} must be between 1 and 10000", r.max_hold_ms),
            );
        }
        if r.min_hold_ms > r.max_hold_ms {
            return invalid(
                "reorder.min_hold_ms".into(),
                &format!(
                    "{} is above reorder.max_hold_ms ({})",
                    r.min_hold_ms, r.max_hold_ms
                ),
            );
        }
        // The daemon's ranges for the tuning sections (crates/braid/src/config.rs).
        let f = &doc.fragmentation;
        if f.max_split_links == 0 || f.max_split_links > 32 {
            return invalid(
                "fragmentation.max_split_links".into(),
                &format!("{} must be between 1 and 32", f.max_split_links),
            );
        }
        let a = &doc.reassembly;
        if a.timeout_ms == 0 || a.timeout_ms > 60_000 {
            return invalid(
                "reassembly.timeout_ms".into(),
                &format!("{} must be between 1 and 60000", a.timeout_ms),
            );
        }
        if a.mem_cap_bytes == 0 {
            return invalid("reassembly.mem_cap_bytes".into(), "0 must be at least 1");
        }
        let qos_names: Vec<String> = match &doc.qos {
            Some(q) => q.classes.iter().map(|c| c.name.clone()).collect(),
            None => vec!["latency-critical".into(), "default".into()],
        };
        let nics = self.nics.lock().expect("lock");
        for (i, t) in doc.tunnels.iter().enumerate() {
            if !nics.iter().any(|n| n.name == t.nic) {
                return invalid(
                    format!("tunnels[{i}].nic"),
                    &format!("no NIC is named {:?}", t.nic),
                );
            }
        }
        for (i, rule) in doc.rules.iter().enumerate() {
            if rule.name.is_empty() || doc.rules[..i].iter().any(|o| o.name == rule.name) {
                return invalid(format!("rules[{i}].name"), "empty or used twice");
            }
            if let Some(q) = &rule.qos
                && !qos_names.contains(q)
            {
                return invalid(
                    format!("rules[{i}].qos"),
                    &format!("no QoS class is named {q:?} (there are {qos_names:?})"),
                );
            }
        }
        Ok(())
    }
}

/// The fake's latency samples, (µs, how many): probe RTTs, delay variation, reorder holds.
/// Its percentiles (`stats`) and histograms (`latency_histograms`) are both of these.
const RTT_US: &[(u64, u64)] = &[(170, 50), (210, 40), (260, 9), (320, 1)];
const DELAY_VARIATION_US: &[(u64, u64)] = &[(5, 60), (20, 30), (80, 9), (400, 1)];
const HOLD_US: &[(u64, u64)] = &[(300, 8), (1200, 3), (4200, 1)];

/// Nearest-rank percentiles of `samples` (µs, how many), sorted by value.
fn percentiles(samples: &[(u64, u64)]) -> LatencyPercentiles {
    let n: u64 = samples.iter().map(|s| s.1).sum();
    let at = |per_mille: u64| {
        let rank = (n * per_mille).div_ceil(1000).max(1);
        let mut seen = 0;
        samples
            .iter()
            .find(|(_, c)| {
                seen += c;
                seen >= rank
            })
            .map_or(0, |s| s.0)
    };
    LatencyPercentiles {
        samples: n,
        p50_us: at(500),
        p90_us: at(900),
        p99_us: at(990),
        p999_us: at(999),
        max_us: at(1000),
    }
}

/// A cumulative histogram of `samples` (µs, how many) on the daemon's `le` edges: ×1 and
/// ×1.5 of each power of two from 1.024 µs to 12.9 s.
#[allow(clippy::cast_precision_loss)]
fn histogram(samples: &[(u64, u64)]) -> Histogram {
    Histogram {
        count: samples.iter().map(|s| s.1).sum(),
        sum_seconds: samples.iter().map(|(us, n)| (us * n) as f64 / 1e6).sum(),
        buckets: (0..24)
            .flat_map(|k| [1024u64 << k, 1536u64 << k])
            .map(|le_ns| {
                let below: u64 = samples
                    .iter()
                    .filter(|(us, _)| us * 1000 <= le_ns)
                    .map(|s| s.1)
                    .sum();
                (le_ns as f64 / 1e9, below)
            })
            .collect(),
    }
}

impl Daemon for FakeDaemon {
    fn nics(&self) -> Result<Vec<Nic>, DaemonError> {
        self.check()?;
        let flows = self.flows.lock().expect("lock");
        let mut nics = self.nics.lock().expect("lock").clone();
        for n in &mut nics {
            n.flows = flows.iter().filter(|f| f.nics.contains(&n.name)).count() as u64;
        }
        Ok(nics)
    }

    fn update_nic(&self, name: &str, update: &NicUpdate) -> Result<Nic, DaemonError> {
        self.check()?;
        let mut nics = self.nics.lock().expect("lock");
        let others_up = nics
            .iter()
            .filter(|n| n.name != name && n.admin == AdminState::Up)
            .count();
        let n = nics
            .iter_mut()
            .find(|n| n.name == name)
            .ok_or_else(|| DaemonError::NotFound {
                what: format!("no NIC is named {name:?}"),
            })?;
        if update.admin == Some(AdminState::Down) && others_up == 0 {
            return Err(DaemonError::Refused {
                reason: format!("{name} is the last NIC in use; its flows have nowhere to go"),
            });
        }
        if let Some(c) = update.capacity_bps {
            n.capacity_bps = c;
            n.capacity_auto = false;
        }
        if let Some(a) = update.admin {
            n.admin = a;
        }
        drop(nics);
        if update.admin == Some(AdminState::Down) {
            // Drain: the NIC's flows go to the NICs still up.
            let up: Vec<String> = self
                .nics
                .lock()
                .expect("lock")
                .iter()
                .filter(|n| n.admin == AdminState::Up)
                .map(|n| n.name.clone())
                .collect();
            for f in self.flows.lock().expect("lock").iter_mut() {
                if f.nics.iter().any(|x| x == name) {
                    f.nics.clone_from(&up);
                }
            }
        }
        self.nics()?
            .into_iter()
            .find(|n| n.name == name)
            .ok_or_else(|| DaemonError::Internal {
                detail: format!("NIC {name} vanished"),
            })
    }

    fn vnics(&self) -> Result<Vec<Vnic>, DaemonError> {
        self.check()?;
        Ok(vec![Vnic {
            name: "braid0".into(),
            kind: VnicKind::Tun,
            mtu: 1500,
            addresses: vec!["10.99.0.1/24".into()],
            queues: (0..2)
                .map(|q| VnicQueue {
                    queue: q,
                    rx_packets: 500,
                    rx_bytes: 700_000,
                    tx_packets: 450,
                    tx_bytes: 600_000,
                    drops: 0,
                })
                .collect(),
            rss: Some(RssInfo {
                key: "6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa".into(),
                indirection: (0..128).map(|i| i % 2).collect(),
            }),
            qos: vec![
                QosClassStatus {
                    id: 0,
                    name: "latency-critical".into(),
                    strict: true,
                    weight: None,
                    queue_packets: 8192,
                    queue_bytes: 4 << 20,
                    green: 0,
                    yellow: 0,
                    red: 0,
                    dropped_red: 0,
                },
                QosClassStatus {
                    id: 1,
                    name: "default".into(),
                    strict: false,
                    weight: Some(1),
                    queue_packets: 8192,
                    queue_bytes: 4 << 20,
                    green: 0,
                    yellow: 0,
                    red: 0,
                    dropped_red: 0,
                },
            ],
        }])
    }

    fn stats(&self) -> Result<Stats, DaemonError> {
        self.check()?;
        self.stats_called.store(true, Ordering::Relaxed);
        let nics = self.nics.lock().expect("lock").clone();
        let flows = self.flows.lock().expect("lock");
        let mut top: Vec<FlowRate> = flows
            .iter()
            .map(|f| FlowRate {
                id: f.id,
                direction: f.direction,
                rate_bps: f.rate_bps,
            })
            .collect();
        top.sort_by_key(|f| std::cmp::Reverse(f.rate_bps));
        top.truncate(20);
        let mut s = Stats {
            interval_ms: 1000,
            tx_packets: nics.iter().map(|n| n.tx_packets).sum(),
            tx_bytes: nics.iter().map(|n| n.tx_bytes).sum(),
            rx_delivered_packets: 1800,
            rx_delivered_bytes: 2_400_000,
            nics: nics
                .iter()
                .map(|n| NicStats {
                    name: n.name.clone(),
                    tx_bps: 8_000_000,
                    rx_bps: 7_000_000,
                    tx_pps: 700,
                    rx_pps: 650,
                    srtt_us: n.srtt_us,
                    owd_us: n.srtt_us.map(|r| r / 2),
                    loss_ratio: n.loss_ratio,
                    rtt_percentiles: Some(percentiles(RTT_US)),
                    delay_variation_percentiles: Some(percentiles(DELAY_VARIATION_US)),
                })
                .collect(),
            top_flows: top,
            ..Stats::default()
        };
        s.flows.tx = flows
            .iter()
            .filter(|f| f.direction == FlowDirection::Tx)
            .count() as u64;
        s.flows.rx = flows.len() as u64 - s.flows.tx;
        s.reorder.reordered = 12;
        s.reorder.max_hold_us = 4200;
        s.reorder.held_now = 3;
        s.reorder.held_bytes = 4200;
        s.reorder.hold_percentiles = Some(percentiles(HOLD_US));
        for (reason, n) in [
            ("reassembly_timeout", 2),
            ("auth_failed", 0),
            ("queue_full", 5),
        ] {
            s.drops.insert(reason.to_owned(), n);
        }
        Ok(s)
    }

    fn latency_histograms(&self) -> Result<LatencyHistograms, DaemonError> {
        self.check()?;
        let nics = self.nics.lock().expect("lock");
        let per_nic = |samples| {
            nics.iter()
                .map(|n| (n.name.clone(), histogram(samples)))
                .collect()
        };
        Ok(LatencyHistograms {
            nic_rtt: per_nic(RTT_US),
            nic_delay_variation: per_nic(DELAY_VARIATION_US),
            reorder_hold: Some(histogram(HOLD_US)),
        })
    }

    fn flows(&self, query: &FlowQuery) -> Result<FlowPage, DaemonError> {
        self.check()?;
        Ok(query.page(self.flows.lock().expect("lock").iter().cloned()))
    }

    fn flow(&self, id: u64) -> Result<Flow, DaemonError> {
        self.check()?;
        self.flows
            .lock()
            .expect("lock")
            .iter()
            .find(|f| f.id == id)
            .cloned()
            .ok_or_else(|| DaemonError::NotFound {
                what: format!("no flow has id {id}"),
            })
    }

    fn move_flow(&self, id: u64, request: &FlowMove) -> Result<Flow, DaemonError> {
        self.check()?;
        let nic = self
            .nics
            .lock()
            .expect("lock")
            .iter()
            .find(|n| n.name == request.nic)
            .cloned()
            .ok_or_else(|| DaemonError::Invalid {
                field: "nic".into(),
                reason: format!("no NIC is named {:?}", request.nic),
            })?;
        let mut flows = self.flows.lock().expect("lock");
        // Admission: the flow's rate must fit in what the NIC has left.
        let load: u64 = flows
            .iter()
            .filter(|g| g.id != id && g.nics.contains(&nic.name))
            .map(|g| g.rate_bps)
            .sum();
        let f = flows
            .iter_mut()
            .find(|f| f.id == id)
            .ok_or_else(|| DaemonError::NotFound {
                what: format!("no flow has id {id}"),
            })?;
        if f.direction == FlowDirection::Rx {
            return Err(DaemonError::Refused {
                reason: format!("flow {id} is an RX flow; only TX flows are placed on NICs"),
            });
        }
        if nic.admin == AdminState::Down {
            return Err(DaemonError::Refused {
                reason: format!("NIC {} is administratively down", nic.name),
            });
        }
        if f.rate_bps + load > nic.capacity_bps {
            return Err(DaemonError::Refused {
                reason: format!(
                    "NIC {} has no room for flow {id} ({} bit/s; {} of its {} bit/s are taken)",
                    nic.name, f.rate_bps, load, nic.capacity_bps
                ),
            });
        }
        f.nics = vec![nic.name.clone()];
        f.pinned = request.pin;
        f.policy = PolicyName::Pin;
        Ok(f.clone())
    }

    fn policies(&self) -> Result<PolicyDocument, DaemonError> {
        self.check()?;
        Ok(self.policies.lock().expect("lock").clone())
    }

    fn replace_policies(&self, document: PolicyDocument) -> Result<PolicyDocument, DaemonError> {
        self.check()?;
        self.validate(&document)?;
        if let Some(t) = document.tunnels.iter().find(|t| t.name == "unopenable") {
            return Err(DaemonError::Refused {
                reason: format!(
                    "tunnel {:?}: cannot open its port on {} (address not available)",
                    t.name, t.local
                ),
            });
        }
        *self.policies.lock().expect("lock") = document.clone();
        *self.applied.lock().expect("lock") += 1;
        Ok(document)
    }
}
