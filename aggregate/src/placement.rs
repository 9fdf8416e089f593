//! This node's part in placement: it registers in `CART_NODES` (refreshed well inside the
//! bucket's TTL, so a dead node disappears after the TTL), and claims exactly the shards that
//! rendezvous hashing assigns to it among the live, non-draining nodes. Claims are
//! compare-and-set on the shard's KV revision with an increasing epoch, so concurrent nodes
//! converge instead of overwriting each other; a node never takes a shard from another one
//! unless hashing says the shard is its own (join) or the owner is gone (death, drain).
//!
//! Placement only routes: correctness comes from the expected-sequence append, so two nodes
//! briefly serving the same cart is slow, never wrong.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use shared::ApiError;
use shared::placement::{NodeInfo, ShardOwner, rendezvous_owner};
use shared::subjects::{node_key, placement_key};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics as m;
use cart_client::placement_view::{Owner, PlacementView};

#[derive(Debug, Clone)]
pub struct PlacementConfig {
    pub node_id: String,
    /// The gRPC address other services use to reach this node.
    pub advertise_addr: String,
    /// How often the node entry is refreshed (well inside the bucket TTL).
    pub heartbeat: Duration,
}

/// Longest [`Placement::leave`] waits for a heartbeat's put in flight.
const LEAVE_WAIT: Duration = Duration::from_secs(2);

pub struct Placement {
    cfg: PlacementConfig,
    view: PlacementView,
    draining: AtomicBool,
    /// Set by [`Placement::leave`]: no more heartbeats may re-register the node.
    left: AtomicBool,
    /// Held by a heartbeat across its check of `left` and its put, and by `leave` across its
    /// delete: a heartbeat's put never lands after the delete (the node would linger as an
    /// entry, draining, until its TTL).
    registration: tokio::sync::Mutex<()>,
    /// Set after the first reconciliation (the node has claimed its shards once).
    ready: AtomicBool,
    /// Per shard: bumped each time this node gains the shard, so cached carts of the shard are
    /// caught up with what the previous owner wrote.
    epochs: Vec<AtomicU64>,
    wake: Notify,
    /// The node's `CART_NODES` key and entry (its draining flag is set per heartbeat).
    key: String,
    info: NodeInfo,
}

impl Placement {
    /// Register the node and start heartbeating and reconciling.
    pub async fn start(
        cfg: PlacementConfig,
        view: PlacementView,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, async_nats::Error> {
        let key = node_key(&cfg.node_id).map_err(|e| format!("node id: {e}"))?;
        let info = NodeInfo::new(cfg.advertise_addr.clone(), time::OffsetDateTime::now_utc());
        let this = Arc::new(Self {
            epochs: (0..view.shard_count()).map(|_| AtomicU64::new(0)).collect(),
            cfg,
            view,
            draining: AtomicBool::new(false),
            left: AtomicBool::new(false),
            registration: tokio::sync::Mutex::new(()),
            ready: AtomicBool::new(false),
            wake: Notify::new(),
            key,
            info,
        });
        this.heartbeat().await?;
        this.view.refresh_nodes().await?;
        // `shutdown` comes after the drain handed the shards off: it cuts a heartbeat or a
        // claim at once, also one that waits for an unreachable server to answer.
        let heartbeats = this.clone().heartbeat_loop();
        let claims = this.clone().reconcile_loop();
        tracker.spawn(shutdown.clone().run_until_cancelled_owned(heartbeats));
        tracker.spawn(shutdown.run_until_cancelled_owned(claims));
        Ok(this)
    }

    pub fn node_id(&self) -> &str {
        &self.cfg.node_id
    }

    pub fn view(&self) -> &PlacementView {
        &self.view
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Refuse a request for a shard another live node owns, naming that node's address.
    /// Unowned shards and shards of dead owners are served (the append fence keeps that safe).
    pub fn check(&self, shard: u32) -> Result<(), ApiError> {
        match self.view.owner(shard) {
            Some(o) if o.node != self.cfg.node_id => match self.view.node(&o.node) {
                Some(n) => Err(ApiError::not_owner(n.grpc_addr)),
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }

    pub fn epoch(&self, shard: u32) -> u64 {
        self.epochs
            .get(shard as usize)
            .map_or(0, |e| e.load(Ordering::SeqCst))
    }

    pub fn owned_shards(&self) -> usize {
        self.view
            .owners()
            .iter()
            .filter(|o| o.as_ref().is_some_and(|o| o.node == self.cfg.node_id))
            .count()
    }

    /// Stop claiming shards, let the other nodes take ours, and wait until they have (or
    /// `timeout`, or there is no other live node to take them). True when all were handed off.
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.draining.store(true, Ordering::SeqCst);
        if let Err(e) = self.heartbeat().await {
            tracing::warn!(error = %e, "could not announce draining");
        }
        self.wake.notify_one();
        self.wait_handed_off(timeout).await
    }

    /// Wait until the node owns no shard (true), or `timeout`, or there is no other live node
    /// to take them.
    pub async fn wait_handed_off(&self, timeout: Duration) -> bool {
        let mut changes = self.view.changes();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.owned_shards() == 0 {
                return true;
            }
            let others = self
                .view
                .nodes()
                .iter()
                .any(|(id, n)| *id != self.cfg.node_id && !n.draining);
            if !others {
                tracing::warn!("no other live node to hand shards to; stopping anyway");
                return false;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return self.owned_shards() == 0,
            }
        }
    }

    /// Remove the node entry so others react now instead of after the TTL.
    pub async fn leave(&self) {
        self.left.store(true, Ordering::SeqCst);
        // A heartbeat already past its check finishes its put first (bounded: a put that hangs
        // on NATS does not hold the drain; its entry then expires by TTL, as before).
        let _registration = tokio::time::timeout(LEAVE_WAIT, self.registration.lock()).await;
        if let Err(e) = self.view.nodes_kv().delete(&self.key).await {
            tracing::warn!(error = %e, "could not remove the node entry; it expires by TTL");
        }
    }

    async fn heartbeat(&self) -> Result<(), async_nats::Error> {
        let _registration = self.registration.lock().await;
        if self.left.load(Ordering::SeqCst) {
            return Ok(());
        }
        let info = NodeInfo {
            draining: self.is_draining(),
            ..self.info.clone()
        };
        self.view
            .nodes_kv()
            .put(&self.key, Bytes::from(serde_json::to_vec(&info)?))
            .await?;
        Ok(())
    }

    /// Never ends by itself: [`Placement::start`] runs it until its shutdown.
    async fn heartbeat_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.cfg.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.heartbeat().await {
                tracing::warn!(error = %e, "node heartbeat failed");
            }
        }
    }

