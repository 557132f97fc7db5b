//! The monitoring examples in `examples/monitoring/` against the metrics braid really serves:
//! every metric and label the Grafana dashboard queries, and the path and port the Prometheus
//! scrape config uses, must exist. A renamed metric fails here, not in someone's Grafana.

mod support;

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::support::Api;

    const GRAFANA: &str = include_str!("../../../examples/monitoring/grafana-dashboard.json");
    const PROMETHEUS: &str = include_str!("../../../examples/monitoring/prometheus.yml");

    /// Sample name → the label names its samples carry, from a `/metrics` body.
    fn families(text: &str) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, _) = line.rsplit_once(' ').expect("name value");
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            let keys = out.entry(name.to_owned()).or_default();
            for pair in labels
                .trim_end_matches('}')
                .split(',')
                .filter(|p| !p.is_empty())
            {
                let (k, _) = pair.split_once('=').expect("label=value");
                keys.insert(k.to_owned());
            }
        }
        out
    }

    /// Every `braid_*` selector in a PromQL expression: the metric and the label names its
    /// `{...}` matches on.
    fn selectors(expr: &str) -> Vec<(String, Vec<String>)> {
        let mut out = Vec::new();
        let mut rest = expr;
        while let Some(at) = rest.find("braid_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            let mut labels = Vec::new();
            let after = &tail[end..];
            if let Some(body) = after.strip_prefix('{') {
                let close = body.find('}').expect("a closed selector");
                for m in body[..close].split(',') {
                    let key = m.split(['=', '!', '~']).next().expect("a label").trim();
                    labels.push(key.to_owned());
                }
            }
            out.push((name.to_owned(), labels));
            rest = after;
        }
        out
    }

    fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr" | "definition", serde_json::Value::String(s)) => {
                            out.push(s.clone());
                        }
                        _ => exprs(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
            _ => {}
        }
    }

    #[tokio::test]
    async fn the_grafana_dashboard_queries_only_metrics_braid_serves() {
        let api = Api::new(10);
        let r = api.call("GET", "/metrics", None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let families = families(&r.text);
        let dashboard: serde_json::Value = serde_json::from_str(GRAFANA).expect("valid JSON");
        let mut all = Vec::new();
        exprs(&dashboard, &mut all);
        assert!(all.len() >= 12, "the dashboard's queries: {all:?}");
        let mut checked = 0;
        for expr in &all {
            for (name, labels) in selectors(expr) {
                let Some(keys) = families.get(&name) else {
                    panic!(
                        "{expr:?} queries {name}, which /metrics does not serve:\n{}",
                        r.text
                    );
                };
                for label in labels
                    .iter()
                    .filter(|l| !matches!(l.as_str(), "job" | "instance"))
                {
                    assert!(
                        keys.contains(label),
                        "{expr:?} matches {name} on label {label:?}; its labels are {keys:?}"
                    );
                }
                checked += 1;
            }
        }
        assert!(checked >= 15, "only {checked} selectors found");
        // Every panel has a data source input the import asks for, and a unique id.
        let panels = dashboard["panels"].as_array().expect("panels");
        let ids: BTreeSet<_> = panels.iter().map(|p| p["id"].as_u64()).collect();
        assert_eq!(ids.len(), panels.len(), "panel ids are unique");
        assert!(
            panels
                .iter()
                .all(|p| p["datasource"]["uid"] == "${DS_PROMETHEUS}"),
            "every panel uses the imported data source"
        );
    }

    #[test]
    fn the_selector_parser_finds_metrics_and_labels() {
        assert_eq!(
            selectors(r#"sum by (reason) (rate(braid_drops_total{job="$job",reason!="x"}[1m]))"#),
            [(
                "braid_drops_total".to_owned(),
                vec!["job".to_owned(), "reason".to_owned()]
            )]
        );
        assert_eq!(
            selectors("braid_a / braid_b{nic=~\"l.*\"}"),
            [
                ("braid_a".to_owned(), vec![]),
                ("braid_b".to_owned(), vec!["nic".to_owned()])
            ]
        );
    }

    #[tokio::test]
    async fn the_prometheus_config_scrapes_the_default_api_with_the_token() {
        let api = Api::new(1);
        // The path it scrapes is one braid serves (with the token: 200, without: 401).
        assert!(
            PROMETHEUS.contains("metrics_path: /metrics\n"),
            "{PROMETHEUS}"
        );
        assert_eq!(api.call("GET", "/metrics", None).await.status, 200);
        // The default listening address of the `[api]` section.
        let default = braid_control::ControlConfig::new("t".into(), "a".into()).listen;
        assert!(
            PROMETHEUS.contains(&format!("targets: [\"{default}\"]")),
            "the example scrapes {default}: {PROMETHEUS}"
        );
        assert!(
            PROMETHEUS.contains("type: Bearer\n") && PROMETHEUS.contains("credentials_file: "),
            "the example sends the bearer token from a file"
        );
    }
}
