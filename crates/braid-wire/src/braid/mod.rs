//! The braid header: a zero-copy view ([`Packet`]) and its high-level form ([`Repr`]).
//!
//! Owns the layout and the validation of the header every braid datagram carries (data,
//! probe, probe reply, control), and the probe reply body. It does not own what the fields
//! mean to the engine (sequence spaces, reassembly, link health: braid-core), nor the
//! authentication tag's computation, the encryption or the replay window (braid-core's `auth`
//! and `replay`, braid-io's `crypto`), nor the outer UDP/Ethernet encapsulation (braid-io).
//!
//! # Layout (network byte order, version 1)
//!
//! ```text
//!  0      version (high 4 bits, = 1) | packet type (low 4 bits)
//!  1      flags: bit0 AUTH, bit1 DUPLICATE, bit2 ENCRYPTED (only with AUTH),
//!         bit3 reserved (zero), bits 4..7 lane (the sender's worker, 0..15)
//!  2      link id: the NIC the sender put the packet on
//!  3      header length in 4-byte words: 8 without AUTH, 10 with AUTH
//!  4..8   flow id (u32)
//!  8..16  sequence (u64): the flow's datagram sequence (data) or the probe sequence
//! 16..20  fragment offset in bytes (u32)
//! 20..24  datagram total length in bytes (u32)
//! 24..32  send timestamp: nanoseconds of the sender's clock (u64)
//! [32..40 replay counter (u64), only with AUTH]
//!         payload
//! [16-byte authentication tag, only with AUTH]
//! ```
//!
//! A probe reply's payload is a [`ProbeReplyBody`] (16 bytes), optionally followed by the
//! replier's [`ProbeReplyCounters`] (16 more bytes):
//!
//! ```text
//!  0..8   echo timestamp: the probe's send timestamp (prober's clock, ns)
//!  8..16  rx timestamp: when the replier received the probe (replier's clock, ns)
//! [16..24 rx bytes (u64): braid bytes the replier received on this link, up to and including
//!         the probe (header, payload and tag; the transport's headers not included)
//!  24..32 rx packets (u64): braid packets the replier received on this link, ditto]
//! ```
//!
//! The counters let the prober measure the link's delivery rate (bytes delivered between two
//! probes' arrivals) and loss (bytes it sent between them, minus those delivered): the
//! capacity estimator of braid-core uses them. A 16-byte reply (a peer without the counters)
//! still parses; the counters are then absent. Extra bytes after either form are padding, as
//! before, so a receiver that knows only the 16-byte body reads a 32-byte reply correctly.
//!
//! # Why these choices
//!
//! - **A 64-bit sequence.** A 16-bit IP id wraps in 79 ms at 10 Gbit/s (RFC 4963 §2.2), which
//!   is shorter than a reassembly timeout; 64 bits never wrap, so a datagram's identity is
//!   `(flow id, sequence)` for the lifetime of a flow.
//! - **Offset and total length rather than index and count.** A split gives each NIC a piece
//!   sized to its bandwidth, so pieces are not equal; byte offsets make the overlap checks of
//!   RFC 5722 exact and let the receiver size its buffer from the first piece that arrives.
//! - **A redundant header length.** It must match the flags, so a receiver that mis-parses
//!   the flags cannot mis-locate the payload, and a later version can grow the header.
//! - **ENCRYPTED is a flag on the view, not a field of [`Repr`].** It says how the payload is
//!   encoded (AEAD ciphertext rather than plain text), which the packet protection decides
//!   after the header is emitted, as it does the tag: the engine emits the [`Repr`], sets the
//!   flag with [`Packet::set_encrypted`] and then seals the packet, so the flag is covered by
//!   the tag. Keeping it off [`Repr`] keeps every header a TX path builds the same, encrypted
//!   or not. It is only valid with AUTH (an unauthenticated cipher text is never sent), and
//!   [`Repr::parse`] refuses it without AUTH.
//! - **Strict validation.** Every field is checked by [`Repr::parse`]; reserved bits must be
//!   zero so they can be given a meaning later without ambiguity. Checks use checked
//!   arithmetic and return a [`ParseError`]; nothing here panics on packet bytes.
//!
//! # Use
//!
//! RX: `Packet::new_checked(bytes)?` then `Repr::parse(&packet)?`, then `packet.payload()`.
//! TX: size the buffer with [`Repr::buffer_len`], [`Repr::emit_into`] the header, copy the
//! payload into `buf[header_len..]`. The header is not covered by a checksum: the outer UDP
//! checksum (or the Ethernet FCS) protects it in transit, and the AUTH tag against forgery.
//!
//! ```
//! use braid_wire::{BraidPacket, BraidRepr, PacketType, ParseError};
//!
//! // TX: a whole 4-byte datagram of flow 7 on link 1.
//! let repr = BraidRepr {
//!     packet_type: PacketType::Data,
//!     link_id: 1,
//!     flow_id: 7,
//!     seq: 42,
//!     frag_offset: 0,
//!     total_len: 4,
//!     timestamp_ns: 1_000,
//!     duplicate: false,
//!     auth: None,
//!     payload_len: 4,
//! };
//! let mut buf = [0u8; 64];
//! let header_len = repr.emit_into(&mut buf)?;
//! buf[header_len..header_len + 4].copy_from_slice(b"ping");
//! let wire = &buf[..repr.buffer_len()];
//!
//! // RX: check, parse, read.
//! let packet = BraidPacket::new_checked(wire)?;
//! assert_eq!(BraidRepr::parse(&packet)?, repr);
//! assert_eq!(packet.payload(), b"ping");
//! assert_eq!(BraidRepr::parse(&BraidPacket::new_unchecked(&wire[..20])), Err(ParseError::Truncated));
//! # Ok::<(), ParseError>(())
//! ```
//!
//! The header has no payload length field: the outer UDP datagram (or Ethernet frame)
//! delimits the packet. A data packet cut short therefore still parses, as a fragment with a
//! shorter payload — never as a whole datagram, so it cannot be delivered as complete; the
//! AUTH tag rejects it outright.

