//! Storefront handlers: parse the body, run one command, reply with the cart. Each is mounted
//! twice (see [`super::router`]): for the `cartid` cookie at the path written here, and for an
//! explicit id under `/cart/byid/{cartId}`.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use cart_domain::{CartView, Command, MutationReply, PickupPoint};
use serde::{Deserialize, Serialize};
use serde_json::json;
use shared::{ApiError, CartId, CommandId, ErrorCode};

use super::cart_ref::StoreCart;
use super::dto::*;
use super::mutate;
use crate::request::context::Ctx;
use crate::request::json::{JsonBody, StrictJson};
use crate::request::params::Params;
use crate::schema::{CommandErrors, ReadErrors};
use crate::state::AppState;
use crate::upstream::aggregate::VersionedCart;

pub const TAG: &str = "storefront";

#[derive(Deserialize)]
pub struct SkuPath {
    sku: String,
}

#[derive(Deserialize)]
pub struct IdPath {
    id: u32,
}

#[derive(Deserialize)]
pub struct CartPath {
    id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinePath {
    line_id: u32,
}

#[derive(Deserialize)]
pub struct DetailsPath {
    id: String,
}

/// Body of `DELETE /cart/`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Forgotten {
    message: &'static str,
}

/// The cart. Without a `cartid` cookie a new cart id is minted and set as the cookie; nothing
/// is stored until the first change.
#[utoipa::path(get, path = "/cart", tag = TAG,
    responses((status = 200, description = "The cart", body = CartView<i64>), ReadErrors))]
pub async fn get_cart(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    cart: StoreCart,
) -> Result<Response, ApiError> {
    let body = if cart.is_new() {
        proto::convert::storefront_json(&VersionedCart::empty(&cart.id).cart)
    } else {
        s.upstream.get_storefront(&ctx, &cart.id).await?
    };
    Ok(s.cookies.attach(&cart, super::json_response(body)))
}

/// A cart by its id (no cookie involved).
#[utoipa::path(get, path = "/cart/{id}", tag = TAG,
    params(("id" = String, Path, description = "Cart id")),
    responses((status = 200, description = "The cart", body = CartView<i64>), ReadErrors))]
pub async fn read_by_id(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Params(p): Params<CartPath>,
) -> Result<Response, ApiError> {
    let id = CartId::parse(&p.id)?;
    Ok(super::json_response(
        s.upstream.get_storefront(&ctx, &id).await?,
    ))
}

/// Add an item (`AddItem`).
#[utoipa::path(post, path = "/cart", tag = TAG, request_body = ItemBody,
    responses((status = 200, description = "The cart after the change", body = MutationReply<i64>), CommandErrors))]
pub async fn add_item(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    cart: StoreCart,
    JsonBody(body): JsonBody<ItemBody>,
) -> Result<Response, ApiError> {
    let cmd = Command::AddItem(body.to_add_item(&s.cfg.default_country));
    mutate(&s, &ctx, &cart, cmd, &body).await
}

/// Add one of `sku` (shipped to the default country).
#[utoipa::path(get, path = "/cart/add/{sku}", tag = TAG,
    params(("sku" = String, Path, description = "SKU to add")),
    responses((status = 200, description = "The cart after the change", body = MutationReply<i64>), CommandErrors))]
pub async fn add_sku(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    cart: StoreCart,
    Params(p): Params<SkuPath>,
) -> Result<Response, ApiError> {
    if !s.cfg.legacy_get_add {
        return Err(ApiError::new(
            ErrorCode::MethodNotAllowed,
            "GET /cart/add/{sku} is turned off here (GATEWAY_LEGACY_GET_ADD=false): any page a \
             shopper visits could trigger it; add with POST /cart and {\"sku\": ..}",
        ));
    }
    let body = ItemBody {
        sku: p.sku,
        quantity: 1,
        country: Some(s.cfg.default_country.clone()),
        store_id: None,
    };
    let cmd = Command::AddItem(body.to_add_item(&s.cfg.default_country));
    mutate(&s, &ctx, &cart, cmd, &body).await
}

/// Add several items in one step (`AddItems`; all or nothing).
#[utoipa::path(post, path = "/cart/add", tag = TAG, request_body = ItemsBody,
    responses((status = 200, description = "The cart after the change", body = MutationReply<i64>), CommandErrors))]
pub async fn add_items(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    cart: StoreCart,
    JsonBody(body): JsonBody<ItemsBody>,
) -> Result<Response, ApiError> {
    let cmd = Command::AddItems {
        items: body.items(&s.cfg.default_country)?,
    };
    mutate(&s, &ctx, &cart, cmd, &body).await
}

