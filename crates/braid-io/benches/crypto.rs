//! The cost of packet protection, end to end through two engines: `handle_tx` → `poll_transmit`
//! (seal) → `handle_rx` / `handle_rx_mut` (open) → `poll_deliver`, for 64-byte and 1400-byte
//! packets striped over three NICs, with no authentication, the keyed BLAKE3 MAC, AES-256-GCM
//! and ChaCha20-Poly1305. The AEAD rows decrypt in place (`handle_rx_mut`, the daemon's path);
//! one row per size uses `handle_rx`, which first copies the packet into the engine's scratch.
//! A second group measures seal + open alone on one packet (no engine), to separate the
//! cipher's cost from the engine's.
//!
//! Throughput in packets (Elements) of the application's packets; multiply by the size for
//! bytes. NICs are at 400 Gbit/s so pacing never holds a packet back: this is CPU cost.
//!
//! `cargo bench -p braid-io --bench crypto -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Duration;

use braid_core::auth::{AuthConfig, Blake3Mac, PacketProtection, Role};
use braid_core::engine::{Engine, EngineConfig, NicSpec, TxVerdict};
use braid_core::{Instant, NicId};
use braid_io::crypto::{AeadProtection, Cipher, build_engine, build_engine_with};
use criterion::{Criterion, Throughput, criterion_group};

const BATCH: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Protection {
    None,
    Blake3,
    Gmac,
    Aead(Cipher),
}

fn config(protection: Protection, role: Role) -> EngineConfig {
    let nics = (0..3)
        .map(|i| NicSpec::udp_ipv4(NicId(i), &format!("link{i}"), 400_000_000_000, 1500))
        .collect();
    let mut cfg = EngineConfig::new(nics);
    if protection != Protection::None {
        cfg.auth = Some(AuthConfig::new([9; 32], role));
    }
    cfg
}

fn engine(protection: Protection, role: Role) -> Engine {
    if protection == Protection::Gmac {
        let gmac = braid_io::crypto::Protection::AesGmac;
        return build_engine_with(config(protection, role), Instant::ZERO, gmac).unwrap();
    }
    let cipher = match protection {
        Protection::Aead(c) => Some(c),
        _ => None,
    };
    build_engine(config(protection, role), Instant::ZERO, cipher).unwrap()
}

fn udp_packet(len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    let (src, dst) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    braid_wire::ip::emit_udp_ipv4(&mut p, src, dst, 4000, 5000, 0).unwrap();
    p
}

struct Pair {
    a: Engine,
    b: Engine,
    now: Instant,
    wire: Vec<u8>,
    /// `handle_rx_mut` (decrypt in place) rather than `handle_rx`.
    in_place: bool,
}

impl Pair {
    fn new(protection: Protection, in_place: bool) -> Self {
        Self {
            a: engine(protection, Role::A),
            b: engine(protection, Role::B),
            now: Instant::from_millis(1),
            wire: vec![0u8; 70_000],
            in_place,
        }
    }

    fn batch(&mut self, packet: &[u8]) -> usize {
        self.now += Duration::from_micros(20);
        let now = self.now;
        for _ in 0..BATCH {
            let v = self.a.handle_tx(now, packet);
            debug_assert_eq!(v, TxVerdict::Queued);
        }
        while let Some(t) = self.a.poll_transmit(now, &mut self.wire) {
            if self.in_place {
                self.b.handle_rx_mut(now, t.nic, &mut self.wire[..t.len]);
            } else {
                self.b.handle_rx(now, t.nic, &self.wire[..t.len]);
            }
        }
        while let Some(t) = self.b.poll_transmit(now, &mut self.wire) {
            if self.in_place {
                self.a.handle_rx_mut(now, t.nic, &mut self.wire[..t.len]);
            } else {
                self.a.handle_rx(now, t.nic, &self.wire[..t.len]);
            }
        }
        let mut n = 0;
        while self.b.poll_deliver(now, &mut self.wire).is_some() {
            n += 1;
        }
        self.a.handle_timeout(now);
        self.b.handle_timeout(now);
        n
    }
}

fn engines(c: &mut Criterion) {
    let mut group = c.benchmark_group("protection_engine");
    let rows = [
        ("none", Protection::None, false),
        ("blake3_mac", Protection::Blake3, false),
        ("aes_gmac", Protection::Gmac, true),
        ("aes256gcm", Protection::Aead(Cipher::Aes256Gcm), true),
        ("aes256gcm_copy", Protection::Aead(Cipher::Aes256Gcm), false),
        (
            "chacha20poly1305",
            Protection::Aead(Cipher::ChaCha20Poly1305),
            true,
        ),
    ];
    for len in [64usize, 1400] {
        let packet = udp_packet(len);
        for (name, protection, in_place) in rows {
            let mut pair = Pair::new(protection, in_place);
            let mut got = 0;
            for _ in 0..100 {
                got += pair.batch(&packet);
            }
            assert_eq!(
                got,
                100 * BATCH,
                "{name}: every packet delivered; drops a {:?} b {:?}",
                pair.a.stats().drops,
                pair.b.stats().drops
            );
            group.throughput(Throughput::Elements(BATCH as u64));
            group.bench_function(format!("{len}B/{name}"), |b| {
                b.iter(|| black_box(pair.batch(&packet)));
            });
        }
    }
    group.finish();
}

/// A named (send, receive) protection pair.
type Case = (
    &'static str,
    Box<dyn PacketProtection>,
    Box<dyn PacketProtection>,
);

/// Seal + open of one packet: 40-byte header as AAD, the payload in place.
fn primitives(c: &mut Criterion) {
    let mut group = c.benchmark_group("protection_seal_open");
    for len in [64usize, 1400] {
        let a = AuthConfig::new([9; 32], Role::A);
        let b = AuthConfig::new([9; 32], Role::B);
        let mut cases: Vec<Case> = vec![];
        let (tx, _) = Blake3Mac::pair(&a);
        let (_, rx) = Blake3Mac::pair(&b);
        cases.push(("blake3_mac", Box::new(tx), Box::new(rx)));
        for (name, cipher) in [
            ("aes256gcm", Cipher::Aes256Gcm),
            ("chacha20poly1305", Cipher::ChaCha20Poly1305),
        ] {
            let (tx, _) = AeadProtection::pair(cipher, &a);
            let (_, rx) = AeadProtection::pair(cipher, &b);
            cases.push((name, Box::new(tx), Box::new(rx)));
        }
        for (name, mut tx, rx) in cases {
            let mut packet = vec![0x5a_u8; 40 + len];
            let mut counter = 0u64;
            group.throughput(Throughput::Elements(1));
            group.bench_function(format!("{len}B/{name}"), |bench| {
                bench.iter(|| {
                    counter += 1;
                    let tag = tx.seal(counter, &mut packet, 40).unwrap();
                    assert!(rx.open(counter, &mut packet, 40, &tag));
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, engines, primitives);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
