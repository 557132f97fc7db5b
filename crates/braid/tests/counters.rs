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

mod common;

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::process::{Child, Command};
    use std::time::{Duration, Instant};

    use serde_json::Value;

    use crate::common::{BRAID, Testbed, require_root, require_tool, stop};

    /// Datagrams to the marked port; the dropped port gets `N / 4`, the strict class `N / 2`.
    const N: usize = 20;
    /// UDP payload bytes: 128-byte IP packets.
    const PAYLOAD: usize = 100;

    /// A testbed whose daemons this test starts; stops them, then `down`s it when dropped.
    struct Bed {
        tb: Testbed,
        daemons: Vec<Child>,
    }

    impl Bed {
        fn up() -> Self {
            require_root(
                "this test needs root (network namespaces, veth, TUN devices); run it as root, \
                 as CI does: sudo -E cargo test -p braid --test counters",
            );
            require_tool("jq", "jq");
            let name = format!("braid-counters-{}", std::process::id() % 100_000);
            Self {
                tb: Testbed::up(name, &["--links", "100mbit", "--no-start"]),
                daemons: Vec::new(),
            }
        }

        /// Append `extra` to side `side`'s config and start its daemon.
        fn start(&mut self, side: char, extra: &str) {
            let config = self.tb.file(side, "toml");
            let mut text = std::fs::read_to_string(&config).expect("testbed config");
            text.push_str(extra);
            std::fs::write(&config, text).expect("write config");
            let log = std::fs::File::create(self.tb.file(side, "log")).expect("log file");
            let child = Command::new("ip")
                .args(["netns", "exec", &self.tb.ns(side), BRAID, "run", "--config"])
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
                .arg(self.tb.file(side, "stats.json"))
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
        // The testbed itself goes down after this, when `tb` is dropped.
        fn drop(&mut self) {
            for c in &mut self.daemons {
                stop(c);
            }
            if std::thread::panicking() {
                eprintln!(
                    "a's log:\n{}\nb's log:\n{}",
                    self.tb.log('a'),
                    self.tb.log('b')
                );
            }
        }
    }

    /// A UDP socket bound to `addr` inside namespace `ns`, with a 500 ms read timeout.
    fn udp_in(ns: &str, addr: &str) -> UdpSocket {
        let socket = crate::common::udp_in(ns, addr);
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        socket
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
            bed.tb.log('a'),
            bed.tb.log('b')
        );
        let (a, b) = (bed.tb.ns('a'), bed.tb.ns('b'));
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
