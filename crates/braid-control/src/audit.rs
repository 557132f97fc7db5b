//! The audit log: one JSON line per change request (who, what, when, and how it ended),
//! appended to a file.
//!
//! What this file owns: the file's rules (created 0600, opened append-only, refused if its
//! group or others may write it: a log others can rewrite proves nothing), the line's fields
//! ([`AuditEntry`]) and the UTC timestamp. What it does not own: deciding which requests are
//! changes and what they changed (the `api` module records every `PUT`, `PATCH`, `POST` and
//! `DELETE`, authenticated or not, with the handler's summary).
//!
//! Each line is written with one `write(2)` on an `O_APPEND` file, so lines from concurrent
//! requests never interleave. A line that cannot be written is logged and counted (the
//! `braid_api_audit_errors_total` metric); the change it describes has happened by then.
//!
//! ```json
//! {"time":"2026-05-01T12:00:00.123Z","client":"127.0.0.1:53211","token":"9f86d081",
//!  "method":"PUT","path":"/v1/policies/reorder","status":409,"outcome":"refused",
//!  "change":"policies: reorder"}
//! ```

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Why the audit log could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The file could not be opened or created.
    #[error("open audit log {}", path.display())]
    Open {
        /// The log.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The path is not a regular file.
    #[error("audit log {} is not a regular file", path.display())]
    NotRegular {
        /// The log.
        path: PathBuf,
    },
    /// Its group or others may write it.
    #[error(
        "audit log {} has mode {mode:03o}: its group or others may write it; run `chmod 600 {}`",
        path.display(), path.display()
    )]
    Mode {
        /// The log.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// It belongs to another user than the one running braid (who could rewrite it).
    #[error(
        "audit log {} is owned by uid {owner}, not by the user running braid (uid {uid}) or \
         root: run `chown {uid} {}`", path.display(), path.display()
    )]
    Owner {
        /// The log.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// This process's effective uid.
        uid: u32,
    },
}

/// One line of the audit log.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AuditEntry {
    /// When the request ended, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// The client's address and port (`unknown` without connection info).
    pub client: String,
    /// The token's fingerprint; `null` when the request did not authenticate.
    pub token: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Request path (no query string).
    pub path: String,
    /// HTTP status of the answer.
    pub status: u16,
    /// `applied`, `refused`, `invalid`, `not_found`, `unauthenticated` or `error`.
    pub outcome: &'static str,
    /// What the request changed or tried to change, from the handler (`null` when the request
    /// did not get that far: bad body, no token).
    pub change: Option<String>,
}

/// The outcome word for an HTTP status.
#[must_use]
pub fn outcome(status: u16) -> &'static str {
    match status {
        200..=299 => "applied",
        401 | 403 => "unauthenticated",
        404 => "not_found",
        409 => "refused",
        400..=499 => "invalid",
        _ => "error",
    }
}

/// The append-only audit log file.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
    errors: AtomicU64,
}

