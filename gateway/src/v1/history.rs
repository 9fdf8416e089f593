//! `GET /v1/carts/{id}/history`: every accepted command of one cart, oldest first, a page at a
//! time, read straight from the event store (`CART_EVENTS`, subject
//! `cart.events.<tenant>.<cart_id>`; see [`crate::upstream::history`]). Each entry is one
//! stream message: its sequence (the cart's version once it was applied), when it was stored
//! and decided, the command id, the correlation id of the request that sent it, and its events
//! as stored (`{type, v, data}`).
//!
//! Paging is a cursor on the stream sequence: `after` (exclusive, default 0) and `limit`
//! (1..=[`MAX_LIMIT`], default [`DEFAULT_LIMIT`]); the reply's `next` is the `after` of the
//! next page, `null` once the page reached the end. The tenant is the caller's, as for every
//! `/v1` route, so another tenant's cart with the same id is simply not there. A cart nobody
//! wrote to has an empty history (200, no entries), as `GET /v1/carts/{id}` answers an empty
//! cart at version 0 for it. The admin twin across tenants is `crate::admin::history`.

use axum::Json;
use axum::extract::State;
use cart_domain::EventMessage;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::nats::{StoredEvent, SubjectPage};
use shared::subjects::{CART_EVENTS_STREAM, CartEventSubject};
use shared::{ApiError, CartId, TenantId};
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, ToSchema};

use super::{CartPath, TAG};
use crate::request::context::Ctx;
use crate::request::params::{Params, QueryParams};
use crate::schema::{CallerErrors, error_replies};
use crate::state::AppState;
use crate::upstream;

/// Entries per page when `limit` is omitted.
pub const DEFAULT_LIMIT: u32 = 50;
/// The most entries one page may ask for.
pub const MAX_LIMIT: u32 = 500;

/// Paging of a cart's history.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Only commands with a stream sequence greater than this: the `next` of the previous
    /// page, or a version from `ETag` for what happened since (default 0: from the start).
    after: Option<u64>,
    /// Most entries in the page, 1..=500 (default 50).
    limit: Option<u32>,
}

impl HistoryQuery {
    /// `(after, limit)`, or a 400 naming the bad value.
    pub fn page(&self) -> Result<(u64, u32), ApiError> {
        page(self.after, self.limit)
    }
}

/// Checks `after` and `limit` (shared with the admin route, whose query has a `tenant` too).
pub fn page(after: Option<u64>, limit: Option<u32>) -> Result<(u64, u32), ApiError> {
    match limit {
        Some(n) if n == 0 || n > MAX_LIMIT => Err(ApiError::invalid(format!(
            "query parameter limit must be 1..={MAX_LIMIT} (omit it for {DEFAULT_LIMIT}), got {n}"
        ))),
        n => Ok((after.unwrap_or(0), n.unwrap_or(DEFAULT_LIMIT))),
    }
}

/// One page of a cart's history.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CartHistory {
    pub cart_id: String,
    /// Accepted commands, oldest first.
    pub entries: Vec<HistoryEntry>,
    /// Pass as `after` for the next page; `null` when this page reached the end (a later
    /// command shows up with `after` = the last entry's `sequence`).
    pub next: Option<u64>,
}

/// One accepted command (or a kept refusal): one message of `CART_EVENTS`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// Its sequence in `CART_EVENTS`: the cart's version (`ETag`) once it was applied.
    pub sequence: u64,
    pub tenant: String,
    /// The cart's revision after it: 1 for the cart's first command, then +1 per command.
    pub revision: u64,
    /// RFC 3339: when the stream stored it.
    pub time: String,
    /// RFC 3339: when the aggregate decided it.
    pub occurred_at: String,
    /// The command id (also the message's `Nats-Msg-Id`); derived from the `Idempotency-Key`
    /// when the request had one.
    pub command_id: String,
    /// `x-correlation-id` of the request that sent it; `null` when the message carries none.
    pub correlation_id: Option<String>,
    /// What it changed, in order; empty for a keyed request that changed nothing or was
    /// refused.
    pub events: Vec<HistoryEvent>,
    /// Set for a refusal the cart kept (a keyed request's, or one the gateway sent again after
    /// a timed-out attempt), so a retry gets the same answer: what the client was told.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<HistoryRefusal>,
}

/// A refusal as the client got it: `{"error", "code"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryRefusal {
    pub code: String,
    pub error: String,
}

