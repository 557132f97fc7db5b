//! The REST API served by `braid run` (issue 5), as root, against a real testbed: `braid
//! testbed up --api` (two namespaces, two veth links, a braid daemon in each; side a's serves
//! the API on 127.0.0.1:7780 inside its namespace, with a token file, an audit log and a
//! policies file in the testbed's state directory). The test:
//!
//! 1. GETs `/healthz` without a token, and `/v1/nics`, `/v1/stats`, `/metrics` with it (401
//!    without it, and a PATCH without it is audited as unauthenticated);
//! 2. PATCHes a NIC's capacity and sees it in `/v1/nics`, `/metrics` and the daemon's stats
//!    file (the engine's own counter);
//! 3. sends UDP from a's vNIC, finds its flow in `/v1/flows`, moves and pins it to the
//!    second link (`POST /v1/flows/{id}`), and sees it there (the flow, the NIC's count);
//! 4. PUTs a policy document (a QoS class set and a rule that uses it): GET gives it back,
//!    the engine runs the rule (the stats file's rule table), the daemon's log says so, and
//!    the policies file holds it; a document that names a class that does not exist is a
//!    422 naming the field and changes nothing; `[reorder]`, `[fragmentation]` and
//!    `[reassembly]` change live: a's split cost model splits packets that fit in one
//!    (b reassembles them: its stats file), and with b splitting too (its config reloaded
//!    by SIGHUP with a `[fragmentation]` section) a's 1-byte reassembly cap refuses b's
//!    datagrams (`reassembly_memory_cap` in `/v1/stats`) until a DELETE puts the default
//!    back (`reassembly.completed` rises);
//! 5. restarts the daemon (SIGTERM, then `braid run` again on the same config): the
//!    policies are in force again, from the policies file (GET, stats file, log);
//! 6. checks the audit log: one line per change request, with its outcome.
//!
//! The HTTP requests are made from a thread inside namespace a (plain HTTP/1.1 over a
//! `TcpStream`). Without root the test fails and says so. Every wait is bounded; the testbed
//! is removed by a drop guard (`braid testbed down` also ends the restarted daemon), even on
//! failure.

mod common;

#[cfg(test)]
mod tests {
    use std::net::TcpStream;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use serde_json::{Value, json};

    use crate::common::{
        BRAID, TESTBED_API as API, Testbed, in_netns, require_root, serial, stop, udp_in,
    };

    /// A reply: status and body.
    struct Reply {
        status: u16,
        body: String,
    }

    impl Reply {
        fn json(&self) -> Value {
            serde_json::from_str(&self.body)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
        }
    }

