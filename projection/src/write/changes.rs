//! Applying event messages to carts in memory, then writing each changed cart once.
//!
//! A transaction (a batch, a replay, a recovery) collects its carts here: the first message for
//! a cart takes its state out of the [`StateCache`] (or reads it from the database), every
//! message is applied with `CartState::apply_decoded`, and [`Changes::write`] writes each
//! changed cart's view rows once, however many of the batch's messages it had (its state only
//! when the writer flushes, [`Changes::write_all_states`]). Nothing touches the database before
//! that, so a message that cannot be applied is simply left out (no savepoint) and the cart
//! keeps the state from before it. After the commit [`Changes::committed`] puts the new states
//! into the cache; dropped without it (a rollback), it puts back the states taken that were not
//! yet written, as they were (they exist nowhere else), and forgets the others.

use std::sync::Arc;

use bytes::Bytes;
use cart_domain::{Event, EventDecodeError, EventMessage, Retain};
use rusqlite::Connection;
use shared::subjects::CartEventSubject;
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use crate::error::ProjectionError;
use crate::write::fault_injection::Hooks;
use crate::write::state_cache::{CartKey, StateCache, Taken};
use crate::write::views::{self, OrderRow, Staleness, StoredCart, StoredLine, nanos};

/// A message as delivered by the consumer, or read back from the stream (rebuild, replay).
#[derive(Debug, Clone)]
pub struct Incoming {
    pub sequence: u64,
    pub subject: String,
    pub headers: Option<async_nats::HeaderMap>,
    pub payload: Bytes,
    /// Delivery attempt (1 for the first); read-backs count as the last attempt.
    pub delivered: i64,
    /// The payload decoded ahead ([`Incoming::decoded_ahead`]), so the writer thread does not
    /// spend its time parsing JSON; `None`: the writer decodes it.
    decoded: Option<Arc<Result<Decoded, String>>>,
}

impl Incoming {
    pub fn new(
        sequence: u64,
        subject: String,
        headers: Option<async_nats::HeaderMap>,
        payload: Bytes,
        delivered: i64,
    ) -> Self {
        Self {
            sequence,
            subject,
            headers,
            payload,
            delivered,
            decoded: None,
        }
    }

    /// Decodes the payload now (on the consumer's task, while the writer applies the previous
    /// batch). A payload that cannot be decoded keeps its error for the writer to report.
    pub fn decoded_ahead(mut self) -> Self {
        self.decoded = Some(Arc::new(decode(&self)));
        self
    }

    /// A copy without the headers: applying a message does not read them.
    pub fn without_headers(&self) -> Incoming {
        // Field by field: cloning `self` first would copy the header map only to drop it.
        Incoming {
            sequence: self.sequence,
            subject: self.subject.clone(),
            headers: None,
            payload: self.payload.clone(),
            delivered: self.delivered,
            decoded: self.decoded.clone(),
        }
    }
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

/// A cart touched by the transaction.
struct Pending {
    /// Taken from the cache while the database holds an older state: the state as taken
    /// exists nowhere else, so a rollback puts it back (it is `now` until the first change,
    /// then `original`).
    unwritten: bool,
    original: Option<StoredCart>,
    /// The lines the database holds (`None`: the cart has no rows yet).
    stored: Option<Vec<StoredLine>>,
    /// After the transaction's messages so far.
    now: StoredCart,
    /// The last order placed by those messages.
    order: Option<OrderRow>,
    changed: bool,
}

/// The carts of one transaction, in key order (so writes walk the B-trees in order), taken
/// out of `cache`. Dropped without [`Changes::committed`] (an error, a rollback), it puts the
/// states that were not yet written back into the cache as they were.
pub struct Changes<'c> {
    cache: &'c mut StateCache,
    carts: BTreeMap<CartKey, Pending>,
    /// Carts read from the database (not found in the cache).
    pub loads: u64,
    /// Folding messages already applied to the views again (see [`crate::consume::recovery`]):
    /// stored states may be older than the views, and fault-injection hooks do not fire.
    recovering: bool,
}

impl Drop for Changes<'_> {
    fn drop(&mut self) {
        for (key, p) in std::mem::take(&mut self.carts) {
            if p.unwritten {
                self.cache.put(key, p.original.unwrap_or(p.now), false);
            }
        }
    }
}

impl<'c> Changes<'c> {
    /// The changes of a transaction.
    pub fn new(cache: &'c mut StateCache) -> Self {
        Self {
            cache,
            carts: BTreeMap::new(),
            loads: 0,
            recovering: false,
        }
    }

    /// The changes of a recovery (see [`Changes::recovering`]).
    pub fn recovery(cache: &'c mut StateCache) -> Self {
        let mut changes = Self::new(cache);
        changes.recovering = true;
        changes
    }

