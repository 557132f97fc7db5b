//! `braid ctl`'s HTTP side: where the API is and which token to send ([`Endpoint`]), one
//! blocking request at a time ([`Client`]: ureq, HTTP/1.1, no TLS), and every failure turned
//! into a message for the operator ([`CtlError`]): the API's own `{"error":{...}}` with the
//! field at fault, and what to check for a refused connection, a 401 or a 429.
//!
//! What this file owns: resolving `--api`, `--token-file` and `--config` (the daemon's config
//! file, whose `[api]` section is read with the daemon's own `ApiSection`), reading the
//! token, the request/response cycle and its bounds (a timeout for the whole call, a cap on
//! the response body, no proxy, no redirect). What it does not own: what the commands send
//! and how answers are shown (`ctl/mod.rs`, `ctl/render.rs`).
//!
//! # Why no proxy and no redirects
//! The token goes in every request. ureq would otherwise take `http_proxy`/`all_proxy` from
//! the environment and send the token to that proxy, and a redirect could carry it (or a
//! `PUT` body) elsewhere. The API is on this host (or where `--api` says): connect there and
//! nowhere else.

use std::fmt;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use braid_control::error::ErrorBody;
use serde::de::DeserializeOwned;

use crate::config::ApiSection;

/// The API's address when neither `--api`, `BRAID_API` nor `--config` names one.
pub(crate) const DEFAULT_API: &str = "http://127.0.0.1:7780";

/// Where the token is looked for when neither `--token-file`, `BRAID_TOKEN_FILE` nor
/// `--config` names it: the first of these that exists (docs/config.md's example, then the
/// `[api]` section's default `state_dir`).
pub(crate) const DEFAULT_TOKEN_FILES: [&str; 2] =
    ["/etc/braid/api.token", "/var/lib/braid/api.token"];

/// Largest response body read, bytes: a page of 1000 flows is about 300 kB.
const MAX_RESPONSE_BYTES: u64 = 16 << 20;

/// Largest token file read, bytes (the token is at most 512 characters, on the first line).
const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// Why a `braid ctl` command failed. The Display is the whole message for the operator;
/// `main` prints it after `error: ` and each `source` on a `caused by:` line.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CtlError {
    /// `--api` is not an `http://host:port` URL.
    #[error("--api {url:?}: {reason}")]
    BadUrl {
        /// What was given.
        url: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The daemon's config file could not be read.
    #[error("read the config file {}", path.display())]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not TOML, or its `[api]` section is wrong.
    #[error("config file {}: {what}", path.display())]
    ConfigParse {
        /// The file.
        path: PathBuf,
        /// `not TOML` or `[api]`.
        what: &'static str,
        /// The parser's error (it names the field); boxed, it is large.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// The config file has no `[api]` section: `braid run` serves no API with it.
    #[error(
        "config file {}: no [api] section, so `braid run` serves no API with it (docs/api.md)",
        path.display()
    )]
    NoApiSection {
        /// The file.
        path: PathBuf,
    },
    /// `[api] listen` is not an address and port.
    #[error("config file {}: api.listen {listen:?} is not an address and port", path.display())]
    BadListen {
        /// The file.
        path: PathBuf,
        /// Its `listen`.
        listen: String,
    },
    /// The token file could not be read.
    #[error(
        "read the API token file {}\n  hint: name the daemon's token file with --token-file, \
         BRAID_TOKEN_FILE or --config (its [api] token_file); by default braid ctl looks in {}",
        path.display(),
        DEFAULT_TOKEN_FILES.join(" and ")
    )]
    TokenRead {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The token file's content is not a token.
    #[error("API token file {}: {reason}", path.display())]
    BadToken {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the token itself).
        reason: &'static str,
    },
    /// Nothing listens at the API's address (or it cannot be reached).
    #[error(
        "cannot connect to the braid API at {url}\n  hint: is `braid run` running with an [api] \
         section in its config, listening there? --api URL (or BRAID_API) names another \
         address; a testbed's API is inside its namespace: `ip netns exec <name>-a braid ctl ...`"
    )]
    Connect {
        /// The URL.
        url: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The API did not answer within `--timeout`.
    #[error("no answer from the braid API at {url} within {} s (--timeout)", timeout.as_secs_f64())]
    Timeout {
        /// The URL.
        url: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The request failed below HTTP (a reset, a protocol error, a name not resolved).
    #[error("request to the braid API at {url} failed")]
    Transport {
        /// The URL.
        url: String,
        /// ureq's error; boxed, it is large.
        #[source]
        source: Box<ureq::Error>,
    },
    /// The API answered with its error body.
    #[error("{message}{}{}", field_note(field.as_deref()), hint_note(hint.as_deref()))]
    Api {
        /// HTTP status.
        status: u16,
        /// The API's error code (`invalid_field`, `refused`, ...).
        code: String,
        /// The API's message.
        message: String,
        /// The field at fault.
        field: Option<String>,
        /// What to check or do next (401, 429, 503).
        hint: Option<String>,
    },
    /// The API answered an error without the API's error body (a proxy, another server).
    #[error("HTTP {status} from {url}, not a braid API error: {excerpt:?}")]
    NotApi {
        /// HTTP status.
        status: u16,
        /// The URL.
        url: String,
        /// The body's first 200 characters.
        excerpt: String,
    },
    /// A success whose body does not fit this braid's schema.
    #[error(
        "the answer of {url} does not fit this braid's API schema (version {}) at {path}; is the \
         daemon another braid version? (GET /healthz shows its api_version)",
        braid_control::API_VERSION
    )]
    Schema {
        /// The URL.
        url: String,
        /// The JSON path of the first mismatch.
        path: String,
        /// serde's error.
        #[source]
        source: serde_json::Error,
    },
}

