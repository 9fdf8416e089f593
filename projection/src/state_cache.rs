//! The writer's cache of committed cart states, so applying a message to a cart seen recently
//! neither reads nor parses its stored state.
//!
//! An entry is only ever what a committed transaction wrote (inserted after the commit), so a
//! rolled-back batch, a crash hook or a poison message cannot leave a state the database does
//! not hold; a cart missing from the cache is read from the database. The cache is bounded
//! (`state_cache_carts`) and cleared when a rebuild swaps the database file.

use std::sync::Arc;

use moka::sync::Cache;
use shared::ids::{CartId, TenantId};

use crate::views::StoredCart;

/// A cart's identity across tenants.
pub type CartKey = (TenantId, CartId);

#[derive(Clone)]
pub struct StateCache {
    carts: Cache<CartKey, Arc<StoredCart>>,
}

impl StateCache {
    /// A cache of up to `capacity` carts (0 keeps none).
    pub fn new(capacity: u64) -> Self {
        Self {
            carts: Cache::new(capacity),
        }
    }

    pub fn get(&self, key: &CartKey) -> Option<Arc<StoredCart>> {
        self.carts.get(key)
    }

    /// Records `cart` as committed.
    pub fn insert(&self, key: CartKey, cart: Arc<StoredCart>) {
        self.carts.insert(key, cart);
    }

    /// Forgets everything (the database file was replaced).
    pub fn clear(&self) {
        self.carts.invalidate_all();
    }
}
