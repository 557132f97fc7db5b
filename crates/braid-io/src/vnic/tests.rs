//! vNIC tests. The first group needs no privilege (configuration, RSS). The rest need root:
//! each creates its own network namespace `braid-tun-<pid>-<test>` (removed by a drop guard),
//! creates the TUN inside it, and exchanges packets with the kernel's own UDP sockets there,
//! so no traffic leaves the namespace. Without root they panic saying so.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use braid_core::rss::{Rss, ToeplitzKey};
use braid_wire::IpSummary;
use etherparse::PacketBuilder;

use super::*;
use crate::sys::netns::NetNs;

const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const REMOTE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

// ---------------------------------------------------------------------------------------
// Helpers shared with `offload::tests`.

/// Checks the IPv4 header checksum and the TCP/UDP checksum of `pkt` with etherparse (an
/// implementation independent of tun-rs and of `offload`), and the length fields.
pub(super) fn assert_checksums_valid(pkt: &[u8]) {
    use etherparse::{Ipv4HeaderSlice, TcpHeaderSlice, UdpHeaderSlice};
    let ip = Ipv4HeaderSlice::from_slice(pkt).unwrap().to_header();
    assert_eq!(ip.calc_header_checksum(), ip.header_checksum, "ip checksum");
    let ihl = usize::from(ip.ihl()) * 4;
    assert_eq!(usize::from(ip.total_len), pkt.len(), "ip total length");
    match ip.protocol.0 {
        6 => {
            let tcp = TcpHeaderSlice::from_slice(&pkt[ihl..]).unwrap();
            let payload = &pkt[ihl + tcp.slice().len()..];
            let want = tcp.to_header().calc_checksum_ipv4(&ip, payload).unwrap();
            assert_eq!(tcp.checksum(), want, "tcp checksum");
        }
        17 => {
            let udp = UdpHeaderSlice::from_slice(&pkt[ihl..]).unwrap();
            let payload = &pkt[ihl + 8..];
            let want = udp.to_header().calc_checksum_ipv4(&ip, payload).unwrap();
            assert_eq!(udp.checksum(), want, "udp checksum");
            assert_eq!(usize::from(udp.length()), pkt.len() - ihl, "udp length");
        }
        p => panic!("unexpected protocol {p}"),
    }
}

/// An IPv4/UDP packet with correct checksums.
fn udp_packet(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ipv4(src.0.octets(), dst.0.octets(), 64).udp(src.1, dst.1);
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, payload).unwrap();
    out
}

/// (src, dst, src port, dst port, payload) of an IPv4/UDP packet, `None` for anything else.
fn parse_udp4(p: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, u16, u16, &[u8])> {
    if p.len() < 28 || p[0] >> 4 != 4 || p[9] != 17 {
        return None;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    let sport = u16::from_be_bytes([p[ihl], p[ihl + 1]]);
    let dport = u16::from_be_bytes([p[ihl + 2], p[ihl + 3]]);
    Some((src, dst, sport, dport, p.get(ihl + 8..)?))
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from(i % 251).unwrap() ^ seed)
        .collect()
}

// ---------------------------------------------------------------------------------------
// Without privilege.

