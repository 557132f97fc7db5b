//! The dashboard: one web page, served by the daemon, that polls the API and draws live
//! per-NIC throughput, RTT and loss charts, the NICs, the flow table and drops by reason.
//!
//! What this module owns: the static files (`dashboard/index.html`, `dashboard.js`,
//! `dashboard.css`, embedded with `include_str!`, so the binary is self-contained and the page
//! works on a machine without Internet access: no CDN, no web fonts, no chart library; the
//! charts are drawn by hand on `<canvas>`), their routes (`GET /` redirects to
//! `GET /dashboard`) and their response headers. What it does not own: the data. The page
//! carries none; its script fetches `/v1/stats`, `/v1/nics` and `/v1/flows` with the bearer
//! token like any other client, through the guard, the rate limit and the same handlers.
//!
//! # Why the page is served without the token
//!
//! A browser cannot put an `Authorization` header on a navigation, so a page behind the
//! token could only be opened by curl. The files are the same for everyone and reveal nothing
//! that the source does not: no address, no counter, no name. So the exact paths in
//! [`PUBLIC_PATHS`], for `GET` and `HEAD` only, pass the guard as `/healthz` does; anything
//! else under `/dashboard/` is an unknown path and needs the token like every other one (a
//! client without it learns nothing of the API's shape). The token reaches the page from the
//! URL fragment (`/dashboard#token=…`: a fragment is never sent to the server, so it is in no
//! request line and no log) or from the page's form; the script keeps it in `sessionStorage`
//! (gone when the tab closes), removes it from the address bar, and sends it as
//! `Authorization: Bearer`. A refused token (401) clears it and shows the form again.
//!
//! # Headers
//!
//! Every file is sent with `Content-Security-Policy: default-src 'self'` (plus no `<base>`, no
//! form submission, no framing): the page runs only its own script, from this server, and
//! talks only to this server, so an injected flow-class name cannot become a script (the
//! script also writes text only through `textContent`). `X-Content-Type-Options: nosniff`,
//! `Referrer-Policy: no-referrer`, and `Cache-Control: no-cache` with a strong `ETag` (a
//! BLAKE3 hash of the file): browsers revalidate, so a new daemon's page is never mixed
//! with an old script, and an unchanged file costs a 304.
//!
//! # Not in the OpenAPI document
//!
//! These routes are not part of the JSON API: they are merged into the router beside
//! `api_routes`, which stays the one list both the API's router and its OpenAPI document are
//! made from (so every API route is documented, and schemathesis does not fetch HTML). The
//! tests (`tests/dashboard.rs`) check the other direction on the script as served: every API
//! path it names is a `GET` operation of the document with only parameters the document
//! declares, and every field name it reads is a property of the document's schemas.

use std::sync::LazyLock;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// The page's path (`GET /` redirects here).
pub const PAGE_PATH: &str = "/dashboard";

/// The paths served without the token (`GET` and `HEAD` only): `/` and the dashboard's
/// files.
pub const PUBLIC_PATHS: [&str; 4] = [
    "/",
    PAGE_PATH,
    "/dashboard/dashboard.js",
    "/dashboard/dashboard.css",
];

/// `Content-Security-Policy` of every file: its own origin only; no `<base>`, no form
/// submission (the token form is handled by the script; were the script not to run, the
/// browser must not put the token in a query string), no framing.
pub const CSP: &str =
    "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
#[derive(Debug)]
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

/// The files: the page, its script, its style sheet.
static ASSETS: [Asset; 3] = [
    Asset {
        path: PAGE_PATH,
        content_type: "text/html; charset=utf-8",
        body: include_str!("dashboard/index.html"),
    },
    Asset {
        path: "/dashboard/dashboard.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("dashboard/dashboard.js"),
    },
    Asset {
        path: "/dashboard/dashboard.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("dashboard/dashboard.css"),
    },
];

/// The files' strong ETags (`"<first 32 hex digits of the BLAKE3 hash>"`), in [`ASSETS`]
/// order.
static ETAGS: LazyLock<[HeaderValue; 3]> = LazyLock::new(|| {
    ASSETS.each_ref().map(|a| {
        let hex = blake3::hash(a.body.as_bytes()).to_hex();
        HeaderValue::from_str(&format!("\"{}\"", &hex[..32]))
            .expect("invariant: hex digits in quotes are a header value")
    })
});

/// Is `method path` one of the dashboard's public requests (no token needed)?
pub(crate) fn is_public(method: &Method, path: &str) -> bool {
    (*method == Method::GET || *method == Method::HEAD) && PUBLIC_PATHS.contains(&path)
}

/// The dashboard's routes: `/` (a redirect) and the files.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new().route("/", get(|| async { Redirect::temporary(PAGE_PATH) }));
    for (i, asset) in ASSETS.iter().enumerate() {
        router = router.route(
            asset.path,
            get(move |headers: HeaderMap| async move { serve(i, &headers) }),
        );
    }
    router
}

/// File `i` of [`ASSETS`], or 304 when the client's `If-None-Match` names its ETag.
fn serve(i: usize, request: &HeaderMap) -> Response {
    let asset = &ASSETS[i];
    let etag = &ETAGS[i];
    let fresh = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.strip_prefix("W/").unwrap_or(t).as_bytes() == etag.as_bytes()
        });
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::ETAG, etag.clone()),
    ];
    if fresh {
        (StatusCode::NOT_MODIFIED, headers).into_response()
    } else {
        (headers, asset.body).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_are_embedded_and_reference_each_other() {
        let page = ASSETS[0].body;
        assert!(page.starts_with("<!doctype html>"), "{page:.40}");
        for asset in &ASSETS[1..] {
            assert!(
                page.contains(&format!("\"{}\"", asset.path)),
                "the page links {}",
                asset.path
            );
        }
        // No inline script or style (the CSP would block them) and nothing from elsewhere.
        for file in &ASSETS {
            for banned in [
                "<script>", "style=", "http://", "https://", "//cdn", "@import",
            ] {
                assert!(
                    !file.body.contains(banned),
                    "{} contains {banned:?}",
                    file.path
                );
            }
        }
        assert!(page.contains("<script src=\"/dashboard/dashboard.js\" defer></script>"));
    }

    #[test]
    fn paths_are_public_for_get_and_head_only() {
        assert!(is_public(&Method::GET, "/"));
        assert!(is_public(&Method::HEAD, "/dashboard"));
        assert!(is_public(&Method::GET, "/dashboard/dashboard.js"));
        assert!(!is_public(&Method::POST, "/dashboard"));
        assert!(!is_public(&Method::GET, "/dashboard/"));
        assert!(!is_public(&Method::GET, "/dashboard/x.js"));
        assert!(!is_public(&Method::GET, "/v1/stats"));
    }

    #[test]
    fn etags_differ_per_file_and_are_quoted() {
        let tags: Vec<&str> = ETAGS.iter().map(|t| t.to_str().expect("ascii")).collect();
        assert_eq!(tags.len(), 3);
        assert!(tags.iter().all(|t| t.len() == 34 && t.starts_with('"')));
        assert_ne!(tags[0], tags[1]);
        assert_ne!(tags[1], tags[2]);
    }
}
