//! Query routes served by the projection's read model (`projection.v1.QueryService`): carts by
//! status / user / update time, one cart's view, orders, abandoned carts and SKU demand.
//!
//! The tenant is always the caller's (API key or `x-tenant-id`), never a query parameter; the
//! projection filters by it inside its SQL as well. Every call has the projection deadline and
//! reads are retried while the projection is unreachable (`services::Service::read`). The read
//! model trails commands by the projection's lag: a cart changed a moment ago may still show
//! its previous state here (`GET /v1/carts/{id}` reads the cart itself).

pub mod views;

use std::future::Future;

use axum::Json;
use axum::extract::State;
use proto::projection::v1 as pb;
use proto::projection::v1::query_service_client::QueryServiceClient;
use serde::Deserialize;
use shared::headers::RequestContext;
use shared::{ApiError, TenantId};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tonic::transport::Channel;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::views::{CartPage, CartRecord, OrderPage, SkuDemandReport};
use crate::request::context::{BackOffice, Ctx};
use crate::request::params::{Params, QueryParams};
use crate::schema::{CallerErrors, ErrorBody, error_replies};
use crate::state::AppState;
use crate::upstream::services::{self, Service, Services};
use crate::v1::CartPath;

pub const TAG: &str = "queries";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_carts))
        .routes(routes!(cart_view))
        .routes(routes!(list_orders))
        .routes(routes!(abandoned_carts))
        .routes(routes!(sku_demand))
}

/// One call to `projection`'s `QueryService` (every projection, or [`Service::one`] of them)
/// under the projection's deadline and read retries: `call` gets a client and the request with
/// the context's metadata.
pub(crate) async fn ask<Req, Resp, F, Fut>(
    projection: &Service,
    op: &'static str,
    ctx: &RequestContext,
    req: Req,
    call: F,
) -> Result<Resp, ApiError>
where
    Req: Clone,
    F: Fn(QueryServiceClient<Channel>, tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
{
    projection
        .read(op, ctx, |channel, md| {
            call(Services::query(channel), services::request(md, req.clone()))
        })
        .await
}

/// [`ask`] `$projection` with the `QueryService` method `$method`, its calls timed as
/// `projection_<method>`.
macro_rules! query {
    ($projection:expr, $ctx:expr, $method:ident, $req:expr) => {
        $crate::queries::ask(
            $projection,
            concat!("projection_", stringify!($method)),
            $ctx,
            $req,
            |mut c, r| async move { c.$method(r).await },
        )
    };
}
pub(crate) use query;

/// A cart's status in the read model.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CartStatus {
    /// Open and not abandoned.
    Open,
    /// Payment in progress.
    Checkout,
    Ordered,
    /// Open with items, idle for longer than the projection's threshold.
    Abandoned,
}

impl CartStatus {
    fn as_str(self) -> &'static str {
        match self {
            CartStatus::Open => "open",
            CartStatus::Checkout => "checkout",
            CartStatus::Ordered => "ordered",
            CartStatus::Abandoned => "abandoned",
        }
    }
}

/// Filters and paging of `GET /v1/carts`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListCartsQuery {
    /// Only carts in this status.
    #[param(inline)]
    status: Option<CartStatus>,
    /// RFC 3339 time; only carts updated at or after it (`2025-01-31T12:00:00Z`).
    updated_since: Option<String>,
    /// Only carts of this user id.
    user: Option<String>,
    /// Carts per page (the projection caps it at 500; default 50).
    page_size: Option<u32>,
    /// `nextPageToken` of the previous page.
    page_token: Option<String>,
}

/// Filters and paging of `GET /v1/orders`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListOrdersQuery {
    /// RFC 3339 time; only orders placed at or after it.
    since: Option<String>,
    /// Orders per page (the projection caps it at 500; default 50).
    page_size: Option<u32>,
    /// `nextPageToken` of the previous page.
    page_token: Option<String>,
}

/// Threshold and paging of `GET /v1/reports/abandoned`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AbandonedQuery {
    /// Idle time (seconds since the cart's last event) that makes an open cart with items
    /// abandoned; default: the projection's `PROJECTION_ABANDONED_AFTER_SECS`.
    idle_seconds: Option<u64>,
    /// Carts per page (the projection caps it at 500; default 50).
    page_size: Option<u32>,
    /// `nextPageToken` of the previous page.
    page_token: Option<String>,
}

