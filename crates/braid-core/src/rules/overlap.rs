//! Every pair of overlapping matches in a list, found without comparing every pair: the
//! search behind the validator's conflict check among the rules of one priority.
//!
//! Owns: the pair search. Does not own what "overlap" means ([`RuleMatch::overlaps`] is
//! called on every pair reported, and decides) nor what an overlapping pair of rules is (a
//! conflict, a duplicate, or nothing: `super::validate`).
//!
//! # Why not compare every pair
//!
//! A priority level of `k` rules has `k²/2` pairs: 50 million for a NAT or service table of
//! 10 000 rules at one priority, several seconds of `overlaps` calls for a set that usually
//! has no overlap at all. Rules of such a table differ somewhere: in their destination
//! prefix, their ports, their VNI. The search finds where.
//!
//! # How
//!
//! Each field of a match is an interval on its own axis ([`AXES`] of them): a prefix is the
//! range of its addresses (tagged by IP version, so IPv4 and IPv6 never meet; no prefix on
//! a match that fixes its version is the whole version, none at all both versions), a port
//! range is itself, an exact protocol, VLAN, VNI or vNIC is one point and a wildcard the
//! whole axis, and a DSCP set is widened to its lowest..highest value. Two matches overlap
//! only if their intervals meet on every axis: exactly so for prefixes (two prefixes meet
//! exactly when one holds the other), ports and the exact-or-any fields; the DSCP widening
//! only adds candidates. So intervals that do not meet on one axis rule a pair out.
//!
//! The list is split recursively, as a decision tree for packet classification cuts its
//! rule space (Gupta and McKeown, "Packet classification using hierarchical intelligent
//! cuttings", Hot Interconnects 1999): on one axis, the rules whose interval spans the
//! whole extent of the list (*wide*: `0.0.0.0/0` among host routes, say) are compared with
//! every other rule of the list; the others fall into connected components (sorted by the
//! start of their interval, a component ends where no interval so far reaches the next
//! start), and two rules of different components cannot overlap. Each component is split
//! again, on whichever axis splits it best: the one whose split leaves the fewest pairs to
//! compare (`wide × all + Σ component²/2`). A list of at most [`SMALL`] rules, or one that no
//! axis splits to at most half its pairs, is compared pairwise.
//!
//! Cost: each split sorts the list on every axis, `O(AXES · m log m)` for `m` rules, and
//! makes the largest component at most `m/√2` rules (the half-pairs rule), so the depth is
//! `O(log m)`: `O(AXES · k log² k)` for a level whose rules are told apart by their fields
//! (benchmark `rules/build_one_priority/10000`), plus the pairs left to compare. In the worst
//! case — rules that really overlap, or that only a combination of axes separates, like
//! boxes on a diagonal — it compares every pair, as before. Allocates (build time only).

use alloc::vec::Vec;

use super::matcher::{IpFamily, PortRange, RuleMatch, addr_bits};

/// The axes a match is an interval on: source and destination address, protocol, source and
/// destination port, DSCP, VLAN, VNI, vNIC.
const AXES: usize = 9;

/// Lists this short are compared pairwise.
const SMALL: usize = 16;

/// A point on an axis: `(IP version tag, value)`, ordered lexicographically. Only the
/// address axes use the tag (1 = IPv4, 2 = IPv6); the others have tag 0.
type Point = (u8, u128);

/// A closed interval on an axis.
#[derive(Clone, Copy, Debug)]
struct Span {
    lo: Point,
    hi: Point,
}

impl Span {
    const fn of(lo: u128, hi: u128) -> Self {
        Self {
            lo: (0, lo),
            hi: (0, hi),
        }
    }
}

const fn tag(f: IpFamily) -> u8 {
    match f {
        IpFamily::V4 => 1,
        IpFamily::V6 => 2,
    }
}

/// The largest address of `f`, right-aligned like [`addr_bits`].
const fn top(f: IpFamily) -> u128 {
    match f {
        IpFamily::V4 => u32::MAX as u128,
        IpFamily::V6 => u128::MAX,
    }
}

