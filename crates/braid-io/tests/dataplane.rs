//! The data-path worker end to end without root: two workers, each with its own engine, joined
//! by three links made of real UDP transports on loopback, and a test thread playing the
//! application on each side (a Unix datagram socket pair standing in for the TUN device).
//!
//! What it proves: the worker's loop moves every packet from one "vNIC" to the other, whole
//! and in order, split across the links when it is larger than their MTU; control commands
//! reach the engine between batches; `stop` ends the worker and it returns its engine.

#[cfg(test)]
mod tests {

    use std::net::{Ipv4Addr, SocketAddr};
    use std::os::unix::net::UnixDatagram;
    use std::thread;
    use std::time::{Duration, Instant};

    use braid_core::NicId;
    use braid_core::auth::{AuthConfig, Role};
    use braid_core::engine::{Command, Engine, EngineConfig, NicSpec};
    use braid_core::health::LinkState;
    use braid_core::rss::{Rss, ToeplitzKey};
    use braid_io::dataplane::{
        Dataplane, DataplaneConfig, DataplaneHandle, NicPort, Steering, Stopped, link_workers, now,
    };
    use braid_io::pipe::PipePort;
    use braid_io::transport::NicTransport;
    use braid_io::udp::{UdpConfig, UdpError, UdpTransport};

    /// The tests run one at a time: each runs several busy workers, and two cores shared by
    /// more of them than that starve the probes (links flap) and the reorder holds.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    const LINKS: u8 = 3;
    const LINK_MTU: u32 = 1500;
    const HOLD_MS: u64 = 20;
    const LINK_BPS: u64 = 500_000_000;

    fn engine(role: Role) -> Engine {
        engine_with_key(role, [7; 32])
    }

    fn engine_with_key(role: Role, key: [u8; 32]) -> Engine {
        engine_on_lane(role, key, 0)
    }

    /// The engine of worker `lane` (each worker's packets carry its lane, as in the daemon).
    fn engine_on_lane(role: Role, key: [u8; 32], lane: u8) -> Engine {
        let nics = (0..LINKS)
            .map(|i| NicSpec::udp_ipv4(NicId(i), &format!("link{i}"), LINK_BPS, LINK_MTU))
            .collect();
        let mut cfg = EngineConfig::new(nics);
        cfg.auth = Some(AuthConfig::new(key, role));
        // Three busy threads share two cores here: a worker can be preempted for milliseconds
        // between flushing one link and the next, which the reorder hold must cover.
        cfg.reorder.min_hold = Duration::from_millis(HOLD_MS);
        cfg.lane = lane;
        Engine::new(cfg, now()).expect("valid config")
    }

    struct Side {
        handle: DataplaneHandle,
        thread: thread::JoinHandle<std::io::Result<Stopped>>,
        app: UnixDatagram,
    }

    /// The links as the worker's NIC ports: link i is NIC i.
    fn ports(links: Vec<UdpTransport>) -> Vec<NicPort> {
        links
            .into_iter()
            .enumerate()
            .map(|(i, p)| NicPort {
                id: NicId(u8::try_from(i).expect("few links")),
                name: format!("link{i}"),
                transport: Box::new(p) as Box<dyn NicTransport>,
            })
            .collect()
    }

    fn start(role: Role, links: Vec<UdpTransport>) -> Side {
        let (vnic, app) = PipePort::pair(9000, 256).expect("socket pair");
        let nics = ports(links);
        let vnic: Vec<Box<dyn NicTransport>> = vec![Box::new(vnic)];
        let dp = Dataplane::new(
            engine(role),
            nics,
            vnic,
            Rss::new(ToeplitzKey::MICROSOFT, 1).expect("rss"),
            DataplaneConfig::default(),
        )
        .expect("dataplane");
        let handle = dp.handle();
        let thread = thread::spawn(move || dp.run());
        Side {
            handle,
            thread,
            app,
        }
    }

    fn pair() -> (Side, Side) {
        let mut a_links = Vec::new();
        let mut b_links = Vec::new();
        for _ in 0..LINKS {
            let (a, b) = link();
            a_links.push(a);
            b_links.push(b);
        }
        (start(Role::A, a_links), start(Role::B, b_links))
    }

