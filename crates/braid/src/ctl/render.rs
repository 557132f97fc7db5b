//! `braid ctl`'s tables: the API's schema types ([`braid_control::schema`]) rendered as
//! aligned text for people, with units a network engineer reads at a glance (`8.26 Mbit/s`,
//! `418 µs`, `0.5%`).
//!
//! What this file owns: columns, alignment and number formats. Pure functions of a snapshot,
//! so the unit tests pin the exact text. What it does not own: fetching (`ctl/client.rs`) or
//! `--json`, which prints the API's JSON unchanged and never comes here.
//!
//! Tables: one header line in capitals, columns two spaces apart, numbers right-aligned, an
//! absent value as `-` (so every row has every column and `awk` can cut them).

use std::fmt::Write as _;

use braid_control::schema::{
    AdminState, Flow, FlowDirection, LinkState, Nic, PolicyName, Stats, Transport,
};

/// Busiest flows `stats` lists.
const TOP_FLOWS_SHOWN: usize = 5;

/// A text table.
#[derive(Debug)]
struct Table {
    headers: Vec<&'static str>,
    /// Right-aligned columns (numbers).
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Columns as `(header, right-aligned)`.
    fn new(columns: &[(&'static str, bool)]) -> Self {
        Self {
            headers: columns.iter().map(|c| c.0).collect(),
            right: columns.iter().map(|c| c.1).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(
            cells.len(),
            self.headers.len(),
            "invariant: one cell per column"
        );
        self.rows.push(cells);
    }

    /// The table, every line ending in `\n`, no trailing spaces.
    fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        for cells in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = widths[i] - width(cell);
                if self.right[i] {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `x` with three significant digits, trailing zeros dropped (`1.5`, `12.3`, `418`).
fn sig3(x: f64) -> String {
    let decimals = if x >= 100.0 {
        0
    } else if x >= 10.0 {
        1
    } else {
        2
    };
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// `value` with an SI prefix (k, M, G, T, decimal) before `unit`: `8.26 Mbit/s`, `1.4 MB`.
fn si(value: u64, unit: &str) -> String {
    const PREFIXES: [&str; 5] = ["", "k", "M", "G", "T"];
    // Precision beyond 2^53 does not matter for three significant digits.
    #[allow(clippy::cast_precision_loss)]
    let mut x = value as f64;
    let mut p = 0;
    // Step up while the value, rounded to three digits, would read 1000 or more.
    while p + 1 < PREFIXES.len() && x >= 999.5 {
        x /= 1000.0;
        p += 1;
    }
    if p == 0 {
        return format!("{value} {unit}");
    }
    format!("{} {}{unit}", sig3(x), PREFIXES[p])
}

/// A rate in bit/s.
pub(crate) fn rate(bps: u64) -> String {
    si(bps, "bit/s")
}

/// A byte count.
pub(crate) fn bytes(n: u64) -> String {
    si(n, "B")
}

/// A duration in µs: `418 µs`, `4.2 ms`, `1.25 s`; `-` when not measured.
pub(crate) fn micros(us: Option<u64>) -> String {
    // Durations far below 2^53 µs; precision is not at stake.
    #[allow(clippy::cast_precision_loss)]
    match us {
        None => "-".to_owned(),
        Some(us) if us < 1000 => format!("{us} µs"),
        Some(us) if us < 1_000_000 => format!("{} ms", sig3(us as f64 / 1e3)),
        Some(us) => format!("{} s", sig3(us as f64 / 1e6)),
    }
}

/// A duration in ms: `0 ms`, `999 ms`, `1.49 s`.
fn millis(ms: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{} s", sig3(ms as f64 / 1e3))
    }
}

/// A loss ratio (0.0 to 1.0) as a percentage: `0%`, `0.5%`, `12.3%`; `-` when not measured.
pub(crate) fn loss(ratio: Option<f64>) -> String {
    match ratio {
        Some(r) if r.is_finite() => format!("{}%", sig3((r * 100.0).clamp(0.0, 100.0))),
        _ => "-".to_owned(),
    }
}

/// `1 packet`, `2 packets`.
fn packets(n: u64) -> String {
    if n == 1 {
        "1 packet".to_owned()
    } else {
        format!("{n} packets")
    }
}

/// An IP protocol number by name where it has a common one.
fn protocol(p: u8) -> String {
    match p {
        1 => "icmp".to_owned(),
        6 => "tcp".to_owned(),
        17 => "udp".to_owned(),
        47 => "gre".to_owned(),
        58 => "icmpv6".to_owned(),
        132 => "sctp".to_owned(),
        n => n.to_string(),
    }
}

/// `addr:port`, `[v6]:port`, the address alone for port 0, `-` for no address.
fn endpoint(addr: &str, port: u16) -> String {
    match (addr.is_empty(), port) {
        (true, _) => "-".to_owned(),
        (false, 0) => addr.to_owned(),
        (false, _) if addr.contains(':') => format!("[{addr}]:{port}"),
        (false, _) => format!("{addr}:{port}"),
    }
}

fn or_dash(s: Option<&str>) -> String {
    s.filter(|s| !s.is_empty()).unwrap_or("-").to_owned()
}

fn link(l: LinkState) -> &'static str {
    match l {
        LinkState::Up => "up",
        LinkState::Degraded => "degraded",
        LinkState::Down => "down",
        LinkState::Unknown => "unknown",
    }
}

fn policy(p: PolicyName) -> &'static str {
    match p {
        PolicyName::Pin => "pin",
        PolicyName::Stripe => "stripe",
        PolicyName::Duplicate => "duplicate",
    }
}

/// `braid ctl nics`: one NIC a row, counters since the daemon started.
pub(crate) fn nics_table(nics: &[Nic]) -> String {
    let mut t = Table::new(&[
        ("NAME", false),
        ("DEVICE", false),
        ("TRANSPORT", false),
        ("LINK", false),
        ("ADMIN", false),
        ("CAPACITY", true),
        ("SRTT", true),
        ("LOSS", true),
        ("TX PKTS", true),
        ("TX BYTES", true),
        ("RX PKTS", true),
        ("RX BYTES", true),
        ("FLOWS", true),
    ]);
    for n in nics {
        let transport = match n.transport {
            Transport::Udp => "udp",
            Transport::Ethernet => "ethernet",
        };
        t.row(vec![
            n.name.clone(),
            n.device.clone(),
            if n.transport_open {
                transport.to_owned()
            } else {
                format!("{transport} (closed)")
            },
            link(n.link).to_owned(),
            match n.admin {
                AdminState::Up => "up",
                AdminState::Down => "down",
            }
            .to_owned(),
            if n.capacity_auto {
                format!("{} (auto)", rate(n.capacity_bps))
            } else {
                rate(n.capacity_bps)
            },
            micros(n.srtt_us),
            loss(n.loss_ratio),
            n.tx_packets.to_string(),
            bytes(n.tx_bytes),
            n.rx_packets.to_string(),
            bytes(n.rx_bytes),
            n.flows.to_string(),
        ]);
    }
    t.render()
}

/// `braid ctl flows`: one flow a row.
pub(crate) fn flows_table(flows: &[Flow]) -> String {
    let mut t = Table::new(&[
        ("ID", true),
        ("DIR", false),
        ("PROTO", false),
        ("SOURCE", false),
        ("DESTINATION", false),
        ("CLASS", false),
        ("QOS", false),
        ("POLICY", false),
        ("NICS", false),
        ("PINNED", false),
        ("RATE", true),
        ("PKTS", true),
        ("BYTES", true),
        ("IDLE", true),
    ]);
    for f in flows {
        t.row(vec![
            f.id.to_string(),
            match f.direction {
                FlowDirection::Tx => "tx",
                FlowDirection::Rx => "rx",
            }
            .to_owned(),
            protocol(f.protocol),
            endpoint(&f.src, f.src_port),
            endpoint(&f.dst, f.dst_port),
            or_dash(f.class.as_deref()),
            or_dash(f.qos_class.as_deref()),
            policy(f.policy).to_owned(),
            if f.nics.is_empty() {
                "-".to_owned()
            } else {
                f.nics.join(",")
            },
            if f.pinned { "yes" } else { "no" }.to_owned(),
            rate(f.rate_bps),
            f.packets.map_or_else(|| "-".to_owned(), |p| p.to_string()),
            f.bytes.map_or_else(|| "-".to_owned(), bytes),
            millis(f.idle_ms),
        ]);
    }
    t.render()
}

/// `braid ctl stats`: totals, a table of per-NIC rates and link measurements (RTT, one-way
/// delay, loss, RTT percentiles, packet delay variation), reorder and reassembly, the
/// busiest flows, and the drop reasons that counted anything.
pub(crate) fn stats_text(s: &Stats) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "since start: sent {} ({}), delivered {} ({}); flows now: {} tx, {} rx",
        packets(s.tx_packets),
        bytes(s.tx_bytes),
        packets(s.rx_delivered_packets),
        bytes(s.rx_delivered_bytes),
        s.flows.tx,
        s.flows.rx
    );
    out.push('\n');
    if s.interval_ms == 0 {
        out.push_str("rates and percentiles: none yet (the daemon has taken one snapshot)\n");
    } else {
        let _ = writeln!(
            out,
            "rates and percentiles over the last {}:",
            millis(s.interval_ms)
        );
    }
    let mut t = Table::new(&[
        ("NIC", false),
        ("TX", true),
        ("RX", true),
        ("TX PPS", true),
        ("RX PPS", true),
        ("SRTT", true),
        ("OWD", true),
        ("LOSS", true),
        ("RTT P50", true),
        ("RTT P99", true),
        ("PDV P99", true),
    ]);
    for n in &s.nics {
        let p = n.rtt_percentiles.as_ref();
        let pdv = n.delay_variation_percentiles.as_ref();
        t.row(vec![
            n.name.clone(),
            rate(n.tx_bps),
            rate(n.rx_bps),
            n.tx_pps.to_string(),
            n.rx_pps.to_string(),
            micros(n.srtt_us),
            micros(n.owd_us),
            loss(n.loss_ratio),
            micros(p.map(|p| p.p50_us)),
            micros(p.map(|p| p.p99_us)),
            micros(pdv.map(|p| p.p99_us)),
        ]);
    }
    out.push_str(&t.render());
    out.push('\n');
    let r = &s.reorder;
    let _ = write!(
        out,
        "reorder: {} held now ({}), {} released after waiting, {} gaps ({} sequences given \
         up), longest hold {}",
        r.held_now,
        bytes(r.held_bytes),
        r.reordered,
        r.gaps,
        r.gap_seqs,
        micros(Some(r.max_hold_us))
    );
    if let Some(p) = &r.hold_percentiles {
        let _ = write!(
            out,
            ", holds p50 {} p99 {}",
            micros(Some(p.p50_us)),
            micros(Some(p.p99_us))
        );
    }
    out.push('\n');
    let a = &s.reassembly;
    let _ = writeln!(
        out,
        "reassembly: {} completed, {} dropped, {} held",
        a.completed,
        a.dropped,
        bytes(a.held_bytes)
    );
    if !s.top_flows.is_empty() {
        let top: Vec<String> = s
            .top_flows
            .iter()
            .take(TOP_FLOWS_SHOWN)
            .map(|f| {
                let dir = match f.direction {
                    FlowDirection::Tx => "tx",
                    FlowDirection::Rx => "rx",
                };
                format!("{} {dir} ({})", f.id, rate(f.rate_bps))
            })
            .collect();
        let _ = writeln!(out, "busiest flows: {}", top.join(", "));
    }
    out.push('\n');
    let mut drops: Vec<(&String, u64)> = s
        .drops
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| (r, *n))
        .collect();
    if drops.is_empty() {
        let _ = writeln!(out, "drops: none ({} reasons counted)", s.drops.len());
        return out;
    }
    // Most first; equal counts by name (the map's order), so the text is stable.
    drops.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut t = Table::new(&[("DROP REASON", false), ("COUNT", true)]);
    for (reason, n) in &drops {
        t.row(vec![(*reason).clone(), n.to_string()]);
    }
    out.push_str(&t.render());
    let zero = s.drops.len() - drops.len();
    if zero > 0 {
        let noun = if zero == 1 { "reason" } else { "reasons" };
        let _ = writeln!(out, "({zero} other {noun} at 0)");
    }
    out
}

