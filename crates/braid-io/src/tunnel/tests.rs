//! Tunnel port tests (root): in a network namespace of the test's own, over its loopback,
//! GRE and VXLAN packets built by braid-wire go out of a port's raw socket and come back in
//! through its receiving socket, byte for byte; a packet above the device MTU is refused and
//! counted while the rest of its batch goes on. The interop with a Linux VXLAN device,
//! tshark and scapy is in crates/braid/tests/tunnels.rs.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use braid_wire::tunnel::{
    Encap, EncapMeta, GreEncap, InnerFormat, InnerMacs, OuterIp, PayloadKind, PayloadMeta,
    VxlanEncap,
};

use super::*;
use crate::sys::netns::NetNs;

const PORT_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const PEER_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

fn netns(test: &str) -> NetNs {
    assert!(
        rustix::process::geteuid().is_root(),
        "needs root: the tunnel port tests open raw sockets in network namespaces"
    );
    let ns =
        NetNs::create(&format!("braid-tnl-{}-{test}", std::process::id())).expect("create netns");
    ns.run(|| crate::netlink::set_link("lo", None, true).expect("lo up"));
    ns
}

/// An IPv4/UDP packet of `len` bytes whose payload depends on `tag`.
fn inner(len: usize, tag: u8) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7) ^ tag).collect();
    braid_wire::ip::emit_udp_ipv4(
        &mut p,
        Ipv4Addr::new(192, 168, 9, 1),
        Ipv4Addr::new(192, 168, 9, 2),
        1000,
        2000,
        0,
    )
    .unwrap();
    p
}

/// Outer packets from the peer address to the port's, as braid-wire encapsulates them.
fn outer(encap: &Encap, count: u8, len: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|k| {
            let inner = inner(len, k);
            let mut out = vec![0u8; encap.overhead() + inner.len()];
            let meta = EncapMeta {
                flow_hash: 5,
                // Non-zero: the kernel fills in a zero IPv4 id of a raw packet itself.
                ip_id: 100 + u16::from(k),
                gre_seq: u32::from(k),
                vlan: None,
            };
            let n = encap.encap_into(&inner, &mut out, meta).unwrap();
            out.truncate(n);
            out
        })
        .collect()
}

/// Receive until `n` packets arrived or 2 s passed; each as (payload meta, bytes).
fn recv_n(port: &mut TunnelPort, n: usize) -> Vec<(Option<PayloadMeta>, Vec<u8>)> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        let k = port
            .recv_batch(|rx| match rx {
                TunnelRx::Outer(b) => got.push((None, b.to_vec())),
                TunnelRx::Payload(m, b) => got.push((Some(m), b.to_vec())),
            })
            .expect("recv");
        if k == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    got
}

fn send_all(port: &mut TunnelPort, packets: &[Vec<u8>]) {
    for p in packets {
        port.queue(p).expect("room in the queue");
    }
    port.flush().expect("flush");
    assert!(!port.has_backlog());
}

#[test]
fn gre_over_ipv4_out_of_the_raw_socket_and_back_whole() {
    let ns = netns("gre");
    ns.run(|| {
        let cfg = TunnelPortConfig::new(TunnelKind::Gre, IpAddr::V4(PORT_ADDR), Some("lo".into()));
        let mut port = TunnelPort::open(cfg).expect("open");
        assert!(port.fd().is_some());
        let mut gre = GreEncap::new(
            OuterIp::V4 {
                src: PEER_ADDR,
                dst: PORT_ADDR,
            },
            InnerFormat::Ip,
        );
        gre.key = Some(0x0102_0304);
        gre.seq = true;
        let packets = outer(&Encap::Gre(gre), 40, 300);
        send_all(&mut port, &packets);
        let got = recv_n(&mut port, packets.len());
        // The kernel sent them as they were (checksum, id and length already right) and
        // the raw GRE socket hands over the whole IPv4 packet.
        assert_eq!(got.len(), packets.len());
        for ((meta, bytes), sent) in got.iter().zip(&packets) {
            assert!(meta.is_none());
            assert_eq!(bytes, sent);
        }
        let s = port.stats();
        assert_eq!((s.tx_packets, s.rx_packets), (40, 40));
        assert!(
            s.tx_syscalls <= 2,
            "batched: {} sendmmsg calls",
            s.tx_syscalls
        );
        assert!(
            s.rx_batches < 40,
            "batched: {} recvmmsg calls",
            s.rx_batches
        );
        assert_eq!(s.tx_errors + s.rx_errors + s.rx_drop_truncated, 0);
    });
}

