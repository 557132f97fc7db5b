//! The slow-path classifier: tuple-space search (Srinivasan, Suri and Varghese, "Packet
//! classification using tuple space search", SIGCOMM 1999), with priority-sorted tuples as in
//! Open vSwitch.
//!
//! Owns: the index from a [`RuleKey`] to the best matching rule. Does not own what a match
//! means ([`RuleMatch::matches`] is the reference, re-checked on every candidate) nor rule
//! activity (the caller passes the compiled rules with their `active` flag).
//!
//! # How it works
//!
//! A rule's **shape** is which fields it pins to one value: the IP version and the two prefix
//! lengths, the protocol (its value: TCP rules and UDP rules are different tuples), and
//! whether each port (a one-port range), DSCP (a one-value set), VLAN, VNI and vNIC are
//! exact. Rules of one shape form a **tuple**, with a hash map from the rule's values in
//! those fields (addresses masked to the tuple's prefix lengths) to the list of its rules in
//! priority order. Fields a shape does not pin (multi-port ranges, DSCP sets, wildcards) are
//! not hashed; the candidate check ([`RuleMatch::matches`]) tests them.
//!
//! Tuples are grouped by IP version and protocol, and a key visits only the (at most four)
//! groups of its version or either and its protocol or any: a TCP/IPv4 key never looks at
//! the UDP or IPv6 tuples. A lookup packs the key once into six words, then walks each
//! such group in order of the best rule each tuple holds. A tuple is skipped with a compare
//! if it pins a field the key does not carry, and with one probe of a small hash set
//! (remembered for the rest of the lookup) if no rule's prefix of the tuple's source or
//! destination length contains the key's address: the *tuple pruning* of the same paper,
//! which matters because a rule set usually has few prefix lengths but many shapes. Otherwise
//! the key is masked to the tuple's shape (six ANDs), hashed, the hash map probed once and
//! the bucket walked until a rule matches (and is active). A group's walk stops as soon as
//! the next tuple's best rule cannot beat the match found, so a high-priority hit ends it
//! early.
//!
//! Cost: at most `T` tuple visits for the `T` distinct shapes in the key's groups (`T` is
//! bounded by the rule count; shapes vary with prefix lengths and protocols, not with
//! addresses: the benchmark's mix has 9 shapes for 10 rules, ~240 for 1 000 and ~430 for
//! 10 000, over all groups), each a few compares; plus at most one prefix probe per distinct
//! prefix length and side; plus one hash probe per tuple that survives pruning; plus the
//! bucket walk, which is linear only in rules that share a shape *and* its exact values
//! (e.g. many port ranges on one address pair). Memory is linear in the rule count. Building
//! sorts the rules: `O(n log n)`. Lookup allocates nothing.

use alloc::vec::Vec;
use core::hash::BuildHasher;

use foldhash::fast::FixedState;
use hashbrown::HashTable;

use super::matcher::{IpFamily, RuleKey, RuleMatch, addr_bits, prefix_mask};

/// A rule's place in the priority order: `(priority << 32) | index`. Lower wins; among equal
/// priorities the rule listed first wins (a linear scan in list order would agree).
pub(super) type Order = u64;

/// The order value of rule `index` with `priority`.
pub(super) fn order(priority: u32, index: u32) -> Order {
    (u64::from(priority) << 32) | u64::from(index)
}

/// Which fields a tuple pins to exact values.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(super) struct Shape {
    family: Option<IpFamily>,
    src_len: u8,
    dst_len: u8,
    /// The protocol *value* is part of the shape: a key skips the tuples of other protocols
    /// with one compare, before any hashing.
    protocol: Option<u8>,
    src_port: bool,
    dst_port: bool,
    dscp: bool,
    vlan: bool,
    vni: bool,
    vnic: bool,
}

impl Shape {
    pub(super) fn of(m: &RuleMatch) -> Self {
        Self {
            family: m.family(),
            src_len: m.src.map_or(0, |p| p.len),
            dst_len: m.dst.map_or(0, |p| p.len),
            protocol: m.protocol,
            src_port: m.src_ports.and_then(|r| r.as_single()).is_some(),
            dst_port: m.dst_ports.and_then(|r| r.as_single()).is_some(),
            dscp: m.dscp.and_then(|s| s.as_single()).is_some(),
            vlan: m.vlan.is_some(),
            vni: m.vni.is_some(),
            vnic: m.vnic.is_some(),
        }
    }

