//! The pre-shared key file: reading it with its permissions checked, and generating one.
//!
//! Owns [`read_key_file`] and [`generate_key_file`] and their errors ([`KeyFileError`]). Does
//! not own what the key is for (braid-core's `auth`: per-direction keys derived from it) nor
//! where its path comes from (the daemon's config file).
//!
//! # Rules
//!
//! The key never comes from the command line (other users see it in `/proc/<pid>/cmdline`)
//! nor from the environment: only from a file that only its owner can read, as ssh and
//! WireGuard's `wg` require. [`read_key_file`] refuses a file that is
//!
//! - not a regular file (after following symlinks: a FIFO or a device is refused before it is
//!   opened, so reading never blocks);
//! - owned by another user than the one running braid (or root);
//! - readable, writable or executable by its group or by others (`mode & 0o077 != 0`): the
//!   error says to run `chmod 600 <path>`;
//! - not exactly 64 hex digits (optionally followed by one `\n` or `\r\n`) or 32 raw bytes.
//!
//! The checks are made on the opened file (`fstat`), not only on the path, so the file read is
//! the file checked. Errors name the path and what is wrong, never the key's bytes (a bad hex
//! digit is reported by its position only).
//!
//! [`generate_key_file`] writes 32 random bytes from the OS (ring's `SystemRandom`, i.e.
//! `getrandom(2)`) as 64 hex digits and a newline. The file appears atomically, with mode
//! 0600 from its creation, and never replaces an existing file: the key is written to a
//! temporary file created with `O_EXCL` and mode 0600 in the same directory, flushed to disk,
//! then hard-linked to the final name (`link(2)` fails if the name exists) and the temporary
//! name removed. A crash leaves either no key file or a complete one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};

/// Bytes of a key.
pub const KEY_LEN: usize = 32;

/// Why a key file could not be read or written. Messages name the path and what is wrong;
/// none contains key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The file could not be opened or its metadata read.
    #[error("open key file {}", path.display())]
    Open {
        /// The key file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The path is not a regular file.
    #[error("key file {} is not a regular file (it is a {kind})", path.display())]
    NotRegular {
        /// The key file.
        path: PathBuf,
        /// What it is instead: `directory`, `fifo`, `socket`, `device`.
        kind: &'static str,
    },
    /// The file belongs to another user.
    #[error(
        "key file {} is owned by uid {owner}, not by the user running braid (uid {uid}) or root: \
         run `chown {uid} {}`", path.display(), path.display()
    )]
    Owner {
        /// The key file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The effective uid of this process.
        uid: u32,
    },
    /// Its group or others have permissions on it.
    #[error(
        "key file {} has mode {mode:03o}: its group or others may access it; run `chmod 600 {}`",
        path.display(), path.display()
    )]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits (`mode & 0o777`).
        mode: u32,
    },
    /// The file could not be read.
    #[error("read key file {}", path.display())]
    Read {
        /// The key file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The file has the wrong length for either format.
    #[error(
        "key file {} holds {len} bytes: expected 64 hex digits (and an optional newline) or 32 \
         raw bytes", path.display()
    )]
    BadLength {
        /// The key file.
        path: PathBuf,
        /// Its length in bytes.
        len: u64,
    },
    /// A hex key file has a character that is not a hex digit.
    #[error(
        "key file {} is not 64 hex digits: the character at byte {offset} is not a hex digit",
        path.display()
    )]
    BadHex {
        /// The key file.
        path: PathBuf,
        /// Byte offset of the first bad character (the character itself is not reported).
        offset: usize,
    },
    /// [`generate_key_file`]: the path exists already (it is never overwritten).
    #[error("key file {} exists already: remove it first to make a new key", path.display())]
    Exists {
        /// The key file.
        path: PathBuf,
    },
    /// [`generate_key_file`]: writing the key failed.
    #[error("write key file {}", path.display())]
    Write {
        /// The file being written (the temporary file, or the key file).
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// [`generate_key_file`]: the OS random number generator failed.
    #[error("draw a random key for {}: the OS random number generator failed", path.display())]
    Random {
        /// The key file.
        path: PathBuf,
    },
}

