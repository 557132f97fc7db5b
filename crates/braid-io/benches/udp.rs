//! Benchmark of the UDP NIC transport over loopback: one batch of 64 packets of 1400 bytes
//! queued, flushed by one transport and received by another, on one thread (the cost a
//! worker pays per batch, sender and receiver side together), with GSO and GRO on or off.
//!
//! Throughput is reported in packets (elements); Gbit/s = packets/s × 1400 × 8 / 10⁹.
//! Run: `cargo bench -p braid-io --bench udp`.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use braid_io::transport::NicTransport;
use braid_io::udp::{UdpConfig, UdpTransport};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const PACKET_BYTES: usize = 1400;
const BATCH: usize = 64;
const MTU: usize = 1472;

fn free_local() -> SocketAddr {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .expect("bind an ephemeral loopback port")
}

fn pair(gso: bool, gro: bool) -> (UdpTransport, UdpTransport) {
    let (la, lb) = (free_local(), free_local());
    let cfg = |local, peer| UdpConfig {
        gso,
        gro,
        batch: BATCH,
        ..UdpConfig::new(local, peer, MTU)
    };
    let a = UdpTransport::open(cfg(la, lb)).expect("open sender");
    let b = UdpTransport::open(cfg(lb, la)).expect("open receiver");
    (a, b)
}

fn batch_round(c: &mut Criterion) {
    let mut g = c.benchmark_group("udp_loopback_1400B_batch64");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.measurement_time(Duration::from_secs(4));
    g.warm_up_time(Duration::from_secs(1));
    let packet = vec![0xa5u8; PACKET_BYTES];
    for (gso, gro) in [(true, true), (false, false), (true, false), (false, true)] {
        let (mut a, mut b) = pair(gso, gro);
        let mut rx = b.rx_batch();
        let name = format!(
            "gso_{}_gro_{}",
            if gso { "on" } else { "off" },
            if gro { "on" } else { "off" }
        );
        g.bench_function(name, |bench| {
            bench.iter(|| {
                for _ in 0..BATCH {
                    a.queue(black_box(&packet)).expect("room");
                }
                a.flush().expect("flush");
                let mut got = 0;
                // Loopback delivers within the send call; the bound only guards a stall.
                for _ in 0..100_000 {
                    got += b.recv_batch(&mut rx).expect("recv");
                    if got >= BATCH {
                        break;
                    }
                }
                assert_eq!(got, BATCH, "every packet arrives");
                black_box(rx.len())
            });
        });
        assert_eq!(a.stats().offload_disabled, 0, "no offload refused");
        assert_eq!(b.stats().rx_drop_truncated + b.stats().rx_drop_foreign, 0);
    }
    g.finish();
}

criterion_group!(benches, batch_round);
criterion_main!(benches);
