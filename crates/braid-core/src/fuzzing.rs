//! Op-sequence interpreters for fuzzing (shared by `fuzz/` and the corpus replay tests).
//!
//! Owns: turning arbitrary bytes into a sequence of calls on an internal component and checking
//! it against a reference model after every call. Does not own the components. Compiled only
//! under `cfg(test)`, `cfg(fuzzing)` or the `fuzzing` feature; nothing here is part of braid's
//! stable API.
//!
//! Every interpreter **panics** on a broken invariant or a disagreement with its model: that is
//! how the fuzzer and the replay tests notice.

use alloc::vec::Vec;
use core::time::Duration;

use crate::buffer::{BufHandle, PacketStore};
use crate::reassembly::{DatagramKey, FragOutcome, Reassembler, ReassemblyConfig};
use crate::time::Instant;
use crate::types::{DropReason, FlowId};

/// Reads bytes off the front of the input; past the end it yields zeros (so every input is
/// a valid program).
struct Cursor<'a> {
    data: &'a [u8],
}

impl Cursor<'_> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Bytes of every datagram are drawn from this fixed pseudo-random pattern (xorshift32), so
/// fragments can be built and completed datagrams checked with `memcpy`/`memcmp` rather than
/// byte loops (which coverage instrumentation makes slow).
const PATTERN_LEN: usize = 1 << 16;
static PATTERN: [u8; PATTERN_LEN] = pattern();

const fn pattern() -> [u8; PATTERN_LEN] {
    let mut p = [0u8; PATTERN_LEN];
    let mut x: u32 = 0x9e37_79b9;
    let mut i = 0;
    while i < PATTERN_LEN {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = x.to_le_bytes()[3];
        i += 1;
    }
    p
}

/// Where datagram `key`'s content starts in the pattern: every key gets different bytes, and
/// every fragment of a key carries consistent content, so a completed datagram's bytes are
/// fully determined.
fn shift(key: DatagramKey) -> usize {
    let s = key.seq.wrapping_mul(7919) ^ u64::from(key.flow.0).wrapping_mul(104_729);
    (s % PATTERN_LEN as u64) as usize
}

/// Chunks `(pattern start, len)` covering the content of `key` at `pos..pos + len`.
fn chunks(key: DatagramKey, pos: u32, len: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut start = (pos as usize + shift(key)) % PATTERN_LEN;
    let mut left = len;
    core::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let n = (PATTERN_LEN - start).min(left);
        let c = (start, n);
        left -= n;
        start = 0;
        Some(c)
    })
}

/// Write the content of `key` at `pos..pos + out.len()` into `out`.
fn fill(out: &mut [u8], key: DatagramKey, pos: u32) {
    let mut done = 0;
    for (start, n) in chunks(key, pos, out.len()) {
        out[done..done + n].copy_from_slice(&PATTERN[start..start + n]);
        done += n;
    }
}

/// `true` if `bytes` is exactly the content of `key` from position 0.
fn is_content(bytes: &[u8], key: DatagramKey) -> bool {
    let mut done = 0;
    chunks(key, 0, bytes.len()).all(|(start, n)| {
        let ok = bytes[done..done + n] == PATTERN[start..start + n];
        done += n;
        ok
    })
}

/// The model's view of one context (or tombstone).
#[derive(Debug)]
struct ModelCtx {
    key: DatagramKey,
    total: u32,
    deadline: Instant,
    tomb: bool,
    held: usize,
    ranges: Vec<(u32, u32)>,
}

/// A plain, obviously-correct model of the reassembler: vectors and linear scans.
#[derive(Debug)]
struct Model {
    cfg: ReassemblyConfig,
    /// In creation (= deadline) order.
    ctxs: Vec<ModelCtx>,
    bytes_held: usize,
}

/// What the model expects `insert` to do.
#[derive(Debug, PartialEq, Eq)]
enum Expect {
    Drop(DropReason),
    /// The fragment would open a new context or complete at once (store may refuse).
    New {
        whole: bool,
        held: usize,
    },
    /// Accepted into context `i`; completes if `complete`.
    Accept {
        i: usize,
        complete: bool,
    },
    /// Context `i` is dropped whole with this reason.
    Kill {
        i: usize,
        reason: DropReason,
    },
}

