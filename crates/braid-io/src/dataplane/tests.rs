//! Steering between workers without threads: the hand-off, the stash that keeps a flow in
//! order when a lane is full, and the "more work waiting" signal that keeps a worker from
//! sleeping on a half-read lane.

use std::os::unix::net::UnixDatagram;

use braid_core::engine::{EngineConfig, NicSpec};
use braid_core::rss::ToeplitzKey;

use super::*;
use crate::channel::PacketBuf;
use crate::pipe::PipePort;

fn worker(st: Steering) -> (Dataplane, UnixDatagram) {
    worker_on_lane(st, 0)
}

fn pair() -> ((Dataplane, UnixDatagram), (Dataplane, UnixDatagram)) {
    let mut st = Steering::build(2, 2048, Some(2048)).expect("build");
    let s1 = st.pop().expect("two");
    let s0 = st.pop().expect("two");
    (worker(s0), worker(s1))
}

/// Packet `i`: 100 bytes that say `i`.
fn pkt(steer: &mut Steering, i: u32) -> PacketBuf {
    let mut b = steer.pool.alloc().expect("a buffer");
    let mut bytes = [0u8; 100];
    bytes[..4].copy_from_slice(&i.to_be_bytes());
    b.fill_from(&bytes).expect("fits");
    b
}

/// Everything the application side of a pipe has, as packet numbers.
fn received(app: &UnixDatagram) -> Vec<u32> {
    let mut out = Vec::new();
    let mut buf = [0u8; 200];
    while let Ok(n) = app.recv(&mut buf) {
        assert_eq!(n, 100);
        out.push(u32::from_be_bytes(buf[..4].try_into().expect("4 bytes")));
    }
    out
}

#[test]
fn a_worker_with_more_handles_than_one_turn_takes_does_not_sleep() {
    let ((mut w0, _app0), (mut w1, app1)) = pair();
    let s0 = w0.steer.as_mut().expect("steered");
    // More than one turn's worth (4 × 256), within the lane (1024) plus what w1 frees.
    let n = u32::try_from(steer::INBOX * steer::INBOX_TURNS).expect("small") - 24;
    for i in 0..n {
        let b = pkt(s0, i);
        assert!(s0.hand_off(1, b), "room in the lane");
    }
    let s1 = w1.steer.as_mut().expect("steered");
    assert!(s1.has_work(), "handles wait: sleep must not wait");
    w1.read_steered();
    assert!(!w1.steer.as_mut().expect("steered").has_work());
    assert_eq!(received(&app1), (0..n).collect::<Vec<_>>(), "all, in order");

    // A lane refilled beyond one turn: the first turn leaves work, which `has_work` reports.
    let s0 = w0.steer.as_mut().expect("steered");
    s0.pool.reclaim();
    for i in 0..1024 {
        let b = pkt(s0, i);
        assert!(s0.hand_off(1, b));
    }
    let s1 = w1.steer.as_mut().expect("steered");
    assert!(s1.has_work());
    w1.read_steered();
    assert_eq!(received(&app1).len(), 1024);
    assert!(!w1.steer.as_mut().expect("steered").has_work());
}

#[test]
fn a_full_lane_stashes_the_packet_and_nothing_overtakes_it() {
    let ((mut w0, _app0), (mut w1, app1)) = pair();
    let s0 = w0.steer.as_mut().expect("steered");
    let mut i = 0u32;
    // Fill the lane.
    loop {
        let b = pkt(s0, i);
        if !s0.hand_off(1, b) {
            break;
        }
        i += 1;
    }
    assert_eq!(i as usize, steer::LANE_CAPACITY);
    assert_eq!(s0.stats.lane_full, 1);
    assert!(s0.has_work(), "a stashed packet keeps the worker awake");
    // Still full: the stash stays, and must go before anything else.
    assert!(!s0.retry_stash());
    w1.read_steered();
    let s0 = w0.steer.as_mut().expect("steered");
    assert!(s0.retry_stash(), "room now");
    assert!(!s0.has_work());
    let b = pkt(s0, i + 1);
    assert!(s0.hand_off(1, b));
    w1.read_steered();
    let got = received(&app1);
    assert_eq!(got, (0..=i + 1).collect::<Vec<_>>(), "in order, none lost");
}

