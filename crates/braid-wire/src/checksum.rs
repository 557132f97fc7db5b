//! The Internet checksum: full computation (RFC 1071) and incremental update (RFC 1624).
//!
//! Owns the ones'-complement arithmetic only: [`Sum`] (a running sum over bytes and
//! pseudo-headers), [`checksum`], and the `update_*` functions that patch a stored checksum
//! after one field changed. It does not know where checksums live in a header, nor the
//! UDP "0 means none" rule: that is [`crate::rewrite`]'s job.
//!
//! # Full computation (RFC 1071)
//!
//! The checksum is the ones' complement of the ones' complement sum of the data taken as
//! big-endian 16-bit words (an odd last byte is padded with a zero byte). RFC 1071 §2 gives
//! the two properties the fast loop rests on:
//!
//! - **(B) byte order independence**: summing the words in the machine's own byte order and
//!   swapping the folded result once gives the same sum, so the loop never swaps bytes;
//! - **(C) parallel summation**: summing 32-bit words into a 64-bit accumulator and folding
//!   the carries back in at the end (`2^16 ≡ 1 mod 0xFFFF`) gives the same sum as adding
//!   16-bit words with end-around carry, so the loop takes four bytes per addition and never
//!   tests a carry (LLVM vectorises it).
//!
//! # Incremental update (RFC 1624)
//!
//! When a 16-bit field changes from `m` to `m'`, RFC 1624 §3 gives the new stored checksum
//! without touching the rest of the data:
//!
//! ```text
//! HC' = ~(~HC + ~m + m')          [Eqn. 3]
//! ```
//!
//! RFC 1141's `HC' = HC + m + ~m'` ([Eqn. 2]) is *not* used: it can produce `0xFFFF` (−0)
//! where a computation from scratch gives `0x0000` (+0); the RFC's §4 example is a unit test
//! below. A 32-bit field (an IPv4 address) or a 128-bit field (an IPv6 address) is the same
//! equation with two or eight `~m + m'` pairs. An unchanged field returns `HC` untouched
//! (RFC 1624 erratum 4782: with `HC = 0xFFFF` Eqn. 3 would turn it into `0x0000`).
//!
//! Eqn. 3 also preserves an error: a checksum that was wrong before the update is wrong by
//! the same amount after it, so a corrupted packet stays detectably corrupted (RFC 1624 §5).

/// A running ones' complement sum of big-endian 16-bit words (RFC 1071), not yet folded or
/// complemented.
///
/// Build it from bytes, pseudo-header fields and words in any order (the sum is
/// commutative), then [`Sum::checksum`] gives the value to store in a header. Adding bytes
/// in several slices is the same as adding their concatenation only when every slice but
/// the last has an even length (RFC 1071's words do not straddle slices).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sum(u64);

/// Bytes summed per inner block: 2^30 bytes of 32-bit words stay below 2^62 in a `u64`.
const BLOCK_BYTES: usize = 1 << 30;

impl Sum {
    /// The empty sum (zero).
    #[must_use]
    pub const fn new() -> Self {
        Self(0)
    }

    /// Adds `data` as big-endian 16-bit words; an odd last byte is padded with a zero byte.
    #[must_use]
    pub fn add_bytes(self, data: &[u8]) -> Self {
        let mut total = self.0;
        for block in data.chunks(BLOCK_BYTES) {
            total += u64::from(sum_block(block));
        }
        Self(total)
    }

    /// Adds one 16-bit word.
    #[must_use]
    pub const fn add_u16(self, word: u16) -> Self {
        Self(self.0 + word as u64)
    }

    /// Adds a 32-bit value as two 16-bit words (an IPv4 address, a length).
    #[must_use]
    pub const fn add_u32(self, value: u32) -> Self {
        Self(self.0 + (value >> 16) as u64 + (value & 0xffff) as u64)
    }

    /// Adds the IPv4 pseudo-header of TCP/UDP (RFC 793 §3.1, RFC 768): source, destination,
    /// zero + protocol, and the upper-layer length.
    #[must_use]
    pub const fn add_ipv4_pseudo_header(
        self,
        src: [u8; 4],
        dst: [u8; 4],
        protocol: u8,
        l4_len: u16,
    ) -> Self {
        self.add_u32(u32::from_be_bytes(src))
            .add_u32(u32::from_be_bytes(dst))
            .add_u16(protocol as u16)
            .add_u16(l4_len)
    }

