//! The OpenAPI document as a contract the server keeps: what utoipa's derive leaves out of the
//! document ([`finish`]), and the check of a request body against the bounds its schema
//! declares ([`check_body`]).
//!
//! What this file owns: integer widths written as bounds, request bodies marked required, and
//! the bound checks (`minimum`/`maximum`, lengths, item and property counts, `null` only
//! where the schema allows it) made from the served document itself. What it does not own:
//! a body's shape and types (serde, in `crate::error`), checks between fields or against the
//! running system (the daemon's, reported as 422 or 409).
//!
//! # Why the bounds are checked from the document
//!
//! The schema types declare bounds serde does not enforce (`#[schema(maximum = 7)]` on a
//! `u8`); if only the daemon checked them, the document would tell the truth for one daemon
//! and not for another (the tests' fake), and a bound added to a type without its check
//! would go unnoticed. Checking each body against the schema the document serves for its
//! operation makes the two agree by construction, for every body and every daemon;
//! schemathesis (`tests/schemathesis.rs`, docs/api.md "Conformance") checks that they do.
//!
//! # Integer widths
//!
//! utoipa writes a `u32` as an unsigned 32-bit `format` (feature `non_strict_integers`;
//! without it, as `int32`, whose range is not a `u32`'s) but no bound; JSON Schema treats
//! `format` as an annotation, so a client that validates would accept 2^32 for it. [`finish`]
//! writes each width's range as `minimum`/`maximum` wherever the type does not declare a
//! tighter one, and names the unsigned formats as the OpenAPI format registry does
//! (`uint32`; utoipa 6 spells them `u-int32`).

use std::sync::OnceLock;

use axum::http::Method;
use serde_json::{Number, Value};
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayItems, KnownFormat, Schema, SchemaFormat,
};
use utoipa::openapi::{OpenApi, RefOr, Required};

use crate::error::ApiError;

/// Add to `doc` what utoipa's derive leaves out: integer widths as bounds, and every request
/// body required (an operation that takes a body answers 415 without one; `null` is how a
/// body says "the default").
pub(crate) fn finish(doc: &mut OpenApi) {
    if let Some(components) = doc.components.as_mut() {
        for schema in components.schemas.values_mut() {
            widths(schema);
        }
    }
    for item in doc.paths.paths.values_mut() {
        let operations = [
            item.get.as_mut(),
            item.put.as_mut(),
            item.post.as_mut(),
            item.delete.as_mut(),
            item.patch.as_mut(),
        ];
        for op in operations.into_iter().flatten() {
            for param in op.parameters.iter_mut().flatten() {
                if let RefOr::T(p) = param
                    && let Some(s) = p.schema.as_mut()
                {
                    widths(s);
                }
            }
            if let Some(RefOr::T(body)) = op.request_body.as_mut() {
                body.required = Some(Required::True);
                for content in body.content.values_mut() {
                    if let RefOr::T(c) = content
                        && let Some(s) = c.schema.as_mut()
                    {
                        widths(s);
                    }
                }
            }
            for response in op.responses.responses.values_mut() {
                if let RefOr::T(r) = response {
                    for content in r.content.values_mut() {
                        if let RefOr::T(c) = content
                            && let Some(s) = c.schema.as_mut()
                        {
                            widths(s);
                        }
                    }
                }
            }
        }
    }
}

/// The range of an integer `format`, if it is one.
fn width(format: &SchemaFormat) -> Option<(i128, i128)> {
    let SchemaFormat::KnownFormat(f) = format else {
        return None;
    };
    Some(match f {
        KnownFormat::Int8 => (i8::MIN.into(), i8::MAX.into()),
        KnownFormat::Int16 => (i16::MIN.into(), i16::MAX.into()),
        KnownFormat::Int32 => (i32::MIN.into(), i32::MAX.into()),
        KnownFormat::Int64 => (i64::MIN.into(), i64::MAX.into()),
        KnownFormat::UInt8 => (0, u8::MAX.into()),
        KnownFormat::UInt16 => (0, u16::MAX.into()),
        KnownFormat::UInt32 => (0, u32::MAX.into()),
        KnownFormat::UInt64 => (0, u64::MAX.into()),
        _ => return None,
    })
}

fn number(n: i128) -> utoipa::Number {
    match usize::try_from(n) {
        Ok(u) => utoipa::Number::UInt(u),
        Err(_) => utoipa::Number::Int(isize::try_from(n).unwrap_or(isize::MIN)),
    }
}

