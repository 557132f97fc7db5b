//! The GRE header (RFC 2784, with the key and sequence number extensions of RFC 2890).
//!
//! Owns the header view ([`Packet`]) and its repr ([`Repr`]), the GRE checksum (computed and
//! verified over the GRE header and its payload), and the protocol type constants braid
//! carries. It does not own the outer IP header, encapsulation or decapsulation of whole
//! packets, or the per-tunnel sequence state: those are in [`crate::tunnel`].
//!
//! # Layout (network byte order)
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |C|R|K|S|s|Rcr|  Reserved0  | Ver |         Protocol Type         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |      Checksum (if C)          |       Reserved1 (if C)        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         Key (if K)                            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 Sequence Number (if S)                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! (`R` routing present, `s` strict source route and `Rcr` recursion control are RFC 1701
//! fields that RFC 2784 folded into Reserved0.) The header is 4 bytes, plus 4 for each of C,
//! K and S.
//!
//! # What [`Repr::parse`] accepts, and why
//!
//! - **Version** must be 0 (RFC 2784 §2.3.1); anything else — version 1 is PPTP's enhanced
//!   GRE (RFC 2637) — is [`ParseError::Unsupported`].
//! - **Reserved0**: RFC 2784 §2.5.1 says a receiver that does not implement RFC 1701 MUST
//!   discard a packet with any of bits 1–5 set, and MUST ignore bits 6–12. RFC 2890 gives
//!   bits 2 (K) and 3 (S) a meaning, so bits 1 (routing), 4 (strict source route) and 5 (the
//!   top bit of the recursion control) set are `IllegalValue { field: "flags" }`; bits 6–12
//!   are ignored on receipt and sent as zero. (Linux's `gre_parse_header` discards only the
//!   routing bit and a non-zero version; we are stricter, as the RFC asks.)
//! - **Reserved1** (present with C) "MUST be transmitted as zero" (§2.7); the RFC says
//!   nothing on receipt, so it is ignored, as Linux does.
//! - **Checksum** (C): the Internet checksum of the GRE header and its payload, computed with
//!   the checksum field zero (§2.5). [`Repr::parse`] verifies it when asked; the view spans
//!   header and payload, so the buffer must end where the GRE payload ends.
//! - **Protocol type** is any EtherType; [`Repr`] keeps it raw. braid carries
//!   [`PROTOCOL_IPV4`], [`PROTOCOL_IPV6`] and [`PROTOCOL_TEB`] (transparent Ethernet bridging,
//!   an Ethernet frame); [`crate::tunnel`] refuses the others.
//!
//! ```
//! use braid_wire::{GrePacket, GreRepr, gre};
//!
//! let repr = GreRepr { protocol_type: gre::PROTOCOL_IPV4, checksum: true, key: Some(7), seq: Some(1) };
//! let mut buf = [0u8; 16 + 4];
//! buf[16..].copy_from_slice(&[0x45, 0, 0, 4]); // the payload goes in first: C covers it
//! repr.emit(&mut GrePacket::new_unchecked(&mut buf[..]));
//! let packet = GrePacket::new_checked(&buf[..])?;
//! assert_eq!(GreRepr::parse(&packet, true)?, repr);
//! assert_eq!(packet.payload(), &[0x45, 0, 0, 4]);
//! # Ok::<(), braid_wire::ParseError>(())
//! ```

use core::fmt;

use crate::ParseError;
use crate::checksum::checksum;

/// GRE protocol type: an IPv4 packet.
pub const PROTOCOL_IPV4: u16 = 0x0800;
/// GRE protocol type: an IPv6 packet.
pub const PROTOCOL_IPV6: u16 = 0x86dd;
/// GRE protocol type: transparent Ethernet bridging, an Ethernet frame without FCS (the
/// "gretap" of Linux).
pub const PROTOCOL_TEB: u16 = 0x6558;
/// The IP protocol number (IPv4 protocol, IPv6 next header) of GRE.
pub const IP_PROTOCOL: u8 = 47;

/// Length in bytes of the base header (flags, version, protocol type).
pub const BASE_HEADER_LEN: usize = 4;
/// Length in bytes of the longest header: base, checksum + reserved1, key, sequence.
pub const MAX_HEADER_LEN: usize = 16;

/// Flag bit C: the checksum and reserved1 fields are present.
pub const FLAG_CHECKSUM: u16 = 0x8000;
/// Flag bit R (RFC 1701 routing present): must be zero.
pub const FLAG_ROUTING: u16 = 0x4000;
/// Flag bit K (RFC 2890): the key field is present.
pub const FLAG_KEY: u16 = 0x2000;
/// Flag bit S (RFC 2890): the sequence number field is present.
pub const FLAG_SEQ: u16 = 0x1000;
/// The bits of the first 16 that RFC 2784 §2.5.1 says to discard a packet for, once RFC
/// 2890 took K and S: bit 1 (routing), bit 4 (strict source route), bit 5 (recursion).
pub const FLAGS_MUST_BE_ZERO: u16 = 0x4c00;
/// The version bits (13–15).
pub const VERSION_MASK: u16 = 0x0007;

mod field {
    pub(super) type Field = core::ops::Range<usize>;

    pub(super) const FLAGS_VERSION: Field = 0..2;
    pub(super) const PROTOCOL_TYPE: Field = 2..4;
}

/// A read/write view over a GRE header and the payload that follows it.
///
/// Once [`Packet::check_len`] is `Ok` — which [`Packet::new_checked`] ensures — no accessor
/// panics, whatever the bytes. Accessors do not validate values: [`Repr::parse`] does. The
/// view spans header and payload (the checksum covers both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it (for emit paths).
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

    /// Checks that the buffer holds the base header and every optional field the flags
    /// announce.
    ///
    /// # Errors
    /// [`ParseError::Truncated`] if it does not.
    pub fn check_len(&self) -> Result<(), ParseError> {
        let len = self.buffer.as_ref().len();
        if len < BASE_HEADER_LEN || len < self.header_len() {
            Err(ParseError::Truncated)
        } else {
            Ok(())
        }
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The first 16 bits: flags, reserved0 and version.
    ///
    /// # Panics
    /// If the buffer is shorter than 2 bytes (use [`Packet::new_checked`]).
    pub fn flags_version(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::FLAGS_VERSION.start)
    }

    /// The version (bits 13–15); 0 for the GRE of RFC 2784.
    pub fn version(&self) -> u8 {
        // The mask keeps 3 bits: the cast cannot truncate.
        (self.flags_version() & VERSION_MASK) as u8
    }

    /// `true` if C is set: checksum and reserved1 are present.
    pub fn checksum_present(&self) -> bool {
        self.flags_version() & FLAG_CHECKSUM != 0
    }

    /// `true` if K is set: the key is present.
    pub fn key_present(&self) -> bool {
        self.flags_version() & FLAG_KEY != 0
    }

    /// `true` if S is set: the sequence number is present.
    pub fn seq_present(&self) -> bool {
        self.flags_version() & FLAG_SEQ != 0
    }

    /// The protocol type: the EtherType of the payload.
    pub fn protocol_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::PROTOCOL_TYPE.start)
    }

    /// The header length the flags imply: 4, plus 4 for each of C, K, S.
    ///
    /// # Panics
    /// If the buffer is shorter than 2 bytes (use [`Packet::new_checked`]).
    pub fn header_len(&self) -> usize {
        header_len_for(
            self.checksum_present(),
            self.key_present(),
            self.seq_present(),
        )
    }

    /// The checksum field, if C is set.
    pub fn checksum(&self) -> Option<u16> {
        self.checksum_present()
            .then(|| read_u16(self.buffer.as_ref(), BASE_HEADER_LEN))
    }

    /// The reserved1 field, if C is set.
    pub fn reserved1(&self) -> Option<u16> {
        self.checksum_present()
            .then(|| read_u16(self.buffer.as_ref(), BASE_HEADER_LEN + 2))
    }

    /// The key, if K is set.
    pub fn key(&self) -> Option<u32> {
        self.key_present()
            .then(|| read_u32(self.buffer.as_ref(), self.key_offset()))
    }

    /// The sequence number, if S is set.
    pub fn seq(&self) -> Option<u32> {
        self.seq_present()
            .then(|| read_u32(self.buffer.as_ref(), self.seq_offset()))
    }

    /// The payload: everything after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// `true` if C is clear, or if the checksum over the whole buffer (header and payload)
    /// verifies. Always `true` under `cfg(fuzzing)`, so fuzzers reach the code behind it.
    pub fn verify_checksum(&self) -> bool {
        if cfg!(fuzzing) || !self.checksum_present() {
            return true;
        }
        checksum(self.buffer.as_ref()) == 0
    }

    fn key_offset(&self) -> usize {
        BASE_HEADER_LEN + if self.checksum_present() { 4 } else { 0 }
    }

    fn seq_offset(&self) -> usize {
        self.key_offset() + if self.key_present() { 4 } else { 0 }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the first 16 bits (flags, reserved0, version).
    pub fn set_flags_version(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::FLAGS_VERSION.start, value);
    }

    /// Sets the protocol type.
    pub fn set_protocol_type(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::PROTOCOL_TYPE.start, value);
    }

    /// Writes the checksum field and zeroes reserved1.
    ///
    /// # Panics
    /// If the buffer has no room for them; a no-op if C is clear.
    pub fn set_checksum(&mut self, value: u16) {
        if self.checksum_present() {
            let data = self.buffer.as_mut();
            write_u16(data, BASE_HEADER_LEN, value);
            write_u16(data, BASE_HEADER_LEN + 2, 0);
        }
    }

    /// Writes the key; a no-op if K is clear.
    ///
    /// # Panics
    /// If the buffer has no room for it.
    pub fn set_key(&mut self, key: u32) {
        if self.key_present() {
            let offset = self.key_offset();
            write_u32(self.buffer.as_mut(), offset, key);
        }
    }

    /// Writes the sequence number; a no-op if S is clear.
    ///
    /// # Panics
    /// If the buffer has no room for it.
    pub fn set_seq(&mut self, seq: u32) {
        if self.seq_present() {
            let offset = self.seq_offset();
            write_u32(self.buffer.as_mut(), offset, seq);
        }
    }

    /// Computes the checksum over the whole buffer (header and payload) and writes it; a
    /// no-op if C is clear. The payload must be in place.
    pub fn fill_checksum(&mut self) {
        if self.checksum_present() {
            self.set_checksum(0);
            let sum = checksum(self.buffer.as_ref());
            self.set_checksum(sum);
        }
    }

    /// The payload, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buffer.as_mut()[start..]
    }
}

