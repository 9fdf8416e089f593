//! The gateway: the HTTP edge of the cart platform.
//!
//! - Storefront API compatible with go-cart-actor (`/cart/...`, cookie `cartid`), versioned API
//!   (`/v1/carts/...`), admin API (`/admin/...`), `/health`, `/ready`, `/metrics` and
//!   `/openapi.json`; every error is `{"error", "code"}` from `shared`'s table.
//! - Commands go over gRPC to the aggregate node owning the cart's shard (placement watched in
//!   NATS KV), with deadlines, failover and retries under one command id.
//!
//! [`start`] brings a gateway up (tests use port 0) and returns a [`Running`] handle; [`run`]
//! is what `main` calls.

pub mod admin;
pub mod app;
pub mod checkout;
pub mod config;
pub mod idempotency;
pub mod metrics;
pub mod openapi;
pub mod ops;
pub mod queries;
pub mod request;
pub mod schema;
pub mod state;
pub mod storefront;
pub mod upstream;
pub mod v1;

use std::net::SocketAddr;
use std::time::Duration;

use shared::nats::NatsError;
use shared::ops::Readiness;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use app::app;
pub use config::Config;
pub use state::AppState;

/// Why the gateway could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error("placement view: {0}")]
    Placement(String),
    /// The HTTP address cannot be bound (the message names it).
    #[error(transparent)]
    Listen(std::io::Error),
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// A running gateway.
pub struct Running {
    pub http_addr: SocketAddr,
    pub readiness: Readiness,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    server: JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stop: refuse new connections, finish in-flight requests, end event streams, stop the
    /// background tasks.
    pub async fn stop(self) -> Result<(), Error> {
        self.readiness.set_draining(true);
        self.shutdown.cancel();
        let served = self.server.await;
        self.tracker.close();
        self.tracker.wait().await;
        match served {
            Ok(r) => r.map_err(Error::Serve),
            Err(e) => Err(Error::Serve(std::io::Error::other(e))),
        }
    }
}

/// Start a gateway: connect to NATS, watch placement, serve HTTP.
pub async fn start(config: Config) -> Result<Running, Error> {
    start_with(config, None).await
}

/// [`start`], with an aggregate node running in this process (`cart-node`): the `Execute`
/// calls placement routes to it are handed over without the network.
pub async fn start_with(
    config: Config,
    local: Option<std::sync::Arc<dyn cart_client::LocalNode>>,
) -> Result<Running, Error> {
    config.check()?;
    if config.api_keys()?.is_empty() && config.backoffice_keys()?.is_empty() {
        tracing::warn!(
            "no GATEWAY_API_KEYS: any client names its tenant in x-tenant-id and may list its \
             carts and orders; set GATEWAY_API_KEYS and GATEWAY_BACKOFFICE_KEYS before the \
             gateway is reachable by anyone but you"
        );
    }
    if config.api_keys()?.is_empty() && config.storefront_tenant()?.is_some() {
        tracing::warn!(
            "GATEWAY_STOREFRONT_TENANT has no effect without GATEWAY_API_KEYS: every request \
             names its tenant in x-tenant-id"
        );
    }
    if config.validation_keys().is_empty() {
        tracing::warn!(
            "no GATEWAY_VALIDATION_KEY: the provider's validation callback is not authenticated, \
             and anyone who knows a provider order can hold its cart for the purchase hold; set \
             it, and the runner's MERCHANT_VALIDATION_KEY to the same value"
        );
    }
    metrics::describe();
    let readiness = Readiness::new();
    readiness.register(ops::CHECKS);

    let nats = shared::nats::connect(&config.nats).await?;
    let js = shared::nats::jetstream(nats.clone(), &config.nats);
    let shutdown = CancellationToken::new();
    // Stops the background tasks again if start-up fails half way.
    let started = shutdown.clone().drop_guard();
    let tracker = TaskTracker::new();
    let (client, view) =
        upstream::discovery::connect(&config, &js, &tracker, shutdown.clone()).await?;
    let client = match local {
        Some(node) => client.with_local(node),
        None => client,
    };
    let static_addrs = config.aggregate_addrs();
    let state = AppState::new(
        config,
        client,
        readiness.clone(),
        shared::telemetry::prometheus(),
        shutdown.clone(),
    )?
    .with_jetstream(js.clone());
    tracker.spawn(ops::watch_readiness(
        readiness.clone(),
        nats,
        Some(view),
        !static_addrs.is_empty(),
        shutdown.clone(),
    ));
    tracker.spawn(state.limits.clone().prune_every(
        Duration::from_secs(state.cfg.rate_limit_prune_secs),
        shutdown.clone(),
    ));

    let (listener, http_addr) = shared::serve::bind(&state.cfg.http_addr)
        .await
        .map_err(Error::Listen)?;
    let app = app(state).into_make_service_with_connect_info::<SocketAddr>();
    // A reply is one write; it goes out at once rather than after the client's delayed ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set on a connection");
        }
    });
    let stop = shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    });
    started.disarm();
    tracing::info!(%http_addr, "gateway started");
    Ok(Running {
        http_addr,
        readiness,
        shutdown,
        tracker,
        server,
    })
}

/// Run until `shutdown` (SIGTERM / Ctrl-C), then stop gracefully.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let running = start(config).await?;
    shutdown.cancelled().await;
    running.stop().await
}
