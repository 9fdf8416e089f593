//! The views as they should be — a fold of the published messages through `cart_domain`
//! (`CartState::apply_message` + `totals`) — and as the projection stored them, read from its
//! SQLite file with the queries' own readers, in the same shape so they compare with one
//! `assert_eq!`.

use std::collections::BTreeMap;
use std::path::Path;

use cart_domain::{CartState, Event, totals};
pub use projection::read::queries::CartRow;
use projection::read::queries::{LineRow, ORDER_COLUMNS, get_cart, order_row};
pub use projection::write::views::OrderRow;
use rusqlite::{Connection, Row};

use super::SimCart;

type Key = (String, String);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Views {
    /// The `carts` rows with their lines, as the queries read them (with the status as
    /// stored: never `abandoned`).
    pub carts: BTreeMap<Key, CartRow>,
    /// Messages applied to each cart (`carts.applied_messages`).
    pub applied: BTreeMap<Key, i64>,
    pub orders: BTreeMap<Key, OrderRow>,
}

fn ns(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos()).unwrap()
}

/// The fold of every message of `carts` (carts without messages have no rows).
pub fn expected<'a>(carts: impl IntoIterator<Item = &'a SimCart>) -> Views {
    let mut views = Views::default();
    for sim in carts {
        let Some((_, first)) = sim.messages.first() else {
            continue;
        };
        let key = (sim.tenant.to_string(), sim.id.to_string());
        let mut state = CartState::new(sim.id.clone());
        for (seq, msg) in &sim.messages {
            state.apply_message(msg, *seq, cart_domain::Retain::NONE);
            for record in &msg.events {
                if let Ok(Event::OrderPlaced(o)) = Event::decode(record) {
                    views.orders.insert(
                        key.clone(),
                        OrderRow {
                            provider_order_id: o.provider_order_id,
                            order_reference: o.order_reference,
                            total_amount: o.total_amount,
                            currency: o.currency,
                            user_id: state.cart.user_id.clone(),
                            placed_ns: ns(msg.occurred_at),
                            version: *seq,
                        },
                    );
                }
            }
        }
        let cart = &state.cart;
        let t = totals(cart);
        let status = if cart.order.is_some() {
            "ordered"
        } else if cart.payment_in_progress() {
            "checkout"
        } else {
            "open"
        };
        let (_, last) = sim.messages.last().unwrap();
        views.applied.insert(key.clone(), sim.messages.len() as i64);
        views.carts.insert(
            key.clone(),
            CartRow {
                tenant: key.0,
                cart_id: key.1,
                status: status.into(),
                item_count: cart.lines.iter().map(|l| l.quantity).sum(),
                line_count: cart.lines.len() as u32,
                total_amount: t.total.inc_vat,
                total_tax: t.tax().inc_vat,
                total_discount: t.discount.inc_vat,
                currency: cart.currency.clone().unwrap_or_default(),
                user_id: cart.user_id.clone(),
                order_reference: cart.order.as_ref().map(|o| o.order_reference.clone()),
                created_ns: ns(first.occurred_at),
                updated_ns: ns(last.occurred_at),
                version: state.version,
                // The generator sends no subscription details.
                subscription_details: None,
                lines: cart
                    .lines
                    .iter()
                    .map(|l| LineRow {
                        line_id: l.id,
                        sku: l.product.sku.clone(),
                        name: l.product.name.clone(),
                        quantity: l.quantity,
                        unit_price: l.product.unit_price,
                        tax_rate: l.product.tax_rate.0,
                    })
                    .collect(),
            },
        );
    }
    views
}

/// The rows `query` selects, keyed by their first two columns (`tenant`, `cart_id`); `row`
/// reads the others.
fn keyed_rows<T, C: FromIterator<(Key, T)>>(
    conn: &Connection,
    query: &str,
    row: impl Fn(&Row<'_>) -> rusqlite::Result<T>,
) -> C {
    let mut stmt = conn.prepare(query).unwrap();
    stmt.query_map([], |r| Ok(((r.get(0)?, r.get(1)?), row(r)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The views as stored in the projection database at `path`.
pub fn read_views(path: &Path) -> Views {
    let conn = super::open_db(path);
    let orphans: BTreeMap<Key, ()> = keyed_rows(
        &conn,
        "SELECT tenant, cart_id FROM cart_lines EXCEPT SELECT tenant, cart_id FROM carts",
        |_| Ok(()),
    );
    assert!(
        orphans.is_empty(),
        "lines of unknown carts {:?}",
        orphans.keys()
    );
    let applied: BTreeMap<Key, i64> = keyed_rows(
        &conn,
        "SELECT tenant, cart_id, applied_messages FROM carts",
        |r| r.get(2),
    );
    // Nothing is abandoned before the earliest time: the status reads as stored.
    let carts = applied
        .keys()
        .map(|(tenant, cart)| {
            let row = get_cart(&conn, tenant, cart, i64::MIN).unwrap();
            ((tenant.clone(), cart.clone()), row.expect("a listed cart"))
        })
        .collect();
    let orders = keyed_rows(&conn, &format!("SELECT {ORDER_COLUMNS} FROM orders"), |r| {
        Ok(order_row(r)?.order)
    });
    Views {
        carts,
        applied,
        orders,
    }
}

/// Asserts the stored views equal the fold, cart by cart (so a failure names the cart).
pub fn assert_views(path: &Path, expected: &Views) {
    let actual = read_views(path);
    let missing: Vec<_> = expected
        .carts
        .keys()
        .filter(|k| !actual.carts.contains_key(*k))
        .collect();
    let extra: Vec<_> = actual
        .carts
        .keys()
        .filter(|k| !expected.carts.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "carts missing: {missing:?}, unexpected: {extra:?}"
    );
    for (key, want) in &expected.carts {
        assert_eq!(&actual.carts[key], want, "cart {key:?}");
    }
    assert_eq!(
        actual.applied, expected.applied,
        "messages applied per cart"
    );
    assert_eq!(actual.orders, expected.orders, "orders");
}

/// Each cart's fold (`CartState`), as the projection stores it in `cart_states`.
pub fn expected_states<'a>(
    carts: impl IntoIterator<Item = &'a SimCart>,
) -> BTreeMap<Key, CartState> {
    let mut states = BTreeMap::new();
    for sim in carts.into_iter().filter(|c| !c.messages.is_empty()) {
        let mut state = CartState::new(sim.id.clone());
        for (seq, msg) in &sim.messages {
            state.apply_message(msg, *seq, cart_domain::Retain::NONE);
        }
        states.insert((sim.tenant.to_string(), sim.id.to_string()), state);
    }
    states
}

/// The cart states stored in the projection database at `path` (written behind the views),
/// and the checkpoint of their last write (`states_sequence`).
pub fn read_states(path: &Path) -> (BTreeMap<Key, CartState>, u64) {
    let conn = super::open_db(path);
    let states = keyed_rows(
        &conn,
        "SELECT tenant, cart_id, state FROM cart_states",
        |r| Ok(projection::store::state_format::decode(r.get_ref(2)?).expect("readable state")),
    );
    let sequence: i64 = conn
        .query_row("SELECT states_sequence FROM checkpoint", [], |r| r.get(0))
        .unwrap();
    (states, sequence as u64)
}
