//! Tests of the raw Ethernet transport. The config checks need nothing; every other test is
//! root-only (it fails saying so without root): two network namespaces `braid-pkt-<pid>-<test>-a`
//! and `-b` (removed by their guards) joined by one veth pair, a transport on each end.
//!
//! A socket keeps the network namespace it was made in, so transports are opened on a thread
//! inside their namespace ([`NetNs::run`]) and then used from the test thread; only
//! `maintain`, which may make a new socket, runs inside the namespace again.

use std::io::IoSlice;
use std::process::Command;
use std::time::{Duration, Instant};

use super::*;
use crate::sys::netns::NetNs;
use crate::test_support::{assert_silent, pkt, recv_n, send_all};

const MTU: usize = 1500;
/// The veth ends: `DEV_A` in namespace a, `DEV_B` in namespace b.
const DEV_A: &str = "bpkt0";
const DEV_B: &str = "bpkt1";

fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (network namespaces, veth, AF_PACKET); run it as root"
    );
}

/// Run `ip <args>` and check it succeeded.
fn ip(args: &str) {
    let out = Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .expect("run ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces joined by a veth pair, both ends up. Dropped last in every test (declared
/// first), after the transports, so the namespaces die with their devices.
struct Pair {
    a: NetNs,
    b: NetNs,
    name_a: String,
    name_b: String,
}

impl Pair {
    fn new(test: &str) -> Self {
        require_root();
        let base = format!("braid-pkt-{}-{test}", std::process::id());
        let (name_a, name_b) = (format!("{base}-a"), format!("{base}-b"));
        let a = NetNs::create(&name_a).expect("create namespace a");
        let b = NetNs::create(&name_b).expect("create namespace b");
        let pair = Self {
            a,
            b,
            name_a,
            name_b,
        };
        pair.add_link();
        pair
    }

    /// (Re)create the veth pair and bring both ends up.
    fn add_link(&self) {
        ip(&format!(
            "link add {DEV_A} netns {} type veth peer name {DEV_B} netns {}",
            self.name_a, self.name_b
        ));
        ip(&format!("-n {} link set {DEV_A} up", self.name_a));
        ip(&format!("-n {} link set {DEV_B} up", self.name_b));
    }

    /// The MAC of `dev` in namespace `ns`, from `ip -j link show`.
    fn mac(ns: &str, dev: &str) -> [u8; 6] {
        let out = Command::new("ip")
            .args(["-n", ns, "-br", "link", "show", dev])
            .output()
            .expect("run ip");
        let text = String::from_utf8_lossy(&out.stdout);
        // "bpkt0@if2  UP  aa:bb:cc:dd:ee:ff <...>"
        let field = text
            .split_whitespace()
            .nth(2)
            .unwrap_or_else(|| panic!("no MAC in {text:?}"));
        let mut mac = [0u8; 6];
        for (m, hex) in mac.iter_mut().zip(field.split(':')) {
            *m = u8::from_str_radix(hex, 16).expect("hex MAC");
        }
        mac
    }

    /// Open a transport on each end, each the other's peer, with `tweak` applied.
    fn transports(&self, tweak: impl Fn(&mut PacketConfig)) -> (PacketTransport, PacketTransport) {
        let mac_a = Self::mac(&self.name_a, DEV_A);
        let mac_b = Self::mac(&self.name_b, DEV_B);
        let mut ca = PacketConfig::new(DEV_A.into(), mac_b, MTU);
        let mut cb = PacketConfig::new(DEV_B.into(), mac_a, MTU);
        tweak(&mut ca);
        tweak(&mut cb);
        let a = self.a.run(|| PacketTransport::open(ca)).expect("open a");
        let b = self.b.run(|| PacketTransport::open(cb)).expect("open b");
        assert_eq!(a.own_mac(), mac_a, "the MAC read at open is the device's");
        assert_eq!(b.own_mac(), mac_b);
        (a, b)
    }
}

/// A raw frame sent through `t`'s socket as is (any source, destination, EtherType).
fn inject(t: &PacketTransport, frame: &[u8]) {
    let sent = crate::sys::packet::send_frames(t.fd().expect("open"), &[IoSlice::new(frame)])
        .expect("inject a frame");
    assert_eq!(sent, 1);
}

fn frame(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_HEADER_LEN + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The packets the qdisc at the root of `dev` in `ns` has sent (`tc -s -j qdisc show`).
fn qdisc_sent_packets(ns: &str, dev: &str) -> u64 {
    let out = Command::new("tc")
        .args(["-n", ns, "-s", "-j", "qdisc", "show", "dev", dev])
        .output()
        .expect("run tc");
    let text = String::from_utf8_lossy(&out.stdout);
    // [{"kind":"tbf",...,"packets":N,...}]: the first "packets" is the root qdisc's.
    let at = text
        .find("\"packets\":")
        .unwrap_or_else(|| panic!("no packet count in {text}"));
    text[at + 10..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("a number")
}

#[test]
fn invalid_configs_are_refused_with_the_reason() {
    let peer = [0x02, 0, 0, 0, 0, 1];
    let ok = PacketConfig::new("eth0".into(), peer, MTU);
    assert_eq!(ok.ethertype, BRAID_ETHERTYPE);
    assert_eq!(BRAID_ETHERTYPE, 0x88B5);
    let cases = [
        (
            PacketConfig {
                device: String::new(),
                ..ok.clone()
            },
            "device name",
        ),
        (
            PacketConfig {
                device: "a-name-longer-than-15".into(),
                ..ok.clone()
            },
            "device name",
        ),
        (
            PacketConfig {
                peer_mac: [0xff; 6],
                ..ok.clone()
            },
            "multicast or broadcast",
        ),
        (
            PacketConfig {
                peer_mac: [0; 6],
                ..ok.clone()
            },
            "all zeros",
        ),
        (
            PacketConfig {
                mtu: 31,
                ..ok.clone()
            },
            "below the braid header",
        ),
        (
            PacketConfig {
                mtu: MAX_MTU + 1,
                ..ok.clone()
            },
            "above 65521",
        ),
        (
            PacketConfig {
                ethertype: 1500,
                ..ok.clone()
            },
            "0x0600",
        ),
        (
            PacketConfig {
                tx_ethertype: Some(0x05ff),
                ..ok.clone()
            },
            "tx_ethertype",
        ),
        (
            PacketConfig {
                batch: 0,
                ..ok.clone()
            },
            "batch",
        ),
        (
            PacketConfig {
                socket_buffer_bytes: 2 << 30,
                ..ok.clone()
            },
            "1 GiB",
        ),
    ];
    for (cfg, needle) in cases {
        let err = PacketTransport::open(cfg).expect_err("invalid");
        assert!(matches!(err, PacketError::InvalidConfig { .. }), "{err:?}");
        assert!(err.to_string().contains(needle), "{err} lacks {needle:?}");
    }
}

#[test]
fn frame_queue_compacts_and_keeps_order() {
    let mut q = FrameQueue::new(3, 100);
    let h = [7u8; ETH_HEADER_LEN];
    assert!(q.push(&h, &pkt(10, 1)));
    assert!(q.push(&h, &pkt(100, 2)));
    assert!(q.push(&h, &pkt(5, 3)));
    assert!(!q.push(&h, &pkt(5, 4)), "full");
    q.consume(2);
    assert!(q.push(&h, &pkt(7, 5)), "compacted on push");
    assert_eq!(q.len(), 2);
    assert_eq!(&q.frame(q.head)[ETH_HEADER_LEN..], &pkt(5, 3)[..]);
    assert_eq!(&q.frame(q.head + 1)[..ETH_HEADER_LEN], &h[..]);
    assert_eq!(&q.frame(q.head + 1)[ETH_HEADER_LEN..], &pkt(7, 5)[..]);
    assert_eq!(q.clear(), 2);
    assert_eq!((q.head, q.tail), (0, 0));
}

/// Batches both ways over a veth pair arrive byte-exact and in order; the frames pass the
/// device's qdisc (no bypass); the socket buffers are forced to 8 MiB as root.
#[test]
fn batches_cross_a_veth_pair_both_ways_byte_exact() {
    let pair = Pair::new("xchg");
    // A TBF far above the test's rate, to see that frames go through the qdisc.
    let tc = Command::new("tc")
        .args([
            "-n",
            &pair.name_a,
            "qdisc",
            "replace",
            "dev",
            DEV_A,
            "root",
            "tbf",
            "rate",
            "10gbit",
            "burst",
            "1mb",
            "latency",
            "50ms",
        ])
        .status()
        .expect("run tc");
    assert!(tc.success(), "tc qdisc replace");
    let (mut a, mut b) = pair.transports(|_| {});
    assert_eq!(
        a.mtu(),
        MTU,
        "the link MTU: the braid packet is the whole payload"
    );
    let bufs = a.socket_buffers();
    assert!(
        bufs.forced && bufs.recv_bytes >= 8 << 20 && bufs.send_bytes >= 8 << 20,
        "{bufs:?}"
    );
    let qdisc_before = qdisc_sent_packets(&pair.name_a, DEV_A);

    let mut rx_a = a.rx_batch();
    let mut rx_b = b.rx_batch();
    let mut sent_bytes = 0u64;
    for round in 0..4u32 {
        // 64 packets of different sizes, the largest a full MTU.
        let packets: Vec<Vec<u8>> = (0..64u32)
            .map(|i| {
                let len = if i == 63 {
                    MTU
                } else {
                    32 + (i as usize * 23) % (MTU - 32)
                };
                pkt(len, round * 1000 + i)
            })
            .collect();
        sent_bytes += packets.iter().map(|p| p.len() as u64).sum::<u64>();
        send_all(&mut a, &packets);
        assert_eq!(recv_n(&mut b, &mut rx_b, 64), packets, "a→b, round {round}");
        let replies: Vec<Vec<u8>> = packets.iter().rev().take(40).cloned().collect();
        send_all(&mut b, &replies);
        assert_eq!(recv_n(&mut a, &mut rx_a, 40), replies, "b→a, round {round}");
    }
    assert_silent(&mut b, &mut rx_b);
    assert_silent(&mut a, &mut rx_a);

    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!((sa.tx_packets, sa.tx_bytes), (256, sent_bytes));
    assert_eq!((sb.rx_packets, sb.rx_bytes), (256, sent_bytes));
    assert_eq!((sb.tx_packets, sa.rx_packets), (160, 160));
    assert_eq!(sa.tx_syscalls, 4, "one sendmmsg per batch of 64");
    // veth usually delivers a whole batch before sendmmsg returns (8 calls); a busy host
    // may split some, but a receive call still takes several frames.
    assert!(sb.rx_batches < sb.rx_packets / 2, "batched receive: {sb:?}");
    let drops = |s: &TransportStats| {
        s.rx_drop_foreign + s.rx_drop_truncated + s.rx_drop_batch_full + s.tx_errors
    };
    assert_eq!(drops(&sa) + drops(&sb), 0, "{sa:?} {sb:?}");
    assert_eq!(*b.packet_stats(), PacketStats::default());
    let through_qdisc = qdisc_sent_packets(&pair.name_a, DEV_A) - qdisc_before;
    assert!(
        through_qdisc >= 256,
        "a's frames went through its TBF qdisc: {through_qdisc} packets"
    );

    // Too big and full queue are refused and counted.
    assert_eq!(a.queue(&pkt(MTU + 1, 0)), Err(QueueError::TooBig));
    for i in 0..64 {
        a.queue(&pkt(100, i)).expect("room");
    }
    assert_eq!(a.queue(&pkt(100, 99)), Err(QueueError::Full));
    assert_eq!(
        (a.stats().tx_drop_too_big, a.stats().tx_drop_queue_full),
        (1, 1)
    );
    a.flush().expect("flush");
    assert_eq!(recv_n(&mut b, &mut rx_b, 64).len(), 64);
    drop((a, b));
    drop(pair);
}

/// Frames from another source, to another destination, broadcast, or too short for a braid
/// header are dropped and counted by reason; the good frames around them arrive.
#[test]
fn foreign_misaddressed_and_runt_frames_are_dropped_and_counted() {
    let pair = Pair::new("filt");
    let (a, mut b) = pair.transports(|_| {});
    let (mac_a, mac_b) = (a.own_mac(), b.own_mac());
    let stranger = [0x02, 0xba, 0xd0, 0x00, 0x00, 0x01];
    let good = pkt(200, 1);
    let e = BRAID_ETHERTYPE;
    inject(&a, &frame(mac_b, stranger, e, &pkt(200, 2))); // foreign source
    inject(&a, &frame(mac_b, stranger, e, &pkt(300, 3))); // foreign source
    inject(&a, &frame(stranger, mac_a, e, &pkt(200, 4))); // to another host
    inject(&a, &frame([0xff; 6], mac_a, e, &pkt(200, 5))); // broadcast
    inject(&a, &frame(mac_b, mac_a, e, &pkt(31, 6))); // runt: no room for a braid header
    inject(&a, &frame(mac_b, mac_a, e, &good));
    let mut rx = b.rx_batch();
    assert_eq!(
        recv_n(&mut b, &mut rx, 1),
        vec![good],
        "only the good frame"
    );
    assert_silent(&mut b, &mut rx);
    let s = b.stats();
    assert_eq!((s.rx_packets, s.rx_drop_foreign), (1, 2), "{s:?}");
    let p = *b.packet_stats();
    assert_eq!(p.rx_drop_not_for_us, 2, "{p:?}");
    assert_eq!(p.rx_drop_runt, 1, "{p:?}");
    assert_eq!(p.rx_drop_ethertype, 0);
    // Shortest frame accepted: the braid header exactly.
    let shortest = pkt(braid_wire::BRAID_HEADER_LEN, 7);
    inject(&a, &frame(mac_b, mac_a, e, &shortest));
    assert_eq!(recv_n(&mut b, &mut rx, 1), vec![shortest]);
    drop((a, b));
    drop(pair);
}

/// Frames of another EtherType never reach the transport (the socket is bound to braid's):
/// a witness bound to 0x88B6 on the same device shows they did arrive.
#[test]
fn frames_of_another_ethertype_are_ignored() {
    let pair = Pair::new("etyp");
    let (mut a, mut b) = pair.transports(|_| {});
    let (mac_a, mac_b) = (a.own_mac(), b.own_mac());
    let witness_cfg = PacketConfig {
        ethertype: BRAID_ETHERTYPE_ALT,
        ..b.config().clone()
    };
    let mut witness = pair
        .b
        .run(|| PacketTransport::open(witness_cfg))
        .expect("open witness");
    let other = pkt(400, 9);
    inject(&a, &frame(mac_b, mac_a, BRAID_ETHERTYPE_ALT, &other));
    inject(&a, &frame(mac_b, mac_a, 0x0800, &pkt(400, 10))); // IPv4: not braid
    let mut rx_w = witness.rx_batch();
    assert_eq!(
        recv_n(&mut witness, &mut rx_w, 1),
        vec![other],
        "it arrived"
    );
    let mut rx = b.rx_batch();
    assert_silent(&mut b, &mut rx);
    assert_eq!(b.stats(), TransportStats::default(), "b saw nothing");
    assert_eq!(*b.packet_stats(), PacketStats::default());
    // And braid's own frames still do not reach the witness.
    send_all(&mut a, &[pkt(500, 11)]);
    assert_eq!(recv_n(&mut b, &mut rx, 1), vec![pkt(500, 11)]);
    assert_silent(&mut witness, &mut rx_w);
    // A sender with tx_ethertype: its frames carry that EtherType, so they reach the
    // witness and not b (a worker sending to the peer worker that reads the NIC).
    let cross_cfg = PacketConfig {
        ethertype: BRAID_ETHERTYPE_ALT,
        tx_ethertype: Some(BRAID_ETHERTYPE_ALT),
        ..a.config().clone()
    };
    let mut cross = pair
        .a
        .run(|| PacketTransport::open(cross_cfg))
        .expect("open cross sender");
    send_all(&mut cross, &[pkt(600, 12)]);
    assert_eq!(recv_n(&mut witness, &mut rx_w, 1), vec![pkt(600, 12)]);
    assert_silent(&mut b, &mut rx);
    drop((a, b, witness, cross));
    drop(pair);
}

/// A link set down: sends fail and are counted, the transport stays open and works again
/// when the link is up. The device deleted: the transport closes; `maintain` reopens it
/// once a device of that name is back (new ifindex, new MAC), and frames flow again.
#[test]
fn link_down_then_device_deleted_and_recreated() {
    let pair = Pair::new("gone");
    let (mut a, mut b) = pair.transports(|_| {});
    let mut rx = b.rx_batch();
    send_all(&mut a, &[pkt(100, 1)]);
    assert_eq!(recv_n(&mut b, &mut rx, 1).len(), 1);
    assert!(
        !pair.a.run(|| a.maintain()),
        "open and healthy: nothing to do"
    );

    // Down.
    ip(&format!("-n {} link set {DEV_A} down", pair.name_a));
    a.queue(&pkt(100, 2)).expect("room");
    a.queue(&pkt(100, 3)).expect("room");
    let e = a.flush().expect_err("link down");
    assert_eq!(e.raw_os_error(), Some(libc::ENETDOWN), "{e}");
    assert_eq!(a.stats().tx_errors, 2);
    assert!(a.is_open() && !a.has_backlog());
    ip(&format!("-n {} link set {DEV_A} up", pair.name_a));
    // The kernel reports the down link once on receive (sk_err); it is counted, not fatal.
    let mut rx_a = a.rx_batch();
    let _ = a.recv_batch(&mut rx_a);
    assert!(a.is_open());
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while got.is_empty() && Instant::now() < deadline {
        // Carrier comes back asynchronously: retry until a frame passes.
        let _ = a.queue(&pkt(100, 4));
        let _ = a.flush();
        got = recv_n(&mut b, &mut rx, 1);
    }
    assert_eq!(got, vec![pkt(100, 4)], "up again");

    // Gone, noticed by a send.
    ip(&format!("-n {} link del {DEV_A}", pair.name_a));
    a.queue(&pkt(100, 5)).expect("room");
    let e = a.flush().expect_err("device gone");
    assert!(
        matches!(e.raw_os_error(), Some(libc::ENXIO | libc::ENODEV)),
        "{e}"
    );
    assert!(a.fd().is_none() && !a.is_open());
    assert_eq!(a.queue(&pkt(10, 6)), Err(QueueError::Closed));
    assert_eq!(a.stats().tx_drop_closed, 2);
    assert_eq!(a.packet_stats().closed, 1);
    assert!(!pair.a.run(|| a.maintain()), "device still missing");
    assert!(
        matches!(a.last_open_error(), Some(PacketError::NoSuchDevice { .. })),
        "{:?}",
        a.last_open_error()
    );
    assert_eq!(a.packet_stats().reopen_failures, 1);
    // b's end died with the pair: b notices in maintain (idle) and stays closed.
    assert!(!pair.b.run(|| b.maintain()));
    assert!(!b.is_open());

    // Back (a new pair: new ifindex and MACs). Each side learns its own new MAC at reopen;
    // the peers' MACs are configuration, so they are given anew.
    pair.add_link();
    assert!(pair.a.run(|| a.maintain()), "a reopened");
    assert!(pair.b.run(|| b.maintain()), "b reopened");
    assert_eq!(a.stats().reopened, 1);
    assert_eq!(a.own_mac(), Pair::mac(&pair.name_a, DEV_A), "the new MAC");
    drop((a, b));
    let (mut a, mut b) = pair.transports(|_| {});
    let mut rx = b.rx_batch();
    send_all(&mut a, &[pkt(700, 7)]);
    assert_eq!(recv_n(&mut b, &mut rx, 1), vec![pkt(700, 7)]);

    // Gone while idle: maintain notices and, with the device recreated in between, reopens
    // in the same call.
    ip(&format!("-n {} link del {DEV_A}", pair.name_a));
    pair.add_link();
    assert!(
        pair.a.run(|| a.maintain()),
        "closed and reopened in one call"
    );
    assert_eq!((a.packet_stats().closed, a.stats().reopened), (1, 1));
    drop((a, b));
    drop(pair);
}

/// A frame longer than the receive slot is cut by the kernel, seen as such (`MSG_TRUNC`), and
/// dropped as truncated; a frame that fills the slot exactly arrives whole.
#[test]
fn frames_longer_than_the_slot_are_dropped_as_truncated() {
    let pair = Pair::new("trnc");
    let (mut a, b) = pair.transports(|_| {});
    let small = PacketConfig {
        mtu: 1000,
        ..b.config().clone()
    };
    drop(b);
    let mut b = pair.b.run(|| PacketTransport::open(small)).expect("open b");
    let mut rx = b.rx_batch();
    assert_eq!(rx.slot_bytes(), ETH_HEADER_LEN + 1000);
    send_all(
        &mut a,
        &[pkt(1001, 1), pkt(1000, 2), pkt(1500, 3), pkt(999, 4)],
    );
    assert_eq!(recv_n(&mut b, &mut rx, 2), vec![pkt(1000, 2), pkt(999, 4)]);
    assert_silent(&mut b, &mut rx);
    assert_eq!(b.stats().rx_drop_truncated, 2);
    assert_eq!(b.stats().rx_packets, 2);
    drop((a, b));
    drop(pair);
}

/// The device's MTU bounds the configured one; a device without a MAC is refused.
#[test]
fn open_errors_say_what_to_fix() {
    let pair = Pair::new("oerr");
    let mac = [0x02, 0, 0, 0, 0, 9];
    let err = pair
        .a
        .run(|| PacketTransport::open(PacketConfig::new(DEV_A.into(), mac, 9000)))
        .expect_err("mtu above the device's");
    assert!(matches!(err, PacketError::MtuAboveDevice { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "mtu 9000 is above the MTU of bpkt0 (1500): lower nics.mtu or raise the device's \
         (ip link set bpkt0 mtu 9000)"
    );
    let err = pair
        .a
        .run(|| PacketTransport::open(PacketConfig::new("braid-nodev0".into(), mac, MTU)))
        .expect_err("no device");
    assert!(matches!(err, PacketError::NoSuchDevice { .. }), "{err:?}");
    // `lo` has an all-zero hardware address: not a NIC braid can address frames to.
    let err = pair
        .a
        .run(|| PacketTransport::open(PacketConfig::new("lo".into(), mac, MTU)))
        .expect_err("lo");
    assert!(matches!(err, PacketError::NotEthernet { .. }), "{err:?}");
    drop(pair);
}

#[test]
fn zero_allocations_per_send_and_receive_after_open() {
    let pair = Pair::new("allo");
    let (mut a, mut b) = pair.transports(|_| {});
    let control = allocation_counter::measure(|| {
        std::hint::black_box(Vec::<u8>::with_capacity(8));
    });
    assert_eq!(control.count_total, 1, "the counter sees allocations");
    let mut rx = b.rx_batch();
    let packets: Vec<Vec<u8>> = (0..64)
        .map(|i| pkt(if i < 40 { 1400 } else { 600 }, i))
        .collect();
    let mut cycle = |a: &mut PacketTransport, b: &mut PacketTransport| {
        for p in &packets {
            a.queue(p).expect("room");
        }
        a.flush().expect("flush");
        let mut got = 0;
        for _ in 0..100_000 {
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
    drop((a, b));
    drop(pair);
}
