//! The product facts a cart line records: what the shopper saw when the line was added.
//!
//! `ItemAdded` and the line hold them behind an `Arc`, so applying an event shares the event's
//! facts instead of copying them. Thousands of cached carts hold the same few hundred products
//! with the same name, image URL and price: a caller that keeps many carts (the aggregate's
//! cache, the projection's states) owns a [`crate::product_pool::ProductPool`], which hands
//! out one `Arc` per distinct set of facts and cuts the memory of a cached cart by more than
//! half. The pool is the caller's: this crate keeps no state.

use serde::{Deserialize, Serialize};

use super::money::TaxRate;
use crate::catalog::{Product, default_item_type};

/// Product facts of a line as the shopper saw them when it was added (recorded in
/// `ItemAdded`), shared between lines (and carts) with identical facts to keep the cache
/// small. Fields an older build did not record read as defaults.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LineProduct {
    pub sku: String,
    #[serde(default)]
    pub item_id: u64,
    pub name: String,
    pub unit_price: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_price: Option<i64>,
    pub tax_rate: TaxRate,
    pub currency: String,
    #[serde(default)]
    pub stock: i64,
    #[serde(default = "default_item_type")]
    pub item_type: String,
    /// Image, brand, seller: inline in the JSON.
    #[serde(flatten)]
    pub labels: ProductLabels,
}

/// How a storefront presents a product besides its name and price, the same in the catalog's
/// [`Product`] and in a line's [`LineProduct`] (inline in both JSON forms, snake_case).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProductLabels {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
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

impl From<&Product> for LineProduct {
    fn from(p: &Product) -> Self {
        LineProduct {
            sku: p.sku.clone(),
            item_id: p.item_id,
            name: p.name.clone(),
            unit_price: p.price,
            org_price: p.org_price,
            tax_rate: p.tax_rate,
            currency: p.currency.clone(),
            stock: p.stock,
            item_type: p.item_type.clone(),
            labels: p.labels.clone(),
        }
    }
}
