//! Applying one event message to the views.
//!
//! Each cart's domain fold (`CartState`) is stored as JSON; a message is applied to it with
//! `CartState::apply_message` and the cart's view rows are rewritten from the new state and
//! `shared::domain::totals`, so the views are exactly what the domain computes. Times come from
//! the message's `occurred_at`, so replaying the stream gives identical rows.

use bytes::Bytes;
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};
use shared::domain::{
    Cart, CartState, Event, EventDecodeError, EventMessage, event::OrderPlaced, totals,
};
use shared::ids::{CartId, TenantId};
use shared::subjects::CartEventSubject;

use crate::db::{to_i64, to_u64};
use crate::error::ProjectionError;
use crate::hooks::Hooks;

/// A message as delivered by the consumer, or read back from the stream (rebuild, replay).
#[derive(Debug, Clone)]
pub struct Incoming {
    pub sequence: u64,
    pub subject: String,
    pub headers: Option<async_nats::HeaderMap>,
    pub payload: Bytes,
    /// Delivery attempt (1 for the first); read-backs count as the last attempt.
    pub delivered: i64,
}

/// Where a message goes relative to the cart's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// In stream order (consumer, rebuild): the message follows everything applied so far.
    Stream,
    /// Now, after later messages of the cart (replay of a dead letter): its events are applied
    /// to the current state and the cart keeps its newest version.
    Late,
}

/// What applying one message did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub events: usize,
    /// Event types this build does not know (counted and skipped).
    pub unknown: Vec<String>,
    /// The cart had already applied this sequence (nothing changed).
    pub already: bool,
}

#[derive(Debug)]
pub enum ApplyError {
    /// The message itself is bad (cannot be decoded or applied): retry, then dead-letter.
    Poison(String),
    /// The database failed: the whole batch is retried.
    Db(ProjectionError),
}

impl ApplyError {
    fn db(what: &'static str) -> impl FnOnce(rusqlite::Error) -> ApplyError {
        move |e| {
            // A constraint violation is caused by the message's content (e.g. a duplicate line
            // id), so it is the message's fault, not the database's.
            if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) {
                ApplyError::Poison(format!("{what}: {e}"))
            } else {
                ApplyError::Db(ProjectionError::Db { what, source: e })
            }
        }
    }
}

/// A message decoded far enough to apply.
struct Decoded {
    msg: EventMessage,
    events: Vec<Event>,
    unknown: Vec<String>,
}

