//! Encrypted braid packets end to end through two engines (braid-core's `Engine` with
//! braid-io's AEAD protections), packets passed by hand as in the engine's own tests.
//!
//! What it proves, for AES-256-GCM (and ChaCha20-Poly1305 where it says so): whole, split and
//! duplicated packets arrive byte-exact through both RX entry points (`handle_rx`, which
//! decrypts in a scratch copy, and `handle_rx_mut`, in place); the payload is not visible on
//! the wire; a flipped bit anywhere (header, payload, tag), a replay, a wrong key and a peer
//! with the other setting (MAC-only against encrypting) are dropped and counted, and recorded
//! nothing (the genuine packets still pass after them); a restarted sender with a later
//! counter start is accepted; and nothing allocates per packet after warm-up.

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use braid_core::auth::{AuthConfig, Role};
    use braid_core::engine::{Engine, EngineConfig, FlowClass, NicSpec, TxVerdict};
    use braid_core::{DropReason, Instant, NicId};
    use braid_io::crypto::{Cipher, Protection, build_engine, build_engine_with};
    use braid_wire::{BRAID_AUTH_TAG_LEN, BraidPacket, BraidRepr, PacketType};

    const PSK: [u8; 32] = [0x42; 32];
    /// The duplicated class's port (`FlowClass::duplicated_feed`).
    const DUP_PORT: u16 = 7000;

    fn config(role: Option<Role>, counter_start: u64) -> EngineConfig {
        let nics = (0..3)
            .map(|i| NicSpec::udp_ipv4(NicId(i), &format!("link{i}"), 10_000_000_000, 1500))
            .collect();
        let mut cfg = EngineConfig::new(nics);
        cfg.classes.push(FlowClass::duplicated_feed(DUP_PORT));
        cfg.auth = role.map(|role| AuthConfig {
            counter_start,
            ..AuthConfig::new(PSK, role)
        });
        cfg
    }

    fn engine(role: Role, cipher: Option<Cipher>) -> Engine {
        build_engine(config(Some(role), 1), Instant::ZERO, cipher).unwrap()
    }

    /// An IPv4/UDP packet of `len` bytes whose payload is a pattern of `seq` (never all
    /// zeros, so a leak of it is visible).
    fn udp_packet(dst_port: u16, seq: u32, len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        for (i, b) in p[28..].iter_mut().enumerate() {
            *b = (seq as usize).wrapping_mul(131).wrapping_add(i * 7 + 1) as u8 | 1;
        }
        braid_wire::ip::emit_udp_ipv4(
            &mut p,
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            4000,
            dst_port,
            0,
        )
        .unwrap();
        p
    }

    /// How `pump` hands packets to the receiver.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Rx {
        /// `handle_rx(&[u8])`: the engine copies to decrypt.
        Shared,
        /// `handle_rx_mut(&mut [u8])`: decrypted in place.
        InPlace,
    }

    fn deliver_rx(e: &mut Engine, now: Instant, nic: NicId, bytes: &mut [u8], rx: Rx) {
        match rx {
            Rx::Shared => e.handle_rx(now, nic, bytes),
            Rx::InPlace => e.handle_rx_mut(now, nic, bytes),
        }
    }

    /// Move everything both ways until quiet (at most 100 ms of engine time); returns what
    /// `b` delivered and the wire bytes `a` sent (as sent, before the receiver decrypted).
    fn pump(
        a: &mut Engine,
        b: &mut Engine,
        mut now: Instant,
        rx: Rx,
    ) -> (Vec<Vec<u8>>, Vec<Vec<u8>>, Instant) {
        let mut buf = vec![0u8; 70_000];
        let (mut got, mut wire) = (Vec::new(), Vec::new());
        let end = now + Duration::from_millis(100);
        while now < end {
            a.handle_timeout(now);
            b.handle_timeout(now);
            while let Some(t) = a.poll_transmit(now, &mut buf) {
                wire.push(buf[..t.len].to_vec());
                deliver_rx(b, now, t.nic, &mut buf[..t.len], rx);
            }
            while let Some(t) = b.poll_transmit(now, &mut buf) {
                deliver_rx(a, now, t.nic, &mut buf[..t.len], rx);
            }
            while let Some(d) = b.poll_deliver(now, &mut buf) {
                got.push(buf[..d.len].to_vec());
            }
            if a.tx_queued_bytes() == 0 && b.tx_queued_bytes() == 0 {
                break;
            }
            now += Duration::from_micros(10);
        }
        (got, wire, now)
    }

    fn is_data(wire: &[u8]) -> bool {
        BraidPacket::new_checked(wire)
            .and_then(|v| BraidRepr::parse(&v))
            .is_ok_and(|r| r.packet_type == PacketType::Data)
    }

    fn assert_same(got: &[Vec<u8>], sent: &[Vec<u8>]) {
        assert_eq!(got.len(), sent.len(), "packet count");
        for (i, (g, s)) in got.iter().zip(sent).enumerate() {
            assert!(
                g == s,
                "packet {i} differs ({} vs {} bytes)",
                g.len(),
                s.len()
            );
        }
    }

    /// Whole (1400 B), split (9000 B over three 1500-byte NICs) and duplicated (200 B on three
    /// NICs) packets, byte-exact, both ciphers, both RX entry points; nothing dropped but the
    /// losing duplicate copies.
    #[test]
    fn whole_split_and_duplicated_packets_roundtrip_byte_exact() {
        for cipher in Cipher::ALL {
            for rx in [Rx::Shared, Rx::InPlace] {
                let mut a = engine(Role::A, Some(cipher));
                let mut b = engine(Role::B, Some(cipher));
                let mut sent = Vec::new();
                let mut now = Instant::from_millis(1);
                for seq in 0..30u32 {
                    for (port, len) in [(5000, 1400), (5001, 9000), (DUP_PORT, 200)] {
                        let p = udp_packet(port, seq, len);
                        assert_eq!(a.handle_tx(now, &p), TxVerdict::Queued);
                        sent.push(p);
                    }
                    let (mut got, _, t) = pump(&mut a, &mut b, now, rx);
                    // Three flows: each in order, but they may interleave.
                    let mut want = sent[sent.len() - 3..].to_vec();
                    got.sort();
                    want.sort();
                    assert_same(&got, &want);
                    now = t + Duration::from_micros(10);
                }
                let s = a.stats();
                assert_eq!(s.tx_split_count, 30, "{cipher} {rx:?}");
                assert_eq!(s.tx_duplicate_count, 30, "{cipher} {rx:?}");
                let drops = &b.stats().drops;
                assert_eq!(
                    drops.total(),
                    drops.get(DropReason::DuplicateDatagram),
                    "{cipher} {rx:?}: only losing copies dropped: {drops:?}"
                );
                assert_eq!(drops.get(DropReason::DuplicateDatagram), 60);
                assert_eq!(a.stats().drops.total(), 0);
            }
        }
    }

    /// AES-GMAC (the daemon's MAC-only mode): packets cross byte-exact with AUTH and
    /// without ENCRYPTED, the payload in clear; a flipped payload bit, a replay and a peer
    /// authenticating with keyed BLAKE3 instead are dropped and counted.
    #[test]
    fn gmac_authenticates_in_clear_and_refuses_forgeries() {
        let gmac = |role| {
            build_engine_with(config(Some(role), 1), Instant::ZERO, Protection::AesGmac).unwrap()
        };
        let mut a = gmac(Role::A);
        let mut b = gmac(Role::B);
        let now = Instant::from_millis(1);
        let sent: Vec<_> = [(5000, 1400), (5001, 9000)]
            .iter()
            .map(|&(port, len)| udp_packet(port, 1, len))
            .collect();
        for p in &sent {
            assert_eq!(a.handle_tx(now, p), TxVerdict::Queued);
        }
        let (mut got, wire, now) = pump(&mut a, &mut b, now, Rx::Shared);
        let mut want = sent.clone();
        got.sort();
        want.sort();
        assert_same(&got, &want);
        let data: Vec<_> = wire.iter().filter(|w| is_data(w)).cloned().collect();
        let whole = data
            .iter()
            .find(|w| BraidPacket::new_checked(&w[..]).unwrap().payload() == &sent[0][..])
            .expect("the 1400-byte packet travels whole and in clear");
        let view = BraidPacket::new_checked(&whole[..]).unwrap();
        assert!(view.auth() && !view.encrypted());

        // A replay, then the same packet with one payload bit flipped under a counter the
        // window has not seen (else the replay check would catch it first).
        let nic = NicId(0);
        let before = b.stats().drops.clone();
        b.handle_rx(now, nic, whole);
        let mut forged = whole.clone();
        let mid = forged.len() / 2;
        forged[mid] ^= 0x01;
        forged[33] ^= 0x01; // the replay counter follows the 32-byte header
        b.handle_rx(now, nic, &forged);
        let drops = &b.stats().drops;
        assert_eq!(
            drops.get(DropReason::ReplayedPacket) - before.get(DropReason::ReplayedPacket),
            1
        );
        assert_eq!(
            drops.get(DropReason::BadAuthTag) - before.get(DropReason::BadAuthTag),
            1
        );

        // A keyed-BLAKE3 peer with the same key: its tags do not verify.
        let mut blake = engine(Role::A, None);
        let mut c = gmac(Role::B);
        let t = Instant::from_millis(1);
        assert_eq!(blake.handle_tx(t, &sent[0]), TxVerdict::Queued);
        let (got, _, _) = pump(&mut blake, &mut c, t, Rx::InPlace);
        assert!(got.is_empty());
        assert!(c.stats().drops.get(DropReason::BadAuthTag) > 0);
    }

    /// Every data packet on the wire carries AUTH and ENCRYPTED, and none holds the
    /// application's payload (or any 16-byte run of it) in clear. The MAC-only control run
    /// shows the same search finds it when it is there.
    #[test]
    fn the_payload_is_not_visible_on_the_wire() {
        let leaks = |cipher: Option<Cipher>| {
            let mut a = engine(Role::A, cipher);
            let mut b = engine(Role::B, cipher);
            let p = udp_packet(5000, 9, 1400);
            assert_eq!(a.handle_tx(Instant::from_millis(1), &p), TxVerdict::Queued);
            let (got, wire, _) = pump(&mut a, &mut b, Instant::from_millis(1), Rx::InPlace);
            assert_same(&got, std::slice::from_ref(&p));
            let data: Vec<_> = wire.iter().filter(|w| is_data(w)).collect();
            assert_eq!(data.len(), 1);
            let view = BraidPacket::new_checked(&data[0][..]).unwrap();
            assert!(view.auth());
            assert_eq!(view.encrypted(), cipher.is_some());
            let payload = view.payload();
            assert_eq!(payload.len(), p.len());
            p.windows(16)
                .filter(|w| payload.windows(16).any(|x| x == *w))
                .count()
        };
        for cipher in Cipher::ALL {
            assert_eq!(leaks(Some(cipher)), 0, "{cipher}: plain text on the wire");
        }
        assert_eq!(leaks(None), 1400 - 15, "the control run sees the payload");
    }

    /// Captured genuine packets, then forgeries of them made first: a flipped bit in the
    /// header (several fields), in the payload and in the tag, and the same packet under a
    /// wrong key. Each is dropped as `BadAuthTag` and records nothing, so the genuine packets
    /// sent afterwards are all delivered; then each genuine packet again is a counted replay.
    #[test]
    fn forged_and_replayed_packets_are_dropped_and_counted() {
        for rx in [Rx::Shared, Rx::InPlace] {
            let cipher = Cipher::Aes256Gcm;
            let mut a = engine(Role::A, Some(cipher));
            let mut b = engine(Role::B, Some(cipher));
            let mut stranger = {
                let mut cfg = config(Some(Role::A), 1);
                cfg.auth.as_mut().unwrap().psk = [0x43; 32];
                build_engine(cfg, Instant::ZERO, Some(cipher)).unwrap()
            };
            let now = Instant::from_millis(1);
            let sent: Vec<_> = (0..8).map(|i| udp_packet(5000, i, 1000)).collect();
            let mut captured = Vec::new();
            let mut buf = vec![0u8; 4000];
            for p in &sent {
                assert_eq!(a.handle_tx(now, p), TxVerdict::Queued);
            }
            while let Some(t) = a.poll_transmit(now, &mut buf) {
                captured.push((t.nic, buf[..t.len].to_vec()));
            }
            let data: Vec<_> = captured.iter().filter(|(_, w)| is_data(w)).collect();
            assert_eq!(data.len(), 8);
            // Header: link id, flow id, sequence, timestamp, replay counter (high and low
            // byte); payload: first, middle, last byte; tag: first and last byte. Each on its
            // own captured packet, bits 0 and 7.
            let positions = |len: usize| {
                [
                    2,
                    4,
                    15,
                    27,
                    32,
                    39,
                    40,
                    len / 2,
                    len - BRAID_AUTH_TAG_LEN - 1,
                    len - BRAID_AUTH_TAG_LEN,
                    len - 1,
                ]
            };
            let mut forged = 0;
            // The number of positions (any length past the tag gives it; 0 would underflow).
            for k in 0..positions(BRAID_AUTH_TAG_LEN + 1).len() {
                let (nic, genuine) = data[k % data.len()];
                let at = positions(genuine.len())[k];
                for bit in [0, 7] {
                    let mut f = genuine.clone();
                    f[at] ^= 1 << bit;
                    deliver_rx(&mut b, now, *nic, &mut f, rx);
                    forged += 1;
                }
            }
            let d = &b.stats().drops;
            assert_eq!(d.get(DropReason::BadAuthTag), forged, "{rx:?}: {d:?}");
            assert_eq!(d.total(), forged, "{rx:?}: {d:?}");
            // A wrong key: the stranger's packets.
            assert_eq!(stranger.handle_tx(now, &sent[0]), TxVerdict::Queued);
            let mut strangers = 0;
            while let Some(t) = stranger.poll_transmit(now, &mut buf) {
                deliver_rx(&mut b, now, t.nic, &mut buf[..t.len], rx);
                strangers += 1;
            }
            assert!(strangers >= 1);
            assert_eq!(
                b.stats().drops.get(DropReason::BadAuthTag),
                forged + strangers
            );
            assert_eq!(
                b.stats().rx_delivered_count,
                0,
                "nothing forged was delivered"
            );
            // The genuine packets are all still accepted (no forged counter was recorded).
            let mut delivered = Vec::new();
            for (nic, genuine) in &captured {
                deliver_rx(&mut b, now, *nic, &mut genuine.clone(), rx);
            }
            let later = now + Duration::from_millis(50);
            b.handle_timeout(later);
            while let Some(d) = b.poll_deliver(later, &mut buf) {
                delivered.push(buf[..d.len].to_vec());
            }
            assert_same(&delivered, &sent);
            // Replays of genuine packets: dropped and counted, nothing delivered.
            let before = b.stats().drops.get(DropReason::ReplayedPacket);
            for (nic, genuine) in &captured {
                deliver_rx(&mut b, later, *nic, &mut genuine.clone(), rx);
            }
            assert_eq!(
                b.stats().drops.get(DropReason::ReplayedPacket) - before,
                captured.len() as u64
            );
            assert!(b.poll_deliver(later, &mut buf).is_none());
        }
    }

    /// A MAC-only peer and an encrypting peer do not talk: each side drops the other's
    /// packets as `EncryptionMismatch` (before any tag check), and nothing is delivered.
    /// A peer with no authentication at all is refused as `Unauthenticated`, and refuses the
    /// encrypting peer's cipher text rather than delivering it.
    #[test]
    fn mac_only_and_encrypting_peers_refuse_each_other() {
        for rx in [Rx::Shared, Rx::InPlace] {
            let mut enc = engine(Role::A, Some(Cipher::Aes256Gcm));
            let mut mac = engine(Role::B, None);
            let now = Instant::from_millis(1);
            for i in 0..5 {
                assert_eq!(
                    enc.handle_tx(now, &udp_packet(5000, i, 500)),
                    TxVerdict::Queued
                );
                assert_eq!(
                    mac.handle_tx(now, &udp_packet(5000, i, 500)),
                    TxVerdict::Queued
                );
            }
            let (got_at_mac, wire, now) = pump(&mut enc, &mut mac, now, rx);
            assert!(got_at_mac.is_empty());
            let sent_by_enc = wire.len() as u64;
            assert_eq!(
                mac.stats().drops.get(DropReason::EncryptionMismatch),
                sent_by_enc,
                "{rx:?}"
            );
            assert_eq!(mac.stats().drops.get(DropReason::BadAuthTag), 0);
            let (got_at_enc, wire, _) = pump(&mut mac, &mut enc, now, rx);
            assert!(got_at_enc.is_empty());
            assert!(enc.stats().drops.get(DropReason::EncryptionMismatch) >= wire.len() as u64);
            assert!(enc.stats().drops.get(DropReason::EncryptionMismatch) >= 5);
            assert_eq!(
                enc.stats().rx_delivered_count + mac.stats().rx_delivered_count,
                0
            );

            let mut open = build_engine(config(None, 0), Instant::ZERO, None).unwrap();
            let mut enc = engine(Role::A, Some(Cipher::Aes256Gcm));
            let now = Instant::from_millis(1);
            assert_eq!(
                open.handle_tx(now, &udp_packet(5000, 0, 500)),
                TxVerdict::Queued
            );
            assert_eq!(
                enc.handle_tx(now, &udp_packet(5000, 0, 500)),
                TxVerdict::Queued
            );
            let (got, _, now) = pump(&mut open, &mut enc, now, rx);
            assert!(got.is_empty());
            assert!(enc.stats().drops.get(DropReason::Unauthenticated) >= 1);
            let (got, _, _) = pump(&mut enc, &mut open, now, rx);
            assert!(got.is_empty(), "cipher text is never delivered as data");
            assert!(open.stats().drops.get(DropReason::EncryptionMismatch) >= 1);
        }
    }

    /// A sender restarted with a later counter start (the daemon starts it at the wall-clock
    /// time in ns) is accepted by the receiver that kept running; one restarted with its old
    /// start is refused as replays (and would have reused nonces: the reason for the rule).
    #[test]
    fn a_restarted_sender_with_a_later_counter_start_is_accepted() {
        let cipher = Cipher::Aes256Gcm;
        let start = 1_700_000_000_000_000_000u64;
        let mut a =
            build_engine(config(Some(Role::A), start), Instant::ZERO, Some(cipher)).unwrap();
        let mut b = engine(Role::B, Some(cipher));
        let sent: Vec<_> = (0..30).map(|i| udp_packet(5000, i, 800)).collect();
        let now = Instant::from_millis(1);
        for p in &sent[..10] {
            assert_eq!(a.handle_tx(now, p), TxVerdict::Queued);
        }
        let (got, _, now) = pump(&mut a, &mut b, now, Rx::InPlace);
        assert_same(&got, &sent[..10]);
        drop(a);
        // Same start again: refused.
        let mut again =
            build_engine(config(Some(Role::A), start), Instant::ZERO, Some(cipher)).unwrap();
        for p in &sent[10..20] {
            assert_eq!(again.handle_tx(now, p), TxVerdict::Queued);
        }
        let (got, _, now) = pump(&mut again, &mut b, now, Rx::InPlace);
        assert!(got.is_empty());
        assert!(b.stats().drops.get(DropReason::ReplayedPacket) >= 10);
        // One second later on the wall clock: accepted at once. A new seed, as the daemon
        // draws one per start, gives the restarted sender new flow ids.
        let mut cfg = config(Some(Role::A), start + 1_000_000_000);
        cfg.seed = 0x5eed;
        let mut restarted = build_engine(cfg, Instant::ZERO, Some(cipher)).unwrap();
        for p in &sent[20..] {
            assert_eq!(restarted.handle_tx(now, p), TxVerdict::Queued);
        }
        let (got, _, _) = pump(&mut restarted, &mut b, now, Rx::InPlace);
        assert_same(&got, &sent[20..]);
    }

    /// One round: a bulk, a jumbo (split) and a duplicated packet across and delivered.
    fn round(
        a: &mut Engine,
        b: &mut Engine,
        now: &mut Instant,
        seq: u32,
        pkt: &mut [u8],
        wire: &mut [u8],
        rx: Rx,
    ) -> usize {
        let mut delivered = 0;
        for (port, len) in [(5000u16, 1400usize), (5001, 9000), (DUP_PORT, 200)] {
            pkt[28..32].copy_from_slice(&seq.to_be_bytes());
            braid_wire::ip::emit_udp_ipv4(
                &mut pkt[..len],
                Ipv4Addr::new(10, 0, 0, 1),
                Ipv4Addr::new(10, 0, 0, 2),
                4000,
                port,
                0,
            )
            .unwrap();
            assert_eq!(a.handle_tx(*now, &pkt[..len]), TxVerdict::Queued);
        }
        for _ in 0..20 {
            *now += Duration::from_micros(5);
            a.handle_timeout(*now);
            b.handle_timeout(*now);
            while let Some(t) = a.poll_transmit(*now, wire) {
                deliver_rx(b, *now, t.nic, &mut wire[..t.len], rx);
            }
            while let Some(t) = b.poll_transmit(*now, wire) {
                deliver_rx(a, *now, t.nic, &mut wire[..t.len], rx);
            }
            while b.poll_deliver(*now, wire).is_some() {
                delivered += 1;
            }
        }
        delivered
    }

    /// With an AEAD, the packet paths (seal, open in place, open through the scratch copy)
    /// allocate nothing once warmed up; counted with a counting global allocator.
    #[test]
    fn encrypted_packet_paths_do_not_allocate_after_warm_up() {
        for cipher in Cipher::ALL {
            for rx in [Rx::Shared, Rx::InPlace] {
                let mut a = engine(Role::A, Some(cipher));
                let mut b = engine(Role::B, Some(cipher));
                let mut pkt = vec![0u8; 9000];
                let mut wire = vec![0u8; 70_000];
                let mut now = Instant::from_millis(1);
                let mut delivered = 0;
                for seq in 0..200 {
                    delivered += round(&mut a, &mut b, &mut now, seq, &mut pkt, &mut wire, rx);
                }
                assert_eq!(delivered, 600, "warm-up delivered everything");
                let control = allocation_counter::measure(|| {
                    std::hint::black_box(Vec::<u8>::with_capacity(8));
                });
                assert_eq!(control.count_total, 1, "the counter counts");
                let mut delivered = 0;
                let info = allocation_counter::measure(|| {
                    for seq in 200..1200 {
                        delivered += round(&mut a, &mut b, &mut now, seq, &mut pkt, &mut wire, rx);
                    }
                });
                assert_eq!(delivered, 3000, "{cipher} {rx:?}: every packet delivered");
                assert!(
                    b.stats().tx_probe_reply_count > 0,
                    "probes ran, sealed and opened"
                );
                assert_eq!(
                    info.count_total, 0,
                    "{cipher} {rx:?}: allocations after warm-up: {info:?}"
                );
            }
        }
    }
}