/// Change a line's quantity (`ChangeQuantity`).
#[utoipa::path(put, path = "/cart", tag = TAG, request_body = ChangeQuantityBody,
    responses((status = 200, description = "The cart after the change", body = MutationReply<i64>), CommandErrors))]
pub async fn change_quantity(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    cart: StoreCart,
    JsonBody(body): JsonBody<ChangeQuantityBody>,
) -> Result<Response, ApiError> {
    let cmd = Command::ChangeQuantity {
        line_id: body.id,
        quantity: body.quantity,
    };
    mutate(&s, &ctx, &cart, cmd, &body).await
}

/// Remove a line (`RemoveItem`).
#[utoipa::path(delete, path = "/cart/{id}", tag = TAG,
    params(("id" = u32, Path, description = "Line id")),
    responses((status = 200, description = "The cart after the change", body = MutationReply<i64>), CommandErrors))]
pub async fn remove_line(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    cart: StoreCart,
    Params(p): Params<IdPath>,
) -> Result<Response, ApiError> {
    let cmd = Command::RemoveItem { line_id: p.id };
    mutate(&s, &ctx, &cart, cmd, &json!({ "id": p.id })).await
}

/// Forget the `cartid` cookie: the next request starts a new cart. The cart itself is kept.
#[utoipa::path(delete, path = "/cart", tag = TAG,
    responses((status = 200, description = "Cookie cleared", body = Forgotten)))]
pub async fn forget_cart(State(s): State<AppState>) -> Response {
    let mut resp = Json(Forgotten {
        message: "cart cookie cleared; the next request starts a new cart",
    })
    .into_response();
    resp.headers_mut()
        .append(http::header::SET_COOKIE, s.cookies.clear());
    resp
}

/// Replace every line (`SetItems`; deliveries go with the old lines).
#[utoipa::path(post, path = "/cart/set", tag = TAG, request_body = ItemsBody,
    responses((status = 200, description = "The cart after the change", body = MutationReply<i64>), CommandErrors))]
pub async fn set_items(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    cart: StoreCart,
    JsonBody(body): JsonBody<ItemsBody>,
) -> Result<Response, ApiError> {
    let cmd = Command::SetItems {
        items: body.items(&s.cfg.default_country)?,
    };
    mutate(&s, &ctx, &cart, cmd, &body).await
}

/// Add a delivery for some lines, or every line without one (`AddDelivery`).
#[utoipa::path(post, path = "/cart/delivery", tag = TAG, request_body = AddDeliveryBody,
    responses((status = 200, description = "The cart after the change", body = MutationReply<i64>), CommandErrors))]
pub async fn add_delivery(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    cart: StoreCart,
    JsonBody(body): JsonBody<AddDeliveryBody>,
) -> Result<Response, ApiError> {
    let cmd = Command::AddDelivery {
        provider: body.provider.clone(),
        line_ids: body.items.clone(),
    };
    mutate(&s, &ctx, &cart, cmd, &body).await
}

/// Remove a delivery (`RemoveDelivery`).
#[utoipa::path(delete, path = "/cart/delivery/{id}", tag = TAG,
    params(("id" = u32, Path, description = "Delivery id")),
    responses((status = 200, description = "The cart after the change", body = MutationReply<i64>), CommandErrors))]
pub async fn remove_delivery(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    cart: StoreCart,
    Params(p): Params<IdPath>,
) -> Result<Response, ApiError> {
    let cmd = Command::RemoveDelivery { delivery_id: p.id };
    mutate(&s, &ctx, &cart, cmd, &json!({ "id": p.id })).await
}

/// Set the pickup point of a delivery (`SetPickupPoint`).
#[utoipa::path(put, path = "/cart/delivery/{id}/pickupPoint", tag = TAG,
    params(("id" = u32, Path, description = "Delivery id")), request_body = PickupPoint,
    responses((status = 200, description = "The cart after the change", body = MutationReply<i64>), CommandErrors))]
pub async fn set_pickup_point(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    cart: StoreCart,
    Params(p): Params<IdPath>,
    StrictJson(pickup_point): StrictJson<PickupPoint>,
) -> Result<Response, ApiError> {
    let echo = serde_json::to_value(&pickup_point).unwrap_or_default();
    let cmd = Command::SetPickupPoint {
        delivery_id: p.id,
        pickup_point,
    };
    mutate(&s, &ctx, &cart, cmd, &echo).await
}

/// Apply a voucher code (`ApplyVoucher`).
#[utoipa::path(put, path = "/cart/voucher", tag = TAG, request_body = VoucherBody,
    responses((status = 200, description = "The cart after the change", body = MutationReply<i64>), CommandErrors))]
pub async fn apply_voucher(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    cart: StoreCart,
    JsonBody(body): JsonBody<VoucherBody>,
) -> Result<Response, ApiError> {
    let cmd = body.command()?;
    mutate(&s, &ctx, &cart, cmd, &body).await
}

