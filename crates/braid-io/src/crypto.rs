//! Encryption of braid packets: AEAD packet protections (AES-256-GCM, ChaCha20-Poly1305) for
//! the engine, built on ring.
//!
//! Owns [`AeadProtection`] (braid-core's `PacketProtection` with an AEAD), the choice of
//! cipher ([`Cipher`]), [`build_engine`] (an engine with the chosen protection) and
//! [`wall_clock_counter_start`] (where the daemon starts the replay counter). Does not own the
//! contract (braid-core's `auth` module doc: what is authenticated, the ENCRYPTED flag, the
//! nonce rule), the replay window (braid-core's `replay`), nor reading the key
//! ([`crate::keyfile`]).
//!
//! # Why here and not in braid-core
//!
//! ring is the fastest AEAD available to Rust (assembly AES-NI/CLMUL and ChaCha20 from
//! BoringSSL; ~3× the pure-Rust ciphers at 1400 bytes, DEPENDENCIES.md), but it pulls
//! `getrandom` and `libc`, and braid-core must stay free of crates that do I/O. braid-core
//! therefore defines the trait and ships the MAC-only BLAKE3 protection; the AEADs live here
//! and are injected with `Engine::with_protection`.
//!
//! # The construction
//!
//! - **Keys**: one per direction, derived from the PSK with BLAKE3 (`direction_keys`) under a
//!   context string of its own per cipher and direction, so the MAC, AES-GCM and ChaCha20
//!   keys of one PSK are unrelated and a reflected packet fails to open.
//! - **Nonce**: 4 zero bytes, then the packet's 64-bit replay counter big-endian (96 bits,
//!   as RFC 5116 §3.2 recommends for a counter; WireGuard builds its nonce the same way).
//!   Unique per key because the engine never sends a counter twice and the daemon starts
//!   each run's counter at the wall-clock time in ns ([`wall_clock_counter_start`]). As a
//!   second line, each [`AeadProtection`] refuses to seal a counter that is not above the
//!   last one it sealed.
//! - **AAD**: the braid header with its replay counter and flags (ENCRYPTED included), so no
//!   header field can be changed; the payload is encrypted in place; the tag is the AEAD's
//!   16-byte tag, where the MAC's goes.
//!
//! Nothing here allocates per packet: ring seals and opens in place with the key schedule
//! expanded once at construction.

use core::fmt;
use core::str::FromStr;

use braid_core::Instant;
use braid_core::auth::{AuthConfig, KeyPurpose, PacketProtection, TAG_LEN, direction_keys};
use braid_core::engine::{ConfigError, Engine, EngineConfig};
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};

/// An AEAD for braid packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cipher {
    /// AES-256-GCM (NIST SP 800-38D): fastest where the CPU has AES-NI and carry-less
    /// multiplication (every x86-64 and ARMv8 server of the last decade).
    Aes256Gcm,
    /// ChaCha20-Poly1305 (RFC 8439): constant time in software, for CPUs without AES
    /// instructions.
    ChaCha20Poly1305,
}

impl Cipher {
    /// Every cipher.
    pub const ALL: [Self; 2] = [Self::Aes256Gcm, Self::ChaCha20Poly1305];

    /// Its name in configuration: `aes-256-gcm` or `chacha20-poly1305`.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::Aes256Gcm => "aes-256-gcm",
            Self::ChaCha20Poly1305 => "chacha20-poly1305",
        }
    }

    fn algorithm(self) -> &'static aead::Algorithm {
        match self {
            Self::Aes256Gcm => &aead::AES_256_GCM,
            Self::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }

    const fn purpose(self) -> KeyPurpose {
        match self {
            Self::Aes256Gcm => KeyPurpose::Aes256Gcm,
            Self::ChaCha20Poly1305 => KeyPurpose::ChaCha20Poly1305,
        }
    }
}

impl fmt::Display for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// [`Cipher::from_str`] was given a name it does not know.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown cipher {name:?}: expected aes-256-gcm or chacha20-poly1305")]
pub struct UnknownCipher {
    /// The name given.
    pub name: String,
}

impl FromStr for Cipher {
    type Err = UnknownCipher;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.label() == s)
            .ok_or_else(|| UnknownCipher { name: s.into() })
    }
}

