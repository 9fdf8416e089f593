//! Admin routes for the checkout runner (`/admin/runner/...`), calling `RunnerAdmin` over gRPC
//! with the admin bearer token checked here (deny by default). Each call is for one runner
//! (`?runner=`, default the first of `GATEWAY_RUNNER_ADDR`); a reload reaches every runner.

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

/// A `RunnerAdmin` call as a `read` or a `write` (with its wait) of one runner (`$runner`, a
/// single-address [`Service`]), named `runner.<method>` in the metrics.
macro_rules! runner_admin {
    ($runner:expr, $ctx:expr, $how:ident($($wait:expr)?), $method:ident($req:expr)) => {{
        let req = $req;
        $runner.$how(
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

/// Which runner an admin call is for. A parameter it does not know is refused: a misspelled
/// `?runer=` would otherwise act on the default runner.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RunnerQuery {
    /// One of the gateway's runner addresses (`GATEWAY_RUNNER_ADDR`, `host:port` as
    /// configured); default the first.
    runner: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunnerStatus {
    /// The runner that answered (its address as the gateway has it).
    runner: String,
    /// Every runner address the gateway has (`?runner=` takes one of them).
    runners: Vec<String>,
    /// This runner holds the checkout lease: it is the one doing checkouts (a standby does not).
    lease_held: bool,
    draining: bool,
    in_flight: u32,
    /// Checkout events not yet handled (pending plus unacknowledged).
    consumer_lag: u64,
    last_error: Option<String>,
    last_error_at: Option<String>,
    effects_completed: u64,
    provider_base_url: String,
}

/// A runner's state: whether it holds the lease, in-flight effects, consumer lag, last error,
/// draining.
#[utoipa::path(get, path = "/admin/runner/status", tag = TAG, security(("admin_token" = [])), params(RunnerQuery),
    responses((status = 200, body = RunnerStatus), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn status(
    State(s): State<AppState>,
    Admin(ctx): Admin,
    QueryParams(q): QueryParams<RunnerQuery>,
) -> Result<Json<RunnerStatus>, ApiError> {
    let runner = s.services.runner.one(q.runner.as_deref())?;
    let r = runner_admin!(runner, &ctx, read(), status(rpb::StatusRequest {})).await?;
    let some = |v: String| (!v.is_empty()).then_some(v);
    Ok(Json(RunnerStatus {
        runner: runner.address().to_owned(),
        runners: s.services.runner.addresses().to_vec(),
        lease_held: r.lease_held,
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
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DrainQuery {
    /// Wait up to this long for in-flight effects before answering (default 0, at most 300).
    wait_seconds: Option<u32>,
    /// One of the gateway's runner addresses; default the first.
    runner: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Drained {
    /// The runner drained.
    runner: String,
    draining: bool,
    /// Nothing is in flight any more.
    idle: bool,
    in_flight: u32,
}

/// Stop a runner taking new effects; in-flight ones finish.
#[utoipa::path(post, path = "/admin/runner/drain", tag = TAG, security(("admin_token" = [])), params(DrainQuery),
    responses((status = 200, body = Drained), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn drain(
    State(s): State<AppState>,
    Admin(ctx): Admin,
    QueryParams(q): QueryParams<DrainQuery>,
) -> Result<Json<Drained>, ApiError> {
    let runner = s.services.runner.one(q.runner.as_deref())?;
    let wait = q.wait_seconds.unwrap_or(0).min(300);
    // The drain answers when idle or after `wait`: the deadline allows for that wait.
    let r = runner_admin!(
        runner,
        &ctx,
        write(Duration::from_secs(u64::from(wait))),
        drain(rpb::DrainRequest { wait_seconds: wait })
    )
    .await?;
    Ok(Json(Drained {
        runner: runner.address().to_owned(),
        draining: r.draining,
        idle: r.idle,
        in_flight: r.in_flight,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Reloaded {
    /// What the first runner reloaded (the one named, or the first configured).
    provider_base_url: String,
    /// Increases with every reload (of that runner).
    generation: u64,
    /// Every runner reloaded, in the configured order.
    runners: Vec<RunnerReloaded>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunnerReloaded {
    runner: String,
    provider_base_url: String,
    generation: u64,
}

/// Re-read the payment provider configuration without a restart: in every runner (a standby
/// that takes over later must not use the old one), or in the one named. Answers an error
/// when any runner did not reload, naming the ones that did.
#[utoipa::path(post, path = "/admin/runner/reload", tag = TAG, security(("admin_token" = [])), params(RunnerQuery),
    responses((status = 200, body = Reloaded), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn reload(
    State(s): State<AppState>,
    Admin(ctx): Admin,
    QueryParams(q): QueryParams<RunnerQuery>,
) -> Result<Json<Reloaded>, ApiError> {
    let targets = match q.runner.as_deref() {
        Some(named) => vec![s.services.runner.one(Some(named))?],
        None => s.services.runner.each(),
    };
    if targets.is_empty() {
        return Err(s.services.runner.not_configured());
    }
    let calls = targets.iter().map(|runner| {
        runner_admin!(
            runner,
            &ctx,
            write(Duration::ZERO),
            reload(rpb::ReloadRequest {})
        )
    });
    let answers = futures::future::join_all(calls).await;
    let mut runners = Vec::new();
    let mut failed = Vec::new();
    for (runner, answer) in targets.iter().zip(answers) {
        match answer {
            Ok(r) => runners.push(RunnerReloaded {
                runner: runner.address().to_owned(),
                provider_base_url: r.provider_base_url,
                generation: r.generation,
            }),
            Err(e) => failed.push((runner.address().to_owned(), e)),
        }
    }
    // One runner asked: its own answer, as any other call.
    if targets.len() == 1
        && let Some((_, error)) = failed.pop()
    {
        return Err(error);
    }
    if let Some((_, first)) = failed.first() {
        let reloaded: Vec<&str> = runners.iter().map(|r| r.runner.as_str()).collect();
        let not: Vec<String> = failed
            .iter()
            .map(|(runner, e)| format!("{runner} ({}: {})", e.code.as_str(), e.message))
            .collect();
        return Err(ApiError::new(
            first.code,
            format!(
                "not reloaded: {}; reloaded: [{}]",
                not.join(", "),
                reloaded.join(", ")
            ),
        ));
    }
    Ok(Json(Reloaded {
        provider_base_url: runners[0].provider_base_url.clone(),
        generation: runners[0].generation,
        runners,
    }))
}
