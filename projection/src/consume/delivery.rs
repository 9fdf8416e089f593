//! One message fetched from the durable consumer, and the two ends of its life there: fetching
//! a batch of them (`fetch`, decoded ahead so the writer does not parse JSON) and
//! acknowledging them (`ack_one`, `ack_all`). What the loop does in between is
//! [`super::consumer`]'s.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use futures::StreamExt;

use crate::error::ProjectionError;
use crate::write::changes::Incoming;

/// Fetches up to `size` messages (fewer when the stream has no more right now), as
/// deliveries ready to apply, decoded (so a batch fetched ahead is also prepared ahead).
///
/// `wait` is how long the server may hold the fetch open; `request_timeout` is added to it
/// for the reply to arrive.
pub(super) async fn fetch(
    consumer: &PullConsumer,
    size: usize,
    wait: Duration,
    request_timeout: Duration,
) -> Result<Vec<Received>, ProjectionError> {
    let fetch = async {
        let mut batch = consumer
            .fetch()
            .max_messages(size)
            .expires(wait)
            .messages()
            .await
            .map_err(|e| ProjectionError::nats("fetch", e))?;
        let mut out = Vec::with_capacity(size);
        while let Some(msg) = batch.next().await {
            let msg = msg.map_err(|e| ProjectionError::nats("fetch", e))?;
            out.extend(Received::new(msg));
        }
        Ok(out)
    };
    tokio::time::timeout(wait + request_timeout, fetch)
        .await
        .map_err(|_| ProjectionError::nats("fetch", "no reply in time"))?
}

/// One delivered message (`msg` is `None` for a message read back by the loop itself).
pub struct Received {
    pub(super) msg: Option<jetstream::Message>,
    pub(super) inc: Incoming,
}

impl Received {
    /// The span of applying this message: the child of the span that appended it (named in
    /// its `traceparent`), so the read model's work is part of the request's trace. It lasts
    /// while the writer applies the batch holding it.
    pub(super) fn span(&self) -> tracing::Span {
        let span = tracing::info_span!(
            "projection.apply",
            sequence = self.inc.sequence,
            subject = %self.inc.subject
        );
        if let Some(headers) = &self.inc.headers {
            let parent = shared::propagation::extract(&shared::propagation::NatsHeaders(headers));
            shared::spans::follow(&span, &parent);
        }
        span
    }

    /// A fetched message; `None` (logged) without JetStream metadata.
    fn new(mut msg: jetstream::Message) -> Option<Received> {
        let info = match msg.info() {
            Ok(info) => (info.stream_sequence, info.delivered),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a message without JetStream info");
                return None;
            }
        };
        let inc = Incoming::new(
            info.0,
            msg.subject.to_string(),
            // Moved, not copied: acknowledging needs only the reply subject.
            msg.message.headers.take(),
            msg.payload.clone(),
            info.1,
        )
        .decoded_ahead();
        Some(Received {
            msg: Some(msg),
            inc,
        })
    }
}

/// Acks are best effort: a lost ack means a redelivery, which the checkpoint absorbs.
pub(super) async fn ack_one(d: &Received, kind: AckKind, timeout: Duration) {
    let Some(msg) = &d.msg else { return };
    match tokio::time::timeout(timeout, msg.ack_with(kind)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(sequence = d.inc.sequence, error = %e, ?kind, "ack failed"),
        Err(_) => tracing::warn!(sequence = d.inc.sequence, ?kind, "ack timed out"),
    }
}

/// Acknowledges applied deliveries, in order.
pub(super) async fn ack_all(deliveries: Vec<Received>, timeout: Duration) {
    for d in &deliveries {
        ack_one(d, AckKind::Ack, timeout).await;
    }
}

/// How the live consumer loop ([`super::consumer::Consumer`]) fetches and acknowledges.
#[derive(Debug, Clone)]
pub struct LoopSettings {
    pub batch_size: usize,
    /// Messages per fetch after a full one (catching up).
    pub catch_up_batch_size: usize,
    pub fetch_wait: Duration,
    pub nak_delay: Duration,
    /// Redelivery delay of messages held back behind an earlier one that is still missing
    /// (the ack wait: by then a message lost in a crash has been redelivered). Longer than
    /// `nak_delay`, so waiting burns few of their deliveries.
    pub hold_delay: Duration,
    pub max_deliver: i64,
    /// Deadline of each NATS request (acks, direct gets, publishes).
    pub request_timeout: Duration,
}
