//! The Grafana dashboard and the Prometheus alerts shipped in `examples/` against what the
//! running service exports: every metric they name exists in `/metrics`, and the dashboard
//! has a panel for every metric exported.

use std::collections::BTreeSet;

use crate::support::harness::{Extra, Harness};

fn example(name: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name),
    )
    .unwrap()
}

/// Metric names used in a PromQL expression (series suffixes of histograms removed).
fn names_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("finaz_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        out.push(base.to_string());
        rest = &tail[end..];
    }
    out
}

#[tokio::test]
async fn dashboards_and_alerts_name_only_exported_metrics_and_cover_them_all() {
    let h = Harness::start(Extra::default()).await;
    // What Prometheus scrapes: OpenMetrics text, announced as such, complete.
    let scrape = crate::support::get(format!("{}/metrics", h.admin))
        .await
        .unwrap();
    let kind = scrape.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        kind.starts_with("application/openmetrics-text; version=1.0.0"),
        "{kind}"
    );
    assert!(scrape.text().await.unwrap().ends_with("# EOF\n"));
    let exported: BTreeSet<String> = h
        .metrics()
        .await
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        // OpenMetrics names a counter's family without the `_total` its samples (and every
        // Prometheus query) carry.
        .map(|(name, kind)| match kind {
            "counter" => format!("{name}_total"),
            _ => name.to_string(),
        })
        .collect();
    assert!(exported.len() > 30, "{exported:?}");
    h.stop().await;

    let dashboard: serde_json::Value =
        serde_json::from_str(&example("grafana-dashboard.json")).unwrap();
    let mut charted = BTreeSet::new();
    for p in dashboard["panels"].as_array().unwrap() {
        assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()));
        for t in p["targets"].as_array().unwrap() {
            charted.extend(names_in(t["expr"].as_str().unwrap()));
        }
    }
    let unknown: Vec<_> = charted.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard names metrics nobody exports: {unknown:?}"
    );
    let missing: Vec<_> = exported.difference(&charted).collect();
    assert!(
        missing.is_empty(),
        "exported metrics without a panel: {missing:?}"
    );

    let alerts: serde_json::Value =
        serde_norway::from_str(&example("prometheus-alerts.yml")).unwrap();
    let rules = alerts["groups"][0]["rules"].as_array().unwrap();
    let mut named = BTreeSet::new();
    let mut alert_names = BTreeSet::new();
    for r in rules {
        alert_names.insert(r["alert"].as_str().unwrap().to_string());
        assert!(r["annotations"]["summary"].as_str().is_some(), "{r}");
        named.extend(names_in(r["expr"].as_str().unwrap()));
    }
    let unknown: Vec<_> = named.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "alerts on metrics nobody exports: {unknown:?}"
    );
    for wanted in [
        "FinazEventSocketDown",
        "FinazWebhooksDead",
        "FinazWebhookPendingTooLong",
        "FinazClick2CallServerErrors",
        "FinazNotReady",
    ] {
        assert!(alert_names.contains(wanted), "{wanted} missing");
    }
    let down = rules
        .iter()
        .find(|r| r["alert"] == "FinazEventSocketDown")
        .unwrap();
    assert_eq!(down["for"], "1m");
}
