//! The PromQL of the alerts and dashboards checked against the code: every metric is a constant
//! of some `*/src/metrics.rs`, used in the shape the exporter really renders (summaries with
//! `quantile`, or buckets), with label values the code records; and the checker's own tests.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::{read, root};

/// Metric names defined in the code: string constants of every `*/src/metrics.rs`, and how
/// the histograms among them (`describe_histogram!`) are rendered.
pub struct Known {
    pub names: BTreeSet<String>,
    pub histograms: BTreeMap<String, Shape>,
}

/// How the exporter renders one histogram.
#[derive(Debug, PartialEq)]
pub enum Shape {
    /// `_bucket{le=...}`, `_sum`, `_count`: aggregate with `histogram_quantile`.
    Buckets,
    /// A summary: `{quantile="..."}` per process, `_sum`, `_count`.
    Quantiles(BTreeSet<String>),
}

pub fn known_metrics() -> Known {
    let mut names = BTreeSet::new();
    let mut histograms = BTreeSet::new();
    let mut files = 0;
    for entry in std::fs::read_dir(root()).unwrap() {
        let path = entry.unwrap().path().join("src/metrics.rs");
        if !path.is_file() {
            continue;
        }
        files += 1;
        let text = read(&path);
        let mut consts = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.trim().strip_prefix("pub const ") else {
                continue;
            };
            let Some((ident, value)) = rest.split_once(": &str = \"") else {
                continue;
            };
            let value = value.split('"').next().unwrap_or_default().to_owned();
            consts.insert(ident.trim().to_owned(), value.clone());
            names.insert(value);
        }
        for part in text.split("describe_histogram!(").skip(1) {
            let ident = part.split(',').next().unwrap_or_default().trim();
            if let Some(name) = consts.get(ident) {
                histograms.insert(name.clone());
            }
        }
    }
    assert!(files >= 4, "found metrics.rs in only {files} crates");
    assert!(!histograms.is_empty(), "no histogram found in metrics.rs");
    Known {
        names,
        histograms: rendered_shapes(&histograms),
    }
}

/// A metric selector in a PromQL expression: the name and its `label op "value"` matchers.
#[derive(Debug)]
pub struct Selector {
    pub metric: String,
    pub matchers: Vec<(String, String, String)>,
}

