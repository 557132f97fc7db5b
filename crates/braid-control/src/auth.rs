//! Access control: the bearer token (read from a file only its owner can read, compared in
//! constant time) and the rate limit on failed authentications, per client.
//!
//! What this file owns: the token file's rules ([`Token::read_file`], [`generate_token_file`]),
//! the comparison and the token's fingerprint (what the audit log names it by), and
//! [`AuthLimiter`], the bounded table of token buckets. What it does not own: the middleware
//! that applies them to requests (the `api` module) or the audit log (`audit`).
//!
//! # The token file
//!
//! As braid's key file (braid-io's `keyfile`): the token never comes from the command line
//! or the environment. [`Token::read_file`] refuses a file that is not a regular file, that
//! belongs to another user than the one running braid (or root), or whose mode gives its
//! group or others any access (`mode & 0o077 != 0`: the error says to `chmod 600` it). The
//! checks are made on the opened file, so the file read is the file checked. The token is the
//! file's first line: 32 to 512 visible ASCII characters (no spaces); errors never quote it.
//!
//! # Comparison
//!
//! The presented token and the real one are compared as BLAKE3 hashes: `blake3::Hash`'s
//! equality is constant time, and comparing fixed-size hashes reveals neither the token's
//! bytes nor its length through timing. The audit log names a token by the first 8 hex
//! digits of its hash (its fingerprint), which tells tokens apart without helping to guess
//! one.
//!
//! # Rate limit
//!
//! Each client (an IPv4 address, or an IPv6 /64: one host can use a whole /64) has a token
//! bucket of `burst` failures refilled at one per `refill` interval. A failed authentication
//! takes one; an empty bucket makes every request from the client a 429 with `Retry-After`
//! until it refills, without looking at the token, so guessing is capped at the refill rate.
//! Successful requests cost nothing. The table is bounded ([`MAX_CLIENTS`]): when it is full,
//! buckets that have refilled completely (no recent failures, the same as no entry) make
//! room; if none has, new clients share one overflow bucket, so a flood from many addresses
//! is limited as a whole and a client already limited is never forgotten.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Clients tracked by the rate limiter at most.
pub const MAX_CLIENTS: usize = 4096;

/// Shortest token accepted, characters.
pub const MIN_TOKEN_LEN: usize = 32;

/// Longest token accepted, characters.
pub const MAX_TOKEN_LEN: usize = 512;

/// Why the token file could not be read or written. Messages name the path and what is
/// wrong; none contains the token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenFileError {
    /// The file could not be opened, read or its metadata had.
    #[error("open token file {}", path.display())]
    Open {
        /// The token file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The path is not a regular file.
    #[error("token file {} is not a regular file (it is a {kind})", path.display())]
    NotRegular {
        /// The token file.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// The file belongs to another user.
    #[error(
        "token file {} is owned by uid {owner}, not by the user running braid (uid {uid}) or \
         root: run `chown {uid} {}`", path.display(), path.display()
    )]
    Owner {
        /// The token file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// This process's effective uid.
        uid: u32,
    },
    /// Its group or others have permissions on it.
    #[error(
        "token file {} has mode {mode:03o}: it must be 0600 (its group or others may access \
         it); run `chmod 600 {}`", path.display(), path.display()
    )]
    Mode {
        /// The token file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The content is not a token.
    #[error("token file {}: {reason}", path.display())]
    BadToken {
        /// The token file.
        path: PathBuf,
        /// What is wrong, without the token.
        reason: &'static str,
    },
    /// A new token file could not be written.
    #[error("write token file {}", path.display())]
    Write {
        /// The token file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// The API's bearer token, held as its BLAKE3 hash only.
#[derive(Clone)]
pub struct Token {
    hash: blake3::Hash,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

impl Token {
    /// A token from its text (tests, and [`Token::read_file`]).
    ///
    /// # Errors
    /// The reason, if `text` is not 32 to 512 visible ASCII characters.
    pub fn new(text: &str) -> Result<Self, &'static str> {
        if text.len() < MIN_TOKEN_LEN {
            return Err("the token is shorter than 32 characters");
        }
        if text.len() > MAX_TOKEN_LEN {
            return Err("the token is longer than 512 characters");
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the token must be visible ASCII characters, no spaces");
        }
        Ok(Self {
            hash: blake3::hash(text.as_bytes()),
        })
    }

    /// Read the token from `path`, checking the file first (module docs).
    ///
    /// # Errors
    /// [`TokenFileError`], naming the path and what is wrong.
    pub fn read_file(path: &Path) -> Result<Self, TokenFileError> {
        let open_err = |source| TokenFileError::Open {
            path: path.to_owned(),
            source,
        };
        // A FIFO or device is refused before it is opened, so opening never blocks.
        let meta = fs::metadata(path).map_err(open_err)?;
        check_regular(path, &meta)?;
        let mut file = File::open(path).map_err(open_err)?;
        let meta = file.metadata().map_err(open_err)?;
        check_regular(path, &meta)?;
        let uid = rustix::process::geteuid().as_raw();
        if meta.uid() != uid && meta.uid() != 0 {
            return Err(TokenFileError::Owner {
                path: path.to_owned(),
                owner: meta.uid(),
                uid,
            });
        }
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(TokenFileError::Mode {
                path: path.to_owned(),
                mode,
            });
        }
        let mut text = String::new();
        (&mut file)
            .take(MAX_TOKEN_LEN as u64 + 2)
            .read_to_string(&mut text)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::InvalidData {
                    TokenFileError::BadToken {
                        path: path.to_owned(),
                        reason: "the file is not text",
                    }
                } else {
                    open_err(e)
                }
            })?;
        let line = text.lines().next().unwrap_or("");
        Self::new(line).map_err(|reason| TokenFileError::BadToken {
            path: path.to_owned(),
            reason,
        })
    }

    /// Is `presented` this token? Constant time in the token's content (see module docs).
    #[must_use]
    pub fn verify(&self, presented: &str) -> bool {
        blake3::hash(presented.as_bytes()) == self.hash
    }

    /// The first 8 hex digits of the token's hash: how the audit log names it.
    #[must_use]
    pub fn fingerprint(&self) -> String {
        self.hash.to_hex()[..8].to_owned()
    }
}