    /// Adds the IPv6 pseudo-header of TCP/UDP/ICMPv6 (RFC 8200 §8.1): source, (final)
    /// destination, the 32-bit upper-layer length, and the next header value.
    #[must_use]
    pub fn add_ipv6_pseudo_header(
        self,
        src: [u8; 16],
        dst: [u8; 16],
        next_header: u8,
        l4_len: u32,
    ) -> Self {
        self.add_bytes(&src)
            .add_bytes(&dst)
            .add_u32(l4_len)
            .add_u16(u16::from(next_header))
    }

    /// The sum folded to 16 bits with end-around carries (not complemented). A sum of data
    /// with at least one non-zero word is never `0x0000`: ones' complement zero folds to
    /// `0xFFFF`.
    #[must_use]
    pub const fn fold(self) -> u16 {
        fold64(self.0)
    }

    /// The checksum to store: the ones' complement of the folded sum.
    #[must_use]
    pub const fn checksum(self) -> u16 {
        !self.fold()
    }
}

/// The Internet checksum of `data` (RFC 1071): `!fold(sum of big-endian words)`.
///
/// Over a header whose checksum field holds the right value the result is `0x0000`, which is
/// how a receiver verifies it.
#[must_use]
pub fn checksum(data: &[u8]) -> u16 {
    Sum::new().add_bytes(data).checksum()
}

/// Folds a 64-bit sum of 16-bit words to 16 bits with end-around carries.
const fn fold64(sum: u64) -> u16 {
    // Each step keeps the value congruent mod 0xFFFF; four steps bring any u64 to 16 bits.
    let sum = (sum & 0xffff_ffff) + (sum >> 32);
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    // The loop above leaves at most 0xFFFF: the truncation is exact.
    sum as u16
}

/// The folded big-endian sum of one block of at most [`BLOCK_BYTES`] bytes.
fn sum_block(data: &[u8]) -> u16 {
    // Native-order 32-bit words (RFC 1071 §2 (B) and (C)); two accumulators let the CPU
    // overlap the additions.
    let mut words = data.chunks_exact(8);
    let (mut a, mut b) = (0u64, 0u64);
    for chunk in &mut words {
        let (lo, hi) = chunk.split_at(4);
        a += u64::from(u32::from_ne_bytes([lo[0], lo[1], lo[2], lo[3]]));
        b += u64::from(u32::from_ne_bytes([hi[0], hi[1], hi[2], hi[3]]));
    }
    let mut native = a + b;
    let mut rest = words.remainder();
    while let [x, y, tail @ ..] = rest {
        native += u64::from(u16::from_ne_bytes([*x, *y]));
        rest = tail;
    }
    if let [last] = rest {
        native += u64::from(u16::from_ne_bytes([*last, 0]));
    }
    // The folded native-order sum, laid out in memory, is the big-endian sum's bytes.
    u16::from_be_bytes(fold64(native).to_ne_bytes())
}

/// RFC 1624 Eqn. 3 for a 16-bit field that changed from `old` to `new`: the new stored
/// checksum given the old stored checksum `hc`. Returns `hc` when `old == new`.
#[must_use]
pub const fn update_u16(hc: u16, old: u16, new: u16) -> u16 {
    if old == new {
        return hc;
    }
    !fold64(!hc as u64 + !old as u64 + new as u64)
}

/// RFC 1624 Eqn. 3 for a 32-bit field (two adjacent, 16-bit aligned words, such as an IPv4
/// address) that changed from `old` to `new`.
#[must_use]
pub const fn update_u32(hc: u16, old: u32, new: u32) -> u16 {
    if old == new {
        return hc;
    }
    // ~m over a 32-bit value is ~m_hi and ~m_lo at once; the 32-bit halves fold like words.
    !fold64(!hc as u64 + !old as u64 + new as u64)
}

