//! Sharing of identical product facts between cart lines.
//!
//! Thousands of cached carts hold the same few hundred products with the same name, image URL
//! and price. Lines keep an `Arc<LineProduct>`; this pool hands out one `Arc` per distinct set
//! of facts, which cuts the memory of a cached cart by more than half. It is a memo with no
//! observable effect on behaviour (equal facts are equal values), so `evolve` stays pure in
//! every way that matters. Entries nobody else holds are dropped when a shard grows.

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::{Arc, LazyLock, Mutex};

use serde::{Deserialize, Deserializer, Serialize};

use super::money::TaxRate;
use crate::catalog::{Product, default_item_type};

/// Product facts of a line as the shopper saw them when it was added (recorded in
/// `ItemAdded`), shared between lines (and carts) with identical facts to keep the cache
/// small; interned by [`share`]. Fields an older build did not record read as defaults.
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
            image: p.image.clone(),
            brand: p.brand.clone(),
            category: p.category.clone(),
            seller_id: p.seller_id.clone(),
            seller_name: p.seller_name.clone(),
            outlet: p.outlet.clone(),
        }
    }
}

const SHARDS: usize = 16;
const MIN_SWEEP: usize = 1024;

struct Shard {
    set: HashSet<Arc<LineProduct>>,
    sweep_at: usize,
}

static POOL: LazyLock<[Mutex<Shard>; SHARDS]> = LazyLock::new(|| {
    std::array::from_fn(|_| {
        Mutex::new(Shard {
            set: HashSet::new(),
            sweep_at: MIN_SWEEP,
        })
    })
});

static HASHER: LazyLock<std::collections::hash_map::RandomState> =
    LazyLock::new(std::collections::hash_map::RandomState::new);

/// The shared `Arc` for `facts` (cloned only the first time they are seen).
pub fn share(facts: &LineProduct) -> Arc<LineProduct> {
    let shard = &POOL[(HASHER.hash_one(facts) as usize) % SHARDS];
    let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(existing) = shard.set.get(facts) {
        return Arc::clone(existing);
    }
    if shard.set.len() >= shard.sweep_at {
        shard.set.retain(|a| Arc::strong_count(a) > 1);
        shard.sweep_at = (shard.set.len() * 2).max(MIN_SWEEP);
    }
    let arc = Arc::new(facts.clone());
    shard.set.insert(Arc::clone(&arc));
    arc
}

/// Serde hook so carts read from a snapshot share product facts too.
pub fn deserialize_product<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<LineProduct>, D::Error> {
    LineProduct::deserialize(d).map(|facts| share(&facts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::TaxRate;

    fn facts(name: &str) -> LineProduct {
        LineProduct {
            sku: "S".into(),
            item_id: 1,
            name: name.into(),
            unit_price: 100,
            org_price: None,
            tax_rate: TaxRate(2500),
            currency: "SEK".into(),
            stock: 1,
            item_type: "product".into(),
            image: None,
            brand: None,
            category: None,
            seller_id: None,
            seller_name: None,
            outlet: None,
        }
    }

    #[test]
    fn equal_facts_share_one_allocation() {
        let a = share(&facts("intern-test-a"));
        let b = share(&facts("intern-test-a"));
        let c = share(&facts("intern-test-c"));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(*a, facts("intern-test-a"));
    }
}