#[test]
fn vxlan_payload_arrives_on_the_udp_socket_with_its_source() {
    let ns = netns("vxlan");
    ns.run(|| {
        let cfg = TunnelPortConfig::new(
            TunnelKind::Vxlan { port: 4789 },
            IpAddr::V4(PORT_ADDR),
            Some("lo".into()),
        );
        let mut port = TunnelPort::open(cfg).expect("open");
        let vxlan = VxlanEncap::new(
            OuterIp::V4 {
                src: PEER_ADDR,
                dst: PORT_ADDR,
            },
            7,
            InnerFormat::IpInEthernet(InnerMacs::default()),
        );
        let packets = outer(&Encap::Vxlan(vxlan), 10, 200);
        send_all(&mut port, &packets);
        let got = recv_n(&mut port, packets.len());
        assert_eq!(got.len(), packets.len());
        for ((meta, bytes), sent) in got.iter().zip(&packets) {
            let meta = meta.expect("a payload with its addresses");
            assert_eq!(meta.src, IpAddr::V4(PEER_ADDR));
            assert_eq!(meta.dst, IpAddr::V4(PORT_ADDR));
            let src_port = u16::from_be_bytes([sent[20], sent[21]]);
            assert_eq!(meta.kind, PayloadKind::Vxlan { src_port });
            // The UDP socket strips 20 + 8 bytes of outer headers.
            assert_eq!(bytes[..], sent[28..]);
        }
        // A send-only port opens no receiving socket (so a second one may exist).
        let mut cfg = TunnelPortConfig::new(
            TunnelKind::Vxlan { port: 4789 },
            IpAddr::V4(PORT_ADDR),
            None,
        );
        cfg.receive = false;
        let mut tx_only = TunnelPort::open(cfg).expect("open send-only");
        assert!(tx_only.fd().is_none());
        assert_eq!(tx_only.recv_batch(|_| {}).unwrap(), 0);
        send_all(&mut tx_only, &packets[..1]);
        assert_eq!(recv_n(&mut port, 1).len(), 1);
    });
}

#[test]
fn a_packet_above_the_device_mtu_is_refused_and_counted_and_the_batch_goes_on() {
    let ns = netns("mtu");
    ns.run(|| {
        crate::netlink::set_link("lo", Some(1500), true).expect("lo mtu");
        let cfg = TunnelPortConfig::new(TunnelKind::Gre, IpAddr::V4(PORT_ADDR), Some("lo".into()));
        let mut port = TunnelPort::open(cfg).expect("open");
        let gre = Encap::Gre(GreEncap::new(
            OuterIp::V4 {
                src: PEER_ADDR,
                dst: PORT_ADDR,
            },
            InnerFormat::Ip,
        ));
        let small = outer(&gre, 2, 100);
        let big = outer(&gre, 1, 1600);
        for p in [&small[0], &big[0], &small[1]] {
            port.queue(p).unwrap();
        }
        let e = port.flush().expect_err("EMSGSIZE");
        assert_eq!(e.raw_os_error(), Some(libc::EMSGSIZE), "{e}");
        assert!(!port.has_backlog());
        let got = recv_n(&mut port, 2);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1, small[0]);
        assert_eq!(got[1].1, small[1]);
        let s = port.stats();
        assert_eq!((s.tx_packets, s.tx_errors), (2, 1));
        // Not IPv4, or larger than a slot: refused before the kernel.
        assert_eq!(port.queue(&[0x60; 60]), Err(QueueError::TooBig));
        assert_eq!(port.queue(&vec![0x45; 10_000]), Err(QueueError::TooBig));
        assert_eq!(port.stats().tx_drop_too_big, 2);
    });
}

/// Over IPv6 the raw GRE socket hands over the payload without the IPv6 header, with the
/// source address; the UDP socket does the same for VXLAN (whose UDP checksum braid-wire
/// computes, as IPv6 requires, and the kernel verifies).
#[test]
fn ipv6_payloads_arrive_with_their_source() {
    use std::net::Ipv6Addr;
    let ns = netns("v6");
    ns.run(|| {
        let lo = Ipv6Addr::LOCALHOST;
        let outer_ip = OuterIp::V6 { src: lo, dst: lo };
        let mut gre = GreEncap::new(outer_ip, InnerFormat::Ip);
        gre.key = Some(9);
        let vxlan = VxlanEncap::new(outer_ip, 3, InnerFormat::IpInEthernet(InnerMacs::default()));
        for (kind, encap, strip) in [
            (TunnelKind::Gre, Encap::Gre(gre), 40),
            (TunnelKind::Vxlan { port: 4789 }, Encap::Vxlan(vxlan), 48),
        ] {
            let cfg = TunnelPortConfig::new(kind, IpAddr::V6(lo), Some("lo".into()));
            let mut port = TunnelPort::open(cfg).expect("open");
            let packets = outer(&encap, 5, 120);
            send_all(&mut port, &packets);
            let got = recv_n(&mut port, packets.len());
            assert_eq!(got.len(), packets.len(), "{kind:?}");
            for ((meta, bytes), sent) in got.iter().zip(&packets) {
                let meta = meta.expect("a payload with its addresses");
                assert_eq!((meta.src, meta.dst), (IpAddr::V6(lo), IpAddr::V6(lo)));
                assert_eq!(bytes[..], sent[strip..], "{kind:?}");
            }
            // An IPv4 packet is not for this port.
            assert_eq!(port.queue(&[0x45; 60]), Err(QueueError::TooBig));
        }
    });
}
