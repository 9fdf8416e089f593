//! `GET /v1/carts/{id}/events`: the cart as server-sent events, from the aggregate's
//! `WatchCart` stream. The first event is the cart now, then one per commit; each event's `id`
//! is the cart version and its data the cart JSON. An upstream failure becomes one `error`
//! event (`{"error", "code"}`) and ends the stream; the stream also ends when the upstream
//! stream ends or the gateway shuts down. Keep-alive comments flow while nothing changes.

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use proto::cart::v1 as pb;
use shared::ApiError;
use shared::metrics::GaugeGuard;

use super::{CartPath, TAG};
use crate::metrics as m;
use crate::request::context::Ctx;
use crate::request::params::Params;
use crate::schema::ReadErrors;
use crate::state::AppState;
use crate::upstream::aggregate::VersionedCart;

/// Live updates of the cart.
#[utoipa::path(get, path = "/v1/carts/{id}/events", tag = TAG,
    params(("id" = String, Path, description = "Cart id")),
    responses(
        (status = 200, description = "`text/event-stream`: `id: <version>`, `data: <cart JSON>` per commit; `event: error` then end on failure",
            content_type = "text/event-stream"),
        ReadErrors))]
pub async fn events(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Params(p): Params<CartPath>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let upstream = s.upstream.watch(&ctx, &p.cart()?).await?;
    let stream = cart_events(upstream).take_until(s.shutdown.clone().cancelled_owned());
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(s.cfg.sse_keep_alive())))
}

fn cart_events(
    upstream: tonic::Streaming<pb::CartSnapshot>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(
        Some((upstream, GaugeGuard::new(metrics::gauge!(m::SSE_STREAMS)))),
        |state| async move {
            let (mut upstream, open) = state?;
            let event = match upstream.next().await? {
                Ok(snap) => match VersionedCart::decode(snap) {
                    Ok(snap) => Ok(cart_event(&snap)),
                    Err(e) => Err(error_event(&e)),
                },
                Err(status) => Err(error_event(&ApiError::from_status(&status))),
            };
            match event {
                Ok(event) => Some((Ok(event), Some((upstream, open)))),
                // One error event, then the stream ends (the next poll sees `None`).
                Err(event) => Some((Ok(event), None)),
            }
        },
    )
}

fn cart_event(snap: &VersionedCart) -> Event {
    Event::default()
        .id(snap.version.to_string())
        .json_data(snap.v1())
        .unwrap_or_else(|e| error_event(&ApiError::internal(e.to_string())))
}

fn error_event(e: &ApiError) -> Event {
    Event::default().event("error").data(e.body().to_string())
}
