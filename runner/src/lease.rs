//! One active runner at a time: a runner fetches effects only while it holds the lease, the
//! key `checkout` of the `RUNNER_LEASE` bucket.
//!
//! Lanes keep one cart's effects in order only inside one process. Two runners fetching at
//! once (a second pod during an update, a node the orchestrator counts dead while its pod
//! still runs, a second `runner` started by hand) would share the consumers' messages, and
//! one cart's effects could overlap. The lease makes the second one a standby instead.
//!
//! - **Taking it** is a KV `create`, which fails while someone holds it. A runner that finds
//!   it held stands by, not ready, and tries again every `ttl / 4` (at least once a second).
//! - **Holding it**: the holder refreshes it every `ttl / 3`, a compare-and-set on its
//!   revision; the bucket's TTL removes the entry of a holder that stops refreshing.
//! - **Losing it**: another holder's entry is there, or no refresh succeeded for most of
//!   the TTL (failed ones are tried again every `ttl / 9`). The runner stops fetching at once;
//!   what it fetched but did not start goes back to the consumer (nak), what it started it
//!   finishes (effects are idempotent, under the same keys), and [`crate::run`] drains it
//!   and starts it again in the same process, as a standby.
//! - **By its own clock** ([`Validity`]): the lanes start nothing once 5/6 of the TTL has
//!   passed since the last answered write was sent, whether or not the lease task has run
//!   since. A runner frozen past its lease (`SIGSTOP`, a paused VM) that wakes with effects
//!   queued hands them back rather than racing the runner that took over, and a checkout
//!   effect asks again right before its provider call (one caught between the two hands its
//!   message back too). Only a freeze between that last check and the call itself leaves two
//!   runners calling at once: the idempotency keys guard that.
//! - **Giving it back**: a drained runner (SIGTERM, or the admin API's Drain) deletes its
//!   entry once nothing is in flight, so the next one starts at once; a crashed one's expires
//!   after `ttl`.
//!
//! A take or refresh whose answer was lost may have been applied: a mismatch whose entry names
//! this runner is adopted, not counted as a loss. Holder names are unique per term (each
//! start of a runner, [`holder_name`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use shared::subjects::RUNNER_LEASE_KEY;
use tokio_util::sync::CancellationToken;

/// How long [`Lease::forget`] tries after a loss.
const FORGET_WITHIN: Duration = Duration::from_secs(1);

/// A test hook run before each refresh: one that waits is a lease task that does not get to
/// run (a frozen or starved process) while the lanes go on.
pub type RefreshHook = Arc<dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// The lease's value: who holds it, and when that runner started (for operators: `nats kv
/// get RUNNER_LEASE checkout`).
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
    validity: Validity,
    before_refresh: Option<RefreshHook>,
}

/// Until when this runner's own monotonic clock says the lease is surely its own: the send
/// time of the last answered write plus [`Lease::keep`] (the entry lives `ttl` after it, so no
/// standby can have taken it before). The lanes start nothing outside it, so a runner that was
/// frozen past its lease (`SIGSTOP`, a paused VM, a long stall) starts no effect when it
/// wakes, even before its lease task has run and noticed the loss.
#[derive(Clone)]
pub struct Validity {
    base: Instant,
    /// Nanoseconds after `base`; 0: not held.
    until: Arc<AtomicU64>,
}

