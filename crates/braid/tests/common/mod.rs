//! Fixtures and helpers shared by the root integration tests (tests/tunnels.rs, reload.rs,
//! counters.rs, e2e.rs): running commands, entering a network namespace, stopping children,
//! the two-namespace + veth fixture [`Net`] with a braid daemon in namespace a, the kernel
//! VXLAN peer in namespace b, byte-exact UDP exchanges, and the `braid testbed` guard
//! [`Testbed`]. Each test file says `mod common;`.
//!
//! It owns no test and no assertion on what braid does: the tests say what they check, and
//! extend [`Net`] and [`Testbed`] with their own methods where only one of them needs one.
//! Every wait here is bounded, and both fixtures remove what they made on drop, also when the
//! test fails.

// Each test binary compiles this module and uses a part of it.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;

pub(crate) const BRAID: &str = env!("CARGO_BIN_EXE_braid");
/// The inner MAC braid uses by default (config/tunnels.rs).
pub(crate) const BRAID_MAC: &str = "02:62:72:61:69:64";
/// The MAC of the kernel's `vxlan0` in namespace b ([`Net::kernel_vxlan`]).
pub(crate) const VXLAN0_MAC: &str = "02:00:00:00:00:0b";

static SERIAL: Mutex<()> = Mutex::new(());

/// One test of this binary at a time: each runs daemons (and captures) on a 2-core machine.
/// A test that failed while holding it does not stop the others.
pub(crate) fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Fails the test with `message` (what it needs root for, how CI runs it) unless it runs as
/// root.
pub(crate) fn require_root(message: &str) {
    assert!(rustix::process::geteuid().is_root(), "{message}");
}

/// Fails the test unless `program --version` runs; `install` is its Debian package.
pub(crate) fn require_tool(program: &str, install: &str) {
    let found = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "{program} is needed: apt-get install {install} (bash .ci/run does)"
    );
}

pub(crate) fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

/// Run a command and fail the test with its output if it fails.
pub(crate) fn ok(program: &str, args: &[&str]) -> String {
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

/// This package's `braid` with `args`, to completion.
pub(crate) fn braid(args: &[&str]) -> Output {
    Command::new(BRAID).args(args).output().expect("run braid")
}

/// SIGTERM, then SIGKILL after 3 s.
pub(crate) fn stop(child: &mut Child) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Run `f` on a thread inside network namespace `ns` (setns affects only that thread).
pub(crate) fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    use std::os::fd::AsFd;
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(format!("/run/netns/{ns}")).expect("netns file");
            rustix::thread::move_into_link_name_space(
                file.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("setns");
            f()
        })
        .join()
        .expect("netns thread")
    })
}

/// A UDP socket bound to `addr` inside namespace `ns`, with a 200 ms read timeout (made on a
/// thread that entered it; the socket stays in that namespace).
pub(crate) fn udp_in(ns: &str, addr: &str) -> UdpSocket {
    let addr: SocketAddr = addr.parse().expect("address");
    in_netns(ns, || {
        let socket = UdpSocket::bind(addr).expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        socket
    })
}

/// Datagram `i`: 1 to 1300 bytes of a pattern that depends on `i` and `salt`.
pub(crate) fn datagram(i: usize, salt: u8) -> Vec<u8> {
    let len = 1 + (i * 97) % 1300;
    (0..len)
        .map(|k| (k as u8).wrapping_mul(13) ^ (i as u8) ^ salt)
        .collect()
}

/// Send `n` datagrams ([`datagram`]) from `from` to `to` and receive them on `sink`, in order
/// and byte-exact (a datagram is resent at most 10 times if nothing arrives: the first ones
/// may meet a neighbour lookup), then nothing more (no duplicate). Returns the number of
/// sends, or what went wrong.
pub(crate) fn exchange(
    from: &UdpSocket,
    to: &str,
    sink: &UdpSocket,
    salt: u8,
    n: usize,
) -> Result<usize, String> {
    let to: SocketAddr = to.parse().expect("address");
    let mut buf = vec![0u8; 2048];
    let mut sends = 0;
    for i in 0..n {
        let d = datagram(i, salt);
        let mut got = None;
        for _ in 0..10 {
            from.send_to(&d, to).expect("send");
            sends += 1;
            if let Ok((len, _)) = sink.recv_from(&mut buf) {
                got = Some(buf[..len].to_vec());
                break;
            }
        }
        let got = got.ok_or_else(|| format!("datagram {i} to {to} never arrived"))?;
        if got != d {
            return Err(format!("datagram {i} to {to} changed on the way"));
        }
    }
    if sink.recv_from(&mut buf).is_ok() {
        return Err(format!("an extra datagram arrived for {to}"));
    }
    Ok(sends)
}

/// The stats file's count of drops labelled `label` (0 if absent).
pub(crate) fn drop_count(stats: &Value, label: &str) -> u64 {
    stats["drops"][label].as_u64().unwrap_or(0)
}