impl Model {
    fn find(&self, key: DatagramKey) -> Option<usize> {
        self.ctxs.iter().position(|c| c.key == key)
    }

    fn live(&self) -> usize {
        self.ctxs.iter().filter(|c| !c.tomb).count()
    }

    /// Remove context `i` because its deadline passed; `true` if it was live (a timeout).
    fn expire(&mut self, i: usize) -> bool {
        let c = self.ctxs.remove(i);
        if !c.tomb {
            self.bytes_held -= c.held;
        }
        !c.tomb
    }

    /// Predict `insert`, applying lazy expiry first (as the reassembler does).
    fn predict(
        &mut self,
        now: Instant,
        key: DatagramKey,
        off: u32,
        total: u32,
        len: usize,
    ) -> (Expect, bool) {
        if len == 0 {
            return (Expect::Drop(DropReason::ReassemblyZeroLength), false);
        }
        if total > self.cfg.max_datagram_bytes {
            return (Expect::Drop(DropReason::ReassemblyTooLarge), false);
        }
        let end = u64::from(off) + len as u64;
        if end > u64::from(total) {
            return (Expect::Drop(DropReason::ReassemblyPastEnd), false);
        }
        let mut timed_out = false;
        if let Some(i) = self.find(key) {
            let c = &self.ctxs[i];
            if now < c.deadline {
                if c.tomb {
                    return (Expect::Drop(DropReason::ReassemblyStale), false);
                }
                if c.total != total {
                    return (
                        Expect::Kill {
                            i,
                            reason: DropReason::ReassemblyTotalMismatch,
                        },
                        false,
                    );
                }
                let (s, e) = (off, u32::try_from(end).unwrap_or(u32::MAX));
                if c.ranges.contains(&(s, e)) {
                    return (Expect::Drop(DropReason::ReassemblyDuplicateFragment), false);
                }
                if c.ranges.iter().any(|&(a, b)| a < e && s < b) {
                    return (
                        Expect::Kill {
                            i,
                            reason: DropReason::ReassemblyOverlap,
                        },
                        false,
                    );
                }
                if c.ranges.len() >= usize::from(self.cfg.max_fragments.max(1)) {
                    return (
                        Expect::Kill {
                            i,
                            reason: DropReason::ReassemblyTooManyFragments,
                        },
                        false,
                    );
                }
                let have: u64 = c.ranges.iter().map(|&(a, b)| u64::from(b - a)).sum();
                let complete = have + (end - u64::from(off)) == u64::from(total);
                return (Expect::Accept { i, complete }, false);
            }
            timed_out = self.expire(i);
        }
        let Some(held) = PacketStore::class_bytes(total as usize) else {
            return (Expect::Drop(DropReason::ReassemblyTooLarge), timed_out);
        };
        let whole = off == 0 && end == u64::from(total);
        if !whole {
            if self.ctxs.len() >= self.cfg.max_contexts {
                return (Expect::Drop(DropReason::ReassemblyContextCap), timed_out);
            }
            if self.bytes_held + held > self.cfg.mem_cap_bytes {
                return (Expect::Drop(DropReason::ReassemblyMemoryCap), timed_out);
            }
        }
        (Expect::New { whole, held }, timed_out)
    }
}

/// The reassembler under test, its store, the model, and what the harness holds.
struct Rig {
    r: Reassembler,
    store: PacketStore,
    model: Model,
    now: Instant,
    /// Completed datagrams not yet released, with their slot bytes.
    held: Vec<(BufHandle, usize)>,
    held_bytes: usize,
    timeouts: u64,
    totals: [u32; KEYS],
    /// Fragment bytes are built here (one allocation per run).
    scratch: Vec<u8>,
    checks: u64,
}

const KEYS: usize = 12;
const MAX_HELD: usize = 8;

fn key_of(b: u8) -> DatagramKey {
    let k = usize::from(b) % KEYS;
    DatagramKey {
        flow: FlowId(u32::from(b & 1)),
        seq: (k >> 1) as u64,
    }
}

fn key_index(key: DatagramKey) -> usize {
    // invariant: keys come from key_of, seq < 6 and flow < 2.
    usize::try_from(key.seq).unwrap_or(0) * 2 + key.flow.0 as usize
}

