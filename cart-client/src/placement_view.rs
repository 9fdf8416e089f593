//! A live view of `CART_NODES` (who is alive, where, draining or not) and `CART_PLACEMENT`
//! (which node owns each shard). Used by aggregate nodes to claim shards and by the gateway and
//! runner to route commands.
//!
//! Kept current by KV watches. Node entries expire by the bucket's TTL without a delete marker,
//! so both buckets are also re-read periodically, with a direct get rather than a consumer
//! (see [`PlacementView::entries`]); watches are recreated when they fail and every so often.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation};
use futures::StreamExt;
use shared::nats::direct_get::{
    BatchGetOptions, DirectGetError, MAX_MULTI_LAST_SUBJECTS, read_last_per_subject,
};
use shared::placement::{NodeInfo, ShardOwner};
use shared::subjects::{parse_node_key, parse_placement_key};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A watch (an ephemeral consumer: a change of the cluster's metadata to create) lives this
/// many resync intervals before it is recreated; the bucket is re-listed every interval
/// without a consumer.
const WATCH_LIFETIME: u32 = 30;

/// First wait before creating a failed watch again (doubling up to the resync interval).
const WATCH_RETRY_MIN: Duration = Duration::from_millis(250);

/// The header a KV delete or purge marker carries.
const KV_OPERATION: &str = "KV-Operation";

/// A shard's owner as stored, with the KV revision needed for compare-and-set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub node: String,
    pub epoch: u64,
    pub revision: u64,
}

#[derive(Clone)]
pub struct PlacementView {
    inner: Arc<Inner>,
}

struct Inner {
    /// For consumer-free reads of whole buckets (see [`PlacementView::entries`]).
    client: async_nats::Client,
    nodes_kv: kv::Store,
    placement_kv: kv::Store,
    shard_count: u32,
    nodes: RwLock<HashMap<String, NodeInfo>>,
    owners: RwLock<Vec<Option<Owner>>>,
    /// Bumped on every change, so waiters can react.
    changes: watch::Sender<u64>,
}

impl PlacementView {
    /// Read both buckets once, then keep them current in background tasks. The shards claimed
    /// so far are checked against `shard_count` (see [`check_shard_count`]); `setting` is the
    /// caller's variable for it, named in the error.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        client: async_nats::Client,
        nodes_kv: kv::Store,
        placement_kv: kv::Store,
        shard_count: u32,
        setting: &str,
        resync: Duration,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Self, async_nats::Error> {
        if shard_count as usize > MAX_MULTI_LAST_SUBJECTS {
            return Err(format!(
                "{setting} is {shard_count}; at most {MAX_MULTI_LAST_SUBJECTS} shards are supported"
            )
            .into());
        }
        let view = Self {
            inner: Arc::new(Inner {
                client,
                nodes_kv,
                placement_kv,
                shard_count,
                nodes: RwLock::new(HashMap::new()),
                owners: RwLock::new(vec![None; shard_count as usize]),
                changes: watch::channel(0).0,
            }),
        };
        let highest = while_starting(|| async {
            view.refresh_nodes().await?;
            view.refresh_owners().await
        })
        .await?;
        check_shard_count(highest, shard_count, setting)?;
        tracker.spawn(view.clone().watch_nodes(resync, shutdown.clone()));
        tracker.spawn(view.clone().watch_owners(resync * 10, shutdown));
        Ok(view)
    }

    pub fn shard_count(&self) -> u32 {
        self.inner.shard_count
    }

    pub fn owner(&self, shard: u32) -> Option<Owner> {
        self.inner
            .owners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(shard as usize)
            .cloned()
            .flatten()
    }