#[cfg(test)]
mod tests {
    use braid_control::schema::{FlowCounts, FlowRate, LatencyPercentiles, NicStats, ReorderStats};

    use super::*;

    fn nic(name: &str, device: &str) -> Nic {
        Nic {
            id: 0,
            name: name.to_owned(),
            device: device.to_owned(),
            transport: Transport::Udp,
            capacity_bps: 100_000_000,
            capacity_auto: false,
            admin: AdminState::Up,
            link: LinkState::Up,
            transport_open: true,
            srtt_us: Some(418),
            loss_ratio: Some(0.0),
            tx_packets: 1028,
            tx_bytes: 74_016,
            rx_packets: 1028,
            rx_bytes: 74_016,
            flows: 1,
        }
    }

    #[test]
    fn numbers_read_in_units() {
        assert_eq!(rate(0), "0 bit/s");
        assert_eq!(rate(999), "999 bit/s");
        assert_eq!(rate(1000), "1 kbit/s");
        assert_eq!(rate(8_260_731), "8.26 Mbit/s");
        assert_eq!(rate(100_000_000), "100 Mbit/s");
        assert_eq!(rate(2_500_000_000), "2.5 Gbit/s");
        assert_eq!(rate(999_600), "1 Mbit/s");
        assert_eq!(rate(10_000_000_000_000), "10 Tbit/s");
        assert_eq!(rate(u64::MAX), "18446744 Tbit/s");
        assert_eq!(bytes(74_016), "74 kB");
        assert_eq!(bytes(3_105_588), "3.11 MB");
        assert_eq!(micros(None), "-");
        assert_eq!(micros(Some(418)), "418 µs");
        assert_eq!(micros(Some(4200)), "4.2 ms");
        assert_eq!(micros(Some(12_345)), "12.3 ms");
        assert_eq!(micros(Some(1_250_000)), "1.25 s");
        assert_eq!(millis(1489), "1.49 s");
        assert_eq!(loss(Some(0.0)), "0%");
        assert_eq!(loss(Some(0.005)), "0.5%");
        assert_eq!(loss(Some(1.0)), "100%");
        assert_eq!(loss(Some(f64::NAN)), "-");
        assert_eq!(loss(None), "-");
        assert_eq!(endpoint("fe80::1", 5000), "[fe80::1]:5000");
        assert_eq!(endpoint("10.99.0.1", 0), "10.99.0.1");
        assert_eq!(endpoint("", 0), "-");
    }