impl AuditLog {
    /// Open (or create, mode 0600) the log at `path` for appending.
    ///
    /// # Errors
    /// [`AuditError`]: cannot open (a symbolic link is refused: `O_NOFOLLOW`), not a
    /// regular file, owned by another user than braid's or root, writable by group or
    /// others.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(path)
            .map_err(|source| AuditError::Open {
                path: path.to_owned(),
                source,
            })?;
        let meta = file.metadata().map_err(|source| AuditError::Open {
            path: path.to_owned(),
            source,
        })?;
        if !meta.file_type().is_file() {
            return Err(AuditError::NotRegular {
                path: path.to_owned(),
            });
        }
        let uid = rustix::process::geteuid().as_raw();
        if meta.uid() != uid && meta.uid() != 0 {
            return Err(AuditError::Owner {
                path: path.to_owned(),
                owner: meta.uid(),
                uid,
            });
        }
        let mode = meta.mode() & 0o777;
        if mode & 0o022 != 0 {
            return Err(AuditError::Mode {
                path: path.to_owned(),
                mode,
            });
        }
        Ok(Self {
            path: path.to_owned(),
            file: Mutex::new(file),
            errors: AtomicU64::new(0),
        })
    }

    /// Append one entry as a JSON line. A failure is logged and counted, not returned: the
    /// request it describes has already been answered.
    pub fn record(&self, entry: &AuditEntry) {
        let mut line = match serde_json::to_vec(entry) {
            Ok(l) => l,
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "cannot encode an audit entry");
                return;
            }
        };
        line.push(b'\n');
        // A poisoned lock only means another writer panicked mid-call; the file is fine.
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = file.write_all(&line) {
            self.errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(path = %self.path.display(), error = %e,
                "cannot write the audit log");
        }
    }

    /// Lines that could not be written since the log was opened.
    #[must_use]
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// The log's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `t` as RFC 3339 UTC with milliseconds: `2026-05-01T12:00:00.123Z`.
#[must_use]
pub fn rfc3339_utc(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX);
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    // d is 1..=31 and m 1..=12 by construction.
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn remove(path: &Path) {
        let _ = fs::remove_file(path);
    }
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        let at = |s: u64, ms: u64| {
            rfc3339_utc(UNIX_EPOCH + Duration::from_secs(s) + Duration::from_millis(ms))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_709_251_199, 999), "2024-02-29T23:59:59.999Z");
        assert_eq!(at(4_102_444_800, 0), "2100-01-01T00:00:00.000Z");
        assert_eq!(at(1_777_636_800, 123), "2026-05-01T12:00:00.123Z");
    }

    #[test]
    fn lines_are_appended_and_the_file_is_private() {
        let path = std::env::temp_dir().join(format!("braid-audit-{}.log", std::process::id()));
        remove(&path);
        fs::write(&path, "earlier line\n").expect("seed");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o620)).expect("chmod");
        let e = AuditLog::open(&path).expect_err("group-writable");
        assert!(matches!(e, AuditError::Mode { mode: 0o620, .. }), "{e}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");

        let log = AuditLog::open(&path).expect("open");
        let entry = AuditEntry {
            time: rfc3339_utc(UNIX_EPOCH),
            client: "127.0.0.1:1".into(),
            token: Some("abcd0123".into()),
            method: "PUT".into(),
            path: "/v1/policies".into(),
            status: 409,
            outcome: outcome(409),
            change: Some("policies: reorder".into()),
        };
        log.record(&entry);
        log.record(&AuditEntry {
            status: 200,
            outcome: outcome(200),
            ..entry
        });
        let text = fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "earlier line", "appended, not truncated");
        let v: serde_json::Value = serde_json::from_str(lines[1]).expect("json line");
        assert_eq!(v["outcome"], "refused");
        assert_eq!(v["token"], "abcd0123");
        assert_eq!(v["change"], "policies: reorder");
        let v: serde_json::Value = serde_json::from_str(lines[2]).expect("json line");
        assert_eq!(v["outcome"], "applied");
        assert_eq!(log.errors(), 0);
        remove(&path);

        let fresh =
            std::env::temp_dir().join(format!("braid-audit-new-{}.log", std::process::id()));
        remove(&fresh);
        let _log = AuditLog::open(&fresh).expect("created");
        let mode = fs::metadata(&fresh).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        remove(&fresh);
    }

    #[test]
    fn a_symbolic_link_or_another_users_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("braid-audit-link-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        let target = dir.join("elsewhere.log");
        fs::write(&target, b"").expect("target");
        fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).expect("chmod");
        let link = dir.join("audit.log");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        let e = AuditLog::open(&link).map(|_| ()).unwrap_err();
        assert!(matches!(e, AuditError::Open { .. }), "{e}");
        if rustix::process::geteuid().is_root() {
            // Root may hand the file to another user; braid (root) must then refuse it.
            let theirs = dir.join("theirs.log");
            fs::write(&theirs, b"").expect("file");
            fs::set_permissions(&theirs, fs::Permissions::from_mode(0o600)).expect("chmod");
            std::os::unix::fs::chown(&theirs, Some(65_534), None).expect("chown");
            let e = AuditLog::open(&theirs).map(|_| ()).unwrap_err();
            assert!(matches!(e, AuditError::Owner { owner: 65_534, .. }), "{e}");
            assert!(e.to_string().contains("chown 0"), "{e}");
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn outcomes() {
        assert_eq!(outcome(200), "applied");
        assert_eq!(outcome(204), "applied");
        assert_eq!(outcome(401), "unauthenticated");
        assert_eq!(outcome(409), "refused");
        assert_eq!(outcome(422), "invalid");
        assert_eq!(outcome(404), "not_found");
        assert_eq!(outcome(503), "error");
    }
}
