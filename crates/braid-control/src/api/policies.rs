//! `/v1/policies`: the policy document as a whole (GET, PUT) and section by section
//! (`/v1/policies/{rules,qos,tunnels,policy,reorder,fragmentation,reassembly}`: GET, PUT,
//! DELETE).
//!
//! Owns the handlers and their OpenAPI operations. A section's PUT or DELETE is a
//! read-modify-write of the whole document, under one lock so two section changes cannot
//! lose each other; the daemon validates and applies the whole document atomically
//! ([`crate::Daemon::replace_policies`]): a refusal leaves every section in force. DELETE puts
//! a section back to its default (no rules, no tunnels, the default QoS classes,
//! `policy.default = "stripe"`, holds of 5–25 ms, the default split cost model and
//! reassembly caps).
//!
//! Body errors name the field as in the whole document (`rules[0].priority`, also for
//! `PUT /v1/policies/rules`), as do the daemon's.

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{ApiState, StdErrors, noted};
use crate::error::{ApiError, ErrorBody, JsonBytes};
use crate::schema::{
    FragmentationSection, PolicyDocument, PolicySection, PolicySectionName, QosSection,
    ReassemblySection, ReorderSection, RuleSection, TunnelSection,
};

/// The policies in force.
#[utoipa::path(
    get,
    path = "/v1/policies",
    tag = "policies",
    responses((status = 200, description = "The policy document in force.",
        body = PolicyDocument), StdErrors)
)]
pub(super) async fn get_policies(
    State(state): State<ApiState>,
) -> Result<Json<PolicyDocument>, ApiError> {
    state.call(|d| d.policies()).await.map(Json)
}

/// Replace the policies as a whole.
///
/// Validated and applied live, atomically, on every worker; persisted. A section left out
/// is its default.
#[utoipa::path(
    put,
    path = "/v1/policies",
    tag = "policies",
    request_body = PolicyDocument,
    responses(
        (status = 200, description = "Applied; the document now in force.",
            body = PolicyDocument),
        (status = 409, description = "Valid but refused by the daemon (`refused`); the old \
            policies are in force.", body = ErrorBody),
        (status = 422, description = "A field is wrong (`invalid_field`, `field` names it).",
            body = ErrorBody),
        StdErrors
    )
)]
pub(super) async fn put_policies(
    State(state): State<ApiState>,
    body: Result<JsonBytes, ApiError>,
) -> Response {
    let mut note = "policies: replace".to_owned();
    let result = async {
        let body = body?;
        let document: PolicyDocument = body.decode("")?;
        let _lock = state.inner.policy_lock.lock().await;
        let old = state.call(|d| d.policies()).await?;
        note = format!("policies: replace; {}", changes(&old, &document));
        // The bounds after the note: the audit log says what was asked for.
        body.check("")?;
        state
            .call(move |d| d.replace_policies(document))
            .await
            .map(Json)
    }
    .await;
    noted(note, result)
}

/// What a change does to the document, for the audit log: `changed: rules (2 → 3
/// entries), reorder` or `no change`.
fn changes(old: &PolicyDocument, new: &PolicyDocument) -> String {
    let changed = old.changed_sections(new);
    if changed.is_empty() {
        return "no change".to_owned();
    }
    let parts: Vec<String> = changed
        .iter()
        .map(|s| match s {
            PolicySectionName::Rules => {
                format!("rules ({} → {} entries)", old.rules.len(), new.rules.len())
            }
            PolicySectionName::Tunnels => {
                format!(
                    "tunnels ({} → {} entries)",
                    old.tunnels.len(),
                    new.tunnels.len()
                )
            }
            PolicySectionName::Qos => {
                let n = |q: &Option<QosSection>| {
                    q.as_ref()
                        .map_or_else(|| "default".to_owned(), |q| q.classes.len().to_string())
                };
                format!("qos ({} → {} classes)", n(&old.qos), n(&new.qos))
            }
            other => other.as_str().to_owned(),
        })
        .collect();
    format!("changed: {}", parts.join(", "))
}

/// Replace one section (`value`), or put it back to its default (`None`), as a change of
/// the whole document.
async fn change_section<T: DeserializeOwned + Serialize + Default + Send + 'static>(
    state: &ApiState,
    section: PolicySectionName,
    body: Option<Result<JsonBytes, ApiError>>,
    set: fn(&mut PolicyDocument, T),
    get: fn(PolicyDocument) -> T,
) -> Response {
    let verb = if body.is_some() { "replace" } else { "reset" };
    let mut note = format!("policies: {verb} {}", section.as_str());
    let result = async {
        let (value, bytes) = match body {
            Some(bytes) => {
                let bytes = bytes?;
                (bytes.decode::<T>(section.as_str())?, Some(bytes))
            }
            None => (T::default(), None),
        };
        let _lock = state.inner.policy_lock.lock().await;
        let old = state.call(|d| d.policies()).await?;
        let mut document = old.clone();
        set(&mut document, value);
        note = format!(
            "policies: {verb} {}; {}",
            section.as_str(),
            changes(&old, &document)
        );
        // The bounds after the note: the audit log says what was asked for.
        if let Some(bytes) = &bytes {
            bytes.check(section.as_str())?;
        }
        state
            .call(move |d| d.replace_policies(document))
            .await
            .map(|doc| Json(get(doc)))
    }
    .await;
    noted(note, result)
}