impl<T: AsRef<[u8]>> fmt::Display for Packet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Packet::new_checked(self.buffer.as_ref()).and_then(|p| Repr::parse(&p, true)) {
            Ok(repr) => write!(f, "{repr}"),
            Err(err) => write!(f, "gre ({err})"),
        }
    }
}

/// A parsed GRE header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Repr {
    /// The EtherType of the payload ([`PROTOCOL_IPV4`], [`PROTOCOL_IPV6`],
    /// [`PROTOCOL_TEB`], ...).
    pub protocol_type: u16,
    /// `true` if the header carries a checksum (C).
    pub checksum: bool,
    /// The key (K, RFC 2890 §2.1), if present.
    pub key: Option<u32>,
    /// The sequence number (S, RFC 2890 §2.2), if present.
    pub seq: Option<u32>,
}

impl Repr {
    /// Parses and validates a header (see the module doc for what is accepted).
    ///
    /// `verify_checksum` is the checksum capability: `false` when the caller (or a NIC) has
    /// already checked it.
    ///
    /// # Errors
    /// [`ParseError::Truncated`] for a short buffer; [`ParseError::Unsupported`] for a
    /// version other than 0; `IllegalValue { field: "flags" }` for a reserved0 bit RFC 2784
    /// says to discard on; [`ParseError::BadChecksum`] if C is set and the checksum fails.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &Packet<&T>,
        verify_checksum: bool,
    ) -> Result<Self, ParseError> {
        packet.check_len()?;
        if packet.version() != 0 {
            return Err(ParseError::Unsupported);
        }
        if packet.flags_version() & FLAGS_MUST_BE_ZERO != 0 {
            return Err(ParseError::IllegalValue { field: "flags" });
        }
        if verify_checksum && !packet.verify_checksum() {
            return Err(ParseError::BadChecksum);
        }
        Ok(Self {
            protocol_type: packet.protocol_type(),
            checksum: packet.checksum_present(),
            key: packet.key(),
            seq: packet.seq(),
        })
    }

    /// The header length in bytes: 4, plus 4 for each of checksum, key and sequence number.
    /// The payload follows it.
    pub const fn buffer_len(&self) -> usize {
        header_len_for(self.checksum, self.key.is_some(), self.seq.is_some())
    }

    /// The flags and version field this repr emits: C, K, S as present; reserved and version
    /// zero.
    pub const fn flags_version(&self) -> u16 {
        let mut value = 0;
        if self.checksum {
            value |= FLAG_CHECKSUM;
        }
        if self.key.is_some() {
            value |= FLAG_KEY;
        }
        if self.seq.is_some() {
            value |= FLAG_SEQ;
        }
        value
    }

    /// Writes the header at the start of the view's buffer and, with a checksum, computes it
    /// over the whole buffer: the payload must already be in place after
    /// [`Repr::buffer_len`] bytes, and the buffer must end where the payload ends.
    ///
    /// # Panics
    /// If the buffer is shorter than [`Repr::buffer_len`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(&self, packet: &mut Packet<&mut T>) {
        packet.set_flags_version(self.flags_version());
        packet.set_protocol_type(self.protocol_type);
        if let Some(key) = self.key {
            packet.set_key(key);
        }
        if let Some(seq) = self.seq {
            packet.set_seq(seq);
        }
        packet.fill_checksum();
    }
}

