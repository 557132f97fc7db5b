//! RSS (receive-side scaling): the Toeplitz hash and the indirection table that spread flows
//! over the virtual NIC's queues.
//!
//! Owns: [`ToeplitzKey`], [`toeplitz_hash`] (the reference, per call), [`Rss`] (a key with a
//! precomputed lookup table plus an indirection table) and [`RssError`]. Does not own the
//! queues themselves, the TUN device or the workers (braid-io), nor packet parsing
//! ([`braid_wire::IpSummary`] is the input).
//!
//! # The hash
//!
//! The Toeplitz hash of Microsoft's "RSS hashing functions" specification (also the Intel
//! 82599 datasheet §7.1.2.8.3): for every input bit set, counting the most significant bit of
//! byte 0 first, XOR into the result the 32 key bits that start at that bit's position. The
//! input is, all big-endian, `src ‖ dst` (addresses only) or `src ‖ dst ‖ src_port ‖ dst_port`.
//! An IPv6 flow with ports is the longest input: 16 + 16 + 2 + 2 = [`MAX_INPUT_BYTES`] (36),
//! and the last input bit needs key bits up to 36 · 8 + 31, so a key of 36 + 4 = 40 bytes
//! ([`KEY_BYTES`]) covers every input RSS builds. The key is therefore a fixed `[u8; 40]`:
//! no key can be too short, and there is no length to validate.
//!
//! # Why two implementations
//!
//! - [`toeplitz_hash`] slides a 64-bit window over the key, one byte per input byte, and XORs
//!   the window's top 32 bits shifted by the bit index, branch-free, for each of the 8 bits.
//!   It needs no set-up, so it suits one-off hashes and is the reference in tests.
//! - [`Rss`] precomputes, for each of the 72 input nibbles and each of the 16 nibble values,
//!   the XOR of the key windows that nibble selects (72 × 16 × 4 bytes = 4.5 KiB, built once in
//!   [`Rss::new`]). A hash is then 2 lookups and 2 XORs per input byte. Per-byte tables
//!   (36 × 256 × 4 = 36 KiB) would halve the lookups but fill a whole L1 data cache, which the
//!   rest of the data path also needs; the nibble table stays small and lives inline (no alloc).
//!
//! # Fragments (RFC 791 §2.3, RFC 8200 §4.5)
//!
//! Only the first fragment of a datagram carries the transport header, so a hash over ports
//! would put the first fragment and the later ones on different queues. [`Rss::hash_for`]
//! therefore hashes every fragment, the first included, on addresses only (as Microsoft's
//! spec and the Linux kernel do), and so does any protocol other than TCP and UDP.
//!
//! # Symmetric key
//!
//! [`ToeplitzKey::symmetric`] is `0x6d5a` repeated: the key has a period of 16 bits, and the
//! hash input swaps in 16-bit units (addresses of 32 or 128 bits, ports of 16), so
//! `hash(a → b) == hash(b → a)` and both directions of a flow land on one queue.

use core::fmt;
use core::net::IpAddr;

use braid_wire::IpSummary;

#[cfg(test)]
mod tests;

/// Bytes in a Toeplitz key: enough for [`MAX_INPUT_BYTES`] of input (input bytes + 4).
pub const KEY_BYTES: usize = 40;

/// The longest hash input: IPv6 source and destination addresses plus two ports (36 bytes).
/// [`toeplitz_hash`] hashes only this many leading bytes of a longer input.
pub const MAX_INPUT_BYTES: usize = KEY_BYTES - 4;

/// Most queues an [`Rss`] spreads over (an indirection entry is a `u16`; 256 is what the
/// kernel's multi-queue TUN allows).
pub const MAX_QUEUES: u16 = 256;

/// Longest indirection table [`Rss::set_indirection`] accepts (a power of two).
pub const MAX_INDIRECTION_LEN: usize = 512;

