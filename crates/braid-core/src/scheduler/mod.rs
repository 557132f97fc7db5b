//! The per-packet scheduler: for each packet it decides *whole on one NIC*, *split across k
//! NICs*, or *duplicate on each NIC of a set*, and how many bytes go where.
//!
//! It owns the cost model and the split sizing. It does not own the inputs (the engine fills a
//! [`LinkView`] per NIC from live state: configured rate, its backlog estimate, the one-way
//! delay and loss measured by [`crate::health`]), nor the output headers: a [`Plan`] is a list
//! of `(nic, offset, len)` [`Piece`]s that the engine turns into braid fragments. Fragment
//! reassembly on the far side is [`crate::reassembly`]'s business.
//!
//! # The cost model
//!
//! The expected arrival, relative to now, of `n` bytes sent as `p` packets on NIC `i` is
//!
//! ```text
//! arrival_i(n, p) = (backlog_i + n + overhead × p) / rate_i  +  delay_i  +  loss_i × loss_penalty
//!                   └──── serialisation behind the queue ───┘   └ one-way ┘  └ expected cost of a loss ┘
//! ```
//!
//! where `p = ⌈n / mtu_payload_i⌉` and `overhead` is the braid header plus UDP/IP
//! ([`SchedulerConfig::per_packet_overhead_bytes`]). Everything a packet waits for is in it:
//! the bytes already queued on the NIC, its own serialisation, the propagation delay, and the
//! loss rate turned into time (a lost piece costs a retransmission or a reassembly timeout
//! upstream, so a lossy NIC is "slower" by `loss × penalty`).
//!
//! **Whole.** The packet goes to the NIC with the earliest `arrival_i(len, ⌈len/mtu_i⌉)`. A
//! packet larger than that NIC's `mtu_payload` (a 9000-byte vNIC over 1500-byte NICs) becomes
//! several pieces on that one NIC, cut to near-equal sizes so no tiny tail packet pays a whole
//! header.
//!
//! **Split** (only in [`Mode::Stripe`], only for `len ≥ min_split_bytes`, and by default only
//! for packets that do not fit in one piece on the best NIC: see `split_within_mtu`). The reassembler can
//! deliver the packet only when its *last* piece lands, so the right split makes every piece
//! land at the same time `T`: any piece that lands earlier could have taken bytes from the piece
//! that lands last. With `base_i` the arrival of the NIC's first byte (backlog, delay, loss term)
//! and `rate_i` its rate, piece `i` is `rate_i × (T − base_i)` bytes, and `T` is the smallest
//! time at which these shares add up to `len`. That is water-filling: sort NICs by `base_i`,
//! add them one at a time while the next one's `base` is below the current `T`; a NIC whose
//! `base ≥ T` (a long delay or a deep queue) gets nothing, because the others finish before it
//! could deliver its first byte. The sort makes it `O(links log links)`; there are at most
//! [`MAX_NICS`] links and no allocation.
//!
//! **Why per-packet overhead matters.** The overhead is small for a 1500-byte packet and large
//! for a 150-byte piece: every piece pays a full braid + UDP/IP header on its NIC. The water-fill
//! therefore runs on a linearised model that charges each NIC one packet's overhead up front
//! (in its `base`) and the rest pro rata (a rate scaled by `mtu / (mtu + overhead)`). That model
//! is an upper bound of the exact cost, so a NIC only joins a split if its share still pays for
//! its header; then the exact arrival of the rounded split is computed with the true packet
//! counts and compared with the best whole: the split is used only if it lands at least
//! `min_split_gain` sooner. `min_split_bytes` keeps small packets whole: below ~one MTU a split
//! saves less than it costs (headers, reassembly work, exposure to loss on two links).
//!
//! **Duplicate.** A whole copy on every usable NIC of the set, every copy fragmented at the
//! same offsets (the smallest MTU of the set) so the far side can take any piece from any copy;
//! it keeps the first arrival, so the expected arrival is the minimum.
//!
//! Rounding: shares become whole bytes by rounding cumulative boundaries, so the pieces cover
//! `[0, len)` exactly, in order, with no overlap and no zero-length piece. NICs marked not
//! usable, with a zero rate or zero MTU, or outside the mode's set are never used.

