//! The data-path worker: one thread that drives one braid engine with real packets.
//!
//! It owns the engine, the vNIC's queues and the NICs' transports, and loops:
//!
//! 1. read a batch from every vNIC queue → [`Engine::handle_tx`];
//! 2. read a batch from every NIC → [`Engine::handle_rx`];
//! 3. [`Engine::handle_timeout`], then drain [`Engine::poll_transmit`] into the NICs' send
//!    queues and flush them (one `sendmsg` per GSO run), drain [`Engine::poll_deliver`] into
//!    the vNIC queue that RSS picks for the packet's flow, and log [`Engine::poll_event`]s;
//! 4. apply control commands (the seam for the REST API: [`DataplaneHandle::apply`]) and
//!    answer flow-table queries ([`DataplaneHandle::flows`], [`DataplaneHandle::flow`]: a
//!    bounded page of the engine's flows, built between batches);
//! 5. publish a [`Snapshot`] of the counters every [`SNAPSHOT_INTERVAL`];
//! 6. sleep in `epoll_wait` until a descriptor is ready, the engine's next timer, or a
//!    control command (an eventfd) — whichever comes first.
//!
//! Nothing in steps 1–3 allocates or logs per packet; the system calls are one per batch and
//! per port. Once a second the worker asks every closed transport to reopen (a NIC whose
//! device disappeared comes back by itself when the device does).
//!
//! What this module does not own: the engine's logic (braid-core), the devices (the
//! transports and [`crate::vnic`]), the configuration file (the binary).
//!
//! Time is `CLOCK_MONOTONIC` in nanoseconds: the same clock in every network namespace of a
//! host, so two braid peers on one machine (the testbed) measure real one-way delays.
//!
//! With several vNIC queues the daemon runs one worker per queue, each with its own engine
//! and NIC sockets, and [`Steering`] moves delivered packets to the worker that owns their
//! RSS queue through the inter-NIC channel ([`steer`] explains the split).

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use braid_core::engine::{
    Command, CommandError, Engine, EngineEvent, EngineStats, FlowDirection, FlowQuery, FlowRow,
    NicCounters,
};
use braid_core::health::LinkStats;
use braid_core::rss::Rss;
use braid_core::time::Instant;
use braid_core::{DropReason, FlowId, NicId};
use braid_wire::IpSummary;
use rustix::event::{EventfdFlags, epoll};

use crate::transport::{NicTransport, QueueError, RxBatch, TransportStats};

pub mod counters;
pub mod share;
pub mod steer;
pub mod tunnel;
pub use counters::{QosClassSnapshot, RuleTableSnapshot, RulesSnapshot};
pub use share::{CapacityShares, ShareChange, SharedNic};
pub use steer::{MAX_WORKERS, SteerError, SteerStats, Steering};
pub use tunnel::{TunnelPortEntry, TunnelPortPlan, TunnelPortSnapshot, TunnelSnapshot};

/// How often the worker publishes its counters.
pub const SNAPSHOT_INTERVAL: Duration = Duration::from_millis(200);

/// Longest a worker waits for a full kernel queue to take a packet.
const BACKPRESSURE_WAIT: Duration = Duration::from_millis(2);

/// How often closed transports are asked to reopen.
const MAINTAIN_INTERVAL: Duration = Duration::from_secs(1);

/// Batches read from one vNIC queue per loop turn before the others get their go.
const BATCHES_PER_TURN: usize = 4;

/// Most batches read from one NIC per loop turn (1 024 packets at 64 a batch): enough to
/// empty its socket after a stall of the worker, short enough that the other NICs and the
/// timers (probes) are not kept waiting long.
const RX_BATCHES_PER_TURN: usize = 16;

/// The engine's timers run at least this often, even while a NIC is never read dry.
const TIMERS_AT_LEAST: Duration = Duration::from_millis(2);

/// Longest sleep, so a stop request is seen even if the eventfd write is lost.
const MAX_SLEEP: Duration = Duration::from_millis(100);

/// Why [`DataplaneHandle::apply`] refuses `Command::ReplacePolicies`: the worker's map of
/// tunnels to tunnel ports must change with the engine's tunnel table, or a tunnel's
/// packets would leave through the socket of the tunnel that had its index before.
const REPLACE_POLICIES_NEEDS_PORTS: CommandError = CommandError::NotAccepted(
    "a policy replacement goes through DataplaneHandle::apply_with_tunnel_ports, with the \
     worker's tunnel ports",
);

/// The clock the data path runs on: `CLOCK_MONOTONIC`, in nanoseconds.
#[must_use]
pub fn now() -> Instant {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    // tv_sec and tv_nsec are non-negative for CLOCK_MONOTONIC.
    #[allow(clippy::cast_sign_loss)]
    Instant::from_nanos(t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64)
}

/// One NIC as the worker holds it.
#[derive(Debug)]
pub struct NicPort {
    /// The engine's id for it.
    pub id: NicId,
    /// Its name, for logs.
    pub name: String,
    /// Its transport.
    pub transport: Box<dyn NicTransport>,
}

