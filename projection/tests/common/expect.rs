//! The views as they should be — a fold of the published messages through `cart_domain`
//! (`CartState::apply_message` + `totals`) — and as the projection stored them, read straight
//! from its SQLite file, in the same shape so they compare with one `assert_eq!`.

use std::collections::BTreeMap;
use std::path::Path;

use cart_domain::{CartState, Event, totals};
use projection::read::queries::{ORDER_COLUMNS, order_row};
pub use projection::write::views::OrderRow;
use rusqlite::{Connection, Row};

use super::SimCart;

type Key = (String, String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CartRow {
    pub status: String,
    pub item_count: i64,
    pub line_count: i64,
    pub total_amount: i64,
    pub total_tax: i64,
    pub total_discount: i64,
    pub currency: String,
    pub user_id: Option<String>,
    pub order_reference: Option<String>,
    pub created_ns: i64,
    pub updated_ns: i64,
    pub version: i64,
    /// Messages applied to the cart (`carts.applied_messages`).
    pub applied: i64,
    /// `(line_id, sku, name, quantity, unit_price, tax_rate)` in cart order.
    pub lines: Vec<(i64, String, String, i64, i64, i64)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Views {
    pub carts: BTreeMap<Key, CartRow>,
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
        views.carts.insert(
            key,
            CartRow {
                status: status.into(),
                item_count: cart.lines.iter().map(|l| i64::from(l.quantity)).sum(),
                line_count: cart.lines.len() as i64,
                total_amount: t.total.inc_vat,
                total_tax: t.tax().inc_vat,
                total_discount: t.discount.inc_vat,
                currency: cart.currency.clone().unwrap_or_default(),
                user_id: cart.user_id.clone(),
                order_reference: cart.order.as_ref().map(|o| o.order_reference.clone()),
                created_ns: ns(first.occurred_at),
                updated_ns: ns(last.occurred_at),
                version: state.version as i64,
                applied: sim.messages.len() as i64,
                lines: cart
                    .lines
                    .iter()
                    .map(|l| {
                        (
                            i64::from(l.id),
                            l.product.sku.clone(),
                            l.product.name.clone(),
                            i64::from(l.quantity),
                            l.product.unit_price,
                            i64::from(l.product.tax_rate.0),
                        )
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
    let mut carts: BTreeMap<Key, CartRow> = keyed_rows(
        &conn,
        "SELECT c.tenant, c.cart_id, c.status, c.item_count, c.line_count, c.total_amount,
             c.total_tax, c.total_discount, c.currency, c.user_id, c.order_reference,
             c.created_ns, c.updated_ns, c.version, c.applied_messages
         FROM carts c",
        |r| {
            Ok(CartRow {
                status: r.get(2)?,
                item_count: r.get(3)?,
                line_count: r.get(4)?,
                total_amount: r.get(5)?,
                total_tax: r.get(6)?,
                total_discount: r.get(7)?,
                currency: r.get(8)?,
                user_id: r.get(9)?,
                order_reference: r.get(10)?,
                created_ns: r.get(11)?,
                updated_ns: r.get(12)?,
                version: r.get(13)?,
                applied: r.get(14)?,
                lines: Vec::new(),
            })
        },
    );
    let lines: Vec<_> = keyed_rows(
        &conn,
        "SELECT tenant, cart_id, line_id, sku, name, quantity, unit_price, tax_rate
         FROM cart_lines ORDER BY tenant, cart_id, position",
        |r| {
            Ok((
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        },
    );
    for (key, line) in lines {
        carts
            .get_mut(&key)
            .unwrap_or_else(|| panic!("line of unknown cart {key:?}"))
            .lines
            .push(line);
    }
    let orders = keyed_rows(&conn, &format!("SELECT {ORDER_COLUMNS} FROM orders"), |r| {
        Ok(order_row(r)?.order)
    });
    Views { carts, orders }
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
