//! How the gateway finds aggregate nodes: a [`PlacementView`] over `CART_NODES` and
//! `CART_PLACEMENT` (kept current by KV watches), plus optional static addresses, behind the
//! placement-aware [`CartClient`].

use std::time::Duration;

use cart_client::PlacementView;
use cart_client::{CartClient, ClientConfig};
use shared::nats::{ensure_kv, policies};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Error;
use crate::config::Config;

/// The client and the view it routes by. The buckets are created with the shared policy when
/// the gateway starts before any aggregate.
pub async fn connect(
    cfg: &Config,
    js: &async_nats::jetstream::Context,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<(CartClient, PlacementView), Error> {
    let nodes_kv = ensure_kv(js, &policies::cart_nodes(&cfg.streams)).await?;
    let placement_kv = ensure_kv(js, &policies::cart_placement(&cfg.streams)).await?;
    let view = PlacementView::start(
        js.client(),
        nodes_kv,
        placement_kv,
        cfg.shard_count,
        &Config::setting("shard_count"),
        Duration::from_millis(cfg.placement_resync_ms.max(100)),
        tracker,
        shutdown,
    )
    .await
    .map_err(|e| Error::Placement(e.to_string()))?;
    let client = CartClient::new(
        ClientConfig {
            shard_count: cfg.shard_count,
            timeout: cfg.upstream_timeout(),
            connect_timeout: Duration::from_millis(cfg.upstream_connect_timeout_ms.max(1)),
            attempts: cfg.upstream_attempts,
            tls: cfg.grpc_tls.clone(),
            ..ClientConfig::default()
        },
        Some(view.clone()),
        cfg.aggregate_addrs(),
    );
    Ok((client, view))
}
