//! Readiness: the checks behind the HTTP port's `/ready` (NATS connected, consumer fetching, lag
//! within `READY_MAX_LAG` and the indexes in place, no swap in progress) and the [`Monitor`]
//! task that keeps them, and the lag gauges, up to date.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::stream::Stream;
use shared::ops::Readiness;
use tokio_util::sync::CancellationToken;

use crate::metrics as m;
use crate::status::{ProjectionStatus, stream_info};
use crate::write::writer::Writer;

/// Readiness checks of the projection.
pub const CHECK_NATS: &str = shared::serve::NATS_CHECK;
pub const CHECK_CONSUMER: &str = "consumer";
pub const CHECK_LAG: &str = "lag";
pub const CHECK_REBUILD: &str = "rebuild";
pub const CHECKS: &[&str] = &[CHECK_NATS, CHECK_CONSUMER, CHECK_LAG, CHECK_REBUILD];

/// How often the monitor refreshes the stream position and readiness.
const MONITOR_EVERY: Duration = Duration::from_millis(250);

/// The task that keeps `/ready` and the lag gauges truthful: every `MONITOR_EVERY` it
/// looks at the NATS connection, the stream's last sequence, the writer's checkpoint, the
/// consumer's last fetch and a rebuild's pause.
pub struct Monitor {
    pub shared: Arc<ProjectionStatus>,
    pub client: async_nats::Client,
    pub events: Stream,
    pub writer: Writer,
    pub readiness: Readiness,
    pub max_lag: u64,
    /// The consumer counts as stalled without a successful fetch for this long.
    pub consumer_stall: Duration,
    pub request_timeout: Duration,
}

impl Monitor {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(MONITOR_EVERY);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.check().await;
        }
    }

    async fn check(&self) {
        let view = self.shared.view.clone();
        let connected = self.client.connection_state() == async_nats::connection::State::Connected;
        self.readiness
            .set(CHECK_NATS, connected, Some("disconnected from NATS"));
        match stream_info(&self.events, self.request_timeout).await {
            Ok(info) => self.shared.set_stream_last(info.state.last_sequence),
            Err(e) => tracing::debug!(error = %e, "stream info failed"),
        }
        let applied = self.writer.checkpoint();
        let lag = self.shared.stream_last().saturating_sub(applied);
        metrics::gauge!(m::LAG, m::VIEW => view.clone()).set(lag as f64);
        metrics::gauge!(m::APPLIED_SEQUENCE, m::VIEW => view).set(applied as f64);
        let indexes_dropped = self.writer.indexes_dropped();
        self.readiness.set(
            CHECK_LAG,
            lag <= self.max_lag && !indexes_dropped,
            Some(if indexes_dropped {
                format!("{lag} messages behind, catching up without the views' indexes")
            } else {
                format!("{lag} messages behind (more than {})", self.max_lag)
            }),
        );
        let error = self.shared.consumer_error();
        let consumer = match (self.shared.since_fetch(), error) {
            (_, Some(e)) => Err(format!("consumer failing: {e}")),
            (None, None) => Err("consumer has not fetched yet".to_owned()),
            (Some(d), None) if d > self.consumer_stall => {
                Err(format!("no fetch completed for {} s", d.as_secs()))
            }
            _ => Ok(()),
        };
        self.readiness
            .set(CHECK_CONSUMER, consumer.is_ok(), consumer.err());
        self.readiness.set(
            CHECK_REBUILD,
            !self.shared.is_paused(),
            Some("paused while a rebuilt database is swapped in"),
        );
    }
}