use core::fmt;
use core::time::Duration;

use crate::types::{MAX_NICS, NicId, NicSet};

/// The most pieces one [`Plan`] can hold (e.g. a 64 KiB packet over 1 KiB-MTU NICs).
pub const MAX_PIECES: usize = 64;

/// What the scheduler knows about one NIC, filled by the engine from live state per packet.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkView {
    /// The NIC.
    pub nic: NicId,
    /// `false` for a NIC that is down or administratively excluded: never used.
    pub usable: bool,
    /// Capacity in bits per second. Zero makes the NIC unusable.
    pub rate_bps: u64,
    /// Bytes queued ahead on that NIC (the engine's estimate).
    pub backlog_bytes: u64,
    /// One-way delay estimate toward the peer.
    pub delay: Duration,
    /// Loss rate, `0..=1` (values outside are clamped; NaN counts as 1).
    pub loss: f64,
    /// The largest braid payload, in bytes, one packet on this NIC carries. Zero makes the NIC
    /// unusable.
    pub mtu_payload: u32,
}

/// How a flow's packets may use its NICs (from the flow's policy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Whole on the best one NIC of the set (fragmented to that NIC's MTU if needed).
    Single(NicSet),
    /// Per packet: whole on one NIC, or split across up to `max_split_links` NICs of the set
    /// when that lands at least `min_split_gain` sooner.
    Stripe(NicSet),
    /// A whole copy on each usable NIC of the set (the far side keeps the first).
    Duplicate(NicSet),
}

/// Tuning of the cost model. Defaults are tuned for 1500-byte NICs at 100 Mbit/s – 10 Gbit/s.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SchedulerConfig {
    /// Bytes every packet pays on the wire besides its braid payload: braid header + UDP/IP.
    /// Default 60.
    pub per_packet_overhead_bytes: u32,
    /// Packets shorter than this are never split. Default 1200 bytes.
    pub min_split_bytes: u32,
    /// Split only if the split lands at least this much sooner than the best whole. Default 2 µs.
    pub min_split_gain: Duration,
    /// The most NICs one split uses. Default 4.
    pub max_split_links: usize,
    /// Also split packets that fit in one piece on the best NIC. Default false: such a split
    /// lands a little sooner but pays one more header per extra piece, which costs bulk
    /// traffic several percent of its goodput. Packets that must be fragmented anyway (a
    /// 9000-byte vNIC over 1500-byte NICs) are split either way, since their pieces pay the
    /// headers whichever NICs carry them.
    pub split_within_mtu: bool,
    /// Expected cost of a loss, charged as `loss × penalty` in the arrival. Default 10 ms.
    pub loss_penalty: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            per_packet_overhead_bytes: 60,
            min_split_bytes: 1200,
            min_split_gain: Duration::from_micros(2),
            max_split_links: 4,
            split_within_mtu: false,
            loss_penalty: Duration::from_millis(10),
        }
    }
}

/// Bytes `[offset, offset + len)` of the packet, sent as one packet on `nic`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Piece {
    /// The NIC that carries the piece.
    pub nic: NicId,
    /// Offset of the piece in the packet, bytes.
    pub offset: u32,
    /// Length of the piece, bytes (never zero, never above the NIC's `mtu_payload`).
    pub len: u32,
}

/// What kind of plan was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanKind {
    /// All pieces on one NIC (one piece, or several if the packet exceeds that NIC's MTU).
    Whole,
    /// Pieces on two or more NICs, sized to land together; they cover the packet once.
    Split,
    /// One full copy per NIC; each copy's pieces cover the packet.
    Duplicate,
}

