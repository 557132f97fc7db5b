//! `braid traffic`: a small traffic generator and checker for tests and benchmarks.
//!
//! Owns the four traffic modes (TCP server/client, UDP server/client), the deterministic byte
//! stream they exchange, the UDP datagram layout and the JSON reports. It does not own the
//! namespaces it runs in (`braid testbed`) nor any braid data path: it is an ordinary socket
//! application, so that the end-to-end tests measure braid from the outside, the way iperf3
//! would, without depending on iperf3 being installed.
//!
//! # TCP: byte-exact transfers
//! The client connects (retrying while refused, so it may start before the server) and
//! sends `--bytes N` of a pseudo-random stream derived from `--seed` (splitmix64
//! words, little-endian; the same seed always gives the same bytes), half-closes, and waits
//! for the server to close, so its `secs` covers delivery, not just the socket buffer. Both
//! ends print one JSON line, `{"bytes":..,"blake3":"..","secs":..,"mbps":..}`: equal `bytes`
//! and `blake3` on both sides prove the stream arrived whole and in order. Given `--seed`
//! (and `--expect-bytes`), the server regenerates the stream and checks every byte itself,
//! reporting the offset of the first difference.
//!
//! # UDP: loss, duplication, order, latency
//! Each datagram starts with a 32-byte header (all big-endian):
//!
//! | bytes  | field                                                              |
//! |--------|--------------------------------------------------------------------|
//! | 0..4   | magic `BRTR`                                                       |
//! | 4..8   | run id (random per client run; the server locks onto the first)    |
//! | 8..16  | sequence number, 0-based                                           |
//! | 16..24 | send time, ns of `CLOCK_MONOTONIC` (same host: namespaces share it) |
//! | 24..28 | datagrams the client will send in total                            |
//! | 28..32 | datagram length                                                    |
//!
//! followed by a payload derived from the sequence number, which the server checks (a
//! datagram spliced from the wrong fragments is counted `corrupt`). The server reports
//! received, unique, duplicates, out_of_order (arrived after a higher sequence number),
//! lost = max(max_seq + 1, total) - unique, and the one-way latency p50/p99/p99.9/max of the
//! first copy of each datagram.
//!
//! Every mode is bounded: `--timeout` (default 60 s) caps the whole run, counts are capped,
//! and the UDP server stops at `--count`, `--duration` or `--idle`, whichever comes first.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use hdrhistogram::Histogram;
use serde_json::json;