use core::fmt;
use core::ops::Range;

use crate::ParseError;

/// Length in bytes of the fixed header (without the replay counter).
pub const HEADER_LEN: usize = 32;
/// Length in bytes of the replay counter that follows the fixed header when AUTH is set.
pub const AUTH_COUNTER_LEN: usize = 8;
/// Length in bytes of the authentication tag that trails the packet when AUTH is set.
pub const AUTH_TAG_LEN: usize = 16;
/// The header version this crate speaks.
pub const VERSION: u8 = 1;
/// The most bytes braid adds around a payload: header, replay counter and tag.
pub const MAX_OVERHEAD: usize = HEADER_LEN + AUTH_COUNTER_LEN + AUTH_TAG_LEN;

/// Flag bit: the packet carries a replay counter after the header and a tag at its end.
pub const FLAG_AUTH: u8 = 0x01;
/// Flag bit: the same datagram is sent on several links; the receiver keeps the first copy.
pub const FLAG_DUPLICATE: u8 = 0x02;
/// Flag bit: the payload is AEAD cipher text (the tag is the AEAD's); only valid with
/// [`FLAG_AUTH`].
pub const FLAG_ENCRYPTED: u8 = 0x04;
/// The flag bits that hold the lane (bits 4..7): which of the sender's workers, and so which
/// of the receiver's, the packet's session belongs to.
pub const FLAGS_LANE: u8 = 0xf0;
/// The lane's shift within the flags byte.
const LANE_SHIFT: u32 = 4;
/// Number of lanes the header can name (`0..MAX_LANES`).
pub const MAX_LANES: u8 = 16;
/// The flag bits version 1 does not define; they must be zero.
pub const FLAGS_RESERVED: u8 = !(FLAG_AUTH | FLAG_DUPLICATE | FLAG_ENCRYPTED | FLAGS_LANE);

/// Byte offsets of the header fields.
mod field {
    pub(super) type Field = core::ops::Range<usize>;

    pub(super) const VER_TYPE: usize = 0;
    pub(super) const FLAGS: usize = 1;
    pub(super) const LINK_ID: usize = 2;
    pub(super) const HEADER_LEN: usize = 3;
    pub(super) const FLOW_ID: Field = 4..8;
    pub(super) const SEQ: Field = 8..16;
    pub(super) const FRAG_OFFSET: Field = 16..20;
    pub(super) const TOTAL_LEN: Field = 20..24;
    pub(super) const TIMESTAMP: Field = 24..32;
    pub(super) const REPLAY_COUNTER: Field = 32..40;
}

/// What a braid packet carries, from the low 4 bits of byte 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// A whole datagram or a fragment of one, from a flow.
    Data = 0,
    /// A link probe: liveness, RTT, one-way delay, loss. The payload is padding.
    Probe = 1,
    /// The answer to a probe, echoing its sequence; the payload is a [`ProbeReplyBody`].
    ProbeReply = 2,
    /// A control message between the two engines; the first payload byte is its subtype.
    Control = 3,
}

