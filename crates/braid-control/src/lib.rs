//! braid's control plane: the REST API (with its OpenAPI document), Prometheus metrics,
//! bearer-token access control and the audit log.
//!
//! # Layering
//!
//! This crate knows nothing of engines, workers or sockets to NICs: it reaches the daemon
//! only through the [`Daemon`] trait, whose methods speak the plain serde types of
//! [`schema`]. The daemon (`crates/braid`) implements the trait with a thin adapter over its
//! engine commands and data-path snapshots, and runs [`serve`] on a tokio runtime of its own
//! (the data path is pinned threads, never tokio). Tests drive [`router`] with a fake daemon.
//!
//! ```text
//! HTTP ─► log_errors ─► guard (token, rate limit, audit) ─► handler ─► Daemon (blocking pool)
//! ```
//!
//! # Use
//!
//! ```no_run
//! # use std::sync::Arc;
//! # async fn run(daemon: Arc<dyn braid_control::Daemon>) -> Result<(), Box<dyn std::error::Error>> {
//! let config: braid_control::ControlConfig = toml::from_str(r#"
//!     token_file = "/etc/braid/api.token"
//!     audit_log = "/var/log/braid/audit.jsonl"
//! "#)?;
//! let state = braid_control::ApiState::open(&config, daemon)?;
//! let listener = braid_control::bind(&config).await?;
//! braid_control::serve(listener, braid_control::router(state), std::future::pending()).await?;
//! # Ok(()) }
//! ```
//!
//! What each module owns: [`schema`] the bodies and the policy document, [`daemon`] the
//! trait, [`error`] the error shape and extractors, [`flows`] the flow table's query and
//! paging, [`auth`] the token and the rate limit, [`audit`] the audit log, [`metrics`]
//! `/metrics`, [`dashboard`] the web page served at `/dashboard`, and the `api` module the
//! router and its layers. docs/api.md describes the endpoints and the dashboard.

#![warn(missing_docs)]

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod api;
pub mod audit;
pub mod auth;
pub mod daemon;
pub mod dashboard;
pub mod error;
pub mod flows;
pub mod metrics;
pub mod schema;

// The fake daemon's file names this crate by its name, as the tests that share it do.
#[cfg(feature = "fake-daemon")]
extern crate self as braid_control;

/// A fake daemon (two NICs, a vNIC, a flow table, a policy document, in memory) for tests
/// and examples only: the double of this crate's own API tests, shared with other crates'
/// tests (feature `fake-daemon`; `braid ctl`'s tests serve the API over it).
#[cfg(feature = "fake-daemon")]
#[allow(missing_docs)]
#[path = "../tests/support/fake.rs"]
pub mod fake;

pub use api::{ApiState, MAX_DAEMON_CALLS, openapi, router};
pub use daemon::{Daemon, DaemonError};
pub use error::ApiError;
pub use flows::FlowQuery;
pub use schema::{API_VERSION, PolicyDocument};

/// The API's port by default.
pub const DEFAULT_PORT: u16 = 7780;

/// The API's settings: `[api]` in the daemon's config file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// Address and port to listen on (default `127.0.0.1:7780`: this host only). Another
    /// address exposes the API to the network; the token is then sent in clear text unless
    /// a TLS proxy sits in front.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The file holding the bearer token: mode 0600, owned by the user running braid (or
    /// root); [`auth::generate_token_file`] writes one.
    pub token_file: PathBuf,
    /// The audit log, JSON lines, appended to (created 0600).
    pub audit_log: PathBuf,
    /// Failed authentications a client may make in a burst (default 10).
    #[serde(default = "default_auth_burst")]
    pub auth_failure_burst: u32,
    /// One failed authentication more is allowed per this many ms (default 6000: 10 a
    /// minute).
    #[serde(default = "default_auth_refill_ms")]
    pub auth_failure_refill_ms: u64,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_PORT))
}
fn default_auth_burst() -> u32 {
    auth::RateLimit::default().burst
}
fn default_auth_refill_ms() -> u64 {
    6000
}

impl ControlConfig {
    /// Defaults for the given token file and audit log.
    #[must_use]
    pub fn new(token_file: PathBuf, audit_log: PathBuf) -> Self {
        Self {
            listen: default_listen(),
            token_file,
            audit_log,
            auth_failure_burst: default_auth_burst(),
            auth_failure_refill_ms: default_auth_refill_ms(),
        }
    }

    /// The rate limit on failed authentications.
    #[must_use]
    pub fn rate_limit(&self) -> auth::RateLimit {
        auth::RateLimit {
            burst: self.auth_failure_burst.max(1),
            refill: Duration::from_millis(self.auth_failure_refill_ms.max(1)),
        }
    }
}

/// Why the API could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The token file was refused or unreadable.
    #[error("read the API token")]
    Token(#[source] auth::TokenFileError),
    /// The audit log could not be opened.
    #[error("open the API audit log")]
    Audit(#[source] audit::AuditError),
    /// The listening socket could not be bound.
    #[error("listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl ApiState {
    /// Read the token file and open the audit log as `config` says.
    ///
    /// # Errors
    /// [`SetupError::Token`] (the file's mode is not 0600, ...) or [`SetupError::Audit`].
    pub fn open(config: &ControlConfig, daemon: Arc<dyn Daemon>) -> Result<Self, SetupError> {
        let token = auth::Token::read_file(&config.token_file).map_err(SetupError::Token)?;
        let audit = audit::AuditLog::open(&config.audit_log).map_err(SetupError::Audit)?;
        if !config.listen.ip().is_loopback() {
            tracing::warn!(listen = %config.listen,
                "the API listens beyond this host; put TLS in front of it");
        }
        Ok(Self::new(daemon, token, audit, config.rate_limit()))
    }
}

/// Bind the API's listening socket.
///
/// # Errors
/// [`SetupError::Listen`].
pub async fn bind(config: &ControlConfig) -> Result<tokio::net::TcpListener, SetupError> {
    tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| SetupError::Listen {
            addr: config.listen,
            source,
        })
}

/// Serve `router` on `listener` until `shutdown` completes, then finish the requests in
/// flight. Clients' addresses reach the guard (rate limit, audit log).
///
/// # Errors
/// An I/O error of the listener.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_to_localhost_7780() {
        let c: ControlConfig = toml::from_str(
            r#"
            token_file = "/t"
            audit_log = "/a"
            "#,
        )
        .expect("minimal config");
        assert_eq!(c.listen, "127.0.0.1:7780".parse().expect("addr"));
        assert_eq!(c.rate_limit(), auth::RateLimit::default());
        assert_eq!(c, ControlConfig::new("/t".into(), "/a".into()));
        let e =
            toml::from_str::<ControlConfig>("token_file = \"/t\"\naudit_log = \"/a\"\nport = 1")
                .expect_err("unknown field");
        assert!(e.to_string().contains("unknown field `port`"), "{e}");
    }
}
