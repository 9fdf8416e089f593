//! Admin routes for the checkout runner (`/admin/runner/...`), calling `RunnerAdmin` over gRPC
//! with the admin bearer token checked here (deny by default).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use proto::runner::admin::v1 as rpb;
use serde::{Deserialize, Serialize};
use shared::ApiError;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::admin::{Admin, TAG};
use crate::request::params::QueryParams;
use crate::schema::ErrorBody;
use crate::state::AppState;
use crate::upstream::services::{Services, request};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(status))
        .routes(routes!(drain))
        .routes(routes!(reload))
}

/// A `RunnerAdmin` call as a `read` or a `write` (with its wait) of the runner at the first
/// address of `GATEWAY_RUNNER_ADDR` (a status and a drain name the same process), named
/// `runner.<method>` in the metrics.
macro_rules! runner_admin {
    ($s:expr, $ctx:expr, $how:ident($($wait:expr)?), $method:ident($req:expr)) => {{
        let req = $req;
        $s.services.runner_admin.$how(
            concat!("runner.", stringify!($method)),
            $ctx,
            $($wait,)?
            move |ch, md| {
                let req = request(md, req.clone());
                async move { Services::runner_admin(ch).$method(req).await }
            },
        )
    }};
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunnerStatus {
    draining: bool,
    in_flight: u32,
    /// Checkout events not yet handled (pending plus unacknowledged).
    consumer_lag: u64,
    last_error: Option<String>,
    last_error_at: Option<String>,
    effects_completed: u64,
    provider_base_url: String,
}

/// The runner's state: in-flight effects, consumer lag, last error, draining.
#[utoipa::path(get, path = "/admin/runner/status", tag = TAG, security(("admin_token" = [])),
    responses((status = 200, body = RunnerStatus), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn status(
    State(s): State<AppState>,
    Admin(ctx): Admin,
) -> Result<Json<RunnerStatus>, ApiError> {
    let r = runner_admin!(s, &ctx, read(), status(rpb::StatusRequest {})).await?;
    let some = |v: String| (!v.is_empty()).then_some(v);
    Ok(Json(RunnerStatus {
        draining: r.draining,
        in_flight: r.in_flight,
        consumer_lag: r.consumer_lag,
        last_error: some(r.last_error),
        last_error_at: some(r.last_error_at),
        effects_completed: r.effects_completed,
        provider_base_url: r.provider_base_url,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct DrainQuery {
    /// Wait up to this long for in-flight effects before answering (default 0, at most 300).
    wait_seconds: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Drained {
    draining: bool,
    /// Nothing is in flight any more.
    idle: bool,
    in_flight: u32,
}

/// Stop the runner taking new effects; in-flight ones finish.
#[utoipa::path(post, path = "/admin/runner/drain", tag = TAG, security(("admin_token" = [])), params(DrainQuery),
    responses((status = 200, body = Drained), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn drain(
    State(s): State<AppState>,
    Admin(ctx): Admin,
    QueryParams(q): QueryParams<DrainQuery>,
) -> Result<Json<Drained>, ApiError> {
    let wait = q.wait_seconds.unwrap_or(0).min(300);
    // The drain answers when idle or after `wait`: the deadline allows for that wait.
    let r = runner_admin!(
        s,
        &ctx,
        write(Duration::from_secs(u64::from(wait))),
        drain(rpb::DrainRequest { wait_seconds: wait })
    )
    .await?;
    Ok(Json(Drained {
        draining: r.draining,
        idle: r.idle,
        in_flight: r.in_flight,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Reloaded {
    provider_base_url: String,
    /// Increases with every reload.
    generation: u64,
}

/// Re-read the payment provider configuration without a restart.
#[utoipa::path(post, path = "/admin/runner/reload", tag = TAG, security(("admin_token" = [])),
    responses((status = 200, body = Reloaded), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn reload(
    State(s): State<AppState>,
    Admin(ctx): Admin,
) -> Result<Json<Reloaded>, ApiError> {
    let r = runner_admin!(
        s,
        &ctx,
        write(Duration::ZERO),
        reload(rpb::ReloadRequest {})
    )
    .await?;
    Ok(Json(Reloaded {
        provider_base_url: r.provider_base_url,
        generation: r.generation,
    }))
}
