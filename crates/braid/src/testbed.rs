//! `braid testbed up|down|status`: two hosts in one machine, for trying and testing braid.
//!
//! Owns the testbed: two network namespaces `<name>-a` and `<name>-b` joined by N veth pairs
//! (one pair is one NIC, `nic<i>` on both sides, `10.77.<i>.1/24` and `10.77.<i>.2/24`), a TBF
//! qdisc on both ends of each rate-limited pair, a state directory
//! `/run/braid-testbed/<name>/` (pre-shared key, the two daemon configs, logs, pid files and
//! stats), and one `braid run` per namespace. It does not own the daemon itself (`braid run`
//! and its config schema, config.rs) nor the vNIC: braid creates `braid0` (10.99.0.1/24 and
//! 10.99.0.2/24) with netlink when it starts.
//!
//! # Why shelling out is fine here
//! The data path must configure its vNIC by netlink (issue 3), and it does. The testbed is
//! test scaffolding that builds the network a user would otherwise build by hand, and it
//! runs `ip` and `tc` (iproute2) for it, exactly the commands a user would type: that keeps
//! the testbed easy to read and to reproduce by hand, and it needs no async netlink stack or
//! `setns` (unsafe, and this crate forbids unsafe). Namespaces are made the way `ip netns add`
//! makes them, by `ip netns add`, so `ip netns exec` and `ip -n` work on them.
//!
//! # Link rates: the TBF parameters
//! Both ends of a rate-limited pair get `tc qdisc replace dev nic<i> root tbf rate R burst B
//! latency 10ms`, so each direction is shaped. The bucket must hold at least one packet (and
//! veth hands TBF GSO packets up to 64 KiB; TBF segments bigger ones, which costs CPU), and it
//! must be refilled faster than the qdisc watchdog's granularity, or the link runs below its
//! rate. So the burst is one millisecond of traffic, but at least 64 KiB:
//!
//! `burst_bytes = max(rate_bit_per_s / 8 / 1000, 65536)`
//!
//! which gives 64 KiB (5.2 ms of line rate) at 100 Mbit/s, 125 kB at 1 Gbit/s and 1.25 MB at
//! 10 Gbit/s. `latency 10ms` bounds the queue (the kernel sets `limit = rate x latency +
//! burst`): enough for TCP at the testbed's sub-millisecond RTT, small enough that a queue
//! does not hide a link failure for long.
//!
//! # Lifecycle
//! `up` refuses to touch a testbed that exists, builds everything, and on any failure tears
//! down what it built. `down` needs no state: it kills the braid processes named by the pid
//! files (only if their command line still names this testbed's config) and every process
//! left in the two namespaces (SIGTERM, up to 3 s, then SIGKILL), deletes the namespaces
//! (which deletes the veths in them) and the state directory. It works after a crash and
//! when run twice.

use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use clap::Subcommand;

/// Where the testbeds keep their state, one directory per testbed name.
const STATE_ROOT: &str = "/run/braid-testbed";
/// The vNIC that braid creates in each namespace.
const VNIC: &str = "braid0";
/// The UDP port braid uses on every link.
const LINK_PORT: u16 = 7700;
/// How long `up` waits for both vNICs to appear.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long processes get between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);
/// TBF: the bucket holds at least this many bytes (one 64 KiB GSO packet).
const TBF_MIN_BURST_BYTES: u64 = 64 * 1024;
/// TBF: the bucket holds this long of traffic at the link rate, if that is more.
const TBF_BURST_MS: u64 = 1;
/// TBF: the queue holds this long of traffic at the link rate.
const TBF_LATENCY: &str = "10ms";
/// Longest testbed name (the namespaces add `-a`/`-b`).
const MAX_NAME_LEN: usize = 32;

/// Arguments of `braid testbed`.
#[derive(Debug, clap::Args)]
pub(crate) struct TestbedArgs {
    #[command(subcommand)]
    action: Action,
    /// Testbed name: the namespaces are `<name>-a` and `<name>-b`, the state is in
    /// `/run/braid-testbed/<name>/`. Must start with `braid`; letters, digits, `-` and `_`.
    #[arg(long, global = true, default_value = "braid", value_parser = parse_name)]
    name: String,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Build the two namespaces and the links, and start braid in each (root).
    Up(UpArgs),
    /// Stop braid and remove the namespaces and the state; safe to repeat, works after a crash.
    Down,
    /// Show the namespaces, links, rates, braid processes and stats.
    Status,
}

/// The vNIC MTU: as given, or the largest that fits one braid packet on a link.
fn vnic_mtu(args: &UpArgs) -> u32 {
    let overhead = match args.transport {
        LinkTransport::Udp => BRAID_LINK_OVERHEAD,
        LinkTransport::Ethernet => BRAID_ETHERNET_LINK_OVERHEAD,
    };
    args.vnic_mtu
        .unwrap_or_else(|| args.link_mtu.saturating_sub(overhead).max(68))
}

/// The reorder hold floor of the testbed's daemons, ms (the default is 5): see `daemon_config`.
const TESTBED_MIN_HOLD_MS: u32 = 20;

/// IPv4 + UDP (28) and the braid header with authentication (56).
const BRAID_LINK_OVERHEAD: u32 = 28 + braid_wire::BRAID_MAX_OVERHEAD as u32;
/// Raw Ethernet: the braid header with authentication (56) only; the Ethernet header is not
/// part of the link MTU.
const BRAID_ETHERNET_LINK_OVERHEAD: u32 = braid_wire::BRAID_MAX_OVERHEAD as u32;

/// How the testbed's daemons carry braid packets over the links (`--transport`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LinkTransport {
    /// UDP over IPv4, port 7700 (+ vNIC queue) on each link's addresses.
    Udp,
    /// Raw Ethernet frames with braid's EtherType (AF_PACKET) to the peer veth's MAC; one or
    /// two vNIC queues (0x88B5, 0x88B6: one EtherType per worker).
    Ethernet,
}