/// The counters of one NIC, as published.
#[derive(Clone, Debug)]
pub struct NicSnapshot {
    /// Id.
    pub id: NicId,
    /// Name.
    pub name: String,
    /// The engine's counters for the NIC.
    pub engine: NicCounters,
    /// Link health (`None` only if the engine does not know the NIC).
    pub link: Option<LinkStats>,
    /// The transport's counters.
    pub transport: TransportStats,
    /// Counters only this kind of transport has, by name.
    pub extra: Vec<(&'static str, u64)>,
    /// `false` while the transport is closed (its device is gone).
    pub open: bool,
    /// Administratively up (`Command::SetNicAdmin`); `false`: taken out of use by an
    /// operator, its flows drained to the other NICs.
    pub admin_up: bool,
    /// Flows the flow controller has on the NIC now (its `NicStatus::flows`).
    pub flows: u32,
    /// Per configured QoS class, the NIC's scheduler ([`counters`]).
    pub qos: Vec<QosClassSnapshot>,
}

/// Everything the worker counts, copied out between batches.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// When it was taken.
    pub at: Instant,
    /// The engine's totals.
    pub engine: EngineStats,
    /// Per NIC.
    pub nics: Vec<NicSnapshot>,
    /// Per vNIC queue: the common counters and the vNIC's own (offload splits, ...).
    pub vnic_queues: Vec<(TransportStats, Vec<(&'static str, u64)>)>,
    /// Drops by reason (label, count), every reason, zeros included.
    pub drops: Vec<(&'static str, u64)>,
    /// Reassembly of braid fragments.
    pub reassembly: braid_core::reassembly::ReassemblyStats,
    /// (TX flows, RX flows) in the engine's tables.
    pub flows: (usize, usize),
    /// Packets that `poll_transmit` produced but no NIC queue took (per reason).
    pub tx_unqueued: u64,
    /// Delivered packets no vNIC queue took.
    pub deliver_unqueued: u64,
    /// Loop turns.
    pub turns: u64,
    /// Which worker this is (its vNIC queue) and its steering counters, with several workers.
    pub steering: Option<(usize, SteerStats)>,
    /// Per VXLAN/GRE tunnel, the engine's counters ([`tunnel`]).
    pub tunnels: Vec<TunnelSnapshot>,
    /// Per tunnel port, the sockets' counters.
    pub tunnel_ports: Vec<TunnelPortSnapshot>,
    /// Encapsulated packets for a tunnel that has no port on this worker (the fragments of
    /// one outer datagram count once). A packet a tunnel port refuses (full, too big) is
    /// counted once, by the port ([`TunnelPortSnapshot::transport`]'s `tx_drop_*`; a
    /// fragmented datagram once), not here.
    pub tunnel_unqueued: u64,
    /// Per rule of the TX and RX tables in force ([`counters`]).
    pub rules: RulesSnapshot,
    /// Per configured QoS class, the vNIC's meters ([`counters`]).
    pub vnic_qos: Vec<QosClassSnapshot>,
}

/// What [`Dataplane::run`] gives back when it stops.
#[derive(Debug)]
pub struct Stopped {
    /// The engine, for a last look at its counters.
    pub engine: Engine,
    /// The NICs; dropping them closes the sockets.
    pub nics: Vec<NicPort>,
    /// The vNIC queues.
    pub vnic: Vec<Box<dyn NicTransport>>,
}

enum Control {
    /// A command, its answer channel, and whether to log it (routine ones are not).
    Apply(Command, mpsc::SyncSender<Result<(), CommandError>>, bool),
    /// A policy replacement with the worker's next tunnel ports ([`tunnel`]), and its
    /// answer channel.
    ApplyWithTunnelPorts(
        Command,
        Vec<TunnelPortPlan>,
        mpsc::SyncSender<Result<(), CommandError>>,
    ),
    /// A page of the flow table, and its answer channel.
    Flows(FlowQuery, mpsc::SyncSender<Vec<FlowRow>>),
    /// One flow, and its answer channel.
    Flow(FlowDirection, FlowId, mpsc::SyncSender<Option<FlowRow>>),
}

/// The other threads' handle on a running worker: stop it, send it commands, read its
/// counters.
#[derive(Debug, Clone)]
pub struct DataplaneHandle {
    stop: Arc<AtomicBool>,
    wake: Arc<OwnedFd>,
    control: mpsc::SyncSender<Control>,
    snapshot: Arc<Mutex<Option<Snapshot>>>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Apply(c, _, _) => write!(f, "Apply({c:?})"),
            Self::ApplyWithTunnelPorts(c, p, _) => {
                write!(f, "ApplyWithTunnelPorts({c:?}, {p:?})")
            }
            Self::Flows(q, _) => write!(f, "Flows({q:?})"),
            Self::Flow(d, id, _) => write!(f, "Flow({d:?}, {id:?})"),
        }
    }
}

impl DataplaneHandle {
    /// Ask the worker to stop; [`Dataplane::run`] returns soon after.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.wake();
    }

    /// Apply a command between batches and wait (bounded) for the engine's answer.
    ///
    /// Not for `Command::ReplacePolicies`, which may change the tunnel table and so must
    /// come with the worker's tunnel ports: [`DataplaneHandle::apply_with_tunnel_ports`]. It
    /// is refused here (`CommandError::NotAccepted`), unsent.
    ///
    /// # Errors
    /// The engine's refusal, or `None` if the worker did not answer within a second (it is
    /// stopped or stuck). A command that stays unanswered may still be applied later.
    pub fn apply(&self, cmd: Command) -> Option<Result<(), CommandError>> {
        self.send(cmd, true)
    }

    /// As [`DataplaneHandle::apply`], logged only at debug level: for routine commands, such
    /// as the capacity shares of several workers ([`CapacityShares`]), five times a second.
    ///
    /// # Errors
    /// As [`DataplaneHandle::apply`].
    pub fn apply_quiet(&self, cmd: Command) -> Option<Result<(), CommandError>> {
        self.send(cmd, false)
    }