/// braid's config in namespace a of a [`Net`]: a TUN vNIC `<dev>v` (10.99.0.1/24, MTU 1400,
/// no offload, then the lines `vnic`), one NIC `link0` on the veth end `dev` (10.77.0.1 →
/// 10.77.0.2; no braid peer answers there, the tunnels use its device), `body` (tunnels,
/// classes, rules) and the stats file `STATS` ([`Net::write_config`] fills in its path).
pub(crate) fn braid_config(dev: &str, vnic: &str, body: &str) -> String {
    format!(
        r#"
[vnic]
name = "{dev}v"
addresses = ["10.99.0.1/24"]
mtu = 1400
offload = false
{vnic}

[peer]
role = "a"

[[nics]]
name = "link0"
device = "{dev}"
local = "10.77.0.1:7700"
peer = "10.77.0.2:7700"
capacity = "1gbit"

{body}

[daemon]
stats_file = "STATS"
busy_poll_us = 0
"#
    )
}

/// The `[[tunnels]]` entry `t0` of a [`braid_config`]: VXLAN with `vni` on `link0` to the
/// kernel's `vxlan0` in namespace b ([`Net::kernel_vxlan`]), whose MAC its inner frames go to.
pub(crate) fn vxlan_t0(vni: u32) -> String {
    format!(
        r#"[[tunnels]]
name = "t0"
kind = "vxlan"
nic = "link0"
local = "10.77.0.1"
remote = "10.77.0.2"
vni = {vni}
inner_dst_mac = "{VXLAN0_MAC}""#
    )
}

/// Two namespaces joined by a veth pair (10.77.0.1/24 in a, 10.77.0.2/24 in b, no IPv6),
/// a braid daemon in a and other children (captures); all of it is removed on drop, and
/// braid's log is printed if the test is failing.
pub(crate) struct Net {
    /// Namespace a (braid's): `braid-<ns_tag>a-<pid>`.
    pub(crate) a: String,
    /// Namespace b (the peer's): `braid-<ns_tag>b-<pid>`.
    pub(crate) b: String,
    /// The veth's end in a: `<dev_tag>a<pid>`.
    pub(crate) dev_a: String,
    /// The veth's end in b: `<dev_tag>b<pid>`.
    pub(crate) dev_b: String,
    /// Config, log, stats file and captures: `$TMPDIR/braid-<ns_tag>-<pid>`.
    dir: PathBuf,
    /// The daemon ([`Net::start_braid`]), stopped first on drop.
    pub(crate) braid: Option<Child>,
    /// Other children (captures), stopped on drop after the daemon.
    pub(crate) children: Vec<Child>,
}