/// Length of the round-robin indirection table [`Rss::new`] installs (a power of two, as
/// the Linux kernel's default for most NICs).
pub const DEFAULT_INDIRECTION_LEN: usize = 128;

/// Input nibbles the precomputed table covers.
const NIBBLES: usize = MAX_INPUT_BYTES * 2;

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// A 40-byte Toeplitz hash key ([`KEY_BYTES`]), long enough for any input RSS builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ToeplitzKey([u8; KEY_BYTES]);

impl ToeplitzKey {
    /// The key of Microsoft's RSS verification suite (and the Intel 82599 / DPDK default),
    /// as in `shared/testdata/rss-toeplitz.md`. Not symmetric.
    pub const MICROSOFT: Self = Self([
        0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f,
        0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30,
        0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
    ]);

    /// A key from its bytes (e.g. from config, or a seeded random key).
    #[must_use]
    pub const fn new(bytes: [u8; KEY_BYTES]) -> Self {
        Self(bytes)
    }

    /// The symmetric key: `0x6d5a` repeated 20 times. With it, swapping source and
    /// destination (addresses and ports) leaves the hash unchanged (see the module doc).
    #[must_use]
    pub const fn symmetric() -> Self {
        let mut bytes = [0u8; KEY_BYTES];
        let mut i = 0;
        while i < KEY_BYTES {
            bytes[i] = if i % 2 == 0 { 0x6d } else { 0x5a };
            i += 1;
        }
        Self(bytes)
    }

    /// The key bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }

    /// Key byte `i`, 0 past the end (only ever read for window bits no input bit uses).
    fn byte(&self, i: usize) -> u8 {
        self.0.get(i).copied().unwrap_or(0)
    }

    /// The 32 key bits starting at bit `bit` (most significant bit of byte 0 is bit 0).
    fn window32(&self, bit: usize) -> u32 {
        let first = bit / 8;
        let mut w = 0u64;
        for i in 0..5 {
            w = (w << 8) | u64::from(self.byte(first + i));
        }
        // `w` holds 40 bits; drop the `bit % 8` leading ones and keep the next 32.
        let w = (w << (bit % 8)) >> 8;
        u32::try_from(w & 0xffff_ffff).expect("invariant: masked to 32 bits")
    }
}

impl Default for ToeplitzKey {
    /// [`ToeplitzKey::MICROSOFT`], the key most NICs and DPDK use by default.
    fn default() -> Self {
        Self::MICROSOFT
    }
}

/// The Toeplitz hash of `input` under `key`, bits taken most significant first.
///
/// The reference implementation (a sliding 64-bit window, see the module doc): it needs no
/// set-up but does 8 masked XORs per input byte; [`Rss`] uses a precomputed table instead.
/// Only the first [`MAX_INPUT_BYTES`] bytes of `input` are hashed: a 40-byte key has no bits
/// for more. Never panics.
#[must_use]
pub fn toeplitz_hash(key: &ToeplitzKey, input: &[u8]) -> u32 {
    let input = input.get(..MAX_INPUT_BYTES).unwrap_or(input);
    // The window holds key bits [8i, 8i + 64) while input byte i is hashed.
    let mut window = u64::from_be_bytes(*key.0.first_chunk::<8>().expect("invariant: 40 > 8"));
    let mut hash = 0u32;
    // `next`: the key byte that enters the window after input byte i (i + 8).
    for (next, &byte) in (8..).zip(input) {
        for b in 0..8 {
            // All ones when bit `b` (MSB first) is set, else zero: no branch on packet bits.
            let mask = 0u32.wrapping_sub(u32::from((byte >> (7 - b)) & 1));
            // Key bits [8i + b, 8i + b + 32): the window's top 32 bits after dropping b.
            #[allow(clippy::cast_possible_truncation)] // keeps the low 32 bits, on purpose
            let part = (window >> (32 - b)) as u32;
            hash ^= part & mask;
        }
        window = (window << 8) | u64::from(key.byte(next));
    }
    hash
}

