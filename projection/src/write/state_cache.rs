//! The writer's cart states in memory: the committed states of carts seen recently, so
//! applying a message to one neither reads nor parses its stored state, and the states not yet
//! written to the database ("dirty").
//!
//! A transaction writes the view rows of the carts it changed, not their states: those stay
//! here, dirty, until a transaction writes them all at once ("flush", see
//! [`StateCache::flush_due`]: every `flush_after`, or when `cached_carts` of them are waiting;
//! the writer also flushes before a replay, a swap or a stop). A
//! cart written once per flush instead of once per message is most of what makes catching up
//! fast. A dirty state is never evicted, since the database holds an older one; after a crash
//! the writer folds the stream's messages since the last flush again
//! ([`crate::consume::recovery`]).
//!
//! A transaction takes the states it works on out of the cache and puts them back after it
//! committed, or the dirty ones as they were if it rolled back (see
//! [`super::changes::Changes`]): a rolled-back batch, a crash hook or a poison message cannot
//! leave a state the views do not show. Clean states are bounded (least recently used first
//! out) so that clean and dirty together stay within `capacity`; everything is forgotten when a
//! rebuild swaps the database file. Only the writer thread uses it, so it is a plain LRU map
//! (`hashlink`, the one rusqlite's statement cache uses) rather than a concurrent cache.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cart_domain::ids::{CartId, TenantId};
use cart_domain::product_pool::ProductPool;
use hashlink::LruCache;

use crate::write::views::StoredCart;

/// A cart's identity across tenants.
pub type CartKey = (TenantId, CartId);

/// How the writer keeps cart states in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateSettings {
    /// States kept in memory, written or not; a transaction flushes when this many are
    /// waiting (0: every transaction writes its states).
    pub cached_carts: u64,
    /// Longest a changed state waits to be written (zero: every transaction writes its
    /// states). After a crash, the messages of this long are folded again at start-up.
    pub flush_after: Duration,
}

/// A state taken out of the cache.
pub struct Taken {
    pub cart: StoredCart,
    /// The database holds an older state of this cart (it must be put back dirty).
    pub dirty: bool,
}

pub struct StateCache {
    capacity: usize,
    flush_after: Duration,
    last_flush: Instant,
    clean: LruCache<CartKey, StoredCart>,
    /// In key order, so a flush walks the `cart_states` B-tree in order.
    dirty: BTreeMap<CartKey, StoredCart>,
    /// Product facts shared between the cached states' lines (most carts hold the same few
    /// hundred products).
    products: ProductPool,
}

impl StateCache {
    /// A cache of up to `settings.cached_carts` carts, clean and dirty together (0 keeps
    /// none: every transaction writes its states).
    pub fn new(settings: StateSettings) -> Self {
        Self {
            capacity: usize::try_from(settings.cached_carts).unwrap_or(usize::MAX),
            flush_after: settings.flush_after,
            last_flush: Instant::now(),
            clean: LruCache::new_unbounded(),
            dirty: BTreeMap::new(),
            products: ProductPool::default(),
        }
    }

    /// Whether a transaction that leaves `unwritten` states waiting should write them all:
    /// the capacity is reached, or `flush_after` has passed since the last flush.
    pub fn flush_due(&self, unwritten: usize) -> bool {
        unwritten > 0
            && (unwritten >= self.capacity || self.last_flush.elapsed() >= self.flush_after)
    }

    /// States not yet written to the database.
    pub fn dirty_len(&self) -> usize {
        self.dirty.len()
    }

    /// Takes the state of `key` out of the cache.
    pub fn take(&mut self, key: &CartKey) -> Option<Taken> {
        if let Some(cart) = self.dirty.remove(key) {
            return Some(Taken { cart, dirty: true });
        }
        self.clean
            .remove(key)
            .map(|cart| Taken { cart, dirty: false })
    }

