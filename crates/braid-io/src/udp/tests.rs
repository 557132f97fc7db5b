//! Tests of the UDP transport over loopback (no root needed), plus one root-only test of the
//! device binding and of a device that disappears, inside a private network namespace.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};

use super::*;
use crate::test_support::{assert_silent, pkt, recv_n, send_all};

const MTU: usize = 1472;

/// A free port on 127.0.0.1 (bound by the kernel, then released for the transport).
fn free_local() -> SocketAddr {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .expect("bind an ephemeral loopback port")
}

/// Two transports on loopback, each the other's peer; `tweak(a, b)` edits the configs.
///
/// A port from [`free_local`] is free only until another test, running in parallel, binds
/// an ephemeral port: on `AddrInUse` the pair is tried again on new ports (a few times).
fn pair(tweak: impl Fn(&mut UdpConfig, &mut UdpConfig)) -> (UdpTransport, UdpTransport) {
    for _ in 0..10 {
        let (la, lb) = (free_local(), free_local());
        let mut ca = UdpConfig::new(la, lb, MTU);
        let mut cb = UdpConfig::new(lb, la, MTU);
        tweak(&mut ca, &mut cb);
        match (UdpTransport::open(ca), UdpTransport::open(cb)) {
            (Ok(a), Ok(b)) => return (a, b),
            (Err(UdpError::AddrInUse { .. }), _) | (_, Err(UdpError::AddrInUse { .. })) => {}
            (a, b) => panic!("open: a {:?}, b {:?}", a.err(), b.err()),
        }
    }
    panic!("no free pair of loopback ports in 10 tries");
}

#[test]
fn round_trip_of_a_batch_both_ways() {
    let (mut a, mut b) = pair(|_, _| {});
    assert_eq!(a.mtu(), MTU);
    assert!(a.fd().is_some() && a.is_open());
    let packets: Vec<Vec<u8>> = (0..64).map(|i| pkt(100 + i * 20, i as u32)).collect();
    send_all(&mut a, &packets);
    let mut rx = b.rx_batch();
    let got = recv_n(&mut b, &mut rx, 64);
    assert_eq!(got, packets, "same bytes, same order");
    assert_silent(&mut b, &mut rx);
    let bytes: u64 = packets.iter().map(|p| p.len() as u64).sum();
    assert_eq!((a.stats().tx_packets, a.stats().tx_bytes), (64, bytes));
    assert_eq!((b.stats().rx_packets, b.stats().rx_bytes), (64, bytes));
    assert!(
        b.stats().rx_batches >= 2,
        "64 datagrams need two recvmmsg calls of 32"
    );
    // Every size differs: no GSO group forms.
    assert_eq!(a.udp_stats().tx_gso_sends, 0);
    assert_eq!(a.stats().tx_syscalls, 64);

    // And back.
    let reply = vec![pkt(MTU, 7)];
    send_all(&mut b, &reply);
    let mut rx_a = a.rx_batch();
    assert_eq!(
        recv_n(&mut a, &mut rx_a, 1),
        reply,
        "an MTU-sized packet arrives whole"
    );
}

#[test]
fn gso_coalesces_equal_sizes_and_a_shorter_tail() {
    let (mut a, mut b) = pair(|_, _| {});
    assert!(a.offloads().gso_segments > 1, "loopback supports UDP GSO");
    assert!(b.offloads().gro, "loopback supports UDP GRO");
    // 20 × 1400 + a 333-byte tail: one send. 10 × 1000: a second send.
    let mut packets: Vec<Vec<u8>> = (0..20).map(|i| pkt(1400, i)).collect();
    packets.push(pkt(333, 20));
    packets.extend((21..31).map(|i| pkt(1000, i)));
    send_all(&mut a, &packets);
    assert_eq!(a.stats().tx_syscalls, 2);
    assert_eq!(a.udp_stats().tx_gso_sends, 2);
    assert_eq!(a.stats().tx_packets, 31);

    let mut rx = b.rx_batch();
    let got = recv_n(&mut b, &mut rx, 31);
    assert_eq!(
        got, packets,
        "the receiver gets exactly the packets, in order"
    );
    assert_silent(&mut b, &mut rx);
    assert!(
        b.udp_stats().rx_gro_datagrams >= 1,
        "GSO sends reach a GRO socket as super-datagrams on loopback"
    );

    // 64 × 1400 bytes: 46 fit one GSO send (65 507-byte payload limit), 18 in the next.
    let packets: Vec<Vec<u8>> = (100..164).map(|i| pkt(1400, i)).collect();
    send_all(&mut a, &packets);
    assert_eq!(a.stats().tx_syscalls, 4);
    assert_eq!(recv_n(&mut b, &mut rx, 64), packets);
    assert_eq!(a.stats().offload_disabled, 0);
}

