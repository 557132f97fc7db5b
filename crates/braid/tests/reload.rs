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

mod common;

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::time::{Duration, Instant};

    use serde_json::Value;

    use crate::common::{
        Net, braid_config, datagram, require_root, require_tool, serial, udp_in, vxlan_t0,
    };

    /// Datagrams each way per exchange.
    const N: usize = 20;

    /// The SIGHUP reload only this file's test uses.
    impl Net {
        /// Write `config`, send braid SIGHUP and wait (bounded) for the reload's outcome in the
        /// log: the new log lines.
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
    }

    /// `N` datagrams from `from` to `to`, received byte-exact on `sink`; the number of sends.
    fn exchange(from: &UdpSocket, to: &str, sink: &UdpSocket, salt: u8) -> usize {
        crate::common::exchange(from, to, sink, salt, N).unwrap_or_else(|e| panic!("{e}"))
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

    /// [`braid_config`] with `queues` workers, `tunnels_and_rules`, then the GRE tunnel `g0`
    /// (to an address nobody has: its socket only has to stay open).
    fn config(dev: &str, queues: u16, tunnels_and_rules: &str) -> String {
        braid_config(
            dev,
            &format!("queues = {queues}"),
            &format!(
                r#"{tunnels_and_rules}

[[tunnels]]
name = "g0"
kind = "gre"
nic = "link0"
local = "10.77.0.1"
remote = "10.77.0.9"
key = 5"#
            ),
        )
    }

    fn with_t0(dev: &str, queues: u16, vni: u32) -> String {
        config(
            dev,
            queues,
            &format!(
                r#"{}
src_ports = "32768-60999"

[[rules]]
name = "to-the-vtep"
protocol = "udp"
dst_ports = "6003"
tunnel = "t0"
"#,
                vxlan_t0(vni)
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
        let _serial = serial();
        require_root(
            "this test needs root (network namespaces, veth, a TUN device, raw sockets); run \
             it as root, as CI does: sudo -E cargo test -p braid --test reload",
        );
        require_tool("ethtool", "ethtool");
        let mut net = Net::new(&format!("tunlive-{queues}"), &format!("tl{queues}"));
        let b = net.b.clone();
        net.kernel_vxlan();
        net.exec(&b, &["ip", "addr", "add", "10.99.0.2/24", "dev", "vxlan0"]);
        net.neighbour_braid("vxlan0");
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
        let s64 = net.link_stats("vxlan0");
        assert_eq!(s64["rx"]["packets"].as_u64(), Some(out1 as u64), "{s64}");

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
