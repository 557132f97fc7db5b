//! `/metrics`: the daemon's counters in the Prometheus text format (0.0.4), or OpenMetrics
//! 1.0 when the scraper asks for it (`Accept: application/openmetrics-text`).
//!
//! What this file owns: the metric names, types, labels and help texts, encoded at scrape time
//! from one snapshot ([`crate::schema::Stats`], the NIC list and the latency histograms,
//! [`LatencyHistograms`]) plus the API's own counters. What it does not own: the numbers
//! (the daemon's snapshot).
//!
//! # Why prometheus-client, with a collector
//!
//! The data path keeps plain per-worker counters that the daemon sums into a snapshot; a
//! second set of registered metric objects to keep in step would be state with nothing to
//! gain. prometheus-client's `Collector` encodes constant metrics straight from the snapshot
//! at each scrape, and the crate does what hand-rendered text gets wrong: label-value
//! escaping, `_total` suffixes, the exact text of both formats, and the `# EOF` of
//! OpenMetrics. A registry per scrape costs a few allocations, once per scrape.
//!
//! # Names
//!
//! Units are in the names, in base units: `_bytes`, `_seconds`, `_bits_per_second`,
//! `_ratio`. Counters end in `_total`. Per-NIC series have a `nic` label (the NIC's name),
//! drops a `reason` label (braid-core's `DropReason` labels), link states are a state set
//! (`braid_nic_link_state{state="up"} 1`, the other states 0).
//!
//! # Latency: histograms
//!
//! Probe RTT (`braid_nic_rtt_seconds`), one-way delay variation
//! (`braid_nic_delay_variation_seconds`) and reorder hold (`braid_reorder_hold_seconds`) are
//! Prometheus histograms: `_bucket{le=...}` cumulative counts since the daemon started, `_sum`
//! and `_count`, so a query takes any quantile over any window,
//! `histogram_quantile(0.99, sum by (nic, le) (rate(braid_nic_rtt_seconds_bucket[1m])))`.
//! The `le` edges are two per power of two (×1 and ×1.5, 1.024 µs to 12.9 s) of braid-core's
//! histogram, exact edges of its buckets; `histogram_quantile` interpolates between them.
//! No quantile gauges: the API's percentiles over its own last interval are in
//! `GET /v1/stats`, and a gauge with a `quantile` label is a summary's (promtool's lint).

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::schema::{AdminState, LinkState, Nic, Stats};

/// `Content-Type` of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// `Content-Type` of OpenMetrics text.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The API's own counters, since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApiCounters {
    /// Requests refused for a missing or wrong token.
    pub auth_failures: u64,
    /// Requests refused by the rate limit.
    pub rate_limited: u64,
    /// Audit lines that could not be written.
    pub audit_errors: u64,
}

/// A cumulative histogram as `/metrics` shows it, in seconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Samples (the `+Inf` bucket).
    pub count: u64,
    /// Their sum, seconds.
    pub sum_seconds: f64,
    /// `(le, samples ≤ le)`: upper bounds in seconds, increasing, with cumulative counts
    /// (each at most `count`), without `+Inf`.
    pub buckets: Vec<(f64, u64)>,
}

/// The latency histograms `/metrics` shows, cumulative since the daemon started (summed over
/// its workers). [`crate::Daemon::latency_histograms`] gives them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LatencyHistograms {
    /// Per NIC (its name), probe round-trip times.
    pub nic_rtt: Vec<(String, Histogram)>,
    /// Per NIC (its name), delay variation: how much each received packet's one-way delay
    /// differs from the previous one's.
    pub nic_delay_variation: Vec<(String, Histogram)>,
    /// How long datagrams released from a reorder buffer after waiting waited (`None`: not
    /// kept).
    pub reorder_hold: Option<Histogram>,
}

/// Everything one scrape shows.
#[derive(Debug)]
struct Scrape {
    stats: Stats,
    nics: Vec<Nic>,
    latency: LatencyHistograms,
    api: ApiCounters,
}

/// Render one scrape; `openmetrics` picks the format. Returns the body and its content type.
#[must_use]
pub fn render(
    stats: Stats,
    nics: Vec<Nic>,
    latency: LatencyHistograms,
    api: ApiCounters,
    openmetrics: bool,
) -> (String, &'static str) {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape {
        stats,
        nics,
        latency,
        api,
    }));
    let mut out = String::new();
    // Writing to a String cannot fail, and the collector's own encoding only fails if the
    // writer does.
    let written = if openmetrics {
        prometheus_client::encoding::text::encode(&mut out, &registry)
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
    };
    debug_assert!(
        written.is_ok(),
        "invariant: encoding into a String cannot fail"
    );
    (
        out,
        if openmetrics {
            OPENMETRICS_TEXT
        } else {
            PROMETHEUS_TEXT
        },
    )
}