    /// Apply `cmd`, a policy replacement (`Command::ReplacePolicies`) whose tunnel table
    /// needs the tunnel ports of `ports`, and switch the worker to those ports, between
    /// batches, both or neither ([`tunnel`]): the ports the caller opened for the new set are
    /// watched, the worker's ports that `ports` does not keep are closed. On a refusal the
    /// ports the caller opened are closed and nothing changes.
    ///
    /// Unlike [`DataplaneHandle::apply`], this waits for the answer as long as the worker
    /// runs (a warning is logged every second it waits): the command is in the worker's
    /// queue, so "no answer" must mean "never applied", or a caller that rolls the other
    /// workers back would leave this one on another policy set when it applies the command
    /// late (and its tunnel ports out of step with what the caller believes it holds). A
    /// worker whose thread has ended drops its queue, and with it the answer channel: that
    /// ends the wait.
    ///
    /// # Errors
    /// The engine's refusal, `InvalidValue("tunnel_ports")` for ports that do not fit the
    /// worker's, or `None` if the command was not applied and never will be: the worker's
    /// queue was full (nothing sent) or its thread has ended.
    pub fn apply_with_tunnel_ports(
        &self,
        cmd: Command,
        ports: Vec<TunnelPortPlan>,
    ) -> Option<Result<(), CommandError>> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.control
            .try_send(Control::ApplyWithTunnelPorts(cmd, ports, tx))
            .ok()?;
        self.wake();
        let started = std::time::Instant::now();
        loop {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(answer) => return Some(answer),
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    tracing::warn!(
                        waited_ms = started.elapsed().as_millis(),
                        "a worker has not yet taken the policy replacement; waiting for it"
                    );
                    // It may sleep up to MAX_SLEEP if a wake-up was lost.
                    self.wake();
                }
            }
        }
    }

    fn send(&self, cmd: Command, log: bool) -> Option<Result<(), CommandError>> {
        if matches!(cmd, Command::ReplacePolicies(_)) {
            return Some(Err(REPLACE_POLICIES_NEEDS_PORTS));
        }
        let (tx, rx) = mpsc::sync_channel(1);
        self.control.try_send(Control::Apply(cmd, tx, log)).ok()?;
        self.wake();
        rx.recv_timeout(Duration::from_secs(1)).ok()
    }

    /// A page of the worker's flow table, taken between batches: the flows `query` matches
    /// after its cursor, at most `query.limit + 1` (the extra row says there is another
    /// page), in `FlowCursor` order ([`Engine::flows`]; its module doc says what a row holds
    /// and how pages of several workers merge). Moves go through [`Self::apply`] with
    /// `Command::MoveFlow`.
    ///
    /// Returns `None` if the worker did not answer within a second (stopped or stuck).
    #[must_use]
    pub fn flows(&self, query: FlowQuery) -> Option<Vec<FlowRow>> {
        self.ask(|tx| Control::Flows(query, tx))
    }

    /// One flow of the worker's tables by direction and id: `Some(None)` if it has none
    /// (or it expired), `None` if the worker did not answer within a second.
    #[must_use]
    pub fn flow(&self, direction: FlowDirection, id: FlowId) -> Option<Option<FlowRow>> {
        self.ask(|tx| Control::Flow(direction, id, tx))
    }

    /// Send a request built around its answer channel and wait (bounded) for the answer.
    fn ask<T>(&self, request: impl FnOnce(mpsc::SyncSender<T>) -> Control) -> Option<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.control.try_send(request(tx)).ok()?;
        self.wake();
        rx.recv_timeout(Duration::from_secs(1)).ok()
    }

    /// The latest counters (at most [`SNAPSHOT_INTERVAL`] old).
    #[must_use]
    pub fn snapshot(&self) -> Option<Snapshot> {
        self.snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn wake(&self) {
        // An eventfd write of 1; it only fails if the counter would overflow, which means
        // the worker has many wake-ups pending already.
        let _ = rustix::io::write(&*self.wake, &1u64.to_ne_bytes());
    }
}

/// Sizes of the worker's buffers.
#[derive(Clone, Copy, Debug)]
pub struct DataplaneConfig {
    /// Packets per receive batch (per port).
    pub batch: usize,
    /// Bytes of one receive slot on the NICs (65 535 covers GRO super-datagrams).
    pub nic_slot_bytes: usize,
    /// Bytes of one receive slot on the vNIC (its MTU, or 65 535 with offloads).
    pub vnic_slot_bytes: usize,
    /// After a turn that moved packets, poll the descriptors without sleeping for up to this
    /// long before blocking in `epoll_wait` (default zero: never). It saves the wake-up of a
    /// sleeping thread on the next packet, at the price of a core kept busy meanwhile.
    pub busy_poll: Duration,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        Self {
            batch: 64,
            nic_slot_bytes: 65_535,
            vnic_slot_bytes: 65_535,
            busy_poll: Duration::ZERO,
        }
    }
}

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// epoll or eventfd could not be created or a descriptor registered.
    #[error("cannot set up the event loop: {0}")]
    Poll(#[from] io::Error),
    /// The vNIC has no queue.
    #[error("the vNIC has no queue")]
    NoQueues,
    /// A steered worker owns exactly one vNIC queue.
    #[error("a worker with steering owns exactly one vNIC queue, not {0}")]
    SteeringQueues(usize),
}

/// Tokens in epoll's user data: which port a ready descriptor belongs to.
const TOKEN_WAKE: u64 = u64::MAX;
const TOKEN_VNIC: u64 = 1 << 32;

