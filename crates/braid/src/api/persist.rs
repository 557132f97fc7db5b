//! The policies file: where `braid run` keeps the policies set through the REST API (or by
//! SIGHUP), so they survive a restart.
//!
//! What this file owns: the file's format (the policy document as TOML, the config file's
//! `[[rules]]`, `[qos]`, `[[tunnels]]`, `[policy]`, `[reorder]`, `[fragmentation]` and
//! `[reassembly]` sections with their names: one schema, the same types), its atomic
//! replacement and reading it at start. What it does not: which policies are in force
//! (`run::replace_policies`), whether they may change, or the precedence at start (every
//! section of this file replaces the config file's: `api::with_persisted`).
//!
//! # Writing without losing anything
//!
//! A replacement is two steps around the change of the policies in force:
//!
//! 1. [`Pending::write`]: the new document goes to a temporary file in the same directory
//!    (`.<name>.tmp`, created 0600, a stale one from a crash removed first), flushed to disk
//!    (`fsync`). Nothing else has changed yet: a full disk or a read-only directory refuses
//!    the change before any worker sees it.
//! 2. [`Pending::commit`]: `rename` over the file (atomic within a file system: a reader, or
//!    braid after a crash, sees the old file or the new one, never a mix), then `fsync` of
//!    the directory so the rename itself is on disk. [`Pending::abandon`] (the policies were
//!    refused) removes the temporary file.
//!
//! A crash between the two leaves the old file whole and a temporary file that the next
//! write removes; braid never reads the temporary file.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use braid_control::PolicyDocument;

/// The first lines of the file.
const HEADER: &str = "# braid's policies in force, written by `braid run` when they change \
                      (REST API: PUT /v1/policies; SIGHUP).\n# At start every section here \
                      replaces the config file's; see docs/config.md.\n";

/// The policy document as the file's text.
///
/// # Errors
/// A document TOML cannot hold (none that JSON gives: TOML has no null, and the document's
/// absent fields are left out).
pub(crate) fn to_toml(document: &PolicyDocument) -> Result<String> {
    let body = toml::to_string(document).context("the policies as TOML")?;
    Ok(format!("{HEADER}\n{body}"))
}

/// Read the policies file: `None` if there is none.
///
/// # Errors
/// A file that cannot be read or is not a policy document (naming the file, the line and
/// the field).
pub(crate) fn read(path: &Path) -> Result<Option<PolicyDocument>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read policies file {}", path.display()));
        }
    };
    let document = toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "policies file {} is not a valid policy document (fix it, or remove it to start \
             from the config file's policies): {e}",
            path.display()
        )
    })?;
    Ok(Some(document))
}

/// The temporary file next to `path`.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "policies".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.tmp"))
}

/// A new version of the file, written and flushed, not yet in place.
#[derive(Debug)]
#[must_use = "commit or abandon it"]
pub(crate) struct Pending {
    path: PathBuf,
    temp: PathBuf,
}