    /// Never ends by itself: [`Placement::start`] runs it until its shutdown.
    async fn reconcile_loop(self: Arc<Self>) {
        let mut changes = self.view.changes();
        let mut owned: HashSet<u32> = HashSet::new();
        loop {
            self.reconcile().await;
            let now_owned = self.owned_set();
            for gained in now_owned.difference(&owned) {
                self.epochs[*gained as usize].fetch_add(1, Ordering::SeqCst);
            }
            let moved = now_owned.symmetric_difference(&owned).count();
            if moved > 0 {
                metrics::counter!(m::PLACEMENT_CHANGES).increment(moved as u64);
                tracing::info!(owned = now_owned.len(), moved, "shard ownership changed");
            }
            metrics::gauge!(m::OWNED_SHARDS).set(now_owned.len() as f64);
            owned = now_owned;
            self.ready.store(true, Ordering::SeqCst);
            tokio::select! {
                _ = changes.changed() => {}
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.cfg.heartbeat) => {}
            }
        }
    }

    fn owned_set(&self) -> HashSet<u32> {
        self.view
            .owners()
            .iter()
            .enumerate()
            .filter(|(_, o)| o.as_ref().is_some_and(|o| o.node == self.cfg.node_id))
            .map(|(i, _)| i as u32)
            .collect()
    }

    /// Claim every shard hashing assigns to this node that it does not own yet.
    async fn reconcile(&self) {
        if self.is_draining() {
            return;
        }
        let nodes = self.view.nodes();
        let mut live: Vec<&str> = nodes
            .iter()
            .filter(|(_, n)| !n.draining)
            .map(|(id, _)| id.as_str())
            .collect();
        if !live.contains(&self.cfg.node_id.as_str()) {
            live.push(&self.cfg.node_id);
        }
        for shard in 0..self.view.shard_count() {
            if rendezvous_owner(shard, live.iter().copied()) != Some(self.cfg.node_id.as_str()) {
                continue;
            }
            let current = self.view.owner(shard);
            if current.as_ref().is_some_and(|o| o.node == self.cfg.node_id) {
                continue;
            }
            self.claim(shard, current).await;
        }
    }

    async fn claim(&self, shard: u32, current: Option<Owner>) {
        let key = placement_key(shard);
        let value = ShardOwner {
            node: self.cfg.node_id.clone(),
            epoch: current.as_ref().map_or(1, |o| o.epoch + 1),
        };
        let Ok(bytes) = serde_json::to_vec(&value) else {
            return;
        };
        let kv = self.view.placement_kv();
        let result = match &current {
            None => kv
                .create(&key, bytes.into())
                .await
                .map_err(|e| e.to_string()),
            Some(o) => kv
                .update(&key, bytes.into(), o.revision)
                .await
                .map_err(|e| e.to_string()),
        };
        match result {
            Ok(revision) => {
                tracing::debug!(shard, epoch = value.epoch, "claimed shard");
                self.view.set_owner(
                    shard,
                    Some(Owner {
                        node: value.node,
                        epoch: value.epoch,
                        revision,
                    }),
                );
            }
            // Someone else wrote first: the watch brings their value, the next round decides.
            Err(e) => tracing::debug!(shard, error = %e, "shard claim lost a race"),
        }
    }
}
