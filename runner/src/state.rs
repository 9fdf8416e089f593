//! State the runner's parts share: the current provider client (swapped on reload) and the
//! status RunnerAdmin reports.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::Notify;

use crate::metrics as m;
use crate::provider::ProviderClient;

/// The provider client in use; `Reload` replaces it without a restart.
#[derive(Clone)]
pub struct ProviderHandle {
    inner: Arc<RwLock<(ProviderClient, u64)>>,
}

impl ProviderHandle {
    pub fn new(client: ProviderClient) -> Self {
        Self {
            inner: Arc::new(RwLock::new((client, 1))),
        }
    }

    pub fn current(&self) -> ProviderClient {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// Swap in a new client; returns the new generation.
    pub fn replace(&self, client: ProviderClient) -> u64 {
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        g.0 = client;
        g.1 += 1;
        g.1
    }
}

#[derive(Default)]
pub struct Status {
    in_flight: AtomicU32,
    completed: AtomicU64,
    draining: AtomicBool,
    /// This runner holds the lease ([`crate::lease`]) and fetches effects.
    active: AtomicBool,
    last_error: Mutex<Option<(String, String)>>,
    /// The last ack floor read per consumer (where a re-created one resumes).
    ack_floors: Mutex<std::collections::HashMap<&'static str, u64>>,
    idle: Notify,
}

impl Status {
    pub fn begin(&self) {
        let n = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        metrics::gauge!(m::IN_FLIGHT).set(f64::from(n));
    }

    pub fn end(&self) {
        let n = self.in_flight.fetch_sub(1, Ordering::SeqCst) - 1;
        metrics::gauge!(m::IN_FLIGHT).set(f64::from(n));
        if n == 0 {
            self.idle.notify_waiters();
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub fn completed(&self) {
        self.completed.fetch_add(1, Ordering::SeqCst);
    }

    pub fn completed_count(&self) -> u64 {
        self.completed.load(Ordering::SeqCst)
    }

    pub fn error(&self, e: &str) {
        let at = now();
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some((e.to_owned(), at));
    }

    pub fn last_error(&self) -> Option<(String, String)> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `consumer` had everything up to stream sequence `floor` acknowledged.
    pub fn set_ack_floor(&self, consumer: &'static str, floor: u64) {
        metrics::gauge!(m::ACK_FLOOR, "consumer" => consumer).set(floor as f64);
        self.ack_floors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(consumer, floor);
    }

    /// The last ack floor read for `consumer` (0: none yet).
    pub fn ack_floor(&self, consumer: &str) -> u64 {
        self.ack_floors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(consumer)
            .copied()
            .unwrap_or(0)
    }

    pub fn set_active(&self, active: bool) {
        metrics::gauge!(m::LEASE_HELD).set(if active { 1.0 } else { 0.0 });
        self.active.store(active, Ordering::SeqCst);
    }

    /// Whether this runner holds the lease and fetches effects (false: a standby).
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::SeqCst)
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Wait until nothing is in flight, up to `timeout`. True when idle.
    pub async fn wait_idle(&self, timeout: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.idle.notified();
            if self.in_flight() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.in_flight() == 0;
            }
        }
    }
}

/// Now, as RFC 3339 (UTC): the time written into records, statuses and the lease's value.
pub(crate) fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