#[test]
fn offloads_switched_off_by_config_still_deliver() {
    let (mut a, mut b) = pair(|ca, cb| {
        ca.gso = false;
        ca.gro = false;
        cb.gso = false;
        cb.gro = false;
    });
    let off = Offloads {
        gso_segments: 1,
        gro: false,
    };
    assert_eq!((a.offloads(), b.offloads()), (off, off));
    let mut packets: Vec<Vec<u8>> = (0..20).map(|i| pkt(1400, i)).collect();
    packets.push(pkt(333, 20));
    send_all(&mut a, &packets);
    assert_eq!(a.stats().tx_syscalls, 21, "one send per packet");
    assert_eq!(a.udp_stats().tx_gso_sends, 0);
    let mut rx = b.rx_batch();
    assert_eq!(rx.slot_bytes(), MTU + 1);
    assert_eq!(recv_n(&mut b, &mut rx, 21), packets);
    assert_eq!(b.udp_stats().rx_gro_datagrams, 0);
    assert_eq!(a.stats().offload_disabled + b.stats().offload_disabled, 0);
}

#[test]
fn gro_off_receiver_gets_gso_sends_as_single_datagrams() {
    // The sender uses GSO; the receiver has UDP_GRO switched off, so the kernel splits the
    // super-datagram before it reaches the socket, and the MTU+1 slots are enough.
    let (mut a, mut b) = pair(|_, cb| cb.gro = false);
    assert!(a.offloads().gso_segments > 1);
    assert!(!b.offloads().gro);
    let packets: Vec<Vec<u8>> = (0..30).map(|i| pkt(MTU, i)).collect();
    send_all(&mut a, &packets);
    assert_eq!(a.udp_stats().tx_gso_sends, 1);
    let mut rx = b.rx_batch();
    assert_eq!(recv_n(&mut b, &mut rx, 30), packets);
    assert_eq!(b.udp_stats().rx_gro_datagrams, 0);
    assert_eq!(b.stats().rx_drop_truncated, 0);
}

#[test]
fn kernel_refusing_gso_switches_it_off_and_resends() {
    let (mut a, mut b) = pair(|_, _| {});
    // With SO_NO_CHECK the kernel refuses GSO sends (EINVAL) but takes plain ones.
    crate::sys::udp::set_no_check_tx(a.fd().expect("open"), true).expect("SO_NO_CHECK");
    let packets: Vec<Vec<u8>> = (0..10).map(|i| pkt(1400, i)).collect();
    send_all(&mut a, &packets);
    assert_eq!(a.stats().offload_disabled, 1);
    assert_eq!(a.offloads().gso_segments, 1);
    assert_eq!(a.stats().tx_packets, 10);
    assert_eq!(a.stats().tx_errors, 0, "nothing lost to the fallback");
    assert_eq!(
        a.stats().tx_syscalls,
        11,
        "one refused GSO send, then 10 single sends"
    );
    let mut rx = b.rx_batch();
    assert_eq!(recv_n(&mut b, &mut rx, 10), packets);

    send_all(&mut a, &packets);
    assert_eq!(a.stats().offload_disabled, 1, "switched off once");
    assert_eq!(a.stats().tx_syscalls, 21);
    assert_eq!(recv_n(&mut b, &mut rx, 10), packets);
}

#[test]
fn foreign_sources_are_dropped_and_counted() {
    let (mut a, mut b) = pair(|_, _| {});
    let stranger = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    for i in 0..3 {
        stranger
            .send_to(&pkt(200, i), b.local_addr())
            .expect("send");
    }
    let packets = vec![pkt(300, 1), pkt(301, 2)];
    send_all(&mut a, &packets);
    let mut rx = b.rx_batch();
    assert_eq!(recv_n(&mut b, &mut rx, 2), packets);
    assert_silent(&mut b, &mut rx);
    assert_eq!(b.stats().rx_drop_foreign, 3);
    assert_eq!(b.stats().rx_packets, 2);
}

