//! Logs, traces and metrics, set up the same way in every process.
//!
//! `init` is called once at the top of `main`: `tracing` logs filtered by `RUST_LOG` (default
//! `info`), printed as JSON (for log shippers, with the `trace_id` and `span_id` of the current
//! span, see [`crate::trace_log`]) or human-readable text (`LOG_FORMAT`); an OpenTelemetry
//! tracer behind every `tracing` span, whose sampler is the SDK's own (`OTEL_TRACES_SAMPLER`,
//! `OTEL_TRACES_SAMPLER_ARG`; parent-based always-on by default); spans exported over
//! OTLP/gRPC only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (so a laptop needs no collector),
//! over TLS for an `https://` endpoint; the W3C trace-context propagator installed globally
//! ([`crate::propagation`]); and a Prometheus recorder behind the `metrics` facade, rendered by
//! `GET /metrics` (see [`crate::ops`]) with the service's build (`cart_build_info`) and the
//! process series ([`crate::process`]).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::{Deserialize, Serialize};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, with the current span's fields (production).
    Json,
    /// Human-readable lines (development).
    #[default]
    Pretty,
}

/// Telemetry settings. The field names are the conventional environment variables (`RUST_LOG`,
/// `LOG_FORMAT`, `OTEL_EXPORTER_OTLP_ENDPOINT`): embed this with `#[serde(flatten)]` in a
/// service config loaded by [`crate::config::load`], or use [`TelemetryConfig::from_env`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TelemetryConfig {
    /// `tracing` filter directives, e.g. `info,aggregate=debug`; `info` when unset.
    pub rust_log: Option<String>,
    pub log_format: LogFormat,
    /// OTLP/gRPC collector, e.g. `http://otel-collector:4317`; no span export when unset.
    /// An `https://` endpoint is reached over TLS, trusting the system's roots.
    pub otel_exporter_otlp_endpoint: Option<String>,
    /// PEM file of the CA that signed an `https://` collector's certificate, trusted instead
    /// of the system's roots (a private CA).
    pub otel_exporter_otlp_certificate: Option<String>,
}

impl TelemetryConfig {
    /// Reads the conventional environment variables directly.
    pub fn from_env() -> Result<Self, TelemetryError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let log_format = match var("LOG_FORMAT").as_deref().map(str::trim) {
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(TelemetryError::Config(format!(
                    "LOG_FORMAT must be json or pretty, got {other:?}"
                )));
            }
        };
        Ok(Self {
            rust_log: var("RUST_LOG"),
            log_format,
            otel_exporter_otlp_endpoint: var("OTEL_EXPORTER_OTLP_ENDPOINT"),
            otel_exporter_otlp_certificate: var("OTEL_EXPORTER_OTLP_CERTIFICATE"),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("telemetry config: {0}")]
    Config(String),
    #[error("OTLP exporter for {endpoint}: {message}")]
    Exporter { endpoint: String, message: String },
    #[error("telemetry is already initialised in this process")]
    AlreadyInitialized,
}

/// Keeps exporters alive; dropping it flushes buffered spans. Hold it in `main` until exit.
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
    exports: bool,
    prometheus: PrometheusHandle,
}

impl TelemetryGuard {
    /// The process-wide Prometheus handle (for [`crate::ops::router`]).
    pub fn prometheus(&self) -> PrometheusHandle {
        self.prometheus.clone()
    }

    /// True when spans are exported over OTLP.
    pub fn exports_traces(&self) -> bool {
        self.exports
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer_provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("flushing OTLP spans failed: {e}");
        }
    }
}

/// Sets up logging, tracing and metrics for `service_name`. Call once per process, inside the
/// tokio runtime (the OTLP exporter's gRPC channel lives on it).
pub fn init(
    service_name: &str,
    config: &TelemetryConfig,
) -> Result<TelemetryGuard, TelemetryError> {
    // First thing every binary does: the TLS crypto provider goes in before any connection.
    crate::tls::install_crypto_provider();
    init_with_writer(service_name, config, std::io::stdout)
}

/// [`init`] writing log lines to `writer` instead of stdout (tests capture them this way).
pub fn init_with_writer<W>(
    service_name: &str,
    config: &TelemetryConfig,
    writer: W,
) -> Result<TelemetryGuard, TelemetryError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = env_filter(config.rust_log.as_deref())?;
    let fmt = match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .event_format(crate::trace_log::WithTraceIds::json())
            .with_writer(writer)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().with_writer(writer).boxed(),
    };
    // Every span gets trace and span ids (for logs and propagation) and a sampling decision,
    // with or without an exporter; only an exporter sends them anywhere.
    let tracer_provider = tracer_provider(service_name, config)?;
    // Without source locations, thread attributes and busy/idle timing: each costs every span
    // allocations or clock reads on the request path, and none of them helps follow a request.
    let otel = tracing_opentelemetry::layer()
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_tracer(tracer_provider.tracer(service_name.to_owned()));
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInitialized)?;
    crate::propagation::install();
    opentelemetry::global::set_tracer_provider(tracer_provider.clone());
    tracing::info!(
        service = service_name,
        otlp = config
            .otel_exporter_otlp_endpoint
            .as_deref()
            .unwrap_or("off"),
        "telemetry initialised"
    );
    let prometheus = prometheus();
    // Every service's `/metrics` names its build; the process series follow on each scrape.
    crate::process::record_build_info(service_name);
    Ok(TelemetryGuard {
        tracer_provider: Some(tracer_provider),
        exports: config.otel_exporter_otlp_endpoint.is_some(),
        prometheus,
    })
}