fn check_regular(path: &Path, meta: &fs::Metadata) -> Result<(), TokenFileError> {
    let ft = meta.file_type();
    if ft.is_file() {
        return Ok(());
    }
    let kind = if ft.is_dir() {
        "directory"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() || ft.is_char_device() {
        "device"
    } else {
        "special file"
    };
    Err(TokenFileError::NotRegular {
        path: path.to_owned(),
        kind,
    })
}

/// Write a new random token (32 bytes from the OS, as 64 hex digits and a newline) to `path`,
/// mode 0600 from its creation, never replacing an existing file; returns it. The file
/// appears whole or not at all: the token is written to a temporary file in the same
/// directory, flushed, then hard-linked to `path` (which fails if `path` exists).
///
/// # Errors
/// [`TokenFileError::Write`] (an existing `path` is `AlreadyExists`).
pub fn generate_token_file(path: &Path) -> Result<Token, TokenFileError> {
    let write_err = |source| TokenFileError::Write {
        path: path.to_owned(),
        source,
    };
    let mut bytes = [0u8; 32];
    fill_random(&mut bytes).map_err(write_err)?;
    let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let token = Token::new(&text).expect("invariant: 64 hex digits are a valid token");
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        fs::hard_link(&tmp, path)
    })();
    let _ = fs::remove_file(&tmp);
    result.map_err(write_err)?;
    Ok(token)
}

fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty())
            .map_err(io::Error::from)?;
        filled += n;
    }
    Ok(())
}

/// The rate limit on failed authentications.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Failures a client may make in a burst (default 10).
    pub burst: u32,
    /// One failure more is allowed per this interval (default 6 s: 10 a minute).
    pub refill: Duration,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            burst: 10,
            refill: Duration::from_secs(6),
        }
    }
}

/// A client as the rate limiter keys it: an IPv4 address or an IPv6 /64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// IPv4 address (and IPv4-mapped IPv6).
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 address.
    V6Prefix(u64),
    /// No address known (a test without connection info).
    Unknown,
}

impl ClientKey {
    /// The key of a client address.
    #[must_use]
    pub fn of(ip: Option<IpAddr>) -> Self {
        match ip {
            Some(IpAddr::V4(a)) => Self::V4(a.octets()),
            Some(IpAddr::V6(a)) => match a.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4.octets()),
                None => Self::V6Prefix((a.to_bits() >> 64) as u64),
            },
            None => Self::Unknown,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Failures still allowed, in nanoseconds of refill time: one failure costs
    /// `refill`, and time adds to it one for one (exact, no rounding).
    credit_ns: u128,
    /// When `credit_ns` was last brought up to date.
    at: Instant,
}

