//! The aggregate service: owns carts, decides commands with the pure domain and appends every
//! accepted change to JetStream (`cart.v1.CartService` over gRPC).
//!
//! [`start`] brings a node up (tests use it on port 0) and returns a [`Running`] handle;
//! [`run`] is what `main` calls: start, then drain and stop on shutdown.

pub mod carts;
pub mod catalog;
pub mod config;
pub mod drain;
pub mod grpc;
pub mod local;
pub mod metrics;
pub mod multiplex;
pub mod placement;
pub mod seed;
pub mod snapshot;
pub mod store;
pub mod watch;

use shared::config::ServiceConfig as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use proto::cart::v1::aggregate_admin_server::AggregateAdminServer;
use proto::cart::v1::cart_service_server::CartServiceServer;
use shared::ops::Readiness;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;

use crate::carts::{Carts, CartsConfig};
use crate::catalog::CatalogCache;
use crate::drain::Drainer;
use crate::placement::{Placement, PlacementConfig};
use crate::snapshot::SnapshotStore;
use crate::store::EventStore;
use cart_client::placement_view::PlacementView;

/// Readiness check: the NATS streams and buckets exist.
const STREAMS_CHECK: &str = "streams";
/// Readiness check: this node has claimed its shards.
const PLACEMENT_CHECK: &str = "placement";

