//! How the gateway finds aggregate nodes: a [`PlacementView`] over `CART_NODES` and
//! `CART_PLACEMENT` (kept current by KV watches), plus optional static addresses, behind the
//! placement-aware [`CartClient`].

use std::time::Duration;

use aggregate::client::{CartClient, ClientConfig};
use aggregate::placement_view::PlacementView;
use async_nats::jetstream::kv;
use futures::TryStreamExt;
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
    check_shard_count(&placement_kv, cfg.shard_count).await?;
    let view = PlacementView::start(
        nodes_kv,
        placement_kv,
        cfg.shard_count,
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
            ..ClientConfig::default()
        },
        Some(view.clone()),
        cfg.aggregate_addrs(),
    );
    Ok((client, view))
}

/// The gateway must hash carts into as many shards as the aggregates do, or it asks the wrong
/// node first for most carts. Shards the aggregates claimed beyond the configured count prove
/// a mismatch (start-up error); fewer claimed shards may be a cluster still starting (warning).
async fn check_shard_count(placement: &kv::Store, shard_count: u32) -> Result<(), Error> {
    let keys: Vec<String> = placement
        .keys()
        .await
        .map_err(|e| Error::Placement(format!("cannot list CART_PLACEMENT: {e}")))?
        .try_collect()
        .await
        .map_err(|e| Error::Placement(format!("cannot list CART_PLACEMENT: {e}")))?;
    let Some(highest) = keys
        .iter()
        .filter_map(|k| shared::subjects::parse_placement_key(k).ok())
        .max()
    else {
        return Ok(());
    };
    if highest >= shard_count {
        return Err(Error::Placement(format!(
            "GATEWAY_SHARD_COUNT is {shard_count}, but the aggregates own shard {highest}: set it to the aggregates' AGGREGATE_SHARD_COUNT"
        )));
    }
    if highest + 1 < shard_count {
        tracing::warn!(
            shard_count,
            highest,
            "CART_PLACEMENT has no shard above {highest}; if the aggregates use {} shards, set GATEWAY_SHARD_COUNT to match",
            highest + 1
        );
    }
    Ok(())
}
