//! The REST API end to end through its public surface: `router(state)` over a fake daemon,
//! driven with `oneshot` (STYLE §6), for every endpoint: status codes, bodies, the error
//! shape, authentication and its rate limit, the audit log, validation errors that name the
//! field, refused changes (409, nothing changed), 5xx that reveal nothing, and the OpenAPI
//! document against `docs/openapi.json`. One test serves on 127.0.0.1 port 0 for real.

mod support;

#[cfg(test)]
mod tests {

    use std::time::Duration;

    use super::support::fake::Failure;
    use super::support::{Api, CLIENT, TOKEN, request};
    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use braid_control::DaemonError;
    use serde_json::{Value, json};

    /// Every endpoint and method, with a body where it takes one.
    const ENDPOINTS: &[(&str, &str, Option<&str>)] = &[
        ("GET", "/metrics", None),
        ("GET", "/v1/openapi.json", None),
        ("GET", "/v1/stats", None),
        ("GET", "/v1/vnics", None),
        ("GET", "/v1/vnics/braid0", None),
        ("GET", "/v1/nics", None),
        ("GET", "/v1/nics/a", None),
        ("PATCH", "/v1/nics/a", Some(r#"{"capacity_bps": 2000000}"#)),
        ("GET", "/v1/flows", None),
        ("GET", "/v1/flows/2", None),
        ("POST", "/v1/flows/2", Some(r#"{"nic": "b"}"#)),
        ("GET", "/v1/policies", None),
        ("PUT", "/v1/policies", Some("{}")),
        ("GET", "/v1/policies/rules", None),
        ("PUT", "/v1/policies/rules", Some("[]")),
        ("DELETE", "/v1/policies/rules", None),
        ("GET", "/v1/policies/qos", None),
        ("PUT", "/v1/policies/qos", Some("null")),
        ("DELETE", "/v1/policies/qos", None),
        ("GET", "/v1/policies/tunnels", None),
        ("PUT", "/v1/policies/tunnels", Some("[]")),
        ("DELETE", "/v1/policies/tunnels", None),
        ("GET", "/v1/policies/policy", None),
        ("PUT", "/v1/policies/policy", Some(r#"{"default": "pin"}"#)),
        ("DELETE", "/v1/policies/policy", None),
        ("GET", "/v1/policies/reorder", None),
        (
            "PUT",
            "/v1/policies/reorder",
            Some(r#"{"max_hold_ms": 30}"#),
        ),
        ("DELETE", "/v1/policies/reorder", None),
        ("GET", "/v1/policies/fragmentation", None),
        (
            "PUT",
            "/v1/policies/fragmentation",
            Some(r#"{"max_split_links": 2}"#),
        ),
        ("DELETE", "/v1/policies/fragmentation", None),
        ("GET", "/v1/policies/reassembly", None),
        (
            "PUT",
            "/v1/policies/reassembly",
            Some(r#"{"mem_cap_bytes": 1048576, "timeout_ms": 100}"#),
        ),
        ("DELETE", "/v1/policies/reassembly", None),
    ];

    #[tokio::test]
    async fn healthz_needs_no_token() {
        let api = Api::new(0);
        let r = api
            .send_as(CLIENT, request("GET", "/healthz", None, None))
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            r.json(),
            json!({"status": "ok", "api_version": braid_control::API_VERSION})
        );
    }

    #[tokio::test]
    async fn every_endpoint_works_with_the_token_and_refuses_without() {
        let api = Api::with(10, |c| c.auth_failure_burst = 1000);
        for (method, path, body) in ENDPOINTS {
            let ok = api.call(method, path, *body).await;
            assert_eq!(ok.status, StatusCode::OK, "{method} {path}: {}", ok.text);

            for token in [None, Some("wrong"), Some(&TOKEN[1..]), Some("")] {
                let r = api
                    .send_as(CLIENT, request(method, path, token, *body))
                    .await;
                assert_eq!(r.code(401), "unauthorized", "{method} {path} {token:?}");
                assert_eq!(
                    r.headers
                        .get(header::WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok()),
                    Some("Bearer realm=\"braid\"")
                );
            }
            // The scheme is case-insensitive; the token is not.
            let mut req = request(method, path, None, *body);
            req.headers_mut().insert(
                header::AUTHORIZATION,
                format!("bearer {TOKEN}").parse().expect("header"),
            );
            assert_eq!(
                api.send_as(CLIENT, req).await.status,
                StatusCode::OK,
                "{method} {path}"
            );
            let mut req = request(method, path, None, *body);
            req.headers_mut().insert(
                header::AUTHORIZATION,
                format!("Bearer {}", TOKEN.to_uppercase())
                    .parse()
                    .expect("header"),
            );
            assert_eq!(
                api.send_as(CLIENT, req).await.status,
                StatusCode::UNAUTHORIZED
            );
        }
        // Unknown paths need the token too (they reveal nothing without it), then are 404s in
        // the API's shape; a known path with another method is 405.
        let r = api
            .send_as(CLIENT, request("GET", "/v1/nope", None, None))
            .await;
        assert_eq!(r.code(401), "unauthorized");
        assert_eq!(
            api.call("GET", "/v1/nope", None).await.code(404),
            "not_found"
        );
        assert_eq!(
            api.call("DELETE", "/v1/nics", None).await.code(405),
            "method_not_allowed"
        );
        assert_eq!(
            api.call("POST", "/healthz", None).await.code(405),
            "method_not_allowed"
        );
    }

    #[tokio::test]
    async fn failed_authentications_are_rate_limited_per_client() {
        let api = Api::with(0, |c| {
            c.auth_failure_burst = 3;
            c.auth_failure_refill_ms = 60_000;
        });
        let attacker = "192.0.2.7:5555";
        for _ in 0..3 {
            let r = api
                .send_as(attacker, request("GET", "/v1/nics", Some("guess"), None))
                .await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        }
        // Limited now: even the right token gets 429, with Retry-After.
        let r = api
            .send_as(attacker, request("GET", "/v1/nics", Some(TOKEN), None))
            .await;
        assert_eq!(r.code(429), "rate_limited");
        let retry: u64 = r.headers[header::RETRY_AFTER]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("seconds");
        assert!((59..=60).contains(&retry), "{retry}");
        // Another port of the same address is the same client; another address is not.
        let r = api
            .send_as(
                "192.0.2.7:6666",
                request("GET", "/v1/nics", Some(TOKEN), None),
            )
            .await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            api.call("GET", "/v1/nics", None).await.status,
            StatusCode::OK
        );
        // /healthz stays open to the limited client.
        let r = api
            .send_as(attacker, request("GET", "/healthz", None, None))
            .await;
        assert_eq!(r.status, StatusCode::OK);
        // The metrics count both.
        let metrics = api.call("GET", "/metrics", None).await.text;
        assert!(
            metrics.contains("braid_api_auth_failures_total 3\n"),
            "{metrics}"
        );
        assert!(
            metrics.contains("braid_api_rate_limited_total 2\n"),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn nics_list_show_and_404() {
        let api = Api::new(30);
        let nics = api.get("/v1/nics").await;
        let names: Vec<&str> = nics
            .as_array()
            .expect("array")
            .iter()
            .map(|n| n["name"].as_str().expect("name"))
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(nics[0]["capacity_bps"], 1_000_000_000u64);
        assert_eq!(nics[0]["admin"], "up");
        assert_eq!(nics[0]["link"], "up");
        assert_eq!(nics[0]["transport"], "udp");
        assert_eq!(nics[1]["flows"], 10, "flows 3, 6, ... 30 are on b");
        let b = api.get("/v1/nics/b").await;
        assert_eq!(b, nics[1]);
        let r = api.call("GET", "/v1/nics/eth9", None).await;
        assert_eq!(r.code(404), "not_found");
        assert!(r.error()["message"].as_str().expect("msg").contains("eth9"));
    }

    #[tokio::test]
    async fn patch_nic_applies_and_names_bad_fields() {
        let api = Api::new(30);
        let r = api
            .call(
                "PATCH",
                "/v1/nics/b",
                Some(r#"{"capacity_bps": 250000000}"#),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json()["capacity_bps"], 250_000_000u64);
        assert_eq!(api.get("/v1/nics/b").await["capacity_bps"], 250_000_000u64);

        // Down drains: b's flows move to a.
        let r = api
            .call("PATCH", "/v1/nics/b", Some(r#"{"admin": "down"}"#))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json()["admin"], "down");
        assert_eq!(api.get("/v1/nics/b").await["flows"], 0);
        assert_eq!(api.get("/v1/nics/a").await["flows"], 30);

        for (body, field) in [
            (r#"{"capacity_bps": 0}"#, "capacity_bps"),
            (r#"{"capacity_bps": 999}"#, "capacity_bps"),
            (r#"{"capacity_bps": 10000000000001}"#, "capacity_bps"),
            (r#"{"capacity_bps": -5}"#, "capacity_bps"),
            (r#"{"capacity_bps": "1gbit"}"#, "capacity_bps"),
            (r#"{"admin": "sideways"}"#, "admin"),
            (r#"{"capacity": 5}"#, "capacity"),
            ("{}", "body"),
            ("[]", "body"),
            ("42", "body"),
        ] {
            let r = api.call("PATCH", "/v1/nics/a", Some(body)).await;
            assert_eq!(r.code(422), "invalid_field", "{body}");
            let e = r.error();
            assert_eq!(e["field"], field, "{body}: {e}");
            assert!(
                e["message"]
                    .as_str()
                    .expect("msg")
                    .starts_with(&format!("{field}: ")),
                "{body}: {e}"
            );
        }
        let r = api
            .call("PATCH", "/v1/nics/a", Some(r#"{"capacity_bps": 1"#))
            .await;
        assert_eq!(r.code(400), "malformed_json");

        let mut req = request("PATCH", "/v1/nics/a", Some(TOKEN), None);
        *req.body_mut() = Body::from(r#"{"admin":"down"}"#);
        req.headers_mut()
            .insert(header::CONTENT_TYPE, "text/plain".parse().expect("header"));
        assert_eq!(
            api.send_as(CLIENT, req).await.code(415),
            "unsupported_media_type"
        );

        let r = api
            .call("PATCH", "/v1/nics/eth9", Some(r#"{"admin": "up"}"#))
            .await;
        assert_eq!(r.code(404), "not_found");
    }

    #[tokio::test]
    async fn a_refused_nic_change_is_409_and_changes_nothing() {
        let api = Api::new(30);
        let r = api
            .call("PATCH", "/v1/nics/b", Some(r#"{"admin": "down"}"#))
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let before = api.get("/v1/nics").await;
        // a is the last NIC in use: the daemon refuses, capacity included (one change).
        let r = api
            .call(
                "PATCH",
                "/v1/nics/a",
                Some(r#"{"admin": "down", "capacity_bps": 5000}"#),
            )
            .await;
        assert_eq!(r.code(409), "refused");
        let msg = r.error()["message"].as_str().expect("msg").to_owned();
        assert!(msg.contains("last NIC in use"), "{msg}");
        assert!(msg.contains("the old state is in force"), "{msg}");
        assert_eq!(api.get("/v1/nics").await, before, "nothing changed");
    }

    #[tokio::test]
    async fn vnics_list_and_show() {
        let api = Api::new(0);
        let v = api.get("/v1/vnics").await;
        assert_eq!(v[0]["name"], "braid0");
        assert_eq!(v[0]["queues"].as_array().expect("queues").len(), 2);
        assert_eq!(
            v[0]["rss"]["indirection"].as_array().expect("table").len(),
            128
        );
        assert_eq!(v[0]["qos"][0]["strict"], true);
        assert_eq!(api.get("/v1/vnics/braid0").await, v[0]);
        assert_eq!(
            api.call("GET", "/v1/vnics/tun9", None).await.code(404),
            "not_found"
        );
    }

    #[tokio::test]
    async fn stats_have_rates_drops_and_percentiles() {
        let api = Api::new(40);
        let s = api.get("/v1/stats").await;
        assert_eq!(s["flows"], json!({"tx": 20, "rx": 20}));
        assert_eq!(s["drops"]["reassembly_timeout"], 2);
        assert_eq!(s["drops"]["auth_failed"], 0, "zeros included");
        assert_eq!(s["nics"][0]["rtt_percentiles"]["p99_us"], 260);
        assert_eq!(
            s["nics"][1]["rtt_percentiles"],
            json!({"samples": 100, "p50_us": 170, "p90_us": 210, "p99_us": 260,
                   "p999_us": 320, "max_us": 320})
        );
        assert_eq!(
            s["nics"][0]["delay_variation_percentiles"],
            json!({"samples": 100, "p50_us": 5, "p90_us": 20, "p99_us": 80,
                   "p999_us": 400, "max_us": 400})
        );
        assert_eq!(
            s["top_flows"][0],
            json!({"id": 40, "direction": "tx", "rate_bps": 40000})
        );
        assert_eq!(s["top_flows"][1]["direction"], "rx");
        assert_eq!(s["top_flows"].as_array().expect("top").len(), 20);
        assert_eq!(s["reorder"]["max_hold_us"], 4200);
        assert_eq!(
            (&s["reorder"]["held_now"], &s["reorder"]["held_bytes"]),
            (&json!(3), &json!(4200))
        );
        assert_eq!(
            s["reorder"]["hold_percentiles"],
            json!({"samples": 12, "p50_us": 300, "p90_us": 1200, "p99_us": 4200,
                   "p999_us": 4200, "max_us": 4200})
        );
        // The body round-trips through the schema's types.
        let typed: braid_control::schema::Stats =
            serde_json::from_value(s.clone()).expect("a Stats");
        assert_eq!(typed.reorder.hold_percentiles.map(|p| p.samples), Some(12));
    }

    /// `/metrics` has the latency histograms in the exposition format: every `_bucket` line
    /// of a series with a number `le`, increasing, cumulative counts, `+Inf` = `_count`.
    #[tokio::test]
    async fn metrics_have_latency_histograms() {
        let api = Api::new(10);
        let r = api.call("GET", "/metrics", None).await;
        assert_eq!(r.status, StatusCode::OK);
        for (name, series, count, sum) in [
            ("braid_nic_rtt_seconds", "{nic=\"a\",", 100, 0.01956),
            ("braid_nic_rtt_seconds", "{nic=\"b\",", 100, 0.01956),
            (
                "braid_nic_delay_variation_seconds",
                "{nic=\"a\",",
                100,
                0.00202,
            ),
            ("braid_reorder_hold_seconds", "{", 12, 0.0102),
        ] {
            assert!(
                r.text
                    .lines()
                    .any(|l| l == format!("# TYPE {name} histogram")),
                "{name}:\n{}",
                r.text
            );
            let prefix = format!("{name}_bucket{series}le=\"");
            let buckets: Vec<(f64, u64)> = r
                .text
                .lines()
                .filter_map(|l| l.strip_prefix(&prefix))
                .map(|rest| {
                    let (le, n) = rest.split_once("\"} ").expect("le\"} count");
                    let le = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().expect("le")
                    };
                    (le, n.parse().expect("count"))
                })
                .collect();
            assert_eq!(buckets.len(), 49, "{name}{series}: 48 edges and +Inf");
            assert!(
                buckets
                    .windows(2)
                    .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
            );
            assert_eq!(buckets[48], (f64::INFINITY, count));
            assert_eq!(buckets[0].0, 1.024e-6);
            let tail = series.trim_end_matches(',');
            let tail = if tail == "{" {
                String::new()
            } else {
                format!("{tail}}}")
            };
            let value = |suffix: &str| -> f64 {
                let head = format!("{name}_{suffix}{tail} ");
                r.text
                    .lines()
                    .find_map(|l| l.strip_prefix(&head))
                    .unwrap_or_else(|| panic!("no {head}"))
                    .parse()
                    .expect("a number")
            };
            assert_eq!(value("count"), count as f64);
            assert!((value("sum") - sum).abs() < 1e-9, "{name} sum");
        }
        // The edges around the fake's RTTs (170, 210, 260, 320 µs): 196.6 µs has the 50
        // samples at 170 µs, 262.1 µs 99 of the 100.
        assert!(
            r.text
                .lines()
                .any(|l| l == "braid_nic_rtt_seconds_bucket{nic=\"a\",le=\"0.000196608\"} 50")
        );
        assert!(
            r.text
                .lines()
                .any(|l| l == "braid_nic_rtt_seconds_bucket{nic=\"a\",le=\"0.000262144\"} 99")
        );
    }

    #[tokio::test]
    async fn metrics_are_prometheus_text_or_openmetrics() {
        let api = Api::new(10);
        let r = api.call("GET", "/metrics", None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            r.headers[header::CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        for line in [
            "braid_nic_tx_bytes_total{nic=\"a\"} 1400000",
            "braid_nic_capacity_bits_per_second{nic=\"b\"} 100000000",
            "braid_drops_total{reason=\"queue_full\"} 5",
            "braid_nic_link_state{nic=\"a\",state=\"up\"} 1",
            "braid_nic_rtt_seconds_bucket{nic=\"a\",le=\"0.000262144\"} 99",
            "braid_flows{direction=\"tx\"} 5",
        ] {
            assert!(
                r.text.lines().any(|l| l == line),
                "missing {line:?}:\n{}",
                r.text
            );
        }
        // Every sample line is `name{labels} value` with a numeric value.
        for l in r.text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = l.rsplit_once(' ').expect("name value");
            assert!(value.parse::<f64>().is_ok(), "{l}");
        }
        let mut req = request("GET", "/metrics", Some(TOKEN), None);
        req.headers_mut().insert(
            header::ACCEPT,
            "application/openmetrics-text; version=1.0.0"
                .parse()
                .expect("header"),
        );
        let r = api.send_as(CLIENT, req).await;
        assert!(
            r.headers[header::CONTENT_TYPE]
                .to_str()
                .expect("ascii")
                .starts_with("application/openmetrics-text")
        );
        assert!(r.text.ends_with("# EOF\n"));
    }

    #[tokio::test]
    async fn flows_filter_and_page() {
        let api = Api::new(2500);
        let page = api.get("/v1/flows").await;
        assert_eq!(
            page["flows"].as_array().expect("flows").len(),
            100,
            "default limit"
        );
        assert_eq!(page["flows"][0]["id"], 1);
        assert_eq!(page["next_cursor"], "f64");

        // Walk every TX UDP flow on NIC a to port 5008 (or from it), 7 per page.
        let mut path = "/v1/flows?direction=tx&nic=a&protocol=udp&port=5008&limit=7".to_owned();
        let mut ids = Vec::new();
        loop {
            let page = api.get(&path).await;
            let flows = page["flows"].as_array().expect("flows");
            assert!(flows.len() <= 7);
            for f in flows {
                assert_eq!(f["direction"], "tx");
                assert_eq!(f["protocol"], 17);
                assert_eq!(f["dst_port"], 5008);
                assert_eq!(f["nics"], json!(["a"]));
                ids.push(f["id"].as_u64().expect("id"));
            }
            match page["next_cursor"].as_str() {
                Some(c) => {
                    path = format!(
                        "/v1/flows?direction=tx&nic=a&protocol=udp&port=5008&limit=7&cursor={c}"
                    )
                }
                None => break,
            }
        }
        let want: Vec<u64> = (1..=2500u64)
            .filter(|i| i % 2 == 0 && i % 5 != 0 && i % 3 != 0 && 5000 + i % 100 == 5008)
            .collect();
        assert_eq!(ids, want);
        assert!(!want.is_empty());

        let one = api
            .get("/v1/flows?address=10.99.1.7&class=feed&limit=1000")
            .await;
        for f in one["flows"].as_array().expect("flows") {
            assert_eq!(f["dst"], "10.99.1.7");
            assert_eq!(f["class"], "feed");
        }
        let big = api.get("/v1/flows?limit=1000").await;
        assert_eq!(big["flows"].as_array().expect("flows").len(), 1000);

        for (q, field) in [
            ("limit=1001", "limit"),
            ("limit=0", "limit"),
            ("port=x", "port"),
            ("protocol=gre", "protocol"),
            ("address=host", "address"),
            ("cursor=abc", "cursor"),
            ("color=red", "color"),
            ("nic=a&nic=b", "nic"),
        ] {
            let r = api.call("GET", &format!("/v1/flows?{q}"), None).await;
            assert_eq!(r.code(422), "invalid_field", "{q}");
            assert_eq!(r.error()["field"], field, "{q}");
        }
    }

    #[tokio::test]
    async fn one_flow_and_its_errors() {
        let api = Api::new(10);
        let f = api.get("/v1/flows/4").await;
        assert_eq!(f["id"], 4);
        assert_eq!(f["direction"], "tx");
        assert_eq!(
            api.call("GET", "/v1/flows/11", None).await.code(404),
            "not_found"
        );
        let r = api.call("GET", "/v1/flows/four", None).await;
        assert_eq!(r.code(422), "invalid_field");
        assert_eq!(r.error()["field"], "id");
        assert_eq!(
            api.call("GET", "/v1/flows/18446744073709551616", None)
                .await
                .code(422),
            "invalid_field"
        );
    }

    #[tokio::test]
    async fn moving_a_flow_goes_through_admission() {
        let api = Api::new(30);
        let r = api
            .call("POST", "/v1/flows/4", Some(r#"{"nic": "b", "pin": true}"#))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let f = r.json();
        assert_eq!(f["nics"], json!(["b"]));
        assert_eq!(f["pinned"], true);
        assert_eq!(api.get("/v1/flows/4").await, f);

        // An RX flow cannot be placed; a NIC without room refuses; nothing changes.
        let before = api.get("/v1/flows/3").await;
        let r = api
            .call("POST", "/v1/flows/3", Some(r#"{"nic": "a"}"#))
            .await;
        assert_eq!(r.code(409), "refused");
        assert_eq!(api.get("/v1/flows/3").await, before);

        let r = api
            .call("PATCH", "/v1/nics/b", Some(r#"{"capacity_bps": 1000}"#))
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let before = api.get("/v1/flows/8").await;
        let r = api
            .call("POST", "/v1/flows/8", Some(r#"{"nic": "b"}"#))
            .await;
        assert_eq!(r.code(409), "refused");
        assert!(
            r.error()["message"]
                .as_str()
                .expect("msg")
                .contains("no room"),
            "{}",
            r.text
        );
        assert_eq!(
            api.get("/v1/flows/8").await,
            before,
            "the flow stays where it was"
        );

        for (body, field) in [
            (r#"{"nic": "zz"}"#, "nic"),
            (r#"{"nic": ""}"#, "nic"),
            (r#"{}"#, "body"),
            (r#"{"nic": "a", "hold": true}"#, "hold"),
            (r#"{"nic": "a", "pin": "yes"}"#, "pin"),
        ] {
            let r = api.call("POST", "/v1/flows/2", Some(body)).await;
            assert_eq!(r.code(422), "invalid_field", "{body}");
            assert_eq!(r.error()["field"], field, "{body}: {}", r.text);
        }
        assert_eq!(
            api.call("POST", "/v1/flows/99", Some(r#"{"nic": "a"}"#))
                .await
                .code(404),
            "not_found"
        );
    }

    fn policy_document() -> Value {
        json!({
            "rules": [
                {"name": "feed", "protocol": "udp", "dst_ports": "5000-5010", "policy": "duplicate",
                 "qos": "rt"},
                {"name": "mark", "direction": "tx", "dst": "10.99.1.0/24", "set_dscp": 46,
                 "when": {"loss_above_percent": 2.0, "links": ["a"], "hold_ms": 500}}
            ],
            "qos": {"classes": [{"name": "rt", "strict": true}, {"name": "bulk", "weight": 4}]},
            "tunnels": [{"name": "t0", "kind": "vxlan", "nic": "a", "local": "10.0.0.1",
                         "remote": "10.0.0.2", "vni": 42, "inner_dst_mac": "02:00:00:00:00:02"}],
            "policy": {"default": "pin"},
            "reorder": {"min_hold_ms": 2, "max_hold_ms": 40},
            "fragmentation": {"min_split_bytes": 3000, "max_split_links": 2},
            "reassembly": {"mem_cap_bytes": 1048576, "timeout_ms": 100}
        })
    }

    #[tokio::test]
    async fn policies_are_replaced_whole_and_read_back() {
        let api = Api::new(0);
        let empty = api.get("/v1/policies").await;
        assert_eq!(empty["rules"], json!([]));
        assert_eq!(empty["qos"], Value::Null);
        assert_eq!(empty["policy"], json!({"default": "stripe"}));
        assert_eq!(
            empty["reorder"],
            json!({"min_hold_ms": 5, "max_hold_ms": 25})
        );

        let doc = policy_document();
        let r = api
            .call("PUT", "/v1/policies", Some(&doc.to_string()))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let applied = r.json();
        assert_eq!(applied["rules"][0]["priority"], 100, "defaults filled in");
        assert_eq!(applied["qos"]["classes"][1]["queue_packets"], 8192);
        assert_eq!(api.get("/v1/policies").await, applied);
        assert_eq!(*api.fake.applied.lock().expect("lock"), 1);

        // Sections read as in the document.
        assert_eq!(api.get("/v1/policies/rules").await, applied["rules"]);
        assert_eq!(api.get("/v1/policies/qos").await, applied["qos"]);
        assert_eq!(api.get("/v1/policies/tunnels").await, applied["tunnels"]);
        assert_eq!(api.get("/v1/policies/policy").await, applied["policy"]);
        assert_eq!(api.get("/v1/policies/reorder").await, applied["reorder"]);
        assert_eq!(
            applied["fragmentation"],
            json!({"min_split_bytes": 3000, "min_split_gain_us": 2, "max_split_links": 2,
                   "split_within_mtu": false, "per_packet_overhead_bytes": 60,
                   "loss_penalty_ms": 10}),
            "defaults filled in"
        );
        assert_eq!(
            api.get("/v1/policies/fragmentation").await,
            applied["fragmentation"]
        );
        assert_eq!(
            applied["reassembly"],
            json!({"mem_cap_bytes": 1048576, "timeout_ms": 100, "max_fragments": 64,
                   "max_datagram_bytes": 65535})
        );
        assert_eq!(
            api.get("/v1/policies/reassembly").await,
            applied["reassembly"]
        );
    }

    #[tokio::test]
    async fn policy_errors_name_the_field() {
        let api = Api::new(0);
        let mut doc = policy_document();
        doc["rules"][0]["qos"] = json!("gold");
        let cases = [
            // The daemon's checks (field-named, as config.rs names them).
            (doc.to_string(), "rules[0].qos"),
            (
                json!({"reorder": {"min_hold_ms": 50, "max_hold_ms": 40}}).to_string(),
                "reorder.min_hold_ms",
            ),
            (
                json!({"tunnels": [{"name": "t", "kind": "gre", "nic": "eth7", "local": "10.0.0.1",
                                "remote": "10.0.0.2"}]})
                .to_string(),
                "tunnels[0].nic",
            ),
            // The schema's (serde), with the JSON path.
            (
                json!({"rules": [{"name": "x", "priority": "high"}]}).to_string(),
                "rules[0].priority",
            ),
            (
                json!({"rules": [{"name": "x", "drop": true, "prio": 1}]}).to_string(),
                "rules[0].prio",
            ),
            (
                json!({"qos": {"classes": [{"name": "x", "weight": -1}]}}).to_string(),
                "qos.classes[0].weight",
            ),
            (json!({"qos": {}}).to_string(), "qos"),
            (
                json!({"policy": {"default": "spray"}}).to_string(),
                "policy.default",
            ),
            (
                json!({"tunnels": [{"name": "t", "kind": "ipip"}]}).to_string(),
                "tunnels[0].kind",
            ),
            (json!({"classes": []}).to_string(), "classes"),
            (
                json!({"rules": [{"name": "x", "when": {"loss_above_percent": "1%"}}]}).to_string(),
                "rules[0].when.loss_above_percent",
            ),
            (
                json!({"reassembly": {"timeout_ms": 0}}).to_string(),
                "reassembly.timeout_ms",
            ),
            (
                json!({"reassembly": {"mem_cap_bytes": -1}}).to_string(),
                "reassembly.mem_cap_bytes",
            ),
            (
                json!({"reassembly": {"max_fragments": 70000}}).to_string(),
                "reassembly.max_fragments",
            ),
            (
                json!({"fragmentation": {"max_split_links": 0}}).to_string(),
                "fragmentation.max_split_links",
            ),
            (
                json!({"fragmentation": {"min_split": 1}}).to_string(),
                "fragmentation.min_split",
            ),
        ];
        for (body, field) in cases {
            let r = api.call("PUT", "/v1/policies", Some(&body)).await;
            assert_eq!(r.code(422), "invalid_field", "{body}");
            let e = r.error();
            assert_eq!(e["field"], field, "{body}: {e}");
            assert!(
                e["message"]
                    .as_str()
                    .expect("msg")
                    .starts_with(&format!("{field}: ")),
                "{e}"
            );
        }
        assert_eq!(
            *api.fake.applied.lock().expect("lock"),
            0,
            "nothing was applied"
        );
        assert_eq!(api.get("/v1/policies").await, api_default());
    }

    fn api_default() -> Value {
        serde_json::to_value(braid_control::PolicyDocument::default()).expect("json")
    }

    #[tokio::test]
    async fn a_refused_policy_change_is_409_and_the_old_policies_stay() {
        let api = Api::new(0);
        let r = api
            .call("PUT", "/v1/policies", Some(&policy_document().to_string()))
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let before = api.get("/v1/policies").await;

        let mut doc = policy_document();
        doc["tunnels"][0]["name"] = json!("unopenable");
        doc["reorder"]["max_hold_ms"] = json!(90);
        let r = api
            .call("PUT", "/v1/policies", Some(&doc.to_string()))
            .await;
        assert_eq!(r.code(409), "refused");
        let msg = r.error()["message"].as_str().expect("msg").to_owned();
        assert!(msg.contains("cannot open its port"), "{msg}");
        assert!(msg.contains("the old state is in force"), "{msg}");
        assert_eq!(
            api.get("/v1/policies").await,
            before,
            "old policies in force"
        );

        // The same through a section: the tunnels section is refused, nothing changes.
        let r = api
            .call(
                "PUT",
                "/v1/policies/tunnels",
                Some(&json!([doc["tunnels"][0]]).to_string()),
            )
            .await;
        assert_eq!(r.code(409), "refused");
        assert_eq!(api.get("/v1/policies").await, before);
        assert_eq!(*api.fake.applied.lock().expect("lock"), 1);
    }

    #[tokio::test]
    async fn sections_are_replaced_and_reset_one_at_a_time() {
        let api = Api::new(0);
        let r = api
            .call("PUT", "/v1/policies", Some(&policy_document().to_string()))
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let full = r.json();

        let r = api
            .call(
                "PUT",
                "/v1/policies/reorder",
                Some(r#"{"max_hold_ms": 60}"#),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(
            r.json(),
            json!({"min_hold_ms": 5, "max_hold_ms": 60}),
            "a section is whole"
        );
        let now = api.get("/v1/policies").await;
        assert_eq!(now["reorder"]["max_hold_ms"], 60);
        assert_eq!(now["rules"], full["rules"], "other sections untouched");
        assert_eq!(now["tunnels"], full["tunnels"]);

        let r = api.call("DELETE", "/v1/policies/rules", None).await;
        assert_eq!(r.json(), json!([]));
        let r = api.call("DELETE", "/v1/policies/qos", None).await;
        assert_eq!(r.json(), Value::Null);
        let r = api
            .call(
                "PUT",
                "/v1/policies/policy",
                Some(r#"{"default": "duplicate"}"#),
            )
            .await;
        assert_eq!(r.json(), json!({"default": "duplicate"}));
        let r = api.call("DELETE", "/v1/policies/policy", None).await;
        assert_eq!(r.json(), json!({"default": "stripe"}));
        let now = api.get("/v1/policies").await;
        assert_eq!(now["tunnels"], full["tunnels"]);
        assert_eq!(now["rules"], json!([]));

        // Section bodies: errors name the field as in the whole document.
        let r = api
            .call(
                "PUT",
                "/v1/policies/rules",
                Some(r#"[{"name": "a", "drop": true}, {"name": 5}]"#),
            )
            .await;
        assert_eq!(r.code(422), "invalid_field");
        assert_eq!(r.error()["field"], "rules[1].name");
        let r = api
            .call(
                "PUT",
                "/v1/policies/reorder",
                Some(r#"{"min_hold_ms": 99}"#),
            )
            .await;
        assert_eq!(r.code(422), "invalid_field");
        assert_eq!(r.error()["field"], "reorder.min_hold_ms", "from the daemon");
        let r = api
            .call(
                "PUT",
                "/v1/policies/reassembly",
                Some(r#"{"timeout_ms": 0}"#),
            )
            .await;
        assert_eq!(r.code(422), "invalid_field");
        assert_eq!(
            r.error()["field"],
            "reassembly.timeout_ms",
            "from the daemon"
        );
        let r = api
            .call(
                "PUT",
                "/v1/policies/fragmentation",
                Some(r#"{"min_split_bytes": "big"}"#),
            )
            .await;
        assert_eq!(r.code(422), "invalid_field");
        assert_eq!(r.error()["field"], "fragmentation.min_split_bytes");
        let r = api
            .call("PUT", "/v1/policies/qos", Some(r#"{"classes": 3}"#))
            .await;
        assert_eq!(r.error()["field"], "qos.classes");
        let r = api
            .call("PUT", "/v1/policies/rules", Some(r#"{"name": "a"}"#))
            .await;
        assert_eq!(r.error()["field"], "rules");
        assert_eq!(api.get("/v1/policies").await, now, "nothing changed");
    }

    #[tokio::test]
    async fn every_change_request_is_audited() {
        let api = Api::new(10);
        api.call("GET", "/v1/nics", None).await;
        api.call("PATCH", "/v1/nics/b", Some(r#"{"capacity_bps": 5000000}"#))
            .await;
        api.call("PATCH", "/v1/nics/b", Some(r#"{"capacity_bps": 0}"#))
            .await;
        api.call("POST", "/v1/flows/3", Some(r#"{"nic": "a"}"#))
            .await;
        api.call("PUT", "/v1/policies", Some(&policy_document().to_string()))
            .await;
        api.call("DELETE", "/v1/policies/tunnels", None).await;
        api.send_as(
            "192.0.2.9:1234",
            request("PUT", "/v1/policies", Some("nope"), Some("{}")),
        )
        .await;
        api.call("GET", "/v1/policies", None).await;

        let lines = api.audit();
        let summary: Vec<(String, String, u64, String)> = lines
            .iter()
            .map(|l| {
                (
                    l["method"].as_str().expect("method").to_owned(),
                    l["path"].as_str().expect("path").to_owned(),
                    l["status"].as_u64().expect("status"),
                    l["outcome"].as_str().expect("outcome").to_owned(),
                )
            })
            .collect();
        let s = |m: &str, p: &str, st: u64, o: &str| (m.into(), p.into(), st, o.into());
        assert_eq!(
            summary,
            [
                s("PATCH", "/v1/nics/b", 200, "applied"),
                s("PATCH", "/v1/nics/b", 422, "invalid"),
                s("POST", "/v1/flows/3", 409, "refused"),
                s("PUT", "/v1/policies", 200, "applied"),
                s("DELETE", "/v1/policies/tunnels", 200, "applied"),
                s("PUT", "/v1/policies", 401, "unauthenticated"),
            ],
            "GETs are not audited"
        );
        let fp = &lines[0]["token"];
        assert_eq!(fp.as_str().expect("fingerprint").len(), 8);
        assert!(
            !lines.iter().any(|l| l.to_string().contains(TOKEN)),
            "never the token"
        );
        assert_eq!(lines[0]["client"], CLIENT);
        assert_eq!(lines[0]["change"], "nic b: capacity_bps 5000000");
        assert_eq!(lines[1]["change"], "nic b: capacity_bps 0");
        assert_eq!(lines[2]["change"], "flow 3: move to nic \"a\"");
        assert_eq!(
            lines[3]["change"],
            "policies: replace; changed: rules (0 → 2 entries), qos (default → 2 classes), tunnels \
             (0 → 1 entries), policy, reorder, fragmentation, reassembly"
        );
        assert_eq!(
            lines[4]["change"],
            "policies: reset tunnels; changed: tunnels (1 → 0 entries)"
        );
        assert_eq!(lines[5]["token"], Value::Null);
        assert_eq!(lines[5]["client"], "192.0.2.9:1234");
        let time = lines[0]["time"].as_str().expect("time");
        assert!(
            time.len() == 24 && time.ends_with('Z') && time.starts_with("20"),
            "{time}"
        );
    }

    #[tokio::test]
    async fn server_errors_reveal_nothing_and_panics_do_not_crash() {
        let api = Api::new(10);
        api.fake.fail(Some(Failure::Error(DaemonError::Internal {
            detail: "secret: /etc/braid/key.hex unreadable".into(),
        })));
        let r = api.call("GET", "/v1/stats", None).await;
        assert_eq!(r.code(500), "internal");
        assert!(
            !r.text.contains("secret") && !r.text.contains("key.hex"),
            "{}",
            r.text
        );

        api.fake.fail(Some(Failure::Error(DaemonError::Unavailable {
            detail: "worker 1 did not answer".into(),
        })));
        let r = api.call("PUT", "/v1/policies", Some("{}")).await;
        assert_eq!(r.code(503), "unavailable");
        assert_eq!(r.headers[header::RETRY_AFTER], "1");
        assert!(!r.text.contains("worker"));

        api.fake.fail(Some(Failure::Panic));
        let r = api.call("GET", "/v1/nics", None).await;
        assert_eq!(r.code(500), "internal");
        let r = api.call("GET", "/metrics", None).await;
        assert_eq!(r.code(500), "internal");

        api.fake.fail(None);
        assert_eq!(
            api.get("/v1/nics").await.as_array().expect("nics").len(),
            2,
            "still serving"
        );
        let audit = api.audit();
        assert_eq!(audit.last().expect("the PUT")["outcome"], "error");
    }

    #[tokio::test]
    async fn bodies_are_capped() {
        let api = Api::new(0);
        let big = format!(
            "{{\"rules\": [{}]}}",
            vec!["{\"name\":\"x\"}"; 100_000].join(",")
        );
        assert!(big.len() > braid_control::error::MAX_BODY_BYTES);
        // No Content-Length (as a stream): the cap holds while reading.
        let r = api.call("PUT", "/v1/policies", Some(&big)).await;
        assert_eq!(r.code(413), "body_too_large");
        // A declared length above the cap is refused before reading.
        let mut req = request("PUT", "/v1/policies", Some(TOKEN), Some("{}"));
        req.headers_mut()
            .insert(header::CONTENT_LENGTH, "10000000".parse().expect("header"));
        assert_eq!(api.send_as(CLIENT, req).await.code(413), "body_too_large");
    }

    #[tokio::test]
    async fn the_openapi_document_matches_the_code_and_docs() {
        let api = Api::new(0);
        let served = api.get("/v1/openapi.json").await;
        let code = serde_json::to_value(braid_control::openapi()).expect("json");
        assert_eq!(served, code);
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let file = std::fs::read_to_string(path).unwrap_or_default();
        let checked_in: Value = serde_json::from_str(&file).unwrap_or(Value::Null);
        assert!(
            checked_in == code,
            "docs/openapi.json and the code disagree: regenerate it with \
         `cargo run -p braid-control --example openapi -- --write` (bump API_VERSION in \
         crates/braid-control/src/schema/mod.rs first if the API changed)"
        );
        assert_eq!(
            code["info"]["version"],
            braid_control::API_VERSION.to_string()
        );
        // Every endpoint the router serves is in the document, with its method.
        for (method, path, _) in ENDPOINTS {
            let template = path
                .replace("/nics/a", "/nics/{name}")
                .replace("/vnics/braid0", "/vnics/{name}")
                .replace("/flows/2", "/flows/{id}");
            let op = &code["paths"][&template][method.to_lowercase()];
            assert!(
                op.is_object(),
                "{method} {template} missing from the document"
            );
            if *method != "GET" || template != "/healthz" {
                assert!(
                    op["responses"]["401"].is_object(),
                    "{method} {template}: 401"
                );
            }
        }
        assert_eq!(
            code["paths"]["/healthz"]["get"]["security"],
            json!([{}]),
            "public"
        );
        assert_eq!(code["security"], json!([{"bearer": []}]));
    }

    /// A real server on 127.0.0.1, port 0: connection info reaches the guard, and a plain
    /// HTTP/1.1 client gets answers.
    #[tokio::test]
    async fn a_real_server_on_port_zero() {
        let mut api = Api::new(5);
        api.config.listen = "127.0.0.1:0".parse().expect("addr");
        let listener = braid_control::bind(&api.config).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(braid_control::serve(
            listener,
            api.router.clone(),
            async move {
                let _ = stopped.await;
            },
        ));

        let health = http(
            addr,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(health.starts_with("HTTP/1.1 200 OK\r\n"), "{health}");
        assert!(
            health.ends_with(&format!(
                r#"{{"status":"ok","api_version":{}}}"#,
                braid_control::API_VERSION
            )),
            "{health}"
        );

        let body = r#"{"admin":"down"}"#;
        let patch = http(
        addr,
        &format!(
            "PATCH /v1/nics/b HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
        assert!(patch.starts_with("HTTP/1.1 200 OK\r\n"), "{patch}");
        assert!(patch.contains(r#""admin":"down""#), "{patch}");

        let denied = http(
            addr,
            "GET /v1/nics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(
            denied.starts_with("HTTP/1.1 401 Unauthorized\r\n"),
            "{denied}"
        );

        let audit = api.audit();
        assert_eq!(audit.len(), 1);
        let client = audit[0]["client"].as_str().expect("client");
        assert!(
            client.starts_with("127.0.0.1:") && client != "127.0.0.1:0",
            "{client}"
        );

        stop.send(()).expect("server running");
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("stops")
            .expect("joins")
            .expect("serves without error");
    }

    /// One HTTP/1.1 exchange over a fresh connection; the whole response as text.
    async fn http(addr: std::net::SocketAddr, request: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(request.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
            .await
            .expect("answers in time")
            .expect("read");
        String::from_utf8(out).expect("UTF-8")
    }

    /// Bad input of any shape never gives a 5xx: random JSON bodies on every endpoint that takes
    /// one, random query strings on the flow table, random path segments.
    #[test]
    fn random_input_never_gives_a_server_error() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let api = Api::with(50, |c| c.auth_failure_burst = 1_000_000);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "[a-z_]{0,12}".prop_map(Value::from),
            prop::sample::select(vec![
                "rules",
                "qos",
                "tunnels",
                "policy",
                "reorder",
                "name",
                "classes",
                "stripe",
                "pin",
                "vxlan",
                "udp",
                "a",
                "b",
                "down",
                "up",
                "nic",
                "admin",
                "capacity_bps",
                "min_hold_ms",
                "max_hold_ms",
                "default",
                "drop",
                "when",
                "priority",
                "10.0.0.1",
                "5000-5010",
            ])
            .prop_map(Value::from),
        ];
        let key = prop::sample::select(vec![
            "rules",
            "qos",
            "tunnels",
            "policy",
            "reorder",
            "name",
            "classes",
            "default",
            "kind",
            "nic",
            "local",
            "remote",
            "vni",
            "admin",
            "capacity_bps",
            "pin",
            "min_hold_ms",
            "max_hold_ms",
            "drop",
            "priority",
            "when",
            "strict",
            "weight",
            "meter",
            "type",
            "cir",
            "cbs_bytes",
            "x",
        ]);
        let value = leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::btree_map(key.clone(), inner, 0..6).prop_map(|m| {
                    Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                }),
            ]
        });
        let targets = prop::sample::select(vec![
            ("PUT", "/v1/policies"),
            ("PUT", "/v1/policies/rules"),
            ("PUT", "/v1/policies/qos"),
            ("PUT", "/v1/policies/tunnels"),
            ("PUT", "/v1/policies/policy"),
            ("PUT", "/v1/policies/reorder"),
            ("PUT", "/v1/policies/fragmentation"),
            ("PUT", "/v1/policies/reassembly"),
            ("PATCH", "/v1/nics/a"),
            ("POST", "/v1/flows/2"),
        ]);
        let mut runner = TestRunner::new(Config {
            cases: 512,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&(targets, value), |((method, path), body)| {
                let r = rt.block_on(api.call(method, path, Some(&body.to_string())));
                prop_assert!(
                    r.status.as_u16() < 500,
                    "{method} {path} {body}: {}",
                    r.text
                );
                if !r.status.is_success() {
                    r.error();
                }
                Ok(())
            })
            .expect("no 5xx for any body");

        let query = "[a-z_=&%0-9.:]{0,40}";
        let segment = "[a-zA-Z0-9%._~-]{1,24}";
        runner
            .run(&(query, segment), |(q, seg)| {
                for path in [
                    format!("/v1/flows?{q}"),
                    format!("/v1/flows/{seg}"),
                    format!("/v1/nics/{seg}"),
                    format!("/v1/vnics/{seg}"),
                ] {
                    let Ok(uri) = path.parse::<axum::http::Uri>() else {
                        continue;
                    };
                    let req = Request::builder()
                        .uri(uri)
                        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                        .body(Body::empty())
                        .expect("request");
                    let r = rt.block_on(api.send_as(CLIENT, req));
                    prop_assert!(r.status.as_u16() < 500, "{path}: {}", r.text);
                    if !r.status.is_success() {
                        r.error();
                    }
                }
                Ok(())
            })
            .expect("no 5xx for any query or path");
    }
}