/// Read a 32-byte key from `path`, checking that only its owner (this user or root) can
/// access it. See the module doc for the rules.
///
/// # Errors
/// [`KeyFileError`]: `Open` (missing, unreadable), `NotRegular`, `Owner`, `Permissions`,
/// `Read`, `BadLength`, `BadHex`.
pub fn read_key_file(path: &Path) -> Result<[u8; KEY_LEN], KeyFileError> {
    // Refuse FIFOs and devices before opening them: opening a FIFO blocks.
    let before = fs::metadata(path).map_err(|source| KeyFileError::Open {
        path: path.into(),
        source,
    })?;
    check_metadata(path, &before)?;
    let mut file = File::open(path).map_err(|source| KeyFileError::Open {
        path: path.into(),
        source,
    })?;
    // Check the file actually opened (the path may have changed in between).
    let meta = file.metadata().map_err(|source| KeyFileError::Open {
        path: path.into(),
        source,
    })?;
    check_metadata(path, &meta)?;
    let len = meta.len();
    if !matches!(len, 32 | 64 | 65 | 66) {
        return Err(KeyFileError::BadLength {
            path: path.into(),
            len,
        });
    }
    // One byte more than the largest valid file, to notice a file that grew meanwhile.
    let mut buf = [0u8; 67];
    let mut n = 0;
    loop {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => {
                n += k;
                if n == buf.len() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(KeyFileError::Read {
                    path: path.into(),
                    source,
                });
            }
        }
    }
    let result = parse_key(path, &buf[..n]);
    wipe(&mut buf);
    result
}

/// Check type, owner and permissions of a key file's metadata.
fn check_metadata(path: &Path, meta: &fs::Metadata) -> Result<(), KeyFileError> {
    let ft = meta.file_type();
    if !ft.is_file() {
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
        return Err(KeyFileError::NotRegular {
            path: path.into(),
            kind,
        });
    }
    check_owner_and_mode(
        path,
        meta.uid(),
        meta.mode(),
        rustix::process::geteuid().as_raw(),
    )
}

/// The owner must be `uid` (this process's effective uid) or root; the group and others must
/// have no permission bit.
fn check_owner_and_mode(path: &Path, owner: u32, mode: u32, uid: u32) -> Result<(), KeyFileError> {
    if owner != uid && owner != 0 {
        return Err(KeyFileError::Owner {
            path: path.into(),
            owner,
            uid,
        });
    }
    let mode = mode & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Permissions {
            path: path.into(),
            mode,
        });
    }
    Ok(())
}

/// The key in `bytes`: 32 raw bytes, or 64 hex digits and an optional `\n` / `\r\n`.
fn parse_key(path: &Path, bytes: &[u8]) -> Result<[u8; KEY_LEN], KeyFileError> {
    let mut key = [0u8; KEY_LEN];
    if bytes.len() == KEY_LEN {
        key.copy_from_slice(bytes);
        return Ok(key);
    }
    let hex = match bytes {
        [hex @ .., b'\r', b'\n'] | [hex @ .., b'\n'] => hex,
        hex => hex,
    };
    if hex.len() != 2 * KEY_LEN {
        return Err(KeyFileError::BadLength {
            path: path.into(),
            len: bytes.len() as u64,
        });
    }
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let digit = |offset: usize| {
            hex_value(hex[offset]).ok_or_else(|| KeyFileError::BadHex {
                path: path.into(),
                offset,
            })
        };
        debug_assert_eq!(pair.len(), 2);
        key[i] = (digit(2 * i)? << 4) | digit(2 * i + 1)?;
    }
    Ok(key)
}

const fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Overwrite key material on the stack before it goes out of scope (best effort: without
/// volatile writes the compiler may still keep copies elsewhere).
fn wipe(buf: &mut [u8]) {
    buf.fill(0);
    std::hint::black_box(buf);
}

/// Write a new random key to `path` as 64 hex digits and a newline, with mode 0600, and
/// return it. Never overwrites: the file appears whole or not at all (see the module doc).
///
/// # Errors
/// [`KeyFileError::Exists`] if `path` exists, [`KeyFileError::Random`] if the OS has no
/// randomness to give, [`KeyFileError::Write`] for any I/O error (nothing is left behind).
pub fn generate_key_file(path: &Path) -> Result<[u8; KEY_LEN], KeyFileError> {
    if fs::symlink_metadata(path).is_ok() {
        return Err(KeyFileError::Exists { path: path.into() });
    }
    let mut key = [0u8; KEY_LEN];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| KeyFileError::Random { path: path.into() })?;
    let mut text = [0u8; 2 * KEY_LEN + 1];
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in key.iter().enumerate() {
        text[2 * i] = DIGITS[usize::from(b >> 4)];
        text[2 * i + 1] = DIGITS[usize::from(b & 0x0f)];
    }
    text[2 * KEY_LEN] = b'\n';
    let tmp = temp_path(path);
    let result = write_new(&tmp, &text).and_then(|()| {
        // link(2) is atomic and fails if the name exists: no overwrite, no partial file.
        fs::hard_link(&tmp, path).map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                KeyFileError::Exists { path: path.into() }
            } else {
                KeyFileError::Write {
                    path: path.into(),
                    source,
                }
            }
        })
    });
    wipe(&mut text);
    // The temporary name goes whatever happened (it may not exist if its creation failed).
    let _ = fs::remove_file(&tmp);
    result?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Make the new name durable; a failure here leaves a valid key file, so it is not
        // an error.
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(key)
}

