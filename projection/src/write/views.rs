//! The view rows of a cart, written from its domain fold.
//!
//! Each cart's fold (`CartState`) is stored in `cart_states` (see [`state_format`]), written
//! behind the views (see [`super::state_cache`]); its `carts` and `cart_lines` rows are derived
//! from it and `cart_domain::totals`, so the views are exactly
//! what the domain computes. A write knows what the database holds (the previous stored cart),
//! so it touches only the lines that changed. Times come from the messages' `occurred_at`, so
//! replaying the stream gives identical rows.

use std::sync::Arc;

use cart_domain::cart::LineProduct;
use cart_domain::ids::{CartId, TenantId};
use cart_domain::{Cart, CartState, Line, event::OrderPlaced, totals};
use rusqlite::{Connection, OptionalExtension, params};

use crate::error::ProjectionError;
use crate::store::db::to_i64;
use crate::store::state_format;

/// A cart as stored: its domain fold and the bookkeeping beside it (`cart_states`). The view
/// rows (`carts`, `cart_lines`) are a function of it, so it is all a write needs to know about
/// what the database already holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCart {
    pub state: CartState,
    pub created_ns: i64,
    pub updated_ns: i64,
    /// Messages applied (`applied_messages` of `carts` and `cart_states`).
    pub applied: i64,
}

impl StoredCart {
    /// A cart with no messages yet, created at `at`.
    pub fn new(cart: CartId, at: i64) -> Self {
        Self {
            state: CartState::new(cart),
            created_ns: at,
            updated_ns: at,
            applied: 0,
        }
    }
}

/// What a `cart_lines` row is made of (its position aside): enough to tell which rows a new
/// state changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLine {
    pub id: u32,
    pub quantity: u32,
    pub product: Arc<LineProduct>,
}

impl StoredLine {
    /// The lines of `cart`, in order.
    pub fn all(cart: &Cart) -> Vec<StoredLine> {
        cart.lines
            .iter()
            .map(|l| StoredLine {
                id: l.id,
                quantity: l.quantity,
                product: l.product.clone(),
            })
            .collect()
    }

    /// Whether `line` has this row's product columns (sku, name, price, tax rate).
    fn same_product(&self, line: &Line) -> bool {
        let (a, b) = (&self.product, &line.product);
        Arc::ptr_eq(a, b)
            || (a.sku == b.sku
                && a.name == b.name
                && a.unit_price == b.unit_price
                && a.tax_rate == b.tax_rate)
    }
}

/// The `orders` row of an `OrderPlaced`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRow {
    pub provider_order_id: String,
    pub order_reference: String,
    pub total_amount: i64,
    pub currency: String,
    pub user_id: Option<String>,
    pub placed_ns: i64,
    pub version: u64,
}

impl OrderRow {
    pub fn new(state: &CartState, order: &OrderPlaced, placed_ns: i64, sequence: u64) -> Self {
        Self {
            provider_order_id: order.provider_order_id.clone(),
            order_reference: order.order_reference.clone(),
            total_amount: order.total_amount,
            currency: order.currency.clone(),
            user_id: state.cart.user_id.clone(),
            placed_ns,
            version: sequence,
        }
    }
}

/// How [`load`] treats a stored state older than the cart's view rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Staleness {
    /// An error: every state newer than its stored one is in the writer's memory, so a stale
    /// one means it was lost.
    Refuse,
    /// Expected: recovery is folding the messages since the last flush into it.
    Recover,
}

