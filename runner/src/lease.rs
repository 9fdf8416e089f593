//! One active runner at a time: a runner fetches effects only while it holds the lease, the
//! key `checkout` of the `RUNNER_LEASE` bucket.
//!
//! Lanes keep one cart's effects in order only inside one process. Two runners fetching at
//! once (a second pod during an update, a node the orchestrator counts dead while its pod
//! still runs, a second `runner` started by hand) would share the consumers' messages, and
//! one cart's effects could overlap. The lease makes the second one a standby instead.
//!
//! - **Taking it** is a KV `create`, which fails while someone holds it. A runner that finds
//!   it held stands by, not ready, and tries again every `ttl / 4` (at most every second).
//! - **Holding it**: the holder refreshes it every `ttl / 3`, a compare-and-set on its
//!   revision; the bucket's TTL removes the entry of a holder that stops refreshing.
//! - **Losing it**: another holder's entry is there, or no refresh succeeded for most of
//!   the TTL (failed ones are tried again every `ttl / 9`). The runner stops fetching at once, finishes what its
//!   lanes hold (effects are idempotent, under the same keys), and [`crate::run`] returns an
//!   error: the process exits and comes back as a standby.
//! - **Giving it back**: a drained runner deletes its entry, so the next one starts at once;
//!   a crashed one's expires after `ttl`.
//!
//! A take or refresh whose answer was lost may have been applied: a mismatch whose entry names
//! this runner is adopted, not counted as a loss. Holder names are unique per process.

use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use shared::subjects::RUNNER_LEASE_KEY;
use tokio_util::sync::CancellationToken;

/// The lease's value: who holds it, since when (for operators: `nats kv get RUNNER_LEASE
/// checkout`).
#[derive(Debug, Serialize, Deserialize)]
pub struct Holder {
    pub holder: String,
    pub since: String,
}

pub struct Lease {
    kv: kv::Store,
    holder: String,
    value: Bytes,
    ttl: Duration,
}

/// How holding the lease ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// Stopped (drained): the entry was deleted for the next runner.
    Released,
    /// Stopped like a crash: the entry is left to expire.
    Abandoned,
    /// Someone else holds it, or it could not be kept: the reason.
    Lost(String),
}

impl Lease {
    pub fn new(kv: kv::Store, holder: String, ttl: Duration) -> Self {
        let since = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let value = serde_json::to_vec(&Holder {
            holder: holder.clone(),
            since,
        })
        .expect("a lease value serializes");
        Self {
            kv,
            holder,
            value: value.into(),
            ttl,
        }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The entry now, with its revision (`None`: none, or a deleted one).
    async fn current(&self) -> Result<Option<(u64, Holder)>, String> {
        let entry = self
            .kv
            .entry(RUNNER_LEASE_KEY)
            .await
            .map_err(|e| e.to_string())?;
        Ok(entry
            .filter(|e| e.operation == Operation::Put)
            .and_then(|e| Some((e.revision, serde_json::from_slice(&e.value).ok()?))))
    }

    /// The entry's revision when it names this runner, `None` when it names another or is
    /// gone.
    async fn mine(&self) -> Result<Option<u64>, String> {
        Ok(self
            .current()
            .await?
            .filter(|(_, h)| h.holder == self.holder)
            .map(|(revision, _)| revision))
    }

    /// One try: `Some(revision)` when this runner holds it now, `None` when another does.
    pub async fn try_take(&self) -> Result<Option<u64>, String> {
        match self.kv.create(RUNNER_LEASE_KEY, self.value.clone()).await {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => self.mine().await,
            Err(e) => Err(e.to_string()),
        }
    }

    /// Wait until this runner holds it (`None`: `stop` came first). Returns the revision,
    /// and when the try that took it was sent (the entry lives at least `ttl` after).
    pub async fn take(&self, stop: &CancellationToken) -> Option<(u64, Instant)> {
        let every = (self.ttl / 4).min(Duration::from_secs(1));
        let mut told = false;
        loop {
            let sent = Instant::now();
            match self.try_take().await {
                Ok(Some(revision)) => return Some((revision, sent)),
                Ok(None) if !told => {
                    told = true;
                    let holder = self.current().await.ok().flatten().map(|(_, h)| h.holder);
                    tracing::warn!(
                        holder = holder.as_deref().unwrap_or("?"),
                        me = %self.holder,
                        "another runner holds the lease: standing by"
                    );
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "could not take the runner lease"),
            }
            tokio::select! {
                () = stop.cancelled() => return None,
                () = tokio::time::sleep(every) => {}
            }
        }
    }

    /// One refresh: `Some(revision)` still held, `None` another holds it.
    async fn refresh(&self, revision: u64) -> Result<Option<u64>, String> {
        match self
            .kv
            .update(RUNNER_LEASE_KEY, self.value.clone(), revision)
            .await
        {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => self.mine().await,
            Err(e) => Err(e.to_string()),
        }
    }

    /// Keep it from `revision`, taken by a write sent at `taken`, until `stop` (then give it
    /// back, unless `abandon` was cancelled too: a crash) or until it is lost.
    pub async fn hold(
        &self,
        (mut revision, taken): (u64, Instant),
        stop: &CancellationToken,
        abandon: &CancellationToken,
    ) -> Ended {
        let every = self.ttl / 3;
        // The entry lives at least `ttl` after the last refresh that succeeded was sent; it
        // counts as lost a little before, so that this runner stops before a standby can start.
        let keep = self.ttl - every / 2;
        let mut confirmed = taken;
        let mut wait = every;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
            }
            let sent = Instant::now();
            let left = keep.saturating_sub(confirmed.elapsed());
            match tokio::time::timeout(left.min(every), self.refresh(revision)).await {
                Ok(Ok(Some(next))) => {
                    revision = next;
                    confirmed = sent;
                    wait = every;
                    continue;
                }
                Ok(Ok(None)) => return Ended::Lost("another runner holds it".into()),
                Ok(Err(error)) => tracing::warn!(%error, "could not refresh the runner lease"),
                Err(_) => tracing::warn!("refreshing the runner lease timed out"),
            }
            if confirmed.elapsed() >= keep {
                return Ended::Lost(format!(
                    "not refreshed for {:?}, near its TTL of {:?}",
                    confirmed.elapsed(),
                    self.ttl
                ));
            }
            // Failed: try again sooner, within what is left.
            wait = (every / 3).min(keep.saturating_sub(confirmed.elapsed()));
        }
        if abandon.is_cancelled() {
            return Ended::Abandoned;
        }
        if let Err(error) = self
            .kv
            .delete_expect_revision(RUNNER_LEASE_KEY, Some(revision))
            .await
        {
            tracing::warn!(%error, "could not give the runner lease back; it expires by itself");
        }
        Ended::Released
    }
}

/// A holder name unique to this process: host, pid and a random part (a restarted pod can
/// reuse a pid).
pub fn holder_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "runner".into());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &random[..8])
}