/// A worker whose engine is on `lane` (its packets carry it; it accepts only it).
fn worker_on_lane(st: Steering, lane: u8) -> (Dataplane, UnixDatagram) {
    let mut cfg = EngineConfig::new(vec![NicSpec::udp_ipv4(NicId(0), "n0", 1_000_000_000, 1500)]);
    cfg.lane = lane;
    let engine = Engine::new(cfg, now()).expect("engine");
    let (vnic, app) = PipePort::pair(9000, 4096).expect("pair");
    app.set_nonblocking(true).expect("nonblocking");
    let dp = Dataplane::new(
        engine,
        Vec::new(),
        vec![Box::new(vnic) as Box<dyn NicTransport>],
        Rss::new(ToeplitzKey::MICROSOFT, 2).expect("rss"),
        DataplaneConfig::default(),
    )
    .expect("dataplane")
    .with_steering(st)
    .expect("one queue");
    (dp, app)
}

/// A UDP/IPv4 packet of 28 + `payload` bytes from 10.0.0.1:`sport` to 10.0.0.2:9 (the
/// engine does not verify checksums).
fn udp_v4(sport: u16, payload: usize) -> Vec<u8> {
    let total = u16::try_from(28 + payload).expect("small");
    let mut p = vec![0u8; usize::from(total)];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&[10, 0, 0, 2]);
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&9u16.to_be_bytes());
    p[24..26].copy_from_slice(&(total - 20).to_be_bytes());
    for (i, b) in p[28..].iter_mut().enumerate() {
        *b = i as u8;
    }
    p
}

/// `per-nic` receive without threads: the reader of a NIC hands a packet of the other lane
/// (one fragment of a split datagram, the other fragment arriving at the owner itself) to
/// the worker whose engine owns the session; that engine reassembles it. Its own lane, an
/// unknown lane and a runt stay with the reader's engine; a full lane is a counted drop.
#[test]
fn per_nic_receive_hands_another_lanes_packets_to_their_engine() {
    let mut st = Steering::build(2, 9216, Some(2048)).expect("build");
    let s1 = st.pop().expect("two");
    let s0 = st.pop().expect("two");
    let (mut w0, app0) = worker_on_lane(s0, 0);
    let (mut w1, app1) = worker_on_lane(s1, 1);
    // The peer's worker 1 sends a datagram larger than the link: two fragments.
    let mut cfg = EngineConfig::new(vec![NicSpec::udp_ipv4(NicId(0), "n0", 1_000_000_000, 1500)]);
    cfg.lane = 1;
    let mut peer = Engine::new(cfg, now()).expect("peer");
    let t = now();
    let datagram = udp_v4(40_000, 2500);
    let _ = peer.handle_tx(t, &datagram);
    let mut wire = vec![0u8; 2048];
    let mut fragments = Vec::new();
    while let Some(tx) = peer.poll_transmit(t, &mut wire) {
        let view = braid_wire::BraidPacket::new_checked(&wire[..tx.len]).expect("braid");
        if view.packet_type() == Ok(braid_wire::PacketType::Data) {
            fragments.push(wire[..tx.len].to_vec());
        }
    }
    assert!(fragments.len() >= 2, "split: {}", fragments.len());
    // Worker 0 reads the first fragment and hands it over; worker 1 gets the rest itself.
    let s0 = w0.steer.as_mut().expect("steered");
    assert_eq!(s0.rx_owner(&fragments[0]), Some(1));
    s0.hand_off_rx(1, NicId(0), &fragments[0]);
    assert_eq!(s0.stats.rx_handed_out, 1);
    let s1 = w1.steer.as_mut().expect("steered");
    assert_eq!(s1.rx_owner(&fragments[1]), None, "its own lane");
    assert!(s1.has_work(), "a handed packet keeps the owner awake");
    for f in &mut fragments[1..] {
        w1.engine.handle_rx_mut(t, NicId(0), f);
    }
    assert!(w1.read_handed(t), "lanes emptied");
    w0.read_steered();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 9000];
    for app in [&app0, &app1] {
        while let Ok(n) = app.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
    }
    assert_eq!(got, vec![datagram], "reassembled once, byte-exact");
    assert_eq!(w1.steer.as_ref().expect("steered").stats.rx_handed_in, 1);
    assert_eq!(w1.engine.stats().drops.total(), 0);
    assert_eq!(w0.engine.stats().rx_delivered_count, 0);

    // Lanes no worker has, and runts, stay with the reader (its engine counts them).
    let s0 = w0.steer.as_mut().expect("steered");
    let mut lane5 = fragments[0].clone();
    braid_wire::BraidPacket::new_unchecked(&mut lane5[..]).set_lane(5);
    assert_eq!(s0.rx_owner(&lane5), None);
    assert_eq!(s0.rx_owner(&[0x10]), None);
    let mut lane0 = fragments[0].clone();
    braid_wire::BraidPacket::new_unchecked(&mut lane0[..]).set_lane(0);
    assert_eq!(s0.rx_owner(&lane0), None);
    // A full lane drops (counted) rather than stall the NIC's reader.
    for _ in 0..steer::LANE_CAPACITY {
        s0.hand_off_rx(1, NicId(0), &fragments[0]);
    }
    assert_eq!(s0.stats.rx_lane_full, 0);
    s0.hand_off_rx(1, NicId(0), &fragments[0]);
    assert_eq!(s0.stats.rx_lane_full, 1);
    s0.hand_off_rx(1, NicId(0), &[0u8; 4096]);
    assert_eq!(s0.stats.rx_too_big, 1);
    // The owner drains them (duplicates of a finished datagram: dropped by its engine) and
    // sends every buffer home.
    while !w1.read_handed(t) {}
    let s0 = w0.steer.as_mut().expect("steered");
    s0.rx.as_mut().expect("rx lanes").pool.reclaim();
    assert_eq!(s0.rx.as_ref().expect("rx lanes").pool.in_flight(), 0);
}

