//! Monitoring: Prometheus (deploy/prometheus) scrapes every service of the compose stack and
//! loads the alert rules; Grafana (deploy/grafana) is provisioned with the datasources and
//! dashboards compose mounts, and the dashboards pick their datasource from a variable; every
//! query of both uses metrics that exist ([`promql`]); every alert is scoped to the platform's
//! jobs and links its runbook section ([`rules`]).

pub mod promql;
pub mod rules;

use std::collections::BTreeSet;

use serde_json::Value;

use crate::common::{files_with, items, read, s, strs, yaml};
use crate::compose::{compose, compose_loaded, compose_mounts};
use promql::{check_expr, known_metrics};

#[test]
fn prometheus_scrapes_every_service_and_loads_the_alerts() {
    let c = compose();
    let prom = yaml("deploy/prometheus/prometheus.yml");
    let mut targets = BTreeSet::new();
    for job in items(&prom["scrape_configs"]) {
        assert!(
            job["metrics_path"].is_null() || s(&job["metrics_path"]) == "/metrics",
            "services serve /metrics"
        );
        for sc in items(&job["static_configs"]) {
            targets.extend(strs(&sc["targets"]));
        }
    }
    for t in &targets {
        let host = t.split(':').next().unwrap_or_default();
        assert!(
            host == "localhost" || c["services"][host].is_object(),
            "prometheus scrapes {t}, which is not a compose service"
        );
    }
    for (container, l) in compose_loaded(&c) {
        if container.command.iter().any(|a| a == "seed-catalog") {
            continue;
        }
        let want = format!("{}:{}", container.at.0, l.ops_port());
        assert!(targets.contains(&want), "prometheus does not scrape {want}");
    }

    let mounts = compose_mounts(&c["services"]["prometheus"]);
    for rule_file in strs(&prom["rule_files"]) {
        let (source, _) = mounts
            .iter()
            .find(|(_, target)| *target == rule_file)
            .unwrap_or_else(|| panic!("prometheus loads {rule_file}, which is not mounted"));
        assert_eq!(source, "./deploy/prometheus/alerts.yml");
    }
    assert!(
        strs(&prom["rule_files"]).len() == 1,
        "prometheus loads the alert rules"
    );
}

#[test]
fn alert_rules_use_metrics_that_exist() {
    let known = known_metrics();
    let alerts = yaml("deploy/prometheus/alerts.yml");
    let mut names = BTreeSet::new();
    for group in items(&alerts["groups"]) {
        assert!(group["name"].is_string(), "every group has a name");
        for rule in items(&group["rules"]) {
            let name = s(&rule["alert"]);
            assert!(!name.is_empty(), "only alerting rules: {rule}");
            assert!(names.insert(name.clone()), "alert {name} defined twice");
            let severity = s(&rule["labels"]["severity"]);
            assert!(
                ["critical", "warning"].contains(&severity.as_str()),
                "{name}: severity critical or warning, got {severity:?}"
            );
            assert!(
                rule["annotations"]["summary"].is_string(),
                "{name} has a summary"
            );
            check_expr(&s(&rule["expr"]), &known, &name);
        }
    }
    for required in [
        "CartServiceDown",
        "CartJetStreamStreamFilling",
        "CartJetStreamStreamFull",
        "CartJetStreamConsumerPendingGrowing",
        "CartNoAggregateOwnsShards",
        "CartCommandErrorRatioHigh",
        "CartVersionConflictRateHigh",
        "CartAppendLatencyHigh",
        "CartProjectionLagHigh",
        "CartProjectionDeadLetters",
        "CartRunnerDeadLetters",
        "CartCheckoutFailureRatioHigh",
        "CartProviderErrorRatioHigh",
        "CartRunnerInFlightStuck",
        "CartGateway5xxRatioHigh",
    ] {
        assert!(names.contains(required), "alerts.yml has no {required}");
    }
}

/// The dashboards' datasource variable: `${datasource}` in every panel and query.
const DATASOURCE_VAR: &str = "${datasource}";