impl fmt::Display for Repr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gre proto=0x{:04x}", self.protocol_type)?;
        if self.checksum {
            f.write_str(" csum")?;
        }
        if let Some(key) = self.key {
            write!(f, " key={key}")?;
        }
        if let Some(seq) = self.seq {
            write!(f, " seq={seq}")?;
        }
        Ok(())
    }
}

const fn header_len_for(checksum: bool, key: bool, seq: bool) -> usize {
    BASE_HEADER_LEN + 4 * (checksum as usize + key as usize + seq as usize)
}

#[inline]
fn read_u16(data: &[u8], offset: usize) -> u16 {
    u16::from_be_bytes([data[offset], data[offset + 1]])
}

#[inline]
fn read_u32(data: &[u8], offset: usize) -> u32 {
    let mut bytes = [0; 4];
    bytes.copy_from_slice(&data[offset..offset + 4]);
    u32::from_be_bytes(bytes)
}

#[inline]
fn write_u16(data: &mut [u8], offset: usize, value: u16) {
    data[offset..offset + 2].copy_from_slice(&value.to_be_bytes());
}

#[inline]
fn write_u32(data: &mut [u8], offset: usize, value: u32) {
    data[offset..offset + 4].copy_from_slice(&value.to_be_bytes());
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString;
    use std::vec::Vec;

    use rstest::rstest;

    use super::*;

    /// C, K, S set, protocol IPv4, key 0x01020304, seq 0x0a0b0c0d, then a 4-byte payload.
    /// The checksum, by hand: 16-bit words b000 0800 0000 0000 0102 0304 0a0b 0c0d 4500 0004
    /// sum to 0x1_1722 → fold 0x1723 → complement 0xe8dc.
    const GRE_CKS: [u8; 20] = [
        0xb0, 0x00, 0x08, 0x00, // C K S, version 0, IPv4
        0xe8, 0xdc, 0x00, 0x00, // checksum, reserved1
        0x01, 0x02, 0x03, 0x04, // key
        0x0a, 0x0b, 0x0c, 0x0d, // sequence number
        0x45, 0x00, 0x00, 0x04, // payload
    ];

    fn repr_cks() -> Repr {
        Repr {
            protocol_type: PROTOCOL_IPV4,
            checksum: true,
            key: Some(0x0102_0304),
            seq: Some(0x0a0b_0c0d),
        }
    }

    #[test]
    fn deconstruct() {
        let packet = Packet::new_checked(&GRE_CKS[..]).unwrap();
        assert_eq!(packet.version(), 0);
        assert!(packet.checksum_present() && packet.key_present() && packet.seq_present());
        assert_eq!(packet.header_len(), 16);
        assert_eq!(packet.protocol_type(), PROTOCOL_IPV4);
        assert_eq!(packet.checksum(), Some(0xe8dc));
        assert_eq!(packet.reserved1(), Some(0));
        assert_eq!(packet.key(), Some(0x0102_0304));
        assert_eq!(packet.seq(), Some(0x0a0b_0c0d));
        assert_eq!(packet.payload(), &[0x45, 0, 0, 4]);
        assert!(packet.verify_checksum());
        assert_eq!(Repr::parse(&packet, true), Ok(repr_cks()));
        assert_eq!(
            packet.to_string(),
            "gre proto=0x0800 csum key=16909060 seq=168496141"
        );
    }

    #[test]
    fn construct() {
        let mut bytes = [0xffu8; 20];
        bytes[16..].copy_from_slice(&[0x45, 0, 0, 4]);
        let repr = repr_cks();
        assert_eq!(repr.buffer_len(), 16);
        repr.emit(&mut Packet::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, GRE_CKS);
    }

    #[rstest]
    #[case::bare(false, None, None, 4)]
    #[case::key(false, Some(9), None, 8)]
    #[case::seq(false, None, Some(3), 8)]
    #[case::csum(true, None, None, 8)]
    #[case::key_seq(false, Some(u32::MAX), Some(0), 12)]
    #[case::all(true, Some(1), Some(2), 16)]
    fn roundtrip(
        #[case] checksum: bool,
        #[case] key: Option<u32>,
        #[case] seq: Option<u32>,
        #[case] len: usize,
    ) {
        for protocol_type in [PROTOCOL_IPV4, PROTOCOL_IPV6, PROTOCOL_TEB] {
            let repr = Repr {
                protocol_type,
                checksum,
                key,
                seq,
            };
            assert_eq!(repr.buffer_len(), len);
            // An odd-length payload exercises the checksum's trailing byte.
            let mut bytes: Vec<u8> = std::vec![0xaa; len + 7];
            repr.emit(&mut Packet::new_unchecked(&mut bytes[..]));
            let packet = Packet::new_checked(&bytes[..]).unwrap();
            assert_eq!(Repr::parse(&packet, true), Ok(repr));
            assert_eq!(packet.payload(), &[0xaa; 7]);
        }
    }

    #[test]
    fn bare_header_bytes() {
        let repr = Repr {
            protocol_type: PROTOCOL_TEB,
            checksum: false,
            key: None,
            seq: None,
        };
        let mut bytes = [0xffu8; 4];
        repr.emit(&mut Packet::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, [0x00, 0x00, 0x65, 0x58]);
    }

    #[test]
    fn checksum_covers_the_payload() {
        let mut bytes = GRE_CKS;
        bytes[19] ^= 0x01;
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert!(!packet.verify_checksum());
        assert_eq!(Repr::parse(&packet, true), Err(ParseError::BadChecksum));
        // The capability: a caller that already checked it skips the check.
        assert_eq!(Repr::parse(&packet, false), Ok(repr_cks()));
        assert_eq!(packet.to_string(), "gre (bad checksum)");
    }

    #[test]
    fn truncated() {
        for len in 0..16 {
            assert_eq!(
                Packet::new_checked(&GRE_CKS[..len]).unwrap_err(),
                ParseError::Truncated,
                "prefix of {len} bytes"
            );
            assert_eq!(
                Repr::parse(&Packet::new_unchecked(&GRE_CKS[..len]), false),
                Err(ParseError::Truncated)
            );
        }
        // Header only: the view is valid, the checksum (over the header alone) is not.
        let packet = Packet::new_checked(&GRE_CKS[..16]).unwrap();
        assert!(packet.payload().is_empty());
        assert_eq!(Repr::parse(&packet, true), Err(ParseError::BadChecksum));
    }

    #[rstest]
    #[case::version1(0x0001, ParseError::Unsupported)]
    #[case::version7(0x0007, ParseError::Unsupported)]
    #[case::routing(FLAG_ROUTING, ParseError::IllegalValue { field: "flags" })]
    #[case::strict_route(0x0800, ParseError::IllegalValue { field: "flags" })]
    #[case::recursion_top_bit(0x0400, ParseError::IllegalValue { field: "flags" })]
    fn rejected_flags(#[case] bits: u16, #[case] error: ParseError) {
        let mut bytes = [0u8; 24];
        let flags = bits.to_be_bytes();
        bytes[..2].copy_from_slice(&flags);
        bytes[2..4].copy_from_slice(&PROTOCOL_IPV4.to_be_bytes());
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(Repr::parse(&packet, true), Err(error));
    }

    #[test]
    fn reserved_bits_6_to_12_and_reserved1_are_ignored() {
        let mut bytes = GRE_CKS;
        bytes[0] |= 0x03; // bits 6–7
        bytes[1] |= 0xf8; // bits 8–12
        bytes[6..8].copy_from_slice(&[0x12, 0x34]); // reserved1
        // The checksum covers the ignored bits too: recompute it with the field zero.
        bytes[4..6].fill(0);
        let sum = checksum(&bytes);
        bytes[4..6].copy_from_slice(&sum.to_be_bytes());
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.reserved1(), Some(0x1234));
        assert_eq!(Repr::parse(&packet, true), Ok(repr_cks()));
    }
}
