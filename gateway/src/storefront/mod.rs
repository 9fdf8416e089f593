//! The storefront API, compatible with the go-cart-actor storefront client: the cart is named
//! by the `cartid` cookie (set on first use) or by `/cart/byid/{cartId}`, bodies are JSON
//! whatever their content type, reads return the cart and mutations return
//! `{result: Cart, mutations: [{type, mutation}]}`.

pub mod cart_ref;
pub mod dto;
pub mod handlers;

use axum::response::{IntoResponse, Response};
use cart_domain::{Command, MutationOutcome};
use serde::Serialize;
use shared::headers::RequestContext;
use shared::{ApiError, CommandId, ErrorCode};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::cart_ref::{Source, StoreCart};
use self::handlers::*;
use crate::openapi::{Routes, alias, by_id};
use crate::state::AppState;
use crate::upstream::aggregate::Exec;

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
///
/// The cookie's cart once its order is placed is done with: an add to it goes to a new cart,
/// whose cookie the reply sets (the cart stayed locked, every add refused for the cookie's
/// lifetime, unless the client happened to forget the cart first). Any other change, a cart
/// named by its id (`/cart/byid/..`) and a cart being paid stay refused (`409 cart_locked`).
pub async fn mutate(
    s: &AppState,
    ctx: &RequestContext,
    cart: &StoreCart,
    command: Command,
    echo: &impl Serialize,
) -> Result<Response, ApiError> {
    let kind = command.name();
    // Only an add starts the next cart: a change naming a line, a delivery or a voucher names
    // one of the placed cart's, which the new cart does not have.
    let adds = matches!(command, Command::AddItem(_) | Command::AddItems { .. });
    let again = (adds && cart.source == Source::Cookie).then(|| command.clone());
    let exec = || Exec::new(CommandId::new());
    let done = s.execute_storefront(ctx, &cart.id, exec(), command).await;
    let (rendered, fresh) = match (done, again) {
        (Ok(rendered), _) => (rendered, None),
        (Err(e), Some(command))
            if e.code == ErrorCode::CartLocked && placed(s, ctx, cart).await =>
        {
            let fresh = StoreCart::minted();
            let rendered = s
                .execute_storefront(ctx, &fresh.id, exec(), command)
                .await?;
            (rendered, Some(fresh))
        }
        (Err(e), _) => return Err(e),
    };
    let cart = fresh.as_ref().unwrap_or(cart);
    let mutations = [MutationOutcome {
        kind: kind.to_owned(),
        error: None,
        mutation: serde_json::to_value(echo).unwrap_or_default(),
    }];
    let body = mutation_reply(&rendered, &mutations)?;
    Ok(s.cookies.attach_changed(cart, json_response(body)))
}

/// Whether `cart`'s order is placed (not only held for a purchase); false when it cannot be
/// read (the refusal then stands).
async fn placed(s: &AppState, ctx: &RequestContext, cart: &StoreCart) -> bool {
    s.upstream
        .state(ctx, &cart.id)
        .await
        .is_ok_and(|state| state.cart.order_placed())
}

/// `{"result": <cart>, "mutations": [...]}` around the cart JSON the aggregate rendered: the
/// bytes `Json(MutationReply { .. })` would send, without parsing the cart again.
fn mutation_reply(cart_json: &[u8], mutations: &[MutationOutcome]) -> Result<Vec<u8>, ApiError> {
    let mutations = serde_json::to_vec(mutations).map_err(|e| ApiError::internal(e.to_string()))?;
    let mut body = Vec::with_capacity(cart_json.len() + mutations.len() + 26);
    body.extend_from_slice(b"{\"result\":");
    body.extend_from_slice(cart_json);
    body.extend_from_slice(b",\"mutations\":");
    body.extend_from_slice(&mutations);
    body.push(b'}');
    Ok(body)
}

/// A JSON body already serialised, with the header `Json` sets.
pub fn json_response(body: Vec<u8>) -> Response {
    (
        [(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cart_domain::{Cart, MutationReply, StorefrontCart};

    #[test]
    fn a_reply_around_a_rendered_cart_is_byte_for_byte_what_serde_writes() {
        let cart = Cart::new(shared::CartId::parse("c-1").unwrap());
        let mutations = vec![MutationOutcome {
            kind: "AddItem".into(),
            error: None,
            mutation: serde_json::json!({"sku": "A", "quantity": 2}),
        }];
        let rendered = proto::convert::storefront_json(&cart);
        let expected = serde_json::to_vec(&MutationReply {
            result: StorefrontCart::storefront(&cart),
            mutations: mutations.clone(),
        })
        .unwrap();
        assert_eq!(
            String::from_utf8(mutation_reply(&rendered, &mutations).unwrap()).unwrap(),
            String::from_utf8(expected).unwrap()
        );
    }
}