    /// Applies `inc` in memory. `conn` is only read, for a cart not in the cache.
    pub fn apply(
        &mut self,
        conn: &Connection,
        inc: &Incoming,
        hooks: &Hooks,
        order: Order,
    ) -> Result<Applied, ApplyError> {
        let decoded_now;
        let d = match inc.decoded.as_deref() {
            Some(ahead) => ahead.as_ref().map_err(|e| ApplyError::Poison(e.clone()))?,
            None => {
                decoded_now = decode(inc).map_err(ApplyError::Poison)?;
                &decoded_now
            }
        };
        if let Some(reason) = hooks
            .apply_failure(&d.msg, inc.sequence)
            .filter(|_| !self.recovering)
        {
            return Err(ApplyError::Poison(reason));
        }
        let at = nanos(d.msg.occurred_at);
        let pending = match self
            .carts
            .entry((d.msg.tenant.clone(), d.msg.cart_id.clone()))
        {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let (unwritten, stored) = match self.cache.take(e.key()) {
                    Some(Taken { cart, dirty }) => (dirty, Some(cart)),
                    None => {
                        self.loads += 1;
                        let (tenant, cart) = e.key();
                        let staleness = if self.recovering {
                            Staleness::Recover
                        } else {
                            Staleness::Refuse
                        };
                        let mut loaded =
                            views::load(conn, tenant, cart, staleness).map_err(ApplyError::Db)?;
                        if let Some(loaded) = &mut loaded {
                            self.cache.share_lines(&mut loaded.state.cart);
                        }
                        (false, loaded)
                    }
                };
                e.insert(match stored {
                    Some(cart) => Pending {
                        unwritten,
                        original: None,
                        stored: Some(StoredLine::all(&cart.state.cart)),
                        now: cart,
                        order: None,
                        changed: false,
                    },
                    None => Pending {
                        unwritten,
                        original: None,
                        stored: None,
                        now: StoredCart::new(d.msg.cart_id.clone(), at),
                        order: None,
                        changed: false,
                    },
                })
            }
        };
        // A late message that is still the cart's newest is simply in order.
        let version = pending.now.state.version;
        let order = if inc.sequence > version {
            Order::Stream
        } else {
            order
        };
        if order == Order::Stream && inc.sequence <= version {
            return Ok(Applied {
                already: true,
                ..Applied::default()
            });
        }
        let mut next = if pending.stored.is_none() && !pending.changed {
            // The cart's first message (an earlier one in this batch may have failed).
            StoredCart::new(d.msg.cart_id.clone(), at)
        } else {
            pending.now.clone()
        };
        match order {
            Order::Stream => {
                next.state
                    .apply_decoded(&d.msg, &d.events, inc.sequence, Retain::NONE);
                next.updated_ns = at;
            }
            Order::Late => {
                for e in &d.events {
                    cart_domain::apply(&mut next.state.cart, e);
                }
                next.state.revision += 1;
                next.state.version = next.state.version.max(inc.sequence);
                next.updated_ns = next.updated_ns.max(at);
            }
        }
        next.applied += 1;
        self.cache.share_added(&mut next.state.cart, &d.events);
        if let Some(id) = views::duplicate_line(&next.state.cart) {
            return Err(ApplyError::Poison(format!(
                "the message gives cart {}/{} a second line {id}",
                d.msg.tenant, d.msg.cart_id
            )));
        }
        for e in &d.events {
            if let Event::OrderPlaced(o) = e {
                pending.order = Some(OrderRow::new(&next.state, o, at, inc.sequence));
            }
        }
        let before = std::mem::replace(&mut pending.now, next);
        if pending.unwritten && !pending.changed {
            pending.original = Some(before);
        }
        pending.changed = true;
        Ok(Applied {
            events: d.msg.events.len(),
            unknown: d.unknown.clone(),
            already: false,
        })
    }

    /// Writes the view rows of every changed cart (inside the caller's transaction).
    pub fn write(&self, conn: &Connection) -> Result<(), ProjectionError> {
        for ((tenant, cart), p) in self.changed() {
            views::write(conn, tenant, p.stored.as_deref(), &p.now)?;
            if let Some(order) = &p.order {
                views::write_order(conn, tenant, cart, order)?;
            }
        }
        Ok(())
    }

    /// Writes every state not yet written, this transaction's and the cache's, and records
    /// `checkpoint` as the states' (a flush, inside the caller's transaction). Once committed,
    /// pass `written` to [`Changes::committed`].
    pub fn write_all_states(
        &self,
        conn: &Connection,
        checkpoint: u64,
    ) -> Result<(), ProjectionError> {
        for ((tenant, _), cart) in self.cache.dirty() {
            views::write_state(conn, tenant, cart)?;
        }
        // Changed ones, and unwritten ones this transaction took but did not change (a poison
        // message, a replay that failed): marked written after the commit, they must be.
        for ((tenant, _), p) in self.carts.iter().filter(|(_, p)| p.changed || p.unwritten) {
            views::write_state(conn, tenant, &p.now)?;
        }
        crate::store::db::set_states_checkpoint(conn, checkpoint)
    }

    /// Whether this transaction should also write every waiting state (see
    /// [`StateCache::flush_due`]).
    pub fn flush_due(&self) -> bool {
        self.cache.flush_due(self.unwritten_after())
    }

    /// States not yet written once this transaction commits without a flush.
    pub fn unwritten_after(&self) -> usize {
        let here = self.carts.values();
        self.cache.dirty_len() + here.filter(|p| p.changed || p.unwritten).count()
    }

    fn changed(&self) -> impl Iterator<Item = (&CartKey, &Pending)> {
        self.carts.iter().filter(|(_, p)| p.changed)
    }

    /// The transaction committed (recovery: it is done): the states go (back) into the cache,
    /// changed or not; `written`: it flushed ([`Changes::write_all_states`]).
    pub fn committed(mut self, written: bool) {
        for (key, p) in std::mem::take(&mut self.carts) {
            if p.changed {
                self.cache.put(key, p.now, written);
            } else if p.stored.is_some() {
                self.cache.put(key, p.now, written || !p.unwritten);
            }
        }
        if written {
            self.cache.all_written();
        }
    }
}

/// A message decoded far enough to apply.
#[derive(Debug)]
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

#[cfg(test)]
mod tests;