/// One side's addresses, as [`RuleMatch::overlaps`] sees them: the prefix, or the whole
/// IP version the match fixes, or both versions.
fn address_span(m: &RuleMatch, side: Option<super::IpPrefix>) -> Span {
    match (side, m.family()) {
        (Some(p), _) => {
            let f = p.family();
            let lo = addr_bits(p.addr);
            Span {
                lo: (tag(f), lo),
                hi: (tag(f), lo | (top(f) & !p.mask())),
            }
        }
        (None, Some(f)) => Span {
            lo: (tag(f), 0),
            hi: (tag(f), top(f)),
        },
        (None, None) => Span {
            lo: (tag(IpFamily::V4), 0),
            hi: (tag(IpFamily::V6), u128::MAX),
        },
    }
}

fn ports_span(r: Option<PortRange>) -> Span {
    let r = r.unwrap_or(PortRange::ANY);
    Span::of(u128::from(r.lo), u128::from(r.hi))
}

/// An exact value or, for `None`, the whole axis `0..=max`.
fn exact_span(v: Option<u32>, max: u32) -> Span {
    v.map_or(Span::of(0, u128::from(max)), |v| {
        Span::of(u128::from(v), u128::from(v))
    })
}

/// The interval of `m` on `axis`.
fn span(m: &RuleMatch, axis: usize) -> Span {
    match axis {
        0 => address_span(m, m.src),
        1 => address_span(m, m.dst),
        2 => exact_span(m.protocol.map(u32::from), u32::from(u8::MAX)),
        3 => ports_span(m.src_ports),
        4 => ports_span(m.dst_ports),
        5 => match m.dscp {
            // Lowest..highest value: a superset of the set.
            Some(s) if s.0 != 0 => Span::of(
                u128::from(s.0.trailing_zeros()),
                u128::from(63 - s.0.leading_zeros()),
            ),
            _ => Span::of(0, 63),
        },
        6 => exact_span(m.vlan.map(u32::from), u32::from(u16::MAX)),
        7 => exact_span(m.vni, u32::MAX),
        _ => exact_span(m.vnic.map(u32::from), u32::from(u16::MAX)),
    }
}

/// Pairs left to compare if `m` rules are compared pairwise.
const fn pairs(m: usize) -> usize {
    m * m.saturating_sub(1) / 2
}

/// How one axis splits a list: the wide rules, and the components of the others (as
/// lengths of consecutive runs of `order`).
struct Split {
    axis: usize,
    /// Pairs left to compare after the split (see the module doc).
    cost: usize,
    wide: Vec<u32>,
    /// The non-wide rules, component by component.
    order: Vec<u32>,
    runs: Vec<usize>,
}

/// Split `list` on `axis`.
fn split(matchers: &[RuleMatch], list: &[u32], axis: usize) -> Split {
    let mut spans: Vec<(Span, u32)> = list
        .iter()
        .map(|&i| (span(&matchers[i as usize], axis), i))
        .collect();
    spans.sort_unstable_by_key(|(s, i)| (s.lo, *i));
    let lo = spans.first().map_or((0, 0), |(s, _)| s.lo);
    let hi = spans.iter().map(|(s, _)| s.hi).max().unwrap_or((0, 0));
    let mut wide = Vec::new();
    let mut order = Vec::with_capacity(spans.len());
    let mut runs = Vec::new();
    let mut reach: Option<Point> = None;
    for (s, i) in spans {
        if s.lo <= lo && s.hi >= hi {
            wide.push(i);
            continue;
        }
        match reach {
            Some(r) if s.lo <= r => {
                reach = Some(r.max(s.hi));
                if let Some(n) = runs.last_mut() {
                    *n += 1;
                }
            }
            _ => {
                reach = Some(s.hi);
                runs.push(1);
            }
        }
        order.push(i);
    }
    let w = wide.len();
    let cost = w * (list.len() - w) + pairs(w) + runs.iter().map(|&n| pairs(n)).sum::<usize>();
    Split {
        axis,
        cost,
        wide,
        order,
        runs,
    }
}

/// Call `found(x, y)` (`x < y`) for every pair of indices into `matchers` whose matches
/// overlap ([`RuleMatch::overlaps`]), each pair once, in no particular order. Returns the
/// number of pairs it compared (the work done; at most `n(n-1)/2`).
pub(super) fn overlapping_pairs(
    matchers: &[RuleMatch],
    mut found: impl FnMut(usize, usize),
) -> usize {
    let all: Vec<u32> = (0..matchers.len())
        .map(|i| u32::try_from(i).expect("invariant: rule count checked below u32::MAX"))
        .collect();
    let mut compared = 0;
    search(matchers, &all, &mut found, &mut compared);
    compared
}