    #[test]
    fn nics_table_is_exact() {
        let mut b = nic("link1", "nic1");
        b.capacity_bps = 1_000_000_000;
        b.capacity_auto = true;
        b.admin = AdminState::Down;
        b.link = LinkState::Degraded;
        b.transport_open = false;
        b.srtt_us = None;
        b.loss_ratio = Some(0.0123);
        b.flows = 12;
        let text = nics_table(&[nic("link0", "nic0"), b]);
        assert_eq!(
            text,
            concat!(
                "NAME   DEVICE  TRANSPORT     LINK      ADMIN         CAPACITY    SRTT   LOSS  TX PKTS  TX BYTES  RX PKTS  RX BYTES  FLOWS\n",
                "link0  nic0    udp           up        up          100 Mbit/s  418 µs     0%     1028     74 kB     1028     74 kB      1\n",
                "link1  nic1    udp (closed)  degraded  down   1 Gbit/s (auto)       -  1.23%     1028     74 kB     1028     74 kB     12\n",
            )
        );
    }

    #[test]
    fn flows_table_is_exact() {
        let f = Flow {
            id: 2_989_204_674,
            direction: FlowDirection::Tx,
            protocol: 17,
            src: "10.99.0.1".into(),
            dst: "10.99.0.2".into(),
            src_port: 54845,
            dst_port: 6000,
            dscp: None,
            class: None,
            qos_class: Some("default".into()),
            policy: PolicyName::Stripe,
            nics: vec!["link0".into(), "link1".into()],
            pinned: false,
            rate_bps: 8_260_731,
            packets: Some(3021),
            bytes: Some(3_105_588),
            idle_ms: 0,
        };
        let rx = Flow {
            id: 7,
            direction: FlowDirection::Rx,
            protocol: 58,
            src: "fe80::1".into(),
            dst: "ff02::2".into(),
            src_port: 0,
            dst_port: 0,
            qos_class: None,
            nics: vec![],
            pinned: true,
            policy: PolicyName::Pin,
            rate_bps: 0,
            packets: None,
            bytes: None,
            idle_ms: 1489,
            ..f.clone()
        };
        assert_eq!(
            flows_table(&[f, rx]),
            concat!(
                "        ID  DIR  PROTO   SOURCE           DESTINATION     CLASS  QOS      POLICY  NICS         PINNED         RATE  PKTS    BYTES    IDLE\n",
                "2989204674  tx   udp     10.99.0.1:54845  10.99.0.2:6000  -      default  stripe  link0,link1  no      8.26 Mbit/s  3021  3.11 MB    0 ms\n",
                "         7  rx   icmpv6  fe80::1          ff02::2         -      -        pin     -            yes         0 bit/s     -        -  1.49 s\n",
            )
        );
    }