/// An event as stored: type, schema version and payload (the domain's field names).
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryEvent {
    /// `ItemAdded`, `QuantityChanged`, ...
    #[serde(rename = "type")]
    pub event_type: String,
    pub v: u32,
    pub data: Value,
}

error_replies! {
    /// Errors of `GET /v1/carts/{id}/history` but for the caller's ([`CallerErrors`]) and the
    /// reading's ([`EventStoreErrors`]). Every body is `{"error", "code"}`.
    pub enum HistoryErrors {
        /// An invalid cart id, `after`, `limit`, tenant header or query parameter (the message
        /// names it).
        400 => BadRequest,
    }
}

error_replies! {
    /// Errors of [`read`], in both history routes. Every body is `{"error", "code"}`.
    pub enum EventStoreErrors {
        /// A stored message does not decode (the message names its sequence; `after` it skips it).
        500 => Internal,
        /// NATS is unreachable.
        503 => Unavailable,
        /// `CART_EVENTS` did not answer within `GATEWAY_SERVICE_TIMEOUT_MS`.
        504 => Timeout,
    }
}

/// Every accepted command of the cart, oldest first, from the event store.
#[utoipa::path(get, path = "/v1/carts/{id}/history", tag = TAG,
    params(("id" = String, Path, description = "Cart id"), HistoryQuery),
    responses(
        (status = 200, description = "A page of the cart's history (no entries for a cart nobody wrote to)",
            body = CartHistory),
        HistoryErrors, CallerErrors, EventStoreErrors))]
pub async fn history(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Params(p): Params<CartPath>,
    QueryParams(q): QueryParams<HistoryQuery>,
) -> Result<Json<CartHistory>, ApiError> {
    let cart = p.cart()?;
    let (after, limit) = q.page()?;
    let filter = shared::subjects::cart_events(&ctx.tenant, &cart);
    read(&s, &cart, &filter, after, limit).await.map(Json)
}

/// One page of the messages on `filter` (one cart's subject, in one tenant or every tenant).
pub async fn read(
    s: &AppState,
    cart: &CartId,
    filter: &str,
    after: u64,
    limit: u32,
) -> Result<CartHistory, ApiError> {
    let SubjectPage { events, pending } = upstream::history::page(
        s.services.js.as_ref(),
        filter,
        after,
        limit as usize,
        s.cfg.service_policy().timeout,
    )
    .await?;
    let next = events.last().map(|e| e.sequence).filter(|_| pending > 0);
    Ok(CartHistory {
        cart_id: cart.to_string(),
        entries: events.iter().map(entry).collect::<Result<_, _>>()?,
        next,
    })
}

fn entry(e: &StoredEvent) -> Result<HistoryEntry, ApiError> {
    let undecodable = |why: String| {
        ApiError::internal(format!(
            "message {} of {CART_EVENTS_STREAM} does not decode ({why}); read on with after={}",
            e.sequence, e.sequence
        ))
    };
    let tenant: TenantId = CartEventSubject::parse(&e.subject)
        .map_err(|err| undecodable(err.to_string()))?
        .tenant;
    let msg = EventMessage::from_json(&e.payload).map_err(|err| undecodable(err.to_string()))?;
    let rfc3339 = |t: time::OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
    Ok(HistoryEntry {
        sequence: e.sequence,
        tenant: tenant.to_string(),
        revision: msg.revision,
        time: rfc3339(e.time),
        occurred_at: rfc3339(msg.occurred_at),
        command_id: msg.command_id.to_string(),
        correlation_id: shared::headers::nats_correlation_id(&e.headers).map(|c| c.to_string()),
        events: msg
            .events
            .into_iter()
            .map(|r| HistoryEvent {
                event_type: r.event_type,
                v: r.v,
                data: r.data,
            })
            .collect(),
        refused: msg.refused.map(|r| HistoryRefusal {
            code: r.refusal.code,
            error: r.refusal.message,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_defaults_and_bounds() {
        assert_eq!(page(None, None).unwrap(), (0, DEFAULT_LIMIT));
        assert_eq!(page(Some(7), Some(MAX_LIMIT)).unwrap(), (7, MAX_LIMIT));
        for bad in [0, MAX_LIMIT + 1] {
            let e = page(None, Some(bad)).unwrap_err();
            assert_eq!(e.code, shared::ErrorCode::InvalidArgument);
            assert!(e.message.contains("limit must be 1..=500"), "{}", e.message);
        }
    }
}