    /// `true` if every rule of shape `self` that covers a rule of shape `finer` can be found
    /// by projecting `finer`'s values onto `self` (used by the shadow check).
    pub(super) fn coarser_or_equal(&self, finer: &Self) -> bool {
        (self.family.is_none() || self.family == finer.family)
            && self.src_len <= finer.src_len
            && self.dst_len <= finer.dst_len
            && (self.protocol.is_none() || self.protocol == finer.protocol)
            && (!self.src_port || finer.src_port)
            && (!self.dst_port || finer.dst_port)
            && (!self.dscp || finer.dscp)
            && (!self.vlan || finer.vlan)
            && (!self.vni || finer.vni)
            && (!self.vnic || finer.vnic)
    }
}

/// A rule's or a key's fields packed into six words, so that projecting onto a shape is six
/// ANDs with the tuple's mask and hashing is one pass over 48 bytes:
///
/// ```text
/// [0] src bits 0..64   [1] src bits 64..128   [2] dst bits 0..64   [3] dst bits 64..128
/// [4] protocol 0..8 | src port 8..24 | dst port 24..40 | dscp 40..46 | IP version 48..50
/// [5] vni 0..24 | vlan 24..36 | vnic 36..52
/// ```
///
/// Packing may lose bits of out-of-range values (a VLAN id above 4095, say); it only has to
/// map equal values to equal words, because every bucket hit is checked with
/// [`RuleMatch::matches`].
pub(super) type Words = [u64; 6];

/// Key fields that may be absent, as bits of a presence mask.
const HAS_DSCP: u8 = 1;
const HAS_VLAN: u8 = 2;
const HAS_VNI: u8 = 4;

const PROTOCOL: u64 = 0xff;
const SRC_PORT: u64 = 0xffff << 8;
const DST_PORT: u64 = 0xffff << 24;
const DSCP: u64 = 0x3f << 40;
const FAMILY: u64 = 0b11 << 48;
const VNI: u64 = 0xff_ffff;
const VLAN: u64 = 0xfff << 24;
const VNIC: u64 = 0xffff << 36;

/// The IP version code in word 4: 1 = IPv4, 2 = IPv6, 3 = mixed (a key only; matches no
/// version-pinned tuple), 0 = either (a rule without prefixes).
const fn family_code(f: IpFamily) -> u64 {
    match f {
        IpFamily::V4 => 1,
        IpFamily::V6 => 2,
    }
}

fn split(bits: u128) -> (u64, u64) {
    // Truncation intended: the low and the high half.
    (bits as u64, (bits >> 64) as u64)
}

fn pack(src: u128, dst: u128, family: u64, w4: u64, w5: u64) -> Words {
    let (s0, s1) = split(src);
    let (d0, d1) = split(dst);
    [s0, s1, d0, d1, w4 | (family << 48), w5]
}

fn port_bits(protocol: u8, src_port: u16, dst_port: u16, dscp: u8) -> u64 {
    u64::from(protocol)
        | (u64::from(src_port) << 8)
        | (u64::from(dst_port) << 24)
        | ((u64::from(dscp) & 0x3f) << 40)
}

fn tag_bits(vni: u32, vlan: u16, vnic: u16) -> u64 {
    (u64::from(vni) & VNI) | ((u64::from(vlan) & 0xfff) << 24) | (u64::from(vnic) << 36)
}

/// A key's words, its IP version code and which optional fields it carries.
#[inline]
fn key_words(k: &RuleKey) -> (Words, u64, u8) {
    let (fs, fd) = (IpFamily::of(k.src), IpFamily::of(k.dst));
    let family = if fs == fd { family_code(fs) } else { 3 };
    let present = (if k.dscp.is_some() { HAS_DSCP } else { 0 })
        | (if k.vlan.is_some() { HAS_VLAN } else { 0 })
        | (if k.vni.is_some() { HAS_VNI } else { 0 });
    let w = pack(
        addr_bits(k.src),
        addr_bits(k.dst),
        family,
        port_bits(k.protocol, k.src_port, k.dst_port, k.dscp.unwrap_or(0)),
        tag_bits(k.vni.unwrap_or(0), k.vlan.unwrap_or(0), k.vnic),
    );
    (w, family, present)
}

/// A rule's words: its exact values (fields it does not pin hold anything; the tuple mask
/// clears them).
fn match_words(m: &RuleMatch) -> Words {
    pack(
        m.src.map_or(0, |p| addr_bits(p.addr)),
        m.dst.map_or(0, |p| addr_bits(p.addr)),
        m.family().map_or(0, family_code),
        port_bits(
            m.protocol.unwrap_or(0),
            m.src_ports.map_or(0, |r| r.lo),
            m.dst_ports.map_or(0, |r| r.lo),
            m.dscp.and_then(|d| d.as_single()).unwrap_or(0),
        ),
        tag_bits(m.vni.unwrap_or(0), m.vlan.unwrap_or(0), m.vnic.unwrap_or(0)),
    )
}