/// Bytes per read/write call on TCP, and the size of one generated stream block.
const IO_CHUNK_BYTES: usize = 256 * 1024;
/// UDP header size; also the smallest datagram the client sends.
const UDP_HEADER_BYTES: usize = 32;
/// UDP magic, the first four bytes of every datagram.
const UDP_MAGIC: [u8; 4] = *b"BRTR";
/// Largest UDP payload over IPv4 (65535 - 20 - 8).
const UDP_MAX_BYTES: usize = 65_507;
/// Sequence numbers the UDP server tracks (a bitmap of 16 MiB); higher ones are `invalid`.
const UDP_MAX_TRACKED_SEQ: u64 = 1 << 27;
/// How often blocked socket calls wake up to look at the deadlines.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Socket buffer asked for on UDP sockets: forced as root (SO_RCVBUFFORCE), otherwise
/// capped by the kernel at `net.core.{r,w}mem_max`.
const UDP_SOCKET_BUFFER_BYTES: usize = 8 << 20;
/// splitmix64's increment (the golden ratio in 64-bit fixed point).
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// Arguments of `braid traffic`.
#[derive(Debug, clap::Args)]
pub(crate) struct TrafficArgs {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Receive TCP streams to EOF and print one JSON line per connection.
    ///
    /// Prints `listening on ADDR` on stderr once bound (useful with port 0). Without
    /// `--once` it serves connections one after another until `--timeout` has passed.
    TcpServer {
        /// Address to listen on, e.g. `0.0.0.0:5201` (port 0 picks a free port).
        #[arg(long, value_name = "ADDR")]
        listen: SocketAddr,
        /// Serve one connection, then exit (non-zero if its check failed).
        #[arg(long)]
        once: bool,
        /// Fail unless exactly this many bytes arrive (accepts `200M`, `1G`).
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        expect_bytes: Option<u64>,
        /// Check every byte against the client's stream for this seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Give up after this long in all (`60`, `60s`, `500ms`).
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Send a deterministic pseudo-random TCP stream and print a JSON line.
    TcpClient {
        /// Server address, e.g. `10.99.0.2:5201`.
        #[arg(long, value_name = "ADDR")]
        connect: SocketAddr,
        /// Bytes to send (accepts `200M`, `1G`; K/M/G are powers of 1024).
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        bytes: u64,
        /// Seed of the stream (the server's `--seed` must match to verify).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Give up after this long in all (`60`, `60s`, `500ms`).
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Receive sequenced UDP datagrams and report loss, duplicates, order and latency.
    ///
    /// Prints `listening on ADDR` on stderr once bound, then one JSON line at the end. Stops
    /// at `--count` unique datagrams, after `--duration`, after `--idle` without traffic, or
    /// at `--timeout`, whichever comes first.
    #[command(group = clap::ArgGroup::new("stop").required(true).multiple(true).args(["duration", "count"]))]
    UdpServer {
        /// Address to listen on, e.g. `0.0.0.0:5000` (port 0 picks a free port).
        #[arg(long, value_name = "ADDR")]
        listen: SocketAddr,
        /// Stop this long after starting (`10s`, `500ms`).
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Stop once this many distinct datagrams have arrived.
        #[arg(long)]
        count: Option<u64>,
        /// Stop when nothing has arrived for this long after the first datagram.
        #[arg(long, value_parser = parse_duration)]
        idle: Option<Duration>,
        /// Give up after this long in all (`60`, `60s`, `500ms`).
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Send sequenced, timestamped UDP datagrams at a fixed rate and print a JSON line.
    UdpClient {
        /// Server address, e.g. `10.99.0.2:5000`.
        #[arg(long, value_name = "ADDR")]
        connect: SocketAddr,
        /// Datagrams to send.
        #[arg(long)]
        count: u64,
        /// Datagrams per second (0: as fast as possible).
        #[arg(long, value_name = "PPS", default_value_t = 1000)]
        rate: u64,
        /// Datagram size in bytes (UDP payload, 32 to 65507; accepts `1K`).
        #[arg(long, value_name = "BYTES", default_value = "64", value_parser = parse_size)]
        size: u64,
        /// Give up after this long in all (`60`, `60s`, `500ms`).
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        timeout: Duration,
    },
}

/// Runs `braid traffic <mode>`.
pub(crate) fn run(args: TrafficArgs) -> Result<()> {
    match args.mode {
        Mode::TcpServer {
            listen,
            once,
            expect_bytes,
            seed,
            timeout,
        } => tcp_server(listen, once, expect_bytes, seed, timeout),
        Mode::TcpClient {
            connect,
            bytes,
            seed,
            timeout,
        } => tcp_client(connect, bytes, seed, timeout),
        Mode::UdpServer {
            listen,
            duration,
            count,
            idle,
            timeout,
        } => udp_server(
            listen,
            UdpStop {
                duration,
                count,
                idle,
                timeout,
            },
        ),
        Mode::UdpClient {
            connect,
            count,
            rate,
            size,
            timeout,
        } => udp_client(connect, count, rate, size, timeout),
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing

/// Parses a byte size: a number with an optional K, M, G or T suffix (powers of 1024, as in
/// iperf3 and dd), optionally followed by `B` or `iB`: `1500`, `64K`, `200M`, `1G`, `1GiB`.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_lowercase() {
                'k' => 10,
                'm' => 20,
                'g' => 30,
                't' => 40,
                _ => {
                    return Err(format!(
                        "size `{text}`: unknown unit `{c}` (use a number of bytes with an optional K, M, G or T suffix, e.g. 200M)"
                    ));
                }
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = digits.parse().map_err(|_| {
        format!(
            "size `{text}`: expected a whole number with an optional K, M, G or T suffix, e.g. 200M"
        )
    })?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size `{text}` is too large"))
}

/// Parses a duration: plain seconds (`60`, `1.5`) or with a unit (`60s`, `500ms`, `2m`).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("duration `{text}`: expected e.g. `60`, `60s`, `500ms` or `2m`"))?;
    Duration::try_from_secs_f64(value * scale)
        .map_err(|_| format!("duration `{text}` must be a non-negative number"))
}

// ---------------------------------------------------------------------------------------------
// The deterministic stream

/// splitmix64's output function (Steele, Lea, Flood 2014): a bijective 64-bit mix.
fn mix64(x: u64) -> u64 {
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Word `index` of the stream for `seed`; the stream is these words, little-endian.
fn stream_word(seed: u64, index: u64) -> u64 {
    mix64(seed.wrapping_add(index.wrapping_add(1).wrapping_mul(GOLDEN)))
}

/// The pseudo-random byte stream of a seed, generated a block at a time; the client sends it
/// and the server checks received bytes against it.
#[derive(Debug)]
struct PatternStream {
    seed: u64,
    next_word: u64,
    block: Vec<u8>,
    block_pos: usize,
}

impl PatternStream {
    fn new(seed: u64) -> Self {
        Self {
            seed,
            next_word: 0,
            block: vec![0; IO_CHUNK_BYTES],
            block_pos: IO_CHUNK_BYTES,
        }
    }

    fn refill(&mut self) {
        for chunk in self.block.chunks_exact_mut(8) {
            chunk.copy_from_slice(&stream_word(self.seed, self.next_word).to_le_bytes());
            self.next_word += 1;
        }
        self.block_pos = 0;
    }

    /// The next `len` bytes of the stream (at most one block).
    fn next_bytes(&mut self, len: usize) -> &[u8] {
        if self.block_pos == self.block.len() {
            self.refill();
        }
        let n = len.min(self.block.len() - self.block_pos);
        let out = &self.block[self.block_pos..self.block_pos + n];
        self.block_pos += n;
        out
    }

    /// Fills `out` with the next bytes of the stream.
    fn fill(&mut self, out: &mut [u8]) {
        let mut done = 0;
        while done < out.len() {
            let next = self.next_bytes(out.len() - done);
            out[done..done + next.len()].copy_from_slice(next);
            done += next.len();
        }
    }

    /// Compares `data` with the next bytes of the stream; returns the index in `data` of the
    /// first byte that differs.
    fn check(&mut self, data: &[u8]) -> Option<usize> {
        let mut done = 0;
        while done < data.len() {
            let expected = self.next_bytes(data.len() - done);
            let got = &data[done..done + expected.len()];
            if got != expected {
                let at = got
                    .iter()
                    .zip(expected)
                    .position(|(a, b)| a != b)
                    .expect("invariant: unequal slices of equal length differ somewhere");
                return Some(done + at);
            }
            done += expected.len();
        }
        None
    }
}

// ---------------------------------------------------------------------------------------------
// TCP

fn mbps(bytes: u64, secs: f64) -> f64 {
    round3(bytes as f64 * 8.0 / secs.max(1e-9) / 1e6)
}

fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Time left until `deadline`, or an error saying what timed out.
fn remaining(deadline: Instant, what: &dyn Fn() -> String) -> Result<Duration> {
    let now = Instant::now();
    if now >= deadline {
        bail!("{} (raise --timeout if the link is slow)", what());
    }
    Ok(deadline - now)
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn tcp_client(addr: SocketAddr, bytes: u64, seed: u64, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut sock = connect_until(addr, deadline)?;
    sock.set_write_timeout(Some(POLL_INTERVAL))?;
    sock.set_read_timeout(Some(POLL_INTERVAL))?;
    let started = Instant::now();
    let mut stream = PatternStream::new(seed);
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; IO_CHUNK_BYTES];
    let mut sent = 0u64;
    while sent < bytes {
        let n = usize::try_from(bytes - sent).map_or(buf.len(), |left| left.min(buf.len()));
        stream.fill(&mut buf[..n]);
        hasher.update(&buf[..n]);
        let mut off = 0;
        while off < n {
            remaining(deadline, &|| {
                format!(
                    "timed out sending to {addr} after {} of {bytes} bytes",
                    sent + off as u64
                )
            })?;
            match sock.write(&buf[off..n]) {
                Ok(0) => bail!(
                    "{addr} stopped accepting data after {} bytes",
                    sent + off as u64
                ),
                Ok(w) => off += w,
                Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "send to {addr} after {} of {bytes} bytes",
                            sent + off as u64
                        )
                    });
                }
            }
        }
        sent += n as u64;
    }
    sock.shutdown(Shutdown::Write)
        .with_context(|| format!("half-close the connection to {addr}"))?;
    // Wait for the server to close: then it has read everything, and `secs` covers delivery.
    let mut scratch = [0u8; 4096];
    loop {
        remaining(deadline, &|| {
            format!("timed out waiting for {addr} to close after sending {bytes} bytes")
        })?;
        match sock.read(&mut scratch) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e).with_context(|| format!("wait for {addr} to close")),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let report = json!({
        "bytes": bytes,
        "blake3": hasher.finalize().to_hex().as_str(),
        "secs": round6(secs),
        "mbps": mbps(bytes, secs),
        "seed": seed,
    });
    println!("{report}");
    Ok(())
}

