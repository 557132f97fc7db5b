//! The HTTP side: [`ApiState`], [`router`] and the OpenAPI document ([`openapi`]), plus the
//! two layers every request goes through.
//!
//! What this module owns: which paths exist (one list, [`api_routes`], from which both the
//! router and the OpenAPI document are made, so they cannot disagree), authentication and
//! the rate limit as a middleware, the audit of change requests, logging the cause of 5xx,
//! and the calls into the [`Daemon`] (on tokio's blocking pool, at most
//! [`MAX_DAEMON_CALLS`] at once). What it does not own: what each endpoint does (the handler
//! files), the token and limiter (`auth`), the log file (`audit`).
//!
//! # Layers, outermost first
//!
//! 1. `log_errors`: logs a 5xx's [`ErrorDetail`] with method and path (the client saw only
//!    "internal error").
//! 2. `guard`: `/healthz` passes (liveness probes carry no token, and it reveals nothing but
//!    that the API answers), and so do `GET`s of the dashboard's static files, which carry
//!    no data (`crate::dashboard` says why). Everything else, unknown paths included: a
//!    client over its failed-authentication limit gets 429 without its token being looked
//!    at; a missing or wrong `Authorization: Bearer` token is 401 and counts against the
//!    limit. Change requests (`PUT`, `PATCH`, `POST`, `DELETE`), authenticated or not, are
//!    written to the audit log with their outcome and the handler's summary
//!    ([`AuditNote`]); 429s are not (they cost the attacker nothing and would fill the log).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::audit::{AuditEntry, AuditLog, outcome, rfc3339_utc};
use crate::auth::{AuthLimiter, ClientKey, RateLimit, Token};
use crate::daemon::{Daemon, DaemonError};
use crate::dashboard;
use crate::error::{ApiError, ErrorBody, ErrorDetail, ErrorObject};
use crate::metrics::ApiCounters;
use crate::schema::API_VERSION;

pub(crate) mod contract;
mod flows;
mod monitor;
mod nics;
mod policies;

/// Daemon calls in flight at most; more requests wait for a slot.
pub const MAX_DAEMON_CALLS: usize = 16;

/// What the handlers share: the daemon, the token, the limiter, the audit log, counters.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct ApiState {
    inner: Arc<Shared>,
}

struct Shared {
    daemon: Arc<dyn Daemon>,
    token: Token,
    limiter: Mutex<AuthLimiter>,
    audit: AuditLog,
    auth_failures: AtomicU64,
    rate_limited: AtomicU64,
    calls: Semaphore,
    /// Serialises policy changes, so a section's read-modify-write is not lost to another.
    policy_lock: tokio::sync::Mutex<()>,
    /// The OpenAPI document, rendered once.
    openapi_json: String,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("token", &self.token)
            .field("audit", &self.audit.path())
            .finish_non_exhaustive()
    }
}

impl ApiState {
    /// The state for `daemon`, accepting `token`, auditing to `audit`, limiting failed
    /// authentications by `limit`.
    #[must_use]
    pub fn new(daemon: Arc<dyn Daemon>, token: Token, audit: AuditLog, limit: RateLimit) -> Self {
        let openapi_json = openapi()
            .to_pretty_json()
            .expect("invariant: the OpenAPI document serialises");
        Self {
            inner: Arc::new(Shared {
                daemon,
                token,
                limiter: Mutex::new(AuthLimiter::new(limit, Instant::now())),
                audit,
                auth_failures: AtomicU64::new(0),
                rate_limited: AtomicU64::new(0),
                calls: Semaphore::new(MAX_DAEMON_CALLS),
                policy_lock: tokio::sync::Mutex::new(()),
                openapi_json,
            }),
        }
    }

    /// The API's own counters.
    #[must_use]
    pub fn counters(&self) -> ApiCounters {
        ApiCounters {
            auth_failures: self.inner.auth_failures.load(Ordering::Relaxed),
            rate_limited: self.inner.rate_limited.load(Ordering::Relaxed),
            audit_errors: self.inner.audit.errors(),
        }
    }