/// The per-client token buckets of failed authentications (module docs). Time is passed in.
#[derive(Debug)]
pub struct AuthLimiter {
    limit: RateLimit,
    clients: HashMap<ClientKey, Bucket>,
    /// Shared by new clients while the table is full of limited ones.
    overflow: Bucket,
    capacity: usize,
}

impl AuthLimiter {
    /// An empty table of at most [`MAX_CLIENTS`] clients.
    #[must_use]
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        Self::with_capacity(limit, MAX_CLIENTS, now)
    }

    /// An empty table of at most `capacity` clients (at least 1).
    #[must_use]
    pub fn with_capacity(limit: RateLimit, capacity: usize, now: Instant) -> Self {
        let limit = RateLimit {
            burst: limit.burst.max(1),
            refill: limit.refill.max(Duration::from_millis(1)),
        };
        let mut l = Self {
            limit,
            clients: HashMap::new(),
            overflow: Bucket {
                credit_ns: 0,
                at: now,
            },
            capacity: capacity.max(1),
        };
        l.overflow.credit_ns = l.full();
        l
    }

    fn cost(&self) -> u128 {
        self.limit.refill.as_nanos()
    }

    fn full(&self) -> u128 {
        u128::from(self.limit.burst) * self.cost()
    }

    /// `b` as of `now`.
    fn refilled(&self, b: Bucket, now: Instant) -> Bucket {
        let gained = now.saturating_duration_since(b.at).as_nanos();
        Bucket {
            credit_ns: b.credit_ns.saturating_add(gained).min(self.full()),
            at: now,
        }
    }

    /// If `client` is limited now: how long until it may try again.
    pub fn blocked(&mut self, client: ClientKey, now: Instant) -> Option<Duration> {
        let b = match self.clients.get(&client) {
            Some(b) => *b,
            None if self.clients.len() >= self.capacity => self.overflow,
            None => return None,
        };
        let b = self.refilled(b, now);
        match self.clients.get_mut(&client) {
            Some(slot) => *slot = b,
            None => self.overflow = b,
        }
        let missing = self.cost().saturating_sub(b.credit_ns);
        (missing > 0).then(|| Duration::from_nanos(u64::try_from(missing).unwrap_or(u64::MAX)))
    }

    /// Count a failed authentication by `client`.
    pub fn failed(&mut self, client: ClientKey, now: Instant) {
        if !self.clients.contains_key(&client) && self.clients.len() >= self.capacity {
            self.make_room(now);
        }
        let b = match self.clients.get(&client) {
            Some(b) => *b,
            None if self.clients.len() >= self.capacity => {
                let mut o = self.refilled(self.overflow, now);
                o.credit_ns = o.credit_ns.saturating_sub(self.cost());
                self.overflow = o;
                return;
            }
            None => Bucket {
                credit_ns: self.full(),
                at: now,
            },
        };
        let mut b = self.refilled(b, now);
        b.credit_ns = b.credit_ns.saturating_sub(self.cost());
        self.clients.insert(client, b);
    }

    /// Drop the buckets that are full again (they mean what no entry means).
    fn make_room(&mut self, now: Instant) {
        let full = self.full();
        self.clients.retain(|_, b| {
            let gained = now.saturating_duration_since(b.at).as_nanos();
            b.credit_ns.saturating_add(gained) < full
        });
    }

    /// Clients in the table.
    #[must_use]
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// No client in the table.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("braid-control-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).expect("temp dir");
        d
    }

    const GOOD: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn token_file_rules() {
        let d = tmp_dir("token");
        let p = d.join("token");
        fs::write(&p, format!("{GOOD}\n")).expect("write");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = Token::read_file(&p).expect_err("0644 is refused");
        assert!(matches!(e, TokenFileError::Mode { mode: 0o644, .. }), "{e}");
        assert!(e.to_string().contains("must be 0600"), "{e}");
        assert!(!e.to_string().contains(GOOD));

        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).expect("chmod");
        let t = Token::read_file(&p).expect("0600 is fine");
        assert!(t.verify(GOOD));
        assert!(!t.verify(&GOOD[1..]));
        assert!(!t.verify(&format!("{GOOD}\n")));
        assert!(!t.verify(""));
        assert_eq!(t.fingerprint().len(), 8);
        assert!(!format!("{t:?}").contains(GOOD));

        fs::write(&p, "short\n").expect("write");
        let e = Token::read_file(&p).expect_err("too short");
        assert!(matches!(e, TokenFileError::BadToken { .. }), "{e}");
        fs::write(&p, format!("{GOOD} {GOOD}")).expect("write");
        assert!(
            Token::read_file(&p).is_err(),
            "a space is not a token character"
        );

        let e = Token::read_file(&d).expect_err("a directory");
        assert!(
            matches!(
                e,
                TokenFileError::NotRegular {
                    kind: "directory",
                    ..
                }
            ),
            "{e}"
        );
        let e = Token::read_file(&d.join("missing")).expect_err("missing");
        assert!(matches!(e, TokenFileError::Open { .. }), "{e}");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn generated_token_files_are_0600_and_never_replace() {
        let d = tmp_dir("gen");
        let p = d.join("api.token");
        let t = generate_token_file(&p).expect("generate");
        let mode = fs::metadata(&p).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let read = Token::read_file(&p).expect("reads back");
        assert_eq!(read.fingerprint(), t.fingerprint());
        let text = fs::read_to_string(&p).expect("text");
        assert_eq!(text.len(), 65, "64 hex digits and a newline");
        let e = generate_token_file(&p).expect_err("exists");
        assert!(
            matches!(&e, TokenFileError::Write { source, .. } if source.kind() == io::ErrorKind::AlreadyExists)
        );
        assert_eq!(fs::read_to_string(&p).expect("text"), text, "untouched");
        assert_eq!(
            fs::read_dir(&d).expect("dir").count(),
            1,
            "no temporary left"
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn client_keys() {
        let k = |s: &str| ClientKey::of(Some(s.parse().expect("ip")));
        assert_eq!(k("2001:db8::1"), k("2001:db8::ffff:1"), "one /64");
        assert_ne!(k("2001:db8::1"), k("2001:db8:0:1::1"));
        assert_eq!(k("::ffff:10.0.0.1"), k("10.0.0.1"));
        assert_eq!(ClientKey::of(None), ClientKey::Unknown);
    }

    #[test]
    fn limiter_allows_a_burst_then_one_per_refill() {
        let t0 = Instant::now();
        let limit = RateLimit {
            burst: 3,
            refill: Duration::from_secs(6),
        };
        let mut l = AuthLimiter::new(limit, t0);
        let c = ClientKey::V4([10, 0, 0, 1]);
        let other = ClientKey::V4([10, 0, 0, 2]);
        for _ in 0..3 {
            assert_eq!(l.blocked(c, t0), None);
            l.failed(c, t0);
        }
        assert_eq!(l.blocked(c, t0), Some(Duration::from_secs(6)));
        assert_eq!(l.blocked(other, t0), None, "per client");
        let t = t0 + Duration::from_secs(4);
        assert_eq!(l.blocked(c, t), Some(Duration::from_secs(2)));
        let t = t0 + Duration::from_secs(6);
        assert_eq!(l.blocked(c, t), None, "one more try after a refill");
        l.failed(c, t);
        assert_eq!(l.blocked(c, t), Some(Duration::from_secs(6)));
    }

    #[test]
    fn a_full_table_keeps_limited_clients_and_shares_one_bucket() {
        let t0 = Instant::now();
        let limit = RateLimit {
            burst: 2,
            refill: Duration::from_secs(10),
        };
        let mut l = AuthLimiter::with_capacity(limit, 4, t0);
        // Four clients, each limited.
        for i in 0..4u8 {
            let c = ClientKey::V4([10, 0, 0, i]);
            l.failed(c, t0);
            l.failed(c, t0);
            assert!(l.blocked(c, t0).is_some());
        }
        assert_eq!(l.len(), 4);
        // New clients share the overflow bucket: two failures between them, then limited.
        let (a, b) = (ClientKey::V4([10, 0, 1, 1]), ClientKey::V4([10, 0, 1, 2]));
        l.failed(a, t0);
        l.failed(b, t0);
        assert_eq!(l.len(), 4, "bounded");
        assert!(l.blocked(ClientKey::V4([10, 0, 1, 3]), t0).is_some());
        for i in 0..4u8 {
            assert!(
                l.blocked(ClientKey::V4([10, 0, 0, i]), t0).is_some(),
                "not forgotten"
            );
        }
        // Once the old buckets have refilled, they make room for new clients.
        let later = t0 + Duration::from_secs(30);
        l.failed(a, later);
        assert_eq!(l.len(), 1);
        assert_eq!(l.blocked(a, later), None, "one failure of two");
    }
}
