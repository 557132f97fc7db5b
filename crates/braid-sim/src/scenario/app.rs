//! One simulated host: a braid [`Engine`] plus its application — traffic sources on host A, a
//! checking sink on host B.
//!
//! Every application packet is UDP/IPv4 with a 28-byte header and a payload that starts with a
//! 24-byte stamp (magic, flow index, sequence, send time) followed by bytes derived from the
//! flow and sequence, so the sink can check each delivered packet byte for byte and measure
//! latency without any shared state with the source.

use core::time::Duration;

use braid_core::engine::{Engine, EngineConfig, EngineEvent, TxVerdict};
use braid_core::health::LinkState;
use braid_core::{Instant, NicId};
use braid_wire::ip::{UDP_IPV4_HEADERS_LEN, emit_udp_ipv4};
use std::net::Ipv4Addr;

use super::{Scenario, TrafficSpec, flow_port, ms};
use crate::sim::Host;
use crate::stats::LatencyRecorder;

const MAGIC: u32 = 0xb4a1_d0c5;
const STAMP_BYTES: usize = 24;
const IP_UDP_BYTES: usize = UDP_IPV4_HEADERS_LEN;
/// Largest braid packet a host ever writes (the links' MTUs are at most 65535).
const BUF_BYTES: usize = 65_536;

/// What the sink saw of one flow.
#[derive(Clone, Debug, Default)]
pub struct FlowTotals {
    /// Packets the source handed to braid (accepted).
    pub sent: u64,
    /// Packets braid refused at the source (counted by reason in the engine).
    pub refused: u64,
    /// Packets delivered to the sink.
    pub packets: u64,
    /// Their IP bytes.
    pub bytes: u64,
    /// Delivered packets whose bytes differ from what was sent.
    pub corrupt: u64,
    /// Delivered packets whose sequence was not above the previous one (must stay 0).
    pub out_of_order: u64,
    /// Sequences never delivered that lie below the highest one delivered (holes). Packets
    /// still in flight at the end are in `sent - packets`, not here.
    pub missing: u64,
    /// First and last delivery times.
    pub first_rx: Option<Instant>,
    /// See `first_rx`.
    pub last_rx: Option<Instant>,
    /// Highest sequence delivered + 1.
    next_seq: u64,
    /// Latency from the source's send time to delivery.
    pub latency: LatencyRecorder,
}

#[derive(Debug)]
struct Source {
    index: usize,
    traffic: TrafficSpec,
    packet_bytes: usize,
    interval: Duration,
    window_bytes: usize,
    start: Instant,
    stop: Instant,
    next_at: Instant,
    seq: u64,
}

/// A simulated host.
#[derive(Debug)]
pub struct ScenarioHost {
    /// The braid engine.
    pub engine: Engine,
    sources: Vec<Source>,
    /// Per flow, what the sink saw (host B) or sent (host A: `sent`/`refused`).
    pub flows: Vec<FlowTotals>,
    /// Link state changes seen by this host's engine: (when, text).
    pub link_log: Vec<(Instant, String)>,
    /// When each NIC was declared down, most recent first-time per outage.
    pub down_at: Vec<Vec<Instant>>,
    scratch: Vec<u8>,
    packet: Vec<u8>,
}

impl ScenarioHost {
    /// Host A: the engine plus the scenario's sources.
    ///
    /// # Errors
    /// The engine's configuration error, as text.
    pub fn new_source(s: &Scenario, cfg: EngineConfig) -> Result<Self, String> {
        let mut side = Self::new(s, cfg)?;
        side.sources = s
            .flows
            .iter()
            .enumerate()
            .map(|(index, f)| {
                let interval = match f.rate_mbps {
                    Some(r) if f.traffic == TrafficSpec::Cbr => {
                        Duration::from_secs_f64(f64::from(f.packet_bytes) * 8.0 / (r * 1e6))
                    }
                    _ => Duration::ZERO,
                };
                let start = Instant::ZERO + ms(f.start_ms);
                Source {
                    index,
                    traffic: f.traffic,
                    packet_bytes: f.packet_bytes as usize,
                    interval,
                    window_bytes: f.window_kib.unwrap_or(256) as usize * 1024,
                    start,
                    stop: Instant::ZERO + ms(f.stop_ms.unwrap_or(s.duration_ms)),
                    next_at: start,
                    seq: 0,
                }
            })
            .collect();
        Ok(side)
    }

