//! [`ProductPool`]: one allocation per distinct set of product facts, for a caller that keeps
//! many carts (the aggregate's cache, the projection's states). The caller owns it; this crate
//! keeps no state.

use std::collections::HashSet;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use crate::cart::Cart;
use crate::event::Event;
use crate::line_product::LineProduct;

const SHARDS: usize = 16;
const MIN_SWEEP: usize = 1024;

struct Shard {
    set: HashSet<Arc<LineProduct>>,
    sweep_at: usize,
}

/// Equal product facts as one allocation, for a caller that keeps many carts: a memo with no
/// observable effect (equal facts are equal values), applied where a cart enters or changes in
/// the caller's cache. Entries nobody else holds are dropped when a shard grows.
pub struct ProductPool {
    shards: [Mutex<Shard>; SHARDS],
    hasher: RandomState,
}

impl Default for ProductPool {
    fn default() -> Self {
        Self {
            shards: std::array::from_fn(|_| {
                Mutex::new(Shard {
                    set: HashSet::new(),
                    sweep_at: MIN_SWEEP,
                })
            }),
            hasher: RandomState::new(),
        }
    }
}

impl ProductPool {
    /// The pool's `Arc` for `facts` (`facts` itself the first time they are seen).
    pub fn share(&self, facts: &Arc<LineProduct>) -> Arc<LineProduct> {
        let shard = &self.shards[(self.hasher.hash_one(&**facts) as usize) % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = shard.set.get(&**facts) {
            return Arc::clone(existing);
        }
        if shard.set.len() >= shard.sweep_at {
            shard.set.retain(|a| Arc::strong_count(a) > 1);
            shard.sweep_at = (shard.set.len() * 2).max(MIN_SWEEP);
        }
        shard.set.insert(Arc::clone(facts));
        Arc::clone(facts)
    }

    /// Shares the product facts of the items `events` add (before they are applied).
    pub fn share_events(&self, events: &mut [Event]) {
        for e in events {
            if let Event::ItemAdded(added) = e {
                added.product = self.share(&added.product);
            }
        }
    }

    /// Shares the product facts of every line of `cart` (one read from storage).
    pub fn share_lines(&self, cart: &mut Cart) {
        for line in &mut cart.lines {
            line.product = self.share(&line.product);
        }
    }

    /// Shares the product facts of the lines `events` added to `cart`, after they were
    /// applied: for a caller whose events are decoded once and read-only (the projection's
    /// batches). The cart's other lines are not looked at again.
    pub fn share_added(&self, cart: &mut Cart, events: &[Event]) {
        for e in events {
            if let Event::ItemAdded(added) = e
                && let Some(line) = cart.lines.iter_mut().find(|l| l.id == added.line_id)
            {
                line.product = self.share(&line.product);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::TaxRate;

    fn facts(name: &str) -> Arc<LineProduct> {
        Arc::new(LineProduct {
            sku: "S".into(),
            item_id: 1,
            name: name.into(),
            unit_price: 100,
            org_price: None,
            tax_rate: TaxRate(2500),
            currency: "SEK".into(),
            stock: 1,
            item_type: "product".into(),
            labels: Default::default(),
            json: Default::default(),
        })
    }

    #[test]
    fn equal_facts_share_one_allocation() {
        let pool = ProductPool::default();
        let a = pool.share(&facts("a"));
        let b = pool.share(&facts("a"));
        let c = pool.share(&facts("c"));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(*a, *facts("a"));
    }

    #[test]
    fn facts_nobody_holds_are_dropped_when_a_shard_grows() {
        let pool = ProductPool::default();
        let kept = pool.share(&facts("kept"));
        for i in 0..(MIN_SWEEP * SHARDS * 2) {
            pool.share(&facts(&format!("gone-{i}")));
        }
        let held: usize = pool
            .shards
            .iter()
            .map(|s| s.lock().unwrap().set.len())
            .sum();
        assert!(held < MIN_SWEEP * SHARDS * 2, "{held} entries held");
        assert!(Arc::ptr_eq(&kept, &pool.share(&facts("kept"))));
    }

    #[test]
    fn a_commands_events_and_a_loaded_carts_lines_share_the_pools_facts() {
        use crate::event::ItemAdded;
        use crate::ids::CartId;

        let pool = ProductPool::default();
        let held = pool.share(&facts("p"));
        let added = |line_id| {
            Event::ItemAdded(ItemAdded {
                line_id,
                quantity: 1,
                store_id: None,
                country: "se".into(),
                product: facts("p"),
            })
        };
        let mut events = vec![added(1), added(2)];
        pool.share_events(&mut events);
        let mut cart = Cart::new(CartId::parse("c").unwrap());
        for e in &events {
            let Event::ItemAdded(a) = e else {
                unreachable!()
            };
            assert!(Arc::ptr_eq(&a.product, &held));
            crate::cart::apply(&mut cart, e);
        }
        // As a cart read from a snapshot: its own copies until shared.
        let mut read: Cart = serde_json::from_slice(&serde_json::to_vec(&cart).unwrap()).unwrap();
        assert!(!Arc::ptr_eq(&read.lines[0].product, &held));
        pool.share_lines(&mut read);
        assert!(read.lines.iter().all(|l| Arc::ptr_eq(&l.product, &held)));
        assert_eq!(read, cart);

        // Events that cannot be changed: the lines they added are shared once applied.
        let unshared = vec![added(3)];
        crate::cart::apply(&mut read, &unshared[0]);
        assert!(!Arc::ptr_eq(&read.lines[2].product, &held));
        pool.share_added(&mut read, &unshared);
        assert!(read.lines.iter().all(|l| Arc::ptr_eq(&l.product, &held)));
    }
}
