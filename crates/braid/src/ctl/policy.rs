//! `braid ctl policy`: policy documents in and out of files.
//!
//! The policy document is the config file's policy part, one schema for the file and the
//! API (braid-control's `PolicyDocument`), so `policy get` prints TOML that pastes into the
//! config file (or into a file for `policy apply`), and `policy apply` takes that TOML, or
//! the API's JSON, back.
//!
//! What this file owns: reading a policy file (TOML or JSON, by its extension, else by its
//! content; `-` is standard input; bounded in size), picking one section out of it for
//! `policy set`, and the TOML rendering of a document or a section. What it does not own:
//! validation. A file is only parsed as TOML or JSON here and sent as JSON; the daemon checks
//! it exactly as it checks its config file, and its errors name the field (`rules[0].qos`).
//! So the CLI never disagrees with the daemon on what is valid.

use std::io::Read;
use std::path::{Path, PathBuf};

use braid_control::schema::{PolicyDocument, PolicySectionName};

use super::client::{CtlError, parse};

/// Largest policy file read, bytes: four times the API's body cap (JSON made from TOML is
/// larger than the TOML); the API refuses bodies above its own cap (1 MiB).
const MAX_POLICY_FILE_BYTES: u64 = 4 * braid_control::error::MAX_BODY_BYTES as u64;

/// A policy file's syntax.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// TOML, as in the config file.
    Toml,
    /// JSON, as the API's bodies.
    Json,
}

/// Why a policy file could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PolicyFileError {
    /// The file could not be read.
    #[error("read the policy file {}", path.display())]
    Read {
        /// The file (`-`: standard input).
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is too large.
    #[error("policy file {}: larger than {MAX_POLICY_FILE_BYTES} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The file is not TOML (its extension says so, or it is neither JSON nor TOML).
    #[error("policy file {}: not TOML", path.display())]
    Toml {
        /// The file.
        path: PathBuf,
        /// The parser's error, with line and column.
        #[source]
        source: toml::de::Error,
    },
    /// The file is not JSON.
    #[error("policy file {}: not JSON", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// A TOML file for `policy set SECTION` without that section.
    #[error(
        "policy file {}: no `{section}` in it; `policy set {section}` takes a TOML file with \
         the section as `policy get {section}` prints it, or the section's JSON body",
        path.display()
    )]
    NoSection {
        /// The file.
        path: PathBuf,
        /// The section.
        section: &'static str,
    },
    /// A TOML file for `policy set SECTION` with other keys too.
    #[error(
        "policy file {}: {keys} not part of the `{section}` section; `policy apply` takes a \
         whole document",
        path.display()
    )]
    OtherKeys {
        /// The file.
        path: PathBuf,
        /// The section.
        section: &'static str,
        /// The other keys, quoted and comma-separated.
        keys: String,
    },
}

/// A policy file's content as the JSON the API takes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PolicyFile {
    /// Its syntax.
    pub format: Format,
    /// Its content.
    pub value: serde_json::Value,
}

/// Read a policy file (`-`: standard input). `.toml` and `.json` say the syntax; otherwise
/// content starting with `{` is JSON, anything else TOML, then JSON (a JSON array).
///
/// # Errors
/// [`PolicyFileError`]: unreadable, too large, or neither TOML nor JSON.
pub(crate) fn read_file(path: &Path) -> Result<PolicyFile, PolicyFileError> {
    let read_err = |source| PolicyFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut raw = Vec::new();
    if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(MAX_POLICY_FILE_BYTES + 1)
            .read_to_end(&mut raw)
            .map_err(read_err)?;
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_POLICY_FILE_BYTES + 1).read_to_end(&mut raw))
            .map_err(read_err)?;
    }
    if raw.len() as u64 > MAX_POLICY_FILE_BYTES {
        return Err(PolicyFileError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    let text = String::from_utf8(raw).map_err(|e| {
        read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            e.utf8_error(),
        ))
    })?;
    parse_text(path, &text)
}

/// [`read_file`]'s parsing of `text`.
pub(crate) fn parse_text(path: &Path, text: &str) -> Result<PolicyFile, PolicyFileError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let json = |text: &str| {
        serde_json::from_str::<serde_json::Value>(text)
            .map(|value| PolicyFile {
                format: Format::Json,
                value,
            })
            .map_err(|source| PolicyFileError::Json {
                path: path.to_path_buf(),
                source,
            })
    };
    let toml = |text: &str| {
        toml::from_str::<toml::Table>(text)
            .map(|table| PolicyFile {
                format: Format::Toml,
                value: toml_to_json(table),
            })
            .map_err(|source| PolicyFileError::Toml {
                path: path.to_path_buf(),
                source,
            })
    };
    match ext.as_deref() {
        Some("json") => json(text),
        Some("toml") => toml(text),
        _ if text.trim_start().starts_with('{') => json(text),
        // `[reorder]` (TOML) and `[{...}]` (a JSON array) both start with `[`.
        _ => toml(text).or_else(|toml_err| json(text).map_err(|_| toml_err)),
    }
}

