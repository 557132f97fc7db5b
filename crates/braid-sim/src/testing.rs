//! Simple [`Host`]s for testing and benchmarking the simulator itself (and for smoke tests of
//! anything built on it): [`CounterHost`] sends numbered, timestamped packets and records what
//! arrives.
//!
//! It owns no braid logic: braid's engine is driven by the lead's host wrapper, not by these.
//!
//! Packet format of a [`CounterHost`]: bytes 0..8 the sequence number (big endian), bytes
//! 8..16 the send time in ns (big endian), then padding up to the configured size. Shorter
//! packets received are counted in [`CounterHost::rx_malformed`].

use core::time::Duration;

use braid_core::Instant;

use crate::sim::Host;
use crate::stats::LatencyRecorder;

/// Bytes of the sequence number and timestamp at the start of every packet.
pub const COUNTER_HEADER_BYTES: usize = 16;

/// How a [`CounterHost`] generates traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendMode {
    /// Sends nothing by itself (only what [`CounterHost::blast`] asks).
    Sink,
    /// Saturates its links without overflowing their queues: `window` packets per link at
    /// the start, and `window` more each time the link reports ready (its queue drained).
    Greedy {
        /// Packets handed to a link per readiness signal.
        window: u32,
    },
    /// One packet every `interval`, round-robin over its links, from time zero.
    Paced {
        /// Time between packets.
        interval: Duration,
    },
}

/// One packet received by a [`CounterHost`] that keeps a log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrival {
    /// When it arrived.
    pub at: Instant,
    /// On which link.
    pub link: usize,
    /// Its sequence number.
    pub seq: u64,
    /// Its send time (as written by the sender).
    pub sent_at: Instant,
    /// Its length in bytes.
    pub len: usize,
}

/// A test host that sends numbered packets and records arrivals.
#[derive(Debug)]
pub struct CounterHost {
    links: Vec<usize>,
    packet_bytes: usize,
    mode: SendMode,
    limit: Option<u64>,
    next_seq: u64,
    credits: Vec<u32>,
    rr: usize,
    next_send: Instant,
    due: u64,
    bursts: Vec<(usize, u64)>,
    log: Option<Vec<Arrival>>,
    latency: LatencyRecorder,
    /// Packets sent.
    pub tx_packets: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received per link index (grows to the largest index seen).
    pub rx_per_link: Vec<u64>,
    /// Packets received on a link with a sequence number lower than an earlier arrival on
    /// the same link.
    pub rx_out_of_order: u64,
    /// Packets received shorter than [`COUNTER_HEADER_BYTES`].
    pub rx_malformed: u64,
    max_seq_per_link: Vec<Option<u64>>,
}

impl CounterHost {
    /// A host sending `packet_bytes`-byte packets (at least [`COUNTER_HEADER_BYTES`]) on
    /// `links` as `mode` says.
    #[must_use]
    pub fn new(links: Vec<usize>, packet_bytes: usize, mode: SendMode) -> Self {
        let window = match mode {
            SendMode::Greedy { window } => window,
            _ => 0,
        };
        Self {
            credits: vec![window; links.len()],
            links,
            packet_bytes: packet_bytes.max(COUNTER_HEADER_BYTES),
            mode,
            limit: None,
            next_seq: 0,
            rr: 0,
            next_send: Instant::ZERO,
            due: 0,
            bursts: Vec::new(),
            log: None,
            latency: LatencyRecorder::new(),
            tx_packets: 0,
            rx_packets: 0,
            rx_bytes: 0,
            rx_per_link: Vec::new(),
            rx_out_of_order: 0,
            rx_malformed: 0,
            max_seq_per_link: Vec::new(),
        }
    }

    /// A host that only receives.
    #[must_use]
    pub fn sink() -> Self {
        Self::new(Vec::new(), COUNTER_HEADER_BYTES, SendMode::Sink)
    }

    /// Stops sending (in every mode but [`CounterHost::blast`]) after `packets` packets.
    #[must_use]
    pub const fn with_limit(mut self, packets: u64) -> Self {
        self.limit = Some(packets);
        self
    }

    /// Keeps an [`Arrival`] for every packet received.
    #[must_use]
    pub fn with_log(mut self) -> Self {
        self.log = Some(Vec::new());
        self
    }