fn as_i128(n: &utoipa::Number) -> Option<i128> {
    match *n {
        utoipa::Number::Int(i) => i128::try_from(i).ok(),
        utoipa::Number::UInt(u) => i128::try_from(u).ok(),
        utoipa::Number::Float(_) => None,
    }
}

/// Write integer widths as bounds in `schema` and every schema inside it.
fn widths(schema: &mut RefOr<Schema>) {
    let RefOr::T(schema) = schema else {
        return;
    };
    match schema {
        Schema::Object(o) => {
            if let Some((lo, hi)) = o.format.as_ref().and_then(width) {
                // A declared bound tighter than the width stays.
                if o.minimum.as_ref().and_then(as_i128).is_none_or(|m| m < lo) {
                    o.minimum = Some(number(lo));
                }
                if o.maximum.as_ref().and_then(as_i128).is_none_or(|m| m > hi) {
                    o.maximum = Some(number(hi));
                }
            }
            // utoipa 6 spells the unsigned formats `u-int32`; the registry's name is `uint32`.
            let unsigned = match o.format {
                Some(SchemaFormat::KnownFormat(KnownFormat::UInt8)) => Some("uint8"),
                Some(SchemaFormat::KnownFormat(KnownFormat::UInt16)) => Some("uint16"),
                Some(SchemaFormat::KnownFormat(KnownFormat::UInt32)) => Some("uint32"),
                Some(SchemaFormat::KnownFormat(KnownFormat::UInt64)) => Some("uint64"),
                _ => None,
            };
            if let Some(name) = unsigned {
                o.format = Some(SchemaFormat::Custom(name.to_owned()));
            }
            for p in o.properties.values_mut() {
                widths(p);
            }
            if let Some(extra) = o.additional_properties.as_deref_mut()
                && let AdditionalProperties::RefOr(s) = extra
            {
                widths(s);
            }
        }
        Schema::Array(a) => {
            if let ArrayItems::RefOrSchema(items) = &mut a.items {
                widths(items);
            }
        }
        Schema::OneOf(x) => x.items.iter_mut().for_each(widths),
        Schema::AllOf(x) => x.items.iter_mut().for_each(widths),
        Schema::AnyOf(x) => x.items.iter_mut().for_each(widths),
        _ => {}
    }
}

/// The served document as JSON, made once.
fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        serde_json::to_value(super::openapi()).expect("invariant: the document is JSON")
    })
}

/// The JSON schema of the body of `method` on the route `template` (`/v1/nics/{name}`), if
/// the operation takes one.
pub(crate) fn body_schema(method: &Method, template: &str) -> Option<&'static Value> {
    let op = document()
        .get("paths")?
        .get(template)?
        .get(method.as_str().to_ascii_lowercase())?;
    op.get("requestBody")?
        .get("content")?
        .get("application/json")?
        .get("schema")
}

/// Check `value`, a body that serde has decoded (so of the right shape), against the bounds
/// of `schema`. A field is named as in the whole document: `root` is the section a body
/// stands for (`rules` for `PUT /v1/policies/rules`), empty for a whole body.
///
/// # Errors
/// 422 `invalid_field` naming the first field out of bounds.
pub(crate) fn check_body(value: &Value, schema: &Value, root: &str) -> Result<(), ApiError> {
    check(document(), schema, value, root, 0)
}

/// Schemas nest no deeper than this (a `$ref` cycle would need a value as deep; serde_json
/// refuses values deeper than 128).
const MAX_DEPTH: usize = 256;

fn field(path: &str) -> String {
    if path.is_empty() {
        "body".to_owned()
    } else {
        path.to_owned()
    }
}

