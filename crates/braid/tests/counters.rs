//! The rule and QoS counters in the daemon's stats file (issue 4), as root: `braid testbed up
//! --no-start` builds two namespaces joined by one veth link and writes both daemons'
//! configs; the test adds `[[rules]]` (TX on side a: mark UDP to port 6000, drop UDP to
//! 6001; RX on side b: a TTL rewrite of port 6000) and starts both daemons. UDP datagrams
//! cross the vNICs, and `jq` reads the stats files every daemon writes each second: one
//! entry per rule with its packets and bytes, and per NIC and QoS class the scheduler's
//! counters (enqueued, dequeued, drops by reason, colours, queue depth).
//!
//! Without root or jq the test fails and says so. Every wait is bounded; the daemons are
//! stopped and the testbed removed (`braid testbed down`) by a drop guard, even on failure.

#[cfg(test)]
mod tests {
    use std::net::{SocketAddr, UdpSocket};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Output};
    use std::time::{Duration, Instant};

    use serde_json::Value;

    const BRAID: &str = env!("CARGO_BIN_EXE_braid");
    /// Datagrams to the marked port; the dropped port gets `N / 4`, the strict class `N / 2`.
    const N: usize = 20;
    /// UDP payload bytes: 128-byte IP packets.
    const PAYLOAD: usize = 100;

    fn require_root() {
        assert!(
            rustix::process::geteuid().is_root(),
            "this test needs root (network namespaces, veth, TUN devices); run it as root, \
             as CI does: sudo -E cargo test -p braid --test counters"
        );
    }

    fn braid(args: &[&str]) -> Output {
        Command::new(BRAID).args(args).output().expect("run braid")
    }

    /// A testbed whose daemons this test starts; stops them and `down`s it when dropped.
    struct Bed {
        name: String,
        daemons: Vec<Child>,
    }

    impl Bed {
        fn up() -> Self {
            require_root();
            let name = format!("braid-counters-{}", std::process::id() % 100_000);
            let bed = Self {
                name,
                daemons: Vec::new(),
            };
            // Leftovers of an earlier crashed run with the same name.
            let _ = braid(&["testbed", "down", "--name", &bed.name]);
            let out = braid(&[
                "testbed",
                "up",
                "--name",
                &bed.name,
                "--links",
                "100mbit",
                "--no-start",
            ]);
            assert!(
                out.status.success(),
                "testbed up failed:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            bed
        }

        fn dir(&self) -> PathBuf {
            Path::new("/run/braid-testbed").join(&self.name)
        }

        fn ns(&self, side: char) -> String {
            format!("{}-{side}", self.name)
        }

        fn file(&self, side: char, ext: &str) -> PathBuf {
            self.dir().join(format!("{side}.{ext}"))
        }

        fn log(&self, side: char) -> String {
            std::fs::read_to_string(self.file(side, "log")).unwrap_or_default()
        }

        /// Append `extra` to side `side`'s config and start its daemon.
        fn start(&mut self, side: char, extra: &str) {
            let config = self.file(side, "toml");
            let mut text = std::fs::read_to_string(&config).expect("testbed config");
            text.push_str(extra);
            std::fs::write(&config, text).expect("write config");
            let log = std::fs::File::create(self.file(side, "log")).expect("log file");
            let child = Command::new("ip")
                .args(["netns", "exec", &self.ns(side), BRAID, "run", "--config"])
                .arg(&config)
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("start braid");
            self.daemons.push(child);
        }

        /// `jq -c filter` on side `side`'s stats file, parsed (`Null` if there is no file
        /// yet or jq fails).
        fn jq(&self, side: char, filter: &str) -> Value {
            let out = Command::new("jq")
                .args(["-c", filter])
                .arg(self.file(side, "stats.json"))
                .output()
                .expect("jq is needed: apt-get install jq");
            if !out.status.success() {
                return Value::Null;
            }
            serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
        }

        /// Wait (at most `limit`) until `filter` gives `true` on side `side`'s stats.
        fn wait(&self, side: char, filter: &str, limit: Duration) -> bool {
            let deadline = Instant::now() + limit;
            while Instant::now() < deadline {
                if self.jq(side, filter) == Value::Bool(true) {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            false
        }
    }

    impl Drop for Bed {
        fn drop(&mut self) {
            for c in &mut self.daemons {
                if let Some(pid) = rustix::process::Pid::from_raw(c.id() as i32) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                }
                let deadline = Instant::now() + Duration::from_secs(3);
                while Instant::now() < deadline && c.try_wait().ok().flatten().is_none() {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
            if std::thread::panicking() {
                eprintln!("a's log:\n{}\nb's log:\n{}", self.log('a'), self.log('b'));
            }
            let out = braid(&["testbed", "down", "--name", &self.name]);
            if !out.status.success() {
                eprintln!(
                    "testbed down {} failed: {}",
                    self.name,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }

    /// A UDP socket bound to `addr` inside namespace `ns` (made on a thread that entered it;
    /// the socket stays in that namespace).
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
                    .set_read_timeout(Some(Duration::from_millis(500)))
                    .expect("timeout");
                socket
            })
            .join()
            .expect("netns thread")
        })
    }

    /// Receive `n` datagrams of `PAYLOAD` bytes on `sink` (bounded); how many came.
    fn receive(sink: &UdpSocket, n: usize) -> usize {
        let mut buf = [0u8; 2048];
        let mut got = 0;
        while got < n {
            match sink.recv_from(&mut buf) {
                Ok((len, _)) if len == PAYLOAD => got += 1,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        got
    }

    #[test]
    fn rule_hits_and_qos_counters_are_in_the_stats_file() {
        require_root();
        let jq = Command::new("jq").arg("--version").output();
        assert!(
            jq.is_ok_and(|o| o.status.success()),
            "jq is needed: apt-get install jq (bash .ci/run does)"
        );
        let mut bed = Bed::up();
        bed.start(
            'a',
            r#"
[[rules]]
name = "mark"
protocol = "udp"
dst_ports = "6000"
set_dscp = 10

[[rules]]
name = "shed"
protocol = "udp"
dst_ports = "6001"
drop = true
"#,
        );
        bed.start(
            'b',
            r#"
[[rules]]
name = "ttl"
direction = "rx"
protocol = "udp"
dst_ports = "6000"
set_ttl = 9
"#,
        );
        let up = r#"(.nics[0].link.state == "Up")"#;
        assert!(
            bed.wait('a', up, Duration::from_secs(15)) && bed.wait('b', up, Duration::from_secs(5)),
            "the link did not come up\na: {}\nb: {}",
            bed.log('a'),
            bed.log('b')
        );
        let (a, b) = (bed.ns('a'), bed.ns('b'));
        let from = udp_in(&a, "10.99.0.1:0");
        let marked = udp_in(&b, "10.99.0.2:6000");
        let strict = udp_in(&b, "10.99.0.2:5000");
        let dropped = udp_in(&b, "10.99.0.2:6001");
        let payload = [7u8; PAYLOAD];
        for _ in 0..N {
            from.send_to(&payload, "10.99.0.2:6000").expect("send");
        }
        for _ in 0..N / 4 {
            from.send_to(&payload, "10.99.0.2:6001").expect("send");
        }
        // The testbed's latency-critical class: UDP to 5000, the strict QoS class (0).
        for _ in 0..N / 2 {
            from.send_to(&payload, "10.99.0.2:5000").expect("send");
        }
        assert_eq!(receive(&marked, N), N, "the marked datagrams crossed");
        assert_eq!(
            receive(&strict, N / 2),
            N / 2,
            "the strict-class datagrams crossed"
        );
        assert_eq!(receive(&dropped, 1), 0, "the dropped port got nothing");

        // The stats files are rewritten every second: wait for this traffic in them.
        let ip_bytes = (20 + 8 + PAYLOAD) as u64;
        assert!(
            bed.wait(
                'a',
                &format!(
                    ".rules.tx[0].packets == {N} and .rules.tx[1].packets == {}",
                    N / 4
                ),
                Duration::from_secs(5)
            ),
            "a: {}",
            bed.jq('a', ".rules")
        );
        assert!(
            bed.wait(
                'b',
                &format!(".rules.rx[0].packets == {N}"),
                Duration::from_secs(5)
            ),
            "b: {}",
            bed.jq('b', ".rules")
        );
        let rules = bed.jq('a', "[.rules.tx[] | {id, name, packets, bytes}]");
        assert_eq!(
            rules,
            serde_json::json!([
                {"id": 0, "name": "mark", "packets": N, "bytes": N as u64 * ip_bytes},
                {"id": 1, "name": "shed", "packets": N / 4, "bytes": (N / 4) as u64 * ip_bytes},
            ])
        );
        assert_eq!(bed.jq('a', ".rules.rx"), serde_json::json!([]));
        assert_eq!(bed.jq('a', ".rules.replaced"), serde_json::json!(0));
        assert_eq!(bed.jq('a', ".drops.rule_drop"), serde_json::json!(N / 4));
        assert_eq!(
            bed.jq('b', ".rules.rx[0] | [.name, .bytes]"),
            serde_json::json!(["ttl", N as u64 * ip_bytes])
        );

        // QoS per NIC and class on a: one entry per configured class (the testbed's default
        // QoS: 0 strict, 1 weighted), every packet enqueued once, with the colour it came
        // with (no meter: Green), dequeued or still queued, no drop.
        assert_eq!(
            bed.jq('a', "[.nics[0].qos[].id]"),
            serde_json::json!([0, 1])
        );
        let class = |id: u8, field: &str| {
            bed.jq(
                'a',
                &format!(".nics[0].qos[] | select(.id == {id}) | {field}"),
            )
            .as_u64()
            .unwrap_or_else(|| panic!("class {id} {field}: {}", bed.jq('a', ".nics[0].qos")))
        };
        // Other traffic (the kernel's own packets on the vNIC) may share class 1.
        assert!(class(0, ".enqueued_packets") >= (N / 2) as u64);
        assert!(class(1, ".enqueued_packets") >= N as u64);
        for id in [0, 1] {
            assert_eq!(
                class(id, ".green"),
                class(id, ".enqueued_packets"),
                "class {id}"
            );
            assert_eq!(class(id, ".yellow") + class(id, ".red"), 0, "class {id}");
            assert_eq!(
                class(id, ".dequeued_packets") + class(id, ".queued_packets"),
                class(id, ".enqueued_packets"),
                "class {id}"
            );
            assert_eq!(
                class(id, ".drops | add"),
                0,
                "class {id}: {}",
                bed.jq('a', ".nics[0].qos")
            );
        }
        assert!(
            class(1, ".enqueued_bytes") >= N as u64 * ip_bytes,
            "{}",
            bed.jq('a', ".nics[0].qos")
        );
        // The vNIC meters, per class (none configured: nothing coloured there).
        assert_eq!(bed.jq('a', "[.vnic_qos[].id]"), serde_json::json!([0, 1]));
        assert_eq!(
            bed.jq('a', "[.vnic_qos[] | .green + .yellow + .red] | add"),
            serde_json::json!(0)
        );
        drop(bed);
    }
}