/// One data-path worker. Build it with [`Dataplane::new`], take a [`DataplaneHandle`], then
/// call [`Dataplane::run`] on its own thread.
pub struct Dataplane {
    engine: Engine,
    nics: Vec<NicPort>,
    /// NIC index by engine id (`NicId.0`), for `poll_transmit`.
    nic_index: [u8; braid_core::MAX_NICS],
    vnic: Vec<Box<dyn NicTransport>>,
    rss: Rss,
    nic_rx: RxBatch,
    vnic_rx: RxBatch,
    scratch: Box<[u8]>,
    epoll: OwnedFd,
    stop: Arc<AtomicBool>,
    wake: Arc<OwnedFd>,
    control_tx: mpsc::SyncSender<Control>,
    control: mpsc::Receiver<Control>,
    snapshot: Arc<Mutex<Option<Snapshot>>>,
    tx_unqueued: u64,
    deliver_unqueued: u64,
    turns: u64,
    /// What is left of this turn's allowance for waiting on full kernel queues.
    wait_budget: Duration,
    /// This worker's place among several (one per vNIC queue), if there are several.
    steer: Option<Steering>,
    /// [`DataplaneConfig::busy_poll`].
    busy_poll: Duration,
    /// Packets the ports have moved, at the end of the last turn (to see if a turn did work).
    moved: u64,
    /// VXLAN/GRE tunnel ports ([`tunnel`]; none unless [`Dataplane::with_tunnels`]).
    tunnels: tunnel::TunnelPorts,
}

impl Dataplane {
    /// A worker for `engine` over these NICs and vNIC queues. `rss` picks the vNIC queue a
    /// delivered packet is written to (a flow's packets always go to one queue).
    ///
    /// # Errors
    /// [`DataplaneError`] if epoll cannot be set up or there is no vNIC queue.
    pub fn new(
        engine: Engine,
        nics: Vec<NicPort>,
        vnic: Vec<Box<dyn NicTransport>>,
        rss: Rss,
        config: DataplaneConfig,
    ) -> Result<Self, DataplaneError> {
        if vnic.is_empty() {
            return Err(DataplaneError::NoQueues);
        }
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(io::Error::from)?;
        let wake = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(io::Error::from)?;
        epoll::add(
            &epoll,
            &wake,
            epoll::EventData::new_u64(TOKEN_WAKE),
            epoll::EventFlags::IN,
        )
        .map_err(io::Error::from)?;
        let mut nic_index = [u8::MAX; braid_core::MAX_NICS];
        for (i, n) in nics.iter().enumerate() {
            nic_index[usize::from(n.id.0)] = u8::try_from(i).expect("invariant: <= MAX_NICS");
        }
        let (control_tx, control) = mpsc::sync_channel(64);
        let mut me = Self {
            engine,
            nic_index,
            rss,
            nic_rx: RxBatch::new(config.batch, config.nic_slot_bytes, config.batch * 64),
            vnic_rx: RxBatch::new(config.batch, config.vnic_slot_bytes, config.batch * 64),
            scratch: vec![0u8; 65_535].into_boxed_slice(),
            epoll,
            stop: Arc::new(AtomicBool::new(false)),
            wake: Arc::new(wake),
            control_tx,
            control,
            snapshot: Arc::new(Mutex::new(None)),
            nics,
            vnic,
            tx_unqueued: 0,
            deliver_unqueued: 0,
            turns: 0,
            wait_budget: BACKPRESSURE_WAIT,
            steer: None,
            busy_poll: config.busy_poll,
            moved: 0,
            tunnels: tunnel::TunnelPorts::default(),
        };
        for i in 0..me.vnic.len() {
            me.register(TOKEN_VNIC + i as u64, PortRef::Vnic(i))?;
        }
        for i in 0..me.nics.len() {
            me.register(i as u64, PortRef::Nic(i))?;
        }
        me.publish(now());
        Ok(me)
    }

    /// Make this worker one of several, one per vNIC queue ([`steer`]): it must own exactly
    /// one queue, `steering.worker()`, and `rss` must spread over all the workers' queues.
    /// Call [`link_workers`] once every worker is built.
    ///
    /// # Errors
    /// [`DataplaneError::SteeringQueues`] if the worker owns more than one queue.
    pub fn with_steering(mut self, steering: Steering) -> Result<Self, DataplaneError> {
        if self.vnic.len() != 1 {
            return Err(DataplaneError::SteeringQueues(self.vnic.len()));
        }
        self.steer = Some(steering);
        self.publish(now());
        Ok(self)
    }

    /// A handle for other threads.
    #[must_use]
    pub fn handle(&self) -> DataplaneHandle {
        DataplaneHandle {
            stop: Arc::clone(&self.stop),
            wake: Arc::clone(&self.wake),
            control: self.control_tx.clone(),
            snapshot: Arc::clone(&self.snapshot),
        }
    }

    fn register(&self, token: u64, port: PortRef) -> io::Result<()> {
        let fd = match port {
            PortRef::Vnic(i) => self.vnic[i].fd(),
            PortRef::Nic(i) => self.nics[i].transport.fd(),
        };
        if let Some(fd) = fd {
            epoll::add(
                &self.epoll,
                fd,
                epoll::EventData::new_u64(token),
                epoll::EventFlags::IN,
            )?;
        }
        Ok(())
    }

