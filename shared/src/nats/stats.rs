//! JetStream as Prometheus gauges: how full each stream of the platform is and how far behind
//! each durable consumer is, read from the server every few seconds by one service (the
//! projection; `PROJECTION_JETSTREAM_STATS_SECS`).
//!
//! Why: `CART_EVENTS` has `discard: new`, so a stream at its `max_bytes` refuses every append
//! (every cart command fails), and a consumer that stops keeping up (the projection, the
//! runner) shows as pending messages long before a shopper notices. Both are alerts in
//! `deploy/prometheus/alerts.yml`, explained in `docs/runbook.md`.
//!
//! A read is two kinds of JetStream API request, both read-only: `STREAM.INFO.<stream>` for
//! every stream of [`platform_streams`] and `CONSUMER.LIST.<stream>` for the streams consumers
//! read ([`CONSUMER_STREAMS`]); only durable consumers are reported (readers and KV watchers
//! are ephemeral and come and go). A failed read is logged and counted
//! (`cart_jetstream_stats_errors_total`), the gauges keep their last value, and the next tick
//! tries again: the service never stops or turns unready because of it.
//!
//! [`JetStreamStats::read`] only reads (async); [`Snapshot::record`] only writes the gauges
//! (sync), so a test can record into a recorder of its own.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::metrics::{
    JETSTREAM_CONSUMER_ACK_PENDING, JETSTREAM_CONSUMER_PENDING, JETSTREAM_CONSUMER_REDELIVERED,
    JETSTREAM_STATS_ERRORS, JETSTREAM_STREAM_BYTES, JETSTREAM_STREAM_MAX_BYTES,
    JETSTREAM_STREAM_MESSAGES,
};
use crate::subjects::{
    CART_EVENTS_STREAM, CART_NODES_BUCKET, CART_PLACEMENT_BUCKET, CART_SNAPSHOTS_BUCKET,
    CATALOG_BUCKET, DEAD_LETTERS_STREAM, WORKFLOW_COMMANDS_STREAM, WORKFLOW_EVENTS_STREAM,
};

/// The streams durable consumers read (the KV buckets' streams only have watchers).
pub const CONSUMER_STREAMS: &[&str] = &[
    CART_EVENTS_STREAM,
    WORKFLOW_COMMANDS_STREAM,
    WORKFLOW_EVENTS_STREAM,
    DEAD_LETTERS_STREAM,
];

/// Every stream of the design's NATS table: the four streams and the `KV_<bucket>` stream
/// behind each bucket (a bucket fills up like a stream).
pub fn platform_streams() -> Vec<String> {
    let buckets = [
        CART_SNAPSHOTS_BUCKET,
        CART_PLACEMENT_BUCKET,
        CART_NODES_BUCKET,
        CATALOG_BUCKET,
    ];
    CONSUMER_STREAMS
        .iter()
        .map(|s| (*s).to_owned())
        .chain(buckets.iter().map(|b| format!("KV_{b}")))
        .collect()
}

/// One stream's size and its configured cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStats {
    pub stream: String,
    pub messages: u64,
    pub bytes: u64,
    /// The stream's `max_bytes`; -1 when it has none (then the server's `max_file_store` is
    /// the limit, which only the system account sees).
    pub max_bytes: i64,
}

/// One durable consumer's backlog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerStats {
    pub stream: String,
    pub consumer: String,
    /// Messages in the stream (after its filter) not yet delivered to it.
    pub num_pending: u64,
    /// Delivered, not yet acknowledged.
    pub num_ack_pending: u64,
    /// Delivered more than once and not yet acknowledged.
    pub num_redelivered: u64,
}

/// A read that failed: which stream, which request, and the error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadFailure {
    pub stream: String,
    pub op: &'static str,
    pub error: String,
}

/// What one read saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub streams: Vec<StreamStats>,
    pub consumers: Vec<ConsumerStats>,
    pub failures: Vec<ReadFailure>,
}

impl Snapshot {
    /// Sets the gauges to what was read and counts (and logs) each failure.
    pub fn record(&self) {
        describe();
        for s in &self.streams {
            let stream = s.stream.clone();
            metrics::gauge!(JETSTREAM_STREAM_MESSAGES, "stream" => stream.clone())
                .set(s.messages as f64);
            metrics::gauge!(JETSTREAM_STREAM_BYTES, "stream" => stream.clone()).set(s.bytes as f64);
            metrics::gauge!(JETSTREAM_STREAM_MAX_BYTES, "stream" => stream).set(s.max_bytes as f64);
        }
        for c in &self.consumers {
            let labels = [
                ("stream", c.stream.clone()),
                ("consumer", c.consumer.clone()),
            ];
            metrics::gauge!(JETSTREAM_CONSUMER_PENDING, &labels).set(c.num_pending as f64);
            metrics::gauge!(JETSTREAM_CONSUMER_ACK_PENDING, &labels).set(c.num_ack_pending as f64);
            metrics::gauge!(JETSTREAM_CONSUMER_REDELIVERED, &labels).set(c.num_redelivered as f64);
        }
        for f in &self.failures {
            tracing::warn!(stream = %f.stream, op = f.op, error = %f.error, "reading JetStream stats failed; retried next tick");
            metrics::counter!(JETSTREAM_STATS_ERRORS, "stream" => f.stream.clone()).increment(1);
        }
    }
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge};
    describe_gauge!(
        JETSTREAM_STREAM_MESSAGES,
        Unit::Count,
        "Messages in the stream."
    );
    describe_gauge!(
        JETSTREAM_STREAM_BYTES,
        Unit::Bytes,
        "Bytes the stream holds."
    );
    describe_gauge!(
        JETSTREAM_STREAM_MAX_BYTES,
        Unit::Bytes,
        "The stream's max_bytes (-1: none). With discard: new a full stream refuses writes."
    );
    describe_gauge!(
        JETSTREAM_CONSUMER_PENDING,
        Unit::Count,
        "Messages not yet delivered to the durable consumer."
    );
    describe_gauge!(
        JETSTREAM_CONSUMER_ACK_PENDING,
        Unit::Count,
        "Messages delivered to the durable consumer and not yet acknowledged."
    );
    describe_gauge!(
        JETSTREAM_CONSUMER_REDELIVERED,
        Unit::Count,
        "Messages delivered more than once and not yet acknowledged."
    );
    describe_counter!(
        JETSTREAM_STATS_ERRORS,
        Unit::Count,
        "Failed reads of JetStream stream or consumer info, by stream."
    );
}

