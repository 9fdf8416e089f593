//! `GET /admin/carts/{id}/history`: the history of `GET /v1/carts/{id}/history` for operators,
//! in any tenant. With `tenant` it reads that tenant's cart; without, the cart id in every
//! tenant at once (`cart.events.*.<cart_id>`: a support call knows the id from a cookie, rarely
//! the tenant), each entry naming its tenant. Reading across tenants is why it is admin-only.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use shared::ApiError;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::admin::{Admin, TAG, tenant_param};
use crate::request::params::{Params, QueryParams};
use crate::schema::error_replies;
use crate::state::AppState;
use crate::v1::CartPath;
use crate::v1::history::{self, CartHistory};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(cart_history))
}

/// Tenant and paging of `GET /admin/carts/{id}/history`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AdminHistoryQuery {
    /// Only this tenant's cart; omitted or empty: the cart id in every tenant.
    tenant: Option<String>,
    /// Only commands with a stream sequence greater than this (the `next` of the previous
    /// page; default 0).
    after: Option<u64>,
    /// Most entries in the page, 1..=500 (default 50).
    limit: Option<u32>,
}

error_replies! {
    /// Errors of the admin history route before it reads (see [`history::EventStoreErrors`] for the
    /// rest). Every body is `{"error", "code"}`.
    pub enum AdminHistoryErrors {
        /// An invalid cart id, tenant, `after`, `limit` or query parameter (the message names it).
        400 => BadRequest,
        /// Admin disabled, or missing or wrong bearer token.
        401 => Unauthenticated,
    }
}

/// A cart's accepted commands in one tenant or every tenant, oldest first.
#[utoipa::path(get, path = "/admin/carts/{id}/history", tag = TAG, security(("admin_token" = [])),
    params(("id" = String, Path, description = "Cart id"), AdminHistoryQuery),
    responses(
        (status = 200, description = "A page of the cart's history; each entry names its tenant",
            body = CartHistory),
        AdminHistoryErrors, history::EventStoreErrors))]
pub async fn cart_history(
    _: Admin,
    State(s): State<AppState>,
    Params(p): Params<CartPath>,
    QueryParams(q): QueryParams<AdminHistoryQuery>,
) -> Result<Json<CartHistory>, ApiError> {
    let cart = p.cart()?;
    let (after, limit) = history::page(q.after, q.limit)?;
    let filter = match tenant_param(q.tenant.as_deref())? {
        Some(t) => shared::subjects::cart_events(&t, &cart),
        None => shared::subjects::cart_events_any_tenant(&cart),
    };
    history::read(&s, &cart, &filter, after, limit)
        .await
        .map(Json)
}
