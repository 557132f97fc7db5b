//! The API's one error type, [`ApiError`], and the extractors that turn bad input into it, so
//! every failure has the same shape: `{"error":{"code","message","field"}}` (STYLE §4).
//!
//! What this file owns: status codes and error codes, the JSON body extractor ([`ApiJson`]:
//! content type, size cap, the JSON path of a bad field), and the rule that a 5xx says
//! nothing of its cause: the cause rides in a response extension ([`ErrorDetail`]) that the
//! router's logging layer writes to the log and that never reaches the client. What it does
//! not own: deciding that a value is wrong beyond its JSON type (handlers and the daemon do).
//!
//! | status | code | when |
//! |---|---|---|
//! | 400 | `malformed_json` | the body is not JSON |
//! | 401 | `unauthorized` | no or a wrong bearer token |
//! | 404 | `not_found` | no such path, NIC, vNIC or flow |
//! | 405 | `method_not_allowed` | the path exists, the method does not |
//! | 409 | `refused` | a valid change the daemon could not apply: the old state is in force |
//! | 413 | `body_too_large` | a body above [`MAX_BODY_BYTES`] |
//! | 415 | `unsupported_media_type` | a body that is not `application/json` |
//! | 422 | `invalid_field` | a field is missing, unknown, of the wrong type or out of range |
//! | 429 | `rate_limited` | too many failed authentications from this client (`Retry-After`) |
//! | 500 | `internal` | a bug; details in the log |
//! | 503 | `unavailable` | the daemon cannot answer now (`Retry-After`) |

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::{self, DeserializeOwned};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::daemon::DaemonError;

/// Largest request body, bytes (1 MiB): a policy document with hundreds of rules is a few
/// tens of KiB.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// An error response. Build it with the constructors; it renders as [`ErrorBody`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    /// Why a 5xx happened, for the log only.
    detail: Option<String>,
    /// Seconds, for `Retry-After` (429, 503).
    retry_after_s: Option<u64>,
}

/// The cause of a 5xx, carried as a response extension from the error to the logging layer
/// (which logs it with the request's method and path). Never serialised.
#[derive(Clone, Debug)]
pub struct ErrorDetail(pub String);

/// The body of every error response.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorObject,
}

/// What went wrong.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
pub struct ErrorObject {
    /// Stable, machine-readable: `invalid_field`, `refused`, `not_found`, ... (see
    /// docs/api.md).
    pub code: String,
    /// For people: what is wrong and, for a field, what is allowed.
    pub message: String,
    /// The field at fault, as a path in the body (`rules[2].priority`) or the name of a
    /// query or path parameter; absent when no one field is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            detail: None,
            retry_after_s: None,
        }
    }

    /// 422: `field` is wrong; `reason` says why and what is allowed.
    pub fn invalid_field(field: impl Into<String>, reason: impl AsRef<str>) -> Self {
        let field = field.into();
        let mut e = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("{field}: {}", reason.as_ref()),
        );
        e.field = Some(field);
        e
    }

    /// 400: the body is not JSON.
    pub fn malformed_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_json", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 405.
    #[must_use]
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this path does not take this method (see /v1/openapi.json)",
        )
    }

    /// 409: a valid change the daemon could not apply. The message says that the old state
    /// is in force.
    pub fn refused(reason: impl AsRef<str>) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "refused",
            format!(
                "{}; nothing changed, the old state is in force",
                reason.as_ref()
            ),
        )
    }

    /// 401, with `WWW-Authenticate: Bearer`.
    #[must_use]
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is needed (Authorization: Bearer <token from the token file>)",
        )
    }

    /// 429, with `Retry-After`.
    #[must_use]
    pub fn rate_limited(retry_after_s: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many failed authentications from this client; retry in {retry_after_s} s"),
        );
        e.retry_after_s = Some(retry_after_s);
        e
    }

    /// 413.
    #[must_use]
    pub fn body_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is larger than {MAX_BODY_BYTES} bytes"),
        )
    }

    /// 415.
    #[must_use]
    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be JSON, sent with Content-Type: application/json",
        )
    }

    /// 500: a bug. `detail` goes to the log only.
    pub fn internal(detail: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the daemon's log has the details",
        );
        e.detail = Some(detail.into());
        e
    }

    /// 503: the daemon cannot answer now. `detail` goes to the log only.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the daemon cannot answer now; try again",
        );
        e.detail = Some(detail.into());
        e.retry_after_s = Some(1);
        e
    }

    /// The HTTP status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The error code (`invalid_field`, ...).
    #[must_use]
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The client-facing message.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<DaemonError> for ApiError {
    fn from(e: DaemonError) -> Self {
        match e {
            DaemonError::NotFound { what } => Self::not_found(what),
            DaemonError::Invalid { field, reason } => Self::invalid_field(field, reason),
            DaemonError::Refused { reason } => Self::refused(reason),
            DaemonError::Unavailable { detail } => Self::unavailable(detail),
            DaemonError::Internal { detail } => Self::internal(detail),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorObject {
                code: self.code.to_owned(),
                message: self.message,
                field: self.field,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(s) = self.retry_after_s {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"braid\""),
            );
        }
        if let Some(detail) = self.detail {
            response.extensions_mut().insert(ErrorDetail(detail));
        }
        response
    }
}

