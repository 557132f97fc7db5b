//! Standard IP fragmentation and reassembly allocate nothing per packet once warm: fragmenting
//! IPv4/IPv6 packets into caller buffers and reassembling them (in order, reversed, with losses
//! and duplicates), through drops (duplicates, overlaps, tombstones, stale fragments) and
//! timeouts, with every completed buffer freed, performs zero heap allocations. Measured with a
//! counting global allocator (`allocation-counter`, thread-local counts, so parallel tests do
//! not interfere).

#[cfg(test)]
mod tests {
    use std::hint::black_box;
    use std::time::Duration;

    use braid_core::Instant;
    use braid_core::buffer::{MAX_BUF_BYTES, PacketStore};
    use braid_core::ipfrag::{
        FragIdCounter, Fragmenter, IpFragOutcome, IpReassembler, IpReassemblyConfig,
    };

    /// An IPv4 packet (no options) of `payload` bytes with identification `id`.
    fn v4(id: u16, payload: usize) -> Vec<u8> {
        let total = 20 + payload;
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[4..6].copy_from_slice(&id.to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let mut sum = 0u32;
        for c in p[..20].chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        for (i, b) in p[20..].iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        p
    }

    /// An IPv6 packet (no extension header) of `payload` bytes.
    fn v6(payload: usize) -> Vec<u8> {
        let mut p = vec![0u8; 40 + payload];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&(payload as u16).to_be_bytes());
        p[6] = 17;
        p[7] = 64;
        p[8] = 0x20;
        p[24] = 0x20;
        p[39] = 2;
        for (i, b) in p[40..].iter_mut().enumerate() {
            *b = (i % 241) as u8;
        }
        p
    }

    struct Rig {
        r: IpReassembler,
        out: PacketStore,
        ids: FragIdCounter,
        /// Fragment slots, allocated once: `frags[i][..lens[i]]`.
        frags: Vec<Vec<u8>>,
        lens: Vec<usize>,
        t_us: u64,
        completed: u64,
    }

    impl Rig {
        fn new() -> Self {
            Self {
                r: IpReassembler::new(IpReassemblyConfig {
                    mem_cap_bytes: 16 << 20,
                    max_contexts: 2048,
                    timeout: Duration::from_millis(50),
                    hash_seed: 3,
                    ..IpReassemblyConfig::default()
                }),
                out: PacketStore::new(16 << 20, MAX_BUF_BYTES),
                ids: FragIdCounter::new(77),
                frags: (0..64).map(|_| vec![0u8; 9000]).collect(),
                lens: vec![0; 64],
                t_us: 0,
                completed: 0,
            }
        }

        /// Fragment `packet` at `mtu` into the preallocated slots; returns the count.
        fn fragment(&mut self, packet: &[u8], mtu: usize) -> usize {
            let mut f = Fragmenter::new(packet, mtu, &mut self.ids).expect("fragmentable");
            let mut n = 0;
            while let Some(len) = f.write_next(&mut self.frags[n]).expect("slot fits") {
                self.lens[n] = len;
                n += 1;
            }
            n
        }

        /// Offer fragment slot `i`, freeing a completed datagram.
        fn insert(&mut self, i: usize) {
            self.t_us += 1;
            let now = Instant::from_micros(self.t_us);
            let pkt = &self.frags[i][..self.lens[i]];
            match self.r.insert(now, &mut self.out, pkt) {
                IpFragOutcome::Complete { buf, len } => {
                    black_box(len);
                    self.out.free(buf);
                    self.completed += 1;
                }
                other => {
                    let _ = black_box(other);
                }
            }
        }

