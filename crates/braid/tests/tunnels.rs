//! Interop of braid's VXLAN and GRE tunnels with peers that are not braid (issue 4), as root.
//!
//! Each test builds two network namespaces (`braid-vxa-<pid>`/`braid-vxb-<pid>`, or
//! `braid-gra-`/`braid-grb-`) joined by one veth pair. In namespace a, a braid daemon with a
//! TUN vNIC (10.99.0.1/24) and one tunnel over the veth (10.77.0.1 → 10.77.0.2); its UDP
//! class goes into the tunnel. In namespace b, the peer is not braid:
//!
//! - **VXLAN**: a Linux kernel `vxlan` device (10.99.0.2/24, VNI 42, port 4789, a permanent
//!   neighbour entry for braid's inner address). UDP datagrams go from a socket on braid's
//!   vNIC through braid's VXLAN, which the kernel decapsulates, to a socket on vxlan0, and
//!   back through the kernel's VXLAN, which braid decapsulates: byte-exact both ways, counted
//!   on both sides (braid's stats file, `ip -s link` of vxlan0). tcpdump on b's veth captures
//!   both directions and tshark (an independent decoder) dissects every outer packet: no
//!   malformed packet or expert warning, IPv4 header checksums verified, VXLAN VNI 42 and the
//!   inner frame as expected.
//! - **GRE**: this kernel has no GRE device, so braid's GRE output (key, sequence numbers,
//!   checksum) is captured with tcpdump on b's veth and dissected by **tshark** (the
//!   independent decoder): no malformed packet or expert warning, GRE checksum and IPv4
//!   header checksums verified, the key, sequence numbers 0..N, and every inner UDP payload
//!   byte-exact. In the other direction, **scapy** (the independent encoder, python3 in
//!   namespace b) builds GRE packets with key, sequence number and checksum and sends them:
//!   braid decapsulates them to a socket on its vNIC, byte-exact, and counts the one with a
//!   wrong key (`tunnel_unknown`) and the replayed one (`tunnel_seq_out_of_order`).
//! - **VLAN in VXLAN** (`push_vlan` / `pop_vlan` rules): braid's tagged VXLAN packets are
//!   decapsulated by the kernel's vxlan0, whose tagged frames tcpdump captures on vxlan0;
//!   scapy's tagged frames sent into vxlan0 are encapsulated by the kernel and popped by
//!   braid. This kernel has no 802.1Q VLAN device (`CONFIG_VLAN_8021Q` is not set), so a
//!   `vxlan0.100` subinterface cannot be the far end: see the test's doc.
//! - **GRE outer fragmentation** (`df = false`): braid's outer packets above the link MTU
//!   leave as IPv4 fragments that tshark and namespace b's kernel reassemble, and scapy's
//!   fragmented GRE is reassembled by namespace a's kernel before braid's raw socket (its
//!   `ReasmOKs`), so braid decapsulates whole packets.
//!
//! Tools: iproute2, ethtool, tcpdump, tshark, python3 with scapy (`bash .ci/run` installs
//! them). A veth passes packets to the other namespace with their checksums not yet filled
//! in (a NIC would fill them on the wire), so namespace b's veth has TX checksum offload
//! off: braid reads the kernel's VXLAN packets as bytes, as from a real NIC.
//! Without root, or without a tool, a test fails and says so. Every wait is bounded; the
//! daemon, the captures and both namespaces are removed by a drop guard, even on failure.

mod common;

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::net::{SocketAddr, UdpSocket};
    use std::path::Path;
    use std::process::{Command, Stdio};
    use std::sync::mpsc;
    use std::time::Duration;

    use serde_json::Value;

    use crate::common::{
        BRAID_MAC, Net, VXLAN0_MAC, braid_config, datagram, drop_count, exchange, ok, require_root,
        require_tool, serial, stop, udp_in, vxlan_t0,
    };

    /// Datagrams each way.
    const N: usize = 40;
    /// The GRE tunnel `t0` to namespace b: key 0x1234, sequence numbers and checksums.
    const GRE_T0: &str = r#"[[tunnels]]