fn field_note(field: Option<&str>) -> String {
    field.map_or_else(String::new, |f| format!(" (field: {f})"))
}

fn hint_note(hint: Option<&str>) -> String {
    hint.map_or_else(String::new, |h| format!("\n  hint: {h}"))
}

/// Where the API is and the token to send: the outcome of the global options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// `http://host:port` (and a path prefix, if any), without a trailing `/`.
    pub base: String,
    /// The token file.
    pub token_file: PathBuf,
}

impl Endpoint {
    /// Resolve the global options: `api` and `token_file` win (flags or their environment
    /// variables), then the config file's `[api]` (`listen`, `token_file`), then the
    /// defaults ([`DEFAULT_API`], the first of [`DEFAULT_TOKEN_FILES`] that exists).
    ///
    /// # Errors
    /// A bad URL; an unreadable config file, or one without a valid `[api]` section.
    pub(crate) fn resolve(
        api: Option<&str>,
        token_file: Option<&Path>,
        config: Option<&Path>,
    ) -> Result<Self, CtlError> {
        let section = config
            .map(|path| read_api_section(path).map(|s| (path, s)))
            .transpose()?;
        let base = match (api, &section) {
            (Some(url), _) => normalise_url(url)?,
            (None, Some((path, s))) => {
                let addr: SocketAddr = s.listen.parse().map_err(|_| CtlError::BadListen {
                    path: path.to_path_buf(),
                    listen: s.listen.clone(),
                })?;
                url_of_listen(addr)
            }
            (None, None) => DEFAULT_API.to_owned(),
        };
        let token_file = match (token_file, &section) {
            (Some(path), _) => path.to_path_buf(),
            (None, Some((_, s))) => s.token_file.clone(),
            (None, None) => DEFAULT_TOKEN_FILES
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
                .unwrap_or_else(|| PathBuf::from(DEFAULT_TOKEN_FILES[0])),
        };
        Ok(Self { base, token_file })
    }
}

/// The `[api]` section of the daemon's config file, read with the daemon's own type (so its
/// defaults and field names are the daemon's); the rest of the file is not looked at.
fn read_api_section(path: &Path) -> Result<ApiSection, CtlError> {
    let text = std::fs::read_to_string(path).map_err(|source| CtlError::ConfigRead {
        path: path.to_path_buf(),
        source,
    })?;
    let mut table: toml::Table = toml::from_str(&text).map_err(|source| CtlError::ConfigParse {
        path: path.to_path_buf(),
        what: "not TOML",
        source: Box::new(source),
    })?;
    let api = table.remove("api").ok_or_else(|| CtlError::NoApiSection {
        path: path.to_path_buf(),
    })?;
    api.try_into().map_err(|source| CtlError::ConfigParse {
        path: path.to_path_buf(),
        what: "[api]",
        source: Box::new(source),
    })
}

