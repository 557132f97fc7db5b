//! schemathesis (PyPI) against the REST API of a real braid daemon, as root: `braid testbed
//! up --api` (two namespaces, two veth links, a daemon in each; side a's serves the API on
//! 127.0.0.1:7780 inside its namespace), then schemathesis from inside namespace a with the
//! settings of the fake-daemon run (`crates/braid-control/tests/schemathesis.toml`: every
//! operation, every check, all four phases, a fixed seed, a bounded number of cases). UDP
//! from a's vNIC to four ports keeps TX flows in the table during the run, and their ids, the
//! NICs' and the vNIC's names are the run's dictionaries, so the requests reach the engine:
//! NICs drained and brought back, capacities changed, flows moved and pinned, policy
//! documents applied to the workers and persisted, or refused.
//!
//! The test fails with schemathesis's report if it finds anything, if the daemon is not
//! running and answering afterwards (bad input never crashes it), if its log shows a panic,
//! and, without root or without schemathesis (`.ci/run` installs it), saying so.
//!
//! The testbed is brought up with `--no-start` so that side a's `[api]` section can lift the
//! failed-authentication limit (`auth_failure_burst`, a config value) before the daemons
//! start: schemathesis sends hundreds of requests without the token or with a wrong one on
//! purpose, and must see each one's 401 rather than the 429 the default limit rightly gives
//! after ten (the limit is tested in crates/braid-control/tests/api.rs). Every wait is
//! bounded; the testbed is removed by a drop guard (`braid testbed down` ends the daemons),
//! even on failure.

mod common;

#[path = "../../braid-control/tests/support/schemathesis.rs"]
mod schemathesis;

#[cfg(test)]
mod tests {
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use serde_json::Value;

    use crate::common::{BRAID, TESTBED_API as API, Testbed, require_root, serial, stop, udp_in};
    use crate::schemathesis;

    /// `GET path` from inside `ns`, with `token` if given: the status code and the body, or
    /// why there are none.
    fn get(ns: &str, path: &str, token: Option<&str>) -> Result<(u16, String), String> {
        crate::common::api_request(ns, "GET", path, token, "")
    }

    /// `GET /healthz`'s status.
    fn healthz(ns: &str) -> Result<u16, String> {
        get(ns, "/healthz", None).map(|(status, _)| status)
    }

    /// Start `braid run` on side `side`'s config, as `braid testbed up` does: in the
    /// namespace, output to the side's log, pid to its pid file.
    fn start(tb: &Testbed, side: char) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(tb.file(side, "log"))
            .expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &tb.ns(side), BRAID, "run", "--config"])
            .arg(tb.file(side, "toml"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("braid run");
        std::fs::write(tb.file(side, "pid"), format!("{}\n", child.id())).expect("pid file");
        child
    }

    #[test]
    fn schemathesis_finds_nothing_in_the_real_daemon() {
        require_root(
            "this test needs root (it creates network namespaces, veth pairs and TUN devices); \
             run it as root, as CI does: sudo -E cargo test -p braid --test schemathesis",
        );
        schemathesis::executable();
        let _serial = serial();
        let tb = Testbed::up(
            format!("braid-st-{}", std::process::id() % 100_000),
            &["--api", "--no-start"],
        );
        let ns = tb.ns('a');

        // Lift the failed-authentication limit in side a's `[api]` section (module docs).
        let config_path = tb.file('a', "toml");
        let config = std::fs::read_to_string(&config_path).expect("side a's config");
        assert!(config.contains("\n[api]\n"), "no [api] section:\n{config}");
        let config = config.replacen("\n[api]\n", "\n[api]\nauth_failure_burst = 4294967295\n", 1);
        std::fs::write(&config_path, config).expect("write side a's config");

        let mut daemons = [start(&tb, 'a'), start(&tb, 'b')];
        let deadline = Instant::now() + Duration::from_secs(20);
        while healthz(&ns) != Ok(200) {
            assert!(
                Instant::now() < deadline,
                "the API did not answer within 20 s:\n{}",
                tb.log('a')
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let token = std::fs::read_to_string(tb.dir().join("api.token"))
            .expect("the testbed's API token")
            .trim()
            .to_owned();

        // TX flows for the run to read and move: UDP from a's vNIC to four ports of b's,
        // sent until the run is over (flows that go idle leave the table).
        let sending = Arc::new(AtomicBool::new(true));
        let sender = {
            let socket = udp_in(&ns, "10.99.0.1:0");
            let sending = Arc::clone(&sending);
            std::thread::spawn(move || {
                while sending.load(Ordering::Relaxed) {
                    for port in 6000..6004 {
                        let _ = socket.send_to(&[7u8; 200], ("10.99.0.2", port));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let flows: Vec<u64> = loop {
            let page = get(&ns, "/v1/flows?direction=tx&protocol=udp", Some(&token))
                .ok()
                .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
                .unwrap_or(Value::Null);
            let ids: Vec<u64> = page["flows"]
                .as_array()
                .map(|f| f.iter().filter_map(|f| f["id"].as_u64()).collect())
                .unwrap_or_default();
            if ids.len() >= 4 {
                break ids;
            }
            assert!(
                Instant::now() < deadline,
                "no four UDP flows in 10 s: {page}"
            );
            std::thread::sleep(Duration::from_millis(100));
        };

        let dir = std::env::temp_dir().join(format!("braid-st-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("run directory");
        let result = schemathesis::Run {
            url: format!("http://{API}"),
            token: &token,
            seed: 1,
            dir: &dir,
            nics: &["link0", "link1"],
            vnics: &["braid0"],
            flows: &flows,
            wrapper: &["ip", "netns", "exec", &ns],
            timeout: Duration::from_secs(900),
        }
        .run();
        let _ = std::fs::remove_dir_all(&dir);
        sending.store(false, Ordering::Relaxed);
        sender.join().expect("sender");

        // Bad input never crashes the daemon: it still runs and answers.
        let alive = daemons[0].try_wait().expect("check on braid").is_none();
        let health = healthz(&ns);
        let log = tb.log('a');
        for d in &mut daemons {
            stop(d);
        }
        let report = match result {
            Ok(report) => report,
            Err(report) => panic!("{report}\nside a's log (end):\n{}", tail(&log, 40)),
        };
        println!("{report}");
        assert!(
            alive && health == Ok(200),
            "the daemon did not survive the run (running: {alive}, /healthz: {health:?}):\n{}",
            tail(&log, 40)
        );
        assert!(!log.contains("panicked"), "a panic in side a's log:\n{log}");
        // The run reached the engine: a policy change was applied through the API.
        assert!(
            log.contains("policies replaced through the REST API"),
            "no policy change was applied:\n{}",
            tail(&log, 40)
        );
    }

    fn tail(text: &str, lines: usize) -> String {
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}