/// Does an `Accept` header ask for OpenMetrics?
#[must_use]
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

fn counter(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> fmt::Result {
    let c = ConstCounter::new(v);
    let m = e.encode_descriptor(name, help, None, c.metric_type())?;
    c.encode(m)
}

fn gauge<N: prometheus_client::encoding::EncodeGaugeValue>(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: N,
) -> fmt::Result {
    let g = ConstGauge::new(v);
    let m = e.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

fn counters<L: EncodeLabelSet>(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    items: &[(L, u64)],
) -> fmt::Result {
    if items.is_empty() {
        return Ok(());
    }
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in items {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauges<L: EncodeLabelSet, N: prometheus_client::encoding::EncodeGaugeValue + Copy>(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    items: &[(L, N)],
) -> fmt::Result {
    if items.is_empty() {
        return Ok(());
    }
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in items {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

/// One histogram family: a series per label set. prometheus-client takes the count of each
/// bucket and sums them itself; the last is `+Inf`.
fn histograms<L: EncodeLabelSet>(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    items: &[(L, &Histogram)],
) -> fmt::Result {
    if items.is_empty() {
        return Ok(());
    }
    let mut m = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in items {
        let mut below = 0u64;
        let mut buckets: Vec<(f64, u64)> = h
            .buckets
            .iter()
            .map(|&(le, cumulative)| {
                let cumulative = cumulative.clamp(below, h.count);
                let n = cumulative - below;
                below = cumulative;
                (le, n)
            })
            .collect();
        buckets.push((f64::INFINITY, h.count - below));
        m.encode_family(labels)?.encode_histogram::<NoLabelSet>(
            h.sum_seconds,
            h.count,
            &buckets,
            None,
        )?;
    }
    Ok(())
}

/// The label set of a series without labels.
const NO_LABELS: [(&str, &str); 0] = [];

/// Per-NIC histograms as `nic`-labelled series.
fn per_nic(v: &[(String, Histogram)]) -> Vec<([(&'static str, &str); 1], &Histogram)> {
    v.iter()
        .map(|(nic, h)| ([("nic", nic.as_str())], h))
        .collect()
}

/// µs → seconds.
#[allow(clippy::cast_precision_loss)]
fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> fmt::Result {
        let s = &self.stats;
        let e = &mut e;
        counter(
            e,
            "braid_tx_packets",
            "Packets taken from the vNIC and queued.",
            s.tx_packets,
        )?;
        counter(
            e,
            "braid_tx_bytes",
            "Bytes taken from the vNIC and queued.",
            s.tx_bytes,
        )?;
        counter(
            e,
            "braid_rx_delivered_packets",
            "Packets delivered to the vNIC, whole and in order.",
            s.rx_delivered_packets,
        )?;
        counter(
            e,
            "braid_rx_delivered_bytes",
            "Bytes delivered to the vNIC.",
            s.rx_delivered_bytes,
        )?;
        let drops: Vec<_> = s
            .drops
            .iter()
            .map(|(reason, n)| ([("reason", reason.as_str())], *n))
            .collect();
        counters(e, "braid_drops", "Packets dropped, by reason.", &drops)?;
        gauges(
            e,
            "braid_flows",
            "Flows in the engine's tables.",
            &[
                ([("direction", "tx")], s.flows.tx),
                ([("direction", "rx")], s.flows.rx),
            ],
        )?;

        let r = &s.reorder;
        gauge(
            e,
            "braid_reorder_held",
            "Datagrams waiting in reorder buffers.",
            r.held_now,
        )?;
        gauge(
            e,
            "braid_reorder_held_bytes",
            "Bytes of the datagrams waiting in reorder buffers.",
            r.held_bytes,
        )?;
        counter(
            e,
            "braid_reorder_released",
            "Datagrams released after waiting in a reorder buffer.",
            r.reordered,
        )?;
        counter(e, "braid_reorder_gaps", "Gap events given up on.", r.gaps)?;
        counter(
            e,
            "braid_reorder_gap_seqs",
            "Sequence numbers given up as gaps.",
            r.gap_seqs,
        )?;
        gauge(
            e,
            "braid_reorder_max_hold_seconds",
            "Longest reorder hold seen.",
            secs(r.max_hold_us),
        )?;
        let hold: Vec<_> = self
            .latency
            .reorder_hold
            .iter()
            .map(|h| (NO_LABELS, h))
            .collect();
        histograms(
            e,
            "braid_reorder_hold_seconds",
            "How long datagrams released from a reorder buffer after waiting waited.",
            &hold,
        )?;
        let ra = &s.reassembly;
        counter(
            e,
            "braid_reassembly_completed",
            "Datagrams reassembled.",
            ra.completed,
        )?;
        counter(
            e,
            "braid_reassembly_dropped",
            "Datagrams given up in reassembly.",
            ra.dropped,
        )?;
        gauge(
            e,
            "braid_reassembly_held_bytes",
            "Bytes held in reassembly.",
            ra.held_bytes,
        )?;

        // Per NIC, from the NIC list (counters, state) and the stats (rates, delay).
        let per = |f: &dyn Fn(&Nic) -> u64| -> Vec<([(&str, &str); 1], u64)> {
            self.nics
                .iter()
                .map(|n| ([("nic", n.name.as_str())], f(n)))
                .collect()
        };
        counters(
            e,
            "braid_nic_tx_packets",
            "Braid packets sent on the NIC.",
            &per(&|n| n.tx_packets),
        )?;
        counters(
            e,
            "braid_nic_tx_bytes",
            "Braid bytes sent on the NIC.",
            &per(&|n| n.tx_bytes),
        )?;
        counters(
            e,
            "braid_nic_rx_packets",
            "Braid packets received on the NIC.",
            &per(&|n| n.rx_packets),
        )?;
        counters(
            e,
            "braid_nic_rx_bytes",
            "Braid bytes received on the NIC.",
            &per(&|n| n.rx_bytes),
        )?;
        gauges(
            e,
            "braid_nic_capacity_bits_per_second",
            "Capacity in force (configured, or estimated for auto).",
            &per(&|n| n.capacity_bps),
        )?;
        gauges(
            e,
            "braid_nic_flows",
            "Flows the flow controller has on the NIC.",
            &per(&|n| n.flows),
        )?;
        gauges(
            e,
            "braid_nic_admin_up",
            "1 while the NIC is administratively up.",
            &per(&|n| u64::from(n.admin == AdminState::Up)),
        )?;
        gauges(
            e,
            "braid_nic_transport_open",
            "1 while the NIC's transport is open (its device exists).",
            &per(&|n| u64::from(n.transport_open)),
        )?;
        let states: Vec<_> = self
            .nics
            .iter()
            .flat_map(|n| {
                [
                    (LinkState::Up, "up"),
                    (LinkState::Degraded, "degraded"),
                    (LinkState::Down, "down"),
                    (LinkState::Unknown, "unknown"),
                ]
                .map(|(st, label)| {
                    (
                        [("nic", n.name.as_str()), ("state", label)],
                        u64::from(n.link == st),
                    )
                })
            })
            .collect();
        gauges(
            e,
            "braid_nic_link_state",
            "The link's measured state (a state set).",
            &states,
        )?;

        let rate = |f: &dyn Fn(&crate::schema::NicStats) -> u64| -> Vec<([(&str, &str); 1], u64)> {
            s.nics
                .iter()
                .map(|n| ([("nic", n.name.as_str())], f(n)))
                .collect()
        };
        gauges(
            e,
            "braid_nic_tx_rate_bits_per_second",
            "Send rate.",
            &rate(&|n| n.tx_bps),
        )?;
        gauges(
            e,
            "braid_nic_rx_rate_bits_per_second",
            "Receive rate.",
            &rate(&|n| n.rx_bps),
        )?;
        gauges(
            e,
            "braid_nic_tx_rate_packets_per_second",
            "Send rate.",
            &rate(&|n| n.tx_pps),
        )?;
        gauges(
            e,
            "braid_nic_rx_rate_packets_per_second",
            "Receive rate.",
            &rate(&|n| n.rx_pps),
        )?;
        let measured =
            |f: &dyn Fn(&crate::schema::NicStats) -> Option<f64>| -> Vec<([(&str, &str); 1], f64)> {
                s.nics
                    .iter()
                    .filter_map(|n| f(n).map(|v| ([("nic", n.name.as_str())], v)))
                    .collect()
            };
        gauges(
            e,
            "braid_nic_srtt_seconds",
            "Smoothed probe round-trip time.",
            &measured(&|n| n.srtt_us.map(secs)),
        )?;
        gauges(
            e,
            "braid_nic_owd_seconds",
            "Probe one-way delay.",
            &measured(&|n| n.owd_us.map(secs)),
        )?;
        gauges(
            e,
            "braid_nic_loss_ratio",
            "Probe loss, 0 to 1.",
            &measured(&|n| n.loss_ratio),
        )?;
        histograms(
            e,
            "braid_nic_rtt_seconds",
            "Probe round-trip time.",
            &per_nic(&self.latency.nic_rtt),
        )?;
        histograms(
            e,
            "braid_nic_delay_variation_seconds",
            "How much the one-way delay of each packet received on the NIC differs from the \
             previous one's (inter-packet delay variation, RFC 5481), arrival taken at the \
             worker's read turn: includes the daemon's batching, not the path's alone.",
            &per_nic(&self.latency.nic_delay_variation),
        )?;

        let a = &self.api;
        counter(
            e,
            "braid_api_auth_failures",
            "API requests refused for a missing or wrong token.",
            a.auth_failures,
        )?;
        counter(
            e,
            "braid_api_rate_limited",
            "API requests refused by the failed-authentication rate limit.",
            a.rate_limited,
        )?;
        counter(
            e,
            "braid_api_audit_errors",
            "Audit log lines that could not be written.",
            a.audit_errors,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::schema::{LatencyPercentiles, NicStats, Transport};

    fn nic(name: &str, link: LinkState) -> Nic {
        Nic {
            id: 0,
            name: name.into(),
            device: "veth0".into(),
            transport: Transport::Udp,
            capacity_bps: 1_000_000_000,
            capacity_auto: false,
            admin: AdminState::Up,
            link,
            transport_open: true,
            srtt_us: Some(1500),
            loss_ratio: Some(0.25),
            tx_packets: 7,
            tx_bytes: 700,
            rx_packets: 3,
            rx_bytes: 300,
            flows: 2,
        }
    }

    fn stats() -> Stats {
        let mut s = Stats {
            tx_packets: 11,
            ..Stats::default()
        };
        s.drops.insert("reassembly_timeout".into(), 4);
        s.drops.insert("auth_failed".into(), 0);
        s.nics.push(NicStats {
            name: "a\"b".into(),
            tx_bps: 8000,
            srtt_us: Some(250),
            loss_ratio: Some(0.25),
            rtt_percentiles: Some(LatencyPercentiles {
                samples: 10,
                p50_us: 100,
                p90_us: 200,
                p99_us: 300,
                p999_us: 400,
                max_us: 500,
            }),
            ..NicStats::default()
        });
        s
    }

    /// RTT on NIC `a"b`: 3 samples (1 ms, 1.2 ms, 20 s); hold: 1 sample of 50 µs.
    fn latency() -> LatencyHistograms {
        let edges = [0.001, 0.0015, 0.002];
        LatencyHistograms {
            nic_rtt: vec![(
                "a\"b".into(),
                Histogram {
                    count: 3,
                    sum_seconds: 20.0022,
                    buckets: edges
                        .iter()
                        .map(|&le| (le, if le < 0.0015 { 1 } else { 2 }))
                        .collect(),
                },
            )],
            nic_delay_variation: vec![],
            reorder_hold: Some(Histogram {
                count: 1,
                sum_seconds: 0.00005,
                buckets: vec![(0.000_048, 0), (0.000_064, 1)],
            }),
        }
    }

    /// A histogram family of a text exposition, parsed: per label set (without `le`), the
    /// `(le, cumulative count)` of its `_bucket` lines in order, its `_sum` and `_count`.
    type Parsed = BTreeMap<String, (Vec<(f64, u64)>, Option<f64>, Option<u64>)>;

    /// Parse the samples of histogram `name` in `text` and check the exposition rules: a
    /// `# TYPE name histogram` line; `le` strictly increasing, counts not decreasing, the
    /// last `le` `+Inf` and equal to `_count`; a `_sum`.
    fn parse_histogram(text: &str, name: &str) -> Parsed {
        assert!(
            text.lines()
                .any(|l| l == format!("# TYPE {name} histogram")),
            "no TYPE line for {name}"
        );
        let mut out = Parsed::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').expect("name value");
            let (metric, labels) = series.split_once('{').unwrap_or((series, "}"));
            let Some(suffix) = metric.strip_prefix(name) else {
                continue;
            };
            let mut le = None;
            let mut others = Vec::new();
            for pair in labels
                .trim_end_matches('}')
                .split(',')
                .filter(|p| !p.is_empty())
            {
                let (k, v) = pair.split_once('=').expect("label=value");
                let v = v.trim_matches('"');
                if k == "le" {
                    le = Some(if v == "+Inf" {
                        f64::INFINITY
                    } else {
                        v.parse::<f64>().expect("le is a number")
                    });
                } else {
                    others.push(format!("{k}={v}"));
                }
            }
            let entry = out.entry(others.join(",")).or_default();
            match suffix {
                "_bucket" => entry.0.push((
                    le.expect("a bucket has le"),
                    value.parse().expect("a count"),
                )),
                "_sum" => entry.1 = Some(value.parse().expect("a number")),
                "_count" => entry.2 = Some(value.parse().expect("a count")),
                other => panic!("unexpected sample {name}{other}"),
            }
        }
        for (labels, (buckets, sum, count)) in &out {
            let count = count.expect("a _count");
            assert!(sum.is_some(), "{name}{{{labels}}} has no _sum");
            assert!(
                buckets
                    .windows(2)
                    .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
            );
            assert_eq!(buckets.last(), Some(&(f64::INFINITY, count)));
        }
        out
    }

    #[test]
    fn latency_histograms_are_prometheus_histograms() {
        for openmetrics in [false, true] {
            let (text, _) = render(
                stats(),
                vec![],
                latency(),
                ApiCounters::default(),
                openmetrics,
            );
            let rtt = parse_histogram(&text, "braid_nic_rtt_seconds");
            let (buckets, sum, count) = &rtt["nic=a\\\"b"];
            assert_eq!(
                buckets,
                &[(0.001, 1), (0.0015, 2), (0.002, 2), (f64::INFINITY, 3)]
            );
            assert_eq!((*sum, *count), (Some(20.0022), Some(3)));
            let hold = parse_histogram(&text, "braid_reorder_hold_seconds");
            assert_eq!(
                hold[""].0,
                [(0.000_048, 0), (0.000_064, 1), (f64::INFINITY, 1)]
            );
            assert!(
                !text.contains("braid_nic_delay_variation_seconds"),
                "no family without series"
            );
        }
        // Prometheus' own spelling of `le` in the text format (Go's %g).
        let (text, _) = render(stats(), vec![], latency(), ApiCounters::default(), false);
        assert!(
            text.lines()
                .any(|l| l == "braid_reorder_hold_seconds_bucket{le=\"4.8e-05\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn prometheus_text() {
        let (text, ct) = render(
            stats(),
            vec![nic("a", LinkState::Degraded)],
            LatencyHistograms::default(),
            ApiCounters {
                auth_failures: 3,
                ..ApiCounters::default()
            },
            false,
        );
        assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
        for line in [
            "# TYPE braid_tx_packets_total counter",
            "braid_tx_packets_total 11",
            "braid_drops_total{reason=\"reassembly_timeout\"} 4",
            "braid_drops_total{reason=\"auth_failed\"} 0",
            "braid_nic_tx_bytes_total{nic=\"a\"} 700",
            "braid_nic_link_state{nic=\"a\",state=\"degraded\"} 1",
            "braid_nic_link_state{nic=\"a\",state=\"up\"} 0",
            "braid_nic_loss_ratio{nic=\"a\\\"b\"} 0.25",
            // Label values are escaped.
            "braid_nic_tx_rate_bits_per_second{nic=\"a\\\"b\"} 8000",
            "braid_nic_srtt_seconds{nic=\"a\\\"b\"} 0.00025",
            "braid_api_auth_failures_total 3",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(!text.contains("# EOF"));
        assert!(
            !text.contains("braid_nic_owd_seconds"),
            "no series until measured"
        );
        assert!(
            !text.contains("quantile="),
            "percentiles are the API's, not gauges"
        );
    }

    #[test]
    fn openmetrics_on_request() {
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
        )));
        assert!(!wants_openmetrics(Some("text/plain")));
        assert!(!wants_openmetrics(None));
        let (text, ct) = render(
            stats(),
            vec![],
            LatencyHistograms::default(),
            ApiCounters::default(),
            true,
        );
        assert_eq!(ct, OPENMETRICS_TEXT);
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("# TYPE braid_tx_packets counter\nbraid_tx_packets_total 11"));
    }
}