/// A TOML table as JSON. TOML's types map onto JSON's, but for dates, which become strings
/// (no policy field is a date: the daemon will name the field).
fn toml_to_json(table: toml::Table) -> serde_json::Value {
    fn convert(v: toml::Value) -> serde_json::Value {
        match v {
            toml::Value::String(s) => serde_json::Value::String(s),
            toml::Value::Integer(i) => serde_json::Value::from(i),
            toml::Value::Float(f) => serde_json::Value::from(f),
            toml::Value::Boolean(b) => serde_json::Value::Bool(b),
            toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
            toml::Value::Array(a) => serde_json::Value::Array(a.into_iter().map(convert).collect()),
            toml::Value::Table(t) => {
                serde_json::Value::Object(t.into_iter().map(|(k, v)| (k, convert(v))).collect())
            }
        }
    }
    convert(toml::Value::Table(table))
}

/// The body of `PUT /v1/policies/{section}` from a policy file: a TOML file holds the
/// section under its name (`[[rules]]`, `[reorder]`) and nothing else; a JSON file is the
/// section's body as the API takes it (what `policy get SECTION --json` prints).
///
/// # Errors
/// A TOML file without the section, or with other keys.
pub(crate) fn section_body(
    path: &Path,
    file: PolicyFile,
    section: PolicySectionName,
) -> Result<serde_json::Value, PolicyFileError> {
    if file.format == Format::Json {
        return Ok(file.value);
    }
    let serde_json::Value::Object(mut map) = file.value else {
        // A TOML document is a table: `toml_to_json` made an object.
        return Ok(file.value);
    };
    let name = section.as_str();
    let body = map.remove(name).ok_or_else(|| PolicyFileError::NoSection {
        path: path.to_path_buf(),
        section: name,
    })?;
    if !map.is_empty() {
        let keys: Vec<String> = map.keys().map(|k| format!("`{k}`")).collect();
        return Err(PolicyFileError::OtherKeys {
            path: path.to_path_buf(),
            section: name,
            keys: keys.join(", "),
        });
    }
    Ok(body)
}

/// A policy document as TOML tables, by section name (typed serialisation: a `None` field
/// is left out, as TOML has no null).
fn document_table(doc: &PolicyDocument) -> Result<toml::Table, toml::ser::Error> {
    toml::Table::try_from(doc)
}

/// `name` = `value` as TOML: `[[rules]]` blocks, a `[reorder]` table, `rules = []`.
fn toml_of(name: &str, value: toml::Value) -> Result<String, toml::ser::Error> {
    let mut table = toml::Table::new();
    table.insert(name.to_owned(), value);
    toml::to_string(&table)
}

/// A policy document as TOML, in the document's section order. Empty lists and the default
/// QoS (`null`) are left out: a missing section is its default, so the text reads back as
/// the same document.
///
/// # Errors
/// The TOML serialiser's (it cannot fail on this schema; kept as an error, not a panic).
pub(crate) fn document_toml(doc: &PolicyDocument) -> Result<String, toml::ser::Error> {
    let mut table = document_table(doc)?;
    let mut parts = Vec::new();
    let names = PolicySectionName::ALL.map(PolicySectionName::as_str);
    // Sections in document order, then anything the schema has that `ALL` does not list.
    let mut order: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    order.extend(
        table
            .keys()
            .filter(|k| !names.contains(&k.as_str()))
            .cloned(),
    );
    for name in order {
        match table.remove(&name) {
            None => {}
            Some(toml::Value::Array(a)) if a.is_empty() => {}
            Some(value) => parts.push(toml_of(&name, value)?),
        }
    }
    Ok(parts.join("\n"))
}

/// One section, as the API answered it (`GET /v1/policies/{section}`), as TOML: checked
/// against the schema as part of a document whose other sections are their defaults. A
/// default QoS (`null`) is a comment: TOML has no null.
///
/// # Errors
/// The answer does not fit the section's schema.
pub(crate) fn section_toml(
    url: &str,
    section: PolicySectionName,
    body: &str,
) -> Result<String, anyhow::Error> {
    let name = section.as_str();
    let value: serde_json::Value = parse(url, body)?;
    let mut one = serde_json::Map::new();
    one.insert(name.to_owned(), value);
    let doc: PolicyDocument = parse(url, &serde_json::Value::Object(one).to_string())?;
    let mut table = document_table(&doc)?;
    Ok(match table.remove(name) {
        None => format!("# [{name}] is not set: its default is in force\n"),
        Some(v) => toml_of(name, v)?,
    })
}

/// The document in force, typed (the schema check) from the API's answer.
///
/// # Errors
/// [`CtlError::Schema`].
pub(crate) fn document(url: &str, body: &str) -> Result<PolicyDocument, CtlError> {
    parse(url, body)
}

#[cfg(test)]
mod tests {
    use braid_control::schema::{
        PolicyName, PolicySection, QosClassSection, QosSection, ReorderSection, RuleSection,
    };

    use super::*;