    /// Run until [`DataplaneHandle::stop`]. Returns the engine (for a last look at its
    /// counters) and the ports, which the caller drops to close the devices.
    ///
    /// # Errors
    /// Only if epoll itself fails; port errors are counted and logged, never fatal.
    pub fn run(mut self) -> io::Result<Stopped> {
        // Made here, on the worker's thread: epoll events hold a raw pointer field, so they
        // cannot travel with the worker to its thread.
        let empty = epoll::Event {
            flags: epoll::EventFlags::empty(),
            data: epoll::EventData::new_u64(0),
        };
        let mut events = vec![empty; 64];
        let mut next_snapshot = now();
        let mut last_timers = now();
        let mut next_maintain = now() + MAINTAIN_INTERVAL;
        while !self.stop.load(Ordering::Acquire) {
            self.turns += 1;
            self.wait_budget = BACKPRESSURE_WAIT;
            self.read_steered();
            // Each batch is handled at the time it was read, not at the turn's start: the
            // pacer releases a link's next packet by that clock, and a turn can take a few
            // hundred µs under load.
            let drained = self.read_ports() & self.read_handed(now()) & self.read_tunnels(now());
            let t = now();
            // Timers run once every NIC has been read dry, or at least every
            // TIMERS_AT_LEAST so a flood on one NIC cannot stop them.
            if drained || t.saturating_duration_since(last_timers) >= TIMERS_AT_LEAST {
                self.engine.handle_timeout(t);
                last_timers = t;
            }
            self.drain(t);
            self.control(t);
            if t >= next_snapshot {
                self.publish(t);
                next_snapshot = t + SNAPSHOT_INTERVAL;
            }
            if t >= next_maintain {
                self.maintain();
                next_maintain = t + MAINTAIN_INTERVAL;
            }
            self.sleep(next_snapshot.min(next_maintain), &mut events)?;
        }
        let t = now();
        self.read_steered();
        self.drain(t);
        self.publish(t);
        Ok(Stopped {
            engine: self.engine,
            nics: self.nics,
            vnic: self.vnic,
        })
    }

    /// Read the vNIC queues and the NICs one batch at a time, in rounds: each round takes a
    /// batch from every vNIC queue (for the first [`BATCHES_PER_TURN`] rounds) and from every
    /// NIC not yet read dry, for at most [`RX_BATCHES_PER_TURN`] rounds. A packet waiting on
    /// one port therefore waits for at most one batch of each other port, not for a whole
    /// burst of them: a latency-critical reply on a NIC is not held up behind four vNIC
    /// batches of bulk, nor a request on the vNIC behind sixteen NIC batches.
    ///
    /// Returns `true` if every NIC was read dry: only then may the engine's timers run,
    /// because a datagram still unread in one NIC's socket is not late, however long the
    /// reorder buffer has waited for it (the worker, not the link, was slow).
    fn read_ports(&mut self) -> bool {
        // Bit i: NIC i may still have packets (at most MAX_NICS, so 64 bits are plenty).
        let mut nics_open: u64 = (1u64 << self.nics.len().min(63)) - 1;
        let mut vnic_open: u64 = (1u64 << self.vnic.len().min(63)) - 1;
        for round in 0..RX_BATCHES_PER_TURN {
            if round == BATCHES_PER_TURN {
                vnic_open = 0;
            }
            if nics_open == 0 && vnic_open == 0 {
                break;
            }
            for q in 0..self.vnic.len() {
                if vnic_open & (1 << q) != 0 && !self.read_vnic_batch(q) {
                    vnic_open &= !(1 << q);
                }
            }
            for i in 0..self.nics.len() {
                if nics_open & (1 << i) != 0 && !self.read_nic_batch(i) {
                    nics_open &= !(1 << i);
                }
            }
        }
        nics_open == 0
    }

    /// One batch from vNIC queue `q`, handed to the engine and sent. Returns `false` if the
    /// queue had nothing (or failed: logged).
    fn read_vnic_batch(&mut self, q: usize) -> bool {
        match self.vnic[q].recv_batch(&mut self.vnic_rx) {
            Ok(0) => false,
            Ok(_) => {
                let now = now();
                for pkt in self.vnic_rx.iter() {
                    // The verdict is counted by the engine (drops by reason).
                    let _ = self.engine.handle_tx(now, pkt);
                }
                // Drain between batches so the NIC queues never overflow.
                self.drain_transmit(now);
                true
            }
            Err(e) => {
                tracing::warn!(queue = q, error = %e, "vNIC read failed");
                false
            }
        }
    }

    /// One batch from NIC `i`, handed to the engine and delivered. Returns `false` if the NIC
    /// had nothing (or failed: logged).
    fn read_nic_batch(&mut self, i: usize) -> bool {
        let nic = &mut self.nics[i];
        match nic.transport.recv_batch(&mut self.nic_rx) {
            Ok(0) => false,
            Ok(_) => {
                let now = now();
                for k in 0..self.nic_rx.len() {
                    // In place: an encrypted packet is decrypted where it lies.
                    let Some(pkt) = self.nic_rx.get_mut(k) else {
                        continue;
                    };
                    // `per-nic` receive: another worker's session goes to it.
                    if let Some(steer) = self.steer.as_mut()
                        && let Some(owner) = steer.rx_owner(pkt)
                    {
                        steer.hand_off_rx(owner, nic.id, pkt);
                        continue;
                    }
                    self.engine.handle_rx_mut(now, nic.id, pkt);
                }
                if let Some(steer) = self.steer.as_mut() {
                    steer.wake_peers();
                }
                self.drain_deliver(now);
                true
            }
            Err(e) => {
                tracing::warn!(nic = %nic.name, error = %e, "NIC receive failed");
                false
            }
        }
    }

