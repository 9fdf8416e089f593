//! The alert rules as operators meet them: every alert is scoped to the platform's scrape jobs
//! (`job=~"cart-.*"`, the names both scrape configs give the services' jobs), so a shared
//! Prometheus never pages the platform's on-call for another team's targets; and every alert
//! links a section of docs/runbook.md that exists.

use std::collections::BTreeSet;

use serde_json::Value;

use super::promql::selectors;
use crate::common::{items, read, root, s, strs, yaml};
use crate::k8s::k8s_docs;

/// The job regex every alert selects.
pub const PLATFORM_JOBS: &str = "cart-.*";

/// The runbook the alerts link to, relative to the repository.
const RUNBOOK: &str = "docs/runbook.md";

/// Every alerting rule of alerts.yml.
fn rules(alerts: &Value) -> Vec<&Value> {
    items(&alerts["groups"])
        .flat_map(|g| items(&g["rules"]))
        .collect()
}

/// Panics unless every metric selector of `expr` has a `job` matcher for the platform's jobs.
pub fn check_scoped(expr: &str, what: &str) {
    let parsed = selectors(expr).unwrap_or_else(|e| panic!("{what}: `{expr}` is not PromQL: {e}"));
    assert!(!parsed.is_empty(), "{what}: `{expr}` selects nothing");
    for sel in parsed {
        let scoped = sel.matchers.iter().any(|(label, op, value)| {
            label == "job"
                && ((op == "=~" && value == PLATFORM_JOBS)
                    || (op == "=" && value.starts_with("cart-")))
        });
        assert!(
            scoped,
            "{what}: {} is not scoped to the platform's jobs (add job=~\"{PLATFORM_JOBS}\"): \
             it would also fire for any other job's series",
            sel.metric
        );
    }
}

/// The anchors GitHub gives the headings of a Markdown file: lower case, punctuation other
/// than `-` and `_` dropped, spaces as `-`.
pub fn heading_anchors(markdown: &str) -> BTreeSet<String> {
    let mut in_code = false;
    let mut anchors = BTreeSet::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code || !line.starts_with('#') {
            continue;
        }
        let text = line.trim_start_matches('#').trim();
        let anchor: String = text
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        anchors.insert(anchor);
    }
    anchors
}

/// Panics unless `url` is `docs/runbook.md#<anchor>` with a heading for the anchor.
pub fn check_runbook_url(url: &str, anchors: &BTreeSet<String>, what: &str) {
    let anchor = url
        .strip_prefix(&format!("{RUNBOOK}#"))
        .unwrap_or_else(|| panic!("{what}: runbook_url {url:?} does not point into {RUNBOOK}#"));
    assert!(
        anchors.contains(anchor),
        "{what}: {RUNBOOK} has no heading for #{anchor} (headings: {anchors:?})"
    );
}

#[test]
fn every_alert_is_scoped_to_the_platforms_jobs_and_links_its_runbook_section() {
    let alerts = yaml("deploy/prometheus/alerts.yml");
    let anchors = heading_anchors(&read(&root().join(RUNBOOK)));
    let mut linked = BTreeSet::new();
    let rules = rules(&alerts);
    assert!(rules.len() >= 25, "only {} alerts", rules.len());
    for rule in rules {
        let name = s(&rule["alert"]);
        check_scoped(&s(&rule["expr"]), &name);
        let url = s(&rule["annotations"]["runbook_url"]);
        check_runbook_url(&url, &anchors, &name);
        assert!(
            linked.insert(url.clone()),
            "{name}: {url} is another alert's section"
        );
    }
}

#[test]
fn both_scrape_configs_name_the_platforms_jobs_cart() {
    let is_platform = |job: &str| job.starts_with("cart-");
    // Compose: one job per service, each cart-<service>; Prometheus's own job is not one.
    let prom = yaml("deploy/prometheus/prometheus.yml");
    let mut services = 0;
    for job in items(&prom["scrape_configs"]) {
        let name = s(&job["job_name"]);
        let targets: Vec<String> = items(&job["static_configs"])
            .flat_map(|sc| strs(&sc["targets"]))
            .collect();
        let own = targets.iter().all(|t| t.starts_with("localhost:"));
        assert_eq!(
            is_platform(&name),
            !own,
            "prometheus.yml job {name} ({targets:?}): the services' jobs are cart-<service>, \
             and only they"
        );
        services += usize::from(!own);
    }
    assert!(services >= 4, "the four services are scraped");

    // Kubernetes: every annotated pod's job becomes cart-<app.kubernetes.io/name>.
    let k8s = yaml("deploy/prometheus/kubernetes.yml");
    let jobs: Vec<&Value> = items(&k8s["scrape_configs"]).collect();
    assert_eq!(jobs.len(), 1, "one job for the platform's pods");
    // A relabel rule of the job on the one `source` label with `fields` set as given.
    let relabels = |source: &str, fields: &[(&str, &str)]| {
        items(&jobs[0]["relabel_configs"]).any(|r| {
            strs(&r["source_labels"]) == [source] && fields.iter().all(|(k, v)| s(&r[*k]) == *v)
        })
    };
    assert!(
        relabels(
            "__meta_kubernetes_pod_annotation_prometheus_io_scrape",
            &[("action", "keep"), ("regex", "true")]
        ),
        "kubernetes.yml keeps the pods annotated prometheus.io/scrape: \"true\""
    );
    assert!(
        relabels(
            "__meta_kubernetes_pod_label_app_kubernetes_io_name",
            &[("target_label", "job"), ("replacement", "cart-$1")]
        ),
        "kubernetes.yml names the job cart-<app.kubernetes.io/name>"
    );
    let docs = k8s_docs();
    let mut annotated = 0;
    for doc in docs.iter().filter(|d| d.is_workload()) {
        let meta = &doc.v["spec"]["template"]["metadata"];
        if s(&meta["annotations"]["prometheus.io/scrape"]) != "true" {
            continue;
        }
        annotated += 1;
        let name = s(&meta["labels"]["app.kubernetes.io/name"]);
        assert!(
            !name.is_empty(),
            "{}: a scraped pod needs the label app.kubernetes.io/name (its job's name)",
            doc.what()
        );
    }
    assert!(annotated >= 4, "the four services' pods are annotated");
}

// The checks fail on broken rules.

#[test]
#[should_panic(expected = "is not scoped to the platform's jobs")]
fn an_alert_for_any_job_is_rejected() {
    check_scoped("up == 0", "unscoped");
}

#[test]
#[should_panic(expected = "is not scoped to the platform's jobs")]
fn an_alert_scoped_in_one_selector_only_is_rejected() {
    check_scoped(
        r#"sum(rate(cart_aggregate_commands_total{job=~"cart-.*"}[5m])) / sum(rate(cart_aggregate_commands_total[5m]))"#,
        "half scoped",
    );
}

#[test]
#[should_panic(expected = "has no heading for #cartnosuchalert")]
fn a_runbook_link_to_a_missing_section_is_rejected() {
    let anchors = heading_anchors(&read(&root().join(RUNBOOK)));
    check_runbook_url("docs/runbook.md#cartnosuchalert", &anchors, "missing");
}

#[test]
fn anchors_are_githubs() {
    let anchors = heading_anchors(
        "# Runbook\n## CartServiceDown\n### The `nats` CLI: as admin\n```\n# not a heading\n```\n",
    );
    assert_eq!(
        anchors,
        BTreeSet::from([
            "runbook".to_owned(),
            "cartservicedown".to_owned(),
            "the-nats-cli-as-admin".to_owned()
        ])
    );
}
