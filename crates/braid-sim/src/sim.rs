//! The simulator proper: the [`Host`] trait, [`SimConfig`], and [`Sim`], which owns the
//! virtual clock, the event loop, the links and the two hosts.
//!
//! It owns the order in which things happen; what a link does to a packet is in `link.rs`,
//! and what a host does is the host's business (the simulator never looks inside packets).
//!
//! # The loop
//!
//! Each step takes the earliest of (a) the next queued event (transmission done, arrival,
//! link event, re-poll) and (b) the hosts' `poll_timeout` (queued events win ties, then A,
//! then B), advances `now` to it, runs it, then polls A's and then B's `poll_transmit` until
//! `None` or until [`SimConfig::transmit_budget`] packets. Hitting the budget schedules
//! another poll of that host 1 µs later, so a host that always has a packet cannot stall
//! the loop at one instant.
//!
//! A host whose `poll_timeout` is still ≤ `now` after
//! [`SimConfig::max_timeouts_per_instant`] `handle_timeout` calls at the same instant is not
//! asked again until something else moves time forward (counted in
//! [`HostStats::timer_stalls`]): a misbehaving host slows a run down but cannot hang it.

use core::time::Duration;

use braid_core::Instant;
use serde::{Deserialize, Serialize};

use crate::event::{EventKind, EventQueue};
use crate::link::{Direction, LinkConfig, LinkDirection, LinkStats};
use crate::pool::PacketPool;

/// One side of the simulation: the lead's wrapper around a braid engine plus its
/// application traffic, or a test host.
///
/// The simulator calls, at non-decreasing `now`: `handle_rx` for each delivered packet,
/// `handle_timeout` when `poll_timeout` is due, `handle_link_ready` when a transmission ends
/// and leaves the link's queue empty (the transmitter is then sending the last queued packet
/// or idle) or when the link comes back up, and after each of these (and at the start of
/// every `run_*`) `poll_transmit` repeatedly until it returns `None`. A packet offered to a
/// link is copied; the host may reuse `buf` at once.
pub trait Host {
    /// Bytes that `link` delivered to this host at `now`.
    fn handle_rx(&mut self, now: Instant, link: usize, packet: &[u8]);
    /// Next packet this host wants to put on a link, written into `buf`: `Some((link, len))`.
    /// Called repeatedly until `None`. A link index out of range or `len > buf.len()` is
    /// counted in [`HostStats::invalid_transmits`] and dropped.
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(usize, usize)>;
    /// Timers (probes, reorder holds, app traffic generation) that fired.
    fn handle_timeout(&mut self, now: Instant);
    /// Earliest instant this host wants `handle_timeout`; `None` = nothing scheduled.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Link `link` can accept more bytes now (its queue drained): lets a host pace.
    fn handle_link_ready(&mut self, _now: Instant, _link: usize) {}
}

/// Which host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The first host given to [`Sim::new`].
    A,
    /// The second host given to [`Sim::new`].
    B,
}

impl Side {
    /// 0 for A, 1 for B.
    #[must_use]
    pub const fn index(self) -> usize {
        match self {
            Self::A => 0,
            Self::B => 1,
        }
    }
}

/// Errors in setting up a simulation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SimError {
    /// The simulation has no link.
    #[error("no links configured")]
    NoLinks,
    /// A link's configuration is out of range.
    #[error("link {link}: {field} {problem}")]
    InvalidLink {
        /// Index of the link in [`SimConfig::links`].
        link: usize,
        /// The offending field (TOML name).
        field: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A simulator parameter is out of range.
    #[error("sim config: {field} {problem}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
}

/// Configuration of a simulation. Deserialisable with unknown fields rejected; only `links`
/// is required.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// Seed of every random draw (each link direction has its own ChaCha8 stream of it).
    /// Default 0.
    #[serde(default)]
    pub seed: u64,
    /// The links, full duplex, indexed from 0 as the hosts see them.
    pub links: Vec<LinkConfig>,
    /// Most packets taken from one host's `poll_transmit` per step. Default 10,000.
    #[serde(default = "default_transmit_budget")]
    pub transmit_budget: usize,
    /// Most `handle_timeout` calls to one host at one instant before its timer is ignored
    /// until time moves. Default 100.
    #[serde(default = "default_max_timeouts")]
    pub max_timeouts_per_instant: u32,
    /// Size in bytes of the buffer handed to `poll_transmit`. Default 65,535.
    #[serde(default = "default_max_packet")]
    pub max_packet_bytes: usize,
    /// Most idle packet buffers kept for reuse. Default 65,536.
    #[serde(default = "default_pool_max_free")]
    pub pool_max_free: usize,
}