/// A tunnel packet the port refuses is counted once, by the port (`tx_drop_too_big`), not
/// also in `tunnel_unqueued`, which counts only packets of a tunnel without a port here.
/// Root: a tunnel port opens a raw socket (in a namespace of the test's own; nothing is sent,
/// every packet is refused before the kernel or has no port).
#[test]
fn a_refused_tunnel_packet_is_counted_once_by_its_port() {
    use std::net::{IpAddr, Ipv4Addr};

    use braid_core::engine::{ClassMatch, ClassPolicy, FlowClass, TunnelSpec};
    use braid_wire::tunnel::{Encap, GreEncap, InnerFormat, OuterIp};

    use crate::sys::netns::NetNs;
    use crate::tunnel::{TunnelKind, TunnelPort, TunnelPortConfig};

    assert!(
        rustix::process::geteuid().is_root(),
        "needs root: a tunnel port opens a raw socket"
    );
    let local = Ipv4Addr::new(127, 0, 0, 1);
    let gre = |name: &str, remote: Ipv4Addr| {
        TunnelSpec::new(
            name,
            NicId(0),
            Encap::Gre(GreEncap::new(
                OuterIp::V4 {
                    src: local,
                    dst: remote,
                },
                InnerFormat::Ip,
            )),
        )
    };
    let mut cfg = EngineConfig::new(vec![NicSpec::udp_ipv4(NicId(0), "n0", 1_000_000_000, 1500)]);
    cfg.tunnels = vec![
        gre("t0", Ipv4Addr::new(127, 0, 0, 2)),
        gre("t1", Ipv4Addr::new(127, 0, 0, 3)),
    ];
    for (port, tunnel) in [(40_000, 0), (40_001, 1)] {
        let mut class = FlowClass::new(
            &format!("to-t{tunnel}"),
            ClassMatch {
                protocol: Some(17),
                src_ports: Some((port, port)),
                ..ClassMatch::default()
            },
            ClassPolicy::Pin,
        );
        class.tunnel = Some(tunnel);
        cfg.classes.push(class);
    }
    let engine = Engine::new(cfg, now()).expect("engine");
    let ns = NetNs::create(&format!("braid-counters-{}", std::process::id())).expect("netns");
    // Tunnel 0's port takes outer packets of at most 64 bytes; tunnel 1 has no port.
    let port = ns.run(|| {
        let mut c = TunnelPortConfig::new(TunnelKind::Gre, IpAddr::V4(local), None);
        c.receive = false;
        c.max_tx_bytes = 64;
        TunnelPort::open(c).expect("open the tunnel port")
    });
    let (vnic, _app) = PipePort::pair(9000, 4096).expect("pair");
    let mut dp = Dataplane::new(
        engine,
        Vec::new(),
        vec![Box::new(vnic) as Box<dyn NicTransport>],
        Rss::new(ToeplitzKey::MICROSOFT, 1).expect("rss"),
        DataplaneConfig::default(),
    )
    .expect("dataplane")
    .with_tunnels(vec![TunnelPortEntry {
        name: "gre 127.0.0.1".into(),
        port,
        tunnels: vec![0],
    }])
    .expect("tunnel ports");
    let t = now();
    for sport in [40_000, 40_000, 40_001] {
        assert!(matches!(
            dp.engine.handle_tx(t, &udp_v4(sport, 100)),
            braid_core::engine::TxVerdict::Queued
        ));
    }
    dp.drain_tunnel_transmit(t);
    dp.publish(t);
    let snap = dp
        .snapshot
        .lock()
        .expect("lock")
        .clone()
        .expect("published");
    assert_eq!(
        snap.tunnel_ports[0].transport.tx_drop_too_big, 2,
        "the port counted them"
    );
    assert_eq!(snap.tunnel_ports[0].transport.tx_packets, 0);
    assert_eq!(
        snap.tunnel_unqueued, 1,
        "only tunnel 1's packet, which has no port"
    );
    drop(dp);
    drop(ns);
}