/// Parses `RUST_LOG`-style directives (default `info`); an invalid filter is an error rather
/// than silently logging everything or nothing.
pub fn env_filter(directives: Option<&str>) -> Result<EnvFilter, TelemetryError> {
    let directives = directives
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .unwrap_or("info");
    EnvFilter::try_new(directives)
        .map_err(|e| TelemetryError::Config(format!("RUST_LOG {directives:?}: {e}")))
}

/// The tracer provider: the SDK's sampler (it reads `OTEL_TRACES_SAMPLER` and
/// `OTEL_TRACES_SAMPLER_ARG` itself) and, with an endpoint, a batch exporter (which reads
/// `OTEL_BSP_SCHEDULE_DELAY` and the other `OTEL_BSP_*` variables).
fn tracer_provider(
    service_name: &str,
    config: &TelemetryConfig,
) -> Result<SdkTracerProvider, TelemetryError> {
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name.to_owned())
        .build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    Ok(match &config.otel_exporter_otlp_endpoint {
        Some(endpoint) => builder
            .with_batch_exporter(otlp_exporter(
                endpoint,
                config.otel_exporter_otlp_certificate.as_deref(),
            )?)
            .build(),
        None => builder.build(),
    })
}

/// The OTLP/gRPC span exporter for `endpoint`. An `https://` endpoint gets TLS trusting
/// `ca_file` (PEM) when given, else the system's roots (rustls, with the crypto provider
/// [`crate::tls::install_crypto_provider`] installed).
pub fn otlp_exporter(
    endpoint: &str,
    ca_file: Option<&str>,
) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    let error = |message: String| TelemetryError::Exporter {
        endpoint: endpoint.to_owned(),
        message,
    };
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint);
    if endpoint.starts_with("https://") {
        let tls = tonic::transport::ClientTlsConfig::new();
        let tls = match ca_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| error(format!("OTEL_EXPORTER_OTLP_CERTIFICATE {path}: {e}")))?;
                tls.ca_certificate(tonic::transport::Certificate::from_pem(pem))
            }
            None => tls.with_native_roots(),
        };
        builder = builder.with_tls_config(tls);
    }
    builder.build().map_err(|e| error(e.to_string()))
}

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use; every later call (many tests
/// in one process, several services in one test) gets the same handle. If some other recorder
/// was installed first, a detached recorder is returned so `/metrics` still answers.
/// Latency buckets (seconds) for every `*_seconds` histogram: real histograms (not summaries),
/// so alerts and dashboards can aggregate quantiles across instances.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
];

/// Buckets for size-like histograms (messages replayed, batch sizes).
pub const COUNT_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0,
];

fn builder() -> PrometheusBuilder {
    use metrics_exporter_prometheus::Matcher;
    // Both bucket lists are non-empty constants, the only way these calls fail.
    PrometheusBuilder::new()
        .set_buckets(COUNT_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS))
        .expect("bucket lists are non-empty")
}

pub fn prometheus() -> PrometheusHandle {
    PROMETHEUS
        .get_or_init(|| match builder().install_recorder() {
            Ok(handle) => handle,
            Err(e) => {
                tracing::warn!(error = %e, "a metrics recorder is already installed; /metrics will be empty");
                PrometheusBuilder::new().build_recorder().handle()
            }
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_defaults_to_info_and_rejects_garbage() {
        assert_eq!(env_filter(None).unwrap().to_string(), "info");
        assert_eq!(env_filter(Some("  ")).unwrap().to_string(), "info");
        assert!(env_filter(Some("warn,shared=debug")).is_ok());
        let err = env_filter(Some("shared=notalevel")).unwrap_err();
        assert!(err.to_string().contains("RUST_LOG"), "{err}");
    }

    #[test]
    fn log_format_is_lowercase_in_config() {
        let c: TelemetryConfig =
            serde_json::from_str(r#"{"log_format": "json", "rust_log": "debug"}"#).unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.rust_log.as_deref(), Some("debug"));
        assert!(serde_json::from_str::<TelemetryConfig>(r#"{"log_format": "xml"}"#).is_err());
        assert_eq!(TelemetryConfig::default().log_format, LogFormat::Pretty);
    }

    #[tokio::test]
    async fn an_https_collector_gets_an_exporter() {
        crate::tls::install_crypto_provider();
        otlp_exporter("https://collector.example.com:4317", None).expect("system roots");
        let pki = crate::test_support::TestPki::new();
        let ca = pki.ca_file().to_str().unwrap().to_owned();
        otlp_exporter("https://collector.example.com:4317", Some(&ca)).expect("private CA");
        let err = otlp_exporter("https://c:4317", Some("/nonexistent.pem")).unwrap_err();
        assert!(
            err.to_string().contains("OTEL_EXPORTER_OTLP_CERTIFICATE"),
            "{err}"
        );
        otlp_exporter("http://127.0.0.1:4317", None).expect("plaintext");
    }

    #[test]
    fn seconds_histograms_have_buckets() {
        let handle = prometheus();
        metrics::histogram!("telemetry_test_duration_seconds").record(0.003);
        metrics::histogram!("telemetry_test_batch_size").record(7.0);
        handle.run_upkeep();
        let text = handle.render();
        assert!(
            text.contains("telemetry_test_duration_seconds_bucket{le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("telemetry_test_batch_size_bucket{le=\"10\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn prometheus_is_installed_once_and_shared() {
        let a = prometheus();
        let b = prometheus();
        metrics::counter!("telemetry_test_total").increment(3);
        a.run_upkeep();
        assert!(
            a.render().contains("telemetry_test_total 3"),
            "{}",
            a.render()
        );
        assert!(b.render().contains("telemetry_test_total 3"));
    }
}