impl TryFrom<u8> for PacketType {
    type Error = ParseError;

    /// Decodes the 4-bit type; any other value is `IllegalValue { field: "type" }`.
    fn try_from(value: u8) -> Result<Self, ParseError> {
        match value {
            0 => Ok(Self::Data),
            1 => Ok(Self::Probe),
            2 => Ok(Self::ProbeReply),
            3 => Ok(Self::Control),
            _ => Err(ParseError::IllegalValue { field: "type" }),
        }
    }
}

impl From<PacketType> for u8 {
    fn from(value: PacketType) -> Self {
        value as Self
    }
}

impl fmt::Display for PacketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Data => "data",
            Self::Probe => "probe",
            Self::ProbeReply => "probe-reply",
            Self::Control => "control",
        })
    }
}

#[inline]
fn read_u32(data: &[u8], range: Range<usize>) -> u32 {
    let mut bytes = [0; 4];
    bytes.copy_from_slice(&data[range]);
    u32::from_be_bytes(bytes)
}

#[inline]
fn read_u64(data: &[u8], range: Range<usize>) -> u64 {
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&data[range]);
    u64::from_be_bytes(bytes)
}

/// The header length in bytes that the flags imply.
#[inline]
const fn header_len_for(auth: bool) -> usize {
    if auth {
        HEADER_LEN + AUTH_COUNTER_LEN
    } else {
        HEADER_LEN
    }
}