    fn percentiles(p50_us: u64, p99_us: u64) -> LatencyPercentiles {
        LatencyPercentiles {
            samples: 100,
            p50_us,
            p99_us,
            ..LatencyPercentiles::default()
        }
    }

    fn stats() -> Stats {
        let link0 = NicStats {
            name: "link0".into(),
            tx_bps: 1_840_256,
            tx_pps: 585,
            srtt_us: Some(350),
            owd_us: Some(214),
            loss_ratio: Some(0.0),
            rtt_percentiles: Some(percentiles(170, 1260)),
            delay_variation_percentiles: Some(percentiles(12, 85)),
            ..NicStats::default()
        };
        let mut s = Stats {
            interval_ms: 1002,
            tx_packets: 3000,
            tx_bytes: 4_200_000,
            rx_delivered_packets: 1800,
            rx_delivered_bytes: 2_400_000,
            nics: vec![
                link0,
                NicStats {
                    name: "link1".into(),
                    ..NicStats::default()
                },
            ],
            flows: FlowCounts { tx: 2, rx: 1 },
            top_flows: vec![FlowRate {
                id: 2_989_204_674,
                direction: FlowDirection::Tx,
                rate_bps: 8_378_923,
            }],
            reorder: ReorderStats {
                held_now: 2,
                held_bytes: 2800,
                reordered: 12,
                max_hold_us: 4200,
                hold_percentiles: Some(percentiles(300, 4100)),
                ..ReorderStats::default()
            },
            ..Stats::default()
        };
        for (reason, n) in [
            ("auth_failed", 0),
            ("queue_full", 5),
            ("reassembly_timeout", 5),
            ("bad_header", 9),
        ] {
            s.drops.insert(reason.to_owned(), n);
        }
        s
    }

