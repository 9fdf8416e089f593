//! Read-side SQL. Every query takes the tenant and filters by it inside the SQL, so tenant
//! isolation does not depend on the caller. `abandoned` is derived here: an open cart with
//! items whose last event is at or before `abandoned_before_ns`.

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use crate::error::ProjectionError;
use crate::read::page::Cursor;
use crate::store::db::to_u64;
use crate::write::views;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineRow {
    pub line_id: u32,
    pub sku: String,
    pub name: String,
    pub quantity: u32,
    pub unit_price: i64,
    pub tax_rate: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CartRow {
    pub tenant: String,
    pub cart_id: String,
    /// Effective status: `open`, `checkout`, `ordered` or `abandoned`.
    pub status: String,
    pub item_count: u32,
    pub line_count: u32,
    pub total_amount: i64,
    pub total_tax: i64,
    pub total_discount: i64,
    pub currency: String,
    pub user_id: Option<String>,
    pub order_reference: Option<String>,
    pub created_ns: i64,
    pub updated_ns: i64,
    pub version: u64,
    /// The cart's subscription details as a JSON object keyed by id (`None` while none).
    pub subscription_details: Option<String>,
    pub lines: Vec<LineRow>,
}

/// An `orders` row with its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRow {
    pub tenant: String,
    pub cart_id: String,
    pub order: views::OrderRow,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkuDemandRow {
    pub sku: String,
    pub quantity: u64,
    pub carts: u32,
}

/// Status filter of `ListCarts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    /// Open and not abandoned.
    Open,
    Checkout,
    Ordered,
    Abandoned,
}

impl StatusFilter {
    pub fn parse(s: &str) -> Result<Self, ProjectionError> {
        match s {
            "open" => Ok(Self::Open),
            "checkout" => Ok(Self::Checkout),
            "ordered" => Ok(Self::Ordered),
            "abandoned" => Ok(Self::Abandoned),
            other => Err(ProjectionError::Invalid(format!(
                "status must be open, checkout, ordered or abandoned, got {:?}",
                shared::error::clip(other)
            ))),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct CartFilter {
    pub status: Option<StatusFilter>,
    pub updated_since_ns: Option<i64>,
    pub user_id: Option<String>,
}

/// A page of rows and the cursor after its last row (`None`: no more rows).
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub rows: Vec<T>,
    pub next: Option<Cursor>,
}

const CART_COLUMNS: &str = "tenant, cart_id, status, item_count, line_count, total_amount,
    total_tax, total_discount, currency, user_id, order_reference, created_ns, updated_ns, version,
    subscription_details";

fn cart_row(r: &Row<'_>, abandoned_before_ns: i64) -> rusqlite::Result<CartRow> {
    let stored: String = r.get(2)?;
    let item_count: u32 = r.get(3)?;
    let updated_ns: i64 = r.get(12)?;
    let abandoned = stored == "open" && item_count > 0 && updated_ns <= abandoned_before_ns;
    Ok(CartRow {
        tenant: r.get(0)?,
        cart_id: r.get(1)?,
        status: if abandoned {
            "abandoned".into()
        } else {
            stored
        },
        item_count,
        line_count: r.get(4)?,
        total_amount: r.get(5)?,
        total_tax: r.get(6)?,
        total_discount: r.get(7)?,
        currency: r.get(8)?,
        user_id: r.get(9)?,
        order_reference: r.get(10)?,
        created_ns: r.get(11)?,
        updated_ns,
        version: to_u64(r.get(13)?),
        subscription_details: r.get(14)?,
        lines: Vec::new(),
    })
}

fn lines(conn: &Connection, tenant: &str, cart_id: &str) -> Result<Vec<LineRow>, ProjectionError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT line_id, sku, name, quantity, unit_price, tax_rate FROM cart_lines
             WHERE tenant = ?1 AND cart_id = ?2 ORDER BY position",
        )
        .map_err(ProjectionError::db("read lines"))?;
    stmt.query_map(params![tenant, cart_id], |r| {
        Ok(LineRow {
            line_id: r.get(0)?,
            sku: r.get(1)?,
            name: r.get(2)?,
            quantity: r.get(3)?,
            unit_price: r.get(4)?,
            tax_rate: r.get(5)?,
        })
    })
    .and_then(|rows| rows.collect())
    .map_err(ProjectionError::db("read lines"))
}