impl Rig {
    fn insert(&mut self, key: DatagramKey, off: u32, total: u32, len: usize) {
        // Fragment bytes: consistent content for the key at every position.
        let len = len.min(self.scratch.len());
        fill(&mut self.scratch[..len], key, off);
        let data = &self.scratch[..len];
        let (expect, timed_out) = self.model.predict(self.now, key, off, total, len);
        if timed_out {
            self.timeouts += 1;
        }
        let out = self
            .r
            .insert(self.now, &mut self.store, key, off, total, data);
        match (expect, out) {
            (Expect::Drop(want), out) => {
                assert_eq!(out, FragOutcome::Dropped(want), "model predicted a drop");
            }
            (Expect::Kill { i, reason }, out) => {
                assert_eq!(
                    out,
                    FragOutcome::Dropped(reason),
                    "model predicted a datagram drop"
                );
                let c = &mut self.model.ctxs[i];
                c.tomb = true;
                self.model.bytes_held -= c.held;
            }
            (Expect::Accept { i, complete }, out) => {
                let end = off + u32::try_from(len).unwrap_or(0);
                if complete {
                    let c = self.model.ctxs.remove(i);
                    self.model.bytes_held -= c.held;
                    self.take_complete(out, key, total);
                } else {
                    assert_eq!(out, FragOutcome::Pending, "model predicted pending");
                    self.model.ctxs[i].ranges.push((off, end));
                }
            }
            (expect @ Expect::New { .. }, out) => self.check_new(expect, out, key, off, total, len),
        }
    }

    fn check_new(
        &mut self,
        expect: Expect,
        out: FragOutcome,
        key: DatagramKey,
        off: u32,
        total: u32,
        len: usize,
    ) {
        let (whole, held) = match expect {
            Expect::New { whole, held } => (whole, held),
            Expect::Drop(want) => {
                assert_eq!(out, FragOutcome::Dropped(want), "model predicted a drop");
                return;
            }
            other => panic!("a new key cannot give {other:?}"),
        };
        if out == FragOutcome::Dropped(DropReason::StoreFull) {
            // The store's pages are shared with held completions, so the model does not
            // predict this; check instead that the store really has no room: the store is
            // unchanged since the reassembler's failed alloc, so a second try must fail too.
            if let Some(h) = self.store.alloc(total as usize) {
                self.store.free(h);
                panic!("StoreFull although the store has room for {total} bytes");
            }
            return;
        }
        if whole {
            self.take_complete(out, key, total);
        } else {
            assert_eq!(out, FragOutcome::Pending, "model predicted a new context");
            self.model.bytes_held += held;
            self.model.ctxs.push(ModelCtx {
                key,
                total,
                deadline: self.now + self.model.cfg.timeout,
                tomb: false,
                held,
                ranges: alloc::vec![(off, off + u32::try_from(len).unwrap_or(0))],
            });
        }
    }

    fn take_complete(&mut self, out: FragOutcome, key: DatagramKey, total: u32) {
        let FragOutcome::Complete { buf, len } = out else {
            panic!("model predicted completion, got {out:?}");
        };
        assert_eq!(len, total as usize);
        let bytes = self.store.get(&buf);
        assert_eq!(bytes.len(), len, "buffer length");
        assert!(
            is_content(bytes, key),
            "bytes of completed {key:?} differ from its fragments"
        );
        let slot = PacketStore::class_bytes(len).expect("invariant: allocated");
        self.held_bytes += slot;
        self.held.push((buf, slot));
        if self.held.len() > MAX_HELD {
            self.release();
        }
    }

    fn release(&mut self) {
        if !self.held.is_empty() {
            let (h, slot) = self.held.remove(0);
            self.store.free(h);
            self.held_bytes -= slot;
        }
    }

    fn handle_timeout(&mut self, budget: usize) {
        let mut want = 0;
        while want < budget {
            match self.model.ctxs.first() {
                Some(c) if c.deadline <= self.now => {
                    if self.model.expire(0) {
                        self.timeouts += 1;
                    }
                    want += 1;
                }
                _ => break,
            }
        }
        let got = self.r.handle_timeout(self.now, &mut self.store, budget);
        assert_eq!(got, want, "handle_timeout count");
    }