    #[test]
    fn stats_text_is_exact() {
        assert_eq!(
            stats_text(&stats()),
            "\
since start: sent 3000 packets (4.2 MB), delivered 1800 packets (2.4 MB); flows now: 2 tx, 1 rx

rates and percentiles over the last 1 s:
NIC             TX       RX  TX PPS  RX PPS    SRTT     OWD  LOSS  RTT P50  RTT P99  PDV P99
link0  1.84 Mbit/s  0 bit/s     585       0  350 µs  214 µs    0%   170 µs  1.26 ms    85 µs
link1      0 bit/s  0 bit/s       0       0       -       -     -        -        -        -

reorder: 2 held now (2.8 kB), 12 released after waiting, 0 gaps (0 sequences given up), longest hold 4.2 ms, holds p50 300 µs p99 4.1 ms
reassembly: 0 completed, 0 dropped, 0 B held
busiest flows: 2989204674 tx (8.38 Mbit/s)

DROP REASON         COUNT
bad_header              9
queue_full              5
reassembly_timeout      5
(1 other reason at 0)
"
        );
    }

    #[test]
    fn stats_before_the_second_snapshot_say_so() {
        let mut s = stats();
        s.interval_ms = 0;
        s.tx_packets = 1;
        let text = stats_text(&s);
        assert!(
            text.starts_with(
                "since start: sent 1 packet (4.2 MB), delivered 1800 packets (2.4 MB); flows \
                 now: 2 tx, 1 rx\n\nrates and percentiles: none yet (the daemon has taken one \
                 snapshot)\nNIC "
            ),
            "{text}"
        );
    }

    #[test]
    fn stats_without_drops_says_so() {
        let mut s = stats();
        s.drops.values_mut().for_each(|n| *n = 0);
        s.top_flows.clear();
        let text = stats_text(&s);
        assert!(
            text.ends_with(
                "p99 4.1 ms\nreassembly: 0 completed, 0 dropped, 0 B held\n\ndrops: none (4 \
                 reasons counted)\n"
            ),
            "{text}"
        );
    }
}
