//! `braid run` reloads its policies on SIGHUP (issue 4: tunnels, QoS and rules replaced at
//! run time as one set), as root, against a Linux kernel VXLAN device.
//!
//! Two network namespaces (`braid-tunlive-<q>a-<pid>`, `braid-tunlive-<q>b-<pid>`) joined by
//! one veth pair, with one and with two workers (vNIC queues `q`). In a, a braid daemon with a TUN vNIC (10.99.0.1/24), one NIC on the veth and
//! one GRE tunnel (`g0`, to an address nobody has: its socket only has to stay open). In b,
//! the kernel's `vxlan0` (10.99.0.2/24, VNI 42), as in tests/tunnels.rs. The test:
//!
//! 1. checks a datagram from braid's vNIC to 10.99.0.2:6003 does not reach vxlan0 (no
//!    tunnel carries it yet);
//! 2. writes a config that adds a VXLAN tunnel `t0` in front of `g0` (which moves to the
//!    second place) and a rule sending UDP to 6003 into it, sends SIGHUP, and waits for the
//!    log's "reload done". Datagrams then go both ways byte-exact (braid → kernel through braid's
//!    new VXLAN, kernel → braid through the new receiving socket), counted by braid's stats
//!    (`t0`'s counters, the new `vxlan` port, receiving on worker 0 only) and by vxlan0;
//!    `g0`'s sockets were kept (the log shows one port opened per worker, none closed);
//! 3. reloads a broken file (a VNI above 24 bits), then one that changes `[[nics]]` (needs a
//!    restart): each is refused with an error in the log naming the field or section, and
//!    the tunnel keeps carrying datagrams with its counters going on from where they were;
//! 4. reloads the first file: `t0`'s sockets are closed (one per worker) and datagrams to
//!    6003 no longer reach vxlan0.
//!
//! Tools: iproute2 and ethtool. Without root, or without a tool, the test fails and says so.
//! Every wait is bounded; the daemon and both namespaces are removed by a drop guard, even on
//! failure.

#[cfg(test)]
mod tests {
    use std::net::{SocketAddr, UdpSocket};
    use std::path::PathBuf;
    use std::process::{Child, Command, Output, Stdio};
    use std::time::{Duration, Instant};

    use serde_json::Value;

    const BRAID: &str = env!("CARGO_BIN_EXE_braid");
    /// The inner MAC braid uses by default (config/tunnels.rs) and vxlan0's.
    const BRAID_MAC: &str = "02:62:72:61:69:64";
    const VXLAN0_MAC: &str = "02:00:00:00:00:0b";
    /// Datagrams each way per exchange.
    const N: usize = 20;

    /// One test at a time: each runs a daemon on a 2-core machine.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn run(program: &str, args: &[&str]) -> Output {
        Command::new(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"))
    }