/// Connects to `addr`, retrying while it refuses (the server may still be starting) until
/// `deadline`.
fn connect_until(addr: SocketAddr, deadline: Instant) -> Result<TcpStream> {
    loop {
        let left = remaining(deadline, &|| {
            format!(
                "timed out connecting to {addr} (is `braid traffic tcp-server` listening there?)"
            )
        })?;
        match TcpStream::connect_timeout(&addr, left) {
            Ok(sock) => return Ok(sock),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                std::thread::sleep(POLL_INTERVAL.min(left));
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("connect to {addr} (is `braid traffic tcp-server` listening there?)")
                });
            }
        }
    }
}

/// What one TCP connection delivered to the server.
#[derive(Debug)]
struct TcpReceived {
    bytes: u64,
    blake3: String,
    secs: f64,
    first_mismatch: Option<u64>,
}

fn tcp_server(
    listen: SocketAddr,
    once: bool,
    expect_bytes: Option<u64>,
    seed: Option<u64>,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let listener = TcpListener::bind(listen)
        .with_context(|| format!("listen on {listen} (is the address local and the port free?)"))?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    eprintln!("listening on {local}");
    let mut served = 0u64;
    loop {
        let (sock, peer) = match accept_until(&listener, deadline)? {
            Some(conn) => conn,
            None if once => bail!(
                "no connection to {local} within {:.1} s (raise --timeout, or check that the client reaches this address)",
                timeout.as_secs_f64()
            ),
            None => {
                eprintln!("served {served} connection(s); --timeout reached");
                return Ok(());
            }
        };
        served += 1;
        let result = receive_stream(sock, peer, seed, deadline).and_then(|rx| {
            let verified = seed.is_some() || expect_bytes.is_some();
            let count_ok = expect_bytes.is_none_or(|n| n == rx.bytes);
            let ok = rx.first_mismatch.is_none() && count_ok;
            let mut report = json!({
                "bytes": rx.bytes,
                "blake3": rx.blake3,
                "secs": round6(rx.secs),
                "mbps": mbps(rx.bytes, rx.secs),
                "peer": peer.to_string(),
            });
            if verified {
                report["ok"] = json!(ok);
                report["first_mismatch"] = json!(rx.first_mismatch);
            }
            println!("{report}");
            if let Some(at) = rx.first_mismatch {
                bail!(
                    "the stream from {peer} differs from seed {} at byte {at}",
                    seed.unwrap_or_default()
                );
            }
            if let Some(n) = expect_bytes.filter(|&n| n != rx.bytes) {
                bail!("received {} bytes from {peer}, expected {n}", rx.bytes);
            }
            Ok(())
        });
        match result {
            Err(e) if once => return Err(e),
            Err(e) => eprintln!("error: {e:#}"),
            Ok(()) if once => return Ok(()),
            Ok(()) => {}
        }
    }
}