/// The URL to reach a daemon listening on `addr`: a wildcard address is reached on loopback.
fn url_of_listen(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// `http://host:port[/prefix]` without the trailing `/`; `host:port` gets `http://`.
pub(crate) fn normalise_url(url: &str) -> Result<String, CtlError> {
    let bad = |reason| CtlError::BadUrl {
        url: url.to_owned(),
        reason,
    };
    let t = url.trim();
    let rest = if let Some(rest) = t.strip_prefix("http://") {
        rest
    } else if t.starts_with("https://") {
        return Err(bad(
            "https is not supported: braid ctl speaks plain HTTP to the API (on localhost by \
             default); reach a TLS-fronted API through an SSH tunnel or from its host",
        ));
    } else if t.contains("://") {
        return Err(bad("the scheme must be http://"));
    } else {
        t
    };
    let rest = rest.trim_end_matches('/');
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.contains(char::is_whitespace) || host.contains('@') {
        return Err(bad("expected http://HOST:PORT, like http://127.0.0.1:7780"));
    }
    Ok(format!("http://{rest}"))
}

/// Read the token: the file's first line, checked as the API checks it (32 to 512 visible
/// ASCII characters). Only regular files are opened, so a FIFO cannot block the CLI.
pub(crate) fn read_token(path: &Path) -> Result<String, CtlError> {
    let read_err = |source| CtlError::TokenRead {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if !meta.is_file() {
        return Err(CtlError::BadToken {
            path: path.to_path_buf(),
            reason: "not a regular file",
        });
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_TOKEN_FILE_BYTES).read_to_string(&mut text))
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                CtlError::BadToken {
                    path: path.to_path_buf(),
                    reason: "the file is not text",
                }
            } else {
                read_err(e)
            }
        })?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    braid_control::auth::Token::new(line).map_err(|reason| CtlError::BadToken {
        path: path.to_path_buf(),
        reason,
    })?;
    Ok(line.to_owned())
}

/// An HTTP method the API uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    /// GET.
    Get,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// POST.
    Post,
    /// DELETE.
    Delete,
}

/// A blocking client of one API with one token.
pub(crate) struct Client {
    agent: ureq::Agent,
    base: String,
    authorization: String,
    token_file: PathBuf,
    timeout: Duration,
}

impl fmt::Debug for Client {
    // Not derived: the token stays out of debug output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token_file", &self.token_file)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of `endpoint`, reading its token now; every call is bounded by `timeout`.
    ///
    /// # Errors
    /// The token file cannot be read or holds no token.
    pub(crate) fn new(endpoint: &Endpoint, timeout: Duration) -> Result<Self, CtlError> {
        let token = read_token(&endpoint.token_file)?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .max_redirects(0)
            .timeout_global(Some(timeout))
            .user_agent(concat!("braid-ctl/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Ok(Self {
            agent,
            base: endpoint.base.clone(),
            authorization: format!("Bearer {token}"),
            token_file: endpoint.token_file.clone(),
            timeout,
        })
    }

    /// The API's base URL.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// `GET path?query`, the body of a 2xx answer.
    ///
    /// # Errors
    /// [`CtlError`]: the connection, the timeout, or the API's error.
    pub(crate) fn get(&self, path: &str, query: &[(&str, String)]) -> Result<String, CtlError> {
        self.call(Method::Get, path, query, None)
    }

    /// `method path` with a JSON body (`None`: no body), the body of a 2xx answer.
    ///
    /// # Errors
    /// As [`Client::get`].
    pub(crate) fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<String, CtlError> {
        self.call(method, path, &[], body)
    }

    fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
    ) -> Result<String, CtlError> {
        let url = format!("{}{path}", self.base);
        let auth = self.authorization.as_str();
        let body = body.map(serde_json::Value::to_string);
        let result = match method {
            Method::Get => self
                .agent
                .get(&url)
                .header("Authorization", auth)
                .query_pairs(query.iter().map(|(k, v)| (*k, v.as_str())))
                .call(),
            Method::Delete => self.agent.delete(&url).header("Authorization", auth).call(),
            Method::Put | Method::Patch | Method::Post => {
                let request = match method {
                    Method::Put => self.agent.put(&url),
                    Method::Patch => self.agent.patch(&url),
                    _ => self.agent.post(&url),
                };
                let request = request
                    .header("Authorization", auth)
                    .content_type("application/json");
                match &body {
                    Some(b) => request.send(b.as_bytes()),
                    None => request.send_empty(),
                }
            }
        };
        let mut response = result.map_err(|e| self.transport_error(&url, e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .lossy_utf8(true)
            .read_to_string()
            .map_err(|e| self.transport_error(&url, e))?;
        if (200..300).contains(&status) {
            return Ok(text);
        }
        Err(self.api_error(&url, status, retry_after, &text))
    }

    fn transport_error(&self, url: &str, e: ureq::Error) -> CtlError {
        let url = url.to_owned();
        match e {
            ureq::Error::Io(source)
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::ConnectionRefused
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::NotConnected
                        | std::io::ErrorKind::AddrNotAvailable
                        | std::io::ErrorKind::NetworkUnreachable
                        | std::io::ErrorKind::HostUnreachable
                ) =>
            {
                CtlError::Connect { url, source }
            }
            ureq::Error::Timeout(_) => CtlError::Timeout {
                url,
                timeout: self.timeout,
            },
            source => CtlError::Transport {
                url,
                source: Box::new(source),
            },
        }
    }

    fn api_error(&self, url: &str, status: u16, retry_after: Option<u64>, text: &str) -> CtlError {
        let Ok(body) = serde_json::from_str::<ErrorBody>(text) else {
            return CtlError::NotApi {
                status,
                url: url.to_owned(),
                excerpt: text.chars().take(200).collect(),
            };
        };
        let after = retry_after.map_or_else(String::new, |s| format!(" {s} s"));
        let hint = match status {
            401 => Some(format!(
                "check the token file: braid ctl sent the token of {}, which must be the file \
                 the daemon's [api] token_file names (--token-file, BRAID_TOKEN_FILE, or \
                 --config with the daemon's config file)",
                self.token_file.display()
            )),
            429 => Some(format!(
                "retry after{} (Retry-After); the API blocks a client after repeated wrong \
                 tokens: check the token file ({}) first",
                if after.is_empty() { " a while" } else { &after },
                self.token_file.display()
            )),
            503 => Some(format!(
                "the daemon is busy; retry after{}",
                if after.is_empty() {
                    " a second"
                } else {
                    &after
                }
            )),
            _ => None,
        };
        CtlError::Api {
            status,
            code: body.error.code,
            message: body.error.message,
            field: body.error.field,
            hint,
        }
    }
}

/// Deserialise an answer into the API's schema type, naming the path of a mismatch.
///
/// # Errors
/// [`CtlError::Schema`].
pub(crate) fn parse<T: DeserializeOwned>(url: &str, body: &str) -> Result<T, CtlError> {
    let mut de = serde_json::Deserializer::from_str(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        CtlError::Schema {
            url: url.to_owned(),
            // `.` is the top level (the body is not JSON, or not the expected kind of value).
            path: if path == "." {
                "(the whole body)".to_owned()
            } else {
                path
            },
            source: e.into_inner(),
        }
    })
}