/// Why an [`Rss`] could not be built or re-configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RssError {
    /// The queue count is 0 or above [`MAX_QUEUES`].
    QueueCount {
        /// The count asked for.
        queues: u16,
    },
    /// The indirection table is empty, longer than [`MAX_INDIRECTION_LEN`] or not a power of
    /// two.
    TableLength {
        /// The length given.
        len: usize,
    },
    /// An indirection entry names a queue that does not exist.
    QueueOutOfRange {
        /// The entry's index in the table.
        index: usize,
        /// The queue it names.
        queue: u16,
        /// The number of queues (valid queues are `0..queues`).
        queues: u16,
    },
}

impl fmt::Display for RssError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::QueueCount { queues } => {
                write!(f, "rss queue count {queues} is not in 1..={MAX_QUEUES}")
            }
            Self::TableLength { len } => write!(
                f,
                "rss indirection table length {len} is not a power of two in 1..={MAX_INDIRECTION_LEN}"
            ),
            Self::QueueOutOfRange {
                index,
                queue,
                queues,
            } => write!(
                f,
                "rss indirection entry {index} names queue {queue}, but there are {queues} queues"
            ),
        }
    }
}

impl core::error::Error for RssError {}

/// Receive-side scaling: a Toeplitz key (with its precomputed table), a queue count and an
/// indirection table that maps `hash & (len - 1)` to a queue.
///
/// Set-up ([`Rss::new`], [`Rss::set_indirection`]) validates; the per-packet calls
/// ([`Rss::hash_for`], [`Rss::queue_for`]) never fail, never allocate and never panic. The
/// struct is about 5.5 KiB (the 4.5 KiB nibble table and a 512-entry indirection array), all
/// inline.
#[derive(Clone)]
pub struct Rss {
    key: ToeplitzKey,
    /// `table[n][v]`: the hash contribution of input nibble `n` (MSB-first) having value `v`.
    table: [[u32; 16]; NIBBLES],
    /// The indirection table; only the first `indirection_len` entries are live.
    indirection: [u16; MAX_INDIRECTION_LEN],
    /// A power of two in `1..=MAX_INDIRECTION_LEN`.
    indirection_len: usize,
    /// In `1..=MAX_QUEUES`; every live indirection entry is below it.
    queues: u16,
}

impl fmt::Debug for Rss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rss")
            .field("key", &self.key)
            .field("queues", &self.queues)
            .field("indirection", &self.indirection())
            .finish_non_exhaustive()
    }
}

impl Rss {
    /// RSS over `queues` queues with `key`, and a round-robin indirection table of
    /// [`DEFAULT_INDIRECTION_LEN`] entries (entry `i` is queue `i % queues`).
    ///
    /// # Errors
    /// [`RssError::QueueCount`] if `queues` is 0 or above [`MAX_QUEUES`].
    pub fn new(key: ToeplitzKey, queues: u16) -> Result<Self, RssError> {
        if queues == 0 || queues > MAX_QUEUES {
            return Err(RssError::QueueCount { queues });
        }
        let mut table = [[0u32; 16]; NIBBLES];
        for (n, row) in table.iter_mut().enumerate() {
            for (v, slot) in row.iter_mut().enumerate() {
                for j in 0..4 {
                    if v & (0b1000 >> j) != 0 {
                        *slot ^= key.window32(n * 4 + j);
                    }
                }
            }
        }
        let mut indirection = [0u16; MAX_INDIRECTION_LEN];
        for (slot, q) in indirection
            .iter_mut()
            .take(DEFAULT_INDIRECTION_LEN)
            .zip((0..queues).cycle())
        {
            *slot = q;
        }
        Ok(Self {
            key,
            table,
            indirection,
            indirection_len: DEFAULT_INDIRECTION_LEN,
            queues,
        })
    }

