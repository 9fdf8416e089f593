//! The benchmark tool works end to end (a tiny run; it asserts the report, never a speed —
//! performance is measured with the release binary, not in tests).

use std::time::Duration;

use cart_bench::Report;
use tests::stack::{Stack, test_streams};

#[tokio::test]
async fn grpc_mode_produces_a_complete_report() {
    let Some(stack) = Stack::start(test_streams()).await else {
        return;
    };
    let node = stack.aggregate("bench-smoke").await.unwrap();
    let client =
        cart_client::CartClient::new(Default::default(), None, vec![node.grpc_addr.to_string()]);
    let d = Duration::from_millis(500);
    let base = cart_bench::raw::baseline(&stack.js, 4, Duration::ZERO, d).await;
    let subject = cart_bench::grpc::subject(&client, 4, Duration::ZERO, d).await;
    assert_eq!(subject.errors, 0, "{:?}", subject.first_error);
    let report = Report::new("grpc", 4, d, base.summary(), subject.summary());
    assert!(report.baseline.ops > 0 && report.subject.ops > 0);
    assert!(report.subject.p99_ms >= report.subject.p50_ms);
    let json = serde_json::to_value(&report).unwrap();
    for key in [
        "mode",
        "concurrency",
        "duration_s",
        "baseline",
        "subject",
        "ratio",
    ] {
        assert!(json.get(key).is_some(), "report has {key}");
    }
    for key in ["ops_per_s", "p50_ms", "p99_ms", "errors"] {
        assert!(json["subject"].get(key).is_some(), "subject has {key}");
    }
    assert!(report.ratio > 0.0);
    node.drain().await.unwrap();
}

/// The wrk-like HTTP client reads every gateway reply in full: a 2xx with its whole
/// `Content-Length` body, or an error counted (none here).
#[tokio::test]
async fn http_mode_adds_through_the_gateway_without_errors() {
    let Some(stack) = Stack::start(test_streams()).await else {
        return;
    };
    let node = stack.aggregate("bench-smoke").await.unwrap();
    let gw = gateway::start(stack.gateway_config()).await.unwrap();
    let base = format!("http://{}", gw.http_addr);
    cart_bench::http::wait_ready(&base).await.unwrap();
    let subject =
        cart_bench::http::subject(&base, 4, Duration::ZERO, Duration::from_millis(500)).await;
    assert_eq!(subject.errors, 0, "{:?}", subject.first_error);
    assert!(subject.ops > 0);
    gw.stop().await.unwrap();
    node.drain().await.unwrap();
}

#[tokio::test]
async fn projection_mode_preloads_through_a_lazily_fsyncing_server_then_measures_with_fsync() {
    if shared::test_support::server_binary_or_skip().is_none() {
        return;
    }
    let mut stack = Stack::for_bench(None, Default::default(), true)
        .await
        .unwrap();
    let report = cart_bench::projection::run(&mut stack, 2_000, 100)
        .await
        .unwrap();
    assert_eq!(report.subject.ops, 2_000, "{report:?}");
    assert_eq!(report.baseline.ops, 2_000, "{report:?}");
    assert!(
        report.notes[0].contains("restarted without per-message fsync"),
        "{:?}",
        report.notes
    );
    // Measured against the server as chosen: back to fsync on every write.
    assert!(stack.server.as_ref().unwrap().sync_always());
}