    fn check(&mut self) {
        if let Err(e) = self.r.check_invariants(&self.store, self.held_bytes) {
            panic!("reassembler invariant: {e}");
        }
        // The store walk is O(pages × 512): every 16th check, and at the end.
        self.checks += 1;
        if self.checks.is_multiple_of(16)
            && let Err(e) = self.store.check_invariants()
        {
            panic!("store invariant: {e}");
        }
        let st = self.r.stats();
        assert_eq!(st.contexts_live, self.model.live(), "contexts_live");
        assert_eq!(
            st.tombstones_live,
            self.model.ctxs.len() - self.model.live(),
            "tombstones"
        );
        assert_eq!(st.bytes_held, self.model.bytes_held, "bytes_held");
        assert!(st.bytes_held <= self.model.cfg.mem_cap_bytes, "memory cap");
        assert_eq!(
            st.drops.get(DropReason::ReassemblyTimeout),
            self.timeouts,
            "timeouts"
        );
        assert_eq!(
            self.r.poll_timeout(),
            self.model.ctxs.first().map(|c| c.deadline),
            "poll_timeout"
        );
    }
}

/// Interpret `data` as a reassembly op sequence and check the reassembler against a model.
///
/// The first six bytes configure (context cap, fragment cap, memory cap, max datagram size,
/// timeout, store size); then each op is one byte plus arguments: insert a fragment (grid
/// piece, arbitrary range, wrong total, raw), insert a whole datagram's pieces in or out of
/// order, advance time, `handle_timeout` with a small budget, release a completed buffer, or
/// change a key's intended total. Twelve keys (two flows × six sequences) keep collisions
/// frequent. At the end, time passes every deadline and everything must drain to zero.
///
/// # Panics
///
/// On any broken invariant or disagreement with the model.
pub fn reassembly_ops(data: &[u8]) {
    let _ = run_reassembly_ops(data);
}