/// A read/write view over a buffer holding one braid packet.
///
/// The contract (smoltcp's): once [`Packet::check_len`] is `Ok` — which
/// [`Packet::new_checked`] ensures — no accessor panics, whatever the bytes. Accessors do not
/// validate values (version, type, reserved bits, per-type rules): [`Repr::parse`] does.
/// Untrusted input must go through `new_checked`; emit paths use `new_unchecked` on a buffer
/// sized by [`Repr::buffer_len`].
///
/// The view spans the whole packet: with AUTH, the tag is the last [`AUTH_TAG_LEN`] bytes of
/// the buffer, so the buffer must end where the packet ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking anything (for emit paths).
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after [`Packet::check_len`].
    ///
    /// # Errors
    /// As [`Packet::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that every accessor can run without panicking.
    ///
    /// # Errors
    /// - [`ParseError::Truncated`] if the buffer is shorter than the fixed header, or than the
    ///   header plus the tag the flags announce;
    /// - [`ParseError::BadLength`] if the header length field does not match the flags (32
    ///   bytes without AUTH, 40 with).
    pub fn check_len(&self) -> Result<(), ParseError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        let expected = header_len_for(self.auth());
        if self.header_len() != expected {
            return Err(ParseError::BadLength);
        }
        if len < expected + self.tag_len() {
            return Err(ParseError::Truncated);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The header version (high 4 bits of byte 0); [`VERSION`] for packets we understand.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TYPE] >> 4
    }

    /// The raw 4-bit packet type (low 4 bits of byte 0).
    pub fn packet_type_raw(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TYPE] & 0x0f
    }

    /// The packet type.
    ///
    /// # Errors
    /// `IllegalValue { field: "type" }` for a type version 1 does not define.
    pub fn packet_type(&self) -> Result<PacketType, ParseError> {
        PacketType::try_from(self.packet_type_raw())
    }

    /// The raw flags byte (see [`FLAG_AUTH`], [`FLAG_DUPLICATE`], [`FLAGS_RESERVED`]).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// `true` if the AUTH flag is set: a replay counter follows the header and a tag ends the
    /// packet.
    pub fn auth(&self) -> bool {
        self.flags() & FLAG_AUTH != 0
    }

    /// `true` if the DUPLICATE flag is set: the sender put copies of this datagram on several
    /// links.
    pub fn duplicate(&self) -> bool {
        self.flags() & FLAG_DUPLICATE != 0
    }

    /// `true` if the ENCRYPTED flag is set: the payload is AEAD cipher text. [`Repr::parse`]
    /// accepts it only together with AUTH.
    pub fn encrypted(&self) -> bool {
        self.flags() & FLAG_ENCRYPTED != 0
    }

    /// The lane (`0..MAX_LANES`): the sender's worker, whose peer worker owns the session.
    pub fn lane(&self) -> u8 {
        (self.flags() & FLAGS_LANE) >> LANE_SHIFT
    }

    /// The link (NIC) id the sender put the packet on.
    pub fn link_id(&self) -> u8 {
        self.buffer.as_ref()[field::LINK_ID]
    }

    /// The raw header length field, in 4-byte words.
    pub fn header_len_words(&self) -> u8 {
        self.buffer.as_ref()[field::HEADER_LEN]
    }

    /// The header length in bytes, as the header length field says (field × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.header_len_words()) * 4
    }

    /// The length in bytes of the trailing tag: [`AUTH_TAG_LEN`] with AUTH, else 0.
    pub fn tag_len(&self) -> usize {
        if self.auth() { AUTH_TAG_LEN } else { 0 }
    }

    /// The flow id.
    pub fn flow_id(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::FLOW_ID)
    }

    /// The sequence: the flow's datagram sequence (data) or the probe sequence (probe, probe
    /// reply).
    pub fn seq(&self) -> u64 {
        read_u64(self.buffer.as_ref(), field::SEQ)
    }

    /// The byte offset of this fragment in its datagram.
    pub fn frag_offset(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::FRAG_OFFSET)
    }

    /// The datagram's total length in bytes.
    pub fn total_len(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::TOTAL_LEN)
    }

    /// The send timestamp, in nanoseconds of the sender's clock.
    pub fn timestamp_ns(&self) -> u64 {
        read_u64(self.buffer.as_ref(), field::TIMESTAMP)
    }

    /// The replay counter, present only with AUTH.
    pub fn replay_counter(&self) -> Option<u64> {
        self.auth()
            .then(|| read_u64(self.buffer.as_ref(), field::REPLAY_COUNTER))
    }

    /// The payload: between the header (and replay counter) and the tag.
    pub fn payload(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        &data[header_len_for(self.auth())..data.len() - self.tag_len()]
    }

    /// For a control packet, its subtype (the first payload byte); `None` for other types or
    /// an empty payload.
    pub fn control_subtype(&self) -> Option<u8> {
        if self.packet_type() == Ok(PacketType::Control) {
            self.payload().first().copied()
        } else {
            None
        }
    }

    /// The authentication tag (the last [`AUTH_TAG_LEN`] bytes), present only with AUTH.
    pub fn auth_tag(&self) -> Option<&[u8]> {
        let data = self.buffer.as_ref();
        self.auth().then(|| &data[data.len() - AUTH_TAG_LEN..])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the version (high 4 bits of byte 0), keeping the type.
    pub fn set_version(&mut self, version: u8) {
        let byte = &mut self.buffer.as_mut()[field::VER_TYPE];
        *byte = (*byte & 0x0f) | (version << 4);
    }

    /// Sets the packet type (low 4 bits of byte 0), keeping the version.
    pub fn set_packet_type(&mut self, packet_type: PacketType) {
        let byte = &mut self.buffer.as_mut()[field::VER_TYPE];
        *byte = (*byte & 0xf0) | u8::from(packet_type);
    }

    /// Sets the raw flags byte.
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::FLAGS] = flags;
    }

    /// Sets or clears the AUTH flag (the header length field is not touched).
    pub fn set_auth(&mut self, auth: bool) {
        let flags = self.flags();
        self.set_flags(if auth {
            flags | FLAG_AUTH
        } else {
            flags & !FLAG_AUTH
        });
    }

    /// Sets or clears the DUPLICATE flag.
    pub fn set_duplicate(&mut self, duplicate: bool) {
        let flags = self.flags();
        self.set_flags(if duplicate {
            flags | FLAG_DUPLICATE
        } else {
            flags & !FLAG_DUPLICATE
        });
    }

    /// Sets or clears the ENCRYPTED flag. [`Repr::emit`] clears it; a TX path that encrypts
    /// sets it after the emit and before computing the tag, so the tag covers it.
    pub fn set_encrypted(&mut self, encrypted: bool) {
        let flags = self.flags();
        self.set_flags(if encrypted {
            flags | FLAG_ENCRYPTED
        } else {
            flags & !FLAG_ENCRYPTED
        });
    }

    /// Sets the lane (its low 4 bits; [`Repr::emit`] writes lane 0). Like the ENCRYPTED
    /// flag, a TX path sets it after the emit and before computing the tag.
    pub fn set_lane(&mut self, lane: u8) {
        let flags = self.flags();
        self.set_flags((flags & !FLAGS_LANE) | ((lane << LANE_SHIFT) & FLAGS_LANE));
    }

    /// Sets the link id.
    pub fn set_link_id(&mut self, link_id: u8) {
        self.buffer.as_mut()[field::LINK_ID] = link_id;
    }

    /// Sets the raw header length field, in 4-byte words.
    pub fn set_header_len_words(&mut self, words: u8) {
        self.buffer.as_mut()[field::HEADER_LEN] = words;
    }

    /// Sets the flow id.
    pub fn set_flow_id(&mut self, flow_id: u32) {
        self.buffer.as_mut()[field::FLOW_ID].copy_from_slice(&flow_id.to_be_bytes());
    }

    /// Sets the sequence.
    pub fn set_seq(&mut self, seq: u64) {
        self.buffer.as_mut()[field::SEQ].copy_from_slice(&seq.to_be_bytes());
    }

    /// Sets the fragment offset in bytes.
    pub fn set_frag_offset(&mut self, frag_offset: u32) {
        self.buffer.as_mut()[field::FRAG_OFFSET].copy_from_slice(&frag_offset.to_be_bytes());
    }

    /// Sets the datagram total length in bytes.
    pub fn set_total_len(&mut self, total_len: u32) {
        self.buffer.as_mut()[field::TOTAL_LEN].copy_from_slice(&total_len.to_be_bytes());
    }

    /// Sets the send timestamp in nanoseconds.
    pub fn set_timestamp_ns(&mut self, timestamp_ns: u64) {
        self.buffer.as_mut()[field::TIMESTAMP].copy_from_slice(&timestamp_ns.to_be_bytes());
    }

    /// Writes the replay counter (bytes 32..40).
    ///
    /// # Panics
    /// If the buffer is shorter than 40 bytes (an emit path sized without AUTH).
    pub fn set_replay_counter(&mut self, counter: u64) {
        self.buffer.as_mut()[field::REPLAY_COUNTER].copy_from_slice(&counter.to_be_bytes());
    }

    /// The payload, mutable: where the caller copies the datagram bytes after emit.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = header_len_for(self.auth());
        let end = self.buffer.as_ref().len() - self.tag_len();
        &mut self.buffer.as_mut()[start..end]
    }

    /// The authentication tag space, mutable, present only with AUTH.
    pub fn auth_tag_mut(&mut self) -> Option<&mut [u8]> {
        if self.auth() {
            let data = self.buffer.as_mut();
            let start = data.len() - AUTH_TAG_LEN;
            Some(&mut data[start..])
        } else {
            None
        }
    }
}