/// A running aggregate node.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub node_id: String,
    pub carts: Carts,
    pub placement: Option<Arc<Placement>>,
    /// The cart service as a gateway in this process calls it ([`Running::in_process`]).
    in_process: Arc<local::InProcess>,
    drainer: Arc<Drainer>,
    /// Cancelled when the node has stopped serving (drained or aborted).
    stop: CancellationToken,
    /// Stops background tasks (heartbeats, watches, snapshot writer).
    background: CancellationToken,
    tracker: TaskTracker,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Running {
    /// Drain gracefully (hand off shards, finish in-flight work, flush snapshots) and stop.
    pub async fn drain(self) -> anyhow::Result<()> {
        self.drainer.begin();
        self.wait().await
    }

    /// Stop like a crash: no hand-off, no snapshot flush, the node entry is left to expire.
    pub async fn abort(self) {
        self.background.cancel();
        self.server.abort();
        self.stop.cancel();
        self.tracker.close();
        let _ = self.server.await;
    }

    /// Wait until the node stops (after a drain begun elsewhere, e.g. the admin RPC).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.stop.cancelled().await;
        let served = self.server.await;
        self.background.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        served
            .context("gRPC server task panicked")?
            .context("gRPC server failed")
    }

    pub fn is_stopped(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Cancelled when the node has stopped serving (drained or aborted).
    pub fn stopped(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// This node for a gateway in the same process (`cart-node`; a `cart_client::LocalNode`):
    /// `Execute` calls the gateway routes to this node's address skip the network.
    pub fn in_process(&self) -> Arc<local::InProcess> {
        self.in_process.clone()
    }
}

/// Start a node: connect, ensure the NATS resources, join placement, serve gRPC and HTTP.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    config.check().map_err(Config::invalid)?;
    metrics::describe();
    let readiness = Readiness::new();
    readiness.register(&[shared::serve::NATS_CHECK, STREAMS_CHECK, PLACEMENT_CHECK]);

    let nats = shared::nats::connect_and_ensure(&config.nats, &config.streams).await?;
    readiness.set_ok(shared::serve::NATS_CHECK);
    readiness.set_ok(STREAMS_CHECK);

    let background = CancellationToken::new();
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();

    let (grpc_listener, grpc_addr) = shared::serve::bind(&config.grpc_addr).await?;
    let advertise = config
        .advertise_addr
        .clone()
        .unwrap_or_else(|| grpc_addr.to_string());

    let placement = if config.placement {
        let view = PlacementView::start(
            nats.client.clone(),
            nats.resources.cart_nodes.clone(),
            nats.resources.cart_placement.clone(),
            config.shard_count,
            &shared::config::env_var(Config::ENV_PREFIX, "shard_count"),
            config.heartbeat(),
            &tracker,
            background.clone(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("placement view: {e}"))?;
        let p = Placement::start(
            PlacementConfig {
                node_id: config.node_id.clone(),
                advertise_addr: advertise.clone(),
                heartbeat: config.heartbeat(),
            },
            view,
            &tracker,
            background.clone(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("placement: {e}"))?;
        Some(p)
    } else {
        readiness.set_ok(PLACEMENT_CHECK);
        None
    };

    let store = EventStore::new(
        nats.client.clone(),
        nats.js.clone(),
        config.nats.request_timeout(),
    )
    .await
    .context("event store")?;
    let snapshots = SnapshotStore::start(
        nats.resources.cart_snapshots.clone(),
        config.snapshot_every,
        &tracker,
        background.clone(),
    );
    let catalog = CatalogCache::start(
        nats.resources.catalog.clone(),
        config.catalog_cache_capacity,
        Duration::from_secs(config.catalog_cache_ttl_secs.max(1)),
        &tracker,
        background.clone(),
    );
    let carts = Carts::new(
        store,
        snapshots,
        catalog,
        placement.clone(),
        CartsConfig {
            shard_count: config.shard_count,
            cache_capacity: config.cache_capacity,
            cache_idle: Duration::from_secs(config.cache_idle_secs.max(1)),
            retain: config.retain(),
            max_conflict_retries: config.max_conflict_retries,
            append_timeout_retries: config.append_timeout_retries,
            limits: config.limits,
        },
    );
    let drainer = Arc::new(Drainer::new(
        config.node_id.clone(),
        placement.clone(),
        carts.clone(),
        stop.clone(),
        Duration::from_secs(config.drain_handoff_secs),
        Duration::from_secs(config.drain_in_flight_secs),
    ));

    let cart_svc = grpc::CartGrpc::new(
        carts.clone(),
        grpc::GrpcLimits {
            max_batch: config.max_batch,
        },
        stop.clone(),
    );
    let in_process = Arc::new(local::InProcess::new(
        cart_svc.clone(),
        advertise.clone(),
        stop.clone(),
    ));
    let admin_svc = grpc::AdminGrpc::new(drainer.clone(), carts.clone());
    let grpc = config
        .grpc_tls
        .server_builder()
        .map_err(anyhow::Error::msg)?
        .add_service(CartServiceServer::new(cart_svc))
        .add_service(AggregateAdminServer::new(admin_svc));
    let server = tokio::spawn(shared::serve::grpc(grpc, grpc_listener, stop.clone()));

    let (http_listener, http_addr) = shared::serve::bind(&config.http_addr).await?;
    let ops = shared::ops::router(readiness.clone(), shared::telemetry::prometheus());
    tracker.spawn(shared::serve::http(http_listener, ops, stop.clone()));
    let (ready_placement, ready_drainer) = (placement.clone(), drainer.clone());
    ::metrics::gauge!(metrics::CACHE_CAPACITY).set(config.cache_capacity as f64);
    tracker.spawn(report_cache_weight(carts.clone(), background.clone()));
    tracker.spawn(shared::serve::watch_readiness(
        readiness,
        nats.client,
        background.clone(),
        move |r| {
            if let Some(p) = &ready_placement {
                r.set(PLACEMENT_CHECK, p.is_ready(), Some("claiming shards"));
            }
            r.set_draining(ready_drainer.is_draining());
        },
    ));

    tracing::info!(node = %config.node_id, %grpc_addr, %http_addr, advertise, "aggregate started");
    Ok(Running {
        grpc_addr,
        http_addr,
        node_id: config.node_id,
        carts,
        placement,
        in_process,
        drainer,
        stop,
        background,
        tracker,
        server,
    })
}

/// Run until `shutdown` (SIGTERM), then drain and stop.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let running = start(config).await?;
    let stopped = running.stop.clone();
    tokio::select! {
        () = shutdown.cancelled() => running.drainer.begin(),
        () = stopped.cancelled() => {}
    }
    running.wait().await
}

/// The cart cache's weight, against its capacity, every second until `stop` (the cache's
/// pending housekeeping runs first, so an idle node reports what it holds).
async fn report_cache_weight(carts: Carts, stop: CancellationToken) {
    let weight = ::metrics::gauge!(metrics::CACHE_WEIGHT);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => weight.set(carts.cache_weight().await as f64),
        }
    }
}