/// The snapshot carries the rule counters (names shared with the engine's table, one pair
/// per rule) and, per NIC and configured QoS class, the scheduler's counters and queue
/// depth, plus the vNIC meters' colours.
#[test]
fn the_snapshot_has_rule_hits_and_qos_counters_per_nic_and_class() {
    use braid_core::engine::{RuleHits, TxVerdict};
    use braid_core::qos::ClassId;
    use braid_core::rules::{Action, PortRange, Rule, RuleMatch};

    let mut cfg = EngineConfig::new(vec![NicSpec::udp_ipv4(NicId(0), "n0", 1_000_000_000, 1500)]);
    let from = |port| RuleMatch {
        protocol: Some(17),
        src_ports: Some(PortRange::single(port)),
        ..RuleMatch::ANY
    };
    cfg.tx_rules = vec![
        Rule::new("mark", 1, from(40_000), &[Action::SetDscp(10)]),
        Rule::new("shed", 1, from(40_001), &[Action::Drop]),
    ];
    let engine = Engine::new(cfg, now()).expect("engine");
    let (nic, _peer) = PipePort::pair(1500, 4096).expect("pair");
    let (vnic, _app) = PipePort::pair(9000, 4096).expect("pair");
    let mut dp = Dataplane::new(
        engine,
        vec![NicPort {
            id: NicId(0),
            name: "n0".into(),
            transport: Box::new(nic),
        }],
        vec![Box::new(vnic) as Box<dyn NicTransport>],
        Rss::new(ToeplitzKey::MICROSOFT, 1).expect("rss"),
        DataplaneConfig::default(),
    )
    .expect("dataplane");
    let t = now();
    for _ in 0..3 {
        assert_eq!(
            dp.engine.handle_tx(t, &udp_v4(40_000, 100)),
            TxVerdict::Queued
        );
    }
    assert_eq!(
        dp.engine.handle_tx(t, &udp_v4(40_001, 50)),
        TxVerdict::Drop(DropReason::RuleDrop)
    );
    dp.publish(t);
    let snap = dp
        .snapshot
        .lock()
        .expect("lock")
        .clone()
        .expect("published");
    assert_eq!(snap.rules.tx.names[..], ["mark", "shed"]);
    assert_eq!(
        snap.rules.tx.hits,
        [
            RuleHits {
                packets_count: 3,
                bytes_count: 3 * 128
            },
            RuleHits {
                packets_count: 1,
                bytes_count: 78
            }
        ]
    );
    assert!(snap.rules.rx.hits.is_empty());
    // The default QoS: class 0 (strict) and 1 (the rest), on the one NIC and the vNIC.
    let classes: Vec<ClassId> = snap.nics[0].qos.iter().map(|c| c.class).collect();
    assert_eq!(classes, [ClassId(0), ClassId(1)]);
    let bulk = snap.nics[0].qos[1];
    assert_eq!(bulk.stats.enqueued_packets_count, 3);
    assert_eq!(bulk.stats.green_count, 3);
    assert_eq!(
        bulk.queued_packets as u64 + bulk.stats.dequeued_packets_count,
        3
    );
    assert_eq!(snap.vnic_qos.len(), 2);
}