impl<T: AsRef<[u8]>> fmt::Display for Packet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let view = Packet::new_unchecked(self.buffer.as_ref());
        match Repr::parse(&view) {
            Ok(repr) => {
                write!(f, "{repr}")?;
                if view.encrypted() {
                    write!(f, " encrypted")?;
                }
                match view.lane() {
                    0 => Ok(()),
                    lane => write!(f, " lane={lane}"),
                }
            }
            Err(err) => write!(f, "braid ({err})"),
        }
    }
}

/// The body of a probe reply: the first [`ProbeReplyBody::LEN`] payload bytes.
///
/// The replier copies the probe's send timestamp into `echo_timestamp_ns` and notes when it
/// received the probe in `rx_timestamp_ns` (its own clock); the reply's header timestamp is
/// its own send time. The prober gets the RTT net of the replier's hold time:
/// `(now - echo) - (reply.timestamp_ns - rx)`, with no clock sync needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ProbeReplyBody {
    /// The probe's send timestamp, echoed (prober's clock, ns).
    pub echo_timestamp_ns: u64,
    /// When the replier received the probe (replier's clock, ns).
    pub rx_timestamp_ns: u64,
}

impl ProbeReplyBody {
    /// Length in bytes of the body on the wire.
    pub const LEN: usize = 16;

    /// Reads the body from the start of a probe reply's payload; extra bytes are padding.
    ///
    /// # Errors
    /// [`ParseError::Truncated`] if the payload is shorter than [`ProbeReplyBody::LEN`].
    pub fn parse(payload: &[u8]) -> Result<Self, ParseError> {
        if payload.len() < Self::LEN {
            return Err(ParseError::Truncated);
        }
        Ok(Self {
            echo_timestamp_ns: read_u64(payload, 0..8),
            rx_timestamp_ns: read_u64(payload, 8..16),
        })
    }

