//! Reassembly allocates nothing per packet once warm: inserting and completing 100 000+
//! fragments in order, in random order with thousands of datagrams outstanding, through drops
//! (duplicates, overlaps, tombstones) and timeouts, with every completed buffer freed, performs
//! zero heap allocations. Measured with a counting global allocator (`allocation-counter`,
//! thread-local counts, so parallel tests do not interfere).

#[cfg(test)]
mod tests {
    use std::hint::black_box;

    use braid_core::Instant;
    use braid_core::buffer::PacketStore;
    use braid_core::reassembly::{DatagramKey, FragOutcome, Reassembler, ReassemblyConfig};
    use braid_core::{DropReason, FlowId};

    /// `(datagram, offset, len)`.
    type Frag = (u64, u32, u32);

    struct Rig {
        r: Reassembler,
        store: PacketStore,
        src: Vec<u8>,
        now_us: u64,
        completed: u64,
    }

    impl Rig {
        fn new() -> Self {
            Self {
                r: Reassembler::new(ReassemblyConfig {
                    max_contexts: 8192,
                    hash_seed: 7,
                    ..ReassemblyConfig::default()
                }),
                store: PacketStore::new(64 << 20, 65_536),
                src: (0..65_536u32).map(|i| (i % 251) as u8).collect(),
                now_us: 0,
                completed: 0,
            }
        }

        /// Insert `frags` of datagrams `base + d` (total `total`), freeing completions.
        fn run(&mut self, base: u64, frags: &[Frag], total: u32) {
            for &(d, off, len) in frags {
                self.now_us += 1;
                let key = DatagramKey {
                    flow: FlowId(3),
                    seq: base + d,
                };
                let data = &self.src[off as usize..(off + len) as usize];
                let now = Instant::from_micros(self.now_us);
                match self.r.insert(now, &mut self.store, key, off, total, data) {
                    FragOutcome::Complete { buf, len } => {
                        black_box(len);
                        self.store.free(buf);
                        self.completed += 1;
                    }
                    FragOutcome::Pending => {}
                    FragOutcome::Dropped(reason) => {
                        black_box(reason);
                    }
                }
            }
        }

        /// Let every deadline pass and expire everything, in small budgets.
        fn drain(&mut self) {
            self.now_us += 1_000_000;
            let now = Instant::from_micros(self.now_us);
            while self.r.handle_timeout(now, &mut self.store, 64) > 0 {}
        }
    }

    fn in_order(datagrams: u64, nfrags: u32, frag_len: u32) -> Vec<Frag> {
        (0..datagrams)
            .flat_map(|d| (0..nfrags).map(move |i| (d, i * frag_len, frag_len)))
            .collect()
    }

    /// Every fragment of `datagrams` datagrams in a pseudo-random global order.
    fn shuffled(datagrams: u64, nfrags: u32, frag_len: u32, seed: u64) -> Vec<Frag> {
        let mut v = in_order(datagrams, nfrags, frag_len);
        let mut x = seed | 1;
        for i in (1..v.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.swap(i, (x % (i as u64 + 1)) as usize);
        }
        v
    }

    /// A mix of bad fragments (datagrams of 200 bytes): exact duplicates, overlaps (whole
    /// datagram dropped, tombstone, then a stale fragment), late duplicates of a completed
    /// datagram (a new context that times out), and datagrams left incomplete to time out.
    fn troublemakers(datagrams: u64) -> Vec<Frag> {
        let mut v = Vec::new();
        for d in 0..datagrams {
            v.push((d, 0, 100));
            v.push((d, 0, 100)); // exact duplicate
            match d % 3 {
                0 => v.extend([(d, 50, 100), (d, 100, 100)]), // overlap, then stale
                1 => v.extend([(d, 100, 100), (d, 100, 100)]), // complete, late duplicate
                _ => {}                                       // incomplete: times out
            }
        }
        v
    }

    #[test]
    fn reassembly_does_not_allocate_once_warm() {
        // Control: the counter does see an allocation on this thread.
        let control = allocation_counter::measure(|| {
            black_box(Vec::<u8>::with_capacity(8));
        });
        assert_eq!(control.count_total, 1);

        let mut rig = Rig::new();
        // The store grows its pages lazily: a cold run allocates, which shows that the
        // measurement below does cover the reassembler and the store.
        let warm_up = in_order(64, 2, 64);
        let cold = allocation_counter::measure(|| rig.run(0, &warm_up, 128));
        assert!(
            cold.count_total > 0,
            "the first run grows the store: {cold:?}"
        );

        // Fragment lists, built outside the measurement.
        let seq = in_order(50_000, 2, 64); // 100 000 fragments, one datagram at a time
        let rnd = shuffled(8_000, 4, 64, 0x1234_5678); // 32 000, 8 000 outstanding
        let big = shuffled(2_000, 6, 1500, 99); // 12 000 fragments of 9000-byte datagrams
        let bad = troublemakers(3_000); // 11 000 fragments of trouble

        // Warm-up: one pass of every pattern grows the store to its working set.
        let mut base = 1_000_000;
        for (frags, total) in [(&seq, 128), (&rnd, 256), (&big, 9000), (&bad, 200)] {
            rig.run(base, frags, total);
            base += 1_000_000;
        }
        rig.drain();
        let warm_completed = rig.completed;

        let info = allocation_counter::measure(|| {
            for round in 0..2 {
                for (frags, total) in [(&seq, 128), (&rnd, 256), (&big, 9000), (&bad, 200)] {
                    rig.run(base, frags, total);
                    base += 1_000_000;
                }
                if round == 0 {
                    rig.drain();
                }
            }
            rig.drain();
        });
        assert_eq!(info.count_total, 0, "reassembly allocated: {info:?}");

        // The measured work was real: completions, drops and timeouts all happened.
        let st = rig.r.stats();
        let measured_completed = rig.completed - warm_completed;
        assert_eq!(measured_completed, 2 * (50_000 + 8_000 + 2_000 + 1_000));
        assert!(st.drops.get(DropReason::ReassemblyDuplicateFragment) > 0);
        assert!(st.drops.get(DropReason::ReassemblyOverlap) > 0);
        assert!(st.drops.get(DropReason::ReassemblyStale) > 0);
        assert!(st.drops.get(DropReason::ReassemblyTimeout) > 0);
        assert_eq!(st.drops.get(DropReason::ReassemblyContextCap), 0);
        assert_eq!(
            (st.contexts_live, st.bytes_held, rig.store.used_bytes()),
            (0, 0, 0)
        );
    }
}