/// [`reassembly_ops`], returning the reassembler's final counters (for tests that check the
/// program reached the paths it meant to).
fn run_reassembly_ops(data: &[u8]) -> crate::reassembly::ReassemblyStats {
    let mut cur = Cursor { data };
    let max_datagram_bytes =
        [64, 300, 1500, 4000, 9000, 65_535, 70_000][usize::from(cur.byte() % 7)];
    let cfg = ReassemblyConfig {
        max_contexts: 1 + usize::from(cur.byte() % 12),
        max_fragments: 1 + u16::from(cur.byte() % 16),
        mem_cap_bytes: (1 + usize::from(cur.byte() % 64)) * 1024,
        timeout: Duration::from_millis(1 + u64::from(cur.byte() % 50)),
        max_datagram_bytes,
        hash_seed: u64::from(cur.byte()),
    };
    let store_pages = 1 + usize::from(cur.byte() % 12);
    let mut rig = Rig {
        r: Reassembler::new(cfg),
        store: PacketStore::new(store_pages * crate::buffer::PAGE_BYTES, 65_536),
        model: Model {
            cfg,
            ctxs: Vec::new(),
            bytes_held: 0,
        },
        now: Instant::ZERO,
        held: Vec::new(),
        held_bytes: 0,
        timeouts: 0,
        totals: [0; KEYS],
        scratch: alloc::vec![0; 65_536],
        checks: 0,
    };
    for (i, t) in rig.totals.iter_mut().enumerate() {
        // Spread of sizes: small, around one MTU, and up to the max.
        let base = [40u32, 150, 1400, 3000][i % 4];
        *t = base.min(max_datagram_bytes);
    }
    let mut ops = 0;
    while !cur.is_empty() && ops < 4096 {
        ops += 1;
        let op = cur.byte();
        match op % 8 {
            0..=2 => {
                let key = key_of(cur.byte());
                let total = rig.totals[key_index(key)];
                let (kind, a, b) = (cur.byte(), cur.byte(), cur.byte());
                let (off, len, total) = match kind % 4 {
                    0 => {
                        // Piece i of k of a grid: exact duplicates and neighbours are likely.
                        let k = 1 + u32::from(a % 16);
                        let i = u32::from(b) % k;
                        let (s, e) = (i * total / k, (i + 1) * total / k);
                        (s, (e - s) as usize, total)
                    }
                    1 => {
                        let s = u32::from(a) * total / 256;
                        let l = 1 + u32::from(b) * total / 256;
                        (s, l as usize, total)
                    }
                    2 => {
                        let t = (total + u32::from(a)).saturating_sub(128).max(1);
                        let k = 1 + u32::from(b % 4);
                        (0, (t / k).max(1) as usize, t)
                    }
                    _ => (u32::from(a) * 4, usize::from(b), total),
                };
                rig.insert(key, off, total, len);
            }
            3 => {
                let key = key_of(cur.byte());
                let total = rig.totals[key_index(key)];
                let mode = cur.byte();
                let k = 1 + u32::from(mode % 16);
                for j in 0..k {
                    let i = if mode & 0x80 == 0 { j } else { k - 1 - j };
                    let (s, e) = (i * total / k, (i + 1) * total / k);
                    rig.insert(key, s, total, (e - s) as usize);
                    rig.check();
                }
            }
            4 => rig.now += Duration::from_micros(u64::from(cur.byte()) * 250),
            5 => rig.handle_timeout(usize::from(cur.byte() % 5)),
            6 => rig.release(),
            _ => {
                let key = key_of(cur.byte());
                let t = u32::from(cur.u16()) % (max_datagram_bytes + 16);
                rig.totals[key_index(key)] = t;
            }
        }
        rig.check();
    }

    // Drain: past every deadline, with a small budget per call, everything must go.
    rig.now = rig.now + rig.model.cfg.timeout + Duration::from_nanos(1);
    let mut rounds = 0;
    while !rig.model.ctxs.is_empty() {
        rig.handle_timeout(3);
        rig.check();
        rounds += 1;
        assert!(rounds <= 64, "drain does not end");
    }
    rig.handle_timeout(3);
    while !rig.held.is_empty() {
        rig.release();
    }
    rig.check();
    if let Err(e) = rig.store.check_invariants() {
        panic!("store invariant: {e}");
    }
    let st = rig.r.stats();
    assert_eq!(
        (st.contexts_live, st.tombstones_live, st.bytes_held),
        (0, 0, 0)
    );
    assert_eq!((rig.store.used_bytes(), rig.store.live()), (0, 0));
    assert_eq!(rig.r.poll_timeout(), None);
    st.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn corpus_dir(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/corpus")
            .join(name)
    }

    /// Replays every file of `fuzz/corpus/reassembly` (seeds and regressions).
    #[test]
    fn replay_reassembly_corpus() {
        let dir = corpus_dir("reassembly");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_file() {
                let bytes = std::fs::read(&path).expect("read corpus file");
                reassembly_ops(&bytes);
                n += 1;
            }
        }
        assert!(n > 0, "{} holds no corpus files", dir.display());
    }

    #[test]
    fn empty_and_short_inputs() {
        reassembly_ops(&[]);
        reassembly_ops(&[1]);
        reassembly_ops(&[0xff; 7]);
    }

    /// The model is not vacuous: a program that completes a datagram, overlaps another and
    /// lets a third time out exercises all three paths.
    #[test]
    fn model_covers_complete_overlap_timeout() {
        // max 1500 B datagrams, 12 contexts, 10 fragments, 64 KiB cap, 10 ms, 4 pages.
        let mut prog = vec![2, 11, 9, 63, 9, 0, 3];
        prog.extend_from_slice(&[3, 2, 3]); // key 2: all 4 grid pieces in order → complete
        prog.extend_from_slice(&[0, 4, 0, 3, 0]); // key 4: piece 0 of 4
        prog.extend_from_slice(&[0, 4, 0, 1, 0]); // key 4: piece 0 of 2 → overlap
        prog.extend_from_slice(&[0, 6, 0, 3, 1]); // key 6: piece 1 of 4 → pending
        prog.extend_from_slice(&[4, 200, 4, 200]); // 100 ms pass
        prog.extend_from_slice(&[5, 4]); // handle_timeout
        let st = run_reassembly_ops(&prog);
        assert_eq!(st.datagrams_completed, 1);
        assert_eq!(st.drops.get(DropReason::ReassemblyOverlap), 1);
        assert_eq!(st.drops.get(DropReason::ReassemblyTimeout), 1);
        assert_eq!(st.fragments_in, 7);
    }
}