    /// Writes the body at the start of `payload`.
    ///
    /// # Errors
    /// [`ParseError::Truncated`] if `payload` is shorter than [`ProbeReplyBody::LEN`].
    pub fn emit(&self, payload: &mut [u8]) -> Result<(), ParseError> {
        let Some(body) = payload.get_mut(..Self::LEN) else {
            return Err(ParseError::Truncated);
        };
        body[..8].copy_from_slice(&self.echo_timestamp_ns.to_be_bytes());
        body[8..].copy_from_slice(&self.rx_timestamp_ns.to_be_bytes());
        Ok(())
    }
}

/// The delivery counters a probe reply may carry after its [`ProbeReplyBody`]: payload bytes
/// [`ProbeReplyCounters::OFFSET`]`..+`[`ProbeReplyCounters::LEN`].
///
/// The replier copies its own cumulative counters of the link the probe arrived on (link id =
/// NIC id, the same on both peers), read when the probe arrived and counting the probe. Both
/// count only packets that passed the header checks and authentication. They start at zero
/// when the replier's engine starts and never wrap in practice (u64); a prober uses
/// differences between two replies, and treats a counter that went backwards as a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ProbeReplyCounters {
    /// Braid bytes received on the link (headers, payload and tags of every packet type).
    pub rx_bytes: u64,
    /// Braid packets received on the link.
    pub rx_packets: u64,
}

impl ProbeReplyCounters {
    /// Where the counters start in a probe reply's payload: right after the body.
    pub const OFFSET: usize = ProbeReplyBody::LEN;
    /// Length in bytes of the counters on the wire.
    pub const LEN: usize = 16;
    /// Length of a probe reply payload that carries body and counters.
    pub const REPLY_PAYLOAD_LEN: usize = Self::OFFSET + Self::LEN;

    /// Reads the counters from a probe reply's payload: `None` if the payload is too short to
    /// hold them (a 16-byte reply carries only the body). Never panics.
    pub fn parse(payload: &[u8]) -> Option<Self> {
        let c = payload.get(Self::OFFSET..Self::REPLY_PAYLOAD_LEN)?;
        Some(Self {
            rx_bytes: read_u64(c, 0..8),
            rx_packets: read_u64(c, 8..16),
        })
    }

    /// Writes the counters at [`Self::OFFSET`] of a probe reply's payload (the body goes in
    /// front of them with [`ProbeReplyBody::emit`]).
    ///
    /// # Errors
    /// [`ParseError::Truncated`] if `payload` is shorter than [`Self::REPLY_PAYLOAD_LEN`].
    pub fn emit(&self, payload: &mut [u8]) -> Result<(), ParseError> {
        let Some(c) = payload.get_mut(Self::OFFSET..Self::REPLY_PAYLOAD_LEN) else {
            return Err(ParseError::Truncated);
        };
        c[..8].copy_from_slice(&self.rx_bytes.to_be_bytes());
        c[8..].copy_from_slice(&self.rx_packets.to_be_bytes());
        Ok(())
    }
}

impl fmt::Display for ProbeReplyCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "probe-reply counters rx_bytes={} rx_packets={}",
            self.rx_bytes, self.rx_packets
        )
    }
}

impl fmt::Display for ProbeReplyBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "probe-reply body echo={}ns rx={}ns",
            self.echo_timestamp_ns, self.rx_timestamp_ns
        )
    }
}

/// A parsed, validated braid header.
///
/// Build one with a struct literal (or [`Repr::probe`] / [`Repr::probe_reply`]), check it
/// with [`Repr::check`], emit it with [`Repr::emit`] or [`Repr::emit_into`]. The rules
/// [`Repr::check`] enforces (and [`Repr::parse`] applies to every packet):
///
/// - **Data**: `total_len > 0`, a non-empty payload, `frag_offset + payload_len <= total_len`.
///   A whole datagram has `frag_offset == 0` and `total_len == payload_len`
///   ([`Repr::is_fragment`] is then `false`).
/// - **Probe**: any payload length (padding, for MTU and capacity probing).
/// - **ProbeReply**: a payload of at least [`ProbeReplyBody::LEN`] bytes (the body; the
///   optional [`ProbeReplyCounters`] follow it).
/// - **Control**: a payload of at least one byte, the subtype.
/// - Non-data packets have `frag_offset == 0` and `total_len == 0`; DUPLICATE is allowed on
///   data and control packets only (a probe measures one link).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Repr {
    /// What the packet carries.
    pub packet_type: PacketType,
    /// The link (NIC) id the sender put the packet on.
    pub link_id: u8,
    /// The flow id (data, control); 0 by convention for probes.
    pub flow_id: u32,
    /// Data: the flow's datagram sequence; probe and probe reply: the probe sequence.
    pub seq: u64,
    /// Data: byte offset of this fragment in the datagram; 0 otherwise.
    pub frag_offset: u32,
    /// Data: the datagram's total length in bytes; 0 otherwise.
    pub total_len: u32,
    /// Send timestamp, ns of the sender's clock.
    pub timestamp_ns: u64,
    /// The DUPLICATE flag: copies of this datagram travel on several links.
    pub duplicate: bool,
    /// With AUTH, the replay counter; `None` without AUTH.
    pub auth: Option<u64>,
    /// Payload length in bytes (between the header and the tag).
    pub payload_len: usize,
}