    /// A loopback address with a port that was free a moment ago.
    fn free_port() -> SocketAddr {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.local_addr().expect("addr")
    }

    /// One link: two UDP transports on loopback, each the other's peer. A port from
    /// [`free_port`] can be taken by another process before it is bound again: on
    /// `AddrInUse` the link is tried again on new ports (a few times).
    fn link() -> (UdpTransport, UdpTransport) {
        let open = |local: SocketAddr, peer: SocketAddr| {
            UdpTransport::open(UdpConfig::new(local, peer, LINK_MTU as usize - 28))
        };
        for _ in 0..10 {
            let (pa, pb) = (free_port(), free_port());
            match (open(pa, pb), open(pb, pa)) {
                (Ok(a), Ok(b)) => return (a, b),
                (Err(UdpError::AddrInUse { .. }), _) | (_, Err(UdpError::AddrInUse { .. })) => {}
                (a, b) => panic!("udp on loopback: a {:?}, b {:?}", a.err(), b.err()),
            }
        }
        panic!("no free pair of loopback ports in 10 tries");
    }

    /// A UDP/IPv4 packet of `len` bytes whose payload starts with `seq` and is filled from it.
    fn packet(seq: u32, len: usize) -> Vec<u8> {
        packet_from(seq, len, 40_000)
    }

    /// As [`packet`], from source port `sport` (another flow).
    fn packet_from(seq: u32, len: usize, sport: u16) -> Vec<u8> {
        let mut p = vec![0u8; len];
        for (i, b) in p.iter_mut().enumerate().skip(28) {
            *b = (seq as usize * 31 + i) as u8;
        }
        p[28..32].copy_from_slice(&seq.to_be_bytes());
        braid_wire::ip::emit_udp_ipv4(
            &mut p,
            Ipv4Addr::new(10, 99, 0, 1),
            Ipv4Addr::new(10, 99, 0, 2),
            sport,
            9_000,
            seq as u16,
        )
        .expect("fits");
        p
    }

