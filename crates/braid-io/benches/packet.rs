//! Benchmark of the raw Ethernet NIC transport (AF_PACKET) over a veth pair: one batch of
//! 1400-byte braid packets queued and flushed (`sendmmsg`) by one transport and received
//! (`recvmmsg`) by the other, on one thread (the cost a worker pays per batch, sender and
//! receiver side together), for batches of 1, 16 and 64 frames.
//!
//! Needs root: the veth pair lives in a private network namespace `braid-bench-pkt-<pid>`,
//! removed at the end. Without root the bench prints why and does nothing (exit code 0;
//! a test would fail instead, a bench only has nothing to measure).
//!
//! Throughput is reported in packets (elements); Gbit/s = packets/s × 1400 × 8 / 10⁹.
//! Run: `cargo bench -p braid-io --bench packet`.

use std::hint::black_box;
use std::os::fd::AsFd;
use std::process::Command;
use std::time::Duration;

use braid_io::packet::{PacketConfig, PacketTransport};
use braid_io::transport::NicTransport;
use criterion::{Criterion, Throughput};

const PACKET_BYTES: usize = 1400;
const MTU: usize = 1500;

fn ip(args: &[&str]) {
    let ok = Command::new("ip")
        .args(args)
        .status()
        .expect("run ip (iproute2)")
        .success();
    assert!(ok, "ip {}", args.join(" "));
}

/// A namespace with a veth pair `bp0`–`bp1`, both ends up; deleted on drop.
struct Netns(String);

impl Netns {
    fn new() -> Self {
        let ns = Self(format!("braid-bench-pkt-{}", std::process::id()));
        // A leftover of a crashed run with the same pid (usually none: quiet).
        let _ = Command::new("ip")
            .args(["netns", "del", &ns.0])
            .stderr(std::process::Stdio::null())
            .status();
        ip(&["netns", "add", &ns.0]);
        ip(&[
            "-n", &ns.0, "link", "add", "bp0", "type", "veth", "peer", "name", "bp1",
        ]);
        ip(&["-n", &ns.0, "link", "set", "bp0", "up"]);
        ip(&["-n", &ns.0, "link", "set", "bp1", "up"]);
        ns
    }

    fn mac(&self, dev: &str) -> [u8; 6] {
        let out = Command::new("ip")
            .args(["-n", &self.0, "-br", "link", "show", dev])
            .output()
            .expect("run ip");
        let text = String::from_utf8_lossy(&out.stdout);
        let field = text.split_whitespace().nth(2).expect("a MAC");
        let mut mac = [0u8; 6];
        for (m, hex) in mac.iter_mut().zip(field.split(':')) {
            *m = u8::from_str_radix(hex, 16).expect("hex MAC");
        }
        mac
    }

    /// Open a transport on `dev` to `peer`, from a thread inside the namespace (the socket
    /// keeps the namespace it was made in).
    fn open(&self, dev: &str, peer: [u8; 6], batch: usize) -> PacketTransport {
        let path = format!("/run/netns/{}", self.0);
        let cfg = PacketConfig {
            batch,
            ..PacketConfig::new(dev.into(), peer, MTU)
        };
        std::thread::spawn(move || {
            let ns = std::fs::File::open(path).expect("open the namespace");
            rustix::thread::move_into_link_name_space(
                ns.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("setns");
            PacketTransport::open(cfg).expect("open the transport")
        })
        .join()
        .expect("opener thread")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn batch_round(c: &mut Criterion, ns: &Netns) {
    let mut g = c.benchmark_group("packet_veth_1400B");
    g.measurement_time(Duration::from_secs(4));
    g.warm_up_time(Duration::from_secs(1));
    let packet = vec![0xa5u8; PACKET_BYTES];
    let (mac0, mac1) = (ns.mac("bp0"), ns.mac("bp1"));
    for batch in [1usize, 16, 64] {
        let mut a = ns.open("bp0", mac1, batch);
        let mut b = ns.open("bp1", mac0, batch);
        let mut rx = b.rx_batch();
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(format!("batch{batch}"), |bench| {
            bench.iter(|| {
                for _ in 0..batch {
                    a.queue(black_box(&packet)).expect("room");
                }
                a.flush().expect("flush");
                let mut got = 0;
                // veth delivers within the send call (backlog NAPI on this CPU); the bound
                // only guards a stall.
                for _ in 0..100_000 {
                    got += b.recv_batch(&mut rx).expect("recv");
                    if got >= batch {
                        break;
                    }
                }
                assert_eq!(got, batch, "every frame arrives");
                black_box(rx.len())
            });
        });
        let (sa, sb) = (a.stats(), b.stats());
        assert_eq!(sa.tx_errors + sb.rx_drop_foreign + sb.rx_drop_truncated, 0);
        assert_eq!(sa.tx_packets, sb.rx_packets, "nothing lost");
    }
    g.finish();
}

fn main() {
    if !rustix::process::geteuid().is_root() {
        eprintln!(
            "bench packet: SKIPPED, needs root (a veth pair in a network namespace and \
             AF_PACKET sockets); run it as root: cargo bench -p braid-io --bench packet"
        );
        return;
    }
    let ns = Netns::new();
    let mut c = Criterion::default().configure_from_args();
    batch_round(&mut c, &ns);
    c.final_summary();
    drop(ns);
}