fn default_transmit_budget() -> usize {
    10_000
}
fn default_max_timeouts() -> u32 {
    100
}
fn default_max_packet() -> usize {
    65_535
}
fn default_pool_max_free() -> usize {
    65_536
}

impl SimConfig {
    /// `links` with seed `seed` and default limits.
    #[must_use]
    pub fn new(seed: u64, links: Vec<LinkConfig>) -> Self {
        Self {
            seed,
            links,
            transmit_budget: default_transmit_budget(),
            max_timeouts_per_instant: default_max_timeouts(),
            max_packet_bytes: default_max_packet(),
            pool_max_free: default_pool_max_free(),
        }
    }

    /// Checks every link and the limits.
    ///
    /// # Errors
    /// The first problem found, naming the link and field.
    pub fn validate(&self) -> Result<(), SimError> {
        if self.links.is_empty() {
            return Err(SimError::NoLinks);
        }
        for (i, link) in self.links.iter().enumerate() {
            link.validate(i)?;
        }
        let bad = |field, problem| Err(SimError::InvalidConfig { field, problem });
        if self.transmit_budget == 0 {
            return bad("transmit_budget", "must be greater than 0");
        }
        if self.max_timeouts_per_instant == 0 {
            return bad("max_timeouts_per_instant", "must be greater than 0");
        }
        if self.max_packet_bytes == 0 {
            return bad("max_packet_bytes", "must be greater than 0");
        }
        Ok(())
    }
}

/// Counters about one host's behaviour as the simulator saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HostStats {
    /// Packets returned by `poll_transmit` (valid or not).
    pub transmits: u64,
    /// Packets dropped because their link index or length was out of range.
    pub invalid_transmits: u64,
    /// `handle_timeout` calls.
    pub timeouts: u64,
    /// Instants at which the host's timer was ignored after `max_timeouts_per_instant` calls.
    pub timer_stalls: u64,
    /// Steps at which `poll_transmit` returned `transmit_budget` packets without a `None`.
    pub transmit_budget_exhausted: u64,
    /// Packets handed to `handle_rx`.
    pub received: u64,
    /// `handle_link_ready` calls.
    pub link_ready_calls: u64,
}

/// Per-host timer guard state.
#[derive(Debug, Default)]
struct TimerGuard {
    /// Instant of the calls being counted.
    at: Instant,
    calls_at: u32,
    /// The host's timer is ignored while `now` equals this.
    stalled_at: Option<Instant>,
}

/// Every counter of a simulation at one instant; comparable, for determinism checks and
/// reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SimSnapshot {
    /// Virtual time of the snapshot.
    pub now_ns: u64,
    /// `links[l][d]`: link `l`, direction `d` (0 = A→B, 1 = B→A).
    pub links: Vec<[LinkStats; 2]>,
    /// `hosts[0]` = A, `hosts[1]` = B.
    pub hosts: [HostStats; 2],
    /// Events processed since the start.
    pub events: u64,
}

/// A discrete-event simulation of two hosts joined by N full-duplex links.
///
/// Time starts at [`Instant::ZERO`] and only moves inside [`Sim::run_until`] /
/// [`Sim::run_for`]. Same config (seed included) and same deterministic hosts give the same
/// run, event for event.
#[derive(Debug)]
pub struct Sim<A: Host, B: Host> {
    now: Instant,
    /// `links[l][dir.index()]`.
    links: Vec<[LinkDirection; 2]>,
    /// The configured events of each link, scheduled at construction.
    link_events: Vec<Vec<crate::link::LinkEvent>>,
    events: EventQueue,
    pool: PacketPool,
    scratch: Vec<u8>,
    transmit_budget: usize,
    max_timeouts_per_instant: u32,
    host_stats: [HostStats; 2],
    timer_guard: [TimerGuard; 2],
    poll_pending: [bool; 2],
    events_processed: u64,
    a: A,
    b: B,
}

/// Re-poll delay after a host hit the transmit budget.
const BUDGET_REPOLL: Duration = Duration::from_micros(1);

impl<A: Host, B: Host> Sim<A, B> {
    /// A simulation at time zero with hosts `a` and `b`.
    ///
    /// # Errors
    /// [`SimConfig::validate`]'s.
    pub fn new(config: SimConfig, a: A, b: B) -> Result<Self, SimError> {
        config.validate()?;
        let mut events = EventQueue::default();
        let mut links = Vec::with_capacity(config.links.len());
        let mut link_events = Vec::with_capacity(config.links.len());
        for (l, lc) in config.links.iter().enumerate() {
            links.push(Direction::BOTH.map(|d| LinkDirection::new(config.seed, l, d, lc)));
            for (index, ev) in lc.events.iter().enumerate() {
                events.push(Instant::ZERO + ev.at, EventKind::Link { link: l, index });
            }
            link_events.push(lc.events.clone());
        }
        Ok(Self {
            now: Instant::ZERO,
            links,
            link_events,
            events,
            pool: PacketPool::new(config.pool_max_free),
            scratch: vec![0; config.max_packet_bytes],
            transmit_budget: config.transmit_budget,
            max_timeouts_per_instant: config.max_timeouts_per_instant,
            host_stats: [HostStats::default(); 2],
            timer_guard: [TimerGuard::default(), TimerGuard::default()],
            poll_pending: [false; 2],
            events_processed: 0,
            a,
            b,
        })
    }