/// One direction's AEAD protection of braid packets (see the module doc).
///
/// [`AeadProtection::gmac_pair`] makes the authenticate-only variant, AES-GMAC: AES-256-GCM
/// with the whole braid packet (header, counter, payload) as associated data and nothing to
/// encrypt. Two engines passing 1400-byte packets run 1.55× as fast with it as with keyed
/// BLAKE3 (docs/benchmarks.md), so the daemon authenticates with it; the simulator and the
/// engine's own tests keep BLAKE3 ([`Engine::new`]). AES-256-GCM *with* encryption is faster
/// still (ring interleaves AES and GHASH over the payload, not over associated data). GMAC
/// keys are their own ([`KeyPurpose::AesGmac`]): GMAC and GCM under one key with the same
/// counters would reuse nonces.
pub struct AeadProtection {
    key: LessSafeKey,
    cipher: Cipher,
    /// `false`: AES-GMAC, the payload stays in clear and is authenticated with the header.
    encrypt: bool,
    /// The last counter sealed: a nonce is never used twice.
    last_sealed: Option<u64>,
}

impl AeadProtection {
    /// A protection with this cipher and key.
    #[must_use]
    pub fn new(cipher: Cipher, key: &[u8; 32]) -> Self {
        let key = UnboundKey::new(cipher.algorithm(), key)
            .expect("invariant: both ciphers take 32-byte keys");
        Self {
            key: LessSafeKey::new(key),
            cipher,
            encrypt: true,
            last_sealed: None,
        }
    }

    /// The (send, receive) protections of one side of a pair, with keys derived from the
    /// PSK and role in `config`.
    #[must_use]
    pub fn pair(cipher: Cipher, config: &AuthConfig) -> (Self, Self) {
        let (send, recv) = direction_keys(config, cipher.purpose());
        (Self::new(cipher, &send), Self::new(cipher, &recv))
    }

    /// The (send, receive) AES-GMAC protections of one side of a pair: authentication only.
    #[must_use]
    pub fn gmac_pair(config: &AuthConfig) -> (Self, Self) {
        let (send, recv) = direction_keys(config, KeyPurpose::AesGmac);
        let gmac = |key: &[u8; 32]| Self {
            encrypt: false,
            ..Self::new(Cipher::Aes256Gcm, key)
        };
        (gmac(&send), gmac(&recv))
    }

    /// Where the associated data ends: after the header when encrypting, at the end of the
    /// packet for GMAC (nothing is encrypted).
    fn aad_end(&self, packet_len: usize, header_len: usize) -> usize {
        if self.encrypt { header_len } else { packet_len }
    }

    /// The cipher.
    #[must_use]
    pub const fn cipher(&self) -> Cipher {
        self.cipher
    }
}

impl fmt::Debug for AeadProtection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AeadProtection")
            .field("cipher", &self.cipher)
            .field("encrypt", &self.encrypt)
            .field("key", &"<redacted>")
            .field("last_sealed", &self.last_sealed)
            .finish()
    }
}

/// The 96-bit nonce of a packet: 4 zero bytes, then its replay counter big-endian.
fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; aead::NONCE_LEN];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

impl PacketProtection for AeadProtection {
    fn encrypts(&self) -> bool {
        self.encrypt
    }

    fn seal(
        &mut self,
        counter: u64,
        packet: &mut [u8],
        header_len: usize,
    ) -> Option<[u8; TAG_LEN]> {
        if self.last_sealed.is_some_and(|last| counter <= last) || header_len > packet.len() {
            return None;
        }
        let (header, payload) = packet.split_at_mut(self.aad_end(packet.len(), header_len));
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce(counter), Aad::from(&*header), payload)
            .ok()?;
        self.last_sealed = Some(counter);
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Some(out)
    }

    fn open(&self, counter: u64, packet: &mut [u8], header_len: usize, tag: &[u8]) -> bool {
        let Ok(tag) = aead::Tag::try_from(tag) else {
            return false;
        };
        if header_len > packet.len() {
            return false;
        }
        let (header, payload) = packet.split_at_mut(self.aad_end(packet.len(), header_len));
        // ring checks the tag in constant time and decrypts in place; on failure the payload
        // is unspecified, and the engine drops the packet.
        self.key
            .open_in_place_separate_tag(nonce(counter), Aad::from(&*header), tag, payload, 0..)
            .is_ok()
    }

    fn verify_clear(&self, counter: u64, packet: &[u8], _header_len: usize, tag: &[u8]) -> bool {
        // Only GMAC can check without a writable buffer: it decrypts nothing.
        let Ok(tag) = aead::Tag::try_from(tag) else {
            return false;
        };
        !self.encrypt
            && self
                .key
                .open_in_place_separate_tag(nonce(counter), Aad::from(packet), tag, &mut [], 0..)
                .is_ok()
    }
}