/// The scheduler's decision for one packet. A fixed array: planning never allocates, and the
/// engine reuses one `Plan` for every packet.
#[derive(Clone, Debug)]
pub struct Plan {
    kind: PlanKind,
    pieces: [Piece; MAX_PIECES],
    len: usize,
    /// When the packet is expected to be complete at the peer, relative to now (for a
    /// duplicate: the first complete copy).
    pub expected_arrival: Duration,
}

impl Default for Plan {
    fn default() -> Self {
        Self::new()
    }
}

impl Plan {
    /// An empty plan, to be filled by [`plan`].
    #[must_use]
    pub const fn new() -> Self {
        Self {
            kind: PlanKind::Whole,
            pieces: [Piece {
                nic: NicId(0),
                offset: 0,
                len: 0,
            }; MAX_PIECES],
            len: 0,
            expected_arrival: Duration::ZERO,
        }
    }

    /// The kind of the last plan written.
    #[must_use]
    pub const fn kind(&self) -> PlanKind {
        self.kind
    }

    /// The pieces, in the order they should be sent. For `Whole` and `Split` they are sorted
    /// by offset and contiguous; for `Duplicate` each copy's pieces follow each other.
    #[must_use]
    pub fn pieces(&self) -> &[Piece] {
        &self.pieces[..self.len]
    }

    /// The NICs the plan uses.
    #[must_use]
    pub fn nics(&self) -> NicSet {
        self.pieces().iter().map(|p| p.nic).collect()
    }

    fn reset(&mut self, kind: PlanKind) {
        self.kind = kind;
        self.len = 0;
        self.expected_arrival = Duration::ZERO;
    }

    /// Append `len` bytes at `offset` on `nic`, cut into `⌈len / mtu⌉` near-equal pieces.
    /// The caller has checked that they fit.
    fn push_fragmented(&mut self, nic: NicId, offset: u32, len: u32, mtu: u32) {
        let count = len.div_ceil(mtu);
        let small = len / count;
        let bigger = len % count; // the first `bigger` pieces get one byte more
        let mut at = offset;
        for k in 0..count {
            let piece_len = small + u32::from(k < bigger);
            self.pieces[self.len] = Piece {
                nic,
                offset: at,
                len: piece_len,
            };
            self.len += 1;
            at += piece_len;
        }
    }
}

/// Why no plan could be made. The engine counts the packet as dropped
/// ([`crate::DropReason::NoLinkUp`] for `NoUsableLink`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleError {
    /// No NIC of the mode's set is usable.
    NoUsableLink,
    /// Every possible plan needs more than [`MAX_PIECES`] pieces (tiny MTUs, huge packet).
    TooManyPieces,
    /// A zero-length packet.
    Empty,
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoUsableLink => "no usable link in the set",
            Self::TooManyPieces => "packet needs more pieces than a plan holds",
            Self::Empty => "empty packet",
        })
    }
}

impl core::error::Error for ScheduleError {}

/// The expected arrival of `bytes` sent whole (fragmented to the MTU) on `link`, relative to
/// now; `None` if the link is unusable. The same formula [`plan`] uses.
#[must_use]
pub fn expected_arrival(link: &LinkView, bytes: u32, config: &SchedulerConfig) -> Option<Duration> {
    let c = Candidate::from_view(link, config)?;
    Some(to_duration(c.arrival_ns(bytes, config)))
}

/// One usable NIC with its cost terms precomputed, in nanoseconds.
#[derive(Clone, Copy, Debug, Default)]
struct Candidate {
    nic: NicId,
    mtu: u32,
    /// Serialisation time of one byte.
    ns_per_byte: f64,
    /// Arrival of a zero-byte, zero-packet send: backlog + delay + loss term.
    base_ns: f64,
}

