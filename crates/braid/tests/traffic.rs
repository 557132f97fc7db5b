//! `braid traffic` over 127.0.0.1 (no root): the TCP stream arrives byte-exact and both ends
//! agree on its blake3; the server's own check catches a wrong seed or length; the UDP
//! server counts every datagram, its order and latency, and strangers' datagrams apart.

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::net::UdpSocket;
    use std::process::{Child, Command, Output, Stdio};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use serde_json::Value;

    const BRAID: &str = env!("CARGO_BIN_EXE_braid");

    /// A server started in the background, with the address it printed once bound.
    struct Server {
        child: Child,
        addr: String,
        /// The rest of its stderr, collected by a thread.
        stderr: mpsc::Receiver<String>,
    }

    impl Server {
        /// Starts `braid <line>` (arguments separated by spaces).
        fn start(line: &str) -> Self {
            let mut child = Command::new(BRAID)
                .args(line.split_whitespace())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start braid traffic");
            let stderr = child.stderr.take().expect("piped stderr");
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            let first = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("server printed nothing within 10 s");
            let addr = first
                .strip_prefix("listening on ")
                .unwrap_or_else(|| panic!("unexpected first line: {first}"))
                .to_owned();
            Self {
                child,
                addr,
                stderr: rx,
            }
        }

        /// Waits (bounded) for the server to exit; returns its status, stdout and stderr.
        fn finish(mut self, limit: Duration) -> (bool, String, String) {
            let deadline = Instant::now() + limit;
            while self.child.try_wait().expect("wait").is_none() {
                if Instant::now() > deadline {
                    let _ = self.child.kill();
                    panic!("server did not exit within {limit:?}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let out = self.child.wait_with_output().expect("server output");
            // The reader thread may still be passing on the last lines: read until it is done
            // (the channel disconnects at the end of stderr), bounded.
            let mut stderr = Vec::new();
            while let Ok(line) = self.stderr.recv_timeout(Duration::from_secs(5)) {
                stderr.push(line);
            }
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr.join("\n"),
            )
        }
    }

    /// Runs `braid <line>` (arguments separated by spaces) to completion.
    fn braid(line: &str) -> Output {
        Command::new(BRAID)
            .args(line.split_whitespace())
            .output()
            .expect("run braid")
    }

    fn json(text: &str) -> Value {
        let line = text
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| panic!("no JSON line in: {text}"));
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// A TCP transfer over loopback; returns the client's output and the server's result.
    fn tcp(server_args: &str, client_args: &str) -> (Output, (bool, String, String)) {
        let server = Server::start(&format!(
            "traffic tcp-server --listen 127.0.0.1:0 --once --timeout 30s {server_args}"
        ));
        let client = braid(&format!(
            "traffic tcp-client --connect {} --timeout 30s {client_args}",
            server.addr
        ));
        (client, server.finish(Duration::from_secs(30)))
    }

    #[test]
    fn tcp_stream_arrives_byte_exact() {
        let (client, (ok, out, err)) = tcp("--seed 42 --expect-bytes 3M", "--bytes 3M --seed 42");
        assert!(client.status.success(), "{client:?}");
        assert!(ok, "server failed: {err}");
        let c = json(&String::from_utf8_lossy(&client.stdout));
        let s = json(&out);
        assert_eq!(c["bytes"], 3 * 1024 * 1024);
        assert_eq!(s["bytes"], 3 * 1024 * 1024);
        assert_eq!(c["blake3"], s["blake3"]);
        assert_eq!(c["blake3"].as_str().unwrap().len(), 64);
        assert_eq!(s["ok"], true);
        assert_eq!(s["first_mismatch"], Value::Null);
        assert!(c["secs"].as_f64().unwrap() > 0.0);
        assert!(s["mbps"].as_f64().unwrap() > 0.0);

        // Another seed: another stream, another hash.
        let (other, (ok, _, err)) = tcp("", "--bytes 3M --seed 43");
        assert!(other.status.success() && ok, "{err}");
        let o = json(&String::from_utf8_lossy(&other.stdout));
        assert_ne!(o["blake3"], c["blake3"]);
    }

    #[test]
    fn tcp_server_catches_a_wrong_seed_and_a_short_stream() {
        // The client may or may not succeed: the server may close on the first wrong byte
        // while the client is still writing (a reset).
        let (_client, (ok, out, err)) = tcp("--seed 1", "--bytes 100K --seed 2");
        assert!(!ok, "server accepted the wrong stream: {out}");
        let s = json(&out);
        assert_eq!(s["ok"], false);
        // Two seeds' streams differ in the first byte with probability 255/256; these do.
        assert_eq!(s["first_mismatch"], 0);
        assert!(err.contains("differs from seed 1 at byte 0"), "{err}");

        let (client, (ok, out, err)) =
            tcp("--seed 7 --expect-bytes 1M", "--bytes 1000000 --seed 7");
        assert!(client.status.success());
        assert!(!ok, "server accepted a short stream: {out}");
        let s = json(&out);
        assert_eq!(s["bytes"], 1_000_000);
        assert_eq!(s["first_mismatch"], Value::Null);
        assert!(err.contains("received 1000000 bytes"), "{err}");
        assert!(err.contains("expected 1048576"), "{err}");
    }

    #[test]
    fn tcp_server_without_a_client_times_out() {
        let server =
            Server::start("traffic tcp-server --listen 127.0.0.1:0 --once --timeout 300ms");
        let started = Instant::now();
        let (ok, _, err) = server.finish(Duration::from_secs(10));
        assert!(!ok);
        assert!(err.contains("no connection"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn tcp_client_retries_a_refused_connection_until_its_timeout() {
        // Port 1 on loopback refuses: the client keeps trying, then says what went wrong.
        let started = Instant::now();
        let out = braid("traffic tcp-client --connect 127.0.0.1:1 --bytes 1K --timeout 400ms");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("timed out connecting to 127.0.0.1:1"), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(400));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn udp_counts_every_datagram() {
        let server =
            Server::start("traffic udp-server --listen 127.0.0.1:0 --count 500 --timeout 30s");
        // A stranger's datagram first: counted as invalid, not as traffic.
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .send_to(b"hello", &server.addr)
            .unwrap();
        let client = braid(&format!(
            "traffic udp-client --connect {} --count 500 --rate 20000 --size 300",
            server.addr
        ));
        assert!(client.status.success(), "{client:?}");
        let c = json(&String::from_utf8_lossy(&client.stdout));
        assert_eq!(c["sent"], 500);
        let (ok, out, err) = server.finish(Duration::from_secs(30));
        assert!(ok, "{err}");
        let s = json(&out);
        assert_eq!(s["received"], 501);
        assert_eq!(s["invalid"], 1);
        assert_eq!(s["unique"], 500);
        assert_eq!(s["duplicates"], 0);
        assert_eq!(s["lost"], 0);
        assert_eq!(s["corrupt"], 0);
        assert_eq!(s["total"], 500);
        assert_eq!(s["max_seq"], 499);
        assert_eq!(s["bytes"], 500 * 300);
        assert_eq!(s["timed_out"], false);
        let lat = &s["latency_us"];
        let (p50, p99, max) = (
            lat["p50"].as_f64().unwrap(),
            lat["p99"].as_f64().unwrap(),
            lat["max"].as_f64().unwrap(),
        );
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{lat}");
        // 500 datagrams at 20000/s take 25 ms: the rate is honoured, not exceeded.
        assert!(c["secs"].as_f64().unwrap() >= 0.02, "{c}");
    }

    #[test]
    fn udp_server_stops_when_idle_and_reports_the_missing_tail() {
        let server = Server::start(
            "traffic udp-server --listen 127.0.0.1:0 --count 1000 --idle 300ms --timeout 30s",
        );
        let client = braid(&format!(
            "traffic udp-client --connect {} --count 200 --rate 0",
            server.addr
        ));
        assert!(client.status.success(), "{client:?}");
        let (ok, out, err) = server.finish(Duration::from_secs(10));
        assert!(ok, "{err}");
        let s = json(&out);
        assert_eq!(s["unique"], 200);
        // The client said it sends 200: none is missing, although --count wanted 1000.
        assert_eq!(s["lost"], 0);
        assert_eq!(s["total"], 200);
    }

    #[test]
    fn bad_arguments_say_what_to_fix() {
        let out = braid("traffic tcp-client --connect 127.0.0.1:1 --bytes 12X");
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("unknown unit `X`"));
        let out = braid("traffic udp-client --connect 127.0.0.1:9 --count 1 --size 10");
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("must be 32 to 65507 bytes"));
        let out = braid("traffic udp-server --listen 127.0.0.1:0");
        assert!(
            !out.status.success(),
            "udp-server without --count/--duration must be refused"
        );
    }
}