/// Waits for a connection until `deadline`; `None` when the deadline passes first.
fn accept_until(
    listener: &TcpListener,
    deadline: Instant,
) -> Result<Option<(TcpStream, SocketAddr)>> {
    loop {
        match listener.accept() {
            Ok(conn) => return Ok(Some(conn)),
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("accept a connection"),
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        let wait = rustix::event::Timespec::try_from((deadline - now).min(POLL_INTERVAL))
            .expect("invariant: a wait of at most 50 ms fits a timespec");
        let mut fds = [rustix::event::PollFd::new(
            listener,
            rustix::event::PollFlags::IN,
        )];
        match rustix::event::poll(&mut fds, Some(&wait)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e).context("wait for a connection"),
        }
    }
}

fn receive_stream(
    mut sock: TcpStream,
    peer: SocketAddr,
    seed: Option<u64>,
    deadline: Instant,
) -> Result<TcpReceived> {
    sock.set_nonblocking(false)?;
    sock.set_read_timeout(Some(POLL_INTERVAL))?;
    let started = Instant::now();
    let mut hasher = blake3::Hasher::new();
    let mut expected = seed.map(PatternStream::new);
    let mut first_mismatch = None;
    let mut buf = vec![0u8; IO_CHUNK_BYTES];
    let mut bytes = 0u64;
    loop {
        remaining(deadline, &|| {
            format!("timed out receiving from {peer} after {bytes} bytes (no EOF yet)")
        })?;
        let n = match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("receive from {peer} after {bytes} bytes"));
            }
        };
        let data = &buf[..n];
        hasher.update(data);
        if first_mismatch.is_none()
            && let Some(stream) = expected.as_mut()
            && let Some(at) = stream.check(data)
        {
            first_mismatch = Some(bytes + at as u64);
            expected = None;
        }
        bytes += n as u64;
    }
    Ok(TcpReceived {
        bytes,
        blake3: hasher.finalize().to_hex().to_string(),
        secs: started.elapsed().as_secs_f64(),
        first_mismatch,
    })
}