/// Every vector selector of a PromQL expression, parsed as Prometheus would (an expression it
/// cannot parse makes Prometheus reject the whole rule file). Grafana's interval variables are
/// replaced by a duration first. Also refuses `histogram_quantile` over an aggregation that
/// drops the `le` label (it would return nothing).
pub fn selectors(expr: &str) -> Result<Vec<Selector>, String> {
    use promql_parser::parser::{Expr, LabelModifier};
    fn walk(e: &Expr, out: &mut Vec<Selector>) -> Result<(), String> {
        let selector = |vs: &promql_parser::parser::VectorSelector| Selector {
            metric: vs.name.clone().unwrap_or_default(),
            matchers: vs
                .matchers
                .matchers
                .iter()
                .map(|m| (m.name.clone(), m.op.to_string(), m.value.clone()))
                .collect(),
        };
        match e {
            Expr::Aggregate(a) => {
                walk(&a.expr, out)?;
                if let Some(param) = &a.param {
                    walk(param, out)?;
                }
            }
            Expr::Unary(u) => walk(&u.expr, out)?,
            Expr::Binary(b) => {
                walk(&b.lhs, out)?;
                walk(&b.rhs, out)?;
            }
            Expr::Paren(p) => walk(&p.expr, out)?,
            Expr::Subquery(q) => walk(&q.expr, out)?,
            Expr::VectorSelector(vs) => out.push(selector(vs)),
            Expr::MatrixSelector(ms) => out.push(selector(&ms.vs)),
            Expr::Call(c) => {
                if c.func.name == "histogram_quantile"
                    && let Some(Expr::Aggregate(a)) = c.args.args.get(1).map(|a| a.as_ref())
                {
                    let keeps_le = match &a.modifier {
                        Some(LabelModifier::Include(by)) => by.labels.iter().any(|l| l == "le"),
                        Some(LabelModifier::Exclude(without)) => {
                            !without.labels.iter().any(|l| l == "le")
                        }
                        None => false,
                    };
                    if !keeps_le {
                        return Err("histogram_quantile over an aggregation without `le`".into());
                    }
                }
                for arg in &c.args.args {
                    walk(arg, out)?;
                }
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
        Ok(())
    }
    let mut text = expr.to_owned();
    for var in ["$__rate_interval", "$__interval", "$__range"] {
        text = text.replace(var, "5m");
    }
    let ast = promql_parser::parser::parse(&text)?;
    let mut out = Vec::new();
    walk(&ast, &mut out)?;
    Ok(out)
}

/// What the services' exporter really renders for each histogram: one value is recorded under
/// each name into the recorder `shared::telemetry` installs (the one every service uses), and
/// the rendered text says whether it became buckets or a summary.
fn rendered_shapes(histograms: &BTreeSet<String>) -> BTreeMap<String, Shape> {
    let handle = shared::telemetry::prometheus();
    for name in histograms {
        metrics::histogram!(name.clone()).record(0.01);
    }
    handle.run_upkeep();
    let text = handle.render();
    histograms
        .iter()
        .map(|name| {
            let shape = if text.contains(&format!("{name}_bucket{{")) {
                Shape::Buckets
            } else {
                let quantiles: BTreeSet<String> = text
                    .lines()
                    .filter(|l| l.starts_with(&format!("{name}{{")))
                    .filter_map(|l| l.split("quantile=\"").nth(1))
                    .filter_map(|q| q.split('"').next())
                    .map(str::to_owned)
                    .collect();
                assert!(
                    !quantiles.is_empty(),
                    "{name} rendered neither buckets nor quantiles:\n{text}"
                );
                Shape::Quantiles(quantiles)
            };
            (name.clone(), shape)
        })
        .collect()
}

/// Checks one PromQL expression against the code (names, histogram shape, label values).
pub fn check_expr(expr: &str, known: &Known, what: &str) {
    let prefixes: BTreeSet<String> = known
        .names
        .iter()
        .filter_map(|n| n.split_once('_').map(|(p, _)| format!("{p}_")))
        .collect();
    let results: BTreeSet<&str> = shared::ErrorCode::ALL
        .iter()
        .map(|c| c.as_str())
        .chain(["ok", "duplicate"])
        .collect();
    let mut used = 0;
    let parsed = selectors(expr).unwrap_or_else(|e| panic!("{what}: `{expr}` is not PromQL: {e}"));
    for sel in parsed {
        if sel.metric == "up" {
            used += 1;
            continue;
        }
        if !prefixes.iter().any(|p| sel.metric.starts_with(p.as_str())) {
            continue; // a function, keyword or label name
        }
        let (base, suffix) = ["_bucket", "_sum", "_count"]
            .into_iter()
            .find_map(|suf| {
                let base = sel.metric.strip_suffix(suf)?;
                known.histograms.contains_key(base).then_some((base, suf))
            })
            .unwrap_or((sel.metric.as_str(), ""));
        assert!(
            known.names.contains(base),
            "{what}: metric {} is not defined in any */src/metrics.rs (renamed?)",
            sel.metric
        );
        used += 1;
        // Only the series the exporter really renders for a histogram exist.
        let quantile = sel
            .matchers
            .iter()
            .find(|(label, _, _)| label == "quantile");
        match (known.histograms.get(base), suffix, quantile) {
            (None, _, None) | (Some(_), "_sum" | "_count", None) => {}
            (Some(Shape::Buckets), "_bucket", None) => {}
            (Some(Shape::Quantiles(q)), "", Some((_, _, value))) => assert!(
                q.contains(value),
                "{what}: {base} renders quantiles {q:?}, not {value}"
            ),
            (Some(Shape::Buckets), _, _) => panic!(
                "{what}: {} does not exist: {base} is rendered as a histogram \
                 (histogram_quantile over {base}_bucket, or _sum/_count)",
                sel.metric
            ),
            (Some(Shape::Quantiles(_)), _, _) => panic!(
                "{what}: {} does not exist: {base} is rendered as a summary \
                 ({base}{{quantile=\"0.99\"}}, or _sum/_count)",
                sel.metric
            ),
            (None, _, Some(_)) => panic!("{what}: {base} is not a histogram, it has no quantiles"),
        }
        for (label, op, value) in &sel.matchers {
            if base == "cart_aggregate_commands_total" && label == "result" {
                let alternatives: Vec<&str> = if op.ends_with('~') {
                    value.split('|').collect()
                } else {
                    vec![value.as_str()]
                };
                for alt in alternatives {
                    assert!(
                        results.contains(alt),
                        "{what}: result {alt:?} is never recorded (ok, duplicate or an \
                         ErrorCode string)"
                    );
                }
            }
        }
    }
    assert!(used > 0, "{what}: `{expr}` uses no known metric");
}

// The checks fail on a broken query.

#[test]
#[should_panic(expected = "is not defined in any */src/metrics.rs")]
fn a_renamed_metric_is_rejected() {
    check_expr(
        "rate(cart_aggregate_comands_total[5m])",
        &known_metrics(),
        "renamed",
    );
}

#[test]
#[should_panic(expected = "is never recorded")]
fn a_result_label_the_aggregate_never_records_is_rejected() {
    check_expr(
        r#"cart_aggregate_commands_total{result=~"ok|boom"}"#,
        &known_metrics(),
        "bad result",
    );
}

#[test]
#[should_panic(expected = "does not exist")]
fn a_histogram_series_the_exporter_does_not_render_is_rejected() {
    let known = known_metrics();
    let shape = &known.histograms["cart_aggregate_append_duration_seconds"];
    let wrong = if *shape == Shape::Buckets {
        r#"cart_aggregate_append_duration_seconds{quantile="0.99"}"#
    } else {
        "rate(cart_aggregate_append_duration_seconds_bucket[5m])"
    };
    check_expr(wrong, &known, "wrong shape");
}

#[test]
#[should_panic(expected = "without `le`")]
fn a_quantile_over_buckets_without_le_is_rejected() {
    check_expr(
        "histogram_quantile(0.99, sum(rate(cart_aggregate_append_duration_seconds_bucket[5m])))",
        &known_metrics(),
        "no le",
    );
}

#[test]
#[should_panic(expected = "is not PromQL")]
fn a_query_prometheus_cannot_parse_is_rejected() {
    check_expr(
        "sum(rate(cart_aggregate_commands_total[5m])",
        &known_metrics(),
        "syntax",
    );
}