    /// Queues `count` packets for `link`, sent at the next poll regardless of mode or limit.
    pub fn blast(&mut self, link: usize, count: u64) {
        if count > 0 {
            self.bursts.push((link, count));
        }
    }

    /// The arrival log (empty unless built [`CounterHost::with_log`]).
    #[must_use]
    pub fn arrivals(&self) -> &[Arrival] {
        self.log.as_deref().unwrap_or(&[])
    }

    /// One-way latency of every packet received.
    #[must_use]
    pub const fn latency(&self) -> &LatencyRecorder {
        &self.latency
    }

    fn at_limit(&self) -> bool {
        self.limit.is_some_and(|l| self.tx_packets >= l)
    }

    fn write(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        let len = self.packet_bytes;
        let out = buf.get_mut(..len)?;
        out[..8].copy_from_slice(&self.next_seq.to_be_bytes());
        out[8..16].copy_from_slice(&now.as_nanos().to_be_bytes());
        self.next_seq += 1;
        self.tx_packets += 1;
        Some(len)
    }

    /// The next link by round robin among those `ok` accepts.
    fn next_link(&mut self, ok: impl Fn(usize, &Self) -> bool) -> Option<usize> {
        let n = self.links.len();
        for i in 0..n {
            let slot = (self.rr + i) % n;
            if ok(slot, self) {
                self.rr = (slot + 1) % n;
                return Some(slot);
            }
        }
        None
    }
}

impl Host for CounterHost {
    fn handle_rx(&mut self, now: Instant, link: usize, packet: &[u8]) {
        let (Some(seq), Some(sent)) = (packet.get(..8), packet.get(8..16)) else {
            self.rx_malformed += 1;
            return;
        };
        let seq = u64::from_be_bytes(seq.try_into().expect("invariant: 8 bytes"));
        let sent_at = Instant::from_nanos(u64::from_be_bytes(
            sent.try_into().expect("invariant: 8 bytes"),
        ));
        self.rx_packets += 1;
        self.rx_bytes += packet.len() as u64;
        if self.rx_per_link.len() <= link {
            self.rx_per_link.resize(link + 1, 0);
            self.max_seq_per_link.resize(link + 1, None);
        }
        self.rx_per_link[link] += 1;
        let max = &mut self.max_seq_per_link[link];
        if max.is_some_and(|m| seq < m) {
            self.rx_out_of_order += 1;
        } else {
            *max = Some(seq);
        }
        self.latency.record_between(sent_at, now);
        if let Some(log) = &mut self.log {
            log.push(Arrival {
                at: now,
                link,
                seq,
                sent_at,
                len: packet.len(),
            });
        }
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(usize, usize)> {
        if let Some(&mut (link, ref mut left)) = self.bursts.last_mut() {
            *left -= 1;
            if *left == 0 {
                self.bursts.pop();
            }
            return self.write(now, buf).map(|len| (link, len));
        }
        if self.at_limit() {
            return None;
        }
        let slot = match self.mode {
            SendMode::Sink => return None,
            SendMode::Greedy { .. } => {
                let slot = self.next_link(|s, h| h.credits[s] > 0)?;
                self.credits[slot] -= 1;
                slot
            }
            SendMode::Paced { .. } => {
                if self.due == 0 {
                    return None;
                }
                let slot = self.next_link(|_, _| true)?;
                self.due -= 1;
                slot
            }
        };
        let link = self.links[slot];
        self.write(now, buf).map(|len| (link, len))
    }

    fn handle_timeout(&mut self, now: Instant) {
        if let SendMode::Paced { interval } = self.mode {
            while self.next_send <= now {
                self.due += 1;
                self.next_send += interval.max(Duration::from_nanos(1));
            }
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self.mode {
            SendMode::Paced { .. } if !self.at_limit() && !self.links.is_empty() => {
                Some(self.next_send)
            }
            _ => None,
        }
    }

    fn handle_link_ready(&mut self, _now: Instant, link: usize) {
        if let SendMode::Greedy { window } = self.mode {
            for (slot, &l) in self.links.iter().enumerate() {
                if l == link {
                    self.credits[slot] = window;
                }
            }
        }
    }
}