/// A JSON body of type `T`, or an [`ApiError`] that says what is wrong: 415 without
/// `Content-Type: application/json`, 413 above [`MAX_BODY_BYTES`], 400 for text that is not
/// JSON (with line and column), 422 naming the field for JSON of the wrong shape
/// (`rules[0].priority: invalid type: string "x", expected u32`), unknown fields included.
#[derive(Clone, Copy, Debug, Default)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = JsonBytes::from_request(req, state).await?;
        let value = bytes.decode("")?;
        bytes.check("")?;
        Ok(Self(value))
    }
}

/// A JSON body's bytes, content type and size checked but not parsed: for handlers that
/// parse it with a field prefix, like the policy sections, or that note what a request asked
/// for before its bounds are checked (the audit log). The second field is the body's schema
/// in the OpenAPI document. A handler calls [`JsonBytes::decode`], then
/// [`JsonBytes::check`]; [`ApiJson`] does both.
#[derive(Clone, Debug)]
pub struct JsonBytes(pub Bytes, pub Option<&'static Value>);

impl JsonBytes {
    /// Parse the body into `T`, its shape and types (as [`decode`]), not yet its bounds.
    ///
    /// # Errors
    /// As [`decode`].
    pub fn decode<T: DeserializeOwned>(&self, root: &str) -> Result<T, ApiError> {
        decode(&self.0, root)
    }

    /// Check the body against the bounds its schema in the OpenAPI document declares
    /// (`maximum`, `minLength`, no `null` where the schema has none, ...), naming the field as
    /// in the whole document (`root` as in [`decode`]).
    ///
    /// # Errors
    /// As [`decode`]; 422 `invalid_field` for a value out of its schema's bounds.
    pub fn check(&self, root: &str) -> Result<(), ApiError> {
        match self.1 {
            Some(schema) => crate::api::contract::check_body(&parse(&self.0, root)?, schema, root),
            None => Ok(()),
        }
    }
}

impl<S: Send + Sync> FromRequest<S> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let schema = req
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .and_then(|p| crate::api::contract::body_schema(req.method(), p.as_str()));
        if !is_json(req.headers()) {
            return Err(ApiError::unsupported_media_type());
        }
        // Checked before reading, so a large declared body is refused without reading it.
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            return Err(ApiError::body_too_large());
        }
        let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY_BYTES);
        match http_body_util::BodyExt::collect(limited).await {
            Ok(collected) => Ok(Self(collected.to_bytes(), schema)),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::body_too_large()),
            // The connection failed while the body was read: the client's, not worth a 5xx.
            Err(e) => Err(ApiError::malformed_json(format!(
                "cannot read the body: {e}"
            ))),
        }
    }
}

/// A path parameter, or an [`ApiError`] in the API's shape (422, field `path`) when it does
/// not decode (a percent-encoding that is not UTF-8).
#[derive(Clone, Copy, Debug, Default)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e| ApiError::invalid_field("path", e.body_text()))
    }
}

/// `application/json` or `application/<something>+json`, any parameters.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or("").trim();
    let essence = essence.to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parse `bytes` as JSON into `T`; a field's path in errors starts with `root` (a policy
/// section's name), so it reads as in the whole document: `rules[0].priority`.
///
/// JSON has one kind of number: a number with a fraction of zero (`4789.0`) is the integer
/// it equals, as JSON Schema's `integer` says, up to 2^53 (beyond, a float is not exact).
/// A key given twice in one object is an error, not "the last one wins".
///
/// # Errors
/// 400 `malformed_json` when the text is not JSON, 422 `invalid_field` naming the field.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], root: &str) -> Result<T, ApiError> {
    typed(&parse(bytes, root)?, root)
}

/// The text as a JSON value (see [`decode`]: integral floats, repeated keys).
fn parse(bytes: &[u8], root: &str) -> Result<Value, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let StrictValue(value) = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        classify(e.into_inner(), root, &path)
    })?;
    // Trailing text after the value is malformed too.
    de.end().map_err(|e| classify(e, root, "."))?;
    Ok(value)
}

/// `value` as a `T`, naming the field at fault.
fn typed<T: DeserializeOwned>(value: &Value, root: &str) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        classify(e.into_inner(), root, &path)
    })
}

/// A JSON value read with [`decode`]'s rules.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Self)
    }
}

struct StrictVisitor;

/// Integers a float holds exactly: up to 2^53.
const EXACT_FLOAT_INT: f64 = 9_007_199_254_740_992.0;

impl<'de> de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "an integral float of at most 2^53 in magnitude converts exactly"
    )]
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(if v.fract() == 0.0 && v.abs() <= EXACT_FLOAT_INT {
            if v >= 0.0 {
                Value::from(v as u64)
            } else {
                Value::from(v as i64)
            }
        } else {
            Value::from(v)
        })
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
            }
            let StrictValue(v) = map.next_value()?;
            object.insert(key, v);
        }
        Ok(Value::Object(object))
    }
}

