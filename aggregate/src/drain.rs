//! Draining a node (SIGTERM or the admin RPC): announce draining so the other nodes claim this
//! node's shards, keep serving until they have (callers then get `not_owner` with the new
//! owner's address), finish in-flight commands, flush snapshots, leave `CART_NODES`, stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use proto::cart::v1 as pb;
use tokio_util::sync::CancellationToken;

use crate::carts::Carts;
use crate::placement::Placement;

pub struct Drainer {
    node_id: String,
    placement: Option<Arc<Placement>>,
    carts: Carts,
    /// Cancelled when the drain is complete: the servers stop.
    stop: CancellationToken,
    begun: AtomicBool,
    handoff_timeout: Duration,
    in_flight_timeout: Duration,
}

impl Drainer {
    pub fn new(
        node_id: String,
        placement: Option<Arc<Placement>>,
        carts: Carts,
        stop: CancellationToken,
        handoff_timeout: Duration,
        in_flight_timeout: Duration,
    ) -> Self {
        Self {
            node_id,
            placement,
            carts,
            stop,
            begun: AtomicBool::new(false),
            handoff_timeout,
            in_flight_timeout,
        }
    }

    pub fn is_draining(&self) -> bool {
        self.begun.load(Ordering::SeqCst)
    }

    /// Start draining (once); the node stops by itself when done.
    pub fn begin(self: &Arc<Self>) {
        if self.begun.swap(true, Ordering::SeqCst) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move { this.drain_and_stop().await });
    }

    /// Wait until the node owns no shard (or the hand-off timeout, or no other node is live
    /// to take them); returns the shards still owned.
    pub async fn wait_handed_off(&self) -> usize {
        let Some(p) = &self.placement else { return 0 };
        p.wait_handed_off(self.handoff_timeout).await;
        p.owned_shards()
    }

    async fn drain_and_stop(&self) {
        tracing::info!(node = %self.node_id, "draining");
        if let Some(p) = &self.placement {
            let handed_off = p.drain(self.handoff_timeout).await;
            tracing::info!(
                handed_off,
                owned = p.owned_shards(),
                "shard hand-off finished"
            );
        }
        if !self.carts.wait_idle(self.in_flight_timeout).await {
            tracing::warn!(
                in_flight = self.carts.in_flight(),
                "stopping with commands still in flight"
            );
        }
        // Bounded: a node that cannot write its snapshots still stops (the stream has it all).
        if tokio::time::timeout(self.handoff_timeout, self.carts.flush_snapshots())
            .await
            .is_err()
        {
            tracing::warn!("stopping before every snapshot was written");
        }
        self.carts.watchers().close_all();
        if let Some(p) = &self.placement {
            p.leave().await;
        }
        tracing::info!(node = %self.node_id, "drained; stopping");
        self.stop.cancel();
    }

    pub fn status(&self, carts: &Carts) -> pb::StatusResponse {
        pb::StatusResponse {
            node_id: self.node_id.clone(),
            draining: self.is_draining(),
            owned_shards: self.placement.as_ref().map_or(0, |p| p.owned_shards()) as u32,
            cached_carts: carts.cached_carts(),
            in_flight: carts.in_flight(),
        }
    }
}
