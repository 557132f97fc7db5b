//! End-to-end tests of the Linux data path (issue 3), as root: each test builds its own
//! testbed with `braid testbed up` — two network namespaces joined by veth pairs, a braid
//! daemon in each — drives real TCP and UDP traffic through the vNICs with `braid traffic`,
//! and removes everything with `braid testbed down`, even when it fails (a drop guard).
//!
//! Without root they fail with a message saying so: they never pass silently.
//!
//! The tests run one at a time (a lock): they are heavy on a 2-core machine, and the failure
//! detection bound is a timing claim.

mod common;

#[cfg(test)]
mod tests {

    use std::path::Path;
    use std::process::{Child, Command, Output, Stdio};
    use std::time::{Duration, Instant};

    use serde_json::Value;

    use crate::common::{BRAID, Testbed, drop_count, in_netns, require_root, serial};

    /// A testbed `braid-e<pid><tag>` made by `braid testbed up <args>`.
    fn testbed(tag: &str, args: &[&str]) -> Testbed {
        require_root(
            "this end-to-end test needs root (it creates network namespaces, veth pairs and TUN \
         devices); run it as root, as CI does: sudo -E cargo test --release -p braid --test e2e",
        );
        Testbed::up(
            format!("braid-e{}{tag}", std::process::id() % 100_000),
            args,
        )
    }

    /// What only these tests ask of a testbed.
    impl Testbed {
        fn stats(&self, side: char) -> Value {
            let path = self.dir().join(format!("{side}.stats.json"));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}\nlog:\n{}", path.display(), self.log(side)));
            serde_json::from_str(&text).expect("stats file is JSON")
        }

        fn pid(&self, side: char) -> i32 {
            std::fs::read_to_string(self.dir().join(format!("{side}.pid")))
                .expect("pid file")
                .trim()
                .parse()
                .expect("pid")
        }

        /// Run a command in a namespace and wait for it.
        fn exec(&self, side: char, cmd: &[&str]) -> Output {
            Command::new("ip")
                .args(["netns", "exec", &self.ns(side)])
                .args(cmd)
                .output()
                .expect("ip netns exec")
        }

        /// Start a command in a namespace.
        fn spawn(&self, side: char, cmd: &[&str]) -> Child {
            Command::new("ip")
                .args(["netns", "exec", &self.ns(side)])
                .args(cmd)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("ip netns exec")
        }