/// RFC 1624 Eqn. 3 for a 128-bit field (eight adjacent, 16-bit aligned words, such as an
/// IPv6 address) that changed from `old` to `new`.
#[must_use]
pub fn update_u128(hc: u16, old: [u8; 16], new: [u8; 16]) -> u16 {
    if old == new {
        return hc;
    }
    let old = u128::from_be_bytes(old);
    let new = u128::from_be_bytes(new);
    let not_old = !old;
    // Four 32-bit pairs, each below 2^33: the total stays far below 2^64.
    let mut sum = u64::from(!hc);
    let mut shift = 0;
    while shift < 128 {
        // The masks keep 32 bits: the truncations are exact.
        sum += u64::from((not_old >> shift) as u32) + u64::from((new >> shift) as u32);
        shift += 32;
    }
    !fold64(sum)
}

/// RFC 1624 Eqn. 3 for a run of 16-bit aligned words that changed from `old` to `new`
/// (both of the same, even length; for example a 4-byte port pair).
///
/// Returns `None` if the lengths differ or are odd (a field that is not made of whole words
/// cannot be patched this way).
#[must_use]
pub fn update_bytes(hc: u16, old: &[u8], new: &[u8]) -> Option<u16> {
    if old.len() != new.len() || !old.len().is_multiple_of(2) {
        return None;
    }
    if old == new {
        return Some(hc);
    }
    // ~m summed word by word is the complement of m's folded sum (in ones' complement).
    let sum = u64::from(!hc)
        + u64::from(!Sum::new().add_bytes(old).fold())
        + u64::from(Sum::new().add_bytes(new).fold());
    Some(!fold64(sum))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    /// The obvious RFC 1071 loop, word by word with end-around carry: the reference the fast
    /// code is checked against.
    fn reference(data: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for pair in data.chunks(2) {
            let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
            sum += u32::from(word);
            if sum > 0xffff {
                sum -= 0xffff;
            }
        }
        !u16::try_from(sum).expect("kept below 0x10000")
    }

    /// The RFC 1071 §3 example: words 0x0001 0xf203 0xf4f5 0xf6f7 sum to 0xddf2.
    #[test]
    fn rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(Sum::new().add_bytes(&data).fold(), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
        // Odd length: the last byte is the high half of a word.
        assert_eq!(Sum::new().add_bytes(&[0xab]).fold(), 0xab00);
    }

    /// A real IPv4 header (Wikipedia's example, checksum 0xb861), verified both ways.
    #[test]
    fn ipv4_header_checksum() {
        let mut header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&header), 0xb861);
        header[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(checksum(&header), 0);
    }

    /// RFC 1624 §4: HC = 0xDD2F, m = 0x5555 → m' = 0x3285. Eqn. 3 gives 0x0000, what a
    /// computation from scratch gives; RFC 1141's Eqn. 2 gives 0xFFFF (−0).
    #[test]
    fn rfc1624_section4_example() {
        let (hc, m, m_new) = (0xDD2F_u16, 0x5555_u16, 0x3285_u16);
        assert_eq!(update_u16(hc, m, m_new), 0x0000);

        // Eqn. 2, HC' = HC + m + ~m', by hand: 0xDD2F + 0x5555 = 0x13284 → 0x3285 (carry
        // folded in), + ~0x3285 = 0x3285 + 0xCD7A = 0xFFFF: −0, never what RFC 1071 yields
        // for data with a non-zero word.
        let eqn2 = fold64(u64::from(hc) + u64::from(m) + u64::from(!m_new));
        assert_eq!(eqn2, 0xFFFF);

        // A header with these values: words m and 0xCD7A sum to 0x22D0, so HC = 0xDD2F.
        let mut header = [0x55, 0x55, 0xCD, 0x7A, 0xDD, 0x2F];
        assert_eq!(checksum(&header[..4]), hc);
        assert_eq!(checksum(&header), 0, "HC verifies");
        header[..2].copy_from_slice(&m_new.to_be_bytes());
        // From scratch: 0x3285 + 0xCD7A = 0xFFFF, complemented 0x0000 — Eqn. 3's answer.
        assert_eq!(checksum(&header[..4]), 0x0000);
    }

    /// Erratum 4782: an unchanged field leaves the checksum alone, even 0xFFFF.
    #[test]
    fn unchanged_field_keeps_checksum() {
        assert_eq!(update_u16(0xFFFF, 0x5555, 0x5555), 0xFFFF);
        assert_eq!(update_u32(0xFFFF, 7, 7), 0xFFFF);
        assert_eq!(update_u128(0xFFFF, [3; 16], [3; 16]), 0xFFFF);
        assert_eq!(update_bytes(0xFFFF, &[1, 2], &[1, 2]), Some(0xFFFF));
    }

    #[test]
    fn update_bytes_rejects_odd_or_unequal() {
        assert_eq!(update_bytes(0, &[1, 2, 3], &[1, 2, 4]), None);
        assert_eq!(update_bytes(0, &[1, 2], &[1, 2, 3, 4]), None);
    }

    #[test]
    fn pseudo_headers_match_etherparse() {
        use etherparse::{TcpHeader, UdpHeader};
        let payload = [9u8, 8, 7, 6, 5];
        let udp = UdpHeader {
            source_port: 1000,
            destination_port: 2000,
            length: 13,
            checksum: 0,
        };
        let (s4, d4) = ([10, 0, 0, 1], [192, 168, 1, 9]);
        let ours = Sum::new()
            .add_ipv4_pseudo_header(s4, d4, 17, 13)
            .add_bytes(&udp.to_bytes())
            .add_bytes(&payload)
            .checksum();
        let theirs = udp.calc_checksum_ipv4_raw(s4, d4, &payload).expect("small");
        assert_eq!(ours, theirs);

        let (s6, d6) = ([0x20; 16], [0xfe; 16]);
        let tcp = TcpHeader::new(80, 443, 0x1234_5678, 1000);
        let ours = Sum::new()
            .add_ipv6_pseudo_header(s6, d6, 6, 25)
            .add_bytes(&tcp.to_bytes())
            .add_bytes(&payload)
            .checksum();
        let theirs = tcp.calc_checksum_ipv6_raw(s6, d6, &payload).expect("small");
        assert_eq!(ours, theirs);
    }

    /// Puts a word that is never zero first, as every real checksummed header has (IPv4's
    /// version, the pseudo-header's protocol): ones' complement zero then has one form.
    fn with_nonzero_head(mut data: Vec<u8>) -> Vec<u8> {
        data[0] |= 0x40;
        data
    }

    proptest! {
        #[test]
        fn fast_sum_equals_reference(data in proptest::collection::vec(any::<u8>(), 0..3000),
                                     split in 0usize..3000) {
            prop_assert_eq!(checksum(&data), reference(&data));
            // Two slices, the first even: the same as one.
            let split = (split.min(data.len())) & !1;
            let (a, b) = data.split_at(split);
            prop_assert_eq!(Sum::new().add_bytes(a).add_bytes(b).checksum(), reference(&data));
        }

        /// Incremental == full recomputation, for 16-, 32- and 128-bit fields at any aligned
        /// position of random data.
        #[test]
        fn incremental_equals_full(
            data in proptest::collection::vec(any::<u8>(), 40..1600).prop_map(with_nonzero_head),
            at in any::<prop::sample::Index>(),
            new in any::<[u8; 16]>(),
            width in prop::sample::select(&[2usize, 4, 16][..]),
        ) {
            let hc = checksum(&data);
            // A 16-bit aligned position that leaves the head word alone.
            let pos = 2 + 2 * at.index((data.len() - width - 2) / 2 + 1);
            let mut changed = data.clone();
            changed[pos..pos + width].copy_from_slice(&new[..width]);
            let full = checksum(&changed);
            let old = &data[pos..pos + width];
            let incremental = match width {
                2 => update_u16(hc, u16::from_be_bytes([old[0], old[1]]),
                                u16::from_be_bytes([new[0], new[1]])),
                4 => update_u32(hc, u32::from_be_bytes([old[0], old[1], old[2], old[3]]),
                                u32::from_be_bytes([new[0], new[1], new[2], new[3]])),
                _ => update_u128(hc, old.try_into().expect("16 bytes"), new),
            };
            prop_assert_eq!(incremental, full);
            prop_assert_eq!(update_bytes(hc, old, &new[..width]), Some(full));
        }
    }
}
