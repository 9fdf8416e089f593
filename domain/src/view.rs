//! The cart as clients read it (camelCase JSON), in two shapes that differ in two fields:
//!
//! - [`CartView`] (`/v1`): `totalTax` and each voucher's `discount` are [`CartPrice`]s
//!   (`{exVat, incVat, vat}`), like every other amount.
//! - [`StorefrontCart`] (the storefront API): both are plain numbers (minor units incl. VAT),
//!   as the storefront client's own types declare them (`totalTax: number`,
//!   `Voucher.discount: number`; a `CartPrice` there crashes its mini cart).
//!
//! Everything else is the same. These shapes are a public contract pinned by serialization
//! tests; add fields, never rename or remove them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::cart::{Cart, LineOptions, PickupPoint};
use super::line_product::ProductLabels;
use super::money::CartPrice;
use super::totals::{describe_voucher, totals, unmet_rules};

/// How a shape writes the amounts where the two differ (`totalTax`, voucher `discount`).
pub trait Amount: Sized {
    fn of(price: &CartPrice) -> Self;
}

/// `/v1`: the whole price.
impl Amount for CartPrice {
    fn of(price: &CartPrice) -> Self {
        price.clone()
    }
}

/// The storefront: minor units incl. VAT.
impl Amount for i64 {
    fn of(price: &CartPrice) -> Self {
        price.inc_vat
    }
}

/// The cart in the storefront API's shape (see the module docs).
pub type StorefrontCart = CartView<i64>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CartView<M = CartPrice> {
    pub id: String,
    pub items: Vec<CartItem>,
    pub deliveries: Vec<CartDelivery>,
    pub vouchers: Vec<Voucher<M>>,
    pub total_price: CartPrice,
    pub total_discount: CartPrice,
    /// The VAT part of `totalPrice`: a [`CartPrice`] (`incVat` = VAT, `exVat` = 0, per rate
    /// in `vat`) in `/v1`, the VAT amount in the storefront shape.
    pub total_tax: M,
    /// The provider order is being created.
    pub processing: bool,
    pub payment_in_progress: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// ISO 4217 code of every amount in the cart (absent while the cart is empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Subscription details by id (absent while there are none).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub subscription_details: BTreeMap<String, SubscriptionDetailsView>,
}