    /// One HTTP/1.1 request to the API from inside namespace `ns`.
    fn request(ns: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> Reply {
        let (status, body) = crate::common::api_request(ns, method, path, token, body)
            .unwrap_or_else(|e| panic!("{e}"));
        Reply { status, body }
    }

    /// What this test asks of the testbed.
    impl Testbed {
        fn token(&self) -> String {
            std::fs::read_to_string(self.dir().join("api.token"))
                .expect("the testbed's API token")
                .trim()
                .to_owned()
        }

        fn stats_a(&self) -> Value {
            std::fs::read_to_string(self.file('a', "stats.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(Value::Null)
        }

        /// Side a's stats file once `done` holds for it (at most 5 s).
        fn stats_a_when(&self, done: impl Fn(&Value) -> bool) -> Value {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let v = self.stats_a();
                if done(&v) {
                    return v;
                }
                assert!(
                    Instant::now() < deadline,
                    "side a's stats never got there: {v}\nlog:\n{}",
                    self.log('a')
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }

        /// The API answers `/healthz` (at most 10 s).
        fn wait_api(&self) {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let up = in_netns(&self.ns('a'), || TcpStream::connect(API).is_ok());
                if up && request(&self.ns('a'), "GET", "/healthz", None, "").status == 200 {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "the API did not answer within 10 s:\n{}",
                    self.log('a')
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }

        /// SIGTERM side a's daemon, wait until it has stopped (its log says so: vNIC
        /// removed, sockets closed), then start `braid run` again on its config, its output
        /// appended to the log; returns it once its API answers.
        fn restart_a(&self) -> Child {
            const STOPPED: &str = "stopped; sockets closed";
            let stops = self.log('a').matches(STOPPED).count();
            let pid: i32 = std::fs::read_to_string(self.file('a', "pid"))
                .expect("pid file")
                .trim()
                .parse()
                .expect("pid");
            let pid = rustix::process::Pid::from_raw(pid).expect("a pid");
            rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.log('a').matches(STOPPED).count() == stops {
                assert!(
                    Instant::now() < deadline,
                    "braid did not stop within 5 s:\n{}",
                    self.log('a')
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            let log = std::fs::OpenOptions::new()
                .append(true)
                .open(self.file('a', "log"))
                .expect("log");
            let child = Command::new("ip")
                .args(["netns", "exec", &self.ns('a'), BRAID, "run", "--config"])
                .arg(self.file('a', "toml"))
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("braid run");
            self.wait_api();
            child
        }
    }

    fn names(list: &Value) -> Vec<String> {
        list.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The policy document this test puts in force: a strict and a weighted QoS class, and
    /// a rule that sends UDP to 5000-5010 in the strict class, duplicated; `[reorder]` as the
    /// testbed configures it (20 and 25 ms).
    fn document() -> Value {
        json!({
            "rules": [{"name": "feed", "protocol": "udp", "dst_ports": "5000-5010",
                       "policy": "duplicate", "qos": "rt"}],
            "qos": {"classes": [{"name": "rt", "strict": true},
                                {"name": "bulk", "weight": 4}]},
            "reorder": {"min_hold_ms": 20, "max_hold_ms": 25},
        })
    }

    #[test]
    fn the_daemon_serves_the_api_and_its_policies_survive_a_restart() {
        require_root(
            "this test needs root (it creates network namespaces, veth pairs and TUN devices); \
             run it as root, as CI does: sudo -E cargo test -p braid --test api",
        );
        let _serial = serial();
        let tb = Testbed::up(
            format!("braid-wire{}", std::process::id() % 100_000),
            &["--api", "--links", "100mbit,200mbit"],
        );
        let ns = tb.ns('a');
        let token = tb.token();
        let t = Some(token.as_str());
        tb.wait_api();

        // 1. Health without a token; everything else needs it.
        let health = request(&ns, "GET", "/healthz", None, "");
        assert_eq!(
            (health.status, health.json()),
            (
                200,
                json!({"status": "ok", "api_version": braid_control::API_VERSION})
            )
        );
        for path in ["/v1/nics", "/v1/stats", "/metrics"] {
            assert_eq!(request(&ns, "GET", path, None, "").status, 401, "{path}");
            assert_eq!(
                request(&ns, "GET", path, Some("not-the-token"), "").status,
                401
            );
        }
        let r = request(
            &ns,
            "PATCH",
            "/v1/nics/link0",
            None,
            r#"{"capacity_bps": 1}"#,
        );
        assert_eq!(r.status, 401);
        let nics = request(&ns, "GET", "/v1/nics", t, "");
        assert_eq!(nics.status, 200, "{}", nics.body);
        let nics = nics.json();
        assert_eq!(names(&nics), ["link0", "link1"]);
        assert_eq!(nics[0]["capacity_bps"], 100_000_000);
        assert_eq!(nics[1]["capacity_bps"], 200_000_000);
        assert_eq!(nics[0]["admin"], "up");
        assert_eq!(nics[0]["device"], "nic0");
        // The links' probes: each NIC has sent and received braid packets.
        assert!(nics[0]["tx_packets"].as_u64() > Some(0), "{nics}");
        // Rates need two samples, a second apart.
        std::thread::sleep(Duration::from_millis(2_200));
        let stats = request(&ns, "GET", "/v1/stats", t, "");
        assert_eq!(stats.status, 200, "{}", stats.body);
        let stats = stats.json();
        // About a second: the samples are the workers' snapshot times, taken once a second
        // by the main loop but stamped when each worker last published, so under load one
        // interval may be 0.8 s and the next 1.2 s (the rates divide by the true interval).
        let interval = stats["interval_ms"].as_u64().unwrap_or(0);
        assert!((500..=2_500).contains(&interval), "{stats}");
        assert_eq!(names(&stats["nics"]), ["link0", "link1"]);
        assert!(
            stats["nics"][0]["tx_pps"].as_u64() > Some(0),
            "probes flow: {stats}"
        );
        assert!(
            stats["drops"]["bad_auth_tag"].is_u64(),
            "every reason: {stats}"
        );
        let metrics = request(&ns, "GET", "/metrics", t, "");
        assert_eq!(metrics.status, 200);
        assert!(
            metrics
                .body
                .contains("braid_nic_capacity_bits_per_second{nic=\"link1\"} 200000000"),
            "{}",
            metrics.body
        );

        // 2. A NIC's capacity.
        let r = request(
            &ns,
            "PATCH",
            "/v1/nics/link1",
            t,
            r#"{"capacity_bps": 150000000}"#,
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["capacity_bps"], 150_000_000);
        let nics = request(&ns, "GET", "/v1/nics", t, "").json();
        assert_eq!(nics[1]["capacity_bps"], 150_000_000);
        let metrics = request(&ns, "GET", "/metrics", t, "").body;
        assert!(
            metrics.contains("braid_nic_capacity_bits_per_second{nic=\"link1\"} 150000000"),
            "{metrics}"
        );
        tb.stats_a_when(|s| s["nics"][1]["capacity_bps"] == 150_000_000);
        let r = request(
            &ns,
            "PATCH",
            "/v1/nics/link9",
            t,
            r#"{"capacity_bps": 1000000}"#,
        );
        assert_eq!(r.status, 404, "{}", r.body);

        // 2b. The flow table: a UDP flow from a's vNIC, moved (and pinned) to link1.
        let sending = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let sender = {
            let socket = udp_in(&ns, "10.99.0.1:0");
            let sending = std::sync::Arc::clone(&sending);
            std::thread::spawn(move || {
                while sending.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = socket.send_to(&[7u8; 200], "10.99.0.2:6000");
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let flow = loop {
            let page = request(&ns, "GET", "/v1/flows?direction=tx&port=6000", t, "").json();
            if let Some(f) = page["flows"].as_array().and_then(|f| f.first()) {
                break f.clone();
            }
            assert!(Instant::now() < deadline, "no flow to port 6000: {page}");
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(
            (&flow["protocol"], &flow["src"], &flow["dst"]),
            (&json!(17), &json!("10.99.0.1"), &json!("10.99.0.2"))
        );
        assert_eq!(flow["policy"], "stripe", "the default policy: {flow}");
        let id = flow["id"].as_u64().expect("an id");
        let path = format!("/v1/flows/{id}");
        let r = request(&ns, "POST", &path, t, r#"{"nic": "link1", "pin": true}"#);
        assert_eq!(r.status, 200, "{}", r.body);
        let moved = r.json();
        assert_eq!(
            (&moved["nics"], &moved["pinned"], &moved["policy"]),
            (&json!(["link1"]), &json!(true), &json!("pin")),
            "{moved}"
        );
        assert_eq!(
            request(&ns, "GET", &path, t, "").json()["nics"],
            json!(["link1"])
        );
        // link1's controller counts the flow, and a filter by NIC finds it there. Not "exactly
        // one": the kernel's own packets from the vNIC (IPv6 router solicitations, MLD
        // reports) are flows too and may land on link1 at any moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let nics = request(&ns, "GET", "/v1/nics", t, "").json();
            let on_link1 = request(&ns, "GET", "/v1/flows?direction=tx&nic=link1", t, "").json();
            let listed = on_link1["flows"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f["id"] == json!(id)));
            if listed && nics[1]["flows"].as_u64() >= Some(1) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "link1 does not count the moved flow {id}: nics {nics}, flows on link1 {on_link1}, \
                 the flow {}",
                request(&ns, "GET", &path, t, "").body
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let r = request(&ns, "POST", &path, t, r#"{"nic": "link7"}"#);
        assert_eq!(r.status, 422, "{}", r.body);
        sending.store(false, std::sync::atomic::Ordering::Relaxed);
        sender.join().expect("sender");

        // 3. Policies: applied, read back, run by the engine, logged, persisted.
        let before = request(&ns, "GET", "/v1/policies", t, "").json();
        assert_eq!(before["rules"], json!([]));
        let doc = document();
        let r = request(&ns, "PUT", "/v1/policies", t, &doc.to_string());
        assert_eq!(r.status, 200, "{}", r.body);
        let in_force = request(&ns, "GET", "/v1/policies", t, "").json();
        assert_eq!(in_force, r.json());
        assert_eq!(names(&in_force["rules"]), ["feed"]);
        assert_eq!(names(&in_force["qos"]["classes"]), ["rt", "bulk"]);
        assert_eq!(in_force["rules"][0]["qos"], "rt");
        tb.stats_a_when(|s| names(&s["rules"]["tx"]) == ["feed"]);
        let vnic = request(&ns, "GET", "/v1/vnics/braid0", t, "").json();
        assert_eq!(names(&vnic["qos"]), ["rt", "bulk"], "{vnic}");
        let log = tb.log('a');
        assert!(
            log.contains("policies replaced through the REST API"),
            "{log}"
        );
        assert!(log.contains("tx_rules=1"), "{log}");
        let persisted = std::fs::read_to_string(tb.file('a', "policies.toml")).expect("persisted");
        assert!(
            persisted.contains("[[rules]]") && persisted.contains("name = \"rt\""),
            "{persisted}"
        );
        // Refused: nothing changes.
        let mut bad = document();
        bad["rules"][0]["qos"] = json!("gold");
        let r = request(&ns, "PUT", "/v1/policies", t, &bad.to_string());
        assert_eq!(r.status, 422, "{}", r.body);
        assert_eq!(r.json()["error"]["field"], "rules[0].qos");
        assert_eq!(request(&ns, "GET", "/v1/policies", t, "").json(), in_force);
        assert_eq!(
            std::fs::read_to_string(tb.file('a', "policies.toml")).expect("persisted"),
            persisted
        );

        // 3b. The other sections change live too. `[reorder]`:
        let r = request(
            &ns,
            "PUT",
            "/v1/policies/reorder",
            t,
            r#"{"min_hold_ms": 20, "max_hold_ms": 40}"#,
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            request(&ns, "GET", "/v1/policies", t, "").json()["reorder"],
            json!({"min_hold_ms": 20, "max_hold_ms": 40})
        );
        // `[fragmentation]`: a splits packets that fit whole on one link, so b reassembles
        // them (its stats file; it had nothing to reassemble before).
        let stats_b = || -> Value {
            std::fs::read_to_string(tb.file('b', "stats.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(Value::Null)
        };
        let reassembled_b = stats_b()["reassembled"].as_u64().expect("b's stats file");
        let split = r#"{"split_within_mtu": true, "min_split_bytes": 200, "min_split_gain_us": 0}"#;
        let r = request(&ns, "PUT", "/v1/policies/fragmentation", t, split);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["split_within_mtu"], true);
        // Sends 1000-byte datagrams from `from` (in namespace `side`) to `to` until `done`
        // (at most 5 s).
        let send_until = |side: char, from: &str, to: &str, what: &str, done: &dyn Fn() -> bool| {
            let socket = udp_in(&tb.ns(side), from);
            let deadline = Instant::now() + Duration::from_secs(5);
            while !done() {
                assert!(Instant::now() < deadline, "{what}:\n{}", tb.log(side));
                for _ in 0..5 {
                    let _ = socket.send_to(&[9u8; 1000], to);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        };
        send_until(
            'a',
            "10.99.0.1:0",
            "10.99.0.2:6100",
            "b reassembled nothing",
            &|| stats_b()["reassembled"].as_u64() > Some(reassembled_b),
        );
        // `[reassembly]`: b splits too (its config file reloaded by SIGHUP, which takes
        // `[fragmentation]` now); a's reassembler, capped at 1 byte, refuses every datagram
        // b splits, counted; the default cap back, a reassembles them.
        let r = request(
            &ns,
            "PUT",
            "/v1/policies/reassembly",
            t,
            r#"{"mem_cap_bytes": 1}"#,
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            request(&ns, "GET", "/v1/policies", t, "").json()["reassembly"]["mem_cap_bytes"],
            1
        );
        let config_b = std::fs::read_to_string(tb.file('b', "toml")).expect("b's config");
        std::fs::write(
            tb.file('b', "toml"),
            format!(
                "{config_b}\n[fragmentation]\nsplit_within_mtu = true\nmin_split_bytes = 200\n\
                 min_split_gain_us = 0\n"
            ),
        )
        .expect("b's config");
        let pid: i32 = std::fs::read_to_string(tb.file('b', "pid"))
            .expect("b's pid file")
            .trim()
            .parse()
            .expect("pid");
        let reloads = tb.log('b').matches("reload done").count();
        let pid = rustix::process::Pid::from_raw(pid).expect("a pid");
        rustix::process::kill_process(pid, rustix::process::Signal::HUP).expect("SIGHUP");
        let deadline = Instant::now() + Duration::from_secs(5);
        while tb.log('b').matches("reload done").count() == reloads {
            assert!(
                Instant::now() < deadline,
                "b did not reload:
{}",
                tb.log('b')
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let stats_a_api = || request(&ns, "GET", "/v1/stats", t, "").json();
        send_until(
            'b',
            "10.99.0.2:0",
            "10.99.0.1:6200",
            "a refused nothing",
            &|| stats_a_api()["drops"]["reassembly_memory_cap"].as_u64() > Some(0),
        );
        let completed = stats_a_api()["reassembly"]["completed"]
            .as_u64()
            .expect("completed");
        let r = request(&ns, "DELETE", "/v1/policies/reassembly", t, "");
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["mem_cap_bytes"], 64 << 20);
        send_until(
            'b',
            "10.99.0.2:0",
            "10.99.0.1:6200",
            "a reassembled nothing",
            &|| stats_a_api()["reassembly"]["completed"].as_u64() > Some(completed),
        );
        let in_force = request(&ns, "GET", "/v1/policies", t, "").json();
        assert_eq!(in_force["fragmentation"]["split_within_mtu"], true);

        // 4. A restart: the policies come back from the policies file.
        let mut restarted = tb.restart_a();
        let after = request(&ns, "GET", "/v1/policies", t, "").json();
        assert_eq!(after, in_force, "the policies survived the restart");
        tb.stats_a_when(|s| names(&s["rules"]["tx"]) == ["feed"]);
        let log = tb.log('a');
        assert!(
            log.contains("replace the config file's"),
            "the start says where the policies came from:\n{log}"
        );
        // The config file's capacity again (a NIC change is not a policy).
        let nics = request(&ns, "GET", "/v1/nics", t, "").json();
        assert_eq!(nics[1]["capacity_bps"], 200_000_000);
        stop(&mut restarted);

        // 5. The audit log: every change request, with its outcome, in order.
        let audit = std::fs::read_to_string(tb.file('a', "audit.jsonl")).expect("audit log");
        let lines: Vec<Value> = audit
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        let seen: Vec<(String, String, String)> = lines
            .iter()
            .map(|l| {
                (
                    l["method"].as_str().unwrap_or("").to_owned(),
                    l["path"].as_str().unwrap_or("").to_owned(),
                    l["outcome"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        let want = [
            ("PATCH", "/v1/nics/link0", "unauthenticated"),
            ("PATCH", "/v1/nics/link1", "applied"),
            ("PATCH", "/v1/nics/link9", "not_found"),
            ("POST", path.as_str(), "applied"),
            ("POST", path.as_str(), "invalid"),
            ("PUT", "/v1/policies", "applied"),
            ("PUT", "/v1/policies", "invalid"),
            ("PUT", "/v1/policies/reorder", "applied"),
            ("PUT", "/v1/policies/fragmentation", "applied"),
            ("PUT", "/v1/policies/reassembly", "applied"),
            ("DELETE", "/v1/policies/reassembly", "applied"),
        ];
        assert_eq!(
            seen,
            want.map(|(m, p, o)| (m.to_owned(), p.to_owned(), o.to_owned())),
            "{audit}"
        );
        assert!(lines[0]["token"].is_null());
        assert!(lines[1]["token"].as_str().is_some_and(|f| f.len() == 8));
        assert!(
            lines[5]["change"]
                .as_str()
                .is_some_and(|c| c.contains("rules") && c.contains("qos")),
            "{audit}"
        );
    }
}