/// How an engine's braid packets are protected (with [`EngineConfig::auth`] set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protection {
    /// Keyed BLAKE3, authentication only ([`Engine::new`]'s default).
    Blake3Mac,
    /// AES-GMAC, authentication only ([`AeadProtection::gmac_pair`]).
    AesGmac,
    /// An AEAD: authenticated and encrypted ([`AeadProtection`]).
    Aead(Cipher),
}

/// An engine whose packets are protected as `protection` says.
///
/// # Errors
/// As [`Engine::new`] and [`Engine::with_protection`]; GMAC and the AEADs need
/// [`EngineConfig::auth`].
pub fn build_engine_with(
    config: EngineConfig,
    now: Instant,
    protection: Protection,
) -> Result<Engine, ConfigError> {
    match protection {
        Protection::Blake3Mac => Engine::new(config, now),
        Protection::Aead(cipher) => build_engine(config, now, Some(cipher)),
        Protection::AesGmac => {
            let Some(auth) = config.auth.clone() else {
                return Err(ConfigError::Invalid {
                    field: "auth".into(),
                    why: "AES-GMAC needs authentication settings (the key and role)",
                });
            };
            let (send, recv) = AeadProtection::gmac_pair(&auth);
            Engine::with_protection(config, now, Box::new(send), Box::new(recv))
        }
    }
}

/// An engine whose packets are protected as `cipher` says: `None` keeps
/// [`Engine::new`]'s behaviour (keyed BLAKE3 when [`EngineConfig::auth`] is set, nothing
/// otherwise); `Some` encrypts with that AEAD, keys derived from [`EngineConfig::auth`].
///
/// # Errors
/// As [`Engine::new`] and [`Engine::with_protection`] (encryption needs
/// [`EngineConfig::auth`]).
pub fn build_engine(
    config: EngineConfig,
    now: Instant,
    cipher: Option<Cipher>,
) -> Result<Engine, ConfigError> {
    match (cipher, config.auth.clone()) {
        (None, _) => Engine::new(config, now),
        (Some(cipher), Some(auth)) => {
            let (send, recv) = AeadProtection::pair(cipher, &auth);
            Engine::with_protection(config, now, Box::new(send), Box::new(recv))
        }
        (Some(_), None) => Err(ConfigError::Invalid {
            field: "auth".into(),
            why: "encryption needs authentication settings (the key and role)",
        }),
    }
}

/// The system clock is before 1970: no counter start can be taken from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the system clock is before 1970: cannot start the replay counter from it")]
pub struct ClockBeforeEpoch;

/// Where the daemon starts the replay counter (`AuthConfig::counter_start`): the wall-clock
/// time in ns since 1970. A restarted sender then starts above every counter it sent before
/// (it sends far fewer than one packet per ns), so it never reuses an AEAD nonce under the
/// unchanged PSK, and its peer's replay window accepts it at once (a forward jump). Valid
/// until 2554. Relies on the clock not being set back across a restart.
///
/// # Errors
/// [`ClockBeforeEpoch`] if the clock reads before 1970 (a broken clock: encrypting from it
/// could reuse nonces, so the daemon must not start).
pub fn wall_clock_counter_start() -> Result<u64, ClockBeforeEpoch> {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| ClockBeforeEpoch)?;
    Ok(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX - 1))
}

#[cfg(test)]
mod tests {
    use braid_core::auth::Role;

    use super::*;