    pub fn owners(&self) -> Vec<Option<Owner>> {
        self.inner
            .owners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn node(&self, id: &str) -> Option<NodeInfo> {
        self.inner
            .nodes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Live nodes (entries not expired), draining ones included.
    pub fn nodes(&self) -> Vec<(String, NodeInfo)> {
        let mut v: Vec<_> = self
            .inner
            .nodes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The gRPC address of the shard's owner when that owner is alive.
    pub fn owner_addr(&self, shard: u32) -> Option<String> {
        let owner = self.owner(shard)?;
        self.node(&owner.node).map(|n| n.grpc_addr)
    }

    /// A receiver that changes whenever nodes or owners change.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Record an owner the caller learned first-hand (an aggregate's own claim, written with
    /// a compare-and-set), ahead of the watch that will report it.
    pub fn set_owner(&self, shard: u32, owner: Option<Owner>) {
        let mut owners = self.inner.owners.write().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = owners.get_mut(shard as usize)
            && *slot != owner
        {
            // Never go back to an older revision (a late watch update after our own CAS).
            if let (Some(cur), Some(new)) = (slot.as_ref(), owner.as_ref())
                && new.revision < cur.revision
            {
                return;
            }
            *slot = owner;
            drop(owners);
            self.bump();
        }
    }

    /// The `CART_PLACEMENT` bucket, for the aggregates' claims.
    pub fn placement_kv(&self) -> &kv::Store {
        &self.inner.placement_kv
    }

    /// The `CART_NODES` bucket, for the aggregates' heartbeats.
    pub fn nodes_kv(&self) -> &kv::Store {
        &self.inner.nodes_kv
    }

    fn bump(&self) {
        self.inner.changes.send_modify(|n| *n += 1);
    }

    fn set_nodes(&self, nodes: HashMap<String, NodeInfo>) {
        let mut cur = self.inner.nodes.write().unwrap_or_else(|p| p.into_inner());
        if *cur != nodes {
            *cur = nodes;
            drop(cur);
            self.bump();
        }
    }

    /// Re-read every node entry (entries past the TTL are gone from the bucket).
    pub async fn refresh_nodes(&self) -> Result<(), async_nats::Error> {
        let mut nodes = HashMap::new();
        for entry in self.entries(&self.inner.nodes_kv).await? {
            if entry.operation == Operation::Put
                && let Ok(info) = serde_json::from_slice::<NodeInfo>(&entry.value)
                && let Ok(id) = parse_node_key(&entry.key)
            {
                nodes.insert(id.to_owned(), info);
            }
        }
        self.set_nodes(nodes);
        Ok(())
    }

    /// Reads every owner entry; returns the highest shard claimed (also beyond the count).
    async fn refresh_owners(&self) -> Result<Option<u32>, async_nats::Error> {
        let mut highest = None;
        for entry in self.entries(&self.inner.placement_kv).await? {
            let Ok(shard) = parse_placement_key(&entry.key) else {
                continue;
            };
            if entry.operation == Operation::Put {
                highest = highest.max(Some(shard));
            }
            if shard < self.inner.shard_count {
                self.apply_owner_entry(shard, &entry);
            }
        }
        Ok(highest)
    }

    /// The latest entry of every key of `kv` (deleted ones as delete entries) in one direct
    /// get: no consumer, so it works while a killed NATS server is not yet declared offline
    /// (ephemeral consumers the cluster places on it never answer).
    async fn entries(&self, kv: &kv::Store) -> Result<Vec<kv::Entry>, async_nats::Error> {
        let stored = read_last_per_subject(
            &self.inner.client,
            &kv.stream_name,
            &format!("{}>", kv.prefix),
            &BatchGetOptions::default(),
        )
        .await?;
        Ok(stored
            .into_iter()
            .filter_map(|m| {
                let key = m.subject.strip_prefix(&kv.prefix)?.to_owned();
                let operation = match m.headers.get(KV_OPERATION).map(|v| v.as_str()) {
                    Some("DEL") => Operation::Delete,
                    Some("PURGE") => Operation::Purge,
                    _ => Operation::Put,
                };
                Some(kv::Entry {
                    bucket: kv.name.clone(),
                    key,
                    value: m.payload,
                    revision: m.sequence,
                    delta: 0,
                    created: m.time,
                    operation,
                    seen_current: true,
                })
            })
            .collect())
    }

    fn apply_owner_entry(&self, shard: u32, entry: &kv::Entry) {
        let owner = match entry.operation {
            Operation::Put => match serde_json::from_slice::<ShardOwner>(&entry.value) {
                Ok(o) => Some(Owner {
                    node: o.node,
                    epoch: o.epoch,
                    revision: entry.revision,
                }),
                Err(e) => {
                    tracing::warn!(key = %entry.key, error = %e, "ignoring an invalid placement entry");
                    return;
                }
            },
            Operation::Delete | Operation::Purge => None,
        };
        let mut owners = self.inner.owners.write().unwrap_or_else(|p| p.into_inner());
        let slot = &mut owners[shard as usize];
        if slot
            .as_ref()
            .is_some_and(|cur| cur.revision > entry.revision)
        {
            return;
        }
        if *slot != owner {
            *slot = owner;
            drop(owners);
            self.bump();
        }
    }

    fn apply_node_entry(&self, entry: &kv::Entry) {
        let Ok(id) = parse_node_key(&entry.key) else {
            return;
        };
        let mut nodes = self
            .inner
            .nodes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match entry.operation {
            Operation::Put => match serde_json::from_slice::<NodeInfo>(&entry.value) {
                Ok(info) => {
                    nodes.insert(id.to_owned(), info);
                }
                Err(_) => return,
            },
            Operation::Delete | Operation::Purge => {
                nodes.remove(id);
            }
        }
        self.set_nodes(nodes);
    }

    async fn watch_nodes(self, resync: Duration, shutdown: CancellationToken) {
        let view = self.clone();
        watch_bucket(
            self.inner.nodes_kv.clone(),
            resync,
            shutdown,
            move |entry| view.apply_node_entry(entry),
            || self.refresh_nodes(),
        )
        .await;
    }

    async fn watch_owners(self, resync: Duration, shutdown: CancellationToken) {
        let view = self.clone();
        watch_bucket(
            self.inner.placement_kv.clone(),
            resync,
            shutdown,
            move |entry| {
                if let Ok(shard) = parse_placement_key(&entry.key)
                    && shard < view.inner.shard_count
                {
                    view.apply_owner_entry(shard, entry);
                }
            },
            || async { self.refresh_owners().await.map(|_| ()) },
        )
        .await;
    }
}

/// Follow every change of `kv` with `on_entry`, and re-read the whole bucket with `refresh`
/// every `resync` (entries that expire by TTL leave no marker to watch; a stalled watch cannot
/// freeze the view). The watch is recreated when it fails or ends, and after
/// [`WATCH_LIFETIME`] intervals. `shutdown` ends it at once, also in the middle of a request
/// that waits for an unreachable server (each of them times out only after seconds: a term of
/// the runner that stops while NATS is away would wait for them one after another).
async fn watch_bucket<R, Fut>(
    kv: kv::Store,
    resync: Duration,
    shutdown: CancellationToken,
    on_entry: impl Fn(&kv::Entry),
    refresh: R,
) where
    R: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), async_nats::Error>>,
{
    let follow = async {
        let bucket = kv.name.clone();
        let mut backoff = WATCH_RETRY_MIN;
        loop {
            match kv.watch_all().await {
                Ok(mut w) => {
                    backoff = WATCH_RETRY_MIN;
                    let deadline = tokio::time::sleep(resync * WATCH_LIFETIME);
                    tokio::pin!(deadline);
                    let mut relist =
                        tokio::time::interval_at(tokio::time::Instant::now() + resync, resync);
                    relist.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tokio::select! {
                            () = &mut deadline => break,
                            _ = relist.tick() => {
                                if let Err(e) = refresh().await {
                                    tracing::warn!(bucket, error = %e, "cannot list the bucket");
                                }
                            }
                            next = w.next() => match next {
                                Some(Ok(entry)) => on_entry(&entry),
                                Some(Err(e)) => {
                                    tracing::warn!(bucket, error = %e, "KV watch failed; recreating it");
                                    break;
                                }
                                None => break,
                            }
                        }
                    }
                }
                // E.g. the ordered consumer was placed on a server that was just killed: ask again
                // soon (the listing below keeps the view current meanwhile).
                Err(e) => {
                    tracing::warn!(bucket, error = %e, "cannot watch the bucket; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(resync);
                }
            }
            if let Err(e) = refresh().await {
                tracing::warn!(bucket, error = %e, "cannot list the bucket");
            }
        }
    };
    shutdown.run_until_cancelled(follow).await;
}

/// Everyone routing carts (aggregates, gateway, runner) must hash them into as many shards as
/// the aggregates do, or most carts are asked of the wrong node first. A claimed shard at or
/// beyond `shard_count` proves a mismatch (an error naming `setting`); fewer claimed shards may
/// be a cluster still starting (a warning).
fn check_shard_count(highest: Option<u32>, shard_count: u32, setting: &str) -> Result<(), String> {
    let Some(highest) = highest else {
        return Ok(());
    };
    if highest >= shard_count {
        let aggregates =
            shared::config::env_var(shared::config::AGGREGATE_ENV_PREFIX, "shard_count");
        return Err(format!(
            "{setting} is {shard_count}, but the aggregates own shard {highest}: set it to the aggregates' {aggregates} (or, if every aggregate now runs {shard_count} shards, delete the keys of shards {shard_count} and above from CART_PLACEMENT)"
        ));
    }
    if highest + 1 < shard_count {
        tracing::warn!(
            shard_count,
            highest,
            "CART_PLACEMENT has no shard above {highest}; if the aggregates use {} shards, set {setting} to match",
            highest + 1
        );
    }
    Ok(())
}

/// Retries the first read of the buckets while JetStream is still starting: a stream just
/// created, or a cluster electing its leaders, has nobody answering direct gets for a few
/// seconds (`no responders`, a timeout). A service started alongside its NATS cluster waits
/// for that (up to ~20 s) instead of exiting; any other error ends the start at once.
async fn while_starting<T, F, Fut>(read: F) -> Result<T, async_nats::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, async_nats::Error>>,
{
    use backon::{ExponentialBuilder, Retryable};
    read.retry(
        ExponentialBuilder::default()
            .with_min_delay(STARTING_RETRY_MIN)
            .with_max_delay(Duration::from_secs(2))
            .with_max_times(15),
    )
    .when(|e| {
        matches!(
            e.downcast_ref::<DirectGetError>(),
            Some(DirectGetError::NoResponders { .. } | DirectGetError::Timeout { .. })
        )
    })
    .notify(|e, after| tracing::warn!(error = %e, ?after, "placement buckets not readable yet; retrying"))
    .await
}

/// The first wait of [`while_starting`].
const STARTING_RETRY_MIN: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests;