/// Subscription details as the storefront client reads them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionDetailsView {
    pub id: String,
    pub offering_code: String,
    pub signing_type: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CartItem {
    /// Line id: 1, 2, 3, ... per cart (what `PUT /cart` and `DELETE /cart/{id}` take).
    pub id: u32,
    pub item_id: u64,
    pub sku: String,
    pub qty: u32,
    /// Unit price.
    pub price: CartPrice,
    /// `price × qty`.
    pub total_price: CartPrice,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_price: Option<CartPrice>,
    /// VAT rate in basis points (2500 = 25 %).
    pub tax: u32,
    pub stock: i64,
    #[serde(rename = "type")]
    pub item_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_id: Option<String>,
    pub meta: ItemMeta,
    /// The line's options (`marking`, ...), inline.
    #[serde(flatten)]
    pub options: LineOptions,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ItemMeta {
    pub name: String,
    /// Always present (the storefront client's type requires it): empty when the product has
    /// no image.
    #[serde(default)]
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seller_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seller_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlet: Option<String>,
}

impl ItemMeta {
    /// The storefront's `meta` of a product named `name` with `labels` (camelCase there).
    fn of(name: &str, labels: &ProductLabels) -> Self {
        Self {
            name: name.to_owned(),
            image: labels.image.clone().unwrap_or_default(),
            brand: labels.brand.clone(),
            category: labels.category.clone(),
            seller_id: labels.seller_id.clone(),
            seller_name: labels.seller_name.clone(),
            outlet: labels.outlet.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CartDelivery {
    pub id: u32,
    pub provider: String,
    /// Line ids this delivery ships.
    pub items: Vec<u32>,
    pub price: CartPrice,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pickup_point: Option<PickupPoint>,
}

/// A voucher on the cart. One whose rules are not met stays, not applied, and applies as soon
/// as the cart qualifies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Voucher<M = CartPrice> {
    pub id: u32,
    pub code: String,
    /// What it takes off right now: minor units incl. VAT (0 while not applied).
    pub value: i64,
    /// The same amount as a [`CartPrice`] in `/v1`, as a number in the storefront shape.
    pub discount: M,
    pub description: String,
    /// Its rules are met (it takes `value` off).
    pub applied: bool,
    /// What is still missing while it is not applied, e.g. the minimum order.
    pub rules: Vec<String>,
}

impl CartView {
    /// The `/v1` shape.
    pub fn of(cart: &Cart) -> CartView {
        render(cart)
    }
}

impl StorefrontCart {
    /// The storefront API's shape.
    pub fn storefront(cart: &Cart) -> StorefrontCart {
        render(cart)
    }
}

fn render<M: Amount>(cart: &Cart) -> CartView<M> {
    {
        let t = totals(cart);
        let currency = cart.currency.as_deref().unwrap_or_default();
        let items_gross = t.items.inc_vat;
        CartView {
            id: cart.id.to_string(),
            items: cart
                .lines
                .iter()
                .zip(&t.lines)
                .map(|(l, total)| {
                    let p = &l.product;
                    CartItem {
                        id: l.id,
                        item_id: p.item_id,
                        sku: p.sku.clone(),
                        qty: l.quantity,
                        price: CartPrice::from_gross(p.unit_price, p.tax_rate),
                        total_price: total.clone(),
                        org_price: p.org_price.map(|o| CartPrice::from_gross(o, p.tax_rate)),
                        tax: p.tax_rate.0,
                        stock: p.stock,
                        item_type: p.item_type.clone(),
                        store_id: l.store_id.as_deref().map(str::to_owned),
                        meta: ItemMeta::of(&p.name, &p.labels),
                        options: l.options.clone(),
                    }
                })
                .collect(),
            deliveries: cart
                .deliveries
                .iter()
                .zip(&t.deliveries)
                .map(|(d, price)| CartDelivery {
                    id: d.id,
                    provider: d.provider.clone(),
                    items: d.line_ids.clone(),
                    price: price.clone(),
                    pickup_point: d.pickup_point.clone(),
                })
                .collect(),
            vouchers: cart
                .vouchers
                .iter()
                .zip(&t.vouchers)
                .map(|(v, discount)| {
                    let mut rules = unmet_rules(v, items_gross, currency);
                    // Rules met but nothing left to take off (earlier vouchers took it all):
                    // not shown as applied, and why.
                    if rules.is_empty() && discount.inc_vat <= 0 {
                        rules.push("discount: the items are already fully discounted".to_owned());
                    }
                    Voucher {
                        id: v.id,
                        code: v.definition.code.clone(),
                        value: discount.inc_vat,
                        discount: M::of(discount),
                        description: describe_voucher(v, currency),
                        applied: rules.is_empty(),
                        rules,
                    }
                })
                .collect(),
            total_tax: M::of(&t.tax()),
            total_price: t.total,
            total_discount: t.discount,
            processing: cart.processing(),
            payment_in_progress: cart.payment_in_progress(),
            order_reference: cart.order.as_ref().map(|o| o.order_reference.clone()),
            payment_status: cart.payment_status.clone(),
            user_id: cart.user_id.clone(),
            currency: cart.currency.clone(),
            subscription_details: cart
                .subscription_details
                .iter()
                .map(|d| {
                    (
                        d.id.clone(),
                        SubscriptionDetailsView {
                            id: d.id.clone(),
                            offering_code: d.offering_code.clone(),
                            signing_type: d.signing_type.clone(),
                            data: d.data.clone(),
                        },
                    )
                })
                .collect(),
        }
    }
}

/// The reply to a mutation: the resulting cart (in the API's shape) and one entry per
/// mutation sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MutationReply<M = CartPrice> {
    pub result: CartView<M>,
    pub mutations: Vec<MutationOutcome>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MutationOutcome {
    /// The command's type name (`AddItem`, `ChangeQuantity`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<MutationError>,
    /// The mutation as received.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub mutation: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct MutationError {
    pub message: String,
    pub code: String,
    pub status_code: u16,
}