fn classify(e: serde_json::Error, root: &str, path: &str) -> ApiError {
    match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            ApiError::malformed_json(format!("the body is not valid JSON: {e}"))
        }
        serde_json::error::Category::Data | serde_json::error::Category::Io => {
            ApiError::invalid_field(join_path(root, path), e.to_string())
        }
    }
}

/// `root` + `path` as one JSON path: `("rules", "[0].name")` → `rules[0].name`, `("", ".")`
/// → `body` (the body as a whole).
fn join_path(root: &str, path: &str) -> String {
    let path = if path == "." { "" } else { path };
    match (root.is_empty(), path.is_empty()) {
        (true, true) => "body".to_owned(),
        (true, false) => path.to_owned(),
        (false, true) => root.to_owned(),
        (false, false) if path.starts_with('[') => format!("{root}{path}"),
        (false, false) => format!("{root}.{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{NicUpdate, PolicyDocument};

    #[test]
    fn decode_names_the_field_path() {
        let e = decode::<PolicyDocument>(br#"{"rules":[{"name":"a","priority":"x"}]}"#, "")
            .expect_err("priority is a number");
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.field.as_deref(), Some("rules[0].priority"));
        assert!(
            e.message().starts_with("rules[0].priority: invalid type"),
            "{e:?}"
        );

        let e = decode::<Vec<crate::schema::RuleSection>>(br#"[{"name":"a","bogus":1}]"#, "rules")
            .expect_err("unknown field");
        assert_eq!(e.field.as_deref(), Some("rules[0].bogus"), "{e:?}");
        assert!(e.message().contains("unknown field `bogus`"), "{e:?}");

        let e = decode::<NicUpdate>(br#"{"capacity_bps": -1}"#, "").expect_err("negative");
        assert_eq!(e.field.as_deref(), Some("capacity_bps"));
    }

    #[test]
    fn decode_tells_malformed_from_invalid() {
        for text in [&b"{"[..], b"", b"nope", b"{} {}", b"{\"admin\":}"] {
            let e = decode::<NicUpdate>(text, "").expect_err("not JSON");
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{text:?}: {e:?}");
            assert_eq!(e.code(), "malformed_json");
        }
        let e = decode::<NicUpdate>(b"\"x\"", "").expect_err("wrong type");
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.field.as_deref(), Some("body"));
    }

    #[test]
    fn integral_floats_are_integers_and_keys_are_given_once() {
        // JSON Schema's `integer` includes 5000.0; so does the API.
        let u: NicUpdate = decode(br#"{"capacity_bps": 5000.0}"#, "").expect("5000.0");
        assert_eq!(u.capacity_bps, Some(5000));
        let u: NicUpdate = decode(br#"{"capacity_bps": 5e3}"#, "").expect("5e3");
        assert_eq!(u.capacity_bps, Some(5000));
        for text in [
            &br#"{"capacity_bps": 5000.5}"#[..],
            br#"{"capacity_bps": 1e300}"#,
        ] {
            let e = decode::<NicUpdate>(text, "").expect_err("not an integer");
            assert_eq!(e.field.as_deref(), Some("capacity_bps"), "{e:?}");
            assert!(e.message().contains("floating point"), "{e:?}");
        }
        // A float field still takes an integer.
        let w: crate::schema::WhenSection =
            decode(br#"{"loss_above_percent": 2}"#, "").expect("2 as f64");
        assert_eq!(w.loss_above_percent, Some(2.0));
        let e = decode::<NicUpdate>(br#"{"admin": "up", "admin": "down"}"#, "")
            .expect_err("given twice");
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.message().contains("duplicate field `admin`"), "{e:?}");
        let e = decode::<Vec<crate::schema::RuleSection>>(
            br#"[{"name": "a", "drop": true, "drop": false}]"#,
            "rules",
        )
        .expect_err("given twice");
        assert_eq!(e.field.as_deref(), Some("rules[0]"), "{e:?}");
    }

    #[test]
    fn join_path_reads_as_the_whole_document() {
        assert_eq!(join_path("", "."), "body");
        assert_eq!(join_path("", "a.b"), "a.b");
        assert_eq!(join_path("rules", "."), "rules");
        assert_eq!(join_path("rules", "[1].name"), "rules[1].name");
        assert_eq!(join_path("qos", "classes[0]"), "qos.classes[0]");
    }

    #[test]
    fn server_errors_reveal_nothing() {
        let response = ApiError::internal("secret path /etc/braid/x: EACCES").into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let detail = response
            .extensions()
            .get::<ErrorDetail>()
            .expect("detail kept");
        assert!(detail.0.contains("EACCES"));
        let e: ApiError = DaemonError::Unavailable {
            detail: "worker 1 did not answer".into(),
        }
        .into();
        assert!(!e.message().contains("worker"), "{e:?}");
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn content_types() {
        let mut h = HeaderMap::new();
        assert!(!is_json(&h));
        for (ct, ok) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("application/merge-patch+json", true),
            ("text/plain", false),
            ("application/jsonx", false),
        ] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(is_json(&h), ok, "{ct}");
        }
    }
}
