//! OpenAPI schemas of the response types that live in `cart_domain` (which does not depend on
//! utoipa). They only describe; replies are serialized from the `cart_domain` types themselves, and
//! a test pins these descriptions to what those types really serialize.

#![allow(dead_code)] // fields exist to be described, never read

use std::collections::BTreeMap;

use utoipa::ToSchema;

/// `{"error": "...", "code": "..."}`: every error of every route.
#[derive(ToSchema)]
pub struct ErrorBody {
    /// What went wrong and what to do about it.
    error: String,
    /// Stable code from the error table (`invalid_argument`, `unknown_sku`, `rate_limited`, ...).
    code: String,
}

/// A money amount in minor units: `{"exVat": .., "incVat": .., "vat": {"25": ..}}`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct CartPrice {
    ex_vat: i64,
    inc_vat: i64,
    /// VAT per rate in percent (`"25"`, `"12.5"`).
    vat: BTreeMap<String, i64>,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ItemMeta {
    name: String,
    /// Empty when the product has no image.
    image: String,
    brand: Option<String>,
    category: Option<String>,
    seller_id: Option<String>,
    seller_name: Option<String>,
    outlet: Option<String>,
}

#[derive(ToSchema)]
pub struct Marking {
    #[schema(rename = "type")]
    kind: u32,
    text: String,
}

#[derive(ToSchema)]
pub struct PickupPoint {
    id: String,
    name: Option<String>,
    address: Option<String>,
    city: Option<String>,
    zip: Option<String>,
    country: Option<String>,
}

/// A cart line.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct CartItem {
    /// Line id (1, 2, 3, ... per cart).
    id: u32,
    item_id: u64,
    sku: String,
    qty: u32,
    /// Unit price.
    price: CartPrice,
    total_price: CartPrice,
    org_price: Option<CartPrice>,
    /// VAT rate in basis points (2500 = 25 %).
    tax: u32,
    stock: i64,
    #[schema(rename = "type")]
    item_type: String,
    store_id: Option<String>,
    meta: ItemMeta,
    marking: Option<Marking>,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct CartDelivery {
    id: u32,
    provider: String,
    /// Line ids this delivery ships.
    items: Vec<u32>,
    price: CartPrice,
    pickup_point: Option<PickupPoint>,
}

/// A voucher on the cart; one whose rules are not met stays, not applied.
#[derive(ToSchema)]
pub struct Voucher {
    id: u32,
    code: String,
    /// What it takes off now, minor units incl. VAT (0 while not applied).
    value: i64,
    /// The same amount as a price.
    discount: CartPrice,
    description: String,
    applied: bool,
    /// What is missing while it is not applied.
    rules: Vec<String>,
}

/// A voucher as the storefront API shows it: `discount` is a number (minor units incl. VAT).
#[derive(ToSchema)]
pub struct StorefrontVoucher {
    id: u32,
    code: String,
    value: i64,
    discount: i64,
    description: String,
    applied: bool,
    rules: Vec<String>,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct SubscriptionDetails {
    id: String,
    offering_code: String,
    signing_type: String,
    data: serde_json::Value,
}

/// The cart (`/v1`): every amount is a price.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Cart {
    id: String,
    items: Vec<CartItem>,
    deliveries: Vec<CartDelivery>,
    vouchers: Vec<Voucher>,
    total_price: CartPrice,
    total_discount: CartPrice,
    /// The VAT part of the total.
    total_tax: CartPrice,
    processing: bool,
    payment_in_progress: bool,
    order_reference: Option<String>,
    payment_status: Option<String>,
    user_id: Option<String>,
    currency: Option<String>,
    subscription_details: Option<BTreeMap<String, SubscriptionDetails>>,
}

/// The cart as the storefront client reads it: like the `/v1` cart, but `totalTax` and each
/// voucher's `discount` are numbers (minor units incl. VAT).
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct StorefrontCart {
    id: String,
    items: Vec<CartItem>,
    deliveries: Vec<CartDelivery>,
    vouchers: Vec<StorefrontVoucher>,
    total_price: CartPrice,
    total_discount: CartPrice,
    /// The VAT of the total, minor units.
    total_tax: i64,
    processing: bool,
    payment_in_progress: bool,
    order_reference: Option<String>,
    payment_status: Option<String>,
    user_id: Option<String>,
    currency: Option<String>,
    subscription_details: Option<BTreeMap<String, SubscriptionDetails>>,
}

