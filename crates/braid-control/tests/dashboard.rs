//! The dashboard's server side through the public router over the fake daemon: its page and
//! files are served without the token with the right types and security headers (and a 304
//! for a fresh copy), nothing else is opened up, and the script, as served, reads only what
//! the API documents: every API path it names is a `GET` operation of the OpenAPI document
//! (with only declared query parameters) that answers 200 here, and every field name it
//! reads is a property of the document's schemas. The page in a real browser against a real
//! daemon is `crates/braid/tests/dashboard.rs` (root, chromium).

mod support;

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use axum::http::{StatusCode, header};
    use braid_control::dashboard::{CSP, PAGE_PATH, PUBLIC_PATHS};
    use serde_json::Value;

    use super::support::{Api, CLIENT, request};

    /// The files, with the content type each must have.
    const FILES: [(&str, &str); 3] = [
        (PAGE_PATH, "text/html; charset=utf-8"),
        ("/dashboard/dashboard.js", "text/javascript; charset=utf-8"),
        ("/dashboard/dashboard.css", "text/css; charset=utf-8"),
    ];

    fn header_of(r: &super::support::Resp, name: header::HeaderName) -> &str {
        r.headers
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header"))
    }

    #[tokio::test]
    async fn the_page_and_files_need_no_token_and_carry_safe_headers() {
        let api = Api::new(3);
        for (path, content_type) in FILES {
            assert!(PUBLIC_PATHS.contains(&path), "{path}");
            let r = api.send_as(CLIENT, request("GET", path, None, None)).await;
            assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
            assert_eq!(header_of(&r, header::CONTENT_TYPE), content_type, "{path}");
            assert_eq!(header_of(&r, header::CONTENT_SECURITY_POLICY), CSP);
            assert!(CSP.starts_with("default-src 'self';"), "{CSP}");
            assert_eq!(header_of(&r, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
            assert_eq!(header_of(&r, header::CACHE_CONTROL), "no-cache");
            assert_eq!(header_of(&r, header::REFERRER_POLICY), "no-referrer");
            let etag = header_of(&r, header::ETAG).to_owned();
            assert!(r.text.len() > 500, "{path} is the real file: {}", r.text);

            // The same ETag again (plain, weak or in a list): 304, no body, same headers.
            for presented in [etag.clone(), format!("W/{etag}"), format!("\"x\", {etag}")] {
                let mut req = request("GET", path, None, None);
                req.headers_mut().insert(
                    header::IF_NONE_MATCH,
                    presented.parse().expect("header value"),
                );
                let r = api.send_as(CLIENT, req).await;
                assert_eq!(r.status, StatusCode::NOT_MODIFIED, "{path} {presented}");
                assert_eq!(r.text, "");
                assert_eq!(header_of(&r, header::ETAG), etag);
                assert_eq!(header_of(&r, header::CONTENT_SECURITY_POLICY), CSP);
            }
            let mut req = request("GET", path, None, None);
            req.headers_mut().insert(
                header::IF_NONE_MATCH,
                "\"0123\"".parse().expect("header value"),
            );
            assert_eq!(api.send_as(CLIENT, req).await.status, StatusCode::OK);

            let r = api.send_as(CLIENT, request("HEAD", path, None, None)).await;
            assert_eq!(r.status, StatusCode::OK, "HEAD {path}");
            assert_eq!(header_of(&r, header::CONTENT_TYPE), content_type);
        }
        // `/` sends browsers to the page (keeping a `#token=` fragment: browsers carry it
        // over a redirect without a fragment of its own).
        let r = api.send_as(CLIENT, request("GET", "/", None, None)).await;
        assert_eq!(r.status, StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(header_of(&r, header::LOCATION), PAGE_PATH);
        // None of it counted as a failed authentication, none of it audited.
        let metrics = api.call("GET", "/metrics", None).await.text;
        assert!(
            metrics.contains("braid_api_auth_failures_total 0"),
            "{metrics}"
        );
        assert!(api.audit().is_empty());
    }

    #[tokio::test]
    async fn nothing_else_is_opened_up() {
        let api = Api::with(3, |c| c.auth_failure_burst = 1000);
        // Other paths near the dashboard's are unknown paths: 401 without the token, 404
        // with it, in the API's error shape.
        for path in [
            "/dashboard/",
            "/dashboard/index.html",
            "/dashboard/x.js",
            "/dashboard.js",
            "/dashboard/dashboard.js/x",
        ] {
            let r = api.send_as(CLIENT, request("GET", path, None, None)).await;
            assert_eq!(r.code(401), "unauthorized", "{path}");
            assert_eq!(api.call("GET", path, None).await.code(404), "not_found");
        }
        // Other methods on the dashboard's paths: 401 without the token (and audited as
        // change requests are), 405 with it.
        for path in ["/", PAGE_PATH, "/dashboard/dashboard.js"] {
            let r = api
                .send_as(CLIENT, request("POST", path, None, Some("{}")))
                .await;
            assert_eq!(r.code(401), "unauthorized", "POST {path}");
            assert_eq!(
                api.call("DELETE", path, None).await.code(405),
                "method_not_allowed",
                "DELETE {path}"
            );
        }
        let audit = api.audit();
        assert_eq!(audit.len(), 6, "{audit:?}");
        assert_eq!(audit[0]["outcome"], "unauthenticated");
        assert_eq!(audit[1]["method"], "DELETE");
        // The API itself still needs the token.
        let r = api
            .send_as(CLIENT, request("GET", "/v1/stats", None, None))
            .await;
        assert_eq!(r.code(401), "unauthorized");
    }

    /// One API path named in the script.
    #[derive(Debug)]
    struct ScriptPath {
        /// As written: `/v1/flows?limit=50`.
        url: String,
        /// `/v1/flows`.
        path: String,
        /// The query's parameter names: `["limit"]`.
        params: Vec<String>,
    }

    /// Every occurrence of `/v1/` in `script` (in literals and comments alike), as the run of
    /// URL characters that starts there, split into path and query parameter names.
    fn script_paths(script: &str) -> Vec<ScriptPath> {
        let url_char = |c: char| c.is_ascii_alphanumeric() || "-_./?=&{}".contains(c);
        script
            .match_indices("/v1/")
            .map(|(at, _)| {
                let rest = &script[at..];
                let end = rest.find(|c| !url_char(c)).unwrap_or(rest.len());
                let url = rest[..end].trim_end_matches('.').to_owned();
                let (path, query) = url.split_once('?').unwrap_or((&url, ""));
                ScriptPath {
                    path: path.to_owned(),
                    params: query
                        .split('&')
                        .filter(|p| !p.is_empty())
                        .map(|p| p.split_once('=').map_or(p, |(k, _)| k).to_owned())
                        .collect(),
                    url: url.clone(),
                }
            })
            .collect()
    }

    #[test]
    fn script_paths_finds_literals_and_mentions() {
        let js = r#"const A = { s: "/v1/stats", f: '/v1/flows?limit=50&direction=tx' };
                    // the stats (/v1/stats) first. Then /v1/nics.
                    fetch(`/v1/nics`); const x = "/dashboard"; const y = "v1/no";"#;
        let found: Vec<(String, Vec<String>)> = script_paths(js)
            .into_iter()
            .map(|p| (p.path, p.params))
            .collect();
        let s = |v: &str| v.to_owned();
        assert_eq!(
            found,
            [
                (s("/v1/stats"), vec![]),
                (s("/v1/flows"), vec![s("limit"), s("direction")]),
                (s("/v1/stats"), vec![]),
                (s("/v1/nics"), vec![]),
                (s("/v1/nics"), vec![]),
            ]
        );
    }

    /// Every property name anywhere in the document's component schemas.
    fn schema_properties(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(map) => {
                if let Some(Value::Object(props)) = map.get("properties") {
                    out.extend(props.keys().cloned());
                }
                for child in map.values() {
                    schema_properties(child, out);
                }
            }
            Value::Array(items) => {
                for child in items {
                    schema_properties(child, out);
                }
            }
            _ => {}
        }
    }

    #[tokio::test]
    async fn the_script_reads_only_what_the_api_documents() {
        let api = Api::new(60);
        let script = api
            .send_as(
                CLIENT,
                request("GET", "/dashboard/dashboard.js", None, None),
            )
            .await
            .text;
        let doc = serde_json::to_value(braid_control::openapi()).expect("document");

        // The page's three sources, each written out in full and each a documented GET with
        // declared query parameters that answers here.
        let paths = script_paths(&script);
        let named: BTreeSet<&str> = paths.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            named,
            BTreeSet::from(["/v1/flows", "/v1/nics", "/v1/stats"]),
            "the dashboard reads stats, NICs and flows"
        );
        for p in &paths {
            let op = &doc["paths"][&p.path]["get"];
            assert!(op.is_object(), "{} is not a GET of the API", p.url);
            for param in &p.params {
                let declared = op["parameters"].as_array().is_some_and(|all| {
                    all.iter()
                        .any(|d| d["name"] == param.as_str() && d["in"] == "query")
                });
                assert!(declared, "{}: `{param}` is not a parameter of it", p.url);
            }
            let r = api.call("GET", &p.url, None).await;
            assert_eq!(r.status, StatusCode::OK, "GET {}: {}", p.url, r.text);
        }
        // The page's limit is the one it asks for: 50 of the fake's 60 flows.
        let page = api.get("/v1/flows?limit=50").await;
        assert_eq!(page["flows"].as_array().map(Vec::len), Some(50));
        assert!(page["next_cursor"].is_string());

        // One way out: the script's single fetch (no XHR, sockets, imports or eval).
        assert_eq!(script.matches("fetch(").count(), 1, "one fetch call");
        for banned in [
            "XMLHttpRequest",
            "WebSocket",
            "EventSource",
            "import(",
            "eval(",
            "Function(",
            "innerHTML",
            "document.write",
        ] {
            assert!(!script.contains(banned), "the script uses {banned}");
        }

        // Field names: every snake_case word in the script is a property of the API's schemas
        // (a renamed field fails here), but for the config key its help text names.
        let mut properties = BTreeSet::new();
        schema_properties(&doc["components"]["schemas"], &mut properties);
        let mut words = BTreeSet::new();
        for word in script.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            let snake = word.contains('_')
                && word.starts_with(|c: char| c.is_ascii_lowercase())
                && !word.contains(|c: char| c.is_ascii_uppercase());
            if snake && word != "token_file" {
                words.insert(word.to_owned());
            }
        }
        for field in [
            "tx_bps",
            "rx_bps",
            "srtt_us",
            "loss_ratio",
            "rtt_percentiles",
        ] {
            assert!(words.contains(field), "the script reads {field}");
        }
        let unknown: Vec<&String> = words.difference(&properties).collect();
        assert!(
            unknown.is_empty(),
            "the script reads fields the API does not have: {unknown:?}"
        );

        // And the dashboard is no part of the API's document.
        let documented: Vec<&String> = doc["paths"].as_object().expect("paths").keys().collect();
        for path in documented {
            assert!(
                path.starts_with("/v1/") || path == "/healthz" || path == "/metrics",
                "{path}"
            );
        }
    }
}