#[test]
fn config_defaults_and_validation() {
    let cfg = VnicConfig::new("braid0", VnicKind::Tun, 4).unwrap();
    assert_eq!(cfg.mtu, 1500);
    assert!(cfg.offload);
    assert_eq!(cfg.rss.queues(), 4);
    assert_eq!(cfg.rss.key(), &ToeplitzKey::symmetric());
    assert!(cfg.validate().is_ok());

    assert!(matches!(
        VnicConfig::new("braid0", VnicKind::Tun, 0),
        Err(VnicError::Queues { queues: 0, .. })
    ));
    assert!(matches!(
        VnicConfig::new("braid0", VnicKind::Tun, 257),
        Err(VnicError::Queues { queues: 257, .. })
    ));

    let check = |edit: &dyn Fn(&mut VnicConfig)| {
        let mut c = cfg.clone();
        edit(&mut c);
        let err = c.validate().unwrap_err();
        // Every error names the device (or, for a bad name, the name itself).
        let text = format!(
            "{err}: {:?}",
            std::error::Error::source(&err).map(|s| s.to_string())
        );
        assert!(text.contains(&c.name), "{text}");
        err
    };
    assert!(matches!(
        check(&|c| c.mtu = 67),
        VnicError::Mtu { mtu: 67, .. }
    ));
    assert!(matches!(check(&|c| c.mtu = 65_536), VnicError::Mtu { .. }));
    assert!(matches!(
        check(&|c| c.rss = Rss::new(ToeplitzKey::MICROSOFT, 2).unwrap()),
        VnicError::RssQueues {
            rss: 2,
            queues: 4,
            ..
        }
    ));
    assert!(matches!(
        check(&|c| c.tx_queue_packets = 0),
        VnicError::TxQueue { .. }
    ));
    assert!(matches!(
        check(&|c| c.gso_max_segs = 0),
        VnicError::GsoMaxSegs { .. }
    ));
    assert!(matches!(
        check(&|c| c.gso_max_segs = 129),
        VnicError::GsoMaxSegs { .. }
    ));
    assert!(matches!(
        check(&|c| c.name = "x/y".into()),
        VnicError::Name(_)
    ));
    assert!(matches!(
        check(&|c| c.name = "a-name-of-16-byt".into()),
        VnicError::Name(_)
    ));
    // 9000 over 1500-byte NICs is allowed.
    let mut jumbo = cfg.clone();
    jumbo.mtu = 9000;
    assert!(jumbo.validate().is_ok());
}

#[test]
fn rss_picks_the_queue_of_braid_core_and_is_symmetric() {
    let rss = Rss::new(ToeplitzKey::symmetric(), 4).unwrap();
    let mut seen = [0usize; 4];
    for port in 0..64u16 {
        let out = udp_packet((LOCAL, 10_000 + port), (REMOTE, 5000), b"x");
        let back = udp_packet((REMOTE, 5000), (LOCAL, 10_000 + port), b"y");
        let q = rss_queue(&rss, VnicKind::Tun, &out);
        let want = usize::from(rss.queue_for(&IpSummary::parse_l3(&out).unwrap()));
        assert_eq!(q, want);
        assert_eq!(
            rss_queue(&rss, VnicKind::Tun, &back),
            q,
            "reply on another queue"
        );
        seen[q] += 1;
    }
    assert!(
        seen.iter().all(|&n| n > 0),
        "64 flows left a queue empty: {seen:?}"
    );

    // TAP frames hash the IP packet inside.
    let ip = udp_packet((LOCAL, 1234), (REMOTE, 80), b"tap");
    let mut frame = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    frame.extend_from_slice(&ip);
    assert_eq!(
        rss_queue(&rss, VnicKind::Tap, &frame),
        rss_queue(&rss, VnicKind::Tun, &ip)
    );
    // What does not parse goes to queue 0, without panicking.
    for junk in [&[][..], &[0x45][..], &[0x60, 0, 0][..], &frame[..]] {
        assert_eq!(rss_queue(&rss, VnicKind::Tun, junk), 0);
    }
}

#[test]
fn offload_state_says_why() {
    let on = OffloadState::On {
        uso: true,
        gso_max_segs: Some(64),
    };
    assert!(on.is_on());
    assert_eq!(
        on.to_string(),
        "on (csum, tso4, tso6, uso4, uso6; gso_max_segs 64)"
    );
    let off = OffloadState::Off(OffloadOff::Refused {
        error: "Invalid argument (os error 22)".into(),
    });
    assert!(!off.is_on());
    assert!(off.to_string().contains("os error 22"));
}

// ---------------------------------------------------------------------------------------
// Root: a TUN in a namespace of the test's own.

fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "needs root: the vnic tests create TUN devices and network namespaces"
    );
}

fn netns(test: &str) -> NetNs {
    require_root();
    NetNs::create(&format!("braid-tun-{}-{test}", std::process::id())).expect("create netns")
}

fn tun_config(queues: usize, mtu: u32) -> VnicConfig {
    let mut cfg = VnicConfig::new(
        format!("braid-t{}", std::process::id()),
        VnicKind::Tun,
        queues,
    )
    .unwrap();
    cfg.mtu = mtu;
    cfg.addresses = vec![(IpAddr::V4(LOCAL), 24)];
    cfg
}