impl Pending {
    /// Write `text` to the temporary file next to `path` (mode 0600) and flush it to disk.
    /// The directory is created (0700) if missing.
    ///
    /// # Errors
    /// The directory or the file cannot be made or written (naming it).
    pub(crate) fn write(path: &Path, text: &str) -> Result<Self> {
        let temp = temp_path(path);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("cannot create directory {}", dir.display()))?;
        }
        // A crash's leftover: remove it, so the file is created afresh with our mode.
        match fs::remove_file(&temp) {
            Ok(()) => tracing::info!(file = %temp.display(), "removed a policies file an \
                                    earlier write left half-done"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("cannot remove {}", temp.display()));
            }
        }
        let result = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .and_then(|mut f| {
                f.write_all(text.as_bytes())?;
                f.sync_all()
            });
        if let Err(e) = result {
            let _ = fs::remove_file(&temp);
            return Err(e).with_context(|| format!("cannot write {}", temp.display()));
        }
        Ok(Self {
            path: path.to_owned(),
            temp,
        })
    }

    /// Put the new version in place: rename it over the file, then flush the directory.
    ///
    /// A directory that cannot be flushed is logged, not an error: the new file is in
    /// place, and only a crash before the kernel writes the directory could bring the old
    /// one back.
    ///
    /// # Errors
    /// The rename failed: the old file is in place; the temporary file is removed.
    pub(crate) fn commit(self) -> Result<()> {
        if let Err(e) = fs::rename(&self.temp, &self.path) {
            let _ = fs::remove_file(&self.temp);
            return Err(e).with_context(|| {
                format!(
                    "cannot rename {} to {}",
                    self.temp.display(),
                    self.path.display()
                )
            });
        }
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
            tracing::warn!(directory = %dir.display(), error = %e,
                "cannot flush the policies file's directory");
        }
        Ok(())
    }

    /// Drop the new version (the change was refused): remove the temporary file.
    pub(crate) fn abandon(self) {
        if let Err(e) = fs::remove_file(&self.temp) {
            tracing::warn!(file = %self.temp.display(), error = %e,
                "cannot remove a temporary policies file");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use braid_control::schema::{PolicyName, ReorderSection, RuleSection};

    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("braid-persist-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn document(dscp: u8) -> PolicyDocument {
        let mut doc = PolicyDocument::default();
        doc.rules.push(
            serde_json::from_value::<RuleSection>(serde_json::json!({
                "name": "mark", "protocol": "udp", "dst_ports": "5000", "set_dscp": dscp,
                "when": {"loss_above_percent": 1.5, "links": ["a"]},
            }))
            .expect("a rule"),
        );
        doc.policy.default = PolicyName::Pin;
        doc.reorder = ReorderSection {
            min_hold_ms: 3,
            max_hold_ms: 30,
        };
        doc.fragmentation.max_split_links = 2;
        doc.reassembly.mem_cap_bytes = 1 << 20;
        doc.reassembly.timeout_ms = 90;
        doc
    }

    /// The file is the document as TOML with the config file's section names, and reads
    /// back to the same document; a missing file is no document.
    #[test]
    fn the_file_is_the_document_in_the_config_files_shape() {
        let d = dir("shape");
        let path = d.join("policies.toml");
        assert!(read(&path).expect("no file is fine").is_none());
        let text = to_toml(&document(10)).expect("toml");
        for line in [
            "[[rules]]",
            "name = \"mark\"",
            "[rules.when]",
            "[policy]",
            "[reorder]",
            "[fragmentation]",
            "max_split_links = 2",
            "[reassembly]",
            "mem_cap_bytes = 1048576",
            "timeout_ms = 90",
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
        Pending::write(&path, &text)
            .expect("write")
            .commit()
            .expect("commit");
        assert_eq!(read(&path).expect("read"), Some(document(10)));
        let mode = fs::metadata(&path).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        fs::remove_dir_all(&d).expect("clean up");
    }

    /// A crash after the temporary file was written and before the rename: the old file is
    /// whole and is what braid reads; the next write replaces the leftover and succeeds. An
    /// abandoned write leaves the old file and no temporary file.
    #[test]
    fn a_crash_between_write_and_rename_leaves_the_old_file() {
        let d = dir("crash");
        let path = d.join("policies.toml");
        Pending::write(&path, &to_toml(&document(10)).expect("toml"))
            .expect("write")
            .commit()
            .expect("commit");
        // The crash: a new version written (half of it, say), never renamed.
        let temp = temp_path(&path);
        fs::write(&temp, "[[rules]]\nname = \"half").expect("leftover");
        fs::set_permissions(&temp, fs::Permissions::from_mode(0o644)).expect("mode");
        assert_eq!(read(&path).expect("old file"), Some(document(10)));
        // Abandoned: the old file stays, the temporary file goes.
        Pending::write(&path, &to_toml(&document(20)).expect("toml"))
            .expect("write over the leftover")
            .abandon();
        assert!(!temp.exists());
        assert_eq!(read(&path).expect("old file"), Some(document(10)));
        // Committed over a leftover: the new one, 0600 (the leftover's mode is not kept).
        fs::write(&temp, "garbage").expect("leftover");
        fs::set_permissions(&temp, fs::Permissions::from_mode(0o644)).expect("mode");
        Pending::write(&path, &to_toml(&document(30)).expect("toml"))
            .expect("write")
            .commit()
            .expect("commit");
        assert_eq!(read(&path).expect("new file"), Some(document(30)));
        assert!(!temp.exists());
        let mode = fs::metadata(&path).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        fs::remove_dir_all(&d).expect("clean up");
    }

    /// A corrupt file is an error that names it (and says what to do); a directory that
    /// cannot be written refuses the write before anything else happens.
    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let d = dir("corrupt");
        fs::create_dir_all(&d).expect("dir");
        let path = d.join("policies.toml");
        fs::write(&path, "[[rules]]\nname = \"x\"\nprio = 3\n").expect("write");
        let e = format!("{:#}", read(&path).expect_err("corrupt"));
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(e.contains("unknown field `prio`"), "{e}");
        fs::write(&path, "not toml at all [").expect("write");
        assert!(read(&path).is_err());
        // The parent is a file: no directory, no temporary file, an error naming it.
        let blocked = path.join("policies.toml");
        let e = format!("{:#}", Pending::write(&blocked, "x").expect_err("blocked"));
        assert!(e.contains("cannot create directory"), "{e}");
        fs::remove_dir_all(&d).expect("clean up");
    }
}