fn key_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// `a` compared with `b`, exactly for integers.
fn cmp(a: &Number, b: &Number) -> Option<std::cmp::Ordering> {
    let int = |n: &Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    match (int(a), int(b)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

/// Does `value`'s JSON type fit the schema's `type` (any, when it has none)?
fn type_fits(schema: &Value, value: &Value) -> bool {
    let fits = |t: &Value| match (t.as_str(), value) {
        (Some("null"), Value::Null)
        | (Some("boolean"), Value::Bool(_))
        | (Some("string"), Value::String(_))
        | (Some("array"), Value::Array(_))
        | (Some("object"), Value::Object(_))
        | (Some("number"), Value::Number(_)) => true,
        (Some("integer"), Value::Number(n)) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    };
    match schema.get("type") {
        None => true,
        Some(Value::Array(types)) => types.iter().any(fits),
        Some(t) => fits(t),
    }
}

/// Why a value failed a schema: its JSON type (which decides between the branches of a
/// `oneOf`), or a bound.
enum Fail {
    Type(ApiError),
    Bound(ApiError),
}

impl Fail {
    fn into_error(self) -> ApiError {
        match self {
            Self::Type(e) | Self::Bound(e) => e,
        }
    }
}

fn bound(path: &str, reason: impl AsRef<str>) -> Fail {
    Fail::Bound(ApiError::invalid_field(field(path), reason))
}

fn check(
    doc: &Value,
    schema: &Value,
    value: &Value,
    path: &str,
    depth: usize,
) -> Result<(), ApiError> {
    check_at(doc, schema, value, path, depth).map_err(Fail::into_error)
}

fn check_at(
    doc: &Value,
    schema: &Value,
    value: &Value,
    path: &str,
    depth: usize,
) -> Result<(), Fail> {
    if depth > MAX_DEPTH {
        return Err(bound(path, "nested too deeply"));
    }
    if !type_fits(schema, value) {
        let reason = if value.is_null() {
            "null is not allowed here: leave the field out or give a value".to_owned()
        } else {
            format!("expected {}", schema["type"])
        };
        return Err(Fail::Type(ApiError::invalid_field(field(path), reason)));
    }
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let target = r
            .strip_prefix('#')
            .and_then(|pointer| doc.pointer(pointer))
            .ok_or_else(|| {
                Fail::Bound(ApiError::internal(format!(
                    "unresolved schema reference {r}"
                )))
            })?;
        check_at(doc, target, value, path, depth + 1)?;
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            check_at(doc, s, value, path, depth + 1)?;
        }
    }
    // `oneOf`/`anyOf`: utoipa writes them for `Option<T>` (`T` or `null`) and for enums. The
    // value must pass one branch; if none, the error of a branch of its type is reported.
    for key in ["oneOf", "anyOf"] {
        if let Some(branches) = schema.get(key).and_then(Value::as_array) {
            let mut type_error = None;
            let mut bound_error = None;
            for s in branches {
                match check_at(doc, s, value, path, depth + 1) {
                    Ok(()) => {
                        type_error = None;
                        bound_error = None;
                        break;
                    }
                    Err(Fail::Type(e)) => {
                        type_error.get_or_insert(e);
                    }
                    Err(Fail::Bound(e)) => {
                        bound_error.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = bound_error {
                return Err(Fail::Bound(e));
            }
            if let Some(e) = type_error {
                return Err(Fail::Type(e));
            }
        }
    }
    let count = |k: &str| schema.get(k).and_then(Value::as_u64);
    match value {
        Value::Null | Value::Bool(_) => {}
        Value::Number(n) => {
            let limit = |k: &str| schema.get(k).and_then(Value::as_number);
            if let Some(max) = limit("maximum")
                && cmp(n, max) == Some(std::cmp::Ordering::Greater)
            {
                return Err(bound(path, format!("{n} is above the maximum, {max}")));
            }
            if let Some(min) = limit("minimum")
                && cmp(n, min) == Some(std::cmp::Ordering::Less)
            {
                return Err(bound(path, format!("{n} is below the minimum, {min}")));
            }
        }
        Value::String(s) => {
            let chars = s.chars().count() as u64;
            if let Some(min) = count("minLength")
                && chars < min
            {
                return Err(bound(
                    path,
                    if chars == 0 {
                        "empty; give a value".to_owned()
                    } else {
                        format!("{chars} characters, fewer than {min}")
                    },
                ));
            }
            if let Some(max) = count("maxLength")
                && chars > max
            {
                return Err(bound(path, format!("{chars} characters, more than {max}")));
            }
        }
        Value::Array(items) => {
            let n = items.len() as u64;
            if let Some(min) = count("minItems")
                && n < min
            {
                return Err(bound(path, format!("{n} items, fewer than {min}")));
            }
            if let Some(max) = count("maxItems")
                && n > max
            {
                return Err(bound(path, format!("{n} items, more than {max}")));
            }
            if let Some(item_schema) = schema.get("items").filter(|s| s.is_object()) {
                for (i, item) in items.iter().enumerate() {
                    check_at(doc, item_schema, item, &format!("{path}[{i}]"), depth + 1)?;
                }
            }
        }
        Value::Object(map) => {
            let n = map.len() as u64;
            if let Some(min) = count("minProperties")
                && n < min
            {
                return Err(bound(path, format!("give at least {min} of its fields")));
            }
            if let Some(max) = count("maxProperties")
                && n > max
            {
                return Err(bound(path, format!("{n} fields, more than {max}")));
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            let extra = schema.get("additionalProperties").filter(|s| s.is_object());
            for (key, v) in map {
                if let Some(sub) = properties.and_then(|p| p.get(key)).or(extra) {
                    check_at(doc, sub, v, &key_path(path, key), depth + 1)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn put(template: &str) -> &'static Value {
        body_schema(&Method::PUT, template).expect("a body schema")
    }

    #[test]
    fn every_body_is_required_and_widths_are_bounds() {
        let doc = document();
        let mut bodies = 0;
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("item") {
                if let Some(body) = op.get("requestBody") {
                    bodies += 1;
                    assert_eq!(body["required"], json!(true), "{method} {path}");
                    let m =
                        Method::from_bytes(method.to_ascii_uppercase().as_bytes()).expect("method");
                    assert!(body_schema(&m, path).is_some(), "{method} {path}");
                }
            }
        }
        assert!(bodies >= 8, "{bodies} bodies");
        let s = &doc["components"]["schemas"];
        let quantum = &s["QosSection"]["properties"]["quantum_bytes"];
        assert_eq!(
            (&quantum["format"], &quantum["minimum"], &quantum["maximum"]),
            (&json!("uint32"), &json!(0), &json!(u32::MAX))
        );
        // A declared bound tighter than the width stays.
        let pcp = &s["RuleSection"]["properties"]["vlan_pcp"];
        assert_eq!((&pcp["minimum"], &pcp["maximum"]), (&json!(0), &json!(7)));
        let id = &doc["paths"]["/v1/flows/{id}"]["get"]["parameters"][0]["schema"];
        assert_eq!(id["maximum"], json!(u64::MAX));
    }

    #[test]
    fn bounds_are_checked_with_the_field_named() {
        let rules = put("/v1/policies/rules");
        let ok = json!([{"name": "a", "vlan_pcp": 7, "set_ttl": 1, "drop": true}]);
        check_body(&ok, rules, "rules").expect("in bounds");
        for (body, field, words) in [
            (
                json!([{"name": "a", "vlan_pcp": 8}]),
                "rules[0].vlan_pcp",
                "above the maximum, 7",
            ),
            (
                json!([{"name": "a"}, {"name": "b", "set_ttl": 0}]),
                "rules[1].set_ttl",
                "below the minimum, 1",
            ),
            (
                json!([{"name": "a", "priority": 4_294_967_296_u64}]),
                "rules[0].priority",
                "above the maximum, 4294967295",
            ),
            (
                json!([{"name": "a", "when": {"hold_ms": 1, "down_links": -1}}]),
                "rules[0].when.down_links",
                "below the minimum, 0",
            ),
        ] {
            let e = check_body(&body, rules, "rules").map_or_else(|e| e, |()| panic!("{body}"));
            assert_eq!(e.code(), "invalid_field");
            assert!(
                e.message().starts_with(&format!("{field}: ")) && e.message().contains(words),
                "{body}: {e:?}"
            );
        }
        // `null` where the schema allows it (an optional section or field) passes.
        check_body(&json!(null), put("/v1/policies/qos"), "qos").expect("null qos");
        check_body(
            &json!([{"name": "a", "when": {"links": null}}]),
            rules,
            "rules",
        )
        .expect("null links");
    }

    #[test]
    fn a_nic_update_needs_one_field_and_no_nulls() {
        let schema = body_schema(&Method::PATCH, "/v1/nics/{name}").expect("schema");
        check_body(&json!({"admin": "down"}), schema, "").expect("valid");
        let e = check_body(&json!({}), schema, "").expect_err("empty");
        assert!(e.message().starts_with("body: give at least 1"), "{e:?}");
        let e = check_body(&json!({"capacity_bps": 5000, "admin": null}), schema, "")
            .expect_err("null");
        assert!(
            e.message().starts_with("admin: null is not allowed"),
            "{e:?}"
        );
        let e = check_body(&json!({"capacity_bps": 999}), schema, "").expect_err("low");
        assert!(
            e.message().starts_with("capacity_bps: 999 is below"),
            "{e:?}"
        );
    }
}
