//! `DEAD_LETTERS`: publishing a message the projection gave up on, and reading an original
//! message back (by stream sequence) to replay it.
//!
//! A dead letter is the original payload on `dlq.projection-<view>.<tenant>.<cart_id>` with the
//! original headers (tenant, correlation, trace) plus the `dlq-*` headers below, and
//! `Nats-Msg-Id` = `<consumer>-<sequence>` so a retried publish is stored once.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage};
use shared::headers::{NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, NATS_MSG_ID};
use shared::ids::{CartId, TenantId};
use shared::subjects::{self, CartEventSubject};

use crate::changes::Incoming;
use crate::error::ProjectionError;

// Header names of a dead letter, shared with every consumer that dead-letters.
pub use shared::headers::{
    DLQ_CONSUMER, DLQ_DELIVERIES, DLQ_ORIGINAL_SEQUENCE, DLQ_ORIGINAL_STREAM, DLQ_ORIGINAL_SUBJECT,
    DLQ_REASON,
};

pub const MAX_REASON_LEN: usize = 1_024;

/// Tokens used in the dead-letter subject when the original subject cannot be parsed.
const UNKNOWN_TOKEN: &str = "unknown";

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

    /// Publishes `inc` to `DEAD_LETTERS` and waits for the stream's ack. Returns the
    /// dead-letter stream sequence.
    pub async fn publish(&self, inc: &Incoming, reason: &str) -> Result<u64, ProjectionError> {
        let subject = dead_letter_subject(&self.consumer, &inc.subject)?;
        let headers = dead_letter_headers(&self.consumer, inc, reason);
        let publish = PublishMessage::build()
            .payload(inc.payload.clone())
            .headers(headers)
            .message_id(format!("{}-{}", self.consumer, inc.sequence));
        let js = self.js.clone();
        let acked = tokio::time::timeout(self.timeout, async move {
            js.send_publish(subject, publish).await?.await
        })
        .await
        .map_err(|_| ProjectionError::nats("publish dead letter", "no ack in time"))?
        .map_err(|e| ProjectionError::nats("publish dead letter", e))?;
        Ok(acked.sequence)
    }
}

/// `dlq.<consumer>.<tenant>.<cart_id>` for a message consumed from `original`.
pub fn dead_letter_subject(consumer: &str, original: &str) -> Result<String, ProjectionError> {
    let (tenant, cart) = match CartEventSubject::parse(original) {
        Ok(s) => (s.tenant, s.cart_id),
        Err(_) => (
            TenantId::parse(UNKNOWN_TOKEN).expect("a valid tenant token"),
            CartId::parse(UNKNOWN_TOKEN).expect("a valid cart token"),
        ),
    };
    subjects::dead_letter(consumer, &tenant, &cart)
        .map_err(|e| ProjectionError::Config(format!("dead-letter subject: {e}")))
}

fn dead_letter_headers(consumer: &str, inc: &Incoming, reason: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(original) = &inc.headers {
        for (name, values) in original.iter() {
            let name = name.to_string();
            // Publish controls of the original append must not apply to the dead letter.
            if name.eq_ignore_ascii_case(NATS_MSG_ID)
                || name.eq_ignore_ascii_case(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE)
                || name.starts_with("Nats-Expected")
            {
                continue;
            }
            for v in values {
                headers.append(name.as_str(), v.as_str());
            }
        }
    }
    headers.insert(DLQ_REASON, one_line(reason).as_str());
    headers.insert(DLQ_ORIGINAL_SUBJECT, inc.subject.as_str());
    headers.insert(DLQ_ORIGINAL_SEQUENCE, inc.sequence.to_string().as_str());
    headers.insert(DLQ_ORIGINAL_STREAM, subjects::CART_EVENTS_STREAM);
    headers.insert(DLQ_CONSUMER, consumer);
    headers.insert(DLQ_DELIVERIES, inc.delivered.to_string().as_str());
    headers
}

/// Header values are single lines of limited size.
fn one_line(reason: &str) -> String {
    let mut s: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.len() > MAX_REASON_LEN {
        let mut cut = MAX_REASON_LEN;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Reads the message at `sequence` of `CART_EVENTS` back (direct get), as a delivery.
pub async fn read_original(
    events: &jetstream::stream::Stream,
    sequence: u64,
    timeout: Duration,
) -> Result<Incoming, ProjectionError> {
    let msg = tokio::time::timeout(timeout, events.direct_get(sequence))
        .await
        .map_err(|_| ProjectionError::nats("read original message", "no reply in time"))?
        .map_err(|e| {
            if e.kind() == async_nats::jetstream::stream::DirectGetErrorKind::NotFound {
                ProjectionError::NotFound(format!(
                    "message {sequence} is no longer in {}",
                    subjects::CART_EVENTS_STREAM
                ))
            } else {
                ProjectionError::nats("read original message", e)
            }
        })?;
    Ok(Incoming {
        sequence: msg.sequence,
        subject: msg.subject.to_string(),
        headers: Some(msg.headers),
        payload: msg.payload,
        delivered: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_and_headers_carry_the_origin() {
        assert_eq!(
            dead_letter_subject("projection-main", "cart.events.t1.c9").unwrap(),
            "dlq.projection-main.t1.c9"
        );
        assert_eq!(
            dead_letter_subject("projection-main", "cart.events.T1.c9.x").unwrap(),
            "dlq.projection-main.unknown.unknown"
        );
        let mut original = HeaderMap::new();
        original.insert("tenant-id", "t1");
        original.insert(NATS_MSG_ID, "cmd-1");
        original.insert(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, "4");
        let inc = Incoming {
            sequence: 42,
            subject: "cart.events.t1.c9".into(),
            headers: Some(original),
            payload: bytes::Bytes::from_static(b"{}"),
            delivered: 3,
        };
        let h = dead_letter_headers("projection-main", &inc, "bad\nthing");
        let get = |n: &str| h.get(n).map(|v| v.as_str().to_owned());
        assert_eq!(get(DLQ_REASON).as_deref(), Some("bad thing"));
        assert_eq!(get(DLQ_ORIGINAL_SEQUENCE).as_deref(), Some("42"));
        assert_eq!(
            get(DLQ_ORIGINAL_SUBJECT).as_deref(),
            Some("cart.events.t1.c9")
        );
        assert_eq!(get(DLQ_CONSUMER).as_deref(), Some("projection-main"));
        assert_eq!(get(DLQ_DELIVERIES).as_deref(), Some("3"));
        assert_eq!(get("tenant-id").as_deref(), Some("t1"));
        assert_eq!(get(NATS_MSG_ID), None);
        assert_eq!(get(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE), None);
        assert_eq!(one_line(&"x".repeat(5000)).len(), MAX_REASON_LEN);
    }
}
