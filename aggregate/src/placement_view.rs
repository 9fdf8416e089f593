//! A live view of `CART_NODES` (who is alive, where, draining or not) and `CART_PLACEMENT`
//! (which node owns each shard). Used by aggregate nodes to claim shards and by the gateway and
//! runner to route commands.
//!
//! Kept current by KV watches. Node entries expire by the bucket's TTL without a delete marker,
//! so the node list is also re-read periodically; both watches are recreated when they fail or
//! after a resync interval, so a stalled watch cannot freeze the view.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation};
use futures::{StreamExt, TryStreamExt};
use shared::placement::{NodeInfo, ShardOwner};
use shared::subjects::{parse_node_key, parse_placement_key};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
    pub async fn start(
        nodes_kv: kv::Store,
        placement_kv: kv::Store,
        shard_count: u32,
        setting: &str,
        resync: Duration,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Self, async_nats::Error> {
        let view = Self {
            inner: Arc::new(Inner {
                nodes_kv,
                placement_kv,
                shard_count,
                nodes: RwLock::new(HashMap::new()),
                owners: RwLock::new(vec![None; shard_count as usize]),
                changes: watch::channel(0).0,
            }),
        };
        view.refresh_nodes().await?;
        let highest = view.refresh_owners().await?;
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

    pub(crate) fn set_owner(&self, shard: u32, owner: Option<Owner>) {
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

    pub(crate) fn placement_kv(&self) -> &kv::Store {
        &self.inner.placement_kv
    }

    pub(crate) fn nodes_kv(&self) -> &kv::Store {
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
        let kv = &self.inner.nodes_kv;
        let keys: Vec<String> = kv.keys().await?.try_collect().await?;
        let mut nodes = HashMap::new();
        for key in keys {
            if let Some(bytes) = kv.get(&key).await?
                && let Ok(info) = serde_json::from_slice::<NodeInfo>(&bytes)
                && let Ok(id) = parse_node_key(&key)
            {
                nodes.insert(id.to_owned(), info);
            }
        }
        self.set_nodes(nodes);
        Ok(())
    }

    /// Reads every owner entry; returns the highest shard claimed (also beyond the count).
    async fn refresh_owners(&self) -> Result<Option<u32>, async_nats::Error> {
        let kv = &self.inner.placement_kv;
        let keys: Vec<String> = kv.keys().await?.try_collect().await?;
        let mut highest = None;
        for key in keys {
            let Ok(shard) = parse_placement_key(&key) else {
                continue;
            };
            highest = highest.max(Some(shard));
            if shard < self.inner.shard_count
                && let Some(entry) = kv.entry(&key).await?
            {
                self.apply_owner_entry(shard, &entry);
            }
        }
        Ok(highest)
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

/// Follow every change of `kv` with `on_entry`; recreate the watch when it fails, ends or has
/// run for `resync` (a stalled watch cannot freeze the view), re-reading the whole bucket with
/// `refresh` each time.
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
    let bucket = kv.name.clone();
    loop {
        let watch = kv.watch_all().await;
        let deadline = tokio::time::sleep(resync);
        tokio::pin!(deadline);
        match watch {
            Ok(mut w) => loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = &mut deadline => break,
                    next = w.next() => match next {
                        Some(Ok(entry)) => on_entry(&entry),
                        Some(Err(e)) => {
                            tracing::warn!(bucket, error = %e, "KV watch failed; recreating it");
                            break;
                        }
                        None => break,
                    }
                }
            },
            Err(e) => {
                tracing::warn!(bucket, error = %e, "cannot watch the bucket; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = &mut deadline => {}
                }
            }
        }
        if let Err(e) = refresh().await {
            tracing::warn!(bucket, error = %e, "cannot list the bucket");
        }
    }
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
        let aggregates = shared::config::env_var(crate::Config::ENV_PREFIX, "shard_count");
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