/// The handlers of one section: GET, PUT, DELETE.
macro_rules! section {
    (
        $section:expr, $path:literal, $ty:ty, $field:ident,
        $get:ident, $put:ident, $delete:ident,
        $get_summary:literal, $put_summary:literal, $delete_summary:literal
    ) => {
        #[utoipa::path(
            get,
            path = $path,
            tag = "policies",
            summary = $get_summary,
            responses((status = 200, description = "The section in force.", body = $ty), StdErrors)
        )]
        pub(super) async fn $get(State(state): State<ApiState>) -> Result<Json<$ty>, ApiError> {
            state.call(|d| d.policies()).await.map(|p| Json(p.$field))
        }

        #[utoipa::path(
            put,
            path = $path,
            tag = "policies",
            summary = $put_summary,
            description = "Validated and applied live with the rest of the document, \
                atomically; persisted.",
            request_body = $ty,
            responses(
                (status = 200, description = "Applied; the section now in force.", body = $ty),
                (status = 409, description = "Valid but refused by the daemon (`refused`); \
                    the old policies are in force.", body = ErrorBody),
                (status = 422, description = "A field is wrong (`invalid_field`, `field` \
                    names it as in the whole document).", body = ErrorBody),
                StdErrors
            )
        )]
        pub(super) async fn $put(
            State(state): State<ApiState>,
            body: Result<JsonBytes, ApiError>,
        ) -> Response {
            change_section::<$ty>(
                &state,
                $section,
                Some(body),
                |d, v| d.$field = v,
                |d| d.$field,
            )
            .await
        }

        #[utoipa::path(
            delete,
            path = $path,
            tag = "policies",
            summary = $delete_summary,
            responses(
                (status = 200, description = "Applied; the section now in force (its \
                    default).", body = $ty),
                (status = 409, description = "Refused by the daemon (`refused`); the old \
                    policies are in force.", body = ErrorBody),
                StdErrors
            )
        )]
        pub(super) async fn $delete(State(state): State<ApiState>) -> Response {
            change_section::<$ty>(&state, $section, None, |d, v| d.$field = v, |d| d.$field)
                .await
        }
    };
}

section!(
    PolicySectionName::Rules,
    "/v1/policies/rules",
    Vec<RuleSection>,
    rules,
    get_rules,
    put_rules,
    delete_rules,
    "The rules in force",
    "Replace the rules",
    "Remove every rule"
);
section!(
    PolicySectionName::Qos,
    "/v1/policies/qos",
    Option<QosSection>,
    qos,
    get_qos,
    put_qos,
    delete_qos,
    "The QoS classes in force (null: the default classes)",
    "Replace the QoS classes (null: the default classes)",
    "Put the default QoS classes back"
);
section!(
    PolicySectionName::Tunnels,
    "/v1/policies/tunnels",
    Vec<TunnelSection>,
    tunnels,
    get_tunnels,
    put_tunnels,
    delete_tunnels,
    "The tunnels in force",
    "Replace the tunnels",
    "Remove every tunnel"
);
section!(
    PolicySectionName::Policy,
    "/v1/policies/policy",
    PolicySection,
    policy,
    get_policy,
    put_policy,
    delete_policy,
    "The default striping policy",
    "Replace the default striping policy",
    "Put the default striping policy (stripe) back"
);
section!(
    PolicySectionName::Reorder,
    "/v1/policies/reorder",
    ReorderSection,
    reorder,
    get_reorder,
    put_reorder,
    delete_reorder,
    "The reorder bounds in force",
    "Replace the reorder bounds",
    "Put the default reorder bounds (5-25 ms) back"
);
section!(
    PolicySectionName::Fragmentation,
    "/v1/policies/fragmentation",
    FragmentationSection,
    fragmentation,
    get_fragmentation,
    put_fragmentation,
    delete_fragmentation,
    "When packets are split across NICs (thresholds, cost-model weights)",
    "Replace the split thresholds and cost-model weights",
    "Put the default split thresholds and cost-model weights back"
);
section!(
    PolicySectionName::Reassembly,
    "/v1/policies/reassembly",
    ReassemblySection,
    reassembly,
    get_reassembly,
    put_reassembly,
    delete_reassembly,
    "The reassembly caps and timeout in force",
    "Replace the reassembly caps and timeout",
    "Put the default reassembly caps and timeout back"
);
