//! Authentication of braid packets: a keyed MAC (or an AEAD) over every packet, per-direction
//! keys derived from a pre-shared key, and a send counter. The receive side's anti-replay
//! window is [`crate::replay`]; the engine ties them together (check counter → open/verify →
//! record).
//!
//! What this module owns: the settings ([`AuthConfig`]), key derivation
//! ([`direction_keys`]), the contract every packet protection meets ([`PacketProtection`]) and
//! the MAC-only protection ([`Blake3Mac`]). What it does not: reading the key (braid-io's
//! `keyfile`: a file with restricted permissions, never the command line), the AEADs
//! (braid-io's `crypto`, with ring: braid-core stays free of I/O crates and ring pulls libc),
//! and rekeying.
//!
//! # Packet protection: the contract
//!
//! A [`PacketProtection`] protects one direction: the engine holds one to seal what it sends
//! and one to open what it receives ([`crate::engine::Engine::with_protection`] takes both;
//! [`crate::engine::EngineConfig::auth`] alone gives the BLAKE3 pair). It sees the whole
//! packet up to the tag, the header (with the replay counter, flags final) first: the header
//! is authenticated as is, the payload is encrypted in place if
//! [`PacketProtection::encrypts`]. An encrypting protection's packets carry the ENCRYPTED flag
//! (`braid_wire::braid::FLAG_ENCRYPTED`), and a receiver drops (and counts as
//! [`crate::DropReason::EncryptionMismatch`]) packets whose flag does not match its own
//! setting, in both directions, so a misconfigured pair fails loudly instead of handing
//! cipher text to the application or plain text to a peer that expects secrecy.
//!
//! # Nonces, and why a restarted sender cannot reuse one
//!
//! AEADs take a 96-bit nonce that must never repeat under one key (AES-GCM loses both secrecy
//! and integrity if it does). braid's nonce is the packet's 64-bit replay counter, big-endian,
//! after four zero bytes (as WireGuard builds its own): unique per direction key as long as a
//! sender never sends the same counter twice. Within a run the engine counts up and refuses
//! to wrap ([`crate::DropReason::ReplayCounterExhausted`]). Across runs the PSK, and so the
//! keys, stay the same, so the counter must not start again at the same place:
//! [`AuthConfig::counter_start`] is where it starts, and **the daemon sets it to the wall-clock
//! time in nanoseconds at start-up** (braid-io's `crypto::wall_clock_counter_start`). A sender
//! sends far fewer than 10^9 packets per second, so a restarted sender starts above every
//! counter it used before (as long as the clock did not step back across the restart), and
//! the receiver's window takes the jump forward as a new highest counter (a forward jump is
//! always accepted, [`crate::replay`]) instead of dropping the restarted peer's packets as
//! replays until its counter catches up.
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
    /// The replay counter of the first packet this engine sends; each later packet carries
    /// the next one. Default 0 (tests, the simulator). The daemon sets it to the wall-clock
    /// time in ns at start-up, so a restarted sender never reuses a counter, hence an AEAD
    /// nonce, of an earlier run (see the module doc). `u64::MAX` is never sent.
    pub counter_start: u64,
}

impl AuthConfig {
    /// Settings with this key and role, counting from 0.
    #[must_use]
    pub const fn new(psk: [u8; 32], role: Role) -> Self {
        Self {
            psk,
            role,
            counter_start: 0,
        }
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("psk", &"<redacted>")
            .field("role", &self.role)
            .field("counter_start", &self.counter_start)
            .finish()
    }
}

/// What a pair of direction keys is for. Each purpose derives its keys with its own BLAKE3
/// context string, so one PSK never gives the same key to two algorithms or two directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyPurpose {
    /// Keyed BLAKE3 MAC ([`Blake3Mac`]).
    Blake3Mac,
    /// AES-256-GCM (braid-io's `crypto`).
    Aes256Gcm,
    /// ChaCha20-Poly1305 (braid-io's `crypto`).
    ChaCha20Poly1305,
    /// AES-GMAC, authentication only (braid-io's `crypto`). A key of its own: GMAC and GCM
    /// under one key with the same counters would reuse nonces.
    AesGmac,
}

impl KeyPurpose {
    /// The BLAKE3 `derive_key` contexts of the a→b and b→a keys. Fixed forever: changing one
    /// changes the keys on the wire.
    const fn contexts(self) -> (&'static str, &'static str) {
        match self {
            Self::Blake3Mac => ("braid 1 a->b", "braid 1 b->a"),
            Self::Aes256Gcm => ("braid 1 aes-256-gcm a->b", "braid 1 aes-256-gcm b->a"),
            Self::ChaCha20Poly1305 => (
                "braid 1 chacha20-poly1305 a->b",
                "braid 1 chacha20-poly1305 b->a",
            ),
            Self::AesGmac => ("braid 1 aes-gmac a->b", "braid 1 aes-gmac b->a"),
        }
    }
}

/// The (send, receive) keys of one side for one purpose, derived from the PSK with BLAKE3's
/// key derivation (a distinct context per purpose and direction). The two sides of a pair get
/// each other's keys because their roles differ.
#[must_use]
pub fn direction_keys(config: &AuthConfig, purpose: KeyPurpose) -> ([u8; 32], [u8; 32]) {
    let (ab_context, ba_context) = purpose.contexts();
    let ab = blake3::derive_key(ab_context, &config.psk);
    let ba = blake3::derive_key(ba_context, &config.psk);
    match config.role {
        Role::A => (ab, ba),
        Role::B => (ba, ab),
    }
}

