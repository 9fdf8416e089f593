//! `/health`, `/ready`, `/metrics` (served by `shared::ops`, documented here) and the task that
//! keeps `/ready` truthful: NATS connected, and some aggregate reachable in principle (a live
//! node in `CART_NODES`, or static addresses configured).

use axum::extract::{Request, State};
use axum::response::Response;
use cart_client::PlacementView;
use shared::ops::Readiness;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

pub const TAG: &str = "ops";

/// Readiness check: some aggregate is reachable in principle.
pub const AGGREGATES_CHECK: &str = "aggregates";

/// Readiness checks of the gateway (`shared::serve` keeps the NATS one up to date).
pub const CHECKS: &[&str] = &[shared::serve::NATS_CHECK, AGGREGATES_CHECK];

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics))
}

async fn delegate(s: &AppState, req: Request) -> Response {
    match s.ops.clone().oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    }
}

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/health", tag = TAG,
    responses((status = 200, description = "`{\"status\":\"ok\"}`")))]
pub async fn health(State(s): State<AppState>, req: Request) -> Response {
    delegate(&s, req).await
}

/// Readiness: NATS connected and an aggregate known; the JSON lists each check.
#[utoipa::path(get, path = "/ready", tag = TAG,
    responses(
        (status = 200, description = "Ready"),
        (status = 503, description = "Not ready; `checks` says why")))]
pub async fn ready(State(s): State<AppState>, req: Request) -> Response {
    delegate(&s, req).await
}

/// Prometheus metrics (names in `gateway::metrics`).
#[utoipa::path(get, path = "/metrics", tag = TAG,
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(s): State<AppState>, req: Request) -> Response {
    delegate(&s, req).await
}

/// Updates the checks until `shutdown`.
pub async fn watch_readiness(
    readiness: Readiness,
    nats: async_nats::Client,
    view: Option<PlacementView>,
    has_static_addrs: bool,
    shutdown: CancellationToken,
) {
    shared::serve::watch_readiness(readiness, nats, shutdown, move |r| {
        let live = view
            .as_ref()
            .is_some_and(|v| v.nodes().iter().any(|(_, n)| !n.draining));
        r.set(
            AGGREGATES_CHECK,
            live || has_static_addrs,
            Some("no live aggregate node in CART_NODES and no GATEWAY_AGGREGATE_ADDRS"),
        );
    })
    .await
}