/// A worker with no NIC (its engine has one configured) and one vNIC queue, and the engine
/// command that gives it one TX rule ("mark": UDP from 40 000 → DSCP 10) with its other
/// policies unchanged.
fn policy_worker() -> (Dataplane, UnixDatagram, Command) {
    use braid_core::engine::Policies;
    use braid_core::rules::{Action, PortRange, Rule, RuleMatch};

    let cfg = EngineConfig::new(vec![NicSpec::udp_ipv4(NicId(0), "n0", 1_000_000_000, 1500)]);
    let mut next = cfg.clone();
    next.tx_rules = vec![Rule::new(
        "mark",
        1,
        RuleMatch {
            protocol: Some(17),
            src_ports: Some(PortRange::single(40_000)),
            ..RuleMatch::ANY
        },
        &[Action::SetDscp(10)],
    )];
    let cmd = Command::ReplacePolicies(Box::new(Policies::of(&next).expect("policies")));
    let engine = Engine::new(cfg, now()).expect("engine");
    let (vnic, app) = PipePort::pair(9000, 4096).expect("pair");
    let dp = Dataplane::new(
        engine,
        Vec::new(),
        vec![Box::new(vnic) as Box<dyn NicTransport>],
        Rss::new(ToeplitzKey::MICROSOFT, 1).expect("rss"),
        DataplaneConfig::default(),
    )
    .expect("dataplane");
    (dp, app, cmd)
}

/// A worker that takes more than a second to get to a policy replacement (busy, or not
/// scheduled) still answers it, and its caller waits for that answer instead of calling it
/// "no answer" while the command sits in the worker's queue: a caller that then rolled the
/// other workers back would leave this one on the new set once it applied it.
#[test]
fn a_policy_replacement_waits_for_a_slow_worker_and_gets_its_answer() {
    let (dp, _app, cmd) = policy_worker();
    let handle = dp.handle();
    let worker = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        dp.run().expect("run")
    });
    let started = std::time::Instant::now();
    let answer = handle.apply_with_tunnel_ports(cmd, Vec::new());
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "it waited"
    );
    assert_eq!(
        answer,
        Some(Ok(())),
        "the answer of a worker slower than 1 s"
    );
    handle.stop();
    let stopped = worker.join().expect("worker");
    assert_eq!(
        stopped.engine.config().tx_rules.len(),
        1,
        "the new set is in force"
    );
}

/// The wait ends, with `None`, when the worker's thread ends without taking the command
/// (it dropped its queue with the command in it): the command was not applied.
#[test]
fn a_policy_replacement_to_a_worker_that_ends_is_not_applied_and_answered_none() {
    let (dp, _app, cmd) = policy_worker();
    let handle = dp.handle();
    let worker = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1200));
        drop(dp);
    });
    let started = std::time::Instant::now();
    assert_eq!(handle.apply_with_tunnel_ports(cmd, Vec::new()), None);
    assert!(
        started.elapsed() >= Duration::from_millis(1100),
        "it waited"
    );
    worker.join().expect("worker");
}

/// `Command::ReplacePolicies` through the plain `apply` path is refused, saying which path
/// to use: it would change the engine's tunnel table without the worker's map of tunnels to
/// ports (a tunnel's packets would leave through the socket of the one that had its index).
/// The handle refuses it unsent; a worker that gets it anyway refuses it too.
#[test]
fn a_policy_replacement_is_refused_through_the_plain_apply_path() {
    let (mut dp, _app, cmd) = policy_worker();
    let handle = dp.handle();
    let answer = handle.apply(cmd.clone());
    let Some(Err(e @ CommandError::NotAccepted(_))) = answer else {
        panic!("not refused: {answer:?}")
    };
    assert!(
        e.to_string().contains("apply_with_tunnel_ports"),
        "names the path to use: {e}"
    );
    assert_eq!(handle.apply_quiet(cmd.clone()), Some(Err(e)));
    // Sent to the worker's queue directly, as an older handle would.
    let (tx, rx) = mpsc::sync_channel(1);
    dp.control_tx
        .try_send(Control::Apply(cmd, tx, true))
        .expect("queued");
    dp.control(now());
    assert_eq!(rx.try_recv().expect("answered"), Err(e));
    assert!(dp.engine.config().tx_rules.is_empty(), "nothing changed");
}