/// Reads the stats of some streams through one JetStream context (its request timeout bounds
/// every request).
#[derive(Debug, Clone)]
pub struct JetStreamStats {
    js: jetstream::Context,
    streams: Vec<String>,
}

impl JetStreamStats {
    /// Stats of every stream of the platform ([`platform_streams`]).
    pub fn new(js: jetstream::Context) -> Self {
        Self::of(js, platform_streams())
    }

    /// Stats of the given streams.
    pub fn of(js: jetstream::Context, streams: Vec<String>) -> Self {
        Self { js, streams }
    }

    /// One read of every stream and of the durable consumers of [`CONSUMER_STREAMS`]. Never
    /// fails: what could not be read is in [`Snapshot::failures`].
    pub async fn read(&self) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for name in &self.streams {
            let stream = match self.js.get_stream(name).await {
                Ok(stream) => stream,
                Err(e) => {
                    snapshot.failures.push(failure(name, "stream info", e));
                    continue;
                }
            };
            let info = stream.cached_info();
            snapshot.streams.push(StreamStats {
                stream: name.clone(),
                messages: info.state.messages,
                bytes: info.state.bytes,
                max_bytes: info.config.max_bytes,
            });
            if CONSUMER_STREAMS.contains(&name.as_str()) {
                let mut consumers = stream.consumers();
                // The listing asks again after an error: stop at the first one.
                while let Some(listed) = consumers.next().await {
                    match listed {
                        Ok(info) => snapshot.consumers.extend(durable(name, info)),
                        Err(e) => {
                            snapshot.failures.push(failure(name, "consumer list", e));
                            break;
                        }
                    }
                }
            }
        }
        snapshot
            .consumers
            .sort_by(|a, b| (&a.stream, &a.consumer).cmp(&(&b.stream, &b.consumer)));
        snapshot
    }

    /// Reads and records every `interval` until `stop` (the first read at once).
    pub async fn run(self, interval: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            tokio::select! {
                () = stop.cancelled() => return,
                snapshot = self.read() => snapshot.record(),
            }
        }
    }
}

fn durable(stream: &str, info: consumer::Info) -> Option<ConsumerStats> {
    info.config.durable_name.as_ref()?;
    Some(ConsumerStats {
        stream: stream.to_owned(),
        consumer: info.name,
        num_pending: info.num_pending,
        num_ack_pending: info.num_ack_pending as u64,
        num_redelivered: info.num_redelivered as u64,
    })
}

fn failure(stream: &str, op: &'static str, e: impl std::fmt::Display) -> ReadFailure {
    ReadFailure {
        stream: stream.to_owned(),
        op,
        error: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_platform_streams_are_the_streams_and_the_buckets() {
        assert_eq!(
            platform_streams(),
            [
                "CART_EVENTS",
                "WORKFLOW_COMMANDS",
                "WORKFLOW_EVENTS",
                "DEAD_LETTERS",
                "KV_CART_SNAPSHOTS",
                "KV_CART_PLACEMENT",
                "KV_CART_NODES",
                "KV_CATALOG"
            ]
        );
    }

    #[test]
    fn a_snapshot_sets_the_gauges_and_counts_failures() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let snapshot = Snapshot {
            streams: vec![StreamStats {
                stream: "CART_EVENTS".into(),
                messages: 3,
                bytes: 600,
                max_bytes: 1_000,
            }],
            consumers: vec![ConsumerStats {
                stream: "CART_EVENTS".into(),
                consumer: "projection-main".into(),
                num_pending: 2,
                num_ack_pending: 1,
                num_redelivered: 0,
            }],
            failures: vec![failure("DEAD_LETTERS", "stream info", "timed out")],
        };
        metrics::with_local_recorder(&recorder, || {
            snapshot.record();
            snapshot.record();
        });
        let text = handle.render();
        for line in [
            r#"cart_jetstream_stream_messages{stream="CART_EVENTS"} 3"#,
            r#"cart_jetstream_stream_bytes{stream="CART_EVENTS"} 600"#,
            r#"cart_jetstream_stream_max_bytes{stream="CART_EVENTS"} 1000"#,
            r#"cart_jetstream_consumer_num_pending{stream="CART_EVENTS",consumer="projection-main"} 2"#,
            r#"cart_jetstream_consumer_num_ack_pending{stream="CART_EVENTS",consumer="projection-main"} 1"#,
            r#"cart_jetstream_consumer_num_redelivered{stream="CART_EVENTS",consumer="projection-main"} 0"#,
            r#"cart_jetstream_stats_errors_total{stream="DEAD_LETTERS"} 2"#,
        ] {
            assert!(text.contains(line), "no {line} in\n{text}");
        }
    }
}
