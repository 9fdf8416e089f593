//! Admin routes for dead letters (`/admin/dead-letters`), served by the projection: the
//! messages it gave up on after `PROJECTION_MAX_DELIVER` deliveries, and replaying one once its
//! cause is fixed. Listing every tenant at once is why these routes are admin-only.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use proto::projection::v1 as pb;
use serde::{Deserialize, Serialize};
use shared::ApiError;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::admin::{Admin, TAG, tenant_param};
use crate::queries::{ProjectionErrors, positive, query};
use crate::request::params::{Params, QueryParams};
use crate::schema::{ErrorBody, error_replies};
use crate::state::AppState;
use crate::upstream::services::{Services, request};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_dead_letters))
        .routes(routes!(replay_dead_letter))
}

/// Filter of `GET /admin/dead-letters`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeadLettersQuery {
    /// Only this tenant's dead letters; omitted or empty: every tenant.
    tenant: Option<String>,
    /// Most entries returned, newest first (the projection caps it at 1000; default 50).
    limit: Option<u32>,
    /// One of the gateway's projection addresses (`GATEWAY_PROJECTION_ADDR`, as `projections`
    /// lists them); default the first. Each projection keeps its own dead letters.
    projection: Option<String>,
}

/// Which projection a replay is for: the one whose list showed the id.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReplayQuery {
    /// One of the gateway's projection addresses; default the first.
    projection: Option<String>,
}

#[derive(Deserialize)]
pub struct DeadLetterPath {
    id: u64,
}

/// A message the projection could not apply.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterRecord {
    /// Id to replay it by.
    pub id: u64,
    /// The durable consumer that gave up (`projection-<view>`).
    pub consumer: String,
    pub tenant: String,
    pub cart_id: String,
    /// Original subject (`cart.events.<tenant>.<cart_id>`).
    pub subject: String,
    /// Sequence in `CART_EVENTS` (the replay reads the message back from there).
    pub stream_sequence: u64,
    /// Why it failed.
    pub reason: String,
    pub deliveries: u32,
    /// RFC 3339.
    pub failed_at: String,
    /// A replay (or a rebuild) has applied it since.
    pub replayed: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterList {
    /// The projection whose dead letters these are (replay them there: `?projection=`).
    pub projection: String,
    /// Every projection address the gateway has.
    pub projections: Vec<String>,
    pub dead_letters: Vec<DeadLetterRecord>,
}

/// Outcome of a replay: `applied`, or why not.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReplayOutcome {
    pub applied: bool,
    /// Why the message still cannot be applied; `null` when it was.
    pub error: Option<String>,
}

error_replies! {
    /// Errors of the dead-letter routes (see [`ProjectionErrors`] for the rest). Every body is
    /// `{"error", "code"}`.
    pub enum DeadLetterErrors {
        /// An invalid tenant, limit or id (the message names it).
        400 => BadRequest,
        /// Admin disabled, or missing or wrong bearer token.
        401 => Unauthenticated,
        /// The projection is unreachable.
        503 => Unavailable,
    }
}

/// Dead letters of one projection (`projection`, default the first), newest first; every
/// tenant unless `tenant` is given.
#[utoipa::path(get, path = "/admin/dead-letters", tag = TAG, security(("admin_token" = [])),
    params(DeadLettersQuery),
    responses((status = 200, description = "Dead letters", body = DeadLetterList),
        DeadLetterErrors, ProjectionErrors))]
pub async fn list_dead_letters(
    admin: Admin,
    State(s): State<AppState>,
    QueryParams(q): QueryParams<DeadLettersQuery>,
) -> Result<Json<DeadLetterList>, ApiError> {
    let tenant = tenant_param(q.tenant.as_deref())?;
    let limit = positive("limit", q.limit)?;
    let ctx = match &tenant {
        Some(t) => admin.about(t.clone()),
        None => admin.0,
    };
    let req = pb::ListDeadLettersRequest {
        tenant: tenant.map(|t| t.to_string()).unwrap_or_default(),
        limit,
    };
    let projection = s.services.projection.one(q.projection.as_deref())?;
    let list = query!(&projection, &ctx, list_dead_letters, req).await?;
    Ok(Json(DeadLetterList {
        projection: projection.address().to_owned(),
        projections: s.services.projection.addresses().to_vec(),
        dead_letters: list.dead_letters.into_iter().map(record).collect(),
    }))
}

/// Apply a dead letter again (after its cause was fixed), in the projection that listed it
/// (`projection`, default the first). `applied: false` with the error when it still fails; the
/// dead letter stays listed either way, marked `replayed` once applied.
#[utoipa::path(post, path = "/admin/dead-letters/{id}/replay", tag = TAG, security(("admin_token" = [])),
    params(("id" = u64, Path, description = "Dead letter id"), ReplayQuery),
    responses(
        (status = 200, description = "Replayed (see applied)", body = ReplayOutcome),
        (status = 404, description = "No dead letter with that id, or its message is no longer in CART_EVENTS at its sequence and subject", body = ErrorBody),
        DeadLetterErrors, ProjectionErrors))]
pub async fn replay_dead_letter(
    Admin(ctx): Admin,
    State(s): State<AppState>,
    Params(p): Params<DeadLetterPath>,
    QueryParams(q): QueryParams<ReplayQuery>,
) -> Result<Json<ReplayOutcome>, ApiError> {
    let req = pb::ReplayDeadLetterRequest { id: p.id };
    let projection = s.services.projection.one(q.projection.as_deref())?;
    // A replay changes the view: tried once (no read retries).
    let out = projection
        .write(
            "projection_replay_dead_letter",
            &ctx,
            Duration::ZERO,
            |channel, md| {
                let req = request(md, req);
                async move { Services::query(channel).replay_dead_letter(req).await }
            },
        )
        .await?;
    Ok(Json(ReplayOutcome {
        applied: out.applied,
        error: Some(out.error).filter(|e| !e.is_empty()),
    }))
}

fn record(d: pb::DeadLetter) -> DeadLetterRecord {
    DeadLetterRecord {
        id: d.id,
        consumer: d.consumer,
        tenant: d.tenant,
        cart_id: d.cart_id,
        subject: d.subject,
        stream_sequence: d.stream_sequence,
        reason: d.reason,
        deliveries: d.deliveries,
        failed_at: d.failed_at,
        replayed: d.replayed,
    }
}