/// A dashboard picks its Prometheus from a `datasource` template variable: every datasource
/// it names is `${datasource}` (an imported dashboard works with whatever uid the Prometheus
/// datasource of that Grafana has), and the variable lists Prometheus datasources.
fn check_dashboard_datasources(dash: &Value, what: &str) {
    let (mut exprs, mut uids) = (Vec::new(), BTreeSet::new());
    walk_dashboard(dash, &mut exprs, &mut uids);
    for uid in &uids {
        assert_eq!(
            uid, DATASOURCE_VAR,
            "{what}: a hard-coded datasource uid {uid:?}; use {DATASOURCE_VAR}"
        );
    }
    let var = items(&dash["templating"]["list"])
        .find(|v| v["name"] == "datasource")
        .unwrap_or_else(|| panic!("{what}: no templating variable `datasource`"));
    assert_eq!(s(&var["type"]), "datasource", "{what}: {var}");
    assert_eq!(s(&var["query"]), "prometheus", "{what}: {var}");
}

/// Every `expr` in a dashboard, and every datasource uid it refers to.
fn walk_dashboard<'a>(v: &'a Value, exprs: &mut Vec<&'a str>, uids: &mut BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                match (k.as_str(), child) {
                    ("expr", Value::String(e)) => exprs.push(e),
                    ("datasource", ds) if ds["uid"].is_string() => {
                        uids.insert(s(&ds["uid"]));
                    }
                    _ => walk_dashboard(child, exprs, uids),
                }
            }
        }
        Value::Array(list) => list.iter().for_each(|c| walk_dashboard(c, exprs, uids)),
        _ => {}
    }
}

#[test]
fn grafana_is_provisioned_and_dashboards_use_metrics_that_exist() {
    let c = compose();
    let known = known_metrics();

    let datasources = yaml("deploy/grafana/provisioning/datasources/datasources.yml");
    let mut provisioned = BTreeSet::new();
    for ds in items(&datasources["datasources"]) {
        provisioned.insert(s(&ds["type"]));
        let url = s(&ds["url"]);
        let host = url
            .strip_prefix("http://")
            .and_then(|r| r.split(':').next())
            .unwrap_or_default();
        assert!(
            c["services"][host].is_object(),
            "datasource {url} is not a compose service"
        );
    }

    // The dashboard provider reads the directory compose mounts the dashboards into.
    let providers = yaml("deploy/grafana/provisioning/dashboards/dashboards.yml");
    let mounts = compose_mounts(&c["services"]["grafana"]);
    for p in items(&providers["providers"]) {
        let path = s(&p["options"]["path"]);
        assert!(
            mounts
                .iter()
                .any(|(src, target)| *target == path && src == "./deploy/grafana/dashboards"),
            "grafana reads dashboards from {path}, where deploy/grafana/dashboards is not mounted"
        );
    }
    assert!(
        mounts
            .iter()
            .any(|(src, target)| src == "./deploy/grafana/provisioning"
                && target == "/etc/grafana/provisioning"),
        "grafana mounts the provisioning directory"
    );

    let mut titles = BTreeSet::new();
    for path in files_with("deploy/grafana/dashboards", &["json"]) {
        let dash: Value = serde_json::from_str(&read(&path)).unwrap();
        let what = path.display().to_string();
        assert!(dash["uid"].is_string(), "{what} has a fixed uid");
        titles.insert(s(&dash["title"]));
        let (mut exprs, mut uids) = (Vec::new(), BTreeSet::new());
        walk_dashboard(&dash, &mut exprs, &mut uids);
        assert!(exprs.len() >= 10, "{what}: only {} queries", exprs.len());
        for expr in exprs {
            check_expr(expr, &known, &what);
        }
        assert!(!uids.is_empty(), "{what}: no panel names its datasource");
        check_dashboard_datasources(&dash, &what);
    }
    assert!(
        provisioned.contains("prometheus"),
        "a Prometheus datasource is provisioned (what the dashboards' variable lists)"
    );
    assert!(
        titles.contains("Cart platform overview"),
        "dashboards: {titles:?}"
    );
}

#[test]
#[should_panic(expected = "a hard-coded datasource uid")]
fn a_dashboard_with_a_hard_coded_datasource_is_rejected() {
    let path = files_with("deploy/grafana/dashboards", &["json"]).remove(0);
    let mut dash: Value = serde_json::from_str(&read(&path)).unwrap();
    dash["panels"][1]["datasource"]["uid"] = "prometheus".into();
    check_dashboard_datasources(&dash, "hard-coded");
}
