//! The storefront API, compatible with the go-cart-actor storefront client: the cart is named
//! by the `cartid` cookie (set on first use) or by `/cart/byid/{cartId}`, bodies are JSON
//! whatever their content type, reads return the cart and mutations return
//! `{result: Cart, mutations: [{type, mutation}]}`.

pub mod cart_ref;
pub mod dto;
pub mod handlers;

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use shared::domain::{Command, MutationOutcome, MutationReply};
use shared::headers::RequestContext;
use shared::{ApiError, CommandId};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::cart_ref::StoreCart;
use self::handlers::*;
use crate::openapi::{Routes, alias, by_id};
use crate::state::AppState;
use crate::upstream::Exec;

/// Every storefront route: each cart route for the cookie and under `/cart/byid/{cartId}`,
/// the root routes also with a trailing slash (`/cart/`, as the go-cart-actor README uses).
pub fn router() -> OpenApiRouter<AppState> {
    let root: [fn() -> Routes; 3] = [
        || routes!(get_cart),
        || routes!(add_item),
        || routes!(change_quantity),
    ];
    let scoped: [fn() -> Routes; 15] = [
        || routes!(add_sku),
        || routes!(add_items),
        || routes!(remove_line),
        || routes!(set_items),
        || routes!(add_delivery),
        || routes!(remove_delivery),
        || routes!(set_pickup_point),
        || routes!(apply_voucher),
        || routes!(remove_voucher),
        || routes!(set_user),
        || routes!(set_marking),
        || routes!(remove_marking),
        || routes!(crate::checkout::checkout),
        || routes!(upsert_subscription_details),
        || routes!(remove_subscription_details),
    ];
    let mut r = OpenApiRouter::new()
        .routes(routes!(forget_cart))
        .routes(alias("/cart/", routes!(forget_cart), "slash"))
        .routes(routes!(read_by_id));
    for make in root {
        r = r
            .routes(make())
            .routes(alias("/cart/", make(), "slash"))
            .routes(by_id(make()))
            .routes(alias("/cart/byid/{cartId}/", by_id(make()), "slash"));
    }
    for make in scoped {
        r = r.routes(make()).routes(by_id(make()));
    }
    r
}

/// Runs one storefront mutation (a fresh command id: the aggregate client retries with it) and
/// replies with the cart, echoing `echo` as the mutation; sets the cookie for a new cart.
pub async fn mutate(
    s: &AppState,
    ctx: &RequestContext,
    cart: &StoreCart,
    command: Command,
    echo: &impl Serialize,
) -> Result<Response, ApiError> {
    let kind = command.name();
    let snap = s
        .execute(ctx, &cart.id, Exec::new(CommandId::new()), command)
        .await?;
    let reply = MutationReply {
        result: snap.storefront(),
        mutations: vec![MutationOutcome {
            kind: kind.to_owned(),
            error: None,
            mutation: serde_json::to_value(echo).unwrap_or_default(),
        }],
    };
    Ok(s.cookies.attach(cart, Json(reply).into_response()))
}