impl Candidate {
    fn from_view(link: &LinkView, config: &SchedulerConfig) -> Option<Self> {
        if !link.usable || link.rate_bps == 0 || link.mtu_payload == 0 || !link.nic.is_valid() {
            return None;
        }
        let ns_per_byte = 8.0e9 / link.rate_bps as f64;
        let loss = if link.loss.is_nan() {
            1.0
        } else {
            link.loss.clamp(0.0, 1.0)
        };
        let base_ns = link.backlog_bytes as f64 * ns_per_byte
            + link.delay.as_nanos() as f64
            + loss * config.loss_penalty.as_nanos() as f64;
        Some(Self {
            nic: link.nic,
            mtu: link.mtu_payload,
            ns_per_byte,
            base_ns,
        })
    }

    /// Exact arrival of `bytes` cut to this NIC's MTU.
    fn arrival_ns(&self, bytes: u32, config: &SchedulerConfig) -> f64 {
        self.arrival_ns_cut(bytes, self.mtu, config)
    }

    /// Arrival of `bytes` sent in pieces of at most `mtu` bytes (`mtu` ≤ this NIC's).
    fn arrival_ns_cut(&self, bytes: u32, mtu: u32, config: &SchedulerConfig) -> f64 {
        let packets = f64::from(bytes.div_ceil(mtu.max(1)));
        self.base_ns
            + (f64::from(bytes) + f64::from(config.per_packet_overhead_bytes) * packets)
                * self.ns_per_byte
    }

    fn pieces_for(&self, bytes: u32) -> usize {
        bytes.div_ceil(self.mtu) as usize
    }

    /// Linearised model used by the water-fill (an upper bound of [`Self::arrival_ns`]):
    /// one packet's overhead up front, the rest pro rata. Returns `(base, ns per byte)`.
    fn linear(&self, config: &SchedulerConfig) -> (f64, f64) {
        let o = f64::from(config.per_packet_overhead_bytes);
        let m = f64::from(self.mtu);
        (
            self.base_ns + o * self.ns_per_byte,
            self.ns_per_byte * (m + o) / m,
        )
    }
}

/// A NIC taking part in a split: index into the candidate array, linear model, share.
#[derive(Clone, Copy, Debug, Default)]
struct Share {
    cand: usize,
    base_ns: f64,
    slope_ns_per_byte: f64,
    bytes_f: f64,
}

/// Plan one packet of `len` bytes. Writes the decision into `out` (reused across calls).
///
/// Work is `O(links log links)`, no allocation. Links that are not usable, not in the mode's
/// set, invalid, or repeat a NIC already seen are ignored.
///
/// # Errors
///
/// [`ScheduleError::Empty`] for `len == 0`, [`ScheduleError::NoUsableLink`] if no link of the
/// set is usable, [`ScheduleError::TooManyPieces`] if every plan needs more than
/// [`MAX_PIECES`] pieces. On error `out` holds no pieces.
pub fn plan(
    links: &[LinkView],
    mode: Mode,
    len: u32,
    config: &SchedulerConfig,
    out: &mut Plan,
) -> Result<(), ScheduleError> {
    out.reset(PlanKind::Whole);
    if len == 0 {
        return Err(ScheduleError::Empty);
    }
    let set = match mode {
        Mode::Single(s) | Mode::Stripe(s) | Mode::Duplicate(s) => s,
    };
    let mut cands = [Candidate::default(); MAX_NICS];
    let mut n = 0;
    let mut seen = NicSet::EMPTY;
    for link in links {
        if !set.contains(link.nic) || seen.contains(link.nic) {
            continue;
        }
        if let Some(c) = Candidate::from_view(link, config) {
            seen.insert(link.nic);
            cands[n] = c;
            n += 1;
        }
    }
    let cands = &cands[..n];
    if cands.is_empty() {
        return Err(ScheduleError::NoUsableLink);
    }
    match mode {
        Mode::Duplicate(_) => plan_duplicate(cands, len, config, out),
        Mode::Single(_) => plan_whole(cands, len, config, out),
        Mode::Stripe(_) => plan_stripe(cands, len, config, out),
    }
}