fn decode(inc: &Incoming) -> Result<Decoded, String> {
    let subject = CartEventSubject::parse(&inc.subject).map_err(|e| e.to_string())?;
    let msg = EventMessage::from_json(&inc.payload)
        .map_err(|e| format!("payload is not a valid event envelope: {e}"))?;
    if msg.tenant != subject.tenant || msg.cart_id != subject.cart_id {
        return Err(format!(
            "envelope names {}/{} but the subject is {}",
            msg.tenant, msg.cart_id, inc.subject
        ));
    }
    let mut events = Vec::with_capacity(msg.events.len());
    let mut unknown = Vec::new();
    for record in &msg.events {
        match Event::decode(record) {
            Ok(e) => events.push(e),
            Err(EventDecodeError::UnknownType(t)) => unknown.push(t),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(Decoded {
        msg,
        events,
        unknown,
    })
}

/// Applies `inc` to the views through `conn` (the caller's savepoint or transaction).
pub fn apply(
    conn: &Connection,
    inc: &Incoming,
    hooks: &Hooks,
    order: Order,
) -> Result<Applied, ApplyError> {
    let d = decode(inc).map_err(ApplyError::Poison)?;
    if let Some(reason) = hooks.apply_failure(&d.msg, inc.sequence) {
        return Err(ApplyError::Poison(reason));
    }
    let at = nanos(d.msg.occurred_at);
    let (mut state, created_ns, mut updated_ns, mut applied) =
        match load(conn, &d.msg.tenant, &d.msg.cart_id)? {
            Some(s) => s,
            None => (CartState::new(d.msg.cart_id.clone()), at, at, 0),
        };
    // A late message that is still the cart's newest is simply in order.
    let order = if inc.sequence > state.version {
        Order::Stream
    } else {
        order
    };
    if order == Order::Stream && inc.sequence <= state.version {
        return Ok(Applied {
            already: true,
            ..Applied::default()
        });
    }
    match order {
        Order::Stream => {
            state.apply_message(&d.msg, inc.sequence, 0);
            updated_ns = at;
        }
        Order::Late => {
            for e in &d.events {
                shared::domain::apply(&mut state.cart, e);
            }
            state.revision += 1;
            state.version = state.version.max(inc.sequence);
            updated_ns = updated_ns.max(at);
        }
    }
    applied += 1;
    store(conn, &d.msg.tenant, &state, created_ns, updated_ns, applied)?;
    for e in &d.events {
        if let Event::OrderPlaced(o) = e {
            store_order(conn, &d.msg.tenant, &state, o, at, inc.sequence)?;
        }
    }
    Ok(Applied {
        events: d.msg.events.len(),
        unknown: d.unknown,
        already: false,
    })
}

type Loaded = (CartState, i64, i64, i64);

fn load(conn: &Connection, tenant: &TenantId, cart: &CartId) -> Result<Option<Loaded>, ApplyError> {
    let row: Option<(String, i64, i64, i64)> = conn
        .prepare_cached(
            "SELECT state, created_ns, updated_ns, applied_messages FROM cart_states
             WHERE tenant = ?1 AND cart_id = ?2",
        )
        .and_then(|mut s| {
            s.query_row(params![tenant.as_str(), cart.as_str()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()
        })
        .map_err(ApplyError::db("load cart state"))?;
    let Some((json, created, updated, applied)) = row else {
        return Ok(None);
    };
    let state: CartState = serde_json::from_str(&json).map_err(|e| {
        ApplyError::Db(ProjectionError::Rebuild(format!(
            "stored state of {tenant}/{cart} is unreadable ({e}); rebuild the projection"
        )))
    })?;
    Ok(Some((state, created, updated, applied)))
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

fn store(
    conn: &Connection,
    tenant: &TenantId,
    state: &CartState,
    created_ns: i64,
    updated_ns: i64,
    applied: i64,
) -> Result<(), ApplyError> {
    let cart = &state.cart;
    let (t, c) = (tenant.as_str(), cart.id.as_str());
    let json = serde_json::to_string(state).expect("cart states always serialize");
    conn.prepare_cached(
        "INSERT INTO cart_states (tenant, cart_id, state, created_ns, updated_ns, applied_messages)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (tenant, cart_id) DO UPDATE SET state = excluded.state,
             updated_ns = excluded.updated_ns, applied_messages = excluded.applied_messages",
    )
    .and_then(|mut s| s.execute(params![t, c, json, created_ns, updated_ns, applied]))
    .map_err(ApplyError::db("store cart state"))?;

    conn.prepare_cached("DELETE FROM cart_lines WHERE tenant = ?1 AND cart_id = ?2")
        .and_then(|mut s| s.execute(params![t, c]))
        .map_err(ApplyError::db("delete lines"))?;
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO cart_lines (tenant, cart_id, line_id, position, sku, name, quantity,
                 unit_price, tax_rate)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .map_err(ApplyError::db("insert line"))?;
    for (pos, l) in cart.lines.iter().enumerate() {
        insert
            .execute(params![
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
            .map_err(ApplyError::db("insert line"))?;
    }

    let tot = totals(cart);
    let items: u64 = cart.lines.iter().map(|l| u64::from(l.quantity)).sum();
    conn.prepare_cached(
        "INSERT INTO carts (tenant, cart_id, status, item_count, line_count, total_amount,
             total_tax, total_discount, currency, user_id, order_reference, created_ns,
             updated_ns, version)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
         ON CONFLICT (tenant, cart_id) DO UPDATE SET status = excluded.status,
             item_count = excluded.item_count, line_count = excluded.line_count,
             total_amount = excluded.total_amount, total_tax = excluded.total_tax,
             total_discount = excluded.total_discount, currency = excluded.currency,
             user_id = excluded.user_id, order_reference = excluded.order_reference,
             updated_ns = excluded.updated_ns, version = excluded.version",
    )
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
            cart.currency.clone().unwrap_or_default(),
            cart.user_id,
            cart.order.as_ref().map(|o| o.order_reference.as_str()),
            created_ns,
            updated_ns,
            to_i64(state.version),
        ])
    })
    .map_err(ApplyError::db("store cart"))?;
    Ok(())
}

fn store_order(
    conn: &Connection,
    tenant: &TenantId,
    state: &CartState,
    order: &OrderPlaced,
    placed_ns: i64,
    sequence: u64,
) -> Result<(), ApplyError> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO orders (tenant, cart_id, provider_order_id, order_reference,
             total_amount, currency, user_id, placed_ns, version)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut s| {
        s.execute(params![
            tenant.as_str(),
            state.cart.id.as_str(),
            order.provider_order_id,
            order.order_reference,
            order.total_amount,
            order.currency,
            state.cart.user_id,
            placed_ns,
            to_i64(sequence),
        ])
    })
    .map_err(ApplyError::db("store order"))?;
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

/// The messages a cart has had applied (diagnostics and tests).
pub fn applied_messages(
    conn: &Connection,
    tenant: &str,
    cart: &str,
) -> Result<Option<u64>, ProjectionError> {
    conn.query_row(
        "SELECT applied_messages FROM cart_states WHERE tenant = ?1 AND cart_id = ?2",
        params![tenant, cart],
        |r| r.get::<_, i64>(0),
    )
    .optional()
    .map(|v| v.map(to_u64))
    .map_err(ProjectionError::db("read applied messages"))
}
