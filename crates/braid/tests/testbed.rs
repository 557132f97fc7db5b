//! `braid testbed` as root: `up --no-start` builds the namespaces, veth links, addresses and
//! TBF qdiscs; traffic crosses the links (with `braid traffic`, so no ping/iperf3 is needed)
//! at the configured rate; `down` removes everything, also after a crash, and is idempotent;
//! a failed `up` removes what it made. Without root these tests fail saying so.

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Output, Stdio};
    use std::time::{Duration, Instant};

    use serde_json::Value;

    const BRAID: &str = env!("CARGO_BIN_EXE_braid");

    fn require_root() {
        assert!(
            rustix::process::geteuid().is_root(),
            "this test needs root (it creates network namespaces, veth pairs and TBF qdiscs); \
             run it as root, as CI does"
        );
    }

    /// Runs `line` (program and arguments separated by spaces; `braid` is this package's
    /// binary) to completion.
    fn sh(line: &str) -> Output {
        command(line).output().expect("run command")
    }

    fn command(line: &str) -> Command {
        let mut words = line
            .split_whitespace()
            .map(|w| if w == "braid" { BRAID } else { w });
        let mut cmd = Command::new(words.next().expect("a program"));
        cmd.args(words);
        cmd
    }

    fn stdout(out: &Output) -> String {
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn text(out: &Output) -> String {
        format!(
            "status {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            stdout(out),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn ns_exists(ns: &str) -> bool {
        Path::new("/run/netns").join(ns).exists()
    }

    /// Runs `braid testbed down --name` when dropped, so a failing test leaves nothing.
    struct Guard(String);

    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = sh(&format!("braid testbed down --name {}", self.0));
        }
    }

    fn wait_exit(child: &mut Child, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if child.try_wait().expect("wait").is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// A checked TCP transfer of `bytes` from side a to `dst` (in b) across the links;
    /// returns the server's JSON.
    fn transfer(name: &str, dst: &str, bytes: &str) -> Value {
        let mut server = command(&format!(
            "ip netns exec {name}-b braid traffic tcp-server --listen {dst}:5201 --once --seed 9 \
             --expect-bytes {bytes} --timeout 20s"
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tcp-server");
        std::thread::sleep(Duration::from_millis(300));
        let client = sh(&format!(
            "ip netns exec {name}-a braid traffic tcp-client --connect {dst}:5201 \
             --bytes {bytes} --seed 9 --timeout 20s"
        ));
        if !wait_exit(&mut server, Duration::from_secs(25)) {
            let _ = server.kill();
        }
        let s = server.wait_with_output().expect("server output");
        assert!(
            client.status.success() && s.status.success(),
            "transfer to {dst} failed\nclient: {}\nserver: {}",
            text(&client),
            text(&s)
        );
        let v: Value = serde_json::from_str(stdout(&s).trim()).expect("server JSON");
        assert_eq!(v["ok"], true, "{v}");
        v
    }

    #[test]
    fn up_builds_the_network_and_down_removes_it() {
        require_root();
        let name = format!("braid-tb{}", std::process::id());
        let (a, b) = (format!("{name}-a"), format!("{name}-b"));
        let dir = PathBuf::from("/run/braid-testbed").join(&name);
        let _guard = Guard(name.clone());

        let up = sh(&format!(
            "braid testbed up --no-start --name {name} --links 100mbit,none"
        ));
        assert!(up.status.success(), "{}", text(&up));
        assert!(stdout(&up).contains(&format!("testbed {name} is up")));
        assert!(ns_exists(&a) && ns_exists(&b));

        for (ns, host) in [(&a, 1), (&b, 2)] {
            for i in 0..2 {
                let link = sh(&format!("ip -n {ns} -br addr show nic{i}"));
                let line = stdout(&link);
                assert!(
                    link.status.success(),
                    "nic{i} missing in {ns}: {}",
                    text(&link)
                );
                assert!(line.contains(" UP "), "nic{i} in {ns} is not up: {line}");
                assert!(line.contains(&format!("10.77.{i}.{host}/24")), "{line}");
            }
            let q0 = stdout(&sh(&format!("tc -n {ns} qdisc show dev nic0")));
            assert!(
                q0.contains("qdisc tbf") && q0.contains("rate 100Mbit"),
                "{ns}: {q0}"
            );
            let q1 = stdout(&sh(&format!("tc -n {ns} qdisc show dev nic1")));
            assert!(!q1.contains("tbf"), "nic1 in {ns} is rate limited: {q1}");
        }

        // The state: a 0600 key of 64 hex characters, and both configs.
        let psk = dir.join("psk");
        let mode = std::fs::metadata(&psk).expect("psk").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let key = std::fs::read_to_string(&psk).unwrap();
        assert_eq!(key.trim().len(), 64);
        assert!(key.trim().bytes().all(|c| c.is_ascii_hexdigit()));
        let a_toml: toml::Table = std::fs::read_to_string(dir.join("a.toml"))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            a_toml["peer"]["key_file"].as_str(),
            Some(&*psk.to_string_lossy())
        );
        assert_eq!(a_toml["nics"][0]["capacity"].as_str(), Some("100mbit"));
        assert_eq!(a_toml["nics"][1]["capacity"].as_str(), Some("auto"));
        assert!(dir.join("b.toml").exists());

        // Traffic crosses both links; the limited one runs at its rate, not faster.
        let limited = transfer(&name, "10.77.0.2", "2M");
        let mbps = limited["mbps"].as_f64().unwrap();
        assert!(mbps < 110.0, "100mbit link carried {mbps} Mbit/s");
        assert!(mbps > 30.0, "100mbit link carried only {mbps} Mbit/s");
        transfer(&name, "10.77.1.2", "2M");

        let status = sh(&format!("braid testbed status --name {name}"));
        let st = stdout(&status);
        assert!(status.status.success(), "{}", text(&status));
        assert!(st.contains(&format!("namespace {a}:")) && st.contains(&format!("namespace {b}:")));
        assert!(
            st.contains("tbf rate 100Mbit") && st.contains("no rate limit"),
            "{st}"
        );
        assert!(st.contains("braid: not started"), "{st}");

        // A second `up` of the same name is refused and leaves the first alone.
        let again = sh(&format!("braid testbed up --no-start --name {name}"));
        assert!(!again.status.success());
        assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
        assert!(ns_exists(&a) && ns_exists(&b) && dir.exists());

        let down = sh(&format!("braid testbed down --name {name}"));
        assert!(down.status.success(), "{}", text(&down));
        assert!(stdout(&down).contains(&format!("deleted namespace {a}")));
        assert!(!ns_exists(&a) && !ns_exists(&b) && !dir.exists());
        assert!(!stdout(&sh("ip netns list")).contains(&name));

        let twice = sh(&format!("braid testbed down --name {name}"));
        assert!(twice.status.success(), "{}", text(&twice));
        assert!(stdout(&twice).contains("nothing to remove"));
    }

    #[test]
    fn down_cleans_up_after_a_crash() {
        require_root();
        let name = format!("braid-tc{}", std::process::id());
        let _guard = Guard(name.clone());
        let up = sh(&format!(
            "braid testbed up --no-start --name {name} --links none"
        ));
        assert!(up.status.success(), "{}", text(&up));
        // A process left in a namespace, and the state directory lost.
        let mut sleeper = command(&format!("ip netns exec {name}-b sleep 30"))
            .spawn()
            .expect("start sleep");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !stdout(&sh(&format!("ip netns pids {name}-b"))).contains(&sleeper.id().to_string()) {
            assert!(
                Instant::now() < deadline,
                "sleep did not enter the namespace"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::fs::remove_dir_all(PathBuf::from("/run/braid-testbed").join(&name)).unwrap();
        let down = sh(&format!("braid testbed down --name {name}"));
        assert!(down.status.success(), "{}", text(&down));
        assert!(stdout(&down).contains("stopped processes"));
        assert!(
            wait_exit(&mut sleeper, Duration::from_secs(5)),
            "sleep survived down"
        );
        assert!(!ns_exists(&format!("{name}-a")) && !ns_exists(&format!("{name}-b")));
    }

    #[test]
    fn failed_up_removes_what_it_made() {
        require_root();
        let name = format!("braid-tf{}", std::process::id());
        let _guard = Guard(name.clone());
        // A "braid" that exits at once: up must notice, show its log, and clean up.
        let up = sh(&format!(
            "braid testbed up --name {name} --links none --braid /bin/false"
        ));
        assert!(!up.status.success());
        let err = String::from_utf8_lossy(&up.stderr).into_owned();
        assert!(
            err.contains("exited") && err.contains("before braid0 appeared"),
            "{err}"
        );
        assert!(
            !ns_exists(&format!("{name}-a")) && !ns_exists(&format!("{name}-b")),
            "{err}"
        );
        assert!(!PathBuf::from("/run/braid-testbed").join(&name).exists());
    }
}