        /// Wait until the stats files exist and every link is up on both sides (bounded).
        fn wait_links_up(&self, links: usize) {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let up = ['a', 'b'].iter().all(|s| {
                    let path = self.dir().join(format!("{s}.stats.json"));
                    std::fs::read_to_string(path)
                        .ok()
                        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                        .is_some_and(|v| (0..links).all(|i| v["nics"][i]["link"]["state"] == "Up"))
                });
                if up {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "links not up after 10 s\na: {}\nb: {}",
                    self.log('a'),
                    self.log('b')
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn json_line(out: &Output, what: &str) -> Value {
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))
            .unwrap_or_else(|| {
                panic!(
                    "{what}: no JSON line in output\nstdout: {text}\nstderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{what}: {e}: {line}"))
    }

    fn wait_child(child: Child, what: &str, limit: Duration) -> Output {
        let deadline = Instant::now() + limit;
        let mut child = child;
        loop {
            if child.try_wait().expect("wait").is_some() {
                return child.wait_with_output().expect("output");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let out = child.wait_with_output().expect("output");
                panic!(
                    "{what} did not finish within {limit:?}\nstdout: {}\nstderr: {}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A TCP stream of `bytes` from a to b through the vNICs; returns (client, server) JSON.
    fn tcp_transfer(tb: &Testbed, bytes: &str, port: u16, during: impl FnOnce()) -> (Value, Value) {
        let listen = format!("10.99.0.2:{port}");
        let server = tb.spawn(
            'b',
            &[
                BRAID,
                "traffic",
                "tcp-server",
                "--listen",
                &listen,
                "--once",
                "--seed",
                "1",
            ],
        );
        std::thread::sleep(Duration::from_millis(300));
        let client = tb.spawn(
            'a',
            &[
                BRAID,
                "traffic",
                "tcp-client",
                "--connect",
                &listen,
                "--bytes",
                bytes,
                "--seed",
                "1",
                "--timeout",
                "120s",
            ],
        );
        during();
        let c = wait_child(client, "tcp-client", Duration::from_secs(120));
        let s = wait_child(server, "tcp-server", Duration::from_secs(30));
        assert!(
            c.status.success() && s.status.success(),
            "transfer failed\nclient: {}\nserver: {}\na log: {}\nb log: {}",
            String::from_utf8_lossy(&c.stderr),
            String::from_utf8_lossy(&s.stderr),
            tb.log('a'),
            tb.log('b')
        );
        (json_line(&c, "tcp-client"), json_line(&s, "tcp-server"))
    }

    /// UDP datagrams from a to b through the vNICs; returns the server's JSON.
    fn udp_transfer(
        tb: &Testbed,
        port: u16,
        count: u64,
        rate: u64,
        size: u64,
        during: impl FnOnce(),
    ) -> Value {
        let listen = format!("10.99.0.2:{port}");
        let count_s = count.to_string();
        let server = tb.spawn(
            'b',
            &[
                BRAID,
                "traffic",
                "udp-server",
                "--listen",
                &listen,
                "--count",
                &count_s,
                "--idle",
                "2s",
                "--timeout",
                "120s",
            ],
        );
        std::thread::sleep(Duration::from_millis(300));
        let (rate_s, size_s) = (rate.to_string(), size.to_string());
        let client = tb.spawn(
            'a',
            &[
                BRAID,
                "traffic",
                "udp-client",
                "--connect",
                &listen,
                "--count",
                &count_s,
                "--rate",
                &rate_s,
                "--size",
                &size_s,
                "--timeout",
                "120s",
            ],
        );
        during();
        let c = wait_child(client, "udp-client", Duration::from_secs(130));
        let s = wait_child(server, "udp-server", Duration::from_secs(30));
        assert!(
            c.status.success(),
            "udp-client: {}",
            String::from_utf8_lossy(&c.stderr)
        );
        assert!(
            s.status.success(),
            "udp-server: {}",
            String::from_utf8_lossy(&s.stderr)
        );
        json_line(&s, "udp-server")
    }

    fn monotonic_ns() -> u64 {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
    }

    #[test]
    fn tcp_and_udp_cross_three_links_byte_exact() {
        let _serial = serial();
        // Rate-limited, so that one stream needs every link (without limits one veth pair
        // carries more than braid's worker can fill, and striping is optional).
        // Two vNIC queues: two data-path workers per side (checked below).
        let tb = testbed(
            "x",
            &["--links", "300mbit,300mbit,300mbit", "--queues", "2"],
        );
        tb.wait_links_up(3);

        // 160 000 × 1300 bytes = 208 MB of UDP, each datagram checked (1300 + 28 fits the
        // testbed's vNIC MTU, 1416, so the kernel does not fragment them). Every datagram
        // that arrives must be exact and in order, and at least 200 MB of them must arrive.
        // Not all of them do in every run on a 2-core machine shared by both daemons and
        // the traffic tools: a starved worker can lose a few hundred to the TUN device's
        // queue (500 packets) before braid reads them. The loss is printed.
        let udp = udp_transfer(&tb, 5300, 160_000, 20_000, 1300, || {});
        assert_eq!(udp["corrupt"], 0, "{udp}");
        assert_eq!(udp["out_of_order"], 0, "{udp}");
        let unique = udp["unique"].as_u64().unwrap_or(0);
        eprintln!("UDP: {unique} of 160000 datagrams arrived, each byte-exact");
        if unique * 1300 < 200_000_000 {
            std::thread::sleep(Duration::from_millis(1200));
            panic!(
                "at least 200 MB of UDP should arrive: {udp}\na: {}\nb: {}",
                tb.stats('a'),
                tb.stats('b')
            );
        }
        assert_eq!(udp["duplicates"], 0, "{udp}");

        let (client, server) = tcp_transfer(&tb, "200M", 5201, || {});
        assert_eq!(client["bytes"], 200u64 << 20);
        assert_eq!(server["bytes"], 200u64 << 20);
        assert_eq!(
            client["blake3"], server["blake3"],
            "the stream arrived byte-exact"
        );
        assert_eq!(
            server["ok"], true,
            "the server checked every byte against the seed"
        );

        std::thread::sleep(Duration::from_millis(1200));
        let a = tb.stats('a');
        for i in 0..3 {
            assert!(
                a["nics"][i]["tx_bytes"].as_u64().unwrap_or(0) > 10_000_000,
                "link {i} carried part of the traffic: {}",
                a["nics"][i]
            );
        }
        // Two workers per side (two vNIC queues); which one carries a flow
        // is the kernel's choice, and RSS may deliver it on the other's queue (steered).
        let b = tb.stats('b');
        for (side, s) in [('a', &a), ('b', &b)] {
            let workers = s["workers"].as_array().map_or(0, Vec::len);
            assert_eq!(workers, 2, "side {side}: two data-path workers");
            eprintln!("side {side}: steering {}", s["steering"]);
        }
    }

    /// The raw Ethernet transport (AF_PACKET, braid's EtherTypes), with two workers per side
    /// and one reader per NIC (`--receive per-nic`): `--transport ethernet` makes each NIC
    /// send raw frames to the peer veth's MAC, every worker sends a link's frames to the
    /// EtherType of the peer worker that reads that link, and the reader hands the other
    /// worker's packets over the inter-NIC channel. A TCP stream crosses the vNICs
    /// byte-exact, striped over every link, and nothing is dropped by the transport's
    /// filters.
    #[test]
    fn tcp_crosses_three_ethernet_links_byte_exact() {
        let _serial = serial();
        // Rate-limited, so that one stream needs every link.
        let tb = testbed(
            "e",
            &[
                "--transport",
                "ethernet",
                "--links",
                "200mbit,200mbit,200mbit",
                "--queues",
                "2",
                "--receive",
                "per-nic",
            ],
        );
        let config = std::fs::read_to_string(tb.dir().join("a.toml")).expect("a.toml");
        assert_eq!(
            config.matches("transport = \"ethernet\"").count(),
            3,
            "{config}"
        );
        assert_eq!(config.matches("peer_mac = ").count(), 3, "{config}");
        // Two workers, one EtherType each (0x88B5, 0x88B6), one reader per link.
        assert!(config.contains("queues = 2"), "{config}");
        assert!(config.contains("receive = \"per-nic\""), "{config}");
        tb.wait_links_up(3);
        let (client, server) = tcp_transfer(&tb, "64M", 5201, || {});
        assert_eq!(client["bytes"], 64u64 << 20);
        assert_eq!(server["bytes"], 64u64 << 20);
        assert_eq!(client["blake3"], server["blake3"], "byte-exact stream");
        assert_eq!(server["ok"], true, "every byte matched the seed");
        eprintln!(
            "64 MiB over 3 × 200 Mbit/s raw Ethernet links: {} Mbit/s",
            client["mbps"]
        );
        // The stats files are rewritten every second.
        std::thread::sleep(Duration::from_millis(1200));
        let (a, b) = (tb.stats('a'), tb.stats('b'));
        for (side, s) in [('a', &a), ('b', &b)] {
            let workers = s["workers"].as_array().map_or(0, Vec::len);
            assert_eq!(workers, 2, "side {side}: two workers");
            eprintln!("side {side}: steering {}", s["steering"]);
        }
        // Whichever worker carried the stream, part of it arrived on a link that the other
        // worker of b reads (worker 1 reads link 1, worker 0 links 0 and 2): handed over.
        let st = &b["steering"];
        let handed = st["rx_handed_in"].as_u64().unwrap_or(0);
        assert!(handed > 3_000, "b handed packets to their owner: {st}");
        // Every handed packet was read by a link's reader (the workers publish their counters
        // at slightly different moments, hence the slack).
        let out = st["rx_handed_out"].as_u64().unwrap_or(0);
        assert!(out.abs_diff(handed) <= handed / 100, "{st}");
        // Only the readers' sockets receive: worker 1 does not read links 0 and 2.
        for i in [0, 2] {
            let rx = b["workers"][1]["nics"][i]["transport"]["rx_packets"].as_u64();
            assert_eq!(
                rx,
                Some(0),
                "b worker 1, link {i}: {}",
                b["workers"][1]["nics"][i]
            );
        }
        for i in 0..3 {
            let (na, nb) = (&a["nics"][i], &b["nics"][i]);
            let (ta, tb_) = (&na["transport"], &nb["transport"]);
            // The AF_PACKET transport's own counters are in the JSON: this link is ethernet.
            assert!(ta.get("rx_drop_ethertype").is_some(), "link {i}: {ta}");
            assert!(
                ta["tx_bytes"].as_u64().unwrap_or(0) > 5_000_000,
                "link {i} carried part of the stream: {na}"
            );
            assert!(
                tb_["rx_packets"].as_u64().unwrap_or(0) > 3_000,
                "link {i} delivered frames to b: {nb}"
            );
            for (side, t) in [('a', ta), ('b', tb_)] {
                for key in [
                    "rx_drop_foreign",
                    "rx_drop_truncated",
                    "rx_drop_runt",
                    "rx_drop_ethertype",
                ] {
                    assert_eq!(t[key], 0, "side {side} link {i}: {key}: {t}");
                }
            }
        }
    }

    #[test]
    fn jumbo_vnic_over_1500_byte_links_is_split() {
        let _serial = serial();
        // With busy polling (`daemon.busy_poll_us`): the workers spin 20 µs after a busy
        // turn; every byte must still arrive.
        let tb = testbed(
            "j",
            &[
                "--links",
                "none,none,none",
                "--vnic-mtu",
                "9000",
                "--busy-poll-us",
                "20",
            ],
        );
        let config = std::fs::read_to_string(tb.dir().join("a.toml")).expect("a.toml");
        assert!(config.contains("busy_poll_us = 20"), "{config}");
        tb.wait_links_up(3);
        let (client, server) = tcp_transfer(&tb, "50M", 5201, || {});
        assert_eq!(client["blake3"], server["blake3"]);
        assert_eq!(server["ok"], true);
        std::thread::sleep(Duration::from_millis(1200));
        let a = tb.stats('a');
        let b = tb.stats('b');
        // 50 MiB in ~9000-byte packets is ~5 800 of them (fewer when TCP sends short
        // segments). Each was cut to fit the 1500-byte links (over several links, or in
        // several pieces on one) and put back together by b.
        let (reassembled, split) = (b["reassembled"].as_u64(), a["tx_split"].as_u64());
        assert!(
            reassembled.unwrap_or(0) > 2500 && split.unwrap_or(0) > 0,
            "jumbo packets cut and reassembled: reassembled {reassembled:?}, split over several \
             links {split:?}, whole {}",
            a["tx_whole"]
        );
        assert!(
            b["rx_delivered_bytes"].as_u64().unwrap_or(0) > 50_000_000,
            "{b}"
        );
    }

    /// The first time (CLOCK_MONOTONIC ns) at or after `since` at which `side`'s daemon
    /// logged `nic` going Down.
    fn down_at(tb: &Testbed, side: char, nic: &str, since: u64) -> Option<u64> {
        tb.log(side)
            .lines()
            .filter_map(|l| {
                (l.contains("link state")
                    && l.contains(&format!("nic=\"{nic}\""))
                    && l.contains("to=Down"))
                .then(|| {
                    let v = l.split("at_ns=").nth(1)?;
                    v.split_whitespace().next()?.parse().ok()
                })
                .flatten()
            })
            .find(|at: &u64| *at >= since)
    }

    #[test]
    fn link_down_mid_transfer_tcp_completes_duplicated_feed_loses_nothing() {
        let _serial = serial();
        let tb = testbed("f", &["--links", "200mbit,200mbit,200mbit"]);
        tb.wait_links_up(3);
        let mut t0 = 0;
        let mut udp = Value::Null;
        let (client, server) = tcp_transfer(&tb, "150M", 5201, || {
            // The duplicated, latency-critical class of the testbed's config: UDP to 5000.
            udp = udp_transfer(&tb, 5000, 6000, 2000, 200, || {
                std::thread::sleep(Duration::from_millis(1000));
                // Set a's end down by netlink from inside the namespace, the moment taken
                // just before (an `ip` command would add its own start-up time).
                t0 = in_netns(&tb.ns('a'), || {
                    let t = monotonic_ns();
                    braid_io::netlink::set_link("nic2", None, false).expect("link down");
                    t
                });
            });
        });
        assert_eq!(
            client["blake3"], server["blake3"],
            "TCP completed byte-exact"
        );
        assert_eq!(server["ok"], true);
        if udp["unique"] != 6000 {
            std::thread::sleep(Duration::from_millis(1200));
            let qdisc = tb.exec('a', &["tc", "-s", "qdisc", "show", "dev", "braid0"]);
            panic!(
                "the duplicated feed lost {}: {udp}\na drops {}\nb drops {}\na's vNIC qdisc: {}",
                6000 - udp["unique"].as_u64().unwrap_or(0),
                tb.stats('a')["drops"],
                tb.stats('b')["drops"],
                String::from_utf8_lossy(&qdisc.stdout)
            );
        }
        assert_eq!(udp["lost"], 0, "{udp}");
        assert_eq!(udp["corrupt"], 0, "{udp}");
        for side in ['a', 'b'] {
            let at = down_at(&tb, side, "link2", t0)
                .unwrap_or_else(|| panic!("{side} never logged link2 down:\n{}", tb.log(side)));
            let ms = (at.saturating_sub(t0)) as f64 / 1e6;
            eprintln!("side {side}: link2 down detected {ms:.1} ms after it was set down");
            assert!(ms <= 30.0, "side {side}: detection took {ms:.1} ms");
        }
    }

    /// IPv4/UDP packets a sends to b on link 0 (braid port 7700), captured with AF_PACKET in a's
    /// namespace while `traffic` runs, up to `want` of them.
    fn capture_braid_packets(
        tb: &Testbed,
        want: usize,
        traffic: impl FnOnce() + Send,
    ) -> Vec<Vec<u8>> {
        use std::io::Read;
        std::thread::scope(|s| {
            let capture = s.spawn(|| {
                in_netns(&tb.ns('a'), || {
                    // ETH_P_ALL in network byte order: every frame, outgoing ones too.
                    let mut sock = socket2::Socket::new(
                        socket2::Domain::PACKET,
                        socket2::Type::RAW,
                        Some(socket2::Protocol::from(i32::from(0x0003u16.to_be()))),
                    )
                    .expect("AF_PACKET socket");
                    sock.set_read_timeout(Some(Duration::from_millis(100)))
                        .expect("timeout");
                    let mut got = Vec::new();
                    let mut buf = vec![0u8; 65_536];
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while got.len() < want && Instant::now() < deadline {
                        let Ok(n) = sock.read(&mut buf) else { continue };
                        let f = &buf[..n];
                        if n < 14 + 28 + 40 || f[12..14] != [0x08, 0x00] {
                            continue;
                        }
                        let ip = &f[14..];
                        let ihl = usize::from(ip[0] & 0x0f) * 4;
                        let udp = &ip[ihl..];
                        let to_b = ip[9] == 17
                            && ip[12..16] == [10, 77, 0, 1]
                            && ip[16..20] == [10, 77, 0, 2]
                            && udp[0..2] == 7700u16.to_be_bytes()
                            && udp[2..4] == 7700u16.to_be_bytes();
                        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
                        if to_b && total <= ip.len() {
                            got.push(ip[..total].to_vec());
                        }
                    }
                    got
                })
            });
            traffic();
            capture.join().expect("capture thread")
        })
    }

    /// Send raw IPv4 packets (headers included, source spoofed as they are) from a's namespace.
    fn inject(tb: &Testbed, packets: &[Vec<u8>]) {
        in_netns(&tb.ns('a'), || {
            let sock = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::RAW,
                Some(socket2::Protocol::from(255)), // IPPROTO_RAW: we write the IP header
            )
            .expect("raw socket");
            let to: std::net::SocketAddr = "10.77.0.2:0".parse().expect("addr");
            for p in packets {
                sock.send_to(p, &to.into()).expect("send raw");
                std::thread::sleep(Duration::from_micros(200));
            }
        });
    }

    /// A copy of a captured IP packet with its UDP payload (the braid packet) changed by `f`; the
    /// IP and UDP lengths follow, the UDP checksum is 0 (none) and the kernel fills the IP one.
    fn rewrite(ip: &[u8], f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let mut payload = ip[ihl + 8..].to_vec();
        f(&mut payload);
        let mut out = ip[..ihl + 8].to_vec();
        out.extend_from_slice(&payload);
        let total = u16::try_from(out.len()).expect("fits");
        out[2..4].copy_from_slice(&total.to_be_bytes());
        let udp_len = u16::try_from(8 + payload.len()).expect("fits");
        out[ihl + 4..ihl + 6].copy_from_slice(&udp_len.to_be_bytes());
        out[ihl + 6..ihl + 8].copy_from_slice(&[0, 0]);
        out
    }

    #[test]
    fn forged_and_replayed_packets_reach_nothing_and_are_counted() {
        let _serial = serial();
        let tb = testbed("r", &["--links", "none,none"]);
        tb.wait_links_up(2);
        const N: usize = 40;
        let captured = capture_braid_packets(&tb, N, || {
            let udp = udp_transfer(&tb, 5300, 2000, 1000, 300, || {});
            assert_eq!(udp["unique"], 2000, "{udp}");
        });
        assert_eq!(captured.len(), N, "captured braid packets on link 0");
        // Let every counter settle and be written (the stats file is rewritten every second).
        std::thread::sleep(Duration::from_millis(1500));
        let before = tb.stats('b');

        let replays: Vec<_> = captured.iter().map(|p| rewrite(p, |_| {})).collect();
        let bad_tag: Vec<_> = captured
            .iter()
            // A counter far ahead of the receiver's window (so the replay check passes) under
            // the old tag: only the tag check can catch it.
            .map(|p| rewrite(p, |b| b[33] ^= 0x01))
            .collect();
        // A well-formed braid header without AUTH (32 bytes, no counter, no tag).
        let unauth: Vec<_> = captured
            .iter()
            .map(|p| {
                rewrite(p, |b| {
                    let body = b[40..b.len() - 16].to_vec();
                    b.truncate(32);
                    b[1] &= !0x05; // AUTH and ENCRYPTED off
                    b[3] = 8; // header length in 4-byte words
                    b.extend_from_slice(&body);
                })
            })
            .collect();
        let garbage: Vec<_> = captured
            .iter()
            .map(|p| rewrite(p, |b| b.iter_mut().for_each(|x| *x = 0xff)))
            .collect();
        // An application listening where the captured datagrams were going: if any injected
        // packet got through braid, it would receive it.
        let listener = tb.spawn(
            'b',
            &[
                BRAID,
                "traffic",
                "udp-server",
                "--listen",
                "10.99.0.2:5300",
                "--duration",
                "3s",
            ],
        );
        std::thread::sleep(Duration::from_millis(300));
        for set in [&replays, &bad_tag, &unauth, &garbage] {
            inject(&tb, set);
        }
        let heard = json_line(
            &wait_child(listener, "udp-server", Duration::from_secs(10)),
            "udp-server",
        );
        assert_eq!(
            heard["received"], 0,
            "nothing injected reached the application: {heard}"
        );
        std::thread::sleep(Duration::from_millis(1500));
        let after = tb.stats('b');
        let delta = |label: &str| drop_count(&after, label) - drop_count(&before, label);
        let replayed = delta("replayed_packet") + delta("replay_too_old");
        eprintln!(
            "replayed {replayed}, bad tag {}, unauthenticated {}, malformed {}",
            delta("bad_auth_tag"),
            delta("unauthenticated"),
            delta("malformed_header")
        );
        assert!(replayed >= N as u64, "replays dropped: {}", after["drops"]);
        assert!(delta("bad_auth_tag") >= N as u64, "{}", after["drops"]);
        assert!(delta("unauthenticated") >= N as u64, "{}", after["drops"]);
        assert!(delta("malformed_header") >= N as u64, "{}", after["drops"]);
    }

    #[test]
    fn sigterm_leaves_no_device_socket_or_process() {
        let _serial = serial();
        let tb = testbed("s", &["--links", "none,none"]);
        tb.wait_links_up(2);
        for side in ['a', 'b'] {
            let pid = tb.pid(side);
            rustix::process::kill_process(
                rustix::process::Pid::from_raw(pid).expect("pid"),
                rustix::process::Signal::TERM,
            )
            .expect("SIGTERM");
            let deadline = Instant::now() + Duration::from_secs(5);
            while Path::new(&format!("/proc/{pid}")).exists() {
                assert!(
                    Instant::now() < deadline,
                    "braid {side} still running 5 s after SIGTERM"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            let link = tb.exec(side, &["ip", "link", "show", "braid0"]);
            assert!(!link.status.success(), "braid0 is gone in {side}");
            let socks = tb.exec(side, &["ss", "-Hanu"]);
            assert!(
                String::from_utf8_lossy(&socks.stdout).trim().is_empty(),
                "no UDP socket left in {side}: {}",
                String::from_utf8_lossy(&socks.stdout)
            );
            let log = tb.log(side);
            assert!(
                log.contains("stopped; sockets closed"),
                "clean shutdown logged:\n{log}"
            );
        }
    }

    #[test]
    fn nic_that_disappears_is_used_again_when_it_returns() {
        let _serial = serial();
        let tb = testbed("n", &["--links", "none,none"]);
        tb.wait_links_up(2);
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("ip");
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        // Deleting one end of a veth pair deletes both.
        ip(&["-n", &tb.ns('a'), "link", "del", "nic1"]);
        std::thread::sleep(Duration::from_millis(2500));
        for side in ['a', 'b'] {
            let s = tb.stats(side);
            assert_eq!(
                s["nics"][1]["open"], false,
                "{side}: link1 closed: {}",
                s["nics"][1]
            );
            assert_eq!(
                s["nics"][1]["link"]["state"], "Down",
                "{side}: {}",
                s["nics"][1]
            );
        }
        // Traffic still flows over link0.
        let (c, s) = tcp_transfer(&tb, "5M", 5201, || {});
        assert_eq!(c["blake3"], s["blake3"]);

        let (na, nb) = (tb.ns('a'), tb.ns('b'));
        ip(&[
            "link", "add", "nic1", "netns", &na, "type", "veth", "peer", "name", "nic1", "netns",
            &nb,
        ]);
        ip(&["-n", &na, "addr", "add", "10.77.1.1/24", "dev", "nic1"]);
        ip(&["-n", &nb, "addr", "add", "10.77.1.2/24", "dev", "nic1"]);
        ip(&["-n", &na, "link", "set", "nic1", "up"]);
        ip(&["-n", &nb, "link", "set", "nic1", "up"]);
        tb.wait_links_up(2);
        let before = tb.stats('a')["nics"][1]["tx_bytes"].as_u64().unwrap_or(0);
        // Data, not probes: a probe every 5 ms is about 20 kB/s, under 100 kB in the window of
        // one transfer. How much of a stream the returned link gets depends on when its
        // health and the scheduler's view of it (delay, loss) have settled after the outage,
        // so the bar is 200 kB (about 150 full packets), not a share, and there are up to
        // five 20 MB transfers to reach it: under load, the first one sometimes went all on
        // link0 (CI, 2026-11-28), and another run gave link1 0.74 MB of the first.
        let mut after = before;
        let mut a = Value::Null;
        for attempt in 0..5u16 {
            let (c, s) = tcp_transfer(&tb, "20M", 5202 + attempt, || {});
            assert_eq!(c["blake3"], s["blake3"]);
            std::thread::sleep(Duration::from_millis(1200));
            a = tb.stats('a');
            after = a["nics"][1]["tx_bytes"].as_u64().unwrap_or(0);
            if after > before + 200_000 {
                break;
            }
        }
        assert_eq!(a["nics"][1]["open"], true);
        assert!(
            a["nics"][1]["transport"]["reopened"].as_u64().unwrap_or(0) >= 1,
            "{}",
            a["nics"][1]
        );
        assert!(
            after > before + 200_000,
            "link1 carries traffic again: {before} -> {after}\n{}",
            a["nics"][1]
        );
    }
}