    /// Give this worker's engine the braid packets other workers read from their NICs for
    /// it (`per-nic` receive), and send their buffers home. Returns `true` if the lanes were
    /// emptied (as [`Dataplane::read_ports`] for the NICs, for the timers).
    fn read_handed(&mut self, now: Instant) -> bool {
        for _ in 0..steer::INBOX_TURNS {
            let Some(steer) = self.steer.as_mut() else {
                return true;
            };
            let Some(rx) = steer.rx.as_mut() else {
                return true;
            };
            let n = rx.mesh.recv_batch(&mut rx.inbox, steer::INBOX);
            if n == 0 {
                return true;
            }
            steer.stats.rx_handed_in += n as u64;
            // Taken out and put back (no allocation) so buffers can be released while
            // draining it in order.
            let mut inbox = std::mem::take(&mut rx.inbox);
            for mut b in inbox.drain(..) {
                let nic = b.meta.nic;
                self.engine.handle_rx_mut(now, nic, b.bytes_mut());
                steer.release_rx(b);
            }
            if let Some(rx) = steer.rx.as_mut() {
                rx.inbox = inbox;
            }
            self.drain_deliver(now);
        }
        false
    }

    fn drain(&mut self, now: Instant) {
        self.drain_transmit(now);
        self.drain_deliver(now);
        while let Some(ev) = self.engine.poll_event() {
            log_event(&self.nics, ev);
        }
    }

    fn drain_transmit(&mut self, now: Instant) {
        while let Some(t) = self.engine.poll_transmit(now, &mut self.scratch) {
            let Some(&i) = self.nic_index.get(usize::from(t.nic.0)) else {
                self.tx_unqueued += 1;
                continue;
            };
            let Some(nic) = self.nics.get_mut(usize::from(i)) else {
                self.tx_unqueued += 1;
                continue;
            };
            let pkt = &self.scratch[..t.len];
            if let Err(QueueError::Full) = nic.transport.queue(pkt)
                && !make_room(nic.transport.as_mut(), pkt, &mut self.wait_budget)
            {
                self.tx_unqueued += 1;
            }
        }
        for nic in &mut self.nics {
            if nic.transport.has_backlog()
                && let Err(e) = nic.transport.flush()
            {
                tracing::debug!(nic = %nic.name, error = %e, "send failed");
            }
        }
        self.drain_tunnel_transmit(now);
    }

    fn drain_deliver(&mut self, now: Instant) {
        if self.steer.is_some() {
            self.drain_deliver_steered(now);
        } else {
            while let Some(d) = self.engine.poll_deliver(now, &mut self.scratch) {
                let pkt = &self.scratch[..d.len];
                let q = if self.vnic.len() == 1 {
                    0
                } else {
                    IpSummary::parse_l3(pkt).map_or(0, |s| usize::from(self.rss.queue_for(&s)))
                };
                let last = self.vnic.len() - 1;
                let port = &mut self.vnic[q.min(last)];
                if let Err(QueueError::Full) = port.queue(pkt)
                    && !make_room(port.as_mut(), pkt, &mut self.wait_budget)
                {
                    self.deliver_unqueued += 1;
                }
            }
        }
        for q in &mut self.vnic {
            if q.has_backlog()
                && let Err(e) = q.flush()
            {
                tracing::debug!(error = %e, "vNIC write failed");
            }
        }
    }

    /// Deliver with several workers: the engine writes each packet into a pool buffer, which
    /// goes to this worker's queue or, by handle, to the worker whose queue RSS picks.
    ///
    /// A full lane keeps its packet in the worker's one-packet stash and stops the drain
    /// until the next turn (the rest waits in the engine, in order): writing it to another
    /// queue instead would overtake the packets of its flow still in the lane.
    fn drain_deliver_steered(&mut self, now: Instant) {
        let Some(steer) = self.steer.as_mut() else {
            return;
        };
        let own = steer.worker;
        if !steer.retry_stash() {
            steer.wake_peers();
            return;
        }
        loop {
            let mut buf = steer.pool.alloc();
            let out = match &mut buf {
                Some(b) => b.storage_mut(),
                None => &mut self.scratch[..],
            };
            let Some(d) = self.engine.poll_deliver(now, out) else {
                if let Some(b) = buf {
                    steer.release(b);
                }
                break;
            };
            // poll_deliver wrote at most the buffer's capacity, so set_len cannot fail; if it
            // did, the packet is counted as not delivered.
            let buf = match buf {
                Some(mut b) => {
                    if b.set_len(d.len).is_err() {
                        self.deliver_unqueued += 1;
                        steer.release(b);
                        continue;
                    }
                    let q = IpSummary::parse_l3(b.bytes())
                        .map_or(own, |s| usize::from(self.rss.queue_for(&s)));
                    if q == own || q >= steer.workers() {
                        Some(b)
                    } else if steer.hand_off(q, b) {
                        continue;
                    } else {
                        // Full lane: the packet is stashed; the owner is woken now.
                        break;
                    }
                }
                None => {
                    // Cannot happen while the pool covers every lane (see `steer`); if it
                    // does, the packet goes to this worker's queue (counted).
                    steer.stats.pool_exhausted += 1;
                    None
                }
            };
            let pkt = match &buf {
                Some(b) => b.bytes(),
                None => &self.scratch[..d.len],
            };
            let port = &mut self.vnic[0];
            if let Err(QueueError::Full) = port.queue(pkt)
                && !make_room(port.as_mut(), pkt, &mut self.wait_budget)
            {
                self.deliver_unqueued += 1;
            }
            if let Some(b) = buf {
                steer.release(b);
            }
        }
        steer.wake_peers();
    }

