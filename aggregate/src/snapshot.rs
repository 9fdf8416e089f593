//! Snapshots in `CART_SNAPSHOTS`: `{stream_seq, revision, state}` per cart. An optimisation
//! only: a load always completes a snapshot from the stream, and a snapshot that does not match
//! the stream is ignored. Writes happen off the command path, in a background task that keeps
//! only the newest state per cart when it falls behind.

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::jetstream::kv;
use cart_domain::CartState;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics as m;

/// How long a stopping writer may still spend on what is queued (a snapshot given up is only
/// a slower load: the stream has every event).
const FINAL_FLUSH_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

/// The shape of the state a snapshot holds ([`cart_domain::cart::STATE_SCHEMA`]).
pub use cart_domain::cart::STATE_SCHEMA;

#[derive(Deserialize)]
struct SnapshotValue {
    /// The shape its state was written in (0: before shapes were named).
    #[serde(default)]
    schema: u32,
    stream_seq: u64,
    revision: u64,
    state: CartState,
}

/// A snapshot's shape alone, for one whose state does not decode (a newer shape may not).
#[derive(Deserialize)]
struct SnapshotHeader {
    #[serde(default)]
    schema: u32,
}

/// The serialized form of [`SnapshotValue`], borrowing the state.
#[derive(Serialize)]
struct SnapshotRef<'a> {
    schema: u32,
    stream_seq: u64,
    revision: u64,
    state: &'a CartState,
}

/// A cart's snapshot as [`SnapshotStore::load`] found it.
pub enum Snapshot {
    /// None, or one that cannot be used (logged): the cart is read from its stream.
    Absent,
    Found(Box<CartState>),
    /// Written by a newer build in a shape this one would read lossily: the cart is read from
    /// its stream and not written as a snapshot by this build.
    Newer,
}

enum Job {
    Write(String, Arc<CartState>),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct SnapshotStore {
    kv: kv::Store,
    tx: mpsc::Sender<Job>,
    /// A snapshot every this many messages of a cart; 0: snapshots are off (none is written).
    every: u64,
}

impl SnapshotStore {
    /// Start the writer task (owned by `tracker`, stopped by `shutdown` after a final flush of
    /// at most [`FINAL_FLUSH_WITHIN`]), for a snapshot every `every` messages of a cart (0: off).
    pub fn start(
        kv: kv::Store,
        every: u64,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        tracker.spawn(writer(kv.clone(), rx, shutdown));
        Self { kv, tx, every }
    }

    pub fn enabled(&self) -> bool {
        self.every > 0
    }

    /// Whether a cart at `revision`, last snapshot at `snapshot_revision`, is due one.
    pub fn due(&self, revision: u64, snapshot_revision: u64) -> bool {
        self.enabled() && revision >= snapshot_revision + self.every
    }

    /// The snapshot of `key`, if one exists and decodes in a shape this build knows. Errors
    /// are logged and treated as "no snapshot" (the cart is then rebuilt from the stream).
    pub async fn load(&self, key: &str) -> Snapshot {
        let bytes = match self.kv.get(key).await {
            Ok(Some(v)) => v,
            Ok(None) => return Snapshot::Absent,
            Err(e) => {
                tracing::warn!(key, error = %e, "snapshot read failed; loading from the stream");
                return Snapshot::Absent;
            }
        };
        let ignored = |why: &str| {
            metrics::counter!(m::SNAPSHOTS_IGNORED).increment(1);
            tracing::warn!(key, why, "snapshot ignored; loading from the stream");
            Snapshot::Absent
        };
        let newer = || {
            metrics::counter!(m::SNAPSHOTS_IGNORED).increment(1);
            tracing::warn!(
                key,
                ours = STATE_SCHEMA,
                "snapshot written by a newer build; loading from the stream, and this build \
                 writes no snapshot of the cart"
            );
            Snapshot::Newer
        };
        match serde_json::from_slice::<SnapshotValue>(&bytes) {
            Ok(v) if v.schema > STATE_SCHEMA => newer(),
            Ok(v) if v.stream_seq == v.state.version && v.revision == v.state.revision => {
                Snapshot::Found(Box::new(v.state))
            }
            Ok(_) => ignored("its header disagrees with its state"),
            Err(e) => match serde_json::from_slice::<SnapshotHeader>(&bytes) {
                Ok(h) if h.schema > STATE_SCHEMA => newer(),
                _ => ignored(&format!("it does not decode: {e}")),
            },
        }
    }

