//! The chaos suite: the production topology as real processes on loopback (a 3-node NATS
//! cluster, three aggregate nodes, projection, runner, a mock payment provider, two gateways),
//! storefront clients under load, and faults: processes killed, paused and restarted, network
//! faults between the services and NATS, payment provider faults, a rolling restart. Every
//! scenario ends with a check of what the clients saw against the event stream (see
//! [`check`]) and writes its counts and recovery times to `target/chaos/results.{json,md}`.
//!
//! `scripts/chaos` runs it (`--quick` in CI); see the README.

pub mod check;
pub mod cluster;
pub mod layout;
pub mod load;
pub mod process;
pub mod proxy;
pub mod scenarios;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use self::check::Verdict;

/// Latency figures of one kind of recovery, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Times {
    pub count: usize,
    pub p50_ms: u64,
    pub p99_ms: u64,
    pub max_ms: u64,
}

impl Times {
    pub fn of(mut samples: Vec<Duration>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort();
        let at = |q: f64| {
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i].as_millis() as u64
        };
        Self {
            count: samples.len(),
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: samples.last().map_or(0, |d| d.as_millis() as u64),
        }
    }
}

/// What one scenario measured, and whether it held.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub cycles: usize,
    /// What must hold, in words.
    pub must_hold: String,
    pub pass: bool,
    pub duration_secs: f64,
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Recovery times by kind (`served_again`, `writes_resume`, `placement_converged`, ...).
    pub times: BTreeMap<String, Times>,
    /// Scenario-specific counts (duplicate provider orders, stuck checkouts, ...).
    pub counts: BTreeMap<String, u64>,
    /// Resident memory per process at the start and end (soak).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub rss_mib: BTreeMap<String, (u64, u64)>,
    pub notes: Vec<String>,
}

/// Options of a run.
#[derive(Debug, Clone)]
pub struct Options {
    pub quick: bool,
    pub base_port: u16,
    /// Only these scenarios (all when empty).
    pub only: Vec<String>,
    /// Concurrent storefront clients (the soak uses 200 in a full run).
    pub clients: usize,
    pub out: PathBuf,
    pub seed: u64,
}

/// `results.md`: one row per scenario.
pub fn markdown(results: &[ScenarioResult], quick: bool) -> String {
    let mut out = format!(
        "# Chaos results ({} run)\n\n| scenario | cycles | sent | acked | ambiguous | lost | applied twice | order violations | wrong carts | failed requests | times (p50 / p99 / max ms) | other | pass |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        if quick { "quick" } else { "full" }
    );
    for r in results {
        let times = r
            .times
            .iter()
            .map(|(k, t)| format!("{k}: {} / {} / {}", t.p50_ms, t.p99_ms, t.max_ms))
            .collect::<Vec<_>>()
            .join("; ");
        let other = r
            .counts
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .chain(
                r.rss_mib
                    .iter()
                    .map(|(k, (a, b))| format!("{k} RSS {a}→{b} MiB")),
            )
            .collect::<Vec<_>>()
            .join("; ");
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.name,
            r.cycles,
            r.verdict.commands_sent,
            r.verdict.acknowledged,
            r.verdict.ambiguous,
            r.verdict.lost,
            r.verdict.applied_twice,
            r.verdict.order_violations,
            r.verdict.wrong_carts,
            r.verdict.failed_requests,
            if times.is_empty() {
                "—".into()
            } else {
                times
            },
            if other.is_empty() {
                "—".into()
            } else {
                other
            },
            if r.pass { "yes" } else { "**no**" },
        ));
    }
    out.push_str("\nWhat each scenario must hold:\n\n");
    for r in results {
        out.push_str(&format!("- `{}`: {}\n", r.name, r.must_hold));
        for n in &r.notes {
            out.push_str(&format!("  - {n}\n"));
        }
    }
    out
}
