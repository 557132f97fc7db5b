//! The receive-side anti-replay window for authenticated braid packets.
//!
//! Owns: [`ReplayWindow`], a sliding-window check of the 64-bit replay counter that the braid
//! header carries when its AUTH flag is set (`braid_wire::braid`, bytes 32..40), its verdicts
//! ([`ReplayError`]) and its counters ([`ReplayStats`]). Does not own: the key schedule, the
//! MAC/AEAD, the header parse, or which peer a packet belongs to (one window per peer and key;
//! the caller picks it). The sender increments the counter per packet per peer, across all of
//! that peer's links.
//!
//! # Call protocol: check, verify the MAC, update
//!
//! ```text
//! window.check(counter)?;        // cheap, no state change: drop replays before the MAC cost
//! verify_mac(packet)?;           // the counter is covered by the tag
//! window.update(counter)?;       // record it: only now is the counter known to be genuine
//! ```
//!
//! `update` must only ever see counters whose packet authenticated. The counter is plain
//! text: a forger who could get an unauthenticated counter recorded would send one packet with
//! counter `u64::MAX - 1` (or `highest + window`) and every genuine packet after it would be
//! `TooOld` — a one-packet denial of service. `check` alone never changes state, so it is safe
//! on unauthenticated input. `update` re-checks, so a duplicate that raced past `check` (two
//! copies in one batch, both checked before either was recorded) is still rejected.
//!
//! # The algorithm (RFC 6479, as WireGuard uses it)
//!
//! The window is a ring of `BLOCKS` u64 words: the bit for counter `c` is bit `c % 64` of word
//! `(c / 64) % BLOCKS`. One whole block is held in reserve: the usable window is
//! `(BLOCKS - 1) * 64` counters ([`ReplayWindow::WINDOW_BITS`]) below and including the
//! highest counter seen. When a higher counter arrives, the window slides by whole blocks:
//! every block between the old highest's block and the new one is zeroed — one word store
//! per 64 counters skipped, and at most `BLOCKS` stores however far the jump — never a loop
//! per skipped counter. The reserve block is what makes this correct: the block being
//! entered is reused from counters `BLOCKS * 64` older, which are already outside the usable
//! window, so zeroing it never forgets a counter that must still be rejected. `BLOCKS` is a
//! power of two so `% BLOCKS` is a mask.
//!
//! Verdicts, with `h` the highest counter recorded and `W` = `WINDOW_BITS`:
//! - `c > h`: acceptable (new highest);
//! - `h - c >= W`: [`ReplayError::TooOld`] (below the window: it can no longer be told apart
//!   from a replay, so it is refused, RFC 6479 §2);
//! - otherwise its bit decides: set = [`ReplayError::Replayed`], clear = acceptable.
//!
//! Edge values: counter 0 is an ordinary counter (a sender may start at 0 or 1). Counter
//! `u64::MAX` is always refused ([`ReplayError::Exhausted`]): recording it would leave no
//! higher counter, so the peer could never send again under that key; a sender must rekey
//! before its counter gets there (WireGuard likewise stops short of 2^64). The arithmetic never
//! overflows for any input.
//!
//! # Why the window is a const generic, and the default size
//!
//! The counter is per peer, not per link, and braid stripes one peer's packets over links of
//! different delays, so a genuine packet on the slow link arrives after packets sent up to
//! `delay spread` later on the fast ones. The window must cover `packet rate × delay spread`
//! or genuine late packets are dropped as `TooOld`. WireGuard's 2048 bits (1984 usable) suit
//! one path; braid needs more: at 10 Gbit/s of 1400-byte packets (~893 000 packets/s) a 25 ms
//! spread is ~22 300 packets. [`DefaultReplayWindow`] is `ReplayWindow<512>`: 32 768 bits,
//! 32 704 usable, i.e. ~36 ms of spread at that rate (but only ~2.2 ms at 14.88 Mpps of 64-byte
//! frames). It costs 4 KiB of bitmap per peer (`BLOCKS * 8` bytes, plus 48 bytes of state and
//! counters), fixed at construction, with no allocation. Larger spreads or rates pick a larger
//! power of two; the cost per packet does not grow with the size (a jump clears at most
//! `BLOCKS` words, amortised over the `64 * BLOCKS` counters it skips).

