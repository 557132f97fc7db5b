//! `/v1/flows`: the live flow table with filters and paging, one flow, and moving or pinning
//! a flow to a NIC.
//!
//! Owns the handlers and their OpenAPI operations. The query's parsing and paging are
//! `crate::flows`; admission is the daemon's ([`crate::Daemon::move_flow`]).

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::response::Response;

use super::{ApiState, StdErrors, noted};
use crate::error::{ApiError, ApiPath, ErrorBody, JsonBytes};
use crate::flows::{FlowFilterParams, FlowQuery};
use crate::schema::{Flow, FlowMove, FlowPage};

/// The live flow table, one page at a time.
///
/// Filters combine (all must match). Pages are in flow id order; pass `next_cursor` as
/// `cursor` for the next one.
#[utoipa::path(
    get,
    path = "/v1/flows",
    tag = "flows",
    params(FlowFilterParams),
    responses(
        (status = 200, description = "One page of flows.", body = FlowPage),
        (status = 422, description = "A parameter is wrong (`invalid_field`, `field` names it).",
            body = ErrorBody),
        StdErrors
    )
)]
pub(super) async fn list_flows(
    State(state): State<ApiState>,
    RawQuery(query): RawQuery,
) -> Result<Json<FlowPage>, ApiError> {
    let query = FlowQuery::parse(query.as_deref())?;
    state.call(move |d| d.flows(&query)).await.map(Json)
}

fn flow_id(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| {
        ApiError::invalid_field("id", format!("{text:?} is not a flow id (an integer)"))
    })
}

/// One flow.
#[utoipa::path(
    get,
    path = "/v1/flows/{id}",
    tag = "flows",
    params(("id" = u64, Path, description = "The flow's id.")),
    responses(
        (status = 200, description = "The flow.", body = Flow),
        (status = 404, description = "No flow has this id (`not_found`).", body = ErrorBody),
        StdErrors
    )
)]
pub(super) async fn get_flow(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Flow>, ApiError> {
    let id = flow_id(&id)?;
    state.call(move |d| d.flow(id)).await.map(Json)
}

/// Move or pin a flow to a NIC.
///
/// Through the flow controller, with admission: a NIC without room (or down) refuses it, and
/// the flow stays where it was (409). `pin: true` holds the flow on the NIC (no rebalancing
/// moves it; a NIC failure still does).
#[utoipa::path(
    post,
    path = "/v1/flows/{id}",
    tag = "flows",
    params(("id" = u64, Path, description = "The flow's id.")),
    request_body = FlowMove,
    responses(
        (status = 200, description = "Moved; the flow as it is now.", body = Flow),
        (status = 404, description = "No flow has this id (`not_found`).", body = ErrorBody),
        (status = 409, description = "Admission refused (`refused`); the flow stays where it \
            was.", body = ErrorBody),
        (status = 422, description = "A field is wrong (`invalid_field`, `field` names it).",
            body = ErrorBody),
        StdErrors
    )
)]
pub(super) async fn move_flow(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    body: Result<JsonBytes, ApiError>,
) -> Response {
    let mut note = format!("flow {id}: move");
    let result = async {
        let id = flow_id(&id)?;
        // Decoded first, its bounds (a `nic` of one character at least) checked after the
        // note: the audit log says what was asked for.
        let body = body?;
        let request: FlowMove = body.decode("")?;
        note = format!(
            "flow {id}: {} to nic {:?}",
            if request.pin { "pin" } else { "move" },
            request.nic
        );
        body.check("")?;
        state
            .call(move |d| d.move_flow(id, &request))
            .await
            .map(Json)
    }
    .await;
    noted(note, result)
}