impl Repr {
    /// A probe on `link_id` with `pad_len` bytes of padding (flow 0, no auth).
    pub const fn probe(link_id: u8, seq: u64, timestamp_ns: u64, pad_len: usize) -> Self {
        Self {
            packet_type: PacketType::Probe,
            link_id,
            flow_id: 0,
            seq,
            frag_offset: 0,
            total_len: 0,
            timestamp_ns,
            duplicate: false,
            auth: None,
            payload_len: pad_len,
        }
    }

    /// A reply to probe `seq`, sent on `link_id` at `timestamp_ns`; its payload is a
    /// [`ProbeReplyBody`] the caller writes after emit (flow 0, no auth).
    pub const fn probe_reply(link_id: u8, seq: u64, timestamp_ns: u64) -> Self {
        Self {
            packet_type: PacketType::ProbeReply,
            payload_len: ProbeReplyBody::LEN,
            ..Self::probe(link_id, seq, timestamp_ns, 0)
        }
    }

    /// Parses and validates a packet (see the rules on [`Repr`]).
    ///
    /// Checks, in order: the fixed header is present ([`ParseError::Truncated`]), the version
    /// ([`ParseError::Unsupported`]), the type (`IllegalValue { field: "type" }`), the
    /// reserved flags and ENCRYPTED without AUTH (`IllegalValue { field: "flags" }`), the
    /// lengths
    /// ([`Packet::check_len`]), then the per-type rules ([`Repr::check`]).
    ///
    /// # Errors
    /// The first check that fails, as above.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Self, ParseError> {
        if packet.buffer.as_ref().len() < HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        if packet.version() != VERSION {
            return Err(ParseError::Unsupported);
        }
        let packet_type = packet.packet_type()?;
        if packet.flags() & FLAGS_RESERVED != 0 || (packet.encrypted() && !packet.auth()) {
            return Err(ParseError::IllegalValue { field: "flags" });
        }
        packet.check_len()?;
        let repr = Self {
            packet_type,
            link_id: packet.link_id(),
            flow_id: packet.flow_id(),
            seq: packet.seq(),
            frag_offset: packet.frag_offset(),
            total_len: packet.total_len(),
            timestamp_ns: packet.timestamp_ns(),
            duplicate: packet.duplicate(),
            auth: packet.replay_counter(),
            payload_len: packet.payload().len(),
        };
        repr.check()?;
        Ok(repr)
    }

    /// Checks the per-type rules listed on [`Repr`].
    ///
    /// # Errors
    /// - Data: `IllegalValue { field: "total_len" }` for a zero total length,
    ///   [`ParseError::BadLength`] for an empty payload or one that ends past `total_len`;
    /// - ProbeReply / Control: [`ParseError::BadLength`] for a payload too short for the
    ///   body / subtype;
    /// - non-data: `IllegalValue` on `"frag_offset"` or `"total_len"` if not zero;
    /// - probe, probe reply: `IllegalValue { field: "flags" }` with DUPLICATE.
    pub fn check(&self) -> Result<(), ParseError> {
        match self.packet_type {
            PacketType::Data => {
                if self.total_len == 0 {
                    return Err(ParseError::IllegalValue { field: "total_len" });
                }
                if self.payload_len == 0 {
                    return Err(ParseError::BadLength);
                }
                let end = u64::try_from(self.payload_len)
                    .ok()
                    .and_then(|len| len.checked_add(u64::from(self.frag_offset)));
                match end {
                    Some(end) if end <= u64::from(self.total_len) => Ok(()),
                    _ => Err(ParseError::BadLength),
                }
            }
            PacketType::Probe | PacketType::ProbeReply | PacketType::Control => {
                if self.frag_offset != 0 {
                    return Err(ParseError::IllegalValue {
                        field: "frag_offset",
                    });
                }
                if self.total_len != 0 {
                    return Err(ParseError::IllegalValue { field: "total_len" });
                }
                match self.packet_type {
                    PacketType::ProbeReply if self.payload_len < ProbeReplyBody::LEN => {
                        Err(ParseError::BadLength)
                    }
                    PacketType::Control if self.payload_len == 0 => Err(ParseError::BadLength),
                    PacketType::Probe | PacketType::ProbeReply if self.duplicate => {
                        Err(ParseError::IllegalValue { field: "flags" })
                    }
                    _ => Ok(()),
                }
            }
        }
    }

    /// `true` for a data packet that carries part of a datagram rather than all of it.
    pub const fn is_fragment(&self) -> bool {
        matches!(self.packet_type, PacketType::Data)
            && (self.frag_offset != 0 || self.payload_len != self.total_len as usize)
    }

    /// The header length in bytes: [`HEADER_LEN`], plus [`AUTH_COUNTER_LEN`] with AUTH.
    pub const fn header_len(&self) -> usize {
        header_len_for(self.auth.is_some())
    }

    /// The trailing tag length in bytes: [`AUTH_TAG_LEN`] with AUTH, else 0.
    pub const fn tag_len(&self) -> usize {
        if self.auth.is_some() { AUTH_TAG_LEN } else { 0 }
    }

    /// The whole packet's length: header + payload + tag (saturating, so an absurd
    /// `payload_len` makes [`Repr::emit_into`] report [`ParseError::Truncated`] rather than
    /// wrap).
    pub const fn buffer_len(&self) -> usize {
        self.header_len()
            .saturating_add(self.payload_len)
            .saturating_add(self.tag_len())
    }

    /// Writes the header (and replay counter) and zeroes the tag space; the caller then
    /// copies the payload into [`Packet::payload_mut`]. The ENCRYPTED flag is left clear (see
    /// [`Packet::set_encrypted`]). The repr is not checked (use
    /// [`Repr::emit_into`] for a checked emit).
    ///
    /// # Panics
    /// If the buffer is shorter than [`Repr::buffer_len`]. It must be exactly that long for
    /// `payload_mut` and the tag to land in the right place.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(&self, packet: &mut Packet<&mut T>) {
        let mut flags = 0;
        if self.auth.is_some() {
            flags |= FLAG_AUTH;
        }
        if self.duplicate {
            flags |= FLAG_DUPLICATE;
        }
        packet.buffer.as_mut()[field::VER_TYPE] = (VERSION << 4) | u8::from(self.packet_type);
        packet.set_flags(flags);
        packet.set_link_id(self.link_id);
        // At most 40 bytes = 10 words: the cast cannot truncate.
        packet.set_header_len_words((self.header_len() / 4) as u8);
        packet.set_flow_id(self.flow_id);
        packet.set_seq(self.seq);
        packet.set_frag_offset(self.frag_offset);
        packet.set_total_len(self.total_len);
        packet.set_timestamp_ns(self.timestamp_ns);
        if let Some(counter) = self.auth {
            packet.set_replay_counter(counter);
            let tag_start = self.header_len() + self.payload_len;
            packet.buffer.as_mut()[tag_start..tag_start + AUTH_TAG_LEN].fill(0);
        }
    }

    /// Checks the repr and the buffer, then emits the header into `buf[..buffer_len()]`.
    /// Returns the header length: the payload goes to `buf[header_len..][..payload_len]`.
    /// The engine's TX path uses this.
    ///
    /// # Errors
    /// [`Repr::check`]'s errors, or [`ParseError::Truncated`] if `buf` is shorter than
    /// [`Repr::buffer_len`].
    pub fn emit_into(&self, buf: &mut [u8]) -> Result<usize, ParseError> {
        self.check()?;
        let Some(buf) = buf.get_mut(..self.buffer_len()) else {
            return Err(ParseError::Truncated);
        };
        self.emit(&mut Packet::new_unchecked(buf));
        Ok(self.header_len())
    }
}

impl fmt::Display for Repr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "braid v{VERSION} {} link={} flow={} seq={}",
            self.packet_type, self.link_id, self.flow_id, self.seq
        )?;
        if self.packet_type == PacketType::Data {
            write!(
                f,
                " frag={}+{}/{}",
                self.frag_offset, self.payload_len, self.total_len
            )?;
        } else {
            write!(f, " len={}", self.payload_len)?;
        }
        write!(f, " ts={}ns", self.timestamp_ns)?;
        if self.duplicate {
            f.write_str(" dup")?;
        }
        if let Some(counter) = self.auth {
            write!(f, " auth ctr={counter}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
