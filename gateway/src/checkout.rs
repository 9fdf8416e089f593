//! Checkout routes of the storefront. Checkout needs the runner (it creates the provider order
//! and feeds the result back to the cart), which is not wired into the gateway yet: until then
//! these routes answer 501 `unimplemented` naming what is missing, and change nothing.
//!
//! Wiring them later means replacing the three handlers below; their paths, the by-id variant
//! of `/cart/checkout` (registered in `storefront::router`) and their documentation stay.

use axum::response::Response;
use serde::Deserialize;
use shared::{ApiError, ErrorCode};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::context::Ctx;
use crate::params::Params;
use crate::schema::ErrorBody;
use crate::state::AppState;
use crate::storefront::handlers::TAG;

fn missing(what: &str) -> ApiError {
    ApiError::new(
        ErrorCode::Unimplemented,
        format!(
            "{what} is not available yet: it needs the checkout runner (payment provider orders), which this deployment does not wire into the gateway"
        ),
    )
}

/// Routes that are not per cart (the per-cart `/cart/checkout` is in the storefront router).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(confirmation))
        .routes(routes!(push))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderPath {
    #[allow(dead_code)]
    order_id: String,
}

/// Start (or resume) checkout and return the provider's `html_snippet`.
#[utoipa::path(get, path = "/cart/checkout", tag = TAG,
    responses((status = 501, description = "Checkout is not wired yet (needs the runner)", body = ErrorBody)))]
pub async fn checkout(_ctx: Ctx) -> Result<Response, ApiError> {
    Err(missing("checkout (GET /cart/checkout)"))
}

/// The order confirmation page snippet of a placed order.
#[utoipa::path(get, path = "/cart/confirmation/{orderId}", tag = TAG,
    params(("orderId" = String, Path, description = "Provider order id")),
    responses((status = 501, description = "Checkout is not wired yet (needs the runner)", body = ErrorBody)))]
pub async fn confirmation(
    _ctx: Ctx,
    Params(_order): Params<OrderPath>,
) -> Result<Response, ApiError> {
    Err(missing(
        "order confirmation (GET /cart/confirmation/{orderId})",
    ))
}

/// The payment provider's push callback (order placed).
#[utoipa::path(post, path = "/cart/push", tag = TAG,
    responses((status = 501, description = "Checkout is not wired yet (needs the runner)", body = ErrorBody)))]
pub async fn push(_ctx: Ctx) -> Result<Response, ApiError> {
    Err(missing("the provider push callback (POST /cart/push)"))
}
