//! `cart-node`: a gateway and an aggregate node in one process.
//!
//! The aggregate joins placement like any node (its gRPC server serves the other gateways and
//! the runner); the gateway routes like any gateway, except that an `Execute` for a cart this
//! node owns is handed to the aggregate in-process ([`aggregate::Running::in_process`]): no
//! protobuf, HTTP/2 or socket between the two. Carts other nodes own go over gRPC as before.
//! Each part keeps its own settings (`GATEWAY_*`, `AGGREGATE_*`), NATS user and ops port.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

/// A running node: its aggregate and its gateway.
pub struct Running {
    pub aggregate: aggregate::Running,
    pub gateway: gateway::Running,
}

impl Running {
    /// Stop the gateway (in-flight requests finish), then drain the aggregate (its shards go
    /// to other nodes, its snapshots are written).
    pub async fn stop(self) -> anyhow::Result<()> {
        let served = self.gateway.stop().await;
        let drained = self.aggregate.drain().await;
        served?;
        drained
    }
}

/// Start the aggregate, then the gateway in front of it.
pub async fn start(
    aggregate: aggregate::Config,
    gateway: gateway::Config,
) -> anyhow::Result<Running> {
    let aggregate = aggregate::start(aggregate).await?;
    let local: Arc<dyn cart_client::LocalNode> = aggregate.in_process();
    match gateway::start_with(gateway, Some(local)).await {
        Ok(gateway) => Ok(Running { aggregate, gateway }),
        Err(e) => {
            // The gateway's failure is what the caller hears; the drain's is logged.
            if let Err(drain) = aggregate.drain().await {
                tracing::error!(error = %drain, "draining the aggregate after the gateway failed to start");
            }
            Err(e.into())
        }
    }
}

/// Run until `shutdown` (SIGTERM / Ctrl-C), or until the aggregate stops (drained through its
/// admin call); then stop both.
pub async fn run(
    aggregate: aggregate::Config,
    gateway: gateway::Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let running = start(aggregate, gateway).await?;
    let stopped = running.aggregate.stopped();
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = stopped.cancelled() => tracing::info!("the aggregate stopped; stopping the gateway"),
    }
    running.stop().await
}
