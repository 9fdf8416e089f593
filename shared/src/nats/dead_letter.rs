//! Dead letters, as every consumer that gives up on a message writes them to `DEAD_LETTERS`.
//!
//! A dead letter is the original payload on `dlq.<consumer>.<tenant>.<cart_id>` with the
//! original headers (tenant, correlation, trace) minus the original's publish controls, plus
//! the `dlq-*` headers, published with `Nats-Msg-Id` = `<consumer>-<sequence>` so a retried
//! publish is stored once. Building them in one place keeps every consumer's dead letters
//! readable by the same tools, and keeps arbitrary reasons (a provider's HTML error page) from
//! reaching a header value, where a line break makes async-nats panic.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;

use crate::headers::{
    DLQ_CONSUMER, DLQ_DELIVERIES, DLQ_ORIGINAL_SEQUENCE, DLQ_ORIGINAL_STREAM, DLQ_ORIGINAL_SUBJECT,
    DLQ_REASON,
};
use crate::subjects::{self, CartEventSubject, SubjectError, WorkflowSubject};
use cart_domain::ids::{CartId, TenantId};

/// The longest `dlq-reason` kept, in bytes (header values should stay small).
pub const MAX_REASON_LEN: usize = 1_024;

/// Used in the dead-letter subject for a tenant or cart the original subject does not name.
const UNKNOWN_TOKEN: &str = "unknown";

/// The message a consumer gives up on.
#[derive(Debug, Clone, Copy)]
pub struct Original<'a> {
    /// The stream it was consumed from.
    pub stream: &'a str,
    pub subject: &'a str,
    /// Its stream sequence.
    pub sequence: u64,
    /// How many times it was delivered.
    pub delivered: i64,
    pub headers: Option<&'a HeaderMap>,
}

/// `dlq.<consumer>.<tenant>.<cart_id>` for a message consumed from `original_subject`: a cart
/// event names its tenant and cart; a workflow record its tenant and its id (in the cart slot,
/// when it is a valid cart id); anything else is filed under `unknown.unknown`.
pub fn dead_letter_subject(consumer: &str, original_subject: &str) -> Result<String, SubjectError> {
    let unknown_cart = || CartId::parse(UNKNOWN_TOKEN).expect("a valid cart token");
    let (tenant, cart) = if let Ok(s) = CartEventSubject::parse(original_subject) {
        (s.tenant, s.cart_id)
    } else if let Ok(s) = WorkflowSubject::parse(original_subject) {
        let cart = CartId::parse(&s.id).unwrap_or_else(|_| unknown_cart());
        (s.tenant, cart)
    } else {
        (
            TenantId::parse(UNKNOWN_TOKEN).expect("a valid tenant token"),
            unknown_cart(),
        )
    };
    subjects::dead_letter(consumer, &tenant, &cart)
}

/// The `Nats-Msg-Id` of `consumer`'s dead letter of the message at `sequence`.
pub fn dead_letter_msg_id(consumer: &str, sequence: u64) -> String {
    format!("{consumer}-{sequence}")
}

/// The dead letter's headers: the original's, except the server's (`Nats-*`: its publish
/// controls such as `Nats-Msg-Id` and `Nats-Expected-*` must not apply to the dead letter, and
/// what a direct get adds, such as `Nats-Sequence`, describes the original's place, which the
/// `dlq-*` headers already name), plus the `dlq-*` headers. The
/// reason is made one line of at most [`MAX_REASON_LEN`] bytes.
pub fn dead_letter_headers(consumer: &str, original: &Original<'_>, reason: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(from) = original.headers {
        for (name, values) in from.iter() {
            let name = name.to_string();
            if name
                .get(..NATS_PREFIX.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(NATS_PREFIX))
            {
                continue;
            }
            for v in values {
                headers.append(name.as_str(), v.as_str());
            }
        }
    }
    headers.insert(DLQ_REASON, one_line(reason).as_str());
    headers.insert(DLQ_ORIGINAL_SUBJECT, one_line(original.subject).as_str());
    headers.insert(
        DLQ_ORIGINAL_SEQUENCE,
        original.sequence.to_string().as_str(),
    );
    headers.insert(DLQ_ORIGINAL_STREAM, one_line(original.stream).as_str());
    headers.insert(DLQ_CONSUMER, one_line(consumer).as_str());
    headers.insert(DLQ_DELIVERIES, original.delivered.to_string().as_str());
    headers
}

/// Attempts of [`publish`]; a retried publish is stored once (its `Nats-Msg-Id`).
pub const PUBLISH_ATTEMPTS: u32 = 3;

/// Writes `consumer`'s dead letter of `original` (whose payload is `payload`) to
/// `DEAD_LETTERS` and waits for the stream's ack, trying up to [`PUBLISH_ATTEMPTS`] times, each
/// within `timeout`, with a short pause between. Returns its sequence in `DEAD_LETTERS`, or why
/// the last attempt failed.
pub async fn publish(
    js: &jetstream::Context,
    consumer: &str,
    original: &Original<'_>,
    payload: Bytes,
    reason: &str,
    timeout: Duration,
) -> Result<u64, String> {
    let subject = dead_letter_subject(consumer, original.subject).map_err(|e| e.to_string())?;
    let headers = dead_letter_headers(consumer, original, reason);
    let msg_id = dead_letter_msg_id(consumer, original.sequence);
    let mut failure = String::new();
    for attempt in 1..=PUBLISH_ATTEMPTS {
        let message = PublishMessage::build()
            .payload(payload.clone())
            .headers(headers.clone())
            .message_id(msg_id.as_str());
        let sent = tokio::time::timeout(timeout, async {
            js.send_publish(subject.clone(), message).await?.await
        })
        .await;
        failure = match sent {
            Ok(Ok(ack)) => return Ok(ack.sequence),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no ack within {} ms", timeout.as_millis()),
        };
        tracing::warn!(consumer, attempt, error = %failure, "publishing a dead letter failed");
        if attempt < PUBLISH_ATTEMPTS {
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
        }
    }
    Err(failure)
}