/// The best whole: `(candidate index, arrival ns)` among NICs that can carry it in
/// [`MAX_PIECES`] pieces.
fn best_whole(cands: &[Candidate], len: u32, config: &SchedulerConfig) -> Option<(usize, f64)> {
    let mut best: Option<(usize, f64)> = None;
    for (i, c) in cands.iter().enumerate() {
        if c.pieces_for(len) > MAX_PIECES {
            continue;
        }
        let t = c.arrival_ns(len, config);
        if best.is_none_or(|(_, bt)| t < bt) {
            best = Some((i, t));
        }
    }
    best
}

fn write_whole(cand: &Candidate, len: u32, arrival_ns: f64, out: &mut Plan) {
    out.reset(PlanKind::Whole);
    out.push_fragmented(cand.nic, 0, len, cand.mtu);
    out.expected_arrival = to_duration(arrival_ns);
}

fn plan_whole(
    cands: &[Candidate],
    len: u32,
    config: &SchedulerConfig,
    out: &mut Plan,
) -> Result<(), ScheduleError> {
    let (i, t) = best_whole(cands, len, config).ok_or(ScheduleError::TooManyPieces)?;
    write_whole(&cands[i], len, t, out);
    Ok(())
}

fn plan_duplicate(
    cands: &[Candidate],
    len: u32,
    config: &SchedulerConfig,
    out: &mut Plan,
) -> Result<(), ScheduleError> {
    // Every copy is cut at the same offsets (the smallest MTU of the set): the receiver
    // reassembles the copies under one datagram id, and fragments of different sizes would
    // overlap unevenly, which drops the whole datagram (RFC 5722) — and with it the copy
    // that was meant to survive.
    let mtu = cands.iter().map(|c| c.mtu).min().unwrap_or(0);
    let per_copy = len.div_ceil(mtu.max(1)) as usize;
    if per_copy.saturating_mul(cands.len()) > MAX_PIECES {
        return Err(ScheduleError::TooManyPieces);
    }
    out.reset(PlanKind::Duplicate);
    let mut first = f64::INFINITY;
    for c in cands {
        out.push_fragmented(c.nic, 0, len, mtu);
        first = first.min(c.arrival_ns_cut(len, mtu, config));
    }
    out.expected_arrival = to_duration(first);
    Ok(())
}

fn plan_stripe(
    cands: &[Candidate],
    len: u32,
    config: &SchedulerConfig,
    out: &mut Plan,
) -> Result<(), ScheduleError> {
    let whole = best_whole(cands, len, config);
    let mut shares = [Share::default(); MAX_NICS];
    // A packet that fits whole in one piece on the best NIC is split only if configured.
    let must_fragment = whole.is_none_or(|(i, _)| len > cands[i].mtu);
    let split = if len >= config.min_split_bytes
        && config.max_split_links >= 2
        && (must_fragment || config.split_within_mtu)
    {
        water_fill(cands, len, config, &mut shares)
    } else {
        None
    };
    match (whole, split) {
        (_, Some((used, split_ns)))
            if whole.is_none_or(|(_, whole_ns)| {
                split_ns + config.min_split_gain.as_nanos() as f64 <= whole_ns
            }) =>
        {
            out.reset(PlanKind::Split);
            let mut offset = 0;
            for s in &shares[..used] {
                let c = &cands[s.cand];
                // `bytes_f` holds the rounded integer share by now.
                let bytes = s.bytes_f as u32;
                out.push_fragmented(c.nic, offset, bytes, c.mtu);
                offset += bytes;
            }
            debug_assert_eq!(offset, len, "invariant: split pieces cover the packet");
            out.expected_arrival = to_duration(split_ns);
            Ok(())
        }
        (Some((i, t)), _) => {
            write_whole(&cands[i], len, t, out);
            Ok(())
        }
        (None, _) => Err(ScheduleError::TooManyPieces),
    }
}