    /// Run `f` against the daemon on the blocking pool (the trait's methods may block).
    /// A panic in the daemon's code is a 500 where panics unwind (debug builds, tests); the
    /// release profile aborts on panic, so there it ends the daemon.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Daemon) -> Result<T, DaemonError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let _permit = self
            .inner
            .calls
            .acquire()
            .await
            .map_err(|_| ApiError::unavailable("the daemon call semaphore is closed"))?;
        let daemon = Arc::clone(&self.inner.daemon);
        tokio::task::spawn_blocking(move || f(daemon.as_ref()))
            .await
            .map_err(|e| ApiError::internal(format!("a daemon call failed: {e}")))?
            .map_err(ApiError::from)
    }
}

/// A handler's one-line summary of the change it made or tried, for the audit log (a
/// response extension, never sent).
#[derive(Clone, Debug)]
pub(crate) struct AuditNote(pub(crate) String);

/// `response` with `note` attached for the audit log.
pub(crate) fn noted(note: String, response: impl IntoResponse) -> Response {
    let mut r = response.into_response();
    r.extensions_mut().insert(AuditNote(note));
    r
}

fn is_change(method: &Method) -> bool {
    matches!(
        *method,
        Method::PUT | Method::PATCH | Method::POST | Method::DELETE
    )
}

/// `Authorization: Bearer <token>` → the token (the scheme is case-insensitive, RFC 7235).
fn bearer(req: &Request) -> Option<&str> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn guard(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    // `/healthz` and the dashboard's static files (which carry no data: `crate::dashboard`).
    if req.uri().path() == "/healthz" || dashboard::is_public(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let key = ClientKey::of(peer.map(|p| p.ip()));
    let client = peer.map_or_else(|| "unknown".to_owned(), |p| p.to_string());
    let s = &state.inner;
    // The limit first, before the token is looked at: a limited client learns nothing from
    // its guesses (a right one is refused as a wrong one is), so guessing stays capped at
    // the refill rate. The price: clients that fill the limiter's table and its shared
    // overflow bucket also hold off a new client with the right token (module `auth`).
    let blocked = s
        .limiter
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .blocked(key, Instant::now());
    if let Some(wait) = blocked {
        s.rate_limited.fetch_add(1, Ordering::Relaxed);
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        return ApiError::rate_limited(secs.max(1)).into_response();
    }
    let authenticated = bearer(&req).is_some_and(|t| s.token.verify(t));
    let method = req.method().clone();
    if is_change(&method) {
        // A change runs in a task of its own: a client that hangs up mid-request drops this
        // future, but not the change already under way, nor its audit line.
        let task = tokio::spawn(run_and_audit(
            state.clone(),
            req,
            next,
            key,
            client,
            authenticated,
        ));
        return task.await.unwrap_or_else(|e| {
            ApiError::internal(format!("change request task failed: {e}")).into_response()
        });
    }
    run_and_audit(state.clone(), req, next, key, client, authenticated).await
}

/// Serve an authenticated request, or refuse an unauthenticated one (counting the failure),
/// and write the audit line of a change.
async fn run_and_audit(
    state: ApiState,
    req: Request,
    next: Next,
    key: ClientKey,
    client: String,
    authenticated: bool,
) -> Response {
    let s = &state.inner;
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = if authenticated {
        next.run(req).await
    } else {
        s.auth_failures.fetch_add(1, Ordering::Relaxed);
        s.limiter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .failed(key, Instant::now());
        tracing::warn!(%client, %method, %path, "API request without a valid token");
        ApiError::unauthorized().into_response()
    };
    if is_change(&method) {
        let status = response.status().as_u16();
        s.audit.record(&AuditEntry {
            time: rfc3339_utc(SystemTime::now()),
            client,
            token: authenticated.then(|| s.token.fingerprint()),
            method: method.to_string(),
            path,
            status,
            outcome: outcome(status),
            change: response
                .extensions()
                .get::<AuditNote>()
                .map(|n| n.0.clone()),
        });
    }
    response
}

async fn log_errors(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = next.run(req).await;
    if let Some(ErrorDetail(detail)) = response.extensions().get::<ErrorDetail>() {
        tracing::error!(%method, %path, status = response.status().as_u16(), %detail,
            "API request failed");
    }
    response
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such path (see /v1/openapi.json)")
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

/// Every route, with its OpenAPI operation: the one list both [`router`] and [`openapi`] are
/// made from.
fn api_routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(monitor::healthz))
        .routes(routes!(monitor::metrics))
        .routes(routes!(monitor::openapi_json))
        .routes(routes!(monitor::stats))
        .routes(routes!(monitor::list_vnics))
        .routes(routes!(monitor::get_vnic))
        .routes(routes!(nics::list_nics))
        .routes(routes!(nics::get_nic, nics::patch_nic))
        .routes(routes!(flows::list_flows))
        .routes(routes!(flows::get_flow, flows::move_flow))
        .routes(routes!(policies::get_policies, policies::put_policies))
        .routes(routes!(
            policies::get_rules,
            policies::put_rules,
            policies::delete_rules
        ))
        .routes(routes!(
            policies::get_qos,
            policies::put_qos,
            policies::delete_qos
        ))
        .routes(routes!(
            policies::get_tunnels,
            policies::put_tunnels,
            policies::delete_tunnels
        ))
        .routes(routes!(
            policies::get_policy,
            policies::put_policy,
            policies::delete_policy
        ))
        .routes(routes!(
            policies::get_reorder,
            policies::put_reorder,
            policies::delete_reorder
        ))
        .routes(routes!(
            policies::get_fragmentation,
            policies::put_fragmentation,
            policies::delete_fragmentation
        ))
        .routes(routes!(
            policies::get_reassembly,
            policies::put_reassembly,
            policies::delete_reassembly
        ))
}