/// Prefix of the headers NATS itself reads or sets (none of this project's own has it).
const NATS_PREFIX: &str = "Nats-";

/// `s` as a header value: control characters (line breaks above all) become spaces, and it is
/// cut to [`MAX_REASON_LEN`] bytes on a character boundary.
pub fn one_line(s: &str) -> String {
    let mut line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.len() > MAX_REASON_LEN {
        let mut cut = MAX_REASON_LEN;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::{NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, NATS_MSG_ID, NATS_TENANT_ID};

    #[test]
    fn the_subject_names_the_origin_or_unknown() {
        assert_eq!(
            dead_letter_subject("projection-main", "cart.events.t1.c9").unwrap(),
            "dlq.projection-main.t1.c9"
        );
        assert_eq!(
            dead_letter_subject("runner-push", "workflow.commands.t1.push.ko-7").unwrap(),
            "dlq.runner-push.t1.ko-7"
        );
        assert_eq!(
            dead_letter_subject("projection-main", "cart.events.T1.c9.x").unwrap(),
            "dlq.projection-main.unknown.unknown"
        );
        assert!(dead_letter_subject("bad.consumer", "cart.events.t1.c9").is_err());
        assert_eq!(dead_letter_msg_id("runner-push", 7), "runner-push-7");
    }

    #[test]
    fn headers_carry_the_origin_and_drop_publish_controls() {
        let mut from = HeaderMap::new();
        from.insert(NATS_TENANT_ID, "t1");
        from.insert("traceparent", "00-abc-def-01");
        from.insert(NATS_MSG_ID, "cmd-1");
        from.insert(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, "4");
        from.insert("Nats-Expected-Stream", "CART_EVENTS");
        from.insert(crate::headers::NATS_SEQUENCE, "9");
        let original = Original {
            stream: "CART_EVENTS",
            subject: "cart.events.t1.c9",
            sequence: 42,
            delivered: 3,
            headers: Some(&from),
        };
        let h = dead_letter_headers("projection-main", &original, "bad thing");
        let get = |n: &str| h.get(n).map(|v| v.as_str().to_owned());
        assert_eq!(get(DLQ_REASON).as_deref(), Some("bad thing"));
        assert_eq!(get(DLQ_ORIGINAL_SEQUENCE).as_deref(), Some("42"));
        assert_eq!(
            get(DLQ_ORIGINAL_SUBJECT).as_deref(),
            Some("cart.events.t1.c9")
        );
        assert_eq!(get(DLQ_ORIGINAL_STREAM).as_deref(), Some("CART_EVENTS"));
        assert_eq!(get(DLQ_CONSUMER).as_deref(), Some("projection-main"));
        assert_eq!(get(DLQ_DELIVERIES).as_deref(), Some("3"));
        assert_eq!(get(NATS_TENANT_ID).as_deref(), Some("t1"));
        assert_eq!(get("traceparent").as_deref(), Some("00-abc-def-01"));
        assert_eq!(get(NATS_MSG_ID), None);
        assert_eq!(get(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE), None);
        assert_eq!(get("Nats-Expected-Stream"), None);
        assert_eq!(get(crate::headers::NATS_SEQUENCE), None);

        let bare = Original {
            headers: None,
            ..original
        };
        let h = dead_letter_headers("runner-checkout", &bare, "x");
        assert_eq!(h.get(NATS_TENANT_ID), None);
        assert_eq!(h.get(DLQ_CONSUMER).unwrap().as_str(), "runner-checkout");
    }

    #[test]
    fn a_multi_line_reason_becomes_one_line_without_panicking() {
        // A transient provider error carries the provider's body, e.g. a proxy's HTML page.
        let reason = "503 Service Unavailable: <html>\r\n<body>\n<h1>502 Bad Gateway</h1>\r</body>";
        let original = Original {
            stream: "CART_EVENTS",
            subject: "cart.events.t1.c9",
            sequence: 1,
            delivered: 20,
            headers: None,
        };
        let h = dead_letter_headers("runner-checkout", &original, reason);
        let kept = h.get(DLQ_REASON).unwrap().as_str();
        assert!(!kept.contains(['\r', '\n']), "{kept:?}");
        assert_eq!(
            kept,
            "503 Service Unavailable: <html>  <body> <h1>502 Bad Gateway</h1> </body>"
        );
        assert_eq!(one_line("a\tb\u{7f}c"), "a b c");
    }

    #[test]
    fn a_long_reason_is_cut_on_a_character_boundary() {
        assert_eq!(one_line(&"x".repeat(5000)).len(), MAX_REASON_LEN);
        // 'é' is two bytes: 1023 of 'x' then 'é' would straddle the limit.
        let s = format!("{}é and more", "x".repeat(MAX_REASON_LEN - 1));
        let cut = one_line(&s);
        assert_eq!(cut.len(), MAX_REASON_LEN - 1);
        assert!(cut.chars().all(|c| c == 'x'));
        assert_eq!(one_line("short"), "short");
    }
}