/// A temporary name next to `path`: `.<name>.tmp-<pid>`.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "key".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Create `tmp` exclusively with mode 0600 and write `text` to it, flushed to disk.
fn write_new(tmp: &Path, text: &[u8]) -> Result<(), KeyFileError> {
    let err = |source| KeyFileError::Write {
        path: tmp.into(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(err)?;
    file.write_all(text).map_err(err)?;
    file.sync_all().map_err(err)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A fresh directory under /tmp, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "braid-keyfile-{name}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn file(&self, name: &str, content: &[u8], mode: u32) -> PathBuf {
            let p = self.0.join(name);
            fs::write(&p, content).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            p
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191A1B1C1D1E1F";

    fn expected() -> [u8; 32] {
        core::array::from_fn(|i| i as u8)
    }

    #[test]
    fn reads_hex_with_and_without_newline_and_raw() {
        let dir = TempDir::new("ok");
        for (name, content) in [
            ("plain", HEX.to_string()),
            ("lf", format!("{HEX}\n")),
            ("crlf", format!("{HEX}\r\n")),
        ] {
            let p = dir.file(name, content.as_bytes(), 0o600);
            assert_eq!(read_key_file(&p).unwrap(), expected(), "{name}");
        }
        let p = dir.file("raw", &expected(), 0o400);
        assert_eq!(read_key_file(&p).unwrap(), expected());
        // 32 raw bytes that happen to contain newlines are still raw.
        let raw = [b'\n'; 32];
        let p = dir.file("raw-newlines", &raw, 0o600);
        assert_eq!(read_key_file(&p).unwrap(), raw);
    }

    #[test]
    fn group_or_other_permissions_are_refused_with_chmod_advice() {
        let dir = TempDir::new("perm");
        for mode in [0o640, 0o604, 0o660, 0o644, 0o610, 0o601, 0o700 | 0o070] {
            let p = dir.file(&format!("k{mode:o}"), HEX.as_bytes(), mode);
            let err = read_key_file(&p).unwrap_err();
            assert!(
                matches!(err, KeyFileError::Permissions { mode: m, .. } if m == mode),
                "{mode:o}: {err:?}"
            );
            let text = err.to_string();
            assert!(
                text.contains(&format!("chmod 600 {}", p.display())),
                "{text}"
            );
            assert!(text.contains(&format!("{mode:03o}")), "{text}");
            assert!(!text.contains("0a0b"), "no key material: {text}");
        }
    }

    #[test]
    fn a_symlink_to_a_good_file_is_followed_and_checked() {
        let dir = TempDir::new("link");
        let target = dir.file("target", HEX.as_bytes(), 0o600);
        let link = dir.0.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(read_key_file(&link).unwrap(), expected());
        fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            read_key_file(&link),
            Err(KeyFileError::Permissions { .. })
        ));
    }

    #[test]
    fn missing_file_directory_and_fifo_are_refused() {
        let dir = TempDir::new("kind");
        let missing = dir.0.join("missing");
        let err = read_key_file(&missing).unwrap_err();
        assert!(
            matches!(&err, KeyFileError::Open { source, .. } if source.kind() == io::ErrorKind::NotFound),
            "{err:?}"
        );
        assert!(err.to_string().contains("missing"));
        let sub = dir.0.join("sub");
        fs::create_dir(&sub).unwrap();
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o700)).unwrap();
        let err = read_key_file(&sub).unwrap_err();
        assert!(
            matches!(
                err,
                KeyFileError::NotRegular {
                    kind: "directory",
                    ..
                }
            ),
            "{err:?}"
        );
        // A FIFO is refused without being opened (opening it would block this test).
        let fifo = dir.0.join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let err = read_key_file(&fifo).unwrap_err();
        assert!(
            matches!(err, KeyFileError::NotRegular { kind: "fifo", .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("not a regular file"));
    }

    /// The owner rule on its own, for any uid (no root needed): this user or root only.
    #[test]
    fn owner_rule() {
        let p = Path::new("/etc/braid/psk");
        assert!(check_owner_and_mode(p, 1000, 0o100600, 1000).is_ok());
        assert!(
            check_owner_and_mode(p, 0, 0o100400, 1000).is_ok(),
            "root-owned is fine"
        );
        assert!(check_owner_and_mode(p, 0, 0o600, 0).is_ok());
        let err = check_owner_and_mode(p, 1001, 0o600, 1000).unwrap_err();
        assert!(
            matches!(
                err,
                KeyFileError::Owner {
                    owner: 1001,
                    uid: 1000,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "key file /etc/braid/psk is owned by uid 1001, not by the user running braid \
             (uid 1000) or root: run `chown 1000 /etc/braid/psk`"
        );
        // The owner is checked before the mode; the mode's file-type bits are ignored.
        assert!(matches!(
            check_owner_and_mode(p, 1000, 0o100640, 1000),
            Err(KeyFileError::Permissions { mode: 0o640, .. })
        ));
    }

    /// End to end on a real file given to another user (needs root to chown).
    #[test]
    fn a_file_of_another_user_is_refused() {
        let dir = TempDir::new("owner");
        let p = dir.file("k", HEX.as_bytes(), 0o600);
        let me = rustix::process::geteuid();
        // Give it to a uid that is neither this user nor root. Only root may chown; as another
        // user the file cannot be given away, so the case cannot be built: say so.
        assert!(
            me.is_root(),
            "this test needs root to chown a file to another user"
        );
        rustix::fs::chown(
            &p,
            Some(rustix::fs::Uid::from_raw(65_534)),
            Some(rustix::fs::Gid::from_raw(65_534)),
        )
        .unwrap();
        // Root may read files owned by others, but braid refuses them.
        let err = read_key_file(&p).unwrap_err();
        assert!(
            matches!(
                err,
                KeyFileError::Owner {
                    owner: 65_534,
                    uid: 0,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("uid 65534"), "{err}");
    }

    #[test]
    fn wrong_lengths_are_refused() {
        let dir = TempDir::new("len");
        for content in [
            &b""[..],
            &HEX.as_bytes()[..63],
            &[7u8; 31],
            &[7u8; 33],
            format!("{HEX}\n\n").as_bytes(),
            format!("{HEX}0").as_bytes(),
            format!(" {HEX}").as_bytes(),
            &[0u8; 4096],
        ] {
            let p = dir.file("k", content, 0o600);
            let err = read_key_file(&p).unwrap_err();
            assert!(
                matches!(err, KeyFileError::BadLength { len, .. } if len == content.len() as u64),
                "{} bytes: {err:?}",
                content.len()
            );
            assert!(err.to_string().contains("64 hex digits"));
        }
        // Right length, wrong trailer: 65 bytes that do not end in a newline.
        let p = dir.file("k", format!("{HEX} ").as_bytes(), 0o600);
        assert!(matches!(
            read_key_file(&p),
            Err(KeyFileError::BadLength { len: 65, .. })
        ));
    }

    #[test]
    fn bad_hex_names_the_position_not_the_character() {
        let dir = TempDir::new("hex");
        let mut text = HEX.as_bytes().to_vec();
        text[17] = b'z';
        let p = dir.file("k", &text, 0o600);
        let err = read_key_file(&p).unwrap_err();
        assert!(
            matches!(err, KeyFileError::BadHex { offset: 17, .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("byte 17"), "{msg}");
        let without_path = msg.replace(&p.display().to_string(), "");
        assert!(
            !without_path.contains('z'),
            "the bad character is not shown: {msg}"
        );
        assert!(!msg.contains("0001020304"), "no key material: {msg}");
        // A 32-byte-long hex text is taken as raw bytes, not hex: it is a raw key.
        let p = dir.file("k32", &HEX.as_bytes()[..32], 0o600);
        assert_eq!(read_key_file(&p).unwrap(), {
            let mut k = [0u8; 32];
            k.copy_from_slice(&HEX.as_bytes()[..32]);
            k
        });
    }

    #[test]
    fn generated_keys_are_random_private_and_readable() {
        let dir = TempDir::new("gen");
        let p = dir.0.join("psk");
        let key = generate_key_file(&p).unwrap();
        let meta = fs::metadata(&p).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 65);
        assert_eq!(read_key_file(&p).unwrap(), key);
        let text = fs::read_to_string(&p).unwrap();
        assert!(text.ends_with('\n') && text[..64].bytes().all(|c| c.is_ascii_hexdigit()));
        // Never overwritten, and no temporary file left behind.
        let err = generate_key_file(&p).unwrap_err();
        assert!(matches!(err, KeyFileError::Exists { .. }), "{err:?}");
        assert_eq!(read_key_file(&p).unwrap(), key);
        let names: Vec<_> = fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("psk")]);
        // Two keys differ (32 random bytes).
        let q = dir.0.join("psk2");
        assert_ne!(generate_key_file(&q).unwrap(), key);
        // A dangling symlink counts as existing: nothing is written through it.
        let link = dir.0.join("dangling");
        std::os::unix::fs::symlink(dir.0.join("nowhere"), &link).unwrap();
        assert!(matches!(
            generate_key_file(&link),
            Err(KeyFileError::Exists { .. })
        ));
        assert!(!dir.0.join("nowhere").exists());
        // A directory that does not exist: a write error, nothing left.
        let err = generate_key_file(&dir.0.join("no/such/dir/psk")).unwrap_err();
        assert!(matches!(err, KeyFileError::Write { .. }), "{err:?}");
    }

    #[test]
    fn debug_and_display_of_errors_hold_no_key() {
        let dir = TempDir::new("nokey");
        let p = dir.file("k", HEX.as_bytes(), 0o644);
        let err = read_key_file(&p).unwrap_err();
        let all = format!("{err} {err:?}");
        assert!(!all.contains("0a0b0c"), "{all}");
    }
}