/// Why one mutation failed (non-atomic command lists).
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct MutationError {
    message: String,
    code: String,
    status_code: u16,
}

#[derive(ToSchema)]
pub struct MutationOutcome {
    /// Command type (`AddItem`, `ChangeQuantity`, ...).
    #[schema(rename = "type")]
    kind: String,
    error: Option<MutationError>,
    /// The mutation as received.
    mutation: serde_json::Value,
}

/// The reply to every `/v1` mutation: the resulting cart and one entry per mutation sent.
#[derive(ToSchema)]
pub struct MutationReply {
    result: Cart,
    mutations: Vec<MutationOutcome>,
}

/// The reply to every storefront mutation.
#[derive(ToSchema)]
pub struct StorefrontMutationReply {
    result: StorefrontCart,
    mutations: Vec<MutationOutcome>,
}

/// Errors of routes that change a cart. Every body is `{"error", "code"}`.
#[derive(utoipa::IntoResponses)]
pub enum CommandErrors {
    /// Malformed JSON, an unknown or mistyped field, an invalid id or quantity, an internal
    /// command type (the message names the field).
    #[response(status = 400)]
    BadRequest(#[to_schema] ErrorBody),
    /// Missing or unknown API key (when API keys are configured).
    #[response(status = 401)]
    Unauthenticated(#[to_schema] ErrorBody),
    /// `x-tenant-id` does not match the API key's tenant.
    #[response(status = 403)]
    PermissionDenied(#[to_schema] ErrorBody),
    /// Unknown SKU, line, delivery (provider) or voucher (`unknown_sku`, `unknown_line`, ...).
    #[response(status = 404)]
    NotFound(#[to_schema] ErrorBody),
    /// The order is placed (`cart_locked`), the command does not fit the cart's state
    /// (`invalid_state`), or the cart kept changing concurrently (`version_conflict`).
    #[response(status = 409)]
    Conflict(#[to_schema] ErrorBody),
    /// `If-Match` does not match the cart's version (`precondition_failed`).
    #[response(status = 412)]
    PreconditionFailed(#[to_schema] ErrorBody),
    /// The body is larger than `GATEWAY_BODY_LIMIT_BYTES`.
    #[response(status = 413)]
    PayloadTooLarge(#[to_schema] ErrorBody),
    /// A voucher does not apply, or a limit (lines, deliveries, batch size) would be exceeded.
    #[response(status = 422)]
    Unprocessable(#[to_schema] ErrorBody),
    /// Rate limited (per client or per cart); see `Retry-After`.
    #[response(status = 429)]
    RateLimited(#[to_schema] ErrorBody),
    /// No aggregate node reachable; see `Retry-After`.
    #[response(status = 503)]
    Unavailable(#[to_schema] ErrorBody),
    /// The aggregate did not answer in time; the outcome is unknown, retry the same request.
    #[response(status = 504)]
    Timeout(#[to_schema] ErrorBody),
}

/// Errors of routes that only read.
#[derive(utoipa::IntoResponses)]
pub enum ReadErrors {
    /// An invalid cart id or tenant header.
    #[response(status = 400)]
    BadRequest(#[to_schema] ErrorBody),
    /// Missing or unknown API key (when API keys are configured).
    #[response(status = 401)]
    Unauthenticated(#[to_schema] ErrorBody),
    /// `x-tenant-id` does not match the API key's tenant.
    #[response(status = 403)]
    PermissionDenied(#[to_schema] ErrorBody),
    /// Rate limited; see `Retry-After`.
    #[response(status = 429)]
    RateLimited(#[to_schema] ErrorBody),
    /// No aggregate node reachable; see `Retry-After`.
    #[response(status = 503)]
    Unavailable(#[to_schema] ErrorBody),
    /// The aggregate did not answer in time.
    #[response(status = 504)]
    Timeout(#[to_schema] ErrorBody),
}

#[cfg(test)]
mod tests {
    use super::*;
    use cart_domain::{CartView, MutationReply as Reply, StorefrontCart};
    use utoipa::PartialSchema;
    use utoipa::openapi::{RefOr, Schema};

    fn properties<T: PartialSchema>() -> Vec<String> {
        match T::schema() {
            RefOr::T(Schema::Object(o)) => o.properties.keys().cloned().collect(),
            _ => panic!("not an object schema"),
        }
    }

    fn keys(v: &serde_json::Value) -> Vec<String> {
        v.as_object().unwrap().keys().cloned().collect()
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    /// A cart with every optional part set: a voucher, subscription details, an order.
    fn full_cart() -> cart_domain::Cart {
        use cart_domain::cart::{AppliedVoucher, SubscriptionDetails as Details};
        use cart_domain::catalog::VoucherKind;
        let mut cart = cart_domain::Cart::new(shared::CartId::parse("1").unwrap());
        cart.vouchers.push(AppliedVoucher {
            id: 1,
            code: "TEN".into(),
            discount: VoucherKind::Fixed { amount: 1000 },
            min_order: 0,
            description: None,
            expires_at: None,
        });
        cart.subscription_details.push(Details {
            id: "s1".into(),
            offering_code: "5G".into(),
            signing_type: "bankid".into(),
            data: serde_json::json!({}),
        });
        let some = || Some("x".to_owned());
        cart.lines.push(cart_domain::Line {
            id: 1,
            quantity: 2,
            product: cart_domain::intern::share(cart_domain::intern::LineProduct {
                sku: "A".into(),
                item_id: 1,
                name: "A".into(),
                unit_price: 1000,
                org_price: Some(1200),
                tax_rate: cart_domain::TaxRate(2500),
                currency: "SEK".into(),
                stock: 3,
                item_type: "product".into(),
                image: some(),
                brand: some(),
                category: some(),
                seller_id: some(),
                seller_name: some(),
                outlet: some(),
            }),
            store_id: Some("s".into()),
            country: "se".into(),
            marking: Some(Box::new(cart_domain::Marking {
                kind: 1,
                text: "t".into(),
            })),
        });
        cart.deliveries.push(cart_domain::cart::Delivery {
            id: 1,
            provider: "standard".into(),
            line_ids: vec![1],
            price: 4900,
            tax_rate: cart_domain::TaxRate(2500),
            pickup_point: Some(cart_domain::PickupPoint {
                id: "p".into(),
                name: some(),
                address: some(),
                city: some(),
                zip: some(),
                country: some(),
            }),
        });
        cart.user_id = Some("u".into());
        cart.currency = Some("SEK".into());
        cart.payment_status = Some("p".into());
        cart.order = Some(Box::new(cart_domain::cart::PlacedOrder {
            provider_order_id: "o".into(),
            order_reference: "r".into(),
        }));
        cart
    }

    /// Every field a fully populated cart serializes is described, and nothing more, in both
    /// shapes.
    #[test]
    fn schemas_match_the_shared_types() {
        let cart = full_cart();
        let v = serde_json::to_value(CartView::of(&cart)).unwrap();
        assert_eq!(sorted(keys(&v)), sorted(properties::<Cart>()));
        assert_eq!(
            sorted(keys(&v["totalPrice"])),
            sorted(properties::<CartPrice>())
        );
        assert_eq!(
            sorted(keys(&v["vouchers"][0])),
            sorted(properties::<Voucher>())
        );
        let item = &v["items"][0];
        assert_eq!(sorted(keys(item)), sorted(properties::<CartItem>()));
        assert_eq!(
            sorted(keys(&item["meta"])),
            sorted(properties::<ItemMeta>())
        );
        assert_eq!(
            sorted(keys(&item["marking"])),
            sorted(properties::<Marking>())
        );
        let delivery = &v["deliveries"][0];
        assert_eq!(sorted(keys(delivery)), sorted(properties::<CartDelivery>()));
        assert_eq!(
            sorted(keys(&delivery["pickupPoint"])),
            sorted(properties::<PickupPoint>())
        );
        assert_eq!(
            sorted(keys(&v["subscriptionDetails"]["s1"])),
            sorted(properties::<SubscriptionDetails>())
        );
        let s = serde_json::to_value(StorefrontCart::storefront(&cart)).unwrap();
        assert_eq!(
            sorted(keys(&s)),
            sorted(properties::<super::StorefrontCart>())
        );
        assert_eq!(
            sorted(keys(&s["vouchers"][0])),
            sorted(properties::<StorefrontVoucher>())
        );
        assert!(s["totalTax"].is_i64() && s["vouchers"][0]["discount"].is_i64());
        let reply = Reply {
            result: CartView::of(&cart),
            mutations: vec![],
        };
        assert_eq!(
            sorted(keys(&serde_json::to_value(&reply).unwrap())),
            sorted(properties::<MutationReply>())
        );
    }
}