    /// Write the packets other workers handed over to this worker's vNIC queue, and send
    /// their buffers home.
    fn read_steered(&mut self) {
        let Some(steer) = self.steer.as_mut() else {
            return;
        };
        let port = &mut self.vnic[0];
        // Up to INBOX_TURNS inboxes a turn; what is left makes `sleep` return at once.
        for _ in 0..steer::INBOX_TURNS {
            let n = steer.mesh.recv_batch(&mut steer.inbox, steer::INBOX);
            if n == 0 {
                break;
            }
            steer.stats.steered_in += n as u64;
            // Taken out and put back (no allocation) so buffers can be released while
            // draining it in order.
            let mut inbox = std::mem::take(&mut steer.inbox);
            for b in inbox.drain(..) {
                if let Err(QueueError::Full) = port.queue(b.bytes())
                    && !make_room(port.as_mut(), b.bytes(), &mut self.wait_budget)
                {
                    self.deliver_unqueued += 1;
                }
                steer.release(b);
            }
            steer.inbox = inbox;
        }
        if port.has_backlog()
            && let Err(e) = port.flush()
        {
            tracing::debug!(error = %e, "vNIC write failed");
        }
    }

    fn control(&mut self, now: Instant) {
        while let Ok(msg) = self.control.try_recv() {
            match msg {
                Control::Apply(cmd, reply, log) => {
                    // The handle refuses it unsent; a worker never takes it this way either.
                    let result = if matches!(cmd, Command::ReplacePolicies(_)) {
                        Err(REPLACE_POLICIES_NEEDS_PORTS)
                    } else {
                        self.engine.apply(now, cmd.clone())
                    };
                    if log || result.is_err() {
                        tracing::info!(command = ?cmd, result = ?result, "control command");
                    } else {
                        tracing::debug!(command = ?cmd, "control command");
                    }
                    let _ = reply.try_send(result);
                }
                Control::ApplyWithTunnelPorts(cmd, ports, reply) => {
                    let ports_named: Vec<String> = ports.iter().map(|p| p.name.clone()).collect();
                    let result = self.replace_tunnel_ports(now, cmd, ports);
                    tracing::info!(ports = ?ports_named, result = ?result,
                        "policy replacement with tunnel ports");
                    let _ = reply.try_send(result);
                }
                Control::Flows(query, reply) => {
                    let _ = reply.try_send(self.engine.flows(now, &query));
                }
                Control::Flow(direction, id, reply) => {
                    let _ = reply.try_send(self.engine.flow(now, direction, id));
                }
            }
        }
    }

    fn maintain(&mut self) {
        for i in 0..self.nics.len() {
            if self.nics[i].transport.maintain() {
                tracing::info!(nic = %self.nics[i].name, "NIC transport reopened");
                if let Err(e) = self.register(i as u64, PortRef::Nic(i)) {
                    tracing::warn!(nic = %self.nics[i].name, error = %e, "cannot watch reopened NIC");
                }
            }
        }
    }