/// Size of `GET /v1/reports/sku-demand`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SkuDemandQuery {
    /// Most SKUs returned (the projection caps it at 1000; default 50).
    limit: Option<u32>,
}

/// `Some(n)` must be at least 1; `None` is 0, the projection's default.
pub(crate) fn positive(name: &str, v: Option<u32>) -> Result<u32, ApiError> {
    match v {
        Some(0) => Err(ApiError::invalid(format!(
            "query parameter {name} must be at least 1 (omit it for the default)"
        ))),
        v => Ok(v.unwrap_or(0)),
    }
}

/// An RFC 3339 time parameter, normalized. A `+` offset that arrived unencoded (and so was
/// decoded as a space) is accepted.
fn time_param(name: &str, v: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(raw) = v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    OffsetDateTime::parse(&raw, &Rfc3339)
        .or_else(|e| OffsetDateTime::parse(&raw.replace(' ', "+"), &Rfc3339).map_err(|_| e))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "query parameter {name} must be an RFC 3339 time such as 2025-01-31T12:00:00Z, got {raw:?}"
            ))
        })
}

/// A user id to filter by: no longer than a cart's user id may be (`SetUser`).
fn user_param(v: Option<String>) -> Result<Option<String>, ApiError> {
    let max = cart_domain::Limits::default().max_text_len;
    match v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()) {
        Some(u) if u.chars().count() > max => Err(ApiError::invalid(format!(
            "query parameter user must be at most {max} characters (a cart's user id is)"
        ))),
        u => Ok(u),
    }
}

impl ListCartsQuery {
    fn request(self, tenant: &TenantId) -> Result<pb::ListCartsRequest, ApiError> {
        Ok(pb::ListCartsRequest {
            tenant: tenant.to_string(),
            status: self.status.map(|s| s.as_str().to_owned()),
            updated_since: time_param("updated_since", self.updated_since)?,
            user_id: user_param(self.user)?,
            page_size: positive("page_size", self.page_size)?,
            page_token: self.page_token.unwrap_or_default(),
        })
    }
}

impl ListOrdersQuery {
    fn request(self, tenant: &TenantId) -> Result<pb::ListOrdersRequest, ApiError> {
        Ok(pb::ListOrdersRequest {
            tenant: tenant.to_string(),
            since: time_param("since", self.since)?,
            page_size: positive("page_size", self.page_size)?,
            page_token: self.page_token.unwrap_or_default(),
        })
    }
}

impl SkuDemandQuery {
    fn request(self, tenant: &TenantId) -> Result<pb::SkuDemandRequest, ApiError> {
        let limit = positive("limit", self.limit)?;
        Ok(pb::SkuDemandRequest {
            tenant: tenant.to_string(),
            limit,
        })
    }
}

impl AbandonedQuery {
    fn request(self, tenant: &TenantId) -> Result<pb::AbandonedCartsRequest, ApiError> {
        if self.idle_seconds == Some(0) {
            return Err(ApiError::invalid(
                "query parameter idle_seconds must be at least 1 (omit it for the projection's default)",
            ));
        }
        Ok(pb::AbandonedCartsRequest {
            tenant: tenant.to_string(),
            idle_seconds: self.idle_seconds.unwrap_or(0),
            page_size: positive("page_size", self.page_size)?,
            page_token: self.page_token.unwrap_or_default(),
        })
    }
}

error_replies! {
    /// Errors of the query routes but for the caller's ([`CallerErrors`]) and those of every
    /// projection call ([`ProjectionErrors`]). Every body is `{"error", "code"}`.
    pub enum QueryErrors {
        /// An invalid query parameter, cart id or tenant header (the message names it), or a
        /// page token from another listing.
        400 => BadRequest,
        /// The projection is unreachable; see `Retry-After`.
        503 => Unavailable,
    }
}

error_replies! {
    /// Errors of every call to the projection, whatever the route (with the route's own 503).
    /// Every body is `{"error", "code"}`.
    pub enum ProjectionErrors {
        /// No projection is configured (`GATEWAY_PROJECTION_ADDR` is empty).
        501 => Unimplemented,
        /// The projection did not answer within `GATEWAY_SERVICE_TIMEOUT_MS`.
        504 => Timeout,
    }
}