// ---------------------------------------------------------------------------------------------
// UDP

/// `CLOCK_MONOTONIC` in ns: the same clock in every network namespace of a host.
fn monotonic_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    // A monotonic clock is never negative.
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// The UDP datagram header (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UdpHeader {
    run: u32,
    seq: u64,
    sent_ns: u64,
    total: u32,
    len: u32,
}

impl UdpHeader {
    fn emit(&self, buf: &mut [u8]) {
        buf[0..4].copy_from_slice(&UDP_MAGIC);
        buf[4..8].copy_from_slice(&self.run.to_be_bytes());
        buf[8..16].copy_from_slice(&self.seq.to_be_bytes());
        buf[16..24].copy_from_slice(&self.sent_ns.to_be_bytes());
        buf[24..28].copy_from_slice(&self.total.to_be_bytes());
        buf[28..32].copy_from_slice(&self.len.to_be_bytes());
    }

    /// Parses the header; `None` if the datagram is not ours (too short, wrong magic).
    fn parse(buf: &[u8]) -> Option<Self> {
        let h = buf.get(..UDP_HEADER_BYTES)?;
        if h[0..4] != UDP_MAGIC {
            return None;
        }
        let u32_at =
            |i: usize| u32::from_be_bytes(h[i..i + 4].try_into().expect("invariant: 4 bytes"));
        let u64_at =
            |i: usize| u64::from_be_bytes(h[i..i + 8].try_into().expect("invariant: 8 bytes"));
        Some(Self {
            run: u32_at(4),
            seq: u64_at(8),
            sent_ns: u64_at(16),
            total: u32_at(24),
            len: u32_at(28),
        })
    }
}