impl Validity {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            until: Arc::new(AtomicU64::new(0)),
        }
    }

    fn extend_to(&self, until: Instant) {
        let nanos = until.saturating_duration_since(self.base).as_nanos();
        self.until
            .fetch_max(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    fn end(&self) {
        self.until.store(0, Ordering::SeqCst);
    }

    /// True while the lease is surely this runner's.
    pub fn holds(&self) -> bool {
        let now = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        now < self.until.load(Ordering::SeqCst)
    }
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
        let value = serde_json::to_vec(&Holder {
            holder: holder.clone(),
            since: crate::state::now(),
        })
        .expect("a lease value serializes");
        Self {
            kv,
            holder,
            value: value.into(),
            ttl,
            validity: Validity::new(),
            before_refresh: None,
        }
    }

    /// With `hook` run before each refresh (tests).
    pub fn with_refresh_hook(mut self, hook: Option<RefreshHook>) -> Self {
        self.before_refresh = hook;
        self
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Whether the lease is surely this runner's now, by its own clock (what the lanes ask).
    pub fn validity(&self) -> Validity {
        self.validity.clone()
    }

    /// How often the holder refreshes.
    fn every(&self) -> Duration {
        self.ttl / 3
    }

    /// How long after an answered write was sent the lease is surely still this runner's:
    /// a little less than the entry lives, so this runner stops before a standby can start.
    fn keep(&self) -> Duration {
        self.ttl - self.every() / 2
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

    /// What the entry says after a write of this runner was refused: [`Write::Found`] when it
    /// names this runner (an earlier write whose answer was lost was applied), else who holds
    /// it.
    async fn after_refusal(&self) -> Result<Write, String> {
        Ok(match self.current().await? {
            Some((revision, h)) if h.holder == self.holder => Write::Found(revision),
            Some((_, h)) => Write::Held(format!("another runner holds it ({})", h.holder)),
            None => Write::Held("its entry is gone (expired)".into()),
        })
    }

    /// One try to take it.
    async fn try_take(&self) -> Result<Write, String> {
        match self.kv.create(RUNNER_LEASE_KEY, self.value.clone()).await {
            Ok(revision) => Ok(Write::Written(revision)),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => self.after_refusal().await,
            Err(e) => Err(e.to_string()),
        }
    }

    /// Wait until this runner holds it (`None`: `stop` came first).
    pub async fn take(&self, stop: &CancellationToken) -> Option<Taken> {
        let every = (self.ttl / 4).min(Duration::from_secs(1));
        let mut told = false;
        // The first try whose outcome is unknown: it may be the write that took the lease.
        let mut unanswered: Option<Instant> = None;
        loop {
            let sent = Instant::now();
            match self.try_take().await {
                Ok(Write::Written(revision)) => {
                    self.validity.extend_to(sent + self.keep());
                    return Some(Taken {
                        revision,
                        confirmed: Some(sent),
                    });
                }
                // Taken by an earlier try: its entry lives `ttl` after that try was sent, and
                // when that was is not known for sure. Counted as unconfirmed: `hold` refreshes
                // at once.
                Ok(Write::Found(revision)) => {
                    if let Some(sent) = unanswered {
                        self.validity.extend_to(sent + self.keep());
                    }
                    return Some(Taken {
                        revision,
                        confirmed: unanswered,
                    });
                }
                Ok(Write::Held(reason)) if !told => {
                    told = true;
                    tracing::warn!(%reason, me = %self.holder, "standing by for the runner lease");
                }
                Ok(Write::Held(_)) => {}
                Err(error) => {
                    unanswered.get_or_insert(sent);
                    tracing::warn!(%error, "could not take the runner lease");
                }
            }
            tokio::select! {
                () = stop.cancelled() => return None,
                () = tokio::time::sleep(every) => {}
            }
        }
    }

    /// One refresh from `revision`.
    async fn refresh(&self, revision: u64) -> Result<Write, String> {
        match self
            .kv
            .update(RUNNER_LEASE_KEY, self.value.clone(), revision)
            .await
        {
            Ok(revision) => Ok(Write::Written(revision)),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => self.after_refusal().await,
            Err(e) => Err(e.to_string()),
        }
    }

    /// Keep it until `stop` (then give it back, unless `abandon` was cancelled too: a crash)
    /// or until it is lost.
    pub async fn hold(
        &self,
        taken: Taken,
        stop: &CancellationToken,
        abandon: &CancellationToken,
    ) -> Ended {
        let (every, keep) = (self.every(), self.keep());
        let mut revision = taken.revision;
        // `None`: no answered write yet (refresh at once, and lose it if that keeps failing).
        let started = Instant::now();
        let mut confirmed = taken.confirmed;
        let mut wait = if confirmed.is_some() {
            every
        } else {
            Duration::ZERO
        };
        let ended = loop {
            tokio::select! {
                () = stop.cancelled() => break None,
                () = tokio::time::sleep(wait) => {}
            }
            if let Some(hook) = &self.before_refresh {
                hook().await;
            }
            let since = confirmed.unwrap_or(started);
            let sent = Instant::now();
            let left = keep.saturating_sub(since.elapsed());
            let again_now =
                match tokio::time::timeout(left.min(every), self.refresh(revision)).await {
                    Ok(Ok(Write::Written(next))) => {
                        revision = next;
                        confirmed = Some(sent);
                        self.validity.extend_to(sent + keep);
                        wait = every;
                        continue;
                    }
                    // An earlier refresh was applied: take its revision, but not its time (not
                    // known, and later than `since` anyway); write again at once.
                    Ok(Ok(Write::Found(found))) => {
                        revision = found;
                        true
                    }
                    Ok(Ok(Write::Held(reason))) => break Some(reason),
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "could not refresh the runner lease");
                        false
                    }
                    Err(_) => {
                        tracing::warn!("refreshing the runner lease timed out");
                        false
                    }
                };
            if since.elapsed() >= keep {
                break Some(format!(
                    "not refreshed for {:?}, near its TTL of {:?}",
                    since.elapsed(),
                    self.ttl
                ));
            }
            // Failed: try again sooner, within what is left.
            wait = if again_now {
                Duration::ZERO
            } else {
                (every / 3).min(keep.saturating_sub(since.elapsed()))
            };
        };
        self.validity.end();
        if let Some(reason) = ended {
            return Ended::Lost(reason);
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

impl Lease {
    /// After a loss: a refresh answered too late may still have been applied, and its entry
    /// would keep the next runner waiting for a TTL; delete it if it names this runner (best
    /// effort, for at most [`FORGET_WITHIN`]: a loss often means NATS is unreachable, and the
    /// term's stop waits for this).
    pub async fn forget(&self) {
        let forget = async {
            if let Ok(Some((revision, h))) = self.current().await
                && h.holder == self.holder
            {
                let _ = self
                    .kv
                    .delete_expect_revision(RUNNER_LEASE_KEY, Some(revision))
                    .await;
            }
        };
        if tokio::time::timeout(FORGET_WITHIN, forget).await.is_err() {
            tracing::warn!("could not clear the lost runner lease in time; it expires by itself");
        }
    }
}

/// The outcome of one write of the lease.
enum Write {
    /// Written: this runner holds it at this revision.
    Written(u64),
    /// Refused, but the entry names this runner: an earlier write was applied.
    Found(u64),
    /// Refused: why it is not this runner's.
    Held(String),
}

/// The lease as [`Lease::take`] took it.
#[derive(Debug, Clone, Copy)]
pub struct Taken {
    pub revision: u64,
    /// When the write that took it was sent, if that is known.
    pub confirmed: Option<Instant>,
}

/// A holder name unique to this term of this process: host, pid and a random part (a
/// restarted pod can reuse a pid, and a runner starts a new term after a lost lease).
pub fn holder_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "runner".into());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &random[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_holds_only_until_its_deadline_and_not_after_it_ends() {
        let v = Validity::new();
        assert!(!v.holds(), "nothing taken yet");
        v.extend_to(Instant::now() - Duration::from_millis(1));
        assert!(!v.holds(), "a deadline already past");
        v.extend_to(Instant::now() + Duration::from_secs(60));
        assert!(v.holds());
        v.extend_to(Instant::now() + Duration::from_secs(1));
        assert!(v.holds(), "an earlier deadline never shortens it");
        v.clone().end();
        assert!(!v.holds(), "ended through any clone");
    }
}