    /// Queue a snapshot write. Never waits: if the writer is far behind, the write is dropped
    /// (a later one, or the stream, covers it).
    pub fn offer(&self, key: String, state: Arc<CartState>) {
        if self.enabled() && self.tx.try_send(Job::Write(key, state)).is_err() {
            metrics::counter!(m::SNAPSHOT_WRITES, "result" => "dropped").increment(1);
        }
    }

    /// Queue a snapshot write, waiting for room in the queue (drain: none may be dropped).
    pub async fn queue(&self, key: String, state: Arc<CartState>) {
        if self.enabled() && self.tx.send(Job::Write(key, state)).await.is_err() {
            metrics::counter!(m::SNAPSHOT_WRITES, "result" => "dropped").increment(1);
        }
    }

    /// Wait until every queued snapshot is written (drain).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Job::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

async fn writer(kv: kv::Store, mut rx: mpsc::Receiver<Job>, shutdown: CancellationToken) {
    let mut pending: HashMap<String, Arc<CartState>> = HashMap::new();
    let mut waiters = Vec::new();
    let take = |job, pending: &mut HashMap<_, _>, waiters: &mut Vec<_>| match job {
        Job::Write(key, state) => {
            pending.insert(key, state);
        }
        Job::Flush(done) => waiters.push(done),
    };
    // Once stopping, what is still queued gets a short while: with NATS away each write
    // would wait for its own request timeout, one after another.
    let give_up = async {
        shutdown.cancelled().await;
        tokio::time::sleep(FINAL_FLUSH_WITHIN).await;
    };
    tokio::pin!(give_up);
    loop {
        let job = tokio::select! {
            job = rx.recv() => job,
            () = shutdown.cancelled() => None,
        };
        // Stopping: a final flush of whatever is still queued.
        let mut stopping = job.is_none();
        if let Some(job) = job {
            take(job, &mut pending, &mut waiters);
        }
        // Coalesce everything already queued: only the newest state per cart is written.
        while let Ok(job) = rx.try_recv() {
            take(job, &mut pending, &mut waiters);
        }
        let batch: Vec<_> = pending.drain().collect();
        let mut written = 0;
        let writes = async {
            for (key, state) in &batch {
                write(&kv, key, state).await;
                written += 1;
            }
        };
        tokio::select! {
            () = writes => {}
            () = &mut give_up => {
                let dropped = batch.len() - written + rx.len();
                metrics::counter!(m::SNAPSHOT_WRITES, "result" => "dropped").increment(dropped as u64);
                tracing::warn!(dropped, "stopping before every snapshot was written");
                stopping = true;
            }
        }
        for done in waiters.drain(..) {
            let _ = done.send(());
        }
        if stopping {
            break;
        }
    }
}

async fn write(kv: &kv::Store, key: &str, state: &CartState) {
    let value = SnapshotRef {
        schema: STATE_SCHEMA,
        stream_seq: state.version,
        revision: state.revision,
        state,
    };
    let bytes = match serde_json::to_vec(&value) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(key, error = %e, "snapshot does not serialize");
            return;
        }
    };
    match kv.put(key, bytes.into()).await {
        Ok(_) => metrics::counter!(m::SNAPSHOT_WRITES, "result" => "ok").increment(1),
        Err(e) => {
            metrics::counter!(m::SNAPSHOT_WRITES, "result" => "error").increment(1);
            tracing::warn!(key, error = %e, "snapshot write failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Snapshots are a cache (the stream has every event): a node that stops while NATS is
    /// away gives up on the writes still queued instead of waiting for each one's timeout.
    #[tokio::test]
    async fn a_stop_with_nats_away_does_not_wait_for_every_queued_snapshot() {
        let Some(mut nats) = shared::test_support::NatsServer::start().await else {
            return;
        };
        if !nats.can_restart() {
            eprintln!("SKIPPED: an external NATS server (CART_TEST_NATS_URL) cannot be killed");
            return;
        }
        let kv = nats
            .jetstream()
            .await
            .create_key_value(kv::Config {
                bucket: "SNAPSHOTS".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let (tracker, shutdown) = (TaskTracker::new(), CancellationToken::new());
        let store = SnapshotStore::start(kv, 1, &tracker, shutdown.clone());
        nats.kill();
        for cart in 0..4 {
            store
                .queue(
                    format!("cart-{cart}"),
                    Arc::new(CartState::new(
                        cart_domain::ids::CartId::parse("c").unwrap(),
                    )),
                )
                .await;
        }
        shutdown.cancel();
        tracker.close();
        // Each write waits for its acknowledgement up to the request timeout (5 s): four of
        // them one after another took ~20 s.
        tokio::time::timeout(FINAL_FLUSH_WITHIN * 4, tracker.wait())
            .await
            .expect("the writer stops within its final-flush bound");
    }
}