/// Options of `braid testbed up`.
#[derive(Debug, clap::Args)]
struct UpArgs {
    /// One veth pair (one NIC) per entry, with its rate: `100mbit`, `1gbit`, `500kbit`, or
    /// `none`/`0` for no rate limit.
    #[arg(long, value_delimiter = ',', default_value = "100mbit,200mbit,300mbit", value_parser = parse_rate)]
    links: Vec<LinkRate>,
    /// MTU of the vNIC. It may exceed the links' MTU (braid splits the packets across them);
    /// the default is the largest that fits one braid packet on a link: link MTU − 84 (IPv4
    /// and UDP 28, braid header with authentication 56), 1416 on 1500-byte links; with
    /// `--transport ethernet` link MTU − 56, 1444.
    #[arg(long, value_parser = clap::value_parser!(u32).range(68..=65535))]
    vnic_mtu: Option<u32>,
    /// vNIC queues (multi-queue TUN). Each queue gets its own data-path worker, engine and
    /// UDP port (7700 + queue) on every link. On a 2-core machine that also runs the other
    /// daemon and the traffic, more workers than cores only add contention: the default is 1
    /// (`--transport ethernet` supports 1 or 2).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    queues: u16,
    /// How braid packets cross the links: `udp`, or `ethernet` (raw frames with braid's
    /// EtherType to the peer veth's MAC, read when the links are built).
    #[arg(long, value_enum, default_value = "udp")]
    transport: LinkTransport,
    /// Only authenticate braid packets (AES-GMAC), without encrypting them; by default they
    /// are encrypted and authenticated with AES-256-GCM (faster here too).
    #[arg(long, conflicts_with = "no_auth")]
    mac_only: bool,
    /// No pre-shared key: braid packets are neither authenticated nor encrypted.
    #[arg(long)]
    no_auth: bool,
    /// MTU of the veth links.
    #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u32).range(68..=65535))]
    link_mtu: u32,
    /// Configure every NIC with `capacity = "auto"`: braid measures each link's rate (from
    /// the veth's 10 Gbit/s on) instead of being told the TBF rate.
    #[arg(long)]
    auto_capacity: bool,
    /// Let the daemons' workers keep polling for this many µs after a busy turn before they
    /// sleep (`daemon.busy_poll_us`; 0: never). Lower latency, a busier CPU.
    #[arg(long, default_value_t = crate::config::DEFAULT_BUSY_POLL_US)]
    busy_poll_us: u32,
    /// Run the daemons' workers in SCHED_FIFO at this priority, 1-99
    /// (`daemon.realtime_priority`): they run as soon as they are woken, ahead of the
    /// applications and the bulk traffic's threads.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=99))]
    realtime_priority: Option<u8>,
    /// With several queues, who reads each link (`daemon.receive`): `per-worker` (every
    /// worker its own socket on every link) or `per-nic` (link i read by worker i mod
    /// queues, which hands the other workers' packets over the inter-NIC channel).
    #[arg(long, value_enum, default_value = "per-worker")]
    receive: ReceiveArg,
    /// Add a latency-critical flow class for these packets: `udp:11111`, `tcp:5201-5210`
    /// (repeatable). Its flows get a copy on every link and go first on each (the strict QoS
    /// class), ahead of bulk traffic queued there.
    #[arg(long, value_name = "PROTO:PORTS", value_parser = parse_class_arg)]
    latency_class: Vec<ClassArg>,
    /// Add the same class (a copy on every link) without priority: its flows share the links
    /// with the bulk traffic in the weighted QoS class. The control for `--latency-class`.
    #[arg(long, value_name = "PROTO:PORTS", value_parser = parse_class_arg)]
    bulk_class: Vec<ClassArg>,
    /// Serve the REST API from side a's daemon (`[api]`, on 127.0.0.1:7780 inside namespace
    /// `<name>-a`): a token is written to `api.token` in the state directory (0600), the
    /// audit log goes to `a.audit.jsonl` and the persisted policies to `a.policies.toml`
    /// there. See docs/api.md.
    #[arg(long)]
    api: bool,
    /// The braid binary to run in the namespaces (default: this one).
    #[arg(long, value_name = "PATH")]
    braid: Option<PathBuf>,
    /// Build the network and write the configs, but don't start braid.
    #[arg(long)]
    no_start: bool,
}

/// A flow class added by `--latency-class` or `--bulk-class`: UDP or TCP to some ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClassArg {
    /// `udp` or `tcp`.
    protocol: &'static str,
    /// `N` or `N-M`.
    ports: String,
}

/// `udp:11111`, `tcp:5201-5210`.
fn parse_class_arg(text: &str) -> Result<ClassArg, String> {
    let bad =
        || format!("{text:?}: must be udp:PORTS or tcp:PORTS, e.g. udp:11111 or tcp:5201-5210");
    let (proto, ports) = text.split_once(':').ok_or_else(bad)?;
    let protocol = match proto {
        "udp" => "udp",
        "tcp" => "tcp",
        _ => return Err(bad()),
    };
    crate::config::parse_port_range(ports).map_err(|_| bad())?;
    Ok(ClassArg {
        protocol,
        ports: ports.trim().to_owned(),
    })
}

/// Runs `braid testbed <action>`.
pub(crate) fn run(args: TestbedArgs) -> Result<()> {
    let tb = Testbed::new(&args.name);
    match args.action {
        Action::Up(up_args) => up(&tb, &up_args),
        Action::Down => down(&tb),
        Action::Status => status(&tb),
    }
}

// ---------------------------------------------------------------------------------------------
// Names, rates, the testbed's layout

/// Checks a testbed name (clap value parser).
fn parse_name(name: &str) -> Result<String, String> {
    if !name.starts_with("braid") {
        return Err(format!(
            "testbed name `{name}` must start with `braid` (e.g. braid-e2e42), so that everything it makes is recognisably braid's"
        ));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "testbed name `{name}` is longer than {MAX_NAME_LEN} characters"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "testbed name `{name}` contains `{c}`: use letters, digits, `-` and `_` only"
        ));
    }
    Ok(name.to_owned())
}

/// The rate of one link, in bit/s; `None` is no rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LinkRate(Option<u64>);

impl LinkRate {
    /// Bits per second, if limited.
    pub(crate) fn bits_per_sec(self) -> Option<u64> {
        self.0
    }

    /// The braid config's `capacity`: the rate (`100mbit`) or `auto` when unlimited.
    fn capacity(self) -> String {
        match self.0 {
            Some(_) => self.to_string(),
            None => "auto".to_owned(),
        }
    }

    /// TBF bucket size in bytes (the module docs give the formula).
    fn tbf_burst_bytes(bits_per_sec: u64) -> u64 {
        (bits_per_sec / 8 * TBF_BURST_MS / 1000).max(TBF_MIN_BURST_BYTES)
    }
}

impl fmt::Display for LinkRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("none"),
            Some(b) if b.is_multiple_of(1_000_000_000) => write!(f, "{}gbit", b / 1_000_000_000),
            Some(b) if b.is_multiple_of(1_000_000) => write!(f, "{}mbit", b / 1_000_000),
            Some(b) => write!(f, "{}kbit", b / 1000),
        }
    }
}

/// Parses a link rate: `<n>kbit`, `<n>mbit`, `<n>gbit` (powers of 1000, as in tc), or
/// `none`/`0` for no limit.
pub(crate) fn parse_rate(text: &str) -> Result<LinkRate, String> {
    let t = text.trim().to_ascii_lowercase();
    if t == "none" || t == "0" {
        return Ok(LinkRate(None));
    }
    let (digits, scale) = if let Some(n) = t.strip_suffix("kbit") {
        (n, 1_000)
    } else if let Some(n) = t.strip_suffix("mbit") {
        (n, 1_000_000)
    } else if let Some(n) = t.strip_suffix("gbit") {
        (n, 1_000_000_000)
    } else {
        return Err(format!(
            "link rate `{text}`: use <n>kbit, <n>mbit or <n>gbit (e.g. 100mbit), or `none` for no limit"
        ));
    };
    let n: u64 = digits.parse().map_err(|_| {
        format!("link rate `{text}`: expected a whole number before the unit, e.g. 100mbit")
    })?;
    if n == 0 {
        return Err(format!(
            "link rate `{text}`: write `none` (or 0) for no rate limit"
        ));
    }
    n.checked_mul(scale)
        .filter(|&b| b <= 1_000_000_000_000)
        .map(|b| LinkRate(Some(b)))
        .ok_or_else(|| format!("link rate `{text}` is above 1000gbit"))
}

/// One side of the testbed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    A,
    B,
}

impl Side {
    const BOTH: [Self; 2] = [Self::A, Self::B];

    fn letter(self) -> &'static str {
        match self {
            Self::A => "a",
            Self::B => "b",
        }
    }

    /// The host part of this side's addresses (`10.77.<i>.x`, `10.99.0.x`).
    fn host(self) -> u8 {
        match self {
            Self::A => 1,
            Self::B => 2,
        }
    }

    fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }
}

/// A testbed's names and paths.
#[derive(Debug, Clone)]
pub(crate) struct Testbed {
    name: String,
    dir: PathBuf,
}

impl Testbed {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            dir: Path::new(STATE_ROOT).join(name),
        }
    }

    /// The namespace of one side: `<name>-a` or `<name>-b`.
    fn ns(&self, side: Side) -> String {
        format!("{}-{}", self.name, side.letter())
    }

    /// A per-side file in the state directory, e.g. `a.toml`, `b.log`.
    fn file(&self, side: Side, ext: &str) -> PathBuf {
        self.dir.join(format!("{}.{ext}", side.letter()))
    }

    fn psk(&self) -> PathBuf {
        self.dir.join("psk")
    }

    /// `--name X` for the commands we print, empty for the default name.
    fn name_flag(&self) -> String {
        if self.name == "braid" {
            String::new()
        } else {
            format!(" --name {}", self.name)
        }
    }
}