use core::fmt;

use crate::types::DropReason;

/// Why [`ReplayWindow::check`] or [`ReplayWindow::update`] refused a counter.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ReplayError {
    /// The counter is inside the window and was recorded before: a replay (or a duplicate).
    Replayed,
    /// The counter is at least [`ReplayWindow::WINDOW_BITS`] below the highest one recorded:
    /// too old to tell from a replay.
    TooOld,
    /// The counter is `u64::MAX`, which is never accepted: the sender must rekey first.
    Exhausted,
}

impl ReplayError {
    /// The stable snake_case name of the error.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::Replayed => "replayed",
            Self::TooOld => "too_old",
            Self::Exhausted => "exhausted",
        }
    }
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Counters of a [`ReplayWindow`]'s verdicts. Cumulative: [`ReplayWindow::reset`] keeps them.
///
/// [`ReplayWindow::update`] counts its own outcome; a rejection by [`ReplayWindow::check`]
/// (which cannot change state) is counted by the caller with
/// [`ReplayWindow::count_rejected`], so each packet is counted once.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct ReplayStats {
    /// Counters recorded by `update`.
    pub accepted_count: u64,
    /// Counters refused as [`ReplayError::Replayed`].
    pub replayed_count: u64,
    /// Counters refused as [`ReplayError::TooOld`].
    pub too_old_count: u64,
    /// Counters refused as [`ReplayError::Exhausted`].
    pub exhausted_count: u64,
}

impl ReplayStats {
    /// Count one refusal.
    #[inline]
    pub fn count(&mut self, err: ReplayError) {
        let slot = match err {
            ReplayError::Replayed => &mut self.replayed_count,
            ReplayError::TooOld => &mut self.too_old_count,
            ReplayError::Exhausted => &mut self.exhausted_count,
        };
        *slot = slot.wrapping_add(1);
    }
}

/// A sliding anti-replay window over 64-bit counters (RFC 6479): `BLOCKS` words of bitmap,
/// `(BLOCKS - 1) * 64` counters usable. See the module doc for the call protocol (check,
/// verify the MAC, update) and for the choice of size.
///
/// `BLOCKS` must be a power of two and at least 2 (a compile-time error otherwise). The
/// struct is a fixed array: it never allocates, and every method is O(1) (a jump zeroes at
/// most `BLOCKS` words).
#[derive(Clone)]
pub struct ReplayWindow<const BLOCKS: usize> {
    /// Bit `c % 64` of word `(c / 64) % BLOCKS` is set when counter `c` was recorded.
    bitmap: [u64; BLOCKS],
    /// The highest counter recorded, `None` before the first.
    highest: Option<u64>,
    stats: ReplayStats,
}

/// The window braid uses per peer: 512 blocks = 32 768 bits (32 704 usable), 4 KiB.
pub type DefaultReplayWindow = ReplayWindow<512>;

impl<const BLOCKS: usize> ReplayWindow<BLOCKS> {
    /// Enforced at compile time: the ring index is a mask, and one block is the reserve.
    const VALID: () = assert!(
        BLOCKS.is_power_of_two() && BLOCKS >= 2,
        "ReplayWindow: BLOCKS must be a power of two >= 2"
    );
    /// `BLOCKS - 1`, the ring index mask.
    const MASK: u64 = BLOCKS as u64 - 1;
    /// Usable window in counters: `(BLOCKS - 1) * 64`. A counter `c` with
    /// `highest - c >= WINDOW_BITS` is [`ReplayError::TooOld`].
    pub const WINDOW_BITS: u64 = (BLOCKS as u64 - 1) * 64;

    /// An empty window: no counter recorded, every counter but `u64::MAX` acceptable.
    #[must_use]
    pub const fn new() -> Self {
        let () = Self::VALID;
        Self {
            bitmap: [0; BLOCKS],
            highest: None,
            stats: ReplayStats {
                accepted_count: 0,
                replayed_count: 0,
                too_old_count: 0,
                exhausted_count: 0,
            },
        }
    }

