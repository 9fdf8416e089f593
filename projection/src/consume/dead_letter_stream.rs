//! The `DEAD_LETTERS` stream (NATS): publishing a message the projection gave up on, and
//! reading an original message back from `CART_EVENTS` (by stream sequence) to replay it.
//!
//! Not to be confused with the poison table ([`crate::store::poison_table`]): that is this
//! projection's own record of the same message, in its SQLite file, which `ListDeadLetters`
//! lists and a replay marks. A message given up on goes to both; a failure found by a rebuild
//! only to the table.
//!
//! A dead letter is the original payload on `dlq.projection-<view>.<tenant>.<cart_id>`, built by
//! [`shared::nats::dead_letter`] like every other consumer's: the original headers (tenant,
//! correlation, trace) plus the `dlq-*` headers below, and `Nats-Msg-Id` =
//! `<consumer>-<sequence>` so a retried publish is stored once.

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::stream::RawMessageErrorKind;
use shared::nats::dead_letter::{self as dlq, Original};
use shared::subjects;

use crate::error::ProjectionError;
use crate::store::poison_table::PoisonRecord;
use crate::write::changes::Incoming;

// Header names of a dead letter, shared with every consumer that dead-letters.
pub use shared::headers::{
    DLQ_CONSUMER, DLQ_DELIVERIES, DLQ_ORIGINAL_SEQUENCE, DLQ_ORIGINAL_STREAM, DLQ_ORIGINAL_SUBJECT,
    DLQ_REASON,
};
pub use shared::nats::dead_letter::MAX_REASON_LEN;

/// Publishes dead letters for one durable consumer.
#[derive(Clone)]
pub struct DeadLetters {
    js: jetstream::Context,
    consumer: String,
    timeout: Duration,
}

impl DeadLetters {
    pub fn new(js: jetstream::Context, consumer: &str, timeout: Duration) -> Self {
        Self {
            js,
            consumer: consumer.to_owned(),
            timeout,
        }
    }

    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Publishes `inc` to `DEAD_LETTERS` (retried, see [`dlq::publish`]) and waits for the
    /// stream's ack. Returns the dead-letter stream sequence.
    pub async fn publish(&self, inc: &Incoming, reason: &str) -> Result<u64, ProjectionError> {
        dlq::publish(
            &self.js,
            &self.consumer,
            &original(inc),
            inc.payload.clone(),
            reason,
            self.timeout,
        )
        .await
        .map_err(|e| ProjectionError::nats("publish dead letter", e))
    }
}

fn original(inc: &Incoming) -> Original<'_> {
    Original {
        stream: subjects::CART_EVENTS_STREAM,
        subject: &inc.subject,
        sequence: inc.sequence,
        delivered: inc.delivered,
        headers: inc.headers.as_ref(),
    }
}

/// Reads the message at `sequence` of `CART_EVENTS` back, as a delivery; `None` when the
/// stream has none there. Asked of the stream's leader: what it reads back decides something
/// (a replay, which stream this is), and a replica that has not caught up would answer that
/// the message is missing.
pub async fn read_back(
    events: &jetstream::stream::Stream,
    sequence: u64,
    timeout: Duration,
) -> Result<Option<Incoming>, ProjectionError> {
    let read = tokio::time::timeout(timeout, events.get_raw_message(sequence))
        .await
        .map_err(|_| ProjectionError::nats("read a message back", "no reply in time"))?;
    match read {
        Ok(msg) => Ok(Some(Incoming::new(
            msg.sequence,
            msg.subject.to_string(),
            Some(msg.headers),
            msg.payload,
            0,
        ))),
        Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(ProjectionError::nats("read a message back", e)),
    }
}

/// The message a dead letter names, read back to replay it: at its sequence, on its subject.
/// Not found when it is gone, or when that sequence holds another cart's message (the stream
/// was created again since).
pub async fn read_original(
    events: &jetstream::stream::Stream,
    record: &PoisonRecord,
    timeout: Duration,
) -> Result<Incoming, ProjectionError> {
    let sequence = record.stream_sequence;
    let stream = subjects::CART_EVENTS_STREAM;
    match read_back(events, sequence, timeout).await? {
        Some(m) if m.subject == record.subject => Ok(m),
        Some(m) => Err(ProjectionError::NotFound(format!(
            "message {sequence} of {stream} is on {}, not on the dead letter's {}: the message \
             that failed is no longer in the stream (it was created again since)",
            m.subject, record.subject
        ))),
        None => Err(ProjectionError::NotFound(format!(
            "message {sequence} is no longer in {stream}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use async_nats::HeaderMap;

    use super::*;

    /// The header rules themselves are tested in `shared::nats::dead_letter`; here: that a
    /// delivery is described as what it is.
    #[test]
    fn a_delivery_is_dead_lettered_as_its_origin() {
        let mut headers = HeaderMap::new();
        headers.insert("tenant-id", "t1");
        let inc = Incoming::new(
            42,
            "cart.events.t1.c9".into(),
            Some(headers),
            bytes::Bytes::from_static(b"{}"),
            3,
        );
        let o = original(&inc);
        assert_eq!(
            (o.stream, o.subject, o.sequence, o.delivered),
            (subjects::CART_EVENTS_STREAM, "cart.events.t1.c9", 42, 3)
        );
        assert_eq!(
            o.headers
                .and_then(|h| h.get("tenant-id"))
                .map(|v| v.as_str()),
            Some("t1")
        );
    }
}