    /// Host B: the engine plus the checking sink.
    ///
    /// # Errors
    /// The engine's configuration error, as text.
    pub fn new_sink(s: &Scenario, cfg: EngineConfig) -> Result<Self, String> {
        Self::new(s, cfg)
    }

    fn new(s: &Scenario, cfg: EngineConfig) -> Result<Self, String> {
        let engine = Engine::new(cfg, Instant::ZERO).map_err(|e| e.to_string())?;
        Ok(Self {
            engine,
            sources: Vec::new(),
            flows: vec![FlowTotals::default(); s.flows.len()],
            link_log: Vec::new(),
            down_at: vec![Vec::new(); s.links.len()],
            scratch: vec![0; BUF_BYTES],
            packet: vec![0; 65_536],
        })
    }

    /// Totals over every flow of the sink.
    #[must_use]
    pub fn sink_totals(&self) -> FlowTotals {
        let mut t = FlowTotals::default();
        for f in &self.flows {
            t.packets += f.packets;
            t.bytes += f.bytes;
        }
        t
    }

    /// Offer every packet the sources want to send now.
    fn run_sources(&mut self, now: Instant) {
        for i in 0..self.sources.len() {
            loop {
                let src = &self.sources[i];
                if now < src.start || now >= src.stop {
                    break;
                }
                let due = match src.traffic {
                    TrafficSpec::Cbr => src.next_at <= now,
                    TrafficSpec::Bulk => {
                        self.engine.tx_queued_bytes() + src.packet_bytes <= src.window_bytes
                    }
                };
                if !due {
                    break;
                }
                let (index, seq, len) = (src.index, src.seq, src.packet_bytes);
                build_packet(&mut self.packet[..len], index, seq, now);
                let verdict = self.engine.handle_tx(now, &self.packet[..len]);
                let src = &mut self.sources[i];
                src.next_at += src.interval;
                match verdict {
                    // Only packets braid took get a sequence number: a refused packet is
                    // `refused`, not a hole the sink would count as missing.
                    TxVerdict::Queued => {
                        src.seq += 1;
                        self.flows[index].sent += 1;
                    }
                    TxVerdict::Drop(_) => {
                        self.flows[index].refused += 1;
                        if src.traffic == TrafficSpec::Bulk {
                            break;
                        }
                    }
                }
            }
        }
    }

    fn next_source_time(&self) -> Option<Instant> {
        self.sources
            .iter()
            .filter_map(|s| match s.traffic {
                TrafficSpec::Cbr if s.next_at < s.stop => Some(s.next_at.max(s.start)),
                // Bulk sources wake with the engine (pacing) once started.
                TrafficSpec::Bulk if s.seq == 0 && s.start < s.stop => Some(s.start),
                _ => None,
            })
            .min()
    }

    fn drain(&mut self, now: Instant) {
        while let Some(d) = self.engine.poll_deliver(now, &mut self.scratch) {
            let bytes = &self.scratch[..d.len];
            check_packet(&mut self.flows, bytes, now);
        }
        while let Some(ev) = self.engine.poll_event() {
            if let EngineEvent::Link(l) = ev {
                if l.to == LinkState::Down
                    && let Some(v) = self.down_at.get_mut(l.nic.index())
                {
                    v.push(now);
                }
                self.link_log
                    .push((now, format!("{} {:?} -> {:?}", l.nic, l.from, l.to)));
            }
        }
    }
}