    fn sleep(&mut self, housekeeping: Instant, events: &mut [epoll::Event]) -> io::Result<()> {
        let t = now();
        let mut until = housekeeping;
        if let Some(timer) = self.engine.poll_timeout() {
            until = until.min(timer);
        }
        if self.steer.as_mut().is_some_and(Steering::has_work) {
            // Handles still in the lanes (more than one turn takes), or a packet waiting for
            // room in a lane: the eventfd was already read, so do not wait on it.
            return Ok(());
        }
        let backlog = self.nics.iter().any(|n| n.transport.has_backlog())
            || self.vnic.iter().any(|q| q.has_backlog())
            || self.tunnels.has_backlog();
        let wait = if backlog {
            // The kernel's queue was full: come back soon rather than waiting for EPOLLOUT.
            Duration::from_micros(50)
        } else {
            until.saturating_duration_since(t).min(MAX_SLEEP)
        };
        if wait.is_zero() {
            return Ok(());
        }
        let deadline = t + wait;
        // Busy polling: after a turn that moved packets, look again without sleeping for up
        // to `busy_poll` (never past the wait), so the next packet finds the thread awake.
        let moved = self.packets_moved();
        let active = moved != self.moved;
        self.moved = moved;
        if active && !self.busy_poll.is_zero() {
            let spin_until = now() + self.busy_poll.min(wait);
            let zero = rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            loop {
                match epoll::wait(&self.epoll, &mut *events, Some(&zero)) {
                    Ok(0) => {}
                    Ok(n) => {
                        self.drain_wake(&events[..n]);
                        return Ok(());
                    }
                    Err(rustix::io::Errno::INTR) => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
                if now() >= spin_until {
                    break;
                }
                std::hint::spin_loop();
            }
        }
        // Only what is left of the wait after the spin: a pacer slot or a timer due during
        // the spin is due now, not a whole `wait` later.
        let wait = deadline.saturating_duration_since(now());
        if wait.is_zero() {
            return Ok(());
        }
        let ts = rustix::time::Timespec {
            tv_sec: i64::try_from(wait.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(wait.subsec_nanos()),
        };
        match epoll::wait(&self.epoll, &mut *events, Some(&ts)) {
            Ok(n) => {
                self.drain_wake(&events[..n]);
                Ok(())
            }
            Err(rustix::io::Errno::INTR) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Reset the wake-up eventfd if it is among the ready descriptors.
    fn drain_wake(&self, ready: &[epoll::Event]) {
        if ready.iter().any(|ev| ev.data.u64() == TOKEN_WAKE) {
            let mut buf = [0u8; 8];
            let _ = rustix::io::read(&*self.wake, &mut buf);
        }
    }

    /// Packets received and sent by every port so far (to tell a busy turn from an idle one).
    fn packets_moved(&self) -> u64 {
        let sum = |t: TransportStats| t.rx_packets + t.tx_packets;
        self.nics
            .iter()
            .map(|n| sum(n.transport.stats()))
            .sum::<u64>()
            + self.vnic.iter().map(|q| sum(q.stats())).sum::<u64>()
            + self.tunnels.packets_moved()
    }

    fn publish(&mut self, now: Instant) {
        let engine = &self.engine;
        let nics = self
            .nics
            .iter()
            .map(|n| NicSnapshot {
                id: n.id,
                name: n.name.clone(),
                engine: engine.nic_stats(n.id).copied().unwrap_or_default(),
                link: engine.link(n.id).copied(),
                transport: n.transport.stats(),
                extra: {
                    let mut v = Vec::new();
                    n.transport.counters(&mut |k, c| v.push((k, c)));
                    v
                },
                open: n.transport.fd().is_some(),
                admin_up: engine.nic_admin_up(n.id).unwrap_or(true),
                flows: engine.controller().nic(n.id).map_or(0, |c| c.flows),
                qos: counters::nic_qos(engine, n.id),
            })
            .collect();
        let drops = DropReason::ALL
            .iter()
            .map(|r| (r.label(), engine.stats().drops.get(*r)))
            .collect();
        let snap = Snapshot {
            at: now,
            engine: engine.stats().clone(),
            nics,
            vnic_queues: self
                .vnic
                .iter()
                .map(|q| {
                    let mut v = Vec::new();
                    q.counters(&mut |k, c| v.push((k, c)));
                    (q.stats(), v)
                })
                .collect(),
            drops,
            reassembly: engine.reassembly_stats().clone(),
            flows: engine.flow_counts(),
            tx_unqueued: self.tx_unqueued,
            deliver_unqueued: self.deliver_unqueued,
            turns: self.turns,
            steering: self.steer.as_ref().map(|st| (st.worker, st.stats)),
            tunnels: self.tunnel_snapshots(),
            tunnel_ports: self.tunnels.snapshot(),
            tunnel_unqueued: self.tunnels.unqueued,
            rules: RulesSnapshot::of(engine),
            vnic_qos: counters::vnic_qos(engine),
        };
        *self
            .snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(snap);
    }
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane")
            .field("nics", &self.nics)
            .field("vnic_queues", &self.vnic.len())
            .field("turns", &self.turns)
            .finish_non_exhaustive()
    }
}

/// The port's send queue is full: send what it holds and queue `pkt` again. If the kernel
/// still refuses (its socket or device queue is full), wait for room, out of `budget` (the
/// turn's allowance, [`BACKPRESSURE_WAIT`]), before giving up: the worker stalls, the vNIC is
/// read later, and the applications' congestion control sees back-pressure, as from a full
/// qdisc, instead of a loss. The budget bounds how long one turn can stall, so probes are
/// still answered in time. Returns `false` if the packet was not queued (counted by the
/// port).
fn make_room(port: &mut dyn NicTransport, pkt: &[u8], budget: &mut Duration) -> bool {
    for attempt in 0..2 {
        if let Err(e) = port.flush() {
            tracing::debug!(error = %e, "send failed");
        }
        match port.queue(pkt) {
            Ok(()) => return true,
            Err(QueueError::Full) if attempt == 0 && !budget.is_zero() => {
                let Some(fd) = port.fd() else { return false };
                let mut fds = [rustix::event::PollFd::new(
                    &fd,
                    rustix::event::PollFlags::OUT,
                )];
                let wait = rustix::time::Timespec {
                    tv_sec: 0,
                    tv_nsec: i64::from(budget.subsec_nanos()),
                };
                let started = now();
                // A timeout or an interruption just means one more try.
                let _ = rustix::event::poll(&mut fds, Some(&wait));
                *budget = budget.saturating_sub(now().saturating_duration_since(started));
            }
            Err(_) => return false,
        }
    }
    false
}

/// Let the workers wake each other: give each worker the others' eventfds. Call once, after
/// [`Dataplane::with_steering`] on every worker and before they run.
pub fn link_workers(workers: &mut [Dataplane]) {
    let wakes: Vec<Arc<OwnedFd>> = workers.iter().map(|w| Arc::clone(&w.wake)).collect();
    for w in workers.iter_mut() {
        if let Some(steer) = w.steer.as_mut() {
            for (j, fd) in wakes.iter().enumerate() {
                if j != steer.worker
                    && let Some(slot) = steer.wakes.get_mut(j)
                {
                    *slot = Some(Arc::clone(fd));
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
enum PortRef {
    Vnic(usize),
    Nic(usize),
}

fn log_event(nics: &[NicPort], ev: EngineEvent) {
    let name = |id: NicId| {
        nics.iter()
            .find(|n| n.id == id)
            .map_or("?", |n| n.name.as_str())
    };
    match ev {
        // `at_ns` is the data path's clock (CLOCK_MONOTONIC): the moment the change was
        // decided, comparable with any other process's CLOCK_MONOTONIC on the host.
        EngineEvent::Link(e) => tracing::info!(
            nic = name(e.nic),
            from = ?e.from,
            to = ?e.to,
            at_ns = e.at.as_nanos(),
            "link state"
        ),
        EngineEvent::Controller(e) => tracing::info!(event = ?e, "flow controller"),
        _ => tracing::info!(event = ?ev, "engine event"),
    }
}

#[cfg(test)]
mod flows_tests;
#[cfg(test)]
mod tests;