/// Remove an applied voucher (`RemoveVoucher`).
#[utoipa::path(delete, path = "/cart/voucher/{id}", tag = TAG,
    params(("id" = u32, Path, description = "Voucher id (`vouchers[].id`)")),
    responses((status = 200, description = "The cart after the change", body = MutationReply<i64>), CommandErrors))]
pub async fn remove_voucher(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    cart: StoreCart,
    Params(p): Params<IdPath>,
) -> Result<Response, ApiError> {
    let cmd = Command::RemoveVoucher { voucher_id: p.id };
    mutate(&s, &ctx, &cart, cmd, &json!({ "id": p.id })).await
}

/// Attach the cart to a signed-in user, or detach it with `null` (`SetUser`).
#[utoipa::path(put, path = "/cart/user", tag = TAG, request_body = UserBody,
    responses((status = 200, description = "The cart after the change", body = MutationReply<i64>), CommandErrors))]
pub async fn set_user(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    cart: StoreCart,
    JsonBody(body): JsonBody<UserBody>,
) -> Result<Response, ApiError> {
    let cmd = Command::SetUser {
        user_id: body.user_id.clone(),
    };
    mutate(&s, &ctx, &cart, cmd, &body).await
}

/// Set a gift or engraving marking on a line (`SetMarking`).
#[utoipa::path(put, path = "/cart/item/{lineId}/marking", tag = TAG,
    params(("lineId" = u32, Path, description = "Line id")), request_body = MarkingBody,
    responses((status = 200, description = "The cart after the change", body = MutationReply<i64>), CommandErrors))]
pub async fn set_marking(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    cart: StoreCart,
    Params(p): Params<LinePath>,
    JsonBody(body): JsonBody<MarkingBody>,
) -> Result<Response, ApiError> {
    let echo = serde_json::to_value(&body).unwrap_or_default();
    let cmd = Command::SetMarking {
        line_id: p.line_id,
        marking: body.into(),
    };
    mutate(&s, &ctx, &cart, cmd, &echo).await
}

/// Remove a line's marking (`RemoveMarking`).
#[utoipa::path(delete, path = "/cart/item/{lineId}/marking", tag = TAG,
    params(("lineId" = u32, Path, description = "Line id")),
    responses((status = 200, description = "The cart after the change", body = MutationReply<i64>), CommandErrors))]
pub async fn remove_marking(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    cart: StoreCart,
    Params(p): Params<LinePath>,
) -> Result<Response, ApiError> {
    let cmd = Command::RemoveMarking { line_id: p.line_id };
    mutate(&s, &ctx, &cart, cmd, &json!({ "lineId": p.line_id })).await
}

/// Add subscription details to the cart, or replace those with the body's `id`
/// (`UpsertSubscriptionDetails`); without an id they get one derived from the cart and the
/// body (the same details sent again are the same entry), echoed in the mutation and shown as
/// the key of the cart's `subscriptionDetails`.
#[utoipa::path(put, path = "/cart/subscription-details", tag = TAG,
    request_body = SubscriptionDetailsBody,
    responses((status = 200, description = "The cart after the change", body = MutationReply<i64>), CommandErrors))]
pub async fn upsert_subscription_details(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    cart: StoreCart,
    JsonBody(mut body): JsonBody<SubscriptionDetailsBody>,
) -> Result<Response, ApiError> {
    // A storefront request carries no idempotency key: the same details sent again (a retry
    // after a lost reply) must name the same entry, not add a second one.
    if body.id.is_none() {
        let data = serde_json::to_string(&body.data).unwrap_or_default();
        let id = CommandId::derived(&[
            "subscription-details",
            ctx.tenant.as_str(),
            cart.id.as_str(),
            &body.offering_code,
            &body.signing_type,
            &data,
        ]);
        body.id = Some(id.to_string());
    }
    let echo = serde_json::to_value(&body).unwrap_or_default();
    mutate(&s, &ctx, &cart, body.command(), &echo).await
}

/// Remove subscription details from the cart (`RemoveSubscriptionDetails`).
#[utoipa::path(delete, path = "/cart/subscription-details/{id}", tag = TAG,
    params(("id" = String, Path, description = "The key in the cart's `subscriptionDetails`")),
    responses((status = 200, description = "The cart after the change", body = MutationReply<i64>), CommandErrors))]
pub async fn remove_subscription_details(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    cart: StoreCart,
    Params(p): Params<DetailsPath>,
) -> Result<Response, ApiError> {
    let echo = json!({ "id": p.id });
    let cmd = Command::RemoveSubscriptionDetails { id: p.id };
    mutate(&s, &ctx, &cart, cmd, &echo).await
}
