//! The VXLAN header (RFC 7348 §5) and the UDP source port rule of its encapsulation.
//!
//! Owns the 8-byte header view and its repr (classification reads the VNI with them), and
//! [`SrcPortRange`], which turns a flow hash into the outer UDP source port. It does not own
//! the outer IP/UDP headers or the encapsulation and decapsulation of whole packets
//! ([`crate::tunnel`]), nor VTEP learning or flooding (braid has configured peers, not a
//! learning bridge).
//!
//! ```text
//!  0      flags: 0x08 (the I bit: the VNI is valid); the other bits are reserved
//!  1..4   reserved
//!  4..7   VXLAN network identifier (VNI, 24 bits)
//!  7      reserved
//! ```
//!
//! RFC 7348 says reserved fields are "set to zero on transmission and ignored on receipt";
//! [`Repr::parse`] therefore requires the flags byte to be exactly 0x08 (the I bit set, and
//! no flag from an extension such as VXLAN-GPE or GBP, whose packets mean something else) and
//! ignores the reserved bytes.

use core::fmt;

use crate::ParseError;

/// The IANA UDP destination port for VXLAN (RFC 7348 §5).
pub const VXLAN_PORT: u16 = 4789;
/// Length in bytes of the VXLAN header.
pub const HEADER_LEN: usize = 8;
/// The flags byte of a VXLAN header: only the I bit (VNI valid).
pub const FLAGS_VNI_VALID: u8 = 0x08;
/// The largest VNI (24 bits).
pub const VNI_MAX: u32 = 0x00ff_ffff;

/// The outer UDP source ports a VXLAN sender picks from, by flow hash (inclusive bounds).
///
/// RFC 7348 §5: the source port should be "calculated using a hash of fields from the inner
/// packet", so that ECMP and RSS on the underlay spread tunnelled flows while keeping each
/// one on a path, and "in the dynamic/private port range 49152-65535" ([`Self::RFC7348`]).
/// Linux picks from its local port range instead, 32768–60999 by default
/// ([`Self::LINUX_DEFAULT`]; `ip link ... type vxlan srcport MIN MAX` changes it). A receiver
/// accepts any source port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SrcPortRange {
    /// The lowest port, inclusive.
    pub min: u16,
    /// The highest port, inclusive; at least `min`.
    pub max: u16,
}

impl SrcPortRange {
    /// 49152–65535, the range RFC 7348 §5 recommends (the default).
    pub const RFC7348: Self = Self {
        min: 49152,
        max: 65535,
    };
    /// 32768–60999, what a Linux VXLAN device uses by default (`net.ipv4.ip_local_port_range`).
    pub const LINUX_DEFAULT: Self = Self {
        min: 32768,
        max: 60999,
    };

    /// `true` if `min <= max`.
    pub const fn is_valid(&self) -> bool {
        self.min <= self.max
    }

    /// The source port for a flow hash: the same hash always gives the same port, and
    /// hashes spread evenly over the range. The hash is mixed as Linux's
    /// `udp_flow_src_port` does (`h ^ h << 16`), so a hash with entropy only in its low bits
    /// still spreads, then scaled by a multiply-shift (no division). An inverted range
    /// (`min > max`) yields `min`.
    pub const fn port(&self, flow_hash: u32) -> u16 {
        if self.min >= self.max {
            return self.min;
        }
        let mixed = flow_hash ^ (flow_hash << 16);
        let span = (self.max - self.min) as u64 + 1;
        // (mixed × span) >> 32 < span ≤ 65536, and min + it ≤ max: no truncation.
        self.min + ((mixed as u64 * span) >> 32) as u16
    }
}

impl Default for SrcPortRange {
    fn default() -> Self {
        Self::RFC7348
    }
}

mod field {
    pub(super) type Field = core::ops::Range<usize>;

