//! The product facts a cart line records: what the shopper saw when the line was added.
//!
//! `ItemAdded` and the line hold them behind an `Arc`, so applying an event shares the event's
//! facts instead of copying them. Thousands of cached carts hold the same few hundred products
//! with the same name, image URL and price: a caller that keeps many carts (the aggregate's
//! cache, the projection's states) owns a [`crate::product_pool::ProductPool`], which hands
//! out one `Arc` per distinct set of facts and cuts the memory of a cached cart by more than
//! half. The pool is the caller's: this crate keeps no state. A shared product also keeps its
//! JSON once a line has written it ([`JsonOnce`]): a reply with the cart writes every line,
//! and the products are most of those bytes.

use std::sync::{Arc, OnceLock};

use serde::ser::Error as _;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

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
    /// These facts as JSON, made the first time a line holding them is written (see
    /// [`json_once`]). Not part of the facts: ignored by equality and hashing. Change a
    /// product that may have been written through a clone (which starts without it), never
    /// through `Arc::make_mut`/`get_mut`, which would keep the old JSON.
    #[serde(skip)]
    pub json: JsonOnce,
}

/// A product's JSON, written once and reused by every line (of every cart) that shares the
/// product's `Arc`. Replying with a cart writes all its lines; their products are most of
/// the bytes and do not change.
#[derive(Default)]
pub struct JsonOnce(OnceLock<Box<RawValue>>);

impl Clone for JsonOnce {
    /// Empty: a clone may be changed before it is written.
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for JsonOnce {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for JsonOnce {}

impl std::hash::Hash for JsonOnce {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

impl std::fmt::Debug for JsonOnce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JsonOnce")
    }
}

/// `serialize_with` of a line's product: the shared product's JSON, written on first use. The
/// product behind an `Arc` is not changed after it is shared, so the JSON stays its JSON.
/// Carts are written as JSON only (serde_json); another format would get serde_json's raw
/// value token here.
pub(crate) fn json_once<S: Serializer>(
    product: &Arc<LineProduct>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let json = match product.json.0.get() {
        Some(json) => json,
        None => {
            let made = serde_json::value::to_raw_value(&**product).map_err(S::Error::custom)?;
            product.json.0.get_or_init(|| made)
        }
    };
    json.serialize(s)
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
            json: JsonOnce::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cart::Line;

    fn product() -> Arc<LineProduct> {
        Arc::new(LineProduct {
            sku: "S-1".into(),
            item_id: 7,
            name: "Mug \"Ada\"".into(),
            unit_price: 12900,
            org_price: Some(15900),
            tax_rate: TaxRate(2500),
            currency: "SEK".into(),
            stock: 3,
            item_type: "product".into(),
            labels: ProductLabels {
                image: Some("https://img.example/mug.png".into()),
                brand: Some("Ada & Co".into()),
                ..Default::default()
            },
            json: JsonOnce::default(),
        })
    }

    fn line(product: Arc<LineProduct>) -> Line {
        Line {
            id: 1,
            quantity: 2,
            product,
            store_id: None,
            country: "se".into(),
            options: Default::default(),
        }
    }

    /// A line writes its product as the product's own JSON, the first time and every time
    /// after (from the kept copy), and a second line sharing the product uses that copy.
    #[test]
    fn a_line_writes_its_shared_products_json_once() {
        let shared = product();
        let own = serde_json::to_string(&*shared).unwrap();
        assert!(shared.json.0.get().is_none());
        let first = serde_json::to_value(line(shared.clone())).unwrap();
        assert_eq!(
            shared.json.0.get().map(|j| j.get()),
            Some(own.as_str()),
            "the first write keeps the product's JSON"
        );
        assert_eq!(
            first["product"],
            serde_json::from_str::<serde_json::Value>(&own).unwrap()
        );
        assert_eq!(
            serde_json::to_string(&line(shared.clone())).unwrap(),
            serde_json::to_string(&line(product())).unwrap(),
            "the kept copy writes the same bytes as a fresh product"
        );
    }

    /// A clone starts without the kept JSON, so a product changed before it is shared writes
    /// its new facts, and the kept JSON is not part of equality.
    #[test]
    fn a_changed_clone_writes_its_own_facts() {
        let written = product();
        serde_json::to_vec(&line(written.clone())).unwrap();
        let mut changed = (*written).clone();
        assert_eq!(changed, *written);
        changed.name = "Cup".into();
        let json = serde_json::to_value(line(Arc::new(changed))).unwrap();
        assert_eq!(json["product"]["name"], "Cup");
    }
}
