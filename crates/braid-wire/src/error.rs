//! The one error type shared by every view and repr in this crate.
//!
//! Owns [`ParseError`] only. It is a small `Copy` enum (smoltcp's `wire::Error` shape) so the
//! hot path can return it by value, match on it and map it to a `DropReason` without
//! formatting or allocating. It does not own drop accounting: that is braid-core's job.

use core::fmt;

/// Why a packet (or a repr about to be emitted) was rejected.
///
/// Returned by every `new_checked`, `check_len` and `Repr::parse` in this crate, and by the
/// emit helpers that check a repr or a buffer size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParseError {
    /// The buffer ends before a header (or a part a header announces) is complete.
    Truncated,
    /// A length field is inconsistent: with the buffer, with another field, or with the
    /// protocol's rules (for example an empty data payload).
    BadLength,
    /// A checksum does not verify.
    BadChecksum,
    /// A well-formed packet this crate does not handle: another protocol version, a
    /// non-IP EtherType, more VLAN tags than supported.
    Unsupported,
    /// A field holds a value the protocol forbids.
    IllegalValue {
        /// The field's name, as it appears in the view's getter (`"type"`, `"flags"`, ...).
        field: &'static str,
    },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("truncated packet"),
            Self::BadLength => f.write_str("inconsistent length"),
            Self::BadChecksum => f.write_str("bad checksum"),
            Self::Unsupported => f.write_str("unsupported packet"),
            Self::IllegalValue { field } => write!(f, "illegal value in field {field}"),
        }
    }
}

impl core::error::Error for ParseError {}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString;

    use super::*;

    #[test]
    fn display_names_the_field() {
        assert_eq!(
            ParseError::IllegalValue { field: "flags" }.to_string(),
            "illegal value in field flags"
        );
        assert_eq!(ParseError::Truncated.to_string(), "truncated packet");
        assert_eq!(ParseError::BadLength.to_string(), "inconsistent length");
        assert_eq!(ParseError::BadChecksum.to_string(), "bad checksum");
        assert_eq!(ParseError::Unsupported.to_string(), "unsupported packet");
    }
}