    /// Replaces the indirection table (entry `i` is the queue for `hash & (len - 1) == i`),
    /// e.g. to weight queues or drain one. On error the old table stays.
    ///
    /// # Errors
    /// [`RssError::TableLength`] if `table` is empty, longer than [`MAX_INDIRECTION_LEN`] or
    /// its length is not a power of two; [`RssError::QueueOutOfRange`] for the first entry
    /// that is not below [`Rss::queues`].
    pub fn set_indirection(&mut self, table: &[u16]) -> Result<(), RssError> {
        let len = table.len();
        if len == 0 || len > MAX_INDIRECTION_LEN || !len.is_power_of_two() {
            return Err(RssError::TableLength { len });
        }
        if let Some((index, &queue)) = table.iter().enumerate().find(|&(_, &q)| q >= self.queues) {
            return Err(RssError::QueueOutOfRange {
                index,
                queue,
                queues: self.queues,
            });
        }
        self.indirection[..len].copy_from_slice(table);
        self.indirection_len = len;
        Ok(())
    }

    /// The key.
    #[must_use]
    pub const fn key(&self) -> &ToeplitzKey {
        &self.key
    }

    /// The number of queues.
    #[must_use]
    pub const fn queues(&self) -> u16 {
        self.queues
    }

    /// The live indirection table.
    #[must_use]
    pub fn indirection(&self) -> &[u16] {
        &self.indirection[..self.indirection_len]
    }

    /// The Toeplitz hash of `input` through the precomputed table; equal to
    /// [`toeplitz_hash`]`(self.key(), input)`, and like it hashes at most the first
    /// [`MAX_INPUT_BYTES`] bytes.
    #[must_use]
    pub fn hash(&self, input: &[u8]) -> u32 {
        let mut hash = 0u32;
        for (pair, &byte) in self.table.chunks_exact(2).zip(input) {
            hash ^= pair[0][usize::from(byte >> 4)] ^ pair[1][usize::from(byte & 0x0f)];
        }
        hash
    }

    /// The RSS hash of a packet: over `src ‖ dst ‖ src_port ‖ dst_port` for an unfragmented
    /// TCP or UDP packet, else (any fragment, any other protocol) over `src ‖ dst` only.
    /// Addresses are hashed in their own family (4 or 16 bytes each).
    #[must_use]
    pub fn hash_for(&self, s: &IpSummary) -> u32 {
        let mut buf = [0u8; MAX_INPUT_BYTES];
        let mut len = put_addr(&mut buf, 0, s.src);
        len = put_addr(&mut buf, len, s.dst);
        if !s.is_fragment && matches!(s.protocol, IPPROTO_TCP | IPPROTO_UDP) {
            buf[len..len + 2].copy_from_slice(&s.src_port.to_be_bytes());
            buf[len + 2..len + 4].copy_from_slice(&s.dst_port.to_be_bytes());
            len += 4;
        }
        self.hash(&buf[..len])
    }

    /// The queue for a packet: `indirection[hash_for(s) & (len - 1)]`.
    #[must_use]
    pub fn queue_for(&self, s: &IpSummary) -> u16 {
        self.queue_for_hash(self.hash_for(s))
    }

    /// The queue for a hash computed elsewhere (e.g. by the NIC or the kernel).
    #[must_use]
    pub fn queue_for_hash(&self, hash: u32) -> u16 {
        // A power-of-two length ≤ 512 makes the mask an in-bounds index.
        let mask = self.indirection_len - 1;
        self.indirection[usize::try_from(hash).unwrap_or(0) & mask]
    }
}

/// Writes `addr` big-endian at `buf[at..]`; returns the end. `at` is 0 or the end of one
/// address (at most 16), so the write ends by 32, leaving room for the ports.
fn put_addr(buf: &mut [u8; MAX_INPUT_BYTES], at: usize, addr: IpAddr) -> usize {
    match addr {
        IpAddr::V4(a) => {
            buf[at..at + 4].copy_from_slice(&a.octets());
            at + 4
        }
        IpAddr::V6(a) => {
            buf[at..at + 16].copy_from_slice(&a.octets());
            at + 16
        }
    }
}