    /// Ring word index and bit mask of `counter`.
    #[inline]
    const fn slot(counter: u64) -> (usize, u64) {
        // The mask keeps the index below BLOCKS, so the cast cannot truncate it.
        #[allow(clippy::cast_possible_truncation)]
        let word = ((counter >> 6) & Self::MASK) as usize;
        (word, 1 << (counter & 63))
    }

    /// Whether `counter` would be accepted now. Changes nothing; safe on unauthenticated
    /// packets (use it to drop replays before paying for the MAC).
    ///
    /// # Errors
    /// [`ReplayError::Replayed`], [`ReplayError::TooOld`] or [`ReplayError::Exhausted`], as
    /// described in the module doc.
    #[inline]
    pub fn check(&self, counter: u64) -> Result<(), ReplayError> {
        if counter == u64::MAX {
            return Err(ReplayError::Exhausted);
        }
        let Some(highest) = self.highest else {
            return Ok(());
        };
        if counter > highest {
            return Ok(());
        }
        if highest - counter >= Self::WINDOW_BITS {
            return Err(ReplayError::TooOld);
        }
        let (word, bit) = Self::slot(counter);
        if self.bitmap[word] & bit != 0 {
            Err(ReplayError::Replayed)
        } else {
            Ok(())
        }
    }

    /// Record `counter` if it is acceptable, sliding the window forward when it is the new
    /// highest; counts the outcome in [`ReplayStats`].
    ///
    /// Call only after the packet's MAC verified (see the module doc: recording a forged
    /// counter would let a forger advance the window past every genuine packet).
    ///
    /// # Errors
    /// As [`check`](Self::check); on error nothing is recorded.
    #[inline]
    pub fn update(&mut self, counter: u64) -> Result<(), ReplayError> {
        if let Err(e) = self.check(counter) {
            self.stats.count(e);
            return Err(e);
        }
        match self.highest {
            Some(highest) if counter > highest => {
                // Zero the blocks entered between the old highest's block and the new one's,
                // at most all of them. The reserve block guarantees none of them holds a
                // counter still inside the usable window.
                let steps = (counter >> 6) - (highest >> 6);
                let first = (highest >> 6) + 1;
                if steps >= BLOCKS as u64 {
                    self.bitmap = [0; BLOCKS];
                } else {
                    for block in first..=(counter >> 6) {
                        // Masked below BLOCKS: the cast cannot truncate.
                        #[allow(clippy::cast_possible_truncation)]
                        let word = (block & Self::MASK) as usize;
                        self.bitmap[word] = 0;
                    }
                }
                self.highest = Some(counter);
            }
            Some(_) => {}
            None => self.highest = Some(counter),
        }
        let (word, bit) = Self::slot(counter);
        self.bitmap[word] |= bit;
        self.stats.accepted_count = self.stats.accepted_count.wrapping_add(1);
        Ok(())
    }

    /// Count a refusal that [`check`](Self::check) returned (it cannot count it itself).
    #[inline]
    pub fn count_rejected(&mut self, err: ReplayError) {
        self.stats.count(err);
    }

    /// The highest counter recorded, `None` before the first (or after [`reset`](Self::reset)).
    #[must_use]
    pub const fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// Forget every counter (for a new key, whose counters restart). Keeps the stats.
    pub fn reset(&mut self) {
        self.bitmap = [0; BLOCKS];
        self.highest = None;
    }

    /// The verdict counters.
    #[must_use]
    pub const fn stats(&self) -> &ReplayStats {
        &self.stats
    }
}

impl<const BLOCKS: usize> Default for ReplayWindow<BLOCKS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const BLOCKS: usize> fmt::Debug for ReplayWindow<BLOCKS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The bitmap is up to kilobytes of bits: show its shape, not its content.
        f.debug_struct("ReplayWindow")
            .field("window_bits", &Self::WINDOW_BITS)
            .field("highest", &self.highest)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl From<ReplayError> for DropReason {
    fn from(e: ReplayError) -> Self {
        match e {
            ReplayError::Replayed => Self::ReplayedPacket,
            ReplayError::TooOld => Self::ReplayTooOld,
            ReplayError::Exhausted => Self::ReplayCounterExhausted,
        }
    }
}

#[cfg(test)]
mod tests;