fn check(
    matchers: &[RuleMatch],
    a: u32,
    b: u32,
    found: &mut impl FnMut(usize, usize),
    compared: &mut usize,
) {
    *compared += 1;
    let (a, b) = (a.min(b) as usize, a.max(b) as usize);
    if matchers[a].overlaps(&matchers[b]) {
        found(a, b);
    }
}

fn search(
    matchers: &[RuleMatch],
    list: &[u32],
    found: &mut impl FnMut(usize, usize),
    compared: &mut usize,
) {
    let brute = pairs(list.len());
    let best = if list.len() <= SMALL {
        None
    } else {
        (0..AXES)
            .map(|axis| split(matchers, list, axis))
            .min_by_key(|s| (s.cost, s.axis))
            .filter(|s| s.cost <= brute / 2)
    };
    let Some(s) = best else {
        for (x, &a) in list.iter().enumerate() {
            for &b in &list[x + 1..] {
                check(matchers, a, b, found, compared);
            }
        }
        return;
    };
    // The wide rules meet every rule of the list on this axis: compare them with all.
    for (x, &w) in s.wide.iter().enumerate() {
        for &v in s.wide[x + 1..].iter().chain(&s.order) {
            check(matchers, w, v, found, compared);
        }
    }
    let mut at = 0;
    for &n in &s.runs {
        let component = &s.order[at..at + n];
        at += n;
        if n > 1 {
            search(matchers, component, found, compared);
        }
    }
}