/// A transport that notes every non-empty batch it gives, by port name, in a log shared by
/// the ports of one worker: the order in which the worker reads them.
#[derive(Debug)]
struct Logged {
    name: &'static str,
    inner: PipePort,
    log: Arc<std::sync::Mutex<Vec<(&'static str, usize)>>>,
}

impl NicTransport for Logged {
    fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.inner.fd()
    }
    fn recv_batch(&mut self, batch: &mut RxBatch) -> io::Result<usize> {
        let n = self.inner.recv_batch(batch)?;
        if n > 0 {
            self.log.lock().expect("log").push((self.name, n));
        }
        Ok(n)
    }
    fn queue(&mut self, packet: &[u8]) -> Result<(), QueueError> {
        self.inner.queue(packet)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
    fn has_backlog(&self) -> bool {
        self.inner.has_backlog()
    }
    fn mtu(&self) -> usize {
        self.inner.mtu()
    }
    fn stats(&self) -> TransportStats {
        self.inner.stats()
    }
    fn maintain(&mut self) -> bool {
        self.inner.maintain()
    }
}

/// One turn reads its ports a batch at a time, in rounds, not one port for a burst of
/// batches: a packet on the NIC waits behind at most one vNIC batch (here: bulk from the
/// application), the vNIC stops after its four batches, and the NIC goes on for its sixteen.
#[test]
fn a_turn_reads_the_vnic_and_the_nics_a_batch_at_a_time_in_rounds() {
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let engine = Engine::new(
        EngineConfig::new(vec![NicSpec::udp_ipv4(NicId(0), "n0", 1_000_000_000, 1500)]),
        now(),
    )
    .expect("engine");
    let (vnic, app) = PipePort::pair(1500, 4096).expect("vnic");
    let (nic, mut wire) = PipePort::connected(1500, 4096).expect("nic");
    // Small batches keep the sockets' queues short.
    let config = DataplaneConfig {
        batch: 8,
        ..DataplaneConfig::default()
    };
    // The application has 6 batches of bulk for the vNIC; the peer 20 batches for the NIC
    // (runts: counted drops, which is all this test needs of them).
    for _ in 0..6 * config.batch {
        app.send(&udp_v4(5000, 100)).expect("app send");
    }
    for _ in 0..20 * config.batch {
        wire.queue(&[0u8; 8]).expect("queue");
        wire.flush().expect("wire send");
    }
    let logged = |name, inner| {
        Box::new(Logged {
            name,
            inner,
            log: Arc::clone(&log),
        })
    };
    let mut w = Dataplane::new(
        engine,
        vec![NicPort {
            id: NicId(0),
            name: "n0".into(),
            transport: logged("nic", nic),
        }],
        vec![logged("vnic", vnic) as Box<dyn NicTransport>],
        Rss::new(ToeplitzKey::MICROSOFT, 1).expect("rss"),
        config,
    )
    .expect("dataplane");
    let order = |log: &std::sync::Mutex<Vec<(&'static str, usize)>>| {
        let mut l = log.lock().expect("log");
        let order: Vec<&str> = l.iter().map(|e| e.0).collect();
        l.clear();
        order
    };
    assert!(!w.read_ports(), "the NIC has more than one turn's worth");
    let mut expected = Vec::new();
    for round in 0..RX_BATCHES_PER_TURN {
        if round < BATCHES_PER_TURN {
            expected.push("vnic");
        }
        expected.push("nic");
    }
    assert_eq!(order(&log), expected);
    // The next turn: the rest of both (2 and 4 batches), and the NIC is read dry.
    assert!(w.read_ports(), "the NIC is dry");
    assert_eq!(order(&log), ["vnic", "nic", "vnic", "nic", "nic", "nic"]);
}