    /// Current virtual time.
    #[must_use]
    pub const fn now(&self) -> Instant {
        self.now
    }

    /// Host A.
    #[must_use]
    pub const fn a(&self) -> &A {
        &self.a
    }

    /// Host A, mutably (e.g. to inject traffic between runs).
    pub const fn a_mut(&mut self) -> &mut A {
        &mut self.a
    }

    /// Host B.
    #[must_use]
    pub const fn b(&self) -> &B {
        &self.b
    }

    /// Host B, mutably.
    pub const fn b_mut(&mut self) -> &mut B {
        &mut self.b
    }

    /// Ends the simulation, returning the hosts.
    pub fn into_hosts(self) -> (A, B) {
        (self.a, self.b)
    }

    /// Number of links.
    #[must_use]
    pub fn link_count(&self) -> usize {
        self.links.len()
    }

    /// Counters of `link` in direction `dir`.
    ///
    /// # Panics
    /// If `link >= link_count()`.
    #[must_use]
    pub fn link_stats(&self, link: usize, dir: Direction) -> &LinkStats {
        &self.links[link][dir.index()].stats
    }

    /// Fraction of the elapsed time (since time zero) that `link`'s transmitter in `dir` was
    /// busy, in [0, 1]; 0 before time moves.
    ///
    /// # Panics
    /// If `link >= link_count()`.
    #[must_use]
    pub fn utilisation(&self, link: usize, dir: Direction) -> f64 {
        let elapsed = self.now.as_nanos();
        if elapsed == 0 {
            return 0.0;
        }
        // Includes the packet being transmitted, up to now.
        let busy = self.links[link][dir.index()].busy_ns_at(self.now);
        (busy as f64 / elapsed as f64).min(1.0)
    }

    /// Whether `link` is up in direction `dir`.
    ///
    /// # Panics
    /// If `link >= link_count()`.
    #[must_use]
    pub fn link_is_up(&self, link: usize, dir: Direction) -> bool {
        self.links[link][dir.index()].is_up()
    }

    /// Current rate of `link` in `dir`, bit/s (changes with `SetRate` events).
    ///
    /// # Panics
    /// If `link >= link_count()`.
    #[must_use]
    pub fn link_rate_bps(&self, link: usize, dir: Direction) -> u64 {
        self.links[link][dir.index()].rate_bps()
    }

    /// Host bytes waiting in `link`'s queue in `dir` (excluding the packet on the wire).
    ///
    /// # Panics
    /// If `link >= link_count()`.
    #[must_use]
    pub fn queued_bytes(&self, link: usize, dir: Direction) -> u64 {
        self.links[link][dir.index()].queued_bytes()
    }

    /// Packets propagating on `link` in `dir` (transmitted, not yet arrived).
    ///
    /// # Panics
    /// If `link >= link_count()`.
    #[must_use]
    pub fn in_flight(&self, link: usize, dir: Direction) -> u64 {
        self.links[link][dir.index()].in_flight()
    }

    /// What the simulator counted about `side`.
    #[must_use]
    pub const fn host_stats(&self, side: Side) -> &HostStats {
        &self.host_stats[side.index()]
    }

    /// Events processed since the start (transmissions, arrivals, link events, timers).
    #[must_use]
    pub const fn events_processed(&self) -> u64 {
        self.events_processed
    }

    /// The packet buffer pool (its allocation counters show steady-state reuse).
    #[must_use]
    pub const fn pool(&self) -> &PacketPool {
        &self.pool
    }