    /// Seal then open, both ciphers: the payload is encrypted, the header is not touched, and
    /// the receiver gets the plain text back.
    #[test]
    fn seal_open_roundtrip_each_cipher() {
        for cipher in Cipher::ALL {
            let cfg_a = AuthConfig::new([3; 32], Role::A);
            let cfg_b = AuthConfig::new([3; 32], Role::B);
            let (mut a_tx, a_rx) = AeadProtection::pair(cipher, &cfg_a);
            let (_, b_rx) = AeadProtection::pair(cipher, &cfg_b);
            let plain = *b"HEADER--the payload bytes, in clear";
            let mut packet = plain;
            let tag = a_tx.seal(7, &mut packet, 8).unwrap();
            assert_eq!(&packet[..8], &plain[..8], "{cipher}: header in clear");
            assert_ne!(&packet[8..], &plain[8..], "{cipher}: payload encrypted");
            let sealed = packet;
            assert!(b_rx.open(7, &mut packet, 8, &tag), "{cipher}");
            assert_eq!(packet, plain);
            // Wrong counter (nonce), header bit, payload bit, tag bit, short tag, reflection.
            assert!(!b_rx.open(8, &mut sealed.clone(), 8, &tag));
            for at in [0, 7, 8, sealed.len() - 1] {
                let mut bad = sealed;
                bad[at] ^= 1;
                assert!(!b_rx.open(7, &mut bad, 8, &tag), "{cipher}: bit at {at}");
            }
            let mut bad_tag = tag;
            bad_tag[15] ^= 0x80;
            assert!(!b_rx.open(7, &mut sealed.clone(), 8, &bad_tag));
            assert!(!b_rx.open(7, &mut sealed.clone(), 8, &tag[..12]));
            assert!(!a_rx.open(7, &mut sealed.clone(), 8, &tag), "reflected");
            // Another cipher's keys and algorithm do not open it.
            let other = Cipher::ALL.into_iter().find(|&c| c != cipher).unwrap();
            let (_, other_rx) = AeadProtection::pair(other, &cfg_b);
            assert!(!other_rx.open(7, &mut sealed.clone(), 8, &tag));
            // Cannot verify without decrypting.
            assert!(!b_rx.verify_clear(7, &sealed, 8, &tag));
        }
    }

    /// The nonce layout is fixed: a known-answer check against ring with the nonce built by
    /// hand (4 zero bytes, counter big-endian), so a change of layout cannot go unnoticed.
    #[test]
    fn nonce_is_zero_prefixed_big_endian_counter() {
        let key = [0x11u8; 32];
        let mut p = AeadProtection::new(Cipher::Aes256Gcm, &key);
        let mut packet = *b"hdr:payload";
        let tag = p.seal(0x0102_0304_0506_0708, &mut packet, 4).unwrap();
        let reference = LessSafeKey::new(UnboundKey::new(&aead::AES_256_GCM, &key).unwrap());
        let mut expected = *b"payload";
        let want = reference
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key([0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]),
                Aad::from(b"hdr:"),
                &mut expected,
            )
            .unwrap();
        assert_eq!(&packet[4..], &expected);
        assert_eq!(&tag[..], want.as_ref());
    }

    #[test]
    fn a_counter_is_never_sealed_twice() {
        let mut p = AeadProtection::new(Cipher::ChaCha20Poly1305, &[1; 32]);
        let mut buf = [0u8; 20];
        assert!(p.seal(5, &mut buf, 4).is_some());
        assert!(p.seal(5, &mut buf, 4).is_none(), "same counter");
        assert!(p.seal(4, &mut buf, 4).is_none(), "lower counter");
        assert!(p.seal(6, &mut buf, 4).is_some());
        assert!(
            p.seal(u64::MAX - 1, &mut buf, 4).is_some(),
            "a jump forward"
        );
        assert!(p.seal(7, &mut buf, 4).is_none());
        assert!(
            p.seal(u64::MAX, &mut buf, 25).is_none(),
            "header past the end"
        );
    }

    #[test]
    fn cipher_names_and_redacted_debug() {
        for c in Cipher::ALL {
            assert_eq!(c.label().parse::<Cipher>(), Ok(c));
            assert_eq!(c.to_string(), c.label());
        }
        let err = "aes-128-gcm".parse::<Cipher>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown cipher \"aes-128-gcm\": expected aes-256-gcm or chacha20-poly1305"
        );
        let text = format!("{:?}", AeadProtection::new(Cipher::Aes256Gcm, &[0xab; 32]));
        assert!(
            text.contains("redacted") && !text.contains("ab, "),
            "{text}"
        );
    }

    #[test]
    fn wall_clock_start_is_after_2024_and_moves_forward() {
        let a = wall_clock_counter_start().unwrap();
        // 2024-01-01T00:00:00Z in ns.
        assert!(a > 1_704_067_200_000_000_000, "{a}");
        std::thread::sleep(std::time::Duration::from_millis(1));
        let b = wall_clock_counter_start().unwrap();
        assert!(b > a);
    }
}
