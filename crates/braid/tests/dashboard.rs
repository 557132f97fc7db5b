//! The dashboard (issue 5) in a real browser against a real daemon, as root: `braid testbed
//! up --api` (side a serves the API and the page on 127.0.0.1:7780 inside its namespace), UDP
//! traffic from a's vNIC to b's with `braid traffic` so the links carry data, and Debian's
//! chromium, headless, started inside namespace a so it reaches the API as a local browser
//! would. The test:
//!
//! 1. opens `/dashboard#token=…&points=30` and, without reloading, waits for 15 successful
//!    polls (one a second);
//! 2. checks what the page shows: no error, the token gone from the address bar; every chart's
//!    canvas has as many points as polls, the send-rate chart's last values are link0's and
//!    link1's and add up to the traffic's rate, its line is drawn (pixels in the NICs'
//!    colours), the RTT chart has each link's measured srtt; the NIC table lists both links
//!    with their capacities, the flow table has the traffic's flow, the drops table accounts
//!    for every reason the API reports;
//! 3. saves a screenshot of that page (`$CARGO_TARGET_TMPDIR/dashboard.png`, path printed);
//! 4. opens the page with a wrong token: the daemon's 401 is shown, with the form, and no
//!    data.
//!
//! # Why the DevTools protocol and not `--dump-dom --virtual-time-budget`
//!
//! Both were tried. Virtual time does let the fetches complete (chromium pauses its virtual
//! clock while a request is in flight), but it skips each 1 s wait: with a 10 s budget the
//! page made 11 polls in about 1.3 s of real time (and without a budget `--dump-dom` gives
//! the page before its first poll). So most samples hold the same daemon rates, and the
//! screenshot, from a second run, would be of another page than the one checked.
//! With the DevTools protocol the page polls in real time, the test reads the DOM of the same
//! page as it updates (it is never reloaded) and screenshots it. The protocol runs over
//! chromium's WebSocket (`--remote-debugging-port=0`, the port read from its stderr), spoken
//! here with a minimal RFC 6455 client (text frames, masked as a client must), so the test
//! needs no crate beyond serde_json.
//!
//! Without root, or without chromium (`apt-get install chromium`; `.ci/run` does), the test
//! fails and says so. Every wait is bounded; chromium runs in a process group of its own
//! that a guard kills, and the testbed is removed by its guard, also on failure.