/// The device name of link `i` (the same on both sides).
fn nic(i: usize) -> String {
    format!("nic{i}")
}

/// The address of `side` on link `i`.
fn link_addr(i: usize, side: Side) -> String {
    format!("10.77.{i}.{}", side.host())
}

/// The vNIC address of `side`.
fn vnic_addr(side: Side) -> String {
    format!("10.99.0.{}", side.host())
}

// ---------------------------------------------------------------------------------------------
// Reusable pieces: commands, namespaces, processes

/// Fails unless we are root: namespaces, veths and qdiscs need CAP_NET_ADMIN.
pub(crate) fn require_root() -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!("testbed needs root (CAP_NET_ADMIN): run it as root, e.g. `sudo braid testbed ...`");
    }
    Ok(())
}

/// Runs a command to completion; returns its stdout, or an error with the command line and
/// its stderr.
pub(crate) fn run_cmd(program: &str, args: &[&str]) -> Result<String> {
    let line = || format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| {
            format!(
                "run `{}` (is {program} installed? iproute2 provides ip and tc)",
                line()
            )
        })?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            line(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command line whose words are separated by spaces, such as
/// `ip -n braid-a link set nic0 up`. Only for lines built from validated names and numbers
/// (testbed names and device names contain no spaces).
fn run_line(line: &str) -> Result<String> {
    let mut words = line.split_whitespace();
    let program = words
        .next()
        .context("invariant: a command line names a program")?;
    run_cmd(program, &words.collect::<Vec<_>>())
}

/// Whether namespace `ns` exists (as made by `ip netns add`).
pub(crate) fn netns_exists(ns: &str) -> bool {
    Path::new("/run/netns").join(ns).exists()
}

/// Creates namespace `ns` like `ip netns add` (a bind mount under /run/netns).
pub(crate) fn netns_add(ns: &str) -> Result<()> {
    run_cmd("ip", &["netns", "add", ns]).map(drop)
}

/// Deletes namespace `ns` like `ip netns del`; the veths in it go with it.
pub(crate) fn netns_delete(ns: &str) -> Result<()> {
    run_cmd("ip", &["netns", "delete", ns]).map(drop)
}

/// The processes that live in namespace `ns` (empty if it does not exist).
pub(crate) fn netns_pids(ns: &str) -> Result<Vec<i32>> {
    if !netns_exists(ns) {
        return Ok(Vec::new());
    }
    let out = run_cmd("ip", &["netns", "pids", ns])?;
    Ok(out
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}

/// Starts `program args` inside namespace `ns`, detached: in its own process group (so a
/// Ctrl-C at our terminal does not reach it), stdin from /dev/null, stdout and stderr
/// appended to `log`. Writes its pid to `pid_file`. `ip netns exec` execs the program, so
/// the pid is the program's.
pub(crate) fn spawn_in_netns(
    ns: &str,
    program: &Path,
    args: &[&str],
    log: &Path,
    pid_file: &Path,
) -> Result<Child> {
    let log_file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open log {}", log.display()))?;
    let child = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(
            log_file
                .try_clone()
                .context("duplicate the log file handle")?,
        )
        .stderr(log_file)
        .process_group(0)
        .spawn()
        .with_context(|| format!("start {} in namespace {ns}", program.display()))?;
    fs::write(pid_file, format!("{}\n", child.id()))
        .with_context(|| format!("write {}", pid_file.display()))?;
    Ok(child)
}

/// Whether `pid` is a live process (a zombie is not).
fn is_alive(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may contain anything.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

/// The command line of `pid`, arguments joined by spaces.
fn cmdline(pid: i32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .map(String::from_utf8_lossy)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

fn signal(pid: i32, sig: rustix::process::Signal) {
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        // ESRCH (already gone) is what we want; EPERM cannot happen as root.
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// Stops `pids`: SIGTERM, up to `grace` for them to exit, then SIGKILL. Returns the pids
/// that needed SIGKILL.
pub(crate) fn terminate(pids: &[i32], grace: Duration) -> Vec<i32> {
    let own = i32::try_from(std::process::id()).unwrap_or(0);
    let pids: Vec<i32> = pids
        .iter()
        .copied()
        .filter(|&p| p > 1 && p != own)
        .collect();
    for &pid in &pids {
        signal(pid, rustix::process::Signal::TERM);
    }
    let deadline = Instant::now() + grace;
    while pids.iter().any(|&p| is_alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let stubborn: Vec<i32> = pids.into_iter().filter(|&p| is_alive(p)).collect();
    for &pid in &stubborn {
        signal(pid, rustix::process::Signal::KILL);
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    while stubborn.iter().any(|&p| is_alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    stubborn
}

/// The braid pid recorded for `side`, if the pid file exists and that process is still the
/// braid we started (its command line names this testbed's config), so a stale pid file
/// never makes us kill a stranger.
fn recorded_braid_pid(tb: &Testbed, side: Side) -> Option<i32> {
    let pid: i32 = fs::read_to_string(tb.file(side, "pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let config = tb.file(side, "toml");
    let cmd = cmdline(pid)?;
    (is_alive(pid) && cmd.contains(&*config.to_string_lossy())).then_some(pid)
}

/// Removes everything of testbed `tb`: braid processes, every process left in its
/// namespaces, the namespaces (with their veths), the state directory. Returns what it did;
/// empty when there was nothing to remove.
pub(crate) fn teardown(tb: &Testbed) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let mut pids: Vec<i32> = Side::BOTH
        .iter()
        .filter_map(|&s| recorded_braid_pid(tb, s))
        .collect();
    for side in Side::BOTH {
        pids.extend(netns_pids(&tb.ns(side))?);
    }
    pids.sort_unstable();
    pids.dedup();
    if !pids.is_empty() {
        let killed = terminate(&pids, TERM_GRACE);
        let list = pids
            .iter()
            .map(i32::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        done.push(if killed.is_empty() {
            format!("stopped processes {list} (SIGTERM)")
        } else {
            format!("stopped processes {list} (SIGKILL needed for {killed:?})")
        });
    }
    let mut errors = Vec::new();
    for side in Side::BOTH {
        let ns = tb.ns(side);
        if netns_exists(&ns) {
            match netns_delete(&ns) {
                Ok(()) => done.push(format!("deleted namespace {ns}")),
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
    }
    if tb.dir.exists() {
        match fs::remove_dir_all(&tb.dir) {
            Ok(()) => done.push(format!("removed {}", tb.dir.display())),
            Err(e) => errors.push(format!("remove {}: {e}", tb.dir.display())),
        }
    }
    // STATE_ROOT stays (an empty directory on tmpfs): removing it could race with another
    // testbed's `up` that has just created it.
    if !errors.is_empty() {
        bail!(
            "could not remove everything of testbed {}: {}",
            tb.name,
            errors.join("; ")
        );
    }
    Ok(done)
}

// ---------------------------------------------------------------------------------------------
// up

/// Removes a half-built testbed unless disarmed (also on panic).
#[derive(Debug)]
struct CleanupGuard<'a> {
    tb: &'a Testbed,
    children: Vec<Child>,
    armed: bool,
}

impl Drop for CleanupGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        eprintln!("testbed {}: up failed, removing what it made", self.tb.name);
        // SIGTERM first (teardown), so a braid that did start removes its vNIC itself.
        if let Err(e) = teardown(self.tb) {
            eprintln!(
                "error: {e:#}\n  run `braid testbed down{}` to retry",
                self.tb.name_flag()
            );
        }
        for child in &mut self.children {
            if !matches!(child.try_wait(), Ok(Some(_))) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

fn up(tb: &Testbed, args: &UpArgs) -> Result<()> {
    require_root()?;
    if args.links.is_empty() || args.links.len() > braid_core::MAX_NICS {
        bail!(
            "--links: give 1 to {} links, e.g. --links 100mbit,200mbit",
            braid_core::MAX_NICS
        );
    }
    if args.transport == LinkTransport::Ethernet && args.queues > 2 {
        bail!(
            "--transport ethernet: needs --queues 1 or 2 (each worker has an EtherType of its \
             own, and there are two local experimental ones)"
        );
    }
    let braid = match &args.braid {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .context("find the path of this braid binary (pass --braid PATH)")?,
    };
    if !args.no_start && !braid.is_file() {
        bail!("--braid {}: no such file", braid.display());
    }
    let existing: Vec<String> = Side::BOTH
        .iter()
        .map(|&s| tb.ns(s))
        .filter(|ns| netns_exists(ns))
        .chain(tb.dir.exists().then(|| tb.dir.display().to_string()))
        .collect();
    if !existing.is_empty() {
        bail!(
            "testbed {} already exists ({}): run `braid testbed down{}` first",
            tb.name,
            existing.join(", "),
            tb.name_flag()
        );
    }
    let mut guard = CleanupGuard {
        tb,
        children: Vec::new(),
        armed: true,
    };
    build_network(tb, args)?;
    wait_links_up(tb, args.links.len())?;
    write_state(tb, args)?;
    if !args.no_start {
        for side in Side::BOTH {
            let config = tb.file(side, "toml");
            let config = config.to_string_lossy();
            let child = spawn_in_netns(
                &tb.ns(side),
                &braid,
                &["run", "--config", &config],
                &tb.file(side, "log"),
                &tb.file(side, "pid"),
            )?;
            guard.children.push(child);
        }
        wait_for_vnics(tb, &mut guard.children)?;
    }
    guard.armed = false;
    print_usage(tb, args, &braid);
    Ok(())
}

/// Namespaces, veth pairs, addresses, MTU, TBF.
fn build_network(tb: &Testbed, args: &UpArgs) -> Result<()> {
    for side in Side::BOTH {
        let ns = tb.ns(side);
        netns_add(&ns).with_context(|| format!("create namespace {ns}"))?;
        run_line(&format!("ip -n {ns} link set lo up"))?;
    }
    let (ns_a, ns_b) = (tb.ns(Side::A), tb.ns(Side::B));
    let mtu = args.link_mtu;
    for (i, rate) in args.links.iter().enumerate() {
        let dev = nic(i);
        run_line(&format!(
            "ip link add {dev} netns {ns_a} type veth peer name {dev} netns {ns_b}"
        ))
        .with_context(|| format!("create veth pair {dev} between {ns_a} and {ns_b}"))?;
        for side in Side::BOTH {
            let ns = tb.ns(side);
            let addr = link_addr(i, side);
            run_line(&format!("ip -n {ns} addr add {addr}/24 dev {dev}"))?;
            run_line(&format!("ip -n {ns} link set {dev} mtu {mtu} up"))
                .with_context(|| format!("set {dev} in {ns} up with MTU {mtu}"))?;
            if let Some(bits) = rate.bits_per_sec() {
                let burst = LinkRate::tbf_burst_bytes(bits);
                run_line(&format!(
                    "tc -n {ns} qdisc replace dev {dev} root tbf rate {bits}bit burst {burst} \
                     latency {TBF_LATENCY}"
                ))
                .with_context(|| format!("limit {dev} in {ns} to {rate} (TBF)"))?;
            }
        }
    }
    Ok(())
}

/// Waits until every veth is operationally up on both sides: the kernel reports carrier
/// asynchronously (linkwatch), and braid should not start with its NICs seen as down.
fn wait_links_up(tb: &Testbed, links: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut down = Vec::new();
        for side in Side::BOTH {
            let ns = tb.ns(side);
            let out = run_cmd("ip", &["-n", &ns, "-j", "link", "show"])?;
            let list: serde_json::Value = serde_json::from_str(&out)
                .with_context(|| format!("parse `ip -j link show` in {ns}"))?;
            for i in 0..links {
                let dev = nic(i);
                let up =
                    list.as_array().into_iter().flatten().any(|l| {
                        l["ifname"].as_str() == Some(dev.as_str()) && l["operstate"] == "UP"
                    });
                if !up {
                    down.push(format!("{dev} in {ns}"));
                }
            }
        }
        if down.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("links still not up after 5 s: {}", down.join(", "));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The state directory: PSK, configs.
fn write_state(tb: &Testbed, args: &UpArgs) -> Result<()> {
    fs::create_dir_all(STATE_ROOT).with_context(|| format!("create {STATE_ROOT}"))?;
    DirBuilder::new()
        .mode(0o700)
        .create(&tb.dir)
        .with_context(|| format!("create state directory {}", tb.dir.display()))?;
    let key_file = if args.no_auth {
        None
    } else {
        write_psk(&tb.psk())?;
        Some(tb.psk())
    };
    for side in Side::BOTH {
        // Ethernet: each side sends to the MACs of the other side's veth ends.
        let peer_macs = match args.transport {
            LinkTransport::Udp => None,
            LinkTransport::Ethernet => Some(link_macs(&tb.ns(side.other()), args.links.len())?),
        };
        let text = daemon_config(&ConfigParams {
            side,
            links: &args.links,
            peer_macs: peer_macs.as_deref(),
            vnic_mtu: vnic_mtu(args),
            queues: args.queues,
            link_mtu: args.link_mtu,
            key_file: key_file.as_deref(),
            encrypt: !args.mac_only && !args.no_auth,
            stats_file: &tb.file(side, "stats.json"),
            auto_capacity: args.auto_capacity,
            busy_poll_us: args.busy_poll_us,
            realtime_priority: args.realtime_priority,
            per_nic: args.receive == ReceiveArg::PerNic,
            latency_classes: &args.latency_class,
            bulk_classes: &args.bulk_class,
        });
        let mut text = text;
        if args.api && side == Side::A {
            let token = tb.dir.join("api.token");
            braid_control::auth::generate_token_file(&token)
                .with_context(|| format!("write the API token {}", token.display()))?;
            text += &api_config(
                &token,
                &tb.file(side, "audit.jsonl"),
                &tb.file(side, "policies.toml"),
            );
        }
        let path = tb.file(side, "toml");
        fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// The `[api]` section of side a's config with `--api` (the daemon's schema, config.rs):
/// the default address (127.0.0.1:7780 in the namespace) and the files in the state
/// directory.
fn api_config(token_file: &Path, audit_log: &Path, policies_file: &Path) -> String {
    format!(
        "\n[api]\ntoken_file = {}\naudit_log = {}\npolicies_file = {}\n",
        toml_str(&token_file.to_string_lossy()),
        toml_str(&audit_log.to_string_lossy()),
        toml_str(&policies_file.to_string_lossy()),
    )
}

/// The MACs of `nic0..nic<links>` in namespace `ns` (`ip -j link show`).
fn link_macs(ns: &str, links: usize) -> Result<Vec<String>> {
    let out = run_cmd("ip", &["-n", ns, "-j", "link", "show"])?;
    let list: serde_json::Value =
        serde_json::from_str(&out).with_context(|| format!("parse `ip -j link show` in {ns}"))?;
    (0..links)
        .map(|i| {
            let dev = nic(i);
            list.as_array()
                .into_iter()
                .flatten()
                .find(|l| l["ifname"].as_str() == Some(dev.as_str()))
                .and_then(|l| l["address"].as_str())
                .map(str::to_owned)
                .with_context(|| format!("no MAC address for {dev} in {ns}"))
        })
        .collect()
}

/// Writes a fresh 32-byte key as 64 hex characters, readable by root only.
fn write_psk(path: &Path) -> Result<()> {
    let mut key = [0u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .context("read 32 random bytes from /dev/urandom for the pre-shared key")?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create key file {}", path.display()))?;
    writeln!(file, "{hex}").with_context(|| format!("write key file {}", path.display()))?;
    Ok(())
}

/// What one side's daemon config is made of.
#[derive(Debug)]
struct ConfigParams<'a> {
    side: Side,
    links: &'a [LinkRate],
    /// `Some`: raw Ethernet, to the peer's MAC on each link (`peer_macs[i]` for link i);
    /// `None`: UDP.
    peer_macs: Option<&'a [String]>,
    vnic_mtu: u32,
    queues: u16,
    link_mtu: u32,
    key_file: Option<&'a Path>,
    encrypt: bool,
    stats_file: &'a Path,
    /// `capacity = "auto"` on every NIC, rate-limited or not.
    auto_capacity: bool,
    /// `daemon.busy_poll_us`.
    busy_poll_us: u32,
    /// `daemon.realtime_priority`, if any.
    realtime_priority: Option<u8>,
    /// `daemon.receive = "per-nic"` (else left out: per worker).
    per_nic: bool,
    /// Extra duplicated classes, latency-critical (`--latency-class`)...
    latency_classes: &'a [ClassArg],
    /// ... and not (`--bulk-class`), ahead of the default one.
    bulk_classes: &'a [ClassArg],
}

/// `--receive`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ReceiveArg {
    /// Every worker reads its own socket on every link.
    PerWorker,
    /// One worker reads each link and hands packets over the channel.
    PerNic,
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// One side's `braid run` config, following the daemon's schema (config.rs).
fn daemon_config(p: &ConfigParams<'_>) -> String {
    use std::fmt::Write as _;
    let side = p.side;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# braid testbed, side {}: generated by `braid testbed up`",
        side.letter()
    );
    let _ = writeln!(t, "[vnic]");
    let _ = writeln!(t, "name = {}", toml_str(VNIC));
    let _ = writeln!(t, "kind = \"tun\"");
    let _ = writeln!(
        t,
        "addresses = [{}]",
        toml_str(&format!("{}/24", vnic_addr(side)))
    );
    let _ = writeln!(t, "mtu = {}", p.vnic_mtu);
    let _ = writeln!(t, "queues = {}", p.queues);
    let _ = writeln!(t, "offload = true");
    let _ = writeln!(t, "\n[peer]");
    let _ = writeln!(t, "role = {}", toml_str(side.letter()));
    if let Some(key) = p.key_file {
        let _ = writeln!(t, "key_file = {}", toml_str(&key.to_string_lossy()));
    }
    let _ = writeln!(t, "encrypt = {}", p.encrypt);
    for (i, rate) in p.links.iter().enumerate() {
        let _ = writeln!(t, "\n[[nics]]");
        let _ = writeln!(t, "name = {}", toml_str(&format!("link{i}")));
        let _ = writeln!(t, "device = {}", toml_str(&nic(i)));
        match p.peer_macs.and_then(|macs| macs.get(i)) {
            Some(mac) => {
                let _ = writeln!(t, "transport = \"ethernet\"");
                let _ = writeln!(t, "peer_mac = {}", toml_str(mac));
            }
            None => {
                let _ = writeln!(t, "transport = \"udp\"");
                let local = format!("{}:{LINK_PORT}", link_addr(i, side));
                let peer = format!("{}:{LINK_PORT}", link_addr(i, side.other()));
                let _ = writeln!(t, "local = {}", toml_str(&local));
                let _ = writeln!(t, "peer = {}", toml_str(&peer));
            }
        }
        let capacity = if p.auto_capacity {
            "auto".to_owned()
        } else {
            rate.capacity()
        };
        let _ = writeln!(t, "capacity = {}", toml_str(&capacity));
        let _ = writeln!(t, "mtu = {}", p.link_mtu);
    }
    let extra = p
        .latency_classes
        .iter()
        .map(|c| ("latency", c, true))
        .chain(p.bulk_classes.iter().map(|c| ("bulk", c, false)));
    for (i, (kind, c, latency_critical)) in extra.enumerate() {
        let _ = writeln!(t, "\n[[classes]]");
        let _ = writeln!(t, "name = \"{kind}-{i}\"");
        let _ = writeln!(t, "protocol = \"{}\"", c.protocol);
        let _ = writeln!(t, "dst_ports = {}", toml_str(&c.ports));
        let _ = writeln!(t, "policy = \"duplicate\"");
        let _ = writeln!(t, "latency_critical = {latency_critical}");
    }
    let _ = writeln!(t, "\n[[classes]]");
    let _ = writeln!(t, "name = \"latency-critical\"");
    let _ = writeln!(t, "protocol = \"udp\"");
    let _ = writeln!(t, "dst_ports = \"5000-5001\"");
    let _ = writeln!(t, "policy = \"duplicate\"");
    let _ = writeln!(t, "latency_critical = true");
    let _ = writeln!(t, "\n[policy]");
    let _ = writeln!(t, "default = \"stripe\"");
    // Both daemons and the traffic tools share this machine's cores: a worker preempted
    // between two links' sends delays one link's packets by milliseconds, which the links'
    // probes never see. The floor covers that; on a host of its own braid needs less.
    let _ = writeln!(
        t,
        "\n# Both braid daemons and the traffic share this host's cores; see docs/config.md."
    );
    let _ = writeln!(t, "[reorder]");
    let _ = writeln!(t, "min_hold_ms = {TESTBED_MIN_HOLD_MS}");
    let _ = writeln!(t, "\n[daemon]");
    let _ = writeln!(
        t,
        "stats_file = {}",
        toml_str(&p.stats_file.to_string_lossy())
    );
    let _ = writeln!(t, "busy_poll_us = {}", p.busy_poll_us);
    if let Some(prio) = p.realtime_priority {
        let _ = writeln!(t, "realtime_priority = {prio}");
    }
    if p.per_nic {
        let _ = writeln!(t, "receive = \"per-nic\"");
    }
    t
}

/// Waits until `braid0` exists in both namespaces; fails with the log's tail if a braid
/// exits or the vNIC does not appear within START_TIMEOUT.
fn wait_for_vnics(tb: &Testbed, children: &mut [Child]) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut ready = [false; 2];
    loop {
        for (k, side) in Side::BOTH.into_iter().enumerate() {
            if ready[k] {
                continue;
            }
            let ns = tb.ns(side);
            ready[k] = run_cmd("ip", &["-n", &ns, "link", "show", VNIC]).is_ok();
            if !ready[k]
                && let Some(status) = children[k].try_wait().context("check on braid")?
            {
                let log = tb.file(side, "log");
                bail!(
                    "braid in {ns} exited ({status}) before {VNIC} appeared; the end of {}:\n{}",
                    log.display(),
                    log_tail(&log, 20)
                );
            }
        }
        if ready.iter().all(|&r| r) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let side = if ready[0] { Side::B } else { Side::A };
            let log = tb.file(side, "log");
            bail!(
                "{VNIC} did not appear in {} within {} s; the end of {}:\n{}",
                tb.ns(side),
                START_TIMEOUT.as_secs(),
                log.display(),
                log_tail(&log, 20)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last `lines` lines of a log file (or why it could not be read).
fn log_tail(path: &Path, lines: usize) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let tail = all[all.len().saturating_sub(lines)..].join("\n");
            if tail.is_empty() {
                "(empty)".to_owned()
            } else {
                tail
            }
        }
        Err(e) => format!("(cannot read: {e})"),
    }
}

/// Says what was built and how to use it. `braid` is the daemon binary; the traffic and
/// testbed commands name this binary (they differ when `--braid` points elsewhere).
fn print_usage(tb: &Testbed, args: &UpArgs, braid: &Path) {
    let (a, b) = (tb.ns(Side::A), tb.ns(Side::B));
    let daemon = braid.display();
    let me = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("braid"));
    let braid = me.display();
    let flag = tb.name_flag();
    println!("testbed {} is up: namespaces {a} and {b}", tb.name);
    for (i, rate) in args.links.iter().enumerate() {
        println!(
            "  link{i}: {} {} <-> {} {}, rate {rate}, MTU {}",
            nic(i),
            link_addr(i, Side::A),
            link_addr(i, Side::B),
            nic(i),
            args.link_mtu
        );
    }
    if args.transport == LinkTransport::Ethernet {
        println!(
            "  transport: raw Ethernet, EtherType {:#06x}, to the peer veth's MAC on each link",
            braid_io::packet::BRAID_ETHERTYPE
        );
    }
    println!("  state, configs and logs: {}", tb.dir.display());
    if args.no_start {
        println!("braid was not started (--no-start); to start it by hand:");
        for side in Side::BOTH {
            println!(
                "  ip netns exec {} {daemon} run --config {}",
                tb.ns(side),
                tb.file(side, "toml").display()
            );
        }
        println!("try a link directly:");
        println!("  ip netns exec {a} ping {}", link_addr(0, Side::B));
        println!("  ip netns exec {b} {braid} traffic tcp-server --listen 0.0.0.0:5201 --once &");
        println!(
            "  ip netns exec {a} {braid} traffic tcp-client --connect {}:5201 --bytes 100M",
            link_addr(0, Side::B)
        );
    } else {
        println!(
            "  vNIC {VNIC}: {} in {a}, {} in {b}, MTU {}",
            vnic_addr(Side::A),
            vnic_addr(Side::B),
            vnic_mtu(args)
        );
        println!("try:");
        println!("  ip netns exec {a} ping {}", vnic_addr(Side::B));
        println!("  ip netns exec {b} iperf3 -s -D");
        println!("  ip netns exec {a} iperf3 -c {}", vnic_addr(Side::B));
        println!(
            "  ip netns exec {b} {braid} traffic tcp-server --listen 0.0.0.0:5201 --once --seed 1 &"
        );
        println!(
            "  ip netns exec {a} {braid} traffic tcp-client --connect {}:5201 --bytes 200M --seed 1",
            vnic_addr(Side::B)
        );
    }
    if args.api && !args.no_start {
        let token = tb.dir.join("api.token");
        println!("the REST API (docs/api.md), in {a}:");
        println!(
            "  ip netns exec {a} curl -s -H \"Authorization: Bearer $(cat {})\" \
             http://127.0.0.1:{}/v1/nics",
            token.display(),
            braid_control::DEFAULT_PORT
        );
        println!(
            "  ip netns exec {a} {braid} ctl --token-file {} stats",
            token.display()
        );
        println!(
            "  the dashboard, http://127.0.0.1:{}/dashboard#token=..., from a browser in {a} \
             (docs/api.md, \"Dashboard\")",
            braid_control::DEFAULT_PORT
        );
    }
    println!("look and clean up:");
    println!("  {braid} testbed status{flag}");
    println!("  {braid} testbed down{flag}");
}

// ---------------------------------------------------------------------------------------------
// down, status

fn down(tb: &Testbed) -> Result<()> {
    require_root()?;
    let done = teardown(tb)?;
    if done.is_empty() {
        println!("testbed {}: nothing to remove", tb.name);
    } else {
        for line in done {
            println!("testbed {}: {line}", tb.name);
        }
    }
    Ok(())
}

fn status(tb: &Testbed) -> Result<()> {
    require_root()?;
    let any_ns = Side::BOTH.iter().any(|&s| netns_exists(&tb.ns(s)));
    if !any_ns && !tb.dir.exists() {
        println!(
            "testbed {}: not up (no namespaces, no {})",
            tb.name,
            tb.dir.display()
        );
        return Ok(());
    }
    println!("testbed {} (state in {})", tb.name, tb.dir.display());
    for side in Side::BOTH {
        let ns = tb.ns(side);
        if !netns_exists(&ns) {
            println!("namespace {ns}: missing");
            continue;
        }
        println!("namespace {ns}:");
        for line in link_lines(&ns)? {
            println!("  {line}");
        }
        let pid_file = tb.file(side, "pid");
        match (recorded_braid_pid(tb, side), pid_file.exists()) {
            (Some(pid), _) => println!("  braid: running, pid {pid}"),
            (None, true) => println!(
                "  braid: NOT running (see {})",
                tb.file(side, "log").display()
            ),
            (None, false) => println!("  braid: not started"),
        }
        let others = netns_pids(&ns)?.len();
        println!("  processes in the namespace: {others}");
        let stats = tb.file(side, "stats.json");
        if stats.exists() {
            println!("  stats ({}):", stats.display());
            for line in summarise_stats(&stats) {
                println!("    {line}");
            }
        }
    }
    Ok(())
}

/// One line per interface in `ns` (except lo): name, state, addresses, MTU, TBF rate.
fn link_lines(ns: &str) -> Result<Vec<String>> {
    let out = run_cmd("ip", &["-n", ns, "-j", "addr", "show"])?;
    let links: serde_json::Value =
        serde_json::from_str(&out).with_context(|| format!("parse `ip -j addr` in {ns}"))?;
    let mut lines = Vec::new();
    for link in links.as_array().into_iter().flatten() {
        let name = link["ifname"].as_str().unwrap_or("?");
        if name == "lo" {
            continue;
        }
        let state = link["operstate"].as_str().unwrap_or("?");
        let mtu = &link["mtu"];
        let addrs: Vec<String> = link["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["family"] == "inet")
            .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or("?"), a["prefixlen"]))
            .collect();
        let qdisc = run_cmd("tc", &["-n", ns, "qdisc", "show", "dev", name]).unwrap_or_default();
        let tbf = qdisc
            .lines()
            .find(|l| l.starts_with("qdisc tbf"))
            .and_then(|l| l.split_once(" rate "))
            .map_or_else(
                || "no rate limit".to_owned(),
                |(_, rest)| format!("tbf rate {rest}"),
            );
        lines.push(format!(
            "{name:<8} {state:<5} {:<16} mtu {mtu:<5} {tbf}",
            addrs.join(",")
        ));
    }
    Ok(lines)
}

/// A short summary of a stats file: its age and its non-zero leaves as `path = value`
/// (the daemon defines the format; this reads any JSON).
fn summarise_stats(path: &Path) -> Vec<String> {
    const MAX_LINES: usize = 40;
    let mut out = Vec::new();
    if let Ok(age) = fs::metadata(path)
        .and_then(|m| m.modified())
        .map(|t| SystemTime::now().duration_since(t).unwrap_or_default())
    {
        out.push(format!("written {:.1} s ago", age.as_secs_f64()));
    }
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            out.push(format!("cannot read: {e}"));
            return out;
        }
    };
    let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
        out.push("not JSON; first lines:".to_owned());
        out.extend(text.lines().take(10).map(str::to_owned));
        return out;
    };
    let mut leaves = Vec::new();
    flatten_json("", &value, &mut leaves);
    let total = leaves.len();
    out.extend(leaves.into_iter().take(MAX_LINES));
    if total > MAX_LINES {
        out.push(format!("... and {} more", total - MAX_LINES));
    }
    out
}

/// Appends `path = value` for every leaf of `v` that is not zero, false, null or empty.
fn flatten_json(path: &str, v: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    let join = |k: &str| {
        if path.is_empty() {
            k.to_owned()
        } else {
            format!("{path}.{k}")
        }
    };
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                flatten_json(&join(k), child, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                flatten_json(&format!("{path}[{i}]"), child, out);
            }
        }
        Value::Null | Value::Bool(false) => {}
        Value::Number(n) if n.as_f64() == Some(0.0) => {}
        Value::String(s) if s.is_empty() => {}
        leaf => out.push(format!("{path} = {leaf}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("100mbit"), Ok(LinkRate(Some(100_000_000))));
        assert_eq!(parse_rate("100Mbit"), Ok(LinkRate(Some(100_000_000))));
        assert_eq!(parse_rate("1gbit"), Ok(LinkRate(Some(1_000_000_000))));
        assert_eq!(parse_rate("500kbit"), Ok(LinkRate(Some(500_000))));
        assert_eq!(parse_rate("none"), Ok(LinkRate(None)));
        assert_eq!(parse_rate("0"), Ok(LinkRate(None)));
        assert!(parse_rate("100").unwrap_err().contains("use <n>kbit"));
        assert!(parse_rate("100mb").is_err());
        assert!(parse_rate("1.5gbit").unwrap_err().contains("whole number"));
        assert!(parse_rate("0mbit").unwrap_err().contains("none"));
        assert!(parse_rate("2000gbit").unwrap_err().contains("above"));
        assert_eq!(parse_rate("1000mbit").unwrap().to_string(), "1gbit");
        assert_eq!(parse_rate("1500mbit").unwrap().to_string(), "1500mbit");
        assert_eq!(parse_rate("2500kbit").unwrap().to_string(), "2500kbit");
        assert_eq!(parse_rate("none").unwrap().capacity(), "auto");
        assert_eq!(parse_rate("300mbit").unwrap().capacity(), "300mbit");
    }

    #[test]
    fn tbf_burst_formula() {
        assert_eq!(LinkRate::tbf_burst_bytes(100_000_000), 65_536);
        assert_eq!(LinkRate::tbf_burst_bytes(1_000_000_000), 125_000);
        assert_eq!(LinkRate::tbf_burst_bytes(10_000_000_000), 1_250_000);
    }

    #[test]
    fn names() {
        assert_eq!(parse_name("braid"), Ok("braid".to_owned()));
        assert_eq!(parse_name("braid-e2e123"), Ok("braid-e2e123".to_owned()));
        assert!(
            parse_name("test")
                .unwrap_err()
                .contains("must start with `braid`")
        );
        assert!(parse_name("braid/x").unwrap_err().contains("contains `/`"));
        assert!(parse_name("braid x").is_err());
        assert!(parse_name(&format!("braid{}", "x".repeat(40))).is_err());
        let tb = Testbed::new("braid-x");
        assert_eq!(tb.ns(Side::A), "braid-x-a");
        assert_eq!(tb.ns(Side::B), "braid-x-b");
        assert_eq!(
            tb.file(Side::B, "toml"),
            Path::new("/run/braid-testbed/braid-x/b.toml")
        );
        assert_eq!(tb.name_flag(), " --name braid-x");
        assert_eq!(Testbed::new("braid").name_flag(), "");
    }

    fn config(side: Side, key: Option<&Path>, encrypt: bool) -> toml::Table {
        let links = [
            parse_rate("100mbit").unwrap(),
            parse_rate("none").unwrap(),
            parse_rate("1gbit").unwrap(),
        ];
        let text = daemon_config(&ConfigParams {
            side,
            links: &links,
            peer_macs: None,
            vnic_mtu: 9000,
            queues: 2,
            link_mtu: 1500,
            key_file: key,
            encrypt,
            stats_file: Path::new("/run/braid-testbed/braid/a.stats.json"),
            auto_capacity: false,
            busy_poll_us: 0,
            realtime_priority: None,
            per_nic: false,
            latency_classes: &[],
            bulk_classes: &[],
        });
        text.parse::<toml::Table>()
            .unwrap_or_else(|e| panic!("generated config is not TOML: {e}\n{text}"))
    }

    /// `--api`'s section passes the daemon's checks, with the files where `up` puts them.
    #[test]
    fn the_api_section_passes_the_daemons_checks() {
        let tb = Testbed::new("braid-x");
        let mut text = toml::to_string(&config(Side::A, None, false)).expect("TOML");
        text += &api_config(
            &tb.dir.join("api.token"),
            &tb.file(Side::A, "audit.jsonl"),
            &tb.file(Side::A, "policies.toml"),
        );
        let plan = crate::config::Config::parse(&text).expect("the daemon accepts it");
        let api = plan.file.api.expect("an [api] section");
        assert_eq!(api.listen, "127.0.0.1:7780");
        assert_eq!(
            api.policies_file(),
            Path::new("/run/braid-testbed/braid-x/a.policies.toml")
        );
        assert_eq!(
            api.audit_log(),
            Path::new("/run/braid-testbed/braid-x/a.audit.jsonl")
        );
    }

    #[test]
    fn auto_capacity_writes_auto_on_every_nic() {
        let links = [parse_rate("100mbit").unwrap(), parse_rate("none").unwrap()];
        let text = daemon_config(&ConfigParams {
            side: Side::A,
            links: &links,
            peer_macs: None,
            vnic_mtu: 1416,
            queues: 1,
            link_mtu: 1500,
            key_file: None,
            encrypt: false,
            stats_file: Path::new("/run/braid-testbed/braid/a.stats.json"),
            auto_capacity: true,
            busy_poll_us: 0,
            realtime_priority: None,
            per_nic: false,
            latency_classes: &[],
            bulk_classes: &[],
        });
        let c: toml::Table = text.parse().expect("TOML");
        let nics = c["nics"].as_array().unwrap();
        assert_eq!(nics.len(), 2);
        for nic in nics {
            assert_eq!(nic["capacity"].as_str(), Some("auto"), "{text}");
        }
        crate::config::Config::parse(&text).expect("the daemon accepts it");
    }

    #[test]
    fn config_side_a() {
        let c = config(
            Side::A,
            Some(Path::new("/run/braid-testbed/braid/psk")),
            false,
        );
        let vnic = c["vnic"].as_table().unwrap();
        assert_eq!(vnic["name"].as_str(), Some("braid0"));
        assert_eq!(vnic["kind"].as_str(), Some("tun"));
        assert_eq!(
            vnic["addresses"].as_array().unwrap()[0].as_str(),
            Some("10.99.0.1/24")
        );
        assert_eq!(vnic["mtu"].as_integer(), Some(9000));
        assert_eq!(vnic["queues"].as_integer(), Some(2));
        let peer = c["peer"].as_table().unwrap();
        assert_eq!(peer["role"].as_str(), Some("a"));
        assert_eq!(
            peer["key_file"].as_str(),
            Some("/run/braid-testbed/braid/psk")
        );
        assert_eq!(peer["encrypt"].as_bool(), Some(false));
        let nics = c["nics"].as_array().unwrap();
        assert_eq!(nics.len(), 3);
        let expect = [("100mbit", 0), ("auto", 1), ("1gbit", 2)];
        for (nic, (capacity, i)) in nics.iter().zip(expect) {
            assert_eq!(nic["name"].as_str(), Some(&*format!("link{i}")));
            assert_eq!(nic["device"].as_str(), Some(&*format!("nic{i}")));
            assert_eq!(nic["transport"].as_str(), Some("udp"));
            assert_eq!(nic["local"].as_str(), Some(&*format!("10.77.{i}.1:7700")));
            assert_eq!(nic["peer"].as_str(), Some(&*format!("10.77.{i}.2:7700")));
            assert_eq!(nic["capacity"].as_str(), Some(capacity));
            assert_eq!(nic["mtu"].as_integer(), Some(1500));
        }
        let classes = c["classes"].as_array().unwrap();
        assert_eq!(classes.len(), 1);
        assert_eq!(classes[0]["protocol"].as_str(), Some("udp"));
        assert_eq!(classes[0]["dst_ports"].as_str(), Some("5000-5001"));
        assert_eq!(classes[0]["policy"].as_str(), Some("duplicate"));
        assert_eq!(classes[0]["latency_critical"].as_bool(), Some(true));
        assert_eq!(c["policy"]["default"].as_str(), Some("stripe"));
        assert_eq!(
            c["daemon"]["stats_file"].as_str(),
            Some("/run/braid-testbed/braid/a.stats.json")
        );
        assert_eq!(
            c["reorder"]["min_hold_ms"].as_integer(),
            Some(i64::from(TESTBED_MIN_HOLD_MS))
        );
        // Exactly these sections (in any order: toml keeps the order written).
        let mut sections: Vec<&str> = c.keys().map(String::as_str).collect();
        sections.sort_unstable();
        assert_eq!(
            sections,
            [
                "classes", "daemon", "nics", "peer", "policy", "reorder", "vnic"
            ]
        );
    }

    #[test]
    fn config_side_b_without_auth() {
        let c = config(Side::B, None, true);
        assert_eq!(c["vnic"]["addresses"][0].as_str(), Some("10.99.0.2/24"));
        assert_eq!(c["peer"]["role"].as_str(), Some("b"));
        assert!(c["peer"].get("key_file").is_none());
        assert_eq!(c["peer"]["encrypt"].as_bool(), Some(true));
        assert_eq!(c["nics"][2]["local"].as_str(), Some("10.77.2.2:7700"));
        assert_eq!(c["nics"][2]["peer"].as_str(), Some("10.77.2.1:7700"));
    }

    #[test]
    fn configs_pass_the_daemons_checks() {
        let key = Path::new("/run/braid-testbed/braid/psk");
        for side in Side::BOTH {
            for (key_file, encrypt) in [(Some(key), true), (Some(key), false), (None, false)] {
                let text = daemon_config(&ConfigParams {
                    side,
                    peer_macs: None,
                    links: &[
                        LinkRate(Some(100_000_000)),
                        LinkRate(None),
                        LinkRate(Some(2_500_000)),
                    ],
                    vnic_mtu: 9000,
                    queues: 2,
                    link_mtu: 1500,
                    key_file,
                    encrypt,
                    stats_file: Path::new("/run/braid-testbed/braid/a.stats.json"),
                    auto_capacity: false,
                    busy_poll_us: 0,
                    realtime_priority: None,
                    per_nic: encrypt,
                    latency_classes: &[],
                    bulk_classes: &[],
                });
                match crate::config::Config::parse(&text) {
                    Ok(plan) => assert_eq!(
                        plan.file.daemon.receive == crate::config::ReceiveMode::PerNic,
                        encrypt,
                        "--receive per-nic reaches the config\n{text}"
                    ),
                    Err(e) => panic!("braid run rejects the testbed's config: {e:#}\n{text}"),
                }
            }
        }
    }

    #[test]
    fn ethernet_configs_name_the_peer_macs_and_pass_the_daemons_checks() {
        let macs = [
            "02:00:00:00:00:0a".to_owned(),
            "02:00:00:00:00:0b".to_owned(),
        ];
        let links = [LinkRate(Some(100_000_000)), LinkRate(None)];
        let text = daemon_config(&ConfigParams {
            side: Side::A,
            links: &links,
            peer_macs: Some(&macs),
            vnic_mtu: 1444,
            queues: 1,
            link_mtu: 1500,
            key_file: None,
            encrypt: false,
            stats_file: Path::new("/run/braid-testbed/braid/a.stats.json"),
            auto_capacity: false,
            busy_poll_us: 0,
            realtime_priority: None,
            per_nic: false,
            latency_classes: &[],
            bulk_classes: &[],
        });
        let c: toml::Table = text.parse().expect("TOML");
        for (i, mac) in macs.iter().enumerate() {
            let nic = &c["nics"][i];
            assert_eq!(nic["transport"].as_str(), Some("ethernet"));
            assert_eq!(nic["peer_mac"].as_str(), Some(mac.as_str()));
            assert!(nic.get("local").is_none() && nic.get("peer").is_none());
        }
        let plan = crate::config::Config::parse(&text)
            .unwrap_or_else(|e| panic!("braid run rejects it: {e:#}\n{text}"));
        assert_eq!(
            plan.nics[1].endpoint,
            crate::config::Endpoint::Ethernet {
                peer_mac: [2, 0, 0, 0, 0, 0x0b]
            }
        );
        // The braid packet is the whole Ethernet payload; the header counts for pacing.
        assert_eq!(plan.nics[0].transport_overhead(), 0);
        assert_eq!(plan.nics[0].wire_overhead(), 14);
    }

    #[test]
    fn ethernet_defaults_to_one_queue_and_a_larger_vnic_mtu() {
        use clap::Parser;
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            action: Action,
        }
        let up = |args: &[&str]| match Cli::try_parse_from(args).expect("parses").action {
            Action::Up(a) => a,
            other => panic!("{other:?}"),
        };
        let eth = up(&["t", "up", "--transport", "ethernet"]);
        assert_eq!((eth.transport, eth.queues), (LinkTransport::Ethernet, 1));
        assert_eq!(vnic_mtu(&eth), 1500 - 56);
        let udp = up(&["t", "up"]);
        assert_eq!(udp.transport, LinkTransport::Udp);
        assert_eq!(vnic_mtu(&udp), 1500 - 84);
        let explicit = up(&["t", "up", "--transport", "ethernet", "--queues", "3"]);
        assert_eq!(explicit.queues, 3, "refused by `up` with a message");
    }

    /// `--latency-class` and `--bulk-class` add duplicated classes ahead of the default
    /// one, latency-critical or not, which the daemon puts in the strict or the weighted QoS
    /// class.
    #[test]
    fn latency_and_bulk_classes_reach_the_config() {
        use clap::Parser;
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            action: Action,
        }
        let Action::Up(args) = Cli::try_parse_from([
            "t",
            "up",
            "--latency-class",
            "udp:11111",
            "--bulk-class",
            "tcp:5201-5210",
        ])
        .expect("parses")
        .action
        else {
            panic!("not up")
        };
        assert_eq!(
            args.latency_class,
            [ClassArg {
                protocol: "udp",
                ports: "11111".into()
            }]
        );
        for bad in ["udp", "icmp:1", "udp:70000", "tcp:9-1"] {
            assert!(parse_class_arg(bad).is_err(), "{bad}");
        }
        let text = daemon_config(&ConfigParams {
            side: Side::A,
            links: &[LinkRate(Some(100_000_000))],
            peer_macs: None,
            vnic_mtu: 1416,
            queues: 1,
            link_mtu: 1500,
            key_file: None,
            encrypt: false,
            stats_file: Path::new("/run/braid-testbed/braid/a.stats.json"),
            auto_capacity: false,
            busy_poll_us: 0,
            realtime_priority: None,
            per_nic: false,
            latency_classes: &args.latency_class,
            bulk_classes: &args.bulk_class,
        });
        let plan = crate::config::Config::parse(&text)
            .unwrap_or_else(|e| panic!("braid run rejects it: {e:#}\n{text}"));
        let c = &plan.classes;
        assert_eq!(c.len(), 3, "{text}");
        assert_eq!(c[0].name, "latency-0");
        assert_eq!(c[0].matcher.protocol, Some(17));
        assert_eq!(c[0].matcher.dst_ports, Some((11111, 11111)));
        assert!(c[0].latency_critical);
        assert_eq!(c[1].name, "bulk-1");
        assert_eq!(c[1].matcher.protocol, Some(6));
        assert_eq!(c[1].matcher.dst_ports, Some((5201, 5210)));
        assert!(!c[1].latency_critical);
        for class in &c[..2] {
            assert_eq!(class.policy, braid_core::engine::ClassPolicy::Duplicate);
        }
        assert_eq!(c[2].name, "latency-critical");
    }

    #[test]
    fn stats_summary_keeps_non_zero_leaves() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"nics":[{"name":"link0","tx_packets":5,"rx_packets":0}],"up":true,"down":false,"x":null}"#,
        )
        .unwrap();
        let mut out = Vec::new();
        flatten_json("", &v, &mut out);
        assert_eq!(
            out,
            [
                "nics[0].name = \"link0\"",
                "nics[0].tx_packets = 5",
                "up = true"
            ]
        );
    }

    #[test]
    fn log_tail_takes_the_last_lines() {
        let path = std::env::temp_dir().join(format!("braid-testbed-log-{}", std::process::id()));
        fs::write(&path, "1\n2\n3\n4\n").unwrap();
        assert_eq!(log_tail(&path, 2), "3\n4");
        assert_eq!(log_tail(&path, 10), "1\n2\n3\n4");
        fs::remove_file(&path).unwrap();
        assert!(log_tail(&path, 2).starts_with("(cannot read"));
    }
}