    pub(super) const FLAGS: usize = 0;
    pub(super) const RESERVED1: Field = 1..4;
    pub(super) const VNI: Field = 4..7;
    pub(super) const RESERVED2: usize = 7;
    pub(super) const PAYLOAD: core::ops::RangeFrom<usize> = 8..;
}

/// A read/write view over a VXLAN header and the inner Ethernet frame that follows it.
///
/// Once [`Packet::check_len`] is `Ok`, no accessor panics.
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
    /// [`ParseError::Truncated`] if the buffer is shorter than [`HEADER_LEN`].
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the whole header.
    ///
    /// # Errors
    /// [`ParseError::Truncated`] if the buffer is shorter than [`HEADER_LEN`].
    pub fn check_len(&self) -> Result<(), ParseError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(ParseError::Truncated)
        } else {
            Ok(())
        }
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The flags byte (0x08 in a valid header).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The VXLAN network identifier (24 bits).
    pub fn vni(&self) -> u32 {
        let data = self.buffer.as_ref();
        let mut bytes = [0; 4];
        bytes[1..].copy_from_slice(&data[field::VNI]);
        u32::from_be_bytes(bytes)
    }

    /// The inner Ethernet frame.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the flags byte.
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::FLAGS] = flags;
    }

    /// Sets the VNI; only its low 24 bits are written.
    pub fn set_vni(&mut self, vni: u32) {
        self.buffer.as_mut()[field::VNI].copy_from_slice(&vni.to_be_bytes()[1..]);
    }

    /// Zeroes the reserved bytes (1..4 and 7).
    pub fn clear_reserved(&mut self) {
        let data = self.buffer.as_mut();
        data[field::RESERVED1].fill(0);
        data[field::RESERVED2] = 0;
    }

    /// The inner Ethernet frame, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]>> fmt::Display for Packet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Repr::parse(&Packet::new_unchecked(self.buffer.as_ref())) {
            Ok(repr) => write!(f, "{repr}"),
            Err(err) => write!(f, "vxlan ({err})"),
        }
    }
}

/// A parsed VXLAN header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Repr {
    /// The VXLAN network identifier, at most [`VNI_MAX`].
    pub vni: u32,
}

impl Repr {
    /// Parses a header.
    ///
    /// # Errors
    /// [`ParseError::Truncated`] for a short buffer; `IllegalValue { field: "flags" }` if the
    /// flags byte is not [`FLAGS_VNI_VALID`].
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Self, ParseError> {
        packet.check_len()?;
        if packet.flags() != FLAGS_VNI_VALID {
            return Err(ParseError::IllegalValue { field: "flags" });
        }
        Ok(Self { vni: packet.vni() })
    }

    /// The header length: [`HEADER_LEN`].
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header: flags 0x08, the VNI (low 24 bits), reserved bytes zero.
    ///
    /// # Panics
    /// If the buffer is shorter than [`HEADER_LEN`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(&self, packet: &mut Packet<&mut T>) {
        packet.set_flags(FLAGS_VNI_VALID);
        packet.clear_reserved();
        packet.set_vni(self.vni);
    }
}