    fn doc() -> PolicyDocument {
        let rule: RuleSection = serde_json::from_value(serde_json::json!({
            "name": "feed", "protocol": "udp", "dst_ports": "5000-5010",
            "policy": "duplicate", "qos": "rt"
        }))
        .expect("rule");
        PolicyDocument {
            rules: vec![rule],
            qos: Some(QosSection {
                quantum_bytes: None,
                classes: vec![
                    serde_json::from_value::<QosClassSection>(
                        serde_json::json!({"name": "rt", "strict": true}),
                    )
                    .expect("class"),
                ],
            }),
            tunnels: vec![],
            policy: PolicySection {
                default: PolicyName::Pin,
            },
            reorder: ReorderSection {
                min_hold_ms: 20,
                max_hold_ms: 25,
            },
            ..PolicyDocument::default()
        }
    }

    #[test]
    fn the_default_document_leaves_out_empty_lists_and_null() {
        let text = document_toml(&PolicyDocument::default()).expect("toml");
        assert!(
            text.starts_with(
                "[policy]\ndefault = \"stripe\"\n\n[reorder]\nmin_hold_ms = 5\nmax_hold_ms = 25\n"
            ),
            "{text}"
        );
        for absent in ["rules", "qos", "tunnels"] {
            assert!(!text.contains(absent), "{absent}: {text}");
        }
        let back: PolicyDocument = toml::from_str(&text).expect("reads back");
        assert_eq!(back, PolicyDocument::default());
    }

    #[test]
    fn document_toml_reads_back_as_the_same_document() {
        let d = doc();
        let text = document_toml(&d).expect("toml");
        assert!(text.starts_with("[[rules]]\nname = \"feed\"\n"), "{text}");
        assert!(!text.contains("tunnels"), "{text}");
        let file = parse_text(Path::new("p.toml"), &text).expect("parse");
        assert_eq!(file.format, Format::Toml);
        let back: PolicyDocument = serde_json::from_value(file.value).expect("schema");
        assert_eq!(back, d);
    }

    #[test]
    fn format_comes_from_the_extension_then_the_content() {
        let toml = "[reorder]\nmax_hold_ms = 40\n";
        let f = parse_text(Path::new("-"), toml).expect("toml");
        assert_eq!(f.format, Format::Toml);
        assert_eq!(f.value, serde_json::json!({"reorder": {"max_hold_ms": 40}}));
        let f = parse_text(Path::new("rules"), r#"[{"name": "a"}]"#).expect("json array");
        assert_eq!(f.format, Format::Json);
        let f = parse_text(Path::new("x.conf"), r#" {"reorder": {}}"#).expect("json");
        assert_eq!(f.format, Format::Json);
        // The extension wins: this TOML-looking text in a .json file is a JSON error.
        let e = parse_text(Path::new("p.json"), toml).expect_err("not json");
        assert!(matches!(e, PolicyFileError::Json { .. }), "{e:?}");
        // Neither: the TOML error is the one reported (with its line).
        let e = parse_text(Path::new("p"), "[reorder\n").expect_err("neither");
        assert!(matches!(e, PolicyFileError::Toml { .. }), "{e:?}");
        assert_eq!(e.to_string(), "policy file p: not TOML");
    }

    #[test]
    fn a_section_is_taken_from_toml_under_its_name_and_from_json_as_is() {
        let p = Path::new("r.toml");
        let f = parse_text(p, "[[rules]]\nname = \"a\"\n").expect("toml");
        let body = section_body(p, f, PolicySectionName::Rules).expect("section");
        assert_eq!(body, serde_json::json!([{"name": "a"}]));

        let f = parse_text(p, "[reorder]\nmax_hold_ms = 1\n").expect("toml");
        let e = section_body(p, f, PolicySectionName::Rules).expect_err("missing");
        assert!(e.to_string().contains("no `rules` in it"), "{e}");

        let f = parse_text(
            p,
            "[reorder]\nmax_hold_ms = 1\n[policy]\ndefault = \"pin\"\n",
        )
        .expect("toml");
        let e = section_body(p, f, PolicySectionName::Reorder).expect_err("extra");
        assert!(
            e.to_string()
                .contains("`policy` not part of the `reorder` section"),
            "{e}"
        );

        let j = Path::new("r.json");
        let f = parse_text(j, r#"{"max_hold_ms": 40}"#).expect("json");
        let body = section_body(j, f, PolicySectionName::Reorder).expect("json as is");
        assert_eq!(body, serde_json::json!({"max_hold_ms": 40}));
    }

    #[test]
    fn sections_print_as_toml_and_null_qos_as_a_comment() {
        let url = "http://x/v1/policies/qos";
        assert_eq!(
            section_toml(url, PolicySectionName::Qos, "null").expect("null"),
            "# [qos] is not set: its default is in force\n"
        );
        assert_eq!(
            section_toml(url, PolicySectionName::Rules, "[]").expect("empty"),
            "rules = []\n"
        );
        assert_eq!(
            section_toml(
                url,
                PolicySectionName::Reorder,
                r#"{"min_hold_ms":5,"max_hold_ms":25}"#
            )
            .expect("reorder"),
            "[reorder]\nmin_hold_ms = 5\nmax_hold_ms = 25\n"
        );
        assert!(section_toml(url, PolicySectionName::Reorder, "\"5ms\"").is_err());
    }
}