#[inline]
fn and(a: &Words, b: &Words) -> Words {
    core::array::from_fn(|i| a[i] & b[i])
}

/// One tuple: a shape and its hash map.
#[derive(Clone, Debug)]
struct Tuple {
    shape: Shape,
    /// The bits of [`Words`] the shape pins.
    mask: Words,
    /// The IP version code the shape pins (0: either).
    family: u64,
    /// Optional key fields the shape pins (`HAS_*`): a key without one of them cannot match.
    required: u8,
    /// The best (lowest) order of the tuple's rules.
    best: Order,
    /// Buckets: `(masked words, start, len)` into `TupleSpace::entries`.
    buckets: HashTable<(Words, u32, u32)>,
}

impl Tuple {
    fn new(shape: Shape) -> Self {
        let s = &shape;
        let prefix = |len| shape.family.map_or(0, |f| prefix_mask(f, len));
        let pick = |pinned: bool, bits: u64| if pinned { bits } else { 0 };
        let mask = pack(
            prefix(s.src_len),
            prefix(s.dst_len),
            0,
            pick(s.protocol.is_some(), PROTOCOL)
                | pick(s.src_port, SRC_PORT)
                | pick(s.dst_port, DST_PORT)
                | pick(s.dscp, DSCP)
                | pick(s.family.is_some(), FAMILY),
            pick(s.vni, VNI) | pick(s.vlan, VLAN) | pick(s.vnic, VNIC),
        );
        let required = (if s.dscp { HAS_DSCP } else { 0 })
            | (if s.vlan { HAS_VLAN } else { 0 })
            | (if s.vni { HAS_VNI } else { 0 });
        Self {
            shape,
            mask,
            family: shape.family.map_or(0, family_code),
            required,
            best: Order::MAX,
            buckets: HashTable::new(),
        }
    }
}

/// What the classifier needs of a compiled rule.
pub(super) trait Candidate {
    fn matcher(&self) -> &RuleMatch;
    fn order(&self) -> Order;
    /// `false` for a rule whose condition is off: it is skipped.
    fn active(&self) -> bool;
}

/// A set of prefix lengths `0..=128` as a bit set.
#[derive(Clone, Copy, Debug)]
struct LenSet([u64; 3]);

impl LenSet {
    /// Length 0 only: a `/0` prefix or no prefix matches any address.
    const ZERO: Self = Self([1, 0, 0]);

    #[inline(always)]
    fn contains(&self, len: u8) -> bool {
        let len = usize::from(len);
        self.0
            .get(len / 64)
            .is_some_and(|w| w & (1 << (len % 64)) != 0)
    }

    fn insert(&mut self, len: u8) {
        let len = usize::from(len);
        if let Some(w) = self.0.get_mut(len / 64) {
            *w |= 1 << (len % 64);
        }
    }
}

fn family_index(f: IpFamily) -> usize {
    match f {
        IpFamily::V4 => 0,
        IpFamily::V6 => 1,
    }
}

/// The prefixes of one side (source or destination) and IP version that rules use, as a
/// hash set of `(length, network)`. Answers "does some rule's prefix of length `len`
/// contain this address" with one probe — the tuple pruning of Srinivasan et al.: a tuple
/// whose prefix length fails it is skipped without touching its hash map.
#[derive(Clone, Debug, Default)]
struct LengthIndex {
    networks: HashTable<(u8, u128)>,
}

impl LengthIndex {
    fn insert(&mut self, hasher: &FixedState, len: u8, bits: u128) {
        let e = (len, bits);
        let h = hasher.hash_one(e);
        if len > 0 && self.networks.find(h, |x| *x == e).is_none() {
            self.networks.insert_unique(h, e, |x| hasher.hash_one(*x));
        }
    }
}

/// The lengths at which some prefix of a [`LengthIndex`] contains one address, probed on
/// demand and remembered for the rest of the lookup.
struct LazyLens<'a> {
    index: &'a LengthIndex,
    bits: u128,
    family: IpFamily,
    probed: LenSet,
    found: LenSet,
}

impl<'a> LazyLens<'a> {
    fn new(index: &'a LengthIndex, bits: u128, family: IpFamily) -> Self {
        Self {
            index,
            bits,
            family,
            probed: LenSet::ZERO,
            found: LenSet::ZERO,
        }
    }