/// An address as a point on an address axis (for the tests).
#[cfg(test)]
fn point(addr: core::net::IpAddr) -> Point {
    (tag(IpFamily::of(addr)), addr_bits(addr))
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;
    use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::rules::{DscpSet, IpPrefix};

    fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Option<IpPrefix> {
        Some(IpPrefix::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), len).unwrap())
    }

    fn naive(ms: &[RuleMatch]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for a in 0..ms.len() {
            for b in a + 1..ms.len() {
                if ms[a].overlaps(&ms[b]) {
                    out.push((a, b));
                }
            }
        }
        out
    }

    fn found(ms: &[RuleMatch]) -> (Vec<(usize, usize)>, usize) {
        let mut out = Vec::new();
        let compared = overlapping_pairs(ms, |a, b| out.push((a, b)));
        out.sort_unstable();
        (out, compared)
    }

    /// The intervals are those of the match semantics: a prefix is its address range, a
    /// match that fixes its version spans that version on its other side, none both.
    #[test]
    fn spans_follow_the_match_semantics() {
        let m = RuleMatch {
            src: v4(10, 0, 0, 0, 8),
            dscp: Some(DscpSet::of(&[10, 46])),
            vni: Some(7),
            ..RuleMatch::ANY
        };
        let s = span(&m, 0);
        assert_eq!(s.lo, point(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0))));
        assert_eq!(s.hi, point(IpAddr::V4(Ipv4Addr::new(10, 255, 255, 255))));
        // dst: all of IPv4.
        let d = span(&m, 1);
        assert_eq!((d.lo, d.hi), ((1, 0), (1, u128::from(u32::MAX))));
        assert_eq!((span(&m, 5).lo, span(&m, 5).hi), ((0, 10), (0, 46)));
        assert_eq!((span(&m, 7).lo, span(&m, 7).hi), ((0, 7), (0, 7)));
        // No prefix, no version: both versions.
        let any = span(&RuleMatch::ANY, 1);
        assert_eq!((any.lo, any.hi), ((1, 0), (2, u128::MAX)));
        let v6 = RuleMatch {
            dst: Some(IpPrefix::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0).unwrap()),
            ..RuleMatch::ANY
        };
        assert_eq!(span(&v6, 1).lo, (2, 0));
    }

    /// A table told apart by destination prefixes (hosts, subnets, IPv6) and by ports on one
    /// prefix, with a few real overlaps planted: exactly the pairs a pairwise loop finds,
    /// after a small fraction of its comparisons.
    #[test]
    fn a_disjoint_table_costs_far_fewer_comparisons_than_all_pairs() {
        let mut ms: Vec<RuleMatch> = (0..4000u32)
            .map(|i| {
                let k = i / 4;
                let [_, _, a, b] = k.to_be_bytes();
                match i % 4 {
                    0 => RuleMatch {
                        dst: v4(100, 64, a, b, 32),
                        protocol: Some(6),
                        dst_ports: Some(PortRange::single(443)),
                        ..RuleMatch::ANY
                    },
                    1 => RuleMatch {
                        dst: v4(172, 16 + a, b, 0, 24),
                        ..RuleMatch::ANY
                    },
                    2 => RuleMatch {
                        dst: Some(
                            IpPrefix::new(
                                IpAddr::V6(Ipv6Addr::from(
                                    (0x2001_0db8u128 << 96) | (u128::from(k) << 64),
                                )),
                                64,
                            )
                            .unwrap(),
                        ),
                        ..RuleMatch::ANY
                    },
                    _ => RuleMatch {
                        dst: v4(192, 168, 0, 0, 16),
                        protocol: Some(17),
                        dst_ports: Some(PortRange::single(20_000 + k as u16)),
                        ..RuleMatch::ANY
                    },
                }
            })
            .collect();
        // Overlaps: a /16 over some /24s, a port range over some ports, a wildcard rule.
        ms.push(RuleMatch {
            dst: v4(172, 16, 0, 0, 16),
            ..RuleMatch::ANY
        });
        ms.push(RuleMatch {
            dst: v4(192, 168, 0, 0, 16),
            protocol: Some(17),
            dst_ports: Some(PortRange::new(20_010, 20_019)),
            ..RuleMatch::ANY
        });
        ms.push(RuleMatch {
            vni: Some(9),
            ..RuleMatch::ANY
        });
        let want = naive(&ms);
        let (got, compared) = found(&ms);
        assert_eq!(got, want);
        // The /16 holds 256 of the /24s, the range 10 ports, and the VNI rule meets all.
        assert_eq!(want.len(), 256 + 10 + (ms.len() - 1));
        let all = pairs(ms.len());
        assert!(
            compared * 100 < all,
            "{compared} comparisons of {all} pairs: the search does not split"
        );
    }

    /// Random lists over a small space (nested prefixes, ranges, DSCP sets, wildcards):
    /// the same pairs as the pairwise loop, each once.
    #[test]
    fn random_lists_give_the_pairwise_answer() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for round in 0..60 {
            let n = 20 + round * 7;
            let ms: Vec<RuleMatch> = (0..n)
                .map(|_| {
                    let mut m = RuleMatch::ANY;
                    if rng.random_bool(0.7) {
                        let len = [8, 16, 24, 32][rng.random_range(0..4)];
                        let b = rng.random_range(0..4);
                        let c = rng.random_range(0..4);
                        let addr = u32::from(Ipv4Addr::new(10, b, c, rng.random_range(0..4)));
                        let mask = if len == 32 {
                            u32::MAX
                        } else {
                            !(u32::MAX >> len)
                        };
                        m.dst = Some(
                            IpPrefix::new(IpAddr::V4(Ipv4Addr::from(addr & mask)), len).unwrap(),
                        );
                    } else if rng.random_bool(0.3) {
                        m.src = Some(
                            IpPrefix::new(
                                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0)),
                                32,
                            )
                            .unwrap(),
                        );
                    }
                    if rng.random_bool(0.6) {
                        m.protocol = Some([6, 17][rng.random_range(0..2)]);
                        if rng.random_bool(0.6) {
                            let lo = rng.random_range(0..50u16);
                            m.dst_ports = Some(PortRange::new(lo, lo + rng.random_range(0..5)));
                        }
                    }
                    if rng.random_bool(0.2) {
                        m.dscp = Some(DscpSet(rng.random_range(1..u64::MAX)));
                    }
                    if rng.random_bool(0.2) {
                        m.vni = Some(rng.random_range(0..3));
                    }
                    m
                })
                .collect();
            let (got, compared) = found(&ms);
            assert_eq!(got, naive(&ms), "round {round}");
            assert!(compared <= pairs(ms.len()));
        }
    }
}
