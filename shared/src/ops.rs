//! The operational endpoints every service serves: `GET /health`, `GET /ready`, `GET /metrics`.
//!
//! `/health` answers as long as the process can serve HTTP (liveness: restart me if not).
//! `/ready` says whether to send traffic here: every named check passes and the node is not
//! draining; the JSON lists each check and why it failed, so `curl` explains an outage.
//! `/metrics` renders the Prometheus recorder, after reading the process series
//! ([`crate::process::collect`]).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;

/// One readiness check's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckState {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Shared, cheaply cloneable readiness state. Components update their own named check
/// (`nats`, `projection_lag`, ...); the drain logic sets `draining`.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    inner: Arc<RwLock<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    checks: BTreeMap<String, CheckState>,
    draining: bool,
    vetoes: Vec<Veto>,
}

/// A condition asked at every report that can only fail its check (`Err`: why).
type VetoFn = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

struct Veto {
    check: String,
    condition: VetoFn,
}

impl std::fmt::Debug for Veto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Veto").field("check", &self.check).finish()
    }
}

/// What `/ready` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadinessReport {
    pub ready: bool,
    pub draining: bool,
    pub checks: BTreeMap<String, CheckState>,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares checks that must pass before the service is ready; until set, each fails with
    /// "not checked yet" (a service is not ready just because nothing has been checked).
    pub fn register(&self, names: &[&str]) {
        let mut inner = self.write();
        for name in names {
            inner
                .checks
                .entry((*name).to_owned())
                .or_insert(CheckState {
                    ok: false,
                    reason: Some("not checked yet".into()),
                });
        }
    }

    pub fn set_ok(&self, name: &str) {
        self.set(name, true, None::<String>);
    }

    pub fn set_failed(&self, name: &str, reason: impl Into<String>) {
        self.set(name, false, Some(reason));
    }

    /// Records a check's outcome; `reason` explains a failure (ignored when `ok`).
    pub fn set(&self, name: &str, ok: bool, reason: Option<impl Into<String>>) {
        let state = CheckState {
            ok,
            reason: if ok { None } else { reason.map(Into::into) },
        };
        self.write().checks.insert(name.to_owned(), state);
    }

    /// Asks `condition` at every report: an `Err` fails check `name` with its reason, whatever
    /// was set. For a state that lapses with no one left to set it (a deadline passing while
    /// the task that would notice has not run).
    pub fn veto(
        &self,
        name: &str,
        condition: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) {
        self.write().vetoes.push(Veto {
            check: name.to_owned(),
            condition: Arc::new(condition),
        });
    }

    /// For a service starting again in the same process while its ops endpoint keeps
    /// serving: every check fails with `reason` until it is set again (checks registered again
    /// keep that), the vetoes of the last start are dropped, and it is no longer draining. Never
    /// ready in between: the checks are failed, not removed.
    pub fn restart(&self, reason: &str) {
        let mut inner = self.write();
        for check in inner.checks.values_mut() {
            *check = CheckState {
                ok: false,
                reason: Some(reason.to_owned()),
            };
        }
        inner.vetoes.clear();
        inner.draining = false;
    }

    /// A draining node finishes in-flight work but gets no new traffic.
    pub fn set_draining(&self, draining: bool) {
        self.write().draining = draining;
    }

    pub fn is_draining(&self) -> bool {
        self.read().draining
    }

    pub fn is_ready(&self) -> bool {
        self.report().ready
    }

    pub fn report(&self) -> ReadinessReport {
        let inner = self.read();
        let mut checks = inner.checks.clone();
        for veto in &inner.vetoes {
            if let Err(reason) = (veto.condition)() {
                checks.insert(
                    veto.check.clone(),
                    CheckState {
                        ok: false,
                        reason: Some(reason),
                    },
                );
            }
        }
        ReadinessReport {
            ready: !inner.draining && checks.values().all(|c| c.ok),
            draining: inner.draining,
            checks,
        }
    }

    // A panic while holding the lock cannot leave the map half-updated (single inserts), so a
    // poisoned lock is still usable.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Clone)]
struct OpsState {
    readiness: Readiness,
    prometheus: PrometheusHandle,
}

/// `/health`, `/ready` and `/metrics`, to merge into a service's router (or serve alone).
pub fn router(readiness: Readiness, prometheus: PrometheusHandle) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(OpsState {
            readiness,
            prometheus,
        })
}

async fn health() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

