//! The JSON shapes of the query routes (camelCase, money in minor units with its currency),
//! converted from the projection's records. They describe the read model, which trails the
//! cart's own state by the projection's lag.

use proto::projection::v1 as pb;
use serde::Serialize;
use utoipa::ToSchema;

/// An amount in minor units (öre, cents), VAT included, with its ISO 4217 currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Money {
    pub amount: i64,
    /// `null` while the cart has no priced line (its currency is not known yet).
    pub currency: Option<String>,
}

impl Money {
    fn new(amount: i64, currency: &str) -> Self {
        Self {
            amount,
            currency: Some(currency.to_owned()).filter(|c| !c.is_empty()),
        }
    }
}

/// A cart as the projection sees it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CartRecord {
    pub id: String,
    pub tenant: String,
    /// `open`, `checkout`, `ordered` or `abandoned` (open with items and idle for longer than
    /// the projection's threshold).
    pub status: String,
    /// Units over all lines.
    pub item_count: u32,
    pub line_count: u32,
    pub total: Money,
    /// The VAT part of `total`.
    pub tax: Money,
    pub discount: Money,
    pub user_id: Option<String>,
    pub order_reference: Option<String>,
    /// RFC 3339 time of the cart's first event.
    pub created_at: String,
    /// RFC 3339 time of the cart's last event.
    pub updated_at: String,
    /// Stream sequence of the last event applied (the cart's `ETag` at that point).
    pub version: u64,
    /// Lines in cart order.
    pub lines: Vec<CartLineRecord>,
    /// Subscription details by id, as on the cart (absent while there are none).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub subscription_details: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CartLineRecord {
    /// Line id within the cart.
    pub id: u32,
    pub sku: String,
    pub name: String,
    pub quantity: u32,
    pub unit_price: Money,
    /// VAT rate in basis points (2500 = 25 %).
    pub tax_rate: u32,
}

impl From<pb::CartRecord> for CartRecord {
    fn from(c: pb::CartRecord) -> Self {
        let money = |amount| Money::new(amount, &c.currency);
        Self {
            total: money(c.total_amount),
            tax: money(c.total_tax),
            discount: money(c.total_discount),
            lines: c
                .lines
                .iter()
                .map(|l| CartLineRecord {
                    id: l.line_id,
                    sku: l.sku.clone(),
                    name: l.name.clone(),
                    quantity: l.quantity,
                    unit_price: money(l.unit_price),
                    tax_rate: l.tax_rate,
                })
                .collect(),
            id: c.cart_id,
            tenant: c.tenant,
            status: c.status,
            item_count: c.item_count,
            line_count: c.line_count,
            user_id: c.user_id,
            order_reference: c.order_reference,
            created_at: c.created_at,
            updated_at: c.updated_at,
            version: c.version,
            // Written by the projection from the same view type; anything else reads as none.
            subscription_details: serde_json::from_str(&c.subscription_details_json)
                .ok()
                .filter(serde_json::Value::is_object),
        }
    }
}

/// A page of a listing: its records under `$records`, converted from the projection's reply,
/// and the token of the next page (`null` on the last page).
macro_rules! page {
    ($(#[$doc:meta])* $name:ident from $reply:ty { $records:ident: Vec<$record:ident> }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Serialize, ToSchema)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            pub $records: Vec<$record>,
            /// Pass as `page_token` for the next page; `null` on the last page.
            pub next_page_token: Option<String>,
        }

        impl From<$reply> for $name {
            fn from(r: $reply) -> Self {
                Self {
                    $records: r.$records.into_iter().map($record::from).collect(),
                    next_page_token: Some(r.next_page_token).filter(|t| !t.is_empty()),
                }
            }
        }
    };
}

page! {
    /// One page of carts, newest update first.
    CartPage from pb::ListCartsResponse { carts: Vec<CartRecord> }
}

/// A placed order.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderRecord {
    pub cart_id: String,
    pub provider_order_id: String,
    pub order_reference: String,
    pub total: Money,
    pub user_id: Option<String>,
    /// RFC 3339.
    pub placed_at: String,
}

impl From<pb::OrderRecord> for OrderRecord {
    fn from(o: pb::OrderRecord) -> Self {
        Self {
            total: Money::new(o.total_amount, &o.currency),
            cart_id: o.cart_id,
            provider_order_id: o.provider_order_id,
            order_reference: o.order_reference,
            user_id: o.user_id,
            placed_at: o.placed_at,
        }
    }
}

page! {
    /// One page of orders, newest first.
    OrderPage from pb::ListOrdersResponse { orders: Vec<OrderRecord> }
}

/// Demand for one SKU across open carts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SkuDemand {
    pub sku: String,
    /// Units in open carts.
    pub quantity: u64,
    /// Open carts holding the SKU.
    pub carts: u32,
}

/// SKUs by demand, most units first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SkuDemandReport {
    pub skus: Vec<SkuDemand>,
}

impl From<pb::SkuDemandResponse> for SkuDemandReport {
    fn from(r: pb::SkuDemandResponse) -> Self {
        Self {
            skus: r
                .skus
                .into_iter()
                .map(|s| SkuDemand {
                    sku: s.sku,
                    quantity: s.quantity,
                    carts: s.carts,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_carries_the_currency_and_pages_end_with_null() {
        let record = pb::CartRecord {
            cart_id: "c1".into(),
            total_amount: 24_900,
            total_tax: 4_980,
            currency: "SEK".into(),
            lines: vec![pb::LineRecord {
                line_id: 1,
                sku: "S".into(),
                quantity: 1,
                unit_price: 24_900,
                tax_rate: 2_500,
                ..Default::default()
            }],
            ..Default::default()
        };
        let page = CartPage::from(pb::ListCartsResponse {
            carts: vec![record],
            next_page_token: String::new(),
        });
        let v = serde_json::to_value(&page).unwrap();
        assert_eq!(v["nextPageToken"], serde_json::Value::Null);
        let cart = &v["carts"][0];
        assert_eq!(cart["id"], "c1");
        assert_eq!(
            cart["total"],
            serde_json::json!({"amount": 24900, "currency": "SEK"})
        );
        assert_eq!(cart["tax"]["amount"], 4980);
        assert_eq!(cart["lines"][0]["unitPrice"]["amount"], 24900);
        assert_eq!(cart["lines"][0]["taxRate"], 2500);
        let empty = CartRecord::from(pb::CartRecord::default());
        assert_eq!(empty.total.currency, None);
    }
}