/// With `peer_ports`, datagrams from the peer's address on any port of the range are
/// accepted (one socket read for several peer workers); ports outside it stay foreign.
#[test]
fn peer_ports_widen_the_accepted_sources() {
    let (_, mut b) = pair(|_, cb| {
        cb.peer_ports = Some(1..=u16::MAX);
    });
    let other = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    other.send_to(&pkt(200, 1), b.local_addr()).expect("send");
    let mut rx = b.rx_batch();
    assert_eq!(recv_n(&mut b, &mut rx, 1), vec![pkt(200, 1)]);
    // A range that excludes the sender's port: foreign again.
    let port = other.local_addr().expect("addr").port();
    let (_, mut c) = pair(|_, cc| {
        cc.peer_ports = Some(if port > 1 { 1..=port - 1 } else { 2..=3 });
    });
    other.send_to(&pkt(201, 2), c.local_addr()).expect("send");
    let mut rx = c.rx_batch();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while c.stats().rx_drop_foreign == 0 && std::time::Instant::now() < deadline {
        let _ = c.recv_batch(&mut rx);
    }
    assert_eq!(c.stats().rx_drop_foreign, 1);
    assert_eq!(c.stats().rx_packets, 0);
    // An empty range or port 0 is refused.
    let a = free_local();
    let (five, four) = (5, 4);
    for bad in [Some(five..=four), Some(0..=10)] {
        let cfg = UdpConfig {
            peer_ports: bad,
            ..UdpConfig::new(a, a, MTU)
        };
        let err = UdpTransport::open(cfg).expect_err("invalid");
        assert!(err.to_string().contains("peer_ports"), "{err}");
    }
}

#[test]
fn datagram_filling_its_slot_is_dropped_as_truncated() {
    // a may send up to 2000 bytes, b expects at most 1000 (GRO off: 1001-byte slots).
    let (mut a, mut b) = pair(|ca, cb| {
        ca.mtu = 2000;
        cb.mtu = 1000;
        cb.gro = false;
    });
    send_all(&mut a, &[pkt(1500, 1)]);
    send_all(&mut a, &[pkt(1000, 2)]);
    send_all(&mut a, &[pkt(1001, 3)]);
    let mut rx = b.rx_batch();
    assert_eq!(
        recv_n(&mut b, &mut rx, 1),
        vec![pkt(1000, 2)],
        "exactly MTU arrives"
    );
    assert_silent(&mut b, &mut rx);
    assert_eq!(b.stats().rx_drop_truncated, 2);
}

#[test]
fn full_queue_and_too_big_are_refused_and_counted() {
    let (mut a, mut b) = pair(|ca, _| ca.batch = 4);
    for i in 0..4 {
        a.queue(&pkt(MTU, i)).expect("room");
    }
    assert_eq!(a.queue(&pkt(10, 9)), Err(QueueError::Full));
    assert_eq!(a.stats().tx_drop_queue_full, 1);
    assert!(a.has_backlog());
    assert_eq!(a.queue(&pkt(MTU + 1, 9)), Err(QueueError::TooBig));
    assert_eq!(a.stats().tx_drop_too_big, 1);
    a.flush().expect("flush");
    assert!(!a.has_backlog());
    a.queue(&pkt(10, 10)).expect("room again after a flush");
    a.flush().expect("flush");
    let mut rx = b.rx_batch();
    let got = recv_n(&mut b, &mut rx, 5);
    assert_eq!(got.len(), 5);
    assert_eq!(got[4], pkt(10, 10));
}

#[test]
fn zero_allocations_per_send_and_receive_after_open() {
    let control = allocation_counter::measure(|| {
        std::hint::black_box(Vec::<u8>::with_capacity(8));
    });
    assert_eq!(control.count_total, 1, "the counter sees allocations");

    let (mut a, mut b) = pair(|_, _| {});
    let mut rx = b.rx_batch();
    let packets: Vec<Vec<u8>> = (0..64)
        .map(|i| pkt(if i < 40 { 1400 } else { 600 }, i))
        .collect();
    let mut cycle = |a: &mut UdpTransport, b: &mut UdpTransport| {
        for p in &packets {
            a.queue(p).expect("room");
        }
        a.flush().expect("flush");
        let mut got = 0;
        for _ in 0..10_000 {
            got += b.recv_batch(&mut rx).expect("recv");
            if got >= packets.len() {
                break;
            }
        }
        got
    };
    assert_eq!(cycle(&mut a, &mut b), 64, "warm-up");
    let mut received = 0;
    let counted = allocation_counter::measure(|| {
        for _ in 0..50 {
            received += cycle(&mut a, &mut b);
        }
    });
    assert_eq!(received, 50 * 64);
    assert_eq!(counted.count_total, 0, "no allocation per packet or batch");
}