    /// Run a command and fail the test with its output if it fails.
    fn ok(program: &str, args: &[&str]) -> String {
        let out = run(program, args);
        assert!(
            out.status.success(),
            "{program} {}: {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Two namespaces joined by a veth pair and the daemon in a; all removed on drop.
    struct Net {
        a: String,
        b: String,
        dev_a: String,
        dev_b: String,
        dir: PathBuf,
        braid: Option<Child>,
    }

    impl Net {
        /// Namespaces `braid-tunlive-<tag>a-<pid>` and `...b-<pid>`.
        fn new(tag: &str) -> Self {
            assert!(
                rustix::process::geteuid().is_root(),
                "this test needs root (network namespaces, veth, a TUN device, raw sockets); \
                 run it as root, as CI does: sudo -E cargo test -p braid --test reload"
            );
            let found = Command::new("ethtool")
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .is_ok();
            assert!(
                found,
                "ethtool is needed: apt-get install ethtool (bash .ci/run does)"
            );
            let pid = std::process::id() % 100_000;
            let net = Self {
                a: format!("braid-tunlive-{tag}a-{pid}"),
                b: format!("braid-tunlive-{tag}b-{pid}"),
                // Interface names: at most 15 bytes.
                dev_a: format!("tl{tag}a{pid}"),
                dev_b: format!("tl{tag}b{pid}"),
                dir: std::env::temp_dir().join(format!("braid-tunlive-{tag}-{pid}")),
                braid: None,
            };
            for ns in [&net.a, &net.b] {
                let _ = run("ip", &["netns", "delete", ns]);
            }
            let _ = std::fs::remove_dir_all(&net.dir);
            std::fs::create_dir_all(&net.dir).expect("test directory");
            for ns in [&net.a, &net.b] {
                ok("ip", &["netns", "add", ns]);
                net.exec(ns, &["ip", "link", "set", "lo", "up"]);
                // No IPv6: router solicitations would be tunnelled too and blur the counts.
                net.exec(
                    ns,
                    &[
                        "sysctl",
                        "-qw",
                        "net.ipv6.conf.all.disable_ipv6=1",
                        "net.ipv6.conf.default.disable_ipv6=1",
                    ],
                );
            }
            ok(
                "ip",
                &[
                    "link", "add", &net.dev_a, "netns", &net.a, "type", "veth", "peer", "name",
                    &net.dev_b, "netns", &net.b,
                ],
            );
            for (ns, dev, addr) in [
                (&net.a, &net.dev_a, "10.77.0.1/24"),
                (&net.b, &net.dev_b, "10.77.0.2/24"),
            ] {
                net.exec(ns, &["ip", "addr", "add", addr, "dev", dev]);
                net.exec(ns, &["ip", "link", "set", dev, "up"]);
            }
            net
        }

        fn exec(&self, ns: &str, cmd: &[&str]) -> String {
            let mut args = vec!["netns", "exec", ns];
            args.extend_from_slice(cmd);
            ok("ip", &args)
        }

        fn path(&self, file: &str) -> PathBuf {
            self.dir.join(file)
        }

        fn log(&self) -> String {
            std::fs::read_to_string(self.path("a.log")).unwrap_or_default()
        }

        fn write_config(&self, config: &str) {
            let stats = self.path("a.stats.json");
            let config = config.replace("STATS", stats.to_str().expect("path"));
            std::fs::write(self.path("a.toml"), config).expect("write config");
        }

        /// Start braid in namespace a and wait (bounded) for its stats file.
        fn start_braid(&mut self, config: &str) {
            self.write_config(config);
            let log = std::fs::File::create(self.path("a.log")).expect("log file");
            let child = Command::new("ip")
                .args(["netns", "exec", &self.a, BRAID, "run", "--config"])
                .arg(self.path("a.toml"))
                .env("RUST_LOG", "info")
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("start braid");
            self.braid = Some(child);
            let deadline = Instant::now() + Duration::from_secs(10);
            while !self.path("a.stats.json").exists() {
                assert!(
                    Instant::now() < deadline,
                    "braid did not start within 10 s:\n{}",
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }

        /// Write `config`, send braid SIGHUP and wait (bounded) for the reload's outcome in
        /// the log: the new log lines.
        fn reload(&mut self, config: &str) -> String {
            self.write_config(config);
            let outcomes = |log: &str| {
                log.matches("reload done").count() + log.matches("reload refused").count()
            };
            let before = self.log();
            let child = self.braid.as_mut().expect("braid runs");
            assert!(
                child.try_wait().ok().flatten().is_none(),
                "braid exited:\n{before}"
            );
            let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
            rustix::process::kill_process(pid, rustix::process::Signal::HUP).expect("SIGHUP");
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let log = self.log();
                if outcomes(&log) > outcomes(&before) {
                    return log[before.len()..].to_owned();
                }
                assert!(
                    Instant::now() < deadline,
                    "no reload outcome in the log within 5 s:\n{log}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }

        /// braid's stats (written every second) once `done` holds, or after 5 s.
        fn stats_when(&self, done: impl Fn(&Value) -> bool) -> Value {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let v: Value = std::fs::read_to_string(self.path("a.stats.json"))
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .unwrap_or(Value::Null);
                if done(&v) || Instant::now() > deadline {
                    return v;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    impl Drop for Net {
        fn drop(&mut self) {
            if let Some(child) = &mut self.braid {
                if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                }
                let deadline = Instant::now() + Duration::from_secs(3);
                while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            for ns in [&self.a, &self.b] {
                let _ = run("ip", &["netns", "delete", ns]);
            }
            if std::thread::panicking() {
                eprintln!("braid's log:\n{}", self.log());
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A UDP socket bound to `addr` inside namespace `ns` (made on a thread that entered it).
    fn udp_in(ns: &str, addr: &str) -> UdpSocket {
        use std::os::fd::AsFd;
        let addr: SocketAddr = addr.parse().expect("address");
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = std::fs::File::open(format!("/run/netns/{ns}")).expect("netns file");
                rustix::thread::move_into_link_name_space(
                    file.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .expect("setns");
                let socket = UdpSocket::bind(addr).expect("bind");
                socket
                    .set_read_timeout(Some(Duration::from_millis(200)))
                    .expect("timeout");
                socket
            })
            .join()
            .expect("netns thread")
        })
    }

    /// Datagram `i`: 1 to 1300 bytes of a pattern that depends on `i` and `salt`.
    fn datagram(i: usize, salt: u8) -> Vec<u8> {
        let len = 1 + (i * 97) % 1300;
        (0..len)
            .map(|k| (k as u8).wrapping_mul(13) ^ (i as u8) ^ salt)
            .collect()
    }

    /// Send `N` datagrams from `from` to `to` and receive them on `sink`, in order and
    /// byte-exact (each resent at most 10 times if nothing arrives: the first may meet a
    /// neighbour lookup). Returns the number of sends.
    fn exchange(from: &UdpSocket, to: &str, sink: &UdpSocket, salt: u8) -> usize {
        let to: SocketAddr = to.parse().expect("address");
        let mut buf = vec![0u8; 2048];
        let mut sends = 0;
        for i in 0..N {
            let d = datagram(i, salt);
            let mut got = None;
            for _ in 0..10 {
                from.send_to(&d, to).expect("send");
                sends += 1;
                if let Ok((n, _)) = sink.recv_from(&mut buf) {
                    got = Some(buf[..n].to_vec());
                    break;
                }
            }
            let got = got.unwrap_or_else(|| panic!("datagram {i} to {to} never arrived"));
            assert_eq!(got, d, "datagram {i} to {to} changed on the way");
        }
        assert!(
            sink.recv_from(&mut buf).is_err(),
            "an extra datagram for {to}"
        );
        sends
    }

    /// The stats' entry of tunnel `name`.
    fn tunnel<'a>(stats: &'a Value, name: &str) -> &'a Value {
        stats["tunnels"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["name"] == name))
            .unwrap_or(&Value::Null)
    }

    fn port_names(stats: &Value) -> Vec<String> {
        stats["tunnel_ports"]
            .as_array()
            .map(|p| {
                p.iter()
                    .filter_map(|p| p["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn config(dev: &str, queues: u16, tunnels_and_rules: &str) -> String {
        format!(
            r#"
[vnic]
name = "{dev}v"
addresses = ["10.99.0.1/24"]
mtu = 1400
offload = false
queues = {queues}

[peer]
role = "a"

# braid's own NIC; no braid peer answers in this test, the tunnels use its device.
[[nics]]
name = "link0"
device = "{dev}"
local = "10.77.0.1:7700"
peer = "10.77.0.2:7700"
capacity = "1gbit"

{tunnels_and_rules}

[[tunnels]]
name = "g0"
kind = "gre"
nic = "link0"
local = "10.77.0.1"
remote = "10.77.0.9"
key = 5

[daemon]
stats_file = "STATS"
busy_poll_us = 0
"#
        )
    }

    fn with_t0(dev: &str, queues: u16, vni: u32) -> String {
        config(
            dev,
            queues,
            &format!(
                r#"[[tunnels]]
name = "t0"
kind = "vxlan"
nic = "link0"
local = "10.77.0.1"
remote = "10.77.0.2"
vni = {vni}
inner_dst_mac = "{VXLAN0_MAC}"
src_ports = "32768-60999"

[[rules]]
name = "to-the-vtep"
protocol = "udp"
dst_ports = "6003"
tunnel = "t0"
"#
            ),
        )
    }

    #[test]
    fn sighup_adds_a_tunnel_and_a_rule_and_refuses_a_broken_file() {
        reload_with(1);
    }

    /// Two workers: both get a sending socket for the new tunnel, worker 0 the receiving
    /// one, and both close theirs when it goes.
    #[test]
    fn sighup_reloads_every_worker() {
        reload_with(2);
    }

    fn reload_with(queues: u16) {
        let _serial = SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut net = Net::new(&queues.to_string());
        let (b, dev_b) = (net.b.clone(), net.dev_b.clone());
        net.exec(
            &b,
            &[
                "ip",
                "link",
                "add",
                "vxlan0",
                "type",
                "vxlan",
                "id",
                "42",
                "dstport",
                "4789",
                "remote",
                "10.77.0.1",
                "local",
                "10.77.0.2",
                "dev",
                &dev_b,
            ],
        );
        net.exec(&b, &["ip", "link", "set", "vxlan0", "address", VXLAN0_MAC]);
        net.exec(&b, &["ip", "addr", "add", "10.99.0.2/24", "dev", "vxlan0"]);
        net.exec(&b, &["ip", "link", "set", "vxlan0", "up"]);
        // The veth would hand braid the kernel's VXLAN packets with their checksums still to
        // be filled in (a NIC fills them on the wire).
        net.exec(&b, &["ethtool", "-K", &dev_b, "tx", "off"]);
        net.exec(
            &b,
            &[
                "ip",
                "neigh",
                "add",
                "10.99.0.1",
                "lladdr",
                BRAID_MAC,
                "dev",
                "vxlan0",
                "nud",
                "permanent",
            ],
        );
        let dev_a = net.dev_a.clone();
        let first = config(&dev_a, queues, "");
        let workers = usize::from(queues);
        // The stats of worker 0 (the file's totals merge the workers' port lists).
        let worker0 = |v: &Value| -> Value {
            if queues > 1 {
                v["workers"][0].clone()
            } else {
                v.clone()
            }
        };
        net.start_braid(&first);
        let on_braid = udp_in(&net.a, "10.99.0.1:6002");
        let on_kernel = udp_in(&b, "10.99.0.2:6003");
        let mut buf = vec![0u8; 2048];

        // 1. No tunnel for the flow yet: it goes to the (absent) braid peer.
        on_braid
            .send_to(&datagram(0, 1), "10.99.0.2:6003")
            .expect("send");
        assert!(
            on_kernel.recv_from(&mut buf).is_err(),
            "reached vxlan0 before the reload"
        );
        let stats = net.stats_when(|v| !v["tunnels"].is_null());
        assert_eq!(port_names(&stats), ["gre 10.77.0.1"], "{stats}");

        // 2. The tunnel and its rule, added by SIGHUP.
        let log = net.reload(&with_t0(&dev_a, queues, 42));
        assert!(log.contains("reload done"), "{log}");
        assert_eq!(log.matches("tunnel port opened").count(), workers, "{log}");
        assert_eq!(log.matches("receives=true").count(), 1, "{log}");
        assert!(log.contains("vxlan 10.77.0.1:4789"), "{log}");
        assert!(
            !log.contains("tunnel port closed"),
            "g0's port is kept: {log}"
        );
        let out1 = exchange(&on_braid, "10.99.0.2:6003", &on_kernel, 0x5a);
        let back1 = exchange(&on_kernel, "10.99.0.1:6002", &on_braid, 0xa5);
        let stats = net.stats_when(|v| {
            tunnel(v, "t0")["tx_packets"].as_u64() >= Some(out1 as u64)
                && tunnel(v, "t0")["rx_packets"].as_u64() >= Some(back1 as u64)
        });
        let t0 = tunnel(&stats, "t0");
        assert_eq!(t0["id"], 0, "{stats}");
        assert_eq!(tunnel(&stats, "g0")["id"], 1, "g0 moved behind t0: {stats}");
        assert_eq!(t0["tx_packets"].as_u64(), Some(out1 as u64), "{stats}");
        assert_eq!(t0["rx_packets"].as_u64(), Some(back1 as u64), "{stats}");
        assert_eq!(
            port_names(&stats),
            ["vxlan 10.77.0.1:4789", "gre 10.77.0.1"],
            "{stats}"
        );
        assert_eq!(
            worker0(&stats)["tunnel_ports"][0]["receives"],
            true,
            "{stats}"
        );
        if queues > 1 {
            assert_eq!(
                stats["workers"][1]["tunnel_ports"][0]["receives"], false,
                "{stats}"
            );
        }
        assert_eq!(stats["drops"]["tunnel_removed"].as_u64(), None, "{stats}");
        let link: Value =
            serde_json::from_str(&net.exec(&b, &["ip", "-s", "-j", "link", "show", "vxlan0"]))
                .expect("ip -j");
        assert_eq!(
            link[0]["stats64"]["rx"]["packets"].as_u64(),
            Some(out1 as u64),
            "{link}"
        );

        // 3. A broken file, then one that needs a restart: refused, named, nothing changes.
        let log = net.reload(&with_t0(&dev_a, queues, 1 << 24));
        assert!(log.contains("reload refused"), "{log}");
        assert!(
            log.contains("tunnels[0].vni: 16777216 must be 0..=16777215"),
            "{log}"
        );
        let other_nic =
            with_t0(&dev_a, queues, 42).replace("capacity = \"1gbit\"", "capacity = \"2gbit\"");
        let log = net.reload(&other_nic);
        assert!(log.contains("reload refused"), "{log}");
        assert!(log.contains("nics: changed"), "{log}");
        assert!(!log.contains("tunnel port"), "no port touched: {log}");
        let out2 = exchange(&on_braid, "10.99.0.2:6003", &on_kernel, 0x11);
        let back2 = exchange(&on_kernel, "10.99.0.1:6002", &on_braid, 0x22);
        let (out, back) = ((out1 + out2) as u64, (back1 + back2) as u64);
        let stats = net.stats_when(|v| {
            tunnel(v, "t0")["tx_packets"].as_u64() >= Some(out)
                && tunnel(v, "t0")["rx_packets"].as_u64() >= Some(back)
        });
        assert_eq!(
            tunnel(&stats, "t0")["tx_packets"].as_u64(),
            Some(out),
            "{stats}"
        );
        assert_eq!(
            tunnel(&stats, "t0")["rx_packets"].as_u64(),
            Some(back),
            "{stats}"
        );

        // 4. Back to the first file: t0's socket closed, the flow no longer tunnelled.
        let log = net.reload(&first);
        assert!(log.contains("reload done"), "{log}");
        assert_eq!(log.matches("tunnel port closed").count(), workers, "{log}");
        let stats = net.stats_when(|v| port_names(v).len() == 1);
        assert_eq!(port_names(&stats), ["gre 10.77.0.1"], "{stats}");
        assert!(tunnel(&stats, "t0").is_null(), "{stats}");
        on_braid
            .send_to(&datagram(1, 1), "10.99.0.2:6003")
            .expect("send");
        assert!(
            on_kernel.recv_from(&mut buf).is_err(),
            "reached vxlan0 after the tunnel was removed"
        );
    }
}