    /// `true` if some prefix of length `len` contains the address (always for 0).
    #[inline(always)]
    fn contains(&mut self, hasher: &FixedState, len: u8) -> bool {
        if self.probed.contains(len) {
            self.found.contains(len)
        } else {
            self.probe(hasher, len)
        }
    }

    /// The first question about `len`: one hash probe, remembered.
    #[inline(never)]
    fn probe(&mut self, hasher: &FixedState, len: u8) -> bool {
        self.probed.insert(len);
        let e = (len, self.bits & prefix_mask(self.family, len));
        let hit = self
            .index
            .networks
            .find(hasher.hash_one(e), |x| *x == e)
            .is_some();
        if hit {
            self.found.insert(len);
        }
        hit
    }
}

/// A tuple's fields the lookup checks before probing it.
#[derive(Clone, Copy, Debug)]
struct PreCheck {
    best: Order,
    src_len: u8,
    dst_len: u8,
    required: u8,
}

/// The tuples of one IP version code and protocol (`None`: any), a contiguous run of
/// `TupleSpace::tuples`.
#[derive(Clone, Copy, Debug)]
struct Group {
    family: u64,
    protocol: Option<u8>,
    start: u32,
    end: u32,
}

/// The tuple-space index over a rule list.
#[derive(Clone, Debug)]
pub(super) struct TupleSpace {
    hasher: FixedState,
    /// Tuple pruning on the prefixes: `[side][family]`, side 0 = source, 1 = destination.
    prefixes: [[LengthIndex; 2]; 2],
    /// Tuple groups by IP version and protocol: a key visits at most four of them (its
    /// version or any, its protocol or any).
    groups: Vec<Group>,
    /// Tuples, group by group, each group by ascending `best`.
    tuples: Vec<Tuple>,
    /// What the lookup checks before probing `tuples[i]`, packed densely (40 bytes a tuple)
    /// so skipping a tuple touches little memory.
    pre: Vec<PreCheck>,
    /// Rule indices, bucket by bucket, each bucket in ascending order.
    entries: Vec<u32>,
}

impl TupleSpace {
    /// Index `rules` (build time; allocates).
    pub(super) fn build<C: Candidate>(rules: &[C], seed: u64) -> Self {
        let hasher = FixedState::with_seed(seed);
        let mut shapes: hashbrown::HashMap<Shape, usize, FixedState> =
            hashbrown::HashMap::with_hasher(hasher.clone());
        // (tuple, bucket key, order, rule index), sorted so each bucket is contiguous and in
        // priority order.
        let mut placed: Vec<(usize, Words, Order, u32)> = Vec::with_capacity(rules.len());
        let mut tuples: Vec<Tuple> = Vec::new();
        let mut prefixes: [[LengthIndex; 2]; 2] = Default::default();
        for (i, r) in rules.iter().enumerate() {
            let m = r.matcher();
            for (side, p) in [m.src, m.dst].into_iter().enumerate() {
                if let Some(p) = p
                    && m.family() == Some(p.family())
                {
                    prefixes[side][family_index(p.family())].insert(
                        &hasher,
                        p.len,
                        addr_bits(p.addr),
                    );
                }
            }
            let shape = Shape::of(r.matcher());
            let t = *shapes.entry(shape).or_insert_with(|| {
                tuples.push(Tuple::new(shape));
                tuples.len() - 1
            });
            let key = and(&match_words(r.matcher()), &tuples[t].mask);
            tuples[t].best = tuples[t].best.min(r.order());
            let index = u32::try_from(i).expect("invariant: rule count checked below u32::MAX");
            placed.push((t, key, r.order(), index));
        }
        // Each bucket contiguous (same tuple and key), in priority order.
        placed.sort_unstable_by_key(|p| (p.0, p.1, p.2));
        let mut entries = Vec::with_capacity(placed.len());
        for run in placed.chunk_by(|a, b| a.0 == b.0 && a.1 == b.1) {
            let (t, key, _, _) = run[0];
            let start = u32::try_from(entries.len()).expect("invariant: entries fit u32");
            entries.extend(run.iter().map(|p| p.3));
            let len = u32::try_from(run.len()).expect("invariant: entries fit u32");
            tuples[t]
                .buckets
                .insert_unique(hasher.hash_one(key), (key, start, len), |e| {
                    hasher.hash_one(e.0)
                });
        }
        // Grouped by (IP version, protocol), each group by ascending best rule.
        tuples.sort_by_key(|t| (t.family, t.shape.protocol, t.best));
        let mut groups = Vec::new();
        let mut start = 0;
        for run in
            tuples.chunk_by(|a, b| (a.family, a.shape.protocol) == (b.family, b.shape.protocol))
        {
            let end = start + run.len();
            groups.push(Group {
                family: run[0].family,
                protocol: run[0].shape.protocol,
                start: u32::try_from(start).expect("invariant: tuples fit u32"),
                end: u32::try_from(end).expect("invariant: tuples fit u32"),
            });
            start = end;
        }
        let pre = tuples
            .iter()
            .map(|t| PreCheck {
                best: t.best,
                src_len: t.shape.src_len,
                dst_len: t.shape.dst_len,
                required: t.required,
            })
            .collect();
        Self {
            hasher,
            prefixes,
            groups,
            tuples,
            pre,
            entries,
        }
    }

