//! `/v1/nics`: list, show, and change a NIC's capacity and administrative state.
//!
//! Owns the handlers, their OpenAPI operations and the checks of `PATCH`'s body the daemon
//! need not repeat (at least one field; the capacity's range). The change itself is the
//! daemon's ([`crate::Daemon::update_nic`]).

use std::fmt::Write as _;

use axum::Json;
use axum::extract::State;
use axum::response::Response;

use super::{ApiState, StdErrors, noted};
use crate::error::{ApiError, ApiPath, ErrorBody, JsonBytes};
use crate::schema::{MAX_CAPACITY_BPS, MIN_CAPACITY_BPS, Nic, NicUpdate};

/// Every NIC, in id order, with counters and link measurements.
#[utoipa::path(
    get,
    path = "/v1/nics",
    tag = "nics",
    responses((status = 200, description = "Every NIC.", body = Vec<Nic>), StdErrors)
)]
pub(super) async fn list_nics(State(state): State<ApiState>) -> Result<Json<Vec<Nic>>, ApiError> {
    state.call(|d| d.nics()).await.map(Json)
}

/// One NIC.
#[utoipa::path(
    get,
    path = "/v1/nics/{name}",
    tag = "nics",
    params(("name" = String, Path, description = "The NIC's name.")),
    responses(
        (status = 200, description = "The NIC.", body = Nic),
        (status = 404, description = "No NIC has this name (`not_found`).", body = ErrorBody),
        StdErrors
    )
)]
pub(super) async fn get_nic(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Nic>, ApiError> {
    let nics = state.call(|d| d.nics()).await?;
    nics.into_iter()
        .find(|n| n.name == name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no NIC is named {name:?}")))
}

/// Change a NIC's capacity and/or administrative state.
///
/// `admin: "down"` drains the NIC's flows to the other NICs, then takes it out of use.
/// Both fields are applied as one change: if the daemon refuses one, nothing changed (409).
#[utoipa::path(
    patch,
    path = "/v1/nics/{name}",
    tag = "nics",
    params(("name" = String, Path, description = "The NIC's name.")),
    request_body = NicUpdate,
    responses(
        (status = 200, description = "Applied; the NIC as it is now.", body = Nic),
        (status = 404, description = "No NIC has this name (`not_found`).", body = ErrorBody),
        (status = 409, description = "Refused by the daemon (`refused`); the old state is in \
            force.", body = ErrorBody),
        (status = 422, description = "A field is wrong (`invalid_field`, `field` names it).",
            body = ErrorBody),
        StdErrors
    )
)]
pub(super) async fn patch_nic(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
    body: Result<JsonBytes, ApiError>,
) -> Response {
    let mut note = format!("nic {name}: update");
    let result = async {
        // Decoded first, its bounds checked after the note: the audit log says what was
        // asked for, also when it was out of bounds.
        let body = body?;
        let update: NicUpdate = body.decode("")?;
        note = format!("nic {name}:");
        if let Some(c) = update.capacity_bps {
            let _ = write!(note, " capacity_bps {c}");
        }
        if let Some(a) = update.admin {
            let _ = write!(
                note,
                " admin {}",
                if a == crate::schema::AdminState::Up {
                    "up"
                } else {
                    "down"
                }
            );
        }
        body.check("")?;
        check_update(&update)?;
        state
            .call(move |d| d.update_nic(&name, &update))
            .await
            .map(Json)
    }
    .await;
    noted(note, result)
}

fn check_update(update: &NicUpdate) -> Result<(), ApiError> {
    if update.capacity_bps.is_none() && update.admin.is_none() {
        return Err(ApiError::invalid_field(
            "body",
            "nothing to change: give capacity_bps and/or admin",
        ));
    }
    if let Some(c) = update.capacity_bps
        && !(MIN_CAPACITY_BPS..=MAX_CAPACITY_BPS).contains(&c)
    {
        return Err(ApiError::invalid_field(
            "capacity_bps",
            format!(
                "{c} must be between {MIN_CAPACITY_BPS} (1 kbit/s) and {MAX_CAPACITY_BPS} (10 \
                 Tbit/s)"
            ),
        ));
    }
    Ok(())
}