/// One direction's packet protection: authenticates (and optionally encrypts) braid packets.
/// See the module doc for the contract; the engine is the only caller.
///
/// `packet` is always the whole braid packet up to, not including, its tag:
/// `packet[..header_len]` is the header with the replay counter `counter` (and the final
/// flags), `packet[header_len..]` the payload. Implementations must not allocate, and must
/// compare tags in constant time.
pub trait PacketProtection: fmt::Debug + Send {
    /// `true` if [`seal`](Self::seal) encrypts the payload (the packet then carries the
    /// ENCRYPTED flag and [`open`](Self::open) decrypts it).
    fn encrypts(&self) -> bool;

    /// Protect a packet to send: authenticate the header and the payload, encrypt the
    /// payload in place if [`encrypts`](Self::encrypts), return the tag. `None` if the
    /// protection refuses (an AEAD asked for a counter that is not above the last one it
    /// sealed, which would reuse a nonce): the packet must not be sent.
    fn seal(&mut self, counter: u64, packet: &mut [u8], header_len: usize)
    -> Option<[u8; TAG_LEN]>;

    /// Check a received packet against `tag` and, if it encrypts, decrypt its payload in
    /// place. `false` for a forged or corrupted packet; the payload bytes are then
    /// unspecified and the packet must be dropped.
    fn open(&self, counter: u64, packet: &mut [u8], header_len: usize, tag: &[u8]) -> bool;

    /// [`open`](Self::open) without a writable buffer, for protections that do not encrypt
    /// (the engine uses it to skip a copy). An encrypting protection cannot check without
    /// decrypting: the default returns `false`.
    fn verify_clear(&self, counter: u64, packet: &[u8], header_len: usize, tag: &[u8]) -> bool {
        let _ = (counter, packet, header_len, tag);
        false
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
        let (send, recv) = direction_keys(config, KeyPurpose::Blake3Mac);
        (Self::new(send), Self::new(recv))
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

/// MAC only: the tag is keyed BLAKE3 over the whole packet (header, counter, payload); the
/// payload travels in clear. The counter is covered as part of the header.
impl PacketProtection for Blake3Mac {
    fn encrypts(&self) -> bool {
        false
    }

    fn seal(
        &mut self,
        _counter: u64,
        packet: &mut [u8],
        _header_len: usize,
    ) -> Option<[u8; TAG_LEN]> {
        Some(self.tag(packet))
    }

    fn open(&self, counter: u64, packet: &mut [u8], header_len: usize, tag: &[u8]) -> bool {
        self.verify_clear(counter, packet, header_len, tag)
    }

    fn verify_clear(&self, _counter: u64, packet: &[u8], _header_len: usize, tag: &[u8]) -> bool {
        self.verify(packet, tag)
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
        AuthConfig::new([7; 32], role)
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
        let other = AuthConfig::new([8; 32], Role::B);
        assert!(
            !Blake3Mac::pair(&other).1.verify(msg, &a_tx.tag(msg)),
            "other key fails"
        );
    }

    /// The protection view of the MAC: same tag as the MAC, payload untouched, tampering and
    /// the wrong direction refused by both `open` and `verify`.
    #[test]
    fn blake3_protection_seals_and_opens_without_encrypting() {
        let (mut a_tx, _) = Blake3Mac::pair(&config(Role::A));
        let (_, b_rx) = Blake3Mac::pair(&config(Role::B));
        assert!(!PacketProtection::encrypts(&a_tx));
        let mut packet = *b"header..payload";
        let tag = a_tx.seal(1, &mut packet, 7).expect("a MAC never refuses");
        assert_eq!(&packet, b"header..payload", "nothing encrypted");
        assert_eq!(tag, a_tx.tag(&packet));
        assert!(b_rx.verify_clear(1, &packet, 7, &tag));
        assert!(b_rx.open(1, &mut packet.clone(), 7, &tag));
        assert!(
            !b_rx.open(1, &mut packet.clone(), 7, &tag[..15]),
            "short tag"
        );
        let mut bad = packet;
        bad[3] ^= 0x40;
        assert!(!b_rx.open(1, &mut bad, 7, &tag));
        assert!(!b_rx.verify_clear(1, &bad, 7, &tag));
        let (_, a_rx) = Blake3Mac::pair(&config(Role::A));
        assert!(!a_rx.open(1, &mut packet.clone(), 7, &tag), "reflected");
    }

    /// Every purpose and direction gets its own key; the two roles mirror each other; the
    /// MAC keys are the ones this module always used (the wire stays compatible).
    #[test]
    fn direction_keys_are_distinct_per_purpose_and_direction() {
        let purposes = [
            KeyPurpose::Blake3Mac,
            KeyPurpose::Aes256Gcm,
            KeyPurpose::ChaCha20Poly1305,
        ];
        let mut all = alloc::vec::Vec::new();
        for p in purposes {
            let (a_send, a_recv) = direction_keys(&config(Role::A), p);
            let (b_send, b_recv) = direction_keys(&config(Role::B), p);
            assert_eq!((a_send, a_recv), (b_recv, b_send), "{p:?}");
            all.extend([a_send, a_recv]);
        }
        for (i, x) in all.iter().enumerate() {
            for y in &all[i + 1..] {
                assert_ne!(x, y);
            }
        }
        assert_eq!(
            direction_keys(&config(Role::A), KeyPurpose::Blake3Mac).0,
            blake3::derive_key("braid 1 a->b", &[7; 32])
        );
        let other = AuthConfig::new([8; 32], Role::A);
        assert_ne!(
            direction_keys(&other, KeyPurpose::Aes256Gcm),
            direction_keys(&config(Role::A), KeyPurpose::Aes256Gcm)
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