impl Host for ScenarioHost {
    fn handle_rx(&mut self, now: Instant, link: usize, packet: &[u8]) {
        let nic = NicId(u8::try_from(link).unwrap_or(u8::MAX));
        self.engine.handle_rx(now, nic, packet);
        self.drain(now);
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(usize, usize)> {
        self.run_sources(now);
        let t = self.engine.poll_transmit(now, buf)?;
        Some((t.nic.index(), t.len))
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.engine.handle_timeout(now);
        self.run_sources(now);
        self.drain(now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        [self.engine.poll_timeout(), self.next_source_time()]
            .into_iter()
            .flatten()
            .min()
    }
}

/// Write flow `index`'s packet `seq` into `p` (its whole length).
fn build_packet(p: &mut [u8], index: usize, seq: u64, now: Instant) {
    let s = &mut p[IP_UDP_BYTES..];
    s[0..4].copy_from_slice(&MAGIC.to_be_bytes());
    s[4..8].copy_from_slice(&u32::try_from(index).unwrap_or(u32::MAX).to_be_bytes());
    s[8..16].copy_from_slice(&seq.to_be_bytes());
    s[16..24].copy_from_slice(&now.as_nanos().to_be_bytes());
    fill_pattern(&mut s[STAMP_BYTES..], index, seq);
    let (src, dst) = (Ipv4Addr::new(10, 77, 0, 1), Ipv4Addr::new(10, 77, 0, 2));
    // The scenario validates packet sizes (64..=65535), so the headers always fit.
    let _ = emit_udp_ipv4(p, src, dst, 40_000, flow_port(index), seq as u16);
}

/// The payload pattern: xorshift64 seeded from the flow and sequence, one `u64` (little
/// endian) per 8 bytes.
fn pattern(index: usize, seq: u64) -> impl Iterator<Item = u64> {
    let mut x = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (index as u64) ^ 1;
    core::iter::repeat_with(move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    })
}

fn fill_pattern(b: &mut [u8], index: usize, seq: u64) {
    for (chunk, word) in b.chunks_mut(8).zip(pattern(index, seq)) {
        chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
    }
}

/// Word by word: the sink checks every byte of every packet, so this is the simulation's
/// hottest loop.
fn pattern_matches(b: &[u8], index: usize, seq: u64) -> bool {
    let mut words = pattern(index, seq);
    let mut chunks = b.chunks_exact(8);
    for chunk in chunks.by_ref() {
        let got = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        if Some(got) != words.next() {
            return false;
        }
    }
    let rest = chunks.remainder();
    rest.is_empty()
        || words
            .next()
            .is_some_and(|w| rest == &w.to_le_bytes()[..rest.len()])
}

fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The sink: check one delivered packet and account for it.
fn check_packet(flows: &mut [FlowTotals], p: &[u8], now: Instant) {
    let stamp = p.get(IP_UDP_BYTES..IP_UDP_BYTES + STAMP_BYTES);
    let Some(s) = stamp.filter(|s| s[0..4] == MAGIC.to_be_bytes()) else {
        return;
    };
    let word = |r: core::ops::Range<usize>| s[r].iter().fold(0u64, |a, &b| (a << 8) | u64::from(b));
    let index = word(4..8) as usize;
    let seq = word(8..16);
    let sent = Instant::from_nanos(word(16..24));
    let Some(f) = flows.get_mut(index) else {
        return;
    };
    let header_ok = p.len() >= IP_UDP_BYTES
        && usize::from(u16::from_be_bytes([p[2], p[3]])) == p.len()
        && ipv4_checksum(&p[..20]) == 0;
    if !header_ok || !pattern_matches(&p[IP_UDP_BYTES + STAMP_BYTES..], index, seq) {
        f.corrupt += 1;
    }
    if seq < f.next_seq {
        f.out_of_order += 1;
    } else {
        f.missing += seq - f.next_seq;
        f.next_seq = seq + 1;
    }
    f.packets += 1;
    f.bytes += p.len() as u64;
    f.first_rx.get_or_insert(now);
    f.last_rx = Some(now);
    f.latency.record_between(sent, now);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sink's check catches a flipped byte anywhere, a wrong length, reordering and holes:
    /// the scenario tests' "delivered byte-exact and in order" rests on it.
    #[test]
    fn sink_catches_corruption_order_and_holes() {
        let mut flows = vec![FlowTotals::default(); 2];
        let now = Instant::from_millis(5);
        let mut p = vec![0u8; 1003];
        for seq in [0u64, 1, 3] {
            build_packet(&mut p, 1, seq, Instant::from_millis(1));
            check_packet(&mut flows, &p, now);
        }
        assert_eq!(
            (flows[1].packets, flows[1].corrupt, flows[1].missing),
            (3, 0, 1)
        );
        build_packet(&mut p, 1, 2, Instant::from_millis(1));
        check_packet(&mut flows, &p, now);
        assert_eq!(flows[1].out_of_order, 1);
        for at in [10, 500, 1002] {
            build_packet(&mut p, 1, 4 + at as u64, Instant::from_millis(1));
            p[at] ^= 0x10;
            check_packet(&mut flows, &p, now);
        }
        assert_eq!(flows[1].corrupt, 3);
        build_packet(&mut p, 1, 2000, Instant::from_millis(1));
        check_packet(&mut flows, &p[..1000], now);
        assert_eq!(flows[1].corrupt, 4, "a truncated packet is corrupt");
        assert_eq!(flows[1].latency.count(), 8);
        assert_eq!(flows[0].packets, 0);
    }
}
