use std::time::Duration;

use cart_domain::cart::LineProduct;
use cart_domain::ids::{CartId, CommandId, TenantId};

use super::*;
use crate::write::state_cache::StateSettings;

/// An `ItemAdded` of product `S` as a message carries it (its facts decoded on their own).
fn added(line_id: u32) -> Event {
    Event::decode(&cart_domain::EventRecord {
        event_type: "ItemAdded".into(),
        v: 2,
        data: serde_json::json!({"line_id": line_id, "quantity": 1, "sku": "S", "name": "N",
            "unit_price": 100, "tax_rate": 2500, "currency": "SEK", "country": "se"}),
    })
    .unwrap()
}

/// Message `sequence` of cart `cart`, as the consumer hands it over (decoded by the writer).
fn incoming(sequence: u64, cart: &str, events: &[Event]) -> Incoming {
    let (tenant, cart_id) = (TenantId::parse("t").unwrap(), CartId::parse(cart).unwrap());
    let msg = EventMessage::new(
        tenant.clone(),
        cart_id.clone(),
        CommandId::new(),
        1,
        time::OffsetDateTime::UNIX_EPOCH,
        events,
    );
    Incoming::new(
        sequence,
        shared::subjects::cart_events(&tenant, &cart_id),
        None,
        Bytes::from(msg.to_json()),
        1,
    )
}

fn product_of(cache: &mut StateCache, cart: &str) -> Arc<LineProduct> {
    let key = (TenantId::parse("t").unwrap(), CartId::parse(cart).unwrap());
    let taken = cache.take(&key).expect("the state is cached");
    let product = Arc::clone(&taken.cart.state.cart.lines[0].product);
    cache.put(key, taken.cart, !taken.dirty);
    product
}

/// Product facts decoded from two carts' messages, and from a state read back from the
/// database, end up as one allocation in the cache.
#[test]
fn lines_that_come_in_share_the_cached_states_product_facts() {
    let dir = tempfile::tempdir().unwrap();
    let conn = crate::store::db::open_writer(&dir.path().join("v.db")).unwrap();
    let mut cache = StateCache::new(StateSettings {
        cached_carts: 100,
        flush_after: Duration::from_secs(3600),
    });
    let hooks = Hooks::default();
    let mut changes = Changes::new(&mut cache);
    for (seq, cart) in [(1, "a"), (2, "b")] {
        changes
            .apply(
                &conn,
                &incoming(seq, cart, &[added(1)]),
                &hooks,
                Order::Stream,
            )
            .unwrap();
    }
    changes.write(&conn).unwrap();
    changes.write_all_states(&conn, 2).unwrap();
    changes.committed(true);
    let (a, b) = (product_of(&mut cache, "a"), product_of(&mut cache, "b"));
    assert!(
        Arc::ptr_eq(&a, &b),
        "two messages' facts are one allocation"
    );

    // A fresh cache reads cart a back from the database: its line joins the pool's facts
    // of cart c, which a message brings in the same transaction.
    let mut fresh = StateCache::new(StateSettings {
        cached_carts: 100,
        flush_after: Duration::from_secs(3600),
    });
    let mut changes = Changes::new(&mut fresh);
    changes
        .apply(&conn, &incoming(3, "c", &[added(1)]), &hooks, Order::Stream)
        .unwrap();
    let quantity = Event::ItemQuantityChanged(cart_domain::event::ItemQuantityChanged {
        line_id: 1,
        quantity: 2,
    });
    changes
        .apply(&conn, &incoming(4, "a", &[quantity]), &hooks, Order::Stream)
        .unwrap();
    assert_eq!(
        changes.loads, 2,
        "both carts were looked up in the database"
    );
    changes.committed(false);
    let (a, c) = (product_of(&mut fresh, "a"), product_of(&mut fresh, "c"));
    assert!(Arc::ptr_eq(&a, &c), "a state read back shares the facts");
    assert_eq!(a.name, "N");
}