/// Payload byte `i` of datagram `seq`: checked by the server to catch spliced datagrams.
fn fill_payload(seq: u64, payload: &mut [u8]) {
    for (i, chunk) in payload.chunks_mut(8).enumerate() {
        let word = stream_word(seq, i as u64).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

fn payload_ok(seq: u64, payload: &[u8]) -> bool {
    payload.chunks(8).enumerate().all(|(i, chunk)| {
        let word = stream_word(seq, i as u64).to_le_bytes();
        *chunk == word[..chunk.len()]
    })
}

fn udp_client(addr: SocketAddr, count: u64, rate: u64, size: u64, timeout: Duration) -> Result<()> {
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    if !(UDP_HEADER_BYTES..=UDP_MAX_BYTES).contains(&size) {
        bail!(
            "--size {size}: must be {UDP_HEADER_BYTES} to {UDP_MAX_BYTES} bytes (the header alone is {UDP_HEADER_BYTES})"
        );
    }
    if count > UDP_MAX_TRACKED_SEQ {
        bail!("--count {count}: at most {UDP_MAX_TRACKED_SEQ} datagrams per run");
    }
    let total = u32::try_from(count).expect("invariant: count <= 2^27");
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().expect("invariant: literal address")
    } else {
        "[::]:0".parse().expect("invariant: literal address")
    };
    let sock = UdpSocket::bind(bind).context("bind a UDP socket")?;
    sock.connect(addr)
        .with_context(|| format!("connect the UDP socket to {addr}"))?;
    // Best effort: a larger buffer only smooths bursts.
    if rustix::net::sockopt::set_socket_send_buffer_size_force(&sock, UDP_SOCKET_BUFFER_BYTES)
        .is_err()
    {
        let _ = rustix::net::sockopt::set_socket_send_buffer_size(&sock, UDP_SOCKET_BUFFER_BYTES);
    }
    // Distinguishes this run from stray datagrams of earlier runs at the server.
    let run = (monotonic_ns() as u32) ^ std::process::id().rotate_left(16);
    let mut buf = vec![0u8; size];
    let started = Instant::now();
    let deadline = started + timeout;
    let mut sent = 0u64;
    let mut send_errors = 0u64;
    let mut timed_out = false;
    while sent < count {
        let now = Instant::now();
        if now >= deadline {
            timed_out = true;
            break;
        }
        if rate > 0 {
            let due = started + Duration::from_secs_f64(sent as f64 / rate as f64);
            if due > now {
                std::thread::sleep((due - now).min(deadline - now));
                continue;
            }
        }
        let header = UdpHeader {
            run,
            seq: sent,
            sent_ns: monotonic_ns(),
            total,
            len: size as u32,
        };
        header.emit(&mut buf);
        fill_payload(sent, &mut buf[UDP_HEADER_BYTES..]);
        match sock.send(&buf) {
            Ok(_) => {}
            // ICMP port unreachable from an earlier datagram (server not up yet), or a full
            // queue: the datagram is lost, the server's report will show it.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionRefused | ErrorKind::WouldBlock | ErrorKind::Interrupted
                ) || e.raw_os_error() == Some(rustix::io::Errno::NOBUFS.raw_os_error()) =>
            {
                send_errors += 1;
            }
            Err(e) => return Err(e).with_context(|| format!("send datagram {sent} to {addr}")),
        }
        sent += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    let report = json!({
        "sent": sent,
        "send_errors": send_errors,
        "size": size,
        "secs": round6(secs),
        "pps": round3(sent as f64 / secs.max(1e-9)),
        "mbps": mbps(sent * size as u64, secs),
        "timed_out": timed_out,
    });
    println!("{report}");
    if timed_out {
        bail!("timed out after sending {sent} of {count} datagrams (raise --timeout or --rate)");
    }
    Ok(())
}

/// When the UDP server stops.
#[derive(Debug, Clone, Copy)]
struct UdpStop {
    duration: Option<Duration>,
    count: Option<u64>,
    idle: Option<Duration>,
    timeout: Duration,
}

/// What the UDP server saw; the report is built from it.
#[derive(Debug)]
struct UdpStats {
    run: Option<u32>,
    seen: Vec<u64>,
    received: u64,
    unique: u64,
    duplicates: u64,
    out_of_order: u64,
    invalid: u64,
    foreign: u64,
    corrupt: u64,
    bytes: u64,
    max_seq: Option<u64>,
    total: u32,
    latency_ns: Histogram<u64>,
}

impl UdpStats {
    fn new() -> Self {
        Self {
            run: None,
            seen: Vec::new(),
            received: 0,
            unique: 0,
            duplicates: 0,
            out_of_order: 0,
            invalid: 0,
            foreign: 0,
            corrupt: 0,
            bytes: 0,
            max_seq: None,
            total: 0,
            // 1 ns to 1 h with 3 significant digits.
            latency_ns: Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
                .expect("invariant: valid histogram bounds"),
        }
    }

    /// Accounts one datagram received at `now_ns`.
    fn record(&mut self, datagram: &[u8], now_ns: u64) {
        self.received += 1;
        let Some(h) = UdpHeader::parse(datagram) else {
            self.invalid += 1;
            return;
        };
        if h.seq >= UDP_MAX_TRACKED_SEQ {
            self.invalid += 1;
            return;
        }
        match self.run {
            None => self.run = Some(h.run),
            Some(run) if run != h.run => {
                self.foreign += 1;
                return;
            }
            Some(_) => {}
        }
        if usize::try_from(h.len).ok() != Some(datagram.len())
            || !payload_ok(h.seq, &datagram[UDP_HEADER_BYTES..])
        {
            self.corrupt += 1;
            return;
        }
        self.bytes += datagram.len() as u64;
        self.total = self.total.max(h.total);
        let word = usize::try_from(h.seq / 64).expect("invariant: seq < 2^27");
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        let bit = 1u64 << (h.seq % 64);
        if self.seen[word] & bit != 0 {
            self.duplicates += 1;
            return;
        }
        self.seen[word] |= bit;
        self.unique += 1;
        match self.max_seq {
            Some(max) if h.seq < max => self.out_of_order += 1,
            _ => self.max_seq = Some(h.seq),
        }
        let latency = now_ns.saturating_sub(h.sent_ns).max(1);
        self.latency_ns.saturating_record(latency);
    }

    fn lost(&self) -> u64 {
        let expected = self.max_seq.map_or(0, |m| m + 1).max(u64::from(self.total));
        expected.saturating_sub(self.unique)
    }
}

fn udp_server(listen: SocketAddr, stop: UdpStop) -> Result<()> {
    let sock = UdpSocket::bind(listen)
        .with_context(|| format!("bind UDP {listen} (is the address local and the port free?)"))?;
    // Best effort, as in the client: bursts beyond the buffer show up as `lost`.
    if rustix::net::sockopt::set_socket_recv_buffer_size_force(&sock, UDP_SOCKET_BUFFER_BYTES)
        .is_err()
    {
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&sock, UDP_SOCKET_BUFFER_BYTES);
    }
    sock.set_read_timeout(Some(POLL_INTERVAL))?;
    eprintln!("listening on {}", sock.local_addr()?);
    let started = Instant::now();
    let mut stats = UdpStats::new();
    let mut first_rx: Option<Instant> = None;
    let mut last_rx: Option<Instant> = None;
    let mut buf = vec![0u8; UDP_MAX_BYTES + 1];
    let mut timed_out = false;
    loop {
        let now = Instant::now();
        if stop.count.is_some_and(|n| stats.unique >= n)
            || stop.duration.is_some_and(|d| now >= started + d)
            || stop
                .idle
                .zip(last_rx)
                .is_some_and(|(idle, last)| now >= last + idle)
        {
            break;
        }
        if now >= started + stop.timeout {
            timed_out = true;
            break;
        }
        match sock.recv(&mut buf) {
            Ok(n) => {
                let now_ns = monotonic_ns();
                let at = Instant::now();
                first_rx.get_or_insert(at);
                last_rx = Some(at);
                stats.record(&buf[..n], now_ns);
            }
            Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("receive a datagram"),
        }
    }
    let secs = first_rx
        .zip(last_rx)
        .map_or(0.0, |(first, last)| (last - first).as_secs_f64());
    let us = |ns: u64| round3(ns as f64 / 1e3);
    let latency = if stats.unique > 0 {
        json!({
            "p50": us(stats.latency_ns.value_at_quantile(0.5)),
            "p99": us(stats.latency_ns.value_at_quantile(0.99)),
            "p999": us(stats.latency_ns.value_at_quantile(0.999)),
            "max": us(stats.latency_ns.max()),
        })
    } else {
        serde_json::Value::Null
    };
    let report = json!({
        "received": stats.received,
        "unique": stats.unique,
        "duplicates": stats.duplicates,
        "out_of_order": stats.out_of_order,
        "lost": stats.lost(),
        "corrupt": stats.corrupt,
        "invalid": stats.invalid,
        "foreign": stats.foreign,
        "max_seq": stats.max_seq,
        "total": stats.total,
        "bytes": stats.bytes,
        "secs": round6(secs),
        "latency_us": latency,
        "timed_out": timed_out,
    });
    println!("{report}");
    if timed_out && stats.received == 0 {
        return Err(anyhow!(
            "no datagram arrived within {:.1} s (check the client's --connect address and the route)",
            stop.timeout.as_secs_f64()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1500"), Ok(1500));
        assert_eq!(parse_size("64K"), Ok(64 * 1024));
        assert_eq!(parse_size("200M"), Ok(200 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("10MB"), Ok(10 << 20));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert!(parse_size("").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("12X").unwrap_err().contains("unknown unit `X`"));
        assert!(parse_size("-1").is_err());
        assert!(parse_size("1.5G").is_err());
        assert!(
            parse_size("99999999999T")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn stream_is_deterministic_and_chunking_does_not_matter() {
        let mut whole = vec![0u8; IO_CHUNK_BYTES * 2 + 13];
        PatternStream::new(7).fill(&mut whole);
        let mut pieces = PatternStream::new(7);
        let mut got = Vec::new();
        for len in [1usize, 7, 8, 100, IO_CHUNK_BYTES, 1000, IO_CHUNK_BYTES] {
            let mut b = vec![0u8; len];
            pieces.fill(&mut b);
            got.extend_from_slice(&b);
        }
        assert_eq!(&got[..whole.len()], &whole[..]);
        assert_eq!(&whole[..8], &stream_word(7, 0).to_le_bytes());
        let mut other = vec![0u8; 64];
        PatternStream::new(8).fill(&mut other);
        assert_ne!(&other[..], &whole[..64]);
    }

    #[test]
    fn check_finds_the_first_difference() {
        let mut data = vec![0u8; 3 * IO_CHUNK_BYTES];
        PatternStream::new(3).fill(&mut data);
        let mut checker = PatternStream::new(3);
        assert_eq!(checker.check(&data[..1000]), None);
        assert_eq!(checker.check(&data[1000..IO_CHUNK_BYTES + 5]), None);
        data[2 * IO_CHUNK_BYTES + 17] ^= 1;
        assert_eq!(
            checker.check(&data[IO_CHUNK_BYTES + 5..]),
            Some(IO_CHUNK_BYTES + 12)
        );
    }

    fn datagram(run: u32, seq: u64, sent_ns: u64, total: u32, size: usize) -> Vec<u8> {
        let mut buf = vec![0u8; size];
        UdpHeader {
            run,
            seq,
            sent_ns,
            total,
            len: size as u32,
        }
        .emit(&mut buf);
        fill_payload(seq, &mut buf[UDP_HEADER_BYTES..]);
        buf
    }

    #[test]
    fn udp_header_roundtrip() {
        let d = datagram(9, 0x0102_0304_0506, 77, 1000, 100);
        let h = UdpHeader::parse(&d).unwrap();
        assert_eq!(
            h,
            UdpHeader {
                run: 9,
                seq: 0x0102_0304_0506,
                sent_ns: 77,
                total: 1000,
                len: 100
            }
        );
        assert!(UdpHeader::parse(&d[..31]).is_none());
        let mut bad = d.clone();
        bad[0] = b'X';
        assert!(UdpHeader::parse(&bad).is_none());
    }

    #[test]
    fn udp_stats_count_every_outcome() {
        let mut s = UdpStats::new();
        // seq 0, 1, 3, 2 (late), 1 again (duplicate); 4 and 5 never arrive; total 6.
        for (seq, now) in [(0, 1_000), (1, 2_000), (3, 4_000), (2, 9_000), (1, 9_500)] {
            s.record(&datagram(5, seq, 0, 6, 64), now);
        }
        s.record(&datagram(6, 4, 0, 6, 64), 10_000); // another run
        s.record(b"not ours", 10_000);
        let mut spliced = datagram(5, 4, 0, 6, 64);
        spliced[40] ^= 0xff;
        s.record(&spliced, 10_000);
        let mut truncated = datagram(5, 4, 0, 6, 64);
        truncated.truncate(60);
        s.record(&truncated, 10_000);
        assert_eq!(s.received, 9);
        assert_eq!(s.unique, 4);
        assert_eq!(s.duplicates, 1);
        assert_eq!(s.out_of_order, 1);
        assert_eq!(s.foreign, 1);
        assert_eq!(s.invalid, 1);
        assert_eq!(s.corrupt, 2);
        assert_eq!(s.max_seq, Some(3));
        assert_eq!(s.lost(), 2);
        assert_eq!(s.latency_ns.max(), s.latency_ns.highest_equivalent(9_000));
        assert_eq!(s.bytes, 5 * 64);
    }
}