async fn ready(State(s): State<OpsState>) -> Response {
    let report = s.readiness.report();
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if report.ready { "ready" } else { "not_ready" },
        "draining": report.draining,
        "checks": report.checks,
    });
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(s): State<OpsState>) -> Response {
    // CPU, memory and file descriptors as of this scrape.
    crate::process::collect();
    // Without the exporter's HTTP listener nobody else runs upkeep (histogram maintenance).
    s.prometheus.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.prometheus.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http::Request;
    use tower::ServiceExt;

    async fn get_path(app: &Router, path: &str) -> (StatusCode, String, Option<String>) {
        let resp = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let ct = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap(), ct)
    }

    fn app(readiness: &Readiness) -> Router {
        router(readiness.clone(), crate::telemetry::prometheus())
    }

    #[test]
    fn a_restart_fails_every_check_until_set_again_and_drops_the_last_start_s_vetoes() {
        let r = Readiness::new();
        r.register(&["nats", "lease"]);
        r.set_ok("nats");
        r.set_ok("lease");
        r.veto("lease", || Err("ran out".into()));
        r.set_draining(true);
        r.restart("starting again");
        let report = r.report();
        assert!(!report.ready && !report.draining, "{report:?}");
        for check in ["nats", "lease"] {
            assert_eq!(
                report.checks[check].reason.as_deref(),
                Some("starting again"),
                "{check}"
            );
        }
        r.register(&["nats", "lease"]);
        assert!(!r.is_ready(), "registering again does not pass a check");
        r.set_ok("nats");
        r.set_ok("lease");
        assert!(r.is_ready(), "the old veto is gone: {:?}", r.report());
    }

    #[test]
    fn a_veto_fails_its_check_only_while_its_condition_says_so() {
        let r = Readiness::new();
        r.register(&["lease"]);
        r.set_ok("lease");
        let lapsed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = lapsed.clone();
        r.veto("lease", move || {
            if seen.load(std::sync::atomic::Ordering::SeqCst) {
                Err("ran out".into())
            } else {
                Ok(())
            }
        });
        assert!(r.is_ready());
        lapsed.store(true, std::sync::atomic::Ordering::SeqCst);
        let report = r.report();
        assert!(!report.ready);
        assert_eq!(report.checks["lease"].reason.as_deref(), Some("ran out"));
        lapsed.store(false, std::sync::atomic::Ordering::SeqCst);
        r.set_failed("lease", "standing by");
        let report = r.report();
        assert!(!report.ready, "a passing veto does not pass a failed check");
        assert_eq!(
            report.checks["lease"].reason.as_deref(),
            Some("standing by")
        );
    }

    #[tokio::test]
    async fn health_is_ok() {
        let (status, body, _) = get_path(&app(&Readiness::new()), "/health").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, r#"{"status":"ok"}"#);
    }

    #[tokio::test]
    async fn ready_follows_checks_and_draining() {
        let r = Readiness::new();
        let app = app(&r);
        r.register(&["nats", "lag"]);
        let (status, body, _) = get_path(&app, "/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "not_ready");
        assert_eq!(v["checks"]["nats"]["reason"], "not checked yet");

        r.set_ok("nats");
        r.set_failed("lag", "projection is 5000 events behind");
        let (status, body, _) = get_path(&app, "/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["checks"]["nats"], serde_json::json!({"ok": true}));
        assert_eq!(
            v["checks"]["lag"],
            serde_json::json!({"ok": false, "reason": "projection is 5000 events behind"})
        );

        r.set_ok("lag");
        let (status, body, _) = get_path(&app, "/ready").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(r.is_ready());

        r.set_draining(true);
        let (status, body, _) = get_path(&app, "/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["draining"], true);
        assert!(r.is_draining());
    }

    #[tokio::test]
    async fn metrics_render_prometheus_text() {
        // The recorder must exist before the metric is recorded (under nextest this test is
        // alone in its process, so nothing installed it earlier).
        let app = app(&Readiness::new());
        metrics::counter!("ops_test_requests_total", "route" => "/x").increment(2);
        let (status, body, ct) = get_path(&app, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(ct.unwrap().starts_with("text/plain"));
        assert!(
            body.contains(r#"ops_test_requests_total{route="/x"} 2"#),
            "{body}"
        );
        // Read on the scrape itself: nothing else collects them in this test.
        assert!(
            body.contains("\nprocess_resident_memory_bytes ") || !cfg!(target_os = "linux"),
            "{body}"
        );
    }
}
