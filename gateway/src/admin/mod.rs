//! The admin API (`/admin/...`): bearer token, denied by default. This module: the token check
//! and the placement view this gateway routes by; the runner's and the dead letters' admin
//! routes and the cart history across tenants are in `runner.rs`, `dead_letters.rs` and
//! `history.rs`.

pub mod audit;
pub mod dead_letters;
pub mod history;
pub mod runner;

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{FromRequestParts, State};
use http::request::Parts;
use serde::Serialize;
use shared::headers::RequestContext;
use shared::{ApiError, TenantId};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::schema::ErrorBody;
use crate::state::AppState;

pub const TAG: &str = "admin";
/// Name of the bearer scheme in the OpenAPI document.
pub const SECURITY: &str = "admin_token";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(placement))
}

/// Proof that the request carries the admin token, with the context of the calls it makes.
///
/// Admin calls name no tenant of their own, so the storefront's tenant rules (API key,
/// `x-tenant-id`) play no part: the context keeps the request's ids and carries the default
/// tenant, or the tenant an admin route asks about ([`Admin::about`]).
pub struct Admin(pub RequestContext);

impl Admin {
    /// The context of a call about one tenant (the projection checks the two agree).
    pub fn about(self, tenant: TenantId) -> RequestContext {
        let Admin(mut ctx) = self;
        ctx.tenant = tenant;
        ctx
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, ApiError> {
        s.auth.check_admin(&parts.headers)?;
        if let Some(audit) = parts.extensions.get::<audit::Authenticated>() {
            audit.passed();
        }
        Ok(Admin(RequestContext::from_http_for_tenant(
            &parts.headers,
            TenantId::default_tenant(),
        )))
    }
}

/// The optional `tenant` query parameter of admin routes: omitted or empty is `None` (every
/// tenant), anything else must be a valid tenant (400 naming the parameter).
pub fn tenant_param(raw: Option<&str>) -> Result<Option<TenantId>, ApiError> {
    match raw.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => TenantId::parse(t)
            .map(Some)
            .map_err(|e| ApiError::invalid(format!("query parameter tenant: {e}"))),
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeReport {
    pub id: String,
    pub grpc_addr: String,
    pub draining: bool,
    pub started_at: String,
    /// Shards this node owns according to `CART_PLACEMENT`.
    pub owned_shards: u32,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardSummary {
    /// Shards owned by a live node.
    pub owned: u32,
    /// Shards whose recorded owner is not alive (they are served by failover until claimed).
    pub owned_by_gone_nodes: u32,
    /// Shards nobody has claimed.
    pub unowned: u32,
    /// Owner of each shard by node id (gone nodes included).
    pub by_node: BTreeMap<String, u32>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacementReport {
    pub shard_count: u32,
    /// Live aggregate nodes (entries of `CART_NODES` within their TTL).
    pub nodes: Vec<NodeReport>,
    pub shards: ShardSummary,
    /// `GATEWAY_AGGREGATE_ADDRS`, used when placement knows no live node.
    pub static_addrs: Vec<String>,
}

/// Aggregate nodes and shard owners as this gateway sees them.
#[utoipa::path(get, path = "/admin/placement", tag = TAG, security(("admin_token" = [])),
    responses(
        (status = 200, description = "Placement view", body = PlacementReport),
        (status = 401, description = "Admin disabled, or missing or wrong bearer token", body = ErrorBody)))]
pub async fn placement(_: Admin, State(s): State<AppState>) -> Json<PlacementReport> {
    let static_addrs = s.cfg.aggregate_addrs();
    let Some(view) = s.upstream.placement() else {
        return Json(PlacementReport {
            shard_count: s.cfg.shard_count,
            nodes: Vec::new(),
            shards: ShardSummary {
                owned: 0,
                owned_by_gone_nodes: 0,
                unowned: s.cfg.shard_count,
                by_node: BTreeMap::new(),
            },
            static_addrs,
        });
    };
    let nodes = view.nodes();
    let mut by_node: BTreeMap<String, u32> = BTreeMap::new();
    let mut unowned = 0;
    for owner in view.owners() {
        match owner {
            Some(o) => *by_node.entry(o.node).or_default() += 1,
            None => unowned += 1,
        }
    }
    let live = |id: &str| nodes.iter().any(|(n, _)| n == id);
    let owned = by_node
        .iter()
        .filter(|(n, _)| live(n))
        .map(|(_, c)| c)
        .sum();
    let gone = by_node
        .iter()
        .filter(|(n, _)| !live(n))
        .map(|(_, c)| c)
        .sum();
    Json(PlacementReport {
        shard_count: view.shard_count(),
        nodes: nodes
            .iter()
            .map(|(id, n)| NodeReport {
                id: id.clone(),
                grpc_addr: n.grpc_addr.clone(),
                draining: n.draining,
                started_at: n.started_at.clone(),
                owned_shards: by_node.get(id).copied().unwrap_or(0),
            })
            .collect(),
        shards: ShardSummary {
            owned,
            owned_by_gone_nodes: gone,
            unowned,
            by_node,
        },
        static_addrs,
    })
}
