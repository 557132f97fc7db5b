//! Authentication of braid packets: a keyed MAC over every packet, per-direction keys derived
//! from a pre-shared key, and a send counter. The receive side's anti-replay window is
//! [`crate::replay`]; the engine ties them together (check counter → verify tag → record).
//!
//! What this module owns: key derivation and the tag. What it does not: reading the key (the
//! daemon reads it from a file with restricted permissions, never from the command line),
//! encryption (an AEAD behind the same [`PacketAuth`] trait comes with the Linux data path),
//! and rekeying.
//!
//! # Why per-direction keys
//!
//! Both peers hold the same pre-shared key. If both also sent with it, an attacker could
//! reflect a peer's own packets back to it: their counters are the peer's own, which its
//! receive window has never seen, so they would pass. Each side therefore sends with
//! `derive_key("braid 1 a->b", psk)` or `"b->a"` by its role, and receives with the other: a
//! reflected packet fails the tag.
//!
//! # Why BLAKE3, 16-byte tags
//!
//! Keyed BLAKE3 is a fast MAC in pure Rust with no allocation; the tag is its first 16 bytes
//! (128 bits, as in AES-GCM and ChaCha20-Poly1305), compared in constant time. The tag covers
//! the whole braid packet — header, replay counter and payload — so no field can be changed
//! without detection.

use core::fmt;

/// Bytes of the tag at the end of an authenticated braid packet.
pub const TAG_LEN: usize = braid_wire::BRAID_AUTH_TAG_LEN;

/// Which end of the pair this engine is. The two peers must be configured with opposite
/// roles (any rule works, e.g. the one with the lower address is `A`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Sends with the a→b key.
    A,
    /// Sends with the b→a key.
    B,
}

/// Authentication settings of an engine.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// The pre-shared key, 32 bytes.
    pub psk: [u8; 32],
    /// This side's role.
    pub role: Role,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("psk", &"<redacted>")
            .field("role", &self.role)
            .finish()
    }
}

/// A packet authenticator: computes and checks tags. Implementations must not allocate.
pub trait PacketAuth: fmt::Debug + Send {
    /// The tag of `data` (the packet up to, not including, its tag).
    fn tag(&self, data: &[u8]) -> [u8; TAG_LEN];

    /// `true` if `tag` is `data`'s tag; constant time in the tag's bytes.
    fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        let want = self.tag(data);
        tag.len() == TAG_LEN && ct_eq(&want, tag)
    }
}

/// Keyed BLAKE3, truncated to [`TAG_LEN`] bytes.
#[derive(Clone)]
pub struct Blake3Mac {
    key: [u8; 32],
}

impl Blake3Mac {
    /// A MAC with this key.
    #[must_use]
    pub const fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// The (send, receive) MACs for one side of a pair.
    #[must_use]
    pub fn pair(config: &AuthConfig) -> (Self, Self) {
        let ab = Self::new(blake3::derive_key("braid 1 a->b", &config.psk));
        let ba = Self::new(blake3::derive_key("braid 1 b->a", &config.psk));
        match config.role {
            Role::A => (ab, ba),
            Role::B => (ba, ab),
        }
    }
}

impl fmt::Debug for Blake3Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Blake3Mac { key: <redacted> }")
    }
}

impl PacketAuth for Blake3Mac {
    fn tag(&self, data: &[u8]) -> [u8; TAG_LEN] {
        let hash = blake3::keyed_hash(&self.key, data);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&hash.as_bytes()[..TAG_LEN]);
        tag
    }
}

/// Constant-time equality of two equally long byte strings.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the compiler from turning the fold into an early-exit compare.
    core::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(role: Role) -> AuthConfig {
        AuthConfig { psk: [7; 32], role }
    }

    #[test]
    fn peers_agree_and_directions_differ() {
        let (a_tx, a_rx) = Blake3Mac::pair(&config(Role::A));
        let (b_tx, b_rx) = Blake3Mac::pair(&config(Role::B));
        let msg = b"braid packet";
        assert!(b_rx.verify(msg, &a_tx.tag(msg)), "b accepts a's packets");
        assert!(a_rx.verify(msg, &b_tx.tag(msg)), "a accepts b's packets");
        assert!(
            !a_rx.verify(msg, &a_tx.tag(msg)),
            "a reflected packet fails"
        );
        let mut bad = a_tx.tag(msg);
        bad[15] ^= 1;
        assert!(!b_rx.verify(msg, &bad));
        assert!(!b_rx.verify(b"braid packeT", &a_tx.tag(msg)));
        assert!(!b_rx.verify(msg, &a_tx.tag(msg)[..8]), "short tags fail");
        let other = AuthConfig {
            psk: [8; 32],
            role: Role::B,
        };
        assert!(
            !Blake3Mac::pair(&other).1.verify(msg, &a_tx.tag(msg)),
            "other key fails"
        );
    }

    #[test]
    fn keys_never_print() {
        let c = config(Role::A);
        let text = alloc::format!("{c:?} {:?}", Blake3Mac::pair(&c).0);
        assert!(!text.contains('7'), "{text}");
        assert!(text.contains("redacted"));
    }
}