/// The stored state of `tenant`/`cart`, if it has one.
pub fn load(
    conn: &Connection,
    tenant: &TenantId,
    cart: &CartId,
    staleness: Staleness,
) -> Result<Option<StoredCart>, ProjectionError> {
    let row = conn
        .prepare_cached(
            "SELECT s.state, s.created_ns, s.updated_ns, s.applied_messages, c.version
             FROM carts c LEFT JOIN cart_states s ON s.tenant = c.tenant AND s.cart_id = c.cart_id
             WHERE c.tenant = ?1 AND c.cart_id = ?2",
        )
        .and_then(|mut s| {
            s.query_row(params![tenant.as_str(), cart.as_str()], |r| {
                let state = match r.get_ref(0)? {
                    rusqlite::types::ValueRef::Null => None,
                    v => Some(state_format::decode(v)),
                };
                Ok((
                    state,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .optional()
        })
        .map_err(ProjectionError::db("load cart state"))?;
    let Some((state, created_ns, updated_ns, applied, view_version)) = row else {
        return Ok(None);
    };
    let stale = |stored: String| {
        ProjectionError::Rebuild(format!(
            "the stored state of {tenant}/{cart} is {stored}, but its view is at sequence \
             {view_version} and no newer state is in memory; restart the projection to recover \
             it from the stream, or rebuild it"
        ))
    };
    let Some(state) = state else {
        return match staleness {
            Staleness::Recover => Ok(None),
            Staleness::Refuse => Err(stale("missing".into())),
        };
    };
    let state = state.map_err(|e| {
        ProjectionError::Rebuild(format!(
            "stored state of {tenant}/{cart} is unreadable ({e}); rebuild the projection"
        ))
    })?;
    if staleness == Staleness::Refuse && to_i64(state.version) != view_version {
        return Err(stale(format!("at sequence {}", state.version)));
    }
    Ok(Some(StoredCart {
        state,
        created_ns: created_ns.unwrap_or_default(),
        updated_ns: updated_ns.unwrap_or_default(),
        applied: applied.unwrap_or_default(),
    }))
}

/// The stored status of a cart (`abandoned` is derived at query time).
pub fn status(cart: &Cart) -> &'static str {
    if cart.order.is_some() {
        "ordered"
    } else if cart.payment_in_progress() {
        "checkout"
    } else {
        "open"
    }
}

/// Writes the view rows of the cart `after` over what the database holds for it (`stored`: its
/// lines; `None`: no rows yet): the cart row, and only the lines that changed. Its state is
/// written apart ([`write_state`]). The line ids of
/// `after` must be unique (the caller checks, see [`duplicate_line`]).
pub fn write(
    conn: &Connection,
    tenant: &TenantId,
    stored: Option<&[StoredLine]>,
    after: &StoredCart,
) -> Result<(), ProjectionError> {
    let state = &after.state;
    let cart = &state.cart;
    let (t, c) = (tenant.as_str(), cart.id.as_str());
    write_lines(conn, t, c, stored.unwrap_or_default(), &cart.lines)?;

    let tot = totals(cart);
    let items: u64 = cart.lines.iter().map(|l| u64::from(l.quantity)).sum();
    let sql = if stored.is_some() {
        "UPDATE carts SET status = ?3, item_count = ?4, line_count = ?5, total_amount = ?6,
             total_tax = ?7, total_discount = ?8, currency = ?9, user_id = ?10,
             order_reference = ?11, updated_ns = ?13, version = ?14, applied_messages = ?15,
             subscription_details = ?16
         WHERE tenant = ?1 AND cart_id = ?2"
    } else {
        "INSERT INTO carts (tenant, cart_id, status, item_count, line_count, total_amount,
             total_tax, total_discount, currency, user_id, order_reference, created_ns,
             updated_ns, version, applied_messages, subscription_details)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
    };
    conn.prepare_cached(sql)
        .and_then(|mut s| {
            s.execute(params![
                t,
                c,
                status(cart),
                to_i64(items),
                to_i64(cart.lines.len() as u64),
                tot.total.inc_vat,
                tot.total.total_vat(),
                tot.discount.inc_vat,
                cart.currency.as_deref().unwrap_or_default(),
                cart.user_id,
                cart.order.as_ref().map(|o| o.order_reference.as_str()),
                after.created_ns,
                after.updated_ns,
                to_i64(state.version),
                after.applied,
                subscription_details(cart),
            ])
        })
        .map_err(ProjectionError::db("store cart"))?;
    Ok(())
}

/// The `subscription_details` column: the API's JSON object keyed by id, `None` while empty.
fn subscription_details(cart: &Cart) -> Option<String> {
    if cart.subscription_details.is_empty() {
        return None;
    }
    let by_id: serde_json::Map<String, serde_json::Value> = cart
        .subscription_details
        .iter()
        .map(|d| {
            let view = cart_domain::SubscriptionDetailsView {
                id: d.id.clone(),
                offering_code: d.offering_code.clone(),
                signing_type: d.signing_type.clone(),
                data: d.data.clone(),
            };
            (d.id.clone(), serde_json::to_value(view).unwrap_or_default())
        })
        .collect();
    Some(serde_json::Value::Object(by_id).to_string())
}

/// Writes the state of `tenant`/`after` (`cart_states`), over an older one if stored.
pub fn write_state(
    conn: &Connection,
    tenant: &TenantId,
    after: &StoredCart,
) -> Result<(), ProjectionError> {
    conn.prepare_cached(
        "INSERT INTO cart_states (tenant, cart_id, state, created_ns, updated_ns,
             applied_messages)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (tenant, cart_id) DO UPDATE SET state = excluded.state,
             updated_ns = excluded.updated_ns, applied_messages = excluded.applied_messages",
    )
    .and_then(|mut s| {
        s.execute(params![
            tenant.as_str(),
            after.state.cart.id.as_str(),
            state_format::encode(&after.state),
            after.created_ns,
            after.updated_ns,
            after.applied
        ])
    })
    .map_err(ProjectionError::db("store cart state"))?;
    Ok(())
}

/// The first line id that occurs twice in `cart` (such a cart cannot be stored).
pub fn duplicate_line(cart: &Cart) -> Option<u32> {
    let lines = &cart.lines;
    lines
        .iter()
        .enumerate()
        .find(|(i, l)| lines[..*i].iter().any(|o| o.id == l.id))
        .map(|(_, l)| l.id)
}

/// Brings the stored lines from `before` to `after`: deletes the lines that are gone, updates
/// those whose row changed (position included), inserts the new ones.
fn write_lines(
    conn: &Connection,
    t: &str,
    c: &str,
    before: &[StoredLine],
    after: &[Line],
) -> Result<(), ProjectionError> {
    for old in before {
        if !after.iter().any(|l| l.id == old.id) {
            conn.prepare_cached(
                "DELETE FROM cart_lines WHERE tenant = ?1 AND cart_id = ?2 AND line_id = ?3",
            )
            .and_then(|mut s| s.execute(params![t, c, old.id]))
            .map_err(ProjectionError::db("delete line"))?;
        }
    }
    for (pos, l) in after.iter().enumerate() {
        let sql = match before.iter().position(|o| o.id == l.id) {
            Some(old) if old == pos && before[old].same_product(l) => {
                if before[old].quantity == l.quantity {
                    continue;
                }
                // Only the quantity changed (the common update): setting no other column
                // leaves the by-SKU index alone.
                conn.prepare_cached(
                    "UPDATE cart_lines SET quantity = ?4
                     WHERE tenant = ?1 AND cart_id = ?2 AND line_id = ?3",
                )
                .and_then(|mut s| s.execute(params![t, c, l.id, l.quantity]))
                .map_err(ProjectionError::db("store line quantity"))?;
                continue;
            }
            Some(_) => {
                "UPDATE cart_lines SET position = ?4, sku = ?5, name = ?6, quantity = ?7,
                     unit_price = ?8, tax_rate = ?9
                 WHERE tenant = ?1 AND cart_id = ?2 AND line_id = ?3"
            }
            None => {
                "INSERT INTO cart_lines (tenant, cart_id, line_id, position, sku, name,
                     quantity, unit_price, tax_rate)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            }
        };
        conn.prepare_cached(sql)
            .and_then(|mut s| {
                s.execute(params![
                    t,
                    c,
                    l.id,
                    to_i64(pos as u64),
                    l.product.sku,
                    l.product.name,
                    l.quantity,
                    l.product.unit_price,
                    l.product.tax_rate.0,
                ])
            })
            .map_err(ProjectionError::db("store line"))?;
    }
    Ok(())
}

/// Stores the order of `tenant`/`cart` (one per cart; a later one replaces it).
pub fn write_order(
    conn: &Connection,
    tenant: &TenantId,
    cart: &CartId,
    order: &OrderRow,
) -> Result<(), ProjectionError> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO orders (tenant, cart_id, provider_order_id, order_reference,
             total_amount, currency, user_id, placed_ns, version)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut s| {
        s.execute(params![
            tenant.as_str(),
            cart.as_str(),
            order.provider_order_id,
            order.order_reference,
            order.total_amount,
            order.currency,
            order.user_id,
            order.placed_ns,
            to_i64(order.version),
        ])
    })
    .map_err(ProjectionError::db("store order"))?;
    Ok(())
}

/// Unix nanoseconds of an event time (saturating; the range covers years 1678..2262).
pub fn nanos(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos()).unwrap_or(if t.year() < 1970 {
        i64::MIN
    } else {
        i64::MAX
    })
}
