//! Standard IP fragmentation against a real peer: the Linux kernel (issue 4, item 3). Root only:
//! without root every test fails saying so.
//!
//! Each test builds two network namespaces, `braid-ifa-<pid>-<case>` and
//! `braid-ifb-<pid>-<case>` (made with `ip netns add`, removed by a drop guard even on panic),
//! joined by one veth pair (`ifa0` in a, `ifb0` in b, fixed MACs, MTU 1500 or 1280) with IPv4
//! (10.77.0.1/24, 10.77.0.2/24) and IPv6 (fd00:b4a1:f::1/64, ::2, no DAD) addresses.
//!
//! - **braid fragments, the kernel reassembles**: IPv4/UDP and IPv6/UDP packets built here
//!   (pattern payload, correct UDP checksum from `braid_wire::checksum`) are cut by
//!   `braid_core::ipfrag::Fragmenter` to the veth MTU and sent from namespace a through braid's
//!   own raw Ethernet transport (`braid_io::packet`, bound to the IP EtherType), so the kernel
//!   in b sees braid's bytes exactly as written: no IP layer on the sending side may fix a
//!   length or a checksum, or fragment again (a raw `IPPROTO_RAW` socket would rewrite the
//!   IPv4 total length and header checksum). A UDP socket in b must receive every datagram
//!   byte-exact; a capture in b checks that the fragments arrived as braid wrote them; b's
//!   `/proc/net/snmp` (`Ip: ReasmReqds/ReasmOKs/ReasmFails`, `Udp: InDatagrams/InCsumErrors`)
//!   or `/proc/net/snmp6` counters must move by exactly the fragments and datagrams sent, with
//!   no failure.
//! - **the kernel fragments, braid reassembles**: a UDP socket in b sends datagrams larger than
//!   the MTU (IPv4 with `IP_PMTUDISC_DONT`; IPv6 fragments at the source by itself); an
//!   `AF_PACKET` socket in a captures the L3 packets before a's IP layer and feeds each to
//!   `braid_core::ipfrag::IpReassembler::insert`. Every datagram must come out once, with a
//!   valid header and UDP checksum and the payload sent; the kernel of a, which reassembles the
//!   same fragments, must deliver the same payload. The captured fragments are then permuted
//!   across datagrams and some duplicated, fed to a fresh reassembler, and must give the same
//!   packets, the duplicates counted and nothing else dropped.
//!
//! Every wait is bounded (2 s per datagram); the whole file runs in well under 10 s.

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
    use std::os::fd::AsFd;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use braid_core::buffer::PacketStore;
    use braid_core::ipfrag::{
        FragIdCounter, Fragmenter, IpFragDrop, IpFragOutcome, IpReassembler, IpReassemblyConfig,
    };
    use braid_io::dataplane::now;
    use braid_io::packet::{PacketConfig, PacketTransport};
    use braid_io::transport::NicTransport;
    use braid_wire::checksum::{Sum, checksum};
    use socket2::{Domain, Protocol, Socket, Type};

    const DEV_A: &str = "ifa0";
    const DEV_B: &str = "ifb0";
    const MAC_A: [u8; 6] = [0x02, 0xb4, 0x1d, 0xf0, 0x00, 0x0a];
    const MAC_B: [u8; 6] = [0x02, 0xb4, 0x1d, 0xf0, 0x00, 0x0b];
    const V4_A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
    const V4_B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
    const V6_A: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xb4a1, 0xf, 0, 0, 0, 0, 1);
    const V6_B: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xb4a1, 0xf, 0, 0, 0, 0, 2);
    const PORT_A: u16 = 40_001;
    const PORT_B: u16 = 40_002;
    const ETH_P_IP: u16 = 0x0800;
    const ETH_P_IPV6: u16 = 0x86DD;
    const UDP: u8 = 17;
    /// The longest wait for one datagram (sent, captured, reassembled).
    const WAIT: Duration = Duration::from_secs(2);

    /// Total L3 sizes (IP header included) sent in each direction, after the first one, which
    /// is the MTU + 1. 65 535 is the largest IPv4 packet, and the largest reassembled packet
    /// braid's `IpReassembler` hands out for either family (`max_datagram_bytes`).
    const SIZES: [usize; 4] = [3000, 9000, 65_000, 65_535];
    /// Datagrams per size: different payloads, so that no two datagrams are alike.
    const ROUNDS: u32 = 2;

    fn require_root() {
        assert!(
            rustix::process::geteuid().is_root(),
            "this test needs root (network namespaces, veth, AF_PACKET); run it as root"
        );
    }

    /// Run `ip <args>` and check it succeeded.
    fn ip(args: &[&str]) {
        let out = Command::new("ip")
            .args(args)
            .output()
            .expect("run ip (iproute2)");
        assert!(
            out.status.success(),
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A namespace made by `ip netns add`, deleted on drop. (braid-io's own `sys::netns` is a
    /// crate-private unit-test helper, out of reach of an integration test; creating one
    /// without `ip` needs `unshare`, which is unsafe.)
    struct Netns(String);

    impl Netns {
        fn add(name: String) -> Self {
            // A leftover of a crashed run with the same pid (usually none: quiet).
            let _ = Command::new("ip")
                .args(["netns", "del", &name])
                .stderr(Stdio::null())
                .status();
            ip(&["netns", "add", &name]);
            Self(name)
        }

        /// Runs `f` on a thread inside the namespace (sockets made there stay in it).
        fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
            let path = format!("/run/netns/{}", self.0);
            std::thread::scope(|s| {
                s.spawn(|| {
                    let ns = std::fs::File::open(&path).expect("open the namespace");
                    rustix::thread::move_into_link_name_space(
                        ns.as_fd(),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                    .expect("setns into the namespace");
                    f()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
        }
    }

    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.0])
                .stderr(Stdio::null())
                .status();
        }
    }

    /// Two namespaces joined by one veth pair of MTU `mtu`, addressed, both ends up. Declared
    /// first in each test, so it is dropped after the sockets.
    struct Testbed {
        a: Netns,
        b: Netns,
        mtu: usize,
    }

    impl Testbed {
        fn new(case: &str, mtu: usize) -> Self {
            require_root();
            let pid = std::process::id();
            let a = Netns::add(format!("braid-ifa-{pid}-{case}"));
            let b = Netns::add(format!("braid-ifb-{pid}-{case}"));
            let mac = |m: [u8; 6]| {
                m.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":")
            };
            let (mac_a, mac_b, mtu_s) = (mac(MAC_A), mac(MAC_B), mtu.to_string());
            ip(&[
                "link", "add", DEV_A, "address", &mac_a, "mtu", &mtu_s, "netns", &a.0, "type",
                "veth", "peer", "name", DEV_B, "address", &mac_b, "mtu", &mtu_s, "netns", &b.0,
            ]);
            for (ns, dev, v4, v6) in [(&a, DEV_A, V4_A, V6_A), (&b, DEV_B, V4_B, V6_B)] {
                ip(&["-n", &ns.0, "addr", "add", &format!("{v4}/24"), "dev", dev]);
                ip(&[
                    "-n",
                    &ns.0,
                    "addr",
                    "add",
                    &format!("{v6}/64"),
                    "dev",
                    dev,
                    "nodad",
                ]);
                ip(&["-n", &ns.0, "link", "set", dev, "up"]);
            }
            Self { a, b, mtu }
        }
    }

    /// The address family under test.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Family {
        V4,
        V6,
    }

    impl Family {
        fn addr_a(self) -> IpAddr {
            match self {
                Self::V4 => V4_A.into(),
                Self::V6 => V6_A.into(),
            }
        }

        fn addr_b(self) -> IpAddr {
            match self {
                Self::V4 => V4_B.into(),
                Self::V6 => V6_B.into(),
            }
        }

        fn ethertype(self) -> u16 {
            match self {
                Self::V4 => ETH_P_IP,
                Self::V6 => ETH_P_IPV6,
            }
        }

        /// IP + UDP header bytes of an unfragmented packet.
        fn headers(self) -> usize {
            match self {
                Self::V4 => 28,
                Self::V6 => 48,
            }
        }

        /// Fragments of a `total`-byte packet (no options or extension headers) when each
        /// fragment is filled up to `mtu` with a multiple of 8 data bytes (RFC 791 §2.3,
        /// RFC 8200 §4.5): what both braid and Linux produce.
        fn fragments(self, total: usize, mtu: usize) -> usize {
            let (fixed, per_fragment) = match self {
                Self::V4 => (20, 20),
                Self::V6 => (40, 48),
            };
            (total - fixed).div_ceil((mtu - per_fragment) / 8 * 8)
        }

        /// The source address of an L3 packet of this family, if it parses that far.
        fn source(self, packet: &[u8]) -> Option<IpAddr> {
            match self {
                Self::V4 if packet.len() >= 20 && packet[0] >> 4 == 4 => {
                    Some(Ipv4Addr::from(<[u8; 4]>::try_from(&packet[12..16]).ok()?).into())
                }
                Self::V6 if packet.len() >= 40 && packet[0] >> 4 == 6 => {
                    Some(Ipv6Addr::from(<[u8; 16]>::try_from(&packet[8..24]).ok()?).into())
                }
                _ => None,
            }
        }
    }

    /// The UDP payload of datagram `tag`: the tag, then a pattern that depends on it.
    fn payload(len: usize, tag: u32) -> Vec<u8> {
        let mut p: Vec<u8> = (0..len)
            .map(|i| (tag as usize * 31 + i * 7) as u8 ^ (i >> 8) as u8)
            .collect();
        let n = len.min(4);
        p[..n].copy_from_slice(&tag.to_be_bytes()[..n]);
        p
    }

    /// The UDP checksum over `udp` (its checksum field zero) with the family's pseudo-header
    /// (RFC 768, RFC 8200 §8.1); a computed 0 is sent as 0xFFFF.
    fn udp_checksum(src: IpAddr, dst: IpAddr, udp: &[u8]) -> u16 {
        let sum = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Sum::new().add_ipv4_pseudo_header(
                s.octets(),
                d.octets(),
                UDP,
                u16::try_from(udp.len()).expect("udp length"),
            ),
            (IpAddr::V6(s), IpAddr::V6(d)) => Sum::new().add_ipv6_pseudo_header(
                s.octets(),
                d.octets(),
                UDP,
                u32::try_from(udp.len()).expect("udp length"),
            ),
            _ => unreachable!("one family"),
        };
        match sum.add_bytes(udp).checksum() {
            0 => 0xffff,
            c => c,
        }
    }

    /// A whole IP/UDP packet of `total` bytes from a to b, as an application would hand it to
    /// braid's vNIC: IPv4 with DF clear and identification `id`, IPv6 without extension
    /// headers.
    fn udp_packet(family: Family, total: usize, tag: u32, id: u16) -> Vec<u8> {
        let (src, dst) = (family.addr_a(), family.addr_b());
        let ip_len = family.headers() - 8;
        let mut udp = Vec::with_capacity(total - ip_len);
        let udp_len = u16::try_from(total - ip_len).expect("udp length fits 16 bits");
        udp.extend_from_slice(&PORT_A.to_be_bytes());
        udp.extend_from_slice(&PORT_B.to_be_bytes());
        udp.extend_from_slice(&udp_len.to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(&payload(total - family.headers(), tag));
        let c = udp_checksum(src, dst, &udp);
        udp[6..8].copy_from_slice(&c.to_be_bytes());
        let mut p = Vec::with_capacity(total);
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let total16 = u16::try_from(total).expect("ipv4 total length");
                p.extend_from_slice(&[0x45, 0]);
                p.extend_from_slice(&total16.to_be_bytes());
                p.extend_from_slice(&id.to_be_bytes());
                p.extend_from_slice(&[0, 0, 64, UDP, 0, 0]);
                p.extend_from_slice(&s.octets());
                p.extend_from_slice(&d.octets());
                let c = checksum(&p);
                p[10..12].copy_from_slice(&c.to_be_bytes());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                p.extend_from_slice(&[0x60, 0, 0, 0]);
                p.extend_from_slice(&udp_len.to_be_bytes());
                p.extend_from_slice(&[UDP, 64]);
                p.extend_from_slice(&s.octets());
                p.extend_from_slice(&d.octets());
            }
            _ => unreachable!("one family"),
        }
        p.extend_from_slice(&udp);
        assert_eq!(p.len(), total);
        p
    }

    /// Checks a reassembled packet from b to a: well-formed header (IPv4: no MF, offset 0,
    /// valid checksum), the lengths, the UDP ports and checksum; returns its UDP payload.
    fn check_reassembled(family: Family, packet: &[u8], total: usize) -> Vec<u8> {
        assert_eq!(packet.len(), total, "reassembled length");
        let ip_len = family.headers() - 8;
        match family {
            Family::V4 => {
                assert_eq!(packet[0], 0x45, "IPv4, no options");
                assert_eq!(
                    usize::from(u16::from_be_bytes([packet[2], packet[3]])),
                    total,
                    "total length"
                );
                assert_eq!(
                    u16::from_be_bytes([packet[6], packet[7]]),
                    0,
                    "no flags (IP_PMTUDISC_DONT: no DF; MF clear), offset 0"
                );
                assert_eq!(packet[9], UDP);
                assert_eq!(checksum(&packet[..20]), 0, "IPv4 header checksum");
            }
            Family::V6 => {
                assert_eq!(packet[0] >> 4, 6);
                assert_eq!(
                    usize::from(u16::from_be_bytes([packet[4], packet[5]])),
                    total - 40,
                    "payload length"
                );
                assert_eq!(packet[6], UDP, "no Fragment header left");
            }
        }
        assert_eq!(family.source(packet), Some(family.addr_b()), "source");
        let udp = &packet[ip_len..];
        assert_eq!(u16::from_be_bytes([udp[0], udp[1]]), PORT_B, "source port");
        assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), PORT_A, "dest port");
        assert_eq!(
            usize::from(u16::from_be_bytes([udp[4], udp[5]])),
            udp.len(),
            "udp length"
        );
        let mut zeroed = udp.to_vec();
        zeroed[6..8].fill(0);
        assert_eq!(
            udp_checksum(family.addr_b(), family.addr_a(), &zeroed),
            u16::from_be_bytes([udp[6], udp[7]]),
            "UDP checksum over the reassembled datagram"
        );
        udp[8..].to_vec()
    }

    /// A UDP socket bound to `addr:port` with a read timeout (call inside the namespace).
    fn udp_socket(addr: IpAddr, port: u16) -> UdpSocket {
        let s = UdpSocket::bind(SocketAddr::new(addr, port)).expect("bind udp");
        s.set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        s
    }

    /// An `AF_PACKET`/`SOCK_DGRAM` socket receiving every incoming packet of `ethertype` in
    /// the namespace as an L3 packet, taken before the IP layer (call inside the namespace).
    fn capture_socket(ethertype: u16) -> Socket {
        let proto = Protocol::from(i32::from(ethertype.to_be()));
        let s = Socket::new(Domain::PACKET, Type::DGRAM, Some(proto)).expect("AF_PACKET socket");
        s.set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        s.set_recv_buffer_size(4 << 20).expect("rcvbuf");
        s
    }

    /// The next packet from `s`, or `None` after its read timeout.
    fn recv_packet(mut s: &Socket, buf: &mut [u8]) -> Option<usize> {
        match s.read(buf) {
            Ok(n) => Some(n),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
            Err(e) => panic!("capture: {e}"),
        }
    }

    /// The next UDP datagram on `s` within [`WAIT`], with its source.
    fn recv_datagram(s: &UdpSocket, buf: &mut [u8]) -> (usize, SocketAddr) {
        let deadline = Instant::now() + WAIT;
        loop {
            match s.recv_from(buf) {
                Ok(got) => return got,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    assert!(Instant::now() < deadline, "no datagram within {WAIT:?}");
                }
                Err(e) => panic!("udp receive: {e}"),
            }
        }
    }

    /// `name`'s value in the namespace's SNMP counters: `/proc/net/snmp` (header and value
    /// lines, `Ip: ReasmOKs`) for a `Prefix:Name` key, `/proc/net/snmp6` (`Ip6ReasmOKs N`)
    /// otherwise. `/proc/thread-self` because `/proc/net` is the *process's* namespace.
    fn snmp(ns: &Netns, key: &str) -> u64 {
        let file = if key.contains(':') { "snmp" } else { "snmp6" };
        let text = ns.run(|| {
            std::fs::read_to_string(format!("/proc/thread-self/net/{file}")).expect("read snmp")
        });
        let value = if let Some((prefix, name)) = key.split_once(':') {
            let prefix = format!("{prefix}:");
            let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
            let names = lines.next().expect("snmp header line");
            let values = lines.next().expect("snmp value line");
            names
                .split_whitespace()
                .zip(values.split_whitespace())
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_owned())
        } else {
            text.lines()
                .filter_map(|l| l.split_once(char::is_whitespace))
                .find(|(n, _)| *n == key)
                .map(|(_, v)| v.trim().to_owned())
        };
        value
            .unwrap_or_else(|| panic!("no counter {key} in {file}"))
            .parse()
            .expect("a number")
    }

    /// The kernel's reassembly and UDP counters of a namespace.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct KernelCounters {
        reasm_reqds: u64,
        reasm_oks: u64,
        reasm_fails: u64,
        udp_in: u64,
        udp_csum_errors: u64,
    }

    impl KernelCounters {
        fn read(ns: &Netns, family: Family) -> Self {
            let keys = match family {
                Family::V4 => [
                    "Ip:ReasmReqds",
                    "Ip:ReasmOKs",
                    "Ip:ReasmFails",
                    "Udp:InDatagrams",
                    "Udp:InCsumErrors",
                ],
                Family::V6 => [
                    "Ip6ReasmReqds",
                    "Ip6ReasmOKs",
                    "Ip6ReasmFails",
                    "Udp6InDatagrams",
                    "Udp6InCsumErrors",
                ],
            };
            let [reasm_reqds, reasm_oks, reasm_fails, udp_in, udp_csum_errors] =
                keys.map(|k| snmp(ns, k));
            Self {
                reasm_reqds,
                reasm_oks,
                reasm_fails,
                udp_in,
                udp_csum_errors,
            }
        }

        fn since(self, before: Self) -> Self {
            Self {
                reasm_reqds: self.reasm_reqds - before.reasm_reqds,
                reasm_oks: self.reasm_oks - before.reasm_oks,
                reasm_fails: self.reasm_fails - before.reasm_fails,
                udp_in: self.udp_in - before.udp_in,
                udp_csum_errors: self.udp_csum_errors - before.udp_csum_errors,
            }
        }
    }

    /// The sizes for a link of `mtu`: one byte over the MTU, then [`SIZES`].
    fn sizes(mtu: usize) -> Vec<usize> {
        std::iter::once(mtu + 1).chain(SIZES).collect()
    }

    /// braid fragments every size to the testbed's MTU and sends the fragments from a (in order
    /// for the first round, reversed for the second); b's kernel must reassemble every
    /// datagram and deliver it byte-exact to a UDP socket.
    fn braid_fragments_kernel_reassembles(tb: &Testbed, family: Family) {
        let mtu = tb.mtu;
        let ethertype = family.ethertype();
        let (sock_b, capture_b) = tb.b.run(|| {
            (
                udp_socket(family.addr_b(), PORT_B),
                capture_socket(ethertype),
            )
        });
        let mut tx = tb.a.run(|| {
            PacketTransport::open(PacketConfig {
                ethertype,
                ..PacketConfig::new(DEV_A.into(), MAC_B, mtu)
            })
            .expect("open braid's raw Ethernet transport on a")
        });
        let before = KernelCounters::read(&tb.b, family);
        let mut ids = FragIdCounter::new(0x5eed_0001);
        let mut frag_buf = vec![0u8; mtu];
        let mut rx_buf = vec![0u8; 1 << 16];
        let (mut datagrams, mut fragments, mut bytes) = (0u64, 0u64, 0u64);
        for (i, &total) in sizes(mtu).iter().enumerate() {
            for round in 0..ROUNDS {
                let tag = u32::try_from(i).expect("few sizes") * 16 + round;
                let id = u16::try_from(0x4000 + tag).expect("small id");
                let packet = udp_packet(family, total, tag, id);
                let mut frags = Fragmenter::new(&packet, mtu, &mut ids).expect("fragmentable");
                let mut sent = Vec::new();
                while let Some(len) = frags.write_next(&mut frag_buf).expect("mtu-sized buffer") {
                    assert!(len <= mtu, "fragment of {len} bytes over the MTU {mtu}");
                    sent.push(frag_buf[..len].to_vec());
                }
                assert_eq!(
                    sent.len(),
                    family.fragments(total, mtu),
                    "{family:?} {total} B at MTU {mtu}: full-sized fragments"
                );
                if round == 1 {
                    sent.reverse();
                }
                for f in &sent {
                    tx.queue(f).expect("room in the send queue");
                }
                tx.flush().expect("send the fragments");
                assert!(!tx.has_backlog(), "veth took every fragment");

                let (n, from) = recv_datagram(&sock_b, &mut rx_buf);
                assert_eq!(from, SocketAddr::new(family.addr_a(), PORT_A), "source");
                assert!(
                    rx_buf[..n] == packet[family.headers()..],
                    "{family:?} {total} B (round {round}): b's kernel delivered {n} bytes \
                     that differ from the datagram braid fragmented"
                );

                // The fragments reached b as braid wrote them (not fragmented again nor
                // rewritten on the way); the UDP socket had them all, so they were captured.
                let mut seen = Vec::new();
                let deadline = Instant::now() + WAIT;
                while seen.len() < sent.len() && Instant::now() < deadline {
                    if let Some(n) = recv_packet(&capture_b, &mut rx_buf)
                        && family.source(&rx_buf[..n]) == Some(family.addr_a())
                    {
                        seen.push(rx_buf[..n].to_vec());
                    }
                }
                assert!(
                    seen == sent,
                    "b captured braid's fragments unchanged, in order"
                );
                datagrams += 1;
                fragments += sent.len() as u64;
                bytes += total as u64;
            }
        }
        let moved = KernelCounters::read(&tb.b, family).since(before);
        eprintln!(
            "braid->kernel {family:?} MTU {mtu}: {datagrams} datagrams ({bytes} B) in \
             {fragments} fragments; b's kernel: {moved:?}"
        );
        assert_eq!(
            moved,
            KernelCounters {
                reasm_reqds: fragments,
                reasm_oks: datagrams,
                reasm_fails: 0,
                udp_in: datagrams,
                udp_csum_errors: 0,
            },
            "b's kernel reassembled every datagram from exactly braid's fragments"
        );
    }

    /// One captured fragment and the datagram it belongs to.
    struct Captured {
        datagram: usize,
        packet: Vec<u8>,
    }

    /// A tiny seeded generator (xorshift64*) for the permutation.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
            usize::try_from(x >> 33).expect("31 bits") % n
        }
    }

    /// Reassembled packets out of `insert`, taken out of `store`.
    fn take(store: &mut PacketStore, outcome: IpFragOutcome) -> Option<Vec<u8>> {
        match outcome {
            IpFragOutcome::Complete { buf, len } => {
                let bytes = store.get(&buf).to_vec();
                assert_eq!(bytes.len(), len);
                store.free(buf);
                Some(bytes)
            }
            IpFragOutcome::Pending | IpFragOutcome::NotFragment => None,
            IpFragOutcome::Dropped(reason) => panic!("fragment dropped: {reason:?}"),
        }
    }

    /// b's kernel fragments every size (a UDP socket, datagrams over the MTU); a captures the
    /// fragments and braid's reassembler must give back every datagram. Then the same
    /// fragments, permuted across datagrams with some duplicated, into a fresh reassembler.
    fn kernel_fragments_braid_reassembles(tb: &Testbed, family: Family) {
        let mtu = tb.mtu;
        let (capture_a, sock_a) = tb.a.run(|| {
            (
                capture_socket(family.ethertype()),
                udp_socket(family.addr_a(), PORT_A),
            )
        });
        let sock_b = tb.b.run(|| {
            let s = udp_socket(family.addr_b(), PORT_B);
            if family == Family::V4 {
                // The kernel fragments instead of refusing a datagram over the MTU (and sets
                // no DF). IPv6 fragments at the source whatever this is (RFC 8200 §5).
                rustix::net::sockopt::set_ip_mtu_discover(
                    &s,
                    rustix::net::sockopt::Ipv4PathMtuDiscovery::DONT,
                )
                .expect("IP_MTU_DISCOVER");
            }
            s
        });
        let before_a = KernelCounters::read(&tb.a, family);
        let mut reasm = IpReassembler::new(IpReassemblyConfig::default());
        let mut store = PacketStore::new(1 << 20, 1 << 16);
        let mut captured: Vec<Captured> = Vec::new();
        let mut reassembled: Vec<Vec<u8>> = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut not_fragments = 0u64;
        let mut bytes = 0u64;
        for (i, &total) in sizes(mtu).iter().enumerate() {
            for round in 0..ROUNDS {
                let datagram = reassembled.len();
                let tag = 0x1000 + u32::try_from(i).expect("few sizes") * 16 + round;
                let data = payload(total - family.headers(), tag);
                let to = SocketAddr::new(family.addr_a(), PORT_A);
                assert_eq!(sock_b.send_to(&data, to).expect("send"), data.len());

                let first = captured.len();
                let deadline = Instant::now() + WAIT;
                let packet = loop {
                    assert!(
                        Instant::now() < deadline,
                        "{family:?} {total} B: braid did not reassemble it within {WAIT:?} \
                         ({} fragments captured, {:?})",
                        captured.len() - first,
                        reasm.stats()
                    );
                    let Some(n) = recv_packet(&capture_a, &mut buf) else {
                        continue;
                    };
                    let l3 = &buf[..n];
                    if family.source(l3) != Some(family.addr_b()) {
                        continue; // link-local NDP, MLD, router solicitations
                    }
                    match reasm.insert(now(), &mut store, l3) {
                        IpFragOutcome::NotFragment => {
                            // NDP from b's address; never one of the test's datagrams.
                            let next = if family == Family::V4 { l3[9] } else { l3[6] };
                            assert_ne!(next, UDP, "the kernel sent a datagram unfragmented");
                            not_fragments += 1;
                            continue;
                        }
                        outcome => {
                            captured.push(Captured {
                                datagram,
                                packet: l3.to_vec(),
                            });
                            if let Some(p) = take(&mut store, outcome) {
                                break p;
                            }
                        }
                    }
                };
                let got = check_reassembled(family, &packet, total);
                assert!(got == data, "{family:?} {total} B: braid's payload differs");
                assert_eq!(
                    captured.len() - first,
                    family.fragments(total, mtu),
                    "{family:?} {total} B at MTU {mtu}: the kernel's fragment count"
                );
                // a's kernel reassembled the same fragments: the same payload.
                let (n, from) = recv_datagram(&sock_a, &mut buf);
                assert_eq!(from, SocketAddr::new(family.addr_b(), PORT_B));
                assert!(
                    buf[..n] == data[..],
                    "a's kernel delivered the same payload"
                );
                reassembled.push(packet);
                bytes += total as u64;
            }
        }
        let n = reassembled.len() as u64;
        let fragments = captured.len() as u64;
        let st = reasm.stats();
        assert_eq!(
            (st.fragments_in, st.fragments_accepted, st.fragments_dropped),
            (fragments, fragments, 0)
        );
        assert_eq!((st.datagrams_started, st.datagrams_completed), (n, n));
        assert_eq!(st.datagrams_dropped, 0);
        assert_eq!(st.drops.total(), 0);
        assert_eq!(
            (st.contexts_live, st.tombstones_live, st.bytes_held),
            (0, 0, 0)
        );
        assert_eq!(st.packets_not_fragment, not_fragments);
        assert_eq!(store.live(), 0, "every output buffer freed");
        let moved_a = KernelCounters::read(&tb.a, family).since(before_a);
        assert_eq!(
            (moved_a.reasm_reqds, moved_a.reasm_oks, moved_a.reasm_fails),
            (fragments, n, 0),
            "a's kernel reassembled the same fragments"
        );
        eprintln!(
            "kernel->braid {family:?} MTU {mtu}: {n} datagrams ({bytes} B) from {fragments} \
             kernel fragments, in order: completed {}, peak held {} B; a's kernel {moved_a:?}",
            st.datagrams_completed, st.peak_bytes_held
        );

        // The same fragments permuted across datagrams, some duplicated (a duplicate arrives
        // later, but before its datagram's last fragment: after it, it would begin a new
        // datagram), into a fresh reassembler.
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut order: Vec<usize> = (0..captured.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        assert_ne!(
            order,
            (0..captured.len()).collect::<Vec<_>>(),
            "a real shuffle"
        );
        let mut last_of = vec![0usize; reassembled.len()];
        for (pos, &f) in order.iter().enumerate() {
            last_of[captured[f].datagram] = pos;
        }
        let mut held: Vec<Vec<usize>> = vec![Vec::new(); reassembled.len()];
        let mut feed = Vec::new();
        for (pos, &f) in order.iter().enumerate() {
            let d = captured[f].datagram;
            if pos == last_of[d] {
                feed.append(&mut held[d]);
            } else if rng.below(3) == 0 {
                held[d].push(f);
            }
            feed.push(f);
        }
        let dups = (feed.len() - order.len()) as u64;
        let interleaved = feed
            .windows(2)
            .filter(|w| captured[w[0]].datagram != captured[w[1]].datagram)
            .count();
        let mut reasm = IpReassembler::new(IpReassemblyConfig::default());
        let mut out: Vec<Option<Vec<u8>>> = vec![None; reassembled.len()];
        for &f in &feed {
            let c = &captured[f];
            match reasm.insert(now(), &mut store, &c.packet) {
                IpFragOutcome::Dropped(IpFragDrop::Duplicate) => {}
                outcome => {
                    if let Some(p) = take(&mut store, outcome) {
                        assert!(out[c.datagram].is_none(), "a datagram completed twice");
                        out[c.datagram] = Some(p);
                    }
                }
            }
        }
        for (d, (got, want)) in out.iter().zip(&reassembled).enumerate() {
            assert!(
                got.as_ref() == Some(want),
                "datagram {d}: the permuted fragments gave another packet (or none)"
            );
        }
        let st = reasm.stats();
        assert_eq!(st.datagrams_completed, n);
        assert_eq!(st.datagrams_dropped, 0);
        assert_eq!(st.drops.duplicate, dups, "each duplicate dropped alone");
        assert_eq!(st.drops.total(), dups, "no other drop");
        assert_eq!(st.fragments_accepted, fragments);
        assert_eq!((st.contexts_live, st.bytes_held), (0, 0));
        assert_eq!(store.live(), 0);
        eprintln!(
            "kernel->braid {family:?} MTU {mtu}: {fragments} fragments permuted + {dups} \
             duplicates ({interleaved} datagram switches in {} inserts): {n} completed, \
             {} duplicates dropped, peak held {} B",
            feed.len(),
            st.drops.duplicate,
            st.peak_bytes_held
        );
    }

    /// The largest IPv6 UDP datagram (payload length 65 535, 65 575 bytes reassembled) is over
    /// braid's 65 535-byte output limit: braid drops its last fragment as too large, counted,
    /// and the rest of the datagram expires at the timeout; nothing is delivered, nothing
    /// panics, no state remains.
    fn largest_ipv6_datagram_is_refused_and_counted(tb: &Testbed) {
        let family = Family::V6;
        let capture_a = tb.a.run(|| capture_socket(family.ethertype()));
        let _sink_a = tb.a.run(|| udp_socket(family.addr_a(), PORT_A));
        let sock_b = tb.b.run(|| udp_socket(family.addr_b(), PORT_B));
        let data = payload(65_535 - 8, 0x7777);
        let to = SocketAddr::new(family.addr_a(), PORT_A);
        assert_eq!(sock_b.send_to(&data, to).expect("send"), data.len());
        let expected = family.fragments(65_575, tb.mtu);
        let config = IpReassemblyConfig::default();
        let mut reasm = IpReassembler::new(config);
        let mut store = PacketStore::new(1 << 20, 1 << 16);
        let mut buf = vec![0u8; 1 << 16];
        let mut fragments = 0;
        let deadline = Instant::now() + WAIT;
        while fragments < expected && Instant::now() < deadline {
            let Some(n) = recv_packet(&capture_a, &mut buf) else {
                continue;
            };
            if family.source(&buf[..n]) != Some(family.addr_b()) {
                continue;
            }
            match reasm.insert(now(), &mut store, &buf[..n]) {
                IpFragOutcome::NotFragment => {}
                IpFragOutcome::Complete { .. } => panic!("a 65 575-byte packet was handed out"),
                IpFragOutcome::Pending | IpFragOutcome::Dropped(_) => fragments += 1,
            }
        }
        assert_eq!(fragments, expected, "every fragment captured");
        let st = reasm.stats();
        assert_eq!(st.drops.too_large, 1, "the last fragment, counted");
        assert_eq!(st.fragments_dropped, 1);
        assert_eq!(st.contexts_live, 1, "the rest waits for its timeout");
        let later = now().saturating_add(config.timeout + Duration::from_millis(1));
        assert_eq!(reasm.handle_timeout(later, 16), 1);
        let st = reasm.stats();
        assert_eq!((st.contexts_live, st.bytes_held), (0, 0));
        assert_eq!((st.drops.timeout, st.datagrams_completed), (1, 0));
        assert_eq!(store.live(), 0);
        eprintln!(
            "kernel->braid V6 MTU {}: the 65 575-byte datagram ({expected} fragments): \
             too_large 1, timeout 1, nothing delivered",
            tb.mtu
        );
    }

    #[test]
    fn ipv4_braid_fragments_the_kernel_reassembles() {
        let tb = Testbed::new("b4", 1500);
        braid_fragments_kernel_reassembles(&tb, Family::V4);
    }

    #[test]
    fn ipv6_braid_fragments_the_kernel_reassembles() {
        for mtu in [1500, 1280] {
            let tb = Testbed::new(&format!("b6-{mtu}"), mtu);
            braid_fragments_kernel_reassembles(&tb, Family::V6);
        }
    }

    #[test]
    fn ipv4_the_kernel_fragments_braid_reassembles() {
        let tb = Testbed::new("k4", 1500);
        kernel_fragments_braid_reassembles(&tb, Family::V4);
    }

    #[test]
    fn ipv6_the_kernel_fragments_braid_reassembles() {
        for mtu in [1500, 1280] {
            let tb = Testbed::new(&format!("k6-{mtu}"), mtu);
            kernel_fragments_braid_reassembles(&tb, Family::V6);
            largest_ipv6_datagram_is_refused_and_counted(&tb);
        }
    }
}