        /// One round of every pattern: packets are built before the round (outside the
        /// measurement), fragmented and reassembled inside it.
        fn round(&mut self, packets: &[Vec<u8>]) {
            for (k, p) in packets.iter().enumerate() {
                let mtu = [1500, 1280, 576][k % 3];
                let n = self.fragment(p, mtu);
                match k % 4 {
                    0 => (0..n).for_each(|i| self.insert(i)),
                    1 => (0..n).rev().for_each(|i| self.insert(i)),
                    2 => {
                        // An exact duplicate (dropped alone), then the datagram completes.
                        self.insert(0);
                        (0..n).for_each(|i| self.insert(i));
                    }
                    _ => {
                        // Loss: the first fragment never arrives (the datagram times out),
                        // and a duplicate of a middle one.
                        (1..n).for_each(|i| self.insert(i));
                        self.insert(n / 2);
                    }
                }
            }
            self.troublemakers();
            self.t_us += 60_000;
            let now = Instant::from_micros(self.t_us);
            while self.r.handle_timeout(now, 16) == 16 {}
        }

        /// Overlapping tiny fragments of 100 datagrams (tombstones + stale), written into the
        /// fragment slots by hand from a small packet.
        fn troublemakers(&mut self) {
            for id in 0..100u16 {
                for (slot, (off, len, more)) in
                    [(0usize, 16usize, true), (8, 16, true), (32, 8, false)]
                        .into_iter()
                        .enumerate()
                {
                    let pkt = v4_frag_into(&mut self.frags[slot], 40_000 + id, off, len, more);
                    self.lens[slot] = pkt;
                    self.insert(slot);
                }
            }
        }
    }

    /// Write an IPv4 fragment into `buf` (no allocation); returns its length.
    fn v4_frag_into(buf: &mut [u8], id: u16, off: usize, len: usize, more: bool) -> usize {
        let total = 20 + len;
        buf[..total].fill(0);
        buf[0] = 0x45;
        buf[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        buf[4..6].copy_from_slice(&id.to_be_bytes());
        let fo = (off / 8) as u16 | if more { 0x2000 } else { 0 };
        buf[6..8].copy_from_slice(&fo.to_be_bytes());
        buf[8] = 64;
        buf[9] = 17;
        buf[12..16].copy_from_slice(&[10, 0, 0, 1]);
        buf[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let mut sum = 0u32;
        for c in buf[..20].chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        buf[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        total
    }

    #[test]
    fn ip_fragmentation_and_reassembly_do_not_allocate_once_warm() {
        // Control: the counter does see an allocation on this thread.
        let control = allocation_counter::measure(|| {
            black_box(Vec::<u8>::with_capacity(8));
        });
        assert_eq!(control.count_total, 1);

        let mut rig = Rig::new();
        let packets: Vec<Vec<u8>> = (0..400u16)
            .map(|i| {
                let len = 1600 + usize::from(i) * 97 % 7000;
                if i % 2 == 0 { v4(i, len) } else { v6(len) }
            })
            .collect();
        // The stores grow their pages lazily: a cold round allocates, which shows that the
        // measurement below covers the reassembler and its stores.
        let cold = allocation_counter::measure(|| rig.round(&packets));
        assert!(
            cold.count_total > 0,
            "the first round grows the stores: {cold:?}"
        );
        rig.round(&packets);
        let warm_completed = rig.completed;
        let warm_stats = rig.r.stats().clone();

        let info = allocation_counter::measure(|| {
            for _ in 0..3 {
                rig.round(&packets);
            }
        });
        assert_eq!(
            info.count_total, 0,
            "ip fragmentation/reassembly allocated: {info:?}"
        );

        // The measured work was real: completions, drops of every kind and timeouts.
        let st = rig.r.stats();
        assert_eq!(
            rig.completed - warm_completed,
            3 * 300,
            "3 of 4 patterns complete"
        );
        assert!(st.drops.duplicate > warm_stats.drops.duplicate);
        assert!(st.drops.overlap > warm_stats.drops.overlap);
        assert!(st.drops.stale > warm_stats.drops.stale);
        assert!(st.drops.timeout > warm_stats.drops.timeout);
        assert_eq!(st.drops.context_cap + st.drops.memory_cap, 0);
        assert_eq!(
            (st.contexts_live, st.bytes_held, rig.out.used_bytes()),
            (0, 0, 0)
        );
    }
}
