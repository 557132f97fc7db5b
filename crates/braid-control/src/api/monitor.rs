//! Read-only endpoints: `/healthz`, `/metrics`, `/v1/openapi.json`, `/v1/stats`,
//! `/v1/vnics`.
//!
//! Owns the handlers and their OpenAPI operations; the numbers come from the daemon, the
//! metric names from `crate::metrics`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::{ApiState, StdErrors};
use crate::error::{ApiError, ApiPath, ErrorBody};
use crate::metrics;
use crate::schema::{API_VERSION, Health, Stats, Vnic};

/// Is the API up? The only endpoint without a token.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "monitor",
    security(()),
    responses((status = 200, description = "The API answers.", body = Health))
)]
pub(super) async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
        api_version: API_VERSION,
    })
}

/// Prometheus metrics.
///
/// The Prometheus text format (0.0.4), or OpenMetrics 1.0 when `Accept` asks for
/// `application/openmetrics-text`. Rendered from the daemon's statistics at each scrape.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "monitor",
    responses(
        (status = 200, description = "The metrics.", content(
            (String = "text/plain"),
            (String = "application/openmetrics-text")
        )),
        StdErrors
    )
)]
pub(super) async fn metrics(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let openmetrics =
        metrics::wants_openmetrics(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let snapshot = state
        .call(|d| Ok((d.stats()?, d.nics()?, d.latency_histograms()?)))
        .await;
    match snapshot {
        Ok((stats, nics, latency)) => {
            let (body, content_type) =
                metrics::render(stats, nics, latency, state.counters(), openmetrics);
            (
                [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
                body,
            )
                .into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// This document.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "monitor",
    responses(
        (status = 200, description = "The OpenAPI document of this API.", body = Object),
        StdErrors
    )
)]
pub(super) async fn openapi_json(State(state): State<ApiState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        state.inner.openapi_json.clone(),
    )
        .into_response()
}

/// Statistics: per-NIC rates and link measurements, flows, reorder holds, reassembly, drops
/// by reason.
#[utoipa::path(
    get,
    path = "/v1/stats",
    tag = "monitor",
    responses((status = 200, description = "The statistics.", body = Stats), StdErrors)
)]
pub(super) async fn stats(State(state): State<ApiState>) -> Result<Json<Stats>, ApiError> {
    state.call(|d| d.stats()).await.map(Json)
}

/// The virtual NICs, with queues, RSS and QoS classes.
#[utoipa::path(
    get,
    path = "/v1/vnics",
    tag = "monitor",
    responses((status = 200, description = "Every vNIC.", body = Vec<Vnic>), StdErrors)
)]
pub(super) async fn list_vnics(State(state): State<ApiState>) -> Result<Json<Vec<Vnic>>, ApiError> {
    state.call(|d| d.vnics()).await.map(Json)
}

/// One virtual NIC.
#[utoipa::path(
    get,
    path = "/v1/vnics/{name}",
    tag = "monitor",
    params(("name" = String, Path, description = "The vNIC's device name.")),
    responses(
        (status = 200, description = "The vNIC.", body = Vnic),
        (status = 404, description = "No vNIC has this name (`not_found`).", body = ErrorBody),
        StdErrors
    )
)]
pub(super) async fn get_vnic(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Vnic>, ApiError> {
    let vnics = state.call(|d| d.vnics()).await?;
    vnics
        .into_iter()
        .find(|v| v.name == name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no vNIC is named {name:?}")))
}
