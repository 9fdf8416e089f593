//! Process-global setup (telemetry init, signal handling) in its own test binary, because it
//! can only happen once per process.

use std::io::Read;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shared::shutdown::shutdown_signal;
use shared::telemetry::{self, LogFormat, TelemetryConfig, TelemetryError};
use shared::test_support::{Captured, wait_until};

/// A stand-in collector: records whether an HTTP/2 (gRPC) client connected, then hangs up.
fn fake_collector() -> (String, Arc<Mutex<bool>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(false));
    let flag = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            stream.set_read_timeout(Some(Duration::from_secs(2))).ok();
            let mut buf = [0u8; 24];
            if stream.read_exact(&mut buf).is_ok() && buf.starts_with(b"PRI * HTTP/2.0") {
                *flag.lock().unwrap() = true;
            }
        }
    });
    (format!("http://{addr}"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_logs_json_exports_spans_and_runs_once() {
    let (endpoint, collector_saw_grpc) = fake_collector();
    let logs = Captured::default();
    let config = TelemetryConfig {
        rust_log: Some("info,process=debug".into()),
        log_format: LogFormat::Json,
        otel_exporter_otlp_endpoint: Some(endpoint),
        ..TelemetryConfig::default()
    };
    let guard = telemetry::init_with_writer("cart-test", &config, logs.clone()).unwrap();
    assert!(guard.exports_traces());

    {
        let span = tracing::info_span!("checkout", cart_id = "c1");
        let _entered = span.enter();
        tracing::info!(items = 3, "checkout started");
        tracing::trace!("filtered out by RUST_LOG");
    }

    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains("checkout started"))
        .unwrap_or_else(|| panic!("no log line in {text}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["level"], "INFO");
    assert_eq!(v["fields"]["items"], 3);
    assert_eq!(v["span"]["cart_id"], "c1");
    // The line names the span's trace, for the way from a log search to the trace.
    assert_eq!(v["trace_id"].as_str().map(str::len), Some(32), "{line}");
    assert_eq!(v["span_id"].as_str().map(str::len), Some(16), "{line}");
    assert!(!text.contains("filtered out"));

    // Init names the service's build on /metrics.
    let build = format!(
        "cart_build_info{{service=\"cart-test\",version=\"{}\",git_sha=\"{}\"}} 1",
        shared::process::VERSION,
        shared::process::GIT_SHA
    );
    let rendered = guard.prometheus().render();
    assert!(rendered.contains(&build), "no {build} in\n{rendered}");

    // A second init in the same process is refused, not silently ignored.
    let again = telemetry::init_with_writer("cart-test", &config, logs.clone());
    assert!(matches!(again, Err(TelemetryError::AlreadyInitialized)));

    // Dropping the guard flushes the span to the collector over OTLP/gRPC.
    tokio::task::spawn_blocking(move || drop(guard))
        .await
        .unwrap();
    wait_until(
        || {
            let seen = *collector_saw_grpc.lock().unwrap();
            async move { seen }
        },
        Duration::from_secs(10),
    )
    .await
    .expect("the OTLP exporter connected to the collector");
}

#[tokio::test]
async fn sigterm_cancels_the_shutdown_token() {
    let token = shutdown_signal();
    assert!(!token.is_cancelled());
    let status = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::timeout(Duration::from_secs(10), token.cancelled())
        .await
        .expect("SIGTERM cancels the token");
}