/// Reads every queue until `want` packets matching `keep` arrived or 2 s passed. Returns
/// (queue, packet) in arrival order per queue.
fn collect(vnic: &mut Vnic, want: usize, keep: impl Fn(&[u8]) -> bool) -> Vec<(usize, Vec<u8>)> {
    let mut batch = vnic.rx_batch(64);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    while got.len() < want && Instant::now() < deadline {
        let mut any = false;
        for q in vnic.queues_mut() {
            let n = q.recv_batch(&mut batch).expect("recv_batch");
            any |= n > 0;
            got.extend(
                batch
                    .iter()
                    .filter(|p| keep(p))
                    .map(|p| (q.index(), p.to_vec())),
            );
        }
        if !any {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    got
}

fn udp_to_port(port: u16) -> impl Fn(&[u8]) -> bool {
    move |p| parse_udp4(p).is_some_and(|(_, _, _, d, _)| d == port)
}

#[test]
fn create_configures_the_link_and_drop_removes_it() {
    let ns = netns("create");
    ns.run(|| {
        let mut cfg = tun_config(2, 9000);
        let v6: IpAddr = "fd00:77::1".parse().unwrap();
        cfg.addresses.push((v6, 64));
        let vnic = Vnic::create(&cfg).expect("create the vnic");
        let name = vnic.name().to_owned();
        eprintln!("vnic {name}: offload {}", vnic.offload_state());

        assert_eq!(name, cfg.name);
        assert_eq!(netlink::link_index(&name).unwrap(), Some(vnic.ifindex()));
        assert_eq!(netlink::link_mtu(&name).unwrap(), 9000);
        assert!(netlink::link_is_up(&name).unwrap());
        let addrs = netlink::addresses(&name).unwrap();
        assert!(addrs.contains(&(IpAddr::V4(LOCAL), 24)), "{addrs:?}");
        assert!(addrs.contains(&(v6, 64)), "{addrs:?}");
        // Adding an address again is fine (idempotent).
        netlink::add_address(&name, IpAddr::V4(LOCAL), 24).unwrap();

        // Two distinct, non-blocking queue descriptors.
        assert_eq!(vnic.queues().len(), 2);
        let fds: Vec<_> = vnic.queues().iter().map(|q| q.fd().as_raw_fd()).collect();
        assert_ne!(fds[0], fds[1]);
        for q in vnic.queues() {
            let flags = rustix::fs::fcntl_getfl(q.fd()).unwrap();
            assert!(flags.contains(rustix::fs::OFlags::NONBLOCK));
        }

        // The offload probe either succeeded or recorded why not.
        match vnic.offload_state() {
            OffloadState::On { gso_max_segs, .. } => {
                assert!(vnic.queues().iter().all(VnicQueue::tx_gro));
                if let Some(n) = gso_max_segs {
                    assert_eq!(netlink::link_gso_max_segs(&name).unwrap(), Some(*n));
                }
            }
            OffloadState::Off(OffloadOff::Refused { error }) => assert!(!error.is_empty()),
            other => panic!("offload asked for but {other:?}"),
        }

        // The name is taken now.
        assert!(matches!(Vnic::create(&cfg), Err(VnicError::Exists { .. })));

        drop(vnic);
        let deadline = Instant::now() + Duration::from_secs(2);
        while netlink::link_index(&name).unwrap().is_some() {
            assert!(Instant::now() < deadline, "{name} still exists after drop");
            std::thread::sleep(Duration::from_millis(5));
        }
    });
}

#[test]
fn offload_off_in_config_is_honoured() {
    let ns = netns("nooffload");
    ns.run(|| {
        let mut cfg = tun_config(1, 1500);
        cfg.offload = false;
        let mut vnic = Vnic::create(&cfg).unwrap();
        assert_eq!(vnic.offload_state(), &OffloadState::Off(OffloadOff::Config));
        assert!(!vnic.queues()[0].tx_gro());
        // Plain packets both ways.
        let sock = UdpSocket::bind((LOCAL, 0)).unwrap();
        sock.send_to(b"plain", (REMOTE, 5000)).unwrap();
        let got = collect(&mut vnic, 1, udp_to_port(5000));
        assert_eq!(got.len(), 1);
        assert_eq!(parse_udp4(&got[0].1).unwrap().4, b"plain");
        assert_checksums_valid(&got[0].1);
    });
}

#[test]
fn kernel_to_vnic_packets_are_byte_exact_up_to_a_9000_mtu() {
    let ns = netns("rx");
    ns.run(|| {
        let mut vnic = Vnic::create(&tun_config(2, 9000)).unwrap();
        let sock = UdpSocket::bind((LOCAL, 0)).unwrap();
        let sport = sock.local_addr().unwrap().port();
        let small = pattern(100, 1);
        let big = pattern(8000, 2); // one 8028-byte IP packet: no fragmentation at MTU 9000
        sock.send_to(&small, (REMOTE, 5000)).unwrap();
        sock.send_to(&big, (REMOTE, 5000)).unwrap();

        let got = collect(&mut vnic, 2, udp_to_port(5000));
        assert_eq!(got.len(), 2, "packets read: {got:?}");
        // One flow, so one queue, in order.
        assert_eq!(got[0].0, got[1].0);
        for ((_, pkt), want) in got.iter().zip([&small, &big]) {
            let (src, dst, sp, dp, payload) = parse_udp4(pkt).unwrap();
            assert_eq!((src, dst, sp, dp), (LOCAL, REMOTE, sport, 5000));
            assert_eq!(payload, &want[..]);
            assert_checksums_valid(pkt);
        }
        assert_eq!(got[1].1.len(), 8028);
        let stats = vnic.stats();
        eprintln!("rx stats: {stats:?}");
        assert!(stats.rx_packets >= 2 && stats.rx_bytes >= 8028 + 128);
        assert_eq!(stats.rx_drop_truncated + stats.rx_drop_malformed, 0);
        if vnic.offload_state().is_on() {
            // A local UDP socket leaves the checksum to the (offloading) device.
            assert!(stats.rx_csum_completed >= 2, "{stats:?}");
        }
    });
}

#[test]
fn vnic_to_kernel_packets_reach_a_socket_and_bursts_coalesce() {
    let ns = netns("tx");
    ns.run(|| {
        let mut vnic = Vnic::create(&tun_config(1, 9000)).unwrap();
        let uso = matches!(vnic.offload_state(), OffloadState::On { uso: true, .. });
        let sock = UdpSocket::bind((LOCAL, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let port = sock.local_addr().unwrap().port();
        let mut buf = vec![0u8; 65_536];
        let q = &mut vnic.queues_mut()[0];

        // One small and one jumbo packet, flushed one by one.
        for (i, len) in [(0u8, 64usize), (1, 8500)] {
            let payload = pattern(len, i);
            q.queue(&udp_packet((REMOTE, 6000), (LOCAL, port), &payload))
                .unwrap();
            q.flush().unwrap();
            let (n, from) = sock.recv_from(&mut buf).unwrap();
            assert_eq!(from, SocketAddr::from((REMOTE, 6000)));
            assert_eq!(&buf[..n], &payload[..]);
        }

        // A burst of one flow in one flush: coalesced into one write when USO is on.
        let burst: Vec<Vec<u8>> = (0..8).map(|i| pattern(1000, 10 + i)).collect();
        for payload in &burst {
            q.queue(&udp_packet((REMOTE, 6001), (LOCAL, port), payload))
                .unwrap();
        }
        assert!(q.has_backlog());
        q.flush().unwrap();
        assert!(!q.has_backlog());
        for want in &burst {
            let (n, from) = sock.recv_from(&mut buf).unwrap();
            assert_eq!(from, SocketAddr::from((REMOTE, 6001)));
            assert_eq!(&buf[..n], &want[..], "burst reordered or corrupted");
        }
        let stats = *q.stats();
        eprintln!("tx stats: {stats:?}");
        assert_eq!(stats.tx_packets, 10);
        assert_eq!(stats.tx_errors, 0);
        if uso {
            assert!(stats.tx_coalesced >= 1, "{stats:?}");
            assert!(stats.tx_writes < 10, "{stats:?}");
        } else {
            assert_eq!(stats.tx_writes, 10);
        }

        // Too big, runt and full are refused and counted.
        assert_eq!(q.queue(&vec![0x45; 9001]), Err(QueueError::TooBig));
        assert_eq!(q.queue(&[0x45; 10]), Ok(()));
        let pkt = udp_packet((REMOTE, 6002), (LOCAL, port), b"fill");
        for _ in 0..DEFAULT_TX_QUEUE_PACKETS {
            q.queue(&pkt).unwrap();
        }
        assert_eq!(q.queue(&pkt), Err(QueueError::Full));
        let stats = *q.stats();
        assert_eq!(
            (
                stats.tx_drop_too_big,
                stats.tx_drop_runt,
                stats.tx_drop_queue_full
            ),
            (1, 1, 1)
        );
        q.flush().unwrap();
        for _ in 0..DEFAULT_TX_QUEUE_PACKETS {
            let (n, _) = sock.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"fill");
        }
    });
}

#[test]
fn udp_gso_super_packet_is_split_into_mtu_packets() {
    let ns = netns("gso");
    ns.run(|| {
        let mut vnic = Vnic::create(&tun_config(1, 1500)).unwrap();
        let sock = UdpSocket::bind((LOCAL, 0)).unwrap();
        let state = quinn_udp::UdpSocketState::new((&sock).into()).unwrap();
        assert!(state.max_gso_segments() > 1, "this kernel has no UDP GSO");
        let payload = pattern(5 * 1000, 3);
        let transmit = quinn_udp::Transmit {
            destination: SocketAddr::from((REMOTE, 5002)),
            ecn: None,
            contents: &payload,
            segment_size: Some(1000),
            src_ip: None,
        };
        state.try_send((&sock).into(), &transmit).unwrap();

        let got = collect(&mut vnic, 5, udp_to_port(5002));
        assert_eq!(got.len(), 5);
        for (i, (_, pkt)) in got.iter().enumerate() {
            assert_eq!(pkt.len(), 1028);
            assert_eq!(
                parse_udp4(pkt).unwrap().4,
                &payload[i * 1000..(i + 1) * 1000]
            );
            assert_checksums_valid(pkt);
        }
        let stats = vnic.stats();
        eprintln!("gso stats: {stats:?}");
        if matches!(vnic.offload_state(), OffloadState::On { uso: true, .. }) {
            assert_eq!(
                (stats.rx_gso_splits, stats.rx_gso_segments),
                (1, 5),
                "{stats:?}"
            );
        }
    });
}

#[test]
fn flows_spread_over_queues_and_replies_follow_the_rss_queue() {
    let ns = netns("mq");
    ns.run(|| {
        let mut vnic = Vnic::create(&tun_config(2, 1500)).unwrap();

        // Kernel → vNIC: 16 flows land on both queues.
        let sock = UdpSocket::bind((LOCAL, 0)).unwrap();
        for i in 0..16u16 {
            sock.send_to(&i.to_be_bytes(), (REMOTE, 5100 + i)).unwrap();
        }
        let got = collect(&mut vnic, 16, |p| {
            parse_udp4(p).is_some_and(|(_, _, _, d, _)| (5100..5116).contains(&d))
        });
        assert_eq!(got.len(), 16);
        let on_queue_1 = got.iter().filter(|(q, _)| *q == 1).count();
        assert!(
            on_queue_1 > 0 && on_queue_1 < 16,
            "all 16 flows on one queue"
        );

        // vNIC → kernel on the RSS queue; the reply comes back on the same queue.
        let server = UdpSocket::bind((LOCAL, 0)).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let port = server.local_addr().unwrap().port();
        let mut per_queue = [0usize; 2];
        for sport in 7000..7064u16 {
            let pkt = udp_packet((REMOTE, sport), (LOCAL, port), b"ping");
            let q = vnic.queue_for(&pkt);
            if per_queue[q] >= 3 {
                continue;
            }
            per_queue[q] += 1;
            vnic.queues_mut()[q].queue(&pkt).unwrap();
            vnic.queues_mut()[q].flush().unwrap();
            let mut buf = [0u8; 64];
            let (_, from) = server.recv_from(&mut buf).unwrap();
            server.send_to(b"pong", from).unwrap();
            let reply = collect(&mut vnic, 1, udp_to_port(sport));
            assert_eq!(reply.len(), 1, "no reply for port {sport}");
            assert_eq!(reply[0].0, q, "reply of port {sport} on another queue");
        }
        assert_eq!(per_queue, [3, 3], "RSS never picked one of the queues");
    });
}

#[test]
fn hot_path_allocates_nothing_after_warm_up() {
    let ns = netns("alloc");
    ns.run(|| {
        let mut vnic = Vnic::create(&tun_config(1, 1500)).unwrap();
        let mut batch = vnic.rx_batch(64);
        let sock = UdpSocket::bind((LOCAL, 0)).unwrap();
        let server = UdpSocket::bind((LOCAL, 0)).unwrap();
        let port = server.local_addr().unwrap().port();
        let pkts: Vec<Vec<u8>> = (0..4)
            .map(|i| udp_packet((REMOTE, 6100), (LOCAL, port), &pattern(1200, i)))
            .collect();
        let round = |vnic: &mut Vnic, batch: &mut RxBatch| {
            for i in 0..4u8 {
                sock.send_to(&[i; 300], (REMOTE, 5300)).unwrap();
            }
            // TUN transmit is synchronous: the packets are queued on return.
            let q = &mut vnic.queues_mut()[0];
            let mut read = 0;
            let counted = allocation_counter::measure(|| {
                read = q.recv_batch(batch).unwrap();
                for p in &pkts {
                    q.queue(p).unwrap();
                }
                q.flush().unwrap();
            });
            (read, counted.count_total, q.stats().tx_coalesced)
        };
        let (warm_read, _, _) = round(&mut vnic, &mut batch);
        let (read, allocations, coalesced) = round(&mut vnic, &mut batch);
        assert!(warm_read >= 4 && read >= 4, "read {warm_read} then {read}");
        assert_eq!(allocations, 0, "the hot path allocated");
        // The flush did coalesce (the path measured is the offload one) when USO is on.
        if matches!(vnic.offload_state(), OffloadState::On { uso: true, .. }) {
            assert!(coalesced >= 6, "coalesced {coalesced}");
        }
    });
}

/// Moves every packet read from `from` to the RSS queue of `to`, as braid's data path will;
/// returns the number moved.
fn forward(from: &mut Vnic, to: &mut Vnic, batch: &mut RxBatch) -> usize {
    let mut moved = 0;
    for i in 0..from.queues().len() {
        let n = from.queues_mut()[i].recv_batch(batch).expect("recv_batch");
        for pkt in batch.iter() {
            let q = to.queue_for(pkt);
            let queue = &mut to.queues_mut()[q];
            if queue.queue(pkt) == Err(QueueError::Full) {
                queue.flush().expect("flush");
                queue.queue(pkt).expect("queue after flush");
            }
        }
        moved += n;
    }
    for q in to.queues_mut() {
        q.flush().expect("flush");
    }
    moved
}

#[test]
fn tcp_between_two_vnics_is_byte_exact_with_offloads() {
    tcp_between_two_vnics("tcp", true);
}

#[test]
fn tcp_between_two_vnics_is_byte_exact_without_offloads() {
    tcp_between_two_vnics("tcpplain", false);
}

/// A 16 MiB TCP stream from namespace A to namespace B, each with its vNIC, packets moved
/// between the two by a thread (the "wire"), then compared byte for byte.
fn tcp_between_two_vnics(tag: &str, offload: bool) {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    const BYTES: usize = 16 << 20;
    let ns_a = netns(&format!("{tag}-a"));
    let ns_b = netns(&format!("{tag}-b"));
    let addr = |last: u8| IpAddr::V4(Ipv4Addr::new(10, 78, 0, last));
    let cfg = |last: u8| {
        let mut c = tun_config(2, 1500);
        c.addresses = vec![(addr(last), 24)];
        c.offload = offload;
        c
    };
    let mut a = ns_a.run(|| Vnic::create(&cfg(1))).unwrap();
    let mut b = ns_b.run(|| Vnic::create(&cfg(2))).unwrap();
    let listener = ns_b.run(|| TcpListener::bind((addr(2), 0))).unwrap();
    let port = listener.local_addr().unwrap().port();

    // The "wire": one thread moving packets both ways, bounded in time.
    let stop = Arc::new(AtomicBool::new(false));
    let stop_fwd = Arc::clone(&stop);
    let wire = std::thread::spawn(move || {
        let mut batch = a.rx_batch(64);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !stop_fwd.load(Ordering::Relaxed) && Instant::now() < deadline {
            let moved = forward(&mut a, &mut b, &mut batch) + forward(&mut b, &mut a, &mut batch);
            if moved == 0 {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        (a, b)
    });
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut got = Vec::with_capacity(BYTES);
        s.read_to_end(&mut got).unwrap();
        got
    });
    let data = pattern(BYTES, 0x5a);
    let sent = data.clone();
    let started = Instant::now();
    ns_a.run(move || {
        let mut c =
            TcpStream::connect_timeout(&SocketAddr::new(addr(2), port), Duration::from_secs(5))
                .unwrap();
        c.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        c.write_all(&sent).unwrap();
    });
    let got = server.join().unwrap();
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (a, b) = wire.join().unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "stream corrupted");

    let (sa, sb) = (a.stats(), b.stats());
    #[allow(clippy::cast_precision_loss)] // a report, not a computation
    let mbit = (BYTES * 8) as f64 / elapsed.as_secs_f64() / 1e6;
    eprintln!("{tag}: {BYTES} bytes in {elapsed:?} ({mbit:.0} Mbit/s)\na: {sa:?}\nb: {sb:?}");
    assert_eq!(sa.rx_drop_malformed + sb.rx_drop_malformed, 0);
    assert_eq!(sa.tx_errors + sb.tx_errors, 0);
    assert_eq!(
        a.offload_state().is_on(),
        offload && b.offload_state().is_on()
    );
    if a.offload_state().is_on() && b.offload_state().is_on() {
        // The sender's kernel handed over TSO super-packets, and the receiver's got coalesced
        // ones, which it accepted.
        assert!(sa.rx_gso_splits > 0, "{sa:?}");
        assert!(sb.tx_coalesced > 0, "{sb:?}");
        assert_eq!(sb.tx_gro_disabled, 0);
    }
}

#[test]
fn tap_reads_and_writes_ethernet_frames() {
    let ns = netns("tap");
    ns.run(|| {
        let mut cfg = tun_config(2, 1500);
        cfg.kind = VnicKind::Tap;
        let mut vnic = Vnic::create(&cfg).unwrap();
        assert_eq!(vnic.offload_state(), &OffloadState::Off(OffloadOff::Tap));
        assert_eq!(vnic.max_frame_bytes(), 1500 + 18);

        // The kernel resolves 10.77.0.2 first: an ARP request frame comes out.
        let sock = UdpSocket::bind((LOCAL, 0)).unwrap();
        sock.send_to(b"via tap", (REMOTE, 5000)).unwrap();
        let arp = collect(&mut vnic, 1, |f| {
            f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[38..42] == REMOTE.octets()
        });
        assert_eq!(arp.len(), 1, "no ARP request for {REMOTE}");
        let tap_mac: [u8; 6] = arp[0].1[6..12].try_into().unwrap();

        // A frame to the TAP's MAC carrying UDP to a local socket is delivered.
        let server = UdpSocket::bind((LOCAL, 0)).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let port = server.local_addr().unwrap().port();
        let mut frame = Vec::new();
        PacketBuilder::ethernet2([0x02, 0, 0, 0, 0, 2], tap_mac)
            .ipv4(REMOTE.octets(), LOCAL.octets(), 64)
            .udp(6000, port)
            .write(&mut frame, b"frame in")
            .unwrap();
        let q = vnic.queue_for(&frame);
        vnic.queues_mut()[q].queue(&frame).unwrap();
        vnic.queues_mut()[q].flush().unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = server.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"frame in");
        assert_eq!(from, SocketAddr::from((REMOTE, 6000)));
        // A frame below an Ethernet header is a counted runt.
        vnic.queues_mut()[0].queue(&[0u8; 13]).unwrap();
        assert_eq!(vnic.stats().tx_drop_runt, 1);
    });
}
