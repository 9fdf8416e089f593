//! What the `CATALOG` KV bucket holds: products (`sku.<sku>`), delivery pricing
//! (`delivery.<provider>`) and voucher definitions (`voucher.<code>`), and the seed file format
//! they are loaded from. The aggregate reads these at decide time and records the facts it used
//! in events, so replaying a cart never consults the catalog again.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use crate::line_product::ProductLabels;
use crate::money::TaxRate;

/// A sellable product as stored under `sku.<sku>`. Prices are VAT-inclusive integer minor
/// units (öre/cents) in `currency`, as Swedish storefronts show them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Product {
    pub sku: String,
    /// The storefront's numeric item id (go-cart-actor `itemId`).
    #[serde(default)]
    pub item_id: u64,
    pub name: String,
    /// Unit price including VAT, in minor units.
    pub price: i64,
    /// The price before a sale (shown struck through), including VAT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_price: Option<i64>,
    /// VAT rate in basis points (2500 = 25 %).
    pub tax_rate: TaxRate,
    #[serde(default = "default_currency")]
    pub currency: String,
    /// Units in stock when the line was added; informational, not reserved.
    #[serde(default)]
    pub stock: i64,
    /// Image, brand, seller: inline, as in a line's facts.
    #[serde(flatten)]
    pub labels: ProductLabels,
    /// Line type shown to the storefront (`product`, `gift_card`, ...).
    #[serde(default = "default_item_type", rename = "type")]
    pub item_type: String,
}

/// Delivery pricing for one provider, stored under `delivery.<provider>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryOption {
    pub provider: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Price including VAT, in minor units.
    pub price: i64,
    pub tax_rate: TaxRate,
    #[serde(default = "default_currency")]
    pub currency: String,
}

/// How a voucher reduces the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum VoucherKind {
    /// A fixed amount off the items, VAT-inclusive minor units (capped at the items' total).
    Fixed { amount: i64 },
    /// A share of the items' total, in basis points (1000 = 10 %).
    Percent { basis_points: u32 },
}

/// A voucher definition, stored under `voucher.<CODE>` (codes are upper-case).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoucherDefinition {
    pub code: String,
    pub discount: VoucherKind,
    /// What the shopper reads (e.g. "10 % off orders over 300 kr"); absent: generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Minimum items total (VAT-inclusive minor units) for the voucher to give a discount.
    #[serde(default)]
    pub min_order: i64,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_at: Option<OffsetDateTime>,
}

fn default_currency() -> String {
    "SEK".to_owned()
}

pub(crate) fn default_item_type() -> String {
    "product".to_owned()
}

/// The seed file format (`deploy/catalog.json`): everything the `CATALOG` bucket holds. Every
/// section is optional (absent: empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogSeed {
    pub products: Vec<Product>,
    pub deliveries: Vec<DeliveryOption>,
    pub vouchers: Vec<VoucherDefinition>,
}

/// Catalog lookups a decision needs. Implemented by an in-memory snapshot the aggregate fills
/// before deciding, so `decide` stays pure.
pub trait Catalog {
    fn product(&self, sku: &str) -> Option<&Product>;
    fn delivery(&self, provider: &str) -> Option<&DeliveryOption>;
    fn voucher(&self, code: &str) -> Option<&VoucherDefinition>;
}

/// A plain in-memory catalog: the seed file, a test fixture, or the entries the aggregate
/// fetched for one command (shared with its cache, not copied per command).
#[derive(Debug, Clone, Default)]
pub struct CatalogSnapshot {
    pub products: HashMap<String, Arc<Product>>,
    pub deliveries: HashMap<String, Arc<DeliveryOption>>,
    pub vouchers: HashMap<String, Arc<VoucherDefinition>>,
}

impl CatalogSnapshot {
    pub fn from_seed(seed: CatalogSeed) -> Self {
        let mut s = Self::default();
        for p in seed.products {
            s.products.insert(p.sku.clone(), p.into());
        }
        for d in seed.deliveries {
            s.deliveries.insert(d.provider.clone(), d.into());
        }
        for v in seed.vouchers {
            s.vouchers.insert(normalize_voucher_code(&v.code), v.into());
        }
        s
    }
}

impl Catalog for CatalogSnapshot {
    fn product(&self, sku: &str) -> Option<&Product> {
        self.products.get(sku).map(Arc::as_ref)
    }
    fn delivery(&self, provider: &str) -> Option<&DeliveryOption> {
        self.deliveries.get(provider).map(Arc::as_ref)
    }
    fn voucher(&self, code: &str) -> Option<&VoucherDefinition> {
        self.vouchers
            .get(&normalize_voucher_code(code))
            .map(Arc::as_ref)
    }
}

/// Voucher codes are case-insensitive; they are stored and compared upper-case.
pub fn normalize_voucher_code(code: &str) -> String {
    code.trim().to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_format_parses_and_rejects_unknown_fields() {
        let seed: CatalogSeed = serde_json::from_value(serde_json::json!({
            "products": [{"sku": "A-1", "item_id": 7, "name": "Mug", "price": 12900,
                          "tax_rate": 2500, "stock": 3, "image": "https://img/x.jpg"}],
            "deliveries": [{"provider": "standard", "price": 4900, "tax_rate": 2500}],
            "vouchers": [{"code": "ten", "discount": {"kind": "percent", "basis_points": 1000},
                          "min_order": 10000, "expires_at": "2030-01-01T00:00:00Z"},
                         {"code": "FIFTY", "discount": {"kind": "fixed", "amount": 5000}}]
        }))
        .unwrap();
        let snap = CatalogSnapshot::from_seed(seed);
        let p = snap.product("A-1").unwrap();
        assert_eq!(
            (p.price, p.tax_rate, p.currency.as_str()),
            (12900, TaxRate(2500), "SEK")
        );
        assert_eq!(p.item_type, "product");
        assert_eq!(
            snap.voucher("Ten").unwrap().discount,
            VoucherKind::Percent { basis_points: 1000 }
        );
        assert!(snap.delivery("standard").is_some());
        let bad = serde_json::from_value::<CatalogSeed>(serde_json::json!({
            "products": [{"sku": "A", "name": "x", "price": 1, "tax_rate": 2500, "colour": "red"}]
        }));
        assert!(bad.unwrap_err().to_string().contains("colour"));
        let only_products: CatalogSeed =
            serde_json::from_value(serde_json::json!({"products": []})).unwrap();
        assert_eq!(
            only_products,
            CatalogSeed::default(),
            "absent sections are empty"
        );
    }
}
