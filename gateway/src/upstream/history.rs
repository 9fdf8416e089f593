//! A cart's history as the event store holds it: pages of `CART_EVENTS` read straight from the
//! stream, one batch direct get per page ([`shared::nats::read_subject_page`], the same read as
//! the aggregate's cold load). No consumer, no read model, nothing written.
//!
//! The gateway's NATS user may send direct gets to `CART_EVENTS` and nothing more on it
//! (`deploy/nats/accounts.conf`); tenant scoping is the filter the caller builds
//! (`cart.events.<tenant>.<cart_id>` from the resolved tenant). A direct get may be answered by
//! any replica, so a page can miss a command acknowledged a moment ago; the next read has it.

use std::time::{Duration, Instant};

use async_nats::jetstream::Context;
use shared::nats::{DirectGetError, SubjectPage, read_subject_page};
use shared::subjects::CART_EVENTS_STREAM;
use shared::{ApiError, ErrorCode};

use crate::metrics as m;

/// The `op` label of the read in the upstream metrics.
const OP: &str = "cart_history";

/// Up to `limit` messages on `filter` after sequence `after`, within `timeout` (the whole
/// page, not each reply). `js` is `None` only in tests built without NATS.
pub async fn page(
    js: Option<&Context>,
    filter: &str,
    after: u64,
    limit: usize,
    timeout: Duration,
) -> Result<SubjectPage, ApiError> {
    let js = js.ok_or_else(|| {
        ApiError::unavailable("this gateway has no NATS connection to read cart histories")
    })?;
    let started = Instant::now();
    let client = js.client();
    let read = read_subject_page(&client, CART_EVENTS_STREAM, filter, after, limit, timeout);
    let result = match tokio::time::timeout(timeout, read).await {
        Ok(Ok(page)) => Ok(page),
        Ok(Err(e)) => Err(error(e)),
        Err(_) => Err(timed_out(timeout)),
    };
    metrics::histogram!(m::UPSTREAM_SECONDS, "op" => OP).record(started.elapsed().as_secs_f64());
    if let Err(e) = &result {
        metrics::counter!(m::UPSTREAM_ERRORS, "op" => OP, "code" => e.code.as_str()).increment(1);
    }
    result
}

fn timed_out(timeout: Duration) -> ApiError {
    ApiError::new(
        ErrorCode::Timeout,
        format!(
            "{CART_EVENTS_STREAM} did not answer within {} ms",
            timeout.as_millis()
        ),
    )
}

/// A slow stream is a 504; anything else that failed on the way is a 503 (retry later) with
/// the reason, which names the stream.
fn error(e: DirectGetError) -> ApiError {
    match e {
        DirectGetError::Timeout { timeout, .. } => timed_out(timeout),
        other => ApiError::unavailable(format!("cannot read the cart's history: {other}")),
    }
}