/// The API as an axum router: every endpoint, the guard (token, rate limit, audit), JSON
/// errors for unknown paths and methods. Serve it with connection info
/// (`into_make_service_with_connect_info::<SocketAddr>()`, as [`crate::serve`] does) so the
/// rate limit and the audit log know the client.
pub fn router(state: ApiState) -> Router {
    let (routes, _) = api_routes().split_for_parts();
    // The dashboard's page and files: beside the API, not in its OpenAPI document.
    routes
        .merge(dashboard::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(middleware::from_fn(log_errors))
        .with_state(state)
}

/// The OpenAPI document of [`router`] (what `/v1/openapi.json` serves and
/// `docs/openapi.json` holds).
#[must_use]
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = api_routes().into_openapi();
    doc.info.version = API_VERSION.to_string();
    // Integer widths as bounds, bodies required: what the derive leaves out (`contract`).
    contract::finish(&mut doc);
    doc
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "braid control API",
        description = "Monitor and control a braid daemon: NICs, the virtual NIC, the live flow \
                       table, statistics and the policies (rules, QoS, tunnels, striping, \
                       reorder), applied live and atomically. Every request but /healthz needs \
                       `Authorization: Bearer <token>`. Errors are `{\"error\":{\"code\",\
                       \"message\",\"field\"}}`. See docs/api.md.",
        license(name = "MIT OR Apache-2.0")
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(ErrorBody, ErrorObject)),
    tags(
        (name = "monitor", description = "Health, metrics, statistics, the vNIC"),
        (name = "nics", description = "The physical NICs"),
        (name = "flows", description = "The live flow table"),
        (name = "policies", description = "Rules, QoS, tunnels, striping and reorder policies")
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The error responses every authenticated operation may give besides its own: 401, 429 and
/// anything else (`default`), all with [`ErrorBody`].
struct StdErrors;

impl utoipa::IntoResponses for StdErrors {
    fn responses() -> std::collections::BTreeMap<
        String,
        utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
    > {
        use utoipa::openapi::response::ResponseBuilder;
        use utoipa::openapi::{ContentBuilder, Ref};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
                .into()
        };
        [
            (
                "401".to_owned(),
                error("No or a wrong bearer token (`unauthorized`)."),
            ),
            (
                "429".to_owned(),
                error(
                    "Too many failed authentications from this client (`rate_limited`); see \
                     `Retry-After`.",
                ),
            ),
            (
                "default".to_owned(),
                error(
                    "Any other error: `malformed_json` (400), `unsupported_media_type` (415), \
                     `body_too_large` (413), `invalid_field` (422), `internal` (500), \
                     `unavailable` (503).",
                ),
            ),
        ]
        .into_iter()
        .collect()
    }
}
