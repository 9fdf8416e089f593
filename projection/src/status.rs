//! What the projection's tasks tell each other about the node: the consumer's last fetch and
//! error, the stream's last sequence, the pause of a rebuild's swap and the rebuild's progress.
//! The consumer, the rebuild and the query service write and read it through one [`ProjectionStatus`];
//! [`crate::ops::readiness`] turns it into `/ready`, [`crate::ops::admin`] shows the rebuild.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::stream::Stream;
use serde::{Deserialize, Serialize};

use crate::error::ProjectionError;
use crate::metrics as m;

/// `CART_EVENTS`'s info (first and last sequence), within `timeout`.
pub async fn stream_info(
    events: &Stream,
    timeout: Duration,
) -> Result<async_nats::jetstream::stream::Info, ProjectionError> {
    tokio::time::timeout(timeout, events.get_info())
        .await
        .map_err(|_| ProjectionError::nats("stream info", "no reply in time"))?
        .map_err(|e| ProjectionError::nats("stream info", e))
}

/// State shared by the consumer loop, the readiness monitor, the rebuild and the query service.
pub struct ProjectionStatus {
    pub view: Arc<str>,
    started: Instant,
    /// Milliseconds after `started` of the last successful fetch (0: none yet).
    last_fetch_ms: AtomicU64,
    consumer_error: Mutex<Option<String>>,
    stream_last: AtomicU64,
    /// The live writer is paused (a rebuild is swapping databases).
    paused: AtomicBool,
    pub rebuild: RebuildProgress,
}

/// Progress of the running (or last) rebuild.
#[derive(Debug, Default)]
pub struct RebuildProgress {
    running: AtomicBool,
    applied: AtomicU64,
    target: AtomicU64,
    last_result: Mutex<Option<String>>,
}

/// What `GET /admin/rebuild` shows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RebuildView {
    pub running: bool,
    pub applied: u64,
    pub target: u64,
    pub last_result: Option<String>,
}

impl RebuildProgress {
    /// Marks a rebuild as started; false when one already runs.
    pub fn begin(&self, view: &str) -> bool {
        if self.running.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.applied.store(0, Ordering::Release);
        self.target.store(0, Ordering::Release);
        metrics::gauge!(m::REBUILDING, m::VIEW => view.to_owned()).set(1.0);
        true
    }

    pub fn progress(&self, view: &str, applied: u64, target: u64) {
        self.applied.store(applied, Ordering::Release);
        self.target.store(target, Ordering::Release);
        metrics::gauge!(m::REBUILD_APPLIED, m::VIEW => view.to_owned()).set(applied as f64);
        metrics::gauge!(m::REBUILD_TARGET, m::VIEW => view.to_owned()).set(target as f64);
    }

    pub fn finish(&self, view: &str, result: String) {
        *self.last_result.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
        self.running.store(false, Ordering::Release);
        metrics::gauge!(m::REBUILDING, m::VIEW => view.to_owned()).set(0.0);
    }

    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    pub fn view(&self) -> RebuildView {
        RebuildView {
            running: self.is_running(),
            applied: self.applied.load(Ordering::Acquire),
            target: self.target.load(Ordering::Acquire),
            last_result: self
                .last_result
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

impl ProjectionStatus {
    pub fn new(view: &str) -> Self {
        Self {
            view: view.into(),
            started: Instant::now(),
            last_fetch_ms: AtomicU64::new(0),
            consumer_error: Mutex::new(None),
            stream_last: AtomicU64::new(0),
            paused: AtomicBool::new(false),
            rebuild: RebuildProgress::default(),
        }
    }

    pub fn fetched_ok(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_fetch_ms.store(ms.max(1), Ordering::Release);
        *self
            .consumer_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The last sequence of `CART_EVENTS`, as last seen.
    pub fn set_stream_last(&self, last: u64) {
        self.stream_last.store(last, Ordering::Release);
        metrics::gauge!(m::STREAM_LAST_SEQUENCE, m::VIEW => self.view.clone()).set(last as f64);
    }

    pub fn set_consumer_error(&self, e: String) {
        *self
            .consumer_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(e);
    }

    /// Time since the last successful fetch (`None`: none yet).
    pub(crate) fn since_fetch(&self) -> Option<Duration> {
        match self.last_fetch_ms.load(Ordering::Acquire) {
            0 => None,
            ms => Some(
                self.started
                    .elapsed()
                    .saturating_sub(Duration::from_millis(ms)),
            ),
        }
    }

    /// The error of the consumer's last batch, if it failed (cleared by a good fetch).
    pub(crate) fn consumer_error(&self) -> Option<String> {
        self.consumer_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn stream_last(&self) -> u64 {
        self.stream_last.load(Ordering::Acquire)
    }

    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }
}