#[test]
fn invalid_configs_are_refused_with_the_reason() {
    let v4 = free_local();
    let v6: SocketAddr = "[::1]:4000".parse().expect("addr");
    let cases = [
        (UdpConfig::new(v4, v6, MTU), "different families"),
        (
            UdpConfig::new(v4, "127.0.0.1:0".parse().expect("addr"), MTU),
            "non-zero port",
        ),
        (UdpConfig::new(v4, v4, 0), "mtu is 0"),
        (UdpConfig::new(v4, v4, 65_508), "largest udp payload"),
        (
            UdpConfig {
                batch: 0,
                ..UdpConfig::new(v4, v4, MTU)
            },
            "batch",
        ),
        (
            UdpConfig {
                device: Some("a-name-longer-than-15".into()),
                ..UdpConfig::new(v4, v4, MTU)
            },
            "device name",
        ),
    ];
    for (cfg, needle) in cases {
        let err = UdpTransport::open(cfg).expect_err("invalid");
        assert!(matches!(err, UdpError::InvalidConfig { .. }), "{err:?}");
        assert!(err.to_string().contains(needle), "{err} lacks {needle:?}");
    }
}

#[test]
fn bind_errors_say_what_to_fix() {
    let peer = free_local();
    // 192.0.2.1 (TEST-NET-1, RFC 5737) is not an address of this host.
    let cfg = UdpConfig::new("192.0.2.1:4000".parse().expect("addr"), peer, MTU);
    let err = UdpTransport::open(cfg).expect_err("not local");
    assert!(matches!(err, UdpError::AddrNotAvailable { .. }), "{err:?}");
    assert!(err.to_string().contains("is 192.0.2.1 configured"), "{err}");

    // Binding to an unbound socket's device needs no privilege since Linux 5.7, so a missing
    // device reads as ENODEV as root and as a user.
    let cfg = UdpConfig {
        device: Some("braid-nodev0".into()),
        ..UdpConfig::new(free_local(), peer, MTU)
    };
    let err = UdpTransport::open(cfg).expect_err("no such device");
    assert!(matches!(err, UdpError::NoSuchDevice { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "cannot bind to device braid-nodev0: no such device (is the interface up and named right?)"
    );

    let (a, _b) = pair(|_, _| {});
    let taken = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let cfg = UdpConfig::new(taken.local_addr().expect("addr"), a.local_addr(), MTU);
    let err = UdpTransport::open(cfg).expect_err("in use");
    assert!(matches!(err, UdpError::AddrInUse { .. }), "{err:?}");
}

#[test]
fn socket_buffers_are_granted_or_the_cap_is_reported() {
    let (a, _b) = pair(|ca, _| ca.socket_buffer_bytes = 8 << 20);
    let bufs = a.socket_buffers();
    assert_eq!(bufs.requested_bytes, 8 << 20);
    if rustix::process::geteuid().is_root() {
        assert!(bufs.forced, "root forces the size past rmem_max");
        assert!(
            bufs.recv_bytes >= 8 << 20 && bufs.send_bytes >= 8 << 20,
            "{bufs:?}"
        );
        assert_eq!(bufs.capped(), None);
    } else if let Some(w) = bufs.capped() {
        assert!(!bufs.forced);
        assert!(w.to_string().contains("net.core.rmem_max=8388608"), "{w}");
    }
    let w = SocketBuffers {
        requested_bytes: 8 << 20,
        recv_bytes: 212_992,
        send_bytes: 8 << 20,
        forced: false,
    }
    .capped()
    .expect("capped");
    assert_eq!(
        w.to_string(),
        "udp socket buffers are smaller than configured: receive 212992 and send 8388608 bytes \
         of 8388608 asked; raise the kernel limits with `sysctl -w \
         net.core.rmem_max=8388608 net.core.wmem_max=8388608` (or give braid CAP_NET_ADMIN, \
         which lets it force the sizes)"
    );
}

/// Root only: a transport bound to a veth device in a private network namespace (named
/// `braid-udp-<pid>`, removed by a guard): sends while the link is down are counted and
/// dropped; deleting the device closes the transport; `maintain` reopens it once the device
/// is back.
#[test]
fn device_down_gone_and_back() {
    use std::process::Command;
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (network namespace + veth device); run it as root"
    );
    struct Netns(String);
    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    fn ip(ns: &str, args: &str) {
        let ok = Command::new("ip")
            .arg("-n")
            .arg(ns)
            .args(args.split_whitespace())
            .status()
            .expect("run ip")
            .success();
        assert!(ok, "ip -n {ns} {args}");
    }
    // This kernel has no dummy device: a veth pair whose far end nobody uses stands in.
    fn add_link(ns: &str) {
        ip(ns, "link add braid0 type veth peer name braid1");
        ip(ns, "addr add 10.77.0.1/24 dev braid0");
        ip(ns, "link set braid1 up");
        ip(ns, "link set braid0 up");
    }
    let name = format!("braid-udp-{}", std::process::id());
    let ok = Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .expect("run ip")
        .success();
    assert!(ok, "ip netns add {name}");
    let ns = Netns(name.clone());
    add_link(&name);

    // Sockets belong to the namespace of the thread that creates them: work in a thread that
    // moved into the test namespace (the test's main thread stays where it was).
    let path = format!("/run/netns/{name}");
    let worker = std::thread::spawn(move || {
        let nsfd = std::fs::File::open(&path).expect("open netns");
        rustix::thread::move_into_link_name_space(
            nsfd.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .expect("setns");
        let mut cfg = UdpConfig::new(
            "10.77.0.1:0".parse().expect("addr"),
            "10.77.0.2:7000".parse().expect("addr"),
            MTU,
        );
        cfg.device = Some("braid0".into());
        let mut t = UdpTransport::open(cfg).expect("open bound to braid0");
        let port = t.local_addr().port();
        assert_ne!(port, 0);

        // Up: the packets leave (to an unanswered address), the sends succeed.
        t.queue(&pkt(500, 1)).expect("room");
        t.flush().expect("sent");
        assert_eq!(t.stats().tx_packets, 1);
        assert!(!t.maintain(), "open and healthy: nothing to do");

        // Down: counted as tx_errors and dropped, the transport stays open.
        ip(&name, "link set braid0 down");
        t.queue(&pkt(500, 2)).expect("room");
        t.queue(&pkt(500, 3)).expect("room");
        let e = t.flush().expect_err("link down");
        assert!(
            matches!(e.raw_os_error(), Some(libc::ENETDOWN | libc::ENETUNREACH)),
            "{e}"
        );
        assert_eq!(t.stats().tx_errors, 2);
        assert!(t.is_open() && !t.has_backlog());
        ip(&name, "link set braid0 up");
        t.queue(&pkt(500, 4)).expect("room");
        t.flush().expect("up again");
        assert_eq!(t.stats().tx_packets, 2);

        // Gone, noticed by a send: closed, queue refused, maintain fails while it is missing.
        ip(&name, "link del braid0");
        t.queue(&pkt(500, 5)).expect("room");
        let e = t.flush().expect_err("device gone");
        assert!(
            matches!(e.raw_os_error(), Some(libc::ENODEV | libc::ENETUNREACH)),
            "{e}"
        );
        assert!(t.fd().is_none() && !t.is_open());
        assert_eq!(t.queue(&pkt(10, 6)), Err(QueueError::Closed));
        assert_eq!(t.stats().tx_drop_closed, 2);
        assert_eq!(t.udp_stats().closed, 1);
        assert!(!t.maintain(), "device still missing");
        assert!(
            matches!(t.last_open_error(), Some(UdpError::NoSuchDevice { .. })),
            "{:?}",
            t.last_open_error()
        );

        // Back: reopened on the same port.
        add_link(&name);
        assert!(t.maintain(), "reopened");
        assert_eq!(t.stats().reopened, 1);
        assert_eq!(t.local_addr().port(), port, "same local port");
        assert!(t.fd().is_some());
        t.queue(&pkt(500, 7)).expect("room");
        t.flush().expect("sent after reopen");
        assert_eq!(t.stats().tx_packets, 3);

        // Gone while idle: maintain notices (the binding reads back ENXIO) and, with the
        // device recreated in between, reopens in the same call.
        ip(&name, "link del braid0");
        add_link(&name);
        assert!(t.maintain(), "closed and reopened in one call");
        assert_eq!(t.udp_stats().closed, 2);
        assert_eq!(t.stats().reopened, 2);
        t.queue(&pkt(500, 8)).expect("room");
        t.flush().expect("sent");
        assert_eq!(t.stats().tx_packets, 4);
    });
    let result = worker.join();
    drop(ns);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
