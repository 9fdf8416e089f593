//! Serving, the same way in every service: the gRPC listener, the ops HTTP server and the loop
//! that keeps `/ready` truthful.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::ops::Readiness;

/// The readiness check name for the NATS connection, shared by every service.
pub const NATS_CHECK: &str = "nats";

/// A gRPC listener for tonic with `TCP_NODELAY`: calls are small request/response pairs, and
/// without it Nagle plus delayed ACKs add ~40 ms to each (measured with cart-bench).
pub fn grpc_incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Serve `router` (the ops endpoints, possibly with more routes) until `stop`.
pub async fn http(listener: TcpListener, router: axum::Router, stop: CancellationToken) {
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
    {
        tracing::error!(error = %e, "ops HTTP server failed");
    }
}

/// Every 250 ms until `stop`: record whether NATS is connected, then run the service's own
/// checks.
pub async fn watch_readiness(
    readiness: Readiness,
    nats: async_nats::Client,
    stop: CancellationToken,
    mut checks: impl FnMut(&Readiness) + Send,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let connected = nats.connection_state() == async_nats::connection::State::Connected;
        readiness.set(NATS_CHECK, connected, Some("disconnected from NATS"));
        checks(&readiness);
    }
}