pub fn get_cart(
    conn: &Connection,
    tenant: &str,
    cart_id: &str,
    abandoned_before_ns: i64,
) -> Result<Option<CartRow>, ProjectionError> {
    let cart = conn
        .prepare_cached(&format!(
            "SELECT {CART_COLUMNS} FROM carts WHERE tenant = ?1 AND cart_id = ?2"
        ))
        .and_then(|mut s| {
            s.query_row(params![tenant, cart_id], |r| {
                cart_row(r, abandoned_before_ns)
            })
            .optional()
        })
        .map_err(ProjectionError::db("read cart"))?;
    let Some(mut cart) = cart else {
        return Ok(None);
    };
    cart.lines = lines(conn, tenant, cart_id)?;
    Ok(Some(cart))
}

/// The query of [`list_carts`] and its arguments: by status through `carts_by_status`, a
/// user's carts through `carts_by_user`, all others through `carts_by_update`; none sorts.
fn list_carts_sql(
    tenant: &str,
    filter: &CartFilter,
    abandoned_before_ns: i64,
    size: u32,
    after: Option<&Cursor>,
) -> (String, Vec<Value>) {
    let mut sql = format!("SELECT {CART_COLUMNS} FROM carts WHERE tenant = ?");
    let mut args: Vec<Value> = vec![tenant.to_owned().into()];
    let abandoned = " AND status = 'open' AND item_count > 0 AND updated_ns <= ?";
    match filter.status {
        None => {}
        Some(StatusFilter::Open) => {
            sql.push_str(" AND status = 'open' AND NOT (item_count > 0 AND updated_ns <= ?)");
            args.push(abandoned_before_ns.into());
        }
        Some(StatusFilter::Abandoned) => {
            sql.push_str(abandoned);
            args.push(abandoned_before_ns.into());
        }
        Some(StatusFilter::Checkout) => sql.push_str(" AND status = 'checkout'"),
        Some(StatusFilter::Ordered) => sql.push_str(" AND status = 'ordered'"),
    }
    if let Some(since) = filter.updated_since_ns {
        sql.push_str(" AND updated_ns >= ?");
        args.push(since.into());
    }
    if let Some(user) = &filter.user_id {
        sql.push_str(" AND user_id = ?");
        args.push(user.clone().into());
    }
    if let Some(c) = after {
        sql.push_str(" AND (updated_ns < ? OR (updated_ns = ? AND cart_id < ?))");
        args.extend([c.at_ns.into(), c.at_ns.into(), c.cart_id.clone().into()]);
    }
    sql.push_str(" ORDER BY updated_ns DESC, cart_id DESC LIMIT ?");
    args.push(i64::from(size + 1).into());
    (sql, args)
}

/// Carts newest update first, filtered, one page after `after`.
pub fn list_carts(
    conn: &Connection,
    tenant: &str,
    filter: &CartFilter,
    abandoned_before_ns: i64,
    size: u32,
    after: Option<&Cursor>,
) -> Result<Page<CartRow>, ProjectionError> {
    let (sql, args) = list_carts_sql(tenant, filter, abandoned_before_ns, size, after);
    let mut stmt = conn
        .prepare_cached(&sql)
        .map_err(ProjectionError::db("list carts"))?;
    let mut rows: Vec<CartRow> = stmt
        .query_map(params_from_iter(args), |r| cart_row(r, abandoned_before_ns))
        .and_then(|rows| rows.collect())
        .map_err(ProjectionError::db("list carts"))?;
    let next = page_end(&mut rows, size, |c| Cursor {
        at_ns: c.updated_ns,
        cart_id: c.cart_id.clone(),
    });
    for cart in &mut rows {
        cart.lines = lines(conn, tenant, &cart.cart_id)?;
    }
    Ok(Page { rows, next })
}

/// The columns of an `orders` row, its key first, as [`order_row`] reads them.
pub const ORDER_COLUMNS: &str = "tenant, cart_id, provider_order_id, order_reference,
    total_amount, currency, user_id, placed_ns, version";

/// An `orders` row selected as [`ORDER_COLUMNS`].
pub fn order_row(r: &Row<'_>) -> rusqlite::Result<OrderRow> {
    Ok(OrderRow {
        tenant: r.get(0)?,
        cart_id: r.get(1)?,
        order: views::OrderRow {
            provider_order_id: r.get(2)?,
            order_reference: r.get(3)?,
            total_amount: r.get(4)?,
            currency: r.get(5)?,
            user_id: r.get(6)?,
            placed_ns: r.get(7)?,
            version: to_u64(r.get(8)?),
        },
    })
}