/// The `GET` routes that list or report on the caller's tenant: the query parameters make the
/// request, answered by the `QueryService` method of the handler's name.
macro_rules! query_routes {
    ($($(#[$doc:meta])* $name:ident: $path:literal, $query:ident => $reply:ident, $what:literal;)+) => {$(
        $(#[$doc])*
        #[utoipa::path(get, path = $path, tag = TAG, params($query),
            responses((status = 200, description = $what, body = $reply),
                QueryErrors, CallerErrors, ProjectionErrors))]
        pub async fn $name(
            State(s): State<AppState>,
            BackOffice(ctx): BackOffice,
            QueryParams(q): QueryParams<$query>,
        ) -> Result<Json<$reply>, ApiError> {
            let req = q.request(&ctx.tenant)?;
            Ok(Json(query!(&s.services.projection, &ctx, $name, req).await?.into()))
        }
    )+};
}

query_routes! {
    /// Carts of the caller's tenant from the read model, newest update first, paginated.
    list_carts: "/v1/carts", ListCartsQuery => CartPage, "One page of carts";
    /// Placed orders of the caller's tenant, newest first, paginated.
    list_orders: "/v1/orders", ListOrdersQuery => OrderPage, "One page of orders";
    /// Open carts with items and no activity for at least `idle_seconds`, most recently active
    /// first, paginated.
    abandoned_carts: "/v1/reports/abandoned", AbandonedQuery => CartPage,
        "One page of abandoned carts";
    /// Units per SKU across the tenant's open carts, most demanded first.
    sku_demand: "/v1/reports/sku-demand", SkuDemandQuery => SkuDemandReport, "SKU demand";
}

/// One cart as the read model has it: status, totals and lines (it may trail the cart by the
/// projection's lag; `GET /v1/carts/{id}` reads the cart itself).
#[utoipa::path(get, path = "/v1/carts/{id}/view", tag = TAG,
    params(("id" = String, Path, description = "Cart id")),
    responses(
        (status = 200, description = "The cart's read model", body = CartRecord),
        (status = 404, description = "The projection has no such cart for this tenant", body = ErrorBody),
        QueryErrors, CallerErrors, ProjectionErrors))]
pub async fn cart_view(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Params(p): Params<CartPath>,
) -> Result<Json<CartRecord>, ApiError> {
    let req = pb::GetCartRequest {
        tenant: ctx.tenant.to_string(),
        cart_id: p.cart()?.to_string(),
    };
    let cart = query!(&s.services.projection, &ctx, get_cart, req).await?;
    Ok(Json(cart.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_normalized_and_bad_ones_name_the_parameter() {
        assert_eq!(time_param("since", None).unwrap(), None);
        assert_eq!(time_param("since", Some(" ".into())).unwrap(), None);
        assert_eq!(
            time_param("since", Some("2025-01-31T12:00:00+01:00".into())).unwrap(),
            Some("2025-01-31T12:00:00+01:00".into())
        );
        // `+01:00` sent unencoded arrives as ` 01:00`.
        assert_eq!(
            time_param("since", Some("2025-01-31T12:00:00 01:00".into())).unwrap(),
            Some("2025-01-31T12:00:00+01:00".into())
        );
        let e = time_param("updated_since", Some("yesterday".into())).unwrap_err();
        assert!(e.message.contains("updated_since"), "{}", e.message);
    }

    #[test]
    fn the_tenant_comes_from_the_context() {
        let q = ListCartsQuery {
            status: Some(CartStatus::Abandoned),
            user: Some(" ".into()),
            ..Default::default()
        };
        let req = q.request(&TenantId::parse("shop-a").unwrap()).unwrap();
        assert_eq!(req.tenant, "shop-a");
        assert_eq!(req.status.as_deref(), Some("abandoned"));
        assert_eq!(req.user_id, None);
        assert_eq!(req.page_size, 0);
        let e = positive("page_size", Some(0)).unwrap_err();
        assert!(e.message.contains("page_size"));
        let q = ListCartsQuery {
            user: Some("u".repeat(5000)),
            ..Default::default()
        };
        let e = q.request(&TenantId::parse("shop-a").unwrap()).unwrap_err();
        assert!(e.message.contains("at most 200"), "{}", e.message);
        assert!(!e.message.contains("uuu"), "not echoed: {}", e.message);
    }
}
