//! The one way a cart's event message is put on `CART_EVENTS`, so the aggregate, test
//! generators and the benchmark all append exactly the contract's shape.

use async_nats::HeaderName;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;

use crate::headers::{CART_EVENT_TYPES, RequestContext};
use cart_domain::EventMessage;

/// The publish of `msg` (to [`crate::subjects::cart_events`] of its cart): the JSON envelope,
/// the context headers (`tenant-id`, correlation, `traceparent`, `trace-id`),
/// `cart-event-types`, `Nats-Msg-Id` = the command id (JetStream de-duplicates a retry), and
/// with `expected` the `Nats-Expected-Last-Subject-Sequence` fence.
pub fn event_publish(
    msg: &EventMessage,
    ctx: &RequestContext,
    expected: Option<u64>,
) -> PublishMessage {
    const EVENT_TYPES: HeaderName = HeaderName::from_static(CART_EVENT_TYPES);
    let mut headers = async_nats::HeaderMap::new();
    ctx.to_nats_headers(&mut headers);
    headers.insert(EVENT_TYPES, msg.event_types_header());
    let publish = PublishMessage::build()
        .payload(Bytes::from(msg.to_json()))
        .headers(headers)
        .message_id(msg.command_id.to_string());
    match expected {
        Some(seq) => publish.expected_last_subject_sequence(seq),
        None => publish,
    }
}