/// Orders newest first, placed at or after `since_ns`.
pub fn list_orders(
    conn: &Connection,
    tenant: &str,
    since_ns: Option<i64>,
    size: u32,
    after: Option<&Cursor>,
) -> Result<Page<OrderRow>, ProjectionError> {
    let mut sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE tenant = ?");
    let mut args: Vec<Value> = vec![tenant.to_owned().into()];
    if let Some(since) = since_ns {
        sql.push_str(" AND placed_ns >= ?");
        args.push(since.into());
    }
    if let Some(c) = after {
        sql.push_str(" AND (placed_ns < ? OR (placed_ns = ? AND cart_id < ?))");
        args.extend([c.at_ns.into(), c.at_ns.into(), c.cart_id.clone().into()]);
    }
    sql.push_str(" ORDER BY placed_ns DESC, cart_id DESC LIMIT ?");
    args.push(i64::from(size + 1).into());
    let mut stmt = conn
        .prepare_cached(&sql)
        .map_err(ProjectionError::db("list orders"))?;
    let mut rows: Vec<OrderRow> = stmt
        .query_map(params_from_iter(args), order_row)
        .and_then(|rows| rows.collect())
        .map_err(ProjectionError::db("list orders"))?;
    let next = page_end(&mut rows, size, |o| Cursor {
        at_ns: o.order.placed_ns,
        cart_id: o.cart_id.clone(),
    });
    Ok(Page { rows, next })
}

/// Units per SKU across the tenant's open carts (abandoned ones included), most wanted first.
pub fn sku_demand(
    conn: &Connection,
    tenant: &str,
    limit: u32,
) -> Result<Vec<SkuDemandRow>, ProjectionError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT l.sku, SUM(l.quantity), COUNT(DISTINCT l.cart_id)
             FROM cart_lines l JOIN carts c ON c.tenant = l.tenant AND c.cart_id = l.cart_id
             WHERE l.tenant = ?1 AND c.tenant = ?1 AND c.status = 'open'
             GROUP BY l.sku ORDER BY 2 DESC, l.sku LIMIT ?2",
        )
        .map_err(ProjectionError::db("sku demand"))?;
    stmt.query_map(params![tenant, limit], |r| {
        Ok(SkuDemandRow {
            sku: r.get(0)?,
            quantity: to_u64(r.get(1)?),
            carts: r.get(2)?,
        })
    })
    .and_then(|rows| rows.collect())
    .map_err(ProjectionError::db("sku demand"))
}

/// Trims the look-ahead row of a `LIMIT size + 1` query; the cursor exists when it was there.
fn page_end<T>(rows: &mut Vec<T>, size: u32, cursor: impl Fn(&T) -> Cursor) -> Option<Cursor> {
    if rows.len() > size as usize {
        rows.truncate(size as usize);
        rows.last().map(cursor)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan of `list_carts` for `filter` (with a cursor, as for a second page).
    fn plan(conn: &Connection, filter: &CartFilter) -> String {
        let after = Cursor {
            at_ns: 5,
            cart_id: "c".into(),
        };
        let (sql, args) = list_carts_sql("t", filter, 3, 10, Some(&after));
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows: Vec<String> = stmt
            .query_map(params_from_iter(args), |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        rows.join("; ")
    }

    #[test]
    fn every_cart_list_reads_one_index_in_order_without_sorting() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::db::open_writer(&dir.path().join("p.db")).unwrap();
        // Any index that needs no sort will do, except that a user's carts use theirs.
        let cases = [
            (None, None, "INDEX carts_by_"),
            (Some(StatusFilter::Open), None, "INDEX carts_by_"),
            (Some(StatusFilter::Abandoned), None, "INDEX carts_by_"),
            (Some(StatusFilter::Checkout), None, "INDEX carts_by_status "),
            (Some(StatusFilter::Ordered), None, "INDEX carts_by_status "),
            (None, Some("u"), "INDEX carts_by_user "),
            (Some(StatusFilter::Open), Some("u"), "INDEX carts_by_user "),
        ];
        for (status, user, index) in cases {
            for since in [None, Some(1)] {
                let filter = CartFilter {
                    status,
                    updated_since_ns: since,
                    user_id: user.map(String::from),
                };
                let plan = plan(&conn, &filter);
                assert!(plan.starts_with("SEARCH carts USING"), "{filter:?}: {plan}");
                assert!(plan.contains(index), "{filter:?}: {plan}");
                assert!(!plan.contains("TEMP B-TREE"), "{filter:?} sorts: {plan}");
            }
        }
    }
}
