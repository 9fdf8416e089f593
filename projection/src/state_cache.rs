//! The writer's cache of committed cart states, so applying a message to a cart seen recently
//! neither reads nor parses its stored state.
//!
//! A transaction takes the states it works on out of the cache and puts them back only after
//! it committed: a rolled-back batch, a crash hook or a poison message therefore cannot leave
//! a state the database does not hold, and a cart missing from the cache is read from the
//! database. Bounded (`state_cache_carts`, least recently used first out) and cleared when a
//! rebuild swaps the database file. Only the writer thread uses it, so it is a plain LRU map
//! (`hashlink`, the one rusqlite's statement cache uses) rather than a concurrent cache.

use hashlink::LruCache;
use shared::ids::{CartId, TenantId};

use crate::views::StoredCart;

/// A cart's identity across tenants.
pub type CartKey = (TenantId, CartId);

pub struct StateCache {
    carts: LruCache<CartKey, StoredCart>,
}

impl StateCache {
    /// A cache of up to `capacity` carts (0 keeps none).
    pub fn new(capacity: u64) -> Self {
        Self {
            carts: LruCache::new(usize::try_from(capacity).unwrap_or(usize::MAX)),
        }
    }

    /// Takes the committed state of `key` out of the cache.
    pub fn take(&mut self, key: &CartKey) -> Option<StoredCart> {
        self.carts.remove(key)
    }

    /// Puts a committed state (back) in, evicting the least recently used one when full.
    pub fn put(&mut self, key: CartKey, cart: StoredCart) {
        self.carts.insert(key, cart);
    }

    /// Forgets everything (the database file was replaced).
    pub fn clear(&mut self) {
        self.carts.clear();
    }
}