mod common;

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;
    use std::os::unix::process::CommandExt;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::{Arc, Mutex, mpsc};
    use std::time::{Duration, Instant};

    use serde_json::{Value, json};

    use crate::common::{BRAID, Testbed, in_netns, require_root, require_tool, serial, stop};

    use crate::common::TESTBED_API as API;
    /// The traffic's UDP port on b's vNIC address.
    const PORT: u16 = 5300;
    /// Polls to wait for before checking (one a second).
    const POLLS: u64 = 15;

    /// One HTTP/1.1 GET to the API from inside namespace `ns`: status and body.
    fn get(ns: &str, path: &str, token: Option<&str>) -> (u16, String) {
        crate::common::api_request(ns, "GET", path, token, "").unwrap_or_else(|e| (0, e))
    }

    /// Waits (at most 10 s) until the API answers `/healthz`.
    fn wait_api(tb: &Testbed) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let up = in_netns(&tb.ns('a'), || TcpStream::connect(API).is_ok());
            if up && get(&tb.ns('a'), "/healthz", None).0 == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the API did not answer within 10 s:\n{}",
                tb.log('a')
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Children stopped (SIGTERM, then SIGKILL) when dropped.
    struct Children(Vec<Child>);

    impl Drop for Children {
        fn drop(&mut self) {
            for c in &mut self.0 {
                stop(c);
            }
        }
    }

    /// UDP from a's vNIC to b's: 2000 datagrams/s of 1000 bytes (16 Mbit/s of payload) for
    /// up to 100 s, to a `braid traffic` server in b.
    fn start_traffic(tb: &Testbed) -> Children {
        let listen = format!("10.99.0.2:{PORT}");
        let spawn = |side: char, args: &[&str]| {
            Command::new("ip")
                .args(["netns", "exec", &tb.ns(side), BRAID, "traffic"])
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("braid traffic")
        };
        let server = spawn(
            'b',
            &[
                "udp-server",
                "--listen",
                &listen,
                "--duration",
                "100s",
                "--timeout",
                "110s",
            ],
        );
        std::thread::sleep(Duration::from_millis(300));
        let client = spawn(
            'a',
            &[
                "udp-client",
                "--connect",
                &listen,
                "--count",
                "200000",
                "--rate",
                "2000",
                "--size",
                "1000",
                "--timeout",
                "100s",
            ],
        );
        Children(vec![client, server])
    }

    /// Headless chromium in a process group of its own (it forks renderers), killed whole
    /// when dropped; its stderr is kept for failure messages.
    struct Browser {
        child: Child,
        stderr: Arc<Mutex<String>>,
        /// The browser's DevTools WebSocket URL.
        ws_url: String,
    }

    impl Browser {
        /// Chromium in namespace `ns` on `about:blank`, its profile in `profile`, a 1400×1000
        /// window; returns once its DevTools port is open (at most 60 s).
        fn start(ns: &str, profile: &Path) -> Self {
            let mut child = Command::new("ip")
                .args(["netns", "exec", ns, "chromium"])
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--remote-debugging-port=0",
                    "--window-size=1400,1000",
                    "--hide-scrollbars",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-extensions",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--mute-audio",
                ])
                .arg(format!("--user-data-dir={}", profile.display()))
                .arg("about:blank")
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start chromium");
            let pipe = child.stderr.take().expect("stderr");
            let stderr = Arc::new(Mutex::new(String::new()));
            let (tx, rx) = mpsc::channel();
            {
                let stderr = Arc::clone(&stderr);
                std::thread::spawn(move || {
                    for line in BufReader::new(pipe).lines() {
                        let Ok(line) = line else { break };
                        if let Some(url) = line.strip_prefix("DevTools listening on ") {
                            let _ = tx.send(url.trim().to_owned());
                        }
                        let mut log = stderr.lock().unwrap_or_else(|e| e.into_inner());
                        // The last 32 KiB at most: chromium is chatty about D-Bus.
                        if log.len() > 32 << 10 {
                            let cut = log.len() - (16 << 10);
                            let cut = (cut..log.len())
                                .find(|&i| log.is_char_boundary(i))
                                .unwrap_or(cut);
                            log.drain(..cut);
                        }
                        log.push_str(&line);
                        log.push('\n');
                    }
                });
            }
            let mut browser = Self {
                child,
                stderr,
                ws_url: String::new(),
            };
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(url) => browser.ws_url = url,
                Err(_) => panic!(
                    "chromium did not open its DevTools port within 60 s:\n{}",
                    browser.log()
                ),
            }
            browser
        }

        fn log(&self) -> String {
            self.stderr
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        }
    }

    impl Drop for Browser {
        fn drop(&mut self) {
            let Some(group) = rustix::process::Pid::from_raw(self.child.id() as i32) else {
                return;
            };
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::TERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if self.child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // Renderers and helpers too, whether or not the browser went.
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            let _ = self.child.wait();
            if std::thread::panicking() {
                eprintln!("chromium's stderr (the end):\n{}", self.log());
            }
        }
    }

    /// A DevTools protocol connection: JSON messages in WebSocket text frames (RFC 6455),
    /// commands sent to the page's session once [`Cdp::attach_page`] has run.
    struct Cdp {
        stream: TcpStream,
        next_id: u64,
        session: Option<String>,
    }

    impl Cdp {
        /// Connect to `ws_url` (`ws://127.0.0.1:PORT/devtools/browser/ID`) from namespace
        /// `ns`. Every read and write gives up after 30 s.
        fn connect(ns: &str, ws_url: &str) -> Self {
            let rest = ws_url
                .strip_prefix("ws://")
                .unwrap_or_else(|| panic!("not a ws:// URL: {ws_url}"));
            let (host, path) = rest.split_once('/').expect("a path");
            let host = host.to_owned();
            let mut stream = in_netns(ns, || TcpStream::connect(&host)).expect("DevTools port");
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            stream
                .set_write_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            // The key's accept hash is not checked: this client trusts its own chromium.
            write!(
                stream,
                "GET /{path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: YnJhaWQtZGFzaGJvYXJkIQ==\r\n\
                 Sec-WebSocket-Version: 13\r\n\r\n"
            )
            .expect("handshake");
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                stream.read_exact(&mut byte).expect("handshake answer");
                head.push(byte[0]);
                assert!(head.len() < 8192, "handshake answer too long");
            }
            let head = String::from_utf8_lossy(&head);
            assert!(head.starts_with("HTTP/1.1 101"), "no WebSocket: {head}");
            Self {
                stream,
                next_id: 0,
                session: None,
            }
        }

        /// One frame from the client: FIN, `opcode`, masked (RFC 6455 §5.3).
        fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
            let mut frame = vec![0x80 | opcode];
            match payload.len() {
                n @ 0..=125 => frame.push(0x80 | n as u8),
                n @ 126..=0xffff => {
                    frame.push(0x80 | 126);
                    frame.extend_from_slice(&(n as u16).to_be_bytes());
                }
                n => {
                    frame.push(0x80 | 127);
                    frame.extend_from_slice(&(n as u64).to_be_bytes());
                }
            }
            let key = (self.next_id as u32 ^ 0x9e37_79b9).to_be_bytes();
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
            self.stream.write_all(&frame)
        }

        /// The next whole message (continuation frames joined; pings answered).
        fn receive(&mut self) -> std::io::Result<String> {
            let mut message = Vec::new();
            loop {
                let mut head = [0u8; 2];
                self.stream.read_exact(&mut head)?;
                let (fin, opcode) = (head[0] & 0x80 != 0, head[0] & 0x0f);
                let mut len = u64::from(head[1] & 0x7f);
                if len == 126 {
                    let mut b = [0u8; 2];
                    self.stream.read_exact(&mut b)?;
                    len = u64::from(u16::from_be_bytes(b));
                } else if len == 127 {
                    let mut b = [0u8; 8];
                    self.stream.read_exact(&mut b)?;
                    len = u64::from_be_bytes(b);
                }
                let mut key = None;
                if head[1] & 0x80 != 0 {
                    let mut k = [0u8; 4];
                    self.stream.read_exact(&mut k)?;
                    key = Some(k);
                }
                if len > 64 << 20 {
                    return Err(std::io::Error::other(format!("a {len}-byte frame")));
                }
                let mut payload = vec![0u8; len as usize];
                self.stream.read_exact(&mut payload)?;
                if let Some(k) = key {
                    for (i, b) in payload.iter_mut().enumerate() {
                        *b ^= k[i % 4];
                    }
                }
                match opcode {
                    0x0..=0x2 => {
                        message.extend_from_slice(&payload);
                        if fin {
                            return String::from_utf8(message).map_err(std::io::Error::other);
                        }
                    }
                    0x8 => return Err(std::io::Error::other("chromium closed the connection")),
                    0x9 => self.send_frame(0xA, &payload)?,
                    0xA => {}
                    op => return Err(std::io::Error::other(format!("frame opcode {op}"))),
                }
            }
        }

        /// Run `method` and return its result (events in between are skipped).
        fn call(&mut self, method: &str, params: Value) -> Value {
            self.next_id += 1;
            let id = self.next_id;
            let mut message = json!({"id": id, "method": method, "params": params});
            if let Some(s) = &self.session {
                message["sessionId"] = json!(s);
            }
            self.send_frame(0x1, message.to_string().as_bytes())
                .unwrap_or_else(|e| panic!("send {method}: {e}"));
            loop {
                let text = self
                    .receive()
                    .unwrap_or_else(|e| panic!("answer to {method}: {e}"));
                let answer: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{method}: not JSON ({e}): {text:.200}"));
                if answer["id"] == json!(id) {
                    assert!(answer["error"].is_null(), "{method}: {}", answer["error"]);
                    return answer["result"].clone();
                }
            }
        }

        /// Attach to the browser's page; later commands go to it. Its viewport: 1400×1000.
        fn attach_page(&mut self) {
            let targets = self.call("Target.getTargets", json!({}));
            let page = targets["targetInfos"]
                .as_array()
                .and_then(|t| t.iter().find(|t| t["type"] == "page"))
                .unwrap_or_else(|| panic!("no page: {targets}"))["targetId"]
                .clone();
            let attached = self.call(
                "Target.attachToTarget",
                json!({"targetId": page, "flatten": true}),
            );
            self.session = Some(
                attached["sessionId"]
                    .as_str()
                    .expect("a session")
                    .to_owned(),
            );
            self.call(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": false}),
            );
        }

        /// Navigate the page to `url` and wait (at most 30 s) until the document at
        /// `pathname` has loaded.
        fn open(&mut self, url: &str, pathname: &str) {
            let r = self.call("Page.navigate", json!({"url": url}));
            assert!(r["errorText"].is_null(), "{url}: {}", r["errorText"]);
            let deadline = Instant::now() + Duration::from_secs(30);
            let loaded = format!("complete {pathname}");
            while self.eval("document.readyState + ' ' + location.pathname") != loaded.as_str() {
                assert!(Instant::now() < deadline, "{url} did not load in 30 s");
                std::thread::sleep(Duration::from_millis(100));
            }
        }

        /// Ask the browser to close (no answer awaited: it may close the connection first).
        fn close_browser(mut self) {
            self.session = None;
            self.next_id += 1;
            let message = json!({"id": self.next_id, "method": "Browser.close", "params": {}});
            let _ = self.send_frame(0x1, message.to_string().as_bytes());
        }

        /// The value of a JavaScript expression in the page.
        fn eval(&mut self, expression: &str) -> Value {
            let r = self.call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            );
            assert!(
                r["exceptionDetails"].is_null(),
                "{expression}: {}",
                r["exceptionDetails"]
            );
            r["result"]["value"].clone()
        }
    }

    /// What the page shows, read from its DOM: the state, counters, error and form, each
    /// chart's data attributes, the tables' cells, the address.
    const OBSERVE: &str = r##"JSON.stringify((() => {
        const chart = (id) => {
            const c = document.getElementById("chart-" + id);
            return {points: Number(c.dataset.points), last: JSON.parse(c.dataset.last)};
        };
        const rows = (id) => [...document.querySelectorAll("#" + id + " tbody tr")]
            .map((tr) => [...tr.cells].map((td) => td.textContent));
        const error = document.getElementById("error");
        return {
            state: document.body.dataset.state,
            updates: Number(document.body.dataset.updates),
            errors: Number(document.body.dataset.errors),
            error: error.hidden ? null : error.textContent,
            login: !document.getElementById("login").hidden,
            charts: {tx: chart("tx"), rx: chart("rx"), rtt: chart("rtt"), loss: chart("loss")},
            nics: rows("nics"), flows: rows("flows"), drops: rows("drops"),
            url: location.href,
            stored: sessionStorage.getItem("braid.dashboard.token"),
            marker: window.braidTestMarker === 1,
        };
    })())"##;

    /// Pixels of the send-rate chart in the first two NICs' colours (#2458d6, #d6452b).
    const LINE_PIXELS: &str = r#"(() => {
        const c = document.getElementById("chart-tx");
        const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) {
            const near = (r, g, b) => Math.abs(d[i] - r) + Math.abs(d[i + 1] - g)
                + Math.abs(d[i + 2] - b) < 60 && d[i + 3] > 200;
            if (near(0x24, 0x58, 0xd6) || near(0xd6, 0x45, 0x2b)) n++;
        }
        return n;
    })()"#;

    fn observe(cdp: &mut Cdp) -> Value {
        let text = cdp.eval(OBSERVE);
        serde_json::from_str(text.as_str().expect("a string")).expect("JSON")
    }

    /// Standard base64 (RFC 4648 §4), as DevTools sends screenshots.
    fn base64_decode(text: &str) -> Vec<u8> {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = Vec::with_capacity(text.len() * 3 / 4);
        let (mut acc, mut bits) = (0u32, 0u32);
        for c in text.bytes().take_while(|&c| c != b'=') {
            let v = ALPHABET
                .iter()
                .position(|&a| a == c)
                .unwrap_or_else(|| panic!("not base64: {c:#x}")) as u32;
            acc = (acc << 6) | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        out
    }

    #[test]
    fn base64_decodes_rfc4648_vectors() {
        for (text, bytes) in [
            ("", &b""[..]),
            ("Zg==", b"f"),
            ("Zm8=", b"fo"),
            ("Zm9v", b"foo"),
            ("Zm9vYmFy", b"foobar"),
            ("iVBORw0KGgo=", b"\x89PNG\r\n\x1a\n"),
        ] {
            assert_eq!(base64_decode(text), bytes, "{text}");
        }
    }

    #[test]
    fn the_dashboard_draws_live_data_from_the_daemon_in_chromium() {
        require_root(
            "this test needs root (it creates network namespaces, veth pairs and TUN devices); \
             run it as root, as CI does: sudo -E cargo test -p braid --release --test dashboard",
        );
        require_tool("chromium", "chromium");
        let _serial = serial();
        let pid = std::process::id() % 100_000;
        let tb = Testbed::up(
            format!("braid-dash{pid}"),
            &["--api", "--links", "100mbit,200mbit"],
        );
        let ns = tb.ns('a');
        wait_api(&tb);
        let token = std::fs::read_to_string(tb.dir().join("api.token"))
            .expect("the testbed's API token")
            .trim()
            .to_owned();
        let _traffic = start_traffic(&tb);

        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let profile = out.join(format!("braid-dash-chromium-{pid}"));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).expect("chromium profile directory");
        let browser = Browser::start(&ns, &profile);
        let mut cdp = Cdp::connect(&ns, &browser.ws_url);
        cdp.attach_page();

        // 1. The page, polled in real time, never reloaded (the marker would be gone).
        cdp.open(
            &format!("http://{API}/dashboard#token={token}&points=30"),
            "/dashboard",
        );
        cdp.eval("window.braidTestMarker = 1");
        let deadline = Instant::now() + Duration::from_secs(60);
        let page = loop {
            let page = observe(&mut cdp);
            assert!(
                page["state"] != "unauthorized" && page["errors"] == 0,
                "the page failed: {page}\nchromium:\n{}",
                browser.log()
            );
            let sending = page["charts"]["tx"]["last"]
                .as_object()
                .is_some_and(|l| l.values().filter_map(Value::as_f64).sum::<f64>() > 5e6);
            if page["updates"].as_u64() >= Some(POLLS) && sending {
                break page;
            }
            assert!(
                Instant::now() < deadline,
                "no {POLLS} polls with traffic within 60 s: {page}\nchromium:\n{}\ndaemon:\n{}",
                browser.log(),
                tb.log('a')
            );
            std::thread::sleep(Duration::from_millis(500));
        };

        // 2. What it shows.
        assert_eq!(page["state"], "ok", "{page}");
        assert_eq!(page["error"], Value::Null, "{page}");
        assert_eq!(page["login"], false, "{page}");
        assert_eq!(page["marker"], true, "the page was never reloaded");
        let url = page["url"].as_str().expect("url");
        assert!(
            !url.contains("token") && url.ends_with("/dashboard#points=30"),
            "the token left the address bar: {url}"
        );
        assert_eq!(page["stored"], json!(token), "kept in sessionStorage");
        let updates = page["updates"].as_u64().expect("updates");
        for chart in ["tx", "rx", "rtt", "loss"] {
            let points = page["charts"][chart]["points"].as_u64().expect("points");
            assert!(
                points >= 3 && points == updates.min(30),
                "{chart}: {points} points after {updates} polls"
            );
        }
        let tx = &page["charts"]["tx"]["last"];
        let keys: Vec<&String> = tx.as_object().expect("tx").keys().collect();
        assert_eq!(keys, ["link0", "link1"], "{tx}");
        let tx_bps: f64 = ["link0", "link1"]
            .iter()
            .map(|n| tx[n].as_f64().unwrap_or(0.0))
            .sum();
        // 16 Mbit/s of UDP payload plus headers (more than 5 Mbit/s however starved the
        // sender is on a busy machine); the NICs are capped at 300 Mbit/s together.
        assert!(
            (5e6..300e6).contains(&tx_bps),
            "send rate {tx_bps} bit/s: {page}"
        );
        let pixels = cdp.eval(LINE_PIXELS).as_u64().expect("pixels");
        assert!(
            pixels > 50,
            "the send-rate lines are drawn: {pixels} pixels"
        );
        let rtt = &page["charts"]["rtt"]["last"];
        for nic in ["link0", "link1"] {
            let srtt = rtt[format!("{nic} srtt")].as_f64();
            assert!(
                srtt.is_some_and(|us| us > 0.0 && us < 1e6),
                "{nic}'s srtt: {rtt}"
            );
            let loss = page["charts"]["loss"]["last"][nic].as_f64();
            assert!(
                loss.is_some_and(|l| (0.0..=1.0).contains(&l)),
                "{nic}'s loss: {}",
                page["charts"]["loss"]
            );
        }
        let nics = page["nics"].as_array().expect("nic rows");
        let cells = |row: &Value, i: usize| row[i].as_str().unwrap_or("").to_owned();
        assert_eq!(nics.len(), 2, "{nics:?}");
        assert_eq!(
            (cells(&nics[0], 0), cells(&nics[0], 4)),
            ("link0".to_owned(), "100 Mbit/s".to_owned())
        );
        assert_eq!(
            (cells(&nics[1], 0), cells(&nics[1], 4)),
            ("link1".to_owned(), "200 Mbit/s".to_owned())
        );
        let flows = page["flows"].as_array().expect("flow rows");
        let ours = format!("→ 10.99.0.2:{PORT}");
        let flow = flows
            .iter()
            .find(|f| cells(f, 1) == "tx" && cells(f, 2).starts_with("udp 10.99.0.1:"))
            .filter(|f| cells(f, 2).ends_with(&ours))
            .unwrap_or_else(|| panic!("the traffic's flow is not in the table: {flows:?}"));
        assert_eq!(cells(flow, 5), "stripe", "the default policy: {flow}");
        assert!(
            !cells(flow, 6).is_empty() && cells(flow, 6) != "–",
            "{flow}"
        );
        // Drops: the non-zero reasons, then one row for the others; together every reason
        // the API reports.
        let (status, body) = get(&ns, "/v1/stats", Some(&token));
        assert_eq!(status, 200, "{body}");
        let stats: Value = serde_json::from_str(&body).expect("stats");
        let reasons = stats["drops"].as_object().expect("drops").len();
        let drops = page["drops"].as_array().expect("drop rows");
        let (others, listed) = match drops.last().map(|r| cells(r, 0)) {
            Some(t) if t.contains("other reason") => (
                t.split(' ')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0),
                drops.len() - 1,
            ),
            _ => (0, drops.len()),
        };
        assert!(reasons > 10, "{stats}");
        assert_eq!(listed + others, reasons, "{drops:?}");

        // 3. The screenshot of this page.
        let shot = cdp.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64_decode(shot["data"].as_str().expect("image data"));
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
        let path = out.join("dashboard.png");
        std::fs::write(&path, &png).expect("write the screenshot");
        println!("dashboard screenshot: {}", path.display());

        // 4. A wrong token: the daemon's 401 on the page, the form again, no data.
        cdp.open("about:blank", "blank");
        cdp.open(
            &format!("http://{API}/dashboard#token=not-the-token"),
            "/dashboard",
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        let page = loop {
            let page = observe(&mut cdp);
            if page["state"] == "unauthorized" {
                break page;
            }
            assert!(Instant::now() < deadline, "no 401 shown: {page}");
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(page["login"], true, "{page}");
        assert!(
            page["error"].as_str().is_some_and(|e| e.contains("401")),
            "{page}"
        );
        assert_eq!(page["updates"], 0, "{page}");
        assert_eq!(page["stored"], Value::Null, "a refused token is forgotten");
        assert_eq!(page["charts"]["tx"]["points"], 0, "{page}");

        cdp.close_browser();
        drop(browser);
        let _ = std::fs::remove_dir_all(&profile);
    }
}