    /// Shares the product facts of `cart`'s lines with the cached states' (most carts hold the
    /// same few hundred products). Called where lines come in (a state read from the database;
    /// for a message, [`Self::share_added`]), not at every `put`: lines already shared need no
    /// second look.
    pub fn share_lines(&self, cart: &mut cart_domain::cart::Cart) {
        self.products.share_lines(cart);
    }

    /// Shares the product facts of the lines `events` (one message's) added to `cart`.
    pub fn share_added(&self, cart: &mut cart_domain::cart::Cart, events: &[cart_domain::Event]) {
        self.products.share_added(cart, events);
    }

    /// Puts a state (back) in after its transaction committed: `written` if that transaction
    /// also wrote it to the database, dirty otherwise.
    pub fn put(&mut self, key: CartKey, cart: StoredCart, written: bool) {
        if written {
            self.clean.insert(key, cart);
        } else {
            self.dirty.insert(key, cart);
        }
        self.trim();
    }

    /// The dirty states, in key order (to be written by a flush).
    pub fn dirty(&self) -> impl Iterator<Item = (&CartKey, &StoredCart)> {
        self.dirty.iter()
    }

    /// The flush that wrote every dirty state committed.
    pub fn all_written(&mut self) {
        self.last_flush = Instant::now();
        let dirty = std::mem::take(&mut self.dirty);
        for (key, cart) in dirty {
            self.clean.insert(key, cart);
        }
        self.trim();
    }

    /// Forgets everything (the database file was replaced).
    pub fn clear(&mut self) {
        self.clean.clear();
        self.dirty.clear();
    }

    /// Evicts clean states (least recently used first) until clean and dirty fit `capacity`.
    fn trim(&mut self) {
        while self.clean.len() + self.dirty.len() > self.capacity {
            if self.clean.remove_lru().is_none() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> CartKey {
        (
            TenantId::parse("t").unwrap(),
            CartId::parse(&format!("c{i}")).unwrap(),
        )
    }

    fn cache(cached_carts: u64) -> StateCache {
        StateCache::new(StateSettings {
            cached_carts,
            flush_after: Duration::from_secs(3600),
        })
    }

    fn cart(i: u32) -> StoredCart {
        StoredCart::new(key(i).1, i64::from(i))
    }

    #[test]
    fn a_flush_is_due_once_the_capacity_is_waiting() {
        // (capacity, most waiting that is not due yet): with 0, every change is written.
        for (capacity, not_yet) in [(3, 2), (0, 0)] {
            let cache = cache(capacity);
            assert!(!cache.flush_due(not_yet), "capacity {capacity}");
            assert!(cache.flush_due(not_yet + 1), "capacity {capacity}");
        }
    }

    #[test]
    fn dirty_states_are_never_evicted_and_clean_ones_make_room_for_them() {
        let mut cache = cache(3);
        cache.put(key(1), cart(1), true);
        cache.put(key(2), cart(2), true);
        cache.put(key(3), cart(3), false);
        cache.put(key(4), cart(4), false);
        // Two dirty: one clean fits, the least recently used (1) went.
        assert!(cache.take(&key(1)).is_none());
        assert!(!cache.take(&key(2)).unwrap().dirty);
        cache.put(key(5), cart(5), false);
        cache.put(key(6), cart(6), false);
        // Over capacity with dirty states alone: they all stay (the writer flushes them).
        assert_eq!(cache.dirty_len(), 4);
        let dirty: Vec<_> = cache.dirty().map(|(k, _)| k.1.to_string()).collect();
        assert_eq!(dirty, ["c3", "c4", "c5", "c6"]);
        cache.all_written();
        assert_eq!(cache.dirty_len(), 0);
        // Written, they are clean and trimmed to the capacity.
        let kept = (3..=6).filter(|i| cache.take(&key(*i)).is_some()).count();
        assert_eq!(kept, 3);
    }

    #[test]
    fn a_cache_of_zero_keeps_nothing_clean() {
        let mut none = cache(0);
        none.put(key(1), cart(1), true);
        assert!(none.take(&key(1)).is_none());
    }
}