/// Water-fill `len` bytes over `cands`. On success `shares[..used]` holds the NICs in offset
/// order with their integer share in `bytes_f` (all non-zero, summing to `len`), and the exact
/// arrival of the split is returned. `None` if fewer than two NICs take part or the split needs
/// more than [`MAX_PIECES`] pieces.
fn water_fill(
    cands: &[Candidate],
    len: u32,
    config: &SchedulerConfig,
    shares: &mut [Share; MAX_NICS],
) -> Option<(usize, f64)> {
    let n = cands.len();
    if n < 2 {
        return None;
    }
    for (i, c) in cands.iter().enumerate() {
        let (base_ns, slope_ns_per_byte) = c.linear(config);
        shares[i] = Share {
            cand: i,
            base_ns,
            slope_ns_per_byte,
            bytes_f: 0.0,
        };
    }
    let all = &mut shares[..n];
    all.sort_unstable_by(|a, b| a.base_ns.total_cmp(&b.base_ns));

    // Add NICs in order of base while the next one would start before the current finish T.
    let total = f64::from(len);
    let mut used = 0;
    let mut t = f64::INFINITY;
    for s in all.iter() {
        if s.base_ns >= t {
            break;
        }
        used += 1;
        t = finish_time(&all[..used], total);
    }
    if used > config.max_split_links {
        // Keep the NICs that would carry the most bytes; fewer NICs only raise T, so every
        // kept NIC still has base < T.
        for s in &mut all[..used] {
            s.bytes_f = (t - s.base_ns) / s.slope_ns_per_byte;
        }
        all[..used].sort_unstable_by(|a, b| b.bytes_f.total_cmp(&a.bytes_f));
        used = config.max_split_links;
        t = finish_time(&all[..used], total);
        all[..used].sort_unstable_by(|a, b| a.base_ns.total_cmp(&b.base_ns));
    }
    if used < 2 {
        return None;
    }
    let chosen = &mut all[..used];
    let mut sum_f = 0.0;
    for s in chosen.iter_mut() {
        s.bytes_f = ((t - s.base_ns) / s.slope_ns_per_byte).max(0.0);
        sum_f += s.bytes_f;
    }
    if sum_f <= 0.0 || !sum_f.is_finite() {
        return None;
    }
    // Round cumulative boundaries (not each share) so the integer shares sum to `len` exactly.
    let mut prefix_f = 0.0;
    let mut prev = 0u32;
    let mut pieces = 0;
    let mut kept = 0;
    let mut arrival = 0.0_f64;
    for k in 0..used {
        prefix_f += chosen[k].bytes_f;
        let boundary = if k + 1 == used {
            len
        } else {
            // `as` saturates; the clamp keeps boundaries monotone and inside the packet.
            ((total * prefix_f / sum_f + 0.5) as u32).clamp(prev, len)
        };
        let bytes = boundary - prev;
        prev = boundary;
        if bytes == 0 {
            continue;
        }
        let c = &cands[chosen[k].cand];
        pieces += c.pieces_for(bytes);
        arrival = arrival.max(c.arrival_ns(bytes, config));
        chosen[kept] = Share {
            bytes_f: f64::from(bytes),
            ..chosen[k]
        };
        kept += 1;
    }
    (kept >= 2 && pieces <= MAX_PIECES).then_some((kept, arrival))
}

/// The common finish time of a water-fill over `shares`: `Σ (T − base_i) / slope_i = total`.
fn finish_time(shares: &[Share], total: f64) -> f64 {
    let (mut inv, mut weighted) = (0.0, 0.0);
    for s in shares {
        inv += 1.0 / s.slope_ns_per_byte;
        weighted += s.base_ns / s.slope_ns_per_byte;
    }
    (total + weighted) / inv
}

fn to_duration(ns: f64) -> Duration {
    // `as` saturates at 0 and u64::MAX (and maps NaN to 0).
    Duration::from_nanos(ns as u64)
}

#[cfg(test)]
mod tests;
