//! `braid ctl` end to end: the real `braid` binary's `ctl` commands against the real REST API
//! server (braid-control's router and `serve`, on 127.0.0.1 port 0) over braid-control's fake
//! daemon, with a real token file and audit log. No root needed.
//!
//! Why the fake, in-process: `braid ctl` speaks only HTTP, so what it meets is the API
//! itself; the fake daemon (braid-control's feature `fake-daemon`, the double its own API
//! tests use) gives known NICs, flows and policies, and the test reads the fake's state
//! directly to check that a command changed the daemon, not only what it printed. The server
//! runs on a tokio runtime of its own thread; stopping it drops the runtime, which closes
//! every socket at once: a daemon that went away.
//!
//! Covered: the NIC table (exact text), `nics set` seen by a second call and by the fake, a
//! refused change; flows by filter (exact table), paging through the cursor past 1000 flows,
//! `flows move`; policy get → edit → apply → get (TOML) and `set`/`delete` of a section; a
//! bad policy file's field error from the API; a wrong token (401), the rate limit (429), a
//! refused connection; `stats --json`; `stats --watch` bounded by `--count`, stopped by
//! SIGINT, and stopped with an error when the server goes away; `--config`, the environment
//! variables, and every subcommand's `--help`. Every child process is bounded in time.

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::net::SocketAddr;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, ExitStatus, Stdio};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    use braid_control::fake::FakeDaemon;
    use braid_control::schema::{AdminState, FlowPage, Nic, PolicyDocument, Stats};
    use braid_control::{ApiState, ControlConfig};

    const BRAID: &str = env!("CARGO_BIN_EXE_braid");
    const TOKEN: &str = "ctl-test-token-0123456789abcdef0123456789abcdef";
    /// Longest a `braid ctl` run may take here.
    const RUN_LIMIT: Duration = Duration::from_secs(20);

    static NEXT: AtomicU32 = AtomicU32::new(0);

    /// The API over a fake daemon, on its own port, in its own directory.
    struct Server {
        addr: SocketAddr,
        dir: PathBuf,
        fake: Arc<FakeDaemon>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        thread: Option<JoinHandle<()>>,
    }

    /// A finished `braid ctl` run.
    #[derive(Debug)]
    struct Run {
        status: ExitStatus,
        stdout: String,
        stderr: String,
    }

    impl Run {
        /// The run succeeded; its stdout.
        fn ok(self) -> String {
            assert!(self.status.success(), "braid ctl failed: {self:?}");
            assert_eq!(self.stderr, "", "{self:?}");
            self.stdout
        }

        /// The run failed with exit code 1 and nothing on stdout; its stderr.
        fn failed(self) -> String {
            assert_eq!(self.status.code(), Some(1), "{self:?}");
            assert_eq!(self.stdout, "", "{self:?}");
            assert!(!self.stderr.contains("panicked"), "{self:?}");
            self.stderr
        }
    }

    impl Server {
        fn start(flows: u64) -> Self {
            Self::with(flows, |_| {})
        }

        fn with(flows: u64, adjust: impl FnOnce(&mut ControlConfig)) -> Self {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("braid-ctl-test-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("test dir");
            let token_file = dir.join("api.token");
            write_private(&token_file, &format!("{TOKEN}\n"));
            let mut config = ControlConfig::new(token_file, dir.join("audit.jsonl"));
            config.listen = "127.0.0.1:0".parse().expect("addr");
            adjust(&mut config);
            let fake = Arc::new(FakeDaemon::new(flows));
            let daemon = Arc::clone(&fake);
            let (addr_tx, addr_rx) = std::sync::mpsc::channel();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let thread = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async {
                    let state = ApiState::open(&config, daemon).expect("api state");
                    let listener = braid_control::bind(&config).await.expect("bind");
                    addr_tx
                        .send(listener.local_addr().expect("addr"))
                        .expect("send");
                    tokio::spawn(braid_control::serve(
                        listener,
                        braid_control::router(state),
                        std::future::pending(),
                    ));
                    let _ = stopped.await;
                });
                // Dropping the runtime here ends the server and closes its connections.
            });
            let addr = addr_rx
                .recv_timeout(Duration::from_secs(10))
                .expect("server up");
            Self {
                addr,
                dir,
                fake,
                stop: Some(stop),
                thread: Some(thread),
            }
        }

        fn url(&self) -> String {
            format!("http://{}", self.addr)
        }

        fn token_file(&self) -> PathBuf {
            self.dir.join("api.token")
        }

        /// `braid ctl --api <this> --token-file <this> args...`, without BRAID_* variables.
        fn command(&self, args: &[&str]) -> Command {
            let mut c = Command::new(BRAID);
            c.arg("ctl")
                .arg("--api")
                .arg(self.url())
                .arg("--token-file")
                .arg(self.token_file())
                .args(args);
            c.env_remove("BRAID_API").env_remove("BRAID_TOKEN_FILE");
            c
        }

        fn ctl(&self, args: &[&str]) -> Run {
            run(&self.dir, self.command(args))
        }

        /// A file in the test's directory.
        fn file(&self, name: &str, text: &str) -> PathBuf {
            let path = self.dir.join(name);
            std::fs::write(&path, text).expect("write file");
            path
        }

        /// Stop the server: its port closes.
        fn stop(&mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            if let Some(t) = self.thread.take() {
                t.join().expect("server thread");
            }
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stop();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn write_private(path: &Path, text: &str) {
        std::fs::write(path, text).expect("write");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }

    /// Output files for a child in `dir`.
    fn outputs(dir: &Path) -> (PathBuf, PathBuf) {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        (dir.join(format!("out-{n}")), dir.join(format!("err-{n}")))
    }

    fn spawn(dir: &Path, mut command: Command) -> (Child, PathBuf, PathBuf) {
        let (out, err) = outputs(dir);
        let child = command
            .stdin(Stdio::null())
            .stdout(File::create(&out).expect("stdout file"))
            .stderr(File::create(&err).expect("stderr file"))
            .spawn()
            .expect("run braid");
        (child, out, err)
    }

    /// Wait for `child` up to `limit`; kill it and fail past that.
    fn wait(mut child: Child, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("braid ctl ran longer than {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn collect(status: ExitStatus, out: &Path, err: &Path) -> Run {
        Run {
            status,
            stdout: std::fs::read_to_string(out).expect("stdout"),
            stderr: std::fs::read_to_string(err).expect("stderr"),
        }
    }

    fn run(dir: &Path, command: Command) -> Run {
        let (child, out, err) = spawn(dir, command);
        let status = wait(child, RUN_LIMIT);
        collect(status, &out, &err)
    }

    /// Wait until `path` has some content, up to `limit`.
    fn wait_for_output(path: &Path, limit: Duration) {
        let deadline = Instant::now() + limit;
        while std::fs::metadata(path).map_or(0, |m| m.len()) == 0 {
            assert!(Instant::now() < deadline, "no output in {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn nics_table_shows_the_daemons_nics() {
        let server = Server::start(10);
        // Flows 3, 6 and 9 are on b, the other seven on a.
        assert_eq!(
            server.ctl(&["nics"]).ok(),
            "\
NAME  DEVICE  TRANSPORT  LINK  ADMIN    CAPACITY    SRTT  LOSS  TX PKTS  TX BYTES  RX PKTS  RX BYTES  FLOWS
a     veth-a  udp        up    up       1 Gbit/s  180 µs    0%     1000    1.4 MB      900    1.2 MB      7
b     veth-b  udp        up    up     100 Mbit/s  220 µs    0%     2000    2.8 MB      900    1.2 MB      3
"
        );
        let one = server.ctl(&["nics", "show", "b"]).ok();
        assert_eq!(one.lines().count(), 2, "{one}");
        assert!(
            one.lines().nth(1).expect("row").starts_with("b     veth-b"),
            "{one}"
        );
        // --json: the API's JSON as it came (its key order), pretty.
        let json = server.ctl(&["nics", "show", "a", "--json"]).ok();
        assert!(
            json.starts_with("{\n  \"id\": 0,\n  \"name\": \"a\",\n  \"device\": \"veth-a\",\n"),
            "{json}"
        );
        let e = server.ctl(&["nics", "show", "zz"]).failed();
        assert_eq!(e, "error: no NIC is named \"zz\"\n");
    }

    #[test]
    fn nics_set_changes_the_daemon_and_a_refusal_changes_nothing() {
        let server = Server::start(10);
        let row = server
            .ctl(&["nics", "set", "b", "--capacity", "200M", "--admin", "down"])
            .ok();
        let line = row.lines().nth(1).expect("row");
        assert!(
            line.contains("  down  ") && line.contains("200 Mbit/s"),
            "{row}"
        );
        // A second call sees it, and so does the daemon.
        let nics: Vec<Nic> =
            serde_json::from_str(&server.ctl(&["nics", "--json"]).ok()).expect("nics json");
        let b = nics.iter().find(|n| n.name == "b").expect("b");
        assert_eq!((b.capacity_bps, b.admin), (200_000_000, AdminState::Down));
        assert_eq!(b.flows, 0, "drained");
        let fake_b = server.fake.nics.lock().expect("lock")[1].clone();
        assert_eq!(
            (fake_b.capacity_bps, fake_b.admin),
            (200_000_000, AdminState::Down)
        );

        let e = server
            .ctl(&["nics", "set", "a", "--admin", "down"])
            .failed();
        assert_eq!(
            e,
            "error: a is the last NIC in use; its flows have nowhere to go; nothing changed, the \
             old state is in force\n"
        );
        assert_eq!(
            server.fake.nics.lock().expect("lock")[0].admin,
            AdminState::Up
        );
        let e = server.ctl(&["nics", "set", "a", "--capacity", "2x"]).stderr;
        assert!(e.contains("\"2x\" is not a rate like 100mbit"), "{e}");
    }

    #[test]
    fn flows_filter_page_and_move() {
        let server = Server::start(2500);
        // TCP flows (every fifth) that are TX (even ids): 10, 20, 30, ...
        let run = server.ctl(&[
            "flows",
            "--direction",
            "tx",
            "--port",
            "443",
            "--limit",
            "3",
        ]);
        assert!(run.status.success(), "{run:?}");
        assert_eq!(
            run.stdout,
            "\
ID  DIR  PROTO  SOURCE           DESTINATION     CLASS  QOS      POLICY  NICS  PINNED       RATE  PKTS   BYTES   IDLE
10  tx   tcp    10.99.0.1:40010  10.99.1.11:443  web    default  stripe  a     no      10 kbit/s   100  140 kB  10 ms
20  tx   tcp    10.99.0.1:40020  10.99.1.21:443  web    default  stripe  a     no      20 kbit/s   200  280 kB  20 ms
30  tx   tcp    10.99.0.1:40030  10.99.1.31:443  web    default  stripe  b     no      30 kbit/s   300  420 kB  30 ms
"
        );
        assert_eq!(
            run.stderr,
            "(the first 3 flows; more match: raise --limit or add filters)\n"
        );

        // 2100 flows: pages of 1000, 1000 and 100, ids in order, and where to go on from.
        let page: FlowPage =
            serde_json::from_str(&server.ctl(&["flows", "--limit", "2100", "--json"]).ok())
                .expect("flow page");
        assert_eq!(page.flows.len(), 2100);
        let ids: Vec<u64> = page.flows.iter().map(|f| f.id).collect();
        assert_eq!(ids, (1..=2100).collect::<Vec<u64>>());
        assert!(page.next_cursor.is_some());
        let all: FlowPage =
            serde_json::from_str(&server.ctl(&["flows", "--limit", "5000", "--json"]).ok())
                .expect("flow page");
        assert_eq!((all.flows.len(), all.next_cursor), (2500, None));

        let e = server.ctl(&["flows", "--protocol", "bogus"]).failed();
        assert!(e.starts_with("error: protocol: "), "{e}");
        assert!(e.ends_with(" (field: protocol)\n"), "{e}");

        // Moves go through admission: a small table, so that b has room for flow 10.
        let server = Server::start(10);
        let moved = server
            .ctl(&["flows", "move", "10", "--nic", "b", "--pin"])
            .ok();
        let row = moved.lines().nth(1).expect("row");
        assert!(row.contains("  pin     b     yes  "), "{moved}");
        let flow: serde_json::Value =
            serde_json::from_str(&server.ctl(&["flows", "show", "10", "--json"]).ok())
                .expect("flow json");
        assert_eq!(flow["nics"], serde_json::json!(["b"]));
        assert_eq!(flow["pinned"], true);
        let e = server.ctl(&["flows", "move", "9", "--nic", "a"]).failed();
        assert_eq!(
            e,
            "error: flow 9 is an RX flow; only TX flows are placed on NICs; nothing changed, \
             the old state is in force\n"
        );
    }

    #[test]
    fn policy_get_edit_apply_round_trip_in_toml() {
        let server = Server::start(10);
        let text = server.ctl(&["policy", "get"]).ok();
        assert_eq!(
            text,
            "\
[policy]
default = \"stripe\"

[reorder]
min_hold_ms = 5
max_hold_ms = 25

[fragmentation]
min_split_bytes = 1200
min_split_gain_us = 2
max_split_links = 4
split_within_mtu = false
per_packet_overhead_bytes = 60
loss_penalty_ms = 10

[reassembly]
mem_cap_bytes = 67108864
timeout_ms = 250
max_fragments = 64
max_datagram_bytes = 65535
"
        );
        // Edit as an operator would: a longer hold and a rule.
        let edited = text.replace("max_hold_ms = 25", "max_hold_ms = 40")
            + "\n[[rules]]\nname = \"feed\"\nprotocol = \"udp\"\ndst_ports = \"5000-5010\"\n\
               qos = \"latency-critical\"\n";
        let file = server.file("policies.toml", &edited);
        let file = file.to_str().expect("path");
        assert_eq!(
            server.ctl(&["policy", "apply", file]).ok(),
            "applied: changed rules, reorder\n"
        );
        let in_force = server.fake.policies.lock().expect("lock").clone();
        assert_eq!(in_force.reorder.max_hold_ms, 40);
        assert_eq!(in_force.rules.len(), 1);
        assert_eq!(in_force.rules[0].qos.as_deref(), Some("latency-critical"));
        // What `get` prints now is the document in force, in TOML and in JSON.
        let again = server.ctl(&["policy", "get"]).ok();
        assert!(again.starts_with("[[rules]]\nname = \"feed\"\n"), "{again}");
        let back: PolicyDocument = toml::from_str(&again).expect("TOML of the schema");
        assert_eq!(back, in_force);
        let json: PolicyDocument =
            serde_json::from_str(&server.ctl(&["policy", "get", "--json"]).ok()).expect("json");
        assert_eq!(json, in_force);
        // Applying it again changes nothing; the fake counts both replacements.
        assert_eq!(
            server.ctl(&["policy", "apply", file]).ok(),
            "applied: no section changed\n"
        );
        assert_eq!(*server.fake.applied.lock().expect("lock"), 2);

        // One section, from TOML and from JSON (standard input), then back to its default.
        let reorder = server.file(
            "reorder.toml",
            "[reorder]\nmin_hold_ms = 1\nmax_hold_ms = 30\n",
        );
        assert_eq!(
            server
                .ctl(&["policy", "set", "reorder", reorder.to_str().expect("path")])
                .ok(),
            "applied: reorder changed\n"
        );
        assert_eq!(
            server.ctl(&["policy", "get", "reorder"]).ok(),
            "[reorder]\nmin_hold_ms = 1\nmax_hold_ms = 30\n"
        );
        let mut stdin_set = server.command(&["policy", "set", "rules", "-"]);
        stdin_set.stdin(Stdio::piped());
        let (out, err) = outputs(&server.dir);
        let mut child = stdin_set
            .stdout(File::create(&out).expect("out"))
            .stderr(File::create(&err).expect("err"))
            .spawn()
            .expect("spawn");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(b"[]").expect("write stdin");
        }
        let run = collect(wait(child, RUN_LIMIT), &out, &err);
        assert_eq!(run.ok(), "applied: rules changed\n");
        assert!(server.fake.policies.lock().expect("lock").rules.is_empty());
        assert_eq!(
            server.ctl(&["policy", "delete", "reorder"]).ok(),
            "deleted: reorder is back to its default\n"
        );
        let in_force = server.fake.policies.lock().expect("lock").clone();
        assert_eq!(
            (in_force.reorder.min_hold_ms, in_force.reorder.max_hold_ms),
            (5, 25)
        );
    }

    #[test]
    fn a_bad_policy_file_gives_the_apis_field_error_and_changes_nothing() {
        let server = Server::start(10);
        let bad = server.file("bad.toml", "[[rules]]\nname = \"feed\"\nqos = \"gold\"\n");
        let e = server
            .ctl(&["policy", "apply", bad.to_str().expect("path")])
            .failed();
        assert_eq!(
            e,
            "error: rules[0].qos: no QoS class is named \"gold\" (there are \
             [\"latency-critical\", \"default\"]) (field: rules[0].qos)\n"
        );
        let typo = server.file("typo.toml", "[reorder]\nmax_hold = 30\n");
        let e = server
            .ctl(&["policy", "apply", typo.to_str().expect("path")])
            .failed();
        assert!(e.contains("unknown field `max_hold`"), "{e}");
        assert!(e.ends_with("(field: reorder.max_hold)\n"), "{e}");
        let broken = server.file("broken.toml", "[reorder\n");
        let e = server
            .ctl(&["policy", "apply", broken.to_str().expect("path")])
            .failed();
        assert!(
            e.starts_with(&format!(
                "error: policy file {}: not TOML\n  caused by: ",
                broken.display()
            )),
            "{e}"
        );
        assert_eq!(*server.fake.applied.lock().expect("lock"), 0);
        assert_eq!(
            *server.fake.policies.lock().expect("lock"),
            PolicyDocument::default()
        );
    }

    #[test]
    fn a_wrong_token_says_to_check_the_token_file_and_then_when_to_retry() {
        let server = Server::with(1, |c| c.auth_failure_burst = 1);
        let wrong = server.dir.join("wrong.token");
        write_private(&wrong, "another-token-0123456789abcdef0123456789abcdef\n");
        let wrong = wrong.to_str().expect("path");
        let mut c = Command::new(BRAID);
        c.args(["ctl", "nics", "--api", &server.url(), "--token-file", wrong])
            .env_remove("BRAID_API")
            .env_remove("BRAID_TOKEN_FILE");
        let e = run(&server.dir, c).failed();
        assert_eq!(
            e,
            format!(
                "error: a valid bearer token is needed (Authorization: Bearer <token from the \
                 token file>)\n  hint: check the token file: braid ctl sent the token of {wrong}, \
                 which must be the file the daemon's [api] token_file names (--token-file, \
                 BRAID_TOKEN_FILE, or --config with the daemon's config file)\n"
            )
        );
        // The burst was one failure: the next request is refused before its token is read.
        let e = server.ctl(&["nics"]).failed();
        assert!(
            e.starts_with("error: too many failed authentications from this client; retry in "),
            "{e}"
        );
        assert!(
            e.contains("\n  hint: retry after ") && e.contains(" s (Retry-After)"),
            "{e}"
        );
    }

    #[test]
    fn no_server_says_which_url_and_what_to_check() {
        let mut server = Server::start(1);
        server.stop();
        let e = server.ctl(&["stats"]).failed();
        assert!(
            e.starts_with(&format!(
                "error: cannot connect to the braid API at {}/v1/stats\n  hint: is `braid run` \
                 running with an [api] section in its config",
                server.url()
            )),
            "{e}"
        );
        assert!(e.contains("  caused by: "), "{e}");
        let e = Command::new(BRAID)
            .args([
                "ctl",
                "--api",
                "http://127.0.0.1:1",
                "--token-file",
                "/nonexistent/t",
                "nics",
            ])
            .env_remove("BRAID_API")
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&e.stderr);
        assert!(
            stderr.starts_with("error: read the API token file /nonexistent/t\n  hint: "),
            "{stderr}"
        );
        assert_eq!(e.status.code(), Some(1));
    }

    #[test]
    fn stats_json_parses_and_the_table_shows_drops() {
        let server = Server::start(10);
        let stats: Stats =
            serde_json::from_str(&server.ctl(&["stats", "--json"]).ok()).expect("stats json");
        let names: Vec<&str> = stats.nics.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!((stats.flows.tx, stats.flows.rx), (5, 5));
        let table = server.ctl(&["stats"]).ok();
        assert!(
            table.starts_with(
                "since start: sent 3000 packets (4.2 MB), delivered 1800 packets (2.4 MB); \
                 flows now: 5 tx, 5 rx\n\nrates and percentiles over the last 1 s:\nNIC "
            ),
            "{table}"
        );
        // The fake's rates and probe measurements, in units.
        let row = table
            .lines()
            .find(|l| l.starts_with("a "))
            .expect("row of a");
        let cells: Vec<&str> = row
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(
            cells[..9],
            [
                "a", "8 Mbit/s", "7 Mbit/s", "700", "650", "180 µs", "90 µs", "0%", "170 µs"
            ]
        );
        assert!(table.ends_with("DROP REASON         COUNT\nqueue_full              5\nreassembly_timeout      2\n(1 other reason at 0)\n"), "{table}");
    }

    #[test]
    fn stats_watch_stops_after_count() {
        let server = Server::start(10);
        let started = Instant::now();
        let out = server.ctl(&["stats", "--watch", "1", "--count", "2"]).ok();
        assert_eq!(out.matches("braid ctl stats: http://").count(), 2, "{out}");
        assert_eq!(out.matches("DROP REASON").count(), 2, "{out}");
        // One interval between the two refreshes, not more.
        assert!(started.elapsed() >= Duration::from_secs(1));
        assert!(started.elapsed() < Duration::from_secs(10));
        let lines = server
            .ctl(&["stats", "--watch", "1", "--count", "2", "--json"])
            .ok();
        assert_eq!(lines.lines().count(), 2, "{lines}");
        for line in lines.lines() {
            let s: Stats = serde_json::from_str(line).expect("one Stats a line");
            assert_eq!(s.nics.len(), 2);
        }
    }

    #[test]
    fn stats_watch_stops_cleanly_on_sigint() {
        let server = Server::start(10);
        let (child, out, err) = spawn(&server.dir, server.command(&["stats", "--watch", "1"]));
        wait_for_output(&out, Duration::from_secs(10));
        let pid = rustix::process::Pid::from_child(&child);
        let sent = Instant::now();
        rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("SIGINT");
        let run = collect(wait(child, Duration::from_secs(5)), &out, &err);
        assert!(
            sent.elapsed() < Duration::from_secs(2),
            "took {:?}",
            sent.elapsed()
        );
        assert_eq!(run.status.code(), Some(0), "{run:?}");
        assert!(run.stdout.contains("DROP REASON"), "{run:?}");
    }

    #[test]
    fn stats_watch_stops_with_an_error_when_the_server_goes_away() {
        let mut server = Server::start(10);
        let (child, out, err) = spawn(&server.dir, server.command(&["stats", "--watch", "1"]));
        wait_for_output(&out, Duration::from_secs(10));
        server.stop();
        let run = collect(wait(child, Duration::from_secs(15)), &out, &err);
        assert_eq!(run.status.code(), Some(1), "{run:?}");
        assert!(run.stdout.contains("DROP REASON"), "{run:?}");
        assert!(
            run.stderr
                .starts_with("braid ctl stats --watch: stopped after "),
            "{run:?}"
        );
        assert!(
            run.stderr
                .contains(&format!("braid API at {}/v1/stats", server.url())),
            "{run:?}"
        );
        assert!(!run.stderr.contains("panicked"), "{run:?}");
    }

    #[test]
    fn the_config_file_and_the_environment_name_the_api() {
        let server = Server::start(10);
        let config = server.file(
            "braid.toml",
            &format!(
                "[vnic]\nname = \"braid0\"\n\n[api]\nlisten = \"{}\"\ntoken_file = \"{}\"\n",
                server.addr,
                server.token_file().display()
            ),
        );
        let mut c = Command::new(BRAID);
        c.args(["ctl", "nics", "--json", "--config"])
            .arg(&config)
            .env_remove("BRAID_API")
            .env_remove("BRAID_TOKEN_FILE");
        let nics: Vec<Nic> = serde_json::from_str(&run(&server.dir, c).ok()).expect("nics");
        assert_eq!(nics.len(), 2);
        let mut c = Command::new(BRAID);
        c.args(["ctl", "flows", "--limit", "1", "--json"])
            .env("BRAID_API", server.url())
            .env("BRAID_TOKEN_FILE", server.token_file());
        let page: FlowPage = serde_json::from_str(&run(&server.dir, c).ok()).expect("page");
        assert_eq!(page.flows.len(), 1);
        let missing = server.file("no-api.toml", "[vnic]\nname = \"braid0\"\n");
        let mut c = Command::new(BRAID);
        c.args(["ctl", "nics", "--config"])
            .arg(&missing)
            .env_remove("BRAID_API");
        let e = run(&server.dir, c).failed();
        assert!(e.contains("no [api] section"), "{e}");
    }

    #[test]
    fn every_subcommand_explains_itself_with_an_example() {
        for args in [
            &[][..],
            &["nics"],
            &["nics", "show"],
            &["nics", "set"],
            &["flows"],
            &["flows", "show"],
            &["flows", "move"],
            &["policy"],
            &["policy", "get"],
            &["policy", "set"],
            &["policy", "apply"],
            &["policy", "delete"],
            &["stats"],
        ] {
            let out = Command::new(BRAID)
                .arg("ctl")
                .args(args)
                .arg("--help")
                .output()
                .expect("run");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{args:?}");
            assert!(
                text.contains("Example"),
                "braid ctl {args:?} --help:\n{text}"
            );
            assert!(text.contains("braid ctl "), "{args:?}:\n{text}");
        }
    }
}
