//! The VXLAN header (RFC 7348 §5): just enough for classification, the VNI.
//!
//! Owns the 8-byte header view and its repr. It does not own VXLAN encapsulation or
//! decapsulation of inner frames, the outer UDP/IP headers, or VTEP learning: those come with
//! the tunnel issue, which will grow this view rather than replace it.
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