impl fmt::Display for Repr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vxlan vni={}", self.vni)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString;

    use rstest::rstest;

    use super::*;

    /// VNI 0x123456, then the first bytes of an inner Ethernet frame.
    const VXLAN_BYTES: [u8; 10] = [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0, 0xaa, 0xbb];

    #[test]
    fn deconstruct() {
        let packet = Packet::new_checked(&VXLAN_BYTES[..]).unwrap();
        assert_eq!(packet.flags(), 0x08);
        assert_eq!(packet.vni(), 0x12_3456);
        assert_eq!(packet.payload(), &[0xaa, 0xbb]);
        assert_eq!(Repr::parse(&packet), Ok(Repr { vni: 0x12_3456 }));
        assert_eq!(packet.to_string(), "vxlan vni=1193046");
    }

    #[test]
    fn construct() {
        let mut bytes = [0xffu8; 10];
        bytes[8..].copy_from_slice(&[0xaa, 0xbb]);
        let repr = Repr { vni: 0x12_3456 };
        assert_eq!(repr.buffer_len(), HEADER_LEN);
        repr.emit(&mut Packet::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, VXLAN_BYTES);
    }

    #[test]
    fn set_vni_writes_only_24_bits() {
        let mut bytes = [0u8; 8];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_vni(0xab12_3456);
        assert_eq!(packet.vni(), 0x12_3456);
        assert_eq!(
            bytes[3], 0,
            "the high VNI byte must not spill into reserved"
        );
        assert_eq!(bytes[7], 0);
    }

    #[test]
    fn reserved_bytes_are_ignored_on_receipt() {
        let mut bytes = VXLAN_BYTES;
        bytes[1] = 0xff;
        bytes[7] = 0xff;
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(Repr::parse(&packet), Ok(Repr { vni: 0x12_3456 }));
    }

    #[rstest]
    #[case::no_i_bit(0x00)]
    #[case::gpe_next_protocol_bit(0x0c)]
    #[case::gbp_bit(0x88)]
    fn bad_flags(#[case] flags: u8) {
        let mut bytes = VXLAN_BYTES;
        bytes[0] = flags;
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            Repr::parse(&packet),
            Err(ParseError::IllegalValue { field: "flags" })
        );
        assert_eq!(packet.to_string(), "vxlan (illegal value in field flags)");
    }

    #[test]
    fn src_port_stays_in_range_and_spreads() {
        for range in [
            SrcPortRange::RFC7348,
            SrcPortRange::LINUX_DEFAULT,
            SrcPortRange { min: 5, max: 6 },
        ] {
            let mut seen_min = u16::MAX;
            let mut seen_max = 0;
            for i in 0..20_000u32 {
                let port = range.port(i.wrapping_mul(0x9e37_79b9));
                assert!(
                    (range.min..=range.max).contains(&port),
                    "{port} in {range:?}"
                );
                seen_min = seen_min.min(port);
                seen_max = seen_max.max(port);
            }
            // The spread reaches both ends of the range (within 1 %).
            let slack = (range.max - range.min) / 100;
            assert!(
                seen_min <= range.min + slack,
                "{range:?} low end {seen_min}"
            );
            assert!(
                seen_max >= range.max - slack,
                "{range:?} high end {seen_max}"
            );
        }
        // Extremes of the hash, and a deterministic mapping.
        assert_eq!(SrcPortRange::RFC7348.port(0), 49152);
        assert_eq!(
            SrcPortRange::RFC7348.port(u32::MAX),
            SrcPortRange::RFC7348.port(u32::MAX)
        );
        assert!(SrcPortRange::RFC7348.port(u32::MAX) >= 49152);
        // Hashes with entropy only in their low 16 bits still spread (the mixing): without
        // it they would all map to the range's first port.
        let mut hit = std::vec![false; 65536];
        for hash in 0..65536u32 {
            hit[usize::from(SrcPortRange::RFC7348.port(hash))] = true;
        }
        assert!(hit.iter().filter(|h| **h).count() > 10_000);
        // Degenerate ranges.
        assert_eq!(SrcPortRange { min: 7, max: 7 }.port(12345), 7);
        assert_eq!(SrcPortRange { min: 9, max: 3 }.port(12345), 9);
        assert!(!SrcPortRange { min: 9, max: 3 }.is_valid());
        assert_eq!(SrcPortRange::default(), SrcPortRange::RFC7348);
    }

    #[test]
    fn truncated() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&VXLAN_BYTES[..len]).unwrap_err(),
                ParseError::Truncated,
                "prefix of {len} bytes"
            );
            let unchecked = Packet::new_unchecked(&VXLAN_BYTES[..len]);
            assert_eq!(Repr::parse(&unchecked), Err(ParseError::Truncated));
        }
        let header_only = Packet::new_checked(&VXLAN_BYTES[..HEADER_LEN]).unwrap();
        assert!(header_only.payload().is_empty());
    }
}
