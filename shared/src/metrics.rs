//! Metric names every service records through this crate, defined once: the NATS connection,
//! gRPC authorization, which build runs, the process itself, and JetStream's streams and
//! consumers.

/// Lost NATS connections, by `connection` (the client name): every request in flight on a
/// lost connection fails or waits for the reconnect, so this should stay at zero.
pub const NATS_DISCONNECTS: &str = "cart_nats_disconnects_total";

/// gRPC calls refused because the caller's certificate names a service the RPC is not for,
/// by `rpc` and `caller` (see `crate::grpc_tls`): should stay at zero.
pub const GRPC_CALLS_DENIED: &str = "cart_grpc_calls_denied_total";

/// Always 1, with the `service`, its `version` and the `git_sha` it was built from as labels
/// (`crate::process::record_build_info`).
pub const BUILD_INFO: &str = "cart_build_info";

// The process series every service renders on each scrape (`crate::process::collect`, through
// the `metrics-process` crate), under the names Prometheus' client libraries use.

/// CPU time (user and system) the process has used, in whole seconds.
pub const PROCESS_CPU_SECONDS: &str = "process_cpu_seconds_total";
/// Resident memory (RSS) in bytes.
pub const PROCESS_RESIDENT_MEMORY: &str = "process_resident_memory_bytes";
/// Open file descriptors (sockets included); compare with `process_max_fds`.
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
/// The file descriptor limit (`ulimit -n`).
pub const PROCESS_MAX_FDS: &str = "process_max_fds";
/// When the process started, in seconds since the Unix epoch (a change is a restart).
pub const PROCESS_START_TIME: &str = "process_start_time_seconds";
/// OS threads of the process.
pub const PROCESS_THREADS: &str = "process_threads";

// JetStream, read by one service (the projection) every `PROJECTION_JETSTREAM_STATS_SECS`
// (`crate::nats::stats`).

/// Messages in a stream, by `stream`.
pub const JETSTREAM_STREAM_MESSAGES: &str = "cart_jetstream_stream_messages";
/// Bytes a stream holds, by `stream`.
pub const JETSTREAM_STREAM_BYTES: &str = "cart_jetstream_stream_bytes";
/// A stream's configured `max_bytes`, by `stream` (-1: no cap of its own).
pub const JETSTREAM_STREAM_MAX_BYTES: &str = "cart_jetstream_stream_max_bytes";
/// Messages not yet delivered to a durable consumer, by `stream` and `consumer`.
pub const JETSTREAM_CONSUMER_PENDING: &str = "cart_jetstream_consumer_num_pending";
/// Messages delivered to a durable consumer and not yet acknowledged, by `stream` and
/// `consumer`.
pub const JETSTREAM_CONSUMER_ACK_PENDING: &str = "cart_jetstream_consumer_num_ack_pending";
/// Messages redelivered to a durable consumer and not yet acknowledged, by `stream` and
/// `consumer`.
pub const JETSTREAM_CONSUMER_REDELIVERED: &str = "cart_jetstream_consumer_num_redelivered";
/// Failed reads of stream or consumer info, by `stream` (logged; the gauges keep their last
/// value).
pub const JETSTREAM_STATS_ERRORS: &str = "cart_jetstream_stats_errors_total";

/// Adds one to a gauge while it lives (an open stream, say) and takes it away again when
/// dropped, however the holder ends.
pub struct GaugeGuard(metrics::Gauge);

impl GaugeGuard {
    pub fn new(gauge: metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