    /// Number of tuples (distinct shapes).
    pub(super) fn tuple_count(&self) -> usize {
        self.tuples.len()
    }

    /// The index of the best active rule matching `key`. Allocates nothing.
    #[inline]
    pub(super) fn lookup<C: Candidate>(&self, rules: &[C], key: &RuleKey) -> Option<u32> {
        let mut best: Option<(Order, u32)> = None;
        let (words, family, present) = key_words(key);
        // Tuple pruning: the prefix lengths at which some rule's source (destination) prefix
        // contains the key's address, found lazily (one probe per length, when a tuple first
        // needs it). A tuple pinning another length cannot match.
        let f = IpFamily::of(key.src);
        let i = family_index(f);
        let mut src_lens = LazyLens::new(&self.prefixes[0][i], addr_bits(key.src), f);
        let mut dst_lens = LazyLens::new(&self.prefixes[1][i], addr_bits(key.dst), f);
        for g in &self.groups {
            if (g.family != 0 && g.family != family)
                || g.protocol.is_some_and(|p| p != key.protocol)
            {
                continue;
            }
            for t in g.start as usize..g.end as usize {
                let (Some(tuple), Some(pre)) = (self.tuples.get(t), self.pre.get(t)) else {
                    break;
                };
                // Within a group the tuples come by their best rule: none further on can beat
                // the match found.
                if best.is_some_and(|(o, _)| o <= pre.best) {
                    break;
                }
                // Cheap rejections: a pinned field the key lacks; then the prefix lengths.
                if pre.required & !present != 0
                    || !src_lens.contains(&self.hasher, pre.src_len)
                    || !dst_lens.contains(&self.hasher, pre.dst_len)
                {
                    continue;
                }
                best = Self::probe(tuple, &self.hasher, &self.entries, rules, key, &words, best);
            }
        }
        best.map(|(_, i)| i)
    }

    /// Probe one tuple: the bucket of the key's masked words, walked in priority order.
    #[inline]
    fn probe<C: Candidate>(
        t: &Tuple,
        hasher: &FixedState,
        entries: &[u32],
        rules: &[C],
        key: &RuleKey,
        words: &Words,
        mut best: Option<(Order, u32)>,
    ) -> Option<(Order, u32)> {
        let bk = and(words, &t.mask);
        let Some(&(_, start, len)) = t.buckets.find(hasher.hash_one(bk), |e| e.0 == bk) else {
            return best;
        };
        let start = start as usize;
        let bucket = entries.get(start..start + len as usize).unwrap_or_default();
        for &i in bucket {
            let Some(r) = rules.get(i as usize) else {
                continue;
            };
            if best.is_some_and(|(o, _)| o <= r.order()) {
                break;
            }
            if r.active() && r.matcher().matches(key) {
                best = Some((r.order(), i));
                break;
            }
        }
        best
    }

    /// Every rule that might cover a rule with match `m` (shape-wise coarser or equal tuples,
    /// the bucket `m` projects to), for the validator. Build time only.
    pub(super) fn covering_candidates<'a>(
        &'a self,
        m: &'a RuleMatch,
    ) -> impl Iterator<Item = u32> + 'a {
        let shape = Shape::of(m);
        let words = match_words(m);
        self.tuples
            .iter()
            .filter(move |t| t.shape.coarser_or_equal(&shape))
            .flat_map(move |t| {
                let bk = and(&words, &t.mask);
                let h = self.hasher.hash_one(bk);
                let bucket = t
                    .buckets
                    .find(h, |e| e.0 == bk)
                    .map_or(&[][..], |&(_, s, l)| {
                        self.entries
                            .get(s as usize..(s + l) as usize)
                            .unwrap_or_default()
                    });
                bucket.iter().copied()
            })
    }
}