impl Net {
    /// Namespaces `braid-<ns_tag>a-<pid>` and `braid-<ns_tag>b-<pid>`, veth ends
    /// `<dev_tag>a<pid>` and `<dev_tag>b<pid>` (at most 15 bytes: `dev_tag` has at most 3).
    /// The caller has checked it runs as root.
    pub(crate) fn new(ns_tag: &str, dev_tag: &str) -> Self {
        let pid = std::process::id() % 100_000;
        let net = Self {
            a: format!("braid-{ns_tag}a-{pid}"),
            b: format!("braid-{ns_tag}b-{pid}"),
            dev_a: format!("{dev_tag}a{pid}"),
            dev_b: format!("{dev_tag}b{pid}"),
            dir: std::env::temp_dir().join(format!("braid-{ns_tag}-{pid}")),
            braid: None,
            children: Vec::new(),
        };
        // Leftovers of an earlier crashed run with the same pid.
        for ns in [&net.a, &net.b] {
            let _ = run("ip", &["netns", "delete", ns]);
        }
        let _ = std::fs::remove_dir_all(&net.dir);
        std::fs::create_dir_all(&net.dir).expect("test directory");
        for ns in [&net.a, &net.b] {
            ok("ip", &["netns", "add", ns]);
            net.exec(ns, &["ip", "link", "set", "lo", "up"]);
            // No IPv6: router solicitations and MLD reports would be tunnelled too and blur
            // the counts.
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

    /// Run `cmd` in namespace `ns`; its stdout (the test fails if it fails).
    pub(crate) fn exec(&self, ns: &str, cmd: &[&str]) -> String {
        let mut args = vec!["netns", "exec", ns];
        args.extend_from_slice(cmd);
        ok("ip", &args)
    }

    /// `file` in the test's directory.
    pub(crate) fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// braid's log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.path("a.log")).unwrap_or_default()
    }

    /// Write `config` as braid's config file, its `STATS` replaced by the stats file's path.
    pub(crate) fn write_config(&self, config: &str) {
        let stats = self.path("a.stats.json");
        let config = config.replace("STATS", stats.to_str().expect("path"));
        std::fs::write(self.path("a.toml"), config).expect("write config");
    }

    /// Start braid in namespace a with `config` ([`Net::write_config`]) and wait (bounded)
    /// for its stats file.
    pub(crate) fn start_braid(&mut self, config: &str) {
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
            assert!(
                self.braid
                    .as_mut()
                    .is_some_and(|c| c.try_wait().ok().flatten().is_none()),
                "braid exited:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// braid's stats file (written every second), once `done` holds for it, or after 5 s.
    pub(crate) fn stats_when(&self, done: impl Fn(&Value) -> bool) -> Value {
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

    /// In namespace b, the kernel's VXLAN device `vxlan0` (VNI 42, port 4789, remote braid's
    /// 10.77.0.1, on b's veth), as braid_wire::tunnel's "Matching a Linux VXLAN device"
    /// notes say, up, without an address.
    pub(crate) fn kernel_vxlan(&self) {
        let (b, dev_b) = (&self.b, &self.dev_b);
        self.exec(
            b,
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
                dev_b,
            ],
        );
        self.exec(b, &["ip", "link", "set", "vxlan0", "address", VXLAN0_MAC]);
        self.exec(b, &["ip", "link", "set", "vxlan0", "up"]);
        // A veth hands packets to the other namespace with their checksums still to be
        // filled in (CHECKSUM_PARTIAL), which a NIC would fill on the wire; braid's socket
        // reads the bytes, so the kernel must fill them before the veth, as a NIC would.
        self.exec(b, &["ethtool", "-K", dev_b, "tx", "off"]);
    }

    /// In namespace b, a permanent neighbour entry on `dev` for braid's vNIC address with
    /// braid's inner MAC (braid answers no ARP).
    pub(crate) fn neighbour_braid(&self, dev: &str) {
        self.exec(
            &self.b,
            &[
                "ip",
                "neigh",
                "add",
                "10.99.0.1",
                "lladdr",
                BRAID_MAC,
                "dev",
                dev,
                "nud",
                "permanent",
            ],
        );
    }

    /// `ip -s -j link show dev` in namespace b: its stats64.
    pub(crate) fn link_stats(&self, dev: &str) -> Value {
        let link: Value =
            serde_json::from_str(&self.exec(&self.b, &["ip", "-s", "-j", "link", "show", dev]))
                .expect("ip -j");
        link[0]["stats64"].clone()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in self.braid.iter_mut().chain(&mut self.children) {
            stop(c);
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

/// A testbed made by `braid testbed up`, which `down`s itself when dropped.
pub(crate) struct Testbed {
    /// The testbed's name: its namespaces are `<name>-a` and `<name>-b`.
    pub(crate) name: String,
}

impl Testbed {
    /// `braid testbed up --name <name> <args>`, after a `down` of an earlier crashed run's
    /// leftovers. The caller has checked it runs as root.
    pub(crate) fn up(name: String, args: &[&str]) -> Self {
        let tb = Self { name };
        let _ = braid(&["testbed", "down", "--name", &tb.name]);
        let mut all = vec!["testbed", "up", "--name", tb.name.as_str()];
        all.extend_from_slice(args);
        let out = braid(&all);
        assert!(
            out.status.success(),
            "testbed up failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        tb
    }

    /// The namespace of side `side` (`'a'` or `'b'`).
    pub(crate) fn ns(&self, side: char) -> String {
        format!("{}-{side}", self.name)
    }

    /// The testbed's directory: configs, logs, pid and stats files.
    pub(crate) fn dir(&self) -> PathBuf {
        Path::new("/run/braid-testbed").join(&self.name)
    }

    /// Side `side`'s `<side>.<ext>` file in [`Testbed::dir`].
    pub(crate) fn file(&self, side: char, ext: &str) -> PathBuf {
        self.dir().join(format!("{side}.{ext}"))
    }

    /// Side `side`'s daemon log so far.
    pub(crate) fn log(&self, side: char) -> String {
        std::fs::read_to_string(self.file(side, "log")).unwrap_or_default()
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
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

/// The testbed's API (side a's `[api]`), as the root tests reach it from inside side a's
/// namespace.
pub(crate) const TESTBED_API: &str = "127.0.0.1:7780";

/// One HTTP/1.1 request to the testbed's API from inside namespace `ns`, with `token` as a
/// bearer token if given and `body` as a JSON body if not empty: the status code and the
/// body, or why there are none (no connection, no status line).
pub(crate) fn api_request(
    ns: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let text = in_netns(ns, || -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect(TESTBED_API)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let content = if body.is_empty() {
            String::new()
        } else {
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            )
        };
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: braid\r\nConnection: close\r\n{auth}{content}\r\n{body}"
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .map_err(|e| format!("{method} {path}: {e}"))?;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{method} {path}: no status line: {text}"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_owned()))
}