    /// Every counter at the current instant.
    #[must_use]
    pub fn snapshot(&self) -> SimSnapshot {
        SimSnapshot {
            now_ns: self.now.as_nanos(),
            links: self
                .links
                .iter()
                .map(|pair| [pair[0].stats, pair[1].stats])
                .collect(),
            hosts: self.host_stats,
            events: self.events_processed,
        }
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    /// Runs every event and timer due at or before `t`, then sets the clock to `t` (if later
    /// than now). Events exactly at `t` are run.
    pub fn run_until(&mut self, t: Instant) {
        self.poll_hosts();
        loop {
            let queued = self.events.peek_time();
            let timer_a = self.host_timer(Side::A);
            let timer_b = self.host_timer(Side::B);
            let next = [queued, timer_a, timer_b].into_iter().flatten().min();
            let Some(next) = next else { break };
            if next > t {
                break;
            }
            // A host may ask for a deadline in the past: run it now, never move time back.
            self.now = self.now.max(next);
            if queued == Some(next) {
                let (_, kind) = self.events.pop().expect("invariant: peeked event exists");
                self.process(kind);
            } else if timer_a == Some(next) {
                self.fire_timer(Side::A);
            } else {
                self.fire_timer(Side::B);
            }
            self.events_processed += 1;
            self.poll_hosts();
        }
        self.now = self.now.max(t);
    }

    /// The host's deadline as the loop should see it (`None` while it is stalled at `now`).
    fn host_timer(&self, side: Side) -> Option<Instant> {
        let t = match side {
            Side::A => self.a.poll_timeout(),
            Side::B => self.b.poll_timeout(),
        }?;
        let guard = &self.timer_guard[side.index()];
        if guard.stalled_at == Some(self.now) && t <= self.now {
            return None;
        }
        Some(t)
    }

    fn fire_timer(&mut self, side: Side) {
        let now = self.now;
        let max = self.max_timeouts_per_instant;
        let guard = &mut self.timer_guard[side.index()];
        if guard.at != now {
            guard.at = now;
            guard.calls_at = 0;
            guard.stalled_at = None;
        }
        guard.calls_at += 1;
        if guard.calls_at >= max {
            guard.stalled_at = Some(now);
            self.host_stats[side.index()].timer_stalls += 1;
        }
        self.host_stats[side.index()].timeouts += 1;
        match side {
            Side::A => self.a.handle_timeout(now),
            Side::B => self.b.handle_timeout(now),
        }
    }

    fn process(&mut self, kind: EventKind) {
        let now = self.now;
        match kind {
            EventKind::TxDone { link, dir, epoch } => {
                let ld = &mut self.links[link][dir.index()];
                if let Some(done) = ld.tx_done(now, epoch, &mut self.pool, &mut self.events)
                    && done.queue_drained
                {
                    self.link_ready(dir.sender(), link);
                }
            }
            EventKind::Arrive {
                link,
                dir,
                epoch,
                packet,
            } => {
                if self.links[link][dir.index()].arrive(epoch, &packet) {
                    let side = dir.receiver();
                    self.host_stats[side.index()].received += 1;
                    match side {
                        Side::A => self.a.handle_rx(now, link, &packet),
                        Side::B => self.b.handle_rx(now, link, &packet),
                    }
                }
                self.pool.put(packet);
            }
            EventKind::Link { link, index } => {
                let ev = self.link_events[link][index].clone();
                for dir in Direction::BOTH {
                    if ev.direction.is_some_and(|only| only != dir) {
                        continue;
                    }
                    if self.links[link][dir.index()].apply(now, ev.action, &mut self.pool) {
                        self.link_ready(dir.sender(), link);
                    }
                }
            }
            EventKind::Poll { side } => self.poll_pending[side.index()] = false,
        }
    }

    fn link_ready(&mut self, side: Side, link: usize) {
        self.host_stats[side.index()].link_ready_calls += 1;
        match side {
            Side::A => self.a.handle_link_ready(self.now, link),
            Side::B => self.b.handle_link_ready(self.now, link),
        }
    }

    fn poll_hosts(&mut self) {
        self.poll_host(Side::A);
        self.poll_host(Side::B);
    }

    /// Takes up to `transmit_budget` packets from `side` and offers them to their links.
    fn poll_host(&mut self, side: Side) {
        let now = self.now;
        let dir = Direction::from_sender(side);
        let stats = &mut self.host_stats[side.index()];
        for _ in 0..self.transmit_budget {
            let polled = match side {
                Side::A => self.a.poll_transmit(now, &mut self.scratch),
                Side::B => self.b.poll_transmit(now, &mut self.scratch),
            };
            let Some((link, len)) = polled else {
                return;
            };
            stats.transmits += 1;
            if link >= self.links.len() || len > self.scratch.len() {
                stats.invalid_transmits += 1;
                continue;
            }
            self.links[link][dir.index()].offer(
                now,
                &self.scratch[..len],
                &mut self.pool,
                &mut self.events,
            );
        }
        // Budget spent: poll again shortly rather than spin at this instant.
        stats.transmit_budget_exhausted += 1;
        if !self.poll_pending[side.index()] {
            self.poll_pending[side.index()] = true;
            self.events
                .push(now + BUDGET_REPOLL, EventKind::Poll { side });
        }
    }

    /// Pending events (for tests of the loop's bookkeeping).
    #[cfg(test)]
    pub(crate) fn pending_events(&self) -> usize {
        self.events.len()
    }
}