name = "t0"
kind = "gre"
nic = "link0"
local = "10.77.0.1"
remote = "10.77.0.2"
key = 4660
seq = true
checksum = true"#;
    const ROOT: &str = "this interop test needs root (network namespaces, veth, a TUN device, \
                        raw sockets, captures); run it as root, as CI does: \
                        sudo -E cargo test --release -p braid --test tunnels";

    /// The python with scapy: Debian's python3-scapy is for /usr/bin/python3.
    fn python() -> &'static str {
        let python = if Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        };
        let ok = Command::new(python)
            .args(["-c", "import scapy.all"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "{python} with scapy is needed: apt-get install python3-scapy (bash .ci/run does)"
        );
        python
    }

    /// The captures and stats only this file's tests use.
    impl Net {
        /// braid's stats once tunnel 0 shows at least `tx` packets sent and `rx` received.
        fn stats(&self, tx: u64, rx: u64) -> Value {
            self.stats_when(|v| {
                let t = &v["tunnels"][0];
                t["tx_packets"].as_u64().unwrap_or(0) >= tx
                    && t["rx_packets"].as_u64().unwrap_or(0) >= rx
            })
        }

        /// Start tcpdump on b's veth, writing `file`, and wait until it listens.
        fn start_capture(&mut self, filter: &str, file: &str) -> usize {
            let dev = self.dev_b.clone();
            self.start_capture_on(&dev, filter, file)
        }

        /// Start tcpdump on `dev` in namespace b, writing `file`, and wait until it listens.
        fn start_capture_on(&mut self, dev: &str, filter: &str, file: &str) -> usize {
            let path = self.path(file);
            let mut child = Command::new("ip")
                .args(["netns", "exec", &self.b, "tcpdump", "-i", dev, "-n", "-U"])
                // Immediate mode: each packet is written as it comes (else the ring's block
                // of the last second is lost when tcpdump is stopped).
                .args(["--immediate-mode", "-Z", "root", "-w"])
                .arg(&path)
                .arg(filter)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start tcpdump");
            let stderr = child.stderr.take().expect("tcpdump stderr");
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("listening on") {
                        let _ = tx.send(());
                    }
                }
            });
            let listening = rx.recv_timeout(Duration::from_secs(10)).is_ok();
            self.children.push(child);
            assert!(listening, "tcpdump did not start listening within 10 s");
            self.children.len() - 1
        }

        /// Stop the capture started as child `i` (SIGTERM: tcpdump closes its file).
        fn stop_capture(&mut self, i: usize) {
            // Let the last packets reach the capture.
            std::thread::sleep(Duration::from_millis(300));
            stop(&mut self.children[i]);
        }
    }

    /// Send `sent` from `from` to `to`, paced a little (the captures should see all of it).
    fn send_paced(from: &UdpSocket, to: &str, sent: &[Vec<u8>]) {
        let to: SocketAddr = to.parse().expect("address");
        for d in sent {
            from.send_to(d, to).expect("send");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Receive scapy's `N` datagrams ([`datagram`] with `salt`) on `sink`, from `from`, in
    /// order and byte-exact.
    fn receive_from_scapy(sink: &UdpSocket, from: &str, salt: u8) {
        let from: SocketAddr = from.parse().expect("address");
        let mut buf = vec![0u8; 2048];
        for i in 0..N {
            let (n, src) = sink
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("scapy's datagram {i} did not arrive: {e}"));
            assert_eq!(src, from);
            assert_eq!(buf[..n], datagram(i, salt)[..], "scapy's datagram {i}");
        }
    }

    /// `tshark -r file` with the checksums verified and `args`; its stdout.
    fn tshark(file: &Path, args: &[&str]) -> String {
        let path = file.to_str().expect("path");
        let mut all = vec![
            "-r",
            path,
            "-n",
            "-o",
            "ip.check_checksum:TRUE",
            "-o",
            "udp.check_checksum:TRUE",
        ];
        all.extend_from_slice(args);
        ok("tshark", &all)
    }

    /// Fails the test if tshark marks a packet of the capture malformed or with an expert
    /// warning or error, or finds a bad checksum (listing them, one line each).
    fn assert_tshark_finds_nothing_wrong(file: &Path) {
        let complaints = tshark(
            file,
            &[
                "-Y",
                "_ws.malformed || _ws.expert.severity >= 0x00600000 || \
                 ip.checksum.status == 0 || udp.checksum.status == 0 || \
                 gre.checksum.status == 0",
                "-T",
                "fields",
                "-e",
                "frame.number",
                "-e",
                "_ws.expert.message",
            ],
        );
        assert!(
            complaints.trim().is_empty(),
            "tshark complains:\n{complaints}"
        );
    }

    /// `bytes` as tshark shows data: lowercase hex digits, no separator.
    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Field rows of the capture: one line per packet, fields separated by `|`, repeated
    /// fields (outer and inner) by `,`.
    fn tshark_fields(file: &Path, filter: &str, fields: &[&str]) -> Vec<Vec<String>> {
        let mut args = vec!["-Y", filter, "-T", "fields", "-E", "separator=|"];
        for f in fields {
            args.push("-e");
            args.push(f);
        }
        tshark(file, &args)
            .lines()
            .map(|l| l.split('|').map(str::to_owned).collect())
            .collect()
    }

    /// The `Ip:` counter `field` of namespace `ns` (`/proc/net/snmp`: ReasmOKs, ...).
    fn snmp_ip(net: &Net, ns: &str, field: &str) -> u64 {
        let text = net.exec(ns, &["cat", "/proc/net/snmp"]);
        let mut ip = text.lines().filter(|l| l.starts_with("Ip:"));
        let (names, values) = (
            ip.next().expect("Ip: names"),
            ip.next().expect("Ip: values"),
        );
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == field)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| panic!("no Ip: {field} in /proc/net/snmp:\n{text}"))
    }

    /// [`braid_config`] with `tunnel` (named `t0`) and a class of UDP to `dst_port` in it.
    fn config(dev: &str, tunnel: &str, dst_port: u16) -> String {
        braid_config(
            dev,
            "",
            &format!(
                r#"{tunnel}

[[classes]]
name = "tunnelled"
protocol = "udp"
dst_ports = "{dst_port}"
policy = "pin"
tunnel = "t0""#
            ),
        )
    }

    /// braid's VXLAN output is decapsulated by a Linux kernel VXLAN device in another
    /// namespace, and braid decapsulates the kernel's VXLAN; tshark finds every outer packet
    /// well-formed.
    #[test]
    fn vxlan_interop_with_the_linux_kernel_both_ways() {
        let _serial = serial();
        require_root(ROOT);
        require_tool("ethtool", "ethtool");
        require_tool("tcpdump", "tcpdump");
        require_tool("tshark", "tshark");
        let mut net = Net::new("vx", "vx");
        let b = net.b.clone();
        net.kernel_vxlan();
        net.exec(&b, &["ip", "addr", "add", "10.99.0.2/24", "dev", "vxlan0"]);
        net.neighbour_braid("vxlan0");
        let capture = net.start_capture("udp port 4789", "vxlan.pcap");
        let tunnel = format!("{}\nsrc_ports = \"32768-60999\"", vxlan_t0(42));
        net.start_braid(&config(&net.dev_a, &tunnel, 6003));

        // braid → kernel: a socket on braid's vNIC to a socket on vxlan0.
        // Ports no tshark dissector claims (5000 is TAPA's: a 1-byte payload is malformed
        // TAPA), so the dissection judges the tunnel, not the payload.
        let on_braid = udp_in(&net.a, "10.99.0.1:6002");
        let on_kernel = udp_in(&b, "10.99.0.2:6003");
        let failed = |e: String| -> usize {
            panic!("{e}\nbraid's stats: {}", net.stats(0, 0));
        };
        let out_sends =
            exchange(&on_braid, "10.99.0.2:6003", &on_kernel, 0x5a, N).unwrap_or_else(failed);
        // kernel → braid: the answer path, through the kernel's VXLAN and braid's decap.
        let back_sends =
            exchange(&on_kernel, "10.99.0.1:6002", &on_braid, 0xa5, N).unwrap_or_else(failed);
        net.stop_capture(capture);

        // Counted on both sides: braid's tunnel counters and drops, vxlan0's counters.
        let stats = net.stats(out_sends as u64, back_sends as u64);
        let t = &stats["tunnels"][0];
        assert_eq!(t["name"], "t0");
        assert_eq!(t["tx_packets"].as_u64(), Some(out_sends as u64), "{stats}");
        assert_eq!(t["rx_packets"].as_u64(), Some(back_sends as u64), "{stats}");
        for label in [
            "tunnel_malformed",
            "tunnel_unknown",
            "tunnel_inner_not_ip",
            "tunnel_too_big",
            "tunnel_queue_full",
        ] {
            assert_eq!(drop_count(&stats, label), 0, "{label}: {stats}");
        }
        let port = &stats["tunnel_ports"][0];
        assert_eq!(port["tx_errors"].as_u64(), Some(0), "{stats}");
        let s64 = net.link_stats("vxlan0");
        assert_eq!(
            s64["rx"]["packets"].as_u64(),
            Some(out_sends as u64),
            "{s64}"
        );
        assert_eq!(
            s64["tx"]["packets"].as_u64(),
            Some(back_sends as u64),
            "{s64}"
        );
        assert_eq!(s64["rx"]["errors"].as_u64(), Some(0), "{s64}");

        // tshark on b's veth: every outer packet well-formed, both directions.
        let pcap = net.path("vxlan.pcap");
        assert_tshark_finds_nothing_wrong(&pcap);
        let rows = tshark_fields(
            &pcap,
            "vxlan",
            &[
                "ip.src",
                "ip.dst",
                "ip.checksum.status",
                "udp.srcport",
                "udp.dstport",
                "vxlan.flags",
                "vxlan.vni",
                "eth.src",
                "eth.dst",
                "udp.length",
            ],
        );
        let from_braid: Vec<_> = rows
            .iter()
            .filter(|r| r[0].starts_with("10.77.0.1,"))
            .collect();
        let from_kernel: Vec<_> = rows
            .iter()
            .filter(|r| r[0].starts_with("10.77.0.2,"))
            .collect();
        assert_eq!(
            from_braid.len(),
            out_sends,
            "braid's VXLAN packets: {rows:?}"
        );
        assert_eq!(
            from_kernel.len(),
            back_sends,
            "the kernel's VXLAN packets: {rows:?}"
        );
        for r in &from_braid {
            // Outer 10.77.0.1 → 10.77.0.2, inner 10.99.0.1 → 10.99.0.2.
            assert_eq!(r[0], "10.77.0.1,10.99.0.1", "{r:?}");
            assert_eq!(r[1], "10.77.0.2,10.99.0.2", "{r:?}");
            // Both IPv4 header checksums good (status 1).
            assert_eq!(r[2], "1,1", "{r:?}");
            let src_port: u16 = r[3].split(',').next().unwrap().parse().unwrap();
            assert!((32768..=60999).contains(&src_port), "{r:?}");
            assert_eq!(r[4], "4789,6003", "{r:?}");
            // The I flag alone (RFC 7348 §5; tshark shows the flags with the reserved byte).
            assert_eq!(r[5], "0x0800", "{r:?}");
            assert_eq!(r[6], "42", "{r:?}");
            // The inner frame (the second Ethernet header): braid's MAC to vxlan0's.
            assert_eq!(r[7].split(',').nth(1), Some(BRAID_MAC), "{r:?}");
            assert_eq!(r[8].split(',').nth(1), Some(VXLAN0_MAC), "{r:?}");
            // Outer UDP length = VXLAN 8 + inner frame (14 + inner IP) + UDP 8.
            let lens: Vec<usize> = r[9].split(',').map(|l| l.parse().unwrap()).collect();
            assert_eq!(lens[0], 8 + 8 + 14 + 20 + lens[1], "{r:?}");
        }
        for r in &from_kernel {
            assert_eq!(r[6], "42", "{r:?}");
            assert_eq!(r[7].split(',').nth(1), Some(VXLAN0_MAC), "{r:?}");
            assert_eq!(r[8].split(',').nth(1), Some(BRAID_MAC), "{r:?}");
        }
        eprintln!(
            "vxlan: {out_sends} datagrams braid → kernel, {back_sends} kernel → braid, {} outer \
             packets dissected by tshark",
            rows.len()
        );
    }

    /// braid's GRE output is checked by an independent decoder (tshark), and braid
    /// decapsulates GRE made by an independent encoder (scapy).
    #[test]
    fn gre_checked_by_tshark_and_scapy() {
        let _serial = serial();
        require_root(ROOT);
        require_tool("tcpdump", "tcpdump");
        require_tool("tshark", "tshark");
        let python = python();
        let mut net = Net::new("gr", "gr");
        let b = net.b.clone();
        let capture = net.start_capture("ip proto 47", "gre.pcap");
        net.start_braid(&config(&net.dev_a, GRE_T0, 6000));

        // braid → the wire: N datagrams to 10.99.0.2:6000 (nobody there: namespace b has no
        // GRE endpoint; the capture is the receiver).
        let on_braid = udp_in(&net.a, "10.99.0.1:6001");
        let sent: Vec<Vec<u8>> = (0..N).map(|i| datagram(i, 0x3c)).collect();
        send_paced(&on_braid, "10.99.0.2:6000", &sent);
        net.stop_capture(capture);
        let pcap = net.path("gre.pcap");
        assert_tshark_finds_nothing_wrong(&pcap);
        let rows = tshark_fields(
            &pcap,
            "gre && ip.src == 10.77.0.1",
            &[
                "ip.src",
                "ip.dst",
                "ip.checksum.status",
                "gre.flags_and_version",
                "gre.proto",
                "gre.key",
                "gre.sequence_number",
                "gre.checksum.status",
                "udp.dstport",
                "data.data",
            ],
        );
        assert_eq!(
            rows.len(),
            N,
            "braid's GRE packets as tshark sees them: {rows:?}"
        );
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(r[0], "10.77.0.1,10.99.0.1", "{r:?}");
            assert_eq!(r[1], "10.77.0.2,10.99.0.2", "{r:?}");
            assert_eq!(r[2], "1,1", "IPv4 header checksums: {r:?}");
            // C, K and S set, version 0 (RFC 2784/2890); protocol IPv4.
            assert_eq!(r[3], "0xb000", "{r:?}");
            assert_eq!(r[4], "0x0800", "{r:?}");
            assert_eq!(r[5], "0x00001234", "{r:?}");
            assert_eq!(r[6], i.to_string(), "sequence numbers from 0: {r:?}");
            assert_eq!(r[7], "1", "GRE checksum good: {r:?}");
            assert_eq!(r[8], "6000", "{r:?}");
            assert_eq!(r[9], hex(&sent[i]), "inner payload of datagram {i}");
        }

        // scapy → braid: GRE with key, sequence number and checksum from namespace b, to a
        // socket on braid's vNIC. Then one with another key (not this tunnel) and a replay of
        // the last sequence number (out of order), which braid drops and counts.
        let sink = udp_in(&net.a, "10.99.0.1:6002");
        let script = format!(
            r#"
import sys
from scapy.all import IP, UDP, GRE, Raw, send, conf
conf.verb = 0
def dgram(i):
    n = 1 + (i * 97) % 1300
    return bytes(((k * 13) & 0xff) ^ (i & 0xff) ^ 0x77 for k in range(n))
def pkt(i, seq, key=4660):
    return (IP(src="10.77.0.2", dst="10.77.0.1")
            / GRE(chksum_present=1, key_present=1, seqnum_present=1, key=key, sequence_number=seq)
            / IP(src="10.99.0.2", dst="10.99.0.1")
            / UDP(sport=6000, dport=6002)
            / Raw(dgram(i)))
for i in range({N}):
    send(pkt(i, 1000 + i))
send(pkt(0, 2000, key=4661))
send(pkt(0, 1000 + {N} - 1))
"#
        );
        net.exec(&b, &[python, "-c", &script]);
        receive_from_scapy(&sink, "10.99.0.2:6000", 0x77);
        assert!(
            sink.recv_from(&mut [0u8; 2048]).is_err(),
            "a dropped packet arrived"
        );
        // The last two packets are counted drops; the stats file may lag a second.
        let stats = net.stats_when(|v| {
            v["tunnels"][0]["rx_packets"].as_u64().unwrap_or(0) >= N as u64
                && drop_count(v, "tunnel_unknown") + drop_count(v, "tunnel_seq_out_of_order") >= 2
        });
        let t = &stats["tunnels"][0];
        assert_eq!(t["tx_packets"].as_u64(), Some(N as u64), "{stats}");
        assert_eq!(t["rx_packets"].as_u64(), Some(N as u64), "{stats}");
        assert_eq!(drop_count(&stats, "tunnel_unknown"), 1, "{stats}");
        assert_eq!(drop_count(&stats, "tunnel_seq_out_of_order"), 1, "{stats}");
        assert_eq!(drop_count(&stats, "tunnel_malformed"), 0, "{stats}");
        eprintln!(
            "gre: {N} packets from braid dissected by tshark, {N} from scapy decapsulated by \
             braid"
        );
    }

    /// VLAN push/pop in VXLAN inner frames against the Linux kernel's VXLAN device.
    ///
    /// The kernel here is built without 802.1Q VLAN devices (`# CONFIG_VLAN_8021Q is not
    /// set` in /proc/config.gz: `ip link add link vxlan0 name vxlan0.100 type vlan id 100`
    /// fails with "Unknown device type"), and without bridge VLAN filtering or the tc vlan
    /// action, so no kernel device can end VLAN 100. The tagged frames are therefore met at
    /// vxlan0 itself, through AF_PACKET: braid's TX rule tags its flow's inner frames with
    /// VLAN 100 (PCP 3); the kernel decapsulates them and tcpdump on vxlan0 captures the
    /// tagged frames it hands up (tshark: 802.1Q VLAN 100 priority 3, the inner UDP payload
    /// byte-exact; vxlan0 counts them). The other way, scapy (python3) injects Ethernet
    /// frames tagged VLAN 100 into vxlan0, which the kernel encapsulates; braid's RX rule
    /// pops the tag and a socket on braid's vNIC gets every datagram byte-exact, while one
    /// tagged VLAN 200 (no rule pops it) is dropped and counted. tshark finds every VXLAN
    /// packet on the veth well-formed, with the 802.1Q tag inside.
    #[test]
    fn vxlan_vlan_tags_interop_with_the_kernel_vxlan_device() {
        let _serial = serial();
        require_root(ROOT);
        require_tool("ethtool", "ethtool");
        require_tool("tcpdump", "tcpdump");
        require_tool("tshark", "tshark");
        let python = python();
        let mut net = Net::new("vv", "vv");
        let b = net.b.clone();
        net.kernel_vxlan();
        let outer_capture = net.start_capture("udp port 4789", "vlan-outer.pcap");
        let inner_capture = net.start_capture_on("vxlan0", "vlan 100", "vlan-inner.pcap");
        let tunnel = format!(
            r#"{}

# The tunnelled flow's inner frames carry VLAN 100, priority 3 ...
[[rules]]
name = "tag-100"
protocol = "udp"
dst_ports = "6003"
push_vlan = 100
vlan_pcp = 3

# ... and the peer's VLAN 100 frames are taken, their tag removed.
[[rules]]
name = "untag-100"
direction = "rx"
vlan = 100
pop_vlan = true"#,
            vxlan_t0(42)
        );
        net.start_braid(&config(&net.dev_a, &tunnel, 6003));

        // braid → kernel: N datagrams from braid's vNIC to 10.99.0.2:6003, through the tag
        // rule and the VXLAN tunnel to vxlan0.
        let on_braid = udp_in(&net.a, "10.99.0.1:6002");
        let sent: Vec<Vec<u8>> = (0..N).map(|i| datagram(i, 0x5a)).collect();
        send_paced(&on_braid, "10.99.0.2:6003", &sent);
        // kernel → braid: scapy's tagged frames into vxlan0 (VLAN 100, then one of VLAN
        // 200 that no rule pops), to the socket on braid's vNIC.
        let sink = &on_braid;
        let script = format!(
            r#"
from scapy.all import Ether, Dot1Q, IP, UDP, Raw, sendp, conf
conf.verb = 0
def dgram(i):
    n = 1 + (i * 97) % 1300
    return bytes(((k * 13) & 0xff) ^ (i & 0xff) ^ 0xa5 for k in range(n))
def frame(i, vlan):
    return (Ether(src="{VXLAN0_MAC}", dst="{BRAID_MAC}")
            / Dot1Q(vlan=vlan, prio=5)
            / IP(src="10.99.0.2", dst="10.99.0.1")
            / UDP(sport=6003, dport=6002)
            / Raw(dgram(i)))
for i in range({N}):
    sendp(frame(i, 100), iface="vxlan0")
sendp(frame(0, 200), iface="vxlan0")
"#
        );
        net.exec(&b, &[python, "-c", &script]);
        receive_from_scapy(sink, "10.99.0.2:6003", 0xa5);
        assert!(
            sink.recv_from(&mut [0u8; 2048]).is_err(),
            "the VLAN 200 frame arrived"
        );
        net.stop_capture(inner_capture);
        net.stop_capture(outer_capture);

        // braid: every packet out tagged, every VLAN 100 one popped, the VLAN 200 one
        // dropped and counted.
        let stats = net.stats_when(|v| {
            let t = &v["tunnels"][0];
            t["tx_packets"].as_u64().unwrap_or(0) >= N as u64
                && t["rx_packets"].as_u64().unwrap_or(0) > N as u64
                && drop_count(v, "tunnel_vlan_not_popped") >= 1
        });
        let t = &stats["tunnels"][0];
        assert_eq!(t["tx_packets"].as_u64(), Some(N as u64), "{stats}");
        assert_eq!(t["tx_vlan_tagged"].as_u64(), Some(N as u64), "{stats}");
        assert_eq!(t["rx_packets"].as_u64(), Some(N as u64 + 1), "{stats}");
        assert_eq!(t["rx_vlan_popped"].as_u64(), Some(N as u64), "{stats}");
        assert_eq!(drop_count(&stats, "tunnel_vlan_not_popped"), 1, "{stats}");
        for label in [
            "tunnel_malformed",
            "tunnel_unknown",
            "tunnel_inner_not_ip",
            "rule_vlan_no_tunnel",
        ] {
            assert_eq!(drop_count(&stats, label), 0, "{label}: {stats}");
        }
        // The kernel's VXLAN device decapsulated braid's N and encapsulated scapy's N + 1.
        let vx = net.link_stats("vxlan0");
        assert_eq!(vx["rx"]["packets"].as_u64(), Some(N as u64), "{vx}");
        assert_eq!(vx["tx"]["packets"].as_u64(), Some(N as u64 + 1), "{vx}");
        assert_eq!(vx["rx"]["errors"].as_u64(), Some(0), "{vx}");

        // The frames the kernel decapsulated, as captured on vxlan0: tagged VLAN 100 with
        // braid's PCP, braid's MAC to vxlan0's, the payload byte-exact.
        let inner = tshark_fields(
            &net.path("vlan-inner.pcap"),
            "vlan && ip.src == 10.99.0.1",
            &[
                "eth.src",
                "eth.dst",
                "vlan.id",
                "vlan.priority",
                "vlan.etype",
                "udp.dstport",
                "data.data",
            ],
        );
        assert_eq!(inner.len(), N, "tagged frames on vxlan0: {inner:?}");
        for (i, r) in inner.iter().enumerate() {
            assert_eq!(
                (
                    &r[0][..],
                    &r[1][..],
                    &r[2][..],
                    &r[3][..],
                    &r[4][..],
                    &r[5][..]
                ),
                (BRAID_MAC, VXLAN0_MAC, "100", "3", "0x0800", "6003"),
                "{r:?}"
            );
            assert_eq!(r[6], hex(&sent[i]), "inner payload of datagram {i}");
        }
        assert_tshark_finds_nothing_wrong(&net.path("vlan-inner.pcap"));

        // The VXLAN packets on the veth: well-formed, with the 802.1Q tag inside.
        let pcap = net.path("vlan-outer.pcap");
        assert_tshark_finds_nothing_wrong(&pcap);
        let rows = tshark_fields(
            &pcap,
            "vxlan",
            &[
                "ip.src",
                "vxlan.vni",
                "eth.src",
                "vlan.id",
                "vlan.priority",
                "vlan.etype",
                "ip.len",
                "udp.length",
            ],
        );
        assert_eq!(rows.len(), 2 * N + 1, "{rows:?}");
        let mut from_braid = 0;
        for r in &rows {
            assert_eq!(r[1], "42", "{r:?}");
            assert_eq!(r[5], "0x0800", "{r:?}");
            // Outer UDP length = VXLAN 8 + UDP 8 + inner Ethernet 14 + tag 4 + inner IP.
            let ip_len: Vec<usize> = r[6].split(',').map(|l| l.parse().unwrap()).collect();
            let udp_len: usize = r[7].split(',').next().unwrap().parse().unwrap();
            assert_eq!(udp_len, 8 + 8 + 14 + 4 + ip_len[1], "{r:?}");
            if r[0].starts_with("10.77.0.1,") {
                from_braid += 1;
                assert_eq!(r[2].split(',').nth(1), Some(BRAID_MAC), "{r:?}");
                assert_eq!((&r[3][..], &r[4][..]), ("100", "3"), "{r:?}");
            } else {
                assert_eq!(r[2].split(',').nth(1), Some(VXLAN0_MAC), "{r:?}");
                assert!(r[3] == "100" || r[3] == "200", "{r:?}");
                assert_eq!(r[4], "5", "scapy's PCP: {r:?}");
            }
        }
        assert_eq!(from_braid, N, "{rows:?}");
        eprintln!(
            "vlan: {N} tagged datagrams braid → kernel vxlan0 (captured there tagged), {N} \
             tagged by scapy through the kernel's VXLAN → braid, popped; {} VXLAN packets \
             with an 802.1Q tag dissected by tshark",
            rows.len()
        );
    }

    /// GRE outer fragmentation with DF clear: braid's outer packets larger than the link MTU
    /// (1000 here) leave as IPv4 fragments that tshark reassembles (nothing malformed, every
    /// frame within the MTU, every inner payload byte-exact) and that the kernel of namespace
    /// b reassembles (its ReasmOKs); and scapy's fragmented GRE reaches braid whole — the
    /// kernel of namespace a reassembles it before braid's raw GRE socket sees it (its
    /// ReasmOKs; braid counts no malformed packet, which a fragment would be).
    #[test]
    fn gre_outer_fragments_with_df_clear_reassemble_both_ways() {
        const MTU: usize = 1000;
        let _serial = serial();
        require_root(ROOT);
        require_tool("tcpdump", "tcpdump");
        require_tool("tshark", "tshark");
        let python = python();
        let mut net = Net::new("gf", "gf");
        let (a, b) = (net.a.clone(), net.b.clone());
        let mtu = MTU.to_string();
        net.exec(&a, &["ip", "link", "set", &net.dev_a, "mtu", &mtu]);
        net.exec(&b, &["ip", "link", "set", &net.dev_b, "mtu", &mtu]);
        let capture = net.start_capture("ip proto 47", "gref.pcap");
        let tunnel = format!("{GRE_T0}\ndf = false");
        net.start_braid(&config(&net.dev_a, &tunnel, 6000));
        let reasm_b = snmp_ip(&net, &b, "ReasmOKs");

        // braid → the wire: datagrams of 1..1300 bytes; those whose outer packet (20 + GRE
        // 16 + 28 + payload) passes 1000 bytes leave in fragments of 976 data bytes.
        let on_braid = udp_in(&a, "10.99.0.1:6001");
        let sent: Vec<Vec<u8>> = (0..N).map(|i| datagram(i, 0x3c)).collect();
        let outer_len = |d: &Vec<u8>| 20 + 16 + 28 + d.len();
        let fragmented = sent.iter().filter(|d| outer_len(d) > MTU).count();
        let frames: usize = sent
            .iter()
            .map(|d| (outer_len(d) - 20).div_ceil((MTU - 20) & !7))
            .sum();
        assert!(fragmented > 5, "the test sends fragmented packets");
        send_paced(&on_braid, "10.99.0.2:6000", &sent);
        net.stop_capture(capture);
        let stats = net
            .stats_when(|v| v["tunnels"][0]["tx_packets"].as_u64().unwrap_or(0) >= frames as u64);
        let t = &stats["tunnels"][0];
        assert_eq!(
            t["tx_fragmented"].as_u64(),
            Some(fragmented as u64),
            "{stats}"
        );
        assert_eq!(t["tx_packets"].as_u64(), Some(frames as u64), "{stats}");
        assert_eq!(drop_count(&stats, "tunnel_too_big"), 0, "{stats}");
        assert_eq!(drop_count(&stats, "tunnel_queue_full"), 0, "{stats}");
        assert_eq!(
            stats["tunnel_ports"][0]["tx_errors"].as_u64(),
            Some(0),
            "{stats}"
        );
        // The kernel of namespace b reassembled every fragmented one.
        assert_eq!(
            snmp_ip(&net, &b, "ReasmOKs") - reasm_b,
            fragmented as u64,
            "namespace b's kernel reassembly"
        );

        // tshark: every frame within the MTU, no complaint, the fragments reassembled.
        let pcap = net.path("gref.pcap");
        assert_tshark_finds_nothing_wrong(&pcap);
        // Two passes (-2): a fragment learns the frame it is reassembled in only then.
        let wire: Vec<Vec<String>> = tshark(
            &pcap,
            &[
                "-2",
                "-Y",
                "ip.src == 10.77.0.1",
                "-T",
                "fields",
                "-E",
                "separator=|",
                "-e",
                "frame.len",
                "-e",
                "ip.flags.mf",
                "-e",
                "ip.frag_offset",
                "-e",
                "ip.reassembled_in",
            ],
        )
        .lines()
        .map(|l| l.split('|').map(str::to_owned).collect())
        .collect();
        assert_eq!(wire.len(), frames, "frames on the wire");
        assert!(
            wire.iter()
                .all(|r| r[0].parse::<usize>().unwrap() <= MTU + 14),
            "a frame above the MTU: {wire:?}"
        );
        let first_pieces = wire
            .iter()
            .filter(|r| r[1] == "1" && !r[3].is_empty())
            .count();
        assert_eq!(
            first_pieces,
            frames - N,
            "every fragment but the last of each datagram says where it is reassembled"
        );
        let rows = tshark_fields(
            &pcap,
            "gre && ip.src == 10.77.0.1",
            &[
                "gre.key",
                "gre.sequence_number",
                "gre.checksum.status",
                "udp.dstport",
                "data.data",
            ],
        );
        assert_eq!(rows.len(), N, "GRE packets after reassembly: {rows:?}");
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(r[0], "0x00001234", "{r:?}");
            assert_eq!(
                r[1],
                i.to_string(),
                "one sequence number per outer packet: {r:?}"
            );
            assert_eq!(r[2], "1", "GRE checksum over the reassembled packet: {r:?}");
            assert_eq!(r[3], "6000", "{r:?}");
            assert_eq!(r[4], hex(&sent[i]), "inner payload of datagram {i}");
        }

        // scapy → braid: GRE with key, sequence number and checksum, cut into 480-byte
        // fragments by scapy. Namespace a's kernel reassembles them before braid's raw GRE
        // socket: braid decapsulates whole packets, byte-exact.
        let sink = udp_in(&a, "10.99.0.1:6002");
        let reasm_a = snmp_ip(&net, &a, "ReasmOKs");
        let script = format!(
            r#"
from scapy.all import IP, UDP, GRE, Raw, send, fragment, conf
conf.verb = 0
def dgram(i):
    n = 1 + (i * 97) % 1300
    return bytes(((k * 13) & 0xff) ^ (i & 0xff) ^ 0x77 for k in range(n))
cut = 0
for i in range({N}):
    p = (IP(src="10.77.0.2", dst="10.77.0.1", id=100 + i, flags=0)
         / GRE(chksum_present=1, key_present=1, seqnum_present=1, key=4660,
               sequence_number=1000 + i)
         / IP(src="10.99.0.2", dst="10.99.0.1")
         / UDP(sport=6000, dport=6002)
         / Raw(dgram(i)))
    frags = fragment(p, fragsize=480)
    cut += len(frags) > 1
    send(frags)
print(cut)
"#
        );
        let cut: u64 = net
            .exec(&b, &[python, "-c", &script])
            .trim()
            .parse()
            .expect("scapy prints how many packets it fragmented");
        assert!(cut > 5, "scapy sent fragmented packets");
        receive_from_scapy(&sink, "10.99.0.2:6000", 0x77);
        assert_eq!(
            snmp_ip(&net, &a, "ReasmOKs") - reasm_a,
            cut,
            "namespace a's kernel reassembled scapy's fragments before braid's socket"
        );
        let stats =
            net.stats_when(|v| v["tunnels"][0]["rx_packets"].as_u64().unwrap_or(0) >= N as u64);
        assert_eq!(stats["tunnels"][0]["rx_packets"].as_u64(), Some(N as u64));
        assert_eq!(drop_count(&stats, "tunnel_malformed"), 0, "{stats}");
        eprintln!(
            "gre fragmentation: {fragmented} of {N} outer packets from braid in {frames} \
             frames, reassembled by tshark and the kernel; {cut} of {N} fragmented by scapy \
             reassembled by the kernel for braid"
        );
    }
}