/// `text` percent-encoded for one path segment (a NIC's name may hold any character).
pub(crate) fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A directory of the test's own (`test` names it), made empty.
    fn temp_dir(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("braid-ctl-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn urls_are_normalised_and_https_refused() {
        assert_eq!(
            normalise_url("http://127.0.0.1:7780/").expect("ok"),
            "http://127.0.0.1:7780"
        );
        assert_eq!(
            normalise_url("127.0.0.1:7791").expect("ok"),
            "http://127.0.0.1:7791"
        );
        assert_eq!(
            normalise_url("http://[::1]:7780/braid/").expect("ok"),
            "http://[::1]:7780/braid"
        );
        let e = normalise_url("https://h:1").expect_err("https").to_string();
        assert!(
            e.starts_with("--api \"https://h:1\": https is not supported"),
            "{e}"
        );
        assert!(normalise_url("ftp://h:1").is_err());
        assert!(normalise_url("http://").is_err());
        assert!(normalise_url("http://user@h:1").is_err());
    }

    #[test]
    fn wildcard_listen_is_reached_on_loopback() {
        assert_eq!(
            url_of_listen("0.0.0.0:7780".parse().expect("a")),
            "http://127.0.0.1:7780"
        );
        assert_eq!(
            url_of_listen("[::]:7781".parse().expect("a")),
            "http://[::1]:7781"
        );
        assert_eq!(
            url_of_listen("10.0.0.1:80".parse().expect("a")),
            "http://10.0.0.1:80"
        );
    }

    #[test]
    fn the_config_files_api_section_gives_url_and_token_and_flags_win() {
        let dir = temp_dir("config");
        let cfg = dir.join("braid.toml");
        std::fs::write(
            &cfg,
            "[vnic]\nname = \"not looked at\"\n[api]\nlisten = \"0.0.0.0:7999\"\n\
             token_file = \"/srv/t\"\n",
        )
        .expect("write");
        let e = Endpoint::resolve(None, None, Some(&cfg)).expect("resolve");
        assert_eq!(e.base, "http://127.0.0.1:7999");
        assert_eq!(e.token_file, PathBuf::from("/srv/t"));
        let e = Endpoint::resolve(Some("h:1"), Some(Path::new("/x")), Some(&cfg)).expect("r");
        assert_eq!(e.base, "http://h:1");
        assert_eq!(e.token_file, PathBuf::from("/x"));

        std::fs::write(&cfg, "[api]\ntoken_file = \"/t\"\nlistne = \"x\"\n").expect("write");
        let e = Endpoint::resolve(None, None, Some(&cfg)).expect_err("unknown field");
        assert!(e.to_string().ends_with(": [api]"), "{e}");
        let cause = std::error::Error::source(&e).expect("source").to_string();
        assert!(cause.contains("listne"), "{cause}");

        std::fs::write(&cfg, "[vnic]\nname = \"x\"\n").expect("write");
        let e = Endpoint::resolve(None, None, Some(&cfg)).expect_err("no [api]");
        assert!(e.to_string().contains("no [api] section"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_token_is_the_first_line_checked_like_the_api() {
        let dir = temp_dir("token");
        let path = dir.join("api.token");
        let token = "0123456789abcdef0123456789abcdef";
        std::fs::write(&path, format!("{token}\nsecond line\n")).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(read_token(&path).expect("token"), token);
        std::fs::write(&path, "short\n").expect("write");
        let e = read_token(&path).expect_err("short").to_string();
        assert!(
            e.ends_with("the token is shorter than 32 characters"),
            "{e}"
        );
        assert!(!e.contains("short\n"), "{e}");
        let e = read_token(&path.with_extension("missing"))
            .expect_err("missing")
            .to_string();
        assert!(
            e.contains("hint: name the daemon's token file with --token-file"),
            "{e}"
        );
        let e = read_token(&dir).expect_err("dir").to_string();
        assert!(e.ends_with("not a regular file"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn api_errors_read_as_message_field_and_hint() {
        let e = CtlError::Api {
            status: 422,
            code: "invalid_field".into(),
            message: "rules[0].qos: no class".into(),
            field: Some("rules[0].qos".into()),
            hint: None,
        };
        assert_eq!(
            e.to_string(),
            "rules[0].qos: no class (field: rules[0].qos)"
        );
        let e = CtlError::Api {
            status: 429,
            code: "rate_limited".into(),
            message: "too many".into(),
            field: None,
            hint: Some("retry after 6 s".into()),
        };
        assert_eq!(e.to_string(), "too many\n  hint: retry after 6 s");
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(path_segment("link0"), "link0");
        assert_eq!(path_segment("a b/c"), "a%20b%2Fc");
        assert_eq!(path_segment("é"), "%C3%A9");
    }

    #[test]
    fn schema_mismatches_name_the_path() {
        let e = parse::<Vec<braid_control::schema::Nic>>("http://x/v1/nics", r#"[{"id": "zero"}]"#)
            .expect_err("mismatch");
        let CtlError::Schema { path, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(path, "[0].id");
        let e = parse::<Vec<braid_control::schema::Nic>>("http://x/v1/nics", "<html>")
            .expect_err("not JSON");
        assert!(e.to_string().contains(" at (the whole body); "), "{e}");
    }
}