    /// Until link health has heard the peer on every link, and kept hearing it for 300 ms
    /// (the flow controller admits flows only onto links that are up). A link starts Up
    /// before its first probe, and a side that starts before its peer, or is starved at
    /// start, sees its links go down once; a flow that arrives then is refused for 100 ms.
    fn wait_links_up(side: &Side) {
        let deadline = Instant::now() + Duration::from_secs(10);
        // (probes answered, down events) per link when last seen all Up.
        let mut stable_since: Option<(Instant, Vec<u64>)> = None;
        loop {
            let snap = side.handle.snapshot();
            let state = snap.as_ref().and_then(|s| {
                s.nics
                    .iter()
                    .map(|n| {
                        n.link
                            .filter(|l| l.state == LinkState::Up && !l.srtt.is_zero())
                            .map(|l| l.down_events)
                    })
                    .collect::<Option<Vec<u64>>>()
            });
            match (state, &stable_since) {
                (Some(downs), Some((since, seen))) if downs == *seen => {
                    if since.elapsed() >= Duration::from_millis(300) {
                        return;
                    }
                }
                (Some(downs), _) => stable_since = Some((Instant::now(), downs)),
                (None, _) => stable_since = None,
            }
            assert!(Instant::now() < deadline, "links not up within 10 s");
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(side: Side) -> Stopped {
        side.handle.stop();
        side.thread
            .join()
            .expect("worker did not panic")
            .expect("worker ran")
    }

    #[test]
    fn packets_cross_whole_and_in_order_split_when_large() {
        let _serial = serial();
        let (a, b) = pair();
        wait_links_up(&a);
        wait_links_up(&b);
        const N: u32 = 3000;
        // Mixed sizes: most fit one link, every 10th is a jumbo that must be split.
        let size = |seq: u32| {
            if seq.is_multiple_of(10) {
                9000
            } else {
                200 + (seq as usize * 7) % 1200
            }
        };
        let app_a = a.app.try_clone().expect("clone");
        let writer = thread::spawn(move || {
            for seq in 0..N {
                app_a.send(&packet(seq, size(seq))).expect("send to worker");
                if seq % 64 == 63 {
                    // About 560 Mbit/s offered, well under the links' 1.5 Gbit/s.
                    thread::sleep(Duration::from_millis(2));
                }
            }
        });
        b.app
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = vec![0u8; 65_536];
        let mut next = 0u32;
        let mut mismatch = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        while next < N && Instant::now() < deadline {
            let n = b.app.recv(&mut buf).expect("a packet within 5 s");
            let want = packet(next, size(next));
            if buf[..n] != want[..] {
                let got = buf
                    .get(28..32)
                    .map(|s| u32::from_be_bytes(s.try_into().unwrap()));
                mismatch = Some(format!(
                    "packet {next} ({} bytes) differs: got {n} bytes, seq {got:?}",
                    want.len()
                ));
                break;
            }
            next += 1;
        }
        writer.join().expect("writer");
        let snap = a.handle.snapshot().expect("published");
        assert!(snap.turns > 0);
        let sa = stop(a);
        let sb = stop(b);
        if let Some(m) = mismatch {
            let drops = |e: &Engine| {
                braid_core::DropReason::ALL
                    .iter()
                    .map(|r| (r.label(), e.stats().drops.get(*r)))
                    .filter(|d| d.1 > 0)
                    .collect::<Vec<_>>()
            };
            panic!(
                "{m}\na drops {:?}\nb drops {:?} gaps {} reordered {} max hold {} ns",
                drops(&sa.engine),
                drops(&sb.engine),
                sb.engine.stats().rx_gap_seqs_count,
                sb.engine.stats().rx_reordered_count,
                sb.engine.stats().rx_max_hold_ns
            );
        }
        assert_eq!(next, N, "all packets delivered");
        let ea = sa.engine.stats();
        assert_eq!(ea.tx_packets_count, u64::from(N));
        // Every jumbo was cut into fragments (over several links, or over one when the others
        // were busier) and reassembled.
        assert_eq!(
            sb.engine.reassembly_stats().datagrams_completed,
            u64::from(N / 10)
        );
        assert!(ea.tx_split_count > 0);
        let used = (0..LINKS)
            .filter(|i| ea.nics[usize::from(*i)].tx_payload_bytes_count > 0)
            .count();
        assert!(used >= 2, "striped over several links, used {used}");
        assert_eq!(sb.engine.stats().rx_delivered_count, u64::from(N));
        assert_eq!(
            sb.engine.stats().drops.total(),
            0,
            "{:?}",
            sb.engine.stats().drops
        );
    }

    #[test]
    fn commands_reach_the_engine_and_stop_returns() {
        let _serial = serial();
        let (a, b) = pair();
        assert_eq!(
            a.handle.apply(Command::SetNicCapacity {
                nic: NicId(1),
                capacity_bps: 50_000_000
            }),
            Some(Ok(()))
        );
        assert!(matches!(
            a.handle.apply(Command::SetNicAdmin {
                nic: NicId(9),
                up: false
            }),
            Some(Err(_))
        ));
        let sa = stop(a);
        let nic1 = sa.engine.controller().nic(NicId(1)).expect("nic 1");
        assert_eq!(
            nic1.config.capacity_bps, 50_000_000,
            "the command was applied"
        );
        // A stopped worker no longer answers.
        let handle = b.handle.clone();
        let _ = stop(b);
        assert_eq!(
            handle.apply(Command::SetNicAdmin {
                nic: NicId(0),
                up: true
            }),
            None
        );
    }

    /// Two workers per side, one per vNIC queue, as the daemon runs them with
    /// `vnic.queues = 2`: worker k of one side talks only to worker k of the other (its own
    /// ports and key), and a delivered packet goes to the worker whose queue RSS picks,
    /// through the channel.
    #[test]
    fn two_workers_per_side_steer_deliveries_to_the_rss_queue() {
        two_workers_per_side(false);
    }

    /// As above with `per-nic` receive (`daemon.receive = "per-nic"`): NIC n is read by
    /// worker n mod 2 only, and a braid packet of the other worker's session (its lane) —
    /// data fragments and probes alike — reaches that worker's engine through the channel.
    #[test]
    fn one_reader_per_nic_hands_packets_to_the_session_owner() {
        two_workers_per_side(true);
    }

    /// The links of both sides, `[side][worker][nic]`. Per worker (`per_nic` false): worker
    /// k's socket on NIC n talks to the peer's worker k. Per NIC: every worker sends NIC n's
    /// traffic to the peer's reader of NIC n (worker n mod 2), which accepts any port.
    fn worker_links(workers: usize, per_nic: bool) -> [Vec<Vec<UdpTransport>>; 2] {
        'attempt: for _ in 0..10 {
            let ports: Vec<Vec<Vec<SocketAddr>>> = (0..2)
                .map(|_| {
                    (0..workers)
                        .map(|_| (0..LINKS).map(|_| free_port()).collect())
                        .collect()
                })
                .collect();
            let mut out: [Vec<Vec<UdpTransport>>; 2] = [Vec::new(), Vec::new()];
            for (side, links) in out.iter_mut().enumerate() {
                for k in 0..workers {
                    let mut nics = Vec::new();
                    for (n, &local) in ports[side][k].iter().enumerate() {
                        let reader = n % workers;
                        let peer_worker = if per_nic { reader } else { k };
                        let mut cfg = UdpConfig::new(
                            local,
                            ports[1 - side][peer_worker][n],
                            LINK_MTU as usize - 28,
                        );
                        if per_nic && k == reader {
                            cfg.peer_ports = Some(1..=u16::MAX);
                        }
                        match UdpTransport::open(cfg) {
                            Ok(t) => nics.push(t),
                            Err(UdpError::AddrInUse { .. }) => continue 'attempt,
                            Err(e) => panic!("udp on loopback: {e}"),
                        }
                    }
                    links.push(nics);
                }
            }
            return out;
        }
        panic!("no free set of loopback ports in 10 tries");
    }

    fn two_workers_per_side(per_nic: bool) {
        let _serial = serial();
        const WORKERS: usize = 2;
        let rss = Rss::new(ToeplitzKey::MICROSOFT, WORKERS as u16).expect("rss");
        // One flow (source port) that RSS puts on each queue.
        let queue_of = |sport: u16| {
            let p = packet_from(0, 100, sport);
            let s = braid_wire::IpSummary::parse_l3(&p).expect("parses");
            usize::from(rss.queue_for(&s))
        };
        let sports: Vec<u16> = (0..WORKERS)
            .map(|q| {
                (40_000u16..41_000)
                    .find(|p| queue_of(*p) == q)
                    .expect("a port for every queue")
            })
            .collect();

        let mut sides: Vec<Vec<Side>> = Vec::new();
        let mut built = Vec::new();
        let links = worker_links(WORKERS, per_nic);
        for (role, side_links) in [Role::A, Role::B].into_iter().zip(links) {
            let rx_bytes = per_nic.then_some(LINK_MTU as usize);
            let steering = Steering::build(WORKERS, 9216, rx_bytes).expect("steering");
            let mut workers = Vec::new();
            let mut apps = Vec::new();
            for (k, (nic_links, st)) in side_links.into_iter().zip(steering).enumerate() {
                let (vnic, app) = PipePort::pair(9000, 256).expect("socket pair");
                let nics = ports(nic_links);
                // Each worker pair has its own key, as the daemon derives them.
                let key = [7 + u8::try_from(k).expect("few workers"); 32];
                let lane = u8::try_from(k).expect("few workers");
                let dp = Dataplane::new(
                    engine_on_lane(role, key, lane),
                    nics,
                    vec![Box::new(vnic) as Box<dyn NicTransport>],
                    rss.clone(),
                    DataplaneConfig::default(),
                )
                .expect("dataplane")
                .with_steering(st)
                .expect("one queue");
                workers.push(dp);
                apps.push(app);
            }
            link_workers(&mut workers);
            built.push((workers, apps));
        }
        // Every worker of both sides starts only once all are built: a side that runs alone
        // for longer than the failure detection (30 ms) sees its links go down, and the
        // flow controller then refuses flows for a while after they come back.
        for (workers, apps) in built {
            sides.push(
                workers
                    .into_iter()
                    .zip(apps)
                    .map(|(dp, app)| {
                        let handle = dp.handle();
                        Side {
                            handle,
                            thread: thread::spawn(move || dp.run()),
                            app,
                        }
                    })
                    .collect(),
            );
        }
        let b_side = sides.pop().expect("b");
        let a_side = sides.pop().expect("a");
        for s in a_side.iter().chain(&b_side) {
            wait_links_up(s);
        }

        // Every packet of both flows enters on a's queue 0 (the kernel's choice, not RSS).
        const N: u32 = 1000;
        let size = |seq: u32| {
            if seq.is_multiple_of(10) {
                4000
            } else {
                200 + (seq as usize * 7) % 1200
            }
        };
        let app_a = a_side[0].app.try_clone().expect("clone");
        let flows = sports.clone();
        let writer = thread::spawn(move || {
            for seq in 0..N {
                for sport in &flows {
                    app_a
                        .send(&packet_from(seq, size(seq), *sport))
                        .expect("send to worker");
                }
                if seq % 32 == 31 {
                    thread::sleep(Duration::from_millis(2));
                }
            }
        });
        // On b, flow q must come out of queue q, whole and in order.
        let mut buf = vec![0u8; 65_536];
        for (q, sport) in sports.iter().enumerate() {
            let app = &b_side[q].app;
            app.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            for seq in 0..N {
                let n = app.recv(&mut buf).unwrap_or_else(|e| {
                    panic!("queue {q}: packet {seq} of flow {sport} not delivered: {e}")
                });
                assert_eq!(
                    buf[..n],
                    packet_from(seq, size(seq), *sport)[..],
                    "queue {q}: packet {seq} of flow {sport}"
                );
            }
        }
        writer.join().expect("writer");
        // Nothing else arrived on either queue.
        for s in &b_side {
            s.app.set_nonblocking(true).expect("nonblocking");
            assert!(s.app.recv(&mut buf).is_err(), "a stray packet");
        }
        // Snapshots are published every 200 ms: wait for the one after the last delivery.
        let deadline = Instant::now() + Duration::from_secs(3);
        let b_snaps = loop {
            let snaps: Vec<_> = b_side
                .iter()
                .map(|s| s.handle.snapshot().expect("published"))
                .collect();
            let done = snaps[1]
                .steering
                .is_some_and(|(_, st)| st.steered_in >= u64::from(N));
            if done || Instant::now() > deadline {
                break snaps;
            }
            thread::sleep(Duration::from_millis(50));
        };
        // Only worker 0 carried traffic (both flows entered a's queue 0), so worker 0 of b
        // delivered both and handed flow 1 to worker 1 through the channel.
        let (w0, st0) = b_snaps[0].steering.expect("steered");
        let (w1, st1) = b_snaps[1].steering.expect("steered");
        assert_eq!((w0, w1), (0, 1));
        assert_eq!(st0.steered_out, u64::from(N), "{st0:?}");
        assert_eq!(st1.steered_in, u64::from(N), "{st1:?}");
        assert_eq!(st0.lane_full + st0.pool_exhausted, 0, "{st0:?}");
        assert_eq!(b_snaps[0].deliver_unqueued + b_snaps[1].deliver_unqueued, 0);
        let rx_drops = |st: &braid_io::dataplane::SteerStats| {
            st.rx_lane_full + st.rx_pool_exhausted + st.rx_too_big
        };
        if per_nic {
            // Worker 1 of b reads NIC 1, where a's worker 0 sent about a third of both flows:
            // handed to worker 0. Worker 0 reads NICs 0 and 2, where a's worker 1 sent its
            // probes: handed to worker 1.
            assert!(st1.rx_handed_out >= u64::from(N) / 2, "{st1:?}");
            assert!(st0.rx_handed_in >= st1.rx_handed_out * 9 / 10, "{st0:?}");
            assert!(
                st0.rx_handed_out > 0 && st1.rx_handed_in > 0,
                "{st0:?} {st1:?}"
            );
            assert_eq!(rx_drops(&st0) + rx_drops(&st1), 0, "{st0:?} {st1:?}");
            // Worker 1's sockets on NICs 0 and 2 never receive: only the readers do.
            for n in [0, 2] {
                assert_eq!(b_snaps[1].nics[n].transport.rx_packets, 0, "nic {n}");
            }
        } else {
            assert_eq!(st0.rx_handed_out + st1.rx_handed_out, 0);
        }
        for s in a_side.into_iter().chain(b_side) {
            let stopped = stop(s);
            assert_eq!(stopped.engine.stats().drops.total(), 0);
        }
    }
}
